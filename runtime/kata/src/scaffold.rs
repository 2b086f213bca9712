//! `kata plugin new`: a plugin project from a template that builds and passes
//! its own tests out of the box.
//!
//! Templates are embedded in the binary, keyed by language and kind, so a new
//! language is a new entry in `TEMPLATES`. Rust projects get the kata SDK
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
    /// What is vendored in besides the template's own files.
    vendor: &'static [&'static [File]],
}

macro_rules! file {
    ($path:literal, $src:expr) => {
        File { path: $path, text: include_str!($src) }
    };
}

macro_rules! rust_template {
    ($kind:literal, $dir:literal, $vendor:expr) => {
        Template {
            lang: "rust",
            kind: $kind,
            files: &[
                file!("Cargo.toml", concat!("../templates/", $dir, "/Cargo.toml.tmpl")),
                file!("plugin.toml", concat!("../templates/", $dir, "/plugin.toml.tmpl")),
                file!("src/lib.rs", concat!("../templates/", $dir, "/src/lib.rs.tmpl")),
                file!("README.md", concat!("../templates/", $dir, "/README.md.tmpl")),
                file!(".gitignore", concat!("../templates/", $dir, "/gitignore.tmpl")),
            ],
            vendor: $vendor,
        }
    };
}

const TEMPLATES: &[Template] = &[
    rust_template!("channel", "rust-channel", &[RUST_SDK, WIT]),
    rust_template!("tools", "rust-tools", &[WIT]),
    rust_template!("service", "rust-service", &[WIT]),
];

/// The WIT contract, as vendored into projects (`wit/vX.Y.Z/`).
const WIT: &[File] = &[
    file!("wit/v0.1.2/types.wit", "../../../wit/v0.1.2/types.wit"),
    file!("wit/v0.1.2/host.wit", "../../../wit/v0.1.2/host.wit"),
    file!("wit/v0.1.2/channel.wit", "../../../wit/v0.1.2/channel.wit"),
    file!("wit/v0.1.2/tools.wit", "../../../wit/v0.1.2/tools.wit"),
    file!("wit/v0.1.2/service.wit", "../../../wit/v0.1.2/service.wit"),
    file!("wit/v0.1.2/worlds.wit", "../../../wit/v0.1.2/worlds.wit"),
];

/// The Rust SDK, vendored next to the WIT: its `path = "../../../wit/vX"`
/// resolves to the project's `wit/` from `vendor/kata-sdk`.
const RUST_SDK: &[File] = &[
    file!("vendor/kata-sdk/Cargo.toml", "../../../sdk/rust/Cargo.toml"),
    file!("vendor/kata-sdk/src/lib.rs", "../../../sdk/rust/src/lib.rs"),
    file!("vendor/kata-sdk/src/config.rs", "../../../sdk/rust/src/config.rs"),
    file!("vendor/kata-sdk/src/http.rs", "../../../sdk/rust/src/http.rs"),
    file!("vendor/kata-sdk/src/log.rs", "../../../sdk/rust/src/log.rs"),
    file!("vendor/kata-sdk/src/state.rs", "../../../sdk/rust/src/state.rs"),
];

/// Create a plugin project `name` of `kind` in `lang` at `dir`.
pub fn new_project(name: &str, kind: &str, lang: &str, dir: &Path) -> Result<()> {
    if !crate::policy::valid_plugin_name(name) {
        bail!("plugin name {name:?} must be lowercase letters, digits, '-' or '_'");
    }
    let Some(t) = TEMPLATES.iter().find(|t| t.lang == lang && t.kind == kind) else {
        let have: Vec<String> = TEMPLATES.iter().map(|t| format!("--lang {} --kind {}", t.lang, t.kind)).collect();
        bail!("there is no {lang} template for {kind} plugins; available: {}", have.join(", "));
    };
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; choose another directory", dir.display());
    }
    let crate_name = name.replace('-', "_");
    let version = crate::host::latest::VERSION;
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate_name}}", &crate_name)
            .replace("{{wit_version_len}}", &version.len().to_string())
            .replace("{{wit_version}}", version)
    };
    let files = t.files.iter().map(|f| (f.path, fill(f.text)));
    let vendored = t.vendor.iter().flat_map(|set| set.iter()).map(|f| (f.path, f.text.to_string()));
    for f in files.chain(vendored) {
        let path = dir.join(f.0);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, f.1).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
