#!/usr/bin/env bash
# Regenerate what the JavaScript SDK derives from elsewhere:
#   wit/                      kata's WIT (wit/v0.1.2) and WASI 0.2.12 (from wasmtime's crates)
#   src/wit.d.ts              TypeScript declarations of that WIT in QuickJS's mapping (pinned jco, tools/)
#   ../../tests/guests/js-probe/vendor/kata-sdk/   a copy of src/ (the probe vendors the SDK like a project)
#   kata-http-adapter.core.wasm + .sources.sha256  the HTTP adapter (http-adapter/, Rust, wasm32-wasip1)
# `generate.sh --check` regenerates into a temporary directory and exits 1 when
# anything committed is stale. The adapter is checked by the hash of its
# sources (rebuilding it takes minutes); without --check it is rebuilt when
# that hash changed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
check=false
[ "${1-}" = "--check" ] && check=true

adapter_sources() {
  (cd "$repo" && cat sdk/js/http-adapter/Cargo.toml sdk/js/http-adapter/Cargo.lock sdk/js/http-adapter/src/lib.rs \
     sdk/rust/src/http.rs sdk/js/wit/js.wit | sha256sum | cut -d' ' -f1)
}

gen() { # gen OUT: write every generated file under OUT (a mirror of sdk/js)
  local out="$1"
  mkdir -p "$out/wit/deps/kata-plugin" "$out/src" "$out/probe-vendor"
  cp "$here/wit/js.wit" "$out/wit/js.wit"
  cp "$repo"/wit/v0.1.2/*.wit "$out/wit/deps/kata-plugin/"
  local http
  http="$(cd "$repo" && cargo metadata --format-version 1 --locked 2>/dev/null |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const p=JSON.parse(s).packages.find(p=>p.name==="wasmtime-wasi-http");console.log(require("path").dirname(p.manifest_path))})')"
  for p in clocks filesystem io; do
    mkdir -p "$out/wit/deps/wasi-$p"
    cp "$http/wit/deps/$p.wit" "$out/wit/deps/wasi-$p/$p.wit"
  done
  if [ ! -d "$here/tools/node_modules/@bytecodealliance/jco" ]; then
    (cd "$here/tools" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
  node "$here/tools/wit-dts.mjs" "$out/wit" "$out/src/wit.d.ts"
  for f in "$here"/src/*.js "$here"/src/*.d.ts; do
    [ "$(basename "$f")" = wit.d.ts ] && continue
    cp "$f" "$out/probe-vendor/"
  done
  cp "$out/src/wit.d.ts" "$out/probe-vendor/wit.d.ts"
  adapter_sources > "$out/kata-http-adapter.sources.sha256"
}

probe="$repo/tests/guests/js-probe/vendor/kata-sdk"
if $check; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  gen "$tmp"
  stale=0
  diff -r "$tmp/wit" "$here/wit" >&2 || stale=1
  diff "$tmp/src/wit.d.ts" "$here/src/wit.d.ts" >/dev/null || { echo "sdk/js/src/wit.d.ts is stale" >&2; stale=1; }
  diff -r "$tmp/probe-vendor" "$probe" >&2 || stale=1
  diff "$tmp/kata-http-adapter.sources.sha256" "$here/kata-http-adapter.sources.sha256" >/dev/null ||
    { echo "sdk/js/kata-http-adapter.core.wasm is stale (its sources changed)" >&2; stale=1; }
  if [ "$stale" = 1 ]; then
    echo "the JavaScript SDK's generated files are stale: run sdk/js/generate.sh" >&2
    exit 1
  fi
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
gen "$tmp"
rm -rf "$here/wit/deps"
cp -r "$tmp/wit/." "$here/wit/"
cp "$tmp/src/wit.d.ts" "$here/src/wit.d.ts"
rm -rf "$probe" && mkdir -p "$probe" && cp "$tmp"/probe-vendor/* "$probe/"
if ! cmp -s "$tmp/kata-http-adapter.sources.sha256" "$here/kata-http-adapter.sources.sha256" 2>/dev/null; then
  echo "building the HTTP adapter (cargo, wasm32-wasip1; a few minutes when cold)…" >&2
  (cd "$here/http-adapter" && cargo build --locked --release --target wasm32-wasip1 >&2)
  cp "$here/http-adapter/target/wasm32-wasip1/release/kata_js_http_adapter.wasm" "$here/kata-http-adapter.core.wasm"
  cp "$tmp/kata-http-adapter.sources.sha256" "$here/kata-http-adapter.sources.sha256"
fi
echo "sdk/js: generated files are current" >&2
