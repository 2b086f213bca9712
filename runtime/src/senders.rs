//! Who may talk to the agent: per channel, an allowlist of senders
//! (`allow_from` in kata.toml), and pairing for everyone else — an unknown
//! sender gets a one-time code and nothing else, never the agent, until the
//! owner runs `kata pair approve CODE`. The decision is stored.

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::policy::PluginGrants;
use crate::store::{Db, InboxRow, Pairing, Reply, now_ms};

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
