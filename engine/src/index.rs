//! The in-memory index: every live key → where its latest record is.
//!
//! Keys are spread over [`SHARDS`] shards by a hash of the key, so writers and readers
//! of different keys rarely touch the same lock. Each shard is
//! - a slab of [`Slot`]s (key inline up to 16 bytes, and its 32-byte [`Location`]),
//! - a hash table of [`Bucket`]s (slot id, and where the key's record is) for point
//!   lookups: one hash, one key comparison, the record prefetched before the slot is
//!   read,
//! - a key order for listing: a sorted run of slot ids, plus the ids of keys created
//!   since the last list, sorted and merged in only when a list (or a prefix count)
//!   needs the order. Point writes never compare keys for ordering; a store that is
//!   filled and then read pays for order once, at its first list.
//!
//! A removed key's slot stays in the order runs, marked dead, until a merge drops it;
//! only then is its slot reused, so an id in the order always names the key it was
//! sorted as.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use hashbrown::{DefaultHashBuilder, HashTable};
use smallvec::SmallVec;

use crate::expiry::Expiries;
use crate::hint::{HintEntry, Runs};

/// Number of index shards: a power of two well above the core count.
pub(crate) const SHARDS: usize = 16;

/// The shard that holds `key`: a fixed mix of its bytes, the same in every process, so
/// hint files can store their entries grouped by shard (`hint.rs`) and open can fill
/// the shards from them in parallel without splitting entries first. The hash tables
/// inside the shards use a randomly seeded hasher; a client that steers its keys into
/// one shard only makes that shard's lock busier.
pub(crate) fn shard_of(key: &[u8]) -> usize {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = 0x243F_6A88_85A3_08D3 ^ key.len() as u64;
    let mut chunks = key.chunks_exact(8);
    let mut mix = |word: u64| {
        h = (h ^ word).wrapping_mul(K);
        h ^= h >> 29;
    };
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        mix(u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        mix(u64::from_le_bytes(word));
    }
    (h.wrapping_mul(K) >> 60) as usize % SHARDS
}

/// Where a key sits in the index: its hash (for the shard's table), its shard and the
/// bucket it was found in, as [`Index::get_many`] found them, so that the same batch's
/// index update ([`Index::insert_located`]) need neither hash the key again nor walk
/// the table when the bucket still holds it. Only meaningful for the index that computed
/// it (the table hash is seeded per index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    hash: u64,
    shard: usize,
    /// The table bucket the key was found in ([`NO_BUCKET`]: absent). A hint only:
    /// the update checks that the bucket still holds the key before it writes there
    /// (the table may have grown, or the key been removed, since).
    bucket: usize,
    /// Addresses of what an update through `bucket` reads and writes (the bucket, its
    /// control byte, the slot) as they were at the lookup, for [`Located::prefetch`]
    /// only; 0 when absent. Never dereferenced.
    lines: [usize; 3],
}

impl Located {
    /// Asks the CPU for the lines an update through this hint will touch. A large
    /// batch's lookups ran long enough before its update for them to have left the
    /// cache; the writer calls this a few keys ahead of each update. The addresses may
    /// be outdated (the table grew since): a prefetch never faults, it only wastes a
    /// load.
    #[inline]
    pub fn prefetch(&self) {
        for line in self.lines {
            if line != 0 {
                crate::segment::prefetch_lines(line, 1);
            }
        }
    }
}

/// [`Located::bucket`] of a key that was not found.
const NO_BUCKET: usize = usize::MAX;

/// An entry's carried word ([`crate::MetaCarry`]) when the index does not know it.
pub(crate) const NO_CARRY: u64 = u64::MAX;

/// Where a key's latest record lives, and what a read must know without touching disk.
/// 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    /// Segment id.
    pub segment: u32,
    /// Offset of the record inside the segment.
    pub offset: u32,
    /// Length of the whole record (never 0 for a live entry: a record has a header).
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

/// A key, stored inline when it is at most 16 bytes (no allocation of its own).
type Key = SmallVec<[u8; 16]>;

/// An entry of a shard's hash table: the key's slot id, and where the key's record is
/// — a copy of the slot's `loc.segment` and `loc.offset`, written with them (by
/// [`Shard::point`], [`Shard::create`] and the bulk load's `load_one`). With it, a
/// get asks for the record's cache lines as soon as it has the bucket, while the slot's
/// lines are still on their way: the two misses overlap instead of following each
/// other (docs/benchmarks.md, "W2: the record's place in the bucket"). 12 bytes.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    id: u32,
    segment: u32,
    offset: u32,
}

impl Bucket {
    fn new(id: u32, loc: &Location) -> Bucket {
        Bucket {
            id,
            segment: loc.segment,
            offset: loc.offset,
        }
    }
}

/// One entry of a shard's slab. `loc.len == 0` marks a removed key whose slot waits
/// for the next order merge before it can be reused.
#[derive(Debug)]
struct Slot {
    key: Key,
    loc: Location,
}

impl Slot {
    fn is_live(&self) -> bool {
        self.loc.len != 0
    }
}

/// Slot ids in key order.
#[derive(Debug, Default)]
struct Order {
    /// Sorted by key; may hold ids of removed keys (skipped when read).
    sorted: Vec<u32>,
    /// Ids of keys created since the last merge, in creation order.
    pending: Vec<u32>,
    /// Removed keys whose ids are still in `sorted` or `pending`.
    dead: usize,
}

/// One shard: slab, hash table of buckets, key order.
#[derive(Debug, Default)]
struct Shard {
    slots: Vec<Slot>,
    free: Vec<u32>,
    table: HashTable<Bucket>,
    order: Order,
    /// By slot id: the word the slot's record passes on to a put that replaces it
    /// ([`crate::MetaCarry`]), [`NO_CARRY`] when not known. Beside the slab rather
    /// than in it, so that gets never load it; empty until a write with a carry, so a
    /// store that never carries pays nothing for it.
    carries: Vec<u64>,
    /// Bytes of keys too long to be stored inline.
    heap_key_bytes: u64,
}

impl Shard {
    /// The index of `key`'s bucket in the table.
    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.table
            .find_bucket_index(hash, |b| slots[b.id as usize].key.as_slice() == key)
    }

    fn get(&self, hash: u64, key: &[u8]) -> Option<Location> {
        self.get_prefetching(hash, key, |_, _| {})
    }

    /// As `get`, calling `prefetch(segment, offset)` with the record's place of each
    /// bucket it compares the key of, before it reads the slot.
    #[inline]
    fn get_prefetching(
        &self,
        hash: u64,
        key: &[u8],
        prefetch: impl Fn(u32, u32),
    ) -> Option<Location> {
        let slots = &self.slots;
        let bucket = self.table.find(hash, |b| {
            prefetch(b.segment, b.offset);
            slots[b.id as usize].key.as_slice() == key
        })?;
        let loc = slots[bucket.id as usize].loc;
        debug_assert_eq!((bucket.segment, bucket.offset), (loc.segment, loc.offset));
        Some(loc)
    }

    /// The location in bucket `at`, if the bucket holds `key` (a bucket in the table
    /// always names a live slot).
    fn location_at(&self, at: usize, key: &[u8]) -> Option<Location> {
        let bucket = self.table.get_bucket(at)?;
        let slot = &self.slots[bucket.id as usize];
        debug_assert!(slot.is_live());
        (slot.key.as_slice() == key).then_some(slot.loc)
    }

    /// Addresses of bucket `at`, its control byte and its slot ([`Located::lines`]).
    /// The control byte's is worked out from hashbrown's layout (bucket `i` sits
    /// `i + 1` buckets below the control bytes); were that layout to change, the
    /// prefetch would only miss its line.
    fn lines_of(&self, at: usize) -> [usize; 3] {
        let Some(bucket) = self.table.get_bucket(at) else {
            return [0; 3];
        };
        let address = bucket as *const Bucket as usize;
        let ctrl = address + (at + 1) * std::mem::size_of::<Bucket>() + at;
        let slot = &self.slots[bucket.id as usize] as *const Slot as usize;
        [address, ctrl, slot]
    }

    /// Points the entry in bucket `at` (which holds a key) at `loc`; returns its slot
    /// id and where it pointed before. The slot's carried word is the caller's.
    fn point(&mut self, at: usize, loc: Location) -> (u32, Location) {
        let Some(bucket) = self.table.get_bucket_mut(at) else {
            unreachable!("Shard::point is given a full bucket");
        };
        *bucket = Bucket::new(bucket.id, &loc);
        let id = bucket.id;
        (id, std::mem::replace(&mut self.slots[id as usize].loc, loc))
    }

    /// The carried word of slot `id`.
    fn carry(&self, id: u32) -> u64 {
        self.carries.get(id as usize).copied().unwrap_or(NO_CARRY)
    }

    /// Sets the carried word of slot `id`. Every write of a slot's location but a
    /// compaction move (same record, same word) sets it.
    fn set_carry(&mut self, id: u32, word: u64) {
        let id = id as usize;
        if id >= self.carries.len() {
            if word == NO_CARRY {
                return;
            }
            // Grown with the slab's capacity, not doubling on its own.
            let len = self.slots.capacity().max(id + 1);
            self.carries.reserve_exact(len - self.carries.len());
            self.carries.resize(len, NO_CARRY);
        }
        self.carries[id] = word;
    }

    /// Adds a key that is not in the shard, with its carried word.
    fn create(
        &mut self,
        hasher: &DefaultHashBuilder,
        hash: u64,
        key: &[u8],
        loc: Location,
        carry: u64,
    ) {
        debug_assert!(loc.len != 0);
        let id = new_slot(
            &mut self.slots,
            &mut self.free,
            &mut self.heap_key_bytes,
            key,
            loc,
        );
        self.set_carry(id, carry);
        let slots = &self.slots;
        self.table.insert_unique(hash, Bucket::new(id, &loc), |b| {
            hasher.hash_one(shard_key(slots, b.id))
        });
        self.order.pending.push(id);
    }

    /// Removes a key; its slot stays until the next merge of the order.
    fn remove(&mut self, hash: u64, key: &[u8]) -> Option<Location> {
        let slots = &self.slots;
        let entry = self
            .table
            .find_entry(hash, |b| slots[b.id as usize].key.as_slice() == key)
            .ok()?;
        let (Bucket { id, .. }, _) = entry.remove();
        let slot = &mut self.slots[id as usize];
        let loc = std::mem::replace(&mut slot.loc.len, 0);
        let removed = Location {
            len: loc,
            ..slot.loc
        };
        self.order.dead += 1;
        if self.order.dead > ORDER_DEAD_MAX.max(self.table.len() / 2) {
            self.purge_dead();
        }
        Some(removed)
    }

    /// Drops removed keys' ids from the order and frees their slots. No key
    /// comparisons: the runs keep their order.
    fn purge_dead(&mut self) {
        let slots = &self.slots;
        let mut freed = Vec::new();
        for run in [&mut self.order.sorted, &mut self.order.pending] {
            run.retain(|&id| {
                let live = slots[id as usize].is_live();
                if !live {
                    freed.push(id);
                }
                live
            });
        }
        for id in freed {
            let slot = &mut self.slots[id as usize];
            if slot.key.spilled() {
                self.heap_key_bytes -= slot.key.len() as u64;
            }
            slot.key = Key::new();
            self.free.push(id);
        }
        self.order.dead = 0;
    }

    /// True when a list must first bring the order up to date (write lock needed).
    fn order_is_stale(&self) -> bool {
        !self.order.pending.is_empty()
    }

    /// Sorts the keys created since the last merge into the sorted run.
    fn merge_pending(&mut self) {
        self.purge_dead();
        let slots = &self.slots;
        let key = |id: &u32| slots[*id as usize].key.as_slice();
        let mut pending = std::mem::take(&mut self.order.pending);
        pending.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        let sorted = std::mem::take(&mut self.order.sorted);
        let mut merged = Vec::with_capacity(sorted.len() + pending.len());
        let (mut a, mut b) = (
            sorted.into_iter().peekable(),
            pending.into_iter().peekable(),
        );
        loop {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => key(x) <= key(y),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_a { a.next() } else { b.next() };
            merged.extend(next);
        }
        self.order.sorted = merged;
    }

    /// Index in the sorted run of the first key ≥ `bound` (or > when excluded).
    fn position(&self, bound: Bound<&[u8]>) -> usize {
        let slots = &self.slots;
        let key = |id: &u32| slots[*id as usize].key.as_slice();
        match bound {
            Bound::Included(b) => self.order.sorted.partition_point(|id| key(id) < b),
            Bound::Excluded(b) => self.order.sorted.partition_point(|id| key(id) <= b),
            Bound::Unbounded => 0,
        }
    }

    /// Live keys of the sorted run from `lower` on that start with `prefix`, in order
    /// (keys still pending a merge are not walked).
    fn walk<'s>(
        &'s self,
        prefix: &'s [u8],
        lower: Bound<&[u8]>,
    ) -> impl Iterator<Item = &'s Slot> + 's {
        let start = self.position(lower);
        self.order.sorted[start..]
            .iter()
            .map(|&id| &self.slots[id as usize])
            .take_while(move |s| s.key.starts_with(prefix))
            .filter(|s| s.is_live())
    }

    fn bytes(&self) -> u64 {
        (self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.free.capacity() * 4
            + self.table.capacity() * (std::mem::size_of::<Bucket>() + 1)
            + (self.order.sorted.capacity() + self.order.pending.capacity()) * 4
            + self.carries.capacity() * 8) as u64
            + self.heap_key_bytes
    }
}

/// Stores `key` and `loc` in a free slot of the slab (or a new one); returns its id.
fn new_slot(
    slots: &mut Vec<Slot>,
    free: &mut Vec<u32>,
    heap_key_bytes: &mut u64,
    key: &[u8],
    loc: Location,
) -> u32 {
    let key = Key::from_slice(key);
    if key.spilled() {
        *heap_key_bytes += key.len() as u64;
    }
    let slot = Slot { key, loc };
    match free.pop() {
        Some(id) => {
            slots[id as usize] = slot;
            id
        }
        None => {
            slots.push(slot);
            (slots.len() - 1) as u32
        }
    }
}

/// Removed keys a shard tolerates in its order runs before it drops them eagerly.
const ORDER_DEAD_MAX: usize = 4096;

/// The sharded index with its running totals.
#[derive(Debug)]
pub(crate) struct Index {
    shards: Vec<RwLock<Shard>>,
    hasher: DefaultHashBuilder,
    keys: AtomicU64,
    live_bytes: AtomicU64,
    /// Entries that expire, by expiry; kept in step with the shards.
    pub expiries: Expiries,
}

impl Index {
    pub fn new() -> Index {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            hasher: DefaultHashBuilder::default(),
            keys: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
            expiries: Expiries::default(),
        }
    }

    /// The key's hash (for the shard's table) and shard ([`shard_of`]).
    fn locate(&self, key: &[u8]) -> (u64, &RwLock<Shard>) {
        let (hash, shard) = self.shard_index(key);
        (hash, &self.shards[shard])
    }

    fn shard_index(&self, key: &[u8]) -> (u64, usize) {
        (self.hasher.hash_one(key), shard_of(key))
    }

    fn read(shard: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
        shard.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(shard: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
        shard.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The location of `key`, expired or not.
    pub fn get(&self, key: &[u8]) -> Option<Location> {
        let (hash, shard) = self.locate(key);
        Self::read(shard).get(hash, key)
    }

    /// As [`Index::get`], calling `prefetch(segment, offset)` with where the record
    /// is as soon as the key's bucket is found, before the slot is read.
    #[inline]
    pub fn get_prefetching(&self, key: &[u8], prefetch: impl Fn(u32, u32)) -> Option<Location> {
        let (hash, shard) = self.locate(key);
        Self::read(shard).get_prefetching(hash, key, prefetch)
    }

    /// The locations of `keys` (expired or not), in their order, each with where the
    /// key sits ([`Located`], for [`Index::insert_located`]). The keys are taken
    /// shard by shard, each shard's read lock once, so the lookups of a shard run back
    /// to back and the CPU overlaps their cache misses (three per lookup in a large
    /// index: the table's control bytes, its bucket, the slot) instead of waiting for
    /// each in turn between other work, as a loop of [`Index::get`] calls does.
    pub fn get_many(&self, keys: &[&[u8]]) -> Vec<(Located, Option<Location>)> {
        let mut out = Vec::with_capacity(keys.len());
        let mut starts = [0usize; SHARDS + 1];
        for key in keys {
            let (hash, shard) = self.shard_index(key);
            let at = Located {
                hash,
                shard,
                bucket: NO_BUCKET,
                lines: [0; 3],
            };
            out.push((at, None));
            starts[shard + 1] += 1;
        }
        for shard in 0..SHARDS {
            starts[shard + 1] += starts[shard];
        }
        // The key indexes grouped by shard (a counting sort).
        let mut next = starts;
        let mut order = vec![0u32; keys.len()];
        for (i, (at, _)) in out.iter().enumerate() {
            order[next[at.shard]] = i as u32;
            next[at.shard] += 1;
        }
        for shard in 0..SHARDS {
            let ids = &order[starts[shard]..starts[shard + 1]];
            if ids.is_empty() {
                continue;
            }
            let guard = Self::read(&self.shards[shard]);
            for &i in ids {
                let i = i as usize;
                if let Some(at) = guard.find(out[i].0.hash, keys[i]) {
                    out[i].0.bucket = at;
                    out[i].0.lines = guard.lines_of(at);
                    out[i].1 = guard.location_at(at, keys[i]);
                }
            }
        }
        out
    }

    /// As [`Index::get`], with the entry's carried word ([`NO_CARRY`] when not known).
    pub fn get_carried(&self, key: &[u8]) -> Option<(Location, u64)> {
        let (hash, shard) = self.locate(key);
        let shard = Self::read(shard);
        let at = shard.find(hash, key)?;
        let id = shard.table.get_bucket(at)?.id;
        Some((shard.slots[id as usize].loc, shard.carry(id)))
    }

    /// Points `key` at `loc`, whose record passes on `carry` ([`NO_CARRY`]: none
    /// known); returns what it pointed at before.
    pub fn insert(&self, key: &[u8], loc: Location, carry: u64) -> Option<Location> {
        let (hash, shard) = self.shard_index(key);
        let at = Located {
            hash,
            shard,
            bucket: NO_BUCKET,
            lines: [0; 3],
        };
        self.insert_located(key, at, loc, carry)
    }

    /// As [`Index::insert`], with where the key sits already known (from
    /// [`Index::get_many`] of this index): when the slot it was found in still holds
    /// it, the entry is replaced there without a walk of the shard's table (whose lines
    /// a large batch's lookup touched long enough ago to be out of the cache).
    pub fn insert_located(
        &self,
        key: &[u8],
        at: Located,
        loc: Location,
        carry: u64,
    ) -> Option<Location> {
        debug_assert_eq!(
            self.shard_index(key),
            (at.hash, at.shard),
            "located by another index"
        );
        let hash = at.hash;
        let mut shard = Self::write(&self.shards[at.shard]);
        // The bucket `get_many` found the key in, if it still holds it (a key has one
        // bucket); else a walk of the table.
        let found = Some(at.bucket)
            .filter(|&b| b != NO_BUCKET && shard.location_at(b, key).is_some())
            .or_else(|| shard.find(hash, key));
        let old = match found {
            Some(b) => {
                let (id, old) = shard.point(b, loc);
                shard.set_carry(id, carry);
                Some(old)
            }
            None => {
                shard.create(&self.hasher, hash, key, loc, carry);
                None
            }
        };
        drop(shard);
        self.account(key, old.as_ref(), Some(&loc));
        old
    }

    /// Moves `key` from the record at (`segment`, `offset`) to `to` — only if it still
    /// points there (compaction must not undo a newer write). True when moved.
    pub fn repoint(&self, key: &[u8], segment: u32, offset: u32, to: Location) -> bool {
        let (hash, shard) = self.locate(key);
        let mut shard = Self::write(shard);
        let Some(at) = shard.find(hash, key) else {
            return false;
        };
        match shard.table.get_bucket(at) {
            Some(b) if b.segment == segment && b.offset == offset => {}
            _ => return false,
        }
        // The same record in a new place: its carried word stays.
        let (_, old) = shard.point(at, to);
        debug_assert_eq!(old.version, to.version);
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
        let (hash, shard) = self.locate(key);
        let mut shard = Self::write(shard);
        let loc = shard.get(hash, key)?;
        if loc.expires_at_ms != expires_at_ms || !loc.is_expired(now_ms) {
            return None;
        }
        shard.remove(hash, key);
        drop(shard);
        self.account(key, Some(&loc), None);
        Some(loc)
    }

    /// Calls `f` with every entry, one shard at a time (each under its read lock).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &Location)) {
        for shard in &self.shards {
            let shard = Self::read(shard);
            for b in shard.table.iter() {
                let slot = &shard.slots[b.id as usize];
                f(&slot.key, &slot.loc);
            }
        }
    }

    /// Removes `key`; returns where it pointed.
    pub fn remove(&self, key: &[u8]) -> Option<Location> {
        let (hash, shard) = self.locate(key);
        let old = Self::write(shard).remove(hash, key);
        self.account(key, old.as_ref(), None);
        old
    }

    /// Keeps the totals and the expiry order in step with a change of `key`.
    fn account(&self, key: &[u8], old: Option<&Location>, new: Option<&Location>) {
        match (old, new) {
            (None, Some(_)) => {
                self.keys.fetch_add(1, Ordering::Relaxed);
            }
            (Some(_), None) => {
                self.keys.fetch_sub(1, Ordering::Relaxed);
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

    /// A read guard of a shard whose key order is up to date: keys created before
    /// this call are merged into the sorted run first, under the write lock. Keys
    /// created after it were written while the list ran and may be missed, as the
    /// API allows.
    fn ordered(shard: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
        if Self::read(shard).order_is_stale() {
            Self::write(shard).merge_pending();
        }
        Self::read(shard)
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
            let shard = Self::ordered(shard);
            merged.extend(
                shard
                    .walk(prefix, lower)
                    .filter(|s| !s.loc.is_expired(now_ms))
                    .take(limit)
                    .map(|s| (Bytes::copy_from_slice(&s.key), s.loc)),
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
                let shard = Self::ordered(shard);
                shard.walk(prefix, Bound::Included(prefix)).count() as u64
            })
            .sum()
    }

    pub fn keys(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes.load(Ordering::Relaxed)
    }

    /// Heap bytes of the index, counted from the capacities of its tables: slabs,
    /// hash tables (12-byte buckets plus a control byte each), order runs and keys
    /// longer than 16 bytes. The expiry set is not included.
    pub fn estimated_bytes(&self) -> u64 {
        self.shards.iter().map(|s| Self::read(s).bytes()).sum()
    }
}

/// An entry of a bulk load with its key's hash, bucketed by shard.
type ShardEntry<'e, 'k> = (u64, &'e HintEntry<&'k [u8]>);

/// What a bulk load keeps per shard besides the shard itself.
#[derive(Default)]
struct ShardLoad {
    /// Seq of the newest tombstone or expired record of keys that are not in the
    /// index.
    hidden: HashMap<Box<[u8]>, u64>,
    /// Sum of the record lengths of the shard's live keys.
    live_bytes: u64,
    /// Some loaded entry has an expiry (the shard is walked for the expiry order).
    expiring: bool,
    /// How far the shard's slab and key order are populated ahead of the load.
    slots_ahead: Prefaulted,
    pending_ahead: Prefaulted,
}

impl ShardLoad {
    /// Sizes `shard` for `additional` more keys and populates the start of the room.
    fn reserve(&mut self, shard: &mut Shard, hasher: &DefaultHashBuilder, additional: usize) {
        shard.reserve(hasher, additional);
        self.slots_ahead.ahead(&mut shard.slots);
        self.pending_ahead.ahead(&mut shard.order.pending);
    }
}

/// Recovery's bulk load: applies the records of whole segments, met in any order,
/// so that for each key the highest seq wins — a tombstone or an already-expired
/// record included, which leaves the key absent. Shards are filled in parallel, each
/// under its lock, one thread per core; totals and the expiry order are computed once
/// at the end ([`Loader::finish`]).
pub(crate) struct Loader<'i> {
    index: &'i Index,
    /// Per shard, only while loading.
    state: Vec<ShardLoad>,
    /// The highest seq met.
    pub max_seq: u64,
    now_ms: u64,
}

impl<'i> Loader<'i> {
    pub fn new(index: &'i Index, now_ms: u64) -> Loader<'i> {
        Loader {
            index,
            state: (0..SHARDS).map(|_| ShardLoad::default()).collect(),
            max_seq: 0,
            now_ms,
        }
    }

    /// Runs `f(shard number, its load state)` for every shard, the shards split over
    /// one thread per core; returns the results in shard order.
    fn per_shard<T: Send>(&mut self, f: impl Fn(usize, &mut ShardLoad) -> T + Sync) -> Vec<T> {
        // Asked once: the answer reads cgroup files on Linux.
        static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let threads = *THREADS.get_or_init(|| {
            std::thread::available_parallelism()
                .map_or(1, usize::from)
                .clamp(1, SHARDS)
        });
        let per_thread = SHARDS.div_ceil(threads);
        let f = &f;
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .state
                .chunks_mut(per_thread)
                .enumerate()
                .map(|(chunk, states)| {
                    scope.spawn(move || {
                        states
                            .iter_mut()
                            .enumerate()
                            .map(|(i, state)| f(chunk * per_thread + i, state))
                            .collect::<Vec<T>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| match h.join() {
                    Ok(results) => results,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    }

    /// Applies the entries of one segment.
    pub fn apply(&mut self, segment: u32, entries: &[HintEntry<&[u8]>]) {
        let mut buckets: Vec<Vec<ShardEntry<'_, '_>>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for e in entries {
            self.max_seq = self.max_seq.max(e.seq);
            let (hash, shard) = self.index.shard_index(e.key);
            buckets[shard].push((hash, e));
        }
        let (index, now_ms) = (self.index, self.now_ms);
        self.per_shard(|s, state| {
            let bucket = &buckets[s];
            let mut shard = Index::write(&index.shards[s]);
            state.reserve(&mut shard, &index.hasher, bucket.len());
            for (hash, e) in bucket {
                load_one(&mut shard, &index.hasher, state, *hash, segment, e, now_ms);
            }
        });
    }

    /// Applies whole version 2 or 3 hints (`(segment id, runs)`), every shard filled
    /// straight from its runs in one pass: the shards are sized once, then each run is
    /// CRC-checked and its entries checked (framing, bounds, the key's shard) and
    /// loaded as they are decoded. Returns, per hint, whether it was applied; a hint
    /// that was not must be replaced by a scan of its segment.
    ///
    /// Must come before any other `apply` of this loader: when a run of some hint
    /// does not check, the other runs of that hint may already be loaded, so every
    /// shard is emptied and filled again from the hints that did check (a damaged
    /// hint costs a second fill; an intact one is decoded once).
    pub fn apply_runs(&mut self, hints: &[(u32, Runs<'_>)]) -> Vec<bool> {
        debug_assert!(
            self.max_seq == 0 && self.state.iter().all(|s| s.live_bytes == 0),
            "apply_runs runs on an empty loader"
        );
        if hints.is_empty() {
            return Vec::new();
        }
        let mut good = vec![true; hints.len()];
        loop {
            let (index, now_ms, good_ref) = (self.index, self.now_ms, &good);
            // Per shard, per hint still in use: the run's highest seq, `None` if it
            // does not check.
            let checked = self.per_shard(|s, state| {
                let used = hints.iter().zip(good_ref).filter(|(_, ok)| **ok);
                let total: usize = used.clone().map(|((_, runs), _)| runs.count(s)).sum();
                let mut shard = Index::write(&index.shards[s]);
                state.reserve(&mut shard, &index.hasher, total);
                used.map(|((segment, runs), _)| {
                    runs.visit(s, |e| {
                        let hash = index.hasher.hash_one(e.key);
                        load_one(&mut shard, &index.hasher, state, hash, *segment, e, now_ms);
                    })
                })
                .collect::<Vec<Option<u64>>>()
            });
            let in_use: Vec<usize> = (0..hints.len()).filter(|&h| good[h]).collect();
            let mut refused = false;
            for per_hint in &checked {
                for (&h, max_seq) in in_use.iter().zip(per_hint) {
                    if max_seq.is_none() {
                        good[h] = false;
                        refused = true;
                    }
                }
            }
            if !refused {
                // Only hints that are used count for the highest seq: a damaged
                // hint's other runs say nothing trustworthy.
                for max_seq in checked.iter().flatten().flatten() {
                    self.max_seq = self.max_seq.max(*max_seq);
                }
                return good;
            }
            // Each round refuses at least one more hint, so this ends.
            for (shard, state) in self.index.shards.iter().zip(&mut self.state) {
                *Index::write(shard) = Shard::default();
                *state = ShardLoad::default();
            }
        }
    }

    /// Sets the totals and the expiry order from what was loaded, and gives back
    /// table space reserved for entries that turned out to be older versions.
    pub fn finish(self) {
        let index = self.index;
        let (mut keys, mut live_bytes) = (0u64, 0u64);
        for (shard, state) in index.shards.iter().zip(&self.state) {
            let mut shard = Index::write(shard);
            shard.shrink_if_sparse(&index.hasher);
            keys += shard.table.len() as u64;
            live_bytes += state.live_bytes;
            if state.expiring {
                for b in shard.table.iter() {
                    let slot = &shard.slots[b.id as usize];
                    if slot.loc.expires_at_ms != 0 {
                        index
                            .expiries
                            .add(slot.loc.expires_at_ms, Bytes::copy_from_slice(&slot.key));
                    }
                }
            }
        }
        index.keys.store(keys, Ordering::Relaxed);
        index.live_bytes.store(live_bytes, Ordering::Relaxed);
    }
}

impl Shard {
    /// Room for `additional` more keys without growing (bulk load).
    fn reserve(&mut self, hasher: &DefaultHashBuilder, additional: usize) {
        let slots = &self.slots;
        self.table
            .reserve(additional, |b| hasher.hash_one(shard_key(slots, b.id)));
        self.slots.reserve(additional);
        self.order.pending.reserve(additional);
    }

    /// After a bulk load: frees what was reserved for entries that were older versions
    /// of keys met again (more than half of it unused).
    fn shrink_if_sparse(&mut self, hasher: &DefaultHashBuilder) {
        const SLACK: usize = 1024;
        let live = self.table.len();
        if self.table.capacity() > 2 * live + SLACK {
            let slots = &self.slots;
            self.table
                .shrink_to(live, |b| hasher.hash_one(shard_key(slots, b.id)));
        }
        if self.slots.capacity() > 2 * self.slots.len() + SLACK {
            self.slots.shrink_to_fit();
        }
        if self.order.pending.capacity() > 2 * self.order.pending.len() + SLACK {
            self.order.pending.shrink_to_fit();
        }
    }
}

/// Bytes of a vector's spare capacity a bulk load populates at a time, just ahead of
/// where it writes: large enough that the page faults of a 56 MB slab become ~200
/// calls, small enough that what is populated but never written stays small (at most
/// this much per vector and shard, 8 MiB over the 16 shards' slabs and key orders).
const PREFAULT_CHUNK: usize = 256 * 1024;

/// The size of a memory page, asked of the system once.
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        #[cfg(unix)]
        {
            // SAFETY: sysconf only reads a system setting; it has no memory effects.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            if let Ok(page) = usize::try_from(page)
                && page.is_power_of_two()
            {
                return page;
            }
        }
        4096
    })
}

/// Populates a vector's spare capacity just ahead of a bulk load's writes, so the
/// kernel backs it with memory in one call per [`PREFAULT_CHUNK`] instead of one page
/// fault per page. Only what the load is about to write is populated: a shard is
/// reserved for every entry of every hint (older versions and tombstones included),
/// often several times the keys it ends up holding, and populated memory is resident
/// whether it is written or not.
#[derive(Debug, Default)]
struct Prefaulted {
    /// Address of the allocation the mark refers to.
    base: usize,
    /// Address up to which (page-aligned) the allocation was populated.
    upto: usize,
    /// Bytes populated in all (tests).
    populated: usize,
}

impl Prefaulted {
    /// Call after writing to `v`: when the next element would reach past what was
    /// populated, populates the next [`PREFAULT_CHUNK`] of its spare capacity.
    #[inline]
    fn ahead<T>(&mut self, v: &mut Vec<T>) {
        let size = std::mem::size_of::<T>();
        let base = v.as_ptr() as usize;
        let filled = base + v.len() * size;
        if base == self.base && filled + size <= self.upto {
            return;
        }
        self.advance(v, base, filled);
    }

    #[cold]
    fn advance<T>(&mut self, v: &mut Vec<T>, base: usize, filled: usize) {
        if base != self.base {
            // A new allocation (the vector grew): nothing of it was populated here.
            self.base = base;
            self.upto = 0;
        }
        let page = page_size();
        let capacity_end = base + v.capacity() * std::mem::size_of::<T>();
        // Whole pages of the spare capacity only: the start rounded up, the end down,
        // so the range never leaves the allocation nor touches a written element.
        let start = self.upto.max(filled).next_multiple_of(page);
        let end = (start + PREFAULT_CHUNK).min(capacity_end) / page * page;
        if end > start {
            populate(v, start, end);
            self.populated += end - start;
        }
        self.upto = self.upto.max(end).max(filled + std::mem::size_of::<T>());
    }
}

/// Asks the kernel to back `[start, end)` (page-aligned, inside `v`'s spare capacity)
/// with memory now, in one call. The slab of 1M keys is 56 MB: ~14,000 faults, about a
/// quarter of the CPU time of an open from hints on a 2-core VM; populating ahead
/// saves 15–18 % of that CPU time (docs/benchmarks.md). Only advice: on other systems,
/// kernels before 5.14 (`EINVAL`) or any failure, the pages fault in as they are
/// written, as before.
fn populate<T>(v: &mut Vec<T>, start: usize, end: usize) {
    #[cfg(target_os = "linux")]
    {
        let spare = v.spare_capacity_mut().as_mut_ptr_range();
        debug_assert!(spare.start as usize <= start && end <= spare.end as usize);
        if start < spare.start as usize || end > spare.end as usize {
            return;
        }
        // SAFETY: `[start, end)` is checked just above to lie inside the spare capacity
        // of `v`'s allocation (and the caller aligned both ends to pages of
        // `page_size()`, which madvise requires): memory that holds no values and that
        // nothing else references while we hold `&mut v`. MADV_POPULATE_WRITE only maps
        // those pages in writable, as a write would; it never changes their contents
        // (fresh pages read as zero before and after) and never unmaps or moves them.
        // Its result is ignored: failing leaves the pages to fault in when written.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (v, start, end);
}

fn shard_key(slots: &[Slot], id: u32) -> &[u8] {
    slots[id as usize].key.as_slice()
}

/// One record of a bulk load: the highest seq per key wins.
fn load_one(
    shard: &mut Shard,
    hasher: &DefaultHashBuilder,
    state: &mut ShardLoad,
    hash: u64,
    segment: u32,
    e: &HintEntry<&[u8]>,
    now_ms: u64,
) {
    let hidden = &mut state.hidden;
    if !hidden.is_empty() && hidden.get(e.key).is_some_and(|&s| s >= e.seq) {
        return;
    }
    let expired = e.expires_at_ms != 0 && e.expires_at_ms <= now_ms;
    if e.tombstone || expired {
        match shard.get(hash, e.key) {
            Some(loc) if loc.version >= e.seq => return,
            Some(_) => {
                if let Some(old) = shard.remove(hash, e.key) {
                    state.live_bytes = state.live_bytes.saturating_sub(u64::from(old.len));
                }
            }
            None => {}
        }
        hidden.insert(e.key.into(), e.seq);
        return;
    }
    let loc = Location {
        segment,
        offset: e.offset,
        len: e.len,
        expires_at_ms: e.expires_at_ms,
        version: e.seq,
    };
    // One probe of the table: the key's entry, or the free bucket it goes into.
    let Shard {
        slots,
        table,
        free,
        order,
        heap_key_bytes,
        carries,
    } = shard;
    // A loaded record's word is not known (slots reused or replaced lose theirs).
    let mut forget_carry = |id: u32| {
        if let Some(word) = carries.get_mut(id as usize) {
            *word = NO_CARRY;
        }
    };
    let entry = table.entry(
        hash,
        |b| slots[b.id as usize].key.as_slice() == e.key,
        |b| hasher.hash_one(shard_key(slots, b.id)),
    );
    match entry {
        hashbrown::hash_table::Entry::Occupied(mut found) => {
            let bucket = found.get_mut();
            let slot = &mut slots[bucket.id as usize].loc;
            if slot.version >= e.seq {
                return;
            }
            *bucket = Bucket::new(bucket.id, &loc);
            forget_carry(bucket.id);
            let old = std::mem::replace(slot, loc);
            state.live_bytes = state.live_bytes.saturating_sub(u64::from(old.len));
        }
        hashbrown::hash_table::Entry::Vacant(vacant) => {
            let id = new_slot(slots, free, heap_key_bytes, e.key, loc);
            forget_carry(id);
            vacant.insert(Bucket::new(id, &loc));
            order.pending.push(id);
            state.slots_ahead.ahead(slots);
            state.pending_ahead.ahead(&mut order.pending);
        }
    }
    state.live_bytes += u64::from(loc.len);
    state.expiring |= loc.expires_at_ms != 0;
    if !hidden.is_empty() {
        hidden.remove(e.key);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

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

    fn keys(v: Vec<(Bytes, Location)>) -> Vec<Bytes> {
        v.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn range_merges_shards_in_byte_order_and_honours_start_after() {
        let index = Index::new();
        for (i, k) in ["a/3", "a/1", "b/1", "a/2", "a/10"].iter().enumerate() {
            index.insert(k.as_bytes(), loc(i as u64 + 1), NO_CARRY);
        }
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
    fn shard_of_spreads_similar_keys_evenly() {
        for make in [
            |i: u32| format!("key{i:013}").into_bytes(),
            |i: u32| format!("user/{i}").into_bytes(),
            |i: u32| format!("a/very/long/common/prefix/of/a/path/{i:08}.json").into_bytes(),
        ] {
            let mut counts = [0u32; SHARDS];
            for i in 0..16_000 {
                counts[shard_of(&make(i))] += 1;
            }
            assert!(
                counts.iter().all(|&c| (800..1200).contains(&c)),
                "{counts:?}"
            );
        }
    }

    #[test]
    fn get_many_answers_as_get_does_in_the_callers_order() {
        let index = Index::new();
        for i in 0..2_000u64 {
            if i % 3 != 0 {
                index.insert(format!("k{i}").as_bytes(), loc(i + 1), NO_CARRY);
            }
        }
        // Present, absent, repeated and long keys, in an order unrelated to the shards.
        let mut names: Vec<Vec<u8>> = (0..2_000u64)
            .rev()
            .map(|i| format!("k{}", (i * 7919) % 2_000).into_bytes())
            .collect();
        names.push(b"k1".to_vec());
        names.push(format!("k{}", "x".repeat(40)).into_bytes());
        names.push(Vec::new());
        let keys: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let many = index.get_many(&keys);
        assert_eq!(many.len(), keys.len());
        for (key, (_, found)) in keys.iter().zip(&many) {
            assert_eq!(*found, index.get(key), "{}", String::from_utf8_lossy(key));
        }
        assert_eq!(
            many.iter().filter(|(_, found)| found.is_some()).count(),
            1_333 + 1
        );
        assert!(index.get_many(&[]).is_empty());
        // Where each key sits, as found, takes an update to the key's own entry, and
        // creates an absent one where `get` finds it.
        for (i, (key, (at, _))) in keys.iter().zip(&many).enumerate().skip(1_990) {
            let before = index.get(key);
            assert_eq!(
                index.insert_located(key, *at, loc(9_000 + i as u64), NO_CARRY),
                before
            );
            assert_eq!(index.get(key), Some(loc(9_000 + i as u64)));
        }
    }

    #[test]
    fn an_update_through_a_stale_bucket_hint_finds_the_key_again() {
        let index = Index::new();
        for i in 0..64u64 {
            index.insert(format!("k{i}").as_bytes(), loc(i + 1), NO_CARRY);
        }
        let names: Vec<Vec<u8>> = (0..64u64).map(|i| format!("k{i}").into_bytes()).collect();
        let keys: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let hints = index.get_many(&keys);
        // After the lookups: every key removed, the removed slots purged and reused by
        // new keys, so each hint names a bucket that now holds another key (or none);
        // the update must create each key anew.
        for key in &keys {
            index.remove(key);
        }
        for shard in &index.shards {
            Index::write(shard).purge_dead();
        }
        for i in 0..64u64 {
            index.insert(format!("new{i}").as_bytes(), loc(500 + i), NO_CARRY);
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                index.insert_located(key, hints[i].0, loc(900 + i as u64), NO_CARRY),
                None
            );
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(index.get(key), Some(loc(900 + i as u64)));
            assert_eq!(
                index.get(format!("new{i}").as_bytes()),
                Some(loc(500 + i as u64))
            );
        }
        assert_eq!(index.keys(), 128);
        // A hint to the bucket of a removed (not yet purged) key: the key is created,
        // not revived in place.
        let hints = index.get_many(&keys[..1]);
        index.remove(keys[0]);
        assert_eq!(
            index.insert_located(keys[0], hints[0].0, loc(7), NO_CARRY),
            None
        );
        assert_eq!(index.get(keys[0]), Some(loc(7)));
        assert_eq!(index.keys(), 128);
    }

    /// Every bucket's copy of its record's place equals its slot's.
    fn assert_buckets_agree(index: &Index) {
        for shard in &index.shards {
            let shard = Index::read(shard);
            for b in shard.table.iter() {
                let loc = shard.slots[b.id as usize].loc;
                assert_eq!((b.segment, b.offset), (loc.segment, loc.offset));
            }
        }
    }

    /// A get prefetches the record at the bucket's copy of its place, so every write
    /// of a location must write the copy too: an update through a bucket hint or a
    /// table walk, a repoint, and a bulk load that meets a newer version.
    #[test]
    fn every_write_of_a_location_moves_the_buckets_copy_too() {
        let at = |segment: u32, offset: u32, version: u64| Location {
            segment,
            offset,
            len: 50,
            expires_at_ms: 0,
            version,
        };
        let index = Index::new();
        let names: Vec<Vec<u8>> = (0..200u32).map(|i| format!("k{i}").into_bytes()).collect();
        let keys: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        for (i, key) in keys.iter().enumerate() {
            index.insert(key, at(1, 32 + i as u32 * 50, 1), NO_CARRY);
        }
        assert_buckets_agree(&index);
        let hints = index.get_many(&keys);
        for (i, key) in keys.iter().enumerate() {
            index.insert_located(key, hints[i].0, at(2, 32 + i as u32 * 50, 2), NO_CARRY);
        }
        assert_buckets_agree(&index);
        for (i, key) in keys.iter().enumerate() {
            index.insert(key, at(3, 32 + i as u32 * 50, 3), NO_CARRY);
        }
        assert_buckets_agree(&index);
        for (i, key) in keys.iter().enumerate() {
            let from = 32 + i as u32 * 50;
            assert!(index.repoint(key, 3, from, at(4, 32 + i as u32 * 60, 3)));
        }
        assert_buckets_agree(&index);
        let seen = |prefetch: &std::cell::Cell<Option<(u32, u32)>>, key: &[u8]| {
            let loc = index.get_prefetching(key, |s, o| prefetch.set(Some((s, o))));
            (prefetch.get(), loc.map(|l| (l.segment, l.offset)))
        };
        let prefetch = std::cell::Cell::new(None);
        let (asked, found) = seen(&prefetch, keys[7]);
        assert_eq!(asked, found);
        assert_eq!(found, Some((4, 32 + 7 * 60)));

        use crate::hint::HintEntry;
        let loaded = Index::new();
        let mut loader = Loader::new(&loaded, 0);
        for (segment, seq) in [(5, 1), (6, 2)] {
            let entries: Vec<HintEntry<&[u8]>> = keys
                .iter()
                .enumerate()
                .map(|(i, key)| HintEntry {
                    tombstone: false,
                    seq,
                    expires_at_ms: 0,
                    offset: 32 + i as u32 * (10 + segment),
                    len: 50,
                    key: *key,
                })
                .collect();
            loader.apply(segment, &entries);
        }
        loader.finish();
        assert_buckets_agree(&loaded);
        assert_eq!(
            loaded.get(keys[9]).map(|l| (l.segment, l.offset)),
            Some((6, 32 + 9 * 16))
        );
    }

    /// `Located::prefetch` guesses a bucket's control byte from hashbrown's layout:
    /// bucket `i` sits `i + 1` buckets below the control bytes, so the guessed start of
    /// the control bytes is the same for every bucket of a table.
    /// Fails if a hashbrown release lays its table out otherwise (the prefetch would
    /// then miss the control byte's line: slower bulk updates, nothing worse).
    #[test]
    fn the_control_byte_guess_matches_hashbrowns_layout() {
        let index = Index::new();
        for i in 0..5_000u32 {
            index.insert(
                format!("key/{i}").as_bytes(),
                loc(u64::from(i) + 1),
                NO_CARRY,
            );
        }
        for shard in &index.shards {
            let shard = Index::read(shard);
            let mut starts = std::collections::BTreeSet::new();
            for at in 0..shard.table.num_buckets() {
                if shard.table.get_bucket(at).is_some() {
                    let [bucket, ctrl, slot] = shard.lines_of(at);
                    starts.insert(ctrl - at);
                    assert!(bucket < ctrl && slot != 0);
                }
            }
            assert_eq!(starts.len(), 1, "one start of the control bytes per table");
        }
    }

    #[test]
    fn expired_keys_are_not_listed() {
        let index = Index::new();
        let mut l = loc(1);
        l.expires_at_ms = 100;
        index.insert(b"k1", l, NO_CARRY);
        index.insert(b"k2", loc(2), NO_CARRY);
        assert_eq!(index.range(b"k", None, 10, 99).len(), 2);
        assert_eq!(index.range(b"k", None, 10, 100).len(), 1);
    }

    #[test]
    fn long_keys_and_slot_reuse_after_many_removals_keep_lists_right() {
        let index = Index::new();
        let long = |i: u32| format!("long/{i:06}/{}", "x".repeat(40)).into_bytes();
        for round in 0..3u64 {
            for i in 0..20_000u32 {
                index.insert(&long(i), loc(round * 100_000 + u64::from(i) + 1), NO_CARRY);
            }
            assert_eq!(index.count_prefix(b"long/"), 20_000);
            for i in (0..20_000u32).filter(|i| i % 3 != 0) {
                assert!(index.remove(&long(i)).is_some());
            }
            let listed = index.range(b"long/", None, 100_000, 0);
            assert_eq!(listed.len(), 6667);
            assert!(listed.windows(2).all(|w| w[0].0 < w[1].0));
        }
        assert!(index.estimated_bytes() > 0);
    }

    /// Populating ahead of a fill keeps to what is written plus one chunk, however
    /// much room was reserved, and never goes past the vector's capacity.
    #[test]
    fn prefaulting_stays_just_ahead_of_the_fill() {
        let page = page_size();
        assert!(page.is_power_of_two() && page >= 4096, "{page}");
        let mut v: Vec<u64> = Vec::with_capacity(4_000_000);
        let mut ahead = Prefaulted::default();
        for i in 0..100_000u64 {
            v.push(i);
            ahead.ahead(&mut v);
            let written = v.len() * 8;
            assert!(
                ahead.populated <= written + PREFAULT_CHUNK + page,
                "{} populated after {written} bytes written",
                ahead.populated
            );
        }
        assert!(ahead.populated >= 800_000 - page, "{}", ahead.populated);
        // A small vector: never more than its capacity.
        let mut small: Vec<u64> = Vec::with_capacity(3000);
        let mut ahead = Prefaulted::default();
        for i in 0..3000 {
            small.push(i);
            ahead.ahead(&mut small);
        }
        assert!(ahead.populated <= 3000 * 8, "{}", ahead.populated);
    }

    /// A shard is reserved for every entry of every hint; with eight versions of each
    /// key only an eighth of that is written, and only that (plus a chunk) may become
    /// resident (it all did when the whole reservation was populated).
    #[test]
    fn a_bulk_load_populates_only_what_it_fills() {
        use crate::hint::{self, Decoded, HintEntry};
        const KEYS: u32 = 25_000;
        const VERSIONS: u32 = 8;
        let hints: Vec<Vec<u8>> = (0..VERSIONS)
            .map(|v| {
                let entries: Vec<HintEntry> = (0..KEYS)
                    .map(|k| HintEntry {
                        tombstone: false,
                        seq: u64::from(v * KEYS + k + 1),
                        expires_at_ms: 0,
                        offset: 32 + k * 100,
                        len: 100,
                        key: format!("key/{k:08}").into_bytes(),
                    })
                    .collect();
                hint::encode(v + 1, 32 + u64::from(KEYS) * 100, &entries).expect("encodes")
            })
            .collect();
        let runs: Vec<_> = hints
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let id = i as u32 + 1;
                match hint::decode_any(bytes, id, 32 + u64::from(KEYS) * 100) {
                    Some(Decoded::Runs(runs)) => (id, *runs),
                    _ => panic!("a version 3 hint"),
                }
            })
            .collect();
        let index = Index::new();
        let mut loader = Loader::new(&index, 0);
        assert!(loader.apply_runs(&runs).iter().all(|&ok| ok));
        let page = page_size();
        for (s, state) in loader.state.iter().enumerate() {
            let shard = Index::read(&index.shards[s]);
            let slot = std::mem::size_of::<Slot>();
            let (filled, reserved) = (shard.slots.len() * slot, shard.slots.capacity() * slot);
            assert!(reserved >= 7 * filled, "shard {s}: {reserved} for {filled}");
            let bound = filled + PREFAULT_CHUNK + page;
            assert!(
                state.slots_ahead.populated <= bound,
                "shard {s}: {} of the slab populated for {filled} written",
                state.slots_ahead.populated
            );
            assert!(bound < reserved, "the bound means something");
            let pending = shard.order.pending.len() * 4;
            assert!(state.pending_ahead.populated <= pending + PREFAULT_CHUNK + page);
        }
        loader.finish();
        assert_eq!(index.keys(), u64::from(KEYS));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16),
        Remove(u16),
        List(u8, Option<u16>, usize),
    }

    fn key(k: u16) -> Vec<u8> {
        // Short keys (inline) and long ones (on the heap), under a few prefixes.
        let long = if k.is_multiple_of(5) {
            "-with-a-long-tail-beyond-sixteen"
        } else {
            ""
        };
        format!("{}{k:04}{long}", ["a/", "b/", "ab/"][usize::from(k % 3)]).into_bytes()
    }

    proptest! {
        #[test]
        fn the_index_agrees_with_a_btreemap(ops in prop::collection::vec(prop_oneof![
            4 => (0u16..300).prop_map(Op::Insert),
            3 => (0u16..300).prop_map(Op::Remove),
            1 => (0u8..4, prop::option::of(0u16..300), 1usize..50).prop_map(|(p, a, l)| Op::List(p, a, l)),
        ], 1..400)) {
            let index = Index::new();
            let mut model = BTreeMap::new();
            for (v, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(k) => {
                        let old = index.insert(&key(k), loc(v as u64 + 1), NO_CARRY).map(|l| l.version);
                        prop_assert_eq!(old, model.insert(key(k), v as u64 + 1));
                    }
                    Op::Remove(k) => {
                        let old = index.remove(&key(k)).map(|l| l.version);
                        prop_assert_eq!(old, model.remove(&key(k)));
                    }
                    Op::List(p, after, limit) => {
                        let prefix: &[u8] = [&b""[..], b"a", b"ab/", b"b/"][usize::from(p)];
                        let after = after.map(key);
                        let got: Vec<Vec<u8>> = keys(index.range(prefix, after.as_deref(), limit, 0))
                            .into_iter().map(|k| k.to_vec()).collect();
                        let want: Vec<Vec<u8>> = model.keys()
                            .filter(|k| k.starts_with(prefix))
                            .filter(|k| after.as_ref().is_none_or(|a| k.as_slice() > a.as_slice()))
                            .take(limit).cloned().collect();
                        prop_assert_eq!(got, want);
                        let count = model.keys().filter(|k| k.starts_with(prefix)).count() as u64;
                        prop_assert_eq!(index.count_prefix(prefix), count);
                    }
                }
                prop_assert_eq!(index.keys(), model.len() as u64);
            }
            for (k, v) in &model {
                prop_assert_eq!(index.get(k).map(|l| l.version), Some(*v));
            }
        }
    }
}
