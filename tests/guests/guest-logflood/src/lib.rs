//! Test guest `guest-logflood`: every poll writes `lines` (config, default
//! 2000) log lines, the first of them 100 KiB long, and returns nothing —
//! a plugin trying to fill the daemon's log. `send` accepts everything.

use kata_sdk::prelude::*;

/// The channel that floods the log.
pub struct LogFlood {
    lines: u32,
    polls: u64,
}

impl Channel for LogFlood {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "logflood".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Poll],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        let lines = config::get("lines").and_then(|c| c.parse().ok()).unwrap_or(2000);
        Ok(LogFlood { lines, polls: 0 })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        self.polls += 1;
        for i in 0..self.lines {
            if i == 0 {
                log::info(&format!("huge line {}: {}", self.polls, "x".repeat(100 << 10)));
            } else {
                log::info(&format!("flood line {} of poll {}", i, self.polls));
            }
        }
        Ok(PollResult { messages: vec![], cursor: None, next_poll_ms: Some(100) })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt::sent(message.idempotency_key))
    }
}

kata_sdk::export_channel!(LogFlood);
