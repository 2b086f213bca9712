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
//! arrived; until that response's body has been read to the end hyper does
//! not report it ready, so [`ConnPool::checkout`] passes over it. A body that
//! is dropped early, an error or the server closing the connection makes
//! hyper close it, and closed connections are dropped at the next checkout or
//! checkin. Idle connections expire after the pool's idle time; a sweeper
//! task (one per pool, only while it holds connections) drops them even when
//! the plugin sends nothing more. Dropping the `SendRequest` of an idle
//! connection makes hyper close it, which ends its connection task.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

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

    /// A ready connection to one of `addrs` (the addresses checked for this
    /// request) verified for TLS name `tls` (None: plain http), most recently
    /// used first, with the address it goes to; it is the caller's until it
    /// is checked in again.
    pub fn checkout(&self, addrs: &[SocketAddr], tls: Option<&str>) -> Option<(SocketAddr, Sender)> {
        let mut st = self.lock();
        st.prune(Instant::now(), self.idle);
        let i = st.conns.iter().rposition(|c| c.tls.as_deref() == tls && addrs.contains(&c.addr) && c.sender.is_ready())?;
        let c = st.conns.remove(i);
        Some((c.addr, c.sender))
    }

    /// Keep the connection to `addr` (TLS name `tls`) for a later request,
    /// once its current response is read; the oldest connection for the
    /// same key, or else of the plugin, makes room when the pool is full.
    pub fn checkin(self: &Arc<Self>, addr: SocketAddr, tls: Option<&str>, sender: Sender) {
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
        st.conns.push(Pooled { addr, tls: tls.map(str::to_string), sender, since: now });
        if !st.sweeping
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            st.sweeping = true;
            rt.spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// How many connections the pool holds (ready or still busy).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().conns.len()
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
