//! kata-policy: what a workspace's `kata.toml` says, checked.
//!
//! Owns the policy model and its parsing with located errors ([`policy`]):
//! grants (network, with the path matcher; files; secrets as *references*
//! such as `env:VAR` or `kata:NAME`, never their values or their storage),
//! limits, durations and sizes; what a plugin's manifest asks for and the
//! narrowing of grants to it ([`manifest`]); and the `[agent]`/`[tools]`
//! settings model ([`policy::agent`], part of the policy: it is checked when the policy loads). [`util`] holds the clock and shell quoting
//! every layer shares.
//!
//! This is the bottom of kata's crate graph: kata-store, kata-host,
//! kata-daemon and the `kata` binary build on it. It must NOT depend on
//! wasmtime, tokio, SQLite or any other kata crate — only on serde/toml and
//! small pure crates — so that a policy can be parsed and tested alone, and
//! `cargo tree -p kata-policy -e normal` stays short. Anything that runs,
//! stores or reads secrets belongs above it.

pub mod manifest;
pub mod policy;
pub mod util;

pub use policy::agent;
