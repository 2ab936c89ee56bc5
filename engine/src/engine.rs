//! The `Engine` handle: the public face of the store.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::{Batch, Clock, Entry, Expect, ListItem, Options, Result, Stats, WriteOptions};

/// Longest key: 64 KiB.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
/// Largest metadata section: 64 KiB.
pub const META_BYTES_MAX: usize = 64 * 1024;
/// Largest value: 512 MiB.
pub const VALUE_BYTES_MAX: usize = 512 * 1024 * 1024;
/// Largest batch, all records together: 1 GiB.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024 * 1024;

/// A handle to an open store. Cheap to clone; every clone shares the same store.
/// `Send + Sync`: share it between threads freely.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<()>,
}

impl Engine {
    /// Opens (or creates) the store in `dir`, recovering from whatever a crash left.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Engine> {
        let _ = (dir.as_ref(), options, &Arc::new(()));
        todo!()
    }

    /// Stores `value` under `key`; returns the write's version.
    pub fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: WriteOptions,
    ) -> Result<u64> {
        let mut batch = Batch::new();
        batch.put(key, value, options);
        Ok(self.apply(batch)?[0])
    }

    /// Reads the live entry of `key`; `None` when absent or expired.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let _ = (key, &self.inner);
        todo!()
    }

    /// Writes a tombstone for `key`; returns its version.
    pub fn delete(&self, key: impl Into<Bytes>) -> Result<u64> {
        let mut batch = Batch::new();
        batch.delete(key);
        Ok(self.apply(batch)?[0])
    }

    /// Applies a batch atomically; returns one version per operation, increasing in
    /// the order of the operations.
    pub fn apply(&self, batch: Batch) -> Result<Vec<u64>> {
        let _ = (batch, Expect::Absent);
        todo!()
    }

    /// Submits a batch without waiting: `done` runs on the writer thread once the
    /// batch is durable (per the sync policy) or has failed. For async callers: send
    /// the result through a oneshot channel instead of blocking a runtime thread.
    /// `done` must be quick and must not call back into the engine's write path.
    pub fn apply_then(&self, batch: Batch, done: impl FnOnce(Result<Vec<u64>>) + Send + 'static) {
        let _ = (batch, done);
        todo!()
    }

    /// Live keys starting with `prefix`, strictly after `start_after` if given, in
    /// ascending byte order, at most `limit` of them.
    pub fn list(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<ListItem>> {
        let _ = (prefix, start_after, limit);
        todo!()
    }

    /// Number of keys in the index starting with `prefix` (expired keys not yet swept
    /// included).
    pub fn count_prefix(&self, prefix: &[u8]) -> u64 {
        let _ = prefix;
        todo!()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        todo!()
    }

    /// The engine's clock (the one given in [`Options`]).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        todo!()
    }

    /// Makes every acknowledged write durable now, whatever the sync policy.
    pub fn sync(&self) -> Result<()> {
        todo!()
    }

    /// Flushes, syncs, stops the writer and releases the folder's lock. Other clones of
    /// this handle get [`crate::Error::Closed`] afterwards.
    pub fn close(self) -> Result<()> {
        todo!()
    }
}
