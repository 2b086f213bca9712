//! `kata policy check`, `kata policy explain` and `kata audit` through the
//! real binary: file:line:column findings, exit codes, grants shown without
//! secret values, and the audit log read back with filters.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{TestWorkspace, guest, kata_bin};
use kata::store::{AuditRow, Db, now_ms};

/// Run kata with `args` in workspace `ws`; returns (success, stdout, stderr).
fn kata(ws: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(kata_bin());
    cmd.arg("-w").arg(ws).args(args).env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(!e.contains("panicked"), "{e}");
    (out.status.success(), o, e)
}

#[test]
fn check_lists_errors_and_warnings_with_file_line_column() {
    let ws = TestWorkspace::new("");
    let file = ws.path().join("other.toml");
    std::fs::write(
        &file,
        "[plugins.chat]\npath = \"missing.wasm\"\nnetwork = [\"https://*.example.com\", \"example.org\"]\n\
         files = [{ host = \"nope\", guest = \"/n\" }]\n",
    )
    .unwrap();
    let (ok, out, err) = kata(ws.path(), &["policy", "check", file.to_str().unwrap()], &[]);
    assert!(!ok, "errors exit non-zero");
    let f = file.display().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with(&format!("{f}:3:12: warning: plugins.chat.network[0]: ")), "{out}");
    assert!(lines[1].starts_with(&format!("{f}:3:37: error: plugins.chat.network[1]: ")) && lines[1].contains("no scheme"), "{out}");
    assert!(lines[2].starts_with(&format!("{f}:4:10: error: plugins.chat.files[0]: ")) && lines[2].contains("create it"), "{out}");
    assert!(err.starts_with("error: ") && err.contains("2 errors and 1 warning") && err.trim().lines().count() == 1, "{err}");
}

#[test]
fn check_passes_with_warnings_about_this_machine() {
    let ws = TestWorkspace::new(
        "\n[plugins.chat]\npath = \"chat.wasm\"\nnetwork = [\"https://api.example.org\"]\n\
         secrets = { a = \"env:KATA_TEST_UNSET_VAR\", b = \"file:token\" }\n",
    );
    std::fs::write(ws.path().join("token"), "value\n").unwrap();
    let (ok, out, err) = kata(ws.path(), &["policy", "check"], &[]);
    assert!(!ok, "a world-readable secret file is an error (kata run would refuse it): {out}{err}");
    assert!(out.contains("error: plugins.chat.secrets.b: ") && out.contains("chmod 600"), "{out}");
    assert!(out.contains("warning: plugins.chat.secrets.a: ") && out.contains("KATA_TEST_UNSET_VAR"), "{out}");
    // `kata run` refuses a plugin whose file is missing: so does check.
    assert!(out.contains("error: plugins.chat.path: ") && out.contains("does not exist") && out.contains("kata run"), "{out}");

    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(guest("guest-quiet"), ws.path().join("chat.wasm")).unwrap();
    std::fs::set_permissions(ws.path().join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, out, err) = kata(ws.path(), &["policy", "check"], &[("KATA_TEST_UNSET_VAR", "x")]);
    assert!(ok, "{out}{err}");
    assert!(out.trim_end().ends_with("ok (1 plugin, 0 warnings)"), "{out}");
}

#[test]
fn explain_shows_grants_but_never_secret_values() {
    let notes = tempfile::tempdir().unwrap();
    let ws = TestWorkspace::new(&format!(
        "\n[plugins.chat]\npath = \"chat.wasm\"\n\
         network = [\"https://api.telegram.org/bot\", {{ url = \"http://nas.lan:8080/api/\", methods = [\"GET\"], private = true }}]\n\
         secrets = {{ bot_token = \"env:KATA_TEST_TOKEN\" }}\n\
         files = [{{ host = \"{}\", guest = \"/notes\" }}]\n\
         config = {{ poll_timeout_s = 25 }}\nlimits = {{ requests_per_minute = 60, max_response = \"1MiB\" }}\n",
        notes.path().display()
    ));
    let (ok, out, err) = kata(ws.path(), &["policy", "explain", "chat"], &[("KATA_TEST_TOKEN", "sup3r-s3cret-value")]);
    assert!(ok, "{err}");
    assert!(!out.contains("sup3r-s3cret-value"), "{out}");
    for want in [
        "https://api.telegram.org/bot  (any method; public addresses only; paths under /bot)",
        "http://nas.lan:8080/api/  (GET; any address, private ones included (private = true); paths under /api/)",
        "bot_token  from environment variable KATA_TEST_TOKEN (set)",
        "/notes -> ",
        "(read-only)",
        "poll_timeout_s = 25",
        "requests_per_minute 60",
        "max_response        1048576 bytes",
        "max_message         65536 bytes",
        "log_lines_per_minute 600",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let (ok, _, err) = kata(ws.path(), &["policy", "explain", "nobody"], &[]);
    assert!(!ok && err.contains("no [plugins.nobody]") && err.contains("it has chat"), "{err}");
}

#[test]
fn audit_reads_back_with_filters() {
    let ws = TestWorkspace::new("");
    std::fs::create_dir_all(ws.path().join(".kata")).unwrap();
    let db = Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    let row = |plugin: &str, ago_ms: u64, verdict: &str, target: &str| AuditRow {
        id: 0,
        ts_ms: now_ms() - ago_ms,
        plugin: plugin.into(),
        kind: "network".into(),
        verdict: verdict.into(),
        method: Some("GET".into()),
        target: Some(target.into()),
        policy: Some("\"https://evil.example\"".into()),
        detail: Some("no network grant covers it".into()),
    };
    db.audit_append(&row("tg", 3 * 3_600_000, "deny", "https://old.example/")).unwrap();
    db.audit_append(&row("tg", 60_000, "deny", "https://evil.example/x")).unwrap();
    db.audit_append(&row("mail", 1_000, "allow", "https://mail.example/")).unwrap();

    let (ok, out, err) = kata(ws.path(), &["audit"], &[]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().filter(|l| l.contains("  network ")).count(), 3, "{out}");
    assert!(out.contains("tg  network deny  GET https://evil.example/x") && out.contains("why: no network grant"), "{out}");

    let (_, out, _) = kata(ws.path(), &["audit", "--plugin", "tg", "--since", "1h"], &[]);
    assert!(out.contains("evil.example") && !out.contains("old.example") && !out.contains("mail"), "{out}");

    let (ok, out, _) = kata(ws.path(), &["audit", "--json", "--limit", "1"], &[]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["plugin"], "mail");
    assert!(v[0]["time"].as_str().unwrap().ends_with('Z'), "{v}");

    let (_, out, _) = kata(ws.path(), &["audit", "--since", "2000-01-01T00:00:00Z", "--plugin", "tg"], &[]);
    assert_eq!(out.lines().filter(|l| l.contains("  network ")).count(), 2, "{out}");
    let (ok, _, err) = kata(ws.path(), &["audit", "--since", "last tuesday"], &[]);
    assert!(!ok && err.contains("--since") && err.trim().lines().count() == 1, "{err}");
}

/// `kata run` in `ws`, which must refuse to start; its stderr.
fn run_refuses(ws: &Path) -> String {
    let mut child = Command::new(kata_bin())
        .args(["run", "-w"])
        .arg(ws)
        .env("KATA_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("kata run started instead of refusing");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn check_fails_wherever_run_refuses_a_plugin_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("notes.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let quiet = std::fs::read(guest("guest-quiet")).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &quiet[..quiet.len() / 2]).unwrap();
    let cases = [
        (dir.path().join("missing.wasm"), "does not exist"),
        (dir.path().to_path_buf(), "does not exist"),
        (not_wasm, "is not a WebAssembly file"),
        (core, "is a core WebAssembly module"),
        (truncated, "not a valid WebAssembly component"),
        (guest("guest-unknown-import"), "imports something kata does not provide"),
    ];
    for (file, why) in cases {
        let ws = TestWorkspace::new(&format!("\n[plugins.chat]\npath = \"{}\"\n", file.display()));
        let err = run_refuses(ws.path());
        let (ok, out, check_err) = kata(ws.path(), &["policy", "check"], &[]);
        assert!(!ok, "{}: check passed what run refuses ({err}):\n{out}", file.display());
        let finding = out.lines().find(|l| l.contains(": error: plugins.chat.path: ")).unwrap_or_else(|| panic!("{out}"));
        assert!(finding.contains(why) && finding.contains(&file.display().to_string()), "{finding}");
        assert!(check_err.contains("kata run refuses this policy"), "{check_err}");
        if why != "does not exist" {
            assert!(err.contains(why), "{err}");
        }
        // Disabled, the plugin does not stop `kata run`, nor check.
        let text = std::fs::read_to_string(ws.path().join("kata.toml")).unwrap();
        std::fs::write(ws.path().join("kata.toml"), text.replace("[plugins.chat]\n", "[plugins.chat]\nenabled = false\n")).unwrap();
        let (ok, out, err) = kata(ws.path(), &["policy", "check"], &[]);
        assert!(ok, "{}: {out}{err}", file.display());
    }

    // A loadable plugin passes, and its compiled code is cached for the daemon.
    let ws = TestWorkspace::new(&format!("\n[plugins.chat]\npath = \"{}\"\n", guest("guest-quiet").display()));
    let (ok, out, err) = kata(ws.path(), &["policy", "check"], &[]);
    assert!(ok && out.contains("ok (1 plugin"), "{out}{err}");
}
