//! `kata:plugin@0.1.0`: the first published contract, kept so components
//! built against it run unchanged on newer hosts.
//!
//! Its `types` and `host` interfaces are the same as (or a subset of) 0.1.1,
//! so the bindings reuse the latest Rust types and host implementation; only
//! the `channel` export differs by name (`channel@0.1.0`) and gets its own
//! typed accessors, whose records are converted to the latest ones here.

use super::v0_1_1 as latest;

/// The version this module implements.
pub const VERSION: &str = "0.1.0";

#[allow(missing_docs)]
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "channel-plugin",
        path: "../wit/v0.1.0",
        exports: { default: async },
        with: {
            "kata:plugin/types@0.1.0": crate::host::v0_1_1::bindings::kata::plugin::types,
            "kata:plugin/host@0.1.0": crate::host::v0_1_1::bindings::kata::plugin::host,
        },
    });
}

pub use bindings::{ChannelPlugin, ChannelPluginPre};

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
        Self { name: i.name, version: i.version, ingress: i.ingress.into_iter().map(Into::into).collect() }
    }
}

impl From<old::PollResult> for latest::PollResult {
    fn from(r: old::PollResult) -> Self {
        Self { messages: r.messages, cursor: r.cursor, next_poll_ms: r.next_poll_ms }
    }
}
