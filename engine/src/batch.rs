//! Batches: several writes applied atomically, optionally guarded by conditions.

use bytes::Bytes;

/// Per-write options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// When the entry expires, in milliseconds since the Unix epoch; `None` = never.
    pub expires_at_ms: Option<u64>,
    /// A small opaque byte section stored with the record (the server keeps content
    /// type, user metadata and timestamps here). At most [`crate::META_BYTES_MAX`].
    pub meta: Bytes,
}

/// One write of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Store `value` under `key`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Expiry and metadata.
        options: WriteOptions,
    },
    /// Remove `key` (a tombstone is written even if the key is absent).
    Delete {
        /// The key.
        key: Bytes,
    },
}

impl Op {
    /// The key this operation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// What a condition expects of a key's live entry at the moment the batch is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No live (present and unexpired) entry.
    Absent,
    /// A live entry with exactly this version.
    Version(u64),
    /// A live entry, whatever its version (a delete that must remove something).
    Present,
}

/// Writes applied all-or-nothing, visible together, durable together (one commit
/// marker ends the batch on disk, so a crash shows all of it or none).
///
/// Conditions are checked atomically against the store just before the batch is
/// written; if one fails the batch writes nothing and
/// [`crate::Error::ConditionFailed`] names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub(crate) ops: Vec<Op>,
    pub(crate) conditions: Vec<(Bytes, Expect)>,
    pub(crate) meta_patch: Option<MetaPatch>,
}

/// The live entry a put replaces, as the writer sees it when it applies the batch:
/// the latest write of the key, earlier operations of the same batch included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Previous<'a> {
    /// Its meta section.
    pub meta: &'a [u8],
    /// Its version.
    pub version: u64,
    /// When it was written (ms since the Unix epoch, the engine's clock).
    pub written_at_ms: u64,
}

/// Rewrites a put's meta section in place from the live entry the put replaces (see
/// [`Batch::patch_meta`]). An `Err` fails the whole batch with
/// [`crate::Error::Corrupt`] and writes nothing.
pub type MetaPatchFn = fn(&Previous<'_>, &mut [u8]) -> Result<(), &'static str>;

/// A [`MetaPatchFn`] held by a batch (compared by address).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MetaPatch(pub(crate) MetaPatchFn);

impl PartialEq for MetaPatch {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::fn_addr_eq(self.0, other.0)
    }
}

impl Eq for MetaPatch {}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(
        &mut self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: WriteOptions,
    ) -> &mut Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
            options,
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Bytes>) -> &mut Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Adds a condition on the state of `key` before the batch.
    pub fn expect(&mut self, key: impl Into<Bytes>, expect: Expect) -> &mut Self {
        self.conditions.push((key.into(), expect));
        self
    }

    /// Has the writer call `patch` for every put of this batch that replaces a live
    /// entry, with that entry and the put's meta section, just before the put is
    /// written: so a put can carry something over from the entry it replaces (the
    /// server keeps a key's creation time this way) without reading it first and
    /// guarding the read with a condition. The meta keeps its length. `patch` runs on
    /// the writer thread, so it must be quick; reading the previous entry's meta costs
    /// the writer one read of that record's header and meta.
    pub fn patch_meta(&mut self, patch: MetaPatchFn) -> &mut Self {
        self.meta_patch = Some(MetaPatch(patch));
        self
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
