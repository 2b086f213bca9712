#!/usr/bin/env bash
# Run the benchmarks recorded in BENCHMARKS.md. RUST_BACKTRACE is unset: it
# makes some error paths several times slower and is not how kata runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
unset RUST_BACKTRACE
cargo bench --bench engine --bench lifecycle -- "$@"
cargo bench --bench throughput
