//! Open time with and without hint files: N keys (16-byte keys, 1 KiB values, default
//! 1,000,000; `CASKADE_BENCH_KEYS` overrides), compacted so every segment has a hint,
//! then opened three times with the hints and three times with them moved aside.
//! Prints the median of each and their ratio. Both runs read from a warm page cache.
//!
//! `cargo bench --bench open`

use std::path::Path;
use std::time::{Duration, Instant};

use caskade_engine::{Batch, Engine, Options, SyncPolicy, WriteOptions};

const VALUE_BYTES: usize = 1024;
const BATCH_OPS: usize = 1000;

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

fn median_open(dir: &Path, keys: usize) -> Result<Duration, caskade_engine::Error> {
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let engine = Engine::open(dir, options())?;
        times.push(started.elapsed());
        assert_eq!(engine.stats().keys as usize, keys);
        engine.close()?;
    }
    times.sort();
    Ok(times[1])
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
    let store = dir.path().join("store");
    let aside = dir.path().join("hints-aside");
    std::fs::create_dir_all(&aside)?;
    let started = Instant::now();
    fill(&store, keys)?;
    eprintln!("filled {keys} keys in {:.1?}", started.elapsed());
    let with_hints = median_open(&store, keys)?;
    let moved = move_hints(&store, &aside)?;
    let without = median_open(&store, keys)?;
    println!("open {keys} keys x {VALUE_BYTES} B values, median of 3, warm page cache:");
    println!("  with hints ({moved} hint files): {with_hints:.3?}");
    println!("  without hints (full scan, every CRC): {without:.3?}");
    println!(
        "  hints are {:.1}x faster",
        without.as_secs_f64() / with_hints.as_secs_f64().max(1e-9)
    );
    Ok(())
}
