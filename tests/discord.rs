//! The Discord plugin (plugins/discord) in the real daemon (`kata run`, echo
//! agent) against a protocol-faithful Discord written here
//! (tests/common/discord.rs): the Gateway handshake, heartbeats, READY,
//! MESSAGE_CREATE, RESUME with replay after reconnects, dropped sockets,
//! invalid sessions, zombied connections and a daemon killed mid-stream;
//! direct and group conversations with the mention rule, replies, threads,
//! attachments, the bot's own messages coming back, nonces, rate limits, a
//! refused token, a missing grant, and approval requests with buttons whose
//! press (INTERACTION_CREATE) is acknowledged and delivered as a message.
#![allow(clippy::unwrap_used, clippy::result_large_err, missing_docs)]

use crate::common;
use crate::common::discord;

use std::time::Duration;

use common::llm::{LlmServer, approval_toml, tool_script};
use common::{TestWorkspace, guest, kata, wait_for_or};
use discord::{ANN, BOB, BOT_ID, BOT_TOKEN, DM, DiscordFake, Post, TEXT, THREAD};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
/// HELLO's heartbeat interval in these tests (Discord's is about 41 s).
const HEARTBEAT_MS: u64 = 1000;

/// The `[plugins.discord]` table for `fake`, each grant on its own line.
fn plugin_toml(fake: &DiscordFake) -> String {
    let api = fake.api_base();
    format!(
        r#"
[plugins.discord]
path = "{wasm}"
network = [
    "{api}/gateway/bot",
    "{api}/channels",
    "{api}/interactions",
    "{gw}",
]
secrets = {{ bot_token = "env:DISCORD_BOT_TOKEN" }}
config = {{ api_base = "{api}", gateway_base = "{gw}", heartbeat_tick_ms = 100 }}
allow_from = ["*"]
groups = ["{TEXT}"]
"#,
        wasm = guest("discord").display(),
        gw = fake.gateway_base(),
    )
}

fn env() -> [(&'static str, &'static str); 1] {
    [("DISCORD_BOT_TOKEN", BOT_TOKEN)]
}

/// The plugin's row in `kata status --json`.
fn status(ws: &TestWorkspace) -> Option<Value> {
    let (ok, out, _) = kata(ws.path(), &["status", "--json"]);
    let st: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
    st["plugins"].as_array()?.iter().find(|p| p["name"] == "discord").cloned()
}

fn ready(fake: &DiscordFake, ws: &TestWorkspace) {
    wait_for_or("a ready gateway session", WAIT, || ws.log(), || fake.ready().then_some(()));
}

/// Wait for the bot's message with `content` in `channel`; returns it.
fn reply(fake: &DiscordFake, ws: &TestWorkspace, channel: &str, content: &str) -> Value {
    wait_for_or(
        &format!("the reply {content:?} in {channel}"),
        WAIT,
        || ws.log(),
        || fake.posts().into_iter().find(|p| p["channel_id"] == channel && p["content"] == content),
    )
}

fn settle(fake: &DiscordFake, ws: &TestWorkspace) {
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    wait_for_or(
        "every message handled and every reply sent",
        WAIT,
        || ws.log(),
        || {
            let c = db.counts().ok()?;
            (c.inbox_new == 0 && c.outbox_pending == 0).then_some(())
        },
    );
    // Long enough for an echo loop to show.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = fake;
}

fn assert_each_once(fake: &DiscordFake, ws: &TestWorkspace) {
    let mut all: Vec<(String, String)> =
        fake.posts().iter().map(|p| (p["channel_id"].as_str().unwrap().to_string(), p["content"].as_str().unwrap().to_string())).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a reply was created twice: {all:?}\n{}", ws.log());
}

/// Rows of the inbox: (id, conversation, thread, sender, text, is_group, mentioned, attachments).
type Row = (String, String, Option<String>, String, String, bool, bool, String);

fn inbox(ws: &TestWorkspace) -> Vec<Row> {
    let conn = rusqlite::Connection::open(ws.path().join(".kata/kata.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT channel_msg_id, conversation, thread, sender, text, is_group, mentioned, attachments FROM inbox ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn discord_round_trip_direct_group_replies_threads_files_rate_limit_and_no_echo() {
    let fake = DiscordFake::start(HEARTBEAT_MS);
    let ws = TestWorkspace::new(&plugin_toml(&fake));
    let mut daemon = ws.run(&env());
    ready(&fake, &ws);
    wait_for_or("connected in kata status", WAIT, || ws.log(), || status(&ws).filter(|p| p["channel"]["state"] == "connected"));

    // A DM: answered as a reply to the user's message, with the outbox key as nonce.
    let asked = fake.post(Post::new(DM, ANN, "hello dm"));
    let r = reply(&fake, &ws, DM, "hello dm");
    assert_eq!(r["message_reference"]["message_id"], asked.as_str());
    assert!(r["nonce"].as_str().is_some_and(|n| !n.is_empty() && n.len() <= 25), "{r}");

    // The granted channel: chatter is stored, not answered; a mention is
    // answered without the mention; a reply to the bot counts as addressing it.
    fake.post(Post::new(TEXT, BOB, "just chatting"));
    fake.post(Post::new(TEXT, BOB, &format!("<@{BOT_ID}> hello group")));
    let answer = reply(&fake, &ws, TEXT, "hello group");
    fake.post(Post::new(TEXT, BOB, "thanks").replying_to(answer["id"].as_str().unwrap()));
    reply(&fake, &ws, TEXT, "thanks");
    // A thread (a channel of its own): kata's thread, answered in the thread.
    fake.post(Post::new(THREAD, BOB, &format!("<@{BOT_ID}> in the thread")));
    reply(&fake, &ws, THREAD, "in the thread");
    // A file.
    fake.post(Post::new(DM, ANN, "see the cat").with_file("cat.png", "image/png", 1024));
    reply(&fake, &ws, DM, "see the cat");

    // Rate limited: the reply waits retry_after (1.5 s), then goes out once.
    fake.rate_limit_posts(1, 1.5);
    fake.post(Post::new(DM, ANN, "slow down"));
    reply(&fake, &ws, DM, "slow down");
    let attempts = fake.post_attempts();
    let limited = attempts.iter().position(|(_, s)| *s == 429).expect("a 429");
    let gap = attempts[limited + 1].0 - attempts[limited].0;
    assert!(gap >= Duration::from_millis(1500), "the retry came {gap:?} after a 429 with retry_after 1.5");

    settle(&fake, &ws);
    assert_eq!(fake.posts().len(), 6, "{:#?}\n{}", fake.posts(), ws.log());
    assert_each_once(&fake, &ws);
    // One connection all along: the heartbeats kept it (the fake closes a
    // connection whose heartbeats stop), each carrying the last sequence.
    assert_eq!(fake.connections().0, 1, "{:?}", fake.closes());
    let beats = fake.heartbeats();
    assert!(beats.len() >= 3, "{beats:?}");
    let seqs: Vec<u64> = beats.iter().filter_map(|(_, d)| d.as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]) && seqs.last() > Some(&1), "{beats:?}");
    assert!(daemon.signal_and_wait("TERM").success());

    let rows = inbox(&ws);
    assert!(rows.iter().all(|r| r.3 != BOT_ID), "the bot's own messages are not inbound: {rows:#?}");
    assert_eq!(rows.len(), 7, "{rows:#?}");
    let by_text = |t: &str| rows.iter().find(|r| r.4 == t).unwrap_or_else(|| panic!("{t:?} not stored: {rows:#?}"));
    let dm = by_text("hello dm");
    assert_eq!((dm.0.as_str(), dm.1.as_str(), dm.5, dm.6), (asked.as_str(), DM, false, true));
    assert_eq!((by_text("just chatting").5, by_text("just chatting").6), (true, false));
    assert_eq!((by_text("hello group").5, by_text("hello group").6), (true, true));
    assert!(by_text("thanks").6, "a reply to the bot addresses it");
    let thread = by_text("in the thread");
    assert_eq!((thread.1.as_str(), thread.2.as_deref()), (TEXT, Some(THREAD)), "a thread maps to its parent channel");
    let files: Value = serde_json::from_str(&by_text("see the cat").7).unwrap();
    assert_eq!(files[0]["name"], "cat.png");
    assert_eq!(files[0]["mime_type"], "image/png");
    assert_eq!(files[0]["size"], 1024);
    assert!(!ws.log().contains(BOT_TOKEN), "the token leaked into the log");
}

#[test]
fn discord_resumes_after_reconnects_drops_zombies_and_a_crash_losing_nothing_doubling_nothing() {
    let fake = DiscordFake::start(HEARTBEAT_MS);
    let ws = TestWorkspace::new(&plugin_toml(&fake));
    let mut daemon = ws.run(&env());
    ready(&fake, &ws);
    fake.post(Post::new(DM, ANN, "one"));
    reply(&fake, &ws, DM, "one");

    // Reconnect (op 7): a new connection to resume_gateway_url, RESUME.
    fake.send_op(json!({"op": 7, "d": null}));
    wait_for_or("a resume", WAIT, || ws.log(), || (fake.handshakes().1 >= 1 && fake.ready()).then_some(()));
    assert!(fake.paths().last().unwrap().starts_with("/resume/?v=10&encoding=json"), "{:?}", fake.paths());
    fake.post(Post::new(DM, ANN, "two"));
    reply(&fake, &ws, DM, "two");

    // The socket drops; what is said meanwhile is replayed after RESUME.
    let before = fake.connections().0;
    fake.drop_sockets();
    fake.post(Post::new(DM, ANN, "three"));
    fake.post(Post::new(DM, ANN, "four"));
    wait_for_or("a connection after the drop", WAIT, || ws.log(), || (fake.connections().0 > before).then_some(()));
    reply(&fake, &ws, DM, "three");
    reply(&fake, &ws, DM, "four");
    assert_eq!(fake.handshakes(), (1, 2), "resumed twice, identified once");

    // A zombied connection: no ACKs. The plugin notices at the next
    // heartbeat, drops the connection and resumes.
    let before = fake.connections().0;
    fake.mute_acks(true);
    wait_for_or("a reconnect after missing ACKs", WAIT, || ws.log(), || (fake.connections().0 > before).then_some(()));
    fake.mute_acks(false);
    ready(&fake, &ws);
    fake.post(Post::new(DM, ANN, "five"));
    reply(&fake, &ws, DM, "five");

    // Invalid Session, not resumable: a new session (IDENTIFY), not a RESUME.
    let (identifies, _) = fake.handshakes();
    fake.send_op(json!({"op": 9, "d": false, "s": null, "t": null}));
    wait_for_or("a new session", WAIT, || ws.log(), || (fake.handshakes().0 > identifies && fake.ready()).then_some(()));
    fake.post(Post::new(DM, ANN, "six"));
    reply(&fake, &ws, DM, "six");

    // The daemon is killed; a message arrives while it is down; the restarted
    // daemon resumes the session from its stored state and gets it.
    settle(&fake, &ws);
    let st = daemon.signal_and_wait("KILL");
    assert!(!st.success());
    fake.post(Post::new(DM, ANN, "seven"));
    let resumes = fake.handshakes().1;
    let _daemon = ws.run(&env());
    reply(&fake, &ws, DM, "seven");
    assert!(fake.handshakes().1 > resumes, "the restarted daemon resumed: {:?}", fake.handshakes());

    settle(&fake, &ws);
    assert_eq!(fake.posts().len(), 7, "{:#?}", fake.posts());
    assert_each_once(&fake, &ws);
    assert_eq!(inbox(&ws).len(), 7, "each message stored once: {:#?}", inbox(&ws));
    let log = ws.log();
    assert!(log.contains("opcode 7 Reconnect") && log.contains("zombied") && log.contains("opcode 9"), "{log}");
}

#[test]
fn discord_refused_token_is_auth_failed_in_status_without_a_retry_storm() {
    let fake = DiscordFake::start(HEARTBEAT_MS);
    let ws = TestWorkspace::new(&plugin_toml(&fake));
    let mut daemon = ws.run(&[("DISCORD_BOT_TOKEN", "not-the-token")]);
    let p = wait_for_or(
        "auth-failed in kata status",
        WAIT,
        || ws.log(),
        || status(&ws).filter(|p| p["health"]["last_error"].is_string() && p["channel"]["state"] == "failing"),
    );
    assert_eq!(p["channel"]["reason"], "auth-failed", "{p:#}");
    let err = p["health"]["last_error"].as_str().unwrap();
    assert!(err.contains("authentication failed") && err.contains("bot_token") && err.contains("401"), "{err}");
    let (ok, human, _) = kata(ws.path(), &["status"]);
    assert!(ok && human.lines().any(|l| l.starts_with("discord") && l.contains("failing: auth-failed")), "{human}");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(fake.requests("/gateway/bot"), 1, "a refused token is not retried at once:\n{}", ws.log());
    assert_eq!(fake.connections().0, 0);
    assert!(daemon.signal_and_wait("TERM").success());
}

#[test]
fn discord_without_its_gateway_grant_is_denied_naming_the_line() {
    let fake = DiscordFake::start(HEARTBEAT_MS);
    let ws = TestWorkspace::new(&plugin_toml(&fake));
    let path = ws.path().join("kata.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(&format!("    \"{}\",\n", fake.gateway_base()), "");
    std::fs::write(&path, text).unwrap();
    let mut daemon = ws.run(&env());
    let log = wait_for_or(
        "the denial in the log",
        WAIT,
        || ws.log(),
        || {
            let log = ws.log();
            log.contains("denied: no network grant").then_some(log)
        },
    );
    let line = log.lines().find(|l| l.contains("denied: no network grant")).unwrap();
    assert!(line.contains(&fake.gateway_base()) && line.contains("[plugins.discord]"), "{line}");
    assert!(daemon.signal_and_wait("TERM").success());
    assert_eq!(fake.connections().0, 0, "nothing reached the gateway");
}

#[test]
fn discord_approvals_come_with_buttons_and_a_press_is_acknowledged_and_answers() {
    let fake = DiscordFake::start(HEARTBEAT_MS);
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let notes = tempfile::tempdir().unwrap();
    let ws = TestWorkspace::new("");
    let allow = format!(r#"allow_from = ["*", "{ANN}"]"#);
    let toml = approval_toml(&llm, &format!("discord:{DM}"), &plugin_toml(&fake).replace(r#"allow_from = ["*"]"#, &allow), notes.path());
    std::fs::write(ws.path().join("kata.toml"), toml).unwrap();
    let mut daemon = ws.run(&[("DISCORD_BOT_TOKEN", BOT_TOKEN), ("KATA_TEST_OPENAI_KEY", "sk-test-key-0123456789"), ("KATA_LOG", "info")]);
    ready(&fake, &ws);

    // Ann asks for a write in her DM: the request comes there with buttons.
    fake.post(Post::new(DM, ANN, r#"call notes__write_note {"name":"a.txt","text":"approved by a button"}"#));
    let id = wait_for_or(
        "a pending approval",
        WAIT,
        || ws.log(),
        || {
            let (ok, out, _) = kata(ws.path(), &["approvals", "--json"]);
            let list: Value = serde_json::from_str(&out).ok()?;
            ok.then(|| list.as_array()?.first()?["id"].as_i64()).flatten()
        },
    );
    let request = wait_for_or(
        "the approval request",
        WAIT,
        || ws.log(),
        || {
            fake.posts()
                .into_iter()
                .find(|p| p["channel_id"] == DM && p["content"].as_str().is_some_and(|c| c.contains(&format!("Approval {id}"))))
        },
    );
    let ids: Vec<&str> =
        request["components"][0]["components"].as_array().unwrap().iter().map(|b| b["custom_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [format!("yes {id}"), format!("no {id}")], "{request}");

    // Ann presses Approve: acknowledged (type 6), and the tool runs.
    let press = fake.press(request["id"].as_str().unwrap(), ANN, &format!("yes {id}"));
    wait_for_or(
        "the tool's result",
        WAIT,
        || ws.log(),
        || {
            fake.posts()
                .into_iter()
                .find(|p| p["channel_id"] == DM && p["content"].as_str().is_some_and(|c| c.contains("tool said: wrote")))
        },
    );
    assert_eq!(std::fs::read_to_string(notes.path().join("a.txt")).unwrap(), "approved by a button");
    assert_eq!(fake.answered(&press), Some(6));
    let rows = inbox(&ws);
    let pressed = rows.iter().find(|r| r.4 == format!("yes {id}")).unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!((pressed.0.as_str(), pressed.1.as_str(), pressed.3.as_str()), (format!("ia:{press}").as_str(), DM, ANN));
    assert!(daemon.signal_and_wait("TERM").success());
}
