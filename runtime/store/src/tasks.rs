//! The `tasks` table: scheduled prompts (see kata-daemon's `scheduler` for
//! schedules and the loop that runs them).

use anyhow::Result;
use kata_policy::policy::Target;
use rusqlite::{OptionalExtension, params};

use crate::store::{Db, Inbound, now_ms};

/// A stored task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Task {
    /// Its id (what `kata task remove` takes).
    pub id: i64,
    /// The schedule, in canonical form.
    pub schedule: String,
    /// The prompt posted to the agent.
    pub prompt: String,
    /// The channel conversation it is posted in.
    pub target: Target,
    /// The thread in that conversation, if any.
    pub thread: Option<String>,
    /// The next run (ms since the Unix epoch); None once a one-shot task ran.
    pub next_run_ms: Option<u64>,
    /// The last run, if any.
    pub last_run_ms: Option<u64>,
    /// How many times it ran.
    pub runs: u64,
    /// The plugin that created it through the `scheduler` host interface
    /// (None: `kata task add`). A plugin sees and cancels only its own.
    pub owner: Option<String>,
}

fn row_to_task(r: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: r.get(0)?,
        schedule: r.get(1)?,
        prompt: r.get(2)?,
        target: Target { plugin: r.get(3)?, conversation: r.get(4)? },
        thread: r.get(5)?,
        next_run_ms: r.get::<_, Option<i64>>(6)?.map(|v| v.max(0) as u64),
        last_run_ms: r.get::<_, Option<i64>>(7)?.map(|v| v.max(0) as u64),
        runs: r.get::<_, i64>(8)?.max(0) as u64,
        owner: r.get(9)?,
    })
}

const TASK_COLUMNS: &str = "id, schedule, prompt, plugin, conversation, thread, next_run_ms, last_run_ms, runs, owner";

impl Db {
    /// Store a new task (`schedule` in canonical form) that first runs at
    /// `first_run_ms`; returns its id.
    pub fn task_add(&self, schedule: &str, prompt: &str, target: &Target, thread: Option<&str>, first_run_ms: u64) -> Result<i64> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO tasks (schedule, prompt, plugin, conversation, thread, next_run_ms, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![schedule, prompt, target.plugin, target.conversation, thread, first_run_ms as i64, now_ms() as i64],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// [`Self::task_add`] for plugin `owner` (the `scheduler` host
    /// interface), unless `owner` already has `max` tasks scheduled — checked
    /// in the same transaction. Returns the new task, or None at the limit.
    #[allow(clippy::too_many_arguments)]
    pub fn task_add_owned(
        &self,
        owner: &str,
        max: u32,
        schedule: &str,
        prompt: &str,
        target: &Target,
        thread: Option<&str>,
        first_run_ms: u64,
    ) -> Result<Option<Task>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n: i64 = tx.query_row("SELECT COUNT(*) FROM tasks WHERE owner = ?1 AND next_run_ms IS NOT NULL", [owner], |r| r.get(0))?;
        if n >= i64::from(max) {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO tasks (schedule, prompt, plugin, conversation, thread, next_run_ms, created_ms, owner)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![schedule, prompt, target.plugin, target.conversation, thread, first_run_ms as i64, now_ms() as i64, owner],
        )?;
        let id = tx.last_insert_rowid();
        let task = tx.query_row(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"), [id], row_to_task)?;
        tx.commit()?;
        Ok(Some(task))
    }

    /// The tasks plugin `owner` created that are still scheduled, by id.
    pub fn tasks_of(&self, owner: &str) -> Result<Vec<Task>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE owner = ?1 AND next_run_ms IS NOT NULL ORDER BY id"))?;
        let rows = stmt.query_map([owner], row_to_task)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether anyone has written to the agent in `conversation` of channel `plugin`.
    pub fn conversation_known(&self, plugin: &str, conversation: &str) -> Result<bool> {
        let n: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM (SELECT 1 FROM inbox WHERE plugin = ?1 AND conversation = ?2 AND origin IS NULL LIMIT 1)",
            params![plugin, conversation],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Delete task `id` if plugin `owner` created it; returns whether it did.
    pub fn task_remove_owned(&self, owner: &str, id: i64) -> Result<bool> {
        Ok(self.lock().execute("DELETE FROM tasks WHERE id = ?1 AND owner = ?2", params![id, owner])? == 1)
    }

    /// Every task, by id.
    pub fn tasks(&self) -> Result<Vec<Task>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY id"))?;
        let rows = stmt.query_map([], row_to_task)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Delete a task; returns whether it existed. A run already in the inbox
    /// is still answered.
    pub fn task_remove(&self, id: i64) -> Result<bool> {
        Ok(self.lock().execute("DELETE FROM tasks WHERE id = ?1", [id])? == 1)
    }

    /// When the next task is due, if any is scheduled.
    pub fn next_task_due(&self) -> Result<Option<u64>> {
        let v: Option<i64> = self.lock().query_row("SELECT MIN(next_run_ms) FROM tasks WHERE next_run_ms IS NOT NULL", [], |r| r.get(0))?;
        Ok(v.map(|v| v.max(0) as u64))
    }

    /// Tasks due at `now`, earliest first.
    pub fn due_tasks(&self, now: u64) -> Result<Vec<Task>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE next_run_ms IS NOT NULL AND next_run_ms <= ?1 ORDER BY next_run_ms, id"
        ))?;
        let rows = stmt.query_map([now as i64], row_to_task)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Run `task` (due at `due`) at `now`: its prompt goes into the inbox and
    /// its next run moves to `next`, in one transaction. Returns false (and
    /// changes nothing) if the task was removed or already moved on meanwhile.
    /// The inbox row's id is `task:<id>:<due>`, so even a repeated attempt for
    /// the same due time could never post twice.
    pub fn task_fire(&self, task: &Task, due: u64, next: Option<u64>, now: u64) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let moved = tx.execute(
            "UPDATE tasks SET next_run_ms = ?2, last_run_ms = ?3, runs = runs + 1 WHERE id = ?1 AND next_run_ms = ?4",
            params![task.id, next.map(|n| n as i64), now as i64, due as i64],
        )?;
        if moved == 0 {
            return Ok(false);
        }
        let msg = Inbound {
            channel_msg_id: format!("task:{}:{due}", task.id),
            conversation: task.target.conversation.clone(),
            thread: task.thread.clone(),
            sender: format!("task:{}", task.id),
            sender_name: Some(format!("kata task {}", task.id)),
            text: task.prompt.clone(),
            attachments_json: "[]".into(),
            timestamp_ms: now,
            raw: None,
            group: false,
            mentioned: false,
        };
        crate::store::insert_inbox(&tx, &task.target.plugin, &msg, Some(&format!("task:{}", task.id)))?;
        tx.commit()?;
        Ok(true)
    }

    /// Stop a task whose stored schedule no longer parses (a hand-edited
    /// database), so it cannot fire in a loop.
    pub fn task_disable(&self, id: i64) -> Result<()> {
        self.lock().execute("UPDATE tasks SET next_run_ms = NULL WHERE id = ?1", [id])?;
        Ok(())
    }

    /// A task by id.
    pub fn task(&self, id: i64) -> Result<Option<Task>> {
        Ok(self.lock().query_row(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"), [id], row_to_task).optional()?)
    }
}
