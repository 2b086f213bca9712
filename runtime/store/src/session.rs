//! Sessions: which conversation a message belongs to, and what the agent
//! remembers of it.
//!
//! A session key is deterministic — `plugin/conversation[/thread]`, each part
//! percent-escaped so a `/` inside an id cannot make two conversations share a
//! key — so a restart finds the same session. A key has a series of sessions:
//! after `[agent] idle_timeout` without activity the next message opens a new
//! one and starts from an empty history. History is stored per turn (the
//! user's message, the assistant's tool calls, the tool results, the answer),
//! in the same transaction that completes the inbox row (see
//! [`Db::complete_turn`](crate::store::Db::complete_turn)). When a session's
//! history outgrows `[agent] history_budget`, the oldest turns are compacted:
//! summarised by the agent when the backend can, otherwise dropped (see
//! kata-daemon's `router`).

use std::time::Duration;

use anyhow::Result;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::history::append_turn;
pub use crate::history::{Entry, Role};
use crate::store::Db;

/// An entry with its turn, as read back from the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryItem {
    /// The turn it belongs to (the id of the turn's user entry).
    pub turn: i64,
    /// When it was stored (ms since the Unix epoch).
    pub created_ms: u64,
    /// The entry.
    #[serde(flatten)]
    pub entry: Entry,
}

/// Tokens an agent backend reported using (prompt and completion), as the
/// OpenAI-compatible `usage` object counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Tokens of what was sent (history, tools, the message).
    pub prompt_tokens: u64,
    /// Tokens of what the model wrote.
    pub completion_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
    }
}

/// A session as `kata session list` / `show` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// Row id.
    pub id: i64,
    /// The conversation's key.
    pub key: String,
    /// What started it: a channel plugin, `interactive`, ….
    pub origin: String,
    /// When it started (ms since the Unix epoch).
    pub created_ms: u64,
    /// Its last turn (ms since the Unix epoch).
    pub last_active_ms: u64,
    /// The summary of its compacted history.
    pub summary: Option<String>,
    /// Tokens its backend requests used.
    pub usage: Usage,
    /// How many turns it has had.
    pub turns: u64,
}

/// A session of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Row id.
    pub id: i64,
    /// The conversation's key.
    pub key: String,
    /// The summary of compacted history.
    pub summary: Option<String>,
}

/// Escape a key part: `%` and `/` are percent-encoded.
fn escape(part: &str) -> String {
    part.replace('%', "%25").replace('/', "%2F")
}

/// The session key of a conversation: `plugin/conversation[/thread]`.
pub fn session_key(plugin: &str, conversation: &str, thread: Option<&str>) -> String {
    let mut k = format!("{}/{}", escape(plugin), escape(conversation));
    if let Some(t) = thread.filter(|t| !t.is_empty()) {
        k.push('/');
        k.push_str(&escape(t));
    }
    k
}

impl Db {
    /// The open session of `key` at `now_ms`: the newest one if it was active
    /// within `idle`, else a new one. A session becomes active when a turn
    /// is appended to it (`append_turn`), so finding one writes nothing.
    pub fn session_for(&self, key: &str, origin: &str, idle: Duration, now_ms: u64) -> Result<Session> {
        let conn = self.lock();
        let newest: Option<(i64, i64, Option<String>)> = conn
            .prepare_cached("SELECT id, last_active_ms, summary FROM sessions WHERE key = ?1 ORDER BY id DESC LIMIT 1")?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let now = now_ms as i64;
        Ok(match newest {
            Some((id, last, summary)) if now.saturating_sub(last) <= idle.as_millis() as i64 => Session { id, key: key.into(), summary },
            _ => {
                conn.prepare_cached("INSERT INTO sessions (key, origin, created_ms, last_active_ms) VALUES (?1, ?2, ?3, ?3)")?
                    .execute(params![key, origin, now])?;
                Session { id: conn.last_insert_rowid(), key: key.into(), summary: None }
            }
        })
    }

    /// A session's history that is not compacted, oldest first.
    pub fn session_history(&self, session_id: i64) -> Result<Vec<HistoryItem>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT turn, created_ms, role, content, tool_calls, tool_call_id FROM history
             WHERE session_id = ?1 AND compacted = 0 ORDER BY id",
        )?;
        let rows = stmt.query_map([session_id], row_to_item)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Compact a session: every turn up to and including `through_turn` is
    /// no longer sent as context; `summary` (when given) replaces the
    /// session's summary. One transaction.
    pub fn compact_session(&self, session_id: i64, through_turn: i64, summary: Option<&str>) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE history SET compacted = 1 WHERE session_id = ?1 AND turn <= ?2 AND compacted = 0",
            params![session_id, through_turn],
        )?;
        if let Some(s) = summary {
            tx.execute("UPDATE sessions SET summary = ?2 WHERE id = ?1", params![session_id, s])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The newest `n` entries of the newest session of `key` (compacted ones
    /// included), oldest first; empty when the key has no session.
    pub fn recent_history(&self, key: &str, n: usize) -> Result<Vec<HistoryItem>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT turn, created_ms, role, content, tool_calls, tool_call_id FROM history
             WHERE session_id = (SELECT id FROM sessions WHERE key = ?1 ORDER BY id DESC LIMIT 1)
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![key, n as i64], row_to_item)?;
        let mut items = rows.collect::<Result<Vec<_>, _>>()?;
        items.reverse();
        Ok(items)
    }

    /// Append an interactive turn (one without an inbox row) to a session.
    pub fn record_turn(&self, session_id: i64, user: &Entry, entries: &[Entry]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        append_turn(&tx, session_id, None, user, entries)?;
        tx.commit()?;
        Ok(())
    }

    /// Add the tokens one backend request used to a session's count.
    pub fn add_usage(&self, session_id: i64, usage: Usage) -> Result<()> {
        if usage == Usage::default() {
            return Ok(());
        }
        self.lock()
            .prepare_cached(
                "UPDATE sessions SET prompt_tokens = prompt_tokens + ?2, completion_tokens = completion_tokens + ?3 WHERE id = ?1",
            )?
            .execute(params![session_id, usage.prompt_tokens as i64, usage.completion_tokens as i64])?;
        Ok(())
    }

    /// The newest sessions, newest activity first (at most `limit`); only
    /// those of `key` when given.
    pub fn sessions(&self, key: Option<&str>, limit: usize) -> Result<Vec<SessionInfo>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT s.id, s.key, s.origin, s.created_ms, s.last_active_ms, s.summary, s.prompt_tokens, s.completion_tokens,
                    (SELECT COUNT(*) FROM history h WHERE h.session_id = s.id AND h.id = h.turn)
             FROM sessions s WHERE ?1 IS NULL OR s.key = ?1 ORDER BY s.last_active_ms DESC, s.id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![key, limit as i64], |r| {
            Ok(SessionInfo {
                id: r.get(0)?,
                key: r.get(1)?,
                origin: r.get(2)?,
                created_ms: r.get::<_, i64>(3)?.max(0) as u64,
                last_active_ms: r.get::<_, i64>(4)?.max(0) as u64,
                summary: r.get(5)?,
                usage: Usage { prompt_tokens: r.get::<_, i64>(6)?.max(0) as u64, completion_tokens: r.get::<_, i64>(7)?.max(0) as u64 },
                turns: r.get::<_, i64>(8)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many sessions there are, and the tokens all of them used.
    pub fn usage_totals(&self) -> Result<(u64, Usage)> {
        Ok(self.lock().query_row(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) FROM sessions",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?.max(0) as u64,
                    Usage { prompt_tokens: r.get::<_, i64>(1)?.max(0) as u64, completion_tokens: r.get::<_, i64>(2)?.max(0) as u64 },
                ))
            },
        )?)
    }

    /// Every entry of one session (compacted ones included), oldest first.
    pub fn session_entries(&self, session_id: i64) -> Result<Vec<HistoryItem>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT turn, created_ms, role, content, tool_calls, tool_call_id FROM history WHERE session_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([session_id], row_to_item)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many sessions `key` has had.
    pub fn session_count(&self, key: &str) -> Result<u64> {
        Ok(self.lock().query_row("SELECT COUNT(*) FROM sessions WHERE key = ?1", [key], |r| r.get::<_, i64>(0))? as u64)
    }
}

fn row_to_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryItem> {
    Ok(HistoryItem {
        turn: r.get(0)?,
        created_ms: r.get::<_, i64>(1)?.max(0) as u64,
        entry: Entry { role: Role::parse(&r.get::<_, String>(2)?), content: r.get(3)?, tool_calls: r.get(4)?, tool_call_id: r.get(5)? },
    })
}

/// Which turns to compact so the rest fits in `budget`: None when the
/// history fits; otherwise the last turn to compact. Whole turns only (a
/// tool call and its result stay together), the newest turn always stays,
/// and compaction goes down to half the budget so it does not run every turn.
pub fn compaction_cut(history: &[HistoryItem], budget: usize) -> Option<i64> {
    let total: usize = history.iter().map(|h| h.entry.size()).sum();
    if total <= budget {
        return None;
    }
    let newest = history.last()?.turn;
    let mut remaining = total;
    let mut cut = None;
    let mut i = 0;
    while i < history.len() && remaining > budget / 2 {
        let turn = history[i].turn;
        if turn == newest {
            break;
        }
        while i < history.len() && history[i].turn == turn {
            remaining -= history[i].entry.size();
            i += 1;
        }
        cut = Some(turn);
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::now_ms;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("kata.db")).expect("open");
        (dir, db)
    }

    #[test]
    fn keys_are_deterministic_and_unambiguous() {
        assert_eq!(session_key("tg", "7", None), "tg/7");
        assert_eq!(session_key("tg", "7", Some("t1")), "tg/7/t1");
        assert_eq!(session_key("tg", "7", Some("")), "tg/7");
        // A slash inside an id cannot collide with a thread.
        assert_ne!(session_key("tg", "7/t1", None), session_key("tg", "7", Some("t1")));
        assert_eq!(session_key("tg", "a%2Fb", None), "tg/a%252Fb");
    }

    #[test]
    fn idle_sessions_end_and_history_is_per_session() {
        let (_d, db) = db();
        let idle = Duration::from_secs(60);
        let s1 = db.session_for("tg/7", "tg", idle, 1_000).expect("session");
        let again = db.session_for("tg/7", "tg", idle, 30_000).expect("session");
        assert_eq!(s1.id, again.id);
        {
            let mut conn = db.lock();
            let tx = conn.transaction().expect("tx");
            append_turn(&tx, s1.id, None, &Entry::user("hi"), &[Entry::assistant("hello")]).expect("append");
            tx.commit().expect("commit");
        }
        // Activity was at wall-clock now (the append), so ask far in the future.
        let later = now_ms() + 61_000;
        let s2 = db.session_for("tg/7", "tg", idle, later).expect("session");
        assert_ne!(s1.id, s2.id);
        assert!(db.session_history(s2.id).expect("history").is_empty());
        assert_eq!(db.session_history(s1.id).expect("history").len(), 2);
        assert_eq!(db.session_count("tg/7").expect("count"), 2);
        db.add_usage(s1.id, Usage { prompt_tokens: 10, completion_tokens: 3 }).expect("usage");
        db.add_usage(s1.id, Usage { prompt_tokens: 5, completion_tokens: 1 }).expect("usage");
        let all = db.sessions(Some("tg/7"), 10).expect("sessions");
        assert_eq!(all.len(), 2);
        let first = all.iter().find(|s| s.id == s1.id).expect("s1");
        assert_eq!((first.usage, first.turns), (Usage { prompt_tokens: 15, completion_tokens: 4 }, 1));
        assert_eq!(db.usage_totals().expect("totals"), (2, Usage { prompt_tokens: 15, completion_tokens: 4 }));
        assert_eq!(db.session_entries(s1.id).expect("entries").len(), 2);
        assert!(db.recent_history("tg/7", 10).expect("recent").is_empty());
        assert_eq!(db.recent_history("nope", 10).expect("recent"), vec![]);
    }

    #[test]
    fn compaction_keeps_whole_newest_turns() {
        let item = |turn: i64, n: usize| HistoryItem { turn, created_ms: 0, entry: Entry::user(&"x".repeat(n)) };
        let h = vec![item(1, 40), item(1, 40), item(2, 40), item(3, 40), item(3, 40)];
        assert_eq!(compaction_cut(&h, 200), None);
        // 200 > 120: drop turns until <= 60 remain, never the newest turn.
        assert_eq!(compaction_cut(&h, 120), Some(2));
        assert_eq!(compaction_cut(&h[3..], 10), None);
    }
}
