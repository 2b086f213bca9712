//! `[plugins.NAME] webhook = { ... }`: how the host checks the signature of
//! every request to a plugin's webhook listener before the plugin sees it.
//!
//! ```toml
//! [plugins.hooks]
//! network = [{ url = "http://127.0.0.1:8787/hook", private = true }]
//! secrets = { hook_secret = "env:HOOK_SECRET" }
//! webhook = { verify = "github", secret = "hook_secret" }
//! ```
//!
//! The recipes (what the sender signs and where it puts the signature):
//!
//! | `verify`      | the request carries                                                       |
//! |---------------|----------------------------------------------------------------------------|
//! | `github`      | `X-Hub-Signature-256: sha256=HEX`, HMAC-SHA256 of the body                 |
//! | `slack`       | `X-Slack-Signature: v0=HEX`, HMAC-SHA256 of `v0:TIMESTAMP:BODY`, with `X-Slack-Request-Timestamp` within `max_age` |
//! | `hmac-sha256` | `header` (default `X-Signature`): HEX or `sha256=HEX`, HMAC-SHA256 of the body, or of `TIMESTAMP.BODY` when `timestamp_header` names where the timestamp is (then within `max_age`) |
//! | `header`      | `header` (required): the secret itself, compared in constant time; the header is removed before the plugin sees the request |
//!
//! `secret` names one of the plugin's `secrets`. That secret verifies
//! requests and nothing else: the host never fills it into anything the
//! plugin sends (`{{secret:NAME}}` is refused), and the plugin never sees it.
//! The checking itself is kata-daemon's (its webhook listener); this module
//! only parses and validates the table.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{SecretSource, parse_duration};

/// How old (or how far in the future) a signed timestamp may be by default.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// The table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEntry {
    /// The recipe: `github`, `slack`, `hmac-sha256` or `header`.
    pub verify: String,
    /// The name of the secret (in this plugin's `secrets`) that signs requests.
    pub secret: String,
    /// The signature header (`hmac-sha256`, default `X-Signature`) or the
    /// shared-secret header (`header`, required).
    #[serde(default)]
    pub header: Option<String>,
    /// For `hmac-sha256`: the header holding the signed Unix timestamp.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// How far a signed timestamp may be from now, e.g. `"5m"` (default).
    #[serde(default)]
    pub max_age: Option<String>,
}

/// A signature recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// GitHub: `X-Hub-Signature-256: sha256=HEX` over the body.
    Github,
    /// Slack: `X-Slack-Signature: v0=HEX` over `v0:TS:BODY`, timestamp checked.
    Slack,
    /// HMAC-SHA256 of the body (or `TS.BODY`) in a configurable header.
    HmacSha256,
    /// A shared secret in a header.
    Header,
}

impl Recipe {
    /// The name written in kata.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            Recipe::Github => "github",
            Recipe::Slack => "slack",
            Recipe::HmacSha256 => "hmac-sha256",
            Recipe::Header => "header",
        }
    }
}

/// The table resolved: what the listener checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookVerify {
    /// The recipe.
    pub recipe: Recipe,
    /// The secret's name (a key of the plugin's `secrets`).
    pub secret: String,
    /// The signature or shared-secret header, lowercase.
    pub header: String,
    /// The timestamp header, lowercase, when the recipe signs one.
    pub timestamp_header: Option<String>,
    /// How far a signed timestamp may be from now.
    pub max_age: Duration,
    /// Where the table is written (`kata.toml:LINE`), for denials.
    pub at: String,
}

impl WebhookVerify {
    /// The table in one line, for `kata policy explain` and audit rows.
    pub fn describe(&self) -> String {
        let mut s = format!("webhook = {{ verify = \"{}\", secret = \"{}\"", self.recipe.as_str(), self.secret);
        if matches!(self.recipe, Recipe::HmacSha256 | Recipe::Header) {
            s.push_str(&format!(", header = \"{}\"", self.header));
        }
        if let (Recipe::HmacSha256, Some(t)) = (self.recipe, &self.timestamp_header) {
            s.push_str(&format!(", timestamp_header = \"{t}\""));
        }
        if self.timestamp_header.is_some() {
            s.push_str(&format!(", max_age = \"{}s\"", self.max_age.as_secs()));
        }
        s.push_str(" }");
        s
    }
}

/// Resolve the table against the plugin's `secrets`; an error names the
/// key it is about and what to write instead. `at` is where it is written.
pub fn resolve(
    entry: &WebhookEntry,
    secrets: &BTreeMap<String, SecretSource>,
    plugin: &str,
    at: String,
) -> Result<WebhookVerify, (&'static str, String)> {
    let recipe = match entry.verify.trim() {
        "github" => Recipe::Github,
        "slack" => Recipe::Slack,
        "hmac-sha256" => Recipe::HmacSha256,
        "header" => Recipe::Header,
        other => {
            return Err((
                "verify",
                format!(
                    "unknown webhook recipe {other:?}; use \"github\" (X-Hub-Signature-256), \"slack\" (X-Slack-Signature \
                     with a timestamp), \"hmac-sha256\" (a signature header you name) or \"header\" (a shared secret in a header)"
                ),
            ));
        }
    };
    if !secrets.contains_key(&entry.secret) {
        return Err((
            "secret",
            format!(
                "the webhook secret {:?} is not one of this plugin's secrets; add it, e.g. \
                 secrets = {{ {} = \"env:VARIABLE\" }} under [plugins.{plugin}]",
                entry.secret,
                if entry.secret.is_empty() { "webhook_secret" } else { &entry.secret }
            ),
        ));
    }
    let header_name = |h: &str| -> Result<String, (&'static str, String)> {
        let h = h.trim();
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
            return Err(("header", format!("{h:?} is not an HTTP header name (letters, digits, '-')")));
        }
        Ok(h.to_ascii_lowercase())
    };
    let (header, timestamp_header) = match recipe {
        Recipe::Github => ("x-hub-signature-256".to_string(), None),
        Recipe::Slack => ("x-slack-signature".to_string(), Some("x-slack-request-timestamp".to_string())),
        Recipe::HmacSha256 => (
            header_name(entry.header.as_deref().unwrap_or("x-signature"))?,
            entry.timestamp_header.as_deref().map(header_name).transpose().map_err(|(_, m)| ("timestamp_header", m))?,
        ),
        Recipe::Header => {
            let Some(h) = entry.header.as_deref() else {
                return Err((
                    "header",
                    "the \"header\" recipe needs the name of the header that carries the secret, e.g. header = \"X-Webhook-Token\"".into(),
                ));
            };
            (header_name(h)?, None)
        }
    };
    if entry.timestamp_header.is_some() && recipe != Recipe::HmacSha256 {
        return Err((
            "timestamp_header",
            format!("timestamp_header only applies to verify = \"hmac-sha256\" (\"{}\" fixes its own)", recipe.as_str()),
        ));
    }
    if entry.header.is_some() && matches!(recipe, Recipe::Github | Recipe::Slack) {
        return Err(("header", format!("verify = \"{}\" has a fixed signature header; leave `header` out", recipe.as_str())));
    }
    let max_age = match &entry.max_age {
        Some(s) => parse_duration(s).map_err(|e| ("max_age", format!("max_age {s:?}: {e}")))?,
        None => DEFAULT_MAX_AGE,
    };
    if max_age.is_zero() {
        return Err(("max_age", "max_age must be more than zero, e.g. \"5m\"".into()));
    }
    Ok(WebhookVerify { recipe, secret: entry.secret.clone(), header, timestamp_header, max_age, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(toml_text: &str) -> WebhookEntry {
        toml::from_str(toml_text).unwrap()
    }

    fn secrets() -> BTreeMap<String, SecretSource> {
        BTreeMap::from([("s".to_string(), SecretSource::Env("S".into()))])
    }

    #[test]
    fn recipes_resolve_with_their_headers() {
        let r = |t: &str| resolve(&entry(t), &secrets(), "hooks", "kata.toml:9".into());
        let g = r("verify = \"github\"\nsecret = \"s\"").unwrap();
        assert_eq!((g.recipe, g.header.as_str(), g.timestamp_header), (Recipe::Github, "x-hub-signature-256", None));
        let s = r("verify = \"slack\"\nsecret = \"s\"\nmax_age = \"2m\"").unwrap();
        assert_eq!(
            (s.header.as_str(), s.timestamp_header.as_deref(), s.max_age),
            ("x-slack-signature", Some("x-slack-request-timestamp"), Duration::from_secs(120))
        );
        let h = r("verify = \"hmac-sha256\"\nsecret = \"s\"\ntimestamp_header = \"X-Timestamp\"").unwrap();
        assert_eq!((h.header.as_str(), h.timestamp_header.as_deref(), h.max_age), ("x-signature", Some("x-timestamp"), DEFAULT_MAX_AGE));
        let k = r("verify = \"header\"\nsecret = \"s\"\nheader = \"X-Webhook-Token\"").unwrap();
        assert_eq!((k.recipe, k.header.as_str(), k.at.as_str()), (Recipe::Header, "x-webhook-token", "kata.toml:9"));
        assert_eq!(k.describe(), "webhook = { verify = \"header\", secret = \"s\", header = \"x-webhook-token\" }");
    }

    #[test]
    fn mistakes_name_the_key() {
        let r = |t: &str| resolve(&entry(t), &secrets(), "hooks", String::new()).unwrap_err();
        let (k, m) = r("verify = \"md5\"\nsecret = \"s\"");
        assert!(k == "verify" && m.contains("\"github\""), "{m}");
        let (k, m) = r("verify = \"github\"\nsecret = \"nope\"");
        assert!(k == "secret" && m.contains("secrets = { nope = \"env:VARIABLE\" } under [plugins.hooks]"), "{m}");
        assert_eq!(r("verify = \"header\"\nsecret = \"s\"").0, "header");
        assert_eq!(r("verify = \"header\"\nsecret = \"s\"\nheader = \"bad header\"").0, "header");
        assert_eq!(r("verify = \"github\"\nsecret = \"s\"\nheader = \"x\"").0, "header");
        assert_eq!(r("verify = \"slack\"\nsecret = \"s\"\ntimestamp_header = \"x\"").0, "timestamp_header");
        assert_eq!(r("verify = \"slack\"\nsecret = \"s\"\nmax_age = \"soon\"").0, "max_age");
        assert!(toml::from_str::<WebhookEntry>("verify = \"github\"\nsecret = \"s\"\nsecrte = 1").is_err());
    }
}
