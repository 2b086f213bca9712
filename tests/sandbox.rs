//! Every enforcement path of the sandbox against hostile guests built from
//! source: directory grants and escapes, secret leaks through URL, header,
//! body, log line and message, responses echoing a secret, redirects, granted
//! names resolving to loopback, response size and request rate limits — each
//! contained, explained and written to the audit log.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestWorkspace, guest, load_plugin, poll_text, wait_for};
use kata::engine::Engine;
use kata::plugin::ChannelPlugin;
use kata::store::{AuditQuery, AuditRow, Db};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// An HTTP/1.1 server on loopback that records every request and answers by path:
///
/// - `/redirect?to=URL`: `302 Found` with `Location: URL`;
/// - `/big?n=N`: N bytes with a content-length;
/// - `/chunked?n=N`: N bytes, chunked, no content-length;
/// - `/echo`: the request head and body back, and the request's
///   `authorization` header value in the response header `x-echo`;
/// - anything else: `200 received`.
struct ScriptServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ScriptServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || serve(stream, &log));
            }
        });
        Self { port, seen }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(mut stream: std::net::TcpStream, log: &Mutex<Vec<Seen>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        head.push_str(&line);
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = Vec::new();
    let _ = reader.by_ref().take(len as u64).read_to_end(&mut body);
    log.lock().unwrap().push(Seen { head: head.clone(), body: body.clone() });
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let param = |k: &str| query.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}="))).unwrap_or("").to_string();
    let response: Vec<u8> = match path {
        "/redirect" => {
            format!("HTTP/1.1 302 Found\r\nlocation: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", param("to")).into_bytes()
        }
        "/big" => {
            let n: usize = param("n").parse().unwrap_or(0);
            let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n").into_bytes();
            r.resize(r.len() + n, b'x');
            r
        }
        "/chunked" => {
            let n: usize = param("n").parse().unwrap_or(0);
            let mut r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
            let mut left = n;
            while left > 0 {
                let k = left.min(8192);
                r.extend(format!("{k:x}\r\n").bytes());
                r.resize(r.len() + k, b'y');
                r.extend(b"\r\n");
                left -= k;
            }
            r.extend(b"0\r\n\r\n");
            r
        }
        "/echo" => {
            let mut b = head.clone().into_bytes();
            b.extend(&body);
            let auth = headers.get("authorization").cloned().unwrap_or_default();
            let mut r =
                format!("HTTP/1.1 200 OK\r\nx-echo: {auth}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", b.len()).into_bytes();
            r.extend(b);
            r
        }
        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nreceived".to_vec(),
    };
    let _ = stream.write_all(&response);
}

/// A database and engine for loading guests in-process.
struct Env {
    dir: tempfile::TempDir,
    engine: Engine,
    db: Db,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("kata.db")).unwrap();
        Self { engine: Engine::new(None).unwrap(), db, dir }
    }

    /// Load guest `name` as plugin `name` with the given extra policy lines.
    fn load(&self, name: &str, policy_lines: &str) -> ChannelPlugin {
        load_plugin(&self.engine, &self.db, name, &guest(name), policy_lines, self.dir.path()).unwrap()
    }

    fn audit(&self) -> Vec<AuditRow> {
        self.db.audit_query(&AuditQuery { limit: 1000, ..Default::default() }).unwrap()
    }
}

fn write_private(path: &Path, value: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(&format!("{name}: "))).unwrap_or_else(|| panic!("no line {name} in:\n{text}"))
}

#[tokio::test]
async fn directory_grants_allow_exactly_what_they_say() {
    let env = Env::new();
    let root = env.dir.path();
    let (data, out, outside) = (root.join("data"), root.join("out"), root.join("outside"));
    for d in [&data, &out, &outside] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(data.join("hello.txt"), "hello from the host").unwrap();
    std::fs::write(outside.join("secret.txt"), "TOP SECRET").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), data.join("escape")).unwrap();
    std::os::unix::fs::symlink(&outside, data.join("escape-dir")).unwrap();
    let p = env.load(
        "guest-fs-grant",
        &format!(
            "files = [{{ host = \"data\", guest = \"/data\" }}, {{ host = \"{}\", guest = \"/out\", mode = \"rw\" }}]\n\
             config = {{ outside = \"{}\" }}",
            out.display(),
            outside.display()
        ),
    );
    let text = poll_text(&p).await;
    assert_eq!(line(&text, "read-granted"), "read-granted: ok hello from the host");
    assert_eq!(line(&text, "write-rw"), "write-rw: ok written by the plugin");
    assert_eq!(std::fs::read_to_string(out.join("written.txt")).unwrap(), "written by the plugin");
    for escape in ["write-ro", "remove-ro", "mkdir-ro", "dotdot", "dotdot-rw", "absolute-host", "symlink-file", "symlink-dir"] {
        assert!(line(&text, escape).starts_with(&format!("{escape}: err ")), "{escape} must fail:\n{text}");
    }
    assert!(!text.contains("TOP SECRET"), "{text}");
    assert!(data.join("hello.txt").exists() && !data.join("new.txt").exists() && !data.join("sub").exists());
}

/// The whole leak story through the real daemon: the plugin holds a secret
/// value and tries URL, percent-encoded URL, header, body, log line and
/// message. Every request carrying it is blocked and audited, the legitimate
/// placeholder request works, and the log and inbox only ever show
/// `[REDACTED:token]`.
#[test]
fn leaks_are_blocked_or_redacted_on_every_path() {
    let server = ScriptServer::start();
    let loot = "tok-9f8e7d6c5b4a";
    let ws = TestWorkspace::new(&format!(
        "\n[plugins.exfil]\npath = \"{}\"\nnetwork = [\"{}/\"]\nsecrets = {{ token = \"file:token\" }}\n\
         config = {{ base = \"{}\", loot = \"{loot}\" }}\n",
        guest("guest-exfil").display(),
        server.base(),
        server.base()
    ));
    write_private(&ws.path().join("token"), loot);
    let mut daemon = ws.run(&[("KATA_LOG", "info")]);
    let db_path = ws.path().join(".kata/kata.db");
    let (text, sender_name, raw) = wait_for("the exfil message in the inbox", Duration::from_secs(60), || {
        let conn = rusqlite::Connection::open(&db_path).ok()?;
        conn.query_row("SELECT text, sender_name, raw FROM inbox", [], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })
        .ok()
    });
    // The echo reply fails to send with the value in the plugin's error text.
    let send_error = wait_for("the failed send in the outbox", Duration::from_secs(60), || {
        let conn = rusqlite::Connection::open(&db_path).ok()?;
        conn.query_row("SELECT last_error FROM outbox WHERE last_error IS NOT NULL", [], |r| r.get::<_, String>(0)).ok()
    });
    assert!(daemon.signal_and_wait("TERM").success());
    assert!(!send_error.contains(loot) && send_error.contains("relay refused [REDACTED:token]"), "{send_error}");

    // Requests: the ones carrying the value never arrived; the placeholder one did.
    for attempt in ["url", "url-encoded", "header", "body"] {
        assert!(line(&text, attempt).starts_with(&format!("{attempt}: err")), "{attempt}:\n{text}");
    }
    assert_eq!(line(&text, "placeholder"), "placeholder: ok 200");
    let seen = server.seen();
    for s in &seen {
        let all = format!("{}{}", s.head, String::from_utf8_lossy(&s.body));
        assert!(!all.contains(loot) || s.head.starts_with("GET /ok?t="), "the value left in {all:.200}");
        assert!(!s.head.starts_with("GET /url") && !s.head.starts_with("GET /enc") && !s.head.starts_with("GET /header"));
    }
    assert!(seen.iter().any(|s| s.head.starts_with(&format!("GET /ok?t={loot} "))), "{seen:?}");

    // What came back from the plugin is redacted everywhere it is stored or logged.
    for stored in [&text, &sender_name, &raw] {
        assert!(!stored.contains(loot) && stored.contains("[REDACTED:token]"), "{stored}");
    }
    let log = ws.log();
    assert!(!log.contains(loot), "the log holds the value:\n{log}");
    assert!(log.contains("leaking [REDACTED:token]"), "{log}");

    // And the audit log has each decision.
    let db = Db::open(&db_path).unwrap();
    let rows = db.audit_query(&AuditQuery { plugin: Some("exfil".into()), limit: 1000, ..Default::default() }).unwrap();
    let has = |kind: &str, verdict: &str, needle: &str| {
        rows.iter().any(|r| r.kind == kind && r.verdict == verdict && format!("{:?} {:?}", r.target, r.detail).contains(needle))
    };
    assert!(has("leak", "block", "/url"), "{rows:#?}");
    assert!(has("leak", "block", "/enc"), "{rows:#?}");
    assert!(has("leak", "block", "header x-loot"), "{rows:#?}");
    assert!(has("leak", "block", "its body"), "{rows:#?}");
    assert!(has("network", "allow", "/ok"), "{rows:#?}");
    assert!(has("redact", "redact", "log line"), "{rows:#?}");
    assert!(has("redact", "redact", "message"), "{rows:#?}");
    for r in &rows {
        assert!(!format!("{r:?}").contains(loot), "the audit log holds the value: {r:?}");
    }
}

#[tokio::test]
async fn responses_echoing_a_secret_are_redacted_before_the_plugin_sees_them() {
    let server = ScriptServer::start();
    let env = Env::new();
    let value = "s3cr3t-echo-0xbeef";
    write_private(&env.dir.path().join("token"), value);
    let p = env.load(
        "guest-secret-probe",
        &format!(
            "network = [\"{base}/echo\"]\nsecrets = {{ token = \"file:token\" }}\nconfig = {{ url = \"{base}/echo\" }}",
            base = server.base()
        ),
    );
    let text = poll_text(&p).await;
    assert!(!text.contains(value), "the plugin saw the value: {text}");
    assert!(text.contains("token=[REDACTED:token]"), "{text}");
    assert!(text.to_ascii_lowercase().contains("authorization: bearer [redacted:token]"), "{text}");
    // The server did get the real value: substitution happened for the granted host.
    assert!(server.seen()[0].head.contains(&format!("token={value}")));
    let rows = env.audit();
    assert!(rows.iter().any(|r| r.kind == "redact" && r.detail.as_deref().unwrap_or("").contains("response body")), "{rows:#?}");
    assert!(rows.iter().any(|r| r.kind == "redact" && r.detail.as_deref().unwrap_or("").contains("response headers")), "{rows:#?}");
}

#[tokio::test]
async fn redirects_are_handed_to_the_plugin_not_followed() {
    let server = ScriptServer::start();
    let elsewhere = ScriptServer::start();
    let env = Env::new();
    let p = env.load(
        "guest-forbidden-host",
        &format!(
            "network = [\"{}/redirect\"]\nconfig = {{ url = \"{}/redirect?to={}/landed\" }}",
            server.base(),
            server.base(),
            elsewhere.base()
        ),
    );
    assert_eq!(poll_text(&p).await, "ok 302");
    assert_eq!(server.seen().len(), 1);
    assert!(elsewhere.seen().is_empty(), "the redirect was followed: {:?}", elsewhere.seen());
}

/// A name (not `localhost`, not an IP literal) that resolves only to loopback
/// on this machine: the host name, or another /etc/hosts alias of 127.0.0.x.
fn loopback_name() -> String {
    let mut candidates = Vec::new();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        candidates.push(h.trim().to_string());
    }
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        for l in hosts.lines() {
            let mut f = l.split_whitespace();
            if f.next().is_some_and(|ip| ip.starts_with("127.")) {
                candidates.extend(f.map(str::to_string));
            }
        }
    }
    candidates
        .into_iter()
        .filter(|n| !n.is_empty() && n != "localhost" && !n.starts_with('#'))
        .find(|n| {
            (n.as_str(), 80).to_socket_addrs().is_ok_and(|mut a| {
                a.all(|s| s.ip().is_loopback()) && (n.as_str(), 80).to_socket_addrs().is_ok_and(|mut a| a.next().is_some())
            })
        })
        .expect("this test needs a host name other than localhost that resolves to 127.0.0.x (the machine's hostname usually does)")
}

#[tokio::test]
async fn a_granted_name_resolving_to_loopback_is_denied_unless_private() {
    let server = ScriptServer::start();
    let env = Env::new();
    let name = loopback_name();
    let url = format!("http://{name}:{}/x", server.port);
    let plain = env.load("guest-forbidden-host", &format!("network = [\"http://{name}:{}\"]\nconfig = {{ url = \"{url}\" }}", server.port));
    let text = poll_text(&plain).await;
    assert!(text.starts_with("err") && text.contains("denied"), "{text}");
    assert!(server.seen().is_empty());
    let rows = env.audit();
    let deny = rows.iter().find(|r| r.verdict == "deny").expect("audited");
    assert!(deny.detail.as_deref().unwrap_or("").contains("loopback"), "{deny:?}");
    assert!(deny.policy.as_deref().unwrap_or("").contains("private = true"), "{deny:?}");

    let opted_in = env.load(
        "guest-forbidden-host",
        &format!("network = [{{ url = \"http://{name}:{}\", private = true }}]\nconfig = {{ url = \"{url}\" }}", server.port),
    );
    assert_eq!(poll_text(&opted_in).await, "ok 200");
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn response_size_is_capped_with_or_without_content_length() {
    let server = ScriptServer::start();
    let env = Env::new();
    for (path, what) in [("/big?n=100000", "content-length"), ("/chunked?n=100000", "chunked")] {
        let p = env.load(
            "guest-forbidden-host",
            &format!(
                "network = [\"{base}/\"]\nconfig = {{ url = \"{base}{path}\" }}\nlimits = {{ max_response = \"64KiB\" }}",
                base = server.base()
            ),
        );
        let text = poll_text(&p).await;
        assert!(text.starts_with("err"), "{what}: {text}");
    }
    // Under the cap, the same response is fine.
    let p = env.load(
        "guest-forbidden-host",
        &format!("network = [\"{base}/\"]\nconfig = {{ url = \"{base}/chunked?n=100000\" }}", base = server.base()),
    );
    assert_eq!(poll_text(&p).await, "ok 200");
    let limits: Vec<AuditRow> = env.audit().into_iter().filter(|r| r.kind == "limit").collect();
    assert_eq!(limits.len(), 2, "{limits:#?}");
    assert!(limits.iter().all(|r| r.detail.as_deref().unwrap_or("").contains("max_response")), "{limits:#?}");
}

#[tokio::test]
async fn request_rate_is_limited_per_plugin_across_instances() {
    let server = ScriptServer::start();
    let env = Env::new();
    let p = env.load(
        "guest-forbidden-host",
        &format!(
            "network = [\"{base}/\"]\nconfig = {{ url = \"{base}/r\" }}\nlimits = {{ requests_per_minute = 2 }}",
            base = server.base()
        ),
    );
    // Each poll is a fresh instance: the bucket belongs to the plugin.
    let texts = [poll_text(&p).await, poll_text(&p).await, poll_text(&p).await, poll_text(&p).await];
    assert_eq!(&texts[..2], ["ok 200", "ok 200"]);
    assert!(texts[2].starts_with("err") && texts[3].starts_with("err"), "{texts:?}");
    assert_eq!(server.seen().len(), 2);
    let limits: Vec<AuditRow> = env.audit().into_iter().filter(|r| r.kind == "limit").collect();
    assert_eq!(limits.len(), 1, "one audit row per episode, not per refusal: {limits:#?}");
    assert!(limits[0].policy.as_deref().unwrap_or("").contains("requests_per_minute"), "{limits:?}");
}

#[tokio::test]
async fn every_network_decision_is_audited_with_its_grant() {
    let server = ScriptServer::start();
    let env = Env::new();
    let granted = format!("{}/ok/", server.base());
    let p = env.load("guest-forbidden-host", &format!("network = [\"{granted}\"]\nconfig = {{ url = \"{granted}x?q=private\" }}"));
    assert_eq!(poll_text(&p).await, "ok 200");
    let p = env.load("guest-forbidden-host", &format!("network = [\"{granted}\"]\nconfig = {{ url = \"{}/admin?q=1\" }}", server.base()));
    assert!(poll_text(&p).await.contains("denied"));
    let rows = env.audit();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!((rows[0].kind.as_str(), rows[0].verdict.as_str()), ("network", "allow"));
    assert_eq!(rows[0].method.as_deref(), Some("GET"));
    assert_eq!(rows[0].target.as_deref(), Some(format!("{granted}x").as_str()), "URL without its query");
    assert_eq!(rows[0].policy.as_deref(), Some(granted.as_str()));
    assert_eq!((rows[1].kind.as_str(), rows[1].verdict.as_str()), ("network", "deny"));
    assert_eq!(rows[1].policy.as_deref(), Some(format!("\"{}\"", server.base()).as_str()), "the line to add");
    assert!(rows.iter().all(|r| !format!("{r:?}").contains("q=")), "{rows:#?}");
}

#[tokio::test]
async fn raw_sockets_are_refused_even_to_a_granted_address() {
    // A TCP listener the plugin is granted for HTTP: raw wasi:sockets still
    // get nothing (grants are for HTTP and host-managed streams, which kata
    // checks; a raw socket would bypass every check).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let env = Env::new();
    let p = env.load("guest-socket-probe", &format!("network = [\"http://127.0.0.1:{port}\"]\nconfig = {{ port = {port} }}"));
    let text = poll_text(&p).await;
    for part in ["tcp=err:", "udp=err:", "dns=err:"] {
        assert!(text.contains(part), "{part} in {text}");
    }
    assert!(text.contains("access-denied") || text.contains("not-supported"), "{text}");
    assert!(listener.accept().is_err(), "a raw socket reached the listener: {text}");
}
