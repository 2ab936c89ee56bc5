//! The `caskade` binary: parse the command line, then hand over to the server library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Bad flags print clap's message and exit with code 2.
    let cli = caskade_server::config::Cli::parse();
    caskade_server::serve::run(cli)
}
