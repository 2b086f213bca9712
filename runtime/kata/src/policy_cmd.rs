//! `kata policy check|explain` and `kata audit`: the user's view of the
//! policy and of what the sandbox did with it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::audit::{format_time, parse_time};
use crate::policy::{Diagnostic, FileMode, PluginGrants, Policy, PolicyError, SecretSource, Severity, parse_duration};
use crate::store::{AuditQuery, AuditRow, Db, now_ms};
use crate::workspace::Workspace;

/// `kata policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a kata.toml: every error and warning as FILE:LINE:COLUMN;
    /// exits non-zero when there are errors.
    Check {
        /// The policy file (default: the workspace's kata.toml). Relative
        /// paths in it resolve against the file's directory.
        file: Option<PathBuf>,
    },
    /// Show everything a plugin is granted: network, secrets (names and
    /// sources, never values), directories, config and limits.
    Explain {
        /// The plugin's name (its [plugins.NAME] table).
        plugin: String,
    },
}

/// `kata audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this plugin's entries.
    #[arg(long, value_name = "NAME")]
    pub plugin: Option<String>,
    /// Only entries since a duration ago (`30m`, `2h`, `7d`) or a time
    /// (`2025-03-01T12:00:00Z`, `2025-03-01`).
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// At most this many entries (the newest), printed oldest first.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
    /// Print a JSON array for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Run `kata policy …`.
pub fn policy(workspace: Option<&Path>, cmd: PolicyCommand, out: &mut impl Write) -> Result<()> {
    match cmd {
        PolicyCommand::Check { file } => check(workspace, file.as_deref(), out),
        PolicyCommand::Explain { plugin } => {
            let ws = Workspace::discover(workspace)?;
            let policy = Policy::load(&ws.policy_path(), ws.root())?;
            let Some(g) = policy.plugins.get(&plugin) else {
                let names: Vec<&str> = policy.plugins.keys().map(String::as_str).collect();
                let known = if names.is_empty() { "it has none".to_string() } else { format!("it has {}", names.join(", ")) };
                bail!("{} has no [plugins.{plugin}] table ({known}); add one to grant it anything", policy.path.display());
            };
            explain(g, ws.root(), out)
        }
    }
}

fn check(workspace: Option<&Path>, file: Option<&Path>, out: &mut impl Write) -> Result<()> {
    let (path, root) = match file {
        Some(f) => {
            let f = std::path::absolute(f).with_context(|| format!("bad path {}", f.display()))?;
            let root = f.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
            (f, root)
        }
        None => {
            let ws = Workspace::discover(workspace)?;
            (ws.policy_path(), ws.root().to_path_buf())
        }
    };
    let text = match crate::policy::read_text(&path) {
        Ok(t) => t,
        // Not UTF-8: that one finding, located, like any other error.
        Err(PolicyError::Invalid { first, .. }) => {
            writeln!(out, "{}", first.render())?;
            bail!("{} has 1 error and 0 warnings; fix the error above (kata run refuses this policy)", path.display());
        }
        Err(e) => return Err(e.into()),
    };
    let analysis = Policy::analyze(&text, &path, &root);
    let mut diags = analysis.diagnostics.clone();
    if let Some(p) = &analysis.policy {
        diags.extend(p.environment_diagnostics(&text, &root, &crate::secret_store::lookup(&root)));
        diags.extend(load_diagnostics(p, &text, &root)?);
        diags.extend(unrequested_grants(p, &text));
        diags.sort_by_key(|d| (d.line, d.column, d.severity));
    }
    for d in &diags {
        writeln!(out, "{}", d.render())?;
    }
    let errors = diags.iter().filter(|d| d.severity == Severity::Error).count();
    let warnings = diags.len() - errors;
    let plural = |n: usize, w: &str| if n == 1 { format!("1 {w}") } else { format!("{n} {w}s") };
    if errors > 0 {
        bail!(
            "{} has {} and {}; fix the errors above (kata run refuses this policy)",
            path.display(),
            plural(errors, "error"),
            plural(warnings, "warning")
        );
    }
    let plugins = analysis.policy.as_ref().map_or(0, |p| p.plugins.len());
    writeln!(out, "{}: ok ({}, {})", path.display(), plural(plugins, "plugin"), plural(warnings, "warning"))?;
    Ok(())
}

/// Errors for every enabled plugin whose file `kata run` would refuse, found
/// by loading it through the daemon's own loaders (see
/// [`crate::daemon::check_loadable`]); and for a service whose `deliver_to`
/// names a plugin that would not run as a channel. Missing files are already
/// reported by [`Policy::environment_diagnostics`].
fn load_diagnostics(policy: &Policy, text: &str, root: &Path) -> Result<Vec<Diagnostic>> {
    let enabled: Vec<&PluginGrants> =
        policy.plugins.values().filter(|g| g.enabled && g.path.as_ref().is_some_and(|p| p.is_file())).collect();
    if enabled.is_empty() {
        return Ok(Vec::new());
    }
    // The workspace's compile cache when it has one, so the daemon reuses what
    // this compiles; a scratch database backs the loaders.
    let cache = root.join(".kata").is_dir().then(|| root.join(".kata/cache"));
    let engine = crate::engine::Engine::new(cache)?;
    let linker = crate::plugin::linker(&engine)?;
    let db = Db::open(Path::new(":memory:"))?;
    let mut out = Vec::new();
    let mut channels = Vec::new();
    for g in enabled {
        match crate::daemon::check_loadable(&engine, &linker, g, &db, root) {
            Ok(true) => channels.push(g.name.as_str()),
            Ok(false) => {}
            Err(e) => out.push(policy.plugin_diagnostic(
                text,
                &g.name,
                Some("path"),
                Severity::Error,
                format!("`kata run` would refuse this plugin: {e:#}"),
            )),
        }
    }
    let failed: Vec<String> = out.iter().filter_map(|d| d.key.strip_prefix("plugins.")?.strip_suffix(".path")).map(String::from).collect();
    for g in policy.plugins.values().filter(|g| g.enabled) {
        if let Some(t) = &g.deliver_to
            && !channels.contains(&t.plugin.as_str())
            && !failed.contains(&t.plugin)
            && g.path.as_ref().is_some_and(|p| crate::service::is_service(p))
        {
            out.push(policy.plugin_diagnostic(
                text,
                &g.name,
                Some("deliver_to"),
                Severity::Error,
                format!(
                    "\"{t}\" names {}, which would not run as a channel plugin (it is disabled, not installed, or not a channel), \
                     so `kata run` refuses this policy; name a channel that runs, e.g. \"telegram:123456\"",
                    t.plugin
                ),
            ));
        }
    }
    Ok(out)
}

/// Warnings for grants an installed plugin's manifest does not ask for: they
/// are never given to it (see `PluginGrants::restrict_to`), so they only make
/// the policy look wider than it is.
fn unrequested_grants(policy: &Policy, text: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for g in policy.plugins.values() {
        let Some(file) = &g.path else { continue };
        let Ok(bytes) = std::fs::read(file) else { continue };
        let Ok(info) = crate::plugin::inspect(&bytes, &file.display().to_string()) else { continue };
        let Some(manifest) = &info.manifest else { continue };
        let header = format!("[plugins.{}]", g.name);
        let line = text.lines().position(|l| l.trim() == header).map_or(0, |i| i + 1);
        let dropped = match g.clone().restrict_to(manifest) {
            Ok(d) => d,
            Err(e) => vec![format!("(the manifest is invalid: {e})")],
        };
        for d in dropped {
            out.push(Diagnostic {
                severity: Severity::Warning,
                path: policy.path.clone(),
                line,
                column: if line > 0 { 1 } else { 0 },
                key: format!("plugins.{}", g.name),
                message: format!("grants {d}, which the plugin's manifest does not ask for: it is not given to the plugin; remove it"),
            });
        }
    }
    out
}

fn explain(g: &PluginGrants, root: &Path, out: &mut impl Write) -> Result<()> {
    writeln!(out, "plugin {}", g.name)?;
    let state = match &g.path {
        None => "not installed (no `path`)".to_string(),
        Some(p) if !p.is_file() => format!("{} (missing)", p.display()),
        Some(p) => p.display().to_string(),
    };
    writeln!(out, "  file:    {state}{}", if g.enabled { "" } else { " — disabled" })?;

    writeln!(out, "  network:")?;
    if g.network.is_empty() {
        writeln!(out, "    none: every request is denied")?;
    }
    for n in &g.network {
        let methods = if n.methods().is_empty() { "any method".to_string() } else { n.methods().join(", ") };
        let reach = if n.private() {
            "any address, private ones included (private = true)"
        } else if n.names_address() {
            "the address it names"
        } else {
            "public addresses only"
        };
        let scope = if n.is_wildcard() { "every subdomain, " } else { "" };
        writeln!(out, "    {}  ({scope}{methods}; {reach}; paths under {})", n.source, n.path_prefix())?;
    }

    writeln!(out, "  secrets: (filled in at {{{{secret:NAME}}}} only in requests to granted hosts it is bound to)")?;
    if g.secrets.is_empty() {
        writeln!(out, "    none")?;
    }
    let store = g
        .secrets
        .values()
        .any(|s| matches!(s, SecretSource::Kata(_)))
        .then(|| crate::secret_store::SecretStore::for_workspace(root).and_then(|s| s.list()));
    for (name, src) in &g.secrets {
        let how = match src {
            SecretSource::Env(var) => {
                let set = if std::env::var_os(var).is_some() { "set" } else { "NOT SET here" };
                format!("environment variable {var} ({set})")
            }
            SecretSource::File(p) => {
                let p = root.join(p);
                let mode = file_mode(&p).map_or_else(|| "missing".to_string(), |m| format!("mode {m:04o}"));
                format!("file {} ({mode})", p.display())
            }
            SecretSource::Kata(key) => {
                let state = match &store {
                    Some(Ok(list)) => match list.iter().find(|l| &l.name == key) {
                        Some(l) => format!("set {}", crate::audit::format_time(l.set_ms)),
                        None => format!("NOT SET: run `kata secret set {key}`"),
                    },
                    Some(Err(e)) => format!("cannot read the store: {e}"),
                    None => String::new(),
                };
                format!("kata's secret store as {key} ({state})")
            }
        };
        writeln!(out, "    {name}  from {how}")?;
        if let Some(w) = g.webhook.as_ref().filter(|w| &w.secret == name) {
            writeln!(out, "      verifies webhook requests only ({}); never sent, never seen by the plugin", w.at)?;
            continue;
        }
        match g.secret_hosts.get(name) {
            Some(b) => writeln!(out, "      sent to: {} only ({})", b.describe(), b.at)?,
            None if g.network.is_empty() => writeln!(out, "      sent to: nowhere (no network grants)")?,
            None => writeln!(out, "      sent to: every granted host (no `hosts`; bind it with {{ from = \"...\", hosts = [...] }})")?,
        }
    }

    writeln!(out, "  tls:")?;
    if g.ca.is_empty() {
        writeln!(out, "    the public web roots (webpki-roots)")?;
    } else {
        writeln!(out, "    the public web roots, and:")?;
        for c in &g.ca {
            let n = c.certs.len();
            writeln!(out, "    {} ({n} certificate{})", c.path.display(), if n == 1 { "" } else { "s" })?;
        }
    }

    writeln!(out, "  files:")?;
    if g.files.is_empty() {
        writeln!(out, "    none: the plugin sees no file system")?;
    }
    for f in &g.files {
        let mode = match f.mode {
            FileMode::Ro => "read-only",
            FileMode::Rw => "read-write",
        };
        writeln!(out, "    {} -> {}  ({mode})", f.guest, f.host.display())?;
    }

    writeln!(out, "  config:")?;
    if g.config.is_empty() {
        writeln!(out, "    none")?;
    }
    for (k, v) in &g.config {
        writeln!(out, "    {k} = {v}")?;
    }

    let l = &g.limits;
    writeln!(out, "  senders:")?;
    match g.allow_from.as_deref() {
        None => writeln!(out, "    direct: pairing (a stranger gets a code; `kata pair approve CODE` lets them in)")?,
        Some(l) if l.iter().any(|a| a == "*") => writeln!(out, "    direct: anyone (allow_from = [\"*\"])")?,
        Some(l) => writeln!(out, "    direct: {} (allow_from), others get a pairing code", l.join(", "))?,
    }
    if g.groups.is_empty() {
        writeln!(out, "    groups: none (group messages never reach the agent; grant one with groups = [\"ID\"])")?;
    } else {
        let which = if g.groups.iter().any(|x| x == "*") { "every group".to_string() } else { g.groups.join(", ") };
        let mention =
            if g.require_mention { "only messages that mention or reply to the agent" } else { "every message (require_mention = false)" };
        writeln!(out, "    groups: {which}; {mention}; no pairing in groups")?;
    }

    if let Some(w) = &g.webhook {
        writeln!(out, "  webhook requests:")?;
        writeln!(
            out,
            "    signature checked by kata ({}): {}; a request that fails gets 401 and never reaches the plugin",
            w.at,
            w.describe()
        )?;
    }

    if let Some(h) = &g.hook {
        writeln!(out, "  hook ({}):", h.at)?;
        match h.position {
            Some(i) => writeln!(out, "    called at position {} of [hooks] order, at the points it lists", i + 1)?,
            None => writeln!(out, "    never called: [hooks] order does not name it")?,
        }
        let failure = match h.on_failure {
            crate::policy::hooks::OnFailure::Pass => "the message goes on unchanged (fail-open), audited",
            crate::policy::hooks::OnFailure::Hold => "the message is held back (fail-closed), kept, and tried again at `kata reload`",
        };
        writeln!(out, "    budget {:?} per call; when it fails: {failure}", h.budget)?;
    }
    match &g.scheduler {
        Some(s) => writeln!(out, "  scheduler: may create up to {} tasks of its own ({}, {})", s.max_tasks, s.describe(), s.at)?,
        None => writeln!(out, "  scheduler: not granted (add scheduler = {{ max_tasks = 20 }} to let it schedule prompts)")?,
    }

    writeln!(out, "  limits:")?;
    writeln!(out, "    memory              {} MiB per instance", l.memory_bytes >> 20)?;
    writeln!(out, "    cpu_per_call        {:?} (time waiting on I/O does not count)", l.cpu_per_call)?;
    writeln!(out, "    call_timeout        {:?}", l.call_timeout)?;
    writeln!(out, "    requests_per_minute {}", l.requests_per_minute)?;
    writeln!(out, "    max_response        {} bytes", l.max_response_bytes)?;
    writeln!(out, "    messages_per_minute {}", l.messages_per_minute)?;
    writeln!(out, "    bytes_per_minute    {} bytes", l.bytes_per_minute)?;
    writeln!(out, "    max_message         {} bytes (text cut, raw dropped beyond it)", l.max_message_bytes)?;
    writeln!(out, "    max_poll_bytes      {} bytes per poll, frame or tick", l.max_poll_bytes)?;
    writeln!(out, "    log_lines_per_minute {}", l.log_lines_per_minute)?;
    writeln!(out, "    max_log_line        {} bytes", l.max_log_line_bytes)?;
    writeln!(out, "    max_tool_result     {} bytes", l.max_tool_result_bytes)?;
    Ok(())
}

fn file_mode(p: &Path) -> Option<u32> {
    let meta = std::fs::metadata(p).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Some(meta.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some(0)
    }
}

/// Run `kata audit`.
pub fn audit(workspace: Option<&Path>, args: &AuditArgs, out: &mut impl Write) -> Result<()> {
    let ws = Workspace::discover(workspace)?;
    let since_ms = match &args.since {
        None => None,
        Some(s) => Some(match parse_duration(s) {
            Ok(d) => now_ms().saturating_sub(d.as_millis() as u64),
            Err(_) => parse_time(s).map_err(|e| anyhow::anyhow!("--since: {e}"))?,
        }),
    };
    let db = Db::open(&ws.db_path())?;
    let rows = db.audit_query(&AuditQuery { plugin: args.plugin.clone(), since_ms, limit: args.limit })?;
    if args.json {
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["time"] = serde_json::Value::String(format_time(r.ts_ms));
                v
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &json)?;
        writeln!(out)?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(out, "no audit entries{}", if args.plugin.is_some() || args.since.is_some() { " match" } else { " yet" })?;
    }
    for r in &rows {
        print_row(r, out)?;
    }
    Ok(())
}

fn print_row(r: &AuditRow, out: &mut impl Write) -> Result<()> {
    let what = [r.method.as_deref(), r.target.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
    writeln!(out, "{}  {}  {} {}  {what}", format_time(r.ts_ms), r.plugin, r.kind, r.verdict)?;
    if let Some(p) = &r.policy {
        let label = if r.verdict == "allow" { "grant" } else { "policy" };
        writeln!(out, "    {label}: {p}")?;
    }
    if r.verdict != "allow"
        && let Some(d) = &r.detail
    {
        writeln!(out, "    why: {d}")?;
    }
    Ok(())
}
