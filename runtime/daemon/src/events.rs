//! The daemon's event stream: every log event the daemon writes is also kept
//! in a short ring buffer and broadcast, so `kata logs [-f]` can show recent
//! history and follow along through the control socket.
//!
//! It is a [`tracing`] layer, so nothing in the daemon has to know about it:
//! whatever is logged (and passes the log filter) is an event.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use crate::store::now_ms;

/// Events kept for clients that connect later.
const BACKLOG: usize = 1000;
/// Events a slow follower may fall behind before it misses some.
const CHANNEL: usize = 4096;

/// One log event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When (ms since the Unix epoch).
    pub ts_ms: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message.
    pub message: String,
    /// Structured fields (`plugin`, `outbox`, …), as text.
    #[serde(default)]
    pub fields: Vec<(String, String)>,
}

impl Event {
    /// The event as one human-readable line.
    pub fn human(&self) -> String {
        let mut line = format!("{} {:>5} {}", format_ts(self.ts_ms), self.level, self.message);
        for (k, v) in &self.fields {
            let _ = write!(line, " {k}={v}");
        }
        line
    }
}

/// `HH:MM:SS.mmm` (UTC) of a timestamp.
fn format_ts(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", (s / 3600) % 24, (s / 60) % 60, s % 60, ms % 1000)
}

/// The broadcast of daemon events, with a backlog of the most recent ones.
#[derive(Debug, Clone)]
pub struct Events {
    backlog: Arc<Mutex<VecDeque<Arc<Event>>>>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// An empty stream.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL);
        Self { backlog: Arc::new(Mutex::new(VecDeque::with_capacity(BACKLOG))), tx }
    }

    /// Publish one event.
    pub fn publish(&self, e: Event) {
        let e = Arc::new(e);
        {
            let mut b = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
            if b.len() == BACKLOG {
                b.pop_front();
            }
            b.push_back(e.clone());
        }
        let _ = self.tx.send(e);
    }

    /// The last `n` events and a receiver for the ones after them. Taken
    /// under the backlog's lock, so no event falls between the two.
    pub fn subscribe(&self, n: usize) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let b = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let skip = b.len().saturating_sub(n);
        (b.iter().skip(skip).cloned().collect(), rx)
    }

    /// A tracing layer that publishes every event to this stream.
    pub fn layer(&self) -> EventLayer {
        EventLayer { events: self.clone() }
    }
}

/// The [`tracing_subscriber::Layer`] behind [`Events::layer`].
#[derive(Debug)]
pub struct EventLayer {
    events: Events,
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields.push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        if field.name() == "message" {
            self.message.push_str(&v);
        } else {
            self.fields.push((field.name().to_string(), v));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for EventLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut f = Fields::default();
        event.record(&mut f);
        self.events.publish(Event {
            ts_ms: now_ms(),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message: f.message,
            fields: f.fields,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn logged_events_are_kept_and_broadcast() {
        let events = Events::new();
        let (_, mut rx) = events.subscribe(0);
        let subscriber = tracing_subscriber::registry().with(events.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(plugin = "telegram", outbox = 7, "sent");
            tracing::warn!("poll failed: {}", "network down");
        });
        let (backlog, _) = events.subscribe(10);
        assert_eq!(backlog.len(), 2);
        assert_eq!(backlog[0].message, "sent");
        assert_eq!(backlog[0].fields, vec![("plugin".to_string(), "telegram".to_string()), ("outbox".to_string(), "7".to_string())]);
        assert_eq!(backlog[1].level, "WARN");
        assert_eq!(backlog[1].message, "poll failed: network down");
        assert!(backlog[1].human().ends_with(" WARN poll failed: network down"), "{}", backlog[1].human());
        assert_eq!(rx.try_recv().expect("broadcast").message, "sent");
        // Only the last n are replayed.
        assert_eq!(events.subscribe(1).0[0].message, "poll failed: network down");
    }

    #[test]
    fn the_backlog_is_bounded() {
        let events = Events::new();
        for i in 0..BACKLOG + 10 {
            events.publish(Event { ts_ms: 0, level: "INFO".into(), target: "t".into(), message: i.to_string(), fields: vec![] });
        }
        let (b, _) = events.subscribe(usize::MAX);
        assert_eq!(b.len(), BACKLOG);
        assert_eq!(b[0].message, "10");
    }
}
