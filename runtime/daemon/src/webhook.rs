//! Signatures of webhook requests, checked by the host before a plugin sees
//! them (`[plugins.NAME] webhook = { verify = ..., secret = ... }`, parsed in
//! [`crate::policy::webhook`]).
//!
//! Why here and not in the plugin: the signing secret stays with the host
//! (the plugin never holds it, so a plugin bug cannot leak it), a forged or
//! replayed request is refused before any plugin code runs, and every
//! refusal is audited the same way for every plugin. The listener in
//! [`crate::stream`] calls [`Verifier::check`] with the request's headers and
//! body; a failure is answered `401`, written to the audit log (kind
//! `webhook`, with the reason and the kata.toml line) and dropped.
//!
//! HMACs are compared with `ring::hmac::verify` and shared secrets with a
//! constant-time comparison, so timing says nothing about how much of a
//! forged signature was right.

use std::time::Duration;

use crate::policy::webhook::{Recipe, WebhookVerify};

/// Checks requests for one plugin's webhook listener.
pub struct Verifier {
    rule: WebhookVerify,
    key: ring::hmac::Key,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Verifier").field("rule", &self.rule).finish_non_exhaustive()
    }
}

/// Why a request was refused (shown in the audit row; the sender only gets
/// `401` and a short text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl Verifier {
    /// A verifier for `rule` with the secret's value.
    pub fn new(rule: WebhookVerify, secret: &str) -> Self {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        Self { rule, key, secret: secret.as_bytes().to_vec() }
    }

    /// The rule, for audit rows.
    pub fn rule(&self) -> &WebhookVerify {
        &self.rule
    }

    /// The header to remove before the plugin sees the request: the shared
    /// secret of the `header` recipe (signatures are not secret).
    pub fn strip_header(&self) -> Option<&str> {
        (self.rule.recipe == Recipe::Header).then_some(self.rule.header.as_str())
    }

    /// Check a request. `header` looks a header up by lowercase name;
    /// `now_s` is the current Unix time in seconds.
    pub fn check<'h>(&self, header: impl Fn(&str) -> Option<&'h str>, body: &[u8], now_s: u64) -> Result<(), Refusal> {
        let r = &self.rule;
        let value = header(&r.header).map(str::trim).ok_or_else(|| Refusal(format!("the {} header is missing", r.header)))?;
        let timestamp = match &r.timestamp_header {
            Some(h) => Some(self.fresh_timestamp(header(h).map(str::trim), h, now_s)?),
            None => None,
        };
        match r.recipe {
            Recipe::Header => {
                if constant_time_eq(value.as_bytes(), &self.secret) {
                    Ok(())
                } else {
                    Err(Refusal(format!("the {} header does not hold the shared secret", r.header)))
                }
            }
            Recipe::Github => self.hmac(value.strip_prefix("sha256="), body, "sha256=HEX"),
            Recipe::Slack => {
                let ts = timestamp.unwrap_or_default();
                let mut signed = format!("v0:{ts}:").into_bytes();
                signed.extend_from_slice(body);
                self.hmac(value.strip_prefix("v0="), &signed, "v0=HEX")
            }
            Recipe::HmacSha256 => {
                let hex = value.strip_prefix("sha256=").unwrap_or(value);
                match timestamp {
                    Some(ts) => {
                        let mut signed = format!("{ts}.").into_bytes();
                        signed.extend_from_slice(body);
                        self.hmac(Some(hex), &signed, "HEX or sha256=HEX")
                    }
                    None => self.hmac(Some(hex), body, "HEX or sha256=HEX"),
                }
            }
        }
    }

    /// The signed timestamp, when it is within `max_age` of now.
    fn fresh_timestamp<'a>(&self, value: Option<&'a str>, name: &str, now_s: u64) -> Result<&'a str, Refusal> {
        let value = value.ok_or_else(|| Refusal(format!("the {name} header is missing")))?;
        let ts: u64 = value.parse().map_err(|_| Refusal(format!("the {name} header {value:?} is not a Unix time in seconds")))?;
        let age = Duration::from_secs(now_s.abs_diff(ts));
        if age > self.rule.max_age {
            let when = if ts <= now_s { "old" } else { "in the future" };
            return Err(Refusal(format!(
                "the request's timestamp is {} s {when}, more than max_age ({} s): a replay or a skewed clock",
                age.as_secs(),
                self.rule.max_age.as_secs()
            )));
        }
        Ok(value)
    }

    /// Check hex signature `sig` (None: the header lacks the recipe's prefix) over `signed`.
    fn hmac(&self, sig: Option<&str>, signed: &[u8], form: &str) -> Result<(), Refusal> {
        let h = &self.rule.header;
        let sig = sig.ok_or_else(|| Refusal(format!("the {h} header is not of the form {form}")))?;
        let bytes = decode_hex(sig).ok_or_else(|| Refusal(format!("the {h} header is not of the form {form}")))?;
        ring::hmac::verify(&self.key, signed, &bytes).map_err(|_| Refusal(format!("the {h} signature does not match the body")))
    }
}

/// Equal bytes, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hex (either case) to bytes.
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(recipe: Recipe, header: &str, ts: Option<&str>) -> WebhookVerify {
        WebhookVerify {
            recipe,
            secret: "s".into(),
            header: header.into(),
            timestamp_header: ts.map(Into::into),
            max_age: Duration::from_secs(300),
            at: "kata.toml:3".into(),
        }
    }

    fn hmac_hex(secret: &str, data: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        ring::hmac::sign(&key, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn headers<'a>(list: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| list.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn github_signature_over_the_body() {
        // GitHub's documented example: secret "It's a Secret to Everybody", payload "Hello, World!".
        let v = Verifier::new(rule(Recipe::Github, "x-hub-signature-256", None), "It's a Secret to Everybody");
        let good = [("x-hub-signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_string())];
        assert_eq!(v.check(headers(&good), b"Hello, World!", 0), Ok(()));
        assert!(v.check(headers(&good), b"Hello, World?", 0).unwrap_err().0.contains("does not match"));
        let bare = [("x-hub-signature-256", "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_string())];
        assert!(v.check(headers(&bare), b"Hello, World!", 0).unwrap_err().0.contains("sha256=HEX"));
        assert!(v.check(headers(&[]), b"Hello, World!", 0).unwrap_err().0.contains("missing"));
    }

    #[test]
    fn slack_signature_with_a_fresh_timestamp() {
        // Slack's documented example (api.slack.com/authentication/verifying-requests-from-slack).
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let v = Verifier::new(rule(Recipe::Slack, "x-slack-signature", Some("x-slack-request-timestamp")), secret);
        let h = [
            ("x-slack-signature", "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503".to_string()),
            ("x-slack-request-timestamp", "1531420618".to_string()),
        ];
        assert_eq!(v.check(headers(&h), body, 1_531_420_618 + 60), Ok(()));
        let stale = v.check(headers(&h), body, 1_531_420_618 + 301).unwrap_err().0;
        assert!(stale.contains("301 s old"), "{stale}");
        assert!(v.check(headers(&h), body, 1_531_420_618 - 400).unwrap_err().0.contains("in the future"));
        let no_ts = [h[0].clone()];
        assert!(v.check(headers(&no_ts), body, 1_531_420_618).unwrap_err().0.contains("x-slack-request-timestamp header is missing"));
        let bad_ts = [h[0].clone(), ("x-slack-request-timestamp", "yesterday".to_string())];
        assert!(v.check(headers(&bad_ts), body, 0).unwrap_err().0.contains("Unix time"));
    }

    #[test]
    fn generic_hmac_with_and_without_a_timestamp() {
        let v = Verifier::new(rule(Recipe::HmacSha256, "x-signature", None), "k3y");
        let sig = hmac_hex("k3y", b"{}");
        assert_eq!(v.check(headers(&[("x-signature", sig.clone())]), b"{}", 0), Ok(()));
        assert_eq!(v.check(headers(&[("x-signature", format!("sha256={}", sig.to_uppercase()))]), b"{}", 0), Ok(()));
        assert!(v.check(headers(&[("x-signature", "zz".into())]), b"{}", 0).is_err());
        let v = Verifier::new(rule(Recipe::HmacSha256, "x-signature", Some("x-timestamp")), "k3y");
        let sig = hmac_hex("k3y", b"1000.{}");
        let h = [("x-signature", sig), ("x-timestamp", "1000".to_string())];
        assert_eq!(v.check(headers(&h), b"{}", 1100), Ok(()));
        assert!(v.check(headers(&h), b"{}", 2000).is_err());
    }

    #[test]
    fn shared_secret_header_is_compared_whole_and_stripped() {
        let v = Verifier::new(rule(Recipe::Header, "x-token", None), "let-me-in");
        assert_eq!(v.check(headers(&[("x-token", "let-me-in".into())]), b"", 0), Ok(()));
        assert!(v.check(headers(&[("x-token", "let-me-i".into())]), b"", 0).is_err());
        assert!(v.check(headers(&[("x-token", "let-me-inn".into())]), b"", 0).is_err());
        assert_eq!(v.strip_header(), Some("x-token"));
        assert!(!format!("{v:?}").contains("let-me-in"), "Debug never shows the secret");
    }

    #[test]
    fn hex_and_comparison_helpers() {
        assert_eq!(decode_hex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex(""), None);
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc"));
    }
}
