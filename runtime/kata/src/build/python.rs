//! The Python toolchain: componentize-py, pinned, in a virtualenv kata
//! manages (`<toolchains>/python/venv`), installed from the hash-locked
//! requirements file the kata binary embeds (`sdk/python/toolchain/requirements.txt`).
//!
//! A Python plugin project (made by `kata plugin new --lang python`) is a
//! `pyproject.toml` whose `[tool.kata]` table names the world (`channel`,
//! `channel-tools`, `tools`, `service`, `hook`, defined in the project's
//! `wit/worlds.wit`) and the module componentize-py wraps (default `app`),
//! the vendored `kata` package (sdk/python) and the WIT in `wit/`.
//!
//! componentize-py bundles CPython built for WASI, generates the bindings for
//! the world and pre-initialises the interpreter with the module imported, so
//! its output is already a component. Two things kata does around it:
//!
//! - it runs it on a *staged copy* of the project's sources (no virtualenvs,
//!   build output, tests or VCS data) with `VIRTUAL_ENV` pointing at an empty
//!   site-packages: componentize-py otherwise adds the site-packages of the
//!   active virtualenv, of pipenv or of the system's `python3` to the module
//!   path and scans them for native extensions and `componentize-py.toml`
//!   files, so a project's own `.venv` (or kata's) would leak into the build;
//! - componentize-py's output is not reproducible: the pre-initialised heap
//!   holds CPython's hash seed and `random`'s state, drawn from the OS at
//!   build time (the pre-init environment is fixed inside componentize-py and
//!   has no `PYTHONHASHSEED`). kata keeps the component it built for a given
//!   set of staged inputs (`<toolchains>/python/cache/`), so building the same
//!   source again on this machine gives the same bytes; a fresh machine or an
//!   emptied cache gives a component that differs in its heap snapshot only.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::{Built, Lang, toolchain};

/// The pinned toolchain, with the sha256 of every published wheel.
pub const REQUIREMENTS: &str = include_str!("../../../../sdk/python/toolchain/requirements.txt");

/// The componentize-py version [`REQUIREMENTS`] pins.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The oldest Python that runs the toolchain and the SDK's native stubs
/// (they use `typing.Self`).
const MIN_PYTHON: (u32, u32) = (3, 11);

/// How many built components the cache keeps (about 18 MB each).
const CACHE_ENTRIES: usize = 16;

/// The worlds a Python project may name (`wit/worlds.wit` of the SDK).
pub const WORLDS: &[&str] = &["channel", "channel-tools", "tools", "service", "hook"];

/// Build the project in `dir`.
pub fn build(dir: &Path, lang: Lang) -> Result<Built> {
    let tool = componentize_py()?;
    // componentize-py runs in the staging directory: every path it gets is absolute.
    let dir = &dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
    let project = Project::read(dir)?;
    let wit = dir.join("wit");
    if !wit.join("worlds.wit").is_file() {
        bail!(
            "{} has no wit/worlds.wit: a Python plugin project carries kata's WIT and the Python worlds in wit/ \
             (`kata plugin new NAME --lang python` writes them; copy wit/ from such a project)",
            dir.display()
        );
    }
    let module_file = dir.join(format!("{}.py", project.module));
    let module_pkg = dir.join(&project.module).join("__init__.py");
    if !module_file.is_file() && !module_pkg.is_file() {
        bail!(
            "{}: the plugin module `{}` ([tool.kata] module in pyproject.toml) has no {}.py or {}/__init__.py",
            dir.display(),
            project.module,
            project.module,
            project.module
        );
    }

    let stage = Stage::new()?;
    let mut files = Vec::new();
    collect_sources(dir, dir, &mut files)?;
    files.sort();
    let mut key = Sha256::new();
    key.update(format!(
        "kata {}\0componentize-py {COMPONENTIZE_PY_VERSION}\0{}\0{}\0",
        env!("CARGO_PKG_VERSION"),
        project.world,
        project.module
    ));
    for rel in &files {
        let bytes = std::fs::read(dir.join(rel)).with_context(|| format!("cannot read {}", dir.join(rel).display()))?;
        key.update(format!("src {}\0{}\0", rel.display(), bytes.len()));
        key.update(&bytes);
        let to = stage.src.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&to, &bytes).with_context(|| format!("cannot write {}", to.display()))?;
    }
    let mut wit_files = Vec::new();
    collect_all(&wit, &wit, &mut wit_files)?;
    wit_files.sort();
    for rel in &wit_files {
        let bytes = std::fs::read(wit.join(rel)).with_context(|| format!("cannot read {}", wit.join(rel).display()))?;
        key.update(format!("wit {}\0{}\0", rel.display(), bytes.len()));
        key.update(&bytes);
    }
    let key = hex::encode(key.finalize());

    let cache = toolchain::dir(lang)?.join("cache");
    let cached = cache.join(format!("{key}.wasm"));
    let component = match std::fs::read(&cached) {
        Ok(bytes) if wasmparser::Parser::is_component(&bytes) => {
            // Mark it recently used, so pruning keeps it.
            let _ = std::fs::File::options().append(true).open(&cached).and_then(|f| f.set_modified(std::time::SystemTime::now()));
            tracing::debug!("{} is in the Python build cache ({})", dir.display(), cached.display());
            bytes
        }
        _ => {
            let out = stage.root.join("out.wasm");
            eprintln!(
                "building {} with componentize-py {COMPONENTIZE_PY_VERSION} (bundles CPython for WASI and pre-initialises it; about 10–30 s)…",
                dir.display()
            );
            let mut cmd = Command::new(&tool);
            cmd.arg("-d")
                .arg(&wit)
                .args(["-w", &project.world, "componentize", &project.module, "-p"])
                .arg(&stage.src)
                .arg("-o")
                .arg(&out)
                .current_dir(&stage.src)
                .env("VIRTUAL_ENV", &stage.env)
                .env_remove("PYTHONPATH")
                .env_remove("PYTHONHOME")
                // Its errors, not a Rust backtrace, in the lines kata shows.
                .env("RUST_BACKTRACE", "0")
                .env("RUST_LIB_BACKTRACE", "0");
            super::run(&format!("componentize-py (world `{}`, module `{}`)", project.world, project.module), &mut cmd).map_err(|e| {
                // Tracebacks name the staged copy as /0/: show the project's paths.
                let text = format!("{e:#}").replace("\"/0/", &format!("\"{}/", dir.display()));
                anyhow::anyhow!(
                    "{text}\n(componentize-py imports `{}` at build time: an error above is usually an exception raised while \
                     importing it, or an export class missing or misnamed — the module needs a class named after each \
                     export of world `{}`: Channel, Tools or Service)",
                    project.module,
                    project.world
                )
            })?;
            let bytes = std::fs::read(&out).with_context(|| format!("componentize-py wrote no component to {}", out.display()))?;
            std::fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
            // A temporary name of its own (two builds of the same inputs may
            // finish together), in the cache so the rename is atomic.
            let name = stage.root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let tmp = cache.join(format!("{key}.{name}.tmp"));
            std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &cached).with_context(|| format!("cannot write {}", cached.display()))?;
            prune(&cache);
            bytes
        }
    };
    let mut component = component;
    if let Some(version) = wit_version(&wit) {
        crate::manifest::append_custom_section(&mut component, kata_host::host::VERSION_SECTION, version.as_bytes());
    }
    Ok(Built { wasm: component, version: project.version })
}

/// Install the pinned toolchain: a virtualenv made with the system's
/// `python3` (3.11 or newer) and componentize-py from the hash-locked
/// requirements. Kept as it is when it already matches them.
pub fn install() -> Result<()> {
    let dir = toolchain::dir(Lang::Python)?;
    let venv = dir.join("venv");
    let stamp = dir.join("requirements.txt");
    if status().is_ok() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == REQUIREMENTS) {
        return Ok(());
    }
    let python = system_python()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!(
        "installing componentize-py {COMPONENTIZE_PY_VERSION} into {} (a virtualenv of {}, pip, a 17 MB wheel; about 10–30 s)…",
        venv.display(),
        python.display()
    );
    let broken = venv.exists() && !venv_python(&venv).is_file();
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "venv"]);
    if broken {
        cmd.arg("--clear");
    }
    if !venv_python(&venv).is_file() || broken {
        let out = cmd.arg(&venv).output().with_context(|| format!("cannot run {}", python.display()))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            if text.contains("ensurepip") || text.contains("venv") {
                bail!(
                    "{} cannot create a virtualenv ({}); on Debian or Ubuntu install the venv module with \
                     `sudo apt-get install python3-venv`, then run `kata plugin toolchain install python` again",
                    python.display(),
                    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("python3 -m venv failed").trim()
                );
            }
            bail!("`{} -m venv {}` failed:\n{}", python.display(), venv.display(), text.trim());
        }
    }
    // pip reads the hashes from a file; the stamp doubles as that file.
    let _ = std::fs::remove_file(&stamp);
    let pending = dir.join("requirements.pending.txt");
    std::fs::write(&pending, REQUIREMENTS).with_context(|| format!("cannot write {}", pending.display()))?;
    let mut pip = Command::new(venv_python(&venv));
    pip.args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--require-hashes", "--only-binary=:all:", "-r"])
        .arg(&pending)
        .env_remove("PIP_REQUIRE_VIRTUALENV")
        .env_remove("PYTHONPATH");
    super::run("pip install componentize-py (from kata's hash-locked requirements)", &mut pip).map_err(|e| {
        anyhow::anyhow!("{e:#}\n(kata installs componentize-py from PyPI; check the network or a proxy, then run `kata plugin toolchain install python` again)")
    })?;
    std::fs::rename(&pending, &stamp).with_context(|| format!("cannot write {}", stamp.display()))?;
    status().map(|_| ())
}

/// What is installed: componentize-py's version and where.
pub fn status() -> Result<String> {
    let venv = toolchain::dir(Lang::Python)?.join("venv");
    let tool = venv_bin(&venv, "componentize-py");
    if !tool.is_file() {
        return Err(toolchain::missing(Lang::Python, &format!("componentize-py is not installed in {}", venv.display())));
    }
    let out = Command::new(&tool).arg("--version").output();
    let version = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => {
            return Err(toolchain::missing(
                Lang::Python,
                &format!("{} does not run (the python3 its virtualenv was made with may be gone)", tool.display()),
            ));
        }
    };
    if version.split_whitespace().last() != Some(COMPONENTIZE_PY_VERSION) {
        return Err(toolchain::missing(
            Lang::Python,
            &format!("found {version}, this kata needs componentize-py {COMPONENTIZE_PY_VERSION}"),
        ));
    }
    Ok(format!("{version} in {}", venv.display()))
}

/// componentize-py from kata's virtualenv, or the error that says how to install it.
fn componentize_py() -> Result<PathBuf> {
    status()?;
    Ok(venv_bin(&toolchain::dir(Lang::Python)?.join("venv"), "componentize-py"))
}

fn venv_bin(venv: &Path, name: &str) -> PathBuf {
    venv.join("bin").join(name)
}

fn venv_python(venv: &Path) -> PathBuf {
    venv_bin(venv, "python3")
}

/// The `python3` (3.11 or newer) the virtualenv is made with: `$KATA_PYTHON`,
/// else `python3` on PATH.
fn system_python() -> Result<PathBuf> {
    let python = std::env::var_os("KATA_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("python3"));
    let out = Command::new(&python).args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).output();
    let version = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => bail!(
            "the Python plugin toolchain needs Python {}.{} or newer to make its virtualenv with, and there is no `{}`; \
             install it (Debian/Ubuntu: `sudo apt-get install python3 python3-venv`) or set KATA_PYTHON to one, then run \
             `kata plugin toolchain install python` again",
            MIN_PYTHON.0,
            MIN_PYTHON.1,
            python.display()
        ),
    };
    let parsed = version.split_once('.').and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    if parsed.is_none_or(|v| v < MIN_PYTHON) {
        bail!(
            "`{}` is Python {version}; the Python plugin toolchain needs {}.{} or newer (set KATA_PYTHON to another interpreter)",
            python.display(),
            MIN_PYTHON.0,
            MIN_PYTHON.1
        );
    }
    Ok(python)
}

/// What `pyproject.toml` says.
struct Project {
    world: String,
    module: String,
    version: Option<String>,
}

impl Project {
    fn read(dir: &Path) -> Result<Project> {
        let path = dir.join("pyproject.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let doc: toml_edit::DocumentMut = text.parse().with_context(|| format!("{} is not valid TOML", path.display()))?;
        let version = doc.get("project").and_then(|p| p.get("version")).and_then(|v| v.as_str()).map(str::to_string);
        let kata = doc.get("tool").and_then(|t| t.get("kata"));
        let world = kata.and_then(|k| k.get("world")).and_then(|v| v.as_str()).unwrap_or("channel").to_string();
        if !WORLDS.contains(&world.as_str()) {
            bail!("{}: [tool.kata] world = {world:?} is not a kata world; use one of {}", path.display(), WORLDS.join(", "));
        }
        let module = kata.and_then(|k| k.get("module")).and_then(|v| v.as_str()).unwrap_or("app").to_string();
        if module.is_empty()
            || !module.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || module.starts_with(|c: char| c.is_ascii_digit())
        {
            bail!("{}: [tool.kata] module = {module:?} is not a Python module name", path.display());
        }
        if module == "wit_world" || module == "kata" {
            bail!(
                "{}: [tool.kata] module = {module:?} clashes with a package of the build; name the plugin's module otherwise",
                path.display()
            );
        }
        Ok(Project { world, module, version })
    }
}

/// The `kata:plugin` version of the project's WIT (`wit/deps/kata-plugin/`).
fn wit_version(wit: &Path) -> Option<String> {
    let dir = wit.join("deps").join("kata-plugin");
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let text = std::fs::read_to_string(entry.path()).ok()?;
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("package kata:plugin@") {
                return Some(rest.trim_end_matches(';').trim().to_string());
            }
        }
    }
    None
}

/// Directories never staged: build output, installed dependencies, VCS data,
/// tests, the WIT (passed with `-d`).
const SKIP: &[&str] = &["build", "target", "node_modules", "__pycache__", "venv", "dist", "wit", "tests", "test"];

/// The project's sources that go into the build: everything but [`SKIP`],
/// hidden entries, test modules and the SDK's native stubs (`kata/_bindings`).
fn collect_sources(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        if name.starts_with('.') {
            continue;
        }
        let ty = entry.file_type()?;
        if ty.is_dir() {
            let top = dir == root;
            if (top && SKIP.contains(&name.as_str())) || name == "__pycache__" || rel == Path::new("kata").join("_bindings") {
                continue;
            }
            // A virtualenv anywhere is never a source.
            if path.join("pyvenv.cfg").is_file() {
                continue;
            }
            collect_sources(root, &path, out)?;
        } else if ty.is_file() {
            let is_test = name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"));
            if !is_test && !name.ends_with(".pyc") {
                out.push(rel);
            }
        }
    }
    Ok(())
}

/// Every file under `dir` (for the WIT).
fn collect_all(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_all(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

/// Keep the newest [`CACHE_ENTRIES`] components of the build cache.
fn prune(cache: &Path) {
    let Ok(rd) = std::fs::read_dir(cache) else { return };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, path) in entries.into_iter().skip(CACHE_ENTRIES) {
        let _ = std::fs::remove_file(path);
    }
}

/// A scratch directory for one build: `src/` (the staged sources) and
/// `env/lib/site-packages` (the empty "virtualenv" componentize-py looks
/// in). Removed when dropped.
struct Stage {
    root: PathBuf,
    src: PathBuf,
    env: PathBuf,
}

impl Stage {
    fn new() -> Result<Stage> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let root = std::env::temp_dir().join(format!("kata-python-{}-{n}-{nanos}", std::process::id()));
        let src = root.join("src");
        let env = root.join("env");
        std::fs::create_dir_all(&src).with_context(|| format!("cannot create {}", src.display()))?;
        std::fs::create_dir_all(env.join("lib").join("site-packages")).with_context(|| format!("cannot create {}", env.display()))?;
        Ok(Stage { root, src, env })
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kata-pytest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_requirements_pin_componentize_py_with_hashes() {
        assert!(REQUIREMENTS.contains(&format!("componentize-py=={COMPONENTIZE_PY_VERSION} ")));
        assert!(REQUIREMENTS.matches("--hash=sha256:").count() >= 5, "a hash per published wheel");
    }

    #[test]
    fn pyproject_names_the_world_and_module() {
        let d = scratch("pyproject");
        std::fs::write(d.join("pyproject.toml"), "[project]\nname = \"x\"\nversion = \"1.2.3\"\n[tool.kata]\nworld = \"tools\"\n").unwrap();
        let p = Project::read(&d).unwrap();
        assert_eq!((p.world.as_str(), p.module.as_str(), p.version.as_deref()), ("tools", "app", Some("1.2.3")));
        std::fs::write(d.join("pyproject.toml"), "[tool.kata]\nworld = \"chanel\"\n").unwrap();
        let e = Project::read(&d).err().unwrap().to_string();
        assert!(e.contains("chanel") && e.contains("channel-tools"), "{e}");
        std::fs::write(d.join("pyproject.toml"), "[tool.kata]\nmodule = \"kata\"\n").unwrap();
        assert!(Project::read(&d).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn only_sources_are_staged() {
        let d = scratch("stage");
        for f in [
            "app.py",
            "test_app.py",
            "helpers/util.py",
            "helpers/util_test.py",
            "kata/__init__.py",
            "kata/_bindings/wit_world/__init__.py",
            ".venv/lib/x.py",
            "env/pyvenv.cfg",
            "env/lib/y.py",
            "build/app.wasm",
            "wit/worlds.wit",
            "tests/test_more.py",
            "__pycache__/app.cpython-311.pyc",
            "data.json",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let mut files = Vec::new();
        collect_sources(&d, &d, &mut files).unwrap();
        files.sort();
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["app.py", "data.json", "helpers/util.py", "kata/__init__.py"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_wit_version_is_read_from_the_vendored_contract() {
        let d = scratch("witver");
        std::fs::create_dir_all(d.join("deps/kata-plugin")).unwrap();
        std::fs::write(d.join("deps/kata-plugin/types.wit"), "// x\npackage kata:plugin@0.1.2;\n").unwrap();
        assert_eq!(wit_version(&d).as_deref(), Some("0.1.2"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
