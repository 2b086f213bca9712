//! Test guest `guest-service`: a component of world `service-plugin`, built
//! with wit-bindgen directly. Each `tick` does an HTTP GET (standard
//! wasi:http, so the host's network policy applies) to config `url` and emits
//! one message — id `tick-<n>` (n counts ticks in plugin state), conversation
//! `feed`, text `fetched: <body>` or `fetch failed: <error>` — then asks for
//! the next tick after config `every_ms` (default 500). With config
//! `trap = "tick"` every tick panics instead (a trap: the release profile
//! aborts on panic), and with `trap = "start"` `start` refuses with an error.

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/v0.1.2",
        world: "kata:plugin/service-plugin",
    });
}

use bindings::exports::kata::plugin::service::Guest;
use bindings::kata::plugin::types::{ConversationKind, Message};
use bindings::kata::plugin::{emitter, host};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

/// GET `url` (http only) and return the body as text.
fn fetch(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or("url must start with http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| "scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "authority")?;
    request.set_path_with_query(Some(if path.is_empty() { "/" } else { path })).map_err(|()| "path")?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(format!("{e:?}")),
        _ => return Err("no response".into()),
    };
    let body = response.consume().map_err(|()| "body")?;
    let stream = body.stream().map_err(|()| "stream")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(format!("{e:?}")),
        }
    }
    Ok(String::from_utf8_lossy(&bytes).trim().to_string())
}

/// The service.
struct FeedService;

impl Guest for FeedService {
    fn start() -> Result<(), String> {
        if host::config_get("trap").as_deref() == Some("start") {
            return Err("refusing to start: trap = \"start\" is set".into());
        }
        host::config_get("url").map(|_| ()).ok_or_else(|| "config `url` is not set".into())
    }

    fn tick() -> Result<u64, String> {
        if host::config_get("trap").as_deref() == Some("tick") {
            panic!("guest-service traps on every tick");
        }
        let url = host::config_get("url").ok_or("config `url` is not set")?;
        let n = host::state_get("ticks").and_then(|v| v.try_into().ok()).map_or(0, u64::from_le_bytes);
        let text = match fetch(&url) {
            Ok(body) => format!("fetched: {body}"),
            Err(e) => format!("fetch failed: {e}"),
        };
        emitter::emit(&Message {
            id: format!("tick-{n}"),
            conversation: "feed".into(),
            thread: None,
            sender: "guest-service".into(),
            sender_name: None,
            text,
            attachments: vec![],
            timestamp_ms: host::now_ms(),
            raw: None,
            conversation_kind: ConversationKind::Direct,
            mentioned: false,
        })?;
        host::state_set("ticks", &(n + 1).to_le_bytes())?;
        Ok(host::config_get("every_ms").and_then(|s| s.parse().ok()).unwrap_or(500))
    }

    fn stop() {
        host::log(bindings::kata::plugin::types::LogLevel::Info, "guest-service stopping");
    }
}

bindings::export!(FeedService with_types_in bindings);

/// The WIT version, in the custom section the kata SDK writes for channels.
#[cfg(target_family = "wasm")]
#[used]
#[unsafe(link_section = "kata:wit-version")]
static KATA_WIT_VERSION: [u8; 5] = *b"0.1.2";
