#!/usr/bin/env bash
# Set everything up (idempotently) and run every test: host unit and
# integration tests, and the guest plugins' own unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "==> host tests" >&2
cargo test --workspace --all-targets
echo "==> guest unit tests (native target)" >&2
CARGO_TARGET_DIR=$PWD/target/guest-native cargo test --manifest-path plugins/Cargo.toml
