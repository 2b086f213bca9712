//! A Telegram Bot API server on loopback that keeps to the rules the real one
//! keeps and telegram-test-api does not:
//!
//! - `getUpdates` returns every update from `offset` on, again and again,
//!   until a later call's `offset` confirms it (`offset` = the last seen
//!   `update_id` + 1); only then is an update forgotten. So a client that
//!   polls with a stale offset sees the same updates twice — at-least-once.
//! - `timeout` is a real long poll: with nothing to return, the call waits up
//!   to that many seconds for the next update.
//! - Every method lives under `/bot<TOKEN>/`; another token gets 401.
//! - `sendMessage` answers with the sent message (`message_id`, `chat`).
//!
//! It records every `sendMessage`, so a test can count each reply exactly.
//! Connections are kept alive (HTTP/1.1), as kata's sandbox reuses them.
#![allow(dead_code)]

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Most updates one `getUpdates` returns (the real API's default `limit`).
const LIMIT: usize = 100;
/// The longest long poll the real API allows.
const MAX_TIMEOUT_S: u64 = 50;

/// One `sendMessage` the bot made.
#[derive(Debug, Clone)]
pub struct Sent {
    pub chat_id: i64,
    pub text: String,
    pub reply_to_message_id: Option<i64>,
}

#[derive(Default)]
struct State {
    /// Updates not yet confirmed, oldest first.
    pending: Vec<Value>,
    next_update_id: i64,
    next_message_id: i64,
    sent: Vec<Sent>,
    /// `getUpdates` calls that returned an update already returned before.
    redelivered: u64,
    /// The highest update id handed out so far.
    handed_out: i64,
}

/// The running server.
pub struct BotApiServer {
    pub port: u16,
    token: String,
    state: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl BotApiServer {
    /// Serve the bot with `token` on a free loopback port.
    pub fn start(token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new((Mutex::new(State { next_update_id: 1000, next_message_id: 1, ..State::default() }), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp, tok) = (state.clone(), stop.clone(), token.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stp.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, tok, stp) = (st.clone(), tok.clone(), stp.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &st, &tok, &stp);
                });
            }
        });
        Self { port, token: token.to_string(), state, stop }
    }

    /// The `api_base` to configure the Telegram plugin with.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A user (id = chat id, a private chat) sends `text` to the bot.
    pub fn user_says(&self, chat: i64, text: &str) {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap();
        let (update_id, message_id) = (st.next_update_id, st.next_message_id);
        st.next_update_id += 1;
        st.next_message_id += 1;
        let date = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        st.pending.push(json!({
            "update_id": update_id,
            "message": {
                "message_id": message_id,
                "from": {"id": chat, "is_bot": false, "first_name": "User", "username": format!("user{chat}")},
                "chat": {"id": chat, "type": "private", "first_name": "User"},
                "date": date,
                "text": text,
            }
        }));
        cv.notify_all();
    }

    /// Every `sendMessage` so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.state.0.lock().unwrap().sent.clone()
    }

    /// Updates not yet confirmed by an offset.
    pub fn unconfirmed(&self) -> usize {
        self.state.0.lock().unwrap().pending.len()
    }

    /// How many `getUpdates` answers repeated an update handed out before
    /// (a client that polled again before moving its offset).
    pub fn redelivered(&self) -> u64 {
        self.state.0.lock().unwrap().redelivered
    }

    /// The `[plugins.telegram]` table for the real Telegram plugin against
    /// this server (token from `TG_TEST_TOKEN`), then `extra` lines.
    pub fn plugin_toml(&self, wasm: &std::path::Path, extra: &str) -> String {
        format!(
            r#"
[plugins.telegram]
path = "{wasm}"
network = ["{base}/bot*"]
secrets = {{ bot_token = "env:TG_TEST_TOKEN" }}
config = {{ api_base = "{base}", poll_timeout_s = 1 }}
{extra}
"#,
            wasm = wasm.display(),
            base = self.base()
        )
    }

    pub fn token(&self) -> &str {
        &self.token
    }
}

impl Drop for BotApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.state.1.notify_all();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A query parameter of `target`, or of a form/JSON body.
fn param(target: &str, body: &Value, name: &str) -> Option<i64> {
    let from_query = target
        .split_once('?')
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).and_then(|(_, v)| v.parse().ok())));
    from_query.or_else(|| body.get(name).and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok())))
}

fn serve(conn: TcpStream, state: &(Mutex<State>, Condvar), token: &str, stop: &AtomicBool) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(120)))?;
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let (head, body) = crate::common::read_request(&mut reader);
        if head.is_empty() {
            return Ok(());
        }
        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let path = target.split('?').next().unwrap_or("");
        let Some((bot_token, method)) = path.strip_prefix("/bot").and_then(|p| p.split_once('/')) else {
            respond(&mut out, 404, &json!({"ok": false, "error_code": 404, "description": "Not Found"}))?;
            continue;
        };
        if bot_token != token {
            respond(&mut out, 401, &json!({"ok": false, "error_code": 401, "description": "Unauthorized"}))?;
            continue;
        }
        let reply = match method {
            "getMe" => json!({"ok": true, "result": {"id": 4242, "is_bot": true, "first_name": "Kata", "username": "kata_test_bot"}}),
            "getUpdates" => {
                let offset = param(&target, &body, "offset");
                let timeout = Duration::from_secs(param(&target, &body, "timeout").unwrap_or(0).clamp(0, MAX_TIMEOUT_S as i64) as u64);
                let deadline = Instant::now() + timeout;
                let (lock, cv) = state;
                let mut st = lock.lock().unwrap();
                // The offset confirms every update before it: forget them.
                if let Some(offset) = offset {
                    st.pending.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
                }
                let visible = |st: &State| -> Vec<Value> {
                    st.pending
                        .iter()
                        .filter(|u| offset.is_none_or(|o| u["update_id"].as_i64().unwrap_or(0) >= o))
                        .take(LIMIT)
                        .cloned()
                        .collect()
                };
                let mut updates = visible(&st);
                while updates.is_empty() && !stop.load(Ordering::Relaxed) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    st = cv.wait_timeout(st, left).unwrap().0;
                    updates = visible(&st);
                }
                if updates.iter().any(|u| u["update_id"].as_i64().unwrap_or(0) <= st.handed_out) {
                    st.redelivered += 1;
                }
                if let Some(max) = updates.iter().filter_map(|u| u["update_id"].as_i64()).max() {
                    st.handed_out = st.handed_out.max(max);
                }
                json!({"ok": true, "result": updates})
            }
            "sendMessage" => {
                let (Some(chat_id), Some(text)) = (body["chat_id"].as_i64(), body["text"].as_str()) else {
                    respond(
                        &mut out,
                        400,
                        &json!({"ok": false, "error_code": 400, "description": "Bad Request: chat_id and text are required"}),
                    )?;
                    continue;
                };
                let mut st = state.0.lock().unwrap();
                let message_id = st.next_message_id;
                st.next_message_id += 1;
                st.sent.push(Sent { chat_id, text: text.to_string(), reply_to_message_id: body["reply_to_message_id"].as_i64() });
                json!({"ok": true, "result": {
                    "message_id": message_id,
                    "from": {"id": 4242, "is_bot": true, "first_name": "Kata", "username": "kata_test_bot"},
                    "chat": {"id": chat_id, "type": "private"},
                    "date": 0,
                    "text": text,
                }})
            }
            _ => json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"}),
        };
        respond(&mut out, 200, &reply)?;
    }
}

fn respond(out: &mut TcpStream, status: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let msg = format!("HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    out.write_all(msg.as_bytes())
}
