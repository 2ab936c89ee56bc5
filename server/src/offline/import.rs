//! `caskade import`: reads the JSON Lines of `caskade export` back, into a stopped
//! store (batched writes through the engine, keeping `created_at` and `expires_at`) or
//! through a running server's bulk route (`--url`).
//!
//! Every line is checked with the server's write rules before anything of its batch
//! is written. The import stops at the first bad line: the batches before it are in
//! the store, nothing of the batch holding it is, and the exit code is 1. `--dry-run`
//! checks the whole input and writes nothing.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use caskade_engine::{Batch, Engine, WriteOptions};
use clap::Args;

use super::line::{Record, decode_line, describe};
use super::remote::BulkClient;
use super::{Failure, OpenMode, close_store, exit_code, now_ms, open_store, progress};
use crate::config::LimitArgs;
use crate::kv::envelope_body_limit;
use crate::meta::{CREATED_BY_THIS_RECORD, RecordMeta};
use crate::state::Limits;

/// Writes per engine batch in an offline import.
const BATCH_OPS_MAX: usize = 1000;
/// Record bytes per engine batch (one larger record goes alone).
const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Flags of `caskade import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Folder of the store to import into; created if missing. The store must be
    /// stopped (the import takes its lock). Give this or --url.
    #[arg(long, value_name = "DIR", required_unless_present_any = ["url", "dry_run"],
          conflicts_with = "url")]
    pub data_dir: Option<PathBuf>,

    /// Import through the running server at URL (`http://HOST:PORT`), in atomic
    /// `POST /v1/bulk` requests of at most 1000 operations.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// Bearer token for --url (a `write` or `admin` token of the server).
    #[arg(long, env = "CASKADE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Read from FILE instead of stdin.
    #[arg(long, short = 'i', value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Check every line and write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Size limits a line is checked against (as `caskade serve`'s).
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Runs `caskade import`.
pub fn run(args: ImportArgs) -> ExitCode {
    super::init_logging();
    exit_code(import(&args))
}

/// What an import did.
#[derive(Debug, Default)]
struct Tally {
    /// Lines that held a record (blank lines are skipped).
    records: u64,
    /// Records left out because their key had expired.
    expired: u64,
}

fn import(args: &ImportArgs) -> Result<(), Failure> {
    let (input, total_bytes) = open_input(args)?;
    let mut lines = Lines::new(
        input,
        envelope_body_limit(&args.limits.limits()) + LINE_OVERHEAD_BYTES,
    );
    let mut target = if args.dry_run {
        Target::DryRun
    } else if let Some(url) = &args.url {
        Target::Remote(BulkClient::new(url, args.token.clone())?)
    } else if let Some(dir) = &args.data_dir {
        Target::Store(StoreWriter::new(open_store(
            dir,
            OpenMode::CreateIfMissing,
            None,
        )?))
    } else {
        Target::DryRun
    };
    let read = read_all(&mut lines, &mut target, &args.limits.limits(), total_bytes);
    let (imported, raised) = target.finish(read.is_ok())?;
    let tally = read?;
    let mut summary = if args.dry_run {
        format!(
            "checked {} records: every line is valid, nothing was written",
            tally.records
        )
    } else {
        format!("imported {imported} keys")
    };
    if tally.expired > 0 {
        summary.push_str(&format!("; {} expired keys left out", tally.expired));
    }
    if raised > 0 {
        summary.push_str(&format!(
            "; {raised} keys had less than the shortest ttl (60 s) left and got 60 s"
        ));
    }
    eprintln!("caskade: {summary}");
    Ok(())
}

/// Room a line needs beyond a PUT envelope: entity, key, encoding, timestamps.
const LINE_OVERHEAD_BYTES: usize = 4 * 1024;

fn open_input(args: &ImportArgs) -> Result<(Box<dyn Read>, Option<u64>), Failure> {
    let Some(path) = &args.input else {
        return Ok((Box::new(std::io::stdin().lock()), None));
    };
    let file = File::open(path)
        .map_err(|e| Failure::Usage(format!("cannot open {}: {e}", path.display())))?;
    let len = file.metadata().ok().map(|m| m.len());
    Ok((Box::new(file), len))
}

/// Reads, checks and hands on every line; stops at the first bad one.
fn read_all(
    lines: &mut Lines,
    target: &mut Target,
    limits: &Limits,
    total_bytes: Option<u64>,
) -> Result<Tally, Failure> {
    let bar = progress(total_bytes, "bytes");
    let mut tally = Tally::default();
    loop {
        let number = match lines.next_line() {
            Ok(Some(number)) => number,
            Ok(None) => break,
            Err(f) => return Err(target.annotate(f, lines.number)),
        };
        bar.set_position(lines.bytes_read);
        let text = lines.current();
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let now = now_ms();
        let record = decode_line(text, limits, now).map_err(|problems| {
            let f = Failure::Failed(format!("line {number}: {}", describe(&problems)));
            target.annotate(f, number)
        })?;
        tally.records += 1;
        if record.is_expired(now) {
            tally.expired += 1;
            continue;
        }
        target
            .push(number, &record, now)
            .map_err(|f| target.annotate(f, number))?;
    }
    bar.finish_and_clear();
    Ok(tally)
}

/// Where checked records go.
enum Target {
    /// Nowhere (`--dry-run`).
    DryRun,
    /// A stopped store, through the engine.
    Store(StoreWriter),
    /// A running server's bulk route.
    Remote(BulkClient),
}

impl Target {
    fn push(&mut self, line: u64, record: &Record, now_ms: u64) -> Result<(), Failure> {
        match self {
            Target::DryRun => Ok(()),
            Target::Store(w) => w.push(line, record),
            Target::Remote(c) => c.push(line, record, now_ms),
        }
    }

    fn flush(&mut self) -> Result<(), Failure> {
        match self {
            Target::DryRun => Ok(()),
            Target::Store(w) => w.flush(),
            Target::Remote(c) => c.flush(),
        }
    }

    /// The first line of the records not yet written.
    fn pending_from(&self) -> Option<u64> {
        match self {
            Target::DryRun => None,
            Target::Store(w) => w.lines.first().copied(),
            Target::Remote(c) => c.pending_from(),
        }
    }

    fn imported(&self) -> u64 {
        match self {
            Target::DryRun => 0,
            Target::Store(w) => w.imported,
            Target::Remote(c) => c.imported,
        }
    }

    fn ttl_raised(&self) -> u64 {
        match self {
            Target::Remote(c) => c.ttl_raised,
            _ => 0,
        }
    }

    /// Adds to a failure while importing what is and is not written, the import
    /// having stopped at line `at_line`.
    fn annotate(&self, failure: Failure, at_line: u64) -> Failure {
        let Failure::Failed(message) = failure else {
            return failure;
        };
        let from = self.pending_from().unwrap_or(at_line);
        let note = match (self, self.imported()) {
            (Target::DryRun, _) => "nothing was written (--dry-run)".to_owned(),
            (_, 0) => "nothing was written".to_owned(),
            (_, n) => format!(
                "the {n} keys of the lines before line {from} were imported, nothing from line {from} on"
            ),
        };
        Failure::Failed(format!("{message}\n  import stopped: {note}"))
    }

    /// Writes what is pending when the input was read whole (`complete`), drops it
    /// otherwise, and closes the store. Returns keys imported and ttls raised.
    fn finish(mut self, complete: bool) -> Result<(u64, u64), Failure> {
        let flushed = if complete { self.flush() } else { Ok(()) };
        let flushed = flushed.map_err(|f| self.annotate(f, 0));
        let counts = (self.imported(), self.ttl_raised());
        let closed = match self {
            Target::Store(w) => close_store(w.engine),
            Target::DryRun | Target::Remote(_) => Ok(()),
        };
        flushed?;
        closed?;
        Ok(counts)
    }
}

/// Batches records into engine writes.
struct StoreWriter {
    engine: Engine,
    batch: Batch,
    batch_bytes: usize,
    /// Line numbers of the records in `batch`.
    lines: Vec<u64>,
    imported: u64,
}

impl StoreWriter {
    fn new(engine: Engine) -> StoreWriter {
        StoreWriter {
            engine,
            batch: Batch::new(),
            batch_bytes: 0,
            lines: Vec::new(),
            imported: 0,
        }
    }

    /// Adds a record; writes the batch first when the record would overflow it.
    fn push(&mut self, line: u64, record: &Record) -> Result<(), Failure> {
        let meta = RecordMeta {
            kind: record.spec.kind,
            content_type: &record.spec.content_type,
            metadata: record.spec.metadata.as_deref(),
            created_at_ms: record.created_at_ms.unwrap_or(CREATED_BY_THIS_RECORD),
        }
        .encode()
        .map_err(|e| Failure::Failed(format!("line {line}: {e}")))?;
        let key = record.entity.engine_key(&record.key);
        let bytes = key.len() + meta.len() + record.spec.value.len();
        if !self.lines.is_empty()
            && (self.lines.len() >= BATCH_OPS_MAX || self.batch_bytes + bytes > BATCH_BYTES_MAX)
        {
            self.flush()?;
        }
        self.batch.put(
            key,
            record.spec.value.clone(),
            WriteOptions {
                expires_at_ms: record.expires_at_ms,
                meta: Bytes::from(meta),
            },
        );
        self.batch_bytes += bytes;
        self.lines.push(line);
        Ok(())
    }

    /// Writes the batch atomically and durably.
    fn flush(&mut self) -> Result<(), Failure> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.engine.apply(batch).map_err(|e| {
            Failure::Failed(format!(
                "writing the lines {} to {} failed: {e}",
                self.lines.first().copied().unwrap_or_default(),
                self.lines.last().copied().unwrap_or_default()
            ))
        })?;
        self.imported += self.lines.len() as u64;
        self.lines.clear();
        self.batch_bytes = 0;
        Ok(())
    }
}

/// Lines of the input, each at most `line_bytes_max` bytes (so one endless line
/// cannot take all memory).
struct Lines {
    reader: BufReader<Box<dyn Read>>,
    buf: Vec<u8>,
    number: u64,
    bytes_read: u64,
    line_bytes_max: usize,
}

impl Lines {
    fn new(input: Box<dyn Read>, line_bytes_max: usize) -> Lines {
        Lines {
            reader: BufReader::with_capacity(1 << 20, input),
            buf: Vec::new(),
            number: 0,
            bytes_read: 0,
            line_bytes_max,
        }
    }

    /// Reads the next line into the buffer; returns its number, `None` at the end.
    fn next_line(&mut self) -> Result<Option<u64>, Failure> {
        self.buf.clear();
        let limit = self.line_bytes_max as u64 + 2;
        let n = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| Failure::Failed(format!("reading the input failed: {e}")))?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        self.bytes_read += n as u64;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        if self.buf.len() > self.line_bytes_max {
            return Err(Failure::Failed(format!(
                "line {}: longer than {} bytes, the most a value within --max-value-bytes needs",
                self.number, self.line_bytes_max
            )));
        }
        Ok(Some(self.number))
    }

    fn current(&self) -> &[u8] {
        &self.buf
    }
}
