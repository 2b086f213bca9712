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
//!   only logs (SSE streams are read-only).

use kata_sdk::prelude::*;

struct Streamer {
    url: String,
    sse: bool,
}

impl Channel for Streamer {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "stream".into(), version: "0.1.0".into(), ingress: vec![IngressMode::Subscribe] }
    }

    fn connect() -> Result<Self, ChannelError> {
        let url = config::get("url").ok_or_else(|| ChannelError::InvalidConfig("config key `url` is missing".into()))?;
        let sse = config::get("kind").as_deref() == Some("sse");
        Ok(Streamer { url, sse })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        Err(ChannelError::Unsupported)
    }

    fn subscribe(&mut self) -> Result<Subscription, ChannelError> {
        if self.sse {
            return Ok(Subscription::server_sent_events(&self.url).header("authorization", "Bearer {{secret:token}}"));
        }
        Ok(Subscription::websocket(&self.url)
            .header("authorization", "Bearer {{secret:token}}")
            .initial(Frame::text("HELLO {{secret:token}}")))
    }

    fn on_frame(&mut self, frame: Frame) -> Result<FrameResult, ChannelError> {
        let Some(text) = frame.as_text() else { return Ok(FrameResult::default()) };
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
        if self.sse {
            log::info(&format!("stream guest would send {:?}", msg.text));
            return Ok(SendReceipt::sent(msg.idempotency_key));
        }
        let line = format!("reply:{}:{}", msg.conversation, msg.text);
        Ok(SendReceipt::over_stream(msg.idempotency_key, vec![Frame::text(line)]))
    }
}

kata_sdk::export_channel!(Streamer);
