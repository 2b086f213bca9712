//! # kata-redact: mask card and phone numbers in the agent's replies
//!
//! A hook plugin (world `hook-plugin` of `kata:plugin@0.1.3`). At
//! `message-sending` it rewrites a reply so that
//!
//! - a **card number** — 13 to 19 digits, in groups separated by single
//!   spaces or dashes, that passes the Luhn check — keeps only its last four
//!   digits: `4111 1111 1111 1111` → `**** **** **** 1111`;
//! - a **phone number** — 9 to 15 digits (7 to 15 after a leading `+`), in
//!   groups separated by spaces, dashes or parentheses — keeps only its last
//!   two: `+49 151 2345 6789` → `+** *** **** **89`.
//!
//! A reply with nothing to mask passes unchanged. With
//! `config = { received = "mask" }` it also masks messages before the agent
//! sees them (`message-received`), so the model never reads the numbers.
//!
//! ```toml
//! [hooks]
//! order = ["redact"]
//!
//! [plugins.redact]
//! path = "…/redact.wasm"
//! hook = { budget = "50ms", on_failure = "hold" }   # a reply it cannot check is not sent
//! ```
//!
//! The masking is a plain function ([`mask`]), tested natively with `cargo test`.

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/v0.1.3", world: "kata:plugin/hook-plugin" });
}

use bindings::exports::kata::plugin::hooks::{Guest, HookPoint, InboundVerdict, OutboundVerdict, ToolCall, ToolVerdict};
use bindings::kata::plugin::host;
use bindings::kata::plugin::types::{Message, OutboundMessage};

/// What replaces a masked digit.
pub const MASK: char = '*';

/// Separators allowed between the digit groups of a number.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '(' | ')')
}

/// The Luhn check over `digits` (ASCII digits only).
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// What a run of digits is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Card,
    Phone,
}

/// Classify one candidate (`text` starts with `+`, `(` or a digit and ends
/// with a digit).
fn classify(text: &str) -> Option<Kind> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_digit).collect();
    let plus = text.starts_with('+');
    let card_separators = text.chars().all(|c| c.is_ascii_digit() || c == ' ' || c == '-');
    if !plus && card_separators && (13..=19).contains(&digits.len()) && luhn(&digits) {
        return Some(Kind::Card);
    }
    let min = if plus { 7 } else { 9 };
    (min..=15).contains(&digits.len()).then_some(Kind::Phone)
}

/// The candidates in `text`: byte ranges of runs that start with `+`, `(`
/// or a digit, continue with digits and at most two separators in a row,
/// end with a digit, and touch no letter or digit on either side.
fn candidates(text: &str) -> Vec<(usize, usize)> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (start, c) = chars[i];
        let opens = c.is_ascii_digit() || ((c == '+' || c == '(') && chars.get(i + 1).is_some_and(|(_, n)| n.is_ascii_digit()));
        let boundary = i == 0 || !chars[i - 1].1.is_alphanumeric();
        if !opens || !boundary {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        let mut last_digit = if c.is_ascii_digit() { Some(i) } else { None };
        let mut run = 0;
        while j < chars.len() {
            let ch = chars[j].1;
            if ch.is_ascii_digit() {
                last_digit = Some(j);
                run = 0;
            } else if is_separator(ch) && run < 2 {
                run += 1;
            } else {
                break;
            }
            j += 1;
        }
        let Some(end) = last_digit else {
            i += 1;
            continue;
        };
        // A digit run glued to a letter (`abc123`, `123abc`) is not a number.
        let after = chars.get(end + 1).map(|(_, ch)| *ch);
        if after.is_some_and(char::is_alphanumeric) {
            i = end + 1;
            continue;
        }
        let end_byte = chars.get(end + 1).map_or(text.len(), |(b, _)| *b);
        out.push((start, end_byte));
        i = end + 1;
    }
    out
}

/// `text` with every card number and phone number in it masked (see the
/// crate docs). Returns None when there is nothing to mask.
pub fn mask(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    let mut changed = false;
    for (start, end) in candidates(text) {
        let run = &text[start..end];
        let keep = match classify(run) {
            Some(Kind::Card) => 4,
            Some(Kind::Phone) => 2,
            None => continue,
        };
        let total = run.bytes().filter(u8::is_ascii_digit).count();
        out.push_str(&text[done..start]);
        let mut seen = 0;
        for ch in run.chars() {
            if ch.is_ascii_digit() {
                seen += 1;
                out.push(if seen + keep > total { ch } else { MASK });
            } else {
                out.push(ch);
            }
        }
        done = end;
        changed = true;
    }
    if !changed {
        return None;
    }
    out.push_str(&text[done..]);
    Some(out)
}

/// Whether kata.toml asks for received messages to be masked too.
fn mask_received() -> bool {
    host::config_get("received").is_some_and(|v| v.trim() == "mask")
}

struct Redact;

impl Guest for Redact {
    fn points() -> Vec<HookPoint> {
        let mut p = vec![HookPoint::MessageSending];
        if mask_received() {
            p.push(HookPoint::MessageReceived);
        }
        p
    }

    fn message_received(_channel: String, message: Message) -> Result<InboundVerdict, String> {
        Ok(match mask(&message.text) {
            Some(text) => InboundVerdict::Rewrite(Message { text, ..message }),
            None => InboundVerdict::Pass,
        })
    }

    fn message_sending(_channel: String, message: OutboundMessage) -> Result<OutboundVerdict, String> {
        Ok(match mask(&message.text) {
            Some(text) => OutboundVerdict::Rewrite(OutboundMessage { text, ..message }),
            None => OutboundVerdict::Pass,
        })
    }

    fn before_tool_call(_call: ToolCall) -> Result<ToolVerdict, String> {
        Ok(ToolVerdict::Allow)
    }
}

bindings::export!(Redact with_types_in bindings);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_real_test_numbers_only() {
        for n in ["4111111111111111", "5500005555555559", "378282246310005", "6011111111111117", "4222222222222"] {
            assert!(luhn(n.as_bytes()), "{n}");
        }
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b""));
    }

    #[test]
    fn cards_keep_their_last_four_digits_and_their_layout() {
        assert_eq!(mask("card 4111 1111 1111 1111, thanks").as_deref(), Some("card **** **** **** 1111, thanks"));
        assert_eq!(mask("4111-1111-1111-1111").as_deref(), Some("****-****-****-1111"));
        assert_eq!(mask("amex 378282246310005.").as_deref(), Some("amex ***********0005."));
        assert_eq!(mask("19 digits 6011000000000000001 ok").as_deref(), Some("19 digits ***************0001 ok"));
    }

    #[test]
    fn a_number_failing_luhn_is_not_a_card() {
        // 16 digits, Luhn fails: too long for a phone number, so left alone.
        assert_eq!(mask("order 4111 1111 1111 1112 shipped"), None);
    }

    #[test]
    fn phone_numbers_keep_their_last_two_digits() {
        assert_eq!(mask("call +49 151 2345 6789 now").as_deref(), Some("call +** *** **** **89 now"));
        assert_eq!(mask("(555) 123-4567").as_deref(), Some("(***) ***-**67"));
        assert_eq!(mask("ring 0151234567").as_deref(), Some("ring ********67"));
        assert_eq!(mask("+1 555 0100").as_deref(), Some("+* *** **00"));
    }

    #[test]
    fn ordinary_numbers_pass() {
        for t in [
            "no numbers here",
            "on 2026-12-02 at 10:30",
            "3 cats and 4 dogs",
            "version 1.2.3, 192.168.1.10",
            "it costs 1 000 000",
            "abc4111111111111111 is glued to letters",
            "ticket #12345678",
        ] {
            assert_eq!(mask(t), None, "{t}");
        }
    }

    #[test]
    fn several_numbers_in_one_text_and_unicode_around_them() {
        assert_eq!(
            mask("Karte: 4111111111111111 — Telefon: +44 20 7946 0958 ✓").as_deref(),
            Some("Karte: ************1111 — Telefon: +** ** **** **58 ✓")
        );
    }
}
