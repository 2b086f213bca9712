//! Hook plugins on the message path, through the real `kata run`: the
//! scripted OpenAI-compatible model answers, the chat channel guest carries
//! the turns, and hooks built from source (plugins/redact and the
//! config-driven tests/guests/guest-hook) rewrite, drop, refuse — or fail,
//! under each failure policy — with an audit row for each.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::llm::{ChatServer, LlmServer, tool_script};
use common::{TestWorkspace, guest, kata, wait_for_or};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// A workspace: the scripted model, the chat channel (anyone may write),
/// `[tools]` as given, then `extra`.
fn workspace(llm: &LlmServer, chat: &ChatServer, tools: &str, extra: &str) -> TestWorkspace {
    let ws = TestWorkspace::new("");
    write_policy(&ws, llm, chat, tools, extra);
    ws
}

fn write_policy(ws: &TestWorkspace, llm: &LlmServer, chat: &ChatServer, tools: &str, extra: &str) {
    let toml = format!(
        r#"
[agent]
backend = "openai"
base_url = "{llm}"
model = "test-model"

[tools]
{tools}

[plugins.chat]
path = "{chat_wasm}"
network = ["{chat}/"]
config = {{ api_base = "{chat}", poll_interval = "50ms" }}
allow_from = ["*"]
{extra}
"#,
        llm = llm.base_url(),
        chat_wasm = guest("guest-chat").display(),
        chat = chat.base()
    );
    std::fs::write(ws.path().join("kata.toml"), toml).unwrap();
}

/// The `n`th reply (1-based) in the chat.
fn reply(chat: &ChatServer, n: usize, ws: &TestWorkspace) -> String {
    wait_for_or(&format!("reply {n}"), WAIT, || ws.log(), || chat.sent().get(n - 1).map(|m| m["text"].as_str().unwrap().to_string()))
}

/// Say `text` in conversation c1 and wait for the next reply.
fn ask(chat: &ChatServer, ws: &TestWorkspace, text: &str) -> String {
    let n = chat.sent().len() + 1;
    chat.say("c1", None, "ann", text);
    reply(chat, n, ws)
}

/// Audit rows of kind `hook`, oldest first.
fn hook_audit(ws: &TestWorkspace) -> Vec<Value> {
    let (ok, out, err) = kata(ws.path(), &["audit", "--json"]);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    rows.as_array().unwrap().iter().filter(|r| r["kind"] == "hook").cloned().collect()
}

/// `kata status --json`'s held list (empty while the daemon is starting).
fn held(ws: &TestWorkspace) -> Vec<Value> {
    let (ok, out, _) = kata(ws.path(), &["status", "--json"]);
    if !ok {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&out).unwrap();
    v["held"].as_array().cloned().unwrap_or_default()
}

/// A `[plugins.NAME]` table for guest-hook with `config` and `hook` settings.
fn guest_hook(name: &str, config: &str, hook: &str) -> String {
    format!("\n[plugins.{name}]\npath = \"{}\"\nconfig = {{ {config} }}\nhook = {{ {hook} }}\n", guest("guest-hook").display())
}

#[test]
fn the_redact_hook_masks_a_card_number_in_a_reply_and_audits_it_without_the_number() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let extra = format!(
        "\n[hooks]\norder = [\"redact\"]\n\n[plugins.redact]\npath = \"{}\"\nhook = {{ budget = \"2s\", on_failure = \"hold\" }}\n",
        guest("redact").display()
    );
    let ws = workspace(&llm, &chat, "", &extra);
    let _daemon = ws.run(&[("KATA_LOG", "info")]);
    let masked = ask(&chat, &ws, "my card is 4111 1111 1111 1111, call me on +49 151 2345 6789");
    assert_eq!(masked, "echo: my card is **** **** **** 1111, call me on +** *** **** **89");
    // Nothing to mask: the reply goes out as the agent wrote it, no audit row.
    assert_eq!(ask(&chat, &ws, "order 4111 1111 1111 1112"), "echo: order 4111 1111 1111 1112");
    let rows = hook_audit(&ws);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = &rows[0];
    assert_eq!(
        (r["plugin"].as_str(), r["verdict"].as_str(), r["method"].as_str()),
        (Some("redact"), Some("rewrite"), Some("message-sending"))
    );
    assert!(r["policy"].as_str().unwrap().starts_with("[plugins.redact] hook = { budget = \"2000ms\", on_failure = \"hold\" }"), "{r}");
    let all = serde_json::to_string(&rows).unwrap();
    assert!(!all.contains("4111") && !all.contains("6789"), "the audit row must not carry the number: {all}");
    let (ok, status, _) = kata(ws.path(), &["status"]);
    assert!(ok && status.contains("Hooks: redact"), "{status}");
}

#[test]
fn a_hook_drops_an_inbound_message_before_the_agent_sees_it() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let extra = format!(
        "\n[hooks]\norder = [\"guard\"]\n{}",
        guest_hook("guard", "mode = \"drop\", word = \"spam\", points = \"received\"", "budget = \"2s\"")
    );
    let ws = workspace(&llm, &chat, "", &extra);
    let _daemon = ws.run(&[("KATA_LOG", "info")]);
    chat.say("c1", None, "ann", "buy spam now");
    assert_eq!(ask(&chat, &ws, "hello"), "echo: hello", "the dropped message got no reply; the next one did");
    let seen: Vec<String> = llm.requests().iter().map(|r| r.to_string()).collect();
    assert!(seen.iter().all(|r| !r.contains("buy spam")), "the model never saw the dropped message: {seen:?}");
    let rows = hook_audit(&ws);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!((rows[0]["verdict"].as_str(), rows[0]["method"].as_str()), (Some("drop"), Some("message-received")));
    assert!(rows[0]["detail"].as_str().unwrap().contains("it contains \"spam\""), "{}", rows[0]);
    let (ok, out, _) = kata(ws.path(), &["status", "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["queues"]["inbox_new"], 0, "the dropped message is done, not waiting: {v}");
}

#[test]
fn a_hook_refuses_a_tool_call_the_mode_would_allow() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let notes = tempfile::tempdir().unwrap();
    std::fs::write(notes.path().join("todo.md"), "- ship kata\n").unwrap();
    let extra = format!(
        "\n[hooks]\norder = [\"guard\"]\n{}\n[plugins.notes]\npath = \"{}\"\nfiles = [{{ host = \"{}\", guest = \"/notes\", mode = \"rw\" }}]\n",
        guest_hook("guard", "mode = \"refuse\", tool = \"append\", points = \"tool\"", "budget = \"2s\""),
        guest("notes").display(),
        notes.path().display()
    );
    let ws = workspace(&llm, &chat, "mode = \"allow-all\"", &extra);
    let daemon = ws.run(&[("KATA_LOG", "info")]);
    assert_eq!(ask(&chat, &ws, r#"call notes__read {"path":"todo.md"}"#), "tool said: - ship kata\n");
    let refused = ask(&chat, &ws, r#"call notes__append {"path":"todo.md","text":"- more"}"#);
    assert!(
        refused.starts_with(
            "tool said: refused: kata did not run notes.append because the hook guard refused it: append is not allowed by guest-hook"
        ),
        "{refused}"
    );
    assert_eq!(std::fs::read_to_string(notes.path().join("todo.md")).unwrap(), "- ship kata\n", "nothing was appended");
    let rows = hook_audit(&ws);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(
        (rows[0]["verdict"].as_str(), rows[0]["method"].as_str(), rows[0]["target"].as_str()),
        (Some("refuse"), Some("before-tool-call"), Some("tool notes.append"))
    );
    // `kata tool call` without a daemon loads the hooks too: the same refusal.
    drop(daemon);
    let (ok, out, err) = kata(ws.path(), &["tool", "call", "notes.append", r#"{"path":"todo.md","text":"- more"}"#]);
    assert!(!ok && format!("{out}{err}").contains("the hook guard refused it"), "{out}\n{err}");
    assert_eq!(std::fs::read_to_string(notes.path().join("todo.md")).unwrap(), "- ship kata\n");
}

#[test]
fn a_failing_hook_under_pass_lets_messages_through_and_audits_each_failure() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let extra = format!(
        "\n[hooks]\norder = [\"broken\"]\n{}",
        guest_hook("broken", "mode = \"trap\", points = \"received,sending\"", "budget = \"2s\", on_failure = \"pass\"")
    );
    let ws = workspace(&llm, &chat, "", &extra);
    let _daemon = ws.run(&[("KATA_LOG", "info")]);
    assert_eq!(ask(&chat, &ws, "hello"), "echo: hello");
    let rows = hook_audit(&ws);
    let points: Vec<(&str, &str)> = rows.iter().map(|r| (r["verdict"].as_str().unwrap(), r["method"].as_str().unwrap())).collect();
    assert_eq!(points, [("fail-open", "message-received"), ("fail-open", "message-sending")], "{rows:#?}");
    assert!(rows[0]["detail"].as_str().unwrap().contains("trapped"), "{}", rows[0]);
    assert!(held(&ws).is_empty());
}

#[test]
fn a_failing_hook_under_hold_keeps_messages_and_replies_until_reload_releases_them() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let hook = "budget = \"300ms\", on_failure = \"hold\"";
    let policy = |config: &str| format!("\n[hooks]\norder = [\"broken\"]\n{}", guest_hook("broken", config, hook));
    let ws = workspace(&llm, &chat, "", &policy("mode = \"spin\", points = \"sending\""));
    let _daemon = ws.run(&[("KATA_LOG", "info")]);

    // A spinning hook at message-sending: the agent answers, the reply is held.
    chat.say("c1", None, "ann", "first");
    let h = wait_for_or("a held reply", WAIT, || ws.log(), || Some(held(&ws)).filter(|h| h.len() == 1));
    assert_eq!((h[0]["point"].as_str(), h[0]["hook"].as_str()), (Some("message-sending"), Some("broken")));
    assert!(h[0]["reason"].as_str().unwrap().contains("budget"), "{}", h[0]);
    assert_eq!(llm.requests().len(), 1);

    // A trapping hook at message-received too: the next message never reaches the agent.
    write_policy(&ws, &llm, &chat, "", &policy("mode = \"trap\", points = \"received,sending\""));
    let (ok, _, err) = kata(ws.path(), &["reload"]);
    assert!(ok, "{err}");
    chat.say("c1", None, "ann", "second");
    let h = wait_for_or("a held message", WAIT, || ws.log(), || Some(held(&ws)).filter(|h| h.len() == 2));
    assert_eq!(h[1]["point"].as_str(), Some("message-received"));
    let (_, status, _) = kata(ws.path(), &["status"]);
    assert!(status.contains("Held by hooks: 2"), "{status}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(chat.sent().is_empty(), "nothing went out: {:?}", chat.sent());
    assert_eq!(llm.requests().len(), 1, "the held message was not given to the agent");

    // The hook fixed, `kata reload` releases both: nothing was lost, nothing answered twice.
    write_policy(&ws, &llm, &chat, "", &policy("mode = \"pass\""));
    let (ok, _, err) = kata(ws.path(), &["reload"]);
    assert!(ok, "{err}");
    let sent = chat.wait_sent(2, WAIT);
    let mut texts: Vec<&str> = sent.iter().map(|m| m["text"].as_str().unwrap()).collect();
    texts.sort();
    assert_eq!(texts, ["echo: first", "echo: second"]);
    assert_eq!(llm.requests().len(), 2, "the held reply was not asked for again");
    wait_for_or("no held messages", WAIT, || ws.log(), || held(&ws).is_empty().then_some(()));
    let rows = hook_audit(&ws);
    let holds = rows.iter().filter(|r| r["verdict"] == "hold").count();
    assert!(holds >= 3, "a hold row for the reply, the message, and the reply again on reload: {rows:#?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(chat.sent().len(), 2, "each reply once");
}
