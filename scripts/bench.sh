#!/usr/bin/env bash
# Run the benchmarks recorded in BENCHMARKS.md. RUST_BACKTRACE is unset: it
# makes some error paths several times slower and is not how kata runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
unset RUST_BACKTRACE
cargo bench --bench engine --bench lifecycle -- "$@"
cargo bench --bench throughput
# Plugins in every language (channel templates built from source); the
# toolchains come from setup.sh. KATA_BENCH_LANGS=rust,js runs a subset,
# KATA_BENCH_RUNS the best-of count for `plugin add` and compiles (3).
cargo bench --bench languages
