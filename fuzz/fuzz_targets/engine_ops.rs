//! Arbitrary sequences of put / delete / batch / conditional batch / get / list /
//! clock moves / reopen / compact / sweep against a `BTreeMap` model: the engine must
//! agree with the model after every step (the fuzzing twin of engine/tests/model.rs).
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Arbitrary;
use caskade_engine::{
    Batch, Clock, CompactionOptions, Engine, Error, Expect, Options, SyncPolicy, WriteOptions,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Arbitrary, Debug)]
enum Step {
    Put(u8, Vec<u8>, Option<u8>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Guarded(u8, bool),
    Get(u8),
    List(u8, Option<u8>, u8),
    Advance(u8),
    Reopen { close: bool },
    Compact,
    CompactByPolicy,
    Sweep,
}

fn key(k: u8) -> Vec<u8> {
    // A few prefixes so lists have something to select.
    let k = k % 40;
    format!("{}/{k:03}", ["a", "b", "ab"][usize::from(k % 3)]).into_bytes()
}

/// Model entry: value, expiry (ms), version.
type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>, u64)>;

fn live<'m>(model: &'m Model, k: &[u8], now: u64) -> Option<&'m (Vec<u8>, Option<u64>, u64)> {
    model
        .get(k)
        .filter(|(_, exp, _)| exp.is_none_or(|t| t > now))
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Engine {
    let options = Options {
        segment_bytes: 4096,
        sync: SyncPolicy::Never,
        clock: clock.clone(),
        // Compaction runs when the input says so, not on a timer.
        compaction: CompactionOptions {
            enabled: false,
            dead_ratio: 0.3,
            ..CompactionOptions::default()
        },
        ..Options::default()
    };
    Engine::open(dir, options).expect("open")
}

fuzz_target!(|steps: Vec<Step>| {
    if steps.len() > 64 {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("engine-ops-")
        .tempdir_in(scratch())
        .expect("temp dir");
    let clock = Arc::new(ManualClock(AtomicU64::new(1_000_000)));
    let mut engine = open(dir.path(), &clock);
    let mut model: Model = BTreeMap::new();
    let mut last_version = 0;
    for step in steps {
        let now = clock.now_ms();
        match step {
            Step::Put(k, v, ttl) => {
                let expires = ttl.map(|t| now + 1 + u64::from(t));
                let opts = WriteOptions {
                    expires_at_ms: expires,
                    meta: v.iter().rev().copied().collect::<Vec<u8>>().into(),
                };
                let version = engine.put(key(k), v.clone(), opts).expect("put");
                assert!(version > last_version, "versions grow");
                last_version = version;
                model.insert(key(k), (v, expires, version));
            }
            Step::Delete(k) => {
                let version = engine.delete(key(k)).expect("delete");
                assert!(version > last_version, "versions grow");
                last_version = version;
                model.remove(&key(k));
            }
            Step::Batch(ops) => {
                if ops.is_empty() {
                    continue;
                }
                let mut batch = Batch::new();
                for (k, v) in &ops {
                    match v {
                        Some(v) => batch.put(key(*k), v.clone(), WriteOptions::default()),
                        None => batch.delete(key(*k)),
                    };
                }
                let versions = engine.apply(batch).expect("batch");
                assert_eq!(versions.len(), ops.len());
                for ((k, v), version) in ops.into_iter().zip(versions) {
                    assert!(version > last_version, "versions grow in batch order");
                    last_version = version;
                    match v {
                        Some(v) => model.insert(key(k), (v, None, version)),
                        None => model.remove(&key(k)),
                    };
                }
            }
            Step::Guarded(k, expect_absent) => {
                let current = live(&model, &key(k), now).map(|e| e.2);
                let expect = match (expect_absent, current) {
                    (true, _) => Expect::Absent,
                    (false, Some(v)) => Expect::Version(v),
                    // `Present` on an absent key must fail like a wrong version.
                    (false, None) if k % 2 == 0 => Expect::Present,
                    (false, None) => Expect::Version(last_version + 1000),
                };
                let should_pass = match expect {
                    Expect::Absent => current.is_none(),
                    Expect::Version(v) => current == Some(v),
                    Expect::Present => current.is_some(),
                };
                let mut batch = Batch::new();
                batch
                    .put(key(k), b"guarded".to_vec(), WriteOptions::default())
                    .expect(key(k), expect);
                match engine.apply(batch) {
                    Ok(versions) => {
                        assert!(should_pass, "condition {expect:?} should fail");
                        last_version = versions[0];
                        model.insert(key(k), (b"guarded".to_vec(), None, versions[0]));
                    }
                    Err(Error::ConditionFailed { index: 0 }) => assert!(!should_pass),
                    Err(e) => panic!("guarded put: {e}"),
                }
            }
            Step::Get(k) => {
                let got = engine.get(&key(k)).expect("get");
                match (got, live(&model, &key(k), now)) {
                    (None, None) => {}
                    (Some(e), Some((v, exp, ver))) => {
                        assert_eq!(&e.value[..], &v[..]);
                        assert_eq!(e.expires_at_ms, *exp);
                        assert_eq!(e.version, *ver);
                    }
                    (got, want) => panic!("get {k}: engine {got:?}, model {want:?}"),
                }
            }
            Step::List(p, after, limit) => {
                let prefix: &[u8] = [&b""[..], b"a", b"ab/", b"b/"][usize::from(p % 4)];
                let after = after.map(key);
                let limit = usize::from(limit % 12) + 1;
                let got: Vec<Vec<u8>> = engine
                    .list(prefix, after.as_deref(), limit)
                    .expect("list")
                    .into_iter()
                    .map(|item| item.key.to_vec())
                    .collect();
                let want: Vec<Vec<u8>> = model
                    .keys()
                    .filter(|k| k.starts_with(prefix))
                    .filter(|k| after.as_ref().is_none_or(|a| k.as_slice() > a.as_slice()))
                    .filter(|k| live(&model, k, now).is_some())
                    .take(limit)
                    .cloned()
                    .collect();
                assert_eq!(got, want, "list {prefix:?} after {after:?} limit {limit}");
            }
            Step::Advance(ms) => {
                clock.0.fetch_add(u64::from(ms), Ordering::SeqCst);
            }
            Step::Compact => {
                engine.compact().expect("compact");
            }
            Step::CompactByPolicy => {
                engine.compact_by_policy().expect("compact by policy");
            }
            Step::Sweep => {
                engine.sweep_expired().expect("sweep");
                let live_keys = model
                    .keys()
                    .filter(|k| live(&model, k, now).is_some())
                    .count();
                assert_eq!(
                    engine.stats().keys,
                    live_keys as u64,
                    "a sweep leaves the live keys"
                );
            }
            Step::Reopen { close } => {
                if close {
                    engine.close().expect("close");
                } else {
                    drop(engine);
                }
                engine = open(dir.path(), &clock);
                assert_eq!(
                    engine.stats().last_version,
                    last_version,
                    "reopen keeps the version"
                );
            }
        }
    }
    engine.close().expect("close");
});

/// tmpfs when there is one: the target makes a folder per input.
fn scratch() -> std::path::PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
