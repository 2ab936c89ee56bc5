//! The `caskade` binary: parse the command line, then hand each subcommand to the
//! library that implements it.

use std::process::ExitCode;

use caskade_server::config::{Cli, Command};
use clap::Parser;

/// mimalloc instead of glibc's malloc: a request allocates many small, short-lived
/// objects (a bulk request tens of thousands) on one thread and often frees them on
/// another; glibc spent ~30 % of a bulk request's CPU in `malloc`/`free` and their
/// consolidation (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Bad flags print clap's message and exit with code 2.
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => caskade_server::serve::run(args),
    }
}
