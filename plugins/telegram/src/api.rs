//! Pure Telegram Bot API logic: URLs, request bodies, response parsing and
//! error mapping. Nothing here touches the host, so it is unit-tested natively.

use kata_sdk::{
    Action, ChannelError, ConversationKind, Edit, Message, OutboundAttachment, OutboundMessage, PollResult, Reaction, SendReceipt, Target,
};
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

/// The update kinds the plugin asks `getUpdates` for, URL-encoded JSON:
/// `["message","channel_post","callback_query"]`. Telegram remembers the last
/// list a bot asked for, so naming it every time makes sure button presses
/// (`callback_query`) arrive even if something else restricted them before.
const ALLOWED_UPDATES: &str = "%5B%22message%22%2C%22channel_post%22%2C%22callback_query%22%5D";

/// The `getUpdates` URL: long poll for `timeout_s` seconds from `offset`.
pub fn get_updates_url(api_base: &str, offset: Option<i64>, timeout_s: u32) -> String {
    let url = method_url(api_base, "getUpdates");
    match offset {
        Some(offset) => format!("{url}?offset={offset}&timeout={timeout_s}&allowed_updates={ALLOWED_UPDATES}"),
        None => format!("{url}?timeout={timeout_s}&allowed_updates={ALLOWED_UPDATES}"),
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
    if let Some(query) = update.get("callback_query") {
        return parse_callback(update, query, now_ms);
    }
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

/// A button press (`callback_query`) as a kata message, exactly like the
/// person typing the button's id: the text is the callback data, the sender
/// is who pressed it (`from`), the conversation and thread are those of the
/// message carrying the button. A press addresses the bot, in a group too.
/// The id is `cb:<callback query id>` (Telegram's ids are unique, and a press
/// is no message in the chat); `raw` keeps the whole update, including the
/// pressed message's id. Presses without data (games) or without a message
/// (inline mode: no chat to answer in) are skipped. A press carries no date,
/// so it is stamped with `now_ms`.
pub fn parse_callback(update: &Value, query: &Value, now_ms: u64) -> Option<Message> {
    let id = id_text(query.get("id")?)?;
    let data = query.get("data").and_then(Value::as_str)?;
    let msg = query.get("message")?;
    let chat = msg.get("chat")?;
    let chat_id = id_text(chat.get("id")?)?;
    let from = query.get("from")?;
    let sender = from.get("id").and_then(id_text)?;
    let private = chat.get("type").and_then(Value::as_str) == Some("private");
    Some(Message {
        id: format!("cb:{id}"),
        conversation: chat_id,
        thread: msg.get("message_thread_id").and_then(id_text),
        sender,
        sender_name: str_field(from, "username").or_else(|| str_field(from, "first_name")),
        text: data.to_string(),
        attachments: Vec::new(),
        timestamp_ms: now_ms,
        raw: serde_json::to_string(update).ok(),
        conversation_kind: if private { ConversationKind::Direct } else { ConversationKind::Group },
        mentioned: true,
    })
}

/// The callback query ids among `messages` (button presses, see
/// [`parse_callback`]), to answer with `answerCallbackQuery`.
pub fn callback_ids(messages: &[Message]) -> impl Iterator<Item = &str> {
    messages.iter().filter_map(|m| m.id.strip_prefix("cb:"))
}

/// The JSON body of `answerCallbackQuery`: stops the client's spinner.
pub fn answer_callback_body(callback_id: &str) -> Value {
    json!({ "callback_query_id": callback_id })
}

/// A Telegram `date` in milliseconds: seconds from the real API, milliseconds
/// from the emulator.
pub fn date_to_ms(date: u64) -> u64 {
    if date > MS_THRESHOLD { date } else { date.saturating_mul(1000) }
}

/// Longest `callback_data` Telegram accepts, in bytes.
pub const MAX_CALLBACK_DATA: usize = 64;

/// Longest message text Telegram accepts, in characters (UTF-16 code units).
pub const MAX_TEXT: usize = 4096;

/// Longest document caption Telegram accepts, in characters (counted as
/// UTF-16 code units, as Telegram does).
pub const MAX_CAPTION: usize = 1024;

/// Most buttons put side by side in one row; more get a row each.
const ROW_BUTTONS: usize = 3;

/// The buttons of `actions` as an `inline_keyboard` reply markup, and the
/// lines to append to the text for actions that cannot be buttons.
///
/// A button's `callback_data` is the action id, so a press delivers exactly
/// the id (see [`parse_callback`]). Telegram refuses data longer than
/// [`MAX_CALLBACK_DATA`] bytes (and empty data), and shortening it would
/// change what a press says, so such an action becomes the line the host
/// writes for channels without buttons — `reply "<id>" to <label>` — and the
/// person types it instead.
pub fn inline_keyboard(actions: &[Action]) -> (Option<Value>, String) {
    let mut buttons = Vec::new();
    let mut hints = String::new();
    for a in actions {
        let label = if a.label.trim().is_empty() { a.id.as_str() } else { a.label.as_str() };
        if a.id.is_empty() || a.id.len() > MAX_CALLBACK_DATA {
            if !hints.is_empty() {
                hints.push('\n');
            }
            if label == a.id {
                hints.push_str(&format!("reply \"{}\"", a.id));
            } else {
                hints.push_str(&format!("reply \"{}\" to {label}", a.id));
            }
            continue;
        }
        buttons.push(json!({ "text": label, "callback_data": a.id }));
    }
    if buttons.is_empty() {
        return (None, hints);
    }
    let rows: Vec<Value> = if buttons.len() <= ROW_BUTTONS {
        vec![Value::Array(buttons)]
    } else {
        buttons.into_iter().map(|b| Value::Array(vec![b])).collect()
    };
    (Some(json!({ "inline_keyboard": rows })), hints)
}

/// One Bot API request of a send.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// `sendMessage` with this JSON body.
    Text(Value),
    /// `sendDocument` of `attachments[attachment]` with these form fields
    /// (see [`multipart_body`]).
    Document {
        /// Index into the outbound message's attachments.
        attachment: usize,
        /// The other form fields, in order.
        fields: Vec<(&'static str, String)>,
    },
}

/// The requests that deliver `msg`, in order. The first one carries the
/// (start of the) text, and so the receipt id, and the reply-to.
///
/// - No attachments: one `sendMessage` (buttons without text get their
///   labels as the text, which Telegram requires), or several for a text longer than
///   [`MAX_TEXT`] (split at a line break or space where there is one; the
///   buttons go under the last).
/// - Attachments, text up to [`MAX_CAPTION`]: one `sendDocument` per file,
///   the first with the text as its caption.
/// - Attachments and a longer text: the text as its own `sendMessage` first,
///   then the files without a caption.
///
/// `reply-to` is a kata message id (`<chat_id>:<message_id>`); its message id
/// part becomes `reply_to_message_id`, with `allow_sending_without_reply` so a
/// reply to a message deleted meanwhile is still delivered. An unparsable
/// reply-to (or a button press's `cb:` id) or thread is left out rather than
/// failing the send.
pub fn plan_send(msg: &OutboundMessage) -> Vec<Part> {
    let (markup, hints) = inline_keyboard(&msg.actions);
    let mut text = msg.text.clone();
    if !hints.is_empty() {
        if !text.trim().is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&hints);
    }
    if text.trim().is_empty() && msg.attachments.is_empty() && markup.is_some() {
        // Buttons alone (kata sends a streamed reply's buttons after its
        // draft): Telegram wants some text above them, so name them.
        let labels: Vec<&str> =
            msg.actions.iter().map(|a| if a.label.trim().is_empty() { a.id.as_str() } else { a.label.as_str() }).collect();
        text = labels.join(" · ");
    }
    let reply_to = msg.reply_to.as_deref().and_then(reply_message_id);
    let thread = msg.thread.as_deref().and_then(|t| t.trim().parse::<i64>().ok());

    let text_first = msg.attachments.is_empty() || text.encode_utf16().count() > MAX_CAPTION;
    let mut parts = Vec::new();
    if text_first {
        let chunks = split_text(&text, MAX_TEXT);
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut body = json!({ "chat_id": chat_id_value(&msg.conversation), "text": chunk });
            if let (0, Some(id)) = (i, reply_to) {
                body["reply_to_message_id"] = json!(id);
                body["allow_sending_without_reply"] = json!(true);
            }
            if let Some(thread) = thread {
                body["message_thread_id"] = json!(thread);
            }
            if let (true, Some(markup)) = (i == last, &markup) {
                body["reply_markup"] = markup.clone();
            }
            parts.push(Part::Text(body));
        }
    }
    for attachment in 0..msg.attachments.len() {
        let first = parts.is_empty();
        let mut fields = vec![("chat_id", msg.conversation.trim().to_string())];
        if let Some(thread) = thread {
            fields.push(("message_thread_id", thread.to_string()));
        }
        if first {
            if let Some(id) = reply_to {
                fields.push(("reply_to_message_id", id.to_string()));
                fields.push(("allow_sending_without_reply", "true".into()));
            }
            if !text.is_empty() {
                fields.push(("caption", text.clone()));
            }
            if let Some(markup) = &markup {
                fields.push(("reply_markup", markup.to_string()));
            }
        }
        parts.push(Part::Document { attachment, fields });
    }
    parts
}

/// `text` in pieces of at most `max` UTF-16 code units, each ending before
/// the last line break in its window (dropped), else after its last space,
/// else at the limit; one piece when it fits (also when empty).
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.encode_utf16().count() > max {
        // The longest prefix within `max` units, on a char boundary.
        let mut units = 0;
        let mut end = 0;
        for (i, c) in rest.char_indices() {
            if units + c.len_utf16() > max {
                break;
            }
            units += c.len_utf16();
            end = i + c.len_utf8();
        }
        let window = &rest[..end];
        let (piece, next) = match (window.rfind('\n'), window.rfind(' ')) {
            (Some(nl), _) if nl > 0 => (&rest[..nl], &rest[nl + 1..]),
            (_, Some(sp)) if sp > 0 => (&rest[..=sp], &rest[sp + 1..]),
            _ => (window, &rest[end..]),
        };
        pieces.push(piece.to_string());
        rest = next;
    }
    pieces.push(rest.to_string());
    pieces
}

/// The JSON body of `sendMessage` for `msg` (with its buttons): what
/// [`plan_send`] sends when there are no attachments.
pub fn send_message_body(msg: &OutboundMessage) -> Value {
    let plain = OutboundMessage { attachments: Vec::new(), ..msg.clone() };
    match plan_send(&plain).into_iter().next() {
        Some(Part::Text(body)) => body,
        _ => unreachable!("a message without attachments is one sendMessage"),
    }
}

/// A `multipart/form-data` body: `fields`, then `file` as the form field
/// `file_field`. Returns the content type (with its boundary) and the body.
pub fn multipart_body(fields: &[(&str, String)], file_field: &str, file: &OutboundAttachment) -> (String, Vec<u8>) {
    let name = form_file_name(&file.name);
    let mime = if file.mime_type.trim().is_empty() || file.mime_type.contains(['\r', '\n']) {
        "application/octet-stream"
    } else {
        file.mime_type.trim()
    };
    // A boundary must not occur in any part: derive one from the content and
    // try the next while it does.
    let mut seed = fnv1a(&file.data);
    let boundary = loop {
        let b = format!("kata-{seed:016x}");
        let clash = contains(&file.data, b.as_bytes()) || fields.iter().any(|(_, v)| v.contains(&b)) || name.contains(&b);
        if !clash {
            break b;
        }
        seed = seed.wrapping_mul(0x100_0000_01b3).wrapping_add(1);
    };
    let mut body = Vec::with_capacity(file.data.len() + 512);
    for (key, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{key}\"\r\n\r\n").as_bytes());
        body.extend_from_slice(value.as_bytes());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"{file_field}\"; filename=\"{name}\"\r\ncontent-type: {mime}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&file.data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A file name safe inside a quoted `filename="…"`: no quotes, backslashes or
/// control characters; "file" when nothing is left.
fn form_file_name(name: &str) -> String {
    let clean: String = name.trim().chars().map(|c| if c == '"' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    if clean.is_empty() { "file".into() } else { clean }
}

/// FNV-1a, to derive a multipart boundary from content.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The JSON body of `sendChatAction` showing "typing…" in `target`.
pub fn chat_action_body(target: &Target) -> Value {
    let mut body = json!({ "chat_id": chat_id_value(&target.conversation), "action": "typing" });
    if let Some(thread) = target.thread.as_deref().and_then(|t| t.trim().parse::<i64>().ok()) {
        body["message_thread_id"] = json!(thread);
    }
    body
}

/// The Telegram message id in a kata id given to `act` (`<chat_id>:<message_id>`,
/// as send receipts and received messages carry it).
fn acted_message_id(id: &str, what: &str) -> Result<i64, ChannelError> {
    reply_message_id(id).ok_or_else(|| {
        ChannelError::Fatal(format!(
            "cannot {what} Telegram message {id:?}: not a Telegram message id (expected <chat_id>:<message_id>, as a send receipt or \
             a received message gives it)"
        ))
    })
}

/// An error for an edit longer than Telegram allows (`limit` units).
fn check_edit_length(edit: &Edit, limit: usize, what: &str) -> Result<(), ChannelError> {
    let len = edit.text.encode_utf16().count();
    if len > limit {
        return Err(ChannelError::Fatal(format!(
            "cannot edit Telegram message {}: a {what} holds at most {limit} characters and the new text has {len}; send it as a new \
             message instead (send splits long texts)",
            edit.message_id
        )));
    }
    Ok(())
}

/// The JSON body of `editMessageText` for `edit`. A text longer than
/// [`MAX_TEXT`] is refused here (an edit cannot add messages; a new `send`
/// splits it).
pub fn edit_text_body(edit: &Edit) -> Result<Value, ChannelError> {
    let message_id = acted_message_id(&edit.message_id, "edit")?;
    check_edit_length(edit, MAX_TEXT, "message")?;
    Ok(json!({ "chat_id": chat_id_value(&edit.conversation), "message_id": message_id, "text": edit.text }))
}

/// The JSON body of `editMessageCaption` for `edit` (a file sent with the
/// text as its caption).
pub fn edit_caption_body(edit: &Edit) -> Result<Value, ChannelError> {
    let message_id = acted_message_id(&edit.message_id, "edit")?;
    check_edit_length(edit, MAX_CAPTION, "caption")?;
    Ok(json!({ "chat_id": chat_id_value(&edit.conversation), "message_id": message_id, "caption": edit.text }))
}

/// What an edit request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOutcome {
    /// The message has the new text (also when it already had it: Telegram
    /// answers "message is not modified", which is no failure for a draft
    /// that did not grow).
    Done,
    /// The message has no text but a caption (a file sent with the text):
    /// edit the caption instead.
    Caption,
}

/// Turn an `editMessageText` / `editMessageCaption` response into an outcome.
pub fn parse_edit(status: u16, body: &[u8]) -> Result<EditOutcome, ChannelError> {
    match api_result(status, body) {
        Ok(_) => Ok(EditOutcome::Done),
        Err(e) => {
            let description = description(body).to_ascii_lowercase();
            if description.contains("message is not modified") {
                Ok(EditOutcome::Done)
            } else if description.contains("no text in the message to edit") {
                Ok(EditOutcome::Caption)
            } else {
                Err(e)
            }
        }
    }
}

/// The reaction emoji Telegram allows bots to set (`ReactionTypeEmoji`).
pub const REACTION_EMOJI: &[&str] = &[
    "👍",
    "👎",
    "❤",
    "🔥",
    "🥰",
    "👏",
    "😁",
    "🤔",
    "🤯",
    "😱",
    "🤬",
    "😢",
    "🎉",
    "🤩",
    "🤮",
    "💩",
    "🙏",
    "👌",
    "🕊",
    "🤡",
    "🥱",
    "🥴",
    "😍",
    "🐳",
    "❤\u{200d}🔥",
    "🌚",
    "🌭",
    "💯",
    "🤣",
    "⚡",
    "🍌",
    "🏆",
    "💔",
    "🤨",
    "😐",
    "🍓",
    "🍾",
    "💋",
    "🖕",
    "😈",
    "😴",
    "😭",
    "🤓",
    "👻",
    "👨\u{200d}💻",
    "👀",
    "🎃",
    "🙈",
    "😇",
    "😨",
    "🤝",
    "✍",
    "🤗",
    "🫡",
    "🎅",
    "🎄",
    "☃",
    "💅",
    "🤪",
    "🗿",
    "🆒",
    "💘",
    "🙉",
    "🦄",
    "😘",
    "💊",
    "🙊",
    "😎",
    "👾",
    "🤷\u{200d}♂",
    "🤷",
    "🤷\u{200d}♀",
    "😡",
];

/// Common emoji outside Telegram's set and the allowed one that stands in.
const REACTION_FALLBACKS: &[(&str, &str)] = &[
    ("✅", "👌"),
    ("✔", "👌"),
    ("☑", "👌"),
    ("🆗", "👌"),
    ("⏳", "👀"),
    ("⌛", "👀"),
    ("👁", "👀"),
    ("♥", "❤"),
    ("🧡", "❤"),
    ("💛", "❤"),
    ("💚", "❤"),
    ("💙", "❤"),
    ("💜", "❤"),
    ("🖤", "❤"),
    ("🤍", "❤"),
    ("🤎", "❤"),
    ("😀", "😁"),
    ("😃", "😁"),
    ("😄", "😁"),
    ("😊", "😁"),
    ("🙂", "😁"),
];

/// `emoji` as a reaction Telegram accepts: the same emoji without variation
/// selectors and skin tones ("❤️" → "❤", "👍🏽" → "👍"), else the stand-in from
/// a short list ("✅" → "👌", "⏳" → "👀", "💙" → "❤", "🙂" → "😁"), else an
/// error naming what Telegram allows.
pub fn reaction_emoji(emoji: &str) -> Result<&'static str, ChannelError> {
    let bare: String = emoji.trim().chars().filter(|c| !matches!(c, '\u{fe0e}' | '\u{fe0f}' | '\u{1f3fb}'..='\u{1f3ff}')).collect();
    if let Some(ok) = REACTION_EMOJI.iter().find(|e| **e == bare) {
        return Ok(ok);
    }
    if let Some((_, ok)) = REACTION_FALLBACKS.iter().find(|(from, _)| *from == bare) {
        return Ok(ok);
    }
    Err(ChannelError::Fatal(format!(
        "Telegram lets bots react only with its own set of emoji, and {emoji:?} is not one of them; use one of {}",
        REACTION_EMOJI.join(" ")
    )))
}

/// The JSON body of `setMessageReaction` for `reaction`, or `None` when the
/// message is a button press (`cb:` id), which is no message in the chat and
/// cannot carry a reaction.
pub fn reaction_body(reaction: &Reaction) -> Result<Option<Value>, ChannelError> {
    if reaction.message_id.starts_with("cb:") {
        return Ok(None);
    }
    let message_id = acted_message_id(&reaction.message_id, "react to")?;
    let emoji = reaction_emoji(&reaction.emoji)?;
    Ok(Some(json!({
        "chat_id": chat_id_value(&reaction.conversation),
        "message_id": message_id,
        "reaction": [{ "type": "emoji", "emoji": emoji }],
    })))
}

/// Check a response whose `result` is only `true` (`sendChatAction`,
/// `setMessageReaction`, `answerCallbackQuery`).
pub fn parse_ok(status: u16, body: &[u8]) -> Result<(), ChannelError> {
    api_result(status, body).map(drop)
}

/// The message id part of a kata message id `<chat_id>:<message_id>` (or a
/// bare message id); `None` for a button press (`cb:<callback id>`), which is
/// no message in the chat.
pub fn reply_message_id(reply_to: &str) -> Option<i64> {
    if reply_to.starts_with("cb:") {
        return None;
    }
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
        .ok_or_else(|| ChannelError::Fatal("Telegram returned a sent message without a message_id".into()))?;
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

/// The `description` of a Bot API error response ("" when there is none).
fn description(body: &[u8]) -> String {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    parsed.get("description").and_then(Value::as_str).unwrap_or_default().to_string()
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
            "https://api.telegram.org/bot{{secret:bot_token}}/getUpdates?offset=10&timeout=25\
             &allowed_updates=%5B%22message%22%2C%22channel_post%22%2C%22callback_query%22%5D"
        );
        assert_eq!(
            get_updates_url("http://127.0.0.1:19000", None, 0),
            "http://127.0.0.1:19000/bot{{secret:bot_token}}/getUpdates?timeout=0\
             &allowed_updates=%5B%22message%22%2C%22channel_post%22%2C%22callback_query%22%5D"
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
        assert_eq!(
            body,
            json!({"chat_id": -100987, "text": "hi", "reply_to_message_id": 55, "allow_sending_without_reply": true, "message_thread_id": 77})
        );
        // A reply to a button press quotes nothing: the press is no message.
        assert_eq!(send_message_body(&outbound(Some("cb:55"), None)), json!({"chat_id": -100987, "text": "hi"}));
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

    fn press(chat_type: &str, extra: &str) -> Value {
        serde_json::from_str(&format!(
            r#"{{"update_id":20,"callback_query":{{"id":"4382bfdwdsb323b2d9","chat_instance":"x",
                "from":{{"id":42,"is_bot":false,"first_name":"Ann","username":"ann"}},
                "message":{{"message_id":7,"chat":{{"id":-100,"type":"{chat_type}"}},"date":5,"text":"Run notes.append?"{extra}}},
                "data":"yes 3"}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_button_press_is_a_message_with_the_button_id() {
        let m = parse_update(&press("private", ""), NOW, None).unwrap();
        assert_eq!(m.id, "cb:4382bfdwdsb323b2d9");
        assert_eq!((m.conversation.as_str(), m.sender.as_str(), m.sender_name.as_deref()), ("-100", "42", Some("ann")));
        assert_eq!(m.text, "yes 3");
        assert_eq!((m.conversation_kind, m.mentioned, m.thread.as_deref()), (ConversationKind::Direct, true, None));
        assert_eq!(m.timestamp_ms, NOW);
        let raw: Value = serde_json::from_str(m.raw.as_deref().unwrap()).unwrap();
        assert_eq!(raw["callback_query"]["message"]["message_id"], 7, "the pressed message's id is in raw");

        // In a group a press addresses the bot without a mention.
        let g = parse_update(&press("supergroup", r#","message_thread_id":9"#), NOW, None).unwrap();
        assert_eq!((g.conversation_kind, g.mentioned, g.thread.as_deref()), (ConversationKind::Group, true, Some("9")));

        // No data (a game) or no message (inline mode): nothing to deliver, the cursor still moves.
        let body = r#"{"ok":true,"result":[
            {"update_id":30,"callback_query":{"id":"a","from":{"id":1},"message":{"message_id":1,"chat":{"id":1,"type":"private"}},"game_short_name":"g"}},
            {"update_id":31,"callback_query":{"id":"b","from":{"id":1},"inline_message_id":"m","data":"yes 1"}}]}"#;
        let r = poll(body, Some(30));
        assert!(r.messages.is_empty());
        assert_eq!(r.cursor.as_deref(), Some("32"));
    }

    #[test]
    fn the_emulators_press_and_the_ids_to_answer() {
        // What telegram-test-api 4.2.1 returns for POST /sendCallback.
        let body = r#"{"ok":true,"result":[
            {"update_id":5,"callback_query":{"id":"1","from":{"id":7,"first_name":"U","username":"user7","is_bot":false},
             "message":{"message_id":4,"chat":{"id":7,"type":"private"}},"data":"no 12"}},
            {"update_id":6,"message":{"message_id":6,"chat":{"id":7,"type":"private"},"from":{"id":7},"date":1,"text":"hi"}}]}"#;
        let r = poll(body, None);
        assert_eq!(texts(&r), ["no 12", "hi"]);
        assert_eq!(callback_ids(&r.messages).collect::<Vec<_>>(), ["1"]);
        assert_eq!(answer_callback_body("1"), json!({"callback_query_id": "1"}));
    }

    fn texts(r: &PollResult) -> Vec<&str> {
        r.messages.iter().map(|m| m.text.as_str()).collect()
    }

    fn action(id: &str, label: &str) -> Action {
        Action { id: id.into(), label: label.into() }
    }

    #[test]
    fn actions_become_an_inline_keyboard() {
        let (markup, hints) = inline_keyboard(&[action("yes 7", "Approve"), action("no 7", "")]);
        assert_eq!(
            markup,
            Some(json!({"inline_keyboard": [[{"text": "Approve", "callback_data": "yes 7"}, {"text": "no 7", "callback_data": "no 7"}]]}))
        );
        assert_eq!(hints, "");
        let many: Vec<Action> = (0..4).map(|i| action(&format!("pick {i}"), "")).collect();
        let (markup, _) = inline_keyboard(&many);
        assert_eq!(markup.unwrap()["inline_keyboard"].as_array().unwrap().len(), 4, "more than three buttons: one per row");
        assert_eq!(inline_keyboard(&[]), (None, String::new()));
    }

    #[test]
    fn an_action_id_too_long_for_callback_data_becomes_a_reply_hint() {
        let exact = "x".repeat(MAX_CALLBACK_DATA);
        let long = "é".repeat(33); // 66 bytes
        let (markup, hints) = inline_keyboard(&[action(&exact, "Fits"), action(&long, "Too long"), action("", "Empty")]);
        assert_eq!(markup, Some(json!({"inline_keyboard": [[{"text": "Fits", "callback_data": exact}]]})));
        assert_eq!(hints, format!("reply \"{long}\" to Too long\nreply \"\" to Empty"));
        let mut msg = outbound(None, None);
        msg.actions = vec![action(&long, &long)];
        assert_eq!(send_message_body(&msg), json!({"chat_id": -100987, "text": format!("hi\n\nreply \"{long}\"")}));
    }

    fn file(name: &str, mime: &str, data: &[u8]) -> OutboundAttachment {
        OutboundAttachment { name: name.into(), mime_type: mime.into(), data: data.to_vec() }
    }

    #[test]
    fn a_message_with_buttons_is_one_send_message() {
        let mut msg = outbound(Some("-100987:55"), Some("77"));
        msg.actions = vec![action("yes 1", "Approve"), action("no 1", "Deny")];
        let parts = plan_send(&msg);
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0],
            Part::Text(
                json!({"chat_id": -100987, "text": "hi", "reply_to_message_id": 55, "allow_sending_without_reply": true, "message_thread_id": 77,
                "reply_markup": {"inline_keyboard": [[{"text": "Approve", "callback_data": "yes 1"}, {"text": "Deny", "callback_data": "no 1"}]]}})
            )
        );
    }

    #[test]
    fn buttons_without_text_are_named_in_the_text() {
        let mut msg = outbound(None, None);
        msg.text = String::new();
        msg.actions = vec![action("yes 1", "Approve"), action("no 1", "")];
        let Part::Text(body) = &plan_send(&msg)[0] else { panic!() };
        assert_eq!(body["text"], "Approve · no 1");
        assert_eq!(body["reply_markup"]["inline_keyboard"][0].as_array().unwrap().len(), 2);
        // Nothing at all stays empty (Telegram says so).
        msg.actions.clear();
        assert_eq!(send_message_body(&msg)["text"], "");
    }

    #[test]
    fn files_carry_the_text_as_caption_when_it_fits() {
        let mut msg = outbound(Some("-100987:55"), Some("77"));
        msg.attachments = vec![file("a.txt", "text/plain", b"A"), file("b.png", "image/png", b"B")];
        msg.actions = vec![action("yes 1", "Approve")];
        let parts = plan_send(&msg);
        let markup = r#"{"inline_keyboard":[[{"callback_data":"yes 1","text":"Approve"}]]}"#;
        assert_eq!(
            parts,
            [
                Part::Document {
                    attachment: 0,
                    fields: vec![
                        ("chat_id", "-100987".into()),
                        ("message_thread_id", "77".into()),
                        ("reply_to_message_id", "55".into()),
                        ("allow_sending_without_reply", "true".into()),
                        ("caption", "hi".into()),
                        ("reply_markup", markup.into()),
                    ]
                },
                Part::Document { attachment: 1, fields: vec![("chat_id", "-100987".into()), ("message_thread_id", "77".into())] },
            ]
        );
        // No text: the file alone, no caption.
        msg.text = String::new();
        msg.actions.clear();
        let Part::Document { fields, .. } = &plan_send(&msg)[0] else { panic!() };
        assert!(!fields.iter().any(|(k, _)| *k == "caption"), "{fields:?}");
    }

    #[test]
    fn a_text_longer_than_a_caption_goes_first_on_its_own() {
        let mut msg = outbound(Some("-100987:55"), None);
        // 1024 UTF-16 units fit; "😀" is two units each.
        msg.text = "😀".repeat(512);
        msg.attachments = vec![file("a.txt", "text/plain", b"A")];
        assert!(matches!(&plan_send(&msg)[0], Part::Document { fields, .. } if fields.iter().any(|(k, _)| *k == "caption")));
        msg.text.push('!');
        let parts = plan_send(&msg);
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            Part::Text(json!({"chat_id": -100987, "text": msg.text, "reply_to_message_id": 55, "allow_sending_without_reply": true}))
        );
        assert_eq!(parts[1], Part::Document { attachment: 0, fields: vec![("chat_id", "-100987".into())] });
    }

    #[test]
    fn multipart_body_holds_the_fields_and_the_file() {
        let data = b"\x00\x01binary\r\n--not-a-boundary\xff";
        let (ctype, body) =
            multipart_body(&[("chat_id", "5".into()), ("caption", "h\u{e9}".into())], "document", &file("r\"ep\nort.bin", "", data));
        let boundary = ctype.strip_prefix("multipart/form-data; boundary=").unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"chat_id\"\r\n\r\n5\r\n").as_bytes());
        want.extend_from_slice(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"caption\"\r\n\r\nh\u{e9}\r\n").as_bytes());
        want.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"document\"; filename=\"r_ep_ort.bin\"\r\n\
                 content-type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        want.extend_from_slice(data);
        want.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        assert_eq!(body, want);

        // A file that contains the first boundary gets another one.
        let first = format!("kata-{:016x}", fnv1a(b"x"));
        let tricky = format!("x{first}");
        let (_, plain) = multipart_body(&[], "document", &file("a", "text/plain", b"x"));
        assert!(String::from_utf8_lossy(&plain).contains(&first));
        let (ctype, _) = multipart_body(&[], "document", &file("a", "text/plain", tricky.as_bytes()));
        assert!(!tricky.contains(ctype.rsplit('=').next().unwrap()));
        assert_eq!(form_file_name(" \t"), "file");
        assert_eq!(form_file_name(" a\tb.txt "), "a_b.txt");
    }

    #[test]
    fn long_texts_are_split_at_line_breaks_spaces_or_the_limit() {
        assert_eq!(split_text("", 5), [""]);
        assert_eq!(split_text("abcde", 5), ["abcde"]);
        assert_eq!(split_text("ab\ncd\nefgh", 6), ["ab\ncd", "efgh"]);
        assert_eq!(split_text("ab cd efgh", 6), ["ab cd ", "efgh"]);
        assert_eq!(split_text("abcdefgh", 3), ["abc", "def", "gh"]);
        // Units are UTF-16: "😀" is two, and is never cut in half.
        assert_eq!(split_text("😀😀😀", 3), ["😀", "😀", "😀"]);
        let text = format!("{}\n{}", "a".repeat(4000), "b".repeat(4000));
        let mut msg = outbound(Some("-100987:55"), None);
        msg.text = text;
        msg.actions = vec![action("yes 1", "Approve")];
        let parts = plan_send(&msg);
        let bodies: Vec<&Value> = parts.iter().map(|p| if let Part::Text(b) = p { b } else { panic!("{p:?}") }).collect();
        assert_eq!(bodies.len(), 2);
        assert_eq!((bodies[0]["text"].as_str().unwrap().len(), bodies[1]["text"].as_str().unwrap().len()), (4000, 4000));
        assert_eq!((&bodies[0]["reply_to_message_id"], &bodies[1]["reply_to_message_id"]), (&json!(55), &Value::Null));
        assert_eq!(
            (bodies[0].get("reply_markup"), bodies[1]["reply_markup"]["inline_keyboard"][0][0]["callback_data"].as_str()),
            (None, Some("yes 1"))
        );
    }

    #[test]
    fn an_edit_longer_than_a_message_is_refused_before_asking() {
        let edit = Edit { conversation: "5".into(), message_id: "5:3".into(), text: "é".repeat(MAX_TEXT) };
        assert!(edit_text_body(&edit).is_ok());
        let longer = Edit { text: "😀".repeat(MAX_TEXT / 2 + 1), ..edit.clone() };
        assert!(matches!(edit_text_body(&longer), Err(ChannelError::Fatal(m)) if m.contains("at most 4096") && m.contains("4098")));
        assert!(matches!(edit_caption_body(&edit), Err(ChannelError::Fatal(m)) if m.contains("caption holds at most 1024")));
    }

    #[test]
    fn typing_body() {
        let t = Target { conversation: "-100".into(), thread: Some("9".into()) };
        assert_eq!(chat_action_body(&t), json!({"chat_id": -100, "action": "typing", "message_thread_id": 9}));
        let t = Target { conversation: "5".into(), thread: None };
        assert_eq!(chat_action_body(&t), json!({"chat_id": 5, "action": "typing"}));
    }

    #[test]
    fn edits_take_the_send_receipt_id() {
        let receipt = parse_send(200, br#"{"ok":true,"result":{"message_id":8,"chat":{"id":-5}}}"#, "-5").unwrap().id;
        let edit = Edit { conversation: "-5".into(), message_id: receipt, text: "longer".into() };
        assert_eq!(edit_text_body(&edit).unwrap(), json!({"chat_id": -5, "message_id": 8, "text": "longer"}));
        assert_eq!(edit_caption_body(&edit).unwrap(), json!({"chat_id": -5, "message_id": 8, "caption": "longer"}));
        let bad = Edit { conversation: "-5".into(), message_id: "cb:1".into(), text: "x".into() };
        assert!(matches!(edit_text_body(&bad), Err(ChannelError::Fatal(m)) if m.contains("<chat_id>:<message_id>")));
    }

    #[test]
    fn edit_responses() {
        assert_eq!(parse_edit(200, br#"{"ok":true,"result":{"message_id":8}}"#), Ok(EditOutcome::Done));
        assert_eq!(parse_edit(200, br#"{"ok":true,"result":true}"#), Ok(EditOutcome::Done));
        let same = br#"{"ok":false,"error_code":400,"description":"Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"}"#;
        assert_eq!(parse_edit(400, same), Ok(EditOutcome::Done));
        let file = br#"{"ok":false,"error_code":400,"description":"Bad Request: there is no text in the message to edit"}"#;
        assert_eq!(parse_edit(400, file), Ok(EditOutcome::Caption));
        let gone = br#"{"ok":false,"error_code":400,"description":"Bad Request: message to edit not found"}"#;
        assert!(matches!(parse_edit(400, gone), Err(ChannelError::Fatal(m)) if m.contains("message to edit not found")));
        let slow = br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#;
        assert_eq!(parse_edit(429, slow), Err(ChannelError::RateLimited(3000)));
        assert!(matches!(
            parse_edit(401, br#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#),
            Err(ChannelError::AuthFailed(_))
        ));
    }

    #[test]
    fn reaction_emoji_are_telegrams_own() {
        assert_eq!(reaction_emoji("👀"), Ok("👀"));
        assert_eq!(reaction_emoji("❤️"), Ok("❤"));
        assert_eq!(reaction_emoji("👍🏽"), Ok("👍"));
        assert_eq!(reaction_emoji("🤷‍♀️"), Ok("🤷\u{200d}♀"));
        assert_eq!(reaction_emoji("✅"), Ok("👌"));
        assert_eq!(reaction_emoji("⏳"), Ok("👀"));
        let err = reaction_emoji("🦀").unwrap_err();
        assert!(matches!(&err, ChannelError::Fatal(m) if m.contains("\"🦀\" is not one of them") && m.contains("👀")), "{err:?}");
        for e in REACTION_EMOJI {
            assert_eq!(reaction_emoji(e), Ok(*e));
        }
    }

    #[test]
    fn reaction_bodies() {
        let r = Reaction { conversation: "7".into(), message_id: "7:12".into(), emoji: "👀".into() };
        assert_eq!(
            reaction_body(&r).unwrap(),
            Some(json!({"chat_id": 7, "message_id": 12, "reaction": [{"type": "emoji", "emoji": "👀"}]}))
        );
        let press = Reaction { message_id: "cb:99".into(), ..r.clone() };
        assert_eq!(reaction_body(&press).unwrap(), None, "a button press has no message to react to");
        let bad = Reaction { emoji: "🦀".into(), ..r.clone() };
        assert!(reaction_body(&bad).is_err());
        assert!(matches!(reaction_body(&Reaction { message_id: "x".into(), ..r }), Err(ChannelError::Fatal(_))));
    }

    #[test]
    fn true_results_and_their_errors() {
        assert_eq!(parse_ok(200, br#"{"ok":true,"result":true}"#), Ok(()));
        let invalid = br#"{"ok":false,"error_code":400,"description":"Bad Request: REACTION_INVALID"}"#;
        assert_eq!(parse_ok(400, invalid), Err(ChannelError::Fatal("Telegram API error 400: Bad Request: REACTION_INVALID".into())));
        let slow = br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 2","parameters":{"retry_after":2}}"#;
        assert_eq!(parse_ok(429, slow), Err(ChannelError::RateLimited(2000)));
        assert!(matches!(
            parse_ok(401, br#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#),
            Err(ChannelError::AuthFailed(_))
        ));
        // A document upload answers like sendMessage.
        let doc = br#"{"ok":true,"result":{"message_id":9,"chat":{"id":5},"document":{"file_name":"a.txt","file_id":"f"},"caption":"hi"}}"#;
        assert_eq!(parse_send(200, doc, "5").unwrap().id, "5:9");
    }
}
