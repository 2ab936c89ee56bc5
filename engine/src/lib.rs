//! caskade-engine: a Bitcask-style key-value storage engine.
//!
//! Data lives in numbered, append-only segment files; an in-memory index maps every
//! key to the location of its latest record. One writer thread appends and batches
//! concurrent writers into one write and one `fdatasync` (group commit); readers go
//! straight to the index and the (memory-mapped) files.
//!
//! ```
//! use caskade_engine::{Engine, Options, WriteOptions};
//!
//! # fn main() -> Result<(), caskade_engine::Error> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let engine = Engine::open(dir.path(), Options::default())?;
//! let version = engine.put("user/alice", r#"{"a":1}"#, WriteOptions::default())?;
//! let entry = engine.get(b"user/alice")?.expect("just written");
//! assert_eq!(&entry.value[..], b"{\"a\":1}");
//! assert_eq!(entry.version, version);
//! engine.delete("user/alice")?;
//! assert!(engine.get(b"user/alice")?.is_none());
//! engine.close()?;
//! # Ok(())
//! # }
//! ```

mod append;
mod backup;
mod batch;
mod compaction;
mod engine;
mod error;
mod expiry;
mod hint;
mod index;
mod maintenance;
mod oneshot;
mod options;
mod record;
mod recovery;
mod segment;
mod types;
pub mod verify;
mod writer;

pub use backup::BackupReport;
pub use batch::{Batch, Expect, MetaCarry, Op, Previous, WriteOptions};
pub use compaction::CompactionReport;
pub use engine::{BATCH_BYTES_MAX, Engine, KEY_BYTES_MAX, META_BYTES_MAX, VALUE_BYTES_MAX};
pub use error::{Error, Result};
pub use options::{
    Clock, CompactionOptions, FaultHook, Options, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, SWEEP_INTERVAL_DEFAULT, SyncPolicy, SystemClock,
};
pub use types::{Applied, Entry, ListItem, Stats};

/// The on-disk decoders and encoders, for the fuzz targets in `fuzz/` only: not part
/// of the engine's API, and free to change with the format.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::hint::HintEntry;

    /// A decoded record, borrowing its parts.
    #[derive(Debug)]
    pub struct Record<'a> {
        /// The record format version it was written in (1 or 2).
        pub version: u8,
        /// The stored flags byte (version 2 adds bit 2, "has expiry").
        pub flags: u8,
        pub seq: u64,
        pub written_at_ms: u64,
        pub expires_at_ms: u64,
        pub key: &'a [u8],
        pub meta: &'a [u8],
        pub value: &'a [u8],
        /// Bytes the record takes.
        pub len: usize,
    }

    /// Decodes and CRC-checks the record at the start of `bytes`.
    pub fn decode_record(bytes: &[u8]) -> Result<Record<'_>, String> {
        let h = crate::record::decode(bytes).map_err(|e| format!("{e:?}"))?;
        Ok(Record {
            version: h.version,
            flags: h.flags,
            seq: h.seq,
            written_at_ms: h.written_at_ms,
            expires_at_ms: h.expires_at_ms,
            key: &bytes[h.key_range()],
            meta: &bytes[h.meta_range()],
            value: &bytes[h.value_range()],
            len: h.record_len(),
        })
    }

    /// Parses a record header without its CRC; the record's length on success.
    pub fn decode_record_header(bytes: &[u8]) -> Result<usize, String> {
        crate::record::decode_header(bytes)
            .map(|h| h.record_len())
            .map_err(|e| format!("{e:?}"))
    }

    /// Decodes the hint (either format version) of segment `id` of `segment_len` bytes.
    pub fn decode_hint(bytes: &[u8], id: u32, segment_len: u64) -> Option<Vec<HintEntry<&[u8]>>> {
        let entries = crate::hint::check(bytes, id, segment_len).ok()?;
        Some(entries.into_iter().map(|(_, entry)| entry).collect())
    }

    /// Checks a segment header.
    pub fn decode_segment_header(bytes: &[u8], id: u32) -> Result<(u64, bool), String> {
        crate::segment::decode_header(bytes, id)
            .map(|h| (h.base_seq, h.kind == crate::segment::Kind::Compacted))
    }

    /// Appends one well-formed record in the format this build writes; the parts must
    /// be within the engine's limits and the key non-empty.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_record(
        flags: u8,
        seq: u64,
        written_at_ms: u64,
        expires_at_ms: u64,
        key: &[u8],
        meta: &[u8],
        value: &[u8],
        out: &mut Vec<u8>,
    ) {
        let rec = crate::record::RecordRef {
            flags,
            seq,
            written_at_ms,
            expires_at_ms,
            key,
            meta,
            value,
        };
        crate::record::encode(&rec, out);
    }

    /// Appends one well-formed record in format version 1 (what older builds wrote).
    #[allow(clippy::too_many_arguments)]
    pub fn encode_record_v1(
        flags: u8,
        seq: u64,
        written_at_ms: u64,
        expires_at_ms: u64,
        key: &[u8],
        meta: &[u8],
        value: &[u8],
        out: &mut Vec<u8>,
    ) {
        let rec = crate::record::RecordRef {
            flags,
            seq,
            written_at_ms,
            expires_at_ms,
            key,
            meta,
            value,
        };
        crate::record::encode_v1(&rec, out);
    }

    /// A well-formed hint file (format version 3), or an error for entries it cannot
    /// express or open would refuse.
    pub fn encode_hint(id: u32, segment_len: u64, entries: &[HintEntry]) -> crate::Result<Vec<u8>> {
        crate::hint::encode(id, segment_len, entries)
    }

    /// A well-formed hint file in format version 2 (as older builds wrote it); it can
    /// express entries version 3 cannot, such as duplicates.
    pub fn encode_hint_v2(id: u32, segment_len: u64, entries: &[HintEntry]) -> Vec<u8> {
        crate::hint::encode_v2(id, segment_len, entries)
    }

    /// A well-formed segment header.
    pub fn encode_segment_header(id: u32, base_seq: u64, compacted: bool) -> [u8; 32] {
        let kind = if compacted {
            crate::segment::Kind::Compacted
        } else {
            crate::segment::Kind::Log
        };
        crate::segment::encode_header(id, crate::segment::SegmentHeader { base_seq, kind })
    }

    /// The file names of segment `id` and of its hint.
    pub fn file_names(id: u32) -> (String, String) {
        (crate::segment::file_name(id), crate::hint::file_name(id))
    }
}
