//! Scheduled tasks: a prompt posted to the agent on a schedule, as if the
//! owner had written it in a channel conversation, so the agent's answer goes
//! out through that channel (`kata task add "every 30m" "check the feeds"
//! --to telegram:123456`).
//!
//! A schedule is a cron expression (evaluated in UTC, so daylight-saving
//! changes never skip or repeat a run), an interval (`every 30m`), or a
//! one-shot time (`in 2h`, or RFC 3339). Every task's next run time is stored;
//! a run puts the prompt in the inbox (marked `origin = task:<id>`, which the
//! sender gate lets through without pairing) in the same transaction that
//! moves the next run time on, so a crash can neither lose nor repeat a run.
//! Runs missed while the daemon was down or the machine slept are caught up
//! once, not once per missed time, and the log says how many were skipped.
//!
//! Everything time-dependent takes `now` as an argument, so the tests drive
//! it with a fake clock.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::{Notify, watch};

use crate::store::{Db, now_ms};

/// The longest the loop sleeps before it looks at the table again: a task
/// added by `kata task add` (another process) is picked up within this, and
/// so is a wall-clock jump (the machine slept: monotonic sleeps do not count
/// suspended time, the wall clock does).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// The shortest interval `every` accepts.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Missed cron times counted for the catch-up message, at most.
const MAX_MISSED_COUNT: u64 = 100_000;

/// What a schedule accepts, for error messages.
const SCHEDULE_HELP: &str = "A schedule is a cron expression evaluated in UTC (5 fields: minute hour day-of-month month \
     day-of-week, e.g. \"0 9 * * MON-FRI\"; 6 fields with seconds first; or @hourly, @daily, @weekly…), an interval \
     (\"every 30m\"; units ms, s, m, h, d), or a one-shot time (\"in 2h\", or RFC 3339 such as \"2026-12-24T18:00:00Z\").";

/// When a task runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression, in UTC.
    Cron {
        /// As written.
        text: String,
        /// Parsed.
        cron: Box<croner::Cron>,
    },
    /// Every so often, keeping the phase of the first run.
    Every(Duration),
    /// Once, at this time (ms since the Unix epoch).
    At(u64),
}

impl Schedule {
    /// Parse a schedule as the user writes it. `now_ms` resolves `in 2h`.
    pub fn parse(text: &str, now_ms: u64) -> Result<Self, String> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("every ") {
            let d = crate::policy::parse_duration(rest).map_err(|e| format!("{e}. {SCHEDULE_HELP}"))?;
            if d < MIN_INTERVAL {
                return Err(format!("the interval in {t:?} is shorter than {MIN_INTERVAL:?}; give at least \"every 1s\"."));
            }
            return Ok(Self::Every(d));
        }
        if let Some(rest) = lower.strip_prefix("in ") {
            let d = crate::policy::parse_duration(rest).map_err(|e| format!("{e}. {SCHEDULE_HELP}"))?;
            return Ok(Self::At(now_ms.saturating_add(d.as_millis() as u64)));
        }
        let at = t.strip_prefix("at ").map(str::trim);
        if let Some(when) = at.or_else(|| looks_like_a_date(t).then_some(t)) {
            let dt = DateTime::parse_from_rfc3339(when).map_err(|e| {
                format!(
                    "{when:?} is not an RFC 3339 time ({e}); write it like \"2026-12-24T18:00:00Z\" or with an offset, \
                     \"2026-12-24T18:00:00+01:00\", or give a relative time such as \"in 2h\"."
                )
            })?;
            return u64::try_from(dt.timestamp_millis()).map(Self::At).map_err(|_| format!("{when:?} is before 1970; give a future time."));
        }
        let cron: croner::Cron = t.parse().map_err(|e: croner::errors::CronError| {
            format!("{t:?} is not a valid schedule: {}. {SCHEDULE_HELP}", e.to_string().trim_end_matches('.'))
        })?;
        // A pattern that names no real date (30 February) would never run.
        cron.find_next_occurrence(&utc(now_ms), false)
            .map_err(|e| format!("the cron expression {t:?} never matches a real time ({e}); check its day and month fields."))?;
        Ok(Self::Cron { text: t.split_whitespace().collect::<Vec<_>>().join(" "), cron: Box::new(cron) })
    }

    /// The canonical text stored in the database and shown by `kata task list`
    /// (it parses back to the same schedule).
    pub fn text(&self) -> String {
        match self {
            Self::Cron { text, .. } => text.clone(),
            Self::Every(d) => format!("every {}", duration_text(*d)),
            Self::At(ms) => format!("at {}", rfc3339(*ms)),
        }
    }

    /// The first run of a task added at `now`. A one-shot time that is not in
    /// the future is an error.
    pub fn first_run(&self, now: u64) -> Result<u64, String> {
        match self {
            Self::At(t) if *t <= now => Err(format!(
                "the one-shot time {} is not in the future (it is now {}); give a later time, or a relative one such as \"in 10m\".",
                rfc3339(*t),
                rfc3339(now)
            )),
            Self::At(t) => Ok(*t),
            Self::Every(d) => Ok(now.saturating_add(d.as_millis() as u64)),
            Self::Cron { cron, .. } => next_cron(cron, now).ok_or_else(|| "the cron expression never matches a real time".to_string()),
        }
    }

    /// After the run that was due at `due` fired at `now` (`due <= now`): the
    /// next run, strictly after `now` (None: the task is done), and how many
    /// scheduled times between the two were skipped. Skipped runs are caught up
    /// by the one run at `now`, never one by one.
    pub fn after_run(&self, due: u64, now: u64) -> (Option<u64>, u64) {
        let now = now.max(due);
        match self {
            Self::At(_) => (None, 0),
            Self::Every(d) => {
                let step = (d.as_millis() as u64).max(1);
                let skipped = (now - due) / step;
                // Keep the phase: the first multiple of the interval after now.
                (Some(due.saturating_add(step.saturating_mul(skipped + 1))), skipped)
            }
            Self::Cron { cron: c, .. } => {
                let mut skipped = 0;
                let mut t = due;
                while skipped < MAX_MISSED_COUNT {
                    match next_cron(c, t) {
                        Some(n) if n <= now => {
                            skipped += 1;
                            t = n;
                        }
                        _ => break,
                    }
                }
                (next_cron(c, now), skipped)
            }
        }
    }
}

/// Whether `t` is meant as a date (so its parse error should be about RFC 3339).
fn looks_like_a_date(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

fn utc(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The first cron time strictly after `ms`.
fn next_cron(c: &croner::Cron, ms: u64) -> Option<u64> {
    let next = c.find_next_occurrence(&utc(ms), false).ok()?;
    u64::try_from(next.timestamp_millis()).ok()
}

/// `ms` as RFC 3339 in UTC, to the second.
pub fn rfc3339(ms: u64) -> String {
    utc(ms).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration in the largest unit that divides it (`30m`, `90s`, `1500ms`).
fn duration_text(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

pub use kata_store::tasks::Task;

/// One run the scheduler made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The task.
    pub task: i64,
    /// The time the run was due.
    pub due_ms: u64,
    /// Scheduled times skipped because they were caught up by this run.
    pub skipped: u64,
    /// The task's next run.
    pub next_ms: Option<u64>,
}

/// Run every task due at `now` once, catching up missed times in that one
/// run. Returns what ran.
pub fn run_due(db: &Db, now: u64) -> Result<Vec<Fired>> {
    let mut fired = Vec::new();
    for task in db.due_tasks(now)? {
        let Some(due) = task.next_run_ms else { continue };
        let schedule = match Schedule::parse(&task.schedule, now) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(
                    task = task.id,
                    "task {} has a schedule that no longer parses ({e}); it is stopped — remove it and add it again",
                    task.id
                );
                db.task_disable(task.id)?;
                continue;
            }
        };
        let (next, skipped) = schedule.after_run(due, now);
        if !db.task_fire(&task, due, next, now).with_context(|| format!("cannot run task {}", task.id))? {
            continue;
        }
        let next_text = next.map_or_else(|| "none (done)".to_string(), rfc3339);
        if skipped > 0 {
            tracing::warn!(
                task = task.id,
                "task {} was due at {} and missed {skipped} more run(s) while kata was not running or the machine slept; \
                 running it once now to catch up (next run {next_text})",
                task.id,
                rfc3339(due)
            );
        } else if now.saturating_sub(due) > 60_000 {
            tracing::warn!(task = task.id, "task {} was due at {}; running it late, now (next run {next_text})", task.id, rfc3339(due));
        } else {
            tracing::info!(task = task.id, to = %task.target, "task {} ran (next run {next_text})", task.id);
        }
        fired.push(Fired { task: task.id, due_ms: due, skipped, next_ms: next });
    }
    Ok(fired)
}

/// The daemon's scheduler loop: run due tasks, then sleep until the next one
/// is due (at most a second, so new tasks and clock jumps are noticed),
/// until shutdown.
pub async fn run(db: Db, inbox_ready: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            break;
        }
        let now = now_ms();
        match run_due(&db, now) {
            Ok(fired) if !fired.is_empty() => inbox_ready.notify_one(),
            Ok(_) => {}
            Err(e) => tracing::error!("scheduler: {e:#}"),
        }
        let wait = match db.next_task_due() {
            Ok(Some(t)) => Duration::from_millis(t.saturating_sub(now_ms())).min(MAX_SLEEP),
            Ok(None) => MAX_SLEEP,
            Err(e) => {
                tracing::error!("scheduler: cannot read the task table: {e:#}");
                MAX_SLEEP
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => break,
        }
    }
    tracing::debug!("scheduler stopped");
}

/// The `scheduler` host interface for one tools plugin with the
/// `scheduler` grant (`[plugins.NAME] scheduler = { max_tasks = 20 }`):
/// tasks in the same table as `kata task add`'s, owned by the plugin, which
/// sees and cancels only its own. A task without a target goes to the
/// conversation of the tool call that creates it; an explicit target must be
/// a conversation someone has written to the agent in, so a plugin cannot
/// make the agent write first to a stranger. Every create and cancel is an
/// audit row (kind `scheduler`).
pub struct PluginScheduler {
    db: Db,
    grant: crate::policy::hooks::SchedulerGrant,
}

use crate::host::latest::{SchedulerError, TaskInfo, TaskRequest, TaskTarget};

impl PluginScheduler {
    /// The scheduler for a plugin granted `grant`.
    pub fn new(db: Db, grant: crate::policy::hooks::SchedulerGrant) -> Self {
        Self { db, grant }
    }

    fn policy(&self, plugin: &str) -> String {
        format!("[plugins.{plugin}] {} ({})", self.grant.describe(), self.grant.at)
    }

    fn audit(&self, plugin: &str, allowed: bool, target: String, detail: String) {
        let row = crate::store::AuditRow {
            id: 0,
            ts_ms: now_ms(),
            plugin: plugin.into(),
            kind: "scheduler".into(),
            verdict: if allowed { "allow" } else { "deny" }.into(),
            method: None,
            target: Some(target),
            policy: Some(self.policy(plugin)),
            detail: Some(detail),
        };
        if let Err(e) = self.db.audit_append(&row) {
            tracing::error!(plugin, "cannot write an audit row: {e:#}");
        }
    }

    fn info(t: &Task) -> TaskInfo {
        TaskInfo {
            id: t.id,
            schedule: t.schedule.clone(),
            prompt: t.prompt.clone(),
            next_run_ms: t.next_run_ms,
            target: TaskTarget { channel: t.target.plugin.clone(), conversation: t.target.conversation.clone(), thread: t.thread.clone() },
        }
    }
}

/// A session key (`channel/conversation[/thread]`, parts percent-escaped)
/// split back into its parts.
pub fn parse_session_key(key: &str) -> Option<(String, String, Option<String>)> {
    let un = |p: &str| p.replace("%2F", "/").replace("%25", "%");
    let mut parts = key.split('/');
    let channel = un(parts.next()?);
    let conversation = un(parts.next()?);
    let thread = parts.next().map(un);
    (parts.next().is_none() && !channel.is_empty() && !conversation.is_empty()).then_some((channel, conversation, thread))
}

impl crate::host::Scheduler for PluginScheduler {
    fn create(&self, plugin: &str, session: Option<&str>, request: TaskRequest) -> Result<TaskInfo, SchedulerError> {
        let now = now_ms();
        let refuse = |e: SchedulerError, why: String| {
            self.audit(plugin, false, "create".into(), format!("refused: {why}"));
            Err(e)
        };
        let schedule = match Schedule::parse(&request.schedule, now) {
            Ok(s) => s,
            Err(e) => return refuse(SchedulerError::InvalidSchedule(e.clone()), e),
        };
        let first = match schedule.first_run(now) {
            Ok(f) => f,
            Err(e) => return refuse(SchedulerError::InvalidSchedule(e.clone()), e),
        };
        let (channel, conversation, thread) = match request.target {
            Some(t) => {
                let known = self.db.conversation_known(&t.channel, &t.conversation).unwrap_or(false);
                if !known {
                    let why = format!(
                        "the target {}:{} is not a conversation anyone has written to the agent in; a plugin may only schedule \
                         prompts into conversations people started",
                        t.channel, t.conversation
                    );
                    return refuse(SchedulerError::InvalidSchedule(why.clone()), why);
                }
                (t.channel, t.conversation, t.thread)
            }
            None => match session.and_then(parse_session_key) {
                Some((c, conv, th)) if self.db.conversation_known(&c, &conv).unwrap_or(false) => (c, conv, th),
                _ => return refuse(SchedulerError::NoTarget, "no target, and the call is not part of a channel conversation".into()),
            },
        };
        let target = crate::policy::Target { plugin: channel, conversation };
        let prompt: String = request.prompt.chars().take(4000).collect();
        match self.db.task_add_owned(plugin, self.grant.max_tasks, &schedule.text(), &prompt, &target, thread.as_deref(), first) {
            Ok(Some(task)) => {
                self.audit(
                    plugin,
                    true,
                    format!("task {}", task.id),
                    format!("created task {} ({}) for {target}, first run {}", task.id, task.schedule, rfc3339(first)),
                );
                tracing::info!(plugin, task = task.id, to = %target, "task {} created ({}), first run {}", task.id, task.schedule, rfc3339(first));
                Ok(Self::info(&task))
            }
            Ok(None) => refuse(
                SchedulerError::LimitReached(self.grant.max_tasks),
                format!("it already has {} tasks scheduled (max_tasks)", self.grant.max_tasks),
            ),
            Err(e) => {
                tracing::error!(plugin, "cannot store a task: {e:#}");
                refuse(SchedulerError::InvalidSchedule("kata could not store the task".into()), format!("{e:#}"))
            }
        }
    }

    fn list(&self, plugin: &str) -> Result<Vec<TaskInfo>, SchedulerError> {
        match self.db.tasks_of(plugin) {
            Ok(tasks) => Ok(tasks.iter().map(Self::info).collect()),
            Err(e) => {
                tracing::error!(plugin, "cannot read the tasks: {e:#}");
                Ok(Vec::new())
            }
        }
    }

    fn cancel(&self, plugin: &str, id: i64) -> Result<(), SchedulerError> {
        match self.db.task_remove_owned(plugin, id) {
            Ok(true) => {
                self.audit(plugin, true, format!("task {id}"), format!("cancelled task {id}"));
                Ok(())
            }
            Ok(false) => Err(SchedulerError::UnknownTask(id)),
            Err(e) => {
                tracing::error!(plugin, "cannot cancel task {id}: {e:#}");
                Err(SchedulerError::UnknownTask(id))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Target;

    /// 2026-03-29T00:30:00Z: the night Europe moves its clocks forward.
    const T0: u64 = 1_774_744_200_000;
    const MIN: u64 = 60_000;
    const HOUR: u64 = 60 * MIN;

    fn at(s: &str) -> u64 {
        DateTime::parse_from_rfc3339(s).expect("time").timestamp_millis() as u64
    }

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("kata.db")).expect("open");
        (dir, db)
    }

    fn target() -> Target {
        Target { plugin: "telegram".into(), conversation: "123".into() }
    }

    #[test]
    fn parses_the_three_kinds_and_round_trips_the_text() {
        let every = Schedule::parse("every 30m", T0).expect("every");
        assert!(matches!(every, Schedule::Every(d) if d == Duration::from_secs(1800)));
        assert_eq!(every.text(), "every 30m");
        let inn = Schedule::parse("in 2h", T0).expect("in");
        assert!(matches!(inn, Schedule::At(t) if t == T0 + 2 * HOUR));
        let abs = Schedule::parse("2026-12-24T18:00:00+01:00", T0).expect("rfc3339");
        assert_eq!(abs.text(), "at 2026-12-24T17:00:00Z");
        let cron = Schedule::parse(" 0 9  * * MON-FRI", T0).expect("cron");
        assert_eq!(cron.text(), "0 9 * * MON-FRI", "kept as written, spaces normalised");
        for s in [every, abs, cron, Schedule::parse("every 90s", T0).expect("90s"), Schedule::parse("@daily", T0).expect("@daily")] {
            let again = Schedule::parse(&s.text(), T0).expect("canonical text parses");
            assert_eq!(again.text(), s.text());
        }
    }

    #[test]
    fn bad_schedules_are_one_clear_paragraph() {
        let e = Schedule::parse("61 * * * *", T0).expect_err("bad minute");
        assert!(e.contains("\"61 * * * *\" is not a valid schedule") && e.contains("every 30m"), "{e}");
        assert!(!e.contains(".."), "{e}");
        let e = Schedule::parse("0 0 30 2 *", T0).expect_err("30 February");
        assert!(e.contains("never matches"), "{e}");
        let e = Schedule::parse("every 5 parsecs", T0).expect_err("unit");
        assert!(e.contains("not a duration") || e.contains("unknown duration unit"), "{e}");
        let e = Schedule::parse("every 10ms", T0).expect_err("too short");
        assert!(e.contains("shorter than"), "{e}");
        let e = Schedule::parse("2026-13-40T00:00:00Z", T0).expect_err("bad date");
        assert!(e.contains("not an RFC 3339 time"), "{e}");
        let past = Schedule::parse("2020-01-01T00:00:00Z", T0).expect("parses");
        let e = past.first_run(T0).expect_err("past");
        assert!(e.contains("not in the future") && e.contains("2020-01-01T00:00:00Z"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn next_runs_with_a_fake_clock() {
        let every = Schedule::parse("every 30m", T0).expect("every");
        assert_eq!(every.first_run(T0), Ok(T0 + 30 * MIN));
        // On time: the next run is one interval on, phase kept.
        assert_eq!(every.after_run(T0 + 30 * MIN, T0 + 30 * MIN + 250), (Some(T0 + 60 * MIN), 0));
        let cron = Schedule::parse("*/15 * * * *", T0).expect("cron");
        assert_eq!(cron.first_run(T0), Ok(T0 + 15 * MIN));
        assert_eq!(cron.after_run(T0 + 15 * MIN, T0 + 15 * MIN), (Some(T0 + 30 * MIN), 0));
        let once = Schedule::parse("in 5m", T0).expect("in");
        assert_eq!(once.first_run(T0), Ok(T0 + 5 * MIN));
        assert_eq!(once.after_run(T0 + 5 * MIN, T0 + 9 * HOUR), (None, 0));
    }

    #[test]
    fn cron_is_utc_so_daylight_saving_changes_nothing() {
        // 02:30 does not exist in Berlin on 2026-03-29 and 02:30 happens twice
        // on 2026-10-25; in UTC every day has exactly one 02:30.
        let cron = Schedule::parse("30 2 * * *", T0).expect("cron");
        let mut t = T0;
        let mut runs = Vec::new();
        for _ in 0..3 {
            t = cron.first_run(t).expect("next");
            runs.push(rfc3339(t));
        }
        assert_eq!(runs, ["2026-03-29T02:30:00Z", "2026-03-30T02:30:00Z", "2026-03-31T02:30:00Z"]);
        let autumn = at("2026-10-25T00:00:00Z");
        let first = cron.first_run(autumn).expect("next");
        assert_eq!(rfc3339(first), "2026-10-25T02:30:00Z");
        assert_eq!(cron.first_run(first).expect("next") - first, 24 * HOUR);
    }

    #[test]
    fn a_machine_that_slept_catches_up_once() {
        let (_d, db) = db();
        let every = Schedule::parse("every 30m", T0).expect("every");
        let id = db.task_add(&every.text(), "check the feeds", &target(), None, every.first_run(T0).expect("first")).expect("add");
        // Nothing is due before the first run.
        assert!(run_due(&db, T0 + 29 * MIN).expect("run").is_empty());
        // The machine sleeps from T0 until T0 + 5h10m: ten runs were missed.
        let wake = T0 + 5 * HOUR + 10 * MIN;
        let fired = run_due(&db, wake).expect("run");
        assert_eq!(fired, [Fired { task: id, due_ms: T0 + 30 * MIN, skipped: 9, next_ms: Some(T0 + 5 * HOUR + 30 * MIN) }]);
        // Once: running again at the same time (or a second later) does nothing.
        assert!(run_due(&db, wake).expect("run").is_empty());
        assert!(run_due(&db, wake + 1000).expect("run").is_empty());
        let inbox = db.pending_inbox(10).expect("inbox");
        assert_eq!(inbox.len(), 1, "one catch-up run, not ten");
        let row = &inbox[0];
        assert_eq!((row.plugin.as_str(), row.msg.conversation.as_str(), row.msg.text.as_str()), ("telegram", "123", "check the feeds"));
        assert_eq!(row.origin.as_deref(), Some(format!("task:{id}").as_str()));
        let t = db.task(id).expect("task").expect("exists");
        assert_eq!((t.runs, t.last_run_ms, t.next_run_ms), (1, Some(wake), Some(T0 + 5 * HOUR + 30 * MIN)));
        // The next run happens on its normal time.
        assert_eq!(run_due(&db, T0 + 5 * HOUR + 30 * MIN).expect("run").len(), 1);
        assert_eq!(db.pending_inbox(10).expect("inbox").len(), 2);
    }

    #[test]
    fn a_cron_task_missed_overnight_catches_up_once_and_says_how_many() {
        let (_d, db) = db();
        let cron = Schedule::parse("0 * * * *", T0).expect("hourly");
        let id = db.task_add(&cron.text(), "hourly", &target(), Some("7"), cron.first_run(T0).expect("first")).expect("add");
        let fired = run_due(&db, T0 + 8 * HOUR).expect("run");
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].task, fired[0].skipped), (id, 7));
        assert_eq!(fired[0].next_ms, Some(at("2026-03-29T09:00:00Z")));
        assert_eq!(db.pending_inbox(10).expect("inbox")[0].msg.thread.as_deref(), Some("7"));
    }

    #[test]
    fn one_shot_tasks_run_once_and_stay_listed_as_done() {
        let (_d, db) = db();
        let once = Schedule::parse("in 10m", T0).expect("in");
        let id = db.task_add(&once.text(), "remind me", &target(), None, once.first_run(T0).expect("first")).expect("add");
        assert_eq!(db.next_task_due().expect("next"), Some(T0 + 10 * MIN));
        assert_eq!(run_due(&db, T0 + 3 * HOUR).expect("run").len(), 1);
        assert!(run_due(&db, T0 + 4 * HOUR).expect("run").is_empty());
        let t = db.task(id).expect("task").expect("listed");
        assert_eq!((t.next_run_ms, t.runs), (None, 1));
        assert_eq!(db.next_task_due().expect("next"), None);
        assert!(db.task_remove(id).expect("remove"));
        assert!(!db.task_remove(id).expect("remove again"));
    }

    #[test]
    fn a_run_and_its_next_time_commit_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kata.db");
        let db = Db::open(&path).expect("open");
        let every = Schedule::parse("every 1m", T0).expect("every");
        let id = db.task_add(&every.text(), "p", &target(), None, T0 + MIN).expect("add");
        // Make the inbox insert fail: the task must not move on either.
        db.lock()
            .execute_batch("CREATE TRIGGER no_inbox BEFORE INSERT ON inbox BEGIN SELECT RAISE(ABORT, 'disk full'); END;")
            .expect("trigger");
        assert!(run_due(&db, T0 + MIN).is_err());
        assert_eq!(db.task(id).expect("task").expect("exists").next_run_ms, Some(T0 + MIN), "nothing half-done");
        db.lock().execute_batch("DROP TRIGGER no_inbox;").expect("drop");
        assert_eq!(run_due(&db, T0 + MIN).expect("run").len(), 1);
        drop(db);
        // A restart (or a second scheduler) at the same time does not fire again.
        let db = Db::open(&path).expect("reopen");
        assert!(run_due(&db, T0 + MIN).expect("run").is_empty());
        assert_eq!(db.pending_inbox(10).expect("inbox").len(), 1);
    }
}
