//! `kata:js/http` over wasi:http, with the Rust SDK's HTTP client.
//!
//! QuickJS components cannot import `wasi:http` themselves (componentize-qjs
//! pre-initialises the JavaScript in a linker that lacks wasi:http and stubs
//! it with resource types that do not match wasi:io's), so JavaScript plugins
//! import this small interface instead and `kata plugin build` composes this
//! adapter in. The finished plugin imports plain `wasi:http`.

// The Rust SDK's client, compiled in unchanged; it converts its errors into
// the SDK's ChannelError, which this stand-in provides.
#[allow(dead_code, clippy::all)]
#[path = "../../../rust/src/http.rs"]
mod sdk_http;

/// The subset of the Rust SDK's `ChannelError` that `sdk_http` converts into.
#[allow(dead_code)]
#[derive(Debug)]
enum ChannelError {
    InvalidConfig(String),
    Network(String),
    Fatal(String),
}

mod bindings {
    wit_bindgen::generate!({ path: "../wit", world: "kata:js/http-adapter" });
}

use bindings::exports::kata::js::http::{ErrorKind, Guest, HttpError, Request, Response};
use sdk_http::{HttpError as E, Method};

struct Adapter;

fn error(err: E) -> HttpError {
    let kind = match &err {
        E::InvalidUrl { .. } => ErrorKind::InvalidUrl,
        E::InvalidRequest(_) | E::Decode(_) => ErrorKind::InvalidRequest,
        E::Denied { .. } => ErrorKind::Denied,
        E::Transport { .. } => ErrorKind::Transport,
        E::BodyTooLarge { .. } => ErrorKind::BodyTooLarge,
    };
    HttpError { kind, message: err.to_string() }
}

impl Guest for Adapter {
    fn send(request: Request) -> Result<Response, HttpError> {
        let method = match request.method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => Method::Other(request.method.clone()),
        };
        let mut r = sdk_http::Request::new(method, request.url);
        for (name, value) in request.headers {
            r = r.header(name, value);
        }
        if let Some(body) = request.body {
            r = r.body(body);
        }
        if let Some(ms) = request.timeout_ms {
            r = r.timeout(std::time::Duration::from_millis(u64::from(ms)));
        }
        if let Some(limit) = request.max_body_bytes {
            r = r.max_body_bytes(limit as usize);
        }
        let response = r.send().map_err(error)?;
        Ok(Response { status: response.status, headers: response.headers, body: response.body })
    }
}

bindings::export!(Adapter with_types_in bindings);
