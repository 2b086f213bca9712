//! Test guest `guest-denied-body`: each `poll` makes the raw wasi:http call
//! sequences a guest with a request body can make, against config `denied`
//! (a URL the policy refuses) and then `allowed` (one it grants), and returns
//! one message whose text has one line per sequence:
//!
//! - `handle-first: write W; finish F; response R` — create the request,
//!   take its body, `handle` it, *then* write 64 KiB of body, finish it and
//!   wait for the response (what StarlingMonkey's `fetch` does);
//! - `body-first: write W; finish F; response R` — write a small body and
//!   finish it before `handle`;
//! - `allowed: write W; finish F; response R` — handle-first again, to the
//!   granted URL, showing the instance still works after the denials.
//!
//! `W` and `F` are `ok` or what failed; `R` is `denied: <sentence>` for
//! `HTTP-request-denied`, `ok <status>`, or `error: <sentence>`.

use kata_sdk::http::{describe_error_code, split_url};
use kata_sdk::prelude::*;
use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::{OutputStream, StreamError};

/// The probing channel.
pub struct DeniedBody {
    denied: String,
    allowed: String,
}

fn stream_error(e: &StreamError) -> String {
    match e {
        StreamError::Closed => "stream closed".into(),
        StreamError::LastOperationFailed(io) => format!("failed: {}", io.to_debug_string()),
    }
}

/// Write `data` in chunks the stream accepts.
fn write_all(stream: &OutputStream, data: &[u8]) -> Result<(), String> {
    for chunk in data.chunks(4096) {
        stream.blocking_write_and_flush(chunk).map_err(|e| stream_error(&e))?;
    }
    Ok(())
}

/// A POST to `url` announcing a body of `len` bytes.
fn request(url: &str, len: usize) -> Result<OutgoingRequest, String> {
    let parts = split_url(url).map_err(|e| e.to_string())?;
    let headers =
        Fields::from_list(&[("content-length".to_string(), len.to_string().into_bytes())]).map_err(|e| format!("headers: {e:?}"))?;
    let req = OutgoingRequest::new(headers);
    let scheme = match parts.scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    req.set_method(&Method::Post).map_err(|()| "method")?;
    req.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    req.set_authority(Some(parts.authority)).map_err(|()| "authority")?;
    req.set_path_with_query(Some(&parts.path_with_query)).map_err(|()| "path")?;
    Ok(req)
}

fn outcome(r: Result<wasi::http::types::IncomingResponse, ErrorCode>) -> String {
    match r {
        Ok(resp) => format!("ok {}", resp.status()),
        Err(ErrorCode::HttpRequestDenied) => format!("denied: {}", describe_error_code(&ErrorCode::HttpRequestDenied)),
        Err(code) => format!("error: {}", describe_error_code(&code)),
    }
}

fn wait(future: wasi::http::types::FutureIncomingResponse) -> String {
    future.subscribe().block();
    match future.get() {
        Some(Ok(r)) => outcome(r),
        Some(Err(())) => "error: response taken twice".into(),
        None => "error: not ready after waiting".into(),
    }
}

fn finish(body: OutgoingBody) -> String {
    match OutgoingBody::finish(body, None) {
        Ok(()) => "ok".into(),
        Err(code) => describe_error_code(&code),
    }
}

/// `handle`, then write a body bigger than wasi:http's buffer, finish, wait.
fn handle_first(url: &str) -> String {
    let data = vec![b'x'; 64 << 10];
    let req = match request(url, data.len()) {
        Ok(r) => r,
        Err(e) => return format!("cannot build: {e}"),
    };
    let body = req.body().expect("body");
    let future = match outgoing_handler::handle(req, None) {
        Ok(f) => f,
        Err(code) => return format!("handle refused at once: {}", describe_error_code(&code)),
    };
    let stream = body.write().expect("stream");
    let written = match write_all(&stream, &data) {
        Ok(()) => "ok".to_string(),
        Err(e) => e,
    };
    drop(stream);
    let finished = finish(body);
    format!("write {written}; finish {finished}; response {}", wait(future))
}

/// Write a small body and finish it, then `handle`.
fn body_first(url: &str) -> String {
    let data = b"{\"hello\":\"world\"}";
    let req = match request(url, data.len()) {
        Ok(r) => r,
        Err(e) => return format!("cannot build: {e}"),
    };
    let body = req.body().expect("body");
    let stream = body.write().expect("stream");
    let written = match write_all(&stream, data) {
        Ok(()) => "ok".to_string(),
        Err(e) => e,
    };
    drop(stream);
    let finished = finish(body);
    let response = match outgoing_handler::handle(req, None) {
        Ok(f) => wait(f),
        Err(code) => format!("handle refused at once: {}", describe_error_code(&code)),
    };
    format!("write {written}; finish {finished}; response {response}")
}

impl Channel for DeniedBody {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "denied-body".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Poll],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(DeniedBody { denied: config::require("denied")?, allowed: config::require("allowed")? })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let text = format!(
            "handle-first: {}\nbody-first: {}\nallowed: {}",
            handle_first(&self.denied),
            body_first(&self.denied),
            handle_first(&self.allowed)
        );
        Ok(PollResult {
            messages: vec![Message::text(format!("probe-{}", now_ms()), "probe", "denied-body", text)],
            cursor: None,
            next_poll_ms: None,
        })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: format!("denied-body-{}", message.idempotency_key), frames: Vec::new() })
    }
}

kata_sdk::export_channel!(DeniedBody);
