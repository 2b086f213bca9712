//! The walking skeleton end to end: the real Telegram plugin under the real
//! `kata run`, against telegram-test-api on loopback (with the Bot API
//! methods tests/servers/telegram/server.js adds: typing, reactions,
//! documents, validating edits and callback answers).
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use base64::Engine as _;
use common::llm::{LlmServer, approval_toml, tool_script};
use common::{TelegramServer, TestWorkspace, guest, kata, wait_for, wait_for_or};
use kata::host::latest::{Action, ChannelAction, Edit, Feature, OutboundAttachment, OutboundMessage, Reaction, Target};
use serde_json::{Value, json};

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
    let shown = || format!("the bot said {:?} in chat {chat}, want {want:?}; log:\n{}", texts(&tg.bot_messages(TOKEN, chat)), ws.log());
    let got = wait_for_or("the bot's replies", Duration::from_secs(60), shown, || {
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
    //    "Answered" as the database says it: a reply the emulator shows but
    //    kata has not yet recorded as sent would be sent again after a kill
    //    (at least once, see tests/durability.rs), which is not what this
    //    step checks.
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    wait_for_or(
        "every reply recorded as sent",
        Duration::from_secs(60),
        || ws.log(),
        || {
            let c = db.counts().ok()?;
            (c.inbox_new == 0 && c.outbox_pending == 0 && c.outbox_sent >= 8).then_some(())
        },
    );
    drop(db);
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
    // Also wait for "kata is running": before it kata's SIGTERM handler may
    // not be installed yet (the first poll can come earlier).
    let log = wait_for("a denial in the log", Duration::from_secs(30), || {
        let log = ws.log();
        (log.contains("denied") && log.contains("kata is running")).then_some(log)
    });
    assert!(log.contains(&format!("\"{}\"", tg.base())), "the denial names the entry to add:\n{log}");
    assert!(log.contains("[plugins.telegram]"), "{log}");
    let st = kata.signal_and_wait("TERM");
    assert!(st.success(), "kata run exits cleanly on SIGTERM: {st:?}\n{}", ws.log());
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

/// The owner's private chat, where approval requests go.
const OWNER: i64 = 42;

/// A workspace with the scripted model as agent, `[tools] mode = "ask"`
/// with requests sent to the owner's Telegram chat, the notes tools on
/// `notes`, and Telegram open to everyone ("*") with only the owner named
/// (so only the owner's answer counts).
fn approval_workspace(tg: &TelegramServer, llm: &LlmServer, notes: &std::path::Path) -> TestWorkspace {
    let ws = TestWorkspace::new("");
    let toml = approval_toml(llm, &format!("telegram:{OWNER}"), &tg.plugin_toml(&format!("allow_from = [\"*\", \"{OWNER}\"]")), notes);
    std::fs::write(ws.path().join("kata.toml"), toml).unwrap();
    ws
}

/// Wait for one pending approval and return its id.
fn pending_approval(ws: &TestWorkspace) -> i64 {
    wait_for_or(
        "a pending approval",
        Duration::from_secs(60),
        || ws.log(),
        || {
            let (ok, out, _) = kata(ws.path(), &["approvals", "--json"]);
            let list: Value = serde_json::from_str(&out).ok()?;
            ok.then(|| list.as_array()?.first()?["id"].as_i64()).flatten()
        },
    )
}

/// Wait for the bot's message in `chat` whose text contains `needle`, once
/// complete (a streamed reply is a draft ending in " …" until its last edit).
fn bot_message_containing(tg: &TelegramServer, chat: i64, needle: &str, ws: &TestWorkspace) -> Value {
    wait_for_or(
        &format!("a bot message containing {needle:?} in chat {chat}"),
        Duration::from_secs(60),
        || ws.log(),
        || tg.bot_messages(TOKEN, chat).into_iter().find(|m| m["text"].as_str().is_some_and(|t| t.contains(needle) && !t.ends_with(" …"))),
    )
}

/// The callback data of the inline keyboard under `message`.
fn buttons(message: &Value) -> Vec<String> {
    let rows = message["reply_markup"]["inline_keyboard"].as_array().cloned().unwrap_or_default();
    rows.iter().flat_map(|r| r.as_array().cloned().unwrap_or_default()).map(|b| b["callback_data"].as_str().unwrap().to_string()).collect()
}

#[test]
fn approvals_are_answered_with_inline_buttons_and_a_strangers_press_approves_nothing() {
    let tg = TelegramServer::start();
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let notes = tempfile::tempdir().unwrap();
    let ws = approval_workspace(&tg, &llm, notes.path());
    let mut daemon = ws.run(&[("TG_TEST_TOKEN", TOKEN), ("KATA_TEST_OPENAI_KEY", "sk-test-key-0123456789"), ("KATA_LOG", "info")]);

    // Bob (chat 7) asks for a write: the call waits, and the request reaches
    // the owner's chat with Approve / Deny buttons.
    tg.user_says(TOKEN, 7, r#"call notes__write_note {"name":"a.txt","text":"approved by a button"}"#);
    let id = pending_approval(&ws);
    let request = bot_message_containing(&tg, OWNER, &format!("Approval {id}"), &ws);
    assert_eq!(buttons(&request), [format!("yes {id}"), format!("no {id}")], "{request}");

    // A stranger presses Approve: it is an ordinary message to the agent.
    tg.user_presses(TOKEN, OWNER, 99, &request["message_id"], &format!("yes {id}"));
    bot_message_containing(&tg, OWNER, &format!("echo: yes {id}"), &ws);
    assert_eq!(pending_approval(&ws), id, "still waiting");
    assert!(!notes.path().join("a.txt").exists());

    // The owner presses Approve: the tool runs and Bob gets its result.
    tg.user_presses(TOKEN, OWNER, OWNER, &request["message_id"], &format!("yes {id}"));
    bot_message_containing(&tg, OWNER, &format!("Approved {id}"), &ws);
    bot_message_containing(&tg, 7, "tool said: wrote /notes/a.txt", &ws);
    assert_eq!(std::fs::read_to_string(notes.path().join("a.txt")).unwrap(), "approved by a button");

    // Another call; the owner presses Deny.
    tg.user_says(TOKEN, 7, r#"call notes__write_note {"name":"b.txt","text":"no"}"#);
    let second = pending_approval(&ws);
    let request = bot_message_containing(&tg, OWNER, &format!("Approval {second}"), &ws);
    assert_eq!(buttons(&request), [format!("yes {second}"), format!("no {second}")], "{request}");
    tg.user_presses(TOKEN, OWNER, OWNER, &request["message_id"], &format!("no {second}"));
    bot_message_containing(&tg, OWNER, &format!("Denied {second}"), &ws);
    let denied = bot_message_containing(&tg, 7, "refused", &ws);
    assert!(denied["text"].as_str().unwrap().contains("denied it"), "{denied}");
    assert!(!notes.path().join("b.txt").exists());

    // Every press was answered, so no client kept spinning.
    let answered: Vec<Value> =
        tg.bot_actions(TOKEN)["callbackAnswers"].as_array().unwrap().iter().map(|a| a["callback_query_id"].clone()).collect();
    assert_eq!(answered, [json!("1"), json!("2"), json!("3")]);

    // The audit log says who decided where, and whose press did not count.
    let (ok, out, err) = kata(ws.path(), &["audit", "--json"]);
    assert!(ok, "{err}");
    let audit: Vec<Value> =
        serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().iter().filter(|r| r["kind"] == "tool").cloned().collect();
    let rows: Vec<(&str, &str, &str)> =
        audit.iter().map(|r| (r["method"].as_str().unwrap(), r["verdict"].as_str().unwrap(), r["policy"].as_str().unwrap())).collect();
    let by = |verb: &str, id: i64| format!("{verb} by telegram:{OWNER} in telegram:{OWNER} (approval {id})");
    assert_eq!(rows[1..], [("ask", "allow", by("approved", id).as_str()), ("ask", "deny", by("denied", second).as_str())]);
    assert_eq!(rows[0].0, "approval-answer");
    assert!(audit[0]["detail"].as_str().unwrap().contains(&format!("from telegram:99 in telegram:{OWNER} ignored")), "{audit:?}");
    assert!(daemon.signal_and_wait("TERM").success());
}

/// The `[plugins.telegram]` lines for loading the plugin through kata_host
/// in `dir`, with the token in a secret file there.
fn host_policy(tg: &TelegramServer, dir: &std::path::Path) -> String {
    std::fs::write(dir.join("token.txt"), TOKEN).unwrap();
    let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    std::fs::set_permissions(dir.join("token.txt"), private).unwrap();
    format!(
        "network = [\"{base}/bot*\"]\nsecrets = {{ bot_token = \"file:token.txt\" }}\nconfig = {{ api_base = \"{base}\", poll_timeout_s = 0 }}",
        base = tg.base()
    )
}

fn outbound(text: &str, reply_to: Option<&str>) -> OutboundMessage {
    OutboundMessage {
        conversation: "5".into(),
        thread: None,
        reply_to: reply_to.map(Into::into),
        text: text.into(),
        idempotency_key: format!("key-{text:.8}"),
        attachments: vec![],
        actions: vec![],
    }
}

fn file(name: &str, mime: &str, data: &[u8]) -> OutboundAttachment {
    OutboundAttachment { name: name.into(), mime_type: mime.into(), data: data.to_vec() }
}

/// The message id part of a receipt `<chat_id>:<message_id>`.
fn message_id(receipt: &str) -> i64 {
    receipt.strip_prefix("5:").unwrap().parse().unwrap()
}

#[test]
fn the_plugin_shows_typing_edits_reacts_and_sends_files_and_buttons() {
    let tg = TelegramServer::start();
    tg.user_says(TOKEN, 5, "hello");
    let dir = tempfile::tempdir().unwrap();
    let lines = host_policy(&tg, dir.path());
    let report: Vec<u8> = (0..=255u8).chain(b"\r\n--kata-boundary\r\n".iter().copied()).collect();
    let long = "x".repeat(1500);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (hello, draft, doc, both) = rt.block_on(async {
        let db = kata::store::Db::open(&dir.path().join("kata.db")).unwrap();
        let engine = kata::engine::Engine::new(None).unwrap();
        let plugin = common::load_plugin(&engine, &db, "telegram", &guest("telegram"), &lines, dir.path()).unwrap();
        let mut ch = plugin.instantiate().await.unwrap();
        ch.connect().await.unwrap();
        let features = ch.features().await.unwrap();
        assert_eq!(features, [Feature::Typing, Feature::Edit, Feature::Reactions, Feature::Buttons, Feature::Attachments]);
        let polled = ch.poll(None).await.unwrap();
        let hello = polled.messages[0].clone();

        // Typing, and a reaction on the received message.
        ch.act(&ChannelAction::Typing(Target { conversation: "5".into(), thread: None })).await.unwrap();
        let react = |message_id: &str, emoji: &str| {
            ChannelAction::React(Reaction { conversation: "5".into(), message_id: message_id.into(), emoji: emoji.into() })
        };
        ch.act(&react(&hello.id, "👀")).await.unwrap();
        // An emoji outside Telegram's set is refused before asking Telegram;
        // a message that does not exist is Telegram's 400, with its words.
        let err = ch.act(&react(&hello.id, "🦀")).await.unwrap_err().to_string();
        assert!(err.contains("\"🦀\" is not one of them"), "{err}");
        let err = ch.act(&react("5:999", "👍")).await.unwrap_err().to_string();
        assert!(err.contains("Bad Request: message to react not found"), "{err}");

        // A draft grows by edits of the sent message; an edit that changes
        // nothing is no failure.
        let draft = ch.send(&outbound("draft", Some(&hello.id))).await.unwrap();
        let edit = |id: &str, text: &str| ChannelAction::Edit(Edit { conversation: "5".into(), message_id: id.into(), text: text.into() });
        ch.act(&edit(&draft.id, "draft, grown")).await.unwrap();
        ch.act(&edit(&draft.id, "draft, grown")).await.unwrap();
        let err = ch.act(&edit("5:999", "x")).await.unwrap_err().to_string();
        assert!(err.contains("Bad Request: message to edit not found"), "{err}");

        // A file with buttons carries the text as its caption; editing it
        // edits the caption.
        let mut with_file = outbound("the report", Some(&hello.id));
        with_file.attachments = vec![file("report.bin", "application/octet-stream", &report)];
        with_file.actions =
            vec![Action { id: "yes 1".into(), label: "Approve".into() }, Action { id: "no 1".into(), label: "Deny".into() }];
        let doc = ch.send(&with_file).await.unwrap();
        ch.act(&edit(&doc.id, "the report, final")).await.unwrap();

        // A text too long for a caption goes first, on its own.
        let mut long_text = outbound(&long, None);
        long_text.attachments = vec![file("notes.txt", "text/plain", b"some notes")];
        let both = ch.send(&long_text).await.unwrap();

        // A text over Telegram's 4096 characters arrives as two messages.
        let longest = format!("{}\n{}", "a".repeat(4000), "b".repeat(200));
        let split = ch.send(&outbound(&longest, None)).await.unwrap();
        assert_eq!(message_id(&split.id), message_id(&both.id) + 2, "the receipt names the first part");

        // The button press arrives like typing its id, from the presser.
        tokio::task::block_in_place(|| tg.user_presses(TOKEN, 5, 5, &json!(message_id(&doc.id)), "yes 1"));
        let pressed = ch.poll(polled.cursor.as_deref()).await.unwrap();
        let m = &pressed.messages[0];
        assert_eq!((m.id.as_str(), m.text.as_str(), m.sender.as_str(), m.conversation.as_str()), ("cb:1", "yes 1", "5", "5"));
        assert!(m.mentioned);
        (hello, draft, doc, both)
    });
    drop(rt);

    let actions = tg.bot_actions(TOKEN);
    let pick = |list: &str, keys: &[&str]| -> Vec<Value> {
        actions[list].as_array().unwrap().iter().map(|a| keys.iter().map(|k| (k.to_string(), a[*k].clone())).collect()).collect()
    };
    assert_eq!(pick("chatActions", &["chat_id", "action"]), [json!({"chat_id": 5, "action": "typing"})]);
    let hello_id = message_id(&hello.id);
    assert_eq!(
        pick("reactions", &["chat_id", "message_id", "reaction"]),
        [json!({"chat_id": 5, "message_id": hello_id, "reaction": [{"type": "emoji", "emoji": "👀"}]})]
    );
    assert_eq!(
        pick("edits", &["message_id", "text", "caption"]),
        [
            json!({"message_id": message_id(&draft.id), "text": "draft, grown", "caption": null}),
            json!({"message_id": message_id(&doc.id), "text": null, "caption": "the report, final"}),
        ]
    );
    let docs = actions["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert_eq!((docs[0]["message_id"].as_i64(), &docs[0]["caption"]), (Some(message_id(&doc.id)), &json!("the report")));
    assert_eq!((&docs[0]["file_name"], &docs[0]["reply_to_message_id"]), (&json!("report.bin"), &json!(hello_id)));
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(docs[0]["data_base64"].as_str().unwrap()).unwrap(), report);
    assert_eq!(docs[0]["reply_markup"]["inline_keyboard"][0][1], json!({"text": "Deny", "callback_data": "no 1"}));
    assert_eq!((&docs[1]["file_name"], &docs[1]["caption"]), (&json!("notes.txt"), &Value::Null));
    assert_eq!(pick("callbackAnswers", &["callback_query_id"]), [json!({"callback_query_id": "1"})]);

    // The chat as the person sees it: the draft once, as edited; the long
    // text before its file; the longest text in two messages.
    let chat = tg.bot_messages(TOKEN, 5);
    let shown: Vec<(i64, Option<&str>)> = chat.iter().map(|m| (m["message_id"].as_i64().unwrap(), m["text"].as_str())).collect();
    let both_id = message_id(&both.id);
    assert_eq!(
        shown,
        [
            (message_id(&draft.id), Some("draft, grown")),
            (message_id(&doc.id), None),
            (both_id, Some(long.as_str())),
            (both_id + 1, None),
            (both_id + 2, Some("a".repeat(4000).as_str())),
            (both_id + 3, Some("b".repeat(200).as_str())),
        ]
    );
    assert_eq!(chat[0]["reply_to_message_id"], hello_id);
}

#[test]
fn a_send_of_several_requests_retried_after_a_rate_limit_posts_each_part_once() {
    let tg = TelegramServer::start();
    tg.user_says(TOKEN, 5, "hello");
    let dir = tempfile::tempdir().unwrap();
    let lines = host_policy(&tg, dir.path());
    // A text too long for a caption and two files: three requests. Telegram
    // rate-limits the second file.
    let mut msg = outbound(&"y".repeat(1100), None);
    msg.attachments = vec![file("a.txt", "text/plain", b"first"), file("b.txt", "text/plain", b"second")];
    tg.rate_limit_after(TOKEN, "sendDocument", 1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (first, retried) = rt.block_on(async {
        let db = kata::store::Db::open(&dir.path().join("kata.db")).unwrap();
        let engine = kata::engine::Engine::new(None).unwrap();
        let plugin = common::load_plugin(&engine, &db, "telegram", &guest("telegram"), &lines, dir.path()).unwrap();
        let mut ch = plugin.instantiate().await.unwrap();
        ch.connect().await.unwrap();
        let first = ch.send(&msg).await.unwrap_err();
        // The retry (same outbox key) runs in a fresh instance, as the host may do.
        let mut again = plugin.instantiate().await.unwrap();
        again.connect().await.unwrap();
        (first, again.send(&msg).await.unwrap())
    });
    drop(rt);
    assert!(
        matches!(first, kata::plugin::CallError::Channel(kata::host::latest::ChannelError::RateLimited(1000))),
        "429 with retry_after 1 is rate-limited for 1 s: {first:?}"
    );
    let chat = tg.bot_messages(TOKEN, 5);
    let shown: Vec<(Option<&str>, Option<&str>)> =
        chat.iter().map(|m| (m["text"].as_str().map(|t| &t[..1]), m["document"]["file_name"].as_str())).collect();
    assert_eq!(shown, [(Some("y"), None), (None, Some("a.txt")), (None, Some("b.txt"))], "each part once: {chat:#?}");
    assert_eq!(retried.id, format!("5:{}", chat[0]["message_id"]), "the receipt names the message with the text");
}
