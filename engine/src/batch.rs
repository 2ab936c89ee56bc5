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
    pub(crate) meta_carry: Option<MetaCarry>,
}

/// A stored entry as a [`MetaCarry`] reads it: the live entry a put replaces (the
/// latest write of the key, earlier operations of the same batch included), or the
/// record a put has just written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Previous<'a> {
    /// Its meta section.
    pub meta: &'a [u8],
    /// Its version.
    pub version: u64,
    /// When it was written (ms since the Unix epoch, the engine's clock).
    pub written_at_ms: u64,
}

/// How a put inherits one word from the live entry it replaces, into its own meta
/// section (see [`Batch::carry_meta`]): the server keeps a key's creation time this
/// way. `word` must be a function of the entry alone (the same entry always gives the
/// same word): the engine remembers each entry's word in its index and hands the
/// remembered word to `write` instead of reading the replaced record again.
///
/// An `Err` from either fails the whole batch and writes nothing:
/// [`crate::Error::Corrupt`] (naming the replaced record) from `word`,
/// [`crate::Error::Internal`] from `write`.
#[derive(Clone, Copy, Debug)]
pub struct MetaCarry {
    /// The word `entry` passes on to a put that replaces it.
    pub word: fn(entry: &Previous<'_>) -> Result<u64, &'static str>,
    /// Writes `word` into a put's meta section, in place (the section keeps its
    /// length).
    pub write: fn(word: u64, meta: &mut [u8]) -> Result<(), &'static str>,
}

impl MetaCarry {
    /// The same two functions (compared by address; two functions the compiler
    /// merged share an address only because their code is the same).
    pub(crate) fn same_as(&self, other: &MetaCarry) -> bool {
        std::ptr::fn_addr_eq(self.word, other.word) && std::ptr::fn_addr_eq(self.write, other.write)
    }
}

impl PartialEq for MetaCarry {
    fn eq(&self, other: &Self) -> bool {
        self.same_as(other)
    }
}

impl Eq for MetaCarry {}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `ops` puts and deletes (a caller that knows how
    /// many it will add spares the list's regrowth).
    pub fn with_capacity(ops: usize) -> Self {
        Batch {
            ops: Vec::with_capacity(ops),
            ..Self::default()
        }
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

    /// Has every put of this batch that replaces a live entry inherit `carry`'s word
    /// from that entry, written into the put's meta section just before the put is
    /// written: so a put can keep something of the entry it replaces (the server keeps
    /// a key's creation time this way) without reading it first and guarding the read
    /// with a condition. A put that creates its key keeps its meta as given.
    ///
    /// The writer remembers the word of every record written with the first carry a
    /// store's batches use after it opens (8 bytes per such key in the index), so a
    /// put whose replaced entry was written that way costs no read; other puts (the
    /// replaced entry predates the open, was written without this carry, or the batch
    /// uses another carry) read the replaced record's header and meta, CRC-checked.
    pub fn carry_meta(&mut self, carry: MetaCarry) -> &mut Self {
        self.meta_carry = Some(carry);
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
