//! The workspace policy: `kata.toml` parsed and validated, with no wasmtime in
//! sight so it can be tested alone.
//!
//! The policy is the only source of grants. A plugin gets the network hosts,
//! secrets, configuration and limits its `[plugins.NAME]` table names, and
//! nothing else. Everything is checked once, when the file is loaded, so a bad
//! policy fails at start with a message that names the file, line and key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Errors found while loading a policy file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or a key has the wrong type or name.
    #[error("{path}: {message}")]
    Parse {
        /// The policy file.
        path: PathBuf,
        /// toml's message, which names the line, column and key.
        message: String,
    },
    /// A value parsed but is not valid (a bad network entry, an unknown secret source…).
    #[error("{path}: {location}: {message}")]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// `line N, key K` or the table path of the bad value.
        location: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// The whole `kata.toml` of a workspace.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// `[daemon]`: settings of `kata run`.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// `[agent]`: which agent answers messages.
    #[serde(default)]
    pub agent: AgentConfig,
    /// `[plugins.NAME]`: one table per plugin instance.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginEntry>,
}

/// `[daemon]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Log format: `human` (default) or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// How many daemon-triggered sessions may run at once.
    #[serde(default = "default_sessions")]
    pub max_concurrent_sessions: u32,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self { log_format: LogFormat::Human, max_concurrent_sessions: default_sessions() }
    }
}

fn default_sessions() -> u32 {
    3
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[agent]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The backend: only `echo` exists so far.
    #[serde(default)]
    pub backend: AgentBackend,
    /// The echo backend's reply template. `{text}`, `{sender}` and `{channel}` are replaced.
    #[serde(default = "default_template")]
    pub template: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self { backend: AgentBackend::Echo, template: default_template() }
    }
}

fn default_template() -> String {
    "{text}".to_string()
}

/// Which agent backend answers messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentBackend {
    /// Replies with a template filled from the message (default; needs nothing).
    #[default]
    Echo,
}

/// `[plugins.NAME]`: one plugin and everything it is granted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// The component file, relative to the workspace directory. A table
    /// without `path` holds grants for a plugin not installed yet
    /// (`kata plugin add` fills it in); the daemon skips it.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Set to false to keep the entry but not run the plugin.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Network grants: `scheme://host[:port][/path-prefix]`, `*.` wildcards allowed.
    #[serde(default)]
    pub network: Vec<String>,
    /// Secrets: `NAME = "env:VAR"` or `NAME = "file:PATH"`.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Non-secret configuration the plugin reads with `config-get`.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Resource limits for each instance.
    #[serde(default)]
    pub limits: LimitsEntry,
}

fn yes() -> bool {
    true
}

/// `limits = { ... }` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsEntry {
    /// Memory cap per instance, e.g. `"64MiB"`.
    pub memory: Option<String>,
    /// CPU budget per call, e.g. `"200ms"` (time waiting on I/O does not count).
    pub cpu_per_call: Option<String>,
    /// Wall-clock cap per call, e.g. `"60s"` (covers long polls).
    pub call_timeout: Option<String>,
}

/// Resource limits, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum linear memory per instance, in bytes.
    pub memory_bytes: usize,
    /// CPU time a single call may use.
    pub cpu_per_call: Duration,
    /// Wall-clock time a single call may take.
    pub call_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            cpu_per_call: Duration::from_millis(200),
            call_timeout: Duration::from_secs(60),
        }
    }
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the daemon.
    Env(String),
    /// A file (relative paths are resolved against the workspace).
    File(PathBuf),
}

impl SecretSource {
    /// Parse `env:VAR` or `file:PATH`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(var) = s.strip_prefix("env:") {
            if var.is_empty() {
                return Err("`env:` needs a variable name, e.g. \"env:TELEGRAM_BOT_TOKEN\"".into());
            }
            Ok(Self::Env(var.to_string()))
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("`file:` needs a path, e.g. \"file:secrets/token\"".into());
            }
            Ok(Self::File(PathBuf::from(path)))
        } else {
            Err(format!(
                "unknown secret source {s:?}: write \"env:VARIABLE\" or \"file:PATH\" (secret values never go in kata.toml)"
            ))
        }
    }

    /// Read the value now. `base` resolves relative file paths.
    pub fn resolve(&self, base: &Path) -> Result<String, String> {
        match self {
            Self::Env(var) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set")),
            Self::File(p) => {
                let p = base.join(p);
                std::fs::read_to_string(&p)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))
            }
        }
    }
}

/// One network grant: `scheme://host[:port][/path-prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkGrant {
    /// As written in kata.toml, for messages.
    pub source: String,
    scheme: String,
    /// Lowercase host; a leading `*.` matches any subdomain (not the bare domain).
    host: String,
    port: u16,
    path_prefix: String,
}

impl fmt::Display for NetworkGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

impl NetworkGrant {
    /// Parse one entry of a `network` list.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            format!("network entry {s:?} has no scheme: write it as \"https://host[:port][/path]\"")
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "ws" | "wss" | "tcp" | "tls") {
            return Err(format!(
                "network entry {s:?}: scheme {scheme:?} is not one of http, https, ws, wss, tcp, tls"
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') || path.contains(['?', '#']) {
            return Err(format!(
                "network entry {s:?}: only scheme, host, port and path prefix are allowed (no user, query or fragment)"
            ));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("network entry {s:?}: bad host or port {authority:?}"))?;
        let port = match port {
            Some(p) => p,
            None => default_port(&scheme).ok_or_else(|| {
                format!("network entry {s:?}: scheme {scheme} needs an explicit port")
            })?,
        };
        let host = host.to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if bare.is_empty() || bare.contains('*') {
            return Err(format!(
                "network entry {s:?}: a wildcard may only be a leading \"*.\" (e.g. \"https://*.example.com\")"
            ));
        }
        Ok(Self { source: s.to_string(), scheme, host, port, path_prefix: path.to_string() })
    }

    /// Does a request to `scheme://host:port/path` fall under this grant?
    pub fn allows(&self, scheme: &str, host: &str, port: u16, path: &str) -> bool {
        if !self.scheme.eq_ignore_ascii_case(scheme) || self.port != port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
            None => host == self.host,
        };
        host_ok && path_has_prefix(path, &self.path_prefix)
    }
}

/// `path` is under `prefix`. A prefix ending in `/` or the bare `/` is a
/// directory; otherwise it matches as a string prefix (so `/bot` covers
/// `/bot123:abc/getUpdates`, as Telegram's URL layout needs). `..` segments
/// never match, so a prefix cannot be escaped.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if path.split('/').any(|seg| seg == ".." || seg.eq_ignore_ascii_case("%2e%2e")) {
        return false;
    }
    path.starts_with(prefix)
}

/// Split `host[:port]`, with IPv6 literals in brackets.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((h, port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h, Some(p.parse().ok()?))),
        Some(_) => None,
        None if !authority.is_empty() => Some((authority, None)),
        None => None,
    }
}

/// Everything one plugin is granted, validated and ready for the engine.
#[derive(Debug, Clone)]
pub struct PluginGrants {
    /// The plugin's name (its `[plugins.NAME]` key).
    pub name: String,
    /// The component file, absolute (None: not installed yet).
    pub path: Option<PathBuf>,
    /// Whether the daemon runs it.
    pub enabled: bool,
    /// Network grants in kata.toml order.
    pub network: Vec<NetworkGrant>,
    /// Secret names and where their values come from.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Non-secret configuration, each value rendered as text.
    pub config: BTreeMap<String, String>,
    /// Resource limits.
    pub limits: Limits,
}

impl PluginGrants {
    /// Find the grant that allows a request, if any.
    pub fn network_grant(&self, scheme: &str, host: &str, port: u16, path: &str) -> Option<&NetworkGrant> {
        self.network.iter().find(|g| g.allows(scheme, host, port, path))
    }
}

/// A loaded, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it came from.
    pub path: PathBuf,
    /// The parsed file.
    pub file: PolicyFile,
    /// Per-plugin grants, by name.
    pub plugins: BTreeMap<String, PluginGrants>,
}

impl Policy {
    /// Read and validate `path`. Relative plugin and secret paths resolve against `workspace`.
    pub fn load(path: &Path, workspace: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path, workspace)
    }

    /// Validate policy text (`path` is used in messages only).
    pub fn parse(text: &str, path: &Path, workspace: &Path) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: path.to_path_buf(),
            message: one_paragraph(&e.to_string()),
        })?;
        let invalid = |key: String, message: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            location: locate(text, &key),
            message,
        };
        let mut plugins = BTreeMap::new();
        for (name, entry) in &file.plugins {
            if !valid_plugin_name(name) {
                return Err(invalid(
                    format!("plugins.{name}"),
                    format!("plugin name {name:?} must be lowercase letters, digits, '-' or '_'"),
                ));
            }
            let network = entry
                .network
                .iter()
                .map(|s| NetworkGrant::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| invalid(format!("plugins.{name}.network"), m))?;
            let secrets = entry
                .secrets
                .iter()
                .map(|(k, v)| SecretSource::parse(v).map(|s| (k.clone(), s)))
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map_err(|m| invalid(format!("plugins.{name}.secrets"), m))?;
            let config = entry
                .config
                .iter()
                .map(|(k, v)| {
                    let s = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect();
            let limits = resolve_limits(&entry.limits)
                .map_err(|m| invalid(format!("plugins.{name}.limits"), m))?;
            plugins.insert(
                name.clone(),
                PluginGrants {
                    name: name.clone(),
                    path: entry.path.as_ref().map(|p| workspace.join(p)),
                    enabled: entry.enabled,
                    network,
                    secrets,
                    config,
                    limits,
                },
            );
        }
        Ok(Self { path: path.to_path_buf(), file, plugins })
    }
}

/// Whether `name` is a valid plugin name: 1-64 lowercase letters, digits, `-` or `_`.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn resolve_limits(l: &LimitsEntry) -> Result<Limits, String> {
    let d = Limits::default();
    Ok(Limits {
        memory_bytes: match &l.memory {
            Some(s) => parse_size(s).map_err(|e| format!("memory: {e}"))?,
            None => d.memory_bytes,
        },
        cpu_per_call: match &l.cpu_per_call {
            Some(s) => parse_duration(s).map_err(|e| format!("cpu_per_call: {e}"))?,
            None => d.cpu_per_call,
        },
        call_timeout: match &l.call_timeout {
            Some(s) => parse_duration(s).map_err(|e| format!("call_timeout: {e}"))?,
            None => d.call_timeout,
        },
    })
}

/// Parse a size such as `64MiB`, `512KiB`, `1GiB` or a plain byte count.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("{s:?} is not a size like \"64MiB\""))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "K" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        "GiB" | "GB" | "G" => 1 << 30,
        u => return Err(format!("unknown size unit {u:?} in {s:?}: use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// Parse a duration such as `200ms`, `2s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like \"200ms\" or \"2s\""))?;
    Ok(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        u => return Err(format!("unknown duration unit {u:?} in {s:?}: use ms, s, m or h")),
    })
}

/// Best-effort `line N` for a dotted key, so validation errors point into the file.
fn locate(text: &str, dotted: &str) -> String {
    let mut parts = dotted.split('.');
    let (Some(_), Some(name)) = (parts.next(), parts.next()) else {
        return format!("key {dotted}");
    };
    let field = parts.next();
    let header = format!("[plugins.{name}]");
    let mut in_table = false;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            in_table = l == header;
            if in_table && field.is_none() {
                return format!("line {}, key {dotted}", i + 1);
            }
            continue;
        }
        if in_table
            && let Some(f) = field
            && l.split('=').next().map(str::trim) == Some(f)
        {
            return format!("line {}, key {dotted}", i + 1);
        }
    }
    format!("key {dotted}")
}

/// toml's messages span several lines (a source snippet); keep them readable
/// but make sure they read as one paragraph after the file name.
fn one_paragraph(msg: &str) -> String {
    let lines: Vec<&str> = msg.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    // toml puts "TOML parse error at line L, column C" first and the reason last.
    match (lines.first(), lines.last()) {
        (Some(first), Some(last)) if lines.len() > 1 => {
            let snippet: Vec<&str> = lines[1..lines.len() - 1]
                .iter()
                .filter_map(|l| l.split_once('|').map(|(_, code)| code.trim()))
                .filter(|c| !c.is_empty() && !c.chars().all(|ch| ch == '^'))
                .collect();
            let at = first.trim_start_matches("TOML parse error at ");
            if snippet.is_empty() {
                format!("{at}: {last}")
            } else {
                format!("{at}: {last} (in `{}`)", snippet.join(" "))
            }
        }
        _ => msg.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(s: &str) -> NetworkGrant {
        NetworkGrant::parse(s).expect("valid grant")
    }

    #[test]
    fn grant_matches_scheme_host_port_and_prefix() {
        let g = grant("https://api.telegram.org/bot");
        assert!(g.allows("https", "api.telegram.org", 443, "/bot123:abc/getUpdates"));
        assert!(g.allows("https", "API.Telegram.org", 443, "/bot"));
        assert!(!g.allows("http", "api.telegram.org", 443, "/bot1/x"));
        assert!(!g.allows("https", "api.telegram.org", 8443, "/bot1/x"));
        assert!(!g.allows("https", "api.telegram.org.evil.com", 443, "/bot1/x"));
        assert!(!g.allows("https", "api.telegram.org", 443, "/file/bot1"));
        assert!(!g.allows("https", "api.telegram.org", 443, "/bot1/../../admin"));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let g = grant("https://*.example.com");
        assert!(g.allows("https", "a.example.com", 443, "/"));
        assert!(g.allows("https", "a.b.example.com", 443, "/x"));
        assert!(!g.allows("https", "example.com", 443, "/"));
        assert!(!g.allows("https", "badexample.com", 443, "/"));
    }

    #[test]
    fn ports_and_ipv6() {
        let g = grant("http://127.0.0.1:19000");
        assert!(g.allows("http", "127.0.0.1", 19000, "/anything"));
        assert!(!g.allows("http", "127.0.0.1", 19001, "/"));
        let g = grant("http://[::1]:8080/api/");
        assert!(g.allows("http", "::1", 8080, "/api/x"));
        assert!(!g.allows("http", "::1", 8080, "/apix"));
    }

    #[test]
    fn bad_grants_are_explained() {
        for (s, want) in [
            ("api.telegram.org", "no scheme"),
            ("ftp://x.org", "not one of"),
            ("https://*", "wildcard"),
            ("https://a.*.org", "wildcard"),
            ("https://x.org:99999", "bad host or port"),
            ("https://u@x.org", "no user"),
            ("tcp://irc.example.org", "explicit port"),
        ] {
            let e = NetworkGrant::parse(s).expect_err(s);
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn policy_errors_name_file_line_and_key() {
        let ws = Path::new("/ws");
        let p = Path::new("/ws/kata.toml");
        let e = Policy::parse("[plugins.tg]\npath = \"a.wasm\"\nnetwrk = []\n", p, ws).expect_err("typo");
        let msg = e.to_string();
        assert!(msg.contains("/ws/kata.toml") && msg.contains("line 3") && msg.contains("netwrk"), "{msg}");
        let e = Policy::parse("[plugins.tg]\npath = \"a.wasm\"\nnetwork = [\"nope\"]\n", p, ws).expect_err("bad");
        let msg = e.to_string();
        assert!(msg.contains("line 3") && msg.contains("plugins.tg.network") && msg.contains("no scheme"), "{msg}");
        let e = Policy::parse("[daemon\n", p, ws).expect_err("syntax");
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = Policy::parse("[plugins.tg]\npath = \"a\"\nsecrets = { t = \"hunter2\" }\n", p, ws)
            .expect_err("literal secret");
        assert!(e.to_string().contains("never go in kata.toml"), "{e}");
    }

    #[test]
    fn policy_resolves_paths_config_and_limits() {
        let text = r#"
[plugins.telegram]
path = "plugins/telegram.wasm"
network = ["http://127.0.0.1:19000/bot"]
secrets = { bot_token = "env:TG_TOKEN" }
config = { api_base = "http://127.0.0.1:19000", poll_timeout_s = 0 }
limits = { memory = "32MiB", cpu_per_call = "50ms" }
"#;
        let p = Policy::parse(text, Path::new("k.toml"), Path::new("/ws")).expect("valid");
        let g = &p.plugins["telegram"];
        assert_eq!(g.path.as_deref(), Some(Path::new("/ws/plugins/telegram.wasm")));
        assert_eq!(g.config["poll_timeout_s"], "0");
        assert_eq!(g.config["api_base"], "http://127.0.0.1:19000");
        assert_eq!(g.secrets["bot_token"], SecretSource::Env("TG_TOKEN".into()));
        assert_eq!(g.limits.memory_bytes, 32 << 20);
        assert_eq!(g.limits.cpu_per_call, Duration::from_millis(50));
        assert_eq!(g.limits.call_timeout, Duration::from_secs(60));
        assert!(g.network_grant("http", "127.0.0.1", 19000, "/botX/getUpdates").is_some());
        assert!(g.network_grant("http", "127.0.0.1", 19000, "/admin").is_none());
    }
}
