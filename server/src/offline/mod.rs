//! Commands that work on a stopped store's data folder: `caskade export`, `caskade
//! import`, `caskade stats`, `caskade verify` and `caskade repair`. They open the folder with the engine itself (taking its
//! lock, so a running server is never read or written behind its back) and reuse the
//! server's encoders and checks, so a line of an export is exactly what GET shows and
//! an import accepts exactly what a write would.

pub mod export;
pub mod import;
pub mod line;
pub mod remote;
pub mod stats;
pub mod verify;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use caskade_engine::{Clock, CompactionOptions, Engine, Error as EngineError, Options};
use indicatif::{ProgressBar, ProgressStyle};

pub use export::ExportArgs;
pub use import::ImportArgs;
pub use stats::StatsArgs;

/// Exit code of a usage problem the command refuses before doing anything: a locked
/// (served) store, a folder that holds no store, a bad flag value. Same as clap's.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a failure while working: a bad input line, an I/O error, a refusal by
/// the server.
pub const EXIT_FAILED: u8 = 1;

/// Sweeps of an offline open: none in the background (the commands sweep themselves
/// when they need to), so the store changes only by what the command writes.
const OFFLINE_SWEEP_INTERVAL: Duration = Duration::from_secs(86_400);

/// Why an offline command stopped.
#[derive(Debug)]
pub enum Failure {
    /// Refused before any work: exit 2.
    Usage(String),
    /// Failed while working: exit 1.
    Failed(String),
}

impl Failure {
    /// Prints the message and gives the exit code.
    pub fn report(self) -> ExitCode {
        let (code, message) = match self {
            Failure::Usage(m) => (EXIT_USAGE, m),
            Failure::Failed(m) => (EXIT_FAILED, m),
        };
        eprintln!("caskade: error: {message}");
        ExitCode::from(code)
    }
}

/// Sends the engine's warnings (a torn tail cut at open) to stderr as text lines;
/// `RUST_LOG` overrides the level. Quieter than `serve`, whose default is `info`: an
/// offline command's output is its summary.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    drop(installed);
}

/// Runs a command's body and turns its result into the process's exit code.
pub fn exit_code(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// A clock that stands still: every expiry decision of one export is taken at the
/// same instant, so a key cannot vanish between listing it and reading it.
#[derive(Debug)]
struct FrozenClock(u64);

impl Clock for FrozenClock {
    fn now_ms(&self) -> u64 {
        self.0
    }
}

/// How an offline command wants the folder opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// The folder must already hold a store (export, stats): a typo in `--data-dir`
    /// must never create an empty store somewhere and report it as empty.
    Existing,
    /// The folder may be missing or empty (import): it is created.
    CreateIfMissing,
}

/// Opens the store in `dir` for an offline command: no background compaction or
/// sweeps, and `frozen_at_ms` (when given) as the clock.
pub fn open_store(
    dir: &Path,
    mode: OpenMode,
    frozen_at_ms: Option<u64>,
) -> Result<Engine, Failure> {
    check_folder(dir, mode)?;
    let mut options = Options {
        compaction: CompactionOptions {
            enabled: false,
            ..CompactionOptions::default()
        },
        sweep_interval: OFFLINE_SWEEP_INTERVAL,
        ..Options::default()
    };
    if let Some(ms) = frozen_at_ms {
        options.clock = Arc::new(FrozenClock(ms));
    }
    Engine::open(dir, options).map_err(|e| match e {
        EngineError::Locked { .. } => Failure::Usage(format!(
            "the store in {} is in use by another process (a running `caskade serve`?); \
             stop it first, or import through the server with --url",
            dir.display()
        )),
        other => Failure::Failed(format!(
            "cannot open the store in {}: {other}",
            dir.display()
        )),
    })
}

/// True for a segment file name: ten digits and `.seg`.
pub fn is_segment_file_name(name: &str) -> bool {
    name.strip_suffix(".seg")
        .is_some_and(|stem| stem.len() == 10 && stem.bytes().all(|b| b.is_ascii_digit()))
}

/// Refuses a folder that is not a store: missing (for export and stats), or holding
/// files but no segment (for all three, so an import never scatters segment files
/// into an unrelated folder).
fn check_folder(dir: &Path, mode: OpenMode) -> Result<(), Failure> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match mode {
                OpenMode::CreateIfMissing => Ok(()),
                OpenMode::Existing => Err(Failure::Usage(format!(
                    "there is no store at {}: the folder does not exist",
                    dir.display()
                ))),
            };
        }
        Err(e) => {
            return Err(Failure::Usage(format!(
                "cannot read the data folder {}: {e}",
                dir.display()
            )));
        }
    };
    let mut empty = true;
    for entry in entries {
        let entry = entry.map_err(|e| {
            Failure::Usage(format!(
                "cannot list the data folder {}: {e}",
                dir.display()
            ))
        })?;
        if entry.file_name().to_str().is_some_and(is_segment_file_name) {
            return Ok(());
        }
        empty = false;
    }
    match (mode, empty) {
        (OpenMode::CreateIfMissing, true) => Ok(()),
        (OpenMode::Existing, true) => Err(Failure::Usage(format!(
            "{} holds no caskade store (no segment files)",
            dir.display()
        ))),
        (OpenMode::Existing, false) => Err(Failure::Usage(format!(
            "{} holds no caskade store (no segment files); give the --data-dir of a store",
            dir.display()
        ))),
        (OpenMode::CreateIfMissing, false) => Err(Failure::Usage(format!(
            "{} is not empty and holds no caskade store (no segment files); \
             import into the folder of a store, or a new or empty one",
            dir.display()
        ))),
    }
}

/// Closes the engine, which syncs every write and releases the lock.
pub fn close_store(engine: Engine) -> Result<(), Failure> {
    engine
        .close()
        .map_err(|e| Failure::Failed(format!("closing the store failed: {e}")))
}

/// A progress bar on stderr, or a hidden one when stderr is not a terminal (a pipe, a
/// log file, a test), so scripted runs get only their one summary line.
/// `total` is the expected count of `unit`s, when known.
pub fn progress(total: Option<u64>, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::new_spinner(),
    };
    let template = match (total, unit) {
        (Some(_), "bytes") => {
            "{spinner} [{elapsed_precise}] [{wide_bar}] {binary_bytes}/{binary_total_bytes} ({eta}) {msg}"
        }
        (Some(_), _) => "{spinner} [{elapsed_precise}] [{wide_bar}] {human_pos}/{human_len} {msg}",
        (None, "bytes") => "{spinner} [{elapsed_precise}] {binary_bytes} {msg}",
        (None, _) => "{spinner} [{elapsed_precise}] {human_pos} {msg}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> u64 {
    caskade_engine::SystemClock.now_ms()
}
