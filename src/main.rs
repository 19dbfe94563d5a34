//! The `hivehost` binary: parses the command line, installs logging, and runs the chosen command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hivehost::cli::Cli::parse();
    hivehost::telemetry::init();
    match hivehost::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
