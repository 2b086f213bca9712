//! C templates: a Makefile project (`make test` runs the plain-C logic's
//! unit tests natively; `kata plugin build .` builds the component) with the
//! kata C SDK vendored in `vendor/kata/`. No WIT is vendored: `kata plugin
//! build` writes the bindings from the WIT built into kata.

use super::Template;
use crate::build::Lang;

macro_rules! c_template {
    ($kind:literal, $dir:literal, [$($path:literal),* $(,)?]) => {
        Template {
            lang: Lang::C,
            kind: $kind,
            files: &[
                file!("plugin.toml", concat!("../../templates/", $dir, "/plugin.toml.tmpl")),
                file!("Makefile", concat!("../../templates/", $dir, "/Makefile.tmpl")),
                file!("README.md", concat!("../../templates/", $dir, "/README.md.tmpl")),
                file!(".gitignore", concat!("../../templates/", $dir, "/gitignore.tmpl")),
                $(file!($path, concat!("../../templates/", $dir, "/", $path, ".tmpl")),)*
            ],
            vendor: &[C_SDK],
            next: "make test && kata plugin build .",
        }
    };
}

pub(super) const TEMPLATES: &[Template] = &[
    c_template!("channel", "c-channel", ["src/channel.c", "src/api.c", "src/api.h", "tests/test_api.c"]),
    c_template!("tools", "c-tools", ["src/tools.c", "src/word_count.c", "src/word_count.h", "tests/test_word_count.c"]),
    c_template!("service", "c-service", ["src/service.c", "src/reminder.c", "src/reminder.h", "tests/test_reminder.c"]),
];

/// The kata C SDK (sdk/c/kata), vendored as `vendor/kata/`.
const C_SDK: &[super::File] = &[
    file!("vendor/kata/kata.h", "../../../../sdk/c/kata/kata.h"),
    file!("vendor/kata/kata.c", "../../../../sdk/c/kata/kata.c"),
    file!("vendor/kata/kata_json.h", "../../../../sdk/c/kata/kata_json.h"),
    file!("vendor/kata/kata_json.c", "../../../../sdk/c/kata/kata_json.c"),
    file!("vendor/kata/README.md", "../../../../sdk/c/README.md"),
];
