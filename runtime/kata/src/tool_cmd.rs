//! `kata tool list|call`: the agent's tools as the permission mode sees
//! them, and one call through exactly the checks the daemon makes.
//!
//! `kata tool list` loads the workspace's tools plugins in this process (as
//! `kata run` would, from kata.toml), asks each for its tools and says, per
//! tool, what the permission mode does with a call — runs it (with full or
//! read-only grants), asks a person, or refuses it — and which kata.toml
//! line decides that; channels whose `tools_mode` differs are listed too.
//!
//! `kata tool call PLUGIN.TOOL JSON` goes through the running daemon when
//! there is one (its control socket: the plugins, policy and approval route
//! it has loaded), and otherwise loads the plugins here. Either way the call
//! takes the one path every agent call takes
//! ([`ToolBox::run`](crate::tools::ToolBox::run)): the workspace's `[tools]
//! mode` decides (in `ask` mode the call waits for `kata approve ID`), the
//! plugin runs in a fresh sandboxed instance with its grants and limits, and
//! the call is one audit row.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Serialize;

use crate::agent::Settings;
use crate::permissions::{Decision, decide};
use crate::policy::{Policy, ToolMode};
use crate::tools::{CallContext, Outcome, ToolBox};
use crate::workspace::Workspace;

/// `kata tool …`
#[derive(Debug, Subcommand)]
pub enum ToolCommand {
    /// List every tool of the workspace's tools plugins, and whether the
    /// permission mode lets the agent call it — and why, by kata.toml line.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Call one tool the way the agent would: the same permission decision,
    /// grants, limits and audit row (through the running daemon if there is
    /// one). Prints the result; exits non-zero when it was refused or failed.
    Call {
        /// The tool as PLUGIN.TOOL, e.g. notes.search.
        tool: String,
        /// Its arguments: a JSON object, e.g. '{"query": "kata"}' (default `{}`).
        #[arg(default_value = "{}")]
        args: String,
    },
}

/// One tool as `kata tool list` reports it.
#[derive(Debug, Serialize)]
struct Listed {
    /// `plugin.tool`.
    name: String,
    plugin: String,
    tool: String,
    description: String,
    /// Whether the plugin's manifest declares it read-only.
    read_only: bool,
    /// Under the workspace mode.
    workspace: Verdict,
    /// Under each channel whose `tools_mode` differs from it.
    channels: Vec<ChannelVerdict>,
}

#[derive(Debug, Serialize)]
struct ChannelVerdict {
    channel: String,
    #[serde(flatten)]
    verdict: Verdict,
}

/// What a mode does with a call.
#[derive(Debug, Serialize)]
struct Verdict {
    /// The mode.
    mode: ToolMode,
    /// `runs`, `runs read-only`, `asks` or `refused`.
    decision: &'static str,
    /// Why, naming the kata.toml line.
    why: String,
}

/// Run a `kata tool` command.
pub fn tool(workspace: Option<&Path>, cmd: ToolCommand, out: &mut impl Write) -> Result<()> {
    let ws = Workspace::discover(workspace)?;
    match cmd {
        ToolCommand::List { json } => list(&ws, json, out),
        ToolCommand::Call { tool, args } => call(&ws, &tool, &args, out),
    }
}

/// The policy, its text and its `[agent]`/`[tools]` settings.
fn load_policy(ws: &Workspace) -> Result<(Policy, String, Settings)> {
    let path = ws.policy_path();
    let policy = Policy::load(&path, ws.root())?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let settings = Settings::resolve(&policy.file, ws.root())
        .map_err(|((table, key), m)| anyhow::anyhow!("[{table}] {key} in {}: {m}", path.display()))?;
    Ok((policy, text, settings))
}

/// The workspace's toolbox, loaded in this process, and its database.
fn toolbox(ws: &Workspace, policy: &Policy, settings: &Settings) -> Result<(ToolBox, crate::store::Db)> {
    let db = crate::store::Db::open(&ws.db_path())?;
    let engine = crate::engine::Engine::new(Some(ws.cache_dir()))?;
    let linker = crate::plugin::linker(&engine)?;
    let plugins = crate::tools::load_all(policy, &engine, &linker, &db, ws.root())?;
    // The hooks too: a hook's before-tool-call decides here as in the daemon.
    let hooks = std::sync::Arc::new(kata_daemon::hooks::load_all(policy, &engine, &linker, &db, ws.root())?);
    Ok((ToolBox::new(plugins, settings.tools_allow.clone(), settings.ask_timeout, db.clone()).with_hooks(hooks), db))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// ` (kata.toml:LINE)`, or ` (the default: kata.toml does not set it)`.
fn at(policy: &Policy, text: &str, keys: &[&str], index: Option<usize>) -> String {
    let file = policy.path.file_name().map_or("kata.toml".into(), |f| f.to_string_lossy().to_string());
    match Policy::key_line(text, keys, index) {
        Some(line) => format!(" ({file}:{line})"),
        None => " (the default: kata.toml does not set it)".into(),
    }
}

/// Where a mode is set: the kata.toml line as written, and its location.
struct ModeLine {
    mode: ToolMode,
    /// `[tools] mode = "safe"` or `[plugins.NAME] tools_mode = "…"`.
    line: String,
    /// ` (kata.toml:N)`.
    at: String,
}

/// What a mode does with `plugin.tool`, and why.
fn verdict(policy: &Policy, text: &str, settings: &Settings, m: &ModeLine, plugin: &str, tool: &str, read_only: bool) -> Verdict {
    let (mode, mode_at) = (m.mode, m.at.as_str());
    let (decision, why) = match decide(mode, &settings.tools_allow, plugin, tool, read_only) {
        Decision::Run { read_only: true, policy: p } => ("runs read-only", format!("{p}; {}{mode_at}", m.line)),
        Decision::Run { .. } if mode == ToolMode::AllowAll => ("runs", format!("{}{mode_at}", m.line)),
        Decision::Run { policy: p, .. } => {
            let i = settings.tools_allow.iter().position(|a| p.contains(&format!("\"{a}\"")));
            ("runs", format!("{p}{}", at(policy, text, &["tools", "allow"], i)))
        }
        Decision::Ask => (
            "asks",
            format!(
                "mode \"ask\"{mode_at} and it is not in [tools] allow: each call waits for `kata approve ID`{}",
                match &settings.approvals_to {
                    Some(to) => format!(" or a yes in {to}"),
                    None => String::new(),
                }
            ),
        ),
        Decision::Refuse { reason, policy: fix } => ("refused", format!("{reason}{mode_at}; to allow it: {fix}")),
    };
    Verdict { mode, decision, why }
}

fn list(ws: &Workspace, json: bool, out: &mut impl Write) -> Result<()> {
    let (policy, text, settings) = load_policy(ws)?;
    let (tools, _) = toolbox(ws, &policy, &settings)?;
    let entries = runtime()?.block_on(async { tools.entries().await.to_vec() });
    let mode = settings.tools_mode;
    let workspace_mode =
        ModeLine { mode, line: format!("[tools] mode = \"{}\"", mode.as_str()), at: at(&policy, &text, &["tools", "mode"], None) };
    let mode_at = workspace_mode.at.clone();
    // Channels that run their turns under another mode.
    let overrides: Vec<(&str, ModeLine)> = policy
        .plugins
        .values()
        .filter(|g| g.enabled)
        .filter_map(|g| {
            g.tools_mode.filter(|m| *m != mode).map(|m| {
                let line = format!("[plugins.{}] tools_mode = \"{}\"", g.name, m.as_str());
                (g.name.as_str(), ModeLine { mode: m, line, at: at(&policy, &text, &["plugins", &g.name, "tools_mode"], None) })
            })
        })
        .collect();
    let mut rows = Vec::new();
    for e in &entries {
        let read_only = tools.plugins().iter().find(|p| p.name() == e.plugin).is_some_and(|p| p.declares_read_only(&e.tool));
        let v = |m: &ModeLine| verdict(&policy, &text, &settings, m, &e.plugin, &e.tool, read_only);
        rows.push(Listed {
            name: format!("{}.{}", e.plugin, e.tool),
            plugin: e.plugin.clone(),
            tool: e.tool.clone(),
            description: e.description.clone(),
            read_only,
            workspace: v(&workspace_mode),
            channels: overrides.iter().map(|(c, m)| ChannelVerdict { channel: c.to_string(), verdict: v(m) }).collect(),
        });
    }
    if json {
        serde_json::to_writer_pretty(&mut *out, &serde_json::json!({"mode": mode, "tools": rows}))?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "Permission mode: \"{}\"{mode_at}", mode.as_str())?;
    for (c, m) in &overrides {
        writeln!(out, "  turns from channel {c} use \"{}\"{}", m.mode.as_str(), m.at)?;
    }
    if rows.is_empty() {
        let loaded = tools.plugins().len();
        writeln!(
            out,
            "No tools. {}",
            if loaded == 0 {
                "No tools plugin is enabled in kata.toml; install one with `kata plugin add FILE` (e.g. notes or web-fetch)."
            } else {
                "The tools plugins offer none (see the warnings above)."
            }
        )?;
        return Ok(());
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    writeln!(out, "{:<width$}  {:<9}  {:<14}  WHY", "TOOL", "READ-ONLY", "DECISION")?;
    for r in &rows {
        writeln!(
            out,
            "{:<width$}  {:<9}  {:<14}  {}",
            r.name,
            if r.read_only { "yes" } else { "no" },
            r.workspace.decision,
            r.workspace.why
        )?;
        for c in &r.channels {
            writeln!(out, "{:<width$}  {:<9}  {:<14}  from channel {}: {}", "", "", c.verdict.decision, c.channel, c.verdict.why)?;
        }
    }
    Ok(())
}

fn call(ws: &Workspace, name: &str, args: &str, out: &mut impl Write) -> Result<()> {
    let Some((plugin, tool)) = name.split_once('.').filter(|(p, t)| !p.is_empty() && !t.is_empty()) else {
        bail!("{name:?} is not PLUGIN.TOOL (e.g. notes.search); `kata tool list` shows the tools");
    };
    match serde_json::from_str::<serde_json::Value>(args) {
        Ok(v) if v.is_object() => {}
        _ => bail!("the arguments {args:?} are not a JSON object; write them like '{{\"query\": \"kata\"}}'"),
    }
    let outcome = match crate::control::Client::connect(ws) {
        Ok(mut client) => {
            let req = crate::control::Request::ToolCall { plugin: plugin.into(), tool: tool.into(), args: args.into() };
            // A call may wait for an approval: up to [tools] ask_timeout.
            let v = client.call(&req, std::time::Duration::from_secs(24 * 3600))?;
            let text = v["text"].as_str().unwrap_or_default().to_string();
            match v["outcome"].as_str() {
                Some("ran") => Outcome::Ran(Ok(text)),
                Some("failed") => Outcome::Ran(Err(text)),
                Some("refused") => Outcome::Refused { reason: text, policy: v["policy"].as_str().unwrap_or_default().into() },
                _ => Outcome::Unknown(name.into()),
            }
        }
        Err(_) => {
            let (policy, _, settings) = load_policy(ws)?;
            let (tools, db) = toolbox(ws, &policy, &settings)?;
            let ctx = CallContext::workspace("cli/tool-call", settings.tools_mode);
            runtime()?.block_on(async {
                let outcome = tools.run(&ctx, plugin, tool, args).await;
                // The audit row of a call that ran is written in the background.
                if let Err(e) = db.flush().await {
                    tracing::error!("cannot write the audit log: {e:#}");
                }
                outcome
            })
        }
    };
    match outcome {
        Outcome::Ran(Ok(text)) => {
            writeln!(out, "{text}")?;
            Ok(())
        }
        Outcome::Ran(Err(e)) => bail!("{name} ran and failed: {e}"),
        Outcome::Refused { reason, policy } => {
            bail!("kata did not run {name}: {reason} (policy: {policy}); `kata tool list` shows what the mode lets run")
        }
        Outcome::Unknown(_) => bail!("there is no tool {name}: `kata tool list` shows the tools of the enabled tools plugins"),
    }
}
