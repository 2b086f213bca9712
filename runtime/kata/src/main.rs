//! The `kata` binary: parse the command line, run it, and report any error as
//! one paragraph with a non-zero exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kata::cli::Cli::parse();
    match kata::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line; never `{:?}`,
            // which would add a backtrace under RUST_BACKTRACE=1.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
