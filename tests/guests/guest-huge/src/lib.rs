//! Test guest `guest-huge`: each of its first `polls` polls (config, default
//! 4) returns a message whose text is `text_bytes` (config, default 8 MiB)
//! long, with a `raw` just as long, and a message whose id is 2 KiB long —
//! what a hostile channel hands the host to fill its database. `send`
//! accepts everything.

use kata_sdk::prelude::*;

/// The channel of oversized messages.
pub struct Huge {
    polls: u32,
    text_bytes: usize,
}

impl Channel for Huge {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "huge".into(), version: env!("CARGO_PKG_VERSION").into(), ingress: vec![IngressMode::Poll], features: vec![] }
    }

    fn connect() -> Result<Self, ChannelError> {
        let polls = config::get("polls").and_then(|c| c.parse().ok()).unwrap_or(4);
        let text_bytes = config::get("text_bytes").and_then(|c| c.parse().ok()).unwrap_or(8 << 20);
        Ok(Huge { polls, text_bytes })
    }

    fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let n: u32 = cursor.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
        if n >= self.polls {
            return Ok(PollResult { messages: vec![], cursor: None, next_poll_ms: Some(200) });
        }
        let mut big = Message::text(format!("big-{n}"), "huge", "hostile", "é".repeat(self.text_bytes / 2));
        big.raw = Some("r".repeat(self.text_bytes));
        let long_id = Message::text(format!("{n}-{}", "i".repeat(2048)), "huge", "hostile", "an id too long to keep");
        Ok(PollResult { messages: vec![big, long_id], cursor: Some((n + 1).to_string()), next_poll_ms: Some(0) })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt::sent(message.idempotency_key))
    }
}

kata_sdk::export_channel!(Huge);
