#!/usr/bin/env bash
# Run the benchmarks recorded in BENCHMARKS.md. RUST_BACKTRACE is unset: it
# makes some error paths several times slower and is not how kata runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
unset RUST_BACKTRACE
cargo bench --bench engine --bench lifecycle -- "$@"
cargo bench --bench throughput
# Rich replies: the ack reaction and typing against none, drafts against one
# final message (BENCHMARKS.md, "Rich replies"); KATA_BENCH_ROUNDS (3).
cargo bench --bench replies
# The shipped binary (`--profile dist`: opt-level "s", fat LTO, one codegen unit, stripped):
# its size, idle RSS and lifecycle figures (BENCHMARKS.md, "Memory and size").
cargo build --quiet --profile dist --bin kata
echo "dist binary: $(stat -c %s target/dist/kata) bytes"
KATA_BENCH_BIN=$PWD/target/dist/kata KATA_BENCH_ONLY=rss cargo bench --bench throughput
KATA_BENCH_BIN=$PWD/target/dist/kata cargo bench --bench lifecycle
# Plugins in every language (channel templates built from source); the
# toolchains come from setup.sh. KATA_BENCH_LANGS=rust,js runs a subset,
# KATA_BENCH_RUNS the best-of count for `plugin add` and compiles (3).
cargo bench --bench languages
# kata beside its peers (Extism, the fresh-instance-per-call design, a process
# per message, native) and the floor under kata's instantiate and call: its own
# cargo workspace (Extism brings its own wasmtime; CI never builds it), guests
# and binaries in target/peers. KATA_PEERS_ONLY=noop,echo,http,floor picks rows,
# KATA_PEERS_ROUNDS the interleaved rounds (15).
PEERS=runtime/kata/benches/peers
CARGO_TARGET_DIR=target/peers/wasm cargo build --quiet --release --target wasm32-wasip1 \
  --manifest-path "$PEERS/guests/extism/Cargo.toml"
CARGO_TARGET_DIR=target/peers/wasm target/debug/kata plugin build "$PEERS/guests/kata-tools" \
  --out target/peers/guests/kata-tools.wasm >/dev/null
(cd "$PEERS" && cargo build --quiet --release --bins && ../../../../target/peers/release/peers)
