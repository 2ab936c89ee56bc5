//! What reads return: entries, list items, statistics.

use bytes::Bytes;

/// A live entry read by [`crate::Engine::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The value. For a sealed segment this is a view into the mapped file (no copy).
    pub value: Bytes,
    /// The metadata section written with the value.
    pub meta: Bytes,
    /// Expiry in milliseconds since the Unix epoch; `None` = never.
    pub expires_at_ms: Option<u64>,
    /// The store-wide sequence number of the write that produced this entry.
    pub version: u64,
    /// When the write happened, by the engine's clock (ms since the Unix epoch).
    pub written_at_ms: u64,
}

/// What one operation of a batch did, from [`crate::Engine::apply_detailed_then`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The operation's version.
    pub version: u64,
    /// True when the key had a live entry just before this operation (an earlier
    /// operation of the same batch counts).
    pub replaced: bool,
}

/// One key of a [`crate::Engine::list`] page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListItem {
    /// The key.
    pub key: Bytes,
    /// Length of the value in bytes.
    pub value_len: u64,
    /// The metadata section.
    pub meta: Bytes,
    /// Expiry in ms since the Unix epoch; `None` = never.
    pub expires_at_ms: Option<u64>,
    /// Version of the entry.
    pub version: u64,
    /// When the entry was written (ms since the Unix epoch).
    pub written_at_ms: u64,
}

/// A snapshot of the engine's counters, from [`crate::Engine::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Keys in the index (expired keys count until a sweep removes them).
    pub keys: u64,
    /// Bytes of records the index points at.
    pub live_bytes: u64,
    /// Bytes on disk no longer needed: overwritten, deleted, tombstones, headers of nothing.
    pub dead_bytes: u64,
    /// Total bytes of all segment files.
    pub disk_bytes: u64,
    /// Number of segment files.
    pub segments: u64,
    /// `fdatasync` calls made by the writer.
    pub fsyncs: u64,
    /// Groups the writer has written (each one `write` and at most one fsync).
    pub write_batches: u64,
    /// Records written since open.
    pub records_written: u64,
    /// Estimated bytes of memory held by the index.
    pub index_bytes: u64,
    /// The highest version handed out so far.
    pub last_version: u64,
    /// Bytes dropped from a torn tail when this engine was opened. Zeros the writer
    /// had reserved past its last append (cut too) are not counted: they never held
    /// a record.
    pub recovered_truncated_bytes: u64,
    /// Compactions finished since open.
    pub compactions: u64,
    /// Disk bytes given back by compaction since open.
    pub bytes_reclaimed: u64,
    /// Expired keys removed from the index by sweeps since open.
    pub expired_swept: u64,
    /// Sealed segments loaded from hint files at open.
    pub hints_loaded: u64,
}
