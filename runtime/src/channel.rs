//! Running one channel plugin: the ingress loop (poll → inbox) and the egress
//! loop (outbox → send), each with its own instance so a long poll never
//! delays a reply. Both restart their instance after a trap and back off on
//! errors, honouring the plugin's retry-after; neither ever busy-loops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tokio::sync::{Notify, watch};

use crate::host::latest::{ChannelError, Message, OutboundMessage};
use crate::plugin::{CallError, ChannelInstance, ChannelPlugin};
use crate::sandbox::PluginSandbox;
use crate::store::{Db, Inbound, now_ms};

/// The shortest pause after a poll that returned nothing.
const MIN_IDLE_POLL: Duration = Duration::from_millis(100);
/// Default pause after an empty poll, unless the plugin or `config.poll_interval` says otherwise.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Messages a single poll may return; more is treated as a plugin bug.
const MAX_MESSAGES_PER_POLL: usize = 1000;
/// Delivery attempts before a reply that fails permanently is given up.
const MAX_SEND_ATTEMPTS: u32 = 5;

/// Exponential backoff with jitter, from half a second up to five minutes.
fn backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(300))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The delay before retry number `attempt` (0-based).
fn retry_delay(attempt: u32) -> Duration {
    backoff().nth(attempt.min(20) as usize).unwrap_or(Duration::from_secs(300))
}

/// Sleep, or return early (true) when shutdown is requested.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}

/// Instantiate and connect. Errors are logged by the caller.
async fn start_instance(plugin: &ChannelPlugin) -> Result<ChannelInstance, CallError> {
    let mut inst = plugin.instantiate().await?;
    inst.connect().await?;
    Ok(inst)
}

/// The loop's instance, started (instantiated and connected) if there is
/// none. When starting fails it logs, waits out the backoff (or until
/// shutdown) and returns None; the caller's loop then checks for shutdown
/// and tries again.
async fn live_instance<'a>(
    slot: &'a mut Option<ChannelInstance>,
    plugin: &ChannelPlugin,
    role: &str,
    backoff: &mut backon::ExponentialBackoff,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<&'a mut ChannelInstance> {
    if slot.is_none() {
        match start_instance(plugin).await {
            Ok(i) => *slot = Some(i),
            Err(e) => {
                let d = error_delay(&e, backoff);
                tracing::warn!(plugin = %plugin.name(), "cannot start the {role} instance: {e}; retrying in {d:?}");
                sleep_or_shutdown(d, shutdown).await;
                return None;
            }
        }
    }
    slot.as_mut()
}

/// How long to wait after a failed call, and whether to say it loudly.
fn error_delay(e: &CallError, backoff: &mut backon::ExponentialBackoff) -> Duration {
    let next = backoff.next().unwrap_or(Duration::from_secs(300));
    match e {
        CallError::Channel(ChannelError::RateLimited(ms)) => Duration::from_millis(*ms).max(next.min(Duration::from_secs(1))),
        // Nothing will change until the user edits the workspace: retry slowly.
        CallError::Channel(ChannelError::AuthFailed(_) | ChannelError::InvalidConfig(_)) => next.max(Duration::from_secs(30)),
        _ => next,
    }
}

/// A polled message as the inbox stores it. Every text field passes the
/// plugin's secret scanner first: a secret value the plugin got hold of is
/// stored (and shown to the agent) as `[REDACTED:NAME]`, never as itself.
fn to_inbound(m: Message, sandbox: &PluginSandbox) -> Option<Inbound> {
    if m.id.is_empty() || m.conversation.is_empty() {
        return None;
    }
    let r = |s: String| match sandbox.redact(&s, "message") {
        std::borrow::Cow::Borrowed(_) => s,
        std::borrow::Cow::Owned(o) => o,
    };
    let attachments: Vec<serde_json::Value> = m
        .attachments
        .into_iter()
        .map(|a| serde_json::json!({"name": r(a.name), "mime_type": a.mime_type, "url": a.url.map(r), "size": a.size}))
        .collect();
    Some(Inbound {
        channel_msg_id: r(m.id),
        conversation: r(m.conversation),
        thread: m.thread.map(r),
        sender: r(m.sender),
        sender_name: m.sender_name.map(r),
        text: r(m.text),
        attachments_json: serde_json::Value::Array(attachments).to_string(),
        timestamp_ms: m.timestamp_ms,
        raw: m.raw.map(r),
    })
}

/// How long to wait before the next poll. Straight away only when the poll
/// brought something new (there may be more); otherwise the plugin's wish or
/// `poll_interval`, and never less than [`MIN_IDLE_POLL`] after a quick poll —
/// so a plugin that returns the same messages over and over cannot spin.
fn idle_delay(next_poll_ms: Option<u32>, new: usize, poll_interval: Duration, took: Duration) -> Duration {
    let wanted = match next_poll_ms {
        Some(ms) => Duration::from_millis(ms.into()),
        None if new == 0 => poll_interval,
        None => Duration::ZERO,
    };
    if new == 0 { wanted.max(MIN_IDLE_POLL.saturating_sub(took)) } else { wanted }
}

/// Poll the channel until shutdown, storing messages and cursor together.
pub async fn ingress(plugin: Arc<ChannelPlugin>, db: Db, inbox_ready: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let name = plugin.name().to_string();
    let poll_interval = plugin
        .grants
        .config
        .get("poll_interval")
        .and_then(|s| crate::policy::parse_duration(s).ok())
        .unwrap_or(DEFAULT_POLL_INTERVAL);
    let mut backoff = backoff();
    let mut instance: Option<ChannelInstance> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let Some(inst) = live_instance(&mut instance, &plugin, "poll", &mut backoff, &mut shutdown).await else {
            continue;
        };
        let cursor = match db.cursor(&name) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(plugin = %name, "cannot read the poll cursor: {e:#}");
                if sleep_or_shutdown(retry_delay(3), &mut shutdown).await {
                    break;
                }
                continue;
            }
        };
        let started = Instant::now();
        let result = tokio::select! {
            r = inst.poll(cursor.as_deref()) => r,
            // A poll may wait a long time for messages; abandon it on shutdown.
            // Nothing is lost: the cursor only moves when a result is stored.
            _ = shutdown.changed() => { instance = None; break; }
        };
        let delay = match result {
            Ok(res) => {
                backoff = self::backoff();
                let got = res.messages.len();
                if got > MAX_MESSAGES_PER_POLL {
                    tracing::warn!(plugin = %name, "poll returned {got} messages (limit {MAX_MESSAGES_PER_POLL}); ignoring this result");
                    Duration::from_secs(1)
                } else {
                    let messages: Vec<Inbound> = res
                        .messages
                        .into_iter()
                        .filter_map(|m| {
                            let id = m.id.clone();
                            let r = to_inbound(m, plugin.sandbox());
                            if r.is_none() {
                                tracing::warn!(plugin = %name, "dropping a message without id or conversation ({id:?})");
                            }
                            r
                        })
                        .collect();
                    let new = match db.record_poll(&name, &messages, res.cursor.as_deref()) {
                        Ok(new) => {
                            tracing::debug!(plugin = %name, got, new, cursor = ?res.cursor, "poll");
                            if new > 0 {
                                inbox_ready.notify_one();
                            }
                            new
                        }
                        Err(e) => {
                            tracing::error!(plugin = %name, "cannot store polled messages: {e:#}");
                            0
                        }
                    };
                    idle_delay(res.next_poll_ms, new, poll_interval, started.elapsed())
                }
            }
            Err(e) => {
                if e.breaks_instance() {
                    instance = None;
                }
                let d = error_delay(&e, &mut backoff);
                tracing::warn!(plugin = %name, "poll failed: {e}; retrying in {d:?}");
                d
            }
        };
        if sleep_or_shutdown(delay, &mut shutdown).await {
            break;
        }
    }
    if let Some(mut i) = instance {
        i.disconnect().await;
    }
    tracing::debug!(plugin = %name, "ingress stopped");
}

/// Deliver this plugin's outbox until shutdown.
pub async fn egress(plugin: Arc<ChannelPlugin>, db: Db, outbox_ready: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let name = plugin.name().to_string();
    let mut backoff = backoff();
    let mut instance: Option<ChannelInstance> = None;
    'outer: loop {
        if *shutdown.borrow() {
            break;
        }
        let due = match db.due_outbox(&name, now_ms(), 50) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(plugin = %name, "cannot read the outbox: {e:#}");
                if sleep_or_shutdown(retry_delay(3), &mut shutdown).await {
                    break;
                }
                continue;
            }
        };
        if due.is_empty() {
            let wait = match db.next_outbox_due(&name) {
                Ok(Some(t)) => Duration::from_millis(t.saturating_sub(now_ms())).max(Duration::from_millis(10)),
                _ => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = outbox_ready.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
            continue;
        }
        let Some(inst) = live_instance(&mut instance, &plugin, "send", &mut backoff, &mut shutdown).await else {
            continue;
        };
        for row in due {
            if *shutdown.borrow() {
                break 'outer;
            }
            let msg = OutboundMessage {
                conversation: row.conversation.clone(),
                thread: row.thread.clone(),
                reply_to: row.reply_to.clone(),
                text: row.text.clone(),
                idempotency_key: row.idempotency_key.clone(),
            };
            // An in-flight send is never abandoned for shutdown: the call is
            // bounded by call_timeout, and abandoning it could send twice.
            let result = inst.send(&msg).await;
            let stored = match result {
                Ok(receipt) => {
                    backoff = self::backoff();
                    tracing::info!(plugin = %name, outbox = row.id, receipt = %receipt.id, "sent");
                    db.mark_sent(row.id, &receipt.id)
                }
                Err(e) => {
                    let permanent = matches!(
                        e,
                        CallError::Channel(
                            ChannelError::AuthFailed(_)
                                | ChannelError::InvalidConfig(_)
                                | ChannelError::Unsupported
                                | ChannelError::Fatal(_)
                        )
                    );
                    let breaks = e.breaks_instance();
                    let r = if permanent && row.attempts + 1 >= MAX_SEND_ATTEMPTS {
                        tracing::error!(plugin = %name, outbox = row.id, "giving up on a reply after {} attempts: {e}", row.attempts + 1);
                        db.mark_failed(row.id, &e.to_string())
                    } else {
                        let d = match &e {
                            CallError::Channel(ChannelError::RateLimited(ms)) => Duration::from_millis(*ms),
                            _ => retry_delay(row.attempts),
                        };
                        tracing::warn!(plugin = %name, outbox = row.id, "send failed: {e}; retrying in {d:?}");
                        db.mark_retry(row.id, &e.to_string(), now_ms() + d.as_millis() as u64)
                    };
                    if breaks {
                        instance = None;
                    }
                    if let Err(err) = r {
                        tracing::error!(plugin = %name, "cannot record a delivery result: {err:#}");
                    }
                    // Stop this batch: the channel is unhappy; due rows come back later.
                    continue 'outer;
                }
            };
            if let Err(e) = stored {
                tracing::error!(plugin = %name, "cannot record a delivery: {e:#}");
            }
        }
    }
    if let Some(mut i) = instance {
        i.disconnect().await;
    }
    tracing::debug!(plugin = %name, "egress stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_are_capped() {
        let first = retry_delay(0);
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(2), "{first:?}");
        assert!(retry_delay(6) >= Duration::from_secs(16));
        assert!(retry_delay(1000) <= Duration::from_secs(600));
    }

    #[test]
    fn polls_only_back_to_back_while_something_new_arrives() {
        let second = Duration::from_secs(1);
        assert_eq!(idle_delay(None, 3, second, Duration::ZERO), Duration::ZERO);
        assert_eq!(idle_delay(None, 0, second, Duration::ZERO), second);
        // A plugin asking for no pause but bringing nothing new still waits.
        assert_eq!(idle_delay(Some(0), 0, second, Duration::ZERO), MIN_IDLE_POLL);
        // ...unless the poll itself took that long (a long poll).
        assert_eq!(idle_delay(Some(0), 0, second, Duration::from_secs(25)), Duration::ZERO);
        assert_eq!(idle_delay(Some(250), 2, second, Duration::ZERO), Duration::from_millis(250));
    }

    #[test]
    fn rate_limit_is_honoured() {
        let mut b = backoff();
        let d = error_delay(&CallError::Channel(ChannelError::RateLimited(7000)), &mut b);
        assert!(d >= Duration::from_millis(7000));
        let d = error_delay(&CallError::Channel(ChannelError::AuthFailed("no".into())), &mut b);
        assert!(d >= Duration::from_secs(30));
    }
}
