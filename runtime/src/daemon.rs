//! `kata run`: load the workspace, start every enabled channel plugin, and move
//! messages inbox → agent → outbox until a signal stops it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::agent::Agent;
use crate::channel;
use crate::engine::Engine;
use crate::plugin::{self, ChannelPlugin};
use crate::policy::Policy;
use crate::store::Db;
use crate::workspace::Workspace;

/// How long shutdown waits for in-flight sends before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Everything `kata run` has loaded, before it starts running.
pub struct Daemon {
    ws: Workspace,
    policy: Policy,
    db: Db,
    plugins: Vec<Arc<ChannelPlugin>>,
    _lock: std::fs::File,
}

impl Daemon {
    /// Load policy, database and plugins. Any error here is the user's to fix
    /// (bad kata.toml, missing plugin, missing secret) and stops the start.
    pub fn load(ws: Workspace) -> Result<Self> {
        let policy = Policy::load(&ws.policy_path(), ws.root())?;
        let lock = ws.lock()?;
        let db = Db::open(&ws.db_path())?;
        let engine = Engine::new(Some(ws.cache_dir()))?;
        let linker = plugin::linker(&engine)?;
        let mut plugins = Vec::new();
        for grants in policy.plugins.values().filter(|g| g.enabled) {
            let name = grants.name.clone();
            let Some(path) = &grants.path else {
                tracing::warn!(plugin = %name, "[plugins.{name}] has no `path`: not installed, skipped (install it with `kata plugin add`)");
                continue;
            };
            let p = ChannelPlugin::load(&engine, &linker, grants.clone(), db.clone(), ws.root())
                .with_context(|| format!("cannot load plugin {name} ([plugins.{name}] in {})", policy.path.display()))?;
            tracing::info!(plugin = %name, path = %path.display(), wit = ?p.info.wit_version, "plugin loaded");
            plugins.push(Arc::new(p));
        }
        if plugins.is_empty() {
            tracing::warn!("no plugins are enabled in {}; add a [plugins.NAME] table", policy.path.display());
        }
        Ok(Self { ws, policy, db, plugins, _lock: lock })
    }

    /// The workspace database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Run until `shutdown` resolves, then stop gracefully: polls in flight are
    /// abandoned (nothing was acknowledged), sends in flight are finished.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let inbox_ready = Arc::new(Notify::new());
        let mut outbox_ready: BTreeMap<String, Arc<Notify>> = BTreeMap::new();
        let mut tasks = JoinSet::new();
        for p in &self.plugins {
            let ready = Arc::new(Notify::new());
            outbox_ready.insert(p.name().to_string(), ready.clone());
            tasks.spawn(channel::ingress(p.clone(), self.db.clone(), inbox_ready.clone(), stop_rx.clone()));
            tasks.spawn(channel::egress(p.clone(), self.db.clone(), ready, stop_rx.clone()));
        }
        let agent = Agent::from_config(&self.policy.file.agent);
        let grants: BTreeMap<String, Arc<crate::policy::PluginGrants>> =
            self.plugins.iter().map(|p| (p.name().to_string(), p.grants.clone())).collect();
        tasks.spawn(crate::scheduler::run(self.db.clone(), inbox_ready.clone(), stop_rx.clone()));
        tasks.spawn(agent_loop(agent, self.db.clone(), grants, inbox_ready, outbox_ready, stop_rx.clone()));
        tracing::info!(workspace = %self.ws.root().display(), plugins = self.plugins.len(), "kata is running");

        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(r) = tasks.join_next().await {
                if let Err(e) = r {
                    tracing::error!("a daemon task failed: {e}");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some tasks did not stop within {SHUTDOWN_GRACE:?}; their work resumes on the next start");
        }
        let c = self.db.counts()?;
        tracing::info!(
            inbox_done = c.inbox_done,
            outbox_sent = c.outbox_sent,
            outbox_pending = c.outbox_pending,
            "stopped"
        );
        Ok(())
    }
}

/// Answer inbox messages with the agent; the inbox row is marked done in the
/// same transaction that queues the reply. Messages from senders the channel
/// does not allow never reach the agent (see [`crate::senders`]).
async fn agent_loop(
    agent: Agent,
    db: Db,
    grants: BTreeMap<String, Arc<crate::policy::PluginGrants>>,
    inbox_ready: Arc<Notify>,
    outbox_ready: BTreeMap<String, Arc<Notify>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            break;
        }
        let rows = match db.pending_inbox(100) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot read the inbox: {e:#}");
                Vec::new()
            }
        };
        if rows.is_empty() {
            tokio::select! {
                _ = inbox_ready.notified() => {}
                // A safety net: pick up rows even if a notification was missed.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown.changed() => break,
            }
            continue;
        }
        for row in rows {
            let reply = match crate::senders::gate(&db, grants.get(&row.plugin).map(|g| &**g), &row) {
                Ok(crate::senders::Gate::Allowed) => agent
                    .reply(&row)
                    .and_then(|r| crate::senders::addressed(r, &row, grants.get(&row.plugin).map(|g| &**g))),
                Ok(crate::senders::Gate::Pair(reply)) => Some(reply),
                Ok(crate::senders::Gate::Held) => None,
                Err(e) => {
                    tracing::error!(inbox = row.id, "cannot check the sender: {e:#}");
                    continue;
                }
            };
            if let Err(e) = db.complete_inbox(row.id, reply.as_ref()) {
                tracing::error!(inbox = row.id, "cannot store the reply: {e:#}");
                continue;
            }
            tracing::info!(plugin = %row.plugin, inbox = row.id, from = %row.msg.sender, replied = reply.is_some(), "handled");
            if let Some(n) = reply.as_ref().and_then(|r| outbox_ready.get(&r.plugin)) {
                n.notify_one();
            }
        }
    }
}

/// Resolve when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
