//! Service plugins (world `service-plugin`): background work that hands events
//! to the agent — a feed reader, a mail watcher. The host calls `start`, then
//! `tick` again after the number of milliseconds each tick returns, and
//! `stop` at shutdown. A service's `emitter.emit` stores a message in the
//! inbox under the service's name (redacted exactly like a channel's polled
//! messages, marked `origin = service:<name>`), and the agent's reply goes to
//! the channel conversation named by the service's `deliver_to` in kata.toml.
//!
//! A service runs in the same sandbox as a channel: only the network hosts,
//! directories and secrets its `[plugins.NAME]` table grants (and its
//! manifest asks for), under the same memory and CPU limits. A trap, timeout
//! or CPU/memory overrun replaces the instance (with a fresh `start`) after
//! an exponential backoff; a tick that returns an error is retried after the
//! same backoff on the same instance; a `start` that returns an error stops
//! the service until kata restarts (its configuration is wrong).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{Notify, watch};
use wasmtime::component::Linker;

use crate::admit::Tally;
use crate::channel::{InboundBudget, backoff, inbound_bytes, note_pause, sleep_or_shutdown, to_inbound};
use crate::engine::Engine;
use crate::health::{Fault, Health};
use crate::host::latest::{Message, ServiceBindings, ServicePre};
use crate::host::{PluginCtx, PluginIdentity, new_store};
use crate::plugin::{CallError, ComponentInfo, Instance, LoadError, Prepared, arm, guarded, prepare};
use crate::policy::PluginGrants;
use crate::sandbox::{NetworkGate, PluginSandbox};
use crate::store::Db;

/// The shortest pause between two ticks, whatever the plugin asks for, so a
/// service returning 0 over and over cannot spin.
const MIN_TICK: Duration = Duration::from_millis(100);
/// Messages one call may emit; more are refused (the plugin sees an error).
const MAX_EMITS_PER_CALL: usize = 1000;

/// Whether the component at `path` is a service plugin (exports
/// `kata:plugin/service` and not `channel`). Unreadable files are not: the
/// channel loader then reports them.
pub fn is_service(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else { return false };
    crate::plugin::inspect(&bytes, &path.display().to_string())
        .is_ok_and(|i| matches!(crate::plugin::Kind::of(&i), Some(crate::plugin::Kind::Service)))
}

/// Where a service instance's `emit` calls go: the inbox, under the service's name.
pub struct Emitter {
    plugin: Arc<str>,
    db: Db,
    inbox_ready: Arc<Notify>,
    /// Emit calls in the current plugin call (reset before each call).
    emitted: AtomicUsize,
    /// New messages stored since the supervisor last looked (for `kata status`).
    emitted_new: AtomicUsize,
    /// Bytes of the messages stored in the current call (bounded by
    /// `limits.max_poll_bytes`; reset before each call).
    call_bytes: AtomicUsize,
    /// Bytes stored since the supervisor last looked (for `limits.bytes_per_minute`).
    bytes_new: AtomicUsize,
    /// What the limits cut or refused since the supervisor last looked.
    tally: std::sync::Mutex<Tally>,
}

impl Emitter {
    /// An emitter for service `plugin` that wakes the agent through `inbox_ready`.
    pub fn new(plugin: &str, db: Db, inbox_ready: Arc<Notify>) -> Self {
        Self {
            plugin: plugin.into(),
            db,
            inbox_ready,
            emitted: AtomicUsize::new(0),
            emitted_new: AtomicUsize::new(0),
            call_bytes: AtomicUsize::new(0),
            bytes_new: AtomicUsize::new(0),
            tally: Default::default(),
        }
    }

    /// Log, audit and count what the limits cut or refused since the last
    /// report, once for all of it; returns the bytes stored since then.
    fn report(&self, sandbox: &PluginSandbox) -> usize {
        let tally = std::mem::take(&mut *self.tally.lock().unwrap_or_else(|p| p.into_inner()));
        tally.report(sandbox, "emit");
        self.bytes_new.swap(0, Ordering::Relaxed)
    }
}

impl crate::host::Emit for Emitter {
    fn begin_call(&self) {
        self.emitted.store(0, Ordering::Relaxed);
        self.call_bytes.store(0, Ordering::Relaxed);
    }

    /// Store one emitted message (the host side of `emitter.emit`). Its text
    /// fields pass the service's secret scanner first, as a channel's do. A
    /// message whose id was stored before is accepted and not stored again.
    fn emit(&self, m: Message, sandbox: &PluginSandbox) -> Result<(), String> {
        if self.emitted.fetch_add(1, Ordering::Relaxed) >= MAX_EMITS_PER_CALL {
            return Err(format!("more than {MAX_EMITS_PER_CALL} messages in one call; emit the rest in the next tick"));
        }
        let inbound = {
            let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            let Some(inbound) = to_inbound(m, sandbox, &mut tally) else {
                return Err(format!(
                    "a message needs a non-empty id and conversation, and an id, conversation, sender and thread \
                     of at most {} bytes",
                    crate::limits::MAX_ID
                ));
            };
            let size = inbound_bytes(&inbound);
            let limit = sandbox.grants().limits.max_poll_bytes;
            if self.call_bytes.fetch_add(size, Ordering::Relaxed) + size > limit {
                self.call_bytes.fetch_sub(size, Ordering::Relaxed);
                tally.over_batch += 1;
                return Err(format!(
                    "more than {limit} bytes of messages in one call (limits.max_poll_bytes); emit the rest in the next tick"
                ));
            }
            inbound
        };
        match self.db.insert_inbox(&self.plugin, &inbound, &format!("service:{}", self.plugin)) {
            Ok(new) => {
                if new {
                    self.emitted_new.fetch_add(1, Ordering::Relaxed);
                    self.bytes_new.fetch_add(inbound_bytes(&inbound), Ordering::Relaxed);
                    self.inbox_ready.notify_one();
                }
                tracing::debug!(plugin = %self.plugin, id = %inbound.channel_msg_id, new, "emit");
                Ok(())
            }
            Err(e) => {
                tracing::error!(plugin = %self.plugin, "cannot store an emitted message: {e:#}");
                Err("the host could not store the message; try again later".into())
            }
        }
    }
}

/// A service plugin compiled, linked and ready to instantiate.
pub struct ServicePlugin {
    /// Its grants from the policy.
    pub grants: Arc<PluginGrants>,
    sandbox: Arc<PluginSandbox>,
    pre: ServicePre<PluginCtx>,
    id: PluginIdentity,
    engine: Engine,
    /// What the file declared.
    pub info: ComponentInfo,
}

impl ServicePlugin {
    /// Read, validate, compile and link a service plugin, with the same
    /// checks and sandbox as a channel (manifest ∩ policy, secrets resolved now).
    pub fn load(engine: &Engine, linker: &Linker<PluginCtx>, grants: PluginGrants, db: Db, workspace: &Path) -> Result<Self> {
        // Services run from 0.1.2 on: no host ran them before, and 0.1.0/0.1.1
        // messages (emitted through their own `emitter`) lack 0.1.2's fields.
        if let Some(file) = &grants.path
            && let Ok(bytes) = std::fs::read(file)
            && let Ok(info) = crate::plugin::inspect(&bytes, &file.display().to_string())
            && let Some(v @ ("0.1.0" | "0.1.1")) = info.wit_version.as_deref()
        {
            anyhow::bail!(
                "{} is a service built against kata:plugin@{v}; services run from kata:plugin@{} on: \
                 rebuild it against the current WIT (`kata plugin new NAME --kind service` shows the layout)",
                file.display(),
                crate::host::latest::VERSION
            );
        }
        let Prepared { grants, sandbox, pre, id, info, path } =
            prepare(engine, linker, grants, crate::sinks::for_db(&db), workspace, "service")?;
        let pre = ServicePre::new(pre).map_err(|e| LoadError::NotAService { path, found: format!("incompatible exports ({e:#})") })?;
        Ok(Self { grants, sandbox, pre, id, engine: engine.clone(), info })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.grants.name
    }

    /// A fresh instance whose `emit` calls go to `emitter`.
    pub async fn instantiate(&self, emitter: Arc<Emitter>) -> Result<ServiceInstance, CallError> {
        let gate = NetworkGate::new(self.sandbox.clone());
        let mut store = new_store(&self.engine, self.id.clone(), gate, &self.grants);
        store.data_mut().emitter = Some(emitter);
        let limits = self.grants.limits;
        let meter = arm(&mut store, &limits);
        let bindings = guarded(&meter, &limits, self.pre.instantiate_async(&mut store)).await?;
        Ok(ServiceInstance(Instance::new(store, bindings, limits)))
    }
}

/// One live instance of a service. After a trap or timeout it refuses
/// further calls; the supervisor makes a new one.
pub struct ServiceInstance(Instance<ServiceBindings>);

impl ServiceInstance {
    /// An error text from the plugin, with secret values redacted (it goes to the log).
    fn redact(&self, text: String) -> String {
        self.0.sandbox().redact(&text, "error").into_owned()
    }

    /// `start()`: Ok(Err(text)) when the service refuses to start.
    pub async fn start(&mut self) -> Result<Result<(), String>, CallError> {
        let (g, s, guard) = self.0.begin()?;
        let r = guard.run(g.kata_plugin_service().call_start(s)).await;
        Ok(self.0.end(r)?.map_err(|t| self.redact(t)))
    }

    /// `tick()`: Ok(Ok(ms until the next tick)) or Ok(Err(text)).
    pub async fn tick(&mut self) -> Result<Result<u64, String>, CallError> {
        let (g, s, guard) = self.0.begin()?;
        let r = guard.run(g.kata_plugin_service().call_tick(s)).await;
        Ok(self.0.end(r)?.map_err(|t| self.redact(t)))
    }

    /// `stop()`, best effort.
    pub async fn stop(&mut self) {
        if let Ok((g, s, guard)) = self.0.begin() {
            let r = guard.run(g.kata_plugin_service().call_stop(s)).await;
            let _ = self.0.end(r);
        }
    }
}

/// Check the services' `deliver_to` against the channels that run: a reply
/// must have a channel to go out through. No `deliver_to` is allowed (the
/// agent still sees the events) but warned about.
pub fn check_targets(services: &[Arc<ServicePlugin>], channels: &[&str], policy_path: &Path) -> Result<()> {
    for s in services {
        let name = s.name();
        match &s.grants.deliver_to {
            None => tracing::warn!(
                plugin = %name,
                "service {name} has no `deliver_to`: the agent gets its messages but its replies go nowhere; \
                 add `deliver_to = \"CHANNEL:CONVERSATION\"` under [plugins.{name}] in {}",
                policy_path.display()
            ),
            Some(t) if !channels.contains(&t.plugin.as_str()) => anyhow::bail!(
                "service {name}: `deliver_to = \"{t}\"` in {} names {}, which is not a channel plugin that runs \
                 (it is disabled, not installed, or not a channel); name a running channel, e.g. \"telegram:123456\"",
                policy_path.display(),
                t.plugin
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Report a failed start or call to [`Health`] and return how long to wait:
/// the backoff, or the breaker's cooldown if this failure opened it. Traps and
/// limit hits are the plugin's fault (they count towards the breaker); a tick
/// that returns an error only backs off, like a channel's network error.
fn failed(health: &Health, name: &str, error: &str, fault: Fault, backoff: &mut backon::ExponentialBackoff) -> Duration {
    let delay = backoff.next().unwrap_or(Duration::from_secs(300));
    health.failure_delay(name, &format!("service {name}"), error, fault, delay)
}

/// Run one service until shutdown: start, tick on the plugin's schedule,
/// restart after traps with backoff (and the circuit breaker), stop at the
/// end. Its state and errors are reported to `health` (`kata status`).
pub async fn run(plugin: Arc<ServicePlugin>, db: Db, health: Arc<Health>, inbox_ready: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let name = plugin.name().to_string();
    let emitter = Arc::new(Emitter::new(&name, db, inbox_ready));
    let mut backoff = backoff();
    let mut instance: Option<ServiceInstance> = None;
    let mut started_once = false;
    let mut budget = InboundBudget::new(plugin.grants.limits.messages_per_minute, plugin.grants.limits.bytes_per_minute);
    loop {
        if *shutdown.borrow() {
            break;
        }
        if instance.is_none() {
            let hold = health.breaker_wait(&name);
            if !hold.is_zero() {
                sleep_or_shutdown(hold, &mut shutdown).await;
                continue;
            }
            health.start_attempt(&name, started_once);
            started_once = true;
            let started = match plugin.instantiate(emitter.clone()).await {
                Ok(mut i) => i.start().await.map(|r| r.map(|()| i)),
                Err(e) => Err(e),
            };
            match started {
                Ok(Ok(i)) => {
                    tracing::info!(plugin = %name, "service started");
                    instance = Some(i);
                }
                Ok(Err(text)) => {
                    tracing::error!(
                        plugin = %name,
                        "service {name} refused to start: {text}; it stays stopped until kata restarts or reloads (check [plugins.{name}] in kata.toml)"
                    );
                    health.failure(&name, &format!("refused to start: {text}"), Fault::External);
                    let _ = shutdown.wait_for(|stop| *stop).await;
                    break;
                }
                Err(e) => {
                    let d = failed(&health, &name, &e.to_string(), Fault::Plugin, &mut backoff);
                    tracing::warn!(plugin = %name, "service {name} failed to start: {e}; restarting in {d:?}");
                    if sleep_or_shutdown(d, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let Some(inst) = instance.as_mut() else { continue };
        let result = tokio::select! {
            r = inst.tick() => r,
            // Abandon a tick in flight on shutdown: what it emitted so far is
            // stored (each emit commits on its own).
            _ = shutdown.changed() => { instance = None; break; }
        };
        // What the limits cut or refused in this tick, however it ended.
        let bytes = emitter.report(&plugin.sandbox);
        let delay = match result {
            Ok(Ok(ms)) => {
                backoff = self::backoff();
                health.success(&name);
                let new = emitter.emitted_new.swap(0, Ordering::Relaxed);
                health.polled(&name, new);
                // The same flood limits as a channel's: over budget, the next tick waits.
                let pause = budget.take(new, bytes, std::time::Instant::now());
                note_pause(&name, &plugin.grants.limits, pause, "ticks");
                Duration::from_millis(ms).max(MIN_TICK).max(pause.0)
            }
            Ok(Err(text)) => {
                let d = failed(&health, &name, &format!("tick failed: {text}"), Fault::External, &mut backoff);
                tracing::warn!(plugin = %name, "service {name}: tick failed: {text}; next tick in {d:?}");
                d
            }
            Err(e) => {
                instance = None;
                let d = failed(&health, &name, &e.to_string(), Fault::Plugin, &mut backoff);
                tracing::warn!(plugin = %name, "service {name}: {e}; restarting in {d:?}");
                d
            }
        };
        if sleep_or_shutdown(delay, &mut shutdown).await {
            break;
        }
    }
    if let Some(mut i) = instance {
        i.stop().await;
    }
    health.stopped(&name);
    tracing::debug!(plugin = %name, "service stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Emit;
    use crate::host::latest::ConversationKind;

    fn message(id: &str, text: &str) -> Message {
        Message {
            id: id.into(),
            conversation: "feed".into(),
            thread: None,
            sender: "svc".into(),
            sender_name: None,
            text: text.into(),
            attachments: vec![],
            timestamp_ms: 1,
            raw: None,
            conversation_kind: ConversationKind::Direct,
            mentioned: false,
        }
    }

    #[test]
    fn emitted_messages_are_redacted_deduplicated_marked_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("kata.db")).expect("db");
        let policy = crate::policy::Policy::parse("[plugins.svc]\n", Path::new("kata.toml"), Path::new("/")).expect("policy");
        let grants = Arc::new(policy.plugins["svc"].clone());
        let secrets = [("token".to_string(), "s3cr3t-value-123456".to_string())].into_iter().collect();
        let sandbox = PluginSandbox::new(grants, secrets, crate::sinks::auditor(&db, "svc"));
        let ready = Arc::new(Notify::new());
        let e = Emitter::new("svc", db.clone(), ready);

        e.emit(message("a", "the token is s3cr3t-value-123456"), &sandbox).expect("emit");
        e.emit(message("a", "again"), &sandbox).expect("a repeated id is accepted");
        assert!(e.emit(message("", "no id"), &sandbox).expect_err("no id").contains("non-empty id"));
        let rows = db.pending_inbox(10).expect("inbox");
        assert_eq!(rows.len(), 1, "stored once");
        assert_eq!(rows[0].msg.text, "the token is [REDACTED:token]");
        assert_eq!((rows[0].plugin.as_str(), rows[0].origin.as_deref()), ("svc", Some("service:svc")));
        assert_eq!(e.emitted_new.load(Ordering::Relaxed), 1);

        // One call may emit at most MAX_EMITS_PER_CALL messages.
        e.emitted.store(0, Ordering::Relaxed);
        for i in 0..MAX_EMITS_PER_CALL {
            e.emit(message(&format!("m{i}"), "x"), &sandbox).expect("within the cap");
        }
        let err = e.emit(message("over", "x"), &sandbox).expect_err("over the cap");
        assert!(err.contains("next tick"), "{err}");
    }

    #[test]
    fn emitted_messages_are_bounded_in_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("kata.db")).expect("db");
        let policy = crate::policy::Policy::parse(
            "[plugins.svc-big]\nlimits = { max_message = \"1KiB\", max_poll_bytes = \"4KiB\" }\n",
            Path::new("kata.toml"),
            Path::new("/"),
        )
        .expect("policy");
        let grants = Arc::new(policy.plugins["svc-big"].clone());
        let sandbox = PluginSandbox::new(grants, Default::default(), crate::sinks::auditor(&db, "svc-big"));
        let e = Emitter::new("svc-big", db.clone(), Arc::new(Notify::new()));
        // A huge text is cut, an over-long id refused, and a call over max_poll_bytes refused.
        e.emit(message("big", &"x".repeat(10 << 20)), &sandbox).expect("cut, stored");
        assert!(e.emit(message(&"i".repeat(2000), "hi"), &sandbox).expect_err("long id").contains("at most 1024 bytes"));
        let mut refused = 0;
        for i in 0..10 {
            if let Err(err) = e.emit(message(&format!("m{i}"), &"y".repeat(900)), &sandbox) {
                assert!(err.contains("limits.max_poll_bytes"), "{err}");
                refused += 1;
            }
        }
        assert!(refused >= 6, "{refused}");
        let rows = db.pending_inbox(100).expect("inbox");
        assert!(rows.iter().all(|r| r.msg.text.len() <= 1024), "nothing over max_message is stored");
        assert!(rows.iter().map(|r| r.msg.text.len()).sum::<usize>() <= 4096);
        assert!(e.report(&sandbox) <= 4096);
        let hits = crate::limits::hits("svc-big");
        assert_eq!((hits["max_message"], hits["max_id"], hits["max_poll_bytes"]), (1, 1, refused), "{hits:?}");
        let audit =
            db.audit_query(&crate::store::AuditQuery { plugin: Some("svc-big".into()), since_ms: None, limit: 100 }).expect("audit");
        assert!(audit.iter().any(|r| r.kind == "limit" && r.detail.as_deref().unwrap_or("").contains("max_message")), "{audit:?}");
    }
}
