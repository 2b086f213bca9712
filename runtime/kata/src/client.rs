//! The thin clients of the control socket: `kata status`, `stop`, `reload`,
//! `logs`, `send`, `chat` and `retry`. Each one sends a request to the
//! running daemon (see [`crate::control`]) and prints the answer.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::control::{Client, Request};
use crate::workspace::Workspace;

/// How long a simple request may take.
const QUICK: Duration = Duration::from_secs(30);
/// How long a reload (which may compile plugins) or a chat turn may take.
const SLOW: Duration = Duration::from_secs(600);

/// `kata status`.
pub fn status(ws: &Workspace, json: bool) -> Result<()> {
    let v = Client::connect(ws)?.call(&Request::Status, QUICK)?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    print_status(&v, &mut out)
}

/// Render a status report for people.
pub fn print_status(v: &Value, out: &mut impl Write) -> Result<()> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    writeln!(
        out,
        "kata {} running in {} (pid {}, up {})",
        s(&v["version"]),
        s(&v["workspace"]),
        n(&v["pid"]),
        human_duration(Duration::from_secs(n(&v["uptime_s"])))
    )?;
    let plugins = v["plugins"].as_array().cloned().unwrap_or_default();
    if plugins.is_empty() {
        writeln!(out, "No channel plugins are running.")?;
    } else {
        writeln!(
            out,
            "{:<14} {:<26} {:<13} {:<16} {:>8} {:>6} {:>7} {:>5} {:>8}  LAST ERROR",
            "PLUGIN", "CHANNEL", "STATE", "BREAKER", "RECEIVED", "SENT", "PENDING", "DEAD", "RESTARTS"
        )?;
        let now = crate::store::now_ms();
        for p in &plugins {
            let h = &p["health"];
            let breaker = match h["breaker"]["state"].as_str() {
                Some("open") => {
                    let left = n(&h["breaker"]["until_ms"]).saturating_sub(now);
                    format!("open ({} left)", human_duration(Duration::from_millis(left)))
                }
                _ => "closed".to_string(),
            };
            let err = h["last_error"].as_str().or(p["last_delivery_error"].as_str()).unwrap_or("-");
            writeln!(
                out,
                "{:<14} {:<26} {:<13} {:<16} {:>8} {:>6} {:>7} {:>5} {:>8}  {}",
                s(&p["name"]),
                channel_text(&p["channel"]),
                s(&h["state"]),
                breaker,
                n(&h["received"]),
                n(&h["sent"]),
                n(&p["queue"]["outbox_pending"]),
                n(&p["queue"]["dead_letters"]),
                n(&h["restarts"]),
                one_line(err, 100)
            )?;
        }
        // What each channel can do besides text, once it has said
        // (the rest is degraded: see README, "Rich replies").
        for p in &plugins {
            if let Some(f) = p["health"]["features"].as_array() {
                let names: Vec<&str> = f.iter().filter_map(Value::as_str).collect();
                let names = if names.is_empty() { "none (text only)".to_string() } else { names.join(", ") };
                writeln!(out, "{:<14} features: {names}", s(&p["name"]))?;
            }
        }
        // Limits hit, by plugin: name and count (log lines suppressed,
        // messages cut or refused, calls stopped, requests refused).
        for p in &plugins {
            let hits: Vec<String> =
                p["health"]["limits_hit"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k} {}", n(v))).collect()).unwrap_or_default();
            if !hits.is_empty() {
                writeln!(out, "{:<14} limits hit: {}", s(&p["name"]), hits.join(", "))?;
            }
        }
    }
    // Plugins without a row above (tools plugins) that hit a limit.
    if let Some(all) = v["limits_hit"].as_object() {
        for (name, m) in all.iter().filter(|(name, _)| !plugins.iter().any(|p| p["name"] == name.as_str())) {
            let hits: Vec<String> = m.as_object().map(|m| m.iter().map(|(k, v)| format!("{k} {}", n(v))).collect()).unwrap_or_default();
            if !hits.is_empty() {
                writeln!(out, "{name:<14} limits hit: {}", hits.join(", "))?;
            }
        }
    }
    let q = &v["queues"];
    writeln!(
        out,
        "Queues: inbox {} waiting, {} answered; outbox {} pending, {} sent, {} dead letters{}",
        n(&q["inbox_new"]),
        n(&q["inbox_done"]),
        n(&q["outbox_pending"]),
        n(&q["outbox_sent"]),
        n(&q["outbox_failed"]),
        if n(&q["outbox_failed"]) > 0 { " (`kata retry` lists and requeues them)" } else { "" }
    )?;
    if let Some(held) = v["held"].as_array().filter(|h| !h.is_empty()) {
        writeln!(out, "Held by hooks: {} (kept; fix the hook, then `kata reload` tries them again)", held.len())?;
        for h in held {
            let what = if h["point"] == "message-received" { "message" } else { "reply" };
            writeln!(
                out,
                "  {what} in {}:{} (inbox {}), held by hook {} at {}: {}",
                h["plugin"].as_str().unwrap_or_default(),
                h["conversation"].as_str().unwrap_or_default(),
                n(&h["inbox_id"]),
                h["hook"].as_str().unwrap_or_default(),
                h["point"].as_str().unwrap_or_default(),
                h["reason"].as_str().unwrap_or_default()
            )?;
        }
    }
    let a = &v["agent"];
    if let Some(backend) = a["backend"].as_str() {
        writeln!(
            out,
            "Agent: {backend}, {} session(s), {} prompt + {} completion tokens (`kata session list` shows them per session)",
            n(&a["sessions"]),
            n(&a["prompt_tokens"]),
            n(&a["completion_tokens"])
        )?;
    }
    if let Some(hooks) = a["hooks"].as_array().filter(|h| !h.is_empty()) {
        let names: Vec<&str> = hooks.iter().filter_map(Value::as_str).collect();
        writeln!(out, "Hooks: {} (in [hooks] order; `kata audit` shows what they changed)", names.join(", "))?;
    }
    Ok(())
}

/// A channel's state for people: `connected`, `configured`, `failing:
/// auth-failed`, `installed (disabled)`…; `-` for a service.
fn channel_text(c: &Value) -> String {
    let Some(state) = c["state"].as_str() else { return "-".into() };
    match (state, c["reason"].as_str()) {
        ("failing", Some(r)) => format!("failing: {r}"),
        ("installed" | "configured", Some(r)) => format!("{state} ({r})"),
        _ => state.to_string(),
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() <= max { flat } else { format!("{}…", flat.chars().take(max).collect::<String>()) }
}

/// `5s`, `3m 20s`, `2h 5m`, `3d 4h`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s / 60) % 60),
        _ => format!("{}d {}h", s / 86400, (s / 3600) % 24),
    }
}

/// `kata stop`: ask the daemon to stop and wait until it has.
pub fn stop(ws: &Workspace) -> Result<()> {
    let pid = ws.running_daemon();
    Client::connect(ws)?.call(&Request::Stop, QUICK)?;
    wait_stopped(ws, Duration::from_secs(60))?;
    match pid {
        Some(pid) if pid != 0 => println!("kata stopped (pid {pid})."),
        _ => println!("kata stopped."),
    }
    Ok(())
}

/// Wait until no daemon holds the workspace's run lock.
pub fn wait_stopped(ws: &Workspace, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while ws.running_daemon().is_some() {
        if Instant::now() > deadline {
            bail!(
                "the daemon in {} was asked to stop but is still running after {timeout:?}; \
                 see `kata logs` or .kata/kata.log",
                ws.root().display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `kata reload`.
pub fn reload(ws: &Workspace) -> Result<()> {
    let v = Client::connect(ws)?.call(&Request::Reload, SLOW)?;
    let names = |k: &str| -> String {
        let list: Vec<String> = v[k].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect();
        if list.is_empty() { "none".to_string() } else { list.join(", ") }
    };
    println!("Reloaded {}: running {}.", ws.policy_path().display(), names("plugins"));
    if v["added"].as_array().is_some_and(|a| !a.is_empty()) {
        println!("Started: {}.", names("added"));
    }
    if v["removed"].as_array().is_some_and(|a| !a.is_empty()) {
        println!("Stopped: {} (their queued messages stay queued).", names("removed"));
    }
    Ok(())
}

/// `kata logs [-f]`.
pub fn logs(ws: &Workspace, follow: bool, lines: usize, json: bool) -> Result<()> {
    let mut c = Client::connect(ws)?;
    c.send(&Request::Logs { lines, follow })?;
    c.set_timeout(if follow { None } else { Some(QUICK) });
    let first = c.read()?.context("the daemon closed the connection")?;
    crate::control::into_result(first)?;
    let mut out = std::io::stdout().lock();
    while let Some(r) = c.read()? {
        if let Some(e) = r.event {
            if json {
                serde_json::to_writer(&mut out, &e)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", e.human())?;
            }
            out.flush()?;
        } else if r.result.as_ref().is_some_and(|v| v["end"] == true) {
            break;
        }
    }
    Ok(())
}

/// `kata send CHANNEL TO TEXT`.
pub fn send(ws: &Workspace, channel: String, to: String, text: String, thread: Option<String>) -> Result<()> {
    let v = Client::connect(ws)?.call(&Request::Send { channel: channel.clone(), to: to.clone(), text, thread }, QUICK)?;
    println!("Queued for {to} on {channel} (outbox {}); `kata status` shows delivery.", v["outbox"]);
    Ok(())
}

/// `kata chat`: read lines, send each to the agent, print its replies. A
/// daemon restart in between is survived: the next line reconnects.
pub fn chat(ws: &Workspace, session: String) -> Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let mut client = Some(Client::connect(ws)?);
    if interactive {
        eprintln!("Talking to the agent in {} (session {session}). End with Ctrl-D.", ws.root().display());
    }
    if let Some(c) = client.as_mut() {
        show_context(c, &session);
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut line = String::new();
    loop {
        if interactive {
            eprint!("> ");
        }
        line.clear();
        if stdin.lock().read_line(&mut line).context("cannot read the terminal")? == 0 {
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']).to_string();
        if text.trim().is_empty() {
            continue;
        }
        let req = Request::Chat { text, session: Some(session.clone()) };
        let mut result = match client.as_mut() {
            Some(c) => c.call(&req, SLOW),
            None => Err(anyhow::anyhow!("not connected")),
        };
        if result.is_err() {
            // The daemon may have restarted: reconnect once and retry.
            client = Client::connect(ws).ok();
            if let Some(c) = client.as_mut() {
                eprintln!("(reconnected to the daemon)");
                show_context(c, &session);
                result = c.call(&req, SLOW);
            }
        }
        match result {
            Ok(v) => {
                match v["reply"].as_str() {
                    Some(r) => writeln!(out, "{r}")?,
                    None => writeln!(out, "(no reply)")?,
                }
                // Files the agent's tools handed back: saved by the daemon, named here.
                for f in v["files"].as_array().into_iter().flatten() {
                    let (name, path) = (f["name"].as_str().unwrap_or("?"), f["path"].as_str().unwrap_or("?"));
                    writeln!(out, "[file] {name} ({} bytes, {}) saved to {path}", f["bytes"], f["mime_type"].as_str().unwrap_or("?"))?;
                }
                if let Some(e) = v["files_error"].as_str() {
                    eprintln!("error: the reply's files were not saved: {e}");
                }
            }
            Err(e) => {
                if client.is_none() {
                    return Err(e);
                }
                eprintln!("error: {e:#}");
            }
        }
        out.flush()?;
    }
    Ok(())
}

/// Print the session's latest turns (on stderr, so stdout stays the
/// agent's replies): where the conversation stands after a (re)connect.
fn show_context(c: &mut Client, session: &str) {
    let Ok(v) = c.call(&Request::History { session: session.to_string(), n: 10 }, QUICK) else { return };
    let items = v["history"].as_array().cloned().unwrap_or_default();
    let lines: Vec<String> = items
        .iter()
        .filter(|i| matches!(i["role"].as_str(), Some("user" | "assistant")) && i["content"].as_str().is_some_and(|t| !t.is_empty()))
        .map(|i| {
            let who = if i["role"] == "user" { "you" } else { "agent" };
            format!("  {who}: {}", one_line(i["content"].as_str().unwrap_or(""), 200))
        })
        .collect();
    if !lines.is_empty() {
        eprintln!("Recent context:");
        for l in lines {
            eprintln!("{l}");
        }
    }
}

/// `kata retry [IDS…|--all] [--plugin P]`.
pub fn retry(ws: &Workspace, ids: Vec<i64>, all: bool, plugin: Option<String>, json: bool) -> Result<()> {
    let listing = ids.is_empty() && !all;
    // With no daemon, the database is the truth: list or requeue there; the
    // next `kata run` delivers them.
    let v = match Client::connect(ws) {
        Ok(mut c) => c.call(&Request::Retry { ids: ids.clone(), all, plugin: plugin.clone() }, QUICK)?,
        Err(_) => {
            let db = crate::store::Db::open(&ws.db_path())?;
            if listing {
                serde_json::json!({"dead_letters": db.dead_letters(plugin.as_deref(), 1000)?})
            } else {
                serde_json::json!({"requeued": db.requeue_dead(&ids, plugin.as_deref())?})
            }
        }
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    if listing {
        let dead: Vec<crate::store::DeadLetter> = serde_json::from_value(v["dead_letters"].clone())?;
        if dead.is_empty() {
            writeln!(out, "No dead letters: every reply was delivered or is still being tried.")?;
            return Ok(());
        }
        writeln!(out, "{:>6} {:<12} {:<16} {:>8}  LAST ERROR / TEXT", "ID", "CHANNEL", "TO", "ATTEMPTS")?;
        for d in &dead {
            writeln!(
                out,
                "{:>6} {:<12} {:<16} {:>8}  {}\n{:>47}{}",
                d.id,
                d.plugin,
                one_line(&d.conversation, 16),
                d.attempts,
                one_line(d.last_error.as_deref().unwrap_or("-"), 80),
                "",
                one_line(&d.text, 80)
            )?;
        }
        writeln!(out, "Requeue with `kata retry ID…` or `kata retry --all`.")?;
    } else {
        let n = v["requeued"].as_u64().unwrap_or(0);
        if n == 0 {
            bail!("nothing was requeued: no dead letter matches; `kata retry` lists them");
        }
        writeln!(out, "Requeued {n} message{}.", if n == 1 { "" } else { "s" })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(200)), "3m 20s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d 4h");
    }

    #[test]
    fn status_renders_an_open_breaker_and_the_last_error() {
        let v = serde_json::json!({
            "version": "0.1.0", "workspace": "/ws", "pid": 7, "uptime_s": 65,
            "plugins": [{
                "name": "trap",
                "health": {"state": "breaker-open", "breaker": {"state": "open", "until_ms": crate::store::now_ms() + 30_000, "openings": 1},
                           "last_error": "guest trapped:\nunreachable", "received": 0, "sent": 0, "restarts": 4,
                           "limits_hit": {"cpu_per_call": 3, "log_lines_per_minute": 88000}},
                "queue": {"outbox_pending": 1, "dead_letters": 2},
            }, {
                "name": "telegram",
                "health": {"state": "running", "breaker": {"state": "closed"}, "features": ["typing", "edit"]},
            }, {
                "name": "irc",
                "health": {"state": "running", "breaker": {"state": "closed"}, "features": []},
            }],
            "queues": {"inbox_new": 0, "inbox_done": 3, "outbox_pending": 1, "outbox_sent": 3, "outbox_failed": 2},
            "limits_hit": {"trap": {"cpu_per_call": 3}, "search": {"max_tool_result": 2}},
        });
        let mut out = Vec::new();
        print_status(&v, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with("kata 0.1.0 running in /ws (pid 7, up 1m 5s)"), "{text}");
        assert!(text.contains("breaker-open  open ("), "{text}");
        assert!(text.contains("guest trapped: unreachable"), "{text}");
        assert!(text.contains("2 dead letters (`kata retry`"), "{text}");
        assert!(text.contains("trap           limits hit: cpu_per_call 3, log_lines_per_minute 88000"), "{text}");
        assert!(text.contains("search         limits hit: max_tool_result 2"), "a tools plugin's hits show too: {text}");
        assert_eq!(text.matches("limits hit").count(), 2, "{text}");
        assert!(text.contains("telegram       features: typing, edit\nirc            features: none (text only)\n"), "{text}");
        assert!(!text.contains("trap           features"), "not known yet: {text}");
        assert!(text.contains("trap           -                          breaker-open"), "no channel state given: {text}");
    }

    #[test]
    fn status_names_each_channel_state() {
        let row = |name: &str, channel: Value, state: &str| serde_json::json!({"name": name, "channel": channel, "health": {"state": state, "breaker": {"state": "closed"}}, "queue": {}});
        let v = serde_json::json!({
            "version": "0.1.0", "workspace": "/ws", "pid": 7, "uptime_s": 1,
            "plugins": [
                row("matrix", serde_json::json!({"state": "failing", "reason": "auth-failed"}), "backing-off"),
                row("irc", serde_json::json!({"state": "connected", "reason": null}), "running"),
                row("hooks", serde_json::json!({"state": "configured", "reason": null}), "starting"),
                row("old", serde_json::json!({"state": "installed", "reason": "disabled"}), "disabled"),
                row("next", serde_json::json!({"state": "not-installed", "reason": "not-installed"}), "not-installed"),
            ],
            "queues": {},
        });
        let mut out = Vec::new();
        print_status(&v, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        let line = |name: &str| text.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
        assert!(line("matrix").contains(" failing: auth-failed "), "{text}");
        assert!(line("irc").contains(" connected "), "{text}");
        assert!(line("hooks").contains(" configured "), "{text}");
        assert!(line("old").contains(" installed (disabled) "), "{text}");
        assert!(line("next").contains(" not-installed "), "{text}");
    }
}
