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

/// Under `never` callers write their own batches and take turns at the writer's lock;
/// the writer thread still gets it when it needs it: `sync` returns again and again
/// while four threads keep putting, and every acknowledged put is readable after.
#[test]
fn under_never_direct_writers_leave_the_writer_thread_its_turn() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(64 * 1024, SyncPolicy::Never)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (started, all_started) = std::sync::mpsc::channel();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (engine, stop, started) = (engine.clone(), Arc::clone(&stop), started.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    engine
                        .put(format!("t{t}/k{i}"), "v", WriteOptions::default())
                        .unwrap();
                    if i == 0 {
                        started.send(()).unwrap();
                    }
                    i += 1;
                }
                i
            })
        })
        .collect();
    // Every writer is putting before the syncs start.
    for _ in 0..4 {
        all_started.recv().unwrap();
    }
    for _ in 0..200 {
        engine.sync().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for (t, writer) in writers.into_iter().enumerate() {
        let written = writer.join().unwrap();
        for i in 0..written {
            let key = format!("t{t}/k{i}");
            assert!(engine.get(key.as_bytes()).unwrap().is_some(), "{key} lost");
        }
    }
    engine.close().unwrap();
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

/// Under `always` the writer hands each committed group to its answer thread. Async
/// submissions from one thread come back in order, each after its write is in the
/// index, and every callback submitted before `sync` (and before `close`) has run by
/// the time that call returns.
#[test]
fn under_always_answers_come_in_order_after_the_index_and_before_sync_and_close_return() {
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(1 << 24, SyncPolicy::Always)).unwrap();
    const WRITES: usize = 2000;
    /// Per answer: submission number, version, visible in the index when answered.
    type Seen = Vec<(usize, u64, Option<bool>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let submit = |from: usize, to: usize| {
        for i in from..to {
            let mut batch = caskade_engine::Batch::new();
            let key = format!("k{i}");
            batch.put(key.clone(), "v", WriteOptions::default());
            let (seen, reader) = (Arc::clone(&seen), engine.clone());
            engine.apply_then(batch, move |result| {
                let version = result.unwrap()[0];
                // `None` once the engine is closed (reads are refused then).
                let visible = reader
                    .get(key.as_bytes())
                    .ok()
                    .map(|e| e.is_some_and(|e| e.version == version));
                seen.lock().unwrap().push((i, version, visible));
            });
        }
    };
    let groups_before = engine.stats().write_batches;
    submit(0, WRITES);
    engine.sync().unwrap();
    assert_eq!(
        seen.lock().unwrap().len(),
        WRITES,
        "answered before sync returned"
    );
    submit(WRITES, 2 * WRITES);
    let groups = engine.stats().write_batches - groups_before;
    engine.clone().close().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2 * WRITES, "answered before close returned");
    // Groups of more than one batch are what the answer thread answers.
    assert!(
        groups < WRITES as u64,
        "{groups} groups for {WRITES} writes"
    );
    for (n, &(i, version, visible)) in seen.iter().enumerate() {
        assert_eq!(i, n, "answers out of submission order");
        assert_ne!(
            visible,
            Some(false),
            "k{i} was answered before the index had it"
        );
        if i < WRITES {
            assert_eq!(visible, Some(true), "k{i} not readable before close");
        }
        if n > 0 {
            assert!(version > seen[n - 1].1, "versions not increasing");
        }
    }
}

/// Under `always`, `apply_then` callbacks run on the writer thread itself (they are
/// quick by contract; the answer thread is for waking blocked callers), and one that
/// panics is logged: the other callers of its group are answered, its write stands,
/// and the engine takes writes after it.
#[test]
fn under_always_callbacks_run_on_the_writer_and_a_panicking_one_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(1 << 24, SyncPolicy::Always)).unwrap();
    const WRITES: usize = 400;
    let (tx, rx) = std::sync::mpsc::channel();
    let groups_before = engine.stats().write_batches;
    for i in 0..WRITES {
        let mut batch = caskade_engine::Batch::new();
        batch.put(format!("k{i}"), "v", WriteOptions::default());
        let tx = tx.clone();
        engine.apply_then(batch, move |result| {
            assert!(i % 100 != 7, "callback {i} panics on purpose");
            let thread = std::thread::current().name().map(str::to_owned);
            tx.send((i, result.map(|v| v.len()), thread)).unwrap();
        });
    }
    drop(tx);
    engine.sync().unwrap();
    let groups = engine.stats().write_batches - groups_before;
    assert!(
        groups < WRITES as u64,
        "{groups} groups for {WRITES} writes: no group of several callers to answer"
    );
    let answered: Vec<_> = rx.try_iter().collect();
    let expected: Vec<usize> = (0..WRITES).filter(|i| i % 100 != 7).collect();
    let order: Vec<usize> = answered.iter().map(|a| a.0).collect();
    assert_eq!(order, expected, "every other callback ran, in commit order");
    for (i, result, thread) in answered {
        assert_eq!(result.unwrap(), 1);
        assert_eq!(thread.as_deref(), Some("caskade-writer"), "callback {i}");
    }
    engine.put("after", "v", WriteOptions::default()).unwrap();
    for i in 0..WRITES {
        assert!(
            engine.get(format!("k{i}").as_bytes()).unwrap().is_some(),
            "k{i}"
        );
    }
    engine.close().unwrap();
}

/// A failed fsync under many writers: every caller of the failing group gets an
/// error and none of its writes becomes visible; the engine takes no writes after
/// it; every write acknowledged before it is readable, also after a reopen. The
/// failure is injected (the `writer:fsync` fault point replaces `fdatasync`'s
/// result), since a real one cannot be provoked in a test.
#[test]
fn a_failed_fsync_under_many_writers_fails_its_group_and_every_write_after_it() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let fsyncs = Arc::new(AtomicUsize::new(0));
    let mut failing = options(1 << 24, SyncPolicy::Always);
    let counted = Arc::clone(&fsyncs);
    failing.fault = caskade_engine::FaultHook::new(move |at| {
        at == "writer:fsync:io-error" && counted.fetch_add(1, Ordering::SeqCst) == 20
    });
    let engine = Engine::open(dir.path(), failing).unwrap();
    const WRITERS: usize = 32;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let handles: Vec<_> = (0..WRITERS)
        .map(|t| {
            let engine = engine.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut acknowledged = Vec::new();
                // Writes until the first error, then once more: refused too.
                for i in 0.. {
                    let key = format!("w{t}/{i}");
                    match engine.put(key.clone(), vec![7u8; 100], WriteOptions::default()) {
                        Ok(_) => acknowledged.push(key),
                        Err(first) => {
                            let again =
                                engine.put(format!("w{t}/again"), "v", WriteOptions::default());
                            return (acknowledged, key, first.to_string(), again.is_err());
                        }
                    }
                }
                unreachable!()
            })
        })
        .collect();
    let mut kept = Vec::new();
    for h in handles {
        let (acknowledged, failed, error, refused_again) = h.join().unwrap();
        assert!(refused_again, "a write after the failed fsync was taken");
        assert!(
            engine.get(failed.as_bytes()).unwrap().is_none(),
            "{failed} failed ({error}) but is visible"
        );
        for key in &acknowledged {
            assert!(engine.get(key.as_bytes()).unwrap().is_some(), "{key} lost");
        }
        kept.extend(acknowledged);
    }
    assert!(fsyncs.load(Ordering::SeqCst) > 20, "the fault never fired");
    drop(engine);
    let reopened = Engine::open(dir.path(), options(1 << 24, SyncPolicy::Always)).unwrap();
    for key in &kept {
        assert!(
            reopened.get(key.as_bytes()).unwrap().is_some(),
            "{key} lost on reopen"
        );
    }
}

/// A single writer under `never` writes its puts and deletes on its own thread (no
/// batch): each is one batch of one record with the next version, visible at once;
/// when sealing a full segment fails its fsync, the put that needed the room fails,
/// is not visible, and every write after it fails too; every write acknowledged
/// before it is readable, also after a reopen.
#[test]
fn under_never_a_single_writer_s_puts_and_deletes_are_one_record_batches_and_a_failed_seal_stops_them()
 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let fsyncs = Arc::new(AtomicUsize::new(0));
    let mut failing = options(8 * 1024, SyncPolicy::Never);
    let counted = Arc::clone(&fsyncs);
    failing.fault = caskade_engine::FaultHook::new(move |at| {
        at == "writer:fsync:io-error" && counted.fetch_add(1, Ordering::SeqCst) == 3
    });
    let engine = Engine::open(dir.path(), failing).unwrap();
    let start = engine.stats();
    let mut live: Vec<String> = Vec::new();
    let mut last = start.last_version;
    let mut failed = None;
    for i in 0..10_000 {
        let key = format!("k{i}");
        // Every tenth write deletes the key written just before.
        let delete = i % 10 == 9;
        let written = if delete {
            engine.delete(live[live.len() - 1].clone())
        } else {
            engine.put(key.clone(), vec![i as u8; 300], WriteOptions::default())
        };
        match written {
            Ok(version) => {
                assert_eq!(version, last + 1, "versions are not consecutive");
                last = version;
                if delete {
                    let gone = live.pop().unwrap();
                    assert!(engine.get(gone.as_bytes()).unwrap().is_none());
                } else {
                    assert_eq!(
                        engine.get(key.as_bytes()).unwrap().unwrap().version,
                        version
                    );
                    live.push(key);
                }
                let stats = engine.stats();
                assert_eq!(stats.last_version, version);
                assert_eq!(stats.write_batches - start.write_batches, (i + 1) as u64);
                assert_eq!(
                    stats.records_written - start.records_written,
                    (i + 1) as u64
                );
            }
            Err(e) => {
                failed = Some((delete, key, e.to_string()));
                break;
            }
        }
    }
    let (delete, key, error) = failed.expect("the injected fsync failure never stopped the writes");
    assert!(error.contains("injected fsync failure"), "{error}");
    if !delete {
        // (A failed delete leaves its key in `live`, checked below.)
        assert!(
            engine.get(key.as_bytes()).unwrap().is_none(),
            "{key} failed but is visible"
        );
    }
    assert!(engine.put("after", "v", WriteOptions::default()).is_err());
    assert!(engine.delete(live[0].clone()).is_err());
    for key in &live {
        assert!(engine.get(key.as_bytes()).unwrap().is_some(), "{key} lost");
    }
    drop(engine);
    let reopened = Engine::open(dir.path(), options(8 * 1024, SyncPolicy::Never)).unwrap();
    for key in &live {
        assert!(
            reopened.get(key.as_bytes()).unwrap().is_some(),
            "{key} lost on reopen"
        );
    }
    assert!(reopened.get(b"after").unwrap().is_none());
}

/// Batches that share a group see each other's writes: a condition or a detailed
/// answer sees the plain puts and deletes staged before it in the same group (which
/// are not in the index until the group commits), and a plain write after a
/// conditional one lands on top of it.
#[test]
fn conditions_and_detailed_answers_see_plain_writes_earlier_in_their_group() {
    use caskade_engine::{Batch, Expect};
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(1 << 20, SyncPolicy::Always)).unwrap();
    let rounds = 20;
    let before = engine.stats();
    for round in 0..rounds {
        // `old` and `gone` are in the index before the round; `new` is not.
        let (old, new, gone) = (
            format!("old{round}"),
            format!("new{round}"),
            format!("gone{round}"),
        );
        for key in [&old, &gone] {
            engine
                .put(key.clone(), "0", WriteOptions::default())
                .unwrap();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let versions = |name: &'static str| {
            let tx = tx.clone();
            move |r: caskade_engine::Result<Vec<u64>>| {
                let _ = tx.send((name, r.map(|_| false)));
            }
        };
        // The first one's fsync gives the rest time to queue up behind it and share
        // the next group.
        let mut first = Batch::new();
        first.put(format!("first{round}"), "v", WriteOptions::default());
        engine.apply_then(first, versions("first"));
        let mut put = Batch::new();
        put.put(new.clone(), "a", WriteOptions::default());
        engine.apply_then(put, versions("put"));
        let mut present = Batch::new();
        present.expect(new.clone(), Expect::Present).put(
            format!("x{round}"),
            "v",
            WriteOptions::default(),
        );
        engine.apply_then(present, versions("present"));
        let mut delete = Batch::new();
        delete.delete(old.clone()).delete(gone.clone());
        engine.apply_then(delete, versions("delete"));
        let mut detailed = Batch::new();
        detailed.put(old.clone(), "b", WriteOptions::default());
        let replaced = tx.clone();
        engine.apply_detailed_then(detailed, move |r| {
            let _ = replaced.send(("detailed", r.map(|applied| applied[0].replaced)));
        });
        let mut absent = Batch::new();
        absent.expect(gone.clone(), Expect::Absent).put(
            format!("y{round}"),
            "v",
            WriteOptions::default(),
        );
        engine.apply_then(absent, versions("absent"));
        let mut last = Batch::new();
        last.put(old.clone(), "c", WriteOptions::default());
        engine.apply_then(last, versions("last"));
        drop(tx);
        let answers: Vec<_> = rx.iter().collect();
        assert_eq!(answers.len(), 7);
        for (name, result) in answers {
            match result {
                Ok(replaced) => assert!(
                    !replaced,
                    "round {round}, {name}: the delete before it counts"
                ),
                Err(e) => panic!("round {round}, {name}: {e}"),
            }
        }
        let entry = engine.get(old.as_bytes()).unwrap().expect("written");
        assert_eq!(&entry.value[..], b"c");
        assert_eq!(
            &engine.get(new.as_bytes()).unwrap().expect("written").value[..],
            b"a"
        );
        assert!(
            engine
                .get(format!("x{round}").as_bytes())
                .unwrap()
                .is_some()
        );
        assert!(
            engine
                .get(format!("y{round}").as_bytes())
                .unwrap()
                .is_some()
        );
    }
    // The test means something only if batches did share groups: fewer group writes
    // than batches.
    let groups = engine.stats().write_batches - before.write_batches;
    let batches = rounds * 9;
    assert!(
        groups < batches,
        "{groups} groups for {batches} batches: none shared a group"
    );
}

/// Groups that fill up (4 MiB) while more batches are queued: what does not fit is
/// staged by the next group, in order, and a group sealing its segment part-way goes
/// on in the next one. Every put here carries into its meta from the entry it replaces, so
/// a replaced entry read from the wrong place (an earlier group's, a stale lookup)
/// would show: each key's last record must name the version of the put just before
/// it, and every answer must say whether its put replaced anything.
#[test]
fn batches_queued_past_a_full_group_are_staged_in_order_with_their_replaced_entries() {
    use caskade_engine::{Batch, MetaCarry};
    /// A put's meta names the version of the entry it replaced.
    const CARRY_VERSION: MetaCarry = MetaCarry {
        word: |entry| Ok(entry.version),
        write: |version, meta| {
            meta.copy_from_slice(&version.to_le_bytes());
            Ok(())
        },
    };
    const KEYS: usize = 5;
    const PUTS: usize = 160;
    let dir = tempfile::tempdir().unwrap();
    // Segments of 8 MiB: a group also seals one and starts the next now and then.
    let engine = Engine::open(dir.path(), options(8 << 20, SyncPolicy::Always)).unwrap();
    let before = engine.stats();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..PUTS {
        let mut value = vec![b'.'; 64 * 1024];
        value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let mut batch = Batch::new();
        batch
            .put(
                format!("k{}", i % KEYS),
                value,
                WriteOptions {
                    meta: bytes::Bytes::from_static(&[0xff; 8]),
                    ..WriteOptions::default()
                },
            )
            .carry_meta(CARRY_VERSION);
        let tx = tx.clone();
        engine.apply_detailed_then(batch, move |r| {
            let _ = tx.send((i, r));
        });
    }
    drop(tx);
    let answers: Vec<_> = rx.iter().collect();
    assert_eq!(answers.len(), PUTS);
    let mut versions = Vec::new();
    for (at, (i, result)) in answers.into_iter().enumerate() {
        assert_eq!(i, at, "answers come in submission order");
        let applied = result.unwrap_or_else(|e| panic!("put {i}: {e}"));
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].replaced, i >= KEYS, "put {i}: replaced");
        if let Some(&last) = versions.last() {
            assert!(applied[0].version > last, "put {i}: versions increase");
        }
        versions.push(applied[0].version);
    }
    for key in 0..KEYS {
        let entry = engine
            .get(format!("k{key}").as_bytes())
            .unwrap()
            .expect("written");
        let last = PUTS - KEYS + key;
        assert_eq!(&entry.value[..8], &(last as u64).to_le_bytes());
        assert_eq!(entry.version, versions[last]);
        assert_eq!(
            &entry.meta[..],
            &versions[last - KEYS].to_le_bytes(),
            "k{key}: its last put replaced the put before it"
        );
    }
    // 10 MiB of values take several groups, and batches shared them.
    let groups = engine.stats().write_batches - before.write_batches;
    assert!(
        (3..PUTS as u64).contains(&groups),
        "{groups} groups for {PUTS} batches"
    );
}
