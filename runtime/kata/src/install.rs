//! Installing plugins into a workspace: `kata plugin add|list|inspect|remove|upgrade`.
//!
//! A workspace records its plugins in kata.toml (`[plugins.NAME] path = …`)
//! and keeps their code content-addressed under `.kata/plugins/<sha256>.wasm`.
//! Every command that changes something validates first and writes last,
//! each file through a temporary file and a rename, so any failure leaves the
//! store and kata.toml exactly as they were.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::engine::Engine;
use crate::manifest::Manifest;
use crate::plugin::{self, ComponentInfo, LoadError};
use crate::policy::{PluginGrants, Policy};
use crate::workspace::Workspace;

/// Largest plugin `kata plugin add` downloads by default.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 20;

/// Where plugin code is stored, relative to the workspace.
const STORE_DIR: &str = ".kata/plugins";

pub use crate::plugin::Kind;

/// Component bytes and where they came from.
pub struct Fetched {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// File path or URL, for messages.
    pub origin: String,
}

/// Read a plugin from a file, an http(s) URL or an OCI registry
/// (`oci://REGISTRY/NAME:TAG` or `@sha256:…`, see [`crate::oci`]), at most
/// `max_size` bytes, checking `sha256` when given.
pub fn fetch(source: &str, sha256: Option<&str>, max_size: u64) -> Result<Fetched> {
    let bytes = if crate::oci::Reference::is_oci(source) {
        crate::oci::pull(source, max_size)?.bytes
    } else if source.starts_with("http://") || source.starts_with("https://") {
        download(source, max_size)?
    } else {
        let meta = std::fs::metadata(source).with_context(|| format!("cannot read {source}"))?;
        if meta.len() > max_size {
            bail!("{source} is {} bytes, over the {max_size}-byte limit (--max-size)", meta.len());
        }
        std::fs::read(source).with_context(|| format!("cannot read {source}"))?
    };
    if let Some(want) = sha256 {
        let got = hex::encode(Sha256::digest(&bytes));
        if !got.eq_ignore_ascii_case(want.trim()) {
            bail!("{source} has sha256 {got}, but --sha256 expects {want}; nothing was installed");
        }
    }
    Ok(Fetched { bytes, origin: source.to_string() })
}

fn download(url: &str, max_size: u64) -> Result<Vec<u8>> {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().context("cannot start the HTTP client")?;
    let resp = client.get(url).send().with_context(|| format!("cannot download {url}"))?;
    if !resp.status().is_success() {
        bail!("downloading {url} failed: HTTP {}", resp.status());
    }
    if let Some(len) = resp.content_length()
        && len > max_size
    {
        bail!("{url} is {len} bytes, over the {max_size}-byte limit (--max-size); nothing was installed");
    }
    let mut bytes = Vec::new();
    resp.take(max_size + 1).read_to_end(&mut bytes).with_context(|| format!("cannot download {url}"))?;
    if bytes.len() as u64 > max_size {
        bail!("{url} is larger than the {max_size}-byte limit (--max-size); nothing was installed");
    }
    Ok(bytes)
}

/// A component that passed every check.
pub struct Validated {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// sha256, hex.
    pub hash: String,
    /// What it declares.
    pub info: ComponentInfo,
    /// Its kind.
    pub kind: Kind,
    component: Component,
}

/// Check that `fetched` is a component kata can run: a component (not a core
/// module), for a WIT version this host supports, of a world kata runs, and
/// importing only what kata provides. Compiles it (with a spinner on a terminal).
pub fn validate(engine: &Engine, fetched: &Fetched) -> Result<Validated> {
    let origin = &fetched.origin;
    let info = plugin::inspect(&fetched.bytes, origin)?;
    match &info.wit_version {
        Some(v) => plugin::check_version(v, origin)?,
        None => bail!("{origin} does not say which kata:plugin version it targets; build it with a kata SDK"),
    }
    let kind = match Kind::of(&info) {
        // Channels, tools and services all run.
        Some(k) => k,
        None => {
            let found = if info.exports.is_empty() { "nothing".into() } else { info.exports.join(", ") };
            return Err(LoadError::WrongWorld { path: origin.clone(), found }.into());
        }
    };
    let spinner = terminal_spinner(format!("compiling {origin}"));
    let compiled = engine.compile_uncached(&fetched.bytes);
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let component = compiled.map_err(|e| LoadError::Invalid { path: origin.clone(), reason: format!("{e:#}") })?;
    let linker = plugin::linker(engine)?;
    linker.instantiate_pre(&component).map_err(|e| LoadError::Imports { path: origin.clone(), reason: format!("{e:#}") })?;
    Ok(Validated { hash: hex::encode(Sha256::digest(&fetched.bytes)), bytes: fetched.bytes.clone(), info, kind, component })
}

fn terminal_spinner(msg: String) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let s = indicatif::ProgressBar::new_spinner();
    s.set_message(msg);
    s.enable_steady_tick(Duration::from_millis(100));
    Some(s)
}

/// One thing a plugin asks for, and whether the policy grants it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Request {
    /// `network`, `secret` or `files`.
    pub kind: &'static str,
    /// The entry: a URL prefix, a secret name, a guest directory.
    pub what: String,
    /// The author's explanation.
    pub why: String,
    /// Whether kata.toml grants it today.
    pub granted: bool,
}

/// Compare what a manifest asks for with what a plugin's grants give.
pub fn review(manifest: Option<&Manifest>, grants: Option<&PluginGrants>) -> Vec<Request> {
    let Some(m) = manifest else { return Vec::new() };
    let mut out = Vec::new();
    let no_config = std::collections::BTreeMap::new();
    for entry in &m.network {
        if entry == crate::manifest::ANY_NETWORK {
            // Nothing to grant on its behalf: it gets what kata.toml lists.
            out.push(Request {
                kind: "network",
                what: "any URL kata.toml grants it".into(),
                why: "it asks for no host of its own; add the sites it may reach to `network` in its [plugins.NAME] table".into(),
                granted: true,
            });
            continue;
        }
        match crate::manifest::expand_entry(entry, grants.map_or(&no_config, |g| &g.config)) {
            Some(url) => {
                let granted = grants.is_some_and(|g| network_covered(g, &url));
                out.push(Request { kind: "network", what: url, why: String::new(), granted });
            }
            // Depends on configuration that is not set: asks for nothing yet.
            None => out.push(Request {
                kind: "network",
                what: entry.clone(),
                why: "only once that configuration is set; grant the URL it names then".into(),
                granted: true,
            }),
        }
    }
    for (name, why) in &m.secrets {
        let granted = grants.is_some_and(|g| g.secrets.contains_key(name));
        out.push(Request { kind: "secret", what: name.clone(), why: why.clone(), granted });
    }
    for f in &m.files {
        out.push(Request {
            kind: "files",
            what: format!("{} ({})", f.guest, f.mode),
            why: f.description.clone(),
            // File grants are written by hand (kata cannot guess the host
            // directory); they never block an install.
            granted: true,
        });
    }
    out
}

/// Does some grant cover a requested network entry? Exact text, or a grant
/// that allows the requested URL prefix.
fn network_covered(g: &PluginGrants, entry: &str) -> bool {
    if g.network.iter().any(|n| n.source == entry) {
        return true;
    }
    let Ok(uri) = entry.parse::<http::Uri>() else { return false };
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else { return false };
    let port = uri.port_u16().unwrap_or(if scheme == "http" || scheme == "ws" { 80 } else { 443 });
    g.network_grant(scheme, host.trim_start_matches('[').trim_end_matches(']'), port, uri.path()).is_some()
}

/// The environment variable `--yes` binds a secret to: `PLUGIN_SECRET`.
fn secret_env(plugin: &str, secret: &str) -> String {
    format!("{plugin}_{secret}").to_ascii_uppercase().replace('-', "_")
}

/// The kata.toml lines that would grant the missing requests.
pub fn grant_snippet(name: &str, path: Option<&str>, missing: &[Request]) -> String {
    let mut s = format!("[plugins.{name}]\n");
    if let Some(p) = path {
        s.push_str(&format!("path = {}\n", toml_edit::Value::from(p)));
    }
    let net: Vec<String> =
        missing.iter().filter(|r| r.kind == "network").map(|r| toml_edit::Value::from(r.what.as_str()).to_string()).collect();
    if !net.is_empty() {
        s.push_str(&format!("network = [{}]\n", net.join(", ")));
    }
    let secrets: Vec<String> =
        missing.iter().filter(|r| r.kind == "secret").map(|r| format!("{} = \"env:{}\"", r.what, secret_env(name, &r.what))).collect();
    if !secrets.is_empty() {
        s.push_str(&format!("secrets = {{ {} }}\n", secrets.join(", ")));
    }
    s
}

/// Apply an edit to kata.toml, keeping the user's comments and order, and
/// write it only if the result is still a valid policy.
fn edit_policy(ws: &Workspace, edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<()>) -> Result<()> {
    let path = ws.policy_path();
    let text = crate::policy::read_text(&path)?;
    let mut doc: toml_edit::DocumentMut = text.parse().with_context(|| format!("{} is not valid TOML; fix it first", path.display()))?;
    edit(&mut doc)?;
    let new = doc.to_string();
    Policy::parse(&new, &path, ws.root()).context("the edited kata.toml would be invalid; nothing was changed")?;
    write_atomic(&path, new.as_bytes())
}

/// Write `bytes` to a temporary file beside `path`, then rename it over
/// `path`; the temporary file is removed when the rename fails.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot replace {}: {e}", path.display())
    })
}

/// The largest document position of `t` and the tables under it.
fn last_position(t: &toml_edit::Table) -> Option<isize> {
    let below = t.iter().filter_map(|(_, v)| v.as_table()).filter_map(last_position);
    t.position().into_iter().chain(below).max()
}

/// Where a new `[plugins.NAME]` table goes: right after the last existing
/// `[plugins.*]` table, or else at the end of the document. At the end, the
/// comments that trail the document (in `kata init`'s template: the rest of
/// the `[tools]` block and the commented examples) stay where they are, above
/// the new table, instead of ending up under it.
fn place_new_plugin_table(doc: &mut toml_edit::DocumentMut, table: &mut toml_edit::Table) {
    let last_plugin = doc.get("plugins").and_then(|p| p.as_table()).and_then(last_position);
    let last = last_position(doc.as_table()).unwrap_or(0);
    let position = last_plugin.unwrap_or(last + 1);
    table.set_position(Some(position));
    if position >= last {
        let trailing = doc.trailing().as_str().unwrap_or("").to_string();
        // One blank line between what precedes and the new header.
        let sep = if trailing.is_empty() {
            "\n"
        } else if trailing.ends_with("\n\n") {
            ""
        } else if trailing.ends_with('\n') {
            "\n"
        } else {
            "\n\n"
        };
        table.decor_mut().set_prefix(format!("{trailing}{sep}"));
        doc.set_trailing("");
    } else {
        table.decor_mut().set_prefix("\n");
    }
}

fn plugin_table<'d>(doc: &'d mut toml_edit::DocumentMut, name: &str) -> Result<&'d mut toml_edit::Table> {
    let exists = doc.get("plugins").and_then(|p| p.as_table()).is_some_and(|p| p.contains_key(name));
    if !exists {
        let mut table = toml_edit::Table::new();
        place_new_plugin_table(doc, &mut table);
        doc.entry("plugins")
            .or_insert_with(|| {
                let mut t = toml_edit::Table::new();
                t.set_implicit(true);
                toml_edit::Item::Table(t)
            })
            .as_table_mut()
            .context("`plugins` in kata.toml is not a table")?
            .insert(name, toml_edit::Item::Table(table));
    }
    let plugins = doc
        .entry("plugins")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .context("`plugins` in kata.toml is not a table")?;
    plugins
        .entry(name)
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_mut()
        .with_context(|| format!("`plugins.{name}` in kata.toml is not a table"))
}

/// Add the missing requests to a plugin's table (`--yes`).
fn grant_missing(table: &mut toml_edit::Table, name: &str, missing: &[Request]) -> Result<()> {
    for r in missing.iter().filter(|r| r.kind == "network") {
        let arr = table
            .entry("network")
            .or_insert_with(|| toml_edit::value(toml_edit::Array::new()))
            .as_array_mut()
            .context("`network` is not an array")?;
        arr.push(r.what.as_str());
    }
    for r in missing.iter().filter(|r| r.kind == "secret") {
        let secrets = table
            .entry("secrets")
            .or_insert_with(|| toml_edit::value(toml_edit::InlineTable::new()))
            .as_inline_table_mut()
            .context("`secrets` is not an inline table")?;
        secrets.insert(&r.what, format!("env:{}", secret_env(name, &r.what)).into());
    }
    Ok(())
}

fn print_review(out: &mut dyn Write, name: &str, requests: &[Request]) -> Result<()> {
    if requests.is_empty() {
        writeln!(out, "{name} asks for no network, secrets or files.")?;
        return Ok(());
    }
    writeln!(out, "{name} asks for:")?;
    for r in requests {
        let mark = if r.granted { "granted" } else { "NOT granted" };
        let why = if r.why.is_empty() { String::new() } else { format!(" — {}", r.why) };
        writeln!(out, "  {:<8} {}{why}  [{mark}]", r.kind, r.what)?;
    }
    Ok(())
}

fn store_path(ws: &Workspace, hash: &str) -> (PathBuf, String) {
    let rel = format!("{STORE_DIR}/{hash}.wasm");
    (ws.root().join(&rel), rel)
}

/// Store the bytes content-addressed; returns true if the file is new. A
/// stored file that no longer has its hash (tampered with) is rewritten with
/// the validated bytes: reinstalling is how the tamper refusal is repaired.
fn store(ws: &Workspace, v: &Validated) -> Result<bool> {
    let (path, _) = store_path(ws, &v.hash);
    if path.exists() {
        if matches!(plugin::read_plugin(&path), Err(LoadError::Tampered { .. })) {
            write_atomic(&path, &v.bytes)?;
        }
        return Ok(false);
    }
    ws.ensure_state_dir()?;
    std::fs::create_dir_all(path.parent().unwrap_or(ws.root())).with_context(|| format!("cannot create {STORE_DIR}"))?;
    write_atomic(&path, &v.bytes)?;
    Ok(true)
}

/// Remove a stored file unless another plugin still uses it.
fn release(ws: &Workspace, policy: &Policy, file: &Path, except: &str) {
    let store = ws.root().join(STORE_DIR);
    if !file.starts_with(&store) {
        return; // not ours: a path the user wrote by hand
    }
    let used = policy.plugins.values().any(|g| g.name != except && g.path.as_deref() == Some(file));
    if !used {
        let _ = std::fs::remove_file(file);
    }
}

/// Where a plugin came from and who published it, as recorded in kata.toml.
struct Provenance {
    source: String,
    verdict: crate::provenance::Verdict,
}

/// The source as recorded: an absolute path for a file (a relative one
/// means nothing later), a URL or OCI reference as given.
fn recorded_source(source: &str) -> String {
    if crate::oci::Reference::is_oci(source) || source.starts_with("http://") || source.starts_with("https://") {
        return source.to_string();
    }
    std::path::absolute(source).map_or_else(|_| source.to_string(), |p| p.display().to_string())
}

/// Store validated code and point `[plugins.NAME]` at it (adding the
/// `missing` grants when `yes`, and recording its source and publisher), all or nothing: if kata.toml cannot be
/// written, a newly stored file is removed again. Then cache the compiled
/// artifact for the daemon.
fn install(ws: &Workspace, engine: &Engine, v: &Validated, name: &str, missing: &[Request], yes: bool, prov: &Provenance) -> Result<()> {
    let (dest, rel) = store_path(ws, &v.hash);
    let created = store(ws, v)?;
    let edited = edit_policy(ws, |doc| {
        let table = plugin_table(doc, name)?;
        table.insert("path", toml_edit::value(rel));
        if yes {
            grant_missing(table, name, missing)?;
        }
        crate::provenance::record(doc, name, &prov.source, &prov.verdict)
    });
    if let Err(e) = edited {
        if created {
            let _ = std::fs::remove_file(&dest);
        }
        return Err(e);
    }
    engine.cache_compiled(&v.bytes, &v.component);
    Ok(())
}

/// Options of `kata plugin add`.
pub struct AddOptions<'a> {
    /// File or URL.
    pub source: &'a str,
    /// Name to install under (default: the manifest's).
    pub name: Option<&'a str>,
    /// Expected sha256.
    pub sha256: Option<&'a str>,
    /// Write the missing grants to kata.toml.
    pub yes: bool,
    /// Download/file size cap.
    pub max_size: u64,
    /// `--allow-unsigned`, `--allow-publisher-change` (and `yes` again, for
    /// trusting a new publisher key).
    pub consent: crate::provenance::Consent,
}

/// `kata plugin add`.
pub fn add(ws: &Workspace, opts: &AddOptions<'_>, out: &mut dyn Write) -> Result<()> {
    let policy = Policy::load(&ws.policy_path(), ws.root())?;
    let fetched = fetch(opts.source, opts.sha256, opts.max_size)?;
    let engine = Engine::new(Some(ws.cache_dir()))?;
    let v = validate(&engine, &fetched)?;
    let name = match opts.name {
        Some(n) => n.to_string(),
        None => match &v.info.manifest {
            Some(m) => m.name.clone(),
            None => Path::new(opts.source)
                .file_stem()
                .map(|s| s.to_string_lossy().to_ascii_lowercase().replace([' ', '.'], "-"))
                .unwrap_or_else(|| "plugin".into()),
        },
    };
    if !crate::policy::valid_plugin_name(&name) {
        bail!("plugin name {name:?} must be lowercase letters, digits, '-' or '_'; choose one with --name");
    }
    let (dest, _) = store_path(ws, &v.hash);
    let existing = policy.plugins.get(&name);
    if let Some(e) = existing
        && let Some(p) = &e.path
    {
        if p == &dest && dest.exists() && plugin::read_plugin(&dest).is_ok() {
            writeln!(out, "{name} is already installed from these exact bytes ({}); nothing to do.", &v.hash[..12])?;
            return Ok(());
        }
        if p == &dest && dest.exists() {
            // The stored file was tampered with: rewrite it from these bytes.
            let verdict = crate::provenance::decide(&policy, &name, opts.source, &v.bytes, None, &opts.consent, out)?;
            install(ws, &engine, &v, &name, &[], false, &Provenance { source: recorded_source(opts.source), verdict })?;
            writeln!(
                out,
                "Restored {name}'s stored code from {} (sha256 {}): it had been changed after installation.",
                opts.source,
                &v.hash[..12]
            )?;
            return Ok(());
        }
        bail!(
            "a plugin named {name} is already installed ({}); choose another name with --name, \
             or replace its code with `kata plugin upgrade {name} {}`",
            p.display(),
            opts.source
        );
    }
    let requests = review(v.info.manifest.as_ref(), existing);
    print_review(out, &name, &requests)?;
    let verdict = crate::provenance::decide(&policy, &name, opts.source, &v.bytes, None, &opts.consent, out)?;
    let missing: Vec<Request> = requests.iter().filter(|r| !r.granted).cloned().collect();
    if !missing.is_empty() && !opts.yes {
        writeln!(out, "\nTo grant them, add to {}:\n", ws.policy_path().display())?;
        write!(out, "{}", grant_snippet(&name, None, &missing))?;
        bail!(
            "{name} asks for {} capabilities kata.toml does not grant; add the lines above, or re-run with --yes \
             to have them added. Nothing was installed",
            missing.len()
        );
    }
    install(ws, &engine, &v, &name, &missing, opts.yes, &Provenance { source: recorded_source(opts.source), verdict })?;
    if opts.yes && !missing.is_empty() {
        writeln!(out, "Granted in kata.toml:\n{}", grant_snippet(&name, None, &missing))?;
        for r in missing.iter().filter(|r| r.kind == "secret") {
            writeln!(out, "Set {} before `kata run` (the plugin never sees it).", secret_env(&name, &r.what))?;
        }
    }
    writeln!(
        out,
        "Installed {name} ({} plugin, kata:plugin@{}, sha256 {}) as [plugins.{name}]. \
         A running daemon picks it up on its next start.",
        v.kind.as_str(),
        v.info.wit_version.as_deref().unwrap_or("?"),
        &v.hash[..12]
    )?;
    if v.kind == Kind::Service {
        writeln!(
            out,
            "The agent answers its messages in the channel conversation you name under [plugins.{name}]: \
             deliver_to = \"CHANNEL:CONVERSATION\" (e.g. \"telegram:123456\")."
        )?;
    }
    Ok(())
}

/// One row of `kata plugin list`.
#[derive(Debug, serde::Serialize)]
pub struct Listed {
    /// Name in kata.toml.
    pub name: String,
    /// Whether the daemon runs it.
    pub enabled: bool,
    /// channel, tools, service (None: unreadable or not installed).
    pub kind: Option<Kind>,
    /// The plugin's own version (manifest).
    pub version: Option<String>,
    /// kata:plugin version.
    pub wit_version: Option<String>,
    /// sha256 of the code.
    pub sha256: Option<String>,
    /// The code's file.
    pub path: Option<String>,
    /// Network grants.
    pub network: Vec<String>,
    /// Secret names granted.
    pub secrets: Vec<String>,
    /// Requests the policy does not grant.
    pub missing: Vec<String>,
    /// Why the file could not be read, if so.
    pub error: Option<String>,
    /// Messages in and replies out so far (from the workspace database).
    pub activity: Option<crate::store::PluginActivity>,
    /// Where it was installed from: a file, an http(s) URL or an `oci://`
    /// reference (kata.toml `source`).
    pub source: Option<String>,
    /// The stored component's signature: `signed`, `unsigned`,
    /// `unidentified` or `invalid` (None: the file could not be read).
    pub signature: Option<&'static str>,
    /// The publisher key: the verified signer, else the one kata.toml records.
    pub publisher: Option<String>,
    /// Whether that key is in `[trust] publishers`.
    pub trusted: bool,
    /// A disagreement between kata.toml's `publisher` and the stored
    /// component's signature, if any.
    pub provenance_warning: Option<String>,
}

/// `kata plugin list` as a whole: the plugins, and the daemon if one runs.
#[derive(Debug, serde::Serialize)]
pub struct Listing {
    /// The pid of the `kata run` serving this workspace, if any.
    pub daemon_pid: Option<u32>,
    /// One row per plugin.
    pub plugins: Vec<Listed>,
}

/// `kata plugin list`.
pub fn list(ws: &Workspace) -> Result<Listing> {
    let policy = Policy::load(&ws.policy_path(), ws.root())?;
    // The database is shared with a running daemon (WAL): reading is safe.
    let db = if ws.db_path().exists() { Some(crate::store::Db::open(&ws.db_path())?) } else { None };
    let mut rows = Vec::new();
    for g in policy.plugins.values() {
        let mut row = Listed {
            name: g.name.clone(),
            enabled: g.enabled,
            kind: None,
            version: None,
            wit_version: None,
            sha256: None,
            path: g.path.as_ref().map(|p| p.display().to_string()),
            network: g.network.iter().map(|n| n.source.clone()).collect(),
            secrets: g.secrets.keys().cloned().collect(),
            missing: vec![],
            error: None,
            activity: db.as_ref().and_then(|db| db.plugin_activity(&g.name).ok()),
            source: policy.file.plugins.get(&g.name).and_then(|e| e.source.clone()),
            signature: None,
            publisher: policy.file.plugins.get(&g.name).and_then(|e| e.publisher.clone()),
            trusted: false,
            provenance_warning: None,
        };
        match &g.path {
            None => row.error = Some("not installed (no path)".into()),
            Some(p) => match std::fs::read(p) {
                Err(e) => row.error = Some(format!("cannot read {}: {e}", p.display())),
                Ok(bytes) => {
                    let hash = hex::encode(Sha256::digest(&bytes));
                    let tampered = plugin::stored_hash(p).is_some_and(|want| want != hash);
                    row.sha256 = Some(hash);
                    let sig = crate::signing::check(&bytes, &policy.file.trust.keys());
                    row.signature = Some(sig.state());
                    if let Some(k) = sig.publisher() {
                        if row.publisher.as_deref().is_some_and(|rec| crate::policy::PublisherKey::parse(rec).ok() != Some(k)) {
                            row.provenance_warning = Some(format!(
                                "kata.toml records publisher {}, but the stored code is signed by {k}",
                                row.publisher.as_deref().unwrap_or("")
                            ));
                        }
                        row.publisher = Some(k.to_string());
                    } else if row.publisher.is_some() {
                        row.provenance_warning = Some(format!(
                            "kata.toml records publisher {}, but the stored code is {}",
                            row.publisher.as_deref().unwrap_or(""),
                            sig.state()
                        ));
                    }
                    row.trusted = row
                        .publisher
                        .as_deref()
                        .and_then(|k| crate::policy::PublisherKey::parse(k).ok())
                        .is_some_and(|k| policy.file.trust.trusts(&k));
                    match plugin::inspect(&bytes, &p.display().to_string()) {
                        Ok(_) if tampered => {
                            // The same refusal the daemon makes (and its advice).
                            row.error = plugin::read_plugin(p).err().map(|e| e.to_string());
                        }
                        Err(e) => row.error = Some(e.to_string()),
                        Ok(info) => {
                            row.kind = Kind::of(&info);
                            row.version = info.manifest.as_ref().map(|m| m.version.clone());
                            row.missing = review(info.manifest.as_ref(), Some(g))
                                .into_iter()
                                .filter(|r| !r.granted)
                                .map(|r| format!("{} {}", r.kind, r.what))
                                .collect();
                            row.wit_version = info.wit_version;
                        }
                    }
                }
            },
        }
        rows.push(row);
    }
    Ok(Listing { daemon_pid: ws.running_daemon(), plugins: rows })
}

/// Print `kata plugin list` as a table.
pub fn print_list(listing: &Listing, out: &mut dyn Write) -> Result<()> {
    let rows = &listing.plugins;
    match listing.daemon_pid {
        Some(pid) => writeln!(out, "daemon: running (pid {pid})")?,
        None => writeln!(out, "daemon: not running")?,
    }
    if rows.is_empty() {
        writeln!(out, "No plugins in this workspace. Add one with `kata plugin add FILE.wasm`.")?;
        return Ok(());
    }
    writeln!(out, "{:<16} {:<8} {:<9} {:<6} {:<13} grants", "NAME", "KIND", "VERSION", "WIT", "SHA256")?;
    for r in rows {
        let grants = format!(
            "{} network, {} secrets{}{}",
            r.network.len(),
            r.secrets.len(),
            if r.missing.is_empty() { String::new() } else { format!("; missing: {}", r.missing.join(", ")) },
            if r.enabled { "" } else { " (disabled)" }
        );
        writeln!(
            out,
            "{:<16} {:<8} {:<9} {:<6} {:<13} {}",
            r.name,
            r.kind.map_or("?", Kind::as_str),
            r.version.as_deref().unwrap_or("?"),
            r.wit_version.as_deref().unwrap_or("?"),
            r.sha256.as_deref().map_or("-", |h| &h[..12]),
            r.error.as_deref().map_or(grants, |e| format!("ERROR: {e}")),
        )?;
        let from = r.source.as_deref().map_or("from: unrecorded".to_string(), |s| format!("from {s}"));
        let signed = match (r.signature, &r.publisher) {
            (Some("signed"), Some(k)) => format!("signed by {k}{}", if r.trusted { " (trusted)" } else { " (not in [trust] publishers)" }),
            (Some(state), _) => state.to_string(),
            (None, _) => "signature unknown".to_string(),
        };
        writeln!(out, "{:<16} {from}; {signed}", "")?;
        if let Some(w) = &r.provenance_warning {
            writeln!(out, "{:<16} WARNING: {w}", "")?;
        }
        if let Some(a) = &r.activity
            && (a.received > 0 || a.sent > 0 || a.pending > 0 || a.failed > 0)
        {
            write!(out, "{:<16} {} in, {} sent, {} pending, {} failed", "", a.received, a.sent, a.pending, a.failed)?;
            match &a.last_error {
                Some(e) if a.pending > 0 || a.failed > 0 => writeln!(out, "; last error: {e}")?,
                _ => writeln!(out)?,
            }
        }
    }
    Ok(())
}

/// `kata plugin inspect NAME|FILE`: a workspace plugin by name, else a file.
pub fn inspect(ws: Option<&Workspace>, target: &str, out: &mut dyn Write) -> Result<()> {
    let policy = ws.map(|w| Policy::load(&w.policy_path(), w.root())).transpose()?;
    let grants = policy.as_ref().and_then(|p| p.plugins.get(target));
    let file = match grants {
        Some(g) => g.path.clone().with_context(|| format!("plugin {target} is not installed (no path)"))?,
        None if Path::new(target).exists() => PathBuf::from(target),
        None => bail!("{target} is neither a plugin in this workspace nor a file"),
    };
    let origin = file.display().to_string();
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {origin}"))?;
    let info = plugin::inspect(&bytes, &origin)?;
    writeln!(out, "file:        {origin} ({} bytes)", bytes.len())?;
    writeln!(out, "sha256:      {}", hex::encode(Sha256::digest(&bytes)))?;
    let trust = policy.as_ref().map(|p| p.file.trust.clone()).unwrap_or_default();
    let signature = match crate::signing::check(&bytes, &trust.keys()) {
        crate::signing::Signature::Signed(k) if policy.is_some() => {
            format!("signed by {k} ({})", if trust.trusts(&k) { "trusted here" } else { "not in [trust] publishers" })
        }
        crate::signing::Signature::Signed(k) => format!("signed by {k}"),
        crate::signing::Signature::Invalid { reason, .. } => format!("INVALID: {reason}"),
        other => other.state().to_string(),
    };
    writeln!(out, "signature:   {signature}")?;
    if let Some(src) = grants.and_then(|g| policy.as_ref()?.file.plugins.get(&g.name)?.source.clone()) {
        writeln!(out, "source:      {src}")?;
    }
    writeln!(out, "kind:        {}", Kind::of(&info).map_or("none (not a kata plugin)", Kind::as_str))?;
    writeln!(out, "WIT version: kata:plugin@{}", info.wit_version.as_deref().unwrap_or("unknown"))?;
    writeln!(out, "language:    {}", crate::build::source_language(&bytes).as_deref().unwrap_or("unknown (the component does not say)"))?;
    if let Some(m) = &info.manifest {
        writeln!(out, "manifest:    {} {} — {}", m.name, m.version, m.description)?;
        for (k, why) in &m.config {
            writeln!(out, "  config {k}: {why}")?;
        }
    } else {
        writeln!(out, "manifest:    none")?;
    }
    writeln!(out, "exports:     {}", info.exports.join(", "))?;
    writeln!(out, "imports:")?;
    for i in &info.imports {
        writeln!(out, "  {i}")?;
    }
    if let Some(w) = ws {
        let engine = Engine::new(Some(w.cache_dir()))?;
        let cached = if engine.is_cached(&bytes) { "compiled (cached)" } else { "not compiled yet" };
        writeln!(out, "compile cache: {cached}")?;
    }
    let name = grants.map_or_else(|| info.manifest.as_ref().map_or("plugin".into(), |m| m.name.clone()), |g| g.name.clone());
    let requests = review(info.manifest.as_ref(), grants);
    print_review(out, &name, &requests)?;
    Ok(())
}

/// `kata plugin remove NAME [--purge]`.
pub fn remove(ws: &Workspace, name: &str, purge: bool, out: &mut dyn Write) -> Result<()> {
    let policy = Policy::load(&ws.policy_path(), ws.root())?;
    let Some(g) = policy.plugins.get(name) else {
        let names: Vec<&str> = policy.plugins.keys().map(String::as_str).collect();
        bail!("no plugin named {name} in kata.toml (plugins: {})", if names.is_empty() { "none".into() } else { names.join(", ") });
    };
    edit_policy(ws, |doc| {
        if let Some(plugins) = doc.get_mut("plugins").and_then(|p| p.as_table_mut()) {
            plugins.remove(name);
        }
        Ok(())
    })?;
    if let Some(p) = &g.path {
        release(ws, &policy, p, name);
    }
    if purge {
        let db = crate::store::Db::open(&ws.db_path())?;
        db.purge_plugin(name)?;
        writeln!(out, "Removed {name} and deleted its state.")?;
    } else {
        writeln!(out, "Removed {name}; its state is kept (use --purge to delete it). A running daemon stops it on its next start.")?;
    }
    Ok(())
}

/// `kata plugin upgrade NAME FILE [--yes]`.
pub fn upgrade(ws: &Workspace, name: &str, opts: &AddOptions<'_>, out: &mut dyn Write) -> Result<()> {
    let policy = Policy::load(&ws.policy_path(), ws.root())?;
    let Some(g) = policy.plugins.get(name) else {
        bail!("no plugin named {name} in kata.toml; install it with `kata plugin add {}`", opts.source);
    };
    let fetched = fetch(opts.source, opts.sha256, opts.max_size)?;
    let engine = Engine::new(Some(ws.cache_dir()))?;
    let v = validate(&engine, &fetched)?;
    let (dest, _) = store_path(ws, &v.hash);
    let before = crate::provenance::installed_publisher(&policy, name);
    if g.path.as_deref() == Some(dest.as_path()) {
        if plugin::read_plugin(&dest).is_ok() {
            writeln!(out, "{name} already runs these exact bytes ({}); nothing to do.", &v.hash[..12])?;
            return Ok(());
        }
        // The stored file was tampered with: rewrite it from these bytes.
        let verdict = crate::provenance::decide(&policy, name, opts.source, &v.bytes, Some(before), &opts.consent, out)?;
        install(ws, &engine, &v, name, &[], false, &Provenance { source: recorded_source(opts.source), verdict })?;
        writeln!(
            out,
            "Restored {name}'s stored code from {} (sha256 {}): it had been changed after installation.",
            opts.source,
            &v.hash[..12]
        )?;
        return Ok(());
    }
    let verdict = crate::provenance::decide(&policy, name, opts.source, &v.bytes, Some(before), &opts.consent, out)?;
    let requests = review(v.info.manifest.as_ref(), Some(g));
    let missing: Vec<Request> = requests.iter().filter(|r| !r.granted).cloned().collect();
    if !missing.is_empty() {
        writeln!(out, "The new version of {name} asks for more than kata.toml grants:")?;
        print_review(out, name, &missing)?;
        if !opts.yes {
            writeln!(out, "\nTo grant it, add to [plugins.{name}]:\n")?;
            write!(out, "{}", grant_snippet(name, None, &missing).trim_start_matches(&format!("[plugins.{name}]\n")))?;
            bail!("not upgraded: {name} now asks for {} ungranted capabilities; grant them or re-run with --yes", missing.len());
        }
    }
    install(ws, &engine, &v, name, &missing, opts.yes, &Provenance { source: recorded_source(opts.source), verdict })?;
    if let Some(old) = &g.path {
        release(ws, &policy, old, name);
    }
    writeln!(
        out,
        "Upgraded {name} to sha256 {} (kata:plugin@{}); its state and grants are kept.",
        &v.hash[..12],
        v.info.wit_version.as_deref().unwrap_or("?")
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(toml: &str) -> PluginGrants {
        let p = Policy::parse(toml, Path::new("kata.toml"), Path::new("/ws")).expect("policy");
        p.plugins.into_values().next().expect("one plugin")
    }

    #[test]
    fn review_compares_requests_with_grants() {
        let m = Manifest {
            name: "tg".into(),
            network: vec!["https://api.telegram.org/bot".into(), "https://files.example.org".into()],
            secrets: [("bot_token".to_string(), "token".to_string())].into(),
            ..Default::default()
        };
        let g = grants("[plugins.tg]\nnetwork = [\"https://api.telegram.org\"]\n");
        let r = review(Some(&m), Some(&g));
        let granted: Vec<(String, bool)> = r.iter().map(|r| (r.what.clone(), r.granted)).collect();
        assert_eq!(
            granted,
            vec![("https://api.telegram.org/bot".into(), true), ("https://files.example.org".into(), false), ("bot_token".into(), false)]
        );
        let missing: Vec<Request> = r.into_iter().filter(|r| !r.granted).collect();
        let snippet = grant_snippet("tg", None, &missing);
        assert_eq!(snippet, "[plugins.tg]\nnetwork = [\"https://files.example.org\"]\nsecrets = { bot_token = \"env:TG_BOT_TOKEN\" }\n");
        // The snippet is itself a valid policy.
        Policy::parse(&snippet, Path::new("k"), Path::new("/")).expect("valid snippet");
    }
}
