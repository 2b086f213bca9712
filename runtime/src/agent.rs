//! Agent backends: what turns an inbound message into a reply.

use crate::policy::{AgentBackend, AgentConfig};
use crate::store::{InboxRow, Reply};

/// An agent that answers messages.
#[derive(Debug, Clone)]
pub enum Agent {
    /// Replies with a template filled from the message.
    Echo {
        /// `{text}`, `{sender}` and `{channel}` are replaced.
        template: String,
    },
}

impl Agent {
    /// The agent the `[agent]` table describes.
    pub fn from_config(cfg: &AgentConfig) -> Self {
        match cfg.backend {
            AgentBackend::Echo => Agent::Echo { template: cfg.template.clone() },
        }
    }

    /// The reply to one line of an interactive session (`kata chat`).
    pub fn chat(&self, session: &str, text: &str) -> Option<String> {
        let row = InboxRow {
            id: 0,
            plugin: "chat".into(),
            origin: Some("chat".into()),
            msg: crate::store::Inbound {
                channel_msg_id: String::new(),
                conversation: session.to_string(),
                thread: None,
                sender: "you".into(),
                sender_name: None,
                text: text.to_string(),
                attachments_json: "[]".into(),
                timestamp_ms: crate::store::now_ms(),
                raw: None,
                group: false,
                mentioned: true,
            },
        };
        self.reply(&row).map(|r| r.text)
    }

    /// The reply to one message (None: no reply).
    pub fn reply(&self, row: &InboxRow) -> Option<Reply> {
        match self {
            Agent::Echo { template } => {
                let sender = row.msg.sender_name.as_deref().unwrap_or(&row.msg.sender);
                // One pass, so text containing "{sender}" is not expanded again.
                let mut text = String::with_capacity(template.len() + row.msg.text.len());
                let mut rest = template.as_str();
                while let Some(i) = rest.find('{') {
                    text.push_str(&rest[..i]);
                    let tail = &rest[i..];
                    let (value, len) = if tail.starts_with("{text}") {
                        (row.msg.text.as_str(), 6)
                    } else if tail.starts_with("{sender}") {
                        (sender, 8)
                    } else if tail.starts_with("{channel}") {
                        (row.plugin.as_str(), 9)
                    } else {
                        ("{", 1)
                    };
                    text.push_str(value);
                    rest = &tail[len..];
                }
                text.push_str(rest);
                if text.is_empty() {
                    return None;
                }
                Some(Reply {
                    plugin: row.plugin.clone(),
                    conversation: row.msg.conversation.clone(),
                    thread: row.msg.thread.clone(),
                    reply_to: Some(row.msg.channel_msg_id.clone()),
                    text,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Inbound;

    fn row(text: &str) -> InboxRow {
        InboxRow {
            id: 1,
            plugin: "telegram".into(),
            msg: Inbound {
                channel_msg_id: "7:1".into(),
                conversation: "7".into(),
                thread: Some("t".into()),
                sender: "42".into(),
                sender_name: Some("ann".into()),
                text: text.into(),
                attachments_json: "[]".into(),
                timestamp_ms: 0,
                raw: None,
                group: false,
                mentioned: false,
            },
            origin: None,
        }
    }

    #[test]
    fn echo_fills_the_template_once() {
        let a = Agent::Echo { template: "{sender} on {channel} said: {text} {unknown}".into() };
        let r = a.reply(&row("hi {sender}")).expect("reply");
        assert_eq!(r.text, "ann on telegram said: hi {sender} {unknown}");
        assert_eq!((r.conversation.as_str(), r.reply_to.as_deref(), r.thread.as_deref()), ("7", Some("7:1"), Some("t")));
        let plain = Agent::Echo { template: "{text}".into() };
        assert_eq!(plain.reply(&row("hello")).expect("reply").text, "hello");
        assert!(plain.reply(&row("")).is_none());
    }
}
