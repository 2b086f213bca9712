//! # kata-email: an e-mail channel for kata
//!
//! Receives mail by polling an IMAP mailbox by UID (the cursor is
//! `uidvalidity:last-uid`, stored with the messages it brought) and answers
//! over SMTP, threaded with In-Reply-To and References, with a Message-ID
//! derived from kata's outbox idempotency key. Several replies due at once go
//! out in one SMTP session (`send-batch`, [`kata_sdk::BatchSend`]): one
//! connection, STARTTLS and AUTH, then MAIL/RCPT/DATA per reply, each with its
//! own result. Both protocols run over the
//! host's `connection` (WIT `kata:plugin/connections@0.1.3`): the host checks
//! the URL against the plugin's network grant, does TLS and STARTTLS, and
//! fills in the password (`{{secret:password}}`), which the plugin never sees.
//!
//! The protocol code (modules [`imap`], [`smtp`], [`mime`], [`mail`]) runs
//! over the small [`wire::Transport`] trait and is unit-tested natively; this
//! file wires it to [`kata_sdk::net::Connection`]. See README.md for the
//! configuration and what maps to what.

pub mod imap;
pub mod mail;
pub mod mime;
pub mod smtp;
pub mod wire;

use std::time::Duration;

use kata_sdk::net::{Connection, ConnectionError};
use kata_sdk::prelude::*;

use imap::{Cursor, Imap, Plan, StartTls};
use mail::{Inbound, Me};
use wire::{NetError, Transport};

/// Wait for a connection and for each read.
const DEFAULT_TIMEOUT_MS: u32 = 20_000;
/// Mails fetched per poll (more come on the next poll, straight away).
const DEFAULT_BATCH: u32 = 20;
/// Pause after a temporary SMTP refusal (421, 4.7.x), unless configured.
const DEFAULT_RETRY_MS: u64 = 60_000;
/// After a UIDVALIDITY change, mail received up to this long before kata's
/// first start is still read (INTERNALDATE has whole seconds, and the server's
/// clock is not kata's).
const REREAD_MARGIN_MS: u64 = 5_000;
/// Reconnect after reading this much on one IMAP connection (the host caps
/// what one connection may read at `limits.max_response`).
const RECONNECT_AFTER_BYTES: usize = 4 << 20;
/// A batch starts no new message after this long in its SMTP session (the
/// rest are retried): well within the host's default call timeout (60 s).
const BATCH_BUDGET_MS: u64 = 30_000;

/// A reply ready for SMTP: envelope recipient, message, Message-ID.
struct Rendered {
    to: String,
    data: String,
    id: String,
}

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

/// `tcp://host:port` or `tls://host:port` from config `key`; true for TLS.
fn server_url(key: &str, default_port_tls: u16, default_port_tcp: u16) -> Result<(String, bool), ChannelError> {
    let raw = config::require(key)?;
    let url = raw.trim().trim_end_matches('/').to_string();
    let (secure, rest) = match (url.strip_prefix("tls://"), url.strip_prefix("tcp://")) {
        (Some(r), _) => (true, r),
        (_, Some(r)) => (false, r),
        _ => {
            return Err(ChannelError::InvalidConfig(format!(
                "config key `{key}` must be tls://HOST:PORT or tcp://HOST:PORT (e.g. \"tls://mail.example.org:{default_port_tls}\", \
                 or \"tcp://mail.example.org:{default_port_tcp}\" with STARTTLS), got {raw:?}"
            )));
        }
    };
    if rest.is_empty() || rest.contains(['/', '?', ' ']) {
        return Err(ChannelError::InvalidConfig(format!("config key `{key}`: {raw:?} is not tls://HOST:PORT or tcp://HOST:PORT")));
    }
    let url = if rest.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        url
    } else {
        format!("{url}:{}", if secure { default_port_tls } else { default_port_tcp })
    };
    Ok((url, secure))
}

/// An open IMAP session with the mailbox examined.
struct Session {
    imap: Imap<Host>,
    read_bytes: usize,
}

/// The e-mail channel.
pub struct Email {
    imap_url: (String, bool),
    smtp_url: (String, bool),
    username: String,
    smtp_username: String,
    mailbox: String,
    starttls: StartTls,
    batch: u32,
    retry_ms: u64,
    timeout_ms: u32,
    me: Me,
    session: Option<Session>,
}

fn list(v: Option<String>) -> Vec<String> {
    v.unwrap_or_default().split([',', ' ']).map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect()
}

impl Email {
    fn open(&self, url: &str) -> Result<Host, ChannelError> {
        Connection::open(url, Duration::from_millis(self.timeout_ms.into())).map(Host).map_err(|e| net_error(e).channel(url))
    }

    /// The IMAP session, connected and logged in if there is none.
    fn session(&mut self) -> Result<&mut Session, ChannelError> {
        if self.session.is_none() {
            let (url, secure) = &self.imap_url;
            let what = format!("IMAP server {url}");
            let mut imap = Imap::greet(self.open(url)?, self.timeout_ms, &what)?;
            imap.login(&self.username, self.starttls, *secure)?;
            log::debug(&format!("email: logged in to {url} as {}", self.username));
            self.session = Some(Session { imap, read_bytes: 0 });
        }
        Ok(self.session.as_mut().expect("just set"))
    }

    fn poll_mailbox(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let (mailbox_name, batch) = (self.mailbox.clone(), self.batch as usize);
        let me = self.me.clone();
        let s = self.session()?;
        let mb = s.imap.examine(&mailbox_name)?;
        if mb.uid_validity == 0 {
            return Err(ChannelError::Fatal(format!("{} did not say the UIDVALIDITY of {mailbox_name:?}", s.imap.what)));
        }
        let plan = imap::plan(cursor.as_deref(), &mb);
        let since_ms = state::get_string("since_ms").and_then(|s| s.parse::<u64>().ok());
        let uids = match &plan {
            Plan::Start(c) => {
                if since_ms.is_none() {
                    let _ = state::set_string("since_ms", &now_ms().to_string());
                }
                log::info(&format!(
                    "email: first start on {mailbox_name:?}: {} earlier mail(s) left unanswered; new mail from UID {} on",
                    mb.exists,
                    c.last + 1
                ));
                return Ok(PollResult { messages: Vec::new(), cursor: Some(c.to_string()), next_poll_ms: None });
            }
            Plan::Idle => return Ok(PollResult { messages: Vec::new(), cursor: None, next_poll_ms: None }),
            Plan::After(last) => s.imap.search(&format!("UID {}:*", last + 1))?.into_iter().filter(|u| u > last).collect::<Vec<_>>(),
            Plan::Reread => {
                log::warn(&format!(
                    "email: the UIDVALIDITY of {mailbox_name:?} changed (the mailbox was rebuilt): reading it again; \
                     mail kata already has is recognised by its Message-ID"
                ));
                s.imap.search("ALL")?
            }
        };
        if uids.is_empty() {
            return Ok(PollResult { messages: Vec::new(), cursor: None, next_poll_ms: None });
        }
        let more = uids.len() > batch;
        let take: Vec<u32> = uids.into_iter().take(batch).collect();
        let fetched = s.imap.fetch(&take)?;
        let mut messages = Vec::new();
        for f in &fetched {
            s.read_bytes += f.raw.len();
            // INTERNALDATE has whole seconds and the server's clock: only
            // mail clearly older than kata's first start is left out.
            if plan == Plan::Reread && since_ms.is_some_and(|since| f.internal_ms.is_some_and(|t| t + REREAD_MARGIN_MS < since)) {
                continue;
            }
            match mail::inbound(&f.raw, f.internal_ms, &me) {
                Inbound::Message(m, thread) => {
                    let _ = state::set_string(&format!("mail:{}", m.id), &mail::thread_info_json(&thread));
                    messages.push(*m);
                }
                Inbound::Skip(why) => log::debug(&format!("email: UID {} skipped: {why}", f.uid)),
            }
        }
        // The cursor moves past what was asked for, even a UID that vanished
        // between SEARCH and FETCH (expunged): it is gone either way.
        let last = take.iter().copied().max().unwrap_or(0);
        if s.read_bytes > RECONNECT_AFTER_BYTES {
            s.imap.logout();
            self.session = None;
        }
        let cursor = Cursor { validity: mb.uid_validity, last };
        Ok(PollResult { messages, cursor: Some(cursor.to_string()), next_poll_ms: more.then_some(0) })
    }

    /// The reply as a mail (no network): refused for good when its
    /// conversation is not an address.
    fn render(&self, message: &OutboundMessage) -> Result<Rendered, ChannelError> {
        let to = message.conversation.trim();
        if !to.contains('@') || to.contains(['<', '>', ' ', '\r', '\n', ',']) {
            return Err(ChannelError::Fatal(format!("{to:?} is not an e-mail address")));
        }
        let info =
            message.reply_to.as_deref().and_then(|r| state::get_string(&format!("mail:{r}"))).and_then(|s| mail::thread_info_from(&s));
        let real_id = |id: &str| id.contains('@') && !id.starts_with("sha.");
        let in_reply_to = message.reply_to.clone().filter(|r| real_id(r));
        let references = match &info {
            Some(i) => i.references.iter().filter(|r| real_id(r)).cloned().collect(),
            None => message.thread.iter().chain(in_reply_to.iter()).filter(|r| real_id(r)).cloned().fold(Vec::new(), |mut v, r| {
                if !v.contains(&r) {
                    v.push(r);
                }
                v
            }),
        };
        let subject = mail::reply_subject(info.as_ref().map_or("", |i| i.subject.as_str()));
        let out = mail::Outgoing {
            me: &self.me,
            to,
            subject,
            in_reply_to,
            references,
            key: &message.idempotency_key,
            now_ms: now_ms(),
            text: &message.text,
        };
        let data = mail::render(&out);
        Ok(Rendered { to: to.to_string(), data, id: mail::message_id(&message.idempotency_key, &self.me) })
    }

    /// A new SMTP session: connected, greeted, STARTTLS and AUTH done.
    fn smtp_session(&self) -> Result<smtp::Smtp<Host>, ChannelError> {
        let (url, secure) = &self.smtp_url;
        let what = format!("SMTP server {url}");
        let mut smtp = smtp::Smtp::greet(self.open(url)?, self.timeout_ms, &what, self.retry_ms)?;
        smtp.open_session(self.me.domain(), &self.smtp_username, self.starttls, *secure)?;
        Ok(smtp)
    }

    fn deliver(&self, message: &OutboundMessage) -> Result<String, ChannelError> {
        let mail = self.render(message)?;
        let mut smtp = self.smtp_session()?;
        smtp.deliver(&self.me.address, &[mail.to], &mail.data)?;
        smtp.quit();
        Ok(mail.id)
    }

    /// `messages` in one SMTP session; one result per message (see
    /// [`smtp::Smtp::deliver_each`]). A session that cannot be opened fails
    /// the whole call: every message is retried.
    fn deliver_batch(&self, messages: &[OutboundMessage]) -> Result<Vec<Result<SendReceipt, ChannelError>>, ChannelError> {
        let rendered: Vec<Result<Rendered, ChannelError>> = messages.iter().map(|m| self.render(m)).collect();
        let mails: Vec<(&str, &str)> = rendered.iter().flatten().map(|r| (r.to.as_str(), r.data.as_str())).collect();
        let mut sent = if mails.is_empty() {
            Vec::new()
        } else {
            let mut smtp = self.smtp_session()?;
            let started = now_ms();
            smtp.deliver_each(&self.me.address, &mails, || now_ms().saturating_sub(started) > BATCH_BUDGET_MS)
        }
        .into_iter();
        let results = rendered
            .into_iter()
            .map(|r| {
                let mail = r?;
                let done = sent.next().unwrap_or_else(|| Err(ChannelError::Network("not sent".into())));
                done.map(|_| SendReceipt::sent(mail.id))
            })
            .collect::<Vec<_>>();
        let failed = results.iter().filter(|r| r.is_err()).count();
        log::debug(&format!("email: {} of {} replies sent in one SMTP session", results.len() - failed, results.len()));
        Ok(results)
    }
}

impl Channel for Email {
    fn describe() -> ChannelInfo {
        ChannelInfo::new("email", env!("CARGO_PKG_VERSION"), vec![IngressMode::Poll])
    }

    fn connect() -> Result<Self, ChannelError> {
        let address = config::require("address")?.trim().to_ascii_lowercase();
        if mime::mailbox(&address).is_none_or(|m| m.address != address) {
            return Err(ChannelError::InvalidConfig(format!("config key `address` must be the bot's e-mail address, got {address:?}")));
        }
        let username = config::get("username").map(|u| u.trim().to_string()).unwrap_or_else(|| address.clone());
        let name = config::get("name").map(|n| n.trim().to_string()).unwrap_or_else(|| "kata".into());
        Ok(Email {
            imap_url: server_url("imap", 993, 143)?,
            smtp_url: server_url("smtp", 465, 587)?,
            smtp_username: config::get("smtp_username").map(|u| u.trim().to_string()).unwrap_or_else(|| username.clone()),
            username,
            mailbox: config::get("mailbox").unwrap_or_else(|| "INBOX".into()),
            starttls: StartTls::parse(config::get("starttls").as_deref())?,
            batch: config::get_or("batch", DEFAULT_BATCH)?.clamp(1, 500),
            retry_ms: config::get_or("retry_after_ms", DEFAULT_RETRY_MS)?,
            timeout_ms: config::get_or("timeout_ms", DEFAULT_TIMEOUT_MS)?.max(100),
            me: Me { address, name, groups: list(config::get("group_addresses")) },
            session: None,
        })
    }

    fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let r = self.poll_mailbox(cursor);
        if r.is_err() {
            // A broken or refused session is not reused: the next poll
            // connects afresh (the host waits first, by the error's kind).
            self.session = None;
        }
        r
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt::sent(self.deliver(&message)?))
    }

    fn disconnect(&mut self) {
        if let Some(mut s) = self.session.take() {
            s.imap.logout();
        }
    }
}

impl BatchSend for Email {
    fn send_batch(&mut self, messages: Vec<OutboundMessage>) -> Result<Vec<Result<SendReceipt, ChannelError>>, ChannelError> {
        self.deliver_batch(&messages)
    }
}

kata_sdk::export_channel!(Email, batch);
