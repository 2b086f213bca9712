//! Pure Discord REST logic and message mapping: URLs, request bodies,
//! response parsing and error mapping. Nothing here touches the host, so it
//! is unit-tested natively.
//!
//! Shapes from Discord's documentation (github.com/discord/discord-api-docs):
//! - Get Gateway Bot, `GET /gateway/bot` (`url`, `shards`,
//!   `session_start_limit`): <https://discord.com/developers/docs/events/gateway#get-gateway-bot>;
//! - the message object (`id`, `channel_id`, `author`, `content`,
//!   `mentions`, `attachments`, `message_reference`, `referenced_message`,
//!   `type`) and MESSAGE_CREATE's extra fields (`guild_id`, `member`,
//!   `channel_type`): <https://discord.com/developers/docs/resources/message>,
//!   <https://discord.com/developers/docs/events/gateway-events#message-create>;
//! - attachments (`filename`, `content_type`, `size`, `url`): same page;
//! - Create Message, `POST /channels/{id}/messages` with `content` (up to
//!   2000 characters), `message_reference` (`message_id`,
//!   `fail_if_not_exists`), `nonce` (up to 25 characters) and
//!   `enforce_nonce` ("checked for uniqueness in the past few minutes; if
//!   another message was created by the same author with the same nonce,
//!   that message will be returned and no new message will be created"),
//!   `allowed_mentions`: same page;
//! - channel types (DM 1, GROUP_DM 3, threads 10, 11, 12) and a thread's
//!   `parent_id`: <https://discord.com/developers/docs/resources/channel>;
//! - snowflakes (milliseconds since 2015-01-01 in the top 42 bits):
//!   <https://discord.com/developers/docs/reference#snowflakes>;
//! - HTTP 429 with a JSON body `{"message", "retry_after" (seconds, a
//!   float), "global"}` and `Retry-After`:
//!   <https://discord.com/developers/docs/topics/rate-limits>; 401 for a bad
//!   token; `Authorization: Bot TOKEN` and a `User-Agent: DiscordBot (url,
//!   version)`: <https://discord.com/developers/docs/reference#authentication>;
//! - message components: Create Message's `components`, action rows (type 1,
//!   up to 5 per message, up to 5 buttons each) of buttons (type 2, `style`
//!   1 primary / 4 danger, `label` up to 80 characters, `custom_id` 1–100
//!   characters): <https://discord.com/developers/docs/components/reference>;
//! - a press arrives as INTERACTION_CREATE (the interaction object: `id`,
//!   `token`, `type` 3 MESSAGE_COMPONENT, `data.custom_id`,
//!   `data.component_type`, `channel_id`, `channel`, `guild_id`, `member.user`
//!   in a guild or `user` in a DM, `message`), answered within 3 s with
//!   `POST /interactions/{id}/{token}/callback` `{"type": 6}`
//!   (DEFERRED_UPDATE_MESSAGE):
//!   <https://discord.com/developers/docs/interactions/receiving-and-responding>.

use kata_sdk::{Action, Attachment, ChannelError, ConversationKind, Message, OutboundMessage};
use serde_json::{Value, json};

/// Discord's REST API, version 10.
pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";

/// Discord's REST API wants a User-Agent of this form.
pub const USER_AGENT: &str = concat!("DiscordBot (kata-discord, ", env!("CARGO_PKG_VERSION"), ")");

/// The `Authorization` header: the host fills in the token.
pub const AUTHORIZATION: &str = "Bot {{secret:bot_token}}";

/// The longest `content` Discord takes, in characters.
pub const MAX_CONTENT: usize = 2000;

/// The longest `nonce` Discord takes.
pub const MAX_NONCE: usize = 25;

/// Milliseconds from the Unix epoch to Discord's (2015-01-01T00:00:00Z).
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Normalise the `api_base` config value: an `http(s)://` URL without a
/// trailing slash, query or fragment.
pub fn normalize_api_base(raw: &str) -> Result<String, ChannelError> {
    let base = raw.trim().trim_end_matches('/');
    let lower = base.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !base.contains(['?', '#']) => Ok(base.to_string()),
        _ => Err(ChannelError::InvalidConfig(format!(
            "config key `api_base` must be an http(s) URL such as \"{DEFAULT_API_BASE}\", got {raw:?}"
        ))),
    }
}

/// The websocket URL from a Get Gateway Bot response.
pub fn parse_gateway_bot(status: u16, retry_after: Option<&str>, body: &[u8]) -> Result<String, ChannelError> {
    let v = ok_json(status, retry_after, body, "GET /gateway/bot")?;
    let url = v.get("url").and_then(Value::as_str).unwrap_or_default().to_string();
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("wss://") || lower.starts_with("ws://")) {
        return Err(ChannelError::Fatal(format!("Discord's GET /gateway/bot returned {url:?}, which is not a websocket URL")));
    }
    Ok(url)
}

/// The `parent_id` of a thread channel from `GET /channels/{id}`.
pub fn parse_thread_parent(status: u16, body: &[u8]) -> Option<String> {
    if !(200..300).contains(&status) {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let thread = matches!(v.get("type").and_then(Value::as_u64), Some(10..=12));
    thread.then(|| id_text(v.get("parent_id")?)).flatten()
}

/// The id of the message a Create Message call made.
pub fn parse_created(status: u16, retry_after: Option<&str>, body: &[u8]) -> Result<String, ChannelError> {
    let v = ok_json(status, retry_after, body, "create message")?;
    v.get("id").and_then(id_text).ok_or_else(|| ChannelError::Fatal("Discord's create message returned no id".into()))
}

/// The parsed body of a 2xx response, or the error it maps to.
fn ok_json(status: u16, retry_after: Option<&str>, body: &[u8], what: &str) -> Result<Value, ChannelError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if (200..300).contains(&status) => Ok(v),
        _ => Err(map_error(status, retry_after, body, what)),
    }
}

/// Map a failed REST call to a channel error.
///
/// - 401: the token was refused → `auth-failed`;
/// - 429: `rate-limited` for the body's `retry_after` seconds (a float),
///   else the `Retry-After` header, else 1 s;
/// - 5xx: `network`;
/// - anything else (403 missing permissions, 404 unknown channel, 400): `fatal`
///   with Discord's `message` and `code`.
pub fn map_error(status: u16, retry_after: Option<&str>, body: &[u8], what: &str) -> ChannelError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = parsed.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| excerpt(body));
    let code = parsed.get("code").and_then(Value::as_u64).map(|c| format!(" (code {c})")).unwrap_or_default();
    match status {
        401 => ChannelError::AuthFailed(format!("Discord refused the bot token (secret `bot_token`) on {what}: {message}")),
        429 => {
            let secs = parsed.get("retry_after").and_then(Value::as_f64).or_else(|| retry_after.and_then(|s| s.trim().parse().ok()));
            ChannelError::RateLimited(secs.map_or(1000, |s| (s.max(0.0) * 1000.0).ceil() as u64))
        }
        500..=599 => ChannelError::Network(format!("Discord {what}: HTTP {status}: {message}")),
        403 => ChannelError::Fatal(format!(
            "Discord {what}: {message}{code} — the bot lacks a permission there (View Channel, Send Messages, Read Message History)"
        )),
        _ => ChannelError::Fatal(format!("Discord {what}: HTTP {status}: {message}{code}")),
    }
}

/// The start of a body for error messages.
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

/// A snowflake (given as a string, or occasionally a number) as text.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// When a snowflake was made, in milliseconds since the Unix epoch.
pub fn snowflake_ms(id: &str) -> Option<u64> {
    id.parse::<u64>().ok().map(|n| (n >> 22) + DISCORD_EPOCH_MS)
}

/// The thread a MESSAGE_CREATE was posted in: its channel id when
/// `channel_type` is a thread type (10, 11, 12).
pub fn thread_of(d: &Value) -> Option<String> {
    matches!(d.get("channel_type").and_then(Value::as_u64), Some(10..=12)).then(|| d.get("channel_id").and_then(id_text)).flatten()
}

/// A MESSAGE_CREATE's `d` as a kata message.
///
/// - id: the message id (snowflakes are unique across Discord);
/// - conversation: the channel; in a thread (threads are channels), the
///   thread's parent channel when `parent` knows it, with `thread` = the
///   thread's channel id, so a group grant for a channel covers its threads;
/// - no `guild_id` (a DM) is a direct conversation, anything else a group
///   (a GROUP_DM too), `mentioned` when `mentions` holds the bot, the content
///   mentions it (`<@id>`, `<@!id>`), or it replies to one of its messages;
/// - the bot's own messages are skipped, and so are system messages (joins,
///   pins…: only DEFAULT 0 and REPLY 19 are someone talking) and messages
///   with neither content nor attachments (what a bot without the
///   MESSAGE_CONTENT intent gets for other people's messages);
/// - attachments are listed; a leading mention of the bot is dropped from
///   the text; the payload is kept in `raw`.
pub fn message(d: &Value, bot_id: Option<&str>, parent: Option<String>, now_ms: u64) -> Option<Message> {
    let kind = d.get("type").and_then(Value::as_u64).unwrap_or(0);
    if kind != 0 && kind != 19 {
        return None;
    }
    let author = d.get("author")?;
    let sender = author.get("id").and_then(id_text)?;
    // Without READY's user id (it always comes; this is a guard), any bot's
    // message is skipped rather than risk answering our own.
    let a_bot = author.get("bot").and_then(Value::as_bool) == Some(true);
    if bot_id == Some(sender.as_str()) || (bot_id.is_none() && a_bot) {
        return None;
    }
    let id = d.get("id").and_then(id_text)?;
    let channel = d.get("channel_id").and_then(id_text)?;
    let content = d.get("content").and_then(Value::as_str).unwrap_or_default();
    let attachments: Vec<Attachment> =
        d.get("attachments").and_then(Value::as_array).map(|a| a.iter().filter_map(attachment).collect()).unwrap_or_default();
    if content.trim().is_empty() && attachments.is_empty() {
        return None;
    }
    let direct = d.get("guild_id").is_none_or(Value::is_null) && d.get("channel_type").and_then(Value::as_u64) != Some(3);
    let mentioned = direct
        || bot_id.is_some_and(|bot| {
            let listed = d
                .get("mentions")
                .and_then(Value::as_array)
                .is_some_and(|m| m.iter().any(|u| u.get("id").and_then(id_text).as_deref() == Some(bot)));
            let replied = d.get("referenced_message").and_then(|r| r.get("author")).and_then(|a| a.get("id")).and_then(id_text).as_deref()
                == Some(bot);
            listed || replied || content.contains(&format!("<@{bot}>")) || content.contains(&format!("<@!{bot}>"))
        });
    let thread = thread_of(d);
    let conversation = match (&thread, parent) {
        (Some(_), Some(parent)) => parent,
        _ => channel,
    };
    let text = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let sender_name =
        text(d.get("member"), "nick").or_else(|| text(Some(author), "global_name")).or_else(|| text(Some(author), "username"));
    Some(Message {
        timestamp_ms: snowflake_ms(&id).unwrap_or(now_ms),
        id,
        conversation,
        thread,
        sender,
        sender_name,
        text: bot_id.map_or(content, |bot| strip_leading_mention(content, bot)).to_string(),
        attachments,
        raw: serde_json::to_string(d).ok(),
        conversation_kind: if direct { ConversationKind::Direct } else { ConversationKind::Group },
        mentioned,
    })
}

/// An attachment object as a kata attachment.
fn attachment(a: &Value) -> Option<Attachment> {
    let s = |k: &str| a.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    Some(Attachment {
        name: s("filename")?,
        mime_type: s("content_type").unwrap_or_else(|| "application/octet-stream".into()),
        url: s("url").or_else(|| s("proxy_url")),
        size: a.get("size").and_then(Value::as_u64),
    })
}

/// `content` without a leading `<@bot>` / `<@!bot>` and the punctuation and
/// space after it.
pub fn strip_leading_mention<'c>(content: &'c str, bot: &str) -> &'c str {
    let trimmed = content.trim_start();
    for form in [format!("<@{bot}>"), format!("<@!{bot}>")] {
        if let Some(rest) = trimmed.strip_prefix(&form) {
            return rest.trim_start_matches([',', ':']).trim_start();
        }
    }
    content
}

/// The channel a message goes to: the thread when kata gives one (a thread
/// is a channel), else the conversation.
pub fn target_channel(msg: &OutboundMessage) -> &str {
    msg.thread.as_deref().filter(|t| !t.is_empty()).unwrap_or(&msg.conversation)
}

/// The longest button `custom_id` Discord takes, in characters.
pub const MAX_CUSTOM_ID: usize = 100;

/// The longest button `label` Discord takes, in characters.
const MAX_LABEL: usize = 80;

/// Most buttons Discord takes in one message (5 action rows of 5).
const MAX_BUTTONS: usize = 25;

/// The buttons of `actions` as Create Message `components` (action rows of
/// up to 5 buttons), and the lines to append to the text for actions that
/// cannot be buttons.
///
/// A button's `custom_id` is the action id, so a press delivers exactly the
/// id (see [`interaction`]). Discord refuses an empty id or one over
/// [`MAX_CUSTOM_ID`] characters (and more than [`MAX_BUTTONS`] buttons), and
/// shortening it would change what a press says, so such an action becomes
/// the line the host writes for channels without buttons — `reply "<id>" to
/// <label>` — and the person types it instead. A "no…"/"deny…" id gets the
/// danger (red) style, anything else primary.
pub fn components(actions: &[Action]) -> (Option<Value>, String) {
    let mut buttons = Vec::new();
    let mut hints = Vec::new();
    for a in actions {
        let label = if a.label.trim().is_empty() { a.id.as_str() } else { a.label.as_str() };
        let n = a.id.chars().count();
        if n == 0 || n > MAX_CUSTOM_ID || buttons.len() == MAX_BUTTONS {
            hints.push(if label == a.id { format!("reply \"{}\"", a.id) } else { format!("reply \"{}\" to {label}", a.id) });
            continue;
        }
        let label: String = label.chars().take(MAX_LABEL).collect();
        let lower = a.id.to_ascii_lowercase();
        let style = if lower.starts_with("no") || lower.starts_with("deny") { 4 } else { 1 };
        buttons.push(json!({ "type": 2, "style": style, "label": label, "custom_id": a.id }));
    }
    let rows: Vec<Value> = buttons.chunks(5).map(|row| json!({ "type": 1, "components": row })).collect();
    ((!rows.is_empty()).then_some(Value::Array(rows)), hints.join("\n"))
}

/// An INTERACTION_CREATE's `d` for a button press as a kata message,
/// exactly like the presser typing the button's `custom_id`: the sender is
/// `member.user` (a guild) or `user` (a DM), the conversation and thread
/// those of the channel the button is in (a thread maps to `parent` as in
/// [`message`]), and a press addresses the bot. The id is `ia:<interaction
/// id>` (a press is no message in the channel; replies to it are not
/// threaded under anything); `raw` keeps the payload. Other interactions
/// (commands, select menus, modals) and presses by bots are skipped.
pub fn interaction(d: &Value, parent: Option<String>, now_ms: u64) -> Option<Message> {
    if d.get("type").and_then(Value::as_u64) != Some(3) {
        return None;
    }
    let data = d.get("data")?;
    if data.get("component_type").and_then(Value::as_u64) != Some(2) {
        return None;
    }
    let custom_id = data.get("custom_id").and_then(Value::as_str).filter(|s| !s.is_empty())?;
    let id = d.get("id").and_then(id_text)?;
    let channel = d.get("channel_id").and_then(id_text).or_else(|| d.get("channel")?.get("id").and_then(id_text))?;
    let user = d.get("member").and_then(|m| m.get("user")).or_else(|| d.get("user"))?;
    if user.get("bot").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let sender = user.get("id").and_then(id_text)?;
    let kind = d.get("channel").and_then(|c| c.get("type")).and_then(Value::as_u64);
    let thread = matches!(kind, Some(10..=12)).then(|| channel.clone());
    let direct = d.get("guild_id").is_none_or(Value::is_null) && kind != Some(3);
    let text = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let sender_name = text(d.get("member"), "nick").or_else(|| text(Some(user), "global_name")).or_else(|| text(Some(user), "username"));
    Some(Message {
        timestamp_ms: snowflake_ms(&id).unwrap_or(now_ms),
        id: format!("ia:{id}"),
        conversation: match (&thread, parent) {
            (Some(_), Some(parent)) => parent,
            _ => channel,
        },
        thread,
        sender,
        sender_name,
        text: custom_id.to_string(),
        attachments: Vec::new(),
        raw: serde_json::to_string(d).ok(),
        conversation_kind: if direct { ConversationKind::Direct } else { ConversationKind::Group },
        mentioned: true,
    })
}

/// The thread an INTERACTION_CREATE happened in (its channel, when that is a thread).
pub fn interaction_thread(d: &Value) -> Option<String> {
    let kind = d.get("channel").and_then(|c| c.get("type")).and_then(Value::as_u64);
    matches!(kind, Some(10..=12)).then(|| d.get("channel_id").and_then(id_text)).flatten()
}

/// The Create Interaction Response URL path and body acknowledging a
/// button press without changing the message (DEFERRED_UPDATE_MESSAGE).
pub fn interaction_ack(d: &Value) -> Option<(String, Value)> {
    let id = d.get("id").and_then(id_text)?;
    let token = d.get("token").and_then(Value::as_str).filter(|t| !t.is_empty() && !t.contains(['/', '?', '#']))?;
    Some((format!("/interactions/{id}/{token}/callback"), json!({ "type": 6 })))
}

/// The Create Message bodies for `msg`: its text cut into parts of at most
/// [`MAX_CONTENT`] characters (at a line break when there is one in the
/// second half), each with its own nonce derived from the idempotency key and
/// `enforce_nonce`, so Discord creates each part once even when the send is
/// retried; the first part replies to `reply-to`. `allowed_mentions` lets
/// the reply ping users (and the person replied to) but never @everyone,
/// @here or roles, whatever the agent writes.
///
/// The actions become buttons on the last part (see [`components`]); buttons
/// alone (kata sends a streamed reply's buttons after its draft) name their
/// labels as the content.
pub fn message_bodies(msg: &OutboundMessage) -> Vec<Value> {
    let (rows, hints) = components(&msg.actions);
    let mut text = msg.text.clone();
    if !hints.is_empty() {
        if !text.trim().is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&hints);
    }
    if text.trim().is_empty() && rows.is_some() {
        let labels: Vec<&str> =
            msg.actions.iter().map(|a| if a.label.trim().is_empty() { a.id.as_str() } else { a.label.as_str() }).collect();
        text = labels.join(" · ");
    }
    let parts = split(&text, MAX_CONTENT);
    let last = parts.len() - 1;
    let reference = msg.reply_to.as_deref().filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()));
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let mut body = json!({
                "content": part,
                "nonce": nonce(&msg.idempotency_key, i),
                "enforce_nonce": true,
                "allowed_mentions": { "parse": ["users"], "replied_user": true },
            });
            if let (0, Some(id)) = (i, reference) {
                body["message_reference"] = json!({ "message_id": id, "fail_if_not_exists": false });
            }
            if let (true, Some(rows)) = (i == last, &rows) {
                body["components"] = rows.clone();
            }
            body
        })
        .collect()
}

/// `text` in parts of at most `max` characters (one empty part for an empty text).
pub fn split(text: &str, max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.chars().count() > max {
        let cut = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let head = &rest[..cut];
        let at = head.rfind('\n').filter(|i| *i >= cut / 2).map_or(cut, |i| i + 1);
        parts.push(rest[..at].to_string());
        rest = &rest[at..];
    }
    parts.push(rest.to_string());
    parts
}

/// The nonce for part `part` of the message with idempotency key `key`: the
/// key itself when it fits ([`MAX_NONCE`] characters) and this is the first
/// part, else 25 hex digits of a 128-bit FNV-1a hash of both.
pub fn nonce(key: &str, part: usize) -> String {
    if part == 0 && key.len() <= MAX_NONCE && key.is_ascii() {
        return key.to_string();
    }
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in key.bytes().chain(b"#".iter().copied()).chain(part.to_string().bytes()) {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    format!("{h:032x}")[..MAX_NONCE].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = "80351110224678912";

    /// A MESSAGE_CREATE `d` in a guild channel, with `extra` fields.
    fn guild_message(extra: &str) -> Value {
        serde_json::from_str(&format!(
            r#"{{"id":"1231234567890123456","channel_id":"41771983423143937","guild_id":"41771983423143936","channel_type":0,
               "author":{{"id":"53908232506183680","username":"mason","global_name":"Mason","avatar":null}},
               "member":{{"roles":[],"joined_at":"2015-04-26T06:26:56.936000+00:00"}},
               "content":"hello","timestamp":"2017-07-11T17:27:07.299000+00:00","edited_timestamp":null,"tts":false,
               "mention_everyone":false,"mentions":[],"mention_roles":[],"attachments":[],"embeds":[],"pinned":false,"type":0{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn guild_messages_are_groups_mentioned_by_id_or_reply() {
        let m = message(&guild_message(""), Some(BOT), None, 0).unwrap();
        assert_eq!(
            (m.id.as_str(), m.conversation.as_str(), m.sender.as_str()),
            ("1231234567890123456", "41771983423143937", "53908232506183680")
        );
        assert_eq!((m.conversation_kind, m.mentioned, m.thread.as_deref()), (ConversationKind::Group, false, None));
        assert_eq!(m.sender_name.as_deref(), Some("Mason"));
        assert_eq!(m.timestamp_ms, (1231234567890123456u64 >> 22) + DISCORD_EPOCH_MS);
        let at = message(
            &guild_message(&format!(r#","content":"<@{BOT}> hi there","mentions":[{{"id":"{BOT}","username":"kata","bot":true}}]"#)),
            Some(BOT),
            None,
            0,
        )
        .unwrap();
        assert!(at.mentioned);
        assert_eq!(at.text, "hi there");
        let nick = message(&guild_message(&format!(r#","content":"<@!{BOT}>, hi""#)), Some(BOT), None, 0).unwrap();
        assert!(nick.mentioned);
        assert_eq!(nick.text, "hi");
        let reply = message(
            &guild_message(&format!(
                r#","type":19,"message_reference":{{"type":0,"message_id":"5","channel_id":"41771983423143937"}},
                   "referenced_message":{{"id":"5","author":{{"id":"{BOT}","username":"kata","bot":true}},"content":"earlier"}}"#
            )),
            Some(BOT),
            None,
            0,
        )
        .unwrap();
        assert!(reply.mentioned);
        let other = message(&guild_message(r#","content":"<@123> hi","mentions":[{"id":"123"}]"#), Some(BOT), None, 0).unwrap();
        assert!(!other.mentioned);
    }

    #[test]
    fn dms_are_direct_and_threads_map_to_their_parent() {
        let dm: Value = serde_json::from_str(
            r#"{"id":"10","channel_id":"20","channel_type":1,"author":{"id":"30","username":"ann"},"content":"psst","mentions":[],"attachments":[],"type":0}"#,
        )
        .unwrap();
        let m = message(&dm, Some(BOT), None, 0).unwrap();
        assert_eq!((m.conversation.as_str(), m.conversation_kind, m.mentioned), ("20", ConversationKind::Direct, true));
        let thread = guild_message(r#","channel_id":"777","channel_type":11"#);
        assert_eq!(thread_of(&thread).as_deref(), Some("777"));
        let m = message(&thread, Some(BOT), Some("41771983423143937".into()), 0).unwrap();
        assert_eq!((m.conversation.as_str(), m.thread.as_deref()), ("41771983423143937", Some("777")));
        let unknown_parent = message(&thread, Some(BOT), None, 0).unwrap();
        assert_eq!((unknown_parent.conversation.as_str(), unknown_parent.thread.as_deref()), ("777", Some("777")));
        let group_dm = guild_message(r#","guild_id":null,"channel_type":3"#);
        assert_eq!(message(&group_dm, Some(BOT), None, 0).unwrap().conversation_kind, ConversationKind::Group);
    }

    #[test]
    fn own_system_and_empty_messages_are_skipped_and_attachments_listed() {
        assert!(
            message(&guild_message(&format!(r#","author":{{"id":"{BOT}","username":"kata","bot":true}}"#)), Some(BOT), None, 0).is_none()
        );
        assert!(message(&guild_message(r#","type":7"#), Some(BOT), None, 0).is_none());
        let other_bot = guild_message(r#","author":{"id":"99","username":"helper","bot":true}"#);
        assert!(message(&other_bot, Some(BOT), None, 0).is_some(), "other bots are kept");
        assert!(message(&other_bot, None, None, 0).is_none(), "without our id, bots are skipped");
        assert!(message(&guild_message(r#","content":"""#), Some(BOT), None, 0).is_none());
        let file = guild_message(
            r#","content":"","attachments":[{"id":"9","filename":"cat.png","size":1024,"url":"https://cdn.discordapp.com/attachments/1/9/cat.png","proxy_url":"https://media.discordapp.net/attachments/1/9/cat.png","content_type":"image/png","width":10,"height":10}]"#,
        );
        let m = message(&file, Some(BOT), None, 0).unwrap();
        assert_eq!(
            m.attachments,
            vec![Attachment {
                name: "cat.png".into(),
                mime_type: "image/png".into(),
                url: Some("https://cdn.discordapp.com/attachments/1/9/cat.png".into()),
                size: Some(1024)
            }]
        );
    }

    fn outbound(text: &str, thread: Option<&str>, reply_to: Option<&str>, key: &str) -> OutboundMessage {
        OutboundMessage {
            conversation: "41771983423143937".into(),
            thread: thread.map(Into::into),
            reply_to: reply_to.map(Into::into),
            text: text.into(),
            idempotency_key: key.into(),
            attachments: vec![],
            actions: vec![],
        }
    }

    #[test]
    fn create_message_bodies_reply_with_a_nonce_and_split() {
        let m = outbound("hi", None, Some("1231234567890123456"), "inbox-42");
        assert_eq!(target_channel(&m), "41771983423143937");
        assert_eq!(
            message_bodies(&m),
            vec![json!({
                "content": "hi", "nonce": "inbox-42", "enforce_nonce": true,
                "allowed_mentions": {"parse": ["users"], "replied_user": true},
                "message_reference": {"message_id": "1231234567890123456", "fail_if_not_exists": false},
            })]
        );
        assert_eq!(target_channel(&outbound("hi", Some("777"), None, "k")), "777");
        let long = format!("{}\n{}", "a".repeat(1500), "b".repeat(1500));
        let bodies = message_bodies(&outbound(&long, None, Some("5"), "send-0123456789abcdef0123456789"));
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0]["content"].as_str().unwrap().len(), 1501);
        assert!(bodies[1].get("message_reference").is_none());
        let nonces: Vec<&str> = bodies.iter().map(|b| b["nonce"].as_str().unwrap()).collect();
        assert!(nonces.iter().all(|n| n.len() == MAX_NONCE) && nonces[0] != nonces[1], "{nonces:?}");
        assert_eq!(nonce("send-0123456789abcdef0123456789", 1), nonces[1], "nonces are deterministic");
        assert!(message_bodies(&outbound("x", None, Some("not-a-snowflake"), "k"))[0].get("message_reference").is_none());
        assert_eq!(split("ééé", 2), vec!["éé", "é"]);
        assert_eq!(split("", 2000), vec![""]);
    }

    #[test]
    fn errors_map_to_channel_errors() {
        assert!(
            matches!(map_error(401, None, br#"{"message": "401: Unauthorized", "code": 0}"#, "x"), ChannelError::AuthFailed(m) if m.contains("bot_token"))
        );
        let limited = br#"{"message": "You are being rate limited.", "retry_after": 64.57, "global": false}"#;
        assert_eq!(map_error(429, Some("65"), limited, "x"), ChannelError::RateLimited(64_570));
        assert_eq!(map_error(429, Some("3"), b"", "x"), ChannelError::RateLimited(3000));
        assert!(matches!(map_error(502, None, b"bad gateway", "x"), ChannelError::Network(_)));
        assert!(
            matches!(map_error(403, None, br#"{"message": "Missing Permissions", "code": 50013}"#, "x"), ChannelError::Fatal(m) if m.contains("50013"))
        );
        assert!(
            matches!(map_error(404, None, br#"{"message": "Unknown Channel", "code": 10003}"#, "x"), ChannelError::Fatal(m) if m.contains("Unknown Channel"))
        );
        assert!(matches!(parse_created(200, None, br#"{"id":"42","content":"hi"}"#), Ok(id) if id == "42"));
    }

    #[test]
    fn gateway_and_channel_responses() {
        let gw = br#"{"url": "wss://gateway.discord.gg", "shards": 9, "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}}"#;
        assert_eq!(parse_gateway_bot(200, None, gw).unwrap(), "wss://gateway.discord.gg");
        assert!(matches!(
            parse_gateway_bot(401, None, br#"{"message": "401: Unauthorized", "code": 0}"#),
            Err(ChannelError::AuthFailed(_))
        ));
        assert_eq!(
            parse_thread_parent(200, br#"{"id":"777","type":11,"parent_id":"41771983423143937"}"#).as_deref(),
            Some("41771983423143937")
        );
        assert_eq!(parse_thread_parent(200, br#"{"id":"41771983423143937","type":0,"parent_id":"9"}"#), None);
        assert_eq!(normalize_api_base("https://discord.com/api/v10/").unwrap(), DEFAULT_API_BASE);
        assert!(normalize_api_base("discord.com").is_err());
    }

    fn action(id: &str, label: &str) -> Action {
        Action { id: id.into(), label: label.into() }
    }

    #[test]
    fn actions_become_buttons_on_the_last_part_and_overlong_ids_hints() {
        let mut m = outbound("Allow notes__write_note?", None, None, "k");
        m.actions = vec![action("yes 7", "Approve"), action("no 7", "Deny")];
        let bodies = message_bodies(&m);
        assert_eq!(
            bodies[0]["components"],
            json!([{"type": 1, "components": [
                {"type": 2, "style": 1, "label": "Approve", "custom_id": "yes 7"},
                {"type": 2, "style": 4, "label": "Deny", "custom_id": "no 7"}]}])
        );
        assert_eq!(bodies[0]["content"], "Allow notes__write_note?");
        // Long text: the buttons go under the last part only.
        m.text = "x".repeat(MAX_CONTENT + 1);
        let bodies = message_bodies(&m);
        assert!(bodies[0].get("components").is_none() && bodies[1]["components"].is_array());
        // An id Discord would refuse is a line to type; buttons alone name their labels.
        let long = "y".repeat(MAX_CUSTOM_ID + 1);
        m.text = String::new();
        m.actions = vec![action("ok", ""), action(&long, "Long")];
        let bodies = message_bodies(&m);
        assert_eq!(bodies[0]["content"], format!("reply \"{long}\" to Long"));
        assert_eq!(bodies[0]["components"][0]["components"][0]["label"], "ok");
        m.actions = vec![action("ok", "Fine")];
        assert_eq!(message_bodies(&m)[0]["content"], "Fine");
        // Six buttons: two rows.
        let (rows, _) = components(&(0..6).map(|i| action(&i.to_string(), "")).collect::<Vec<_>>());
        assert_eq!(rows.unwrap().as_array().unwrap().iter().map(|r| r["components"].as_array().unwrap().len()).collect::<Vec<_>>(), [5, 1]);
        assert!(
            outbound("hi", None, None, "k").actions.is_empty()
                && message_bodies(&outbound("hi", None, None, "k"))[0].get("components").is_none()
        );
    }

    #[test]
    fn a_button_press_is_a_message_from_the_presser_with_the_custom_id() {
        let d: Value = serde_json::from_str(
            r#"{"id":"1300000000000000777","application_id":"1","type":3,"token":"aW50ZXJhY3Rpb24",
               "version":1,"guild_id":"41771983423143936","channel_id":"41771983423143937",
               "channel":{"id":"41771983423143937","type":0},
               "member":{"user":{"id":"53908232506183680","username":"mason","global_name":"Mason"},"nick":null,"roles":[]},
               "data":{"custom_id":"yes 7","component_type":2},
               "message":{"id":"1231234567890123456","channel_id":"41771983423143937","content":"Allow?"}}"#,
        )
        .unwrap();
        let m = interaction(&d, None, 5).unwrap();
        assert_eq!(m.id, "ia:1300000000000000777");
        assert_eq!((m.conversation.as_str(), m.thread.as_deref()), ("41771983423143937", None));
        assert_eq!((m.sender.as_str(), m.sender_name.as_deref(), m.text.as_str()), ("53908232506183680", Some("Mason"), "yes 7"));
        assert!(m.mentioned && m.conversation_kind == ConversationKind::Group);
        assert_eq!(
            interaction_ack(&d).unwrap(),
            ("/interactions/1300000000000000777/aW50ZXJhY3Rpb24/callback".to_string(), json!({"type": 6}))
        );
        // A DM press (`user`, no guild); in a thread, the parent channel.
        let mut dm = d.clone();
        dm.as_object_mut().unwrap().remove("guild_id");
        dm["user"] = dm["member"]["user"].take();
        dm.as_object_mut().unwrap().remove("member");
        assert_eq!(interaction(&dm, None, 5).unwrap().conversation_kind, ConversationKind::Direct);
        let mut th = d.clone();
        th["channel"]["type"] = json!(11);
        assert_eq!(interaction_thread(&th).as_deref(), Some("41771983423143937"));
        let m = interaction(&th, Some("9".into()), 5).unwrap();
        assert_eq!((m.conversation.as_str(), m.thread.as_deref()), ("9", Some("41771983423143937")));
        // Not a button press: a slash command, a select menu.
        let mut cmd = d.clone();
        cmd["type"] = json!(2);
        let mut select = d.clone();
        select["data"]["component_type"] = json!(3);
        assert!(interaction(&cmd, None, 5).is_none() && interaction(&select, None, 5).is_none());
    }
}
