//! The `approvals` table: agent tool calls waiting for (or given) a
//! person's decision (see kata-daemon's `permissions` for who asks and waits).

use std::time::Duration;

use anyhow::Result;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::store::{Db, now_ms};

/// A tool call waiting for (or given) a person's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    /// The id to approve or deny.
    pub id: i64,
    /// The session the call belongs to.
    pub session_key: String,
    /// The tool's plugin.
    pub plugin: String,
    /// The tool.
    pub tool: String,
    /// The arguments the agent gave (JSON).
    pub args: String,
    /// `pending`, `approved`, `denied` or `expired`.
    pub status: String,
    /// When it was asked (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it is denied if no one decides (ms since the Unix epoch).
    pub expires_ms: u64,
    /// Who decided it and where (`kata approve`, or `CHANNEL:SENDER in
    /// CHANNEL:CONVERSATION` for an answer in a chat); None while pending
    /// or when it expired.
    pub decided_by: Option<String>,
}

/// The largest argument text stored with an approval (the rest is cut).
const MAX_ARGS: usize = 4096;

impl Db {
    /// Record a call waiting for approval; returns its id.
    pub fn approval_create(
        &self,
        session_key: &str,
        plugin: &str,
        tool: &str,
        args: &str,
        mode_source: &str,
        timeout: Duration,
    ) -> Result<i64> {
        let now = now_ms();
        let mut args = args.to_string();
        if args.len() > MAX_ARGS {
            let mut cut = MAX_ARGS;
            while !args.is_char_boundary(cut) {
                cut -= 1;
            }
            args.truncate(cut);
            args.push('…');
        }
        let conn = self.lock();
        conn.execute(
            "INSERT INTO approvals (session_key, plugin, tool, args, mode_source, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![session_key, plugin, tool, args, mode_source, now as i64, now.saturating_add(timeout.as_millis() as u64) as i64],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// One approval by id.
    pub fn approval(&self, id: i64) -> Result<Option<Approval>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id, session_key, plugin, tool, args, status, created_ms, expires_ms, decided_by FROM approvals WHERE id = ?1",
                [id],
                row_to_approval,
            )
            .optional()?)
    }

    /// Approve or deny a pending call; `by` says who and where (kept with
    /// it, for the audit log). Returns the approval as it now is (None: no
    /// such id); a call that was already decided or expired keeps its status.
    pub fn approval_decide(&self, id: i64, approve: bool, by: &str) -> Result<Option<Approval>> {
        {
            let conn = self.lock();
            let status = if approve { "approved" } else { "denied" };
            conn.execute(
                "UPDATE approvals SET status = ?2, decided_ms = ?3, decided_by = ?4
                 WHERE id = ?1 AND status = 'pending' AND expires_ms > ?3",
                params![id, status, now_ms() as i64, by],
            )?;
        }
        self.approval(id)
    }

    /// Mark pending calls whose time is up (or whose daemon is gone) expired.
    pub fn approvals_expire(&self, now: u64) -> Result<usize> {
        Ok(self.lock().execute(
            "UPDATE approvals SET status = 'expired', decided_ms = ?1 WHERE status = 'pending' AND expires_ms <= ?1",
            [now as i64],
        )?)
    }

    /// Mark every pending call expired (at daemon start: no turn waits for them).
    pub fn approvals_expire_all(&self) -> Result<usize> {
        Ok(self.lock().execute("UPDATE approvals SET status = 'expired', decided_ms = ?1 WHERE status = 'pending'", [now_ms() as i64])?)
    }

    /// Calls waiting for a decision, oldest first (`all`: every call, newest
    /// 100 first).
    pub fn approvals(&self, all: bool) -> Result<Vec<Approval>> {
        let conn = self.lock();
        let sql = if all {
            "SELECT id, session_key, plugin, tool, args, status, created_ms, expires_ms, decided_by FROM approvals ORDER BY id DESC LIMIT 100"
        } else {
            "SELECT id, session_key, plugin, tool, args, status, created_ms, expires_ms, decided_by FROM approvals
             WHERE status = 'pending' ORDER BY id"
        };
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], row_to_approval)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn row_to_approval(r: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
    Ok(Approval {
        id: r.get(0)?,
        session_key: r.get(1)?,
        plugin: r.get(2)?,
        tool: r.get(3)?,
        args: r.get(4)?,
        status: r.get(5)?,
        created_ms: r.get::<_, i64>(6)?.max(0) as u64,
        expires_ms: r.get::<_, i64>(7)?.max(0) as u64,
        decided_by: r.get(8)?,
    })
}
