//! Crash recovery: torn tails, corruption in sealed segments, the folder lock.

mod common;

use caskade_engine::{Batch, Engine, Error, Options, WriteOptions};
use common::{open, segment_files};

fn wo() -> WriteOptions {
    WriteOptions::default()
}

#[test]
fn a_torn_last_record_or_batch_is_cut_at_every_offset_and_nothing_of_it_is_visible() {
    let master = tempfile::tempdir().unwrap();
    let engine = open(master.path(), 1 << 20);
    engine.put(&b"k1"[..], &b"v1"[..], wo()).unwrap();
    engine.put(&b"k2"[..], &b"v2"[..], wo()).unwrap();
    let before_batch = std::fs::metadata(&segment_files(master.path())[0])
        .unwrap()
        .len();
    let mut batch = Batch::new();
    batch.put(&b"k1"[..], &b"batch-1"[..], wo());
    batch.delete(&b"k2"[..]);
    batch.put(&b"k3"[..], &b"batch-3"[..], wo());
    engine.apply(batch).unwrap();
    engine.close().unwrap();
    let seg = segment_files(master.path())[0].clone();
    let full = std::fs::read(&seg).unwrap();

    for cut in before_batch..full.len() as u64 {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(seg.file_name().unwrap());
        std::fs::write(&copy, &full[..cut as usize]).unwrap();
        let engine = Engine::open(dir.path(), Options::default()).unwrap();
        assert_eq!(
            &engine.get(b"k1").unwrap().unwrap().value[..],
            b"v1",
            "cut {cut}"
        );
        assert_eq!(
            &engine.get(b"k2").unwrap().unwrap().value[..],
            b"v2",
            "cut {cut}"
        );
        assert!(engine.get(b"k3").unwrap().is_none(), "cut {cut}");
        assert_eq!(engine.stats().recovered_truncated_bytes, cut - before_batch);
        // The store goes on: the next write lands after the cut and survives reopen.
        engine.put(&b"k4"[..], &b"after"[..], wo()).unwrap();
        engine.close().unwrap();
        let engine = Engine::open(dir.path(), Options::default()).unwrap();
        assert_eq!(&engine.get(b"k4").unwrap().unwrap().value[..], b"after");
        assert_eq!(engine.stats().recovered_truncated_bytes, 0);
    }
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_a_typed_corruption_error() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), 4096);
    for i in 0..100u32 {
        engine
            .put(format!("key-{i}").into_bytes(), vec![7u8; 100], wo())
            .unwrap();
    }
    engine.close().unwrap();
    let files = segment_files(dir.path());
    assert!(files.len() > 2, "need sealed segments");
    let sealed = &files[0];
    let mut bytes = std::fs::read(sealed).unwrap();
    let offset = 32 + 60;
    bytes[offset] ^= 0x01;
    std::fs::write(sealed, &bytes).unwrap();
    match Engine::open(dir.path(), Options::default()) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(&file, sealed);
            assert_eq!(
                offset, 32,
                "the damaged record starts right after the header"
            );
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn a_second_open_of_the_same_folder_fails_with_the_lock_error() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), 1 << 20);
    match Engine::open(dir.path(), Options::default()) {
        Err(Error::Locked { dir: locked }) => assert_eq!(locked, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(engine);
    Engine::open(dir.path(), Options::default()).expect("the lock is released on drop");
}

#[test]
fn versions_keep_growing_across_restarts_even_when_the_newest_records_are_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), 1 << 20);
    engine.put(&b"a"[..], &b"1"[..], wo()).unwrap();
    let last = engine.delete(&b"a"[..]).unwrap();
    engine.close().unwrap();
    let engine = open(dir.path(), 1 << 20);
    let next = engine.put(&b"b"[..], &b"2"[..], wo()).unwrap();
    assert!(next > last, "{next} must be > {last}");
}

/// Found while writing the `recover_dir` fuzz target (lying hints are one of its
/// inputs), by reading the code: a hint file whose CRCs check but whose entries point
/// at other keys' records made `get` hand out another key's value (and
/// trip a debug assertion). Such a record is now a typed corruption error, in gets
/// and in lists, and the keys the hint describes truthfully still read.
#[test]
fn a_hint_that_checks_but_points_at_another_keys_record_is_a_corruption_error() {
    use caskade_engine::fuzzing::{HintEntry, decode_record, encode_hint, file_names};

    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), 4096);
    for i in 0..100u32 {
        engine
            .put(
                format!("key-{i:03}").into_bytes(),
                format!("value-{i:03}{}", ".".repeat(100)),
                wo(),
            )
            .unwrap();
    }
    engine.close().unwrap();
    let files = segment_files(dir.path());
    assert!(files.len() > 2, "need sealed segments");
    // The true hint of segment 1, then with the first two entries' records swapped.
    let seg = std::fs::read(&files[0]).unwrap();
    let mut entries = Vec::new();
    let mut pos = 32;
    while pos < seg.len() {
        let rec = decode_record(&seg[pos..]).unwrap();
        entries.push(HintEntry {
            tombstone: false,
            seq: rec.seq,
            expires_at_ms: 0,
            offset: pos as u32,
            len: rec.len as u32,
            key: rec.key.to_vec(),
        });
        pos += rec.len;
    }
    let (first, second) = (entries[0].key.clone(), entries[1].key.clone());
    entries[0].key = second.clone();
    entries[0].seq = entries[1].seq;
    entries[1].key = first.clone();
    entries[1].seq = entries[0].seq - 1;
    let hint = encode_hint(1, seg.len() as u64, &entries).expect("the swapped entries encode");
    std::fs::write(dir.path().join(file_names(1).1), hint).unwrap();

    let engine = open(dir.path(), 4096);
    assert!(engine.stats().hints_loaded >= 1, "the lying hint was used");
    for key in [&first, &second] {
        match engine.get(key) {
            Err(Error::Corrupt { file, .. }) => assert_eq!(file, files[0]),
            other => panic!("get {key:?}: expected a corruption error, got {other:?}"),
        }
    }
    assert!(
        matches!(engine.list(b"key-00", None, 10), Err(Error::Corrupt { .. })),
        "a list over the lying entries is a corruption error too"
    );
    let third = engine
        .get(&entries[2].key)
        .unwrap()
        .expect("a true entry reads");
    assert!(third.value.starts_with(b"value-002."));
}

/// Found by the `recover_dir` fuzz target: a compaction manifest holding bytes that are
/// not UTF-8 failed open with an I/O error ("stream did not contain valid UTF-8")
/// instead of the corruption error that names the damaged file.
#[test]
fn a_manifest_that_is_not_text_is_a_corruption_error() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), 4096).close().unwrap();
    let manifest = dir.path().join("COMPACTION");
    std::fs::write(&manifest, b"caskade compaction 1\n\xff\xfe\n").unwrap();
    match Engine::open(dir.path(), Options::default()) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, manifest),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

/// A manifest whose checksum does not match names segments that may be live (one
/// flipped digit turns an input's id into a live segment's): open refuses the folder
/// and deletes nothing.
#[test]
fn a_manifest_that_does_not_check_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), 4096);
    engine.put(&b"k"[..], &b"v"[..], wo()).unwrap();
    engine.close().unwrap();
    let before = segment_files(dir.path());
    let live: u32 = before[0]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("a segment id");
    let manifest = dir.path().join("COMPACTION");
    // The checksum of a manifest naming no live segment, its id then "changed".
    let crc = crc32fast::hash(format!("caskade compaction 2\n{}\n", live + 1).as_bytes());
    let text = format!("caskade compaction 2\n{live}\ncrc32 {crc:08x}\n");
    std::fs::write(&manifest, text).unwrap();
    match Engine::open(dir.path(), Options::default()) {
        Err(Error::Corrupt { file, reason, .. }) => {
            assert_eq!(file, manifest);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    assert_eq!(segment_files(dir.path()), before, "a segment was deleted");
}

/// Found by the `recover_dir` fuzz target: a segment whose header or records claim a
/// version near `u64::MAX` opened, and the next write overflowed the version counter
/// (a panic on the writer thread with overflow checks, wrapped versions without).
/// Versions are below 2^63 now; a larger one is damage that open reports, and a store
/// at the limit refuses writes instead of writing records it could not read back.
#[test]
fn versions_near_the_top_of_u64_are_damage_and_never_overflow() {
    use caskade_engine::fuzzing::{encode_record, encode_segment_header, file_names};

    let write_store = |base_seq: u64, record_seq: Option<u64>| {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = encode_segment_header(1, base_seq, false).to_vec();
        if let Some(seq) = record_seq {
            encode_record(2, seq, 1, 0, b"k", b"", b"v", &mut seg);
        }
        std::fs::write(dir.path().join(file_names(1).0), seg).unwrap();
        dir
    };
    // A sealed (compacted) segment with an impossible version is a corruption error.
    let dir = tempfile::tempdir().unwrap();
    let mut seg = encode_segment_header(1, 1, true).to_vec();
    encode_record(2, u64::MAX, 1, 0, b"k", b"", b"v", &mut seg);
    std::fs::write(dir.path().join(file_names(1).0), seg).unwrap();
    assert!(matches!(
        Engine::open(dir.path(), Options::default()),
        Err(Error::Corrupt { .. })
    ));
    // So is a segment header with an impossible base version.
    let dir = write_store(u64::MAX, None);
    assert!(matches!(
        Engine::open(dir.path(), Options::default()),
        Err(Error::Corrupt { .. })
    ));
    // The highest possible version opens; the store then refuses writes, and what it
    // holds stays readable across a reopen.
    let dir = write_store(1, Some((1 << 63) - 1));
    let engine = open(dir.path(), 4096);
    assert_eq!(engine.stats().last_version, (1 << 63) - 1);
    assert!(matches!(
        engine.put(&b"k2"[..], &b"v"[..], wo()),
        Err(Error::Closed(_))
    ));
    engine.close().unwrap();
    let engine = open(dir.path(), 4096);
    let entry = engine
        .get(b"k")
        .unwrap()
        .expect("the old record is still there");
    assert_eq!(&entry.value[..], b"v");
}
