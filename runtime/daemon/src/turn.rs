//! One agent turn: what goes in (the message, the session's history, where
//! tool calls are checked) and what comes out, shared by the [`agent`](crate::agent)
//! and its backends.

use crate::session::{Entry, Usage};
use crate::tools::CallContext;

/// One turn for the agent: the new message and what came before it.
#[derive(Debug, Clone)]
pub struct TurnInput {
    /// The message text.
    pub text: String,
    /// Who wrote it (display name when known).
    pub sender: String,
    /// The channel it came through (`chat` for interactive turns).
    pub channel: String,
    /// The session's summary of compacted history, if any.
    pub summary: Option<String>,
    /// The session's history (oldest first), not including this message.
    pub history: Vec<Entry>,
    /// Where tool calls are checked: session, permission mode, origin.
    pub call: CallContext,
    /// Where a streaming backend puts the reply as it grows (the whole text
    /// so far), to be shown as a draft; None: nobody watches.
    pub draft: Option<tokio::sync::watch::Sender<String>>,
}

/// What a turn produced.
#[derive(Debug, Clone, Default)]
pub struct TurnOutput {
    /// History entries after the user's message: assistant tool-call
    /// requests, tool results, and the final answer.
    pub entries: Vec<Entry>,
    /// The text to send back (None: no reply).
    pub reply: Option<String>,
    /// Tokens the backend reported using for the turn.
    pub usage: Usage,
    /// Files the turn's tool calls handed back (see [`crate::tools`]), sent with the reply.
    pub attachments: Vec<crate::store::OutFile>,
}
