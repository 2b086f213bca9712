//! Pure Telegram Bot API logic: URLs, request bodies, response parsing and
//! error mapping. Nothing here touches the host, so it is unit-tested natively.

use kata_sdk::{ChannelError, ConversationKind, Message, OutboundMessage, PollResult, SendReceipt};
use serde_json::{Value, json};

/// Dates above this are milliseconds (the telegram-test-api emulator), below
/// it seconds (the real Bot API). 10^11 s is in the year 5138; 10^11 ms is 1973.
const MS_THRESHOLD: u64 = 100_000_000_000;

/// The path segment carrying the bot token. The token itself is never known to
/// the plugin: the host substitutes the `bot_token` secret for granted hosts.
pub const TOKEN_SEGMENT: &str = "bot{{secret:bot_token}}";

/// Normalise `api_base`: require an `http(s)://` URL and drop trailing slashes.
pub fn normalize_api_base(raw: &str) -> Result<String, ChannelError> {
    let base = raw.trim().trim_end_matches('/');
    let lower = base.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !base.contains(['?', '#']) => Ok(base.to_string()),
        _ => Err(ChannelError::InvalidConfig(format!(
            "config key `api_base` must be an http(s) URL such as \
             \"https://api.telegram.org\", got {raw:?}"
        ))),
    }
}

/// The URL of Bot API method `method`, with the token placeholder.
pub fn method_url(api_base: &str, method: &str) -> String {
    format!("{api_base}/{TOKEN_SEGMENT}/{method}")
}

/// Parse a poll cursor (the next update offset). `None` for a missing or
/// malformed cursor.
pub fn parse_cursor(cursor: Option<&str>) -> Option<i64> {
    cursor.and_then(|c| c.trim().parse::<i64>().ok())
}

/// The `getUpdates` URL: long poll for `timeout_s` seconds from `offset`.
pub fn get_updates_url(api_base: &str, offset: Option<i64>, timeout_s: u32) -> String {
    let url = method_url(api_base, "getUpdates");
    match offset {
        Some(offset) => format!("{url}?offset={offset}&timeout={timeout_s}"),
        None => format!("{url}?timeout={timeout_s}"),
    }
}

/// Who the bot is (from `getMe`), to tell when a group message addresses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bot {
    /// The bot's user id.
    pub id: String,
    /// Its username, without the `@`.
    pub username: String,
}

impl Bot {
    /// The stored form (`id username`), for `host.state-set`.
    pub fn to_state(&self) -> String {
        format!("{} {}", self.id, self.username)
    }

    /// Parse the stored form.
    pub fn from_state(s: &str) -> Option<Bot> {
        let (id, username) = s.trim().split_once(' ')?;
        (!id.is_empty() && !username.is_empty()).then(|| Bot { id: id.into(), username: username.into() })
    }
}

/// The bot's identity from a `getMe` response.
pub fn parse_get_me(status: u16, body: &[u8]) -> Result<Bot, ChannelError> {
    let me = api_result(status, body)?;
    let id = me.get("id").and_then(id_text);
    let username = str_field(&me, "username");
    match (id, username) {
        (Some(id), Some(username)) => Ok(Bot { id, username }),
        _ => Err(ChannelError::Fatal("Telegram getMe returned no id or username".into())),
    }
}

/// Whether a message addresses the bot: an `@username` mention of it (or a
/// mention of its user without a username), or a reply to one of its messages.
/// Without the bot's identity a reply to any bot counts, and mentions cannot
/// be told apart, so they do not.
pub fn addresses_bot(msg: &Value, text: &str, bot: Option<&Bot>) -> bool {
    let entities = msg.get("entities").or_else(|| msg.get("caption_entities")).and_then(Value::as_array);
    if let (Some(bot), Some(entities)) = (bot, entities) {
        let units: Vec<u16> = text.encode_utf16().collect();
        for e in entities {
            let kind = e.get("type").and_then(Value::as_str).unwrap_or_default();
            if kind == "text_mention" && e.get("user").and_then(|u| u.get("id")).and_then(id_text).as_deref() == Some(bot.id.as_str()) {
                return true;
            }
            if kind != "mention" {
                continue;
            }
            // Offsets and lengths count UTF-16 code units.
            let (Some(off), Some(len)) =
                (e.get("offset").and_then(Value::as_u64).map(|v| v as usize), e.get("length").and_then(Value::as_u64).map(|v| v as usize))
            else {
                continue;
            };
            let Some(span) = units.get(off..off.saturating_add(len)) else { continue };
            let mention = String::from_utf16_lossy(span);
            if mention.trim_start_matches('@').eq_ignore_ascii_case(&bot.username) {
                return true;
            }
        }
    }
    let Some(author) = msg.get("reply_to_message").and_then(|r| r.get("from")) else {
        return false;
    };
    match bot {
        Some(bot) => author.get("id").and_then(id_text).as_deref() == Some(bot.id.as_str()),
        None => author.get("is_bot").and_then(Value::as_bool) == Some(true),
    }
}

/// Turn a `getUpdates` response into a poll result.
///
/// `offset` is the cursor the poll started from; it is kept when there are
/// no updates. Otherwise the new cursor is the highest `update_id` + 1, also
/// past updates that carry no text message (edits, joins, callbacks…), so they
/// are not fetched again. `now_ms` dates messages that carry no `date`;
/// `bot` (when known) tells mentions of the bot apart.
pub fn parse_updates(status: u16, body: &[u8], offset: Option<i64>, now_ms: u64, bot: Option<&Bot>) -> Result<PollResult, ChannelError> {
    let result = api_result(status, body)?;
    let updates =
        result.as_array().ok_or_else(|| ChannelError::Fatal("Telegram getUpdates returned a result that is not a list".into()))?;

    let mut messages = Vec::new();
    let mut max_update_id: Option<i64> = None;
    for update in updates {
        let Some(update_id) = update.get("update_id").and_then(Value::as_i64) else {
            continue;
        };
        max_update_id = Some(max_update_id.map_or(update_id, |m| m.max(update_id)));
        if let Some(message) = parse_update(update, now_ms, bot) {
            messages.push(message);
        }
    }

    let cursor = match max_update_id {
        Some(max) => Some(max.saturating_add(1).to_string()),
        None => offset.map(|o| o.to_string()),
    };
    Ok(PollResult { messages, cursor, next_poll_ms: None })
}

/// One update as a kata message, when it carries a (channel) message with
/// text or a caption. A private chat is a direct conversation (every message
/// in it addresses the bot); groups, supergroups and channels are groups, in
/// which a message is `mentioned` when [`addresses_bot`] says so.
pub fn parse_update(update: &Value, now_ms: u64, bot: Option<&Bot>) -> Option<Message> {
    let msg = update.get("message").or_else(|| update.get("channel_post"))?;
    let text = msg.get("text").or_else(|| msg.get("caption")).and_then(Value::as_str)?;
    let chat_id = id_text(msg.get("chat")?.get("id")?)?;
    let message_id = id_text(msg.get("message_id")?)?;

    let (sender, sender_name) = match msg.get("from") {
        Some(from) => (from.get("id").and_then(id_text), str_field(from, "username").or_else(|| str_field(from, "first_name"))),
        // Channel posts and anonymous admins speak as a chat.
        None => {
            let chat = msg.get("sender_chat").or_else(|| msg.get("chat"))?;
            (chat.get("id").and_then(id_text), str_field(chat, "username").or_else(|| str_field(chat, "title")))
        }
    };

    let private = msg.get("chat").and_then(|c| c.get("type")).and_then(Value::as_str) == Some("private");
    let (conversation_kind, mentioned) =
        if private { (ConversationKind::Direct, true) } else { (ConversationKind::Group, addresses_bot(msg, text, bot)) };

    Some(Message {
        id: format!("{chat_id}:{message_id}"),
        conversation: chat_id.clone(),
        thread: msg.get("message_thread_id").and_then(id_text),
        sender: sender.unwrap_or(chat_id),
        sender_name,
        text: text.to_string(),
        attachments: Vec::new(),
        timestamp_ms: msg.get("date").and_then(Value::as_u64).map_or(now_ms, date_to_ms),
        raw: serde_json::to_string(update).ok(),
        conversation_kind,
        mentioned,
    })
}

/// A Telegram `date` in milliseconds: seconds from the real API, milliseconds
/// from the emulator.
pub fn date_to_ms(date: u64) -> u64 {
    if date > MS_THRESHOLD { date } else { date.saturating_mul(1000) }
}

/// The JSON body of `sendMessage` for `msg`.
///
/// `reply-to` is a kata message id (`<chat_id>:<message_id>`); its message id
/// part becomes `reply_to_message_id`. An unparsable reply-to or thread is
/// left out rather than failing the send.
pub fn send_message_body(msg: &OutboundMessage) -> Value {
    let mut body = json!({
        "chat_id": chat_id_value(&msg.conversation),
        "text": msg.text,
    });
    if let Some(reply_to) = msg.reply_to.as_deref().and_then(reply_message_id) {
        body["reply_to_message_id"] = json!(reply_to);
    }
    if let Some(thread) = msg.thread.as_deref().and_then(|t| t.trim().parse::<i64>().ok()) {
        body["message_thread_id"] = json!(thread);
    }
    body
}

/// The message id part of a kata message id `<chat_id>:<message_id>` (or a
/// bare message id).
pub fn reply_message_id(reply_to: &str) -> Option<i64> {
    let tail = reply_to.rsplit_once(':').map_or(reply_to, |(_, id)| id);
    tail.trim().parse().ok()
}

/// A chat id as Telegram wants it: numbers as numbers, `@channel` names as text.
fn chat_id_value(conversation: &str) -> Value {
    match conversation.trim().parse::<i64>() {
        Ok(id) => json!(id),
        Err(_) => json!(conversation),
    }
}

/// Turn a `sendMessage` response into a receipt `<chat_id>:<message_id>`.
/// `conversation` stands in when the response does not name the chat.
pub fn parse_send(status: u16, body: &[u8], conversation: &str) -> Result<SendReceipt, ChannelError> {
    let result = api_result(status, body)?;
    let message_id = result
        .get("message_id")
        .and_then(id_text)
        .ok_or_else(|| ChannelError::Fatal("Telegram sendMessage returned no message_id".into()))?;
    let chat_id = result.get("chat").and_then(|c| c.get("id")).and_then(id_text).unwrap_or_else(|| conversation.to_string());
    Ok(SendReceipt::sent(format!("{chat_id}:{message_id}")))
}

/// The `result` of a successful Bot API response, or the mapped error.
fn api_result(status: u16, body: &[u8]) -> Result<Value, ChannelError> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let ok = parsed.as_ref().and_then(|v| v.get("ok")).and_then(Value::as_bool);
    match (status, ok, parsed) {
        (200..=299, Some(true), Some(mut value)) => Ok(value.get_mut("result").map(Value::take).unwrap_or(Value::Null)),
        _ => Err(map_error(status, body)),
    }
}

/// Map a failed Bot API response to a channel error.
///
/// - 401 (HTTP status or `error_code`): the token was refused → `auth-failed`;
/// - 429: `rate-limited` for `parameters.retry_after` seconds (default 1 s);
/// - 5xx: transient → `network`;
/// - any other failure → `fatal` with Telegram's `description`.
pub fn map_error(status: u16, body: &[u8]) -> ChannelError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error_code = parsed.get("error_code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
    let code = if (200..300).contains(&status) { error_code.unwrap_or(status) } else { status };
    let description = parsed
        .get("description")
        .or_else(|| parsed.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| body_excerpt(body));

    match code {
        401 => ChannelError::AuthFailed(format!("Telegram refused the bot token (secret `bot_token`): {description}")),
        429 => {
            let retry_after_s = parsed.get("parameters").and_then(|p| p.get("retry_after")).and_then(Value::as_u64);
            ChannelError::RateLimited(retry_after_s.map_or(1000, |s| s.saturating_mul(1000)))
        }
        500..=599 => ChannelError::Network(format!("Telegram API error {code}: {description}")),
        404 => ChannelError::Fatal(format!("Telegram API error 404: {description} (check `api_base` and the `bot_token` secret)")),
        200..=299 => ChannelError::Fatal(format!("unexpected Telegram API response (HTTP {status}): {description}")),
        _ => ChannelError::Fatal(format!("Telegram API error {code}: {description}")),
    }
}

/// The start of a body for error messages.
fn body_excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty response)".into();
    }
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// An id that Telegram gives as a number (or occasionally text), as text.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A non-empty string field.
fn str_field(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn poll(body: &str, offset: Option<i64>) -> PollResult {
        parse_updates(200, body.as_bytes(), offset, NOW, None).expect("poll ok")
    }

    #[test]
    fn empty_result_keeps_cursor() {
        let r = poll(r#"{"ok":true,"result":[]}"#, Some(42));
        assert!(r.messages.is_empty());
        assert_eq!(r.cursor.as_deref(), Some("42"));
        assert_eq!(r.next_poll_ms, None);
        let r = poll(r#"{"ok":true,"result":[]}"#, None);
        assert_eq!(r.cursor, None);
    }

    #[test]
    fn cursor_is_max_update_id_plus_one() {
        let body = r#"{"ok":true,"result":[
            {"update_id":7,"message":{"message_id":1,"chat":{"id":5},"from":{"id":9,"first_name":"A"},"date":1700000000,"text":"a"}},
            {"update_id":9,"message":{"message_id":3,"chat":{"id":5},"from":{"id":9,"first_name":"A"},"date":1700000001,"text":"c"}},
            {"update_id":8,"message":{"message_id":2,"chat":{"id":5},"from":{"id":9,"first_name":"A"},"date":1700000002,"text":"b"}}
        ]}"#;
        let r = poll(body, Some(7));
        assert_eq!(r.cursor.as_deref(), Some("10"));
        let texts: Vec<_> = r.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["a", "c", "b"]);
    }

    #[test]
    fn non_message_updates_advance_cursor() {
        let body = r#"{"ok":true,"result":[
            {"update_id":11,"edited_message":{"message_id":1,"chat":{"id":5},"date":1,"text":"x"}},
            {"update_id":12,"callback_query":{"id":"q"}},
            {"update_id":13,"message":{"message_id":4,"chat":{"id":5},"date":1,"new_chat_members":[]}}
        ]}"#;
        let r = poll(body, Some(11));
        assert!(r.messages.is_empty());
        assert_eq!(r.cursor.as_deref(), Some("14"));
    }

    #[test]
    fn parses_real_api_update_with_seconds_and_thread() {
        let body = r#"{"ok":true,"result":[{"update_id":100,"message":{
            "message_id":55,"message_thread_id":77,
            "from":{"id":1234,"is_bot":false,"first_name":"Ann","username":"ann_b"},
            "chat":{"id":-100987,"title":"G","type":"supergroup"},
            "date":1700000000,"text":"hello"}}]}"#;
        let r = poll(body, None);
        let m = &r.messages[0];
        assert_eq!(m.id, "-100987:55");
        assert_eq!(m.conversation, "-100987");
        assert_eq!(m.thread.as_deref(), Some("77"));
        assert_eq!(m.sender, "1234");
        assert_eq!(m.sender_name.as_deref(), Some("ann_b"));
        assert_eq!(m.text, "hello");
        assert_eq!(m.timestamp_ms, 1_700_000_000_000);
        let raw: Value = serde_json::from_str(m.raw.as_deref().unwrap()).unwrap();
        assert_eq!(raw["update_id"], 100);
        assert_eq!(r.cursor.as_deref(), Some("101"));
    }

    #[test]
    fn parses_emulator_update_with_millis_and_missing_date() {
        // Exactly what telegram-test-api 4.2.1 returns.
        let body = r#"{"ok":true,"result":[
            {"update_id":1,"message":{"botToken":"123456:TESTTOKEN","from":{"id":1,"first_name":"U","is_bot":false},"chat":{"id":1,"type":"private"},"date":1795606179992,"text":"hello bot","message_id":1}},
            {"update_id":2,"message":{"botToken":"123456:TESTTOKEN","from":{"id":1,"first_name":"U","is_bot":false},"chat":{"id":1,"type":"private"},"text":"second","message_id":2}}]}"#;
        let r = poll(body, None);
        assert_eq!(r.messages.len(), 2);
        let m = &r.messages[0];
        assert_eq!(m.id, "1:1");
        assert_eq!(m.thread, None);
        assert_eq!(m.sender_name.as_deref(), Some("U"));
        assert_eq!(m.timestamp_ms, 1_795_606_179_992);
        assert_eq!(r.messages[1].timestamp_ms, NOW);
        assert_eq!(r.cursor.as_deref(), Some("3"));
    }

    #[test]
    fn channel_post_uses_chat_as_sender() {
        let u: Value = serde_json::from_str(
            r#"{"update_id":1,"channel_post":{"message_id":3,"chat":{"id":-1001,"title":"News","type":"channel"},"date":5,"text":"t"}}"#,
        )
        .unwrap();
        let m = parse_update(&u, NOW, None).unwrap();
        assert_eq!((m.sender.as_str(), m.sender_name.as_deref()), ("-1001", Some("News")));
        assert_eq!(m.timestamp_ms, 5000);
    }

    #[test]
    fn date_threshold() {
        assert_eq!(date_to_ms(1_700_000_000), 1_700_000_000_000);
        assert_eq!(date_to_ms(1_700_000_000_123), 1_700_000_000_123);
    }

    #[test]
    fn urls_keep_token_placeholder() {
        assert_eq!(
            get_updates_url("https://api.telegram.org", Some(10), 25),
            "https://api.telegram.org/bot{{secret:bot_token}}/getUpdates?offset=10&timeout=25"
        );
        assert_eq!(
            get_updates_url("http://127.0.0.1:19000", None, 0),
            "http://127.0.0.1:19000/bot{{secret:bot_token}}/getUpdates?timeout=0"
        );
        assert_eq!(method_url("http://h", "sendMessage"), "http://h/bot{{secret:bot_token}}/sendMessage");
    }

    #[test]
    fn api_base_is_validated() {
        assert_eq!(normalize_api_base("https://api.telegram.org/").unwrap(), "https://api.telegram.org");
        assert!(normalize_api_base("ftp://x").is_err());
        assert!(normalize_api_base("https://").is_err());
        assert!(normalize_api_base("http://h/?x").is_err());
    }

    #[test]
    fn cursor_parsing() {
        assert_eq!(parse_cursor(Some("43")), Some(43));
        assert_eq!(parse_cursor(Some("junk")), None);
        assert_eq!(parse_cursor(None), None);
    }

    fn outbound(reply_to: Option<&str>, thread: Option<&str>) -> OutboundMessage {
        OutboundMessage {
            conversation: "-100987".into(),
            thread: thread.map(Into::into),
            reply_to: reply_to.map(Into::into),
            text: "hi".into(),
            idempotency_key: "k1".into(),
            attachments: vec![],
            actions: vec![],
        }
    }

    #[test]
    fn send_body_with_reply_and_thread() {
        let body = send_message_body(&outbound(Some("-100987:55"), Some("77")));
        assert_eq!(body, json!({"chat_id": -100987, "text": "hi", "reply_to_message_id": 55, "message_thread_id": 77}));
        let body = send_message_body(&outbound(None, None));
        assert_eq!(body, json!({"chat_id": -100987, "text": "hi"}));
        let mut named = outbound(Some("garbage:x"), None);
        named.conversation = "@news".into();
        assert_eq!(send_message_body(&named), json!({"chat_id": "@news", "text": "hi"}));
    }

    #[test]
    fn send_receipt_from_real_and_emulator_responses() {
        let emulator = br#"{"ok":true,"result":{"chat_id":1,"text":"hi user","reply_to_message_id":1,"message_id":3,"date":1795606179992,"chat":{"id":1,"first_name":"Bot","type":"private"}}}"#;
        assert_eq!(parse_send(200, emulator, "1").unwrap().id, "1:3");
        let no_chat = br#"{"ok":true,"result":{"message_id":8}}"#;
        assert_eq!(parse_send(200, no_chat, "-5").unwrap().id, "-5:8");
        assert!(matches!(parse_send(200, br#"{"ok":true,"result":{}}"#, "1"), Err(ChannelError::Fatal(_))));
    }

    #[test]
    fn error_401_is_auth_failed() {
        let body = br#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#;
        assert!(matches!(map_error(401, body), ChannelError::AuthFailed(m) if m.contains("Unauthorized")));
        // ok:false with a 200 status still counts.
        assert!(matches!(parse_updates(200, body, None, NOW, None), Err(ChannelError::AuthFailed(_))));
    }

    #[test]
    fn error_429_uses_retry_after() {
        let body = br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#;
        assert_eq!(map_error(429, body), ChannelError::RateLimited(7000));
        assert_eq!(map_error(429, b"slow down"), ChannelError::RateLimited(1000));
        assert_eq!(parse_send(429, body, "1"), Err(ChannelError::RateLimited(7000)));
    }

    #[test]
    fn error_5xx_is_network() {
        let body = br#"{"message":"API method 'nosuch' is not supported."}"#;
        assert!(matches!(map_error(500, body), ChannelError::Network(m) if m.contains("not supported")));
        assert!(matches!(map_error(502, b"<html>Bad Gateway</html>"), ChannelError::Network(m) if m.contains("502")));
    }

    #[test]
    fn error_400_is_fatal_with_description() {
        let body = br#"{"ok":false,"error_code":400,"description":"Bad Request: message text is empty"}"#;
        assert_eq!(map_error(400, body), ChannelError::Fatal("Telegram API error 400: Bad Request: message text is empty".into()));
        assert!(matches!(map_error(404, b""), ChannelError::Fatal(m) if m.contains("bot_token")));
    }

    #[test]
    fn garbage_success_is_fatal() {
        assert!(matches!(parse_updates(200, b"not json", None, NOW, None), Err(ChannelError::Fatal(_))));
        assert!(matches!(parse_updates(200, br#"{"ok":true,"result":{}}"#, None, NOW, None), Err(ChannelError::Fatal(_))));
    }

    fn group_update(extra: &str) -> Value {
        serde_json::from_str(&format!(
            r#"{{"update_id":1,"message":{{"message_id":4,"chat":{{"id":-100,"type":"supergroup","title":"G"}},
                "from":{{"id":9,"first_name":"A"}},"date":5,{extra}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn private_chats_are_direct_and_groups_need_a_mention() {
        let bot = Bot { id: "77".into(), username: "kata_bot".into() };
        let dm: Value = serde_json::from_str(
            r#"{"update_id":1,"message":{"message_id":1,"chat":{"id":9,"type":"private"},"from":{"id":9},"date":5,"text":"hi"}}"#,
        )
        .unwrap();
        let m = parse_update(&dm, NOW, Some(&bot)).unwrap();
        assert_eq!((m.conversation_kind, m.mentioned), (ConversationKind::Direct, true));

        let plain = parse_update(&group_update(r#""text":"hello all""#), NOW, Some(&bot)).unwrap();
        assert_eq!((plain.conversation_kind, plain.mentioned), (ConversationKind::Group, false));

        // "héllo @Kata_Bot": the mention's offset counts UTF-16 units.
        let mention = group_update(r#""text":"h\u00e9llo @Kata_Bot","entities":[{"type":"mention","offset":6,"length":9}]"#);
        assert!(parse_update(&mention, NOW, Some(&bot)).unwrap().mentioned);
        let other = group_update(r#""text":"hi @other_bot","entities":[{"type":"mention","offset":3,"length":10}]"#);
        assert!(!parse_update(&other, NOW, Some(&bot)).unwrap().mentioned);
        let by_user = group_update(r#""text":"hi Kata","entities":[{"type":"text_mention","offset":3,"length":4,"user":{"id":77}}]"#);
        assert!(parse_update(&by_user, NOW, Some(&bot)).unwrap().mentioned);

        let reply = group_update(r#""text":"yes","reply_to_message":{"message_id":3,"from":{"id":77,"is_bot":true}}"#);
        assert!(parse_update(&reply, NOW, Some(&bot)).unwrap().mentioned);
        let reply_other = group_update(r#""text":"yes","reply_to_message":{"message_id":3,"from":{"id":78,"is_bot":true}}"#);
        assert!(!parse_update(&reply_other, NOW, Some(&bot)).unwrap().mentioned);
        // Without getMe, a reply to a bot is the best guess; mentions cannot be checked.
        assert!(parse_update(&reply_other, NOW, None).unwrap().mentioned);
        assert!(!parse_update(&mention, NOW, None).unwrap().mentioned);
    }

    #[test]
    fn get_me_and_its_stored_form() {
        let bot = parse_get_me(200, br#"{"ok":true,"result":{"id":77,"is_bot":true,"first_name":"K","username":"kata_bot"}}"#).unwrap();
        assert_eq!(bot, Bot { id: "77".into(), username: "kata_bot".into() });
        assert_eq!(Bot::from_state(&bot.to_state()), Some(bot));
        assert!(parse_get_me(200, br#"{"ok":true,"result":{"id":77}}"#).is_err());
        assert_eq!(Bot::from_state("77"), None);
    }
}
