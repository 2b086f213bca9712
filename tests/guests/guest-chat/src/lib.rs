//! Test guest `guest-chat`: a channel over a tiny JSON API that the tests
//! serve on loopback (tests/common/chat.rs), with conversations and threads.
//!
//! - `poll(cursor)`: `GET {api_base}/poll?after=CURSOR` answers
//!   `{"messages": [{"id", "conversation", "thread", "sender", "text"}], "cursor": "N"}`.
//! - `send(message)`: `POST {api_base}/send` with
//!   `{"conversation", "thread", "reply_to", "text", "key", "attachments",
//!   "actions"}`; the answer's `id` is the receipt.
//! - `config.features` (comma-separated: `typing`, `edit`, `reactions`,
//!   `buttons`, `attachments`) is what `describe` lists (default none);
//!   `act(action)` is `POST {api_base}/act` with `{"kind": "typing" | "edit"
//!   | "react", "conversation", "thread", "message_id", "text", "emoji"}`.

use kata_sdk::prelude::*;
use serde_json::{Value, json};

/// The chat channel.
pub struct Chat {
    base: String,
}

fn network(e: HttpError) -> ChannelError {
    ChannelError::Network(e.to_string())
}

impl Channel for Chat {
    fn describe() -> ChannelInfo {
        let features = config::get("features")
            .unwrap_or_default()
            .split(',')
            .filter_map(|f| match f.trim() {
                "typing" => Some(Feature::Typing),
                "edit" => Some(Feature::Edit),
                "reactions" => Some(Feature::Reactions),
                "buttons" => Some(Feature::Buttons),
                "attachments" => Some(Feature::Attachments),
                _ => None,
            })
            .collect();
        ChannelInfo { name: "chat".into(), version: env!("CARGO_PKG_VERSION").into(), ingress: vec![IngressMode::Poll], features }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(Chat { base: config::require("api_base")?.trim_end_matches('/').to_string() })
    }

    fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let after = cursor.clone().unwrap_or_else(|| "0".into());
        let resp = Request::get(format!("{}/poll?after={after}", self.base)).send().map_err(network)?;
        if !resp.is_success() {
            return Err(ChannelError::Network(format!("poll answered {}", resp.status)));
        }
        let v: Value = resp.json().map_err(network)?;
        let mut messages = Vec::new();
        for m in v["messages"].as_array().cloned().unwrap_or_default() {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            let mut msg = Message::text(s("id"), s("conversation"), s("sender"), s("text"));
            msg.thread = m["thread"].as_str().map(str::to_string);
            messages.push(msg);
        }
        let next = v["cursor"].as_str().map(str::to_string).or(cursor);
        Ok(PollResult { next_poll_ms: if messages.is_empty() { Some(50) } else { None }, messages, cursor: next })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        let body = json!({
            "conversation": message.conversation,
            "thread": message.thread,
            "reply_to": message.reply_to,
            "text": message.text,
            "key": message.idempotency_key,
            "attachments": message.attachments.iter().map(|a| json!({
                "name": a.name, "mime_type": a.mime_type, "size": a.data.len(), "text": String::from_utf8_lossy(&a.data),
            })).collect::<Vec<_>>(),
            "actions": message.actions.iter().map(|a| json!({"id": a.id, "label": a.label})).collect::<Vec<_>>(),
        });
        let resp = Request::post(format!("{}/send", self.base)).json(&body).send().map_err(network)?;
        if !resp.is_success() {
            return Err(ChannelError::Network(format!("send answered {}", resp.status)));
        }
        let v: Value = resp.json().map_err(network)?;
        Ok(SendReceipt::sent(v["id"].as_str().unwrap_or_default()))
    }

    fn act(&mut self, action: ChannelAction) -> Result<(), ChannelError> {
        let body = match action {
            ChannelAction::Typing(t) => json!({"kind": "typing", "conversation": t.conversation, "thread": t.thread}),
            ChannelAction::Edit(e) => json!({"kind": "edit", "conversation": e.conversation, "message_id": e.message_id, "text": e.text}),
            ChannelAction::React(r) => {
                json!({"kind": "react", "conversation": r.conversation, "message_id": r.message_id, "emoji": r.emoji})
            }
        };
        let resp = Request::post(format!("{}/act", self.base)).json(&body).send().map_err(network)?;
        if !resp.is_success() {
            return Err(ChannelError::Network(format!("act answered {}", resp.status)));
        }
        Ok(())
    }
}

kata_sdk::export_channel!(Chat);
