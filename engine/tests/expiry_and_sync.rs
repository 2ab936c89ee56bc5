//! TTL visibility with an injected clock, and what each sync policy does.

mod common;

use std::time::{Duration, Instant};

use caskade_engine::{Engine, Options, SyncPolicy, WriteOptions};
use common::ManualClock;

#[test]
fn an_expired_entry_is_never_returned_or_listed_and_stays_gone_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(10_000);
    let options = Options {
        clock: clock.clone(),
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), options.clone()).unwrap();
    engine
        .put("k/old", "forever", WriteOptions::default())
        .unwrap();
    let ttl = WriteOptions {
        expires_at_ms: Some(10_500),
        ..WriteOptions::default()
    };
    engine.put("k/old", "short", ttl.clone()).unwrap();
    engine.put("k/new", "short", ttl).unwrap();
    assert!(engine.get(b"k/old").unwrap().is_some());
    clock.advance(499);
    assert_eq!(engine.list(b"k/", None, 10).unwrap().len(), 2);
    clock.advance(1);
    assert!(
        engine.get(b"k/old").unwrap().is_none(),
        "expired at its expiry instant"
    );
    assert!(engine.list(b"k/", None, 10).unwrap().is_empty());
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), options).unwrap();
    assert!(
        engine.get(b"k/old").unwrap().is_none(),
        "the older value must not come back"
    );
    assert_eq!(engine.stats().keys, 0);
}

#[test]
fn the_interval_policy_syncs_on_its_own_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: SyncPolicy::Interval(Duration::from_millis(1000)),
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), options).unwrap();
    engine.put("k", "v", WriteOptions::default()).unwrap();
    assert_eq!(
        engine.stats().fsyncs,
        0,
        "interval writes are acknowledged before the sync"
    );
    // Poll the counter (the event we wait for); the deadline only bounds a failure.
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.stats().fsyncs == 0 {
        assert!(
            Instant::now() < deadline,
            "no fsync within 10 s of a 1 s interval"
        );
        std::thread::yield_now();
    }
}

#[test]
fn sync_makes_writes_durable_under_never() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: SyncPolicy::Never,
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), options).unwrap();
    engine.put("k", "v", WriteOptions::default()).unwrap();
    assert_eq!(engine.stats().fsyncs, 0);
    engine.sync().unwrap();
    assert_eq!(engine.stats().fsyncs, 1);
    engine.sync().unwrap();
    assert_eq!(engine.stats().fsyncs, 1, "nothing new to sync");
}

#[test]
fn oversized_and_empty_keys_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    let big = vec![b'k'; caskade_engine::KEY_BYTES_MAX + 1];
    assert!(matches!(
        engine.put(big, "v", WriteOptions::default()),
        Err(caskade_engine::Error::TooLarge { what: "key", .. })
    ));
    assert!(matches!(
        engine.put("", "v", WriteOptions::default()),
        Err(caskade_engine::Error::EmptyKey)
    ));
    assert_eq!(engine.stats().records_written, 0);
}
