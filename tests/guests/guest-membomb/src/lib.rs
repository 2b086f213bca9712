//! Test guest `guest-membomb`: `poll` allocates memory in 1 MiB chunks and
//! writes to every page, forever, until the host's memory limit stops it
//! (the failed allocation aborts, which traps). Everything else behaves like
//! a quiet channel.

use core::hint::black_box;
use kata_sdk::prelude::*;

/// Size of one allocation.
const CHUNK: usize = 1 << 20;

/// Wasm page size: touching one byte per page commits the page.
const PAGE: usize = 64 << 10;

/// The memory-hungry channel.
pub struct MemBomb;

impl Channel for MemBomb {
    fn describe() -> ChannelInfo {
        ChannelInfo {
            name: "membomb".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ingress: vec![IngressMode::Poll],
            features: vec![],
        }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(MemBomb)
    }

    fn poll(&mut self, _cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = vec![0u8; CHUNK];
            for (i, byte) in chunk.iter_mut().enumerate().step_by(PAGE / 16) {
                *byte = black_box(i as u8 | 1);
            }
            hoard.push(black_box(chunk));
        }
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: format!("membomb-{}", message.idempotency_key), frames: Vec::new() })
    }
}

kata_sdk::export_channel!(MemBomb);
