//! # kata-webhook: a plain webhook channel for kata
//!
//! The host listens on the configured local address (the `webhook` stream
//! kind) and hands every request to `on_frame`; the plugin turns a JSON body
//! into a message (field paths configurable) and answers `{"ok": true,
//! "id": ...}`. When kata.toml sets `webhook = { verify = ... }` for the
//! plugin, the host has already checked the request's signature: a request
//! that fails never gets here, and the signing secret never enters the
//! plugin. Replies are POSTed as JSON to `reply_url` with an
//! `Idempotency-Key` header carrying kata's outbox key.

pub mod api;

use std::time::Duration;

use kata_sdk::prelude::*;

/// Timeout of a reply POST.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A configured webhook channel.
pub struct Webhook {
    listen: String,
    reply_url: Option<String>,
    bearer: bool,
    fields: api::Fields,
}

impl Channel for Webhook {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "webhook".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Subscribe],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        let listen = api::check_url("listen", &config::require("listen")?)?;
        let reply_url = config::get("reply_url").filter(|u| !u.trim().is_empty()).map(|u| api::check_url("reply_url", &u)).transpose()?;
        let bearer = match config::get("reply_auth").as_deref().map(str::trim) {
            None | Some("" | "none") => false,
            Some("bearer") => true,
            Some(other) => {
                return Err(ChannelError::InvalidConfig(format!("config key `reply_auth` must be \"bearer\" or \"none\", got {other:?}")));
            }
        };
        let d = api::Fields::default();
        let field = |key: &str, default: &str| config::get(key).unwrap_or_else(|| default.to_string());
        let fields = api::Fields {
            text: field("text_field", &d.text),
            sender: field("sender_field", &d.sender),
            sender_name: field("sender_name_field", &d.sender_name),
            conversation: field("conversation_field", &d.conversation),
            thread: field("thread_field", &d.thread),
            id: field("id_field", &d.id),
            group: field("group_field", &d.group),
            mentioned: field("mentioned_field", &d.mentioned),
            attachments: field("attachments_field", &d.attachments),
        };
        Ok(Webhook { listen, reply_url, bearer, fields })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        Err(ChannelError::Unsupported)
    }

    fn subscribe(&mut self) -> Result<Subscription, ChannelError> {
        Ok(Subscription::webhook(&self.listen))
    }

    fn on_frame(&mut self, frame: Frame) -> Result<FrameResult, ChannelError> {
        let Some(text) = frame.as_text().filter(|t| !t.is_empty()) else { return Ok(FrameResult::default()) };
        let handled = api::handle(text, &self.fields, now_ms());
        if handled.message.is_none() {
            log::debug(&format!("webhook: request not stored: {}", handled.response["error"]));
        }
        Ok(FrameResult { messages: handled.message.into_iter().collect(), replies: vec![Frame::text(handled.response.to_string())] })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        let Some(url) = &self.reply_url else {
            log::warn(&format!("webhook: no config reply_url, so the reply to {} is dropped", message.conversation));
            return Ok(SendReceipt::sent(message.idempotency_key));
        };
        let mut req = Request::post(url.as_str())
            .header("accept", "application/json")
            .header("idempotency-key", message.idempotency_key.as_str())
            .json(&api::reply_body(&message))
            .timeout(SEND_TIMEOUT);
        if self.bearer {
            req = req.header("authorization", "Bearer {{secret:reply_token}}");
        }
        let r = req.send()?;
        if !r.is_success() {
            return Err(api::map_error(r.status, &r.body, r.header("retry-after")));
        }
        Ok(SendReceipt::sent(api::receipt_id(&r.body, &message.idempotency_key)))
    }
}

kata_sdk::export_channel!(Webhook);
