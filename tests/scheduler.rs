//! Scheduled tasks through the real binary: `kata task add` into a workspace
//! whose daemon runs the Telegram plugin against telegram-test-api, and the
//! agent's answer to the task's prompt arriving in the chat. Bad schedules and
//! targets are refused with one paragraph and leave no task behind.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{TelegramServer, TestWorkspace, kata, wait_for};

const TOKEN: &str = "123456:TEST-TOKEN-kata";

/// Telegram with pairing for everyone (no allow_from): a task's prompt must
/// reach the agent anyway, since it comes from the owner.
fn workspace(tg: &TelegramServer) -> TestWorkspace {
    TestWorkspace::new(&tg.plugin_toml(""))
}

fn texts(tg: &TelegramServer, chat: i64) -> Vec<String> {
    tg.bot_messages(TOKEN, chat).iter().map(|m| m["text"].as_str().unwrap_or_default().to_string()).collect()
}

fn refused(ws: &TestWorkspace, args: &[&str], want: &[&str]) {
    let (ok, out, err) = kata(ws.path(), args);
    assert!(!ok, "{args:?} should fail: {out}");
    assert_eq!(err.trim().lines().count(), 1, "one paragraph: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: missing {w:?} in: {err}");
    }
}

#[test]
fn a_task_added_to_a_running_daemon_is_answered_in_the_chat() {
    let tg = TelegramServer::start();
    let ws = workspace(&tg);
    let env = [("TG_TEST_TOKEN", TOKEN)];
    let mut daemon = ws.run(&env);
    wait_for("the daemon to start", Duration::from_secs(30), || ws.log().contains("kata is running").then_some(()));

    // Bad input: one paragraph each, nothing stored.
    refused(&ws, &["task", "add", "61 * * * *", "x", "--to", "telegram:77"], &["not a valid schedule", "every 30m"]);
    refused(&ws, &["task", "add", "every 1m", "x", "--to", "telegrm:77"], &["no plugin \"telegrm\"", "telegram"]);
    refused(&ws, &["task", "add", "2020-01-01T00:00:00Z", "x", "--to", "telegram:77"], &["not in the future"]);
    refused(&ws, &["task", "add", "every 1m", "x", "--to", "77"], &["PLUGIN:CONVERSATION"]);
    let (ok, out, _) = kata(ws.path(), &["task", "list"]);
    assert!(ok && out.starts_with("No tasks"), "{out}");

    // A task every 2 s; the running daemon notices it and the echo agent's
    // answer arrives in chat 77 — no pairing code, though nobody is allowed.
    let (ok, out, err) = kata(ws.path(), &["task", "add", "every 2s", "status report", "--to", "telegram:77"]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("Added task 1: every 2s → telegram:77; next run "), "{out}");
    wait_for("two runs answered in the chat", Duration::from_secs(60), || {
        (texts(&tg, 77).iter().filter(|t| *t == "status report").count() >= 2).then_some(())
    });
    assert!(texts(&tg, 77).iter().all(|t| t == "status report"), "{:?}", texts(&tg, 77));
    let (ok, out, _) = kata(ws.path(), &["pair", "list"]);
    assert!(ok && out.contains("No one has asked to pair"), "{out}");

    let (ok, out, _) = kata(ws.path(), &["task", "list", "--json"]);
    assert!(ok, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &listed[0];
    assert_eq!((t["id"].as_i64(), t["schedule"].as_str()), (Some(1), Some("every 2s")));
    assert_eq!(t["target"], serde_json::json!({"plugin": "telegram", "conversation": "77"}));
    assert!(t["runs"].as_u64().unwrap() >= 2 && t["last_run"].is_string() && t["next_run"].is_string(), "{t}");
    let (ok, out, _) = kata(ws.path(), &["task", "list"]);
    assert!(ok && out.contains("every 2s") && out.contains("telegram:77") && out.contains("status report"), "{out}");

    // Down for longer than several intervals: on restart the task runs once
    // to catch up, and the log says how many runs it skipped.
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    std::thread::sleep(Duration::from_secs(5));
    let mut daemon = ws.run(&env);
    let line = wait_for("the catch-up in the log", Duration::from_secs(30), || {
        ws.log().lines().find(|l| l.contains("task 1 was due at") && l.contains("missed")).map(String::from)
    });
    assert!(line.contains("running it once now"), "{line}");

    // Removed: no more runs are stored (the table says so at once).
    let (ok, out, _) = kata(ws.path(), &["task", "remove", "1"]);
    assert!(ok && out.contains("Removed task 1"), "{out}");
    refused(&ws, &["task", "remove", "1"], &["no task 1"]);
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    assert!(!ws.log().contains(TOKEN), "the bot token leaked into the log");
}
