//! The C toolchain: clang 19 with wasm-ld and wasi-libc (Debian's
//! `clang-19`, `lld-19`, `wasi-libc`, `libclang-rt-19-dev-wasm32`), and
//! bindings that kata writes itself with the `wit-bindgen-c` crate, so a C
//! author installs no Rust tool.
//!
//! A C project is a `plugin.toml`, its C files (`*.c` at the top, and
//! everything under `src/` and `vendor/`, where `kata plugin new` puts the
//! kata C SDK) and anything else it likes (`tests/`, a Makefile). `kata
//! plugin build`:
//!
//! 1. picks the world from the functions the sources outside `vendor/` define:
//!    `exports_kata_plugin_channel_*` (channel), `exports_kata_plugin_tools_*`
//!    (tools; both: the channel-tools world), `exports_kata_plugin_service_*`;
//! 2. writes that world's bindings into `build/bindings/` (`plugin.h`,
//!    `plugin.c`, `plugin_component_type.o`) from the WIT built into kata, so
//!    they always match the kata that builds them;
//! 3. compiles and links everything in one clang call with pinned flags;
//! 4. leaves the core module to [`super::finish`] (componentize with the
//!    reactor adapter, manifest, producers).
//!
//! The component type travels in wit-bindgen-c's usual object file
//! (`plugin_component_type.o`, a custom section the linker keeps) rather than
//! being embedded after linking: that keeps the bindings usable unchanged by
//! a C author with their own build (`clang … plugin.c
//! plugin_component_type.o`, then `kata plugin componentize`), and the object
//! is as deterministic as the rest (only wit-bindgen-c's version is in it).
//!
//! Every world also imports `wasi:http/outgoing-handler` (the SDK's HTTP
//! client speaks it); a plugin that never sends a request does not import it
//! (wit-component keeps only what the module uses).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use wit_bindgen_core::wit_parser::{Resolve, SourceMap, UnresolvedPackageGroup, WorldId};

use super::{Built, Lang};

/// The clang major version kata pins (Debian bookworm and trixie ship it).
pub const CLANG_MAJOR: u32 = 19;

/// What `kata plugin toolchain install c` installs with apt-get.
pub const APT_PACKAGES: &[&str] = &["clang-19", "lld-19", "wasi-libc", "libclang-rt-19-dev-wasm32"];

/// The compiler flags of every build, besides target, sysroot and paths.
/// `-O2`: small and fast (a reactor module; no `main`). The stack is 1 MiB
/// like Rust's (wasm-ld's default of 64 KiB is easy to overflow with a few
/// buffers on the stack).
pub const CFLAGS: &[&str] = &["-mexec-model=reactor", "-O2", "-std=gnu17", "-Wall", "-Wl,-z,stack-size=1048576", "-Wl,--strip-debug"];

/// The kata worlds C plugins target, as `--world` names them.
pub const WORLDS: &[&str] = &["channel", "tools", "service", "channel-tools"];

/// The name the bindings give the world in C: `plugin.h`, `plugin_string_t`.
const WORLD_NAME_IN_C: &str = "plugin";

/// Where a build writes the bindings, inside the project.
const BINDINGS_DIR: &str = "build/bindings";

/// The WASI 0.2 WIT the C worlds import from (wasi:http and what it uses),
/// the version the preview1 adapter and kata's host speak.
const WASI_WIT: &[(&str, &str)] = &[
    ("deps/cli.wit", include_str!("../../../../sdk/c/wit/deps/cli.wit")),
    ("deps/clocks.wit", include_str!("../../../../sdk/c/wit/deps/clocks.wit")),
    ("deps/filesystem.wit", include_str!("../../../../sdk/c/wit/deps/filesystem.wit")),
    ("deps/http.wit", include_str!("../../../../sdk/c/wit/deps/http.wit")),
    ("deps/io.wit", include_str!("../../../../sdk/c/wit/deps/io.wit")),
    ("deps/random.wit", include_str!("../../../../sdk/c/wit/deps/random.wit")),
    ("deps/sockets.wit", include_str!("../../../../sdk/c/wit/deps/sockets.wit")),
];

/// The version of the WASI packages in [`WASI_WIT`].
const WASI_VERSION: &str = "0.2.12";

/// Build the project in `dir`.
pub fn build(dir: &Path, lang: Lang) -> Result<Built> {
    let tc = Toolchain::detect().map_err(|what| super::toolchain::missing(lang, &what))?;
    let sources = sources(dir)?;
    if sources.is_empty() {
        bail!("{} has no C files (kata compiles *.c at the top, under src/ and under vendor/)", dir.display());
    }
    let world = world_of(dir, &sources)?;
    let bindings = dir.join(BINDINGS_DIR);
    write_bindings(world, &bindings, true)?;

    let core = Path::new("build").join("plugin.core.wasm");
    let mut cmd = tc.command();
    let abs = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
    cmd.current_dir(dir)
        .arg(format!("-ffile-prefix-map={}=.", abs.display()))
        .args(include_dirs(dir)?.iter().map(|d| format!("-I{}", d.display())))
        .arg("-o")
        .arg(&core)
        .args(&sources)
        .arg(Path::new(BINDINGS_DIR).join(format!("{WORLD_NAME_IN_C}.c")))
        .arg(Path::new(BINDINGS_DIR).join(format!("{WORLD_NAME_IN_C}_component_type.o")));
    tracing::debug!("running {cmd:?}");
    let output = super::run(&format!("compiling {} with {}", dir.display(), tc.clang.display()), &mut cmd)?;
    // Warnings are worth seeing even when the build succeeds.
    let warnings = String::from_utf8_lossy(&output.stderr);
    if !warnings.trim().is_empty() {
        eprint!("{warnings}");
    }
    let wasm = std::fs::read(dir.join(&core)).with_context(|| format!("cannot read {}", dir.join(&core).display()))?;
    Ok(Built { wasm, version: None })
}

/// Install the pinned toolchain with apt-get (with sudo when not root);
/// nothing happens when it is there.
pub fn install() -> Result<()> {
    if Toolchain::detect().is_ok() {
        return Ok(());
    }
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        // Installed, yet not usable: say what is wrong rather than reinstall.
        bail!("{}", Toolchain::detect().err().unwrap_or_default());
    }
    if which("apt-get").is_none() {
        bail!(
            "kata installs the C toolchain with apt-get ({}), and this system has no apt-get; install clang {CLANG_MAJOR} \
             with wasm-ld and wasi-libc with your package manager, or a WASI SDK and set WASI_SDK_PATH to it",
            APT_PACKAGES.join(" ")
        );
    }
    eprintln!("installing the C toolchain with apt-get: {} (about 30 s)…", missing.join(" "));
    let install = || {
        let mut cmd = apt_get();
        cmd.args(["install", "-y", "-qq", "--no-install-recommends"]).args(&missing);
        super::run("apt-get install", &mut cmd)
    };
    if let Err(first) = install() {
        // Usually a fresh machine with no package lists yet.
        tracing::debug!("apt-get install failed ({first:#}); updating the package lists and trying again");
        super::run("apt-get update", apt_get().args(["update", "-qq"]))?;
        install()?;
    }
    Toolchain::detect().map(|_| ()).map_err(|what| anyhow!("apt-get installed {}, but {what}", missing.join(" ")))
}

/// What is installed: clang's version, the wasi-libc found and the target.
pub fn status() -> Result<String> {
    let tc = Toolchain::detect().map_err(|what| super::toolchain::missing(Lang::C, &what))?;
    Ok(tc.describe())
}

/// Write the bindings for kata world `world` into `out`; returns the files.
pub fn bindings(world: &str, out: &Path) -> Result<Vec<PathBuf>> {
    write_bindings(world, out, false)
}

/// The bindings of `world`, as (file name, contents): `plugin.h`,
/// `plugin.c` and `plugin_component_type.o`.
pub fn generate(world: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let (mut resolve, id) = resolve_world(world)?;
    let opts = wit_bindgen_c::Opts { rename_world: Some(WORLD_NAME_IN_C.into()), ..Default::default() };
    let mut files = wit_bindgen_core::Files::default();
    opts.build().generate(&mut resolve, id, &mut files).context("wit-bindgen-c cannot generate the C bindings")?;
    let world = world.strip_suffix("-plugin").unwrap_or(world);
    let mut out = Vec::new();
    for (name, bytes) in files.iter() {
        let bytes = if name == format!("{WORLD_NAME_IN_C}.h") { header_preamble(world, bytes) } else { bytes.to_vec() };
        out.push((name.to_string(), bytes));
    }
    Ok(out)
}

/// A note on where the header comes from, and `KATA_WORLD_*` macros that
/// let the SDK (kata.h) offer what the world has, e.g. channel errors only
/// to channels.
fn header_preamble(world: &str, header: &[u8]) -> Vec<u8> {
    let v = super::SDK_WIT_VERSION;
    let mut s = format!(
        "// C bindings for kata world {world}-plugin (kata:plugin@{v}, plus wasi:http@{WASI_VERSION}),\n\
         // written by `kata plugin bindings --lang c --world {world}` with wit-bindgen-c {}.\n\
         // Do not edit: `kata plugin build` writes them again from the WIT built into kata.\n",
        wit_bindgen_version()
    );
    for part in world.split('-') {
        s.push_str(&format!("#define KATA_WORLD_{} 1\n", part.to_ascii_uppercase()));
    }
    s.push('\n');
    let mut bytes = s.into_bytes();
    bytes.extend_from_slice(header);
    bytes
}

fn wit_bindgen_version() -> &'static str {
    "0.60.0"
}

fn write_bindings(world: &str, out: &Path, quiet_if_same: bool) -> Result<Vec<PathBuf>> {
    let files = generate(world)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut written = Vec::new();
    for (name, bytes) in files {
        let path = out.join(&name);
        // Rewrite only what changed, so builds leave file times alone.
        if !(quiet_if_same && std::fs::read(&path).is_ok_and(|old| old == bytes)) {
            super::write_atomically(&path, &bytes)?;
        }
        written.push(path);
    }
    Ok(written)
}

/// The WIT of the C worlds: each kata world plus `wasi:http`.
fn c_worlds_wit() -> String {
    let v = super::SDK_WIT_VERSION;
    let mut s = format!("/// kata's worlds for C plugins: a kata world plus wasi:http/outgoing-handler.\npackage kata:c@{v};\n");
    for w in WORLDS {
        s.push_str(&format!(
            "\nworld {w}-plugin {{\n    include kata:plugin/{w}-plugin@{v};\n    import wasi:http/outgoing-handler@{WASI_VERSION};\n}}\n"
        ));
    }
    s
}

fn parse_group(files: &[(&str, &str)]) -> Result<UnresolvedPackageGroup> {
    let mut map = SourceMap::default();
    for (path, text) in files {
        map.push_str(path, *text);
    }
    map.parse().map_err(|(_, e)| anyhow!("{e}"))
}

/// The resolved WIT of the C world `world` (`channel`, `tools`, `service`,
/// `channel-tools`, with or without `-plugin`).
pub fn resolve_world(world: &str) -> Result<(Resolve, WorldId)> {
    let world = world.strip_suffix("-plugin").unwrap_or(world);
    if !WORLDS.contains(&world) {
        bail!("unknown kata world {world:?}; C plugins target one of: {}", WORLDS.join(", "));
    }
    let mut resolve = Resolve::default();
    let mut deps = Vec::new();
    for (path, text) in WASI_WIT {
        deps.push(parse_group(&[(path, text)])?);
    }
    deps.push(parse_group(super::wit_files())?);
    let main = parse_group(&[("kata-c.wit", &c_worlds_wit())])?;
    let pkg = resolve.push_groups(main, deps).map_err(|e| anyhow!("{e:#}")).context("the built-in WIT does not resolve")?;
    let id = resolve.select_world(&[pkg], Some(&format!("{world}-plugin")))?;
    Ok((resolve, id))
}

/// The C files kata compiles, relative to `dir`, sorted: `*.c` at the top
/// and everything under `src/` and `vendor/`.
pub fn sources(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|x| x == "c") {
            out.push(path.strip_prefix(dir).unwrap_or(&path).to_path_buf());
        }
    }
    for sub in ["src", "vendor"] {
        collect_c(dir, &dir.join(sub), &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn collect_c(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect_c(root, &path, out)?;
        } else if path.extension().is_some_and(|x| x == "c") {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

/// `-I` directories: the project, `src/`, each directory of `vendor/`, and
/// the bindings.
fn include_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = vec![PathBuf::from(".")];
    if dir.join("src").is_dir() {
        dirs.push("src".into());
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("vendor")) {
        let mut vendored: Vec<PathBuf> =
            entries.flatten().filter(|e| e.path().is_dir()).map(|e| Path::new("vendor").join(e.file_name())).collect();
        vendored.sort();
        dirs.extend(vendored);
    }
    dirs.push(BINDINGS_DIR.into());
    Ok(dirs)
}

/// Which world the sources implement, from the export functions they define
/// (outside `vendor/`: the SDK has weak defaults for optional exports).
fn world_of(dir: &Path, sources: &[PathBuf]) -> Result<&'static str> {
    let (mut channel, mut tools, mut service) = (false, false, false);
    for rel in sources.iter().filter(|p| !p.starts_with("vendor")) {
        let text = std::fs::read(dir.join(rel)).with_context(|| format!("cannot read {}", dir.join(rel).display()))?;
        let code = strip_comments(&String::from_utf8_lossy(&text));
        channel |= code.contains("exports_kata_plugin_channel_");
        tools |= code.contains("exports_kata_plugin_tools_");
        service |= code.contains("exports_kata_plugin_service_");
    }
    Ok(match (channel, tools, service) {
        (true, false, false) => "channel",
        (false, true, false) => "tools",
        (true, true, false) => "channel-tools",
        (false, false, true) => "service",
        (false, false, false) => bail!(
            "{} defines none of the functions of a kata world; a channel defines exports_kata_plugin_channel_poll and the \
             other exports_kata_plugin_channel_* functions, a tools plugin exports_kata_plugin_tools_list and \
             exports_kata_plugin_tools_call, a service exports_kata_plugin_service_start, _tick and _stop \
             (see build/bindings/plugin.h after `kata plugin bindings --lang c --world WORLD --out build/bindings`)",
            dir.display()
        ),
        _ => bail!("{} defines functions of a service and of a channel or tools plugin; a service is a plugin of its own", dir.display()),
    })
}

/// C source without its comments (string and character literals kept), so a
/// comment naming another world's function does not pick the world.
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
                out.push(b' ');
            }
            q @ (b'"' | b'\'') => {
                out.push(q);
                i += 1;
                while i < b.len() && b[i] != q && b[i] != b'\n' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        out.push(b[i]);
                        i += 1;
                    }
                    out.push(b[i]);
                    i += 1;
                }
                if i < b.len() {
                    out.push(b[i]);
                    i += 1;
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A usable clang for wasm32-wasi with its C library.
struct Toolchain {
    clang: PathBuf,
    /// `--sysroot` (a WASI SDK); none for Debian's multiarch wasi-libc.
    sysroot: Option<PathBuf>,
    target: &'static str,
    version: String,
    libc: String,
}

impl Toolchain {
    /// A WASI SDK named by `WASI_SDK_PATH`, else Debian's clang-19 and
    /// wasi-libc. The error says what is missing.
    fn detect() -> std::result::Result<Toolchain, String> {
        if let Some(sdk) = std::env::var_os("WASI_SDK_PATH").filter(|s| !s.is_empty()).map(PathBuf::from) {
            let clang = sdk.join("bin/clang");
            let sysroot = sdk.join("share/wasi-sysroot");
            if !clang.is_file() || !sysroot.is_dir() {
                return Err(format!("WASI_SDK_PATH={} has no bin/clang and share/wasi-sysroot", sdk.display()));
            }
            let version = clang_version(&clang)?;
            return Ok(Toolchain {
                clang,
                libc: format!("WASI SDK sysroot {}", sysroot.display()),
                sysroot: Some(sysroot),
                target: "wasm32-wasip1",
                version,
            });
        }
        let clang = which(&format!("clang-{CLANG_MAJOR}"))
            .or_else(|| Some(PathBuf::from(format!("/usr/lib/llvm-{CLANG_MAJOR}/bin/clang"))).filter(|p| p.is_file()))
            .ok_or_else(|| format!("clang-{CLANG_MAJOR} is not installed"))?;
        let llvm_bin = PathBuf::from(format!("/usr/lib/llvm-{CLANG_MAJOR}/bin"));
        if !llvm_bin.join("wasm-ld").is_file() && which(&format!("wasm-ld-{CLANG_MAJOR}")).is_none() {
            return Err(format!("wasm-ld (lld-{CLANG_MAJOR}) is not installed"));
        }
        let builtins = format!("/usr/lib/llvm-{CLANG_MAJOR}/lib/clang/{CLANG_MAJOR}/lib/wasi/libclang_rt.builtins-wasm32.a");
        if !Path::new(&builtins).is_file() {
            return Err(format!("the compiler runtime for wasm32 (libclang-rt-{CLANG_MAJOR}-dev-wasm32) is not installed"));
        }
        // Debian's wasi-libc is multiarch: /usr/lib/<triple> and
        // /usr/include/<triple>, found by clang for that very triple
        // (bookworm's is `wasm32-wasi`, the older name of wasm32-wasip1).
        let target = ["wasm32-wasip1", "wasm32-wasi"]
            .into_iter()
            .find(|t| Path::new(&format!("/usr/lib/{t}/libc.a")).is_file() && Path::new(&format!("/usr/include/{t}")).is_dir())
            .ok_or("wasi-libc is not installed (no /usr/lib/wasm32-wasi/libc.a)")?;
        let version = clang_version(&clang)?;
        let libc = match dpkg_version("wasi-libc") {
            Some(v) => format!("wasi-libc {v}"),
            None => format!("wasi-libc in /usr/lib/{target}"),
        };
        Ok(Toolchain { clang, sysroot: None, target, version, libc })
    }

    fn describe(&self) -> String {
        format!("{}, {}, target {}", self.version, self.libc, self.target)
    }

    /// clang with the target, sysroot and pinned flags.
    fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.clang);
        cmd.arg(format!("--target={}", self.target));
        if let Some(s) = &self.sysroot {
            cmd.arg(format!("--sysroot={}", s.display()));
        }
        cmd.args(CFLAGS);
        cmd
    }
}

fn clang_version(clang: &Path) -> std::result::Result<String, String> {
    let out = std::process::Command::new(clang).arg("--version").output().map_err(|e| format!("{} does not run: {e}", clang.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default().trim();
    if !out.status.success() || first.is_empty() {
        return Err(format!("{} --version failed", clang.display()));
    }
    Ok(first.to_string())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

fn dpkg_version(package: &str) -> Option<String> {
    let out = std::process::Command::new("dpkg-query").args(["-W", "-f=${Status} ${Version}", package]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.strip_prefix("install ok installed ").map(|v| v.trim().to_string())
}

fn dpkg_installed(package: &str) -> bool {
    dpkg_version(package).is_some()
}

/// `apt-get` non-interactively, through sudo unless kata runs as root.
fn apt_get() -> std::process::Command {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    let mut cmd = if root {
        std::process::Command::new("apt-get")
    } else {
        // `env` carries the setting through sudo's environment reset.
        let mut c = std::process::Command::new("sudo");
        c.args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        c
    };
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_world_has_bindings_with_its_exports_and_wasi_http() {
        for (world, export) in [
            ("channel", "exports_kata_plugin_channel_poll"),
            ("tools", "exports_kata_plugin_tools_call"),
            ("service", "exports_kata_plugin_service_tick"),
            ("channel-tools", "exports_kata_plugin_tools_list"),
        ] {
            let files = generate(world).unwrap();
            let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["plugin.c", "plugin.h", "plugin_component_type.o"], "{world}");
            let header = String::from_utf8(files[1].1.clone()).unwrap();
            assert!(header.contains(export), "{world}: {export}");
            assert!(header.contains("wasi_http_outgoing_handler_handle"), "{world}");
            assert!(header.contains("kata_plugin_host_log"), "{world}");
            assert!(header.contains(&format!("#define KATA_WORLD_{} 1", world.split('-').next().unwrap().to_uppercase())));
        }
        assert!(generate("nope").unwrap_err().to_string().contains("channel, tools, service"));
    }

    #[test]
    fn the_world_is_read_from_the_functions_the_sources_define() {
        let d = std::env::temp_dir().join(format!("kata-c-world-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::create_dir_all(d.join("vendor/kata")).unwrap();
        std::fs::write(d.join("vendor/kata/kata.c"), "void exports_kata_plugin_channel_disconnect(void) {}").unwrap();
        std::fs::write(d.join("src/a.c"), "// exports_kata_plugin_service_tick\nbool exports_kata_plugin_tools_call(void) {}").unwrap();
        assert_eq!(sources(&d).unwrap(), [PathBuf::from("src/a.c"), PathBuf::from("vendor/kata/kata.c")]);
        assert_eq!(world_of(&d, &sources(&d).unwrap()).unwrap(), "tools");
        std::fs::write(d.join("b.c"), "void exports_kata_plugin_channel_disconnect(void) { char *s = \"/*\"; }").unwrap();
        assert_eq!(world_of(&d, &sources(&d).unwrap()).unwrap(), "channel-tools");
        std::fs::write(d.join("b.c"), "/* nothing */").unwrap();
        std::fs::write(d.join("src/a.c"), "int main(void) { return 0; }").unwrap();
        assert!(world_of(&d, &sources(&d).unwrap()).unwrap_err().to_string().contains("exports_kata_plugin_channel_poll"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Each template, as `kata plugin new --lang c` writes it: its own test
    /// passes natively (`make test`), it builds into a component of its world
    /// that says it is C, and two builds give the same bytes. Also runs the
    /// SDK's JSON tests natively. Parts whose tools are missing are skipped
    /// (scripts/setup.sh installs them).
    #[test]
    fn the_templates_pass_their_own_tests_and_build_the_same_bytes_twice() {
        let native = which("make").is_some() && which("cc").is_some();
        let toolchain = Toolchain::detect().is_ok();
        if !native || !toolchain {
            eprintln!("skipping parts: make and cc {native}, the C toolchain {toolchain}");
        }
        let tmp = tempfile::tempdir().unwrap();
        let run = |cmd: &mut std::process::Command| {
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        };
        if native {
            let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/c");
            let exe = tmp.path().join("test_json");
            run(std::process::Command::new("cc")
                .args(["-std=gnu17", "-Wall", "-Wextra", "-Werror", "-o"])
                .arg(&exe)
                .arg(sdk.join("tests/test_json.c"))
                .arg(sdk.join("kata/kata_json.c"))
                .arg(format!("-I{}", sdk.join("kata").display())));
            run(&mut std::process::Command::new(&exe));
        }
        for kind in ["channel", "tools", "service"] {
            let dir = tmp.path().join(kind);
            crate::scaffold::new_project(&format!("t-{kind}"), kind, Lang::C, &dir).unwrap();
            if native {
                run(std::process::Command::new("make").args(["-s", "test", "CFLAGS=-std=gnu17 -Wall -Wextra -Werror"]).current_dir(&dir));
            }
            if toolchain {
                let (out, _) = super::super::build(&dir, None).unwrap();
                let first = std::fs::read(&out).unwrap();
                let info = crate::plugin::inspect(&first, "t").unwrap();
                assert!(info.exports.iter().any(|e| e.starts_with(&format!("kata:plugin/{kind}@"))), "{kind}: {:?}", info.exports);
                assert_eq!(super::super::source_language(&first).as_deref(), Some("C11"));
                std::fs::remove_dir_all(dir.join("build")).unwrap();
                let (out, rebuilt) = super::super::build(&dir, None).unwrap();
                assert!(rebuilt);
                assert!(std::fs::read(&out).unwrap() == first, "{kind}: two builds of the same source differ");
            }
        }
    }

    #[test]
    fn comments_go_and_literals_stay() {
        assert_eq!(strip_comments("a /* b */ c // d\ne \"//f\" '/'"), "a   c \ne \"//f\" '/'");
    }
}
