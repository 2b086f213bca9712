//! The sinks the plugin host writes through: what it needs from the rest of
//! kata, as small traits, so kata-host depends on no database.
//!
//! - [`StateStore`]: plugin state (`host.state-*`), keyed by plugin name.
//! - [`AuditSink`]: the audit log, where every sandbox decision is written
//!   (defined with the [`Auditor`](crate::audit::Auditor), re-exported here).
//!
//! (A service's `emitter.emit` calls go to a [`crate::host::Emit`], which
//! lives with the store data that holds it.)
//!
//! kata-daemon implements both over the workspace database. [`Sinks::memory`]
//! keeps state in memory and audits to the log only: enough to embed the
//! host without a workspace (see the crate docs).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;

pub use crate::audit::AuditSink;

/// Plugin state: a small key-value store per plugin.
pub trait StateStore: Send + Sync {
    /// The value of `key`, if set.
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>>;
    /// Set `key` to `value`.
    fn set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<()>;
    /// Remove `key` (nothing if unset).
    fn delete(&self, plugin: &str, key: &str) -> Result<()>;
    /// Up to `limit` keys starting with `prefix`, in order.
    fn keys(&self, plugin: &str, prefix: &str, limit: usize) -> Result<Vec<String>>;
}

/// The sinks a plugin is loaded with.
#[derive(Clone)]
pub struct Sinks {
    /// Plugin state.
    pub state: Arc<dyn StateStore>,
    /// The audit log.
    pub audit: Option<Arc<dyn AuditSink>>,
}

impl Sinks {
    /// State in memory, audit to the log only: for embedding and tests.
    ///
    /// ```
    /// let sinks = kata_host::sink::Sinks::memory();
    /// sinks.state.set("notes", "last", b"42").unwrap();
    /// assert_eq!(sinks.state.get("notes", "last").unwrap().as_deref(), Some(&b"42"[..]));
    /// assert_eq!(sinks.state.keys("notes", "l", 10).unwrap(), ["last"]);
    /// ```
    pub fn memory() -> Self {
        Self { state: Arc::new(MemoryState::default()), audit: None }
    }
}

/// Plugin state kept in memory (lost when dropped).
#[derive(Default)]
pub struct MemoryState(Mutex<BTreeMap<(String, String), Vec<u8>>>);

impl MemoryState {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Vec<u8>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateStore for MemoryState {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.map().get(&(plugin.to_string(), key.to_string())).cloned())
    }

    fn set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<()> {
        self.map().insert((plugin.to_string(), key.to_string()), value.to_vec());
        Ok(())
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<()> {
        self.map().remove(&(plugin.to_string(), key.to_string()));
        Ok(())
    }

    fn keys(&self, plugin: &str, prefix: &str, limit: usize) -> Result<Vec<String>> {
        Ok(self.map().keys().filter(|(p, k)| p == plugin && k.starts_with(prefix)).map(|(_, k)| k.clone()).take(limit).collect())
    }
}
