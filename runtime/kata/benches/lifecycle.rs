//! Plugin lifecycle benchmarks through the real binary (release build):
//! `kata plugin add` of a ~2 MB component (validate + precompile, cold
//! cache), and `kata run` start-up with six installed, cached plugins.
//! Baselines from the same run: process start (`kata --version`) and a
//! daemon start with no plugins.
//!
//! Run with `scripts/bench.sh` (builds the guests, unsets RUST_BACKTRACE).
#![allow(missing_docs, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "shared/bin.rs"]
mod bin;
use bin::kata;

fn guest(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../target/guests/{name}.wasm"));
    assert!(p.exists(), "{} is missing: run scripts/setup.sh first", p.display());
    p
}

fn init(dir: &Path) {
    let ok = Command::new(kata()).arg("init").arg(dir).stdout(Stdio::null()).status().unwrap().success();
    assert!(ok);
}

fn add(ws: &Path, file: &Path, name: &str) {
    let out = Command::new(kata())
        .args(["plugin", "add", "--yes", "--allow-unsigned", "--name", name, "-w"])
        .arg(ws)
        .arg(file)
        .env("KATA_LOG", "off")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Start `kata run`, wait for "kata is running", stop it; returns the start time.
fn daemon_start(ws: &Path) -> Duration {
    let t = Instant::now();
    let mut child = Command::new(kata())
        .args(["run", "--log-format", "human", "-w"])
        .arg(ws)
        .env("KATA_BENCH_TOKEN", "123:abc")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut ready = None;
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.contains("kata is running") {
            ready = Some(t.elapsed());
            break;
        }
        seen.push(line);
    }
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    ready.unwrap_or_else(|| panic!("the daemon never said it was running:\n{}", seen.join("\n")))
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("lifecycle");
    g.sample_size(10).measurement_time(Duration::from_secs(20));

    g.bench_function("baseline/process_start", |b| {
        b.iter(|| assert!(Command::new(kata()).arg("--version").stdout(Stdio::null()).status().unwrap().success()))
    });

    let big = guest("guest-big");
    g.bench_function("plugin_add_2mb_cold", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                init(dir.path());
                let t = Instant::now();
                add(dir.path(), &big, "big");
                total += t.elapsed();
            }
            total
        })
    });

    let empty = tempfile::tempdir().unwrap();
    init(empty.path());
    g.bench_function("baseline/daemon_start_no_plugins", |b| b.iter_custom(|iters| (0..iters).map(|_| daemon_start(empty.path())).sum()));

    let six = tempfile::tempdir().unwrap();
    init(six.path());
    for (file, name) in [
        ("guest-quiet", "quiet"),
        ("guest-v0-1-0", "old"),
        ("guest-big", "big"),
        ("guest-fs-probe", "probe"),
        ("guest-forbidden-host", "fetcher"),
        ("telegram", "telegram"),
    ] {
        add(six.path(), &guest(file), name);
    }
    // Bind the telegram secret to the variable daemon_start sets.
    let toml = std::fs::read_to_string(six.path().join("kata.toml")).unwrap();
    // Keep the benchmark off the network: point the Telegram plugin at a closed
    // loopback port (which its grant does not cover, so nothing is even tried).
    let toml = toml
        .replace("env:TELEGRAM_BOT_TOKEN", "env:KATA_BENCH_TOKEN")
        .replace("\n[plugins.telegram]\n", "\n[plugins.telegram]\nconfig = { api_base = \"http://127.0.0.1:9\" }\n");
    std::fs::write(six.path().join("kata.toml"), toml).unwrap();
    daemon_start(six.path()); // warm: every component is compiled and cached by `add` already
    g.bench_function("daemon_start_6_cached_plugins", |b| b.iter_custom(|iters| (0..iters).map(|_| daemon_start(six.path())).sum()));
    g.finish();
}

criterion_group!(lifecycle, benches);
criterion_main!(lifecycle);
