//! # kata-reminders: "remind me tomorrow at 9"
//!
//! A tools plugin (world `tools-plugin` of `kata:plugin@0.1.3`) over kata's
//! `scheduler` host interface, which kata.toml grants:
//!
//! ```toml
//! [plugins.reminders]
//! path = "…/reminders.wasm"
//! scheduler = { max_tasks = 20 }
//! config = { utc_offset = "+01:00" }   # how "tomorrow at 9" is meant (default UTC)
//! ```
//!
//! | tool | arguments | does |
//! |---|---|---|
//! | `remind` | `when`, `text` | schedules `text` as a prompt for the agent at `when`, in the conversation the request came from |
//! | `list_reminders` | — | this plugin's reminders still to come |
//! | `cancel_reminder` | `id` | cancels one |
//!
//! `when` is an RFC 3339 time (`2026-12-03T09:00:00+01:00`) or a relative
//! one, resolved here with the host's clock ([`resolve`]): `in 10 minutes`,
//! `in 2h`, `in 3 days`, `tomorrow at 9`, `tomorrow at 9:30pm`, `today at
//! 17:00`, `at 8am` (today, or tomorrow once that time has passed),
//! `tomorrow` (at 9:00). When the time comes kata hands the agent
//! "Reminder: TEXT" in that conversation, and its answer goes there.
//!
//! The parsing is plain functions, tested natively with `cargo test`.

use serde_json::{Value, json};

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/v0.1.3", world: "kata:plugin/tools-plugin" });
}

use bindings::exports::kata::plugin::tools::{Guest, ToolError, ToolSpec};
use bindings::kata::plugin::host;
use bindings::kata::plugin::scheduler::{self, SchedulerError, TaskRequest};

const MINUTE: i64 = 60;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// The hour "tomorrow" alone means.
const DEFAULT_HOUR: i64 = 9;
/// The longest reminder text kept.
pub const MAX_TEXT: usize = 2000;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian): the inverse
/// of [`civil_from_days`], which the tests check against it.
#[cfg(test)]
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// Seconds since the epoch as RFC 3339 in UTC.
pub fn rfc3339(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(DAY));
    let s = secs.rem_euclid(DAY);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / HOUR, (s % HOUR) / MINUTE, s % MINUTE)
}

/// Parse a UTC offset `+HH:MM` / `-HH:MM` / `Z` into seconds.
pub fn parse_offset(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") || s.is_empty() {
        return Ok(0);
    }
    let bad = || format!("utc_offset {s:?} is not like \"+01:00\" or \"-05:30\"");
    let (sign, rest) = match s.as_bytes()[0] {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * HOUR + m * MINUTE))
}

/// `9`, `9:30`, `17:00`, `9am`, `9:30 pm` → seconds after midnight.
fn parse_clock(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase().replace(' ', "");
    let (s, pm) = if let Some(r) = s.strip_suffix("pm") {
        (r.to_string(), Some(true))
    } else if let Some(r) = s.strip_suffix("am") {
        (r.to_string(), Some(false))
    } else {
        (s, None)
    };
    let (h, m) = match s.split_once(':') {
        Some((h, m)) => (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?),
        None => (s.parse::<i64>().ok()?, 0),
    };
    let h = match pm {
        Some(_) if !(1..=12).contains(&h) => return None,
        Some(true) => h % 12 + 12,
        Some(false) => h % 12,
        None => h,
    };
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * HOUR + m * MINUTE)
}

/// `10 minutes`, `2h`, `an hour`, `3 days` → seconds.
fn parse_span(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let (n, unit) = if num.is_empty() {
        let (word, rest) = unit.split_once(' ')?;
        (if matches!(word, "a" | "an" | "one") { 1 } else { return None }, rest.trim().to_string())
    } else {
        (num.parse::<i64>().ok()?, unit.trim().to_string())
    };
    let size = match unit.as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => MINUTE,
        "h" | "hr" | "hrs" | "hour" | "hours" => HOUR,
        "d" | "day" | "days" => DAY,
        "w" | "week" | "weeks" => 7 * DAY,
        _ => return None,
    };
    n.checked_mul(size).filter(|v| *v > 0)
}

/// Whether `s` looks like an RFC 3339 time (`YYYY-MM-DDTHH:MM…`).
fn looks_absolute(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 16 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && (b[10] == b'T' || b[10] == b't' || b[10] == b' ')
}

/// Resolve `when` against `now_secs` (UTC) for a person at `offset` seconds
/// from UTC: the schedule to hand kata (RFC 3339). An absolute time is
/// passed on as written (kata checks it).
pub fn resolve(when: &str, now_secs: i64, offset: i64) -> Result<String, String> {
    let w = when.trim();
    if looks_absolute(w) {
        return Ok(w.replace(' ', "T"));
    }
    let lower = w.to_ascii_lowercase();
    if let Some(span) = lower.strip_prefix("in ") {
        let secs = parse_span(span).ok_or_else(|| format!("{w:?}: give a span like \"in 10 minutes\", \"in 2h\" or \"in 3 days\""))?;
        return Ok(rfc3339(now_secs + secs));
    }
    // Day-relative: [today|tomorrow] [at CLOCK], or at CLOCK.
    let local_now = now_secs + offset;
    let today = local_now.div_euclid(DAY);
    let (day, clock) = if let Some(rest) = lower.strip_prefix("tomorrow") {
        (Some(today + 1), rest.trim().strip_prefix("at").map(str::trim).filter(|c| !c.is_empty()))
    } else if let Some(rest) = lower.strip_prefix("today") {
        (Some(today), rest.trim().strip_prefix("at").map(str::trim).filter(|c| !c.is_empty()))
    } else if let Some(rest) = lower.strip_prefix("at ") {
        (None, Some(rest.trim()))
    } else {
        return Err(format!(
            "{w:?} is not a time I understand; use an RFC 3339 time (\"2026-12-03T09:00:00+01:00\") or \"in 10 minutes\", \
             \"tomorrow at 9\", \"today at 17:30\", \"at 8am\""
        ));
    };
    let secs_of_day = match clock {
        Some(c) => parse_clock(c).ok_or_else(|| format!("{c:?} is not a time of day like \"9\", \"9:30\", \"17:00\" or \"9pm\""))?,
        None => DEFAULT_HOUR * HOUR,
    };
    let mut local = day.unwrap_or(today) * DAY + secs_of_day;
    if day.is_none() && local <= local_now {
        local += DAY;
    }
    if local <= local_now {
        return Err(format!("{w:?} has already passed; give a later time"));
    }
    Ok(rfc3339(local - offset))
}

fn describe(e: SchedulerError) -> ToolError {
    ToolError::Failed(match e {
        SchedulerError::NotGranted(why) => format!("reminders are not allowed here: {why}"),
        SchedulerError::InvalidSchedule(why) => why,
        SchedulerError::LimitReached(n) => format!("there are already {n} reminders; cancel one first"),
        SchedulerError::UnknownTask(id) => format!("there is no reminder {id}"),
        SchedulerError::NoTarget => "a reminder needs a conversation to go to, and this request is not part of one".into(),
    })
}

fn string_arg(args: &Value, key: &str) -> Result<String, ToolError> {
    args[key].as_str().map(str::to_string).ok_or_else(|| ToolError::InvalidArgs(format!("`{key}` (a string) is required")))
}

fn remind(args: &Value) -> Result<String, ToolError> {
    let when = string_arg(args, "when")?;
    let text: String = string_arg(args, "text")?.chars().take(MAX_TEXT).collect();
    if text.trim().is_empty() {
        return Err(ToolError::InvalidArgs("`text` must say what to remind of".into()));
    }
    let offset = parse_offset(&host::config_get("utc_offset").unwrap_or_default()).map_err(ToolError::Failed)?;
    let now = (host::now_ms() / 1000) as i64;
    let schedule = resolve(&when, now, offset).map_err(ToolError::InvalidArgs)?;
    let task = scheduler::create(&TaskRequest { schedule, prompt: format!("Reminder: {text}"), target: None }).map_err(describe)?;
    let at = task.next_run_ms.map_or_else(|| "never".to_string(), |ms| rfc3339((ms / 1000) as i64));
    Ok(format!("Reminder {} set for {at}: {text}", task.id))
}

fn list() -> Result<String, ToolError> {
    let tasks = scheduler::list().map_err(describe)?;
    if tasks.is_empty() {
        return Ok("No reminders.".into());
    }
    Ok(tasks
        .iter()
        .map(|t| {
            let at = t.next_run_ms.map_or_else(|| "done".to_string(), |ms| rfc3339((ms / 1000) as i64));
            format!("{}: {at} — {}", t.id, t.prompt.strip_prefix("Reminder: ").unwrap_or(&t.prompt))
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

fn cancel(args: &Value) -> Result<String, ToolError> {
    let id = args["id"].as_i64().ok_or_else(|| ToolError::InvalidArgs("`id` (a number from list_reminders) is required".into()))?;
    scheduler::cancel(id).map_err(describe)?;
    Ok(format!("Reminder {id} cancelled."))
}

struct Reminders;

impl Guest for Reminders {
    fn list() -> Vec<ToolSpec> {
        let spec = |name: &str, description: &str, schema: Value| ToolSpec {
            name: name.into(),
            description: description.into(),
            args_schema: schema.to_string(),
        };
        vec![
            spec(
                "remind",
                "Remind the person later: at `when`, you are handed \"Reminder: TEXT\" in this conversation and answer there.",
                json!({"type": "object", "properties": {
                    "when": {"type": "string", "description": "RFC 3339 (\"2026-12-03T09:00:00+01:00\") or \"in 10 minutes\", \"tomorrow at 9\", \"today at 17:30\", \"at 8am\""},
                    "text": {"type": "string", "description": "what to remind of"}},
                    "required": ["when", "text"]}),
            ),
            spec("list_reminders", "List the reminders still to come, with their ids.", json!({"type": "object", "properties": {}})),
            spec(
                "cancel_reminder",
                "Cancel a reminder by its id (from list_reminders).",
                json!({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}),
            ),
        ]
    }

    fn call(name: String, args_json: String) -> Result<String, ToolError> {
        let args: Value =
            serde_json::from_str(&args_json).map_err(|e| ToolError::InvalidArgs(format!("the arguments are not JSON: {e}")))?;
        match name.as_str() {
            "remind" => remind(&args),
            "list_reminders" => list(),
            "cancel_reminder" => cancel(&args),
            _ => Err(ToolError::UnknownTool(name)),
        }
    }
}

bindings::export!(Reminders with_types_in bindings);

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02T15:30:00Z, a Wednesday.
    const NOW: i64 = 1_796_225_400;

    #[test]
    fn dates_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(NOW), "2026-12-02T15:30:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        for d in [-1000, 0, 11_016, 20_789, 60_000] {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
    }

    #[test]
    fn relative_spans() {
        assert_eq!(resolve("in 10 minutes", NOW, 0).as_deref(), Ok("2026-12-02T15:40:00Z"));
        assert_eq!(resolve("in 2h", NOW, 3600).as_deref(), Ok("2026-12-02T17:30:00Z"), "a span ignores the offset");
        assert_eq!(resolve("In an hour", NOW, 0).as_deref(), Ok("2026-12-02T16:30:00Z"));
        assert_eq!(resolve("in 3 days", NOW, 0).as_deref(), Ok("2026-12-05T15:30:00Z"));
        assert_eq!(resolve("in 2 seconds", NOW, 0).as_deref(), Ok("2026-12-02T15:30:02Z"));
        assert!(resolve("in 5 parsecs", NOW, 0).unwrap_err().contains("in 10 minutes"));
    }

    #[test]
    fn days_and_clocks_in_the_persons_time_zone() {
        assert_eq!(resolve("tomorrow at 9", NOW, 0).as_deref(), Ok("2026-12-03T09:00:00Z"));
        assert_eq!(resolve("tomorrow at 9", NOW, 3600).as_deref(), Ok("2026-12-03T08:00:00Z"), "9:00 at +01:00");
        assert_eq!(resolve("tomorrow at 9:30pm", NOW, 0).as_deref(), Ok("2026-12-03T21:30:00Z"));
        assert_eq!(resolve("tomorrow", NOW, 0).as_deref(), Ok("2026-12-03T09:00:00Z"));
        assert_eq!(resolve("today at 17:00", NOW, 0).as_deref(), Ok("2026-12-02T17:00:00Z"));
        assert!(resolve("today at 8am", NOW, 0).unwrap_err().contains("already passed"));
        assert_eq!(resolve("at 8am", NOW, 0).as_deref(), Ok("2026-12-03T08:00:00Z"), "the next 8:00");
        assert_eq!(resolve("at 12am", NOW, -5 * 3600).as_deref(), Ok("2026-12-03T05:00:00Z"), "midnight at -05:00");
        assert!(resolve("tomorrow at 25", NOW, 0).is_err());
        assert!(resolve("next tuesday", NOW, 0).unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn absolute_times_pass_through_and_offsets_parse() {
        assert_eq!(resolve("2026-12-03T09:00:00+01:00", NOW, 0).as_deref(), Ok("2026-12-03T09:00:00+01:00"));
        assert_eq!(parse_offset("+01:00"), Ok(3600));
        assert_eq!(parse_offset("-05:30"), Ok(-(5 * 3600 + 30 * 60)));
        assert_eq!(parse_offset(""), Ok(0));
        assert!(parse_offset("CET").is_err());
    }
}
