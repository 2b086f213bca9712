//! `kata:plugin@0.1.0`: the first published contract, kept so components
//! built against it run unchanged on newer hosts.
//!
//! Its `types` and `host` interfaces are the same as 0.1.1's (0.1.1 only added
//! `host.state-keys`), so the bindings reuse those Rust types; only the
//! `channel` export differs by name (`channel@0.1.0`) and gets its own typed
//! accessors, whose records are converted to the latest ones here (messages
//! through the 0.1.1 conversions, so they are `direct` and not `mentioned`).

use super::latest;

/// The version this module implements.
pub const VERSION: &str = "0.1.0";

#[allow(missing_docs)]
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "channel-plugin",
        path: "../../wit/v0.1.0",
        exports: { default: async },
        with: {
            "kata:plugin/types@0.1.0": crate::host::v0_1_1::bindings::kata::plugin::types,
            "kata:plugin/host@0.1.0": crate::host::v0_1_1::bindings::kata::plugin::host,
        },
    });
}

/// The `tools-plugin` world of 0.1.0 (same types as 0.1.1).
#[allow(missing_docs)]
pub(crate) mod tools_bindings {
    wasmtime::component::bindgen!({
        world: "tools-plugin",
        path: "../../wit/v0.1.0",
        exports: { default: async },
        with: {
            "kata:plugin/types@0.1.0": crate::host::v0_1_1::bindings::kata::plugin::types,
            "kata:plugin/host@0.1.0": crate::host::v0_1_1::bindings::kata::plugin::host,
        },
    });
}

pub use bindings::{ChannelPlugin, ChannelPluginPre};
pub use tools_bindings::{ToolsPlugin, ToolsPluginPre};

use bindings::exports::kata::plugin::channel as old;

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

impl From<old::PollResult> for latest::PollResult {
    fn from(r: old::PollResult) -> Self {
        Self { messages: r.messages.into_iter().map(Into::into).collect(), cursor: r.cursor, next_poll_ms: r.next_poll_ms }
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
