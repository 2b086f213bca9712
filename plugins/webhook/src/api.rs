//! Pure webhook logic: the host's request frame to a message (with
//! configurable field paths), the reply's JSON, and error mapping. Nothing
//! here touches the host, so it is unit-tested natively.

use kata_sdk::{Attachment, ChannelError, ConversationKind, Message, OutboundMessage};
use serde_json::{Value, json};

/// Where each part of a message is found in the request's JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The text (required in a request).
    pub text: String,
    /// The sender's id (required).
    pub sender: String,
    /// The sender's display name.
    pub sender_name: String,
    /// The conversation id (default: the sender).
    pub conversation: String,
    /// The thread id.
    pub thread: String,
    /// The message id.
    pub id: String,
    /// A boolean: a group conversation.
    pub group: String,
    /// A boolean: the message addresses the agent.
    pub mentioned: String,
    /// A list of attachments (`{name, url, mime_type, size}`).
    pub attachments: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            text: "text".into(),
            sender: "sender".into(),
            sender_name: "sender_name".into(),
            conversation: "conversation".into(),
            thread: "thread".into(),
            id: "id".into(),
            group: "group".into(),
            mentioned: "mentioned".into(),
            attachments: "attachments".into(),
        }
    }
}

/// Headers senders put a delivery id in (a retried delivery keeps it).
const DELIVERY_HEADERS: [&str; 5] = ["x-request-id", "x-delivery-id", "x-github-delivery", "idempotency-key", "x-webhook-id"];

/// Look a value up by a field path: `a.b.0.c` (dots; a number indexes a
/// list) or a JSON pointer `/a/b/0/c`. An empty path finds nothing.
pub fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    let path = path.trim();
    if path.is_empty() {
        return None;
    }
    if path.starts_with('/') {
        return v.pointer(path);
    }
    path.split('.').try_fold(v, |v, key| match v {
        Value::Array(a) => a.get(key.parse::<usize>().ok()?),
        _ => v.get(key),
    })
}

/// A field as text: strings as they are, numbers and booleans written out.
fn text_at(v: &Value, path: &str) -> Option<String> {
    match lookup(v, path)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn bool_at(v: &Value, path: &str) -> bool {
    match lookup(v, path) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "true" | "yes" | "1"),
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        _ => false,
    }
}

/// What one request comes to: a message for the inbox (none for requests
/// that carry none), and the response body the host sends back.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// The message, if the request carried one.
    pub message: Option<Message>,
    /// The JSON response body (status 200).
    pub response: Value,
}

/// Turn the host's frame for one request (`{"method", "path", "query",
/// "headers", "body"}`) into a message. Anything but a POST with a JSON
/// object body holding a text and a sender is answered `{"ok": false,
/// "error": ...}` and stored as nothing: a bad request must not stop the
/// listener (an error from `on_frame` would close it).
pub fn handle(frame: &str, fields: &Fields, now_ms: u64) -> Handled {
    let refuse = |why: String| Handled { message: None, response: json!({"ok": false, "error": why}) };
    let Ok(req) = serde_json::from_str::<Value>(frame) else {
        return refuse("the host handed the plugin a frame that is not a request".into());
    };
    let method = req.get("method").and_then(Value::as_str).unwrap_or_default();
    if method != "POST" {
        return refuse(format!("use POST with a JSON body, not {method}"));
    }
    let body = req.get("body").and_then(Value::as_str).unwrap_or_default();
    let v: Value = match serde_json::from_str(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return refuse("the body must be a JSON object".into()),
        Err(e) => return refuse(format!("the body is not JSON: {e}")),
    };
    let Some(text) = lookup(&v, &fields.text).and_then(Value::as_str).map(String::from) else {
        return refuse(format!("no text at {:?} (config text_field)", fields.text));
    };
    let Some(sender) = text_at(&v, &fields.sender) else {
        return refuse(format!("no sender at {:?} (config sender_field)", fields.sender));
    };
    let header = |name: &str| req.get("headers").and_then(|h| h.get(name)).and_then(Value::as_str).filter(|s| !s.is_empty());
    let id = text_at(&v, &fields.id)
        .or_else(|| DELIVERY_HEADERS.iter().find_map(|h| header(h)).map(String::from))
        // No id anywhere: every request is a new message.
        .unwrap_or_else(|| format!("{now_ms:x}-{:016x}", fnv1a(body.as_bytes())));
    let conversation = text_at(&v, &fields.conversation).unwrap_or_else(|| sender.clone());
    let group = bool_at(&v, &fields.group);
    let attachments = lookup(&v, &fields.attachments)
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|a| {
                    let url = a.get("url").and_then(Value::as_str).map(String::from);
                    let name = a.get("name").and_then(Value::as_str).map(String::from);
                    (url.is_some() || name.is_some()).then(|| Attachment {
                        name: name.unwrap_or_default(),
                        mime_type: a
                            .get("mime_type")
                            .or_else(|| a.get("content_type"))
                            .and_then(Value::as_str)
                            .unwrap_or("application/octet-stream")
                            .into(),
                        url,
                        size: a.get("size").and_then(Value::as_u64),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let message = Message {
        id: format!("{conversation}:{id}"),
        conversation,
        thread: text_at(&v, &fields.thread),
        sender,
        sender_name: text_at(&v, &fields.sender_name),
        text,
        attachments,
        timestamp_ms: now_ms,
        raw: Some(body.to_string()),
        conversation_kind: if group { ConversationKind::Group } else { ConversationKind::Direct },
        // A direct message always addresses the agent.
        mentioned: !group || bool_at(&v, &fields.mentioned),
    };
    let response = json!({"ok": true, "id": message.id});
    Handled { message: Some(message), response }
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The JSON body POSTed to `reply_url` for a reply. `reply_to` is the id of
/// the message answered (as the request gave it, without the conversation
/// prefix kata adds).
pub fn reply_body(msg: &OutboundMessage) -> Value {
    let reply_to = msg.reply_to.as_deref().map(|r| r.strip_prefix(&format!("{}:", msg.conversation)).unwrap_or(r));
    json!({
        "conversation": msg.conversation,
        "thread": msg.thread,
        "reply_to": reply_to,
        "text": msg.text,
        "idempotency_key": msg.idempotency_key,
    })
}

/// The receipt id from the reply endpoint's answer: its `id` when it gives
/// one, else the idempotency key.
pub fn receipt_id(body: &[u8], idempotency_key: &str) -> String {
    serde_json::from_slice::<Value>(body).ok().and_then(|v| text_at(&v, "id")).unwrap_or_else(|| idempotency_key.to_string())
}

/// Map a failed reply POST: 401/403 → `auth-failed`, 429 → `rate-limited`
/// (`Retry-After` seconds, default 1 s), 408/5xx → `network`, else `fatal`.
pub fn map_error(status: u16, body: &[u8], retry_after: Option<&str>) -> ChannelError {
    let text = String::from_utf8_lossy(body);
    let excerpt: String = text.trim().chars().take(200).collect();
    match status {
        401 | 403 => ChannelError::AuthFailed(format!(
            "reply_url refused the request (HTTP {status}: {excerpt}); check secret `reply_token` and config `reply_auth`"
        )),
        429 => ChannelError::RateLimited(retry_after.and_then(|s| s.trim().parse::<u64>().ok()).map_or(1000, |s| s.saturating_mul(1000))),
        408 | 500..=599 => ChannelError::Network(format!("reply_url answered HTTP {status}: {excerpt}")),
        _ => ChannelError::Fatal(format!("reply_url answered HTTP {status}: {excerpt}")),
    }
}

/// Check a URL from the configuration: `http(s)://host...`.
pub fn check_url(key: &str, raw: &str) -> Result<String, ChannelError> {
    let url = raw.trim();
    let lower = url.to_ascii_lowercase();
    let ok = lower.strip_prefix("http://").or_else(|| lower.strip_prefix("https://")).is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
    if ok && !url.contains(' ') {
        Ok(url.to_string())
    } else {
        Err(ChannelError::InvalidConfig(format!(
            "config key `{key}` must be an http(s) URL such as \"http://127.0.0.1:8787/hook\", got {raw:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(method: &str, body: &str, headers: Value) -> String {
        json!({"method": method, "path": "/hook", "query": "", "headers": headers, "body": body}).to_string()
    }

    #[test]
    fn a_post_with_defaults_is_a_direct_message() {
        let h = handle(&frame("POST", r#"{"text":"hi","sender":"ann","id":"m1"}"#, json!({})), &Fields::default(), 5);
        let m = h.message.unwrap();
        assert_eq!((m.id.as_str(), m.conversation.as_str(), m.sender.as_str(), m.text.as_str()), ("ann:m1", "ann", "ann", "hi"));
        assert_eq!((m.conversation_kind, m.mentioned, m.timestamp_ms), (ConversationKind::Direct, true, 5));
        assert_eq!(h.response, json!({"ok": true, "id": "ann:m1"}));
    }

    #[test]
    fn configured_paths_groups_threads_and_attachments() {
        let fields = Fields {
            text: "message.body".into(),
            sender: "/message/from/id".into(),
            sender_name: "message.from.name".into(),
            conversation: "room".into(),
            thread: "message.thread".into(),
            id: "message.id".into(),
            ..Fields::default()
        };
        let body = r#"{"room":"ops","group":true,"mentioned":false,"message":{"id":7,"body":"deploy?","thread":"t1",
            "from":{"id":42,"name":"Ann"}},"attachments":[{"name":"log.txt","url":"https://x/log.txt","mime_type":"text/plain","size":12},{"bogus":1}]}"#;
        let m = handle(&frame("POST", body, json!({})), &fields, 1).message.unwrap();
        assert_eq!((m.id.as_str(), m.conversation.as_str(), m.sender.as_str()), ("ops:7", "ops", "42"));
        assert_eq!((m.sender_name.as_deref(), m.thread.as_deref(), m.text.as_str()), (Some("Ann"), Some("t1"), "deploy?"));
        assert_eq!((m.conversation_kind, m.mentioned), (ConversationKind::Group, false));
        assert_eq!(
            m.attachments,
            [Attachment { name: "log.txt".into(), mime_type: "text/plain".into(), url: Some("https://x/log.txt".into()), size: Some(12) }]
        );
        assert_eq!(lookup(&json!({"a":[{"b":1}]}), "a.0.b"), Some(&json!(1)));
    }

    #[test]
    fn ids_come_from_the_body_then_a_delivery_header_then_are_fresh() {
        let f = Fields::default();
        let m = handle(&frame("POST", r#"{"text":"x","sender":"s"}"#, json!({"x-github-delivery": "d-1"})), &f, 1).message.unwrap();
        assert_eq!(m.id, "s:d-1");
        let a = handle(&frame("POST", r#"{"text":"x","sender":"s"}"#, json!({})), &f, 1).message.unwrap();
        let b = handle(&frame("POST", r#"{"text":"x","sender":"s"}"#, json!({})), &f, 2).message.unwrap();
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn bad_requests_are_answered_not_stored() {
        let f = Fields::default();
        for (method, body, why) in [
            ("GET", "", "use POST"),
            ("POST", "text=hi", "not JSON"),
            ("POST", "[1]", "JSON object"),
            ("POST", r#"{"sender":"s"}"#, "no text"),
            ("POST", r#"{"text":"x"}"#, "no sender"),
        ] {
            let h = handle(&frame(method, body, json!({})), &f, 1);
            assert!(h.message.is_none());
            assert_eq!(h.response["ok"], false);
            assert!(h.response["error"].as_str().unwrap().contains(why), "{why}: {}", h.response);
        }
        assert!(handle("garbage", &f, 1).message.is_none());
    }

    #[test]
    fn replies_and_receipts() {
        let out = OutboundMessage {
            conversation: "ops".into(),
            thread: Some("t1".into()),
            reply_to: Some("ops:7".into()),
            text: "on it".into(),
            idempotency_key: "k9".into(),
            attachments: vec![],
            actions: vec![],
        };
        assert_eq!(
            reply_body(&out),
            json!({"conversation": "ops", "thread": "t1", "reply_to": "7", "text": "on it", "idempotency_key": "k9"})
        );
        assert_eq!(receipt_id(br#"{"id": 31}"#, "k9"), "31");
        assert_eq!(receipt_id(b"ok", "k9"), "k9");
    }

    #[test]
    fn errors_and_urls() {
        assert!(matches!(map_error(401, b"no", None), ChannelError::AuthFailed(m) if m.contains("reply_token")));
        assert_eq!(map_error(429, b"", Some("2")), ChannelError::RateLimited(2000));
        assert_eq!(map_error(429, b"", None), ChannelError::RateLimited(1000));
        assert!(matches!(map_error(503, b"", None), ChannelError::Network(_)));
        assert!(matches!(map_error(400, b"bad", None), ChannelError::Fatal(m) if m.contains("400")));
        assert_eq!(check_url("listen", " http://127.0.0.1:8787/hook ").unwrap(), "http://127.0.0.1:8787/hook");
        assert!(check_url("listen", "127.0.0.1:8787").is_err());
        assert!(check_url("reply_url", "http:///x").is_err());
    }
}
