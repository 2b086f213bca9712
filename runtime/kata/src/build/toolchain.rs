//! `kata plugin toolchain install|status`: the pinned toolchains that build
//! plugins in each language, installed into a directory kata manages
//! (`$KATA_TOOLCHAINS`, else `$XDG_DATA_HOME/kata/toolchains`, one
//! subdirectory per language), never into the user's global npm or pip.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Lang;

/// Where toolchains are installed: `$KATA_TOOLCHAINS`, else the XDG data
/// directory's `kata/toolchains`.
pub fn root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KATA_TOOLCHAINS").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let dirs = directories::ProjectDirs::from("", "", "kata")
        .context("cannot find a home directory for kata's toolchains; set KATA_TOOLCHAINS to a directory")?;
    Ok(dirs.data_dir().join("toolchains"))
}

/// The directory of one language's toolchain.
pub fn dir(lang: Lang) -> Result<PathBuf> {
    Ok(root()?.join(lang.toolchain().name()))
}

/// Install `lang`'s toolchain (idempotent: what is there and current is kept).
pub fn install(lang: Lang) -> Result<()> {
    match lang.toolchain() {
        Lang::Rust => install_rust(),
        Lang::Js | Lang::Ts => super::js::install(),
        Lang::Python => super::python::install(),
        Lang::C => super::c::install(),
        Lang::Go => super::go::install(),
    }
}

/// What is installed for `lang` (one line), or an error naming the command
/// that installs it.
pub fn status(lang: Lang) -> Result<String> {
    match lang.toolchain() {
        Lang::Rust => {
            let t = kata_host::componentize::Toolchain::detect()?;
            Ok(format!("{t:?} Rust toolchain for {}", kata_host::componentize::GUEST_TARGET))
        }
        Lang::Js | Lang::Ts => super::js::status(),
        Lang::Python => super::python::status(),
        Lang::C => super::c::status(),
        Lang::Go => super::go::status(),
    }
}

/// The one-line error for a missing toolchain.
pub fn missing(lang: Lang, what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the {} plugin toolchain is not installed ({what}); install it with `kata plugin toolchain install {}` \
         (scripts/setup.sh does this for a checkout)",
        lang.toolchain().display_name(),
        lang.toolchain().name()
    )
}

fn install_rust() -> Result<()> {
    if kata_host::componentize::Toolchain::detect().is_ok() {
        return Ok(());
    }
    let target = kata_host::componentize::GUEST_TARGET;
    eprintln!("adding the {target} target with rustup (usually under a minute)…");
    let status =
        std::process::Command::new("timeout").args(["180", "rustup", "target", "add", target]).status().context("cannot run rustup")?;
    if !status.success() || kata_host::componentize::Toolchain::detect().is_err() {
        anyhow::bail!(
            "`rustup target add {target}` did not finish; on Debian, install rustc-web, cargo-web, rust-web-src, lld-19 and \
             wasi-libc with apt and kata builds with them (scripts/setup.sh does this)"
        );
    }
    Ok(())
}
