//! The `held` table: messages a fail-closed hook held back (kata-daemon's
//! `hooks`, `on_failure = "hold"`), kept so nothing is lost.
//!
//! - A received message that is held stays `new` in the inbox (the agent
//!   never saw it); the row here says why. The router skips it for the rest
//!   of its run, and the next run (`kata reload`, a restart) hands it to the
//!   hooks again: passed, it reaches the agent and the row is released.
//! - A reply that is held is kept here, text and all, instead of the outbox
//!   (its turn is complete and in the history). The next run hands it to the
//!   hooks again and, passed, queues it under the key the reply would have
//!   had (`inbox-<id>`), so it can never go out twice. Its buttons and files
//!   are kept with it (`held_files`) and go out with it.

use anyhow::Result;
use rusqlite::{Connection, params};

use crate::store::{Button, Db, Files, InboxRow, Reply, Rich, Turn, buttons_column, buttons_from_column, insert_files, now_ms, read_files};

/// Where a message was held.
pub const RECEIVED: &str = "message-received";
/// Where a reply was held.
pub const SENDING: &str = "message-sending";

/// A held message or reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Held {
    /// Row id.
    pub id: i64,
    /// [`RECEIVED`] or [`SENDING`].
    pub point: String,
    /// The hook that failed.
    pub hook: String,
    /// How it failed.
    pub reason: String,
    /// The inbox row: the message itself, or the one the reply answers.
    pub inbox_id: i64,
    /// The channel plugin.
    pub plugin: String,
    /// The conversation.
    pub conversation: String,
    /// The thread, if any.
    pub thread: Option<String>,
    /// For a reply: the channel message it answers.
    pub reply_to: Option<String>,
    /// For a reply: its text (a held message's text stays in the inbox).
    pub text: Option<String>,
    /// When it was held (ms since the Unix epoch).
    pub created_ms: u64,
    /// For a reply: its buttons (its files are read back by [`Db::held_reply`]).
    #[serde(skip)]
    pub actions: Vec<Button>,
}

impl Held {
    /// A held reply as the reply it is, without its files.
    fn reply(&self) -> Option<Reply> {
        Some(Reply {
            plugin: self.plugin.clone(),
            conversation: self.conversation.clone(),
            thread: self.thread.clone(),
            reply_to: self.reply_to.clone(),
            text: self.text.clone()?,
            rich: Rich { actions: self.actions.clone(), ..Rich::default() },
        })
    }
}

fn insert(conn: &Connection, point: &str, hook: &str, reason: &str, inbox_id: i64, reply: &Reply, text: Option<&str>) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO held (point, hook, reason, inbox_id, plugin, conversation, thread, reply_to, text, created_ms, actions)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            point,
            hook,
            reason,
            inbox_id,
            reply.plugin,
            reply.conversation,
            reply.thread,
            reply.reply_to,
            text,
            now_ms() as i64,
            buttons_column(&reply.rich.actions)?
        ])?;
    if n == 1 && text.is_some() {
        insert_files(conn, Files::Held, conn.last_insert_rowid(), &reply.rich.attachments)?;
    }
    Ok(n == 1)
}

impl Db {
    /// Hold a received message (it stays `new` in the inbox). Returns false
    /// when it was already held (a second hold of the same message is one row).
    pub fn hold_received(&self, hook: &str, reason: &str, row: &InboxRow) -> Result<bool> {
        let at = Reply {
            plugin: row.plugin.clone(),
            conversation: row.msg.conversation.clone(),
            thread: row.msg.thread.clone(),
            reply_to: Some(row.msg.channel_msg_id.clone()),
            text: String::new(),
            rich: Default::default(),
        };
        insert(&self.lock(), RECEIVED, hook, reason, row.id, &at, None)
    }

    /// Complete a turn whose reply a hook held: the inbox row done and the
    /// turn in its history as usual, the reply kept here instead of the
    /// outbox — in one transaction (through the batch writer).
    pub async fn complete_turn_held_batched(
        &self,
        inbox_id: i64,
        reply: Reply,
        hook: String,
        reason: String,
        turn: Option<(i64, crate::history::Entry, Vec<crate::history::Entry>)>,
    ) -> Result<()> {
        self.batched(true, move |conn| {
            let turn = turn.as_ref().map(|(session_id, user, entries)| Turn { session_id: *session_id, user, entries });
            insert(conn, SENDING, &hook, &reason, inbox_id, &reply, Some(&reply.text))?;
            crate::store::complete_turn_in(conn, inbox_id, None, turn)
        })
        .await
    }

    /// Held reply `held` as the reply it is, its buttons and files
    /// included (None: a held message, not a reply). A held reply never has
    /// a draft: drafts are off while a message-sending hook is configured.
    pub fn held_reply(&self, held: &Held) -> Result<Option<Reply>> {
        let Some(mut reply) = held.reply() else { return Ok(None) };
        reply.rich.attachments = read_files(&self.lock(), Files::Held, held.id)?;
        Ok(Some(reply))
    }

    /// Everything held and not released, oldest first (without the files
    /// of held replies: see [`Db::held_reply`]).
    pub fn held(&self) -> Result<Vec<Held>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, point, hook, reason, inbox_id, plugin, conversation, thread, reply_to, text, created_ms, actions
             FROM held WHERE released_ms IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Held {
                id: r.get(0)?,
                point: r.get(1)?,
                hook: r.get(2)?,
                reason: r.get(3)?,
                inbox_id: r.get(4)?,
                plugin: r.get(5)?,
                conversation: r.get(6)?,
                thread: r.get(7)?,
                reply_to: r.get(8)?,
                text: r.get(9)?,
                created_ms: r.get::<_, i64>(10)?.max(0) as u64,
                actions: buttons_from_column(r.get(11)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many messages and replies are held.
    pub fn held_count(&self) -> Result<u64> {
        let n: i64 = self.lock().query_row("SELECT COUNT(*) FROM held WHERE released_ms IS NULL", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Release the hold on a received message (the hooks passed or dropped
    /// it now); `outcome` says what became of it.
    pub fn release_received(&self, inbox_id: i64, outcome: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE held SET released_ms = ?2, outcome = ?3 WHERE point = ?4 AND inbox_id = ?1 AND released_ms IS NULL",
            params![inbox_id, now_ms() as i64, outcome, RECEIVED],
        )?;
        Ok(())
    }

    /// Release held reply `id`: queue `reply` (the hooks passed or rewrote
    /// it; None: vetoed) under the key the reply would have had, and mark
    /// the row released, in one transaction.
    pub fn release_reply(&self, held: &Held, reply: Option<&Reply>, outcome: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if let Some(r) = reply {
            crate::store::queue_reply_in(&tx, held.inbox_id, r)?;
        }
        tx.execute("UPDATE held SET released_ms = ?2, outcome = ?3 WHERE id = ?1", params![held.id, now_ms() as i64, outcome])?;
        // The files are the outbox's now (or vetoed): not kept twice.
        tx.execute("DELETE FROM held_files WHERE held_id = ?1", [held.id])?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Inbound, OutFile};

    #[test]
    fn a_held_message_and_a_held_reply_are_kept_and_released_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("kata.db")).expect("db");
        let msg =
            Inbound { channel_msg_id: "m1".into(), conversation: "c".into(), sender: "s".into(), text: "hi".into(), ..Default::default() };
        db.record_poll("chat", &[msg], None).expect("poll");
        let row = db.pending_inbox(10).expect("inbox").remove(0);
        assert!(db.hold_received("redact", "trapped", &row).expect("hold"));
        assert!(!db.hold_received("redact", "trapped again", &row).expect("hold twice"), "one row per held message");
        assert_eq!(db.held_count().expect("count"), 1);
        assert_eq!(db.pending_inbox(10).expect("inbox").len(), 1, "a held message stays new");
        db.release_received(row.id, "passed").expect("release");
        assert_eq!(db.held_count().expect("count"), 0);

        let reply = Reply {
            plugin: "chat".into(),
            conversation: "c".into(),
            thread: None,
            reply_to: Some("m1".into()),
            text: "4111".into(),
            // Its buttons and files are held with it, and go out with it.
            rich: Rich {
                attachments: vec![OutFile { name: "card.txt".into(), mime_type: "text/plain".into(), data: b"4111 1111".to_vec() }],
                actions: vec![Button { id: "ok".into(), label: "OK".into() }],
                draft_id: None,
            },
        };
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        rt.block_on(db.complete_turn_held_batched(row.id, reply.clone(), "redact".into(), "timed out".into(), None)).expect("held");
        assert!(db.pending_inbox(10).expect("inbox").is_empty(), "the turn is complete");
        assert_eq!(db.counts().expect("counts").outbox_pending, 0, "nothing queued");
        let h = db.held().expect("held").remove(0);
        assert_eq!((h.point.as_str(), db.held_reply(&h).expect("read back")), (SENDING, Some(reply.clone())));
        db.release_reply(&h, Some(&reply), "passed").expect("release");
        db.release_reply(&h, Some(&reply), "passed").expect("again");
        assert_eq!(db.counts().expect("counts").outbox_pending, 1, "queued once");
        assert!(db.held().expect("held").is_empty());
        let row = db.due_outbox("chat", u64::MAX / 2, 10).expect("due").remove(0);
        assert_eq!((row.text.as_str(), &row.rich), ("4111", &reply.rich), "the buttons and the file went out with it");
        let kept: i64 = db.lock().query_row("SELECT COUNT(*) FROM held_files", [], |r| r.get(0)).expect("count");
        assert_eq!(kept, 0, "the files are the outbox's now, not kept twice");
    }
}
