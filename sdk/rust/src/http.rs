//! A small blocking HTTP client over standard `wasi:http/outgoing-handler`.
//!
//! ```no_run
//! use kata_sdk::http::Request;
//!
//! # fn f() -> Result<(), kata_sdk::ChannelError> {
//! let resp = Request::post("https://api.example.org/bot{{secret:token}}/send")
//!     .header("accept", "application/json")
//!     .json(&serde_json::json!({ "text": "hi" }))
//!     .send()?;
//! if resp.status == 200 {
//!     let value: serde_json::Value = resp.json()?;
//!     # let _ = value;
//! }
//! # Ok(()) }
//! ```
//!
//! ## Policy and secrets
//!
//! The host only lets requests through to the hosts granted to the plugin in
//! kata.toml (`[plugins.NAME] network`). A refused request fails with
//! [`HttpError::Denied`], which converts into [`ChannelError::InvalidConfig`]
//! so the user learns what to grant.
//!
//! Secrets are written as `{{secret:NAME}}` placeholders in the URL (path or
//! query) or in header values. This client passes them through byte for byte
//! (it never percent-encodes the braces) and the host substitutes the value
//! for granted hosts only; the plugin never sees it.
//!
//! Response bodies are read completely into memory, up to
//! [`MAX_BODY_BYTES`] unless [`Request::max_body_bytes`] says otherwise.

use crate::ChannelError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::Duration;
use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, IncomingBody, IncomingResponse, OutgoingBody, OutgoingRequest, RequestOptions};
use wasi::io::streams::StreamError;

/// The default limit on a response body: 16 MiB.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// The most bytes `blocking-write-and-flush` accepts in one call.
const WRITE_CHUNK: usize = 4096;

/// How many bytes to ask for per read of a response body.
const READ_CHUNK: u64 = 64 * 1024;

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// Any other method, e.g. `"PROPFIND"`.
    Other(String),
}

impl Method {
    fn to_wasi(&self) -> wasi::http::types::Method {
        use wasi::http::types::Method as M;
        match self {
            Method::Get => M::Get,
            Method::Head => M::Head,
            Method::Post => M::Post,
            Method::Put => M::Put,
            Method::Patch => M::Patch,
            Method::Delete => M::Delete,
            Method::Other(name) => M::Other(name.clone()),
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL could not be split into scheme, authority and path.
    InvalidUrl {
        /// The URL without its query.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request could not be built (bad header, body not serializable…).
    InvalidRequest(String),
    /// The host's workspace policy refused the destination
    /// (`wasi:http` error code `HTTP-request-denied`).
    Denied {
        /// The URL without its query.
        url: String,
    },
    /// Any other failure to get a response: DNS, connection refused, TLS,
    /// timeout, a broken body stream. `code` is the wasi `ErrorCode` (or
    /// stream error) as a short sentence ([`describe_error_code`]).
    Transport {
        /// The URL without its query.
        url: String,
        /// The error as reported by the host.
        code: String,
    },
    /// The response body was larger than the configured limit.
    BodyTooLarge {
        /// The URL without its query.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The response body could not be decoded (e.g. invalid JSON).
    Decode(String),
}

impl HttpError {
    /// Whether the host's policy refused the request.
    pub fn is_denied(&self) -> bool {
        matches!(self, HttpError::Denied { .. })
    }

    /// Classify a wasi `ErrorCode` for a request to `url` (already stripped of
    /// its query).
    fn from_code(code: &ErrorCode, url: &str) -> HttpError {
        match code {
            ErrorCode::HttpRequestDenied => HttpError::Denied { url: url.to_string() },
            other => HttpError::Transport { url: url.to_string(), code: describe_error_code(other) },
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl { url, reason } => write!(f, "invalid URL {url}: {reason}"),
            HttpError::InvalidRequest(reason) => write!(f, "invalid request: {reason}"),
            HttpError::Denied { url } => {
                write!(f, "request to {url} was denied by the workspace policy")
            }
            HttpError::Transport { url, code } => write!(f, "request to {url} failed: {code}"),
            HttpError::BodyTooLarge { url, limit } => {
                write!(f, "response from {url} is larger than {limit} bytes")
            }
            HttpError::Decode(reason) => write!(f, "cannot decode response: {reason}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for ChannelError {
    /// - [`HttpError::Denied`] becomes [`ChannelError::InvalidConfig`] telling
    ///   the user to grant the host;
    /// - [`HttpError::Transport`] becomes [`ChannelError::Network`] (retried);
    /// - [`HttpError::InvalidUrl`] becomes [`ChannelError::InvalidConfig`];
    /// - everything else becomes [`ChannelError::Fatal`].
    fn from(err: HttpError) -> ChannelError {
        match err {
            HttpError::Denied { url } => ChannelError::InvalidConfig(format!(
                "request to {url} was denied by the workspace policy: \
                 grant its host in kata.toml [plugins.NAME] network"
            )),
            HttpError::Transport { .. } => ChannelError::Network(err.to_string()),
            HttpError::InvalidUrl { .. } => ChannelError::InvalidConfig(err.to_string()),
            HttpError::InvalidRequest(_) | HttpError::BodyTooLarge { .. } | HttpError::Decode(_) => ChannelError::Fatal(err.to_string()),
        }
    }
}

/// A URL split the way `wasi:http` wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// `http`, `https` or another scheme, without `://`.
    pub scheme: &'a str,
    /// `host[:port]`.
    pub authority: &'a str,
    /// Path and query, always starting with `/`; the fragment is dropped.
    pub path_with_query: String,
}

/// Split `url` into scheme, authority and path-with-query without decoding or
/// encoding anything, so `{{secret:NAME}}` placeholders pass through unchanged.
pub fn split_url(url: &str) -> Result<UrlParts<'_>, HttpError> {
    let invalid = |reason: &str| HttpError::InvalidUrl { url: url_without_query(url), reason: reason.to_string() };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("contains whitespace or control characters"));
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("expected scheme://host/path"))?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(invalid("bad scheme"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() {
        return Err(invalid("missing host"));
    }
    let tail = tail.split_once('#').map_or(tail, |(before, _)| before);
    let path_with_query = if tail.starts_with('/') { tail.to_string() } else { format!("/{tail}") };
    Ok(UrlParts { scheme, authority, path_with_query })
}

/// `url` without its query and fragment: safe to show in errors and logs.
pub fn url_without_query(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    url[..end].to_string()
}

/// An HTTP request being built. Send it with [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
    max_body: usize,
    error: Option<String>,
}

impl Request {
    /// A request with any method.
    pub fn new(method: Method, url: impl Into<String>) -> Request {
        Request { method, url: url.into(), headers: Vec::new(), body: None, timeout: None, max_body: MAX_BODY_BYTES, error: None }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new(Method::Get, url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Request {
        Request::new(Method::Post, url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Request {
        Request::new(Method::Put, url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Request {
        Request::new(Method::Delete, url)
    }

    /// Add a header. The value may contain `{{secret:NAME}}` placeholders.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Use `body` as the request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// Serialize `value` as the JSON body and set `content-type:
    /// application/json` unless a content type was already given. A
    /// serialization failure is reported by [`send`](Request::send).
    pub fn json(mut self, value: &impl Serialize) -> Request {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                if !self.has_header("content-type") {
                    self.headers.push(("content-type".into(), "application/json".into()));
                }
                self.body = Some(bytes);
            }
            Err(e) => self.error = Some(format!("cannot serialize JSON body: {e}")),
        }
        self
    }

    /// Fail when the response takes longer than `timeout` to start, or stalls
    /// for longer than `timeout` between body chunks. Hosts that do not
    /// support the option use their own limits.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Refuse response bodies larger than `limit` bytes (default
    /// [`MAX_BODY_BYTES`]).
    pub fn max_body_bytes(mut self, limit: usize) -> Request {
        self.max_body = limit;
        self
    }

    /// The URL as given (placeholders included).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Send the request and read the whole response.
    ///
    /// Any HTTP status is a successful [`Response`]; check
    /// [`Response::status`]. Errors are the failures to get a response at all.
    pub fn send(self) -> Result<Response, HttpError> {
        if let Some(reason) = self.error {
            return Err(HttpError::InvalidRequest(reason));
        }
        let shown = url_without_query(&self.url);
        let parts = split_url(&self.url)?;

        let mut fields: Vec<(String, Vec<u8>)> = self.headers.iter().map(|(n, v)| (n.clone(), v.clone().into_bytes())).collect();
        if let Some(body) = &self.body
            && !self.has_header("content-length")
        {
            fields.push(("content-length".into(), body.len().to_string().into_bytes()));
        }
        let headers = Fields::from_list(&fields).map_err(|e| HttpError::InvalidRequest(format!("invalid header: {e:?}")))?;

        let request = OutgoingRequest::new(headers);
        let invalid = |what: &str| HttpError::InvalidUrl { url: shown.clone(), reason: format!("the host rejected the {what}") };
        request.set_method(&self.method.to_wasi()).map_err(|()| HttpError::InvalidRequest(format!("bad method {:?}", self.method)))?;
        let scheme = match parts.scheme.to_ascii_lowercase().as_str() {
            "http" => wasi::http::types::Scheme::Http,
            "https" => wasi::http::types::Scheme::Https,
            other => wasi::http::types::Scheme::Other(other.to_string()),
        };
        request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
        request.set_authority(Some(parts.authority)).map_err(|()| invalid("host"))?;
        request.set_path_with_query(Some(&parts.path_with_query)).map_err(|()| invalid("path"))?;
        let outgoing_body = request.body().map_err(|()| HttpError::InvalidRequest("request body already taken".into()))?;

        let options = self.timeout.map(|t| {
            let options = RequestOptions::new();
            let nanos = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            // Hosts may not support these options; then their defaults apply.
            let _ = options.set_first_byte_timeout(Some(nanos));
            let _ = options.set_between_bytes_timeout(Some(nanos));
            options
        });

        let future = outgoing_handler::handle(request, options).map_err(|code| HttpError::from_code(&code, &shown))?;

        // Write the body after `handle` so large bodies stream instead of
        // filling a buffer nobody reads yet. If the host refused the request,
        // the write fails; the response future then says why, so check it first.
        let written = write_body(outgoing_body, self.body.as_deref());

        let response = {
            let pollable = future.subscribe();
            pollable.block();
            match future.get() {
                Some(Ok(Ok(response))) => response,
                Some(Ok(Err(code))) => return Err(HttpError::from_code(&code, &shown)),
                Some(Err(())) => {
                    return Err(HttpError::Transport { url: shown, code: "response already taken".into() });
                }
                None => {
                    return Err(HttpError::Transport { url: shown, code: "response not ready after waiting".into() });
                }
            }
        };
        if let Err(code) = written {
            return Err(HttpError::Transport { url: shown, code });
        }
        read_response(response, &shown, self.max_body)
    }
}

/// Write `data` (if any) to `body` and finish it.
fn write_body(body: OutgoingBody, data: Option<&[u8]>) -> Result<(), String> {
    if let Some(data) = data {
        let stream = body.write().map_err(|()| "request body stream unavailable".to_string())?;
        for chunk in data.chunks(WRITE_CHUNK) {
            stream.blocking_write_and_flush(chunk).map_err(|e| stream_error_text(&e))?;
        }
        // The stream is a child of the body: drop it before finishing.
        drop(stream);
    }
    OutgoingBody::finish(body, None).map_err(|code| describe_error_code(&code))
}

/// Describe a stream error, preferring the HTTP error code behind it.
fn stream_error_text(err: &StreamError) -> String {
    match err {
        StreamError::Closed => "the connection closed".to_string(),
        StreamError::LastOperationFailed(io) => match wasi::http::types::http_error_code(io) {
            Some(code) => describe_error_code(&code),
            None => format!("I/O error: {}", io.to_debug_string()),
        },
    }
}

/// A wasi:http error code as a short sentence for people (it ends up in
/// kata's log and `kata status`), with what the code carries that helps:
/// e.g. `the host name could not be resolved (failed to lookup address
/// information)` rather than `ErrorCode::DnsError(DnsErrorPayload { … })`.
pub fn describe_error_code(code: &ErrorCode) -> String {
    let with = |text: &str, detail: Option<String>| match detail.filter(|d| !d.is_empty()) {
        Some(d) => format!("{text} ({d})"),
        None => text.to_string(),
    };
    let size = |what: &str, n: Option<u64>| with(what, n.map(|n| format!("{n} bytes")));
    match code {
        ErrorCode::DnsTimeout => "the DNS lookup timed out".into(),
        ErrorCode::DnsError(p) => with("the host name could not be resolved", p.rcode.clone()),
        ErrorCode::DestinationNotFound => "the host was not found".into(),
        ErrorCode::DestinationUnavailable => "the host is unavailable".into(),
        ErrorCode::DestinationIpProhibited => "the destination address is not allowed".into(),
        ErrorCode::DestinationIpUnroutable => "the destination address cannot be reached".into(),
        ErrorCode::ConnectionRefused => "the server refused the connection".into(),
        ErrorCode::ConnectionTerminated => "the connection was closed unexpectedly".into(),
        ErrorCode::ConnectionTimeout => "connecting timed out".into(),
        ErrorCode::ConnectionReadTimeout => "the server stopped sending (read timeout)".into(),
        ErrorCode::ConnectionWriteTimeout => "the server stopped taking data (write timeout)".into(),
        ErrorCode::ConnectionLimitReached => "too many requests or connections (a rate or connection limit was reached)".into(),
        ErrorCode::TlsProtocolError => "the TLS handshake failed".into(),
        ErrorCode::TlsCertificateError => "the server's TLS certificate was not accepted".into(),
        ErrorCode::TlsAlertReceived(p) => with("the server ended TLS with an alert", p.alert_message.clone()),
        ErrorCode::HttpRequestDenied => "the request was denied by the workspace policy (kata.toml)".into(),
        ErrorCode::HttpRequestLengthRequired => "the server requires a Content-Length".into(),
        ErrorCode::HttpRequestBodySize(n) => size("the request body does not match its declared size", *n),
        ErrorCode::HttpRequestMethodInvalid => "the request method is invalid".into(),
        ErrorCode::HttpRequestUriInvalid => "the request URL is invalid".into(),
        ErrorCode::HttpRequestUriTooLong => "the request URL is too long".into(),
        ErrorCode::HttpRequestHeaderSectionSize(_) | ErrorCode::HttpRequestHeaderSize(_) => "the request headers are too large".into(),
        ErrorCode::HttpRequestTrailerSectionSize(_) | ErrorCode::HttpRequestTrailerSize(_) => "the request trailers are too large".into(),
        ErrorCode::HttpResponseIncomplete => "the response ended before it was complete".into(),
        ErrorCode::HttpResponseHeaderSectionSize(_) | ErrorCode::HttpResponseHeaderSize(_) => "the response headers are too large".into(),
        ErrorCode::HttpResponseBodySize(n) => size("the response body is larger than allowed (limits.max_response) or than it said", *n),
        ErrorCode::HttpResponseTrailerSectionSize(_) | ErrorCode::HttpResponseTrailerSize(_) => {
            "the response trailers are too large".into()
        }
        ErrorCode::HttpResponseTransferCoding(c) => with("the response uses a transfer coding that is not supported", c.clone()),
        ErrorCode::HttpResponseContentCoding(c) => with("the response uses a content coding that is not supported", c.clone()),
        ErrorCode::HttpResponseTimeout => "the server did not answer in time".into(),
        ErrorCode::HttpUpgradeFailed => "the protocol upgrade failed".into(),
        ErrorCode::HttpProtocolError => "the HTTP exchange broke the protocol".into(),
        ErrorCode::LoopDetected => "a request loop was detected".into(),
        ErrorCode::ConfigurationError => "the HTTP client is misconfigured".into(),
        ErrorCode::InternalError(m) => with("the HTTP client failed internally", m.clone()),
    }
}

/// Read status, headers and the whole body (up to `limit` bytes).
fn read_response(response: IncomingResponse, url: &str, limit: usize) -> Result<Response, HttpError> {
    let transport = |code: String| HttpError::Transport { url: url.to_string(), code };
    let status = response.status();
    let headers = {
        let fields = response.headers();
        fields.entries().into_iter().map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned())).collect::<Vec<_>>()
    };
    let body = response.consume().map_err(|()| transport("response body already consumed".into()))?;
    let bytes = {
        let stream = body.stream().map_err(|()| transport("response body stream unavailable".into()))?;
        let mut bytes = Vec::new();
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => {
                    if bytes.len() + chunk.len() > limit {
                        return Err(HttpError::BodyTooLarge { url: url.to_string(), limit });
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(e) => return Err(transport(stream_error_text(&e))),
            }
        }
        bytes
    };
    drop(IncomingBody::finish(body));
    Ok(Response { status, headers, body: bytes })
}

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The headers in the order received; names are lowercase.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text; invalid UTF-8 is replaced by U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Decode the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_placeholders() {
        let p = split_url("https://api.telegram.org/bot{{secret:bot_token}}/getUpdates?offset=5&timeout=25").unwrap();
        assert_eq!(p.scheme, "https");
        assert_eq!(p.authority, "api.telegram.org");
        assert_eq!(p.path_with_query, "/bot{{secret:bot_token}}/getUpdates?offset=5&timeout=25");
    }

    #[test]
    fn split_edge_cases() {
        let p = split_url("http://127.0.0.1:9000").unwrap();
        assert_eq!((p.authority, p.path_with_query.as_str()), ("127.0.0.1:9000", "/"));
        let p = split_url("http://h?q={{secret:t}}#frag").unwrap();
        assert_eq!((p.authority, p.path_with_query.as_str()), ("h", "/?q={{secret:t}}"));
        assert!(split_url("no-scheme/path").is_err());
        assert!(split_url("http:///path").is_err());
        assert!(split_url("http://h/a b").is_err());
        assert!(split_url("1x://h/").is_err());
    }

    #[test]
    fn url_without_query_strips_query_and_fragment() {
        assert_eq!(url_without_query("https://h/bot{{secret:t}}/x?token={{secret:t}}"), "https://h/bot{{secret:t}}/x");
        assert_eq!(url_without_query("https://h/x#f"), "https://h/x");
    }

    #[test]
    fn denied_maps_to_invalid_config() {
        let err = HttpError::from_code(&ErrorCode::HttpRequestDenied, "https://evil.example/x");
        assert!(err.is_denied());
        assert_eq!(
            ChannelError::from(err),
            ChannelError::InvalidConfig(
                "request to https://evil.example/x was denied by the workspace policy: \
                 grant its host in kata.toml [plugins.NAME] network"
                    .into()
            )
        );
    }

    #[test]
    fn transport_maps_to_network_with_code() {
        let err = HttpError::from_code(&ErrorCode::ConnectionRefused, "http://127.0.0.1:1/");
        assert_eq!(err.to_string(), "request to http://127.0.0.1:1/ failed: the server refused the connection");
        assert!(matches!(ChannelError::from(err), ChannelError::Network(m) if m.contains("refused the connection")));
    }

    #[test]
    fn error_codes_read_as_sentences() {
        use wasi::http::types::DnsErrorPayload;
        let dns = ErrorCode::DnsError(DnsErrorPayload { rcode: Some("failed to lookup address information".into()), info_code: None });
        for (code, want) in [
            (dns, "the host name could not be resolved (failed to lookup address information)"),
            (ErrorCode::HttpRequestDenied, "the request was denied by the workspace policy (kata.toml)"),
            (
                ErrorCode::HttpResponseBodySize(Some(9)),
                "the response body is larger than allowed (limits.max_response) or than it said (9 bytes)",
            ),
            (ErrorCode::InternalError(None), "the HTTP client failed internally"),
        ] {
            let text = describe_error_code(&code);
            assert_eq!(text, want);
            assert!(!text.contains("ErrorCode") && !text.contains('{'), "{text}");
        }
    }

    #[test]
    fn json_errors_are_deferred_and_headers_kept() {
        let r = Request::post("http://h/").json(&serde_json::json!({"a": 1}));
        assert!(r.has_header("Content-Type"));
        assert_eq!(r.body.as_deref(), Some(&b"{\"a\":1}"[..]));
    }

    #[test]
    fn response_helpers() {
        let r =
            Response { status: 200, headers: vec![("content-type".into(), "application/json".into())], body: br#"{"ok":true}"#.to_vec() };
        assert!(r.is_success());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["ok"], true);
        assert!(matches!(r.json::<u32>(), Err(HttpError::Decode(_))));
    }
}
