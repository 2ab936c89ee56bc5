//! The in-memory index: every live key → where its latest record is.
//!
//! Keys are spread over [`SHARDS`] ordered maps by a hash of the key, so writers and
//! readers of different keys rarely touch the same lock, and each shard keeps its keys
//! in byte order for listing; a list merges the shards' ranges.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::expiry::Expiries;

/// Number of index shards: a power of two well above the core count.
pub(crate) const SHARDS: usize = 16;

/// Where a key's latest record lives, and what a read must know without touching disk.
/// 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    /// Segment id.
    pub segment: u32,
    /// Offset of the record inside the segment.
    pub offset: u32,
    /// Length of the whole record.
    pub len: u32,
    /// Expiry in ms since the epoch; 0 = never.
    pub expires_at_ms: u64,
    /// The record's seq, i.e. the entry's version.
    pub version: u64,
}

impl Location {
    /// True when the entry has expired at `now_ms` (expiry is exclusive: an entry
    /// expiring at t is gone at t).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }
}

type Shard = BTreeMap<Box<[u8]>, Location>;

/// The sharded index with its running totals.
#[derive(Debug)]
pub(crate) struct Index {
    shards: Vec<RwLock<Shard>>,
    keys: AtomicU64,
    key_bytes: AtomicU64,
    live_bytes: AtomicU64,
    /// Entries that expire, by expiry; kept in step with the shards.
    pub expiries: Expiries,
}

fn shard_of(key: &[u8]) -> usize {
    crc32fast::hash(key) as usize % SHARDS
}

impl Index {
    pub fn new() -> Index {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::new(BTreeMap::new())).collect(),
            keys: AtomicU64::new(0),
            key_bytes: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
            expiries: Expiries::default(),
        }
    }

    fn shard(&self, key: &[u8]) -> &RwLock<Shard> {
        &self.shards[shard_of(key)]
    }

    /// The location of `key`, expired or not.
    pub fn get(&self, key: &[u8]) -> Option<Location> {
        let shard = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
        shard.get(key).copied()
    }

    /// Points `key` at `loc`; returns what it pointed at before.
    pub fn insert(&self, key: &[u8], loc: Location) -> Option<Location> {
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        let old = match shard.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, loc)),
            None => {
                shard.insert(key.into(), loc);
                None
            }
        };
        drop(shard);
        self.account(key, old.as_ref(), Some(&loc));
        old
    }

    /// Points `key` at `loc` unless it already points at a record at least as new
    /// (recovery meets records in file order, not version order). One lookup.
    pub fn insert_if_newer(&self, key: &[u8], loc: Location) -> bool {
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        let old = match shard.get_mut(key) {
            Some(slot) if slot.version >= loc.version => return false,
            Some(slot) => Some(std::mem::replace(slot, loc)),
            None => {
                shard.insert(key.into(), loc);
                None
            }
        };
        drop(shard);
        self.account(key, old.as_ref(), Some(&loc));
        true
    }

    /// Removes `key` if it points at a record older than `seq` (recovery meeting a
    /// tombstone or an expired record). True unless the index holds something newer.
    pub fn remove_if_older(&self, key: &[u8], seq: u64) -> bool {
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        let old = match shard.get(key) {
            Some(loc) if loc.version >= seq => return false,
            Some(_) => shard.remove(key),
            None => None,
        };
        drop(shard);
        self.account(key, old.as_ref(), None);
        true
    }

    /// Moves `key` from the record at (`segment`, `offset`) to `to` — only if it still
    /// points there (compaction must not undo a newer write). True when moved.
    pub fn repoint(&self, key: &[u8], segment: u32, offset: u32, to: Location) -> bool {
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = shard.get_mut(key) else {
            return false;
        };
        if slot.segment != segment || slot.offset != offset {
            return false;
        }
        debug_assert_eq!(slot.version, to.version);
        let old = std::mem::replace(slot, to);
        drop(shard);
        self.live_bytes
            .fetch_sub(u64::from(old.len), Ordering::Relaxed);
        self.live_bytes
            .fetch_add(u64::from(to.len), Ordering::Relaxed);
        true
    }

    /// Removes `key` if its entry expired at `now_ms` with exactly `expires_at_ms`
    /// (a newer write since the sweep looked keeps it). Returns the removed entry.
    pub fn remove_expired(&self, key: &[u8], expires_at_ms: u64, now_ms: u64) -> Option<Location> {
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        let loc = *shard.get(key)?;
        if loc.expires_at_ms != expires_at_ms || !loc.is_expired(now_ms) {
            return None;
        }
        shard.remove(key);
        drop(shard);
        self.account(key, Some(&loc), None);
        Some(loc)
    }

    /// Calls `f` with every entry, one shard at a time (each under its read lock).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &Location)) {
        for shard in &self.shards {
            let shard = shard.read().unwrap_or_else(|p| p.into_inner());
            for (k, loc) in shard.iter() {
                f(k, loc);
            }
        }
    }

    /// Removes `key`; returns where it pointed.
    pub fn remove(&self, key: &[u8]) -> Option<Location> {
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        let old = shard.remove(key);
        drop(shard);
        self.account(key, old.as_ref(), None);
        old
    }

    /// Keeps the totals and the expiry order in step with a change of `key`.
    fn account(&self, key: &[u8], old: Option<&Location>, new: Option<&Location>) {
        let key_len = key.len();
        match (old, new) {
            (None, Some(_)) => {
                self.keys.fetch_add(1, Ordering::Relaxed);
                self.key_bytes.fetch_add(key_len as u64, Ordering::Relaxed);
            }
            (Some(_), None) => {
                self.keys.fetch_sub(1, Ordering::Relaxed);
                self.key_bytes.fetch_sub(key_len as u64, Ordering::Relaxed);
            }
            _ => {}
        }
        if let Some(old) = old {
            self.live_bytes
                .fetch_sub(u64::from(old.len), Ordering::Relaxed);
        }
        if let Some(new) = new {
            self.live_bytes
                .fetch_add(u64::from(new.len), Ordering::Relaxed);
        }
        let old_expiry = old.map_or(0, |l| l.expires_at_ms);
        let new_expiry = new.map_or(0, |l| l.expires_at_ms);
        if old_expiry != new_expiry {
            let key = Bytes::copy_from_slice(key);
            if old_expiry != 0 {
                self.expiries.remove(old_expiry, &key);
            }
            if new_expiry != 0 {
                self.expiries.add(new_expiry, key);
            }
        }
    }

    /// Unexpired keys with `prefix`, strictly after `start_after`, in byte order, at
    /// most `limit`.
    pub fn range(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
        now_ms: u64,
    ) -> Vec<(Bytes, Location)> {
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut merged: Vec<(Bytes, Location)> = Vec::new();
        for shard in &self.shards {
            let shard = shard.read().unwrap_or_else(|p| p.into_inner());
            let range = shard.range::<[u8], _>((lower, Bound::Unbounded));
            merged.extend(
                range
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .filter(|(_, loc)| !loc.is_expired(now_ms))
                    .take(limit)
                    .map(|(k, loc)| (Bytes::copy_from_slice(k), *loc)),
            );
        }
        merged.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        merged.truncate(limit);
        merged
    }

    /// Keys with `prefix`, expired or not.
    pub fn count_prefix(&self, prefix: &[u8]) -> u64 {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.read().unwrap_or_else(|p| p.into_inner());
                shard
                    .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .count() as u64
            })
            .sum()
    }

    pub fn keys(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes.load(Ordering::Relaxed)
    }

    /// Estimated heap bytes: per key, its slot in a B-tree node (boxed key pointer and
    /// location, at the ~70 % fill of random inserts) plus the key's own allocation
    /// (rounded to the allocator's 8-byte granule plus its 8-byte chunk header).
    pub fn estimated_bytes(&self) -> u64 {
        const SLOT_BYTES: u64 = (16 + std::mem::size_of::<Location>() as u64) * 10 / 7;
        let keys = self.keys();
        let key_bytes = self.key_bytes.load(Ordering::Relaxed);
        keys * (SLOT_BYTES + 8 + 7) + key_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(version: u64) -> Location {
        Location {
            segment: 1,
            offset: 32,
            len: 50,
            expires_at_ms: 0,
            version,
        }
    }

    #[test]
    fn range_merges_shards_in_byte_order_and_honours_start_after() {
        let index = Index::new();
        for (i, k) in ["a/3", "a/1", "b/1", "a/2", "a/10"].iter().enumerate() {
            index.insert(k.as_bytes(), loc(i as u64 + 1));
        }
        let keys = |v: Vec<(Bytes, Location)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(index.range(b"a/", None, 10, 0)),
            vec!["a/1", "a/10", "a/2", "a/3"]
        );
        assert_eq!(
            keys(index.range(b"a/", Some(b"a/10"), 2, 0)),
            vec!["a/2", "a/3"]
        );
        assert_eq!(index.count_prefix(b"a/"), 4);
        assert_eq!(index.keys(), 5);
        assert_eq!(index.live_bytes(), 250);
    }

    #[test]
    fn expired_keys_are_not_listed() {
        let index = Index::new();
        let mut l = loc(1);
        l.expires_at_ms = 100;
        index.insert(b"k1", l);
        index.insert(b"k2", loc(2));
        assert_eq!(index.range(b"k", None, 10, 99).len(), 2);
        assert_eq!(index.range(b"k", None, 10, 100).len(), 1);
    }
}
