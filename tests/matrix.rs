//! The Matrix plugin (plugins/matrix) in the real daemon against a real
//! homeserver: matrix-synapse (pip, in its own venv, installed by
//! scripts/setup.sh) started by each test as a child on a free loopback
//! port, with a fresh sqlite directory. People are played by this test
//! through the client-server API; the agent is the echo backend.
#![allow(clippy::unwrap_used, missing_docs)]

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{ChildGuard, TestWorkspace, free_port, guest, kata, wait_for, wait_for_or};

/// The bot account's localpart (its display name too, by Synapse's default).
const BOT: &str = "kata";
const BOT_ID: &str = "@kata:localhost";
/// Long enough for a reply through a loaded machine.
const WAIT: Duration = Duration::from_secs(90);

/// The Python of the venv scripts/setup.sh installs matrix-synapse into.
fn synapse_python() -> PathBuf {
    let p = common::root().join("target/servers/synapse/bin/python");
    assert!(p.exists(), "matrix-synapse is not installed: run scripts/setup.sh (it makes the venv target/servers/synapse)");
    p
}

/// Synapse on `port` with its data in `dir` (kept across a restart).
struct Synapse {
    port: u16,
    dir: PathBuf,
    child: ChildGuard,
    http: reqwest::blocking::Client,
}

impl Synapse {
    /// Write the config into `dir` (unless it is there) and start Synapse.
    fn start(port: u16, dir: &Path) -> Self {
        let config = dir.join("homeserver.yaml");
        if !config.exists() {
            let fill = |name: &str| {
                let t = std::fs::read_to_string(common::root().join("tests/servers/matrix").join(name)).unwrap();
                t.replace("@PORT@", &port.to_string()).replace("@DIR@", &dir.display().to_string())
            };
            std::fs::write(&config, fill("homeserver.yaml.in")).unwrap();
            std::fs::write(dir.join("log.config"), fill("log.config")).unwrap();
            // A fixed test-only signing key saves a key-generation run.
            std::fs::write(dir.join("signing.key"), "ed25519 a_kata AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA\n").unwrap();
        }
        let out = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("stdout.log")).unwrap();
        let child = Command::new(synapse_python())
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start synapse");
        let child = ChildGuard(Some(child));
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let s = Synapse { port, dir: dir.to_path_buf(), child, http };
        wait_for_or(
            "synapse to answer",
            Duration::from_secs(120),
            || std::fs::read_to_string(s.dir.join("stdout.log")).unwrap_or_default(),
            || s.http.get(format!("{}/_matrix/client/versions", s.base())).send().ok().filter(|r| r.status().is_success()),
        );
        s
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would; the data directory stays.
    fn kill(mut self) -> PathBuf {
        self.child.signal_and_wait("KILL");
        self.dir.clone()
    }

    /// A request as `token`; returns status and JSON body.
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base());
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// Register `user` (open registration, m.login.dummy); returns its token.
    fn register(&self, user: &str) -> String {
        let body = json!({"username": user, "password": format!("pw-{user}-123456"), "auth": {"type": "m.login.dummy"}});
        let (st, v) = self.call("POST", "/_matrix/client/v3/register", None, Some(body));
        assert_eq!(st, 200, "register {user}: {v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    /// Register an admin with the shared-secret API (HMAC-SHA1 over nonce,
    /// user, password and "admin", as register_new_matrix_user does).
    fn register_admin(&self, user: &str) -> String {
        let (_, n) = self.call("GET", "/_synapse/admin/v1/register", None, None);
        let nonce = n["nonce"].as_str().unwrap();
        let password = format!("pw-{user}-123456");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"kata-test-only");
        let msg = [nonce, user, &password, "admin"].join("\0");
        let mac: String = ring::hmac::sign(&key, msg.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let body = json!({"nonce": nonce, "username": user, "password": password, "admin": true, "mac": mac});
        let (st, v) = self.call("POST", "/_synapse/admin/v1/register", None, Some(body));
        assert_eq!(st, 200, "register admin: {v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    fn create_room(&self, token: &str, body: Value) -> String {
        let (st, v) = self.call("POST", "/_matrix/client/v3/createRoom", Some(token), Some(body));
        assert_eq!(st, 200, "createRoom: {v}");
        v["room_id"].as_str().unwrap().to_string()
    }

    fn join(&self, token: &str, room: &str) {
        let (st, v) = self.call("POST", &format!("/_matrix/client/v3/join/{}", enc(room)), Some(token), Some(json!({})));
        assert_eq!(st, 200, "join: {v}");
    }

    /// Post `content` as an m.room.message; returns its event id.
    fn say(&self, token: &str, room: &str, content: Value) -> String {
        let txn = format!("t{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
        let (st, v) = self.call("PUT", &path, Some(token), Some(content));
        assert_eq!(st, 200, "send: {v}");
        v["event_id"].as_str().unwrap().to_string()
    }

    fn text(&self, token: &str, room: &str, body: &str) -> String {
        self.say(token, room, json!({"msgtype": "m.text", "body": body}))
    }

    /// Every m.room.message in `room` (as `token` sees it), oldest first.
    fn messages(&self, token: &str, room: &str) -> Vec<Value> {
        let (st, v) = self.call("GET", &format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(room)), Some(token), None);
        assert_eq!(st, 200, "messages: {v}");
        let mut all: Vec<Value> = v["chunk"].as_array().unwrap().iter().filter(|e| e["type"] == "m.room.message").cloned().collect();
        all.reverse();
        all
    }

    /// What the bot said in `room`, oldest first.
    fn bot_said(&self, token: &str, room: &str) -> Vec<Value> {
        self.messages(token, room).into_iter().filter(|e| e["sender"] == BOT_ID).collect()
    }

    fn members(&self, token: &str, room: &str) -> Vec<String> {
        let (_, v) = self.call("GET", &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room)), Some(token), None);
        v["joined"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// Requests the access log recorded whose request line contains `what`.
    fn requests(&self, what: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.join("homeserver.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains("Processed request") && l.contains(what)).count()
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The `[plugins.matrix]` table for `synapse` (the grant is `grant`'s
/// client API), with `extra` lines. The token comes from MATRIX_TEST_TOKEN.
fn plugin_toml(synapse: &Synapse, grant: &str, config: &str, extra: &str) -> String {
    format!(
        "\n[plugins.matrix]\npath = \"{wasm}\"\nnetwork = [\"{grant}/_matrix/client\"]\n\
         secrets = {{ access_token = \"env:MATRIX_TEST_TOKEN\" }}\n\
         config = {{ homeserver = \"{base}\", auto_join = true, sync_timeout_ms = 5000, poll_interval = \"200ms\"{config} }}\n{extra}\n",
        wasm = guest("matrix").display(),
        base = synapse.base(),
    )
}

/// Wait until the bot said `body` in `room` (replying to `reply_to`),
/// returning that event.
fn expect_reply(s: &Synapse, token: &str, room: &str, body: &str, ws: &TestWorkspace) -> Value {
    wait_for_or(
        &format!("the bot's reply {body:?}"),
        WAIT,
        || ws.log(),
        || s.bot_said(token, room).into_iter().find(|e| e["content"]["body"] == body),
    )
}

/// Every text the bot said in `room` appears once.
fn assert_no_duplicates(s: &Synapse, token: &str, room: &str) -> Vec<String> {
    let said: Vec<String> = s.bot_said(token, room).iter().map(|e| e["content"]["body"].as_str().unwrap_or("").to_string()).collect();
    let mut unique = said.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), said.len(), "the bot said something twice in {room}: {said:?}");
    said
}

#[test]
fn talks_in_direct_and_group_rooms_and_loses_nothing_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let synapse = Synapse::start(port, dir.path());
    let bot = synapse.register(BOT);
    let ann = synapse.register("ann");
    let bob = synapse.register("bob");
    // A direct chat (the invitation says is_direct) and a group of three.
    let dm = synapse.create_room(&ann, json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [BOT_ID]}));
    let group = synapse.create_room(&ann, json!({"preset": "private_chat", "name": "Team", "invite": [BOT_ID, "@bob:localhost"]}));
    synapse.join(&bob, &group);

    let ws = TestWorkspace::new(&plugin_toml(
        &synapse,
        &synapse.base(),
        ", timeline_limit = 2",
        &format!("allow_from = [\"*\"]\ngroups = [\"{group}\"]"),
    ));
    let env = [("MATRIX_TEST_TOKEN", bot.as_str())];
    let mut daemon = ws.run(&env);
    // auto_join: the bot accepts both invitations from its first sync.
    for room in [&dm, &group] {
        wait_for_or("the bot to join", WAIT, || ws.log(), || synapse.members(&ann, room).contains(&BOT_ID.to_string()).then_some(()));
    }

    // Direct: every message reaches the agent, the reply quotes it.
    let hello = synapse.text(&ann, &dm, "hello direct");
    let reply = expect_reply(&synapse, &ann, &dm, "hello direct", &ws);
    assert_eq!(reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"], hello.as_str(), "{reply}");

    // Group: chatter is stored but not answered; a mention by name is.
    synapse.text(&bob, &group, "just chatting here");
    synapse.text(&bob, &group, "kata: hello group");
    expect_reply(&synapse, &bob, &group, "kata: hello group", &ws);
    // A thread: the root is not addressed; a reply in the thread that
    // mentions the bot (m.mentions) is answered in the same thread.
    let root = synapse.text(&ann, &group, "a thread about lunch");
    let in_thread = synapse.say(
        &ann,
        &group,
        json!({"msgtype": "m.text", "body": "what do you think?", "m.mentions": {"user_ids": [BOT_ID]},
               "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": true, "m.in_reply_to": {"event_id": root}}}),
    );
    let r = expect_reply(&synapse, &ann, &group, "what do you think?", &ws);
    assert_eq!(r["content"]["m.relates_to"]["rel_type"], "m.thread", "{r}");
    assert_eq!(r["content"]["m.relates_to"]["event_id"], root.as_str(), "{r}");
    assert_eq!(r["content"]["m.relates_to"]["m.in_reply_to"]["event_id"], in_thread.as_str(), "{r}");

    // An image with a caption: the attachment is listed with its mxc URL.
    synapse.say(
        &ann,
        &dm,
        json!({"msgtype": "m.image", "body": "look at this", "filename": "cat.png", "url": "mxc://localhost/cat123",
               "info": {"mimetype": "image/png", "size": 4321}}),
    );
    expect_reply(&synapse, &ann, &dm, "look at this", &ws);

    // The homeserver crashes right after a message was accepted, and comes
    // back on the same port with the same data.
    synapse.text(&ann, &dm, "just before the crash");
    let data = synapse.kill();
    std::thread::sleep(Duration::from_secs(2));
    let synapse = Synapse::start(port, &data);
    synapse.text(&ann, &dm, "after the restart");
    expect_reply(&synapse, &ann, &dm, "just before the crash", &ws);
    expect_reply(&synapse, &ann, &dm, "after the restart", &ws);

    // kata stops; more is said than one sync's timeline holds
    // (timeline_limit = 2): after the restart kata pages back for the rest.
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    let missed: Vec<String> = (1..=5).map(|i| format!("while kata was down {i}")).collect();
    for m in &missed {
        synapse.text(&ann, &dm, m);
    }
    let mut daemon = ws.run(&env);
    for m in &missed {
        expect_reply(&synapse, &ann, &dm, m, &ws);
    }
    // Settle, then count: every reply once, nothing else said (no echo loop).
    std::thread::sleep(Duration::from_secs(3));
    assert!(daemon.signal_and_wait("TERM").success());
    let dm_said = assert_no_duplicates(&synapse, &ann, &dm);
    assert_eq!(dm_said.len(), 4 + missed.len(), "{dm_said:?}");
    let group_said = assert_no_duplicates(&synapse, &ann, &group);
    assert_eq!(group_said, ["kata: hello group", "what do you think?"]);

    // What the inbox holds: kinds, mentions, the thread and the attachment;
    // nothing the bot sent came back in.
    let conn = rusqlite::Connection::open(ws.path().join(".kata/kata.db")).unwrap();
    let mut stmt =
        conn.prepare("SELECT conversation, is_group, mentioned, thread, sender, text, attachments FROM inbox ORDER BY id").unwrap();
    let rows: Vec<(String, bool, bool, Option<String>, String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(rows.iter().all(|r| r.4 != BOT_ID), "an own message came back in: {rows:?}");
    let row = |text: &str| rows.iter().find(|r| r.5 == text).unwrap_or_else(|| panic!("{text:?} not in the inbox: {rows:?}"));
    assert_eq!((row("hello direct").1, row("hello direct").2), (false, true));
    assert_eq!((row("just chatting here").1, row("just chatting here").2), (true, false));
    assert_eq!((row("kata: hello group").1, row("kata: hello group").2), (true, true));
    assert_eq!(row("what do you think?").3.as_deref(), Some(root.as_str()));
    let att: Value = serde_json::from_str(&row("look at this").6).unwrap();
    assert_eq!(att, json!([{"name": "cat.png", "mime_type": "image/png", "url": "mxc://localhost/cat123", "size": 4321}]));
    assert_eq!(rows.len(), 8 + missed.len(), "each message stored once: {rows:?}");
    assert!(!ws.log().contains(&bot), "the access token leaked into kata's log");
    let _ = synapse.kill();
}

#[test]
fn the_same_key_posts_once_and_rate_limits_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let synapse = Synapse::start(free_port(), dir.path());
    let (bot, ann, root) = (synapse.register(BOT), synapse.register("ann"), synapse.register_admin("root"));
    let dm = synapse.create_room(&ann, json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [BOT_ID]}));
    synapse.join(&bot, &dm);

    // 1. The plugin's send, called twice with one idempotency key (a retry
    //    after a crash, in a fresh instance): one event in the room, the same
    //    event id both times.
    let token_file = dir.path().join("token");
    std::fs::File::create(&token_file).unwrap().write_all(bot.as_bytes()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let lines = format!(
        "network = [\"{base}/_matrix/client\"]\nsecrets = {{ access_token = \"file:{}\" }}\nconfig = {{ homeserver = \"{base}\" }}",
        token_file.display(),
        base = synapse.base()
    );
    let out = kata::host::latest::OutboundMessage {
        conversation: dm.clone(),
        thread: None,
        reply_to: None,
        text: "exactly once".into(),
        idempotency_key: "outbox-7".into(),
        attachments: vec![],
        actions: vec![],
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (a, b) = rt.block_on(async {
        let db = kata::store::Db::open(&dir.path().join("kata.db")).unwrap();
        let engine = kata::engine::Engine::new(None).unwrap();
        let plugin = common::load_plugin(&engine, &db, "matrix", &guest("matrix"), &lines, dir.path()).unwrap();
        let mut first = plugin.instantiate().await.unwrap();
        first.connect().await.unwrap();
        let a = first.send(&out).await.unwrap();
        let mut second = plugin.instantiate().await.unwrap();
        second.connect().await.unwrap();
        (a, second.send(&out).await.unwrap())
    });
    drop(rt);
    assert!(a.id.starts_with('$') && a.id == b.id, "{} vs {}", a.id, b.id);
    let said = synapse.bot_said(&ann, &dm);
    assert_eq!(said.iter().filter(|e| e["content"]["body"] == "exactly once").count(), 1, "{said:?}");
    assert_eq!(synapse.requests("/send/m.room.message/kata.outbox-7"), 2);

    // 2. Synapse's own limiter, set low for the bot (1 message/s, burst 1):
    //    four messages at once make it answer 429 M_LIMIT_EXCEEDED with
    //    retry_after_ms; kata waits that long and every reply arrives once.
    let (st, v) = synapse.call(
        "POST",
        &format!("/_synapse/admin/v1/users/{}/override_ratelimit", enc(BOT_ID)),
        Some(&root),
        Some(json!({"messages_per_second": 1, "burst_count": 1})),
    );
    assert_eq!(st, 200, "{v}");
    let ws = TestWorkspace::new(&plugin_toml(&synapse, &synapse.base(), "", "allow_from = [\"*\"]"));
    let mut daemon = ws.run(&[("MATRIX_TEST_TOKEN", bot.as_str())]);
    // The first sync skips history: wait for it before talking.
    wait_for_or("the first sync", WAIT, || ws.log(), || (polls(&ws) > 0).then_some(()));
    let burst: Vec<String> = (1..=4).map(|i| format!("burst {i}")).collect();
    for m in &burst {
        synapse.text(&ann, &dm, m);
    }
    for m in &burst {
        expect_reply(&synapse, &ann, &dm, m, &ws);
    }
    assert!(daemon.signal_and_wait("TERM").success());
    let said = assert_no_duplicates(&synapse, &ann, &dm);
    assert_eq!(said.len(), 1 + burst.len(), "{said:?}");
    let log = ws.log();
    assert!(log.contains("send failed: rate limited; retry after"), "synapse never limited the bot:\n{log}");
    eprintln!(
        "measured: {} 429 answer(s) from synapse, {} rate-limited send(s) in kata's log",
        synapse.requests(" 429 "),
        log.matches("send failed: rate limited").count()
    );
    let _ = synapse.kill();
}

/// Successful polls so far, from `kata status --json`.
fn polls(ws: &TestWorkspace) -> u64 {
    let (ok, out, _) = kata(ws.path(), &["status", "--json"]);
    if !ok {
        return 0;
    }
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v["plugins"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "matrix")).map_or(0, |p| p["health"]["polls"].as_u64().unwrap_or(0))
}

#[test]
fn a_refused_token_shows_as_auth_failed_and_a_removed_grant_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let synapse = Synapse::start(free_port(), dir.path());
    let bot = synapse.register(BOT);

    // A token the homeserver does not know: auth-failed in `kata status`,
    // and kata does not hammer the server while it waits for a fix.
    let ws = TestWorkspace::new(&plugin_toml(&synapse, &synapse.base(), "", "allow_from = [\"*\"]"));
    let mut daemon = ws.run(&[("MATRIX_TEST_TOKEN", "syt_not_a_real_token_000000")]);
    let started = Instant::now();
    let status = wait_for_or(
        "auth-failed in kata status",
        WAIT,
        || ws.log(),
        || {
            let (ok, out, _) = kata(ws.path(), &["status", "--json"]);
            let v: Value = serde_json::from_str(&out).ok()?;
            let p = v["plugins"].as_array()?.iter().find(|p| p["name"] == "matrix")?.clone();
            (ok && p["channel"]["state"] == "failing").then_some(p)
        },
    );
    assert_eq!(status["channel"]["reason"], "auth-failed", "{status:#}");
    assert!(status["health"]["last_error"].as_str().unwrap().contains("M_UNKNOWN_TOKEN"), "{status:#}");
    let (_, human, _) = kata(ws.path(), &["status"]);
    assert!(human.contains("failing: auth-failed"), "{human}");
    std::thread::sleep(Duration::from_secs(10));
    let whoami = synapse.requests("/account/whoami");
    let secs = started.elapsed().as_secs();
    // One instance tries at start, then waits at least 30 s between tries.
    assert!((1..=3).contains(&whoami), "{whoami} whoami requests in {secs} s: a retry storm\n{}", ws.log());
    eprintln!("measured: {whoami} whoami request(s) in {secs} s with a refused token");
    assert!(synapse.requests("/sync") == 0, "no sync without a valid token");
    assert!(daemon.signal_and_wait("TERM").success());

    // The right token, but the grant names another port: the request is
    // denied and the log names the entry to add under [plugins.matrix].
    let ws = TestWorkspace::new(&plugin_toml(&synapse, "http://127.0.0.1:1", "", "allow_from = [\"*\"]"));
    let mut daemon = ws.run(&[("MATRIX_TEST_TOKEN", bot.as_str())]);
    let log = wait_for("the denial in the log", WAIT, || {
        let log = ws.log();
        log.contains("denied: no network grant").then_some(log)
    });
    assert!(log.contains(&format!("\"{}\"", synapse.base())) && log.contains("[plugins.matrix]"), "{log}");
    let (_, human, _) = kata(ws.path(), &["status"]);
    assert!(human.contains("failing: invalid-config"), "{human}");
    assert!(daemon.signal_and_wait("TERM").success());
    let (ok, out, err) = kata(ws.path(), &["audit", "--plugin", "matrix", "--json"]);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    let denied = rows.as_array().unwrap().iter().find(|r| r["verdict"] == "deny" && r["kind"] == "network").expect("a deny row");
    assert_eq!(denied["target"], format!("{}/_matrix/client/v3/account/whoami", synapse.base()));
    let _ = synapse.kill();
}
