//! # kata-discord: a Discord channel for kata
//!
//! Ingress is the Gateway websocket, opened by the host: `subscribe` asks
//! Get Gateway Bot for the URL (which also checks the token) and returns
//! it — or the session's `resume_gateway_url` when there is a session to
//! resume. `on_frame` answers HELLO with IDENTIFY or RESUME (the token is a
//! `{{secret:bot_token}}` placeholder the host fills in), heartbeats on the
//! host's tick, keeps READY's session and the sequence number in host state,
//! and turns MESSAGE_CREATE dispatches into messages. Replies are Create
//! Message calls with the outbox idempotency key as `nonce` and
//! `enforce_nonce`; their actions are buttons (feature `buttons`), and a
//! press (INTERACTION_CREATE) is acknowledged (DEFERRED_UPDATE_MESSAGE) and
//! delivered as a message whose text is the button's id. A press replayed
//! after a crash is acknowledged again (Discord refuses: logged) and stored
//! once (its id is the interaction's). See README.md for setup and the mapping of threads,
//! mentions and groups.

pub mod api;
pub mod gateway;

use gateway::{Gateway, Saved};
use kata_sdk::prelude::*;
use serde_json::Value;
use std::time::Duration;

/// Timeout for REST calls.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the host ticks `on_frame` so the plugin can heartbeat on time.
const DEFAULT_TICK_MS: u32 = 1000;
/// Where the gateway state lives in host state.
const STATE_KEY: &str = "gateway";

/// A connected Discord channel instance.
pub struct Discord {
    api_base: String,
    tick_ms: u32,
    gw: Gateway,
    /// What is in host state, to write only changes.
    stored: Saved,
}

impl Discord {
    /// Write the gateway state when it changed.
    fn persist(&mut self) {
        if self.gw.saved != self.stored {
            if let Err(e) = state::set_string(STATE_KEY, &self.gw.saved.to_json()) {
                log::warn(&format!("discord: cannot keep the gateway session: {e}"));
            }
            self.stored = self.gw.saved.clone();
        }
    }

    /// The parent channel of thread `thread`, from state or `GET /channels/{id}`.
    fn thread_parent(&self, thread: &str) -> Option<String> {
        let key = format!("parent:{thread}");
        if let Some(p) = state::get_string(&key) {
            return Some(p);
        }
        let r = Request::get(format!("{}/channels/{thread}", self.api_base))
            .header("authorization", api::AUTHORIZATION)
            .header("user-agent", api::USER_AGENT)
            .timeout(API_TIMEOUT)
            .send();
        match r {
            Ok(r) => {
                let parent = api::parse_thread_parent(r.status, &r.body)?;
                let _ = state::set_string(&key, &parent);
                Some(parent)
            }
            Err(e) => {
                log::warn(&format!("discord: cannot look up the parent of thread {thread}: {e}"));
                None
            }
        }
    }

    fn to_message(&self, d: &Value) -> Option<Message> {
        let parent = api::thread_of(d).and_then(|t| self.thread_parent(&t));
        api::message(d, self.gw.saved.bot_id.as_deref(), parent, now_ms())
    }

    /// A button press as a message, acknowledged first (Discord wants an
    /// answer within 3 s, else the person sees "This interaction failed").
    fn press(&self, d: &Value) -> Option<Message> {
        let message = api::interaction(d, None, now_ms())?;
        if let Some((path, body)) = api::interaction_ack(d) {
            let r = Request::post(format!("{}{path}", self.api_base))
                .header("user-agent", api::USER_AGENT)
                .json(&body)
                .timeout(API_TIMEOUT)
                .send();
            match r {
                Ok(r) if (200..300).contains(&r.status) => {}
                Ok(r) => {
                    log::warn(&format!("discord: {:?}", api::map_error(r.status, r.header("retry-after"), &r.body, "interaction callback")))
                }
                Err(e) => log::warn(&format!("discord: cannot acknowledge a button press: {e}")),
            }
        }
        let parent = api::interaction_thread(d).and_then(|t| self.thread_parent(&t));
        Some(if parent.is_some() { api::interaction(d, parent, now_ms())? } else { message })
    }
}

impl Channel for Discord {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "discord".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Subscribe],
            features: vec![Feature::Buttons],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        let api_base = api::normalize_api_base(&config::get("api_base").unwrap_or_else(|| api::DEFAULT_API_BASE.into()))?;
        let tick_ms: u32 = config::get_or("heartbeat_tick_ms", DEFAULT_TICK_MS)?;
        if !(10..=10_000).contains(&tick_ms) {
            return Err(ChannelError::InvalidConfig(format!("config key `heartbeat_tick_ms` must be 10..=10000, got {tick_ms}")));
        }
        let stored = state::get_string(STATE_KEY).map(|s| Saved::from_json(&s)).unwrap_or_default();
        Ok(Discord { api_base, tick_ms, gw: Gateway::new(stored.clone()), stored })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        Err(ChannelError::Unsupported)
    }

    /// Get Gateway Bot (a refused token fails here, as `auth-failed`), then
    /// resume the saved session or start a new one.
    fn subscribe(&mut self) -> Result<Subscription, ChannelError> {
        let r = Request::get(format!("{}/gateway/bot", self.api_base))
            .header("authorization", api::AUTHORIZATION)
            .header("user-agent", api::USER_AGENT)
            .timeout(API_TIMEOUT)
            .send()?;
        let gateway_url = api::parse_gateway_bot(r.status, r.header("retry-after"), &r.body)?;
        // Everything the last connection's frames brought is stored by now.
        self.gw.saved.seq = self.gw.seq.or(self.gw.saved.seq);
        let planned = self.gw.plan(&gateway_url);
        self.persist();
        let url = planned?;
        log::debug(&format!(
            "discord: {} at {}",
            if self.gw.resuming() { "resuming" } else { "identifying" },
            url.split('?').next().unwrap_or("")
        ));
        Ok(Subscription::websocket(url).heartbeat(self.tick_ms))
    }

    fn on_frame(&mut self, frame: Frame) -> Result<FrameResult, ChannelError> {
        // The host has stored what the previous frame brought: its sequence
        // number may now be the one to resume from.
        self.gw.saved.seq = self.gw.seq.or(self.gw.saved.seq);
        if frame.is_heartbeat() {
            let r = self.gw.tick(now_ms());
            self.persist();
            return r.map(FrameResult::reply);
        }
        let Some(text) = frame.as_text() else { return Ok(FrameResult::default()) };
        let result = self.gw.handle(text, now_ms());
        let step = match result {
            Ok(step) => step,
            Err(e) => {
                self.persist();
                log::info(&format!("discord: {e:?}"));
                return Err(e);
            }
        };
        let message = match (&step.message, &step.interaction) {
            (Some(d), _) => self.to_message(d),
            (None, Some(d)) => self.press(d),
            _ => None,
        };
        if message.is_none() {
            // Nothing to store: this frame's sequence number is safe to keep now.
            self.gw.saved.seq = self.gw.seq.or(self.gw.saved.seq);
        }
        self.persist();
        Ok(FrameResult { messages: message.into_iter().collect(), replies: step.replies })
    }

    /// Create Message in the thread (a channel) or the conversation, each
    /// part with a nonce from the idempotency key and `enforce_nonce`.
    fn send(&mut self, msg: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        let url = format!("{}/channels/{}/messages", self.api_base, api::target_channel(&msg));
        let mut first = None;
        for body in api::message_bodies(&msg) {
            let r = Request::post(url.clone())
                .header("authorization", api::AUTHORIZATION)
                .header("user-agent", api::USER_AGENT)
                .json(&body)
                .timeout(API_TIMEOUT)
                .send()?;
            let id = api::parse_created(r.status, r.header("retry-after"), &r.body)?;
            first.get_or_insert(id);
        }
        Ok(SendReceipt::sent(first.unwrap_or_default()))
    }
}

kata_sdk::export_channel!(Discord);
