//! The on-disk format is pinned by checked-in golden segments: today's build must read
//! them, and must write exactly the bytes of the current one for the same operations.
//! A change here is a format change — bump the version and keep reading the old one,
//! don't re-bless. (`CASKADE_BLESS=1 cargo test -p caskade-engine --test format`
//! writes the current one anew.)
//!
//! - `golden/v2/0000000001.seg`: record format version 2, written by this build.
//! - `golden/v1/0000000001.seg`: segment format 1 with record format version 1, written
//!   by the builds before it: a store upgraded in place must open, read, take writes
//!   (in a new, version 2 segment, so an older build refuses the folder instead of
//!   cutting records it cannot read) and compact everything into version 2.

mod common;

use std::path::Path;

use caskade_engine::fuzzing::decode_record;
use caskade_engine::{Batch, Engine, Options, SyncPolicy, WriteOptions};
use common::ManualClock;

const GOLDEN_V2: &str = "tests/golden/v2/0000000001.seg";
const GOLDEN_V1: &str = "tests/golden/v1/0000000001.seg";

fn write_known_ops(dir: &Path) {
    let clock = ManualClock::new(1_764_148_483_000);
    let options = Options {
        clock: clock.clone(),
        sync: SyncPolicy::Never,
        ..Options::default()
    };
    let engine = Engine::open(dir, options).unwrap();
    engine
        .put(
            "user/alice",
            r#"{"a":1}"#,
            WriteOptions {
                expires_at_ms: None,
                meta: "m1".into(),
            },
        )
        .unwrap();
    clock.advance(1000);
    engine
        .put(
            "event/e1",
            "hello",
            WriteOptions {
                expires_at_ms: Some(1_764_152_084_000),
                meta: "".into(),
            },
        )
        .unwrap();
    let mut batch = Batch::new();
    batch.put("user/bob", vec![0u8, 1, 2, 255], WriteOptions::default());
    batch.delete("user/alice");
    engine.apply(batch).unwrap();
    engine.close().unwrap();
}

fn golden(path: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect("golden file")
}

/// The segment format version in a segment's header.
fn segment_format(seg: &[u8]) -> u32 {
    u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]])
}

/// The record format version of every record of a segment's bytes.
fn record_versions(seg: &[u8]) -> Vec<u8> {
    let mut pos = 32;
    let mut out = Vec::new();
    while pos < seg.len() {
        let rec = decode_record(&seg[pos..]).expect("every record checks");
        out.push(rec.version);
        pos += rec.len;
    }
    out
}

/// Opens a folder holding only `golden` as segment 1.
fn open_golden(golden: &[u8]) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("0000000001.seg"), golden).unwrap();
    let engine = reopen(dir.path());
    (dir, engine)
}

/// Opens `dir` with the clock shortly after the golden writes (before e1 expires).
fn reopen(dir: &Path) -> Engine {
    let options = Options {
        clock: ManualClock::new(1_764_148_490_000),
        ..Options::default()
    };
    Engine::open(dir, options).unwrap()
}

/// What `write_known_ops` leaves, as read back.
fn assert_known_contents(engine: &Engine) {
    assert!(
        engine.get(b"user/alice").unwrap().is_none(),
        "deleted in the batch"
    );
    let bob = engine.get(b"user/bob").unwrap().unwrap();
    assert_eq!(&bob.value[..], &[0, 1, 2, 255]);
    assert_eq!(bob.version, 3);
    assert_eq!(bob.written_at_ms, 1_764_148_484_000);
    assert_eq!(bob.expires_at_ms, None);
    let e1 = engine.get(b"event/e1").unwrap().unwrap();
    assert_eq!(&e1.value[..], b"hello");
    assert_eq!(e1.expires_at_ms, Some(1_764_152_084_000));
    assert_eq!(e1.written_at_ms, 1_764_148_484_000);
    assert_eq!(e1.version, 2);
    let listed = engine.list(b"", None, 2).unwrap();
    let keys: Vec<&[u8]> = listed.iter().map(|i| &i.key[..]).collect();
    assert_eq!(keys, [&b"event/e1"[..], b"user/bob"]);
    assert_eq!(listed[0].value_len, 5);
    assert_eq!(listed[0].expires_at_ms, Some(1_764_152_084_000));
}

#[test]
fn the_golden_segment_decodes_and_todays_writer_produces_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    write_known_ops(dir.path());
    let written = std::fs::read(dir.path().join("0000000001.seg")).unwrap();
    if std::env::var_os("CASKADE_BLESS").is_some() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN_V2);
        std::fs::write(path, &written).unwrap();
    }
    let golden = golden(GOLDEN_V2);
    assert_eq!(written, golden, "the segment format changed");
    assert_eq!(segment_format(&golden), 2);
    assert_eq!(record_versions(&golden), [2, 2, 2, 2]);

    let (_dir, engine) = open_golden(&golden);
    assert_known_contents(&engine);
    assert_eq!(engine.stats().last_version, 4);
}

#[test]
fn a_version_1_store_opens_takes_writes_and_compacts_into_version_2() {
    let v1 = golden(GOLDEN_V1);
    assert_eq!(segment_format(&v1), 1);
    assert_eq!(record_versions(&v1), [1, 1, 1, 1]);
    assert!(v1.len() > golden(GOLDEN_V2).len(), "version 2 is smaller");
    let (dir, engine) = open_golden(&v1);
    assert_known_contents(&engine);
    assert_eq!(engine.stats().last_version, 4);

    // The old active segment stays as it was (sealed); new writes go to a new segment
    // of format 2.
    engine
        .put("user/carol", "c", WriteOptions::default())
        .unwrap();
    engine.close().unwrap();
    let seg1 = std::fs::read(dir.path().join("0000000001.seg")).unwrap();
    assert_eq!(seg1, v1, "the version 1 segment is untouched");
    let seg2 = std::fs::read(dir.path().join("0000000002.seg")).unwrap();
    assert_eq!(segment_format(&seg2), 2);
    assert_eq!(record_versions(&seg2), [2]);
    let engine = reopen(dir.path());
    assert_known_contents(&engine);
    assert_eq!(&engine.get(b"user/carol").unwrap().unwrap().value[..], b"c");

    // Compaction rewrites every live record in version 2, keeping what it holds.
    engine.compact().unwrap();
    assert_known_contents(&engine);
    engine.close().unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(!segments.iter().any(|p| p.ends_with("0000000001.seg")));
    for path in &segments {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(segment_format(&bytes), 2, "{path:?}");
        let versions = record_versions(&bytes);
        assert!(versions.iter().all(|&v| v == 2), "{path:?}: {versions:?}");
    }
    let engine = reopen(dir.path());
    assert_known_contents(&engine);
    assert_eq!(engine.get(b"user/carol").unwrap().unwrap().version, 5);
    engine.close().unwrap();
}

#[test]
fn a_torn_tail_of_a_version_1_active_segment_is_cut_before_it_is_sealed() {
    let v1 = golden(GOLDEN_V1);
    let mut whole = v1.clone();
    caskade_engine::fuzzing::encode_record_v1(2, 5, 1, 0, b"user/dave", b"", b"dddd", &mut whole);
    let record_len = whole.len() - v1.len();
    // Half of a version 1 record, as a crash of the older build leaves it: cut inside
    // its 44-byte header, or inside its value (the header announces bytes not there).
    for torn_len in [30, record_len - 3] {
        let torn = &whole[..v1.len() + torn_len];
        let (dir, engine) = open_golden(torn);
        assert_eq!(
            engine.stats().recovered_truncated_bytes,
            torn_len as u64,
            "cut after {torn_len} bytes"
        );
        assert_known_contents(&engine);
        assert!(engine.get(b"user/dave").unwrap().is_none());
        let v = engine
            .put("user/erin", "e", WriteOptions::default())
            .unwrap();
        assert_eq!(v, 5, "versions go on from the old segment");
        engine.close().unwrap();
        let seg1 = std::fs::read(dir.path().join("0000000001.seg")).unwrap();
        assert_eq!(seg1, v1, "the torn tail was cut, nothing else changed");
        let report = caskade_engine::verify::verify(dir.path(), &mut |_, _| {}).unwrap();
        assert!(report.is_clean(), "{:?}", report.damage);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let engine = reopen(dir.path());
        assert_known_contents(&engine);
        assert_eq!(&engine.get(b"user/erin").unwrap().unwrap().value[..], b"e");
        engine.close().unwrap();
    }
}

/// The widest header a store can hold (9-byte seq, 10-byte times, 3-byte key and meta
/// lengths, a 4-byte value length: 45 bytes; 46 would take a 256 MiB value) is read
/// whole by list, which reads a header without knowing its length.
#[test]
fn list_reads_the_widest_header_whole() {
    let key = vec![b'w'; 16_384];
    let meta = vec![b'm'; 16_384];
    let value = vec![b'v'; 1 << 21];
    let (seq, written_at_ms, expires_at_ms) = (1u64 << 56, u64::MAX, u64::MAX);
    let mut seg = caskade_engine::fuzzing::encode_segment_header(1, 1, false).to_vec();
    let commit = 2;
    caskade_engine::fuzzing::encode_record(
        commit,
        seq,
        written_at_ms,
        expires_at_ms,
        &key,
        &meta,
        &value,
        &mut seg,
    );
    let record_len = seg.len() - 32;
    let header_len = record_len - key.len() - meta.len() - value.len();
    assert_eq!(header_len, 45, "the widest header short of a 256 MiB value");
    let (dir, engine) = open_golden(&seg);
    let items = engine.list(b"w", None, 10).expect("list reads the record");
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(&item.key[..], &key[..]);
    assert_eq!(&item.meta[..], &meta[..]);
    assert_eq!(item.value_len, value.len() as u64);
    assert_eq!(
        (item.version, item.written_at_ms, item.expires_at_ms),
        (seq, written_at_ms, Some(expires_at_ms))
    );
    assert_eq!(&engine.get(&key).unwrap().unwrap().value[..], &value[..]);
    engine.close().unwrap();
    drop(dir);
}
