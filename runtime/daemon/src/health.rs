//! Per-plugin health as the daemon sees it: what each plugin is doing, its
//! last error, counters, and the circuit breaker that stops a plugin that
//! keeps failing.
//!
//! The channel loops report into one shared [`Health`]; `kata status` reads it
//! through the control socket. Only failures that are the plugin's own fault
//! count towards the breaker — a trap, a limit hit (CPU, memory, timeout), an
//! instance that cannot start, a `fatal` error. A network outage or a rate
//! limit only backs off: the plugin is fine, the world is not.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::store::now_ms;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub threshold: u32,
    /// How long the first opening lasts; each re-opening doubles it.
    pub cooldown: Duration,
    /// The longest an opening lasts.
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { threshold: 5, cooldown: Duration::from_secs(60), max_cooldown: Duration::from_secs(3600) }
    }
}

/// What a plugin is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginState {
    /// Loaded; its loops have not started an instance yet.
    Starting,
    /// Its last call succeeded.
    Running,
    /// Its last call failed; it retries after a backoff.
    BackingOff,
    /// It failed too often in a row; the daemon leaves it alone until the
    /// breaker's cooldown ends, then tries once more.
    BreakerOpen,
    /// Its loops have stopped (shutdown or reload).
    Stopped,
    /// It was not loaded: its stored code no longer matches the hash it was
    /// installed under (see `last_error`). The other plugins run.
    Refused,
    /// Installed, but `enabled = false` in kata.toml: not run.
    Disabled,
    /// kata.toml has its table but no `path`: grants waiting for
    /// `kata plugin add` to install the code.
    NotInstalled,
}

/// Where a channel stands, as `kata status` shows it: one word a person can
/// act on, derived from [`PluginHealth`] by [`PluginHealth::channel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelState {
    /// kata.toml names it but its code is not installed (no `path`).
    NotInstalled,
    /// The code is installed, but kata.toml does not run it (`enabled = false`).
    Installed,
    /// Loaded and started, not connected (yet): the first poll or stream is
    /// under way, or its loops stopped.
    Configured,
    /// Its ingress works: the last poll succeeded, or its stream is open.
    Connected,
    /// Its last attempt failed; `reason` says how.
    Failing,
}

/// A channel's [`ChannelState`] and, when it is failing or not running, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelStatus {
    /// The state.
    pub state: ChannelState,
    /// Why: the kind of the last error (`auth-failed`, `rate-limited`,
    /// `network`, `invalid-config`, `unsupported`, `fatal`, `trap`,
    /// `timeout`), `breaker-open`, `refused`, `disabled`, `not-installed`
    /// or `stopped`; none when connected or starting.
    pub reason: Option<String>,
}

/// The breaker's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Breaker {
    /// Calls go through.
    Closed,
    /// No calls until `until_ms`; `openings` counts openings since the last success.
    Open {
        /// When the next attempt may be made (ms since the Unix epoch).
        until_ms: u64,
        /// Openings in a row, without a success between them.
        openings: u32,
    },
}

/// One plugin's health, as `kata status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginHealth {
    /// What it is doing.
    pub state: PluginState,
    /// The circuit breaker.
    pub breaker: Breaker,
    /// The most recent error, already redacted of secrets.
    pub last_error: Option<String>,
    /// When that error happened (ms since the Unix epoch).
    pub last_error_ms: Option<u64>,
    /// What kind of error `last_error` was: `auth-failed`, `rate-limited`,
    /// `network`, `invalid-config`, `unsupported`, `fatal`, `trap`, `timeout`.
    pub last_error_kind: Option<String>,
    /// Whether its ingress is up: the last poll succeeded or its stream is open.
    pub connected: bool,
    /// Failures in a row that count towards the breaker.
    pub consecutive_failures: u32,
    /// Instances started after the first one (restarts after failures).
    pub restarts: u64,
    /// Successful polls and frames handled.
    pub polls: u64,
    /// Messages stored in the inbox.
    pub received: u64,
    /// Replies delivered.
    pub sent: u64,
    /// Delivery attempts that failed.
    pub send_failures: u64,
    /// Every limit the plugin hit, by its `limits.*` name (or `max_id`,
    /// `max_messages_per_poll`, `max_state_value`), and how often: messages
    /// cut or refused, log lines suppressed, calls stopped, requests refused.
    pub limits_hit: BTreeMap<String, u64>,
    /// What the channel can do besides sending text (`describe().features`:
    /// `typing`, `edit`, `reactions`, `buttons`, `attachments`), once an
    /// instance has said; None before (and for components older than 0.1.3).
    pub features: Option<Vec<String>>,
}

impl Default for PluginHealth {
    fn default() -> Self {
        Self {
            state: PluginState::Starting,
            breaker: Breaker::Closed,
            last_error: None,
            last_error_ms: None,
            last_error_kind: None,
            connected: false,
            consecutive_failures: 0,
            restarts: 0,
            polls: 0,
            received: 0,
            sent: 0,
            send_failures: 0,
            limits_hit: BTreeMap::new(),
            features: None,
        }
    }
}

impl PluginHealth {
    /// Where the channel stands (see [`ChannelState`]).
    pub fn channel(&self) -> ChannelStatus {
        let s = |state, reason: Option<&str>| ChannelStatus { state, reason: reason.map(String::from) };
        match self.state {
            PluginState::NotInstalled => s(ChannelState::NotInstalled, Some("not-installed")),
            PluginState::Disabled => s(ChannelState::Installed, Some("disabled")),
            PluginState::Refused => s(ChannelState::Failing, Some("refused")),
            PluginState::BreakerOpen => s(ChannelState::Failing, Some("breaker-open")),
            PluginState::BackingOff => s(ChannelState::Failing, Some(self.last_error_kind.as_deref().unwrap_or("error"))),
            PluginState::Stopped => s(ChannelState::Configured, Some("stopped")),
            PluginState::Starting => s(ChannelState::Configured, None),
            PluginState::Running if self.connected => s(ChannelState::Connected, None),
            PluginState::Running => s(ChannelState::Configured, None),
        }
    }
}

/// What a failure means for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The plugin's own fault (trap, limit, cannot start, fatal): counts.
    Plugin,
    /// The world's (network, rate limit, auth, bad config): backs off only.
    External,
}

/// The health of every plugin of the daemon.
#[derive(Debug, Default)]
pub struct Health {
    config: BreakerConfig,
    plugins: Mutex<BTreeMap<String, PluginHealth>>,
}

impl Health {
    /// An empty registry with this breaker configuration.
    pub fn new(config: BreakerConfig) -> Self {
        Self { config, plugins: Mutex::new(BTreeMap::new()) }
    }

    fn with<R>(&self, plugin: &str, f: impl FnOnce(&mut PluginHealth) -> R) -> R {
        let mut map = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(plugin.to_string()).or_default())
    }

    /// Start tracking a plugin (or reset its state after a reload), keeping
    /// its counters.
    pub fn register(&self, plugin: &str) {
        self.with(plugin, |h| {
            h.state = PluginState::Starting;
            h.connected = false;
        });
    }

    /// Forget plugins that are no longer configured.
    pub fn retain(&self, names: &[String]) {
        let mut map = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|k, _| names.contains(k));
    }

    /// A snapshot of every plugin's health, by name.
    pub fn snapshot(&self) -> BTreeMap<String, PluginHealth> {
        let mut all = self.plugins.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (name, h) in &mut all {
            h.limits_hit = crate::limits::hits(name);
        }
        all
    }

    /// One plugin's health.
    pub fn get(&self, plugin: &str) -> Option<PluginHealth> {
        let mut h = self.plugins.lock().unwrap_or_else(|p| p.into_inner()).get(plugin).cloned()?;
        h.limits_hit = crate::limits::hits(plugin);
        Some(h)
    }

    /// A loop is about to start an instance (instantiate it, and describe or
    /// connect it); `restart` when an instance of this loop ran or tried to
    /// start before. A start that fails counts as much as one that succeeds:
    /// a plugin that cannot even start shows its restarts in `kata status`.
    pub fn start_attempt(&self, plugin: &str, restart: bool) {
        if restart {
            self.with(plugin, |h| h.restarts += 1);
        }
    }

    /// A call succeeded: the plugin runs, the breaker closes.
    pub fn success(&self, plugin: &str) {
        self.with(plugin, |h| {
            h.state = PluginState::Running;
            h.consecutive_failures = 0;
            h.breaker = Breaker::Closed;
        });
    }

    /// A poll stored `new` messages.
    pub fn polled(&self, plugin: &str, new: usize) {
        self.with(plugin, |h| {
            h.polls += 1;
            h.received += new as u64;
        });
    }

    /// A reply was delivered.
    pub fn sent(&self, plugin: &str) {
        self.with(plugin, |h| h.sent += 1);
    }

    /// A delivery attempt failed.
    pub fn send_failed(&self, plugin: &str) {
        self.with(plugin, |h| h.send_failures += 1);
    }

    /// A call or start failed. Returns how long the breaker now keeps the
    /// plugin stopped, if this failure opened it.
    pub fn failure(&self, plugin: &str, error: &str, fault: Fault) -> Option<Duration> {
        let cfg = self.config;
        self.with(plugin, |h| {
            h.last_error = Some(error.to_string());
            h.last_error_ms = Some(now_ms());
            h.state = PluginState::BackingOff;
            if fault == Fault::External {
                return None;
            }
            h.consecutive_failures += 1;
            if h.consecutive_failures < cfg.threshold.max(1) {
                return None;
            }
            let openings = match h.breaker {
                Breaker::Open { openings, .. } => openings + 1,
                Breaker::Closed => 1,
            };
            let factor = 2u32.saturating_pow(openings.saturating_sub(1).min(16));
            let cooldown = cfg.cooldown.saturating_mul(factor).min(cfg.max_cooldown);
            h.breaker = Breaker::Open { until_ms: now_ms() + cooldown.as_millis() as u64, openings };
            h.state = PluginState::BreakerOpen;
            // The next failure after the cooldown re-opens at once (half-open).
            h.consecutive_failures = cfg.threshold.max(1) - 1;
            Some(cooldown)
        })
    }

    /// Report a failure (as [`Self::failure`]) that is to be followed by
    /// `delay`, and return how long to wait: `delay`, or the breaker's
    /// cooldown if this failure opened it — which is logged once, naming
    /// the plugin as `shown_as` ("NAME", "service NAME").
    pub fn failure_delay(&self, plugin: &str, shown_as: &str, error: &str, fault: Fault, delay: Duration) -> Duration {
        match self.failure(plugin, error, fault) {
            Some(open) => {
                tracing::error!(
                    plugin = %plugin,
                    "circuit breaker open: {shown_as} keeps failing ({error}); leaving it alone for {open:?} \
                     (`kata status` shows it; fix the plugin or its limits, then `kata reload`)"
                );
                open.max(delay)
            }
            None => delay,
        }
    }

    /// How long the breaker still keeps `plugin` stopped (zero when closed or
    /// the cooldown is over).
    pub fn breaker_wait(&self, plugin: &str) -> Duration {
        self.with(plugin, |h| match h.breaker {
            Breaker::Open { until_ms, .. } => Duration::from_millis(until_ms.saturating_sub(now_ms())),
            Breaker::Closed => Duration::ZERO,
        })
    }

    /// The plugin was refused at load (`error` says why): it does not run
    /// until a reload finds it sound.
    pub fn refused(&self, plugin: &str, error: &str) {
        self.with(plugin, |h| {
            h.state = PluginState::Refused;
            h.last_error = Some(error.to_string());
            h.last_error_ms = Some(now_ms());
        });
    }

    /// The plugin's loops stopped.
    pub fn stopped(&self, plugin: &str) {
        self.with(plugin, |h| {
            h.state = PluginState::Stopped;
            h.connected = false;
        });
    }

    /// Its ingress came up (`true`: a poll succeeded, a stream opened) or
    /// went down. Coming up ends a backoff (the plugin runs), but leaves the
    /// breaker's count alone: a stream that opens and then makes the plugin
    /// trap on every frame still opens the breaker.
    pub fn connected(&self, plugin: &str, up: bool) {
        self.with(plugin, |h| {
            h.connected = up;
            if up && matches!(h.state, PluginState::Starting | PluginState::BackingOff) {
                h.state = PluginState::Running;
            }
        });
    }

    /// The features the channel lists (see [`PluginHealth::features`]).
    pub fn features(&self, plugin: &str, features: Vec<String>) {
        self.with(plugin, |h| h.features = Some(features));
    }

    /// The kind of the error just reported with [`Self::failure`].
    pub fn error_kind(&self, plugin: &str, kind: &str) {
        self.with(plugin, |h| h.last_error_kind = Some(kind.to_string()));
    }

    /// A plugin of kata.toml the daemon does not run: `Disabled` or
    /// `NotInstalled`.
    pub fn inactive(&self, plugin: &str, state: PluginState) {
        self.with(plugin, |h| {
            h.state = state;
            h.connected = false;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(BreakerConfig { threshold: 3, cooldown: Duration::from_secs(10), max_cooldown: Duration::from_secs(25) })
    }

    #[test]
    fn breaker_opens_after_the_threshold_and_doubles_up_to_the_cap() {
        let h = health();
        assert_eq!(h.failure("p", "trap", Fault::Plugin), None);
        assert_eq!(h.failure("p", "trap", Fault::Plugin), None);
        assert_eq!(h.failure("p", "trap", Fault::Plugin), Some(Duration::from_secs(10)));
        let s = h.get("p").expect("tracked");
        assert_eq!(s.state, PluginState::BreakerOpen);
        assert!(matches!(s.breaker, Breaker::Open { openings: 1, .. }));
        assert!(h.breaker_wait("p") > Duration::from_secs(9));
        // Half-open: the first failure after the cooldown re-opens, longer.
        assert_eq!(h.failure("p", "trap", Fault::Plugin), Some(Duration::from_secs(20)));
        assert_eq!(h.failure("p", "trap", Fault::Plugin), Some(Duration::from_secs(25)));
        // One success closes it and starts counting afresh.
        h.success("p");
        let s = h.get("p").expect("tracked");
        assert_eq!((s.state, s.breaker.clone(), s.consecutive_failures), (PluginState::Running, Breaker::Closed, 0));
        assert_eq!(h.breaker_wait("p"), Duration::ZERO);
        assert_eq!(h.failure("p", "trap", Fault::Plugin), None);
    }

    #[test]
    fn channel_states_follow_health() {
        let h = health();
        let state = |p: &str| h.get(p).expect("tracked").channel();
        h.register("c");
        assert_eq!(state("c"), ChannelStatus { state: ChannelState::Configured, reason: None });
        // A send succeeding is not a connection; a poll succeeding is.
        h.success("c");
        assert_eq!(state("c").state, ChannelState::Configured);
        h.connected("c", true);
        assert_eq!(state("c").state, ChannelState::Connected);
        h.failure("c", "authentication failed: bad token", Fault::External);
        h.error_kind("c", "auth-failed");
        assert_eq!(state("c"), ChannelStatus { state: ChannelState::Failing, reason: Some("auth-failed".into()) });
        for _ in 0..3 {
            h.failure("t", "trap", Fault::Plugin);
        }
        assert_eq!(state("t").reason.as_deref(), Some("breaker-open"));
        h.inactive("off", PluginState::Disabled);
        assert_eq!(state("off"), ChannelStatus { state: ChannelState::Installed, reason: Some("disabled".into()) });
        h.inactive("new", PluginState::NotInstalled);
        assert_eq!(state("new").state, ChannelState::NotInstalled);
        h.refused("r", "changed after it was installed");
        assert_eq!(state("r").reason.as_deref(), Some("refused"));
        h.stopped("c");
        assert_eq!(state("c"), ChannelStatus { state: ChannelState::Configured, reason: Some("stopped".into()) });
        let json = serde_json::to_value(state("off")).expect("json");
        assert_eq!(json, serde_json::json!({"state": "installed", "reason": "disabled"}));
    }

    #[test]
    fn external_failures_back_off_without_opening_the_breaker() {
        let h = health();
        for _ in 0..10 {
            assert_eq!(h.failure("p", "network down", Fault::External), None);
        }
        let s = h.get("p").expect("tracked");
        assert_eq!((s.state, s.breaker, s.last_error.as_deref()), (PluginState::BackingOff, Breaker::Closed, Some("network down")));
    }
}
