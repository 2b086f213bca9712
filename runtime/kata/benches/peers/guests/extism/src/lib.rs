//! The peers bench's Extism guest (extism-pdk, wasm32-wasip1): the same three
//! functions as the kata guest (`../kata-tools`) — `noop` returns nothing,
//! `echo` returns its input, `http` GETs the URL in its input through
//! Extism's `http_request` host function and returns the body.

use extism_pdk::*;

#[plugin_fn]
pub fn noop(_: ()) -> FnResult<()> {
    Ok(())
}

#[plugin_fn]
pub fn echo(input: Vec<u8>) -> FnResult<Vec<u8>> {
    Ok(input)
}

#[plugin_fn]
pub fn http(url: String) -> FnResult<Vec<u8>> {
    let res = http::request::<()>(&HttpRequest::new(url), None)?;
    Ok(res.body())
}
