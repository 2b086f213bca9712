//! Plugins in every language kata has a template for, side by side: the
//! channel template of each language (`kata plugin new demo-L --lang L
//! --kind channel`), built from source by `kata plugin build`, measured the
//! same way, and reported as ratios to the Rust plugin of the same run.
//!
//! Per language:
//!
//! - component size;
//! - `kata plugin add --yes` wall time into a fresh workspace (the release
//!   binary, a new process each time, best of `KATA_BENCH_RUNS`, default 3);
//! - compile time, in process: `ChannelPlugin::load` with an empty compile
//!   cache (Cranelift) and again from the cache it filled (best of the same N);
//! - `instantiate_only`: `InstancePre` → instance with the daemon's engine
//!   (pooling, epoch CPU meter, limits), store made before and instance
//!   dropped after the timed region, as in the engine bench;
//! - `describe`: a call with no I/O on a warm instance;
//! - `empty_poll`: `poll` on a warm instance, which GETs
//!   `{base_url}/messages?after=` from a keep-alive loopback server
//!   answering `[]` (no messages);
//! - `send_1kib`: one `send` of a 1 KiB message, which POSTs JSON to
//!   `{base_url}/messages` (answer `{"id":"r1"}`);
//! - RSS per live instance: `KATA_BENCH_INSTANCES` (default 20) instances of
//!   one plugin, each connected and polled once, kept alive in one process:
//!   (RSS after − RSS before) / N from /proc/self/statm, on a fresh engine per
//!   language (so no pooled memory of another language is counted).
//!
//! `KATA_BENCH_LANGS=rust,js` restricts the languages (Rust is always kept:
//! it is the baseline; `KATA_BENCH_SKIP_ADD=1` skips the `plugin add` runs).
//! Criterion's own filter applies to the timed calls.
//! At the end the bench prints one markdown table (criterion's medians,
//! ratios to Rust).
//!
//! Run with `scripts/bench.sh` or `unset RUST_BACKTRACE; cargo bench -p kata
//! --bench languages` (release). The toolchains must be installed (`kata
//! plugin toolchain install L`, done by scripts/setup.sh).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::Criterion;
use kata::plugin::ChannelPlugin;

const ALL: &[&str] = &["rust", "c", "go", "js", "python"];

fn kata_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kata"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Medians recorded from the timed closures: (bench, lang) → ns per call.
static SAMPLES: Mutex<BTreeMap<(&'static str, String), Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(bench: &'static str, lang: &str, total: Duration, iters: u64) {
    let per = total.as_nanos() as f64 / iters.max(1) as f64;
    SAMPLES.lock().unwrap().entry((bench, lang.to_string())).or_default().push(per);
}

/// Criterion's median for `languages/{bench}/{lang}` from its estimates.json
/// (where criterion writes them: `$CRITERION_HOME`, else `criterion/` in
/// `$CARGO_TARGET_DIR`, the workspace's target/ under cargo, or ./target), else the median of the recorded calls (warm-up
/// included).
fn median(bench: &'static str, lang: &str) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => PathBuf::from(dir),
            // Under `cargo bench` criterion asks cargo: the workspace's target/.
            None if std::env::var_os("CARGO").is_some() => root().join("target"),
            None => PathBuf::from("target"),
        };
        target.join("criterion")
    });
    let file = home.join(format!("languages/{bench}_{lang}/new/estimates.json"));
    if SAMPLES.lock().unwrap().contains_key(&(bench, lang.to_string()))
        && let Ok(text) = std::fs::read_to_string(&file)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(m) = v["median"]["point_estimate"].as_f64()
    {
        return Some(m);
    }
    let map = SAMPLES.lock().unwrap();
    let mut v = map.get(&(bench, lang.to_string()))?.clone();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Some(v[v.len() / 2])
}

// ---------------------------------------------------------------------------
// The inbox API the channel templates talk to, answering "nothing new".

/// A keep-alive HTTP/1.1 server on 127.0.0.1: `GET` → `[]`, `POST` →
/// `{"id":"r1"}`. One thread per connection.
fn start_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut first = String::new();
        if reader.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let reply: &str = if first.starts_with("GET") { "[]" } else { r#"{"id":"r1"}"# };
        let out = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}", reply.len());
        if stream.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Building and installing.

/// `kata plugin new demo-L --lang L --kind channel` and `kata plugin build`
/// into target/guests/bench-demo-L.wasm (skipped by kata when the sources
/// are unchanged). Returns the component and the build's wall time.
fn build(lang: &str, dir: &Path) -> (PathBuf, Duration) {
    let name = format!("demo-{lang}");
    let project = dir.join(&name);
    let out = Command::new(kata_bin())
        .args(["plugin", "new", &name, "--lang", lang, "--kind", "channel", "--dir"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(out.status.success(), "{lang}: plugin new: {}", String::from_utf8_lossy(&out.stderr));
    let wasm = root().join("target/guests").join(format!("bench-demo-{lang}.wasm"));
    let t = Instant::now();
    let out = Command::new(kata_bin())
        .args(["plugin", "build"])
        .arg(&project)
        .arg("--out")
        .arg(&wasm)
        .env("CARGO_TARGET_DIR", root().join("target/wasm"))
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(out.status.success(), "{lang}: plugin build: {}", String::from_utf8_lossy(&out.stderr));
    (wasm, took)
}

/// `kata plugin add --yes` of `wasm` into a fresh workspace; its wall time.
fn plugin_add(wasm: &Path) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new(kata_bin()).arg("init").arg(dir.path()).stdout(Stdio::null()).status().unwrap().success();
    assert!(ok);
    let t = Instant::now();
    let out = Command::new(kata_bin())
        .args(["plugin", "add", "--yes", "--allow-unsigned", "--name", "demo", "-w"])
        .arg(dir.path())
        .arg(wasm)
        .env("KATA_LOG", "off")
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(out.status.success(), "plugin add {}: {}", wasm.display(), String::from_utf8_lossy(&out.stderr));
    took
}

/// A workspace directory with the token secret the templates send.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "bench-token").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    dir
}

/// Load `wasm` as channel `demo-L` with the daemon's engine configuration,
/// granted the loopback server (with a request rate no benchmark loop
/// reaches); `cache` is the engine's compile cache.
fn load(lang: &str, wasm: &Path, port: u16, ws: &Path, cache: &Path) -> (ChannelPlugin, kata::engine::Engine) {
    let name = format!("demo-{lang}");
    let base = format!("http://127.0.0.1:{port}");
    let text = format!(
        "[plugins.{name}]\npath = \"{}\"\nnetwork = [\"{base}/\"]\nconfig = {{ base_url = \"{base}\" }}\nsecrets = {{ token = \"file:token\" }}\n\
         limits = {{ requests_per_minute = 1000000000 }}\n",
        wasm.display()
    );
    let policy = kata::policy::Policy::parse(&text, Path::new("kata.toml"), ws).unwrap();
    let engine = kata::engine::Engine::new(Some(cache.to_path_buf())).unwrap();
    let linker = kata::plugin::linker(&engine).unwrap();
    let plugin = ChannelPlugin::load(&engine, &linker, policy.plugins[&name].clone(), kata::sink::Sinks::memory(), ws)
        .unwrap_or_else(|e| panic!("{lang}: load: {e:#}"));
    (plugin, engine)
}

/// Resident set size of this process: /proc/self/statm's second field
/// (pages) × the page size.
fn rss_bytes() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let page = *PAGE.get_or_init(|| {
        let out = Command::new("getconf").arg("PAGESIZE").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    });
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * page
}

fn message_1kib() -> kata::host::latest::OutboundMessage {
    kata::host::latest::OutboundMessage {
        conversation: "room-1".into(),
        thread: None,
        reply_to: Some("1".into()),
        text: "x".repeat(1024),
        idempotency_key: "bench-1".into(),
        attachments: vec![],
        actions: vec![],
    }
}

/// Everything measured outside criterion, per language.
#[derive(Default)]
struct Static {
    size: u64,
    build: Duration,
    add: Option<Duration>,
    compile_cold: Option<Duration>,
    compile_cached: Option<Duration>,
    rss_per_instance: Option<f64>,
}

fn best(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs.max(1)).map(|_| f()).min().unwrap()
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(env_usize("KATA_BENCH_SAMPLES", 10))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
        .configure_from_args();
    // `cargo test --all-targets` runs this binary without `--bench`: then a
    // smoke run (Rust and C, one run, no `plugin add` processes) checks the
    // bench still works without spending the suite's time on measuring.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let langs: Vec<&str> = match std::env::var("KATA_BENCH_LANGS") {
        Ok(list) if !list.is_empty() => ALL.iter().copied().filter(|l| *l == "rust" || list.split(',').any(|x| x.trim() == *l)).collect(),
        _ if smoke => vec!["rust", "c"],
        _ => ALL.to_vec(),
    };
    let runs = if smoke { 1 } else { env_usize("KATA_BENCH_RUNS", 3) };
    let n_instances = env_usize("KATA_BENCH_INSTANCES", 20);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let port = start_server();
    let projects = tempfile::tempdir().unwrap();
    let mut stat: BTreeMap<&str, Static> = BTreeMap::new();

    // Build every language first (the slow part when sources changed).
    let mut wasm = BTreeMap::new();
    for &lang in &langs {
        let (file, took) = build(lang, projects.path());
        let size = std::fs::metadata(&file).unwrap().len();
        println!("{lang}: built {} ({size} bytes) in {took:.1?}", file.display());
        stat.insert(lang, Static { size, build: took, ..Default::default() });
        wasm.insert(lang, file);
    }

    for &lang in &langs {
        let file = &wasm[lang];
        let s = stat.get_mut(lang).unwrap();
        if !smoke && std::env::var_os("KATA_BENCH_SKIP_ADD").is_none() {
            let add = best(runs, || plugin_add(file));
            println!("{lang}: plugin add (best of {runs}) {add:.3?}");
            s.add = Some(add);
        }
        let ws = workspace();
        let mut caches = Vec::new();
        let cold = best(runs, || {
            let cache = tempfile::tempdir().unwrap();
            let t = Instant::now();
            let loaded = load(lang, file, port, ws.path(), cache.path());
            let took = t.elapsed();
            drop(loaded);
            caches.push(cache);
            took
        });
        let cache = caches.pop().unwrap();
        let cached = best(runs.max(3), || {
            let t = Instant::now();
            let loaded = load(lang, file, port, ws.path(), cache.path());
            let took = t.elapsed();
            drop(loaded);
            took
        });
        println!("{lang}: compile cold {cold:.3?}, from cache {cached:.3?}");
        s.compile_cold = Some(cold);
        s.compile_cached = Some(cached);

        // RSS per live instance, on a fresh engine.
        let rss = rt.block_on(async {
            let (plugin, _engine) = load(lang, file, port, ws.path(), cache.path());
            let mut first = plugin.instantiate().await.unwrap();
            first.connect().await.unwrap();
            first.poll(None).await.unwrap();
            let before = rss_bytes();
            let mut live = Vec::new();
            for _ in 0..n_instances {
                let mut inst = plugin.instantiate().await.unwrap();
                inst.connect().await.unwrap();
                let r = inst.poll(None).await.unwrap();
                assert!(r.messages.is_empty());
                live.push(inst);
            }
            let after = rss_bytes();
            drop(live);
            (after.saturating_sub(before)) as f64 / n_instances as f64
        });
        println!("{lang}: RSS per live instance ({n_instances} instances) {:.2} MiB", rss / 1048576.0);
        s.rss_per_instance = Some(rss);
    }

    // The timed calls.
    let msg = message_1kib();
    let mut g = c.benchmark_group("languages");
    for &lang in &langs {
        let ws = workspace();
        let cache = tempfile::tempdir().unwrap();
        let (plugin, _engine) = load(lang, &wasm[lang], port, ws.path(), cache.path());

        g.bench_function(format!("instantiate_only/{lang}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let store = plugin.new_store();
                        let t = Instant::now();
                        let inst = plugin.instantiate_in(store).await.unwrap();
                        total += t.elapsed();
                        drop(std::hint::black_box(inst));
                    }
                    record("instantiate_only", lang, total, iters);
                    total
                })
            })
        });

        let mut inst = rt.block_on(async {
            let mut inst = plugin.instantiate().await.unwrap();
            inst.connect().await.unwrap();
            inst
        });

        g.bench_function(format!("describe/{lang}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        std::hint::black_box(inst.describe().await.unwrap());
                    }
                    let total = t.elapsed();
                    record("describe", lang, total, iters);
                    total
                })
            })
        });

        g.bench_function(format!("empty_poll/{lang}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        let r = inst.poll(None).await.unwrap();
                        debug_assert!(r.messages.is_empty());
                        std::hint::black_box(r);
                    }
                    let total = t.elapsed();
                    record("empty_poll", lang, total, iters);
                    total
                })
            })
        });

        g.bench_function(format!("send_1kib/{lang}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        std::hint::black_box(inst.send(&msg).await.unwrap());
                    }
                    let total = t.elapsed();
                    record("send_1kib", lang, total, iters);
                    total
                })
            })
        });
        drop(inst);
    }
    g.finish();
    c.final_summary();

    // The table.
    let ratio = |v: Option<f64>, base: Option<f64>| match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.1}×", v / b),
        _ => "—".into(),
    };
    let us =
        |ns: Option<f64>| ns.map_or("—".into(), |n| if n >= 1e6 { format!("{:.2} ms", n / 1e6) } else { format!("{:.1} µs", n / 1e3) });
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e9);
    let ms = |ns: Option<f64>| ns.map_or("—".into(), |n| format!("{:.0} ms", n / 1e6));
    let rust = &stat["rust"];
    println!(
        "\n| language | size | `plugin add` | compile cold | compile cached | instantiate_only | describe (no I/O) | empty poll (GET) | send 1 KiB (POST) | RSS / live instance |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &lang in &langs {
        let s = &stat[lang];
        let cell = |v: Option<f64>, base: Option<f64>, f: &dyn Fn(Option<f64>) -> String| {
            if lang == "rust" { f(v) } else { format!("{} ({})", f(v), ratio(v, base)) }
        };
        let timed = |b: &'static str| cell(median(b, lang), median(b, "rust"), &us);
        println!(
            "| {lang} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(Some(s.size as f64), Some(rust.size as f64), &|v| format!("{:.0} KB", v.unwrap() / 1000.0)),
            cell(secs(s.add), secs(rust.add), &ms),
            cell(secs(s.compile_cold), secs(rust.compile_cold), &ms),
            cell(secs(s.compile_cached), secs(rust.compile_cached), &|v| v.map_or("—".into(), |n| format!("{:.1} ms", n / 1e6))),
            timed("instantiate_only"),
            timed("describe"),
            timed("empty_poll"),
            timed("send_1kib"),
            cell(s.rss_per_instance, rust.rss_per_instance, &|v| v.map_or("—".into(), |b| format!("{:.2} MiB", b / 1048576.0))),
        );
    }
    println!("\n(builds: {})", langs.iter().map(|l| format!("{l} {:.1?}", stat[l].build)).collect::<Vec<_>>().join(", "));
}
