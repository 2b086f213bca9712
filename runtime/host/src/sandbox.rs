//! Network and secret enforcement for outgoing HTTP, in exactly one place: the
//! wasi:http `send_request` hook of [`NetworkGate`]. Every request a plugin
//! makes passes here before any byte leaves, in this order:
//!
//! 1. **rate limit**: `limits.requests_per_minute`, shared by all of the
//!    plugin's instances;
//! 2. **grant**: the method and URL must fall under a `network` entry;
//! 3. **leak scan, before substitution**: the URL (raw and percent-decoded)
//!    and header values must not already hold a secret *value* — the plugin
//!    only ever holds `{{secret:NAME}}` placeholders, so a value there means it
//!    got one somehow and is sending it out (IronClaw's lesson: scan first,
//!    inject after, or the scan flags the host's own substitution);
//! 4. **secret binding**: every `{{secret:NAME}}` the request names must be
//!    defined and bound to the request's host (`hosts = [...]` in the
//!    secret's table; a secret without `hosts` may go to any granted host) —
//!    checked for all placeholders before any is filled in
//!    ([`PluginSandbox::secret_for`], the only place that hands out a value);
//! 5. **substitution**: placeholders in the path, query and headers become
//!    values, only now that the destination is known to be granted and bound;
//! 6. **resolve, then check**: the host name is resolved here and a name
//!    that resolves to a loopback, private, link-local or unspecified address
//!    is refused unless the grant names that address itself (an IP literal or
//!    `localhost`) or opts in with `private = true`;
//! 7. **pinned connect**: the connection goes to an address that passed the
//!    check — not to a second lookup of the name, which DNS rebinding could
//!    answer differently. TLS still verifies the certificate for the name,
//!    against the public web roots plus the plugin's own `ca` files, if any.
//!    A kept-open HTTP/1.1 connection of the same plugin is reused instead
//!    only when its address is among those that passed the check for this
//!    request and its TLS name is this request's (see `pool`); every step
//!    above still runs for every request.
//!
//! The request body is scanned for secret values as it streams out (bytes that
//! could be the start of a secret are held back until it is clear they are
//! not), and the response is capped at `limits.max_response` and has secret
//! values replaced by `[REDACTED:NAME]` in its headers and body before the
//! plugin sees them. Redirects are never followed: wasi:http hands the 3xx to
//! the plugin, whose next request goes through all of the above again.
//!
//! Every decision is written to the audit log (see [`crate::audit`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use crate::audit::{Auditor, Event, Kind, Verdict};
use crate::policy::{NetworkGrant, PluginGrants, address_class, percent_decode};

pub mod conn;
mod pool;
use pool::ConnPool;

type HttpError = wasmtime_wasi_http::Error;
type HttpResult<T> = wasmtime_wasi_http::Result<T>;
type IoFuture = Box<dyn Future<Output = HttpResult<()>> + Send>;

/// Secret values shorter than this are substituted but not scanned for or
/// redacted: a short value would match ordinary text everywhere.
pub const MIN_SCANNED_SECRET: usize = 6;

/// How long a DNS lookup may take before the request fails.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for a kept-open connection whose last response was read to
/// be ready again (hyper marks it ready right after; this only bounds it).
const READY_WAIT: Duration = Duration::from_secs(1);

/// wasi:http's own default for connect, first-byte and between-bytes timeouts.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No network grant covers the URL (or not for this method).
    NotGranted {
        /// The HTTP method.
        method: String,
        /// The URL without its query, as the plugin wrote it (placeholders, not values).
        url: String,
        /// The kata.toml entry that would allow it.
        suggestion: String,
    },
    /// A grant names the URL's host and the start of its path as text, but
    /// grants match whole path segments (`/bot` is not `/bot123/x`).
    SegmentOnly {
        /// The HTTP method.
        method: String,
        /// The URL without its query.
        url: String,
        /// The grant as written.
        grant: String,
        /// The kata.toml entry that would allow it (the grant with `*`).
        suggestion: String,
    },
    /// A grant covers the URL, but the plugin's manifest never asked for it.
    Undeclared {
        /// The HTTP method.
        method: String,
        /// The URL without its query.
        url: String,
        /// What the manifest does ask for.
        declared: Vec<String>,
    },
    /// The request names a secret the policy does not define.
    UnknownSecret {
        /// The secret's name.
        name: String,
    },
    /// The request puts a secret towards a granted host it is not bound to.
    UnboundSecret {
        /// The secret's name.
        name: String,
        /// The request's host (`host` or `host:port`), as `hosts` would list it.
        host: String,
        /// The hosts it is bound to, for the message.
        bound: String,
        /// Where the binding is written: `kata.toml:LINE`.
        at: String,
    },
    /// The request names the secret that verifies the plugin's webhooks,
    /// which is never sent anywhere.
    WebhookSecret {
        /// The secret's name.
        name: String,
        /// Where the webhook table is written: `kata.toml:LINE`.
        at: String,
    },
    /// The URL or a header already holds a secret value: a leak.
    Leak {
        /// The secret's name.
        secret: String,
        /// Where it was found: `URL`, `header NAME`, `body`.
        place: String,
    },
    /// A granted host name resolved only to non-public addresses.
    PrivateAddress {
        /// The host name.
        host: String,
        /// One of the addresses it resolved to.
        addr: IpAddr,
        /// What kind of address it is (`loopback`, `private`, `link-local`…).
        class: &'static str,
        /// The kata.toml entry that would allow it.
        suggestion: String,
    },
    /// The plugin exceeded `limits.requests_per_minute`.
    RateLimited {
        /// The limit.
        per_minute: u32,
    },
    /// The URL cannot be checked (no host, unsupported scheme, placeholder in the host).
    Malformed {
        /// What is wrong.
        reason: String,
    },
}

impl Denial {
    /// A one-paragraph explanation for the log and the audit row, naming the
    /// kata.toml change that would allow the request where there is one.
    pub fn explain(&self, plugin: &str) -> String {
        match self {
            Denial::NotGranted { method, url, suggestion } => format!(
                "plugin {plugin}: {method} {url} denied: no network grant covers it; to allow it, add \
                 {suggestion} to `network` under [plugins.{plugin}] in kata.toml"
            ),
            Denial::SegmentOnly { method, url, grant, suggestion } => format!(
                "plugin {plugin}: {method} {url} denied: the grant \"{grant}\" matches whole path segments (its path \
                 and what is below it), and this path only starts with the same text; to allow every path that \
                 starts with it, write the entry as {suggestion} under [plugins.{plugin}] in kata.toml"
            ),
            Denial::Undeclared { method, url, declared } => format!(
                "plugin {plugin}: {method} {url} denied: kata.toml grants it, but the plugin's manifest does not \
                 ask for it (it asks for: {}); a plugin only gets what it declares and the policy grants — \
                 use a build of the plugin that declares this host",
                if declared.is_empty() { "no network".to_string() } else { declared.join(", ") }
            ),
            Denial::UnknownSecret { name } => format!(
                "plugin {plugin}: request denied: it uses {{{{secret:{name}}}}} but kata.toml defines no such secret; \
                 add `secrets = {{ {name} = \"env:VARIABLE\" }}` under [plugins.{plugin}]"
            ),
            Denial::UnboundSecret { name, host, bound, at } => format!(
                "plugin {plugin}: request to {host} denied: it puts secret {name} ({{{{secret:{name}}}}}) in a request \
                 to {host}, but {at} binds {name} to {bound} only, so nothing was sent; if {host} really should get \
                 it, add \"{host}\" to `hosts` of secret {name} under [plugins.{plugin}] there"
            ),
            Denial::WebhookSecret { name, at } => format!(
                "plugin {plugin}: request denied: it uses {{{{secret:{name}}}}}, but {at} makes {name} the secret that \
                 verifies this plugin's webhooks, and kata never sends that one anywhere; give the plugin its own \
                 secret for requests"
            ),
            Denial::Leak { secret, place } => format!(
                "plugin {plugin}: request blocked: its {place} contains the value of secret {secret}, which the \
                 plugin should never hold (it writes {{{{secret:{secret}}}}} and kata fills it in); the request was \
                 stopped before the value was sent"
            ),
            Denial::PrivateAddress { host, addr, class, suggestion } => format!(
                "plugin {plugin}: request to {host} denied: it resolves to {addr}, a {class} address, and the grant \
                 does not allow private addresses; if {host} really is on your network, write the entry as \
                 {suggestion} under [plugins.{plugin}] in kata.toml"
            ),
            Denial::RateLimited { per_minute } => format!(
                "plugin {plugin}: request denied: more than {per_minute} requests per minute \
                 (limits.requests_per_minute under [plugins.{plugin}] in kata.toml)"
            ),
            Denial::Malformed { reason } => format!("plugin {plugin}: request denied: {reason}"),
        }
    }

    /// The audit row for this denial.
    pub fn event(&self, plugin: &str, method: &str, url: &str) -> Event {
        let (kind, verdict, policy) = match self {
            Denial::NotGranted { suggestion, .. } | Denial::SegmentOnly { suggestion, .. } => {
                (Kind::Network, Verdict::Deny, Some(suggestion.clone()))
            }
            Denial::PrivateAddress { suggestion, .. } => (Kind::Network, Verdict::Deny, Some(suggestion.clone())),
            Denial::Malformed { .. } | Denial::Undeclared { .. } => (Kind::Network, Verdict::Deny, None),
            Denial::UnknownSecret { name } => (Kind::Secret, Verdict::Deny, Some(format!("secrets = {{ {name} = \"env:VARIABLE\" }}"))),
            Denial::UnboundSecret { name, bound, at, .. } => {
                (Kind::Secret, Verdict::Deny, Some(format!("{at}: secret {name} is bound to {bound}")))
            }
            Denial::WebhookSecret { at, .. } => (Kind::Secret, Verdict::Deny, Some(format!("{at}: webhook secret"))),
            Denial::Leak { .. } => (Kind::Leak, Verdict::Block, None),
            Denial::RateLimited { per_minute } => {
                (Kind::Limit, Verdict::Deny, Some(format!("limits = {{ requests_per_minute = {per_minute} }}")))
            }
        };
        let mut e = Event::new(kind, verdict).method(method).target(url).detail(self.explain(plugin));
        e.policy = policy;
        e
    }

    /// What the plugin is told.
    fn error_code(&self) -> HttpError {
        match self {
            // Not a policy problem the plugin can report as "grant this":
            // it should back off and retry, like after a network error.
            Denial::RateLimited { .. } => HttpError::ConnectionLimitReached,
            _ => HttpError::HttpRequestDenied,
        }
    }
}

/// Check a request's method and URI against a plugin's grants. Returns the
/// grant that allows it.
pub fn check_uri<'g>(grants: &'g PluginGrants, method: &str, uri: &http::Uri) -> Result<&'g NetworkGrant, Denial> {
    let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
    let Some(host) = uri.host() else {
        return Err(Denial::Malformed { reason: format!("URL {} has no host", without_query(uri)) });
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = match (uri.port_u16(), scheme.as_str()) {
        (Some(p), _) => p,
        (None, "http") => 80,
        (None, "https") => 443,
        (None, s) => {
            return Err(Denial::Malformed { reason: format!("unsupported scheme {s} in {}", without_query(uri)) });
        }
    };
    let path = uri.path();
    if let Err(refusal) = crate::policy::normalize_path(path) {
        return Err(Denial::Malformed { reason: format!("URL {}: {refusal}", without_query(uri)) });
    }
    if let Some(g) = grants.network_grant_for(method, &scheme, host, port, path) {
        if !grants.declared(&scheme, host, port, path) {
            let declared = grants
                .declared_network
                .iter()
                .flatten()
                .map(|d| {
                    if d.matches_only_as_text(path) {
                        format!(
                            "{} (which matches whole path segments: the plugin was built for the older text-prefix \
                             rule; rebuild it with its entry written as \"{}*\")",
                            d.source, d.source
                        )
                    } else {
                        d.source.clone()
                    }
                })
                .collect();
            return Err(Denial::Undeclared { method: method.to_ascii_uppercase(), url: without_query(uri), declared });
        }
        return Ok(g);
    }
    // A grant that covered this path when grants matched text: say how to
    // write it now.
    if let Some(g) =
        grants.network.iter().find(|g| g.allows_method(method) && g.allows_host(&scheme, host, port) && g.matches_only_as_text(path))
    {
        let url = format!("{}*", g.source);
        let suggestion = if g.methods().is_empty() && !g.private() {
            format!("\"{url}\"")
        } else {
            let mut t = format!("{{ url = \"{url}\"");
            if !g.methods().is_empty() {
                let list = g.methods().iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ");
                t.push_str(&format!(", methods = [{list}]"));
            }
            if g.private() {
                t.push_str(", private = true");
            }
            t.push_str(" }");
            t
        };
        return Err(Denial::SegmentOnly {
            method: method.to_ascii_uppercase(),
            url: without_query(uri),
            grant: g.source.clone(),
            suggestion,
        });
    }
    // A grant for the URL but not the method: suggest widening that entry.
    let suggestion = if let Some(g) = grants.network_grant(&scheme, host, port, path) {
        let mut methods: Vec<String> = g.methods().to_vec();
        methods.push(method.to_ascii_uppercase());
        let list = methods.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ");
        format!("{{ url = \"{}\", methods = [{list}] }}", g.source)
    } else {
        let default = matches!((scheme.as_str(), port), ("http", 80) | ("https", 443));
        let authority = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
        if default { format!("\"{scheme}://{authority}\"") } else { format!("\"{scheme}://{authority}:{port}\"") }
    };
    Err(Denial::NotGranted { method: method.to_string(), url: without_query(uri), suggestion })
}

/// The URL without its query string, for logs and the audit log (queries
/// often carry data, and before substitution never a secret value).
pub fn without_query(uri: &http::Uri) -> String {
    let mut s = String::new();
    if let Some(scheme) = uri.scheme_str() {
        s.push_str(scheme);
        s.push_str("://");
    }
    if let Some(a) = uri.authority() {
        s.push_str(a.as_str());
    }
    s.push_str(uri.path());
    s
}

const OPEN: &str = "{{secret:";
const OPEN_ENC: &str = "%7b%7bsecret:";

fn has_placeholder(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains(OPEN) || lower.contains(OPEN_ENC)
}

/// Replace every `{{secret:NAME}}` (also percent-encoded as
/// `%7B%7Bsecret:NAME%7D%7D`) in `text` with the secret's value.
/// Fails on a name `secrets` does not hold, rather than sending the
/// placeholder to the network.
pub fn substitute<'a>(text: &'a str, secrets: &BTreeMap<String, String>) -> Result<Cow<'a, str>, Denial> {
    substitute_with(text, |name| secrets.get(name).map(String::as_str).ok_or_else(|| Denial::UnknownSecret { name: name.to_string() }))
}

/// The names of the `{{secret:NAME}}` placeholders in `text`, in order
/// (parsed exactly as [`substitute`] parses them).
pub fn placeholder_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let _ = substitute_with(text, |name| {
        names.push(name.to_string());
        Ok("")
    });
    names
}

/// [`substitute`] with a lookup that may refuse a name.
fn substitute_with<'a, 's>(text: &'a str, mut lookup: impl FnMut(&str) -> Result<&'s str, Denial>) -> Result<Cow<'a, str>, Denial> {
    if !has_placeholder(text) {
        return Ok(Cow::Borrowed(text));
    }
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len() + 32);
    let mut i = 0;
    while i < text.len() {
        let rest = &lower[i..];
        let (open_len, close) = if rest.starts_with(OPEN) {
            (OPEN.len(), "}}")
        } else if rest.starts_with(OPEN_ENC) {
            (OPEN_ENC.len(), "%7d%7d")
        } else {
            let ch = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + ch]);
            i += ch;
            continue;
        };
        let after = i + open_len;
        let Some(end) = lower[after..].find(close) else {
            out.push_str(&text[i..]);
            break;
        };
        let name = &text[after..after + end];
        out.push_str(lookup(name)?);
        i = after + end + close.len();
    }
    Ok(Cow::Owned(out))
}

/// Finds secret values in text and bytes, and replaces them with
/// `[REDACTED:NAME]`. Each value is looked for as it is and percent-encoded
/// (upper- and lower-case hex), which is how it appears in URLs and form
/// bodies. A plugin that deliberately encodes a value some other way (base64,
/// XOR) is not caught by this; what protects the value is that the plugin
/// never receives it — this catches a value that reached it by accident (a
/// server echoing a token, say) before it goes further.
#[derive(Clone, Default)]
pub struct Redactor {
    inner: Option<Arc<Needles>>,
}

struct Needles {
    ac: AhoCorasick,
    /// Secret name of each pattern, by pattern index.
    names: Vec<String>,
    patterns: Vec<Vec<u8>>,
    longest: usize,
}

fn percent_encode(value: &str, upper: bool) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

impl Redactor {
    /// A redactor for these secret values (by name). Values shorter than
    /// [`MIN_SCANNED_SECRET`] are skipped.
    pub fn new(secrets: &BTreeMap<String, String>) -> Self {
        let mut names = Vec::new();
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for (name, value) in secrets {
            if value.len() < MIN_SCANNED_SECRET {
                continue;
            }
            for form in [value.clone(), percent_encode(value, true), percent_encode(value, false)] {
                if !patterns.iter().any(|p| p == form.as_bytes()) {
                    names.push(name.clone());
                    patterns.push(form.into_bytes());
                }
            }
        }
        if patterns.is_empty() {
            return Self { inner: None };
        }
        let ac = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&patterns);
        let Ok(ac) = ac else {
            // Only fails for absurd pattern sets; fall back to no scanning
            // rather than failing the plugin, and say so.
            tracing::error!("cannot build the secret scanner; leak detection is off for this plugin");
            return Self { inner: None };
        };
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        Self { inner: Some(Arc::new(Needles { ac, names, patterns, longest })) }
    }

    /// Whether there is nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// The length of the longest form of a value looked for (0 when none):
    /// how far past a cut a secret cut in half could reach (see
    /// [`crate::limits::cut_redacted`]).
    pub fn longest(&self) -> usize {
        self.inner.as_deref().map_or(0, |n| n.longest)
    }

    /// The name of the first secret whose value occurs in `hay`.
    pub fn find(&self, hay: &[u8]) -> Option<&str> {
        let n = self.inner.as_deref()?;
        n.ac.find(hay).map(|m| n.names[m.pattern().as_usize()].as_str())
    }

    /// The name of a secret whose value occurs in `text` as it is or after
    /// percent-decoding.
    pub fn find_in_url(&self, text: &str) -> Option<&str> {
        self.find(text.as_bytes()).or_else(|| self.find(&percent_decode(text.as_bytes())))
    }

    /// `text` with every secret value replaced by `[REDACTED:NAME]`, and the
    /// names of the secrets replaced.
    pub fn redact<'a>(&self, text: &'a str) -> (Cow<'a, str>, BTreeSet<String>) {
        let Some(n) = self.inner.as_deref() else { return (Cow::Borrowed(text), BTreeSet::new()) };
        let mut found = BTreeSet::new();
        let mut out = String::new();
        let mut last = 0;
        for m in n.ac.find_iter(text) {
            let name = &n.names[m.pattern().as_usize()];
            // Patterns are UTF-8 strings, so matches start and end on char boundaries.
            out.push_str(&text[last..m.start()]);
            out.push_str(&format!("[REDACTED:{name}]"));
            last = m.end();
            found.insert(name.clone());
        }
        if found.is_empty() {
            return (Cow::Borrowed(text), found);
        }
        out.push_str(&text[last..]);
        (Cow::Owned(out), found)
    }

    /// A streaming redactor for a body that arrives in chunks.
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor { redactor: self.clone(), held: Vec::new() }
    }
}

/// Redacts (or detects) secret values in a byte stream whose chunks may split
/// a value anywhere: bytes at the end of a chunk that could be the start of a
/// value are held back until the next chunk decides.
pub struct StreamRedactor {
    redactor: Redactor,
    held: Vec<u8>,
}

/// What one chunk produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// Bytes that may go on.
    pub bytes: Vec<u8>,
    /// Secrets whose values were replaced in them.
    pub found: BTreeSet<String>,
}

impl StreamRedactor {
    /// Feed a chunk; returns what can be passed on now.
    pub fn push(&mut self, data: &[u8]) -> Chunk {
        let Some(n) = self.redactor.inner.clone() else {
            return Chunk { bytes: data.to_vec(), found: BTreeSet::new() };
        };
        self.held.extend_from_slice(data);
        let buf = std::mem::take(&mut self.held);
        let mut out = Chunk::default();
        let mut last = 0;
        for m in n.ac.find_iter(&buf) {
            let name = &n.names[m.pattern().as_usize()];
            out.bytes.extend_from_slice(&buf[last..m.start()]);
            out.bytes.extend_from_slice(format!("[REDACTED:{name}]").as_bytes());
            last = m.end();
            out.found.insert(name.clone());
        }
        // Hold back the longest tail that is a proper prefix of some value.
        let tail = &buf[last..];
        let max = tail.len().min(n.longest.saturating_sub(1));
        let keep = (1..=max)
            .rev()
            .find(|&k| {
                let suffix = &tail[tail.len() - k..];
                n.patterns.iter().any(|p| p.len() > k && p.starts_with(suffix))
            })
            .unwrap_or(0);
        out.bytes.extend_from_slice(&tail[..tail.len() - keep]);
        self.held = tail[tail.len() - keep..].to_vec();
        out
    }

    /// The end of the stream: whatever was held back (never a whole value).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// How many bytes are held back, waiting for the next chunk.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }
}

/// A token bucket: `per_minute` requests, refilled continuously.
struct RateLimiter {
    per_minute: u32,
    tokens: f64,
    last: Instant,
    /// Whether the last request was refused (refusals after the first are not
    /// audited one by one, so a runaway plugin cannot flood the audit log).
    limited: bool,
    refused: u64,
}

impl RateLimiter {
    fn new(per_minute: u32) -> Self {
        Self { per_minute, tokens: f64::from(per_minute), last: Instant::now(), limited: false, refused: 0 }
    }

    /// Take a token. `Err(first)` when none is left; `first` says whether this
    /// is the first refusal since the last allowed request.
    fn take(&mut self, now: Instant) -> Result<u64, bool> {
        let rate = f64::from(self.per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.per_minute));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.limited = false;
            Ok(std::mem::take(&mut self.refused))
        } else {
            self.refused += 1;
            let first = !self.limited;
            self.limited = true;
            Err(first)
        }
    }
}

/// Everything the sandbox knows about one plugin, shared by all its instances:
/// grants, secret values, the redactor, the audit log and the rate limiter.
pub struct PluginSandbox {
    grants: Arc<PluginGrants>,
    secrets: BTreeMap<String, String>,
    redactor: Redactor,
    auditor: Auditor,
    rate: Mutex<RateLimiter>,
    /// The TLS client configuration: the public web roots plus the plugin's
    /// `ca` files (built once; an error is reported on each https request).
    tls: Result<Arc<rustls::ClientConfig>, String>,
    /// Kept-open connections of the plugin's requests (see [`pool`]).
    pool: Arc<ConnPool>,
}

impl PluginSandbox {
    /// The sandbox of a plugin with these grants and resolved secret values.
    pub fn new(grants: Arc<PluginGrants>, secrets: BTreeMap<String, String>, auditor: Auditor) -> Self {
        for (name, value) in &secrets {
            if value.len() < MIN_SCANNED_SECRET {
                tracing::warn!(
                    plugin = %grants.name,
                    "secret {name} is shorter than {MIN_SCANNED_SECRET} characters: it is substituted, but kata cannot scan for leaks of it"
                );
            }
        }
        let redactor = Redactor::new(&secrets);
        let rate = Mutex::new(RateLimiter::new(grants.limits.requests_per_minute));
        let tls = tls_config(&grants);
        if let Err(e) = &tls {
            tracing::error!(plugin = %grants.name, "{e}");
        }
        Self { grants, secrets, redactor, auditor, rate, tls, pool: Arc::new(ConnPool::new(pool::IDLE)) }
    }

    /// The value of secret `name` for a request to `host:port` (`shown` is
    /// the host as `hosts` would list it). The one place a value is handed
    /// out: an undefined secret, or one not bound to this host, is refused.
    pub fn secret_for(&self, name: &str, host: &str, port: u16, shown: &str) -> Result<&str, Denial> {
        let value = self.secrets.get(name).ok_or_else(|| Denial::UnknownSecret { name: name.to_string() })?;
        if let Some(w) = self.grants.webhook.as_ref().filter(|w| w.secret == name) {
            return Err(Denial::WebhookSecret { name: name.to_string(), at: w.at.clone() });
        }
        if !self.grants.secret_allowed(name, host, port) {
            let b = &self.grants.secret_hosts[name];
            return Err(Denial::UnboundSecret { name: name.to_string(), host: shown.to_string(), bound: b.describe(), at: b.at.clone() });
        }
        Ok(value)
    }

    /// `text` with every `{{secret:NAME}}` filled in for a connection to
    /// `host:port` (`shown`: the host as `hosts` would list it), or the first
    /// refusal from [`Self::secret_for`]; nothing is filled in unless every
    /// name passes. Anything that sends plugin-written text to the network
    /// (requests here, host-managed streams) fills secrets in through this.
    pub fn fill_secrets<'a>(&self, text: &'a str, host: &str, port: u16, shown: &str) -> Result<Cow<'a, str>, Denial> {
        substitute_with(text, |name| self.secret_for(name, host, port, shown))
    }

    /// The value of the secret that verifies the plugin's webhook requests
    /// (`[plugins.NAME] webhook`), for the host's own check; None when no
    /// webhook verification is configured.
    pub fn webhook_secret(&self) -> Option<&str> {
        self.grants.webhook.as_ref().and_then(|w| self.secrets.get(&w.secret)).map(String::as_str)
    }

    /// The plugin's grants.
    pub fn grants(&self) -> &PluginGrants {
        &self.grants
    }

    /// The plugin's TLS client configuration (web roots plus its `ca` files),
    /// for host-managed streams; the error says why it could not be built.
    pub fn tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.tls.clone()
    }

    /// Text the host writes to a granted stream on the plugin's behalf (an
    /// initial frame, a reply, a line from `send`), made ready the way
    /// [`NetworkGate::authorize`] makes a request ready: scanned for secret
    /// values first (the plugin never holds one, so a value is a leak), then
    /// `{{secret:NAME}}` placeholders filled in for secrets bound to
    /// `host:port` (`shown` as `hosts` would list it). Denials are audited by
    /// the caller.
    pub fn stream_text<'a>(&self, text: &'a str, host: &str, port: u16, shown: &str) -> Result<Cow<'a, str>, Denial> {
        if let Some(name) = self.redactor.find(text.as_bytes()) {
            return Err(Denial::Leak { secret: name.to_string(), place: "stream frame".into() });
        }
        let lookup = |name: &str| self.secret_for(name, host, port, shown);
        for name in placeholder_names(text) {
            lookup(&name)?;
        }
        substitute_with(text, lookup)
    }

    /// The plugin's secret scanner.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The plugin's audit log writer.
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// `text` with secret values replaced by `[REDACTED:NAME]`; a replacement
    /// is audited with `place` (e.g. `log`, `message`). In an `error` or a
    /// `log line`, wasi:http error codes a plugin wrote as Rust debug text
    /// (`ErrorCode::DnsError(DnsErrorPayload { … })`) become sentences
    /// ([`humanize_error_codes`]): these texts are read by people, in the log
    /// and in `kata status`.
    pub fn redact<'a>(&self, text: &'a str, place: &str) -> Cow<'a, str> {
        let text: Cow<'a, str> = if matches!(place, "error" | "log line") { humanize_error_codes(text) } else { Cow::Borrowed(text) };
        let (redacted, found) = self.redactor.redact(&text);
        let out: Cow<'a, str> = match redacted {
            Cow::Owned(o) => Cow::Owned(o),
            Cow::Borrowed(_) => text,
        };
        for name in found {
            self.auditor.record(
                Event::new(Kind::Redact, Verdict::Redact)
                    .target(place)
                    .detail(format!("the value of secret {name} was replaced by [REDACTED:{name}] in a {place}")),
            );
        }
        out
    }

    fn rate_check(&self, method: &str, url: &str) -> Result<(), Denial> {
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        match rate.take(Instant::now()) {
            Ok(0) => Ok(()),
            Ok(refused) => {
                drop(rate);
                tracing::info!(plugin = %self.grants.name, "requests flow again after {refused} were refused by the rate limit");
                Ok(())
            }
            Err(first) => {
                crate::limits::hit(&self.grants.name, "requests_per_minute", 1);
                let d = Denial::RateLimited { per_minute: self.grants.limits.requests_per_minute };
                if first {
                    drop(rate);
                    self.auditor.record(d.event(&self.grants.name, method, url).detail(format!(
                        "{} (further refusals are not audited until a request is allowed again)",
                        d.explain(&self.grants.name)
                    )));
                }
                Err(d)
            }
        }
    }
}

/// A request that passed the checks that need no network.
#[derive(Debug)]
pub struct Authorized {
    /// The grant that allows it.
    pub grant: NetworkGrant,
    /// The method.
    pub method: String,
    /// The URL without query, as the plugin wrote it.
    pub url: String,
    /// The host to resolve (without IPv6 brackets).
    pub host: String,
    /// The port to connect to.
    pub port: u16,
}

/// The wasi:http hook of one plugin instance.
pub struct NetworkGate {
    sandbox: Arc<PluginSandbox>,
}

impl NetworkGate {
    /// A gate for one instance of the plugin whose sandbox this is.
    pub fn new(sandbox: Arc<PluginSandbox>) -> Self {
        Self { sandbox }
    }

    /// The plugin's sandbox.
    pub fn sandbox(&self) -> &Arc<PluginSandbox> {
        &self.sandbox
    }

    /// Steps 1–5 of the module docs: rate limit, grant, leak scan, secret
    /// binding, then substitution. On success the request carries real secret values and
    /// may be sent once its address is checked. Denials are audited by the caller.
    pub fn authorize<B>(&self, req: &mut http::Request<B>) -> Result<Authorized, Denial> {
        let sb = &*self.sandbox;
        let method = req.method().as_str().to_string();
        let url = without_query(req.uri());
        sb.rate_check(&method, &url)?;
        let grant = check_uri(&sb.grants, &method, req.uri())?.clone();
        let authority = req.uri().authority().map(|a| a.as_str().to_string()).unwrap_or_default();
        if has_placeholder(&authority) {
            return Err(Denial::Malformed {
                reason: "a {{secret:…}} placeholder in the host name is not allowed; put secrets in the path, query or headers".into(),
            });
        }
        // Leak scan before substitution: at this point no secret value may be
        // anywhere in the request.
        let path_query = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
        if let Some(name) = sb.redactor.find_in_url(&format!("{authority}{path_query}")) {
            return Err(Denial::Leak { secret: name.to_string(), place: "URL".into() });
        }
        for (hname, value) in req.headers() {
            if let Some(name) = sb.redactor.find(value.as_bytes()).or_else(|| sb.redactor.find(&percent_decode(value.as_bytes()))) {
                return Err(Denial::Leak { secret: name.to_string(), place: format!("header {hname}") });
            }
        }
        // Every secret named anywhere must be defined and bound to this host,
        // checked before any value is filled in.
        let scheme = req.uri().scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = req.uri().host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = req.uri().port_u16().unwrap_or(if scheme == "http" { 80 } else { 443 });
        let shown = match (scheme.as_str(), port) {
            ("http", 80) | ("https", 443) => host.clone(),
            _ if host.contains(':') => format!("[{host}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        for text in std::iter::once(path_query.as_str()).chain(req.headers().values().filter_map(|v| v.to_str().ok())) {
            for name in placeholder_names(text) {
                sb.secret_for(&name, &host, port, &shown)?;
            }
        }
        // Substitute, in the path and query only (never the host).
        if let Cow::Owned(new) = sb.fill_secrets(&path_query, &host, port, &shown)? {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query =
                Some(new.parse().map_err(|e| Denial::Malformed { reason: format!("URL after secret substitution is invalid: {e}") })?);
            *req.uri_mut() = http::Uri::from_parts(parts)
                .map_err(|e| Denial::Malformed { reason: format!("URL after secret substitution is invalid: {e}") })?;
        }
        for value in req.headers_mut().values_mut() {
            let Ok(text) = value.to_str() else { continue };
            if let Cow::Owned(new) = sb.fill_secrets(text, &host, port, &shown)? {
                let mut v = http::HeaderValue::from_str(&new)
                    .map_err(|_| Denial::Malformed { reason: "a header value is invalid after secret substitution".into() })?;
                v.set_sensitive(true);
                *value = v;
            }
        }
        Ok(Authorized { grant, method, url, host, port })
    }
}

/// Step 6: resolve `host` and keep the addresses the grant allows. A name
/// resolving to non-public addresses only is denied unless the grant allows
/// private addresses; when it resolves to both, only the public ones are used.
pub async fn resolve_checked(a: &Authorized) -> Result<Vec<SocketAddr>, Result<Denial, HttpError>> {
    let addrs: Vec<SocketAddr> = if let Ok(ip) = a.host.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, a.port)]
    } else {
        match tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((a.host.as_str(), a.port))).await {
            Err(_) => return Err(Err(HttpError::DnsTimeout)),
            Ok(Err(e)) => return Err(Err(HttpError::DnsError { rcode: Some(e.to_string()), info_code: None })),
            Ok(Ok(it)) => it.collect(),
        }
    };
    if a.grant.allows_private_addresses() {
        return Ok(addrs);
    }
    let public: Vec<SocketAddr> = addrs.iter().copied().filter(|s| address_class(s.ip()).is_none()).collect();
    if public.is_empty() {
        let Some(first) = addrs.first() else { return Err(Err(HttpError::DestinationNotFound)) };
        return Err(Ok(Denial::PrivateAddress {
            host: a.host.clone(),
            addr: first.ip(),
            class: address_class(first.ip()).unwrap_or("non-public"),
            suggestion: private_suggestion(&a.grant),
        }));
    }
    Ok(public)
}

fn private_suggestion(g: &NetworkGrant) -> String {
    if g.methods().is_empty() {
        format!("{{ url = \"{}\", private = true }}", g.source)
    } else {
        let list = g.methods().iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ");
        format!("{{ url = \"{}\", methods = [{list}], private = true }}", g.source)
    }
}

impl WasiHttpHooks for NetworkGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = HttpResult<(http::Response<WasiBody>, IoFuture)>> + Send> {
        let sb = self.sandbox.clone();
        let plugin = sb.grants.name.clone();
        let method = request.method().as_str().to_string();
        // Whatever becomes of the request (denied, DNS or connect failure,
        // the server answering before reading it all), the plugin may still
        // be writing its body: keep taking it, so that its writes succeed and
        // the failure reaches it once, as the response's error code.
        let mut request = request.map(|body| DrainOnDrop { inner: Some(body) }.boxed_unsync());
        let authorized = match self.authorize(&mut request) {
            Ok(a) => a,
            Err(denial) => {
                // Rate-limit refusals audit themselves (once per episode).
                if !matches!(denial, Denial::RateLimited { .. }) {
                    sb.auditor.record(denial.event(&plugin, &method, &without_query(request.uri())));
                }
                let code = denial.error_code();
                return Box::new(async move { Err(code) });
            }
        };
        Box::new(async move {
            let addrs = match resolve_checked(&authorized).await {
                Ok(a) => a,
                Err(Ok(denial)) => {
                    sb.auditor.record(denial.event(&plugin, &authorized.method, &authorized.url));
                    return Err(denial.error_code());
                }
                Err(Err(e)) => return Err(e),
            };
            sb.auditor.record(
                Event::new(Kind::Network, Verdict::Allow)
                    .method(&authorized.method)
                    .target(&authorized.url)
                    .policy(grant_text(&authorized.grant))
                    .detail(format!("connecting to {}", addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))),
            );
            let request = request.map(|body| {
                if sb.redactor.is_empty() {
                    body
                } else {
                    LeakScanBody {
                        inner: body,
                        scan: sb.redactor.stream(),
                        sandbox: sb.clone(),
                        url: authorized.url.clone(),
                        method: authorized.method.clone(),
                        flushed: false,
                    }
                    .boxed_unsync()
                }
            });
            let tls = match request.uri().scheme_str() {
                Some("https") => Some((authorized.host.as_str(), sb.tls.clone().map_err(|e| HttpError::InternalError(Some(e)))?)),
                _ => None,
            };
            let (response, io) = send_pinned(&sb.pool, request, &addrs, tls, options).await?;
            guard_response(response, &sb, &authorized, options).map(|r| (r, io))
        })
    }
}

/// A request body that, when dropped before its end (the request was
/// refused, or the connection failed or stopped reading it), keeps reading
/// the rest in the background and throws it away. The plugin writes its
/// body through a channel whose reader is this body; were the reader simply
/// dropped, the plugin's next write would fail with "stream closed" — which
/// some guests treat as fatal (StarlingMonkey's `fetch` exits the instance)
/// — instead of it learning why from the response future. The drain ends
/// when the plugin finishes or drops the body, or its instance goes away.
struct DrainOnDrop {
    inner: Option<WasiBody>,
}

impl Body for DrainOnDrop {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let r = ready!(Pin::new(inner).poll_frame(cx));
        if !matches!(r, Some(Ok(_))) {
            // The end (or an error, after which nothing more comes).
            self.inner = None;
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_else(|| http_body::SizeHint::with_exact(0))
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else { return };
        if body.is_end_stream() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
        }
    }
}

/// A short sentence for the wasi:http `error-code` variant `name` (as Rust
/// spells it, e.g. `DnsError`), or None for a name that is not one.
pub fn error_code_sentence(name: &str) -> Option<&'static str> {
    Some(match name {
        "DnsTimeout" => "the DNS lookup timed out",
        "DnsError" => "the host name could not be resolved",
        "DestinationNotFound" => "the host was not found",
        "DestinationUnavailable" => "the host is unavailable",
        "DestinationIpProhibited" => "the destination address is not allowed",
        "DestinationIpUnroutable" => "the destination address cannot be reached",
        "ConnectionRefused" => "the server refused the connection",
        "ConnectionTerminated" => "the connection was closed unexpectedly",
        "ConnectionTimeout" => "connecting timed out",
        "ConnectionReadTimeout" => "the server stopped sending (read timeout)",
        "ConnectionWriteTimeout" => "the server stopped taking data (write timeout)",
        "ConnectionLimitReached" => "too many requests or connections (a rate or connection limit was reached)",
        "TlsProtocolError" => "the TLS handshake failed",
        "TlsCertificateError" => "the server's TLS certificate was not accepted",
        "TlsAlertReceived" => "the server ended TLS with an alert",
        "HttpRequestDenied" => "the request was denied by the workspace policy (kata.toml)",
        "HttpRequestLengthRequired" => "the server requires a Content-Length",
        "HttpRequestBodySize" => "the request body does not match its declared size",
        "HttpRequestMethodInvalid" => "the request method is invalid",
        "HttpRequestUriInvalid" => "the request URL is invalid",
        "HttpRequestUriTooLong" => "the request URL is too long",
        "HttpRequestHeaderSectionSize" | "HttpRequestHeaderSize" => "the request headers are too large",
        "HttpRequestTrailerSectionSize" | "HttpRequestTrailerSize" => "the request trailers are too large",
        "HttpResponseIncomplete" => "the response ended before it was complete",
        "HttpResponseHeaderSectionSize" | "HttpResponseHeaderSize" => "the response headers are too large",
        "HttpResponseBodySize" => "the response body is larger than allowed (limits.max_response) or than it said",
        "HttpResponseTrailerSectionSize" | "HttpResponseTrailerSize" => "the response trailers are too large",
        "HttpResponseTransferCoding" => "the response uses a transfer coding that is not supported",
        "HttpResponseContentCoding" => "the response uses a content coding that is not supported",
        "HttpResponseTimeout" => "the server did not answer in time",
        "HttpUpgradeFailed" => "the protocol upgrade failed",
        "HttpProtocolError" => "the HTTP exchange broke the protocol",
        "LoopDetected" => "a request loop was detected",
        "ConfigurationError" => "the HTTP client is misconfigured",
        "InternalError" => "the HTTP client failed internally",
        _ => return None,
    })
}

/// A wasi:http error as a short sentence for people (logs, `kata status`,
/// audit rows), never Rust debug text.
pub fn describe_http_error(e: &HttpError) -> String {
    match e {
        HttpError::Hyper(_) | HttpError::Connect(_) | HttpError::Tls(_) | HttpError::InvalidDnsNameError(_) => e.to_string(),
        HttpError::DnsError { rcode: Some(r), .. } => format!("the host name could not be resolved ({r})"),
        HttpError::TlsAlertReceived { alert_message: Some(m), .. } => format!("the server ended TLS with an alert: {m}"),
        HttpError::InternalError(Some(m)) => format!("the HTTP client failed: {m}"),
        HttpError::HttpRequestBodySize(Some(n)) => format!("the request body does not match its declared size ({n} bytes written)"),
        HttpError::HttpResponseBodySize(Some(n)) => {
            format!("the response body is larger than allowed (limits.max_response) or than it said ({n} bytes)")
        }
        other => {
            let debug = format!("{other:?}");
            let name = debug.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or("");
            error_code_sentence(name).map_or_else(|| other.to_string(), str::to_string)
        }
    }
}

/// `text` with every wasi:http error code written as Rust debug text —
/// `ErrorCode::ConnectionRefused`, `ErrorCode::DnsError(DnsErrorPayload {
/// rcode: Some("…"), info_code: None })` — replaced by its sentence
/// ([`error_code_sentence`]), with the first string it carries, if any, in
/// parentheses. Plugins built with older SDKs, or in other languages, put
/// such text in their errors.
pub fn humanize_error_codes(text: &str) -> Cow<'_, str> {
    const MARK: &str = "ErrorCode::";
    if !text.contains(MARK) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(MARK) {
        out.push_str(&rest[..i]);
        let after = &rest[i + MARK.len()..];
        let name_len = after.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(after.len());
        let name = &after[..name_len];
        let Some(sentence) = error_code_sentence(name) else {
            out.push_str(MARK);
            rest = after;
            continue;
        };
        // The payload: a balanced `( … )` right after the name.
        let mut end = name_len;
        let mut detail = None;
        if after[name_len..].starts_with('(') {
            let mut depth = 0usize;
            let mut in_str = false;
            let mut escaped = false;
            for (j, c) in after[name_len..].char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if in_str => escaped = true,
                    '"' => in_str = !in_str,
                    '(' | '{' if !in_str => depth += 1,
                    ')' | '}' if !in_str => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = name_len + j + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let payload = &after[name_len..end];
            detail = payload.find("Some(\"").and_then(|k| {
                let s = &payload[k + 6..];
                let mut value = String::new();
                let mut chars = s.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => return Some(value),
                        '\\' => value.extend(chars.next()),
                        c => value.push(c),
                    }
                }
                None
            });
        }
        out.push_str(sentence);
        if let Some(d) = detail.filter(|d| !d.is_empty()) {
            out.push_str(&format!(" ({d})"));
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The grant as the audit log shows it.
pub fn grant_text(g: &NetworkGrant) -> String {
    let mut s = g.source.clone();
    if !g.methods().is_empty() {
        s.push_str(&format!(" (methods {})", g.methods().join(", ")));
    }
    if g.private() {
        s.push_str(" (private)");
    }
    s
}

/// Cap and redact a response before the plugin sees it.
fn guard_response(
    response: http::Response<WasiBody>,
    sb: &Arc<PluginSandbox>,
    a: &Authorized,
    options: Option<RequestOptions>,
) -> HttpResult<http::Response<WasiBody>> {
    let max = sb.grants.limits.max_response_bytes;
    let (mut parts, body) = response.into_parts();
    let declared = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > max as u64
    {
        sb.auditor.record(limit_event(&sb.grants.name, a, max, Some(len)));
        return Err(HttpError::HttpResponseBodySize(Some(len)));
    }
    if !sb.redactor.is_empty() {
        let mut found = BTreeSet::new();
        for value in parts.headers.values_mut() {
            let Ok(text) = value.to_str() else { continue };
            let (new, names) = sb.redactor.redact(text);
            if let Cow::Owned(new) = new
                && let Ok(v) = http::HeaderValue::from_str(&new)
            {
                *value = v;
                found.extend(names);
            }
        }
        for name in found {
            sb.auditor.record(redact_event(a, &name, "response headers"));
        }
        // Redaction can change the body's length.
        parts.headers.remove(http::header::CONTENT_LENGTH);
    }
    let between = options.and_then(|o| o.between_bytes_timeout).unwrap_or(DEFAULT_TIMEOUT).max(Duration::from_nanos(1));
    let body = GuardedBody {
        inner: body,
        seen: 0,
        max,
        scan: sb.redactor.stream(),
        reported: BTreeSet::new(),
        sandbox: sb.clone(),
        method: a.method.clone(),
        url: a.url.clone(),
        grant: a.grant.clone(),
        between,
        timer: Box::pin(tokio::time::sleep(between)),
        done: false,
    };
    Ok(http::Response::from_parts(parts, body.boxed_unsync()))
}

/// The audit row of a response over `limits.max_response` (and its count in `kata status`).
fn limit_event(plugin: &str, a: &Authorized, max: usize, len: Option<u64>) -> Event {
    crate::limits::hit(plugin, "max_response", 1);
    let size = len.map_or_else(|| format!("more than {max} bytes"), |l| format!("{l} bytes"));
    Event::new(Kind::Limit, Verdict::Deny)
        .method(&a.method)
        .target(&a.url)
        .policy(format!("limits = {{ max_response = \"{}\" }}", human_size(max.saturating_mul(2))))
        .detail(format!(
            "plugin {plugin}: response of {size} from {} exceeds limits.max_response ({max} bytes); the plugin got an error instead",
            a.url
        ))
}

fn redact_event(a: &Authorized, name: &str, place: &str) -> Event {
    Event::new(Kind::Redact, Verdict::Redact).method(&a.method).target(&a.url).detail(format!(
        "the value of secret {name} came back in the {place} and was replaced by [REDACTED:{name}] before the plugin saw it"
    ))
}

fn human_size(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        n.to_string()
    }
}

/// The outgoing body, scanned for secret values as it streams; a value stops
/// the request before its bytes leave.
struct LeakScanBody {
    inner: WasiBody,
    scan: StreamRedactor,
    sandbox: Arc<PluginSandbox>,
    url: String,
    method: String,
    flushed: bool,
}

impl LeakScanBody {
    /// Stop the request: a secret value was found in its `place`. Audited.
    fn block(&self, secret: String, place: String) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let d = Denial::Leak { secret, place };
        self.sandbox.auditor.record(d.event(&self.sandbox.grants.name, &self.method, &self.url));
        Poll::Ready(Some(Err(HttpError::HttpRequestDenied)))
    }
}

impl Body for LeakScanBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let chunk = this.scan.push(&data);
                    if let Some(name) = chunk.found.first() {
                        return this.block(name.clone(), "body".into());
                    }
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk.bytes)))))
                }
                Err(frame) => {
                    if let Some(trailers) = frame.trailers_ref()
                        && let Some((hname, name)) =
                            trailers.iter().find_map(|(k, v)| this.sandbox.redactor.find(v.as_bytes()).map(|n| (k.clone(), n.to_string())))
                    {
                        return this.block(name, format!("trailer {hname}"));
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None if !this.flushed => {
                this.flushed = true;
                let rest = this.scan.finish();
                if rest.is_empty() { Poll::Ready(None) } else { Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest))))) }
            }
            None => Poll::Ready(None),
        }
    }
}

/// The incoming body as the plugin sees it: capped at `max_response`,
/// redacted, and with wasi:http's between-bytes timeout.
struct GuardedBody {
    inner: WasiBody,
    seen: usize,
    max: usize,
    scan: StreamRedactor,
    reported: BTreeSet<String>,
    sandbox: Arc<PluginSandbox>,
    method: String,
    url: String,
    grant: NetworkGrant,
    between: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                ready!(this.timer.as_mut().poll(cx));
                return Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)));
            }
            Poll::Ready(f) => f,
        };
        let deadline = tokio::time::Instant::now() + this.between;
        this.timer.as_mut().reset(deadline);
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    this.seen = this.seen.saturating_add(data.len());
                    if this.seen > this.max {
                        let a = Authorized {
                            grant: this.grant.clone(),
                            method: this.method.clone(),
                            url: this.url.clone(),
                            host: String::new(),
                            port: 0,
                        };
                        this.sandbox.auditor.record(limit_event(&this.sandbox.grants.name, &a, this.max, None));
                        this.done = true;
                        return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(this.seen as u64)))));
                    }
                    let chunk = this.scan.push(&data);
                    for name in chunk.found {
                        if this.reported.insert(name.clone()) {
                            let a = Authorized {
                                grant: this.grant.clone(),
                                method: this.method.clone(),
                                url: this.url.clone(),
                                host: String::new(),
                                port: 0,
                            };
                            this.sandbox.auditor.record(redact_event(&a, &name, "response body"));
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk.bytes)))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => {
                this.done = true;
                let rest = this.scan.finish();
                if rest.is_empty() { Poll::Ready(None) } else { Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest))))) }
            }
        }
    }
}

/// The TLS client configuration of a plugin: the public web roots
/// (webpki-roots) plus the certificates of its `ca` files.
fn tls_config(grants: &PluginGrants) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
    for file in &grants.ca {
        for cert in &file.certs {
            roots
                .add(cert.clone())
                .map_err(|e| format!("plugin {}: CA file {}: a certificate cannot be used ({e})", grants.name, file.path.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("plugin {}: cannot set up TLS: {e}", grants.name))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Step 7: send `req` over a connection to one of `addrs` (already checked),
/// with TLS for the name in `tls` when it is set, verified with its config.
/// This is wasmtime-wasi-http's `default_send_request` with two changes: it
/// connects to the address kata checked instead of resolving the name again,
/// and it reuses a kept-open connection of the plugin's `pool` to one of
/// those addresses (same TLS name) when there is one. A request that a
/// reused connection gave back unwritten is sent once more on a new
/// connection; one that may have been written is never sent again.
async fn send_pinned(
    pool: &Arc<ConnPool>,
    mut req: http::Request<WasiBody>,
    addrs: &[SocketAddr],
    tls: Option<(&str, Arc<rustls::ClientConfig>)>,
    options: Option<RequestOptions>,
) -> HttpResult<(http::Response<WasiBody>, IoFuture)> {
    let connect_timeout = options.and_then(|o| o.connect_timeout).unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options.and_then(|o| o.first_byte_timeout).unwrap_or(DEFAULT_TIMEOUT);

    // Only the path and query go on the request line (no proxy in between).
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    *req.uri_mut() = http::Uri::builder().path_and_query(path).build().map_err(|_| HttpError::HttpRequestUriInvalid)?;

    let name = tls.as_ref().map(|(n, _)| *n);
    let keep = !pool::says_close(req.headers());
    while keep && let Some((addr, mut sender)) = pool.checkout(addrs, name) {
        // Its last response was read; hyper marks it ready a moment later
        // (or finds it closed, and then the next one is tried).
        if !matches!(tokio::time::timeout(READY_WAIT, sender.ready()).await, Ok(Ok(()))) {
            continue;
        }
        match tokio::time::timeout(first_byte_timeout, sender.try_send_request(req)).await {
            Err(_) => return Err(HttpError::ConnectionReadTimeout),
            Ok(Ok(response)) => return Ok(received(pool, Some((addr, name, sender)), response)),
            Ok(Err(mut e)) => match e.take_message() {
                // Not written: the connection closed before it took the
                // request, so another connection may carry it.
                Some(r) => req = r,
                None => return Err(HttpError::from(e.into_error())),
            },
        }
    }

    let (addr, mut sender) = connect(addrs, tls, connect_timeout).await?;
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(req))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)?
        .map_err(HttpError::from)?;
    Ok(received(pool, keep.then_some((addr, name, sender)), response))
}

/// The response of a request for the plugin, after keeping its connection in
/// `pool` when `conn` is set and the response allows it (HTTP/1.1 without
/// `connection: close`). The connection has its own task, so the I/O future
/// wasi:http drives has nothing left to do.
fn received(
    pool: &Arc<ConnPool>,
    conn: Option<(SocketAddr, Option<&str>, pool::Sender)>,
    response: http::Response<hyper::body::Incoming>,
) -> (http::Response<WasiBody>, IoFuture) {
    let io: IoFuture = Box::new(async { Ok(()) });
    if let Some((addr, name, sender)) = conn
        && response.version() == http::Version::HTTP_11
        && !pool::says_close(response.headers())
    {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        pool.checkin(addr, name, sender, done.clone());
        let response = response.map(|inner| pool::Tracked { inner, done }.map_err(HttpError::from).boxed_unsync());
        return (response, io);
    }
    (response.map(|b| b.map_err(HttpError::from).boxed_unsync()), io)
}

/// A new connection to the first of `addrs` that accepts one, with TLS for
/// the name in `tls` when it is set; its I/O runs in a task of its own that
/// ends when the connection closes (hyper closes an idle connection whose
/// sender is dropped).
async fn connect(
    addrs: &[SocketAddr],
    tls: Option<(&str, Arc<rustls::ClientConfig>)>,
    connect_timeout: Duration,
) -> HttpResult<(SocketAddr, pool::Sender)> {
    use wasmtime_wasi_http::io::TokioIo;

    let mut last_err = None;
    let mut stream = None;
    for addr in addrs {
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                stream = Some((*addr, s));
                break;
            }
            Ok(Err(e)) => last_err = Some(HttpError::Connect(e)),
            Err(_) => last_err = Some(HttpError::ConnectionTimeout),
        }
    }
    let Some((addr, stream)) = stream else {
        return Err(last_err.unwrap_or(HttpError::DestinationNotFound));
    };
    // A request's head and body may go out in separate writes: without
    // this, Nagle's algorithm holds the body back until the peer's delayed
    // ACK of the head (40 ms on Linux) on a kept-open connection.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }

    let sender = match tls {
        Some((name, config)) => {
            let server_name = match name.parse::<IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::from(ip),
                Err(_) => rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|_| HttpError::HttpRequestUriInvalid)?,
            };
            let tls = tokio_rustls::TlsConnector::from(config).connect(server_name, stream).await.map_err(HttpError::Tls)?;
            let (s, c) = tokio::time::timeout(connect_timeout, hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(tls)))
                .await
                .map_err(|_| HttpError::ConnectionTimeout)??;
            tokio::spawn(drive(c));
            s
        }
        None => {
            let (s, c) = tokio::time::timeout(connect_timeout, hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)))
                .await
                .map_err(|_| HttpError::ConnectionTimeout)??;
            tokio::spawn(drive(c));
            s
        }
    };
    Ok((addr, sender))
}

/// Run a connection's I/O until it closes. Its errors reach the request or
/// response body they concern through hyper; here they are only logged.
async fn drive(conn: impl Future<Output = Result<(), hyper::Error>>) {
    if let Err(e) = conn.await {
        tracing::debug!("outgoing HTTP connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use std::path::Path;

    fn sandbox(extra: &str) -> Arc<PluginSandbox> {
        let p = Policy::parse(
            &format!(
                "[plugins.tg]\npath = \"x.wasm\"\nnetwork = [\"https://api.telegram.org/bot*\", \"http://127.0.0.1:9000\", \
                 {{ url = \"https://api.example.org/v1/\", methods = [\"GET\"] }}]\n\
                 secrets = {{ bot_token = \"env:X\" }}\n{extra}"
            ),
            Path::new("kata.toml"),
            Path::new("/ws"),
        )
        .expect("policy");
        let secrets = BTreeMap::from([("bot_token".to_string(), "123:SECRET".to_string())]);
        Arc::new(PluginSandbox::new(Arc::new(p.plugins["tg"].clone()), secrets, Auditor::log_only("tg")))
    }

    fn gate() -> NetworkGate {
        NetworkGate::new(sandbox(""))
    }

    fn req(url: &str) -> http::Request<()> {
        http::Request::get(url).header("authorization", "Bearer {{secret:bot_token}}").body(()).expect("req")
    }

    #[test]
    fn substitutes_for_granted_hosts() {
        let mut r = req("https://api.telegram.org/bot{{secret:bot_token}}/getUpdates?offset=3");
        let a = gate().authorize(&mut r).expect("allowed");
        assert_eq!(r.uri().to_string(), "https://api.telegram.org/bot123:SECRET/getUpdates?offset=3");
        assert_eq!(r.headers()["authorization"], "Bearer 123:SECRET");
        assert_eq!(a.url, "https://api.telegram.org/bot{{secret:bot_token}}/getUpdates");
        assert_eq!((a.host.as_str(), a.port), ("api.telegram.org", 443));
        let mut r = req("http://127.0.0.1:9000/x?t=%7B%7Bsecret:bot_token%7D%7D");
        gate().authorize(&mut r).expect("allowed");
        assert_eq!(r.uri().query(), Some("t=123:SECRET"));
    }

    #[test]
    fn a_text_prefix_grant_is_explained_with_its_star_form() {
        let p = Policy::parse(
            "[plugins.tg]\nnetwork = [\"https://api.telegram.org/bot\", { url = \"https://h.example/api\", methods = [\"GET\"] }]\n",
            Path::new("kata.toml"),
            Path::new("/ws"),
        )
        .expect("policy");
        let grants = &p.plugins["tg"];
        let uri: http::Uri = "https://api.telegram.org/bot123:abc/getMe".parse().expect("uri");
        let d = check_uri(grants, "GET", &uri).expect_err("segment grant");
        assert_eq!(
            d,
            Denial::SegmentOnly {
                method: "GET".into(),
                url: "https://api.telegram.org/bot123:abc/getMe".into(),
                grant: "https://api.telegram.org/bot".into(),
                suggestion: "\"https://api.telegram.org/bot*\"".into(),
            }
        );
        let text = d.explain("tg");
        assert!(text.contains("whole path segments") && text.contains("\"https://api.telegram.org/bot*\""), "{text}");
        assert_eq!(d.event("tg", "GET", "u").policy.as_deref(), Some("\"https://api.telegram.org/bot*\""));
        // The bare segment and below are still granted.
        for ok in ["https://api.telegram.org/bot", "https://api.telegram.org/bot/getMe"] {
            check_uri(grants, "GET", &ok.parse().expect("uri")).expect(ok);
        }
        // A table entry keeps its methods in the suggestion.
        let d = check_uri(grants, "GET", &"https://h.example/apiv2/x".parse().expect("uri")).expect_err("text only");
        assert!(
            matches!(&d, Denial::SegmentOnly { suggestion, .. }
            if suggestion == "{ url = \"https://h.example/api*\", methods = [\"GET\"] }"),
            "{d:?}"
        );
        // Another host is plainly not granted; a hidden dot segment is malformed.
        let d = check_uri(grants, "GET", &"https://other.example/bot1".parse().expect("uri")).expect_err("other host");
        assert!(matches!(d, Denial::NotGranted { .. }), "{d:?}");
        let d = check_uri(grants, "GET", &"https://h.example/api/..%2Fadmin".parse().expect("uri")).expect_err("hidden");
        assert!(matches!(&d, Denial::Malformed { reason } if reason.contains("hides a `.` or `..`")), "{d:?}");
    }

    #[test]
    fn error_codes_read_as_sentences_for_people() {
        let dns = "request to https://nx.example/ failed: ErrorCode::DnsError(DnsErrorPayload { rcode: Some(\"failed to lookup address information: Name or service not known\"), info_code: None })";
        assert_eq!(
            humanize_error_codes(dns),
            "request to https://nx.example/ failed: the host name could not be resolved \
             (failed to lookup address information: Name or service not known)"
        );
        assert_eq!(
            humanize_error_codes("a ErrorCode::ConnectionRefused, then ErrorCode::HttpResponseBodySize(Some(9)) b"),
            "a the server refused the connection, then the response body is larger than allowed \
             (limits.max_response) or than it said b"
        );
        assert_eq!(
            humanize_error_codes("x ErrorCode::InternalError(Some(\"a \\\"quoted\\\" (paren\")) y"),
            "x the HTTP client failed internally (a \"quoted\" (paren) y"
        );
        // Unknown names, and text without codes, are left alone.
        assert_eq!(humanize_error_codes("ErrorCode::NoSuchThing and more"), "ErrorCode::NoSuchThing and more");
        assert!(matches!(humanize_error_codes("plain"), Cow::Borrowed("plain")));
        // The host's own errors.
        for (e, want) in [
            (
                HttpError::DnsError { rcode: Some("no such host".into()), info_code: None },
                "the host name could not be resolved (no such host)",
            ),
            (HttpError::DnsTimeout, "the DNS lookup timed out"),
            (HttpError::HttpRequestDenied, "the request was denied by the workspace policy (kata.toml)"),
            (HttpError::ConnectionLimitReached, "too many requests or connections (a rate or connection limit was reached)"),
            (HttpError::HttpRequestHeaderSize { field_name: None, field_size: None }, "the request headers are too large"),
        ] {
            let text = describe_http_error(&e);
            assert_eq!(text, want);
        }
        // Errors and log lines reach people through the sandbox's redact.
        let sb = sandbox("");
        let e = sb.redact("poll failed: ErrorCode::ConnectionTimeout (token 123:SECRET)", "error");
        assert_eq!(e, "poll failed: connecting timed out (token [REDACTED:bot_token])");
        assert_eq!(sb.redact("ErrorCode::ConnectionTimeout", "log line"), "connecting timed out");
        assert_eq!(sb.redact("ErrorCode::ConnectionTimeout", "message"), "ErrorCode::ConnectionTimeout", "user text is not rewritten");
    }

    #[test]
    fn never_substitutes_for_other_hosts() {
        for url in [
            "https://evil.example/bot{{secret:bot_token}}",
            "https://api.telegram.org.evil.example/bot{{secret:bot_token}}",
            "http://api.telegram.org/bot{{secret:bot_token}}",
            "https://api.telegram.org/file/x",
            "http://127.0.0.1:9001/",
        ] {
            let mut r = req(url);
            let err = gate().authorize(&mut r).expect_err(url);
            assert!(matches!(err, Denial::NotGranted { .. }), "{url}: {err:?}");
            assert!(!r.uri().to_string().contains("SECRET"), "{url}");
            assert_eq!(r.headers()["authorization"], "Bearer {{secret:bot_token}}");
        }
    }

    fn bound_gate(secrets_line: &str) -> NetworkGate {
        let p = Policy::parse(
            &format!(
                "[plugins.tg]\npath = \"x.wasm\"\nnetwork = [\"https://api.telegram.org/bot*\", \"https://upload.example.org\", \
                 \"http://127.0.0.1:9000\", \"http://127.0.0.1:9001\"]\n{secrets_line}\n"
            ),
            Path::new("kata.toml"),
            Path::new("/ws"),
        )
        .expect("policy");
        let secrets = BTreeMap::from([("bot_token".to_string(), "123:SECRET".to_string())]);
        NetworkGate::new(Arc::new(PluginSandbox::new(Arc::new(p.plugins["tg"].clone()), secrets, Auditor::log_only("tg"))))
    }

    #[test]
    fn secrets_go_only_to_the_hosts_they_are_bound_to() {
        let gate = bound_gate("secrets = { bot_token = { from = \"env:X\", hosts = [\"api.telegram.org\", \"127.0.0.1:9000\"] } }");
        let mut r = req("https://api.telegram.org/bot{{secret:bot_token}}/getMe");
        gate.authorize(&mut r).expect("bound host");
        assert_eq!(r.uri().path(), "/bot123:SECRET/getMe");
        let mut r = req("http://127.0.0.1:9000/x?t={{secret:bot_token}}");
        gate.authorize(&mut r).expect("bound host and port");
        for (url, shown) in
            [("https://upload.example.org/x", "upload.example.org"), ("http://127.0.0.1:9001/x?t={{secret:bot_token}}", "127.0.0.1:9001")]
        {
            // The header carries the placeholder; the URL may too. Refused
            // before anything is substituted anywhere.
            let mut r = req(url);
            let d = gate.authorize(&mut r).expect_err(url);
            assert!(matches!(&d, Denial::UnboundSecret { name, host, .. } if name == "bot_token" && host == shown), "{d:?}");
            assert_eq!(r.headers()["authorization"], "Bearer {{secret:bot_token}}");
            assert!(!r.uri().to_string().contains("SECRET"));
            let msg = d.explain("tg");
            assert!(msg.contains("kata.toml:4") && msg.contains(&format!("add \"{shown}\" to `hosts`")), "{msg}");
            let e = d.event("tg", "GET", url);
            assert_eq!(e.policy.as_deref(), Some("kata.toml:4: secret bot_token is bound to api.telegram.org, 127.0.0.1:9000"));
        }
        // A granted, unbound host still gets requests without the secret.
        let mut r = http::Request::get("https://upload.example.org/x").body(()).expect("req");
        gate.authorize(&mut r).expect("no secret, no binding needed");
        // Without `hosts`, every granted host gets it (the documented default).
        let gate = bound_gate("secrets = { bot_token = \"env:X\" }");
        gate.authorize(&mut req("https://upload.example.org/x")).expect("unbound secret goes to any granted host");
        // `hosts = []`: nowhere.
        let gate = bound_gate("secrets = { bot_token = { from = \"env:X\", hosts = [] } }");
        let d = gate.authorize(&mut req("https://api.telegram.org/bot/x")).expect_err("bound to nothing");
        assert!(d.explain("tg").contains("to no host only"), "{d:?}");
    }

    #[test]
    fn the_webhook_secret_verifies_requests_and_is_never_sent() {
        let gate = bound_gate("secrets = { bot_token = \"env:X\" }\nwebhook = { verify = \"github\", secret = \"bot_token\" }");
        assert_eq!(gate.sandbox().webhook_secret(), Some("123:SECRET"));
        let mut r = req("https://api.telegram.org/bot{{secret:bot_token}}/getMe");
        let d = gate.authorize(&mut r).expect_err("the webhook secret is host-only");
        assert_eq!(d, Denial::WebhookSecret { name: "bot_token".into(), at: "kata.toml:5".into() });
        assert!(d.explain("tg").contains("verifies this plugin's webhooks"), "{d:?}");
        assert!(!r.uri().to_string().contains("SECRET"));
        assert_eq!(bound_gate("secrets = { bot_token = \"env:X\" }").sandbox().webhook_secret(), None);
    }

    #[test]
    fn methods_are_enforced_and_the_fix_is_named() {
        let mut r = req("https://api.example.org/v1/items");
        gate().authorize(&mut r).expect("GET is granted");
        let mut r = http::Request::post("https://api.example.org/v1/items").body(()).expect("req");
        let d = gate().authorize(&mut r).expect_err("POST is not");
        let msg = d.explain("tg");
        assert!(msg.contains(r#"methods = ["GET", "POST"]"#), "{msg}");
    }

    #[test]
    fn denial_names_the_line_to_add() {
        let mut r = req("http://10.1.2.3:8080/a/b?q=1");
        let d = gate().authorize(&mut r).expect_err("denied");
        let msg = d.explain("tg");
        assert!(msg.contains("\"http://10.1.2.3:8080\"") && msg.contains("[plugins.tg]"), "{msg}");
        assert!(!msg.contains("q=1"), "query must not be logged: {msg}");
        let mut r = req("https://example.org/");
        let msg = gate().authorize(&mut r).expect_err("denied").explain("tg");
        assert!(msg.contains("\"https://example.org\""), "{msg}");
    }

    #[test]
    fn unknown_secret_is_refused() {
        let mut r = req("https://api.telegram.org/bot{{secret:other}}/x");
        assert_eq!(gate().authorize(&mut r).map(|_| ()), Err(Denial::UnknownSecret { name: "other".into() }));
        let s = BTreeMap::new();
        assert_eq!(substitute("plain text", &s).expect("ok"), "plain text");
        assert_eq!(substitute("{{secret:unterminated", &s).expect("ok"), "{{secret:unterminated");
    }

    #[test]
    fn secret_values_in_a_request_are_a_leak_before_substitution() {
        for (url, header) in [
            ("https://api.telegram.org/bot123:SECRET/x", "Bearer {{secret:bot_token}}"),
            ("https://api.telegram.org/bot123%3ASECRET/x", "x"),
            ("https://api.telegram.org/bot123%3asecret/x?u=123%3ASECRET", "x"),
            ("https://api.telegram.org/bot/x?u=%31%32%33%3A%53ECRET", "x"),
            ("https://api.telegram.org/bot/x", "token 123:SECRET"),
        ] {
            let mut r = http::Request::get(url).header("x-h", header).body(()).expect("req");
            let d = gate().authorize(&mut r).expect_err(url);
            assert!(matches!(d, Denial::Leak { .. }), "{url}: {d:?}");
        }
        // The host's own substitution is not a leak.
        let mut r = req("https://api.telegram.org/bot{{secret:bot_token}}/x");
        assert!(gate().authorize(&mut r).is_ok());
    }

    #[test]
    fn placeholders_cannot_reach_the_host_name() {
        // http::Uri (which wasi:http builds every request from) rejects braces
        // and percent signs in the authority, so a plugin cannot put a secret
        // into a DNS name; `authorize` checks anyway in case that changes.
        for url in ["https://{{secret:t}}.example.net/", "https://%7B%7Bsecret:t%7D%7D.example.net/"] {
            assert!(url.parse::<http::Uri>().is_err(), "{url}");
        }
        assert!(has_placeholder("%7B%7Bsecret:t%7D%7D.example.net"));
    }

    #[test]
    fn rate_limit_refuses_after_the_bucket_is_empty() {
        let gate = NetworkGate::new(sandbox("limits = { requests_per_minute = 2 }"));
        for _ in 0..2 {
            gate.authorize(&mut req("https://api.telegram.org/bot/x")).expect("within the limit");
        }
        let d = gate.authorize(&mut req("https://api.telegram.org/bot/x")).expect_err("over");
        assert_eq!(d, Denial::RateLimited { per_minute: 2 });
        let mut rl = RateLimiter::new(60);
        let t0 = Instant::now();
        for _ in 0..60 {
            rl.take(t0).expect("burst");
        }
        assert_eq!(rl.take(t0), Err(true));
        assert_eq!(rl.take(t0), Err(false));
        assert_eq!(rl.take(t0 + Duration::from_secs(1)), Ok(2), "one per second refills");
    }

    #[test]
    fn redaction_replaces_every_form() {
        let secrets = BTreeMap::from([("tok".to_string(), "123:SECRET".to_string()), ("pin".to_string(), "42".to_string())]);
        let r = Redactor::new(&secrets);
        let (out, found) = r.redact("a 123:SECRET b 123%3ASECRET c 123%3aSECRET d 42");
        assert_eq!(out, "a [REDACTED:tok] b [REDACTED:tok] c [REDACTED:tok] d 42");
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["tok"]);
        assert!(matches!(r.redact("nothing here").0, Cow::Borrowed(_)));
    }

    #[test]
    fn streaming_redaction_sees_values_split_across_chunks() {
        let secrets = BTreeMap::from([("tok".to_string(), "123:SECRET".to_string())]);
        let r = Redactor::new(&secrets);
        let mut s = r.stream();
        let mut out = Vec::new();
        for part in ["xx 12", "3:SEC", "RET yy 1", "23"] {
            out.extend(s.push(part.as_bytes()).bytes);
        }
        out.extend(s.finish());
        assert_eq!(String::from_utf8(out).expect("utf8"), "xx [REDACTED:tok] yy 123");
    }

    #[test]
    fn address_classes() {
        for (ip, class) in [
            ("127.0.0.1", Some("loopback")),
            ("10.0.0.8", Some("private")),
            ("172.20.1.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("100.64.0.1", Some("shared (carrier-grade NAT)")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fe80::1", Some("link-local")),
            ("fd00::1", Some("private")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("93.184.216.34", None),
            ("2606:4700::1111", None),
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(address_class(ip), class, "{ip}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_need_an_explicit_grant() {
        let p = Policy::parse(
            "[plugins.a]\npath = \"x\"\nnetwork = [\"http://localhost:9\", \"http://127.0.0.1:9\", \"http://127.0.0.1.nip.example:9\", \
             { url = \"http://ip6-localhost:9\", private = true }]\n",
            Path::new("k.toml"),
            Path::new("/"),
        )
        .expect("policy");
        let g = &p.plugins["a"];
        let auth = |i: usize, host: &str| Authorized {
            grant: g.network[i].clone(),
            method: "GET".into(),
            url: String::new(),
            host: host.into(),
            port: 9,
        };
        assert!(resolve_checked(&auth(0, "localhost")).await.is_ok(), "localhost grant names its address");
        assert!(resolve_checked(&auth(1, "127.0.0.1")).await.is_ok(), "IP literal grant");
        // A plain name grant: `localhost` resolves to loopback, so it is refused.
        let d = resolve_checked(&auth(2, "localhost")).await.expect_err("loopback name");
        assert!(matches!(d, Ok(Denial::PrivateAddress { class: "loopback", .. })), "{d:?}");
        let msg = d.expect("denial").explain("a");
        assert!(msg.contains("private = true"), "{msg}");
        // The private opt-in allows it.
        assert!(resolve_checked(&auth(3, "localhost")).await.is_ok());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// However a body is cut into chunks, the stream redactor gives the
        /// same bytes as redacting it whole, and the value never survives.
        #[test]
        fn streaming_redaction_is_chunking_independent(
            secret in "[a-zA-Z0-9:/+=_-]{6,24}",
            parts in proptest::collection::vec("[a-zA-Z0-9:/ %_-]{0,20}", 1..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let text = parts.join(&secret);
            let redactor = Redactor::new(&BTreeMap::from([("s".to_string(), secret.clone())]));
            let (whole, _) = redactor.redact(&text);
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut stream = redactor.stream();
            let mut out = Vec::new();
            let mut last = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                out.extend(stream.push(&bytes[last..p]).bytes);
                last = p;
            }
            out.extend(stream.finish());
            let out = String::from_utf8(out).expect("utf8");
            prop_assert_eq!(&out, whole.as_ref());
            prop_assert!(!out.contains(&secret));
        }

        #[test]
        fn substitution_never_panics(text in ".{0,80}", name in "[a-z]{1,5}") {
            let secrets = BTreeMap::from([(name, "value-123".to_string())]);
            if let Ok(out) = substitute(&text, &secrets) && !has_placeholder(&text) {
                prop_assert_eq!(out.as_ref(), text.as_str());
            }
        }

        /// A request carrying the secret value anywhere in its path or query,
        /// raw or percent-encoded, is never authorized.
        #[test]
        fn a_value_in_the_url_is_never_authorized(
            before in "[a-zA-Z0-9/_-]{0,12}",
            after in "[a-zA-Z0-9/_=&-]{0,12}",
            encode in any::<bool>(),
            in_query in any::<bool>(),
        ) {
            let value = "123:SECRET";
            let shown = if encode { "123%3ASECRET" } else { value };
            let url = if in_query {
                format!("https://api.telegram.org/bot{before}?x={shown}{after}")
            } else {
                format!("https://api.telegram.org/bot{before}{shown}{after}")
            };
            let Ok(uri) = url.parse::<http::Uri>() else { return Ok(()) };
            let mut r = http::Request::get(uri).body(()).expect("req");
            let d = gate().authorize(&mut r).map(|_| ());
            prop_assert!(matches!(d, Err(Denial::Leak { .. })), "{}: {:?}", url, d);
        }
    }

    /// The granted hosts of the binding property below.
    const HOSTS: [(&str, &str); 4] = [
        ("https://api.telegram.org", "api.telegram.org"),
        ("https://files.example.org", "files.example.org"),
        ("http://127.0.0.1:9000", "127.0.0.1:9000"),
        ("https://a.svc.example.net", "*.svc.example.net"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// For any binding and any granted host, a request naming the secret
        /// (in path, query or header) is authorized exactly when the host is
        /// bound, and a refused request never holds the value.
        #[test]
        fn a_secret_reaches_exactly_its_bound_hosts(
            bound in proptest::collection::vec(any::<bool>(), 4),
            target in 0usize..4,
            place in 0u8..3,
            path in "[a-z0-9/_-]{0,12}",
        ) {
            let network = HOSTS.iter().map(|(u, _)| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
            let hosts = HOSTS.iter().zip(&bound).filter(|(_, b)| **b).map(|((_, h), _)| format!("\"{h}\"")).collect::<Vec<_>>().join(", ");
            let p = crate::policy::Policy::parse(
                &format!("[plugins.tg]\nnetwork = [{network}]\nsecrets = {{ t = {{ from = \"env:X\", hosts = [{hosts}] }} }}\n"),
                std::path::Path::new("k.toml"),
                std::path::Path::new("/"),
            )
            .expect("policy");
            let secrets = BTreeMap::from([("t".to_string(), "123:SECRET".to_string())]);
            let gate = NetworkGate::new(Arc::new(PluginSandbox::new(Arc::new(p.plugins["tg"].clone()), secrets, Auditor::log_only("tg"))));
            let base = HOSTS[target].0;
            let url = match place {
                0 => format!("{base}/{path}{{{{secret:t}}}}"),
                1 => format!("{base}/{path}?k=%7B%7Bsecret:t%7D%7D"),
                _ => format!("{base}/{path}"),
            };
            let mut r = http::Request::get(url.as_str()).header("x-k", if place == 2 { "{{secret:t}}" } else { "none" }).body(()).expect("req");
            let result = gate.authorize(&mut r);
            let held = format!("{} {}", r.uri(), r.headers().values().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(" "));
            if bound[target] {
                prop_assert!(result.is_ok(), "{}: {:?}", url, result);
                prop_assert!(held.contains("123:SECRET"));
            } else {
                prop_assert!(matches!(result, Err(Denial::UnboundSecret { .. })), "{}: {:?}", url, result);
                prop_assert!(!held.contains("123:SECRET"), "{}", held);
            }
        }
    }

    fn gate() -> NetworkGate {
        let p = crate::policy::Policy::parse(
            "[plugins.tg]\nnetwork = [\"https://api.telegram.org/bot*\"]\nsecrets = { t = \"env:X\" }\n",
            std::path::Path::new("k.toml"),
            std::path::Path::new("/"),
        )
        .expect("policy");
        let secrets = BTreeMap::from([("t".to_string(), "123:SECRET".to_string())]);
        NetworkGate::new(Arc::new(PluginSandbox::new(Arc::new(p.plugins["tg"].clone()), secrets, Auditor::log_only("tg"))))
    }
}
