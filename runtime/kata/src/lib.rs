//! kata: an always-on agent host whose channel adapters, services and tools
//! are WebAssembly components, each running with only what the workspace
//! policy grants it.
//!
//! This is the library of kata's two binaries. `kata`: the clap [`cli`],
//! the control-socket clients ([`client`], [`daemonize`]), plugin
//! installation ([`install`]), plugin signatures, trust and OCI distribution
//! ([`signing`], [`provenance`], [`oci`]) and the `kata
//! policy|secret|task|tool|session` commands (the `*_cmd` modules).
//! `kata-dev`: the plugin authoring commands ([`dev`], [`build`],
//! [`scaffold`]), which `kata` hands to it.
//!
//! Everything else is a crate below it, along the data path, each re-exported here under the module name it had when kata
//! was one crate (so `kata::store::Db` and the like keep working):
//!
//! - kata-policy: [`policy`], [`manifest`], [`util`] — kata.toml, grants,
//!   manifests; no wasmtime, tokio or SQLite.
//! - kata-store: [`store`], [`session`], [`history`], [`tasks`],
//!   [`approvals`] — the workspace database.
//! - kata-host: [`engine`], [`host`], [`sandbox`], [`limits`], [`admit`],
//!   [`plugin`], [`outlet`], [`componentize`], [`secret_store`], [`audit`],
//!   [`sink`] —
//!   the embeddable plugin host; no SQLite.
//! - kata-daemon: [`workspace`], [`sinks`], [`events`], [`health`],
//!   [`senders`], [`permissions`], [`channel`], [`stream`], [`service`],
//!   [`tools`], [`turn`], [`agent`], [`openai`], [`command`], [`scheduler`], [`router`],
//!   [`control`], [`daemon`] — what `kata run` runs.
//!
//! Nothing below depends on this crate: a CLI-only change rebuilds only it.

pub use kata_daemon::{
    agent, channel, command, control, daemon, events, health, openai, permissions, router, scheduler, senders, service, sinks, stream,
    tools, turn, workspace,
};
pub use kata_host::{admit, audit, componentize, engine, host, limits, outlet, plugin, sandbox, secret_store, sink};
pub use kata_policy::{manifest, policy, util};
pub use kata_store::{approvals, history, session, store, tasks};

pub mod build;
pub mod cli;
pub mod client;
pub mod daemonize;
pub mod dev;
pub mod install;
pub mod oci;
pub mod policy_cmd;
pub mod provenance;
pub mod scaffold;
pub mod secret_cmd;
pub mod session_cmd;
pub mod signing;
pub mod task_cmd;
pub mod tool_cmd;
