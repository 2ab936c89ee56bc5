//! `caskade export`: every live key of a stopped store as JSON Lines, one object per
//! key with the members GET shows (`entity`, `key`, `value`, `encoding`,
//! `content_type`, `metadata`, `created_at`) and `expires_at`, ordered by entity, then
//! key (ascending bytes), so two exports of the same data are byte-identical.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use caskade_engine::Engine;
use clap::Args;

use super::{Failure, OpenMode, close_store, exit_code, now_ms, open_store, progress};
use crate::kv::write_entry_head;
use crate::meta::RecordMeta;
use crate::names::{Entity, is_key_text};
use crate::reply::JsonWriter;

/// Keys read from the index per list call: bounds the memory of one page.
const PAGE_KEYS_MAX: usize = 1000;

/// Entities in export order (by name).
const ENTITIES: [Entity; 2] = [Entity::Event, Entity::User];

/// Flags of `caskade export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Folder of the store to export. The store must be stopped: the export takes its
    /// lock, and refuses (exit 2) while a server holds it.
    #[arg(long, env = "CASKADE_DATA_DIR", default_value = "./caskade-data")]
    pub data_dir: PathBuf,

    /// Export only this entity: `user` or `event`.
    #[arg(long, value_parser = parse_entity)]
    pub entity: Option<Entity>,

    /// Export only keys starting with this prefix (in every exported entity).
    #[arg(long, value_parser = parse_prefix)]
    pub prefix: Option<String>,

    /// Write to FILE (through a temporary file renamed into place when complete, so
    /// FILE is never half-written) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Parses an exact entity name.
pub fn parse_entity(text: &str) -> Result<Entity, String> {
    Entity::parse(text).ok_or_else(|| format!("`{text}` is not an entity; expected user or event"))
}

/// A prefix follows the key rule's characters (it may not be empty here: leave the
/// flag out instead).
fn parse_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() || !is_key_text(text) {
        return Err(format!(
            "`{text}` is not a key prefix; a prefix is 1 or more of A-Z, a-z, 0-9, '_' and '-'"
        ));
    }
    Ok(text.to_owned())
}

/// Runs `caskade export`.
pub fn run(args: ExportArgs) -> ExitCode {
    super::init_logging();
    exit_code(export(&args))
}

fn export(args: &ExportArgs) -> Result<(), Failure> {
    let mut sink = Sink::open(args.output.as_deref())?;
    let engine = open_store(&args.data_dir, OpenMode::Existing, Some(now_ms()))?;
    let written = write_lines(&engine, args, &mut sink);
    let closed = close_store(engine);
    let counts = written?;
    closed?;
    let target = sink.finish()?;
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let per_entity: Vec<String> = counts
        .iter()
        .map(|(entity, n)| format!("{} {n}", entity.as_str()))
        .collect();
    eprintln!(
        "caskade: exported {total} keys ({}) to {target}",
        per_entity.join(", ")
    );
    Ok(())
}

/// The entities this export covers.
fn entities(args: &ExportArgs) -> Vec<Entity> {
    ENTITIES
        .into_iter()
        .filter(|e| args.entity.is_none_or(|only| only == *e))
        .collect()
}

/// Writes one line per live key; returns the count per entity.
fn write_lines(
    engine: &Engine,
    args: &ExportArgs,
    sink: &mut Sink,
) -> Result<Vec<(Entity, u64)>, Failure> {
    let key_prefix = args.prefix.as_deref().unwrap_or_default();
    let prefixes: Vec<(Entity, Vec<u8>)> = entities(args)
        .into_iter()
        .map(|e| (e, e.engine_key(key_prefix)))
        .collect();
    let expected = prefixes.iter().map(|(_, p)| engine.count_prefix(p)).sum();
    let bar = progress(Some(expected), "keys");
    let mut counts = Vec::with_capacity(prefixes.len());
    for (entity, prefix) in &prefixes {
        let n = write_entity(engine, *entity, prefix, sink, &bar)?;
        counts.push((*entity, n));
    }
    bar.finish_and_clear();
    Ok(counts)
}

/// Writes the live keys under one engine prefix, page by page.
fn write_entity(
    engine: &Engine,
    entity: Entity,
    prefix: &[u8],
    sink: &mut Sink,
    bar: &indicatif::ProgressBar,
) -> Result<u64, Failure> {
    let failed = |e: caskade_engine::Error| Failure::Failed(format!("reading the store: {e}"));
    let name_len = entity.as_str().len() + 1;
    let mut after: Option<Bytes> = None;
    let mut written = 0;
    loop {
        let page = engine
            .list(prefix, after.as_deref(), PAGE_KEYS_MAX)
            .map_err(failed)?;
        let Some(last) = page.last() else {
            return Ok(written);
        };
        after = Some(last.key.clone());
        for item in &page {
            bar.inc(1);
            // Expiry is decided by the frozen clock, so what the list showed is live.
            let Some(entry) = engine.get(&item.key).map_err(failed)? else {
                continue;
            };
            let key = item
                .key
                .get(name_len..)
                .and_then(|k| std::str::from_utf8(k).ok())
                .filter(|k| crate::names::is_valid_key(k))
                .ok_or_else(|| {
                    Failure::Failed(format!(
                        "the store holds the key {:?}, which is not a caskade key; \
                         is this the folder of a caskade server?",
                        String::from_utf8_lossy(&item.key)
                    ))
                })?;
            let line = export_line(entity, key, &entry)?;
            sink.write(&line)?;
            written += 1;
        }
    }
}

/// One line: GET's members, `expires_at`, and the newline.
fn export_line(
    entity: Entity,
    key: &str,
    entry: &caskade_engine::Entry,
) -> Result<Vec<u8>, Failure> {
    let damaged = |e: &dyn std::fmt::Display| {
        Failure::Failed(format!(
            "the record of {}/{key} does not decode: {e}",
            entity.as_str()
        ))
    };
    let meta = RecordMeta::decode(&entry.meta).map_err(|e| damaged(&e))?;
    let mut w = JsonWriter::object(entry.value.len() * 4 / 3 + 256);
    write_entry_head(&mut w, entity, key, entry, &meta).map_err(|e| damaged(&e))?;
    w.key("expires_at").time(entry.expires_at_ms);
    let mut line = w.finish();
    line.push(b'\n');
    Ok(line)
}

/// Where the lines go: stdout, or a temporary file beside the target.
enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    File {
        out: BufWriter<tempfile::NamedTempFile>,
        target: PathBuf,
    },
}

impl Sink {
    /// Opens the sink before the store, so a bad `--output` fails first.
    fn open(output: Option<&Path>) -> Result<Sink, Failure> {
        let Some(target) = output else {
            return Ok(Sink::Stdout(BufWriter::new(std::io::stdout())));
        };
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let file = tempfile::Builder::new()
            .prefix(".caskade-export-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| {
                Failure::Usage(format!(
                    "cannot create a file in {} for the export: {e}",
                    dir.display()
                ))
            })?;
        Ok(Sink::File {
            out: BufWriter::new(file),
            target: target.to_path_buf(),
        })
    }

    fn write(&mut self, line: &[u8]) -> Result<(), Failure> {
        let result = match self {
            Sink::Stdout(out) => out.write_all(line),
            Sink::File { out, .. } => out.write_all(line),
        };
        result.map_err(|e| Failure::Failed(format!("writing the export failed: {e}")))
    }

    /// Flushes; a file is synced and renamed into place. Returns where it went.
    fn finish(self) -> Result<String, Failure> {
        let failed = |e: std::io::Error| Failure::Failed(format!("writing the export failed: {e}"));
        match self {
            Sink::Stdout(mut out) => {
                out.flush().map_err(failed)?;
                Ok("stdout".to_owned())
            }
            Sink::File { out, target } => {
                let file = out.into_inner().map_err(|e| failed(e.into_error()))?;
                file.as_file().sync_all().map_err(failed)?;
                file.persist(&target).map_err(|e| failed(e.error))?;
                sync_parent(&target).map_err(failed)?;
                Ok(target.display().to_string())
            }
        }
    }
}

/// Syncs the folder holding `path`, so the rename survives a crash.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}
