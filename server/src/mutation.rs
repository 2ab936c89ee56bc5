//! Writes: read the keys, decide, and write atomically, guarded against races.
//!
//! A conditional write (PUT or DELETE with `If-Match` / `If-None-Match`, [`apply`])
//! reads the live entries of its keys first, because the answer depends on them
//! (the condition, `created`, `deleted`, `created_at` kept across updates). The batch then carries an engine condition per key (`Expect::Version`
//! or `Expect::Absent`), so the decision and the write are one atomic step; when another
//! writer got in between, the engine refuses the batch and the whole step is redone.
//!
//! Racing is kept for correctness, not used for ordering: writers of the same key first
//! queue on a striped lock table, so a hot key under many concurrent writers is written
//! one request after the other (each a full read-decide-write step) instead of all of
//! them racing and losing rounds until the retry bound gives up.
//!
//! Requests without a condition skip all of that: bulk requests and single PUTs
//! without `If-Match` / `If-None-Match` ([`apply_unconditional`]), and single DELETEs
//! without `If-Match` ([`delete_if_live`]). Nothing needs deciding before their write.
//! The engine's writer reports, per operation, whether it replaced a live entry
//! (`created`, `deleted`) and carries the replaced entry's `created_at` into the new
//! record ([`CARRY_CREATED_AT`]), at the moment it writes the batch; a plain DELETE
//! carries the engine condition `Expect::Present`, which the writer checks as it
//! writes (a 404 when it fails, nothing written). So these requests neither read
//! their keys nor lock them, never lose a race and never retry, and many of them
//! share one group commit instead of queueing, each through its own fsync, on the
//! lock stripes their keys share.
//!
//! Only conditional PUTs and DELETEs (`If-Match`, `If-None-Match`) read first and
//! race. One that loses to an unlocked writer (a bulk request, a plain PUT) redoes
//! its step, re-reading the key: a changed version then mostly fails its condition
//! (412, the right answer); only `If-Match: *` or a tag list that matches every new
//! version can keep losing until [`WRITE_ATTEMPTS_MAX`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{LazyLock, OnceLock};

use bytes::Bytes;
use caskade_engine::{Applied, Batch, Error as EngineError, Expect, WriteOptions};
use tokio::sync::{Mutex, MutexGuard, oneshot};

use crate::envelope::PutSpec;
use crate::media::{Kind, TEXT_UTF8};
use crate::meta::{CARRY_CREATED_AT, CREATED_BY_THIS_RECORD, RecordMeta};
use crate::names::Entity;
use crate::problem::{ApiError, ErrorCode};
use crate::state::AppState;

/// How often a conditional write ([`apply`]) is redone after losing a race before the
/// server gives up (503): a bound on work per request. Conditional writers of one key
/// queue on the key lock table first, so only writers that take no lock (bulk
/// requests, PUTs and DELETEs without a condition) can make one lose; after a lost
/// round the key's new version mostly fails the condition (412) instead of retrying.
pub const WRITE_ATTEMPTS_MAX: usize = 16;

/// Stripes of the key lock table: enough that unrelated keys rarely share one.
const KEY_LOCK_STRIPES: usize = 4096;

/// Writers of the same key take the same stripe. Process-wide rather than per engine:
/// two engines in one process (tests) only share stripes, never data, and the table
/// needs no place in the shared state.
static KEY_LOCKS: LazyLock<KeyLocks> = LazyLock::new(KeyLocks::new);

/// A fixed table of FIFO async locks, indexed by a hash of the engine key.
struct KeyLocks {
    hasher: RandomState,
    stripes: Vec<Mutex<()>>,
}

impl KeyLocks {
    fn new() -> KeyLocks {
        KeyLocks {
            hasher: RandomState::new(),
            stripes: (0..KEY_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Locks the stripes of `keys`, in ascending stripe order so that two requests
    /// with overlapping keys can never wait on each other in a cycle.
    async fn lock(&'static self, keys: &[Bytes]) -> Vec<MutexGuard<'static, ()>> {
        let mut indices: Vec<usize> = keys
            .iter()
            .map(|k| (self.hasher.hash_one(k.as_ref()) % KEY_LOCK_STRIPES as u64) as usize)
            .collect();
        indices.sort_unstable();
        indices.dedup();
        let mut guards = Vec::with_capacity(indices.len());
        for i in indices {
            guards.push(self.stripes[i].lock().await);
        }
        guards
    }
}

/// One write of a request. Its key borrows from the request (its path or body) where
/// it can.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp<'a> {
    /// Store a value.
    Put {
        /// Namespace.
        entity: Entity,
        /// Key inside the namespace.
        key: Cow<'a, str>,
        /// The checked value and its attributes.
        spec: PutSpec,
    },
    /// Remove a key.
    Delete {
        /// Namespace.
        entity: Entity,
        /// Key inside the namespace.
        key: Cow<'a, str>,
    },
}

impl WriteOp<'_> {
    /// The entity and key the operation writes.
    fn target(&self) -> (Entity, &str) {
        match self {
            WriteOp::Put { entity, key, .. } | WriteOp::Delete { entity, key } => (*entity, key),
        }
    }

    fn engine_key(&self) -> Vec<u8> {
        let (entity, key) = self.target();
        entity.engine_key(key)
    }
}

/// The live entry of a key when the write was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Live {
    /// Its version.
    pub version: u64,
    /// When the key was created (from the meta section).
    pub created_at_ms: u64,
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    /// True when no live value existed before it.
    pub created: bool,
    /// The write's version.
    pub version: u64,
    /// Expiry, ms since the Unix epoch.
    pub expires_at_ms: Option<u64>,
}

/// What one write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A put.
    Put(PutOutcome),
    /// A delete: whether a live value existed, and the tombstone's version.
    Delete {
        /// True when a live value was removed.
        deleted: bool,
        /// The tombstone's version.
        version: u64,
    },
}

/// Applies `ops` as one atomic batch. `check` sees the live entry of each distinct key
/// (in order of first appearance) and may refuse the request (412, 404) before anything
/// is written; it runs again on every retry.
pub async fn apply(
    state: &AppState,
    path: &str,
    ops: &[WriteOp<'_>],
    check: impl Fn(&[Option<Live>]) -> Result<(), ApiError>,
) -> Result<Vec<Outcome>, ApiError> {
    let (keys, slots) = distinct_keys(ops);
    let _turn = KEY_LOCKS.lock(&keys).await;
    for _ in 0..WRITE_ATTEMPTS_MAX {
        let lives = read_lives(state, path, &keys)?;
        check(&lives)?;
        let now_ms = state.engine.clock().now_ms();
        let (batch, mut outcomes) = plan(ops, &slots, &keys, &lives, now_ms, path)?;
        let (tx, rx) = oneshot::channel();
        state.engine.apply_then(batch, move |result| {
            let _ = tx.send(result);
        });
        match rx.await {
            Ok(Ok(versions)) => {
                for (outcome, v) in outcomes.iter_mut().zip(versions) {
                    match outcome {
                        Outcome::Put(PutOutcome { version, .. })
                        | Outcome::Delete { version, .. } => *version = v,
                    }
                }
                return Ok(outcomes);
            }
            Ok(Err(EngineError::ConditionFailed { .. })) => continue,
            Ok(Err(err)) => return Err(engine_error(path, err)),
            Err(_) => {
                return Err(engine_error(
                    path,
                    EngineError::Closed("the writer dropped the batch".to_owned()),
                ));
            }
        }
    }
    Err(ApiError::one(
        path,
        ErrorCode::Unavailable,
        "the keys were changed by other writers too often while this write was retried; try again",
    ))
}

/// True for a put of text without metadata, the put of every body of the common shapes
/// (`crate::plain`): its meta section is [`plain_text_meta`].
fn is_plain_text(spec: &PutSpec) -> bool {
    spec.kind == Kind::Text && spec.metadata.is_none() && spec.content_type == TEXT_UTF8
}

/// The meta section of a text put without metadata, encoded once. A static handle:
/// a put takes it without an allocation, and the threads that pass it on and drop it
/// share no reference count.
fn plain_text_meta() -> Bytes {
    static SECTION: OnceLock<Vec<u8>> = OnceLock::new();
    let section = SECTION.get_or_init(|| {
        let mut out = Vec::new();
        // Cannot fail: the content type is short and there is no metadata.
        let _ = RecordMeta {
            kind: Kind::Text,
            content_type: TEXT_UTF8,
            metadata: None,
            created_at_ms: CREATED_BY_THIS_RECORD,
        }
        .encode_into(&mut out);
        out
    });
    Bytes::from_static(section)
}

/// Applies `ops` as one atomic batch without reading or locking their keys (see the
/// module doc): for requests with no condition to check, i.e. bulk and PUTs without
/// If-Match / If-None-Match.
pub async fn apply_unconditional(
    state: &AppState,
    path: &str,
    ops: &[WriteOp<'_>],
) -> Result<Vec<Outcome>, ApiError> {
    let now_ms = state.engine.clock().now_ms();
    // Every engine key of the request in one buffer, each op's key split off its
    // front: one allocation for all keys, none per key here nor when the writer keeps
    // a copy of the handle (and for a request of one key, no shared handle at all).
    let key_len = |op: &WriteOp<'_>| {
        let (entity, key) = op.target();
        entity.as_str().len() + 1 + key.len()
    };
    let mut all_keys = Vec::with_capacity(ops.iter().map(key_len).sum());
    for op in ops {
        let (entity, key) = op.target();
        all_keys.extend_from_slice(entity.as_str().as_bytes());
        all_keys.push(b'/');
        all_keys.extend_from_slice(key.as_bytes());
    }
    let mut all_keys = Bytes::from(all_keys);
    let mut batch = Batch::with_capacity(ops.len());
    let mut outcomes = Vec::with_capacity(ops.len());
    // Puts of one request mostly share their meta section (same content type, no
    // metadata): one handle for a run of equal sections, the last op's moved.
    let mut meta_buf = Vec::new();
    let mut shared_meta = Bytes::new();
    for (i, op) in ops.iter().enumerate() {
        let key = all_keys.split_to(key_len(op));
        match op {
            WriteOp::Put { spec, .. } => {
                let meta = if is_plain_text(spec) {
                    plain_text_meta()
                } else {
                    meta_buf.clear();
                    RecordMeta {
                        kind: spec.kind,
                        content_type: spec.content_type.as_ref(),
                        metadata: spec.metadata.as_deref(),
                        created_at_ms: CREATED_BY_THIS_RECORD,
                    }
                    .encode_into(&mut meta_buf)
                    .map_err(|e| internal(path, &e))?;
                    if shared_meta[..] != meta_buf[..] {
                        // The handle takes the buffer over without a copy (and, as the
                        // section fills a fresh buffer exactly, without an allocation
                        // of its own); the next section is encoded into a fresh one.
                        shared_meta = Bytes::from(std::mem::take(&mut meta_buf));
                    }
                    if i + 1 == ops.len() {
                        std::mem::take(&mut shared_meta)
                    } else {
                        shared_meta.clone()
                    }
                };
                let expires_at_ms = spec
                    .ttl_seconds
                    .map(|ttl| now_ms.saturating_add(ttl.saturating_mul(1000)));
                batch.put(
                    key,
                    spec.value.clone(),
                    WriteOptions {
                        expires_at_ms,
                        meta,
                    },
                );
                outcomes.push(Outcome::Put(PutOutcome {
                    created: true,
                    version: 0,
                    expires_at_ms,
                }));
            }
            WriteOp::Delete { .. } => {
                batch.delete(key);
                outcomes.push(Outcome::Delete {
                    deleted: false,
                    version: 0,
                });
            }
        }
    }
    batch.carry_meta(CARRY_CREATED_AT);
    let (tx, rx) = oneshot::channel();
    state.engine.apply_detailed_then(batch, move |result| {
        let _ = tx.send(result);
    });
    let applied = match rx.await {
        Ok(Ok(applied)) => applied,
        Ok(Err(err)) => return Err(engine_error(path, err)),
        Err(_) => {
            return Err(engine_error(
                path,
                EngineError::Closed("the writer dropped the batch".to_owned()),
            ));
        }
    };
    for (outcome, Applied { version, replaced }) in outcomes.iter_mut().zip(applied) {
        match outcome {
            Outcome::Put(put) => {
                put.created = !replaced;
                put.version = version;
            }
            Outcome::Delete {
                deleted,
                version: v,
            } => {
                *deleted = replaced;
                *v = version;
            }
        }
    }
    Ok(outcomes)
}

/// Deletes `key` only if it has a live value, decided by the engine's writer as it
/// writes (`Expect::Present`): no read and no key lock, so, like a put through
/// [`apply_unconditional`], it never loses a race and never retries. `false` when
/// there was nothing to delete (and nothing was written).
pub async fn delete_if_live(
    state: &AppState,
    path: &str,
    entity: Entity,
    key: &str,
) -> Result<bool, ApiError> {
    let key = Bytes::from(entity.engine_key(key));
    let mut batch = Batch::new();
    batch.delete(key.clone()).expect(key, Expect::Present);
    let (tx, rx) = oneshot::channel();
    state.engine.apply_then(batch, move |result| {
        let _ = tx.send(result);
    });
    match rx.await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(EngineError::ConditionFailed { .. })) => Ok(false),
        Ok(Err(err)) => Err(engine_error(path, err)),
        Err(_) => Err(engine_error(
            path,
            EngineError::Closed("the writer dropped the batch".to_owned()),
        )),
    }
}

/// Distinct engine keys in order of first appearance, and each op's index into them.
/// One allocation per operation (its engine key); the map only borrows the keys.
fn distinct_keys(ops: &[WriteOp<'_>]) -> (Vec<Bytes>, Vec<usize>) {
    let all: Vec<Vec<u8>> = ops.iter().map(WriteOp::engine_key).collect();
    let mut slots = Vec::with_capacity(ops.len());
    let mut first = vec![false; ops.len()];
    let mut distinct = 0;
    {
        let mut index: HashMap<&[u8], usize> = HashMap::with_capacity(ops.len());
        for (i, key) in all.iter().enumerate() {
            let slot = *index.entry(key.as_slice()).or_insert(distinct);
            if slot == distinct {
                first[i] = true;
                distinct += 1;
            }
            slots.push(slot);
        }
    }
    let keys = all
        .into_iter()
        .zip(first)
        .filter_map(|(key, first)| first.then(|| Bytes::from(key)))
        .collect();
    (keys, slots)
}

fn read_lives(state: &AppState, path: &str, keys: &[Bytes]) -> Result<Vec<Option<Live>>, ApiError> {
    keys.iter()
        .map(|key| {
            let Some(entry) = state.engine.get(key).map_err(|e| engine_error(path, e))? else {
                return Ok(None);
            };
            let meta = RecordMeta::decode(&entry.meta).map_err(|e| internal(path, &e))?;
            Ok(Some(Live {
                version: entry.version,
                created_at_ms: meta.created_at(entry.written_at_ms),
            }))
        })
        .collect()
}

/// Builds the batch and the outcomes (versions filled in later); later ops see the
/// effect of earlier ones on the same key.
fn plan(
    ops: &[WriteOp<'_>],
    slots: &[usize],
    keys: &[Bytes],
    lives: &[Option<Live>],
    now_ms: u64,
    path: &str,
) -> Result<(Batch, Vec<Outcome>), ApiError> {
    let mut created_at: Vec<Option<u64>> =
        lives.iter().map(|l| l.map(|l| l.created_at_ms)).collect();
    let mut batch = Batch::new();
    let mut outcomes = Vec::with_capacity(ops.len());
    for (op, &slot) in ops.iter().zip(slots) {
        match op {
            WriteOp::Put { spec, .. } => {
                let created = created_at[slot].is_none();
                let created_ms = created_at[slot].unwrap_or(CREATED_BY_THIS_RECORD);
                let meta = RecordMeta {
                    kind: spec.kind,
                    content_type: spec.content_type.as_ref(),
                    metadata: spec.metadata.as_deref(),
                    created_at_ms: created_ms,
                }
                .encode()
                .map_err(|e| internal(path, &e))?;
                let expires_at_ms = spec
                    .ttl_seconds
                    .map(|ttl| now_ms.saturating_add(ttl.saturating_mul(1000)));
                batch.put(
                    keys[slot].clone(),
                    spec.value.clone(),
                    WriteOptions {
                        expires_at_ms,
                        meta: Bytes::from(meta),
                    },
                );
                created_at[slot] = Some(created_ms);
                outcomes.push(Outcome::Put(PutOutcome {
                    created,
                    version: 0,
                    expires_at_ms,
                }));
            }
            WriteOp::Delete { .. } => {
                let deleted = created_at[slot].is_some();
                batch.delete(keys[slot].clone());
                created_at[slot] = None;
                outcomes.push(Outcome::Delete {
                    deleted,
                    version: 0,
                });
            }
        }
    }
    for (key, live) in keys.iter().zip(lives) {
        let expect = live.map_or(Expect::Absent, |l| Expect::Version(l.version));
        batch.expect(key.clone(), expect);
    }
    Ok((batch, outcomes))
}

/// Maps an engine failure to API.md's problem: 507, 413, 503, or a logged 500.
pub fn engine_error(path: &str, err: EngineError) -> ApiError {
    match err {
        EngineError::StorageFull { .. } => ApiError::one(
            path,
            ErrorCode::StorageFull,
            "the store's disk is full; nothing of this request was written",
        ),
        EngineError::TooLarge { what, limit, .. } => ApiError::one(
            path,
            ErrorCode::PayloadTooLarge,
            format!("the {what} is over the store's limit of {limit} bytes"),
        ),
        EngineError::Closed(_) => ApiError::one(
            path,
            ErrorCode::Unavailable,
            "the store is shutting down or unavailable; try again later",
        ),
        other => internal(path, &other),
    }
}

/// A 500 for a failure that is a bug or damage: logged in full, answered without detail.
pub fn internal(path: &str, err: &dyn std::fmt::Display) -> ApiError {
    crate::logging::in_request_span(|| {
        tracing::error!(error = %err, path, "store request failed");
    });
    ApiError::one(
        path,
        ErrorCode::Internal,
        "an internal error occurred; it has been logged",
    )
}

/// The kind and bytes of an entry's meta section, or a logged 500.
pub fn decode_meta<'a>(path: &str, meta: &'a [u8]) -> Result<RecordMeta<'a>, ApiError> {
    RecordMeta::decode(meta).map_err(|e| internal(path, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_text_section_is_what_a_plain_text_put_encodes() {
        let spec = PutSpec {
            value: Bytes::from_static(b"v"),
            kind: Kind::Text,
            content_type: Cow::Borrowed(TEXT_UTF8),
            metadata: None,
            ttl_seconds: None,
        };
        assert!(is_plain_text(&spec));
        let section = plain_text_meta();
        assert_eq!(
            RecordMeta::decode(&section),
            Ok(RecordMeta {
                kind: Kind::Text,
                content_type: TEXT_UTF8,
                metadata: None,
                created_at_ms: CREATED_BY_THIS_RECORD,
            })
        );
        for other in [
            PutSpec {
                kind: Kind::Json,
                ..spec.clone()
            },
            PutSpec {
                metadata: Some(b"{}".to_vec()),
                ..spec.clone()
            },
            PutSpec {
                content_type: Cow::Borrowed("text/plain"),
                ..spec.clone()
            },
        ] {
            assert!(!is_plain_text(&other), "{other:?}");
        }
    }
}
