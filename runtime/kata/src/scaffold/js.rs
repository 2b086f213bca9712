//! JavaScript and TypeScript templates: an npm project (no dependencies to
//! install for JavaScript) with the kata SDK vendored in `vendor/kata-sdk/`.
//! `npm test` runs the plugin's logic under Node; `kata plugin build .`
//! compiles it with componentize-qjs.

use super::{File, Template};
use crate::build::Lang;

macro_rules! js_template {
    ($kind:literal, $dir:literal, $vendor:expr) => {
        Template {
            lang: Lang::Js,
            kind: $kind,
            files: &[
                file!("package.json", concat!("../../templates/", $dir, "/package.json.tmpl")),
                file!("plugin.toml", concat!("../../templates/", $dir, "/plugin.toml.tmpl")),
                file!("src/plugin.js", concat!("../../templates/", $dir, "/src/plugin.js.tmpl")),
                file!("src/logic.js", concat!("../../templates/", $dir, "/src/logic.js.tmpl")),
                file!("test/logic.test.js", concat!("../../templates/", $dir, "/test/logic.test.js.tmpl")),
                file!("README.md", concat!("../../templates/", $dir, "/README.md.tmpl")),
                file!(".gitignore", concat!("../../templates/", $dir, "/gitignore.tmpl")),
            ],
            vendor: $vendor,
            next: "npm test && kata plugin build .",
        }
    };
}

macro_rules! ts_template {
    ($kind:literal, $dir:literal, $vendor:expr) => {
        Template {
            lang: Lang::Ts,
            kind: $kind,
            files: &[
                file!("package.json", concat!("../../templates/", $dir, "/package.json.tmpl")),
                file!("tsconfig.json", concat!("../../templates/", $dir, "/tsconfig.json.tmpl")),
                file!("plugin.toml", concat!("../../templates/", $dir, "/plugin.toml.tmpl")),
                file!("src/plugin.ts", concat!("../../templates/", $dir, "/src/plugin.ts.tmpl")),
                file!("src/logic.ts", concat!("../../templates/", $dir, "/src/logic.ts.tmpl")),
                file!("test/logic.test.ts", concat!("../../templates/", $dir, "/test/logic.test.ts.tmpl")),
                file!("node-test.d.ts", concat!("../../templates/", $dir, "/node-test.d.ts.tmpl")),
                file!("README.md", concat!("../../templates/", $dir, "/README.md.tmpl")),
                file!(".gitignore", concat!("../../templates/", $dir, "/gitignore.tmpl")),
            ],
            vendor: $vendor,
            next: "npm install && npm test && kata plugin build .",
        }
    };
}

pub(super) const TEMPLATES: &[Template] = &[
    js_template!("channel", "js-channel", &[JS_SDK]),
    js_template!("tools", "js-tools", &[JS_SDK]),
    js_template!("service", "js-service", &[JS_SDK]),
    ts_template!("channel", "ts-channel", &[JS_SDK]),
    ts_template!("tools", "ts-tools", &[JS_SDK]),
    ts_template!("service", "ts-service", &[JS_SDK]),
];

/// The JavaScript SDK (sdk/js/src), with its types; the WIT it is built
/// against travels inside kata (build/js.rs).
const JS_SDK: &[File] = &[
    file!("vendor/kata-sdk/index.js", "../../../../sdk/js/src/index.js"),
    file!("vendor/kata-sdk/index.d.ts", "../../../../sdk/js/src/index.d.ts"),
    file!("vendor/kata-sdk/core.js", "../../../../sdk/js/src/core.js"),
    file!("vendor/kata-sdk/core.d.ts", "../../../../sdk/js/src/core.d.ts"),
    file!("vendor/kata-sdk/emitter.js", "../../../../sdk/js/src/emitter.js"),
    file!("vendor/kata-sdk/emitter.d.ts", "../../../../sdk/js/src/emitter.d.ts"),
    file!("vendor/kata-sdk/wit.d.ts", "../../../../sdk/js/src/wit.d.ts"),
    file!("vendor/kata-sdk/README.md", "../../../../sdk/js/README.md"),
];
