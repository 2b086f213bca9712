//! The `[agent]` and `[tools]` tables resolved into the settings the
//! daemon's agent runs with: durations parsed, defaults filled in, every
//! error naming the key it is about. The agent itself (backends, turns)
//! lives in kata-daemon; only its settings model is here, so the policy
//! can check them when it is loaded.

use std::path::Path;
use std::time::Duration;

use super::{AgentBackend, CommandFormat, CommandInput, PolicyFile, SecretSource, ToolMode, parse_duration, valid_plugin_name};

/// Defaults of the `[agent]` table.
const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);
const DEFAULT_BUDGET: usize = 24_000;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The acknowledgement reaction: "seen, working on it". It is one of the
/// few emoji Telegram lets bots react with, and reads the same elsewhere.
pub const DEFAULT_ACK_REACTION: &str = "👀";

/// `[agent]` and `[tools]` resolved: durations parsed, defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which backend answers.
    pub backend: AgentBackend,
    /// The echo template.
    pub template: String,
    /// The OpenAI-compatible API base URL (no trailing slash).
    pub base_url: String,
    /// The model name.
    pub model: String,
    /// Where the API key comes from.
    pub api_key: Option<SecretSource>,
    /// The system prompt.
    pub system_prompt: Option<String>,
    /// Timeout of one HTTP request to the backend.
    pub request_timeout: Duration,
    /// Retries after 429, 5xx or a network error.
    pub max_retries: u32,
    /// Most tool-call rounds per turn.
    pub max_tool_rounds: u32,
    /// After this long without activity, a conversation starts a new session.
    pub idle_timeout: Duration,
    /// History budget in characters.
    pub history_budget: usize,
    /// Concurrent daemon-triggered turns.
    pub max_concurrent_sessions: usize,
    /// The workspace tool permission mode.
    pub tools_mode: ToolMode,
    /// `[tools] allow` patterns.
    pub tools_allow: Vec<String>,
    /// How long an `ask` waits for a decision.
    pub ask_timeout: Duration,
    /// `openai`: ask for server-sent events.
    pub stream: bool,
    /// `command`: the program and its arguments (empty for other backends).
    pub command: Vec<String>,
    /// `command`: how the turn goes in.
    pub command_input: CommandInput,
    /// `command`: what goes in.
    pub command_format: CommandFormat,
    /// `ask` mode: where approval requests are posted in a chat, if anywhere.
    pub approvals_to: Option<Address>,
    /// `ask` mode: whose answer counts there (`[tools] approvers`; empty: the
    /// channel's paired and allow_from-named senders).
    pub approvers: Vec<Address>,
    /// Every secret source kata.toml names (plugins' `secrets`, `[agent]
    /// api_key`): the `command` backend keeps their values out of its
    /// program's environment.
    pub known_secrets: Vec<SecretSource>,
    /// The emoji put on a message when it is queued (None: off).
    pub ack_reaction: Option<String>,
    /// Show a typing indicator while a turn runs.
    pub typing: bool,
    /// Stream the reply into an edited draft message (`openai` with `stream`).
    pub drafts: bool,
}

/// `CHANNEL:ID` — a conversation or a sender on a channel plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The channel plugin (as named in kata.toml).
    pub plugin: String,
    /// The conversation or sender id, as the plugin names it.
    pub id: String,
}

impl Address {
    /// Parse `CHANNEL:ID`; `what` names the id in the error ("conversation", "sender").
    pub fn parse(s: &str, what: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((plugin, id)) if valid_plugin_name(plugin) && !id.is_empty() => Ok(Self { plugin: plugin.into(), id: id.into() }),
            _ => Err(format!(
                "{s:?} must be \"CHANNEL:{}\" with a channel plugin's name from this file, e.g. \"telegram:123456789\"",
                what.to_uppercase()
            )),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.plugin, self.id)
    }
}

/// Where in kata.toml a setting error is: (table, key).
pub type SettingKey = (&'static str, &'static str);

impl Settings {
    /// Resolve and check the `[agent]` and `[tools]` tables; an error names the
    /// key it is about.
    pub fn resolve(file: &PolicyFile, _workspace: &Path) -> Result<Self, (SettingKey, String)> {
        let a = &file.agent;
        let dur = |key: &'static str, v: &Option<String>, default: Duration| -> Result<Duration, (SettingKey, String)> {
            match v {
                None => Ok(default),
                Some(s) => match parse_duration(s) {
                    Ok(d) if d.is_zero() => Err((("agent", key), format!("{key} must be more than zero"))),
                    Ok(d) => Ok(d),
                    Err(m) => Err((("agent", key), m)),
                },
            }
        };
        let api_key = match &a.api_key {
            None => None,
            Some(s) => Some(SecretSource::parse(s).map_err(|m| (("agent", "api_key"), m))?),
        };
        let base_url = a.base_url.clone().unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err((
                ("agent", "base_url"),
                format!("base_url {base_url:?} must be an http:// or https:// URL, e.g. \"https://api.openai.com/v1\""),
            ));
        }
        let model = a.model.clone().unwrap_or_default();
        if a.backend == AgentBackend::Openai && model.is_empty() {
            return Err((("agent", "model"), "backend \"openai\" needs a model, e.g. model = \"gpt-4o-mini\"".into()));
        }
        let sessions = a.max_concurrent_sessions.unwrap_or(file.daemon.max_concurrent_sessions);
        if sessions == 0 {
            return Err((("agent", "max_concurrent_sessions"), "max_concurrent_sessions must be at least 1".into()));
        }
        let budget = a.history_budget.unwrap_or(DEFAULT_BUDGET);
        if budget < 100 {
            return Err((("agent", "history_budget"), "history_budget must be at least 100 characters".into()));
        }
        for pattern in &file.tools.allow {
            check_pattern(pattern).map_err(|m| (("tools", "allow"), m))?;
        }
        let ask_timeout = match &file.tools.ask_timeout {
            None => DEFAULT_ASK_TIMEOUT,
            Some(s) => parse_duration(s).map_err(|m| (("tools", "ask_timeout"), m))?,
        };
        let command = a.command.clone().unwrap_or_default();
        if a.backend == AgentBackend::Command && command.first().is_none_or(|p| p.trim().is_empty()) {
            return Err((
                ("agent", "command"),
                "backend \"command\" needs the program to run, e.g. command = [\"llm\", \"-m\", \"gpt-4o-mini\"]".into(),
            ));
        }
        let known = |key: &'static str, a: Address| -> Result<Address, (SettingKey, String)> {
            if file.plugins.contains_key(&a.plugin) {
                Ok(a)
            } else {
                Err((
                    ("tools", key),
                    format!("{a} names the channel {:?}, which has no [plugins.{}] table in this file", a.plugin, a.plugin),
                ))
            }
        };
        let approvals_to = match &file.tools.approvals_to {
            None => None,
            Some(s) => Some(known("approvals_to", Address::parse(s, "conversation").map_err(|m| (("tools", "approvals_to"), m))?)?),
        };
        let mut approvers = Vec::new();
        for s in &file.tools.approvers {
            approvers.push(known("approvers", Address::parse(s, "sender").map_err(|m| (("tools", "approvers"), m))?)?);
        }
        let ack_reaction = match a.ack_reaction.as_deref() {
            None => Some(DEFAULT_ACK_REACTION.to_string()),
            Some("") => None,
            Some(e) if e.len() <= 32 && !e.chars().any(char::is_whitespace) => Some(e.to_string()),
            Some(e) => {
                return Err((
                    ("agent", "ack_reaction"),
                    format!("ack_reaction {e:?} must be one emoji, e.g. \"👀\", or \"\" to turn it off"),
                ));
            }
        };
        let mut known_secrets: Vec<SecretSource> =
            file.plugins.values().flat_map(|p| p.secrets.values()).filter_map(|v| SecretSource::parse(v.from()).ok()).collect();
        known_secrets.extend(api_key.clone());
        Ok(Self {
            backend: a.backend,
            template: a.template.clone(),
            base_url: base_url.trim_end_matches('/').to_string(),
            model,
            api_key,
            system_prompt: a.system_prompt.clone(),
            request_timeout: dur("request_timeout", &a.request_timeout, DEFAULT_TIMEOUT)?,
            max_retries: a.max_retries.unwrap_or(4),
            max_tool_rounds: a.max_tool_rounds.unwrap_or(8).max(1),
            idle_timeout: dur("idle_timeout", &a.idle_timeout, DEFAULT_IDLE)?,
            history_budget: budget,
            max_concurrent_sessions: sessions as usize,
            tools_mode: file.tools.mode,
            tools_allow: file.tools.allow.clone(),
            ask_timeout,
            stream: a.stream.unwrap_or(true),
            command,
            command_input: a.command_input.unwrap_or_default(),
            command_format: a.command_format.unwrap_or_default(),
            approvals_to,
            approvers,
            known_secrets,
            ack_reaction,
            typing: a.typing.unwrap_or(true),
            drafts: a.drafts.unwrap_or(true),
        })
    }
}

/// Check one `[tools] allow` pattern: `plugin.tool` or `plugin.*`.
pub fn check_pattern(p: &str) -> Result<(), String> {
    let ok = p.split_once('.').is_some_and(|(plugin, tool)| {
        super::valid_plugin_name(plugin)
            && (tool == "*" || (!tool.is_empty() && tool.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')))
    });
    if ok { Ok(()) } else { Err(format!("tool pattern {p:?} must be \"plugin.tool\" or \"plugin.*\" (e.g. \"notes.search\")")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines_are_found_only_when_the_file_sets_the_key() {
        let text = "[agent]\nbackend = \"echo\"\n\n[tools]\nmode = \"daemon\"\nallow = [\n  \"a.b\",\n  \"c.*\",\n]\n[plugins.chat]\ntools_mode = \"ask\"\n";
        let line = |keys: &[&str], i| super::super::Policy::key_line(text, keys, i);
        assert_eq!(line(&["tools", "mode"], None), Some(5));
        assert_eq!(line(&["tools", "allow"], Some(1)), Some(8));
        assert_eq!(line(&["plugins", "chat", "tools_mode"], None), Some(11));
        assert_eq!(line(&["tools", "ask_timeout"], None), None);
        assert_eq!(line(&["plugins", "other", "tools_mode"], None), None);
        assert_eq!(line(&["daemon"], None), None);
    }

    #[test]
    fn settings_are_checked_with_the_key_named() {
        let parse = |t: &str| {
            let f: PolicyFile = toml::from_str(t).expect("toml");
            Settings::resolve(&f, Path::new("/ws"))
        };
        let s = parse("").expect("defaults");
        assert_eq!((s.idle_timeout, s.history_budget, s.max_concurrent_sessions), (DEFAULT_IDLE, DEFAULT_BUDGET, 3));
        assert_eq!(s.tools_mode, ToolMode::Safe);
        let s = parse("[agent]\nidle_timeout = \"2s\"\nmax_concurrent_sessions = 5\n[tools]\nmode = \"daemon\"\nallow = [\"notes.*\"]")
            .expect("valid");
        assert_eq!((s.idle_timeout, s.max_concurrent_sessions, s.tools_mode), (Duration::from_secs(2), 5, ToolMode::Daemon));
        assert_eq!(parse("[agent]\nbackend = \"openai\"").expect_err("model").0, ("agent", "model"));
        assert_eq!(parse("[agent]\nidle_timeout = \"soon\"").expect_err("bad").0, ("agent", "idle_timeout"));
        assert_eq!(parse("[tools]\nallow = [\"notes\"]").expect_err("pattern").0, ("tools", "allow"));
        assert_eq!(parse("[agent]\napi_key = \"sk-123\"").expect_err("key").0, ("agent", "api_key"));
        assert_eq!(parse("[agent]\nbackend = \"command\"").expect_err("command").0, ("agent", "command"));
        assert_eq!(parse("[agent]\nbackend = \"command\"\ncommand = [\"\"]").expect_err("command").0, ("agent", "command"));
        let s = parse("[agent]\nbackend = \"command\"\ncommand = [\"llm\"]\ncommand_input = \"argument\"\ncommand_format = \"jsonl\"")
            .expect("command");
        assert_eq!((s.command_input, s.command_format, s.stream), (CommandInput::Argument, CommandFormat::Jsonl, true));
        assert_eq!(parse("[tools]\napprovals_to = \"tg\"").expect_err("address").0, ("tools", "approvals_to"));
        assert_eq!(parse("[tools]\napprovals_to = \"tg:1\"").expect_err("unknown channel").0, ("tools", "approvals_to"));
        let s = parse("[tools]\napprovals_to = \"tg:1\"\napprovers = [\"tg:ann\"]\n[plugins.tg]\n").expect("approvals");
        assert_eq!(s.approvals_to, Some(Address { plugin: "tg".into(), id: "1".into() }));
        assert_eq!(s.approvers[0].to_string(), "tg:ann");
        let s = parse("").expect("defaults");
        assert_eq!((s.ack_reaction.as_deref(), s.typing, s.drafts), (Some(DEFAULT_ACK_REACTION), true, true));
        let s = parse("[agent]\nack_reaction = \"\"\ntyping = false\ndrafts = false").expect("off");
        assert_eq!((s.ack_reaction, s.typing, s.drafts), (None, false, false));
        assert_eq!(parse("[agent]\nack_reaction = \"thumbs up\"").expect_err("emoji").0, ("agent", "ack_reaction"));
    }
}
