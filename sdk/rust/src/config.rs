//! Read the plugin's non-secret configuration: the
//! `[plugins.NAME] config = { ... }` table in kata.toml.
//!
//! Secrets are never returned here. Write `{{secret:NAME}}` in a URL or
//! header instead and the host fills the value in for granted hosts.
//!
//! ```no_run
//! use kata_sdk::config;
//!
//! # fn f() -> Result<(), kata_sdk::ChannelError> {
//! let base = config::get("api_base").unwrap_or_else(|| "https://example.org".into());
//! let timeout: u32 = config::get_or("poll_timeout_s", 25)?;
//! let room = config::require("room")?;
//! # let _ = (base, timeout, room); Ok(()) }
//! ```

use crate::ChannelError;
use crate::bindings::kata::plugin::host;
use std::fmt::Display;
use std::str::FromStr;

/// The value of `key` as text, or `None` when it is not set.
pub fn get(key: &str) -> Option<String> {
    host::config_get(key)
}

/// The value of `key`, or [`ChannelError::InvalidConfig`] naming the key when
/// it is not set or empty.
pub fn require(key: &str) -> Result<String, ChannelError> {
    match get(key) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(ChannelError::InvalidConfig(format!("config key `{key}` is required but not set"))),
    }
}

/// The value of `key` parsed as `T`, or `default` when it is not set.
///
/// A value that is set but does not parse is an error
/// ([`ChannelError::InvalidConfig`] naming the key), not silently replaced by
/// the default.
pub fn get_or<T>(key: &str, default: T) -> Result<T, ChannelError>
where
    T: FromStr,
    T::Err: Display,
{
    match get(key) {
        Some(raw) => parse_value(key, &raw),
        None => Ok(default),
    }
}

/// Parse the text `raw` of config key `key` as `T` (surrounding whitespace is
/// ignored). Useful for testing configuration handling natively.
pub fn parse_value<T>(key: &str, raw: &str) -> Result<T, ChannelError>
where
    T: FromStr,
    T::Err: Display,
{
    raw.trim()
        .parse::<T>()
        .map_err(|e| ChannelError::InvalidConfig(format!("config key `{key}` has value {raw:?}, which is not valid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_value_accepts_and_rejects() {
        assert_eq!(parse_value::<u32>("t", " 25 "), Ok(25));
        let err = parse_value::<u32>("t", "soon").unwrap_err();
        assert!(matches!(err, ChannelError::InvalidConfig(ref m) if m.contains("`t`")));
    }
}
