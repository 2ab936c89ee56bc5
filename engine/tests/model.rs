//! The engine against a `BTreeMap` model: random puts, deletes, batches, gets, lists
//! and reopens (with and without `close`) must agree with the model at every step.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use caskade_engine::{Batch, Engine, Expect, SyncPolicy, WriteOptions};
use common::{ManualClock, options};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Put(u8, Vec<u8>, Option<u64>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Guarded(u8, bool),
    Get(u8),
    List(u8, Option<u8>, usize),
    Advance(u64),
    Reopen { close: bool },
    Compact,
    CompactByPolicy,
    Sweep,
}

fn key(k: u8) -> Vec<u8> {
    // A few prefixes so lists have something to select.
    format!("{}/{k:03}", ["a", "b", "ab"][usize::from(k % 3)]).into_bytes()
}

fn step() -> impl Strategy<Value = Step> {
    let value = prop::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        4 => (any::<u8>(), value.clone(), prop::option::of(1u64..200)).prop_map(|(k, v, t)| Step::Put(k % 40, v, t)),
        2 => any::<u8>().prop_map(|k| Step::Delete(k % 40)),
        2 => prop::collection::vec((any::<u8>(), prop::option::of(value)), 1..6)
            .prop_map(|ops| Step::Batch(ops.into_iter().map(|(k, v)| (k % 40, v)).collect())),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(k, absent)| Step::Guarded(k % 40, absent)),
        3 => any::<u8>().prop_map(|k| Step::Get(k % 40)),
        2 => (0u8..4, prop::option::of(any::<u8>()), 1usize..10).prop_map(|(p, a, l)| Step::List(p, a.map(|a| a % 40), l)),
        1 => (1u64..150).prop_map(Step::Advance),
        1 => any::<bool>().prop_map(|close| Step::Reopen { close }),
        1 => Just(Step::Compact),
        2 => Just(Step::CompactByPolicy),
        1 => Just(Step::Sweep),
    ]
}

/// Model entry: value, expiry (ms), version.
type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>, u64)>;

fn live<'m>(model: &'m Model, k: &[u8], now: u64) -> Option<&'m (Vec<u8>, Option<u64>, u64)> {
    model
        .get(k)
        .filter(|(_, exp, _)| exp.is_none_or(|t| t > now))
}

fn open(dir: &Path, clock: &std::sync::Arc<ManualClock>) -> Engine {
    let mut opts = options(4096, SyncPolicy::Never);
    opts.clock = clock.clone();
    // Low enough that the policy often picks some segments and not others.
    opts.compaction.dead_ratio = 0.3;
    Engine::open(dir, opts).expect("open")
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_000_000);
    let mut engine = open(dir.path(), &clock);
    let mut model: Model = BTreeMap::new();
    let mut last_version = 0;
    for step in steps {
        let now = clock.0.load(std::sync::atomic::Ordering::SeqCst);
        match step {
            Step::Put(k, v, ttl) => {
                let expires = ttl.map(|t| now + t);
                let opts = WriteOptions {
                    expires_at_ms: expires,
                    meta: v.iter().rev().copied().collect::<Vec<u8>>().into(),
                };
                let version = engine.put(key(k), v.clone(), opts).expect("put");
                prop_assert!(version > last_version);
                last_version = version;
                model.insert(key(k), (v, expires, version));
            }
            Step::Delete(k) => {
                let version = engine.delete(key(k)).expect("delete");
                prop_assert!(version > last_version);
                last_version = version;
                model.remove(&key(k));
            }
            Step::Batch(ops) => {
                let mut batch = Batch::new();
                for (k, v) in &ops {
                    match v {
                        Some(v) => batch.put(key(*k), v.clone(), WriteOptions::default()),
                        None => batch.delete(key(*k)),
                    };
                }
                let versions = engine.apply(batch).expect("batch");
                prop_assert_eq!(versions.len(), ops.len());
                for ((k, v), version) in ops.into_iter().zip(versions) {
                    prop_assert!(version > last_version);
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
                    // Odd keys check for any live entry, even ones for a version.
                    (false, _) if k % 2 == 1 => Expect::Present,
                    (false, Some(v)) => Expect::Version(v),
                    (false, None) => Expect::Version(last_version + 1000),
                };
                let mut batch = Batch::new();
                batch
                    .put(key(k), b"guarded".to_vec(), WriteOptions::default())
                    .expect(key(k), expect);
                let should_pass = match expect {
                    Expect::Absent => current.is_none(),
                    Expect::Version(v) => current == Some(v),
                    Expect::Present => current.is_some(),
                };
                match engine.apply(batch) {
                    Ok(versions) => {
                        prop_assert!(should_pass, "condition {:?} should fail", expect);
                        last_version = versions[0];
                        model.insert(key(k), (b"guarded".to_vec(), None, versions[0]));
                    }
                    Err(caskade_engine::Error::ConditionFailed { index: 0 }) => {
                        prop_assert!(!should_pass)
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("guarded put: {e}"))),
                }
            }
            Step::Get(k) => {
                let got = engine.get(&key(k)).expect("get");
                let want = live(&model, &key(k), now);
                match (got, want) {
                    (None, None) => {}
                    (Some(e), Some((v, exp, ver))) => {
                        prop_assert_eq!(&e.value[..], &v[..]);
                        prop_assert_eq!(e.expires_at_ms, *exp);
                        prop_assert_eq!(e.version, *ver);
                    }
                    (got, want) => {
                        return Err(TestCaseError::fail(format!(
                            "get {k}: engine {got:?}, model {want:?}"
                        )));
                    }
                }
            }
            Step::List(p, after, limit) => {
                let prefix: &[u8] = [&b""[..], b"a", b"ab/", b"b/"][usize::from(p)];
                let after = after.map(key);
                let got: Vec<Vec<u8>> = engine
                    .list(prefix, after.as_deref(), limit)
                    .expect("list")
                    .into_iter()
                    .map(|item| item.key.to_vec())
                    .collect();
                let want: Vec<Vec<u8>> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .filter(|(k, _)| after.as_ref().is_none_or(|a| k.as_slice() > a.as_slice()))
                    .filter(|(k, _)| live(&model, k, now).is_some())
                    .map(|(k, _)| k.clone())
                    .take(limit)
                    .collect();
                prop_assert_eq!(got, want);
            }
            Step::Advance(ms) => clock.advance(ms),
            Step::Compact => {
                engine.compact().expect("compact");
            }
            Step::CompactByPolicy => {
                engine.compact_by_policy().expect("compact by policy");
            }
            Step::Sweep => {
                engine.sweep_expired().expect("sweep");
                let live = model
                    .keys()
                    .filter(|k| live(&model, k, now).is_some())
                    .count() as u64;
                prop_assert_eq!(
                    engine.stats().keys,
                    live,
                    "a sweep leaves exactly the live keys"
                );
            }
            Step::Reopen { close } => {
                if close {
                    engine.close().expect("close");
                } else {
                    drop(engine);
                }
                engine = open(dir.path(), &clock);
                let stats = engine.stats();
                prop_assert_eq!(stats.last_version, last_version);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_a_btreemap_model(steps in prop::collection::vec(step(), 1..60)) {
        run(steps)?;
    }
}
