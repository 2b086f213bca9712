//! The server side of `guest-loopback`: a chat service on 127.0.0.1 that
//! hands out a script of inbound messages and records every send, for the
//! crash test and the throughput benchmark.
//!
//! Messages are `m<i>` (id, text) in conversation `c<i % conversations>`;
//! each becomes visible to `poll` at its release time, which is what a reply's
//! latency is measured from. Sends are recorded per idempotency key: the
//! first is the delivery (as an idempotent service would do), repeats are
//! counted as the duplicates a service without idempotency would have shown.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most messages one poll returns.
const BATCH: usize = 500;
/// Longest a poll waits for the next message.
const LONG_POLL: Duration = Duration::from_secs(1);

/// One recorded delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message index the reply answers (from its text `m<i>`), if any.
    pub answers: Option<usize>,
    /// Latency from the message's release to its first delivery.
    pub latency: Duration,
    /// Of that, how long the message waited to be handed out by a poll
    /// (the rest is the daemon's: commit, turn, send).
    pub to_poll: Duration,
    /// How many times this key was sent (1 = no duplicate).
    pub sends: u32,
}

#[derive(Default)]
struct State {
    /// When the script started (None: not yet; nothing is released).
    begun: Option<Instant>,
    /// Release time of each message, relative to `start`.
    release: Vec<Duration>,
    /// When each message was first handed out by a poll, from `begun`.
    polled: Vec<Option<Duration>>,
    /// First delivery and send count per idempotency key.
    sends: HashMap<String, Delivery>,
    polls: u64,
    /// `/send-batch` requests served.
    batches: u64,
    /// Reply texts whose next send is refused (an error result), and the refusals so far per text.
    fail_next: std::collections::HashSet<String>,
    refused: HashMap<String, u32>,
}

/// The running server.
pub struct LoopbackServer {
    pub port: u16,
    start: Instant,
    state: Arc<Mutex<State>>,
    conversations: usize,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    /// Scheduling gaps the canary thread saw (see [`LoopbackServer::machine_gaps`]).
    gaps: Arc<Mutex<Vec<(Duration, Duration)>>>,
}

impl LoopbackServer {
    /// Serve `n` messages spread over `conversations`, message `i` released
    /// at `release(i)` after start.
    pub fn start(n: usize, conversations: usize, release: impl Fn(usize) -> Duration) -> Self {
        let s = Self::start_paused(n, conversations, release);
        s.begin();
        s
    }

    /// Like [`LoopbackServer::start`], but nothing is released until [`LoopbackServer::begin`].
    pub fn start_paused(n: usize, conversations: usize, release: impl Fn(usize) -> Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State { release: (0..n).map(release).collect(), polled: vec![None; n], ..State::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let connections = Arc::new(AtomicUsize::new(0));
        let (st, stp, count) = (state.clone(), stop.clone(), connections.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stp.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                count.fetch_add(1, Ordering::Relaxed);
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &st, conversations);
                });
            }
        });
        let gaps = Arc::default();
        Self { port, start, state, conversations, stop, connections, gaps }
    }

    /// Start the canary: a thread that only sleeps a millisecond at a
    /// time, until the server stops. A gap much longer than that is the
    /// machine not running this process (other load, the VM), whatever the
    /// daemon does; see [`LoopbackServer::machine_gaps`].
    pub fn watch_machine(&self) {
        let (g, stp, start) = (self.gaps.clone(), self.stop.clone(), self.start);
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !stp.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
                let now = Instant::now();
                let gap = now - last;
                if gap > Duration::from_millis(20) {
                    g.lock().unwrap().push((now - start, gap));
                }
                last = now;
            }
        });
    }

    /// Gaps over 20 ms between the wake-ups of the canary (started by
    /// [`LoopbackServer::watch_machine`]): when and how long (from the server's start) the
    /// machine ran none of it. A delivery stall at the same moment is the
    /// machine's, not the daemon's.
    pub fn machine_gaps(&self) -> Vec<(Duration, Duration)> {
        self.gaps.lock().unwrap().clone()
    }

    /// When [`LoopbackServer::begin`] was called, from the server's start.
    pub fn begun_at(&self) -> Option<Duration> {
        self.state.lock().unwrap().begun.map(|b| b - self.start)
    }

    /// Start releasing messages (their release times count from now).
    pub fn begin(&self) {
        self.state.lock().unwrap().begun = Some(Instant::now());
    }

    /// The `base` to configure the plugin with.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every delivery so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().sends.values().cloned().collect()
    }

    /// Number of distinct keys delivered.
    pub fn delivered(&self) -> usize {
        self.state.lock().unwrap().sends.len()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Polls served.
    pub fn polls(&self) -> u64 {
        self.state.lock().unwrap().polls
    }

    /// `/send-batch` requests served.
    pub fn batches(&self) -> u64 {
        self.state.lock().unwrap().batches
    }

    /// Refuse the next send of a reply with each of `texts` (an error for
    /// that message alone, in a batch) once.
    pub fn fail_next(&self, texts: &[&str]) {
        self.state.lock().unwrap().fail_next.extend(texts.iter().map(|k| k.to_string()));
    }

    /// Sends refused so far, per reply text.
    pub fn refused(&self) -> HashMap<String, u32> {
        self.state.lock().unwrap().refused.clone()
    }

    /// Time since the server started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, conversations: usize) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut len = 0usize;
        let mut close = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            } else if lower == "connection: close" {
                close = true;
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        // Before `begin`, a poll is a long poll too: it waits (up to
        // LONG_POLL) for the stream to start, as a chat service would.
        let asked = Instant::now();
        let mut begun = state.lock().unwrap().begun;
        while begun.is_none() && method == "GET" && asked.elapsed() < LONG_POLL {
            std::thread::sleep(Duration::from_millis(1));
            begun = state.lock().unwrap().begun;
        }
        let Some(now) = begun.map(|b| b.elapsed()) else {
            respond(&mut out, r#"{"messages":[],"cursor":null}"#)?;
            continue;
        };
        let reply = match (method.as_str(), target.split('?').next().unwrap_or("")) {
            ("GET", "/poll") => {
                let cursor: usize = target.split("cursor=").nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                // A long poll: with nothing released yet, wait (up to a
                // second) for the next message, as chat services do.
                let next = state.lock().unwrap().release.get(cursor).copied();
                if let Some(at) = next {
                    let wait = at.saturating_sub(now).min(LONG_POLL);
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                }
                let now = begun.map(|b| b.elapsed()).unwrap_or(now);
                let mut st = state.lock().unwrap();
                st.polls += 1;
                let end =
                    (cursor..st.release.len().min(cursor + BATCH)).take_while(|&i| st.release[i] <= now).last().map_or(cursor, |i| i + 1);
                for i in cursor..end {
                    if let Some(p @ None) = st.polled.get_mut(i) {
                        *p = Some(now);
                    }
                }
                let messages: Vec<serde_json::Value> = (cursor..end)
                    .map(|i| serde_json::json!({"id": format!("m{i}"), "conversation": format!("c{}", i % conversations), "sender": "u1", "text": format!("m{i}")}))
                    .collect();
                serde_json::json!({"messages": messages, "cursor": end.to_string()})
            }
            ("POST", "/send") => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                record_send(&mut state.lock().unwrap(), &v, now)
            }
            // Several messages in one request: one result each.
            ("POST", "/send-batch") => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let mut st = state.lock().unwrap();
                st.batches += 1;
                let results: Vec<serde_json::Value> =
                    v["messages"].as_array().map(|ms| ms.iter().map(|m| record_send(&mut st, m, now)).collect()).unwrap_or_default();
                serde_json::json!({ "results": results })
            }
            _ => {
                out.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")?;
                continue;
            }
        };
        respond(&mut out, &reply.to_string())?;
        if close {
            return Ok(());
        }
    }
}

/// Record one send (`{"key", "text", …}`) at `now`; returns its result
/// (`{"id"}`, or `{"error"}` for a text [`LoopbackServer::fail_next`] named).
fn record_send(st: &mut State, v: &serde_json::Value, now: Duration) -> serde_json::Value {
    let key = v["key"].as_str().unwrap_or("").to_string();
    let text = v["text"].as_str().unwrap_or("");
    if st.fail_next.remove(text) {
        *st.refused.entry(text.to_string()).or_default() += 1;
        return serde_json::json!({"error": "refused on purpose"});
    }
    let answers = v["text"].as_str().and_then(|t| t.strip_prefix('m')).and_then(|i| i.parse::<usize>().ok());
    let released = answers.and_then(|i| st.release.get(i).copied()).unwrap_or(now);
    let polled = answers.and_then(|i| st.polled.get(i).copied().flatten()).unwrap_or(released);
    st.sends.entry(key.clone()).and_modify(|d| d.sends += 1).or_insert(Delivery {
        answers,
        latency: now.saturating_sub(released),
        to_poll: polled.saturating_sub(released),
        sends: 1,
    });
    serde_json::json!({"id": format!("sent-{key}")})
}

/// One response in one write (several small writes would meet Nagle's
/// algorithm and the peer's delayed ACK: 40 ms each).
fn respond(out: &mut TcpStream, body: &str) -> std::io::Result<()> {
    let msg = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    out.write_all(msg.as_bytes())
}
