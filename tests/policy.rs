//! `kata policy check`, `kata policy explain` and `kata audit` through the
//! real binary: file:line:column findings, exit codes, grants shown without
//! secret values, and the audit log read back with filters.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{TestWorkspace, kata_bin};
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
    assert!(out.contains("warning: plugins.chat.path: ") && out.contains("does not exist"), "{out}");

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ws.path().join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, out, err) = kata(ws.path(), &["policy", "check"], &[("KATA_TEST_UNSET_VAR", "x")]);
    assert!(ok, "{out}{err}");
    assert!(out.trim_end().ends_with("ok (1 plugin, 1 warning)"), "{out}");
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
