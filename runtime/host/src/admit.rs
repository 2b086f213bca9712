//! What a plugin hands the host — messages it polled or emitted, frames it
//! asks to be written — checked against its limits: ids refused when too
//! long, the rest cut or dropped, and what was done logged, audited and
//! counted once per batch (see [`crate::limits`] for the counters and cutting).

use crate::audit::{Event, Kind, Verdict};
use crate::host::latest::Message;
use crate::limits::{ID_LIMIT, MAX_ID, hit, size_text};
use crate::policy::Limits;
use crate::sandbox::PluginSandbox;

/// Why a message was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No id or no conversation.
    Missing,
    /// An id-like field over [`MAX_ID`]: `field` and its length.
    IdTooLong(&'static str, usize),
}

/// Refuse a message whose id, conversation, sender or thread is missing or
/// over [`MAX_ID`]. Looks at lengths only.
pub fn check_ids(m: &Message) -> Result<(), Refusal> {
    if m.id.is_empty() || m.conversation.is_empty() {
        return Err(Refusal::Missing);
    }
    for (field, len) in [
        ("id", m.id.len()),
        ("conversation", m.conversation.len()),
        ("sender", m.sender.len()),
        ("thread", m.thread.as_ref().map_or(0, String::len)),
    ] {
        if len > MAX_ID {
            return Err(Refusal::IdTooLong(field, len));
        }
    }
    Ok(())
}

/// What the bounds did to the messages of one poll, frame, or tick, so it
/// is logged, audited and counted once per batch rather than per message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Messages whose text was cut, `raw` dropped, or attachments dropped (`max_message`).
    pub cut: u64,
    /// The largest such field, in bytes, as the plugin handed it in.
    pub largest: usize,
    /// Messages refused for an over-long id, conversation, sender or thread.
    pub bad_ids: u64,
    /// The first such field and its length.
    pub bad_id: Option<(&'static str, usize)>,
    /// Messages refused because the batch was over `max_poll_bytes`.
    pub over_batch: u64,
    /// Messages refused without an id or conversation.
    pub missing: u64,
}

impl Tally {
    /// Whether nothing was cut or refused.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Note one refusal.
    pub fn refused(&mut self, r: Refusal) {
        match r {
            Refusal::Missing => self.missing += 1,
            Refusal::IdTooLong(field, len) => {
                self.bad_ids += 1;
                self.bad_id.get_or_insert((field, len));
            }
        }
    }

    /// Log, audit and count what happened to the messages `plugin` handed in
    /// through `place` ("poll", "frame", "emit"): one log line and one audit
    /// row per limit, whatever the number of messages.
    pub fn report(&self, sandbox: &PluginSandbox, place: &str) {
        if self.is_empty() {
            return;
        }
        let plugin = &*sandbox.grants().name;
        let l = &sandbox.grants().limits;
        let audit = |limit: &'static str, n: u64, policy: String, detail: String| {
            hit(plugin, limit, n);
            sandbox
                .auditor()
                .record(Event::new(Kind::Limit, Verdict::Deny).target(format!("{place} message")).policy(policy).detail(detail));
        };
        if self.missing > 0 {
            tracing::warn!(plugin = %plugin, "dropping {} message(s) without id or conversation from a {place}", self.missing);
        }
        if self.cut > 0 {
            audit(
                "max_message",
                self.cut,
                format!("limits = {{ max_message = \"{}\" }}", size_text(l.max_message_bytes)),
                format!(
                    "{} message(s) from a {place} were cut to limits.max_message ({} bytes; largest field {} bytes): \
                     text cut with a marker, raw, attachments or names over the limit dropped",
                    self.cut, l.max_message_bytes, self.largest
                ),
            );
        }
        if self.bad_ids > 0 {
            let (field, len) = self.bad_id.unwrap_or(("id", 0));
            audit(
                ID_LIMIT,
                self.bad_ids,
                format!("ids, conversations, senders and threads are at most {MAX_ID} bytes"),
                format!(
                    "{} message(s) from a {place} refused: a {field} of {len} bytes is over the {MAX_ID}-byte limit for ids \
                     (a cut id would name another message)",
                    self.bad_ids
                ),
            );
        }
        if self.over_batch > 0 {
            audit(
                "max_poll_bytes",
                self.over_batch,
                format!("limits = {{ max_poll_bytes = \"{}\" }}", size_text(l.max_poll_bytes.saturating_mul(2))),
                format!(
                    "{} message(s) from a {place} refused: together over limits.max_poll_bytes ({} bytes)",
                    self.over_batch, l.max_poll_bytes
                ),
            );
        }
    }
}

/// Check frames a plugin asks the host to write (`send-receipt.frames`,
/// `on-frame` replies): together at most `max_poll_bytes`. A single frame
/// may be longer than `max_message` — a reply the agent wrote can be, and the
/// plugin is not at fault for it. Looks at lengths only; the error names the
/// limit and is the plugin's fault.
pub fn check_frames<'f>(
    frames: impl IntoIterator<Item = &'f crate::host::latest::Frame>,
    l: &Limits,
) -> Result<(), (&'static str, String)> {
    use crate::host::latest::Frame;
    let mut total = 0usize;
    for f in frames {
        total += match f {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        };
        if total > l.max_poll_bytes {
            return Err((
                "max_poll_bytes",
                format!("frames of more than {total} bytes in one call are over limits.max_poll_bytes ({} bytes)", l.max_poll_bytes),
            ));
        }
    }
    Ok(())
}

/// A plain direct message (for tests, here and in the crates above).
pub fn test_message(id: &str, conversation: &str, sender: &str, text: &str) -> Message {
    Message {
        id: id.into(),
        conversation: conversation.into(),
        thread: None,
        sender: sender.into(),
        sender_name: None,
        text: text.into(),
        attachments: vec![],
        timestamp_ms: 0,
        raw: None,
        conversation_kind: crate::host::latest::ConversationKind::Direct,
        mentioned: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_over_the_limit_refuse_the_message() {
        let mut m = test_message("1", "c", "s", "hi");
        assert_eq!(check_ids(&m), Ok(()));
        m.thread = Some("t".repeat(MAX_ID + 1));
        assert_eq!(check_ids(&m), Err(Refusal::IdTooLong("thread", MAX_ID + 1)));
        m.thread = None;
        m.id = "i".repeat(MAX_ID);
        assert_eq!(check_ids(&m), Ok(()));
        m.id.push('i');
        assert_eq!(check_ids(&m), Err(Refusal::IdTooLong("id", MAX_ID + 1)));
        m.id.clear();
        assert_eq!(check_ids(&m), Err(Refusal::Missing));
    }

    #[test]
    fn frames_to_write_are_bounded_together() {
        use crate::host::latest::Frame;
        let l = Limits { max_message_bytes: 256, max_poll_bytes: 1000, ..Limits::default() };
        let f = |n: usize| Frame::Text("x".repeat(n));
        assert!(check_frames(&[f(500), f(500)], &l).is_ok(), "frames longer than max_message are fine");
        assert_eq!(check_frames(&[f(500), f(500), f(1)], &l).expect_err("refused").0, "max_poll_bytes");
        assert_eq!(check_frames(&[Frame::Binary(vec![0; 1001])], &l).expect_err("refused").0, "max_poll_bytes");
        assert!(check_frames(&[], &l).is_ok());
    }
}
