//! Network and secret enforcement for outgoing HTTP, in exactly one place: the
//! wasi:http `send_request` hook. Every request a plugin makes passes here
//! before any byte leaves; a request to a host its `network` grant does not
//! cover gets `HttpRequestDenied` and a log line naming the kata.toml entry
//! that would allow it. `{{secret:NAME}}` placeholders in the URL and headers
//! are replaced with the secret's value only after the request was allowed, so
//! a secret only ever travels to the plugin's granted hosts and the plugin
//! itself never holds it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use crate::policy::{NetworkGrant, PluginGrants};

type HttpResult<T> = wasmtime_wasi_http::Result<T>;
type IoFuture = Box<dyn Future<Output = HttpResult<()>> + Send>;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No network grant covers the URL.
    NotGranted {
        /// The URL as the plugin wrote it (placeholders, not values).
        url: String,
        /// The entry that would allow requests to this host.
        suggestion: String,
    },
    /// The request names a secret the policy does not define.
    UnknownSecret {
        /// The secret's name.
        name: String,
    },
    /// The URL cannot be checked (no host, unsupported scheme).
    Malformed {
        /// What is wrong.
        reason: String,
    },
}

impl Denial {
    /// A one-paragraph explanation for the log, naming the kata.toml change.
    pub fn explain(&self, plugin: &str) -> String {
        match self {
            Denial::NotGranted { url, suggestion } => format!(
                "plugin {plugin}: request to {url} denied: no network grant covers it; to allow it, add \
                 \"{suggestion}\" to `network` under [plugins.{plugin}] in kata.toml"
            ),
            Denial::UnknownSecret { name } => format!(
                "plugin {plugin}: request denied: it uses {{{{secret:{name}}}}} but kata.toml defines no such secret; \
                 add `secrets = {{ {name} = \"env:VARIABLE\" }}` under [plugins.{plugin}]"
            ),
            Denial::Malformed { reason } => format!("plugin {plugin}: request denied: {reason}"),
        }
    }
}

/// Check a request URI against a plugin's grants. Returns the grant that allows it.
pub fn check_uri<'g>(grants: &'g PluginGrants, uri: &http::Uri) -> Result<&'g NetworkGrant, Denial> {
    let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
    let Some(host) = uri.host() else {
        return Err(Denial::Malformed { reason: format!("URL {uri} has no host") });
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = match (uri.port_u16(), scheme.as_str()) {
        (Some(p), _) => p,
        (None, "http") => 80,
        (None, "https") => 443,
        (None, s) => return Err(Denial::Malformed { reason: format!("unsupported scheme {s} in {uri}") }),
    };
    let path = uri.path();
    grants.network_grant(&scheme, host, port, path).ok_or_else(|| {
        let default = matches!((scheme.as_str(), port), ("http", 80) | ("https", 443));
        let authority = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
        let suggestion = if default {
            format!("{scheme}://{authority}")
        } else {
            format!("{scheme}://{authority}:{port}")
        };
        Denial::NotGranted { url: redact_query(uri), suggestion }
    })
}

/// The URL without its query string, for logs (queries often carry data).
fn redact_query(uri: &http::Uri) -> String {
    let mut s = String::new();
    if let Some(scheme) = uri.scheme_str() {
        s.push_str(scheme);
        s.push_str("://");
    }
    if let Some(a) = uri.authority() {
        s.push_str(a.as_str());
    }
    s.push_str(uri.path());
    s
}

const OPEN: &str = "{{secret:";
const OPEN_ENC: &str = "%7b%7bsecret:";

/// Replace every `{{secret:NAME}}` (also percent-encoded as
/// `%7B%7Bsecret:NAME%7D%7D`) in `text` with the secret's value.
/// Fails on a name `secrets` does not hold, rather than sending the
/// placeholder to the network.
pub fn substitute<'a>(text: &'a str, secrets: &BTreeMap<String, String>) -> Result<Cow<'a, str>, Denial> {
    let lower = text.to_ascii_lowercase();
    if !lower.contains(OPEN) && !lower.contains(OPEN_ENC) {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len() + 32);
    let mut i = 0;
    while i < text.len() {
        let rest = &lower[i..];
        let (open_len, close) = if rest.starts_with(OPEN) {
            (OPEN.len(), "}}")
        } else if rest.starts_with(OPEN_ENC) {
            (OPEN_ENC.len(), "%7d%7d")
        } else {
            let ch = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + ch]);
            i += ch;
            continue;
        };
        let after = i + open_len;
        let Some(end) = lower[after..].find(close) else {
            out.push_str(&text[i..]);
            break;
        };
        let name = &text[after..after + end];
        let value = secrets.get(name).ok_or_else(|| Denial::UnknownSecret { name: name.to_string() })?;
        out.push_str(value);
        i = after + end + close.len();
    }
    Ok(Cow::Owned(out))
}

/// The wasi:http hook of one plugin instance.
pub struct NetworkGate {
    grants: Arc<PluginGrants>,
    /// Resolved secret values, by name.
    secrets: Arc<BTreeMap<String, String>>,
}

impl NetworkGate {
    /// A gate for a plugin with these grants and resolved secrets.
    pub fn new(grants: Arc<PluginGrants>, secrets: Arc<BTreeMap<String, String>>) -> Self {
        Self { grants, secrets }
    }

    /// Check and rewrite a request. On success the request carries real secret
    /// values and may be sent.
    pub fn authorize<B>(&self, req: &mut http::Request<B>) -> Result<(), Denial> {
        let grant = check_uri(&self.grants, req.uri())?;
        tracing::debug!(plugin = %self.grants.name, %grant, url = %redact_query(req.uri()), "request allowed");
        let uri = req.uri().to_string();
        if let Cow::Owned(new) = substitute(&uri, &self.secrets)? {
            *req.uri_mut() = new
                .parse()
                .map_err(|e| Denial::Malformed { reason: format!("URL after secret substitution is invalid: {e}") })?;
        }
        for value in req.headers_mut().values_mut() {
            let Ok(text) = value.to_str() else { continue };
            if let Cow::Owned(new) = substitute(text, &self.secrets)? {
                let mut v = http::HeaderValue::from_str(&new).map_err(|_| Denial::Malformed {
                    reason: "a header value is invalid after secret substitution".into(),
                })?;
                v.set_sensitive(true);
                *value = v;
            }
        }
        Ok(())
    }
}

impl WasiHttpHooks for NetworkGate {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = HttpResult<(http::Response<WasiBody>, IoFuture)>> + Send> {
        if let Err(denial) = self.authorize(&mut request) {
            tracing::warn!(plugin = %self.grants.name, "{}", denial.explain(&self.grants.name));
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as IoFuture))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use std::path::Path;

    fn grants() -> Arc<PluginGrants> {
        let p = Policy::parse(
            "[plugins.tg]\npath = \"x.wasm\"\nnetwork = [\"https://api.telegram.org/bot\", \"http://127.0.0.1:9000\"]\n\
             secrets = { bot_token = \"env:X\" }\n",
            Path::new("kata.toml"),
            Path::new("/ws"),
        )
        .expect("policy");
        Arc::new(p.plugins["tg"].clone())
    }

    fn gate() -> NetworkGate {
        let secrets = BTreeMap::from([("bot_token".to_string(), "123:SECRET".to_string())]);
        NetworkGate::new(grants(), Arc::new(secrets))
    }

    fn req(url: &str) -> http::Request<()> {
        http::Request::get(url).header("authorization", "Bearer {{secret:bot_token}}").body(()).expect("req")
    }

    #[test]
    fn substitutes_for_granted_hosts() {
        let mut r = req("https://api.telegram.org/bot{{secret:bot_token}}/getUpdates?offset=3");
        gate().authorize(&mut r).expect("allowed");
        assert_eq!(r.uri().to_string(), "https://api.telegram.org/bot123:SECRET/getUpdates?offset=3");
        assert_eq!(r.headers()["authorization"], "Bearer 123:SECRET");
        let mut r = req("http://127.0.0.1:9000/x?t=%7B%7Bsecret:bot_token%7D%7D");
        gate().authorize(&mut r).expect("allowed");
        assert_eq!(r.uri().query(), Some("t=123:SECRET"));
    }

    #[test]
    fn never_substitutes_for_other_hosts() {
        for url in [
            "https://evil.example/bot{{secret:bot_token}}",
            "https://api.telegram.org.evil.example/bot{{secret:bot_token}}",
            "http://api.telegram.org/bot{{secret:bot_token}}",
            "https://api.telegram.org/file/x",
            "http://127.0.0.1:9001/",
        ] {
            let mut r = req(url);
            let err = gate().authorize(&mut r).expect_err(url);
            assert!(matches!(err, Denial::NotGranted { .. }), "{url}: {err:?}");
            assert!(!r.uri().to_string().contains("SECRET"), "{url}");
            assert_eq!(r.headers()["authorization"], "Bearer {{secret:bot_token}}");
        }
    }

    #[test]
    fn denial_names_the_line_to_add() {
        let mut r = req("http://10.1.2.3:8080/a/b?q=1");
        let d = gate().authorize(&mut r).expect_err("denied");
        let msg = d.explain("tg");
        assert!(msg.contains("\"http://10.1.2.3:8080\"") && msg.contains("[plugins.tg]"), "{msg}");
        assert!(!msg.contains("q=1"), "query must not be logged: {msg}");
        let mut r = req("https://example.org/");
        let msg = gate().authorize(&mut r).expect_err("denied").explain("tg");
        assert!(msg.contains("\"https://example.org\""), "{msg}");
    }

    #[test]
    fn unknown_secret_is_refused() {
        let mut r = req("https://api.telegram.org/bot{{secret:other}}/x");
        assert_eq!(gate().authorize(&mut r), Err(Denial::UnknownSecret { name: "other".into() }));
        let s = BTreeMap::new();
        assert_eq!(substitute("plain text", &s).expect("ok"), "plain text");
        assert_eq!(substitute("{{secret:unterminated", &s).expect("ok"), "{{secret:unterminated");
    }
}
