//! `kata:plugin@0.1.2`, kept so components built against it run unchanged.
//!
//! Its `host` interface is the latest one's (it links against it, see
//! [`super::latest::add_to_linker`]), and so are its `tools` and `service`
//! exports (their records did not change, and wasmtime finds `tools@0.1.2`
//! for `tools@0.1.3`): those run on the latest bindings. Its `channel`
//! export differs: `channel-info` has no `features`, there is no `act`, and
//! `outbound-message` has no `attachments` or `actions`. So the channel gets
//! its own bindings, converted here: a 0.1.2 channel has no features, `act`
//! is `unsupported`, and a message is handed over without attachments or
//! actions — the host degrades them into text first (see
//! [`super::degrade_outbound`]) because the channel lists no feature.

use super::latest;

/// The version this module implements.
pub const VERSION: &str = "0.1.2";

#[allow(missing_docs)]
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "channel-plugin",
        path: "../../wit/v0.1.2",
        exports: { default: async },
    });
}

pub use bindings::{ChannelPlugin, ChannelPluginPre};

use bindings::exports::kata::plugin::channel as old;
use bindings::kata::plugin::types as old_types;

impl From<old::IngressMode> for latest::IngressMode {
    fn from(m: old::IngressMode) -> Self {
        match m {
            old::IngressMode::Poll => Self::Poll,
            old::IngressMode::Subscribe => Self::Subscribe,
        }
    }
}

impl From<old::ChannelInfo> for latest::ChannelInfo {
    fn from(i: old::ChannelInfo) -> Self {
        Self { name: i.name, version: i.version, ingress: i.ingress.into_iter().map(Into::into).collect(), features: Vec::new() }
    }
}

impl From<old_types::Attachment> for latest::Attachment {
    fn from(a: old_types::Attachment) -> Self {
        Self { name: a.name, mime_type: a.mime_type, url: a.url, size: a.size }
    }
}

impl From<old_types::ConversationKind> for latest::ConversationKind {
    fn from(k: old_types::ConversationKind) -> Self {
        match k {
            old_types::ConversationKind::Direct => Self::Direct,
            old_types::ConversationKind::Group => Self::Group,
        }
    }
}

impl From<old_types::Message> for latest::Message {
    fn from(m: old_types::Message) -> Self {
        Self {
            id: m.id,
            conversation: m.conversation,
            thread: m.thread,
            sender: m.sender,
            sender_name: m.sender_name,
            text: m.text,
            attachments: m.attachments.into_iter().map(Into::into).collect(),
            timestamp_ms: m.timestamp_ms,
            raw: m.raw,
            conversation_kind: m.conversation_kind.into(),
            mentioned: m.mentioned,
        }
    }
}

impl From<old::PollResult> for latest::PollResult {
    fn from(r: old::PollResult) -> Self {
        Self { messages: r.messages.into_iter().map(Into::into).collect(), cursor: r.cursor, next_poll_ms: r.next_poll_ms }
    }
}

impl From<old_types::ChannelError> for latest::ChannelError {
    fn from(e: old_types::ChannelError) -> Self {
        use old_types::ChannelError as E;
        match e {
            E::AuthFailed(m) => Self::AuthFailed(m),
            E::RateLimited(ms) => Self::RateLimited(ms),
            E::Network(m) => Self::Network(m),
            E::InvalidConfig(m) => Self::InvalidConfig(m),
            E::Unsupported => Self::Unsupported,
            E::Fatal(m) => Self::Fatal(m),
        }
    }
}

impl From<old_types::Frame> for latest::Frame {
    fn from(f: old_types::Frame) -> Self {
        match f {
            old_types::Frame::Text(t) => Self::Text(t),
            old_types::Frame::Binary(b) => Self::Binary(b),
        }
    }
}

impl From<&latest::Frame> for old_types::Frame {
    fn from(f: &latest::Frame) -> Self {
        match f {
            latest::Frame::Text(t) => Self::Text(t.clone()),
            latest::Frame::Binary(b) => Self::Binary(b.clone()),
        }
    }
}

impl From<old_types::SendReceipt> for latest::SendReceipt {
    fn from(r: old_types::SendReceipt) -> Self {
        Self { id: r.id, frames: r.frames.into_iter().map(Into::into).collect() }
    }
}

/// Attachments and actions are dropped: the caller degrades them into the
/// text first ([`super::degrade_outbound`]), as for any channel without the
/// `attachments` and `buttons` features.
impl From<&latest::OutboundMessage> for old_types::OutboundMessage {
    fn from(m: &latest::OutboundMessage) -> Self {
        Self {
            conversation: m.conversation.clone(),
            thread: m.thread.clone(),
            reply_to: m.reply_to.clone(),
            text: m.text.clone(),
            idempotency_key: m.idempotency_key.clone(),
        }
    }
}

impl From<old::StreamKind> for latest::StreamKind {
    fn from(k: old::StreamKind) -> Self {
        match k {
            old::StreamKind::Websocket => Self::Websocket,
            old::StreamKind::ServerSentEvents => Self::ServerSentEvents,
            old::StreamKind::TcpLines => Self::TcpLines,
            old::StreamKind::Webhook => Self::Webhook,
        }
    }
}

impl From<old::Subscription> for latest::Subscription {
    fn from(s: old::Subscription) -> Self {
        Self {
            kind: s.kind.into(),
            url: s.url,
            headers: s.headers,
            initial_frames: s.initial_frames.into_iter().map(Into::into).collect(),
            heartbeat_ms: s.heartbeat_ms,
        }
    }
}

impl From<old::FrameResult> for latest::FrameResult {
    fn from(r: old::FrameResult) -> Self {
        Self { messages: r.messages.into_iter().map(Into::into).collect(), replies: r.replies.into_iter().map(Into::into).collect() }
    }
}
