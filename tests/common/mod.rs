//! Shared test harness: guest components built from source, real servers as
//! child processes on loopback, and the real `kata` binary.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

pub mod botapi;
pub mod discord;
pub mod llm;
pub mod loopback;
pub mod slack;
pub mod webfake;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    // The binary crate is runtime/kata.
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap().to_path_buf()
}

/// The kata binary under test.
pub fn kata_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kata"))
}

/// Where a guest's source lives, by name: `telegram` is plugins/telegram,
/// `guest-*` and `<lang>-*` (e.g. `js-probe`) are test fixtures in
/// tests/guests/.
fn guest_dir(name: &str) -> PathBuf {
    let fixture = root().join("tests/guests").join(name);
    if fixture.is_dir() { fixture } else { root().join("plugins").join(name) }
}

/// The component for a guest, built from source with `kata plugin build` once
/// per test process (cargo makes an unchanged rebuild cheap).
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let out = root().join("target/guests").join(format!("{name}.wasm"));
    let status = Command::new(kata_bin())
        .args(["plugin", "build"])
        .arg(guest_dir(name))
        .arg("--out")
        .arg(&out)
        .env("CARGO_TARGET_DIR", root().join("target/wasm"))
        .stdout(Stdio::null())
        .status()
        .expect("run kata plugin build");
    assert!(status.success(), "building guest {name} failed (run scripts/setup.sh for the guest toolchain)");
    built.insert(name.to_string(), out.clone());
    out
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Wait until `f` returns Some, or panic after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_for`], printing `context()` (e.g. the daemon's log) on timeout.
pub fn wait_for_or<T>(what: &str, timeout: Duration, context: impl Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}:\n{}", context());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    /// Send a signal and wait for the process to exit.
    pub fn signal_and_wait(&mut self, sig: &str) -> std::process::ExitStatus {
        let mut child = self.0.take().unwrap();
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status();
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("process did not exit within 30 s of SIG{sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// telegram-test-api, a Telegram Bot API emulator, on a free loopback port.
pub struct TelegramServer {
    pub port: u16,
    _child: ChildGuard,
    client: reqwest::blocking::Client,
    /// Bot messages read so far (the emulator hands each out once).
    seen: Mutex<Vec<serde_json::Value>>,
}

impl TelegramServer {
    pub fn start() -> Self {
        let script = root().join("tests/servers/telegram/server.js");
        assert!(
            root().join("tests/servers/telegram/node_modules/telegram-test-api").exists(),
            "telegram-test-api is not installed: run scripts/setup.sh"
        );
        let port = free_port();
        let child = Command::new("node")
            .arg(&script)
            .env("PORT", port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node (run scripts/setup.sh)");
        let guard = ChildGuard(Some(child));
        wait_for("telegram-test-api to listen", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).ok());
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        Self { port, _child: guard, client, seen: Mutex::new(Vec::new()) }
    }

    /// The `[plugins.telegram]` table that runs the real Telegram plugin
    /// against this emulator (token from `TG_TEST_TOKEN`), then `extra` lines.
    pub fn plugin_toml(&self, extra: &str) -> String {
        format!(
            r#"
[plugins.telegram]
path = "{wasm}"
network = ["{base}/bot*"]
secrets = {{ bot_token = "env:TG_TEST_TOKEN" }}
config = {{ api_base = "{base}", poll_timeout_s = 0, poll_interval = "100ms" }}
{extra}
"#,
            wasm = guest("telegram").display(),
            base = self.base()
        )
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A user sends `text` to the bot in chat `chat`.
    pub fn user_says(&self, token: &str, chat: i64, text: &str) {
        let body = serde_json::json!({
            "botToken": token,
            "from": {"id": chat, "first_name": "User", "username": format!("user{chat}"), "is_bot": false},
            "chat": {"id": chat, "type": "private"},
            "date": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            "text": text,
        });
        let r = self.client.post(format!("{}/sendMessage", self.base())).json(&body).send().unwrap();
        assert!(r.status().is_success(), "emulator refused a user message: {}", r.status());
    }

    /// `from` presses the inline button with callback data `data` under the
    /// bot's message `message_id` in private chat `chat`.
    pub fn user_presses(&self, token: &str, chat: i64, from: i64, message_id: &serde_json::Value, data: &str) {
        let body = serde_json::json!({
            "botToken": token,
            "from": {"id": from, "first_name": "User", "username": format!("user{from}"), "is_bot": false},
            "message": {"message_id": message_id, "chat": {"id": chat, "type": "private"}},
            "data": data,
        });
        let r = self.client.post(format!("{}/sendCallback", self.base())).json(&body).send().unwrap();
        assert!(r.status().is_success(), "emulator refused a button press: {}", r.status());
    }

    /// Make the bot's call of `method` after `skip` more successful ones
    /// fail with 429 and `retry_after` 1 s, as Telegram rate-limits.
    pub fn rate_limit_after(&self, token: &str, method: &str, skip: u32) {
        let body = serde_json::json!({"token": token, "method": method, "skip": skip, "error_code": 429, "retry_after": 1});
        let r = self.client.post(format!("{}/failBotMethod", self.base())).json(&body).send().unwrap();
        assert!(r.status().is_success(), "emulator refused /failBotMethod: {}", r.status());
    }

    /// What the bot did besides sending text, as tests/servers/telegram
    /// records it: `{chatActions, reactions, documents, edits, callbackAnswers}`.
    pub fn bot_actions(&self, token: &str) -> serde_json::Value {
        let body = serde_json::json!({"token": token});
        let v: serde_json::Value = self.client.post(format!("{}/getBotActions", self.base())).json(&body).send().unwrap().json().unwrap();
        v["result"].clone()
    }

    /// All bot messages sent to `chat` so far (accumulated across calls), in
    /// the order sent, each with its `message_id`; an edited message appears
    /// once, as last edited (the emulator hands it out again after an edit).
    pub fn bot_messages(&self, token: &str, chat: i64) -> Vec<serde_json::Value> {
        let body = serde_json::json!({"token": token, "chatId": chat});
        let v: serde_json::Value = self.client.post(format!("{}/getUpdates", self.base())).json(&body).send().unwrap().json().unwrap();
        let mut seen = self.seen.lock().unwrap();
        for u in v["result"].as_array().cloned().unwrap_or_default() {
            let mut message = u["message"].clone();
            message["message_id"] = u["messageId"].clone();
            match seen.iter_mut().find(|m| m["message_id"] == message["message_id"] && !message["message_id"].is_null()) {
                Some(old) => *old = message,
                None => seen.push(message),
            }
        }
        seen.iter().filter(|m| m["chat_id"] == serde_json::json!(chat)).cloned().collect()
    }
}

/// A temporary workspace created with `kata init`.
pub struct TestWorkspace {
    pub dir: tempfile::TempDir,
}

impl TestWorkspace {
    pub fn new(extra_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(kata_bin()).arg("init").arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "kata init failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("kata.toml")).unwrap();
        f.write_all(extra_toml.as_bytes()).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Start `kata run` in this workspace with extra environment.
    pub fn run(&self, env: &[(&str, &str)]) -> ChildGuard {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path().join("kata.log")).unwrap();
        let mut cmd = Command::new(kata_bin());
        cmd.arg("run").arg("-w").arg(self.path()).stdout(Stdio::null()).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        ChildGuard(Some(cmd.spawn().unwrap()))
    }

    /// [`TestWorkspace::run`], returning once the daemon answers on its
    /// control socket (a socket file a killed daemon left refuses
    /// connections). For a run that may find nothing left to do, whose
    /// SIGTERM would otherwise arrive before the daemon is there to take it.
    pub fn run_ready(&self, env: &[(&str, &str)]) -> ChildGuard {
        let daemon = self.run(env);
        let sock = self.path().join(".kata/kata.sock");
        wait_for("the daemon to start", Duration::from_secs(60), || std::os::unix::net::UnixStream::connect(&sock).ok());
        daemon
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("kata.log")).unwrap_or_default()
    }
}

/// A tiny HTTP/1.1 server on loopback that records every request (request
/// line and headers) and answers `200 received`.
pub struct RecordingServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
}

/// Read one HTTP/1.1 request: its head (request line and headers, as sent,
/// without the blank line; empty if the peer sent nothing) and its body
/// (`content-length` bytes).
pub fn read_request(reader: &mut impl BufRead) -> (String, Vec<u8>) {
    let mut head = String::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    let mut body = vec![0; content_length];
    let _ = reader.read_exact(&mut body);
    (head, body)
}

impl RecordingServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (head, _body) = read_request(&mut reader);
                log.lock().unwrap().push(head);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nreceived");
            }
        });
        Self { port, requests }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A tiny HTTP/1.1 server on loopback that serves `body` for every GET.
pub struct FileServer {
    pub port: u16,
}

impl FileServer {
    pub fn start(body: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                read_request(&mut BufReader::new(stream.try_clone().unwrap()));
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/wasm\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        Self { port }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

/// Run the kata binary with args in a workspace; returns (success, stdout, stderr).
pub fn kata(ws: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(kata_bin()).args(args).arg("--workspace").arg(ws).env("KATA_LOG", "off").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// Every file under `dir` with its bytes, for before/after comparisons.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// Load guest component `file` as plugin `name` under `[plugins.NAME] path = …`
/// plus `policy_lines`, resolving relative paths against `workspace`.
pub fn load_plugin(
    engine: &kata::engine::Engine,
    db: &kata::store::Db,
    name: &str,
    file: &Path,
    policy_lines: &str,
    workspace: &Path,
) -> anyhow::Result<kata::plugin::ChannelPlugin> {
    let text = format!("[plugins.{name}]\npath = \"{}\"\n{policy_lines}\n", file.display());
    let policy = kata::policy::Policy::parse(&text, Path::new("kata.toml"), workspace).unwrap();
    let linker = kata::plugin::linker(engine).unwrap();
    kata::plugin::ChannelPlugin::load(engine, &linker, policy.plugins[name].clone(), kata::sinks::for_db(db), workspace)
}

/// Instantiate, connect and poll once; the probe guests return one message.
pub async fn poll_text(p: &kata::plugin::ChannelPlugin) -> String {
    let mut inst = p.instantiate().await.unwrap();
    inst.connect().await.unwrap();
    let r = inst.poll(None).await.unwrap();
    assert_eq!(r.messages.len(), 1, "the probe returns one message");
    r.messages[0].text.clone()
}
