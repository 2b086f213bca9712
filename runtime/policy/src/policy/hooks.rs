//! Hooks and the scheduler grant: `[hooks] order`, `[plugins.NAME] hook =
//! { ... }` and `[plugins.NAME] scheduler = { ... }`.
//!
//! ```toml
//! [hooks]
//! order = ["redact"]          # called in this order at every point they list
//!
//! [plugins.redact]
//! path = "plugins/redact.wasm"
//! hook = { budget = "50ms", on_failure = "hold" }
//!
//! [plugins.reminders]
//! path = "plugins/reminders.wasm"
//! scheduler = { max_tasks = 20 }
//! ```
//!
//! A hook that fails (an error, a trap, its budget spent) either lets the
//! message through unchanged (`on_failure = "pass"`, fail-open) or holds it
//! back (`"hold"`, fail-closed: kept, and tried again at `kata reload`). The
//! running of hooks is kata-daemon's (`hooks`); this module only parses and
//! validates.

use std::time::Duration;

use serde::Deserialize;

use super::parse_duration;

/// The budget of a hook call when `hook = { budget }` is not given.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(100);
/// The longest budget a hook may have: it runs on the message path.
pub const MAX_BUDGET: Duration = Duration::from_secs(10);
/// `max_tasks` when `scheduler = {}` does not say.
pub const DEFAULT_MAX_TASKS: u32 = 20;
/// The most tasks one plugin may be granted.
pub const MAX_MAX_TASKS: u32 = 10_000;

/// `[hooks]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// The hook plugins, in the order they are called (each a
    /// `[plugins.NAME]` whose component exports `kata:plugin/hooks`).
    #[serde(default)]
    pub order: Vec<String>,
}

/// `[plugins.NAME] hook = { ... }` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookEntry {
    /// How long one call may take, e.g. `"50ms"` (default 100ms).
    #[serde(default)]
    pub budget: Option<String>,
    /// `"pass"` (fail-open) or `"hold"` (fail-closed, the default).
    #[serde(default)]
    pub on_failure: Option<String>,
}

/// What happens to a message when its hook fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Fail-open: the message goes on unchanged (the failure is audited).
    Pass,
    /// Fail-closed: the message is held back, kept, and tried again at
    /// `kata reload` (after the hook is fixed).
    Hold,
}

impl OnFailure {
    /// The name written in kata.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Pass => "pass",
            OnFailure::Hold => "hold",
        }
    }
}

/// A hook's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSettings {
    /// The time one call may take (its timeout).
    pub budget: Duration,
    /// What a failure does.
    pub on_failure: OnFailure,
    /// Its place in `[hooks] order` (0 first); None: not in the order, so
    /// never called.
    pub position: Option<usize>,
    /// Where it is configured (`kata.toml:LINE`), for audit rows.
    pub at: String,
}

impl HookSettings {
    /// The settings in one line, for `kata policy explain` and audit rows.
    pub fn describe(&self) -> String {
        format!("hook = {{ budget = \"{}ms\", on_failure = \"{}\" }}", self.budget.as_millis(), self.on_failure.as_str())
    }
}

/// Resolve `hook = { ... }` (None: the table is absent, defaults apply);
/// an error names the key it is about.
pub fn resolve_hook(entry: Option<&HookEntry>, position: Option<usize>, at: String) -> Result<HookSettings, (&'static str, String)> {
    let default = HookEntry::default();
    let entry = entry.unwrap_or(&default);
    let budget = match &entry.budget {
        None => DEFAULT_BUDGET,
        Some(s) => parse_duration(s).map_err(|e| ("budget", format!("budget {s:?}: {e}")))?,
    };
    if budget.is_zero() || budget > MAX_BUDGET {
        return Err((
            "budget",
            format!(
                "a hook's budget must be more than zero and at most {}s (it runs on the message path), e.g. budget = \"50ms\"",
                MAX_BUDGET.as_secs()
            ),
        ));
    }
    let on_failure = match entry.on_failure.as_deref().map(str::trim) {
        None | Some("hold") => OnFailure::Hold,
        Some("pass") => OnFailure::Pass,
        Some(other) => {
            return Err((
                "on_failure",
                format!(
                    "unknown on_failure {other:?}; use \"pass\" (a failing hook lets the message through unchanged) or \"hold\" \
                     (the message is held back until the hook works, then `kata reload`)"
                ),
            ));
        }
    };
    Ok(HookSettings { budget, on_failure, position, at })
}

/// `[plugins.NAME] scheduler = { ... }` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerEntry {
    /// How many tasks the plugin may have scheduled at once (default 20).
    #[serde(default)]
    pub max_tasks: Option<u32>,
}

/// The scheduler grant, resolved: the plugin may create tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerGrant {
    /// How many of its tasks may be scheduled at once.
    pub max_tasks: u32,
    /// Where it is granted (`kata.toml:LINE`), for audit rows.
    pub at: String,
}

impl SchedulerGrant {
    /// The grant in one line, for `kata policy explain` and audit rows.
    pub fn describe(&self) -> String {
        format!("scheduler = {{ max_tasks = {} }}", self.max_tasks)
    }
}

/// Resolve `scheduler = { ... }`; an error names the key it is about.
pub fn resolve_scheduler(entry: &SchedulerEntry, at: String) -> Result<SchedulerGrant, (&'static str, String)> {
    let max_tasks = entry.max_tasks.unwrap_or(DEFAULT_MAX_TASKS);
    if max_tasks == 0 || max_tasks > MAX_MAX_TASKS {
        return Err((
            "max_tasks",
            format!(
                "max_tasks must be between 1 and {MAX_MAX_TASKS} (to refuse the scheduler, leave `scheduler` out), e.g. max_tasks = 20"
            ),
        ));
    }
    Ok(SchedulerGrant { max_tasks, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(text: &str) -> Result<HookSettings, (&'static str, String)> {
        let e: HookEntry = toml::from_str(text).expect("toml");
        resolve_hook(Some(&e), Some(0), "kata.toml:3".into())
    }

    #[test]
    fn hook_defaults_and_values() {
        let d = resolve_hook(None, None, "x".into()).expect("defaults");
        assert_eq!((d.budget, d.on_failure), (DEFAULT_BUDGET, OnFailure::Hold), "fail-closed by default");
        let h = hook("budget = \"50ms\"\non_failure = \"pass\"").expect("ok");
        assert_eq!((h.budget, h.on_failure), (Duration::from_millis(50), OnFailure::Pass));
        assert_eq!(h.describe(), "hook = { budget = \"50ms\", on_failure = \"pass\" }");
    }

    #[test]
    fn hook_errors_name_their_key() {
        let (k, m) = hook("on_failure = \"drop\"").expect_err("bad");
        assert_eq!(k, "on_failure");
        assert!(m.contains("\"pass\"") && m.contains("\"hold\""), "{m}");
        let (k, m) = hook("budget = \"fast\"").expect_err("bad");
        assert_eq!(k, "budget");
        assert!(m.contains("fast"), "{m}");
        let (k, _) = hook("budget = \"1h\"").expect_err("too long");
        assert_eq!(k, "budget");
        assert!(toml::from_str::<HookEntry>("timeout = \"5s\"").is_err(), "unknown keys are refused");
    }

    #[test]
    fn scheduler_grant() {
        let g = resolve_scheduler(&SchedulerEntry::default(), "x".into()).expect("defaults");
        assert_eq!(g.max_tasks, DEFAULT_MAX_TASKS);
        let (k, m) = resolve_scheduler(&SchedulerEntry { max_tasks: Some(0) }, "x".into()).expect_err("zero");
        assert_eq!(k, "max_tasks");
        assert!(m.contains("leave `scheduler` out"), "{m}");
    }

    #[test]
    fn the_policy_checks_hooks_and_the_scheduler_with_located_errors() {
        use crate::policy::{Policy, Severity};
        let ws = std::env::temp_dir();
        let text = "[hooks]\norder = [\"redact\", \"nope\", \"redact\"]\n\n[plugins.redact]\nhook = { budget = \"50ms\", on_failure = \"open\" }\n\n[plugins.rem]\nscheduler = { max_tasks = 0 }\n\n[plugins.idle]\nhook = { on_failure = \"pass\" }\n";
        let a = Policy::analyze(text, std::path::Path::new("kata.toml"), &ws);
        let errors: Vec<String> = a.errors().map(|d| d.render()).collect();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors.iter().any(|e| e.contains("kata.toml:2") && e.contains("\"nope\"") && e.contains("no [plugins.nope]")),
            "{errors:#?}"
        );
        assert!(errors.iter().any(|e| e.contains("named twice")), "{errors:#?}");
        assert!(errors.iter().any(|e| e.contains("kata.toml:5") && e.contains("on_failure")), "{errors:#?}");
        assert!(errors.iter().any(|e| e.contains("kata.toml:8") && e.contains("max_tasks")), "{errors:#?}");
        let warnings: Vec<String> = a.diagnostics.iter().filter(|d| d.severity == Severity::Warning).map(|d| d.render()).collect();
        assert!(warnings.iter().any(|w| w.contains("kata.toml:11") && w.contains("never called")), "{warnings:#?}");

        let good = "[hooks]\norder = [\"redact\"]\n\n[plugins.redact]\n\n[plugins.rem]\nscheduler = {}\n";
        let p = Policy::parse(good, std::path::Path::new("kata.toml"), &ws).expect("valid");
        let h = p.plugins["redact"].hook.clone().expect("in the order: a hook with defaults");
        assert_eq!((h.position, h.on_failure, h.at.as_str()), (Some(0), OnFailure::Hold, "kata.toml:4"));
        assert_eq!(p.plugins["rem"].scheduler.as_ref().map(|g| g.max_tasks), Some(DEFAULT_MAX_TASKS));
        assert!(p.plugins["rem"].hook.is_none());
    }
}
