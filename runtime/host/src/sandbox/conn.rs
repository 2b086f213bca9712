//! `kata:plugin/connections`: request/response connections over TCP or TLS
//! for protocols that are not HTTP (SMTP, IMAP, XMPP), checked like HTTP.
//!
//! Raw `wasi:sockets` stay refused (see [`crate::host::new_store`]); this is
//! a plugin's one way to a socket, and every step the wasi:http hook takes
//! for a request is taken here too, with the same code:
//!
//! - **open**: `tcp://host:port` or `tls://host:port` goes through
//!   [`NetworkGate::authorize`] as a `CONNECT` request — the rate limit
//!   (`limits.requests_per_minute`: one open is one request), the `network`
//!   grant (written with `tcp://` or `tls://`, as for `tcp-lines` streams), no
//!   placeholder in the host — then [`resolve_checked`] (a loopback or
//!   private address needs `private = true`), and connects to an address
//!   that passed. TLS, and STARTTLS later, verify the certificate for the
//!   URL's host name against the web PKI roots plus the plugin's `ca` files.
//!   Every open, allowed or denied, is an audit row naming the grant or the
//!   kata.toml line that would allow it.
//! - **write**: scanned for secret values first (the plugin never holds one,
//!   so a value is a leak, blocked), then `{{secret:NAME}}` is filled in for
//!   secrets bound to this destination (every name is checked before any is
//!   filled in; a refused one writes nothing), then `{{base64:…}}` becomes
//!   the base64 of its content.
//! - **read**: at most `limits.max_response` bytes per connection; secret
//!   values are replaced by `[REDACTED:NAME]` before the plugin sees them
//!   (whole lines for `read-line`; for `read`, bytes that could start a value
//!   are held back until the next bytes decide, as for HTTP bodies).
//! - **timeouts**: each operation waits at most what the plugin asks, and
//!   never past the call's own deadline (`limits.call_timeout`), so the
//!   plugin gets `timeout` back instead of being abandoned mid-call.
//!
//! A connection lives in its instance's resource table: it closes when the
//! plugin drops it, and when the instance is dropped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use wasmtime::component::Resource;

use super::{Denial, NetworkGate, PluginSandbox, StreamRedactor, grant_text, resolve_checked};
use crate::audit::{Event, Kind, Verdict};
use crate::host::PluginCtx;
use crate::host::v0_1_3::bindings::kata::plugin::connections::{self, ConnectionError};

/// The most `read` returns at once.
const MAX_READ: usize = 64 * 1024;

/// How long a write may take (the call's deadline caps it further).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The method a connection is checked and audited as (as `tcp-lines` streams are).
const METHOD: &str = "CONNECT";

/// One open connection, an entry in the instance's resource table.
pub struct Connection {
    /// The socket; `None` once it failed (a STARTTLS that did not complete).
    io: Option<Io>,
    /// The URL as the plugin wrote it, for audit rows and messages.
    url: String,
    /// The host name (for TLS and secret bindings) and port.
    host: String,
    port: u16,
    /// Bytes read from the socket and not yet handed out (unredacted).
    raw: Vec<u8>,
    /// Redacted bytes ready for `read`.
    ready: Vec<u8>,
    /// The redactor `read` passes bytes through.
    stream: StreamRedactor,
    /// Bytes read from the socket so far (`limits.max_response` caps it).
    received: usize,
    /// The peer closed its side.
    eof: bool,
    /// The budget was reported spent (audited once).
    spent: bool,
}

enum Io {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Tcp(s) => s.read(buf).await,
            Io::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Io::Tcp(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Io::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
        }
    }
}

impl Connection {
    /// The destination as secret `hosts` bindings name it (`host:port`).
    fn shown(&self) -> String {
        if self.host.contains(':') { format!("[{}]:{}", self.host, self.port) } else { format!("{}:{}", self.host, self.port) }
    }

    fn io(&mut self) -> Result<&mut Io, ConnectionError> {
        self.io.as_mut().ok_or_else(|| ConnectionError::Io("the connection failed earlier (during STARTTLS); open a new one".into()))
    }

    /// Read more bytes from the socket into `raw`, waiting until `deadline`.
    /// `Ok(false)` at the end of the stream.
    async fn fill(&mut self, sb: &PluginSandbox, deadline: Instant) -> Result<bool, ConnectionError> {
        if self.eof {
            return Ok(false);
        }
        let max = sb.grants().limits.max_response_bytes;
        let room = max.saturating_sub(self.received);
        if room == 0 {
            if !self.spent {
                self.spent = true;
                let plugin = &sb.grants().name;
                crate::limits::hit(plugin, "max_response", 1);
                sb.auditor().record(
                    Event::new(Kind::Limit, Verdict::Deny)
                        .method("READ")
                        .target(&self.url)
                        .policy(format!("limits = {{ max_response = \"{}\" }}", crate::limits::size_text(max.saturating_mul(2))))
                        .detail(format!(
                            "plugin {plugin}: the connection to {} read {max} bytes, all limits.max_response allows for one connection; \
                             nothing more is read from it",
                            self.url
                        )),
                );
            }
            return Err(ConnectionError::TooLarge);
        }
        let mut buf = vec![0u8; room.min(MAX_READ)];
        let io = self.io()?;
        let n = match tokio::time::timeout_at(deadline.into(), io.read(&mut buf)).await {
            Err(_) => return Err(ConnectionError::Timeout),
            Ok(Err(e)) => return Err(ConnectionError::Io(format!("reading from {}: {e}", self.url))),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.received += n;
        self.raw.extend_from_slice(&buf[..n]);
        Ok(true)
    }

    /// One line, without its terminator (redacted by the caller).
    async fn read_line(&mut self, sb: &PluginSandbox, deadline: Instant) -> Result<Vec<u8>, ConnectionError> {
        // Whatever `read` left behind comes first: its redacted bytes (a
        // second redaction finds nothing in them) and the bytes its
        // redactor held back.
        if !self.ready.is_empty() || self.stream.held_len() > 0 {
            let mut front = std::mem::take(&mut self.ready);
            front.extend(self.stream.finish());
            front.append(&mut self.raw);
            self.raw = front;
        }
        let max = sb.grants().limits.max_message_bytes;
        let mut scanned = 0;
        loop {
            if let Some(i) = self.raw[scanned..].iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.raw.drain(..=scanned + i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            scanned = self.raw.len();
            if self.raw.len() > max {
                self.raw.clear();
                crate::limits::hit(&sb.grants().name, "max_message", 1);
                return Err(ConnectionError::Io(format!(
                    "{} sent a line longer than limits.max_message ({max} bytes); it was dropped, and the connection is out of step: close it",
                    self.url
                )));
            }
            if !self.fill(sb, deadline).await? {
                if self.raw.is_empty() {
                    return Err(ConnectionError::Closed);
                }
                // The last line, without a terminator.
                return Ok(std::mem::take(&mut self.raw));
            }
        }
    }

    /// What has arrived, redacted, at most `max` bytes.
    async fn read(&mut self, sb: &PluginSandbox, max: usize, deadline: Instant) -> Result<Vec<u8>, ConnectionError> {
        loop {
            if !self.ready.is_empty() {
                let n = max.min(self.ready.len());
                return Ok(self.ready.drain(..n).collect());
            }
            if !self.raw.is_empty() {
                let chunk = self.stream.push(&std::mem::take(&mut self.raw));
                self.ready = chunk.bytes;
                for name in chunk.found {
                    audit_redaction(sb, &self.url, &name);
                }
                if !self.ready.is_empty() {
                    continue;
                }
            }
            if !self.fill(sb, deadline).await? {
                // The end: what the redactor held back is no whole value.
                self.ready = self.stream.finish();
                if self.ready.is_empty() {
                    return Err(ConnectionError::Closed);
                }
            }
        }
    }
}

fn audit_redaction(sb: &PluginSandbox, url: &str, name: &str) {
    sb.auditor().record(
        Event::new(Kind::Redact, Verdict::Redact)
            .target(url)
            .detail(format!("the value of secret {name} was replaced by [REDACTED:{name}] in what {url} sent")),
    );
}

/// A `tcp://host:port` or `tls://host:port` URL: the URI to check, and
/// whether it is TLS.
fn parse_url(url: &str) -> Result<(http::Uri, bool), String> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("connection URL {url:?} has no scheme; write tcp://host:port or tls://host:port"));
    };
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "tcp" => false,
        "tls" => true,
        other => return Err(format!("connection URL {url:?}: {other}:// is not supported; write tcp://host:port or tls://host:port")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!("connection URL {url:?} must be just tcp://host:port or tls://host:port (no path, query or user)"));
    }
    let uri: http::Uri = format!("{}://{authority}/", if tls { "tls" } else { "tcp" })
        .parse()
        .map_err(|e| format!("connection URL {url:?} is not a valid URL: {e}"))?;
    if uri.port_u16().is_none() {
        return Err(format!("connection URL {url:?} needs a port, e.g. tcp://mail.example.org:587"));
    }
    Ok((uri, tls))
}

/// The TLS name to verify the certificate for.
fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(rustls::pki_types::ServerName::from(ip)),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| format!("TLS name {host}: {e}")),
    }
}

async fn tls_handshake(sb: &PluginSandbox, host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
    let config = sb.tls()?;
    let name = server_name(host)?;
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("TLS with {host}: {e}"))
}

/// Connect to the first address that answers (all passed the check).
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut last = String::from("no address to connect to");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

const SECRET_OPEN: &[u8] = b"{{secret:";
const BASE64_OPEN: &[u8] = b"{{base64:";
const CLOSE: &[u8] = b"}}";

fn starts_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

/// Expand `{{secret:NAME}}` and `{{base64:…}}` in `data`, from position `i`
/// until the end or (inside a base64 placeholder) its closing `}}`.
/// Returns the output and where it stopped (after the closing braces, or
/// `None` when the input ended first). `lookup` gives a secret's value.
fn expand_from<'s>(
    data: &[u8],
    mut i: usize,
    nested: bool,
    lookup: &mut dyn FnMut(&str) -> Result<&'s str, Denial>,
) -> Result<(Vec<u8>, Option<usize>), Denial> {
    let mut out = Vec::with_capacity(data.len());
    while i < data.len() {
        let rest = &data[i..];
        if nested && rest.starts_with(CLOSE) {
            return Ok((out, Some(i + CLOSE.len())));
        }
        if starts_with_ci(rest, SECRET_OPEN) {
            let after = i + SECRET_OPEN.len();
            if let Some(end) = data[after..].windows(2).position(|w| w == CLOSE) {
                let name = String::from_utf8_lossy(&data[after..after + end]);
                out.extend_from_slice(lookup(&name)?.as_bytes());
                i = after + end + CLOSE.len();
                continue;
            }
        } else if starts_with_ci(rest, BASE64_OPEN) {
            let (inner, end) = expand_from(data, i + BASE64_OPEN.len(), true, lookup)?;
            if let Some(end) = end {
                out.extend_from_slice(base64(&inner).as_bytes());
                i = end;
                continue;
            }
            // Unterminated: the text stays as written.
        }
        out.push(data[i]);
        i += 1;
    }
    Ok((out, None))
}

/// `data` with its placeholders expanded (see the module docs).
fn expand<'s>(data: &[u8], lookup: &mut dyn FnMut(&str) -> Result<&'s str, Denial>) -> Result<Vec<u8>, Denial> {
    Ok(expand_from(data, 0, false, lookup)?.0)
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A denial as the plugin sees it, audited (with the line that would allow it).
fn denied(sb: &PluginSandbox, d: &Denial, url: &str, method: &str) -> ConnectionError {
    let plugin = &sb.grants().name;
    // Rate-limit refusals audit themselves (once per episode), and are not
    // the plugin's to fix in kata.toml: it should retry later.
    if let Denial::RateLimited { .. } = d {
        return ConnectionError::Io(d.explain(plugin));
    }
    sb.auditor().record(d.event(plugin, method, url));
    ConnectionError::Denied(d.explain(plugin))
}

impl PluginCtx {
    /// `timeout_ms` capped by the current call's deadline, less a margin so
    /// the plugin sees `timeout` and can still return before the host gives
    /// up on the call.
    fn op_deadline(&self, timeout: Duration) -> Instant {
        let now = Instant::now();
        let mut until = now + timeout;
        if let Some(d) = self.meter.deadline() {
            let left = d.saturating_duration_since(now);
            let margin = (left / 4).min(Duration::from_millis(250));
            until = until.min(now + left.saturating_sub(margin));
        }
        until
    }

    async fn open_connection(&mut self, url: String, timeout_ms: u32) -> Result<Connection, ConnectionError> {
        let sb = self.sandbox().clone();
        let plugin = sb.grants().name.clone();
        let deadline = self.op_deadline(Duration::from_millis(timeout_ms.into()));
        let (uri, tls) = match parse_url(&url) {
            Ok(u) => u,
            Err(reason) => return Err(denied(&sb, &Denial::Malformed { reason }, url.trim(), METHOD)),
        };
        let mut req = http::Request::new(());
        *req.uri_mut() = uri;
        *req.method_mut() = http::Method::CONNECT;
        let authorized = match NetworkGate::new(sb.clone()).authorize(&mut req) {
            Ok(a) => a,
            Err(d) => return Err(denied(&sb, &d, url.trim(), METHOD)),
        };
        let shown = url.trim().trim_end_matches('/').to_string();
        let work = async {
            let addrs = match resolve_checked(&authorized).await {
                Ok(a) => a,
                Err(Ok(d)) => return Err(denied(&sb, &d, &shown, METHOD)),
                Err(Err(e)) => {
                    return Err(ConnectionError::Io(format!(
                        "cannot resolve {}: {}",
                        authorized.host,
                        crate::sandbox::describe_http_error(&e)
                    )));
                }
            };
            sb.auditor().record(
                Event::new(Kind::Network, Verdict::Allow).method(METHOD).target(&shown).policy(grant_text(&authorized.grant)).detail(
                    format!(
                        "plugin {plugin}: opening a {} connection to {}",
                        if tls { "TLS" } else { "TCP" },
                        addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    ),
                ),
            );
            let tcp = connect(&addrs).await.map_err(|e| ConnectionError::Io(format!("cannot connect to {shown}: {e}")))?;
            let io = if tls {
                Io::Tls(Box::new(tls_handshake(&sb, &authorized.host, tcp).await.map_err(ConnectionError::Io)?))
            } else {
                Io::Tcp(tcp)
            };
            Ok(io)
        };
        let io = tokio::time::timeout_at(deadline.into(), work).await.map_err(|_| ConnectionError::Timeout)??;
        Ok(Connection {
            io: Some(io),
            url: shown,
            host: authorized.host,
            port: authorized.port,
            raw: Vec::new(),
            ready: Vec::new(),
            stream: sb.redactor().stream(),
            received: 0,
            eof: false,
            spent: false,
        })
    }
}

impl connections::Host for PluginCtx {}

impl connections::HostConnection for PluginCtx {
    async fn open(&mut self, url: String, timeout_ms: u32) -> wasmtime::Result<Result<Resource<Connection>, ConnectionError>> {
        match self.open_connection(url, timeout_ms).await {
            Ok(c) => Ok(Ok(self.table().push(c)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn write(&mut self, conn: Resource<Connection>, data: Vec<u8>) -> wasmtime::Result<Result<(), ConnectionError>> {
        let sb = self.sandbox().clone();
        let plugin = sb.grants().name.clone();
        let deadline = self.op_deadline(WRITE_TIMEOUT);
        let c = self.table().get_mut(&conn)?;
        let (url, host, port, shown) = (c.url.clone(), c.host.clone(), c.port, c.shown());
        // The plugin never holds a secret value: one in what it writes is a leak.
        let data = match sb.redactor().find(&data) {
            Some(name) => Err(Denial::Leak { secret: name.to_string(), place: "connection write".into() }),
            // Every secret named must be granted here before any is filled in.
            None => expand(&data, &mut |name| {
                sb.secret_for(name, &host, port, &shown)?;
                Ok("")
            })
            .and_then(|_| expand(&data, &mut |name| sb.secret_for(name, &host, port, &shown))),
        };
        let data = match data {
            Ok(d) => d,
            Err(d) => {
                sb.auditor().record(d.event(&plugin, "WRITE", &url));
                return Ok(Err(ConnectionError::Denied(d.explain(&plugin))));
            }
        };
        let c = self.table().get_mut(&conn)?;
        let io = match c.io() {
            Ok(io) => io,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match tokio::time::timeout_at(deadline.into(), io.write_all(&data)).await {
            Err(_) => Err(ConnectionError::Timeout),
            Ok(Err(e)) if matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) => {
                Err(ConnectionError::Closed)
            }
            Ok(Err(e)) => Err(ConnectionError::Io(format!("writing to {url}: {e}"))),
            Ok(Ok(())) => Ok(()),
        })
    }

    async fn read_line(&mut self, conn: Resource<Connection>, timeout_ms: u32) -> wasmtime::Result<Result<String, ConnectionError>> {
        let sb = self.sandbox().clone();
        let deadline = self.op_deadline(Duration::from_millis(timeout_ms.into()));
        let c = self.table().get_mut(&conn)?;
        Ok(match c.read_line(&sb, deadline).await {
            Ok(line) => {
                let text = String::from_utf8_lossy(&line);
                let (redacted, found) = sb.redactor().redact(&text);
                for name in found {
                    audit_redaction(&sb, &c.url, &name);
                }
                Ok(redacted.into_owned())
            }
            Err(e) => Err(e),
        })
    }

    async fn read(&mut self, conn: Resource<Connection>, max: u32, timeout_ms: u32) -> wasmtime::Result<Result<Vec<u8>, ConnectionError>> {
        let sb = self.sandbox().clone();
        let deadline = self.op_deadline(Duration::from_millis(timeout_ms.into()));
        let max = usize::try_from(max).unwrap_or(MAX_READ).clamp(1, MAX_READ);
        let c = self.table().get_mut(&conn)?;
        Ok(c.read(&sb, max, deadline).await)
    }

    async fn start_tls(&mut self, conn: Resource<Connection>, timeout_ms: u32) -> wasmtime::Result<Result<(), ConnectionError>> {
        let sb = self.sandbox().clone();
        let plugin = sb.grants().name.clone();
        let deadline = self.op_deadline(Duration::from_millis(timeout_ms.into()));
        let c = self.table().get_mut(&conn)?;
        let tcp = match c.io.take() {
            Some(Io::Tcp(tcp)) => tcp,
            Some(tls @ Io::Tls(_)) => {
                c.io = Some(tls);
                return Ok(Err(ConnectionError::Io(format!("{} already uses TLS", c.url))));
            }
            None => return Ok(Err(ConnectionError::Io("the connection failed earlier (during STARTTLS); open a new one".into()))),
        };
        // Bytes that arrived before the handshake must not be read as if
        // they came over TLS (STARTTLS command injection): refuse.
        if !c.raw.is_empty() || !c.ready.is_empty() || c.stream.held_len() > 0 {
            return Ok(Err(ConnectionError::Io(format!(
                "{} sent data after answering STARTTLS and before the TLS handshake; the connection was closed (read the \
                 server's whole answer before calling start-tls)",
                c.url
            ))));
        }
        let host = c.host.clone();
        let url = c.url.clone();
        let r = tokio::time::timeout_at(deadline.into(), tls_handshake(&sb, &host, tcp)).await;
        let c = self.table().get_mut(&conn)?;
        Ok(match r {
            Err(_) => Err(ConnectionError::Timeout),
            Ok(Err(e)) => Err(ConnectionError::Io(e)),
            Ok(Ok(tls)) => {
                c.io = Some(Io::Tls(Box::new(tls)));
                sb.auditor().record(
                    Event::new(Kind::Network, Verdict::Allow)
                        .method("STARTTLS")
                        .target(&url)
                        .detail(format!("plugin {plugin}: the connection to {url} now uses TLS, verified for {host}")),
                );
                Ok(())
            }
        })
    }

    async fn drop(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        self.table().delete(conn)?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn expand_with(data: &str, secrets: &[(&str, &str)]) -> Result<Vec<u8>, Denial> {
        let map: std::collections::BTreeMap<String, String> = secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        expand(data.as_bytes(), &mut |name| map.get(name).map(String::as_str).ok_or(Denial::UnknownSecret { name: name.into() }))
    }

    #[test]
    fn placeholders_expand_secrets_first_then_base64() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
        let out = expand_with("AUTH PLAIN {{base64:\0user\0{{secret:pw}}}}\r\n", &[("pw", "pass")]).unwrap();
        assert_eq!(out, b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n");
        assert_eq!(expand_with("PASS {{secret:pw}} {{SECRET:pw}}", &[("pw", "p}}w")]).unwrap(), b"PASS p}}w p}}w");
        // A value with braces does not end the base64 placeholder early.
        assert_eq!(expand_with("{{base64:{{secret:pw}}}}", &[("pw", "a}}b")]).unwrap(), base64(b"a}}b").as_bytes());
        // Unterminated placeholders stay as written; unknown names refuse.
        assert_eq!(expand_with("x {{base64:abc", &[]).unwrap(), b"x {{base64:abc");
        assert_eq!(expand_with("x {{secret:abc", &[]).unwrap(), b"x {{secret:abc");
        assert!(matches!(expand_with("{{secret:nope}}", &[]), Err(Denial::UnknownSecret { .. })));
        // Bytes that are not UTF-8 pass through.
        assert_eq!(expand(&[0xff, b'a', 0xfe], &mut |_| Ok("")).unwrap(), [0xff, b'a', 0xfe]);
    }

    #[test]
    fn urls_are_tcp_or_tls_with_a_port() {
        assert!(!parse_url("tcp://mail.example.org:587").unwrap().1);
        assert!(parse_url("TLS://imap.example.org:993/").unwrap().1);
        assert!(parse_url("tcp://mail.example.org").unwrap_err().contains("needs a port"));
        assert!(parse_url("smtp://mail.example.org:25").unwrap_err().contains("not supported"));
        assert!(parse_url("tcp://u@mail.example.org:25").unwrap_err().contains("no path, query or user"));
        assert!(parse_url("mail.example.org:25").unwrap_err().contains("no scheme"));
    }
}
