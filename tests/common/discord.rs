//! A Discord that keeps to the rules the real one keeps, for everything the
//! Discord plugin uses, on two loopback ports: the REST API (`/api/v10/…`)
//! and the Gateway websocket. Nothing usable exists in the package
//! registries; the shapes and rules follow Discord's documentation
//! (github.com/discord/discord-api-docs, cited in plugins/discord/src).
//!
//! Rules kept:
//! - REST wants `Authorization: Bot TOKEN` (else 401 `{"message": "401:
//!   Unauthorized", "code": 0}`); Get Gateway Bot hands out the gateway URL;
//!   Create Message checks the channel (404 Unknown Channel), the content
//!   (400 over 2000 characters), the `message_reference`, and with a
//!   `nonce` and `enforce_nonce` returns the message it already created for
//!   that nonce instead of creating another; it can be told to answer 429
//!   with `retry_after` (seconds, a float) and `Retry-After`;
//! - the gateway opens with HELLO (`heartbeat_interval`), acknowledges every
//!   heartbeat (op 11), and closes the connection (4009) when heartbeats stop
//!   for 1.5 intervals; IDENTIFY with a wrong token closes it with 4004, a
//!   second IDENTIFY with 4005, anything before IDENTIFY with 4003; READY
//!   carries `session_id`, `resume_gateway_url` (another URL than the one
//!   Get Gateway Bot gives) and the bot user; every dispatch has the next
//!   sequence number;
//! - a session outlives its connection: what is dispatched while no
//!   connection is open waits, and RESUME (`session_id`, `seq`) replays every
//!   dispatch after `seq`, then RESUMED; an unknown session gets Invalid
//!   Session (op 9, `d: false`);
//! - without the MESSAGE_CONTENT intent, other people's messages arrive
//!   with empty content and attachments (except DMs and mentions of the bot);
//! - what the bot posts comes back as a MESSAGE_CREATE (so a client that
//!   answers itself loops); mentions are computed from `<@id>` in the content,
//!   and a reply mentions the author it replies to;
//! - Create Message takes `components`: action rows (type 1, at most 5) of
//!   buttons (type 2, at most 5 a row, `style` 1–4, `label` up to 80
//!   characters, `custom_id` 1–100 characters, unique in the message), else
//!   400 Invalid Form Body; a message may then have no content;
//! - a user pressing a button dispatches INTERACTION_CREATE (whatever the
//!   intents) with `id`, `token`, `type` 3, `data.custom_id`,
//!   `data.component_type` 2, `channel`, `message`, and `member.user` in a
//!   guild or `user` in a DM; Create Interaction Response (`POST
//!   /interactions/{id}/{token}/callback`, no Authorization needed) takes
//!   each interaction once (a second answer: 400, code 40060), with a valid
//!   token (else 401 code 50027) and a known `type` (else 400), and
//!   answers 204;
//! - the test can send Reconnect (op 7), Invalid Session (op 9) or drop the
//!   socket without a close frame.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::webfake::{HttpRequest, HttpResponse, Runtime, hex_id, iso8601, now_ms, serve_http};

pub const BOT_TOKEN: &str = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.GkAtA1.kata-discord-test-token";
pub const BOT_ID: &str = "1100000000000000001";
pub const APP_ID: &str = "1100000000000000001";
pub const GUILD: &str = "1200000000000000001";
/// Ann's DM channel with the bot.
pub const DM: &str = "1300000000000000001";
/// A text channel in the guild.
pub const TEXT: &str = "1300000000000000002";
/// A public thread under [`TEXT`].
pub const THREAD: &str = "1300000000000000003";
pub const ANN: &str = "1400000000000000001";
pub const BOB: &str = "1400000000000000002";
/// GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
const MESSAGE_CONTENT: u64 = 1 << 15;
/// Discord's epoch (2015-01-01) in Unix milliseconds.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
/// How long `enforce_nonce` remembers a nonce ("the past few minutes").
const NONCE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Gateway events a connection may send per minute before it is closed (4008).
const SEND_LIMIT: usize = 120;

struct Session {
    seq: u64,
    /// Every dispatch, by sequence number, for RESUME.
    log: Vec<(u64, Value)>,
    intents: u64,
    /// The connection currently holding it.
    conn: Option<u64>,
}

#[derive(Default)]
struct State {
    heartbeat_interval: u64,
    sessions: HashMap<String, Session>,
    /// The session dispatches go to (the newest).
    current: Option<String>,
    connections: u64,
    open: Vec<u64>,
    /// (connection, path) of every connection.
    paths: Vec<(u64, String)>,
    identifies: u64,
    resumes: u64,
    /// Heartbeats received: (connection, d).
    heartbeats: Vec<(u64, Value)>,
    /// Close codes the gateway sent.
    closes: Vec<(u64, u16)>,
    /// Every message, by id.
    messages: HashMap<String, Value>,
    /// Messages the bot created, in order.
    posts: Vec<Value>,
    /// Create Message attempts: (when, HTTP status).
    post_attempts: Vec<(Instant, u16)>,
    nonces: HashMap<String, (Instant, String)>,
    rate_limits: VecDeque<f64>,
    requests: Vec<(String, Instant)>,
    next_id: u64,
    drop_gen: u64,
    /// (generation, op payload) sent to every open connection.
    control: (u64, Value),
    /// Heartbeats to ignore from now (no ACK): simulates a dead server side.
    mute_acks: bool,
    /// Interactions by id: (token, answered callback type).
    interactions: HashMap<String, (String, Option<u64>)>,
}

/// The fake. Dropping it stops both servers and closes every socket.
pub struct DiscordFake {
    pub api_port: u16,
    pub gw_port: u16,
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    _rt: Runtime,
}

/// A message a user posts.
#[derive(Debug, Clone, Default)]
pub struct Post {
    pub channel: String,
    pub author: String,
    pub content: String,
    /// A message id to reply to.
    pub reply_to: Option<String>,
    /// (filename, content type, size).
    pub files: Vec<(String, String, u64)>,
}

impl Post {
    pub fn new(channel: &str, author: &str, content: &str) -> Post {
        Post { channel: channel.into(), author: author.into(), content: content.into(), ..Post::default() }
    }

    pub fn replying_to(mut self, id: &str) -> Post {
        self.reply_to = Some(id.into());
        self
    }

    pub fn with_file(mut self, name: &str, content_type: &str, size: u64) -> Post {
        self.files.push((name.into(), content_type.into(), size));
        self
    }
}

fn user(id: &str) -> Value {
    let name = match id {
        BOT_ID => "katabot",
        ANN => "ann",
        BOB => "bob",
        _ => "someone",
    };
    let mut u =
        json!({"id": id, "username": name, "global_name": name.to_uppercase(), "discriminator": "0", "avatar": null, "public_flags": 0});
    if id == BOT_ID {
        u["bot"] = json!(true);
        u["global_name"] = Value::Null;
    }
    u
}

/// (type, guild, parent) of the fake's channels.
fn channel(id: &str) -> Option<(u64, Option<&'static str>, Option<&'static str>)> {
    match id {
        DM => Some((1, None, None)),
        TEXT => Some((0, Some(GUILD), None)),
        THREAD => Some((11, Some(GUILD), Some(TEXT))),
        _ => None,
    }
}

fn channel_object(id: &str) -> Option<Value> {
    let (kind, guild, parent) = channel(id)?;
    Some(match kind {
        1 => json!({"id": id, "type": 1, "last_message_id": null, "flags": 0, "recipients": [user(ANN)]}),
        _ => {
            let mut c = json!({"id": id, "type": kind, "guild_id": guild, "name": if kind == 0 { "general" } else { "a thread" },
                "position": 0, "permission_overwrites": [], "nsfw": false, "parent_id": parent, "flags": 0});
            if kind == 11 {
                c["owner_id"] = json!(BOB);
                c["thread_metadata"] =
                    json!({"archived": false, "auto_archive_duration": 1440, "locked": false, "archive_timestamp": iso8601(now_ms())});
            }
            c
        }
    })
}

fn unauthorized() -> HttpResponse {
    HttpResponse::json(401, &json!({"message": "401: Unauthorized", "code": 0}))
}

impl DiscordFake {
    /// Serve with HELLO's `heartbeat_interval` = `heartbeat_ms`.
    pub fn start(heartbeat_ms: u64) -> DiscordFake {
        let rt = Runtime::start();
        let state = Arc::new(Mutex::new(State { heartbeat_interval: heartbeat_ms, next_id: 1, ..State::default() }));
        let wake = Arc::new(Notify::new());
        let (api, api_port) = rt.listen();
        let (gw, gw_port) = rt.listen();
        let (st, wk) = (state.clone(), wake.clone());
        rt.spawn(serve_http(api, Arc::new(move |req| rest(&st, &wk, gw_port, req))));
        let (st, wk) = (state.clone(), wake.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = gw.accept().await else { return };
                tokio::spawn(gateway(tcp, st.clone(), wk.clone(), gw_port));
            }
        });
        let wk = wake.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                wk.notify_waiters();
            }
        });
        DiscordFake { api_port, gw_port, state, wake, _rt: rt }
    }

    /// The REST base, as the plugin's `api_base`.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/api/v10", self.api_port)
    }

    /// The gateway origin, as the plugin's `gateway_base` and the grant.
    pub fn gateway_base(&self) -> String {
        format!("ws://127.0.0.1:{}", self.gw_port)
    }

    /// A user posts; returns the message id. Dispatched as MESSAGE_CREATE to
    /// the current session (or kept for its RESUME).
    pub fn post(&self, post: Post) -> String {
        let id = {
            let mut st = self.state.lock().unwrap();
            let d = create(&mut st, &post.channel, &post.author, &post.content, post.reply_to.as_deref(), &post.files, None, None);
            d["id"].as_str().unwrap().to_string()
        };
        self.wake.notify_waiters();
        id
    }

    /// Messages the bot created, in order.
    pub fn posts(&self) -> Vec<Value> {
        self.state.lock().unwrap().posts.clone()
    }

    pub fn post_attempts(&self) -> Vec<(Instant, u16)> {
        self.state.lock().unwrap().post_attempts.clone()
    }

    /// REST requests whose path ends with `suffix`.
    pub fn requests(&self, suffix: &str) -> usize {
        self.state.lock().unwrap().requests.iter().filter(|(p, _)| p.ends_with(suffix)).count()
    }

    /// (connections so far, open now).
    pub fn connections(&self) -> (u64, usize) {
        let st = self.state.lock().unwrap();
        (st.connections, st.open.len())
    }

    /// The path of every connection, in order.
    pub fn paths(&self) -> Vec<String> {
        self.state.lock().unwrap().paths.iter().map(|(_, p)| p.clone()).collect()
    }

    /// (IDENTIFYs, RESUMEs) so far.
    pub fn handshakes(&self) -> (u64, u64) {
        let st = self.state.lock().unwrap();
        (st.identifies, st.resumes)
    }

    /// Heartbeats received: (connection, d).
    pub fn heartbeats(&self) -> Vec<(u64, Value)> {
        self.state.lock().unwrap().heartbeats.clone()
    }

    /// Close codes the gateway sent.
    pub fn closes(&self) -> Vec<(u64, u16)> {
        self.state.lock().unwrap().closes.clone()
    }

    /// Whether a session is ready (identified) and held by an open connection.
    pub fn ready(&self) -> bool {
        let st = self.state.lock().unwrap();
        st.current.as_ref().and_then(|s| st.sessions.get(s)).is_some_and(|s| s.conn.is_some())
    }

    /// Answer the next `n` Create Message calls with 429, `retry_after` = `secs`.
    pub fn rate_limit_posts(&self, n: usize, secs: f64) {
        self.state.lock().unwrap().rate_limits.extend(std::iter::repeat_n(secs, n));
    }

    /// Drop every gateway socket without a close frame (sessions stay resumable).
    pub fn drop_sockets(&self) {
        self.state.lock().unwrap().drop_gen += 1;
        self.wake.notify_waiters();
    }

    /// Send `payload` (e.g. Reconnect, Invalid Session) on every open gateway socket.
    pub fn send_op(&self, payload: Value) {
        {
            let mut st = self.state.lock().unwrap();
            st.control = (st.control.0 + 1, payload);
        }
        self.wake.notify_waiters();
    }

    /// `user` presses the button with `custom_id` on the bot's message
    /// `message_id`: INTERACTION_CREATE; returns the interaction id. Panics
    /// when the message has no such button (a client cannot press it).
    pub fn press(&self, message_id: &str, user_id: &str, custom_id: &str) -> String {
        let id = {
            let mut st = self.state.lock().unwrap();
            let message = st.messages[message_id].clone();
            let found = message["components"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
                .any(|b| b["custom_id"] == custom_id);
            assert!(found, "no button {custom_id:?} on {message}");
            let id = snowflake(&mut st);
            let token = format!("aW50ZXJhY3Rpb246{}", hex_id(16));
            let channel_id = message["channel_id"].as_str().unwrap().to_string();
            let (kind, guild, _) = channel(&channel_id).unwrap();
            let mut d = json!({
                "id": id, "application_id": APP_ID, "type": 3, "token": token, "version": 1,
                "data": {"custom_id": custom_id, "component_type": 2},
                "channel_id": channel_id, "channel": {"id": channel_id, "type": kind},
                "message": message, "locale": "en-US", "app_permissions": "0", "entitlements": [],
                "authorizing_integration_owners": {}, "context": if guild.is_some() { 0 } else { 1 },
            });
            match guild {
                Some(g) => {
                    d["guild_id"] = json!(g);
                    d["member"] = json!({"user": user(user_id), "roles": [], "joined_at": iso8601(now_ms()), "nick": null,
                        "deaf": false, "mute": false, "flags": 0, "permissions": "0"});
                }
                None => d["user"] = user(user_id),
            }
            st.interactions.insert(id.clone(), (token, None));
            dispatch(&mut st, "INTERACTION_CREATE", d);
            id
        };
        self.wake.notify_waiters();
        id
    }

    /// The callback type an interaction was answered with, if any.
    pub fn answered(&self, interaction: &str) -> Option<u64> {
        self.state.lock().unwrap().interactions.get(interaction).and_then(|(_, t)| *t)
    }

    /// Stop acknowledging heartbeats (a server gone quiet: a zombied connection).
    pub fn mute_acks(&self, mute: bool) {
        self.state.lock().unwrap().mute_acks = mute;
    }
}

impl Drop for DiscordFake {
    fn drop(&mut self) {
        self.state.lock().unwrap().drop_gen += 1;
        self.wake.notify_waiters();
    }
}

fn snowflake(st: &mut State) -> String {
    st.next_id += 1;
    (((now_ms() - DISCORD_EPOCH_MS) << 22) | (st.next_id & 0xfff)).to_string()
}

/// Create a message (by a user or the bot) and dispatch MESSAGE_CREATE.
#[allow(clippy::too_many_arguments)]
fn create(
    st: &mut State,
    channel_id: &str,
    author: &str,
    content: &str,
    reply_to: Option<&str>,
    files: &[(String, String, u64)],
    nonce: Option<&Value>,
    components: Option<&Value>,
) -> Value {
    let (kind, guild, _) = channel(channel_id).unwrap_or((0, Some(GUILD), None));
    let id = snowflake(st);
    // Mentions: every <@id> / <@!id> of a known user, and the author replied to.
    let mut mentions: Vec<Value> = Vec::new();
    for uid in [BOT_ID, ANN, BOB] {
        if content.contains(&format!("<@{uid}>")) || content.contains(&format!("<@!{uid}>")) {
            mentions.push(user(uid));
        }
    }
    let referenced = reply_to.and_then(|r| st.messages.get(r)).cloned();
    if let Some(r) = &referenced
        && let Some(a) = r["author"]["id"].as_str()
        && !mentions.iter().any(|m| m["id"] == a)
    {
        mentions.push(user(a));
    }
    let attachments: Vec<Value> = files
        .iter()
        .map(|(name, ct, size)| {
            let aid = snowflake(st);
            json!({"id": aid, "filename": name, "size": size, "content_type": ct,
                "url": format!("https://cdn.discordapp.com/attachments/{channel_id}/{aid}/{name}"),
                "proxy_url": format!("https://media.discordapp.net/attachments/{channel_id}/{aid}/{name}")})
        })
        .collect();
    let mut d = json!({
        "type": if referenced.is_some() { 19 } else { 0 }, "tts": false, "timestamp": iso8601(now_ms()), "pinned": false,
        "mentions": mentions, "mention_roles": [], "mention_everyone": false, "id": id, "flags": 0, "embeds": [],
        "edited_timestamp": null, "content": content, "components": [], "channel_id": channel_id, "author": user(author),
        "attachments": attachments, "channel_type": kind,
    });
    if let Some(g) = guild {
        d["guild_id"] = json!(g);
        d["member"] = json!({"roles": [], "joined_at": iso8601(now_ms()), "deaf": false, "mute": false, "flags": 0});
    }
    if let Some(r) = &referenced {
        d["message_reference"] = json!({"type": 0, "channel_id": r["channel_id"], "message_id": r["id"], "guild_id": guild});
        let mut inner = r.clone();
        inner.as_object_mut().unwrap().remove("referenced_message");
        d["referenced_message"] = inner;
    }
    if let Some(n) = nonce {
        d["nonce"] = n.clone();
    }
    if let Some(c) = components {
        d["components"] = c.clone();
    }
    st.messages.insert(id.clone(), d.clone());
    dispatch(st, "MESSAGE_CREATE", d.clone());
    d
}

/// Add a dispatch to the current session's log (sent to its connection, or
/// replayed on RESUME).
fn dispatch(st: &mut State, t: &str, d: Value) {
    let Some(sid) = st.current.clone() else { return };
    let Some(s) = st.sessions.get_mut(&sid) else { return };
    let mut d = d;
    // Without MESSAGE_CONTENT, content is empty unless it is a DM, mentions
    // the bot or is the bot's own.
    if t == "MESSAGE_CREATE" && s.intents & MESSAGE_CONTENT == 0 {
        let exempt = d["guild_id"].is_null()
            || d["author"]["id"] == BOT_ID
            || d["mentions"].as_array().is_some_and(|m| m.iter().any(|u| u["id"] == BOT_ID));
        if !exempt {
            d["content"] = json!("");
            d["attachments"] = json!([]);
            d["embeds"] = json!([]);
        }
    }
    s.seq += 1;
    let seq = s.seq;
    s.log.push((seq, json!({"op": 0, "d": d, "s": seq, "t": t})));
}

/// The REST API.
fn rest(state: &Mutex<State>, wake: &Notify, gw_port: u16, req: HttpRequest) -> HttpResponse {
    let mut st = state.lock().unwrap();
    st.requests.push((format!("{} {}", req.method, req.path), Instant::now()));
    let Some(path) = req.path.strip_prefix("/api/v10") else {
        return HttpResponse::json(404, &json!({"message": "404: Not Found", "code": 0}));
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Create Interaction Response: the token authorises it, not the bot's.
    if let ("POST", ["interactions", id, token, "callback"]) = (req.method.as_str(), segments.as_slice()) {
        let kind = req.json().and_then(|b| b["type"].as_u64());
        let Some((want, answered)) = st.interactions.get_mut(*id) else {
            return HttpResponse::json(404, &json!({"message": "Unknown interaction", "code": 10062}));
        };
        if want != token {
            return HttpResponse::json(401, &json!({"message": "Invalid Webhook Token", "code": 50027}));
        }
        if answered.is_some() {
            return HttpResponse::json(400, &json!({"message": "Interaction has already been acknowledged.", "code": 40060}));
        }
        let Some(kind) = kind.filter(|k| [1, 4, 5, 6, 7, 8, 9, 10, 12].contains(k)) else {
            return HttpResponse::json(400, &json!({"message": "Invalid Form Body", "code": 50035}));
        };
        *answered = Some(kind);
        return HttpResponse { status: 204, headers: Vec::new(), body: Vec::new() };
    }
    if req.header("authorization") != Some(&format!("Bot {BOT_TOKEN}")) {
        return unauthorized();
    }
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["gateway", "bot"]) => HttpResponse::json(
            200,
            &json!({"url": format!("ws://127.0.0.1:{gw_port}"), "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 1000 - st.identifies, "reset_after": 14_400_000, "max_concurrency": 1}}),
        ),
        ("GET", ["channels", id]) => match channel_object(id) {
            Some(c) => HttpResponse::json(200, &c),
            None => HttpResponse::json(404, &json!({"message": "Unknown Channel", "code": 10003})),
        },
        ("POST", ["channels", id, "messages"]) => {
            if let Some(secs) = st.rate_limits.pop_front() {
                st.post_attempts.push((Instant::now(), 429));
                return HttpResponse::json(429, &json!({"message": "You are being rate limited.", "retry_after": secs, "global": false}))
                    .header("retry-after", &(secs.ceil() as u64).to_string())
                    .header("x-ratelimit-scope", "user");
            }
            if channel(id).is_none() {
                st.post_attempts.push((Instant::now(), 404));
                return HttpResponse::json(404, &json!({"message": "Unknown Channel", "code": 10003}));
            }
            let Some(body) = req.json() else {
                return HttpResponse::json(400, &json!({"message": "Cannot send an empty message", "code": 50006}));
            };
            let content = body["content"].as_str().unwrap_or_default().to_string();
            let components = body.get("components").filter(|c| !c.is_null());
            if components.is_some_and(|c| !valid_components(c)) {
                st.post_attempts.push((Instant::now(), 400));
                return HttpResponse::json(400, &json!({"message": "Invalid Form Body", "code": 50035}));
            }
            let has_components = components.and_then(Value::as_array).is_some_and(|c| !c.is_empty());
            let nonce = body.get("nonce").filter(|n| !n.is_null());
            let too_long = content.chars().count() > 2000 || nonce.and_then(Value::as_str).is_some_and(|n| n.len() > 25);
            if (content.is_empty() && !has_components) || too_long {
                st.post_attempts.push((Instant::now(), 400));
                return HttpResponse::json(400, &json!({"message": "Invalid Form Body", "code": 50035}));
            }
            // enforce_nonce: the same nonce from the same author within the window returns that message.
            let key = nonce.map(|n| n.to_string());
            if body["enforce_nonce"] == true
                && let Some(k) = &key
                && let Some((at, existing)) = st.nonces.get(k)
                && at.elapsed() < NONCE_WINDOW
            {
                let existing = st.messages[existing].clone();
                st.post_attempts.push((Instant::now(), 200));
                return HttpResponse::json(200, &existing);
            }
            let reference = body["message_reference"]["message_id"].as_str().map(str::to_string);
            if let Some(r) = &reference
                && !st.messages.contains_key(r)
                && body["message_reference"]["fail_if_not_exists"] != false
            {
                return HttpResponse::json(400, &json!({"message": "Invalid Form Body", "code": 50035}));
            }
            st.post_attempts.push((Instant::now(), 200));
            let d = create(&mut st, id, BOT_ID, &content, reference.as_deref(), &[], nonce, components);
            if let Some(k) = key {
                let mid = d["id"].as_str().unwrap().to_string();
                st.nonces.insert(k, (Instant::now(), mid));
            }
            st.posts.push(d.clone());
            drop(st);
            wake.notify_waiters();
            HttpResponse::json(200, &d)
        }
        _ => HttpResponse::json(404, &json!({"message": "404: Not Found", "code": 0})),
    }
}

/// Action rows (at most 5) of buttons (at most 5 a row) with a style, a
/// label of up to 80 characters and a unique `custom_id` of 1–100.
fn valid_components(c: &Value) -> bool {
    let Some(rows) = c.as_array() else { return false };
    let mut ids = std::collections::HashSet::new();
    rows.len() <= 5
        && rows.iter().all(|row| {
            let buttons = row["components"].as_array();
            row["type"] == 1
                && buttons.is_some_and(|b| {
                    (1..=5).contains(&b.len())
                        && b.iter().all(|b| {
                            let id = b["custom_id"].as_str().unwrap_or_default();
                            b["type"] == 2
                                && b["style"].as_u64().is_some_and(|s| (1..=4).contains(&s))
                                && b["label"].as_str().is_some_and(|l| l.chars().count() <= 80)
                                && (1..=100).contains(&id.chars().count())
                                && ids.insert(id.to_string())
                        })
                })
        })
}

/// Why a gateway connection ends.
enum End {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// Drop the socket without a close frame.
    Drop,
}

/// One gateway connection.
async fn gateway(tcp: tokio::net::TcpStream, state: Arc<Mutex<State>>, wake: Arc<Notify>, port: u16) {
    let target = Arc::new(Mutex::new(String::new()));
    let t = target.clone();
    #[allow(clippy::result_large_err)] // the websocket handshake's callback type, as tungstenite defines it
    let accept = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        *t.lock().unwrap() = req.uri().to_string();
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, accept).await else { return };
    let target = target.lock().unwrap().clone();
    let (me, drop_gen, mut control_gen, interval) = {
        let mut st = state.lock().unwrap();
        st.connections += 1;
        let me = st.connections;
        st.open.push(me);
        st.paths.push((me, target.clone()));
        (me, st.drop_gen, st.control.0, st.heartbeat_interval)
    };
    let end = run_gateway(&mut ws, &state, &wake, me, drop_gen, &mut control_gen, interval, &target, port).await;
    {
        let mut st = state.lock().unwrap();
        st.open.retain(|c| *c != me);
        for s in st.sessions.values_mut() {
            if s.conn == Some(me) {
                s.conn = None;
            }
        }
        if let End::Close(code, _) = &end {
            st.closes.push((me, *code));
        }
    }
    if let End::Close(code, reason) = end {
        let _ = ws.close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_gateway(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    state: &Mutex<State>,
    wake: &Notify,
    me: u64,
    drop_gen: u64,
    control_gen: &mut u64,
    interval: u64,
    target: &str,
    port: u16,
) -> End {
    if !target.contains("v=10") || !target.contains("encoding=json") {
        return End::Close(4012, "Invalid API version");
    }
    let send = |v: Value| WsMessage::text(v.to_string());
    if ws.send(send(json!({"op": 10, "d": {"heartbeat_interval": interval}, "s": null, "t": null}))).await.is_err() {
        return End::Drop;
    }
    let mut last_beat = Instant::now();
    let deadline = Duration::from_millis(interval * 3 / 2);
    let mut session: Option<String> = None;
    let mut cursor = 0u64;
    let mut sent: VecDeque<Instant> = VecDeque::new();
    loop {
        // Dispatches for this connection's session, control payloads, drops.
        let (out, control, dropped) = {
            let st = state.lock().unwrap();
            let dropped = st.drop_gen != drop_gen;
            let mut out = Vec::new();
            if let Some(s) = session.as_ref().and_then(|s| st.sessions.get(s)) {
                for (seq, p) in &s.log {
                    if *seq > cursor {
                        out.push(p.clone());
                        cursor = *seq;
                    }
                }
            }
            let control = (st.control.0 != *control_gen).then(|| st.control.1.clone());
            *control_gen = st.control.0;
            (out, control, dropped)
        };
        if dropped {
            return End::Drop;
        }
        for p in out.into_iter().chain(control) {
            if ws.send(send(p)).await.is_err() {
                return End::Drop;
            }
        }
        if last_beat.elapsed() > deadline {
            return End::Close(4009, "Session timed out");
        }
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = wake.notified() => continue,
        };
        let text = match msg {
            Some(Ok(WsMessage::Text(t))) => t.as_str().to_string(),
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return End::Drop,
            Some(Ok(_)) => continue,
        };
        // Gateway rate limit: 120 events a minute per connection.
        sent.push_back(Instant::now());
        while sent.front().is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
            sent.pop_front();
        }
        if sent.len() > SEND_LIMIT {
            return End::Close(4008, "Rate limited.");
        }
        if text.len() > 4096 {
            return End::Close(4002, "Decode error.");
        }
        let Ok(v) = serde_json::from_str::<Value>(&text) else { return End::Close(4002, "Decode error.") };
        let d = &v["d"];
        match v["op"].as_u64() {
            Some(1) => {
                last_beat = Instant::now();
                let mute = {
                    let mut st = state.lock().unwrap();
                    st.heartbeats.push((me, d.clone()));
                    st.mute_acks
                };
                if !mute && ws.send(send(json!({"op": 11}))).await.is_err() {
                    return End::Drop;
                }
            }
            Some(2) => {
                if session.is_some() {
                    return End::Close(4005, "Already authenticated.");
                }
                if d["token"] != BOT_TOKEN {
                    return End::Close(4004, "Authentication failed.");
                }
                let sid = hex_id(32);
                let mut st = state.lock().unwrap();
                st.identifies += 1;
                let intents = d["intents"].as_u64().unwrap_or(0);
                st.sessions.insert(sid.clone(), Session { seq: 0, log: Vec::new(), intents, conn: Some(me) });
                st.current = Some(sid.clone());
                let ready = json!({
                    "v": 10, "user": user(BOT_ID), "guilds": [{"id": GUILD, "unavailable": true}], "session_id": sid,
                    "resume_gateway_url": format!("ws://127.0.0.1:{port}/resume"), "shard": [0, 1],
                    "application": {"id": APP_ID, "flags": 0}, "session_type": "normal",
                });
                dispatch(&mut st, "READY", ready);
                session = Some(sid);
                cursor = 0;
            }
            Some(6) => {
                if session.is_some() {
                    return End::Close(4005, "Already authenticated.");
                }
                if d["token"] != BOT_TOKEN {
                    return End::Close(4004, "Authentication failed.");
                }
                let sid = d["session_id"].as_str().unwrap_or_default().to_string();
                let seq = d["seq"].as_u64().unwrap_or(0);
                let known = {
                    let mut st = state.lock().unwrap();
                    st.resumes += 1;
                    let known = st.sessions.get(&sid).is_some_and(|s| seq <= s.seq);
                    if known {
                        st.sessions.get_mut(&sid).unwrap().conn = Some(me);
                        st.current = Some(sid.clone());
                        // Replay what came after `seq`, then RESUMED.
                        dispatch(&mut st, "RESUMED", json!({}));
                    }
                    known
                };
                if !known {
                    if ws.send(send(json!({"op": 9, "d": false, "s": null, "t": null}))).await.is_err() {
                        return End::Drop;
                    }
                    continue;
                }
                session = Some(sid);
                cursor = seq;
            }
            _ if session.is_none() => return End::Close(4003, "Not authenticated."),
            _ => return End::Close(4001, "Unknown opcode."),
        }
        wake.notify_waiters();
    }
}
