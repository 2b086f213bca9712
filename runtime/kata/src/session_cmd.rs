//! `kata session list|show`: the agent's sessions, their history and the
//! tokens each used, read from the workspace database (no daemon needed).

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use clap::Subcommand;

use crate::session::{Role, SessionInfo};
use crate::store::Db;
use crate::workspace::Workspace;

/// `kata session …`
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List sessions, newest activity first: key, turns, tokens, last activity.
    List {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: usize,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show a conversation's current session: tokens used, summary and the
    /// newest history entries.
    Show {
        /// The session key, as `kata session list` shows it (e.g. telegram/123456, chat/local).
        key: String,
        /// How many history entries to show.
        #[arg(short = 'n', long, default_value_t = 20)]
        entries: usize,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Run a `kata session` command.
pub fn session(workspace: Option<&Path>, cmd: SessionCommand, out: &mut impl Write) -> Result<()> {
    let ws = Workspace::discover(workspace)?;
    let db = Db::open(&ws.db_path())?;
    match cmd {
        SessionCommand::List { limit, json } => {
            let all = db.sessions(None, limit)?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &all)?;
                writeln!(out)?;
            } else if all.is_empty() {
                writeln!(out, "No sessions yet: the agent has not answered anyone.")?;
            } else {
                let width = all.iter().map(|s| s.key.len()).max().unwrap_or(3).max(3);
                writeln!(
                    out,
                    "{:<width$}  {:>5}  {:>13}  {:>17}  LAST ACTIVE (UTC)",
                    "KEY", "TURNS", "PROMPT TOKENS", "COMPLETION TOKENS"
                )?;
                for s in &all {
                    writeln!(
                        out,
                        "{:<width$}  {:>5}  {:>13}  {:>17}  {}",
                        s.key,
                        s.turns,
                        s.usage.prompt_tokens,
                        s.usage.completion_tokens,
                        when(s.last_active_ms)
                    )?;
                }
            }
        }
        SessionCommand::Show { key, entries, json } => {
            let Some(s) = db.sessions(Some(&key), 1)?.into_iter().next() else {
                bail!("no session has the key {key:?}; `kata session list` shows the keys");
            };
            let mut history = db.session_entries(s.id)?;
            let skip = history.len().saturating_sub(entries);
            let history = history.split_off(skip);
            let earlier = db.sessions(Some(&key), 1000)?.len().saturating_sub(1);
            if json {
                serde_json::to_writer_pretty(
                    &mut *out,
                    &serde_json::json!({"session": s, "earlier_sessions": earlier, "history": history}),
                )?;
                writeln!(out)?;
                return Ok(());
            }
            print_session(&s, earlier, out)?;
            if skip > 0 {
                writeln!(out, "… {skip} earlier entries (-n to show more)")?;
            }
            for h in &history {
                let e = &h.entry;
                let text = match (e.role, &e.tool_calls) {
                    (Role::Assistant, Some(calls)) => format!("(calls tools) {}", one_line(calls, 200)),
                    _ => one_line(&e.content, 200),
                };
                writeln!(out, "  {:<9} {text}", e.role.as_str())?;
            }
        }
    }
    Ok(())
}

fn print_session(s: &SessionInfo, earlier: usize, out: &mut impl Write) -> Result<()> {
    writeln!(out, "Session {} (id {}, from {})", s.key, s.id, s.origin)?;
    writeln!(out, "  started      {}", when(s.created_ms))?;
    writeln!(out, "  last active  {}", when(s.last_active_ms))?;
    writeln!(out, "  turns        {}", s.turns)?;
    writeln!(out, "  tokens       {} prompt + {} completion", s.usage.prompt_tokens, s.usage.completion_tokens)?;
    if earlier > 0 {
        writeln!(out, "  earlier      {earlier} session(s) of this key ended after [agent] idle_timeout")?;
    }
    if let Some(sum) = &s.summary {
        writeln!(out, "  summary      {}", one_line(sum, 300))?;
    }
    Ok(())
}

/// A time in UTC, to the second.
fn when(ms: u64) -> String {
    crate::scheduler::rfc3339(ms)
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() <= max { flat } else { format!("{}…", flat.chars().take(max).collect::<String>()) }
}
