//! The data each plugin instance's store holds — what the host functions of
//! every WIT version are implemented on — and making such a store under the
//! plugin's grants and limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::latest::{Message, SchedulerError, TaskInfo, TaskRequest};
use crate::engine::{CallMeter, Engine};
use crate::policy::{FileMode, PluginGrants};
use crate::sandbox::{NetworkGate, PluginSandbox};
use crate::sink::StateStore;

/// Where a service instance's `emitter.emit` calls go (kata-daemon stores
/// them in the inbox).
pub trait Emit: Send + Sync {
    /// A call into the service is about to start (per-call budgets reset).
    fn begin_call(&self);
    /// Take one emitted message; the `Err` text is what the plugin sees.
    /// `sandbox` is the service's, for scanning and limits.
    fn emit(&self, message: Message, sandbox: &PluginSandbox) -> Result<(), String>;
}

/// Where a plugin's `scheduler` calls go (kata-daemon implements it over the
/// workspace's tasks table and the plugin's `scheduler` grant). Each call
/// names the plugin; a plugin only ever sees and cancels its own tasks.
/// Without one in the store ([`PluginCtx::scheduler`] is `None`) every call
/// returns [`scheduler_not_granted`].
pub trait Scheduler: Send + Sync {
    /// Create a task for `plugin`. `session` is the session key of the tool
    /// call this runs in (`channel/conversation[/thread]`), when it is part
    /// of a conversation: the target of a request without one.
    fn create(&self, plugin: &str, session: Option<&str>, request: TaskRequest) -> Result<TaskInfo, SchedulerError>;
    /// `plugin`'s tasks.
    fn list(&self, plugin: &str) -> Result<Vec<TaskInfo>, SchedulerError>;
    /// Cancel one of `plugin`'s tasks.
    fn cancel(&self, plugin: &str, id: i64) -> Result<(), SchedulerError>;
}

/// The error every `scheduler` call gets when the store has no
/// [`Scheduler`]: the grant is missing, and the text names the line to add.
pub fn scheduler_not_granted(plugin: &str) -> SchedulerError {
    SchedulerError::NotGranted(format!("add `scheduler = {{ max_tasks = 20 }}` under [plugins.{plugin}] in kata.toml"))
}

/// What the host knows about the plugin an instance belongs to.
#[derive(Clone)]
pub struct PluginIdentity {
    /// The plugin's name from kata.toml.
    pub name: Arc<str>,
    /// Its non-secret configuration.
    pub config: Arc<BTreeMap<String, String>>,
    /// Where its state lives (in kata, the workspace database).
    pub state: Arc<dyn StateStore>,
    /// Whether its state is read-only (a tool running in the `safe` mode,
    /// with every write grant stripped): `state-set` fails, `state-delete`
    /// does nothing.
    pub read_only: bool,
}

/// The data of one plugin instance's store.
pub struct PluginCtx {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    gate: NetworkGate,
    limits: StoreLimits,
    /// The current call's CPU budget and deadline ([`CallMeter`]): host
    /// functions that wait (connections) give up a little before its
    /// deadline, so the plugin sees a timeout it can handle.
    pub meter: Arc<CallMeter>,
    /// Which plugin this is.
    pub id: PluginIdentity,
    /// Where `emitter.emit` puts messages: set for service instances only.
    pub emitter: Option<Arc<dyn Emit>>,
    /// Where `scheduler` calls go: set by the daemon for tools plugins with
    /// the `scheduler` grant; `None` refuses every call as not granted.
    pub scheduler: Option<Arc<dyn Scheduler>>,
    /// The session key of the tool call running in this instance
    /// (`channel/conversation[/thread]`), for `scheduler.create` without a
    /// target. The daemon sets it before each call.
    pub session: Option<String>,
}

impl PluginCtx {
    /// Run `f`, work the host blocks on for the call (the daemon's database:
    /// plugin state, tasks, emitted messages), without charging its time to
    /// the call's CPU budget: `cpu_per_call` is the guest's running, and
    /// waiting on I/O does not count (see [`CallMeter::credit`]).
    pub(crate) fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        let started = std::time::Instant::now();
        let r = f();
        self.meter.credit(started.elapsed());
        r
    }

    /// The plugin's sandbox: grants, secret scanner, audit log.
    pub fn sandbox(&self) -> &std::sync::Arc<PluginSandbox> {
        self.gate.sandbox()
    }

    /// The instance's resource table (connections live there next to WASI's handles).
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for PluginCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for PluginCtx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.gate }
    }
}

/// Create a store for one instance of a plugin.
///
/// WASI is linked but grants nothing beyond the policy: no environment, no
/// arguments, no inherited stdio, no sockets, and only the directories in the
/// plugin's `files` grants, each preopened read-only or read-write. Paths are
/// resolved inside the preopened directory by cap-std (openat2/`RESOLVE_BENEATH`
/// semantics), so `..`, absolute paths and symlinks pointing outside cannot
/// escape it. Outgoing HTTP goes through `gate`, which enforces the plugin's
/// network grants.
pub fn new_store(engine: &Engine, id: PluginIdentity, gate: NetworkGate, grants: &PluginGrants) -> Store<PluginCtx> {
    let limits = &grants.limits;
    let mut wasi = WasiCtx::builder();
    wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    for f in &grants.files {
        let perms = match f.mode {
            FileMode::Ro => wasmtime_wasi::FsPerms::ReadOnly,
            FileMode::Rw => wasmtime_wasi::FsPerms::ReadWrite,
        };
        // The directory was checked when the policy was loaded; if it has
        // gone since, the plugin runs without it (and its opens fail) rather
        // than not at all.
        if let Err(e) = wasi.preopened_dir(&f.host, &f.guest, perms) {
            tracing::error!(
                plugin = %grants.name,
                "cannot open granted directory {} (as {}): {e:#}; the plugin runs without it",
                f.host.display(),
                f.guest
            );
        }
    }
    let ctx = PluginCtx {
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        gate,
        limits: StoreLimitsBuilder::new().memory_size(limits.memory_bytes).trap_on_grow_failure(true).instances(20).build(),
        meter: Arc::default(),
        id,
        emitter: None,
        scheduler: None,
        session: None,
    };
    let mut store = Store::new(engine.wasmtime(), ctx);
    store.limiter(|c| &mut c.limits);
    // The epoch ticker interrupted running guest code: stop it once the call
    // has run past its budget (waiting on the host is not charged: see
    // `CallMeter`), else let the daemon's other tasks run before going on.
    store.epoch_deadline_callback(
        |cx| {
            if cx.data().meter.over_budget() { Ok(UpdateDeadline::Interrupt) } else { Ok(UpdateDeadline::Yield(1)) }
        },
    );
    store.set_epoch_deadline(1);
    store
}
