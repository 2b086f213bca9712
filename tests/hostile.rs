//! Hostile plugins in the real daemon, next to a healthy channel that must
//! keep delivering: a busy loop, a memory bomb, unbounded recursion, a
//! plugin that traps on every call, a message flood and an oversized poll. Each is contained and reported; the
//! daemon and the healthy plugin carry on.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{TestWorkspace, guest, wait_for};

#[test]
fn hostile_plugins_are_contained_while_a_healthy_one_delivers() {
    let mut toml = String::new();
    for (name, file, extra) in [
        ("healthy", "guest-v0-1-0", "allow_from = [\"*\"]\n"),
        ("spin", "guest-spin", "limits = { cpu_per_call = \"100ms\" }\n"),
        ("bomb", "guest-membomb", "limits = { memory = \"16MiB\" }\n"),
        ("deep", "guest-deep", ""),
        ("trap", "guest-trap", ""),
        ("flood", "guest-flood", "limits = { messages_per_minute = 600 }\n"),
        ("bigpoll", "guest-flood", "config = { count = 1001 }\n"),
    ] {
        toml.push_str(&format!("\n[plugins.{name}]\npath = \"{}\"\n{extra}", guest(file).display()));
    }
    let ws = TestWorkspace::new(&toml);
    let mut daemon = ws.run(&[]);
    let db = wait_for("the daemon's database", Duration::from_secs(30), || kata::store::Db::open(&ws.path().join(".kata/kata.db")).ok());
    // The healthy plugin's three messages are answered and delivered...
    wait_for("the healthy plugin's replies", Duration::from_secs(60), || (db.plugin_activity("healthy").ok()?.sent == 3).then_some(()));
    // ...while each hostile one has been stopped, and said why.
    let log = wait_for("every hostile plugin to be stopped at least once", Duration::from_secs(60), || {
        let log = ws.log();
        let all = ["plugin=spin", "plugin=bomb", "plugin=deep", "plugin=trap"]
            .iter()
            .all(|p| log.lines().any(|l| l.contains(p) && l.contains("retrying in")));
        all.then_some(log)
    });
    let line = |p: &str| log.lines().find(|l| l.contains(&format!("plugin={p}")) && l.contains("retrying in")).unwrap().to_string();
    assert!(line("spin").contains("CPU budget"), "{}", line("spin"));
    assert!(line("bomb").contains("memory limit of 16 MiB"), "{}", line("bomb"));
    assert!(line("deep").contains("stack overflow") || line("deep").contains("trapped"), "{}", line("deep"));
    assert!(line("trap").contains("trapped"), "{}", line("trap"));
    // The flood is stored (its cursor moved) but slows itself down; the
    // oversized poll is refused whole; neither reaches the agent unpaired.
    let log = wait_for("the flood to be throttled and the big poll refused", Duration::from_secs(60), || {
        let log = ws.log();
        let flood = log.lines().any(|l| l.contains("plugin=flood") && l.contains("pausing polls for"));
        let big = log.lines().any(|l| l.contains("plugin=bigpoll") && l.contains("poll returned 1001 messages (limit 1000)"));
        (flood && big).then_some(log)
    });
    assert_eq!(db.plugin_activity("bigpoll").unwrap().received, 0, "{log}");
    assert!(db.plugin_activity("flood").unwrap().sent <= 1, "at most the one pairing reply goes to the flooder");
    // The daemon is alive and stops cleanly.
    assert!(daemon.signal_and_wait("TERM").success(), "{log}");
    assert_eq!(db.plugin_activity("healthy").unwrap().sent, 3);
}

/// A plugin that fails in `describe` or in `connect` never gets to poll, but
/// it is failing all the same: every failed start counts as a restart and
/// towards its circuit breaker, and `kata status` shows the error — not a
/// plugin forever `starting` with a closed breaker and no error.
#[test]
fn plugins_that_fail_to_start_show_their_failures_in_status() {
    let mut toml = String::new();
    for (name, trap_in) in [("nodescribe", "describe"), ("noconnect", "connect")] {
        toml.push_str(&format!(
            "\n[plugins.{name}]\npath = \"{}\"\nconfig = {{ trap_in = \"{trap_in}\" }}\n",
            guest("guest-trap").display()
        ));
    }
    let ws = TestWorkspace::new(&toml);
    let path = ws.path().join("kata.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("[daemon]\n", "[daemon]\nbreaker_threshold = 3\nbreaker_cooldown = \"10m\"\n", 1)).unwrap();
    let mut daemon = ws.run(&[]);
    let status = || -> Option<serde_json::Value> {
        let (ok, out, _) = common::kata(ws.path(), &["status", "--json"]);
        if ok { serde_json::from_str(&out).ok() } else { None }
    };
    let health = |st: &serde_json::Value, name: &str| -> serde_json::Value {
        // (Null until the plugin shows in the status at all.)
        st["plugins"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == name)).map(|p| p["health"].clone()).unwrap_or_default()
    };
    let st = wait_for("both breakers to open", Duration::from_secs(90), || {
        let st = status()?;
        ["nodescribe", "noconnect"].iter().all(|n| health(&st, n)["breaker"]["state"] == "open").then_some(st)
    });
    for (name, call) in [("nodescribe", "describe"), ("noconnect", "connect")] {
        let h = health(&st, name);
        assert_eq!(h["state"], "breaker-open", "{name}: {h:#}");
        assert!(h["restarts"].as_u64().unwrap() >= 2, "{name}: three failed starts are two restarts: {h:#}");
        let err = h["last_error"].as_str().unwrap_or_default();
        assert!(err.contains("trapped") || err.contains(call), "{name}: last error {err:?}");
    }
    assert!(health(&st, "nodescribe")["last_error"].as_str().unwrap().contains("cannot describe the plugin"));
    let (ok, human, _) = common::kata(ws.path(), &["status"]);
    assert!(ok && human.contains("nodescribe") && human.contains("breaker-open"), "{human}");
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
}
