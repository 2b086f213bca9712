//! `kata-dev`: the plugin authoring commands — `kata plugin new | build |
//! test | componentize | bindings | toolchain`.
//!
//! They drive language toolchains, componentize core modules (wit-component,
//! the WASI reactor adapter), compose the JavaScript HTTP adapter and write C
//! and Go bindings: several MB of code a host that only runs plugins never
//! uses. So they are a second binary, installed next to `kata`, and `kata`
//! hands these commands to it ([`hand_off`]) the way cargo runs `cargo-NAME`:
//! `kata plugin build` works the same either way, and a daemon on a small
//! board carries none of it (BENCHMARKS.md, "Memory and size").

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::{Cli, Command, PluginCommand, ToolchainCommand};

/// The authoring binary's file name.
pub const BIN: &str = "kata-dev";

/// Set by `kata` on the hand-off to its own version: a `kata-dev` of
/// another version (an older one first on PATH) would build against another
/// WIT than the host speaks, so it refuses.
const HANDED_OFF_BY: &str = "KATA_HANDED_OFF_BY";

/// Where `kata-dev` is: next to the running `kata` (where `cargo install`
/// and cargo's target directory put them), else on PATH.
fn locate() -> Option<PathBuf> {
    let beside = std::env::current_exe().ok().and_then(|exe| {
        let exe = exe.canonicalize().unwrap_or(exe);
        Some(exe.parent()?.join(BIN))
    });
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).map(|d| d.join(BIN));
    beside.into_iter().chain(on_path).find(|p| p.is_file())
}

/// Run this command line's authoring command in `kata-dev`: the same
/// arguments, environment and standard streams. On Unix the process becomes
/// `kata-dev` (exec), so exit codes and signals are its own; this returns
/// only on failure.
pub fn hand_off() -> Result<()> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(dev) = locate() else {
        let here = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
        anyhow::bail!(
            "`kata plugin new|build|test|componentize|bindings|toolchain` are kata's plugin authoring tools, in the \
             separate `{BIN}` binary, which is neither next to this kata ({}) nor on PATH; install it beside kata \
             (`cargo install --path runtime/kata` installs both, or copy {BIN} from the same release) — running \
             and installing plugins needs only kata",
            here.map_or_else(|| "?".into(), |d| d.display().to_string())
        );
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(&dev).args(&args).env(HANDED_OFF_BY, env!("CARGO_PKG_VERSION")).exec();
        Err(err).with_context(|| format!("cannot run {}", dev.display()))
    }
    #[cfg(not(unix))]
    {
        let status = std::process::Command::new(&dev)
            .args(&args)
            .env(HANDED_OFF_BY, env!("CARGO_PKG_VERSION"))
            .status()
            .with_context(|| format!("cannot run {}", dev.display()))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}

/// `kata-dev`'s entry: run an authoring command (anything else belongs to
/// `kata`, and says so).
pub fn run(cli: Cli) -> Result<()> {
    if let Some(by) = std::env::var_os(HANDED_OFF_BY)
        && by != env!("CARGO_PKG_VERSION")
    {
        let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| BIN.into());
        anyhow::bail!(
            "{exe} is kata-dev {}, but the kata that ran it is {}: plugins it builds may not match what that kata \
             runs; install the kata-dev of the same version beside kata (`cargo install --path runtime/kata` installs both)",
            env!("CARGO_PKG_VERSION"),
            by.to_string_lossy()
        );
    }
    crate::cli::init_logging(cli.log_format.unwrap_or_default(), cli.verbose, "warn");
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Plugin(PluginCommand::Build { dir, out: file }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            let (path, rebuilt) = crate::build::build(&dir, file.as_deref())?;
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let note = if rebuilt { "" } else { ", up to date" };
            writeln!(out, "{} ({size} bytes{note})", path.display())?;
        }
        Command::Plugin(PluginCommand::Componentize { module, manifest, out: file }) => {
            let size = crate::componentize::componentize_file(&module, manifest.as_deref(), &file)?;
            writeln!(out, "{} ({size} bytes); install it with `kata plugin add {}`", file.display(), crate::store::shell_quote(&file))?;
        }
        Command::Plugin(PluginCommand::Bindings { lang, world, out: dir }) => {
            let written = crate::build::bindings(lang, &world, &dir)?;
            for f in written {
                writeln!(out, "{}", f.display())?;
            }
        }
        Command::Plugin(PluginCommand::Test { dir }) => {
            crate::build::test(&dir.unwrap_or_else(|| PathBuf::from(".")))?;
        }
        Command::Plugin(PluginCommand::Toolchain { cmd }) => match cmd {
            ToolchainCommand::Install { langs } => {
                // TypeScript is built by the JavaScript toolchain.
                let mut langs: Vec<_> = if langs.is_empty() { crate::build::Lang::ALL.to_vec() } else { langs };
                langs.iter_mut().for_each(|l| *l = l.toolchain());
                langs.dedup();
                for lang in langs {
                    crate::build::toolchain::install(lang).with_context(|| format!("installing the {lang} toolchain failed"))?;
                    writeln!(out, "{lang}: {}", crate::build::toolchain::status(lang)?)?;
                }
            }
            ToolchainCommand::Status => {
                for lang in crate::build::Lang::ALL.into_iter().filter(|l| *l != crate::build::Lang::Ts) {
                    match crate::build::toolchain::status(lang) {
                        Ok(s) => writeln!(out, "{lang:<7} {s}")?,
                        Err(e) => writeln!(out, "{lang:<7} missing: {e:#}")?,
                    }
                }
            }
        },
        Command::Plugin(PluginCommand::New { name, kind, lang, dir }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let next = crate::scaffold::new_project(&name, &kind, lang, &dir)?;
            writeln!(out, "Created {kind} plugin {name} ({lang}) in {}.", dir.display())?;
            writeln!(out, "Next: cd {} && {next}", crate::store::shell_quote(&dir))?;
        }
        _ => anyhow::bail!(
            "{BIN} runs only the plugin authoring commands (kata plugin new|build|test|componentize|bindings|toolchain); \
             run this one with `kata`"
        ),
    }
    Ok(())
}
