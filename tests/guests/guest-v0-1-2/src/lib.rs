//! Test guest `guest-v0-1-2`: a channel plugin built directly against
//! `wit/v0.1.2`, without the SDK (which moved on to 0.1.3). 0.1.3 changed
//! records this contract exports (`channel-info` gained `features`,
//! `outbound-message` gained `attachments` and `actions`) and added `act`,
//! so this proves the host converts them: `describe` lists no features,
//! `poll` returns a group message that mentions the agent, `subscribe` a
//! webhook, and `send` returns the text it was given (as the receipt id and
//! a frame), so a test sees what the host made of attachments and actions.

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/v0.1.2",
        world: "kata:plugin/channel-plugin",
    });
}

use bindings::exports::kata::plugin::channel::{ChannelInfo, FrameResult, Guest, IngressMode, PollResult, StreamKind, Subscription};
use bindings::kata::plugin::host;
use bindings::kata::plugin::types::{ChannelError, ConversationKind, Frame, Message, OutboundMessage, SendReceipt};

struct Old;

impl Guest for Old {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "old12".into(), version: "0.1.2".into(), ingress: vec![IngressMode::Poll] }
    }

    fn connect() -> Result<(), ChannelError> {
        Ok(())
    }

    fn poll(cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let m = Message {
            id: "m1".into(),
            conversation: "#room".into(),
            thread: None,
            sender: "ann".into(),
            sender_name: None,
            text: "kata: hi".into(),
            attachments: vec![],
            timestamp_ms: host::now_ms(),
            raw: None,
            conversation_kind: ConversationKind::Group,
            mentioned: true,
        };
        Ok(PollResult { messages: if cursor.is_none() { vec![m] } else { vec![] }, cursor: Some("1".into()), next_poll_ms: None })
    }

    fn subscribe() -> Result<Subscription, ChannelError> {
        let url = "http://127.0.0.1:9/hook".to_string();
        Ok(Subscription { kind: StreamKind::Webhook, url, headers: vec![], initial_frames: vec![], heartbeat_ms: None })
    }

    fn on_frame(_frame: Frame) -> Result<FrameResult, ChannelError> {
        Err(ChannelError::Unsupported)
    }

    fn send(message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: message.text.clone(), frames: vec![Frame::Text(message.text)] })
    }

    fn disconnect() {}
}

bindings::export!(Old with_types_in bindings);
