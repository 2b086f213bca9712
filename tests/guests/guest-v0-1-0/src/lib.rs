//! Test guest `guest-v0-1-0`: a channel plugin built directly against the
//! first published contract, `wit/v0.1.0`, without the SDK (which moves on
//! with the contract). It proves a component built against an older version
//! keeps loading and running on a newer host: `poll` uses the 0.1.0 host
//! imports (config, state, clock) and returns one message per new cursor.

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/v0.1.0",
        world: "kata:plugin/channel-plugin",
    });
}

use bindings::exports::kata::plugin::channel::{ChannelInfo, Frame, FrameResult, Guest, IngressMode, PollResult, Subscription};
use bindings::kata::plugin::host;
use bindings::kata::plugin::types::{ChannelError, Message, OutboundMessage, SendReceipt};

struct Old;

impl Guest for Old {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "old".into(), version: "0.1.0".into(), ingress: vec![IngressMode::Poll] }
    }

    fn connect() -> Result<(), ChannelError> {
        Ok(())
    }

    fn poll(cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let n: u64 = cursor.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
        let greeting = host::config_get("greeting").unwrap_or_else(|| "hello".into());
        let polls = host::state_get("polls").map_or(0, |v| v.len()) + 1;
        host::state_set("polls", &vec![0; polls]).map_err(ChannelError::Fatal)?;
        if n >= 3 {
            return Ok(PollResult { messages: vec![], cursor: None, next_poll_ms: Some(50) });
        }
        let message = Message {
            id: format!("old-{n}"),
            conversation: "c".into(),
            thread: None,
            sender: "old-timer".into(),
            sender_name: None,
            text: format!("{greeting} from 0.1.0 #{n} (poll {polls})"),
            attachments: vec![],
            timestamp_ms: host::now_ms(),
            raw: None,
        };
        Ok(PollResult { messages: vec![message], cursor: Some((n + 1).to_string()), next_poll_ms: Some(0) })
    }

    fn subscribe() -> Result<Subscription, ChannelError> {
        Err(ChannelError::Unsupported)
    }

    fn on_frame(_frame: Frame) -> Result<FrameResult, ChannelError> {
        Err(ChannelError::Unsupported)
    }

    fn send(message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        host::log(bindings::kata::plugin::types::LogLevel::Info, &format!("old plugin sends {:?}", message.text));
        Ok(SendReceipt { id: format!("old-{}", message.idempotency_key) })
    }

    fn disconnect() {}
}

bindings::export!(Old with_types_in bindings);

/// The contract version, as the 0.1.0 SDK wrote it.
#[cfg(target_family = "wasm")]
#[used]
#[unsafe(link_section = "kata:wit-version")]
static KATA_WIT_VERSION: [u8; 5] = *b"0.1.0";
