//! What a channel does besides delivering replies (WIT 0.1.3 `act`): the
//! acknowledgement reaction on a message queued for the agent, the typing
//! indicator while a turn runs, and a streamed reply's draft (its first
//! message and its edits). Each is a nicety, so none may delay or lose a
//! message: requests go to one instance per channel through a short queue,
//! a full queue drops them, and a failure is a log line, never an error for
//! the person.
//!
//! Only channels whose `describe` lists the feature get the action (see
//! [`ChannelInstance::act`]); components older than 0.1.3 list none and get
//! no instance here at all.
//!
//! Drafts are not durable on purpose: the reply itself still goes through
//! the outbox (as an edit of the draft, see [`crate::channel`]), so a crash
//! mid-draft leaves the partial draft on the channel and, once the turn has
//! run again, the full reply.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::host::latest::{self, ChannelAction, Edit, Feature, OutboundMessage, Target};
use crate::plugin::{CallError, ChannelInstance, ChannelPlugin};

/// Requests waiting for a channel's action instance; more are dropped.
const QUEUE: usize = 64;
/// How often the typing indicator is renewed while a turn runs (Telegram's
/// lasts five seconds).
pub const TYPING_EVERY: Duration = Duration::from_secs(4);
/// Most typing renewals for one turn (about ten minutes): a turn stuck
/// longer shows no indicator.
const TYPING_MAX: u32 = 150;
/// A draft is edited at most this often.
pub const DRAFT_EVERY: Duration = Duration::from_secs(1);
/// What follows a draft's text while the reply still grows.
pub const DRAFT_MARK: &str = " …";
/// After the instance cannot start, requests are dropped for this long.
const START_HOLD: Duration = Duration::from_secs(30);
/// Longest wait for a draft's first message or an edit of it.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Longest a turn waits to learn a channel's features (its action instance
/// starting, once); past it, that turn goes without typing and drafts.
const FEATURES_WAIT: Duration = Duration::from_secs(10);

enum Request {
    /// Answer the channel's features.
    Features(oneshot::Sender<Vec<Feature>>),
    /// Do it; `what` names it in the log; `done` hears when it was done
    /// (true) or failed (false).
    Act(ChannelAction, &'static str, Option<oneshot::Sender<bool>>),
    /// Send a draft's first message; answer its message id.
    Send(Box<OutboundMessage>, oneshot::Sender<Option<String>>),
}

/// One channel's action queue and its features, once known.
struct Channel {
    queue: mpsc::Sender<Request>,
    features: Arc<OnceLock<Vec<Feature>>>,
}

/// The action queues of the running channels, by plugin name. Cheap to
/// clone; the default has none (every action is then a no-op).
#[derive(Clone, Default)]
pub struct Actions {
    channels: Arc<BTreeMap<String, Channel>>,
}

impl Actions {
    /// A worker per channel plugin that may list features (WIT 0.1.3 or
    /// later), spawned on `tasks`; each stops at `shutdown`.
    /// Once a worker's instance has said what its channel lists, `health`
    /// knows it too (`kata status`).
    pub fn start(
        plugins: &[Arc<ChannelPlugin>],
        health: &Arc<crate::health::Health>,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: &watch::Receiver<bool>,
    ) -> Self {
        let mut channels = BTreeMap::new();
        for p in plugins {
            if p.info.export_version("channel") != Some(latest::VERSION) {
                continue;
            }
            let (queue, rx) = mpsc::channel(QUEUE);
            let features = Arc::new(OnceLock::new());
            tasks.spawn(worker(p.clone(), rx, features.clone(), health.clone(), shutdown.clone()));
            channels.insert(p.name().to_string(), Channel { queue, features });
        }
        Self { channels: Arc::new(channels) }
    }

    /// The features `plugin` lists (none for an unknown plugin, an older
    /// component, or one whose instance cannot start now or within
    /// [`FEATURES_WAIT`]: a channel slow to start holds a turn up no longer).
    pub async fn features(&self, plugin: &str) -> Vec<Feature> {
        let Some(c) = self.channels.get(plugin) else { return Vec::new() };
        if let Some(f) = c.features.get() {
            return f.clone();
        }
        let (tx, rx) = oneshot::channel();
        if c.queue.try_send(Request::Features(tx)).is_err() {
            return Vec::new();
        }
        tokio::time::timeout(FEATURES_WAIT, rx).await.ok().and_then(Result::ok).unwrap_or_default()
    }

    /// Whether `plugin` lists `feature`.
    pub async fn has(&self, plugin: &str, feature: Feature) -> bool {
        self.features(plugin).await.contains(&feature)
    }

    /// Queue `action` on `plugin` without waiting for it (dropped when the
    /// queue is full); `what` names it in the log.
    pub fn act(&self, plugin: &str, action: ChannelAction, what: &'static str) {
        if let Some(c) = self.channels.get(plugin)
            && c.queue.try_send(Request::Act(action, what, None)).is_err()
        {
            tracing::debug!(plugin = %plugin, "the action queue is full: {what} dropped");
        }
    }

    /// Put `emoji` on message `message_id` in `conversation` (nothing is
    /// queued once the channel is known not to list `reactions`).
    pub fn react(&self, plugin: &str, conversation: &str, message_id: &str, emoji: &str) {
        if self.channels.get(plugin).and_then(|c| c.features.get()).is_some_and(|f| !f.contains(&Feature::Reactions)) {
            return;
        }
        let r = latest::Reaction { conversation: conversation.into(), message_id: message_id.into(), emoji: emoji.into() };
        self.act(plugin, ChannelAction::React(r), "reaction");
    }

    /// Show the typing indicator in `conversation` (and `thread`) now and
    /// every [`TYPING_EVERY`] until the guard is dropped, when `plugin`
    /// lists `typing`. The turn never waits for it: while the channel's
    /// features are still being learnt (its action instance starting), the
    /// guard's task waits, not the caller.
    pub async fn typing(&self, plugin: &str, conversation: &str, thread: Option<&str>) -> Option<Repeating> {
        let c = self.channels.get(plugin)?;
        if c.features.get().is_some_and(|f| !f.contains(&Feature::Typing)) {
            return None;
        }
        let (me, plugin) = (self.clone(), plugin.to_string());
        let target = Target { conversation: conversation.into(), thread: thread.map(str::to_string) };
        Some(Repeating(tokio::spawn(async move {
            if !me.has(&plugin, Feature::Typing).await {
                return;
            }
            for _ in 0..TYPING_MAX {
                me.act(&plugin, ChannelAction::Typing(target.clone()), "typing");
                tokio::time::sleep(TYPING_EVERY).await;
            }
        })))
    }

    /// Send `msg` as a draft's first message; its message id, or None
    /// when it could not be sent.
    async fn send(&self, plugin: &str, msg: OutboundMessage) -> Option<String> {
        let c = self.channels.get(plugin)?;
        let (tx, rx) = oneshot::channel();
        c.queue.try_send(Request::Send(Box::new(msg), tx)).ok()?;
        tokio::time::timeout(ANSWER_WAIT, rx).await.ok().and_then(Result::ok).flatten()
    }

    /// Show a reply as it grows: the text sent through the returned sender
    /// (the whole reply so far) appears in `conversation` as one message,
    /// sent once there is some text and edited at most every
    /// [`DRAFT_EVERY`], with [`DRAFT_MARK`] after it. Drop the sender when
    /// the reply is complete; [`Draft::finish`] then gives the draft's
    /// message id (None: nothing was sent), which the reply is delivered as
    /// an edit of.
    pub fn draft(
        &self,
        plugin: &str,
        conversation: &str,
        thread: Option<&str>,
        reply_to: Option<&str>,
        key: &str,
    ) -> (watch::Sender<String>, Draft) {
        let (tx, rx) = watch::channel(String::new());
        let base = OutboundMessage {
            conversation: conversation.into(),
            thread: thread.map(str::to_string),
            reply_to: reply_to.map(str::to_string),
            text: String::new(),
            idempotency_key: key.into(),
            attachments: Vec::new(),
            actions: Vec::new(),
        };
        let task = tokio::spawn(stream_draft(self.clone(), plugin.to_string(), base, rx));
        (tx, Draft(task))
    }
}

/// A repeating action (the typing indicator), stopped when dropped.
pub struct Repeating(tokio::task::JoinHandle<()>);

impl Drop for Repeating {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A reply being shown as a draft (see [`Actions::draft`]).
pub struct Draft(tokio::task::JoinHandle<Option<String>>);

impl Draft {
    /// Wait until the draft is up to date with the (dropped) sender, and
    /// give its message id, if one was sent.
    pub async fn finish(self) -> Option<String> {
        self.0.await.ok().flatten()
    }
}

/// The draft's loop: send the first text, then edit at most every
/// [`DRAFT_EVERY`] while the text changes; return when the sender is gone.
async fn stream_draft(actions: Actions, plugin: String, base: OutboundMessage, mut rx: watch::Receiver<String>) -> Option<String> {
    let mut id: Option<String> = None;
    let mut shown = String::new();
    loop {
        let text = rx.borrow_and_update().clone();
        if text.trim().is_empty() || text == shown {
            if rx.changed().await.is_err() {
                return id;
            }
            continue;
        }
        let body = format!("{}{DRAFT_MARK}", text.trim_end());
        match &id {
            None => {
                id = actions.send(&plugin, OutboundMessage { text: body, ..base.clone() }).await;
                if id.is_none() {
                    // No draft: the reply goes out as a message of its own.
                    tracing::debug!(plugin = %plugin, "the draft could not be sent; the reply will be one message");
                    return None;
                }
            }
            Some(m) => {
                // Waited for, so no draft edit can land after the reply's
                // own (the router waits for this task before queueing it).
                let edit = Edit { conversation: base.conversation.clone(), message_id: m.clone(), text: body };
                let (done, edited) = oneshot::channel();
                let queued = actions
                    .channels
                    .get(&plugin)
                    .is_some_and(|c| c.queue.try_send(Request::Act(ChannelAction::Edit(edit), "draft edit", Some(done))).is_ok());
                let ok = queued && matches!(tokio::time::timeout(ANSWER_WAIT, edited).await, Ok(Ok(true)));
                if !ok {
                    // (Too long for the channel, say.) The draft stays as it
                    // is; the outbox still makes it the whole reply, or sends that anew.
                    tracing::debug!(plugin = %plugin, "a draft edit failed: the draft is no longer updated");
                    return id;
                }
            }
        }
        shown = text;
        let until = tokio::time::Instant::now() + DRAFT_EVERY;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                r = rx.changed() => if r.is_err() { return id },
            }
        }
    }
}

/// One channel's action instance: started on the first request, kept
/// while it works, dropped after a trap or timeout (the next request starts
/// another).
async fn worker(
    plugin: Arc<ChannelPlugin>,
    mut rx: mpsc::Receiver<Request>,
    features: Arc<OnceLock<Vec<Feature>>>,
    health: Arc<crate::health::Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = plugin.name().to_string();
    let mut inst: Option<ChannelInstance> = None;
    let mut held_until: Option<Instant> = None;
    // Started on the first request (the first message's acknowledgement,
    // usually), not before: a channel no one writes to costs no instance.
    loop {
        let req = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => break },
            _ = shutdown.changed() => break,
        };
        if inst.is_none() {
            if held_until.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            let started = tokio::select! {
                s = start(&plugin) => s,
                _ = shutdown.changed() => break,
            };
            match started {
                Ok((i, f)) => {
                    health.features(&name, f.iter().map(|f| feature_name(*f).to_string()).collect());
                    let _ = features.set(f);
                    inst = Some(i);
                    held_until = None;
                }
                Err(e) => {
                    tracing::warn!(plugin = %name, "cannot start an instance for typing, reactions and drafts: {e}; trying again in {START_HOLD:?}");
                    held_until = Some(Instant::now() + START_HOLD);
                    continue;
                }
            }
        }
        let Some(i) = inst.as_mut() else { continue };
        let failed = match req {
            Request::Features(tx) => {
                let _ = tx.send(features.get().cloned().unwrap_or_default());
                None
            }
            Request::Act(action, what, done) => {
                let r = i.act(&action).await;
                if let Some(d) = done {
                    let _ = d.send(r.is_ok());
                }
                match r {
                    Ok(()) => None,
                    Err(CallError::Channel(latest::ChannelError::Unsupported)) => {
                        tracing::debug!(plugin = %name, "{what}: not supported by the channel");
                        None
                    }
                    Err(e) => Some((what, e)),
                }
            }
            Request::Send(msg, tx) => match i.send(&msg).await {
                Ok(r) if r.frames.is_empty() && !r.id.is_empty() => {
                    let _ = tx.send(Some(r.id));
                    None
                }
                // A draft needs the message's id to edit it, and a plugin
                // that sends over its stream leaves writing to the egress loop.
                Ok(_) => {
                    let _ = tx.send(None);
                    None
                }
                Err(e) => {
                    let _ = tx.send(None);
                    Some(("draft", e))
                }
            },
        };
        if let Some((what, e)) = failed {
            tracing::warn!(plugin = %name, "{what} failed: {e}");
            if e.breaks_instance() {
                inst = None;
            }
        }
    }
    if let Some(mut i) = inst {
        i.disconnect().await;
    }
}

/// A feature as the WIT names it.
pub fn feature_name(f: Feature) -> &'static str {
    match f {
        Feature::Typing => "typing",
        Feature::Edit => "edit",
        Feature::Reactions => "reactions",
        Feature::Buttons => "buttons",
        Feature::Attachments => "attachments",
    }
}

/// Instantiate, connect and ask for the features.
async fn start(plugin: &ChannelPlugin) -> Result<(ChannelInstance, Vec<Feature>), CallError> {
    let mut inst = plugin.instantiate().await?;
    inst.connect().await?;
    let features = inst.features().await?;
    Ok((inst, features))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Actions on one channel `c` listing `edit`, whose requests a fake
    /// channel answers: a send gets `answer` as its message id; every send
    /// and edit is logged.
    fn fake(answer: Option<&str>) -> (Actions, Arc<std::sync::Mutex<Vec<String>>>) {
        let (queue, mut rx) = mpsc::channel(QUEUE);
        let features = Arc::new(OnceLock::new());
        let _ = features.set(vec![Feature::Edit]);
        let actions = Actions { channels: Arc::new(BTreeMap::from([("c".to_string(), Channel { queue, features })])) };
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (l, answer) = (log.clone(), answer.map(str::to_string));
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                match r {
                    Request::Send(m, tx) => {
                        l.lock().expect("log").push(format!("send {} (reply to {:?}, key {})", m.text, m.reply_to, m.idempotency_key));
                        let _ = tx.send(answer.clone());
                    }
                    Request::Act(ChannelAction::Edit(e), _, done) => {
                        l.lock().expect("log").push(format!("edit {} {}", e.message_id, e.text));
                        if let Some(d) = done {
                            // The fake channel takes edits up to 20 bytes.
                            let _ = d.send(e.text.len() <= 20);
                        }
                    }
                    _ => {}
                }
            }
        });
        (actions, log)
    }

    #[tokio::test(start_paused = true)]
    async fn a_draft_is_sent_once_there_is_text_then_edited_at_most_once_a_second() {
        let (actions, log) = fake(Some("m1"));
        let (text, draft) = actions.draft("c", "conv", None, Some("7"), "draft-7");
        let ms = |n| tokio::time::sleep(Duration::from_millis(n));
        text.send_replace("  ".into());
        ms(100).await;
        text.send_replace("Hel".into());
        ms(100).await;
        text.send_replace("Hello".into());
        ms(300).await;
        text.send_replace("Hello wor".into());
        // A second after the first message: one edit with the newest text.
        ms(1000).await;
        text.send_replace("Hello world".into());
        drop(text);
        assert_eq!(draft.finish().await.as_deref(), Some("m1"));
        assert_eq!(
            *log.lock().expect("log"),
            ["send Hel … (reply to Some(\"7\"), key draft-7)", "edit m1 Hello wor …"],
            "the whole reply is the outbox's edit, not the draft's"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_draft_stops_growing_after_an_edit_fails() {
        let (actions, log) = fake(Some("m2"));
        let (text, draft) = actions.draft("c", "conv", None, None, "draft-2");
        for t in ["One", "One two three", "One two three four", "One two three four five"] {
            text.send_replace(t.into());
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        drop(text);
        assert_eq!(draft.finish().await.as_deref(), Some("m2"));
        assert_eq!(
            *log.lock().expect("log"),
            ["send One … (reply to None, key draft-2)", "edit m2 One two three …", "edit m2 One two three four …"],
            "the edit that failed is the last"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_draft_that_cannot_be_sent_leaves_the_reply_to_a_normal_send() {
        let (actions, log) = fake(None);
        let (text, draft) = actions.draft("c", "conv", None, None, "draft-8");
        text.send_replace("Hi".into());
        tokio::time::sleep(Duration::from_millis(100)).await;
        text.send_replace("Hi there".into());
        drop(text);
        assert_eq!(draft.finish().await, None);
        assert_eq!(log.lock().expect("log").len(), 1, "tried once, then no edits: {:?}", log.lock().expect("log"));
        // A channel kata runs no action instance for: no draft at all.
        let (text, draft) = Actions::default().draft("c", "conv", None, None, "draft-9");
        text.send_replace("Hi".into());
        drop(text);
        assert_eq!(draft.finish().await, None);
    }
}
