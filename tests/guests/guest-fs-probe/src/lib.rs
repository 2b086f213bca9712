//! Test guest `guest-fs-probe`: each `poll` tries a few file system accesses
//! through `std::fs` and returns one message (id `fs-probe-<now_ms>`) whose
//! text has one line per attempt: `<attempt>: ok <what it got>` or
//! `<attempt>: err <error>`. The attempts, in order:
//!
//! ```text
//! read_to_string(/etc/passwd): ...
//! read_dir(/): ...
//! read_dir(.): ...
//! read_to_string(../Cargo.toml): ...
//! ```
//!
//! With no directory granted every line should be an `err`.

use kata_sdk::prelude::*;
use std::fs;
use std::io;

/// How many directory entries a successful `read_dir` line lists.
const MAX_ENTRIES: usize = 20;

/// The probing channel.
pub struct FsProbe;

/// One line for a `read_to_string` attempt.
fn probe_read(path: &str) -> String {
    match fs::read_to_string(path) {
        Ok(text) => format!("read_to_string({path}): ok {} bytes", text.len()),
        Err(err) => format!("read_to_string({path}): err {err}"),
    }
}

/// One line for a `read_dir` attempt, naming the first entries it found.
fn probe_dir(path: &str) -> String {
    let listed = fs::read_dir(path).and_then(|entries| {
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        io::Result::Ok(names)
    });
    match listed {
        Ok(mut names) => {
            names.sort();
            let total = names.len();
            names.truncate(MAX_ENTRIES);
            format!("read_dir({path}): ok {total} entries: {}", names.join(", "))
        }
        Err(err) => format!("read_dir({path}): err {err}"),
    }
}

impl Channel for FsProbe {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "fs-probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Poll],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(FsProbe)
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let text = [probe_read("/etc/passwd"), probe_dir("/"), probe_dir("."), probe_read("../Cargo.toml")].join("\n");
        let now = now_ms();
        Ok(PollResult {
            messages: vec![Message::text(format!("fs-probe-{now}"), "probe", "fs-probe", text)],
            cursor: None,
            next_poll_ms: None,
        })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: format!("fs-probe-{}", message.idempotency_key), frames: Vec::new() })
    }
}

kata_sdk::export_channel!(FsProbe);
