//! Bounds on what a plugin hands the host, and the count of every limit hit.
//!
//! A plugin's results are lifted out of its memory by wasmtime (so one result
//! is already bounded by `limits.memory`), but nothing the host keeps —
//! stored messages, log lines, frames it writes, tool results for the model —
//! may be larger than the plugin's `limits` allow. The functions here cut or
//! refuse, in O(size) and without copying what passes; the callers log, audit
//! and count ([`hit`]) what was cut or refused.
//!
//! Limit hits are counted per plugin name for the whole process (one daemon
//! runs per process) and shown by `kata status` (see kata-daemon's `health`); the
//! counts survive reloads, like the other health counters.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest message id, conversation, sender or thread: a message with a
/// longer one is refused (a cut id would be another id).
pub const MAX_ID: usize = 1024;
/// Longest sender display name (cut when longer).
pub const MAX_NAME: usize = 1024;
/// Most attachments one message may carry (the rest are dropped).
pub const MAX_ATTACHMENTS: usize = 64;
/// Longest attachment name, MIME type or URL: an attachment with a longer
/// one is dropped.
pub const MAX_ATTACHMENT_FIELD: usize = 4096;

/// The counter of ids over [`MAX_ID`] (not a kata.toml setting).
pub const ID_LIMIT: &str = "max_id";

/// Every limit hit of every plugin, by plugin and limit name.
static HITS: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>> = Mutex::new(BTreeMap::new());

/// Count `n` hits of `limit` (a `limits.*` key, or [`ID_LIMIT`]) by `plugin`.
pub fn hit(plugin: &str, limit: &'static str, n: u64) {
    if n == 0 {
        return;
    }
    let mut all = HITS.lock().unwrap_or_else(|p| p.into_inner());
    match all.get_mut(plugin) {
        Some(m) => *m.entry(limit).or_default() += n,
        None => {
            all.insert(plugin.to_string(), BTreeMap::from([(limit, n)]));
        }
    }
}

/// The limits `plugin` has hit, and how often.
pub fn hits(plugin: &str) -> BTreeMap<String, u64> {
    let all = HITS.lock().unwrap_or_else(|p| p.into_inner());
    all.get(plugin).map(|m| m.iter().map(|(k, v)| (k.to_string(), *v)).collect()).unwrap_or_default()
}

/// The limits every plugin has hit (tools plugins included, which have no
/// health of their own), by plugin.
pub fn all_hits() -> BTreeMap<String, BTreeMap<String, u64>> {
    let all = HITS.lock().unwrap_or_else(|p| p.into_inner());
    all.iter().map(|(p, m)| (p.clone(), m.iter().map(|(k, v)| (k.to_string(), *v)).collect())).collect()
}

/// The largest index `<= at` that is a char boundary of `s`.
pub fn floor_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    let mut cut = at;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

/// Cut `text` to at most `max` bytes (the marker included) at a char
/// boundary, ending it with `marker`, and pass it through `redact`; returns
/// the text and whether it was cut.
///
/// What is over the limit is dropped before redaction (so a huge text costs
/// one pass over the part kept), yet no part of a secret can survive the cut:
/// the text is first cut `longest_secret` bytes past the limit, so a secret
/// that starts before the limit is whole and redacted, and after redaction
/// the last `longest_secret` bytes — where a secret cut in half could sit —
/// are dropped too. Text within the limit is not copied unless redacted.
pub fn cut_redacted(
    mut text: String,
    max: usize,
    marker: &str,
    longest_secret: usize,
    redact: impl FnOnce(&str) -> Cow<'_, str>,
) -> (String, bool) {
    let over = text.len() > max;
    if over {
        text.truncate(floor_boundary(&text, max.saturating_add(longest_secret)));
    }
    let mut text = match redact(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(o) => o,
    };
    if !over && text.len() <= max {
        return (text, false);
    }
    let mut keep = max.saturating_sub(marker.len());
    if over {
        keep = keep.min(text.len().saturating_sub(longest_secret));
    }
    text.truncate(floor_boundary(&text, keep));
    text.push_str(marker);
    text.shrink_to_fit();
    (text, true)
}

/// A size as kata.toml would write it (`"64KiB"`, `"4MiB"`, or bytes).
pub fn size_text(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

/// The marker that ends a message text cut at `limits.max_message`.
pub const MESSAGE_CUT: &str = "… [cut by kata: over limits.max_message]";
/// The marker that ends a log line cut at `limits.max_log_line`.
pub const LOG_CUT: &str = "… [cut: over limits.max_log_line]";
/// The marker that ends a tool result cut at `limits.max_tool_result`.
pub const TOOL_CUT: &str = "… [cut by kata: over limits.max_tool_result]";

/// The log-line budget of one plugin: a bucket of `per_minute` lines that
/// refills continuously. Once it runs dry, lines are suppressed until a
/// tenth of it is back; the first line let through then is preceded by a
/// summary of how many were suppressed (which takes a line of the budget
/// too, so a flood never writes more than the limit).
#[derive(Debug)]
pub struct LogBudget {
    per_minute: f64,
    tokens: f64,
    at: Instant,
    suppressed: u64,
    since: Option<Instant>,
}

/// What to do with one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogVerdict {
    /// Write it.
    Write,
    /// Write a summary first: this many lines were suppressed over this long.
    WriteAfter(u64, Duration),
    /// Drop it (counted).
    Suppress,
}

impl LogBudget {
    /// A full bucket of `per_minute` lines.
    pub fn new(per_minute: u32, now: Instant) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        Self { per_minute, tokens: per_minute, at: now, suppressed: 0, since: None }
    }

    /// The bucket's size.
    pub fn per_minute(&self) -> u32 {
        self.per_minute as u32
    }

    /// Decide about one line at `now`.
    pub fn admit(&mut self, now: Instant) -> LogVerdict {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
        self.tokens = (self.tokens + refill).min(self.per_minute);
        self.at = now;
        match self.since {
            None if self.tokens >= 1.0 => {
                self.tokens -= 1.0;
                LogVerdict::Write
            }
            None => {
                self.since = Some(now);
                self.suppressed = 1;
                LogVerdict::Suppress
            }
            // Suppressing: resume once a tenth of the bucket (and room for
            // the summary and the line) is back.
            Some(since) if self.tokens >= (self.per_minute / 10.0).max(2.0) => {
                self.tokens -= 2.0;
                let n = std::mem::take(&mut self.suppressed);
                self.since = None;
                LogVerdict::WriteAfter(n, now.saturating_duration_since(since))
            }
            Some(_) => {
                self.suppressed += 1;
                LogVerdict::Suppress
            }
        }
    }
}

/// Every plugin's log budget, by plugin name (shared by all its instances).
static LOG_BUDGETS: Mutex<BTreeMap<String, LogBudget>> = Mutex::new(BTreeMap::new());

/// Decide about one log line of `plugin` under `per_minute` (a changed
/// limit, after a reload, starts a fresh bucket).
pub fn admit_log_line(plugin: &str, per_minute: u32) -> LogVerdict {
    let now = Instant::now();
    let mut all = LOG_BUDGETS.lock().unwrap_or_else(|p| p.into_inner());
    if all.get(plugin).is_none_or(|b| b.per_minute() != per_minute.max(1)) {
        all.insert(plugin.to_string(), LogBudget::new(per_minute, now));
    }
    let v = all.get_mut(plugin).map_or(LogVerdict::Write, |b| b.admit(now));
    drop(all);
    if v == LogVerdict::Suppress {
        hit(plugin, "log_lines_per_minute", 1);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_secrets(s: &str) -> Cow<'_, str> {
        Cow::Borrowed(s)
    }

    #[test]
    fn texts_within_the_limit_pass_untouched() {
        let (t, cut) = cut_redacted("hello".to_string(), 300, MESSAGE_CUT, 0, no_secrets);
        assert_eq!((t.as_str(), cut), ("hello", false));
    }

    #[test]
    fn long_texts_are_cut_at_a_char_boundary_with_the_marker_inside_the_limit() {
        let text = "é".repeat(1000); // 2000 bytes
        let (t, cut) = cut_redacted(text, 301, MESSAGE_CUT, 0, no_secrets);
        assert!(cut);
        assert!(t.len() <= 301, "{}", t.len());
        assert!(t.ends_with(MESSAGE_CUT));
        let body = t.strip_suffix(MESSAGE_CUT).expect("marker");
        assert!(body.chars().all(|c| c == 'é') && !body.is_empty());
        assert!(t.capacity() <= 301 + 8, "the memory of the cut part is given back: {}", t.capacity());
    }

    #[test]
    fn a_cut_never_leaves_part_of_a_secret() {
        const SECRET: &str = "S3CRET-VALUE-0123456789";
        fn redact(s: &str) -> Cow<'_, str> {
            if s.contains(SECRET) { Cow::Owned(s.replace(SECRET, "[REDACTED:k]")) } else { Cow::Borrowed(s) }
        }
        let secret = SECRET;
        // The secret straddles the limit at every possible offset.
        for start in 250..300 {
            let text = format!("{}{secret}{}", "a".repeat(start), "b".repeat(500));
            let (t, cut) = cut_redacted(text, 300, "…", secret.len(), redact);
            assert!(cut && t.len() <= 300, "{start}");
            for n in 4..=secret.len() {
                assert!(!t.contains(&secret[..n]), "{start}: {t}");
            }
        }
        // A secret within the limit is redacted, and redaction making the
        // text longer than the limit is cut too.
        let (t, cut) = cut_redacted(format!("x{secret}"), 300, "…", secret.len(), redact);
        assert_eq!((t.as_str(), cut), ("x[REDACTED:k]", false));
    }

    #[test]
    fn a_log_flood_is_cut_to_the_budget_with_one_summary_per_resumption() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(60, t0);
        let written = (0..1000).filter(|_| b.admit(t0) == LogVerdict::Write).count();
        assert_eq!(written, 60, "a burst up to the budget");
        // Less than a tenth back: still suppressed.
        assert_eq!(b.admit(t0 + Duration::from_secs(3)), LogVerdict::Suppress);
        // Six lines back (a tenth): the summary, then lines again.
        assert_eq!(b.admit(t0 + Duration::from_secs(6)), LogVerdict::WriteAfter(941, Duration::from_secs(6)));
        assert_eq!(b.admit(t0 + Duration::from_secs(6)), LogVerdict::Write);
        // A quiet plugin is never suppressed.
        let mut q = LogBudget::new(60, t0);
        assert!((0..100).all(|i| q.admit(t0 + Duration::from_secs(i)) == LogVerdict::Write));
    }

    #[test]
    fn hits_are_counted_per_plugin_and_limit() {
        hit("limits-test-a", "max_message", 2);
        hit("limits-test-a", "max_message", 1);
        hit("limits-test-a", "max_id", 0);
        hit("limits-test-b", "log_lines_per_minute", 5);
        assert_eq!(hits("limits-test-a"), BTreeMap::from([("max_message".to_string(), 3)]));
        assert_eq!(hits("limits-test-b"), BTreeMap::from([("log_lines_per_minute".to_string(), 5)]));
        assert!(hits("limits-test-c").is_empty());
    }
}
