//! kata-daemon: what `kata run` runs.
//!
//! Owns the message path above the plugin host: channel ingress and egress
//! ([`channel`], and [`stream`] for persistent connections; [`actions`] for
//! reactions, typing and drafts), [`service`]
//! plugins and the [`scheduler`], the [`router`] that queues messages per
//! session, the [`agent`] and its backends ([`openai`], and [`command`]
//! for CLI agents) answering a [`turn`], [`tools`] under the [`permissions`] mode, the
//! [`hooks`] on the message path, [`senders`] and
//! pairing, [`health`] and the circuit
//! breaker, the [`events`] stream, the control-socket server and its
//! protocol ([`control`], shared with the CLI's clients), the [`workspace`]
//! layout, the database-backed [`sinks`] kata-host writes through, and
//! [`daemon`], which ties it together.
//!
//! It depends on kata-policy, kata-store and kata-host. It must NOT depend
//! on the `kata` binary crate: no clap, no CLI command modules (install,
//! scaffold, the `*_cmd` modules); what both need lives here or below.
//! Within the crate no two modules import each other: `daemon` uses
//! everything, `router` uses `agent`, `tools` and `hooks`, `tools` uses
//! `hooks` and `scheduler` (the plugins' scheduler host interface), `stream`
//! uses `channel`, `router` uses `actions`, `agent` uses `openai`, which uses `turn`.

// The layers below, under the module names this crate's code uses.
use kata_host::{admit, audit, engine, host, limits, outlet, plugin, sandbox, secret_store, sink};
use kata_policy::policy;
use kata_store::{session, store};

pub mod actions;
pub mod agent;
pub mod channel;
pub mod command;
pub mod control;
pub mod daemon;
pub mod events;
pub mod health;
pub mod hooks;
pub mod openai;
pub mod permissions;
pub mod router;
pub mod scheduler;
pub mod senders;
pub mod service;
pub mod sinks;
pub mod stream;
pub mod tools;
pub mod turn;
pub mod webhook;
pub mod workspace;
