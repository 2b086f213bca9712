//! `kata:plugin/connections` (WIT 0.1.3) end to end: the guest
//! `guest-conn` runs a script from its config through
//! `kata_sdk::net::Connection` against a line server started here on
//! loopback (SMTP-like: a greeting, `250 got LINE` echoes, STARTTLS with a
//! test CA made by rcgen). Shown: a granted open, writes with
//! `{{secret:…}}` and `{{base64:…}}` filled in by the host and secret
//! values redacted from what is read; no grant, a secret not bound here, a
//! leaked value and the rate limit refused with the kata.toml line; the
//! `max_response` read budget; timeouts capped by the call's deadline; TLS
//! from the start and after STARTTLS, only with the CA trusted; STARTTLS
//! refused when the server sent data before the handshake; a dropped
//! connection closes.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{guest, load_plugin, poll_text, wait_for};
use kata::engine::Engine;
use kata::store::{AuditQuery, AuditRow, Db};

const SECRET: &str = "hunter2-secret-value";

/// A server-side stream, plain or upgraded to TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
    Gone,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Gone => Ok(0),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Gone => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Gone => Ok(()),
        }
    }
}

impl Stream {
    fn upgrade(&mut self, config: &Arc<rustls::ServerConfig>) {
        if let Stream::Plain(tcp) = std::mem::replace(self, Stream::Gone) {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            *self = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
        }
    }

    fn close(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        *self = Stream::Gone;
    }
}

/// One line, byte by byte (nothing is read past it: a STARTTLS upgrade
/// must find the handshake unread), without its `\r\n`.
fn read_line(s: &mut Stream) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) => line.push(b[0]),
            _ => return None,
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

/// An SMTP-like line server on loopback. Every line received is recorded
/// (and `<closed>` when a connection ends). It greets with `220 hello` and
/// answers `STARTTLS` (`220 go ahead`, then TLS), `STARTTLS-EARLY` (the
/// same plus a line sent before the handshake), `AUTH …` (`235 ok`),
/// `TOKEN` (a line holding the secret's value), `BIG` (10 KB of lines),
/// `SLOW` (nothing), `QUIT` (`221 bye`, then it closes), anything else
/// `250 got LINE`.
struct LineServer {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LineServer {
    fn start(tls: Arc<rustls::ServerConfig>, tls_at_start: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                let (seen, tls) = (seen.clone(), tls.clone());
                std::thread::spawn(move || serve(tcp, &seen, &tls, tls_at_start));
            }
        });
        Self { port, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

fn serve(tcp: TcpStream, seen: &Mutex<Vec<String>>, tls: &Arc<rustls::ServerConfig>, tls_at_start: bool) {
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut s = Stream::Plain(tcp);
    if tls_at_start {
        s.upgrade(tls);
    }
    let _ = s.write_all(b"220 hello\r\n").and_then(|()| s.flush());
    while let Some(line) = read_line(&mut s) {
        seen.lock().unwrap().push(line.clone());
        let reply: Vec<u8> = match line.as_str() {
            "STARTTLS" => {
                let _ = s.write_all(b"220 go ahead\r\n").and_then(|()| s.flush());
                s.upgrade(tls);
                continue;
            }
            "STARTTLS-EARLY" => b"220 go ahead\r\n250 sent before the handshake\r\n".to_vec(),
            "TOKEN" => format!("250 token={SECRET}\r\n").into_bytes(),
            "BIG" => format!("{}\r\n", "x".repeat(98)).repeat(100).into_bytes(),
            "SLOW" => continue,
            "QUIT" => {
                let _ = s.write_all(b"221 bye\r\n").and_then(|()| s.flush());
                s.close();
                break;
            }
            l if l.starts_with("AUTH ") => b"235 ok\r\n".to_vec(),
            l => format!("250 got {l}\r\n").into_bytes(),
        };
        if s.write_all(&reply).and_then(|()| s.flush()).is_err() {
            break;
        }
    }
    seen.lock().unwrap().push("<closed>".into());
}

/// A CA and a server configuration with a certificate it signed for
/// `names`; the CA as PEM.
fn test_tls(names: &[&str]) -> (Arc<rustls::ServerConfig>, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap().signed_by(&leaf_key, &ca).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    (Arc::new(config), ca.pem())
}

/// A workspace with the CA and the secret in files, and a database.
struct Env {
    dir: tempfile::TempDir,
    db: Db,
    engine: Engine,
}

impl Env {
    fn new(ca_pem: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
        std::fs::write(dir.path().join("pw.txt"), SECRET).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("pw.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let db = Db::open(&dir.path().join("kata.db")).unwrap();
        Self { dir, db, engine: Engine::new(None).unwrap() }
    }

    /// Run `script` in a fresh instance of guest-conn under `policy` (the
    /// lines after `path`); its transcript.
    async fn run(&self, policy: &str, url: &str, script: &str) -> String {
        let lines = format!("{policy}\nconfig = {{ url = \"{url}\", script = '{script}' }}\n");
        let p = load_plugin(&self.engine, &self.db, "conn", &guest("guest-conn"), &lines, self.dir.path()).unwrap();
        poll_text(&p).await
    }

    fn audit(&self) -> Vec<AuditRow> {
        self.db.audit_query(&AuditQuery { limit: 1000, ..Default::default() }).unwrap()
    }
}

/// The transcript lines for `steps` (`STEP -> RESULT`).
fn transcript(steps: &[(&str, &str)]) -> String {
    steps.iter().map(|(s, r)| format!("{s} -> {r}")).collect::<Vec<_>>().join("\n")
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8) | u32::from(*chunk.get(2).unwrap_or(&0));
        for k in 0..4 {
            out.push(if k <= chunk.len() { ABC[(n >> (18 - 6 * k) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[tokio::test]
async fn a_granted_connection_talks_upgrades_to_tls_and_fills_in_placeholders() {
    let (tls, ca) = test_tls(&["localhost", "127.0.0.1"]);
    let server = LineServer::start(tls, false);
    let env = Env::new(&ca);
    let url = format!("tcp://localhost:{}", server.port);
    let policy = format!("network = [\"{url}\"]\nca = \"file:ca.pem\"\nsecrets = {{ pw = \"file:pw.txt\" }}");
    let script = "open|line|send:EHLO kata|line|send:STARTTLS|line|starttls|send:AUTH PLAIN {{base64:\\0kata\\0{{secret:pw}}}}|line\
                  |send:TOKEN|line|send:QUIT|line|line";
    let out = env.run(&policy, &url, script).await;
    let want = transcript(&[
        ("open", "ok"),
        ("line", "220 hello"),
        ("send", "ok"),
        ("line", "250 got EHLO kata"),
        ("send", "ok"),
        ("line", "220 go ahead"),
        ("starttls", "ok"),
        ("send", "ok"),
        ("line", "235 ok"),
        ("send", "ok"),
        // The server put the secret's value in a line: the plugin sees it redacted.
        ("line", "250 token=[REDACTED:pw]"),
        ("send", "ok"),
        ("line", "221 bye"),
        ("line", "error closed: the peer closed the connection"),
    ]);
    assert_eq!(out, want);
    // What went over the wire: the secret, base64-encoded after substitution, over TLS.
    let auth = format!("AUTH PLAIN {}", base64(format!("\0kata\0{SECRET}").as_bytes()));
    wait_for("the server to see the end", Duration::from_secs(5), || server.lines().contains(&"<closed>".to_string()).then_some(()));
    assert_eq!(server.lines(), ["EHLO kata", "STARTTLS", auth.as_str(), "TOKEN", "QUIT", "<closed>"]);
    // Allowances reach the audit log in batches.
    let rows = wait_for("the open, the STARTTLS and the redaction in the audit log", Duration::from_secs(10), || {
        let rows = env.audit();
        let both = ["CONNECT", "STARTTLS"].iter().all(|m| rows.iter().any(|r| r.method.as_deref() == Some(m) && r.verdict == "allow"));
        (both && rows.iter().any(|r| r.kind == "redact")).then_some(rows)
    });
    let open = rows.iter().find(|r| r.kind == "network" && r.method.as_deref() == Some("CONNECT")).expect("the open is audited");
    assert_eq!((open.verdict.as_str(), open.target.as_deref(), open.policy.as_deref()), ("allow", Some(url.as_str()), Some(url.as_str())));
    assert!(rows.iter().any(|r| r.method.as_deref() == Some("STARTTLS") && r.verdict == "allow"), "{rows:#?}");
    assert!(rows.iter().any(|r| r.kind == "redact" && r.detail.as_deref().is_some_and(|d| d.contains("secret pw"))), "{rows:#?}");
    assert!(!format!("{rows:?}").contains(SECRET), "no secret value in the audit log");

    // A dropped connection is closed at once (the server sees the end).
    let before = server.lines().len();
    let out = env.run(&policy, &url, "open|line|close").await;
    assert_eq!(out, transcript(&[("open", "ok"), ("line", "220 hello"), ("close", "ok")]));
    wait_for("the server to see the close", Duration::from_secs(5), || (server.lines().len() > before).then_some(()));
    assert_eq!(server.lines()[before], "<closed>");
}

#[tokio::test]
async fn what_is_not_granted_is_refused_with_the_line_to_add() {
    let (tls, ca) = test_tls(&["localhost", "127.0.0.1"]);
    let server = LineServer::start(tls, false);
    let env = Env::new(&ca);
    let url = format!("tcp://localhost:{}", server.port);

    // No grant: the open is denied, naming the entry, and audited.
    let out = env.run("", &url, "open").await;
    assert!(out.starts_with("open -> error denied: refused by the workspace policy: plugin conn: CONNECT"), "{out}");
    assert!(out.contains(&format!("add \"{url}\" to `network` under [plugins.conn]")), "{out}");
    let denied = env.audit().into_iter().find(|r| r.verdict == "deny").expect("the denial is audited");
    assert_eq!((denied.kind.as_str(), denied.policy.as_deref()), ("network", Some(format!("\"{url}\"").as_str())));
    // A grant for tcp:// does not cover tls://, and a URL needs a port.
    let policy = format!("network = [\"{url}\"]\nca = \"file:ca.pem\"");
    let tls_url = format!("tls://localhost:{}", server.port);
    let out = env.run(&policy, &url, &format!("open:{tls_url}|open:tcp://localhost")).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("open -> error denied:") && lines[0].contains(&format!("add \"{tls_url}\"")), "{out}");
    assert!(lines[1].contains("needs a port"), "{out}");

    // A secret bound to another host, an undefined one, and a value the
    // plugin should never hold: refused, and nothing of it is written.
    let policy = format!(
        "network = [\"{url}\"]\nsecrets = {{ pw = {{ from = \"file:pw.txt\", hosts = [\"mail.example.org\"] }} }}\n\
         limits = {{ requests_per_minute = 3 }}"
    );
    let script = format!("open|line|send:PASS {{{{secret:pw}}}}|send:PASS {{{{secret:nope}}}}|send:PASS {SECRET}|send:NOOP|line");
    let out = env.run(&policy, &url, &script).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["open -> ok", "line -> 220 hello"], "{out}");
    assert!(lines[2].starts_with("send -> error denied:") && lines[2].contains("binds pw to mail.example.org only"), "{out}");
    assert!(lines[3].starts_with("send -> error denied:") && lines[3].contains("defines no such secret"), "{out}");
    assert!(lines[4].starts_with("send -> error denied:") && lines[4].contains("contains the value of secret pw"), "{out}");
    assert_eq!(lines[5..], ["send -> ok", "line -> 250 got NOOP"], "{out}");
    wait_for("the server to see the end", Duration::from_secs(5), || server.lines().contains(&"<closed>".to_string()).then_some(()));
    assert!(server.lines().iter().all(|l| !l.starts_with("PASS")), "{:?}", server.lines());
    let rows = env.audit();
    assert!(rows.iter().any(|r| r.kind == "secret" && r.method.as_deref() == Some("WRITE")), "{rows:#?}");
    assert!(rows.iter().any(|r| r.kind == "leak" && r.verdict == "block"), "{rows:#?}");

    // Opens count towards requests_per_minute: the fourth in a minute waits.
    let out = env.run(&policy, &url, "open|open|open|open").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["open -> ok", "open -> ok", "open -> ok"], "{out}");
    assert!(lines[3].starts_with("open -> error io:") && lines[3].contains("more than 3 requests per minute"), "{out}");
}

#[tokio::test]
async fn reads_are_bounded_by_the_budget_and_the_call_deadline() {
    let (tls, ca) = test_tls(&["localhost", "127.0.0.1"]);
    let server = LineServer::start(tls, false);
    let env = Env::new(&ca);
    let url = format!("tcp://127.0.0.1:{}", server.port);

    // 10 KB offered, 4 KiB allowed for the whole connection (the greeting included).
    let policy = format!("network = [\"{url}\"]\nlimits = {{ max_response = \"4KiB\" }}");
    let out = env.run(&policy, &url, "open|line|send:SLOW|line:300|send:BIG|drain").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..4], ["open -> ok", "line -> 220 hello", "send -> ok", "line -> error timeout: timed out"], "{out}");
    let want = format!("drain -> {} bytes, then error too-large:", 4096 - "220 hello\r\n".len());
    assert!(lines[5].starts_with(&want), "{out}");
    let rows = env.audit();
    assert!(rows.iter().any(|r| r.kind == "limit" && r.policy.as_deref() == Some("limits = { max_response = \"8KiB\" }")), "{rows:#?}");

    // A read asked to wait a minute gives up before the call's own 2 s
    // deadline: the plugin gets `timeout` and returns normally.
    let policy = format!("network = [\"{url}\"]\nlimits = {{ call_timeout = \"2s\" }}");
    let started = Instant::now();
    let out = env.run(&policy, &url, "open|line|send:SLOW|line:60000|send:NOOP|line").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[3], "line -> error timeout: timed out", "{out}");
    assert_eq!(lines[5], "line -> 250 got NOOP", "{out}");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
}

/// Waiting on the network is not running: a call that spends ten times its
/// CPU budget waiting for a server finishes normally (a guest that spins
/// that long is stopped: tests/engine.rs).
#[tokio::test]
async fn waiting_on_the_network_is_not_charged_to_the_cpu_budget() {
    let (tls, ca) = test_tls(&["localhost", "127.0.0.1"]);
    let server = LineServer::start(tls, false);
    let env = Env::new(&ca);
    let url = format!("tcp://127.0.0.1:{}", server.port);
    let policy = format!("network = [\"{url}\"]\nlimits = {{ cpu_per_call = \"50ms\", call_timeout = \"10s\" }}");
    let started = Instant::now();
    let out = env.run(&policy, &url, "open|line|send:SLOW|line:250|send:SLOW|line:250|send:NOOP|line").await;
    let waited = started.elapsed();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[3], "line -> error timeout: timed out", "{out}");
    assert_eq!(lines[5], "line -> error timeout: timed out", "{out}");
    assert_eq!(lines[7], "line -> 250 got NOOP", "{out}");
    assert!(waited >= Duration::from_millis(500), "the call waited for both reads: {waited:?}");
}

#[tokio::test]
async fn tls_is_verified_for_the_host_name_and_starttls_refuses_early_data() {
    let (tls, ca) = test_tls(&["localhost", "127.0.0.1"]);
    let direct = LineServer::start(tls.clone(), true);
    let env = Env::new(&ca);
    let url = format!("tls://localhost:{}", direct.port);

    // tls:// from the start, verified against the test CA from kata.toml.
    let policy = format!("network = [\"{url}\"]\nca = \"file:ca.pem\"");
    let out = env.run(&policy, &url, "open|line|send:QUIT|line").await;
    assert_eq!(out, transcript(&[("open", "ok"), ("line", "220 hello"), ("send", "ok"), ("line", "221 bye")]));
    // Without the CA the certificate is refused.
    let out = env.run(&format!("network = [\"{url}\"]"), &url, "open").await;
    assert!(out.starts_with("open -> error io: TLS with localhost:") && out.contains("UnknownIssuer"), "{out}");

    // STARTTLS after the server already sent more than its answer: refused,
    // so nothing sent in clear text is read as if it came over TLS.
    let plain = LineServer::start(tls, false);
    let url = format!("tcp://localhost:{}", plain.port);
    let policy = format!("network = [\"{url}\"]\nca = \"file:ca.pem\"");
    let out = env.run(&policy, &url, "open|line|send:STARTTLS-EARLY|line|starttls").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[3], "line -> 220 go ahead", "{out}");
    assert!(lines[4].starts_with("starttls -> error io:") && lines[4].contains("before the TLS handshake"), "{out}");
    // A certificate for another name fails verification on STARTTLS.
    let (other, other_ca) = test_tls(&["mail.example.org"]);
    let other = LineServer::start(other, false);
    let env = Env::new(&other_ca);
    let url = format!("tcp://localhost:{}", other.port);
    let policy = format!("network = [\"{url}\"]\nca = \"file:ca.pem\"");
    let out = env.run(&policy, &url, "open|line|send:STARTTLS|line|starttls").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[3], "line -> 220 go ahead", "{out}");
    assert!(
        lines[4].starts_with("starttls -> error io: TLS with localhost:") && lines[4].contains("not valid for name \"localhost\""),
        "{out}"
    );
}
