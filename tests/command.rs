//! The `command` agent backend with real scripts (tests/agents/): one that
//! answers from its input (history as text or JSON lines, on stdin or as an
//! argument), one that hangs with a child of its own (the timeout kills the
//! whole process group), one that writes to stderr and exits 1 (the person
//! gets a short error, the log gets stderr), and one that reports whether any
//! of kata's secrets reached its environment — through the library and
//! through the real `kata run` with the chat channel guest.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::llm::ChatServer;
use common::{TestWorkspace, guest, kata, root};
use kata::agent::{Agent, Settings};
use kata::router::AgentHandle;
use kata::store::Db;
use kata::tools::ToolBox;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn script(name: &str) -> PathBuf {
    root().join("tests/agents").join(name)
}

/// An agent handle over `[agent]` lines, in `dir`.
fn handle(agent: &str, dir: &Path) -> AgentHandle {
    let toml = format!("[agent]\nbackend = \"command\"\n{agent}\n");
    let policy = kata::policy::Policy::parse(&toml, Path::new("kata.toml"), dir).unwrap();
    let settings = Settings::resolve(&policy.file, dir).unwrap();
    let db = Db::open(&dir.join("kata.db")).unwrap();
    let tools = Arc::new(ToolBox::new(vec![], vec![], settings.ask_timeout, db.clone()));
    let agent = Agent::new(&settings, dir, tools.clone()).unwrap();
    AgentHandle::new(db, settings, agent, tools, Default::default(), Default::default())
}

fn toml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cli_agent_gets_the_turn_as_text_or_json_lines_on_stdin_or_as_an_argument() {
    let dir = tempfile::tempdir().unwrap();
    let reply = script("reply.sh");
    // Text on stdin: the first turn is the message alone, the next one has
    // the conversation so far, a blank line, then the message.
    let h = handle(&format!("command = {}", toml_list(&[reply.to_str().unwrap()])), dir.path());
    let first = h.interactive_turn("chat/me", "hello there").await.unwrap().text.unwrap();
    assert_eq!(first, "got 1 lines on stdin; last: hello there");
    let second = h.interactive_turn("chat/me", "and again").await.unwrap().text.unwrap();
    assert_eq!(second, "got 4 lines on stdin; last: and again");
    // The history is stored like any backend's.
    let hist = h.recent_history("chat/me", 10).unwrap();
    let texts: Vec<&str> = hist.iter().map(|h| h.entry.content.as_str()).collect();
    assert_eq!(texts, ["hello there", first.as_str(), "and again", second.as_str()]);

    // JSON lines: the history, then the message with who and where.
    let dir2 = tempfile::tempdir().unwrap();
    let h = handle(&format!("command = {}\ncommand_format = \"jsonl\"", toml_list(&[reply.to_str().unwrap()])), dir2.path());
    h.interactive_turn("chat/j", "one").await.unwrap();
    let out = h.interactive_turn("chat/j", "two\nlines").await.unwrap().text.unwrap();
    assert!(out.starts_with("got 3 lines on stdin; last: {"), "{out}");
    let last: Value = serde_json::from_str(out.split_once("last: ").unwrap().1).unwrap();
    assert_eq!(last, serde_json::json!({"role": "user", "content": "two\nlines", "sender": "you", "channel": "chat", "session": "chat/j"}));

    // As the last argument (stdin empty).
    let dir3 = tempfile::tempdir().unwrap();
    let h = handle(&format!("command = {}\ncommand_input = \"argument\"", toml_list(&[reply.to_str().unwrap(), "--arg"])), dir3.path());
    assert_eq!(
        h.interactive_turn("chat/a", "as an argument").await.unwrap().text.unwrap(),
        "got 1 lines on argument; last: as an argument"
    );
}

/// The state of a process: `Some('Z')` for a zombie, None when it is gone.
fn process_state(pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_agent_is_killed_with_its_children_and_the_person_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let h = handle(
        &format!("command = {}\nrequest_timeout = \"1s\"", toml_list(&[script("hang.sh").to_str().unwrap(), pids.to_str().unwrap()])),
        dir.path(),
    );
    let started = Instant::now();
    let reply = h.interactive_turn("chat/h", "are you there?").await.unwrap().text.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "the timeout did not stop the turn: {:?}", started.elapsed());
    assert_eq!(reply, "Sorry, the agent took longer than 1s and was stopped, so there is no answer.");
    // The script and the child it left behind are both gone (or zombies:
    // this machine's PID 1 may not reap orphans).
    let text = std::fs::read_to_string(&pids).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in text.split_whitespace() {
        while !matches!(process_state(pid), None | Some('Z')) {
            assert!(Instant::now() < deadline, "process {pid} of the hung agent still runs: {:?}", process_state(pid));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // No answer was made up: only the person's message is in the history.
    let hist = h.recent_history("chat/h", 10).unwrap();
    assert_eq!(hist.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_agent_and_a_missing_one_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let h = handle(&format!("command = {}", toml_list(&[script("fail.sh").to_str().unwrap()])), dir.path());
    let reply = h.interactive_turn("chat/f", "hi").await.unwrap().text.unwrap();
    assert_eq!(reply, "Sorry, the agent failed to answer (its command exited with status 1). The owner can see why in `kata logs`.");
    // A program that is not there stops the start with what to fix.
    let toml = "[agent]\nbackend = \"command\"\ncommand = [\"no-such-agent-cli-xyz\"]\n";
    let policy = kata::policy::Policy::parse(toml, Path::new("kata.toml"), dir.path()).unwrap();
    let settings = Settings::resolve(&policy.file, dir.path()).unwrap();
    let tools = Arc::new(ToolBox::new(vec![], vec![], settings.ask_timeout, Db::open(&dir.path().join("x.db")).unwrap()));
    let e = format!("{:#}", Agent::new(&settings, dir.path(), tools).err().unwrap());
    assert!(e.contains("no-such-agent-cli-xyz") && e.contains("not on PATH") && e.contains("[agent] command"), "{e}");
}

/// A workspace running `script` as the agent behind the chat channel.
fn chat_workspace(chat: &ChatServer, agent: &str) -> TestWorkspace {
    let ws = TestWorkspace::new("");
    let toml = format!(
        r#"
[agent]
backend = "command"
{agent}

[plugins.chat]
path = "{wasm}"
network = ["{base}/"]
config = {{ api_base = "{base}", poll_interval = "50ms" }}
allow_from = ["*"]
secrets = {{ token = "env:CHAT_TOKEN", other = "file:secret.txt", stored = "kata:stored" }}
"#,
        wasm = guest("guest-chat").display(),
        base = chat.base()
    );
    std::fs::write(ws.path().join("kata.toml"), toml).unwrap();
    ws
}

fn wait_reply(chat: &ChatServer, n: usize, ws: &TestWorkspace) -> String {
    common::wait_for_or(
        &format!("reply {n}"),
        WAIT,
        || ws.log(),
        || chat.sent().get(n - 1).map(|m| m["text"].as_str().unwrap().to_string()),
    )
}

#[test]
fn through_the_daemon_the_agent_gets_no_secret_and_a_failure_reaches_the_chat() {
    let chat = ChatServer::start();
    let ws = chat_workspace(
        &chat,
        &format!("command = {}\napi_key = \"env:KATA_TEST_OPENAI_KEY\"", toml_list(&[script("env.sh").to_str().unwrap()])),
    );
    // Secrets from each place kata knows: the environment (named in
    // kata.toml, and KATA_*), a file, kata's own store; and copies of their
    // values under names kata.toml never mentions.
    let secret_file = ws.path().join("secret.txt");
    std::fs::write(&secret_file, "file-secret-424242\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let key_file = ws.path().join("secret.key");
    let out = std::process::Command::new(common::kata_bin())
        .args(["secret", "set", "stored", "--workspace"])
        .arg(ws.path())
        .env("KATA_SECRET_KEY_FILE", &key_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"store-secret-98765\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "kata secret set failed");
    let key = key_file.to_str().unwrap().to_string();
    let _daemon = ws.run(&[
        ("KATA_TEST_OPENAI_KEY", "sk-test-key-0123456789"),
        ("CHAT_TOKEN", "chat-token-abcdef"),
        ("KATA_SECRET_KEY_FILE", key.as_str()),
        ("UNRELATED_COPY", "prefix-chat-token-abcdef"),
        ("ANOTHER_COPY", "store-secret-98765"),
        ("FILE_COPY", "file-secret-424242"),
        ("KATA_LOG", "info"),
    ]);
    chat.say("c1", None, "ann", "what do you see?");
    assert_eq!(wait_reply(&chat, 1, &ws), "clean; PATH kept: yes");

    // A failing agent: the person gets a short error, the log gets stderr.
    let chat = ChatServer::start();
    let ws = chat_workspace(&chat, &format!("command = {}", toml_list(&[script("fail.sh").to_str().unwrap()])));
    std::fs::write(ws.path().join("secret.txt"), "x").unwrap();
    let toml = std::fs::read_to_string(ws.path().join("kata.toml")).unwrap().replace("secrets = {", "# secrets = {");
    std::fs::write(ws.path().join("kata.toml"), toml).unwrap();
    let _daemon = ws.run(&[("KATA_LOG", "info")]);
    chat.say("c1", None, "ann", "hello?");
    let reply = wait_reply(&chat, 1, &ws);
    assert!(reply.starts_with("Sorry, the agent failed to answer (its command exited with status 1)"), "{reply}");
    let log = ws.log();
    assert!(log.contains("stderr: fail.sh: the model is not configured (test failure)"), "{log}");
    assert!(log.contains("last stderr: fail.sh: second line of stderr"), "{log}");
    // It is answered once, not retried.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(chat.sent().len(), 1);
    let (ok, out, _) = kata(ws.path(), &["session", "show", "chat/c1", "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["session"]["turns"], 1, "{v}");
}
