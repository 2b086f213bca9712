//! Test guest `guest-deep`: `poll` recurses without bound until the wasm
//! stack overflows. The host must turn that into a trap of this plugin only.

use kata_sdk::prelude::*;

/// Recurse with a frame the optimiser cannot remove.
#[inline(never)]
fn down(n: u64, pad: [u64; 16]) -> u64 {
    let pad = core::hint::black_box(pad);
    down(n + 1, pad).wrapping_add(pad[(n % 16) as usize])
}

/// The recursing channel.
pub struct Deep;

impl Channel for Deep {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "deep".into(), version: "0.1.0".into(), ingress: vec![IngressMode::Poll], features: vec![] }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(Deep)
    }

    fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let _ = core::hint::black_box(down(0, [7; 16]));
        Ok(PollResult { messages: vec![], cursor, next_poll_ms: None })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: message.idempotency_key, frames: Vec::new() })
    }
}

kata_sdk::export_channel!(Deep);
