//! What a mail means to kata and back: a received mail as a kata message
//! (id, conversation, thread, direct or group, mention, attachments, and
//! which mails to skip), and a reply as an RFC 5322 mail with threading
//! headers and a Message-ID derived from the outbox idempotency key.

use kata_sdk::{Attachment, ConversationKind, Message};
use serde_json::json;

use crate::mime::{self, Part};

/// The header kata puts on every mail it sends (with the outbox key): a
/// mail from kata's own address carrying it is kata's own and never inbound.
pub const KEY_HEADER: &str = "X-Kata-Idempotency-Key";

/// Who the bot is.
#[derive(Debug, Clone)]
pub struct Me {
    /// Its address, lower case (`From:` of what it sends).
    pub address: String,
    /// The name in its `From:` (and the word that mentions it in a group).
    pub name: String,
    /// Group addresses (aliases, lists) delivered to the bot's mailbox, lower case.
    pub groups: Vec<String>,
}

impl Me {
    /// The domain of the bot's address (for Message-IDs and EHLO).
    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map_or("localhost", |(_, d)| d)
    }

    /// Whether `id` is a Message-ID kata made (a reply to the bot).
    pub fn made(&self, id: &str) -> bool {
        id.starts_with("kata.") && id.ends_with(&format!("@{}", self.domain()))
    }
}

/// What kata keeps of a mail so that a reply can thread under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadInfo {
    /// The subject, decoded.
    pub subject: String,
    /// Its References (then its own id): what a reply's References holds.
    pub references: Vec<String>,
}

/// A received mail, read.
#[derive(Debug)]
pub enum Inbound {
    /// A message for kata, and what to remember for replies.
    Message(Box<Message>, ThreadInfo),
    /// Not for kata; the reason.
    Skip(String),
}

/// A stable 64-bit hash (FNV-1a) for ids that must survive a rebuilt mailbox.
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Read one mail. `received_ms` (INTERNALDATE) stands in for a missing Date.
pub fn inbound(raw: &[u8], received_ms: Option<u64>, me: &Me) -> Inbound {
    let part = mime::parse(raw);
    let Some(from) = part.header("from").and_then(|f| mime::addresses(f).into_iter().next()) else {
        return Inbound::Skip("no From address".into());
    };
    if from.address == me.address && part.header(KEY_HEADER).is_some() {
        return Inbound::Skip("sent by kata".into());
    }
    // RFC 3834: automatic mail (vacation replies, bounces, other bots) is
    // never answered, or two robots answer each other forever.
    if let Some(auto) = part.header("auto-submitted")
        && !auto.trim().eq_ignore_ascii_case("no")
    {
        return Inbound::Skip(format!("Auto-Submitted: {auto}"));
    }
    let own_id = part.header("message-id").and_then(|v| mime::message_ids(v).into_iter().next());
    let id = own_id.clone().unwrap_or_else(|| format!("sha.{:016x}", fnv64(raw)));
    let references: Vec<String> = part.header("references").map(mime::message_ids).unwrap_or_default();
    let in_reply_to = part.header("in-reply-to").and_then(|v| mime::message_ids(v).into_iter().next());
    let thread = references.first().cloned().or_else(|| in_reply_to.clone()).unwrap_or_else(|| id.clone());
    let subject = part.decoded("subject").unwrap_or_default().trim().to_string();

    let recipients: Vec<String> =
        part.headers_named("to").chain(part.headers_named("cc")).flat_map(mime::addresses).map(|m| m.address).collect();
    let list_post = part.header("list-post").and_then(list_post_address);
    let group = list_post
        .or_else(|| recipients.iter().find(|a| me.groups.contains(a)).cloned())
        .or_else(|| part.header("list-id").and_then(|_| recipients.iter().find(|a| **a != me.address).cloned()));

    let content = mime::content(&part);
    let mut text = mime::strip_quoted_tail(&content.text);
    if text.trim().is_empty() && content.files.is_empty() {
        text = subject.clone();
    }
    let (conversation, kind, mentioned) = match group {
        Some(g) => {
            let addressed = recipients.contains(&me.address);
            let replied = in_reply_to.as_deref().is_some_and(|r| me.made(r));
            let named = mentions(&text, &me.name) || mentions(&subject, &me.name);
            (g, ConversationKind::Group, addressed || replied || named)
        }
        None => {
            let reply_to = part.header("reply-to").and_then(|v| mime::addresses(v).into_iter().next()).map(|m| m.address);
            (reply_to.unwrap_or_else(|| from.address.clone()), ConversationKind::Direct, true)
        }
    };
    let timestamp_ms = part.header("date").and_then(mime::parse_date).or(received_ms).unwrap_or(0);
    let attachments =
        content.files.into_iter().map(|f| Attachment { name: f.name, mime_type: f.mime_type, url: None, size: Some(f.size) }).collect();
    let raw_json = json!({
        "message_id": own_id,
        "subject": subject,
        "from": from.address,
        "to": part.header("to"),
        "cc": part.header("cc"),
        "date": part.header("date"),
        "in_reply_to": in_reply_to,
        "references": references,
        "list_id": part.header("list-id"),
    });
    let mut refs = references;
    refs.push(id.clone());
    let message = Message {
        id,
        conversation,
        thread: Some(thread),
        sender: from.address,
        sender_name: from.name,
        text,
        attachments,
        timestamp_ms,
        raw: Some(raw_json.to_string()),
        conversation_kind: kind,
        mentioned,
    };
    Inbound::Message(Box::new(message), ThreadInfo { subject, references: refs })
}

/// The address in `List-Post: <mailto:list@host?subject=…>` (None for `NO`).
fn list_post_address(v: &str) -> Option<String> {
    let start = v.to_ascii_lowercase().find("mailto:")? + 7;
    let rest = &v[start..];
    let end = rest.find(['>', '?', ',', ' ']).unwrap_or(rest.len());
    let addr = rest[..end].trim().to_ascii_lowercase();
    addr.contains('@').then_some(addr)
}

/// Whether `text` names the bot: `name` (or `@name`) as a whole word, any case.
pub fn mentions(text: &str, name: &str) -> bool {
    let name = name.trim().trim_start_matches('@').to_lowercase();
    if name.is_empty() {
        return false;
    }
    let lower = text.to_lowercase();
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut from = 0;
    while let Some(at) = lower[from..].find(&name) {
        let start = from + at;
        let end = start + name.len();
        if !word(lower[..start].chars().next_back()) && !word(lower[end..].chars().next()) {
            return true;
        }
        from = end;
    }
    false
}

/// A reply to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The bot.
    pub me: &'a Me,
    /// The recipient address (the conversation).
    pub to: &'a str,
    /// The subject line, decoded.
    pub subject: String,
    /// The id it answers, if any.
    pub in_reply_to: Option<String>,
    /// The References chain (oldest first).
    pub references: Vec<String>,
    /// The outbox idempotency key.
    pub key: &'a str,
    /// Now, in ms since the epoch.
    pub now_ms: u64,
    /// The text.
    pub text: &'a str,
}

/// The Message-ID kata gives the reply with outbox key `key`: the same for
/// every retry of that reply.
pub fn message_id(key: &str, me: &Me) -> String {
    let safe: String = key.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')).take(40).collect();
    format!("kata.{safe}.{:016x}@{}", fnv64(key.as_bytes()), me.domain())
}

/// `Re: subject` (once).
pub fn reply_subject(subject: &str) -> String {
    let s = subject.trim();
    if s.is_empty() {
        "Re: your message".into()
    } else if s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("re:")) {
        s.to_string()
    } else {
        format!("Re: {s}")
    }
}

/// The whole mail, CRLF line ends, ready for [`crate::smtp::dot_stuff`].
pub fn render(o: &Outgoing<'_>) -> String {
    let mut h = String::new();
    let from = if o.me.name.is_empty() { format!("<{}>", o.me.address) } else { format!("{} <{}>", phrase(&o.me.name), o.me.address) };
    h.push_str(&format!("From: {from}\r\n"));
    h.push_str(&format!("To: <{}>\r\n", o.to));
    h.push_str(&format!("Subject: {}\r\n", encode_header(&o.subject)));
    h.push_str(&format!("Date: {}\r\n", mime::format_date(o.now_ms)));
    h.push_str(&format!("Message-ID: <{}>\r\n", message_id(o.key, o.me)));
    if let Some(r) = &o.in_reply_to {
        h.push_str(&format!("In-Reply-To: <{r}>\r\n"));
    }
    if !o.references.is_empty() {
        let ids: Vec<String> = o.references.iter().map(|r| format!("<{r}>")).collect();
        h.push_str(&format!("References: {}\r\n", ids.join("\r\n ")));
    }
    h.push_str(&format!("{KEY_HEADER}: {}\r\n", o.key.replace(['\r', '\n'], " ")));
    // RFC 3834: a robot's answer; well-behaved auto-responders leave it alone.
    h.push_str("Auto-Submitted: auto-replied\r\n");
    h.push_str("MIME-Version: 1.0\r\n");
    h.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    let body = o.text.replace("\r\n", "\n");
    let plain = body.is_ascii() && body.lines().all(|l| l.len() <= 900);
    if plain {
        h.push_str("Content-Transfer-Encoding: 7bit\r\n\r\n");
        h.push_str(&body.replace('\n', "\r\n"));
    } else {
        h.push_str("Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        h.push_str(&qp_encode(&body));
    }
    if !h.ends_with("\r\n") {
        h.push_str("\r\n");
    }
    h
}

/// A display name as an RFC 5322 phrase (quoted when needed, encoded when not ASCII).
fn phrase(name: &str) -> String {
    if !name.is_ascii() {
        return encode_header(name);
    }
    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-') {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// A header value: as is when ASCII, else RFC 2047 encoded words (UTF-8,
/// base64), split at character boundaries so each word stays under 76.
pub fn encode_header(value: &str) -> String {
    let value = value.replace(['\r', '\n'], " ");
    if value.is_ascii() {
        return value;
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in value.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?utf-8?B?{}?=", mime::base64_encode(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?utf-8?B?{}?=", mime::base64_encode(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

/// Quoted-printable with soft breaks under 76 characters; CRLF line ends.
pub fn qp_encode(text: &str) -> String {
    let mut out = String::new();
    for line in text.split('\n') {
        let bytes = line.as_bytes();
        let mut col = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let enc = if b == b'=' || b >= 127 || (b < 32 && b != b'\t') || ((b == b' ' || b == b'\t') && last) {
                format!("={b:02X}")
            } else {
                (b as char).to_string()
            };
            if col + enc.len() > 75 {
                out.push_str("=\r\n");
                col = 0;
            }
            col += enc.len();
            out.push_str(&enc);
        }
        out.push_str("\r\n");
    }
    out.truncate(out.len() - 2);
    out
}

/// Keep what a reply needs as JSON (host state).
pub fn thread_info_json(t: &ThreadInfo) -> String {
    json!({"subject": t.subject, "references": t.references}).to_string()
}

/// Read [`thread_info_json`] back.
pub fn thread_info_from(s: &str) -> Option<ThreadInfo> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    let refs = v["references"].as_array()?.iter().filter_map(|r| r.as_str().map(str::to_string)).collect();
    Some(ThreadInfo { subject: v["subject"].as_str().unwrap_or("").to_string(), references: refs })
}

/// The part for tests.
#[doc(hidden)]
pub fn parse(raw: &[u8]) -> Part {
    mime::parse(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Me {
        Me { address: "bot@example.org".into(), name: "kata".into(), groups: vec!["team@example.org".into()] }
    }

    fn msg(raw: &str) -> (Message, ThreadInfo) {
        match inbound(raw.as_bytes(), Some(5), &me()) {
            Inbound::Message(m, t) => (*m, t),
            Inbound::Skip(why) => panic!("skipped: {why}"),
        }
    }

    #[test]
    fn a_direct_mail() {
        let (m, t) = msg("From: Ann Example <Ann@Example.org>\r\nTo: bot@example.org\r\nSubject: =?utf-8?q?Caf=C3=A9?=\r\n\
Message-ID: <m1@example.org>\r\nDate: Wed, 2 Dec 2026 15:00:00 +0000\r\n\r\nhello there\r\n");
        assert_eq!((m.id.as_str(), m.conversation.as_str(), m.sender.as_str()), ("m1@example.org", "ann@example.org", "ann@example.org"));
        assert_eq!(m.sender_name.as_deref(), Some("Ann Example"));
        assert_eq!((m.conversation_kind, m.mentioned, m.thread.as_deref()), (ConversationKind::Direct, true, Some("m1@example.org")));
        assert_eq!(m.text, "hello there");
        assert_eq!(m.timestamp_ms, mime::parse_date("2 Dec 2026 15:00:00 +0000").unwrap());
        assert_eq!(t, ThreadInfo { subject: "Café".into(), references: vec!["m1@example.org".into()] });
    }

    #[test]
    fn a_reply_in_a_thread_with_quote_and_reply_to() {
        let (m, t) = msg("From: ann@example.org\r\nReply-To: Ann <ann.private@example.net>\r\nMessage-ID: <m3@x>\r\n\
In-Reply-To: <kata.k1.00@example.org>\r\nReferences: <m1@x> <kata.k1.00@example.org>\r\n\r\nsure\r\n\r\nOn Wed, kata wrote:\r\n> hi\r\n");
        assert_eq!((m.thread.as_deref(), m.conversation.as_str(), m.text.as_str()), (Some("m1@x"), "ann.private@example.net", "sure"));
        assert_eq!(t.references, ["m1@x", "kata.k1.00@example.org", "m3@x"]);
    }

    #[test]
    fn group_mail_and_the_mention_rule() {
        let list = "From: bob@example.org\r\nTo: team@example.org\r\nMessage-ID: <g1@x>\r\n";
        let (m, _) = msg(&format!("{list}\r\njust chatting\r\n"));
        assert_eq!((m.conversation.as_str(), m.conversation_kind, m.mentioned), ("team@example.org", ConversationKind::Group, false));
        assert!(msg(&format!("{list}\r\nKata, what do you think?\r\n")).0.mentioned);
        assert!(!msg(&format!("{list}\r\nkatana blades\r\n")).0.mentioned);
        assert!(msg(&format!("{list}Cc: bot@example.org\r\n\r\nfyi\r\n")).0.mentioned);
        assert!(msg(&format!("{list}In-Reply-To: <kata.k9.01@example.org>\r\n\r\nthanks\r\n")).0.mentioned);
        // A mailing list: List-Post names the conversation.
        let (m, _) = msg("From: bob@example.org\r\nTo: dev@lists.example.org\r\nList-Id: <dev.lists.example.org>\r\n\
List-Post: <mailto:dev@lists.example.org>\r\n\r\n@kata hi\r\n");
        assert_eq!((m.conversation.as_str(), m.conversation_kind, m.mentioned), ("dev@lists.example.org", ConversationKind::Group, true));
    }

    #[test]
    fn attachments_are_listed_and_a_mail_without_message_id_gets_a_stable_id() {
        let raw = "From: ann@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/pdf; name=r.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let (m, _) = msg(raw);
        assert_eq!(m.text, "see attached");
        assert_eq!(m.attachments, vec![Attachment { name: "r.pdf".into(), mime_type: "application/pdf".into(), url: None, size: Some(5) }]);
        assert!(m.id.starts_with("sha.") && m.id == msg(raw).0.id);
        assert_eq!(m.timestamp_ms, 5);
    }

    #[test]
    fn own_and_automatic_mail_is_skipped() {
        let own = format!("From: kata <bot@example.org>\r\n{KEY_HEADER}: k1\r\n\r\nhi\r\n");
        assert!(matches!(inbound(own.as_bytes(), None, &me()), Inbound::Skip(_)));
        let auto = "From: ann@example.org\r\nAuto-Submitted: auto-replied\r\n\r\nI am away\r\n";
        assert!(matches!(inbound(auto.as_bytes(), None, &me()), Inbound::Skip(_)));
        assert!(matches!(inbound(b"Subject: no sender\r\n\r\nx", None, &me()), Inbound::Skip(_)));
        // From the bot's address but without kata's header: a person using the account.
        assert!(matches!(inbound(b"From: bot@example.org\r\n\r\nnote to self", None, &me()), Inbound::Message(..)));
    }

    #[test]
    fn a_reply_mail_threads_and_reads_back() {
        let me = me();
        let o = Outgoing {
            me: &me,
            to: "ann@example.org",
            subject: reply_subject("Café plans"),
            in_reply_to: Some("m1@x".into()),
            references: vec!["m0@x".into(), "m1@x".into()],
            key: "outbox-7",
            now_ms: 1_000,
            text: "Ça va?\n.dot line\nok",
        };
        let mail = render(&o);
        assert!(mail.contains("Message-ID: <kata.outbox-7."), "{mail}");
        assert_eq!(message_id("outbox-7", &me), message_id("outbox-7", &me));
        assert_ne!(message_id("outbox-7", &me), message_id("outbox-8", &me));
        assert!(mail.contains("In-Reply-To: <m1@x>\r\nReferences: <m0@x>\r\n <m1@x>\r\n"), "{mail}");
        let p = parse(mail.as_bytes());
        assert_eq!(p.decoded("subject").unwrap(), "Re: Café plans");
        assert_eq!(mime::content(&p).text, "Ça va?\r\n.dot line\r\nok".replace("\r\n", "\n").replace('\n', "\r\n").trim_end());
        // kata's own mail is skipped when it comes back.
        assert!(matches!(inbound(mail.as_bytes(), None, &me), Inbound::Skip(_)));
        assert_eq!(reply_subject("RE: x"), "RE: x");
        assert_eq!(reply_subject("Grüße"), "Re: Grüße");
        assert_eq!(qp_encode("a=b ").as_str(), "a=3Db=20");
        let long = "x".repeat(200);
        assert!(qp_encode(&format!("é{long}")).lines().all(|l| l.len() <= 76));
    }

    #[test]
    fn mention_words() {
        assert!(mentions("hey @kata!", "kata"));
        assert!(mentions("KATA: hi", "kata"));
        assert!(!mentions("katas", "kata"));
        assert!(!mentions("anything", ""));
    }
}
