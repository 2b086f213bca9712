//! Plugin-private persistent state, kept by the host in the workspace database.
//!
//! State survives restarts and is shared by all instances of the plugin. Keys
//! are limited to 256 bytes and values to 1 MiB by the host.
//!
//! ```no_run
//! use kata_sdk::state;
//!
//! let seen = state::get_string("last_seen").unwrap_or_default();
//! state::set_string("last_seen", "42").expect("state write");
//! # let _ = seen;
//! ```

use crate::bindings::kata::plugin::host;

/// Read the bytes stored under `key`, or `None` when it was never set.
pub fn get(key: &str) -> Option<Vec<u8>> {
    host::state_get(key)
}

/// Store `value` under `key`. The error text says why the host refused
/// (key or value too large, database not writable).
pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
    host::state_set(key, value)
}

/// Remove `key`. Removing a key that does not exist is not an error.
pub fn delete(key: &str) {
    host::state_delete(key);
}

/// The keys this plugin stored that start with `prefix` (all keys for `""`),
/// in byte order, at most 1000. Needs a host with `kata:plugin@0.1.1`.
pub fn keys(prefix: &str) -> Vec<String> {
    host::state_keys(prefix)
}

/// Read the value under `key` as UTF-8 text. `None` when the key was never set
/// or its value is not valid UTF-8.
pub fn get_string(key: &str) -> Option<String> {
    get(key).and_then(|bytes| String::from_utf8(bytes).ok())
}

/// Store `value` under `key` as UTF-8 text.
pub fn set_string(key: &str, value: &str) -> Result<(), String> {
    set(key, value.as_bytes())
}
