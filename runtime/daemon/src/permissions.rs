//! Permission modes for the agent's tool calls, and the approvals a person
//! gives in `ask` mode.
//!
//! The mode is per workspace (`[tools] mode`) and can be overridden per
//! channel (`[plugins.NAME] tools_mode`): the channel a turn came through
//! decides. What each mode lets run:
//!
//! | mode | runs | how |
//! |---|---|---|
//! | `safe` | tools the plugin's manifest lists in `[tools] read_only` | with every write grant stripped: directories read-only, network GET/HEAD only — a tool that lied about being read-only fails to write |
//! | `ask` | tools in `[tools] allow`, and every other call a person approves | `kata approvals` lists waiting calls, `kata approve ID` / `kata deny ID` decide — or a `yes ID` / `no ID` answer in the `[tools] approvals_to` conversation (see [`chat_answer`]); no decision within `[tools] ask_timeout` denies |
//! | `allow-all` | every tool | with the plugin's full grants |
//! | `daemon` | tools in `[tools] allow` only | everything else is refused |
//!
//! A refused call is not an error of the turn: the model gets a tool result
//! saying the call was refused and why, and can answer the person. Every call
//! — run or refused — is one audit row (kind `tool`).

use std::time::Duration;

use anyhow::Result;

use crate::audit::{Event, Kind, Verdict};
use crate::policy::agent::Address;
use crate::policy::{PluginGrants, ToolMode};
use crate::store::{Db, InboxRow, Reply, now_ms};

/// What the permission mode says about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it; `read_only` means with write grants stripped. `policy` is the
    /// kata.toml line (or manifest promise) that allows it.
    Run {
        /// Run with the read-only grants.
        read_only: bool,
        /// What allowed it.
        policy: String,
    },
    /// Ask a person first.
    Ask,
    /// Refuse it: why, and the kata.toml line that would allow it.
    Refuse {
        /// Why, for the model and the audit log.
        reason: String,
        /// What would allow it.
        policy: String,
    },
}

/// The `[tools] allow` pattern that covers `plugin.tool`, if any.
pub fn allowed_by<'a>(allow: &'a [String], plugin: &str, tool: &str) -> Option<&'a str> {
    allow
        .iter()
        .find(|p| match p.split_once('.') {
            Some((pl, "*")) => pl == plugin,
            Some((pl, t)) => pl == plugin && t == tool,
            None => false,
        })
        .map(String::as_str)
}

/// Decide what happens to a call of `plugin.tool` in `mode`. `read_only` is
/// whether the plugin's manifest declares the tool read-only.
pub fn decide(mode: ToolMode, allow: &[String], plugin: &str, tool: &str, read_only: bool) -> Decision {
    let name = format!("{plugin}.{tool}");
    match mode {
        ToolMode::AllowAll => Decision::Run { read_only: false, policy: "[tools] mode = \"allow-all\"".into() },
        ToolMode::Safe if read_only => Decision::Run {
            read_only: true,
            policy: format!("manifest of {plugin}: [tools] read_only includes {tool:?} (run with write grants stripped)"),
        },
        ToolMode::Safe => Decision::Refuse {
            reason: format!(
                "the permission mode is \"safe\", which runs only tools their plugin declares read-only, and {name} is not one"
            ),
            policy: "[tools] mode = \"ask\" (or \"allow-all\")".into(),
        },
        ToolMode::Daemon | ToolMode::Ask => match allowed_by(allow, plugin, tool) {
            Some(p) => Decision::Run { read_only: false, policy: format!("[tools] allow = [\"{p}\"]") },
            None if mode == ToolMode::Ask => Decision::Ask,
            None => Decision::Refuse {
                reason: format!("the permission mode is \"daemon\" (headless) and {name} is not in [tools] allow"),
                policy: format!("[tools] allow = [\"{name}\"]"),
            },
        },
    }
}

pub use kata_store::approvals::Approval;

/// How an `ask` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A person approved it.
    Approved,
    /// A person denied it.
    Denied,
    /// No one decided in time.
    Expired,
}

/// How often a waiting call looks for a decision.
const POLL: Duration = Duration::from_millis(200);

/// Wait for a person to decide on approval `id` (written by `kata approve` /
/// `kata deny` in another process), checking every 200 ms; when it expires,
/// it is marked expired (denied).
pub async fn wait_for_decision(db: &Db, id: i64) -> Result<Answer> {
    loop {
        let Some(a) = db.approval(id)? else { anyhow::bail!("approval {id} disappeared from the database") };
        match a.status.as_str() {
            "approved" => return Ok(Answer::Approved),
            "denied" => return Ok(Answer::Denied),
            "expired" => return Ok(Answer::Expired),
            _ => {}
        }
        if now_ms() >= a.expires_ms {
            db.approvals_expire(now_ms())?;
            // A decision may have landed between the read and the expiry.
            continue;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A `yes` / `no` written in a chat, maybe naming the approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatAnswer {
    /// Yes (let it run) or no.
    pub approve: bool,
    /// The approval id, when given (`yes 7`, `no #7`).
    pub id: Option<i64>,
}

/// Read a chat message as an answer: `yes`, `y`, `approve`, `ok` or `no`,
/// `n`, `deny`, optionally followed by the approval id; case and trailing
/// punctuation do not matter. Anything else is not an answer.
pub fn parse_answer(text: &str) -> Option<ChatAnswer> {
    let text = text.trim().trim_end_matches(['.', '!']).to_lowercase();
    let mut words = text.split_whitespace();
    let approve = match words.next()? {
        "yes" | "y" | "approve" | "ok" => true,
        "no" | "n" | "deny" => false,
        _ => return None,
    };
    let id = match words.next() {
        None => None,
        Some(w) => Some(w.trim_start_matches('#').parse().ok()?),
    };
    words.next().is_none().then_some(ChatAnswer { approve, id })
}

/// Whether `sender` on channel `plugin` may answer approval requests: one
/// of `[tools] approvers` when that is set, else a sender the channel's
/// owner paired (`kata pair approve`) or named in its `allow_from` — never
/// someone let in only by `allow_from = ["*"]`.
pub fn is_approver(db: &Db, approvers: &[Address], grants: Option<&PluginGrants>, plugin: &str, sender: &str) -> Result<bool> {
    if !approvers.is_empty() {
        return Ok(approvers.iter().any(|a| a.plugin == plugin && a.id == sender));
    }
    if grants.and_then(|g| g.allow_from.as_ref()).is_some_and(|list| list.iter().any(|a| a == sender)) {
        return Ok(true);
    }
    Ok(db.pairing(plugin, sender)?.is_some_and(|p| p.status == "approved"))
}

/// A message in the `approvals_to` conversation that answers a waiting
/// approval: decide it and return the confirmation to send back. None when
/// the message is not an answer, no approval waits, or the sender may not
/// approve (then the message goes on as any other would, and the ignored
/// answer is an audit row). Runs before the message reaches any session, so
/// an answer is read even while the turn that asked waits for it.
pub fn chat_answer(db: &Db, to: &Address, approvers: &[Address], grants: Option<&PluginGrants>, row: &InboxRow) -> Result<Option<Reply>> {
    if row.plugin != to.plugin || row.msg.conversation != to.id || row.origin.is_some() {
        return Ok(None);
    }
    let Some(answer) = parse_answer(&row.msg.text) else { return Ok(None) };
    let now = now_ms();
    let pending: Vec<Approval> = db.approvals(false)?.into_iter().filter(|a| a.expires_ms > now).collect();
    if pending.is_empty() {
        return Ok(None);
    }
    let sender = &row.msg.sender;
    let who = format!("{}:{sender}", row.plugin);
    let place = format!("{}:{}", row.plugin, row.msg.conversation);
    if !is_approver(db, approvers, grants, &row.plugin, sender)? {
        tracing::warn!(from = %who, in_ = %place, "an approval answer from someone who may not approve was ignored");
        crate::sinks::auditor(db, &row.plugin).record(
            Event::new(Kind::Tool, Verdict::Deny)
                .method("approval-answer")
                .target(match answer.id {
                    Some(id) => format!("approval {id}"),
                    None => "approvals".into(),
                })
                .policy(if approvers.is_empty() {
                    "[tools] approvers (unset: senders paired on the channel or named in its allow_from)".to_string()
                } else {
                    "[tools] approvers".to_string()
                })
                .detail(format!("{:?} from {who} in {place} ignored: {who} may not approve tool calls", row.msg.text.trim())),
        );
        return Ok(None);
    }
    let reply = |text: String| Reply {
        plugin: row.plugin.clone(),
        conversation: row.msg.conversation.clone(),
        thread: row.msg.thread.clone(),
        reply_to: Some(row.msg.channel_msg_id.clone()),
        text,
        rich: Default::default(),
    };
    let id = match (answer.id, pending.as_slice()) {
        (Some(id), _) => id,
        (None, [only]) => only.id,
        (None, many) => {
            let ids: Vec<String> = many.iter().map(|a| format!("{} ({}.{})", a.id, a.plugin, a.tool)).collect();
            return Ok(Some(reply(format!(
                "{} tool calls are waiting: answer \"yes ID\" or \"no ID\" with one of {}.",
                many.len(),
                ids.join(", ")
            ))));
        }
    };
    let by = format!("{who} in {place}");
    let text = match db.approval_decide(id, answer.approve, &by)? {
        None => format!("No tool call has approval id {id}."),
        Some(a) => {
            let tool = format!("{}.{}", a.plugin, a.tool);
            match (a.status.as_str(), answer.approve) {
                ("approved", true) => format!("Approved {id}: {tool} runs now."),
                ("denied", false) => format!("Denied {id}: {tool} does not run; the agent is told so."),
                (status, _) => format!("Approval {id} ({tool}) is already {status}; nothing changed."),
            }
        }
    };
    tracing::info!(approval = id, by = %by, approve = answer.approve, "approval answered in the chat");
    Ok(Some(reply(text)))
}

/// "5m", "90s", "1h": a duration as a person reads it.
pub fn duration_words(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s if s > 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// `kata approvals`: print the calls waiting for a decision.
pub fn print_approvals(db: &Db, all: bool, json: bool, out: &mut impl std::io::Write) -> Result<()> {
    let list = db.approvals(all)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &list)?;
        writeln!(out)?;
        return Ok(());
    }
    if list.is_empty() {
        writeln!(out, "No tool calls are waiting for approval.")?;
        return Ok(());
    }
    writeln!(out, "{:<6} {:<9} {:<24} {:<20} ARGUMENTS", "ID", "STATUS", "TOOL", "SESSION")?;
    let now = now_ms();
    for a in list {
        let mut args: String = a.args.chars().take(60).collect();
        if a.args.chars().count() > 60 {
            args.push('…');
        }
        let left = if a.status == "pending" { format!(" ({}s left)", a.expires_ms.saturating_sub(now) / 1000) } else { String::new() };
        writeln!(out, "{:<6} {:<9} {:<24} {:<20} {args}{left}", a.id, a.status, format!("{}.{}", a.plugin, a.tool), a.session_key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_decides_as_documented() {
        let allow = vec!["notes.*".to_string(), "web.fetch".to_string()];
        let run = |d: &Decision| matches!(d, Decision::Run { .. });
        // safe: read-only tools only, with write grants stripped.
        assert_eq!(
            decide(ToolMode::Safe, &allow, "notes", "read", true),
            Decision::Run {
                read_only: true,
                policy: "manifest of notes: [tools] read_only includes \"read\" (run with write grants stripped)".into()
            }
        );
        assert!(matches!(decide(ToolMode::Safe, &allow, "notes", "write", false), Decision::Refuse { .. }));
        // allow-all: everything, with full grants.
        assert!(matches!(decide(ToolMode::AllowAll, &[], "x", "y", false), Decision::Run { read_only: false, .. }));
        // daemon: the allowlist only.
        assert!(run(&decide(ToolMode::Daemon, &allow, "notes", "write", false)));
        assert!(run(&decide(ToolMode::Daemon, &allow, "web", "fetch", false)));
        let Decision::Refuse { policy, .. } = decide(ToolMode::Daemon, &allow, "web", "post", false) else { panic!("refused") };
        assert_eq!(policy, "[tools] allow = [\"web.post\"]");
        // ask: the allowlist runs, the rest asks.
        assert!(run(&decide(ToolMode::Ask, &allow, "notes", "x", false)));
        assert_eq!(decide(ToolMode::Ask, &allow, "web", "post", false), Decision::Ask);
        assert_eq!(allowed_by(&allow, "notesx", "a"), None);
    }

    #[test]
    fn chat_answers_are_yes_or_no_with_an_optional_id() {
        let a = |approve, id| Some(ChatAnswer { approve, id });
        assert_eq!(parse_answer("yes"), a(true, None));
        assert_eq!(parse_answer(" Yes 12 "), a(true, Some(12)));
        assert_eq!(parse_answer("no #3."), a(false, Some(3)));
        assert_eq!(parse_answer("OK!"), a(true, None));
        assert_eq!(parse_answer("deny 4"), a(false, Some(4)));
        assert_eq!(parse_answer("yes please"), None);
        assert_eq!(parse_answer("yes 3 4"), None);
        assert_eq!(parse_answer("yesterday"), None);
        assert_eq!(parse_answer(""), None);
        assert_eq!(duration_words(Duration::from_secs(300)), "5m");
        assert_eq!(duration_words(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration_words(Duration::from_secs(7200)), "2h");
        assert_eq!(duration_words(Duration::from_secs(20)), "20s");
    }

    #[tokio::test]
    async fn approvals_are_decided_once_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("kata.db")).expect("db");
        let id = db.approval_create("tg/1", "notes", "write", "{}", "[tools] mode", Duration::from_secs(60)).expect("create");
        assert_eq!(db.approvals(false).expect("list").len(), 1);
        assert_eq!(db.approval_decide(id, true, "test").expect("decide").expect("exists").status, "approved");
        // A later deny does not change it.
        assert_eq!(db.approval_decide(id, false, "test").expect("decide").expect("exists").status, "approved");
        assert_eq!(wait_for_decision(&db, id).await.expect("wait"), Answer::Approved);
        assert!(db.approval_decide(999, true, "test").expect("decide").is_none());
        let short = db.approval_create("tg/1", "notes", "write", "{}", "[tools] mode", Duration::from_millis(1)).expect("create");
        assert_eq!(wait_for_decision(&db, short).await.expect("wait"), Answer::Expired);
        assert_eq!(db.approval_decide(short, true, "test").expect("decide").expect("exists").status, "expired");
        assert!(db.approvals(false).expect("list").is_empty());
    }
}
