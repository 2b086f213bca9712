//! End-to-end throughput and latency: inbound → inbox → echo agent → outbox
//! → send, through the real `kata run` (release build) and a WASM channel
//! (`guest-loopback`) talking to a load generator on 127.0.0.1.
//!
//! Measured in one run, each against a baseline from the same run:
//! - peak msg/s with a backlog of messages, against the storage path alone
//!   (the same inbox/outbox transactions with no plugin and no agent);
//! - p50/p99 latency (release → delivered) at fixed rates;
//! - idle RSS with six plugins, against the daemon with none;
//! - RSS over a soak at 1k msg/s (`KATA_BENCH_SOAK_SECS`, default 120).
//!
//! Run with `scripts/bench.sh` (builds the guests, unsets RUST_BACKTRACE);
//! it prints a Markdown table for BENCHMARKS.md.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../../../tests/common/loopback.rs"]
mod loopback;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loopback::LoopbackServer;

#[path = "shared/bin.rs"]
mod bin;
use bin::kata;

fn guest() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests/guest-loopback.wasm");
    assert!(p.exists(), "{} is missing: run scripts/setup.sh first", p.display());
    p
}

/// Send lanes per channel (`limits.concurrent_sends`): KATA_BENCH_SENDS,
/// default 4 (kata's default; with send-batch, more lanes only make smaller
/// batches — 16 was the default while every reply took a send call of its own).
fn sends() -> u32 {
    std::env::var("KATA_BENCH_SENDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4)
}

/// Whether the channel sends in batches (`send-batch`, config `batch = "on"`):
/// KATA_BENCH_BATCH=off sends one message per call.
fn batch() -> bool {
    std::env::var("KATA_BENCH_BATCH").map_or(true, |v| v != "off")
}

/// A workspace with `plugins` loopback channels, the first on `server`.
fn workspace(server: Option<&LoopbackServer>, plugins: usize) -> tempfile::TempDir {
    workspace_with(server, plugins, batch())
}

/// [`workspace`], batching or not.
fn workspace_with(server: Option<&LoopbackServer>, plugins: usize, batch: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    assert!(Command::new(kata()).arg("init").arg(dir.path()).stdout(Stdio::null()).status().unwrap().success());
    let mut toml = std::fs::read_to_string(dir.path().join("kata.toml")).unwrap();
    let base = server.map(|s| s.base()).unwrap_or_else(|| "http://127.0.0.1:9".into());
    for i in 0..plugins {
        toml.push_str(&format!(
            "\n[plugins.loop{i}]\npath = \"{}\"\nnetwork = [\"{base}\"]\nconfig = {{ base = \"{base}\", poll_interval = \"1s\", batch = \"{batch}\" }}\n\
             allow_from = [\"*\"]\nlimits = {{ requests_per_minute = 100000000, messages_per_minute = 100000000, bytes_per_minute = \"64GiB\", concurrent_sends = {sends} }}\n",
            guest().display(),
            sends = sends(),
            batch = if batch { "on" } else { "off" },
        ));
    }
    std::fs::write(dir.path().join("kata.toml"), toml).unwrap();
    dir
}

struct Daemon(Child);

impl Daemon {
    fn start(ws: &Path) -> Self {
        let child = Command::new(kata())
            .args(["run", "-w"])
            .arg(ws)
            .env("KATA_LOG", std::env::var("KATA_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::null())
            // KATA_BENCH_LOG=FILTER keeps the daemon's log in ./bench-daemon.log (for finding stalls).
            .stderr(match std::env::var("KATA_BENCH_LOG") {
                Ok(_) => Stdio::from(std::fs::File::create("bench-daemon.log").unwrap()),
                Err(_) => Stdio::null(),
            })
            .spawn()
            .unwrap();
        let sock = ws.join(".kata/kata.sock");
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(t.elapsed() < Duration::from_secs(120), "the daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon(child)
    }

    fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

fn wait_delivered(server: &LoopbackServer, n: usize, timeout: Duration) {
    let t = Instant::now();
    while server.delivered() < n {
        assert!(t.elapsed() < timeout, "only {} of {n} delivered after {timeout:?}", server.delivered());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The storage path alone: the same transactions kata makes per message.
fn storage_baseline(n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = kata::store::Db::open(&dir.path().join("kata.db")).unwrap();
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let msgs: Vec<kata::store::Inbound> = chunk
            .iter()
            .map(|i| kata::store::Inbound {
                channel_msg_id: format!("m{i}"),
                conversation: format!("c{}", i % 50),
                thread: None,
                sender: "u1".into(),
                sender_name: None,
                text: format!("m{i}"),
                attachments_json: "[]".into(),
                timestamp_ms: 0,
                raw: None,
                group: false,
                mentioned: false,
            })
            .collect();
        db.record_poll("loop", &msgs, Some(&chunk[chunk.len() - 1].to_string())).unwrap();
        for row in db.pending_inbox(500).unwrap() {
            let reply = kata::store::Reply {
                plugin: "loop".into(),
                conversation: row.msg.conversation.clone(),
                thread: None,
                reply_to: Some(row.msg.channel_msg_id.clone()),
                text: row.msg.text.clone(),
                rich: Default::default(),
            };
            db.complete_inbox(row.id, Some(&reply)).unwrap();
        }
        for row in db.due_outbox("loop", u64::MAX / 2, 500).unwrap() {
            db.mark_sent(row.id, "r").unwrap();
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn peak(n: usize, batch: bool) -> (f64, Duration) {
    let server = LoopbackServer::start_paused(n, 50, |_| Duration::ZERO);
    let ws = workspace_with(Some(&server), 1, batch);
    let _d = Daemon::start(ws.path());
    let t = Instant::now();
    server.begin();
    wait_delivered(&server, n, Duration::from_secs(600));
    let took = t.elapsed();
    (n as f64 / took.as_secs_f64(), took)
}

fn at_rate(rate: u32, secs: u32) -> (Duration, Duration, usize, String) {
    let n = (rate * secs) as usize;
    let server = LoopbackServer::start_paused(n, 50, move |i| Duration::from_secs_f64(i as f64 / f64::from(rate)));
    server.watch_machine();
    let ws = workspace(Some(&server), 1);
    let _d = Daemon::start(ws.path());
    server.begin();
    wait_delivered(&server, n, Duration::from_secs(u64::from(secs) * 20 + 60));
    let deliveries = server.deliveries();
    // KATA_BENCH_DUMP=FILE: each delivery as "message-index latency-µs
    // to-poll-µs" (for finding stalls: the last is how long the message
    // waited to be handed out by a poll; the rest of its latency is the daemon's).
    if let Ok(path) = std::env::var("KATA_BENCH_DUMP") {
        let lines: Vec<String> =
            deliveries.iter().map(|d| format!("{} {} {}", d.answers.unwrap_or(0), d.latency.as_micros(), d.to_poll.as_micros())).collect();
        std::fs::write(format!("{path}.{rate}"), lines.join("\n")).unwrap();
    }
    // The machine's own stalls in the same seconds, seen by the load
    // generator's canary thread (times from `begin`, as message i is released at i/rate).
    let begun = server.begun_at().unwrap_or_default();
    let gaps: Vec<String> = server
        .machine_gaps()
        .iter()
        .filter(|(at, _)| *at > begun)
        .map(|(at, gap)| format!("{:.0} ms at {:.2} s", gap.as_secs_f64() * 1e3, (*at - begun).as_secs_f64()))
        .collect();
    let machine = if gaps.is_empty() { "none over 20 ms".to_string() } else { gaps.join(", ") };
    let mut lat: Vec<Duration> = deliveries.iter().map(|d| d.latency).collect();
    lat.sort();
    (percentile(&lat, 0.5), percentile(&lat, 0.99), n, machine)
}

/// The machine's CPU time so far, in ticks: (stolen, all). On a shared VM
/// the hypervisor runs other guests on "our" cores now and then ("steal" in
/// /proc/stat); while it does, every process here stalls, kata or native.
fn cpu_stolen() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    (ticks.get(7).copied().unwrap_or(0), ticks.iter().take(8).sum())
}

/// The share of CPU time stolen between two [`cpu_stolen`] readings.
fn stolen_share(a: (u64, u64), b: (u64, u64)) -> String {
    let all = b.1.saturating_sub(a.1);
    if all == 0 {
        return "unknown".into();
    }
    format!("{:.0} %", 100.0 * b.0.saturating_sub(a.0) as f64 / all as f64)
}

/// The disks' writes and flushes so far: [writes completed, ms spent
/// writing, flush requests completed, ms spent flushing], summed over the
/// whole disks in /proc/diskstats (fields 5, 8, 16, 17; flushes since Linux
/// 5.5). A checkpoint's fsync writes the log and ends in a flush; when the
/// host's disk is slow, a commit that waits on the checkpoint's writeback
/// waits with it (see BENCHMARKS.md, "What bounds p99").
fn disk_io() -> [u64; 4] {
    let stats = std::fs::read_to_string("/proc/diskstats").unwrap_or_default();
    let mut total = [0; 4];
    for line in stats.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Whole disks only (a partition's I/O is its disk's too).
        if f.len() < 20 || !std::path::Path::new("/sys/block").join(f[2]).exists() {
            continue;
        }
        // Field k of the kernel's documentation is f[2 + k].
        for (t, k) in total.iter_mut().zip([5, 8, 16, 17]) {
            *t += f[2 + k].parse::<u64>().unwrap_or(0);
        }
    }
    total
}

/// The disk I/O between two [`disk_io`] readings, in words.
fn disk_share(a: [u64; 4], b: [u64; 4]) -> String {
    let d: Vec<u64> = a.iter().zip(&b).map(|(a, b)| b.saturating_sub(*a)).collect();
    let avg = |n: u64, ms: u64| if n == 0 { 0.0 } else { ms as f64 / n as f64 };
    format!("disk: {} writes averaging {:.2} ms, {} flushes averaging {:.2} ms", d[0], avg(d[0], d[1]), d[2], avg(d[2], d[3]))
}

/// The same echo loop as a plain native client of the server (no kata, no
/// WASM, no database): the floor any bot on this machine would hit.
fn native_at_rate(rate: u32, secs: u32) -> (Duration, Duration) {
    let n = (rate * secs) as usize;
    let server = LoopbackServer::start_paused(n, 50, move |i| Duration::from_secs_f64(i as f64 / f64::from(rate)));
    native_echo(&server, n);
    let mut lat: Vec<Duration> = server.deliveries().iter().map(|d| d.latency).collect();
    lat.sort();
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

/// The native echo client on a backlog of `n`: msg/s.
fn native_peak(n: usize) -> f64 {
    let server = LoopbackServer::start_paused(n, 50, |_| Duration::ZERO);
    let t = Instant::now();
    native_echo(&server, n);
    n as f64 / t.elapsed().as_secs_f64()
}

/// Poll and answer every message, one request at a time over one kept-open
/// connection, until `n` are delivered.
fn native_echo(server: &LoopbackServer, n: usize) {
    let client = reqwest::blocking::Client::new();
    server.begin();
    let mut cursor = "0".to_string();
    while server.delivered() < n {
        let v: serde_json::Value = client.get(format!("{}/poll?cursor={cursor}", server.base())).send().unwrap().json().unwrap();
        for m in v["messages"].as_array().unwrap() {
            let body = serde_json::json!({"key": m["id"], "conversation": m["conversation"], "text": m["text"], "reply_to": m["id"]});
            client.post(format!("{}/send", server.base())).json(&body).send().unwrap();
        }
        if let Some(c) = v["cursor"].as_str() {
            cursor = c.to_string();
        }
    }
}

/// The native echo client answering each poll's messages with one
/// `/send-batch` request (what the batching channel does, without kata).
fn native_batch_peak(n: usize) -> f64 {
    let server = LoopbackServer::start_paused(n, 50, |_| Duration::ZERO);
    let client = reqwest::blocking::Client::new();
    let t = Instant::now();
    server.begin();
    let mut cursor = "0".to_string();
    while server.delivered() < n {
        let v: serde_json::Value = client.get(format!("{}/poll?cursor={cursor}", server.base())).send().unwrap().json().unwrap();
        let messages: Vec<serde_json::Value> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| serde_json::json!({"key": m["id"], "conversation": m["conversation"], "text": m["text"], "reply_to": m["id"]}))
            .collect();
        for chunk in messages.chunks(32) {
            client.post(format!("{}/send-batch", server.base())).json(&serde_json::json!({ "messages": chunk })).send().unwrap();
        }
        if let Some(c) = v["cursor"].as_str() {
            cursor = c.to_string();
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Idle RSS (KiB) of a daemon with `plugins` channels 5 s after it started:
/// at its first start (it compiles the plugin into the workspace's cache, as
/// a plugin configured by path and never `kata plugin add`ed is), and at the
/// next one (compiled code loaded from the cache: every later start).
fn idle_rss(plugins: usize) -> (u64, u64) {
    let ws = workspace(None, plugins);
    let first = {
        let d = Daemon::start(ws.path());
        std::thread::sleep(Duration::from_secs(5));
        d.rss_kib()
    };
    let d = Daemon::start(ws.path());
    std::thread::sleep(Duration::from_secs(5));
    (first, d.rss_kib())
}

fn soak(rate: u32, secs: u32) -> Vec<(u32, u64)> {
    let n = (rate * secs) as usize;
    let server = LoopbackServer::start_paused(n, 50, move |i| Duration::from_secs_f64(i as f64 / f64::from(rate)));
    let ws = workspace(Some(&server), 1);
    let d = Daemon::start(ws.path());
    server.begin();
    let mut samples = Vec::new();
    let step = (secs / 6).max(5);
    let mut t = 0;
    while t < secs {
        std::thread::sleep(Duration::from_secs(u64::from(step)));
        t += step;
        samples.push((t, d.rss_kib()));
    }
    wait_delivered(&server, n, Duration::from_secs(600));
    samples
}

fn main() {
    // `cargo bench` passes --bench. Under `cargo test --all-targets` it is
    // absent: then check that the pipeline works, quickly, and stop.
    if !std::env::args().any(|a| a == "--bench") {
        let (rate, took) = peak(300, true);
        println!("throughput smoke test: 300 messages delivered in {took:?} ({rate:.0} msg/s, debug build)");
        return;
    }
    let soak_secs: u32 = std::env::var("KATA_BENCH_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    // KATA_BENCH_ONLY=peak,latency,rss,soak runs a subset (for profiling).
    let only = std::env::var("KATA_BENCH_ONLY").ok();
    let run = |part: &str| only.as_deref().is_none_or(|o| o.split(',').any(|p| p == part));
    println!("| measurement | result | baseline (same run) | ratio |");
    println!("|---|---|---|---|");
    if run("peak") {
        let base = storage_baseline(20_000);
        let native = native_peak(20_000);
        let native_batch = native_batch_peak(20_000);
        let (single, single_took) = peak(20_000, false);
        let (peak_rate, took) = peak(20_000, true);
        println!(
            "| peak throughput, 20k-message backlog, 1 channel, send-batch | {peak_rate:.0} msg/s ({:.1} s) | storage path alone: {base:.0} msg/s; native echo client: {native:.0} msg/s; native client sending batches of 32: {native_batch:.0} msg/s | {:.3}× / {:.3}× / {:.3}× |",
            took.as_secs_f64(),
            peak_rate / base,
            peak_rate / native,
            peak_rate / native_batch
        );
        println!(
            "| peak throughput, 20k-message backlog, 1 channel, one message per send | {single:.0} msg/s ({:.1} s) | native echo client: {native:.0} msg/s; send-batch: {peak_rate:.0} msg/s | {:.3}× / {:.3}× |",
            single_took.as_secs_f64(),
            single / native,
            single / peak_rate
        );
    }
    let rates: Vec<u32> = match std::env::var("KATA_BENCH_RATES") {
        Ok(r) => r.split(',').filter_map(|x| x.parse().ok()).collect(),
        Err(_) => vec![100, 1000],
    };
    for rate in rates {
        let secs = 10;
        if !run("latency") {
            break;
        }
        let before = cpu_stolen();
        let disk = disk_io();
        let (p50, p99, n, machine) = at_rate(rate, secs);
        let between = cpu_stolen();
        let disk = disk_share(disk, disk_io());
        let (b50, b99) = native_at_rate(rate, secs);
        let after = cpu_stolen();
        println!(
            "| latency at {rate} msg/s ({n} messages) | p50 {:.2} ms, p99 {:.2} ms (machine stalls meanwhile, seen by the load generator: {machine}; CPU stolen by the hypervisor: {}; {disk}) | native echo client: p50 {:.2} ms, p99 {:.2} ms (stolen: {}) | p99 {:.1}× |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            stolen_share(before, between),
            b50.as_secs_f64() * 1e3,
            b99.as_secs_f64() * 1e3,
            stolen_share(between, after),
            p99.as_secs_f64() / b99.as_secs_f64().max(1e-6)
        );
    }
    if run("rss") {
        let mib = |k: u64| k as f64 / 1024.0;
        let (_, rss0) = idle_rss(0);
        let (first6, rss6) = idle_rss(6);
        let (_, rss1) = idle_rss(1);
        println!(
            "| idle RSS, 6 plugins (cached) | {:.1} MiB | no plugins: {:.1} MiB | {:.2}× |",
            mib(rss6),
            mib(rss0),
            rss6 as f64 / rss0.max(1) as f64
        );
        println!(
            "| idle RSS, 6 plugins, first start (compiles) | {:.1} MiB | cached start: {:.1} MiB | {:.2}× |",
            mib(first6),
            mib(rss6),
            first6 as f64 / rss6.max(1) as f64
        );
        println!(
            "| RSS per added channel plugin (cached) | {:.2} MiB (1 plugin: {:.1} MiB) | no plugins: {:.1} MiB | (6 plugins − none) / 6 |",
            mib(rss6.saturating_sub(rss0)) / 6.0,
            mib(rss1),
            mib(rss0)
        );
    }
    if !run("soak") {
        return;
    }
    let samples = soak(1000, soak_secs);
    let first = samples.first().map_or(0, |s| s.1);
    let last = samples.last().map_or(0, |s| s.1);
    let series: Vec<String> = samples.iter().map(|(t, r)| format!("{t}s: {:.1}", *r as f64 / 1024.0)).collect();
    println!(
        "| RSS over {soak_secs} s at 1000 msg/s | {} MiB | first sample {:.1} MiB | last/first {:.2}× |",
        series.join(", "),
        first as f64 / 1024.0,
        last as f64 / first.max(1) as f64
    );
}
