//! Test guest `guest-loopback`: a channel over a tiny HTTP protocol spoken
//! by a server in the test (or the benchmark's load generator), standing in
//! for a chat service.
//!
//! - `poll(cursor)`: `GET {base}/poll?cursor=C` (a long poll) answers
//!   `{"messages": [{"id", "conversation", "sender", "text"}], "cursor": "C2"}`.
//! - `send(m)`: `POST {base}/send` with
//!   `{"key", "conversation", "text", "reply_to"}` answers `{"id": "…"}`. The
//!   idempotency key goes along, so the server can be idempotent (Matrix
//!   style) or count duplicates (a channel without idempotency).
//!
//! Config: `base` (the server's URL).

use kata_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// The channel.
pub struct Loopback {
    base: String,
}

#[derive(Deserialize)]
struct Wire {
    id: String,
    conversation: String,
    sender: String,
    text: String,
}

#[derive(Deserialize)]
struct Polled {
    messages: Vec<Wire>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct Outgoing<'a> {
    key: &'a str,
    conversation: &'a str,
    text: &'a str,
    reply_to: Option<&'a str>,
}

#[derive(Deserialize)]
struct Sent {
    id: String,
}

fn network(e: HttpError) -> ChannelError {
    ChannelError::Network(e.to_string())
}

impl Channel for Loopback {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "loopback".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Poll],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(Loopback { base: config::require("base")? })
    }

    fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let url = format!("{}/poll?cursor={}", self.base, cursor.as_deref().unwrap_or("0"));
        let r = Request::get(url).send().map_err(network)?;
        if !r.is_success() {
            return Err(ChannelError::Network(format!("poll answered {}", r.status)));
        }
        let p: Polled = r.json().map_err(network)?;
        let now = now_ms();
        let messages = p
            .messages
            .into_iter()
            .map(|w| {
                let mut m = Message::text(w.id, w.conversation, w.sender, w.text);
                m.timestamp_ms = now;
                m
            })
            .collect();
        Ok(PollResult { messages, cursor: p.cursor, next_poll_ms: Some(0) })
    }

    fn send(&mut self, m: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        let body = Outgoing { key: &m.idempotency_key, conversation: &m.conversation, text: &m.text, reply_to: m.reply_to.as_deref() };
        let r = Request::post(format!("{}/send", self.base)).json(&body).send().map_err(network)?;
        if !r.is_success() {
            return Err(ChannelError::Network(format!("send answered {}", r.status)));
        }
        let s: Sent = r.json().map_err(network)?;
        Ok(SendReceipt::sent(s.id))
    }
}

kata_sdk::export_channel!(Loopback);
