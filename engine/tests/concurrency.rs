//! Many threads at once: acknowledged writes are readable, versions unique, and
//! concurrent writers share fsyncs (group commit).

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use caskade_engine::{Engine, SyncPolicy, WriteOptions};
use common::options;

#[test]
fn eight_threads_writing_and_reading_see_every_acknowledged_write_with_unique_versions() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(64 * 1024, SyncPolicy::Never)).unwrap();
    const THREADS: usize = 8;
    const WRITES: usize = 500;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut versions = Vec::with_capacity(WRITES);
                for i in 0..WRITES {
                    let key = format!("t{t}/k{i}");
                    let value = format!("value {t} {i}");
                    let v = engine
                        .put(key.clone(), value.clone(), WriteOptions::default())
                        .unwrap();
                    let got = engine
                        .get(key.as_bytes())
                        .unwrap()
                        .expect("acknowledged write is readable");
                    assert_eq!(got.value, value.as_bytes());
                    assert!(got.version >= v);
                    // Read another thread's keys while they are being written.
                    let other = format!("t{}/k{}", (t + 1) % THREADS, i / 2);
                    if let Some(e) = engine.get(other.as_bytes()).unwrap() {
                        assert!(e.value.starts_with(b"value "));
                    }
                    versions.push(v);
                }
                versions
            })
        })
        .collect();
    let mut all = HashSet::new();
    for h in handles {
        for v in h.join().unwrap() {
            assert!(all.insert(v), "version {v} handed out twice");
        }
    }
    assert_eq!(all.len(), THREADS * WRITES);
    assert!(
        engine.stats().segments > 1,
        "the test should cross segment rotations"
    );
    for t in 0..THREADS {
        for i in 0..WRITES {
            let key = format!("t{t}/k{i}");
            assert!(engine.get(key.as_bytes()).unwrap().is_some(), "{key} lost");
        }
    }
}

#[test]
fn thirty_two_concurrent_writers_under_always_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(1 << 24, SyncPolicy::Always)).unwrap();
    const WRITERS: usize = 32;
    const WRITES: usize = 50;
    let before = engine.stats().fsyncs;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let handles: Vec<_> = (0..WRITERS)
        .map(|t| {
            let engine = engine.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..WRITES {
                    engine
                        .put(format!("w{t}/{i}"), vec![1u8; 100], WriteOptions::default())
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = engine.stats();
    let writes = (WRITERS * WRITES) as u64;
    let fsyncs = stats.fsyncs - before;
    assert_eq!(stats.records_written, writes);
    eprintln!("{fsyncs} fsyncs for {writes} writes");
    assert!(fsyncs >= 1, "always must sync");
    assert!(
        fsyncs * 8 <= writes,
        "group commit should share fsyncs: {fsyncs} fsyncs for {writes} writes"
    );
}

#[test]
fn under_always_every_write_is_followed_by_an_fsync_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(1 << 20, SyncPolicy::Always)).unwrap();
    for i in 0..10u64 {
        let before = engine.stats().fsyncs;
        engine
            .put(format!("k{i}"), "v", WriteOptions::default())
            .unwrap();
        assert_eq!(engine.stats().fsyncs, before + 1);
    }
}

#[test]
fn under_never_async_submissions_are_written_by_the_writer_thread_not_the_caller() {
    // The server submits with `apply_then` from its async runtime threads; those must
    // never wait for the disk, even under `never`, where a blocking `apply` may write
    // its own batch. Where `done` runs tells who wrote the batch.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(64 * 1024, SyncPolicy::Never)).unwrap();
    // A blocking put first: it leaves nothing queued, the case where `apply` would
    // write directly.
    engine.put("warm", "v", WriteOptions::default()).unwrap();
    for i in 0..200 {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut batch = caskade_engine::Batch::new();
        batch.put(format!("k{i}"), "v", WriteOptions::default());
        engine.apply_then(batch, move |result| {
            let thread = std::thread::current().name().map(str::to_owned);
            tx.send((result.map(|v| v.len()), thread)).unwrap();
        });
        let (result, thread) = rx.recv().unwrap();
        assert_eq!(result.unwrap(), 1);
        assert_eq!(thread.as_deref(), Some("caskade-writer"), "write {i}");
    }
    for i in 0..200 {
        assert!(engine.get(format!("k{i}").as_bytes()).unwrap().is_some());
    }
}
