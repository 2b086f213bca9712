//! The webhook plugin (plugins/webhook) in the real daemon, with signatures
//! checked by the host: a local HTTP client here plays the sender (signing
//! the way GitHub, Slack, a generic HMAC sender and a shared-secret sender
//! do), and a local HTTP server here receives the replies kata POSTs. A
//! request that fails its check is answered 401, audited, and never reaches
//! the plugin; the signing secret never enters the guest.
#![allow(clippy::unwrap_used, missing_docs)]

use crate::common;

use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use common::{TestWorkspace, free_port, guest, kata, read_request, wait_for, wait_for_or};

const WAIT: Duration = Duration::from_secs(60);
const GH_SECRET: &str = "gh-signing-secret-0001";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const HMAC_SECRET: &str = "generic-hmac-secret-0003";
const TOKEN_SECRET: &str = "shared-header-token-0004";

/// One request the reply server received.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: Value,
    /// What the server answered.
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// The server kata POSTs replies to: records every request and answers with
/// the scripted statuses first (status, extra header lines), then `sticky`
/// if set, else `200 {"id": "rN"}`. It can be stopped and started again on
/// the same port.
#[derive(Clone)]
struct ReplyServer {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<(u16, &'static str)>>>,
    sticky: Arc<Mutex<Option<u16>>>,
    stop: Arc<AtomicBool>,
}

impl ReplyServer {
    fn start(port: u16) -> Self {
        let s = ReplyServer {
            port,
            received: Arc::default(),
            script: Arc::default(),
            sticky: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        s.listen();
        s
    }

    fn listen(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let s = self.clone();
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let (head, body) = read_request(&mut BufReader::new(stream.try_clone().unwrap()));
                let (status, extra) =
                    s.script.lock().unwrap().pop_front().or_else(|| s.sticky.lock().unwrap().map(|c| (c, ""))).unwrap_or((200, ""));
                let n = {
                    let mut r = s.received.lock().unwrap();
                    r.push(Received { head, body: serde_json::from_slice(&body).unwrap_or(Value::Null), status });
                    r.len()
                };
                let body = if status == 200 { format!("{{\"id\":\"r{n}\"}}") } else { format!("{{\"error\":\"status {status}\"}}") };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
    }

    /// Stop answering (the port is closed until [`Self::restart`]).
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    }

    fn restart(&self) {
        self.stop.store(false, Ordering::SeqCst);
        self.listen();
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/replies", self.port)
    }

    /// Wait for a reply saying `text` to be delivered (answered 200); returns it.
    fn expect(&self, text: &str, ws: &TestWorkspace) -> Received {
        wait_for_or(
            &format!("the reply {text:?}"),
            WAIT,
            || ws.log(),
            || self.received().into_iter().find(|r| r.body["text"] == text && r.status == 200),
        )
    }
}

fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A `[plugins.NAME]` table running the webhook plugin on `listen`, with
/// replies to `reply_url`, the signature rule `verify` and its secret from
/// environment variable `env`.
fn plugin(name: &str, listen: &str, reply_url: &str, verify: &str, env: &str, extra: &str) -> String {
    format!(
        "\n[plugins.{name}]\npath = \"{wasm}\"\nnetwork = [\"{listen}\", \"{reply_url}\"]\n\
         secrets = {{ {name}_secret = \"env:{env}\" }}\nwebhook = {{ {verify}, secret = \"{name}_secret\" }}\n\
         config = {{ listen = \"{listen}\", reply_url = \"{reply_url}\" }}\nallow_from = [\"*\"]\n{extra}\n",
        wasm = guest("webhook").display(),
    )
}

/// POST `body` with `headers`; returns the status and the response body.
fn post(url: &str, body: &str, headers: &[(&str, String)]) -> (u16, String) {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut req = client.post(url).header("content-type", "application/json").body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.text().unwrap_or_default())
}

/// Wait until something listens at `url` (a TCP connection only: a request
/// would be checked, refused and audited like any unsigned one).
fn wait_listening(url: &str, ws: &TestWorkspace) {
    let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
    wait_for_or("the webhook listener", WAIT, || ws.log(), || std::net::TcpStream::connect(&addr).ok().map(|_| ()));
}

/// `kata status --json`'s entry for plugin `name` (null while the daemon is not up).
fn status_of(ws: &TestWorkspace, name: &str) -> Value {
    let (ok, out, _) = kata(ws.path(), &["status", "--json"]);
    if !ok {
        return Value::Null;
    }
    let v: Value = serde_json::from_str(&out).unwrap();
    v["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap_or(Value::Null)
}

#[test]
fn each_recipe_passes_signed_requests_and_refuses_the_rest_before_the_plugin() {
    let replies = ReplyServer::start(free_port());
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let hook = |i: usize| format!("http://127.0.0.1:{}/hook", ports[i]);
    let toml = [
        plugin("gh", &hook(0), &replies.url(), "verify = \"github\"", "GH_SECRET", ""),
        plugin("sl", &hook(1), &replies.url(), "verify = \"slack\", max_age = \"5m\"", "SLACK_SECRET", ""),
        plugin(
            "hm",
            &hook(2),
            &replies.url(),
            "verify = \"hmac-sha256\", header = \"X-Sig\", timestamp_header = \"X-Ts\"",
            "HMAC_SECRET",
            "",
        ),
        plugin("hd", &hook(3), &replies.url(), "verify = \"header\", header = \"X-Hook-Token\"", "TOKEN_SECRET", ""),
    ]
    .concat();
    let ws = TestWorkspace::new(&toml);
    let (ok, out, err) = kata(ws.path(), &["policy", "check"]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = kata(ws.path(), &["policy", "explain", "sl"]);
    assert!(ok && out.contains("verifies webhook requests only") && out.contains("verify = \"slack\""), "{out}");
    let mut daemon =
        ws.run(&[("GH_SECRET", GH_SECRET), ("SLACK_SECRET", SLACK_SECRET), ("HMAC_SECRET", HMAC_SECRET), ("TOKEN_SECRET", TOKEN_SECRET)]);
    for i in 0..4 {
        wait_listening(&hook(i), &ws);
    }
    let body = |who: &str| json!({"text": format!("hello from {who}"), "sender": "ann", "id": format!("{who}-1")}).to_string();

    // GitHub: X-Hub-Signature-256 over the body.
    let b = body("gh");
    let good = vec![("X-Hub-Signature-256", format!("sha256={}", hmac_hex(GH_SECRET, b.as_bytes())))];
    let (st, text) = post(&hook(0), &b, &good);
    assert_eq!((st, text.contains("\"ok\":true")), (200, true), "{text}");
    let wrong = vec![("X-Hub-Signature-256", format!("sha256={}", hmac_hex("not-the-secret", b.as_bytes())))];
    assert_eq!(post(&hook(0), &b, &wrong).0, 401);
    assert_eq!(post(&hook(0), &b, &[]).0, 401);
    // The signature of another body.
    assert_eq!(post(&hook(0), &body("gh2"), &good).0, 401);

    // Slack: v0:TIMESTAMP:BODY, and the timestamp within max_age.
    let b = body("sl");
    let slack = |ts: u64, secret: &str| {
        vec![
            ("X-Slack-Request-Timestamp", ts.to_string()),
            ("X-Slack-Signature", format!("v0={}", hmac_hex(secret, format!("v0:{ts}:{b}").as_bytes()))),
        ]
    };
    assert_eq!(post(&hook(1), &b, &slack(now_s(), SLACK_SECRET)).0, 200);
    assert_eq!(post(&hook(1), &b, &slack(now_s() - 600, SLACK_SECRET)).0, 401, "a stale (replayed) request");
    assert_eq!(post(&hook(1), &b, &slack(now_s(), "wrong")).0, 401);
    assert_eq!(post(&hook(1), &b, &[]).0, 401);

    // Generic HMAC with a timestamp: TIMESTAMP.BODY in X-Sig.
    let b = body("hm");
    let hm = |ts: u64| vec![("X-Ts", ts.to_string()), ("X-Sig", hmac_hex(HMAC_SECRET, format!("{ts}.{b}").as_bytes()))];
    assert_eq!(post(&hook(2), &b, &hm(now_s())).0, 200);
    assert_eq!(post(&hook(2), &b, &hm(now_s() - 3600)).0, 401);
    assert_eq!(post(&hook(2), &b, &[("X-Sig", hmac_hex(HMAC_SECRET, b.as_bytes()))]).0, 401, "no timestamp");

    // A shared secret in a header.
    let b = body("hd");
    assert_eq!(post(&hook(3), &b, &[("X-Hook-Token", TOKEN_SECRET.to_string())]).0, 200);
    assert_eq!(post(&hook(3), &b, &[("X-Hook-Token", format!("{TOKEN_SECRET}x"))]).0, 401);
    assert_eq!(post(&hook(3), &b, &[]).0, 401);

    // Each signed request round-trips: the echo agent's reply is POSTed to reply_url.
    for who in ["gh", "sl", "hm", "hd"] {
        let r = replies.expect(&format!("hello from {who}"), &ws);
        assert_eq!((r.body["conversation"].as_str(), r.body["reply_to"].as_str()), (Some("ann"), Some(format!("{who}-1").as_str())));
        assert!(r.header("idempotency-key").is_some_and(|k| !k.is_empty()), "{}", r.head);
    }
    // The plugins saw exactly the signed requests: one frame each.
    for who in ["gh", "sl", "hm", "hd"] {
        let p = status_of(&ws, who);
        assert_eq!(p["health"]["polls"], 1, "{who}: {p:#}");
        assert_eq!(p["health"]["received"], 1, "{who}: {p:#}");
        assert_eq!(p["channel"]["state"], "connected", "{who}: {p:#}");
    }
    assert!(daemon.signal_and_wait("TERM").success());

    // Every refusal is audited: kind webhook, why, and the kata.toml line.
    let (ok, out, err) = kata(ws.path(), &["audit", "--json", "--limit", "1000"]);
    assert!(ok, "{err}");
    let rows: Vec<Value> =
        serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().iter().filter(|r| r["kind"] == "webhook").cloned().collect();
    let count = |who: &str| rows.iter().filter(|r| r["plugin"] == who && r["verdict"] == "deny").count();
    assert_eq!((count("gh"), count("sl"), count("hm"), count("hd")), (3, 3, 2, 2), "{rows:#?}");
    let stale = rows.iter().find(|r| r["plugin"] == "sl" && r["detail"].as_str().unwrap().contains("old")).expect("the stale one");
    assert!(stale["detail"].as_str().unwrap().contains("max_age (300 s)"), "{stale}");
    assert!(
        stale["policy"].as_str().unwrap().contains("kata.toml:") && stale["policy"].as_str().unwrap().contains("verify = \"slack\""),
        "{stale}"
    );
    let missing = rows.iter().find(|r| r["plugin"] == "gh" && r["detail"].as_str().unwrap().contains("missing")).expect("the unsigned one");
    assert_eq!((missing["method"].as_str(), missing["target"].as_str()), (Some("POST"), Some("/hook")));

    // No signing secret anywhere kata writes: not the database, not the log.
    let db = std::fs::read(ws.path().join(".kata/kata.db")).unwrap();
    let wal = std::fs::read(ws.path().join(".kata/kata.db-wal")).unwrap_or_default();
    for secret in [GH_SECRET, SLACK_SECRET, HMAC_SECRET, TOKEN_SECRET] {
        let found = |hay: &[u8]| hay.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found(&db) && !found(&wal) && !ws.log().contains(secret), "{secret} was written somewhere");
    }
}

#[test]
fn webhook_round_trip_with_groups_threads_attachments_and_reply_failures() {
    let replies = ReplyServer::start(free_port());
    let listen = format!("http://127.0.0.1:{}/hook", free_port());
    let ws = TestWorkspace::new(&plugin("hooks", &listen, &replies.url(), "verify = \"github\"", "GH_SECRET", "groups = [\"team\"]"));
    let mut daemon = ws.run(&[("GH_SECRET", GH_SECRET)]);
    wait_listening(&listen, &ws);
    let send = |v: Value| {
        let b = v.to_string();
        let (st, text) = post(&listen, &b, &[("X-Hub-Signature-256", format!("sha256={}", hmac_hex(GH_SECRET, b.as_bytes())))]);
        assert_eq!(st, 200, "{text}");
    };

    // A direct message, and in the group: chatter (not answered) and a
    // mention in a thread (answered in the thread, as a reply).
    send(json!({"text": "hi direct", "sender": "ann", "id": "d1"}));
    replies.expect("hi direct", &ws);
    send(json!({"text": "just chatting", "sender": "bob", "conversation": "team", "group": true, "id": "g1"}));
    send(
        json!({"text": "@kata status?", "sender": "bob", "conversation": "team", "group": true, "mentioned": true, "thread": "t-9", "id": "g2"}),
    );
    let r = replies.expect("@kata status?", &ws);
    assert_eq!(
        r.body,
        json!({"conversation": "team", "thread": "t-9", "reply_to": "g2", "text": "@kata status?", "idempotency_key": r.body["idempotency_key"]})
    );
    // An attachment is listed on the stored message.
    send(json!({"text": "see the log", "sender": "ann", "id": "d2",
                "attachments": [{"name": "log.txt", "url": "https://files.example.org/log.txt", "mime_type": "text/plain", "size": 3}]}));
    replies.expect("see the log", &ws);

    // The reply server goes away and comes back: the reply waits, then
    // arrives once.
    replies.stop();
    send(json!({"text": "while replies are down", "sender": "ann", "id": "d3"}));
    let db = wait_for("the daemon's database", WAIT, || kata::store::Db::open(&ws.path().join(".kata/kata.db")).ok());
    wait_for_or(
        "a failed delivery",
        WAIT,
        || ws.log(),
        || (db.plugin_activity("hooks").ok()?.pending > 0 && ws.log().contains("send failed: network error")).then_some(()),
    );
    replies.restart();
    replies.expect("while replies are down", &ws);

    // Rate limited once (429, Retry-After: 1): retried after a second, delivered once.
    replies.script.lock().unwrap().push_back((429, "retry-after: 1\r\n"));
    send(json!({"text": "slow down", "sender": "ann", "id": "d4"}));
    replies.expect("slow down", &ws);
    assert!(ws.log().contains("send failed: rate limited; retry after 1000 ms"), "{}", ws.log());

    // Refused credentials (401): auth-failed in `kata status`, and no storm
    // of retries while the user fixes it.
    *replies.sticky.lock().unwrap() = Some(401);
    let before = replies.received().len();
    send(json!({"text": "nobody hears this", "sender": "ann", "id": "d5"}));
    let p = wait_for_or(
        "auth-failed in kata status",
        WAIT,
        || ws.log(),
        || {
            let p = status_of(&ws, "hooks");
            (p["channel"]["reason"] == "auth-failed").then_some(p)
        },
    );
    assert_eq!(p["channel"]["state"], "failing", "{p:#}");
    let (_, human, _) = kata(ws.path(), &["status"]);
    assert!(human.contains("failing: auth-failed"), "{human}");
    std::thread::sleep(Duration::from_secs(8));
    let tries = replies.received().len() - before;
    assert_eq!(tries, 1, "one attempt, then at least 30 s before the next: {tries}");
    assert!(daemon.signal_and_wait("TERM").success());

    // Nothing twice: every reply delivered (answered 200) exactly once, a
    // retried one with the same idempotency key; and nothing the daemon
    // sent came back in (the inbox holds exactly the requests).
    let got = replies.received();
    for t in ["hi direct", "@kata status?", "see the log", "while replies are down", "slow down"] {
        let tries: Vec<&Received> = got.iter().filter(|r| r.body["text"] == t).collect();
        assert_eq!(tries.iter().filter(|r| r.status == 200).count(), 1, "{t}: {tries:?}");
        let keys: Vec<String> = tries.iter().map(|r| r.header("idempotency-key").unwrap()).collect();
        assert!(keys.iter().all(|k| *k == keys[0]), "{t}: {keys:?}");
    }
    assert!(!got.iter().any(|r| r.body["text"] == "just chatting"), "chatter in a group was answered");
    let conn = rusqlite::Connection::open(ws.path().join(".kata/kata.db")).unwrap();
    let mut stmt = conn.prepare("SELECT conversation, is_group, mentioned, thread, text, attachments FROM inbox ORDER BY id").unwrap();
    let rows: Vec<(String, bool, bool, Option<String>, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 7, "each request stored once, nothing else: {rows:?}");
    let row = |t: &str| rows.iter().find(|r| r.4 == t).unwrap().clone();
    assert_eq!((row("just chatting").1, row("just chatting").2), (true, false));
    assert_eq!(row("@kata status?").3.as_deref(), Some("t-9"));
    let att: Value = serde_json::from_str(&row("see the log").5).unwrap();
    assert_eq!(att, json!([{"name": "log.txt", "mime_type": "text/plain", "url": "https://files.example.org/log.txt", "size": 3}]));
}

#[test]
fn a_reply_url_without_a_grant_is_denied_naming_the_line() {
    let replies = ReplyServer::start(free_port());
    let listen = format!("http://127.0.0.1:{}/hook", free_port());
    let toml = plugin("hooks", &listen, &replies.url(), "verify = \"github\"", "GH_SECRET", "");
    // Grant the listener only: replies to reply_url are refused.
    let toml = toml.replace(&format!("network = [\"{listen}\", \"{}\"]", replies.url()), &format!("network = [\"{listen}\"]"));
    let ws = TestWorkspace::new(&toml);
    let mut daemon = ws.run(&[("GH_SECRET", GH_SECRET)]);
    wait_listening(&listen, &ws);
    let b = json!({"text": "answer me", "sender": "ann", "id": "x1"}).to_string();
    assert_eq!(post(&listen, &b, &[("X-Hub-Signature-256", format!("sha256={}", hmac_hex(GH_SECRET, b.as_bytes())))]).0, 200);
    let log = wait_for("the denial in the log", WAIT, || {
        let log = ws.log();
        log.contains("denied: no network grant").then_some(log)
    });
    assert!(log.contains(&format!("\"http://127.0.0.1:{}", replies.port)) && log.contains("[plugins.hooks]"), "{log}");
    assert!(replies.received().is_empty());
    assert!(daemon.signal_and_wait("TERM").success());
}

#[test]
fn status_tells_not_installed_installed_connected_and_failing_channels() {
    let replies = ReplyServer::start(free_port());
    let listen = format!("http://127.0.0.1:{}/hook", free_port());
    let unlistened = format!("http://127.0.0.1:{}/hook", free_port());
    let toml = [
        plugin("up", &listen, &replies.url(), "verify = \"github\"", "GH_SECRET", ""),
        // Installed but switched off.
        plugin("off", &unlistened, &replies.url(), "verify = \"github\"", "GH_SECRET", "enabled = false"),
        // Its listen address is not granted: the host refuses the stream.
        plugin("refused", &unlistened, &replies.url(), "verify = \"github\"", "GH_SECRET", "")
            .replace(&format!("network = [\"{unlistened}\", "), "network = ["),
        // Grants waiting for `kata plugin add`.
        "\n[plugins.later]\nnetwork = [\"https://example.org\"]\n".to_string(),
    ]
    .concat();
    let ws = TestWorkspace::new(&toml);
    let mut daemon = ws.run(&[("GH_SECRET", GH_SECRET)]);
    let channel = |name: &str| status_of(&ws, name)["channel"].clone();
    wait_for_or(
        "every channel's state",
        WAIT,
        || ws.log(),
        || (channel("up")["state"] == "connected" && channel("refused")["state"] == "failing").then_some(()),
    );
    assert_eq!(channel("refused"), json!({"state": "failing", "reason": "invalid-config"}));
    assert_eq!(channel("off"), json!({"state": "installed", "reason": "disabled"}));
    assert_eq!(channel("later"), json!({"state": "not-installed", "reason": "not-installed"}));
    let (ok, human, _) = kata(ws.path(), &["status"]);
    assert!(ok, "{human}");
    let line = |name: &str| human.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    assert!(line("up ").contains("connected"), "{human}");
    assert!(line("refused").contains("failing: invalid-config") && line("refused").contains("refused by the policy"), "{human}");
    assert!(line("off").contains("installed (disabled)"), "{human}");
    assert!(line("later").contains("not-installed"), "{human}");
    assert!(daemon.signal_and_wait("TERM").success());
}
