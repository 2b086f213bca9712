//! `kata:plugin@0.1.1`, kept so components built against it run unchanged.
//!
//! Its `host` interface is a subset of the latest one (it links against it,
//! see [`super::latest::add_to_linker`]), but its records differ: `message`
//! has no `conversation-kind` or `mentioned`, `send-receipt` no `frames`, and
//! `frame` lives in `channel`. So the `channel` export gets its own bindings,
//! and its records are converted to the latest ones here. A 0.1.1 message is
//! taken as `direct` and not `mentioned`: the component cannot say, and this
//! keeps the sender rules it ran under (allow_from and pairing per sender).

use super::latest;

/// The version this module implements.
pub const VERSION: &str = "0.1.1";

#[allow(missing_docs)]
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "channel-plugin",
        path: "../../wit/v0.1.1",
        exports: { default: async },
    });
}

/// The `tools-plugin` world of 0.1.1, on this version's own `types`.
#[allow(missing_docs)]
pub(crate) mod tools_bindings {
    wasmtime::component::bindgen!({
        world: "tools-plugin",
        path: "../../wit/v0.1.1",
        exports: { default: async },
        with: {
            "kata:plugin/types": crate::host::v0_1_1::bindings::kata::plugin::types,
            "kata:plugin/host": crate::host::v0_1_1::bindings::kata::plugin::host,
        },
    });
}

pub use tools_bindings::{ToolsPlugin, ToolsPluginPre};

impl From<old_types::ToolSpec> for latest::ToolSpec {
    fn from(s: old_types::ToolSpec) -> Self {
        Self { name: s.name, description: s.description, args_schema: s.args_schema }
    }
}

impl From<old_types::ToolError> for latest::ToolError {
    fn from(e: old_types::ToolError) -> Self {
        use old_types::ToolError as E;
        match e {
            E::UnknownTool(m) => Self::UnknownTool(m),
            E::InvalidArgs(m) => Self::InvalidArgs(m),
            E::Failed(m) => Self::Failed(m),
        }
    }
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
            conversation_kind: latest::ConversationKind::Direct,
            mentioned: false,
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

impl From<old_types::SendReceipt> for latest::SendReceipt {
    fn from(r: old_types::SendReceipt) -> Self {
        Self { id: r.id, frames: Vec::new() }
    }
}

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

impl From<old::Frame> for latest::Frame {
    fn from(f: old::Frame) -> Self {
        match f {
            old::Frame::Text(t) => Self::Text(t),
            old::Frame::Binary(b) => Self::Binary(b),
        }
    }
}

impl From<&latest::Frame> for old::Frame {
    fn from(f: &latest::Frame) -> Self {
        match f {
            latest::Frame::Text(t) => Self::Text(t.clone()),
            latest::Frame::Binary(b) => Self::Binary(b.clone()),
        }
    }
}

impl From<old::StreamKind> for latest::StreamKind {
    fn from(k: old::StreamKind) -> Self {
        match k {
            old::StreamKind::Websocket => Self::Websocket,
            old::StreamKind::ServerSentEvents => Self::ServerSentEvents,
            old::StreamKind::TcpLines => Self::TcpLines,
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
