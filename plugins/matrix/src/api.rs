//! Pure Matrix client-server API logic: URLs, the sync filter, parsing
//! `/sync`, `/messages`, `whoami` and send responses, mention and
//! direct-room rules, event bodies and error mapping. Nothing here touches the
//! host, so it is unit-tested natively.

use std::collections::{BTreeMap, BTreeSet};

use kata_sdk::{Attachment, ChannelError, ConversationKind, Message, OutboundMessage};
use serde_json::{Value, json};

/// The `Authorization` header value; the host fills in the token for the
/// granted homeserver only.
pub const AUTH_HEADER: &str = "Bearer {{secret:access_token}}";

/// The event type kata reads and writes.
pub const MESSAGE: &str = "m.room.message";

/// Normalise `homeserver`: an `http(s)://` URL without a trailing slash,
/// query or fragment.
pub fn normalize_homeserver(raw: &str) -> Result<String, ChannelError> {
    let base = raw.trim().trim_end_matches('/');
    let lower = base.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !base.contains(['?', '#', ' ']) => Ok(base.to_string()),
        _ => Err(ChannelError::InvalidConfig(format!(
            "config key `homeserver` must be the homeserver's http(s) base URL, such as \
             \"https://matrix.example.org\" (the part before /_matrix), got {raw:?}"
        ))),
    }
}

/// Percent-encode one path segment or query value: everything but the
/// unreserved characters (RFC 3986), so room ids (`!x:server`), event ids
/// (`$y`) and user ids (`@z:server`) are safe in a path.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `{homeserver}/_matrix/client/v3/{path}`.
pub fn client_url(homeserver: &str, path: &str) -> String {
    format!("{homeserver}/_matrix/client/v3/{path}")
}

/// The sync filter: message and membership events of joined rooms (members
/// lazy-loaded, which also makes the server send each room's member count),
/// invites, and the `m.direct` account data; no presence, receipts, typing.
pub fn sync_filter(timeline_limit: u32) -> Value {
    json!({
        "presence": {"not_types": ["*"]},
        "account_data": {"types": ["m.direct"]},
        "room": {
            "timeline": {"types": [MESSAGE, "m.room.member"], "limit": timeline_limit},
            "state": {"types": ["m.room.member"], "lazy_load_members": true},
            "ephemeral": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]}
        }
    })
}

/// The `/sync` URL: long poll for `timeout_ms` from `since` (none: an
/// initial sync, which never waits).
pub fn sync_url(homeserver: &str, since: Option<&str>, timeout_ms: u32, timeline_limit: u32) -> String {
    let filter = encode(&sync_filter(timeline_limit).to_string());
    match since {
        Some(since) => client_url(homeserver, &format!("sync?since={}&timeout={timeout_ms}&filter={filter}", encode(since))),
        None => client_url(homeserver, &format!("sync?timeout=0&filter={filter}")),
    }
}

/// `/rooms/{room}/messages`, backwards from `from` down to `to` (the
/// previous sync's token): the events a limited timeline left out.
pub fn messages_url(homeserver: &str, room: &str, from: &str, to: &str, limit: u32) -> String {
    let filter = encode(&json!({"types": [MESSAGE, "m.room.member"]}).to_string());
    client_url(
        homeserver,
        &format!("rooms/{}/messages?dir=b&from={}&to={}&limit={limit}&filter={filter}", encode(room), encode(from), encode(to)),
    )
}

/// `PUT /rooms/{room}/send/m.room.message/{txnId}`.
pub fn send_url(homeserver: &str, room: &str, txn_id: &str) -> String {
    client_url(homeserver, &format!("rooms/{}/send/{MESSAGE}/{}", encode(room), encode(txn_id)))
}

/// The transaction id for an outbound message: kata's idempotency key, which
/// stays the same on every retry of the message, so the homeserver answers
/// a retry with the event it already sent instead of posting it again.
/// Keys are kept readable (and short) when they are plain already.
pub fn txn_id(idempotency_key: &str) -> String {
    let plain = idempotency_key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if plain && !idempotency_key.is_empty() && idempotency_key.len() <= 200 {
        format!("kata.{idempotency_key}")
    } else {
        // Stable across retries and instances: a hash of the key.
        format!("kata.h{:016x}", fnv1a(idempotency_key.as_bytes()))
    }
}

/// 64-bit FNV-1a: small, stable, good enough to name a transaction.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The bot account as the homeserver knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// Its user id, e.g. `@kata:example.org`.
    pub user_id: String,
    /// Its display name, when it has one.
    pub display_name: Option<String>,
}

/// The user id from a `whoami` response.
pub fn parse_whoami(status: u16, body: &[u8]) -> Result<String, ChannelError> {
    let v = ok_json(status, body)?;
    str_field(&v, "user_id").ok_or_else(|| ChannelError::Fatal("the homeserver's whoami answer has no user_id".into()))
}

/// The display name from a `profile/{user}/displayname` response (none for
/// a 404 or an empty name; other failures are errors).
pub fn parse_displayname(status: u16, body: &[u8]) -> Result<Option<String>, ChannelError> {
    if status == 404 {
        return Ok(None);
    }
    Ok(str_field(&ok_json(status, body)?, "displayname"))
}

/// The number of joined members from a `joined_members` response.
pub fn parse_joined_members(status: u16, body: &[u8]) -> Result<u64, ChannelError> {
    let v = ok_json(status, body)?;
    Ok(v.get("joined").and_then(Value::as_object).map_or(0, |m| m.len() as u64))
}

/// The event id from a send response.
pub fn parse_send(status: u16, body: &[u8]) -> Result<String, ChannelError> {
    let v = ok_json(status, body)?;
    str_field(&v, "event_id").ok_or_else(|| ChannelError::Fatal("the homeserver accepted the message but returned no event_id".into()))
}

/// A room the bot was invited to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The room.
    pub room: String,
    /// Whether the inviter marked it as a direct chat (`is_direct`).
    pub direct: bool,
}

/// One room's changes in a sync that matter for telling direct rooms from
/// groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomNews {
    /// `summary.m.joined_member_count`, when the server sent it.
    pub joined: Option<u64>,
    /// Whether a membership event arrived (a cached count is then stale).
    pub membership_changed: bool,
}

/// What one `/sync` brought.
#[derive(Debug, Clone, Default)]
pub struct Sync {
    /// The cursor for the next sync.
    pub next_batch: String,
    /// Messages of joined rooms, oldest first per room; `conversation_kind`
    /// is still to be decided ([`room_kind`]) and `mentioned` only reflects
    /// the event itself.
    pub messages: Vec<Message>,
    /// Rooms whose timeline was cut (`limited`): (room, `prev_batch`), to be
    /// paged back to the previous cursor with `/messages`.
    pub gaps: Vec<(String, String)>,
    /// Invitations.
    pub invites: Vec<Invite>,
    /// Member counts and membership changes by room.
    pub rooms: BTreeMap<String, RoomNews>,
    /// The rooms `m.direct` lists, when the sync carried it.
    pub direct_rooms: Option<BTreeSet<String>>,
}

/// Parse a `/sync` response for the bot `me`.
pub fn parse_sync(status: u16, body: &[u8], me: &Me) -> Result<Sync, ChannelError> {
    let v = ok_json(status, body)?;
    let next_batch =
        str_field(&v, "next_batch").ok_or_else(|| ChannelError::Fatal("the homeserver's /sync answer has no next_batch".into()))?;
    let mut out = Sync { next_batch, ..Sync::default() };

    if let Some(events) = v.pointer("/account_data/events").and_then(Value::as_array) {
        for e in events.iter().filter(|e| e.get("type").and_then(Value::as_str) == Some("m.direct")) {
            out.direct_rooms = Some(direct_rooms(e.get("content").unwrap_or(&Value::Null)));
        }
    }

    if let Some(invites) = v.pointer("/rooms/invite").and_then(Value::as_object) {
        for (room, r) in invites {
            let direct = r.pointer("/invite_state/events").and_then(Value::as_array).is_some_and(|evs| {
                evs.iter().any(|e| {
                    e.get("type").and_then(Value::as_str) == Some("m.room.member")
                        && e.get("state_key").and_then(Value::as_str) == Some(me.user_id.as_str())
                        && e.pointer("/content/is_direct").and_then(Value::as_bool) == Some(true)
                })
            });
            out.invites.push(Invite { room: room.clone(), direct });
        }
    }

    if let Some(joined) = v.pointer("/rooms/join").and_then(Value::as_object) {
        for (room, r) in joined {
            let mut news =
                RoomNews { joined: r.pointer("/summary/m.joined_member_count").and_then(Value::as_u64), membership_changed: false };
            let timeline: &[Value] = r.pointer("/timeline/events").and_then(Value::as_array).map_or(&[], Vec::as_slice);
            let state: &[Value] = r.pointer("/state/events").and_then(Value::as_array).map_or(&[], Vec::as_slice);
            let names = member_names(state.iter().chain(timeline));
            news.membership_changed = timeline.iter().any(|e| e.get("type").and_then(Value::as_str) == Some("m.room.member"));
            for e in timeline {
                if let Some(m) = parse_event(room, e, me, &names) {
                    out.messages.push(m);
                }
            }
            if r.pointer("/timeline/limited").and_then(Value::as_bool) == Some(true)
                && let Some(prev) = r.pointer("/timeline/prev_batch").and_then(Value::as_str)
            {
                out.gaps.push((room.clone(), prev.to_string()));
            }
            out.rooms.insert(room.clone(), news);
        }
    }
    Ok(out)
}

/// A page of `/messages` (backwards): its messages oldest first, and the
/// token to continue from (none at the end).
pub fn parse_messages(status: u16, body: &[u8], room: &str, me: &Me) -> Result<(Vec<Message>, Option<String>), ChannelError> {
    let v = ok_json(status, body)?;
    let chunk: &[Value] = v.get("chunk").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    let state: &[Value] = v.get("state").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    let names = member_names(state.iter().chain(chunk));
    let mut messages: Vec<Message> = chunk.iter().filter_map(|e| parse_event(room, e, me, &names)).collect();
    messages.reverse();
    let end = if chunk.is_empty() { None } else { str_field(&v, "end") };
    Ok((messages, end))
}

/// Rooms listed in `m.direct` content (`{user: [room, ...]}`).
fn direct_rooms(content: &Value) -> BTreeSet<String> {
    content
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

/// Display names of members, from `m.room.member` events.
fn member_names<'a>(events: impl Iterator<Item = &'a Value>) -> BTreeMap<String, String> {
    events
        .filter(|e| e.get("type").and_then(Value::as_str) == Some("m.room.member"))
        .filter_map(|e| Some((str_field(e, "state_key")?, e.pointer("/content/displayname")?.as_str()?.to_string())))
        .filter(|(_, n)| !n.is_empty())
        .collect()
}

/// One timeline event as a kata message, when it is a message someone else
/// sent that kata should see: not the bot's own (no echo loops), not a
/// notice (bots talk in notices; answering them makes bot loops), not an
/// edit (the original was answered) and not redacted.
pub fn parse_event(room: &str, e: &Value, me: &Me, names: &BTreeMap<String, String>) -> Option<Message> {
    if e.get("type").and_then(Value::as_str) != Some(MESSAGE) {
        return None;
    }
    let sender = str_field(e, "sender")?;
    if sender == me.user_id {
        return None;
    }
    let event_id = str_field(e, "event_id")?;
    let content = e.get("content")?;
    let msgtype = content.get("msgtype").and_then(Value::as_str)?;
    let relates = content.get("m.relates_to");
    let rel_type = relates.and_then(|r| r.get("rel_type")).and_then(Value::as_str);
    if msgtype == "m.notice" || rel_type == Some("m.replace") {
        return None;
    }
    let body = content.get("body").and_then(Value::as_str).unwrap_or_default();
    let reply_to = relates.and_then(|r| r.pointer("/m.in_reply_to/event_id")).and_then(Value::as_str);
    let (text, attachments) = match msgtype {
        "m.image" | "m.file" | "m.audio" | "m.video" => {
            let info = content.get("info");
            let filename = content.get("filename").and_then(Value::as_str).filter(|f| !f.is_empty());
            // With `filename`, `body` is a caption; without, it is the file name.
            let (name, caption) = match filename {
                Some(f) if f != body => (f.to_string(), body.to_string()),
                _ => (body.to_string(), String::new()),
            };
            let attachment = Attachment {
                name,
                mime_type: info
                    .and_then(|i| i.get("mimetype"))
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                    .unwrap_or("application/octet-stream")
                    .to_string(),
                url: str_field(content, "url").or_else(|| content.pointer("/file/url").and_then(Value::as_str).map(String::from)),
                size: info.and_then(|i| i.get("size")).and_then(Value::as_u64),
            };
            (caption, vec![attachment])
        }
        _ => (if reply_to.is_some() { strip_reply_fallback(body) } else { body.to_string() }, Vec::new()),
    };
    let thread = match rel_type {
        Some("m.thread") => relates.and_then(|r| r.get("event_id")).and_then(Value::as_str).map(String::from),
        _ => None,
    };
    let mentioned = mentions(content, me);
    Some(Message {
        id: event_id,
        conversation: room.to_string(),
        thread,
        sender_name: names.get(&sender).cloned(),
        sender,
        text,
        attachments,
        timestamp_ms: e.get("origin_server_ts").and_then(Value::as_u64).unwrap_or(0),
        raw: serde_json::to_string(e).ok(),
        conversation_kind: ConversationKind::Group,
        mentioned,
    })
}

/// Whether a message's content addresses the bot: `m.mentions.user_ids`
/// names it, or (for clients that do not send `m.mentions`, and for people
/// who just type the name) the body holds its user id or display name as a
/// word, or the formatted body links to it.
pub fn mentions(content: &Value, me: &Me) -> bool {
    let listed = content.pointer("/m.mentions/user_ids").and_then(Value::as_array);
    if listed.is_some_and(|ids| ids.iter().any(|i| i.as_str() == Some(me.user_id.as_str()))) {
        return true;
    }
    let body = content.get("body").and_then(Value::as_str).unwrap_or_default();
    let body = strip_reply_fallback(body);
    if contains_word(&body, &me.user_id) {
        return true;
    }
    if let Some(name) = me.display_name.as_deref().filter(|n| n.chars().count() >= 2)
        && contains_word(&body, name)
    {
        return true;
    }
    let formatted = content.get("formatted_body").and_then(Value::as_str).unwrap_or_default();
    let link = format!("matrix.to/#/{}", me.user_id);
    let link_encoded = format!("matrix.to/#/{}", me.user_id.replace('@', "%40").replace(':', "%3A"));
    formatted.contains(&link) || formatted.contains(&link_encoded)
}

/// Whether `needle` occurs in `hay` (case-insensitively) with no letter or
/// digit right before or after it.
fn contains_word(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let hay = hay.to_lowercase();
    let needle = needle.to_lowercase();
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut from = 0;
    while let Some(i) = hay[from..].find(&needle) {
        let start = from + i;
        let end = start + needle.len();
        if !word(hay[..start].chars().next_back()) && !word(hay[end..].chars().next()) {
            return true;
        }
        from = start + needle.chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// A reply's body without the quoted fallback (`> <@user> text` lines and
/// the blank line after them) that older clients put before the answer.
pub fn strip_reply_fallback(body: &str) -> String {
    if !body.starts_with("> ") {
        return body.to_string();
    }
    let mut lines = body.lines().peekable();
    while lines.peek().is_some_and(|l| l.starts_with('>')) {
        lines.next();
    }
    if lines.peek().is_some_and(|l| l.is_empty()) {
        lines.next();
    }
    lines.collect::<Vec<_>>().join("\n")
}

/// Whether a room is a direct conversation: `m.direct` or the invitation
/// says so, or only the bot and one other person are in it.
pub fn room_kind(in_m_direct: bool, invited_as_direct: bool, joined_members: Option<u64>) -> ConversationKind {
    if in_m_direct || invited_as_direct || joined_members.is_some_and(|n| n <= 2) {
        ConversationKind::Direct
    } else {
        ConversationKind::Group
    }
}

/// The content of an outbound `m.room.message`: plain text, in the thread
/// and as a reply to the message it answers when kata says so. `m.mentions`
/// is empty: echoing a text that names someone must not ping them.
pub fn message_content(msg: &OutboundMessage) -> Value {
    let mut content = json!({"msgtype": "m.text", "body": msg.text, "m.mentions": {}});
    let thread = msg.thread.as_deref().filter(|t| !t.is_empty());
    let reply_to = msg.reply_to.as_deref().filter(|r| r.starts_with('$'));
    match (thread, reply_to) {
        (Some(root), Some(reply)) => {
            content["m.relates_to"] =
                json!({"rel_type": "m.thread", "event_id": root, "is_falling_back": false, "m.in_reply_to": {"event_id": reply}});
        }
        // In a thread without a reply: the fallback points at the root, for
        // clients that do not show threads.
        (Some(root), None) => {
            content["m.relates_to"] =
                json!({"rel_type": "m.thread", "event_id": root, "is_falling_back": true, "m.in_reply_to": {"event_id": root}});
        }
        (None, Some(reply)) => content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": reply}}),
        (None, None) => {}
    }
    content
}

/// The JSON of a successful response, or the mapped error.
fn ok_json(status: u16, body: &[u8]) -> Result<Value, ChannelError> {
    if !(200..300).contains(&status) {
        return Err(map_error(status, body, None));
    }
    serde_json::from_slice(body).map_err(|e| ChannelError::Fatal(format!("the homeserver answered HTTP {status} with invalid JSON: {e}")))
}

/// Map a failed response to a channel error (`retry_after` is the
/// `Retry-After` header in seconds, when the server sent one):
///
/// - 401, or `M_UNKNOWN_TOKEN` / `M_MISSING_TOKEN`: the token was refused →
///   `auth-failed`;
/// - 429 or `M_LIMIT_EXCEEDED`: `rate-limited` for `retry_after_ms` (the
///   body, else the header, else 1 s);
/// - 5xx (and 408): transient → `network`;
/// - anything else → `fatal` with the server's `errcode` and `error`.
pub fn map_error(status: u16, body: &[u8], retry_after: Option<&str>) -> ChannelError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let errcode = v.get("errcode").and_then(Value::as_str).unwrap_or_default();
    let error = v.get("error").and_then(Value::as_str).map(String::from).unwrap_or_else(|| excerpt(body));
    let what = if errcode.is_empty() { format!("HTTP {status}: {error}") } else { format!("HTTP {status} {errcode}: {error}") };
    if status == 401 || matches!(errcode, "M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN") {
        return ChannelError::AuthFailed(format!("the homeserver refused the access token (secret `access_token`): {what}"));
    }
    if status == 429 || errcode == "M_LIMIT_EXCEEDED" {
        let ms = v
            .get("retry_after_ms")
            .and_then(Value::as_u64)
            .or_else(|| retry_after.and_then(|s| s.trim().parse::<u64>().ok()).map(|s| s.saturating_mul(1000)))
            .unwrap_or(1000);
        return ChannelError::RateLimited(ms);
    }
    match status {
        408 | 500..=599 => ChannelError::Network(format!("homeserver error, {what}")),
        404 if errcode == "M_UNRECOGNIZED" || errcode.is_empty() => ChannelError::Fatal(format!(
            "the homeserver does not know this endpoint ({what}); check config `homeserver` (the base URL before /_matrix)"
        )),
        _ => ChannelError::Fatal(format!("homeserver error, {what}")),
    }
}

/// The start of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty response)".into();
    }
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A non-empty string field.
fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Me {
        Me { user_id: "@kata:localhost".into(), display_name: Some("Kata Bot".into()) }
    }

    /// A sync response as Synapse 1.163 sends it (trimmed to what kata reads).
    const SYNC: &str = r#"{
      "next_batch": "s72595_4483_1934",
      "account_data": {"events": [{"type": "m.direct", "content": {"@ann:localhost": ["!dm:localhost"]}}]},
      "rooms": {
        "invite": {"!new:localhost": {"invite_state": {"events": [
          {"type": "m.room.member", "state_key": "@kata:localhost", "sender": "@ann:localhost", "content": {"membership": "invite", "is_direct": true}}
        ]}}},
        "join": {
          "!grp:localhost": {
            "summary": {"m.joined_member_count": 3},
            "state": {"events": [{"type": "m.room.member", "state_key": "@bob:localhost", "content": {"membership": "join", "displayname": "Bob"}}]},
            "timeline": {"limited": true, "prev_batch": "t1-2", "events": [
              {"type": "m.room.member", "event_id": "$j", "sender": "@cy:localhost", "state_key": "@cy:localhost", "origin_server_ts": 1, "content": {"membership": "join", "displayname": "Cy"}},
              {"type": "m.room.message", "event_id": "$a", "sender": "@bob:localhost", "origin_server_ts": 1700000000000,
               "content": {"msgtype": "m.text", "body": "hello all"}},
              {"type": "m.room.message", "event_id": "$b", "sender": "@cy:localhost", "origin_server_ts": 1700000000001,
               "content": {"msgtype": "m.text", "body": "Kata Bot: ping", "m.mentions": {}}},
              {"type": "m.room.message", "event_id": "$c", "sender": "@kata:localhost", "origin_server_ts": 1700000000002,
               "content": {"msgtype": "m.text", "body": "my own echo"}},
              {"type": "m.room.message", "event_id": "$d", "sender": "@bob:localhost", "origin_server_ts": 1700000000003,
               "content": {"msgtype": "m.text", "body": "in a thread", "m.mentions": {"user_ids": ["@kata:localhost"]},
                           "m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": true, "m.in_reply_to": {"event_id": "$root"}}}},
              {"type": "m.room.message", "event_id": "$e", "sender": "@bob:localhost", "origin_server_ts": 1700000000004,
               "content": {"msgtype": "m.image", "body": "cat.png", "url": "mxc://localhost/abc", "info": {"mimetype": "image/png", "size": 1234}}},
              {"type": "m.room.message", "event_id": "$f", "sender": "@other-bot:localhost", "origin_server_ts": 1, "content": {"msgtype": "m.notice", "body": "beep"}},
              {"type": "m.room.message", "event_id": "$g", "sender": "@bob:localhost", "origin_server_ts": 1,
               "content": {"msgtype": "m.text", "body": "* edited", "m.relates_to": {"rel_type": "m.replace", "event_id": "$a"}}},
              {"type": "m.room.message", "event_id": "$h", "sender": "@bob:localhost", "origin_server_ts": 1, "content": {}}
            ]}
          },
          "!dm:localhost": {"timeline": {"events": [
            {"type": "m.room.message", "event_id": "$x", "sender": "@ann:localhost", "origin_server_ts": 5,
             "content": {"msgtype": "m.text", "body": "> <@kata:localhost> earlier\n\nyes please", "m.relates_to": {"m.in_reply_to": {"event_id": "$old"}}}}
          ]}}
        }
      }
    }"#;

    #[test]
    fn sync_yields_messages_of_others_with_threads_attachments_and_mentions() {
        let s = parse_sync(200, SYNC.as_bytes(), &me()).unwrap();
        assert_eq!(s.next_batch, "s72595_4483_1934");
        let ids: Vec<&str> = s.messages.iter().map(|m| m.id.as_str()).collect();
        // Own message, notice, edit and redacted event are skipped.
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ["$a", "$b", "$d", "$e", "$x"]);
        let by_id = |id: &str| s.messages.iter().find(|m| m.id == id).unwrap().clone();
        let a = by_id("$a");
        assert_eq!(
            (a.conversation.as_str(), a.sender.as_str(), a.sender_name.as_deref()),
            ("!grp:localhost", "@bob:localhost", Some("Bob"))
        );
        assert_eq!((a.text.as_str(), a.timestamp_ms, a.mentioned, a.thread.as_deref()), ("hello all", 1_700_000_000_000, false, None));
        // The display name typed in the body is a mention even with an empty m.mentions.
        assert!(by_id("$b").mentioned);
        assert_eq!(by_id("$b").sender_name.as_deref(), Some("Cy"));
        let d = by_id("$d");
        assert_eq!((d.thread.as_deref(), d.mentioned), (Some("$root"), true));
        let e = by_id("$e");
        assert_eq!(e.text, "");
        assert_eq!(
            e.attachments,
            [Attachment {
                name: "cat.png".into(),
                mime_type: "image/png".into(),
                url: Some("mxc://localhost/abc".into()),
                size: Some(1234)
            }]
        );
        // A reply's quoted fallback is dropped from the text.
        assert_eq!(by_id("$x").text, "yes please");
        assert_eq!(s.gaps, [("!grp:localhost".to_string(), "t1-2".to_string())]);
        assert_eq!(s.invites, [Invite { room: "!new:localhost".into(), direct: true }]);
        assert_eq!(s.rooms["!grp:localhost"], RoomNews { joined: Some(3), membership_changed: true });
        assert_eq!(s.rooms["!dm:localhost"], RoomNews { joined: None, membership_changed: false });
        assert_eq!(s.direct_rooms, Some(BTreeSet::from(["!dm:localhost".to_string()])));
    }

    #[test]
    fn a_file_with_a_caption() {
        let e: Value = serde_json::from_str(
            r#"{"type":"m.room.message","event_id":"$f","sender":"@a:x","origin_server_ts":1,
                "content":{"msgtype":"m.file","body":"the report","filename":"report.pdf","url":"mxc://x/r","info":{"mimetype":"application/pdf"}}}"#,
        )
        .unwrap();
        let m = parse_event("!r:x", &e, &me(), &BTreeMap::new()).unwrap();
        assert_eq!(m.text, "the report");
        assert_eq!(m.attachments[0].name, "report.pdf");
        assert_eq!(m.attachments[0].size, None);
        assert_eq!(m.attachments[0].url.as_deref(), Some("mxc://x/r"));
    }

    #[test]
    fn mention_rules() {
        let c = |v: Value| mentions(&v, &me());
        assert!(c(json!({"body": "hi", "m.mentions": {"user_ids": ["@kata:localhost"]}})));
        assert!(!c(json!({"body": "hi", "m.mentions": {"user_ids": ["@bob:localhost"]}})));
        assert!(c(json!({"body": "@kata:localhost what now?"})));
        assert!(c(json!({"body": "hey kata bot, hi"})));
        assert!(!c(json!({"body": "kata bots are great"})), "a longer word is not the name");
        assert!(!c(json!({"body": "nothing for you"})));
        assert!(c(json!({"body": "x", "formatted_body": "<a href=\"https://matrix.to/#/@kata:localhost\">K</a>"})));
        assert!(c(json!({"body": "x", "formatted_body": "<a href=\"https://matrix.to/#/%40kata%3Alocalhost\">K</a>"})));
        // A quoted reply fallback naming the bot is not a mention by itself.
        assert!(!c(json!({"body": "> <@kata:localhost> said\n\nok"})));
    }

    #[test]
    fn direct_or_group() {
        assert_eq!(room_kind(true, false, Some(5)), ConversationKind::Direct);
        assert_eq!(room_kind(false, true, None), ConversationKind::Direct);
        assert_eq!(room_kind(false, false, Some(2)), ConversationKind::Direct);
        assert_eq!(room_kind(false, false, Some(3)), ConversationKind::Group);
        assert_eq!(room_kind(false, false, None), ConversationKind::Group);
    }

    #[test]
    fn messages_pages_are_reversed_and_end_when_empty() {
        let body = br#"{"chunk":[
            {"type":"m.room.message","event_id":"$3","sender":"@a:x","origin_server_ts":3,"content":{"msgtype":"m.text","body":"three"}},
            {"type":"m.room.message","event_id":"$2","sender":"@a:x","origin_server_ts":2,"content":{"msgtype":"m.text","body":"two"}}
        ],"start":"t9","end":"t7"}"#;
        let (msgs, end) = parse_messages(200, body, "!r:x", &me()).unwrap();
        assert_eq!(msgs.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["two", "three"]);
        assert_eq!(end.as_deref(), Some("t7"));
        let (msgs, end) = parse_messages(200, br#"{"chunk":[],"start":"t7"}"#, "!r:x", &me()).unwrap();
        assert!(msgs.is_empty() && end.is_none());
    }

    fn outbound(thread: Option<&str>, reply_to: Option<&str>) -> OutboundMessage {
        OutboundMessage {
            conversation: "!r:x".into(),
            thread: thread.map(Into::into),
            reply_to: reply_to.map(Into::into),
            text: "hi".into(),
            idempotency_key: "k".into(),
            attachments: vec![],
            actions: vec![],
        }
    }

    #[test]
    fn outbound_content_maps_threads_and_replies() {
        assert_eq!(message_content(&outbound(None, None)), json!({"msgtype": "m.text", "body": "hi", "m.mentions": {}}));
        assert_eq!(message_content(&outbound(None, Some("$q")))["m.relates_to"], json!({"m.in_reply_to": {"event_id": "$q"}}));
        assert_eq!(
            message_content(&outbound(Some("$root"), Some("$q")))["m.relates_to"],
            json!({"rel_type": "m.thread", "event_id": "$root", "is_falling_back": false, "m.in_reply_to": {"event_id": "$q"}})
        );
        assert_eq!(
            message_content(&outbound(Some("$root"), None))["m.relates_to"],
            json!({"rel_type": "m.thread", "event_id": "$root", "is_falling_back": true, "m.in_reply_to": {"event_id": "$root"}})
        );
        // A reply-to that is not an event id is left out rather than sent.
        assert!(message_content(&outbound(None, Some("garbage"))).get("m.relates_to").is_none());
    }

    #[test]
    fn urls_encode_ids_and_keep_the_token_out() {
        assert_eq!(
            send_url("https://m.example.org", "!abc:example.org", "kata.7-1"),
            "https://m.example.org/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/kata.7-1"
        );
        let u = sync_url("http://127.0.0.1:8008", Some("s1_2"), 30000, 50);
        assert!(u.starts_with("http://127.0.0.1:8008/_matrix/client/v3/sync?since=s1_2&timeout=30000&filter=%7B"), "{u}");
        assert!(!u.contains("access_token"));
        assert!(sync_url("http://h", None, 30000, 50).contains("sync?timeout=0&filter="));
        let m = messages_url("http://h", "!r:x", "t1", "s2", 100);
        assert!(m.starts_with("http://h/_matrix/client/v3/rooms/%21r%3Ax/messages?dir=b&from=t1&to=s2&limit=100&filter="), "{m}");
    }

    #[test]
    fn txn_ids_are_stable_per_key() {
        assert_eq!(txn_id("42-1"), "kata.42-1");
        assert_eq!(txn_id("a/b c"), txn_id("a/b c"));
        assert_ne!(txn_id("a/b c"), txn_id("a/b d"));
        assert!(txn_id("a/b c").starts_with("kata.h") && txn_id("a/b c").len() == 22);
    }

    #[test]
    fn homeserver_is_validated() {
        assert_eq!(normalize_homeserver(" https://m.example.org/ ").unwrap(), "https://m.example.org");
        assert!(matches!(normalize_homeserver("m.example.org"), Err(ChannelError::InvalidConfig(m)) if m.contains("homeserver")));
        assert!(normalize_homeserver("https://h/?x").is_err());
    }

    #[test]
    fn errors_map_to_channel_errors() {
        let unknown = br#"{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed.","soft_logout":false}"#;
        assert!(matches!(map_error(401, unknown, None), ChannelError::AuthFailed(m) if m.contains("M_UNKNOWN_TOKEN")));
        assert!(matches!(parse_whoami(401, unknown), Err(ChannelError::AuthFailed(_))));
        let limited = br#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too Many Requests","retry_after_ms":2000}"#;
        assert_eq!(map_error(429, limited, None), ChannelError::RateLimited(2000));
        assert_eq!(parse_send(429, limited), Err(ChannelError::RateLimited(2000)));
        assert_eq!(map_error(429, b"", Some("3")), ChannelError::RateLimited(3000));
        assert_eq!(map_error(429, b"slow", None), ChannelError::RateLimited(1000));
        assert!(matches!(map_error(502, b"<html>bad gateway</html>", None), ChannelError::Network(m) if m.contains("502")));
        let forbidden = br#"{"errcode":"M_FORBIDDEN","error":"User @kata:x not in room !r:x"}"#;
        assert!(matches!(map_error(403, forbidden, None), ChannelError::Fatal(m) if m.contains("not in room")));
        assert!(matches!(map_error(404, b"", None), ChannelError::Fatal(m) if m.contains("homeserver")));
        assert!(matches!(parse_sync(200, b"{}", &me()), Err(ChannelError::Fatal(_))));
        assert!(matches!(parse_sync(200, b"nope", &me()), Err(ChannelError::Fatal(_))));
    }

    #[test]
    fn whoami_profile_members_and_send_receipts() {
        assert_eq!(parse_whoami(200, br#"{"user_id":"@kata:localhost","device_id":"D"}"#).unwrap(), "@kata:localhost");
        assert_eq!(parse_displayname(200, br#"{"displayname":"Kata"}"#).unwrap().as_deref(), Some("Kata"));
        assert_eq!(parse_displayname(404, br#"{"errcode":"M_NOT_FOUND"}"#).unwrap(), None);
        assert_eq!(parse_joined_members(200, br#"{"joined":{"@a:x":{},"@b:x":{},"@c:x":{}}}"#).unwrap(), 3);
        assert_eq!(parse_send(200, br#"{"event_id":"$e1"}"#).unwrap(), "$e1");
    }

    #[test]
    fn reply_fallback_is_stripped_only_when_quoted() {
        assert_eq!(strip_reply_fallback("> <@a:x> one\n> two\n\nthree\nfour"), "three\nfour");
        assert_eq!(strip_reply_fallback("plain > not a quote"), "plain > not a quote");
    }
}
