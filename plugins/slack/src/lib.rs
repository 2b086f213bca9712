//! # kata-slack: a Slack channel for kata
//!
//! Two ingress modes (config `mode`):
//!
//! - `socket` (default): Socket Mode. `subscribe` asks
//!   `apps.connections.open` (app-level token) for a fresh websocket URL and
//!   the host opens it; every envelope is handed to `on_frame`, which returns
//!   the messages in it and the `{"envelope_id": …}` acknowledgement (the
//!   host writes it after storing the messages). A `disconnect` envelope
//!   ends the connection; the host calls `subscribe` again, which fetches a
//!   new URL.
//! - `events`: the Events API over the host's webhook listener (config
//!   `listen`, e.g. `http://127.0.0.1:8787/slack/events`); the
//!   `url_verification` challenge is answered, events become messages; with
//!   config `interactivity = true` the app's Interactivity Request URL is
//!   the same listener, and presses arrive there (form-encoded).
//!
//! Replies go out with `chat.postMessage` (bot token); an outbound message's
//! actions become Block Kit buttons, and a press (a `block_actions`
//! payload, in an `interactive` envelope or an interactivity request) comes
//! in as a message whose text is the button's value (feature `buttons`).
//! Tokens are secrets
//! (`bot_token`, `app_token`): the plugin only writes `{{secret:NAME}}` in
//! an Authorization header and the host fills it in for granted hosts.
//! See README.md for setup and the mapping of threads, mentions and groups.

pub mod api;

use api::Bot;
use kata_sdk::prelude::*;
use std::time::Duration;

/// Timeout for Web API calls.
const API_TIMEOUT: Duration = Duration::from_secs(30);

/// How messages come in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Socket Mode websocket.
    Socket,
    /// Events API requests to this local listener URL.
    Events(String),
}

/// A connected Slack channel instance.
pub struct Slack {
    api_base: String,
    mode: Mode,
    /// Whether a reply in a channel opens a thread under the message it answers.
    reply_in_thread: bool,
    /// Whether presses reach kata, so actions go out as buttons: always over
    /// Socket Mode; in Events API mode when config `interactivity` says the
    /// app's Interactivity Request URL is kata's listener too.
    buttons: bool,
    /// Who the bot is (from `auth.test`), to spot mentions and its own posts.
    bot: Bot,
}

/// Read the configuration.
fn settings() -> Result<(String, Mode, bool, bool), ChannelError> {
    let api_base = api::normalize_base(&config::get("api_base").unwrap_or_else(|| api::DEFAULT_API_BASE.into()), "api_base")?;
    let mode = match config::get("mode").as_deref().map(str::trim) {
        None | Some("") | Some("socket") => Mode::Socket,
        Some("events") => {
            let listen = config::require("listen").map_err(|_| {
                ChannelError::InvalidConfig(
                    "config mode = \"events\" needs config key `listen`: the local URL Slack's requests reach, \
                     e.g. \"http://127.0.0.1:8787/slack/events\" (grant it in network, too)"
                        .into(),
                )
            })?;
            Mode::Events(listen.trim().to_string())
        }
        Some(other) => {
            return Err(ChannelError::InvalidConfig(format!(
                "config key `mode` must be \"socket\" (Socket Mode, the default) or \"events\" (Events API over a webhook), got {other:?}"
            )));
        }
    };
    let reply_in_thread = config::get_or("reply_in_thread", true)?;
    let buttons = match mode {
        Mode::Socket => true,
        Mode::Events(_) => config::get_or("interactivity", false)?,
    };
    Ok((api_base, mode, reply_in_thread, buttons))
}

/// A Web API call with the token in secret `secret`, as (status, Retry-After, body).
fn call(url: String, secret: &str, body: Option<serde_json::Value>) -> Result<(u16, Option<String>, Vec<u8>), ChannelError> {
    let mut req = Request::post(url).header("authorization", api::bearer(secret)).header("accept", "application/json").timeout(API_TIMEOUT);
    req = match body {
        // Slack warns about JSON without a charset.
        Some(b) => req.header("content-type", "application/json; charset=utf-8").json(&b),
        None => req.header("content-type", "application/x-www-form-urlencoded").body(Vec::new()),
    };
    let r = req.send()?;
    let retry_after = r.header("retry-after").map(str::to_string);
    Ok((r.status, retry_after, r.body))
}

impl Channel for Slack {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "slack".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Subscribe],
            features: vec![Feature::Buttons],
        }
    }

    /// Read the configuration and learn who the bot is (`auth.test`): a
    /// refused bot token fails here, as `auth-failed`.
    fn connect() -> Result<Self, ChannelError> {
        let (api_base, mode, reply_in_thread, buttons) = settings()?;
        let (status, retry_after, body) = call(api::method_url(&api_base, "auth.test"), "bot_token", None)?;
        let bot = api::parse_auth_test(status, retry_after.as_deref(), &body)?;
        log::debug(&format!("slack: connected as {} (bot {:?}), mode {mode:?}", bot.user_id, bot.bot_id));
        Ok(Slack { api_base, mode, reply_in_thread, buttons, bot })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        Err(ChannelError::Unsupported)
    }

    /// Socket Mode: a fresh URL from `apps.connections.open` for every
    /// connection (URLs are single-use tickets). Events API: the listener.
    fn subscribe(&mut self) -> Result<Subscription, ChannelError> {
        match &self.mode {
            Mode::Events(listen) => Ok(Subscription::webhook(listen.clone())),
            Mode::Socket => {
                let (status, retry_after, body) = call(api::method_url(&self.api_base, "apps.connections.open"), "app_token", None)?;
                let url = api::parse_connections_open(status, retry_after.as_deref(), &body)?;
                log::debug(&format!("slack: socket mode URL {}", api::shown(&url)));
                Ok(Subscription::websocket(url))
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Result<FrameResult, ChannelError> {
        let Some(text) = frame.as_text() else { return Ok(FrameResult::default()) };
        if frame.is_heartbeat() {
            return Ok(FrameResult::default());
        }
        match self.mode {
            Mode::Socket => {
                let r = api::socket_frame(text, &self.bot, now_ms());
                if let Err(e) = &r {
                    log::info(&format!("slack: {e:?}; reconnecting"));
                }
                r
            }
            Mode::Events(_) => Ok(api::webhook_frame(text, &self.bot, now_ms())),
        }
    }

    /// `chat.postMessage`, with the actions as buttons (as text where presses
    /// would not reach kata: Events API mode without `interactivity`). Slack
    /// has no idempotency key for it, so a retry after a crash between
    /// Slack's answer and kata recording it posts the reply again (see
    /// README.md, Delivery).
    fn send(&mut self, mut msg: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        if !self.buttons {
            api::actions_as_text(&mut msg);
        }
        let body = api::post_message_body(&msg, self.reply_in_thread);
        let (status, retry_after, resp) = call(api::method_url(&self.api_base, "chat.postMessage"), "bot_token", Some(body))?;
        api::parse_post(status, retry_after.as_deref(), &resp, &msg.conversation)
    }
}

kata_sdk::export_channel!(Slack);
