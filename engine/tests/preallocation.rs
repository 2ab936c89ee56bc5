//! The writer appends through a writable mapping of the active segment (by `pwrite`
//! under `always`) and reserves its blocks ahead (`fallocate`), so while an engine is
//! open the newest segment file ends in zeros. A sealed or closed segment is cut back
//! to exactly its written length; after a process crash recovery cuts the zero tail
//! quietly (no torn bytes counted) and every acknowledged write is there.

mod common;

use std::path::Path;

use caskade_engine::{Batch, Engine, SyncPolicy, WriteOptions, verify};
use common::{options, segment_files, written_len};

const CHILD_ENV: &str = "CASKADE_PREALLOC_CHILD_DIR";
/// Small segments, so the child's writes seal a few of them.
const SEGMENT_BYTES: u64 = 64 * 1024;
/// Puts the child makes (about 300 KiB of records: four to five segments).
const PUTS: usize = 2_000;
/// Bytes a preallocated file length is a multiple of (`append::PREALLOC_ALIGN`).
const ALIGN: u64 = 4096;

fn value(i: usize) -> String {
    format!("value {i} ").repeat(10)
}

fn check_all_there(engine: &Engine) {
    for i in 0..PUTS {
        let got = engine
            .get(format!("k/{i:05}").as_bytes())
            .expect("get")
            .expect("present");
        assert_eq!(got.value, value(i).as_bytes(), "k/{i:05}");
    }
    let b1 = engine.get(b"batch/1").expect("get").expect("batch/1");
    assert_eq!(&b1.value[..], b"one");
    assert!(engine.get(b"k/00000").expect("get").is_some());
    assert!(engine.get(b"batch/gone").expect("get").is_none());
}

/// Child half: writes under `never` and dies like `kill -9`: no close, no seal of the
/// active segment, nothing synced.
#[test]
fn child_fills_then_aborts() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only runs as the child
    };
    let engine = Engine::open(&dir, options(SEGMENT_BYTES, SyncPolicy::Never)).expect("open");
    for i in 0..PUTS {
        engine
            .put(format!("k/{i:05}"), value(i), WriteOptions::default())
            .expect("put");
    }
    let mut batch = Batch::new();
    batch
        .put(&b"batch/1"[..], &b"one"[..], WriteOptions::default())
        .put(&b"batch/gone"[..], &b"two"[..], WriteOptions::default())
        .delete(&b"batch/gone"[..]);
    engine.apply(batch).expect("batch");
    std::process::abort();
}

/// Runs the child above in a fresh folder; returns the temporary folder and the store.
fn crashed_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let status = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "child_fills_then_aborts", "--nocapture"])
        .env(CHILD_ENV, &store)
        .status()
        .expect("run the child");
    assert!(!status.success(), "the child must crash");
    (dir, store)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("segment metadata").len()
}

/// Every segment file ends exactly at its written length (its last record ends in a
/// non-zero value byte here, so trailing zeros would be preallocation).
fn assert_exact(files: &[std::path::PathBuf]) {
    for f in files {
        assert_eq!(file_len(f), written_len(f), "{} ends in zeros", f.display());
    }
}

#[test]
fn a_killed_writer_leaves_a_zero_tail_that_open_cuts_quietly() {
    let (_dir, store) = crashed_store();
    let files = segment_files(&store);
    assert!(files.len() >= 3, "the child sealed segments: {files:?}");
    let (newest, sealed) = files.split_last().expect("segments");
    // The sealed segments were cut back when they were sealed, before the next one was
    // created; the newest still has the space the killed writer had reserved.
    assert_exact(sealed);
    let (len, written) = (file_len(newest), written_len(newest));
    assert!(
        len > written && len.is_multiple_of(ALIGN),
        "the newest segment ends in reserved zeros: {len} bytes, {written} written"
    );
    // Offline verify agrees: a zero tail of the newest log segment is no finding.
    let report = verify::verify(&store, &mut |_, _| {}).expect("verify");
    assert!(report.is_clean(), "{:?}", report.damage);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let engine = Engine::open(&store, options(SEGMENT_BYTES, SyncPolicy::Never)).expect("open");
    assert_eq!(
        engine.stats().recovered_truncated_bytes,
        0,
        "reserved zeros are not a torn write"
    );
    assert_eq!(file_len(newest), written, "open cut the zero tail");
    check_all_there(&engine);
    // Writing goes on after the cut, into the same segment and then new ones.
    for i in 0..PUTS / 2 {
        engine
            .put(format!("after/{i}"), value(i), WriteOptions::default())
            .expect("put after reopen");
    }
    engine.close().expect("close");
    assert_exact(&segment_files(&store));

    let engine = Engine::open(&store, options(SEGMENT_BYTES, SyncPolicy::Never)).expect("open");
    assert_eq!(engine.stats().recovered_truncated_bytes, 0);
    check_all_there(&engine);
    for i in 0..PUTS / 2 {
        let got = engine
            .get(format!("after/{i}").as_bytes())
            .expect("get")
            .expect("present");
        assert_eq!(got.value, value(i).as_bytes());
    }
    engine.close().expect("close");
}

/// While the engine is open, every sealed segment is exactly its written length, and
/// the active one reserves space ahead; close cuts that back too. Under `never` the
/// writer appends through the mapping; under `always` by `pwrite`, into blocks reserved
/// the same way.
#[test]
fn sealed_segments_are_exactly_their_written_length() {
    sealed_segments_exact_and_the_active_one_reserved(SyncPolicy::Never);
}

#[test]
fn sealed_segments_are_exactly_their_written_length_under_always_too() {
    sealed_segments_exact_and_the_active_one_reserved(SyncPolicy::Always);
}

fn sealed_segments_exact_and_the_active_one_reserved(sync: SyncPolicy) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(dir.path(), options(8 * 1024, sync)).expect("open");
    for i in 0..500 {
        engine
            .put(format!("k/{i:05}"), value(i), WriteOptions::default())
            .expect("put");
    }
    let files = segment_files(dir.path());
    assert!(files.len() > 5, "rotated: {files:?}");
    let (newest, sealed) = files.split_last().expect("segments");
    assert_exact(sealed);
    assert!(
        file_len(newest) > written_len(newest),
        "space reserved ahead"
    );
    // Sealing by hand (what compaction asks for) cuts the active segment back too.
    engine.compact().expect("compact");
    engine.close().expect("close");
    assert_exact(&segment_files(dir.path()));
    let report = verify::verify(dir.path(), &mut |_, _| {}).expect("verify");
    assert!(report.is_clean(), "{:?}", report.damage);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

/// A batch bigger than a whole segment goes alone into a segment of its own with one
/// positioned write (it does not fit the mapping); that segment is exact too.
#[test]
fn a_batch_larger_than_a_segment_is_written_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(dir.path(), options(4096, SyncPolicy::Never)).expect("open");
    engine
        .put("small", "x", WriteOptions::default())
        .expect("put");
    let big = "b".repeat(20_000);
    engine
        .put("big", big.clone(), WriteOptions::default())
        .expect("put big");
    engine
        .put("after", "y", WriteOptions::default())
        .expect("put after");
    assert_eq!(
        &engine.get(b"big").expect("get").expect("big").value[..],
        big.as_bytes()
    );
    engine.close().expect("close");
    assert_exact(&segment_files(dir.path()));
    let engine = Engine::open(dir.path(), options(4096, SyncPolicy::Never)).expect("open");
    assert_eq!(
        &engine.get(b"big").expect("get").expect("big").value[..],
        big.as_bytes()
    );
    assert_eq!(
        &engine.get(b"after").expect("get").expect("after").value[..],
        b"y"
    );
    engine.close().expect("close");
}
