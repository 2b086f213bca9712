//! Go templates: a Go module (package main) with the kata Go SDK vendored in
//! `third_party/kata-sdk` (module `kata`) and the component model's Go
//! support package in `third_party/go-pkg` (module
//! `go.bytecodealliance.org/pkg`, which the bindings kata generates import
//! and which cannot be downloaded here); `go.mod` points at both with
//! `replace`, so the project builds offline with standard Go. `kata plugin
//! test .` runs `go test ./...` natively; `kata plugin build .` builds for
//! wasip1 and embeds the world the module exports.

use super::Template;
use crate::build::Lang;

macro_rules! go_template {
    ($kind:literal, $dir:literal, [$($path:literal),* $(,)?]) => {
        Template {
            lang: Lang::Go,
            kind: $kind,
            files: &[
                file!("go.mod", concat!("../../templates/", $dir, "/go.mod.tmpl")),
                file!("plugin.toml", concat!("../../templates/", $dir, "/plugin.toml.tmpl")),
                file!("README.md", concat!("../../templates/", $dir, "/README.md.tmpl")),
                file!(".gitignore", concat!("../../templates/", $dir, "/gitignore.tmpl")),
                $(file!($path, concat!("../../templates/", $dir, "/", $path, ".tmpl")),)*
            ],
            vendor: &[GO_SDK, GO_PKG],
            next: "kata plugin test . && kata plugin build .",
        }
    };
}

pub(super) const TEMPLATES: &[Template] = &[
    go_template!("channel", "go-channel", ["main.go", "inbox.go", "inbox_test.go"]),
    go_template!("tools", "go-tools", ["main.go", "wordcount.go", "wordcount_test.go"]),
    go_template!("service", "go-service", ["main.go", "reminder.go", "reminder_test.go"]),
];

/// The kata Go SDK (sdk/go without its tests, tools and the support
/// package), vendored as `third_party/kata-sdk/`.
const GO_SDK: &[super::File] = &[
    file!("third_party/kata-sdk/README.md", "../../../../sdk/go/README.md"),
    file!("third_party/kata-sdk/channel/channel.go", "../../../../sdk/go/channel/channel.go"),
    file!("third_party/kata-sdk/config.go", "../../../../sdk/go/config.go"),
    file!("third_party/kata-sdk/errors.go", "../../../../sdk/go/errors.go"),
    file!("third_party/kata-sdk/go.mod", "../../../../sdk/go/go.mod"),
    file!("third_party/kata-sdk/host_native.go", "../../../../sdk/go/host_native.go"),
    file!("third_party/kata-sdk/host_wasip1.go", "../../../../sdk/go/host_wasip1.go"),
    file!("third_party/kata-sdk/http.go", "../../../../sdk/go/http.go"),
    file!("third_party/kata-sdk/http_codes.go", "../../../../sdk/go/http_codes.go"),
    file!("third_party/kata-sdk/http_native.go", "../../../../sdk/go/http_native.go"),
    file!("third_party/kata-sdk/http_wasip1.go", "../../../../sdk/go/http_wasip1.go"),
    file!("third_party/kata-sdk/internal/gc/gc.go", "../../../../sdk/go/internal/gc/gc.go"),
    file!("third_party/kata-sdk/internal/gc/gc_native.go", "../../../../sdk/go/internal/gc/gc_native.go"),
    file!("third_party/kata-sdk/internal/gc/gc_wasip1.go", "../../../../sdk/go/internal/gc/gc_wasip1.go"),
    file!(
        "third_party/kata-sdk/internal/export_kata_plugin_channel/channel.go",
        "../../../../sdk/go/internal/export_kata_plugin_channel/channel.go"
    ),
    file!(
        "third_party/kata-sdk/internal/export_kata_plugin_service/service.go",
        "../../../../sdk/go/internal/export_kata_plugin_service/service.go"
    ),
    file!(
        "third_party/kata-sdk/internal/export_kata_plugin_tools/tools.go",
        "../../../../sdk/go/internal/export_kata_plugin_tools/tools.go"
    ),
    file!("third_party/kata-sdk/kata.go", "../../../../sdk/go/kata.go"),
    file!("third_party/kata-sdk/log.go", "../../../../sdk/go/log.go"),
    file!("third_party/kata-sdk/nethttp/nethttp.go", "../../../../sdk/go/nethttp/nethttp.go"),
    file!("third_party/kata-sdk/service/emit_native.go", "../../../../sdk/go/service/emit_native.go"),
    file!("third_party/kata-sdk/service/emit_wasip1.go", "../../../../sdk/go/service/emit_wasip1.go"),
    file!("third_party/kata-sdk/service/service.go", "../../../../sdk/go/service/service.go"),
    file!("third_party/kata-sdk/state.go", "../../../../sdk/go/state.go"),
    file!("third_party/kata-sdk/tools/tools.go", "../../../../sdk/go/tools/tools.go"),
    file!("third_party/kata-sdk/wit/exports/channel/wit_exports.go", "../../../../sdk/go/wit/exports/channel/wit_exports.go"),
    file!("third_party/kata-sdk/wit/exports/service/wit_exports.go", "../../../../sdk/go/wit/exports/service/wit_exports.go"),
    file!("third_party/kata-sdk/wit/exports/tools/wit_exports.go", "../../../../sdk/go/wit/exports/tools/wit_exports.go"),
    file!("third_party/kata-sdk/wit/kata_plugin_channel/empty.s", "../../../../sdk/go/wit/kata_plugin_channel/empty.s"),
    file!("third_party/kata-sdk/wit/kata_plugin_channel/wit_bindings.go", "../../../../sdk/go/wit/kata_plugin_channel/wit_bindings.go"),
    file!("third_party/kata-sdk/wit/kata_plugin_emitter/empty.s", "../../../../sdk/go/wit/kata_plugin_emitter/empty.s"),
    file!("third_party/kata-sdk/wit/kata_plugin_emitter/wit_bindings.go", "../../../../sdk/go/wit/kata_plugin_emitter/wit_bindings.go"),
    file!("third_party/kata-sdk/wit/kata_plugin_host/empty.s", "../../../../sdk/go/wit/kata_plugin_host/empty.s"),
    file!("third_party/kata-sdk/wit/kata_plugin_host/wit_bindings.go", "../../../../sdk/go/wit/kata_plugin_host/wit_bindings.go"),
    file!("third_party/kata-sdk/wit/kata_plugin_tools/empty.s", "../../../../sdk/go/wit/kata_plugin_tools/empty.s"),
    file!("third_party/kata-sdk/wit/kata_plugin_tools/wit_bindings.go", "../../../../sdk/go/wit/kata_plugin_tools/wit_bindings.go"),
    file!("third_party/kata-sdk/wit/kata_plugin_types/empty.s", "../../../../sdk/go/wit/kata_plugin_types/empty.s"),
    file!("third_party/kata-sdk/wit/kata_plugin_types/wit_bindings.go", "../../../../sdk/go/wit/kata_plugin_types/wit_bindings.go"),
    file!("third_party/kata-sdk/wit/wasi_clocks_monotonic_clock/empty.s", "../../../../sdk/go/wit/wasi_clocks_monotonic_clock/empty.s"),
    file!(
        "third_party/kata-sdk/wit/wasi_clocks_monotonic_clock/wit_bindings.go",
        "../../../../sdk/go/wit/wasi_clocks_monotonic_clock/wit_bindings.go"
    ),
    file!("third_party/kata-sdk/wit/wasi_http_outgoing_handler/empty.s", "../../../../sdk/go/wit/wasi_http_outgoing_handler/empty.s"),
    file!(
        "third_party/kata-sdk/wit/wasi_http_outgoing_handler/wit_bindings.go",
        "../../../../sdk/go/wit/wasi_http_outgoing_handler/wit_bindings.go"
    ),
    file!("third_party/kata-sdk/wit/wasi_http_types/empty.s", "../../../../sdk/go/wit/wasi_http_types/empty.s"),
    file!("third_party/kata-sdk/wit/wasi_http_types/wit_bindings.go", "../../../../sdk/go/wit/wasi_http_types/wit_bindings.go"),
    file!("third_party/kata-sdk/wit/wasi_io_error/empty.s", "../../../../sdk/go/wit/wasi_io_error/empty.s"),
    file!("third_party/kata-sdk/wit/wasi_io_error/wit_bindings.go", "../../../../sdk/go/wit/wasi_io_error/wit_bindings.go"),
    file!("third_party/kata-sdk/wit/wasi_io_poll/empty.s", "../../../../sdk/go/wit/wasi_io_poll/empty.s"),
    file!("third_party/kata-sdk/wit/wasi_io_poll/wit_bindings.go", "../../../../sdk/go/wit/wasi_io_poll/wit_bindings.go"),
    file!("third_party/kata-sdk/wit/wasi_io_streams/empty.s", "../../../../sdk/go/wit/wasi_io_streams/empty.s"),
    file!("third_party/kata-sdk/wit/wasi_io_streams/wit_bindings.go", "../../../../sdk/go/wit/wasi_io_streams/wit_bindings.go"),
];

/// go.bytecodealliance.org/pkg v0.2.2 (Apache-2.0; sdk/go/third_party/go-pkg,
/// from the wit-bindgen-go crate), vendored as `third_party/go-pkg/`.
const GO_PKG: &[super::File] = &[
    file!("third_party/go-pkg/LICENSE", "../../../../sdk/go/third_party/go-pkg/LICENSE"),
    file!("third_party/go-pkg/README.md", "../../../../sdk/go/third_party/go-pkg/README.md"),
    file!("third_party/go-pkg/go.mod", "../../../../sdk/go/third_party/go-pkg/go.mod"),
    file!("third_party/go-pkg/wit/async/async.go", "../../../../sdk/go/third_party/go-pkg/wit/async/async.go"),
    file!("third_party/go-pkg/wit/async/empty.s", "../../../../sdk/go/third_party/go-pkg/wit/async/empty.s"),
    file!("third_party/go-pkg/wit/runtime/runtime.go", "../../../../sdk/go/third_party/go-pkg/wit/runtime/runtime.go"),
    file!("third_party/go-pkg/wit/types/future.go", "../../../../sdk/go/third_party/go-pkg/wit/types/future.go"),
    file!("third_party/go-pkg/wit/types/option.go", "../../../../sdk/go/third_party/go-pkg/wit/types/option.go"),
    file!("third_party/go-pkg/wit/types/result.go", "../../../../sdk/go/third_party/go-pkg/wit/types/result.go"),
    file!("third_party/go-pkg/wit/types/stream.go", "../../../../sdk/go/third_party/go-pkg/wit/types/stream.go"),
    file!("third_party/go-pkg/wit/types/tuple.go", "../../../../sdk/go/third_party/go-pkg/wit/types/tuple.go"),
    file!("third_party/go-pkg/wit/types/unit.go", "../../../../sdk/go/third_party/go-pkg/wit/types/unit.go"),
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every file of sdk/go a project needs is vendored: a new SDK file
    /// must be added to GO_SDK or GO_PKG.
    #[test]
    fn every_sdk_file_is_vendored() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/go");
        let mut on_disk = Vec::new();
        collect(&root, &root, &mut on_disk);
        let vendored: Vec<String> = GO_SDK
            .iter()
            .map(|f| f.path.trim_start_matches("third_party/kata-sdk/").to_string())
            .chain(GO_PKG.iter().map(|f| f.path.to_string()))
            .collect();
        for f in &on_disk {
            assert!(vendored.contains(f), "sdk/go/{f} is not vendored into Go projects (scaffold/go.rs)");
        }
    }

    fn collect(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                if rel != "toolchain" {
                    collect(root, &p, out);
                }
            } else if !rel.ends_with("_test.go") && rel != "generate.sh" && !rel.contains("/.") && !rel.starts_with('.') {
                out.push(rel);
            }
        }
    }
}
