//! Who may talk to the agent: per channel, an allowlist of senders
//! (`allow_from` in kata.toml), and pairing for everyone else — an unknown
//! sender gets a one-time code and nothing else, never the agent, until the
//! owner runs `kata pair approve CODE`. The decision is stored.
//!
//! Group conversations are different: only a group the policy grants
//! (`groups`) reaches the agent, by default only where the message mentions
//! or replies to it (`require_mention`), and nobody in a group is ever sent a
//! pairing code (see [`group_gate`]).
//!
//! Messages the host itself put in the inbox — a scheduled task's prompt, a
//! service's event (see the inbox `origin`) — come from the owner's own setup
//! and pass without pairing; [`addressed`] decides where their replies go.

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::policy::PluginGrants;
use crate::store::{Db, InboxRow, Pairing, Reply, now_ms};

/// Whether `origin` is one the host sets itself (never a channel's input).
fn owner_origin(origin: Option<&str>) -> bool {
    origin.is_some_and(|o| o.starts_with("task:") || o.starts_with("service:"))
}

/// What happens to an inbound message.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// The sender may reach the agent.
    Allowed,
    /// A new sender: reply with their pairing code (the agent never sees it).
    Pair(Reply),
    /// A sender waiting for approval, or denied: no agent, no reply.
    Held,
}

/// Letters and digits that cannot be confused when read aloud or typed.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

fn code(plugin: &str, sender: &str, attempt: u32) -> String {
    let mut h = Sha256::new();
    h.update(plugin.as_bytes());
    h.update([0]);
    h.update(sender.as_bytes());
    h.update(now_ms().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(attempt.to_le_bytes());
    // The nanoseconds make two codes in the same millisecond differ.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    h.update(nanos.to_le_bytes());
    h.finalize().iter().take(6).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Decide what to do with `row`, creating a pairing for a new sender.
pub fn gate(db: &Db, grants: Option<&PluginGrants>, row: &InboxRow) -> Result<Gate> {
    let sender = &row.msg.sender;
    if owner_origin(row.origin.as_deref()) {
        return Ok(Gate::Allowed);
    }
    // Groups are the policy's to grant; allow_from and pairing are for
    // direct conversations only.
    if row.msg.group {
        return Ok(group_gate(grants, &row.plugin, &row.msg.conversation, row.msg.mentioned));
    }
    if grants.is_some_and(|g| g.sender_allowed(sender)) {
        return Ok(Gate::Allowed);
    }
    if let Some(p) = db.pairing(&row.plugin, sender)? {
        return Ok(if p.status == "approved" { Gate::Allowed } else { Gate::Held });
    }
    for attempt in 0..5 {
        let p = Pairing {
            plugin: row.plugin.clone(),
            sender: sender.clone(),
            sender_name: row.msg.sender_name.clone(),
            code: code(&row.plugin, sender, attempt),
            status: "pending".into(),
            created_ms: now_ms(),
        };
        match db.pairing_create(&p, &row.msg.conversation) {
            Ok(true) => {
                tracing::info!(
                    plugin = %row.plugin, sender = %sender, code = %p.code,
                    "unknown sender; pairing code sent (approve with `kata pair approve {}`)", p.code
                );
                return Ok(Gate::Pair(Reply {
                    plugin: row.plugin.clone(),
                    conversation: row.msg.conversation.clone(),
                    thread: row.msg.thread.clone(),
                    reply_to: Some(row.msg.channel_msg_id.clone()),
                    text: format!(
                        "Hello! This agent only talks to people its owner has approved. Your pairing code is {}: \
                         ask the owner to run `kata pair approve {}`.",
                        p.code, p.code
                    ),
                    rich: Default::default(),
                }));
            }
            // The sender raced itself: another row created the pairing.
            Ok(false) => return Ok(Gate::Held),
            // A code collision (UNIQUE): try another code.
            Err(_) if attempt < 4 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Gate::Held)
}

/// A message in a group conversation (`conversation` on `plugin`; `mentioned`:
/// it addresses the agent). Only a group granted by `groups` gets through,
/// and with `require_mention` (the default) only a message that mentions or
/// replies to the agent. There is no pairing in groups: a code posted there
/// would be read by everyone in the group, and whether a group may talk to
/// the agent is the owner's decision in kata.toml, not a member's request.
/// A stranger in a granted group can still DM the bot to pair.
pub fn group_gate(grants: Option<&PluginGrants>, plugin: &str, conversation: &str, mentioned: bool) -> Gate {
    use crate::policy::GroupVerdict;
    match grants.map_or(GroupVerdict::NotGranted, |g| g.group_verdict(conversation, mentioned)) {
        GroupVerdict::Allowed => Gate::Allowed,
        GroupVerdict::NotGranted => {
            // Once per group and daemon run, so a busy group cannot flood the log.
            if first_sighting(plugin, conversation) {
                tracing::info!(
                    plugin = %plugin, group = %conversation,
                    "messages in group {conversation} do not reach the agent: the group is not granted; to let it in, add \
                     groups = [\"{conversation}\"] under [plugins.{plugin}] in kata.toml"
                );
            }
            Gate::Held
        }
        GroupVerdict::NotMentioned => {
            tracing::debug!(plugin = %plugin, group = %conversation, "group message does not mention the agent (require_mention): not passed on");
            Gate::Held
        }
    }
}

/// Whether this is the first ungranted message from this group since the
/// daemon started (remembers up to 10 000 groups, then starts over).
fn first_sighting(plugin: &str, conversation: &str) -> bool {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<(String, String)>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if seen.len() >= 10_000 {
        seen.clear();
    }
    seen.insert((plugin.to_string(), conversation.to_string()))
}

/// Where the agent's reply to `row` goes. A channel message's reply goes back
/// where it came from. A task's prompt was not a message in the channel, so
/// the reply quotes nothing. A service's event is answered in the channel
/// conversation its `deliver_to` names; without one, nowhere (None).
pub fn addressed(mut reply: Reply, row: &InboxRow, grants: Option<&PluginGrants>) -> Option<Reply> {
    match row.origin.as_deref() {
        Some(o) if o.starts_with("service:") => {
            let Some(to) = grants.and_then(|g| g.deliver_to.as_ref()) else {
                tracing::warn!(plugin = %row.plugin, inbox = row.id, "a reply to service {} has nowhere to go: set `deliver_to = \"CHANNEL:CONVERSATION\"` under [plugins.{}]", row.plugin, row.plugin);
                return None;
            };
            reply.plugin = to.plugin.clone();
            reply.conversation = to.conversation.clone();
            reply.thread = None;
            reply.reply_to = None;
            Some(reply)
        }
        Some(o) if owner_origin(Some(o)) => {
            reply.reply_to = None;
            Some(reply)
        }
        _ => Some(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Inbound;

    fn row(plugin: &str, sender: &str, origin: Option<&str>) -> InboxRow {
        InboxRow {
            id: 9,
            plugin: plugin.into(),
            msg: Inbound {
                channel_msg_id: "m1".into(),
                conversation: "c1".into(),
                thread: Some("t1".into()),
                sender: sender.into(),
                sender_name: None,
                text: "hi".into(),
                attachments_json: "[]".into(),
                timestamp_ms: 0,
                raw: None,
                group: false,
                mentioned: false,
            },
            origin: origin.map(Into::into),
        }
    }

    fn grants(toml: &str, name: &str) -> PluginGrants {
        let p = crate::policy::Policy::parse(toml, std::path::Path::new("kata.toml"), std::path::Path::new("/")).expect("policy");
        p.plugins[name].clone()
    }

    fn reply_to(row: &InboxRow) -> Reply {
        Reply {
            plugin: row.plugin.clone(),
            conversation: row.msg.conversation.clone(),
            thread: row.msg.thread.clone(),
            reply_to: Some(row.msg.channel_msg_id.clone()),
            text: "answer".into(),
            rich: Default::default(),
        }
    }

    #[test]
    fn task_and_service_messages_pass_without_pairing_and_others_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("kata.db")).expect("db");
        let tg = grants("[plugins.telegram]\n", "telegram");
        // A task's prompt in a channel that pairs everyone: allowed, no pairing made.
        assert_eq!(gate(&db, Some(&tg), &row("telegram", "task:3", Some("task:3"))).expect("gate"), Gate::Allowed);
        assert_eq!(gate(&db, None, &row("feed", "feed-bot", Some("service:feed"))).expect("gate"), Gate::Allowed);
        assert!(db.pairings().expect("pairings").is_empty());
        // The same sender id without the host's mark pairs like anyone else,
        // and an origin the host never sets is no pass either.
        assert!(matches!(gate(&db, Some(&tg), &row("telegram", "task:3", None)).expect("gate"), Gate::Pair(_)));
        assert!(matches!(gate(&db, Some(&tg), &row("telegram", "x", Some("channel"))).expect("gate"), Gate::Pair(_)));
    }

    #[test]
    fn a_group_message_never_pairs_and_dms_pair_as_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("kata.db")).expect("db");
        let tg = grants("[plugins.telegram]\nallow_from = [\"42\"]\ngroups = [\"g1\"]\n", "telegram");
        let in_group = |conversation: &str, sender: &str, mentioned: bool| {
            let mut r = row("telegram", sender, None);
            r.msg.conversation = conversation.into();
            r.msg.group = true;
            r.msg.mentioned = mentioned;
            r
        };
        // An allowed sender in an ungranted group: held. A stranger in a granted
        // group who mentions the agent: through. Not mentioned: held.
        assert_eq!(gate(&db, Some(&tg), &in_group("g2", "42", true)).expect("gate"), Gate::Held);
        assert_eq!(gate(&db, Some(&tg), &in_group("g1", "stranger", true)).expect("gate"), Gate::Allowed);
        assert_eq!(gate(&db, Some(&tg), &in_group("g1", "stranger", false)).expect("gate"), Gate::Held);
        assert_eq!(gate(&db, Some(&tg), &in_group("g2", "stranger", true)).expect("gate"), Gate::Held);
        assert!(db.pairings().expect("pairings").is_empty(), "no pairing from a group");
        // Direct conversations: unchanged.
        assert_eq!(gate(&db, Some(&tg), &row("telegram", "42", None)).expect("gate"), Gate::Allowed);
        assert!(matches!(gate(&db, Some(&tg), &row("telegram", "stranger", None)).expect("gate"), Gate::Pair(_)));
    }

    #[test]
    fn groups_are_granted_by_policy_never_by_pairing() {
        let tg = grants("[plugins.telegram]\nallow_from = [\"42\"]\ngroups = [\"-100123\"]\n", "telegram");
        assert_eq!(group_gate(Some(&tg), "telegram", "-100123", true), Gate::Allowed);
        assert_eq!(group_gate(Some(&tg), "telegram", "-100123", false), Gate::Held, "require_mention by default");
        assert_eq!(group_gate(Some(&tg), "telegram", "-100999", true), Gate::Held, "not granted");
        assert_eq!(group_gate(None, "telegram", "-100123", true), Gate::Held, "no policy table: no groups");
        let open = grants("[plugins.telegram]\ngroups = [\"*\"]\nrequire_mention = false\n", "telegram");
        assert_eq!(group_gate(Some(&open), "telegram", "-1", false), Gate::Allowed);
    }

    #[test]
    fn replies_are_addressed_by_origin() {
        let toml = "[plugins.telegram]\n[plugins.feed]\ndeliver_to = \"telegram:555\"\n[plugins.mute]\n";
        let channel = row("telegram", "42", None);
        assert_eq!(addressed(reply_to(&channel), &channel, None), Some(reply_to(&channel)));
        let task = row("telegram", "task:1", Some("task:1"));
        let r = addressed(reply_to(&task), &task, None).expect("reply");
        assert_eq!((r.plugin.as_str(), r.conversation.as_str(), r.thread.as_deref(), r.reply_to), ("telegram", "c1", Some("t1"), None));
        let svc = row("feed", "feed-bot", Some("service:feed"));
        let r = addressed(reply_to(&svc), &svc, Some(&grants(toml, "feed"))).expect("reply");
        assert_eq!((r.plugin.as_str(), r.conversation.as_str(), r.thread, r.reply_to), ("telegram", "555", None, None));
        let mute = row("mute", "m", Some("service:mute"));
        assert_eq!(addressed(reply_to(&mute), &mute, Some(&grants(toml, "mute"))), None);
    }
}
