//! kata-store: the workspace database.
//!
//! Owns the SQLite schema and its numbered migrations, the integrity check
//! at open, the batch writer, and every table: inbox, outbox, poll cursors,
//! plugin state, sessions ([`session`]) and their history ([`history`]), scheduled tasks,
//! senders, permissions and the audit log ([`store`]). Each step that must
//! survive a crash is one transaction here.
//!
//! It depends on kata-policy only (and rusqlite, tokio's oneshot for the
//! batch writer's answers). It must NOT depend on wasmtime, kata-host or
//! anything above: the plugin host reaches plugin state and the audit log
//! through its own sink traits, which kata-daemon implements over [`store::Db`].

pub mod approvals;
pub mod held;
pub mod history;
pub mod session;
pub mod store;
pub mod tasks;
