//! Servers for the agent tests, on loopback, written here:
//! - [`LlmServer`]: a scripted OpenAI-compatible chat completions endpoint
//!   that records every request and the concurrency it saw, and answers a
//!   request with `"stream": true` as the real API does: server-sent events
//!   (`data: {chunk}` lines, text and tool-call arguments in pieces, tool
//!   calls interleaved by index, usage last with `stream_options.include_usage`,
//!   then `data: [DONE]`);
//! - [`ChatServer`]: the JSON chat API the `guest-chat` channel polls and
//!   sends to (conversations and threads).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// One HTTP request as the handlers see it.
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// An HTTP response: status, extra headers, JSON body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl HttpResponse {
    pub fn json(body: Value) -> Self {
        Self { status: 200, headers: vec![], body }
    }
}

/// What goes on the wire: a JSON response, or a body of another type
/// written in pieces (server-sent events).
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    content_type: &'static str,
    body: Vec<u8>,
    /// Write the body in pieces of this many bytes (0: at once).
    pieces: usize,
    /// Write each server-sent event on its own, this long apart (zero: as `pieces` says).
    pause: Duration,
}

impl From<HttpResponse> for Wire {
    fn from(r: HttpResponse) -> Self {
        Wire {
            status: r.status,
            headers: r.headers,
            content_type: "application/json",
            body: r.body.to_string().into_bytes(),
            pieces: 0,
            pause: Duration::ZERO,
        }
    }
}

type Handler = Arc<dyn Fn(HttpRequest) -> Wire + Send + Sync>;

/// Serve `handler` on a free loopback port, one thread per connection, one
/// request per connection. Returns the port.
fn serve(handler: Handler) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let handler = handler.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (head, body) = super::read_request(&mut reader);
                if head.is_empty() {
                    return;
                }
                let mut parts = head.split_whitespace();
                let method = parts.next().unwrap_or_default().to_string();
                let path = parts.next().unwrap_or_default().to_string();
                let resp = handler(HttpRequest { method, path, body });
                let mut head = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
                    resp.status,
                    resp.content_type,
                    resp.body.len()
                );
                for (k, v) in resp.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.set_nodelay(true);
                let _ = stream.write_all(head.as_bytes());
                if !resp.pause.is_zero() {
                    let text = String::from_utf8_lossy(&resp.body).into_owned();
                    for event in text.split_inclusive("\n\n") {
                        let _ = stream.write_all(event.as_bytes());
                        let _ = stream.flush();
                        std::thread::sleep(resp.pause);
                    }
                } else if resp.pieces == 0 {
                    let _ = stream.write_all(&resp.body);
                } else {
                    for piece in resp.body.chunks(resp.pieces) {
                        let _ = stream.write_all(piece);
                        let _ = stream.flush();
                    }
                }
            });
        }
    });
    port
}

/// What the scripted model answers to a request (status, body, headers).
pub type Script = Arc<dyn Fn(&Value) -> HttpResponse + Send + Sync>;

#[derive(Default)]
struct Stats {
    in_flight: usize,
    max_in_flight: usize,
    per_tag: HashMap<String, usize>,
    max_per_tag: usize,
}

/// A scripted OpenAI-compatible server.
pub struct LlmServer {
    pub port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
    stats: Arc<Mutex<Stats>>,
}

/// The text of the last message in a request.
pub fn last_message(req: &Value) -> Value {
    req["messages"].as_array().and_then(|m| m.last().cloned()).unwrap_or(Value::Null)
}

/// The contents of every message of `role` in a request, in order.
pub fn contents(req: &Value, role: &str) -> Vec<String> {
    req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == role)
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A final answer.
pub fn answer(text: &str) -> HttpResponse {
    HttpResponse::json(json!({"choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": text}}]}))
}

/// A request to call one tool.
pub fn tool_call(id: &str, function: &str, args: &str) -> HttpResponse {
    HttpResponse::json(json!({"choices": [{"index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": function, "arguments": args}}]}}]}))
}

/// The script the tool tests use: a user message `call FUNCTION ARGS` gets
/// a tool call; a tool result gets the answer `tool said: RESULT`; a
/// summary request gets `SUMMARY(n chars)`; anything else `echo: TEXT`.
pub fn tool_script() -> Script {
    Arc::new(|req: &Value| {
        let last = last_message(req);
        let first_system = req["messages"][0]["content"].as_str().unwrap_or_default();
        if first_system.starts_with("Summarise") {
            return answer(&format!("SUMMARY({} chars)", last["content"].as_str().unwrap_or_default().len()));
        }
        let text = last["content"].as_str().unwrap_or_default();
        match last["role"].as_str() {
            Some("tool") => answer(&format!("tool said: {text}")),
            _ => match text.strip_prefix("call ").and_then(|r| r.split_once(' ')) {
                Some((function, args)) => tool_call("call-1", function, args),
                None => answer(&format!("echo: {text}")),
            },
        }
    })
}

/// The usage the scripted model reports: 10 prompt tokens per message sent,
/// 5 completion tokens per answer.
pub fn usage_for(req: &Value) -> Value {
    let messages = req["messages"].as_array().map_or(0, Vec::len);
    json!({"prompt_tokens": 10 * messages, "completion_tokens": 5, "total_tokens": 10 * messages + 5})
}

/// `s` in pieces of at most `n` characters.
fn pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

/// A completion (`choices[0].message`) as the chunks a streaming server
/// sends: the role, the text in pieces, each tool call's id and name and
/// then its arguments in pieces (calls interleaved), the finish reason,
/// and the usage when `include_usage`.
pub fn sse_chunks(completion: &Value, include_usage: bool, usage: &Value) -> Vec<Value> {
    let choice = &completion["choices"][0];
    let message = &choice["message"];
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": "test-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    for p in pieces(message["content"].as_str().unwrap_or_default(), 5) {
        out.push(chunk(json!({"content": p}), Value::Null));
    }
    let calls = message["tool_calls"].as_array().cloned().unwrap_or_default();
    for (i, c) in calls.iter().enumerate() {
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                "function": {"name": c["function"]["name"], "arguments": ""}}]}),
            Value::Null,
        ));
    }
    let args: Vec<Vec<String>> = calls.iter().map(|c| pieces(c["function"]["arguments"].as_str().unwrap_or_default(), 4)).collect();
    for k in 0..args.iter().map(Vec::len).max().unwrap_or(0) {
        for (i, a) in args.iter().enumerate() {
            if let Some(p) = a.get(k) {
                out.push(chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": p}}]}), Value::Null));
            }
        }
    }
    let finish = choice["finish_reason"].clone();
    out.push(chunk(json!({}), if finish.is_null() { json!("stop") } else { finish }));
    if include_usage {
        out.push(json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "choices": [], "usage": usage}));
    }
    out
}

/// The answer to `req`: JSON with `usage` added, or, when the request asks
/// for a stream and the script answered 200, the same as server-sent events.
fn wire_for(req: &Value, resp: HttpResponse, pause: Duration) -> Wire {
    let usage = usage_for(req);
    if resp.status != 200 || req["stream"] != true {
        let mut resp = resp;
        if resp.status == 200 && resp.body.get("usage").is_none() && resp.body.is_object() {
            resp.body["usage"] = usage;
        }
        return resp.into();
    }
    let include_usage = req["stream_options"]["include_usage"] == true;
    let mut body = String::new();
    for c in sse_chunks(&resp.body, include_usage, &usage) {
        body.push_str(&format!("data: {c}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    Wire { status: 200, headers: resp.headers, content_type: "text/event-stream", body: body.into_bytes(), pieces: 64, pause }
}

impl LlmServer {
    /// Start with `script`, answering each request after `delay`. The first
    /// word of the last user message is the request's tag (its session, in
    /// the tests), for per-tag concurrency.
    pub fn start(script: Script, delay: Duration) -> Self {
        Self::start_paced(script, delay, Duration::ZERO)
    }

    /// [`Self::start`], writing a streamed answer one event at a time,
    /// `pause` apart (a model that types slowly).
    pub fn start_paced(script: Script, delay: Duration, pause: Duration) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(Mutex::new(Stats::default()));
        let (r, s) = (requests.clone(), stats.clone());
        let port = serve(Arc::new(move |req: HttpRequest| {
            if req.method != "POST" || !req.path.ends_with("/chat/completions") {
                return HttpResponse { status: 404, headers: vec![], body: json!({"error": {"message": "no such path"}}) }.into();
            }
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let tag = contents(&body, "user").last().and_then(|t| t.split_whitespace().next().map(str::to_string)).unwrap_or_default();
            {
                let mut st = s.lock().unwrap();
                st.in_flight += 1;
                st.max_in_flight = st.max_in_flight.max(st.in_flight);
                let n = st.per_tag.entry(tag.clone()).or_default();
                *n += 1;
                let n = *n;
                st.max_per_tag = st.max_per_tag.max(n);
            }
            r.lock().unwrap().push(body.clone());
            std::thread::sleep(delay);
            let resp = script(&body);
            let mut st = s.lock().unwrap();
            st.in_flight -= 1;
            *st.per_tag.get_mut(&tag).unwrap() -= 1;
            wire_for(&body, resp, pause)
        }));
        Self { port, requests, stats }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The most requests in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.stats.lock().unwrap().max_in_flight
    }

    /// The most requests of one tag in flight at once.
    pub fn max_in_flight_per_tag(&self) -> usize {
        self.stats.lock().unwrap().max_per_tag
    }
}

#[derive(Default)]
struct ChatState {
    inbound: Vec<Value>,
    sent: Vec<Value>,
    acts: Vec<Value>,
}

/// The chat API `guest-chat` talks to.
pub struct ChatServer {
    pub port: u16,
    state: Arc<Mutex<ChatState>>,
}

impl ChatServer {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(ChatState::default()));
        let st = state.clone();
        let port = serve(Arc::new(move |req: HttpRequest| {
            let mut s = st.lock().unwrap();
            if req.method == "GET" && req.path.starts_with("/poll") {
                let after: usize = req.path.split("after=").nth(1).and_then(|a| a.parse().ok()).unwrap_or(0);
                // At most 100 a poll, as Telegram's getUpdates.
                let messages: Vec<Value> = s.inbound.iter().skip(after).take(100).cloned().collect();
                let cursor = after + messages.len();
                return HttpResponse::json(json!({"messages": messages, "cursor": cursor.to_string()})).into();
            }
            if req.method == "POST" && req.path == "/send" {
                let mut body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let id = format!("r{}", s.sent.len() + 1);
                body["id"] = json!(id);
                s.sent.push(body);
                return HttpResponse::json(json!({"id": id})).into();
            }
            // A channel action (typing, edit, react); an edit replaces the
            // text of the sent message it names and counts its edits.
            if req.method == "POST" && req.path == "/act" {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                if body["kind"] == "edit" {
                    let Some(m) = s.sent.iter_mut().find(|m| m["id"] == body["message_id"]) else {
                        return HttpResponse { status: 404, headers: vec![], body: json!({"error": "no such message"}) }.into();
                    };
                    m["text"] = body["text"].clone();
                    m["edits"] = json!(m["edits"].as_u64().unwrap_or(0) + 1);
                }
                s.acts.push(body);
                return HttpResponse::json(json!({"ok": true})).into();
            }
            HttpResponse { status: 404, headers: vec![], body: json!({}) }.into()
        }));
        Self { port, state }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A person `sender` writes `text` in `conversation` (and `thread`).
    pub fn say(&self, conversation: &str, thread: Option<&str>, sender: &str, text: &str) {
        let mut s = self.state.lock().unwrap();
        let id = (s.inbound.len() + 1).to_string();
        s.inbound.push(json!({"id": id, "conversation": conversation, "thread": thread, "sender": sender, "text": text}));
    }

    /// Every reply sent so far (with its `id`, and after an edit its new
    /// `text` and how many `edits`).
    pub fn sent(&self) -> Vec<Value> {
        self.state.lock().unwrap().sent.clone()
    }

    /// Every channel action so far (`{"kind": "typing" | "edit" | "react", …}`), in order.
    pub fn acts(&self) -> Vec<Value> {
        self.state.lock().unwrap().acts.clone()
    }

    /// Wait until at least `n` replies were sent; returns them.
    pub fn wait_sent(&self, n: usize, timeout: Duration) -> Vec<Value> {
        super::wait_for(&format!("{n} replies"), timeout, || {
            let sent = self.sent();
            (sent.len() >= n).then_some(sent)
        })
    }
}

/// kata.toml for an approval test: the scripted model at `llm` as the agent,
/// `[tools] mode = "ask"` with requests sent to `approvals_to`
/// ("PLUGIN:CONVERSATION"), the channel's own `[plugins.…]` block, and the
/// notes tools (`guest-tools`) with `notes` granted read-write.
pub fn approval_toml(llm: &LlmServer, approvals_to: &str, channel: &str, notes: &std::path::Path) -> String {
    format!(
        r#"
[agent]
backend = "openai"
base_url = "{llm}"
model = "test-model"
api_key = "env:KATA_TEST_OPENAI_KEY"

[tools]
mode = "ask"
approvals_to = "{approvals_to}"
{channel}{notes}"#,
        llm = llm.base_url(),
        notes = notes_plugin(notes, "http://127.0.0.1:9"),
    )
}

/// `[plugins.notes]`: the tools guest with `/notes` (rw) and `web` granted.
pub fn notes_plugin(notes: &std::path::Path, web_base: &str) -> String {
    format!(
        r#"
[plugins.notes]
path = "{wasm}"
files = [{{ host = "{notes}", guest = "/notes", mode = "rw" }}]
network = ["{web_base}/"]
config = {{ web_base = "{web_base}" }}
"#,
        wasm = super::guest("guest-tools").display(),
        notes = notes.display()
    )
}
