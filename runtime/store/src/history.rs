//! A session's history as stored: who said what ([`Entry`], [`Role`]), and
//! appending one turn inside the caller's transaction — the piece of
//! sessions that [`Db::complete_turn`](crate::store::Db::complete_turn)
//! writes together with the inbox and outbox (the rest of sessions is in
//! [`crate::session`]).

use anyhow::Result;
use rusqlite::params;
use serde::{Deserialize, Serialize};

use kata_policy::util::now_ms;

/// Who said a history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person (or a scheduled prompt).
    User,
    /// The agent: an answer, or a request to call tools.
    Assistant,
    /// The result of one tool call.
    Tool,
}

impl Role {
    /// The name stored and sent to chat APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    pub(crate) fn parse(s: &str) -> Role {
        match s {
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => Role::User,
        }
    }
}

/// One entry of a session's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Who said it.
    pub role: Role,
    /// The text (for a tool entry: the tool's result).
    pub content: String,
    /// For an assistant entry that calls tools: the calls, as the chat API's
    /// JSON array (`[{"id", "type": "function", "function": {"name", "arguments"}}]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<String>,
    /// For a tool entry: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Entry {
    /// A message from the person.
    pub fn user(text: &str) -> Self {
        Self { role: Role::User, content: text.into(), tool_calls: None, tool_call_id: None }
    }

    /// An answer from the agent.
    pub fn assistant(text: &str) -> Self {
        Self { role: Role::Assistant, content: text.into(), tool_calls: None, tool_call_id: None }
    }

    /// Characters it costs in the history budget.
    pub fn size(&self) -> usize {
        self.content.chars().count() + self.tool_calls.as_ref().map_or(0, |c| c.chars().count())
    }
}

/// Append one turn's entries to a session's history inside `tx` (the caller
/// commits it together with the inbox and outbox changes).
pub(crate) fn append_turn(tx: &rusqlite::Connection, session_id: i64, inbox_id: Option<i64>, user: &Entry, rest: &[Entry]) -> Result<()> {
    let now = now_ms() as i64;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO history (session_id, turn, inbox_id, role, content, tool_calls, tool_call_id, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    stmt.execute(params![session_id, 0, inbox_id, user.role.as_str(), user.content, user.tool_calls, user.tool_call_id, now])?;
    let turn = tx.last_insert_rowid();
    tx.prepare_cached("UPDATE history SET turn = ?1 WHERE id = ?1")?.execute([turn])?;
    for e in rest {
        stmt.execute(params![session_id, turn, inbox_id, e.role.as_str(), e.content, e.tool_calls, e.tool_call_id, now])?;
    }
    tx.prepare_cached("UPDATE sessions SET last_active_ms = MAX(last_active_ms, ?2) WHERE id = ?1")?.execute(params![session_id, now])?;
    Ok(())
}
