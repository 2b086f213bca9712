//! The peers bench's kata guest: a `tools-plugin` component (kata:plugin@0.1.3)
//! with the three units of work every side of the benchmark does:
//!
//! - `noop`: returns an empty string;
//! - `echo`: returns its argument string unchanged (the bench passes 1 KiB);
//! - `http`: GETs the URL in its argument through wasi:http and returns the body.
//!
//! The Extism guest (`../extism`) and the native code (`../../src/lib.rs`) do
//! exactly this, so only the host around it differs. The argument is not
//! parsed as JSON (neither side parses anything).

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../../../../../wit/v0.1.3", world: "kata:plugin/tools-plugin" });
}

use bindings::exports::kata::plugin::tools::{Guest, ToolError, ToolSpec};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

struct Tools;

fn get(url: &str) -> Result<String, ToolError> {
    let failed = ToolError::Failed;
    let rest = url.strip_prefix("http://").ok_or_else(|| ToolError::InvalidArgs("http:// URL expected".into()))?;
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let req = OutgoingRequest::new(Fields::new());
    let _ = req.set_method(&Method::Get);
    let _ = req.set_scheme(Some(&Scheme::Http));
    let _ = req.set_authority(Some(authority));
    let _ = req.set_path_with_query(Some(&path));
    let out = req.body().map_err(|()| failed("no body".into()))?;
    let future = outgoing_handler::handle(req, None).map_err(|c| failed(format!("request refused: {c:?}")))?;
    let _ = OutgoingBody::finish(out, None);
    future.subscribe().block();
    let resp = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(code))) => return Err(failed(format!("request failed: {code:?}"))),
        _ => return Err(failed("no response".into())),
    };
    let incoming = resp.consume().map_err(|()| failed("no response body".into()))?;
    let stream = incoming.stream().map_err(|()| failed("no response stream".into()))?;
    let mut buf = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => buf.extend(chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(failed(format!("reading the response: {e:?}"))),
        }
    }
    drop(stream);
    String::from_utf8(buf).map_err(|_| failed("body is not UTF-8".into()))
}

impl Guest for Tools {
    fn list() -> Vec<ToolSpec> {
        ["noop", "echo", "http"]
            .into_iter()
            .map(|n| ToolSpec { name: n.into(), description: n.into(), args_schema: r#"{"type":"string"}"#.into() })
            .collect()
    }

    fn call(name: String, args: String) -> Result<String, ToolError> {
        match name.as_str() {
            "noop" => Ok(String::new()),
            "echo" => Ok(args),
            "http" => get(&args),
            _ => Err(ToolError::UnknownTool(name)),
        }
    }
}

bindings::export!(Tools with_types_in bindings);

#[cfg(target_family = "wasm")]
#[used]
#[unsafe(link_section = "kata:wit-version")]
static KATA_WIT_VERSION: [u8; 5] = *b"0.1.3";
