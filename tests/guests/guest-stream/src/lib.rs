//! Test guest `guest-stream`: a channel whose messages come over a stream the
//! host opens (config `kind` = `websocket` or `sse`, `url`). It speaks a tiny
//! line protocol so the test's server can check every step:
//!
//! - on connect it sends `HELLO {{secret:token}}` (websocket only; the host
//!   fills the secret in) with an `authorization: Bearer {{secret:token}}`
//!   handshake header;
//! - `ping` → replies `pong`;
//! - `msg:ID:TEXT` → a direct message from `u1` in conversation `c1`;
//! - `send` writes `reply:CONVERSATION:TEXT` over the stream (websocket), or
//!   only logs (SSE and webhook streams are read-only);
//! - as a webhook (`kind` = `webhook`), each request is a JSON frame whose
//!   `body` is such a line; the answer is `accepted ID` (or 204 for others).

use kata_sdk::prelude::*;

struct Streamer {
    url: String,
    kind: String,
}

impl Channel for Streamer {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "stream".into(), version: "0.1.0".into(), ingress: vec![IngressMode::Subscribe], features: vec![] }
    }

    fn connect() -> Result<Self, ChannelError> {
        let url = config::get("url").ok_or_else(|| ChannelError::InvalidConfig("config key `url` is missing".into()))?;
        let kind = config::get("kind").unwrap_or_else(|| "websocket".into());
        Ok(Streamer { url, kind })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        Err(ChannelError::Unsupported)
    }

    fn subscribe(&mut self) -> Result<Subscription, ChannelError> {
        match self.kind.as_str() {
            "sse" => return Ok(Subscription::server_sent_events(&self.url).header("authorization", "Bearer {{secret:token}}")),
            "webhook" => return Ok(Subscription::webhook(&self.url)),
            _ => {}
        }
        Ok(Subscription::websocket(&self.url)
            .header("authorization", "Bearer {{secret:token}}")
            .initial(Frame::text("HELLO {{secret:token}}")))
    }

    fn on_frame(&mut self, frame: Frame) -> Result<FrameResult, ChannelError> {
        let Some(text) = frame.as_text() else { return Ok(FrameResult::default()) };
        if self.kind == "webhook" {
            let request: serde_json::Value = serde_json::from_str(text).map_err(|e| ChannelError::Fatal(format!("webhook frame: {e}")))?;
            let body = request["body"].as_str().unwrap_or_default();
            let Some(rest) = body.strip_prefix("msg:") else { return Ok(FrameResult::default()) };
            let (id, text) = rest.split_once(':').unwrap_or((rest, ""));
            let from = request["headers"]["x-from"].as_str().unwrap_or("u1");
            return Ok(FrameResult {
                messages: vec![Message::text(format!("m{id}"), "c1", from, text).mentioning()],
                replies: vec![Frame::text(format!("accepted {id}"))],
            });
        }
        if text == "ping" {
            return Ok(FrameResult::reply(vec![Frame::text("pong")]));
        }
        if let Some(rest) = text.strip_prefix("msg:") {
            let (id, body) = rest.split_once(':').unwrap_or((rest, ""));
            return Ok(FrameResult::messages(vec![Message::text(format!("m{id}"), "c1", "u1", body).mentioning()]));
        }
        Ok(FrameResult::default())
    }

    fn send(&mut self, msg: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        if self.kind != "websocket" {
            log::info(&format!("stream guest would send {:?}", msg.text));
            return Ok(SendReceipt::sent(msg.idempotency_key));
        }
        let line = format!("reply:{}:{}", msg.conversation, msg.text);
        Ok(SendReceipt::over_stream(msg.idempotency_key, vec![Frame::text(line)]))
    }
}

kata_sdk::export_channel!(Streamer);
