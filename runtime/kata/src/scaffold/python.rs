//! Python templates: a componentize-py project (`pyproject.toml` with
//! `[tool.kata]`, `app.py`, `test_app.py`) with the Python SDK (`kata/`),
//! the bindings stubs of its world (`kata/_bindings/`, so the SDK imports
//! natively for `python3 -m unittest`) and the WIT (`wit/`: the Python
//! worlds, WASI 0.2.12 and kata's contract, the latest version, as
//! `wit/deps/kata-plugin/`) vendored in.

use super::{File, Template};
use crate::build::Lang;

macro_rules! python_template {
    ($kind:literal, $dir:literal, $stubs:expr) => {
        Template {
            lang: Lang::Python,
            kind: $kind,
            files: &[
                file!("pyproject.toml", concat!("../../templates/", $dir, "/pyproject.toml.tmpl")),
                file!("plugin.toml", concat!("../../templates/", $dir, "/plugin.toml.tmpl")),
                file!("app.py", concat!("../../templates/", $dir, "/app.py.tmpl")),
                file!("test_app.py", concat!("../../templates/", $dir, "/test_app.py.tmpl")),
                file!("README.md", concat!("../../templates/", $dir, "/README.md.tmpl")),
                file!(".gitignore", concat!("../../templates/", $dir, "/gitignore.tmpl")),
            ],
            vendor: &[PYTHON_SDK, $stubs, PYTHON_WIT],
            next: "python3 -m unittest && kata plugin build .",
        }
    };
}

pub(super) const TEMPLATES: &[Template] = &[
    python_template!("channel", "python-channel", CHANNEL_STUBS),
    python_template!("tools", "python-tools", TOOLS_STUBS),
    python_template!("service", "python-service", SERVICE_STUBS),
];

/// The Python SDK (sdk/python/kata).
const PYTHON_SDK: &[File] = &[
    file!("kata/__init__.py", "../../../../sdk/python/kata/__init__.py"),
    file!("kata/_host.py", "../../../../sdk/python/kata/_host.py"),
    file!("kata/_wit.py", "../../../../sdk/python/kata/_wit.py"),
    file!("kata/errors.py", "../../../../sdk/python/kata/errors.py"),
    file!("kata/http.py", "../../../../sdk/python/kata/http.py"),
    file!("kata/net.py", "../../../../sdk/python/kata/net.py"),
    file!("kata/testing.py", "../../../../sdk/python/kata/testing.py"),
];

/// The WIT a Python project builds against: the Python worlds (kata's worlds
/// plus `wasi:http/outgoing-handler`), WASI 0.2.12 and kata's contract.
const PYTHON_WIT: &[File] = &[
    file!("wit/worlds.wit", "../../../../sdk/python/wit/worlds.wit"),
    file!("wit/deps/wasi-cli.wit", "../../../../sdk/python/wit/deps/wasi-cli.wit"),
    file!("wit/deps/wasi-clocks.wit", "../../../../sdk/python/wit/deps/wasi-clocks.wit"),
    file!("wit/deps/wasi-filesystem.wit", "../../../../sdk/python/wit/deps/wasi-filesystem.wit"),
    file!("wit/deps/wasi-http.wit", "../../../../sdk/python/wit/deps/wasi-http.wit"),
    file!("wit/deps/wasi-io.wit", "../../../../sdk/python/wit/deps/wasi-io.wit"),
    file!("wit/deps/wasi-random.wit", "../../../../sdk/python/wit/deps/wasi-random.wit"),
    file!("wit/deps/wasi-sockets.wit", "../../../../sdk/python/wit/deps/wasi-sockets.wit"),
    file!("wit/deps/kata-plugin/types.wit", "../../../../wit/v0.1.3/types.wit"),
    file!("wit/deps/kata-plugin/host.wit", "../../../../wit/v0.1.3/host.wit"),
    file!("wit/deps/kata-plugin/channel.wit", "../../../../wit/v0.1.3/channel.wit"),
    file!("wit/deps/kata-plugin/tools.wit", "../../../../wit/v0.1.3/tools.wit"),
    file!("wit/deps/kata-plugin/service.wit", "../../../../wit/v0.1.3/service.wit"),
    file!("wit/deps/kata-plugin/connections.wit", "../../../../wit/v0.1.3/connections.wit"),
    file!("wit/deps/kata-plugin/hooks.wit", "../../../../wit/v0.1.3/hooks.wit"),
    file!("wit/deps/kata-plugin/worlds.wit", "../../../../wit/v0.1.3/worlds.wit"),
];

/// `stubs!(world; "exports/x.py", …)`: the generated stubs of `world`
/// (sdk/python/bindings/WORLD, see sdk/python/generate.sh) as kata/_bindings/.
macro_rules! stubs {
    ($world:literal; $($extra:literal),*) => {
        &[
            file!("kata/_bindings/componentize_py_types.py", concat!("../../../../sdk/python/bindings/", $world, "/componentize_py_types.py")),
            file!("kata/_bindings/wit_world/__init__.py", concat!("../../../../sdk/python/bindings/", $world, "/wit_world/__init__.py")),
            file!("kata/_bindings/wit_world/exports/__init__.py", concat!("../../../../sdk/python/bindings/", $world, "/wit_world/exports/__init__.py")),
            file!("kata/_bindings/wit_world/imports/__init__.py", concat!("../../../../sdk/python/bindings/", $world, "/wit_world/imports/__init__.py")),
            file!("kata/_bindings/wit_world/imports/error.py", concat!("../../../../sdk/python/bindings/", $world, "/wit_world/imports/error.py")),
            file!("kata/_bindings/wit_world/imports/host.py", concat!("../../../../sdk/python/bindings/", $world, "/wit_world/imports/host.py")),
            file!(
                "kata/_bindings/wit_world/imports/kata_plugin_types.py",
                concat!("../../../../sdk/python/bindings/", $world, "/wit_world/imports/kata_plugin_types.py")
            ),
            file!(
                "kata/_bindings/wit_world/imports/monotonic_clock.py",
                concat!("../../../../sdk/python/bindings/", $world, "/wit_world/imports/monotonic_clock.py")
            ),
            file!(
                "kata/_bindings/wit_world/imports/outgoing_handler.py",
                concat!("../../../../sdk/python/bindings/", $world, "/wit_world/imports/outgoing_handler.py")
            ),
            file!("kata/_bindings/wit_world/imports/poll.py", concat!("../../../../sdk/python/bindings/", $world, "/wit_world/imports/poll.py")),
            file!("kata/_bindings/wit_world/imports/streams.py", concat!("../../../../sdk/python/bindings/", $world, "/wit_world/imports/streams.py")),
            file!(
                "kata/_bindings/wit_world/imports/wasi_http_types.py",
                concat!("../../../../sdk/python/bindings/", $world, "/wit_world/imports/wasi_http_types.py")
            ),
            $(File {
                path: concat!("kata/_bindings/wit_world/", $extra),
                text: include_str!(concat!("../../../../sdk/python/bindings/", $world, "/wit_world/", $extra)),
            },)*
        ]
    };
}

const CHANNEL_STUBS: &[File] = stubs!("channel"; "exports/channel.py", "imports/connections.py");
const TOOLS_STUBS: &[File] = stubs!("tools"; "exports/tools.py", "imports/connections.py", "imports/scheduler.py");
const SERVICE_STUBS: &[File] = stubs!("service"; "exports/service.py", "imports/emitter.py", "imports/connections.py");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_vendors_the_sdk_its_stubs_and_the_wit() {
        for t in TEMPLATES {
            let paths: Vec<&str> = t.files.iter().chain(t.vendor.iter().flat_map(|s| s.iter())).map(|f| f.path).collect();
            for want in
                ["pyproject.toml", "app.py", "test_app.py", "kata/__init__.py", "kata/_bindings/wit_world/__init__.py", "wit/worlds.wit"]
            {
                assert!(paths.contains(&want), "{} lacks {want}", t.kind);
            }
            let pyproject = t.files.iter().find(|f| f.path == "pyproject.toml").unwrap().text;
            assert!(pyproject.contains(&format!("world = \"{}\"", t.kind)), "{}", t.kind);
            let export = format!("kata/_bindings/wit_world/exports/{}.py", t.kind);
            assert!(paths.contains(&export.as_str()), "{} lacks {export}", t.kind);
        }
    }

    #[test]
    fn the_vendored_sdk_and_stubs_are_complete() {
        let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/python");
        let listed = |set: &[File], prefix: &str| -> Vec<String> {
            let mut v: Vec<String> = set.iter().filter_map(|f| f.path.strip_prefix(prefix)).map(str::to_string).collect();
            v.sort();
            v
        };
        let mut on_disk: Vec<String> = std::fs::read_dir(sdk.join("kata"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".py"))
            .collect();
        on_disk.sort();
        assert_eq!(listed(PYTHON_SDK, "kata/"), on_disk, "sdk/python/kata/*.py and PYTHON_SDK differ");
        for (world, stubs) in [("channel", CHANNEL_STUBS), ("tools", TOOLS_STUBS), ("service", SERVICE_STUBS)] {
            let mut files = Vec::new();
            let root = sdk.join("bindings").join(world);
            let mut dirs = vec![root.clone()];
            while let Some(d) = dirs.pop() {
                for e in std::fs::read_dir(&d).unwrap().flatten() {
                    if e.path().is_dir() {
                        dirs.push(e.path());
                    } else {
                        files.push(e.path().strip_prefix(&root).unwrap().display().to_string());
                    }
                }
            }
            files.sort();
            assert_eq!(listed(stubs, "kata/_bindings/"), files, "sdk/python/bindings/{world} and its stubs list differ");
        }
    }
}
