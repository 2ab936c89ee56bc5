//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use caskade_engine::{Clock, Engine, Options, SyncPolicy};

/// A clock tests move by hand.
#[derive(Debug)]
pub struct ManualClock(pub AtomicU64);

impl ManualClock {
    pub fn new(ms: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicU64::new(ms)))
    }
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn options(segment_bytes: u64, sync: SyncPolicy) -> Options {
    Options {
        segment_bytes,
        sync,
        ..Options::default()
    }
}

pub fn open(dir: &Path, segment_bytes: u64) -> Engine {
    Engine::open(dir, options(segment_bytes, SyncPolicy::Never)).expect("open")
}

/// Segment files of a data folder, ascending.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Bytes the writer has written to the active segment file at `path` while its engine
/// is open: the file without the zeros the writer reserves past its last append. Exact
/// when the last record ends in a non-zero byte (a value of text does).
pub fn written_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).expect("read segment");
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}
