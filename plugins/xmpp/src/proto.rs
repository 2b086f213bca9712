//! An XMPP client (RFC 6120/6121) over a [`Transport`]: stream open,
//! STARTTLS, SASL PLAIN, resource binding, presence, MUC join (XEP-0045),
//! pings (XEP-0199); and the mapping between message stanzas and kata
//! messages (chat and groupchat, the mention rule, threads, XEP-0066
//! attachments, XEP-0461 replies, XEP-0359 ids).

use std::collections::VecDeque;

use kata_sdk::{Attachment, ChannelError, ConversationKind, Message};

use crate::wire::{NetError, Transport};
use crate::xml::{self, Element, Event, StreamReader};

/// Namespaces.
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL.
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding.
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// Legacy session establishment.
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// MUC.
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// MUC user extension (status codes).
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// Unique and stable stanza ids.
pub const NS_SID: &str = "urn:xmpp:sid:0";

/// When to upgrade with STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// When offered.
    Auto,
    /// Always; a server without it is a configuration error.
    Required,
    /// Never (a loopback test server).
    Off,
}

/// What logging in needs.
#[derive(Debug, Clone)]
pub struct Login {
    /// The account's local part (SASL authcid).
    pub user: String,
    /// The server's domain (stream `to`).
    pub domain: String,
    /// The resource asked for.
    pub resource: String,
    /// STARTTLS policy.
    pub starttls: StartTls,
    /// Whether the connection is TLS already (`tls://`).
    pub secure: bool,
}

/// A logged-in client stream.
pub struct Client<T: Transport> {
    t: T,
    r: StreamReader,
    /// The full JID the server bound.
    pub jid: String,
    /// "XMPP server tcp://…", for messages.
    pub what: String,
    /// Wait for answers during negotiation.
    pub timeout_ms: u32,
    /// Stanzas that arrived while waiting for something else.
    pending: VecDeque<Element>,
    next_id: u32,
}

fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        xml::escape(domain)
    )
}

impl<T: Transport> Client<T> {
    fn net(&self, e: NetError) -> ChannelError {
        e.channel(&self.what)
    }

    /// Write raw XML.
    pub fn write(&mut self, data: &str) -> Result<(), ChannelError> {
        self.t.write(data.as_bytes()).map_err(|e| self.net(e))
    }

    /// The next event, waiting at most `timeout_ms` for more bytes; None on timeout.
    pub fn next(&mut self, timeout_ms: u32) -> Result<Option<Event>, ChannelError> {
        // Bounded: each round either returns or reads more bytes; a stanza is capped.
        loop {
            match self.r.next_event() {
                Ok(Some(ev)) => return Ok(Some(ev)),
                Ok(None) => {}
                Err(why) => return Err(ChannelError::Network(format!("{} sent bad XML: {why}", self.what))),
            }
            match self.t.read(64 * 1024, timeout_ms) {
                Ok(bytes) => self.r.push(&bytes),
                Err(NetError::Timeout) => return Ok(None),
                Err(e) => return Err(self.net(e)),
            }
        }
    }

    /// The next stanza (a pending one first), None on timeout. The end of
    /// the stream is an error (the server closed it).
    pub fn stanza(&mut self, timeout_ms: u32) -> Result<Option<Element>, ChannelError> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(Some(e));
        }
        match self.next(timeout_ms)? {
            Some(Event::Stanza(e)) if e.name == "stream:error" || e.local() == "error" && e.name.starts_with("stream") => {
                let cond = e.elements().next().map(|c| c.local().to_string()).unwrap_or_default();
                Err(ChannelError::Network(format!("{} ended the stream: {cond}", self.what)))
            }
            Some(Event::Stanza(e)) => Ok(Some(e)),
            Some(Event::StreamEnd) => Err(ChannelError::Network(format!("{} closed the stream", self.what))),
            Some(Event::StreamStart(_)) => Err(ChannelError::Network(format!("{} restarted the stream unasked", self.what))),
            None => Ok(None),
        }
    }

    /// A stanza during negotiation (a timeout is an error).
    fn expect(&mut self, what: &str) -> Result<Element, ChannelError> {
        match self.next(self.timeout_ms)? {
            Some(Event::Stanza(e)) => Ok(e),
            Some(Event::StreamEnd) => Err(ChannelError::Network(format!("{} closed the stream while {what}", self.what))),
            Some(Event::StreamStart(_)) => self.expect(what),
            None => Err(ChannelError::Network(format!("{}: no answer while {what}", self.what))),
        }
    }

    /// Open a stream and read its features.
    fn open_stream(&mut self, domain: &str) -> Result<Element, ChannelError> {
        self.r.reset();
        self.write(&stream_header(domain))?;
        match self.next(self.timeout_ms)? {
            Some(Event::StreamStart(_)) => {}
            Some(other) => return Err(ChannelError::Fatal(format!("{} does not speak XMPP (it sent {other:?})", self.what))),
            None => return Err(ChannelError::Network(format!("{}: no stream header", self.what))),
        }
        let f = self.expect("reading the stream features")?;
        if f.local() != "features" {
            return Err(ChannelError::Network(format!("{}: expected stream features, got <{}>", self.what, f.name)));
        }
        Ok(f)
    }

    /// Connect on `t`: stream, STARTTLS, SASL PLAIN with the secret
    /// `password`, resource binding (and a legacy session where required).
    pub fn login(t: T, login: &Login, what: &str, timeout_ms: u32) -> Result<Self, ChannelError> {
        let mut c = Client {
            t,
            r: StreamReader::default(),
            jid: String::new(),
            what: what.to_string(),
            timeout_ms,
            pending: VecDeque::new(),
            next_id: 0,
        };
        let mut features = c.open_stream(&login.domain)?;
        let mut secure = login.secure;
        if let Some(tls) = features.child("starttls", Some(NS_TLS)) {
            let required = tls.child("required", None).is_some();
            if !secure && login.starttls != StartTls::Off {
                c.write(&format!("<starttls xmlns='{NS_TLS}'/>"))?;
                let answer = c.expect("starting TLS")?;
                if answer.local() != "proceed" {
                    return Err(ChannelError::Network(format!("{} refused STARTTLS (<{}>)", c.what, answer.name)));
                }
                c.t.start_tls(timeout_ms).map_err(|e| c.net(e))?;
                secure = true;
                features = c.open_stream(&login.domain)?;
            } else if required && !secure {
                return Err(ChannelError::InvalidConfig(format!(
                    "{} requires STARTTLS but config `starttls` is \"off\": set it to \"auto\"",
                    c.what
                )));
            }
        }
        if !secure && login.starttls == StartTls::Required {
            return Err(ChannelError::InvalidConfig(format!(
                "{} does not offer STARTTLS and config `starttls` is \"required\": use a tls:// URL or set starttls = \"auto\"",
                c.what
            )));
        }
        let mechs: Vec<String> = features
            .child("mechanisms", Some(NS_SASL))
            .map(|m| m.elements().map(|e| e.text().trim().to_ascii_uppercase()).collect())
            .unwrap_or_default();
        if !mechs.iter().any(|m| m == "PLAIN") {
            return Err(ChannelError::InvalidConfig(format!(
                "{} offers no SASL PLAIN (it offers {}){}",
                c.what,
                if mechs.is_empty() { "nothing".into() } else { mechs.join(", ") },
                if secure { "" } else { "; servers offer PLAIN only over TLS: use tls:// or STARTTLS" }
            )));
        }
        let user = xml::escape(&login.user);
        c.write(&format!("<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{{{{base64:\0{user}\0{{{{secret:password}}}}}}}}</auth>"))?;
        let answer = c.expect("authenticating")?;
        match answer.local() {
            "success" => {}
            "failure" => {
                let cond = answer.elements().next().map(|e| e.local().to_string()).unwrap_or_else(|| "not-authorized".into());
                let text = answer.child("text", None).map(|t| format!(": {}", t.text())).unwrap_or_default();
                let err = format!(
                    "{} refused the login of {:?}: {cond}{text} (check config `jid` and the secret `password`)",
                    c.what, login.user
                );
                return Err(if cond == "temporary-auth-failure" { ChannelError::Network(err) } else { ChannelError::AuthFailed(err) });
            }
            other => return Err(ChannelError::Network(format!("{}: unexpected <{other}> during SASL", c.what))),
        }
        let features = c.open_stream(&login.domain)?;
        if features.child("bind", Some(NS_BIND)).is_none() {
            return Err(ChannelError::Fatal(format!("{} offers no resource binding", c.what)));
        }
        let bound = c.iq(&format!(
            "<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>{}</resource></bind></iq>",
            xml::escape(&login.resource)
        ))?;
        c.jid = bound.child("bind", Some(NS_BIND)).and_then(|b| b.child("jid", None)).map(|j| j.text()).unwrap_or_default();
        if c.jid.is_empty() {
            return Err(ChannelError::Fatal(format!("{} bound no JID", c.what)));
        }
        if let Some(s) = features.child("session", Some(NS_SESSION))
            && s.child("optional", None).is_none()
        {
            c.iq(&format!("<iq type='set' id='sess'><session xmlns='{NS_SESSION}'/></iq>"))?;
        }
        Ok(c)
    }

    /// Send an iq (with an `id`) and wait for its result; other stanzas are
    /// kept for later.
    pub fn iq(&mut self, iq: &str) -> Result<Element, ChannelError> {
        let id = iq.split("id='").nth(1).and_then(|r| r.split('\'').next()).unwrap_or("").to_string();
        self.write(iq)?;
        // Bounded by the read timeout and the count.
        for _ in 0..1000 {
            let e = self.expect(&format!("waiting for the answer to iq {id}"))?;
            if e.local() == "iq" && e.attr("id") == Some(id.as_str()) {
                if e.attr("type") == Some("error") {
                    let cond = e.child("error", None).and_then(|x| x.elements().next()).map(|x| x.local().to_string()).unwrap_or_default();
                    return Err(ChannelError::Fatal(format!("{} refused iq {id}: {cond}", self.what)));
                }
                return Ok(e);
            }
            self.pending.push_back(e);
        }
        Err(ChannelError::Network(format!("{}: no answer to iq {id}", self.what)))
    }

    /// A fresh stanza id with `prefix`.
    pub fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    /// Available presence (makes the server deliver stored offline messages).
    pub fn presence(&mut self) -> Result<(), ChannelError> {
        self.write("<presence/>")
    }

    /// Join `room` as `nick`, asking for at most `history` old messages.
    pub fn join(&mut self, room: &str, nick: &str, history: u32) -> Result<(), ChannelError> {
        self.write(&join_presence(room, nick, history))
    }

    /// Answer what the server asks of a client: pings get a result, other
    /// get/set iqs `service-unavailable` (RFC 6120 8.2.3 wants an answer).
    /// Returns true when `e` was such an iq.
    pub fn answer_iq(&mut self, e: &Element) -> Result<bool, ChannelError> {
        if e.local() != "iq" || !matches!(e.attr("type"), Some("get" | "set")) {
            return Ok(e.local() == "iq");
        }
        let id = xml::escape(e.attr("id").unwrap_or(""));
        let to = e.attr("from").map(|f| format!(" to='{}'", xml::escape(f))).unwrap_or_default();
        if e.child("ping", Some("urn:xmpp:ping")).is_some() {
            self.write(&format!("<iq type='result' id='{id}'{to}/>"))?;
        } else {
            self.write(&format!(
                "<iq type='error' id='{id}'{to}><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            ))?;
        }
        Ok(true)
    }

    /// Close the stream (errors ignored).
    pub fn close(&mut self) {
        let _ = self.t.write(b"</stream:stream>");
    }

    /// The transport (for tests).
    pub fn transport(&self) -> &T {
        &self.t
    }
}

/// The presence that joins a MUC room.
pub fn join_presence(room: &str, nick: &str, history: u32) -> String {
    format!(
        "<presence to='{}/{}'><x xmlns='{NS_MUC}'><history maxstanzas='{history}'/></x></presence>",
        xml::escape(room),
        xml::escape(nick)
    )
}

/// The bare JID (`user@domain`) of a JID.
pub fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

/// The resource part (a MUC occupant's nick).
pub fn resource(jid: &str) -> Option<&str> {
    jid.split_once('/').map(|(_, r)| r)
}

/// Who the bot is, for reading messages.
#[derive(Debug, Clone)]
pub struct Me {
    /// Its bare JID, lower case.
    pub bare: String,
    /// Its nick in rooms.
    pub nick: String,
    /// The rooms it joins (bare JIDs, lower case).
    pub rooms: Vec<String>,
}

/// A stable 64-bit hash (FNV-1a), for ids of stanzas that carry none.
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A message stanza as a kata message; None for what is not for kata (no
/// body, errors, headlines, the bot's own messages reflected by a room or
/// archived, room subjects). `now_ms` stamps messages without a delay.
pub fn to_message(e: &Element, me: &Me, now_ms: u64) -> Option<Message> {
    if e.local() != "message" {
        return None;
    }
    let kind = match e.attr("type").unwrap_or("normal") {
        "chat" | "normal" => ConversationKind::Direct,
        "groupchat" => ConversationKind::Group,
        _ => return None,
    };
    let body = e.child("body", None)?.text();
    if body.trim().is_empty() && e.child("x", Some("jabber:x:oob")).is_none() {
        return None;
    }
    let from = e.attr("from")?;
    let from_bare = bare(from).to_ascii_lowercase();
    let stanza_id = |by: &str| {
        e.elements()
            .find(|c| c.local() == "stanza-id" && c.ns() == Some(NS_SID) && c.attr("by").is_some_and(|b| b.eq_ignore_ascii_case(by)))
            .and_then(|c| c.attr("id"))
    };
    let (conversation, sender, sender_name, id, mentioned) = match kind {
        ConversationKind::Direct => {
            if from_bare == me.bare || me.rooms.contains(&from_bare) {
                // Our own (another resource, an archive copy) or a private
                // message through a room (not supported: it has no stable sender).
                return None;
            }
            let id = stanza_id(&me.bare).map(|s| format!("{from_bare}/{s}"));
            (from_bare.clone(), from_bare.clone(), None, id, true)
        }
        ConversationKind::Group => {
            let nick = resource(from)?;
            if nick == me.nick {
                return None;
            }
            let id = stanza_id(&from_bare).map(|s| format!("{from_bare}/{s}"));
            (from_bare.clone(), from.to_string(), Some(nick.to_string()), id, mentions(&body, &me.nick))
        }
    };
    let id = id
        .or_else(|| e.child("origin-id", Some(NS_SID)).and_then(|o| o.attr("id")).map(|o| format!("{from}/{o}")))
        .or_else(|| e.attr("id").filter(|i| !i.is_empty()).map(|i| format!("{from}/{i}")))
        .unwrap_or_else(|| format!("{from}/h{:016x}", fnv64(body.as_bytes())));
    let timestamp_ms = e.child("delay", Some("urn:xmpp:delay")).and_then(|d| d.attr("stamp")).and_then(parse_stamp).unwrap_or(now_ms);
    let attachments = e
        .elements()
        .filter(|c| c.local() == "x" && c.ns() == Some("jabber:x:oob"))
        .filter_map(|x| x.child("url", None).map(|u| u.text().trim().to_string()))
        .filter(|u| !u.is_empty())
        .map(|url| {
            let name = url.rsplit('/').next().unwrap_or("").split('?').next().unwrap_or("").to_string();
            Attachment { mime_type: mime_of(&name).into(), name, url: Some(url), size: None }
        })
        .collect::<Vec<_>>();
    // An OOB message's body is often just the URL again.
    let text = if attachments.iter().any(|a| a.url.as_deref() == Some(body.trim())) { String::new() } else { body };
    let thread = e.child("thread", None).map(|t| t.text()).filter(|t| !t.is_empty());
    Some(Message {
        id,
        conversation,
        thread,
        sender,
        sender_name,
        text,
        attachments,
        timestamp_ms,
        raw: None,
        conversation_kind: kind,
        mentioned,
    })
}

fn mime_of(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("").to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// Whether `text` names `nick` as a word (`kata:`, `@kata`, `hi kata`).
pub fn mentions(text: &str, nick: &str) -> bool {
    let nick = nick.to_lowercase();
    if nick.is_empty() {
        return false;
    }
    let lower = text.to_lowercase();
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut from = 0;
    while let Some(at) = lower[from..].find(&nick) {
        let (start, end) = (from + at, from + at + nick.len());
        if !word(lower[..start].chars().next_back()) && !word(lower[end..].chars().next()) {
            return true;
        }
        from = end;
    }
    false
}

/// XEP-0082 date-time (`2026-12-02T15:00:00Z`, fractions, offsets) in ms.
pub fn parse_stamp(s: &str) -> Option<u64> {
    let (date, time) = s.trim().split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let (clock, offset_min) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, z) = time.split_at(at);
        let (h, mm) = z[1..].split_once(':')?;
        let mins = h.parse::<i64>().ok()? * 60 + mm.parse::<i64>().ok()?;
        (c, if z.starts_with('-') { -mins } else { mins })
    };
    let mut t = clock.split(':');
    let (h, mi): (i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let ms = (days * 86_400 + h * 3600 + mi * 60 - offset_min * 60) * 1000 + (sec * 1000.0) as i64;
    u64::try_from(ms).ok()
}

/// A message stanza for a reply. `id` comes from the outbox key (also as
/// XEP-0359 origin-id, which clients use to recognise a repeat).
pub fn message_stanza(to: &str, group: bool, body: &str, thread: Option<&str>, reply_to: Option<&str>, id: &str) -> String {
    let mut s = format!(
        "<message to='{}' type='{}' id='{}'><body>{}</body>",
        xml::escape(to),
        if group { "groupchat" } else { "chat" },
        xml::escape(id),
        xml::escape(body)
    );
    if let Some(t) = thread {
        s.push_str(&format!("<thread>{}</thread>", xml::escape(t)));
    }
    if let Some(r) = reply_to {
        // XEP-0461 wants the id the replied-to message is known by in this
        // conversation: kata's message ids are `conversation-or-sender/ID`.
        let rid = r.rsplit('/').next().unwrap_or(r);
        s.push_str(&format!("<reply xmlns='urn:xmpp:reply:0' id='{}'/>", xml::escape(rid)));
    }
    s.push_str(&format!("<origin-id xmlns='{NS_SID}' id='{}'/></message>", xml::escape(id)));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::script::Script;

    fn login() -> Login {
        Login { user: "kata".into(), domain: "localhost".into(), resource: "poll".into(), starttls: StartTls::Auto, secure: false }
    }

    const HDR: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='x' from='localhost' version='1.0'>";

    #[test]
    fn starttls_sasl_bind_session() {
        let turns = [
            format!("{HDR}<stream:features><starttls xmlns='{NS_TLS}'/></stream:features>"),
            format!("<proceed xmlns='{NS_TLS}'/>"),
            format!(
                "{HDR}<stream:features><mechanisms xmlns='{NS_SASL}'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"
            ),
            format!("<success xmlns='{NS_SASL}'/>"),
            format!("{HDR}<stream:features><bind xmlns='{NS_BIND}'/><session xmlns='{NS_SESSION}'/></stream:features>"),
            "<message from='ann@localhost/x' type='chat'><body>early</body></message>".into(),
            format!("<iq type='result' id='bind'><bind xmlns='{NS_BIND}'><jid>kata@localhost/poll</jid></bind></iq>"),
            "<iq type='result' id='sess'/>".into(),
        ];
        let turns: Vec<&str> = turns.iter().map(String::as_str).collect();
        let mut c = Client::login(Script::turns(&turns), &login(), "XMPP server tcp://x", 100).unwrap();
        assert_eq!(c.jid, "kata@localhost/poll");
        assert!(c.transport().tls);
        let sent = c.transport().sent();
        assert!(sent.contains(&format!("<starttls xmlns='{NS_TLS}'/>")), "{sent}");
        assert!(sent.contains("mechanism='PLAIN'>{{base64:\0kata\0{{secret:password}}}}</auth>"), "{sent}");
        assert!(sent.contains("<resource>poll</resource>") && sent.contains("<session "), "{sent}");
        assert_eq!(sent.matches("<stream:stream to='localhost'").count(), 3);
        // The message that came during binding is kept.
        assert_eq!(c.stanza(10).unwrap().unwrap().child("body", None).unwrap().text(), "early");
    }

    #[test]
    fn a_refused_password_is_auth_failed() {
        let turns = [
            format!("{HDR}<stream:features><mechanisms xmlns='{NS_SASL}'><mechanism>PLAIN</mechanism></mechanisms></stream:features>"),
            format!("<failure xmlns='{NS_SASL}'><not-authorized/><text>Unable to authorize you</text></failure>"),
        ];
        let turns: Vec<&str> = turns.iter().map(String::as_str).collect();
        match Client::login(Script::turns(&turns), &Login { starttls: StartTls::Off, ..login() }, "X", 100) {
            Err(ChannelError::AuthFailed(t)) => assert!(t.contains("not-authorized") && t.contains("Unable"), "{t}"),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("logged in"),
        }
        let only_scram = format!(
            "{HDR}<stream:features><mechanisms xmlns='{NS_SASL}'><mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>"
        );
        assert!(matches!(Client::login(Script::turns(&[&only_scram]), &login(), "X", 100), Err(ChannelError::InvalidConfig(_))));
        let required = Login { starttls: StartTls::Required, ..login() };
        assert!(matches!(Client::login(Script::turns(&[&only_scram]), &required, "X", 100), Err(ChannelError::InvalidConfig(_))));
        assert!(matches!(
            Client::login(Script::turns(&["220 smtp"]), &login(), "X", 100),
            Err(ChannelError::Network(_) | ChannelError::Fatal(_))
        ));
    }

    fn me() -> Me {
        Me { bare: "kata@localhost".into(), nick: "kata".into(), rooms: vec!["team@conference.localhost".into()] }
    }

    fn parse(s: &str) -> Element {
        let mut r = StreamReader::default();
        r.push(s.as_bytes());
        match r.next_event().unwrap() {
            Some(Event::Stanza(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chat_and_groupchat_messages() {
        let m = to_message(
            &parse("<message from='Ann@localhost/phone' type='chat' id='a1'><body>hello &amp; hi</body><thread>t9</thread><stanza-id xmlns='urn:xmpp:sid:0' by='kata@localhost' id='S1'/></message>"),
            &me(),
            7,
        )
        .unwrap();
        assert_eq!((m.id.as_str(), m.conversation.as_str(), m.sender.as_str()), ("ann@localhost/S1", "ann@localhost", "ann@localhost"));
        assert_eq!(
            (m.text.as_str(), m.thread.as_deref(), m.conversation_kind, m.mentioned, m.timestamp_ms),
            ("hello & hi", Some("t9"), ConversationKind::Direct, true, 7)
        );

        let g = |body: &str, nick: &str| {
            to_message(
                &parse(&format!(
                    "<message from='team@conference.localhost/{nick}' type='groupchat' id='g1'><body>{body}</body><delay xmlns='urn:xmpp:delay' stamp='2026-12-02T15:00:00Z'/></message>"
                )),
                &me(),
                0,
            )
        };
        let chatter = g("just chatting", "bob").unwrap();
        assert_eq!(
            (chatter.conversation.as_str(), chatter.sender.as_str(), chatter.sender_name.as_deref()),
            ("team@conference.localhost", "team@conference.localhost/bob", Some("bob"))
        );
        assert_eq!(
            (chatter.conversation_kind, chatter.mentioned, chatter.id.as_str()),
            (ConversationKind::Group, false, "team@conference.localhost/bob/g1")
        );
        assert_eq!(chatter.timestamp_ms, parse_stamp("2026-12-02T16:00:00+01:00").unwrap());
        assert!(g("kata: hello group", "bob").unwrap().mentioned);
        assert!(!g("katana", "bob").unwrap().mentioned);
        assert!(g("my own words", "kata").is_none(), "the room reflects the bot's messages");
    }

    #[test]
    fn what_is_not_for_kata() {
        let me = me();
        for s in [
            "<message from='ann@localhost/x' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message from='ann@localhost/x' type='error'><body>x</body></message>",
            "<message from='kata@localhost/other' type='chat'><body>from myself</body></message>",
            "<message from='team@conference.localhost' type='groupchat'><subject>topic</subject><body>room says</body></message>",
            "<message from='team@conference.localhost/bob' type='chat'><body>private via room</body></message>",
            "<presence from='ann@localhost/x'/>",
        ] {
            assert!(to_message(&parse(s), &me, 0).is_none(), "{s}");
        }
    }

    #[test]
    fn attachments_and_replies() {
        let m = to_message(
            &parse("<message from='ann@localhost/x' type='chat' id='f1'><body>https://up.example/a/cat.png</body><x xmlns='jabber:x:oob'><url>https://up.example/a/cat.png</url></x></message>"),
            &me(),
            0,
        )
        .unwrap();
        assert_eq!(m.text, "");
        assert_eq!(
            m.attachments,
            vec![Attachment {
                name: "cat.png".into(),
                mime_type: "image/png".into(),
                url: Some("https://up.example/a/cat.png".into()),
                size: None
            }]
        );
        let s = message_stanza(
            "team@conference.localhost",
            true,
            "a < b & 'c'",
            Some("t1"),
            Some("team@conference.localhost/bob/g1"),
            "kata-k1",
        );
        assert_eq!(
            s,
            "<message to='team@conference.localhost' type='groupchat' id='kata-k1'><body>a &lt; b &amp; &apos;c&apos;</body>\
<thread>t1</thread><reply xmlns='urn:xmpp:reply:0' id='g1'/><origin-id xmlns='urn:xmpp:sid:0' id='kata-k1'/></message>"
        );
        let back =
            to_message(&parse(&s.replace("to='team@conference.localhost'", "from='team@conference.localhost/bob'")), &me(), 0).unwrap();
        assert_eq!(back.text, "a < b & 'c'");
    }

    #[test]
    fn pings_are_answered() {
        let mut c = Client {
            t: Script::default(),
            r: StreamReader::default(),
            jid: String::new(),
            what: "X".into(),
            timeout_ms: 1,
            pending: VecDeque::new(),
            next_id: 0,
        };
        assert!(c.answer_iq(&parse("<iq type='get' id='p1' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")).unwrap());
        assert!(c.answer_iq(&parse("<iq type='get' id='v1' from='localhost'><query xmlns='jabber:iq:version'/></iq>")).unwrap());
        assert_eq!(
            c.transport().sent(),
            "<iq type='result' id='p1' to='localhost'/><iq type='error' id='v1' to='localhost'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        );
        assert!(!c.answer_iq(&parse("<message/>")).unwrap());
        assert_eq!(
            join_presence("r@c", "k'", 0),
            "<presence to='r@c/k&apos;'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>"
        );
    }
}
