//! `caskade stats`: what a stopped store holds, read from its folder: live keys per
//! entity, segments, live, dead and disk bytes, the index's memory estimate, and the
//! oldest and newest segment file. A table for people, JSON (`--json`) for scripts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use caskade_engine::Engine;
use clap::Args;
use indicatif::HumanBytes;
use serde::Serialize;

use super::{Failure, OpenMode, close_store, exit_code, is_segment_file_name, open_store};
use crate::names::Entity;
use crate::timefmt::rfc3339_seconds;

/// Flags of `caskade stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// Folder of the store. The store must be stopped (for a running server, use
    /// `GET /v1/admin/stats`).
    #[arg(long, env = "CASKADE_DATA_DIR", default_value = "./caskade-data")]
    pub data_dir: PathBuf,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Live keys per entity.
#[derive(Debug, Serialize)]
struct KeysPerEntity {
    user: u64,
    event: u64,
}

/// One segment file: its name and when it was last written.
#[derive(Debug, Serialize)]
struct SegmentFile {
    file: String,
    modified_at: Option<String>,
}

/// What `caskade stats` reports.
#[derive(Debug, Serialize)]
struct StoreStats {
    data_dir: String,
    keys: KeysPerEntity,
    keys_total: u64,
    segments: u64,
    disk_bytes: u64,
    live_bytes: u64,
    dead_bytes: u64,
    index_bytes: u64,
    oldest_segment: Option<SegmentFile>,
    newest_segment: Option<SegmentFile>,
}

/// Runs `caskade stats`.
pub fn run(args: StatsArgs) -> ExitCode {
    super::init_logging();
    exit_code(stats(&args))
}

fn stats(args: &StatsArgs) -> Result<(), Failure> {
    let engine = open_store(&args.data_dir, OpenMode::Existing, None)?;
    let gathered = gather(&engine, &args.data_dir);
    let closed = close_store(engine);
    let stats = gathered?;
    closed?;
    if args.json {
        let text = serde_json::to_string_pretty(&stats)
            .map_err(|e| Failure::Failed(format!("cannot write the JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", table(&stats));
    }
    Ok(())
}

fn gather(engine: &Engine, dir: &Path) -> Result<StoreStats, Failure> {
    let failed = |e: caskade_engine::Error| Failure::Failed(format!("reading the store: {e}"));
    // Open leaves keys expired by then out of the index; sweep those that expired
    // since, so keys and live bytes count only what a read can see.
    while engine.sweep_expired().map_err(failed)? > 0 {}
    let count = |e: Entity| engine.count_prefix(&e.engine_key(""));
    let keys = KeysPerEntity {
        user: count(Entity::User),
        event: count(Entity::Event),
    };
    let s = engine.stats();
    let (oldest, newest) = segment_ends(dir)?;
    Ok(StoreStats {
        data_dir: dir.display().to_string(),
        keys_total: keys.user + keys.event,
        keys,
        segments: s.segments,
        disk_bytes: s.disk_bytes,
        live_bytes: s.live_bytes,
        dead_bytes: s.dead_bytes,
        index_bytes: s.index_bytes,
        oldest_segment: oldest,
        newest_segment: newest,
    })
}

/// The segment files with the lowest and highest number (numbers grow with creation).
fn segment_ends(dir: &Path) -> Result<(Option<SegmentFile>, Option<SegmentFile>), Failure> {
    let failed = |e: std::io::Error| {
        Failure::Failed(format!(
            "cannot list the data folder {}: {e}",
            dir.display()
        ))
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let name = entry.map_err(failed)?.file_name();
        if let Some(name) = name.to_str().filter(|n| is_segment_file_name(n)) {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable();
    let describe = |name: &String| SegmentFile {
        modified_at: std::fs::metadata(dir.join(name))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .map(rfc3339_seconds),
        file: name.clone(),
    };
    Ok((names.first().map(describe), names.last().map(describe)))
}

/// The readable table.
fn table(s: &StoreStats) -> String {
    let bytes = |n: u64| format!("{:>12}  ({n} bytes)", HumanBytes(n).to_string());
    let share = if s.disk_bytes == 0 {
        0.0
    } else {
        s.dead_bytes as f64 * 100.0 / s.disk_bytes as f64
    };
    let segment = |f: &Option<SegmentFile>| match f {
        Some(f) => format!(
            "{}  {}",
            f.file,
            f.modified_at.as_deref().unwrap_or("(time unknown)")
        ),
        None => "-".to_owned(),
    };
    let rows = [
        ("store", s.data_dir.clone()),
        ("keys", s.keys_total.to_string()),
        ("  event", s.keys.event.to_string()),
        ("  user", s.keys.user.to_string()),
        ("segments", s.segments.to_string()),
        ("disk", bytes(s.disk_bytes)),
        ("live", bytes(s.live_bytes)),
        (
            "dead",
            format!("{}  {share:.1}% of disk", bytes(s.dead_bytes)),
        ),
        ("index (estimate)", bytes(s.index_bytes)),
        ("oldest segment", segment(&s.oldest_segment)),
        ("newest segment", segment(&s.newest_segment)),
    ];
    let mut out = String::new();
    for (name, value) in rows {
        out.push_str(&format!("{name:<20} {value}\n"));
    }
    out
}
