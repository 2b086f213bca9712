//! Test guest `guest-quiet`: a well-behaved channel. `connect` succeeds,
//! `poll` returns no messages at once and keeps the cursor, `send` succeeds
//! with the receipt `quiet-<idempotency-key>`. Used by benchmarks and to show
//! that other plugins keep working while a misbehaving one is stopped.

use kata_sdk::prelude::*;

/// The quiet channel; it has no state.
pub struct Quiet;

impl Channel for Quiet {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "quiet".into(), version: env!("CARGO_PKG_VERSION").into(), ingress: vec![IngressMode::Poll], features: vec![] }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(Quiet)
    }

    fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
        Ok(PollResult { messages: Vec::new(), cursor, next_poll_ms: None })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: format!("quiet-{}", message.idempotency_key), frames: Vec::new() })
    }
}

kata_sdk::export_channel!(Quiet);
