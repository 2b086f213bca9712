//! Hooks: plugins on the message path (`[hooks] order` in kata.toml), called
//! in that order at the points each lists in `points()`:
//!
//! - `message-received`, before the router hands a message to its session:
//!   pass, drop, or rewrite its text;
//! - `message-sending`, before an agent reply goes into the outbox: pass,
//!   veto, or rewrite its text;
//! - `before-tool-call`, before the permission mode decides on a tool call:
//!   allow, or refuse (the mode still decides an allowed call).
//!
//! A rewrite changes the text only: who sent a message, where a reply goes
//! and what it answers stay as they were, so a hook cannot redirect a reply
//! or speak for another sender. kata's own messages (pairing codes, approval
//! requests) do not pass through hooks: a hook cannot hide them.
//!
//! Each call has the hook's budget (`[plugins.NAME] hook = { budget }`) as
//! its timeout. A hook that fails — returns an error, traps, or spends its
//! budget — is handled by its `on_failure`: `pass` lets the message go on
//! unchanged (fail-open), `hold` holds it back (fail-closed): a received
//! message stays unanswered in the inbox, a reply is kept in the `held` table
//! instead of the outbox, a tool call is refused. Held messages are tried
//! again when the router starts (`kata reload` after the hook is fixed, or a
//! restart); `kata status` counts them.
//!
//! Every change, drop, veto, refusal and failure is an audit row of kind
//! `hook` (the plugin is the hook; method the point; the policy line the
//! hook's settings). The rows say what changed, never the text itself: the
//! text a redaction hook masks must not end up in the audit log.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::path::Path;

use anyhow::Result;
use wasmtime::component::Linker;

use crate::engine::Engine;
use crate::host::{PluginCtx, latest};
use crate::policy::PluginGrants;
use crate::policy::hooks::{HookSettings, OnFailure};
use crate::store::{AuditRow, Db, Inbound, InboxRow, Reply, now_ms};

/// A future a hook call returns.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// A point on the message path a hook can be called at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A message arrived, before the agent sees it.
    Received,
    /// A reply is about to go out.
    Sending,
    /// The agent is about to call a tool.
    ToolCall,
}

impl Point {
    /// The name as the WIT writes it (and audit rows show it).
    pub fn as_str(self) -> &'static str {
        match self {
            Point::Received => "message-received",
            Point::Sending => "message-sending",
            Point::ToolCall => "before-tool-call",
        }
    }
}

/// What a hook says about a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundVerdict {
    /// Unchanged.
    Pass,
    /// Dropped before the agent sees it; why.
    Drop(String),
    /// Its text replaced by this.
    Rewrite(String),
}

/// What a hook says about a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundVerdict {
    /// Unchanged.
    Pass,
    /// Not sent; why.
    Veto(String),
    /// Its text replaced by this.
    Rewrite(String),
}

/// What a hook says about a tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolVerdict {
    /// It may run (the permission mode still decides).
    Allow,
    /// It may not; why (shown to the agent).
    Refuse(String),
}

/// A tool call as a hook sees it.
#[derive(Debug, Clone)]
pub struct ToolCall<'a> {
    /// The tools plugin.
    pub plugin: &'a str,
    /// The tool.
    pub tool: &'a str,
    /// The arguments (a JSON object).
    pub args: &'a str,
    /// The session key.
    pub session: &'a str,
}

/// One hook plugin's calls (a loaded component, or a stand-in in tests).
/// An `Err` is the hook failing: its error result, or a trap.
pub trait HookCall: Send + Sync {
    /// `points()`: where it wants to be called.
    fn points(&self) -> HookFuture<'_, Vec<Point>>;
    /// `message-received(channel, message)`.
    fn received<'a>(&'a self, channel: &'a str, msg: &'a Inbound) -> HookFuture<'a, InboundVerdict>;
    /// `message-sending(channel, message)`; `key` is the reply's idempotency key.
    fn sending<'a>(&'a self, channel: &'a str, reply: &'a Reply, key: &'a str) -> HookFuture<'a, OutboundVerdict>;
    /// `before-tool-call(call)`.
    fn before_tool_call<'a>(&'a self, call: ToolCall<'a>) -> HookFuture<'a, ToolVerdict>;
}

/// One hook in the pipeline.
pub struct Hook {
    /// Its plugin name.
    pub name: String,
    /// The points it asked for (`points()`, asked once, on first use).
    points: tokio::sync::OnceCell<Vec<Point>>,
    /// Its settings from kata.toml.
    pub settings: HookSettings,
    /// Its calls.
    pub call: Arc<dyn HookCall>,
}

impl Hook {
    /// A hook named `name` with its settings and calls.
    pub fn new(name: &str, settings: HookSettings, call: Arc<dyn HookCall>) -> Self {
        Self { name: name.into(), points: tokio::sync::OnceCell::new(), settings, call }
    }

    /// The points it is called at. `points()` must not fail; if it does
    /// (or misses the budget) the hook counts as wanting every point, so its
    /// failures there are handled by its `on_failure` — a broken fail-closed
    /// hook holds messages rather than silently stepping aside.
    pub async fn points(&self) -> &[Point] {
        self.points
            .get_or_init(|| async {
                match Hooks::within(self, self.call.points()).await {
                    Ok(p) => {
                        tracing::info!(hook = %self.name, points = ?p.iter().map(|p| p.as_str()).collect::<Vec<_>>(), "hook ready");
                        p
                    }
                    Err(e) => {
                        tracing::error!(hook = %self.name, "points() failed ({e}); calling it at every point, where on_failure = \"{}\" applies", self.settings.on_failure.as_str());
                        vec![Point::Received, Point::Sending, Point::ToolCall]
                    }
                }
            })
            .await
    }
}

/// What became of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// It goes on to the agent, as this (rewritten or not).
    Pass(Box<Inbound>),
    /// A hook dropped it.
    Dropped,
    /// A failing fail-closed hook held it back.
    Held,
}

/// What became of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sending {
    /// It goes out, as this.
    Send(Reply),
    /// A hook vetoed it.
    Vetoed,
    /// A failing fail-closed hook held it back: `(hook, reason)`.
    Held(String, String),
}

/// The hooks of a workspace, in `[hooks] order`.
#[derive(Default)]
pub struct Hooks {
    hooks: Vec<Hook>,
    db: Option<Db>,
}

impl Hooks {
    /// The pipeline over `hooks` (already in order), auditing to `db`.
    pub fn new(hooks: Vec<Hook>, db: Db) -> Self {
        Self { hooks, db: Some(db) }
    }

    /// No hooks at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// The hooks' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.hooks.iter().map(|h| h.name.as_str()).collect()
    }

    /// Whether any hook is called at `message-sending`: then a reply may not
    /// be shown before the hooks have seen it whole (no streamed drafts).
    pub async fn at_sending(&self) -> bool {
        !self.at(Point::Sending).await.is_empty()
    }

    /// The hooks called at `point`, in order.
    async fn at(&self, point: Point) -> Vec<&Hook> {
        let mut out = Vec::new();
        for h in &self.hooks {
            if h.points().await.contains(&point) {
                out.push(h);
            }
        }
        out
    }

    /// Run `fut` within `hook`'s budget: its verdict, or why it failed.
    async fn within<T>(hook: &Hook, fut: HookFuture<'_, T>) -> Result<T, String> {
        match tokio::time::timeout(hook.settings.budget, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("it did not answer within its budget of {:?}", hook.settings.budget)),
        }
    }

    fn audit(&self, hook: &Hook, point: Point, verdict: &str, target: String, detail: String) {
        let level_warn = matches!(verdict, "hold" | "fail-open" | "refuse");
        if level_warn {
            tracing::warn!(hook = %hook.name, point = point.as_str(), verdict, "{target}: {detail}");
        } else {
            tracing::info!(hook = %hook.name, point = point.as_str(), verdict, "{target}: {detail}");
        }
        let Some(db) = &self.db else { return };
        let row = AuditRow {
            id: 0,
            ts_ms: now_ms(),
            plugin: hook.name.clone(),
            kind: "hook".into(),
            verdict: verdict.into(),
            method: Some(point.as_str().into()),
            target: Some(target),
            policy: Some(format!("[plugins.{}] {} ({})", hook.name, hook.settings.describe(), hook.settings.at)),
            detail: Some(detail),
        };
        if let Err(e) = db.audit_append(&row) {
            tracing::error!(hook = %hook.name, "cannot write an audit row: {e:#}");
        }
    }

    /// A failure of `hook`: true when the message should go on (fail-open).
    fn failed(&self, hook: &Hook, point: Point, target: &str, why: &str) -> bool {
        match hook.settings.on_failure {
            OnFailure::Pass => {
                self.audit(
                    hook,
                    point,
                    "fail-open",
                    target.into(),
                    format!("the hook failed ({why}); on_failure = \"pass\": let through unchanged"),
                );
                true
            }
            OnFailure::Hold => {
                let what = match point {
                    Point::Received => "held back, not given to the agent; kept and tried again at `kata reload`",
                    Point::Sending => "held back, not sent; kept and tried again at `kata reload`",
                    Point::ToolCall => "the tool call is refused",
                };
                self.audit(hook, point, "hold", target.into(), format!("the hook failed ({why}); on_failure = \"hold\": {what}"));
                false
            }
        }
    }

    /// Hand a received message to the hooks at `message-received`. A held
    /// message is recorded here (see [`Db::hold_received`]).
    pub async fn received(&self, row: &InboxRow) -> Received {
        let mut msg = row.msg.clone();
        let target = format!("{}:{} message {}", row.plugin, row.msg.conversation, row.msg.channel_msg_id);
        for hook in self.at(Point::Received).await {
            match Self::within(hook, hook.call.received(&row.plugin, &msg)).await {
                Ok(InboundVerdict::Pass) => {}
                Ok(InboundVerdict::Drop(why)) => {
                    self.audit(hook, Point::Received, "drop", target, format!("dropped before the agent saw it: {why}"));
                    return Received::Dropped;
                }
                Ok(InboundVerdict::Rewrite(text)) if text == msg.text => {}
                Ok(InboundVerdict::Rewrite(text)) => {
                    self.audit(hook, Point::Received, "rewrite", target.clone(), change(&msg.text, &text));
                    msg.text = text;
                }
                Err(why) => {
                    if self.failed(hook, Point::Received, &target, &why) {
                        continue;
                    }
                    if let Some(db) = &self.db
                        && let Err(e) = db.hold_received(&hook.name, &why, row)
                    {
                        tracing::error!(inbox = row.id, "cannot record a held message: {e:#}; it stays unanswered in the inbox");
                    }
                    return Received::Held;
                }
            }
        }
        Received::Pass(Box::new(msg))
    }

    /// Hand a reply (to inbox row `inbox_id`) to the hooks at `message-sending`.
    /// A held reply is the caller's to keep (see [`Db::complete_turn_held_batched`]).
    pub async fn sending(&self, mut reply: Reply, inbox_id: i64) -> Sending {
        let key = format!("inbox-{inbox_id}");
        let target = format!("{}:{} reply to inbox {inbox_id}", reply.plugin, reply.conversation);
        for hook in self.at(Point::Sending).await {
            match Self::within(hook, hook.call.sending(&reply.plugin, &reply, &key)).await {
                Ok(OutboundVerdict::Pass) => {}
                Ok(OutboundVerdict::Veto(why)) => {
                    self.audit(hook, Point::Sending, "veto", target, format!("not sent: {why}"));
                    return Sending::Vetoed;
                }
                Ok(OutboundVerdict::Rewrite(text)) if text == reply.text => {}
                Ok(OutboundVerdict::Rewrite(text)) => {
                    self.audit(hook, Point::Sending, "rewrite", target.clone(), change(&reply.text, &text));
                    reply.text = text;
                }
                Err(why) => {
                    if !self.failed(hook, Point::Sending, &target, &why) {
                        return Sending::Held(hook.name.clone(), why);
                    }
                }
            }
        }
        Sending::Send(reply)
    }

    /// Hand a tool call to the hooks at `before-tool-call`: None when every
    /// one allows it, else `(why, the hook's settings line)`.
    pub async fn before_tool_call(&self, call: ToolCall<'_>) -> Option<(String, String)> {
        let target = format!("tool {}.{}", call.plugin, call.tool);
        for hook in self.at(Point::ToolCall).await {
            let policy = format!("[plugins.{}] {} ({})", hook.name, hook.settings.describe(), hook.settings.at);
            match Self::within(hook, hook.call.before_tool_call(call.clone())).await {
                Ok(ToolVerdict::Allow) => {}
                Ok(ToolVerdict::Refuse(why)) => {
                    self.audit(hook, Point::ToolCall, "refuse", target, format!("session {}: refused: {why}", call.session));
                    return Some((format!("the hook {} refused it: {why}", hook.name), policy));
                }
                Err(why) => {
                    if !self.failed(hook, Point::ToolCall, &target, &why) {
                        return Some((format!("the hook {} failed and is set to hold (fail-closed)", hook.name), policy));
                    }
                }
            }
        }
        None
    }
}

/// Whether a component file exports `kata:plugin/hooks` (a hook plugin).
pub fn is_hook(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else { return false };
    crate::plugin::inspect(&bytes, &path.display().to_string()).is_ok_and(|info| info.kata_exports().contains(&"hooks"))
}

/// A hook component (kata-host's [`crate::plugin::HookPlugin`]: each call in a
/// fresh instance, sandboxed with the plugin's grants) whose call timeout is
/// the hook's budget, so a hook that spins is stopped, not just abandoned.
pub struct HookPlugin {
    plugin: crate::plugin::HookPlugin,
    max_text: usize,
}

impl HookPlugin {
    /// Read, validate, compile (or load from cache) and link a hook plugin.
    pub fn load(engine: &Engine, linker: &Linker<PluginCtx>, grants: PluginGrants, db: &Db, workspace: &Path) -> Result<Self> {
        let mut grants = grants;
        if let Some(h) = &grants.hook {
            grants.limits.call_timeout = h.budget;
        }
        let max_text = grants.limits.max_message_bytes;
        let plugin = crate::plugin::HookPlugin::load(engine, linker, grants, crate::sinks::for_db(db), workspace)?;
        Ok(Self { plugin, max_text })
    }

    /// A rewritten text within the plugin's `limits.max_message`, secret
    /// values redacted.
    fn checked_text(&self, text: String) -> Result<String, String> {
        if text.len() > self.max_text {
            return Err(format!("it rewrote the text to {} bytes, over its limits.max_message ({} bytes)", text.len(), self.max_text));
        }
        Ok(self.plugin.sandbox().redact(&text, "hook rewrite").into_owned())
    }
}

/// A hook call's verdict, its error result, or its trap or timeout, as text.
fn verdict<T>(r: crate::plugin::HookResult<T>) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("it returned an error: {e}")),
        // The call timeout is the hook's budget (see HookPlugin::load).
        Err(crate::plugin::CallError::Timeout(d)) => Err(format!("it did not answer within its budget of {d:?}")),
        Err(e) => Err(e.to_string()),
    }
}

impl HookCall for HookPlugin {
    fn points(&self) -> HookFuture<'_, Vec<Point>> {
        Box::pin(async move {
            let points = self.plugin.points().await.map_err(|e| e.to_string())?;
            Ok(points
                .into_iter()
                .map(|p| match p {
                    latest::HookPoint::MessageReceived => Point::Received,
                    latest::HookPoint::MessageSending => Point::Sending,
                    latest::HookPoint::BeforeToolCall => Point::ToolCall,
                })
                .collect())
        })
    }

    fn received<'a>(&'a self, channel: &'a str, msg: &'a Inbound) -> HookFuture<'a, InboundVerdict> {
        Box::pin(async move {
            match verdict(self.plugin.message_received(channel, &to_message(msg)).await)? {
                latest::InboundVerdict::Pass => Ok(InboundVerdict::Pass),
                latest::InboundVerdict::Drop(why) => Ok(InboundVerdict::Drop(why)),
                latest::InboundVerdict::Rewrite(m) => Ok(InboundVerdict::Rewrite(self.checked_text(m.text)?)),
            }
        })
    }

    fn sending<'a>(&'a self, channel: &'a str, reply: &'a Reply, key: &'a str) -> HookFuture<'a, OutboundVerdict> {
        Box::pin(async move {
            let m = latest::OutboundMessage {
                conversation: reply.conversation.clone(),
                thread: reply.thread.clone(),
                reply_to: reply.reply_to.clone(),
                text: reply.text.clone(),
                idempotency_key: key.to_string(),
                attachments: Vec::new(),
                actions: Vec::new(),
            };
            match verdict(self.plugin.message_sending(channel, &m).await)? {
                latest::OutboundVerdict::Pass => Ok(OutboundVerdict::Pass),
                latest::OutboundVerdict::Veto(why) => Ok(OutboundVerdict::Veto(why)),
                latest::OutboundVerdict::Rewrite(m) => Ok(OutboundVerdict::Rewrite(self.checked_text(m.text)?)),
            }
        })
    }

    fn before_tool_call<'a>(&'a self, call: ToolCall<'a>) -> HookFuture<'a, ToolVerdict> {
        Box::pin(async move {
            let c = latest::ToolCall {
                plugin: call.plugin.into(),
                tool: call.tool.into(),
                args_json: call.args.into(),
                session: call.session.into(),
            };
            match verdict(self.plugin.before_tool_call(&c).await)? {
                latest::ToolVerdict::Allow => Ok(ToolVerdict::Allow),
                latest::ToolVerdict::Refuse(why) => Ok(ToolVerdict::Refuse(why)),
            }
        })
    }
}

/// A stored message as the WIT's `message`.
fn to_message(m: &Inbound) -> latest::Message {
    let attachments = serde_json::from_str::<Vec<serde_json::Value>>(&m.attachments_json)
        .unwrap_or_default()
        .into_iter()
        .map(|a| latest::Attachment {
            name: a["name"].as_str().unwrap_or_default().into(),
            mime_type: a["mime_type"].as_str().unwrap_or("application/octet-stream").into(),
            url: a["url"].as_str().map(Into::into),
            size: a["size"].as_u64(),
        })
        .collect();
    latest::Message {
        id: m.channel_msg_id.clone(),
        conversation: m.conversation.clone(),
        thread: m.thread.clone(),
        sender: m.sender.clone(),
        sender_name: m.sender_name.clone(),
        text: m.text.clone(),
        attachments,
        timestamp_ms: m.timestamp_ms,
        raw: m.raw.clone(),
        conversation_kind: if m.group { latest::ConversationKind::Group } else { latest::ConversationKind::Direct },
        mentioned: m.mentioned,
    }
}

/// Load the hooks `[hooks] order` names, in that order. A hook that is
/// disabled or not installed is an error: a policy that relies on a
/// redaction hook must not quietly run without it.
pub fn load_all(policy: &crate::policy::Policy, engine: &Engine, linker: &Linker<PluginCtx>, db: &Db, workspace: &Path) -> Result<Hooks> {
    let mut hooks = Vec::new();
    for name in &policy.file.hooks.order {
        let Some(grants) = policy.plugins.get(name) else {
            anyhow::bail!("[hooks] order in {} names {name:?}, which has no [plugins.{name}] table", policy.path.display());
        };
        if !grants.enabled || grants.path.is_none() {
            anyhow::bail!(
                "[hooks] order in {} names {name:?}, but [plugins.{name}] is {}; a hook on the message path cannot be skipped — \
                 install and enable it, or take it out of the order",
                policy.path.display(),
                if grants.enabled { "not installed (no `path`)" } else { "disabled (enabled = false)" }
            );
        }
        let settings = grants.hook.clone().ok_or_else(|| anyhow::anyhow!("[plugins.{name}] has no hook settings"))?;
        let p = HookPlugin::load(engine, linker, grants.clone(), db, workspace)
            .map_err(|e| e.context(format!("cannot load hook {name} ([plugins.{name}] in {})", policy.path.display())))?;
        tracing::info!(hook = %name, budget = ?settings.budget, on_failure = settings.on_failure.as_str(), "hook loaded");
        hooks.push(Hook::new(name, settings, Arc::new(p)));
    }
    Ok(Hooks::new(hooks, db.clone()))
}

/// What a rewrite changed, without the text itself.
fn change(before: &str, after: &str) -> String {
    let (b, a) = (before.chars().count(), after.chars().count());
    let prefix = before.chars().zip(after.chars()).take_while(|(x, y)| x == y).count();
    format!("rewrote the text ({b} → {a} characters, first change at character {})", prefix + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A stand-in hook: answers from closures, or spins.
    struct Fake {
        received: fn(&Inbound) -> Result<InboundVerdict, String>,
        sending: fn(&Reply) -> Result<OutboundVerdict, String>,
        tool: fn(&str) -> Result<ToolVerdict, String>,
        spin: bool,
    }

    impl HookCall for Fake {
        fn points(&self) -> HookFuture<'_, Vec<Point>> {
            Box::pin(async { Ok(vec![Point::Received, Point::Sending, Point::ToolCall]) })
        }
        fn received<'a>(&'a self, _: &'a str, msg: &'a Inbound) -> HookFuture<'a, InboundVerdict> {
            Box::pin(async move {
                if self.spin {
                    std::future::pending::<()>().await;
                }
                (self.received)(msg)
            })
        }
        fn sending<'a>(&'a self, _: &'a str, reply: &'a Reply, _: &'a str) -> HookFuture<'a, OutboundVerdict> {
            Box::pin(async move {
                if self.spin {
                    std::future::pending::<()>().await;
                }
                (self.sending)(reply)
            })
        }
        fn before_tool_call<'a>(&'a self, call: ToolCall<'a>) -> HookFuture<'a, ToolVerdict> {
            let tool = call.tool.to_string();
            Box::pin(async move {
                if self.spin {
                    std::future::pending::<()>().await;
                }
                (self.tool)(&tool)
            })
        }
    }

    fn hook(name: &str, on_failure: OnFailure, fake: Fake) -> Hook {
        let settings = HookSettings { budget: Duration::from_millis(50), on_failure, position: Some(0), at: "kata.toml:9".into() };
        Hook::new(name, settings, Arc::new(fake))
    }

    fn upper() -> Fake {
        Fake {
            received: |m| Ok(InboundVerdict::Rewrite(m.text.to_uppercase())),
            sending: |r| {
                Ok(if r.text.contains("veto") {
                    OutboundVerdict::Veto("vetoed".into())
                } else {
                    OutboundVerdict::Rewrite(r.text.replace("4111", "****"))
                })
            },
            tool: |t| Ok(if t == "delete" { ToolVerdict::Refuse("no deleting".into()) } else { ToolVerdict::Allow }),
            spin: false,
        }
    }

    fn failing(spin: bool) -> Fake {
        Fake { received: |_| Err("boom".into()), sending: |_| Err("boom".into()), tool: |_| Err("boom".into()), spin }
    }

    fn setup() -> (tempfile::TempDir, Db, InboxRow) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("kata.db")).expect("db");
        let msg = Inbound {
            channel_msg_id: "m1".into(),
            conversation: "c".into(),
            sender: "s".into(),
            text: "drop me?".into(),
            ..Default::default()
        };
        db.record_poll("chat", &[msg], None).expect("poll");
        let row = db.pending_inbox(1).expect("inbox").remove(0);
        (dir, db, row)
    }

    fn reply(text: &str) -> Reply {
        Reply { plugin: "chat".into(), conversation: "c".into(), thread: None, reply_to: None, text: text.into(), rich: Default::default() }
    }

    fn audit(db: &Db) -> Vec<(String, String, String)> {
        db.audit_query(&crate::store::AuditQuery { limit: 100, ..Default::default() })
            .expect("audit")
            .into_iter()
            .map(|r| (r.plugin, r.verdict, r.detail.unwrap_or_default()))
            .collect()
    }

    #[tokio::test]
    async fn hooks_rewrite_in_order_and_each_change_is_audited_without_the_text() {
        let (_d, db, row) = setup();
        let hooks = Hooks::new(vec![hook("a", OnFailure::Hold, upper())], db.clone());
        let Received::Pass(m) = hooks.received(&row).await else { panic!("passes") };
        assert_eq!(m.text, "DROP ME?");
        assert_eq!(hooks.sending(reply("card 4111 1111"), row.id).await, Sending::Send(reply("card **** 1111")));
        assert_eq!(hooks.sending(reply("veto this"), row.id).await, Sending::Vetoed);
        let rows = audit(&db);
        assert_eq!(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["rewrite", "rewrite", "veto"]);
        assert!(rows.iter().all(|r| !r.2.contains("4111")), "{rows:?}");
        assert_eq!(hooks.before_tool_call(ToolCall { plugin: "notes", tool: "read", args: "{}", session: "s" }).await, None);
        let (why, policy) =
            hooks.before_tool_call(ToolCall { plugin: "notes", tool: "delete", args: "{}", session: "s" }).await.expect("refused");
        assert!(why.contains("no deleting") && policy.contains("[plugins.a] hook = {"), "{why} / {policy}");
    }

    #[tokio::test]
    async fn a_failing_hook_passes_or_holds_as_configured() {
        for spin in [false, true] {
            let (_d, db, row) = setup();
            let open = Hooks::new(vec![hook("open", OnFailure::Pass, failing(spin))], db.clone());
            assert_eq!(open.received(&row).await, Received::Pass(Box::new(row.msg.clone())));
            assert_eq!(open.sending(reply("x"), row.id).await, Sending::Send(reply("x")));
            assert_eq!(open.before_tool_call(ToolCall { plugin: "p", tool: "t", args: "{}", session: "s" }).await, None);
            let closed = Hooks::new(vec![hook("closed", OnFailure::Hold, failing(spin))], db.clone());
            assert_eq!(closed.received(&row).await, Received::Held);
            assert_eq!(db.held_count().expect("count"), 1, "recorded");
            assert!(matches!(closed.sending(reply("x"), row.id).await, Sending::Held(h, _) if h == "closed"));
            assert!(closed.before_tool_call(ToolCall { plugin: "p", tool: "t", args: "{}", session: "s" }).await.is_some());
            let rows = audit(&db);
            assert_eq!(rows.iter().filter(|r| r.1 == "fail-open").count(), 3, "{rows:?}");
            assert_eq!(rows.iter().filter(|r| r.1 == "hold").count(), 3, "{rows:?}");
            if spin {
                assert!(rows.iter().all(|r| r.2.contains("budget of 50ms")), "{rows:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_hook_is_only_called_at_its_points() {
        let (_d, db, row) = setup();
        let mut h = hook("only-sending", OnFailure::Hold, failing(false));
        h.points = tokio::sync::OnceCell::new_with(Some(vec![Point::Sending]));
        let hooks = Hooks::new(vec![h], db.clone());
        assert!(matches!(hooks.received(&row).await, Received::Pass(_)), "never asked at message-received");
        assert!(matches!(hooks.sending(reply("x"), row.id).await, Sending::Held(..)));
    }
}
