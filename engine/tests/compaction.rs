//! Compaction, hint files and TTL sweeps: space comes back, nothing acknowledged is
//! lost, nothing deleted returns, and every crash point reopens to the same data.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use caskade_engine::{Batch, Engine, FaultHook, Options, SyncPolicy, WriteOptions};
use common::{ManualClock, options, segment_files};

fn wo() -> WriteOptions {
    WriteOptions::default()
}

fn small(segment_bytes: u64) -> Options {
    options(segment_bytes, SyncPolicy::Never)
}

fn value(key: usize, round: usize) -> Vec<u8> {
    format!("value-{key}-{round}-").repeat(8).into_bytes()
}

fn disk_bytes(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Writes 300 keys three times over and deletes every other one.
fn churn(engine: &Engine) -> BTreeMap<String, Vec<u8>> {
    let mut model = BTreeMap::new();
    for round in 0..3 {
        for k in 0..300 {
            let key = format!("k/{k:04}");
            engine.put(key.clone(), value(k, round), wo()).unwrap();
            model.insert(key, value(k, round));
        }
    }
    for k in (0..300).step_by(2) {
        let key = format!("k/{k:04}");
        engine.delete(key.clone()).unwrap();
        model.remove(&key);
    }
    model
}

fn assert_matches(engine: &Engine, model: &BTreeMap<String, Vec<u8>>) {
    for k in 0..300 {
        let key = format!("k/{k:04}");
        let got = engine
            .get(key.as_bytes())
            .unwrap()
            .map(|e| e.value.to_vec());
        assert_eq!(got.as_ref(), model.get(&key), "{key}");
    }
    let listed: Vec<String> = engine
        .list(b"k/", None, 1000)
        .unwrap()
        .into_iter()
        .map(|i| String::from_utf8(i.key.to_vec()).unwrap())
        .collect();
    assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
}

#[test]
fn compaction_after_overwrites_and_deletes_brings_disk_to_at_most_one_and_a_half_times_live() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), small(16 * 1024)).unwrap();
    let model = churn(&engine);
    let before = engine.stats();
    assert!(before.disk_bytes > 3 * before.live_bytes, "{before:?}");
    let report = engine.compact().unwrap();
    let after = engine.stats();
    assert!(
        report.bytes_reclaimed > 0 && after.compactions == 1,
        "{report:?}"
    );
    assert!(
        after.disk_bytes * 2 <= after.live_bytes * 3,
        "disk {} vs live {}",
        after.disk_bytes,
        after.live_bytes
    );
    assert_eq!(
        disk_bytes(dir.path()),
        after.disk_bytes,
        "stats agree with the files"
    );
    assert_matches(&engine, &model);
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), small(16 * 1024)).unwrap();
    assert!(
        engine.stats().hints_loaded > 0,
        "a restart after compaction loads hints"
    );
    assert_matches(&engine, &model);
}

#[test]
fn deleted_keys_stay_deleted_across_compaction_and_restart_whatever_the_segment_order() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), small(8 * 1024)).unwrap();
    for k in 0..100 {
        engine.put(format!("k/{k:04}"), value(k, 0), wo()).unwrap();
    }
    // The values are compacted into new, higher-numbered files...
    engine.compact().unwrap();
    // ...then deleted in the log, and compacted again together with fresh writes.
    for k in 0..100 {
        engine.delete(format!("k/{k:04}")).unwrap();
    }
    for k in 100..200 {
        engine.put(format!("k/{k:04}"), value(k, 1), wo()).unwrap();
    }
    engine.compact().unwrap();
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), small(8 * 1024)).unwrap();
    for k in 0..100 {
        assert!(
            engine
                .get(format!("k/{k:04}").as_bytes())
                .unwrap()
                .is_none(),
            "k/{k:04} came back"
        );
    }
    assert_eq!(engine.list(b"k/", None, 1000).unwrap().len(), 100);
    engine.compact().unwrap();
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), small(8 * 1024)).unwrap();
    assert_eq!(engine.list(b"k/", None, 1000).unwrap().len(), 100);
    assert!(engine.get(b"k/0000").unwrap().is_none());
}

#[test]
fn tombstones_survive_a_compaction_of_only_the_newer_segments() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), small(16 * 1024)).unwrap();
    // Old segments that stay mostly live: 30 doomed keys among 150 kept ones.
    for k in 0..180 {
        engine.put(format!("k/{k:04}"), value(k, 0), wo()).unwrap();
    }
    engine.compact().unwrap();
    // A newer segment of nothing but dead bytes: the 30 tombstones, then junk written
    // and deleted until the segment is sealed. The policy picks it, not the old ones.
    for k in 0..30 {
        engine.delete(format!("k/{k:04}")).unwrap();
    }
    let segments = engine.stats().segments;
    let mut i = 0;
    while engine.stats().segments == segments {
        engine.put(format!("junk/{i}"), value(i, 9), wo()).unwrap();
        engine.delete(format!("junk/{i}")).unwrap();
        i += 1;
    }
    let sealed = engine.stats().segments - 1;
    let report = engine.compact_by_policy().unwrap();
    assert!(
        report.segments_in >= 1 && report.segments_in < sealed,
        "a partial compaction: {report:?} of {sealed} sealed"
    );
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), small(16 * 1024)).unwrap();
    for k in 0..30 {
        assert!(
            engine
                .get(format!("k/{k:04}").as_bytes())
                .unwrap()
                .is_none(),
            "k/{k:04} came back"
        );
    }
    assert_eq!(engine.list(b"k/", None, 1000).unwrap().len(), 150);
}

#[test]
fn a_crash_at_every_step_of_compaction_reopens_with_exactly_the_same_data() {
    let steps = [
        "compaction:outputs-written",
        "compaction:outputs-renamed",
        "compaction:index-repointed",
        "compaction:manifest-written",
        "compaction:inputs-deleted",
    ];
    for step in steps {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), small(16 * 1024)).unwrap();
        let model = churn(&engine);
        engine.close().unwrap();

        let mut crashing = small(16 * 1024);
        crashing.fault = FaultHook::new(move |at| at == step);
        let engine = Engine::open(dir.path(), crashing).unwrap();
        let err = engine
            .compact()
            .expect_err("the injected crash stops compaction");
        assert!(err.to_string().contains(step), "{err}");
        // Drop without close: what is on disk is what a crash leaves.
        drop(engine);

        let engine = Engine::open(dir.path(), small(16 * 1024)).unwrap();
        assert_matches(&engine, &model);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp") || n == "COMPACTION")
            .collect();
        assert!(leftovers.is_empty(), "after {step}: {leftovers:?}");
        // And the store compacts fine afterwards.
        engine.compact().unwrap();
        assert_matches(&engine, &model);
        engine.close().unwrap();
        let engine = Engine::open(dir.path(), small(16 * 1024)).unwrap();
        assert_matches(&engine, &model);
    }
}

/// A compaction that fails with an I/O error (a full disk, a failed rename or folder
/// sync) after it renamed its outputs into place but before the index used them must
/// take them back out. Left behind, they hold copies of values the running engine no
/// longer knows about: a later compaction drops the tombstone that hides such a value
/// (no known segment holds an older record of its key), and the next open brings the
/// deleted value back.
#[test]
fn a_failed_compaction_leaves_no_output_behind_and_nothing_deleted_returns() {
    for step in ["compaction:outputs-written", "compaction:outputs-renamed"] {
        let dir = tempfile::tempdir().unwrap();
        let fail_once = Arc::new(AtomicBool::new(true));
        let mut failing = small(16 * 1024);
        let armed = Arc::clone(&fail_once);
        let injected = format!("{step}:io-error");
        failing.fault =
            FaultHook::new(move |at| at == injected && armed.swap(false, Ordering::SeqCst));
        let engine = Engine::open(dir.path(), failing).unwrap();
        let model = churn(&engine);
        engine
            .put("victim", b"deleted later".to_vec(), wo())
            .unwrap();

        let err = engine
            .compact()
            .expect_err("the injected I/O error stops compaction");
        assert!(err.to_string().contains(step), "{err}");
        assert_eq!(
            segment_files(dir.path()).len() as u64,
            engine.stats().segments,
            "after a failed compaction at {step}, files the engine does not know: {:?}",
            segment_files(dir.path())
        );
        let temporary: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(temporary.is_empty(), "after {step}: {temporary:?}");
        // Still serving; the delete's tombstone is then compacted away.
        assert_matches(&engine, &model);
        engine.delete("victim").unwrap();
        engine.compact().unwrap();
        engine.close().unwrap();

        let engine = Engine::open(dir.path(), small(16 * 1024)).unwrap();
        assert_eq!(
            engine.get(b"victim").unwrap().map(|e| e.value.to_vec()),
            None,
            "a deleted value came back after a failed compaction at {step}"
        );
        assert_matches(&engine, &model);
    }
}

#[test]
fn a_damaged_or_missing_hint_falls_back_to_scanning_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), small(16 * 1024)).unwrap();
    let model = churn(&engine);
    engine.compact().unwrap();
    engine.close().unwrap();
    let mut hints: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hint"))
        .collect();
    hints.sort();
    assert!(hints.len() >= 2, "{hints:?}");
    let mut bytes = std::fs::read(&hints[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&hints[0], bytes).unwrap();
    std::fs::remove_file(&hints[1]).unwrap();
    let engine = Engine::open(dir.path(), small(16 * 1024)).unwrap();
    assert_eq!(engine.stats().hints_loaded as usize, hints.len() - 2);
    assert_matches(&engine, &model);
}

#[test]
fn readers_and_writers_during_compaction_see_every_acknowledged_write_and_nothing_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), small(32 * 1024)).unwrap();
    for k in 0..500 {
        engine.put(format!("base/{k}"), value(k, 0), wo()).unwrap();
    }
    for k in 0..250 {
        engine.delete(format!("base/{k}")).unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(3));
    let writer = {
        let (engine, done, barrier) = (engine.clone(), Arc::clone(&done), Arc::clone(&barrier));
        std::thread::spawn(move || {
            barrier.wait();
            let mut i = 0;
            while !done.load(Ordering::Relaxed) || i < 200 {
                let key = format!("new/{i}");
                engine.put(key.clone(), value(i, 1), wo()).unwrap();
                let got = engine
                    .get(key.as_bytes())
                    .unwrap()
                    .expect("acknowledged write readable");
                assert_eq!(got.value, value(i, 1));
                i += 1;
            }
            i
        })
    };
    let reader = {
        let (engine, done, barrier) = (engine.clone(), Arc::clone(&done), Arc::clone(&barrier));
        std::thread::spawn(move || {
            barrier.wait();
            while !done.load(Ordering::Relaxed) {
                for k in 0..500 {
                    let got = engine.get(format!("base/{k}").as_bytes()).unwrap();
                    assert_eq!(got.is_some(), k >= 250, "base/{k}");
                    if let Some(e) = got {
                        assert_eq!(e.value, value(k, 0));
                    }
                }
                assert_eq!(engine.list(b"base/", None, 1000).unwrap().len(), 250);
            }
        })
    };
    barrier.wait();
    for _ in 0..3 {
        engine.compact().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    reader.join().unwrap();
    for i in 0..written {
        assert!(
            engine.get(format!("new/{i}").as_bytes()).unwrap().is_some(),
            "new/{i} lost"
        );
    }
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), small(32 * 1024)).unwrap();
    assert_eq!(engine.list(b"new/", None, 100_000).unwrap().len(), written);
    assert_eq!(engine.list(b"base/", None, 1000).unwrap().len(), 250);
}

#[test]
fn expired_keys_leave_the_index_within_one_sweep_interval_and_compaction_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let mut opts = small(16 * 1024);
    opts.clock = clock.clone();
    opts.sweep_interval = Duration::from_millis(20);
    let engine = Engine::open(dir.path(), opts).unwrap();
    for k in 0..100 {
        let ttl = WriteOptions {
            expires_at_ms: Some(1_060_000),
            ..wo()
        };
        engine.put(format!("ttl/{k}"), value(k, 0), ttl).unwrap();
        engine.put(format!("keep/{k}"), value(k, 0), wo()).unwrap();
    }
    assert_eq!(engine.stats().keys, 200);
    clock.advance(60_000);
    assert!(
        engine.get(b"ttl/0").unwrap().is_none(),
        "invisible at once, before any sweep"
    );
    // Wait for the sweep (the event); the deadline only bounds a failure.
    let deadline = Instant::now() + Duration::from_secs(10);
    // The sweep counts its keys after removing them: wait for both.
    while engine.stats().keys != 100 || engine.stats().expired_swept != 100 {
        assert!(Instant::now() < deadline, "not swept: {:?}", engine.stats());
        std::thread::yield_now();
    }
    engine.compact().unwrap();
    let stats = engine.stats();
    assert!(stats.disk_bytes * 2 <= stats.live_bytes * 3, "{stats:?}");
    engine.close().unwrap();
    let mut opts = small(16 * 1024);
    opts.clock = clock;
    let engine = Engine::open(dir.path(), opts).unwrap();
    assert_eq!(engine.stats().keys, 100);
    assert!(engine.get(b"ttl/5").unwrap().is_none());
}

#[test]
fn an_atomic_batch_copied_by_compaction_is_whole_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), small(8 * 1024)).unwrap();
    let mut batch = Batch::new();
    for k in 0..20 {
        batch.put(format!("b/{k}"), value(k, 0), wo());
    }
    engine.apply(batch).unwrap();
    // Overwrite half of the batch so compaction copies only some of its records.
    for k in 0..10 {
        engine.put(format!("b/{k}"), value(k, 1), wo()).unwrap();
    }
    engine.compact().unwrap();
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), small(8 * 1024)).unwrap();
    for k in 0..20 {
        let e = engine
            .get(format!("b/{k}").as_bytes())
            .unwrap()
            .expect("present");
        assert_eq!(e.value, value(k, usize::from(k < 10)));
    }
}

#[test]
fn a_value_overwritten_after_compaction_is_not_beaten_by_its_older_copy_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), small(8 * 1024)).unwrap();
    // Sealed segments that are mostly dead but still hold live values, so the policy
    // copies those into new, higher-numbered files while the active segment keeps its
    // lower number.
    for k in 0..40 {
        engine.put(format!("k/{k:04}"), value(k, 0), wo()).unwrap();
    }
    for round in 1..4 {
        for k in 0..28 {
            engine
                .put(format!("k/{k:04}"), value(k, round), wo())
                .unwrap();
        }
    }
    let report = engine.compact_by_policy().unwrap();
    assert!(report.segments_out >= 1, "{report:?}");
    // Newer values land in the (older-numbered) active segment, which is then sealed.
    for k in 0..40 {
        engine.put(format!("k/{k:04}"), value(k, 9), wo()).unwrap();
    }
    let segments = engine.stats().segments;
    let mut i = 0;
    while engine.stats().segments == segments {
        engine.put(format!("fill/{i}"), value(i, 0), wo()).unwrap();
        i += 1;
    }
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), small(8 * 1024)).unwrap();
    for k in 0..40 {
        let got = engine.get(format!("k/{k:04}").as_bytes()).unwrap().unwrap();
        assert_eq!(
            got.value,
            value(k, 9),
            "k/{k:04} went back to an older value"
        );
    }
}
