//! `kata run`: load the workspace, start every enabled channel plugin, and move
//! messages inbox → agent → outbox until a signal stops it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::channel;
use crate::control::{self, DaemonCommand, Shared};
use crate::engine::Engine;
use crate::events::Events;
use crate::health::{BreakerConfig, Health};
use crate::host::PluginCtx;
use crate::plugin::{self, ChannelPlugin};
use crate::policy::{PluginGrants, Policy};
use crate::store::Db;
use crate::workspace::Workspace;
use wasmtime::component::Linker;

/// Load an enabled plugin's file the way `kata run` does — as a service, a
/// tools plugin and/or a channel, by what it exports, through the same
/// loaders — but without reading its secrets (`kata policy check` reports on
/// those itself: the daemon's environment may differ from the shell's).
/// Every refusal `kata run` makes of the file is an error here too: missing,
/// unreadable, changed after it was installed, not WebAssembly, a core
/// module, a WIT version this kata lacks, not a world kata runs, an import
/// kata does not provide, an invalid manifest. `db` only backs the loaders
/// (nothing is written). Returns whether it runs as a channel.
pub fn check_loadable(engine: &Engine, linker: &Linker<PluginCtx>, grants: &PluginGrants, db: &Db, workspace: &Path) -> Result<bool> {
    let Some(path) = grants.path.clone() else { return Ok(false) };
    let mut grants = grants.clone();
    grants.secrets.clear();
    crate::plugin::read_plugin(&path)?;
    if crate::hooks::is_hook(&path) {
        crate::hooks::HookPlugin::load(engine, linker, grants, db, workspace)?;
        return Ok(false);
    }
    if crate::service::is_service(&path) {
        crate::service::ServicePlugin::load(engine, linker, grants, db.clone(), workspace)?;
        return Ok(false);
    }
    let (is_channel, is_tools) = crate::tools::kinds_of(&path);
    if is_tools {
        crate::tools::ToolsPlugin::load(engine, linker, grants.clone(), db.clone(), workspace)?;
        if !is_channel {
            return Ok(false);
        }
    }
    ChannelPlugin::load(engine, linker, grants, crate::sinks::for_db(db), workspace)?;
    Ok(true)
}

/// How long shutdown waits for in-flight sends before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// The policy and the plugins it enables, loaded and ready to run.
struct Loaded {
    policy: Policy,
    plugins: Vec<Arc<ChannelPlugin>>,
    services: Vec<Arc<crate::service::ServicePlugin>>,
    agent: crate::router::AgentHandle,
    /// Plugins not loaded because their stored code was changed after it
    /// was installed, with the error: shown in `kata status`.
    refused: Vec<(String, String)>,
}

/// Read kata.toml and load every enabled plugin. Any error is the user's to
/// fix (bad kata.toml, missing plugin, missing secret).
fn load_plugins(ws: &Workspace, db: &Db, engine: &Engine, linker: &Linker<PluginCtx>) -> Result<Loaded> {
    let policy = Policy::load(&ws.policy_path(), ws.root())?;
    let mut plugins = Vec::new();
    let mut services = Vec::new();
    let mut tools = Vec::new();
    let mut refused = Vec::new();
    for grants in policy.plugins.values().filter(|g| g.enabled) {
        let name = grants.name.clone();
        let Some(path) = &grants.path else {
            tracing::warn!(plugin = %name, "[plugins.{name}] has no `path`: not installed, skipped (install it with `kata plugin add`)");
            continue;
        };
        let loaded = (|| -> Result<()> {
            // Hook plugins are loaded in [hooks] order, below.
            if crate::hooks::is_hook(path) {
                if grants.hook.as_ref().and_then(|h| h.position).is_none() {
                    tracing::warn!(
                        plugin = %name,
                        "{name} is a hook plugin, but [hooks] order in {} does not name it: it is never called",
                        policy.path.display()
                    );
                }
                return Ok(());
            }
            if crate::service::is_service(path) {
                let s = crate::service::ServicePlugin::load(engine, linker, grants.clone(), db.clone(), ws.root())
                    .with_context(|| format!("cannot load service {name} ([plugins.{name}] in {})", policy.path.display()))?;
                tracing::info!(plugin = %name, path = %path.display(), wit = ?s.info.wit_version, "service loaded");
                services.push(Arc::new(s));
                return Ok(());
            }
            let (is_channel, is_tools) = crate::tools::kinds_of(path);
            if is_tools {
                let t = crate::tools::ToolsPlugin::load(engine, linker, grants.clone(), db.clone(), ws.root())
                    .with_context(|| format!("cannot load tools plugin {name} ([plugins.{name}] in {})", policy.path.display()))?;
                tools.push(Arc::new(t));
                if !is_channel {
                    return Ok(());
                }
            }
            let p = ChannelPlugin::load(engine, linker, grants.clone(), crate::sinks::for_db(db), ws.root())
                .with_context(|| format!("cannot load plugin {name} ([plugins.{name}] in {})", policy.path.display()))?;
            tracing::info!(plugin = %name, path = %path.display(), wit = ?p.info.wit_version, "plugin loaded");
            plugins.push(Arc::new(p));
            Ok(())
        })();
        // Stored code replaced after installation (every loader checks the
        // hash before compiling) is refused, and the other plugins still
        // run; any other error is the user's to fix before kata starts.
        if let Err(e) = loaded {
            let Some(tampered @ crate::plugin::LoadError::Tampered { .. }) = e.downcast_ref::<crate::plugin::LoadError>() else {
                return Err(e);
            };
            let text = tampered.to_string();
            tracing::error!(plugin = %name, "not loading plugin {name}: {text}");
            crate::sinks::auditor(db, &name).record(
                crate::audit::Event::new(crate::audit::Kind::Integrity, crate::audit::Verdict::Deny)
                    .target(path.display().to_string())
                    .detail(text.clone()),
            );
            refused.push((name, text));
        }
    }
    let channels: Vec<&str> = plugins.iter().map(|p| p.name()).collect();
    crate::service::check_targets(&services, &channels, &policy.path)?;
    if plugins.is_empty() && services.is_empty() && tools.is_empty() {
        tracing::warn!("no plugins are enabled in {}; add one with `kata plugin add FILE`", policy.path.display());
    } else if plugins.is_empty() && services.is_empty() {
        // Tools plugins only answer the agent's tool calls: with no channel
        // (and no service) nothing brings the agent a message but `kata chat`.
        let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
        tracing::warn!(
            "no channel plugins are enabled in {}: nothing will receive messages (only `kata chat` reaches the agent, \
             which may call the tools of {}); add a channel with `kata plugin add FILE`",
            policy.path.display(),
            names.join(", ")
        );
    }
    let grants = plugins
        .iter()
        .map(|p| (p.name().to_string(), p.grants.clone()))
        .chain(services.iter().map(|s| (s.name().to_string(), s.grants.clone())))
        .collect();
    let hooks = Arc::new(crate::hooks::load_all(&policy, engine, linker, db, ws.root())?);
    let agent = crate::router::load(&policy, ws, db, tools, grants, hooks)?;
    Ok(Loaded { policy, plugins, services, agent, refused })
}

/// Everything `kata run` has loaded, before it starts running.
pub struct Daemon {
    ws: Workspace,
    db: Db,
    engine: Engine,
    linker: Linker<PluginCtx>,
    loaded: Loaded,
    events: Events,
    _lock: std::fs::File,
}

/// The loops of one loaded configuration: ingress and egress per channel
/// plugin, and the agent. Replaced as a whole on reload.
struct Workers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    names: Vec<String>,
}

impl Workers {
    fn start(loaded: &Loaded, db: &Db, shared: &Shared) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let inbox_ready = Arc::new(Notify::new());
        let mut outbox_ready: BTreeMap<String, Arc<Notify>> = BTreeMap::new();
        let mut tasks = JoinSet::new();
        let health = shared.health.clone();
        let names: Vec<String> =
            loaded.plugins.iter().map(|p| p.name()).chain(loaded.services.iter().map(|s| s.name())).map(String::from).collect();
        let mut known = names.clone();
        known.extend(loaded.refused.iter().map(|(n, _)| n.clone()));
        // Plugins kata.toml names but does not run, for `kata status`:
        // installed but disabled, or a table waiting for its code.
        let inactive: Vec<(String, crate::health::PluginState)> = loaded
            .policy
            .plugins
            .values()
            .filter_map(|g| match (&g.path, g.enabled) {
                (None, _) => Some((g.name.clone(), crate::health::PluginState::NotInstalled)),
                (Some(_), false) => Some((g.name.clone(), crate::health::PluginState::Disabled)),
                _ => None,
            })
            .collect();
        known.extend(inactive.iter().map(|(n, _)| n.clone()));
        health.retain(&known);
        for (name, state) in &inactive {
            health.inactive(name, *state);
        }
        for (name, error) in &loaded.refused {
            health.refused(name, error);
        }
        for p in &loaded.plugins {
            let ready = Arc::new(Notify::new());
            outbox_ready.insert(p.name().to_string(), ready.clone());
            health.register(p.name());
            tasks.spawn(crate::stream::ingress(p.clone(), db.clone(), health.clone(), inbox_ready.clone(), stop_rx.clone()));
            tasks.spawn(channel::egress(p.clone(), db.clone(), health.clone(), ready, stop_rx.clone()));
        }
        // Reactions, typing and drafts: an instance per channel that can do them.
        loaded.agent.set_actions(crate::actions::Actions::start(&loaded.plugins, &health, &mut tasks, &stop_rx));
        *shared.agent.write().unwrap_or_else(|p| p.into_inner()) = Some(loaded.agent.clone());
        for s in &loaded.services {
            health.register(s.name());
            tasks.spawn(crate::service::run(s.clone(), db.clone(), health.clone(), inbox_ready.clone(), stop_rx.clone()));
        }
        *shared.outbox_ready.write().unwrap_or_else(|p| p.into_inner()) = outbox_ready.clone();
        tasks.spawn(crate::scheduler::run(db.clone(), inbox_ready.clone(), stop_rx.clone()));
        let mut wake: Vec<Arc<Notify>> = outbox_ready.values().cloned().collect();
        wake.push(inbox_ready.clone());
        tasks.spawn(clock_watch(wake, stop_rx.clone()));
        tasks.spawn(loaded.agent.clone().run(inbox_ready, outbox_ready, stop_rx));
        Self { stop, tasks, names }
    }

    /// Stop gracefully: polls in flight are abandoned (nothing was
    /// acknowledged), sends in flight are finished.
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(r) = self.tasks.join_next().await {
                if let Err(e) = r {
                    tracing::error!("a daemon task failed: {e}");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some tasks did not stop within {SHUTDOWN_GRACE:?}; their work resumes on the next start");
            self.tasks.abort_all();
        }
    }
}

impl Daemon {
    /// Load policy, database and plugins. Any error here is the user's to fix
    /// (bad kata.toml, missing plugin, missing secret) and stops the start.
    pub fn load(ws: Workspace) -> Result<Self> {
        Self::load_with_events(ws, Events::new())
    }

    /// [`Daemon::load`], publishing log events to `events` (the stream `kata
    /// logs` follows; the caller installs its tracing layer).
    pub fn load_with_events(ws: Workspace, events: Events) -> Result<Self> {
        // Read the policy before taking the lock, so a broken kata.toml is
        // reported as such even when another daemon runs.
        Policy::load(&ws.policy_path(), ws.root())?;
        let lock = ws.lock()?;
        let db = Db::open(&ws.db_path())?;
        let engine = Engine::new(Some(ws.cache_dir()))?;
        let linker = plugin::linker(&engine)?;
        let loaded = load_plugins(&ws, &db, &engine, &linker)?;
        Ok(Self { ws, db, engine, linker, loaded, events, _lock: lock })
    }

    /// The workspace database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Run until `shutdown` resolves or a client asks to stop, serving the
    /// control socket and reloading on request (or SIGHUP).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let listener = control::bind(&self.ws)?;
        let (commands, mut command_rx) = mpsc::channel(8);
        let d = &self.loaded.policy.file.daemon;
        let breaker = BreakerConfig { threshold: d.breaker_threshold, cooldown: d.breaker_cooldown, ..BreakerConfig::default() };
        let shared = Arc::new(Shared {
            ws: self.ws.clone(),
            db: self.db.clone(),
            health: Arc::new(Health::new(breaker)),
            events: self.events.clone(),
            started_ms: crate::store::now_ms(),
            outbox_ready: Default::default(),
            commands,
            agent: Default::default(),
            idle_timeout: d.control_idle_timeout,
        });
        let (ctl_stop, ctl_stop_rx) = watch::channel(false);
        let control = tokio::spawn(control::serve(listener, shared.clone(), ctl_stop_rx));
        let mut workers = Workers::start(&self.loaded, &self.db, &shared);
        tracing::info!(
            workspace = %self.ws.root().display(),
            plugins = self.loaded.plugins.len(),
            socket = %control::socket_path(&self.ws).display(),
            "kata is running"
        );

        let mut hangup = hangup_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    workers = self.reload(workers, &shared).await.1;
                }
                cmd = command_rx.recv() => match cmd {
                    Some(DaemonCommand::Stop) | None => break,
                    Some(DaemonCommand::Reload(reply)) => {
                        let (r, w) = self.reload(workers, &shared).await;
                        workers = w;
                        let _ = reply.send(r);
                    }
                },
            }
        }
        tracing::info!("shutting down");
        workers.stop().await;
        let _ = ctl_stop.send(true);
        let _ = control.await;
        let c = self.db.counts()?;
        tracing::info!(inbox_done = c.inbox_done, outbox_sent = c.outbox_sent, outbox_pending = c.outbox_pending, "stopped");
        // The next start need not read the whole file to check it.
        self.db.record_clean_shutdown();
        Ok(())
    }

    /// Load the policy and plugins again; when that works, stop the old
    /// workers and start new ones. When it fails, the old ones keep running
    /// and the error goes back to whoever asked. Queued messages live in the
    /// database, so nothing is dropped either way.
    async fn reload(&mut self, workers: Workers, shared: &Shared) -> (Result<serde_json::Value, String>, Workers) {
        let loaded = match load_plugins(&self.ws, &self.db, &self.engine, &self.linker) {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("{e:#}; the daemon keeps running with the previous configuration");
                tracing::error!("reload failed: {msg}");
                return (Err(msg), workers);
            }
        };
        let before = workers.names.clone();
        workers.stop().await;
        self.loaded = loaded;
        let workers = Workers::start(&self.loaded, &self.db, shared);
        tracing::info!(plugins = ?workers.names, "reloaded");
        let added: Vec<&String> = workers.names.iter().filter(|n| !before.contains(n)).collect();
        let removed: Vec<&String> = before.iter().filter(|n| !workers.names.contains(n)).collect();
        let r = serde_json::json!({"plugins": workers.names, "added": added, "removed": removed});
        (Ok(r), workers)
    }
}

/// How often the wall clock is compared with the monotonic one.
const CLOCK_CHECK: Duration = Duration::from_secs(5);
/// A wall-clock jump larger than this (beyond the monotonic time that
/// passed) counts as a sleep/wake or a clock change.
const CLOCK_JUMP: Duration = Duration::from_secs(30);

/// The wall-clock time that passed beyond the monotonic time, if it is a jump.
fn clock_jump(wall: Duration, mono: Duration) -> Option<Duration> {
    wall.checked_sub(mono).filter(|d| *d > CLOCK_JUMP)
}

/// Notice a sleep/wake (the wall clock jumps ahead of the monotonic clock,
/// which stops while the machine sleeps) and wake every loop, so replies
/// whose retry time passed during the sleep go out and the inbox is worked
/// now rather than when the monotonic timers finally fire. The scheduler
/// catches up missed task runs by itself, once.
async fn clock_watch(wake: Vec<Arc<Notify>>, mut shutdown: watch::Receiver<bool>) {
    let mut last = (std::time::SystemTime::now(), std::time::Instant::now());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CLOCK_CHECK) => {}
            _ = shutdown.changed() => return,
        }
        let now = (std::time::SystemTime::now(), std::time::Instant::now());
        let wall = now.0.duration_since(last.0).unwrap_or_default();
        if let Some(jump) = clock_jump(wall, now.1 - last.1) {
            tracing::info!("the wall clock jumped {jump:?} ahead (sleep/wake or a clock change): catching up");
            for n in &wake {
                n.notify_one();
            }
        }
        last = now;
    }
}

/// A stream of SIGHUPs (never yields where there are none).
fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        Hangup(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
    }
    #[cfg(not(unix))]
    {
        Hangup(())
    }
}

/// SIGHUP, the conventional "reload your configuration" signal.
struct Hangup(#[cfg(unix)] Option<tokio::signal::unix::Signal>, #[cfg(not(unix))] ());

impl Hangup {
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.0 {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

/// Resolve when SIGINT or SIGTERM arrives.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // The handlers are installed now, not when the future is first polled: a
    // SIGTERM that arrives while plugins load is kept and ends the daemon
    // cleanly as soon as it runs, instead of killing it by the default action.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        async move {
            match handlers {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_jump_counts_as_sleep() {
        let s = Duration::from_secs;
        assert_eq!(clock_jump(s(5), s(5)), None);
        assert_eq!(clock_jump(s(20), s(5)), None, "NTP slews and scheduling delays are not sleeps");
        assert_eq!(clock_jump(s(3605), s(5)), Some(s(3600)));
        assert_eq!(clock_jump(s(0), s(5)), None, "a clock set back is no reason to hurry");
    }
}
