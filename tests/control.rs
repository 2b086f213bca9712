//! The control socket and its clients against the real daemon: status with a
//! circuit breaker that opened, send, chat, logs, reload (good and broken),
//! dead letters and retry, malformed and oversized requests, socket
//! permissions, stop; and `kata daemon start|status|stop|install`.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TelegramServer, TestWorkspace, guest, kata, kata_bin, wait_for};

const TOKEN: &str = "123456:TEST-TOKEN-ctl";

fn workspace(tg: &TelegramServer) -> TestWorkspace {
    TestWorkspace::new(&tg.plugin_toml("allow_from = [\"*\"]"))
}

fn set_daemon_table(ws: &TestWorkspace, table: &str) {
    let path = ws.path().join("kata.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("[daemon]\n", &format!("[daemon]\n{table}\n"), 1);
    std::fs::write(&path, text).unwrap();
}

fn status(ws: &TestWorkspace) -> serde_json::Value {
    let (ok, out, err) = kata(ws.path(), &["status", "--json"]);
    assert!(ok, "kata status failed: {err}");
    serde_json::from_str(&out).unwrap()
}

fn plugin<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()
}

fn texts(tg: &TelegramServer, chat: i64) -> Vec<String> {
    tg.bot_messages(TOKEN, chat).iter().map(|m| m["text"].as_str().unwrap_or_default().to_string()).collect()
}

/// One raw request line; the reply line.
fn raw(stream: &mut UnixStream, line: &[u8]) -> serde_json::Value {
    stream.write_all(line).unwrap();
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("reply {s:?}: {e}"))
}

#[test]
fn the_daemon_is_driven_and_observed_through_its_socket() {
    let tg = TelegramServer::start();
    let ws = workspace(&tg);
    set_daemon_table(&ws, "breaker_threshold = 2\nbreaker_cooldown = \"10m\"");
    let mut toml = std::fs::read_to_string(ws.path().join("kata.toml")).unwrap();
    toml.push_str(&format!("\n[plugins.trap]\npath = \"{}\"\n", guest("guest-trap").display()));
    std::fs::write(ws.path().join("kata.toml"), &toml).unwrap();

    // Not running yet: the clients say so in one line.
    let (ok, _, err) = kata(ws.path(), &["status"]);
    assert!(!ok && err.contains("kata is not running in") && err.contains("kata daemon start"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let mut daemon = ws.run(&[("TG_TEST_TOKEN", TOKEN)]);
    let sock = ws.path().join(".kata/kata.sock");
    wait_for("the control socket", Duration::from_secs(120), || UnixStream::connect(&sock).ok());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600, "owner-only socket");

    // The trapping plugin's breaker opens and status says so, next to a
    // healthy Telegram plugin.
    let st = wait_for("the trap plugin's breaker to open", Duration::from_secs(120), || {
        let st = status(&ws);
        (plugin(&st, "trap")["health"]["breaker"]["state"] == "open").then_some(st)
    });
    let trap = plugin(&st, "trap");
    assert_eq!(trap["health"]["state"], "breaker-open", "{st:#}");
    assert!(trap["health"]["last_error"].as_str().unwrap().contains("trapped"), "{st:#}");
    let (ok, human, _) = kata(ws.path(), &["status"]);
    assert!(ok && human.contains("breaker-open") && human.contains("open ("), "{human}");
    assert!(ws.log().contains("circuit breaker open: trap keeps failing"), "{}", ws.log());

    // send: straight to a conversation through the channel.
    let (ok, out, err) = kata(ws.path(), &["send", "telegram", "5", "hello from the cli"]);
    assert!(ok, "{err}");
    assert!(out.contains("Queued for 5 on telegram"), "{out}");
    wait_for("the sent message", Duration::from_secs(120), || texts(&tg, 5).contains(&"hello from the cli".to_string()).then_some(()));
    let (ok, _, err) = kata(ws.path(), &["send", "nope", "5", "x"]);
    assert!(!ok && err.contains("no channel plugin named \"nope\" is running"), "{err}");

    // chat: lines in, the agent's replies out.
    let mut chat =
        Command::new(kata_bin()).args(["chat", "--workspace"]).arg(ws.path()).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    chat.stdin.take().unwrap().write_all(b"first line\nsecond line\n").unwrap();
    let out = chat.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first line\nsecond line\n");
    // A new client (a reconnect) first shows where the session stands.
    let mut chat = Command::new(kata_bin())
        .args(["chat", "--workspace"])
        .arg(ws.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin.take().unwrap().write_all(b"third line\n").unwrap();
    let out = chat.wait_with_output().unwrap();
    let context = String::from_utf8_lossy(&out.stderr);
    assert!(context.contains("Recent context:\n  you: first line\n  agent: first line\n  you: second line"), "{context}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "third line\n");

    // logs: recent events from the daemon's broadcast.
    let (ok, out, err) = kata(ws.path(), &["logs", "-n", "1000"]);
    assert!(ok, "{err}");
    assert!(out.contains("kata is running"), "{out}");
    assert!(out.contains("sent plugin=telegram"), "{out}");
    let (ok, out, _) = kata(ws.path(), &["logs", "--json", "-n", "3"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 3, "{out}");
    for l in out.lines() {
        let e: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(e["ts_ms"].is_u64() && e["level"].is_string(), "{l}");
    }

    // Malformed, unknown and oversized requests get an error reply; the
    // daemon does not care.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let r = raw(&mut s, b"this is not json\n");
    assert_eq!((r["ok"].as_bool(), r["error"]["kind"].as_str()), (Some(false), Some("bad-request")), "{r}");
    let r = raw(&mut s, b"{\"v\":1,\"id\":4,\"cmd\":\"format-disk\"}\n");
    assert_eq!((r["id"].as_i64(), r["error"]["kind"].as_str()), (Some(4), Some("bad-request")), "{r}");
    let r = raw(&mut s, b"{\"v\":99,\"cmd\":\"status\"}\n");
    assert_eq!(r["error"]["kind"], "unsupported-version", "{r}");
    let r = raw(&mut s, b"{\"v\":1,\"id\":5,\"cmd\":\"hello\"}\n");
    assert_eq!((r["ok"].as_bool(), r["result"]["protocol"][0].as_u64()), (Some(true), Some(1)), "{r}");
    let mut big = vec![b'x'; 200 * 1024];
    big.push(b'\n');
    let r = raw(&mut s, &big);
    assert_eq!(r["error"]["kind"], "too-large", "{r}");
    // A client that connects and vanishes mid-line changes nothing either.
    UnixStream::connect(&sock).unwrap().write_all(b"{\"v\":1,\"cmd\":\"st").unwrap();
    assert_eq!(status(&ws)["pid"], daemon.pid());

    // reload: a broken kata.toml is refused and changes nothing...
    std::fs::write(ws.path().join("kata.toml"), format!("{toml}\n[plugins.trap\n")).unwrap();
    let (ok, _, err) = kata(ws.path(), &["reload"]);
    assert!(!ok && err.contains("kata.toml") && err.contains("keeps running with the previous configuration"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // ...a good one (without the trap plugin) takes effect without losing
    // what users send meanwhile.
    let without_trap = toml.split("\n[plugins.trap]").next().unwrap().to_string();
    std::fs::write(ws.path().join("kata.toml"), &without_trap).unwrap();
    for i in 0..5 {
        tg.user_says(TOKEN, 7, &format!("during reload {i}"));
    }
    let (ok, out, err) = kata(ws.path(), &["reload"]);
    assert!(ok, "{err}");
    assert!(out.contains("running telegram") && out.contains("Stopped: trap"), "{out}");
    let want: Vec<String> = (0..5).map(|i| format!("during reload {i}")).collect();
    let got = wait_for("replies to messages sent during the reload", Duration::from_secs(120), || {
        let got = texts(&tg, 7);
        want.iter().all(|w| got.contains(w)).then_some(got)
    });
    assert_eq!(got.len(), 5, "each answered once: {got:?}");
    let st = status(&ws);
    assert_eq!(st["plugins"].as_array().unwrap().len(), 1, "{st:#}");

    // stop: the daemon exits cleanly and removes its socket.
    let (ok, out, err) = kata(ws.path(), &["stop"]);
    assert!(ok, "{err}");
    assert!(out.contains("kata stopped"), "{out}");
    let exit = daemon.0.take().unwrap().wait().unwrap();
    assert!(exit.success(), "{exit:?}\n{}", ws.log());
    assert!(!sock.exists(), "the socket is removed at stop");
}

#[test]
fn dead_letters_are_listed_requeued_and_delivered() {
    let tg = TelegramServer::start();
    let ws = workspace(&tg);
    // A reply that ran out of attempts while the daemon was down.
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    let reply = kata::store::Reply {
        plugin: "telegram".into(),
        conversation: "9".into(),
        thread: None,
        reply_to: None,
        text: "late but delivered".into(),
        rich: Default::default(),
    };
    let id = db.enqueue(&reply, "test-dead-1").unwrap();
    db.mark_failed(id, "network error: connection refused").unwrap();

    let (ok, out, _) = kata(ws.path(), &["retry"]);
    assert!(ok && out.contains("connection refused") && out.contains("late but delivered"), "{out}");
    let (ok, _, err) = kata(ws.path(), &["retry", "12345"]);
    assert!(!ok && err.contains("nothing was requeued"), "{err}");

    let mut daemon = ws.run(&[("TG_TEST_TOKEN", TOKEN)]);
    wait_for("the daemon", Duration::from_secs(120), || kata(ws.path(), &["status"]).0.then_some(()));
    let st = status(&ws);
    assert_eq!(plugin(&st, "telegram")["queue"]["dead_letters"], 1, "{st:#}");
    assert!(texts(&tg, 9).is_empty());
    let (ok, out, err) = kata(ws.path(), &["retry", &id.to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains("Requeued 1 message"), "{out}");
    wait_for("the requeued reply", Duration::from_secs(120), || (texts(&tg, 9) == ["late but delivered"]).then_some(()));
    assert!(daemon.signal_and_wait("TERM").success());
}

#[test]
fn daemon_start_status_stop_and_install() {
    let tg = TelegramServer::start();
    let ws = workspace(&tg);
    let config = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(kata_bin())
            .args(args)
            .arg("--workspace")
            .arg(ws.path())
            .env("TG_TEST_TOKEN", TOKEN)
            .env("XDG_CONFIG_HOME", config.path())
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (ok, out, err) = run(&["daemon", "start"]);
    assert!(ok, "{err}");
    assert!(out.contains("kata started in"), "{out}");
    let (ok, _, err) = run(&["daemon", "start"]);
    assert!(!ok && err.contains("already running"), "{err}");
    let (ok, out, _) = run(&["daemon", "status"]);
    assert!(ok && out.contains("kata is running") && out.contains("telegram"), "{out}");
    tg.user_says(TOKEN, 3, "to the background daemon");
    wait_for("a reply from the background daemon", Duration::from_secs(120), || {
        texts(&tg, 3).contains(&"to the background daemon".to_string()).then_some(())
    });
    assert!(std::fs::read_to_string(ws.path().join(".kata/kata.log")).unwrap().contains("kata is running"));
    let (ok, out, err) = run(&["daemon", "stop"]);
    assert!(ok && out.contains("kata stopped"), "{out}{err}");
    let (ok, out, _) = run(&["daemon", "status"]);
    assert!(ok && out.contains("kata is not running"), "{out}");

    // A broken policy fails the start in the terminal, not in a log.
    let path = ws.path().join("kata.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}\nnot toml at all [\n")).unwrap();
    let (ok, _, err) = run(&["daemon", "start"]);
    assert!(!ok && err.contains("kata.toml"), "{err}");
    std::fs::write(&path, good).unwrap();

    let (ok, out, err) = run(&["daemon", "install"]);
    assert!(ok, "{err}");
    assert!(out.contains("systemctl --user enable --now kata-"), "{out}");
    let units: Vec<_> = std::fs::read_dir(config.path().join("systemd/user")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(units.len(), 1);
    let unit = std::fs::read_to_string(&units[0]).unwrap();
    assert!(unit.contains(&format!("--workspace \"{}\" run", ws.path().display())), "{unit}");
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"), "{unit}");
    let (ok, _, err) = run(&["daemon", "uninstall"]);
    assert!(ok, "{err}");
    assert!(std::fs::read_dir(config.path().join("systemd/user")).unwrap().next().is_none());
    let (ok, _, err) = run(&["daemon", "uninstall"]);
    assert!(!ok && err.contains("no service is installed"), "{err}");
}

/// Run kata with a deadline: None if it did not finish in time (it is killed).
fn kata_within(ws: &std::path::Path, args: &[&str], deadline: Duration) -> Option<(bool, String, String)> {
    let mut child = Command::new(kata_bin())
        .args(args)
        .arg("--workspace")
        .arg(ws)
        .env("KATA_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Some((out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string()))
}

/// A connection following the log stream (never idle: it is streaming).
fn follower(sock: &std::path::Path) -> BufReader<UnixStream> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let r = raw(&mut s, b"{\"v\":1,\"id\":1,\"cmd\":\"logs\",\"args\":{\"lines\":0,\"follow\":true}}\n");
    assert_eq!(r["ok"], true, "{r}");
    BufReader::new(s)
}

#[test]
fn idle_connections_cannot_lock_the_cli_out_and_are_closed() {
    let ws = TestWorkspace::new("");
    set_daemon_table(&ws, "control_idle_timeout = \"3s\"");
    let mut daemon = ws.run(&[]);
    let sock = ws.path().join(".kata/kata.sock");
    wait_for("the daemon", Duration::from_secs(120), || kata(ws.path(), &["status"]).0.then_some(()));
    let mut log = follower(&sock);

    // More idle connections than the daemon serves at once: `kata status`
    // (and any other command) still answers at once, each new connection
    // taking the slot of the one that waited longest.
    let idle: Vec<UnixStream> = (0..100).map(|_| UnixStream::connect(&sock).unwrap()).collect();
    for _ in 0..3 {
        let start = std::time::Instant::now();
        let (ok, out, err) = kata_within(ws.path(), &["status", "--json"], Duration::from_secs(20)).expect("kata status hung");
        assert!(ok, "{err}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["pid"], daemon.pid());
        assert!(start.elapsed() < Duration::from_secs(5), "kata status took {:?}", start.elapsed());
    }
    let (ok, _, err) = kata_within(ws.path(), &["logs", "-n", "1"], Duration::from_secs(20)).expect("kata logs hung");
    assert!(ok, "{err}");

    // Every idle connection is closed (after the timeout, or earlier to make
    // room), told why in one error line first; those that came while the
    // slots were changing hands are refused as busy.
    let mut timed_out = 0;
    for s in idle {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(v["id"].is_null() && matches!(v["error"]["kind"].as_str(), Some("idle-timeout" | "busy")), "{v}");
        timed_out += usize::from(v["error"]["kind"] == "idle-timeout");
        line.clear();
        assert_eq!(r.read_line(&mut line).unwrap(), 0, "closed after the note: {line:?}");
    }
    assert!(timed_out >= kata::control::MAX_CLIENTS - 1, "{timed_out} closed as idle");

    // A chat session that waits longer than the timeout between two lines
    // goes on without a word about it (the client sends the line again on a
    // new connection: the daemon never read it).
    let mut chat = Command::new(kata_bin())
        .args(["chat", "--workspace"])
        .arg(ws.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    let mut stdout = BufReader::new(chat.stdout.take().unwrap());
    stdin.write_all(b"before the pause\n").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "before the pause\n");
    std::thread::sleep(Duration::from_secs(5));
    stdin.write_all(b"after the pause\n").unwrap();
    drop(stdin);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "after the pause\n");
    let out = chat.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("reconnected") && !err.contains("error"), "{err}");

    // With every slot streaming (nothing to evict), `kata status` and `kata
    // stop` still get an answer; anything else a clear refusal.
    let followers: Vec<_> = (0..kata::control::MAX_CLIENTS - 1).map(|_| follower(&sock)).collect();
    let (ok, out, err) = kata_within(ws.path(), &["status", "--json"], Duration::from_secs(20)).expect("kata status hung");
    assert!(ok, "{err}");
    assert!(out.contains("\"pid\""), "{out}");
    let (ok, _, err) = kata_within(ws.path(), &["logs", "-n", "1"], Duration::from_secs(20)).expect("kata logs hung");
    assert!(!ok && err.contains("already serving 64 control connections") && err.contains("control_idle_timeout"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    drop(followers);

    // The first follower, open all along (far longer than the idle timeout),
    // still streams: it sees the stop.
    let (ok, _, err) = kata_within(ws.path(), &["stop"], Duration::from_secs(60)).expect("kata stop hung");
    assert!(ok, "{err}");
    let mut seen = String::new();
    let mut line = String::new();
    while log.read_line(&mut line).unwrap_or(0) > 0 {
        seen.push_str(&line);
        line.clear();
    }
    assert!(seen.contains("stop requested through the control socket"), "{seen}");
    assert!(daemon.0.take().unwrap().wait().unwrap().success(), "{}", ws.log());
}
