//! # kata-telegram: a Telegram Bot API channel for kata
//!
//! Receives messages and button presses by long polling `getUpdates`, sends
//! replies with `sendMessage` (buttons as an inline keyboard) and files with
//! `sendDocument`, and does the v0.1.3 channel actions: typing
//! (`sendChatAction`), edits (`editMessageText`) and reactions
//! (`setMessageReaction`). See README.md for the mapping and its limits.
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
//! `getUpdates` offset (last `update_id` + 1) as a decimal string. A send
//! receipt is `<chat_id>:<message_id>` of the message holding the text, which
//! is what `act(edit)` takes back. A button press is delivered as a message
//! with id `cb:<callback query id>` whose text is the button's id.

pub mod api;

use kata_sdk::prelude::*;
use std::time::Duration;

/// Default Bot API endpoint.
const DEFAULT_API_BASE: &str = "https://api.telegram.org";

/// Default long-poll timeout in seconds.
const DEFAULT_POLL_TIMEOUT_S: u32 = 25;

/// Extra time on top of the long-poll timeout before the HTTP request gives up.
const HTTP_GRACE: Duration = Duration::from_secs(10);

/// Timeout for `sendMessage` and the other short calls.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeout for `sendDocument` (an upload can take a while).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Timeout for `answerCallbackQuery`: only stops a spinner, so it must not
/// hold up a poll for long.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// State key prefix recording the parts of a multi-part send already made,
/// so a retried send (same idempotency key) does not post them twice.
const SENT_PARTS: &str = "sent:";

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

    /// POST `body` as JSON to Bot API method `method`.
    fn call(&self, method: &str, body: &serde_json::Value) -> Result<Response, ChannelError> {
        Ok(Request::post(api::method_url(&self.api_base, method))
            .header("accept", "application/json")
            .json(body)
            .timeout(SEND_TIMEOUT)
            .send()?)
    }

    /// Make one part of a send; its receipt id `<chat_id>:<message_id>`.
    fn send_part(&self, message: &OutboundMessage, part: &api::Part) -> Result<String, ChannelError> {
        let response = match part {
            api::Part::Text(body) => self.call("sendMessage", body)?,
            api::Part::Document { attachment, fields } => {
                let file = &message.attachments[*attachment];
                let (content_type, body) = api::multipart_body(fields, "document", file);
                Request::post(api::method_url(&self.api_base, "sendDocument"))
                    .header("accept", "application/json")
                    .header("content-type", content_type)
                    .body(body)
                    .timeout(UPLOAD_TIMEOUT)
                    .send()?
            }
        };
        Ok(api::parse_send(response.status, &response.body, &message.conversation)?.id)
    }

    /// Answer button presses so the person's client stops its spinner. A
    /// failure is only logged: the press is delivered all the same.
    fn answer_callbacks(&self, messages: &[Message]) {
        for id in api::callback_ids(messages) {
            let answered = Request::post(api::method_url(&self.api_base, "answerCallbackQuery"))
                .header("accept", "application/json")
                .json(&api::answer_callback_body(id))
                .timeout(ANSWER_TIMEOUT)
                .send()
                .map_err(ChannelError::from)
                .and_then(|r| api::parse_ok(r.status, &r.body));
            if let Err(e) = answered {
                log::warn(&format!("telegram: answerCallbackQuery {id} failed ({e:?}); the button press is delivered anyway"));
            }
        }
    }
}

impl Channel for Telegram {
    fn describe() -> ChannelInfo {
        ChannelInfo::new("telegram", env!("CARGO_PKG_VERSION"), vec![IngressMode::Poll]).with_features(vec![
            Feature::Typing,
            Feature::Edit,
            Feature::Reactions,
            Feature::Buttons,
            Feature::Attachments,
        ])
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
        self.answer_callbacks(&result.messages);
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
        let parts = api::plan_send(&message);
        if let [only] = parts.as_slice() {
            return self.send_part(&message, only).map(SendReceipt::sent);
        }
        // Several requests (files): remember the ones made, so a retry of
        // this send (same idempotency key) continues instead of repeating.
        let key = format!("{SENT_PARTS}{}", message.idempotency_key);
        let mut done: Vec<String> = state::get_string(&key).map(|s| s.split_whitespace().map(str::to_string).collect()).unwrap_or_default();
        for part in parts.iter().skip(done.len()) {
            match self.send_part(&message, part) {
                Ok(id) => {
                    done.push(id);
                    if let Err(e) = state::set_string(&key, &done.join(" ")) {
                        log::warn(&format!("telegram: cannot record a sent part ({e}); a retry may send it again"));
                    }
                }
                Err(e) => {
                    if !matches!(e, ChannelError::RateLimited(_) | ChannelError::Network(_)) {
                        state::delete(&key);
                    }
                    return Err(e);
                }
            }
        }
        state::delete(&key);
        let first = done.into_iter().next().ok_or_else(|| ChannelError::Fatal("nothing to send".into()))?;
        Ok(SendReceipt::sent(first))
    }

    fn act(&mut self, action: ChannelAction) -> Result<(), ChannelError> {
        match action {
            ChannelAction::Typing(target) => {
                let r = self.call("sendChatAction", &api::chat_action_body(&target))?;
                api::parse_ok(r.status, &r.body)
            }
            ChannelAction::Edit(edit) => {
                let r = self.call("editMessageText", &api::edit_text_body(&edit)?)?;
                match api::parse_edit(r.status, &r.body)? {
                    api::EditOutcome::Done => Ok(()),
                    // The text is the caption of a file.
                    api::EditOutcome::Caption => {
                        let r = self.call("editMessageCaption", &api::edit_caption_body(&edit)?)?;
                        api::parse_edit(r.status, &r.body).map(drop)
                    }
                }
            }
            ChannelAction::React(reaction) => match api::reaction_body(&reaction)? {
                Some(body) => {
                    let r = self.call("setMessageReaction", &body)?;
                    api::parse_ok(r.status, &r.body)
                }
                None => {
                    log::debug(&format!("telegram: {} is a button press, which cannot carry a reaction", reaction.message_id));
                    Ok(())
                }
            },
        }
    }
}

kata_sdk::export_channel!(Telegram);
