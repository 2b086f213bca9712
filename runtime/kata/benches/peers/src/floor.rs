//! The floor (issue #16 part 2): what instantiating a channel plugin and an
//! empty `poll` cost in kata, next to what wasmtime itself costs for the
//! least a component can be, and kata's pieces added one at a time — all
//! interleaved in one run like the peers rows.
//!
//! Instantiation rows time `instantiate` alone (the store is made before and
//! dropped after the timed region), as the Engine section's
//! `instantiate_only` does. The plugin is `tests/guests/guest-quiet` (a Rust
//! SDK channel, wasip1 + preview1 adapter), as in `runtime/host/benches/engine.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kata_host::engine::Engine;
use kata_host::plugin::ChannelPlugin;
use kata_host::policy::Policy;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, Store};

/// The least a component can be: one core module (one page of memory, an
/// empty function), its function lifted as the export `run`.
const BARE: &str = r#"(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "run")))
  (core instance $i (instantiate $m))
  (func (export "run") (canon lift (core func $i "run"))))"#;

/// A bare-wasmtime component ready to instantiate with `Store<()>`.
pub struct Bare {
    engine: wasmtime::Engine,
    pre: InstancePre<()>,
}

impl Bare {
    /// `wat_or_wasm` compiled on `cfg`; unknown imports (if any) become traps,
    /// so a real guest can be instantiated with nothing of kata's linked.
    pub fn new(cfg: &Config, bytes: &[u8]) -> Result<Self> {
        let engine = wasmtime::Engine::new(cfg)?;
        let component = Component::new(&engine, bytes)?;
        let mut linker = Linker::new(&engine);
        linker.define_unknown_imports_as_traps(&component)?;
        let pre = linker.instantiate_pre(&component)?;
        Ok(Self { engine, pre })
    }

    fn store(&self) -> Store<()> {
        let mut s = Store::new(&self.engine, ());
        s.set_epoch_deadline(u64::MAX / 2);
        s
    }

    /// Time `n` synchronous instantiations (store made before, dropped after).
    pub fn instantiate(&self, n: u64) -> Result<Duration> {
        let mut total = Duration::ZERO;
        for _ in 0..n {
            let mut store = self.store();
            let t = Instant::now();
            let i = self.pre.instantiate(&mut store)?;
            total += t.elapsed();
            std::hint::black_box(i);
            drop(store);
        }
        Ok(total)
    }

    /// [`Self::instantiate`] with `instantiate_async` (on a fiber).
    pub async fn instantiate_async(&self, n: u64) -> Result<Duration> {
        let mut total = Duration::ZERO;
        for _ in 0..n {
            let mut store = self.store();
            let t = Instant::now();
            let i = self.pre.instantiate_async(&mut store).await?;
            total += t.elapsed();
            std::hint::black_box(i);
            drop(store);
        }
        Ok(total)
    }

    /// A live instance of the bare component and its `run`.
    pub fn live(&self) -> Result<(Store<()>, wasmtime::component::TypedFunc<(), ()>)> {
        let mut store = self.store();
        let i = self.pre.instantiate(&mut store)?;
        let f = i.get_typed_func::<(), ()>(&mut store, "run")?;
        Ok((store, f))
    }

    /// A live instance of a tools component with nothing of kata's around it
    /// (imports as traps, a plain `Store<()>`, no limits, no timer): the
    /// floor under kata's live call of the same export.
    pub async fn live_tools(&self) -> Result<(Store<()>, kata_host::host::latest::ToolsPlugin)> {
        let mut store = self.store();
        let b = kata_host::host::latest::ToolsPluginPre::new(self.pre.clone())?.instantiate_async(&mut store).await?;
        Ok((store, b))
    }
}

/// The bare component's text.
pub fn bare_wat() -> &'static [u8] {
    BARE.as_bytes()
}

/// wasmtime's defaults plus the component model (on-demand allocator).
pub fn default_config() -> Config {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    cfg
}

/// kata's configuration with the pooling allocator changed by `f`.
pub fn kata_config_with(f: impl FnOnce(&mut wasmtime::PoolingAllocationConfig)) -> Config {
    let mut cfg = Engine::config();
    let mut pool = Engine::pooling();
    f(&mut pool);
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    cfg
}

/// `guest-quiet` loaded as the daemon loads a channel, on an engine with `cfg`.
pub fn quiet(cfg: &Config, root: &Path, ws: &Path) -> Result<(ChannelPlugin, Engine)> {
    let wasm = root.join("target/guests/guest-quiet.wasm");
    anyhow::ensure!(wasm.exists(), "{} is missing: run scripts/setup.sh first", wasm.display());
    let text = format!("[plugins.quiet]\npath = \"{}\"\n", wasm.display());
    let policy = Policy::parse(&text, Path::new("kata.toml"), ws)?;
    let engine = Engine::with_config(cfg, None)?;
    let linker = kata_host::plugin::linker(&engine)?;
    let plugin = ChannelPlugin::load(&engine, &linker, policy.plugins["quiet"].clone(), kata_host::sink::Sinks::memory(), ws)
        .context("loading guest-quiet")?;
    Ok((plugin, engine))
}

/// Time `n` kata instantiations of `plugin` (store made before, dropped after).
pub async fn kata_instantiate(plugin: &ChannelPlugin, n: u64) -> Result<Duration> {
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let store = plugin.new_store();
        let t = Instant::now();
        let i = plugin.instantiate_in(store).await?;
        total += t.elapsed();
        drop(std::hint::black_box(i));
    }
    Ok(total)
}
