//! The wasmtime engine every plugin runs in: configuration, the epoch ticker
//! that meters CPU ([`CallMeter`]), and the on-disk cache of compiled
//! components. The store data each plugin instance gets is
//! [`crate::host::PluginCtx`].

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the engine's epoch advances: the granularity of CPU metering.
pub const TICK: Duration = Duration::from_millis(5);

/// A configured wasmtime engine plus kata's compiled-component cache.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    cache_dir: Option<PathBuf>,
}

impl Engine {
    /// Build the engine: component model, async, pooling allocator and epoch
    /// interruption, with a ticker thread that lives as long as the engine.
    /// `cache_dir` keeps compiled components between runs (None: compile every time).
    ///
    /// ```
    /// let engine = kata_host::engine::Engine::new(None)?; // no cache: compile every time
    /// let linker = kata_host::plugin::linker(&engine)?;
    /// # let _ = linker;
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self> {
        Self::with_config(&Self::config(), cache_dir)
    }

    /// kata's engine configuration: what [`Self::new`] builds the engine with
    /// (exposed so benchmarks can vary one setting at a time).
    #[doc(hidden)]
    pub fn config() -> Config {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true);
        cfg.epoch_interruption(true);
        // kata runs WASI 0.2 components and no component-model-async (WASI
        // 0.3) code. With concurrency support on (wasmtime's default) every
        // store carries the concurrent task machinery and every async call
        // goes through it (a guest task, a queued call, a oneshot channel):
        // off, a call is a plain fiber switch — the empty poll and the
        // instantiation both get cheaper (BENCHMARKS.md, "The floor"). kata's
        // build leaves wasmtime's component-model-async feature out, which
        // also turns it off; this keeps it off where features unify with a
        // crate that turns it on (an embedder's build, the peers bench).
        cfg.concurrency_support(false);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(Self::pooling()));
        cfg
    }

    /// The pooling allocator's settings in [`Self::config`].
    #[doc(hidden)]
    pub fn pooling() -> PoolingAllocationConfig {
        let mut pool = PoolingAllocationConfig::default();
        // Enough slots for many plugins with a poll and a send instance each;
        // memory size per instance is capped per plugin by StoreLimits.
        // Core instances: a componentize-py component holds 14 core modules
        // (CPython, libc, the adapters…), so 16 per memory keeps memories,
        // not core instances, the bound. Slots are address space, not RSS.
        pool.total_component_instances(200)
            .total_core_instances(3200)
            .total_memories(200)
            .total_tables(400)
            .total_stacks(200)
            // Return freed instance memory to the OS in batches rather than
            // one madvise per instance: restarts and send instances churn.
            .decommit_batch_size(32)
            // A freed slot's dirty pages (found with PAGEMAP_SCAN, Linux ≥ 6.7;
            // elsewhere this is off) are reset in place, up to 1 MiB per
            // memory, instead of being unmapped and faulted in again by the
            // next instance: instantiation costs ~40 % less (BENCHMARKS.md,
            // "The floor"). A warm slot keeps at most what its last instance
            // touched resident (~50 KiB for a Rust channel).
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        pool
    }

    /// [`Self::new`] with another configuration (benchmarks compare them).
    #[doc(hidden)]
    pub fn with_config(cfg: &Config, cache_dir: Option<PathBuf>) -> Result<Self> {
        let inner = wasmtime::Engine::new(cfg).map_err(anyhow::Error::from).context("cannot configure the WebAssembly engine")?;
        let weak = inner.weak();
        std::thread::Builder::new()
            .name("kata-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .context("cannot start the epoch thread")?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create the compile cache {}", dir.display()))?;
        }
        Ok(Self { inner, cache_dir })
    }

    /// The wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }

    /// Compile a component, or load it from the cache when these exact bytes
    /// were compiled before by an engine with the same settings and version.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component> {
        self.compile_digested(bytes, &hex::encode(Sha256::digest(bytes)))
    }

    /// [`Self::compile`] for bytes whose sha256 (hex) the caller already has
    /// (the plugin loader hashes a file once, for its tamper check and this).
    pub fn compile_digested(&self, bytes: &[u8], sha256_hex: &str) -> Result<Component> {
        let Some(dir) = &self.cache_dir else {
            return Ok(Component::new(&self.inner, bytes)?);
        };
        let path = dir.join(format!("{}.cwasm", self.key_for(sha256_hex)));
        if path.exists() {
            match self.load_cached(&path) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable compiled cache entry: {e:#}");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = self.compile_uncached(bytes)?;
        self.cache_compiled(bytes, &component);
        release_freed_memory();
        Ok(component)
    }

    /// Compile without touching the cache (to validate before committing to anything).
    pub fn compile_uncached(&self, bytes: &[u8]) -> Result<Component> {
        Ok(Component::new(&self.inner, bytes)?)
    }

    /// Put a compiled component in the cache (best effort: a cache that cannot
    /// be written only costs a recompile later).
    pub fn cache_compiled(&self, bytes: &[u8], component: &Component) {
        let Some(dir) = &self.cache_dir else { return };
        let path = dir.join(format!("{}.cwasm", self.cache_key(bytes)));
        if path.exists() {
            return;
        }
        if let Ok(serialized) = component.serialize() {
            // Write then rename, so a crash never leaves a half-written entry.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, serialized).is_ok() && std::fs::rename(&tmp, &path).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }

    /// Whether a compiled copy of `bytes` is in the cache.
    pub fn is_cached(&self, bytes: &[u8]) -> bool {
        self.cache_dir.as_ref().is_some_and(|d| d.join(format!("{}.cwasm", self.cache_key(bytes))).exists())
    }

    fn cache_key(&self, bytes: &[u8]) -> String {
        self.key_for(&hex::encode(Sha256::digest(bytes)))
    }

    fn key_for(&self, sha256_hex: &str) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.precompile_compatibility_hash().hash(&mut h);
        let engine = h.finish();
        format!("{sha256_hex}-{engine:016x}")
    }

    #[allow(unsafe_code)]
    fn load_cached(&self, path: &Path) -> Result<Component> {
        // SAFETY: cache entries are written only by `compile` above, into the
        // workspace's own `.kata/cache`, named by the sha256 of the source bytes
        // and the engine's compatibility hash; wasmtime also checks the
        // engine/version header before using them.
        Ok(unsafe { Component::deserialize_file(&self.inner, path) }?)
    }
}

/// Hand the memory a compile freed back to the OS. Cranelift compiles on
/// rayon threads, and glibc keeps what each thread freed in that thread's
/// malloc arena: ~4 MB that a daemon which compiled a plugin at start would
/// otherwise keep resident for good (BENCHMARKS.md, "Memory and size").
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        unsafe extern "C" {
            // glibc: returns free pages of every arena to the kernel; takes
            // each arena's lock itself and touches no memory in use.
            safe fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        malloc_trim(0);
    }
}

/// The clock of the calls into one plugin instance: how long the current
/// call has run, its CPU budget, and its wall-clock deadline.
///
/// A call into a plugin is a future that runs the guest on a fiber (see
/// [`crate::plugin::guarded`]). While the guest waits on the host (network
/// I/O, a timer, a slow file) its fiber is suspended and the future returns
/// `Pending`, so the time a call spends *being polled* is the time the guest
/// and the host's synchronous work on its behalf ran: that is what the
/// budget (`limits.cpu_per_call`) is charged, and waiting is not. The epoch
/// ticker ([`TICK`]) interrupts running guest code; the store's epoch
/// callback then asks [`Self::over_budget`].
///
/// The same thread writes and reads it during a poll (the epoch callback runs
/// inside the poll that the guest runs in), so relaxed atomics suffice; they
/// are atomics only because the store's data must be `Sync` to move across
/// the runtime's threads between polls.
#[derive(Debug)]
pub struct CallMeter {
    /// When the poll that runs now started (ns since `base`), or 0.
    poll_started: AtomicU64,
    /// Time of this call's earlier polls, ns.
    used: AtomicU64,
    /// The call's budget, ns.
    budget: AtomicU64,
    /// When the call must be done by (ns since `base`), or 0 before its first poll.
    deadline: AtomicU64,
}

impl Default for CallMeter {
    fn default() -> Self {
        Self { poll_started: AtomicU64::new(0), used: AtomicU64::new(0), budget: AtomicU64::new(u64::MAX), deadline: AtomicU64::new(0) }
    }
}

impl CallMeter {
    /// Start metering a new call with this CPU budget (its deadline is set
    /// by its first poll: [`Self::first_poll`]).
    pub fn reset(&self, budget: Duration) {
        self.used.store(0, Relaxed);
        self.budget.store(nanos(budget), Relaxed);
        self.deadline.store(0, Relaxed);
    }

    fn since_base(&self, t: Instant) -> u64 {
        // Never 0, which means "not set".
        nanos(t.saturating_duration_since(base())).max(1)
    }

    fn at(&self, ns: u64) -> Instant {
        base() + Duration::from_nanos(ns)
    }

    /// The call's first poll begins at `now`: it must be done `timeout` from
    /// now. Returns that deadline.
    pub fn first_poll(&self, now: Instant, timeout: Duration) -> Instant {
        let deadline = now.checked_add(timeout).unwrap_or(now + Duration::from_secs(86_400 * 365));
        self.deadline.store(self.since_base(deadline), Relaxed);
        self.poll_started.store(self.since_base(now), Relaxed);
        deadline
    }

    /// A poll of the call begins at `now` (any poll but the first).
    pub fn poll_begins(&self, now: Instant) {
        self.poll_started.store(self.since_base(now), Relaxed);
    }

    /// The poll that began last ended at `now`, the call not finished: its
    /// time is charged to the call.
    pub fn poll_ends(&self, now: Instant) {
        let started = self.poll_started.swap(0, Relaxed);
        if started != 0 {
            self.used.fetch_add(self.since_base(now).saturating_sub(started), Relaxed);
        }
    }

    /// The host spent `d` of the running poll blocked on work it does for
    /// the call (the daemon's database: plugin state, tasks, emitted
    /// messages): waiting, not the guest running, so it is not charged.
    pub fn credit(&self, d: Duration) {
        let started = self.poll_started.load(Relaxed);
        if started != 0 {
            self.poll_started.store(started.saturating_add(nanos(d)), Relaxed);
        }
    }

    /// The poll that began last ended with the call's result: nothing is
    /// charged any more (and no clock is read).
    pub fn call_done(&self) {
        self.poll_started.store(0, Relaxed);
    }

    /// When the current call must be done by, once it has started.
    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Relaxed) {
            0 => None,
            ns => Some(self.at(ns)),
        }
    }

    /// The epoch ticker interrupted the guest: whether the call has used up
    /// its budget. Guest code runs only inside a metered poll; should it ever
    /// run outside one, each interruption is charged a whole tick instead.
    pub fn over_budget(&self) -> bool {
        let started = self.poll_started.load(Relaxed);
        let used = if started == 0 {
            self.used.fetch_add(nanos(TICK), Relaxed) + nanos(TICK)
        } else {
            self.used.load(Relaxed) + self.since_base(Instant::now()).saturating_sub(started)
        };
        used > self.budget.load(Relaxed)
    }

    /// Time charged to the current (or last) call, not counting a poll still running.
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.used.load(Relaxed))
    }
}

/// What a [`CallMeter`]'s times count from (the first time one asks).
fn base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a call is charged: its polls' time, less what the host spent
    /// blocked for it; not the time between polls (waiting).
    #[test]
    fn a_call_is_charged_its_polls_less_the_hosts_blocking_work() {
        let m = CallMeter::default();
        m.reset(Duration::from_millis(30));
        assert_eq!(m.deadline(), None, "no deadline before the first poll");
        let start = Instant::now();
        let deadline = m.first_poll(start, Duration::from_secs(60));
        assert_eq!(m.deadline(), Some(deadline));
        std::thread::sleep(Duration::from_millis(40));
        assert!(m.over_budget(), "40 ms of running is over a 30 ms budget");
        // Those 40 ms were the host blocked on the database for the call.
        m.credit(start.elapsed());
        assert!(!m.over_budget(), "blocking host work is not charged");
        m.poll_ends(Instant::now());
        assert!(m.used() < Duration::from_millis(10), "{:?}", m.used());
        // Between polls the call waits: not charged.
        std::thread::sleep(Duration::from_millis(40));
        m.poll_begins(Instant::now());
        assert!(!m.over_budget());
        std::thread::sleep(Duration::from_millis(35));
        assert!(m.over_budget(), "a second poll's running adds up");
        m.call_done();
        // A new call starts from nothing.
        m.reset(Duration::from_millis(30));
        assert_eq!(m.used(), Duration::ZERO);
        assert_eq!(m.deadline(), None);
    }
}
