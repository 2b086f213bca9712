//! Host-managed websocket and server-sent-event streams in the real daemon,
//! through the `guest-stream` fixture, against servers written here on
//! loopback: the host checks the grant, fills in the secret in the handshake
//! and the first frame, hands frames to the plugin, writes its replies and
//! the frames its `send` returns, redacts a secret value coming in, and
//! reconnects when the server closes the stream. (IRC, the line stream, is
//! tests/irc.rs.)
#![allow(clippy::unwrap_used, clippy::result_large_err, missing_docs)]

use crate::common;

use std::time::Duration;

use common::{TestWorkspace, guest, kata};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

const TOKEN: &str = "s3cret-stream-token";
const WAIT: Duration = Duration::from_secs(30);

fn workspace(url: &str, kind: &str) -> TestWorkspace {
    workspace_with(url, kind, "")
}

fn workspace_with(url: &str, kind: &str, extra: &str) -> TestWorkspace {
    TestWorkspace::new(&format!(
        "\n[plugins.stream]\npath = \"{}\"\nnetwork = [\"{url}\"]\nsecrets = {{ token = \"env:STREAM_TOKEN\" }}\n\
         config = {{ url = \"{url}\", kind = \"{kind}\" }}\nallow_from = [\"*\"]\n{extra}\n",
        guest("guest-stream").display()
    ))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Accept the daemon's websocket; returns it with the path and authorization it asked with.
async fn accept(listener: &TcpListener) -> (Ws, String, String) {
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept()).await.expect("the daemon connects").unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new((String::new(), String::new())));
    let s = seen.clone();
    let ws = tokio_tungstenite::accept_hdr_async(tcp, move |req: &Request, resp: Response| {
        let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        *s.lock().unwrap() = (req.uri().path().to_string(), auth);
        Ok(resp)
    })
    .await
    .unwrap();
    let (path, auth) = seen.lock().unwrap().clone();
    (ws, path, auth)
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a frame from the daemon") {
            Some(Ok(Message::Text(t))) => return t.as_str().to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn say(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_string())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_replies_sends_and_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://127.0.0.1:{}/ws", listener.local_addr().unwrap().port());
    let ws_dir = workspace(&url, "websocket");
    let mut daemon = ws_dir.run(&[("STREAM_TOKEN", TOKEN)]);

    let (mut ws, path, auth) = accept(&listener).await;
    // The secret reaches the granted server only, filled in by the host.
    assert_eq!((path.as_str(), auth.as_str()), ("/ws", format!("Bearer {TOKEN}").as_str()));
    assert_eq!(next_text(&mut ws).await, format!("HELLO {TOKEN}"));
    // A reply the plugin returns from on-frame.
    say(&mut ws, "ping").await;
    assert_eq!(next_text(&mut ws).await, "pong");
    // A message: inbox → echo agent → outbox → send → frames written to the stream.
    say(&mut ws, "msg:1:hello ws").await;
    assert_eq!(next_text(&mut ws).await, "reply:c1:hello ws");
    // A secret value coming in is redacted before the plugin (and the agent) see it.
    say(&mut ws, &format!("msg:2:leak {TOKEN}")).await;
    assert_eq!(next_text(&mut ws).await, "reply:c1:leak [REDACTED:token]");

    // The server closes the stream: the daemon subscribes and connects again.
    ws.close(None).await.unwrap();
    drop(ws);
    let (mut ws, _, auth) = accept(&listener).await;
    assert_eq!(auth, format!("Bearer {TOKEN}"));
    assert_eq!(next_text(&mut ws).await, format!("HELLO {TOKEN}"));
    say(&mut ws, "msg:3:again").await;
    assert_eq!(next_text(&mut ws).await, "reply:c1:again");

    assert!(daemon.signal_and_wait("TERM").success());
    let log = ws_dir.log();
    assert!(!log.contains(TOKEN), "the token leaked into the log");
    let (ok, out, err) = kata(ws_dir.path(), &["audit", "--plugin", "stream", "--json"]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    let opened = rows.iter().filter(|r| r["verdict"] == "allow" && r["kind"] == "network" && r["method"] == "GET").count();
    assert!(opened >= 2, "each connection is audited: {rows:?}");
    assert!(rows.iter().any(|r| r["kind"] == "redact"), "the redaction is audited: {rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_become_messages() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}/events", listener.local_addr().unwrap().port());
    let ws_dir = workspace(&url, "sse");
    let mut daemon = ws_dir.run(&[("STREAM_TOKEN", TOKEN)]);

    let (mut tcp, _) = tokio::time::timeout(WAIT, listener.accept()).await.expect("the daemon connects").unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(tokio::time::timeout(WAIT, tcp.read(&mut b)).await.unwrap().unwrap(), 1, "request cut short");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /events http/1.1\r\n"), "{head}");
    assert!(head.contains("accept: text/event-stream"), "{head}");
    assert!(head.contains(&format!("authorization: bearer {}", TOKEN.to_ascii_lowercase())), "{head}");
    tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n").await.unwrap();
    // A comment, one event, then one event whose data spans two lines, split
    // across writes.
    tcp.write_all(b": welcome\n\ndata: msg:1:hello sse\n\nevent: note\ndata: msg:2:two").await.unwrap();
    tcp.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.write_all(b"\r\ndata: lines\r\n\r\n").await.unwrap();

    let db_path = ws_dir.path().join(".kata/kata.db");
    let start = std::time::Instant::now();
    loop {
        if let Ok(db) = kata::store::Db::open(&db_path)
            && db.plugin_activity("stream").unwrap().sent == 2
        {
            break;
        }
        assert!(start.elapsed() < WAIT, "two events were not stored and answered:\n{}", ws_dir.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(daemon.signal_and_wait("TERM").success());
    let log = ws_dir.log();
    assert!(log.contains(r#"would send "hello sse""#), "{log}");
    // The two data lines arrive as one message, joined with a line break.
    assert!(log.contains(r#"would send "two\nlines""#), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_requests_are_frames_answered_by_the_plugin() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let ws_dir = workspace_with(&url, "webhook", "limits = { max_response = \"64KiB\" }");
    let mut daemon = ws_dir.run(&[("STREAM_TOKEN", TOKEN)]);
    let client = reqwest::Client::new();
    // The listener comes up once the daemon has checked the grant.
    let start = std::time::Instant::now();
    let resp = loop {
        match client.post(format!("{url}/incoming?x=1")).header("x-from", "ann").body("msg:9:hello hook").send().await {
            Ok(r) => break r,
            Err(e) => {
                assert!(start.elapsed() < WAIT, "the webhook listener never came up: {e}\n{}", ws_dir.log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "accepted 9");
    // Outside the granted path: not handed to the plugin.
    assert_eq!(client.get(format!("http://127.0.0.1:{port}/other")).send().await.unwrap().status(), 404);
    // The grants' rule: whole segments after normalising, so `/hookx` is not
    // under `/hook`, nor is a dot segment hidden behind `%2F`; `/%68ook//y` is.
    for (path, status) in [("/hookx/y", 404), ("/hook/..%2Fother", 404), ("/%68ook//y", 204)] {
        let got = client.post(format!("http://127.0.0.1:{port}{path}")).body("nothing").send().await.unwrap().status();
        assert_eq!(got, status, "{path}");
    }
    // A request the plugin makes no message of: no content.
    assert_eq!(client.post(&url).body("nothing").send().await.unwrap().status(), 204);
    // Larger than limits.max_response: refused before the plugin sees it.
    let big = "x".repeat(100 << 10);
    assert_eq!(client.post(&url).body(big).send().await.unwrap().status(), 413);

    let db_path = ws_dir.path().join(".kata/kata.db");
    let start = std::time::Instant::now();
    loop {
        if let Ok(db) = kata::store::Db::open(&db_path)
            && db.plugin_activity("stream").unwrap().sent == 1
        {
            break;
        }
        assert!(start.elapsed() < WAIT, "the webhook message was not stored and answered:\n{}", ws_dir.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(daemon.signal_and_wait("TERM").success());
    let log = ws_dir.log();
    assert!(log.contains(r#"would send "hello hook""#), "{log}");
    let (ok, out, err) = kata(ws_dir.path(), &["audit", "--plugin", "stream", "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"LISTEN\""), "the listener is audited: {out}");
}
