#!/usr/bin/env bash
# Regenerate what sdk/python keeps in sync:
#
# - bindings/<world>/: componentize-py's Python stubs of each Python world
#   (wit/worlds.wit: channel, channel-tools, tools, service, hook) — the
#   `wit_world` package and `componentize_py_types`, for editors, type
#   checkers and native unit tests. `kata plugin new --lang python` vendors
#   the project's world as kata/_bindings/. (The build never uses them:
#   componentize-py generates the real bindings on the fly.)
# - tests/guests/python-probe/: the probe's copy of the SDK (kata/) and of
#   the WIT (wit/: the worlds, the WASI 0.2.12 deps, kata's contract from
#   wit/v0.1.3 as deps/kata-plugin/).
#
# componentize-py comes from kata's toolchain (`kata plugin toolchain
# install python`; this script runs it when the toolchain is missing).
# `generate.sh --check` changes nothing and exits 1 when any of it is stale.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CHECK=
case "${1-}" in
  --check) CHECK=1 ;;
  "") ;;
  *) echo "usage: sdk/python/generate.sh [--check]" >&2; exit 2 ;;
esac

TOOLCHAINS=${KATA_TOOLCHAINS:-${XDG_DATA_HOME:-$HOME/.local/share}/kata/toolchains}
CPY=${COMPONENTIZE_PY:-$TOOLCHAINS/python/venv/bin/componentize-py}
if [ ! -x "$CPY" ]; then
  KATA=${KATA:-$ROOT/target/debug/kata}
  if [ ! -x "$KATA" ]; then
    echo "building kata (to install the Python toolchain)…" >&2
    cargo build --quiet --bin kata
  fi
  "$KATA" plugin toolchain install python >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The WIT as a project carries it.
mkdir -p "$tmp/wit/deps/kata-plugin"
cp -p sdk/python/wit/worlds.wit "$tmp/wit/"
cp -p sdk/python/wit/deps/*.wit "$tmp/wit/deps/"
cp -p wit/v0.1.3/*.wit "$tmp/wit/deps/kata-plugin/"

for world in channel channel-tools tools service hook; do
  out="$tmp/bindings/$world"
  (cd "$tmp" && "$CPY" -d wit -w "$world" bindings "$out" >/dev/null)
  # Keep what a native import of the kata package needs; the rest is for
  # componentize-py's asyncio support, which kata does not use.
  rm -rf "$out/componentize_py_async_support" "$out/poll_loop.py" "$out/componentize_py_runtime.pyi"
  find "$out" -name __pycache__ -prune -exec rm -rf {} +
done

mkdir -p "$tmp/probe/kata"
cp -p sdk/python/kata/*.py "$tmp/probe/kata/"
cp -rp "$tmp/wit" "$tmp/probe/wit"

stale=0
sync_dir() { # sync_dir GENERATED TARGET
  if [ -n "$CHECK" ]; then
    if ! diff -r -q -x __pycache__ "$1" "$2" >&2; then
      stale=1
    fi
  else
    rm -rf "$2"
    mkdir -p "$(dirname "$2")"
    cp -r "$1" "$2"
  fi
}
sync_dir "$tmp/bindings" sdk/python/bindings
sync_dir "$tmp/probe/kata" tests/guests/python-probe/kata
sync_dir "$tmp/probe/wit" tests/guests/python-probe/wit

if [ "$stale" = 1 ]; then
  echo "sdk/python: generated files are stale; run sdk/python/generate.sh and commit the result" >&2
  exit 1
fi
[ -n "$CHECK" ] || echo "sdk/python: bindings and the probe's SDK and WIT copies regenerated" >&2
