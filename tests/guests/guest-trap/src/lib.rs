//! Test guest `guest-trap`: every `poll` panics (a trap, as the release
//! profile aborts on panic). The host must restart it with backoff and keep
//! every other plugin running.

use kata_sdk::prelude::*;

/// The crashing channel.
pub struct Trap;

impl Channel for Trap {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "trap".into(), version: "0.1.0".into(), ingress: vec![IngressMode::Poll] }
    }

    fn connect() -> Result<Self, ChannelError> {
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
