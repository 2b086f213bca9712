//! Test guest `guest-flood`: every `poll` returns `count` (config, default
//! 1000) new messages with fresh ids, as fast as the host asks — a flood, or
//! with a count over the host's per-poll limit, an oversized poll result.
//! `send` accepts everything.

use kata_sdk::prelude::*;

/// The flooding channel.
pub struct Flood {
    count: u32,
    next: u64,
}

impl Channel for Flood {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "flood".into(), version: env!("CARGO_PKG_VERSION").into(), ingress: vec![IngressMode::Poll], features: vec![] }
    }

    fn connect() -> Result<Self, ChannelError> {
        let count = config::get("count").and_then(|c| c.parse().ok()).unwrap_or(1000);
        Ok(Flood { count, next: now_ms() * 1000 })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let messages = (0..self.count)
            .map(|_| {
                self.next += 1;
                Message::text(format!("f{}", self.next), "flood", "flooder", "spam")
            })
            .collect();
        Ok(PollResult { messages, cursor: Some(self.next.to_string()), next_poll_ms: Some(0) })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt::sent(message.idempotency_key))
    }
}

kata_sdk::export_channel!(Flood);
