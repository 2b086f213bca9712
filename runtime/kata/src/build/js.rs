//! JavaScript and TypeScript plugins: componentize-qjs (QuickJS), with HTTP
//! through a small adapter kata composes in.
//!
//! The toolchain is a pinned npm project (sdk/js/toolchain: componentize-qjs
//! and typescript) that `install` puts into kata's toolchain directory with
//! `npm ci`. A build:
//!
//! 1. TypeScript only: `tsc -p .` with the project's tsconfig.json (the
//!    template writes JavaScript to `build/js/`);
//! 2. componentize-qjs compiles the entry module (package.json `main`) for
//!    the world in package.json `kata.world` (`channel` by default, or
//!    `tools`, `service`, `channel-tools`) of the WIT in sdk/js/wit, which
//!    kata carries and writes to `build/.kata/wit/`;
//! 3. the result imports `kata:js/http`, which the HTTP adapter
//!    (sdk/js/http-adapter, the Rust SDK's client, carried by kata as a core
//!    module) exports; kata componentizes the adapter and composes the two,
//!    so the plugin imports plain `wasi:http` like any other;
//! 4. [`super::finish`] embeds plugin.toml and records the language.
//!
//! sdk/js/README.md says why QuickJS rather than componentize-js.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{Built, Lang, toolchain};

/// The toolchain's package.json and lockfile, installed with `npm ci`.
const PACKAGE_JSON: &str = include_str!("../../../../sdk/js/toolchain/package.json");
const PACKAGE_LOCK: &str = include_str!("../../../../sdk/js/toolchain/package-lock.json");

/// The HTTP adapter's core module (built by sdk/js/generate.sh).
const HTTP_ADAPTER: &[u8] = include_bytes!("../../../../sdk/js/kata-http-adapter.core.wasm");

/// The interface the adapter exports and JavaScript plugins import.
const HTTP_INTERFACE: &str = "kata:js/http@0.1.0";

/// The WIT JavaScript plugins are built against: the kata:js package (worlds
/// `channel`, `tools`, `service`, `channel-tools`) and its dependencies.
const WIT: &[(&str, &str)] = &[
    ("js.wit", include_str!("../../../../sdk/js/wit/js.wit")),
    ("deps/kata-plugin/types.wit", include_str!("../../../../sdk/js/wit/deps/kata-plugin/types.wit")),
    ("deps/kata-plugin/host.wit", include_str!("../../../../sdk/js/wit/deps/kata-plugin/host.wit")),
    ("deps/kata-plugin/channel.wit", include_str!("../../../../sdk/js/wit/deps/kata-plugin/channel.wit")),
    ("deps/kata-plugin/tools.wit", include_str!("../../../../sdk/js/wit/deps/kata-plugin/tools.wit")),
    ("deps/kata-plugin/service.wit", include_str!("../../../../sdk/js/wit/deps/kata-plugin/service.wit")),
    ("deps/kata-plugin/worlds.wit", include_str!("../../../../sdk/js/wit/deps/kata-plugin/worlds.wit")),
    ("deps/wasi-clocks/clocks.wit", include_str!("../../../../sdk/js/wit/deps/wasi-clocks/clocks.wit")),
    ("deps/wasi-filesystem/filesystem.wit", include_str!("../../../../sdk/js/wit/deps/wasi-filesystem/filesystem.wit")),
    ("deps/wasi-io/io.wit", include_str!("../../../../sdk/js/wit/deps/wasi-io/io.wit")),
];

/// The worlds of sdk/js/wit/js.wit a project may name in package.json.
const WORLDS: &[&str] = &["channel", "tools", "service", "channel-tools"];

/// The packages the toolchain must hold, with the versions pinned in its
/// package.json.
const PINNED: &[&str] = &["componentize-qjs", "typescript"];

/// Build the project in `dir`.
pub fn build(dir: &Path, lang: Lang) -> Result<Built> {
    let tools = toolchain::dir(Lang::Js)?;
    status().map_err(|_| toolchain::missing(lang, &format!("componentize-qjs is not installed in {}", tools.display())))?;
    let project = Project::read(dir)?;

    if lang == Lang::Ts {
        eprintln!("compiling TypeScript with tsc (a few seconds)…");
        let tsc = tools.join("node_modules/typescript/bin/tsc");
        super::run("tsc (TypeScript → JavaScript)", Command::new(node()?).arg(tsc).args(["-p", "tsconfig.json"]).current_dir(dir))?;
    }
    let entry = dir.join(&project.main);
    if !entry.is_file() {
        let hint = if lang == Lang::Ts {
            "tsc did not write it: check `outDir` in tsconfig.json against `main` in package.json"
        } else {
            "set `main` in package.json to the plugin's entry module"
        };
        bail!("{} has no entry module {} ({hint})", dir.display(), project.main);
    }

    // Fixed relative paths inside the project, so the same project builds
    // the same way wherever it is.
    let work = dir.join("build").join(".kata");
    let wit = work.join("wit");
    let _ = std::fs::remove_dir_all(&wit);
    for (path, text) in WIT {
        let file = wit.join(path);
        std::fs::create_dir_all(file.parent().unwrap_or(&wit)).with_context(|| format!("cannot create {}", wit.display()))?;
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    let raw = work.join("plugin.qjs.wasm");
    let key_file = work.join("plugin.qjs.key");
    let key = source_key(dir, &project)?;
    let reuse = raw.is_file() && std::fs::read_to_string(&key_file).is_ok_and(|k| k.trim() == key);
    if reuse {
        // componentize-qjs snapshots QuickJS's heap, which holds a random
        // hash seed and the clock: the same source would not give the same
        // bytes twice. Reuse the snapshot of this exact source instead.
        tracing::debug!("reusing {} (same source)", raw.display());
    } else {
        let _ = std::fs::remove_file(&key_file);
        eprintln!("compiling {} with componentize-qjs for world {} (about 5 s)…", project.main, project.world);
        super::run(
            "componentize-qjs (JavaScript → component)",
            Command::new(node()?)
                .arg(tools.join("node_modules/componentize-qjs/bin/componentize-qjs"))
                .args(["--wit", "build/.kata/wit", "--world", &project.world, "--js", &project.main, "--module-root", ".", "--sync", "-o"])
                .arg("build/.kata/plugin.qjs.wasm")
                .current_dir(dir)
                .env("SOURCE_DATE_EPOCH", "0"),
        )?;
        std::fs::write(&key_file, format!("{key}\n")).with_context(|| format!("cannot write {}", key_file.display()))?;
    }
    let js = std::fs::read(&raw).with_context(|| format!("cannot read {}", raw.display()))?;
    let mut wasm = compose_http(js).context("cannot compose the HTTP adapter into the JavaScript component")?;
    kata_policy::manifest::append_custom_section(&mut wasm, kata_host::host::VERSION_SECTION, super::SDK_WIT_VERSION.as_bytes());
    Ok(Built { wasm, version: project.version })
}

/// If the JavaScript component imports `kata:js/http`, instantiate the
/// adapter and wire its export to that import; the composed component
/// imports what both import (the same WASI names, merged) and exports what
/// the JavaScript exports.
pub fn compose_http(js: Vec<u8>) -> Result<Vec<u8>> {
    use wasm_compose::graph::{Component, CompositionGraph, EncodeOptions};

    let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    let plugin = Component::from_bytes(&mut validator, "plugin", js.clone())?;
    let Some((import, _)) = plugin.import_by_name(HTTP_INTERFACE) else {
        return Ok(js);
    };
    let adapter = kata_host::componentize::componentize(HTTP_ADAPTER).context("cannot componentize the HTTP adapter")?;
    let adapter = Component::from_bytes(&mut validator, "kata-http", adapter)?;
    let Some((export, _, _)) = adapter.export_by_name(HTTP_INTERFACE) else {
        bail!("the HTTP adapter built into kata does not export {HTTP_INTERFACE}");
    };
    let mut graph = CompositionGraph::new();
    let plugin = graph.add_component(plugin)?;
    let adapter = graph.add_component(adapter)?;
    let plugin = graph.instantiate(plugin)?;
    let adapter = graph.instantiate(adapter)?;
    graph.connect(adapter, Some(export), plugin, import)?;
    graph.encode(EncodeOptions { define_components: true, export: Some(plugin), validate: true })
}

/// sha256 over what decides componentize-qjs's output: kata's version, the
/// toolchain, the world and entry, and every file of the project outside
/// build outputs and dependencies (for TypeScript, the sources tsc compiled).
fn source_key(dir: &Path, project: &Project) -> Result<String> {
    use sha2::{Digest, Sha256};
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let ty = entry.file_type()?;
            if ty.is_dir() {
                if !["build", "node_modules", ".git", "target", "dist"].iter().any(|s| entry.file_name() == *s) {
                    walk(root, &path, out)?;
                }
            } else if ty.is_file() {
                out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for part in [env!("CARGO_PKG_VERSION"), &status().unwrap_or_default(), &project.world, &project.main] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (path, text) in WIT {
        h.update(path.as_bytes());
        h.update(text.as_bytes());
    }
    for rel in files {
        let bytes = std::fs::read(dir.join(&rel)).with_context(|| format!("cannot read {}", dir.join(&rel).display()))?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(hex::encode(h.finalize()))
}

/// What kata reads from package.json.
struct Project {
    /// The entry module, relative to the project.
    main: String,
    /// The kata:js world.
    world: String,
    version: Option<String>,
}

impl Project {
    fn read(dir: &Path) -> Result<Project> {
        let file = dir.join("package.json");
        let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", file.display()))?;
        let main = json["main"].as_str().unwrap_or("src/plugin.js").trim_start_matches("./").to_string();
        let world = json["kata"]["world"].as_str().unwrap_or("channel").to_string();
        if !WORLDS.contains(&world.as_str()) {
            bail!("{}: `kata.world` is {world:?}; it must be one of {}", file.display(), WORLDS.join(", "));
        }
        let version = json["version"].as_str().map(str::to_string);
        Ok(Project { main, world, version })
    }
}

/// The `node` to run: `$KATA_NODE`, else `node` on PATH.
fn node() -> Result<PathBuf> {
    if let Some(n) = std::env::var_os("KATA_NODE").filter(|n| !n.is_empty()) {
        return Ok(PathBuf::from(n));
    }
    Ok(PathBuf::from("node"))
}

/// `node --version`, or an error telling how to install Node.js.
fn node_version() -> Result<String> {
    let out = Command::new(node()?).arg("--version").output();
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        _ => bail!(
            "Node.js (`node`, version 18 or newer, with npm) is needed to build JavaScript and TypeScript plugins and was not found; \
             install it (Debian/Ubuntu: `apt-get install nodejs npm`), or point KATA_NODE at a node binary"
        ),
    }
}

/// Install the pinned toolchain with `npm ci` (skipped when the installed
/// lockfile is the one this kata carries and every package is there).
pub fn install() -> Result<()> {
    let node = node_version()?;
    let dir = toolchain::dir(Lang::Js)?;
    if status().is_ok() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("package.json"), PACKAGE_JSON).with_context(|| format!("cannot write {}", dir.display()))?;
    std::fs::write(dir.join("package-lock.json"), PACKAGE_LOCK).with_context(|| format!("cannot write {}", dir.display()))?;
    eprintln!(
        "installing the JavaScript/TypeScript plugin toolchain (componentize-qjs, typescript; pinned) into {} with npm ci \
         (node {node}; about 10-40 s)…",
        dir.display()
    );
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    super::run(
        "npm ci (the JavaScript plugin toolchain)",
        Command::new(npm).args(["ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]).current_dir(&dir),
    )
    .map_err(|e| anyhow::anyhow!("{e:#}\nnpm could not install the JavaScript plugin toolchain into {}; check that the npm registry is reachable and run `kata plugin toolchain install js` again", dir.display()))?;
    status().map(|_| ())
}

/// What is installed: the pinned packages' versions and node's.
pub fn status() -> Result<String> {
    let dir = toolchain::dir(Lang::Js)?;
    let installed = std::fs::read_to_string(dir.join("package-lock.json")).unwrap_or_default();
    if installed != PACKAGE_LOCK {
        return Err(toolchain::missing(Lang::Js, &format!("no pinned toolchain in {}", dir.display())));
    }
    let mut parts = Vec::new();
    for name in PINNED {
        let file = dir.join("node_modules").join(name).join("package.json");
        let version = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|j| j["version"].as_str().map(str::to_string))
            .ok_or_else(|| toolchain::missing(Lang::Js, &format!("{name} is missing from {}", dir.display())))?;
        parts.push(format!("{name} {version}"));
    }
    let node = node_version()?;
    Ok(format!("{}, node {node} (in {})", parts.join(", "), dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carried_wit_parses_and_has_every_world() {
        let dir = std::env::temp_dir().join(format!("kata-js-wit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in WIT {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, text).unwrap();
        }
        let mut r = wit_bindgen_core::wit_parser::Resolve::default();
        let (pkg, _) = r.push_dir(&dir).unwrap();
        for world in WORLDS.iter().chain(&["http-adapter"]) {
            r.select_world(&[pkg], Some(world)).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_adapter_exports_the_http_interface() {
        let component = kata_host::componentize::componentize(HTTP_ADAPTER).unwrap();
        let info = kata_host::plugin::inspect(&component, "adapter").unwrap();
        assert!(info.exports.iter().any(|e| e == HTTP_INTERFACE), "{:?}", info.exports);
    }
}
