//! Keep-alive connections of one plugin's outgoing HTTP/1.1 requests.
//!
//! A [`ConnPool`] belongs to a plugin's [`super::PluginSandbox`]: connections
//! are never shared between plugins. A connection is kept under the address
//! it was opened to and the TLS server name it was verified for (or none for
//! plain http), and is only handed to a request whose own resolve-then-check
//! step returned that address, with the same TLS name — so reuse never talks
//! to an address that was not checked for the request at hand.
//!
//! A connection goes back into the pool as soon as its response head
//! arrived, marked busy until its response body has been read to the end
//! (hyper's own readiness follows a moment later, from the connection's
//! task, so [`ConnPool::checkout`] hands out a connection whose body is done
//! and the caller waits for [`Sender::ready`] before using it). A body that
//! is dropped early, an error or the server closing the connection makes
//! hyper close it, and closed connections are dropped at the next checkout or
//! checkin. Idle connections expire after the pool's idle time; a sweeper
//! task (one per pool, only while it holds connections) drops them even when
//! the plugin sends nothing more. Dropping the `SendRequest` of an idle
//! connection makes hyper close it, which ends its connection task.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use wasmtime_wasi_http::WasiBody;

/// How long an idle connection is kept for the plugin's next request.
pub const IDLE: Duration = Duration::from_secs(30);
/// Most connections kept per (address, TLS name).
pub const PER_KEY: usize = 4;
/// Most connections kept per plugin.
pub const PER_PLUGIN: usize = 16;

/// The sending half of one HTTP/1.1 connection.
pub type Sender = hyper::client::conn::http1::SendRequest<WasiBody>;

/// One plugin's kept-open connections.
pub struct ConnPool {
    idle: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Oldest checkin first.
    conns: Vec<Pooled>,
    /// Whether a sweeper task is running for this pool.
    sweeping: bool,
}

struct Pooled {
    addr: SocketAddr,
    tls: Option<String>,
    sender: Sender,
    since: Instant,
    /// Set once the body of the response last received on it was read to
    /// the end (see [`Tracked`]).
    done: Arc<AtomicBool>,
}

impl State {
    /// Drop connections that are closed or idle for longer than `idle`.
    fn prune(&mut self, now: Instant, idle: Duration) {
        self.conns.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < idle);
    }
}

impl ConnPool {
    /// An empty pool whose connections expire after `idle`.
    pub fn new(idle: Duration) -> Self {
        Self { idle, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An open connection to one of `addrs` (the addresses checked for this
    /// request) verified for TLS name `tls` (None: plain http), whose last
    /// response has been read, most recently used first, with the address it
    /// goes to; it is the caller's until it is checked in again. The caller
    /// waits for [`Sender::ready`] before sending on it.
    pub fn checkout(&self, addrs: &[SocketAddr], tls: Option<&str>) -> Option<(SocketAddr, Sender)> {
        let mut st = self.lock();
        st.prune(Instant::now(), self.idle);
        let i = st
            .conns
            .iter()
            .rposition(|c| c.tls.as_deref() == tls && addrs.contains(&c.addr) && (c.sender.is_ready() || c.done.load(Ordering::Acquire)))?;
        let c = st.conns.remove(i);
        Some((c.addr, c.sender))
    }

    /// Keep the connection to `addr` (TLS name `tls`) for a later request,
    /// once its current response is read (`done`, set by [`Tracked`]); the
    /// oldest connection for the same key, or else of the plugin, makes room
    /// when the pool is full.
    pub fn checkin(self: &Arc<Self>, addr: SocketAddr, tls: Option<&str>, sender: Sender, done: Arc<AtomicBool>) {
        let mut st = self.lock();
        let now = Instant::now();
        st.prune(now, self.idle);
        let same = |c: &Pooled| c.addr == addr && c.tls.as_deref() == tls;
        if st.conns.iter().filter(|c| same(c)).count() >= PER_KEY {
            if let Some(i) = st.conns.iter().position(same) {
                st.conns.remove(i);
            }
        } else if st.conns.len() >= PER_PLUGIN {
            st.conns.remove(0);
        }
        st.conns.push(Pooled { addr, tls: tls.map(str::to_string), sender, since: now, done });
        if !st.sweeping
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            st.sweeping = true;
            rt.spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// How many open connections the pool holds (ready or still busy).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let mut st = self.lock();
        st.prune(Instant::now(), self.idle);
        st.conns.len()
    }
}

/// Drop the pool's expired connections as they expire, until it is empty
/// (or gone); the next checkin starts a new sweeper.
async fn sweep(pool: Weak<ConnPool>) {
    loop {
        let wait = {
            let Some(pool) = pool.upgrade() else { return };
            let mut st = pool.lock();
            let now = Instant::now();
            st.prune(now, pool.idle);
            let Some(oldest) = st.conns.first() else {
                st.sweeping = false;
                return;
            };
            pool.idle.saturating_sub(now.duration_since(oldest.since))
        };
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
    }
}

/// A response body that sets `done` once it has been read to the end, which
/// tells the pool its connection is about to be free.
pub struct Tracked<B> {
    /// The body.
    pub inner: B,
    /// Set at the end of the body.
    pub done: Arc<AtomicBool>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || (matches!(r, Poll::Ready(Some(Ok(_)))) && self.inner.is_end_stream()) {
            self.done.store(true, Ordering::Release);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a `connection` header in `headers` asks to close the connection
/// after this exchange.
pub fn says_close(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

#[cfg(test)]
mod tests {
    //! Real HTTP/1.1 servers on 127.0.0.1 (plain and TLS) that count the
    //! connections they accept, driven through the plugin's [`NetworkGate`].

    use super::super::{HttpResult, NetworkGate, PluginSandbox, connect};
    use super::*;
    use crate::audit::Auditor;
    use crate::policy::{CaFile, Policy};
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
    use wasmtime_wasi_http::WasiHttpHooks;

    /// How a test server answers.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        /// Keep-alive: any number of requests per connection.
        KeepAlive,
        /// `connection: close`, then close.
        CloseHeader,
        /// A keep-alive response, then close without saying so.
        CloseSilently,
    }

    struct Server {
        port: u16,
        accepted: Arc<AtomicUsize>,
        /// Connections that ended (closed by either side).
        ended: Arc<AtomicUsize>,
        ca: Option<rustls::pki_types::CertificateDer<'static>>,
    }

    impl Server {
        async fn start(mode: Mode, tls: bool) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let (accepted, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let (acceptor, ca) = if tls {
                let (a, ca) = tls_acceptor();
                (Some(a), Some(ca))
            } else {
                (None, None)
            };
            let (acc, end) = (accepted.clone(), ended.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { return };
                    acc.fetch_add(1, Ordering::SeqCst);
                    let (acceptor, end) = (acceptor.clone(), end.clone());
                    tokio::spawn(async move {
                        match acceptor {
                            Some(a) => {
                                if let Ok(s) = a.accept(tcp).await {
                                    serve(s, mode).await;
                                }
                            }
                            None => serve(tcp, mode).await,
                        }
                        end.fetch_add(1, Ordering::SeqCst);
                    });
                }
            });
            Self { port, accepted, ended, ca }
        }

        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }
    }

    async fn serve(stream: impl AsyncRead + AsyncWrite + Unpin, mode: Mode) {
        let mut stream = BufReader::new(stream);
        let mut n = 0;
        loop {
            let mut path = None;
            loop {
                let mut line = String::new();
                match stream.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line == "\r\n" => break,
                    Ok(_) => {
                        if path.is_none() {
                            path = line.split(' ').nth(1).map(str::to_string);
                        }
                    }
                }
            }
            n += 1;
            let path = path.unwrap_or_default();
            // `/big…` answers 8 MiB: more than the socket and hyper buffer,
            // so the connection stays busy until the body is read.
            let body = if path.starts_with("/big") { "x".repeat(8 << 20) } else { format!("{path} #{n}") };
            let close = if mode == Mode::CloseHeader { "connection: close\r\n" } else { "" };
            let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{close}\r\n{body}", body.len());
            if stream.write_all(reply.as_bytes()).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            if mode != Mode::KeepAlive {
                let _ = stream.shutdown().await;
                return;
            }
        }
    }

    /// A TLS acceptor with a certificate for `localhost` and `127.0.0.1`, and
    /// the CA that signed it.
    fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, rustls::pki_types::CertificateDer<'static>) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("ca");
        let leaf_key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .expect("config");
        (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.der().clone())
    }

    /// The sandbox of a plugin granted `urls`, trusting `ca` if given.
    fn sandbox(urls: &[String], ca: Option<&rustls::pki_types::CertificateDer<'static>>) -> Arc<PluginSandbox> {
        let list = urls.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
        let p = Policy::parse(
            &format!("[plugins.p]\npath = \"x.wasm\"\nnetwork = [{list}]\nsecrets = {{ t = \"env:X\" }}\n"),
            Path::new("kata.toml"),
            Path::new("/ws"),
        )
        .expect("policy");
        let mut grants = p.plugins["p"].clone();
        if let Some(ca) = ca {
            grants.ca.push(CaFile { path: "/ws/ca.pem".into(), certs: vec![ca.clone()] });
        }
        let secrets = BTreeMap::from([("t".to_string(), "a-secret-value-4f2e".to_string())]);
        Arc::new(PluginSandbox::new(Arc::new(grants), secrets, Auditor::log_only("p")))
    }

    fn request(url: &str) -> http::Request<WasiBody> {
        let uri: http::Uri = url.parse().expect("uri");
        let host = uri.authority().expect("authority").to_string();
        let body = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        http::Request::get(uri).header(http::header::HOST, host).body(body).expect("request")
    }

    /// Send a request the way wasi:http does (spawning the I/O future),
    /// without reading the response body.
    async fn send(gate: &mut NetworkGate, req: http::Request<WasiBody>) -> HttpResult<http::Response<WasiBody>> {
        let (response, io) = Pin::from(gate.send_request(req, None, Box::new(async { Ok(()) }))).await?;
        tokio::spawn(Pin::from(io));
        Ok(response)
    }

    /// GET `url` and read the whole body.
    async fn get(gate: &mut NetworkGate, url: &str) -> String {
        let response = send(gate, request(url)).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        text(response).await
    }

    async fn text(response: http::Response<WasiBody>) -> String {
        let body = response.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Wait up to 5 s for `cond`.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sequential_requests_reuse_one_connection_per_address() {
        let (a, b) = (Server::start(Mode::KeepAlive, false).await, Server::start(Mode::KeepAlive, false).await);
        let (ua, ub) = (format!("http://127.0.0.1:{}", a.port), format!("http://127.0.0.1:{}", b.port));
        let sb = sandbox(&[format!("{ua}/"), format!("{ub}/")], None);
        let mut gate = NetworkGate::new(sb.clone());
        for i in 1..=20 {
            assert_eq!(get(&mut gate, &format!("{ua}/a{i}")).await, format!("/a{i} #{i}"));
        }
        assert_eq!(a.accepted(), 1, "20 sequential requests, one connection");
        // Another address opens its own connection; the first one stays usable.
        assert_eq!(get(&mut gate, &format!("{ub}/b")).await, "/b #1");
        assert_eq!(get(&mut gate, &format!("{ua}/a")).await, "/a #21");
        assert_eq!((a.accepted(), b.accepted()), (1, 1));
        // Another instance of the same plugin shares the pool.
        let mut other = NetworkGate::new(sb.clone());
        assert_eq!(get(&mut other, &format!("{ua}/a")).await, "/a #22");
        assert_eq!(a.accepted(), 1);
        // Another plugin never gets this plugin's connections.
        let mut stranger = NetworkGate::new(sandbox(&[format!("{ua}/")], None));
        assert_eq!(get(&mut stranger, &format!("{ua}/s")).await, "/s #1");
        assert_eq!(a.accepted(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_connection_is_not_shared_and_is_kept_once_its_body_is_read() {
        let a = Server::start(Mode::KeepAlive, false).await;
        let ua = format!("http://127.0.0.1:{}", a.port);
        let sb = sandbox(&[format!("{ua}/")], None);
        let mut gate = NetworkGate::new(sb.clone());
        // The first response's body is still unread (and too big to be
        // buffered): the second request cannot use that connection.
        let first = send(&mut gate, request(&format!("{ua}/big1"))).await.expect("first");
        let second = send(&mut gate, request(&format!("{ua}/big2"))).await.expect("second");
        assert_eq!(a.accepted(), 2);
        assert_eq!((text(first).await.len(), text(second).await.len()), (8 << 20, 8 << 20));
        // Both are free again now; the next requests use them.
        for _ in 0..5 {
            get(&mut gate, &format!("{ua}/x")).await;
        }
        assert_eq!(a.accepted(), 2);
        // A big body dropped unread makes hyper close its connection: it is
        // not handed out again, and the next requests still work.
        drop(send(&mut gate, request(&format!("{ua}/big3"))).await.expect("dropped"));
        until("the dropped response's connection to close", || a.ended.load(Ordering::SeqCst) == 1).await;
        get(&mut gate, &format!("{ua}/y")).await;
        get(&mut gate, &format!("{ua}/z")).await;
        assert_eq!(a.accepted(), 2);
        assert_eq!(sb.pool.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connection_close_is_not_kept() {
        let a = Server::start(Mode::CloseHeader, false).await;
        let ua = format!("http://127.0.0.1:{}", a.port);
        let sb = sandbox(&[format!("{ua}/")], None);
        let mut gate = NetworkGate::new(sb.clone());
        for i in 1..=3 {
            assert_eq!(get(&mut gate, &format!("{ua}/c{i}")).await, format!("/c{i} #1"));
        }
        assert_eq!(a.accepted(), 3);
        assert_eq!(sb.pool.len(), 0);
        // A request that asks for `connection: close` is not kept either.
        let b = Server::start(Mode::KeepAlive, false).await;
        let ub = format!("http://127.0.0.1:{}", b.port);
        let mut gate = NetworkGate::new(sandbox(&[format!("{ub}/")], None));
        for _ in 0..2 {
            let mut req = request(&format!("{ub}/k"));
            req.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            assert_eq!(text(send(&mut gate, req).await.expect("send")).await, "/k #1");
        }
        assert_eq!(b.accepted(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_the_server_closed_is_not_used() {
        let a = Server::start(Mode::CloseSilently, false).await;
        let ua = format!("http://127.0.0.1:{}", a.port);
        let sb = sandbox(&[format!("{ua}/")], None);
        let mut gate = NetworkGate::new(sb.clone());
        for i in 1..=3 {
            assert_eq!(get(&mut gate, &format!("{ua}/s{i}")).await, format!("/s{i} #1"));
            // The response looked keep-alive, so the connection was kept;
            // once hyper sees the server's close it is dropped.
            until("the closed connection to leave the pool", || sb.pool.len() == 0).await;
        }
        assert_eq!(a.accepted(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_connections_are_reused_per_server_name() {
        let a = Server::start(Mode::KeepAlive, true).await;
        let (by_name, by_ip) = (format!("https://localhost:{}", a.port), format!("https://127.0.0.1:{}", a.port));
        let sb = sandbox(&[format!("{by_name}/"), format!("{by_ip}/")], a.ca.as_ref());
        let mut gate = NetworkGate::new(sb.clone());
        for i in 1..=5 {
            assert_eq!(get(&mut gate, &format!("{by_name}/t{i}")).await, format!("/t{i} #{i}"));
        }
        assert_eq!(a.accepted(), 1);
        // The same address under another TLS name is another connection.
        assert_eq!(get(&mut gate, &format!("{by_ip}/ip")).await, "/ip #1");
        assert_eq!(get(&mut gate, &format!("{by_ip}/ip")).await, "/ip #2");
        assert_eq!(a.accepted(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkout_needs_a_checked_address_and_the_same_tls_name() {
        let a = Server::start(Mode::KeepAlive, false).await;
        let addr: SocketAddr = format!("127.0.0.1:{}", a.port).parse().expect("addr");
        let pool = Arc::new(ConnPool::new(IDLE));
        let (got, sender) = connect(&[addr], None, IDLE).await.expect("connect");
        assert_eq!(got, addr);
        pool.checkin(addr, Some("localhost"), sender, Arc::new(AtomicBool::new(true)));
        let other: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert!(pool.checkout(&[other], Some("localhost")).is_none(), "address not checked for this request");
        assert!(pool.checkout(&[addr], None).is_none(), "plain http is not the TLS connection");
        assert!(pool.checkout(&[addr], Some("example.org")).is_none(), "another TLS name");
        let (got, _) = pool.checkout(&[other, addr], Some("localhost")).expect("checked address, same name");
        assert_eq!(got, addr);
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_is_bounded_and_idle_connections_expire_and_close() {
        let a = Server::start(Mode::KeepAlive, false).await;
        let b = Server::start(Mode::KeepAlive, false).await;
        let pool = Arc::new(ConnPool::new(Duration::from_millis(300)));
        let mut addrs = Vec::new();
        for s in [&a, &b] {
            let addr: SocketAddr = format!("127.0.0.1:{}", s.port).parse().expect("addr");
            addrs.push(addr);
            for _ in 0..PER_KEY + 2 {
                let (_, sender) = connect(&[addr], None, IDLE).await.expect("connect");
                pool.checkin(addr, None, sender, Arc::new(AtomicBool::new(true)));
            }
        }
        assert_eq!(pool.len(), 2 * PER_KEY, "at most {PER_KEY} per address");
        // The ones that did not fit were dropped, and hyper closed them.
        until("the extra connections to close", || a.ended.load(Ordering::SeqCst) == 2 && b.ended.load(Ordering::SeqCst) == 2).await;
        // Nothing else happens: the sweeper drops the idle connections, and
        // their connection tasks end (the server sees each one close).
        until("idle connections to expire", || pool.len() == 0).await;
        until("expired connections to close", || a.ended.load(Ordering::SeqCst) == PER_KEY + 2).await;
        assert!(pool.checkout(&addrs, None).is_none());
        // The per-plugin bound.
        let mut servers = Vec::new();
        for _ in 0..PER_PLUGIN + 3 {
            let s = Server::start(Mode::KeepAlive, false).await;
            let addr: SocketAddr = format!("127.0.0.1:{}", s.port).parse().expect("addr");
            let (_, sender) = connect(&[addr], None, IDLE).await.expect("connect");
            pool.checkin(addr, None, sender, Arc::new(AtomicBool::new(true)));
            servers.push(s);
        }
        assert_eq!(pool.len(), PER_PLUGIN);
    }
}
