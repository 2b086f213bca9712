//! Pure Slack logic: Web API URLs, bodies and error mapping, Socket Mode
//! envelopes, Events API requests, and turning events into kata messages.
//! Nothing here touches the host, so it is unit-tested natively.
//!
//! The payload shapes follow Slack's public documentation:
//! - Socket Mode: <https://api.slack.com/apis/connections/socket-implement>
//!   (`hello`, `disconnect` with a `reason`, `events_api` envelopes carrying
//!   `envelope_id`, `payload`, `accepts_response_payload`, `retry_attempt`,
//!   `retry_reason`; each envelope acknowledged with `{"envelope_id": …}`);
//! - `apps.connections.open`: <https://api.slack.com/methods/apps.connections.open>
//!   (app-level token in the Authorization header; `{"ok": true, "url": "wss://…"}`);
//! - `auth.test`: <https://api.slack.com/methods/auth.test> (`user_id`, `bot_id`);
//! - `chat.postMessage`: <https://api.slack.com/methods/chat.postMessage>
//!   (`channel`, `text`, `thread_ts`; answers `channel` and `ts`);
//! - the `message` and `app_mention` events: <https://api.slack.com/events/message>,
//!   <https://api.slack.com/events/app_mention> (`channel`, `user`, `text`, `ts`,
//!   `thread_ts`, `channel_type`, `subtype`, `bot_id`, `files`);
//! - file objects: <https://api.slack.com/types/file> (`name`, `mimetype`, `size`, `url_private`);
//! - the Events API over HTTP and its `url_verification` challenge:
//!   <https://api.slack.com/apis/events-api>, <https://api.slack.com/events/url_verification>;
//! - errors (`{"ok": false, "error": "invalid_auth"}`) and HTTP 429 with
//!   `Retry-After` in seconds: <https://api.slack.com/docs/rate-limits>;
//! - text escaping (`&`, `<`, `>`) and `<@U…>` / `<#C…|name>` / `<url|label>`
//!   control sequences: <https://api.slack.com/reference/surfaces/formatting>.
//!
//! The Socket Mode shapes were also checked against the envelopes in
//! slackapi/python-slack-sdk's test server and slack-morphism's models.

use kata_sdk::{Action, Attachment, ChannelError, ConversationKind, Frame, FrameResult, Message, OutboundMessage, SendReceipt};
use serde_json::{Value, json};

/// Slack's Web API.
pub const DEFAULT_API_BASE: &str = "https://slack.com/api";

/// Who the bot is: `auth.test` with the bot token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bot {
    /// The bot's user id (`U…`): what `<@U…>` mentions of it name, and the
    /// `user` of the messages it posts.
    pub user_id: String,
    /// The bot id (`B…`), the `bot_id` of the messages it posts.
    pub bot_id: Option<String>,
}

/// Normalise a base URL from config key `key`: an `http(s)://` URL without
/// a trailing slash, query or fragment.
pub fn normalize_base(raw: &str, key: &str) -> Result<String, ChannelError> {
    let base = raw.trim().trim_end_matches('/');
    let lower = base.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !base.contains(['?', '#']) => Ok(base.to_string()),
        _ => Err(ChannelError::InvalidConfig(format!(
            "config key `{key}` must be an http(s) URL such as \"{DEFAULT_API_BASE}\", got {raw:?}"
        ))),
    }
}

/// The URL of Web API method `method` (e.g. `chat.postMessage`).
pub fn method_url(api_base: &str, method: &str) -> String {
    format!("{api_base}/{method}")
}

/// The `Authorization` header value for the secret named `secret`: the host
/// substitutes the placeholder; the plugin never holds the token.
pub fn bearer(secret: &str) -> String {
    format!("Bearer {{{{secret:{secret}}}}}")
}

/// The user id and bot id from an `auth.test` response.
pub fn parse_auth_test(status: u16, retry_after: Option<&str>, body: &[u8]) -> Result<Bot, ChannelError> {
    let v = api_result(status, retry_after, body, "auth.test", "bot_token")?;
    let user_id = str_field(&v, "user_id").ok_or_else(|| ChannelError::Fatal("Slack auth.test returned no user_id".into()))?;
    Ok(Bot { user_id, bot_id: str_field(&v, "bot_id") })
}

/// The websocket URL from an `apps.connections.open` response.
pub fn parse_connections_open(status: u16, retry_after: Option<&str>, body: &[u8]) -> Result<String, ChannelError> {
    let v = api_result(status, retry_after, body, "apps.connections.open", "app_token")?;
    let url = str_field(&v, "url").ok_or_else(|| ChannelError::Fatal("Slack apps.connections.open returned no url".into()))?;
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("wss://") || lower.starts_with("ws://")) {
        return Err(ChannelError::Fatal(format!("Slack apps.connections.open returned {:?}, which is not a websocket URL", shown(&url))));
    }
    Ok(url)
}

/// A URL without its query (the Socket Mode ticket), for messages.
pub fn shown(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// The parsed body of a successful (`"ok": true`) Web API call, or the error
/// it maps to. `what` names the method and `secret` the token it used, for
/// the error text.
pub fn api_result(status: u16, retry_after: Option<&str>, body: &[u8], what: &str, secret: &str) -> Result<Value, ChannelError> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    match (status, parsed) {
        (200..=299, Some(v)) if v.get("ok").and_then(Value::as_bool) == Some(true) => Ok(v),
        (_, parsed) => Err(map_error(status, retry_after, parsed.as_ref(), body, what, secret)),
    }
}

/// Map a failed Web API call to a channel error.
///
/// - HTTP 429 (or the `ratelimited` error): `rate-limited` for `Retry-After`
///   seconds (1 s when missing);
/// - `invalid_auth`, `not_authed`, `token_revoked`, `token_expired`,
///   `account_inactive`, `not_allowed_token_type`, `missing_scope` and HTTP
///   401/403: `auth-failed`, naming the secret;
/// - HTTP 5xx and Slack's transient errors (`internal_error`, `fatal_error`,
///   `service_unavailable`, `request_timeout`): `network`;
/// - anything else (`channel_not_found`, `not_in_channel`, `msg_too_long`…): `fatal`.
pub fn map_error(status: u16, retry_after: Option<&str>, parsed: Option<&Value>, body: &[u8], what: &str, secret: &str) -> ChannelError {
    let error = parsed.and_then(|v| str_field(v, "error"));
    let retry_ms = || retry_after.and_then(|s| s.trim().parse::<f64>().ok()).map_or(1000, |s| (s.max(0.0) * 1000.0).ceil() as u64);
    if status == 429 || error.as_deref() == Some("ratelimited") {
        return ChannelError::RateLimited(retry_ms());
    }
    let Some(error) = error else {
        return match status {
            401 | 403 => ChannelError::AuthFailed(format!("Slack {what} refused the token (secret `{secret}`): HTTP {status}")),
            500..=599 => ChannelError::Network(format!("Slack {what}: HTTP {status}")),
            _ => ChannelError::Fatal(format!("unexpected Slack {what} response (HTTP {status}): {}", excerpt(body))),
        };
    };
    match error.as_str() {
        "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" | "account_inactive" | "not_allowed_token_type" => {
            let hint = match secret {
                "app_token" => "an app-level token (xapp-…) with the connections:write scope",
                _ => "the bot token (xoxb-…) of the installed app",
            };
            ChannelError::AuthFailed(format!("Slack {what} refused the token in secret `{secret}` ({error}); it must be {hint}"))
        }
        "missing_scope" => {
            let needed = parsed.and_then(|v| str_field(v, "needed")).unwrap_or_default();
            ChannelError::AuthFailed(format!(
                "Slack {what}: the token in secret `{secret}` lacks the scope {needed:?} (missing_scope); add it in the app's OAuth settings and reinstall"
            ))
        }
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            ChannelError::Network(format!("Slack {what} failed: {error}"))
        }
        _ if status >= 500 => ChannelError::Network(format!("Slack {what} failed (HTTP {status}): {error}")),
        _ => ChannelError::Fatal(format!("Slack {what} failed: {error}")),
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

/// A non-empty string field.
fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Handle one Socket Mode frame (a JSON envelope).
///
/// - `hello`: nothing to do (the connection is ready);
/// - `events_api`: the messages in its event, and the acknowledgement
///   `{"envelope_id": …}`, which the host writes after storing the messages
///   (Slack redelivers an envelope that is not acknowledged, so a crash
///   before the store means a redelivery, never a loss);
/// - `interactive` with a `block_actions` payload (a button press): a
///   message per pressed button (see [`press_messages`]), acknowledged the same way;
/// - any other envelope with an `envelope_id` (`slash_commands`, other
///   `interactive` payloads): acknowledged and otherwise ignored;
/// - `disconnect`: an error, so the host closes this connection and opens a
///   fresh one (a new `apps.connections.open` URL); `link_disabled` means
///   Socket Mode was turned off for the app, which is a configuration error.
pub fn socket_frame(text: &str, bot: &Bot, now_ms: u64) -> Result<FrameResult, ChannelError> {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Ok(FrameResult::default());
    };
    let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind == "disconnect" {
        let reason = v.get("reason").and_then(Value::as_str).unwrap_or("unknown");
        if reason == "link_disabled" {
            return Err(ChannelError::InvalidConfig(
                "Slack disabled this app's Socket Mode connection (disconnect: link_disabled): turn Socket Mode on in the app's \
                 settings, or set config mode = \"events\""
                    .into(),
            ));
        }
        return Err(ChannelError::Network(format!("Slack asked for a new connection (disconnect: {reason})")));
    }
    let Some(envelope_id) = v.get("envelope_id").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
        return Ok(FrameResult::default());
    };
    let ack = Frame::text(json!({ "envelope_id": envelope_id }).to_string());
    let messages = match (kind, v.get("payload")) {
        ("events_api", Some(payload)) => callback_message(payload, bot, now_ms).into_iter().collect(),
        ("interactive", Some(payload)) => press_messages(payload, now_ms),
        _ => Vec::new(),
    };
    Ok(FrameResult { messages, replies: vec![ack] })
}

/// A `block_actions` payload (<https://api.slack.com/reference/interaction-payloads/block-actions>)
/// as kata messages, one per pressed button with a `value`: exactly like the
/// person typing the button's value (kata's action id, see
/// [`post_message_body`]). The sender is who pressed it (`user.id`), the
/// conversation the channel of the message carrying the button
/// (`container.channel_id`, else `channel.id`), the thread that message's
/// `thread_ts`. A press addresses the bot, in a channel too. The id is
/// `act:<channel>:<action_ts>` (a press is no message in the channel, so it
/// is never a reply target, see [`reply_ts`]); `raw` keeps the payload.
pub fn press_messages(payload: &Value, now_ms: u64) -> Vec<Message> {
    if payload.get("type").and_then(Value::as_str) != Some("block_actions") {
        return Vec::new();
    }
    let Some(user) = payload.get("user") else { return Vec::new() };
    let Some(sender) = str_field(user, "id") else { return Vec::new() };
    let container = payload.get("container");
    let Some(channel) =
        container.and_then(|c| str_field(c, "channel_id")).or_else(|| payload.get("channel").and_then(|c| str_field(c, "id")))
    else {
        return Vec::new();
    };
    let thread =
        payload.get("message").and_then(|m| str_field(m, "thread_ts")).or_else(|| container.and_then(|c| str_field(c, "thread_ts")));
    let sender_name = str_field(user, "username").or_else(|| str_field(user, "name"));
    let actions = payload.get("actions").and_then(Value::as_array).cloned().unwrap_or_default();
    actions
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let value = str_field(a, "value")?;
            let action_ts = str_field(a, "action_ts").or_else(|| str_field(payload, "trigger_id")).unwrap_or_else(|| now_ms.to_string());
            Some(Message {
                id: if i == 0 { format!("act:{channel}:{action_ts}") } else { format!("act:{channel}:{action_ts}:{i}") },
                conversation: channel.clone(),
                thread: thread.clone(),
                sender: sender.clone(),
                sender_name: sender_name.clone(),
                text: value,
                attachments: Vec::new(),
                timestamp_ms: ts_to_ms(&action_ts).unwrap_or(now_ms),
                raw: serde_json::to_string(payload).ok(),
                conversation_kind: if is_dm_channel(&channel) { ConversationKind::Direct } else { ConversationKind::Group },
                mentioned: true,
            })
        })
        .collect()
}

/// The message in an Events API `event_callback` payload, if it carries one
/// kata takes.
pub fn callback_message(payload: &Value, bot: &Bot, now_ms: u64) -> Option<Message> {
    if payload.get("type").and_then(Value::as_str) != Some("event_callback") {
        return None;
    }
    event_message(payload.get("event")?, bot, now_ms)
}

/// Message subtypes that are someone saying something; every other subtype
/// (`message_changed`, `message_deleted`, `channel_join`, `bot_message`…)
/// is not a new message and is skipped.
const SPOKEN_SUBTYPES: [&str; 3] = ["file_share", "thread_broadcast", "me_message"];

/// One `message` or `app_mention` event as a kata message.
///
/// - id `<channel>:<ts>` (a `ts` is unique within its channel), so the
///   `message` and `app_mention` events of one post are stored once;
/// - conversation: the channel; thread: `thread_ts`;
/// - `channel_type` `im` is a direct conversation, anything else (`channel`,
///   `group`, `mpim`, and `app_mention`, which has none) a group, in which
///   the message is `mentioned` when its text mentions the bot (`<@U…>`) or
///   it is an `app_mention`;
/// - the bot's own posts (its `bot_id` or user id) are skipped, so nothing
///   kata sends comes back in;
/// - files become attachments (`name`, `mimetype`, `size`, `url_private`);
/// - the text is made plain (see [`to_plain`]) after dropping a leading
///   mention of the bot; the event as delivered is kept in `raw`.
pub fn event_message(event: &Value, bot: &Bot, now_ms: u64) -> Option<Message> {
    let kind = event.get("type").and_then(Value::as_str)?;
    if kind != "message" && kind != "app_mention" {
        return None;
    }
    if let Some(subtype) = event.get("subtype").and_then(Value::as_str)
        && !SPOKEN_SUBTYPES.contains(&subtype)
    {
        return None;
    }
    let user = str_field(event, "user");
    let own_bot = bot.bot_id.is_some() && str_field(event, "bot_id") == bot.bot_id;
    if own_bot || (!bot.user_id.is_empty() && user.as_deref() == Some(bot.user_id.as_str())) {
        return None;
    }
    let user = user.or_else(|| str_field(event, "bot_id"))?;
    let channel = str_field(event, "channel")?;
    let ts = str_field(event, "ts")?;
    let raw_text = event.get("text").and_then(Value::as_str).unwrap_or_default();
    let files = event.get("files").and_then(Value::as_array).map(|f| f.iter().filter_map(attachment).collect()).unwrap_or_default();

    let direct = event.get("channel_type").and_then(Value::as_str) == Some("im");
    let mentions_bot =
        !bot.user_id.is_empty() && (raw_text.contains(&format!("<@{}>", bot.user_id)) || raw_text.contains(&format!("<@{}|", bot.user_id)));
    let mentioned = direct || kind == "app_mention" || mentions_bot;
    let text = to_plain(strip_leading_mention(raw_text, &bot.user_id));
    let profile = event.get("user_profile");
    let sender_name =
        profile.and_then(|p| str_field(p, "display_name").or_else(|| str_field(p, "real_name")).or_else(|| str_field(p, "name")));
    Some(Message {
        id: format!("{channel}:{ts}"),
        conversation: channel,
        thread: str_field(event, "thread_ts"),
        sender: user,
        sender_name,
        text,
        attachments: files,
        timestamp_ms: ts_to_ms(&ts).unwrap_or(now_ms),
        raw: serde_json::to_string(event).ok(),
        conversation_kind: if direct { ConversationKind::Direct } else { ConversationKind::Group },
        mentioned,
    })
}

/// A Slack file object as an attachment.
fn attachment(file: &Value) -> Option<Attachment> {
    let name = str_field(file, "name").or_else(|| str_field(file, "title")).unwrap_or_default();
    let url = str_field(file, "url_private").or_else(|| str_field(file, "permalink"));
    if name.is_empty() && url.is_none() {
        return None;
    }
    Some(Attachment {
        name,
        mime_type: str_field(file, "mimetype").unwrap_or_else(|| "application/octet-stream".into()),
        url,
        size: file.get("size").and_then(Value::as_u64),
    })
}

/// A Slack `ts` ("1355517523.000005": seconds, then microseconds) in milliseconds.
pub fn ts_to_ms(ts: &str) -> Option<u64> {
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    let secs: u64 = secs.parse().ok()?;
    let millis: u64 = format!("{:0<3}", frac.get(..3.min(frac.len())).unwrap_or("")).parse().unwrap_or(0);
    Some(secs.saturating_mul(1000).saturating_add(millis))
}

/// `text` without a leading mention of the bot (`<@U…>` or `<@U…|name>`)
/// and the punctuation and space after it: "<@U1> hello" addresses the bot
/// and says "hello".
pub fn strip_leading_mention<'t>(text: &'t str, bot_user: &str) -> &'t str {
    if bot_user.is_empty() {
        return text;
    }
    let trimmed = text.trim_start();
    let Some(rest) = trimmed.strip_prefix("<@").and_then(|r| r.strip_prefix(bot_user)) else { return text };
    let rest = match rest.strip_prefix('>') {
        Some(r) => r,
        None => match rest.strip_prefix('|').and_then(|r| r.split_once('>')) {
            Some((_, r)) => r,
            None => return text,
        },
    };
    rest.trim_start_matches([',', ':']).trim_start()
}

/// Slack's message markup as plain text: `<@U1>` and `<@U1|ann>` become
/// `@U1` and `@ann`, `<#C1|general>` `#general`, `<!here>` `@here`,
/// `<https://x|label>` `label (https://x)` (just the URL when there is no
/// label or the label is the URL), and `&lt;` `&gt;` `&amp;` their characters.
pub fn to_plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&unescape(&rest[..open]));
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            out.push_str(&unescape(&rest[open..]));
            return out;
        };
        let inner = &after[..close];
        let (target, label) = match inner.split_once('|') {
            Some((t, l)) => (t, Some(unescape(l))),
            None => (inner, None),
        };
        let label = label.filter(|l| !l.is_empty());
        match target.chars().next() {
            Some('@') => out.push_str(&format!("@{}", label.as_deref().map_or(&target[1..], |l| l.trim_start_matches('@')))),
            Some('#') => out.push_str(&format!("#{}", label.as_deref().unwrap_or(&target[1..]))),
            Some('!') => {
                let name = &target[1..];
                match label {
                    Some(l) => out.push_str(&l),
                    None => out.push_str(&format!("@{}", name.split('^').next().unwrap_or(name))),
                }
            }
            _ => {
                let url = unescape(target);
                let bare = url.trim_start_matches("mailto:").trim_start_matches("https://").trim_start_matches("http://");
                match label {
                    Some(l) if l != url && l != bare => out.push_str(&format!("{l} ({url})")),
                    Some(l) => out.push_str(&l),
                    None => out.push_str(&url),
                }
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(&unescape(rest));
    out
}

/// `&lt;`, `&gt;` and `&amp;` as the characters they stand for.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// Plain text made safe for Slack: `&`, `<` and `>` escaped, so a reply is
/// shown as written and never read as a mention or link.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The `ts` part of a kata message id `<channel>:<ts>`; `None` for a
/// button press (`act:…`), which is no message in the channel.
pub fn reply_ts(reply_to: &str) -> Option<&str> {
    if reply_to.starts_with("act:") {
        return None;
    }
    let (_, ts) = reply_to.rsplit_once(':')?;
    ts_to_ms(ts).map(|_| ts)
}

/// Whether `channel` is a direct message channel (ids starting with `D`).
pub fn is_dm_channel(channel: &str) -> bool {
    channel.starts_with('D')
}

/// The JSON body of `chat.postMessage` for `msg`.
///
/// The post goes into `msg.thread` when kata gives one. Otherwise, with
/// `reply_in_thread`, a reply in a channel opens a thread under the message
/// it answers (`thread_ts` = that message's `ts`); in a DM it is posted
/// inline. The text is escaped ([`escape`]).
///
/// `msg.actions` become Block Kit buttons (see [`blocks`]); the text then
/// also goes in a `section` block (with `blocks`, Slack shows the blocks and
/// uses `text` only for notifications).
pub fn post_message_body(msg: &OutboundMessage, reply_in_thread: bool) -> Value {
    let (blocks, hints) = blocks(&msg.text, &msg.actions);
    let mut text = msg.text.clone();
    if !hints.is_empty() {
        if !text.trim().is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&hints);
    }
    if text.trim().is_empty() && blocks.is_some() {
        // Buttons alone: name them, for notifications.
        text = msg.actions.iter().map(label).collect::<Vec<_>>().join(" · ");
    }
    let mut body = json!({ "channel": msg.conversation, "text": escape(&text) });
    if let Some(blocks) = blocks {
        body["blocks"] = blocks;
    }
    let thread = msg.thread.clone().filter(|t| !t.is_empty()).or_else(|| {
        let ts = msg.reply_to.as_deref().and_then(reply_ts)?;
        (reply_in_thread && !is_dm_channel(&msg.conversation)).then(|| ts.to_string())
    });
    if let Some(ts) = thread {
        body["thread_ts"] = json!(ts);
    }
    body
}

/// Longest button `value` Slack accepts, in characters.
pub const MAX_BUTTON_VALUE: usize = 2000;
/// Longest button label Slack accepts, in characters.
const MAX_BUTTON_TEXT: usize = 75;
/// Longest `section` text Slack accepts, in characters.
const MAX_SECTION_TEXT: usize = 3000;
/// Most elements in one `actions` block.
const MAX_ACTIONS: usize = 25;

/// `msg` with its actions as the lines the host writes for channels without
/// buttons (`reply "<id>" to <label>`), for Events API mode without
/// `interactivity` (presses go to the Interactivity Request URL, which then
/// is not kata's).
pub fn actions_as_text(msg: &mut OutboundMessage) {
    let lines: Vec<String> = std::mem::take(&mut msg.actions)
        .iter()
        .map(|a| if label(a) == a.id { format!("reply \"{}\"", a.id) } else { format!("reply \"{}\" to {}", a.id, label(a)) })
        .collect();
    if lines.is_empty() {
        return;
    }
    if !msg.text.trim().is_empty() {
        msg.text.push_str("\n\n");
    }
    msg.text.push_str(&lines.join("\n"));
}

/// A button's label: the action's label, else its id.
fn label(a: &Action) -> &str {
    if a.label.trim().is_empty() { a.id.as_str() } else { a.label.as_str() }
}

/// The Block Kit `blocks` for `text` with `actions` as buttons, and the lines
/// to append to the text for actions that cannot be buttons; `None` when no
/// action is a button.
///
/// Each button's `value` is the action id, so a press delivers exactly the
/// id (see [`press_messages`]); its `action_id` is `kata-<n>` (unique in the
/// block, as Slack requires). An id Slack refuses as a value (empty, longer
/// than [`MAX_BUTTON_VALUE`], or past the 25th button) becomes the line the
/// host writes for channels without buttons — `reply "<id>" to <label>`.
/// Labels are cut to Slack's 75 characters; the text goes in `section`
/// blocks of at most 3000 characters.
pub fn blocks(text: &str, actions: &[Action]) -> (Option<Value>, String) {
    let mut buttons = Vec::new();
    let mut hints = String::new();
    for a in actions {
        let label = label(a);
        if a.id.is_empty() || a.id.chars().count() > MAX_BUTTON_VALUE || buttons.len() == MAX_ACTIONS {
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
        let shown: String = if label.chars().count() > MAX_BUTTON_TEXT {
            label.chars().take(MAX_BUTTON_TEXT - 1).chain(std::iter::once('…')).collect()
        } else {
            label.to_string()
        };
        buttons.push(json!({
            "type": "button",
            "text": { "type": "plain_text", "text": shown },
            "action_id": format!("kata-{}", buttons.len()),
            "value": a.id,
        }));
    }
    if buttons.is_empty() {
        return (None, hints);
    }
    let mut full = text.to_string();
    if !hints.is_empty() {
        if !full.trim().is_empty() {
            full.push_str("\n\n");
        }
        full.push_str(&hints);
    }
    let mut out = Vec::new();
    let chars: Vec<char> = escape(&full).chars().collect();
    for chunk in chars.chunks(MAX_SECTION_TEXT) {
        let chunk: String = chunk.iter().collect();
        if !chunk.trim().is_empty() {
            out.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": chunk } }));
        }
    }
    out.push(json!({ "type": "actions", "elements": buttons }));
    (Some(Value::Array(out)), hints)
}

/// The receipt of a `chat.postMessage` response: `<channel>:<ts>`, the id
/// the posted message has as a kata message.
pub fn parse_post(status: u16, retry_after: Option<&str>, body: &[u8], channel: &str) -> Result<SendReceipt, ChannelError> {
    let v = api_result(status, retry_after, body, "chat.postMessage", "bot_token")?;
    let ts = str_field(&v, "ts").ok_or_else(|| ChannelError::Fatal("Slack chat.postMessage returned no ts".into()))?;
    let channel = str_field(&v, "channel").unwrap_or_else(|| channel.to_string());
    Ok(SendReceipt::sent(format!("{channel}:{ts}")))
}

/// Handle one Events API request (a webhook frame from the host: a JSON
/// object with `method`, `path`, `query`, `headers` and `body`).
///
/// - `url_verification`: answered with its `challenge` (as text/plain, which
///   Slack accepts);
/// - `event_callback`: its message, answered with an empty 200;
/// - an interactivity request (form-encoded `payload=…`, when the app's
///   Interactivity Request URL is this one too): a `block_actions` payload
///   becomes one message per pressed button ([`press_messages`]), answered
///   with an empty 200 (Slack shows the person an error unless it comes
///   within 3 s); other interactive payloads are only answered;
/// - anything else (another method, `app_rate_limited`): answered with an
///   empty 200 and otherwise ignored.
///
/// Signatures (`X-Slack-Signature`) are not checked here: that is the host's
/// job (its webhook signature verification), so the signing secret never
/// enters the plugin.
pub fn webhook_frame(text: &str, bot: &Bot, now_ms: u64) -> FrameResult {
    let ok = || FrameResult { messages: Vec::new(), replies: vec![Frame::text("")] };
    let Ok(request) = serde_json::from_str::<Value>(text) else { return ok() };
    if request.get("method").and_then(Value::as_str) != Some("POST") {
        return ok();
    }
    let Some(raw) = request.get("body").and_then(Value::as_str) else { return ok() };
    // Events come as JSON; interactivity requests (a button press) as a
    // form with one field, `payload`, holding the JSON.
    let body = match serde_json::from_str::<Value>(raw) {
        Ok(body) => body,
        Err(_) => match form_payload(raw) {
            Some(payload) => return FrameResult { messages: press_messages(&payload, now_ms), replies: vec![Frame::text("")] },
            None => return ok(),
        },
    };
    match body.get("type").and_then(Value::as_str) {
        Some("url_verification") => {
            FrameResult { messages: Vec::new(), replies: vec![Frame::text(str_field(&body, "challenge").unwrap_or_default())] }
        }
        Some("event_callback") => {
            FrameResult { messages: callback_message(&body, bot, now_ms).into_iter().collect(), replies: vec![Frame::text("")] }
        }
        _ => ok(),
    }
}

/// The JSON in the `payload` field of a form-encoded interactivity request
/// (<https://api.slack.com/interactivity/handling#payloads>).
fn form_payload(body: &str) -> Option<Value> {
    let (_, payload) = form_urlencoded::parse(body.as_bytes()).find(|(k, _)| k == "payload")?;
    serde_json::from_str(&payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn bot() -> Bot {
        Bot { user_id: "U0BOT".into(), bot_id: Some("B0BOT".into()) }
    }

    /// The events_api envelope from python-slack-sdk's Socket Mode test server.
    const ENVELOPE: &str = r#"{"envelope_id":"ac2cfd40-6f8c-4d5e-a1ad-646e532baa19","payload":{"token":"verification-token","team_id":"T111","api_app_id":"A111","event":{"client_msg_id":"f0582a78-72db-4feb-b2f3-1e47d66365c8","type":"message","text":"<@U0BOT> Hi here!","user":"U222","ts":"1610241741.000200","team":"T111","channel":"C111","event_ts":"1610241741.000200","channel_type":"channel"},"type":"event_callback","event_id":"Ev111","event_time":1610241741,"authorizations":[{"enterprise_id":null,"team_id":"T111","user_id":"U333","is_bot":true,"is_enterprise_install":false}],"is_ext_shared_channel":false,"event_context":"1-message-T111-C111"},"type":"events_api","accepts_response_payload":false,"retry_attempt":0,"retry_reason":""}"#;

    #[test]
    fn events_api_envelopes_are_acked_and_become_messages() {
        let r = socket_frame(ENVELOPE, &bot(), NOW).unwrap();
        assert_eq!(r.replies, vec![Frame::text(r#"{"envelope_id":"ac2cfd40-6f8c-4d5e-a1ad-646e532baa19"}"#)]);
        let m = &r.messages[0];
        assert_eq!(m.id, "C111:1610241741.000200");
        assert_eq!((m.conversation.as_str(), m.sender.as_str(), m.text.as_str()), ("C111", "U222", "Hi here!"));
        assert_eq!((m.conversation_kind, m.mentioned, m.thread.as_deref()), (ConversationKind::Group, true, None));
        assert_eq!(m.timestamp_ms, 1_610_241_741_000);
        assert!(m.raw.as_deref().unwrap().contains("client_msg_id"));
    }

    #[test]
    fn hello_disconnect_and_other_envelopes() {
        let hello = r#"{"type":"hello","num_connections":2,"debug_info":{"host":"applink-111-xxx","build_number":10,"approximate_connection_time":18060},"connection_info":{"app_id":"A111"}}"#;
        assert_eq!(socket_frame(hello, &bot(), NOW).unwrap(), FrameResult::default());
        let refresh = r#"{"type":"disconnect","reason":"refresh_requested","debug_info":{"host":"applink-111-xxx"}}"#;
        assert!(matches!(socket_frame(refresh, &bot(), NOW), Err(ChannelError::Network(m)) if m.contains("refresh_requested")));
        let disabled = r#"{"type":"disconnect","reason":"link_disabled","debug_info":{"host":"x"}}"#;
        assert!(matches!(socket_frame(disabled, &bot(), NOW), Err(ChannelError::InvalidConfig(_))));
        // A slash command is acknowledged (or Slack retries it) and ignored.
        let slash = r#"{"envelope_id":"1d3c","payload":{"command":"/hello"},"type":"slash_commands","accepts_response_payload":true}"#;
        let r = socket_frame(slash, &bot(), NOW).unwrap();
        assert!(r.messages.is_empty());
        assert_eq!(r.replies, vec![Frame::text(r#"{"envelope_id":"1d3c"}"#)]);
        assert_eq!(socket_frame("not json", &bot(), NOW).unwrap(), FrameResult::default());
    }

    fn event(extra: &str) -> Value {
        serde_json::from_str(&format!(r#"{{"type":"message","channel":"C1","user":"U9","text":"hello","ts":"1700000000.123456"{extra}}}"#))
            .unwrap()
    }

    #[test]
    fn direct_group_thread_and_mentions() {
        let dm = event_message(&event(r#","channel_type":"im","channel":"D1""#), &bot(), NOW).unwrap();
        assert_eq!((dm.conversation.as_str(), dm.conversation_kind, dm.mentioned), ("D1", ConversationKind::Direct, true));
        assert_eq!(dm.timestamp_ms, 1_700_000_000_123);
        let plain = event_message(&event(r#","channel_type":"channel""#), &bot(), NOW).unwrap();
        assert_eq!((plain.conversation_kind, plain.mentioned), (ConversationKind::Group, false));
        let mpim = event_message(&event(r#","channel_type":"mpim""#), &bot(), NOW).unwrap();
        assert_eq!(mpim.conversation_kind, ConversationKind::Group);
        let named = event_message(&event(r#","text":"hey <@U0BOT|kata>, look""#), &bot(), NOW).unwrap();
        assert!(named.mentioned);
        assert_eq!(named.text, "hey @kata, look");
        let other = event_message(&event(r#","text":"<@U0THER> hi""#), &bot(), NOW).unwrap();
        assert!(!other.mentioned);
        let thread = event_message(&event(r#","thread_ts":"1699999999.000100""#), &bot(), NOW).unwrap();
        assert_eq!(thread.thread.as_deref(), Some("1699999999.000100"));
        let mention: Value = serde_json::from_str(r#"{"type":"app_mention","user":"U9","text":"<@U0BOT> is it everything?","ts":"1515449522.000016","channel":"C0LAN2Q65","event_ts":"1515449522000016"}"#).unwrap();
        let m = event_message(&mention, &bot(), NOW).unwrap();
        assert_eq!((m.id.as_str(), m.mentioned, m.text.as_str()), ("C0LAN2Q65:1515449522.000016", true, "is it everything?"));
    }

    #[test]
    fn own_posts_edits_and_joins_are_skipped() {
        assert!(event_message(&event(r#","bot_id":"B0BOT""#), &bot(), NOW).is_none());
        let own: Value = serde_json::from_str(r#"{"type":"message","channel":"C1","user":"U0BOT","text":"echo","ts":"1.2"}"#).unwrap();
        assert!(event_message(&own, &bot(), NOW).is_none());
        for subtype in ["message_changed", "message_deleted", "channel_join", "bot_message"] {
            assert!(event_message(&event(&format!(r#","subtype":"{subtype}""#)), &bot(), NOW).is_none(), "{subtype}");
        }
        // Another bot may talk to the agent.
        let other_bot = event_message(&event(r#","bot_id":"B0THER""#), &bot(), NOW).unwrap();
        assert_eq!(other_bot.sender, "U9");
        // An edit, as the Events API delivers it (the new text under `message`).
        let changed: Value = serde_json::from_str(
            r#"{"type":"event_callback","team_id":"T1","api_app_id":"A1","event_id":"Ev2","event_time":1701743154,
                "event":{"type":"message","subtype":"message_changed","hidden":true,"channel":"C1","channel_type":"group",
                "ts":"1701743154.000500","event_ts":"1701743154.000500",
                "message":{"type":"message","user":"U9","text":"edited","ts":"1701735043.989889","edited":{"user":"U9","ts":"1701743154.000000"}},
                "previous_message":{"type":"message","user":"U9","text":"hey!","ts":"1701735043.989889"}}}"#,
        )
        .unwrap();
        assert!(callback_message(&changed, &bot(), NOW).is_none());
    }

    #[test]
    fn files_are_attachments() {
        let m = event_message(
            &event(
                r#","subtype":"file_share","files":[{"id":"F1","name":"report.pdf","title":"Report","mimetype":"application/pdf","filetype":"pdf","size":52341,"url_private":"https://files.slack.com/files-pri/T1-F1/report.pdf"},{"id":"F2","mimetype":"image/png"}]"#,
            ),
            &bot(),
            NOW,
        )
        .unwrap();
        assert_eq!(
            m.attachments,
            vec![Attachment {
                name: "report.pdf".into(),
                mime_type: "application/pdf".into(),
                url: Some("https://files.slack.com/files-pri/T1-F1/report.pdf".into()),
                size: Some(52341),
            }]
        );
    }

    #[test]
    fn markup_becomes_plain_text_and_replies_are_escaped() {
        assert_eq!(to_plain("a &lt;b&gt; &amp; c"), "a <b> & c");
        assert_eq!(to_plain("<#C1|general> <!here> <@U2> <!subteam^S1|@devs>"), "#general @here @U2 @devs");
        assert_eq!(
            to_plain("see <https://x.org/a?b=1&amp;c=2|the doc> or <https://y.org>"),
            "see the doc (https://x.org/a?b=1&c=2) or https://y.org"
        );
        assert_eq!(to_plain("<mailto:a@b.org|a@b.org> and <https://z.org|z.org>"), "a@b.org and z.org");
        assert_eq!(to_plain("broken <tag"), "broken <tag");
        assert_eq!(escape("a < b & c > d"), "a &lt; b &amp; c &gt; d");
        assert_eq!(strip_leading_mention("  <@U0BOT>: hi", "U0BOT"), "hi");
        assert_eq!(strip_leading_mention("<@U0BOT|kata> hi", "U0BOT"), "hi");
        assert_eq!(strip_leading_mention("hi <@U0BOT>", "U0BOT"), "hi <@U0BOT>");
    }

    fn outbound(conversation: &str, thread: Option<&str>, reply_to: Option<&str>) -> OutboundMessage {
        OutboundMessage {
            conversation: conversation.into(),
            thread: thread.map(Into::into),
            reply_to: reply_to.map(Into::into),
            text: "1 < 2".into(),
            idempotency_key: "inbox-1".into(),
            attachments: vec![],
            actions: vec![],
        }
    }

    #[test]
    fn post_bodies_keep_threads_and_open_them_in_channels() {
        let b = post_message_body(&outbound("C1", Some("1699.1"), Some("C1:1700.2")), true);
        assert_eq!(b, json!({"channel": "C1", "text": "1 &lt; 2", "thread_ts": "1699.1"}));
        let b = post_message_body(&outbound("C1", None, Some("C1:1700.000200")), true);
        assert_eq!(b["thread_ts"], "1700.000200");
        assert!(post_message_body(&outbound("C1", None, Some("C1:1700.2")), false).get("thread_ts").is_none());
        assert!(post_message_body(&outbound("D1", None, Some("D1:1700.2")), true).get("thread_ts").is_none());
        assert!(post_message_body(&outbound("C1", None, Some("garbage")), true).get("thread_ts").is_none());
    }

    fn action(id: &str, label: &str) -> Action {
        Action { id: id.into(), label: label.into() }
    }

    #[test]
    fn actions_become_block_kit_buttons() {
        let mut msg = outbound("D1", None, None);
        msg.actions = vec![action("yes 7", "Approve"), action("no 7", "Deny")];
        let b = post_message_body(&msg, true);
        assert_eq!(b["text"], "1 &lt; 2");
        assert_eq!(
            b["blocks"],
            json!([
                {"type": "section", "text": {"type": "mrkdwn", "text": "1 &lt; 2"}},
                {"type": "actions", "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Approve"}, "action_id": "kata-0", "value": "yes 7"},
                    {"type": "button", "text": {"type": "plain_text", "text": "Deny"}, "action_id": "kata-1", "value": "no 7"},
                ]},
            ])
        );
        // No actions: no blocks. Buttons alone: their labels as the text.
        assert!(post_message_body(&outbound("D1", None, None), true).get("blocks").is_none());
        msg.text = String::new();
        msg.actions = vec![action("yes 7", "Approve"), action(&"x".repeat(2001), "Long")];
        let b = post_message_body(&msg, true);
        let hint = format!("reply \"{}\" to Long", "x".repeat(2001));
        assert_eq!(b["text"], hint.as_str());
        assert_eq!(b["blocks"][0]["text"]["text"], hint.as_str());
        assert_eq!(b["blocks"][1]["elements"].as_array().unwrap().len(), 1);
        msg.actions = vec![action("yes 7", "")];
        assert_eq!(post_message_body(&msg, true)["text"], "yes 7");
        // Events API mode: no presses arrive, so the actions are text.
        msg.text = "Approve?".into();
        msg.actions = vec![action("yes 7", "Approve"), action("no 7", "")];
        actions_as_text(&mut msg);
        assert_eq!((msg.text.as_str(), msg.actions.len()), ("Approve?\n\nreply \"yes 7\" to Approve\nreply \"no 7\"", 0));
    }

    /// A `block_actions` payload as Slack's docs show it (trimmed).
    const PRESS: &str = r#"{"envelope_id":"e1b2","payload":{"type":"block_actions","user":{"id":"U0ANN","username":"ann","name":"ann","team_id":"T1"},"api_app_id":"A1","token":"t","container":{"type":"message","message_ts":"1548261231.000200","channel_id":"C0GROUP","is_ephemeral":false},"trigger_id":"12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3","team":{"id":"T1","domain":"kata"},"channel":{"id":"C0GROUP","name":"general"},"message":{"type":"message","text":"Approval 7","user":"U0BOT","ts":"1548261231.000200","thread_ts":"1548261000.000100"},"response_url":"https://hooks.slack.com/actions/T1/1/x","actions":[{"action_id":"kata-0","block_id":"b1","text":{"type":"plain_text","text":"Approve","emoji":true},"value":"yes 7","type":"button","action_ts":"1548426417.840180"}]},"type":"interactive","accepts_response_payload":false}"#;

    #[test]
    fn a_press_is_acked_and_becomes_a_message_with_the_value() {
        let r = socket_frame(PRESS, &bot(), NOW).unwrap();
        assert_eq!(r.replies, vec![Frame::text(r#"{"envelope_id":"e1b2"}"#)]);
        assert_eq!(r.messages.len(), 1);
        let m = &r.messages[0];
        assert_eq!(m.id, "act:C0GROUP:1548426417.840180");
        assert_eq!((m.conversation.as_str(), m.sender.as_str(), m.text.as_str()), ("C0GROUP", "U0ANN", "yes 7"));
        assert_eq!((m.conversation_kind, m.mentioned, m.thread.as_deref()), (ConversationKind::Group, true, Some("1548261000.000100")));
        assert_eq!(m.timestamp_ms, 1_548_426_417_840);
        // The reply to a press is not threaded under it.
        assert_eq!(reply_ts(&m.id), None);
        // Other interactive payloads are acknowledged and ignored.
        let shortcut = r#"{"envelope_id":"e2","payload":{"type":"shortcut","user":{"id":"U1"}},"type":"interactive"}"#;
        let r = socket_frame(shortcut, &bot(), NOW).unwrap();
        assert!(r.messages.is_empty());
        assert_eq!(r.replies, vec![Frame::text(r#"{"envelope_id":"e2"}"#)]);
    }

    #[test]
    fn errors_map_to_channel_errors() {
        let bad = br#"{"ok":false,"error":"invalid_auth"}"#;
        assert!(matches!(parse_auth_test(200, None, bad), Err(ChannelError::AuthFailed(m)) if m.contains("bot_token")));
        assert!(matches!(parse_connections_open(200, None, bad), Err(ChannelError::AuthFailed(m)) if m.contains("app_token")));
        for e in ["not_authed", "token_revoked", "account_inactive", "not_allowed_token_type"] {
            let body = format!(r#"{{"ok":false,"error":"{e}"}}"#);
            assert!(matches!(parse_post(200, None, body.as_bytes(), "C1"), Err(ChannelError::AuthFailed(_))), "{e}");
        }
        assert_eq!(parse_post(429, Some("7"), br#"{"ok":false,"error":"ratelimited"}"#, "C1"), Err(ChannelError::RateLimited(7000)));
        assert_eq!(parse_post(429, None, b"", "C1"), Err(ChannelError::RateLimited(1000)));
        assert!(matches!(parse_post(503, None, b"<html>", "C1"), Err(ChannelError::Network(_))));
        assert!(matches!(parse_post(200, None, br#"{"ok":false,"error":"internal_error"}"#, "C1"), Err(ChannelError::Network(_))));
        assert!(
            matches!(parse_post(200, None, br#"{"ok":false,"error":"channel_not_found"}"#, "C1"), Err(ChannelError::Fatal(m)) if m.contains("channel_not_found"))
        );
        let scope = br#"{"ok":false,"error":"missing_scope","needed":"chat:write","provided":"app_mentions:read"}"#;
        assert!(matches!(parse_post(200, None, scope, "C1"), Err(ChannelError::AuthFailed(m)) if m.contains("chat:write")));
    }

    #[test]
    fn successful_calls_parse() {
        let me = br#"{"ok":true,"url":"https://subarachnoid.slack.com/","team":"Subarachnoid Workspace","user":"grace","team_id":"T12345678","user_id":"W12345678","bot_id":"B0123"}"#;
        assert_eq!(parse_auth_test(200, None, me).unwrap(), Bot { user_id: "W12345678".into(), bot_id: Some("B0123".into()) });
        let open = br#"{"ok":true,"url":"wss://wss-somethiing.slack.com/link/?ticket=12348&app_id=5678"}"#;
        assert_eq!(parse_connections_open(200, None, open).unwrap(), "wss://wss-somethiing.slack.com/link/?ticket=12348&app_id=5678");
        assert!(parse_connections_open(200, None, br#"{"ok":true,"url":"https://x"}"#).is_err());
        let post = br#"{"ok":true,"channel":"C1H9RESGL","ts":"1503435956.000247","message":{"text":"Here's a message for you","bot_id":"B19LU7CSY","type":"message","ts":"1503435956.000247"}}"#;
        assert_eq!(parse_post(200, None, post, "C1").unwrap().id, "C1H9RESGL:1503435956.000247");
    }

    #[test]
    fn events_api_requests() {
        let frame = |body: &str| json!({"method": "POST", "path": "/slack/events", "query": "", "headers": {}, "body": body}).to_string();
        let challenge = frame(
            r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#,
        );
        let r = webhook_frame(&challenge, &bot(), NOW);
        assert_eq!(r.replies, vec![Frame::text("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")]);
        let payload: Value = serde_json::from_str(ENVELOPE).unwrap();
        let r = webhook_frame(&frame(&payload["payload"].to_string()), &bot(), NOW);
        assert_eq!(r.messages.len(), 1);
        assert_eq!(r.replies, vec![Frame::text("")]);
        let r = webhook_frame(&frame("payload=%7B%7D"), &bot(), NOW);
        assert!(r.messages.is_empty());
        assert_eq!(r.replies, vec![Frame::text("")]);
        // A press, form-encoded as Slack POSTs it to the Interactivity Request URL.
        let press = json!({"type": "block_actions", "user": {"id": "U0ANN", "username": "ann"},
            "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "D0ANN"},
            "channel": {"id": "D0ANN"}, "message": {"ts": "1700000000.000100"},
            "actions": [{"type": "button", "action_id": "a0", "value": "yes 7", "action_ts": "1700000001.000200"}]});
        let form: String = form_urlencoded::Serializer::new(String::new()).append_pair("payload", &press.to_string()).finish();
        assert!(form.starts_with("payload=%7B%22"), "{form}");
        let r = webhook_frame(&frame(&form), &bot(), NOW);
        assert_eq!(r.replies, vec![Frame::text("")]);
        assert_eq!(r.messages.len(), 1, "{:?}", r.messages);
        let m = &r.messages[0];
        assert_eq!(
            (m.id.as_str(), m.conversation.as_str(), m.sender.as_str(), m.text.as_str()),
            ("act:D0ANN:1700000001.000200", "D0ANN", "U0ANN", "yes 7")
        );
        assert!(m.mentioned && m.conversation_kind == ConversationKind::Direct);
        // Not a form with a payload, not JSON: answered, nothing taken.
        assert!(webhook_frame(&frame("payload=%7Bnot json"), &bot(), NOW).messages.is_empty());
        assert!(webhook_frame(&frame("token=x&command=%2Fkata"), &bot(), NOW).messages.is_empty());
        let get = json!({"method": "GET", "path": "/slack/events", "query": "", "headers": {}, "body": ""}).to_string();
        assert!(webhook_frame(&get, &bot(), NOW).messages.is_empty());
    }

    #[test]
    fn ts_and_bases() {
        assert_eq!(ts_to_ms("1355517523.000005"), Some(1_355_517_523_000));
        assert_eq!(ts_to_ms("1355517523.9"), Some(1_355_517_523_900));
        assert_eq!(ts_to_ms("x"), None);
        assert_eq!(reply_ts("C1:1700.000200"), Some("1700.000200"));
        assert_eq!(normalize_base("https://slack.com/api/", "api_base").unwrap(), "https://slack.com/api");
        assert!(normalize_base("wss://x", "api_base").is_err());
        assert_eq!(bearer("bot_token"), "Bearer {{secret:bot_token}}");
    }
}
