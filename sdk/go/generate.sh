#!/bin/sh
# Regenerate the Go bindings in sdk/go/wit/ from kata's built-in WIT with
# `kata plugin bindings --lang go` (kata writes them with the wit-bindgen-go
# crate and formats them with the Go toolchain's gofmt), for the channel,
# tools and service worlds; they share one tree.
#
#   sdk/go/generate.sh           regenerate
#   sdk/go/generate.sh --check   exit 1 if the checked-in bindings are stale
#
# Uses target/debug/kata (built when missing) or $KATA. Needs the Go
# toolchain for gofmt: `kata plugin toolchain install go`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kata=${KATA:-$root/target/debug/kata}
if [ ! -x "$kata" ]; then
  (cd "$root" && cargo build --bin kata >&2)
fi
if ! "$kata" plugin toolchain status 2>/dev/null | grep -q '^go  *go version'; then
  # kata formats the bindings with the Go toolchain's gofmt.
  echo "sdk/go/generate.sh: skipped: the Go toolchain is not installed (kata plugin toolchain install go)" >&2
  [ "${1:-}" = "--check" ] && exit 0
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for world in channel tools service; do
  "$kata" plugin bindings --lang go --world "$world" --out "$tmp/wit" >/dev/null
done
# go.bytecodealliance.org/pkg, vendored in third_party/go-pkg, must be the
# copy the wit-bindgen-go crate kata generates with ships (checked when the
# crate's source is in cargo's registry).
pkg=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/wit-bindgen-go-0.60.0/src/pkg 2>/dev/null | head -1 || true)
if [ -n "$pkg" ]; then
  for f in LICENSE README.md go.mod wit; do
    if ! diff -r "$pkg/$f" "$here/third_party/go-pkg/$f" >/dev/null 2>&1; then
      echo "sdk/go/third_party/go-pkg/$f differs from $pkg/$f: copy it again" >&2
      exit 1
    fi
  done
fi
if [ "${1:-}" = "--check" ]; then
  if ! diff -r "$here/wit" "$tmp/wit" >"$tmp/diff" 2>&1; then
    head -40 "$tmp/diff" >&2
    echo "sdk/go/wit is stale: run sdk/go/generate.sh and commit the result" >&2
    exit 1
  fi
  echo "sdk/go/wit is current" >&2
  exit 0
fi
rm -rf "$here/wit"
cp -R "$tmp/wit" "$here/wit"
echo "wrote sdk/go/wit ($(find "$here/wit" -type f | wc -l | tr -d ' ') files)" >&2
