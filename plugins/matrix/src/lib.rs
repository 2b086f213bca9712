//! # kata-matrix: a Matrix channel for kata
//!
//! Receives messages by long polling the client-server API's `/sync` (the
//! `since` token is kata's poll cursor, stored with the messages it brought)
//! and sends replies with `PUT /rooms/{room}/send/m.room.message/{txnId}`,
//! where the transaction id comes from kata's outbox idempotency key: a retry
//! of the same reply, even after a crash, gets the event the homeserver
//! already made instead of a second one.
//!
//! ## Configuration (`[plugins.matrix]` in kata.toml)
//!
//! | key               | default  | meaning                                                  |
//! |-------------------|----------|----------------------------------------------------------|
//! | `homeserver`      | required | base URL, e.g. `https://matrix.example.org`              |
//! | `auto_join`       | `false`  | accept room invitations                                  |
//! | `sync_timeout_ms` | `30000`  | `/sync` long-poll timeout                                |
//! | `timeline_limit`  | `50`     | events per room per sync; kata pages back past it        |
//! | `initial_sync`    | `skip`   | `skip` ignores history on the very first start, `recent` answers it |
//!
//! The access token is the secret `access_token`; the plugin only writes
//! `Authorization: Bearer {{secret:access_token}}` and the host fills it in
//! for the granted homeserver.
//!
//! ## Mapping
//!
//! A kata message id is the event id; the conversation is the room id; a
//! message in a thread (`m.relates_to.rel_type = m.thread`) has the thread
//! root's event id as its thread. A room is direct when `m.direct` or the
//! invitation says so, or when only the bot and one person are in it;
//! otherwise it is a group, where a message is `mentioned` when
//! `m.mentions` names the bot or the body holds its user id or display name.

pub mod api;

use std::collections::BTreeSet;
use std::time::Duration;

use kata_sdk::prelude::*;

/// Default `/sync` long-poll timeout.
const DEFAULT_SYNC_TIMEOUT_MS: u32 = 30_000;
/// Default timeline events per room in one sync.
const DEFAULT_TIMELINE_LIMIT: u32 = 50;
/// Extra time on top of the long-poll timeout before the request gives up.
const HTTP_GRACE: Duration = Duration::from_secs(15);
/// Timeout of every other request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pages of `/messages` read to fill one gap (× [`PAGE`] events).
const MAX_GAP_PAGES: u32 = 10;
/// Events per `/messages` page.
const PAGE: u32 = 100;

/// A connected Matrix channel.
pub struct Matrix {
    homeserver: String,
    me: api::Me,
    auto_join: bool,
    sync_timeout_ms: u32,
    timeline_limit: u32,
    initial_recent: bool,
}

/// Read a response, mapping a failure status to a channel error.
fn checked(r: Response) -> Result<Response, ChannelError> {
    if r.is_success() { Ok(r) } else { Err(api::map_error(r.status, &r.body, r.header("retry-after"))) }
}

impl Matrix {
    fn get(&self, url: String, timeout: Duration) -> Result<Response, ChannelError> {
        let r = Request::get(url).header("authorization", api::AUTH_HEADER).header("accept", "application/json").timeout(timeout).send()?;
        checked(r)
    }

    /// Page back through a room's timeline from `from` to the previous
    /// cursor `to`: the messages a `limited` sync left out, oldest first.
    fn fill_gap(&self, room: &str, from: &str, to: &str) -> Result<Vec<Message>, ChannelError> {
        let mut pages: Vec<Vec<Message>> = Vec::new();
        let mut from = from.to_string();
        for _ in 0..MAX_GAP_PAGES {
            let r = self.get(api::messages_url(&self.homeserver, room, &from, to, PAGE), REQUEST_TIMEOUT)?;
            let (messages, end) = api::parse_messages(r.status, &r.body, room, &self.me)?;
            pages.push(messages);
            match end {
                Some(end) if end != from => from = end,
                _ => return Ok(pages.into_iter().rev().flatten().collect()),
            }
        }
        log::warn(&format!("matrix: more than {} events missed in {room}; the oldest were not fetched", MAX_GAP_PAGES * PAGE));
        Ok(pages.into_iter().rev().flatten().collect())
    }

    /// Whether `room` is direct: `m.direct`, the invitation, or its member
    /// count (cached in state; asked once when unknown).
    fn kind(&self, room: &str) -> ConversationKind {
        let in_m_direct = state::get_string("m.direct").is_some_and(|s| s.lines().any(|l| l == room));
        let invited_direct = state::get(&format!("direct:{room}")).is_some();
        let mut members = state::get_string(&format!("members:{room}")).and_then(|s| s.parse::<u64>().ok());
        if !in_m_direct && !invited_direct && members.is_none() {
            let url = api::client_url(&self.homeserver, &format!("rooms/{}/joined_members", api::encode(room)));
            match self.get(url, REQUEST_TIMEOUT).and_then(|r| api::parse_joined_members(r.status, &r.body)) {
                Ok(n) => {
                    let _ = state::set_string(&format!("members:{room}"), &n.to_string());
                    members = Some(n);
                }
                Err(e) => log::warn(&format!("matrix: cannot count the members of {room} ({e:?}); treating it as a group")),
            }
        }
        api::room_kind(in_m_direct, invited_direct, members)
    }

    /// Remember what a sync said about rooms, and answer invitations.
    fn note_rooms(&self, sync: &api::Sync) {
        if let Some(direct) = &sync.direct_rooms {
            let _ = state::set_string("m.direct", &direct.iter().cloned().collect::<Vec<_>>().join("\n"));
        }
        for (room, news) in &sync.rooms {
            let key = format!("members:{room}");
            match news.joined {
                Some(n) => {
                    let _ = state::set_string(&key, &n.to_string());
                }
                None if news.membership_changed => state::delete(&key),
                None => {}
            }
        }
        for invite in &sync.invites {
            if invite.direct {
                let _ = state::set_string(&format!("direct:{}", invite.room), "1");
            }
            if !self.auto_join {
                log::info(&format!("matrix: invited to {}; set config auto_join = true to accept invitations", invite.room));
                continue;
            }
            let url = api::client_url(&self.homeserver, &format!("join/{}", api::encode(&invite.room)));
            let joined = Request::post(url)
                .header("authorization", api::AUTH_HEADER)
                .json(&serde_json::json!({}))
                .timeout(REQUEST_TIMEOUT)
                .send()
                .map_err(ChannelError::from)
                .and_then(checked);
            match joined {
                Ok(_) => log::info(&format!("matrix: joined {}", invite.room)),
                Err(e) => log::warn(&format!("matrix: cannot join {}: {e:?}", invite.room)),
            }
        }
    }
}

impl Channel for Matrix {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "matrix".into(), version: env!("CARGO_PKG_VERSION").into(), ingress: vec![IngressMode::Poll], features: vec![] }
    }

    fn connect() -> Result<Self, ChannelError> {
        let homeserver = api::normalize_homeserver(&config::require("homeserver")?)?;
        let auto_join = config::get_or("auto_join", false)?;
        let sync_timeout_ms = config::get_or("sync_timeout_ms", DEFAULT_SYNC_TIMEOUT_MS)?;
        let timeline_limit = config::get_or("timeline_limit", DEFAULT_TIMELINE_LIMIT)?.max(1);
        let initial_recent = match config::get("initial_sync").as_deref().map(str::trim) {
            None | Some("skip") => false,
            Some("recent") => true,
            Some(other) => {
                return Err(ChannelError::InvalidConfig(format!(
                    "config key `initial_sync` must be \"skip\" or \"recent\", got {other:?}"
                )));
            }
        };
        let mut m = Matrix {
            homeserver,
            me: api::Me { user_id: String::new(), display_name: None },
            auto_join,
            sync_timeout_ms,
            timeline_limit,
            initial_recent,
        };
        // Who the bot is (to skip its own messages and see mentions of it);
        // also the cheap credential check: a refused token fails here.
        let r = m.get(api::client_url(&m.homeserver, "account/whoami"), REQUEST_TIMEOUT)?;
        m.me.user_id = api::parse_whoami(r.status, &r.body)?;
        let profile = api::client_url(&m.homeserver, &format!("profile/{}/displayname", api::encode(&m.me.user_id)));
        let named = Request::get(profile).header("authorization", api::AUTH_HEADER).timeout(REQUEST_TIMEOUT).send();
        match named.map_err(ChannelError::from).and_then(|r| api::parse_displayname(r.status, &r.body)) {
            Ok(name) => m.me.display_name = name,
            Err(e) => log::warn(&format!("matrix: cannot read the bot's display name ({e:?}); mentions by name are not recognised")),
        }
        log::debug(&format!("matrix: connected to {} as {}", m.homeserver, m.me.user_id));
        Ok(m)
    }

    fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let since = cursor.as_deref().map(str::trim).filter(|c| !c.is_empty());
        let started = now_ms();
        let url = api::sync_url(&self.homeserver, since, self.sync_timeout_ms, self.timeline_limit);
        let r = self.get(url, Duration::from_millis(u64::from(self.sync_timeout_ms)) + HTTP_GRACE)?;
        let sync = api::parse_sync(r.status, &r.body, &self.me)?;
        self.note_rooms(&sync);

        let mut messages = Vec::new();
        if let Some(since) = since {
            for (room, prev) in &sync.gaps {
                messages.extend(self.fill_gap(room, prev, since)?);
            }
        }
        messages.extend(sync.messages);
        if since.is_none() && !self.initial_recent && !messages.is_empty() {
            log::info(&format!(
                "matrix: first sync: {} earlier message(s) left unanswered (config initial_sync = \"recent\" answers them)",
                messages.len()
            ));
            messages.clear();
        }
        let mut seen = BTreeSet::new();
        messages.retain(|m| seen.insert(m.id.clone()));
        for m in &mut messages {
            m.conversation_kind = self.kind(&m.conversation);
            if m.conversation_kind == ConversationKind::Direct {
                m.mentioned = true;
            }
        }
        // /sync waited already; after a quick empty answer let the host pause.
        let quick = now_ms().saturating_sub(started) < 1000;
        let next_poll_ms = if messages.is_empty() && quick { None } else { Some(0) };
        Ok(PollResult { messages, cursor: Some(sync.next_batch), next_poll_ms })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        let room = message.conversation.trim();
        if !room.starts_with('!') {
            return Err(ChannelError::Fatal(format!("{room:?} is not a Matrix room id (they start with '!')")));
        }
        let url = api::send_url(&self.homeserver, room, &api::txn_id(&message.idempotency_key));
        let r = Request::put(url)
            .header("authorization", api::AUTH_HEADER)
            .header("accept", "application/json")
            .json(&api::message_content(&message))
            .timeout(REQUEST_TIMEOUT)
            .send()?;
        let r = checked(r)?;
        Ok(SendReceipt::sent(api::parse_send(r.status, &r.body)?))
    }
}

kata_sdk::export_channel!(Matrix);
