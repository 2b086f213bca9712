//! Test guest `guest-conn`: a channel whose `poll` runs the script in its
//! configuration against `kata:plugin/connections` (through
//! `kata_sdk::net::Connection`) and returns one message whose text is the
//! transcript, one line per step: `STEP -> ok`, `STEP -> TEXT` or
//! `STEP -> error KIND: MESSAGE`.
//!
//! `config.script` holds steps separated by `|`; `\0` in a step is a NUL
//! byte, `\n` a newline:
//!
//! - `open` (the URL in `config.url`) or `open:URL`, waiting
//!   `config.timeout_ms` (default 5000);
//! - `send:TEXT`: write TEXT and `\r\n`; `raw:TEXT`: write TEXT as is;
//! - `line` or `line:MS`: read a line (default 5000 ms);
//! - `read:MAX` or `read:MAX:MS`: read at most MAX bytes;
//! - `drain`: read until an error, then report the bytes read and the error;
//! - `starttls`; `close`: drop the connection.

use std::time::Duration;

use kata_sdk::net::{Connection, ConnectionError};
use kata_sdk::prelude::*;

/// The scripted channel.
pub struct Conn;

fn kind(e: &ConnectionError) -> &'static str {
    match e {
        ConnectionError::Denied(_) => "denied",
        ConnectionError::Io(_) => "io",
        ConnectionError::Timeout => "timeout",
        ConnectionError::Closed => "closed",
        ConnectionError::TooLarge => "too-large",
    }
}

fn err(e: &ConnectionError) -> String {
    format!("error {}: {e}", kind(e))
}

fn ms(arg: Option<&str>) -> Duration {
    Duration::from_millis(arg.and_then(|a| a.parse().ok()).unwrap_or(5000))
}

fn run(script: &str) -> String {
    let url = config::get("url").unwrap_or_default();
    let open_timeout = ms(config::get("timeout_ms").as_deref());
    let mut conn: Option<Connection> = None;
    let mut out = Vec::new();
    for step in script.split('|') {
        let step = step.replace("\\0", "\0").replace("\\n", "\n");
        let (verb, arg) = match step.split_once(':') {
            Some((v, a)) => (v.to_string(), Some(a.to_string())),
            None => (step.clone(), None),
        };
        let result = match (verb.as_str(), conn.as_mut()) {
            ("open", _) => match Connection::open(arg.as_deref().unwrap_or(&url), open_timeout) {
                Ok(c) => {
                    conn = Some(c);
                    "ok".to_string()
                }
                Err(e) => err(&e),
            },
            ("close", _) => {
                conn = None;
                "ok".to_string()
            }
            (_, None) => "error: not open".to_string(),
            ("send", Some(c)) => c.write_line(arg.as_deref().unwrap_or("")).map_or_else(|e| err(&e), |()| "ok".into()),
            ("raw", Some(c)) => c.write_str(arg.as_deref().unwrap_or("")).map_or_else(|e| err(&e), |()| "ok".into()),
            ("line", Some(c)) => c.read_line(ms(arg.as_deref())).unwrap_or_else(|e| err(&e)),
            ("read", Some(c)) => {
                let a = arg.unwrap_or_default();
                let (max, t) = a.split_once(':').map_or((a.as_str(), None), |(m, t)| (m, Some(t)));
                match c.read(max.parse().unwrap_or(1024), ms(t)) {
                    Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                    Err(e) => err(&e),
                }
            }
            ("drain", Some(c)) => {
                let mut total = 0usize;
                loop {
                    match c.read(65536, Duration::from_secs(5)) {
                        Ok(b) => total += b.len(),
                        Err(e) => break format!("{total} bytes, then {}", err(&e)),
                    }
                }
            }
            ("starttls", Some(c)) => c.start_tls(Duration::from_secs(5)).map_or_else(|e| err(&e), |()| "ok".into()),
            (other, Some(_)) => format!("error: unknown step {other}"),
        };
        out.push(format!("{verb} -> {result}"));
    }
    out.join("\n")
}

impl Channel for Conn {
    fn describe() -> ChannelInfo {
        ChannelInfo::new("conn", env!("CARGO_PKG_VERSION"), vec![IngressMode::Poll])
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(Conn)
    }

    fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let transcript = run(&config::get("script").unwrap_or_default());
        Ok(PollResult { messages: vec![Message::text(format!("run-{}", now_ms()), "c", "conn", transcript)], cursor, next_poll_ms: None })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt::sent(message.idempotency_key))
    }
}

kata_sdk::export_channel!(Conn);
