#!/usr/bin/env bash
# Set everything up (idempotently) and run every test: host unit and
# integration tests, and the guest plugins' own unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# As setup.sh builds (no incremental state: see there).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
./scripts/setup.sh
echo "==> formatting (rustfmt.toml; fix with cargo fmt --all)" >&2
cargo fmt --all --check
for m in sdk/rust plugins tests/guests; do
  cargo fmt --all --check --manifest-path "$m/Cargo.toml"
done
echo "==> SDK bindings are current (each sdk/<lang>/generate.sh --check)" >&2
for g in sdk/*/generate.sh; do
  [ -x "$g" ] || continue
  "$g" --check
done
echo "==> host tests" >&2
# One test at a time: the integration tests each drive a real daemon and real
# servers, and several areas' timing-bound tests at once on 2 cores flake.
RUST_TEST_THREADS=1 cargo test --workspace --all-targets
cargo test --workspace --doc # the rustdoc examples (kata-host's embedding API)
echo "==> the other SDKs' own native tests" >&2
./target/debug/kata plugin test sdk/go
python3 -m unittest discover sdk/python/tests
cc -std=c17 -Wall -Wextra -Werror -fsanitize=address,undefined -Isdk/c/kata -o target/sdk-c-test-json sdk/c/tests/test_json.c sdk/c/kata/kata_json.c -lm
./target/sdk-c-test-json
echo "==> SDK and guest unit tests (native target)" >&2
export CARGO_TARGET_DIR=$PWD/target/guest-native
cargo test --manifest-path sdk/rust/Cargo.toml
cargo test --manifest-path plugins/Cargo.toml
