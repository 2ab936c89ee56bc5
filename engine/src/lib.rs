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

mod backup;
mod batch;
mod compaction;
mod engine;
mod error;
mod expiry;
mod hint;
mod index;
mod maintenance;
mod options;
mod record;
mod recovery;
mod segment;
mod types;
pub mod verify;
mod writer;

pub use backup::BackupReport;
pub use batch::{Batch, Expect, Op, WriteOptions};
pub use compaction::CompactionReport;
pub use engine::{BATCH_BYTES_MAX, Engine, KEY_BYTES_MAX, META_BYTES_MAX, VALUE_BYTES_MAX};
pub use error::{Error, Result};
pub use options::{
    Clock, CompactionOptions, FaultHook, Options, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, SWEEP_INTERVAL_DEFAULT, SyncPolicy, SystemClock,
};
pub use types::{Entry, ListItem, Stats};
