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
//! - `send-batch(ms)` (the optional `channel-batch` export), with config
//!   `batch = "on"`: `POST {base}/send-batch` with `{"messages": [...]}` (each
//!   as for `send`) answers `{"results": [{"id": "…"} | {"error": "…"}]}`, one
//!   per message; an error result is a `network` error for that message
//!   alone. Without `batch = "on"` it answers `unsupported` (the host then
//!   sends one at a time).
//!
//! Config: `base` (the server's URL), `batch`.

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

/// The optional `channel-batch` export, beside the SDK's `channel`.
#[allow(missing_docs, clippy::all)]
mod batch_bindings {
    wit_bindgen::generate!({
        inline: "package kata:loopback; world batch { export kata:plugin/channel-batch@0.1.3; }",
        path: "../../../wit/v0.1.3",
        world: "kata:loopback/batch",
        with: { "kata:plugin/types@0.1.3": kata_sdk::bindings::kata::plugin::types },
    });
}

#[derive(Serialize)]
struct Batch<'a> {
    messages: Vec<Outgoing<'a>>,
}

#[derive(Deserialize)]
struct BatchResult {
    id: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct BatchSent {
    results: Vec<BatchResult>,
}

struct LoopbackBatch;

impl batch_bindings::exports::kata::plugin::channel_batch::Guest for LoopbackBatch {
    fn send_batch(messages: Vec<OutboundMessage>) -> Result<Vec<Result<SendReceipt, ChannelError>>, ChannelError> {
        if config::get("batch").as_deref() != Some("on") {
            return Err(ChannelError::Unsupported);
        }
        let base = config::require("base")?;
        let body = Batch {
            messages: messages
                .iter()
                .map(|m| Outgoing {
                    key: &m.idempotency_key,
                    conversation: &m.conversation,
                    text: &m.text,
                    reply_to: m.reply_to.as_deref(),
                })
                .collect(),
        };
        let r = Request::post(format!("{base}/send-batch")).json(&body).send().map_err(network)?;
        if !r.is_success() {
            return Err(ChannelError::Network(format!("send-batch answered {}", r.status)));
        }
        let s: BatchSent = r.json().map_err(network)?;
        Ok(s.results
            .into_iter()
            .map(|r| match (r.id, r.error) {
                (Some(id), None) => Ok(SendReceipt::sent(id)),
                (_, e) => Err(ChannelError::Network(e.unwrap_or_else(|| "no id".into()))),
            })
            .collect())
    }
}

batch_bindings::export!(LoopbackBatch with_types_in batch_bindings);
