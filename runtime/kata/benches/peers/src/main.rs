//! kata beside its peers (issue #16): the same three units of work — a no-op
//! call, a 1 KiB echo, one HTTP GET to a loopback server — done by
//!
//! - **kata**: a call on a live instance, and kata's fresh-instance tool call
//!   (a new sandboxed store, instantiate from the `InstancePre` made at load,
//!   call, drop — what the daemon does for every tool call);
//! - **Extism** 1.30 (the newest that builds with Rust 1.95 — 1.41 needs
//!   wasmtime 49, which needs 1.96; its own wasmtime 43): a call on a
//!   live plugin, a call through its `Pool`, a fresh plugin (from a
//!   `CompiledPlugin`, so no compile) + call;
//! - **the fresh-instance-per-call design** (as IronClaw and Spin's WASIp2
//!   path do): a new store, a new `Linker` with the same imports as kata's
//!   (WASI, wasi:http, kata's host), instantiate the `Component` (type-checking
//!   its imports again: no `InstancePre`), call — on kata's own engine (same
//!   wasmtime 48, same config) and guest, so only the design differs;
//! - **a process per message**: spawn the native echo (`native-echo`) under
//!   `unshare` (new user, PID, mount, IPC, UTS and network namespaces — what a
//!   container-per-run host pays at least), message on stdin, result on
//!   stdout; the `http` row leaves out the network namespace (the loopback
//!   server lives in this one) and makes a new connection (a new process has
//!   none open). A row without namespaces shows what the spawn alone costs;
//! - **native**: the same logic compiled into this binary, no sandbox.
//!
//! Fairness: both WebAssembly guests are built from the same source shape
//! with the same release profile (`guests/`), get WASI, are limited (kata:
//! its default limits — CPU meter, wall-clock timeout, memory; Extism: the
//! same wall-clock timeout and memory maximum through its manifest) and
//! return an owned copy of the result to the host. HTTP: kata's sandbox keeps
//! connections open per plugin (its design), Extism's `http_request` opens a
//! new connection per request (its design, ureq 3 with a fresh agent per
//! request), native is shown both ways.
//!
//! Timing: all rows run interleaved — each round measures every row once
//! (a batch of about 50 ms), in alternating order, and a row's figure is the
//! median of its rounds — so the load other processes put on the machine
//! falls on every row alike. Ratios are to kata's live call of the same work.
//!
//! `cargo run --release` in this directory (scripts/bench.sh does);
//! `KATA_PEERS_ROUNDS` (default 15), `KATA_PEERS_ROWS=TEXT` (only rows whose
//! group or name contains TEXT), `KATA_PEERS_ONLY=noop,echo,http,floor` (the default; `floor` is the
//! bare-wasmtime ladder of [`floor`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kata_host::engine::Engine;
use kata_host::host::{self, PluginCtx, PluginIdentity, ToolsBindings, ToolsPre, latest, new_store};
use kata_host::plugin::{Instance, arm, guarded};
use kata_host::policy::{Limits, PluginGrants, Policy};
use kata_host::sandbox::{NetworkGate, PluginSandbox};
use kata_peers::native;

mod floor;
use wasmtime::Store;
use wasmtime::component::{Component, Linker};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../..").canonicalize().expect("repository root")
}

/// The work: which tool / function, with which input.
#[derive(Clone, Copy, PartialEq)]
enum Work {
    Noop,
    Echo,
    Http,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::Noop => "noop",
            Work::Echo => "echo",
            Work::Http => "http",
        }
    }
    fn title(self) -> &'static str {
        match self {
            Work::Noop => "no-op call",
            Work::Echo => "1 KiB echo",
            Work::Http => "one HTTP GET (loopback)",
        }
    }
}

// ---------------------------------------------------------------------------
// kata

/// A tools plugin loaded as the daemon loads one (`prepare` = read, check,
/// compile or load from the cache, link once into an `InstancePre`, sandbox).
struct Kata {
    engine: Engine,
    pre: ToolsPre,
    component: Component,
    grants: Arc<PluginGrants>,
    sandbox: Arc<PluginSandbox>,
    id: PluginIdentity,
}

impl Kata {
    fn load(wasm: &Path, port: u16, ws: &Path) -> Result<Self> {
        let text = format!(
            "[plugins.peer]\npath = \"{}\"\nnetwork = [\"http://127.0.0.1:{port}/\"]\nlimits = {{ requests_per_minute = 1000000000 }}\n",
            wasm.display()
        );
        let policy = Policy::parse(&text, Path::new("kata.toml"), ws)?;
        let engine = Engine::new(Some(ws.join("cache")))?;
        let linker = kata_host::plugin::linker(&engine)?;
        let p =
            kata_host::plugin::prepare(&engine, &linker, policy.plugins["peer"].clone(), kata_host::sink::Sinks::memory(), ws, "tools")?;
        let component = p.pre.component().clone();
        let pre = ToolsPre::new(p.pre, p.info.export_version("tools"))?;
        Ok(Self { engine, pre, component, grants: p.grants, sandbox: p.sandbox, id: p.id })
    }

    fn store(&self) -> Store<PluginCtx> {
        new_store(&self.engine, self.id.clone(), NetworkGate::new(self.sandbox.clone()), &self.grants)
    }

    /// What the daemon's `ToolsPlugin::instance` does: a sandboxed store,
    /// CPU meter armed, instantiate from the `InstancePre` under the timeout.
    async fn instance(&self) -> Result<Instance<ToolsBindings>> {
        let mut store = self.store();
        let meter = arm(&mut store, &self.grants.limits);
        let b = guarded(&meter, &self.grants.limits, self.pre.instantiate_async(&mut store)).await?;
        Ok(Instance::new(store, b, self.grants.limits))
    }

    /// One guarded call, as the daemon makes it (limits armed, timeout, trap
    /// turned into an error that breaks the instance).
    async fn call(inst: &mut Instance<ToolsBindings>, tool: &str, arg: &str) -> Result<String> {
        let (g, s, guard) = inst.begin()?;
        let r = guard.run(g.call(s, tool, arg)).await;
        match inst.end(r)? {
            Ok(v) => Ok(v),
            Err(e) => anyhow::bail!("{tool}: {e:?}"),
        }
    }

    /// The fresh-instance-per-call design on kata's engine: a new store, a
    /// new linker with every import kata links, instantiate the component
    /// (imports resolved and type-checked again), call.
    async fn fresh_design_call(&self, tool: &str, arg: &str) -> Result<String> {
        let mut store = self.store();
        arm(&mut store, &self.grants.limits);
        let mut linker: Linker<PluginCtx> = Linker::new(self.engine.wasmtime());
        host::add_to_linker(&mut linker)?;
        let b = latest::ToolsPlugin::instantiate_async(&mut store, &self.component, &linker).await?;
        match b.kata_plugin_tools().call_call(&mut store, tool, arg).await? {
            Ok(v) => Ok(v),
            Err(e) => anyhow::bail!("{tool}: {e:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Extism

fn extism_manifest(wasm: &[u8], limits: &Limits) -> extism::Manifest {
    extism::Manifest::new([extism::Wasm::data(wasm.to_vec())])
        .with_allowed_host("127.0.0.1")
        .with_timeout(limits.call_timeout)
        .with_memory_max((limits.memory_bytes / 65536) as u32)
}

fn extism_compiled(wasm: &[u8], limits: &Limits) -> Result<extism::CompiledPlugin> {
    extism::CompiledPlugin::new(extism::PluginBuilder::new(extism_manifest(wasm, limits)).with_wasi(true))
}

// ---------------------------------------------------------------------------
// The harness

/// A row: measures `iters` units of work and returns the time they took.
struct Row {
    group: &'static str,
    side: String,
    run: Box<dyn FnMut(u64) -> Result<Duration>>,
    iters: u64,
    per_iter: Vec<f64>,
}

fn row(work: Work, side: &str, run: impl FnMut(u64) -> Result<Duration> + 'static) -> Row {
    group_row(work.title(), side, run)
}

fn group_row(group: &'static str, side: &str, run: impl FnMut(u64) -> Result<Duration> + 'static) -> Row {
    Row { group, side: side.to_string(), run: Box::new(run), iters: 1, per_iter: Vec::new() }
}

fn timed(iters: u64, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    Ok(t.elapsed())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn show(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn expect_out(got: &[u8], want: &[u8], what: &str) -> Result<()> {
    anyhow::ensure!(got == want, "{what}: unexpected result of {} bytes", got.len());
    Ok(())
}

fn main() -> Result<()> {
    let rounds: usize = std::env::var("KATA_PEERS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let only = std::env::var("KATA_PEERS_ONLY").unwrap_or_else(|_| "noop,echo,http,floor".into());
    let works: Vec<Work> = [Work::Noop, Work::Echo, Work::Http].into_iter().filter(|w| only.split(',').any(|o| o == w.name())).collect();
    let with_floor = only.split(',').any(|o| o == "floor");

    let root = root();
    let kata_wasm = root.join("target/peers/guests/kata-tools.wasm");
    let extism_wasm = root.join("target/peers/wasm/wasm32-wasip1/release/peers_extism.wasm");
    let native_echo = std::env::current_exe()?.with_file_name("native-echo");
    for f in [&kata_wasm, &extism_wasm, &native_echo] {
        anyhow::ensure!(f.exists(), "{} is missing: run scripts/bench.sh (it builds the peers bench's guests)", f.display());
    }
    let port = kata_peers::start_server();
    let url = format!("http://127.0.0.1:{port}/x");
    let ws = tempfile::tempdir()?;
    let rt = Arc::new(tokio::runtime::Builder::new_current_thread().enable_all().build()?);

    let kata = Arc::new(Kata::load(&kata_wasm, port, ws.path()).context("loading the kata guest")?);
    let limits = kata.grants.limits;
    let extism_bytes = std::fs::read(&extism_wasm)?;
    let compiled = Arc::new(extism_compiled(&extism_bytes, &limits)?);
    let pool = {
        let compiled = compiled.clone();
        extism::PoolBuilder::new().with_max_instances(1).build(move || extism::Plugin::new_from_compiled(&compiled))
    };

    let bare_tools = floor::Bare::new(&Engine::config(), &std::fs::read(&kata_wasm)?)?;
    let echo_in: Arc<str> = "k".repeat(1024).into();
    let mut rows = Vec::new();
    for &work in &works {
        let (arg, want): (Arc<str>, Vec<u8>) = match work {
            Work::Noop => ("".into(), vec![]),
            Work::Echo => (echo_in.clone(), echo_in.as_bytes().to_vec()),
            Work::Http => (url.as_str().into(), kata_peers::BODY.as_bytes().to_vec()),
        };
        let tool = work.name();

        // kata, live instance.
        let (k, r, a, w) = (kata.clone(), rt.clone(), arg.clone(), want.clone());
        let mut live = rt.block_on(k.instance())?;
        rows.push(row(work, "kata: call on a live instance", move |n| {
            r.block_on(async {
                let t = Instant::now();
                for _ in 0..n {
                    let out = Kata::call(&mut live, tool, &a).await?;
                    expect_out(out.as_bytes(), &w, tool)?;
                }
                Ok(t.elapsed())
            })
        }));
        // The floor under that: the same component and export called by bare
        // wasmtime on kata's engine configuration, with nothing of kata's.
        // No-op and echo only: its imports are traps, so it cannot do HTTP.
        if work != Work::Http {
            let r = rt.clone();
            let (a, w) = (arg.clone(), want.clone());
            let (mut store, b) = rt.block_on(bare_tools.live_tools())?;
            rows.push(row(work, "floor: bare wasmtime, the same component and call (plain store, no limits)", move |n| {
                r.block_on(async {
                    let t = Instant::now();
                    for _ in 0..n {
                        let out = b.kata_plugin_tools().call_call(&mut store, tool, &a).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
                        expect_out(out.as_bytes(), &w, tool)?;
                    }
                    Ok(t.elapsed())
                })
            }));
        }
        // kata, fresh instance per call (the tool call path).
        let (k, r, a, w) = (kata.clone(), rt.clone(), arg.clone(), want.clone());
        rows.push(row(work, "kata: fresh instance + call (tool call)", move |n| {
            r.block_on(async {
                let t = Instant::now();
                for _ in 0..n {
                    let mut inst = k.instance().await?;
                    let out = Kata::call(&mut inst, tool, &a).await?;
                    expect_out(out.as_bytes(), &w, tool)?;
                }
                Ok(t.elapsed())
            })
        }));
        // The fresh-instance-per-call design, same engine and guest.
        let (k, r, a, w) = (kata.clone(), rt.clone(), arg.clone(), want.clone());
        rows.push(row(work, "fresh-instance-per-call design (new Store + Linker + instantiate)", move |n| {
            r.block_on(async {
                let t = Instant::now();
                for _ in 0..n {
                    let out = k.fresh_design_call(tool, &a).await?;
                    expect_out(out.as_bytes(), &w, tool)?;
                }
                Ok(t.elapsed())
            })
        }));
        // Extism: live plugin, pool, fresh plugin.
        let (a, w) = (arg.clone(), want.clone());
        let mut plugin = extism::Plugin::new_from_compiled(&compiled)?;
        rows.push(row(work, "Extism: call on a live plugin", move |n| {
            timed(n, || {
                let out: Vec<u8> = plugin.call(tool, a.as_bytes())?;
                expect_out(&out, &w, tool)
            })
        }));
        let (a, w, p) = (arg.clone(), want.clone(), pool.clone());
        rows.push(row(work, "Extism: call through its Pool", move |n| {
            timed(n, || {
                let mut plugin = p.get(Duration::from_secs(5))?.context("pool timeout")?;
                let out: Vec<u8> = plugin.call(tool, a.as_bytes())?;
                expect_out(&out, &w, tool)
            })
        }));
        let (a, w, c) = (arg.clone(), want.clone(), compiled.clone());
        rows.push(row(work, "Extism: fresh plugin + call", move |n| {
            timed(n, || {
                let mut plugin = extism::Plugin::new_from_compiled(&c)?;
                let out: Vec<u8> = plugin.call(tool, a.as_bytes())?;
                expect_out(&out, &w, tool)
            })
        }));
        // A process per message, with and without namespaces.
        for (side, namespaces) in
            [("process per message (unshare: user, pid, mount, ipc, uts, net)", true), ("process per message (no namespaces)", false)]
        {
            let (a, w, exe) = (arg.clone(), want.clone(), native_echo.clone());
            rows.push(row(work, side, move |n| timed(n, || spawn_once(&exe, work, &a, namespaces, &w))));
        }
        // Native.
        match work {
            Work::Noop => rows.push(row(work, "native (no sandbox)", |n| {
                timed(n, || {
                    std::hint::black_box(native::noop());
                    Ok(())
                })
            })),
            Work::Echo => {
                let a = arg.clone();
                rows.push(row(work, "native (no sandbox)", move |n| {
                    timed(n, || {
                        std::hint::black_box(native::echo(std::hint::black_box(a.as_bytes())));
                        Ok(())
                    })
                }))
            }
            Work::Http => {
                let mut client = native::Client::connect(port)?;
                let w = want.clone();
                rows.push(row(work, "native (no sandbox, kept-open connection)", move |n| {
                    timed(n, || expect_out(&client.get("/x")?, &w, "native http"))
                }));
                let (u, w) = (url.clone(), want.clone());
                rows.push(row(work, "native (no sandbox, new connection)", move |n| {
                    timed(n, || expect_out(&native::get_once(&u)?, &w, "native http"))
                }));
            }
        }
    }

    if with_floor {
        floor_rows(&mut rows, &rt, &root, ws.path())?;
    }

    // KATA_PEERS_ROWS=TEXT keeps the rows whose group or name contains TEXT
    // (to profile one with perf).
    if let Ok(keep) = std::env::var("KATA_PEERS_ROWS") {
        rows.retain(|r| r.side.contains(&keep) || r.group.contains(&keep));
    }

    // Warm up and size each row's batch to about 50 ms.
    for r in &mut rows {
        let mut n = 1u64;
        loop {
            let d = (r.run)(n).with_context(|| format!("{} / {}", r.group, r.side))?;
            if d >= Duration::from_millis(20) || n >= 1 << 24 {
                r.iters = ((n as f64) * 50e6 / d.as_nanos().max(1) as f64).ceil().max(1.0) as u64;
                break;
            }
            n *= 4;
        }
    }
    eprintln!("peers: {} rows × {rounds} rounds of ~50 ms", rows.len());
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 { (0..rows.len()).collect() } else { (0..rows.len()).rev().collect() };
        for i in order {
            let r = &mut rows[i];
            let d = (r.run)(r.iters)?;
            r.per_iter.push(d.as_nanos() as f64 / r.iters as f64);
        }
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n## kata beside its peers, and the floor ({rounds} interleaved rounds; load average at the end: {})\n",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let mut groups: Vec<&'static str> = Vec::new();
    for r in &rows {
        if !groups.contains(&r.group) {
            groups.push(r.group);
        }
    }
    for group in groups {
        let base = rows.iter().find(|r| r.group == group).map(|r| median(&r.per_iter)).unwrap_or(f64::NAN);
        let base_name = &rows.iter().find(|r| r.group == group).expect("a row").side;
        println!("### {group}\n");
        println!("| design | median | (min … max of rounds) | ÷ {base_name} |");
        println!("|---|---|---|---|");
        for r in rows.iter().filter(|r| r.group == group) {
            let m = median(&r.per_iter);
            let lo = r.per_iter.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.per_iter.iter().copied().fold(0.0, f64::max);
            println!("| {} | {} | {} … {} | {:.2}× |", r.side, show(m), show(lo), show(hi), m / base);
        }
        println!();
    }
    Ok(())
}

/// Spawn `native-echo` once for `work`: the message on stdin, the result on
/// stdout, checked.
fn spawn_once(exe: &Path, work: Work, arg: &str, namespaces: bool, want: &[u8]) -> Result<()> {
    let mut cmd = if namespaces {
        let mut c = Command::new("/usr/bin/unshare");
        c.args(["--user", "--map-root-user", "--pid", "--fork", "--mount", "--ipc", "--uts"]);
        if work != Work::Http {
            c.arg("--net");
        }
        c.arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.arg(work.name());
    if work == Work::Http {
        cmd.arg(arg);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().context("spawn")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("stdin")?;
        if work == Work::Echo {
            stdin.write_all(arg.as_bytes())?;
        }
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "native-echo {} failed: {}", work.name(), out.status);
    expect_out(&out.stdout, want, "process")
}

const INSTANTIATE: &str = "floor: instantiate a channel plugin (instantiate only; store made before, dropped after)";
const CYCLE: &str = "floor: new sandboxed store + instantiate + drop";
const CALL: &str = "floor: an empty call on a live instance";

/// The floor's rows (see [`floor`]): kata as it is first, then bare
/// wasmtime, then kata's pieces and engine settings one at a time.
fn floor_rows(rows: &mut Vec<Row>, rt: &Arc<tokio::runtime::Runtime>, root: &Path, ws: &Path) -> Result<()> {
    use wasmtime::Enabled;
    let kata_cfg = Engine::config();
    let quiet_bytes = std::fs::read(root.join("target/guests/guest-quiet.wasm"))?;
    // kata as it is, and with one setting changed.
    let variants: Vec<(&str, wasmtime::Config)> = vec![
        ("kata today (guest-quiet; pooling, kata linker, sandboxed store, async, limits armed)", kata_cfg.clone()),
        ("kata at the start of this session (concurrency_support on, no keep_resident, no pagemap_scan)", {
            let mut c = floor::kata_config_with(|p| {
                p.linear_memory_keep_resident(0).table_keep_resident(0).pagemap_scan(Enabled::No);
            });
            c.concurrency_support(true);
            c
        }),
        ("kata today with concurrency_support on", {
            let mut c = Engine::config();
            c.concurrency_support(true);
            c
        }),
        (
            "kata today without keep_resident and pagemap_scan",
            floor::kata_config_with(|p| {
                p.linear_memory_keep_resident(0).table_keep_resident(0).pagemap_scan(Enabled::No);
            }),
        ),
        (
            "kata today with keep_resident but without pagemap_scan",
            floor::kata_config_with(|p| {
                p.pagemap_scan(Enabled::No);
            }),
        ),
        ("kata with the on-demand allocator (no pooling)", {
            let mut c = Engine::config();
            c.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
            c
        }),
        ("kata with memory_init_cow off", {
            let mut c = Engine::config();
            c.memory_init_cow(false);
            c
        }),
        ("kata with async_stack_zeroing on", {
            let mut c = Engine::config();
            c.async_stack_zeroing(true);
            c
        }),
    ];
    let mut polls = 0;
    for (name, cfg) in variants {
        let (plugin, _engine) = floor::quiet(&cfg, root, ws)?;
        let plugin = Arc::new(plugin);
        let (p, r) = (plugin.clone(), rt.clone());
        rows.push(group_row(INSTANTIATE, name, move |n| r.block_on(floor::kata_instantiate(&p, n))));
        if polls < 5 {
            // A fresh instance's whole life without a call: what the drop
            // (the slot's reset) costs shows here, not in instantiate-only.
            let (p, r) = (plugin.clone(), rt.clone());
            rows.push(group_row(CYCLE, name, move |n| {
                r.block_on(async {
                    let t = Instant::now();
                    for _ in 0..n {
                        std::hint::black_box(p.instantiate().await?);
                    }
                    Ok(t.elapsed())
                })
            }));
        }
        polls += 1;
        if polls <= 2 {
            let label = if polls == 1 { "kata today" } else { "kata at the start of this session" };
            // The empty poll, as engine.rs measures it.
            let r = rt.clone();
            let mut inst = rt.block_on(async {
                let mut i = plugin.instantiate().await?;
                i.connect().await?;
                anyhow::Ok(i)
            })?;
            rows.push(group_row(CALL, &format!("{label}: empty poll (limits armed, call timeout)"), move |n| {
                r.block_on(async {
                    let t = Instant::now();
                    for _ in 0..n {
                        std::hint::black_box(inst.poll(None).await?);
                    }
                    Ok(t.elapsed())
                })
            }));
        }
    }
    // Bare wasmtime: the least component, then the guest with nothing of kata's.
    for (name, cfg, bytes, sync) in [
        ("bare wasmtime: minimal component, wasmtime defaults, sync", floor::default_config(), floor::bare_wat().to_vec(), true),
        ("bare wasmtime: minimal component, wasmtime defaults, async", floor::default_config(), floor::bare_wat().to_vec(), false),
        ("bare wasmtime: minimal component, kata's engine config, sync", kata_cfg.clone(), floor::bare_wat().to_vec(), true),
        ("bare wasmtime: minimal component, kata's engine config, async", kata_cfg.clone(), floor::bare_wat().to_vec(), false),
        ("guest-quiet, kata's engine config, imports as traps, plain store, sync", kata_cfg.clone(), quiet_bytes.clone(), true),
        ("guest-quiet, kata's engine config, imports as traps, plain store, async", kata_cfg.clone(), quiet_bytes.clone(), false),
    ] {
        let bare = Arc::new(floor::Bare::new(&cfg, &bytes)?);
        let b = bare.clone();
        let r = rt.clone();
        rows.push(group_row(INSTANTIATE, name, move |n| if sync { b.instantiate(n) } else { r.block_on(b.instantiate_async(n)) }));
        if bytes == floor::bare_wat() {
            let (mut store, f) = bare.live()?;
            let r = rt.clone();
            rows.push(group_row(CALL, &format!("{} call", name.replace(", sync", "").replace(", async", "")), move |n| {
                if sync {
                    timed(n, || Ok(f.call(&mut store, ())?))
                } else {
                    r.block_on(async {
                        let t = Instant::now();
                        for _ in 0..n {
                            f.call_async(&mut store, ()).await?;
                        }
                        Ok(t.elapsed())
                    })
                }
            }));
            // name the call row's mode
            if let Some(last) = rows.last_mut() {
                last.side = format!("{} ({})", last.side, if sync { "sync" } else { "async" });
            }
        }
    }
    Ok(())
}
