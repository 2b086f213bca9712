//! Test guest `guest-fs-grant`: run with a read-only directory granted at
//! `/data` and a read-write one at `/out`. Each `poll` tries the accesses
//! below through `std::fs` and returns one message whose text has one line
//! per attempt, `<name>: ok <detail>` or `<name>: err <error>`:
//!
//! ```text
//! read-granted:     read /data/hello.txt
//! write-ro:         create /data/new.txt
//! remove-ro:        remove /data/hello.txt
//! mkdir-ro:         create /data/sub
//! dotdot:           read /data/../<outside name>/secret.txt
//! dotdot-rw:        read /out/../data/hello.txt
//! absolute-host:    read <config `outside`>/secret.txt (the real host path)
//! symlink-file:     read /data/escape (a symlink to the outside file)
//! symlink-dir:      read /data/escape-dir/secret.txt (a symlink to the outside dir)
//! write-rw:         write /out/written.txt, then read it back
//! ```
//!
//! Only `read-granted` and `write-rw` may succeed.

use kata_sdk::prelude::*;
use std::fs;

/// The probing channel.
pub struct FsGrant {
    /// The directory outside every grant, as a host path.
    outside: String,
}

fn line<T>(name: &str, r: std::io::Result<T>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => format!("{name}: ok {}", ok(v)),
        Err(e) => format!("{name}: err {e}"),
    }
}

impl Channel for FsGrant {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "fs-grant".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Poll],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(FsGrant { outside: config::require("outside")? })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let outside = self.outside.trim_end_matches('/');
        let outside_name = outside.rsplit('/').next().unwrap_or_default();
        let text = [
            line("read-granted", fs::read_to_string("/data/hello.txt"), |s| s),
            line("write-ro", fs::write("/data/new.txt", "x"), |()| "written".into()),
            line("remove-ro", fs::remove_file("/data/hello.txt"), |()| "removed".into()),
            line("mkdir-ro", fs::create_dir("/data/sub"), |()| "created".into()),
            line("dotdot", fs::read_to_string(format!("/data/../{outside_name}/secret.txt")), |s| s),
            line("dotdot-rw", fs::read_to_string("/out/../data/hello.txt"), |s| s),
            line("absolute-host", fs::read_to_string(format!("{outside}/secret.txt")), |s| s),
            line("symlink-file", fs::read_to_string("/data/escape"), |s| s),
            line("symlink-dir", fs::read_to_string("/data/escape-dir/secret.txt"), |s| s),
            line(
                "write-rw",
                fs::write("/out/written.txt", "written by the plugin").and_then(|()| fs::read_to_string("/out/written.txt")),
                |s| s,
            ),
        ]
        .join("\n");
        let now = now_ms();
        Ok(PollResult {
            messages: vec![Message::text(format!("fs-grant-{now}"), "probe", "fs-grant", text)],
            cursor: None,
            next_poll_ms: None,
        })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: format!("fs-grant-{}", message.idempotency_key), frames: Vec::new() })
    }
}

kata_sdk::export_channel!(FsGrant);
