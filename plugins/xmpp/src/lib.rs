//! # kata-xmpp: an XMPP channel for kata
//!
//! Holds a client stream in the polling instance (over the host's
//! `connection`, WIT `kata:plugin/connections@0.1.3`): each poll reads the
//! stanzas that arrive within `wait_ms`, answers pings and sends a
//! whitespace keep-alive; direct chats and rooms (MUC, joined with the
//! bot's nick) become kata messages. Replies go out from the send instance's
//! own stream (resource `<resource>-send`), as XMPP allows several resources
//! per account. XML is not line-based, so the host's `tcp-lines` stream does
//! not fit; the connection does.
//!
//! Protocol code: [`xml`], [`proto`] (unit-tested natively); this file wires
//! it to [`kata_sdk::net::Connection`]. See README.md.

pub mod proto;
pub mod wire;
pub mod xml;

use std::time::Duration;

use kata_sdk::net::{Connection, ConnectionError};
use kata_sdk::prelude::*;

use proto::{Client, Login, Me, StartTls};
use wire::{NetError, Transport};

const DEFAULT_TIMEOUT_MS: u32 = 20_000;
const DEFAULT_WAIT_MS: u32 = 5_000;
const DEFAULT_HISTORY: u32 = 20;
/// Most messages one poll hands in.
const MAX_PER_POLL: usize = 200;

/// The host's connection as a [`Transport`].
struct Host(Connection);

fn net_error(e: ConnectionError) -> NetError {
    match e {
        ConnectionError::Denied(why) => NetError::Denied(why),
        ConnectionError::Io(why) => NetError::Io(why),
        ConnectionError::Timeout => NetError::Timeout,
        ConnectionError::Closed => NetError::Closed,
        ConnectionError::TooLarge => NetError::TooLarge,
    }
}

impl Transport for Host {
    fn write(&mut self, data: &[u8]) -> Result<(), NetError> {
        self.0.write(data).map_err(net_error)
    }
    fn read(&mut self, max: u32, timeout_ms: u32) -> Result<Vec<u8>, NetError> {
        self.0.read(max as usize, Duration::from_millis(timeout_ms.into())).map_err(net_error)
    }
    fn start_tls(&mut self, timeout_ms: u32) -> Result<(), NetError> {
        self.0.start_tls(Duration::from_millis(timeout_ms.into())).map_err(net_error)
    }
}

/// The XMPP channel.
pub struct Xmpp {
    server: String,
    secure: bool,
    login: Login,
    me: Me,
    timeout_ms: u32,
    wait_ms: u32,
    history: u32,
    client: Option<Client<Host>>,
    /// Rooms this instance's stream has joined.
    joined: Vec<String>,
}

fn list(v: Option<String>) -> Vec<String> {
    v.unwrap_or_default().split([',', ' ']).map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect()
}

impl Xmpp {
    fn open(&self, resource: &str) -> Result<Client<Host>, ChannelError> {
        let conn = Connection::open(&self.server, Duration::from_millis(self.timeout_ms.into()))
            .map_err(|e| net_error(e).channel(&format!("XMPP server {}", self.server)))?;
        let login = Login { resource: resource.to_string(), ..self.login.clone() };
        Client::login(Host(conn), &login, &format!("XMPP server {}", self.server), self.timeout_ms)
    }

    /// The polling stream: logged in, available, in its rooms. A room's
    /// history is asked for only after the first join (so old talk is not
    /// answered on the very first start); repeats are deduplicated by id.
    fn poll_client(&mut self) -> Result<&mut Client<Host>, ChannelError> {
        if self.client.is_none() {
            let mut c = self.open(&self.login.resource.clone())?;
            c.presence()?;
            for room in self.me.rooms.clone() {
                let key = format!("joined:{room}");
                let history = if state::get(&key).is_some() { self.history } else { 0 };
                c.join(&room, &self.me.nick, history)?;
                let _ = state::set_string(&key, "1");
            }
            log::debug(&format!("xmpp: connected as {}", c.jid));
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("just set"))
    }

    fn read_window(&mut self) -> Result<Vec<Message>, ChannelError> {
        let (wait_ms, me) = (self.wait_ms, self.me.clone());
        let c = self.poll_client()?;
        // Whitespace keep-alive (RFC 6120 4.6.1): servers drop silent streams.
        c.write(" ")?;
        let deadline = now_ms() + u64::from(wait_ms);
        let mut messages = Vec::new();
        while messages.len() < MAX_PER_POLL {
            let now = now_ms();
            if now >= deadline {
                break;
            }
            // Once something came, return soon: the agent is waiting.
            let wait = if messages.is_empty() { (deadline - now) as u32 } else { 200 };
            let Some(e) = c.stanza(wait.max(1))? else { break };
            if c.answer_iq(&e)? {
                continue;
            }
            if e.local() == "presence" && e.attr("type") == Some("error") {
                let cond = e.child("error", None).and_then(|x| x.elements().next()).map(|x| x.local().to_string()).unwrap_or_default();
                log::warn(&format!("xmpp: {} refused the presence: {cond}", e.attr("from").unwrap_or("?")));
                continue;
            }
            if let Some(m) = proto::to_message(&e, &me, now_ms()) {
                messages.push(m);
            }
        }
        Ok(messages)
    }

    /// The send stream (its own resource), joined to `room` if needed.
    fn send_client(&mut self, room: Option<&str>) -> Result<&mut Client<Host>, ChannelError> {
        if self.client.is_none() {
            let resource = format!("{}-send", self.login.resource);
            self.client = Some(self.open(&resource)?);
            self.joined.clear();
        }
        let (nick, timeout) = (self.me.nick.clone(), self.timeout_ms);
        let c = self.client.as_mut().expect("just set");
        // What arrived since the last send (room traffic, pings) is read
        // and dropped: the polling instance takes messages in.
        for _ in 0..10_000 {
            match c.stanza(1)? {
                Some(e) => {
                    c.answer_iq(&e)?;
                }
                None => break,
            }
        }
        if let Some(room) = room
            && !self.joined.iter().any(|r| r == room)
        {
            c.join(room, &nick, 0)?;
            let deadline = now_ms() + u64::from(timeout);
            // Wait for the room's presence for us (status 110) before talking.
            loop {
                if now_ms() >= deadline {
                    return Err(ChannelError::Network(format!("xmpp: no answer from {room} to joining it")));
                }
                let Some(e) = c.stanza(timeout)? else { continue };
                c.answer_iq(&e)?;
                if e.local() == "presence" && e.attr("from").is_some_and(|f| proto::bare(f).eq_ignore_ascii_case(room)) {
                    if e.attr("type") == Some("error") {
                        let cond =
                            e.child("error", None).and_then(|x| x.elements().next()).map(|x| x.local().to_string()).unwrap_or_default();
                        return Err(ChannelError::Fatal(format!("xmpp: cannot join {room} as {nick}: {cond}")));
                    }
                    let own = e
                        .child("x", Some(proto::NS_MUC_USER))
                        .is_some_and(|x| x.elements().any(|s| s.local() == "status" && s.attr("code") == Some("110")));
                    if own {
                        break;
                    }
                }
            }
            self.joined.push(room.to_string());
        }
        Ok(self.client.as_mut().expect("set above"))
    }

    fn deliver(&mut self, message: &OutboundMessage) -> Result<String, ChannelError> {
        let to = message.conversation.trim().to_ascii_lowercase();
        if !to.contains('@') || to.contains(['/', ' ', '<', '>', '\'', '"']) {
            return Err(ChannelError::Fatal(format!("{to:?} is not a bare JID")));
        }
        let group = self.me.rooms.contains(&to);
        let id = format!("kata-{}", message.idempotency_key.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>());
        let stanza = proto::message_stanza(&to, group, &message.text, message.thread.as_deref(), message.reply_to.as_deref(), &id);
        let c = self.send_client(group.then_some(to.as_str()))?;
        c.write(&stanza)?;
        Ok(id)
    }
}

impl Channel for Xmpp {
    fn describe() -> ChannelInfo {
        ChannelInfo::new("xmpp", env!("CARGO_PKG_VERSION"), vec![IngressMode::Poll])
    }

    fn connect() -> Result<Self, ChannelError> {
        let jid = config::require("jid")?.trim().to_ascii_lowercase();
        let Some((user, domain)) = proto::bare(&jid).split_once('@').filter(|(u, d)| !u.is_empty() && !d.is_empty()) else {
            return Err(ChannelError::InvalidConfig(format!("config key `jid` must be the bot's account, user@domain, got {jid:?}")));
        };
        let (user, domain) = (user.to_string(), domain.to_string());
        let server = config::get("server").unwrap_or_else(|| format!("tcp://{domain}:5222")).trim().to_string();
        let secure = if server.starts_with("tls://") {
            true
        } else if server.starts_with("tcp://") {
            false
        } else {
            return Err(ChannelError::InvalidConfig(format!(
                "config key `server` must be tcp://HOST:5222 (STARTTLS) or tls://HOST:5223, got {server:?}"
            )));
        };
        let starttls = match config::get("starttls").as_deref().map(str::trim) {
            None | Some("auto") => StartTls::Auto,
            Some("required") => StartTls::Required,
            Some("off") => StartTls::Off,
            Some(other) => {
                return Err(ChannelError::InvalidConfig(format!("config key `starttls` must be auto, required or off, got {other:?}")));
            }
        };
        let resource = config::get("resource").map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).unwrap_or_else(|| "kata".into());
        let nick = config::get("nick").map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).unwrap_or_else(|| user.clone());
        Ok(Xmpp {
            server,
            secure,
            me: Me { bare: format!("{user}@{domain}"), nick, rooms: list(config::get("rooms")) },
            login: Login { user, domain, resource, starttls, secure },
            timeout_ms: config::get_or("timeout_ms", DEFAULT_TIMEOUT_MS)?.max(100),
            wait_ms: config::get_or("wait_ms", DEFAULT_WAIT_MS)?.clamp(100, 50_000),
            history: config::get_or("history", DEFAULT_HISTORY)?,
            client: None,
            joined: Vec::new(),
        })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let _ = self.secure;
        match self.read_window() {
            // The poll itself waited: poll again straight away.
            Ok(messages) => Ok(PollResult { messages, cursor: None, next_poll_ms: Some(0) }),
            Err(e) => {
                // A broken stream is opened afresh on the next poll (after
                // the host's pause for this kind of error).
                self.client = None;
                Err(e)
            }
        }
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        match self.deliver(&message) {
            Ok(id) => Ok(SendReceipt::sent(id)),
            Err(e) => {
                self.client = None;
                Err(e)
            }
        }
    }

    fn disconnect(&mut self) {
        if let Some(mut c) = self.client.take() {
            c.close();
        }
    }
}

kata_sdk::export_channel!(Xmpp);
