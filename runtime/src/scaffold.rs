//! `kata plugin new`: a plugin project from a template that builds and passes
//! its own tests out of the box.
//!
//! Templates are embedded in the binary, keyed by language and kind, so a new
//! language is a new entry in [`TEMPLATES`]. Rust projects get the kata SDK
//! and the WIT contract vendored in (the SDK is not on crates.io), which keeps
//! the project buildable anywhere, offline.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// One file of a template: its path in the project and its text, with
/// `{{name}}`, `{{crate_name}}` and `{{wit_version}}` filled in.
struct File {
    path: &'static str,
    text: &'static str,
}

/// A project template.
struct Template {
    lang: &'static str,
    kind: &'static str,
    files: &'static [File],
    /// Whether the Rust SDK and the WIT are vendored in.
    vendor_rust_sdk: bool,
}

macro_rules! file {
    ($path:literal, $src:literal) => {
        File { path: $path, text: include_str!($src) }
    };
}

const TEMPLATES: &[Template] = &[Template {
    lang: "rust",
    kind: "channel",
    files: &[
        file!("Cargo.toml", "../templates/rust-channel/Cargo.toml.tmpl"),
        file!("plugin.toml", "../templates/rust-channel/plugin.toml.tmpl"),
        file!("src/lib.rs", "../templates/rust-channel/src/lib.rs.tmpl"),
        file!("README.md", "../templates/rust-channel/README.md.tmpl"),
        file!(".gitignore", "../templates/rust-channel/gitignore.tmpl"),
    ],
    vendor_rust_sdk: true,
}];

/// The Rust SDK and the WIT it is generated from, as vendored into projects.
/// The SDK's `path = "../../wit/vX"` resolves to the project's `wit/` from
/// `vendor/kata-sdk`.
const RUST_SDK: &[File] = &[
    file!("vendor/kata-sdk/Cargo.toml", "../../sdk/rust/Cargo.toml"),
    file!("vendor/kata-sdk/src/lib.rs", "../../sdk/rust/src/lib.rs"),
    file!("vendor/kata-sdk/src/config.rs", "../../sdk/rust/src/config.rs"),
    file!("vendor/kata-sdk/src/http.rs", "../../sdk/rust/src/http.rs"),
    file!("vendor/kata-sdk/src/log.rs", "../../sdk/rust/src/log.rs"),
    file!("vendor/kata-sdk/src/state.rs", "../../sdk/rust/src/state.rs"),
    file!("wit/v0.1.1/types.wit", "../../wit/v0.1.1/types.wit"),
    file!("wit/v0.1.1/host.wit", "../../wit/v0.1.1/host.wit"),
    file!("wit/v0.1.1/channel.wit", "../../wit/v0.1.1/channel.wit"),
    file!("wit/v0.1.1/tools.wit", "../../wit/v0.1.1/tools.wit"),
    file!("wit/v0.1.1/service.wit", "../../wit/v0.1.1/service.wit"),
    file!("wit/v0.1.1/worlds.wit", "../../wit/v0.1.1/worlds.wit"),
];

/// Create a plugin project `name` of `kind` in `lang` at `dir`.
pub fn new_project(name: &str, kind: &str, lang: &str, dir: &Path) -> Result<()> {
    if !crate::policy::valid_plugin_name(name) {
        bail!("plugin name {name:?} must be lowercase letters, digits, '-' or '_'");
    }
    let Some(t) = TEMPLATES.iter().find(|t| t.lang == lang && t.kind == kind) else {
        let have: Vec<String> = TEMPLATES.iter().map(|t| format!("--lang {} --kind {}", t.lang, t.kind)).collect();
        bail!(
            "there is no {lang} template for {kind} plugins yet (this kata runs channel plugins; tools and \
             service plugins come with the agent-tools and services work); available: {}",
            have.join(", ")
        );
    };
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; choose another directory", dir.display());
    }
    let crate_name = name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate_name}}", &crate_name)
            .replace("{{wit_version}}", crate::host::latest::VERSION)
    };
    let sdk: &[File] = if t.vendor_rust_sdk { RUST_SDK } else { &[] };
    for f in t.files.iter().map(|f| (f.path, fill(f.text))).chain(sdk.iter().map(|f| (f.path, f.text.to_string()))) {
        let path = dir.join(f.0);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, f.1).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
