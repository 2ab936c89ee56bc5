//! The `caskade` binary: parse the command line, then hand each subcommand to the
//! library that implements it.

use std::process::ExitCode;

use caskade_server::config::{Cli, Command};
use clap::Parser;

fn main() -> ExitCode {
    // Bad flags print clap's message and exit with code 2.
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => caskade_server::serve::run(args),
        Command::Export(args) => caskade_server::offline::export::run(args),
        Command::Import(args) => caskade_server::offline::import::run(args),
        Command::Stats(args) => caskade_server::offline::stats::run(args),
        Command::Verify(args) => caskade_server::offline::verify::verify(args),
        Command::Repair(args) => caskade_server::offline::verify::repair(args),
    }
}
