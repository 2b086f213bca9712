//! # kata-xmpp: an XMPP channel for kata

pub mod proto;
pub mod wire;
pub mod xml;
