//! Test guest `guest-v0-1-1`: a channel plugin built directly against
//! `wit/v0.1.1`, without the SDK (which moves on with the contract). 0.1.2
//! changed records this contract exports (`message`, `send-receipt`, `frame`),
//! so this proves the host converts them: `poll` returns a message with an
//! attachment, `subscribe` a line stream, `on-frame` echoes a line back and
//! turns it into a message, and `send` returns a receipt.

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/v0.1.1",
        world: "kata:plugin/channel-plugin",
    });
}

use bindings::exports::kata::plugin::channel::{ChannelInfo, Frame, FrameResult, Guest, IngressMode, PollResult, StreamKind, Subscription};
use bindings::kata::plugin::host;
use bindings::kata::plugin::types::{Attachment, ChannelError, Message, OutboundMessage, SendReceipt};

struct Old;

fn message(id: String, text: String) -> Message {
    Message {
        id,
        conversation: "c".into(),
        thread: Some("t".into()),
        sender: "old-timer".into(),
        sender_name: Some("Old Timer".into()),
        text,
        attachments: vec![Attachment { name: "a.txt".into(), mime_type: "text/plain".into(), url: None, size: Some(3) }],
        timestamp_ms: host::now_ms(),
        raw: None,
    }
}

impl Guest for Old {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "old11".into(), version: "0.1.1".into(), ingress: vec![IngressMode::Poll, IngressMode::Subscribe] }
    }

    fn connect() -> Result<(), ChannelError> {
        Ok(())
    }

    fn poll(cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let n: u64 = cursor.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
        // state-keys is what 0.1.1 added to the host.
        let keys = host::state_keys("");
        host::state_set(&format!("poll-{n}"), b"1").map_err(ChannelError::Fatal)?;
        if n >= 3 {
            return Ok(PollResult { messages: vec![], cursor: None, next_poll_ms: Some(50) });
        }
        let text = format!("from 0.1.1 #{n} ({} keys)", keys.len());
        Ok(PollResult { messages: vec![message(format!("old11-{n}"), text)], cursor: Some((n + 1).to_string()), next_poll_ms: Some(0) })
    }

    fn subscribe() -> Result<Subscription, ChannelError> {
        Ok(Subscription {
            kind: StreamKind::TcpLines,
            url: "tcp://127.0.0.1:7".into(),
            headers: vec![("x-old".into(), "1".into())],
            initial_frames: vec![Frame::Text("HELLO".into()), Frame::Binary(vec![1, 2])],
            heartbeat_ms: Some(1000),
        })
    }

    fn on_frame(frame: Frame) -> Result<FrameResult, ChannelError> {
        match frame {
            Frame::Text(line) if line.is_empty() => Ok(FrameResult { messages: vec![], replies: vec![] }),
            Frame::Text(line) => Ok(FrameResult {
                messages: vec![message(format!("line-{line}"), line.clone())],
                replies: vec![Frame::Text(format!("ECHO {line}"))],
            }),
            Frame::Binary(_) => Err(ChannelError::Unsupported),
        }
    }

    fn send(message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: format!("old11-{}-{}", message.idempotency_key, message.text) })
    }

    fn disconnect() {}
}

bindings::export!(Old with_types_in bindings);

/// The contract version, as the 0.1.1 SDK wrote it.
#[cfg(target_family = "wasm")]
#[used]
#[unsafe(link_section = "kata:wit-version")]
static KATA_WIT_VERSION: [u8; 5] = *b"0.1.1";
