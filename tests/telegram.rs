//! The walking skeleton end to end: the real Telegram plugin under the real
//! `kata run`, against telegram-test-api on loopback.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TelegramServer, TestWorkspace, wait_for};

const TOKEN: &str = "123456:TEST-TOKEN-kata";

/// A workspace running the Telegram plugin against the emulator; `allow` is
/// the `allow_from` line (empty: pairing for everyone).
fn workspace_with(tg: &TelegramServer, allow: &str) -> TestWorkspace {
    TestWorkspace::new(&tg.plugin_toml(allow))
}

fn workspace(tg: &TelegramServer) -> TestWorkspace {
    workspace_with(tg, "allow_from = [\"*\"]")
}

fn texts(msgs: &[serde_json::Value]) -> Vec<String> {
    msgs.iter().map(|m| m["text"].as_str().unwrap_or_default().to_string()).collect()
}

/// Wait until the bot has said exactly `want` (in any order) in `chat`, then
/// check nothing arrives twice.
fn expect_replies(tg: &TelegramServer, chat: i64, want: &[String], ws: &TestWorkspace) {
    let got = wait_for("the bot's replies", Duration::from_secs(60), || {
        let got = texts(&tg.bot_messages(TOKEN, chat));
        if want.iter().all(|w| got.contains(w)) { Some(got) } else { None }
    });
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "a reply was sent twice: {got:?}\nlog:\n{}", ws.log());
}

#[test]
fn messages_round_trip_and_survive_restarts() {
    let tg = TelegramServer::start();
    let ws = workspace(&tg);
    let env = [("TG_TEST_TOKEN", TOKEN)];

    // 1. A user writes; the echo agent answers through the plugin.
    let mut kata = ws.run(&env);
    tg.user_says(TOKEN, 1, "hello kata");
    expect_replies(&tg, 1, &["hello kata".to_string()], &ws);
    let first = tg.bot_messages(TOKEN, 1);
    assert_eq!(first[0]["reply_to_message_id"], 1, "the reply quotes the user's message: {first:?}");

    // 2. A burst from two chats, then a graceful stop (SIGTERM) part-way.
    let batch: Vec<String> = (0..6).map(|i| format!("burst {i}")).collect();
    for (i, t) in batch.iter().enumerate() {
        tg.user_says(TOKEN, 2 + (i as i64 % 2), t);
    }
    std::thread::sleep(Duration::from_millis(150));
    let st = kata.signal_and_wait("TERM");
    assert!(st.success(), "kata run exits cleanly on SIGTERM: {st:?}\n{}", ws.log());

    // 3. Messages sent while kata is down are picked up after a restart,
    //    and nothing answered before the stop is answered again.
    tg.user_says(TOKEN, 2, "while down");
    let mut kata = ws.run(&env);
    let chat2: Vec<String> = batch.iter().step_by(2).cloned().chain(["while down".to_string()]).collect();
    let chat3: Vec<String> = batch.iter().skip(1).step_by(2).cloned().collect();
    expect_replies(&tg, 2, &chat2, &ws);
    expect_replies(&tg, 3, &chat3, &ws);

    // 4. A hard kill (SIGKILL) once everything is answered, more messages, a
    //    restart: the stored cursor and outbox keep every answer single.
    let st = kata.signal_and_wait("KILL");
    assert!(!st.success());
    tg.user_says(TOKEN, 1, "after kill -9");
    let _kata = ws.run(&env);
    expect_replies(&tg, 1, &["hello kata".to_string(), "after kill -9".to_string()], &ws);
    std::thread::sleep(Duration::from_millis(500));
    for chat in 1..=3 {
        let all = texts(&tg.bot_messages(TOKEN, chat));
        let mut dedup = all.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), all.len(), "chat {chat} got a duplicate: {all:?}");
    }
    assert_eq!(texts(&tg.bot_messages(TOKEN, 1)).len(), 2);
    assert_eq!(texts(&tg.bot_messages(TOKEN, 2)).len(), 4);
    assert_eq!(texts(&tg.bot_messages(TOKEN, 3)).len(), 3);

    // The token never appears in kata's own log.
    assert!(!ws.log().contains(TOKEN), "the bot token leaked into the log");
}

#[test]
fn ungranted_host_is_denied_with_the_line_to_add() {
    let tg = TelegramServer::start();
    let ws = workspace(&tg);
    // The emulator accepts any token, so point the grant elsewhere instead:
    // the plugin's request is denied by policy and the log says what to add.
    let text = std::fs::read_to_string(ws.path().join("kata.toml")).unwrap();
    let text = text.replace(&format!("network = [\"{}/bot*\"]", tg.base()), "network = [\"http://127.0.0.1:1/bot*\"]");
    std::fs::write(ws.path().join("kata.toml"), text).unwrap();
    let mut kata = ws.run(&[("TG_TEST_TOKEN", TOKEN)]);
    let log = wait_for("a denial in the log", Duration::from_secs(30), || {
        let log = ws.log();
        log.contains("denied").then_some(log)
    });
    assert!(log.contains(&format!("\"{}\"", tg.base())), "the denial names the entry to add:\n{log}");
    assert!(log.contains("[plugins.telegram]"), "{log}");
    assert!(kata.signal_and_wait("TERM").success());
}

#[test]
fn unknown_senders_pair_before_they_reach_the_agent() {
    let tg = TelegramServer::start();
    let ws = workspace_with(&tg, "allow_from = [\"42\"]");
    let mut kata = ws.run(&[("TG_TEST_TOKEN", TOKEN)]);

    // An allowed sender reaches the agent at once.
    tg.user_says(TOKEN, 42, "allowed here");
    expect_replies(&tg, 42, &["allowed here".to_string()], &ws);

    // A stranger gets a pairing code, and nothing else.
    tg.user_says(TOKEN, 7, "hello?");
    let code = wait_for("the pairing code", Duration::from_secs(60), || {
        let got = texts(&tg.bot_messages(TOKEN, 7));
        let text = got.first()?.clone();
        let code = text.split("kata pair approve ").nth(1)?.trim_end_matches(['`', '.']).to_string();
        Some(code)
    });
    assert_eq!(code.len(), 6, "{code}");
    tg.user_says(TOKEN, 7, "anyone there?");
    let (ok, out, _) = common::kata(ws.path(), &["pair", "list"]);
    assert!(ok && out.contains(&code) && out.contains("pending"), "{out}");
    // Wait until the second message has been handled, then check it got nothing.
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    wait_for("both messages handled", Duration::from_secs(60), || {
        (db.plugin_activity("telegram").ok()?.received == 3 && db.counts().ok()?.inbox_new == 0).then_some(())
    });
    assert_eq!(texts(&tg.bot_messages(TOKEN, 7)).len(), 1, "a pending sender gets no second reply");

    // The owner approves; the sender's next message reaches the agent.
    let (ok, out, err) = common::kata(ws.path(), &["pair", "approve", &code.to_lowercase()]);
    assert!(ok && out.contains("Approved 7"), "{out}{err}");
    tg.user_says(TOKEN, 7, "now?");
    expect_replies(&tg, 7, &["now?".to_string()], &ws);
    let (ok, _, err) = common::kata(ws.path(), &["pair", "approve", "ZZZZZZ"]);
    assert!(!ok && err.contains("no pairing has the code ZZZZZZ"), "{err}");
    assert!(kata.signal_and_wait("TERM").success());
}
