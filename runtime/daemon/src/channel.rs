//! Running one channel plugin: the ingress loop (poll → inbox) and the egress
//! loop (outbox → send), each with its own instance so a long poll never
//! delays a reply. Both restart their instance after a trap and back off on
//! errors, honouring the plugin's retry-after; neither ever busy-loops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tokio::sync::{Notify, watch};

use crate::admit::{Tally, check_ids};
use crate::health::{Fault, Health};
use crate::host::latest::{
    Action, ChannelAction, ChannelError, ConversationKind, Edit, Message, OutboundAttachment, OutboundMessage, SendReceipt,
};
use crate::limits::{MAX_ATTACHMENT_FIELD, MAX_ATTACHMENTS, MAX_NAME, MESSAGE_CUT, cut_redacted};
use crate::plugin::{CallError, ChannelInstance, ChannelPlugin};
use crate::sandbox::PluginSandbox;
use crate::store::{Db, Inbound, OutboxRow, now_ms};

/// The shortest pause after a poll that returned nothing.
const MIN_IDLE_POLL: Duration = Duration::from_millis(100);
/// Default pause after an empty poll, unless the plugin or `config.poll_interval` says otherwise.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Messages a single poll may return; more is treated as a plugin bug.
const MAX_MESSAGES_PER_POLL: usize = 1000;
/// Delivery attempts before a reply that fails permanently (auth, config,
/// unsupported, fatal) goes to the dead letters.
const MAX_SEND_ATTEMPTS: u32 = 5;
/// Delivery attempts before a reply that keeps failing for any other reason
/// (network, rate limit, traps) goes to the dead letters: with the backoff
/// capped at five minutes, about 40 minutes of trying. `kata retry` requeues.
const MAX_TRANSIENT_SEND_ATTEMPTS: u32 = 15;

/// Exponential backoff with jitter, from half a second up to five minutes.
pub(crate) fn backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(300))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The delay before retry number `attempt` (0-based).
fn retry_delay(attempt: u32) -> Duration {
    backoff().nth(attempt.min(20) as usize).unwrap_or(Duration::from_secs(300))
}

/// Sleep, or return early (true) when shutdown is requested.
pub(crate) async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}

/// Instantiate and connect. Errors are logged by the caller.
async fn start_instance(plugin: &ChannelPlugin) -> Result<ChannelInstance, CallError> {
    let mut inst = plugin.instantiate().await?;
    inst.connect().await?;
    Ok(inst)
}

/// Whether a failed call is the plugin's own fault (counts towards its
/// circuit breaker) or the world's (only backs off).
pub fn fault_of(e: &CallError) -> Fault {
    match e {
        CallError::Trap(_) | CallError::Timeout(_) | CallError::Channel(ChannelError::Fatal(_)) => Fault::Plugin,
        CallError::Channel(_) => Fault::External,
    }
}

/// The kind of a failed call, as `kata status` names it: the channel
/// error's case (`auth-failed`, `rate-limited`, `network`, `invalid-config`,
/// `unsupported`, `fatal`), or `trap` and `timeout`.
pub fn error_kind(e: &CallError) -> &'static str {
    match e {
        CallError::Channel(ChannelError::AuthFailed(_)) => "auth-failed",
        CallError::Channel(ChannelError::RateLimited(_)) => "rate-limited",
        CallError::Channel(ChannelError::Network(_)) => "network",
        CallError::Channel(ChannelError::InvalidConfig(_)) => "invalid-config",
        CallError::Channel(ChannelError::Unsupported) => "unsupported",
        CallError::Channel(ChannelError::Fatal(_)) => "fatal",
        CallError::Trap(_) => "trap",
        CallError::Timeout(_) => "timeout",
    }
}

/// One loop's instance of a plugin and what it needs to keep one alive:
/// start it when there is none, report failures to [`Health`], and hold off
/// while the plugin's circuit breaker is open.
pub struct Slot {
    plugin: Arc<ChannelPlugin>,
    health: Arc<Health>,
    role: &'static str,
    instance: Option<ChannelInstance>,
    backoff: backon::ExponentialBackoff,
    started: bool,
}

impl Slot {
    /// An empty slot for the `role` loop ("poll", "send", "stream") of `plugin`.
    pub fn new(plugin: Arc<ChannelPlugin>, health: Arc<Health>, role: &'static str) -> Self {
        Self { plugin, health, role, instance: None, backoff: backoff(), started: false }
    }

    /// The instance, started (instantiated and connected) if there is none.
    /// While the breaker is open, or when starting fails, it waits (or until
    /// shutdown) and returns None; the caller's loop then checks for
    /// shutdown and tries again.
    pub async fn live(&mut self, shutdown: &mut watch::Receiver<bool>) -> Option<&mut ChannelInstance> {
        if self.instance.is_none() {
            let plugin = self.plugin.clone();
            let name = plugin.name();
            let hold = self.health.breaker_wait(name);
            if !hold.is_zero() {
                sleep_or_shutdown(hold, shutdown).await;
                return None;
            }
            self.health.start_attempt(name, self.started);
            self.started = true;
            match start_instance(&self.plugin).await {
                Ok(i) => {
                    self.instance = Some(i);
                }
                Err(e) => {
                    let d = self.failed(&e);
                    tracing::warn!(plugin = %name, "cannot start the {} instance: {e}; retrying in {d:?}", self.role);
                    sleep_or_shutdown(d, shutdown).await;
                    return None;
                }
            }
        }
        self.instance.as_mut()
    }

    /// A call succeeded. A poll that succeeds means the channel is
    /// connected (a stream is connected once it opens: see [`crate::stream`]).
    pub fn succeeded(&mut self) {
        self.backoff = backoff();
        self.health.success(self.plugin.name());
        if self.role == "poll" {
            self.health.connected(self.plugin.name(), true);
        }
    }

    /// A call failed: drop a broken instance, tell [`Health`], and return how
    /// long to wait before the next call (the breaker's cooldown if this
    /// failure opened it).
    pub fn failed(&mut self, e: &CallError) -> Duration {
        if e.breaks_instance() {
            self.instance = None;
        }
        let delay = error_delay(e, &mut self.backoff);
        let name = self.plugin.name();
        let d = self.health.failure_delay(name, name, &e.to_string(), fault_of(e), delay);
        self.health.error_kind(name, error_kind(e));
        if self.role != "send" {
            self.health.connected(name, false);
        }
        d
    }

    /// Abandon the instance (e.g. a call cancelled mid-way).
    pub fn drop_instance(&mut self) {
        self.instance = None;
    }

    /// Close the instance because it is not needed now: a later start is a
    /// fresh start, not a restart.
    pub async fn retire(&mut self) {
        self.close().await;
        self.started = false;
    }

    /// Disconnect and drop the instance, if any.
    pub async fn close(&mut self) {
        if let Some(mut i) = self.instance.take() {
            i.disconnect().await;
        }
    }
}

/// How long to wait after a failed call, and whether to say it loudly.
fn error_delay(e: &CallError, backoff: &mut backon::ExponentialBackoff) -> Duration {
    let next = backoff.next().unwrap_or(Duration::from_secs(300));
    match e {
        CallError::Channel(ChannelError::RateLimited(ms)) => Duration::from_millis(*ms).max(next.min(Duration::from_secs(1))),
        // Nothing will change until the user edits the workspace: retry slowly.
        CallError::Channel(ChannelError::AuthFailed(_) | ChannelError::InvalidConfig(_)) => next.max(Duration::from_secs(30)),
        _ => next,
    }
}

/// A polled message as the inbox stores it, within the plugin's limits
/// (see [`crate::limits`]): a message with a missing or over-long id,
/// conversation, sender or thread is refused; a text over
/// `limits.max_message` is cut at a character boundary with a marker; a
/// `raw` over it, attachments past [`MAX_ATTACHMENTS`] or with a field over
/// [`MAX_ATTACHMENT_FIELD`] are dropped; a long sender name is cut. What was
/// done is noted in `tally`. Every text field passes the plugin's secret
/// scanner: a secret value the plugin got hold of is stored (and shown to the
/// agent) as `[REDACTED:NAME]`, never as itself. Fields within the limits are
/// moved, not copied.
pub(crate) fn to_inbound(mut m: Message, sandbox: &PluginSandbox, tally: &mut Tally) -> Option<Inbound> {
    if let Err(refusal) = check_ids(&m) {
        tally.refused(refusal);
        return None;
    }
    let max = sandbox.grants().limits.max_message_bytes;
    let longest = sandbox.redactor().longest();
    let mut largest = 0;
    let mut over = |len: usize, limit: usize| {
        let o = len > limit;
        if o {
            largest = largest.max(len);
        }
        o
    };
    let r = |s: String| match sandbox.redact(&s, "message") {
        std::borrow::Cow::Borrowed(_) => s,
        std::borrow::Cow::Owned(o) => o,
    };
    if over(m.text.len(), max) || m.raw.as_ref().is_some_and(|raw| over(raw.len(), max)) {
        m.raw = m.raw.filter(|raw| raw.len() <= max);
    }
    let cut = m.attachments.len() > MAX_ATTACHMENTS;
    m.attachments.truncate(MAX_ATTACHMENTS);
    m.attachments.retain(|a| {
        let longest_field = a.name.len().max(a.mime_type.len()).max(a.url.as_ref().map_or(0, String::len));
        if longest_field > MAX_ATTACHMENT_FIELD {
            largest = largest.max(longest_field);
            return false;
        }
        true
    });
    let (text, _) = cut_redacted(m.text, max, MESSAGE_CUT, longest, |s| sandbox.redact(s, "message"));
    let sender_name = m.sender_name.map(|n| {
        if n.len() > MAX_NAME {
            largest = largest.max(n.len());
        }
        cut_redacted(n, MAX_NAME, "…", longest, |s| sandbox.redact(s, "message")).0
    });
    if cut || largest > 0 {
        tally.cut += 1;
        tally.largest = tally.largest.max(largest);
    }
    let attachments: Vec<serde_json::Value> = m
        .attachments
        .into_iter()
        .map(|a| serde_json::json!({"name": r(a.name), "mime_type": a.mime_type, "url": a.url.map(r), "size": a.size}))
        .collect();
    Some(Inbound {
        channel_msg_id: r(m.id),
        conversation: r(m.conversation),
        thread: m.thread.map(r),
        sender: r(m.sender),
        sender_name,
        text,
        attachments_json: serde_json::Value::Array(attachments).to_string(),
        timestamp_ms: m.timestamp_ms,
        raw: m.raw.map(r),
        group: matches!(m.conversation_kind, ConversationKind::Group),
        mentioned: m.mentioned,
    })
}

/// The bytes a stored message takes (its text fields; lengths only).
pub(crate) fn inbound_bytes(r: &Inbound) -> usize {
    r.channel_msg_id.len()
        + r.conversation.len()
        + r.thread.as_ref().map_or(0, String::len)
        + r.sender.len()
        + r.sender_name.as_ref().map_or(0, String::len)
        + r.text.len()
        + r.attachments_json.len()
        + r.raw.as_ref().map_or(0, String::len)
}

/// What one poll (or frame) brought, bounded ([`to_inbound`]) and together
/// at most `limits.max_poll_bytes` (the messages past it are refused), with
/// what was cut or refused logged, audited and counted once for the batch
/// (`place`: "poll", "frame"). Returns the rows and their size in bytes.
pub(crate) fn admit(messages: Vec<Message>, sandbox: &PluginSandbox, place: &str) -> (Vec<Inbound>, usize) {
    let max = sandbox.grants().limits.max_poll_bytes;
    let mut tally = Tally::default();
    let mut rows = Vec::with_capacity(messages.len());
    let mut bytes = 0usize;
    let mut rest = messages.into_iter();
    for m in rest.by_ref() {
        let Some(row) = to_inbound(m, sandbox, &mut tally) else { continue };
        let size = inbound_bytes(&row);
        if bytes + size > max {
            tally.over_batch += 1 + rest.len() as u64;
            break;
        }
        bytes += size;
        rows.push(row);
    }
    drop(rest);
    tally.report(sandbox, place);
    (rows, bytes)
}

/// A bucket of `per_minute` units refilled continuously, which may go into
/// debt: [`TokenBucket::take`] says how long until it is out of it.
#[derive(Debug)]
struct TokenBucket {
    per_minute: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(per_minute: f64) -> Self {
        let per_minute = per_minute.max(1.0);
        Self { per_minute, tokens: per_minute, at: Instant::now() }
    }

    fn take(&mut self, n: f64, now: Instant) -> Duration {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
        self.tokens = (self.tokens + refill).min(self.per_minute) - n;
        self.at = now;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens * 60.0 / self.per_minute) }
    }
}

/// The inbound budget of one plugin: a bucket of `messages_per_minute`
/// messages and one of `bytes_per_minute` bytes, refilled continuously.
/// Messages a poll brings are always stored (the cursor already moved past
/// them); a plugin over either budget is simply polled later, so a flood
/// slows itself down instead of crowding out the other channels.
#[derive(Debug)]
pub struct InboundBudget {
    messages: TokenBucket,
    bytes: TokenBucket,
}

impl InboundBudget {
    /// Full buckets.
    pub fn new(per_minute: u32, bytes_per_minute: usize) -> Self {
        Self { messages: TokenBucket::new(f64::from(per_minute)), bytes: TokenBucket::new(bytes_per_minute as f64) }
    }

    /// Take `n` messages of `bytes` bytes from the buckets at `now`; returns
    /// how long polling must pause until neither is in debt, and the limit
    /// (`messages_per_minute` or `bytes_per_minute`) that makes it pause.
    pub fn take(&mut self, n: usize, bytes: usize, now: Instant) -> (Duration, Option<&'static str>) {
        let m = self.messages.take(n as f64, now);
        let b = self.bytes.take(bytes as f64, now);
        if m.is_zero() && b.is_zero() {
            (Duration::ZERO, None)
        } else if m >= b {
            (m, Some("messages_per_minute"))
        } else {
            (b, Some("bytes_per_minute"))
        }
    }
}

/// Log and count a pause `budget.take` asked for (`what`: "polls", "ticks").
pub(crate) fn note_pause(plugin: &str, limits: &crate::policy::Limits, pause: (Duration, Option<&'static str>), what: &str) {
    let (pause, Some(limit)) = pause else { return };
    crate::limits::hit(plugin, limit, 1);
    let over = if limit == "messages_per_minute" {
        format!("more than {} messages a minute", limits.messages_per_minute)
    } else {
        format!("more than {} of messages a minute", crate::limits::size_text(limits.bytes_per_minute))
    };
    tracing::warn!(plugin = %plugin, "{over} (limits.{limit}): pausing {what} for {pause:?}");
}

/// How long to wait before the next poll. Straight away only when the poll
/// brought something new (there may be more); otherwise the plugin's wish or
/// `poll_interval`, and never less than [`MIN_IDLE_POLL`] after a quick poll —
/// so a plugin that returns the same messages over and over cannot spin.
fn idle_delay(next_poll_ms: Option<u32>, new: usize, poll_interval: Duration, took: Duration) -> Duration {
    let wanted = match next_poll_ms {
        Some(ms) => Duration::from_millis(ms.into()),
        None if new == 0 => poll_interval,
        None => Duration::ZERO,
    };
    if new == 0 { wanted.max(MIN_IDLE_POLL.saturating_sub(took)) } else { wanted }
}

/// Poll the channel until shutdown, storing messages and cursor together.
pub async fn ingress(
    plugin: Arc<ChannelPlugin>,
    db: Db,
    health: Arc<Health>,
    inbox_ready: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = plugin.name().to_string();
    let poll_interval =
        plugin.grants.config.get("poll_interval").and_then(|s| crate::policy::parse_duration(s).ok()).unwrap_or(DEFAULT_POLL_INTERVAL);
    let mut slot = Slot::new(plugin.clone(), health.clone(), "poll");
    let mut budget = InboundBudget::new(plugin.grants.limits.messages_per_minute, plugin.grants.limits.bytes_per_minute);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let Some(inst) = slot.live(&mut shutdown).await else {
            continue;
        };
        let cursor = match db.cursor(&name) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(plugin = %name, "cannot read the poll cursor: {e:#}");
                if sleep_or_shutdown(retry_delay(3), &mut shutdown).await {
                    break;
                }
                continue;
            }
        };
        let started = Instant::now();
        let result = tokio::select! {
            r = inst.poll(cursor.as_deref()) => r,
            // A poll may wait a long time for messages; abandon it on shutdown.
            // Nothing is lost: the cursor only moves when a result is stored.
            _ = shutdown.changed() => { slot.drop_instance(); break; }
        };
        let delay = match result {
            Ok(res) => {
                slot.succeeded();
                let got = res.messages.len();
                if got > MAX_MESSAGES_PER_POLL {
                    crate::limits::hit(&name, "max_messages_per_poll", 1);
                    tracing::warn!(plugin = %name, "poll returned {got} messages (limit {MAX_MESSAGES_PER_POLL}); ignoring this result");
                    Duration::from_secs(1)
                } else {
                    let (messages, bytes) = admit(res.messages, plugin.sandbox(), "poll");
                    let new = match db.record_poll_batched(&name, messages, res.cursor.clone()).await {
                        Ok(new) => {
                            health.polled(&name, new);
                            tracing::debug!(plugin = %name, got, new, cursor = ?res.cursor, "poll");
                            if new > 0 {
                                inbox_ready.notify_one();
                            }
                            new
                        }
                        Err(e) => {
                            tracing::error!(plugin = %name, "cannot store polled messages: {e:#}");
                            0
                        }
                    };
                    let pause = budget.take(new, bytes, Instant::now());
                    note_pause(&name, &plugin.grants.limits, pause, "polls");
                    let pause = pause.0;
                    idle_delay(res.next_poll_ms, new, poll_interval, started.elapsed()).max(pause)
                }
            }
            Err(e) => {
                let d = slot.failed(&e);
                tracing::warn!(plugin = %name, "poll failed: {e}; retrying in {d:?}");
                d
            }
        };
        if sleep_or_shutdown(delay, &mut shutdown).await {
            break;
        }
    }
    slot.close().await;
    health.stopped(&name);
    tracing::debug!(plugin = %name, "ingress stopped");
}

/// An extra send instance with nothing to do for this long is closed (the
/// first stays up): instances cost memory, load comes and goes.
const LANE_IDLE: Duration = Duration::from_secs(60);

/// Which send lane delivers replies to `conversation`: always the same one,
/// so one conversation's replies go out one at a time, in order.
fn lane_of(conversation: &str, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    conversation.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}

/// One send lane: an instance slot, when it last had work, and the
/// recording of its last delivery while that is not yet committed.
struct Lane {
    slot: Slot,
    used: Instant,
    recording: Option<tokio::task::JoinHandle<()>>,
    /// Use `send-batch` (if the plugin exports it) until it says `unsupported`.
    batch: bool,
}

impl Lane {
    /// Wait until the lane's last delivery is recorded, asking the writer
    /// to commit now rather than when it has company.
    async fn recorded(&mut self, db: &Db) {
        if let Some(h) = self.recording.take() {
            if !h.is_finished()
                && let Err(e) = db.flush().await
            {
                tracing::error!("cannot record a delivery: {e:#}");
            }
            let _ = h.await;
        }
    }
}

/// Outbox rows sent whose delivery is not yet recorded: not sent again.
/// An id is removed only after its delivery record is committed.
type Recording = Arc<std::sync::Mutex<std::collections::HashSet<i64>>>;

/// Fault injection for the test suite, in debug builds only: with
/// `KATA_FAULT_PAUSE=POINT:MS`, the named point pauses (yielding to other
/// tasks, as any await there could) for that long, which turns a narrow
/// race at that point into one a test hits every time. Release builds
/// compile this to nothing.
async fn fault_pause(point: &str) {
    #[cfg(debug_assertions)]
    {
        static PAUSE: std::sync::OnceLock<Option<(String, Duration)>> = std::sync::OnceLock::new();
        let pause = PAUSE.get_or_init(|| {
            let v = std::env::var("KATA_FAULT_PAUSE").ok()?;
            let (p, ms) = v.split_once(':')?;
            Some((p.to_string(), Duration::from_millis(ms.parse().ok()?)))
        });
        if let Some((p, d)) = pause
            && p == point
        {
            tokio::time::sleep(*d).await;
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// Deliver this plugin's outbox until shutdown.
///
/// Due replies are read in batches and spread over up to
/// `limits.concurrent_sends` lanes by conversation; each lane sends its share
/// in order on its own instance, so a slow conversation does not hold the
/// others up. Lanes beyond the first start when they get work and close after
/// `LANE_IDLE` without.
pub async fn egress(
    plugin: Arc<ChannelPlugin>,
    db: Db,
    health: Arc<Health>,
    outbox_ready: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = plugin.name().to_string();
    let count = plugin.grants.limits.concurrent_sends.max(1) as usize;
    let mut lanes: Vec<Lane> = (0..count)
        .map(|_| Lane { slot: Slot::new(plugin.clone(), health.clone(), "send"), used: Instant::now(), recording: None, batch: true })
        .collect();
    let recording: Recording = Arc::default();
    loop {
        if *shutdown.borrow() {
            break;
        }
        // The replies sent but not yet recorded, taken *before* the outbox is
        // read. A reply leaves `recording` only after its delivery is
        // committed, and nothing is sent while this loop reads (sends happen
        // in `deliver`, which this loop awaits), so every reply the read sees
        // as pending is either unsent or in this snapshot. (Filtering by the
        // set as it is *after* the read lets a reply whose record was
        // committed in between through as pending: it went out twice.)
        let unrecorded = recording.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let due = match db.due_outbox(&name, now_ms(), 64 * count) {
            Ok(mut d) => {
                let read = d.len();
                fault_pause("egress-read").await;
                d.retain(|r| !unrecorded.contains(&r.id));
                if d.is_empty() && read > 0 {
                    // Only replies already sent, their delivery records not
                    // yet committed: have them committed now, then look again.
                    if let Err(e) = db.flush().await {
                        tracing::error!(plugin = %name, "cannot record a delivery: {e:#}");
                        if sleep_or_shutdown(retry_delay(3), &mut shutdown).await {
                            break;
                        }
                    }
                    continue;
                }
                d
            }
            Err(e) => {
                tracing::error!(plugin = %name, "cannot read the outbox: {e:#}");
                if sleep_or_shutdown(retry_delay(3), &mut shutdown).await {
                    break;
                }
                continue;
            }
        };
        if due.is_empty() {
            for lane in lanes.iter_mut().skip(1) {
                if lane.used.elapsed() >= LANE_IDLE {
                    lane.slot.retire().await;
                }
            }
            let wait = match db.next_outbox_due(&name) {
                Ok(Some(t)) => Duration::from_millis(t.saturating_sub(now_ms())).max(Duration::from_millis(10)),
                _ => LANE_IDLE,
            };
            tokio::select! {
                _ = outbox_ready.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
            continue;
        }
        let mut shares: Vec<Vec<OutboxRow>> = (0..count).map(|_| Vec::new()).collect();
        for row in due {
            shares[lane_of(&row.conversation, count)].push(row);
        }
        let work = lanes.iter_mut().zip(shares).filter(|(_, rows)| !rows.is_empty()).map(|(lane, rows)| {
            lane.used = Instant::now();
            deliver(&plugin, &db, &health, lane, &recording, rows, shutdown.clone())
        });
        futures_util::future::join_all(work).await;
    }
    for lane in &mut lanes {
        lane.recorded(&db).await;
        lane.slot.close().await;
    }
    health.stopped(&name);
    tracing::debug!(plugin = %name, "egress stopped");
}

/// Send `rows` (one lane's share, oldest first) one after another. A failed
/// send is recorded for a later retry (or as a dead letter) and ends the
/// share: the channel is unhappy, and the rest come back on the next read.
///
/// A delivery is recorded in the background (sharing a commit with other
/// writes), but a lane sends nothing before its previous delivery is
/// recorded: a crash can repeat at most one send per lane — one `send`, or
/// one `send-batch` of up to [`MAX_SEND_BATCH`] replies with their
/// idempotency keys, for a channel that exports it ([`deliver_batch`]).
async fn deliver(
    plugin: &Arc<ChannelPlugin>,
    db: &Db,
    health: &Health,
    lane: &mut Lane,
    recording: &Recording,
    rows: Vec<OutboxRow>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = plugin.name();
    let mut rows: std::collections::VecDeque<OutboxRow> = rows.into();
    while let Some(row) = rows.pop_front() {
        if *shutdown.borrow() {
            return;
        }
        lane.recorded(db).await;
        // Several plain replies due and a channel that sends in batches: one
        // `send-batch` call for up to MAX_SEND_BATCH of them.
        let plain = |r: &OutboxRow| r.rich.draft_id.is_none();
        if lane.batch && plugin.can_send_batch() && plain(&row) && rows.front().is_some_and(plain) {
            let mut chunk = vec![row];
            while chunk.len() < MAX_SEND_BATCH && rows.front().is_some_and(plain) {
                chunk.extend(rows.pop_front());
            }
            match deliver_batch(plugin, db, health, lane, recording, chunk, &mut shutdown).await {
                Batched::Sent => continue,
                Batched::Stopped => return,
                Batched::Unsupported(chunk) => {
                    tracing::debug!(plugin = %name, "send-batch is unsupported now: sending one at a time on this lane");
                    lane.batch = false;
                    for r in chunk.into_iter().rev() {
                        rows.push_front(r);
                    }
                    continue;
                }
            }
        }
        let slot = &mut lane.slot;
        let Some(inst) = slot.live(&mut shutdown).await else {
            return;
        };
        let draft = row.rich.draft_id;
        let (row_id, row_attempts) = (row.id, row.attempts);
        let msg = OutboundMessage {
            conversation: row.conversation,
            thread: row.thread,
            reply_to: row.reply_to,
            text: row.text,
            idempotency_key: row.idempotency_key,
            // A channel without the feature gets these as text (ChannelInstance::send).
            attachments: row
                .rich
                .attachments
                .into_iter()
                .map(|f| OutboundAttachment { name: f.name, mime_type: f.mime_type, data: f.data })
                .collect(),
            actions: row.rich.actions.into_iter().map(|b| Action { id: b.id, label: b.label }).collect(),
        };
        // An in-flight send is never abandoned for shutdown: the call is
        // bounded by call_timeout, and abandoning it could send twice.
        let result = match draft {
            Some(draft) => finish_draft(plugin, inst, msg, draft).await,
            None => send_message(plugin, inst, &msg).await,
        };
        match result {
            Ok(receipt) => {
                slot.succeeded();
                health.sent(name);
                tracing::info!(plugin = %name, outbox = row.id, receipt = %receipt.id, "sent");
                recording.lock().unwrap_or_else(|p| p.into_inner()).insert(row.id);
                let (db, recording, plugin) = (db.clone(), recording.clone(), name.to_string());
                lane.recording = Some(tokio::spawn(async move {
                    if let Err(e) = db.mark_sent_batched(row.id, receipt.id).await {
                        tracing::error!(plugin = %plugin, "cannot record a delivery: {e:#}");
                    }
                    recording.lock().unwrap_or_else(|p| p.into_inner()).remove(&row.id);
                }));
            }
            Err(e) => {
                health.send_failed(name);
                let hold = slot.failed(&e);
                record_failure(db, name, (row_id, row_attempts), &e, hold);
                return;
            }
        }
    }
}

/// Most replies one `send-batch` call carries.
const MAX_SEND_BATCH: usize = 32;

/// How a batch went.
enum Batched {
    /// Sent (those that failed are recorded for a retry): go on.
    Sent,
    /// Nothing more for this share now (a failure, no instance, shutdown).
    Stopped,
    /// The plugin does not batch (now): the replies, untouched.
    Unsupported(Vec<OutboxRow>),
}

/// The message a reply row becomes (a copy: the row is kept for its record).
fn outbound(row: &OutboxRow) -> OutboundMessage {
    OutboundMessage {
        conversation: row.conversation.clone(),
        thread: row.thread.clone(),
        reply_to: row.reply_to.clone(),
        text: row.text.clone(),
        idempotency_key: row.idempotency_key.clone(),
        attachments: row
            .rich
            .attachments
            .iter()
            .map(|f| OutboundAttachment { name: f.name.clone(), mime_type: f.mime_type.clone(), data: f.data.clone() })
            .collect(),
        actions: row.rich.actions.iter().map(|b| Action { id: b.id.clone(), label: b.label.clone() }).collect(),
    }
}

/// Send `chunk` (plain replies, in order) with one `send-batch` call and
/// record each result: the deliveries together in one write (in the
/// background, as for a single send: the lane's next send waits for it),
/// each failure as a retry or a dead letter of its own — only the replies
/// that failed are sent again. A crash repeats at most this one call.
async fn deliver_batch(
    plugin: &ChannelPlugin,
    db: &Db,
    health: &Health,
    lane: &mut Lane,
    recording: &Recording,
    chunk: Vec<OutboxRow>,
    shutdown: &mut watch::Receiver<bool>,
) -> Batched {
    let name = plugin.name();
    let Some(inst) = lane.slot.live(shutdown).await else {
        return Batched::Stopped;
    };
    let messages: Vec<OutboundMessage> = chunk.iter().map(outbound).collect();
    // Like a single send, an in-flight batch is never abandoned for shutdown.
    let results = match inst.send_batch(&messages).await {
        Ok(r) => r,
        Err(CallError::Channel(ChannelError::Unsupported)) => return Batched::Unsupported(chunk),
        Err(e) => {
            // The whole call failed: every reply in it did.
            let hold = lane.slot.failed(&e);
            for row in &chunk {
                health.send_failed(name);
                record_failure(db, name, (row.id, row.attempts), &e, hold);
            }
            return Batched::Stopped;
        }
    };
    drop(messages);
    let mut sent = Vec::with_capacity(chunk.len());
    let mut failed = Vec::new();
    for (row, result) in chunk.iter().zip(results) {
        let result = match result {
            Ok(r) if !r.frames.is_empty() => deliver_frames(plugin, r).await,
            other => other,
        };
        match result {
            Ok(receipt) => {
                health.sent(name);
                tracing::info!(plugin = %name, outbox = row.id, receipt = %receipt.id, "sent");
                sent.push((row.id, receipt.id));
            }
            Err(e) => failed.push((row, e)),
        }
    }
    if !sent.is_empty() {
        lane.slot.succeeded();
        let ids: Vec<i64> = sent.iter().map(|(id, _)| *id).collect();
        recording.lock().unwrap_or_else(|p| p.into_inner()).extend(ids.iter().copied());
        let (db, recording, plugin) = (db.clone(), recording.clone(), name.to_string());
        lane.recording = Some(tokio::spawn(async move {
            if let Err(e) = db.mark_sent_many_batched(sent).await {
                tracing::error!(plugin = %plugin, "cannot record a delivery: {e:#}");
            }
            let mut r = recording.lock().unwrap_or_else(|p| p.into_inner());
            for id in ids {
                r.remove(&id);
            }
        }));
    }
    let Some((_, first)) = failed.first() else {
        return Batched::Sent;
    };
    let hold = lane.slot.failed(first);
    for (row, e) in &failed {
        health.send_failed(name);
        record_failure(db, name, (row.id, row.attempts), e, hold);
    }
    Batched::Stopped
}

/// Record a failed delivery of outbox row `id` (tried `attempts` times
/// before): a retry after a backoff (at least `hold`, or the plugin's
/// retry-after), or a dead letter once its attempts are used up.
fn record_failure(db: &Db, name: &str, (id, attempts): (i64, u32), e: &CallError, hold: Duration) {
    let permanent = matches!(
        e,
        CallError::Channel(
            ChannelError::AuthFailed(_) | ChannelError::InvalidConfig(_) | ChannelError::Unsupported | ChannelError::Fatal(_)
        )
    );
    let limit = if permanent { MAX_SEND_ATTEMPTS } else { MAX_TRANSIENT_SEND_ATTEMPTS };
    let r = if attempts + 1 >= limit {
        tracing::error!(
            plugin = %name, outbox = id,
            "giving up on a reply after {} attempts: {e}; it is kept as a dead letter \
             (`kata status` counts them, `kata retry` lists and requeues them)",
            attempts + 1
        );
        db.mark_failed(id, &e.to_string())
    } else {
        let d = match e {
            CallError::Channel(ChannelError::RateLimited(ms)) => Duration::from_millis(*ms),
            _ => retry_delay(attempts).max(hold),
        };
        tracing::warn!(plugin = %name, outbox = id, "send failed: {e}; retrying in {d:?}");
        db.mark_retry(id, &e.to_string(), now_ms() + d.as_millis() as u64)
    };
    if let Err(err) = r {
        tracing::error!(plugin = %name, "cannot record a delivery result: {err:#}");
    }
}

/// `send(msg)`, writing the frames of a plugin that sends over its stream.
async fn send_message(plugin: &ChannelPlugin, inst: &mut ChannelInstance, msg: &OutboundMessage) -> Result<SendReceipt, CallError> {
    match inst.send(msg).await {
        Ok(r) if !r.frames.is_empty() => deliver_frames(plugin, r).await,
        other => other,
    }
}

/// Deliver a reply that was streamed as a draft (message `draft` on the
/// channel): edit the draft into the final text, then send its files and
/// buttons, if any, as a message of their own. An edit is idempotent, so a
/// retry after a failed send edits again and sends once. When the channel
/// refuses the edit for good (it no longer lists `edit`, the draft is gone),
/// the reply is sent as a new message instead.
async fn finish_draft(
    plugin: &ChannelPlugin,
    inst: &mut ChannelInstance,
    mut msg: OutboundMessage,
    draft: String,
) -> Result<SendReceipt, CallError> {
    let edit = ChannelAction::Edit(Edit { conversation: msg.conversation.clone(), message_id: draft.clone(), text: msg.text.clone() });
    match inst.act(&edit).await {
        Ok(()) => {}
        Err(CallError::Channel(ChannelError::Unsupported | ChannelError::InvalidConfig(_) | ChannelError::Fatal(_))) => {
            tracing::warn!(plugin = %plugin.name(), draft = %draft, "cannot edit the draft into the reply; sending the reply as a new message");
            return send_message(plugin, inst, &msg).await;
        }
        Err(e) => return Err(e),
    }
    if msg.attachments.is_empty() && msg.actions.is_empty() {
        return Ok(SendReceipt { id: draft, frames: Vec::new() });
    }
    msg.text.clear();
    msg.reply_to = None;
    send_message(plugin, inst, &msg).await
}

/// Finish a send whose receipt carries frames: write them to the plugin's
/// open stream (which [`crate::stream`] holds). An error is a `network`
/// error, so the outbox retries it.
pub async fn deliver_frames(plugin: &ChannelPlugin, receipt: SendReceipt) -> Result<SendReceipt, CallError> {
    // Checked before anything is copied: an oversized write is the
    // plugin's fault (it counts towards its breaker and is not retried forever).
    if let Err((limit, e)) = crate::admit::check_frames(&receipt.frames, &plugin.grants.limits) {
        return Err(refuse_frames(plugin, limit, "send", e));
    }
    let frames = receipt.frames.clone();
    match plugin.outlet().write(frames).await {
        Ok(()) => Ok(receipt),
        Err(e) => Err(CallError::Channel(ChannelError::Network(format!("sending over the stream: {e}")))),
    }
}

/// Log, audit and count frames refused by `limit`, asked for by `call`.
pub(crate) fn refuse_frames(plugin: &ChannelPlugin, limit: &'static str, call: &str, e: String) -> CallError {
    let name = plugin.name();
    crate::limits::hit(name, limit, 1);
    plugin.sandbox().auditor().record(
        crate::audit::Event::new(crate::audit::Kind::Limit, crate::audit::Verdict::Deny)
            .target(format!("{call} frames"))
            .policy(format!("limits.{limit}"))
            .detail(format!("frames from {call} not written: {e}")),
    );
    CallError::Channel(ChannelError::Fatal(format!("the frames to write were refused: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_are_capped() {
        let first = retry_delay(0);
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(2), "{first:?}");
        assert!(retry_delay(6) >= Duration::from_secs(16));
        assert!(retry_delay(1000) <= Duration::from_secs(600));
    }

    #[test]
    fn polls_only_back_to_back_while_something_new_arrives() {
        let second = Duration::from_secs(1);
        assert_eq!(idle_delay(None, 3, second, Duration::ZERO), Duration::ZERO);
        assert_eq!(idle_delay(None, 0, second, Duration::ZERO), second);
        // A plugin asking for no pause but bringing nothing new still waits.
        assert_eq!(idle_delay(Some(0), 0, second, Duration::ZERO), MIN_IDLE_POLL);
        // ...unless the poll itself took that long (a long poll).
        assert_eq!(idle_delay(Some(0), 0, second, Duration::from_secs(25)), Duration::ZERO);
        assert_eq!(idle_delay(Some(250), 2, second, Duration::ZERO), Duration::from_millis(250));
    }

    #[test]
    fn a_flood_pauses_polling_until_the_budget_recovers() {
        let t0 = Instant::now();
        let mut b = InboundBudget::new(60, 1 << 30);
        let take = |b: &mut InboundBudget, n, t| b.take(n, 0, t).0;
        assert_eq!(take(&mut b, 60, t0), Duration::ZERO, "a burst up to the budget is fine");
        // 30 more: 30 messages in debt at one a second.
        assert_eq!(b.take(30, 0, t0), (Duration::from_secs(30), Some("messages_per_minute")));
        // Ten seconds later, ten were paid back.
        assert_eq!(take(&mut b, 0, t0 + Duration::from_secs(10)), Duration::from_secs(20));
        // After a long quiet spell the bucket is full again, not over-full.
        assert_eq!(take(&mut b, 60, t0 + Duration::from_secs(3600)), Duration::ZERO);
        assert_eq!(take(&mut b, 1, t0 + Duration::from_secs(3600)), Duration::from_secs(1));
    }

    #[test]
    fn a_flood_of_bytes_pauses_polling_too() {
        let t0 = Instant::now();
        let mut b = InboundBudget::new(1000, 6000);
        assert_eq!(b.take(1, 6000, t0), (Duration::ZERO, None));
        // 3000 bytes in debt at 100 bytes a second: 30 s, though the message count is fine.
        assert_eq!(b.take(1, 3000, t0), (Duration::from_secs(30), Some("bytes_per_minute")));
    }

    fn sandbox(limits: crate::policy::Limits, secret: Option<&str>) -> PluginSandbox {
        let policy =
            crate::policy::Policy::parse("[plugins.chan-test]\n", std::path::Path::new("k"), std::path::Path::new("/")).expect("valid");
        let mut grants = policy.plugins["chan-test"].clone();
        grants.limits = limits;
        let secrets = secret.map(|v| ("k".to_string(), v.to_string())).into_iter().collect();
        PluginSandbox::new(Arc::new(grants), secrets, crate::audit::Auditor::log_only("chan-test"))
    }

    #[test]
    fn messages_are_bounded_field_by_field() {
        use crate::host::latest::Attachment;
        let secret = "S3CRET-VALUE-0123456789";
        let sb = sandbox(crate::policy::Limits { max_message_bytes: 1024, ..Default::default() }, Some(secret));
        let mut tally = Tally::default();
        // Within the limits: moved as it is, secrets redacted.
        let m = crate::admit::test_message("1", "c", "s", &format!("hi {secret}"));
        let r = to_inbound(m, &sb, &mut tally).expect("stored");
        assert_eq!((r.text.as_str(), tally.is_empty()), ("hi [REDACTED:k]", true));
        // A huge text is cut with a marker (never leaving part of a secret); raw
        // over the limit is dropped; so are surplus and oversized attachments.
        let mut m = crate::admit::test_message("2", "c", "s", &format!("{}{secret}{}", "é".repeat(505), "x".repeat(50 << 20)));
        m.raw = Some("r".repeat(2000));
        let att = |url: usize| Attachment { name: "a".into(), mime_type: "text/plain".into(), url: Some("u".repeat(url)), size: None };
        m.attachments = (0..100).map(|i| att(if i == 1 { MAX_ATTACHMENT_FIELD + 1 } else { 10 })).collect();
        let r = to_inbound(m, &sb, &mut tally).expect("stored, cut");
        assert!(r.text.len() <= 1024 && r.text.ends_with(MESSAGE_CUT), "{}", r.text.len());
        assert!(!r.text.contains(&secret[..6]), "{}", r.text);
        assert_eq!(r.raw, None);
        let atts: Vec<serde_json::Value> = serde_json::from_str(&r.attachments_json).expect("json");
        assert_eq!(atts.len(), MAX_ATTACHMENTS - 1);
        assert!(tally.cut == 1 && tally.largest > 50 << 20, "{tally:?}");
        // An over-long id (or conversation, sender, thread) refuses the message.
        let m = crate::admit::test_message(&"i".repeat(crate::limits::MAX_ID + 1), "c", "s", "hi");
        assert!(to_inbound(m, &sb, &mut tally).is_none());
        assert_eq!((tally.bad_ids, tally.bad_id), (1, Some(("id", crate::limits::MAX_ID + 1))));
    }

    #[test]
    fn a_poll_is_bounded_in_bytes() {
        let sb = sandbox(crate::policy::Limits { max_message_bytes: 1024, max_poll_bytes: 3000, ..Default::default() }, None);
        let messages = (0..10).map(|i| crate::admit::test_message(&i.to_string(), "c", "s", &"x".repeat(1000))).collect();
        let (rows, bytes) = admit(messages, &sb, "poll");
        assert_eq!(rows.len(), 2, "two fit in 3000 bytes");
        assert_eq!(bytes, rows.iter().map(inbound_bytes).sum::<usize>());
        assert!(bytes <= 3000);
        assert_eq!(crate::limits::hits("chan-test").get("max_poll_bytes"), Some(&8));
    }

    #[test]
    fn rate_limit_is_honoured() {
        let mut b = backoff();
        let d = error_delay(&CallError::Channel(ChannelError::RateLimited(7000)), &mut b);
        assert!(d >= Duration::from_millis(7000));
        let d = error_delay(&CallError::Channel(ChannelError::AuthFailed("no".into())), &mut b);
        assert!(d >= Duration::from_secs(30));
    }
}
