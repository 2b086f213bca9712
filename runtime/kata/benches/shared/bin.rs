//! The `kata` binary a bench drives (shared by the lifecycle and throughput
//! benches).

use std::path::PathBuf;

/// The kata under test: this build's, or `KATA_BENCH_BIN` (scripts/bench.sh
/// gives the shipped `--profile dist` binary, to measure its RSS and its
/// lifecycle too).
pub fn kata() -> PathBuf {
    let Some(bin) = std::env::var_os("KATA_BENCH_BIN").map(PathBuf::from) else { return PathBuf::from(env!("CARGO_BIN_EXE_kata")) };
    // cargo runs a bench in its package's directory, not where it was typed.
    assert!(
        bin.is_file(),
        "KATA_BENCH_BIN={} is not a file (from {}); give an absolute path",
        bin.display(),
        std::env::current_dir().unwrap_or_default().display()
    );
    bin
}
