//! `kata plugin new`: a plugin project from a template that builds and passes
//! its own tests out of the box.
//!
//! Templates are embedded in the binary, one module per language, each with
//! a `TEMPLATES` list keyed by kind. Projects get the kata SDK of their
//! language and the WIT contract vendored in (the SDKs are not published to
//! any registry), which keeps a project buildable anywhere, offline.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::build::Lang;

/// One file of a template: its path in the project and its text, with
/// `{{name}}`, `{{crate_name}}` (the name with `_` for `-`),
/// `{{wit_version}}` and `{{wit_version_len}}` filled in.
pub struct File {
    /// Path in the project.
    pub path: &'static str,
    /// The text (placeholders are filled only in the template's own files,
    /// not in vendored ones).
    pub text: &'static str,
}

/// A project template.
pub struct Template {
    /// Its language.
    pub lang: Lang,
    /// Its kind: channel, tools or service.
    pub kind: &'static str,
    /// The template's own files.
    pub files: &'static [File],
    /// What is vendored in besides (SDK, WIT), copied as is.
    pub vendor: &'static [&'static [File]],
    /// The shell commands a user runs next, inside the project: its own test
    /// and the build, e.g. `cargo test && kata plugin build .`.
    pub next: &'static str,
}

/// `file!("path/in/project", "source/path/relative/to/this/module")`.
macro_rules! file {
    ($path:literal, $src:expr) => {
        $crate::scaffold::File { path: $path, text: include_str!($src) }
    };
}

mod c;
mod go;
mod js;
mod python;
mod rust;

/// Every template, of every language.
fn templates() -> impl Iterator<Item = &'static Template> {
    rust::TEMPLATES.iter().chain(js::TEMPLATES).chain(python::TEMPLATES).chain(c::TEMPLATES).chain(go::TEMPLATES)
}

/// The WIT contract, as vendored into projects (`wit/vX.Y.Z/`): the latest
/// version (`crate::host::latest`), which `{{wit_version}}` names.
pub const WIT: &[File] = &[
    file!("wit/v0.1.3/types.wit", "../../../../wit/v0.1.3/types.wit"),
    file!("wit/v0.1.3/host.wit", "../../../../wit/v0.1.3/host.wit"),
    file!("wit/v0.1.3/channel.wit", "../../../../wit/v0.1.3/channel.wit"),
    file!("wit/v0.1.3/tools.wit", "../../../../wit/v0.1.3/tools.wit"),
    file!("wit/v0.1.3/service.wit", "../../../../wit/v0.1.3/service.wit"),
    file!("wit/v0.1.3/connections.wit", "../../../../wit/v0.1.3/connections.wit"),
    file!("wit/v0.1.3/hooks.wit", "../../../../wit/v0.1.3/hooks.wit"),
    file!("wit/v0.1.3/worlds.wit", "../../../../wit/v0.1.3/worlds.wit"),
    file!("wit/v0.1.3/channel-batch.wit", "../../../../wit/v0.1.3/channel-batch.wit"),
];

/// [`WIT`] as (path, text) pairs.
pub const WIT_FILES: &[(&str, &str)] = &[
    (WIT[0].path, WIT[0].text),
    (WIT[1].path, WIT[1].text),
    (WIT[2].path, WIT[2].text),
    (WIT[3].path, WIT[3].text),
    (WIT[4].path, WIT[4].text),
    (WIT[5].path, WIT[5].text),
    (WIT[6].path, WIT[6].text),
    (WIT[7].path, WIT[7].text),
    (WIT[8].path, WIT[8].text),
];

/// The previous contract, 0.1.2, as (path, text) pairs: for SDKs that have
/// not moved to the latest yet (the host keeps loading their components;
/// pin them with this and `kata_host::host::v0_1_2::VERSION`).
pub const WIT_V0_1_2_FILES: &[(&str, &str)] = &[
    ("wit/v0.1.2/types.wit", include_str!("../../../../wit/v0.1.2/types.wit")),
    ("wit/v0.1.2/host.wit", include_str!("../../../../wit/v0.1.2/host.wit")),
    ("wit/v0.1.2/channel.wit", include_str!("../../../../wit/v0.1.2/channel.wit")),
    ("wit/v0.1.2/tools.wit", include_str!("../../../../wit/v0.1.2/tools.wit")),
    ("wit/v0.1.2/service.wit", include_str!("../../../../wit/v0.1.2/service.wit")),
    ("wit/v0.1.2/worlds.wit", include_str!("../../../../wit/v0.1.2/worlds.wit")),
];

/// Create a plugin project `name` of `kind` in `lang` at `dir`. Returns the
/// commands to run next (the template's test and build).
pub fn new_project(name: &str, kind: &str, lang: Lang, dir: &Path) -> Result<&'static str> {
    if !crate::policy::valid_plugin_name(name) {
        bail!("plugin name {name:?} must be lowercase letters, digits, '-' or '_'");
    }
    let Some(t) = templates().find(|t| t.lang == lang && t.kind == kind) else {
        let have: Vec<String> = templates().map(|t| format!("--lang {} --kind {}", t.lang, t.kind)).collect();
        bail!("there is no {lang} template for {kind} plugins; available: {}", have.join(", "));
    };
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; choose another directory", dir.display());
    }
    let crate_name = name.replace('-', "_");
    // Rust follows the latest WIT; the other SDKs are on SDK_WIT_VERSION.
    let version = if lang == Lang::Rust { crate::host::latest::VERSION } else { crate::build::SDK_WIT_VERSION };
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
    Ok(t.next)
}
