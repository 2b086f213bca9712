//! Size and volume limits on what a plugin hands the host, in the real
//! daemon: a channel returning messages with a huge text (and a huge id)
//! next to a healthy one, and a plugin flooding the log. What is over the
//! limits is never stored or written, each hit is audited (messages) and
//! counted in `kata status`, and the healthy channel keeps delivering.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{TestWorkspace, guest, kata, wait_for};

fn status(ws: &TestWorkspace) -> Option<serde_json::Value> {
    let (ok, out, _) = kata(ws.path(), &["status", "--json"]);
    if ok { serde_json::from_str(&out).ok() } else { None }
}

fn limits_hit(st: &serde_json::Value, plugin: &str) -> serde_json::Value {
    st["plugins"].as_array().unwrap().iter().find(|p| p["name"] == plugin).unwrap()["health"]["limits_hit"].clone()
}

/// Bytes the workspace database takes on disk, with its WAL.
fn db_bytes(ws: &TestWorkspace) -> u64 {
    ["kata.db", "kata.db-wal"].iter().filter_map(|f| std::fs::metadata(ws.path().join(".kata").join(f)).ok()).map(|m| m.len()).sum()
}

#[test]
fn oversized_messages_are_cut_or_refused_while_a_healthy_channel_delivers() {
    let toml = format!(
        "\n[plugins.healthy]\npath = \"{}\"\nallow_from = [\"*\"]\n\
         \n[plugins.huge]\npath = \"{}\"\nconfig = {{ polls = 4, text_bytes = {} }}\n",
        guest("guest-v0-1-0").display(),
        guest("guest-huge").display(),
        8 << 20
    );
    let ws = TestWorkspace::new(&toml);
    let mut daemon = ws.run(&[]);
    let db = wait_for("the daemon's database", Duration::from_secs(30), || kata::store::Db::open(&ws.path().join(".kata/kata.db")).ok());
    // The healthy channel's three messages are answered and delivered.
    wait_for("the healthy plugin's replies", Duration::from_secs(60), || (db.plugin_activity("healthy").ok()?.sent == 3).then_some(()));
    // Four polls of a 8 MiB text (and a 8 MiB raw) each, all taken (the
    // cursor moved past them): the texts are stored cut to
    // limits.max_message, the raws dropped, the messages with long ids refused.
    wait_for("the four huge polls", Duration::from_secs(60), || (db.cursor("huge").ok()?.as_deref() == Some("4")).then_some(()));
    let conn = rusqlite::Connection::open(ws.path().join(".kata/kata.db")).unwrap();
    let rows: Vec<(String, String, Option<String>)> = conn
        .prepare("SELECT channel_msg_id, text, raw FROM inbox WHERE plugin = 'huge'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let too_big: Vec<usize> = rows.iter().map(|(_, text, _)| text.len()).filter(|n| *n > 64 << 10).collect();
    assert!(too_big.is_empty(), "texts over limits.max_message were stored: {too_big:?} bytes");
    let long_ids = rows.iter().filter(|(id, _, _)| id.len() > 1024).count();
    assert_eq!(long_ids, 0, "messages with ids over 1 KiB were stored");
    let (mut texts, mut raws) = (0usize, 0usize);
    for (_, text, raw) in &rows {
        assert!(text.ends_with("[cut by kata: over limits.max_message]"), "{:?}", text.chars().rev().take(60).collect::<String>());
        texts += text.len();
        raws += raw.as_ref().map_or(0, String::len);
    }
    assert_eq!(rows.len(), 4, "the four cut messages are stored, the four with long ids are not");
    assert_eq!(raws, 0, "a raw over limits.max_message is dropped");
    assert!(texts <= 4 * (64 << 10), "{texts}");
    // 64 MiB went in; the whole database holds a small part of that.
    let size = db_bytes(&ws);
    assert!(size < 8 << 20, "the database takes {size} bytes");
    assert_eq!(db.plugin_activity("huge").unwrap().received, 4);
    // kata status counts each cut and refusal.
    let st = status(&ws).unwrap();
    let h = limits_hit(&st, "huge");
    assert_eq!((h["max_message"].as_u64(), h["max_id"].as_u64()), (Some(4), Some(4)), "{h:#}");
    assert_eq!(st["limits_hit"]["huge"], h, "the per-plugin map of every plugin's hits agrees");
    assert!(limits_hit(&st, "healthy").as_object().unwrap().is_empty(), "{st:#}");
    // Each poll's cuts and refusals are one audit row per limit.
    let audit = db.audit_query(&kata::store::AuditQuery { plugin: Some("huge".into()), since_ms: None, limit: 100 }).unwrap();
    let rows_of = |what: &str| audit.iter().filter(|r| r.kind == "limit" && r.policy.as_deref().unwrap_or("").contains(what)).count();
    assert!(rows_of("max_message") >= 4 && rows_of("1024 bytes") >= 4, "{audit:#?}");
    let (ok, human, _) = kata(ws.path(), &["status"]);
    assert!(ok && human.contains("huge           limits hit: max_id 4, max_message 4"), "{human}");
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    assert_eq!(db.plugin_activity("healthy").unwrap().sent, 3);
}

#[test]
fn a_log_flood_is_rate_limited_and_summed_up() {
    let toml = format!(
        "\n[plugins.logflood]\npath = \"{}\"\nconfig = {{ lines = 2000 }}\n\
         limits = {{ log_lines_per_minute = 300, max_log_line = \"1KiB\" }}\n",
        guest("guest-logflood").display()
    );
    let ws = TestWorkspace::new(&toml);
    let mut daemon = ws.run(&[]);
    // A tenth of the bucket (30 lines at 5 a second) is back after 6 s: the
    // summary comes then.
    let log = wait_for("the summary of suppressed lines", Duration::from_secs(60), || {
        let log = ws.log();
        log.contains("lines from logflood in the last").then_some(log)
    });
    let st = wait_for("the status counters", Duration::from_secs(30), || {
        let st = status(&ws)?;
        let h = limits_hit(&st, "logflood");
        (h["log_lines_per_minute"].as_u64()? > 10_000).then_some(st)
    });
    let (ok, human, _) = kata(ws.path(), &["status"]);
    assert!(ok && human.contains("logflood       limits hit: ") && human.contains("log_lines_per_minute "), "{human}");
    assert!(daemon.signal_and_wait("TERM").success(), "{log}");
    let log = ws.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("plugin=logflood") || l.contains("plugin=\"logflood\"")).collect();
    let suppressed = limits_hit(&st, "logflood")["log_lines_per_minute"].as_u64().unwrap();
    // The bucket's 300, plus what refilled while the test ran, plus the
    // summaries and the daemon's own lines: far fewer than the plugin wrote.
    assert!(lines.len() < 600, "{} plugin lines in the log; {suppressed} suppressed", lines.len());
    let summary = lines.iter().find(|l| l.contains("suppressed ") && l.contains(" lines from logflood in the last ")).unwrap();
    assert!(summary.contains("limits.log_lines_per_minute = 300"), "{summary}");
    // The huge line was cut at 1 KiB, with a marker.
    let huge = lines.iter().find(|l| l.contains("huge line 1:")).expect("the first line is written");
    assert!(huge.len() < 1024 + 200 && huge.contains("[cut: over limits.max_log_line]"), "{}", huge.len());
    assert!(limits_hit(&st, "logflood")["max_log_line"].as_u64().unwrap() >= 1, "{st:#}");
}

#[test]
fn a_tool_result_over_the_limit_is_cut_before_the_model_sees_it() {
    use common::llm::{ChatServer, LlmServer, tool_script};
    let llm = LlmServer::start(tool_script(), Duration::ZERO);
    let chat = ChatServer::start();
    let notes = tempfile::tempdir().unwrap();
    std::fs::write(notes.path().join("big.txt"), "n".repeat(1 << 20)).unwrap();
    let ws = TestWorkspace::new("");
    std::fs::write(
        ws.path().join("kata.toml"),
        format!(
            "[agent]\nbackend = \"openai\"\nbase_url = \"{llm}\"\nmodel = \"m\"\napi_key = \"env:KATA_TEST_OPENAI_KEY\"\n\
             \n[tools]\nmode = \"allow-all\"\n\
             \n[plugins.chat]\npath = \"{chat_wasm}\"\nnetwork = [\"{chat}/\"]\nconfig = {{ api_base = \"{chat}\", poll_interval = \"50ms\" }}\nallow_from = [\"*\"]\n\
             \n[plugins.notes]\npath = \"{tools_wasm}\"\nfiles = [{{ host = \"{notes}\", guest = \"/notes\", mode = \"ro\" }}]\n\
             limits = {{ max_tool_result = \"1KiB\" }}\n",
            llm = llm.base_url(),
            chat_wasm = guest("guest-chat").display(),
            chat = chat.base(),
            tools_wasm = guest("guest-tools").display(),
            notes = notes.path().display(),
        ),
    )
    .unwrap();
    let mut daemon = ws.run(&[("KATA_TEST_OPENAI_KEY", "sk-test-key-0123456789")]);
    chat.say("c1", None, "ann", r#"call notes__read_note {"name":"big.txt"}"#);
    let reply = wait_for("the reply after the tool call", Duration::from_secs(60), || {
        chat.sent().iter().find(|s| s["conversation"] == "c1").map(|s| s["text"].as_str().unwrap_or_default().to_string())
    });
    // The model got at most 1 KiB of the 1 MiB result, marked as cut.
    let reqs = llm.requests();
    let result =
        reqs[1]["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap()["content"].as_str().unwrap().to_string();
    assert!(result.len() <= 1024, "the model got {} bytes of the tool result", result.len());
    assert!(result.starts_with("nnnn") && result.ends_with("[cut by kata: over limits.max_tool_result]"), "{result}");
    assert_eq!(reply, format!("tool said: {result}"));
    // Counted in kata status (a tools plugin has no status row: the
    // top-level map has it) and audited.
    let st = status(&ws).unwrap();
    assert_eq!(st["limits_hit"]["notes"]["max_tool_result"], 1, "{st:#}");
    let (ok, human, _) = kata(ws.path(), &["status"]);
    assert!(ok && human.contains("notes          limits hit: max_tool_result 1"), "{human}");
    let (ok, audit, err) = kata(ws.path(), &["audit", "--plugin", "notes", "--json"]);
    assert!(ok, "{err}");
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "limit" && r["detail"].as_str().unwrap_or("").contains("1048576 bytes was cut")),
        "{audit:#}"
    );
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
}
