//! The on-disk format is pinned by a checked-in golden segment: today's build must
//! read it, and must write exactly its bytes for the same operations. A change here
//! is a format change — bump the version and write a migration, don't re-bless.
//! (`CASKADE_BLESS=1 cargo test -p caskade-engine --test format` writes it anew.)

mod common;

use std::path::Path;

use caskade_engine::{Batch, Engine, Options, SyncPolicy, WriteOptions};
use common::ManualClock;

const GOLDEN: &str = "tests/golden/0000000001.seg";

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

#[test]
fn the_golden_segment_decodes_and_todays_writer_produces_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    write_known_ops(dir.path());
    let written = std::fs::read(dir.path().join("0000000001.seg")).unwrap();
    let golden_path = Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("CASKADE_BLESS").is_some() {
        std::fs::write(&golden_path, &written).unwrap();
    }
    let golden = std::fs::read(&golden_path).unwrap();
    assert_eq!(written, golden, "the segment format changed");

    let read_dir = tempfile::tempdir().unwrap();
    std::fs::write(read_dir.path().join("0000000001.seg"), &golden).unwrap();
    let options = Options {
        clock: ManualClock::new(1_764_148_490_000),
        ..Options::default()
    };
    let engine = Engine::open(read_dir.path(), options).unwrap();
    assert!(
        engine.get(b"user/alice").unwrap().is_none(),
        "deleted in the batch"
    );
    let bob = engine.get(b"user/bob").unwrap().unwrap();
    assert_eq!(&bob.value[..], &[0, 1, 2, 255]);
    assert_eq!(bob.version, 3);
    let e1 = engine.get(b"event/e1").unwrap().unwrap();
    assert_eq!(&e1.value[..], b"hello");
    assert_eq!(e1.expires_at_ms, Some(1_764_152_084_000));
    assert_eq!(e1.written_at_ms, 1_764_148_484_000);
    assert_eq!(e1.version, 2);
    assert_eq!(engine.stats().last_version, 4);
}
