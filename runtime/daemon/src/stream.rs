//! Host-managed streams: for a channel plugin whose `describe()` lists
//! `subscribe` first, the daemon opens the connection the plugin asks for —
//! a websocket, server-sent events, or a line-oriented TCP/TLS connection
//! (IRC) — or listens for webhooks on a granted local address (each request a
//! JSON frame, answered with the plugin's first reply), and the plugin only
//! ever sees frames.
//!
//! Why the host and not the plugin: the connection goes through the same
//! network policy as every wasi:http request ([`NetworkGate::authorize`] for
//! the grant, the leak scan and secret substitution, then
//! [`resolve_checked`] so a granted name cannot point at a private address),
//! TLS is the host's, a denial is audited with the kata.toml line that would
//! allow it, and a plugin cannot hold a socket open past its limits. One
//! session, in order:
//!
//! 1. `subscribe()` in the stream instance (again before every reconnect, so
//!    the plugin can put resume tokens or a fresh login in it);
//! 2. check and open the URL (denied: audited, logged, retried slowly, as
//!    the user has to edit kata.toml);
//! 3. write the initial frames (`{{secret:NAME}}` filled in for secrets
//!    bound to the host, after a leak scan);
//! 4. hand every incoming frame (secret values redacted, at most
//!    `limits.max_response` bytes) to `on-frame` in the same instance, store
//!    the messages it returns through the same inbox path as `poll`
//!    ([`Db::record_poll`] with no cursor), and write back its replies;
//!    frames beyond [`DEFAULT_FRAMES_PER_SECOND`] (config
//!    `frames_per_second`) wait, which pushes back on the server through TCP
//!    flow control rather than dropping anything;
//! 5. an empty text frame every `heartbeat-ms`, and lines from `send`
//!    ([`Outlet`]) written as they come;
//! 6. on close or error: reconnect with exponential backoff and jitter
//!    (reset once a connection delivered a frame).
//!
//! `send` runs in the egress loop's own instance; a plugin that sends over
//! its stream returns the frames in `send-receipt.frames`, and
//! [`deliver_frames`](crate::channel::deliver_frames) hands them to the
//! session through the plugin's [`Outlet`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite;

use crate::audit::{Event, Kind, Verdict};
use crate::channel::Slot;
use crate::health::Health;
use crate::host::latest::{Frame, IngressMode, StreamKind, Subscription};
use crate::plugin::ChannelPlugin;
use crate::sandbox::{Denial, NetworkGate, grant_text, resolve_checked};
use crate::store::Db;

/// Frames handed to a plugin per second, unless `config.frames_per_second` says otherwise.
pub const DEFAULT_FRAMES_PER_SECOND: u32 = 100;
/// Messages one frame may produce; more is treated as a plugin bug.
const MAX_MESSAGES_PER_FRAME: usize = 1000;
/// How long connecting (TCP, TLS and the handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write to the stream may take.
const WRITE_TIMEOUT: Duration = crate::outlet::WRITE_TIMEOUT;
/// The least a refused stream waits before asking again: nothing changes
/// until the user edits kata.toml.
const DENIED_RETRY: Duration = Duration::from_secs(30);
/// Frames read ahead of the plugin (the reader waits when they are not taken).
const READ_AHEAD: usize = 16;

pub use crate::outlet::Outlet;

/// The ingress loop of a channel plugin: a stream session loop when its
/// `describe()` lists `subscribe` first, otherwise [`crate::channel::ingress`]
/// (polling).
pub async fn ingress(
    plugin: Arc<ChannelPlugin>,
    db: Db,
    health: Arc<Health>,
    inbox_ready: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = reconnect_backoff();
    let name = plugin.name();
    let mut attempted = false;
    let subscribes = loop {
        // A plugin that cannot even describe itself is failing like any
        // other: it counts towards restarts and the breaker, and its error
        // is the last error `kata status` shows.
        let hold = health.breaker_wait(name);
        if !hold.is_zero() {
            if sleep_or_shutdown(hold, &mut shutdown).await {
                return;
            }
            continue;
        }
        health.start_attempt(name, attempted);
        attempted = true;
        let described = match plugin.instantiate().await {
            Ok(mut i) => i.describe().await,
            Err(e) => Err(e),
        };
        match described {
            Ok(info) => break info.ingress.first() == Some(&IngressMode::Subscribe),
            Err(e) => {
                let d = backoff.next().unwrap_or(Duration::from_secs(300));
                let text = format!("cannot describe the plugin: {e}");
                let d = health.failure_delay(name, name, &text, crate::channel::fault_of(&e), d);
                health.error_kind(name, crate::channel::error_kind(&e));
                tracing::warn!(plugin = %name, "{text}; retrying in {d:?}");
                if sleep_or_shutdown(d, &mut shutdown).await {
                    return;
                }
            }
        }
    };
    if subscribes {
        run(plugin, db, health, inbox_ready, shutdown).await;
    } else {
        crate::channel::ingress(plugin, db, health, inbox_ready, shutdown).await;
    }
}

fn reconnect_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(300))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}

/// Run stream sessions until shutdown.
async fn run(plugin: Arc<ChannelPlugin>, db: Db, health: Arc<Health>, inbox_ready: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let name = plugin.name().to_string();
    let mut slot = Slot::new(plugin.clone(), health.clone(), "stream");
    let mut backoff = reconnect_backoff();
    let l = &plugin.grants.limits;
    let budget = std::sync::Mutex::new(crate::channel::InboundBudget::new(l.messages_per_minute, l.bytes_per_minute));
    let ctx = Ctx { plugin: plugin.clone(), db, health: health.clone(), inbox_ready, budget };
    loop {
        if *shutdown.borrow() {
            break;
        }
        let Some(inst) = slot.live(&mut shutdown).await else { continue };
        let sub = match inst.subscribe().await {
            Ok(s) => s,
            Err(e) => {
                let d = slot.failed(&e);
                tracing::warn!(plugin = %name, "subscribe failed: {e}; retrying in {d:?}");
                if sleep_or_shutdown(d, &mut shutdown).await {
                    break;
                }
                continue;
            }
        };
        let delay = match open(&plugin, &sub).await {
            Err(Opened::Denied) => {
                // Already logged and audited with the line to add; `kata status` shows it too.
                let text = format!("the stream {} is refused by the policy (`kata audit` names the kata.toml line)", shown_url(&sub.url));
                health.failure(&name, &text, crate::health::Fault::External);
                health.error_kind(&name, "invalid-config");
                health.connected(&name, false);
                DENIED_RETRY.max(backoff.next().unwrap_or(DENIED_RETRY))
            }
            Err(Opened::Failed(e)) => {
                let d = backoff.next().unwrap_or(Duration::from_secs(300));
                tracing::warn!(plugin = %name, "cannot open the stream {}: {e}; retrying in {d:?}", shown_url(&sub.url));
                health.failure(&name, &format!("cannot open the stream {}: {e}", shown_url(&sub.url)), crate::health::Fault::External);
                health.error_kind(&name, "network");
                health.connected(&name, false);
                d
            }
            Ok(conn) => {
                tracing::info!(plugin = %name, url = %shown_url(&sub.url), "stream connected");
                health.connected(&name, true);
                let (end, delivered) = session(&ctx, &mut slot, conn, &sub, &mut shutdown).await;
                health.connected(&name, false);
                if delivered {
                    backoff = reconnect_backoff();
                }
                match end {
                    End::Shutdown => break,
                    End::Closed(why) => {
                        let d = backoff.next().unwrap_or(Duration::from_secs(300));
                        tracing::warn!(plugin = %name, "stream {} closed: {why}; reconnecting in {d:?}", shown_url(&sub.url));
                        d
                    }
                    // The plugin's error says how long at least: an auth or
                    // config error waits for the user (30 s and more), so a
                    // plugin that fails on its first frames is no storm.
                    End::Failed(why, wait) => {
                        let d = backoff.next().unwrap_or(Duration::from_secs(300)).max(wait);
                        tracing::warn!(plugin = %name, "stream {} closed: {why}; reconnecting in {d:?}", shown_url(&sub.url));
                        d
                    }
                }
            }
        };
        if sleep_or_shutdown(delay, &mut shutdown).await {
            break;
        }
    }
    slot.close().await;
    health.stopped(&name);
    tracing::debug!(plugin = %name, "stream ingress stopped");
}

/// The URL without its query (which may carry placeholders or tokens).
fn shown_url(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

struct Ctx {
    plugin: Arc<ChannelPlugin>,
    db: Db,
    health: Arc<Health>,
    inbox_ready: Arc<Notify>,
    /// `limits.messages_per_minute` and `bytes_per_minute`, across sessions:
    /// over them, the session reads its stream later.
    budget: std::sync::Mutex<crate::channel::InboundBudget>,
}

/// Why a session ended.
enum End {
    Shutdown,
    Closed(String),
    /// `on-frame` returned an error; reconnect no sooner than the wait the
    /// error asks for ([`Slot::failed`]).
    Failed(String, Duration),
}

/// Why a stream could not be opened.
enum Opened {
    /// The policy refused it (already audited and logged).
    Denied,
    /// A network or protocol failure.
    Failed(String),
}

/// An open stream: incoming frames from a reader task, and the writing half.
struct Conn {
    frames: mpsc::Receiver<Result<Frame, String>>,
    /// Webhook requests, each with where its response goes.
    requests: Option<mpsc::Receiver<Request>>,
    reader: tokio::task::JoinHandle<()>,
    writer: Writer,
    /// Where secrets in written frames may go.
    host: String,
    port: u16,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A webhook request as a frame, and where the plugin's answer goes (the
/// first reply frame, or None for `204 No Content`).
type Request = (Frame, oneshot::Sender<Option<Frame>>);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;
type WsSink = futures_util::stream::SplitSink<tokio_tungstenite::WebSocketStream<BoxIo>, tungstenite::Message>;

enum Writer {
    Lines(tokio::io::WriteHalf<BoxIo>),
    Ws(Box<WsSink>),
    /// Server-sent events only come in.
    ReadOnly(&'static str),
}

impl Writer {
    async fn write(&mut self, frame: Frame) -> Result<(), String> {
        let fut = async {
            match (self, frame) {
                (Writer::Lines(w), Frame::Text(t)) => {
                    let mut line = t.into_bytes();
                    line.extend_from_slice(b"\r\n");
                    w.write_all(&line).await.map_err(|e| e.to_string())?;
                    w.flush().await.map_err(|e| e.to_string())
                }
                (Writer::Lines(w), Frame::Binary(b)) => {
                    w.write_all(&b).await.map_err(|e| e.to_string())?;
                    w.flush().await.map_err(|e| e.to_string())
                }
                (Writer::Ws(w), Frame::Text(t)) => w.send(tungstenite::Message::text(t)).await.map_err(|e| e.to_string()),
                (Writer::Ws(w), Frame::Binary(b)) => w.send(tungstenite::Message::binary(Bytes::from(b))).await.map_err(|e| e.to_string()),
                (Writer::ReadOnly(kind), _) => Err(format!("{kind} streams are read-only; nothing can be written to them")),
            }
        };
        tokio::time::timeout(WRITE_TIMEOUT, fut).await.map_err(|_| format!("a write took longer than {WRITE_TIMEOUT:?}"))?
    }
}

/// The scheme a stream URL is checked and connected as, its default port,
/// whether it uses TLS and the method its grant is checked for.
fn target(sub: &Subscription) -> Result<(http::Uri, &'static str, bool), String> {
    let url = sub.url.trim();
    let (scheme, _) = url.split_once("://").ok_or_else(|| format!("stream URL {:?} has no scheme", shown_url(url)))?;
    let scheme = scheme.to_ascii_lowercase();
    let (checked, default_port, tls, method) = match (sub.kind, scheme.as_str()) {
        (StreamKind::TcpLines, "tcp") => ("tcp", None, false, "CONNECT"),
        (StreamKind::TcpLines, "tls") => ("tls", None, true, "CONNECT"),
        (StreamKind::TcpLines, "irc") => ("tcp", Some(6667), false, "CONNECT"),
        (StreamKind::TcpLines, "ircs") => ("tls", Some(6697), true, "CONNECT"),
        (StreamKind::Websocket, "ws") => ("ws", Some(80), false, "GET"),
        (StreamKind::Websocket, "wss") => ("wss", Some(443), true, "GET"),
        (StreamKind::ServerSentEvents, "http") => ("http", Some(80), false, "GET"),
        (StreamKind::ServerSentEvents, "https") => ("https", Some(443), true, "GET"),
        (StreamKind::Webhook, "http") => ("http", Some(80), false, "LISTEN"),
        (kind, s) => {
            let want = match kind {
                StreamKind::TcpLines => "tcp://, tls://, irc:// or ircs://",
                StreamKind::Websocket => "ws:// or wss://",
                StreamKind::ServerSentEvents => "http:// or https://",
                StreamKind::Webhook => "http:// (a local address to listen on)",
            };
            return Err(format!("a {kind:?} stream needs a {want} URL, not {s}://"));
        }
    };
    let rest = &url[scheme.len() + 3..];
    let uri: http::Uri =
        format!("{checked}://{rest}").parse().map_err(|e| format!("stream URL {:?} is not a valid URL: {e}", shown_url(url)))?;
    let mut parts = uri.into_parts();
    let authority = parts.authority.clone().ok_or_else(|| format!("stream URL {:?} has no host", shown_url(url)))?;
    if authority.port_u16().is_none() {
        let port = default_port.ok_or_else(|| format!("stream URL {:?} needs a port (tcp://host:port)", shown_url(url)))?;
        let host = authority.host();
        parts.authority = Some(format!("{host}:{port}").parse().map_err(|e| format!("stream URL host: {e}"))?);
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    let uri = http::Uri::from_parts(parts).map_err(|e| format!("stream URL: {e}"))?;
    Ok((uri, method, tls))
}

/// Check the subscription against the policy and open it.
async fn open(plugin: &ChannelPlugin, sub: &Subscription) -> Result<Conn, Opened> {
    let sb = plugin.sandbox();
    let name = plugin.name();
    let (uri, method, tls) = match target(sub) {
        Ok(t) => t,
        Err(reason) => {
            let d = Denial::Malformed { reason };
            sb.auditor().record(d.event(name, "SUBSCRIBE", shown_url(&sub.url)));
            return Err(Opened::Denied);
        }
    };
    let mut req = match sub.kind {
        StreamKind::Websocket => match tungstenite::client::IntoClientRequest::into_client_request(&uri) {
            Ok(r) => r,
            Err(e) => return Err(Opened::Failed(format!("cannot build the websocket request: {e}"))),
        },
        _ => {
            let mut r = http::Request::new(());
            *r.uri_mut() = uri.clone();
            *r.method_mut() = http::Method::from_bytes(method.as_bytes()).unwrap_or(http::Method::GET);
            r
        }
    };
    if sub.kind == StreamKind::Websocket {
        // The handshake is a GET, but the grant is checked like any other.
        *req.method_mut() = http::Method::GET;
    }
    for (k, v) in &sub.headers {
        let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) else {
            let d = Denial::Malformed { reason: format!("stream header {k:?} is not a valid HTTP header") };
            sb.auditor().record(d.event(name, method, shown_url(&sub.url)));
            return Err(Opened::Denied);
        };
        req.headers_mut().append(k, v);
    }
    if sub.kind == StreamKind::ServerSentEvents && !req.headers().contains_key(http::header::ACCEPT) {
        req.headers_mut().insert(http::header::ACCEPT, http::HeaderValue::from_static("text/event-stream"));
    }
    // Steps of the wasi:http hook, in the same code: rate limit, grant, leak
    // scan, secret binding and substitution, then resolve-then-check.
    let gate = NetworkGate::new(sb.clone());
    let authorized = match gate.authorize(&mut req) {
        Ok(a) => a,
        Err(d) => {
            if !matches!(d, Denial::RateLimited { .. }) {
                sb.auditor().record(d.event(name, method, &crate::sandbox::without_query(&uri)));
            }
            return Err(Opened::Denied);
        }
    };
    // The method audited for a tcp stream is CONNECT, whatever the request says.
    let method = authorized.method.clone();
    let addrs = match resolve_checked(&authorized).await {
        Ok(a) => a,
        Err(Ok(d)) => {
            sb.auditor().record(d.event(name, &method, &authorized.url));
            return Err(Opened::Denied);
        }
        Err(Err(e)) => {
            return Err(Opened::Failed(format!("cannot resolve {}: {}", authorized.host, crate::sandbox::describe_http_error(&e))));
        }
    };
    sb.auditor().record(
        Event::new(Kind::Network, Verdict::Allow)
            .method(&method)
            .target(&authorized.url)
            .policy(grant_text(&authorized.grant))
            .detail(format!("opening a {:?} stream to {}", sub.kind, addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))),
    );
    let max = sb.grants().limits.max_response_bytes;
    if sub.kind == StreamKind::Webhook {
        // Requests are matched against the subscribed path by the grants'
        // own rule (whole segments, after normalising): check it reads as one.
        if let Err(e) = crate::policy::PathPrefix::parse(uri.path()) {
            return Err(Opened::Failed(format!("webhook path {}: {e}", uri.path())));
        }
        // Signatures are checked here, before a request becomes a frame, when
        // kata.toml says how (`[plugins.NAME] webhook`).
        let check = match (&sb.grants().webhook, sb.webhook_secret()) {
            (Some(rule), Some(secret)) => {
                Some(Arc::new(Check { verifier: crate::webhook::Verifier::new(rule.clone(), secret), auditor: sb.auditor().clone() }))
            }
            _ => None,
        };
        return listen(&addrs, uri.path().to_string(), max, check).await.map_err(Opened::Failed).map(|(frames, requests, reader)| Conn {
            frames,
            requests: Some(requests),
            reader,
            writer: Writer::ReadOnly("webhook"),
            host: authorized.host,
            port: authorized.port,
        });
    }
    let io = tokio::time::timeout(CONNECT_TIMEOUT, connect(&addrs, tls.then_some(authorized.host.as_str()), sb))
        .await
        .map_err(|_| Opened::Failed(format!("connecting took longer than {CONNECT_TIMEOUT:?}")))?
        .map_err(Opened::Failed)?;
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let (reader, writer) = match sub.kind {
        StreamKind::TcpLines => {
            let (r, w) = tokio::io::split(io);
            (tokio::spawn(read_lines(r, max, tx)), Writer::Lines(w))
        }
        StreamKind::Websocket => {
            let config = tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max));
            let handshake = tokio_tungstenite::client_async_with_config(req, io, Some(config));
            let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
                .await
                .map_err(|_| Opened::Failed("the websocket handshake timed out".into()))?
                .map_err(|e| Opened::Failed(format!("websocket handshake: {e}")))?;
            let (sink, stream) = ws.split();
            (tokio::spawn(read_ws(stream, tx)), Writer::Ws(Box::new(sink)))
        }
        StreamKind::ServerSentEvents => {
            let body = sse_request(io, req).await.map_err(Opened::Failed)?;
            (tokio::spawn(read_sse(body, max, tx)), Writer::ReadOnly("server-sent events"))
        }
        StreamKind::Webhook => unreachable!("webhooks listen, handled above"),
    };
    Ok(Conn { frames: rx, requests: None, reader, writer, host: authorized.host, port: authorized.port })
}

/// Connect to the first address that answers (all were checked), with TLS
/// for `tls_name` when set, verified with the plugin's TLS configuration.
async fn connect(addrs: &[SocketAddr], tls_name: Option<&str>, sb: &crate::sandbox::PluginSandbox) -> Result<BoxIo, String> {
    let mut last = String::from("no address to connect to");
    let mut stream = None;
    for a in addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    let stream = stream.ok_or(last)?;
    let _ = stream.set_nodelay(true);
    let Some(name) = tls_name else { return Ok(Box::new(stream)) };
    let config = sb.tls()?;
    let server_name = match name.parse::<std::net::IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| format!("TLS name {name}: {e}"))?,
    };
    let tls = tokio_rustls::TlsConnector::from(config).connect(server_name, stream).await.map_err(|e| format!("TLS: {e}"))?;
    Ok(Box::new(tls))
}

/// The signature check of a plugin's webhook requests, and where refusals are audited.
struct Check {
    verifier: crate::webhook::Verifier,
    auditor: crate::audit::Auditor,
}

/// How long a webhook request waits for the plugin's answer.
const WEBHOOK_ANSWER: Duration = Duration::from_secs(30);

/// Listen for webhook requests on the first of `addrs` (checked like any
/// destination: a loopback or private address needs the grant to allow it).
/// Requests under `prefix` (whole segments, after normalising the request
/// path: [`crate::policy::path_has_prefix`], the grants' rule) become
/// frames; others get 404.
#[allow(clippy::type_complexity)]
async fn listen(
    addrs: &[SocketAddr],
    prefix: String,
    max: usize,
    check: Option<Arc<Check>>,
) -> Result<(mpsc::Receiver<Result<Frame, String>>, mpsc::Receiver<Request>, tokio::task::JoinHandle<()>), String> {
    let addr = addrs.first().ok_or("no address to listen on")?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!("listening for webhooks on http://{addr}{prefix}");
    let (err_tx, err_rx) = mpsc::channel(1);
    let (req_tx, req_rx) = mpsc::channel::<Request>(READ_AHEAD);
    let accept = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    let _ = err_tx.send(Err(format!("accept: {e}"))).await;
                    return;
                }
            };
            let (req_tx, prefix, check) = (req_tx.clone(), prefix.clone(), check.clone());
            let service = hyper::service::service_fn(move |req| webhook(req, req_tx.clone(), prefix.clone(), max, check.clone()));
            conns.spawn(async move {
                let io = wasmtime_wasi_http::io::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
            // Reap finished connections as we go.
            while conns.try_join_next().is_some() {}
        }
    });
    Ok((err_rx, req_rx, accept))
}

/// One webhook request: to a frame, through the session, back as a response.
async fn webhook(
    req: http::Request<hyper::body::Incoming>,
    tx: mpsc::Sender<Request>,
    prefix: String,
    max: usize,
    check: Option<Arc<Check>>,
) -> Result<http::Response<http_body_util::Full<Bytes>>, std::convert::Infallible> {
    let answer = |status: u16, body: Vec<u8>| {
        let mut r = http::Response::new(http_body_util::Full::new(Bytes::from(body)));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        Ok(r)
    };
    if !crate::policy::path_has_prefix(req.uri().path(), &prefix) {
        return answer(404, b"not found\n".to_vec());
    }
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return answer(413, format!("request larger than {max} bytes\n").into_bytes()),
    };
    // A request that fails the signature check is answered 401, audited
    // with why, and never reaches the plugin.
    if let Some(c) = &check {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Err(refusal) = c.verifier.check(header, &body, now_s) {
            let rule = c.verifier.rule();
            tracing::warn!(plugin = %c.auditor.plugin(), "webhook request {} {} refused: {}", parts.method, parts.uri.path(), refusal.0);
            c.auditor.record(
                Event::new(Kind::Webhook, Verdict::Deny)
                    .method(parts.method.as_str())
                    .target(parts.uri.path())
                    .policy(format!("{}: {}", rule.at, rule.describe()))
                    .detail(format!("{} (verify = \"{}\"); answered 401, not handed to the plugin", refusal.0, rule.recipe.as_str())),
            );
            return answer(401, b"webhook signature check failed\n".to_vec());
        }
    }
    let hidden = check.as_ref().and_then(|c| c.verifier.strip_header());
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != hidden)
        .filter_map(|(k, v)| Some((k.as_str().to_string(), serde_json::Value::String(v.to_str().ok()?.to_string()))))
        .collect();
    let frame = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let (done, rx) = oneshot::channel();
    if tx.send((Frame::Text(frame.to_string()), done)).await.is_err() {
        return answer(503, b"the channel is restarting; try again\n".to_vec());
    }
    match tokio::time::timeout(WEBHOOK_ANSWER, rx).await {
        Ok(Ok(Some(Frame::Text(t)))) => answer(200, t.into_bytes()),
        Ok(Ok(Some(Frame::Binary(b)))) => answer(200, b),
        Ok(Ok(None)) => answer(204, Vec::new()),
        Ok(Err(_)) => answer(500, b"the plugin could not handle the request\n".to_vec()),
        Err(_) => answer(504, b"the plugin did not answer in time\n".to_vec()),
    }
}

/// Read `\n`-terminated lines (a trailing `\r` dropped) of at most `max` bytes.
async fn read_lines(mut r: tokio::io::ReadHalf<BoxIo>, max: usize, tx: mpsc::Sender<Result<Frame, String>>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    let mut scanned = 0;
    loop {
        if let Some(i) = buf[scanned..].iter().position(|b| *b == b'\n') {
            let end = scanned + i;
            let mut line: Vec<u8> = buf.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            scanned = 0;
            let text = String::from_utf8(line).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            if tx.send(Ok(Frame::Text(text))).await.is_err() {
                return;
            }
            continue;
        }
        scanned = buf.len();
        if buf.len() > max {
            let _ = tx.send(Err(format!("a line longer than {max} bytes (limits.max_response)"))).await;
            return;
        }
        match r.read(&mut chunk).await {
            Ok(0) => {
                let _ = tx.send(Err("the server closed the connection".into())).await;
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                let _ = tx.send(Err(format!("read: {e}"))).await;
                return;
            }
        }
    }
}

type WsSource = futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<BoxIo>>;

async fn read_ws(mut stream: WsSource, tx: mpsc::Sender<Result<Frame, String>>) {
    loop {
        let frame = match stream.next().await {
            None => Err("the server closed the connection".to_string()),
            Some(Err(e)) => Err(format!("websocket: {e}")),
            Some(Ok(tungstenite::Message::Text(t))) => Ok(Frame::Text(t.as_str().to_string())),
            Some(Ok(tungstenite::Message::Binary(b))) => Ok(Frame::Binary(b.to_vec())),
            Some(Ok(tungstenite::Message::Close(c))) => {
                Err(format!("the server closed the websocket{}", c.map(|c| format!(" ({} {})", c.code, c.reason)).unwrap_or_default()))
            }
            // Pings are answered by tungstenite itself.
            Some(Ok(_)) => continue,
        };
        let end = frame.is_err();
        if tx.send(frame).await.is_err() || end {
            return;
        }
    }
}

type SseBody = hyper::body::Incoming;

/// Send the SSE request over `io` and return the response body.
async fn sse_request(io: BoxIo, req: http::Request<()>) -> Result<SseBody, String> {
    use wasmtime_wasi_http::io::TokioIo;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let (mut parts, ()) = req.into_parts();
    let host = parts.uri.authority().map(|a| a.as_str().to_string()).unwrap_or_default();
    if !parts.headers.contains_key(http::header::HOST)
        && let Ok(v) = http::HeaderValue::from_str(&host)
    {
        parts.headers.insert(http::header::HOST, v);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    parts.uri = path.parse().map_err(|e| format!("SSE path: {e}"))?;
    let req = http::Request::from_parts(parts, http_body_util::Empty::<Bytes>::new());
    let resp = sender.send_request(req).await.map_err(|e| format!("SSE request: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("the server answered {} instead of an event stream", resp.status()));
    }
    Ok(resp.into_body())
}

/// Parse server-sent events: each event's `data:` lines (joined with `\n`)
/// become one text frame; comments, `event:`, `id:` and `retry:` are skipped.
async fn read_sse(mut body: SseBody, max: usize, tx: mpsc::Sender<Result<Frame, String>>) {
    let mut parser = SseParser::new(max);
    loop {
        let chunk = match body.frame().await {
            None => {
                let _ = tx.send(Err("the server ended the event stream".into())).await;
                return;
            }
            Some(Err(e)) => {
                let _ = tx.send(Err(format!("event stream: {e}"))).await;
                return;
            }
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
        };
        match parser.push(&chunk) {
            Ok(events) => {
                for e in events {
                    if tx.send(Ok(Frame::Text(e))).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// An incremental server-sent events parser (the WHATWG event stream format).
struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
    max: usize,
}

impl SseParser {
    fn new(max: usize) -> Self {
        Self { buf: Vec::new(), data: None, max }
    }

    /// Feed bytes; returns the events completed by them.
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
            // A \r\n pair is one line end; wait for the \n when \r ends the buffer.
            if self.buf[i] == b'\r' && i + 1 == self.buf.len() {
                break;
            }
            let skip = if self.buf[i] == b'\r' && self.buf[i + 1] == b'\n' { 2 } else { 1 };
            let line: Vec<u8> = self.buf.drain(..i + skip).take(i).collect();
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if let Some(d) = self.data.take() {
                    out.push(d);
                }
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (line, String::new()),
            };
            if field == "data" {
                let d = match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(&value);
                        d
                    }
                    None => self.data.insert(value),
                };
                if d.len() > self.max {
                    return Err(format!("an event larger than {} bytes (limits.max_response)", self.max));
                }
            }
        }
        if self.buf.len() > self.max {
            return Err(format!("an event line longer than {} bytes (limits.max_response)", self.max));
        }
        Ok(out)
    }
}

/// A token bucket over incoming frames.
struct Pace {
    per_second: f64,
    tokens: f64,
    last: Instant,
    throttled: bool,
}

impl Pace {
    fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self { per_second, tokens: per_second, last: Instant::now(), throttled: false }
    }

    /// How long to wait before the next frame may be taken (zero: now).
    fn wait(&mut self) -> Duration {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second).min(self.per_second);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        }
    }
}

/// One connected session: until the stream ends, the plugin fails, or shutdown.
/// Returns why it ended and whether any frame was delivered.
async fn session(ctx: &Ctx, slot: &mut Slot, mut conn: Conn, sub: &Subscription, shutdown: &mut watch::Receiver<bool>) -> (End, bool) {
    let name = ctx.plugin.name().to_string();
    let sb = ctx.plugin.sandbox().clone();
    let shown = if conn.host.contains(':') { format!("[{}]:{}", conn.host, conn.port) } else { format!("{}:{}", conn.host, conn.port) };
    // Make a frame the plugin wants written ready for the wire.
    let prepare = |f: &Frame| -> Result<Frame, String> {
        let r = match f {
            Frame::Text(t) => sb.stream_text(t, &conn.host, conn.port, &shown).map(|c| Frame::Text(c.into_owned())),
            Frame::Binary(b) => match sb.redactor().find(b) {
                Some(secret) => Err(Denial::Leak { secret: secret.to_string(), place: "stream frame".into() }),
                None => Ok(Frame::Binary(b.clone())),
            },
        };
        r.map_err(|d| {
            sb.auditor().record(d.event(&name, "WRITE", shown_url(&sub.url)));
            d.explain(&name)
        })
    };
    let ready: Vec<Frame> = match sub.initial_frames.iter().map(prepare).collect() {
        Ok(f) => f,
        Err(e) => return (End::Closed(format!("an initial frame was refused: {e}")), false),
    };
    for f in ready {
        if let Err(e) = conn.writer.write(f).await {
            return (End::Closed(format!("writing the initial frames: {e}")), false);
        }
    }
    let per_second =
        ctx.plugin.grants.config.get("frames_per_second").and_then(|s| s.trim().parse::<u32>().ok()).unwrap_or(DEFAULT_FRAMES_PER_SECOND);
    let mut pace = Pace::new(per_second);
    let mut outlet = ctx.plugin.outlet().open();
    let mut heartbeat = sub.heartbeat_ms.filter(|ms| *ms > 0).map(|ms| {
        let period = Duration::from_millis(u64::from(ms).max(10));
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut delivered = false;
    // A pause the inbound budget asked for (a flood of messages or bytes).
    let mut hold = Duration::ZERO;
    let end = loop {
        if !hold.is_zero() && sleep_or_shutdown(std::mem::take(&mut hold), shutdown).await {
            break End::Shutdown;
        }
        let wait = pace.wait();
        if !wait.is_zero() {
            if !pace.throttled {
                pace.throttled = true;
                tracing::warn!(plugin = %name, "stream frames arrive faster than {per_second}/s (config frames_per_second); reading slower");
            }
            if sleep_or_shutdown(wait, shutdown).await {
                break End::Shutdown;
            }
            continue;
        }
        pace.throttled = false;
        let mut respond = None;
        let incoming = tokio::select! {
            r = async { match conn.requests.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => match r {
                Some((f, done)) => {
                    respond = Some(done);
                    f
                }
                None => break End::Closed("the webhook listener stopped".into()),
            },
            f = conn.frames.recv() => match f {
                Some(Ok(f)) => f,
                Some(Err(e)) => break End::Closed(e),
                None => break End::Closed("the connection ended".into()),
            },
            w = outlet.recv() => {
                // Frames from `send` do not use a frame token.
                pace.tokens += 1.0;
                let Some(w) = w else { continue };
                // A refused frame fails this send only; a failed write ends the session.
                let mut result = Ok(());
                let mut broken = None;
                for f in &w.frames {
                    match prepare(f) {
                        Ok(f) => {
                            if let Err(e) = conn.writer.write(f).await {
                                result = Err(e.clone());
                                broken = Some(e);
                                break;
                            }
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                let _ = w.done.send(result);
                match broken {
                    Some(e) => break End::Closed(format!("write: {e}")),
                    None => continue,
                }
            }
            _ = async { match heartbeat.as_mut() { Some(h) => { h.tick().await; } None => std::future::pending::<()>().await } } => {
                pace.tokens += 1.0;
                Frame::Text(String::new())
            }
            _ = shutdown.changed() => break End::Shutdown,
        };
        // Secret values coming in are redacted before the plugin sees them.
        let incoming = match incoming {
            Frame::Text(t) if !sb.redactor().is_empty() => Frame::Text(sb.redact(&t, "stream frame").into_owned()),
            f => f,
        };
        let Some(inst) = slot.live(shutdown).await else {
            break End::Closed("the plugin instance stopped".into());
        };
        let result = tokio::select! {
            r = inst.on_frame(&incoming) => r,
            _ = shutdown.changed() => { slot.drop_instance(); break End::Shutdown; }
        };
        match result {
            Ok(r) => {
                slot.succeeded();
                delivered = true;
                if r.messages.len() > MAX_MESSAGES_PER_FRAME {
                    crate::limits::hit(&name, "max_messages_per_poll", 1);
                    tracing::warn!(plugin = %name, "on-frame returned {} messages (limit {MAX_MESSAGES_PER_FRAME}); ignoring them", r.messages.len());
                } else if !r.messages.is_empty() {
                    hold = store(ctx, r.messages);
                } else {
                    ctx.health.polled(&name, 0);
                }
                let replies = match crate::admit::check_frames(&r.replies, &ctx.plugin.grants.limits) {
                    Ok(()) => r.replies,
                    Err((limit, e)) => {
                        crate::channel::refuse_frames(&ctx.plugin, limit, "on-frame", e);
                        Vec::new()
                    }
                };
                // A webhook request is answered with the first reply.
                if let Some(done) = respond {
                    let _ = done.send(replies.into_iter().next());
                    continue;
                }
                let mut failed = None;
                for f in &replies {
                    let written = match prepare(f) {
                        Ok(f) => conn.writer.write(f).await,
                        Err(e) => {
                            tracing::warn!(plugin = %name, "a reply frame was not written: {e}");
                            continue;
                        }
                    };
                    if let Err(e) = written {
                        failed = Some(e);
                        break;
                    }
                }
                if let Some(e) = failed {
                    break End::Closed(format!("write: {e}"));
                }
            }
            Err(e) => {
                let d = slot.failed(&e);
                break End::Failed(format!("on-frame failed: {e}"), d);
            }
        }
    };
    ctx.plugin.outlet().close();
    (end, delivered)
}

/// Store the messages one frame produced, through the same path as `poll`;
/// returns how long to wait before reading on (over the inbound budget).
fn store(ctx: &Ctx, messages: Vec<crate::host::latest::Message>) -> Duration {
    let name = ctx.plugin.name();
    let (rows, bytes) = crate::channel::admit(messages, ctx.plugin.sandbox(), "frame");
    let new = match ctx.db.record_poll(name, &rows, None) {
        Ok(new) => {
            ctx.health.polled(name, new);
            tracing::debug!(plugin = %name, got = rows.len(), new, "frame");
            if new > 0 {
                ctx.inbox_ready.notify_one();
            }
            new
        }
        Err(e) => {
            tracing::error!(plugin = %name, "cannot store messages from the stream: {e:#}");
            0
        }
    };
    let pause = ctx.budget.lock().unwrap_or_else(|p| p.into_inner()).take(new, bytes, std::time::Instant::now());
    crate::channel::note_pause(name, &ctx.plugin.grants.limits, pause, "reading the stream");
    pause.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sub(kind: StreamKind, url: &str) -> Subscription {
        Subscription { kind, url: url.into(), headers: vec![], initial_frames: vec![], heartbeat_ms: None }
    }

    #[test]
    fn urls_are_checked_as_their_grant_scheme_with_explicit_ports() {
        let t = |k, u: &str| target(&sub(k, u)).map(|(uri, m, tls)| (uri.to_string(), m, tls));
        assert_eq!(t(StreamKind::TcpLines, "irc://irc.example.org").unwrap(), ("tcp://irc.example.org:6667/".into(), "CONNECT", false));
        assert_eq!(t(StreamKind::TcpLines, "ircs://irc.example.org").unwrap(), ("tls://irc.example.org:6697/".into(), "CONNECT", true));
        assert_eq!(t(StreamKind::TcpLines, "tcp://127.0.0.1:7000").unwrap(), ("tcp://127.0.0.1:7000/".into(), "CONNECT", false));
        assert!(t(StreamKind::TcpLines, "tcp://127.0.0.1").unwrap_err().contains("needs a port"));
        assert_eq!(
            t(StreamKind::Websocket, "wss://gw.example.org/ws?v=1").unwrap(),
            ("wss://gw.example.org:443/ws?v=1".into(), "GET", true)
        );
        assert_eq!(t(StreamKind::ServerSentEvents, "http://[::1]:8080/events").unwrap(), ("http://[::1]:8080/events".into(), "GET", false));
        assert!(t(StreamKind::Websocket, "http://x/").unwrap_err().contains("ws:// or wss://"));
        assert!(t(StreamKind::TcpLines, "no-scheme").is_err());
    }

    #[test]
    fn sse_events_are_joined_data_lines() {
        let mut p = SseParser::new(1000);
        assert!(p.push(b": comment\nevent: x\ndata: one\r\ndata:two\n").unwrap().is_empty());
        assert_eq!(p.push(b"\nid: 3\ndata: {\"a\":1}\n\ndata").unwrap(), ["one\ntwo", "{\"a\":1}"]);
        assert_eq!(p.push(b": rest\r").unwrap(), Vec::<String>::new());
        assert_eq!(p.push(b"\n\n").unwrap(), ["rest"]);
        let mut small = SseParser::new(8);
        assert!(small.push(b"data: 0123456789\n").is_err());
    }

    #[test]
    fn pace_lets_a_burst_through_then_spaces_frames() {
        let mut p = Pace::new(5);
        for _ in 0..5 {
            assert_eq!(p.wait(), Duration::ZERO);
        }
        let w = p.wait();
        assert!(w > Duration::ZERO && w <= Duration::from_millis(200), "{w:?}");
    }
}
