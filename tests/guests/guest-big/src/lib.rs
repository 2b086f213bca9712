//! Test guest `guest-big`: a well-behaved channel carrying about 2 MB of
//! distinct code (generated functions reachable from `poll`), so the
//! benchmark of `kata plugin add` measures validating and compiling a
//! component of realistic size, not just copying bytes.

use kata_sdk::prelude::*;

/// Generates `$n` distinct functions, each a small state machine the
/// optimiser cannot fold, and a table of them.
macro_rules! generate {
    ($($name:ident = $k:literal),* $(,)?) => {
        $(
            #[inline(never)]
            fn $name(x: u64) -> u64 {
                let mut acc = x ^ $k;
                for i in 0..(x % 7 + 3) {
                    acc = match (acc ^ i) % 5 {
                        0 => acc.wrapping_mul($k | 1).rotate_left(7),
                        1 => acc.wrapping_add($k).rotate_right(3) ^ i,
                        2 => acc ^ (acc >> 11) ^ ($k << 2),
                        3 => acc.wrapping_sub(i.wrapping_mul($k)),
                        _ => acc.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ $k,
                    };
                }
                acc
            }
        )*
        const TABLE: &[fn(u64) -> u64] = &[$($name),*];
    };
}

include!("generated.rs");

/// The big channel.
pub struct Big;

impl Channel for Big {
    fn describe() -> ChannelInfo {
        ChannelInfo { name: "big".into(), version: env!("CARGO_PKG_VERSION").into(), ingress: vec![IngressMode::Poll], features: vec![] }
    }

    fn connect() -> Result<Self, ChannelError> {
        Ok(Big)
    }

    fn poll(&mut self, cursor: Option<String>) -> Result<PollResult, ChannelError> {
        let seed: u64 = cursor.as_deref().and_then(|c| c.parse().ok()).unwrap_or(1);
        let f = TABLE[(seed as usize) % TABLE.len()];
        let _ = core::hint::black_box(f(seed));
        Ok(PollResult { messages: vec![], cursor, next_poll_ms: None })
    }

    fn send(&mut self, message: OutboundMessage) -> Result<SendReceipt, ChannelError> {
        Ok(SendReceipt { id: message.idempotency_key, frames: Vec::new() })
    }
}

kata_sdk::export_channel!(Big);
