//! Test guest `guest-spin`: `poll` never returns. It spins in a busy loop the
//! optimizer cannot remove, so only the host's epoch interruption (or call
//! timeout) can stop it. Everything else behaves like a quiet channel.

use core::hint::black_box;
use kata_sdk::prelude::*;

/// The spinning channel.
pub struct Spin;

impl Channel for Spin {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "spin".into(), version: env!("CARGO_PKG_VERSION").into(), ingress: vec![IngressMode::Poll], features: vec![] }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(Spin)
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let mut counter: u64 = 0;
        loop {
            counter = black_box(counter.wrapping_add(1));
        }
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: format!("spin-{}", message.idempotency_key), frames: Vec::new() })
    }
}

kata_sdk::export_channel!(Spin);
