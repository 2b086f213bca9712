//! `kata plugin build DIR`: find out what language a plugin project is
//! written in, drive that language's toolchain, and finish the result the
//! same way for every language — componentize a core module in-process
//! (with the WASI reactor adapter), embed `plugin.toml` as the component's
//! manifest, record the source language in the component's `producers`
//! section, and write it atomically.
//!
//! Each language is a module with the same four functions:
//!
//! - `build(dir, lang) -> Result<Built>`: run the toolchain, return a core
//!   module or a component (not yet finished);
//! - `install() -> Result<()>`: install the pinned toolchain (idempotent);
//! - `status() -> Result<String>`: what is installed, or an error naming the
//!   command that installs it;
//! - `fingerprint_inputs(dir) -> Vec<PathBuf>`: nothing for Rust (cargo
//!   tracks its own), the project files that decide the output otherwise.
//!
//! Builds other than Rust's are skipped when nothing that decides the output
//! changed (the project's files, kata's version and the toolchain's): the
//! fingerprint is stored next to the output as `<out>.inputs`.

pub mod c;
pub mod go;
pub mod js;
pub mod python;
pub mod toolchain;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// A plugin project's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the kata SDK (cargo, wasm32-wasip1).
    Rust,
    /// JavaScript.
    Js,
    /// TypeScript (compiled to JavaScript, then built as JavaScript).
    Ts,
    /// Python (componentize-py).
    Python,
    /// C (clang + wasi-libc, bindings written by kata).
    C,
    /// Go (standard Go, wasip1, bindings written by kata).
    Go,
}

impl Lang {
    /// Every language, in the order `kata plugin toolchain` lists them.
    pub const ALL: [Lang; 6] = [Lang::Rust, Lang::Js, Lang::Ts, Lang::Python, Lang::C, Lang::Go];

    /// The name used on the command line (`--lang`).
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Ts => "ts",
            Lang::Python => "python",
            Lang::C => "c",
            Lang::Go => "go",
        }
    }

    /// The name recorded in the component's `producers` section
    /// (`language` field), as the tool-conventions document spells it.
    pub fn producer_name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Js => "JavaScript",
            Lang::Ts => "TypeScript",
            Lang::Python => "Python",
            Lang::C => "C11",
            Lang::Go => "Go",
        }
    }

    /// The language's name in sentences ("C", "JavaScript").
    pub fn display_name(self) -> &'static str {
        match self {
            Lang::C => "C",
            other => other.producer_name(),
        }
    }

    /// Which toolchain builds this language (TypeScript is built by the
    /// JavaScript toolchain).
    pub fn toolchain(self) -> Lang {
        if self == Lang::Ts { Lang::Js } else { self }
    }
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// What a language's toolchain produced.
pub struct Built {
    /// A core module (componentized by [`finish`]) or a component.
    pub wasm: Vec<u8>,
    /// The project's own version (package.json, pyproject.toml, …), used
    /// when plugin.toml does not give one.
    pub version: Option<String>,
}

/// Which language the project in `dir` is written in, from the files that
/// each toolchain needs: `Cargo.toml` (Rust), `go.mod` (Go), `package.json`
/// (JavaScript, or TypeScript with a `tsconfig.json`), `pyproject.toml`
/// (Python), a `.c` file in the directory or its `src/` (C).
pub fn detect(dir: &Path) -> Result<Lang> {
    if !dir.is_dir() {
        bail!("{} is not a directory; `kata plugin build` takes a plugin project's directory", dir.display());
    }
    let has = |name: &str| dir.join(name).is_file();
    if has("Cargo.toml") {
        return Ok(Lang::Rust);
    }
    if has("go.mod") {
        return Ok(Lang::Go);
    }
    if has("package.json") {
        return Ok(if has("tsconfig.json") { Lang::Ts } else { Lang::Js });
    }
    if has("pyproject.toml") {
        return Ok(Lang::Python);
    }
    let has_c = |d: &Path| {
        std::fs::read_dir(d)
            .map(|rd| rd.flatten().any(|e| e.path().extension().is_some_and(|x| x == "c") && e.path().is_file()))
            .unwrap_or(false)
    };
    if has_c(dir) || has_c(&dir.join("src")) {
        return Ok(Lang::C);
    }
    bail!(
        "{} is not a plugin project kata knows how to build: it has no Cargo.toml (Rust), go.mod (Go), package.json \
         (JavaScript/TypeScript), pyproject.toml (Python) or .c file (C). Create one with `kata plugin new NAME --lang LANG`, \
         or turn a core module you built yourself into a plugin with `kata plugin componentize CORE.wasm --manifest plugin.toml --out PLUGIN.wasm`",
        dir.display()
    )
}

/// Build the plugin project in `dir`; write the component to `out` (default
/// `<dir>/build/<name>.wasm` for languages other than Rust). Returns the
/// component's path and whether it was rebuilt (false: up to date).
pub fn build(dir: &Path, out: Option<&Path>) -> Result<(PathBuf, bool)> {
    let lang = detect(dir)?;
    if lang == Lang::Rust {
        return Ok((kata_host::componentize::build(dir, out)?, true));
    }
    let out = match out {
        Some(o) => o.to_path_buf(),
        None => dir.join("build").join(format!("{}.wasm", project_name(dir)?)),
    };
    let fingerprint = fingerprint(dir, lang)?;
    let stamp = stamp_path(&out);
    if out.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == fingerprint) {
        tracing::debug!("{} is up to date with {}", out.display(), dir.display());
        return Ok((out, false));
    }
    let built = match lang.toolchain() {
        Lang::Js => js::build(dir, lang)?,
        Lang::Python => python::build(dir, lang)?,
        Lang::C => c::build(dir, lang)?,
        Lang::Go => go::build(dir, lang)?,
        Lang::Rust | Lang::Ts => unreachable!("handled above / built by the JavaScript toolchain"),
    };
    let component = finish(built, dir, lang).with_context(|| format!("cannot finish the {lang} build of {}", dir.display()))?;
    write_atomically(&out, &component)?;
    write_atomically(&stamp, format!("{fingerprint}\n").as_bytes())?;
    Ok((out, true))
}

/// `kata plugin test [DIR]`: run the project's own (native) tests with the
/// language's idiomatic command — `cargo test`, `npm test`, `python3 -m
/// unittest`, `make test`, `go test ./...` — with kata's toolchain
/// directories first on `PATH`, so a project made by `kata plugin new`
/// passes its test without the user installing anything else.
pub fn test(dir: &Path) -> Result<()> {
    let lang = detect(dir)?;
    let (program, args): (&str, &[&str]) = match lang {
        Lang::Rust => ("cargo", &["test"]),
        Lang::Js | Lang::Ts => ("npm", &["test", "--silent"]),
        Lang::Python => ("python3", &["-m", "unittest"]),
        Lang::C => ("make", &["test"]),
        Lang::Go => ("go", &["test", "./..."]),
    };
    let mut path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect::<Vec<_>>();
    if lang != Lang::Rust {
        let tc = toolchain::dir(lang)?;
        for bin in toolchain_bins(lang) {
            path.insert(0, tc.join(bin));
        }
    }
    let path = std::env::join_paths(path).context("PATH has an entry with a ':' in it")?;
    let mut cmd = if lang == Lang::Go {
        // The installed Go with the build's offline environment; projects
        // reach the SDK through `replace`, not a vendor directory.
        go::test_command(dir)?
    } else {
        let mut c = std::process::Command::new(program);
        c.args(args).current_dir(dir);
        c
    };
    cmd.env("PATH", path);
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(toolchain::missing(lang, &format!("`{program}` is not on PATH")));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot run {program}")),
    };
    if !status.success() {
        bail!("the tests of {} failed (`{program} {}`, output above)", dir.display(), args.join(" "));
    }
    Ok(())
}

/// Directories under a language's toolchain directory that hold its
/// commands (`npm`'s local bins, the venv's `bin`).
fn toolchain_bins(lang: Lang) -> &'static [&'static str] {
    match lang.toolchain() {
        Lang::Js => &["node_modules/.bin"],
        Lang::Python => &["venv/bin"],
        Lang::Go => &["venv/bin"],
        Lang::C | Lang::Rust | Lang::Ts => &[],
    }
}

/// `kata plugin bindings --lang LANG --world WORLD --out DIR`: write the
/// generated bindings for a kata world (`channel`, `tools`, `service`) from
/// the WIT built into this kata. Returns the files written.
pub fn bindings(lang: Lang, world: &str, out: &Path) -> Result<Vec<PathBuf>> {
    match lang {
        Lang::C => c::bindings(world, out),
        Lang::Go => go::bindings(world, out),
        other => bail!(
            "{other} plugins need no generated bindings from kata: the {} SDK (`kata plugin new --lang {other}`) carries them",
            other.display_name()
        ),
    }
}

/// The WIT version the C, Go, JavaScript and Python SDKs are generated
/// from. The host loads every 0.1.x component, so these SDKs move to a newer
/// WIT when they implement its additions (0.1.3: `act`, channel features,
/// connections), not when the host gains them; Rust's SDK follows the
/// latest version.
pub const SDK_WIT_VERSION: &str = kata_host::host::v0_1_2::VERSION;

/// The WIT those SDKs are built against ([`SDK_WIT_VERSION`]), as (path
/// under `wit/`, text) pairs, for the binding generators.
pub fn wit_files() -> &'static [(&'static str, &'static str)] {
    crate::scaffold::WIT_V0_1_2_FILES
}

/// The last steps every build shares: componentize a core module, embed the
/// project's `plugin.toml`, and record the source language.
pub fn finish(built: Built, dir: &Path, lang: Lang) -> Result<Vec<u8>> {
    let mut component = kata_host::componentize::componentize(&built.wasm)?;
    component = record_language(&component, lang)?;
    if let Some(mut manifest) = kata_host::componentize::read_manifest(dir)? {
        if manifest.version.is_empty() {
            manifest.version = built.version.unwrap_or_default();
        }
        crate::manifest::append_custom_section(&mut component, crate::manifest::SECTION, manifest.to_toml().as_bytes());
    }
    Ok(component)
}

/// Add `language = <lang>` and `processed-by = kata <version>` to the
/// component's top-level `producers` section (merged with what is there).
pub fn record_language(component: &[u8], lang: Lang) -> Result<Vec<u8>> {
    let mut producers = wasm_metadata::Producers::empty();
    producers.add("language", lang.producer_name(), "");
    producers.add("processed-by", "kata", env!("CARGO_PKG_VERSION"));
    producers.add_to_wasm(component).context("cannot record the source language in the component's producers section")
}

/// The source language a component records (top-level `producers` first,
/// then its first core module's), e.g. "Rust", "JavaScript".
pub fn source_language(component: &[u8]) -> Option<String> {
    let mut depth = 0usize;
    let mut nested = None;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        let Ok(payload) = payload else { return nested };
        match payload {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::CustomSection(c) if c.name() == "producers" => {
                let Ok(reader) = wasmparser::ProducersSectionReader::new(wasmparser::BinaryReader::new(c.data(), c.data_offset())) else {
                    continue;
                };
                for field in reader.into_iter().flatten() {
                    if field.name != "language" {
                        continue;
                    }
                    let first = field.values.into_iter().flatten().next().map(|v| v.name.to_string());
                    if depth == 1 && first.is_some() {
                        return first;
                    }
                    if nested.is_none() {
                        nested = first;
                    }
                }
            }
            _ => {}
        }
    }
    nested
}

/// The plugin's name: `name` in plugin.toml, else the directory's name.
fn project_name(dir: &Path) -> Result<String> {
    if let Some(m) = kata_host::componentize::read_manifest_quiet(dir)? {
        return Ok(m.name);
    }
    let abs = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
    Ok(abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into()))
}

fn stamp_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".inputs");
    PathBuf::from(s)
}

/// Directories a fingerprint never looks into: build outputs, installed
/// dependencies, VCS data.
const SKIP_DIRS: &[&str] = &["build", "target", "node_modules", ".git", "__pycache__", ".venv", "venv", "dist"];

/// sha256 over kata's version, the toolchain's description and every file
/// of the project (relative path and contents) outside [`SKIP_DIRS`].
fn fingerprint(dir: &Path, lang: Lang) -> Result<String> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    // Local modules a Go project `replace`s with live outside it (as the
    // test guests reach sdk/go); their files decide the build too.
    if lang == Lang::Go {
        for extra in go::fingerprint_inputs(dir) {
            collect(dir, &extra, &mut files)?;
        }
    }
    files.sort();
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update([0]);
    h.update(lang.name());
    h.update([0]);
    h.update(SDK_WIT_VERSION);
    h.update([0]);
    h.update(toolchain::status(lang.toolchain()).unwrap_or_default());
    for rel in files {
        let bytes = std::fs::read(dir.join(&rel)).with_context(|| format!("cannot read {}", dir.join(&rel).display()))?;
        h.update([0]);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(hex::encode(h.finalize()))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            if !SKIP_DIRS.iter().any(|s| name == *s) {
                collect(root, &path, out)?;
            }
        } else if ty.is_file() {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

/// Write then rename ([`crate::install::write_atomic`]: a reader never
/// sees half a file), creating the parent directory first.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    crate::install::write_atomic(path, bytes)
}

/// Run a toolchain command; on failure, one error naming the step, with the
/// tool's own output (stderr, else stdout) trimmed to its last lines.
pub fn run(step: &str, cmd: &mut std::process::Command) -> Result<std::process::Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let output = cmd.output().with_context(|| format!("{step}: cannot run {program}"))?;
    if !output.status.success() {
        let text = if output.stderr.is_empty() { &output.stdout } else { &output.stderr };
        let text = String::from_utf8_lossy(text);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        bail!("{step} failed ({}):\n{tail}", output.status);
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_is_read_from_the_project_files() {
        let d = tempfile_dir();
        assert!(detect(&d).unwrap_err().to_string().contains("kata plugin componentize"));
        std::fs::write(d.join("package.json"), "{}").unwrap();
        assert_eq!(detect(&d).unwrap(), Lang::Js);
        std::fs::write(d.join("tsconfig.json"), "{}").unwrap();
        assert_eq!(detect(&d).unwrap(), Lang::Ts);
        std::fs::write(d.join("go.mod"), "module x").unwrap();
        assert_eq!(detect(&d).unwrap(), Lang::Go);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_recorded_language_is_read_back() {
        let component = wat_component();
        assert_eq!(source_language(&component), None);
        let marked = record_language(&component, Lang::Python).unwrap();
        assert_eq!(source_language(&marked).as_deref(), Some("Python"));
    }

    fn wat_component() -> Vec<u8> {
        // The smallest component: the header alone.
        vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("kata-detect-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
