//! The `Engine` handle: the public face of the store.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::Sender;

use crate::backup::{self, Snapshot};
use crate::index::{Index, Location};
use crate::maintenance::{Control, Maintenance};
use crate::oneshot;
use crate::record::{self, HEADER_BYTES_MAX};
use crate::recovery;
use crate::segment::{self, MapAddresses, Segment};
use crate::writer::{Done, Msg, Writer, WriterCell};
use crate::{
    Applied, BackupReport, Batch, Clock, CompactionReport, Entry, Error, ListItem, Op, Options,
    Result, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, Stats, SyncPolicy, WriteOptions,
};

/// Longest key: 64 KiB.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
/// Largest metadata section: 64 KiB.
pub const META_BYTES_MAX: usize = 64 * 1024;
/// Largest value: 512 MiB.
pub const VALUE_BYTES_MAX: usize = 512 * 1024 * 1024;
/// Largest batch, all records together: 1 GiB.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024 * 1024;

/// Name of the lock file inside the data folder.
const LOCK_FILE: &str = "LOCK";

/// Counters the writer bumps and `stats()` reads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub fsyncs: AtomicU64,
    pub write_batches: AtomicU64,
    pub records_written: AtomicU64,
    pub last_version: AtomicU64,
    pub truncated_bytes: AtomicU64,
    pub compactions: AtomicU64,
    pub bytes_reclaimed: AtomicU64,
    pub expired_swept: AtomicU64,
    pub hints_loaded: AtomicU64,
}

/// State shared by every handle and the writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub options: Options,
    pub index: Index,
    /// Every segment by id. Readers take the read lock only long enough to clone an
    /// `Arc`; the writer takes the write lock only to swap in a sealed or new segment.
    /// Changed only through [`Shared::change_segments`].
    segments: RwLock<BTreeMap<u32, Arc<Segment>>>,
    /// Where the segments are mapped, for a get's early prefetch; kept in step with
    /// `segments` by [`Shared::change_segments`].
    pub map_addresses: MapAddresses,
    pub counters: Counters,
    /// The next segment id; the writer (rotation) and compaction (outputs) both take
    /// ids from it, so ids are never reused and sort by creation.
    pub next_segment_id: AtomicU32,
    /// Id of the segment the writer appends to; never an input of compaction.
    pub active_id: AtomicU32,
    /// Set when the engine shuts down, so a long compaction stops early.
    pub stopping: AtomicBool,
    /// Held shared by a backup from its snapshot until it has linked or opened every
    /// file of it, and exclusively by compaction while it retires (unmaps and deletes)
    /// its inputs: a backup never finds a file of its snapshot gone.
    pub retire: RwLock<()>,
    /// Holds the folder's flock for as long as the engine lives (dropped last, after
    /// the writer thread has stopped).
    _lock: File,
}

impl Shared {
    /// The segment map, for reading. A poisoned lock is still sound to read: every
    /// writer of the map swaps whole entries.
    pub fn segments(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, Arc<Segment>>> {
        self.segments.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the segment map under its write lock and publishes where the segments
    /// are mapped now.
    pub fn change_segments<T>(&self, f: impl FnOnce(&mut BTreeMap<u32, Arc<Segment>>) -> T) -> T {
        let mut segments = self.segments.write().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut segments);
        self.map_addresses.publish(&segments);
        out
    }

    pub(crate) fn try_segment(&self, id: u32) -> Option<Arc<Segment>> {
        self.segments().get(&id).cloned()
    }

    fn segment(&self, id: u32) -> Result<Arc<Segment>> {
        self.try_segment(id).ok_or_else(|| self.not_open(id))
    }

    /// The index points into segment `id`, which is not open.
    fn not_open(&self, id: u32) -> Error {
        Error::Corrupt {
            file: self.dir.join(segment::file_name(id)),
            offset: 0,
            reason: "the index points into a segment that is not open".into(),
        }
    }
}

/// Owns the writer thread: dropping the last handle stops it, which syncs and then
/// releases the folder lock — shutdown is structural, not remembered.
struct Inner {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    /// The writer's state, for callers that write directly (see [`WriterCell`]).
    cell: Arc<WriterCell>,
    writer: Mutex<Option<JoinHandle<()>>>,
    maintenance_tx: Sender<Control>,
    maintenance: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Inner {
    /// Stops the maintenance thread first (it may be asking the writer to rotate),
    /// then the writer, which syncs.
    fn stop_threads(&self) -> Result<()> {
        self.shared.stopping.store(true, Ordering::Release);
        let _ = self.maintenance_tx.send(Control::Stop);
        let handle = self
            .maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the maintenance thread panicked");
        }
        self.stop_writer()
    }

    fn stop_writer(&self) -> Result<()> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let result = match self.tx.send(Msg::Close(reply)) {
            Ok(()) => answer
                .recv()
                .unwrap_or_else(|_| Err(Error::Closed("the writer stopped".into()))),
            Err(_) => Ok(()),
        };
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            return Err(Error::Closed("the writer thread panicked".into()));
        }
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.stop_threads() {
            tracing::error!(error = %e, "closing the engine on drop failed");
        }
    }
}

/// A handle to an open store. Cheap to clone; every clone shares the same store.
/// `Send + Sync`: share it between threads freely.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.inner.shared.dir)
            .finish_non_exhaustive()
    }
}

fn validate_options(options: &Options) -> Result<()> {
    if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&options.segment_bytes) {
        return Err(Error::InvalidOptions(format!(
            "segment_bytes must be from {SEGMENT_BYTES_MIN} to {SEGMENT_BYTES_MAX}; got {}",
            options.segment_bytes
        )));
    }
    if let SyncPolicy::Interval(every) = options.sync
        && every.is_zero()
    {
        return Err(Error::InvalidOptions(
            "the sync interval must be at least 1 ms".into(),
        ));
    }
    Ok(())
}

pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(|e| Error::io("opening the lock file", e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(Error::io("locking the data folder", e)),
    }
}

/// The record at an index entry is not the one the entry describes (other key or
/// version): the hint file it came from lied.
pub(crate) fn mismatch(seg: &Segment, loc: Location) -> Error {
    Error::Corrupt {
        file: seg.path.clone(),
        offset: u64::from(loc.offset),
        reason: "the record is not the one its hint entry names".into(),
    }
}

/// The entry of `key` from its record's bytes, checked (CRC, and that the record is
/// the one `loc` names: a hint file is trusted whole at open, and one that checks but
/// points at another key's record must not hand out that record's value). `slice`
/// turns a range of `bytes` into a shared view of the same bytes.
fn entry_of(
    seg: &Segment,
    loc: Location,
    key: &[u8],
    bytes: &[u8],
    slice: impl Fn(std::ops::Range<usize>) -> Bytes,
) -> Result<Entry> {
    let header = record::decode(bytes)
        .map_err(|e| record::corrupt(seg.path.clone(), u64::from(loc.offset), e))?;
    if header.seq != loc.version || bytes[header.key_range()] != *key {
        return Err(mismatch(seg, loc));
    }
    // Meta and value are adjacent: one view of both, split in two, so a get of the
    // active segment (whose views each box a reference to its window) allocates once.
    let (meta, value) = (header.meta_range(), header.value_range());
    let both = slice(meta.start..value.end);
    Ok(Entry {
        value: both.slice(meta.len()..),
        meta: both.slice(..meta.len()),
        expires_at_ms: header.expires_at(),
        version: header.seq,
        written_at_ms: header.written_at_ms,
    })
}

fn check_batch(batch: &Batch) -> Result<()> {
    let mut total = 0usize;
    for op in &batch.ops {
        total += check_op(op)?;
    }
    too_large("batch", total, BATCH_BYTES_MAX)
}

/// Checks one operation against the limits; returns its largest encoded length.
fn check_op(op: &Op) -> Result<usize> {
    let key = op.key();
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    too_large("key", key.len(), KEY_BYTES_MAX)?;
    let (meta, value) = match op {
        Op::Put { options, value, .. } => (options.meta.len(), value.len()),
        Op::Delete { .. } => (0, 0),
    };
    too_large("meta", meta, META_BYTES_MAX)?;
    too_large("value", value, VALUE_BYTES_MAX)?;
    Ok(record::encoded_len_max(key.len(), meta, value))
}

fn too_large(what: &'static str, len: usize, limit: usize) -> Result<()> {
    if len > limit {
        return Err(Error::TooLarge {
            what,
            len: len as u64,
            limit: limit as u64,
        });
    }
    Ok(())
}

impl Engine {
    #[cfg(test)]
    pub(crate) fn shared_for_test(&self) -> &Shared {
        self.shared()
    }

    /// A second handle on the maintenance work, for tests that drive it step by step
    /// (open with a long `sweep_interval` so the thread itself stays idle).
    #[cfg(test)]
    pub(crate) fn maintenance_for_test(&self) -> (Maintenance, Arc<Shared>) {
        let shared = Arc::clone(&self.inner.shared);
        (
            Maintenance::new(Arc::clone(&shared), self.inner.tx.clone()),
            shared,
        )
    }

    /// Opens (or creates) the store in `dir`, recovering from whatever a crash left:
    /// every record's CRC is checked, a torn tail of the newest segment is cut (and
    /// logged with its size), damage anywhere else is an [`Error::Corrupt`] naming the
    /// file and offset. Fails with [`Error::Locked`] while another engine has `dir`.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Engine> {
        validate_options(&options)?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating the data folder", e))?;
        let lock = lock_dir(&dir)?;
        let recovered = recovery::recover(&dir, options.clock.now_ms())?;
        let reader = recovered
            .active_file
            .try_clone()
            .map_err(|e| Error::io("opening a read handle of the active segment", e))?;
        let active = Arc::new(Segment::active(
            dir.join(segment::file_name(recovered.active_id)),
            recovered.active_id,
            recovered.active_header,
            reader,
            recovered.active_len,
            options.segment_bytes,
        ));
        let mut segments = recovered.sealed;
        segments.insert(recovered.active_id, Arc::clone(&active));
        let counters = Counters::default();
        counters
            .last_version
            .store(recovered.next_seq.saturating_sub(1), Ordering::Relaxed);
        counters
            .truncated_bytes
            .store(recovered.truncated_bytes, Ordering::Relaxed);
        counters
            .hints_loaded
            .store(recovered.hints_used, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            dir,
            options,
            index: recovered.index,
            map_addresses: MapAddresses::new(&segments),
            segments: RwLock::new(segments),
            counters,
            next_segment_id: AtomicU32::new(recovered.next_segment_id),
            active_id: AtomicU32::new(recovered.active_id),
            stopping: AtomicBool::new(false),
            retire: RwLock::new(()),
            _lock: lock,
        });
        let cell = Arc::new(WriterCell::new(Writer::new(
            Arc::clone(&shared),
            recovered.active_file,
            active,
            recovered.active_len,
            recovered.next_seq,
        )));
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer_cell = Arc::clone(&cell);
        let handle = std::thread::Builder::new()
            .name("caskade-writer".into())
            .spawn(move || Writer::run(writer_cell, rx))
            .map_err(|e| Error::io("starting the writer thread", e))?;
        let (maintenance_tx, maintenance_rx) = crossbeam_channel::unbounded();
        let maintenance = Maintenance::new(Arc::clone(&shared), tx.clone());
        // Built before the spawn so a failed spawn still stops the writer on drop.
        let mut inner = Inner {
            shared,
            tx,
            cell,
            writer: Mutex::new(Some(handle)),
            maintenance_tx,
            maintenance: Mutex::new(None),
            closed: AtomicBool::new(false),
        };
        let handle = std::thread::Builder::new()
            .name("caskade-maintenance".into())
            .spawn(move || maintenance.run(maintenance_rx))
            .map_err(|e| Error::io("starting the maintenance thread", e))?;
        inner.maintenance = Mutex::new(Some(handle));
        Ok(Engine {
            inner: Arc::new(inner),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("the engine was closed".into()));
        }
        Ok(())
    }

    /// Stores `value` under `key`; returns the write's version.
    pub fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: WriteOptions,
    ) -> Result<u64> {
        self.write_one(Op::Put {
            key: key.into(),
            value: value.into(),
            options,
        })
    }

    /// A single put or delete: written on the calling thread without building a batch
    /// (no heap allocation of the engine's own) when [`WriterCell::try_write_one_now`]
    /// can, else applied as a batch of one.
    fn write_one(&self, op: Op) -> Result<u64> {
        self.check_open()?;
        too_large("batch", check_op(&op)?, BATCH_BYTES_MAX)?;
        let op = match self.inner.cell.try_write_one_now(op) {
            Ok(written) => return written,
            Err(handed_back) => handed_back,
        };
        let mut batch = Batch::new();
        batch.ops.push(op);
        Ok(self.apply_versions(batch)?.start)
    }

    /// Reads the live entry of `key`; `None` when absent or expired. The record's CRC
    /// is checked before anything is returned.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        const ATTEMPTS_MAX: usize = 8;
        self.check_open()?;
        let shared = self.shared();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let prefetch = |segment, offset| shared.map_addresses.prefetch(segment, offset);
            let Some(loc) = shared.index.get_prefetching(key, prefetch) else {
                return Ok(None);
            };
            // Most entries never expire: the clock is read only for those that do.
            if loc.expires_at_ms != 0 && loc.is_expired(shared.options.clock.now_ms()) {
                return Ok(None);
            }
            let offset = u64::from(loc.offset);
            // The record is checked and its views made under the map's read lock, so
            // a get clones no `Arc<Segment>`: the views keep the mapping alive on their
            // own. The writer takes the write lock only to swap segments in or out.
            let segments = shared.segments();
            let Some(seg) = segments.get(&loc.segment) else {
                // Compaction retired the segment between the two lookups; the index
                // then already points at the new copy, so look again.
                if attempts >= ATTEMPTS_MAX {
                    return Err(shared.not_open(loc.segment));
                }
                continue;
            };
            return match seg.mapped_range(offset, loc.len as usize) {
                // Checked in place; only the value and a non-empty meta become views.
                Some(mapped) => {
                    let mapped = mapped?;
                    mapped.prefetch();
                    entry_of(seg, loc, key, mapped.bytes(), |r| mapped.view(r)).map(Some)
                }
                // A positioned read (no I/O under the lock).
                None => {
                    let seg = Arc::clone(seg);
                    drop(segments);
                    let bytes = seg.read(offset, loc.len as usize)?;
                    entry_of(&seg, loc, key, &bytes, |r| bytes.slice(r)).map(Some)
                }
            };
        }
    }

    /// The index entry of `key` and its segment. Compaction may retire a segment
    /// between the index lookup and the segment lookup; the index then already points
    /// at the new copy, so look again.
    fn locate(&self, key: &[u8]) -> Result<Option<(Location, Arc<Segment>)>> {
        const ATTEMPTS_MAX: usize = 8;
        let shared = self.shared();
        for _ in 1..ATTEMPTS_MAX {
            let Some(loc) = shared.index.get(key) else {
                return Ok(None);
            };
            if let Some(seg) = shared.try_segment(loc.segment) {
                return Ok(Some((loc, seg)));
            }
        }
        let Some(loc) = shared.index.get(key) else {
            return Ok(None);
        };
        Ok(Some((loc, shared.segment(loc.segment)?)))
    }

    /// Writes a tombstone for `key`; returns its version.
    pub fn delete(&self, key: impl Into<Bytes>) -> Result<u64> {
        self.write_one(Op::Delete { key: key.into() })
    }

    /// Applies a batch atomically; returns one version per operation, increasing in
    /// the order of the operations. Blocks until the batch is durable per the sync
    /// policy.
    ///
    /// Under `SyncPolicy::Never`, when no other write is queued, the calling thread
    /// writes the batch itself (it would block for it anyway), waiting briefly for its
    /// turn if another caller is writing, sparing the handoff to the writer thread and
    /// back.
    pub fn apply(&self, batch: Batch) -> Result<Vec<u64>> {
        self.apply_versions(batch).map(Iterator::collect)
    }

    /// [`Engine::apply`], answered with the batch's versions as the range they form.
    fn apply_versions(&self, batch: Batch) -> Result<Range<u64>> {
        let (tx, rx) = oneshot::pair();
        self.submit(batch, Done::Wake(tx));
        // Without an fsync the writer answers within microseconds: wait awake that
        // long (bounded) before parking, so back-to-back puts skip a futex sleep and
        // wake-up each. Under `Always` the answer takes an fsync, and 64 spinning
        // callers would only take the CPU from the writer.
        let spin = self.shared().options.sync != SyncPolicy::Always;
        rx.wait(spin)
            .unwrap_or_else(|| Err(Error::Closed("the writer stopped".into())))
    }

    /// Submits a batch without waiting: `done` runs on the writer thread once the
    /// batch is durable (per the sync policy) and in the index, or has failed (on the
    /// calling thread if the batch is refused before it is queued). For async callers:
    /// send the result through a oneshot channel instead of blocking a runtime thread;
    /// the batch is never written on the calling thread, so a runtime thread never
    /// waits for the disk. `done` must be quick (the writer's next group waits for it)
    /// and must not call back into the engine's write path. Callbacks run in the order
    /// their batches were committed; one that panics is logged and the writer goes on.
    pub fn apply_then(&self, batch: Batch, done: impl FnOnce(Result<Vec<u64>>) + Send + 'static) {
        self.submit(batch, Done::Versions(Box::new(done)));
    }

    /// As [`Engine::apply_then`], but the answer also says, per operation, whether it
    /// replaced a live entry (the latest write of its key, earlier operations of the
    /// batch included, present and unexpired) — decided atomically with the write,
    /// so a caller needs no read and no condition to know it. Costs the writer one
    /// index lookup per operation.
    pub fn apply_detailed_then(
        &self,
        batch: Batch,
        done: impl FnOnce(Result<Vec<Applied>>) + Send + 'static,
    ) {
        self.submit(batch, Done::Detailed(Box::new(done)));
    }

    /// Queues `batch` for the writer thread; for a blocked caller (`Done::Wake`), first
    /// tries to write it on the calling thread ([`WriterCell::try_write_now`]).
    fn submit(&self, batch: Batch, done: Done) {
        if let Err(e) = self.check_open().and_then(|()| check_batch(&batch)) {
            return done.fail(e);
        }
        let cell = &self.inner.cell;
        let (batch, done) = if matches!(done, Done::Wake(_)) {
            match cell.try_write_now(batch, done) {
                Some(handed_back) => handed_back,
                None => return,
            }
        } else {
            (batch, done)
        };
        cell.queue();
        if let Err(crossbeam_channel::SendError(msg)) =
            self.inner.tx.send(Msg::Write { batch, done })
            && let Msg::Write { done, .. } = msg
        {
            cell.unqueue();
            done.fail(Error::Closed("the writer stopped".into()));
        }
    }

    /// Live keys starting with `prefix`, strictly after `start_after` if given, in
    /// ascending byte order, at most `limit` of them.
    pub fn list(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<ListItem>> {
        self.check_open()?;
        let shared = self.shared();
        let now_ms = shared.options.clock.now_ms();
        let found = shared.index.range(prefix, start_after, limit, now_ms);
        let mut items = Vec::with_capacity(found.len());
        for (key, loc) in found {
            if let Some(item) = self.list_item(key, loc, now_ms)? {
                items.push(item);
            }
        }
        Ok(items)
    }

    /// Reads what a list shows of one entry: header and meta, not the value. `None`
    /// when the key went away since the index walk.
    fn list_item(&self, key: Bytes, loc: Location, now_ms: u64) -> Result<Option<ListItem>> {
        let Some((loc, seg)) = self.locate_at(&key, loc)? else {
            return Ok(None);
        };
        if loc.is_expired(now_ms) {
            return Ok(None);
        }
        let offset = u64::from(loc.offset);
        let corrupt = |e| record::corrupt(seg.path.clone(), offset, e);
        // The header's length depends on its contents; it lies inside the record.
        let head = seg.read(offset, (loc.len as usize).min(HEADER_BYTES_MAX))?;
        let header = record::decode_header(&head).map_err(corrupt)?;
        let upto = header.meta_range().end;
        if upto > loc.len as usize {
            return Err(corrupt(record::DecodeError::Truncated));
        }
        let bytes = if upto <= head.len() {
            head.slice(..upto)
        } else {
            seg.read(offset, upto)?
        };
        if header.seq != loc.version || bytes[header.key_range()] != key[..] {
            return Err(mismatch(&seg, loc));
        }
        Ok(Some(ListItem {
            key,
            value_len: u64::from(header.value_len),
            meta: bytes.slice(header.meta_range()),
            expires_at_ms: header.expires_at(),
            version: header.seq,
            written_at_ms: header.written_at_ms,
        }))
    }

    /// The segment of `loc`, or — if compaction retired it since the index walk —
    /// the key's current location and segment.
    fn locate_at(&self, key: &[u8], loc: Location) -> Result<Option<(Location, Arc<Segment>)>> {
        match self.shared().try_segment(loc.segment) {
            Some(seg) => Ok(Some((loc, seg))),
            None => self.locate(key),
        }
    }

    /// Number of keys in the index starting with `prefix` (expired keys not yet swept
    /// included).
    pub fn count_prefix(&self, prefix: &[u8]) -> u64 {
        self.shared().index.count_prefix(prefix)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let shared = self.shared();
        let (segments, disk_bytes) = {
            let segs = shared.segments();
            (
                segs.len() as u64,
                segs.values().map(|s| s.len()).sum::<u64>(),
            )
        };
        let live_bytes = shared.index.live_bytes();
        let c = &shared.counters;
        Stats {
            keys: shared.index.keys(),
            live_bytes,
            dead_bytes: disk_bytes.saturating_sub(live_bytes),
            disk_bytes,
            segments,
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            write_batches: c.write_batches.load(Ordering::Relaxed),
            records_written: c.records_written.load(Ordering::Relaxed),
            index_bytes: shared.index.estimated_bytes(),
            last_version: c.last_version.load(Ordering::Relaxed),
            recovered_truncated_bytes: c.truncated_bytes.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            bytes_reclaimed: c.bytes_reclaimed.load(Ordering::Relaxed),
            expired_swept: c.expired_swept.load(Ordering::Relaxed),
            hints_loaded: c.hints_loaded.load(Ordering::Relaxed),
        }
    }

    /// Compacts now: seals the active segment, then rewrites every sealed segment with
    /// only what is still needed, and deletes the old files. Reads and writes go on
    /// meanwhile. Returns what it reclaimed.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.ask_maintenance(Control::Compact)
    }

    /// Runs the background compaction policy once now (the maintenance thread runs it
    /// every `CompactionOptions::interval` when enabled): only sealed segments whose
    /// dead share reached `dead_ratio`, all of them once the dead total reached
    /// `dead_bytes_trigger`, and small segments merged together.
    pub fn compact_by_policy(&self) -> Result<CompactionReport> {
        self.ask_maintenance(Control::CompactByPolicy)
    }

    fn ask_maintenance(
        &self,
        control: fn(crossbeam_channel::Sender<Result<CompactionReport>>) -> Control,
    ) -> Result<CompactionReport> {
        self.check_open()?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.inner
            .maintenance_tx
            .send(control(reply))
            .map_err(|_| Error::Closed("the maintenance thread stopped".into()))?;
        answer
            .recv()
            .unwrap_or_else(|_| Err(Error::Closed("the maintenance thread stopped".into())))
    }

    /// Runs one TTL sweep tick now (the maintenance thread also runs one every
    /// `Options::sweep_interval`); returns how many expired keys left the index.
    pub fn sweep_expired(&self) -> Result<u64> {
        self.check_open()?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.inner
            .maintenance_tx
            .send(Control::Sweep(reply))
            .map_err(|_| Error::Closed("the maintenance thread stopped".into()))?;
        answer
            .recv()
            .map_err(|_| Error::Closed("the maintenance thread stopped".into()))
    }

    /// The engine's clock (the one given in [`Options`]).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared().options.clock
    }

    /// The data folder.
    pub fn dir(&self) -> &Path {
        &self.shared().dir
    }

    /// Makes every acknowledged write durable now, whatever the sync policy.
    pub fn sync(&self) -> Result<()> {
        self.check_open()?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.inner
            .tx
            .send(Msg::Sync(reply))
            .map_err(|_| Error::Closed("the writer stopped".into()))?;
        answer
            .recv()
            .unwrap_or_else(|_| Err(Error::Closed("the writer stopped".into())))
    }

    /// Writes a consistent copy of the store into the new folder `dest` (which must not
    /// exist; its parent must) while reads, writes and compaction go on. `caskade`'s
    /// [`Engine::open`] opens the copy like any data folder.
    ///
    /// The copy holds every write acknowledged before this call, under every sync
    /// policy: the active segment is synced first, so the copied bytes are durable in
    /// the store too. It ends at a batch boundary (never a torn record, never part of
    /// a batch). Sealed segments and their hints are hard-linked when `dest` is on the
    /// data folder's file system and copied otherwise; the active segment is copied.
    /// The copy is written into `<dest>.tmp-…` and renamed to `dest` only once every
    /// file and the folder are synced, so a crash midway never leaves a folder under
    /// the final name. Compaction's deletion of its inputs waits while a backup links
    /// its files.
    ///
    /// ```
    /// use caskade_engine::{Engine, Options, WriteOptions};
    ///
    /// # fn main() -> Result<(), caskade_engine::Error> {
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let engine = Engine::open(dir.path().join("store"), Options::default())?;
    /// engine.put("user/alice", "1", WriteOptions::default())?;
    /// let report = engine.backup(dir.path().join("backup-1"))?;
    /// assert_eq!(report.last_version, 1);
    /// engine.close()?;
    /// let copy = Engine::open(&report.path, Options::default())?;
    /// assert_eq!(&copy.get(b"user/alice")?.expect("in the copy").value[..], b"1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<BackupReport> {
        self.check_open()?;
        backup::run(self.shared(), dest.as_ref(), || self.snapshot())
    }

    /// Asks the writer for the store's files at this instant, synced.
    fn snapshot(&self) -> Result<Snapshot> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.inner
            .tx
            .send(Msg::Snapshot(reply))
            .map_err(|_| Error::Closed("the writer stopped".into()))?;
        answer
            .recv()
            .unwrap_or_else(|_| Err(Error::Closed("the writer stopped".into())))
    }

    /// Flushes, syncs, stops the writer and releases the folder's lock once the last
    /// handle is gone. Other clones of this handle get [`Error::Closed`] afterwards.
    pub fn close(self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.stop_threads()
    }
}
