//! Test guest `guest-trap`: crashes (a trap, as the release profile aborts
//! on panic) in the call named by its config `trap_in`: `describe`,
//! `connect` or — the default — every `poll` and `send`. The host must
//! restart it with backoff, count every failure towards its restarts and
//! circuit breaker, show the error in `kata status`, and keep every other
//! plugin running.

use kata_sdk::prelude::*;

/// The crashing channel.
pub struct Trap;

/// Whether this instance was told to crash in `call`.
fn traps_in(call: &str) -> bool {
    kata_sdk::config::get("trap_in").as_deref().unwrap_or("poll") == call
}

impl Channel for Trap {
    fn describe() -> ChannelInfo {
        if traps_in("describe") {
            panic!("guest-trap crashes in describe");
        }
        ChannelInfo { name: "trap".into(), version: "0.1.0".into(), ingress: vec![IngressMode::Poll], features: vec![] }
    }

    fn connect() -> Result<Self, ChannelError> {
        if traps_in("connect") {
            panic!("guest-trap crashes in connect");
        }
        Ok(Trap)
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        panic!("guest-trap always crashes");
    }

    fn send(&mut self, _message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        panic!("guest-trap always crashes");
    }
}

kata_sdk::export_channel!(Trap);
