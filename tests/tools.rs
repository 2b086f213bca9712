//! The first-party tools plugins (plugins/notes, plugins/web-fetch) built
//! from source and called by the agent through the real `kata run` — the
//! scripted OpenAI-compatible model asks for the calls, the chat channel
//! guest carries the turns — each with its grant and failing cleanly
//! without it; and `kata tool list` / `kata tool call`, in-process and
//! through the running daemon.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::llm::{ChatServer, LlmServer, tool_script};
use common::{TestWorkspace, guest, kata, read_request, wait_for_or};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// A workspace: the scripted model, the chat channel, then `extra`.
fn workspace(llm: &LlmServer, chat: &ChatServer, tools: &str, extra: &str) -> TestWorkspace {
    let ws = TestWorkspace::new("");
    let toml = format!(
        r#"
[agent]
backend = "openai"
base_url = "{llm}"
model = "test-model"

[tools]
{tools}

[plugins.chat]
path = "{chat_wasm}"
network = ["{chat}/"]
config = {{ api_base = "{chat}", poll_interval = "50ms" }}
allow_from = ["*"]
{extra}
"#,
        llm = llm.base_url(),
        chat_wasm = guest("guest-chat").display(),
        chat = chat.base()
    );
    std::fs::write(ws.path().join("kata.toml"), toml).unwrap();
    ws
}

/// The `n`th reply (1-based) in the chat.
fn reply(chat: &ChatServer, n: usize, ws: &TestWorkspace) -> String {
    wait_for_or(&format!("reply {n}"), WAIT, || ws.log(), || chat.sent().get(n - 1).map(|m| m["text"].as_str().unwrap().to_string()))
}

/// Say `text` in conversation c1 and wait for the next reply.
fn ask(chat: &ChatServer, ws: &TestWorkspace, text: &str) -> String {
    let n = chat.sent().len() + 1;
    chat.say("c1", None, "ann", text);
    reply(chat, n, ws)
}

fn notes_dir(root: &Path) -> std::path::PathBuf {
    let d = root.join("notes");
    std::fs::create_dir_all(d.join("projects")).unwrap();
    std::fs::write(d.join("todo.md"), "# Todo\n- ship kata\n- water the plants\n").unwrap();
    std::fs::write(d.join("projects/kata.md"), "Kata hosts agents.\n").unwrap();
    d
}

#[test]
fn notes_searches_reads_and_appends_with_its_grant_and_says_what_to_grant_without() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let notes = notes_dir(tmp.path());
    let wasm = guest("notes");
    let ws = workspace(
        &llm,
        &chat,
        "mode = \"allow-all\"",
        &format!(
            r#"
[plugins.notes]
path = "{wasm}"
files = [{{ host = "{notes}", guest = "/notes", mode = "rw" }}]

[plugins.loose]
path = "{wasm}"
"#,
            wasm = wasm.display(),
            notes = notes.display()
        ),
    );
    let _daemon = ws.run(&[("KATA_LOG", "info")]);
    let found = ask(&chat, &ws, r#"call notes__search {"query":"KATA"}"#);
    assert_eq!(
        found,
        "tool said: 3 match(es) for \"KATA\" in 2 note(s):\nprojects/kata.md (the name matches)\nprojects/kata.md:1: Kata hosts agents.\ntodo.md:2: - ship kata"
    );
    let read = ask(&chat, &ws, r#"call notes__read {"path":"todo.md"}"#);
    assert_eq!(read, "tool said: # Todo\n- ship kata\n- water the plants\n");
    let appended = ask(&chat, &ws, r#"call notes__append {"path":"journal/2026","text":"- tested the notes plugin"}"#);
    assert_eq!(appended, "tool said: Appended 26 bytes to journal/2026.md (now 26 bytes).");
    assert_eq!(std::fs::read_to_string(notes.join("journal/2026.md")).unwrap(), "- tested the notes plugin\n");
    // Out of the directory: refused by the plugin (and the sandbox below it).
    let escape = ask(&chat, &ws, r#"call notes__read {"path":"../secret.txt"}"#);
    assert!(
        escape.starts_with("tool said: error: invalid arguments: path \"../secret.txt\" may not leave the notes directory"),
        "{escape}"
    );
    // The same plugin with no directory granted fails with what to grant.
    let loose = ask(&chat, &ws, r#"call loose__search {"query":"kata"}"#);
    assert!(loose.starts_with("tool said: error: the tool failed: there is no notes directory"), "{loose}");
    assert!(loose.contains("files = [{ host = \"~/notes\", guest = \"/notes\", mode = \"rw\" }]"), "{loose}");
}

/// A loopback web server: an HTML page, a redirect to it, JSON and an image.
fn web_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (head, _) = read_request(&mut BufReader::new(stream.try_clone().unwrap()));
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, extra, ctype, body): (&str, String, &str, Vec<u8>) = match path.as_str() {
                "/page" => (
                    "200 OK",
                    String::new(),
                    "text/html; charset=utf-8",
                    br#"<html><head><title>Kata &amp; tools</title><script>track()</script></head>
                       <body><h1>Hello</h1><p>Read the <a href="/docs/intro">intro</a>   now.</p></body></html>"#
                        .to_vec(),
                ),
                "/old" => ("301 Moved Permanently", "location: /page\r\n".into(), "text/plain", b"moved".to_vec()),
                "/data.json" => ("200 OK", String::new(), "application/json", br#"{"answer": 42}"#.to_vec()),
                "/img" => ("200 OK", String::new(), "image/png", b"\x89PNG\r\n".to_vec()),
                _ => ("404 Not Found", String::new(), "text/plain", b"no".to_vec()),
            };
            let head =
                format!("HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    port
}

#[test]
fn web_fetch_reads_pages_inside_its_grant_and_is_refused_outside_it() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let port = web_server();
    let other = web_server();
    let base = format!("http://127.0.0.1:{port}");
    let wasm = guest("web-fetch");
    let ws = workspace(
        &llm,
        &chat,
        "mode = \"safe\"",
        &format!(
            r#"
[plugins.web-fetch]
path = "{wasm}"
network = ["{base}/"]

[plugins.offline]
path = "{wasm}"
"#,
            wasm = wasm.display()
        ),
    );
    let _daemon = ws.run(&[("KATA_LOG", "info")]);
    // `fetch` is read-only: even the safe mode runs it (GET only).
    let page = ask(&chat, &ws, &format!(r#"call web-fetch__fetch {{"url":"{base}/old"}}"#));
    assert_eq!(page, format!("tool said: URL: {base}/page\nTitle: Kata & tools\n\n# Hello\n\nRead the intro ({base}/docs/intro) now."));
    let json = ask(&chat, &ws, &format!(r#"call web-fetch__fetch {{"url":"{base}/data.json"}}"#));
    assert_eq!(json, format!("tool said: URL: {base}/data.json\n\n{{\"answer\": 42}}"));
    let img = ask(&chat, &ws, &format!(r#"call web-fetch__fetch {{"url":"{base}/img"}}"#));
    assert!(img.contains("is not text (content type image/png)"), "{img}");
    let missing = ask(&chat, &ws, &format!(r#"call web-fetch__fetch {{"url":"{base}/nope"}}"#));
    assert!(missing.contains("answered HTTP 404"), "{missing}");
    // Another port is outside the grant; the plugin with no grant reaches nothing.
    let outside = ask(&chat, &ws, &format!(r#"call web-fetch__fetch {{"url":"http://127.0.0.1:{other}/page"}}"#));
    assert!(
        outside.contains("kata's policy does not let this plugin fetch") && outside.contains(&format!("http://127.0.0.1:{other}/")),
        "{outside}"
    );
    let offline = ask(&chat, &ws, &format!(r#"call offline__fetch {{"url":"{base}/page"}}"#));
    assert!(offline.contains("kata's policy does not let this plugin fetch"), "{offline}");
    // Each refusal is in the audit log.
    let (ok, out, err) = kata(ws.path(), &["audit", "--json"]);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    let denied: Vec<&Value> = rows.as_array().unwrap().iter().filter(|r| r["kind"] == "network" && r["verdict"] == "deny").collect();
    assert_eq!(denied.len(), 2, "{denied:?}");
}

#[test]
fn tool_list_says_what_each_mode_does_and_tool_call_takes_the_daemons_path() {
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let notes = notes_dir(tmp.path());
    let toml = |mode: &str| {
        format!(
            r#"
[agent]
backend = "openai"
base_url = "{llm}"
model = "test-model"

[tools]
mode = "{mode}"
allow = ["notes.search"]

[plugins.chat]
path = "{chat_wasm}"
network = ["{chat}/"]
config = {{ api_base = "{chat}", poll_interval = "50ms" }}
allow_from = ["*"]
tools_mode = "allow-all"

[plugins.notes]
path = "{wasm}"
files = [{{ host = "{notes}", guest = "/notes", mode = "rw" }}]
"#,
            llm = llm.base_url(),
            chat_wasm = guest("guest-chat").display(),
            chat = chat.base(),
            wasm = guest("notes").display(),
            notes = notes.display()
        )
    };
    let ws = TestWorkspace::new("");
    std::fs::write(ws.path().join("kata.toml"), toml("daemon")).unwrap();

    // list: every tool, the decision and the line that makes it.
    let (ok, out, err) = kata(ws.path(), &["tool", "list"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("Permission mode: \"daemon\" (kata.toml:8)\n  turns from channel chat use \"allow-all\" (kata.toml:16)\n"),
        "{out}"
    );
    let line = |tool: &str| out.lines().find(|l| l.starts_with(tool)).unwrap_or_else(|| panic!("{tool} in {out}")).to_string();
    assert!(
        line("notes.search ").contains("runs") && line("notes.search ").contains("[tools] allow = [\"notes.search\"] (kata.toml:9)"),
        "{out}"
    );
    let append = line("notes.append ");
    assert!(append.contains("refused") && append.contains("to allow it: [tools] allow = [\"notes.append\"]"), "{append}");
    assert!(out.contains("from channel chat: [plugins.chat] tools_mode = \"allow-all\" (kata.toml:16)"), "{out}");
    let (ok, json, _) = kata(ws.path(), &["tool", "list", "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&json).unwrap();
    let tools: Vec<&str> = v["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tools, ["notes.search", "notes.read", "notes.list", "notes.append", "notes.attach"]);
    assert_eq!(v["tools"][0]["read_only"], true);
    assert_eq!(v["tools"][3]["workspace"]["decision"], "refused");
    assert_eq!(v["tools"][3]["channels"][0]["decision"], "runs");

    // call, with no daemon running: loaded here, decided by the same rules.
    let (ok, out, err) = kata(ws.path(), &["tool", "call", "notes.search", r#"{"query":"plants"}"#]);
    assert!(ok, "{err}");
    assert_eq!(out, "1 match(es) for \"plants\" in 1 note(s):\ntodo.md:3: - water the plants\n");
    let (ok, _, err) = kata(ws.path(), &["tool", "call", "notes.append", r#"{"path":"x","text":"y"}"#]);
    assert!(!ok && err.contains("kata did not run notes.append") && err.contains("[tools] allow = [\"notes.append\"]"), "{err}");
    assert!(!notes.join("x.md").exists());
    let (ok, _, err) = kata(ws.path(), &["tool", "call", "notes.nope", "{}"]);
    assert!(!ok && err.contains("there is no tool notes.nope"), "{err}");
    let (ok, _, err) = kata(ws.path(), &["tool", "call", "notes.search", "not json"]);
    assert!(!ok && err.contains("not a JSON object"), "{err}");

    // With a daemon running, the call goes through it: its loaded policy
    // decides, even after kata.toml changed without a reload.
    std::fs::write(ws.path().join("kata.toml"), toml("allow-all")).unwrap();
    let _daemon = ws.run(&[("KATA_LOG", "info")]);
    wait_for_or("the daemon's socket", WAIT, || ws.log(), || ws.path().join(".kata/kata.sock").exists().then_some(()));
    std::fs::write(ws.path().join("kata.toml"), toml("daemon")).unwrap();
    let (ok, out, err) = kata(ws.path(), &["tool", "call", "notes.append", r#"{"path":"from-cli","text":"through the daemon"}"#]);
    assert!(ok, "{err}");
    assert_eq!(out, "Appended 19 bytes to from-cli.md (now 19 bytes).\n");
    assert_eq!(std::fs::read_to_string(notes.join("from-cli.md")).unwrap(), "through the daemon\n");

    // Every call is an audit row, in session cli/tool-call (the daemon
    // writes an allowed call's row in the background: wait for it).
    let rows: Vec<Value> = wait_for_or(
        "three tool audit rows",
        WAIT,
        || ws.log(),
        || {
            let (_, out, _) = kata(ws.path(), &["audit", "--json"]);
            let rows: Value = serde_json::from_str(&out).ok()?;
            let tools: Vec<Value> = rows.as_array()?.iter().filter(|r| r["kind"] == "tool").cloned().collect();
            (tools.len() >= 3).then_some(tools)
        },
    );
    let calls: Vec<(&str, &str)> = rows.iter().map(|r| (r["target"].as_str().unwrap(), r["verdict"].as_str().unwrap())).collect();
    assert_eq!(calls, [("notes.search", "allow"), ("notes.append", "deny"), ("notes.append", "allow")]);
    assert!(rows.iter().all(|r| r["detail"].as_str().unwrap().starts_with("session cli/tool-call")), "{rows:?}");
}
