//! Secrets end to end: kata's encrypted store through the CLI and the real
//! daemon, per-secret host binding against real servers on loopback, and
//! HTTPS through the sandbox's pinned connector with a workspace CA.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RecordingServer, TestWorkspace, guest, kata, kata_bin, load_plugin, poll_text, wait_for};
use kata::engine::Engine;
use kata::store::{AuditQuery, AuditRow, Db};

/// `kata secret set NAME -w WS` with `value` piped to stdin and the key at `key`.
fn secret_set(ws: &Path, key: &Path, name: &str, value: &str) -> (bool, String, String) {
    let mut child = Command::new(kata_bin())
        .args(["secret", "set", name, "-w"])
        .arg(ws)
        .env("KATA_SECRET_KEY_FILE", key)
        .env("KATA_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{value}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `kata ARGS -w WS` with the key at `key`.
fn kata_with_key(ws: &Path, key: &Path, args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(kata_bin()).args(args).arg("-w").arg(ws).env("KATA_SECRET_KEY_FILE", key).env("KATA_LOG", "off").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `kata run` that must fail at start: its stderr.
fn run_fails(ws: &TestWorkspace, key: &Path) -> String {
    let child = Command::new(kata_bin())
        .arg("run")
        .arg("-w")
        .arg(ws.path())
        .env("KATA_SECRET_KEY_FILE", key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = common::ChildGuard(Some(child));
    let status = wait_for("kata run to refuse to start", Duration::from_secs(60), || guard.0.as_mut().unwrap().try_wait().unwrap());
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut guard.0.take().unwrap().stderr.take().unwrap(), &mut err).unwrap();
    err
}

/// The store through the CLI and the daemon: a value set with `kata secret
/// set` (piped) is used by the real daemon at `{{secret:token}}`, `list`
/// shows the name and never the value, nothing in the workspace holds the
/// value in clear, and a missing secret, a wrong key and a tampered store
/// each stop `kata run` with one paragraph that says what to do.
#[test]
fn the_encrypted_store_feeds_the_daemon_and_explains_every_failure() {
    let server = RecordingServer::start();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("kata/secret.key");
    let value = "store-value-7c1e9a2b";
    let base = format!("http://127.0.0.1:{}", server.port);
    let ws = TestWorkspace::new(&format!(
        "\n[plugins.probe]\npath = \"{}\"\nnetwork = [\"{base}/\"]\nsecrets = {{ token = \"kata:token\" }}\n\
         config = {{ url = \"{base}/probe\" }}\n",
        guest("guest-secret-probe").display(),
    ));
    // Not set yet: kata run refuses, naming the command that fixes it.
    let err = run_fails(&ws, &key);
    assert!(err.contains("secret token is not in kata's secret store") && err.contains("kata secret set token"), "{err}");

    let (ok, out, err) = secret_set(ws.path(), &key, "token", value);
    assert!(ok, "{err}");
    assert!(out.contains("Created kata's secret key") && out.contains("Stored secret token"), "{out}");
    assert!(!out.contains("Warning"), "{out}");
    // A key kept inside the workspace works, but is called out.
    let careless = TestWorkspace::new("");
    let (ok, out, err) = secret_set(careless.path(), &careless.path().join("inside.key"), "other", "x-value");
    assert!(ok && out.contains("Warning: the key") && out.contains("inside the workspace"), "{out}{err}");
    let (ok, out, _) = kata_with_key(ws.path(), &key, &["secret", "list"]);
    assert!(ok && out.contains("token") && !out.contains(value), "{out}");
    let (ok, out, _) = kata_with_key(ws.path(), &key, &["policy", "explain", "probe"]);
    assert!(ok && out.contains("kata's secret store as token (set ") && !out.contains(value), "{out}");
    for (path, bytes) in common::snapshot(ws.path()) {
        assert!(!bytes.windows(value.len()).any(|w| w == value.as_bytes()), "{} holds the value", path.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // The daemon fills it in for the granted host.
    let mut daemon = ws.run(&[("KATA_SECRET_KEY_FILE", key.to_str().unwrap())]);
    wait_for("the probe's request with the value", Duration::from_secs(60), || {
        server.requests().iter().any(|r| r.contains(&format!("token={value}")) && r.contains(&format!("Bearer {value}"))).then_some(())
    });
    assert!(daemon.signal_and_wait("TERM").success());
    assert!(!ws.log().contains(value), "{}", ws.log());

    // Another key: refused with the way out.
    let other = keys.path().join("other.key");
    std::fs::write(&other, format!("{}\n", "ab".repeat(32))).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let err = run_fails(&ws, &other);
    assert!(err.contains("encrypted with a different key") && err.contains("KATA_SECRET_KEY_FILE"), "{err}");

    // A tampered store: refused, and `kata secret set` will not overwrite it.
    let store = ws.path().join(".kata/secrets.enc");
    let mut bytes = std::fs::read(&store).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    std::fs::write(&store, &bytes).unwrap();
    let err = run_fails(&ws, &key);
    assert!(err.contains("fails its integrity check") && err.contains("restore it from a backup"), "{err}");
    let (ok, _, err) = secret_set(ws.path(), &key, "token", "new-value-123");
    assert!(!ok && err.contains("fails its integrity check"), "{err}");
    assert_eq!(std::fs::read(&store).unwrap(), bytes, "a refused set leaves the store as it was");
}

fn audit(db: &Db) -> Vec<AuditRow> {
    db.audit_query(&AuditQuery { limit: 1000, ..Default::default() }).unwrap()
}

fn write_private(path: &Path, value: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Two servers, both granted; the secret is bound to one. The plugin puts
/// `{{secret:token}}` in requests to both: the bound one gets the value, the
/// other gets no byte at all, the plugin gets HttpRequestDenied, and the
/// audit log names the kata.toml line of the binding.
#[tokio::test]
async fn a_secret_never_reaches_a_granted_but_unbound_host() {
    let bound = RecordingServer::start();
    let unbound = RecordingServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("kata.db")).unwrap();
    let engine = Engine::new(None).unwrap();
    let value = "bound-secret-3f2a1b";
    write_private(&dir.path().join("token"), value);
    let grants = |url: &str| {
        format!(
            "network = [\"http://127.0.0.1:{}/\", \"http://127.0.0.1:{}/\"]\n\
             secrets = {{ token = {{ from = \"file:token\", hosts = [\"127.0.0.1:{}\"] }} }}\n\
             config = {{ url = \"{url}\" }}",
            bound.port, unbound.port, bound.port
        )
    };
    let probe = guest("guest-secret-probe");
    let to_unbound =
        load_plugin(&engine, &db, "probe", &probe, &grants(&format!("http://127.0.0.1:{}/steal", unbound.port)), dir.path()).unwrap();
    let text = poll_text(&to_unbound).await;
    assert!(text.starts_with("err") && text.contains("denied"), "{text}");
    assert!(unbound.requests().is_empty(), "bytes reached the unbound host: {:?}", unbound.requests());

    let to_bound = load_plugin(&engine, &db, "probe", &probe, &grants(&format!("http://127.0.0.1:{}/ok", bound.port)), dir.path()).unwrap();
    assert_eq!(poll_text(&to_bound).await, "received");
    let seen = bound.requests();
    assert!(seen.len() == 1 && seen[0].contains(&format!("token={value}")) && seen[0].contains(&format!("Bearer {value}")), "{seen:?}");
    assert!(unbound.requests().is_empty());

    let rows = audit(&db);
    let deny = rows.iter().find(|r| r.kind == "secret" && r.verdict == "deny").expect("the refusal is audited");
    let policy = deny.policy.as_deref().unwrap_or("");
    assert!(policy.starts_with("kata.toml:4: secret token is bound to 127.0.0.1:"), "{deny:?}");
    let detail = deny.detail.as_deref().unwrap_or("");
    assert!(detail.contains(&format!("add \"127.0.0.1:{}\" to `hosts`", unbound.port)), "{detail}");
    assert!(rows.iter().all(|r| !format!("{r:?}").contains(value)), "{rows:#?}");
}

/// An HTTPS server on loopback with a certificate for `localhost` from a CA
/// made for the test. Records each request head, and counts TLS handshakes
/// that failed (a client that did not trust the certificate).
struct TlsServer {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    failed_handshakes: Arc<Mutex<usize>>,
    ca_pem: String,
}

impl TlsServer {
    fn start() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "kata test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(0));
        let (h, f) = (heads.clone(), failed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut tcp) = stream else { continue };
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(mut conn) = rustls::ServerConnection::new(config.clone()) else { continue };
                let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                let mut reader = BufReader::new(&mut tls);
                let mut head = String::new();
                let mut ok = true;
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) => break,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => head.push_str(&line),
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
                drop(reader);
                if !ok || head.is_empty() {
                    *f.lock().unwrap() += 1;
                    continue;
                }
                h.lock().unwrap().push(head);
                let body = "hello over tls";
                let _ = tls
                    .write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes());
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        Self { port, heads, failed_handshakes: failed, ca_pem: ca.pem() }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    fn failed_handshakes(&self) -> usize {
        *self.failed_handshakes.lock().unwrap()
    }
}

/// HTTPS through the sandbox's resolve-then-check, pinned connector: with the
/// server's CA added by the policy's `ca` key the granted request works and
/// carries the substituted secret; without it the certificate is refused (no
/// byte of the request is sent); an ungranted path is refused before any
/// connection is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_workspace_ca_works_substitutes_and_still_enforces_grants() {
    let server = TlsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("kata.db")).unwrap();
    let engine = Engine::new(None).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &server.ca_pem).unwrap();
    let value = "tls-secret-0a9b8c7d";
    write_private(&dir.path().join("token"), value);
    let base = format!("https://localhost:{}", server.port);
    let policy = |url: &str, ca: bool| {
        format!(
            "network = [\"{base}/granted/\"]\nsecrets = {{ token = {{ from = \"file:token\", hosts = [\"localhost\"] }} }}\n\
             config = {{ url = \"{url}\" }}\n{}",
            if ca { "ca = \"file:ca.pem\"" } else { "" }
        )
    };
    let probe = guest("guest-secret-probe");

    let p = load_plugin(&engine, &db, "matrix", &probe, &policy(&format!("{base}/granted/sync"), true), dir.path()).unwrap();
    assert_eq!(poll_text(&p).await, "hello over tls");
    let heads = server.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with(&format!("GET /granted/sync?token={value} HTTP/1.1")), "{heads:?}");
    assert!(heads[0].to_ascii_lowercase().contains(&format!("authorization: bearer {}", value.to_ascii_lowercase())), "{heads:?}");

    // Not granted: refused before connecting (no handshake, no request).
    let p = load_plugin(&engine, &db, "matrix", &probe, &policy(&format!("{base}/admin"), true), dir.path()).unwrap();
    let text = poll_text(&p).await;
    assert!(text.starts_with("err") && text.contains("denied"), "{text}");
    assert_eq!((server.heads().len(), server.failed_handshakes()), (1, 0));

    // Without `ca` the same granted request fails certificate verification:
    // the CA is trusted because the policy says so, not by default.
    let p = load_plugin(&engine, &db, "matrix", &probe, &policy(&format!("{base}/granted/sync"), false), dir.path()).unwrap();
    let text = poll_text(&p).await;
    assert!(text.starts_with("err"), "{text}");
    wait_for("the server to see the refused handshake", Duration::from_secs(10), || (server.failed_handshakes() == 1).then_some(()));
    assert_eq!(server.heads().len(), 1, "no request was sent over an untrusted connection");

    let rows = audit(&db);
    assert!(
        rows.iter()
            .any(|r| r.kind == "network" && r.verdict == "allow" && r.target.as_deref() == Some(format!("{base}/granted/sync").as_str()))
    );
    assert!(
        rows.iter().any(|r| r.kind == "network" && r.verdict == "deny" && r.target.as_deref() == Some(format!("{base}/admin").as_str()))
    );
    assert!(rows.iter().all(|r| !format!("{r:?}").contains(value)));

    // `kata policy explain` and `check` show the CA.
    let ws = TestWorkspace::new(&format!("\n[plugins.matrix]\nnetwork = [\"{base}/granted/\"]\nca = \"file:ca.pem\"\n"));
    std::fs::write(ws.path().join("ca.pem"), &server.ca_pem).unwrap();
    let (ok, out, err) = kata(ws.path(), &["policy", "explain", "matrix"]);
    assert!(ok && out.contains("the public web roots, and:") && out.contains("ca.pem (1 certificate)"), "{out}{err}");
    std::fs::write(ws.path().join("ca.pem"), "not a certificate").unwrap();
    let (ok, out, _) = kata(ws.path(), &["policy", "check"]);
    assert!(!ok && out.contains("kata.toml:") && out.contains("holds no certificate"), "{out}");
}
