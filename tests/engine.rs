//! The sandbox, with hostile guests built from source: CPU and memory limits,
//! network grants, secrets, files, and the wrong kind of component.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{RecordingServer, guest, load_plugin, poll_text};
use kata::engine::Engine;
use kata::plugin::{CallError, ChannelPlugin};
use kata::store::Db;

struct Env {
    _dir: tempfile::TempDir,
    engine: Engine,
    db: Db,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("kata.db")).unwrap();
        Self { engine: Engine::new(Some(dir.path().join("cache"))).unwrap(), db, _dir: dir }
    }

    /// Load guest `name` as plugin `name` with the given extra policy lines.
    fn load(&self, name: &str, policy_lines: &str) -> anyhow::Result<ChannelPlugin> {
        load_plugin(&self.engine, &self.db, name, &guest(name), policy_lines, Path::new("/"))
    }
}

// A single-threaded runtime: if the spinning guest did not yield, the quiet
// plugin could not run at all until it was stopped.
#[tokio::test(flavor = "current_thread")]
async fn busy_loop_is_stopped_while_another_plugin_keeps_working() {
    let env = Env::new();
    let spin = env.load("guest-spin", "limits = { cpu_per_call = \"300ms\" }").unwrap();
    let quiet = Arc::new(env.load("guest-quiet", "").unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (quiet, done, polls) = (quiet.clone(), done.clone(), polls.clone());
        tokio::spawn(async move {
            let mut inst = quiet.instantiate().await.unwrap();
            inst.connect().await.unwrap();
            while !done.load(Ordering::SeqCst) {
                inst.poll(None).await.unwrap();
                polls.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut inst = spin.instantiate().await.unwrap();
    inst.connect().await.unwrap();
    let err = inst.poll(None).await.expect_err("an endless loop cannot return");
    done.store(true, Ordering::SeqCst);
    worker.await.unwrap();
    assert!(matches!(err, CallError::Trap(_)), "{err:?}");
    assert!(err.to_string().contains("CPU budget"), "{err}");
    assert!(polls.load(Ordering::SeqCst) > 0, "the quiet plugin ran while the other spun");
    // The stopped instance refuses further calls; a fresh one works.
    assert!(inst.poll(None).await.is_err());
    let mut again = quiet.instantiate().await.unwrap();
    again.connect().await.unwrap();
    assert!(again.poll(None).await.unwrap().messages.is_empty());
}

#[tokio::test]
async fn memory_bomb_traps_cleanly_at_its_limit() {
    let env = Env::new();
    let bomb = env.load("guest-membomb", "limits = { memory = \"16MiB\" }").unwrap();
    let mut inst = bomb.instantiate().await.unwrap();
    inst.connect().await.unwrap();
    let err = inst.poll(None).await.expect_err("the bomb cannot fit");
    assert!(err.to_string().contains("memory limit of 16 MiB"), "{err}");
    // The host is fine: the same plugin instantiates again.
    assert!(bomb.instantiate().await.is_ok());
}

#[tokio::test]
async fn network_is_limited_to_granted_hosts() {
    let server = RecordingServer::start();
    let env = Env::new();
    let base = format!("http://127.0.0.1:{}", server.port);
    let granted = format!("network = [\"{base}/allowed/\"]\nconfig = {{ url = \"{base}/allowed/x\" }}");
    let p = env.load("guest-forbidden-host", &granted).unwrap();
    assert_eq!(poll_text(&p).await, "ok 200");

    for url in [format!("{base}/secret-admin"), "http://127.0.0.2:9/".to_string(), "https://example.com/".to_string()] {
        let lines = format!("network = [\"{base}/allowed/\"]\nconfig = {{ url = \"{url}\" }}");
        let p = env.load("guest-forbidden-host", &lines).unwrap();
        let text = poll_text(&p).await;
        assert!(text.starts_with("err") && text.contains("denied"), "{url}: {text}");
    }
    let seen = server.requests();
    assert_eq!(seen.len(), 1, "only the granted request reached the server: {seen:?}");
    assert!(seen[0].starts_with("GET /allowed/x "), "{seen:?}");

    // No grant at all: nothing is reachable.
    let p = env.load("guest-forbidden-host", &format!("config = {{ url = \"{base}/allowed/x\" }}")).unwrap();
    assert!(poll_text(&p).await.contains("denied"));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn secrets_reach_only_granted_hosts_and_never_the_plugin() {
    let server = RecordingServer::start();
    let env = Env::new();
    let base = format!("http://127.0.0.1:{}", server.port);
    let value = "s3cr3t-value-0xfeed";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{value}\n")).unwrap();
    // Secret files must be private to their owner (kata refuses wider modes).
    let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    std::fs::set_permissions(dir.path().join("token"), private).unwrap();
    let lines = format!(
        "network = [\"{base}/echo\"]\nsecrets = {{ token = \"file:{}\" }}\nconfig = {{ url = \"{base}/echo?t={{{{secret:token}}}}\" }}",
        dir.path().join("token").display()
    );
    let p = env.load("guest-secret-probe", &lines).unwrap();
    let text = poll_text(&p).await;
    assert!(!text.contains(value), "the plugin saw the secret: {text}");
    let seen = server.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].contains(&format!("GET /echo?t={value} ")), "substituted in the URL: {seen:?}");
    assert!(seen[0].to_ascii_lowercase().contains(&format!("authorization: bearer {value}")), "and the header: {seen:?}");

    // The same plugin pointed at an ungranted host sends nothing, secret or not.
    let lines = format!(
        "network = [\"{base}/echo\"]\nsecrets = {{ token = \"file:{}\" }}\nconfig = {{ url = \"{base}/elsewhere?t={{{{secret:token}}}}\" }}",
        dir.path().join("token").display()
    );
    let p = env.load("guest-secret-probe", &lines).unwrap();
    let _ = poll_text(&p).await;
    assert_eq!(server.requests().len(), 1, "no request left for an ungranted path");
}

#[tokio::test]
async fn files_are_not_reachable_without_a_grant() {
    let env = Env::new();
    let p = env.load("guest-fs-probe", "").unwrap();
    let text = poll_text(&p).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for line in lines {
        assert!(!line.contains(": ok"), "a file attempt succeeded: {line}");
    }
    assert!(!text.contains("root:"), "read /etc/passwd: {text}");
}

#[tokio::test]
async fn wrong_world_is_refused_with_a_clear_error() {
    let env = Env::new();
    let err = env.load("guest-tools-only", "").err().expect("a tools plugin is not a channel");
    let msg = format!("{err:#}");
    assert!(msg.contains("is not a channel plugin") && msg.contains("kata:plugin/tools"), "{msg}");
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk() {
    let env = Env::new();
    let bytes = std::fs::read(guest("guest-quiet")).unwrap();
    assert!(!env.engine.is_cached(&bytes));
    env.load("guest-quiet", "").unwrap();
    assert!(env.engine.is_cached(&bytes));
    // A second engine (a restart) loads the cached artifact and runs it.
    let p = env.load("guest-quiet", "").unwrap();
    let mut inst = p.instantiate().await.unwrap();
    inst.connect().await.unwrap();
    assert!(inst.poll(None).await.unwrap().messages.is_empty());
}
