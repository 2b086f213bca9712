//! Test guest `guest-secret-probe`: each `poll` GETs the URL in config key
//! `url` with `token={{secret:token}}` added to the query and the header
//! `Authorization: Bearer {{secret:token}}`, and returns one message (id
//! `secret-probe-<now_ms>`) whose text is the response body (or `err
//! <error>`). Point it at a server that echoes the request: the host must
//! have replaced both placeholders for a granted host, and the plugin itself
//! only ever held the placeholders.

use kata_sdk::prelude::*;

/// The placeholder the host replaces with the secret `token`.
const PLACEHOLDER: &str = "{{secret:token}}";

/// The probing channel.
pub struct SecretProbe {
    /// The URL with the placeholder in its query.
    url: String,
}

/// `url` with `token=<placeholder>` appended to its query, unless the
/// placeholder is already in it.
fn with_token(url: &str) -> String {
    if url.contains(PLACEHOLDER) {
        return url.to_string();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}token={PLACEHOLDER}")
}

impl Channel for SecretProbe {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "secret-probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Poll],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(SecretProbe { url: with_token(&config::require("url")?) })
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let text = match Request::get(self.url.as_str()).header("authorization", format!("Bearer {PLACEHOLDER}")).send() {
            Ok(response) => response.text(),
            Err(err) => format!("err {err}"),
        };
        let now = now_ms();
        Ok(PollResult {
            messages: vec![Message::text(format!("secret-probe-{now}"), "probe", "secret-probe", text)],
            cursor: None,
            next_poll_ms: None,
        })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: format!("secret-probe-{}", message.idempotency_key), frames: Vec::new() })
    }
}

kata_sdk::export_channel!(SecretProbe);

#[cfg(test)]
mod tests {
    use super::with_token;

    #[test]
    fn token_goes_into_the_query() {
        assert_eq!(with_token("http://h/echo"), "http://h/echo?token={{secret:token}}");
        assert_eq!(with_token("http://h/e?a=1"), "http://h/e?a=1&token={{secret:token}}");
        assert_eq!(with_token("http://h/{{secret:token}}"), "http://h/{{secret:token}}");
    }
}
