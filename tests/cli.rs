//! Bad input to the real binary: each mistake gets one clear paragraph and a
//! non-zero exit, never a panic or a backtrace (RUST_BACKTRACE=1 is set here).
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{TestWorkspace, guest, kata, kata_bin, root, wait_for};

/// Run `kata run` in `ws` and return its stderr, asserting it failed cleanly
/// (within two minutes: a daemon that starts instead is killed).
fn run_fails(ws: &std::path::Path) -> String {
    let mut child = Command::new(kata_bin())
        .args(["run", "-w"])
        .arg(ws)
        .env("RUST_BACKTRACE", "1")
        .env("KATA_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kata run started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "kata run should fail: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one paragraph: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn plugin_ws(path: &std::path::Path) -> TestWorkspace {
    TestWorkspace::new(&format!("\n[plugins.chat]\npath = \"{}\"\n", path.display()))
}

#[test]
fn missing_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let e = run_fails(dir.path());
    assert!(e.contains("no kata.toml") && e.contains("kata init"), "{e}");
}

#[test]
fn invalid_policy_names_file_line_and_key() {
    let ws = TestWorkspace::new("\n[plugins.chat]\npath = \"x.wasm\"\nnetwrok = [\"https://example.org\"]\n");
    let e = run_fails(ws.path());
    assert!(e.contains("/kata.toml:") && e.contains(":1: unknown field `netwrok`"), "file:line:column: {e}");

    let ws = TestWorkspace::new("\n[plugins.chat]\npath = \"x.wasm\"\nnetwork = [\"example.org\"]\n");
    let e = run_fails(ws.path());
    assert!(e.contains("plugins.chat.network") && e.contains("no scheme"), "{e}");

    let ws = TestWorkspace::new("\n[plugins.chat\n");
    let e = run_fails(ws.path());
    assert!(e.contains("/kata.toml:") && e.contains(":14: unclosed table"), "{e}");
}

#[test]
fn missing_plugin_file() {
    let ws = plugin_ws(std::path::Path::new("nowhere/chat.wasm"));
    let e = run_fails(ws.path());
    assert!(e.contains("cannot read plugin file") && e.contains("nowhere/chat.wasm"), "{e}");
}

#[test]
fn not_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("chat.wasm");
    std::fs::write(&f, "#!/bin/sh\necho not wasm\n").unwrap();
    let e = run_fails(plugin_ws(&f).path());
    assert!(e.contains("is not a WebAssembly file"), "{e}");
}

#[test]
fn core_module_instead_of_component() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("chat.wasm");
    // The smallest valid core module: magic and version 1.
    std::fs::write(&f, b"\0asm\x01\0\0\0").unwrap();
    let e = run_fails(plugin_ws(&f).path());
    assert!(e.contains("core WebAssembly module, not a component") && e.contains("kata plugin build"), "{e}");
}

#[test]
fn truncated_component() {
    let bytes = std::fs::read(guest("guest-quiet")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("chat.wasm");
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = run_fails(plugin_ws(&f).path());
    assert!(e.contains("not a valid WebAssembly component"), "{e}");
}

#[test]
fn missing_secret() {
    let ws = TestWorkspace::new(&format!(
        "\n[plugins.chat]\npath = \"{}\"\nsecrets = {{ token = \"env:KATA_TEST_SURELY_UNSET\" }}\n",
        guest("guest-quiet").display()
    ));
    let e = run_fails(ws.path());
    assert!(e.contains("KATA_TEST_SURELY_UNSET is not set") && e.contains("[plugins.chat]"), "{e}");
}

#[test]
fn init_refuses_to_overwrite_and_completions_work() {
    let ws = TestWorkspace::new("");
    let out = Command::new(kata_bin()).arg("init").arg(ws.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let out = Command::new(kata_bin()).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("kata"));
}

#[test]
fn policy_bytes_that_are_not_utf8_are_located_once() {
    let ws = TestWorkspace::new("");
    let policy = ws.path().join("kata.toml");
    // A Latin-1 "é" on line 4, after 15 characters.
    let head = "[daemon]\nlog_format = \"human\"\n[agent]\n";
    let mut bytes = head.as_bytes().to_vec();
    bytes.extend_from_slice(b"template = \"caf\xe9 {text}\"\n");
    std::fs::write(&policy, &bytes).unwrap();
    let want = format!("{}:4:16: not valid UTF-8 (byte 0xE9 at offset {})", policy.display(), head.len() + 15);
    let e = run_fails(ws.path());
    assert!(e.contains(&want), "{e}");
    assert_eq!(e.matches("not valid UTF-8").count(), 1, "the cause once: {e}");
    assert!(!e.contains("stream did not contain"), "{e}");

    // `kata policy check` reports the same finding, as an error.
    let out = Command::new(kata_bin()).args(["policy", "check", "-w"]).arg(ws.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("{}:4:16: error: not valid UTF-8 (byte 0xE9 at offset {})", policy.display(), head.len() + 15)),
        "{stdout}"
    );
}

/// A workspace database with enough inbox rows that they fill many pages,
/// closed (so its write-ahead log is folded back into the file).
fn workspace_with_messages() -> TestWorkspace {
    let ws = TestWorkspace::new("");
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    let msgs: Vec<kata::store::Inbound> = (0..3000)
        .map(|i| kata::store::Inbound {
            channel_msg_id: i.to_string(),
            conversation: "42".into(),
            sender: "7".into(),
            text: format!("stored-message-{i:05} {}", "x".repeat(100)),
            attachments_json: "[]".into(),
            ..Default::default()
        })
        .collect();
    db.record_poll("telegram", &msgs, Some("3000")).unwrap();
    drop(db);
    assert!(!ws.path().join(".kata/kata.db-wal").exists(), "the WAL is folded back at close");
    ws
}

/// A way to damage a database file's bytes, by name.
type Damage = (&'static str, fn(&mut Vec<u8>));

#[test]
fn a_damaged_database_is_named_and_left_as_it_is() {
    let damages: [Damage; 3] = [
        ("truncated", |b| b.truncate(b.len() / 2)),
        ("garbage", |b| {
            for (i, x) in b.iter_mut().enumerate() {
                *x = (i * 7 + 13) as u8;
            }
        }),
        ("one data page", |b| {
            // The middle one of the pages that hold stored message text.
            let pages: Vec<usize> =
                (0..b.len() / 1024).filter(|p| b[p * 1024..(p + 1) * 1024].windows(15).any(|w| w == b"stored-message-")).collect();
            assert!(pages.len() > 100, "message text spans {} pages", pages.len());
            let p = pages[pages.len() / 2];
            b[p * 1024..(p + 1) * 1024].fill(0xA5);
        }),
    ];
    for (what, damage) in damages {
        let ws = workspace_with_messages();
        let path = ws.path().join(".kata/kata.db");
        // Checked clean once: the file's state is recorded, and later opens
        // skip the check while it stays so — the damage below must end that.
        let out = Command::new(kata_bin()).args(["task", "list", "-w"]).arg(ws.path()).env("KATA_LOG", "off").output().unwrap();
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(ws.path().join(".kata/kata.db-checked").exists(), "{what}: the clean check is recorded");
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();

        let e = run_fails(ws.path());
        assert!(e.contains(&format!("the workspace database {} is damaged (", path.display())), "{what}: {e}");
        assert!(e.contains("restore the file from a backup"), "{what}: {e}");
        assert!(e.contains(&format!("`mv {} {}.damaged`", path.display(), path.display())), "{what}: {e}");
        assert!(std::fs::read(&path).unwrap() == bytes, "{what}: kata run changed the damaged file");

        // Every command that opens the database says the same.
        for args in [&["task", "list"][..], &["audit"], &["retry"], &["pair", "list"]] {
            let out = Command::new(kata_bin()).args(args).arg("-w").arg(ws.path()).env("KATA_LOG", "off").output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("is damaged") && err.contains(&path.display().to_string()),
                "{what}: {args:?}: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
        assert!(std::fs::read(&path).unwrap() == bytes, "{what}: a command changed the damaged file");

        // The advice works: moved aside, a fresh database starts.
        std::fs::rename(&path, ws.path().join(".kata/kata.db.damaged")).unwrap();
        let out = Command::new(kata_bin()).args(["task", "list", "-w"]).arg(ws.path()).env("KATA_LOG", "off").output().unwrap();
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn a_real_core_module_is_refused_with_the_kata_command_that_componentizes_it() {
    let ws = TestWorkspace::new("");
    // The core module `kata plugin build` compiled before componentizing it.
    guest("guest-quiet");
    let built = root().join("target/wasm/wasm32-wasip1/release/guest_quiet.wasm");
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("quiet.wasm");
    std::fs::copy(&built, &core).unwrap();
    assert!(std::fs::read(&core).unwrap().starts_with(b"\0asm\x01\0\0\0"), "a core module");

    let (ok, _, err) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", core.to_str().unwrap(), "--yes"]);
    assert!(!ok && err.contains("is a core WebAssembly module, not a component"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = dir.path().join("quiet.component.wasm");
    let command = format!("kata plugin componentize {} --out {}", core.display(), out.display());
    assert!(err.contains(&format!("`{command}`")), "{err}");

    // That exact command makes a component kata installs and runs.
    let args: Vec<&str> = command.split(' ').skip(1).collect();
    let (ok, stdout, err) = kata(ws.path(), &args);
    assert!(ok, "{err}");
    assert!(stdout.contains(&format!("kata plugin add {}", out.display())), "{stdout}");
    let (ok, _, err) = kata(ws.path(), &["plugin", "add", "--allow-unsigned", out.to_str().unwrap(), "--name", "quiet", "--yes"]);
    assert!(ok, "{err}");
    let (ok, _, err) = kata(ws.path(), &["policy", "check"]);
    assert!(ok, "{err}");

    // A component is not componentized again; a file that is not wasm is refused.
    let (ok, _, err) = kata(ws.path(), &["plugin", "componentize", out.to_str().unwrap(), "--out", "/dev/null"]);
    assert!(!ok && err.contains("is already a component"), "{err}");
}

#[test]
fn plugin_add_leaves_the_commented_tools_block_whole() {
    // The template `kata init` writes: [tools] is its last table, followed by
    // its own commented keys and the commented examples.
    let ws = TestWorkspace::new("");
    let policy = ws.path().join("kata.toml");
    let before = std::fs::read_to_string(&policy).unwrap();
    let tools = &before[before.find("[tools]").unwrap()..];
    assert!(tools.contains("# allow = [") && tools.contains("# [plugins.telegram]"), "the template changed: {tools}");

    let (ok, _, err) =
        kata(ws.path(), &["plugin", "add", "--allow-unsigned", guest("guest-quiet").to_str().unwrap(), "--name", "quiet", "--yes"]);
    assert!(ok, "{err}");
    let after = std::fs::read_to_string(&policy).unwrap();
    assert!(after.starts_with(&before), "everything before stays as it was, comments included:\n{after}");
    let added = &after[before.len()..];
    assert!(added.starts_with("\n[plugins.quiet]\npath = "), "{added:?}");

    // The next one goes after the last plugin table.
    let (ok, _, err) =
        kata(ws.path(), &["plugin", "add", "--allow-unsigned", guest("guest-quiet").to_str().unwrap(), "--name", "quiet2", "--yes"]);
    assert!(ok, "{err}");
    let again = std::fs::read_to_string(&policy).unwrap();
    assert!(again.starts_with(&after), "{again}");
    assert!(again[after.len()..].starts_with("\n[plugins.quiet2]\n"), "{again}");
}

#[test]
fn a_tools_plugin_alone_is_a_plugin() {
    let ws = TestWorkspace::new(&format!("\n[plugins.tools]\npath = \"{}\"\n", guest("guest-tools-only").display()));
    let mut daemon = ws.run(&[]);
    wait_for("the daemon", Duration::from_secs(120), || ws.log().contains("kata is running").then_some(()));
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    let log = ws.log();
    assert!(!log.contains("no plugins are enabled"), "{log}");
    assert!(log.contains("no channel plugins are enabled") && log.contains("nothing will receive messages"), "{log}");
    assert!(log.contains("tools of tools"), "{log}");

    // With nothing at all, the warning says so.
    let ws = TestWorkspace::new("");
    let mut daemon = ws.run(&[]);
    wait_for("the daemon", Duration::from_secs(120), || ws.log().contains("kata is running").then_some(()));
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    assert!(ws.log().contains("no plugins are enabled"), "{}", ws.log());
}

/// The authoring commands run in kata-dev, found next to kata: without it,
/// kata says what is missing and how to get it (one paragraph, nothing
/// created); with it, the hand-off is invisible (exit code, output).
#[test]
fn authoring_commands_are_handed_to_kata_dev() {
    let alone = tempfile::tempdir().unwrap();
    let kata_alone = alone.path().join("kata");
    std::fs::copy(kata_bin(), &kata_alone).unwrap();
    let project = alone.path().join("mybot");
    let out = Command::new(&kata_alone)
        .args(["plugin", "new", "mybot", "--dir"])
        .arg(&project)
        .env("RUST_BACKTRACE", "1")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "one paragraph: {e}");
    assert!(e.contains("kata-dev") && e.contains("cargo install --path runtime/kata"), "{e}");
    assert!(!project.exists(), "nothing created without kata-dev");

    // Next to it (as cargo builds them), the same command line works, and a
    // failing one keeps its error and exit code.
    let out = Command::new(kata_bin()).args(["plugin", "new", "mybot", "--lang", "rust", "--dir"]).arg(&project).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Created channel plugin mybot (rust)"));
    assert!(project.join("plugin.toml").is_file());
    let out = Command::new(kata_bin()).args(["plugin", "new", "mybot", "--dir"]).arg(&project).output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.starts_with("error: ") && e.trim().lines().count() == 1, "{e}");

    // A kata-dev of another version than the kata that hands over refuses.
    let dev = kata_bin().with_file_name("kata-dev");
    let out = Command::new(&dev).args(["plugin", "toolchain", "status"]).env("KATA_HANDED_OFF_BY", "0.0.1").output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("kata that ran it is 0.0.1") && e.trim().lines().count() == 1, "{e}");

    // kata-dev itself runs only the authoring commands.
    let out = Command::new(&dev).args(["status"]).output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("run this one with `kata`"), "{e}");
}
