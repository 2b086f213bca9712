//! Service plugins in the real daemon: a service that fetches from a loopback
//! HTTP server it is granted and emits a message per tick, whose events the
//! agent answers in the Telegram conversation named by `deliver_to` (through
//! telegram-test-api); next to it the same service without the network grant
//! (denied, like a channel would be), one that traps on every tick (restarted
//! with backoff) and one that refuses to start — while the Telegram channel
//! keeps delivering.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{FileServer, TelegramServer, TestWorkspace, guest, wait_for};

const TOKEN: &str = "123456:TEST-TOKEN-kata";

fn texts(tg: &TelegramServer, chat: i64) -> Vec<String> {
    tg.bot_messages(TOKEN, chat).iter().map(|m| m["text"].as_str().unwrap_or_default().to_string()).collect()
}

#[test]
fn services_emit_through_the_sandbox_and_replies_reach_the_channel() {
    let tg = TelegramServer::start();
    let news = FileServer::start(b"headline: kata runs services".to_vec());
    let svc = guest("guest-service");
    let url = format!("http://127.0.0.1:{}/news", news.port);
    let ws = TestWorkspace::new(&format!(
        r#"{telegram}
[plugins.feed]
path = "{svc}"
network = ["http://127.0.0.1:{port}/news"]
config = {{ url = "{url}", every_ms = "300" }}
deliver_to = "telegram:555"

[plugins.nonet]
path = "{svc}"
config = {{ url = "{url}", every_ms = "300" }}
deliver_to = "telegram:556"

[plugins.crashy]
path = "{svc}"
config = {{ url = "{url}", trap = "tick" }}
deliver_to = "telegram:557"

[plugins.refuser]
path = "{svc}"
config = {{ url = "{url}", trap = "start" }}
deliver_to = "telegram:558"
"#,
        telegram = tg.plugin_toml(r#"allow_from = ["42"]"#),
        svc = svc.display(),
        port = news.port,
    ));
    let mut daemon = ws.run(&[("TG_TEST_TOKEN", TOKEN)]);

    // The granted service's events are answered in chat 555 (the echo agent
    // repeats them), tick after tick; senders there were never paired.
    wait_for("three answered ticks in chat 555", Duration::from_secs(60), || {
        (texts(&tg, 555).iter().filter(|t| *t == "fetched: headline: kata runs services").count() >= 3).then_some(())
    });
    assert!(texts(&tg, 555).iter().all(|t| t == "fetched: headline: kata runs services"), "{:?}", texts(&tg, 555));
    // The same code without the grant is refused by the policy, like a channel.
    let denied = wait_for("the ungranted fetch's report in chat 556", Duration::from_secs(60), || texts(&tg, 556).into_iter().next());
    assert!(denied.starts_with("fetch failed") && denied.contains("Denied"), "{denied}");
    // The trapping service is restarted with backoff, more than once...
    let log = wait_for("crashy restarted twice", Duration::from_secs(60), || {
        let log = ws.log();
        let restarts = log.lines().filter(|l| l.contains("service crashy: trapped") && l.contains("restarting in")).count();
        (restarts >= 2).then_some(log)
    });
    assert!(log.lines().filter(|l| l.contains("plugin=crashy") && l.contains("service started")).count() >= 2, "{log}");
    // ...one that refuses to start says why and stays stopped...
    assert!(log.contains("service refuser refused to start: refusing to start"), "{log}");
    // ...and the channel keeps delivering meanwhile.
    tg.user_says(TOKEN, 42, "still there?");
    wait_for("the channel's own reply", Duration::from_secs(60), || texts(&tg, 42).contains(&"still there?".to_string()).then_some(()));
    assert!(texts(&tg, 557).is_empty() && texts(&tg, 558).is_empty());
    // `kata status` shows the services next to the channel.
    let (ok, out, err) = common::kata(ws.path(), &["status", "--json"]);
    assert!(ok, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    let health = |name: &str| st["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).map(|p| p["health"].clone()).unwrap();
    assert!(health("crashy")["restarts"].as_u64().unwrap() >= 1, "{st:#}");
    assert!(health("crashy")["last_error"].as_str().unwrap().contains("trapped"), "{st:#}");
    assert!(health("feed")["received"].as_u64().unwrap() >= 3, "{st:#}");
    assert!(health("refuser")["last_error"].as_str().unwrap().contains("refused to start"), "{st:#}");

    // The events are in the inbox under the service's name, marked as its.
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    assert!(db.plugin_activity("feed").unwrap().received >= 3);
    assert_eq!(db.pairings().unwrap().len(), 0, "no pairing for service events");

    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    assert!(ws.log().contains("guest-service stopping"), "stop() is called at shutdown:\n{}", ws.log());
}
