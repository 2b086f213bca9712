//! Tool plugins: components of the `tools-plugin` (or `channel-tools-plugin`)
//! world, loaded like channel plugins (same engine, sandbox, limits and error
//! handling), and the [`ToolBox`] through which the agent calls them under
//! the permission mode (see [`crate::permissions`]).
//!
//! Each call runs in a fresh instance, so calls of different sessions never
//! share guest state and a trap costs only that call. A tool plugin has two
//! sandboxes: one with its grants, and one with every write stripped
//! (directories read-only, network GET/HEAD only) for the calls `safe` mode
//! lets run because the manifest declares the tool read-only (its plugin
//! state is read-only there too).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use wasmtime::component::Linker;

use crate::audit::{Event, Kind, Verdict};
use crate::engine::Engine;
use crate::host::{self, latest};
use crate::host::{PluginCtx, PluginIdentity, new_store};
use crate::permissions::{Answer, Decision, decide, wait_for_decision};
use crate::plugin::{ComponentInfo, Instance, LoadError, arm, guarded};
use crate::policy::agent::Address;
use crate::policy::{PluginGrants, ToolMode};
use crate::sandbox::{NetworkGate, PluginSandbox};
use crate::store::{Db, Reply};

/// A tools component compiled, linked and ready to instantiate.
pub struct ToolsPlugin {
    grants: Arc<PluginGrants>,
    full: Arc<PluginSandbox>,
    read_only: Arc<PluginSandbox>,
    read_only_grants: Arc<PluginGrants>,
    pre: host::ToolsPre,
    id: PluginIdentity,
    engine: Engine,
    /// Tools the manifest declares read-only.
    declared_read_only: Vec<String>,
    /// What the file declared.
    pub info: ComponentInfo,
    /// Where its `scheduler` calls go (the `scheduler` grant); none refuses them.
    scheduler: Option<Arc<dyn crate::host::Scheduler>>,
}

/// Whether a component file exports `channel` and/or `tools`
/// (`(false, false)`: neither, or unreadable — the channel loader then
/// explains what is wrong with it).
pub fn kinds_of(path: &Path) -> (bool, bool) {
    let Ok(bytes) = std::fs::read(path) else { return (false, false) };
    match crate::plugin::inspect(&bytes, &path.display().to_string()) {
        Ok(info) => {
            let e = info.kata_exports();
            (e.contains(&"channel"), e.contains(&"tools"))
        }
        Err(_) => (false, false),
    }
}

impl ToolsPlugin {
    /// Read, validate, compile (or load from cache) and link a tools plugin.
    pub fn load(engine: &Engine, linker: &Linker<PluginCtx>, grants: PluginGrants, db: Db, workspace: &Path) -> Result<Self> {
        let Some(file) = grants.path.clone() else {
            anyhow::bail!("plugin {} has no `path` in kata.toml; install it with `kata plugin add FILE`", grants.name);
        };
        let path = file.display().to_string();
        let (bytes, digest) = crate::plugin::read_plugin_digested(&file)?;
        let info = crate::plugin::inspect(&bytes, &path)?;
        if let Some(v) = &info.wit_version {
            crate::plugin::check_version(v, &path)?;
        }
        if !info.kata_exports().contains(&"tools") {
            anyhow::bail!(
                "{path} is not a tools plugin: it exports {}; a tools plugin exports kata:plugin/tools (world `tools-plugin`)",
                if info.exports.is_empty() { "nothing".to_string() } else { info.exports.join(", ") }
            );
        }
        let component =
            engine.compile_digested(&bytes, &digest).map_err(|e| LoadError::Invalid { path: path.clone(), reason: format!("{e:#}") })?;
        let pre = linker.instantiate_pre(&component).map_err(|e| LoadError::Imports { path: path.clone(), reason: format!("{e:#}") })?;
        let pre = host::ToolsPre::new(pre, info.export_version("tools"))
            .map_err(|e| anyhow::anyhow!("{path}: incompatible tools export ({e:#})"))?;
        let mut grants = grants;
        let mut declared_read_only = Vec::new();
        if let Some(m) = &info.manifest {
            for d in grants.restrict_to(m).map_err(|reason| LoadError::Invalid { path: path.clone(), reason })? {
                tracing::warn!(plugin = %grants.name, "kata.toml grants {d}, but the plugin's manifest does not ask for it: not given to the plugin");
            }
            declared_read_only = m.tools.read_only.clone();
        }
        let secrets = crate::plugin::resolve_secrets(&grants, workspace)?;
        let id = PluginIdentity {
            name: grants.name.as_str().into(),
            config: Arc::new(grants.config.clone()),
            state: Arc::new(crate::sinks::DbSink(db.clone())),
            read_only: false,
        };
        let read_only_grants = Arc::new(grants.read_only());
        let grants = Arc::new(grants);
        let auditor = crate::sinks::auditor(&db, &grants.name);
        let full = Arc::new(PluginSandbox::new(grants.clone(), secrets.clone(), auditor.clone()));
        let read_only = Arc::new(PluginSandbox::new(read_only_grants.clone(), secrets, auditor));
        // The `scheduler` grant: its calls go to the tasks table, as this plugin's.
        let scheduler = grants
            .scheduler
            .clone()
            .map(|g| -> Arc<dyn crate::host::Scheduler> { Arc::new(crate::scheduler::PluginScheduler::new(db.clone(), g)) });
        Ok(Self { grants, full, read_only, read_only_grants, pre, id, engine: engine.clone(), declared_read_only, info, scheduler })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.grants.name
    }

    /// Whether the manifest declares `tool` read-only.
    pub fn declares_read_only(&self, tool: &str) -> bool {
        self.declared_read_only.iter().any(|t| t == tool)
    }

    /// Send its `scheduler` calls to `scheduler` (for a plugin with the
    /// `scheduler` grant); without one every call is refused as not granted.
    pub fn with_scheduler(mut self, scheduler: Arc<dyn crate::host::Scheduler>) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// An instance; `session` is the session key of the tool call it runs
    /// (for `scheduler.create` without a target).
    async fn instance(&self, read_only: bool, session: Option<&str>) -> Result<Instance<host::ToolsBindings>, String> {
        let (sandbox, grants) = if read_only { (&self.read_only, &self.read_only_grants) } else { (&self.full, &self.grants) };
        let id = PluginIdentity { read_only, ..self.id.clone() };
        let mut store = new_store(&self.engine, id, NetworkGate::new(sandbox.clone()), grants);
        store.data_mut().scheduler = self.scheduler.clone();
        store.data_mut().session = session.map(str::to_string);
        let meter = arm(&mut store, &grants.limits);
        let b = guarded(&meter, &grants.limits, self.pre.instantiate_async(&mut store)).await.map_err(|e| e.to_string())?;
        Ok(Instance::new(store, b, self.grants.limits))
    }

    /// `list()`, in a read-only instance.
    pub async fn list(&self) -> Result<Vec<latest::ToolSpec>, String> {
        let mut inst = self.instance(true, None).await?;
        let (g, s, guard) = inst.begin().map_err(|e| e.to_string())?;
        let r = guard.run(g.list(s)).await;
        inst.end(r).map_err(|e| e.to_string())
    }

    /// `call(name, args)` in a fresh instance; `read_only` runs it with the
    /// write grants stripped. The text is for the model: a result, or what
    /// went wrong (secret values redacted either way).
    pub async fn call(&self, tool: &str, args: &str, read_only: bool) -> Result<String, String> {
        self.call_in(tool, args, read_only, None).await
    }

    /// [`Self::call`] as part of session `session` (`channel/conversation[/thread]`),
    /// which the plugin's `scheduler.create` uses as the target of a task without one.
    pub async fn call_in(&self, tool: &str, args: &str, read_only: bool, session: Option<&str>) -> Result<String, String> {
        let sandbox = if read_only { &self.read_only } else { &self.full };
        let r = async {
            let mut inst = self.instance(read_only, session).await?;
            let (g, s, guard) = inst.begin().map_err(|e| e.to_string())?;
            let r = guard.run(g.call(s, tool, args)).await;
            match inst.end(r) {
                Ok(Ok(text)) => Ok(text),
                Ok(Err(latest::ToolError::UnknownTool(t))) => Err(format!("the plugin has no tool {t:?}")),
                Ok(Err(latest::ToolError::InvalidArgs(m))) => Err(format!("invalid arguments: {m}")),
                Ok(Err(latest::ToolError::Failed(m))) => Err(format!("the tool failed: {m}")),
                Err(e) => Err(format!("the tool was stopped: {e}")),
            }
        }
        .await;
        // What the model gets is at most limits.max_tool_result; the rest is
        // dropped before it is scanned for secrets.
        let max = self.grants.limits.max_tool_result_bytes;
        let cap = |s: String| {
            let len = s.len();
            let (s, cut) = crate::limits::cut_redacted(s, max, crate::limits::TOOL_CUT, sandbox.redactor().longest(), |t| {
                sandbox.redact(t, "tool result")
            });
            if cut {
                crate::limits::hit(&self.grants.name, "max_tool_result", 1);
                sandbox.auditor().record(
                    Event::new(Kind::Limit, Verdict::Deny)
                        .target(format!("tool {tool}"))
                        .policy(format!("limits = {{ max_tool_result = \"{}\" }}", crate::limits::size_text(max.saturating_mul(2))))
                        .detail(format!("a result of {len} bytes was cut to limits.max_tool_result ({max} bytes) before the model saw it")),
                );
            }
            s
        };
        r.map(cap).map_err(cap)
    }
}

/// Where a tool call happens: which session, under which mode.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The session key (shown with approvals).
    pub session_key: String,
    /// The permission mode of the turn.
    pub mode: ToolMode,
    /// The kata.toml line that set the mode, for the audit log.
    pub mode_source: String,
    /// Files the turn's tool calls handed back, for the reply.
    pub attachments: Attachments,
}

impl CallContext {
    /// A call under the workspace's `[tools] mode` (interactive turns, `kata
    /// tool call`), in session `session_key`.
    pub fn workspace(session_key: &str, mode: ToolMode) -> Self {
        Self::new(session_key, mode, format!("[tools] mode = \"{}\"", mode.as_str()))
    }

    /// A call in session `session_key` under `mode`, which `mode_source` sets.
    pub fn new(session_key: &str, mode: ToolMode, mode_source: String) -> Self {
        Self { session_key: session_key.into(), mode, mode_source, attachments: Attachments::default() }
    }
}

/// The files one turn's tool calls handed back (by the convention [`ToolBox::run`] reads in a result).
#[derive(Debug, Clone, Default)]
pub struct Attachments(Arc<std::sync::Mutex<Vec<crate::store::OutFile>>>);

impl Attachments {
    /// Add files.
    pub fn extend(&self, files: Vec<crate::store::OutFile>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend(files);
    }

    /// Take every file added so far.
    pub fn take(&self) -> Vec<crate::store::OutFile> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Load every enabled tools plugin of a policy (plugins exporting
/// `kata:plugin/tools`, channel-and-tools ones included), as `kata run` does.
pub fn load_all(
    policy: &crate::policy::Policy,
    engine: &Engine,
    linker: &Linker<PluginCtx>,
    db: &Db,
    workspace: &Path,
) -> Result<Vec<Arc<ToolsPlugin>>> {
    let mut out = Vec::new();
    for grants in policy.plugins.values().filter(|g| g.enabled) {
        let Some(path) = &grants.path else { continue };
        if crate::service::is_service(path) || !kinds_of(path).1 {
            continue;
        }
        let name = &grants.name;
        let t = ToolsPlugin::load(engine, linker, grants.clone(), db.clone(), workspace)
            .map_err(|e| e.context(format!("cannot load tools plugin {name} ([plugins.{name}] in {})", policy.path.display())))?;
        out.push(Arc::new(t));
    }
    Ok(out)
}

/// One tool as the model sees it.
#[derive(Debug, Clone)]
pub struct ToolEntry {
    /// The function name the model calls: `PLUGIN__TOOL` (chat APIs allow
    /// no dots in function names).
    pub function: String,
    /// The plugin.
    pub plugin: String,
    /// The tool's own name.
    pub tool: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub schema: serde_json::Value,
}

/// Every tool the agent may call, and the permission check in front of them.
pub struct ToolBox {
    plugins: Vec<Arc<ToolsPlugin>>,
    entries: tokio::sync::OnceCell<Vec<ToolEntry>>,
    allow: Vec<String>,
    ask_timeout: std::time::Duration,
    db: Db,
    /// `[tools] approvals_to`: the conversation approval requests are posted in.
    approvals_to: Option<Address>,
    /// Wakes a channel's sender when an approval request is queued for it.
    outbox_ready: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Notify>>>,
    /// The hooks asked before the permission mode (`before-tool-call`).
    hooks: Arc<crate::hooks::Hooks>,
}

/// What became of one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran: its result, or what went wrong (for the model either way).
    Ran(Result<String, String>),
    /// The permission mode (or a person) did not let it run.
    Refused {
        /// Why, for the model and the person.
        reason: String,
        /// The kata.toml line that would allow it (or the decision that refused it).
        policy: String,
    },
    /// No such tool.
    Unknown(String),
}

impl Outcome {
    /// The text the model gets.
    pub fn text(&self, name: &str) -> String {
        match self {
            Outcome::Ran(Ok(t)) => t.clone(),
            Outcome::Ran(Err(e)) => format!("error: {e}"),
            Outcome::Refused { reason, .. } => refused(name, reason),
            Outcome::Unknown(f) => format!("error: there is no tool named {f:?}"),
        }
    }
}

impl ToolBox {
    /// A toolbox over these plugins (listed on first use).
    pub fn new(plugins: Vec<Arc<ToolsPlugin>>, allow: Vec<String>, ask_timeout: std::time::Duration, db: Db) -> Self {
        Self {
            plugins,
            entries: tokio::sync::OnceCell::new(),
            allow,
            ask_timeout,
            db,
            approvals_to: None,
            outbox_ready: Default::default(),
            hooks: Arc::new(crate::hooks::Hooks::none()),
        }
    }

    /// Ask these hooks about every call (at `before-tool-call`) before the
    /// permission mode decides.
    pub fn with_hooks(mut self, hooks: Arc<crate::hooks::Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// Also post each approval request in this conversation (`[tools]
    /// approvals_to`), where the owner answers `yes` or `no` (see
    /// [`crate::permissions::chat_answer`]).
    pub fn with_approvals_to(mut self, to: Option<Address>) -> Self {
        self.approvals_to = to;
        self
    }

    /// The channels' outbox wake-ups, so an approval request goes out at once.
    pub fn set_outbox_ready(&self, ready: BTreeMap<String, Arc<tokio::sync::Notify>>) {
        *self.outbox_ready.lock().unwrap_or_else(|p| p.into_inner()) = ready;
    }

    /// The tools plugins.
    pub fn plugins(&self) -> &[Arc<ToolsPlugin>] {
        &self.plugins
    }

    /// The tools, listed from each plugin once. A plugin whose `list` fails
    /// offers nothing (and says why in the log); the others still work.
    pub async fn entries(&self) -> &[ToolEntry] {
        self.entries
            .get_or_init(|| async {
                let mut out = Vec::new();
                for p in &self.plugins {
                    match p.list().await {
                        Err(e) => tracing::error!(plugin = %p.name(), "cannot list its tools: {e}; it offers none"),
                        Ok(specs) => {
                            for s in specs {
                                let valid = !s.name.is_empty()
                                    && s.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
                                let function = format!("{}__{}", p.name(), s.name);
                                if !valid || function.len() > 64 {
                                    tracing::warn!(plugin = %p.name(), tool = %s.name, "tool name must be lowercase letters, digits, '-' or '_' (and plugin__tool at most 64 characters): skipped");
                                    continue;
                                }
                                let schema = serde_json::from_str(&s.args_schema).unwrap_or_else(|e| {
                                    tracing::warn!(plugin = %p.name(), tool = %s.name, "args-schema is not JSON ({e}); the agent sees an empty object schema");
                                    serde_json::json!({"type": "object"})
                                });
                                tracing::info!(plugin = %p.name(), tool = %s.name, read_only = p.declares_read_only(&s.name), "tool available");
                                out.push(ToolEntry { function, plugin: p.name().to_string(), tool: s.name, description: s.description, schema });
                            }
                        }
                    }
                }
                out
            })
            .await
    }

    /// Call a tool by its function name under `ctx`'s permission mode.
    /// Always returns text for the model: the result, an error, or why the
    /// call was refused. Every call is audited.
    pub async fn call(&self, ctx: &CallContext, function: &str, args: &str) -> String {
        let Some(entry) = self.entries().await.iter().find(|e| e.function == function).cloned() else {
            return Outcome::Unknown(function.to_string()).text(function);
        };
        self.run(ctx, &entry.plugin, &entry.tool, args).await.text(&format!("{}.{}", entry.plugin, entry.tool))
    }

    /// Call `plugin.tool` under `ctx`'s permission mode: the one path every
    /// call takes (the agent's, and `kata tool call`'s), with the same
    /// decision, grants, limits and audit row. Files a result hands back
    /// (`{"attachments": [{"path", "name", "mime_type"}]}`, read within the
    /// plugin's `files` grants and `limits.max_message`) go to
    /// `ctx.attachments`; the ones refused are named in the result.
    pub async fn run(&self, ctx: &CallContext, plugin_name: &str, tool: &str, args: &str) -> Outcome {
        let Some(entry) = self.entries().await.iter().find(|e| e.plugin == plugin_name && e.tool == tool).cloned() else {
            return Outcome::Unknown(format!("{plugin_name}.{tool}"));
        };
        let Some(plugin) = self.plugins.iter().find(|p| p.name() == entry.plugin) else {
            return Outcome::Unknown(format!("{plugin_name}.{tool}"));
        };
        let name = format!("{}.{}", entry.plugin, entry.tool);
        let auditor = crate::sinks::auditor(&self.db, &entry.plugin);
        let audit = |verdict: Verdict, policy: &str, detail: String| {
            auditor.record(
                Event::new(Kind::Tool, verdict)
                    .method(ctx.mode.as_str())
                    .target(&name)
                    .policy(policy)
                    .detail(format!("session {}: {detail}", ctx.session_key)),
            );
        };
        // Hooks first: a refused call never waits for a person's approval.
        let call = crate::hooks::ToolCall { plugin: &entry.plugin, tool: &entry.tool, args, session: &ctx.session_key };
        if let Some((reason, policy)) = self.hooks.before_tool_call(call).await {
            audit(Verdict::Deny, &policy, format!("refused: {reason}"));
            return Outcome::Refused { reason, policy };
        }
        let read_only_declared = plugin.declares_read_only(&entry.tool);
        let (read_only, policy) = match decide(ctx.mode, &self.allow, &entry.plugin, &entry.tool, read_only_declared) {
            Decision::Run { read_only, policy } => (read_only, policy),
            Decision::Refuse { reason, policy } => {
                audit(Verdict::Deny, &policy, format!("refused: {reason} ({})", ctx.mode_source));
                return Outcome::Refused { reason, policy };
            }
            Decision::Ask => {
                let id =
                    match self.db.approval_create(&ctx.session_key, &entry.plugin, &entry.tool, args, &ctx.mode_source, self.ask_timeout) {
                        Ok(id) => id,
                        Err(e) => {
                            tracing::error!("cannot record an approval request: {e:#}");
                            audit(Verdict::Deny, &ctx.mode_source, "refused: the approval request could not be stored".into());
                            return Outcome::Refused { reason: "kata could not ask for approval".into(), policy: ctx.mode_source.clone() };
                        }
                    };
                tracing::warn!(
                    approval = id, tool = %name, session = %ctx.session_key,
                    "tool call waits for approval: `kata approve {id}` or `kata deny {id}` (denied in {:?} otherwise)", self.ask_timeout
                );
                self.post_request(id, &name, args, &ctx.session_key);
                // How the audit row names the decision: the command, or who
                // answered in which chat.
                let by = |verb: &str| match self.db.approval(id).ok().flatten().and_then(|a| a.decided_by) {
                    Some(by) if by.starts_with("kata ") => format!("{verb} with `{by} {id}`"),
                    Some(by) => format!("{verb} by {by} (approval {id})"),
                    None => format!("{verb} (approval {id})"),
                };
                match wait_for_decision(&self.db, id).await {
                    Ok(Answer::Approved) => (false, by("approved")),
                    Ok(Answer::Denied) => {
                        let policy = by("denied");
                        audit(Verdict::Deny, &policy, format!("refused: a person denied approval {id}"));
                        return Outcome::Refused { reason: "the person you work for denied it".into(), policy };
                    }
                    Ok(Answer::Expired) => {
                        audit(Verdict::Deny, "[tools] ask_timeout", format!("refused: no one approved {id} within {:?}", self.ask_timeout));
                        return Outcome::Refused { reason: "no one approved it in time".into(), policy: "[tools] ask_timeout".into() };
                    }
                    Err(e) => {
                        tracing::error!("cannot read approval {id}: {e:#}");
                        audit(Verdict::Deny, &ctx.mode_source, format!("refused: approval {id} could not be read"));
                        return Outcome::Refused { reason: "kata could not read the approval".into(), policy: ctx.mode_source.clone() };
                    }
                }
            }
        };
        let started = Instant::now();
        let mut result = plugin.call_in(&entry.tool, args, read_only, Some(&ctx.session_key)).await;
        let took = started.elapsed();
        let grants = if read_only { "write grants stripped" } else { "full grants" };
        match &result {
            Ok(_) => audit(Verdict::Allow, &policy, format!("ran with {grants} in {took:?}: ok")),
            Err(e) => audit(Verdict::Allow, &policy, format!("ran with {grants} in {took:?}: {e}")),
        }
        if let Ok(text) = &mut result {
            let (files, refused) = files_of(plugin, &name, text);
            if !refused.is_empty() {
                text.push_str(&format!("\n(not attached: {})", refused.join("; ")));
            }
            ctx.attachments.extend(files);
        }
        Outcome::Ran(result)
    }

    /// Post approval request `id` in the `approvals_to` conversation, if
    /// there is one (queued in the outbox like any reply), with two buttons:
    /// Approve (`yes ID`) and Deny (`no ID`). A channel without buttons gets
    /// them as `reply "yes ID" to Approve` lines ([`crate::host::degrade_outbound`]),
    /// so the text itself does not say how to answer.
    fn post_request(&self, id: i64, name: &str, args: &str, session: &str) {
        let Some(to) = &self.approvals_to else { return };
        let reply = Reply {
            plugin: to.plugin.clone(),
            conversation: to.id.clone(),
            thread: None,
            reply_to: None,
            text: approval_text(id, name, args, session, self.ask_timeout),
            rich: crate::store::Rich { actions: approval_buttons(id), ..Default::default() },
        };
        match self.db.enqueue(&reply, &format!("approval-{id}")) {
            Ok(_) => {
                if let Some(n) = self.outbox_ready.lock().unwrap_or_else(|p| p.into_inner()).get(&to.plugin) {
                    n.notify_one();
                }
            }
            Err(e) => tracing::error!(approval = id, "cannot post the approval request to {to}: {e:#}; `kata approve {id}` still works"),
        }
    }
}

/// Most files one tool result may hand back.
const MAX_TOOL_FILES: usize = 10;

/// The files a tool result hands back, by the convention of a JSON object
/// result with `"attachments": [{"path": "/notes/a.md", "name": "a.md",
/// "mime_type": "text/markdown"}]` (`name` defaults to the file's name,
/// `mime_type` to `application/octet-stream`). `path` is where the plugin
/// sees the file: the host reads it only inside the plugin's `files` grants
/// (never through `..` or a symbolic link out of them) and only up to the
/// plugin's `limits.max_message`. Each refusal is an audit row and a line in
/// the returned list (which the model is told). Any other result hands back
/// nothing.
fn files_of(plugin: &ToolsPlugin, name: &str, result: &str) -> (Vec<crate::store::OutFile>, Vec<String>) {
    let (mut files, mut refused) = (Vec::new(), Vec::new());
    if !result.trim_start().starts_with('{') {
        return (files, refused);
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(result) else { return (files, refused) };
    let Some(list) = v.get("attachments").and_then(|a| a.as_array()) else { return (files, refused) };
    let grants = &plugin.grants;
    let auditor = plugin.full.auditor();
    for (i, a) in list.iter().enumerate() {
        let path = a["path"].as_str().unwrap_or_default();
        let read = if i >= MAX_TOOL_FILES {
            Err((format!("more than {MAX_TOOL_FILES} files in one result"), "attachments".to_string()))
        } else {
            read_granted(&grants.files, path, grants.limits.max_message_bytes).map_err(|(why, size)| {
                let policy = match size {
                    // The next KiB up: what would let this file through.
                    Some(n) => format!(
                        "[plugins.{}] limits = {{ max_message = \"{}\" }}",
                        grants.name,
                        crate::limits::size_text((n as usize).div_ceil(1024) * 1024)
                    ),
                    None => format!("[plugins.{}] files", grants.name),
                };
                (why, policy)
            })
        };
        match read {
            Ok((data, file_name)) => {
                let name = a["name"].as_str().filter(|n| !n.is_empty()).unwrap_or(&file_name);
                let mime_type = a["mime_type"].as_str().filter(|m| !m.is_empty()).unwrap_or("application/octet-stream");
                let cut = |s: &str| s.chars().take(crate::limits::MAX_ATTACHMENT_FIELD.min(200)).collect::<String>();
                files.push(crate::store::OutFile { name: cut(name), mime_type: cut(mime_type), data });
            }
            Err((why, policy)) => {
                tracing::warn!(plugin = %grants.name, "{name} handed back {path:?} as an attachment: not attached, {why}");
                auditor.record(
                    Event::new(Kind::Tool, Verdict::Deny)
                        .method("attachment")
                        .target(format!("{name} {path}"))
                        .policy(policy)
                        .detail(format!("file not attached: {why}")),
                );
                refused.push(format!("{path}: {why}"));
            }
        }
    }
    (files, refused)
}

/// Read the file the plugin sees at `guest` through its `files` grants:
/// its bytes and its file name, or why not (and its size, when that was why).
fn read_granted(files: &[crate::policy::FileGrant], guest: &str, max: usize) -> Result<(Vec<u8>, String), (String, Option<u64>)> {
    let refuse = |why: String| Err((why, None));
    let rel = files.iter().find_map(|g| {
        let base = g.guest.trim_end_matches('/');
        let rest = guest.strip_prefix(base)?;
        (rest.starts_with('/') || rest.is_empty()).then_some((g, rest.trim_start_matches('/')))
    });
    let Some((grant, rel)) = rel else {
        return refuse(format!("it is not inside a directory granted to the plugin ({})", grant_list(files)));
    };
    let mut host = grant.host.clone();
    for part in rel.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return refuse("the path goes up (..)".into());
        }
        host.push(part);
    }
    // A symbolic link may point anywhere: what counts is where it leads.
    let real = match host.canonicalize() {
        Ok(r) => r,
        Err(e) => return refuse(format!("cannot read it: {e}")),
    };
    if !real.starts_with(&grant.host) {
        return refuse("it leads out of the granted directory (a symbolic link)".into());
    }
    let meta = match std::fs::metadata(&real) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return refuse("it is not a file".into()),
        Err(e) => return refuse(format!("cannot read it: {e}")),
    };
    let over = |n: u64| Err((format!("it has {n} bytes, over limits.max_message ({max} bytes)"), Some(n)));
    if meta.len() > max as u64 {
        return over(meta.len());
    }
    let data = std::fs::read(&real).map_err(|e| (format!("cannot read it: {e}"), None))?;
    if data.len() > max {
        return over(data.len() as u64);
    }
    let name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((data, name))
}

/// The guest paths of `files`, for a message.
fn grant_list(files: &[crate::policy::FileGrant]) -> String {
    if files.is_empty() {
        return "none: kata.toml grants it no files".into();
    }
    files.iter().map(|g| g.guest.as_str()).collect::<Vec<_>>().join(", ")
}

/// The text of approval request `id` (how to answer is in its buttons).
fn approval_text(id: i64, name: &str, args: &str, session: &str, timeout: std::time::Duration) -> String {
    let mut shown: String = args.chars().take(300).collect();
    if args.chars().count() > 300 {
        shown.push('…');
    }
    format!(
        "Approval {id}: the agent wants to run {name} with {shown} (session {session}). Without an answer it is refused in {}.",
        crate::permissions::duration_words(timeout)
    )
}

/// The buttons of approval request `id`: what each sends back is exactly
/// what the owner would type ([`crate::permissions::chat_answer`]).
fn approval_buttons(id: i64) -> Vec<crate::store::Button> {
    vec![
        crate::store::Button { id: format!("yes {id}"), label: "Approve".into() },
        crate::store::Button { id: format!("no {id}"), label: "Deny".into() },
    ]
}

/// The tool result the model gets for a refused call.
fn refused(name: &str, reason: &str) -> String {
    format!("refused: kata did not run {name} because {reason}. Tell the user it was not allowed; do not retry it.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_are_read_only_inside_the_granted_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("real path");
        let notes = root.join("notes");
        std::fs::create_dir_all(notes.join("sub")).expect("mkdir");
        std::fs::write(notes.join("sub/a.md"), "# A").expect("write");
        std::fs::write(notes.join("big.md"), "x".repeat(100)).expect("write");
        std::fs::write(root.join("secret.txt"), "outside").expect("write");
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("secret.txt"), notes.join("link.md")).expect("symlink");
        let files = vec![crate::policy::FileGrant { host: notes.clone(), guest: "/notes".into(), mode: crate::policy::FileMode::Ro }];
        assert_eq!(read_granted(&files, "/notes/sub/a.md", 64).expect("inside"), (b"# A".to_vec(), "a.md".into()));
        assert_eq!(read_granted(&files, "/notes/./sub/a.md", 64).expect("inside").1, "a.md");
        let refused = |p: &str| read_granted(&files, p, 64).expect_err(p);
        assert!(refused("/notes/../secret.txt").0.contains("goes up"));
        assert!(refused("/notesx/a.md").0.contains("not inside a directory granted"));
        assert!(refused("/etc/passwd").0.contains("/notes"));
        assert!(refused("/notes/sub").0.contains("not a file"));
        assert!(refused("/notes/none.md").0.contains("cannot read"));
        assert_eq!(refused("/notes/big.md"), ("it has 100 bytes, over limits.max_message (64 bytes)".into(), Some(100)));
        #[cfg(unix)]
        assert!(refused("/notes/link.md").0.contains("symbolic link"));
        assert!(read_granted(&[], "/notes/sub/a.md", 64).expect_err("no grants").0.contains("grants it no files"));
    }

    #[test]
    fn an_approval_request_says_how_to_answer_once_with_or_without_buttons() {
        let text = approval_text(7, "notes.append", r#"{"path":"a"}"#, "chat/c1", std::time::Duration::from_secs(300));
        assert!(!text.contains("yes 7"), "the buttons say it: {text}");
        let msg = latest::OutboundMessage {
            conversation: "owner".into(),
            thread: None,
            reply_to: None,
            text,
            idempotency_key: "approval-7".into(),
            attachments: Vec::new(),
            actions: approval_buttons(7).into_iter().map(|b| latest::Action { id: b.id, label: b.label }).collect(),
        };
        let plain = host::degrade_outbound(&msg, &[]);
        assert_eq!(plain.text.matches("yes 7").count(), 1, "{}", plain.text);
        assert!(plain.text.ends_with("reply \"yes 7\" to Approve\nreply \"no 7\" to Deny"), "{}", plain.text);
        let buttons = host::degrade_outbound(&msg, &[latest::Feature::Buttons]);
        assert_eq!(buttons.actions.len(), 2);
        assert!(!buttons.text.contains("yes 7"));
    }
}
