//! The workspace policy: `kata.toml` parsed and validated, with no wasmtime in
//! sight so it can be tested alone.
//!
//! The policy is the only source of grants. A plugin gets the network hosts,
//! secrets, configuration and limits its `[plugins.NAME]` table names, and
//! nothing else. Everything is checked once, when the file is loaded, so a bad
//! policy fails at start with a message that names the file, line and key.

pub mod agent;
pub mod hooks;
pub mod trust;
pub mod webhook;

pub use trust::{PublisherKey, TrustConfig, Unsigned};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Errors found while loading a policy file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read. (The I/O error is part of the message,
    /// not a `source`, so a `{:#}` chain names it once.)
    #[error("cannot read {path}: {error}")]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file has at least one error; the first one is reported here and
    /// `kata policy check` lists them all.
    #[error("{first}{}", more_errors(*.more))]
    Invalid {
        /// The first error, with file, line and column.
        first: Box<Diagnostic>,
        /// How many more errors the file has.
        more: usize,
    },
}

fn more_errors(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => " (and 1 more error; `kata policy check` lists all)".into(),
        n => format!(" (and {n} more errors; `kata policy check` lists all)"),
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The policy cannot be used as it is.
    Error,
    /// The policy works, but probably not as intended.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding about a policy file, located at `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The policy file.
    pub path: PathBuf,
    /// 1-based line (0 when the finding has no place in the file).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The dotted key it is about, e.g. `plugins.telegram.network[0]` (may be empty).
    pub key: String,
    /// What is wrong and what to do, as one paragraph.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Diagnostic {
    /// `file:line:col: severity: key: message`, the way compilers print findings.
    pub fn render(&self) -> String {
        let mut s = self.path.display().to_string();
        if self.line > 0 {
            s.push_str(&format!(":{}:{}", self.line, self.column));
        }
        s.push_str(&format!(": {}: ", self.severity));
        if !self.key.is_empty() {
            s.push_str(&format!("{}: ", self.key));
        }
        s.push_str(&self.message);
        s
    }
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
    /// `[tools]`: which agent tool calls may run (permission mode, allowlist).
    #[serde(default)]
    pub tools: ToolsConfig,
    /// `[plugins.NAME]`: one table per plugin instance.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginEntry>,
    /// `[trust]`: trusted plugin publishers and what happens to unsigned plugins.
    #[serde(default)]
    pub trust: TrustConfig,
    /// `[hooks]`: the hook plugins on the message path, in order.
    #[serde(default)]
    pub hooks: hooks::HooksConfig,
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
    /// Failures in a row (traps, limit hits, failed starts) after which a
    /// plugin's circuit breaker opens.
    #[serde(default = "default_breaker_threshold")]
    pub breaker_threshold: u32,
    /// How long an open breaker leaves a plugin alone (doubling on each
    /// re-opening, up to an hour), e.g. "60s".
    #[serde(default = "default_breaker_cooldown", deserialize_with = "de_duration")]
    pub breaker_cooldown: std::time::Duration,
    /// How long a control-socket connection may stay open without sending a
    /// request (before its first or between two) before the daemon closes
    /// it, e.g. "60s" (at least 1 s). `kata logs -f` and a `kata chat` turn
    /// waiting for its reply are not idle.
    #[serde(default = "default_control_idle_timeout", deserialize_with = "de_control_idle_timeout")]
    pub control_idle_timeout: std::time::Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Human,
            max_concurrent_sessions: default_sessions(),
            breaker_threshold: default_breaker_threshold(),
            breaker_cooldown: default_breaker_cooldown(),
            control_idle_timeout: default_control_idle_timeout(),
        }
    }
}

fn default_control_idle_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

fn de_control_idle_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let t = de_duration(d)?;
    if t < std::time::Duration::from_secs(1) {
        return Err(serde::de::Error::custom(format!(
            "control_idle_timeout = {t:?} would close every control connection before its first request; use at least \"1s\" (default \"60s\")"
        )));
    }
    Ok(t)
}

fn default_breaker_threshold() -> u32 {
    5
}

fn default_breaker_cooldown() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn default_sessions() -> u32 {
    3
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[agent]` settings. Durations and the API key are checked when the policy
/// is loaded (see [`agent::Settings::resolve`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The backend: `echo` (default), `openai` or `command`.
    #[serde(default)]
    pub backend: AgentBackend,
    /// The echo backend's reply template. `{text}`, `{sender}` and `{channel}` are replaced.
    #[serde(default = "default_template")]
    pub template: String,
    /// `openai`: the API base URL (default `https://api.openai.com/v1`); any
    /// OpenAI-compatible server (`/chat/completions` under it) works.
    #[serde(default)]
    pub base_url: Option<String>,
    /// `openai`: the model name sent with every request.
    #[serde(default)]
    pub model: Option<String>,
    /// `openai`: where the API key comes from, `env:VAR` or `file:PATH`
    /// (none: no `Authorization` header, for local servers).
    #[serde(default)]
    pub api_key: Option<String>,
    /// `openai`: the system prompt put before every conversation.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// `openai`: how long one HTTP request may take (default `120s`).
    #[serde(default)]
    pub request_timeout: Option<String>,
    /// `openai`: retries after a 429, a 5xx or a network error (default 4).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// `openai`: most rounds of tool calls in one turn (default 8).
    #[serde(default)]
    pub max_tool_rounds: Option<u32>,
    /// After this long without a message a conversation starts a new session
    /// (default `30m`).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// History kept as context, in characters (default 24000); beyond it the
    /// oldest turns are summarised (openai) or dropped (echo).
    #[serde(default)]
    pub history_budget: Option<usize>,
    /// How many daemon-triggered sessions may run a turn at once (default 3;
    /// `[daemon] max_concurrent_sessions` is read when this is not set).
    #[serde(default)]
    pub max_concurrent_sessions: Option<u32>,
    /// `openai`: ask for the reply as server-sent events (default true);
    /// false for servers that cannot stream.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `command`: the program and its arguments, run once per turn (no
    /// shell), e.g. `["llm", "-m", "gpt-4o-mini"]`.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `command`: how the turn goes in: `stdin` (default) or `argument` (appended as the last argument).
    #[serde(default)]
    pub command_input: Option<CommandInput>,
    /// `command`: what goes in: `text` (default: a transcript, then the
    /// message) or `jsonl` (one JSON object per history entry, the message last).
    #[serde(default)]
    pub command_format: Option<CommandFormat>,
    /// The emoji put on a message when it is queued for the agent, on
    /// channels that list the `reactions` feature (default "👀"; "" turns
    /// it off).
    #[serde(default)]
    pub ack_reaction: Option<String>,
    /// Show a typing indicator while a turn runs, on channels that list the
    /// `typing` feature (default true).
    #[serde(default)]
    pub typing: Option<bool>,
    /// `openai` with `stream`: show the reply as it grows, as one message
    /// edited about once a second, on channels that list the `edit` feature
    /// (default true).
    #[serde(default)]
    pub drafts: Option<bool>,
}

/// How the `command` backend hands a turn to its program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandInput {
    /// Written to the program's standard input, which is then closed.
    #[default]
    Stdin,
    /// Appended as the program's last argument (standard input is empty).
    Argument,
}

/// What the `command` backend hands its program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandFormat {
    /// Plain text: the earlier conversation as `user: …` / `assistant: …`
    /// lines and a blank line (only when there is any), then the message.
    #[default]
    Text,
    /// JSON lines: `{"role", "content"}` per history entry, the new message
    /// last with `sender`, `channel` and `session`.
    Jsonl,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            backend: AgentBackend::Echo,
            template: default_template(),
            base_url: None,
            model: None,
            api_key: None,
            system_prompt: None,
            request_timeout: None,
            max_retries: None,
            max_tool_rounds: None,
            idle_timeout: None,
            history_budget: None,
            max_concurrent_sessions: None,
            stream: None,
            command: None,
            command_input: None,
            command_format: None,
            ack_reaction: None,
            typing: None,
            drafts: None,
        }
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
    /// An OpenAI-compatible chat completions endpoint, with tool calling.
    Openai,
    /// Any CLI agent, run once per turn: the turn in, the reply out.
    Command,
}

/// `[tools]`: which tool calls of the agent may run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// The permission mode (default `safe`); `[plugins.NAME] tools_mode`
    /// overrides it for turns started by that channel.
    #[serde(default)]
    pub mode: ToolMode,
    /// Tools that may run: `"plugin.tool"` or `"plugin.*"`. In `daemon` mode
    /// only these run; in `ask` mode these run without asking.
    #[serde(default)]
    pub allow: Vec<String>,
    /// `ask` mode: how long a call waits for `kata approve ID` before it is
    /// denied (default `5m`).
    #[serde(default)]
    pub ask_timeout: Option<String>,
    /// `ask` mode: `"CHANNEL:CONVERSATION"` where approval requests are
    /// posted too, answered there with `yes` / `no`.
    #[serde(default)]
    pub approvals_to: Option<String>,
    /// `ask` mode: `"CHANNEL:SENDER"`s whose answer in `approvals_to` counts
    /// (default: the senders paired on that channel or named in its `allow_from`).
    #[serde(default)]
    pub approvers: Vec<String>,
}

/// A permission mode for agent tool calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolMode {
    /// Only tools whose manifest declares them read-only, run with every
    /// write grant stripped (files read-only, network GET/HEAD only).
    #[default]
    Safe,
    /// Each call waits for a person (`kata approve ID` / `kata deny ID`);
    /// tools in `[tools] allow` run without asking.
    Ask,
    /// Every tool runs.
    AllowAll,
    /// Headless: only tools in `[tools] allow` run; everything else is refused.
    Daemon,
}

impl ToolMode {
    /// The name as written in kata.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolMode::Safe => "safe",
            ToolMode::Ask => "ask",
            ToolMode::AllowAll => "allow-all",
            ToolMode::Daemon => "daemon",
        }
    }
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
    /// Network grants: `scheme://host[:port][/path-prefix]`, `*.` wildcards
    /// allowed, or a table `{ url = "...", methods = ["GET"], private = true }`.
    #[serde(default)]
    pub network: Vec<NetworkEntry>,
    /// Secrets: `NAME = "env:VAR"`, `"file:PATH"` or `"kata:NAME"` (kata's
    /// encrypted store), or a table `{ from = "...", hosts = ["api.example.org"] }`
    /// that binds the secret to the hosts it may be sent to.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretEntry>,
    /// Extra certificate authorities this plugin's HTTPS requests trust, on
    /// top of the public web roots: `"file:PATH"` (PEM) or a list of them.
    /// For a self-hosted server with its own CA (Matrix, Mattermost on a LAN).
    #[serde(default)]
    pub ca: Option<OneOrMany>,
    /// Directories the plugin may open: `{ host = "~/notes", guest = "/notes", mode = "ro" }`.
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// Non-secret configuration the plugin reads with `config-get`.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Resource limits for each instance.
    #[serde(default)]
    pub limits: LimitsEntry,
    /// Who may reach the agent through this channel: sender ids, or `"*"` for
    /// anyone. Absent: pairing — an unknown sender gets a one-time code and
    /// nothing else until the owner runs `kata pair approve CODE`.
    #[serde(default)]
    pub allow_from: Option<Vec<String>>,
    /// For a service plugin: the channel conversation its messages are
    /// answered in, `"PLUGIN:CONVERSATION"` (e.g. `"telegram:123456"`).
    #[serde(default)]
    pub deliver_to: Option<String>,
    /// Group conversations (ids as the channel reports them, or `"*"`) whose
    /// messages may reach the agent. Absent: none — a message from a group
    /// never reaches the agent, whoever sent it.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// In a granted group, only messages that address the agent (mention it
    /// or reply to it) reach it. Default true.
    #[serde(default)]
    pub require_mention: Option<bool>,
    /// The tool permission mode for turns started through this channel
    /// (overrides `[tools] mode`).
    #[serde(default)]
    pub tools_mode: Option<ToolMode>,
    /// How the host checks the signature of requests to the plugin's
    /// webhook listener: `{ verify = "github", secret = "NAME" }` (see
    /// [`webhook`]). Absent: requests are not checked.
    #[serde(default)]
    pub webhook: Option<webhook::WebhookEntry>,
    /// For a hook plugin: its time budget per call and what a failure does,
    /// `{ budget = "50ms", on_failure = "pass" | "hold" }` (see [`hooks`]).
    /// The hook runs only when `[hooks] order` names it.
    #[serde(default)]
    pub hook: Option<hooks::HookEntry>,
    /// The scheduler grant: the plugin may create tasks (prompts for the
    /// agent later), `{ max_tasks = 20 }`. Absent: it may not.
    #[serde(default)]
    pub scheduler: Option<hooks::SchedulerEntry>,
    /// Where `kata plugin add` got the code: a file path, an http(s) URL or
    /// an `oci://` reference (`kata plugin list` shows it, `kata plugin
    /// outdated` checks it for newer tags).
    #[serde(default)]
    pub source: Option<String>,
    /// The publisher key that signed the installed code (`ed25519:…`),
    /// recorded by `kata plugin add|upgrade`: an upgrade signed by another
    /// key is refused unless `--allow-publisher-change`.
    #[serde(default)]
    pub publisher: Option<String>,
}

fn yes() -> bool {
    true
}

/// One `secrets` value as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretEntry {
    /// `"env:VAR"`, `"file:PATH"` or `"kata:NAME"`: sent to any granted host.
    Source(String),
    /// `{ from = "env:VAR", hosts = ["api.example.org"] }`.
    Table(SecretTable),
}

/// The table form of a `secrets` value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretTable {
    /// Where the value comes from, as in the string form.
    pub from: String,
    /// The hosts (`host`, `host:port`, `*.domain`) the value may be sent to.
    /// Absent: every host the plugin's `network` grants.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
}

impl SecretEntry {
    fn from(&self) -> &str {
        match self {
            SecretEntry::Source(s) => s,
            SecretEntry::Table(t) => &t.from,
        }
    }
}

/// One string or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A host a secret is bound to: `host`, `host:port`, `[v6]:port` or `*.domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// As written.
    pub source: String,
    /// Lowercase host; a leading `*.` matches any subdomain (not the bare domain).
    host: String,
    /// The port, when one is written (any port otherwise).
    port: Option<u16>,
}

impl HostPattern {
    /// Parse `host`, `host:port` or `*.domain[:port]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.contains("://") || s.contains('/') {
            let bare = s.split("://").nth(1).unwrap_or(s).split('/').next().unwrap_or("");
            return Err(format!("secret host {s:?} must be a host name, not a URL: write {bare:?} (the `network` entry says which paths)"));
        }
        let (host, port) = split_host_port(s).ok_or_else(|| format!("secret host {s:?}: bad host or port"))?;
        let host = host.to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if bare.is_empty()
            || bare.contains('*')
            || bare.contains('@')
            || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
        {
            return Err(format!(
                "secret host {s:?}: write a host name like \"api.telegram.org\", optionally with :port, or \"*.example.com\""
            ));
        }
        Ok(Self { source: s.to_string(), host, port })
    }

    /// Whether a request to `host:port` is to this host.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match self.host.strip_prefix("*.") {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
            None => host == self.host,
        }
    }

    /// Whether some request under `grant` goes to this host.
    pub fn covers_grant(&self, grant: &NetworkGrant) -> bool {
        if self.port.is_some_and(|p| p != grant.port) {
            return false;
        }
        if grant.is_wildcard() {
            // `*.a.org` covers the wildcard grant `*.a.org` and is covered by `*.org`.
            return self.host == grant.host || self.host.strip_prefix("*.").is_some_and(|d| grant.host.ends_with(&format!(".{d}")));
        }
        self.matches(&grant.host, grant.port)
    }
}

/// Which hosts a secret may be sent to, as kata.toml says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretBinding {
    /// The hosts; empty means none at all.
    pub hosts: Vec<HostPattern>,
    /// Where it is written: `kata.toml:LINE`.
    pub at: String,
}

impl SecretBinding {
    /// Whether the secret may go to `host:port`.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|h| h.matches(host, port))
    }

    /// The hosts as a list for messages: `a, b` (or `no host`).
    pub fn describe(&self) -> String {
        if self.hosts.is_empty() { "no host".into() } else { self.hosts.iter().map(|h| h.source.as_str()).collect::<Vec<_>>().join(", ") }
    }
}

/// An extra certificate authority from `ca = "file:PATH"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    /// The PEM file, absolute.
    pub path: PathBuf,
    /// Its certificates (DER).
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl CaFile {
    /// Read `file:PATH` (relative to `workspace`): a PEM file with at least
    /// one certificate that works as a trust anchor.
    pub fn load(source: &str, workspace: &Path) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let Some(p) = source.strip_prefix("file:").filter(|p| !p.is_empty()) else {
            return Err(format!("ca {source:?}: write \"file:PATH\" naming a PEM file with the CA certificate"));
        };
        let path = expand_home(p)?;
        let path = if path.is_absolute() { path } else { workspace.join(path) };
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read CA file {}: {e}; fix the path", path.display()))?;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("CA file {} is not valid PEM ({e}); it must hold -----BEGIN CERTIFICATE----- blocks", path.display()))?;
        if certs.is_empty() {
            return Err(format!("CA file {} holds no certificate; it must hold -----BEGIN CERTIFICATE----- blocks", path.display()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in &certs {
            roots
                .add(c.clone())
                .map_err(|e| format!("CA file {}: a certificate cannot be used as a trust anchor ({e})", path.display()))?;
        }
        Ok(Self { path, certs })
    }
}

/// One `network` entry as written: a URL, or a table with options.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NetworkEntry {
    /// `"https://host[:port][/path-prefix]"`: any method, public addresses only.
    Url(String),
    /// `{ url = "...", methods = ["GET", "POST"], private = true }`.
    Table(NetworkTable),
}

/// The table form of a `network` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkTable {
    /// `scheme://host[:port][/path-prefix]`, as in the string form.
    pub url: String,
    /// HTTP methods allowed (default: all).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Allow a host *name* that resolves to a loopback, private, link-local or
    /// unspecified address (needed for services on the local network). An IP
    /// literal or `localhost` in `url` is always allowed to be what it says.
    #[serde(default)]
    pub private: bool,
}

/// One `files` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// The directory on this machine: `~` is the home directory, relative
    /// paths are relative to the workspace.
    pub host: String,
    /// Where the plugin sees it: an absolute path such as `/notes`.
    pub guest: String,
    /// `ro` (default) or `rw`.
    #[serde(default)]
    pub mode: FileMode,
}

/// Access to a granted directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileMode {
    /// Read-only: the plugin can list and read, never create, change or delete.
    #[default]
    Ro,
    /// Read-write.
    Rw,
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileMode::Ro => "ro",
            FileMode::Rw => "rw",
        })
    }
}

/// A validated directory grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGrant {
    /// The directory on this machine, absolute with symlinks resolved.
    pub host: PathBuf,
    /// Where the plugin sees it (absolute).
    pub guest: String,
    /// Read-only or read-write.
    pub mode: FileMode,
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
    /// Outgoing HTTP requests per minute, across all of the plugin's instances.
    pub requests_per_minute: Option<u32>,
    /// Largest HTTP response body the plugin may receive, e.g. `"8MiB"`.
    pub max_response: Option<String>,
    /// Inbound messages per minute the daemon accepts from the plugin; a
    /// plugin that brings more is polled less often until it is back under.
    pub messages_per_minute: Option<u32>,
    /// Replies a channel may be sending at once, each on its own instance,
    /// to different conversations (one conversation's replies always go out
    /// one at a time, in order). Extra instances start only under load.
    pub concurrent_sends: Option<u32>,
    /// Largest text of one message the plugin hands in (longer text is cut
    /// at a character boundary, with a marker), and largest `raw` (dropped
    /// when longer), e.g. `"64KiB"`.
    pub max_message: Option<String>,
    /// Largest total of the messages one poll, frame or service tick hands
    /// in (and of the frames one send asks the host to write), e.g. `"4MiB"`;
    /// messages past it are refused.
    pub max_poll_bytes: Option<String>,
    /// Message bytes per minute the daemon accepts from the plugin, e.g.
    /// `"16MiB"`; a plugin that brings more is polled less often.
    pub bytes_per_minute: Option<String>,
    /// Log lines per minute the plugin may write, across its instances;
    /// more are suppressed and summed up in one line.
    pub log_lines_per_minute: Option<u32>,
    /// Longest log line kept from the plugin, e.g. `"4KiB"`; longer ones are cut.
    pub max_log_line: Option<String>,
    /// Largest tool result handed to the model, e.g. `"64KiB"`; longer ones are cut.
    pub max_tool_result: Option<String>,
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
    /// Outgoing HTTP requests per minute (a bucket of this many that refills
    /// continuously, so a burst up to the limit is fine).
    pub requests_per_minute: u32,
    /// Largest HTTP response body, in bytes.
    pub max_response_bytes: usize,
    /// Inbound messages per minute (a bucket of this many that refills
    /// continuously); a flood slows the plugin's polling down.
    pub messages_per_minute: u32,
    /// Send instances a channel may use at once (1..=[`MAX_CONCURRENT_SENDS`]).
    pub concurrent_sends: u32,
    /// Largest message text (and `raw`), in bytes.
    pub max_message_bytes: usize,
    /// Largest total of one poll, frame or tick's messages (or one send's frames), in bytes.
    pub max_poll_bytes: usize,
    /// Inbound message bytes per minute (a bucket refilled continuously,
    /// beside `messages_per_minute`); over it, the plugin is polled later.
    pub bytes_per_minute: usize,
    /// Log lines per minute, across all of the plugin's instances.
    pub log_lines_per_minute: u32,
    /// Longest log line, in bytes.
    pub max_log_line_bytes: usize,
    /// Largest tool result handed to the model, in bytes.
    pub max_tool_result_bytes: usize,
}

/// The smallest `max_message`, `max_log_line` or `max_tool_result`: room for
/// the marker that says a text was cut.
pub const MIN_TEXT_LIMIT: usize = 256;

/// The most send instances `limits.concurrent_sends` may ask for.
pub const MAX_CONCURRENT_SENDS: u32 = 16;

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            cpu_per_call: Duration::from_millis(200),
            call_timeout: Duration::from_secs(60),
            requests_per_minute: 600,
            max_response_bytes: 16 << 20,
            messages_per_minute: 1200,
            concurrent_sends: 4,
            max_message_bytes: 64 << 10,
            max_poll_bytes: 4 << 20,
            bytes_per_minute: 16 << 20,
            log_lines_per_minute: 600,
            max_log_line_bytes: 4 << 10,
            max_tool_result_bytes: 64 << 10,
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
    /// kata's own encrypted store (`kata secret set NAME`).
    Kata(String),
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
        } else if let Some(name) = s.strip_prefix("kata:") {
            if !valid_secret_name(name) {
                return Err(format!(
                    "`kata:` needs the name of a secret in kata's store (letters, digits, '-', '_'), e.g. \"kata:bot_token\"; got {name:?}"
                ));
            }
            Ok(Self::Kata(name.to_string()))
        } else {
            Err(format!(
                "unknown secret source {s:?}: write \"env:VARIABLE\", \"file:PATH\" or \"kata:NAME\" \
                 (`kata secret set NAME` stores it encrypted; secret values never go in kata.toml)"
            ))
        }
    }

    /// Read the value now. `base` resolves relative file paths; `kata` reads
    /// a `kata:NAME` secret from kata's encrypted store, which is not this
    /// crate's (kata-host's `secret_store::resolve` passes it).
    pub fn resolve_with(&self, base: &Path, kata: &dyn Fn(&str) -> Result<String, String>) -> Result<String, String> {
        match self {
            Self::Env(var) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set")),
            Self::File(p) => {
                let p = base.join(p);
                check_secret_file_mode(&p)?;
                std::fs::read_to_string(&p)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))
            }
            Self::Kata(name) => kata(name),
        }
    }
}

/// A secret file must be readable by its owner only (mode 0600 or stricter),
/// like an SSH key: anything wider means another user may already have it.
fn check_secret_file_mode(p: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "secret file {} has mode {mode:04o}, so other users can read it; run `chmod 600 {}` (secret files must be mode 0600 or stricter)",
                p.display(),
                p.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = p;
    Ok(())
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
    /// The path as written (`/` when none was).
    path_prefix: String,
    /// The path, parsed for matching.
    path: PathPrefix,
    /// Upper-case HTTP methods allowed; empty means any.
    methods: Vec<String>,
    /// Whether a host name may resolve to non-public addresses.
    private: bool,
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
        let (scheme, rest) =
            s.split_once("://").ok_or_else(|| format!("network entry {s:?} has no scheme: write it as \"https://host[:port][/path]\""))?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "ws" | "wss" | "tcp" | "tls") {
            return Err(format!("network entry {s:?}: scheme {scheme:?} is not one of http, https, ws, wss, tcp, tls"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') || path.contains(['?', '#']) {
            return Err(format!("network entry {s:?}: only scheme, host, port and path prefix are allowed (no user, query or fragment)"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| format!("network entry {s:?}: bad host or port {authority:?}"))?;
        let port = match port {
            Some(p) => p,
            None => default_port(&scheme).ok_or_else(|| format!("network entry {s:?}: scheme {scheme} needs an explicit port"))?,
        };
        let host = host.to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if bare.is_empty() || bare.contains('*') {
            return Err(format!("network entry {s:?}: a wildcard may only be a leading \"*.\" (e.g. \"https://*.example.com\")"));
        }
        let parsed = PathPrefix::parse(path).map_err(|e| {
            format!("network entry {s:?}: {e}; paths match whole segments: \"/api\" covers /api and /api/x, \"/bot*\" every path starting with /bot")
        })?;
        Ok(Self {
            source: s.to_string(),
            scheme,
            host,
            port,
            path_prefix: path.to_string(),
            path: parsed,
            methods: Vec::new(),
            private: false,
        })
    }

    /// Parse a `network` entry in either form.
    pub fn from_entry(entry: &NetworkEntry) -> Result<Self, String> {
        match entry {
            NetworkEntry::Url(s) => Self::parse(s),
            NetworkEntry::Table(t) => {
                let mut g = Self::parse(&t.url)?;
                for m in &t.methods {
                    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
                        return Err(format!(
                            "network entry {:?}: {m:?} is not an HTTP method; write methods like [\"GET\", \"POST\"]",
                            t.url
                        ));
                    }
                    g.methods.push(m.to_ascii_uppercase());
                }
                g.private = t.private;
                Ok(g)
            }
        }
    }

    /// The scheme (`https`, `http`, `wss`…).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host as granted (lowercase; may start with `*.`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (explicit or the scheme's default).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path prefix (`/` when none was written).
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// The methods allowed (upper case); empty means any.
    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    /// Whether the entry opted in to names that resolve to private addresses.
    pub fn private(&self) -> bool {
        self.private
    }

    /// Whether the host is a `*.` wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.host.starts_with("*.")
    }

    /// Whether the grant names its destination exactly: an IP literal or
    /// `localhost`. Such a grant may reach loopback and private addresses,
    /// because that is what the user wrote.
    pub fn names_address(&self) -> bool {
        self.host == "localhost" || self.host.parse::<std::net::IpAddr>().is_ok()
    }

    /// Whether a host name under this grant may resolve to loopback, private,
    /// link-local or unspecified addresses.
    pub fn allows_private_addresses(&self) -> bool {
        self.private || self.names_address()
    }

    /// Whether `method` is allowed (any method when the entry lists none).
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }

    /// Does a request with `method` to `scheme://host:port/path` fall under this grant?
    pub fn allows_request(&self, method: &str, scheme: &str, host: &str, port: u16, path: &str) -> bool {
        self.allows_method(method) && self.allows(scheme, host, port, path)
    }

    /// Does a request to `scheme://host:port/path` fall under this grant
    /// (for at least one method)?
    pub fn allows(&self, scheme: &str, host: &str, port: u16, path: &str) -> bool {
        self.allows_host(scheme, host, port) && self.path.admits(path)
    }

    /// Whether `scheme://host:port` is this grant's destination (any path).
    pub fn allows_host(&self, scheme: &str, host: &str, port: u16) -> bool {
        if !self.scheme.eq_ignore_ascii_case(scheme) || self.port != port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match self.host.strip_prefix("*.") {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
            None => host == self.host,
        }
    }

    /// Whether `path` is not under this grant but would be if the grant's
    /// path were read as plain text, as grants were matched before they
    /// matched whole segments (`/bot` and `/bot123:abc/getMe`): the denial
    /// then suggests the `*` form.
    pub fn matches_only_as_text(&self, path: &str) -> bool {
        let written = self.path_prefix.as_str();
        !written.ends_with(['/', '*'])
            && !self.path.admits(path)
            && normalize_path(path).is_ok_and(|p| {
                let resolved = p.resolved_text();
                resolved.starts_with(written) && PathPrefix::parse(&format!("{written}*")).is_ok_and(|g| g.admits(path))
            })
    }

    /// This grant narrowed to reading: methods GET and HEAD only (those of
    /// them it already allowed). None when it allows neither.
    pub fn read_only(&self) -> Option<NetworkGrant> {
        const READ: [&str; 2] = ["GET", "HEAD"];
        let methods: Vec<String> = READ.iter().filter(|m| self.allows_method(m)).map(|m| m.to_string()).collect();
        (!methods.is_empty()).then(|| NetworkGrant { methods, ..self.clone() })
    }

    /// Whether some request could match both entries (same scheme and port,
    /// hosts that can coincide, one path prefix inside the other).
    pub fn overlaps(&self, other: &NetworkGrant) -> bool {
        if !self.scheme.eq_ignore_ascii_case(&other.scheme) || self.port != other.port {
            return false;
        }
        let covers = |wild: &str, host: &str| match wild.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")) || host == wild,
            None => false,
        };
        let hosts = self.host == other.host || covers(&self.host, &other.host) || covers(&other.host, &self.host);
        hosts && self.path.overlaps(&other.path)
    }
}

/// The path part of a network grant (or of a webhook subscription), matched
/// on whole segments after normalising the request path (see
/// [`normalize_path`]):
///
/// - `/api` admits `/api`, `/api/`, `/api/x` (and `/api?q`), never `/apix`;
/// - `/api/` (a directory) admits `/api/` and everything below it, not `/api`;
/// - `/bot*` — the one opt-in text prefix: a trailing `*` admits any path
///   whose next segment *starts with* `bot` (`/bot`, `/bot123:abc/getMe`),
///   never `/file/bot1`; `/api/*` is the same as `/api/`;
/// - `/` (or no path) admits everything.
///
/// The grant's own path is normalised the same way and may not hold `.` or
/// `..` segments, or a `*` anywhere but at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix {
    /// Segments the request path must start with, exactly (normalised).
    fixed: Vec<String>,
    /// When set, the path must have one more segment, starting with this
    /// (empty: any segment, including the empty one of a trailing `/`).
    next: Option<String>,
}

/// Why a request path cannot be matched against any grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRefusal {
    /// The offending segment, as written.
    pub segment: String,
}

impl fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "path segment {:?} hides a `.` or `..` segment behind an encoded `/` or `\\`, a backslash, a `;` or \
             double percent-encoding (or holds an encoded separator in a path with `..`), which a server may \
             resolve differently than kata checks it",
            self.segment
        )
    }
}

/// A request path in normal form (RFC 3986 §6.2.2): percent-escapes of
/// unreserved characters decoded (`%61pi` is `api`), other escapes in upper
/// case (`%2f` is `%2F`, and stays an escape: it never separates segments),
/// empty segments from duplicate slashes dropped. A trailing `/` is kept as a
/// final empty segment; `/` alone is `[""]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// The segments as written (`..` kept, `.` dropped), which is what a
    /// server that does not resolve dot segments sees.
    pub literal: Vec<String>,
    /// The segments with `.` and `..` resolved; `..` never climbs above the
    /// root. What a server that resolves dot segments sees.
    pub resolved: Vec<String>,
}

impl NormalPath {
    /// The resolved path as text (`/a/b`, `/a/`, `/`).
    pub fn resolved_text(&self) -> String {
        format!("/{}", self.resolved.join("/"))
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// One segment with escapes of unreserved characters decoded and the other
/// escapes in upper case.
fn normalize_segment(seg: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            let b = h << 4 | l;
            if is_unreserved(b) {
                out.push(b as char);
            } else {
                out.push('%');
                out.push_str(&seg[i + 1..i + 3].to_ascii_uppercase());
            }
            i += 3;
        } else {
            // Not an escape: copy one character.
            let ch = seg[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&seg[i..i + ch]);
            i += ch;
        }
    }
    out
}

/// Whether a segment that is not itself `.` or `..` still holds one that
/// some server would see: after decoding (repeatedly, for double
/// encoding), split at `/`, `\` and `;` (a path parameter, `..;/`).
fn hides_dot_segment(seg: &str) -> bool {
    let mut text = seg.as_bytes().to_vec();
    for _ in 0..4 {
        if text.split(|&b| b == b'/' || b == b'\\' || b == b';').any(|p| p == b"." || p == b"..") {
            return true;
        }
        let next = percent_decode(&text);
        if next == text {
            break;
        }
        text = next;
    }
    false
}

/// Normalise a request path (anything from a `?` or `#` on is ignored). A
/// path is refused when a segment hides a dot segment that servers could
/// resolve differently (`..%2F`, `%252e%252e`, `..\`, `..;`): see
/// [`PathRefusal`]. Plain and unreserved-encoded `.`/`..` segments (`%2e%2e`)
/// are resolved, in [`NormalPath::resolved`].
pub fn normalize_path(path: &str) -> Result<NormalPath, PathRefusal> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let raw: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let n = raw.len();
    let mut literal = Vec::new();
    let mut resolved: Vec<String> = Vec::new();
    // A segment that one server splits (`a%2Fb` decoded to `a/b`) and
    // another does not changes what a `..` removes: never both in one path.
    let mut separator_inside: Option<&str> = None;
    let mut climbs = false;
    for (i, seg) in raw.iter().enumerate() {
        let last = i + 1 == n;
        let norm = normalize_segment(seg);
        if norm == ".." {
            climbs = true;
        } else if norm.contains("%2F") || norm.contains("%5C") || norm.contains('\\') {
            separator_inside.get_or_insert(seg);
        }
        match norm.as_str() {
            "" => {}
            "." => {}
            ".." => {
                resolved.pop();
            }
            _ => {
                if hides_dot_segment(seg) {
                    return Err(PathRefusal { segment: seg.to_string() });
                }
                resolved.push(norm.clone());
            }
        }
        if !matches!(norm.as_str(), "" | ".") {
            literal.push(norm.clone());
        }
        // A path ending in `/`, `/.` or `/..` names a directory.
        if last && matches!(norm.as_str(), "" | "." | "..") {
            resolved.push(String::new());
            if norm != ".." {
                literal.push(String::new());
            }
        }
    }
    if let (Some(seg), true) = (separator_inside, climbs) {
        return Err(PathRefusal { segment: seg.to_string() });
    }
    if literal.is_empty() {
        literal.push(String::new());
    }
    if resolved.is_empty() {
        resolved.push(String::new());
    }
    Ok(NormalPath { literal, resolved })
}

impl PathPrefix {
    /// Parse the path of a grant: `/`, `/api`, `/api/`, `/bot*`.
    pub fn parse(path: &str) -> Result<Self, String> {
        let path = if path.is_empty() { "/" } else { path };
        if !path.starts_with('/') {
            return Err(format!("path {path:?} must start with `/`"));
        }
        let (body, star) = match path.strip_suffix('*') {
            Some(b) => (b, true),
            None => (path, false),
        };
        if body.contains('*') {
            return Err(format!(
                "path {path:?}: `*` may only end the path (\"/bot*\" matches every path whose next segment starts with \"bot\")"
            ));
        }
        let norm = normalize_path(body).map_err(|e| format!("path {path:?}: {e}"))?;
        if body.split('/').any(|seg| matches!(normalize_segment(seg).as_str(), "." | "..")) {
            return Err(format!("path {path:?}: write it without `.` or `..` segments"));
        }
        let mut fixed = norm.resolved;
        let last = fixed.pop().unwrap_or_default();
        let next = match (star, last.is_empty()) {
            // `/api/` and `/api/*`: any segment below /api.
            (_, true) => Some(String::new()),
            // `/bot*`: a segment starting with "bot".
            (true, false) => Some(last),
            // `/api`: the segment itself, or below it.
            (false, false) => {
                fixed.push(last);
                None
            }
        };
        Ok(Self { fixed, next })
    }

    /// Whether a path, already normalised, is under this prefix, on the
    /// given segment list.
    fn admits_segments(&self, segs: &[String]) -> bool {
        let k = self.fixed.len();
        if segs.len() < k || segs[..k] != self.fixed[..] {
            return false;
        }
        match &self.next {
            None => true,
            Some(stem) => segs.get(k).is_some_and(|s| s.starts_with(stem.as_str())),
        }
    }

    /// Whether a request path is under this prefix: both as written and with
    /// its dot segments resolved (so neither a server that resolves them nor
    /// one that does not can be led outside), after normalisation. A path
    /// [`normalize_path`] refuses is never admitted.
    pub fn admits(&self, path: &str) -> bool {
        normalize_path(path).is_ok_and(|p| self.admits_normal(&p))
    }

    /// [`Self::admits`] for a path already normalised.
    pub fn admits_normal(&self, p: &NormalPath) -> bool {
        self.admits_segments(&p.literal) && self.admits_segments(&p.resolved)
    }

    /// Whether some path is under both prefixes.
    pub fn overlaps(&self, other: &PathPrefix) -> bool {
        let (a, b) = if self.fixed.len() <= other.fixed.len() { (self, other) } else { (other, self) };
        let k = a.fixed.len();
        if b.fixed[..k] != a.fixed[..] {
            return false;
        }
        match (&a.next, b.fixed.get(k), &b.next) {
            (None, _, _) => true,
            (Some(s), Some(seg), _) => seg.starts_with(s.as_str()),
            (Some(_), None, None) => true,
            (Some(s), None, Some(t)) => s.starts_with(t.as_str()) || t.starts_with(s.as_str()),
        }
    }
}

/// Whether request `path` is under grant path `prefix` (see [`PathPrefix`]
/// for the rule, [`normalize_path`] for what is done to `path` first). A
/// `prefix` that is not a valid grant path admits nothing. The one matcher
/// for wasi:http requests, host-managed streams and webhook requests.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    PathPrefix::parse(prefix).is_ok_and(|p| p.admits(path))
}

/// What kind of non-public address `ip` is, or None for a public one.
///
/// Non-public: loopback, private (RFC 1918, IPv6 unique-local), link-local
/// (incl. the cloud metadata address 169.254.169.254), unspecified, shared
/// (carrier-grade NAT), multicast, broadcast and reserved ranges. IPv6
/// addresses that embed an IPv4 address (mapped, compatible, NAT64, 6to4)
/// are judged by the IPv4 address inside.
pub fn address_class(ip: std::net::IpAddr) -> Option<&'static str> {
    use std::net::{IpAddr, Ipv4Addr};
    fn v4(ip: Ipv4Addr) -> Option<&'static str> {
        let o = ip.octets();
        if ip.is_loopback() {
            Some("loopback")
        } else if ip.is_private() {
            Some("private")
        } else if ip.is_link_local() {
            Some("link-local")
        } else if o[0] == 0 {
            Some("unspecified")
        } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
            Some("shared (carrier-grade NAT)")
        } else if ip.is_multicast() {
            Some("multicast")
        } else if ip.is_broadcast() || o[0] >= 240 || (o[0] == 192 && o[1] == 0 && o[2] == 0) {
            Some("reserved")
        } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
            Some("benchmarking")
        } else {
            None
        }
    }
    match ip {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(ip) => {
            let s = ip.segments();
            if ip.is_loopback() {
                return Some("loopback");
            }
            if ip.is_unspecified() {
                return Some("unspecified");
            }
            if let Some(inner) = ip.to_ipv4_mapped() {
                return v4(inner);
            }
            let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d).
            if s[..6] == [0, 0, 0, 0, 0, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return v4(embedded(s[6], s[7]));
            }
            // 6to4 (2002:a.b.c.d::/48).
            if s[0] == 0x2002 {
                return v4(embedded(s[1], s[2]));
            }
            match s[0] {
                x if x & 0xfe00 == 0xfc00 => Some("private"),
                x if x & 0xffc0 == 0xfe80 => Some("link-local"),
                x if x & 0xffc0 == 0xfec0 => Some("site-local"),
                x if x & 0xff00 == 0xff00 => Some("multicast"),
                0x2001 if s[1] == 0x0db8 => Some("documentation"),
                _ => None,
            }
        }
    }
}

/// Decode `%XX` escapes (invalid escapes are kept as they are).
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(h), Some(l)) = (input.get(i + 1).copied().and_then(hex), input.get(i + 2).copied().and_then(hex))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
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
    /// Secrets bound to particular hosts (`hosts = [...]`). A secret not
    /// here is filled in for every host the plugin is granted.
    pub secret_hosts: BTreeMap<String, SecretBinding>,
    /// Extra certificate authorities for this plugin's HTTPS requests.
    pub ca: Vec<CaFile>,
    /// Non-secret configuration, each value rendered as text.
    pub config: BTreeMap<String, String>,
    /// Directories it may open.
    pub files: Vec<FileGrant>,
    /// Resource limits.
    pub limits: Limits,
    /// Senders who may reach the agent (`"*"`: anyone); None means pairing.
    pub allow_from: Option<Vec<String>>,
    /// Group conversations whose messages may reach the agent (`"*"`: any);
    /// empty: none.
    pub groups: Vec<String>,
    /// Whether a group message must address the agent to reach it.
    pub require_mention: bool,
    /// Where a service's messages are answered (`deliver_to`).
    pub deliver_to: Option<Target>,
    /// The tool permission mode for turns this channel starts (None: `[tools] mode`).
    pub tools_mode: Option<ToolMode>,
    /// The network entries the plugin's manifest asks for, when it carries one
    /// (set when the plugin is loaded). A request must then match a policy
    /// grant *and* one of these: the manifest asks, the policy decides.
    pub declared_network: Option<Vec<NetworkGrant>>,
    /// The signature check of requests to its webhook listener, if any. Its
    /// secret verifies requests only: it is never filled into anything the
    /// plugin sends, and a manifest need not ask for it.
    pub webhook: Option<webhook::WebhookVerify>,
    /// Its hook settings when `[hooks] order` names it or it has a `hook`
    /// table (see [`hooks`]).
    pub hook: Option<hooks::HookSettings>,
    /// The scheduler grant, if any.
    pub scheduler: Option<hooks::SchedulerGrant>,
}

impl PluginGrants {
    /// Narrow these grants to what a manifest asks for: secrets and
    /// directories it does not declare are dropped, and requests must match a
    /// declared network entry as well as a grant. Returns what was dropped,
    /// for the log. A declared entry that does not parse is an error. A
    /// manifest whose network is `["*"]` ([`crate::manifest::ANY_NETWORK`])
    /// leaves the network to kata.toml alone.
    pub fn restrict_to(&mut self, m: &crate::manifest::Manifest) -> Result<Vec<String>, String> {
        let declared = m
            .network
            .iter()
            .filter(|e| e.as_str() != crate::manifest::ANY_NETWORK)
            .filter_map(|e| crate::manifest::expand_entry(e, &self.config).map(|x| (e, x)))
            .map(|(e, x)| NetworkGrant::parse(&x).map_err(|err| format!("its manifest's network entry {e:?}: {err}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut dropped = Vec::new();
        let webhook_secret = self.webhook.as_ref().map(|w| w.secret.clone());
        let webhook_secret = webhook_secret.as_deref();
        self.secrets.retain(|name, _| {
            let keep = m.secrets.contains_key(name) || webhook_secret.is_some_and(|w| w == name);
            if !keep {
                dropped.push(format!("secret {name}"));
            }
            keep
        });
        self.files.retain(|f| {
            let keep = m.files.iter().any(|r| r.guest == f.guest && (r.mode == "rw" || f.mode == FileMode::Ro));
            if !keep {
                dropped.push(format!("files {} ({})", f.guest, f.mode));
            }
            keep
        });
        if m.asks_any_network() {
            self.declared_network = None;
            return Ok(dropped);
        }
        for g in &self.network {
            if !declared.iter().any(|d| d.overlaps(g)) {
                dropped.push(format!("network {}", g.source));
            }
        }
        self.declared_network = Some(declared);
        Ok(dropped)
    }

    /// Whether secret `name` may be sent to `host:port` (a secret without
    /// `hosts` may go to any host the plugin is granted).
    pub fn secret_allowed(&self, name: &str, host: &str, port: u16) -> bool {
        self.secret_hosts.get(name).is_none_or(|b| b.allows(host, port))
    }

    /// What happens to a message in group conversation `conversation`
    /// (`mentioned`: it addresses the agent). Group messages never pair:
    /// only the policy lets a group in.
    pub fn group_verdict(&self, conversation: &str, mentioned: bool) -> GroupVerdict {
        if !self.groups.iter().any(|g| g == "*" || g == conversation) {
            GroupVerdict::NotGranted
        } else if self.require_mention && !mentioned {
            GroupVerdict::NotMentioned
        } else {
            GroupVerdict::Allowed
        }
    }

    /// These grants with every write stripped, for tools running in the
    /// `safe` mode: directories read-only, network entries GET and HEAD only.
    pub fn read_only(&self) -> PluginGrants {
        let mut g = self.clone();
        for f in &mut g.files {
            f.mode = FileMode::Ro;
        }
        g.network = self.network.iter().filter_map(NetworkGrant::read_only).collect();
        g
    }

    /// Whether `sender` may reach the agent without pairing.
    pub fn sender_allowed(&self, sender: &str) -> bool {
        self.allow_from.as_ref().is_some_and(|list| list.iter().any(|a| a == "*" || a == sender))
    }

    /// Whether a request is one the manifest asked for (always, without a manifest).
    pub fn declared(&self, scheme: &str, host: &str, port: u16, path: &str) -> bool {
        self.declared_network.as_ref().is_none_or(|d| d.iter().any(|g| g.allows(scheme, host, port, path)))
    }

    /// Find the grant that allows a request to this URL for some method, if any.
    pub fn network_grant(&self, scheme: &str, host: &str, port: u16, path: &str) -> Option<&NetworkGrant> {
        self.network.iter().find(|g| g.allows(scheme, host, port, path))
    }

    /// Find the grant that allows a request with `method` to this URL, if any.
    pub fn network_grant_for(&self, method: &str, scheme: &str, host: &str, port: u16, path: &str) -> Option<&NetworkGrant> {
        self.network.iter().find(|g| g.allows_request(method, scheme, host, port, path))
    }
}

/// A channel conversation, written `PLUGIN:CONVERSATION` (`telegram:123456`):
/// where a scheduled task's prompt is posted and a service's messages are
/// answered. Only the first `:` separates, so conversation ids may contain more.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// The channel plugin's name in kata.toml.
    pub plugin: String,
    /// The conversation (chat id, room, channel…) in that channel.
    pub conversation: String,
}

impl Target {
    /// Parse `PLUGIN:CONVERSATION`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((plugin, conversation)) if valid_plugin_name(plugin) && !conversation.trim().is_empty() => {
                Ok(Self { plugin: plugin.to_string(), conversation: conversation.to_string() })
            }
            _ => Err(format!(
                "{s:?} is not a channel conversation: write PLUGIN:CONVERSATION, the channel's name in kata.toml and \
                 the conversation (chat) id in it, e.g. \"telegram:123456\""
            )),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.plugin, self.conversation)
    }
}

/// What the policy says about a message in a group conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupVerdict {
    /// The group is granted and the message may reach the agent.
    Allowed,
    /// The group is not in `groups`.
    NotGranted,
    /// The group is granted, but `require_mention` holds and the message
    /// does not address the agent.
    NotMentioned,
}

/// Read a policy file as text. Bytes that are not UTF-8 are an error at
/// `file:line:column` naming the first bad byte and its offset.
pub fn read_text(path: &Path) -> Result<String, PolicyError> {
    let bytes = std::fs::read(path).map_err(|error| PolicyError::Read { path: path.to_path_buf(), error })?;
    String::from_utf8(bytes)
        .map_err(|e| PolicyError::Invalid { first: Box::new(utf8_diagnostic(e.as_bytes(), e.utf8_error(), path)), more: 0 })
}

/// Where the first byte that is not UTF-8 is, as a diagnostic: the line and
/// the column in characters (the valid ones before it, plus one).
fn utf8_diagnostic(bytes: &[u8], e: std::str::Utf8Error, path: &Path) -> Diagnostic {
    let offset = e.valid_up_to();
    let valid = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
    let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
    Diagnostic {
        severity: Severity::Error,
        path: path.to_path_buf(),
        line: valid.matches('\n').count() + 1,
        column: valid[line_start..].chars().count() + 1,
        key: String::new(),
        message: format!(
            "not valid UTF-8 (byte 0x{:02X} at offset {offset}); kata.toml must be UTF-8 text: save it as UTF-8, or remove that byte",
            bytes.get(offset).copied().unwrap_or(0)
        ),
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

/// What [`Policy::analyze`] found: the policy when it has no errors, and
/// every error and warning in file order.
#[derive(Debug)]
pub struct Analysis {
    /// The validated policy, if there were no errors.
    pub policy: Option<Policy>,
    /// Errors and warnings, in the order of the file.
    pub diagnostics: Vec<Diagnostic>,
}

impl Analysis {
    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error)
    }
}

impl Policy {
    /// Read and validate `path`. Relative plugin and secret paths resolve against `workspace`.
    pub fn load(path: &Path, workspace: &Path) -> Result<Self, PolicyError> {
        let text = read_text(path)?;
        Self::parse(&text, path, workspace)
    }

    /// Validate policy text (`path` is used in messages only). Fails with the
    /// first error; warnings are ignored (see [`Policy::analyze`]).
    pub fn parse(text: &str, path: &Path, workspace: &Path) -> Result<Self, PolicyError> {
        let analysis = Self::analyze(text, path, workspace);
        let mut errors = analysis.diagnostics.into_iter().filter(|d| d.severity == Severity::Error);
        match (analysis.policy, errors.next()) {
            (Some(policy), None) => Ok(policy),
            (_, Some(first)) => Err(PolicyError::Invalid { first: Box::new(first), more: errors.count() }),
            (None, None) => Err(PolicyError::Invalid {
                first: Box::new(Diagnostic {
                    severity: Severity::Error,
                    path: path.to_path_buf(),
                    line: 0,
                    column: 0,
                    key: String::new(),
                    message: "the policy could not be validated".into(),
                }),
                more: 0,
            }),
        }
    }

    /// Validate policy text and report every error and warning with its
    /// `file:line:column`. Directory grants are checked against the file
    /// system (they must exist); secrets are not read (see
    /// [`Policy::environment_diagnostics`]).
    pub fn analyze(text: &str, path: &Path, workspace: &Path) -> Analysis {
        let loc = Locator::new(text, path);
        let file: PolicyFile = match toml::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                let (line, column) = e.span().map_or((0, 0), |r| line_col(text, r.start));
                return Analysis {
                    policy: None,
                    diagnostics: vec![Diagnostic {
                        severity: Severity::Error,
                        path: path.to_path_buf(),
                        line,
                        column,
                        key: String::new(),
                        message: friendly_toml_message(e.message()),
                    }],
                };
            }
        };
        let mut diags = Vec::new();
        let mut plugins = BTreeMap::new();
        for (name, entry) in &file.plugins {
            let before = diags.len();
            let mut err = |segs: &[Seg<'_>], message: String| diags.push(loc.diag(Severity::Error, segs, message));
            let p = Seg::Key("plugins");
            let n = Seg::Key(name);
            if !valid_plugin_name(name) {
                err(&[p, n], format!("plugin name {name:?} must be 1-64 lowercase letters, digits, '-' or '_'"));
            }
            let mut network = Vec::new();
            for (i, e) in entry.network.iter().enumerate() {
                match NetworkGrant::from_entry(e) {
                    Ok(g) => network.push(g),
                    Err(m) => err(&[p, n, Seg::Key("network"), Seg::Index(i)], m),
                }
            }
            let mut secrets = BTreeMap::new();
            let mut secret_hosts = BTreeMap::new();
            for (k, v) in &entry.secrets {
                let at = [p, n, Seg::Key("secrets"), Seg::Key(k)];
                if !valid_secret_name(k) {
                    err(&at, format!("secret name {k:?} must be letters, digits, '-' or '_' (it is written as {{{{secret:NAME}}}})"));
                    continue;
                }
                match SecretSource::parse(v.from()) {
                    Ok(src) => {
                        secrets.insert(k.clone(), src);
                    }
                    Err(m) => err(&at, m),
                }
                if let SecretEntry::Table(SecretTable { hosts: Some(hosts), .. }) = v {
                    let mut parsed = Vec::new();
                    for (i, h) in hosts.iter().enumerate() {
                        match HostPattern::parse(h) {
                            Ok(h) => parsed.push(h),
                            Err(m) => err(&[p, n, Seg::Key("secrets"), Seg::Key(k), Seg::Key("hosts"), Seg::Index(i)], m),
                        }
                    }
                    let line = loc.span(&at).map_or(0, |r| line_col(text, r.start).0);
                    secret_hosts.insert(k.clone(), SecretBinding { hosts: parsed, at: format!("{}:{line}", path.display()) });
                }
            }
            let mut ca = Vec::new();
            for (i, c) in entry.ca.as_ref().map(OneOrMany::items).unwrap_or_default().into_iter().enumerate() {
                let segs = match &entry.ca {
                    Some(OneOrMany::Many(_)) => vec![p, n, Seg::Key("ca"), Seg::Index(i)],
                    _ => vec![p, n, Seg::Key("ca")],
                };
                match CaFile::load(c, workspace) {
                    Ok(f) => ca.push(f),
                    Err(m) => err(&segs, m),
                }
            }
            let mut files: Vec<FileGrant> = Vec::new();
            for (i, f) in entry.files.iter().enumerate() {
                match FileGrant::resolve(f, workspace) {
                    Ok(g) if files.iter().any(|o| o.guest == g.guest) => err(
                        &[p, n, Seg::Key("files"), Seg::Index(i)],
                        format!("guest path {} is granted twice; give each directory its own guest path", g.guest),
                    ),
                    Ok(g) => files.push(g),
                    Err(m) => err(&[p, n, Seg::Key("files"), Seg::Index(i)], m),
                }
            }
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
            let limits = match resolve_limits(&entry.limits) {
                Ok(l) => l,
                Err(m) => {
                    err(&[p, n, Seg::Key("limits")], m);
                    Limits::default()
                }
            };
            // Warnings: grants that work but are probably wider than meant.
            for (i, g) in network.iter().enumerate() {
                let at = [p, n, Seg::Key("network"), Seg::Index(i)];
                if g.is_wildcard() {
                    diags.push(loc.diag(
                        Severity::Warning,
                        &at,
                        format!(
                            "\"{}\" grants every subdomain of {}; if the plugin needs only a few hosts, list them instead",
                            g.source,
                            g.host.trim_start_matches("*.")
                        ),
                    ));
                }
                if matches!(g.scheme.as_str(), "http" | "ws") && !secrets.is_empty() && !is_loopback_host(&g.host) {
                    diags.push(loc.diag(
                        Severity::Warning,
                        &at,
                        format!(
                            "\"{}\" is plain {}: secrets sent there cross the network unencrypted; use {}s:// if the service supports it",
                            g.source, g.scheme, g.scheme
                        ),
                    ));
                }
            }
            let deliver_to = entry.deliver_to.as_deref().and_then(|d| {
                let at = [p, n, Seg::Key("deliver_to")];
                match Target::parse(d) {
                    Ok(t) if t.plugin == *name => {
                        diags.push(loc.diag(
                            Severity::Error,
                            &at,
                            format!(
                                "{d:?} names this plugin itself; name the channel that should carry its messages, e.g. \"telegram:123456\""
                            ),
                        ));
                        None
                    }
                    Ok(t) if !file.plugins.contains_key(&t.plugin) => {
                        diags.push(loc.diag(
                            Severity::Error,
                            &at,
                            format!(
                                "{d:?} names plugin {:?}, which has no [plugins.{}] table here; add that channel or fix the name",
                                t.plugin, t.plugin
                            ),
                        ));
                        None
                    }
                    Ok(t) => Some(t),
                    Err(m) => {
                        diags.push(loc.diag(Severity::Error, &at, m));
                        None
                    }
                }
            });
            secret_binding_warnings(&loc, name, entry, &network, &secrets, &secret_hosts, &mut diags);
            let webhook = entry.webhook.as_ref().and_then(|w| {
                let at = [p, n, Seg::Key("webhook")];
                let line = loc.span(&at).map_or(0, |r| line_col(text, r.start).0);
                match webhook::resolve(w, &secrets, name, format!("{}:{line}", path.display())) {
                    Ok(v) => Some(v),
                    Err((key, m)) => {
                        diags.push(loc.diag(Severity::Error, &[p, n, Seg::Key("webhook"), Seg::Key(key)], m));
                        None
                    }
                }
            });
            let position = file.hooks.order.iter().position(|h| h == name);
            let hook = (entry.hook.is_some() || position.is_some()).then(|| {
                let at = [p, n, Seg::Key("hook")];
                let line = loc.span(&at).or_else(|| loc.span(&[p, n])).map_or(0, |r| line_col(text, r.start).0);
                match hooks::resolve_hook(entry.hook.as_ref(), position, format!("{}:{line}", path.display())) {
                    Ok(h) => Some(h),
                    Err((key, m)) => {
                        diags.push(loc.diag(Severity::Error, &[p, n, Seg::Key("hook"), Seg::Key(key)], m));
                        None
                    }
                }
            });
            let hook = hook.flatten();
            if entry.hook.is_some() && position.is_none() {
                diags.push(loc.diag(
                    Severity::Warning,
                    &[p, n, Seg::Key("hook")],
                    format!("[plugins.{name}] has hook settings, but [hooks] order does not name it, so it is never called; add it, e.g. [hooks] order = [\"{name}\"]"),
                ));
            }
            let scheduler = entry.scheduler.as_ref().and_then(|s| {
                let at = [p, n, Seg::Key("scheduler")];
                let line = loc.span(&at).map_or(0, |r| line_col(text, r.start).0);
                match hooks::resolve_scheduler(s, format!("{}:{line}", path.display())) {
                    Ok(g) => Some(g),
                    Err((key, m)) => {
                        diags.push(loc.diag(Severity::Error, &[p, n, Seg::Key("scheduler"), Seg::Key(key)], m));
                        None
                    }
                }
            });
            for (i, g) in entry.groups.iter().flatten().enumerate() {
                if g.trim().is_empty() || g.trim() != g {
                    diags.push(loc.diag(Severity::Error, &[p, n, Seg::Key("groups"), Seg::Index(i)], format!("group {g:?} must be a conversation id as the channel reports it (e.g. \"-1001234567890\"), or \"*\" for every group")));
                }
            }
            let every_group = entry.groups.iter().flatten().any(|g| g == "*");
            if entry.require_mention == Some(false) && every_group {
                diags.push(loc.diag(
                    Severity::Warning,
                    &[p, n, Seg::Key("require_mention")],
                    "with groups = [\"*\"] and require_mention = false, every message in every group the bot is added to reaches the agent; list the groups, or require a mention".into(),
                ));
            }
            if entry.require_mention.is_some() && entry.groups.as_ref().is_none_or(Vec::is_empty) {
                diags.push(loc.diag(
                    Severity::Warning,
                    &[p, n, Seg::Key("require_mention")],
                    "require_mention only applies to granted groups, and `groups` grants none; add the group ids, e.g. groups = [\"-1001234567890\"]".into(),
                ));
            }
            if !ca.is_empty() && !network.iter().any(|g| matches!(g.scheme.as_str(), "https" | "wss")) {
                diags.push(loc.diag(
                    Severity::Warning,
                    &[p, n, Seg::Key("ca")],
                    "`ca` is only used for https:// and wss:// requests, and no `network` entry of this plugin grants one".into(),
                ));
            }
            if diags[before..].iter().any(|d| d.severity == Severity::Error) {
                continue;
            }
            plugins.insert(
                name.clone(),
                PluginGrants {
                    declared_network: None,
                    name: name.clone(),
                    path: entry.path.as_ref().map(|p| workspace.join(p)),
                    enabled: entry.enabled,
                    network,
                    secrets,
                    secret_hosts,
                    ca,
                    config,
                    files,
                    limits,
                    allow_from: entry.allow_from.clone(),
                    groups: entry.groups.clone().unwrap_or_default(),
                    require_mention: entry.require_mention.unwrap_or(true),
                    deliver_to,
                    tools_mode: entry.tools_mode,
                    webhook,
                    hook,
                    scheduler,
                },
            );
        }
        for (i, is_error, m) in trust::check(&file.trust) {
            let severity = if is_error { Severity::Error } else { Severity::Warning };
            let at = [Seg::Key("trust"), Seg::Key("publishers"), Seg::Index(i.unwrap_or(0))];
            diags.push(loc.diag(severity, &at[..if i.is_some() { 3 } else { 1 }], m));
        }
        for (i, h) in file.hooks.order.iter().enumerate() {
            let at = [Seg::Key("hooks"), Seg::Key("order"), Seg::Index(i)];
            if file.hooks.order[..i].contains(h) {
                diags.push(loc.diag(
                    Severity::Error,
                    &at,
                    format!("{h:?} is named twice in [hooks] order; a hook runs once per message, so name it once"),
                ));
            } else if !file.plugins.contains_key(h) {
                diags.push(loc.diag(
                    Severity::Error,
                    &at,
                    format!("[hooks] order names {h:?}, which has no [plugins.{h}] table here; install the hook (`kata plugin add FILE --name {h}`) or fix the name"),
                ));
            }
        }
        for (name, entry) in &file.plugins {
            if let Some(Err(m)) = entry.publisher.as_deref().map(PublisherKey::parse) {
                diags.push(loc.diag(Severity::Error, &[Seg::Key("plugins"), Seg::Key(name), Seg::Key("publisher")], m));
            }
        }
        if let Err((key, m)) = agent::Settings::resolve(&file, workspace) {
            diags.push(loc.diag(Severity::Error, &[Seg::Key(key.0), Seg::Key(key.1)], m));
        }
        diags.sort_by_key(|d| (d.line, d.column, d.severity));
        let ok = !diags.iter().any(|d| d.severity == Severity::Error);
        Analysis { policy: ok.then(|| Self { path: path.to_path_buf(), file, plugins }), diagnostics: diags }
    }

    /// A finding about `[plugins.NAME]`, or its `key` when given, located in
    /// `text` (the policy's text).
    pub fn plugin_diagnostic(&self, text: &str, name: &str, key: Option<&str>, severity: Severity, message: String) -> Diagnostic {
        let loc = Locator::new(text, &self.path);
        let mut segs = vec![Seg::Key("plugins"), Seg::Key(name)];
        segs.extend(key.map(Seg::Key));
        loc.diag(severity, &segs, message)
    }

    /// The line (1-based) of a key in `text` (the policy's text): `keys`
    /// are the table path, e.g. `["tools", "mode"]`, and `index` an element
    /// of the array there. None when the file does not set it.
    pub fn key_line(text: &str, keys: &[&str], index: Option<usize>) -> Option<usize> {
        let loc = Locator::new(text, Path::new("kata.toml"));
        let mut segs: Vec<Seg<'_>> = keys.iter().map(|k| Seg::Key(k)).collect();
        segs.extend(index.map(Seg::Index));
        // The deepest part found must be the whole path.
        let whole = loc.span(&segs)?;
        let parent = if segs.len() > 1 { loc.span(&segs[..segs.len() - 1]) } else { None };
        (parent != Some(whole.clone())).then(|| line_col(text, whole.start).0)
    }

    /// Findings that depend on this machine rather than on the file: plugin
    /// files that are missing, environment variables that are unset, secret
    /// files that are missing or readable by others. `text` is the policy
    /// text, for locations; `kata` reads a secret from kata's store (see
    /// [`SecretSource::resolve_with`]).
    pub fn environment_diagnostics(&self, text: &str, workspace: &Path, kata: &dyn Fn(&str) -> Result<String, String>) -> Vec<Diagnostic> {
        let loc = Locator::new(text, &self.path);
        let mut diags = Vec::new();
        for g in self.plugins.values() {
            let (p, n) = (Seg::Key("plugins"), Seg::Key(&g.name));
            match &g.path {
                None => diags.push(loc.diag(
                    Severity::Warning,
                    &[p, n],
                    format!("plugin {} has no `path`: it is not installed and will not run; install it with `kata plugin add FILE --name {}`", g.name, g.name),
                )),
                // `kata run` refuses an enabled plugin whose file is missing.
                Some(file) if !file.is_file() && g.enabled => diags.push(loc.diag(
                    Severity::Error,
                    &[p, n, Seg::Key("path")],
                    format!(
                        "plugin file {} does not exist (or is not a file), so `kata run` refuses this policy; build or install it \
                         (`kata plugin add FILE --name {}`), fix `path`, or set `enabled = false`",
                        file.display(),
                        g.name
                    ),
                )),
                Some(file) if !file.is_file() => diags.push(loc.diag(
                    Severity::Warning,
                    &[p, n, Seg::Key("path")],
                    format!("plugin file {} does not exist; the plugin is disabled, but enabling it will fail until you build or install it, or fix `path`", file.display()),
                )),
                Some(_) => {}
            }
            if !g.enabled {
                continue;
            }
            for (name, src) in &g.secrets {
                let at = [p, n, Seg::Key("secrets"), Seg::Key(name)];
                match src {
                    SecretSource::Env(var) if std::env::var_os(var).is_none() => diags.push(loc.diag(
                        Severity::Warning,
                        &at,
                        format!(
                            "environment variable {var} is not set here; `kata run` fails unless it is set in the daemon's environment"
                        ),
                    )),
                    SecretSource::Env(_) => {}
                    SecretSource::File(_) | SecretSource::Kata(_) => {
                        if let Err(m) = src.resolve_with(workspace, kata) {
                            diags.push(loc.diag(Severity::Error, &at, m));
                        }
                    }
                }
            }
        }
        diags.sort_by_key(|d| (d.line, d.column, d.severity));
        diags
    }
}

/// Warnings about where secrets may go: a secret without `hosts` when the
/// plugin is granted several hosts (it would be filled in for all of them),
/// and a `hosts` entry no `network` grant reaches (the secret never goes
/// there, which is probably a typo).
fn secret_binding_warnings(
    loc: &Locator<'_>,
    plugin: &str,
    entry: &PluginEntry,
    network: &[NetworkGrant],
    secrets: &BTreeMap<String, SecretSource>,
    bound: &BTreeMap<String, SecretBinding>,
    diags: &mut Vec<Diagnostic>,
) {
    let (p, n) = (Seg::Key("plugins"), Seg::Key(plugin));
    let mut hosts: Vec<String> = Vec::new();
    for g in network {
        let h = if default_port(&g.scheme) == Some(g.port) { g.host.clone() } else { format!("{}:{}", g.host, g.port) };
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    let wide = hosts.len() > 1 || network.iter().any(NetworkGrant::is_wildcard);
    for name in secrets.keys() {
        let at = [p, n, Seg::Key("secrets"), Seg::Key(name)];
        match bound.get(name) {
            None if wide => {
                let from = entry.secrets.get(name).map_or("env:VARIABLE", SecretEntry::from);
                diags.push(loc.diag(
                    Severity::Warning,
                    &at,
                    format!(
                        "secret {name} has no `hosts`, so it is filled in for requests to every host this plugin is granted \
                         ({}); bind it to the one that needs it: {name} = {{ from = \"{from}\", hosts = [\"{}\"] }}",
                        hosts.join(", "),
                        hosts.first().map_or("api.example.org", String::as_str)
                    ),
                ));
            }
            None => {}
            Some(b) => {
                for (i, h) in b.hosts.iter().enumerate() {
                    if !network.iter().any(|g| h.covers_grant(g)) {
                        diags.push(loc.diag(
                            Severity::Warning,
                            &[p, n, Seg::Key("secrets"), Seg::Key(name), Seg::Key("hosts"), Seg::Index(i)],
                            format!(
                                "secret {name} is bound to {}, but no `network` entry of this plugin grants that host, so the \
                                 secret is never sent there; grant it in `network` or fix the host",
                                h.source
                            ),
                        ));
                    }
                }
                if b.hosts.is_empty() {
                    diags.push(loc.diag(
                        Severity::Warning,
                        &at,
                        format!("secret {name} has `hosts = []`: it is never sent anywhere; list the hosts that need it, or remove it"),
                    ));
                }
            }
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn valid_secret_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl FileGrant {
    /// Validate a `files` entry: the host directory must exist (`~` expands to
    /// the home directory, relative paths are relative to `workspace`), and
    /// the guest path must be absolute without `..`.
    pub fn resolve(entry: &FileEntry, workspace: &Path) -> Result<Self, String> {
        let host = expand_home(&entry.host)?;
        let host = if host.is_absolute() { host } else { workspace.join(host) };
        let meta = std::fs::metadata(&host)
            .map_err(|e| format!("directory {} cannot be granted: {e}; create it or fix `host`", host.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory; grant the directory that contains it", host.display()));
        }
        let host = host.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", host.display()))?;
        let guest = entry.guest.trim_end_matches('/');
        let guest = if guest.is_empty() { "/" } else { guest };
        if !guest.starts_with('/') || guest.split('/').any(|s| s == ".." || s == ".") || guest.contains('\\') {
            return Err(format!("guest path {:?} must be absolute and plain, like \"/notes\" (no `..`, `.` or backslashes)", entry.guest));
        }
        Ok(Self { host, guest: guest.to_string(), mode: entry.mode })
    }
}

/// Expand a leading `~` or `~/` to `$HOME`.
fn expand_home(p: &str) -> Result<PathBuf, String> {
    let rest = match p.strip_prefix('~') {
        None => return Ok(PathBuf::from(p)),
        Some("") => "",
        Some(r) if r.starts_with('/') => &r[1..],
        Some(_) => return Err(format!("{p:?}: only `~` and `~/...` are understood, not `~user`")),
    };
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{p:?} starts with `~` but HOME is not set; write an absolute path"))?;
    Ok(PathBuf::from(home).join(rest))
}

/// One step of a path into the TOML document.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Finds the `line:column` of a key path in the policy text, using toml's spans.
struct Locator<'a> {
    text: &'a str,
    path: &'a Path,
    doc: Option<toml::Spanned<toml::de::DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str, path: &'a Path) -> Self {
        Self { text, path, doc: toml::de::DeTable::parse(text).ok() }
    }

    /// The span of the deepest part of `segs` found in the document.
    fn span(&self, segs: &[Seg<'_>]) -> Option<std::ops::Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut table = doc.get_ref();
        let mut value: Option<&toml::Spanned<toml::de::DeValue<'a>>> = None;
        let mut best = None;
        for seg in segs {
            let next = match (seg, value) {
                (Seg::Key(k), None) => table.get(*k),
                (Seg::Key(k), Some(v)) => match v.get_ref() {
                    toml::de::DeValue::Table(t) => {
                        table = t;
                        t.get(*k)
                    }
                    _ => None,
                },
                (Seg::Index(i), Some(v)) => v.get_ref().get(*i),
                (Seg::Index(_), None) => None,
            };
            let Some(next) = next else { break };
            best = Some(next.span());
            value = Some(next);
        }
        best
    }

    fn diag(&self, severity: Severity, segs: &[Seg<'_>], message: String) -> Diagnostic {
        let (line, column) = self.span(segs).map_or((0, 0), |r| line_col(self.text, r.start));
        let mut key = String::new();
        for s in segs {
            match s {
                Seg::Key(k) if key.is_empty() => key.push_str(k),
                Seg::Key(k) => {
                    key.push('.');
                    key.push_str(k);
                }
                Seg::Index(i) => key.push_str(&format!("[{i}]")),
            }
        }
        Diagnostic { severity, path: self.path.to_path_buf(), line, column, key, message }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// toml's messages are good; a few serde ones are not. Keep them one paragraph.
fn friendly_toml_message(msg: &str) -> String {
    let msg = msg.trim().replace('\n', " ");
    if msg.contains("untagged enum SecretEntry") {
        return "a secret is a source string like \"env:TELEGRAM_BOT_TOKEN\", \"file:PATH\" or \"kata:NAME\", or a table like \
                { from = \"env:TELEGRAM_BOT_TOKEN\", hosts = [\"api.telegram.org\"] } (keys: from, hosts)"
            .into();
    }
    if msg.contains("untagged enum OneOrMany") {
        return "`ca` is \"file:PATH\" (a PEM file with the CA certificate) or a list of them".into();
    }
    if msg.contains("untagged enum NetworkEntry") {
        return "a network entry is a URL string like \"https://api.example.org/v1/\" or a table like \
                { url = \"https://api.example.org\", methods = [\"GET\"], private = false } (keys: url, methods, private)"
            .into();
    }
    msg
}

/// Whether `name` is a valid plugin name: 1-64 lowercase letters, digits, `-` or `_`.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
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
        requests_per_minute: match l.requests_per_minute {
            Some(0) => return Err("requests_per_minute: 0 would forbid every request; remove the network grants instead".into()),
            Some(n) => n,
            None => d.requests_per_minute,
        },
        max_response_bytes: match &l.max_response {
            Some(s) => parse_size(s).map_err(|e| format!("max_response: {e}"))?,
            None => d.max_response_bytes,
        },
        messages_per_minute: match l.messages_per_minute {
            Some(0) => return Err("messages_per_minute: 0 would refuse every message; set enabled = false to stop the plugin".into()),
            Some(n) => n,
            None => d.messages_per_minute,
        },
        concurrent_sends: match l.concurrent_sends {
            Some(n @ 1..=MAX_CONCURRENT_SENDS) => n,
            Some(n) => return Err(format!("concurrent_sends: {n} is out of range; use 1 (one reply at a time) to {MAX_CONCURRENT_SENDS}")),
            None => d.concurrent_sends,
        },
        max_message_bytes: text_limit("max_message", &l.max_message, d.max_message_bytes)?,
        max_poll_bytes: match &l.max_poll_bytes {
            Some(s) => match parse_size(s).map_err(|e| format!("max_poll_bytes: {e}"))? {
                0 => return Err("max_poll_bytes: 0 would refuse every message; set enabled = false to stop the plugin".into()),
                n => n,
            },
            None => d.max_poll_bytes,
        },
        bytes_per_minute: match &l.bytes_per_minute {
            Some(s) => match parse_size(s).map_err(|e| format!("bytes_per_minute: {e}"))? {
                0 => return Err("bytes_per_minute: 0 would refuse every message; set enabled = false to stop the plugin".into()),
                n => n,
            },
            None => d.bytes_per_minute,
        },
        log_lines_per_minute: match l.log_lines_per_minute {
            Some(0) => return Err("log_lines_per_minute: 0 would hide every log line of the plugin; use at least 1".into()),
            Some(n) => n,
            None => d.log_lines_per_minute,
        },
        max_log_line_bytes: text_limit("max_log_line", &l.max_log_line, d.max_log_line_bytes)?,
        max_tool_result_bytes: text_limit("max_tool_result", &l.max_tool_result, d.max_tool_result_bytes)?,
    })
}

/// A size limit on a text that is cut with a marker: at least [`MIN_TEXT_LIMIT`].
fn text_limit(key: &str, value: &Option<String>, default: usize) -> Result<usize, String> {
    match value {
        Some(s) => match parse_size(s).map_err(|e| format!("{key}: {e}"))? {
            n if n < MIN_TEXT_LIMIT => {
                Err(format!("{key}: {s:?} is too small; use at least \"{MIN_TEXT_LIMIT}B\" (room for the marker that says a text was cut)"))
            }
            n => Ok(n),
        },
        None => Ok(default),
    }
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

/// Parse a duration such as `200ms`, `2s`, `5m`, `1h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like \"200ms\" or \"2s\""))?;
    Ok(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        u => return Err(format!("unknown duration unit {u:?} in {s:?}: use ms, s, m, h or d")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(s: &str) -> NetworkGrant {
        NetworkGrant::parse(s).expect("valid grant")
    }

    #[test]
    fn grant_matches_scheme_host_port_and_prefix() {
        let g = grant("https://api.telegram.org/bot*");
        assert!(g.allows("https", "api.telegram.org", 443, "/bot123:abc/getUpdates"));
        assert!(g.allows("https", "API.Telegram.org", 443, "/bot"));
        assert!(!grant("https://api.telegram.org/bot").allows("https", "api.telegram.org", 443, "/bot123:abc/getUpdates"));
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
    fn policy_errors_name_file_line_column_and_key() {
        let ws = Path::new("/ws");
        let p = Path::new("/ws/kata.toml");
        let e = Policy::parse("[plugins.tg]\npath = \"a.wasm\"\nnetwrk = []\n", p, ws).expect_err("typo");
        let msg = e.to_string();
        assert!(msg.starts_with("/ws/kata.toml:3:1: ") && msg.contains("netwrk"), "{msg}");
        let e = Policy::parse("[plugins.tg]\npath = \"a.wasm\"\nnetwork = [\"ok://x\", \"nope\"]\n", p, ws).expect_err("bad");
        let msg = e.to_string();
        assert!(msg.starts_with("/ws/kata.toml:3:"), "{msg}");
        assert!(msg.contains("plugins.tg.network[0]") && msg.contains("and 1 more error"), "{msg}");
        let e = Policy::parse("[plugins.tg]\npath = \"a.wasm\"\nnetwork = [\"nope\"]\n", p, ws).expect_err("bad");
        let msg = e.to_string();
        assert!(msg.starts_with("/ws/kata.toml:3:12: plugins.tg.network[0]: ") && msg.contains("no scheme"), "{msg}");
        let e = Policy::parse("[daemon\n", p, ws).expect_err("syntax");
        assert!(e.to_string().starts_with("/ws/kata.toml:1:"), "{e}");
        let e = Policy::parse("[plugins.tg]\npath = \"a\"\nsecrets = { t = \"hunter2\" }\n", p, ws).expect_err("literal secret");
        assert!(e.to_string().contains("never go in kata.toml") && e.to_string().contains(":3:"), "{e}");
        let e = Policy::parse("[plugins.tg]\nnetwork = [{ url = \"https://x.org\", method = [\"GET\"] }]\n", p, ws).expect_err("bad table");
        assert!(e.to_string().contains("keys: url, methods, private"), "{e}");
    }

    #[test]
    fn analysis_lists_every_error_and_warning_in_file_order() {
        let text = "[plugins.a]\nnetwork = [\"https://*.example.com\", \"bad\"]\nlimits = { memory = \"lots\" }\n\
                    [plugins.b]\nnetwork = [\"http://api.example.org\"]\nsecrets = { t = \"env:T\" }\n";
        let a = Policy::analyze(text, Path::new("k.toml"), Path::new("/"));
        assert!(a.policy.is_none());
        let rendered: Vec<String> = a.diagnostics.iter().map(Diagnostic::render).collect();
        assert_eq!(rendered.len(), 4, "{rendered:#?}");
        assert!(rendered[0].starts_with("k.toml:2:12: warning: plugins.a.network[0]: "), "{rendered:#?}");
        assert!(rendered[1].starts_with("k.toml:2:37: error: plugins.a.network[1]: "), "{rendered:#?}");
        assert!(rendered[2].starts_with("k.toml:3:10: error: plugins.a.limits: memory: "), "{rendered:#?}");
        assert!(rendered[3].starts_with("k.toml:5:12: warning: ") && rendered[3].contains("unencrypted"), "{rendered:#?}");
    }

    #[test]
    fn deliver_to_names_a_channel_of_this_file() {
        let (p, ws) = (Path::new("k.toml"), Path::new("/"));
        let ok = Policy::parse("[plugins.tg]\n[plugins.feed]\ndeliver_to = \"tg:-100:7\"\n", p, ws).expect("valid");
        let t = ok.plugins["feed"].deliver_to.clone().expect("target");
        assert_eq!((t.plugin.as_str(), t.conversation.as_str(), t.to_string().as_str()), ("tg", "-100:7", "tg:-100:7"));
        for (value, want) in
            [("tg", "PLUGIN:CONVERSATION"), ("tg:", "PLUGIN:CONVERSATION"), ("tgx:1", "no [plugins.tgx]"), ("feed:1", "itself")]
        {
            let text = format!("[plugins.tg]\n[plugins.feed]\ndeliver_to = \"{value}\"\n");
            let e = Policy::parse(&text, p, ws).expect_err(value).to_string();
            assert!(e.contains("k.toml:3:14") && e.contains("deliver_to") && e.contains(want), "{value}: {e}");
        }
    }

    #[test]
    fn network_tables_methods_and_private() {
        let text = "[plugins.a]\nnetwork = [{ url = \"https://nas.lan:8443/api/\", methods = [\"get\", \"POST\"], private = true }, \
                    \"https://api.example.org\", \"http://localhost:9000\", \"http://192.168.1.2\"]\n";
        let p = Policy::parse(text, Path::new("k.toml"), Path::new("/")).expect("valid");
        let g = &p.plugins["a"];
        assert!(g.network_grant_for("GET", "https", "nas.lan", 8443, "/api/x").is_some());
        assert!(g.network_grant_for("DELETE", "https", "nas.lan", 8443, "/api/x").is_none());
        assert!(g.network_grant("https", "nas.lan", 8443, "/api/x").is_some());
        let flags: Vec<(bool, bool)> = g.network.iter().map(|n| (n.private(), n.allows_private_addresses())).collect();
        assert_eq!(flags, [(true, true), (false, false), (false, true), (false, true)]);
        let e =
            Policy::parse("[plugins.a]\nnetwork = [{ url = \"https://x.org\", methods = [\"G T\"] }]\n", Path::new("k"), Path::new("/"))
                .expect_err("bad method");
        assert!(e.to_string().contains("not an HTTP method"), "{e}");
    }

    #[test]
    fn file_grants_are_checked_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("notes")).expect("mkdir");
        std::fs::write(dir.path().join("file.txt"), "x").expect("write");
        let ok = "[plugins.a]\nfiles = [{ host = \"notes\", guest = \"/notes/\" }, { host = \"notes\", guest = \"/w\", mode = \"rw\" }]\n";
        let p = Policy::parse(ok, Path::new("k.toml"), dir.path()).expect("valid");
        let f = &p.plugins["a"].files;
        assert_eq!(f[0].host, dir.path().join("notes").canonicalize().expect("canon"));
        assert_eq!((f[0].guest.as_str(), f[0].mode), ("/notes", FileMode::Ro));
        assert_eq!((f[1].guest.as_str(), f[1].mode), ("/w", FileMode::Rw));
        for (entry, want) in [
            ("{ host = \"missing\", guest = \"/m\" }", "cannot be granted"),
            ("{ host = \"file.txt\", guest = \"/m\" }", "not a directory"),
            ("{ host = \"notes\", guest = \"notes\" }", "must be absolute"),
            ("{ host = \"notes\", guest = \"/a/../b\" }", "must be absolute"),
            ("{ host = \"notes\", guest = \"/n\", mode = \"wx\" }", "unknown variant"),
            ("{ host = \"~bob/x\", guest = \"/n\" }", "not `~user`"),
        ] {
            let text = format!("[plugins.a]\nfiles = [{entry}]\n");
            let e = Policy::parse(&text, Path::new("k.toml"), dir.path()).expect_err(entry);
            assert!(e.to_string().contains(want) && e.to_string().contains("k.toml:2:"), "{entry}: {e}");
        }
        let dup = "[plugins.a]\nfiles = [{ host = \"notes\", guest = \"/n\" }, { host = \".\", guest = \"/n\" }]\n";
        let e = Policy::parse(dup, Path::new("k.toml"), dir.path()).expect_err("duplicate");
        assert!(e.to_string().contains("granted twice"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("token");
        std::fs::write(&f, "value\n").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let src = SecretSource::File(f.clone());
        let e = src.resolve_with(dir.path(), &|_| unreachable!()).expect_err("world-readable");
        assert!(e.contains("mode 0644") && e.contains(&format!("chmod 600 {}", f.display())), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(src.resolve_with(dir.path(), &|_| unreachable!()).as_deref(), Ok("value"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert_eq!(src.resolve_with(dir.path(), &|_| unreachable!()).as_deref(), Ok("value"));
    }

    #[test]
    fn secret_tables_bind_hosts_and_say_where() {
        let text = "[plugins.tg]\nnetwork = [\"https://api.telegram.org/bot\", \"http://127.0.0.1:9000\", \"https://*.svc.example.net\"]\n\
                    secrets = { bot_token = { from = \"kata:bot_token\", hosts = [\"API.telegram.org\", \"127.0.0.1:9000\", \"*.svc.example.net\"] }, \
                    other = \"env:O\" }\n";
        let p = Policy::parse(text, Path::new("k.toml"), Path::new("/")).expect("valid");
        let g = &p.plugins["tg"];
        assert_eq!(g.secrets["bot_token"], SecretSource::Kata("bot_token".into()));
        let b = &g.secret_hosts["bot_token"];
        assert_eq!(b.at, "k.toml:3");
        assert!(g.secret_allowed("bot_token", "api.telegram.org", 443));
        assert!(g.secret_allowed("bot_token", "api.telegram.org", 8443), "no port written: any port");
        assert!(g.secret_allowed("bot_token", "127.0.0.1", 9000));
        assert!(!g.secret_allowed("bot_token", "127.0.0.1", 9001));
        assert!(g.secret_allowed("bot_token", "a.svc.example.net", 443));
        assert!(!g.secret_allowed("bot_token", "svc.example.net", 443));
        assert!(!g.secret_allowed("bot_token", "api.telegram.org.evil.example", 443));
        assert!(g.secret_allowed("other", "anything.example", 443), "no hosts: every granted host");
        for (entry, want) in [
            ("{ from = \"env:X\", hosts = [\"https://api.telegram.org/bot\"] }", "not a URL: write \"api.telegram.org\""),
            ("{ from = \"env:X\", hosts = [\"a.*.org\"] }", "write a host name"),
            ("{ from = \"env:X\", hosts = [\"x.org:99999\"] }", "bad host or port"),
            ("{ from = \"env:X\", host = [\"x.org\"] }", "keys: from, hosts"),
            ("{ from = \"literal\" }", "kata:NAME"),
            ("\"kata:\"", "needs the name"),
            ("\"kata:a b\"", "needs the name"),
        ] {
            let text = format!("[plugins.tg]\nsecrets = {{ t = {entry} }}\n");
            let e = Policy::parse(&text, Path::new("k.toml"), Path::new("/")).expect_err(entry).to_string();
            assert!(e.contains(want) && e.contains("k.toml:2:"), "{entry}: {e}");
        }
    }

    #[test]
    fn check_warns_where_a_secret_could_go_further_than_meant() {
        let warn = |text: &str| -> Vec<String> {
            Policy::analyze(text, Path::new("k.toml"), Path::new("/"))
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Warning)
                .map(Diagnostic::render)
                .collect()
        };
        // One host: nothing to bind.
        assert!(warn("[plugins.a]\nnetwork = [\"https://api.telegram.org/bot\"]\nsecrets = { t = \"env:T\" }\n").is_empty());
        // Two hosts, unbound: warned, with the line to write.
        let w =
            warn("[plugins.a]\nnetwork = [\"https://api.telegram.org/bot\", \"https://cdn.example.org\"]\nsecrets = { t = \"env:T\" }\n");
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].starts_with("k.toml:3:17: warning: plugins.a.secrets.t: "), "{w:#?}");
        assert!(
            w[0].contains("api.telegram.org, cdn.example.org") && w[0].contains("t = { from = \"env:T\", hosts = [\"api.telegram.org\"] }"),
            "{w:#?}"
        );
        // A wildcard counts as many hosts.
        assert_eq!(warn("[plugins.a]\nnetwork = [\"https://*.example.org\"]\nsecrets = { t = \"env:T\" }\n").len(), 2);
        // Bound to a host no grant reaches: probably a typo.
        let w = warn(
            "[plugins.a]\nnetwork = [\"https://api.telegram.org/bot\", \"https://cdn.example.org\"]\n\
                      secrets = { t = { from = \"env:T\", hosts = [\"api.telegram.org\", \"api.telegran.org\"] } }\n",
        );
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].contains("plugins.a.secrets.t.hosts[1]") && w[0].contains("never sent there"), "{w:#?}");
        assert!(
            warn("[plugins.a]\nnetwork = [\"https://a.org\"]\nsecrets = { t = { from = \"env:T\", hosts = [] } }\n")[0]
                .contains("never sent anywhere")
        );
    }

    #[test]
    fn ca_files_are_loaded_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        let mut ca = ca;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = ca.self_signed(&key).expect("cert");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("empty.pem"), "nothing here\n").expect("write");
        let p = Policy::parse("[plugins.a]\nnetwork = [\"https://nas.lan\"]\nca = \"file:ca.pem\"\n", Path::new("k"), dir.path())
            .expect("valid");
        assert_eq!(p.plugins["a"].ca.len(), 1);
        assert_eq!(p.plugins["a"].ca[0].certs[0].as_ref(), cert.der().as_ref());
        let p = Policy::parse(
            "[plugins.a]\nnetwork = [\"https://nas.lan\"]\nca = [\"file:ca.pem\", \"file:ca.pem\"]\n",
            Path::new("k"),
            dir.path(),
        )
        .expect("list");
        assert_eq!(p.plugins["a"].ca.len(), 2);
        for (entry, want) in [
            ("\"ca.pem\"", "write \"file:PATH\""),
            ("\"file:missing.pem\"", "cannot read CA file"),
            ("\"file:empty.pem\"", "holds no certificate"),
            ("[\"file:ca.pem\", \"file:empty.pem\"]", "holds no certificate"),
            ("3", "`ca` is \"file:PATH\""),
        ] {
            let text = format!("[plugins.a]\nnetwork = [\"https://nas.lan\"]\nca = {entry}\n");
            let e = Policy::parse(&text, Path::new("k"), dir.path()).expect_err(entry).to_string();
            assert!(e.contains(want) && e.contains("k:3:"), "{entry}: {e}");
        }
    }

    #[test]
    fn groups_need_a_grant_and_by_default_a_mention() {
        let parse = |extra: &str| {
            Policy::parse(&format!("[plugins.tg]\n{extra}\n"), Path::new("k"), Path::new("/")).expect("valid").plugins["tg"].clone()
        };
        let none = parse("");
        assert_eq!(none.group_verdict("-100123", true), GroupVerdict::NotGranted, "no `groups`: no group");
        let one = parse("groups = [\"-100123\"]");
        assert!(one.require_mention, "require_mention defaults to true");
        assert_eq!(one.group_verdict("-100123", true), GroupVerdict::Allowed);
        assert_eq!(one.group_verdict("-100123", false), GroupVerdict::NotMentioned);
        assert_eq!(one.group_verdict("-100999", true), GroupVerdict::NotGranted);
        let open = parse("groups = [\"*\"]\nrequire_mention = false");
        assert_eq!(open.group_verdict("-100999", false), GroupVerdict::Allowed);
        // allow_from says nothing about groups.
        let senders = parse("allow_from = [\"*\"]");
        assert_eq!(senders.group_verdict("-100123", true), GroupVerdict::NotGranted);

        let warnings = |extra: &str| -> Vec<String> {
            Policy::analyze(&format!("[plugins.tg]\n{extra}\n"), Path::new("k"), Path::new("/"))
                .diagnostics
                .iter()
                .map(Diagnostic::render)
                .collect()
        };
        let w = warnings("groups = [\"*\"]\nrequire_mention = false");
        assert!(
            w.len() == 1 && w[0].starts_with("k:3:19: warning: plugins.tg.require_mention: ") && w[0].contains("every group"),
            "{w:#?}"
        );
        let w = warnings("require_mention = true");
        assert!(w.len() == 1 && w[0].contains("grants none"), "{w:#?}");
        let w = warnings("groups = [\" -1\"]");
        assert!(w.len() == 1 && w[0].starts_with("k:2:11: error: plugins.tg.groups[0]: "), "{w:#?}");
        assert!(warnings("groups = [\"-100123\"]").is_empty());
    }

    #[test]
    fn limits_parse_rate_and_response_size() {
        let p =
            Policy::parse("[plugins.a]\nlimits = { requests_per_minute = 30, max_response = \"1MiB\" }\n", Path::new("k"), Path::new("/"))
                .expect("valid");
        let l = p.plugins["a"].limits;
        assert_eq!((l.requests_per_minute, l.max_response_bytes), (30, 1 << 20));
        let d = Limits::default();
        assert_eq!((d.requests_per_minute, d.max_response_bytes), (600, 16 << 20));
        let e = Policy::parse("[plugins.a]\nlimits = { requests_per_minute = 0 }\n", Path::new("k"), Path::new("/")).expect_err("zero");
        assert!(e.to_string().contains("requests_per_minute"), "{e}");
    }

    #[test]
    fn size_and_log_limits_parse_with_defaults_and_located_errors() {
        let parse = |l: &str| Policy::parse(&format!("[plugins.a]\nlimits = {{ {l} }}\n"), Path::new("k"), Path::new("/"));
        let d = Limits::default();
        assert_eq!(
            (
                d.max_message_bytes,
                d.max_poll_bytes,
                d.bytes_per_minute,
                d.log_lines_per_minute,
                d.max_log_line_bytes,
                d.max_tool_result_bytes
            ),
            (64 << 10, 4 << 20, 16 << 20, 600, 4 << 10, 64 << 10)
        );
        let l = parse(
            "max_message = \"1KiB\", max_poll_bytes = \"8KiB\", bytes_per_minute = \"1MiB\", \
             log_lines_per_minute = 30, max_log_line = \"512B\", max_tool_result = \"2KiB\"",
        )
        .expect("valid")
        .plugins["a"]
            .limits;
        assert_eq!(
            (
                l.max_message_bytes,
                l.max_poll_bytes,
                l.bytes_per_minute,
                l.log_lines_per_minute,
                l.max_log_line_bytes,
                l.max_tool_result_bytes
            ),
            (1 << 10, 8 << 10, 1 << 20, 30, 512, 2 << 10)
        );
        for (bad, says) in [
            ("max_message = \"12 parsecs\"", "max_message: unknown size unit"),
            ("max_message = \"10B\"", "max_message: \"10B\" is too small; use at least \"256B\""),
            ("max_poll_bytes = \"0\"", "max_poll_bytes: 0 would refuse every message"),
            ("bytes_per_minute = \"lots\"", "bytes_per_minute: \"lots\" is not a size"),
            ("log_lines_per_minute = 0", "log_lines_per_minute: 0 would hide every log line"),
            ("max_log_line = \"1B\"", "max_log_line: \"1B\" is too small"),
            ("max_tool_result = \"-1\"", "max_tool_result: \"-1\" is not a size"),
            ("max_messages = \"1KiB\"", "unknown field `max_messages`"),
        ] {
            let e = format!("{:#}", parse(bad).expect_err(bad));
            assert!(e.contains("k:2:") && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn concurrent_sends_default_and_range() {
        let parse = |l: &str| Policy::parse(&format!("[plugins.a]\nlimits = {{ {l} }}\n"), Path::new("k"), Path::new("/"));
        assert_eq!(Limits::default().concurrent_sends, 4);
        assert_eq!(parse("concurrent_sends = 1").expect("valid").plugins["a"].limits.concurrent_sends, 1);
        assert_eq!(parse("concurrent_sends = 16").expect("valid").plugins["a"].limits.concurrent_sends, 16);
        for bad in ["concurrent_sends = 0", "concurrent_sends = 17"] {
            let e = format!("{:#}", parse(bad).expect_err(bad));
            assert!(e.contains("concurrent_sends") && e.contains("1 (one reply at a time) to 16"), "{e}");
        }
    }

    #[test]
    fn encoded_dot_segments_never_match() {
        for path in ["/bot/../x", "/bot/%2e%2e/x", "/bot/%2E./x", "/bot/..%2fx", "/bot\\..\\x", "/bot/.%2E"] {
            assert!(!path_has_prefix(path, "/bot"), "{path}");
            assert!(!path_has_prefix(path, "/bot*"), "{path}");
        }
        assert!(path_has_prefix("/bot123/getMe", "/bot*"));
        assert!(!path_has_prefix("/bot123/getMe", "/bot"));
        assert!(path_has_prefix("/bot/...x", "/bot"));
    }

    #[test]
    fn path_grants_match_whole_segments_after_normalising() {
        let admits = |prefix: &str, path: &str| path_has_prefix(path, prefix);
        for path in [
            "/api",
            "/api/",
            "/api/x",
            "/api?q=1",
            "/api#f",
            "/%61pi/x",
            "/%61%70%69",
            "//api//x",
            "/api/./x",
            "/./api",
            "/api/x/../y",
            "/api/x/..",
            "/api/%2e/x",
            "/api/a%2Fb",
            "/api/a%2fb",
            "/api/%7Bx%7D",
            "/api/...",
            "/api/.x",
        ] {
            assert!(admits("/api", path), "/api should admit {path}");
        }
        for path in [
            "/apix",
            "/apix/y",
            "/ap",
            "/",
            "",
            "/API",
            "/api/..",
            "/api/../admin",
            "/admin/../api/x",
            "/api/x/../../admin",
            "/api/..%2Fadmin",
            "/api%2F..%2Fadmin",
            "/api/%2e%2e%2fadmin",
            "/api/%252e%252e/admin",
            "/api/..;/admin",
            "/api/.;x/y",
            "/api/..\\admin",
            "/api/x%5c..%5cy",
            "/%2e%2e/api",
            "/x/%2e%2e/api/",
            "/api/a%2Fb/../x",
            "/api/%2F/%2e%2e",
        ] {
            assert!(!admits("/api", path), "/api should not admit {path}");
        }
        // `..` never climbs above the root (`/../x` resolves to `/x`), but the
        // path must also be under the grant as written.
        assert_eq!(normalize_path("/../../x").expect("normal").resolved, ["x"]);
        assert!(admits("/", "/../../x"));
        assert!(!admits("/api", "/../api/x"));
        // A directory grant: below it, not the bare name.
        for (path, ok) in [("/api/", true), ("/api/x", true), ("/api//x/", true), ("/api", false), ("/apix/", false)] {
            assert_eq!(admits("/api/", path), ok, "/api/ and {path}");
            assert_eq!(admits("/api/*", path), ok, "/api/* and {path}");
        }
        // The opt-in text prefix, within one segment.
        for (path, ok) in [
            ("/bot", true),
            ("/bot123:abc/getMe", true),
            ("/%62ot1/x", true),
            ("/bo", false),
            ("/file/bot1", false),
            ("/bot1/../../admin", false),
            ("/xbot", false),
        ] {
            assert_eq!(admits("/bot*", path), ok, "/bot* and {path}");
        }
        assert!(admits("/v1/bot*", "/v1/bot9/x") && !admits("/v1/bot*", "/v2/bot9"));
        // Everything.
        for path in ["/", "", "/x/y", "/x/../y"] {
            assert!(admits("/", path) && admits("/*", path), "{path}");
        }
        // Normal forms.
        let n = normalize_path("//a/./b/../%63//d/").expect("normal");
        assert_eq!(n.resolved, ["a", "c", "d", ""]);
        assert_eq!(n.literal, ["a", "b", "..", "c", "d", ""]);
        assert_eq!(normalize_path("/a/b/..").expect("normal").resolved_text(), "/a/");
        assert_eq!(normalize_path("/x%2fy").expect("normal").resolved, ["x%2Fy"]);
        let e = normalize_path("/api/..%2Fadmin").expect_err("hidden dot segment");
        assert_eq!(e.segment, "..%2Fadmin");
        assert!(e.to_string().contains("hides a `.` or `..` segment"), "{e}");
    }

    #[test]
    fn grant_paths_are_checked_when_parsed() {
        for (s, want) in [
            ("https://h.example/a*b", "`*` may only end the path"),
            ("https://h.example/*/x", "`*` may only end the path"),
            ("https://h.example/a/../b", "without `.` or `..`"),
            ("https://h.example/a/./b", "without `.` or `..`"),
            ("https://h.example/a/..%2Fb", "hides a `.` or `..`"),
        ] {
            let e = NetworkGrant::parse(s).expect_err(s);
            assert!(e.contains(want) && e.contains("paths match whole segments"), "{s}: {e}");
        }
        for s in ["https://h.example/bot*", "https://h.example/api/", "https://h.example//api", "https://h.example/%61pi"] {
            NetworkGrant::parse(s).expect(s);
        }
        assert!(grant("https://h.example//%61pi").allows("https", "h.example", 443, "/api/x"));
    }

    #[test]
    fn a_grant_that_only_matches_as_text_is_recognised() {
        let g = grant("https://api.telegram.org/bot");
        assert!(g.matches_only_as_text("/bot123:abc/getMe"));
        assert!(!g.matches_only_as_text("/bot/getMe"), "it is granted");
        assert!(!g.matches_only_as_text("/file/bot1"));
        assert!(!g.matches_only_as_text("/bot1/../../admin"), "escapes even as text");
        assert!(!grant("https://api.telegram.org/bot*").matches_only_as_text("/bot1"));
        assert!(!grant("https://api.telegram.org/bot/").matches_only_as_text("/bot1"));
    }

    #[test]
    fn overlapping_path_grants() {
        let o = |a: &str, b: &str| grant(&format!("https://h.example{a}")).overlaps(&grant(&format!("https://h.example{b}")));
        for (a, b, want) in [
            ("/api", "/api/x", true),
            ("/api", "/apix", false),
            ("/api/", "/api", true),
            ("/bot*", "/bot1/x", true),
            ("/bot*", "/b*", true),
            ("/bot*", "/c*", false),
            ("/bot*", "/file", false),
            ("/", "/anything", true),
            ("/a/b", "/a/c", false),
            ("/a/b*", "/a/", true),
        ] {
            assert_eq!(o(a, b), want, "{a} {b}");
            assert_eq!(o(b, a), want, "{b} {a}");
        }
    }

    #[test]
    fn policy_resolves_paths_config_and_limits() {
        let text = r#"
[plugins.telegram]
path = "plugins/telegram.wasm"
network = ["http://127.0.0.1:19000/bot*"]
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

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn grant_parsing_never_panics(s in ".{0,60}", t in "(https?|wss?|tcp|tls|ftp)://[a-zA-Z0-9.*:@%/\\[\\]?#-]{0,40}") {
            let _ = NetworkGrant::parse(&s);
            if let Ok(g) = NetworkGrant::parse(&t) {
                // A valid grant matches itself-ish without panicking either.
                let _ = g.allows(g.scheme(), g.host(), g.port(), g.path_prefix());
            }
        }

        #[test]
        fn policy_analysis_never_panics(text in ".{0,200}", entries in proptest::collection::vec("[a-z:/.\"{}=*\\[\\], 0-9-]{0,30}", 0..4)) {
            let _ = Policy::analyze(&text, Path::new("k.toml"), Path::new("/nonexistent-ws"));
            let toml = format!("[plugins.p]\nnetwork = [{}]\nfiles = [{{ host = \"{}\", guest = \"/g\" }}]\n",
                entries.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join(", "),
                entries.first().cloned().unwrap_or_default().replace('"', ""));
            let _ = Policy::analyze(&toml, Path::new("k.toml"), Path::new("/nonexistent-ws"));
        }

        #[test]
        fn host_patterns_never_panic_and_match_like_grants(s in ".{0,40}", label in "[a-z0-9]{1,10}", domain in "[a-z]{1,8}\\.[a-z]{2,4}", port in 1u16..) {
            if let Ok(h) = HostPattern::parse(&s) {
                let _ = h.matches(&s, port);
            }
            let exact = HostPattern::parse(&domain).expect("valid");
            let wild = HostPattern::parse(&format!("*.{domain}")).expect("valid");
            let sub = format!("{label}.{domain}");
            prop_assert!(exact.matches(&domain.to_uppercase(), port) && !exact.matches(&sub, port));
            prop_assert!(wild.matches(&sub, port) && !wild.matches(&domain, port));
            let glued = format!("{label}{domain}");
            prop_assert!(!wild.matches(&glued, port));
            let with_port = HostPattern::parse(&format!("{domain}:{port}")).expect("valid");
            let other = if port == u16::MAX { 1 } else { port + 1 };
            prop_assert!(with_port.matches(&domain, port) && !with_port.matches(&domain, other));
        }

        #[test]
        fn sizes_durations_and_decoding_never_panic(s in ".{0,30}", bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_size(&s);
            let _ = parse_duration(&s);
            let _ = percent_decode(&bytes);
        }

        #[test]
        fn wildcards_match_subdomains_and_nothing_else(
            label in "[a-z0-9]{1,10}",
            label2 in "[a-z0-9]{1,10}",
            domain in "[a-z]{1,8}\\.[a-z]{2,4}",
            path in "(/[a-zA-Z0-9_-]{0,8}){0,4}",
        ) {
            let g = NetworkGrant::parse(&format!("https://*.{domain}")).expect("valid");
            let path = if path.is_empty() { "/".to_string() } else { path };
            let sub = format!("{label}.{domain}");
            let deep = format!("{label}.{label2}.{}", domain.to_uppercase());
            let glued = format!("{label}{domain}");
            let after = format!("{domain}.{label}");
            prop_assert!(g.allows("https", &sub, 443, &path));
            prop_assert!(g.allows("https", &deep, 443, &path));
            prop_assert!(!g.allows("https", &domain, 443, &path));
            prop_assert!(!g.allows("https", &glued, 443, &path));
            prop_assert!(!g.allows("https", &after, 443, &path));
            prop_assert!(!g.allows("http", &sub, 443, &path));
            prop_assert!(!g.allows("https", &sub, 444, &path));
        }

        #[test]
        fn admitted_paths_are_under_the_grant_however_written(
            grant_segs in proptest::collection::vec(prop_oneof![Just("api"), Just("v1"), Just("x")], 1..3),
            dir in any::<bool>(),
            segs in proptest::collection::vec(prop_oneof![
                Just("api"), Just("v1"), Just("x"), Just("apix"), Just("ap"), Just(""), Just("."), Just(".."),
                Just("%2e"), Just("%2e%2e"), Just("%2E."), Just(".%2e"), Just("%61pi"), Just("%2F"), Just("a%2Fb"),
                Just("..%2F"), Just("%252e%252e"), Just("..;"), Just("\\.."), Just("~u"), Just("%7B"), Just("v1%2f..")
            ], 0..7),
        ) {
            let g = NetworkGrant::parse(&format!("https://h.example/{}{}", grant_segs.join("/"), if dir { "/" } else { "" })).expect("valid");
            let path = format!("/{}", segs.join("/"));
            if g.allows("https", "h.example", 443, &path) {
                // Independently of the matcher: decoded completely, split at
                // every kind of separator, with and without resolving dot
                // segments, the path starts with the grant's segments.
                for resolve in [false, true] {
                    let mut text = path.clone().into_bytes();
                    loop {
                        let next = percent_decode(&text);
                        if next == text { break; }
                        text = next;
                    }
                    let mut out: Vec<&[u8]> = Vec::new();
                    for s in text.split(|&b| b == b'/' || b == b'\\') {
                        match s {
                            b"" | b"." => {}
                            b".." if resolve => { out.pop(); }
                            s => out.push(s),
                        }
                    }
                    let under = out.len() >= grant_segs.len()
                        && grant_segs.iter().zip(&out).all(|(a, b)| a.as_bytes() == *b);
                    prop_assert!(under, "{} admitted {} (resolve {}: {:?})", g, path, resolve, out);
                }
            }
        }

        #[test]
        fn paths_below_the_grant_are_admitted_in_any_spelling(
            grant_segs in proptest::collection::vec("[a-z]{1,5}", 1..3),
            tail in proptest::collection::vec("[a-zA-Z0-9_~-]{1,6}", 0..4),
            slashes in proptest::collection::vec(1usize..3, 8),
            encode in proptest::collection::vec(any::<bool>(), 48),
            trailing in any::<bool>(),
        ) {
            let g = NetworkGrant::parse(&format!("https://h.example/{}", grant_segs.join("/"))).expect("valid");
            // Duplicate slashes and percent-encoded unreserved characters.
            let mut path = String::new();
            let mut k = 0;
            for (i, seg) in grant_segs.iter().chain(&tail).enumerate() {
                path.push_str(&"/".repeat(slashes[i % slashes.len()]));
                for c in seg.chars() {
                    if encode[k % encode.len()] { path.push_str(&format!("%{:02x}", c as u32)); } else { path.push(c); }
                    k += 1;
                }
            }
            if trailing { path.push('/'); }
            prop_assert!(g.allows("https", "h.example", 443, &path), "{} refused {}", g, path);
            let star = NetworkGrant::parse(&format!("https://h.example/{}*", grant_segs.join("/"))).expect("valid");
            prop_assert!(star.allows("https", "h.example", 443, &path), "{} refused {}", star, path);
            // A `..` below the grant that stays below it is fine; one that
            // climbs out is not.
            let inside = format!("{path}/y/../z");
            prop_assert!(g.allows("https", "h.example", 443, &inside), "{} refused {}", g, inside);
            let out = format!("/{}/{}../elsewhere", grant_segs.join("/"), "../".repeat(grant_segs.len()));
            prop_assert!(!g.allows("https", "h.example", 443, &out), "{} admitted {}", g, out);
        }

        #[test]
        fn a_longer_segment_is_never_admitted(
            grant_segs in proptest::collection::vec("[a-z]{1,5}", 1..3),
            more in "[a-zA-Z0-9_.~:-]{1,5}",
            rest in "(/[a-z]{0,4}){0,3}",
        ) {
            let prefix = format!("/{}", grant_segs.join("/"));
            let g = NetworkGrant::parse(&format!("https://h.example{prefix}")).expect("valid");
            let path = format!("{prefix}{more}{rest}");
            prop_assert!(!g.allows("https", "h.example", 443, &path), "{} admitted {}", g, path);
            // ... unless the grant opts in with `*` (and `more` does not start a dot segment).
            let star = NetworkGrant::parse(&format!("https://h.example{prefix}*")).expect("valid");
            let seg = format!("{}{more}", grant_segs.last().expect("one"));
            if seg != "." && seg != ".." {
                prop_assert!(star.allows("https", "h.example", 443, &path), "{} refused {}", star, path);
            }
        }

        #[test]
        fn grants_that_admit_the_same_path_overlap(
            a in prop_oneof![Just("/"), Just("/api"), Just("/api/"), Just("/ap*"), Just("/api/v1"), Just("/b*"), Just("/api/v*")],
            b in prop_oneof![Just("/"), Just("/api"), Just("/apix"), Just("/api*"), Just("/api/v1/"), Just("/bot"), Just("/api/x*")],
            path in "(/(api|apix|v1|v2|bot|x|\\.\\.)){0,4}/?",
        ) {
            let ga = NetworkGrant::parse(&format!("https://h.example{a}")).expect("valid");
            let gb = NetworkGrant::parse(&format!("https://h.example{b}")).expect("valid");
            if ga.allows("https", "h.example", 443, &path) && gb.allows("https", "h.example", 443, &path) {
                prop_assert!(ga.overlaps(&gb) && gb.overlaps(&ga), "{} and {} both admit {}", a, b, path);
            }
            prop_assert_eq!(ga.overlaps(&gb), gb.overlaps(&ga));
        }

        #[test]
        fn embedded_ipv4_is_judged_like_ipv4(a in any::<[u8; 4]>()) {
            let v4 = std::net::Ipv4Addr::from(a);
            let mapped = std::net::IpAddr::V6(v4.to_ipv6_mapped());
            prop_assert_eq!(address_class(mapped), address_class(std::net::IpAddr::V4(v4)));
            let _ = address_class(std::net::IpAddr::V6(std::net::Ipv6Addr::from(u128::from_be_bytes([a[0]; 16]))));
        }

        #[test]
        fn percent_decoding_inverts_encoding(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let encoded: String = bytes.iter().map(|b| format!("%{b:02x}")).collect();
            prop_assert_eq!(percent_decode(encoded.as_bytes()), bytes);
        }
    }
}
