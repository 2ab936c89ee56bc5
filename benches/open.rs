//! Open time with and without hint files: N keys (16-byte keys, 1 KiB values, default
//! 1,000,000; `CASKADE_BENCH_KEYS` overrides), compacted so every segment has a hint,
//! then opened in rounds (three by default): each round opens it with the hints, then
//! with them moved aside, once with the files in the page cache (warm) and once with
//! the store's files evicted from it before each open (cold: a restart after a reboot
//! or under memory pressure). Alternating keeps both paths of a round under the same
//! load on a shared machine. Prints the median time of each kind, the median of the
//! per-round ratios, and every round.
//!
//! `cargo bench --bench open`
//!
//! Knobs: `CASKADE_BENCH_KEYS` (keys), `CASKADE_BENCH_OPENS` (rounds, or opens per
//! median with `CASKADE_BENCH_ONLY`; default 3), `CASKADE_BENCH_STORE` (a folder to fill once and reuse on later runs,
//! instead of a fresh temp dir; the hints are put back after each run),
//! `CASKADE_BENCH_ONLY=hints|scan` (warm opens of one path only: for `perf record`).

use std::path::Path;
use std::time::{Duration, Instant};

use caskade_engine::{Batch, Engine, Options, SyncPolicy, WriteOptions};

const VALUE_BYTES: usize = 1024;
const BATCH_OPS: usize = 1000;
/// `stats().index_bytes` after the last open.
static INDEX_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn options() -> Options {
    Options {
        sync: SyncPolicy::Never,
        // No background work while measuring: the maintenance thread would write the
        // missing hints back during the "without hints" runs.
        sweep_interval: Duration::from_secs(3600),
        compaction: caskade_engine::CompactionOptions {
            enabled: false,
            bytes_per_sec: None,
            ..Default::default()
        },
        ..Options::default()
    }
}

fn fill(dir: &Path, keys: usize) -> Result<(), caskade_engine::Error> {
    let engine = Engine::open(dir, options())?;
    let value = vec![0xabu8; VALUE_BYTES];
    for start in (0..keys).step_by(BATCH_OPS) {
        let mut batch = Batch::new();
        for i in start..(start + BATCH_OPS).min(keys) {
            batch.put(
                format!("key{i:013}").into_bytes(),
                value.clone(),
                WriteOptions::default(),
            );
        }
        engine.apply(batch)?;
    }
    engine.compact()?;
    engine.close()
}

/// Asks the kernel to drop the store's files from the page cache (they are clean:
/// written, synced and closed), so the next open reads them from the disk.
fn evict(dir: &Path) -> std::io::Result<()> {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    for entry in std::fs::read_dir(dir)? {
        let file = std::fs::File::open(entry?.path())?;
        posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
            .map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Opens per median: `CASKADE_BENCH_OPENS`, default 3.
fn opens() -> usize {
    std::env::var("CASKADE_BENCH_OPENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3)
}

/// One open of the store (after evicting it from the page cache when `cold`).
fn open_once(dir: &Path, keys: usize, cold: bool) -> Result<Duration, Box<dyn std::error::Error>> {
    if cold {
        evict(dir)?;
    }
    let started = Instant::now();
    let engine = Engine::open(dir, options())?;
    let took = started.elapsed();
    let stats = engine.stats();
    assert_eq!(stats.keys as usize, keys);
    INDEX_BYTES.store(stats.index_bytes, std::sync::atomic::Ordering::Relaxed);
    engine.close()?;
    Ok(took)
}

fn median<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}

fn median_open(
    dir: &Path,
    keys: usize,
    cold: bool,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut times = Vec::new();
    for _ in 0..opens() {
        times.push(open_once(dir, keys, cold)?);
    }
    Ok(median(times))
}

/// Per round, one open with the hints and one without, warm then cold, so both paths
/// of a round see the same load on a shared machine; the ratios are taken per round.
struct Rounds {
    /// `[warm hints, warm scan, cold hints, cold scan]` per round.
    times: Vec<[Duration; 4]>,
    /// `index_bytes` per key after an open from hints and after a scan.
    index_per_key: (f64, f64),
}

fn alternate(
    store: &Path,
    aside: &Path,
    keys: usize,
) -> Result<Rounds, Box<dyn std::error::Error>> {
    let per_key = || INDEX_BYTES.load(std::sync::atomic::Ordering::Relaxed) as f64 / keys as f64;
    let mut times = Vec::new();
    let mut index_per_key = (0.0, 0.0);
    for _ in 0..opens() {
        let mut round = [Duration::ZERO; 4];
        for (i, cold) in [(0, false), (2, true)] {
            round[i] = open_once(store, keys, cold)?;
            index_per_key.0 = per_key();
            move_hints(store, aside)?;
            let scan = open_once(store, keys, cold);
            // Put the hints back, so a kept store (`CASKADE_BENCH_STORE`) stays whole.
            move_hints(aside, store)?;
            round[i + 1] = scan?;
            index_per_key.1 = per_key();
        }
        times.push(round);
    }
    Ok(Rounds {
        times,
        index_per_key,
    })
}

fn move_hints(from: &Path, to: &Path) -> std::io::Result<usize> {
    let mut moved = 0;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "hint")
            && let Some(name) = path.file_name()
        {
            std::fs::rename(&path, to.join(name))?;
            moved += 1;
        }
    }
    Ok(moved)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; a plain run takes no arguments either.
    let keys: usize = std::env::var("CASKADE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let store = match std::env::var_os("CASKADE_BENCH_STORE") {
        Some(kept) => std::path::PathBuf::from(kept),
        None => dir.path().join("store"),
    };
    let aside = dir.path().join("hints-aside");
    std::fs::create_dir_all(&aside)?;
    let filled = std::fs::read_dir(&store).is_ok_and(|mut d| d.next().is_some());
    if filled {
        eprintln!("reusing the store in {}", store.display());
    } else {
        let started = Instant::now();
        fill(&store, keys)?;
        eprintln!("filled {keys} keys in {:.1?}", started.elapsed());
    }
    let only = std::env::var("CASKADE_BENCH_ONLY").ok();
    if let Some(path) = only.as_deref() {
        let moved = if path == "scan" {
            move_hints(&store, &aside)?
        } else {
            0
        };
        let warm = median_open(&store, keys, false);
        move_hints(&aside, &store)?;
        println!(
            "open {keys} keys, {path} only ({moved} hint files moved aside): {:.3?} warm",
            warm?
        );
        return Ok(());
    }
    let moved = std::fs::read_dir(&store)?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "hint"))
        })
        .count();
    let rounds = alternate(&store, &aside, keys)?;
    let column = |i: usize| median(rounds.times.iter().map(|r| r[i]).collect());
    let ratio = |scan: usize, hints: usize| {
        median(
            rounds
                .times
                .iter()
                .map(|r| r[scan].as_secs_f64() / r[hints].as_secs_f64().max(1e-9))
                .collect(),
        )
    };
    println!(
        "open {keys} keys x {VALUE_BYTES} B values ({moved} hint files), {} rounds of one \
         open with and one without hints, medians:",
        opens()
    );
    println!("  page cache | with hints | without (scan, every CRC) | hints faster by (per round)");
    println!(
        "  warm       | {:>10.3?} | {:>25.3?} | {:.1}x",
        column(0),
        column(1),
        ratio(1, 0)
    );
    println!(
        "  cold       | {:>10.3?} | {:>25.3?} | {:.1}x",
        column(2),
        column(3),
        ratio(3, 2)
    );
    for (n, r) in rounds.times.iter().enumerate() {
        println!(
            "  round {n}: warm scan {:.3?} / hints {:.3?} = {:.1}x, cold {:.3?} / {:.3?} = {:.1}x",
            r[1],
            r[0],
            r[1].as_secs_f64() / r[0].as_secs_f64().max(1e-9),
            r[3],
            r[2],
            r[3].as_secs_f64() / r[2].as_secs_f64().max(1e-9)
        );
    }
    let (hints_index, scan_index) = rounds.index_per_key;
    println!(
        "  index after open: {hints_index:.1} B/key from hints, {scan_index:.1} B/key from the scan"
    );
    Ok(())
}
