//! Request/response connections over TCP or TLS, for protocols that are not
//! HTTP (SMTP and IMAP for e-mail, XMPP), through the host's
//! `kata:plugin/connections` interface.
//!
//! ```no_run
//! use std::time::Duration;
//! use kata_sdk::net::Connection;
//!
//! # fn f() -> Result<(), kata_sdk::net::ConnectionError> {
//! let t = Duration::from_secs(10);
//! let mut smtp = Connection::open("tcp://mail.example.org:587", t)?;
//! let greeting = smtp.read_line(t)?; // "220 mail.example.org ESMTP"
//! smtp.write_line("EHLO kata")?;
//! # let _ = greeting;
//! // … read the EHLO lines, then:
//! smtp.write_line("STARTTLS")?;
//! smtp.read_line(t)?; // "220 go ahead"
//! smtp.start_tls(t)?;
//! // The secret never reaches the plugin: the host fills it in, then base64s it.
//! smtp.write_line("AUTH PLAIN {{base64:\0kata@example.org\0{{secret:smtp_password}}}}")?;
//! # Ok(()) }
//! ```
//!
//! ## Policy and secrets
//!
//! The host opens a connection only to a destination granted in kata.toml,
//! written `tcp://host:port` or `tls://host:port` in the plugin's `network`
//! list; the name is resolved and every address checked (a loopback or
//! private address needs `private = true`). A refused one fails with
//! [`ConnectionError::Denied`], whose text names the kata.toml line to add.
//! TLS (and [`Connection::start_tls`]) is done by the host, verifying the
//! certificate for the URL's host name.
//!
//! What you write may hold `{{secret:NAME}}` placeholders for secrets granted
//! for this destination, and `{{base64:…}}`, replaced (after the secrets)
//! with the base64 of what is between the braces — SASL PLAIN and SMTP
//! `AUTH PLAIN` send credentials that way. Secret values in what you read
//! arrive redacted. Everything read from one connection counts against the
//! plugin's `limits.max_response` ([`ConnectionError::TooLarge`] once spent).
//!
//! A connection is closed when the [`Connection`] is dropped, and when the
//! instance that opened it ends: keep what must outlive a call in
//! [`state`](crate::state), not the connection.

use std::fmt;
use std::time::Duration;

use crate::ChannelError;
use crate::bindings::kata::plugin::connections as raw;

/// Why a connection operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionError {
    /// The workspace policy refused the destination or a placeholder; the
    /// text says why and names the kata.toml line that would allow it.
    Denied(String),
    /// Connecting, TLS or I/O failed (refused, reset, a bad certificate).
    Io(String),
    /// Nothing arrived (or could be written) within the timeout.
    Timeout,
    /// The peer closed the connection; nothing more can be read.
    Closed,
    /// The plugin's `limits.max_response` read budget for this connection
    /// is used up.
    TooLarge,
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Denied(m) => write!(f, "refused by the workspace policy: {m}"),
            ConnectionError::Io(m) => f.write_str(m),
            ConnectionError::Timeout => f.write_str("timed out"),
            ConnectionError::Closed => f.write_str("the peer closed the connection"),
            ConnectionError::TooLarge => {
                f.write_str("this connection read all the plugin may read from one connection (limits.max_response)")
            }
        }
    }
}

impl std::error::Error for ConnectionError {}

impl From<raw::ConnectionError> for ConnectionError {
    fn from(e: raw::ConnectionError) -> ConnectionError {
        match e {
            raw::ConnectionError::Denied(m) => ConnectionError::Denied(m),
            raw::ConnectionError::Io(m) => ConnectionError::Io(m),
            raw::ConnectionError::Timeout => ConnectionError::Timeout,
            raw::ConnectionError::Closed => ConnectionError::Closed,
            raw::ConnectionError::TooLarge => ConnectionError::TooLarge,
        }
    }
}

/// A refused destination is a configuration problem the user fixes in
/// kata.toml; a spent read budget will not get better by retrying; the rest
/// are network trouble the host retries.
impl From<ConnectionError> for ChannelError {
    fn from(e: ConnectionError) -> ChannelError {
        match e {
            ConnectionError::Denied(_) => ChannelError::InvalidConfig(e.to_string()),
            ConnectionError::TooLarge => ChannelError::Fatal(e.to_string()),
            _ => ChannelError::Network(e.to_string()),
        }
    }
}

/// Milliseconds for the host, saturating.
fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// An open TCP or TLS connection. Dropping it closes it.
pub struct Connection {
    inner: raw::Connection,
    url: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Connection {
    /// Connect to `url`, `tcp://host:port` or `tls://host:port`, waiting at
    /// most `timeout` (the host also caps it by the call's own timeout).
    pub fn open(url: &str, timeout: Duration) -> Result<Connection, ConnectionError> {
        let inner = raw::Connection::open(url, ms(timeout))?;
        Ok(Connection { inner, url: url.to_string() })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Write all of `data` (placeholders filled in by the host, see the
    /// [module docs](self)). A placeholder for a secret not granted here is
    /// [`ConnectionError::Denied`], and nothing is written.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ConnectionError> {
        Ok(self.inner.write(data)?)
    }

    /// Write `text` as it is.
    pub fn write_str(&mut self, text: &str) -> Result<(), ConnectionError> {
        self.write(text.as_bytes())
    }

    /// Write `line` and `\r\n` in one write.
    pub fn write_line(&mut self, line: &str) -> Result<(), ConnectionError> {
        let mut data = Vec::with_capacity(line.len() + 2);
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
        self.write(&data)
    }

    /// Read one line, without its `\r\n` or `\n`, waiting at most `timeout`.
    /// Invalid UTF-8 is replaced; a line longer than the plugin's
    /// `limits.max_message` is an [`ConnectionError::Io`] error.
    pub fn read_line(&mut self, timeout: Duration) -> Result<String, ConnectionError> {
        Ok(self.inner.read_line(ms(timeout))?)
    }

    /// Read what has arrived, at most `max` bytes (and at most 64 KiB),
    /// waiting at most `timeout` for the first byte. Never empty: nothing
    /// arriving is [`ConnectionError::Timeout`], an orderly close
    /// [`ConnectionError::Closed`].
    pub fn read(&mut self, max: usize, timeout: Duration) -> Result<Vec<u8>, ConnectionError> {
        Ok(self.inner.read(u32::try_from(max).unwrap_or(u32::MAX), ms(timeout))?)
    }

    /// Upgrade a `tcp://` connection to TLS in place (STARTTLS), after the
    /// protocol's own command was answered. The certificate is verified for
    /// the host name of the URL.
    pub fn start_tls(&mut self, timeout: Duration) -> Result<(), ConnectionError> {
        Ok(self.inner.start_tls(ms(timeout))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_sentences_and_map_to_channel_errors() {
        let denied = ConnectionError::Denied("add `network = [\"tls://imap.example.org:993\"]`".into());
        assert!(denied.to_string().starts_with("refused by the workspace policy: add"));
        assert!(matches!(ChannelError::from(denied), ChannelError::InvalidConfig(_)));
        assert!(matches!(ChannelError::from(ConnectionError::Timeout), ChannelError::Network(m) if m == "timed out"));
        assert!(matches!(ChannelError::from(ConnectionError::TooLarge), ChannelError::Fatal(_)));
        assert_eq!(ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
