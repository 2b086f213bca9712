//! The workspace database: inbox, outbox, poll cursors and plugin state in one
//! SQLite file (WAL), with numbered migrations applied at open.
//!
//! Every step that must survive a crash is one transaction here: the inbox
//! insert and the cursor advance commit together (so an acknowledged message is
//! never lost), and an inbox message is marked handled in the same transaction
//! that puts its reply in the outbox (so a reply is never produced twice).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, mpsc};

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
/// Never edit a published migration: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the walking skeleton's tables.
    r#"
    CREATE TABLE cursors (
        plugin      TEXT PRIMARY KEY,
        cursor      TEXT NOT NULL,
        updated_ms  INTEGER NOT NULL
    );
    CREATE TABLE inbox (
        id             INTEGER PRIMARY KEY,
        plugin         TEXT NOT NULL,
        channel_msg_id TEXT NOT NULL,
        conversation   TEXT NOT NULL,
        thread         TEXT,
        sender         TEXT NOT NULL,
        sender_name    TEXT,
        text           TEXT NOT NULL,
        attachments    TEXT NOT NULL DEFAULT '[]',
        timestamp_ms   INTEGER NOT NULL,
        raw            TEXT,
        received_ms    INTEGER NOT NULL,
        status         TEXT NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'done')),
        UNIQUE (plugin, channel_msg_id)
    );
    CREATE INDEX inbox_new ON inbox (status) WHERE status = 'new';
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY,
        plugin          TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        inbox_id        INTEGER REFERENCES inbox (id),
        conversation    TEXT NOT NULL,
        thread          TEXT,
        reply_to        TEXT,
        text            TEXT NOT NULL,
        status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        receipt         TEXT,
        created_ms      INTEGER NOT NULL,
        sent_ms         INTEGER
    );
    CREATE INDEX outbox_pending ON outbox (plugin, next_attempt_ms) WHERE status = 'pending';
    CREATE TABLE plugin_state (
        plugin TEXT NOT NULL,
        key    TEXT NOT NULL,
        value  BLOB NOT NULL,
        PRIMARY KEY (plugin, key)
    );
    "#,
    // 2: the audit log (see audit.rs): every network decision, refused
    // secret, blocked leak, redaction and limit hit, append-only.
    r#"
    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY,
        ts_ms   INTEGER NOT NULL,
        plugin  TEXT NOT NULL,
        kind    TEXT NOT NULL,
        verdict TEXT NOT NULL,
        method  TEXT,
        target  TEXT,
        policy  TEXT,
        detail  TEXT
    );
    CREATE INDEX audit_ts ON audit (ts_ms);
    CREATE INDEX audit_plugin_ts ON audit (plugin, ts_ms);
    "#,
    // 3: sender pairing (who may reach the agent through a channel).
    r#"
    CREATE TABLE pairings (
        plugin       TEXT NOT NULL,
        sender       TEXT NOT NULL,
        code         TEXT NOT NULL UNIQUE,
        status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied')),
        sender_name  TEXT,
        conversation TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        decided_ms   INTEGER,
        PRIMARY KEY (plugin, sender)
    );
    "#,
    // 4: scheduled tasks (see scheduler.rs), and who put an inbox row there
    // when it was not a channel: `task:<id>` or `service:<name>` (set by the
    // host only, never from what a plugin returns).
    r#"
    CREATE TABLE tasks (
        id           INTEGER PRIMARY KEY,
        schedule     TEXT NOT NULL,
        prompt       TEXT NOT NULL,
        plugin       TEXT NOT NULL,
        conversation TEXT NOT NULL,
        thread       TEXT,
        next_run_ms  INTEGER,
        last_run_ms  INTEGER,
        runs         INTEGER NOT NULL DEFAULT 0,
        created_ms   INTEGER NOT NULL
    );
    CREATE INDEX tasks_due ON tasks (next_run_ms) WHERE next_run_ms IS NOT NULL;
    ALTER TABLE inbox ADD COLUMN origin TEXT;
    "#,
    // 5: what kind of conversation a message came from and whether it
    // addresses the agent (WIT 0.1.2 `message.conversation-kind` and
    // `mentioned`), so group messages can require a grant and a mention.
    // Rows stored before are direct and not mentioned, as older plugins' are.
    r#"
    ALTER TABLE inbox ADD COLUMN is_group INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE inbox ADD COLUMN mentioned INTEGER NOT NULL DEFAULT 0;
    "#,
    // 6: agent sessions and their history (session.rs), and tool calls
    // waiting for a person's approval (permissions.rs).
    r#"
    CREATE TABLE sessions (
        id             INTEGER PRIMARY KEY,
        key            TEXT NOT NULL,
        origin         TEXT NOT NULL,
        created_ms     INTEGER NOT NULL,
        last_active_ms INTEGER NOT NULL,
        summary        TEXT
    );
    CREATE INDEX sessions_key ON sessions (key, id);
    CREATE TABLE history (
        id           INTEGER PRIMARY KEY,
        session_id   INTEGER NOT NULL REFERENCES sessions (id),
        turn         INTEGER NOT NULL,
        inbox_id     INTEGER,
        role         TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
        content      TEXT NOT NULL,
        tool_calls   TEXT,
        tool_call_id TEXT,
        created_ms   INTEGER NOT NULL,
        compacted    INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX history_session ON history (session_id, id);
    CREATE TABLE approvals (
        id          INTEGER PRIMARY KEY,
        session_key TEXT NOT NULL,
        plugin      TEXT NOT NULL,
        tool        TEXT NOT NULL,
        args        TEXT NOT NULL,
        mode_source TEXT NOT NULL,
        status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
        created_ms  INTEGER NOT NULL,
        expires_ms  INTEGER NOT NULL,
        decided_ms  INTEGER
    );
    CREATE INDEX approvals_pending ON approvals (status) WHERE status = 'pending';
    "#,
    // 7: token usage per agent session (the backend's own count), and who
    // decided an approval and where (`kata approve`, or a chat answer).
    r#"
    ALTER TABLE sessions ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE approvals ADD COLUMN decided_by TEXT;
    "#,
    // 8: messages a fail-closed hook held back (held.rs), and which plugin
    // created a task through the `scheduler` host interface (NULL: `kata task add`).
    r#"
    CREATE TABLE held (
        id           INTEGER PRIMARY KEY,
        point        TEXT NOT NULL CHECK (point IN ('message-received', 'message-sending')),
        hook         TEXT NOT NULL,
        reason       TEXT NOT NULL,
        inbox_id     INTEGER NOT NULL,
        plugin       TEXT NOT NULL,
        conversation TEXT NOT NULL,
        thread       TEXT,
        reply_to     TEXT,
        text         TEXT,
        created_ms   INTEGER NOT NULL,
        released_ms  INTEGER,
        outcome      TEXT
    );
    CREATE UNIQUE INDEX held_open ON held (point, inbox_id) WHERE released_ms IS NULL;
    ALTER TABLE tasks ADD COLUMN owner TEXT;
    "#,
    // 9: rich replies (WIT 0.1.3): buttons (`actions`, JSON `[{id, label}]`),
    // the channel message id of a draft the reply is delivered as an edit of
    // (`draft_id`), and files, kept beside the row (`outbox_files`; `files`
    // counts them, so the delivery loop reads that table only when there are
    // some). Rows queued before have none of these: plain text, as they were.
    r#"
    ALTER TABLE outbox ADD COLUMN actions TEXT;
    ALTER TABLE outbox ADD COLUMN draft_id TEXT;
    ALTER TABLE outbox ADD COLUMN files INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE outbox_files (
        outbox_id INTEGER NOT NULL REFERENCES outbox (id),
        position  INTEGER NOT NULL,
        name      TEXT NOT NULL,
        mime_type TEXT NOT NULL,
        data      BLOB NOT NULL,
        PRIMARY KEY (outbox_id, position)
    );
    "#,
    // 10: a reply a fail-closed hook held keeps its buttons (`actions`, as in
    // the outbox) and files (`held_files`) until it is released into the
    // outbox; rows held before have none: text only, as they were.
    r#"
    ALTER TABLE held ADD COLUMN actions TEXT;
    CREATE TABLE held_files (
        held_id   INTEGER NOT NULL REFERENCES held (id),
        position  INTEGER NOT NULL,
        name      TEXT NOT NULL,
        mime_type TEXT NOT NULL,
        data      BLOB NOT NULL,
        PRIMARY KEY (held_id, position)
    );
    "#,
];

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    /// Row id (0 before it is stored).
    pub id: i64,
    /// When it happened (ms since the Unix epoch).
    pub ts_ms: u64,
    /// The plugin concerned.
    pub plugin: String,
    /// What was decided about: `network`, `secret`, `leak`, `redact`, `limit`.
    pub kind: String,
    /// The decision: `allow`, `deny`, `block`, `redact`.
    pub verdict: String,
    /// The HTTP method, for requests.
    pub method: Option<String>,
    /// The URL without its query, or where a redaction happened.
    pub target: Option<String>,
    /// The kata.toml grant that allowed it, or the entry that would allow it.
    pub policy: Option<String>,
    /// Why, in words.
    pub detail: Option<String>,
}

/// Which audit rows to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this plugin's rows.
    pub plugin: Option<String>,
    /// Only rows at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// At most this many rows: the newest ones, returned oldest first.
    pub limit: usize,
}

/// A message as a channel delivered it, before it has an inbox id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inbound {
    /// The channel's id (dedup key within the plugin).
    pub channel_msg_id: String,
    /// Where replies go.
    pub conversation: String,
    /// Thread, if any.
    pub thread: Option<String>,
    /// Sender id.
    pub sender: String,
    /// Sender display name.
    pub sender_name: Option<String>,
    /// Text.
    pub text: String,
    /// Attachments, as JSON.
    pub attachments_json: String,
    /// Sent time (ms since epoch).
    pub timestamp_ms: u64,
    /// Original payload.
    pub raw: Option<String>,
    /// The conversation is a group (several people), not a direct one.
    pub group: bool,
    /// The message addresses the agent (mentions the bot or replies to it).
    pub mentioned: bool,
}

/// A stored inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    /// Inbox row id.
    pub id: i64,
    /// The plugin it came through.
    pub plugin: String,
    /// The message.
    pub msg: Inbound,
    /// Who put it there when it was not a channel's poll: `task:<id>` (a
    /// scheduled task) or `service:<name>` (a service's emit). Set by the host
    /// only, never from what a plugin returns.
    pub origin: Option<String>,
}

/// A reply waiting to be delivered (or delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Outbox row id.
    pub id: i64,
    /// The plugin that delivers it.
    pub plugin: String,
    /// Stable across retries; passed to the channel.
    pub idempotency_key: String,
    /// Conversation to post in.
    pub conversation: String,
    /// Thread, if any.
    pub thread: Option<String>,
    /// The channel message this answers.
    pub reply_to: Option<String>,
    /// Text.
    pub text: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Files, buttons, and the draft it finishes.
    pub rich: Rich,
}

/// What a reply carries besides its text (WIT 0.1.3): files, buttons, and
/// the draft it is delivered as an edit of. Empty for a plain reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rich {
    /// Files to send with it.
    pub attachments: Vec<OutFile>,
    /// Buttons under it.
    pub actions: Vec<Button>,
    /// The channel's id of a message already sent as a draft of this reply
    /// (streamed): the reply is delivered as an edit of it, not a new message.
    pub draft_id: Option<String>,
}

impl Rich {
    /// Nothing besides text.
    pub fn is_empty(&self) -> bool {
        self.attachments.is_empty() && self.actions.is_empty() && self.draft_id.is_none()
    }
}

/// A file a reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFile {
    /// File name shown to the person.
    pub name: String,
    /// MIME type.
    pub mime_type: String,
    /// The content.
    pub data: Vec<u8>,
}

/// A button under a reply: pressing it sends `id` back as message text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Button {
    /// What pressing it sends back, e.g. "yes 7".
    pub id: String,
    /// What it says, e.g. "Approve".
    pub label: String,
}

/// A reply to put in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The plugin that delivers it.
    pub plugin: String,
    /// Conversation to post in.
    pub conversation: String,
    /// Thread, if any.
    pub thread: Option<String>,
    /// The channel message this answers.
    pub reply_to: Option<String>,
    /// Text.
    pub text: String,
    /// Files, buttons, the draft it finishes (empty: plain text).
    pub rich: Rich,
}

/// One agent turn to append to a session's history.
#[derive(Debug, Clone, Copy)]
pub struct Turn<'a> {
    /// The session (see [`crate::session`]).
    pub session_id: i64,
    /// The user's message.
    pub user: &'a crate::history::Entry,
    /// What the agent added: tool calls, tool results, the answer.
    pub entries: &'a [crate::history::Entry],
}

/// Counts for status output and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Inbox rows not yet answered.
    pub inbox_new: u64,
    /// Inbox rows answered.
    pub inbox_done: u64,
    /// Outbox rows waiting.
    pub outbox_pending: u64,
    /// Outbox rows delivered.
    pub outbox_sent: u64,
    /// Outbox rows given up on.
    pub outbox_failed: u64,
}

/// A sender's pairing with a channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pairing {
    /// The channel plugin.
    pub plugin: String,
    /// The sender's id on that channel.
    pub sender: String,
    /// Their display name, when known.
    pub sender_name: Option<String>,
    /// The one-time code the owner approves or denies.
    pub code: String,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    /// When the sender first wrote (ms since the Unix epoch).
    pub created_ms: u64,
}

/// What one plugin has done, from the database.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PluginActivity {
    /// Messages it brought in.
    pub received: u64,
    /// Replies it delivered.
    pub sent: u64,
    /// Replies waiting to be delivered.
    pub pending: u64,
    /// Replies given up on.
    pub failed: u64,
    /// The most recent delivery error.
    pub last_error: Option<String>,
}

/// The workspace database. Cheap to clone; calls are serialised on one connection
/// (SQLite serialises writers anyway, and every call here takes microseconds).
///
/// The writes that many tasks make at once on the message path (a poll's
/// messages, a turn's completion, a delivery record, an audit row) can
/// instead go through the batch writer ([`Db::record_poll_batched`],
/// [`Db::complete_turn_batched`], [`Db::mark_sent_batched`],
/// [`Db::audit_append_later`]): one thread
/// commits whatever is queued in one transaction, so under load hundreds of
/// small writes share a commit, and with nothing else queued a write commits
/// alone, at once. A caller's future resolves only after its write is
/// committed: batching never acknowledges anything early.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    batch: Arc<OnceLock<BatchQueue>>,
    /// The file, for the checkpointer's own connection.
    path: Arc<Path>,
}

/// See [`Db::open`].
const WAL_PAGES_PER_CHECKPOINT: u32 = 200;

/// Once the batch writer runs, checkpoints are the checkpointer's job (see
/// [`checkpointer`]); the connection everyone shares checkpoints by itself
/// only if the write-ahead log ever grows past this many pages (the
/// checkpointer fell behind or could not start).
const WAL_PAGES_FALLBACK_CHECKPOINT: u32 = 20_000;

/// The checkpointer's pause after each checkpoint: under steady writes it
/// checkpoints at most this often. Small and frequent keeps each
/// checkpoint's fsync short, and the commits that wait on the disk meanwhile
/// too: at 1000 msg/s, p99 3.5–4.1 ms with 25 ms against 3.7–8.6 ms with
/// 100 ms and 10.7–15.7 ms with 1 s, peak throughput unchanged
/// (BENCHMARKS.md, "Batched end to end").
const CHECKPOINT_GAP: std::time::Duration = std::time::Duration::from_millis(25);

/// Copy the write-ahead log into the database file (a passive checkpoint,
/// with its two fsyncs) on a connection and thread of its own, whenever the
/// batch writer has committed something since the last time.
///
/// A checkpoint on the committing connection (SQLite's automatic one) holds
/// that connection, and with it [`Db::lock`], for as long as its fsyncs take:
/// 15–30 % of the time at 1000 msg/s on a loaded 2-core VM (3–33 ms each),
/// during which every tokio worker that reads the database (the outbox, the
/// cursor, the inbox, a session) blocked — with two workers, the whole
/// daemon. A passive checkpoint waits for no reader or writer and no writer
/// waits for it, so commits and reads go on meanwhile.
fn checkpointer(path: &Path, nudges: mpsc::Receiver<()>, shared: &Mutex<Connection>) {
    let conn = match Connection::open(path).and_then(|c| c.busy_handler(Some(busy_wait)).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot open the database for checkpoints ({e:#}); commits will checkpoint themselves");
            let _ = shared.lock().unwrap_or_else(|p| p.into_inner()).pragma_update(None, "wal_autocheckpoint", WAL_PAGES_PER_CHECKPOINT);
            return;
        }
    };
    while nudges.recv().is_ok() {
        let started = std::time::Instant::now();
        // (busy, frames in the log, frames copied into the file)
        let checkpoint = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)));
        let took = started.elapsed();
        match checkpoint {
            Ok((log, copied)) if took >= SLOW_WRITE => tracing::debug!(ms = ms(took), log, copied, "slow checkpoint"),
            Ok(_) => {}
            Err(e) => tracing::debug!("checkpoint: {e:#}"),
        }
        std::thread::sleep(CHECKPOINT_GAP);
    }
}

/// A commit or checkpoint that takes this long is logged (at debug: a
/// stall on the message path shows where it came from).
const SLOW_WRITE: std::time::Duration = std::time::Duration::from_millis(5);

/// Milliseconds, with microseconds, for those log lines.
fn ms(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

/// Waiting for another connection's lock: SQLite's own busy timeout sleeps
/// up to 100 ms at a time, far longer than any transaction here takes; this
/// polls every 100 µs for the first 10 ms, then every millisecond, and gives
/// up after about five seconds.
fn busy_wait(attempt: i32) -> bool {
    std::thread::sleep(if attempt < 100 { std::time::Duration::from_micros(100) } else { std::time::Duration::from_millis(1) });
    attempt < 5100
}

/// A write for the batch writer: run against the open transaction (it may
/// run twice: after a failed batch every job is rerun on its own), and where
/// its result goes.
struct BatchJob {
    write: Box<BatchWrite>,
    /// Someone waits on the message path for this commit. A write that is
    /// not urgent (an audit row, the record of a delivery) waits up to
    /// [`LAZY_WINDOW`] for company, so it rarely costs a commit of its own.
    urgent: bool,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

/// What a [`BatchJob`] writes.
type BatchWrite = dyn Fn(&Connection) -> Result<()> + Send;

/// Most writes one batch commits; more wait for the next.
const MAX_BATCH: usize = 512;

/// How long a batch of writes that are not urgent waits for an urgent one
/// before it is committed anyway. Every commit rewrites whole pages in the
/// WAL (and the WAL's checkpoints stall the writer), so fewer, fuller commits
/// are what keeps the message path's latency low under load.
const LAZY_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// The batch writer's queue, as callers see it: the jobs in the order they
/// were queued, and a wake-up for the writer thread.
///
/// Waking a thread is a futex call and a context switch on each side, which
/// on a VM costs more than many of the writes themselves. So only what
/// changes the writer's plan wakes it: an urgent write (commit now) and the
/// first write of a lazy window (commit within [`LAZY_WINDOW`]); a write
/// that is not urgent joins the window quietly. The wake-up channel holds
/// one signal: a signal already waiting covers the next.
struct BatchQueue {
    pending: Arc<Mutex<Pending>>,
    wake: mpsc::SyncSender<()>,
}

/// The jobs not yet taken by the writer.
#[derive(Default)]
struct Pending {
    jobs: std::collections::VecDeque<BatchJob>,
    /// Urgent jobs among them.
    urgent: usize,
    /// When the oldest queued job that is not urgent was queued.
    lazy_since: Option<std::time::Instant>,
    /// The writer thread has ended (nothing queued now would ever commit).
    stopped: bool,
}

impl BatchQueue {
    fn push(&self, job: BatchJob) -> Result<()> {
        let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if q.stopped {
            anyhow::bail!("the database writer has stopped");
        }
        // An urgent job queued earlier and not yet taken has woken the
        // writer already, which takes everything queued with it.
        let wake = if job.urgent {
            q.urgent += 1;
            q.urgent == 1
        } else {
            q.lazy_since.is_none() && {
                q.lazy_since = Some(std::time::Instant::now());
                q.urgent == 0
            }
        };
        q.jobs.push_back(job);
        drop(q);
        if wake {
            // Full: a wake-up is already waiting, and covers this job.
            let _ = self.wake.try_send(());
        }
        Ok(())
    }
}

impl Pending {
    /// Up to [`MAX_BATCH`] jobs, oldest first, if any is due now; otherwise
    /// how long until the lazy ones are (None: nothing queued).
    fn take_due(&mut self, closing: bool) -> Result<Vec<BatchJob>, Option<std::time::Duration>> {
        if self.jobs.is_empty() {
            return Err(None);
        }
        if self.urgent == 0 && !closing {
            let due = self.lazy_since.map(|t| (t + LAZY_WINDOW).saturating_duration_since(std::time::Instant::now()));
            if let Some(wait) = due.filter(|d| !d.is_zero()) {
                return Err(Some(wait));
            }
        }
        let n = self.jobs.len().min(MAX_BATCH);
        let jobs: Vec<BatchJob> = self.jobs.drain(..n).collect();
        self.urgent = self.jobs.iter().filter(|j| j.urgent).count();
        if self.jobs.iter().all(|j| j.urgent) {
            self.lazy_since = None;
        }
        Ok(jobs)
    }
}

/// Marks the queue stopped when the writer thread ends, however it ends
/// (a panicking write included), and fails what is still queued.
struct WriterGone<'a>(&'a Mutex<Pending>);

impl Drop for WriterGone<'_> {
    fn drop(&mut self) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.stopped = true;
        // Their receivers see the writer gone ("the database writer has stopped").
        q.jobs.clear();
    }
}

/// The batch writer's loop: take what is due, commit it together; if the
/// batch fails (one bad write, a full disk), run each job in its own
/// transaction so one failure cannot fail the others. Ends, once everything
/// queued is committed, when the last [`Db`] is dropped.
fn batch_writer(conn: Arc<Mutex<Connection>>, queue: &Mutex<Pending>, woken: mpsc::Receiver<()>, path: Arc<Path>) {
    let _gone = WriterGone(queue);
    // Checkpoints are the checkpointer's from now on (this thread may wait
    // here for a caller that holds the connection; no caller waits for it).
    let _ = conn.lock().unwrap_or_else(|p| p.into_inner()).pragma_update(None, "wal_autocheckpoint", WAL_PAGES_FALLBACK_CHECKPOINT);
    let (checkpoints, nudges) = mpsc::sync_channel(1);
    let shared = conn.clone();
    if let Err(e) = std::thread::Builder::new().name("kata-db-checkpoint".into()).spawn(move || checkpointer(&path, nudges, &shared)) {
        tracing::warn!("cannot start the database checkpoint thread ({e}); commits will checkpoint themselves");
        let _ = conn.lock().unwrap_or_else(|p| p.into_inner()).pragma_update(None, "wal_autocheckpoint", WAL_PAGES_PER_CHECKPOINT);
    }
    let mut closing = false;
    loop {
        let due = queue.lock().unwrap_or_else(|p| p.into_inner()).take_due(closing);
        let jobs = match due {
            Ok(jobs) => jobs,
            Err(None) if closing => return,
            Err(wait) => {
                // Every Db is gone: commit what is left, then end.
                let disconnected = match wait {
                    Some(d) => matches!(woken.recv_timeout(d), Err(mpsc::RecvTimeoutError::Disconnected)),
                    None => woken.recv().is_err(),
                };
                closing |= disconnected;
                continue;
            }
        };
        let started = std::time::Instant::now();
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        let locked = started.elapsed();
        let together = (|| -> Result<()> {
            let tx = conn.transaction()?;
            for j in &jobs {
                (j.write)(&tx)?;
            }
            tx.commit()?;
            Ok(())
        })();
        let took = started.elapsed();
        if took >= SLOW_WRITE {
            tracing::debug!(ms = ms(took), waited_for_lock_ms = ms(locked), writes = jobs.len(), "slow commit");
        }
        // What was committed is the checkpointer's (a nudge already waiting covers it).
        let _ = checkpoints.try_send(());
        let jobs = match together {
            Ok(()) => {
                for j in jobs {
                    let _ = j.done.send(Ok(()));
                }
                continue;
            }
            Err(e) if jobs.len() == 1 => {
                if let Some(j) = jobs.into_iter().next() {
                    let _ = j.done.send(Err(e));
                }
                continue;
            }
            Err(_) => jobs,
        };
        for j in jobs {
            let r = (|| -> Result<()> {
                let tx = conn.transaction()?;
                (j.write)(&tx)?;
                tx.commit()?;
                Ok(())
            })();
            let _ = j.done.send(r);
        }
    }
}

pub use kata_policy::util::now_ms;

/// How many of `PRAGMA quick_check`'s findings a damaged-database message quotes.
const INTEGRITY_FINDINGS: usize = 3;

/// Check an existing database file before anything writes to it: open it
/// read-only and run `PRAGMA quick_check` (every page of every table and
/// index, without cross-checking index contents: about a second per few
/// hundred MB). A damaged file is refused with one paragraph that names it
/// and says what to do; nothing is written to it (a read-only connection
/// never checkpoints, migrates or rolls anything back into the file).
/// True when the file was read to check it (false: new, busy, or unchanged
/// since its last clean check).
fn check_integrity(path: &Path) -> Result<bool> {
    // A missing or empty file is a new database (SQLite's own rule).
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => {}
        _ => return Ok(false),
    }
    // Unchanged since its last clean check or clean shutdown: the check
    // would read every page to find what it found then (see `stamp_file`).
    let before = stamp_file(path);
    if before.is_some() && std::fs::read_to_string(stamp_path(path)).ok() == before {
        tracing::debug!(path = %path.display(), "database unchanged since its last clean check: not checked again");
        return Ok(false);
    }
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    // A read-only connection to a WAL database still creates the (empty)
    // `-wal` and `-shm` beside it; those it created are removed again when
    // the file is refused, so the directory is left as it was found.
    let sidecar = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    let (wal, shm) = (sidecar("-wal"), sidecar("-shm"));
    let had = (wal.exists(), shm.exists());
    let findings = (|| -> rusqlite::Result<Vec<String>> {
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_handler(Some(busy_wait))?;
        let mut stmt = conn.prepare("PRAGMA quick_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })();
    let tidy = || {
        if !had.0 && std::fs::metadata(&wal).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&wal);
            if !had.1 {
                let _ = std::fs::remove_file(&shm);
            }
        }
    };
    let what = match findings {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => {
            // Nothing changed the file while it was read: record it as checked.
            if let Some(stamp) = &before
                && stamp_file(path).as_ref() == Some(stamp)
            {
                write_stamp(path, stamp);
            }
            return Ok(true);
        }
        Ok(rows) => {
            let shown: Vec<String> = rows
                .iter()
                .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|r| !r.starts_with("*** in database"))
                .take(INTEGRITY_FINDINGS)
                .collect();
            let more = rows.len().saturating_sub(shown.len());
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            format!("SQLite's integrity check found: {}{more}", shown.join("; "))
        }
        Err(rusqlite::Error::SqliteFailure(e, msg))
            if matches!(e.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) =>
        {
            msg.unwrap_or_else(|| e.to_string())
        }
        // Another kata process holds a lock the read-only check cannot wait
        // out (a WAL recovery, a checkpoint): that process opened the file, so
        // it is readable; the open below waits for the lock as usual.
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
        {
            // No tidying here: the -wal beside it may be that process's.
            tracing::debug!(path = %path.display(), "database busy: integrity check skipped this time");
            return Ok(false);
        }
        Err(e) => {
            tidy();
            return Err(e).with_context(|| format!("cannot read the workspace database {} to check it", path.display()));
        }
    };
    tidy();
    anyhow::bail!("{}", damaged_message(path, &what))
}

/// The file beside the database that holds [`stamp_file`] of its last clean
/// check or clean shutdown (`kata.db-checked`).
fn stamp_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-checked");
    std::path::PathBuf::from(p)
}

/// What identifies the database file's present state without reading it:
/// device, inode, size, modification and change times (any write, rename
/// over it, `touch` or truncation changes one of them) — or None while its
/// write-ahead log holds anything (then the file alone is not the database,
/// and after a crash the log is what needs checking) or where the platform
/// has no such metadata.
fn stamp_file(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        match std::fs::metadata(std::path::PathBuf::from(wal)) {
            Ok(m) if m.len() > 0 => return None,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
        let m = std::fs::metadata(path).ok()?;
        Some(format!("{} {} {} {}.{:09} {}.{:09}\n", m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Record `stamp` as the database's last clean state. Best effort: a stamp
/// that cannot be written only costs a check at the next open.
fn write_stamp(path: &Path, stamp: &str) {
    let _ = std::fs::write(stamp_path(path), stamp);
}

/// What to tell a person whose database file is damaged.
fn damaged_message(path: &Path, what: &str) -> String {
    let aside = {
        let mut name = path.as_os_str().to_owned();
        name.push(".damaged");
        std::path::PathBuf::from(name)
    };
    let mut mv = format!("mv {} {}", shell_quote(path), shell_quote(&aside));
    // The write-ahead log and its index go with it: a WAL left beside a new
    // database file would be replayed into it.
    for suffix in ["-wal", "-shm"] {
        let (mut from, mut to) = (path.as_os_str().to_owned(), aside.as_os_str().to_owned());
        from.push(suffix);
        to.push(suffix);
        if Path::new(&from).exists() {
            mv.push_str(&format!(" && mv {} {}", shell_quote(Path::new(&from)), shell_quote(Path::new(&to))));
        }
    }
    format!(
        "the workspace database {} is damaged ({what}), so kata will not use it; it has not been changed. \
         Stop any kata using this workspace, then restore the file from a backup, or move it aside with `{mv}` \
         and kata starts a new, empty database (the messages, queued replies, sessions, tasks, pairings and audit \
         rows in the damaged file are then left behind; `sqlite3 {} .recover` may salvage some of them)",
        path.display(),
        shell_quote(&aside)
    )
}

pub use kata_policy::util::shell_quote;

/// [`Db::pending_inbox_after`]'s query (named: a test checks it is compiled once).
const PENDING_INBOX: &str = "SELECT id, plugin, channel_msg_id, conversation, thread, sender, sender_name, text,
     attachments, timestamp_ms, raw, origin, is_group, mentioned
     FROM inbox WHERE status = 'new' AND id > ?2 ORDER BY id LIMIT ?1";

/// [`Db::due_outbox`]'s query (the same).
const DUE_OUTBOX: &str = "SELECT id, plugin, idempotency_key, conversation, thread, reply_to, text, attempts, actions, draft_id, files
     FROM outbox WHERE status = 'pending' AND plugin = ?1 AND next_attempt_ms <= ?2
     ORDER BY id LIMIT ?3";

impl Db {
    /// Open (creating if needed) and migrate the database at `path`. An
    /// existing file is first checked (see `check_integrity`): a damaged
    /// one is refused, untouched, with what to do.
    pub fn open(path: &Path) -> Result<Self> {
        check_integrity(path)?;
        let conn = Connection::open(path).with_context(|| format!("cannot open the workspace database {}", path.display()))?;
        // First, so that everything below waits for another process's lock.
        conn.busy_handler(Some(busy_wait))?;
        // Small pages for a new database: rows here are small, and every
        // commit writes each page it touched to the WAL in full (and a
        // checkpoint's fsync takes time in proportion): 1 KiB pages write a
        // quarter of the bytes 4 KiB pages would. (No effect on an existing file.)
        conn.pragma_update(None, "page_size", 1024)?;
        // Switching a new file to WAL takes it whole for a moment, and when
        // another process does the same at once (`kata run` and a CLI command
        // on a fresh workspace) SQLite answers "database is locked" at once,
        // without its busy handler: try again for up to five seconds.
        let started = std::time::Instant::now();
        while let Err(e) = conn.pragma_update(None, "journal_mode", "WAL") {
            if e.sqlite_error_code() != Some(rusqlite::ErrorCode::DatabaseBusy) || started.elapsed() > std::time::Duration::from_secs(5) {
                return Err(e).with_context(|| {
                    format!("cannot put the workspace database {} in WAL mode (another process holds it?)", path.display())
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Plans that do not depend on bound values. Without this, a query
        // on a table with a partial index and a bound LIMIT (the outbox's
        // and the inbox's, run for every message) is compiled again on
        // every run, because SQLite weighs the bound value against the
        // index's WHERE: ~9 % of the daemon's CPU at 1000 msg/s. Every query
        // here names its partial index's condition literally, so the plans
        // stay the same (`hot_queries_are_compiled_once_and_keep_their_partial_index`).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        // A checkpoint (copying the WAL into the database file, with two
        // fsyncs) runs on the committing connection once the WAL holds this
        // many pages; it stalls the writer for time in proportion to the WAL
        // written since the last one, so small and frequent keeps each stall
        // short (SQLite's default is 1000 pages).
        conn.pragma_update(None, "wal_autocheckpoint", WAL_PAGES_PER_CHECKPOINT)?;
        let db = Self { conn: Arc::new(Mutex::new(conn)), batch: Arc::default(), path: Arc::from(path) };
        db.migrate().with_context(|| format!("cannot migrate {}", path.display()))?;
        Ok(db)
    }

    /// On a clean shutdown, once nothing writes any more: fold the
    /// write-ahead log into the file and record the file's state, so the next
    /// open skips the integrity check while the file stays exactly so (a
    /// crash, a later write or any change to the file means a check again).
    /// Does nothing when another connection keeps the log in use.
    pub fn record_clean_shutdown(&self) {
        let conn = self.lock();
        let Some(path) = conn.path().filter(|p| !p.is_empty()).map(std::path::PathBuf::from) else { return };
        // (busy, log frames, frames checkpointed): all folded back and the log emptied.
        let folded = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)).is_ok_and(|busy| busy == 0);
        if let Some(stamp) = stamp_file(&path).filter(|_| folded) {
            write_stamp(&path, &stamp);
        }
    }

    /// The connection, locked: for this crate's table modules, and for tests
    /// above that need raw SQL.
    #[doc(hidden)]
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.lock();
        // Each step re-reads the version inside an IMMEDIATE transaction (which
        // takes SQLite's write lock first), so two processes opening a new
        // database at once (`kata run` and `kata audit`, say) never both apply
        // the same migration.
        loop {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if current > MIGRATIONS.len() {
                anyhow::bail!(
                    "the database is at schema version {current}, newer than this kata knows ({}); use a newer kata",
                    MIGRATIONS.len()
                );
            }
            let Some(sql) = MIGRATIONS.get(current) else { return Ok(()) };
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", current + 1)?;
            tx.commit()?;
        }
    }

    /// The stored poll cursor of a plugin.
    pub fn cursor(&self, plugin: &str) -> Result<Option<String>> {
        Ok(self.lock().query_row("SELECT cursor FROM cursors WHERE plugin = ?1", [plugin], |r| r.get(0)).optional()?)
    }

    /// Store what one poll returned: new messages (duplicates ignored) and the
    /// cursor, in one transaction. Returns how many messages were new.
    pub fn record_poll(&self, plugin: &str, messages: &[Inbound], cursor: Option<&str>) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let inserted = record_poll_in(&tx, plugin, messages, cursor)?;
        tx.commit()?;
        Ok(inserted)
    }

    /// [`Self::record_poll`] through the batch writer (see [`Db`]): resolves
    /// once the messages and the cursor are committed.
    pub async fn record_poll_batched(&self, plugin: &str, messages: Vec<Inbound>, cursor: Option<String>) -> Result<usize> {
        let plugin = plugin.to_string();
        self.batched(true, move |conn| record_poll_in(conn, &plugin, &messages, cursor.as_deref())).await
    }

    /// Store one message the host itself injects (a task run, a service's
    /// emit), marked with its `origin`; a message whose id is already stored
    /// for `plugin` is ignored. Returns whether it was new.
    pub fn insert_inbox(&self, plugin: &str, m: &Inbound, origin: &str) -> Result<bool> {
        Ok(insert_inbox(&self.lock(), plugin, m, Some(origin))? == 1)
    }

    /// Each stored message of `plugin`, oldest first, as (conversation,
    /// group, mentioned): how a channel classified what it received.
    pub fn inbox_flags(&self, plugin: &str) -> Result<Vec<(String, bool, bool)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT conversation, is_group, mentioned FROM inbox WHERE plugin = ?1 ORDER BY id")?;
        let rows = stmt.query_map([plugin], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Inbound messages not yet answered, oldest first.
    pub fn pending_inbox(&self, limit: usize) -> Result<Vec<InboxRow>> {
        self.pending_inbox_after(0, limit)
    }

    /// Inbound messages not yet answered with an id above `after`, oldest first.
    pub fn pending_inbox_after(&self, after: i64, limit: usize) -> Result<Vec<InboxRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(PENDING_INBOX)?;
        let rows = stmt.query_map(params![limit as i64, after], |r| {
            Ok(InboxRow {
                id: r.get(0)?,
                plugin: r.get(1)?,
                msg: Inbound {
                    channel_msg_id: r.get(2)?,
                    conversation: r.get(3)?,
                    thread: r.get(4)?,
                    sender: r.get(5)?,
                    sender_name: r.get(6)?,
                    text: r.get(7)?,
                    attachments_json: r.get(8)?,
                    timestamp_ms: r.get::<_, i64>(9)? as u64,
                    raw: r.get(10)?,
                    group: r.get(12)?,
                    mentioned: r.get(13)?,
                },
                origin: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Mark an inbox message answered and queue its reply, atomically. The
    /// reply's idempotency key is derived from the inbox id, so doing this twice
    /// can never queue two replies.
    pub fn complete_inbox(&self, inbox_id: i64, reply: Option<&Reply>) -> Result<()> {
        self.complete_turn(inbox_id, reply, None)
    }

    /// [`Self::complete_inbox`], also appending the agent's turn to its
    /// session's history — in the same transaction, so a turn is in the
    /// history exactly when its inbox row is done and its reply is queued.
    pub fn complete_turn(&self, inbox_id: i64, reply: Option<&Reply>, turn: Option<Turn<'_>>) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        complete_turn_in(&tx, inbox_id, reply, turn)?;
        tx.commit()?;
        Ok(())
    }

    /// [`Self::complete_turn`] through the batch writer (see [`Db`]): resolves
    /// once the transaction that holds it is committed.
    pub async fn complete_turn_batched(
        &self,
        inbox_id: i64,
        reply: Option<Reply>,
        turn: Option<(i64, crate::history::Entry, Vec<crate::history::Entry>)>,
    ) -> Result<()> {
        self.batched(true, move |conn| {
            let turn = turn.as_ref().map(|(session_id, user, entries)| Turn { session_id: *session_id, user, entries });
            complete_turn_in(conn, inbox_id, reply.as_ref(), turn)
        })
        .await
    }

    /// Queue `write` for the batch writer (started on first use) and wait
    /// until it is committed; `urgent` as in [`BatchJob`].
    pub(crate) async fn batched<T: Send + 'static>(
        &self,
        urgent: bool,
        write: impl Fn(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        // The write may run twice (see batch_writer): the last run's value counts.
        let value = Arc::new(Mutex::new(None));
        let slot = value.clone();
        let done = self.queue_write(urgent, move |conn| {
            let v = write(conn)?;
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
            Ok(())
        })?;
        done.await.map_err(|_| anyhow::anyhow!("the database writer has stopped"))??;
        let v = value.lock().unwrap_or_else(|p| p.into_inner()).take();
        v.ok_or_else(|| anyhow::anyhow!("the database writer lost a result"))
    }

    /// Queue `write` for the batch writer, starting it on first use; the
    /// receiver gets the result once it is committed (or failed).
    fn queue_write(
        &self,
        urgent: bool,
        write: impl Fn(&Connection) -> Result<()> + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<()>>> {
        let (done, result) = tokio::sync::oneshot::channel();
        let queue = self.batch.get_or_init(|| {
            let (wake, woken) = mpsc::sync_channel(1);
            let queue = BatchQueue { pending: Arc::default(), wake };
            let (conn, path, pending) = (self.conn.clone(), self.path.clone(), queue.pending.clone());
            std::thread::Builder::new()
                .name("kata-db-writer".into())
                .spawn(move || batch_writer(conn, &pending, woken, path))
                .expect("cannot start the database writer thread");
            queue
        });
        queue.push(BatchJob { write: Box::new(write), urgent, done })?;
        Ok(result)
    }

    /// Replies of `plugin` due for a delivery attempt at `now`, oldest first.
    pub fn due_outbox(&self, plugin: &str, now: u64, limit: usize) -> Result<Vec<OutboxRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(DUE_OUTBOX)?;
        let rows = stmt.query_map(params![plugin, now as i64, limit as i64], |r| {
            Ok((
                OutboxRow {
                    id: r.get(0)?,
                    plugin: r.get(1)?,
                    idempotency_key: r.get(2)?,
                    conversation: r.get(3)?,
                    thread: r.get(4)?,
                    reply_to: r.get(5)?,
                    text: r.get(6)?,
                    attempts: r.get(7)?,
                    rich: Rich { actions: buttons_from_column(r.get(8)?), draft_id: r.get(9)?, attachments: Vec::new() },
                },
                r.get::<_, i64>(10)? > 0,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut row, files) = row?;
            if files {
                row.rich.attachments = read_files(&conn, Files::Outbox, row.id)?;
            }
            out.push(row);
        }
        Ok(out)
    }

    /// When the next pending reply of `plugin` becomes due, if any.
    pub fn next_outbox_due(&self, plugin: &str) -> Result<Option<u64>> {
        let v: Option<i64> =
            self.lock()
                .query_row("SELECT MIN(next_attempt_ms) FROM outbox WHERE status = 'pending' AND plugin = ?1", [plugin], |r| r.get(0))?;
        Ok(v.map(|v| v.max(0) as u64))
    }

    /// Record a successful delivery.
    pub fn mark_sent(&self, id: i64, receipt: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE outbox SET status = 'sent', receipt = ?2, sent_ms = ?3, attempts = attempts + 1 WHERE id = ?1",
            params![id, receipt, now_ms() as i64],
        )?;
        Ok(())
    }

    /// [`Self::mark_sent`] through the batch writer (see [`Db`]), as a write
    /// that is not urgent: it shares the next commit ([`Self::flush`] asks
    /// for it now).
    pub async fn mark_sent_batched(&self, id: i64, receipt: String) -> Result<()> {
        self.batched(false, move |conn| {
            conn.prepare_cached("UPDATE outbox SET status = 'sent', receipt = ?2, sent_ms = ?3, attempts = attempts + 1 WHERE id = ?1")?
                .execute(params![id, receipt, now_ms() as i64])?;
            Ok(())
        })
        .await
    }

    /// [`Self::mark_sent_batched`] for several deliveries (`(id, receipt)`)
    /// at once: one job, so a batch send's records share one commit.
    pub async fn mark_sent_many_batched(&self, sent: Vec<(i64, String)>) -> Result<()> {
        self.batched(false, move |conn| {
            let mut stmt = conn
                .prepare_cached("UPDATE outbox SET status = 'sent', receipt = ?2, sent_ms = ?3, attempts = attempts + 1 WHERE id = ?1")?;
            let now = now_ms() as i64;
            for (id, receipt) in &sent {
                stmt.execute(params![id, receipt, now])?;
            }
            Ok(())
        })
        .await
    }

    /// Commit every write queued for the batch writer now.
    pub async fn flush(&self) -> Result<()> {
        self.batched(true, |_| Ok(())).await
    }

    /// Record a failed attempt and when to try again.
    pub fn mark_retry(&self, id: i64, error: &str, next_attempt_ms: u64) -> Result<()> {
        self.lock().execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_ms = ?3 WHERE id = ?1",
            params![id, error, next_attempt_ms as i64],
        )?;
        Ok(())
    }

    /// Give up on a reply (kept, with its error, for inspection).
    pub fn mark_failed(&self, id: i64, error: &str) -> Result<()> {
        self.lock()
            .execute("UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?2 WHERE id = ?1", params![id, error])?;
        Ok(())
    }

    /// One plugin's message counts and the last delivery error, for status output.
    pub fn plugin_activity(&self, plugin: &str) -> Result<PluginActivity> {
        let conn = self.lock();
        let count = |sql: &str| -> Result<u64> { Ok(conn.query_row(sql, [plugin], |r| r.get::<_, i64>(0))? as u64) };
        Ok(PluginActivity {
            received: count("SELECT COUNT(*) FROM inbox WHERE plugin = ?1")?,
            sent: count("SELECT COUNT(*) FROM outbox WHERE plugin = ?1 AND status = 'sent'")?,
            pending: count("SELECT COUNT(*) FROM outbox WHERE plugin = ?1 AND status = 'pending'")?,
            failed: count("SELECT COUNT(*) FROM outbox WHERE plugin = ?1 AND status = 'failed'")?,
            last_error: conn
                .query_row(
                    "SELECT last_error FROM outbox WHERE plugin = ?1 AND last_error IS NOT NULL ORDER BY id DESC LIMIT 1",
                    [plugin],
                    |r| r.get(0),
                )
                .optional()?,
        })
    }

    /// The pairing of a sender with a channel, if they ever wrote.
    pub fn pairing(&self, plugin: &str, sender: &str) -> Result<Option<Pairing>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT plugin, sender, sender_name, code, status, created_ms FROM pairings WHERE plugin = ?1 AND sender = ?2",
                [plugin, sender],
                row_to_pairing,
            )
            .optional()?)
    }

    /// Record a new pending pairing with `code`; returns false if the sender
    /// already has one (nothing changes then).
    pub fn pairing_create(&self, p: &Pairing, conversation: &str) -> Result<bool> {
        Ok(self.lock().execute(
            "INSERT OR IGNORE INTO pairings (plugin, sender, code, status, sender_name, conversation, created_ms)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6)",
            params![p.plugin, p.sender, p.code, p.sender_name, conversation, p.created_ms as i64],
        )? == 1)
    }

    /// Approve or deny a pending pairing by its code; returns the pairing, or
    /// None when no pairing has that code.
    pub fn pairing_decide(&self, code: &str, approve: bool) -> Result<Option<Pairing>> {
        let conn = self.lock();
        let status = if approve { "approved" } else { "denied" };
        conn.execute(
            "UPDATE pairings SET status = ?2, decided_ms = ?3 WHERE code = ?1",
            params![code.to_ascii_uppercase(), status, now_ms() as i64],
        )?;
        Ok(conn
            .query_row(
                "SELECT plugin, sender, sender_name, code, status, created_ms FROM pairings WHERE code = ?1",
                [code.to_ascii_uppercase()],
                row_to_pairing,
            )
            .optional()?)
    }

    /// Every pairing, newest first.
    pub fn pairings(&self) -> Result<Vec<Pairing>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT plugin, sender, sender_name, code, status, created_ms FROM pairings ORDER BY created_ms DESC")?;
        let rows = stmt.query_map([], row_to_pairing)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Queue and delivery counts.
    pub fn counts(&self) -> Result<Counts> {
        let conn = self.lock();
        let q = |sql: &str| -> Result<u64> { Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64) };
        Ok(Counts {
            inbox_new: q("SELECT COUNT(*) FROM inbox WHERE status = 'new'")?,
            inbox_done: q("SELECT COUNT(*) FROM inbox WHERE status = 'done'")?,
            outbox_pending: q("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")?,
            outbox_sent: q("SELECT COUNT(*) FROM outbox WHERE status = 'sent'")?,
            outbox_failed: q("SELECT COUNT(*) FROM outbox WHERE status = 'failed'")?,
        })
    }

    /// Append a row to the audit log.
    pub fn audit_append(&self, row: &AuditRow) -> Result<()> {
        insert_audit(&self.lock(), row)
    }

    /// [`Self::audit_append`] through the batch writer, without waiting: for
    /// the many routine events (an allowed request) that must not cost each
    /// request a transaction of its own. A failure is logged.
    pub fn audit_append_later(&self, row: AuditRow) {
        let queued = self.queue_write(false, move |conn| {
            if let Err(e) = insert_audit(conn, &row) {
                tracing::error!(plugin = %row.plugin, "cannot write the audit log: {e:#}");
            }
            Ok(())
        });
        if let Err(e) = queued {
            tracing::error!("cannot write the audit log: {e:#}");
        }
    }
}

/// One audit row, on `conn`.
fn insert_audit(conn: &Connection, row: &AuditRow) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (ts_ms, plugin, kind, verdict, method, target, policy, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![row.ts_ms as i64, row.plugin, row.kind, row.verdict, row.method, row.target, row.policy, row.detail])?;
    Ok(())
}

impl Db {
    /// Read audit rows: the newest `limit` matching `q`, oldest first.
    pub fn audit_query(&self, q: &AuditQuery) -> Result<Vec<AuditRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, ts_ms, plugin, kind, verdict, method, target, policy, detail FROM audit
             WHERE (?1 IS NULL OR plugin = ?1) AND ts_ms >= ?2
             ORDER BY id DESC LIMIT ?3",
        )?;
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![q.plugin, q.since_ms.unwrap_or(0) as i64, limit], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                ts_ms: r.get::<_, i64>(1)?.max(0) as u64,
                plugin: r.get(2)?,
                kind: r.get(3)?,
                verdict: r.get(4)?,
                method: r.get(5)?,
                target: r.get(6)?,
                policy: r.get(7)?,
                detail: r.get(8)?,
            })
        })?;
        let mut rows = rows.collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// A plugin's stored value.
    pub fn state_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .query_row("SELECT value FROM plugin_state WHERE plugin = ?1 AND key = ?2", [plugin, key], |r| r.get(0))
            .optional()?)
    }

    /// Store a plugin value.
    pub fn state_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<()> {
        self.lock().execute(
            "INSERT INTO plugin_state (plugin, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
            params![plugin, key, value],
        )?;
        Ok(())
    }

    /// Remove a plugin value.
    pub fn state_delete(&self, plugin: &str, key: &str) -> Result<()> {
        self.lock().execute("DELETE FROM plugin_state WHERE plugin = ?1 AND key = ?2", [plugin, key])?;
        Ok(())
    }

    /// A plugin's keys starting with `prefix`, in byte order.
    pub fn state_keys(&self, plugin: &str, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT key FROM plugin_state WHERE plugin = ?1 AND substr(key, 1, length(?2)) = ?2 ORDER BY key LIMIT ?3")?;
        let rows = stmt.query_map(params![plugin, prefix, limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Delete everything a plugin stored: its state and its poll cursor
    /// (`kata plugin remove --purge`). Messages stay in the inbox and outbox.
    pub fn purge_plugin(&self, plugin: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM plugin_state WHERE plugin = ?1", [plugin])?;
        tx.execute("DELETE FROM cursors WHERE plugin = ?1", [plugin])?;
        tx.commit()?;
        Ok(())
    }
}

/// Insert one inbox row, on `conn` (a transaction or not). `origin` is None
/// for a channel's own messages, else who put it there (`task:<id>`,
/// `service:<name>`). A duplicate (same plugin and channel id) is ignored:
/// returns 0.
/// The body of [`Db::record_poll`], inside the caller's transaction.
fn record_poll_in(conn: &Connection, plugin: &str, messages: &[Inbound], cursor: Option<&str>) -> Result<usize> {
    let mut inserted = 0;
    for m in messages {
        inserted += insert_inbox(conn, plugin, m, None)?;
    }
    if let Some(c) = cursor {
        conn.prepare_cached(
            "INSERT INTO cursors (plugin, cursor, updated_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (plugin) DO UPDATE SET cursor = excluded.cursor, updated_ms = excluded.updated_ms",
        )?
        .execute(params![plugin, c, now_ms() as i64])?;
    }
    Ok(inserted)
}

/// The body of [`Db::complete_turn`], inside the caller's transaction.
pub(crate) fn complete_turn_in(conn: &Connection, inbox_id: i64, reply: Option<&Reply>, turn: Option<Turn<'_>>) -> Result<()> {
    let status: Option<String> =
        conn.prepare_cached("SELECT status FROM inbox WHERE id = ?1")?.query_row([inbox_id], |r| r.get(0)).optional()?;
    if status.as_deref() == Some("done") {
        // Completed before (a retry after a lost acknowledgement): nothing twice.
        return Ok(());
    }
    if let Some(t) = turn {
        crate::history::append_turn(conn, t.session_id, Some(inbox_id), t.user, t.entries)?;
    }
    if let Some(r) = reply {
        queue_reply_in(conn, inbox_id, r)?;
    }
    conn.prepare_cached("UPDATE inbox SET status = 'done' WHERE id = ?1")?.execute([inbox_id])?;
    Ok(())
}

/// Queue the reply to inbox row `inbox_id`, files and buttons included,
/// under the key that makes it go out once (`inbox-<id>`): a second call
/// for the same message queues nothing.
pub(crate) fn queue_reply_in(conn: &Connection, inbox_id: i64, r: &Reply) -> Result<()> {
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO outbox (plugin, idempotency_key, inbox_id, conversation, thread, reply_to,
                text, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![r.plugin, format!("inbox-{inbox_id}"), inbox_id, r.conversation, r.thread, r.reply_to, r.text, now_ms() as i64])?;
    if n == 1 && !r.rich.is_empty() {
        insert_rich(conn, conn.last_insert_rowid(), &r.rich)?;
    }
    Ok(())
}

/// Store what outbox row `id` carries besides its text (see [`Rich`]).
pub(crate) fn insert_rich(conn: &Connection, id: i64, rich: &Rich) -> Result<()> {
    conn.prepare_cached("UPDATE outbox SET actions = ?2, draft_id = ?3, files = ?4 WHERE id = ?1")?.execute(params![
        id,
        buttons_column(&rich.actions)?,
        rich.draft_id,
        rich.attachments.len() as i64
    ])?;
    insert_files(conn, Files::Outbox, id, &rich.attachments)
}

/// A reply's buttons as their `actions` column (in the outbox and in
/// `held`): JSON `[{id, label}]`, NULL for none.
pub(crate) fn buttons_column(buttons: &[Button]) -> Result<Option<String>> {
    Ok(if buttons.is_empty() { None } else { Some(serde_json::to_string(buttons)?) })
}

/// An `actions` column read back. Written by this crate only; unreadable
/// JSON would be a bug, shown as no buttons.
pub(crate) fn buttons_from_column(column: Option<String>) -> Vec<Button> {
    column.and_then(|a| serde_json::from_str(&a).ok()).unwrap_or_default()
}

/// The two tables that keep a reply's files: an outbox row's, and a held
/// reply's until its release.
#[derive(Clone, Copy)]
pub(crate) enum Files {
    Outbox,
    Held,
}

impl Files {
    fn insert_sql(self) -> &'static str {
        match self {
            Files::Outbox => "INSERT INTO outbox_files (outbox_id, position, name, mime_type, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            Files::Held => "INSERT INTO held_files (held_id, position, name, mime_type, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        }
    }

    fn select_sql(self) -> &'static str {
        match self {
            Files::Outbox => "SELECT name, mime_type, data FROM outbox_files WHERE outbox_id = ?1 ORDER BY position",
            Files::Held => "SELECT name, mime_type, data FROM held_files WHERE held_id = ?1 ORDER BY position",
        }
    }
}

/// Store `files` for row `id` of `table`'s owner, in order.
pub(crate) fn insert_files(conn: &Connection, table: Files, id: i64, files: &[OutFile]) -> Result<()> {
    let mut stmt = conn.prepare_cached(table.insert_sql())?;
    for (i, f) in files.iter().enumerate() {
        stmt.execute(params![id, i as i64, f.name, f.mime_type, f.data])?;
    }
    Ok(())
}

/// The files of row `id` of `table`'s owner, in order.
pub(crate) fn read_files(conn: &Connection, table: Files, id: i64) -> Result<Vec<OutFile>> {
    let mut stmt = conn.prepare_cached(table.select_sql())?;
    let rows = stmt.query_map([id], |r| Ok(OutFile { name: r.get(0)?, mime_type: r.get(1)?, data: r.get(2)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn insert_inbox(conn: &Connection, plugin: &str, m: &Inbound, origin: Option<&str>) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO inbox (plugin, channel_msg_id, conversation, thread, sender, sender_name,
            text, attachments, timestamp_ms, raw, received_ms, origin, is_group, mentioned)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        plugin,
        m.channel_msg_id,
        m.conversation,
        m.thread,
        m.sender,
        m.sender_name,
        m.text,
        m.attachments_json,
        m.timestamp_ms as i64,
        m.raw,
        now_ms() as i64,
        origin,
        m.group,
        m.mentioned
    ])
}

/// A reply given up on after its delivery attempts ran out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// Outbox row id (what `kata retry ID` takes).
    pub id: i64,
    /// The channel plugin.
    pub plugin: String,
    /// Conversation it was for.
    pub conversation: String,
    /// Its text.
    pub text: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// The last delivery error.
    pub last_error: Option<String>,
    /// When it was queued (ms since the Unix epoch).
    pub created_ms: u64,
}

impl Db {
    /// Queue a message that answers no inbox row (`kata send`, scheduled
    /// output). The same `idempotency_key` twice queues it once; returns the
    /// outbox id either way.
    pub fn enqueue(&self, reply: &Reply, idempotency_key: &str) -> Result<i64> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO outbox (plugin, idempotency_key, conversation, thread, reply_to, text, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![reply.plugin, idempotency_key, reply.conversation, reply.thread, reply.reply_to, reply.text, now_ms() as i64],
        )?;
        if n == 1 && !reply.rich.is_empty() {
            insert_rich(&tx, tx.last_insert_rowid(), &reply.rich)?;
        }
        let id = tx.query_row("SELECT id FROM outbox WHERE idempotency_key = ?1", [idempotency_key], |r| r.get(0))?;
        tx.commit()?;
        Ok(id)
    }

    /// Dead letters, oldest first, of one plugin or all.
    pub fn dead_letters(&self, plugin: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, plugin, conversation, text, attempts, last_error, created_ms FROM outbox
             WHERE status = 'failed' AND (?1 IS NULL OR plugin = ?1) ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![plugin, limit as i64], |r| {
            Ok(DeadLetter {
                id: r.get(0)?,
                plugin: r.get(1)?,
                conversation: r.get(2)?,
                text: r.get(3)?,
                attempts: r.get(4)?,
                last_error: r.get(5)?,
                created_ms: r.get::<_, i64>(6)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Put dead letters back in the queue with fresh attempts: the ones in
    /// `ids`, or (when `ids` is empty) all of `plugin`'s, or all. Returns how
    /// many were requeued; ids that are not dead letters are left alone.
    pub fn requeue_dead(&self, ids: &[i64], plugin: Option<&str>) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut n = 0;
        {
            let sql = "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_ms = 0
                       WHERE status = 'failed'";
            if ids.is_empty() {
                n += tx.execute(&format!("{sql} AND (?1 IS NULL OR plugin = ?1)"), params![plugin])?;
            } else {
                let mut stmt = tx.prepare(&format!("{sql} AND id = ?1"))?;
                for id in ids {
                    n += stmt.execute([id])?;
                }
            }
        }
        tx.commit()?;
        Ok(n)
    }
}

fn row_to_pairing(r: &rusqlite::Row<'_>) -> rusqlite::Result<Pairing> {
    Ok(Pairing {
        plugin: r.get(0)?,
        sender: r.get(1)?,
        sender_name: r.get(2)?,
        code: r.get(3)?,
        status: r.get(4)?,
        created_ms: r.get::<_, i64>(5)? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> Inbound {
        Inbound {
            channel_msg_id: id.into(),
            conversation: "c1".into(),
            thread: None,
            sender: "u1".into(),
            sender_name: Some("Ann".into()),
            text: format!("text {id}"),
            attachments_json: "[]".into(),
            timestamp_ms: 1,
            raw: None,
            group: false,
            mentioned: false,
        }
    }

    #[test]
    fn dead_letters_are_listed_and_requeued() {
        let (_d, db) = db();
        let r = |text: &str| Reply {
            plugin: "telegram".into(),
            conversation: "c1".into(),
            thread: None,
            reply_to: None,
            text: text.into(),
            rich: Rich::default(),
        };
        let a = db.enqueue(&r("a"), "send-a").expect("enqueue");
        assert_eq!(db.enqueue(&r("a again"), "send-a").expect("same key"), a);
        let b = db.enqueue(&r("b"), "send-b").expect("enqueue");
        db.mark_failed(a, "auth failed").expect("fail");
        db.mark_failed(b, "network").expect("fail");
        let dead = db.dead_letters(None, 10).expect("list");
        assert_eq!(
            dead.iter().map(|d| (d.id, d.last_error.as_deref())).collect::<Vec<_>>(),
            vec![(a, Some("auth failed")), (b, Some("network"))]
        );
        assert_eq!(db.dead_letters(Some("other"), 10).expect("list"), vec![]);
        assert_eq!(db.requeue_dead(&[a, 999], None).expect("requeue"), 1);
        let due = db.due_outbox("telegram", now_ms(), 10).expect("due");
        assert_eq!((due.len(), due[0].id, due[0].attempts), (1, a, 0));
        assert_eq!(db.requeue_dead(&[], Some("telegram")).expect("requeue all"), 1);
        assert!(db.dead_letters(None, 10).expect("list").is_empty());
    }

    // The test holds the connection across an await on purpose, so that
    // the writes queue up behind it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lazy_writes_commit_alone_or_with_the_next_urgent_one_in_the_order_queued() {
        let (_d, db) = db();
        let value =
            |db: &Db| -> String { db.lock().query_row("SELECT value FROM plugin_state WHERE key = 'k'", [], |r| r.get(0)).expect("row") };
        let bound = std::time::Duration::from_secs(10);
        // A lazy write with nothing after it still commits (its window ends).
        let alone = db.batched(false, |c| Ok(c.execute("INSERT INTO plugin_state (plugin, key, value) VALUES ('p', 'k', 'lazy')", [])?));
        tokio::time::timeout(bound, alone).await.expect("a lazy write alone commits").expect("insert");
        assert_eq!(value(&db), "lazy");
        // Queued lazy, urgent, lazy: one commit, applied in that order.
        let set = |v: &'static str| move |c: &Connection| Ok(c.execute("UPDATE plugin_state SET value = ?1 WHERE key = 'k'", [v])?);
        let (a, b, c) = tokio::join!(db.batched(false, set("first")), db.batched(true, set("second")), db.batched(false, set("third")));
        a.expect("a");
        b.expect("b");
        c.expect("c");
        assert_eq!(value(&db), "third");
        // A write that panics ends the writer; what is queued then fails at once, and nothing hangs.
        let boom = db.batched(true, |_| -> Result<()> { panic!("a write that panics (on purpose)") });
        let err = tokio::time::timeout(bound, boom).await.expect("the panicking write's caller hears back").expect_err("it cannot succeed");
        assert!(format!("{err:#}").contains("database writer has stopped"), "{err:#}");
        let after = db.batched(false, set("never"));
        let err = tokio::time::timeout(bound, after).await.expect("a later write hears back").expect_err("no writer");
        assert!(format!("{err:#}").contains("database writer has stopped"), "{err:#}");
        assert_eq!(value(&db), "third");
    }

    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_writes_commit_together_and_a_bad_one_fails_alone() {
        let (_d, db) = db();
        let msgs: Vec<Inbound> = (0..200).map(|i| msg(&format!("m{i}"))).collect();
        assert_eq!(db.record_poll("loop", &msgs, Some("200")).expect("poll"), 200);
        let rows = db.pending_inbox(1000).expect("pending");
        let reply = |row: &InboxRow| Reply {
            plugin: "loop".into(),
            conversation: row.msg.conversation.clone(),
            thread: None,
            reply_to: Some(row.msg.channel_msg_id.clone()),
            text: row.msg.text.clone(),
            rich: Rich::default(),
        };
        // Many turns at once, plus one write that fails in the middle of
        // them. The connection is held meanwhile, so they queue up and the
        // writer takes them as one batch.
        let held = db.lock();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, row) in rows.iter().enumerate() {
            let (d, id, r) = (db.clone(), row.id, reply(row));
            tasks.spawn(async move { d.complete_turn_batched(id, Some(r), None).await.map(|()| i) });
            if i == 100 {
                let d = db.clone();
                tasks.spawn(async move {
                    d.batched(true, |c: &Connection| {
                        c.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                        Ok(())
                    })
                    .await
                    .map(|()| usize::MAX)
                });
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(held);
        let (mut ok, mut failed) = (0, Vec::new());
        while let Some(r) = tasks.join_next().await {
            match r.expect("task") {
                Ok(_) => ok += 1,
                Err(e) => failed.push(format!("{e:#}")),
            }
        }
        assert_eq!(ok, 200);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains("no_such_table"), "{failed:?}");
        let c = db.counts().expect("counts");
        assert_eq!((c.inbox_done, c.inbox_new, c.outbox_pending), (200, 0, 200));
        // Completing again (a retry after a lost acknowledgement) queues nothing twice.
        let first = &rows[0];
        db.complete_turn_batched(first.id, Some(reply(first)), None).await.expect("again");
        assert_eq!(db.counts().expect("counts").outbox_pending, 200);
        // Delivery records go the same way.
        let due = db.due_outbox("loop", now_ms(), 1000).expect("due");
        let mut marks = tokio::task::JoinSet::new();
        for row in due {
            let db = db.clone();
            marks.spawn(async move { db.mark_sent_batched(row.id, format!("r{}", row.id)).await });
        }
        while let Some(r) = marks.join_next().await {
            r.expect("task").expect("marked");
        }
        let c = db.counts().expect("counts");
        assert_eq!((c.outbox_pending, c.outbox_sent), (0, 200));
    }

    #[test]
    fn hot_queries_are_compiled_once_and_keep_their_partial_index() {
        let (_d, db) = db();
        for i in 0..3 {
            db.insert_inbox("loop", &msg(&format!("m{i}")), "channel").expect("insert");
        }
        // Different bindings on every run, as the daemon's loops have.
        for i in 0..5 {
            db.pending_inbox_after(i, 1 + i as usize).expect("inbox");
            db.due_outbox("loop", i as u64, 1 + i as usize).expect("outbox");
        }
        let conn = db.lock();
        for (sql, index) in [(PENDING_INBOX, "inbox_new"), (DUE_OUTBOX, "outbox_pending")] {
            // The statement the method cached (the same text finds it).
            let stmt = conn.prepare_cached(sql).expect("cached");
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql} was compiled again");
            drop(stmt);
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .and_then(|mut s| {
                    let n = s.parameter_count();
                    s.query_map(rusqlite::params_from_iter(std::iter::repeat_n(1, n)), |r| r.get::<_, String>(3))?.collect()
                })
                .expect("plan");
            assert!(plan.iter().any(|p| p.contains(index)), "{sql}: {plan:?}");
        }
    }

    #[test]
    fn processes_opening_a_new_database_at_once_all_get_it() {
        // `kata run` and a CLI command on a fresh workspace: each sets the
        // page size and WAL mode and migrates, at the same moment.
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("kata.db");
            let start = Arc::new(std::sync::Barrier::new(6));
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        Db::open(&path).map(drop).map_err(|e| format!("{e:#}"))
                    })
                })
                .collect();
            for o in openers {
                o.join().expect("thread").expect("every opener gets the database");
            }
        }
    }

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("kata.db")).expect("open");
        (dir, db)
    }

    #[test]
    fn the_integrity_check_is_skipped_only_while_the_file_is_as_a_clean_shutdown_left_it() {
        let (dir, db) = db();
        let path = dir.path().join("kata.db");
        let msgs: Vec<Inbound> = (0..500).map(|i| msg(&format!("m{i:04}"))).collect();
        db.record_poll("tg", &msgs, Some("500")).expect("poll");
        // A clean shutdown: the next open does not read the file.
        db.record_clean_shutdown();
        assert!(!check_integrity(&path).expect("clean"), "unchanged since the clean shutdown: not read");
        drop(db);
        assert!(!check_integrity(&path).expect("clean"), "closing changed nothing");

        // A write after it (the log holds it): checked, as after a crash.
        let db = Db::open(&path).expect("open");
        db.record_poll("tg", &[msg("late")], Some("501")).expect("poll");
        assert!(check_integrity(&path).expect("sound"), "the log holds writes: checked");
        // A clean close that folds the log in but records nothing: checked once, then trusted.
        drop(db);
        assert!(check_integrity(&path).expect("sound"), "changed since the last stamp: checked");
        assert!(!check_integrity(&path).expect("sound"), "checked clean and unchanged: not read again");

        // Damage after a clean check is still found: any write changes the file's times.
        let mut bytes = std::fs::read(&path).expect("read");
        let page =
            (0..bytes.len() / 1024).rfind(|p| bytes[p * 1024..(p + 1) * 1024].windows(5).any(|w| w == b"text ")).expect("a data page");
        bytes[page * 1024..(page + 1) * 1024].fill(0xA5);
        std::fs::write(&path, &bytes).expect("damage");
        let e = check_integrity(&path).expect_err("damaged");
        assert!(format!("{e:#}").contains("is damaged"), "{e:#}");
        assert!(Db::open(&path).is_err(), "refused at open too");
    }

    #[test]
    fn poll_dedups_and_advances_cursor_together() {
        let (_d, db) = db();
        assert_eq!(db.cursor("tg").expect("cursor"), None);
        assert_eq!(db.record_poll("tg", &[msg("a"), msg("b")], Some("3")).expect("poll"), 2);
        assert_eq!(db.record_poll("tg", &[msg("b"), msg("c")], Some("4")).expect("poll"), 1);
        // None keeps the cursor.
        assert_eq!(db.record_poll("tg", &[], None).expect("poll"), 0);
        assert_eq!(db.cursor("tg").expect("cursor").as_deref(), Some("4"));
        // The same id through another plugin is another message.
        assert_eq!(db.record_poll("other", &[msg("a")], None).expect("poll"), 1);
        assert_eq!(db.pending_inbox(10).expect("inbox").len(), 4);
    }

    #[test]
    fn group_and_mention_are_stored_with_the_message() {
        let (_d, db) = db();
        let group = Inbound { group: true, mentioned: true, ..msg("g") };
        let quiet = Inbound { group: true, ..msg("q") };
        db.record_poll("irc", &[msg("d"), group.clone(), quiet.clone()], None).expect("poll");
        let rows = db.pending_inbox(10).expect("inbox");
        let got: Vec<(bool, bool)> = rows.iter().map(|r| (r.msg.group, r.msg.mentioned)).collect();
        assert_eq!(got, [(false, false), (true, true), (true, false)]);
        assert_eq!(rows[1].msg, group);
        let flags = db.inbox_flags("irc").expect("flags");
        assert_eq!(flags, [("c1".into(), false, false), ("c1".into(), true, true), ("c1".into(), true, false)]);
    }

    #[test]
    fn completing_twice_queues_one_reply() {
        let (_d, db) = db();
        db.record_poll("tg", &[msg("a")], Some("1")).expect("poll");
        let row = db.pending_inbox(10).expect("inbox").remove(0);
        let reply = Reply {
            plugin: "tg".into(),
            conversation: "c1".into(),
            thread: None,
            reply_to: Some("a".into()),
            text: "hi".into(),
            rich: Rich::default(),
        };
        db.complete_inbox(row.id, Some(&reply)).expect("complete");
        db.complete_inbox(row.id, Some(&reply)).expect("complete again");
        assert!(db.pending_inbox(10).expect("inbox").is_empty());
        let due = db.due_outbox("tg", now_ms(), 10).expect("due");
        assert_eq!(due.len(), 1);
        db.mark_retry(due[0].id, "boom", now_ms() + 60_000).expect("retry");
        assert!(db.due_outbox("tg", now_ms(), 10).expect("due").is_empty());
        assert!(db.next_outbox_due("tg").expect("next").is_some());
        db.mark_sent(due[0].id, "r1").expect("sent");
        let c = db.counts().expect("counts");
        assert_eq!((c.inbox_done, c.outbox_sent, c.outbox_pending), (1, 1, 0));
    }

    #[test]
    fn audit_rows_filter_by_plugin_time_and_limit() {
        let (_d, db) = db();
        let row = |plugin: &str, ts_ms: u64, verdict: &str| AuditRow {
            id: 0,
            ts_ms,
            plugin: plugin.into(),
            kind: "network".into(),
            verdict: verdict.into(),
            method: Some("GET".into()),
            target: Some("https://x.org/a".into()),
            policy: None,
            detail: None,
        };
        db.audit_append(&row("tg", 1000, "allow")).expect("append");
        db.audit_append(&row("tg", 2000, "deny")).expect("append");
        db.audit_append(&row("mail", 3000, "allow")).expect("append");
        let all = db.audit_query(&AuditQuery { limit: 10, ..Default::default() }).expect("query");
        assert_eq!(all.iter().map(|r| r.ts_ms).collect::<Vec<_>>(), [1000, 2000, 3000]);
        let tg = db.audit_query(&AuditQuery { plugin: Some("tg".into()), limit: 10, ..Default::default() });
        assert_eq!(tg.expect("query").len(), 2);
        let recent = db.audit_query(&AuditQuery { since_ms: Some(2000), limit: 10, ..Default::default() });
        assert_eq!(recent.expect("query").len(), 2);
        let newest = db.audit_query(&AuditQuery { limit: 1, ..Default::default() }).expect("query");
        assert_eq!(newest[0].plugin, "mail");
    }

    #[test]
    fn a_database_from_before_rich_replies_migrates_and_keeps_its_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kata.db");
        // A workspace database as the kata before migration 9 left it, with a reply queued.
        {
            let conn = Connection::open(&path).expect("open");
            for sql in &MIGRATIONS[..8] {
                conn.execute_batch(sql).expect("old migration");
            }
            conn.pragma_update(None, "user_version", 8).expect("version");
            conn.execute(
                "INSERT INTO outbox (plugin, idempotency_key, conversation, text, created_ms) VALUES ('tg', 'old-1', 'c1', 'queued before', 1)",
                [],
            )
            .expect("old row");
        }
        let db = Db::open(&path).expect("migrates");
        let v: usize = db.lock().pragma_query_value(None, "user_version", |r| r.get(0)).expect("version");
        assert_eq!(v, MIGRATIONS.len());
        let due = db.due_outbox("tg", now_ms(), 10).expect("due");
        assert_eq!((due.len(), due[0].text.as_str(), &due[0].rich), (1, "queued before", &Rich::default()));
        // A rich reply goes in and comes out whole; a plain one stays plain.
        let rich = Rich {
            attachments: vec![
                OutFile { name: "a.md".into(), mime_type: "text/markdown".into(), data: b"# A\n".to_vec() },
                OutFile { name: "b.bin".into(), mime_type: "application/octet-stream".into(), data: vec![0, 255, 7] },
            ],
            actions: vec![Button { id: "yes 7".into(), label: "Approve".into() }, Button { id: "no 7".into(), label: "Deny".into() }],
            draft_id: Some("m42".into()),
        };
        let reply = Reply {
            plugin: "tg".into(),
            conversation: "c2".into(),
            thread: None,
            reply_to: None,
            text: "with files".into(),
            rich: rich.clone(),
        };
        let id = db.enqueue(&reply, "rich-1").expect("enqueue");
        assert_eq!(db.enqueue(&reply, "rich-1").expect("same key"), id, "queued once, files once");
        db.record_poll("tg", &[msg("a")], None).expect("poll");
        let row = db.pending_inbox(10).expect("inbox").remove(0);
        db.complete_inbox(row.id, Some(&Reply { rich: Rich { draft_id: None, ..rich.clone() }, ..reply.clone() })).expect("complete");
        let due = db.due_outbox("tg", now_ms(), 10).expect("due");
        assert_eq!(due.len(), 3);
        assert_eq!(due[1].rich, rich);
        assert_eq!(due[2].rich.attachments, rich.attachments);
        assert_eq!(due[2].rich.draft_id, None);
        let files: i64 = db.lock().query_row("SELECT COUNT(*) FROM outbox_files", [], |r| r.get(0)).expect("count");
        assert_eq!(files, 4);
    }

    #[test]
    fn state_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kata.db");
        {
            let db = Db::open(&path).expect("open");
            db.state_set("p", "k", b"v1").expect("set");
            db.state_set("p", "k", b"v2").expect("set");
            db.record_poll("p", &[msg("x")], Some("9")).expect("poll");
        }
        let db = Db::open(&path).expect("reopen migrates nothing twice");
        assert_eq!(db.state_get("p", "k").expect("get").as_deref(), Some(&b"v2"[..]));
        assert_eq!(db.state_get("q", "k").expect("get"), None);
        db.state_delete("p", "k").expect("delete");
        assert_eq!(db.state_get("p", "k").expect("get"), None);
        assert_eq!(db.cursor("p").expect("cursor").as_deref(), Some("9"));
    }
}
