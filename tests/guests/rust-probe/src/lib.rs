//! Test guest `rust-probe`: the Rust row of `tests/languages.rs`. Every
//! language kata has a template for ships the same probe
//! (`tests/guests/<lang>-probe/`), so one table-driven test shows the same
//! sandbox guarantees in every language.
//!
//! Each `poll` reads config `probe` and returns one message (id
//! `probe-<now_ms>`, conversation and sender `probe`) whose text is:
//!
//! - `http`: GET config `url` → `http: ok <status> <body>` or `http: err <error>`
//! - `file`: read config `path` → `file: ok <n> bytes` or `file: err <error>`
//! - `secret`: GET `url` with `token={{secret:token}}` in the query and the
//!   header `Authorization: Bearer {{secret:token}}` → `secret: ok <status>
//!   <body>` or `secret: err <error>`, also written to the log
//! - `spin`: burns CPU forever; `bomb`: allocates 1 MiB blocks forever
//! - anything else: `unknown probe <value>`

use kata_sdk::prelude::*;

/// The placeholder the host replaces with the secret `token`.
const PLACEHOLDER: &str = "{{secret:token}}";

/// The probing channel.
pub struct Probe;

/// `url` with `token=<placeholder>` appended to its query.
fn with_token(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}token={PLACEHOLDER}")
}

fn get(what: &str, url: &str, auth: bool) -> String {
    let mut request = Request::get(url);
    if auth {
        request = request.header("authorization", format!("Bearer {PLACEHOLDER}"));
    }
    match request.send() {
        Ok(response) => format!("{what}: ok {} {}", response.status, response.text()),
        Err(err) => format!("{what}: err {err}"),
    }
}

fn run(probe: &str) -> String {
    match probe {
        "http" => get("http", &config::get("url").unwrap_or_default(), false),
        "file" => match std::fs::read(config::get("path").unwrap_or_default()) {
            Ok(bytes) => format!("file: ok {} bytes", bytes.len()),
            Err(err) => format!("file: err {err}"),
        },
        "secret" => {
            let text = get("secret", &with_token(&config::get("url").unwrap_or_default()), true);
            kata_sdk::log::info(&text);
            text
        }
        "spin" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "bomb" => {
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut block = vec![0u8; 1 << 20];
                block[(blocks.len() * 7) % (1 << 20)] = 1;
                blocks.push(std::hint::black_box(block));
            }
        }
        other => format!("unknown probe {other}"),
    }
}

impl Channel for Probe {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "rust-probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Poll],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(Probe)
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let text = run(&config::get("probe").unwrap_or_default());
        Ok(PollResult {
            messages: vec![Message::text(format!("probe-{}", now_ms()), "probe", "probe", text)],
            cursor: None,
            next_poll_ms: None,
        })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: format!("sent-{}", message.idempotency_key), frames: Vec::new() })
    }
}

kata_sdk::export_channel!(Probe);
