//! kata channel plugin for IRC.
//!
//! IRC is one long-lived line-oriented connection, so the plugin never opens
//! it: it lists `subscribe` as its ingress mode and the kata host connects to
//! `server` (checked against the plugin's network grant, TLS by the host),
//! writes NICK/USER, and hands every line to `on_frame`. The plugin answers
//! PING with PONG, joins `channels` once registered, picks another nick when
//! its own is taken, and turns PRIVMSGs into messages: in a channel a group
//! message, `mentioned` when it addresses the bot's nick; in a query a direct
//! one. `send` returns PRIVMSG lines the host writes to the open connection.

mod proto;

use kata_sdk::prelude::*;

/// The default server (what the manifest asks for without configuration).
const DEFAULT_SERVER: &str = "tls://irc.libera.chat:6697";
/// How often the host ticks `on_frame` so the plugin can PING the server
/// (a silent dead connection is noticed when the write fails).
const HEARTBEAT_MS: u32 = 60_000;

/// A connected IRC channel instance.
pub struct Irc {
    server: String,
    nick: String,
    user: String,
    realname: String,
    channels: Vec<String>,
    password_secret: Option<String>,
    /// Messages handed out by this instance, for unique ids.
    seq: u64,
}

/// Read and check the configuration.
fn settings() -> Result<Irc, ChannelError> {
    let server = config::get("server").unwrap_or_else(|| DEFAULT_SERVER.into());
    let lower = server.to_ascii_lowercase();
    if !(lower.starts_with("tcp://") || lower.starts_with("tls://")) {
        return Err(ChannelError::InvalidConfig(format!(
            "config key `server` must be tcp://HOST:PORT (plain IRC) or tls://HOST:PORT (IRC over TLS), \
             as the network grant in kata.toml writes it; got {server:?}"
        )));
    }
    let nick = config::get("nick").unwrap_or_else(|| "kata".into());
    let valid = |s: &str| !s.is_empty() && !s.contains([' ', ',', '\r', '\n', ':']) && !proto::is_channel(s);
    if !valid(&nick) {
        return Err(ChannelError::InvalidConfig(format!("config key `nick` {nick:?} is not a valid IRC nick")));
    }
    let user = config::get("user").unwrap_or_else(|| nick.clone());
    if !valid(&user) {
        return Err(ChannelError::InvalidConfig(format!("config key `user` {user:?} is not a valid IRC user name")));
    }
    let realname = config::get("realname").unwrap_or_else(|| "kata agent".into()).replace(['\r', '\n'], " ");
    let channels: Vec<String> =
        config::get("channels").unwrap_or_default().split([',', ' ']).filter(|c| !c.is_empty()).map(str::to_string).collect();
    if let Some(bad) = channels.iter().find(|c| !proto::is_channel(c) || c.contains(['\r', '\n'])) {
        return Err(ChannelError::InvalidConfig(format!("config key `channels`: {bad:?} is not a channel name (they start with #)")));
    }
    let password_secret = config::get("password_secret").filter(|s| !s.is_empty());
    Ok(Irc { server, nick, user, realname, channels, password_secret, seq: 0 })
}

impl Channel for Irc {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "irc".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Subscribe],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        settings()
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        Err(ChannelError::Unsupported)
    }

    fn subscribe(&mut self) -> Result<Subscription, ChannelError> {
        // Called before every (re)connect: start again from the configured nick.
        *self = Irc { seq: self.seq, ..settings()? };
        let mut sub = Subscription::tcp_lines(&self.server).heartbeat(HEARTBEAT_MS);
        if let Some(secret) = &self.password_secret {
            sub = sub.initial(Frame::text(format!("PASS {{{{secret:{secret}}}}}")));
        }
        Ok(sub
            .initial(Frame::text(format!("NICK {}", self.nick)))
            .initial(Frame::text(format!("USER {} 0 * :{}", self.user, self.realname))))
    }

    fn on_frame(&mut self, frame: Frame) -> Result<FrameResult, ChannelError> {
        if frame.is_heartbeat() {
            return Ok(FrameResult::reply(vec![Frame::text("PING :kata")]));
        }
        let Some(line) = frame.as_text() else { return Ok(FrameResult::default()) };
        self.seq += 1;
        let session = proto::Session { nick: &self.nick, channels: &self.channels, seq: self.seq, now_ms: now_ms() };
        let r = proto::react(line, &session);
        if let Some(n) = r.new_nick {
            log::warn(&format!("irc: nick {} is taken; trying {n}", self.nick));
            self.nick = n;
        }
        Ok(FrameResult { messages: r.message.into_iter().collect(), replies: r.replies.into_iter().map(Frame::text).collect() })
    }

    fn send(&mut self, msg: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        let target = msg.conversation.trim();
        if target.is_empty() || target.contains([' ', '\r', '\n', ',']) {
            return Err(ChannelError::Fatal(format!("{target:?} is not an IRC channel or nick")));
        }
        let frames = proto::privmsg_lines(target, &msg.text);
        if frames.is_empty() {
            return Ok(SendReceipt::sent(msg.idempotency_key));
        }
        // IRC gives sent messages no id; the key names it in kata's outbox.
        Ok(SendReceipt::over_stream(msg.idempotency_key, frames))
    }
}

kata_sdk::export_channel!(Irc);
