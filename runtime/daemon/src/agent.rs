//! Agent backends: what turns a message (and the session's history) into a
//! reply. `echo` fills a template; `openai` talks to any OpenAI-compatible
//! chat completions endpoint and routes tool calls to tool plugins (see
//! [`crate::openai`] and [`crate::tools`]); `command` runs any CLI agent
//! once per turn (see [`crate::command`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

pub use kata_policy::agent::{SettingKey, Settings, check_pattern};

pub use crate::turn::{TurnInput, TurnOutput};

use crate::policy::AgentBackend;
use crate::session::Entry;
use crate::tools::ToolBox;

/// An agent that answers messages.
#[derive(Clone)]
pub enum Agent {
    /// Replies with a template filled from the message.
    Echo {
        /// `{text}`, `{sender}` and `{channel}` are replaced.
        template: String,
    },
    /// An OpenAI-compatible chat completions endpoint with tool calling.
    OpenAi(Arc<crate::openai::OpenAi>),
    /// A CLI agent run once per turn.
    Command(Arc<crate::command::CommandAgent>),
}

impl Agent {
    /// The agent the settings describe; `tools` are the tools it may call.
    /// Fails when the API key cannot be read or the command cannot be found.
    pub fn new(settings: &Settings, workspace: &Path, tools: Arc<ToolBox>) -> Result<Self> {
        Ok(match settings.backend {
            AgentBackend::Echo => Agent::Echo { template: settings.template.clone() },
            AgentBackend::Openai => Agent::OpenAi(Arc::new(crate::openai::OpenAi::new(settings, workspace, tools)?)),
            AgentBackend::Command => Agent::Command(Arc::new(crate::command::CommandAgent::new(settings, workspace)?)),
        })
    }

    /// Whether the backend reads the session's history (echo does not).
    pub fn uses_history(&self) -> bool {
        matches!(self, Agent::OpenAi(_) | Agent::Command(_))
    }

    /// Whether the backend can summarise history (otherwise compaction truncates).
    pub fn can_summarize(&self) -> bool {
        matches!(self, Agent::OpenAi(_))
    }

    /// Summarise `previous` (an earlier summary) and `entries` into a short
    /// text; also returns the tokens it cost.
    pub async fn summarize(&self, previous: Option<&str>, entries: &[Entry]) -> Result<(String, crate::session::Usage)> {
        match self {
            Agent::Echo { .. } | Agent::Command(_) => anyhow::bail!("this backend cannot summarise"),
            Agent::OpenAi(o) => o.summarize(previous, entries).await,
        }
    }

    /// Run one turn.
    pub async fn turn(&self, input: TurnInput) -> Result<TurnOutput> {
        match self {
            Agent::Echo { template } => {
                let text = fill(template, &input.text, &input.sender, &input.channel);
                if text.is_empty() {
                    return Ok(TurnOutput::default());
                }
                Ok(TurnOutput { entries: vec![Entry::assistant(&text)], reply: Some(text), ..Default::default() })
            }
            Agent::OpenAi(o) => o.turn(input).await,
            Agent::Command(c) => c.turn(input).await,
        }
    }
}

/// Fill an echo template in one pass, so text containing "{sender}" is not
/// expanded again.
pub fn fill(template: &str, message: &str, sender: &str, channel: &str) -> String {
    let mut text = String::with_capacity(template.len() + message.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        text.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (value, len) = if tail.starts_with("{text}") {
            (message, 6)
        } else if tail.starts_with("{sender}") {
            (sender, 8)
        } else if tail.starts_with("{channel}") {
            (channel, 9)
        } else {
            ("{", 1)
        };
        text.push_str(value);
        rest = &tail[len..];
    }
    text.push_str(rest);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_fills_the_template_once() {
        assert_eq!(
            fill("{sender} on {channel} said: {text} {unknown}", "hi {sender}", "ann", "telegram"),
            "ann on telegram said: hi {sender} {unknown}"
        );
        assert_eq!(fill("{text}", "hello", "a", "b"), "hello");
        assert_eq!(fill("{text}", "", "a", "b"), "");
    }
}
