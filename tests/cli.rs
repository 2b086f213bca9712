//! Bad input to the real binary: each mistake gets one clear paragraph and a
//! non-zero exit, never a panic or a backtrace (RUST_BACKTRACE=1 is set here).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{TestWorkspace, guest, kata_bin};

/// Run `kata run` in `ws` and return its stderr, asserting it failed cleanly.
fn run_fails(ws: &std::path::Path) -> String {
    let out = Command::new(kata_bin())
        .args(["run", "-w"])
        .arg(ws)
        .env("RUST_BACKTRACE", "1")
        .env("KATA_LOG", "off")
        .output()
        .unwrap();
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
