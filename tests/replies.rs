//! Rich replies through the real `kata run` (WIT 0.1.3 channel features):
//! on a chat channel that lists typing, edit, reactions, buttons and
//! attachments (tests/guests/guest-chat with `config.features`), a queued
//! message gets the acknowledgement reaction, the turn shows the typing
//! indicator, the streamed reply (the scripted OpenAI-compatible server,
//! writing its events slowly) appears as one draft message edited into the
//! final text, and a note the notes plugin hands back arrives as a file; on
//! the same channel without features everything degrades: one final
//! message, the file as a line, no actions. And the same through the real
//! Telegram plugin against the Telegram test server (typing, reaction,
//! draft edits and the document as the Bot API records them).
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::llm::{ChatServer, LlmServer, tool_script};
use common::{TelegramServer, TestWorkspace, guest, wait_for_or};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const NOTE: &str = "# Todo\n- ship kata\n";

/// The scripted model, the chat channel listing `features`, and the notes plugin over `notes`.
fn workspace(llm: &LlmServer, chat: &ChatServer, features: &str, notes: &Path) -> TestWorkspace {
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
config = {{ api_base = "{chat}", poll_interval = "50ms", features = "{features}" }}
allow_from = ["*"]

[plugins.notes]
path = "{notes_wasm}"
files = [{{ host = "{notes}", guest = "/notes", mode = "ro" }}]
limits = {{ max_message = "1KiB" }}
"#,
        llm = llm.base_url(),
        chat_wasm = guest("guest-chat").display(),
        chat = chat.base(),
        notes_wasm = guest("notes").display(),
        notes = notes.display(),
    );
    std::fs::write(ws.path().join("kata.toml"), toml).unwrap();
    ws
}

/// `[agent]` on the scripted model, `[tools]` letting every call run, `[plugins.notes]` over `notes`.
fn agent_and_notes(llm: &LlmServer, notes: &Path) -> String {
    format!(
        r#"
[agent]
backend = "openai"
base_url = "{llm}"
model = "test-model"

[tools]
mode = "allow-all"

[plugins.notes]
path = "{notes_wasm}"
files = [{{ host = "{notes}", guest = "/notes", mode = "ro" }}]
"#,
        llm = llm.base_url(),
        notes_wasm = guest("notes").display(),
        notes = notes.display(),
    )
}

fn notes_dir(root: &Path) -> PathBuf {
    let d = root.join("notes");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("todo.md"), NOTE).unwrap();
    std::fs::write(d.join("big.md"), "x".repeat(2000)).unwrap();
    d
}

/// What the scripted model answers once the tool handed the note back.
fn final_text() -> String {
    let result = json!({"attachments": [{"path": "/notes/todo.md", "name": "todo.md", "mime_type": "text/markdown"}],
        "text": format!("todo.md ({} bytes) is attached to your reply.", NOTE.len())});
    format!("tool said: {result}")
}

const ASK: &str = r#"call notes__attach {"path":"todo.md"}"#;
const TOKEN: &str = "123456:TEST-TOKEN-kata";

#[test]
fn a_channel_with_features_gets_the_ack_typing_a_draft_edited_into_the_reply_and_the_file() {
    // Each event of a streamed answer 100 ms after the last: the final
    // answer (about 30 events) streams for some seconds, long enough for drafts.
    let llm = LlmServer::start_paced(tool_script(), Duration::ZERO, Duration::from_millis(100));
    let chat = ChatServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&llm, &chat, "typing,edit,reactions,buttons,attachments", &notes_dir(tmp.path()));
    let _daemon = ws.run(&[("KATA_LOG", "info")]);
    chat.say("c1", None, "ann", ASK);
    let want = final_text();
    // The reply: the draft, edited into the whole text, then the file in a message of its own.
    let sent = wait_for_or(
        "the reply and its file",
        WAIT,
        || ws.log(),
        || {
            let sent = chat.sent();
            (sent.len() >= 2 && sent[0]["text"] == want.as_str()).then_some(sent)
        },
    );
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let draft = &sent[0];
    assert_eq!((draft["conversation"].as_str(), draft["reply_to"].as_str()), (Some("c1"), Some("1")), "{draft}");
    assert!(draft["key"].as_str().unwrap().starts_with("draft-"), "{draft}");
    assert!(draft["attachments"].as_array().unwrap().is_empty());
    let file = &sent[1];
    assert_eq!(file["text"], "", "the file goes on its own: {file}");
    assert_eq!(file["attachments"], json!([{"name": "todo.md", "mime_type": "text/markdown", "size": NOTE.len(), "text": NOTE}]));

    let acts = chat.acts();
    // The acknowledgement comes first: it is asked for as the message is queued.
    assert_eq!(acts[0], json!({"kind": "react", "conversation": "c1", "message_id": "1", "emoji": "👀"}), "{acts:#?}");
    assert!(acts.iter().any(|a| a == &json!({"kind": "typing", "conversation": "c1", "thread": null})), "{acts:#?}");
    let edits: Vec<&str> = acts.iter().filter(|a| a["kind"] == "edit").map(|a| a["text"].as_str().unwrap()).collect();
    // At least one edit while it grew (marked as unfinished), the last one the whole reply.
    assert!(edits.len() >= 2, "{edits:#?}");
    assert!(edits[..edits.len() - 1].iter().all(|e| e.ends_with(" …") && want.starts_with(e.trim_end_matches(" …"))), "{edits:#?}");
    assert_eq!(*edits.last().unwrap(), want);
    assert!(acts.iter().filter(|a| a["kind"] == "edit").all(|a| a["message_id"] == draft["id"]));
    let (ok, status, _) = common::kata(ws.path(), &["status"]);
    assert!(ok && status.contains("chat           features: typing, edit, reactions, buttons, attachments\n"), "{status}");
}

#[test]
fn a_channel_without_features_gets_one_final_message_with_the_file_as_a_line() {
    let llm = LlmServer::start_paced(tool_script(), Duration::ZERO, Duration::from_millis(20));
    let chat = ChatServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&llm, &chat, "", &notes_dir(tmp.path()));
    let _daemon = ws.run(&[("KATA_LOG", "info")]);
    chat.say("c1", None, "ann", ASK);
    let sent = wait_for_or("the reply", WAIT, || ws.log(), || chat.sent().first().cloned());
    let want = format!("{}\n\n[file not sent: todo.md (text/markdown, {} bytes)]", final_text(), NOTE.len());
    assert_eq!(sent["text"], want.as_str());
    assert_eq!((sent["reply_to"].as_str(), sent["key"].as_str()), (Some("1"), Some("inbox-1")));
    assert!(sent["attachments"].as_array().unwrap().is_empty() && sent.get("edits").is_none(), "{sent}");
    // A file over the tool plugin's limits.max_message is not attached: the
    // model is told (and says so here), and the audit log has a row.
    chat.say("c1", None, "ann", r#"call notes__attach {"path":"big.md"}"#);
    let second = wait_for_or("the second reply", WAIT, || ws.log(), || chat.sent().get(1).cloned());
    let second = second["text"].as_str().unwrap();
    assert!(second.ends_with("(not attached: /notes/big.md: it has 2000 bytes, over limits.max_message (1024 bytes))"), "{second}");
    assert!(!second.contains("[file not sent"), "{second}");
    let (ok, out, err) = common::kata(ws.path(), &["audit", "--json"]);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    let refused: Vec<&Value> = rows.as_array().unwrap().iter().filter(|r| r["method"] == "attachment").collect();
    assert_eq!(refused.len(), 1, "{rows:#}");
    assert_eq!((refused[0]["kind"].as_str(), refused[0]["verdict"].as_str()), (Some("tool"), Some("deny")));
    assert_eq!(refused[0]["target"], "notes.attach /notes/big.md");
    assert_eq!(refused[0]["policy"], "[plugins.notes] limits = { max_message = \"2KiB\" }", "what lets it through");
    // Nothing else was sent or done.
    assert_eq!(chat.sent().len(), 2);
    assert_eq!(chat.acts(), Vec::<Value>::new());
    let (ok, status, _) = common::kata(ws.path(), &["status"]);
    assert!(ok && status.contains("chat           features: none (text only)\n"), "{status}");
}

#[test]
fn telegram_shows_the_ack_typing_and_a_draft_and_sends_the_file_as_a_document() {
    let llm = LlmServer::start_paced(tool_script(), Duration::ZERO, Duration::from_millis(100));
    let tg = TelegramServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let notes = notes_dir(tmp.path());
    let ws = TestWorkspace::new("");
    let toml = format!("{}{}", agent_and_notes(&llm, &notes), tg.plugin_toml("allow_from = [\"*\"]"));
    std::fs::write(ws.path().join("kata.toml"), toml).unwrap();
    let _daemon = ws.run(&[("TG_TEST_TOKEN", TOKEN), ("KATA_LOG", "info")]);
    tg.user_says(TOKEN, 5, ASK);
    let want = final_text();
    let actions = wait_for_or(
        "the reply edited in and the document",
        WAIT,
        || ws.log(),
        || {
            let a = tg.bot_actions(TOKEN);
            let last_edit = a["edits"].as_array()?.last()?["text"].as_str()?.to_string();
            (last_edit == want && !a["documents"].as_array()?.is_empty()).then_some(a)
        },
    );
    let reactions = actions["reactions"].as_array().unwrap();
    assert_eq!(reactions.len(), 1, "{actions:#}");
    assert_eq!((reactions[0]["chat_id"].as_i64(), &reactions[0]["reaction"]), (Some(5), &json!([{"type": "emoji", "emoji": "👀"}])));
    assert!(actions["chatActions"].as_array().unwrap().iter().any(|a| a["chat_id"] == 5 && a["action"] == "typing"), "{actions:#}");
    let edits = actions["edits"].as_array().unwrap();
    assert!(edits.len() >= 2, "at least one draft edit and the reply's own: {edits:#?}");
    assert!(edits.iter().all(|e| e["message_id"] == edits[0]["message_id"]), "one message is edited: {edits:#?}");
    assert!(edits[..edits.len() - 1].iter().all(|e| e["text"].as_str().unwrap().ends_with(" …")), "{edits:#?}");
    let documents = actions["documents"].as_array().unwrap();
    assert_eq!(documents.len(), 1, "{documents:#?}");
    assert_eq!((documents[0]["file_name"].as_str(), documents[0]["mime_type"].as_str()), (Some("todo.md"), Some("text/markdown")));
    // In the chat: the draft, now the whole reply, and the document; nothing else.
    let messages = tg.bot_messages(TOKEN, 5);
    let texts: Vec<&str> = messages.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, [want.as_str()], "{messages:#?}");
    assert_eq!(messages.len(), 2, "{messages:#?}");
}

#[test]
fn kata_chat_saves_the_files_a_tool_hands_back_and_says_where() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let notes = notes_dir(tmp.path());
    let ws = TestWorkspace::new("");
    std::fs::write(ws.path().join("kata.toml"), agent_and_notes(&llm, &notes)).unwrap();
    let _daemon = ws.run_ready(&[]);
    let out = std::process::Command::new(common::kata_bin())
        .args(["chat", "--workspace"])
        .arg(ws.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(format!("{ASK}\n").as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some(final_text().as_str()), "{stdout}");
    let file = lines.iter().find_map(|l| l.strip_prefix("[file] todo.md (")).unwrap_or_else(|| panic!("no file line: {stdout}"));
    assert!(file.starts_with(&format!("{} bytes, text/markdown) saved to ", NOTE.len())), "{file}");
    let path = PathBuf::from(file.rsplit(" saved to ").next().unwrap());
    assert!(path.starts_with(ws.path().join(".kata/chat-files")), "{}", path.display());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), NOTE, "the saved file is the note");
}
