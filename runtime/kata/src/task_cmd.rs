//! `kata task add|list|remove`: scheduled prompts (see [`crate::scheduler`]).
//! These commands only edit the workspace database; a running daemon picks a
//! change up within a second.

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use clap::Subcommand;

use crate::policy::{Policy, Target};
use crate::scheduler::{Schedule, Task, rfc3339};
use crate::store::{Db, now_ms};
use crate::workspace::Workspace;

/// `kata task …`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Schedule a prompt for the agent, posted in a channel conversation as if
    /// you had written it there; the agent's reply goes out through that channel.
    Add {
        /// When: a cron expression in UTC ("0 9 * * MON-FRI", "@daily"), an
        /// interval ("every 30m"), or a one-shot time ("in 2h", "2026-12-24T18:00:00Z").
        schedule: String,
        /// What to tell the agent each time.
        prompt: String,
        /// Where: the channel plugin and conversation, e.g. telegram:123456.
        #[arg(long, value_name = "PLUGIN:CONVERSATION")]
        to: String,
        /// Post in this thread of the conversation.
        #[arg(long, value_name = "THREAD")]
        thread: Option<String>,
    },
    /// List tasks: id, schedule, next run, last run, target (times in UTC).
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Delete a task (a run already posted is still answered).
    Remove {
        /// The task's id, from `kata task list`.
        id: i64,
    },
}

/// A task as `kata task list --json` prints it.
#[derive(serde::Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    task: &'a Task,
    next_run: Option<String>,
    last_run: Option<String>,
}

/// Run a `kata task` command.
pub fn task(workspace: Option<&Path>, cmd: TaskCommand, out: &mut impl Write) -> Result<()> {
    let ws = Workspace::discover(workspace)?;
    match cmd {
        TaskCommand::Add { schedule, prompt, to, thread } => {
            let now = now_ms();
            let target = Target::parse(&to).map_err(|e| anyhow::anyhow!("--to {e}"))?;
            let sched = Schedule::parse(&schedule, now).map_err(anyhow::Error::msg)?;
            let first = sched.first_run(now).map_err(anyhow::Error::msg)?;
            if prompt.trim().is_empty() {
                bail!(
                    "the prompt is empty; give the text the agent should get each time, e.g. kata task add \"every 1h\" \"summarise new mail\" --to {to}"
                );
            }
            check_channel(&ws, &target)?;
            let db = Db::open(&ws.db_path())?;
            let id = db.task_add(&sched.text(), &prompt, &target, thread.as_deref(), first)?;
            writeln!(out, "Added task {id}: {} → {target}; next run {}.", sched.text(), rfc3339(first))?;
        }
        TaskCommand::List { json } => {
            let db = Db::open(&ws.db_path())?;
            let tasks = db.tasks()?;
            if json {
                let rows: Vec<Listed<'_>> = tasks
                    .iter()
                    .map(|t| Listed { task: t, next_run: t.next_run_ms.map(rfc3339), last_run: t.last_run_ms.map(rfc3339) })
                    .collect();
                serde_json::to_writer_pretty(&mut *out, &rows)?;
                writeln!(out)?;
            } else if tasks.is_empty() {
                writeln!(out, "No tasks. Add one with: kata task add \"every 1h\" \"PROMPT\" --to CHANNEL:CONVERSATION")?;
            } else {
                print_table(&tasks, out)?;
            }
        }
        TaskCommand::Remove { id } => {
            let db = Db::open(&ws.db_path())?;
            if !db.task_remove(id)? {
                bail!("there is no task {id} in this workspace; `kata task list` shows the tasks and their ids");
            }
            writeln!(out, "Removed task {id}.")?;
        }
    }
    Ok(())
}

fn print_table(tasks: &[Task], out: &mut impl Write) -> Result<()> {
    let schedule_w = tasks.iter().map(|t| t.schedule.chars().count()).max().unwrap_or(0).max(8);
    let target_w = tasks.iter().map(|t| t.target.to_string().chars().count()).max().unwrap_or(0).max(6);
    writeln!(out, "{:<4} {:<schedule_w$} {:<20} {:<20} {:<target_w$} PROMPT", "ID", "SCHEDULE", "NEXT RUN", "LAST RUN", "TARGET")?;
    for t in tasks {
        let next = t.next_run_ms.map_or_else(|| "- (done)".to_string(), rfc3339);
        let last = t.last_run_ms.map_or_else(|| "-".to_string(), rfc3339);
        let mut target = t.target.to_string();
        if let Some(th) = &t.thread {
            target.push_str(&format!(" #{th}"));
        }
        let mut prompt: String = t.prompt.chars().filter(|c| !c.is_control()).take(50).collect();
        if t.prompt.chars().count() > 50 {
            prompt.push('…');
        }
        if let Some(owner) = &t.owner {
            prompt.push_str(&format!(" (by plugin {owner})"));
        }
        writeln!(out, "{:<4} {:<schedule_w$} {next:<20} {last:<20} {target:<target_w$} {prompt}", t.id, t.schedule)?;
    }
    Ok(())
}

/// The target must be a channel plugin of this workspace, or the reply could
/// never be delivered.
fn check_channel(ws: &Workspace, target: &Target) -> Result<()> {
    let policy = Policy::load(&ws.policy_path(), ws.root())?;
    let Some(grants) = policy.plugins.get(&target.plugin) else {
        let channels: Vec<&str> = policy.plugins.keys().map(String::as_str).collect();
        let have = if channels.is_empty() { "it has no plugins yet".to_string() } else { format!("it has {}", channels.join(", ")) };
        bail!(
            "--to {target}: there is no plugin {:?} in {} ({have}), so the agent's replies could not be delivered; \
             name a channel plugin of this workspace, e.g. --to {}:CONVERSATION",
            target.plugin,
            policy.path.display(),
            channels.first().copied().unwrap_or("telegram")
        );
    };
    if let Some(path) = &grants.path
        && let Ok(bytes) = std::fs::read(path)
        && let Ok(info) = crate::plugin::inspect(&bytes, &path.display().to_string())
        && let Some(kind) = crate::install::Kind::of(&info)
        && kind != crate::install::Kind::Channel
    {
        bail!(
            "--to {target}: plugin {} is a {} plugin, not a channel, so it cannot deliver the agent's replies; name a channel plugin",
            target.plugin,
            kind.as_str()
        );
    }
    if !grants.enabled {
        tracing::warn!("plugin {} is disabled (enabled = false): the task's replies wait until it is enabled", target.plugin);
    }
    Ok(())
}
