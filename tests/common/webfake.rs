//! What the protocol fakes (tests/common/slack.rs, tests/common/discord.rs)
//! share: a tokio runtime on a thread of its own, so a fake serves while the
//! (synchronous) test drives the daemon, and a small HTTP/1.1 server with
//! keep-alive, as kata's sandbox reuses connections.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A tokio runtime on its own thread, stopped (with every task) when dropped.
pub struct Runtime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Runtime {
    pub fn start() -> Runtime {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async {
                let _ = stopped.await;
            });
            // Dropping the runtime cancels every task (and closes their sockets).
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        });
        Runtime { handle, stop: Some(stop), thread: Some(thread) }
    }

    pub fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        self.handle.spawn(f);
    }

    /// Bind a loopback listener on a free port (inside the runtime).
    pub fn listen(&self) -> (TcpListener, u16) {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std.set_nonblocking(true).unwrap();
        let port = std.local_addr().unwrap().port();
        let _guard = self.handle.enter();
        (TcpListener::from_std(std).unwrap(), port)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP request.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(status: u16, value: &serde_json::Value) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("content-type".into(), "application/json; charset=utf-8".into())],
            body: value.to_string().into_bytes(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> HttpResponse {
        self.headers.push((name.into(), value.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Read one request (None at end of stream). Handles `content-length` and
/// `transfer-encoding: chunked` bodies.
pub async fn read_request<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<HttpRequest>> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body).await?;
    }
    Ok(Some(HttpRequest { method, path, query, headers, body }))
}

/// Serve HTTP/1.1 on `listener`, every request answered by `handler`,
/// connections kept alive until the client closes them.
pub async fn serve_http(listener: TcpListener, handler: Arc<dyn Fn(HttpRequest) -> HttpResponse + Send + Sync>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let handler = handler.clone();
        tokio::spawn(async move {
            let (r, mut w) = tcp.into_split();
            let mut r = BufReader::new(r);
            while let Ok(Some(req)) = read_request(&mut r).await {
                let close = req.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                let resp = handler(req);
                let mut head = format!("HTTP/1.1 {} {}\r\ncontent-length: {}\r\n", resp.status, reason(resp.status), resp.body.len());
                for (n, v) in &resp.headers {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if w.write_all(head.as_bytes()).await.is_err() || w.write_all(&resp.body).await.is_err() || close {
                    return;
                }
            }
        });
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `ms` as an RFC 3339 / ISO 8601 UTC timestamp with microseconds, the
/// form Discord writes (`2017-07-11T17:27:07.299000+00:00`).
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}000+00:00", rem / 3600, rem / 60 % 60, rem % 60, ms % 1000)
}

/// A random-looking hex id of `n` digits (unique within a test process).
pub fn hex_id(n: usize) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let seed = NEXT.fetch_add(1, Ordering::Relaxed) ^ now_ms().rotate_left(17);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut out = String::new();
    while out.len() < n {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(n);
    out
}

/// A UUID-shaped id (Slack's `envelope_id` and `client_msg_id` look like this).
pub fn uuid() -> String {
    let h = hex_id(32);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[test]
fn iso8601_formats_utc() {
    assert_eq!(iso8601(1_499_794_027_299), "2017-07-11T17:27:07.299000+00:00");
    assert_eq!(iso8601(0), "1970-01-01T00:00:00.000000+00:00");
}
