//! `kata plugin add|list|inspect|remove|upgrade|build` against real
//! components built from source. Every refusal leaves the plugin store and
//! kata.toml byte-for-byte unchanged.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::path::Path;

use common::{FileServer, TestWorkspace, guest, kata, snapshot};

/// What a refused command must not touch: kata.toml and the plugin store.
fn state(ws: &Path) -> (Vec<u8>, std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>) {
    (std::fs::read(ws.join("kata.toml")).unwrap(), snapshot(&ws.join(".kata/plugins")))
}

/// Run a command that must fail, check the message and that nothing changed.
fn refused(ws: &TestWorkspace, args: &[&str], expect: &[&str]) -> String {
    let before = state(ws.path());
    let (ok, stdout, stderr) = kata(ws.path(), args);
    assert!(!ok, "{args:?} should fail:\n{stdout}\n{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.trim().lines().count() == 1, "one paragraph: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    for e in expect {
        assert!(stderr.contains(e) || stdout.contains(e), "{args:?}: expected {e:?} in:\n{stdout}\n{stderr}");
    }
    assert!(state(ws.path()) == before, "{args:?} changed kata.toml or the store");
    stderr
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn add_refuses_what_it_cannot_run_and_changes_nothing() {
    let ws = TestWorkspace::new("");
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    refused(&ws, &["plugin", "add", "--allow-unsigned", path_str(&text)], &["is not a WebAssembly file"]);

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    refused(&ws, &["plugin", "add", "--allow-unsigned", path_str(&core)], &["core WebAssembly module", "kata plugin build"]);

    let quiet = std::fs::read(guest("guest-quiet")).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &quiet[..quiet.len() * 2 / 3]).unwrap();
    refused(&ws, &["plugin", "add", "--allow-unsigned", path_str(&truncated)], &["not a valid WebAssembly component"]);

    refused(
        &ws,
        &["plugin", "add", "--allow-unsigned", path_str(&guest("guest-unknown-import"))],
        &["imports something kata does not provide", "acme:evil/backdoor"],
    );

    // The same component claiming a future contract version.
    let needle = format!("kata:wit-version{}", kata::host::latest::VERSION).into_bytes();
    let needle = needle.as_slice();
    let at = quiet.windows(needle.len()).position(|w| w == needle).expect("version section");
    let mut future = quiet.clone();
    future[at + needle.len() - 5..at + needle.len()].copy_from_slice(b"0.9.0");
    let future_path = dir.path().join("future.wasm");
    std::fs::write(&future_path, &future).unwrap();
    refused(&ws, &["plugin", "add", "--allow-unsigned", path_str(&future_path)], &["kata:plugin@0.9.0", "upgrade kata"]);

    refused(
        &ws,
        &["plugin", "add", "--allow-unsigned", path_str(&guest("guest-quiet")), "--sha256", &"0".repeat(64)],
        &["--sha256 expects", "nothing was installed"],
    );
    refused(&ws, &["plugin", "add", "--allow-unsigned", path_str(&guest("guest-quiet")), "--name", "Bad Name"], &["lowercase"]);
}

#[test]
fn add_shows_requests_and_needs_consent_for_grants() {
    let ws = TestWorkspace::new("");
    let tg = guest("telegram");
    // Asks for a host and a secret kata.toml does not grant: refused, with the lines to add.
    let err =
        refused(&ws, &["plugin", "add", "--allow-unsigned", path_str(&tg)], &["https://api.telegram.org/bot", "NOT granted", "--yes"]);
    assert!(err.contains("Nothing was installed"), "{err}");
    let (_, stdout, _) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", path_str(&tg)]);
    assert!(stdout.contains("secrets = { bot_token = \"env:TELEGRAM_BOT_TOKEN\" }"), "{stdout}");

    // With --yes the grants are written and the plugin installed.
    let (ok, stdout, stderr) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", path_str(&tg), "--yes"]);
    assert!(ok, "{stdout}{stderr}");
    let toml = std::fs::read_to_string(ws.path().join("kata.toml")).unwrap();
    assert!(toml.contains("[plugins.telegram]") && toml.contains("network = [\"https://api.telegram.org/bot*\"]"), "{toml}");
    assert!(toml.contains("# kata workspace policy."), "the user's comments are kept");
    let stored = snapshot(&ws.path().join(".kata/plugins"));
    assert_eq!(stored.len(), 1);
    assert_eq!(stored.values().next().unwrap(), &std::fs::read(&tg).unwrap(), "stored byte for byte");

    // Adding the same bytes again is a no-op; the same name with other bytes is a clash.
    let before = state(ws.path());
    let (ok, stdout, _) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", path_str(&tg)]);
    assert!(ok && stdout.contains("nothing to do"), "{stdout}");
    assert!(state(ws.path()) == before);
    refused(
        &ws,
        &["plugin", "add", "--allow-unsigned", path_str(&guest("guest-quiet")), "--name", "telegram"],
        &["already installed", "kata plugin upgrade"],
    );

    // Grants written by hand first: the add needs no consent.
    let ws2 = TestWorkspace::new("\n[plugins.tg]\nnetwork = [\"https://api.telegram.org\"]\nsecrets = { bot_token = \"env:MY_TOKEN\" }\n");
    let (ok, stdout, stderr) = kata(ws2.path(), &["plugin", "add", "--allow-unsigned", path_str(&tg), "--name", "tg"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("[granted]") && !stdout.contains("NOT granted"), "{stdout}");
    let toml = std::fs::read_to_string(ws2.path().join("kata.toml")).unwrap();
    assert!(toml.contains("env:MY_TOKEN") && toml.contains("path = \".kata/plugins/"), "{toml}");
}

#[test]
fn add_from_a_url_with_checksum_and_size_cap() {
    let ws = TestWorkspace::new("");
    let bytes = std::fs::read(guest("guest-quiet")).unwrap();
    let server = FileServer::start(bytes.clone());
    refused(
        &ws,
        &["plugin", "add", "--allow-unsigned", &server.url("quiet.wasm"), "--max-size", "1KiB"],
        &["limit", "nothing was installed"],
    );
    refused(&ws, &["plugin", "add", "--allow-unsigned", &server.url("quiet.wasm"), "--sha256", &"ab".repeat(32)], &["--sha256 expects"]);
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let (ok, stdout, stderr) =
        kata(ws.path(), &["plugin", "add", "--allow-unsigned", &server.url("quiet.wasm"), "--sha256", &hash, "--name", "quiet"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(ws.path().join(format!(".kata/plugins/{hash}.wasm")).exists());
}

#[test]
fn list_inspect_upgrade_and_remove() {
    let ws = TestWorkspace::new("");
    let quiet = guest("guest-quiet");
    let (ok, out, err) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", path_str(&quiet), "--name", "chat"]);
    assert!(ok, "{out}{err}");

    let (ok, out, _) = kata(ws.path(), &["plugin", "list", "--json"]);
    assert!(ok);
    let listing: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listing["daemon_pid"], serde_json::Value::Null, "no daemon runs here");
    let rows = &listing["plugins"];
    assert_eq!(rows[0]["name"], "chat");
    assert_eq!(rows[0]["kind"], "channel");
    assert_eq!(rows[0]["wit_version"], kata::host::latest::VERSION);
    let (ok, out, _) = kata(ws.path(), &["plugin", "list"]);
    assert!(ok && out.contains("chat") && out.contains("channel"), "{out}");

    let (ok, out, _) = kata(ws.path(), &["plugin", "inspect", "chat"]);
    assert!(
        ok && out.contains(&format!("kata:plugin/channel@{}", kata::host::latest::VERSION)) && out.contains("compiled (cached)"),
        "{out}"
    );
    let (ok, out, _) = kata(ws.path(), &["plugin", "inspect", path_str(&guest("guest-tools-only"))]);
    assert!(ok && out.contains("kind:        tools"), "{out}");

    // State the plugin stored survives an upgrade.
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    db.state_set("chat", "k", b"v").unwrap();
    let old_file = snapshot(&ws.path().join(".kata/plugins")).into_keys().next().unwrap();

    // The new code asks for more: refused without consent, nothing changes.
    let tg = guest("telegram");
    refused(&ws, &["plugin", "upgrade", "--allow-unsigned", "chat", path_str(&tg)], &["not upgraded", "https://api.telegram.org/bot"]);
    let (ok, out, err) = kata(ws.path(), &["plugin", "upgrade", "--allow-unsigned", "chat", path_str(&tg), "--yes"]);
    assert!(ok, "{out}{err}");
    assert!(!old_file.exists(), "the old code is released");
    assert_eq!(db.state_get("chat", "k").unwrap().as_deref(), Some(&b"v"[..]));
    let toml = std::fs::read_to_string(ws.path().join("kata.toml")).unwrap();
    assert!(toml.contains("api.telegram.org/bot") && toml.contains("env:CHAT_BOT_TOKEN"), "{toml}");

    // Remove keeps state unless --purge.
    let (ok, out, _) = kata(ws.path(), &["plugin", "remove", "chat"]);
    assert!(ok && out.contains("state is kept"), "{out}");
    assert!(snapshot(&ws.path().join(".kata/plugins")).is_empty());
    assert!(!std::fs::read_to_string(ws.path().join("kata.toml")).unwrap().contains("[plugins.chat]"));
    assert_eq!(db.state_get("chat", "k").unwrap().as_deref(), Some(&b"v"[..]));
    refused(&ws, &["plugin", "remove", "chat"], &["no plugin named chat"]);

    let (ok, _, _) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", path_str(&quiet), "--name", "chat"]);
    assert!(ok);
    let (ok, out, _) = kata(ws.path(), &["plugin", "remove", "chat", "--purge"]);
    assert!(ok && out.contains("deleted its state"), "{out}");
    assert_eq!(db.state_get("chat", "k").unwrap(), None);
}

#[test]
fn installed_plugin_runs_under_kata_run() {
    // add → run: the daemon loads the plugin from the store.
    let ws = TestWorkspace::new("");
    let (ok, out, err) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", path_str(&guest("guest-quiet")), "--name", "quiet"]);
    assert!(ok, "{out}{err}");
    let mut daemon = ws.run(&[]);
    common::wait_for("the daemon to load the plugin", std::time::Duration::from_secs(30), || {
        ws.log().contains("kata is running").then_some(())
    });
    assert!(ws.log().contains("plugin loaded"), "{}", ws.log());
    assert!(daemon.signal_and_wait("TERM").success());
}

/// A stored plugin file replaced after installation — here by another valid
/// plugin — is refused (logged, audited, `refused` in `kata status`), and
/// the other plugins keep running.
#[test]
fn a_tampered_stored_plugin_is_refused_and_the_others_run() {
    let ws = TestWorkspace::new("");
    for (file, name) in [("guest-v0-1-0", "healthy"), ("guest-quiet", "victim")] {
        let (ok, out, err) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", path_str(&guest(file)), "--name", name, "--yes"]);
        assert!(ok, "{out}{err}");
    }
    let toml_path = ws.path().join("kata.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(&toml_path, toml.replace("[plugins.healthy]\n", "[plugins.healthy]\nallow_from = [\"*\"]\n")).unwrap();
    let policy = kata::policy::Policy::load(&toml_path, ws.path()).unwrap();
    let stored = policy.plugins["victim"].path.clone().unwrap();
    assert!(kata::plugin::stored_hash(&stored).is_some(), "{} is content-addressed", stored.display());
    // Someone swaps the victim's code for another plugin's.
    std::fs::copy(guest("guest-trap"), &stored).unwrap();

    let mut daemon = ws.run(&[]);
    let db = common::wait_for("the daemon's database", std::time::Duration::from_secs(30), || {
        kata::store::Db::open(&ws.path().join(".kata/kata.db")).ok()
    });
    common::wait_for("the healthy plugin's replies", std::time::Duration::from_secs(60), || {
        (db.plugin_activity("healthy").ok()?.sent == 3).then_some(())
    });
    let (ok, out, err) = kata(ws.path(), &["status", "--json"]);
    assert!(ok, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    let victim = st["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "victim").expect("the refused plugin is listed");
    assert_eq!(victim["health"]["state"], "refused", "{st:#}");
    let err = victim["health"]["last_error"].as_str().unwrap();
    assert!(err.contains("changed after it was installed") && err.contains(&stored.display().to_string()), "{err}");
    assert!(ws.log().contains("not loading plugin victim"), "{}", ws.log());
    assert!(!ws.log().contains("plugin=victim") || !ws.log().contains("guest-trap always crashes"), "the swapped code never ran");
    let (ok, out, err) = kata(ws.path(), &["audit", "--json", "--plugin", "victim"]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(rows.as_array().unwrap().iter().any(|r| r["kind"] == "integrity" && r["verdict"] == "deny"), "{rows:#}");
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    let (ok, out, err) = kata(ws.path(), &["plugin", "list"]);
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.starts_with("victim")).unwrap();
    assert!(line.contains("ERROR") && line.contains("changed after it was installed"), "{out}");
    // The file is left as found, for inspection.
    assert_eq!(std::fs::read(&stored).unwrap(), std::fs::read(guest("guest-trap")).unwrap());
}

#[tokio::test]
async fn a_component_built_against_0_1_0_runs_on_the_latest_host() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest("guest-v0-1-0");
    let db = kata::store::Db::open(&dir.path().join("kata.db")).unwrap();
    let engine = kata::engine::Engine::new(None).unwrap();
    let plugin = common::load_plugin(&engine, &db, "old", &wasm, "config = { greeting = \"hi\" }", Path::new("/")).unwrap();
    assert_eq!(plugin.info.wit_version.as_deref(), Some("0.1.0"));
    assert!(plugin.info.exports.contains(&"kata:plugin/channel@0.1.0".to_string()), "{:?}", plugin.info.exports);
    let mut inst = plugin.instantiate().await.unwrap();
    assert_eq!(inst.describe().await.unwrap().name, "old");
    inst.connect().await.unwrap();
    let r = inst.poll(None).await.unwrap();
    assert_eq!(r.messages[0].text, "hi from 0.1.0 #0 (poll 1)");
    assert_eq!(r.cursor.as_deref(), Some("1"));
    // Host state written through host@0.1.0 is the same store the latest host reads.
    assert_eq!(db.state_keys("old", "", 10).unwrap(), vec!["polls".to_string()]);

    // And end to end under the daemon: polled, answered, sent through the old plugin.
    let ws = TestWorkspace::new(&format!("\n[plugins.old]\npath = \"{}\"\nallow_from = [\"*\"]\n", wasm.display()));
    let mut daemon = ws.run(&[]);
    let db = common::wait_for("the daemon's database", std::time::Duration::from_secs(30), || {
        kata::store::Db::open(&ws.path().join(".kata/kata.db")).ok()
    });
    common::wait_for("three replies sent by the 0.1.0 plugin", std::time::Duration::from_secs(30), || {
        (db.counts().ok()?.outbox_sent == 3).then_some(())
    });
    // `kata plugin list` sees the running daemon and what the plugin did.
    let (ok, out, err) = kata(ws.path(), &["plugin", "list", "--json"]);
    assert!(ok, "{err}");
    let listing: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listing["daemon_pid"], daemon.pid());
    assert_eq!(listing["plugins"][0]["activity"]["received"], 3);
    assert_eq!(listing["plugins"][0]["activity"]["sent"], 3);
    let (_, out, _) = kata(ws.path(), &["plugin", "list"]);
    assert!(out.contains(&format!("daemon: running (pid {})", daemon.pid())) && out.contains("3 in, 3 sent"), "{out}");
    assert!(daemon.signal_and_wait("TERM").success());
    assert!(ws.log().contains("old plugin sends"), "{}", ws.log());
    let (_, out, _) = kata(ws.path(), &["plugin", "list"]);
    assert!(out.contains("daemon: not running"), "{out}");
}

#[tokio::test]
async fn a_component_built_against_0_1_1_runs_on_the_latest_host() {
    use kata::host::latest::{ConversationKind, Frame, StreamKind};
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest("guest-v0-1-1");
    let db = kata::store::Db::open(&dir.path().join("kata.db")).unwrap();
    let engine = kata::engine::Engine::new(None).unwrap();
    let plugin = common::load_plugin(&engine, &db, "old11", &wasm, "", Path::new("/")).unwrap();
    assert_eq!(plugin.info.wit_version.as_deref(), Some("0.1.1"));
    let mut inst = plugin.instantiate().await.unwrap();
    let info = inst.describe().await.unwrap();
    assert_eq!(info.ingress, [kata::host::latest::IngressMode::Poll, kata::host::latest::IngressMode::Subscribe]);
    inst.connect().await.unwrap();
    let r = inst.poll(None).await.unwrap();
    let m = &r.messages[0];
    assert_eq!((m.text.as_str(), m.thread.as_deref(), m.sender_name.as_deref()), ("from 0.1.1 #0 (0 keys)", Some("t"), Some("Old Timer")));
    assert_eq!((m.attachments[0].name.as_str(), m.attachments[0].size), ("a.txt", Some(3)));
    // An old component cannot say: its messages are direct and not mentioned.
    assert_eq!((m.conversation_kind, m.mentioned), (ConversationKind::Direct, false));
    // state-keys (0.1.1's addition) answers through the latest host.
    assert_eq!(inst.poll(Some("1")).await.unwrap().messages[0].text, "from 0.1.1 #1 (1 keys)");

    let sub = inst.subscribe().await.unwrap();
    assert_eq!((sub.kind, sub.url.as_str(), sub.heartbeat_ms), (StreamKind::TcpLines, "tcp://127.0.0.1:7", Some(1000)));
    assert_eq!(sub.initial_frames, [Frame::Text("HELLO".into()), Frame::Binary(vec![1, 2])]);
    assert_eq!(sub.headers, [("x-old".to_string(), "1".to_string())]);
    let fr = inst.on_frame(&Frame::Text("hi".into())).await.unwrap();
    assert_eq!(fr.replies, [Frame::Text("ECHO hi".into())]);
    assert_eq!((fr.messages[0].id.as_str(), fr.messages[0].conversation_kind), ("line-hi", ConversationKind::Direct));
    let e = inst.on_frame(&Frame::Binary(vec![0])).await.expect_err("binary is unsupported");
    assert!(e.to_string().contains("not supported"), "{e}");

    let out = kata::host::latest::OutboundMessage {
        conversation: "c".into(),
        thread: None,
        reply_to: None,
        text: "yo".into(),
        idempotency_key: "k1".into(),
        attachments: vec![],
        actions: vec![],
    };
    let receipt = inst.send(&out).await.unwrap();
    assert_eq!((receipt.id.as_str(), receipt.frames.len()), ("old11-k1-yo", 0));
}

#[tokio::test]
async fn a_component_built_against_0_1_2_runs_on_the_latest_host() {
    use kata::host::latest::{Action, ChannelAction, ChannelError, ConversationKind, Frame, OutboundAttachment, StreamKind, Target};
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest("guest-v0-1-2");
    let db = kata::store::Db::open(&dir.path().join("kata.db")).unwrap();
    let engine = kata::engine::Engine::new(None).unwrap();
    let plugin = common::load_plugin(&engine, &db, "old12", &wasm, "", Path::new("/")).unwrap();
    assert_eq!(plugin.info.export_version("channel"), Some("0.1.2"));
    let mut inst = plugin.instantiate().await.unwrap();
    // 0.1.3's channel-info.features: none for an older component.
    let info = inst.describe().await.unwrap();
    assert_eq!((info.name.as_str(), info.features.len()), ("old12", 0));
    inst.connect().await.unwrap();
    let m = &inst.poll(None).await.unwrap().messages[0];
    assert_eq!((m.conversation_kind, m.mentioned), (ConversationKind::Group, true));
    assert_eq!(inst.subscribe().await.unwrap().kind, StreamKind::Webhook);
    // act is unsupported without a call; attachments and actions arrive as text.
    let typing = ChannelAction::Typing(Target { conversation: "#room".into(), thread: None });
    assert!(matches!(inst.act(&typing).await, Err(kata::plugin::CallError::Channel(ChannelError::Unsupported))));
    let out = kata::host::latest::OutboundMessage {
        conversation: "#room".into(),
        thread: None,
        reply_to: None,
        text: "Delete build/?".into(),
        idempotency_key: "k1".into(),
        attachments: vec![OutboundAttachment { name: "plan.txt".into(), mime_type: "text/plain".into(), data: vec![b'x'; 300] }],
        actions: vec![Action { id: "yes 7".into(), label: "Approve".into() }, Action { id: "no 7".into(), label: "no 7".into() }],
    };
    let receipt = inst.send(&out).await.unwrap();
    let want = "Delete build/?\n\n[file not sent: plan.txt (text/plain, 300 bytes)]\n\nreply \"yes 7\" to Approve\nreply \"no 7\"";
    assert_eq!(receipt.id, want);
    assert_eq!(receipt.frames, [Frame::Text(want.into())]);
}

/// `kata plugin new NAME --kind KIND`, then the project's own `cargo test`
/// (which must pass out of the box) and `kata plugin build`; returns the component.
fn scaffold_test_build(dir: &Path, name: &str, kind: &str) -> std::path::PathBuf {
    let project = dir.join(name);
    let out = std::process::Command::new(common::kata_bin())
        .args(["plugin", "new", name, "--kind", kind, "--dir"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(project.join("plugin.toml").exists() && project.join(format!("wit/v{}/worlds.wit", kata::host::latest::VERSION)).exists());
    let test = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .arg("test")
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", common::root().join("target/guest-native"))
        .output()
        .unwrap();
    assert!(test.status.success(), "cargo test in the new {kind} project:\n{}", String::from_utf8_lossy(&test.stderr));
    assert!(String::from_utf8_lossy(&test.stdout).contains("test result: ok"));
    let wasm = dir.join(format!("{name}.wasm"));
    let build = std::process::Command::new(common::kata_bin())
        .args(["plugin", "build"])
        .arg(&project)
        .arg("--out")
        .arg(&wasm)
        .env("CARGO_TARGET_DIR", common::root().join("target/wasm"))
        .output()
        .unwrap();
    assert!(build.status.success(), "{kind}: {}", String::from_utf8_lossy(&build.stderr));
    wasm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_project_tests_builds_and_installs() {
    let dir = tempfile::tempdir().unwrap();
    // A channel project (with the SDK vendored) installs, with its manifest.
    let wasm = scaffold_test_build(dir.path(), "acme-chat", "channel");
    assert!(dir.path().join("acme-chat/vendor/kata-sdk/src/lib.rs").exists());
    let ws = TestWorkspace::new("");
    let (ok, out, err) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", path_str(&wasm), "--yes"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("acme-chat asks for") && out.contains("https://chat.example.org/api/"), "{out}");

    // A tools project builds to a tools component and installs.
    let wasm = scaffold_test_build(dir.path(), "acme-tools", "tools");
    let (ok, out, _) = kata(ws.path(), &["plugin", "inspect", path_str(&wasm)]);
    assert!(ok && out.contains("kind:        tools"), "{out}");
    let (ok, out, err) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", path_str(&wasm), "--yes"]);
    assert!(ok && out.contains("tools plugin"), "{out}{err}");

    // A service project installs, and the host runs it as the template
    // means: start, then a tick that emits its reminder into the inbox.
    let wasm = scaffold_test_build(dir.path(), "acme-service", "service");
    let (ok, out, err) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", path_str(&wasm), "--yes"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("deliver_to"), "adding a service says where its replies go: {out}");
    let policy = kata::policy::Policy::load(&ws.path().join("kata.toml"), ws.path()).unwrap();
    let mut grants = policy.plugins["acme-service"].clone();
    grants.config.insert("every_s".into(), "7".into());
    grants.config.insert("text".into(), "stretch".into());
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    let engine = kata::engine::Engine::new(None).unwrap();
    let linker = kata::plugin::linker(&engine).unwrap();
    let svc = kata::service::ServicePlugin::load(&engine, &linker, grants, db.clone(), ws.path()).unwrap();
    let emitter = std::sync::Arc::new(kata::service::Emitter::new("acme-service", db.clone(), Default::default()));
    let mut inst = svc.instantiate(emitter).await.unwrap();
    inst.start().await.unwrap().unwrap();
    assert_eq!(inst.tick().await.unwrap(), Ok(7000), "the tick asks for the configured interval");
    let rows = db.pending_inbox(10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].plugin.as_str(), rows[0].msg.text.as_str()), ("acme-service", "stretch"));
    assert_eq!(rows[0].origin.as_deref(), Some("service:acme-service"));
}

/// The manifest asks, the policy decides: a plugin gets only what both say,
/// however wide kata.toml is.
#[tokio::test]
async fn grants_are_narrowed_to_what_the_manifest_asks_for() {
    let server = common::RecordingServer::start();
    let base = format!("http://127.0.0.1:{}", server.port);
    // guest-forbidden-host carries no manifest; give it one asking for /allowed/ only.
    let mut bytes = std::fs::read(guest("guest-forbidden-host")).unwrap();
    let manifest = format!("name = \"fetcher\"\nnetwork = [\"{base}/allowed/\"]\n");
    kata::manifest::append_custom_section(&mut bytes, kata::manifest::SECTION, manifest.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("fetcher.wasm");
    std::fs::write(&wasm, &bytes).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "a-token-value-123").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    let db = kata::store::Db::open(&dir.path().join("kata.db")).unwrap();
    let engine = kata::engine::Engine::new(None).unwrap();
    let load = |url: &str| {
        // kata.toml grants the whole host and a secret the manifest never mentions.
        let lines =
            format!("network = [\"{base}/\"]\nsecrets = {{ token = \"file:{}\" }}\nconfig = {{ url = \"{url}\" }}", token.display());
        common::load_plugin(&engine, &db, "fetcher", &wasm, &lines, Path::new("/")).unwrap()
    };

    let p = load(&format!("{base}/allowed/x"));
    assert!(p.sandbox().grants().secrets.is_empty(), "an undeclared secret is not given");
    assert_eq!(common::poll_text(&p).await, "ok 200");
    let text = common::poll_text(&load(&format!("{base}/admin"))).await;
    assert!(text.starts_with("err") && text.contains("denied"), "{text}");
    let seen = server.requests();
    assert_eq!(seen.len(), 1, "only the declared path was reached: {seen:?}");
    let rows = db.audit_query(&kata::store::AuditQuery { plugin: Some("fetcher".into()), limit: 100, ..Default::default() }).unwrap();
    assert!(
        rows.iter().any(|r| r.verdict == "deny" && r.detail.as_deref().is_some_and(|d| d.contains("manifest does not ask"))),
        "{rows:#?}"
    );
}

#[test]
fn policy_check_warns_about_grants_no_manifest_asks_for() {
    let ws = TestWorkspace::new(
        "\n[plugins.tg]\nnetwork = [\"https://api.telegram.org\", \"https://evil.example.org\"]\n\
         secrets = { bot_token = \"env:PATH\", extra = \"env:PATH\" }\n",
    );
    let (ok, out, err) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", path_str(&guest("telegram")), "--name", "tg"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = kata(ws.path(), &["policy", "check"]);
    assert!(ok, "warnings only: {out}{err}");
    assert!(out.contains("grants network https://evil.example.org, which the plugin's manifest does not ask for"), "{out}");
    assert!(out.contains("grants secret extra"), "{out}");
    assert!(!out.contains("grants secret bot_token") && !out.contains("grants network https://api.telegram.org,"), "{out}");
}
