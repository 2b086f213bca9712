//! Embed kata's plugin host: load a channel component under a policy, poll
//! it and send through it, with no daemon and no database.
//!
//! `cargo run -p kata-host --example embed -- target/guests/guest-quiet.wasm`
//! (`scripts/setup.sh` builds the test guests).

use std::path::Path;

use kata_host::engine::Engine;
use kata_host::host::latest::OutboundMessage;
use kata_host::plugin::{ChannelPlugin, linker};
use kata_host::policy::Policy;
use kata_host::sink::Sinks;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let wasm = std::env::args().nth(1).unwrap_or_else(|| "target/guests/guest-quiet.wasm".into());
    // The plugin gets what its table grants: here nothing but its own file.
    let policy = Policy::parse(&format!("[plugins.quiet]\npath = {wasm:?}\n"), Path::new("kata.toml"), Path::new("."))?;
    let engine = Engine::new(None)?;
    let grants = policy.plugins["quiet"].clone();
    let plugin = ChannelPlugin::load(&engine, &linker(&engine)?, grants, Sinks::memory(), Path::new("."))?;
    let mut channel = plugin.instantiate().await?;
    channel.connect().await?;
    let polled = channel.poll(None).await?;
    println!("polled {} messages", polled.messages.len());
    let hello = OutboundMessage {
        conversation: "c1".into(),
        thread: None,
        reply_to: None,
        text: "hello".into(),
        idempotency_key: "k1".into(),
        attachments: vec![],
        actions: vec![],
    };
    println!("sent as {}", channel.send(&hello).await?.id);
    Ok(())
}
