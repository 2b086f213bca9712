//! The `kata-dev` binary: kata's plugin authoring commands (`kata plugin
//! new|build|test|componentize|bindings|toolchain`), which `kata` hands to it.
//! It reads the same command line as `kata` (see `kata::dev`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kata::cli::Cli::parse();
    match kata::dev::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One paragraph, as `kata` prints it (`{:#}`, never `{:?}`).
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
