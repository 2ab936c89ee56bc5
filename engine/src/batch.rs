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
}

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
