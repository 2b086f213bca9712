//! The agent through the real `kata run`: the `openai` backend against a
//! scripted OpenAI-compatible server on loopback, tool calls into a tools
//! plugin built from source (tests/guests/guest-tools) under every permission
//! mode, and the session router (order, concurrency cap, threads, idle
//! timeout, compaction) fed by a chat channel built from source
//! (tests/guests/guest-chat).
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::llm::{ChatServer, HttpResponse, LlmServer, answer, contents, last_message, notes_plugin, tool_script, usage_for};
use common::{ChildGuard, RecordingServer, TestWorkspace, guest, kata, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// A workspace whose kata.toml is exactly `toml` (after `kata init`).
fn workspace(toml: &str) -> TestWorkspace {
    let ws = TestWorkspace::new("");
    std::fs::write(ws.path().join("kata.toml"), toml).unwrap();
    ws
}

/// `[plugins.NAME]` for a chat channel on `chat`, open to everyone.
fn chat_plugin(name: &str, chat: &ChatServer, extra: &str) -> String {
    format!(
        r#"
[plugins.{name}]
path = "{wasm}"
network = ["{base}/"]
config = {{ api_base = "{base}", poll_interval = "50ms" }}
allow_from = ["*"]
{extra}
"#,
        wasm = guest("guest-chat").display(),
        base = chat.base()
    )
}

/// `[agent]` for the openai backend on `llm`.
fn openai_agent(llm: &LlmServer, extra: &str) -> String {
    format!(
        r#"
[agent]
backend = "openai"
base_url = "{}"
model = "test-model"
api_key = "env:KATA_TEST_OPENAI_KEY"
{extra}
"#,
        llm.base_url()
    )
}

fn run(ws: &TestWorkspace) -> ChildGuard {
    ws.run(&[("KATA_TEST_OPENAI_KEY", "sk-test-key-0123456789"), ("KATA_LOG", "info")])
}

/// The replies sent in `conversation`, in order.
fn replies_in(sent: &[Value], conversation: &str) -> Vec<String> {
    sent.iter().filter(|s| s["conversation"] == conversation).map(|s| s["text"].as_str().unwrap_or_default().to_string()).collect()
}

/// Wait for the reply in `conversation` number `n` (1-based).
fn reply(chat: &ChatServer, conversation: &str, n: usize, ws: &TestWorkspace) -> String {
    wait_for_or_log(&format!("reply {n} in {conversation}"), ws, || replies_in(&chat.sent(), conversation).get(n - 1).cloned())
}

fn wait_for_or_log<T>(what: &str, ws: &TestWorkspace, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}; daemon log:\n{}", ws.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Audit rows of kind `tool`, oldest first.
fn tool_audit(ws: &TestWorkspace) -> Vec<Value> {
    let (ok, out, err) = kata(ws.path(), &["audit", "--json"]);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    rows.as_array().unwrap().iter().filter(|r| r["kind"] == "tool").cloned().collect()
}

fn notes_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("notes");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("hello.txt"), "hello from the notes").unwrap();
    (d, p)
}

#[test]
fn openai_backend_calls_a_tool_and_keeps_the_history_as_context() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let (_d, notes) = notes_dir();
    let ws = workspace(&format!(
        "{}\n[tools]\nmode = \"allow-all\"\n{}{}",
        openai_agent(&llm, "system_prompt = \"You are a test.\""),
        chat_plugin("chat", &chat, ""),
        notes_plugin(&notes, "http://127.0.0.1:9")
    ));
    let _daemon = run(&ws);
    chat.say("c1", None, "ann", r#"call notes__write_note {"name":"a.txt","text":"written by the agent"}"#);
    assert_eq!(reply(&chat, "c1", 1, &ws), "tool said: wrote /notes/a.txt");
    assert_eq!(std::fs::read_to_string(notes.join("a.txt")).unwrap(), "written by the agent");
    chat.say("c1", None, "ann", "and now?");
    assert_eq!(reply(&chat, "c1", 2, &ws), "echo: and now?");

    let reqs = llm.requests();
    assert_eq!(reqs.len(), 3, "tool call, answer after the result, second turn");
    // Every request names the model, carries the key and offers the tools.
    assert!(reqs.iter().all(|r| r["model"] == "test-model"));
    let names: Vec<&str> = reqs[0]["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["notes__read_note", "notes__write_note", "notes__sneaky_write", "notes__fetch", "notes__sneaky_post", "notes__sneaky_state"]
    );
    // The second request carries the tool call and its result.
    let m = reqs[1]["messages"].as_array().unwrap();
    let roles: Vec<&str> = m.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool"]);
    assert_eq!(m[2]["tool_calls"][0]["function"]["name"], "notes__write_note");
    assert_eq!((m[3]["tool_call_id"].as_str(), m[3]["content"].as_str()), (Some("call-1"), Some("wrote /notes/a.txt")));
    // The next turn has the whole first turn as context, from the database.
    let m = reqs[2]["messages"].as_array().unwrap();
    let roles: Vec<&str> = m.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "assistant", "user"]);
    assert_eq!(m[4]["content"], "tool said: wrote /notes/a.txt");
    assert_eq!(m[5]["content"], "and now?");
    // The call is audited with mode and policy line.
    let audit = tool_audit(&ws);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!((audit[0]["plugin"].as_str(), audit[0]["target"].as_str()), (Some("notes"), Some("notes.write_note")));
    assert_eq!((audit[0]["verdict"].as_str(), audit[0]["method"].as_str()), (Some("allow"), Some("allow-all")));
    assert_eq!(audit[0]["policy"], "[tools] mode = \"allow-all\"");
}

#[test]
fn a_tools_plugin_installs_with_plugin_add_and_one_built_for_0_1_0_still_runs() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let ws = workspace(&format!("{}\n[tools]\nmode = \"allow-all\"\n{}", openai_agent(&llm, ""), chat_plugin("chat", &chat, "")));
    let old = guest("guest-tools-only");
    let (ok, out, err) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", old.to_str().unwrap(), "--name", "old", "--yes"]);
    assert!(ok, "{out}{err}");
    let (_, list, _) = kata(ws.path(), &["plugin", "list", "--json"]);
    let list: Value = serde_json::from_str(&list).unwrap();
    let row = list["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "old").cloned().unwrap();
    assert_eq!(row["kind"], "tools", "{row}");
    let _daemon = run(&ws);
    chat.say("c1", None, "ann", r#"call old__hello {"name":"kata"}"#);
    assert_eq!(reply(&chat, "c1", 1, &ws), r#"tool said: hello {"name":"kata"}"#);
}

#[test]
fn safe_mode_runs_only_read_only_tools_with_write_grants_stripped() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let web = RecordingServer::start();
    let web_base = format!("http://127.0.0.1:{}", web.port);
    let (_d, notes) = notes_dir();
    let ws = workspace(&format!(
        "{}\n[tools]\nmode = \"safe\"\n{}{}",
        openai_agent(&llm, ""),
        chat_plugin("chat", &chat, ""),
        notes_plugin(&notes, &web_base)
    ));
    let _daemon = run(&ws);
    let steps = [
        (r#"call notes__read_note {"name":"hello.txt"}"#, "tool said: hello from the notes"),
        (r#"call notes__write_note {"name":"w.txt","text":"x"}"#, "tool said: refused: kata did not run notes.write_note"),
        (r#"call notes__sneaky_write {"name":"s.txt","text":"x"}"#, "tool said: error: the tool failed: cannot write /notes/s.txt"),
        (&format!(r#"call notes__fetch {{"url":"{web_base}/page"}}"#), "tool said: 200 received"),
        (&format!(r#"call notes__sneaky_post {{"url":"{web_base}/steal","body":"secrets"}}"#), "HttpRequestDenied"),
        (r#"call notes__sneaky_state {"key":"k","value":"v"}"#, "tool said: error: the tool failed: plugin state is read-only"),
    ];
    for (i, (say, want)) in steps.iter().enumerate() {
        chat.say("c1", None, "ann", say);
        let got = reply(&chat, "c1", i + 1, &ws);
        assert!(got.contains(want), "step {i}: {got:?} does not contain {want:?}");
    }
    // Nothing was written, the GET went out, the POST did not.
    assert!(!notes.join("w.txt").exists() && !notes.join("s.txt").exists());
    let seen = web.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("GET /page"), "{seen:?}");
    let audit = tool_audit(&ws);
    let verdicts: Vec<(&str, &str)> = audit.iter().map(|r| (r["target"].as_str().unwrap(), r["verdict"].as_str().unwrap())).collect();
    assert_eq!(
        verdicts,
        [
            ("notes.read_note", "allow"),
            ("notes.write_note", "deny"),
            ("notes.sneaky_write", "allow"),
            ("notes.fetch", "allow"),
            ("notes.sneaky_post", "allow"),
            ("notes.sneaky_state", "allow")
        ]
    );
    assert!(audit[2]["detail"].as_str().unwrap().contains("write grants stripped"), "{audit:?}");
    assert!(audit[1]["detail"].as_str().unwrap().contains("not one"), "{audit:?}");
}

#[test]
fn daemon_mode_runs_only_the_allowlist_and_a_channel_can_override_the_mode() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let (chat, trusted) = (ChatServer::start(), ChatServer::start());
    let (_d, notes) = notes_dir();
    let ws = workspace(&format!(
        "{}\n[tools]\nmode = \"daemon\"\nallow = [\"notes.read_note\"]\n{}{}{}",
        openai_agent(&llm, ""),
        chat_plugin("chat", &chat, ""),
        chat_plugin("trusted", &trusted, "tools_mode = \"allow-all\""),
        notes_plugin(&notes, "http://127.0.0.1:9")
    ));
    let _daemon = run(&ws);
    chat.say("c1", None, "ann", r#"call notes__read_note {"name":"hello.txt"}"#);
    assert_eq!(reply(&chat, "c1", 1, &ws), "tool said: hello from the notes");
    chat.say("c1", None, "ann", r#"call notes__write_note {"name":"w.txt","text":"x"}"#);
    let refused = reply(&chat, "c1", 2, &ws);
    assert!(refused.starts_with("tool said: refused: kata did not run notes.write_note"), "{refused}");
    assert!(!notes.join("w.txt").exists());
    // The same call through the channel whose tools_mode is allow-all runs.
    trusted.say("t1", None, "bob", r#"call notes__write_note {"name":"w.txt","text":"trusted"}"#);
    assert_eq!(reply(&trusted, "t1", 1, &ws), "tool said: wrote /notes/w.txt");
    assert_eq!(std::fs::read_to_string(notes.join("w.txt")).unwrap(), "trusted");
    let audit = tool_audit(&ws);
    let rows: Vec<(&str, &str, &str)> =
        audit.iter().map(|r| (r["verdict"].as_str().unwrap(), r["method"].as_str().unwrap(), r["policy"].as_str().unwrap())).collect();
    assert_eq!(
        rows,
        [
            ("allow", "daemon", "[tools] allow = [\"notes.read_note\"]"),
            ("deny", "daemon", "[tools] allow = [\"notes.write_note\"]"),
            ("allow", "allow-all", "[tools] mode = \"allow-all\"")
        ]
    );
}

/// Wait for one pending approval and return its id.
fn pending_approval(ws: &TestWorkspace) -> i64 {
    wait_for_or_log("a pending approval", ws, || {
        let (ok, out, _) = kata(ws.path(), &["approvals", "--json"]);
        let list: Value = serde_json::from_str(&out).ok()?;
        ok.then(|| list.as_array()?.first()?["id"].as_i64()).flatten()
    })
}

#[test]
fn ask_mode_waits_for_approve_deny_or_the_timeout() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let (_d, notes) = notes_dir();
    let toml = |timeout: &str| {
        format!(
            "{}\n[tools]\nmode = \"ask\"\nask_timeout = \"{timeout}\"\n{}{}",
            openai_agent(&llm, ""),
            chat_plugin("chat", &chat, ""),
            notes_plugin(&notes, "http://127.0.0.1:9")
        )
    };
    let ws = workspace(&toml("10m"));
    let mut daemon = run(&ws);
    // Approve: the call runs.
    chat.say("c1", None, "ann", r#"call notes__write_note {"name":"a.txt","text":"approved"}"#);
    let id = pending_approval(&ws);
    let (_, listing, _) = kata(ws.path(), &["approvals"]);
    assert!(listing.contains("notes.write_note") && listing.contains("chat/c1"), "{listing}");
    assert!(!notes.join("a.txt").exists(), "nothing runs before the approval");
    let (ok, out, err) = kata(ws.path(), &["approve", &id.to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains("Approved"), "{out}");
    assert_eq!(reply(&chat, "c1", 1, &ws), "tool said: wrote /notes/a.txt");
    assert_eq!(std::fs::read_to_string(notes.join("a.txt")).unwrap(), "approved");
    // A decided approval cannot be decided again.
    let (ok, _, err) = kata(ws.path(), &["deny", &id.to_string()]);
    assert!(!ok && err.contains("already approved"), "{err}");
    // Deny: it does not run, and the model is told.
    chat.say("c1", None, "ann", r#"call notes__write_note {"name":"b.txt","text":"denied"}"#);
    let id = pending_approval(&ws);
    assert!(kata(ws.path(), &["deny", &id.to_string()]).0);
    let denied = reply(&chat, "c1", 2, &ws);
    assert!(denied.contains("refused") && denied.contains("denied it"), "{denied}");
    assert!(!notes.join("b.txt").exists());
    daemon.signal_and_wait("TERM");

    // Timeout: no decision denies it.
    std::fs::write(ws.path().join("kata.toml"), toml("1s")).unwrap();
    let _daemon = run(&ws);
    chat.say("c1", None, "ann", r#"call notes__write_note {"name":"c.txt","text":"late"}"#);
    let late = reply(&chat, "c1", 3, &ws);
    assert!(late.contains("refused") && late.contains("in time"), "{late}");
    assert!(!notes.join("c.txt").exists());
    let (_, all, _) = kata(ws.path(), &["approvals", "--all", "--json"]);
    let statuses: Vec<String> = serde_json::from_str::<Value>(&all)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["expired", "denied", "approved"]);
    let audit = tool_audit(&ws);
    let rows: Vec<(&str, &str)> = audit.iter().map(|r| (r["verdict"].as_str().unwrap(), r["policy"].as_str().unwrap())).collect();
    assert_eq!(rows[0], ("allow", format!("approved with `kata approve {}`", id - 1).as_str()));
    assert_eq!(rows[1], ("deny", format!("denied with `kata deny {id}`").as_str()));
    assert_eq!(rows[2], ("deny", "[tools] ask_timeout"));
}

#[test]
fn the_reply_streams_parallel_tool_calls_are_assembled_and_tokens_are_counted_per_session() {
    // "both" asks for two tool calls in one answer; their results come back
    // as one answer naming both.
    let llm = LlmServer::start(
        Arc::new(|req: &Value| {
            let last = last_message(req);
            if last["role"] == "tool" {
                return answer(&format!("tools said: {}", contents(req, "tool").join(" + ")));
            }
            HttpResponse::json(serde_json::json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Reading both.", "tool_calls": [
                    {"id": "call-a", "type": "function", "function": {"name": "notes__read_note", "arguments": "{\"name\":\"hello.txt\"}"}},
                    {"id": "call-b", "type": "function", "function": {"name": "notes__read_note", "arguments": "{\"name\":\"other.txt\"}"}}]}}]}))
        }),
        Duration::ZERO,
    );
    let chat = ChatServer::start();
    let (_d, notes) = notes_dir();
    std::fs::write(notes.join("other.txt"), "the other note").unwrap();
    let ws = workspace(&format!(
        "{}\n[tools]\nmode = \"allow-all\"\n{}{}",
        openai_agent(&llm, ""),
        chat_plugin("chat", &chat, ""),
        notes_plugin(&notes, "http://127.0.0.1:9")
    ));
    let _daemon = run(&ws);
    chat.say("c1", None, "ann", "both");
    assert_eq!(reply(&chat, "c1", 1, &ws), "tools said: hello from the notes + the other note");
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 2);
    // Every request asked for a stream with usage.
    assert!(reqs.iter().all(|r| r["stream"] == true && r["stream_options"]["include_usage"] == true), "{reqs:?}");
    // The calls, assembled from their streamed pieces, went back to the model whole.
    let m = reqs[1]["messages"].as_array().unwrap();
    assert_eq!(m[1]["content"], "Reading both.");
    assert_eq!(m[1]["tool_calls"][1]["function"]["arguments"], "{\"name\":\"other.txt\"}");
    assert_eq!((m[2]["tool_call_id"].as_str(), m[3]["tool_call_id"].as_str()), (Some("call-a"), Some("call-b")));
    // Tokens, as the model reported them, per session and in total.
    let prompt: u64 = reqs.iter().map(|r| usage_for(r)["prompt_tokens"].as_u64().unwrap()).sum();
    let completion = 5 * reqs.len() as u64;
    let (ok, out, err) = kata(ws.path(), &["session", "show", "chat/c1", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["session"]["usage"]["prompt_tokens"].as_u64(), v["session"]["usage"]["completion_tokens"].as_u64()),
        (Some(prompt), Some(completion))
    );
    assert_eq!(v["session"]["turns"], 1);
    assert_eq!(v["history"].as_array().unwrap().len(), 5, "user, tool calls, two results, answer");
    let (ok, out, _) = kata(ws.path(), &["session", "show", "chat/c1"]);
    assert!(ok && out.contains(&format!("tokens       {prompt} prompt + {completion} completion")), "{out}");
    let (ok, out, _) = kata(ws.path(), &["session", "list"]);
    assert!(ok && out.lines().nth(1).unwrap().starts_with("chat/c1"), "{out}");
    let (ok, out, _) = kata(ws.path(), &["status"]);
    assert!(ok && out.contains(&format!("Agent: openai, 1 session(s), {prompt} prompt + {completion} completion tokens")), "{out}");
}

/// The newest message sent in `conversation` that contains `needle`.
fn sent_containing(chat: &ChatServer, conversation: &str, needle: &str, ws: &TestWorkspace) -> String {
    wait_for_or_log(&format!("a message with {needle:?} in {conversation}"), ws, || {
        replies_in(&chat.sent(), conversation).into_iter().rev().find(|t| t.contains(needle))
    })
}

#[test]
fn ask_mode_approvals_are_answered_in_the_owners_chat_and_only_the_owner_counts() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let (_d, notes) = notes_dir();
    // ann is named in allow_from: she may approve; everyone else gets in
    // through "*" only, which lets them talk, not approve.
    let ws = workspace(&format!(
        "{}\n[tools]\nmode = \"ask\"\napprovals_to = \"chat:owner\"\n{}{}",
        openai_agent(&llm, ""),
        chat_plugin("chat", &chat, "").replace("allow_from = [\"*\"]", "allow_from = [\"*\", \"ann\"]"),
        notes_plugin(&notes, "http://127.0.0.1:9")
    ));
    let _daemon = run(&ws);
    // The call waits; the request is posted in the owner's conversation.
    chat.say("c1", None, "bob", r#"call notes__write_note {"name":"a.txt","text":"approved in the chat"}"#);
    let id = pending_approval(&ws);
    let request = sent_containing(&chat, "owner", &format!("Approval {id}"), &ws);
    assert!(request.contains("notes.write_note") && request.contains("chat/c1"), "{request}");
    // The chat channel has no buttons: they arrive as text, said once.
    assert!(request.ends_with(&format!("reply \"yes {id}\" to Approve\nreply \"no {id}\" to Deny")), "{request}");
    assert_eq!(request.matches(&format!("yes {id}")).count(), 1, "{request}");
    // A stranger's yes approves nothing: it is an ordinary message to the agent.
    chat.say("owner", None, "mallory", "yes");
    assert_eq!(sent_containing(&chat, "owner", "echo:", &ws), "echo: yes");
    assert_eq!(pending_approval(&ws), id, "still waiting");
    assert!(!notes.join("a.txt").exists());
    // The owner's yes does.
    chat.say("owner", None, "ann", &format!("yes {id}"));
    assert_eq!(sent_containing(&chat, "owner", "Approved", &ws), format!("Approved {id}: notes.write_note runs now."));
    assert_eq!(reply(&chat, "c1", 1, &ws), "tool said: wrote /notes/a.txt");
    assert_eq!(std::fs::read_to_string(notes.join("a.txt")).unwrap(), "approved in the chat");
    // And her no (one call waits: no id needed) refuses.
    chat.say("c1", None, "bob", r#"call notes__write_note {"name":"b.txt","text":"no"}"#);
    let second = pending_approval(&ws);
    sent_containing(&chat, "owner", &format!("Approval {second}"), &ws);
    chat.say("owner", None, "ann", "No");
    assert!(sent_containing(&chat, "owner", "Denied", &ws).starts_with(&format!("Denied {second}: notes.write_note does not run")));
    let denied = reply(&chat, "c1", 2, &ws);
    assert!(denied.contains("refused") && denied.contains("denied it"), "{denied}");
    assert!(!notes.join("b.txt").exists());
    // The audit log says who decided where, and whose answer did not count.
    let audit = tool_audit(&ws);
    let rows: Vec<(&str, &str, &str)> =
        audit.iter().map(|r| (r["method"].as_str().unwrap(), r["verdict"].as_str().unwrap(), r["policy"].as_str().unwrap())).collect();
    let by = |verb: &str, id: i64| format!("{verb} by chat:ann in chat:owner (approval {id})");
    assert_eq!(
        rows,
        [
            ("approval-answer", "deny", "[tools] approvers (unset: senders paired on the channel or named in its allow_from)"),
            ("ask", "allow", by("approved", id).as_str()),
            ("ask", "deny", by("denied", second).as_str()),
        ]
    );
    assert!(audit[0]["detail"].as_str().unwrap().contains("\"yes\" from chat:mallory in chat:owner ignored"), "{audit:?}");
    let (_, all, _) = kata(ws.path(), &["approvals", "--all", "--json"]);
    let all: Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all[0]["decided_by"], "chat:ann in chat:owner");
}

#[test]
fn sessions_run_in_order_one_turn_at_a_time_under_the_concurrency_cap() {
    // Every answer takes a while, so turns overlap if anything lets them.
    let llm = LlmServer::start(tool_script(), Duration::from_millis(100));
    let chat = ChatServer::start();
    let (conversations, per) = (6, 4);
    // Everything is waiting before the daemon starts: one poll brings it all.
    for m in 1..=per {
        for c in 1..=conversations {
            chat.say(&format!("c{c}"), None, "ann", &format!("c{c} m{m}"));
        }
    }
    let ws = workspace(&format!("{}{}", openai_agent(&llm, "max_concurrent_sessions = 2"), chat_plugin("chat", &chat, "")));
    let _daemon = run(&ws);
    let sent = chat.wait_sent(conversations * per, WAIT);
    assert!(llm.max_in_flight() <= 2, "{} turns ran at once with max_concurrent_sessions = 2", llm.max_in_flight());
    assert_eq!(llm.max_in_flight_per_tag(), 1, "a session ran two turns at once");
    let reqs = llm.requests();
    for c in 1..=conversations {
        let conv = format!("c{c}");
        let want: Vec<String> = (1..=per).map(|m| format!("echo: c{c} m{m}")).collect();
        assert_eq!(replies_in(&sent, &conv), want, "replies of {conv} out of order");
        // The k-th request of the session has the k-1 earlier turns, in order.
        let mine: Vec<&Value> = reqs.iter().filter(|r| contents(r, "user").last().unwrap().starts_with(&format!("{conv} "))).collect();
        assert_eq!(mine.len(), per);
        for (k, r) in mine.iter().enumerate() {
            let users: Vec<String> = (1..=k + 1).map(|m| format!("{conv} m{m}")).collect();
            assert_eq!(contents(r, "user"), users, "context of request {k} of {conv}");
        }
    }
}

#[test]
fn threads_are_their_own_sessions_and_an_idle_session_starts_over() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let ws = workspace(&format!("{}{}", openai_agent(&llm, "idle_timeout = \"2s\""), chat_plugin("chat", &chat, "")));
    let _daemon = run(&ws);
    let last_users = |n: usize| -> Vec<String> {
        let reqs = wait_for("requests", WAIT, || {
            let r = llm.requests();
            (r.len() >= n).then_some(r)
        });
        contents(&reqs[n - 1], "user")
    };
    chat.say("c1", None, "ann", "main one");
    chat.wait_sent(1, WAIT);
    chat.say("c1", Some("t1"), "ann", "thread one");
    chat.wait_sent(2, WAIT);
    chat.say("c1", None, "ann", "main two");
    chat.wait_sent(3, WAIT);
    chat.say("c1", Some("t1"), "ann", "thread two");
    let sent = chat.wait_sent(4, WAIT);
    assert_eq!(last_users(2), ["thread one"], "a thread starts its own session");
    assert_eq!(last_users(3), ["main one", "main two"]);
    assert_eq!(last_users(4), ["thread one", "thread two"]);
    // Replies go back to the thread they came from.
    assert_eq!(sent[3]["thread"], "t1");
    assert_eq!(sent[2]["thread"], Value::Null);
    // After idle_timeout without a message, the conversation starts over.
    std::thread::sleep(Duration::from_millis(2500));
    chat.say("c1", None, "ann", "main three");
    chat.wait_sent(5, WAIT);
    assert_eq!(last_users(5), ["main three"], "an idle session is not continued");
}

#[test]
fn long_history_is_compacted_into_a_summary() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let ws = workspace(&format!("{}{}", openai_agent(&llm, "history_budget = 300"), chat_plugin("chat", &chat, "")));
    let _daemon = run(&ws);
    for i in 1..=4 {
        chat.say("c1", None, "ann", &format!("message {i} {}", "x".repeat(60)));
        chat.wait_sent(i, WAIT);
    }
    let reqs = llm.requests();
    // Turns of ~140 characters each: the fourth turn finds 420 > 300 and
    // summarises the oldest turns first.
    let summary_reqs: Vec<&Value> =
        reqs.iter().filter(|r| r["messages"][0]["content"].as_str().unwrap().starts_with("Summarise")).collect();
    assert_eq!(summary_reqs.len(), 1, "{reqs:#?}");
    let transcript = summary_reqs[0]["messages"][1]["content"].as_str().unwrap();
    assert!(transcript.contains("message 1") && transcript.contains("message 2"), "{transcript}");
    assert!(!transcript.contains("message 3"), "{transcript}");
    let last = reqs.last().unwrap();
    let system = contents(last, "system");
    assert_eq!(system.len(), 1);
    assert!(system[0].starts_with("Summary of the earlier conversation: SUMMARY("), "{system:?}");
    let users = contents(last, "user");
    assert_eq!(users.len(), 2, "the summarised turns are not sent again: {users:?}");
    assert!(users[0].starts_with("message 3") && users[1].starts_with("message 4"));
}

/// Retries and the interactive API, through the library on a real database.
mod library {
    use super::*;
    use kata::agent::{Agent, Settings};
    use kata::router::AgentHandle;
    use kata::store::Db;
    use kata::tools::ToolBox;

    fn handle(toml: &str, dir: &Path) -> AgentHandle {
        let policy = kata::policy::Policy::parse(toml, Path::new("kata.toml"), dir).unwrap();
        let settings = Settings::resolve(&policy.file, dir).unwrap();
        let db = Db::open(&dir.join("kata.db")).unwrap();
        let tools = Arc::new(ToolBox::new(vec![], vec![], settings.ask_timeout, db.clone()));
        let agent = Agent::new(&settings, dir, tools.clone()).unwrap();
        AgentHandle::new(db, settings, agent, tools, Default::default(), Default::default())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_backend_retries_429_and_5xx_then_answers() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let llm = LlmServer::start(
            Arc::new(move |_req: &Value| match c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => HttpResponse {
                    status: 429,
                    headers: vec![("retry-after".into(), "0".into())],
                    body: serde_json::json!({"error": {"message": "slow down"}}),
                },
                1 => HttpResponse { status: 503, headers: vec![], body: serde_json::json!({"error": {"message": "busy"}}) },
                _ => answer("finally"),
            }),
            Duration::ZERO,
        );
        let dir = tempfile::tempdir().unwrap();
        let h = handle(&format!("[agent]\nbackend = \"openai\"\nbase_url = \"{}\"\nmodel = \"m\"\n", llm.base_url()), dir.path());
        assert_eq!(h.interactive_turn("chat/me", "hello").await.unwrap().text.as_deref(), Some("finally"));
        assert_eq!(llm.requests().len(), 3);
        let hist = h.recent_history("chat/me", 10).unwrap();
        let texts: Vec<(&str, &str)> = hist.iter().map(|h| (h.entry.role.as_str(), h.entry.content.as_str())).collect();
        assert_eq!(texts, [("user", "hello"), ("assistant", "finally")]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_refusal_by_the_backend_fails_the_turn_with_its_message() {
        let llm = LlmServer::start(
            Arc::new(|_req: &Value| HttpResponse {
                status: 401,
                headers: vec![],
                body: serde_json::json!({"error": {"message": "bad key"}}),
            }),
            Duration::ZERO,
        );
        let dir = tempfile::tempdir().unwrap();
        let h = handle(&format!("[agent]\nbackend = \"openai\"\nbase_url = \"{}\"\nmodel = \"m\"\n", llm.base_url()), dir.path());
        let e = format!("{:#}", h.interactive_turn("chat/me", "hello").await.unwrap_err());
        assert!(e.contains("401") && e.contains("bad key") && e.contains("api_key"), "{e}");
        assert_eq!(llm.requests().len(), 1, "a 401 is not retried");
        assert!(h.recent_history("chat/me", 10).unwrap().is_empty(), "a failed turn leaves no history");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn history_that_cannot_be_summarised_is_truncated_to_the_newest_turns() {
        let llm = LlmServer::start(
            Arc::new(|req: &Value| {
                if req["messages"][0]["content"].as_str().is_some_and(|c| c.starts_with("Summarise")) {
                    HttpResponse { status: 400, headers: vec![], body: serde_json::json!({"error": {"message": "no summaries here"}}) }
                } else {
                    answer("ok")
                }
            }),
            Duration::ZERO,
        );
        let dir = tempfile::tempdir().unwrap();
        let h = handle(
            &format!("[agent]\nbackend = \"openai\"\nbase_url = \"{}\"\nmodel = \"m\"\nhistory_budget = 200\n", llm.base_url()),
            dir.path(),
        );
        for i in 0..10 {
            let text = format!("turn {i} {}", "y".repeat(30));
            assert_eq!(h.interactive_turn("chat/me", &text).await.unwrap().text.as_deref(), Some("ok"));
        }
        // All turns are kept in the database, but only the newest are context.
        assert_eq!(h.recent_history("chat/me", 100).unwrap().len(), 20);
        let db = Db::open(&dir.path().join("kata.db")).unwrap();
        let s = db.session_for("chat/me", "interactive", Duration::from_secs(60), kata::store::now_ms()).unwrap();
        let live = db.session_history(s.id).unwrap();
        // Compaction runs before a turn: what the newest turn was given as
        // context (everything before it) fits the budget.
        let newest = live.last().unwrap().turn;
        let before: usize = live.iter().filter(|h| h.turn != newest).map(|h| h.entry.size()).sum();
        assert!(before <= 200, "{before} characters of context over a budget of 200");
        assert_eq!(live.last().unwrap().entry.content, "ok");
        assert!(live.first().unwrap().entry.content.starts_with("turn "), "whole turns");
        assert!(s.summary.is_none(), "the summary failed: the oldest turns were dropped instead");
        let last = llm
            .requests()
            .into_iter()
            .rev()
            .find(|r| !r["messages"][0]["content"].as_str().unwrap_or("").starts_with("Summarise"))
            .unwrap();
        let users = contents(&last, "user");
        assert!(users.len() < 10 && users.last().unwrap().starts_with("turn 9"), "{users:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_server_that_cannot_stream_is_asked_without_and_its_usage_still_counts() {
        let llm = LlmServer::start(tool_script(), Duration::ZERO);
        let dir = tempfile::tempdir().unwrap();
        let h = handle(
            &format!("[agent]\nbackend = \"openai\"\nbase_url = \"{}\"\nmodel = \"m\"\nstream = false\n", llm.base_url()),
            dir.path(),
        );
        assert_eq!(h.interactive_turn("chat/me", "plain").await.unwrap().text.as_deref(), Some("echo: plain"));
        let req = &llm.requests()[0];
        assert!(req.get("stream").is_none() && req.get("stream_options").is_none(), "{req}");
        let db = Db::open(&dir.path().join("kata.db")).unwrap();
        let s = &db.sessions(Some("chat/me"), 1).unwrap()[0];
        assert_eq!((s.usage.prompt_tokens, s.usage.completion_tokens), (10, 5));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn echo_reads_no_history_and_keeps_every_turn() {
        let dir = tempfile::tempdir().unwrap();
        let h = handle("[agent]\nhistory_budget = 200\n", dir.path());
        for i in 0..10 {
            let text = format!("turn {i} {}", "y".repeat(30));
            assert_eq!(h.interactive_turn("chat/me", &text).await.unwrap().text, Some(text));
        }
        assert_eq!(h.recent_history("chat/me", 100).unwrap().len(), 20, "every turn is stored");
    }
}
