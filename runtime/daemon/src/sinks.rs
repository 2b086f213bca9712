//! kata-host's sinks over the workspace database: plugin state in the
//! `state` table, audit records in the `audit` table (allowances batched).

use std::sync::Arc;

use anyhow::Result;

use crate::audit::{Auditor, Event};
use crate::sink::{AuditSink, Sinks, StateStore};
use crate::store::{AuditRow, Db};

/// The workspace database as kata-host's state store and audit sink.
#[derive(Clone)]
pub struct DbSink(pub Db);

impl StateStore for DbSink {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.0.state_get(plugin, key)
    }

    fn set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<()> {
        self.0.state_set(plugin, key, value)
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<()> {
        self.0.state_delete(plugin, key)
    }

    fn keys(&self, plugin: &str, prefix: &str, limit: usize) -> Result<Vec<String>> {
        self.0.state_keys(plugin, prefix, limit)
    }
}

impl AuditSink for DbSink {
    fn append(&self, plugin: &str, ts_ms: u64, e: Event, batched: bool) -> Result<()> {
        let row = AuditRow {
            id: 0,
            ts_ms,
            plugin: plugin.to_string(),
            kind: e.kind.as_str().to_string(),
            verdict: e.verdict.as_str().to_string(),
            method: e.method,
            target: e.target,
            policy: e.policy,
            detail: e.detail,
        };
        if batched {
            self.0.audit_append_later(row);
            Ok(())
        } else {
            self.0.audit_append(&row)
        }
    }
}

/// The sinks plugins loaded by the daemon write to: `db`.
pub fn for_db(db: &Db) -> Sinks {
    let sink = Arc::new(DbSink(db.clone()));
    Sinks { state: sink.clone(), audit: Some(sink) }
}

/// An auditor writing `plugin`'s decisions to `db`.
pub fn auditor(db: &Db, plugin: &str) -> Auditor {
    Auditor::new(Arc::new(DbSink(db.clone())), plugin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Kind, Verdict};
    use crate::store::AuditQuery;

    #[test]
    fn events_become_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("kata.db")).expect("db");
        let a = auditor(&db, "tg");
        a.record(
            Event::new(Kind::Network, Verdict::Deny)
                .method("GET")
                .target("https://evil.example/x")
                .policy("https://evil.example")
                .detail("no network grant covers it"),
        );
        Auditor::log_only("tg").record(Event::new(Kind::Leak, Verdict::Block));
        let rows = db.audit_query(&AuditQuery { limit: 10, ..Default::default() }).expect("query");
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].kind.as_str(), rows[0].verdict.as_str()), ("network", "deny"));
        assert_eq!(rows[0].policy.as_deref(), Some("https://evil.example"));
    }
}
