//! kata: an always-on agent host whose channel adapters, services and tools
//! are WebAssembly components, each running with only what the workspace
//! policy grants it.
//!
//! The modules follow the data path: [`workspace`] and [`policy`] load the
//! user's `kata.toml`; [`engine`], [`host`], [`sandbox`] and [`plugin`] run
//! components under their grants and limits; [`channel`] moves messages
//! between plugins and the [`store`], [`service`] runs background plugins
//! that emit into it and [`scheduler`] posts scheduled prompts; [`router`]
//! queues them per [`session`] and [`agent`] answers them (the [`openai`]
//! backend calls [`tools`] under the [`permissions`] mode); [`daemon`] ties
//! it together for `kata run`.

pub mod agent;
pub mod audit;
pub mod channel;
pub mod client;
pub mod cli;
pub mod componentize;
pub mod control;
pub mod daemon;
pub mod daemonize;
pub mod engine;
pub mod events;
pub mod health;
pub mod host;
pub mod install;
pub mod limits;
pub mod manifest;
pub mod openai;
pub mod permissions;
pub mod plugin;
pub mod policy;
pub mod policy_cmd;
pub mod router;
pub mod sandbox;
pub mod scaffold;
pub mod scheduler;
pub mod secret_cmd;
pub mod secret_store;
pub mod senders;
pub mod service;
pub mod session;
pub mod store;
pub mod stream;
pub mod task_cmd;
pub mod tools;
pub mod workspace;
