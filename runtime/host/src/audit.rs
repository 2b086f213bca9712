//! The audit log: what the sandbox decided, written as it decides.
//!
//! Every network decision (allowed, with the grant that allowed it; denied,
//! with the `kata.toml` entry that would allow it), every refused secret
//! placeholder, every blocked leak, every redaction and every limit hit is one
//! log line and one record in an [`AuditSink`] (in kata, a row in the
//! workspace database's `audit` table). `kata audit` reads it back.
//!
//! Writing never fails a request: if the database cannot be written the
//! decision still stands, and the failure is logged as an error. A sandbox
//! that stopped enforcing because its log was full would be worse than one
//! with a gap in its log.

use std::sync::Arc;

use crate::util::now_ms;

/// What a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An outgoing request checked against the `network` grants.
    Network,
    /// A `{{secret:NAME}}` placeholder naming a secret the policy does not
    /// define, or putting a secret towards a host it is not bound to.
    Secret,
    /// A secret value found in something the plugin sent.
    Leak,
    /// A secret value replaced in something handed to the plugin, or written
    /// to logs or messages on its behalf.
    Redact,
    /// A limit was hit: request rate, response size, or what a plugin handed
    /// the host (messages cut or refused, frames refused, tool results cut;
    /// see `crate::limits`).
    Limit,
    /// An agent tool call checked against the permission mode (see
    /// kata-daemon's `permissions`); the row's `method` holds the mode.
    Tool,
    /// A plugin's stored code checked against the hash it was installed
    /// under (a refused row is a file changed after installation).
    Integrity,
    /// A request to a plugin's webhook listener whose signature the host
    /// checked (`[plugins.NAME] webhook`); a refused one never reaches the plugin.
    Webhook,
}

impl Kind {
    /// The name stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Secret => "secret",
            Kind::Leak => "leak",
            Kind::Redact => "redact",
            Kind::Limit => "limit",
            Kind::Tool => "tool",
            Kind::Integrity => "integrity",
            Kind::Webhook => "webhook",
        }
    }
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let through, under a grant.
    Allow,
    /// Refused before anything left (no grant, unknown secret, limit).
    Deny,
    /// Stopped because it carried a secret value.
    Block,
    /// Let through with secret values replaced by `[REDACTED:NAME]`.
    Redact,
}

impl Verdict {
    /// The name stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Block => "block",
            Verdict::Redact => "redact",
        }
    }
}

/// One decision, before it is written.
#[derive(Debug, Clone)]
pub struct Event {
    /// What it is about.
    pub kind: Kind,
    /// What was decided.
    pub verdict: Verdict,
    /// The HTTP method, for requests.
    pub method: Option<String>,
    /// The URL without its query, or the place of a redaction (`log`, `message`, `response`).
    pub target: Option<String>,
    /// The grant that allowed it, or the kata.toml entry that would allow it.
    pub policy: Option<String>,
    /// Why, in words (never a secret value).
    pub detail: Option<String>,
}

impl Event {
    /// An event with nothing but its kind and verdict filled in.
    pub fn new(kind: Kind, verdict: Verdict) -> Self {
        Self { kind, verdict, method: None, target: None, policy: None, detail: None }
    }

    /// Set the HTTP method.
    pub fn method(mut self, m: impl Into<String>) -> Self {
        self.method = Some(m.into());
        self
    }

    /// Set the target (URL without query, or the place of a redaction).
    pub fn target(mut self, t: impl Into<String>) -> Self {
        self.target = Some(t.into());
        self
    }

    /// Set the policy entry involved.
    pub fn policy(mut self, p: impl Into<String>) -> Self {
        self.policy = Some(p.into());
        self
    }

    /// Set the explanation.
    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
}

/// The audit log's storage. The [`Auditor`] logs every
/// decision itself; a sink only keeps it.
pub trait AuditSink: Send + Sync {
    /// Keep one decision made at `ts_ms` about `plugin`. `batched`: a routine
    /// allowance, which may be written later with others; anything else must
    /// be stored before this returns (a refusal is on disk before the plugin
    /// hears of it).
    fn append(&self, plugin: &str, ts_ms: u64, event: Event, batched: bool) -> anyhow::Result<()>;
}

/// Writes one plugin's audit rows. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    sink: Option<Arc<dyn AuditSink>>,
    plugin: Arc<str>,
}

impl Auditor {
    /// An auditor writing `plugin`'s decisions to `sink` (and the log).
    pub fn new(sink: Arc<dyn AuditSink>, plugin: &str) -> Self {
        Self { sink: Some(sink), plugin: plugin.into() }
    }

    /// An auditor writing to `sink` when there is one, else to the log only.
    pub fn with(sink: Option<Arc<dyn AuditSink>>, plugin: &str) -> Self {
        Self { sink, plugin: plugin.into() }
    }

    /// An auditor that only logs (for unit tests and tools without a workspace).
    pub fn log_only(plugin: &str) -> Self {
        Self { sink: None, plugin: plugin.into() }
    }

    /// The plugin this auditor writes for.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Record a decision: one database row and one log line (debug for
    /// allowed requests, warn for everything else).
    pub fn record(&self, e: Event) {
        let plugin = &*self.plugin;
        let (kind, verdict) = (e.kind.as_str(), e.verdict.as_str());
        let target = e.target.as_deref().unwrap_or("");
        let detail = e.detail.as_deref().unwrap_or("");
        if e.verdict == Verdict::Allow {
            tracing::debug!(plugin, kind, verdict, target, policy = e.policy.as_deref().unwrap_or(""), "audit");
        } else {
            tracing::warn!(plugin, kind, verdict, target, "{detail}");
        }
        let Some(sink) = &self.sink else { return };
        // Routine allowances are written in the background, batched; a
        // refusal is on disk before the plugin hears of it.
        let batched = e.verdict == Verdict::Allow;
        if let Err(err) = sink.append(plugin, now_ms(), e, batched) {
            tracing::error!(plugin, "cannot write the audit log: {err:#}");
        }
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Format ms since the epoch as RFC 3339 in UTC, e.g. `2025-03-01T12:00:00.250Z`.
pub fn format_time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", t / 3600, t / 60 % 60, t % 60, ms % 1000)
}

/// Parse an RFC 3339 time (`2025-03-01T12:00:00Z`, `2025-03-01T13:00:00+01:00`,
/// fractional seconds allowed; a bare date means its midnight UTC) to ms
/// since the epoch.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a time like \"2025-03-01T12:00:00Z\" or a duration like \"2h\"");
    let t = s.trim();
    let num = |a: usize, b: usize| -> Result<u32, String> {
        let part = t.get(a..b).ok_or_else(bad)?;
        if part.bytes().all(|c| c.is_ascii_digit()) { part.parse().map_err(|_| bad()) } else { Err(bad()) }
    };
    if t.len() < 10 || t.as_bytes()[4] != b'-' || t.as_bytes()[7] != b'-' {
        return Err(bad());
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut ms: i64 = days_from_civil(i64::from(y), mo, d) * 86_400_000;
    let rest = &t[10..];
    if !rest.is_empty() {
        let sep = rest.as_bytes()[0];
        if !matches!(sep, b'T' | b't' | b' ') || rest.len() < 9 {
            return Err(bad());
        }
        let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
        if t.as_bytes()[13] != b':' || t.as_bytes()[16] != b':' || h > 23 || mi > 59 || sec > 60 {
            return Err(bad());
        }
        ms += i64::from(h * 3600 + mi * 60 + sec) * 1000;
        let mut tail = &t[19..];
        if let Some(frac) = tail.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let first3: String = frac[..digits].chars().chain("000".chars()).take(3).collect();
            ms += i64::from(first3.parse::<u32>().map_err(|_| bad())?);
            tail = &frac[digits..];
        }
        match tail {
            "Z" | "z" => {}
            off if off.len() == 6 && off.is_ascii() && (off.starts_with('+') || off.starts_with('-')) && off.as_bytes()[3] == b':' => {
                let oh: i64 = off[1..3].parse().map_err(|_| bad())?;
                let om: i64 = off[4..6].parse().map_err(|_| bad())?;
                let delta = (oh * 60 + om) * 60_000;
                ms -= if off.starts_with('+') { delta } else { -delta };
            }
            _ => return Err(bad()),
        }
    }
    u64::try_from(ms).map_err(|_| format!("{s:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        let t = parse_time("2025-03-01T12:34:56.789Z").expect("time");
        assert_eq!(format_time(t), "2025-03-01T12:34:56.789Z");
        assert_eq!(parse_time("2025-03-01T13:34:56.789+01:00"), Ok(t));
        assert_eq!(parse_time("2024-02-29"), parse_time("2024-02-29T00:00:00Z"));
        for bad in ["yesterday", "2025-13-01", "2025-03-01T12:00", "2025-03-01T12:00:00+1", "1969-12-31T00:00:00Z", "２０２５-01-01"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_reach_the_sink() {
        #[derive(Default)]
        struct Rows(std::sync::Mutex<Vec<(String, Event, bool)>>);
        impl AuditSink for Rows {
            fn append(&self, plugin: &str, _ts_ms: u64, event: Event, batched: bool) -> anyhow::Result<()> {
                self.0.lock().expect("rows").push((plugin.to_string(), event, batched));
                Ok(())
            }
        }
        let rows = Arc::new(Rows::default());
        let a = Auditor::new(rows.clone(), "tg");
        a.record(
            Event::new(Kind::Network, Verdict::Deny)
                .method("GET")
                .target("https://evil.example/x")
                .policy("https://evil.example")
                .detail("no network grant covers it"),
        );
        a.record(Event::new(Kind::Network, Verdict::Allow));
        Auditor::log_only("tg").record(Event::new(Kind::Leak, Verdict::Block));
        let rows = rows.0.lock().expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].0.as_str(), rows[0].1.kind, rows[0].1.verdict, rows[0].2), ("tg", Kind::Network, Verdict::Deny, false));
        assert_eq!(rows[0].1.policy.as_deref(), Some("https://evil.example"));
        assert!(rows[1].2, "an allowance is batched");
    }
}
