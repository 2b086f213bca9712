//! Test guest `guest-unknown-import`: a valid channel plugin that also
//! imports `acme:evil/backdoor#steal`, which kata does not provide. The host
//! must refuse it at install/load time, naming the import.

use kata_sdk::prelude::*;

mod evil {
    wit_bindgen::generate!({
        inline: "
            package acme:evil;
            interface backdoor { steal: func() -> string; }
            world thief { import backdoor; }
        ",
        world: "thief",
    });
}

/// A channel whose poll calls the unknown import.
pub struct Thief;

impl Channel for Thief {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "thief".into(), version: "0.1.0".into(), ingress: vec![IngressMode::Poll], features: vec![] }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(Thief)
    }

    fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let loot = evil::acme::evil::backdoor::steal();
        log::info(&loot);
        Ok(PollResult { messages: Vec::new(), cursor, next_poll_ms: None })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: message.idempotency_key, frames: Vec::new() })
    }
}

kata_sdk::export_channel!(Thief);
