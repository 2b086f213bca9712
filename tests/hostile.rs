//! Hostile plugins in the real daemon, next to a healthy channel that must
//! keep delivering: a busy loop, a memory bomb, unbounded recursion, a
//! plugin that traps on every call, a message flood and an oversized poll. Each is contained and reported; the
//! daemon and the healthy plugin carry on.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

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
    let db = wait_for("the daemon's database", Duration::from_secs(30), || {
        kata::store::Db::open(&ws.path().join(".kata/kata.db")).ok()
    });
    // The healthy plugin's three messages are answered and delivered...
    wait_for("the healthy plugin's replies", Duration::from_secs(60), || {
        (db.plugin_activity("healthy").ok()?.sent == 3).then_some(())
    });
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
