//! The Slack plugin (plugins/slack) in the real daemon (`kata run`, echo
//! agent) against a protocol-faithful Slack written here
//! (tests/common/slack.rs): Socket Mode envelopes and acknowledgements,
//! direct and group conversations with the mention rule, threads, files,
//! the bot's own posts coming back, disconnects and dropped sockets,
//! rate limits, refused tokens, a missing grant, approvals answered with
//! Block Kit buttons (a press as a message, over Socket Mode and over the
//! Events API), and the Events API over the host's webhook listener.
#![allow(clippy::unwrap_used, clippy::result_large_err, missing_docs)]

use crate::common;
use crate::common::slack;

use std::time::Duration;

use common::{TestWorkspace, guest, kata, wait_for_or};
use serde_json::json;
use slack::{APP_TOKEN, BOT_TOKEN, BOT_USER, Say, SlackFake};

const WAIT: Duration = Duration::from_secs(60);
const GROUP: &str = "C0GROUP";

/// The `[plugins.slack]` table for `fake`: the three Web API methods and
/// the socket host, each granted on its own line; `extra` lines after.
fn plugin_toml(fake: &SlackFake, extra: &str) -> String {
    let api = fake.api_base();
    format!(
        r#"
[plugins.slack]
path = "{wasm}"
network = [
    "{api}/auth.test",
    "{api}/apps.connections.open",
    "{api}/chat.postMessage",
    "{socket}",
]
secrets = {{ bot_token = "env:SLACK_BOT_TOKEN", app_token = "env:SLACK_APP_TOKEN" }}
config = {{ api_base = "{api}", socket_base = "{socket}" }}
allow_from = ["*"]
groups = ["{GROUP}"]
{extra}
"#,
        wasm = guest("slack").display(),
        socket = fake.socket_base(),
    )
}

fn env() -> [(&'static str, &'static str); 2] {
    [("SLACK_BOT_TOKEN", BOT_TOKEN), ("SLACK_APP_TOKEN", APP_TOKEN)]
}

/// The `[plugins.slack]` table for the Events API on `listen`, the host
/// checking Slack's signatures; `config_extra` goes into its `config`.
fn events_toml(fake: &SlackFake, listen: &str, config_extra: &str) -> String {
    let api = fake.api_base();
    format!(
        r#"
[plugins.slack]
path = "{wasm}"
network = ["{api}/auth.test", "{api}/chat.postMessage", "{listen}"]
secrets = {{ bot_token = "env:SLACK_BOT_TOKEN", signing_secret = "env:SLACK_SIGNING_SECRET" }}
webhook = {{ verify = "slack", secret = "signing_secret" }}
config = {{ api_base = "{api}", mode = "events", listen = "{listen}"{config_extra} }}
allow_from = ["*"]
groups = ["{GROUP}"]
"#,
        wasm = guest("slack").display(),
    )
}

fn events_env() -> [(&'static str, &'static str); 2] {
    [("SLACK_BOT_TOKEN", BOT_TOKEN), ("SLACK_SIGNING_SECRET", slack::SIGNING_SECRET)]
}

/// Wait for the bot's post with `text` in `channel`; returns it.
fn reply(fake: &SlackFake, ws: &TestWorkspace, channel: &str, text: &str) -> slack::Posted {
    wait_for_or(
        &format!("the reply {text:?} in {channel}"),
        WAIT,
        || ws.log(),
        || fake.posts().into_iter().find(|p| p.channel == channel && p.text == text),
    )
}

/// Wait until the daemon has handled everything and Slack has nothing unacknowledged.
fn settle(fake: &SlackFake, ws: &TestWorkspace) {
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    wait_for_or(
        "every message handled, every reply sent, every envelope acked",
        WAIT,
        || ws.log(),
        || {
            let c = db.counts().ok()?;
            (c.inbox_new == 0 && c.outbox_pending == 0 && fake.pending() == 0).then_some(())
        },
    );
    // Long enough for an echo loop to show.
    std::thread::sleep(Duration::from_millis(1500));
}

fn assert_each_once(fake: &SlackFake, ws: &TestWorkspace) {
    let mut texts: Vec<(String, String)> = fake.posts().into_iter().map(|p| (p.channel, p.text)).collect();
    let n = texts.len();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), n, "a reply was posted twice: {:?}\n{}", fake.posts(), ws.log());
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

/// The plugin's row in `kata status --json`.
fn status(ws: &TestWorkspace) -> Option<serde_json::Value> {
    let (ok, out, _) = kata(ws.path(), &["status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
    st["plugins"].as_array()?.iter().find(|p| p["name"] == "slack").cloned()
}

/// The channel state, its reason and the last error in `kata status`.
fn status_error(ws: &TestWorkspace) -> Option<String> {
    let p = status(ws)?;
    let error = p["health"]["last_error"].as_str()?;
    Some(format!("{} {} {error}", p["channel"]["state"].as_str().unwrap_or("-"), p["channel"]["reason"].as_str().unwrap_or("-")))
}

#[test]
fn slack_round_trip_direct_group_threads_files_rate_limit_and_no_echo() {
    let fake = SlackFake::start();
    let ws = TestWorkspace::new(&plugin_toml(&fake, ""));
    let mut daemon = ws.run(&env());
    wait_for_or("a Socket Mode connection", WAIT, || ws.log(), || (fake.connections().1 == 1).then_some(()));
    wait_for_or("connected in kata status", WAIT, || ws.log(), || status(&ws).filter(|p| p["channel"]["state"] == "connected"));

    // A direct message: answered inline (no thread in a DM).
    fake.say(Say::dm("D0ANN", "U0ANN", "hello dm"));
    assert_eq!(reply(&fake, &ws, "D0ANN", "hello dm").thread_ts, None);

    // In the granted channel: chatter is stored, not answered; a mention is
    // answered in a thread under it, without the mention, and escaped for Slack.
    fake.say(Say::channel(GROUP, "U0BOB", "just chatting"));
    let asked = fake.say(Say::channel(GROUP, "U0BOB", &format!("<@{BOT_USER}> hello group &amp; 1 &lt; 2")));
    assert_eq!(reply(&fake, &ws, GROUP, "hello group &amp; 1 &lt; 2").thread_ts.as_deref(), Some(asked.as_str()));
    // In that thread: kata's thread is the thread_ts, and the reply stays there.
    fake.say(Say::channel(GROUP, "U0BOB", &format!("<@{BOT_USER}> in the thread")).in_thread(&asked));
    assert_eq!(reply(&fake, &ws, GROUP, "in the thread").thread_ts.as_deref(), Some(asked.as_str()));
    // A channel that is not granted: stored, never answered.
    fake.say(Say::channel("C0OTHER", "U0BOB", &format!("<@{BOT_USER}> anyone?")));
    // A file.
    fake.say(Say::dm("D0ANN", "U0ANN", "see the report").with_file("report.pdf", "application/pdf", 52341));
    reply(&fake, &ws, "D0ANN", "see the report");
    // An edit is not a new message.
    fake.event(json!({"type": "message", "subtype": "message_changed", "hidden": true, "channel": "D0ANN", "channel_type": "im",
        "ts": "1700000000.000100", "event_ts": "1700000000.000100",
        "message": {"type": "message", "user": "U0ANN", "text": "hello dm (edited)", "ts": "1700000000.000001"}}));

    // Rate limited: the reply waits Retry-After (2 s) and then goes out once.
    fake.rate_limit_posts(1, 2);
    fake.say(Say::dm("D0ANN", "U0ANN", "slow down"));
    reply(&fake, &ws, "D0ANN", "slow down");
    let attempts = fake.post_attempts();
    let limited = attempts.iter().position(|(_, s)| *s == 429).expect("a 429");
    let gap = attempts[limited + 1].0 - attempts[limited].0;
    assert!(gap >= Duration::from_secs(2), "the retry came {gap:?} after a 429 with Retry-After: 2");

    settle(&fake, &ws);
    // Exactly the five answers: the bot's own posts came back as events and
    // were not answered, the chatter, the ungranted channel and the edit neither.
    let posts = fake.posts();
    assert_eq!(posts.len(), 5, "{posts:#?}\n{}", ws.log());
    assert_each_once(&fake, &ws);
    assert_eq!(fake.connections().0, 1, "one connection throughout");
    assert!(daemon.signal_and_wait("TERM").success());

    let rows = inbox(&ws);
    assert!(rows.iter().all(|r| r.3 != BOT_USER), "the bot's own posts are not inbound: {rows:#?}");
    assert_eq!(rows.len(), 7, "dm, chatter, mention (message + app_mention stored once), thread, other channel, file, slow: {rows:#?}");
    let by_text = |t: &str| rows.iter().find(|r| r.4 == t).unwrap_or_else(|| panic!("{t:?} not stored: {rows:#?}"));
    let dm = by_text("hello dm");
    assert_eq!((dm.1.as_str(), dm.2.as_deref(), dm.5, dm.6), ("D0ANN", None, false, true));
    let chatter = by_text("just chatting");
    assert_eq!((chatter.5, chatter.6), (true, false));
    let mention = by_text("hello group & 1 < 2");
    assert_eq!((mention.0.clone(), mention.5, mention.6), (format!("{GROUP}:{asked}"), true, true));
    assert_eq!(by_text("in the thread").2.as_deref(), Some(asked.as_str()));
    let file: serde_json::Value = serde_json::from_str(&by_text("see the report").7).unwrap();
    assert_eq!(file[0]["name"], "report.pdf");
    assert_eq!(file[0]["mime_type"], "application/pdf");
    assert_eq!(file[0]["size"], 52341);
    assert!(file[0]["url"].as_str().unwrap().contains("files-pri"), "{file}");
    assert!(!ws.log().contains(BOT_TOKEN) && !ws.log().contains(APP_TOKEN), "a token leaked into the log");
}

#[test]
fn slack_reconnects_after_disconnects_and_dropped_sockets_losing_nothing_doubling_nothing() {
    let fake = SlackFake::start();
    let ws = TestWorkspace::new(&plugin_toml(&fake, ""));
    let mut daemon = ws.run(&env());
    wait_for_or("a Socket Mode connection", WAIT, || ws.log(), || (fake.connections().1 == 1).then_some(()));
    fake.say(Say::dm("D0ANN", "U0ANN", "one"));
    reply(&fake, &ws, "D0ANN", "one");

    // Slack refreshes the connection: a disconnect envelope, then a new
    // connection on a new URL (apps.connections.open again).
    fake.disconnect("refresh_requested");
    wait_for_or("a second connection", WAIT, || ws.log(), || (fake.connections().0 >= 2 && fake.connections().1 == 1).then_some(()));
    assert!(fake.requests("apps.connections.open") >= 2);
    fake.say(Say::dm("D0ANN", "U0ANN", "two"));
    reply(&fake, &ws, "D0ANN", "two");

    // The socket dies right after an envelope went out, before any ack can
    // arrive: Slack delivers it again on the next connection.
    fake.drop_before_ack(1);
    fake.say(Say::dm("D0ANN", "U0ANN", "three"));
    reply(&fake, &ws, "D0ANN", "three");
    // It was stored before the drop; the redelivery on the next connection
    // is acknowledged and not answered again (checked at the end).
    wait_for_or("the unacknowledged envelope delivered again", WAIT, || ws.log(), || (fake.deliveries().1 >= 1).then_some(()));

    // The socket drops; what is said meanwhile arrives after the reconnect.
    let before = fake.connections().0;
    fake.drop_sockets();
    for t in ["four", "five"] {
        fake.say(Say::dm("D0ANN", "U0ANN", t));
    }
    wait_for_or("a connection after the drop", WAIT, || ws.log(), || (fake.connections().0 > before).then_some(()));
    reply(&fake, &ws, "D0ANN", "four");
    reply(&fake, &ws, "D0ANN", "five");

    settle(&fake, &ws);
    assert_eq!(fake.posts().len(), 5, "{:#?}", fake.posts());
    assert_each_once(&fake, &ws);
    let log = ws.log();
    assert!(log.contains("disconnect: refresh_requested"), "{log}");

    // Socket Mode switched off for the app (disconnect: link_disabled): a
    // configuration error, shown in kata status, and no reconnect storm —
    // the host waits as long as the error asks (30 s and more), not its
    // quick reconnect backoff.
    let (before, opens) = (fake.connections().0, fake.requests("apps.connections.open"));
    fake.disconnect("link_disabled");
    let err = wait_for_or("link_disabled in kata status", WAIT, || ws.log(), || status_error(&ws).filter(|e| e.contains("link_disabled")));
    assert!(err.starts_with("failing invalid-config ") && err.contains("Socket Mode"), "{err}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!((fake.connections().0, fake.requests("apps.connections.open")), (before, opens), "{}", ws.log());
    assert!(daemon.signal_and_wait("TERM").success());
    assert_eq!(inbox(&ws).len(), 5, "each message stored once: {:#?}", inbox(&ws));
}

#[test]
fn slack_refused_tokens_are_auth_failed_in_status_without_a_retry_storm() {
    // A wrong app-level token: connect (auth.test) works, apps.connections.open does not.
    let app_fake = SlackFake::start();
    let app_ws = TestWorkspace::new(&plugin_toml(&app_fake, ""));
    let mut app_daemon = app_ws.run(&[("SLACK_BOT_TOKEN", BOT_TOKEN), ("SLACK_APP_TOKEN", "xapp-1-wrong")]);
    // A wrong bot token: connect fails.
    let bot_fake = SlackFake::start();
    let bot_ws = TestWorkspace::new(&plugin_toml(&bot_fake, ""));
    let mut bot_daemon = bot_ws.run(&[("SLACK_BOT_TOKEN", "xoxb-wrong"), ("SLACK_APP_TOKEN", APP_TOKEN)]);

    let app_err = wait_for_or("auth-failed in kata status (app token)", WAIT, || app_ws.log(), || status_error(&app_ws));
    assert!(app_err.starts_with("failing auth-failed "), "{app_err}");
    assert!(app_err.contains("authentication failed") && app_err.contains("app_token") && app_err.contains("invalid_auth"), "{app_err}");
    let bot_err = wait_for_or("auth-failed in kata status (bot token)", WAIT, || bot_ws.log(), || status_error(&bot_ws));
    assert!(bot_err.starts_with("failing auth-failed ") && bot_err.contains("bot_token"), "{bot_err}");
    let (ok, human, _) = kata(app_ws.path(), &["status"]);
    assert!(ok && human.lines().any(|l| l.starts_with("slack") && l.contains("failing: auth-failed")), "{human}");

    // No retry storm: a refused token is retried no sooner than every 30 s.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(app_fake.requests("apps.connections.open"), 1, "{}", app_ws.log());
    assert!(bot_fake.requests("auth.test") <= 2, "auth.test asked {} times", bot_fake.requests("auth.test"));
    assert_eq!(app_fake.connections().0 + bot_fake.connections().0, 0);
    assert!(app_daemon.signal_and_wait("TERM").success());
    assert!(bot_daemon.signal_and_wait("TERM").success());
}

#[test]
fn slack_without_its_socket_grant_is_denied_naming_the_line() {
    let fake = SlackFake::start();
    let ws = TestWorkspace::new(&plugin_toml(&fake, ""));
    // Remove the socket host's grant line.
    let path = ws.path().join("kata.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(&format!("    \"{}\",\n", fake.socket_base()), "");
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
    assert!(line.contains(&format!("ws://127.0.0.1:{}", fake.ws_port)) && line.contains("[plugins.slack]"), "{line}");
    assert!(daemon.signal_and_wait("TERM").success());
    assert_eq!(fake.connections().0, 0, "nothing reached the socket host");
    let (ok, out, err) = kata(ws.path(), &["audit", "--plugin", "slack", "--json"]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let denied = rows.as_array().unwrap().iter().find(|r| r["verdict"] == "deny" && r["kind"] == "network").expect("a deny row");
    assert_eq!(denied["method"], "GET");
    assert!(denied["target"].as_str().unwrap().starts_with(&format!("ws://127.0.0.1:{}/link", fake.ws_port)), "{denied}");
}

#[test]
fn slack_events_api_over_the_webhook_listener() {
    let fake = SlackFake::start();
    let listen = format!("http://127.0.0.1:{}/slack/events", common::free_port());
    let ws = TestWorkspace::new(&events_toml(&fake, &listen, ""));
    let mut daemon = ws.run(&events_env());
    // Slack checks the Request URL first: the challenge comes back.
    let (status, body, challenge) = wait_for_or("the listener", WAIT, || ws.log(), || fake.verify_url(&listen));
    assert_eq!((status, body), (200, challenge));
    // A request without Slack's signature never reaches the plugin: the host
    // answers 401 (the signing secret stays with the host).
    let forged = json!({"type": "event_callback", "event_id": "Ev0FORGED", "event": {"type": "message", "channel": "D0ANN",
        "channel_type": "im", "user": "U0ANN", "text": "forged", "ts": "1700000000.000100"}});
    let r = reqwest::blocking::Client::new()
        .post(&listen)
        .header("x-slack-request-timestamp", "1700000000")
        .header("x-slack-signature", "v0=0000")
        .body(forged.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    fake.deliver_to(&listen);
    fake.say(Say::dm("D0ANN", "U0ANN", "hello events"));
    reply(&fake, &ws, "D0ANN", "hello events");
    let asked = fake.say(Say::channel(GROUP, "U0BOB", &format!("<@{BOT_USER}> events in a group")));
    assert_eq!(reply(&fake, &ws, GROUP, "events in a group").thread_ts.as_deref(), Some(asked.as_str()));
    settle(&fake, &ws);
    assert_eq!(fake.posts().len(), 2, "{:#?}", fake.posts());
    // Every request (two messages, an app_mention, the two posts coming back) answered 200 at once.
    let posts = fake.event_posts();
    assert_eq!(posts.len(), 5, "{posts:?}");
    assert!(posts.iter().all(|(_, retry, status)| *retry == 0 && *status == 200), "{posts:?}");
    assert!(daemon.signal_and_wait("TERM").success());
    assert!(inbox(&ws).iter().all(|r| r.4 != "forged"), "{:#?}", inbox(&ws));
}

#[test]
fn slack_approvals_are_answered_with_buttons_and_a_strangers_press_approves_nothing() {
    approvals_by_button(false);
}

/// The same over the Events API: with `interactivity = true` the app's
/// Interactivity Request URL is kata's listener, and presses arrive there as
/// signed forms.
#[test]
fn slack_events_api_approvals_are_answered_with_buttons_pressed_through_the_listener() {
    approvals_by_button(true);
}

fn approvals_by_button(events: bool) {
    use common::llm::{LlmServer, approval_toml, tool_script};
    const OWNER: &str = "U0OWNER";
    const OWNER_DM: &str = "D0OWNER";
    let fake = SlackFake::start();
    fake.add_channel(OWNER_DM, "im");
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let notes = tempfile::tempdir().unwrap();
    let ws = TestWorkspace::new("");
    let allow = format!("allow_from = [\"*\", \"{OWNER}\"]");
    let listen = format!("http://127.0.0.1:{}/slack/events", common::free_port());
    let channel = if events { events_toml(&fake, &listen, ", interactivity = true") } else { plugin_toml(&fake, "") };
    let toml = approval_toml(&llm, &format!("slack:{OWNER_DM}"), &channel.replace("allow_from = [\"*\"]", &allow), notes.path());
    std::fs::write(ws.path().join("kata.toml"), toml).unwrap();
    let tokens = if events { events_env() } else { env() };
    let mut daemon = ws.run(&[tokens[0], tokens[1], ("KATA_TEST_OPENAI_KEY", "sk-test-key-0123456789")]);
    let pending = || {
        wait_for_or(
            "a pending approval",
            WAIT,
            || ws.log(),
            || {
                let (ok, out, _) = kata(ws.path(), &["approvals", "--json"]);
                let list: serde_json::Value = serde_json::from_str(&out).ok()?;
                ok.then(|| list.as_array()?.first()?["id"].as_i64()).flatten()
            },
        )
    };
    let post_containing = |channel: &str, needle: &str| {
        wait_for_or(
            &format!("a post containing {needle:?} in {channel}"),
            WAIT,
            || ws.log(),
            || fake.posts().into_iter().find(|p| p.channel == channel && p.text.contains(needle) && !p.text.ends_with(" …")),
        )
    };
    let values = |p: &slack::Posted| -> Vec<String> {
        let blocks = p.blocks.clone().unwrap_or_default();
        let actions = blocks.as_array().and_then(|b| b.iter().find(|b| b["type"] == "actions")).cloned().unwrap_or_default();
        actions["elements"].as_array().into_iter().flatten().map(|e| e["value"].as_str().unwrap().to_string()).collect()
    };

    // Bob asks for a write: the request reaches the owner's DM with Approve / Deny buttons.
    if events {
        wait_for_or("the listener", WAIT, || ws.log(), || fake.verify_url(&listen));
        fake.deliver_to(&listen);
    } else {
        wait_for_or("a Socket Mode connection", WAIT, || ws.log(), || (fake.connections().1 == 1).then_some(()));
    }
    fake.say(Say::dm("D0BOB", "U0BOB", r#"call notes__write_note {"name":"a.txt","text":"approved by a button"}"#));
    let id = pending();
    let request = post_containing(OWNER_DM, &format!("Approval {id}"));
    assert_eq!(values(&request), [format!("yes {id}"), format!("no {id}")], "{request:?}");

    // A stranger's press is an ordinary message to the agent.
    fake.press("U0EVE", &request.ts, &format!("yes {id}"));
    post_containing(OWNER_DM, &format!("echo: yes {id}"));
    assert_eq!(pending(), id, "still waiting");
    assert!(!notes.path().join("a.txt").exists());

    // The owner's press approves: the tool runs and Bob gets its result.
    fake.press(OWNER, &request.ts, &format!("yes {id}"));
    post_containing(OWNER_DM, &format!("Approved {id}"));
    post_containing("D0BOB", "tool said: wrote /notes/a.txt");
    assert_eq!(std::fs::read_to_string(notes.path().join("a.txt")).unwrap(), "approved by a button");
    settle(&fake, &ws);
    assert!(daemon.signal_and_wait("TERM").success());
    let presses: Vec<Row> = inbox(&ws).into_iter().filter(|r| r.0.starts_with("act:")).collect();
    assert_eq!(presses.len(), 2, "each press stored once: {presses:#?}");
    assert!(presses.iter().all(|r| r.1 == OWNER_DM && r.4 == format!("yes {id}") && r.6), "{presses:#?}");
    if events {
        // Each press was answered 200 at once (Slack shows the person an error otherwise).
        let answered: Vec<_> = fake.event_posts().into_iter().filter(|(id, ..)| id.starts_with("press:")).collect();
        assert_eq!(answered.len(), 2, "{answered:?}");
        assert!(answered.iter().all(|(_, _, status)| *status == 200), "{answered:?}");
    }
}
