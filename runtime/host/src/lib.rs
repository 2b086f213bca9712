//! kata-host: kata's plugin host, usable on its own.
//!
//! Runs WebAssembly components under a [`policy`]. Its modules, bottom up
//! (none imports one above it):
//!
//! - [`audit`], [`limits`], [`secret_store`], [`sink`]: the audit model and
//!   its sink, limit counters and cutting, kata's encrypted secret store, and
//!   the plugin-state sink;
//! - [`sandbox`]: the network gate, secrets, leak scan, connection pool;
//! - [`engine`]: the wasmtime engine (pooling allocator, epoch CPU metering,
//!   on-disk compile cache);
//! - [`host`]: each instance's store data and one module per published
//!   `kata:plugin` WIT version;
//! - [`admit`]: messages and frames a plugin hands the host, checked
//!   against its limits; [`outlet`]: where a channel's `send` puts frames
//!   for its open stream;
//! - [`plugin`]: loading and validating components, and the one guarded
//!   [`plugin::Instance`] every kind of plugin runs in; [`componentize`]:
//!   core modules into components.
//!
//! # Embedding
//!
//! Load a channel component under a policy, poll it and send through it —
//! no daemon, no database ([`sink::Sinks::memory`] keeps plugin state in
//! memory and audits to the log only). The same program is
//! `examples/embed.rs`.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use std::path::Path;
//! use kata_host::{engine::Engine, host::latest::OutboundMessage, plugin, policy::Policy, sink::Sinks};
//!
//! let policy = Policy::parse("[plugins.quiet]\npath = \"quiet.wasm\"\n", Path::new("kata.toml"), Path::new("."))?;
//! let engine = Engine::new(None)?;
//! let linker = plugin::linker(&engine)?;
//! let quiet = plugin::ChannelPlugin::load(&engine, &linker, policy.plugins["quiet"].clone(), Sinks::memory(), Path::new("."))?;
//! let mut channel = quiet.instantiate().await?;
//! channel.connect().await?;
//! let polled = channel.poll(None).await?;
//! let hello = OutboundMessage {
//!     conversation: "c1".into(),
//!     thread: None,
//!     reply_to: None,
//!     text: format!("{} messages", polled.messages.len()),
//!     idempotency_key: "k1".into(),
//!     attachments: vec![],
//!     actions: vec![],
//! };
//! let receipt = channel.send(&hello).await?;
//! # let _ = receipt;
//! # Ok(())
//! # }
//! ```
//!
//! It must NOT depend on SQLite (rusqlite), kata-store, kata-daemon or the
//! CLI: what it writes — plugin state, audit records, service emits — goes
//! through the small traits in [`sink`], which kata-daemon implements over
//! the workspace database. It depends on kata-policy (re-exported as
//! [`policy`], [`manifest`] and [`util`]) and wasmtime.

pub use kata_policy::{manifest, policy, util};

pub mod admit;
pub mod audit;
pub mod componentize;
pub mod engine;
pub mod host;
pub mod limits;
pub mod outlet;
pub mod plugin;
pub mod sandbox;
pub mod secret_store;
pub mod sink;
