//! # kata-telegram: a Telegram Bot API channel for kata
//!
//! Receives messages by long polling `getUpdates` and sends replies with
//! `sendMessage`.
//!
//! ## Configuration (`[plugins.telegram]` in kata.toml)
//!
//! | key              | default                    | meaning                                  |
//! |------------------|----------------------------|------------------------------------------|
//! | `api_base`       | `https://api.telegram.org` | Bot API base URL (e.g. a local emulator) |
//! | `poll_timeout_s` | `25`                       | long-poll timeout passed to `getUpdates` |
//!
//! The bot token is a secret named `bot_token`. The plugin never sees it: it
//! only writes `{{secret:bot_token}}` into request URLs
//! (`{api_base}/bot{{secret:bot_token}}/getUpdates?offset=..&timeout=..`) and
//! the host substitutes it for granted hosts. Grant the API host in the
//! plugin's `network` list.
//!
//! ## Ids
//!
//! Telegram message ids are unique per chat only, so a kata message id is
//! `<chat_id>:<message_id>`; the conversation is the chat id, the thread is
//! the forum topic (`message_thread_id`). The poll cursor is the next
//! `getUpdates` offset (last `update_id` + 1) as a decimal string.

pub mod api;

use kata_sdk::prelude::*;
use std::time::Duration;

/// Default Bot API endpoint.
const DEFAULT_API_BASE: &str = "https://api.telegram.org";

/// Default long-poll timeout in seconds.
const DEFAULT_POLL_TIMEOUT_S: u32 = 25;

/// Extra time on top of the long-poll timeout before the HTTP request gives up.
const HTTP_GRACE: Duration = Duration::from_secs(10);

/// Timeout for `sendMessage`.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected Telegram channel.
pub struct Telegram {
    /// Bot API base URL without a trailing slash.
    api_base: String,
    /// Long-poll timeout in seconds.
    poll_timeout_s: u32,
    /// The bot's identity, to recognise mentions in groups (from `getMe`,
    /// cached in plugin state); `None` until known.
    bot: Option<api::Bot>,
    /// Whether this instance already asked `getMe` (once is enough).
    asked_me: bool,
}

impl Telegram {
    /// The bot's identity: from state, else one `getMe` per instance. A
    /// failure only costs mention detection, so it is logged, not returned.
    fn bot(&mut self) -> Option<&api::Bot> {
        if self.bot.is_none() && !self.asked_me {
            self.asked_me = true;
            self.bot = state::get_string("bot").as_deref().and_then(api::Bot::from_state);
            if self.bot.is_none() {
                let me = Request::get(api::method_url(&self.api_base, "getMe"))
                    .header("accept", "application/json")
                    .timeout(SEND_TIMEOUT)
                    .send()
                    .map_err(ChannelError::from)
                    .and_then(|r| api::parse_get_me(r.status, &r.body));
                match me {
                    Ok(bot) => {
                        if let Err(e) = state::set_string("bot", &bot.to_state()) {
                            log::warn(&format!("telegram: cannot cache the bot identity: {e}"));
                        }
                        self.bot = Some(bot);
                    }
                    Err(e) => log::warn(&format!("telegram: getMe failed ({e:?}); mentions of the bot in groups are not recognised")),
                }
            }
        }
        self.bot.as_ref()
    }
}

impl Channel for Telegram {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "telegram".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Poll],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        let raw_base = config::get("api_base").unwrap_or_else(|| DEFAULT_API_BASE.into());
        let api_base = api::normalize_api_base(&raw_base)?;
        let poll_timeout_s = config::get_or("poll_timeout_s", DEFAULT_POLL_TIMEOUT_S)?;
        log::debug(&format!("telegram: api_base={api_base} poll_timeout_s={poll_timeout_s}"));
        Ok(Telegram { api_base, poll_timeout_s, bot: None, asked_me: false })
    }

    fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let offset = api::parse_cursor(cursor.as_deref());
        if let (None, Some(bad)) = (offset, cursor.as_deref()) {
            log::warn(&format!("telegram: ignoring malformed cursor {bad:?}; polling without offset"));
        }
        let url = api::get_updates_url(&self.api_base, offset, self.poll_timeout_s);
        let response = Request::get(url)
            .header("accept", "application/json")
            .timeout(Duration::from_secs(u64::from(self.poll_timeout_s)) + HTTP_GRACE)
            .send()?;
        let bot = self.bot().cloned();
        let result = api::parse_updates(response.status, &response.body, offset, now_ms(), bot.as_ref())?;
        if !result.messages.is_empty() {
            log::debug(&format!(
                "telegram: {} new message(s), next offset {}",
                result.messages.len(),
                result.cursor.as_deref().unwrap_or("-")
            ));
        }
        Ok(result)
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        let body = api::send_message_body(&message);
        let response = Request::post(api::method_url(&self.api_base, "sendMessage"))
            .header("accept", "application/json")
            .json(&body)
            .timeout(SEND_TIMEOUT)
            .send()?;
        api::parse_send(response.status, &response.body, &message.conversation)
    }
}

kata_sdk::export_channel!(Telegram);
