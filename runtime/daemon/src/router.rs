//! The session router: inbox rows → per-session queues → agent turns →
//! outbox, and the [`AgentHandle`] through which interactive clients
//! (`kata chat`, `kata send` via the control socket) run turns too.
//!
//! Ordering and concurrency:
//! - every row goes through [`crate::senders::gate`] first, in inbox order;
//!   only allowed rows reach a session queue;
//! - a session (see [`crate::session::session_key`]) runs one turn at a time,
//!   in arrival order: one worker per session drains its FIFO queue, and
//!   every turn — daemon or interactive — holds the session's turn lock;
//! - at most `[agent] max_concurrent_sessions` daemon-triggered turns run at
//!   once (a semaphore permit while the agent works on a turn; storing its
//!   result does not hold one); interactive turns do not take one.
//!
//! Exactly once: a row's reply is queued, the row marked done and the turn
//! appended to the history in one transaction ([`Db::complete_turn_batched`]:
//! the batch writer may commit several sessions' turns together, and a turn
//! counts as done only once its transaction is committed). A
//! crash before it reruns the turn after restart (tool calls of that turn may
//! then run again); a crash after it changes nothing. A turn that fails (the
//! backend is down past its retries) leaves the row unanswered and is retried
//! with backoff, holding its session's later messages back so order holds.
//!
//! Around a turn for a person's message the channel shows what happens
//! ([`crate::actions`], on channels that list the feature; best effort,
//! never holding the message up): the `[agent] ack_reaction` as the row is
//! queued, typing while the turn runs, and with a streaming backend the reply
//! as a draft. The draft is brought up to date before the reply is queued,
//! and the reply's outbox row carries the draft's message id, so the reply
//! itself is still delivered exactly as durably as any (as an edit of the
//! draft); files the turn's tools handed back go in the same row.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{Notify, Semaphore, watch};

use crate::agent::{Agent, Settings, TurnInput, TurnOutput};
use crate::hooks::{Hooks, Received, Sending};
use crate::policy::{PluginGrants, ToolMode};
use crate::session::{Entry, HistoryItem, Session, compaction_cut, session_key};
use crate::store::{Db, InboxRow, Reply, now_ms};
use crate::tools::{CallContext, ToolBox};

/// First wait before a failed turn is retried; doubles up to [`MAX_RETRY`].
const RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// One session's queue and turn lock.
#[derive(Default)]
struct Slot {
    turn: tokio::sync::Mutex<()>,
    queue: Mutex<SlotQueue>,
}

#[derive(Default)]
struct SlotQueue {
    rows: VecDeque<InboxRow>,
    /// A worker is draining `rows`.
    running: bool,
}

struct Inner {
    db: Db,
    agent: Agent,
    tools: Arc<ToolBox>,
    hooks: Arc<Hooks>,
    /// Inbox rows held at `message-received` when this router started: the
    /// hold is released when the hooks pass or drop them now.
    held_received: Mutex<std::collections::HashSet<i64>>,
    settings: Settings,
    grants: BTreeMap<String, Arc<PluginGrants>>,
    cap: Semaphore,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    outbox_ready: Mutex<BTreeMap<String, Arc<Notify>>>,
    /// The channels' reactions, typing indicators and drafts.
    actions: std::sync::RwLock<crate::actions::Actions>,
    stop: watch::Sender<bool>,
}

/// What an interactive turn (`kata chat`) answers: the reply's text, and
/// the files the agent's tools handed back for it.
#[derive(Debug, Default)]
pub struct ChatReply {
    /// The reply (None: the agent said nothing).
    pub text: Option<String>,
    /// Files for the reply, in order.
    pub files: Vec<crate::store::OutFile>,
}

/// The agent side of the daemon: routes inbox rows to sessions and runs
/// turns. Cheap to clone; every clone is the same router.
#[derive(Clone)]
pub struct AgentHandle {
    inner: Arc<Inner>,
}

impl AgentHandle {
    /// A router over `db`. `grants` are the channel plugins' (for the sender
    /// gate and their `tools_mode`); `hooks` see each message before its
    /// session does and each reply before the outbox.
    pub fn new(
        db: Db,
        settings: Settings,
        agent: Agent,
        tools: Arc<ToolBox>,
        grants: BTreeMap<String, Arc<PluginGrants>>,
        hooks: Arc<Hooks>,
    ) -> Self {
        let cap = Semaphore::new(settings.max_concurrent_sessions);
        let (stop, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                db,
                agent,
                tools,
                hooks,
                held_received: Mutex::new(Default::default()),
                settings,
                grants,
                cap,
                slots: Mutex::new(HashMap::new()),
                outbox_ready: Mutex::new(BTreeMap::new()),
                actions: Default::default(),
                stop,
            }),
        }
    }

    /// Run one turn for an interactive client (`kata chat`, `kata send`):
    /// `text` from the person in session `session_key` (any stable string,
    /// e.g. `chat/default`), under the workspace's `[tools] mode`. It waits
    /// for the session's earlier turns (one turn at a time per session) but
    /// not for the daemon's concurrency cap. Returns the agent's reply (None:
    /// it had nothing to say). The turn is stored in the session's history.
    pub async fn interactive_turn(&self, session_key: &str, text: &str) -> Result<ChatReply> {
        let slot = self.slot(session_key);
        let _turn = slot.turn.lock().await;
        let (session, user, out) = self.run_turn(session_key, None, text, "you", "chat", None).await?;
        self.inner.db.record_turn(session.id, &user, &out.entries)?;
        if let Err(e) = self.inner.db.add_usage(session.id, out.usage) {
            tracing::warn!(session = %session_key, "cannot record the turn's token usage: {e:#}");
        }
        Ok(ChatReply { text: out.reply, files: out.attachments })
    }

    /// The newest `n` history entries of the current session of
    /// `session_key`, oldest first (to show context when a client reconnects).
    pub fn recent_history(&self, session_key: &str, n: usize) -> Result<Vec<HistoryItem>> {
        self.inner.db.recent_history(session_key, n)
    }

    /// One tool call for `kata tool call`: `plugin.tool` with `args` under
    /// the workspace's `[tools] mode` (as an interactive turn's), through the
    /// same toolbox the agent uses: the same decision, grants, limits,
    /// approvals and audit row.
    pub async fn call_tool(&self, plugin: &str, tool: &str, args: &str) -> crate::tools::Outcome {
        let (mode, mode_source) = self.mode_for(None);
        let ctx = CallContext::new("cli/tool-call", mode, mode_source);
        self.inner.tools.run(&ctx, plugin, tool, args).await
    }

    /// The backend's name as kata.toml writes it (`echo`, `openai`, `command`).
    pub fn backend_name(&self) -> &'static str {
        match self.inner.settings.backend {
            crate::policy::AgentBackend::Echo => "echo",
            crate::policy::AgentBackend::Openai => "openai",
            crate::policy::AgentBackend::Command => "command",
        }
    }

    /// The hooks on the message path, in `[hooks] order`.
    pub fn hooks(&self) -> Vec<String> {
        self.inner.hooks.names().into_iter().map(String::from).collect()
    }

    /// The tools the agent can call (listing them on first use).
    pub async fn tools(&self) -> Vec<crate::tools::ToolEntry> {
        self.inner.tools.entries().await.to_vec()
    }

    /// Use these channel actions (acknowledgement reactions, typing, drafts)
    /// from now on; without, the agent does none.
    pub fn set_actions(&self, actions: crate::actions::Actions) {
        *self.inner.actions.write().unwrap_or_else(|p| p.into_inner()) = actions;
    }

    fn actions(&self) -> crate::actions::Actions {
        self.inner.actions.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key.to_string()).or_default().clone()
    }

    /// Move inbox rows to the agent until `shutdown` says stop. `inbox_ready`
    /// wakes it when a channel stored messages; `outbox_ready` wakes each
    /// channel's sender when a reply is queued.
    pub async fn run(self, inbox_ready: Arc<Notify>, outbox_ready: BTreeMap<String, Arc<Notify>>, mut shutdown: watch::Receiver<bool>) {
        self.inner.tools.set_outbox_ready(outbox_ready.clone());
        *self.inner.outbox_ready.lock().unwrap_or_else(|p| p.into_inner()) = outbox_ready;
        match self.inner.db.approvals_expire_all() {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} tool call(s) left waiting for approval by an earlier run were expired"),
            Err(e) => tracing::error!("cannot expire old approvals: {e:#}"),
        }
        self.release_held().await;
        // List the tools now, so problems show at start.
        let n = self.inner.tools.entries().await.len();
        tracing::info!(tools = n, mode = self.inner.settings.tools_mode.as_str(), "agent ready");
        // Session workers live in this set: when the daemon stops or
        // reloads, none outlives the router that dispatched its rows.
        let mut workers = tokio::task::JoinSet::new();
        let mut last = 0i64;
        loop {
            while workers.try_join_next().is_some() {}
            if *shutdown.borrow() {
                break;
            }
            let rows = match self.inner.db.pending_inbox_after(last, 100) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("cannot read the inbox: {e:#}");
                    Vec::new()
                }
            };
            let mut stalled = false;
            for row in &rows {
                match self.dispatch(row.clone(), &mut workers) {
                    Ok(()) => last = row.id,
                    Err(e) => {
                        // Left for the next round (the id is not passed).
                        tracing::error!(inbox = row.id, "cannot check the sender: {e:#}");
                        stalled = true;
                        break;
                    }
                }
            }
            if rows.is_empty() || stalled {
                tokio::select! {
                    _ = inbox_ready.notified() => {}
                    // A safety net: pick up rows even if a notification was missed.
                    _ = tokio::time::sleep(Duration::from_secs(if stalled { 1 } else { 5 })) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
        let _ = self.inner.stop.send(true);
        // Let turns in flight finish (the daemon bounds this wait; if it
        // gives up, dropping the set aborts them and their rows stay new).
        while workers.join_next().await.is_some() {}
    }

    /// Gate a row and queue it on its session (or answer it now, for pairing
    /// and for an answer to an approval request).
    fn dispatch(&self, row: InboxRow, workers: &mut tokio::task::JoinSet<()>) -> Result<()> {
        let grants = self.inner.grants.get(&row.plugin).map(|g| &**g);
        // An answer to a waiting approval never reaches a session: the turn
        // that asked holds its session until it is answered.
        if let Some(to) = &self.inner.settings.approvals_to
            && let Some(reply) = crate::permissions::chat_answer(&self.inner.db, to, &self.inner.settings.approvers, grants, &row)?
        {
            self.inner.db.complete_inbox(row.id, Some(&reply))?;
            self.notify(&row.plugin);
            return Ok(());
        }
        let reply = match crate::senders::gate(&self.inner.db, grants, &row)? {
            crate::senders::Gate::Allowed => {
                // "Seen": a person's message is queued (never waits for this).
                if row.origin.is_none()
                    && let Some(emoji) = &self.inner.settings.ack_reaction
                {
                    self.actions().react(&row.plugin, &row.msg.conversation, &row.msg.channel_msg_id, emoji);
                }
                let key = session_key(&row.plugin, &row.msg.conversation, row.msg.thread.as_deref());
                let slot = self.slot(&key);
                let start = {
                    let mut q = slot.queue.lock().unwrap_or_else(|p| p.into_inner());
                    q.rows.push_back(row);
                    !std::mem::replace(&mut q.running, true)
                };
                if start {
                    workers.spawn(self.clone().worker(key, slot));
                }
                return Ok(());
            }
            crate::senders::Gate::Pair(reply) => Some(reply),
            crate::senders::Gate::Held => None,
        };
        self.inner.db.complete_inbox(row.id, reply.as_ref())?;
        tracing::info!(plugin = %row.plugin, inbox = row.id, from = %row.msg.sender, replied = reply.is_some(), "handled");
        self.notify(&row.plugin);
        Ok(())
    }

    fn notify(&self, plugin: &str) {
        if let Some(n) = self.inner.outbox_ready.lock().unwrap_or_else(|p| p.into_inner()).get(plugin) {
            n.notify_one();
        }
    }

    /// Drain one session's queue, one turn at a time.
    async fn worker(self, key: String, slot: Arc<Slot>) {
        let mut stop = self.inner.stop.subscribe();
        loop {
            let row = {
                let mut q = slot.queue.lock().unwrap_or_else(|p| p.into_inner());
                match q.rows.pop_front() {
                    Some(r) => r,
                    None => {
                        q.running = false;
                        break;
                    }
                }
            };
            let row = match self.inner.hooks.received(&row).await {
                Received::Pass(msg) => {
                    self.released(row.id, "passed");
                    InboxRow { msg: *msg, ..row }
                }
                Received::Dropped => {
                    self.released(row.id, "dropped");
                    if let Err(e) = self.inner.db.complete_inbox(row.id, None) {
                        tracing::error!(inbox = row.id, "cannot mark a dropped message done: {e:#}");
                    }
                    continue;
                }
                // Left new in the inbox (recorded in `held`): the next router
                // (a reload or restart) hands it to the hooks again.
                Received::Held => continue,
            };
            let mut wait = RETRY;
            loop {
                if *stop.borrow() {
                    return;
                }
                let result = {
                    let _turn = slot.turn.lock().await;
                    if *stop.borrow() {
                        return;
                    }
                    self.daemon_turn(&key, &row).await
                };
                match result {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(inbox = row.id, session = %key, "the turn failed: {e:#}; retrying in {wait:?}");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop.changed() => return,
                        }
                        wait = (wait * 2).min(MAX_RETRY);
                    }
                }
            }
        }
        self.prune(&key, &slot);
    }

    /// Forget an idle session's slot, unless someone else holds it.
    fn prune(&self, key: &str, slot: &Arc<Slot>) {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        let idle = {
            let q = slot.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.rows.is_empty() && !q.running
        };
        // The map and this worker hold the only references: no turn waits.
        if idle && Arc::strong_count(slot) == 2 {
            slots.remove(key);
        }
    }

    async fn daemon_turn(&self, key: &str, row: &InboxRow) -> Result<()> {
        let sender = row.msg.sender_name.as_deref().unwrap_or(&row.msg.sender);
        // A person's message on a channel: the channel shows that the agent
        // is at work (typing, until the reply is stored) and, with a
        // streaming backend, the reply as it grows (a draft).
        let (actions, person) = (self.actions(), row.origin.is_none());
        let _typing = match person && self.inner.settings.typing {
            true => actions.typing(&row.plugin, &row.msg.conversation, row.msg.thread.as_deref()).await,
            false => None,
        };
        let (draft_text, draft) = match person && self.drafts(&actions, &row.plugin).await {
            true => {
                let key = format!("draft-{}", row.id);
                let (tx, d) =
                    actions.draft(&row.plugin, &row.msg.conversation, row.msg.thread.as_deref(), Some(&row.msg.channel_msg_id), &key);
                (Some(tx), Some(d))
            }
            false => (None, None),
        };
        // The cap bounds the agent's work; storing the result does not hold
        // a permit (the session's turn lock keeps its order).
        let turn = {
            let _permit = self.inner.cap.acquire().await?;
            self.run_turn(key, Some(&row.plugin), &row.msg.text, sender, &row.plugin, draft_text).await
        };
        // Up to date before the reply is queued: no draft edit comes after the reply's own.
        let draft_id = match draft {
            Some(d) => d.finish().await,
            None => None,
        };
        let (session, user, mut out) = turn?;
        let grants = self.inner.grants.get(&row.plugin).map(|g| &**g);
        // Where the answer goes: the conversation, or for a service's
        // message its `deliver_to` (see senders::addressed).
        let mut reply = out
            .reply
            .as_ref()
            .map(|text| Reply {
                plugin: row.plugin.clone(),
                conversation: row.msg.conversation.clone(),
                thread: row.msg.thread.clone(),
                reply_to: Some(row.msg.channel_msg_id.clone()),
                text: text.clone(),
                rich: crate::store::Rich { attachments: std::mem::take(&mut out.attachments), actions: Vec::new(), draft_id },
            })
            .and_then(|r| crate::senders::addressed(r, row, grants))
            .map(|r| self.fit_files(r));
        // The hooks at message-sending, before the reply is queued. A held
        // reply is kept as the agent wrote it (the hooks run again on
        // release), with its turn completed: the agent never answers twice.
        if let Some(r) = reply.take() {
            match self.inner.hooks.sending(r.clone(), row.id).await {
                Sending::Send(r) => reply = Some(r),
                Sending::Vetoed => {}
                Sending::Held(hook, reason) => {
                    self.inner.db.complete_turn_held_batched(row.id, r, hook, reason, Some((session.id, user, out.entries))).await?;
                    if let Err(e) = self.inner.db.add_usage(session.id, out.usage) {
                        tracing::warn!(session = %key, "cannot record the turn's token usage: {e:#}");
                    }
                    tracing::warn!(plugin = %row.plugin, inbox = row.id, session = %key, "handled; the reply is held by a hook");
                    return Ok(());
                }
            }
        }
        self.inner.db.complete_turn_batched(row.id, reply.clone(), Some((session.id, user, out.entries))).await?;
        // Counted after the turn is stored: a crash in between loses a count, never a reply.
        if let Err(e) = self.inner.db.add_usage(session.id, out.usage) {
            tracing::warn!(session = %key, "cannot record the turn's token usage: {e:#}");
        }
        tracing::info!(plugin = %row.plugin, inbox = row.id, session = %key, replied = reply.is_some(), "handled");
        if let Some(r) = &reply {
            self.notify(&r.plugin);
        }
        Ok(())
    }

    /// Note that the hooks passed or dropped inbox row `id`: if it was held
    /// when this router started, the hold is released.
    fn released(&self, id: i64, outcome: &str) {
        let was_held = self.inner.held_received.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        if was_held && let Err(e) = self.inner.db.release_received(id, outcome) {
            tracing::error!(inbox = id, "cannot release a held message: {e:#}");
        }
    }

    /// At start: note the held messages (their inbox rows come round again
    /// with the rest), and hand each held reply to the hooks again — passed
    /// or rewritten it is queued, vetoed it is dropped, failing again it
    /// stays held.
    async fn release_held(&self) {
        let held = match self.inner.db.held() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("cannot read the held messages: {e:#}");
                return;
            }
        };
        for h in held {
            if h.point == kata_store::held::RECEIVED {
                self.inner.held_received.lock().unwrap_or_else(|p| p.into_inner()).insert(h.inbox_id);
                continue;
            }
            let reply = match self.inner.db.held_reply(&h) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(held = h.id, "cannot read a held reply back: {e:#}");
                    continue;
                }
            };
            let (queued, outcome) = match self.inner.hooks.sending(reply, h.inbox_id).await {
                Sending::Send(r) => (Some(r), "passed"),
                Sending::Vetoed => (None, "vetoed"),
                Sending::Held(..) => continue,
            };
            match self.inner.db.release_reply(&h, queued.as_ref(), outcome) {
                Ok(()) => {
                    tracing::info!(held = h.id, plugin = %h.plugin, inbox = h.inbox_id, "a held reply was released ({outcome})");
                    if queued.is_some() {
                        self.notify(&h.plugin);
                    }
                }
                Err(e) => tracing::error!(held = h.id, "cannot release a held reply: {e:#}"),
            }
        }
    }

    /// The mode a turn from `origin` (a channel plugin, None: interactive)
    /// runs under, and the kata.toml line that sets it.
    fn mode_for(&self, origin: Option<&str>) -> (ToolMode, String) {
        if let Some(m) = origin.and_then(|p| self.inner.grants.get(p)).and_then(|g| g.tools_mode) {
            let p = origin.unwrap_or_default();
            return (m, format!("[plugins.{p}] tools_mode = \"{}\"", m.as_str()));
        }
        let m = self.inner.settings.tools_mode;
        (m, format!("[tools] mode = \"{}\"", m.as_str()))
    }

    /// Whether a turn answering a message on `plugin` streams its reply into
    /// a draft: `[agent] drafts` (default on), the `openai` backend with
    /// `stream`, a channel that lists `edit`, and no hook at
    /// `message-sending` (which must see a reply before anyone does).
    async fn drafts(&self, actions: &crate::actions::Actions, plugin: &str) -> bool {
        let s = &self.inner.settings;
        s.drafts
            && s.stream
            && matches!(self.inner.agent, Agent::OpenAi(_))
            && !self.inner.hooks.at_sending().await
            && actions.has(plugin, crate::host::latest::Feature::Edit).await
    }

    /// `reply` with the files its channel can take: one over the channel's
    /// `limits.max_message` (or past [`crate::limits::MAX_ATTACHMENTS`]) is
    /// left out, with a line in the text saying so.
    fn fit_files(&self, mut reply: Reply) -> Reply {
        if reply.rich.attachments.is_empty() {
            return reply;
        }
        let max = self.inner.grants.get(&reply.plugin).map_or(usize::MAX, |g| g.limits.max_message_bytes);
        let mut notes = Vec::new();
        let mut kept = Vec::new();
        for f in std::mem::take(&mut reply.rich.attachments) {
            if f.data.len() > max || kept.len() >= crate::limits::MAX_ATTACHMENTS {
                notes.push(format!(
                    "[file not sent: {} ({} bytes) is over {}'s limits.max_message ({max} bytes)]",
                    f.name,
                    f.data.len(),
                    reply.plugin
                ));
            } else {
                kept.push(f);
            }
        }
        reply.rich.attachments = kept;
        if !notes.is_empty() {
            tracing::warn!(plugin = %reply.plugin, "{}", notes.join(" "));
            reply.text = format!("{}\n\n{}", reply.text.trim_end(), notes.join("\n"));
        }
        reply
    }

    /// Open the session, compact its history if it is over budget, and ask
    /// the agent (`draft`: where a streaming backend shows the reply as it
    /// grows). Nothing is stored about the turn itself; the caller stores it.
    async fn run_turn(
        &self,
        key: &str,
        origin: Option<&str>,
        text: &str,
        sender: &str,
        channel: &str,
        draft: Option<watch::Sender<String>>,
    ) -> Result<(Session, Entry, TurnOutput)> {
        let s = &self.inner.settings;
        let db = &self.inner.db;
        let mut session = db.session_for(key, origin.unwrap_or("interactive"), s.idle_timeout, now_ms())?;
        // An agent that does not read the history (echo) needs neither the
        // history nor its compaction.
        let mut history = if self.inner.agent.uses_history() { db.session_history(session.id)? } else { Vec::new() };
        if let Some(cut) = compaction_cut(&history, s.history_budget) {
            let old: Vec<Entry> = history.iter().filter(|h| h.turn <= cut).map(|h| h.entry.clone()).collect();
            let summary = if self.inner.agent.can_summarize() {
                match self.inner.agent.summarize(session.summary.as_deref(), &old).await {
                    Ok((sum, usage)) => {
                        db.add_usage(session.id, usage)?;
                        Some(sum)
                    }
                    Err(e) => {
                        tracing::warn!(session = %key, "cannot summarise the history ({e:#}); dropping the oldest turns instead");
                        None
                    }
                }
            } else {
                None
            };
            db.compact_session(session.id, cut, summary.as_deref())?;
            tracing::info!(session = %key, turns_through = cut, summarised = summary.is_some(), "history compacted");
            if summary.is_some() {
                session.summary = summary;
            }
            history.retain(|h| h.turn > cut);
        }
        let (mode, mode_source) = self.mode_for(origin);
        let input = TurnInput {
            text: text.to_string(),
            sender: sender.to_string(),
            channel: channel.to_string(),
            summary: session.summary.clone(),
            history: history.into_iter().map(|h| h.entry).collect(),
            call: CallContext::new(key, mode, mode_source),
            draft,
        };
        let out = self.inner.agent.turn(input).await?;
        Ok((session, Entry::user(text), out))
    }
}

/// Build the agent of a workspace: settings from `[agent]` and `[tools]`, the
/// tools of `tools`, the grants of the plugins whose messages it answers
/// (channels and services) by name, and the hooks on the message path.
pub fn load(
    policy: &crate::policy::Policy,
    ws: &crate::workspace::Workspace,
    db: &Db,
    tools: Vec<Arc<crate::tools::ToolsPlugin>>,
    grants: BTreeMap<String, Arc<PluginGrants>>,
    hooks: Arc<Hooks>,
) -> Result<AgentHandle> {
    let settings = Settings::resolve(&policy.file, ws.root())
        .map_err(|((table, key), m)| anyhow::anyhow!("[{table}] {key} in {}: {m}", policy.path.display()))?;
    if let Some(to) = &settings.approvals_to
        && !grants.contains_key(&to.plugin)
    {
        anyhow::bail!(
            "[tools] approvals_to = \"{to}\" in {}: {} is not a channel plugin running in this workspace (is it installed and enabled?); \
             approval requests need a channel to go out through",
            policy.path.display(),
            to.plugin
        );
    }
    let toolbox = Arc::new(
        ToolBox::new(tools, settings.tools_allow.clone(), settings.ask_timeout, db.clone())
            .with_approvals_to(settings.approvals_to.clone())
            .with_hooks(hooks.clone()),
    );
    let agent = Agent::new(&settings, ws.root(), toolbox.clone())?;
    Ok(AgentHandle::new(db.clone(), settings, agent, toolbox, grants, hooks))
}
