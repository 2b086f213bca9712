//! Engine benchmarks: instantiate a channel plugin from its `InstancePre` with
//! the pooling allocator, and an empty `poll` round trip on a warm instance.
//!
//! Run with `scripts/bench.sh` (it builds the guests and unsets RUST_BACKTRACE).
//! Each figure is reported next to a baseline measured in the same run:
//! creating the sandboxed store alone, an empty async call on the host, and
//! bare wasmtime's floor — the least component (one core module, one page
//! of memory, an empty function) instantiated from its `InstancePre` and
//! called, on kata's engine configuration, without anything of kata's. The
//! ladder from that floor to kata, a piece at a time, is in the peers bench
//! (`runtime/kata/benches/peers`, `KATA_PEERS_ONLY=floor`).
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kata_host::engine::Engine;
use kata_host::plugin::{ChannelPlugin, linker};
use kata_host::policy::Policy;
use kata_host::sink::Sinks;

fn quiet_plugin(dir: &Path) -> (ChannelPlugin, Engine) {
    // KATA_BENCH_GUEST compares another build of the same guest (e.g. wasm32-wasip2).
    let wasm = std::env::var_os("KATA_BENCH_GUEST")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests/guest-quiet.wasm"));
    assert!(wasm.exists(), "{} is missing: run scripts/setup.sh first", wasm.display());
    let text = format!("[plugins.quiet]\npath = \"{}\"\n", wasm.display());
    let policy = Policy::parse(&text, Path::new("kata.toml"), Path::new("/")).unwrap();
    let engine = Engine::new(Some(dir.join("cache"))).unwrap();
    let plugin =
        ChannelPlugin::load(&engine, &linker(&engine).unwrap(), policy.plugins["quiet"].clone(), Sinks::memory(), Path::new("/")).unwrap();
    (plugin, engine)
}

#[inline(never)]
async fn empty_async_call(x: u64) -> u64 {
    std::hint::black_box(x + 1)
}

/// The least a component can be: one core module (one page of memory, an
/// empty function), its function lifted as the export `run`.
const BARE: &str = r#"(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "run")))
  (core instance $i (instantiate $m))
  (func (export "run") (canon lift (core func $i "run"))))"#;

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (plugin, _engine) = quiet_plugin(dir.path());

    let mut g = c.benchmark_group("engine");
    g.measurement_time(Duration::from_secs(5));

    // Baseline: an empty async call through the same measuring loop.
    g.bench_function("baseline/empty_async_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for i in 0..iters {
                    std::hint::black_box(empty_async_call(i).await);
                }
                t.elapsed()
            })
        })
    });

    // Baseline for instantiation: create and drop the sandboxed store alone.
    g.bench_function("baseline/new_store", |b| {
        b.iter(|| std::hint::black_box(plugin.new_store()));
    });

    // Instantiate from InstancePre (pooling), including the sandboxed store,
    // and drop the instance: what a restart or a fresh send instance costs.
    g.bench_function("instantiate_channel_plugin", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    let inst = plugin.instantiate().await.unwrap();
                    std::hint::black_box(&inst);
                }
                t.elapsed()
            })
        })
    });

    // Instantiation alone, as the issue's target is stated: the store is made
    // before and the instance dropped after the timed region.
    g.bench_function("instantiate_only", |b| {
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
                total
            })
        })
    });

    // Bare wasmtime on kata's engine configuration: instantiate (async, as
    // kata does; the store is made before and dropped after the timed region)
    // and an empty async call on a live instance.
    let bare_engine = wasmtime::Engine::new(&Engine::config()).unwrap();
    let bare = wasmtime::component::Component::new(&bare_engine, wat::parse_str(BARE).unwrap()).unwrap();
    let bare_pre = wasmtime::component::Linker::<()>::new(&bare_engine).instantiate_pre(&bare).unwrap();
    let bare_store = || {
        let mut s = wasmtime::Store::new(&bare_engine, ());
        s.set_epoch_deadline(u64::MAX / 2);
        s
    };
    g.bench_function("baseline/bare_wasmtime_instantiate", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut store = bare_store();
                    let t = Instant::now();
                    let inst = bare_pre.instantiate_async(&mut store).await.unwrap();
                    total += t.elapsed();
                    std::hint::black_box(inst);
                    drop(store);
                }
                total
            })
        })
    });
    g.bench_function("baseline/bare_wasmtime_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut store = bare_store();
                let inst = bare_pre.instantiate_async(&mut store).await.unwrap();
                let run = inst.get_typed_func::<(), ()>(&mut store, "run").unwrap();
                let t = Instant::now();
                for _ in 0..iters {
                    run.call_async(&mut store, ()).await.unwrap();
                }
                t.elapsed()
            })
        })
    });

    // An empty poll round trip on a warm instance (limits armed per call).
    g.bench_function("empty_poll_round_trip", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut inst = plugin.instantiate().await.unwrap();
                inst.connect().await.unwrap();
                let t = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(inst.poll(None).await.unwrap());
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(engine, benches);
criterion_main!(engine);
