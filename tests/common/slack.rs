//! A Slack that keeps to the rules the real one keeps, for everything the
//! Slack plugin uses, on two loopback ports: the Web API (`/api/METHOD`)
//! and the Socket Mode websocket host (`/link/?ticket=…`). Nothing usable
//! exists in the package registries; the shapes follow Slack's public docs
//! (cited in plugins/slack/src/api.rs) and the envelopes in
//! slackapi/python-slack-sdk's Socket Mode test server.
//!
//! Rules kept:
//! - `auth.test`, `chat.postMessage` take the bot token, `apps.connections.open`
//!   the app-level token, as `Authorization: Bearer`; a wrong token is HTTP
//!   200 `{"ok": false, "error": "invalid_auth"}` (no token: `not_authed`,
//!   the other kind of token: `not_allowed_token_type`);
//! - `apps.connections.open` hands out a single-use ticket URL; reusing one
//!   is refused;
//! - on connect the socket says `hello`; every event arrives in an
//!   `events_api` envelope (`envelope_id`, `payload`, `retry_attempt`,
//!   `retry_reason`) and stays pending until the client sends
//!   `{"envelope_id": …}` back. An envelope not acknowledged within 3 s, or
//!   sent on a connection that closed before acknowledging it, is delivered
//!   again (`retry_attempt` + 1, `retry_reason` "timeout") — at-least-once;
//! - a message that mentions the bot in a channel comes twice, as a
//!   `message` and an `app_mention` event (one post, two event ids);
//! - what the bot posts with `chat.postMessage` comes back as a `message`
//!   event with its `bot_id` (so a client that answers itself loops);
//! - `chat.postMessage` can be told to answer HTTP 429 with `Retry-After`;
//!   it takes Block Kit `blocks` (then `text` may be empty) and refuses
//!   malformed buttons (`invalid_blocks`: a value over 2000 characters, a
//!   label over 75, a repeated `action_id`, more than 25 in a block);
//! - a press of a button in a posted message arrives in an `interactive`
//!   envelope with a `block_actions` payload, to be acknowledged like any
//!   envelope (in Events API mode: POSTed to the Interactivity Request URL,
//!   form-encoded as `payload=…`, signed like events and sent once — Slack
//!   does not retry a press; it shows the person an error);
//! - `disconnect` envelopes (`refresh_requested`…) are followed by the
//!   server closing the socket a moment later; sockets can also be dropped
//!   without a close frame.
//!
//! Events API mode: the same events, POSTed to a URL as Slack does (JSON
//! body, `X-Slack-Request-Timestamp`, `X-Slack-Signature` v0 HMAC-SHA256 with
//! the signing secret), retried on failure with `X-Slack-Retry-Num`.
#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use super::webfake::{HttpRequest, HttpResponse, Runtime, now_ms, serve_http, uuid};

pub const BOT_TOKEN: &str = "xoxb-1111-2222-katabottoken";
pub const APP_TOKEN: &str = "xapp-1-A0KATA-3333-kataapptoken";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const TEAM: &str = "T0KATA";
pub const APP_ID: &str = "A0KATA";
pub const BOT_USER: &str = "U0KATABOT";
pub const BOT_ID: &str = "B0KATABOT";
/// How long Slack waits for an envelope's acknowledgement.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after a `disconnect` envelope the server closes the socket.
const DISCONNECT_GRACE: Duration = Duration::from_millis(1500);

/// One event waiting for its acknowledgement.
struct Pending {
    envelope_id: String,
    /// The envelope type: `events_api` or `interactive`.
    kind: &'static str,
    payload: Value,
    attempts: u32,
    /// The connection it was last sent on, and when.
    sent: Option<(u64, Instant)>,
}

/// A `chat.postMessage` the bot made.
#[derive(Debug, Clone)]
pub struct Posted {
    pub channel: String,
    pub text: String,
    pub thread_ts: Option<String>,
    pub ts: String,
    /// The Block Kit blocks posted with it, if any.
    pub blocks: Option<Value>,
}

#[derive(Default)]
struct State {
    tickets: HashSet<String>,
    pending: Vec<Pending>,
    /// Event ids acknowledged, in order.
    acked: Vec<String>,
    deliveries: u64,
    redeliveries: u64,
    /// Connections accepted so far; the newest one gets the events.
    connections: u64,
    open: HashSet<u64>,
    /// Web API requests: (method, when).
    requests: Vec<(String, Instant)>,
    posts: Vec<Posted>,
    /// `chat.postMessage` attempts: (when, HTTP status).
    post_attempts: Vec<(Instant, u16)>,
    /// Retry-After seconds for the next 429s of `chat.postMessage`.
    rate_limits: VecDeque<u64>,
    /// Channels seen (user messages create them), with their type.
    channels: Vec<(String, String)>,
    last_ts: u64,
    next_event: u64,
    /// Close the socket right after the next N deliveries, before any ack.
    drop_before_ack: u32,
    /// Bumped to drop every open socket (no close frame).
    drop_gen: u64,
    /// Bumped to send `disconnect` (with this reason) on every open socket.
    disconnect: (u64, String),
    /// Events API mode: where events are POSTed.
    events_url: Option<String>,
    /// Events API deliveries: (event id, retry number, HTTP status).
    event_posts: Vec<(String, u32, u16)>,
}

/// The fake. Dropping it stops both servers and closes every socket.
pub struct SlackFake {
    pub api_port: u16,
    pub ws_port: u16,
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    _rt: Runtime,
}

/// A message a user posts.
#[derive(Debug, Clone, Default)]
pub struct Say {
    pub channel: String,
    /// `im`, `channel`, `group` or `mpim`.
    pub channel_type: String,
    pub user: String,
    pub text: String,
    pub thread_ts: Option<String>,
    pub files: Vec<Value>,
}

impl Say {
    pub fn dm(channel: &str, user: &str, text: &str) -> Say {
        Say { channel: channel.into(), channel_type: "im".into(), user: user.into(), text: text.into(), ..Say::default() }
    }

    pub fn channel(channel: &str, user: &str, text: &str) -> Say {
        Say { channel: channel.into(), channel_type: "channel".into(), user: user.into(), text: text.into(), ..Say::default() }
    }

    pub fn in_thread(mut self, ts: &str) -> Say {
        self.thread_ts = Some(ts.into());
        self
    }

    pub fn with_file(mut self, name: &str, mimetype: &str, size: u64) -> Say {
        let id = format!("F{}", self.files.len() + 1);
        self.files.push(json!({
            "id": id, "created": now_ms() / 1000, "timestamp": now_ms() / 1000, "name": name, "title": name,
            "mimetype": mimetype, "filetype": name.rsplit('.').next().unwrap_or(""), "pretty_type": "File",
            "user": self.user, "user_team": TEAM, "editable": false, "size": size, "mode": "hosted",
            "is_external": false, "external_type": "", "is_public": false, "public_url_shared": false,
            "display_as_bot": false, "username": "",
            "url_private": format!("https://files.slack.com/files-pri/{TEAM}-{id}/{name}"),
            "url_private_download": format!("https://files.slack.com/files-pri/{TEAM}-{id}/download/{name}"),
            "permalink": format!("https://kata-test.slack.com/files/{}/{id}/{name}", self.user),
        }));
        self
    }
}

fn bearer(req: &HttpRequest) -> Option<String> {
    req.header("authorization").and_then(|v| v.strip_prefix("Bearer ")).map(|t| t.trim().to_string())
}

fn error(e: &str) -> HttpResponse {
    HttpResponse::json(200, &json!({"ok": false, "error": e}))
}

impl SlackFake {
    pub fn start() -> SlackFake {
        let rt = Runtime::start();
        let state = Arc::new(Mutex::new(State { last_ts: now_ms() * 1000, next_event: 1, ..State::default() }));
        let wake = Arc::new(Notify::new());
        let (api, api_port) = rt.listen();
        let (ws, ws_port) = rt.listen();
        let (st, wk) = (state.clone(), wake.clone());
        rt.spawn(serve_http(api, Arc::new(move |req| web_api(&st, &wk, ws_port, req))));
        let (st, wk) = (state.clone(), wake.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = ws.accept().await else { return };
                tokio::spawn(socket(tcp, st.clone(), wk.clone()));
            }
        });
        // Nudge connections now and then, for ack timeouts.
        let wk = wake.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                wk.notify_waiters();
            }
        });
        SlackFake { api_port, ws_port, state, wake, stop: Default::default(), _rt: rt }
    }

    /// The Web API base, as the plugin's `api_base`.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.api_port)
    }

    /// The socket host, as the plugin's `socket_base` and the grant.
    pub fn socket_base(&self) -> String {
        format!("ws://127.0.0.1:{}/link", self.ws_port)
    }

    /// A user posts; returns the message's `ts`. The event (and an
    /// `app_mention` when it mentions the bot outside a DM) is queued for
    /// delivery.
    pub fn say(&self, say: Say) -> String {
        let ts = {
            let mut st = self.state.lock().unwrap();
            if !st.channels.iter().any(|(c, _)| *c == say.channel) {
                st.channels.push((say.channel.clone(), say.channel_type.clone()));
            }
            let ts = next_ts(&mut st);
            let mut event = json!({
                "client_msg_id": uuid(), "type": "message", "text": say.text, "user": say.user, "ts": ts, "team": TEAM,
                "blocks": [], "channel": say.channel, "event_ts": ts, "channel_type": say.channel_type,
            });
            if let Some(t) = &say.thread_ts {
                event["thread_ts"] = json!(t);
                event["parent_user_id"] = json!("U0SOMEONE");
            }
            if !say.files.is_empty() {
                event["subtype"] = json!("file_share");
                event["files"] = json!(say.files);
                event["upload"] = json!(false);
            }
            queue(&mut st, event);
            if say.channel_type != "im" && say.text.contains(&format!("<@{BOT_USER}>")) {
                let mut mention = json!({
                    "client_msg_id": uuid(), "type": "app_mention", "text": say.text, "user": say.user, "ts": ts,
                    "team": TEAM, "blocks": [], "channel": say.channel, "event_ts": ts,
                });
                if let Some(t) = &say.thread_ts {
                    mention["thread_ts"] = json!(t);
                }
                queue(&mut st, mention);
            }
            ts
        };
        self.wake.notify_waiters();
        ts
    }

    /// An event that is not someone talking (an edit, a join), queued as is.
    pub fn event(&self, event: Value) {
        queue(&mut self.state.lock().unwrap(), event);
        self.wake.notify_waiters();
    }

    /// A channel that exists before anyone in it talks (a DM with the owner).
    pub fn add_channel(&self, channel: &str, channel_type: &str) {
        self.state.lock().unwrap().channels.push((channel.into(), channel_type.into()));
    }

    /// `user` presses the button whose value is `value` under the bot's post
    /// `ts`: a `block_actions` payload in an `interactive` envelope, as
    /// Slack sends it over Socket Mode (in Events API mode, POSTed as a form
    /// to the same URL as events, which stands for the app's Interactivity
    /// Request URL). Panics when that post has no such button.
    pub fn press(&self, user: &str, ts: &str, value: &str) {
        {
            let mut st = self.state.lock().unwrap();
            let post = st.posts.iter().find(|p| p.ts == ts).cloned().unwrap_or_else(|| panic!("no post {ts}"));
            let (block, button) = post
                .blocks
                .as_ref()
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find_map(|b| b["elements"].as_array()?.iter().find(|e| e["value"] == value).map(|e| (b.clone(), e.clone())))
                .unwrap_or_else(|| panic!("no button {value:?} under post {ts}"));
            let action_ts = next_ts(&mut st);
            let mut message = json!({"bot_id": BOT_ID, "type": "message", "text": post.text, "user": BOT_USER, "ts": post.ts,
                "app_id": APP_ID, "blocks": post.blocks, "team": TEAM});
            let mut container = json!({"type": "message", "message_ts": post.ts, "channel_id": post.channel, "is_ephemeral": false});
            if let Some(t) = &post.thread_ts {
                message["thread_ts"] = json!(t);
                container["thread_ts"] = json!(t);
            }
            let payload = json!({
                "type": "block_actions", "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": TEAM},
                "api_app_id": APP_ID, "token": "verification-token", "container": container,
                "trigger_id": format!("{}.{}.{}", now_ms(), 3_336_494, uuid().replace('-', "")),
                "team": {"id": TEAM, "domain": "kata-test"}, "enterprise": null, "is_enterprise_install": false,
                "channel": {"id": post.channel, "name": "directmessage"}, "message": message, "state": {"values": {}},
                "response_url": format!("https://hooks.slack.com/actions/{TEAM}/1/{}", uuid()),
                "actions": [{"action_id": button["action_id"], "block_id": block.get("block_id").cloned().unwrap_or(json!("b0")),
                    "text": button["text"], "value": value, "type": "button", "action_ts": action_ts}],
            });
            st.pending.push(Pending { envelope_id: uuid(), kind: "interactive", payload, attempts: 0, sent: None });
        }
        self.wake.notify_waiters();
    }

    /// Everything the bot posted, in order.
    pub fn posts(&self) -> Vec<Posted> {
        self.state.lock().unwrap().posts.clone()
    }

    /// `chat.postMessage` attempts: (when, HTTP status).
    pub fn post_attempts(&self) -> Vec<(Instant, u16)> {
        self.state.lock().unwrap().post_attempts.clone()
    }

    /// Web API requests to `method` so far.
    pub fn requests(&self, method: &str) -> usize {
        self.state.lock().unwrap().requests.iter().filter(|(m, _)| m == method).count()
    }

    /// Socket connections accepted so far, and how many are open.
    pub fn connections(&self) -> (u64, usize) {
        let st = self.state.lock().unwrap();
        (st.connections, st.open.len())
    }

    /// Events not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.state.lock().unwrap().pending.len()
    }

    /// (deliveries, redeliveries) over sockets so far.
    pub fn deliveries(&self) -> (u64, u64) {
        let st = self.state.lock().unwrap();
        (st.deliveries, st.redeliveries)
    }

    /// Answer the next `n` `chat.postMessage` calls with 429, `Retry-After: secs`.
    pub fn rate_limit_posts(&self, n: usize, secs: u64) {
        self.state.lock().unwrap().rate_limits.extend(std::iter::repeat_n(secs, n));
    }

    /// Close the socket right after the next `n` deliveries, before the client can acknowledge them.
    pub fn drop_before_ack(&self, n: u32) {
        self.state.lock().unwrap().drop_before_ack = n;
    }

    /// Drop every open socket without a close frame.
    pub fn drop_sockets(&self) {
        self.state.lock().unwrap().drop_gen += 1;
        self.wake.notify_waiters();
    }

    /// Send a `disconnect` envelope with `reason` on every open socket (the
    /// server closes them a moment later).
    pub fn disconnect(&self, reason: &str) {
        {
            let mut st = self.state.lock().unwrap();
            st.disconnect = (st.disconnect.0 + 1, reason.to_string());
        }
        self.wake.notify_waiters();
    }

    /// Events API mode: POST events to `url` instead of the socket (from a
    /// thread of the fake's own, oldest first, each tried up to 4 times, as
    /// Slack retries a delivery that fails or times out).
    pub fn deliver_to(&self, url: &str) {
        self.state.lock().unwrap().events_url = Some(url.to_string());
        let (state, stop) = (self.state.clone(), self.stop.clone());
        std::thread::spawn(move || post_events(&state, &stop));
    }

    /// Events API deliveries so far: (event id, retry number, HTTP status).
    pub fn event_posts(&self) -> Vec<(String, u32, u16)> {
        self.state.lock().unwrap().event_posts.clone()
    }

    /// Events API: Slack's `url_verification` request to `url`, signed;
    /// returns the HTTP status and the body of the answer.
    /// None when nothing answered.
    pub fn verify_url(&self, url: &str) -> Option<(u16, String, String)> {
        let challenge = format!("{}{}", uuid().replace('-', ""), uuid().replace('-', ""));
        let body = json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge, "type": "url_verification"}).to_string();
        let (status, text) = signed_post(url, &body, 0, "application/json")?;
        Some((status, text, challenge))
    }
}

impl Drop for SlackFake {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.state.lock().unwrap().drop_gen += 1;
        self.wake.notify_waiters();
    }
}

/// Events API delivery: POST pending events until `stop`.
fn post_events(state: &Mutex<State>, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let next = {
            let mut st = state.lock().unwrap();
            match st.events_url.clone() {
                Some(url) if !st.pending.is_empty() => {
                    let p = st.pending.remove(0);
                    Some((url, p.kind, p.payload))
                }
                _ => None,
            }
        };
        let Some((url, kind, payload)) = next else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if kind == "interactive" {
            // A press: a form with the payload as JSON, sent once.
            let form = format!("payload={}", percent_encode(&payload.to_string()));
            let status = signed_post(&url, &form, 0, "application/x-www-form-urlencoded").map_or(0, |r| r.0);
            let action_ts = payload["actions"][0]["action_ts"].as_str().unwrap_or_default();
            state.lock().unwrap().event_posts.push((format!("press:{action_ts}"), 0, status));
            continue;
        }
        let event_id = payload["event_id"].as_str().unwrap_or_default().to_string();
        for retry in 0..4u32 {
            let status = signed_post(&url, &payload.to_string(), retry, "application/json").map_or(0, |r| r.0);
            let mut st = state.lock().unwrap();
            st.event_posts.push((event_id.clone(), retry, status));
            if (200..300).contains(&status) {
                st.acked.push(event_id.clone());
                break;
            }
            drop(st);
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Form encoding (`application/x-www-form-urlencoded`): unreserved bytes as
/// they are, a space as `+`, every other byte as `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => (b as char).to_string(),
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// POST `body` to `url` as Slack does, with a v0 signature.
fn signed_post(url: &str, body: &str, retry: u32, content_type: &str) -> Option<(u16, String)> {
    let ts = (now_ms() / 1000).to_string();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SIGNING_SECRET.as_bytes());
    let sig = ring::hmac::sign(&key, format!("v0:{ts}:{body}").as_bytes());
    let hex: String = sig.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(3)).build().ok()?;
    let mut req = client
        .post(url)
        .header("content-type", content_type)
        .header("user-agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", format!("v0={hex}"))
        .body(body.to_string());
    if retry > 0 {
        req = req.header("x-slack-retry-num", retry.to_string()).header("x-slack-retry-reason", "http_timeout");
    }
    let r = req.send().ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().unwrap_or_default()))
}

/// A fresh `ts`, later than every earlier one.
fn next_ts(st: &mut State) -> String {
    st.last_ts = st.last_ts.max(now_ms() * 1000) + 1;
    format!("{}.{:06}", st.last_ts / 1_000_000, st.last_ts % 1_000_000)
}

/// Wrap `event` in an `event_callback` payload and queue it.
fn queue(st: &mut State, event: Value) {
    let event_id = format!("Ev0KATA{:06}", st.next_event);
    st.next_event += 1;
    let payload = json!({
        "token": "verification-token", "team_id": TEAM, "context_team_id": TEAM, "context_enterprise_id": null,
        "api_app_id": APP_ID, "event": event, "type": "event_callback", "event_id": event_id,
        "event_time": now_ms() / 1000,
        "authorizations": [{"enterprise_id": null, "team_id": TEAM, "user_id": BOT_USER, "is_bot": true, "is_enterprise_install": false}],
        "is_ext_shared_channel": false, "event_context": format!("4-message-{TEAM}"),
    });
    st.pending.push(Pending { envelope_id: uuid(), kind: "events_api", payload, attempts: 0, sent: None });
}

/// Whether Block Kit `blocks` pass the checks Slack makes on buttons.
fn valid_blocks(blocks: &Value) -> bool {
    let Some(blocks) = blocks.as_array() else { return false };
    blocks.iter().all(|b| match b["type"].as_str() {
        Some("section") => b["text"]["text"].as_str().is_some_and(|t| !t.is_empty() && t.chars().count() <= 3000),
        Some("actions") => {
            let Some(els) = b["elements"].as_array() else { return false };
            let mut ids = HashSet::new();
            !els.is_empty()
                && els.len() <= 25
                && els.iter().all(|e| {
                    e["type"] == "button"
                        && e["text"]["type"] == "plain_text"
                        && e["text"]["text"].as_str().is_some_and(|t| !t.is_empty() && t.chars().count() <= 75)
                        && e["value"].as_str().is_none_or(|v| v.chars().count() <= 2000)
                        && e["action_id"].as_str().is_some_and(|a| ids.insert(a.to_string()))
                })
        }
        _ => false,
    })
}

/// The Web API.
fn web_api(state: &Mutex<State>, wake: &Notify, ws_port: u16, req: HttpRequest) -> HttpResponse {
    let Some(method) = req.path.strip_prefix("/api/").map(str::to_string) else {
        return HttpResponse::json(404, &json!({"ok": false, "error": "unknown_method"}));
    };
    let mut st = state.lock().unwrap();
    st.requests.push((method.clone(), Instant::now()));
    if req.method != "POST" && method != "auth.test" {
        return error("invalid_request");
    }
    let token = bearer(&req);
    match method.as_str() {
        "auth.test" => match token.as_deref() {
            None => error("not_authed"),
            Some(BOT_TOKEN) => HttpResponse::json(
                200,
                &json!({"ok": true, "url": "https://kata-test.slack.com/", "team": "kata test", "user": "katabot",
                    "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": false}),
            ),
            Some(_) => error("invalid_auth"),
        },
        "apps.connections.open" => match token.as_deref() {
            None => error("not_authed"),
            Some(APP_TOKEN) => {
                let ticket = uuid();
                st.tickets.insert(ticket.clone());
                HttpResponse::json(
                    200,
                    &json!({"ok": true, "url": format!("ws://127.0.0.1:{ws_port}/link/?ticket={ticket}&app_id={APP_ID}")}),
                )
            }
            Some(BOT_TOKEN) => error("not_allowed_token_type"),
            Some(_) => error("invalid_auth"),
        },
        "chat.postMessage" => {
            let status = match token.as_deref() {
                None => return error("not_authed"),
                Some(BOT_TOKEN) => 200,
                Some(APP_TOKEN) => return error("not_allowed_token_type"),
                Some(_) => return error("invalid_auth"),
            };
            if let Some(secs) = st.rate_limits.pop_front() {
                st.post_attempts.push((Instant::now(), 429));
                return HttpResponse::json(429, &json!({"ok": false, "error": "ratelimited"})).header("retry-after", &secs.to_string());
            }
            st.post_attempts.push((Instant::now(), status));
            let Some(args) = req.json() else { return error("invalid_arguments") };
            let channel = args["channel"].as_str().unwrap_or_default().to_string();
            let Some(channel_type) = st.channels.iter().find(|(c, _)| *c == channel).map(|(_, t)| t.clone()) else {
                return error("channel_not_found");
            };
            let text = args["text"].as_str().unwrap_or_default().to_string();
            let blocks = args.get("blocks").filter(|b| !b.is_null()).cloned();
            if text.is_empty() && blocks.is_none() {
                return error("no_text");
            }
            if let Some(b) = &blocks
                && !valid_blocks(b)
            {
                return error("invalid_blocks");
            }
            let thread_ts = args["thread_ts"].as_str().map(str::to_string);
            let ts = next_ts(&mut st);
            st.posts.push(Posted {
                channel: channel.clone(),
                text: text.clone(),
                thread_ts: thread_ts.clone(),
                ts: ts.clone(),
                blocks: blocks.clone(),
            });
            let mut message = json!({
                "bot_id": BOT_ID, "type": "message", "text": text, "user": BOT_USER, "ts": ts, "app_id": APP_ID,
                "blocks": blocks.unwrap_or(json!([])), "team": TEAM,
                "bot_profile": {"id": BOT_ID, "deleted": false, "name": "katabot", "updated": now_ms() / 1000, "app_id": APP_ID, "team_id": TEAM},
            });
            if let Some(t) = &thread_ts {
                message["thread_ts"] = json!(t);
                message["parent_user_id"] = json!("U0SOMEONE");
            }
            // The bot's own post comes back as an event, as it does from Slack.
            let mut event = message.clone();
            event["channel"] = json!(channel);
            event["event_ts"] = json!(ts);
            event["channel_type"] = json!(channel_type);
            queue(&mut st, event);
            drop(st);
            wake.notify_waiters();
            HttpResponse::json(200, &json!({"ok": true, "channel": channel, "ts": ts, "message": message}))
        }
        _ => error("unknown_method"),
    }
}

/// One Socket Mode connection.
async fn socket(tcp: tokio::net::TcpStream, state: Arc<Mutex<State>>, wake: Arc<Notify>) {
    let st2 = state.clone();
    #[allow(clippy::result_large_err)] // the websocket handshake's callback type, as tungstenite defines it
    let accept = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let ticket = req.uri().query().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("ticket=")).unwrap_or("").to_string();
        if req.uri().path() != "/link/" || !st2.lock().unwrap().tickets.remove(&ticket) {
            let mut r = ErrorResponse::new(Some("invalid or used ticket".into()));
            *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
            return Err(r);
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, accept).await else { return };
    let (me, drop_gen, mut disconnect_gen) = {
        let mut st = state.lock().unwrap();
        st.connections += 1;
        let me = st.connections;
        st.open.insert(me);
        (me, st.drop_gen, st.disconnect.0)
    };
    let hello = json!({
        "type": "hello", "num_connections": state.lock().unwrap().open.len(),
        "debug_info": {"host": format!("applink-kata-{me}"), "build_number": 1, "approximate_connection_time": 18060},
        "connection_info": {"app_id": APP_ID},
    });
    let _ = ws.send(WsMessage::text(hello.to_string())).await;
    let mut close_at: Option<Instant> = None;
    loop {
        // What to send now: pending events for the newest connection.
        let (out, drop_now, disconnect) = {
            let mut st = state.lock().unwrap();
            let newest = st.open.iter().max().copied() == Some(me);
            let mut out = Vec::new();
            let mut drop_now = st.drop_gen != drop_gen;
            let mut delivered = 0;
            if newest && close_at.is_none() && !drop_now {
                let open = st.open.clone();
                for p in st.pending.iter_mut() {
                    let due = match p.sent {
                        None => true,
                        Some((conn, at)) => conn != me && !open.contains(&conn) || at.elapsed() >= ACK_TIMEOUT,
                    };
                    if !due {
                        continue;
                    }
                    let envelope = json!({
                        "envelope_id": p.envelope_id, "payload": p.payload, "type": p.kind,
                        "accepts_response_payload": false, "retry_attempt": p.attempts,
                        "retry_reason": if p.attempts > 0 { "timeout" } else { "" },
                    });
                    p.attempts += 1;
                    p.sent = Some((me, Instant::now()));
                    delivered += 1;
                    out.push((envelope.to_string(), p.attempts > 1));
                }
            }
            for (_, again) in &out {
                st.deliveries += 1;
                st.redeliveries += u64::from(*again);
            }
            if delivered > 0 && st.drop_before_ack > 0 {
                st.drop_before_ack -= 1;
                drop_now = true;
            }
            let disconnect = (st.disconnect.0 != disconnect_gen).then(|| st.disconnect.1.clone());
            disconnect_gen = st.disconnect.0;
            (out, drop_now, disconnect)
        };
        for (text, _) in out {
            if ws.send(WsMessage::text(text)).await.is_err() {
                break;
            }
        }
        if drop_now {
            break;
        }
        if let Some(reason) = disconnect {
            let d = json!({"type": "disconnect", "reason": reason, "debug_info": {"host": format!("applink-kata-{me}")}});
            let _ = ws.send(WsMessage::text(d.to_string())).await;
            close_at = Some(Instant::now() + DISCONNECT_GRACE);
        }
        if close_at.is_some_and(|t| Instant::now() >= t) {
            let _ = ws.close(None).await;
            break;
        }
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(WsMessage::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if let Some(id) = v.get("envelope_id").and_then(Value::as_str) {
                        let mut st = state.lock().unwrap();
                        if let Some(i) = st.pending.iter().position(|p| p.envelope_id == id) {
                            let p = st.pending.remove(i);
                            let event_id = p.payload["event_id"].as_str().unwrap_or_default().to_string();
                            st.acked.push(event_id);
                        }
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = wake.notified() => {}
        }
    }
    state.lock().unwrap().open.remove(&me);
    wake.notify_waiters();
}
