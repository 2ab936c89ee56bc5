//! After a process crash (kill -9, OOM kill) under `never` or `interval`, the records
//! recovery finds in the active segment may live only in the page cache. The reopened
//! engine must count them as unsynced, so that `sync()`, a seal and a backup make
//! them durable as they promise. A child process writes and aborts; the parent reopens.

mod common;

use caskade_engine::{Engine, SyncPolicy, WriteOptions};
use common::options;

const CHILD_ENV: &str = "CASKADE_REVIEW_CHILD_DIR";

/// Child half: writes under `never` and dies like `kill -9` (nothing synced).
#[test]
fn child_writes_then_crashes() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only runs as the child
    };
    let engine = Engine::open(&dir, options(1024 * 1024, SyncPolicy::Never)).expect("open");
    for i in 0..100 {
        engine
            .put(format!("k/{i}"), format!("v{i}"), WriteOptions::default())
            .expect("put");
    }
    // Acknowledged, never fsync-ed: a process crash.
    std::process::abort();
}

/// A store written by a child process that then aborted (see above); the temporary
/// folder and the store's path in it.
fn crashed_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let status = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "child_writes_then_crashes", "--nocapture"])
        .env(CHILD_ENV, &store)
        .status()
        .expect("run the child");
    assert!(!status.success(), "the child must crash");
    (dir, store)
}

/// After a process crash under `never`, the reopened store holds acknowledged writes
/// that no fsync ever covered. The docs say a backup "forced a sync" of everything
/// acknowledged before it, so it must fsync what recovery found.
#[test]
fn backup_after_a_process_crash_syncs_the_recovered_active_segment() {
    let (dir, store) = crashed_store();

    let engine = Engine::open(&store, options(1024 * 1024, SyncPolicy::Never)).expect("open");
    assert_eq!(engine.stats().recovered_truncated_bytes, 0);
    assert_eq!(
        engine.count_prefix(b"k/"),
        100,
        "acknowledged writes are there"
    );
    let before = engine.stats().fsyncs;
    let report = engine.backup(dir.path().join("b")).expect("backup");
    assert_eq!(report.last_version, 100);
    let after = engine.stats().fsyncs;
    assert!(
        after > before,
        "the backup claims to have made every acknowledged write durable in the store, \
         but no fsync of the active segment happened ({before} -> {after})"
    );
}

/// The seal path: after a process crash, the first write that does not fit in the
/// recovered active segment seals it. Unsynced, its recovered tail would be hard-linked
/// by backups as durable, and a power loss would make it a sealed segment with a torn
/// tail, which open refuses (Error::Corrupt).
#[test]
fn sealing_after_a_process_crash_syncs_the_segment() {
    let (_dir, store) = crashed_store();
    // Reopen with segments smaller than what the child wrote plus the next write
    // (about 2.5 KiB + 2 KiB): that write rotates.
    let engine = Engine::open(&store, options(4096, SyncPolicy::Never)).expect("open");
    let before = engine.stats().segments;
    engine
        .put("after", vec![b'x'; 2048], WriteOptions::default())
        .expect("put");
    assert_eq!(engine.stats().segments, before + 1, "the put rotated");
    assert!(
        engine.stats().fsyncs > 0,
        "segment 1 was sealed without its recovered, never-synced bytes being fsync-ed"
    );
}

/// `Engine::sync` promises "every acknowledged write durable now, whatever the sync
/// policy"; after a process crash and reopen it syncs nothing.
#[test]
fn sync_after_a_process_crash_syncs_the_recovered_active_segment() {
    let (_dir, store) = crashed_store();
    let engine = Engine::open(&store, options(1024 * 1024, SyncPolicy::Never)).expect("open");
    engine.sync().expect("sync");
    assert!(
        engine.stats().fsyncs > 0,
        "sync() did not fsync the recovered segment"
    );
}
