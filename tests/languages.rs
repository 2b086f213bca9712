//! Plugins in every language kata has a template for, held to the same bar.
//!
//! One table, one row per language. For each row:
//!
//! - the sandbox guarantees, through the language's probe guest
//!   (`tests/guests/<lang>-probe/`, one contract for all, see
//!   `tests/guests/rust-probe/src/lib.rs`): a request to an ungranted host is
//!   refused and the plugin sees an error; a file outside the grants cannot be
//!   read while a granted one can; a secret placeholder is filled only for
//!   its granted host and never reaches the plugin, its log or its messages;
//!   a busy loop is stopped by the CPU meter and a memory bomb by the memory
//!   cap, while a healthy channel keeps delivering;
//! - the language's templates (`kata plugin new --lang L`): the project's own
//!   test passes out of the box, `kata plugin build` builds it, the same
//!   source gives the same bytes, `kata plugin add` installs it, and through
//!   the real `kata run` a message makes the round trip (channel template
//!   against a local inbox API) and the agent calls the tool (tools template).
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::llm::{ChatServer, LlmServer, tool_script};
use common::{TestWorkspace, guest, kata, root, wait_for};
use serde_json::{Value, json};

/// One language.
struct Row {
    /// `--lang` and the probe's prefix (`<lang>-probe`).
    lang: &'static str,
    /// The memory cap for the bomb: the language's runtime must fit under
    /// it before the bomb starts.
    bomb_cap_mib: u32,
    /// Whether a refused request's error, as the plugin sees it, carries
    /// kata's reason (StarlingMonkey's `fetch` reduces every failure to
    /// "NetworkError"; the reason is then in the log and the audit trail).
    reason_reaches_guest: bool,
    /// Whether the language can read a granted file (JavaScript engines
    /// without a file API cannot).
    reads_files: bool,
    /// Whether the same source gives the same bytes from any directory.
    /// componentize-qjs's pre-initialised QuickJS heap holds a random hash
    /// seed and the build's clock, so kata keeps a JavaScript project's
    /// snapshot and reuses it: the same bytes from the same project
    /// directory only (sdk/js/README.md).
    same_bytes_anywhere: bool,
}

const ROWS: &[Row] = &[
    Row { lang: "rust", bomb_cap_mib: 16, reason_reaches_guest: true, reads_files: true, same_bytes_anywhere: true },
    Row { lang: "c", bomb_cap_mib: 16, reason_reaches_guest: true, reads_files: true, same_bytes_anywhere: true },
    Row { lang: "go", bomb_cap_mib: 32, reason_reaches_guest: true, reads_files: true, same_bytes_anywhere: true },
    Row { lang: "js", bomb_cap_mib: 16, reason_reaches_guest: true, reads_files: true, same_bytes_anywhere: false },
    Row { lang: "python", bomb_cap_mib: 32, reason_reaches_guest: true, reads_files: true, same_bytes_anywhere: true },
];

const WAIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// The sandbox, through each language's probe.

/// A server that answers every request with `200` and the request head and
/// body echoed back, and records what it saw.
struct EchoServer {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl EchoServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let (head, body) = common::read_request(&mut reader);
                    if head.is_empty() {
                        return;
                    }
                    log.lock().unwrap().push(head.clone());
                    let text = format!("{head}\n\n{}", String::from_utf8_lossy(&body));
                    let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}", text.len());
                });
            }
        });
        Self { port, seen }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A database and engine to load probes with, in a temporary workspace.
struct Env {
    dir: tempfile::TempDir,
    db: kata::store::Db,
    engine: kata::engine::Engine,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = kata::store::Db::open(&dir.path().join("kata.db")).unwrap();
        // A compile cache, so each probe is compiled once for all the
        // policies it is loaded under (an 18 MB Python component takes
        // tens of seconds to compile in a debug build).
        let engine = kata::engine::Engine::new(Some(dir.path().join("cache"))).unwrap();
        Self { dir, db, engine }
    }

    /// Poll `<lang>-probe` once under `policy_lines`; the text it returned.
    async fn probe(&self, lang: &str, policy_lines: &str) -> String {
        let name = format!("{lang}-probe");
        let p = common::load_plugin(&self.engine, &self.db, &name, &guest(&name), policy_lines, self.dir.path())
            .unwrap_or_else(|e| panic!("{name} does not load: {e:#}"));
        common::poll_text(&p).await
    }

    fn audit(&self) -> Vec<kata::store::AuditRow> {
        self.db.audit_query(&kata::store::AuditQuery { limit: 1000, ..Default::default() }).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_holds_in_every_language() {
    let server = EchoServer::start();
    let base = server.base();
    let env = Env::new();
    for row in ROWS {
        let lang = row.lang;

        // Granted: the request goes out (the positive control).
        let text = env.probe(lang, &format!("network = [\"{base}/ok/\"]\nconfig = {{ probe = \"http\", url = \"{base}/ok/x\" }}")).await;
        assert!(text.starts_with("http: ok 200"), "{lang}: a granted request failed: {text}");

        // Not granted: refused before it leaves, and the plugin sees an error.
        let before = server.seen().len();
        let text = env.probe(lang, &format!("network = [\"{base}/ok/\"]\nconfig = {{ probe = \"http\", url = \"{base}/admin\" }}")).await;
        assert!(text.starts_with("http: err"), "{lang}: an ungranted request did not fail in the plugin: {text}");
        if row.reason_reaches_guest {
            assert!(text.contains("denied") || text.contains("not granted"), "{lang}: the plugin's error does not say why: {text}");
        }
        assert_eq!(server.seen().len(), before, "{lang}: the ungranted request reached the server");
        let rows = env.audit();
        assert!(
            rows.iter().any(|r| r.plugin == format!("{lang}-probe")
                && r.kind == "network"
                && r.verdict == "deny"
                && r.target.as_deref().unwrap_or("").contains("/admin")),
            "{lang}: the refusal is not audited: {rows:#?}"
        );

        // Files: a granted directory can be read, nothing outside it.
        let data = env.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("note.txt"), "hello").unwrap();
        let files = format!("files = [{{ host = \"{}\", guest = \"/data\", mode = \"ro\" }}]", data.display());
        if row.reads_files {
            let text = env.probe(lang, &format!("{files}\nconfig = {{ probe = \"file\", path = \"/data/note.txt\" }}")).await;
            assert_eq!(text, "file: ok 5 bytes", "{lang}: a granted file");
        }
        for path in ["/etc/passwd", "/data/../../../../etc/passwd"] {
            let text = env.probe(lang, &format!("{files}\nconfig = {{ probe = \"file\", path = \"{path}\" }}")).await;
            assert!(text.starts_with("file: err"), "{lang}: {path} was readable: {text}");
        }

        // Secrets: filled in for the granted host only; the plugin, its log
        // and its messages only ever hold the placeholder or a redaction.
        let value = format!("s3cr3t-{lang}-0xfeed");
        let token_file = env.dir.path().join("token");
        std::fs::write(&token_file, &value).unwrap();
        std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let secret = "secrets = { token = \"file:token\" }";
        let text = env
            .probe(lang, &format!("network = [\"{base}/echo\"]\n{secret}\nconfig = {{ probe = \"secret\", url = \"{base}/echo\" }}"))
            .await;
        assert!(text.starts_with("secret: ok 200"), "{lang}: {text}");
        assert!(!text.contains(&value), "{lang}: the plugin saw the secret: {text}");
        assert!(text.contains("[REDACTED:token]"), "{lang}: the echoed secret is not redacted: {text}");
        let sent = server.seen().into_iter().filter(|h| h.contains("/echo")).collect::<Vec<_>>();
        assert!(sent.iter().any(|h| h.contains(&format!("token={value}"))), "{lang}: the granted host did not get the secret: {sent:?}");
        assert!(sent.iter().any(|h| h.to_ascii_lowercase().contains(&format!("authorization: bearer {value}"))), "{lang}: {sent:?}");
        // Towards a host the secret is not granted for, it is never filled in.
        let before = server.seen().len();
        let text = env
            .probe(lang, &format!("network = [\"{base}/ok/\"]\n{secret}\nconfig = {{ probe = \"secret\", url = \"{base}/elsewhere\" }}"))
            .await;
        assert!(text.starts_with("secret: err"), "{lang}: {text}");
        assert_eq!(server.seen().len(), before, "{lang}: a request carrying a secret left for an ungranted path");
        let db_text = format!("{:?}", env.audit());
        assert!(!db_text.contains(&value), "{lang}: the audit log holds the secret");
    }
}

/// Go only: one poll of go-probe's `gc` mode has the host hand the plugin
/// 10 MiB through `cabi_realloc` (20 reads of a 512 KiB state value). Go's
/// collector must never start inside `cabi_realloc` (it reads the clock
/// through an import, which the component model forbids there and wasmtime
/// traps with "cannot leave component instance"); sdk/go/internal/gc turns
/// automatic collection off and collects where imports are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_collects_garbage_only_where_it_may_call_the_host() {
    if !ROWS.iter().any(|r| r.lang == "go") {
        return;
    }
    let env = Env::new();
    for _ in 0..3 {
        let text = env.probe("go", "config = { probe = \"gc\" }").await;
        assert!(text.starts_with("gc: ok 524288 bytes"), "{text}");
    }
}

#[test]
fn busy_loops_and_memory_bombs_are_stopped_in_every_language_while_a_healthy_channel_delivers() {
    let mut toml = format!("\n[plugins.healthy]\npath = \"{}\"\nallow_from = [\"*\"]\n", guest("guest-v0-1-0").display());
    for row in ROWS {
        let probe = guest(&format!("{}-probe", row.lang));
        toml.push_str(&format!(
            "\n[plugins.{lang}-spin]\npath = \"{p}\"\nconfig = {{ probe = \"spin\" }}\nlimits = {{ cpu_per_call = \"100ms\" }}\n\
             \n[plugins.{lang}-bomb]\npath = \"{p}\"\nconfig = {{ probe = \"bomb\" }}\nlimits = {{ memory = \"{cap}MiB\" }}\n",
            lang = row.lang,
            p = probe.display(),
            cap = row.bomb_cap_mib
        ));
    }
    let ws = TestWorkspace::new(&toml);
    let mut daemon = ws.run(&[]);
    let db = wait_for("the daemon's database", Duration::from_secs(30), || kata::store::Db::open(&ws.path().join(".kata/kata.db")).ok());
    let log = common::wait_for_or(
        "every probe to be stopped at least once",
        WAIT,
        || ws.log(),
        || {
            let log = ws.log();
            let stopped = |p: &str| log.lines().any(|l| of_plugin(l, p) && l.contains("retrying in"));
            ROWS.iter().all(|r| stopped(&format!("{}-spin", r.lang)) && stopped(&format!("{}-bomb", r.lang))).then_some(log)
        },
    );
    let line = |p: &str| log.lines().find(|l| of_plugin(l, p) && l.contains("retrying in")).unwrap().to_string();
    for row in ROWS {
        let spin = line(&format!("{}-spin", row.lang));
        assert!(spin.contains("CPU budget"), "{}: {spin}", row.lang);
        let bomb = line(&format!("{}-bomb", row.lang));
        assert!(bomb.contains(&format!("memory limit of {} MiB", row.bomb_cap_mib)), "{}: {bomb}", row.lang);
    }
    wait_for("the healthy plugin's replies", WAIT, || (db.plugin_activity("healthy").ok()?.sent == 3).then_some(()));
    assert!(daemon.signal_and_wait("TERM").success(), "{log}");
}

/// Whether a daemon log line is about plugin `p` (`plugin=p` as a field).
fn of_plugin(line: &str, p: &str) -> bool {
    let field = format!("plugin={p}");
    line.split_whitespace().any(|w| w == field)
}

// ---------------------------------------------------------------------------
// The templates, as a newcomer uses them.

/// The JSON inbox API the channel templates talk to: `GET /messages?after=ID`
/// answers the messages after ID as `[{"id","chat","from","text"}]`, `POST
/// /messages` takes `{"chat","text","reply_to","key"}`; both need
/// `Authorization: Bearer <token>` (else 401).
struct InboxServer {
    port: u16,
    state: Arc<Mutex<Inbox>>,
}

#[derive(Default)]
struct Inbox {
    inbound: Vec<Value>,
    sent: Vec<Value>,
    unauthorized: usize,
}

impl InboxServer {
    fn start(token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(Inbox::default()));
        let st = state.clone();
        let bearer = format!("authorization: bearer {}", token.to_ascii_lowercase());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (st, bearer) = (st.clone(), bearer.clone());
                std::thread::spawn(move || serve_inbox(stream, &st, &bearer));
            }
        });
        Self { port, state }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn user_says(&self, chat: &str, from: &str, text: &str) {
        let mut s = self.state.lock().unwrap();
        let id = format!("{}", s.inbound.len() + 1);
        s.inbound.push(json!({"id": id, "chat": chat, "from": from, "text": text}));
    }

    fn sent(&self) -> Vec<Value> {
        self.state.lock().unwrap().sent.clone()
    }
}

fn serve_inbox(mut stream: std::net::TcpStream, state: &Mutex<Inbox>, bearer: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let (head, body) = common::read_request(&mut reader);
        if head.is_empty() {
            return;
        }
        let line = head.lines().next().unwrap_or_default().to_string();
        let authorized = head.to_ascii_lowercase().lines().any(|l| l.trim() == bearer);
        let (status, reply) = {
            let mut s = state.lock().unwrap();
            if !authorized {
                s.unauthorized += 1;
                (401, json!({"error": "unauthorized"}))
            } else if line.starts_with("GET /messages") {
                let after: usize = line.split("after=").nth(1).and_then(|a| a.split([' ', '&']).next()?.parse().ok()).unwrap_or(0);
                (200, Value::Array(s.inbound.iter().skip(after).cloned().collect()))
            } else if line.starts_with("POST /messages") {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                s.sent.push(v);
                (200, json!({"id": format!("r{}", s.sent.len())}))
            } else {
                (404, json!({"error": "not found"}))
            }
        };
        let text = reply.to_string();
        let reason = if status == 200 { "OK" } else { "Error" };
        let out = format!("HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}", text.len());
        if stream.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// `kata plugin new NAME --lang L --kind K` in `dir`, the project's own test
/// (the command `kata plugin new` says to run next, before the build), and
/// `kata plugin build` into target/guests/ (skipped when unchanged). Returns
/// the project and the component.
fn new_test_build(dir: &Path, lang: &str, kind: &str) -> (PathBuf, PathBuf) {
    let name = format!("demo-{lang}-{kind}");
    let project = dir.join(&name);
    let out = std::process::Command::new(common::kata_bin())
        .args(["plugin", "new", &name, "--lang", lang, "--kind", kind, "--dir"])
        .arg(&project)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{lang} {kind}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(project.join("plugin.toml").is_file(), "{lang} {kind}: the project has no plugin.toml");
    // "Next: cd DIR && TEST && kata plugin build ."
    let next = stdout.lines().find_map(|l| l.strip_prefix("Next: ")).unwrap_or_else(|| panic!("{lang}: no Next: line in {stdout}"));
    let test = next.split(" && ").skip(1).filter(|c| !c.starts_with("kata plugin build")).collect::<Vec<_>>().join(" && ");
    if !test.is_empty() {
        let kata_dir = common::kata_bin().parent().unwrap().to_path_buf();
        let path = format!("{}:{}", kata_dir.display(), std::env::var("PATH").unwrap_or_default());
        let run = std::process::Command::new("sh")
            .arg("-c")
            .arg(&test)
            .current_dir(&project)
            .env("PATH", path)
            .env("CARGO_TARGET_DIR", root().join("target/guest-native"))
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{lang} {kind}: the new project's own test `{test}` failed:\n{}\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let wasm = root().join("target/guests").join(format!("template-{lang}-{kind}.wasm"));
    build(&project, &wasm);
    (project, wasm)
}

fn build(project: &Path, out: &Path) {
    let build = std::process::Command::new(common::kata_bin())
        .args(["plugin", "build"])
        .arg(project)
        .arg("--out")
        .arg(out)
        .env("CARGO_TARGET_DIR", root().join("target/wasm"))
        .output()
        .unwrap();
    assert!(build.status.success(), "building {}: {}", project.display(), String::from_utf8_lossy(&build.stderr));
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Set keys of `[plugins.NAME]` in the workspace's kata.toml.
fn set_plugin(ws: &TestWorkspace, name: &str, entries: &[(&str, toml_edit::Item)]) {
    let path = ws.path().join("kata.toml");
    let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let table = doc["plugins"][name].as_table_mut().unwrap_or_else(|| panic!("no [plugins.{name}] in kata.toml"));
    for (k, v) in entries {
        table.insert(k, v.clone());
    }
    std::fs::write(&path, doc.to_string()).unwrap();
}

fn inline(pairs: &[(&str, &str)]) -> toml_edit::Item {
    let mut t = toml_edit::InlineTable::new();
    for (k, v) in pairs {
        t.insert(*k, (*v).into());
    }
    toml_edit::value(t)
}

fn strings(items: &[&str]) -> toml_edit::Item {
    toml_edit::value(items.iter().copied().collect::<toml_edit::Array>())
}

#[test]
fn each_languages_channel_template_makes_a_round_trip_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    for row in ROWS {
        let lang = row.lang;
        let (project, wasm) = new_test_build(dir.path(), lang, "channel");
        // Same source, same bytes.
        // Same source, same bytes: from another directory (the first
        // build may come from an earlier run's project), or at least from
        // the same project.
        let again = dir.path().join(format!("again-{lang}.wasm"));
        build(&project, &again);
        if row.same_bytes_anywhere {
            assert_eq!(sha256(&wasm), sha256(&again), "{lang}: two builds of the same source differ");
        } else {
            let third = dir.path().join(format!("third-{lang}.wasm"));
            build(&project, &third);
            assert_eq!(sha256(&again), sha256(&third), "{lang}: two builds of the same project differ");
        }

        let ws = TestWorkspace::new("");
        let (ok, out, err) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", wasm.to_str().unwrap(), "--yes"]);
        assert!(ok, "{lang}: plugin add: {out}{err}");
        let (ok, inspect, _) = kata(ws.path(), &["plugin", "inspect", wasm.to_str().unwrap()]);
        assert!(ok && inspect.contains("kind:        channel"), "{lang}: {inspect}");
        assert!(!inspect.contains("language:    unknown"), "{lang}: the component does not say its language: {inspect}");

        let token = format!("inbox-token-{lang}-42");
        let inbox = InboxServer::start(&token);
        let name = format!("demo-{lang}-channel");
        let base = inbox.base();
        set_plugin(
            &ws,
            &name,
            &[
                ("network", strings(&[&format!("{base}/")])),
                ("config", inline(&[("base_url", &base), ("poll_interval", "50ms")])),
                ("secrets", inline(&[("token", "env:KATA_TEST_INBOX_TOKEN")])),
                ("allow_from", strings(&["*"])),
            ],
        );
        let mut daemon = ws.run(&[("KATA_TEST_INBOX_TOKEN", &token)]);
        inbox.user_says("room-1", "ann", &format!("hello from {lang}"));
        let sent = wait_for(&format!("{lang}: the echo reply"), WAIT, || {
            let sent = inbox.sent();
            (!sent.is_empty()).then_some(sent)
        });
        assert_eq!(sent[0]["chat"], "room-1", "{lang}: {sent:?}");
        assert_eq!(sent[0]["text"], format!("hello from {lang}"), "{lang}: {sent:?}");
        assert_eq!(sent[0]["reply_to"], "1", "{lang}: {sent:?}");
        assert!(sent[0]["key"].as_str().is_some_and(|k| !k.is_empty()), "{lang}: no idempotency key: {sent:?}");
        assert_eq!(inbox.state.lock().unwrap().unauthorized, 0, "{lang}: the token was not filled in");
        assert!(daemon.signal_and_wait("TERM").success(), "{lang}: {}", ws.log());
    }
}

#[test]
fn each_languages_tools_template_is_called_by_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    for row in ROWS {
        let lang = row.lang;
        let (_, wasm) = new_test_build(dir.path(), lang, "tools");
        let chat = ChatServer::start();
        let ws = TestWorkspace::new("");
        let (ok, out, err) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", wasm.to_str().unwrap(), "--name", "words", "--yes"]);
        assert!(ok, "{lang}: plugin add: {out}{err}");
        // The agent is the scripted model, allowed to call every tool; the
        // chat channel carries the conversation.
        let path = ws.path().join("kata.toml");
        let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        let extra: toml_edit::DocumentMut = format!(
            "[agent]\nbackend = \"openai\"\nbase_url = \"{}\"\nmodel = \"test-model\"\napi_key = \"env:KATA_TEST_OPENAI_KEY\"\n\
             [tools]\nmode = \"allow-all\"\n",
            llm.base_url()
        )
        .parse()
        .unwrap();
        doc["agent"] = extra["agent"].clone();
        doc["tools"] = extra["tools"].clone();
        std::fs::write(&path, doc.to_string()).unwrap();
        let chat_base = chat.base();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        write!(
            f,
            "\n[plugins.chat]\npath = \"{}\"\nnetwork = [\"{chat_base}/\"]\nconfig = {{ api_base = \"{chat_base}\", poll_interval = \"50ms\" }}\nallow_from = [\"*\"]\n",
            guest("guest-chat").display()
        )
        .unwrap();
        let mut daemon = ws.run(&[("KATA_TEST_OPENAI_KEY", "sk-test"), ("KATA_LOG", "info")]);
        chat.say("c1", None, "ann", r#"call words__word_count {"text":"one two  three"}"#);
        let sent = chat.wait_sent(1, WAIT);
        let reply = sent[0]["text"].as_str().unwrap_or_default().to_string();
        let result = reply.strip_prefix("tool said: ").unwrap_or_else(|| panic!("{lang}: not a tool result: {reply}\n{}", ws.log()));
        let v: Value = serde_json::from_str(result).unwrap_or_else(|e| panic!("{lang}: the tool's result is not JSON ({e}): {result}"));
        assert_eq!(v["words"], 3, "{lang}: {result}");
        assert!(daemon.signal_and_wait("TERM").success(), "{lang}: {}", ws.log());
    }
}

/// TypeScript is built by the JavaScript toolchain (tsc, then
/// componentize-qjs), so it has no probe row of its own; its templates are
/// checked here: the project's own test through `kata plugin test` (tsc from
/// kata's toolchain, no `npm install`), the build, the recorded language,
/// and a tool call through kata's own checks.
#[test]
fn the_typescript_tools_template_builds_and_its_tool_answers() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("words-ts");
    let (ok, out, err) =
        kata(dir.path(), &["plugin", "new", "words-ts", "--lang", "ts", "--kind", "tools", "--dir", project.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = kata(&project, &["plugin", "test", project.to_str().unwrap()]);
    assert!(ok, "the TypeScript project's own test: {out}{err}");
    let wasm = root().join("target/guests/template-ts-tools.wasm");
    build(&project, &wasm);
    let (ok, inspect, _) = kata(dir.path(), &["plugin", "inspect", wasm.to_str().unwrap()]);
    assert!(ok && inspect.contains("kind:        tools") && inspect.contains("language:    TypeScript"), "{inspect}");
    let ws = TestWorkspace::new("");
    let (ok, out, err) = kata(ws.path(), &["plugin", "add", wasm.to_str().unwrap(), "--name", "words", "--yes", "--allow-unsigned"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = kata(ws.path(), &["tool", "call", "words.word_count", r#"{"text":"one two  three"}"#]);
    assert!(ok, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(v["words"], 3, "{out}");
}
