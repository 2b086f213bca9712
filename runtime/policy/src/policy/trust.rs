//! `[trust]`: whose plugins this workspace installs, and what happens to a
//! plugin nobody signed.
//!
//! ```toml
//! [trust]
//! publishers = [
//!     # quiet (oci://ghcr.io/acme/quiet:1.2.0), trusted on first use
//!     "ed25519:B1PjU2Xrd2P2EjoOHqdl0PD7m4I8PbQfKt4WjfwvDKg=",
//! ]
//! unsigned = "ask"   # refuse | ask | allow
//! ```
//!
//! A publisher is an Ed25519 public key, written `ed25519:` and the 32 key
//! bytes in standard base64 ([`PublisherKey`]); `kata plugin keygen` prints
//! one. Checking a signature is kata's (the `kata` crate's `signing` module);
//! this module only says which keys are trusted and how unsigned plugins are
//! treated, so a policy is checked without any cryptography.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

/// `[trust]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Publisher keys whose signed plugins install without asking.
    #[serde(default)]
    pub publishers: Vec<String>,
    /// What `kata plugin add|upgrade` does with a plugin that carries no
    /// signature (default `ask`).
    #[serde(default)]
    pub unsigned: Unsigned,
}

/// `[trust] unsigned`: what happens to a plugin nobody signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unsigned {
    /// Only plugins signed by a key in `publishers` install: unsigned ones
    /// and ones signed by any other key are refused (no trust on first use).
    Refuse,
    /// An unsigned plugin installs only with `--allow-unsigned` or a
    /// person's consent at the terminal; an unknown key is shown and offered
    /// for trust on first use.
    #[default]
    Ask,
    /// Unsigned plugins install without asking (the review still says so).
    Allow,
}

impl Unsigned {
    /// As written in kata.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            Unsigned::Refuse => "refuse",
            Unsigned::Ask => "ask",
            Unsigned::Allow => "allow",
        }
    }
}

/// An Ed25519 public key naming a plugin publisher: `ed25519:<base64>`.
///
/// ```
/// use kata_policy::policy::PublisherKey;
///
/// let k = PublisherKey::parse("ed25519:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
/// assert_eq!(k.bytes()[31], 31);
/// // Unpadded base64 is accepted; the canonical form is padded.
/// let same = PublisherKey::parse("ed25519:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap();
/// assert_eq!(same.to_string(), k.to_string());
/// assert!(PublisherKey::parse("rsa:AAAA").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublisherKey([u8; 32]);

impl PublisherKey {
    /// The `ed25519:` prefix of every key id.
    pub const PREFIX: &'static str = "ed25519:";

    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw public key.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parse `ed25519:<base64 of 32 bytes>` (padding optional, surrounding
    /// spaces ignored).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let Some(b64) = s.strip_prefix(Self::PREFIX) else {
            return Err(format!(
                "{s:?} is not a publisher key: it must be \"ed25519:\" and the base64 of a 32-byte Ed25519 public key, as `kata plugin keygen` prints"
            ));
        };
        let engine =
            if b64.ends_with('=') { &base64::engine::general_purpose::STANDARD } else { &base64::engine::general_purpose::STANDARD_NO_PAD };
        let bytes = engine.decode(b64).map_err(|e| format!("{s:?} is not a publisher key: its base64 does not decode ({e})"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{s:?} is not a publisher key: an Ed25519 public key is 32 bytes, this one is {}", b.len()))?;
        Ok(Self(key))
    }
}

impl fmt::Display for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TrustConfig {
    /// The trusted keys (entries that do not parse are skipped: a policy
    /// with one is refused when it loads).
    pub fn keys(&self) -> Vec<PublisherKey> {
        self.publishers.iter().filter_map(|s| PublisherKey::parse(s).ok()).collect()
    }

    /// Whether `key` is listed in `publishers`.
    pub fn trusts(&self, key: &PublisherKey) -> bool {
        self.keys().contains(key)
    }
}

/// Problems in `[trust]`: (index into `publishers`, or None for the table,
/// is it an error, message).
pub(super) fn check(trust: &TrustConfig) -> Vec<(Option<usize>, bool, String)> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for (i, p) in trust.publishers.iter().enumerate() {
        match PublisherKey::parse(p) {
            Ok(k) if seen.contains(&k) => out.push((Some(i), false, format!("{k} is listed twice"))),
            Ok(k) => seen.push(k),
            Err(m) => out.push((Some(i), true, m)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_bad_ones_say_why() {
        let k = PublisherKey::from_bytes([7; 32]);
        assert_eq!(PublisherKey::parse(&k.to_string()).unwrap(), k);
        assert!(PublisherKey::parse("ed25519:AAAA").unwrap_err().contains("32 bytes, this one is 3"));
        assert!(PublisherKey::parse("ed25519:!!").unwrap_err().contains("does not decode"));
        let t: TrustConfig = toml::from_str(&format!("publishers = [\"{k}\", \"{k}\", \"x\"]\nunsigned = \"refuse\"")).unwrap();
        assert_eq!(t.unsigned, Unsigned::Refuse);
        assert!(t.trusts(&k));
        let found = check(&t);
        assert_eq!(found.iter().map(|(i, e, _)| (*i, *e)).collect::<Vec<_>>(), vec![(Some(1), false), (Some(2), true)]);
        assert!(toml::from_str::<TrustConfig>("unsigned = \"sometimes\"").is_err());
    }
}
