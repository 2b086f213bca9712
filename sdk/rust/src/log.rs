//! Write lines to the kata daemon's log, tagged with the plugin's name.
//!
//! ```no_run
//! kata_sdk::log::info("connected");
//! kata_sdk::log::warn(&format!("retrying after {} ms", 500));
//! ```
//!
//! Never log secrets. The plugin never sees secret values anyway: it only
//! ever holds `{{secret:NAME}}` placeholders.

use crate::LogLevel;
use crate::bindings::kata::plugin::host;

/// Log `message` at `level`.
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// Log a very detailed trace line.
pub fn trace(message: &str) {
    log(LogLevel::Trace, message);
}

/// Log a debugging line.
pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}

/// Log an informational line.
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

/// Log a warning.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

/// Log an error.
pub fn error(message: &str) {
    log(LogLevel::Error, message);
}
