//! `Batch::carry_meta` and `Engine::apply_detailed_then`: a put carries part of the
//! entry it replaces into its own meta, and each operation reports whether it replaced
//! a live entry, decided by the writer atomically with the write (no read, no
//! condition on the caller's side). The writer remembers each entry's carried word;
//! the tests here cover both the remembered words and the reads of records written
//! before an open or without the carry.

mod common;

use std::sync::{Arc, Barrier};

use caskade_engine::{Applied, Batch, Engine, Error, MetaCarry, SyncPolicy, WriteOptions};
use common::{ManualClock, options};

/// The test's meta layout: one u64, a counter each carried put sets to its
/// predecessor's plus one.
fn counter(meta: &[u8]) -> u64 {
    u64::from_le_bytes(meta.try_into().expect("8-byte meta"))
}

/// Sets the meta to the word.
fn set(word: u64, meta: &mut [u8]) -> Result<(), &'static str> {
    let meta: &mut [u8; 8] = meta.try_into().map_err(|_| "not 8 bytes")?;
    *meta = word.to_le_bytes();
    Ok(())
}

/// Counts up: an entry passes on its counter plus one.
const COUNT_UP: MetaCarry = MetaCarry {
    word: |entry| {
        let before: [u8; 8] = entry.meta.try_into().map_err(|_| "not 8 bytes")?;
        Ok(u64::from_le_bytes(before) + 1)
    },
    write: set,
};

/// Keeps the creation time: the predecessor's, or its write time when it has none.
const KEEP_CREATED: MetaCarry = MetaCarry {
    word: |entry| {
        let before = counter(entry.meta);
        Ok(if before == 0 {
            entry.written_at_ms
        } else {
            before
        })
    },
    write: set,
};

fn zero_meta(expires_at_ms: Option<u64>) -> WriteOptions {
    WriteOptions {
        expires_at_ms,
        meta: vec![0u8; 8].into(),
    }
}

fn apply_detailed(engine: &Engine, batch: Batch) -> caskade_engine::Result<Vec<Applied>> {
    let (tx, rx) = std::sync::mpsc::channel();
    engine.apply_detailed_then(batch, move |r| {
        let _ = tx.send(r);
    });
    rx.recv().expect("the writer answers")
}

fn carried_put(engine: &Engine, key: &str, carry: MetaCarry) -> Applied {
    let mut batch = Batch::new();
    batch
        .put(key.to_owned(), "v", zero_meta(None))
        .carry_meta(carry);
    apply_detailed(engine, batch).expect("put")[0]
}

#[test]
fn a_put_keeps_what_its_carry_takes_from_the_entry_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let engine = Engine::open(
        dir.path(),
        caskade_engine::Options {
            clock: clock.clone(),
            ..options(1 << 20, SyncPolicy::Never)
        },
    )
    .unwrap();
    let first = carried_put(&engine, "k", KEEP_CREATED);
    assert!(
        !first.replaced,
        "nothing to replace: the meta stays as given"
    );
    assert_eq!(counter(&engine.get(b"k").unwrap().unwrap().meta), 0);
    clock.advance(5_000);
    let second = carried_put(&engine, "k", KEEP_CREATED);
    assert!(second.replaced);
    assert!(second.version > first.version);
    assert_eq!(
        counter(&engine.get(b"k").unwrap().unwrap().meta),
        1_000_000,
        "the first write's time, from its record"
    );
    clock.advance(5_000);
    carried_put(&engine, "k", KEEP_CREATED);
    assert_eq!(counter(&engine.get(b"k").unwrap().unwrap().meta), 1_000_000);

    // A deleted key and an expired one have nothing to carry over.
    engine.delete("k").unwrap();
    assert!(!carried_put(&engine, "k", KEEP_CREATED).replaced);
    assert_eq!(counter(&engine.get(b"k").unwrap().unwrap().meta), 0);
    engine.put("e", "v", zero_meta(Some(1_020_000))).unwrap();
    clock.advance(20_000);
    assert!(!carried_put(&engine, "e", KEEP_CREATED).replaced);
    assert_eq!(counter(&engine.get(b"e").unwrap().unwrap().meta), 0);
}

#[test]
fn operations_of_one_batch_see_the_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open(dir.path(), 1 << 20);
    engine.put("a", "v", zero_meta(None)).unwrap();
    let mut batch = Batch::new();
    batch
        .put("a", "1", zero_meta(None))
        .put("b", "1", zero_meta(None))
        .put("b", "2", zero_meta(None))
        .delete("b")
        .delete("b")
        .put("a", "2", zero_meta(None))
        .carry_meta(COUNT_UP);
    let applied = apply_detailed(&engine, batch).unwrap();
    let replaced: Vec<bool> = applied.iter().map(|a| a.replaced).collect();
    assert_eq!(replaced, [true, false, true, true, false, true]);
    assert!(applied.windows(2).all(|w| w[0].version < w[1].version));
    assert_eq!(counter(&engine.get(b"a").unwrap().unwrap().meta), 2);
    assert!(engine.get(b"b").unwrap().is_none());
}

#[test]
fn a_failing_carry_fails_its_batch_alone_and_writes_nothing_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open(dir.path(), 1 << 20);
    // A predecessor whose meta the carry refuses (not 8 bytes).
    engine
        .put(
            "bad",
            "old",
            WriteOptions {
                expires_at_ms: None,
                meta: vec![1u8; 3].into(),
            },
        )
        .unwrap();
    let mut batch = Batch::new();
    batch
        .put("fresh", "new", zero_meta(None))
        .put("bad", "new", zero_meta(None))
        .carry_meta(COUNT_UP);
    let err = apply_detailed(&engine, batch).expect_err("the carry refuses");
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(engine.get(b"fresh").unwrap().is_none());
    assert_eq!(&engine.get(b"bad").unwrap().unwrap().value[..], b"old");
    // The writer goes on: the next batches are written, with their versions after
    // the last one handed out.
    let before = engine.stats().last_version;
    let ok = carried_put(&engine, "fresh", COUNT_UP);
    assert!(!ok.replaced);
    assert_eq!(ok.version, before + 1);
    assert_eq!(counter(&engine.get(b"fresh").unwrap().unwrap().meta), 0);
    drop(engine);
    // And the refused batch left no record on disk.
    let engine = common::open(dir.path(), 1 << 20);
    assert!(engine.get(b"fresh").unwrap().is_some());
    assert_eq!(&engine.get(b"bad").unwrap().unwrap().value[..], b"old");
}

/// Many threads put the same keys with a carry at once under `always`: batches share groups
/// (the predecessor is then still in the group buffer), segments rotate (sealed,
/// mapped predecessors), and no update is lost: each key's counter ends at the
/// number of writes minus one, and exactly one write per key replaced nothing.
#[test]
fn concurrent_carried_puts_lose_no_update_across_groups_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(16 * 1024, SyncPolicy::Always)).unwrap();
    const THREADS: usize = 8;
    const ROUNDS: usize = 40;
    const KEYS: usize = 4;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let engine = engine.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut created = 0;
                for _ in 0..ROUNDS {
                    let mut batch = Batch::new();
                    for k in 0..KEYS {
                        batch.put(format!("k{k}"), vec![7u8; 200], zero_meta(None));
                    }
                    batch.carry_meta(COUNT_UP);
                    let applied = apply_detailed(&engine, batch).expect("apply");
                    created += applied.iter().filter(|a| !a.replaced).count();
                }
                created
            })
        })
        .collect();
    let created: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(created, KEYS);
    let writes = (THREADS * ROUNDS) as u64;
    for k in 0..KEYS {
        let entry = engine.get(format!("k{k}").as_bytes()).unwrap().unwrap();
        assert_eq!(counter(&entry.meta), writes - 1, "k{k}");
    }
    assert!(
        common::segment_files(dir.path()).len() > 2,
        "segments rotated"
    );
    assert!(
        engine.stats().fsyncs < writes,
        "batches shared fsyncs ({} for {writes})",
        engine.stats().fsyncs
    );
    drop(engine);
    // After a reopen the predecessor comes from a recovered segment.
    let engine = common::open(dir.path(), 16 * 1024);
    assert!(carried_put(&engine, "k0", COUNT_UP).replaced);
    assert_eq!(counter(&engine.get(b"k0").unwrap().unwrap().meta), writes);
}

/// A stored predecessor whose bytes fail their CRC is never used: the carried put
/// fails with the same corruption a read of the key gets, naming the damaged
/// record's own segment and offset, and writes nothing.
#[test]
fn a_damaged_predecessor_fails_the_carried_put_with_its_own_file_and_offset() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open(dir.path(), 1 << 20);
    engine.put("first", "x", zero_meta(None)).unwrap();
    let segment = common::segment_files(dir.path())
        .pop()
        .expect("a segment file");
    // The next record starts where the written bytes end now (the file goes on with
    // the zeros the writer reserved ahead).
    let record_at = common::written_len(&segment);
    engine
        .put(
            "bad",
            "old",
            WriteOptions {
                expires_at_ms: None,
                meta: vec![0x5a; 8].into(),
            },
        )
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let meta_at = bytes
        .windows(8)
        .position(|w| w == [0x5a; 8])
        .expect("the meta on disk");
    assert!(meta_at as u64 > record_at);
    // One bit of the stored created-at field flips: the meta still has its length,
    // so only the CRC tells the damage.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.write_all_at(&[0x5a ^ 0x10], meta_at as u64 + 3)
        .unwrap();
    drop(file);
    let read = engine.get(b"bad").expect_err("a read sees the damage");
    assert!(matches!(read, Error::Corrupt { .. }), "{read:?}");
    let before = engine.stats().last_version;
    let mut batch = Batch::new();
    batch
        .put("fresh", "new", zero_meta(None))
        .put("bad", "new", zero_meta(None))
        .carry_meta(KEEP_CREATED);
    match apply_detailed(&engine, batch).expect_err("the damage is seen") {
        Error::Corrupt {
            file,
            offset,
            reason,
        } => {
            assert_eq!(file, segment, "the damaged record's own segment");
            assert_eq!(offset, record_at, "the damaged record's own offset");
            assert!(reason.contains("crc"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(engine.get(b"fresh").unwrap().is_none(), "nothing written");
    assert_eq!(engine.stats().last_version, before);
}

/// The writer reads a predecessor from a sealed (mapped) segment too: corruption
/// there names that segment, not the active one.
#[test]
fn a_failing_carry_over_a_sealed_segment_names_that_segment() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open(dir.path(), 4 * 1024);
    engine
        .put(
            "bad",
            "old",
            WriteOptions {
                expires_at_ms: None,
                meta: vec![1u8; 3].into(),
            },
        )
        .unwrap();
    let sealed = common::segment_files(dir.path()).remove(0);
    for i in 0..20 {
        engine
            .put(format!("fill{i}"), vec![0u8; 512], zero_meta(None))
            .unwrap();
    }
    assert!(common::segment_files(dir.path()).len() > 1, "rotated");
    let mut batch = Batch::new();
    batch
        .put("bad", "new", zero_meta(None))
        .carry_meta(COUNT_UP);
    match apply_detailed(&engine, batch).expect_err("the carry refuses") {
        Error::Corrupt { file, offset, .. } => {
            assert_eq!(file, sealed);
            assert!(offset > 0, "the record's offset, not the file's start");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// A batch whose carry fails is taken back out of a group it shares with others:
/// the batches around it are written whole, with their own versions.
#[test]
fn a_failed_carry_leaves_its_group_mates_intact() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(1 << 20, SyncPolicy::Always)).unwrap();
    engine
        .put(
            "bad",
            "old",
            WriteOptions {
                expires_at_ms: None,
                meta: vec![1u8; 3].into(),
            },
        )
        .unwrap();
    for round in 0..5 {
        engine
            .put(format!("k{round}"), "0", zero_meta(None))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Sent back to back: while the writer syncs the first, the rest queue up
        // and share the next group.
        for i in 0..6 {
            let mut batch = Batch::new();
            if i == 3 {
                // Counts up on the shared key first, then fails: the count-up is
                // taken back with it, and the batches after it carry from the one
                // before it.
                batch.put(format!("k{round}"), "v", zero_meta(None)).put(
                    "bad",
                    "new",
                    zero_meta(None),
                );
            } else {
                batch.put(format!("k{round}"), "v", zero_meta(None)).put(
                    format!("r{round}-{i}"),
                    "v",
                    zero_meta(None),
                );
            }
            batch.carry_meta(COUNT_UP);
            let tx = tx.clone();
            engine.apply_detailed_then(batch, move |r| {
                let _ = tx.send((i, r));
            });
        }
        drop(tx);
        let mut answers: Vec<_> = rx.iter().collect();
        answers.sort_by_key(|(i, _)| *i);
        assert_eq!(answers.len(), 6);
        for (i, result) in answers {
            if i == 3 {
                assert!(matches!(result, Err(Error::Corrupt { .. })), "{result:?}");
                continue;
            }
            let applied = result.expect("a group-mate is written");
            assert!(applied[0].replaced && !applied[1].replaced);
            assert!(applied[0].version < applied[1].version);
            let entry = engine.get(format!("r{round}-{i}").as_bytes()).unwrap();
            assert_eq!(entry.expect("written").version, applied[1].version);
        }
        // Every good batch counted up once on the shared key: no write lost, none
        // doubled by the taken-back one.
        let entry = engine.get(format!("k{round}").as_bytes()).unwrap().unwrap();
        assert_eq!(counter(&entry.meta), 5);
        assert_eq!(&engine.get(b"bad").unwrap().unwrap().value[..], b"old");
    }
    drop(engine);
    // The taken-back batches left nothing on disk: the store reopens with every
    // good write.
    let engine = common::open(dir.path(), 1 << 20);
    assert_eq!(counter(&engine.get(b"k4").unwrap().unwrap().meta), 5);
    assert_eq!(&engine.get(b"bad").unwrap().unwrap().value[..], b"old");
}

/// A store of 8 KiB segments holding keys `k0`…, each a 100-byte value with a zero meta.
fn small_segments_with_keys(dir: &std::path::Path, keys: usize) -> Engine {
    let engine = common::open(dir, 8 * 1024);
    for k in 0..keys {
        engine
            .put(format!("k{k}"), vec![1u8; 100], zero_meta(None))
            .unwrap();
    }
    engine
}

/// Compaction retires the segments the writer reads predecessors from while carried
/// puts go on: every carry still sees its key's latest entry (its copy in the new
/// segment, or the old one before the switch), so no update is lost or doubled and
/// no write fails.
#[test]
fn carried_puts_read_their_predecessors_while_compaction_moves_them() {
    const WRITERS: usize = 2;
    const KEYS: usize = 60;
    const COMPACTIONS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let engine = small_segments_with_keys(dir.path(), KEYS);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let engine = engine.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                // At least a few rounds, and on until compaction has finished.
                while rounds < 5 || !done.load(std::sync::atomic::Ordering::Acquire) {
                    for k in (w..KEYS).step_by(WRITERS) {
                        let mut batch = Batch::new();
                        batch
                            .put(format!("k{k}"), vec![2u8; 100], zero_meta(None))
                            .carry_meta(COUNT_UP);
                        let applied = apply_detailed(&engine, batch).expect("carried put");
                        assert!(applied[0].replaced, "k{k}");
                    }
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let mut moved = 0;
    for _ in 0..COMPACTIONS {
        moved += engine.compact().expect("compaction").records_kept;
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let rounds: Vec<u64> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(moved > 0, "compaction moved live records");
    for k in 0..KEYS {
        let entry = engine.get(format!("k{k}").as_bytes()).unwrap().unwrap();
        assert_eq!(counter(&entry.meta), rounds[k % WRITERS], "k{k}");
    }
}

/// A batch large enough that the writer reads its keys' entries together before it
/// encodes (`Writer::look_up_batch`): each operation must still see the ones before it
/// in the batch, not what the index held when the batch came in.
#[test]
fn operations_of_a_large_batch_see_the_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open(dir.path(), 1 << 20);
    for k in 0..100 {
        engine.put(format!("k{k}"), "v", zero_meta(None)).unwrap();
    }
    // The model: the counter each key holds, `None` when absent.
    let mut model: Vec<Option<u64>> = vec![Some(0); 100];
    model.extend(vec![None; 100]);
    let mut batch = Batch::new();
    let mut expected = Vec::new();
    for step in 0..300u64 {
        // Keys 0..200 in a scrambled order, many of them more than once.
        let k = ((step * 37) % 200) as usize;
        if step % 5 == 4 {
            batch.delete(format!("k{k}"));
            expected.push(model[k].is_some());
            model[k] = None;
        } else {
            batch.put(format!("k{k}"), "w", zero_meta(None));
            expected.push(model[k].is_some());
            model[k] = Some(model[k].map_or(0, |c| c + 1));
        }
    }
    batch.carry_meta(COUNT_UP);
    let applied = apply_detailed(&engine, batch).unwrap();
    let replaced: Vec<bool> = applied.iter().map(|a| a.replaced).collect();
    assert_eq!(replaced, expected);
    for (k, want) in model.iter().enumerate() {
        let got = engine.get(format!("k{k}").as_bytes()).unwrap();
        assert_eq!(got.map(|e| counter(&e.meta)), *want, "k{k}");
    }
}

/// As `carried_puts_read_their_predecessors_while_compaction_moves_them`, with every
/// batch large: the entries the writer reads for a whole batch before encoding it may
/// point into a segment that compaction retires before the batch's operation gets there.
#[test]
fn large_carried_batches_read_their_predecessors_while_compaction_moves_them() {
    const WRITERS: usize = 2;
    const KEYS: usize = 120;
    const ROUNDS: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let engine = small_segments_with_keys(dir.path(), KEYS);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    // Half of the writer's keys per batch, the halves taking turns, so
                    // a batch's predecessors sit in older segments.
                    let mut batch = Batch::new();
                    for k in (w..KEYS)
                        .step_by(WRITERS)
                        .filter(|k| (k / WRITERS) as u64 % 2 == round % 2)
                    {
                        batch.put(format!("k{k}"), vec![2u8; 100], zero_meta(None));
                    }
                    batch.carry_meta(COUNT_UP);
                    let applied = apply_detailed(&engine, batch).expect("carried batch");
                    assert!(applied.iter().all(|a| a.replaced), "writer {w}");
                }
            })
        })
        .collect();
    let mut moved = 0;
    let mut compactions = 0;
    // Until both writers are done (or one failed: the join below reports it).
    while compactions < 3 || writers.iter().any(|w| !w.is_finished()) {
        moved += engine.compact().expect("compaction").records_kept;
        compactions += 1;
    }
    for writer in writers {
        writer.join().unwrap();
    }
    assert!(moved > 0, "compaction moved live records");
    for k in 0..KEYS {
        // Each half of a writer's keys was written in ROUNDS / 2 rounds.
        let entry = engine.get(format!("k{k}").as_bytes()).unwrap().unwrap();
        assert_eq!(counter(&entry.meta), ROUNDS / 2, "k{k}");
    }
}

/// Counts up as [`COUNT_UP`] does, counting the calls of its `word` in `WORD_CALLS`
/// (for the one test that uses it).
static WORD_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const COUNTED: MetaCarry = MetaCarry {
    word: |entry| {
        WORD_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (COUNT_UP.word)(entry)
    },
    write: set,
};

/// The writer remembers the word of each record it writes with the store's carry:
/// a put replacing such a record asks `word` only of its own new record, never of the
/// one it replaces (no read of it). After a reopen the words are gone: the first put
/// of each key reads its predecessor again (two calls), the next ones do not.
#[test]
fn a_remembered_word_spares_the_read_of_the_replaced_record_until_a_reopen() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open(dir.path(), 1 << 20);
    let calls = || WORD_CALLS.load(Ordering::Relaxed);
    carried_put(&engine, "k", COUNTED);
    assert_eq!(calls(), 1, "a create: only its own record's word");
    for n in 1..=5 {
        carried_put(&engine, "k", COUNTED);
        assert_eq!(calls(), 1 + n, "put {n} did not read its predecessor");
    }
    assert_eq!(counter(&engine.get(b"k").unwrap().unwrap().meta), 5);
    drop(engine);
    let engine = common::open(dir.path(), 1 << 20);
    carried_put(&engine, "k", COUNTED);
    assert_eq!(calls(), 8, "after a reopen the predecessor is read");
    carried_put(&engine, "k", COUNTED);
    assert_eq!(calls(), 9, "and its successor's word is remembered again");
    assert_eq!(counter(&engine.get(b"k").unwrap().unwrap().meta), 7);
}

/// A remembered word never outlives its record: a write of the key without the carry
/// (a plain put, a delete, an expiry, another carry) leaves the next carried put to
/// read what that write stored.
#[test]
fn a_remembered_word_is_forgotten_by_any_other_write_of_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let engine = Engine::open(
        dir.path(),
        caskade_engine::Options {
            clock: clock.clone(),
            ..options(1 << 20, SyncPolicy::Never)
        },
    )
    .unwrap();
    let counted = |n: u64| WriteOptions {
        expires_at_ms: None,
        meta: n.to_le_bytes().to_vec().into(),
    };
    carried_put(&engine, "k", COUNT_UP);
    carried_put(&engine, "k", COUNT_UP);
    assert_eq!(counter(&engine.get(b"k").unwrap().unwrap().meta), 1);
    // A plain put: its own meta, nothing remembered.
    engine.put("k", "v", counted(100)).unwrap();
    carried_put(&engine, "k", COUNT_UP);
    assert_eq!(counter(&engine.get(b"k").unwrap().unwrap().meta), 101);
    // A batch with another carry: its own rule, and the store's carry reads its
    // record afterwards.
    const TIMES_TEN: MetaCarry = MetaCarry {
        word: |entry| Ok(counter(entry.meta) * 10),
        write: set,
    };
    carried_put(&engine, "k", TIMES_TEN);
    assert_eq!(counter(&engine.get(b"k").unwrap().unwrap().meta), 1_010);
    carried_put(&engine, "k", COUNT_UP);
    assert_eq!(counter(&engine.get(b"k").unwrap().unwrap().meta), 1_011);
    // A delete, then a create in the slot the key may get back.
    engine.delete("k").unwrap();
    assert!(!carried_put(&engine, "k", COUNT_UP).replaced);
    assert_eq!(counter(&engine.get(b"k").unwrap().unwrap().meta), 0);
    // An expired entry passes nothing on.
    let mut batch = Batch::new();
    batch
        .put(
            "k",
            "v",
            WriteOptions {
                expires_at_ms: Some(2_000),
                meta: 50u64.to_le_bytes().to_vec().into(),
            },
        )
        .carry_meta(COUNT_UP);
    apply_detailed(&engine, batch).unwrap();
    assert_eq!(counter(&engine.get(b"k").unwrap().unwrap().meta), 1);
    clock.advance(1_000);
    assert!(!carried_put(&engine, "k", COUNT_UP).replaced);
    assert_eq!(counter(&engine.get(b"k").unwrap().unwrap().meta), 0);
    // Many keys created and removed: reused slots start with nothing remembered.
    for round in 0..3u64 {
        for i in 0..200 {
            engine
                .put(format!("r{i}"), "v", counted(round * 1_000 + i))
                .unwrap();
            carried_put(&engine, &format!("r{i}"), COUNT_UP);
        }
        for i in 0..200u64 {
            let meta = engine
                .get(format!("r{i}").as_bytes())
                .unwrap()
                .unwrap()
                .meta;
            assert_eq!(counter(&meta), round * 1_000 + i + 1, "r{i}");
            engine.delete(format!("r{i}")).unwrap();
        }
        // Counting merges the key order, which frees the removed keys' slots.
        assert_eq!(engine.count_prefix(b"r"), 0);
    }
}
