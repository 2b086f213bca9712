//! The webhook plugin (plugins/webhook) and host-verified webhook signatures.
#![allow(clippy::unwrap_used, missing_docs)]
