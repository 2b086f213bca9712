//! The `command` agent backend: any CLI agent (`llm`, `ollama run`, a coding
//! agent's CLI, a script), run once per turn.
//!
//! What goes in (`[agent] command_format`), on standard input or as the last
//! argument (`[agent] command_input`):
//!
//! - `text` (default): when the session has earlier turns, first the
//!   conversation so far — a `Summary of the earlier conversation: …` line
//!   if history was compacted, then one `user: …` or `assistant: …` block
//!   per message (a message's own line breaks are kept) — and a blank line;
//!   then the new message, as the person wrote it. A first message is the
//!   message alone, so `ollama run MODEL` gets a plain prompt.
//! - `jsonl`: one JSON object per line: `{"role": "system", "content":
//!   "Summary of the earlier conversation: …"}` when there is a summary, a
//!   `{"role": "user"|"assistant", "content": …}` line per earlier message,
//!   and last the new message: `{"role": "user", "content": …, "sender": …,
//!   "channel": …, "session": …}`.
//!
//! Tool calls and tool results of earlier turns (from another backend) are
//! left out. In `argument` mode an input over [`MAX_ARG`] drops the oldest
//! messages until it fits.
//!
//! What comes out: standard output, trimmed, is the reply (at most
//! [`MAX_REPLY`] bytes; empty output means no reply). Standard error goes to
//! the log, at most [`MAX_STDERR`] bytes per run.
//!
//! The program runs in the workspace directory, in its own process group,
//! with the daemon's environment minus every secret kata knows: every
//! `KATA_*` variable, every variable kata.toml reads a secret from
//! (`env:NAME`, the `[agent] api_key`), and every variable whose value
//! contains the value of a secret kata.toml names or kata's secret store
//! holds. It gets `[agent] request_timeout`; then the whole process group is
//! killed. A failure — it cannot start, exits non-zero, is killed, or runs
//! out of time — is answered with a short error the person sees (the
//! details are in the log), never with silence.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::policy::agent::Settings;
use crate::policy::{CommandFormat, CommandInput, SecretSource};
use crate::session::{Entry, Role};
use crate::turn::{TurnInput, TurnOutput};

/// Most bytes of standard output taken as the reply (the rest is dropped).
pub const MAX_REPLY: usize = 64 << 10;
/// Most bytes of standard error logged per run.
pub const MAX_STDERR: usize = 8 << 10;
/// Longest input passed as an argument (Linux refuses one argument over 128 KiB).
pub const MAX_ARG: usize = 100 << 10;
/// Secret values shorter than this are not searched for in the environment:
/// they would match unrelated variables.
const MIN_SECRET: usize = 4;

/// A CLI agent run once per turn.
pub struct CommandAgent {
    program: PathBuf,
    args: Vec<String>,
    input: CommandInput,
    format: CommandFormat,
    timeout: Duration,
    workdir: PathBuf,
    scrub: Scrub,
}

impl CommandAgent {
    /// The backend for these settings. Fails when the program cannot be
    /// found, so a typo stops the start with a clear message.
    pub fn new(settings: &Settings, workspace: &Path) -> Result<Self> {
        let Some((program, args)) = settings.command.split_first() else {
            anyhow::bail!("[agent] backend = \"command\" needs `command`, e.g. command = [\"llm\", \"-m\", \"gpt-4o-mini\"]");
        };
        let program = find_program(program, workspace).ok_or_else(|| {
            anyhow::anyhow!(
                "[agent] command: cannot find the program {program:?} ({}); install it, or write its full path in `command` in kata.toml",
                if program.contains('/') { "no such executable file".to_string() } else { "not on PATH".to_string() }
            )
        })?;
        let scrub = Scrub::new(&settings.known_secrets, workspace);
        Ok(Self {
            program,
            args: args.to_vec(),
            input: settings.command_input,
            format: settings.command_format,
            timeout: settings.request_timeout,
            workdir: workspace.to_path_buf(),
            scrub,
        })
    }

    /// One turn: run the program with the turn as input; its output is the
    /// reply. Never fails: a failure is the reply (see the module docs).
    pub async fn turn(&self, input: TurnInput) -> Result<TurnOutput> {
        let text = match self.input {
            CommandInput::Stdin => render(&input, self.format, 0),
            CommandInput::Argument => {
                // Drop the oldest messages until the input fits one argument.
                let mut skip = 0;
                loop {
                    let t = render(&input, self.format, skip);
                    if t.len() <= MAX_ARG || skip >= input.history.len() {
                        break t;
                    }
                    skip += 1;
                }
            }
        };
        let name = self.program.display().to_string();
        let reply = match self.run(&text).await {
            Ok(Run::Exited { status, stdout, .. }) if status.success() => {
                let reply = stdout.trim();
                if reply.is_empty() {
                    tracing::info!(backend = "command", program = %name, session = %input.call.session_key, "the command printed nothing: no reply");
                    return Ok(TurnOutput::default());
                }
                return Ok(TurnOutput { entries: vec![Entry::assistant(reply)], reply: Some(reply.to_string()), ..Default::default() });
            }
            Ok(Run::Exited { status, stderr_tail, .. }) => {
                let how = describe(status);
                tracing::error!(
                    backend = "command", program = %name, session = %input.call.session_key,
                    "the agent command {how}{}; the person was told it failed",
                    if stderr_tail.is_empty() { String::new() } else { format!(" (last stderr: {stderr_tail})") }
                );
                format!("Sorry, the agent failed to answer (its command {how}). The owner can see why in `kata logs`.")
            }
            Ok(Run::TimedOut) => {
                tracing::error!(
                    backend = "command", program = %name, session = %input.call.session_key,
                    "the agent command ran longer than [agent] request_timeout ({:?}) and was killed with its process group",
                    self.timeout
                );
                format!("Sorry, the agent took longer than {} and was stopped, so there is no answer.", duration_text(self.timeout))
            }
            Err(e) => {
                tracing::error!(backend = "command", program = %name, "cannot run the agent command: {e:#}; check [agent] command in kata.toml");
                "Sorry, the agent could not be started. The owner can see why in `kata logs`.".to_string()
            }
        };
        Ok(TurnOutput { reply: Some(reply), ..Default::default() })
    }

    /// Run the program once with `input`.
    async fn run(&self, input: &str) -> Result<Run> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args);
        if self.input == CommandInput::Argument {
            cmd.arg(input);
        }
        cmd.current_dir(&self.workdir)
            .env_clear()
            .envs(self.scrub.environment())
            .stdin(if self.input == CommandInput::Stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.program.display()))?;
        // Whatever happens to this turn (done, timed out, dropped at
        // shutdown), nothing the program started outlives it.
        let _group = child.id().map(Group);
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout pipe"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr pipe"))?;
        let program = self.program.display().to_string();
        let work = async {
            let write = async {
                if let Some(mut w) = stdin {
                    // A program that does not read its input is fine.
                    let _ = w.write_all(input.as_bytes()).await;
                    let _ = w.shutdown().await;
                }
            };
            let read = async {
                let mut out = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    match stdout.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        // Past the cap, keep reading so the program is not blocked.
                        Ok(n) => out.extend_from_slice(&buf[..n.min(MAX_REPLY.saturating_sub(out.len()))]),
                    }
                }
                out
            };
            let ((), out, tail, status) = tokio::join!(write, read, log_stderr(stderr, &program), child.wait());
            (out, tail, status)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Err(_) => Ok(Run::TimedOut),
            Ok((out, stderr_tail, status)) => {
                let status = status.map_err(|e| anyhow::anyhow!("cannot wait for {}: {e}", self.program.display()))?;
                let mut stdout = String::from_utf8_lossy(&out).into_owned();
                if out.len() >= MAX_REPLY {
                    stdout.push('…');
                    tracing::warn!(backend = "command", "the reply was cut to {MAX_REPLY} bytes");
                }
                Ok(Run::Exited { status, stdout, stderr_tail })
            }
        }
    }
}

/// How one run ended.
enum Run {
    Exited { status: std::process::ExitStatus, stdout: String, stderr_tail: String },
    TimedOut,
}

/// A process group, killed when dropped.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = i32::try_from(self.0).ok().and_then(rustix::process::Pid::from_raw) {
            // ESRCH (already gone) is the usual case.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Log the program's stderr line by line (at most [`MAX_STDERR`] bytes;
/// the rest is counted, not logged). Returns the last line logged.
async fn log_stderr(stderr: tokio::process::ChildStderr, program: &str) -> String {
    let mut lines = tokio::io::BufReader::new(stderr);
    let (mut logged, mut dropped, mut last) = (0usize, 0usize, String::new());
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(n) if logged + n > MAX_STDERR => dropped += n,
            Ok(n) => {
                logged += n;
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                if !text.is_empty() {
                    tracing::warn!(backend = "command", program = %program, "stderr: {text}");
                    last = text.chars().take(300).collect();
                }
            }
        }
    }
    if dropped > 0 {
        tracing::warn!(backend = "command", program = %program, "{dropped} more bytes of stderr were not logged (at most {MAX_STDERR} per run)");
    }
    last
}

/// The turn as the program reads it, leaving out the `skip` oldest
/// history entries (see the module docs for the formats).
pub fn render(input: &TurnInput, format: CommandFormat, skip: usize) -> String {
    let history: Vec<&Entry> =
        input.history.iter().skip(skip).filter(|e| matches!(e.role, Role::User | Role::Assistant) && e.tool_calls.is_none()).collect();
    let summary = input.summary.as_ref().map(|s| format!("Summary of the earlier conversation: {s}"));
    match format {
        CommandFormat::Text => {
            let mut out = String::new();
            if let Some(s) = &summary {
                out.push_str(s);
                out.push('\n');
            }
            for e in &history {
                out.push_str(e.role.as_str());
                out.push_str(": ");
                out.push_str(&e.content);
                out.push('\n');
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&input.text);
            out
        }
        CommandFormat::Jsonl => {
            let mut out = String::new();
            let mut line = |v: serde_json::Value| {
                out.push_str(&v.to_string());
                out.push('\n');
            };
            if let Some(s) = summary {
                line(json!({"role": "system", "content": s}));
            }
            for e in history {
                line(json!({"role": e.role.as_str(), "content": e.content}));
            }
            line(json!({"role": "user", "content": input.text, "sender": input.sender, "channel": input.channel,
                "session": input.call.session_key}));
            out
        }
    }
}

/// The environment a command gets: the daemon's, minus kata's secrets.
struct Scrub {
    /// Variables never passed on (besides `KATA_*`).
    names: BTreeSet<String>,
    /// Secret values no passed-on variable may contain.
    values: Vec<String>,
}

impl Scrub {
    /// What to withhold: the secrets kata.toml names (read now) and every
    /// value in kata's secret store. A secret that cannot be read now is
    /// withheld by name only.
    fn new(known: &[SecretSource], workspace: &Path) -> Self {
        let mut names = BTreeSet::new();
        let mut values = Vec::new();
        for s in known {
            if let SecretSource::Env(var) = s {
                names.insert(var.clone());
            }
            if let Ok(v) = crate::secret_store::resolve(s, workspace) {
                values.push(v);
            }
        }
        match crate::secret_store::SecretStore::for_workspace(workspace).and_then(|store| {
            let listed = store.list()?;
            listed.iter().map(|l| store.get(&l.name)).collect::<Result<Vec<_>, _>>()
        }) {
            Ok(v) => values.extend(v),
            Err(e) => tracing::warn!(
                backend = "command",
                "cannot read kata's secret store ({e}); the agent command's environment is still cleared of KATA_* and the variables kata.toml names"
            ),
        }
        values.retain(|v| v.len() >= MIN_SECRET);
        values.sort();
        values.dedup();
        Self { names, values }
    }

    /// Whether a variable is withheld.
    fn withholds(&self, name: &str, value: &str) -> bool {
        name.starts_with("KATA_") || self.names.contains(name) || self.values.iter().any(|s| value.contains(s.as_str()))
    }

    /// The daemon's environment without what is withheld.
    fn environment(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        std::env::vars_os()
            .filter(|(k, v)| match (k.to_str(), v.to_str()) {
                (Some(k), Some(v)) => !self.withholds(k, v),
                // A name or value that is not UTF-8 cannot be checked: withheld.
                _ => false,
            })
            .collect()
    }
}

/// `program` as a path: one with a `/` is taken as is (relative to the
/// workspace), a bare name is looked up on PATH.
fn find_program(program: &str, workspace: &Path) -> Option<PathBuf> {
    let is_exe = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = workspace.join(program);
        return is_exe(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| is_exe(p))
}

/// "exited with status 1", "was killed by signal 9".
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".into(),
    }
}

/// "90s", "2m", "1m30s".
fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, _) if d.subsec_millis() > 0 && s < 10 => format!("{:.1}s", d.as_secs_f64()),
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::CallContext;

    fn input(history: Vec<Entry>, summary: Option<&str>) -> TurnInput {
        TurnInput {
            text: "what now?\nsecond line".into(),
            sender: "ann".into(),
            channel: "chat".into(),
            summary: summary.map(str::to_string),
            history,
            call: CallContext::workspace("chat/c1", crate::policy::ToolMode::Safe),
            draft: None,
        }
    }

    #[test]
    fn text_is_the_message_alone_or_after_a_transcript() {
        assert_eq!(render(&input(vec![], None), CommandFormat::Text, 0), "what now?\nsecond line");
        let tool = Entry { role: Role::Tool, content: "x".into(), tool_calls: None, tool_call_id: Some("c".into()) };
        let h = vec![Entry::user("hi"), Entry::assistant("hello"), tool];
        assert_eq!(
            render(&input(h.clone(), Some("we met")), CommandFormat::Text, 0),
            "Summary of the earlier conversation: we met\nuser: hi\nassistant: hello\n\nwhat now?\nsecond line"
        );
        assert_eq!(render(&input(h, None), CommandFormat::Text, 1), "assistant: hello\n\nwhat now?\nsecond line");
    }

    #[test]
    fn jsonl_is_one_object_per_line_with_the_message_last() {
        let out = render(&input(vec![Entry::user("hi"), Entry::assistant("hello")], Some("s")), CommandFormat::Jsonl, 0);
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], json!({"role": "system", "content": "Summary of the earlier conversation: s"}));
        assert_eq!(lines[1], json!({"role": "user", "content": "hi"}));
        assert_eq!(
            lines[3],
            json!({"role": "user", "content": "what now?\nsecond line", "sender": "ann", "channel": "chat", "session": "chat/c1"})
        );
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn secrets_are_withheld_by_name_and_by_value() {
        let s = Scrub { names: ["API_KEY".to_string()].into(), values: vec!["hunter22".into()] };
        assert!(s.withholds("KATA_ANYTHING", "x"));
        assert!(s.withholds("API_KEY", "x"));
        assert!(s.withholds("OTHER", "prefix-hunter22-suffix"));
        assert!(!s.withholds("HOME", "/root"));
        assert_eq!(duration_text(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration_text(Duration::from_secs(120)), "2m");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1.5s");
    }
}
