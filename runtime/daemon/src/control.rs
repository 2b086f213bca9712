//! The control socket: `.kata/kata.sock`, owner-only, speaking a versioned
//! JSON-lines protocol. The daemon is the program; `kata status`, `stop`,
//! `reload`, `logs`, `send`, `chat` (with `history`) and `retry` are thin
//! clients of it.
//!
//! # Protocol (version 1)
//!
//! Each request is one line of JSON, at most [`MAX_REQUEST`] bytes:
//!
//! ```json
//! {"v": 1, "id": 7, "cmd": "send", "args": {"channel": "telegram", "to": "42", "text": "hi"}}
//! ```
//!
//! `id` is any JSON value and is echoed back; `args` may be left out when a
//! command takes none. Each reply is one line:
//!
//! ```json
//! {"v": 1, "id": 7, "ok": true, "result": {"outbox": 12}}
//! {"v": 1, "id": 7, "ok": false, "error": {"kind": "bad-request", "message": "…"}}
//! ```
//!
//! `logs` with `follow` answers `ok` and then streams `{"v": 1, "id": …,
//! "event": {…}}` lines until the client hangs up. A malformed request gets
//! an error reply and the connection stays usable; an oversized one gets an
//! error reply and the connection is closed. Nothing a client sends can stop
//! the daemon except `stop`.
//!
//! A connection that sends no request for `[daemon] control_idle_timeout`
//! (before its first or between two; default 60 s) gets an error line with
//! `"id": null` and kind `idle-timeout` and is closed: the request it sends
//! after that was never read. While [`MAX_CLIENTS`] connections are open, a
//! new one takes the slot of the one that has waited longest for a request
//! (which gets that same line, and is closed); when none is waiting, the new
//! one is answered only for `hello`, `status` and `stop`, and once a few of
//! those are waiting too, it gets kind `busy` (`"id": null`) at once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

use crate::events::{Event, Events};
use crate::health::{Health, PluginState};
use crate::store::{Db, Reply};
use crate::workspace::Workspace;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;
/// The socket's file name inside `.kata/`.
pub const SOCKET_FILE: &str = "kata.sock";
/// Clients served at once. A connection beyond them is still accepted: it
/// takes the slot of the connection that has waited longest for a request
/// (which is told so and closed), or, when none is waiting (every one is
/// streaming logs or has a request in hand), one of `RESERVED` slots that
/// answer only `hello`, `status` and `stop`, or, with those taken too, gets a
/// `busy` error at once. So no flood of connections locks `kata status` and
/// `kata stop` out.
pub const MAX_CLIENTS: usize = 64;
/// Connections served beyond [`MAX_CLIENTS`], for one quick request each.
const RESERVED: usize = 4;
/// How long a connection in a reserved slot may take to send its request.
const RESERVED_WAIT: Duration = Duration::from_secs(2);
/// How long one reply may take to be written before the client (which is
/// not reading) is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest text `send` and `chat` accept.
const MAX_TEXT: usize = 32 * 1024;

/// A request, after the envelope (`v`, `id`) is taken off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "args", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The daemon's identity: pid, version, workspace, protocol versions.
    Hello,
    /// Per-plugin state, breaker, last error, counters and queue depths.
    Status,
    /// Stop the daemon gracefully.
    Stop,
    /// Re-read kata.toml and the plugin set; queued messages are kept.
    Reload,
    /// Recent log events, and with `follow` every later one.
    Logs {
        /// How many past events to replay first.
        #[serde(default = "default_lines")]
        lines: usize,
        /// Keep the connection open and stream new events.
        #[serde(default)]
        follow: bool,
    },
    /// Queue a message to a conversation through a channel plugin.
    Send {
        /// The channel plugin's name.
        channel: String,
        /// The conversation (chat id, room, nick…).
        to: String,
        /// The text.
        text: String,
        /// A thread in that conversation.
        #[serde(default)]
        thread: Option<String>,
    },
    /// One turn of an interactive session with the agent.
    Chat {
        /// What the person said.
        text: String,
        /// The session's name (default: `chat/local`).
        #[serde(default)]
        session: Option<String>,
    },
    /// The newest entries of a session's history, oldest first.
    History {
        /// The session's name.
        session: String,
        /// How many entries.
        #[serde(default = "default_history")]
        n: usize,
    },
    /// One tool call through the running daemon's toolbox (`kata tool
    /// call`), under the workspace's `[tools] mode`.
    ToolCall {
        /// The tools plugin.
        plugin: String,
        /// The tool.
        tool: String,
        /// Its arguments, a JSON object as text.
        args: String,
    },
    /// Dead letters: list them, or requeue some.
    Retry {
        /// Outbox ids to requeue.
        #[serde(default)]
        ids: Vec<i64>,
        /// Requeue all (of `plugin`, if given).
        #[serde(default)]
        all: bool,
        /// Only this plugin's.
        #[serde(default)]
        plugin: Option<String>,
    },
}

fn default_lines() -> usize {
    50
}

fn default_history() -> usize {
    10
}

/// What went wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `bad-request`, `too-large`, `unsupported-version`, `not-found`, `failed`.
    pub kind: String,
    /// One paragraph for a person.
    pub message: String,
}

impl ErrorBody {
    fn new(kind: &str, message: impl Into<String>) -> Self {
        Self { kind: kind.to_string(), message: message.into() }
    }
}

/// One reply line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version.
    pub v: u32,
    /// The request's id.
    #[serde(default)]
    pub id: Value,
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// A streamed event (`logs` with `follow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
}

impl Response {
    fn ok(id: Value, result: Value) -> Self {
        Self { v: PROTOCOL_VERSION, id, ok: true, result: Some(result), error: None, event: None }
    }

    fn err(id: Value, e: ErrorBody) -> Self {
        Self { v: PROTOCOL_VERSION, id, ok: false, result: None, error: Some(e), event: None }
    }

    fn line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| br#"{"v":1,"ok":false}"#.to_vec());
        v.push(b'\n');
        v
    }
}

/// Parse one request line. Errors carry the request's id when it could be read.
pub fn parse_request(line: &[u8]) -> Result<(Value, Request), (Value, ErrorBody)> {
    let raw: Value = serde_json::from_slice(line).map_err(|e| {
        (Value::Null, ErrorBody::new("bad-request", format!("the request is not valid JSON ({e}); send one JSON object per line")))
    })?;
    let Value::Object(mut obj) = raw else {
        return Err((Value::Null, ErrorBody::new("bad-request", "the request must be a JSON object like {\"v\":1,\"cmd\":\"status\"}")));
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    match obj.remove("v") {
        Some(Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION.into()) => {}
        Some(v) => {
            return Err((
                id,
                ErrorBody::new(
                    "unsupported-version",
                    format!("protocol version {v} is not supported; this daemon speaks version {PROTOCOL_VERSION}"),
                ),
            ));
        }
        None => return Err((id, ErrorBody::new("bad-request", format!("the request has no \"v\"; add \"v\": {PROTOCOL_VERSION}")))),
    }
    let mut tagged = serde_json::Map::new();
    tagged.insert("cmd".into(), obj.remove("cmd").unwrap_or(Value::Null));
    if let Some(args) = obj.remove("args") {
        tagged.insert("args".into(), args);
    }
    if let Some(extra) = obj.keys().next() {
        return Err((id, ErrorBody::new("bad-request", format!("unknown request field \"{extra}\"; a request has v, id, cmd and args"))));
    }
    // A command without arguments may be sent without "args" or with {}.
    if matches!(tagged.get("args"), Some(Value::Object(m)) if m.is_empty()) {
        let unit = serde_json::from_value::<Request>(json!({"cmd": tagged["cmd"]}));
        if let Ok(r) = unit {
            return Ok((id, r));
        }
    }
    let with_defaults = match (tagged.get("cmd"), tagged.contains_key("args")) {
        // Commands whose arguments all have defaults may leave "args" out.
        (Some(Value::String(c)), false) if matches!(c.as_str(), "logs" | "retry") => {
            let mut t = tagged.clone();
            t.insert("args".into(), json!({}));
            t
        }
        _ => tagged,
    };
    serde_json::from_value::<Request>(Value::Object(with_defaults)).map(|r| (id.clone(), r)).map_err(|e| {
        (
            id,
            ErrorBody::new(
                "bad-request",
                format!("bad request: {e}; commands are hello, status, stop, reload, logs, send, chat, history and retry"),
            ),
        )
    })
}

/// Something only the daemon's main loop may do.
#[derive(Debug)]
pub enum DaemonCommand {
    /// Stop gracefully.
    Stop,
    /// Reload the policy and plugins; the reply says what runs now.
    Reload(oneshot::Sender<Result<Value, String>>),
}

/// What the control socket can see and do in the daemon.
pub struct Shared {
    /// The workspace.
    pub ws: Workspace,
    /// Its database.
    pub db: Db,
    /// Per-plugin health.
    pub health: Arc<Health>,
    /// The log broadcast.
    pub events: Events,
    /// When the daemon started (ms since the Unix epoch).
    pub started_ms: u64,
    /// The running channel plugins and the notifier of each one's egress loop.
    pub outbox_ready: RwLock<BTreeMap<String, Arc<Notify>>>,
    /// Requests for the daemon's main loop.
    pub commands: mpsc::Sender<DaemonCommand>,
    /// The agent (sessions, history, interactive turns).
    pub agent: RwLock<Option<crate::router::AgentHandle>>,
    /// How long a connection may wait without sending a request (before its
    /// first one or between two) before it is closed: `[daemon]
    /// control_idle_timeout`. A connection streaming a reply (`logs` with
    /// `follow`) or waiting for one (`chat`) is not idle.
    pub idle_timeout: Duration,
}

impl Shared {
    fn notify_outbox(&self, plugin: Option<&str>) {
        let map = self.outbox_ready.read().unwrap_or_else(|p| p.into_inner());
        for (name, n) in map.iter() {
            if plugin.is_none_or(|p| p == name) {
                n.notify_one();
            }
        }
    }

    fn agent(&self) -> Result<crate::router::AgentHandle, ErrorBody> {
        self.agent.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| ErrorBody::new("failed", "the agent is not running"))
    }

    /// The agent in `kata status`: its backend, and the tokens its sessions
    /// used (as the backend reported them).
    fn agent_status(&self) -> Value {
        let (sessions, usage) = self.db.usage_totals().unwrap_or_default();
        let agent = self.agent.read().unwrap_or_else(|p| p.into_inner()).clone();
        let backend = agent.as_ref().map(|a| a.backend_name());
        let hooks = agent.as_ref().map(|a| a.hooks()).unwrap_or_default();
        json!({"backend": backend, "sessions": sessions, "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "hooks": hooks})
    }

    fn channels(&self) -> Vec<String> {
        self.outbox_ready.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// The status report `kata status` prints.
    pub fn status(&self) -> Result<Value> {
        let health = self.health.snapshot();
        let mut plugins = Vec::new();
        // Channels, then services (which have health but no outbox of their own).
        let mut names = self.channels();
        names.extend(health.keys().filter(|k| !names.contains(k)).cloned().collect::<Vec<_>>());
        let channels = self.channels();
        for name in names {
            let h = health.get(&name).cloned().unwrap_or_default();
            let a = self.db.plugin_activity(&name)?;
            // Where a channel stands (services have no such state); plugins
            // kata.toml names but does not run are listed with theirs.
            let not_run = matches!(h.state, PluginState::Disabled | PluginState::NotInstalled | PluginState::Refused);
            let channel = (channels.contains(&name) || not_run).then(|| h.channel());
            plugins.push(json!({
                "name": name,
                "channel": channel,
                "health": h,
                "queue": {"outbox_pending": a.pending, "dead_letters": a.failed},
                "last_delivery_error": a.last_error,
            }));
        }
        let counts = self.db.counts()?;
        // Messages and replies a fail-closed hook held back (their text stays
        // in the database: a held reply may be one a redaction hook could not check).
        let held: Vec<serde_json::Value> = self
            .db
            .held()?
            .into_iter()
            .map(|h| {
                json!({"id": h.id, "point": h.point, "hook": h.hook, "reason": h.reason, "plugin": h.plugin,
                    "conversation": h.conversation, "inbox_id": h.inbox_id, "created_ms": h.created_ms})
            })
            .collect();
        Ok(json!({
            "held": held,
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "workspace": self.ws.root(),
            "started_ms": self.started_ms,
            "uptime_s": crate::store::now_ms().saturating_sub(self.started_ms) / 1000,
            "plugins": plugins,
            "queues": counts,
            "agent": self.agent_status(),
            // Every plugin's limit hits, tools plugins included (channels
            // and services also show theirs in `health.limits_hit`).
            "limits_hit": crate::limits::all_hits(),
        }))
    }
}

/// The socket's path in a workspace.
pub fn socket_path(ws: &Workspace) -> PathBuf {
    ws.state_dir().join(SOCKET_FILE)
}

/// Bind the control socket (owner-only). A socket file left by a daemon
/// that died is replaced; the caller holds the workspace's run lock, so no
/// live daemon can own it.
pub fn bind(ws: &Workspace) -> Result<tokio::net::UnixListener> {
    ws.ensure_state_dir()?;
    let path = socket_path(ws);
    let staging = path.with_file_name(format!(".{SOCKET_FILE}.{}", std::process::id()));
    // sun_path holds 108 bytes on Linux (104 on macOS), with the NUL; the
    // socket is bound under its longer staging name first.
    if staging.as_os_str().len() > 100 {
        bail!(
            "the control socket path {} is too long for a Unix socket ({} bytes; the limit is about 100); \
             use a workspace with a shorter path",
            path.display(),
            staging.as_os_str().len()
        );
    }
    // Bound under a private name, restricted, then renamed into place: a
    // client can never reach the socket at its public path before it is
    // owner-only (binding and then restricting it in place left a window
    // where a connect saw the umask's mode).
    // Under the run lock every staging name is stale (a daemon killed
    // between its bind and its rename left it), and so is the socket.
    let staged = std::fs::read_dir(ws.state_dir())
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| is_staging(p)).collect::<Vec<_>>())
        .unwrap_or_default();
    for stale in staged.iter().chain([&path]) {
        match std::fs::remove_file(stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove the stale control socket {}", stale.display())),
        }
    }
    let listener =
        tokio::net::UnixListener::bind(&staging).with_context(|| format!("cannot create the control socket {}", staging.display()))?;
    let placed = (|| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot restrict the control socket {}", staging.display()))?;
        }
        std::fs::rename(&staging, &path).with_context(|| format!("cannot move the control socket into place at {}", path.display()))
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    Ok(listener)
}

/// Whether `p` is a control socket's staging name (`.kata.sock.PID`, see [`bind`]).
fn is_staging(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(&format!(".{SOCKET_FILE}.")))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The connections waiting for a request, oldest first by when they began
/// to wait: when every slot is taken, the oldest is closed to make room.
#[derive(Default)]
struct Waiting {
    next_id: u64,
    /// id → (waiting since, how to close it).
    conns: BTreeMap<u64, (std::time::Instant, Arc<Notify>)>,
}

impl Waiting {
    fn lock(this: &std::sync::Mutex<Self>) -> std::sync::MutexGuard<'_, Self> {
        this.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Close the connection that has waited longest; false if none waits.
    fn evict_oldest(this: &std::sync::Mutex<Self>) -> bool {
        let mut w = Self::lock(this);
        let oldest = w.conns.iter().min_by_key(|(_, (since, _))| *since).map(|(id, _)| *id);
        match oldest.and_then(|id| w.conns.remove(&id)) {
            Some((_, kick)) => {
                kick.notify_one();
                true
            }
            None => false,
        }
    }
}

/// How long a connection taking an evicted one's slot waits for it.
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// Serve clients until `shutdown`; then remove the socket file. Accepting
/// never waits for a slot (see [`MAX_CLIENTS`]).
pub async fn serve(listener: tokio::net::UnixListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let reserved = Arc::new(Semaphore::new(RESERVED));
    let waiting = Arc::new(std::sync::Mutex::new(Waiting::default()));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                let waiting = waiting.clone();
                if let Ok(permit) = slots.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        if let Err(e) = serve_client(stream, &shared, shutdown, &waiting).await {
                            tracing::debug!("control client: {e:#}");
                        }
                        drop(permit);
                    });
                } else if Waiting::evict_oldest(&waiting) {
                    let slots = slots.clone();
                    tokio::spawn(async move {
                        let Ok(Ok(permit)) = tokio::time::timeout(EVICT_WAIT, slots.acquire_owned()).await else {
                            let _ = stream.try_write(&Response::err(Value::Null, busy(&shared)).line());
                            return;
                        };
                        if let Err(e) = serve_client(stream, &shared, shutdown, &waiting).await {
                            tracing::debug!("control client: {e:#}");
                        }
                        drop(permit);
                    });
                } else if let Ok(permit) = reserved.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        if let Err(e) = serve_reserved(stream, &shared).await {
                            tracing::debug!("control client (reserved slot): {e:#}");
                        }
                        drop(permit);
                    });
                } else {
                    // A fresh socket's buffer takes one line without waiting.
                    let _ = stream.try_write(&Response::err(Value::Null, busy(&shared)).line());
                }
            }
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let _ = std::fs::remove_file(socket_path(&shared.ws));
}

/// Read one line of at most `max` bytes (without the newline). `Ok(None)` at
/// end of stream; `Err` with `InvalidData` when the line is longer.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Option<()>> {
    buf.clear();
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if buf.is_empty() { None } else { Some(()) });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > max + 1 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request too large"));
        }
        buf.extend_from_slice(&chunk[..take]);
        r.consume(take);
        if done {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(()));
        }
    }
}

/// The `busy` error a connection beyond every slot gets.
fn busy(shared: &Shared) -> ErrorBody {
    ErrorBody::new(
        "busy",
        format!(
            "the daemon is already serving {MAX_CLIENTS} control connections (its limit), so it answers only hello, status \
             and stop until some close; idle ones are closed after {:?} ([daemon] control_idle_timeout in kata.toml), \
             `kata logs -f` followers and `kata chat` sessions when they end; retry in a moment",
            shared.idle_timeout
        ),
    )
}

/// Write one reply, giving up on a client that does not read it.
async fn write_reply(write: &mut tokio::net::unix::OwnedWriteHalf, bytes: &[u8]) -> Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(bytes)).await {
        Ok(r) => Ok(r?),
        Err(_) => bail!("the client did not read its reply within {WRITE_TIMEOUT:?}; dropped"),
    }
}

/// A connection in a reserved slot: one `hello`, `status` or `stop`, sent
/// within [`RESERVED_WAIT`], is answered; anything else gets `busy`.
async fn serve_reserved(stream: UnixStream, shared: &Shared) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    let mut line = Vec::new();
    let reply = match tokio::time::timeout(RESERVED_WAIT, read_line(&mut reader, &mut line, MAX_REQUEST)).await {
        Ok(Ok(Some(()))) => match parse_request(&line) {
            Ok((id, req @ (Request::Hello | Request::Status | Request::Stop))) => match handle(shared, req).await {
                Ok(v) => Response::ok(id, v),
                Err(e) => Response::err(id, e),
            },
            Ok((id, _)) => Response::err(id, busy(shared)),
            Err((id, e)) => Response::err(id, e),
        },
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(_)) | Err(_) => Response::err(Value::Null, busy(shared)),
    };
    write_reply(&mut write, &reply.line()).await
}

/// Close a connection that sent no request, saying why first, so a client
/// knows the request it sends next was never read (and may send it again on
/// a new connection). Best effort: the client may not be reading.
async fn close_idle(write: &mut tokio::net::unix::OwnedWriteHalf, why: String) {
    let note = Response::err(Value::Null, ErrorBody::new("idle-timeout", why)).line();
    let _ = tokio::time::timeout(Duration::from_millis(200), write.write_all(&note)).await;
}

async fn serve_client(
    stream: UnixStream,
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
    waiting: &std::sync::Mutex<Waiting>,
) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    let mut line = Vec::new();
    let kick = Arc::new(Notify::new());
    let id = {
        let mut w = Waiting::lock(waiting);
        w.next_id += 1;
        w.next_id
    };
    // Not waiting any more, however this ends.
    struct Done<'a>(&'a std::sync::Mutex<Waiting>, u64);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            Waiting::lock(self.0).conns.remove(&self.1);
        }
    }
    let _done = Done(waiting, id);
    loop {
        // Idle: before the first request or between two. The whole line must
        // arrive in time, so a client trickling bytes is idle too.
        Waiting::lock(waiting).conns.insert(id, (std::time::Instant::now(), kick.clone()));
        let got = tokio::select! {
            r = tokio::time::timeout(shared.idle_timeout, read_line(&mut reader, &mut line, MAX_REQUEST)) => match r {
                Ok(r) => r,
                Err(_) => {
                    let why = format!(
                        "closed after {:?} without a request ([daemon] control_idle_timeout in kata.toml); connect again to send one",
                        shared.idle_timeout
                    );
                    close_idle(&mut write, why).await;
                    return Ok(());
                }
            },
            _ = kick.notified() => {
                let why = format!(
                    "closed to make room for a new connection: all {MAX_CLIENTS} control connections were open and this one \
                     had waited longest for a request; connect again to send one"
                );
                close_idle(&mut write, why).await;
                return Ok(());
            }
            _ = shutdown.changed() => return Ok(()),
        };
        // A request (or the end of the stream) is in hand: not evictable
        // while it is carried out or its reply streams.
        Waiting::lock(waiting).conns.remove(&id);
        match got {
            Ok(None) => return Ok(()),
            Ok(Some(())) => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let r = Response::err(Value::Null, ErrorBody::new("too-large", format!("the request is longer than {MAX_REQUEST} bytes")));
                write_reply(&mut write, &r.line()).await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let (id, req) = match parse_request(&line) {
            Ok(p) => p,
            Err((id, e)) => {
                write_reply(&mut write, &Response::err(id, e).line()).await?;
                continue;
            }
        };
        if let Request::Logs { lines, follow } = req {
            let (backlog, mut rx) = shared.events.subscribe(lines);
            write.write_all(&Response::ok(id.clone(), json!({"follow": follow})).line()).await?;
            for e in backlog {
                write.write_all(&event_line(&id, &e)).await?;
            }
            if !follow {
                // An empty event-less line would be ambiguous; the client
                // stops reading when `follow` is false and the backlog is sent.
                write.write_all(&Response::ok(id.clone(), json!({"end": true})).line()).await?;
                continue;
            }
            loop {
                tokio::select! {
                    e = rx.recv() => match e {
                        Ok(e) => write.write_all(&event_line(&id, &e)).await?,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            let note = Event {
                                ts_ms: crate::store::now_ms(),
                                level: "WARN".into(),
                                target: "kata::control".into(),
                                message: format!("{n} events were skipped: this client read too slowly"),
                                fields: vec![],
                            };
                            write.write_all(&event_line(&id, &note)).await?;
                        }
                        Err(_) => return Ok(()),
                    },
                    // A follower that hung up frees its slot now, not at the
                    // next event; anything it sends meanwhile is ignored.
                    r = reader.fill_buf() => match r {
                        Ok([]) | Err(_) => return Ok(()),
                        Ok(b) => {
                            let n = b.len();
                            reader.consume(n);
                        }
                    },
                    // What was logged before the daemon began to stop (the
                    // stop request itself among it) still reaches the follower:
                    // with both ready at once, select! picks at random, and a
                    // loaded daemon dropped the last lines half the time.
                    _ = shutdown.changed() => {
                        while let Ok(e) = rx.try_recv() {
                            write.write_all(&event_line(&id, &e)).await?;
                        }
                        return Ok(());
                    }
                }
            }
        }
        let stop = req == Request::Stop;
        let reply = match handle(shared, req).await {
            Ok(v) => Response::ok(id, v),
            Err(e) => Response::err(id, e),
        };
        write_reply(&mut write, &reply.line()).await?;
        if stop {
            return Ok(());
        }
    }
}

/// How long `kata chat` keeps the files of its replies (see [`save_chat_files`]).
const CHAT_FILES_KEPT_MS: u64 = 7 * 24 * 3600 * 1000;

/// Save the files of a chat reply under `dir` (the workspace's
/// `.kata/chat-files/`), each under a name of its own: `kata chat` has no
/// channel to send them through, so it says where they are. Files saved
/// there more than [`CHAT_FILES_KEPT_MS`] ago are removed first.
fn save_chat_files(dir: &std::path::Path, files: &[crate::store::OutFile]) -> anyhow::Result<Vec<Value>> {
    use anyhow::Context;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {} for the reply's files", dir.display()))?;
    let stamp = crate::store::now_ms();
    prune_chat_files(dir, stamp.saturating_sub(CHAT_FILES_KEPT_MS));
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            // The name a tool gave, kept to one harmless path component.
            let base = f.name.rsplit(['/', '\\']).next().unwrap_or("");
            let safe: String =
                base.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
            let safe = safe.trim_start_matches('.');
            let safe = if safe.is_empty() { "file" } else { safe };
            // Never over another file (two chats in the same millisecond).
            let mut n = 0u32;
            let (path, mut file) = loop {
                let path = dir.join(if n == 0 { format!("{stamp}-{i}-{safe}") } else { format!("{stamp}-{i}-{n}-{safe}") });
                match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(file) => break (path, file),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                    Err(e) => return Err(e).with_context(|| format!("cannot save the reply's file {:?} to {}", f.name, path.display())),
                }
            };
            std::io::Write::write_all(&mut file, &f.data)
                .with_context(|| format!("cannot save the reply's file {:?} to {}", f.name, path.display()))?;
            Ok(json!({"name": f.name, "mime_type": f.mime_type, "bytes": f.data.len(), "path": path}))
        })
        .collect()
}

/// Remove the files [`save_chat_files`] saved in `dir` before `before_ms`
/// (their names are `SAVED-N-name`, SAVED the time in ms); anything else in
/// the folder is left alone. Best effort: a file that cannot be removed
/// stays, and the reply is saved all the same.
fn prune_chat_files(dir: &std::path::Path, before_ms: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let mut parts = name.to_str().unwrap_or("").splitn(3, '-');
        let (stamp, n, rest) = (parts.next(), parts.next(), parts.next());
        let ours = rest.is_some() && n.is_some_and(|n| n.parse::<u32>().is_ok());
        let saved = stamp.filter(|_| ours).and_then(|t| t.parse::<u64>().ok());
        if saved.is_some_and(|t| t < before_ms)
            && let Err(e) = std::fs::remove_file(entry.path())
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove the old chat file {}: {e}", entry.path().display());
        }
    }
}

fn event_line(id: &Value, e: &Event) -> Vec<u8> {
    let r = Response { v: PROTOCOL_VERSION, id: id.clone(), ok: true, result: None, error: None, event: Some(e.clone()) };
    r.line()
}

fn failed(e: anyhow::Error) -> ErrorBody {
    ErrorBody::new("failed", format!("{e:#}"))
}

/// Carry out one request.
async fn handle(shared: &Shared, req: Request) -> Result<Value, ErrorBody> {
    match req {
        Request::Hello => Ok(json!({
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": [PROTOCOL_VERSION],
            "workspace": shared.ws.root(),
        })),
        Request::Status => shared.status().map_err(failed),
        Request::Stop => {
            tracing::info!("stop requested through the control socket");
            shared.commands.send(DaemonCommand::Stop).await.map_err(|_| ErrorBody::new("failed", "the daemon is already stopping"))?;
            Ok(json!({"stopping": true}))
        }
        Request::Reload => {
            let (tx, rx) = oneshot::channel();
            shared.commands.send(DaemonCommand::Reload(tx)).await.map_err(|_| ErrorBody::new("failed", "the daemon is stopping"))?;
            match rx.await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(ErrorBody::new("failed", e)),
                Err(_) => Err(ErrorBody::new("failed", "the daemon stopped before the reload finished")),
            }
        }
        Request::Logs { .. } => Err(ErrorBody::new("failed", "logs are streamed by the connection, not answered here")),
        Request::Send { channel, to, text, thread } => {
            if !shared.channels().contains(&channel) {
                return Err(ErrorBody::new(
                    "not-found",
                    format!("no channel plugin named {channel:?} is running; running: {}", shared.channels().join(", ")),
                ));
            }
            check_text(&text)?;
            if to.is_empty() {
                return Err(ErrorBody::new("bad-request", "the conversation (to) is empty"));
            }
            let key = format!("send-{}-{}", crate::store::now_ms(), random_suffix());
            let reply = Reply { plugin: channel.clone(), conversation: to, thread, reply_to: None, text, rich: Default::default() };
            let id = shared.db.enqueue(&reply, &key).map_err(failed)?;
            shared.notify_outbox(Some(&channel));
            Ok(json!({"outbox": id}))
        }
        Request::Chat { text, session } => {
            check_text(&text)?;
            let session = session.unwrap_or_else(|| "chat/local".to_string());
            let agent = shared.agent()?;
            match agent.interactive_turn(&session, &text).await {
                Ok(reply) => {
                    // A file that cannot be saved (a full disk) costs the files, not the reply.
                    let (files, files_error) = match save_chat_files(&shared.ws.state_dir().join("chat-files"), &reply.files) {
                        Ok(files) => (files, None),
                        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
                    };
                    Ok(json!({"session": session, "reply": reply.text, "files": files, "files_error": files_error}))
                }
                Err(e) => Err(failed(e)),
            }
        }
        Request::History { session, n } => {
            let items = shared.agent()?.recent_history(&session, n.min(1000)).map_err(failed)?;
            Ok(json!({"session": session, "history": items}))
        }
        Request::ToolCall { plugin, tool, args } => {
            use crate::tools::Outcome;
            Ok(match shared.agent()?.call_tool(&plugin, &tool, &args).await {
                Outcome::Ran(Ok(text)) => json!({"outcome": "ran", "text": text}),
                Outcome::Ran(Err(e)) => json!({"outcome": "failed", "text": e}),
                Outcome::Refused { reason, policy } => json!({"outcome": "refused", "text": reason, "policy": policy}),
                Outcome::Unknown(name) => json!({"outcome": "unknown", "text": name}),
            })
        }
        Request::Retry { ids, all, plugin } => {
            if ids.is_empty() && !all {
                let dead = shared.db.dead_letters(plugin.as_deref(), 1000).map_err(failed)?;
                return Ok(json!({"dead_letters": dead}));
            }
            let n = shared.db.requeue_dead(&ids, plugin.as_deref()).map_err(failed)?;
            shared.notify_outbox(plugin.as_deref());
            Ok(json!({"requeued": n}))
        }
    }
}

fn check_text(text: &str) -> Result<(), ErrorBody> {
    if text.trim().is_empty() {
        return Err(ErrorBody::new("bad-request", "the text is empty"));
    }
    if text.len() > MAX_TEXT {
        return Err(ErrorBody::new("too-large", format!("the text is {} bytes; the limit is {MAX_TEXT}", text.len())));
    }
    Ok(())
}

/// 64 random bits as hex, for idempotency keys.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::store::now_ms());
    format!("{:016x}", h.finish())
}

/// A blocking client of the control socket, for the CLI.
pub struct Client {
    reader: BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
    next_id: u64,
    ws: Workspace,
}

impl Client {
    /// Connect to the daemon of `ws`, or explain that none is running.
    pub fn connect(ws: &Workspace) -> Result<Self> {
        let path = socket_path(ws);
        let stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| not_running(ws, &path, e))?;
        let writer = stream.try_clone().context("cannot use the control socket")?;
        Ok(Self { reader: BufReader::new(stream), writer, next_id: 1, ws: ws.clone() })
    }

    /// Send a request and wait (at most `timeout`) for its reply. When the
    /// daemon had closed this connection as idle (so it never read the
    /// request), the request is sent again once on a new connection.
    /// A daemon that is busy (every slot taken by connections that are not
    /// idle) is asked again on new connections for a few seconds.
    pub fn call(&mut self, req: &Request, timeout: Duration) -> Result<Value> {
        let deadline = std::time::Instant::now() + BUSY_RETRY;
        loop {
            match self.call_once(req, timeout) {
                Err(e) if e.is::<Busy>() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                    self.reconnect()?;
                }
                r => return r,
            }
        }
    }

    fn reconnect(&mut self) -> Result<()> {
        let next_id = self.next_id;
        *self = Self::connect(&self.ws)?;
        self.next_id = next_id;
        Ok(())
    }

    fn call_once(&mut self, req: &Request, timeout: Duration) -> Result<Value> {
        if let Some(v) = self.try_call(req, timeout)? {
            return Ok(v);
        }
        self.reconnect()?;
        self.try_call(req, timeout)?.context("the daemon closed a new control connection as idle before reading the request")
    }

    /// One request and its reply; `None` when the daemon had closed the
    /// connection as idle before reading it.
    fn try_call(&mut self, req: &Request, timeout: Duration) -> Result<Option<Value>> {
        let sent = self.send(req);
        self.reader.get_ref().set_read_timeout(Some(timeout)).ok();
        // Read even when the write failed: the daemon may have said why it
        // closed the connection (idle, busy) before closing it.
        let r = match (sent, self.read()) {
            (_, Ok(Some(r))) if r.id.is_null() && !r.ok => {
                if r.error.as_ref().is_some_and(|e| e.kind == "idle-timeout") {
                    return Ok(None);
                }
                if let Some(e) = r.error.as_ref().filter(|e| e.kind == "busy") {
                    return Err(Busy(e.message.clone()).into());
                }
                return into_result(r).map(Some);
            }
            (Ok(id), Ok(Some(r))) => {
                if r.id != json!(id) {
                    bail!("the daemon answered another request (id {}, expected {id})", r.id);
                }
                r
            }
            (Err(e), _) => return Err(e),
            (Ok(_), Ok(None)) => bail!("the daemon closed the connection without replying (it may be stopping)"),
            (Ok(_), Err(e)) => return Err(e),
        };
        into_result(r).map(Some)
    }

    /// Send a request; returns its id.
    pub fn send(&mut self, req: &Request) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let mut v = serde_json::to_value(req)?;
        if let Value::Object(o) = &mut v {
            o.insert("v".into(), json!(PROTOCOL_VERSION));
            o.insert("id".into(), json!(id));
        }
        let mut line = serde_json::to_vec(&v)?;
        line.push(b'\n');
        self.writer.write_all(&line).context("cannot write to the control socket")?;
        Ok(id)
    }

    /// Read one reply line; None when the daemon hung up.
    pub fn read(&mut self) -> Result<Option<Response>> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).context("no reply from the daemon on the control socket")?;
        if n == 0 {
            return Ok(None);
        }
        let r: Response =
            serde_json::from_str(&line).with_context(|| format!("the daemon sent a reply this kata cannot read: {line:?}"))?;
        Ok(Some(r))
    }

    /// Stop waiting for replies after `timeout` (None: wait forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        self.reader.get_ref().set_read_timeout(timeout).ok();
    }
}

/// How long a client keeps asking a busy daemon.
const BUSY_RETRY: Duration = Duration::from_secs(5);

/// The daemon refused a connection as busy.
#[derive(Debug, thiserror::Error)]
#[error("the daemon refused the request: {0}")]
struct Busy(String);

/// A reply as a result.
pub fn into_result(r: Response) -> Result<Value> {
    if r.ok {
        Ok(r.result.unwrap_or(Value::Null))
    } else {
        let e = r.error.unwrap_or_else(|| ErrorBody::new("failed", "no details"));
        bail!("the daemon refused the request: {}", e.message)
    }
}

fn not_running(ws: &Workspace, path: &Path, e: std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    match e.kind() {
        NotFound | ConnectionRefused => anyhow::anyhow!(
            "kata is not running in {} (no daemon answers on {}); start it with `kata run` or `kata daemon start`",
            ws.root().display(),
            path.display()
        ),
        _ => anyhow::anyhow!("cannot connect to the daemon's control socket {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_files_keep_one_harmless_name_each_and_never_replace_one_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, data: &str| crate::store::OutFile { name: name.into(), mime_type: "text/plain".into(), data: data.into() };
        let files = [file("../../etc/passwd", "a"), file(".hidden", "b"), file("", "c"), file("ok name.md", "d")];
        let mut paths = Vec::new();
        // Twice at once: the same millisecond, the same names.
        for _ in 0..2 {
            for v in save_chat_files(dir.path(), &files).expect("saved") {
                paths.push(std::path::PathBuf::from(v["path"].as_str().expect("path")));
            }
        }
        let names: Vec<String> = paths.iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect();
        for (p, n) in paths.iter().zip(&names) {
            assert_eq!(p.parent(), Some(dir.path()), "{n} stays in the chat-files folder");
        }
        for (n, end) in names.iter().zip(["-passwd", "-hidden", "-file", "-ok_name.md"].iter().cycle()) {
            assert!(n.ends_with(end) && !n.starts_with('.'), "{n}");
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), 8, "{names:?}");
        let contents: Vec<String> = paths.iter().map(|p| std::fs::read_to_string(p).expect("read")).collect();
        assert_eq!(contents, ["a", "b", "c", "d", "a", "b", "c", "d"]);
    }

    #[test]
    fn chat_files_older_than_a_week_are_removed_when_a_reply_saves_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = crate::store::now_ms();
        let old = format!("{}-0-plan.md", now - CHAT_FILES_KEPT_MS - 60_000);
        let recent = format!("{}-0-notes.md", now - CHAT_FILES_KEPT_MS + 3_600_000);
        for n in [old.as_str(), recent.as_str(), "mine.txt", "2024-report.md"] {
            std::fs::write(dir.path().join(n), "x").expect("write");
        }
        let file = crate::store::OutFile { name: "new.md".into(), mime_type: "text/markdown".into(), data: "y".into() };
        let saved = save_chat_files(dir.path(), &[file]).expect("saved");
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        let new = std::path::Path::new(saved[0]["path"].as_str().expect("path")).file_name().expect("name").to_string_lossy().into_owned();
        let mut want = vec![recent, "mine.txt".to_string(), "2024-report.md".to_string(), new];
        want.sort();
        assert_eq!(left, want, "only the week-old file kata saved is gone");
    }

    /// A client that connects the moment the socket appears must find it
    /// owner-only: a watcher stats the public path while the socket is bound
    /// again and again, and never sees another mode; and no staging socket
    /// is left, not even one a killed daemon left before.
    #[tokio::test]
    async fn the_socket_is_never_reachable_before_it_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("kata.toml"), "").expect("policy");
        let ws = Workspace::open(dir.path()).expect("workspace");
        let path = socket_path(&ws);
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (path, done) = (path.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut seen, mut wrong) = (0u32, std::collections::BTreeMap::<String, u32>::new());
                while !done.load(Ordering::Relaxed) {
                    if let Ok(m) = std::fs::symlink_metadata(&path) {
                        seen += 1;
                        let mode = m.permissions().mode() & 0o777;
                        if mode != 0o600 {
                            *wrong.entry(format!("{mode:o}")).or_default() += 1;
                        }
                    }
                }
                (seen, wrong)
            })
        };
        // What a daemon killed between its bind and its rename leaves.
        ws.ensure_state_dir().expect("state dir");
        let orphan = ws.state_dir().join(format!(".{SOCKET_FILE}.4194303"));
        drop(std::os::unix::net::UnixListener::bind(&orphan).expect("orphan"));
        for _ in 0..300 {
            let listener = bind(&ws).expect("bound");
            assert_eq!(std::fs::metadata(&path).expect("in place").permissions().mode() & 0o777, 0o600);
            drop(listener);
        }
        done.store(true, Ordering::Relaxed);
        let (seen, wrong) = watcher.join().expect("watcher");
        assert!(seen > 0, "the watcher saw the socket");
        assert!(wrong.is_empty(), "the socket was seen with other modes (mode: times): {wrong:?}");
        let left: Vec<_> = std::fs::read_dir(ws.state_dir()).expect("state dir").map(|e| e.expect("entry").file_name()).collect();
        assert!(!left.iter().any(|n| n.to_string_lossy().starts_with(".kata.sock")), "no staging socket is left: {left:?}");
    }

    #[test]
    fn requests_parse_with_and_without_args() {
        assert_eq!(parse_request(br#"{"v":1,"id":3,"cmd":"status"}"#), Ok((json!(3), Request::Status)));
        assert_eq!(parse_request(br#"{"v":1,"cmd":"status","args":{}}"#), Ok((Value::Null, Request::Status)));
        assert_eq!(parse_request(br#"{"v":1,"cmd":"logs"}"#), Ok((Value::Null, Request::Logs { lines: 50, follow: false })));
        assert_eq!(
            parse_request(br#"{"v":1,"id":"a","cmd":"send","args":{"channel":"t","to":"1","text":"hi"}}"#),
            Ok((json!("a"), Request::Send { channel: "t".into(), to: "1".into(), text: "hi".into(), thread: None }))
        );
    }

    #[test]
    fn bad_requests_get_a_reason_and_keep_the_id() {
        let kind = |line: &[u8]| parse_request(line).expect_err("bad").1.kind;
        assert_eq!(kind(b"not json"), "bad-request");
        assert_eq!(kind(b"[1,2]"), "bad-request");
        assert_eq!(kind(br#"{"cmd":"status"}"#), "bad-request");
        assert_eq!(kind(br#"{"v":2,"cmd":"status"}"#), "unsupported-version");
        assert_eq!(kind(br#"{"v":1,"cmd":"launch-missiles"}"#), "bad-request");
        assert_eq!(kind(br#"{"v":1,"cmd":"send","args":{"channel":"t"}}"#), "bad-request");
        assert_eq!(kind(br#"{"v":1,"cmd":"status","extra":1}"#), "bad-request");
        let (id, e) = parse_request(br#"{"v":1,"id":9,"cmd":"nope"}"#).expect_err("bad");
        assert_eq!(id, json!(9));
        assert!(e.message.contains("commands are hello, status"), "{}", e.message);
    }

    #[tokio::test]
    async fn lines_longer_than_the_limit_are_refused() {
        let data = b"12345\n1234567890\nabc".to_vec();
        let mut r = tokio::io::BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert!(read_line(&mut r, &mut buf, 6).await.expect("fits").is_some());
        assert_eq!(buf, b"12345");
        assert!(read_line(&mut r, &mut buf, 6).await.is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_line_parses_or_is_refused_without_panicking(line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_request(&line);
        }

        #[test]
        fn any_json_request_parses_or_is_refused_without_panicking(
            cmd in "[a-z-]{0,12}",
            v in proptest::prelude::any::<i64>(),
            args in proptest::prelude::any::<Option<String>>(),
        ) {
            let line = json!({"v": v.rem_euclid(3), "cmd": cmd, "args": args.map(|a| json!({"text": a, "channel": 1}))}).to_string();
            let _ = parse_request(line.as_bytes());
        }
    }
}
