#!/usr/bin/env bash
# Regenerate what sdk/c keeps in sync, with the kata binary of this checkout
# (target/debug/kata, built if missing; KATA=/path/to/kata to use another):
#
# - bindings/<world>/: the C bindings of each kata world (channel, tools,
#   service), exactly what `kata plugin build` writes into a project's
#   build/bindings/ — checked in so authors can read the API without a build;
# - tests/guests/c-probe/vendor/kata/: the probe's copy of the SDK (kata/).
#
# `generate.sh --check` changes nothing and exits 1 when any of it is stale.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CHECK=
case "${1-}" in
  --check) CHECK=1 ;;
  "") ;;
  *) echo "usage: sdk/c/generate.sh [--check]" >&2; exit 2 ;;
esac

KATA=${KATA:-$ROOT/target/debug/kata}
if [ ! -x "$KATA" ]; then
  echo "building kata (for its bindings generator)…" >&2
  cargo build --quiet --bin kata
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for world in channel tools service; do
  "$KATA" plugin bindings --lang c --world "$world" --out "$tmp/bindings/$world" >/dev/null
done
mkdir -p "$tmp/vendor"
cp -p sdk/c/kata/*.[ch] "$tmp/vendor/"

stale=0
sync_dir() { # sync_dir GENERATED TARGET
  if [ -n "$CHECK" ]; then
    if ! diff -r -q "$1" "$2" >&2; then
      stale=1
    fi
  else
    rm -rf "$2"
    mkdir -p "$(dirname "$2")"
    cp -r "$1" "$2"
  fi
}
sync_dir "$tmp/bindings" sdk/c/bindings
sync_dir "$tmp/vendor" tests/guests/c-probe/vendor/kata

if [ -n "$stale" ] && [ "$stale" = 1 ]; then
  echo "sdk/c: generated files are stale; run sdk/c/generate.sh and commit the result" >&2
  exit 1
fi
[ -n "$CHECK" ] || echo "sdk/c: bindings and the probe's SDK copy regenerated" >&2
