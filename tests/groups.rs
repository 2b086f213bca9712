//! Group conversations through the real daemon and the real Telegram plugin
//! against telegram-test-api: only a granted group reaches the agent, only
//! where the message mentions the bot (require_mention, the default), nobody
//! in a group is sent a pairing code, and direct messages keep allow_from and
//! pairing as before.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{TelegramServer, TestWorkspace, kata, wait_for};

const TOKEN: &str = "123456:TEST-TOKEN-groups";
/// The bot's username in telegram-test-api's `getMe`.
const BOT: &str = "TestNameBot";

/// A user (`from`) writes `text` in group `chat`; `mention` adds a Telegram
/// `mention` entity for `@TestNameBot` at the start of the text.
fn group_says(tg: &TelegramServer, chat: i64, from: i64, text: &str, mention: bool) {
    let mut body = serde_json::json!({
        "botToken": TOKEN,
        "from": {"id": from, "first_name": "Member", "username": format!("member{from}"), "is_bot": false},
        "chat": {"id": chat, "title": "A group", "type": "supergroup"},
        "date": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        "text": text,
    });
    if mention {
        body["entities"] = serde_json::json!([{"type": "mention", "offset": 0, "length": BOT.len() + 1}]);
    }
    let r = reqwest::blocking::Client::new().post(format!("{}/sendMessage", tg.base())).json(&body).send().unwrap();
    assert!(r.status().is_success(), "emulator refused a group message: {}", r.status());
}

fn texts(tg: &TelegramServer, chat: i64) -> Vec<String> {
    tg.bot_messages(TOKEN, chat).iter().map(|m| m["text"].as_str().unwrap_or_default().to_string()).collect()
}

#[test]
fn groups_need_a_grant_and_a_mention_and_never_get_pairing_codes() {
    let tg = TelegramServer::start();
    let ws = TestWorkspace::new(&tg.plugin_toml("allow_from = [\"7\"]\ngroups = [\"-100123\"]"));
    let (granted, other) = (-100123, -100999);
    group_says(&tg, other, 7, &format!("@{BOT} from an allowed user in an ungranted group"), true);
    group_says(&tg, other, 8, &format!("@{BOT} from a stranger in an ungranted group"), true);
    group_says(&tg, granted, 7, "chatter that does not address the bot", false);
    group_says(&tg, granted, 8, &format!("@{BOT} hello from a stranger in the granted group"), true);
    tg.user_says(TOKEN, 9, "a stranger writes directly");
    tg.user_says(TOKEN, 7, "the owner writes directly");

    let mut daemon = ws.run(&[("TG_TEST_TOKEN", TOKEN)]);
    wait_for("the reply to the owner's direct message", Duration::from_secs(60), || {
        texts(&tg, 7).contains(&"the owner writes directly".to_string()).then_some(())
    });
    // Sessions run concurrently: the group's turn may finish after the
    // owner's. Wait until every message was decided and every reply sent.
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    wait_for("every message to be handled and every reply sent", Duration::from_secs(60), || {
        let c = db.counts().ok()?;
        (c.inbox_new == 0 && c.outbox_pending == 0 && !texts(&tg, granted).is_empty()).then_some(())
    });
    // The granted group got exactly the answer to the message that mentioned the bot.
    assert_eq!(texts(&tg, granted), [format!("@{BOT} hello from a stranger in the granted group")], "{}", ws.log());
    // The ungranted group got nothing: no answer, no pairing code.
    assert!(texts(&tg, other).is_empty(), "{:?}", texts(&tg, other));
    // A stranger's direct message still gets a pairing code.
    let dm = wait_for("the stranger's pairing code", Duration::from_secs(30), || texts(&tg, 9).first().cloned());
    assert!(dm.contains("pairing code"), "{dm}");
    assert!(daemon.signal_and_wait("TERM").success());

    // Only the direct stranger is waiting for approval; nobody from a group.
    let (ok, out, err) = kata(ws.path(), &["pair", "list", "--json"]);
    assert!(ok, "{err}");
    let pairings: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(pairings.len(), 1, "{pairings:#?}");
    assert_eq!(pairings[0]["sender"], "9");

    // Every group message was stored (nothing is lost), marked as a group
    // message, with the mention as the plugin reported it.
    let conn = rusqlite::Connection::open(ws.path().join(".kata/kata.db")).unwrap();
    let mut stmt = conn.prepare("SELECT conversation, is_group, mentioned FROM inbox ORDER BY id").unwrap();
    let rows: Vec<(String, bool, bool)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap();
    let groups: Vec<&(String, bool, bool)> = rows.iter().filter(|r| r.1).collect();
    assert_eq!(groups.len(), 4, "{rows:?}");
    assert_eq!(groups.iter().filter(|r| r.2).count(), 3, "{rows:?}");

    // The log says, once, which line would let the ungranted group in.
    let log = ws.log();
    let hint = format!("add groups = [\"{other}\"] under [plugins.telegram]");
    assert_eq!(log.matches(&hint).count(), 1, "{log}");

    // `kata policy explain` shows the rule.
    let (ok, out, _) = kata(ws.path(), &["policy", "explain", "telegram"]);
    assert!(ok && out.contains("groups: -100123; only messages that mention or reply to the agent; no pairing in groups"), "{out}");
    assert!(out.contains("direct: 7 (allow_from), others get a pairing code"), "{out}");
}
