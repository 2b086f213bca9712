//! The python toolchain: see the module docs of [`super`] for the contract.

use std::path::Path;

use anyhow::Result;

use super::{Built, Lang};

/// Build the project in `dir`.
pub fn build(dir: &Path, lang: Lang) -> Result<Built> {
    let _ = dir;
    Err(super::toolchain::missing(lang, "not yet supported by this kata"))
}

/// Install the pinned toolchain.
pub fn install() -> Result<()> {
    anyhow::bail!("not yet supported by this kata")
}

/// What is installed.
pub fn status() -> Result<String> {
    anyhow::bail!("not yet supported by this kata")
}
