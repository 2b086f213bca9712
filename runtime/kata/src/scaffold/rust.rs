//! Rust templates: a cargo crate with the Rust SDK vendored in.

use super::{Template, WIT};
use crate::build::Lang;

macro_rules! rust_template {
    ($kind:literal, $dir:literal, $vendor:expr) => {
        Template {
            lang: Lang::Rust,
            kind: $kind,
            files: &[
                file!("Cargo.toml", concat!("../../templates/", $dir, "/Cargo.toml.tmpl")),
                file!("plugin.toml", concat!("../../templates/", $dir, "/plugin.toml.tmpl")),
                file!("src/lib.rs", concat!("../../templates/", $dir, "/src/lib.rs.tmpl")),
                file!("README.md", concat!("../../templates/", $dir, "/README.md.tmpl")),
                file!(".gitignore", concat!("../../templates/", $dir, "/gitignore.tmpl")),
            ],
            vendor: $vendor,
            next: "cargo test && kata plugin build .",
        }
    };
}

pub(super) const TEMPLATES: &[Template] = &[
    rust_template!("channel", "rust-channel", &[RUST_SDK, WIT]),
    rust_template!("tools", "rust-tools", &[WIT]),
    rust_template!("service", "rust-service", &[WIT]),
];

/// The Rust SDK, vendored next to the WIT: its `path = "../../../wit/vX"`
/// resolves to the project's `wit/` from `vendor/kata-sdk`.
const RUST_SDK: &[super::File] = &[
    file!("vendor/kata-sdk/Cargo.toml", "../../../../sdk/rust/Cargo.toml"),
    file!("vendor/kata-sdk/src/lib.rs", "../../../../sdk/rust/src/lib.rs"),
    file!("vendor/kata-sdk/src/config.rs", "../../../../sdk/rust/src/config.rs"),
    file!("vendor/kata-sdk/src/http.rs", "../../../../sdk/rust/src/http.rs"),
    file!("vendor/kata-sdk/src/log.rs", "../../../../sdk/rust/src/log.rs"),
    file!("vendor/kata-sdk/src/net.rs", "../../../../sdk/rust/src/net.rs"),
    file!("vendor/kata-sdk/src/state.rs", "../../../../sdk/rust/src/state.rs"),
];
