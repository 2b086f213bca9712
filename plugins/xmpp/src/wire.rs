//! The byte stream under XMPP: a small [`Transport`] trait, implemented by
//! the plugin over the host's `connection` and by the unit tests over a script.

use kata_sdk::ChannelError;

/// Why reading or writing failed (the host's `connection-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// The workspace policy refused the destination or a secret.
    Denied(String),
    /// Connecting, TLS or I/O failed.
    Io(String),
    /// Nothing arrived in time.
    Timeout,
    /// The peer closed the connection.
    Closed,
    /// The plugin's read budget (`limits.max_response`) is used up.
    TooLarge,
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Denied(why) => write!(f, "denied: {why}"),
            NetError::Io(why) => write!(f, "{why}"),
            NetError::Timeout => write!(f, "timed out"),
            NetError::Closed => write!(f, "the server closed the connection"),
            NetError::TooLarge => write!(f, "more data than limits.max_response allows"),
        }
    }
}

impl NetError {
    /// The channel error for a failure talking to `what` (e.g. "IMAP server
    /// tcp://…"): a denial is a configuration problem (the text names the
    /// kata.toml line), the rest is a network problem the host retries.
    pub fn channel(&self, what: &str) -> ChannelError {
        match self {
            NetError::Denied(why) => ChannelError::InvalidConfig(format!("{what}: {why}")),
            NetError::TooLarge => ChannelError::Network(format!("{what}: {self}; raise [plugins.NAME] limits.max_response")),
            _ => ChannelError::Network(format!("{what}: {self}")),
        }
    }
}

/// A connection: bytes in, bytes out, and the switch to TLS.
pub trait Transport {
    /// Write all of `data` (the host fills `{{secret:…}}` and `{{base64:…}}`).
    fn write(&mut self, data: &[u8]) -> Result<(), NetError>;
    /// Whatever has arrived, at most `max` bytes, waiting at most
    /// `timeout_ms` for the first byte; never empty.
    fn read(&mut self, max: u32, timeout_ms: u32) -> Result<Vec<u8>, NetError>;
    /// Upgrade to TLS in place (after the protocol's STARTTLS was answered).
    fn start_tls(&mut self, timeout_ms: u32) -> Result<(), NetError>;
}

/// A scripted peer for unit tests: what it "sends" is queued up front (the
/// protocols here are lock-step), what the client writes is recorded.
#[cfg(test)]
pub mod script {
    use super::*;
    use std::collections::VecDeque;

    /// The scripted server.
    #[derive(Default)]
    pub struct Script {
        /// Chunks the server sends, in order.
        pub incoming: VecDeque<Vec<u8>>,
        /// Everything the client wrote.
        pub written: Vec<u8>,
        /// Whether start_tls was called.
        pub tls: bool,
    }

    impl Script {
        /// A server that will send `text` (in one go).
        pub fn new(text: &str) -> Self {
            Script { incoming: VecDeque::from(vec![text.as_bytes().to_vec()]), ..Default::default() }
        }

        /// A server that sends each of `turns` when asked (a read never
        /// runs from one turn into the next).
        pub fn turns(turns: &[&str]) -> Self {
            Script { incoming: turns.iter().map(|t| t.as_bytes().to_vec()).collect(), ..Default::default() }
        }

        /// What the client wrote, as text.
        pub fn sent(&self) -> String {
            String::from_utf8_lossy(&self.written).into_owned()
        }
    }

    impl Transport for Script {
        fn write(&mut self, data: &[u8]) -> Result<(), NetError> {
            self.written.extend_from_slice(data);
            Ok(())
        }
        fn read(&mut self, max: u32, _timeout_ms: u32) -> Result<Vec<u8>, NetError> {
            let Some(mut chunk) = self.incoming.pop_front() else { return Err(NetError::Closed) };
            // Hand out small pieces to exercise reassembly, never past a
            // line end (a real server says nothing until it is answered).
            let line_end = chunk.iter().position(|&b| b == b'\n').map_or(chunk.len(), |p| p + 1);
            let n = chunk.len().min(max as usize).min(7).min(line_end);
            let rest = chunk.split_off(n);
            if !rest.is_empty() {
                self.incoming.push_front(rest);
            }
            Ok(chunk)
        }
        fn start_tls(&mut self, _timeout_ms: u32) -> Result<(), NetError> {
            self.tls = true;
            Ok(())
        }
    }
}
