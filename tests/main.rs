//! kata's integration tests: the real `kata` binary, real guests built from
//! source and real servers on loopback. One test binary (the kata library
//! and wasmtime are linked once); one module per area. Run one area with
//! `cargo test -p kata --test integration email::`.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

// The CLI, the workspace and the control socket.
mod cli;
mod control;
mod plugin;
mod policy;
mod provenance;
mod scheduler;
mod secrets;

// The sandbox, its limits and hostile guests.
mod connections;
mod engine;
mod hostile;
mod limits;
mod network_paths;
mod sandbox;
mod streams;

// The message path: durability, batching, groups, replies.
mod durability;
mod groups;
mod replies;
mod send_batch;

// The agent side: backends, tools, hooks, services.
mod agent;
mod command;
mod hooks;
mod reminders;
mod service;
mod tools;

// Plugins in every language.
mod languages;

// The channels, each against a server that behaves like the real service.
mod discord;
mod email;
mod irc;
mod matrix;
mod slack;
mod telegram;
mod webhook;
mod xmpp;
