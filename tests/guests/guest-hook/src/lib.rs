//! A hook whose behaviour kata.toml picks (`[plugins.NAME] config`):
//!
//! - `mode = "drop"`: drops received messages containing `word`;
//! - `mode = "veto"`: vetoes replies containing `word`;
//! - `mode = "refuse"`: refuses calls of the tool named `tool`;
//! - `mode = "trap"`, `"spin"`, `"error"`: fails every message and tool call
//!   (a trap, a loop that never ends, an error result);
//! - anything else passes everything.
//!
//! `points` (comma-separated: `received`, `sending`, `tool`; default all)
//! says where it is called. `points()` itself never fails.

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit/v0.1.3", world: "kata:plugin/hook-plugin" });
}

use bindings::exports::kata::plugin::hooks::{Guest, HookPoint, InboundVerdict, OutboundVerdict, ToolCall, ToolVerdict};
use bindings::kata::plugin::host::config_get;
use bindings::kata::plugin::types::{Message, OutboundMessage};

fn mode() -> String {
    config_get("mode").unwrap_or_default()
}

fn word() -> String {
    config_get("word").unwrap_or_else(|| "spam".into())
}

/// Fail as the mode says; Ok for modes that do not fail.
fn fail() -> Result<(), String> {
    match mode().as_str() {
        "trap" => unreachable!("guest-hook traps on purpose"),
        "spin" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "error" => Err("guest-hook fails on purpose".into()),
        _ => Ok(()),
    }
}

struct Hook;

impl Guest for Hook {
    fn points() -> Vec<HookPoint> {
        let points = config_get("points").unwrap_or_else(|| "received,sending,tool".into());
        points
            .split(',')
            .filter_map(|p| match p.trim() {
                "received" => Some(HookPoint::MessageReceived),
                "sending" => Some(HookPoint::MessageSending),
                "tool" => Some(HookPoint::BeforeToolCall),
                _ => None,
            })
            .collect()
    }

    fn message_received(_channel: String, message: Message) -> Result<InboundVerdict, String> {
        fail()?;
        if mode() == "drop" && message.text.contains(&word()) {
            return Ok(InboundVerdict::Drop(format!("it contains {:?}", word())));
        }
        Ok(InboundVerdict::Pass)
    }

    fn message_sending(_channel: String, message: OutboundMessage) -> Result<OutboundVerdict, String> {
        fail()?;
        if mode() == "veto" && message.text.contains(&word()) {
            return Ok(OutboundVerdict::Veto(format!("it contains {:?}", word())));
        }
        Ok(OutboundVerdict::Pass)
    }

    fn before_tool_call(call: ToolCall) -> Result<ToolVerdict, String> {
        fail()?;
        if mode() == "refuse" && config_get("tool").is_some_and(|t| t == call.tool) {
            return Ok(ToolVerdict::Refuse(format!("{} is not allowed by guest-hook", call.tool)));
        }
        Ok(ToolVerdict::Allow)
    }
}

bindings::export!(Hook with_types_in bindings);
