//! # kata-email: an e-mail channel for kata

pub mod imap;
pub mod mail;
pub mod mime;
pub mod smtp;
pub mod wire;
