//! `kata secret set|list|remove`: the command line of kata's encrypted
//! secret store (see [`crate::secret_store`]). A value is never taken from
//! the command line, where shell history and `ps` would keep it: it is read
//! from the terminal without echo, or from stdin when stdin is not a terminal.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::secret_store::SecretStore;
use crate::store::now_ms;
use crate::workspace::Workspace;

/// `kata secret …`
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret, encrypted, for `secrets = { NAME = "kata:NAME" }`. The
    /// value is read from the terminal without echo, or from stdin when piped
    /// (one trailing newline is dropped); never from the command line.
    Set {
        /// The secret's name (letters, digits, '-', '_').
        name: String,
    },
    /// List the stored secrets: names and when each was set, never values.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Delete a stored secret.
    Remove {
        /// The secret's name.
        name: String,
    },
}

/// Run `kata secret …`.
pub fn secret(workspace: Option<&Path>, cmd: SecretCommand, out: &mut impl Write) -> Result<()> {
    let ws = Workspace::discover(workspace)?;
    let store = SecretStore::for_workspace(ws.root())?;
    match cmd {
        SecretCommand::Set { name } => {
            check_name(&name)?;
            let value = read_value(&name)?;
            let new_key = !store.key_path().exists();
            let replaced = store.set(&name, &value, now_ms())?;
            let key_abs = std::path::absolute(store.key_path()).unwrap_or_else(|_| store.key_path().to_path_buf());
            if key_abs.starts_with(ws.root()) {
                writeln!(
                    out,
                    "Warning: the key {} is inside the workspace, so a copy of the workspace carries both the store and its key; keep the key elsewhere ({} names it).",
                    key_abs.display(),
                    crate::secret_store::KEY_ENV
                )?;
            }
            if new_key {
                writeln!(
                    out,
                    "Created kata's secret key {} (mode 0600). Back it up apart from the workspace: without it the stored secrets cannot be read.",
                    store.key_path().display()
                )?;
            }
            writeln!(
                out,
                "{} secret {name} in {} (key {}). Use it in kata.toml as `{name} = \"kata:{name}\"`; a running daemon picks it up on `kata reload` or a restart.",
                if replaced { "Replaced" } else { "Stored" },
                store.path().display(),
                store.key_path().display()
            )?;
        }
        SecretCommand::List { json } => {
            let list = store.list()?;
            if json {
                let rows: Vec<serde_json::Value> = list
                    .iter()
                    .map(|l| serde_json::json!({ "name": l.name, "set_ms": l.set_ms, "set": crate::audit::format_time(l.set_ms) }))
                    .collect();
                serde_json::to_writer_pretty(&mut *out, &rows)?;
                writeln!(out)?;
            } else if list.is_empty() {
                writeln!(out, "No secrets stored in {}; add one with `kata secret set NAME`.", store.path().display())?;
            } else {
                writeln!(out, "{:<24} SET", "NAME")?;
                for l in list {
                    writeln!(out, "{:<24} {}", l.name, crate::audit::format_time(l.set_ms))?;
                }
            }
        }
        SecretCommand::Remove { name } => {
            if store.remove(&name)? {
                writeln!(out, "Removed secret {name}.")?;
            } else {
                bail!("there is no secret {name} in {}; `kata secret list` shows the names", store.path().display());
            }
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        bail!("secret name {name:?} must be letters, digits, '-' or '_' (kata.toml refers to it as \"kata:NAME\")");
    }
    Ok(())
}

/// The value: from the terminal without echo, or all of stdin when piped.
fn read_value(name: &str) -> Result<String> {
    let value = if std::io::stdin().is_terminal() {
        let v = rpassword::prompt_password(format!("Value for secret {name} (not echoed): "))
            .context("cannot read the value from the terminal")?;
        let again = rpassword::prompt_password("Again, to confirm: ").context("cannot read the value from the terminal")?;
        if v != again {
            bail!("the two values differ; nothing was stored, run `kata secret set {name}` again");
        }
        v
    } else {
        let mut v = String::new();
        std::io::stdin().read_to_string(&mut v).context("cannot read the value from stdin (it must be UTF-8 text)")?;
        let trimmed = v.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&v);
        trimmed.to_string()
    };
    if value.is_empty() {
        bail!("the value of secret {name} is empty; nothing was stored (pipe the value in, or type it at the prompt)");
    }
    Ok(value)
}
