//! `kata plugin build`: compile a guest crate to a core module with the
//! project's guest toolchain and turn it into a component in-process with
//! `wit-component` (no `wasm-tools` needed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The core target guests are compiled for; the preview1 reactor adapter
/// bridges its WASI imports to WASI 0.2 when componentizing.
pub const GUEST_TARGET: &str = "wasm32-wasip1";

/// Which Rust toolchain builds guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// rustup with the wasm32-wasip1 target installed.
    Rustup,
    /// Debian's rustc-web with `-Zbuild-std` (for machines where rustup cannot
    /// download targets; set up by scripts/setup.sh).
    Debian,
}

impl Toolchain {
    /// Pick a toolchain: `KATA_GUEST_TOOLCHAIN=rustup|debian` if set, else
    /// rustup when its wasm32-wasip1 std is installed, else Debian's.
    pub fn detect() -> Result<Self> {
        match std::env::var("KATA_GUEST_TOOLCHAIN").ok().as_deref() {
            Some("rustup") => return Ok(Self::Rustup),
            Some("debian") => return Ok(Self::Debian),
            Some(other) => bail!("KATA_GUEST_TOOLCHAIN={other:?} is not \"rustup\" or \"debian\""),
            None => {}
        }
        let rustup_has_target = Command::new("rustc")
            .args(["--print", "target-libdir", "--target", GUEST_TARGET])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .is_some_and(|dir| dir.join("libstd.rlib").exists() || has_std(&dir));
        if rustup_has_target {
            return Ok(Self::Rustup);
        }
        if Path::new("/usr/bin/rustc").exists() && Path::new("/usr/lib/rustlib/src/rust/library/std").is_dir() {
            return Ok(Self::Debian);
        }
        bail!(
            "no Rust toolchain can build {GUEST_TARGET} guests here; run scripts/setup.sh \
             (it tries `rustup target add {GUEST_TARGET}` and falls back to Debian's rustc-web)"
        )
    }

    fn cargo(self) -> Command {
        match self {
            Self::Rustup => {
                let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
                c.args(["build", "--release", "--target", GUEST_TARGET]);
                c
            }
            Self::Debian => {
                // Call Debian's cargo by absolute path and pin RUSTC, or
                // rustup's proxies win (see shared/toolchain/REPORT-rust.md).
                let mut c = Command::new("/usr/bin/cargo");
                c.args(["build", "--release", "--target", GUEST_TARGET, "-Zbuild-std=std,panic_abort"])
                    .env("RUSTC", "/usr/bin/rustc")
                    .env("RUSTDOC", "/usr/bin/rustdoc")
                    .env("RUSTC_BOOTSTRAP", "1")
                    .env("CARGO_TARGET_WASM32_WASIP1_LINKER", "wasm-ld-19")
                    .env("CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS", "-L native=/usr/lib/wasm32-wasi");
                c
            }
        }
    }
}

fn has_std(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))).unwrap_or(false)
}

/// Build the guest crate in `dir` and write its component to `out` (default:
/// `<target-dir>/<crate>.component.wasm`). Returns the component's path.
pub fn build(dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!("{} has no Cargo.toml; `kata plugin build` builds a Rust guest crate", dir.display());
    }
    let toolchain = Toolchain::detect()?;
    let mut cmd = toolchain.cargo();
    cmd.current_dir(dir).arg("--message-format=json-render-diagnostics").stdout(Stdio::piped()).stderr(Stdio::inherit());
    // Host-only flags from an enclosing cargo must not leak into the wasm build.
    cmd.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS");
    let output = cmd.output().with_context(|| format!("cannot run cargo ({toolchain:?} toolchain)"))?;
    if !output.status.success() {
        bail!("building {} failed (cargo output above)", dir.display());
    }
    let mut artifact = None;
    let mut package_version: Option<String> = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = v["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        let manifest_matches = v["manifest_path"]
            .as_str()
            .and_then(|p| Path::new(p).canonicalize().ok())
            .zip(manifest.canonicalize().ok())
            .is_some_and(|(a, b)| a == b);
        if !is_cdylib || !manifest_matches {
            continue;
        }
        if let Some(files) = v["filenames"].as_array() {
            artifact = files.iter().filter_map(|f| f.as_str()).find(|f| f.ends_with(".wasm")).map(PathBuf::from);
        }
        // "path+file:///dir#name@1.2.3" or "...#1.2.3": the crate's version.
        package_version = v["package_id"].as_str().and_then(|id| id.rsplit(['@', '#']).next()).map(str::to_string);
    }
    let core_path = artifact
        .with_context(|| format!("{} produced no .wasm library; its Cargo.toml needs `[lib] crate-type = [\"cdylib\"]`", dir.display()))?;
    let core = std::fs::read(&core_path).with_context(|| format!("cannot read {}", core_path.display()))?;
    let mut component = componentize(&core).with_context(|| format!("cannot componentize {}", core_path.display()))?;
    if let Some(mut manifest) = read_manifest(dir)? {
        if manifest.version.is_empty() {
            manifest.version = package_version.unwrap_or_default();
        }
        crate::manifest::append_custom_section(&mut component, crate::manifest::SECTION, manifest.to_toml().as_bytes());
    }
    let out = match out {
        Some(o) => o.to_path_buf(),
        None => core_path.with_extension("component.wasm"),
    };
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // Write then rename: a reader never sees half a component.
    let tmp = out.with_extension("wasm.tmp");
    std::fs::write(&tmp, &component).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(out)
}

/// The crate's `plugin.toml`, if it has one. Without it the component
/// carries no manifest, and kata.toml alone decides what it gets.
pub fn read_manifest(dir: &Path) -> Result<Option<crate::manifest::Manifest>> {
    let file = dir.join(crate::manifest::FILE);
    if !file.is_file() {
        tracing::warn!(
            "{} has no {}: the component carries no manifest (what it asks for), so kata.toml alone will decide its grants",
            dir.display(),
            crate::manifest::FILE
        );
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    crate::manifest::Manifest::parse(&text, &file.display().to_string()).map(Some).map_err(anyhow::Error::msg)
}

/// The project's `plugin.toml` if it has one, without the warning.
pub fn read_manifest_quiet(dir: &Path) -> Result<Option<crate::manifest::Manifest>> {
    if dir.join(crate::manifest::FILE).is_file() { read_manifest(dir) } else { Ok(None) }
}

/// Turn a core module (with wit-bindgen's component-type sections) into a
/// component, adapting WASI preview1 imports to 0.2 with the reactor adapter.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>> {
    if !wasmparser::Parser::is_core_wasm(core) {
        if wasmparser::Parser::is_component(core) {
            return Ok(core.to_vec());
        }
        bail!("not a WebAssembly module");
    }
    let mut encoder = wit_component::ComponentEncoder::default().module(core)?.validate(true);
    if imports_preview1(core)? {
        use wasi_preview1_component_adapter_provider as adapter;
        encoder = encoder.adapter(adapter::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)?;
    }
    encoder.encode()
}

/// `kata plugin componentize MODULE [--manifest plugin.toml] --out FILE`:
/// [`componentize`] a core module file, embed the manifest when one is given
/// (what the plugin asks for, shown by `kata plugin add`), and write the
/// component, only if it is a plugin kata runs (it exports a kata world).
/// Returns the component's size.
pub fn componentize_file(module: &Path, manifest: Option<&Path>, out: &Path) -> Result<u64> {
    let manifest = match manifest {
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read the manifest {}", file.display()))?;
            let m = crate::manifest::Manifest::parse(&text, &file.display().to_string()).map_err(anyhow::Error::msg)?;
            Some(m)
        }
        None => None,
    };
    let core = std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
    if wasmparser::Parser::is_component(&core) {
        bail!("{} is already a component; install it with `kata plugin add {}`", module.display(), crate::util::shell_quote(module));
    }
    if !wasmparser::Parser::is_core_wasm(&core) {
        bail!("{} is not a WebAssembly module (it does not start with the \\0asm header)", module.display());
    }
    let mut component = componentize(&core).with_context(|| {
        format!(
            "cannot turn {} into a component (a module needs the component-type information wit-bindgen embeds \
             for one of kata's worlds, from the WIT in wit/)",
            module.display()
        )
    })?;
    let info = crate::plugin::inspect(&component, &out.display().to_string())?;
    if crate::plugin::Kind::of(&info).is_none() {
        let found = if info.exports.is_empty() { "nothing".to_string() } else { info.exports.join(", ") };
        bail!(
            "{} became a component that exports {found}, not one of kata's worlds; generate its bindings with wit-bindgen \
             from kata's WIT (wit/, world channel-plugin, tools-plugin or service-plugin); nothing was written",
            module.display()
        );
    }
    if let Some(m) = manifest {
        crate::manifest::append_custom_section(&mut component, crate::manifest::SECTION, m.to_toml().as_bytes());
    } else {
        tracing::warn!(
            "{} carries no manifest (what it asks for), so `kata plugin add` will grant it nothing until kata.toml does; \
             pass --manifest plugin.toml to embed one",
            out.display()
        );
    }
    let tmp = out.with_extension("wasm.tmp");
    std::fs::write(&tmp, &component).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(component.len() as u64)
}

fn imports_preview1(core: &[u8]) -> Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        if let wasmparser::Payload::ImportSection(s) = payload? {
            for import in s.into_imports() {
                if import?.module == "wasi_snapshot_preview1" {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}
