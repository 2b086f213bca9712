//! Test guest `guest-forbidden-host`: each `poll` does an HTTP GET to the URL
//! in config key `url` and returns one message (id `probe-<now_ms>`) whose
//! text is `ok <status>` when a response came back or `err <error>` (the
//! SDK's `HttpError` display, e.g. `err request to http://x/ was denied by
//! the workspace policy`) when it did not. A test reads the text to see
//! whether the host's network policy let the request through.

use kata_sdk::prelude::*;

/// The probing channel.
pub struct ForbiddenHost {
    /// The URL to fetch.
    url: String,
}

impl Channel for ForbiddenHost {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "forbidden-host".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Poll],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(ForbiddenHost { url: config::require("url")? })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let text = match Request::get(self.url.as_str()).send() {
            Ok(response) => format!("ok {}", response.status),
            Err(err) => format!("err {err}"),
        };
        let now = now_ms();
        Ok(PollResult {
            messages: vec![Message::text(format!("probe-{now}"), "probe", "forbidden-host", text)],
            cursor: None,
            next_poll_ms: None,
        })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: format!("forbidden-host-{}", message.idempotency_key), frames: Vec::new() })
    }
}

kata_sdk::export_channel!(ForbiddenHost);
