//! The reminders tools plugin (plugins/reminders) through the real `kata
//! run`: the scripted model calls `remind`, the task is in `kata task list`
//! as the plugin's, it fires a few seconds later and the reminder reaches the
//! conversation; list, cancel, the `max_tasks` limit and the missing grant.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::llm::{ChatServer, LlmServer, tool_script};
use common::{TestWorkspace, guest, kata, wait_for_or};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn workspace(llm: &LlmServer, chat: &ChatServer) -> TestWorkspace {
    let ws = TestWorkspace::new("");
    let toml = format!(
        r#"
[agent]
backend = "openai"
base_url = "{llm}"
model = "test-model"

[tools]
mode = "allow-all"

[plugins.chat]
path = "{chat_wasm}"
network = ["{chat}/"]
config = {{ api_base = "{chat}", poll_interval = "50ms" }}
allow_from = ["*"]

[plugins.reminders]
path = "{reminders}"
scheduler = {{ max_tasks = 2 }}

[plugins.ungranted]
path = "{reminders}"
"#,
        llm = llm.base_url(),
        chat_wasm = guest("guest-chat").display(),
        chat = chat.base(),
        reminders = guest("reminders").display(),
    );
    std::fs::write(ws.path().join("kata.toml"), toml).unwrap();
    ws
}

fn reply(chat: &ChatServer, n: usize, ws: &TestWorkspace) -> String {
    wait_for_or(&format!("reply {n}"), WAIT, || ws.log(), || chat.sent().get(n - 1).map(|m| m["text"].as_str().unwrap().to_string()))
}

fn ask(chat: &ChatServer, ws: &TestWorkspace, text: &str) -> String {
    let n = chat.sent().len() + 1;
    chat.say("c1", None, "ann", text);
    reply(chat, n, ws)
}

fn tasks(ws: &TestWorkspace) -> Vec<Value> {
    let (ok, out, err) = kata(ws.path(), &["task", "list", "--json"]);
    assert!(ok, "{err}");
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

#[test]
fn the_agent_sets_a_reminder_that_fires_in_the_conversation() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let ws = workspace(&llm, &chat);
    let _daemon = ws.run(&[("KATA_LOG", "info")]);

    let set = ask(&chat, &ws, r#"call reminders__remind {"when":"in 3 seconds","text":"stretch your legs"}"#);
    assert!(set.starts_with("tool said: Reminder 1 set for ") && set.ends_with(": stretch your legs"), "{set}");
    let t = tasks(&ws);
    assert_eq!(t.len(), 1, "{t:#?}");
    assert_eq!((t[0]["owner"].as_str(), t[0]["prompt"].as_str()), (Some("reminders"), Some("Reminder: stretch your legs")));
    assert_eq!((t[0]["target"]["plugin"].as_str(), t[0]["target"]["conversation"].as_str()), (Some("chat"), Some("c1")));

    // A few seconds later the agent is handed the reminder in c1 and answers there.
    let fired = reply(&chat, 2, &ws);
    assert_eq!(fired, "echo: Reminder: stretch your legs");
    assert_eq!(chat.sent()[1]["conversation"].as_str(), Some("c1"), "{:?}", chat.sent()[1]);
    assert_eq!(ask(&chat, &ws, r#"call reminders__list_reminders {}"#), "tool said: No reminders.");

    // List and cancel; the plugin's own limit; another plugin sees none of them.
    let later = ask(&chat, &ws, r#"call reminders__remind {"when":"tomorrow at 9","text":"call the bank"}"#);
    let id: i64 = later.strip_prefix("tool said: Reminder ").unwrap().split(' ').next().unwrap().parse().unwrap();
    let listed = ask(&chat, &ws, r#"call reminders__list_reminders {}"#);
    assert!(listed.starts_with(&format!("tool said: {id}: ")) && listed.ends_with("— call the bank"), "{listed}");
    ask(&chat, &ws, r#"call reminders__remind {"when":"in 2 days","text":"two"}"#);
    let full = ask(&chat, &ws, r#"call reminders__remind {"when":"in 3 days","text":"three"}"#);
    assert_eq!(full, "tool said: error: the tool failed: there are already 2 reminders; cancel one first");
    assert_eq!(
        ask(&chat, &ws, &format!(r#"call reminders__cancel_reminder {{"id":{id}}}"#)),
        format!("tool said: Reminder {id} cancelled.")
    );
    let again = ask(&chat, &ws, &format!(r#"call reminders__cancel_reminder {{"id":{id}}}"#));
    assert_eq!(again, format!("tool said: error: the tool failed: there is no reminder {id}"));
    assert_eq!(tasks(&ws).iter().filter(|t| t["next_run_ms"].is_number()).count(), 1);

    // Without the grant: refused, naming the line to add.
    let refused = ask(&chat, &ws, r#"call ungranted__remind {"when":"in 1 hour","text":"x"}"#);
    assert!(
        refused.starts_with("tool said: error: the tool failed: reminders are not allowed here:")
            && refused.contains("scheduler = { max_tasks = 20 }"),
        "{refused}"
    );
    assert_eq!(
        ask(&chat, &ws, r#"call ungranted__list_reminders {}"#),
        "tool said: error: the tool failed: reminders are not allowed here: add `scheduler = { max_tasks = 20 }` under [plugins.ungranted] in kata.toml"
    );

    let (ok, out, err) = kata(ws.path(), &["audit", "--json"]);
    assert!(ok, "{err}");
    let rows: Vec<Value> =
        serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().iter().filter(|r| r["kind"] == "scheduler").cloned().collect();
    let verdicts: Vec<&str> = rows.iter().map(|r| r["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["allow", "allow", "allow", "deny", "allow"], "{rows:#?}");
    assert!(rows[0]["policy"].as_str().unwrap().starts_with("[plugins.reminders] scheduler = { max_tasks = 2 }"), "{}", rows[0]);
}
