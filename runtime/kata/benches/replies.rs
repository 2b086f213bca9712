//! What the rich-reply features cost and buy, through the real `kata run`
//! (release build) and the chat channel guest (tests/guests/guest-chat) on
//! loopback, each figure against the same setup without the features in
//! the same run:
//! - reply throughput for a backlog (echo agent) on a channel that lists
//!   typing and reactions — every message gets the acknowledgement reaction
//!   and every turn a typing indicator — against one that lists nothing;
//! - with the openai backend streaming a reply slowly (the scripted server
//!   writes one event every 50 ms), how long until the person sees the first
//!   text and the whole reply, with drafts (a channel that lists `edit`)
//!   against one final message.
//!
//! Run with `cargo bench -p kata --bench replies` (after scripts/setup.sh);
//! it prints a Markdown table for BENCHMARKS.md. KATA_BENCH_ROUNDS sets the
//! rounds per figure (median; default 3).
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::llm::{ChatServer, LlmServer, answer};
use common::{TestWorkspace, guest, wait_for};

const WAIT: Duration = Duration::from_secs(300);

fn rounds() -> usize {
    std::env::var("KATA_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A workspace: `agent` lines, then the chat channel on `chat` listing `features`.
fn workspace(agent: &str, chat: &ChatServer, features: &str) -> TestWorkspace {
    let ws = TestWorkspace::new("");
    let toml = format!(
        r#"
{agent}

[plugins.chat]
path = "{wasm}"
network = ["{base}/"]
config = {{ api_base = "{base}", poll_interval = "20ms", features = "{features}" }}
allow_from = ["*"]
limits = {{ messages_per_minute = 100000, requests_per_minute = 100000 }}
"#,
        wasm = guest("guest-chat").display(),
        base = chat.base()
    );
    std::fs::write(ws.path().join("kata.toml"), toml).unwrap();
    ws
}

/// Replies per second for `n` messages over `conversations` conversations,
/// all waiting before the daemon starts (the echo agent answers each).
fn backlog(features: &str, n: usize, conversations: usize) -> f64 {
    let chat = ChatServer::start();
    for i in 0..n {
        chat.say(&format!("c{}", i % conversations), None, "ann", &format!("m{i}"));
    }
    let ws = workspace("[agent]\nbackend = \"echo\"\nmax_concurrent_sessions = 8", &chat, features);
    let started = Instant::now();
    let _daemon = ws.run(&[("KATA_LOG", "warn")]);
    wait_for("every reply", WAIT, || (chat.sent().len() >= n).then_some(()));
    n as f64 / started.elapsed().as_secs_f64()
}

/// With a slowly streamed reply: (seconds until the first text is visible,
/// seconds until the whole reply is), from the message being written.
fn streamed(features: &str, text: &str) -> (f64, f64) {
    let reply = text.to_string();
    let llm = LlmServer::start_paced(std::sync::Arc::new(move |_| answer(&reply)), Duration::ZERO, Duration::from_millis(50));
    let chat = ChatServer::start();
    let agent = format!("[agent]\nbackend = \"openai\"\nbase_url = \"{}\"\nmodel = \"m\"", llm.base_url());
    let ws = workspace(&agent, &chat, features);
    let _daemon = ws.run(&[("KATA_LOG", "warn")]);
    // Warm up (instances started, features known), then measure the second turn.
    chat.say("c1", None, "ann", "warm up");
    wait_for("the warm-up reply", WAIT, || chat.sent().iter().any(|m| m["text"] == text).then_some(()));
    let before = chat.sent().len();
    let t = Instant::now();
    chat.say("c1", None, "ann", "go");
    let first = wait_for("the first text", WAIT, || (chat.sent().len() > before).then(|| t.elapsed()));
    let whole = wait_for("the whole reply", WAIT, || chat.sent().iter().skip(before).any(|m| m["text"] == text).then(|| t.elapsed()));
    (first.as_secs_f64(), whole.as_secs_f64())
}

fn main() {
    // `cargo bench` passes --bench; a plain `cargo test --benches` smoke run does one quick round.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (n, rounds) = if smoke { (20, 1) } else { (2000, rounds()) };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load before: {}", load.trim());

    let (mut with, mut without) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // Alternating which goes first, so neither always follows the other.
        if r % 2 == 0 {
            without.push(backlog("", n, 50));
            with.push(backlog("typing,reactions", n, 50));
        } else {
            with.push(backlog("typing,reactions", n, 50));
            without.push(backlog("", n, 50));
        }
    }
    println!("replies/s by round, with: {with:.0?}, without: {without:.0?}");
    let (w, wo) = (median(with), median(without));

    let text = "kata streams this reply as a draft: ".repeat(if smoke { 1 } else { 5 });
    let text = text.trim_end();
    let (mut d_first, mut d_whole, mut p_first, mut p_whole) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (f, a) = streamed("edit", text);
        d_first.push(f);
        d_whole.push(a);
        let (f, a) = streamed("", text);
        p_first.push(f);
        p_whole.push(a);
    }
    println!("first/whole text by round (s), drafts: {d_first:.2?} / {d_whole:.2?}, one message: {p_first:.2?} / {p_whole:.2?}");
    let (df, dw, pf, pw) = (median(d_first), median(d_whole), median(p_first), median(p_whole));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load after: {}", load.trim());
    println!();
    println!("| figure | with the features | without | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| replies/s, {n} waiting messages in 50 conversations (echo; ack reaction + typing per message) | {w:.0} | {wo:.0} | {:.2}× |",
        w / wo
    );
    println!(
        "| first text visible, a {}-char reply streamed at one event per 50 ms (drafts) | {:.0} ms | {:.0} ms | {:.2}× |",
        text.chars().count(),
        df * 1000.0,
        pf * 1000.0,
        df / pf
    );
    println!("| whole reply visible, same | {:.0} ms | {:.0} ms | {:.2}× |", dw * 1000.0, pw * 1000.0, dw / pw);
}
