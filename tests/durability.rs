//! Crash safety under load: a 10 000-message stream through a WASM channel,
//! with the daemon killed (SIGKILL) at random points ten times. Nothing
//! acknowledged may be lost, nothing answered twice; and a channel without
//! idempotency would see a counted, reported number of duplicate sends.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use crate::common::loopback;

use crate::common::botapi;

use std::collections::BTreeMap;
use std::time::Duration;

use botapi::BotApiServer;
use common::{TestWorkspace, guest, wait_for};
use loopback::LoopbackServer;

const MESSAGES: usize = 10_000;
const KILLS: usize = 10;
/// Send lanes of the channel (`limits.concurrent_sends`).
const LANES: usize = 4;

/// A small deterministic generator for the kill points (the seed is printed
/// so a failure can be replayed with KATA_TEST_SEED).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// A workspace running `guest-loopback` against `server` on [`LANES`] send
/// lanes, with the rate limits out of the way.
fn loopback_workspace(server: &LoopbackServer) -> TestWorkspace {
    TestWorkspace::new(&format!(
        r#"
[plugins.loop]
path = "{wasm}"
network = ["{base}"]
config = {{ base = "{base}" }}
allow_from = ["*"]
limits = {{ requests_per_minute = 10000000, messages_per_minute = 10000000, concurrent_sends = {LANES} }}
"#,
        wasm = guest("guest-loopback").display(),
        base = server.base()
    ))
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_answers_nothing_twice() {
    let server = LoopbackServer::start(MESSAGES, 50, |_| Duration::ZERO);
    let ws = loopback_workspace(&server);
    let seed = std::env::var("KATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("kill points from seed {seed} (KATA_TEST_SEED={seed} replays them)");
    let mut rng = Rng(seed);
    let db_path = ws.path().join(".kata/kata.db");

    let mut progress = Vec::new();
    for _ in 0..KILLS {
        // Let it get going, then kill it somewhere in its work.
        let mut daemon = ws.run_ready(&[]);
        std::thread::sleep(Duration::from_millis(100 + rng.next() % 1500));
        daemon.signal_and_wait("KILL");
        progress.push(server.delivered());
    }
    eprintln!("delivered after each kill: {progress:?}");

    // A last run finishes the stream (ready before the TERM below: the
    // killed runs may have answered everything).
    let mut daemon = ws.run_ready(&[]);
    wait_for("every message to be answered", Duration::from_secs(300), || (server.delivered() >= MESSAGES).then_some(()));
    // Give a duplicate, if any were coming, the chance to show up.
    let db = kata::store::Db::open(&db_path).unwrap();
    wait_for("the outbox to drain", Duration::from_secs(60), || (db.counts().ok()?.outbox_pending == 0).then_some(()));
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());

    let deliveries = server.deliveries();
    // The plugin's requests reuse kept-open connections (the sandbox's
    // per-plugin pool): a handful per daemon run, not one per request.
    let requests = server.polls() as usize + deliveries.iter().map(|d| d.sends as usize).sum::<usize>();
    eprintln!("{requests} polls and sends over {} connections", server.connections());
    assert!(server.connections() * 10 < requests, "{requests} requests took {} connections", server.connections());
    let mut per_message: BTreeMap<usize, u32> = BTreeMap::new();
    for d in &deliveries {
        *per_message.entry(d.answers.expect("every reply echoes its message")).or_default() += 1;
    }
    let lost: Vec<usize> = (0..MESSAGES).filter(|i| !per_message.contains_key(i)).collect();
    let answered_twice: Vec<usize> = per_message.iter().filter(|(_, n)| **n > 1).map(|(i, _)| *i).collect();
    let duplicate_sends: u32 = deliveries.iter().map(|d| d.sends - 1).sum();
    let c = db.counts().unwrap();
    eprintln!(
        "{MESSAGES} messages, {KILLS} SIGKILLs: {} lost, {} answered twice; inbox {} rows; \
         duplicate sends an idempotent channel absorbed (a channel without idempotency would have shown them): {duplicate_sends}",
        lost.len(),
        answered_twice.len(),
        c.inbox_done + c.inbox_new
    );
    assert!(lost.is_empty(), "messages never answered: {} (first {:?})", lost.len(), &lost[..lost.len().min(10)]);
    assert!(answered_twice.is_empty(), "messages answered under two keys: {answered_twice:?}");
    assert_eq!(c.inbox_done as usize, MESSAGES, "each message is in the inbox exactly once");
    assert_eq!(c.outbox_sent as usize, MESSAGES);
    // Each send lane has at most one send whose delivery is not yet
    // recorded (it waits for the record before its next send), so a kill
    // repeats at most one send per lane.
    assert!(duplicate_sends as usize <= KILLS * LANES, "{duplicate_sends} duplicate sends for {KILLS} kills and {LANES} lanes");
}

/// Without any crash, every reply goes out exactly once, whatever the timing
/// of the delivery records committed in the background. The egress loop is
/// paused between reading the outbox and picking what to send
/// (`KATA_FAULT_PAUSE`, debug builds only), which is where a reply whose
/// record was committed meanwhile used to pass as unsent and go out twice.
#[test]
fn several_lanes_send_each_reply_once_without_a_crash() {
    const N: usize = 1500;
    let server = LoopbackServer::start(N, 40, |_| Duration::ZERO);
    let ws = loopback_workspace(&server);
    let mut daemon = ws.run(&[("KATA_FAULT_PAUSE", "egress-read:30")]);
    wait_for("every message to be answered", Duration::from_secs(240), || (server.delivered() >= N).then_some(()));
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    wait_for("the outbox to drain", Duration::from_secs(60), || (db.counts().ok()?.outbox_pending == 0).then_some(()));
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    let twice: Vec<_> = server.deliveries().into_iter().filter(|d| d.sends > 1).collect();
    assert!(twice.is_empty(), "{} replies were sent more than once without any crash: {:?}", twice.len(), &twice[..twice.len().min(5)]);
    assert_eq!(db.counts().unwrap().outbox_sent as usize, N);
}

/// The Telegram plugin against a Bot API server that keeps each update
/// until a later `offset` confirms it (the real rule), 20 users writing at
/// once over four send lanes, with a graceful stop in the middle of the load:
/// every message is answered, and exactly once.
#[test]
fn telegram_offset_rule_soak_answers_every_message_exactly_once() {
    const USERS: i64 = 20;
    const EACH: usize = 40;
    let token = "4242:offset-rule";
    let server = BotApiServer::start(token);
    let ws = TestWorkspace::new(&server.plugin_toml(
        &guest("telegram"),
        &format!(
            "allow_from = [\"*\"]\nlimits = {{ concurrent_sends = {LANES}, messages_per_minute = 100000, requests_per_minute = 100000 }}"
        ),
    ));
    let env = [("TG_TEST_TOKEN", token), ("KATA_FAULT_PAUSE", "egress-read:30")];
    let text = |user: i64, i: usize| format!("u{user} says {i}");
    let mut daemon = ws.run_ready(&env);
    // Users write while the daemon runs; halfway, while replies are going
    // out, it is stopped gracefully (SIGTERM) and started again, with
    // messages still coming in.
    for i in 0..EACH {
        for user in 1..=USERS {
            server.user_says(user, &text(user, i));
        }
        std::thread::sleep(Duration::from_millis(20));
        if i == EACH / 2 {
            wait_for("replies to be going out", Duration::from_secs(60), || (server.sent().len() >= 50).then_some(()));
            assert!(daemon.signal_and_wait("TERM").success(), "graceful stop failed: {}", ws.log());
            daemon = ws.run_ready(&env);
        }
    }
    let total = USERS as usize * EACH;
    wait_for("every message to be answered", Duration::from_secs(180), || (server.sent().len() >= total).then_some(()));
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    wait_for("the outbox to drain", Duration::from_secs(60), || (db.counts().ok()?.outbox_pending == 0).then_some(()));
    wait_for("the last offset to be confirmed", Duration::from_secs(30), || (server.unconfirmed() == 0).then_some(()));
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());

    let mut count: BTreeMap<(i64, String), usize> = BTreeMap::new();
    for s in server.sent() {
        *count.entry((s.chat_id, s.text)).or_default() += 1;
    }
    let missing: Vec<_> =
        (1..=USERS).flat_map(|u| (0..EACH).map(move |i| (u, i))).filter(|(u, i)| !count.contains_key(&(*u, text(*u, *i)))).collect();
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!("{total} messages, {} replies, {} getUpdates answers repeated an update", server.sent().len(), server.redelivered());
    assert!(missing.is_empty(), "never answered: {missing:?}");
    assert!(twice.is_empty(), "answered more than once: {twice:?}");
    assert_eq!(server.sent().len(), total);
}
