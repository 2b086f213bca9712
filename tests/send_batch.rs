//! The optional `channel-batch` export (`send-batch`): a send lane with
//! several replies due for a channel that exports it sends them in one call,
//! each with its own result. A message the channel refuses is retried alone;
//! a channel that answers `unsupported` is sent to one message at a time.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use crate::common::loopback;

use std::time::Duration;

use common::{TestWorkspace, guest, wait_for};
use loopback::LoopbackServer;

/// A workspace running `guest-loopback` against `server` on one send lane
/// (so every due reply is in that lane's share), `batch = "on"` or not.
fn workspace(server: &LoopbackServer, batch: bool) -> TestWorkspace {
    TestWorkspace::new(&format!(
        r#"
[plugins.loop]
path = "{wasm}"
network = ["{base}"]
config = {{ base = "{base}", batch = "{batch}" }}
allow_from = ["*"]
limits = {{ requests_per_minute = 10000000, messages_per_minute = 10000000, concurrent_sends = 1 }}
"#,
        wasm = guest("guest-loopback").display(),
        base = server.base(),
        batch = if batch { "on" } else { "off" },
    ))
}

/// Run the daemon until all `n` messages are answered and the outbox is
/// empty; returns each reply's text with its delivery attempts.
fn run_until_answered(ws: &TestWorkspace, server: &LoopbackServer, n: usize) -> Vec<(String, u32)> {
    let mut daemon = ws.run_ready(&[]);
    // Everything is released at once: the lane has all of it due together.
    server.begin();
    wait_for("every message to be answered", Duration::from_secs(60), || (server.delivered() >= n).then_some(()));
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    wait_for("the outbox to drain", Duration::from_secs(30), || (db.counts().ok()?.outbox_pending == 0).then_some(()));
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    let conn = db.lock();
    let mut stmt = conn.prepare("SELECT text, attempts FROM outbox WHERE status = 'sent' ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

#[test]
fn a_batch_with_one_failing_message_retries_only_that_one() {
    const N: usize = 40;
    let server = LoopbackServer::start_paused(N, 4, |_| Duration::ZERO);
    server.fail_next(&["m7"]);
    let ws = workspace(&server, true);
    let sent = run_until_answered(&ws, &server, N);

    assert!(server.batches() >= 1, "no send-batch request was made: {}", ws.log());
    // Sent in batches: far fewer requests than replies.
    assert!((server.batches() as usize) < N / 2, "{} batch requests for {N} replies", server.batches());
    assert_eq!(server.refused().get("m7"), Some(&1), "m7 is refused once: {:?}", server.refused());
    assert_eq!(server.refused().len(), 1, "{:?}", server.refused());
    // Each reply arrived once; only the refused one was sent again.
    let deliveries = server.deliveries();
    assert_eq!(deliveries.len(), N);
    let twice: Vec<_> = deliveries.iter().filter(|d| d.sends > 1).collect();
    assert!(twice.is_empty(), "replies sent more than once: {twice:?}");
    assert_eq!(sent.len(), N, "every reply recorded as sent");
    for (text, attempts) in &sent {
        let want = if text == "m7" { 2 } else { 1 };
        assert_eq!(*attempts, want, "{text} took {attempts} attempts");
    }
}

#[test]
fn a_channel_that_does_not_batch_now_is_sent_to_one_at_a_time() {
    const N: usize = 20;
    let server = LoopbackServer::start_paused(N, 4, |_| Duration::ZERO);
    let ws = workspace(&server, false);
    let sent = run_until_answered(&ws, &server, N);
    assert_eq!(server.batches(), 0);
    assert_eq!(sent.len(), N);
    assert!(sent.iter().all(|(_, a)| *a == 1), "{sent:?}");
    assert!(server.deliveries().iter().all(|d| d.sends == 1));
}

/// Killed (SIGKILL) at random points while replies go out in batches on
/// four lanes: nothing is lost, nothing is answered under two keys, and a
/// kill repeats at most the batch each lane had in flight.
#[test]
fn sigkill_while_sending_batches_loses_nothing() {
    const N: usize = 3000;
    const KILLS: usize = 3;
    const LANES: usize = 4;
    const MAX_BATCH: usize = 32;
    let server = LoopbackServer::start(N, 50, |_| Duration::ZERO);
    let ws = TestWorkspace::new(&format!(
        r#"
[plugins.loop]
path = "{wasm}"
network = ["{base}"]
config = {{ base = "{base}", batch = "on" }}
allow_from = ["*"]
limits = {{ requests_per_minute = 10000000, messages_per_minute = 10000000, concurrent_sends = {LANES} }}
"#,
        wasm = guest("guest-loopback").display(),
        base = server.base(),
    ));
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    eprintln!("kill delays from seed {seed}");
    for k in 0..KILLS {
        let mut daemon = ws.run_ready(&[]);
        std::thread::sleep(Duration::from_millis(50 + (seed.wrapping_mul(k as u64 + 7) % 400)));
        daemon.signal_and_wait("KILL");
    }
    // Ready before the TERM below: the killed runs may have answered everything.
    let mut daemon = ws.run_ready(&[]);
    wait_for("every message to be answered", Duration::from_secs(120), || (server.delivered() >= N).then_some(()));
    let db = kata::store::Db::open(&ws.path().join(".kata/kata.db")).unwrap();
    wait_for("the outbox to drain", Duration::from_secs(60), || (db.counts().ok()?.outbox_pending == 0).then_some(()));
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
    assert!(server.batches() > 0, "no batches were sent");
    let deliveries = server.deliveries();
    let mut answered = std::collections::BTreeMap::<usize, u32>::new();
    for d in &deliveries {
        *answered.entry(d.answers.expect("an echo")).or_default() += 1;
    }
    let lost = (0..N).filter(|i| !answered.contains_key(i)).count();
    let twice = answered.values().filter(|n| **n > 1).count();
    let repeated: u32 = deliveries.iter().map(|d| d.sends - 1).sum();
    eprintln!("{N} messages, {KILLS} kills, {} batches: {lost} lost, {twice} under two keys, {repeated} sends repeated", server.batches());
    assert_eq!((lost, twice), (0, 0));
    assert_eq!(db.counts().unwrap().outbox_sent as usize, N);
    assert!(repeated as usize <= KILLS * LANES * MAX_BATCH, "{repeated} repeated sends for {KILLS} kills");
}
