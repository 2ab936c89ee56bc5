//! Segment files: numbered, append-only, sealed once full and then read through a
//! memory map.
//!
//! A segment starts with a 32-byte header:
//! ```text
//! offset size field
//!  0     8    magic b"CASKSEG\0"
//!  8     4    segment format version (SEGMENT_FORMAT_VERSION)
//! 12     4    segment id (matches the file name)
//! 16     8    base_seq: every record in this file has seq >= base_seq; recovery
//!             starts the sequence at least here, so versions only grow even when
//!             every record of the newest segment was lost or removed
//! 24     4    kind: 0 = log (written by the writer; the newest one is the
//!             active segment), 1 = compacted (written whole by compaction)
//! 28     4    crc32 of bytes 0..28
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions, MmapRaw};

use crate::error::{Error, Result};

/// Bytes of the segment header.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 32;
/// The segment format version written by this build: 2, "records may be in record
/// format 2". Version 1 segments (older builds) hold only record format 1 and are still
/// read; a build that knows only version 1 refuses a version 2 segment (open fails with
/// a corruption error) instead of taking its newer records for a torn tail and cutting
/// them, so a downgrade is refused rather than losing writes.
pub(crate) const SEGMENT_FORMAT_VERSION: u32 = 2;
const MAGIC: &[u8; 8] = b"CASKSEG\0";
/// Extension of segment files.
pub(crate) const SEGMENT_EXT: &str = "seg";

/// Who wrote a segment, which decides how recovery treats its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Appended by the writer; the newest log segment is the active one and may end
    /// in a torn write.
    Log = 0,
    /// Written whole by compaction, made visible only after an fsync and a rename;
    /// it can never be torn.
    Compacted = 1,
}

/// What a segment header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Every record in the file has `seq >= base_seq`.
    pub base_seq: u64,
    pub kind: Kind,
}

/// The file name of segment `id`: zero-padded so names sort like ids.
pub(crate) fn file_name(id: u32) -> String {
    format!("{id:010}.{SEGMENT_EXT}")
}

/// The id of a segment file name, if it is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 10 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Encodes a segment header.
pub(crate) fn encode_header(id: u32, header: SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&id.to_le_bytes());
    h[16..24].copy_from_slice(&header.base_seq.to_le_bytes());
    h[24..28].copy_from_slice(&(header.kind as u32).to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header.
pub(crate) fn decode_header(bytes: &[u8], id: u32) -> std::result::Result<SegmentHeader, String> {
    if bytes.len() < SEGMENT_HEADER_BYTES as usize {
        return Err("file is shorter than a segment header".into());
    }
    let crc = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    if crc != crc32fast::hash(&bytes[0..28]) || &bytes[0..8] != MAGIC {
        return Err("segment header fails its checksum".into());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if !(1..=SEGMENT_FORMAT_VERSION).contains(&version) {
        return Err(format!("unknown segment format version {version}"));
    }
    let stored_id = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if stored_id != id {
        return Err(format!(
            "header names segment {stored_id}, file name says {id}"
        ));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[16..24]);
    let base_seq = u64::from_le_bytes(seq);
    if base_seq >= crate::record::SEQ_LIMIT {
        return Err(format!("impossible base version {base_seq}"));
    }
    let kind = match u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]) {
        0 => Kind::Log,
        1 => Kind::Compacted,
        other => return Err(format!("unknown segment kind {other}")),
    };
    Ok(SegmentHeader { base_seq, kind })
}

/// The format version of a segment whose header checks (see [`decode_header`]).
pub(crate) fn format_version(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]])
}

/// Removes a segment file that was never used, and syncs the folder; best effort, for
/// error paths (a failure here leaves what recovery handles anyway).
pub(crate) fn remove_segment_file(dir: &Path, path: &Path) {
    if std::fs::remove_file(path).is_ok() {
        let _ = sync_dir(dir);
    }
}

/// Creates a new, empty log segment file holding only its header, durably (file and
/// directory entry synced), and returns a write handle positioned after the header.
///
/// The header is written under a temporary name and renamed into place, so a crash
/// never leaves a final-named file shorter than its header. Recovery would drop such a
/// file and make the previous, sealed log segment active again — appending to a file
/// a backup may have hard-linked.
pub(crate) fn create(dir: &Path, id: u32, base_seq: u64) -> Result<File> {
    let header = SegmentHeader {
        base_seq,
        kind: Kind::Log,
    };
    let tmp = dir.join(format!("{}.tmp", file_name(id)));
    let file = create_at(&tmp, id, header)?;
    let path = dir.join(file_name(id));
    if let Err(e) = std::fs::rename(&tmp, &path) {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(
            format!("renaming new segment {} into place", file_name(id)),
            e,
        ));
    }
    if let Err(e) = sync_dir(dir) {
        // The caller goes on with the previous segment: an empty newer log segment left
        // on disk would make open take it as the active one and the previous one as
        // sealed, so a torn tail there would become damage instead of being cut.
        drop(file);
        remove_segment_file(dir, &path);
        return Err(e);
    }
    Ok(file)
}

/// Creates a segment file at `path` (a final or a temporary name) with its header
/// written and synced.
pub(crate) fn create_at(path: &Path, id: u32, header: SegmentHeader) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(format!("creating segment {}", file_name(id)), e))?;
    if let Err(e) = file
        .write_all_at(&encode_header(id, header), 0)
        .and_then(|()| file.sync_all())
    {
        // Leave no half-made file behind: a retry must be able to create it again.
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(Error::io(
            format!("writing header of segment {}", file_name(id)),
            e,
        ));
    }
    Ok(file)
}

/// Makes a directory's entries (new or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing the data folder", e))
}

/// An open segment, shared by readers through `Arc`.
#[derive(Debug)]
pub(crate) struct Segment {
    pub id: u32,
    pub path: PathBuf,
    /// What the file's header says (base seq, kind).
    pub header: SegmentHeader,
    /// The sealed file's bytes: a shared view of its memory map, so values can be
    /// handed out as `Bytes` without copying. `None` while the segment is active.
    map: Option<Bytes>,
    /// The active segment mapped read-only ahead of its growth (`segment_bytes` long),
    /// so reads of written records are views instead of copies. `None` for sealed
    /// segments, or when mapping failed (positioned reads then).
    window: Option<Arc<MmapRaw>>,
    /// Read handle for the active segment (positioned reads; the writer has its own).
    file: File,
    /// Bytes in the file, header included. Grows while active.
    len: AtomicU64,
    /// A valid hint file sits beside this segment (or writing one failed; either way
    /// the maintenance thread does not try again).
    pub has_hint: AtomicBool,
}

impl Segment {
    /// The active segment: mapped read-only `window_bytes` ahead of its growth; bytes
    /// are read through the window only below its written length.
    pub fn active(
        path: PathBuf,
        id: u32,
        header: SegmentHeader,
        file: File,
        len: u64,
        window_bytes: u64,
    ) -> Segment {
        let window = usize::try_from(window_bytes)
            .ok()
            .and_then(|n| MmapOptions::new().len(n).map_raw_read_only(&file).ok())
            .map(Arc::new);
        Segment {
            id,
            path,
            header,
            map: None,
            window,
            file,
            len: AtomicU64::new(len),
            has_hint: AtomicBool::new(false),
        }
    }

    /// A sealed segment, mapped read-only. Its header is checked.
    pub fn sealed(path: PathBuf, id: u32) -> Result<Segment> {
        let file = File::open(&path)
            .map_err(|e| Error::io(format!("opening segment {}", file_name(id)), e))?;
        // SAFETY: sealed segments are never written or truncated again: only the
        // writer thread writes, only to the active segment, and the data folder is
        // flock-ed so no other caskade process writes here. Deleting the file later
        // (compaction) keeps existing mappings valid on Unix.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::io(format!("mapping segment {}", file_name(id)), e))?;
        let len = map.len() as u64;
        // The header is read with one small pread, not through the mapping: a first
        // touch of the mapping would make the kernel read megabytes around it, which
        // an open from hints never needs (it reads no values).
        let mut head = [0u8; SEGMENT_HEADER_BYTES as usize];
        let got = file
            .read_at(&mut head, 0)
            .map_err(|e| Error::io(format!("reading segment {}", file_name(id)), e))?;
        let header = decode_header(&head[..got], id).map_err(|reason| Error::Corrupt {
            file: path.clone(),
            offset: 0,
            reason,
        })?;
        Ok(Segment {
            id,
            path,
            header,
            map: Some(Bytes::from_owner(map)),
            window: None,
            file,
            len: AtomicU64::new(len),
            has_hint: AtomicBool::new(false),
        })
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Records that the writer appended up to `len`.
    pub fn set_len(&self, len: u64) {
        self.len.store(len, Ordering::Release);
    }

    /// The whole mapped file of a sealed segment.
    pub fn mapped(&self) -> Option<&Bytes> {
        self.map.as_ref()
    }

    /// Reads `len` bytes at `offset`: a zero-copy view of a sealed segment's map or of
    /// the active segment's window; one positioned read for a range beyond the window.
    pub fn read(&self, offset: u64, len: usize) -> Result<Bytes> {
        if let Some(map) = &self.map {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            return match start.checked_add(len) {
                Some(end) if end <= map.len() => Ok(map.slice(start..end)),
                _ => Err(Error::Corrupt {
                    file: self.path.clone(),
                    offset,
                    reason: "record extends past the end of the file".into(),
                }),
            };
        }
        if let Some(view) = self.written_view(offset, len) {
            return Ok(Bytes::from_owner(view));
        }
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset).map_err(|e| {
            Error::io(
                format!("reading segment {} at {offset}", file_name(self.id)),
                e,
            )
        })?;
        Ok(Bytes::from(buf))
    }
}

impl Segment {
    /// Calls `f` with `len` bytes at `offset`, borrowed from the mapping where there
    /// is one (no `Bytes` handle, no allocation), else read into a buffer.
    pub(crate) fn read_with<R>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        if let Some(map) = &self.map {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            return match start.checked_add(len).and_then(|end| map.get(start..end)) {
                Some(bytes) => Ok(f(bytes)),
                None => Err(Error::Corrupt {
                    file: self.path.clone(),
                    offset,
                    reason: "record extends past the end of the file".into(),
                }),
            };
        }
        if let Some(view) = self.written_view(offset, len) {
            return Ok(f(view.as_ref()));
        }
        self.read(offset, len).map(|bytes| f(&bytes))
    }

    /// A view of written bytes of the active segment through its window, if the range
    /// is both written and inside the window.
    fn written_view(&self, offset: u64, len: usize) -> Option<WrittenRange> {
        let window = self.window.as_ref()?;
        let end = offset.checked_add(len as u64)?;
        if end > self.len() || end > window.len() as u64 {
            return None;
        }
        Some(WrittenRange {
            map: Arc::clone(window),
            start: usize::try_from(offset).ok()?,
            len,
        })
    }
}

/// A record's bytes borrowed from a segment's mapping, for a read that checks them
/// in place and then hands out parts of them as `Bytes` views (no copy, no handle for
/// the whole record).
pub(crate) enum Mapped<'s> {
    /// Inside a sealed segment's map.
    Sealed {
        map: &'s Bytes,
        start: usize,
        len: usize,
    },
    /// Inside the written part of the active segment's window.
    Window {
        map: &'s Arc<MmapRaw>,
        start: usize,
        len: usize,
    },
}

impl Mapped<'_> {
    /// The record's bytes.
    pub fn bytes(&self) -> &[u8] {
        match *self {
            Mapped::Sealed { map, start, len } => &map[start..start + len],
            // SAFETY: `Segment::mapped_range` made this only for a range that lies
            // inside the window and below the segment's written length, bytes that are
            // initialised and never change again (see `WrittenRange::as_ref`); the
            // borrow of the segment keeps the mapping alive for the returned lifetime.
            Mapped::Window { map, start, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(start), len)
            },
        }
    }

    /// A shared view of `range` (relative to the record's start), kept alive by the
    /// mapping: a slice of the sealed map, or a window range with its own reference to
    /// the window. An empty range costs nothing. Panics if `range` is not inside the
    /// record (callers pass ranges of a header `record::decode` checked against it).
    pub fn view(&self, range: std::ops::Range<usize>) -> Bytes {
        // Bounds-checked here once: `slice` of the map and `WrittenRange` rely on it.
        let part = &self.bytes()[range.clone()];
        if part.is_empty() {
            return Bytes::new();
        }
        match *self {
            Mapped::Sealed { map, start, .. } => map.slice(start + range.start..start + range.end),
            Mapped::Window { map, start, .. } => Bytes::from_owner(WrittenRange {
                map: Arc::clone(map),
                start: start + range.start,
                len: part.len(),
            }),
        }
    }

    /// Asks the CPU to start loading every cache line of the record (up to
    /// `PREFETCH_BYTES_MAX`) now. A random read misses the cache on each of its lines;
    /// the header's line is read first and the rest (CRC, key, value) only once its
    /// lengths are decoded, so without this the later lines' misses would come one
    /// after the other instead of together. Only a hint: it reads nothing.
    pub fn prefetch(&self) {
        let bytes = self.bytes();
        prefetch_lines(bytes.as_ptr() as usize, bytes.len().min(PREFETCH_BYTES_MAX));
    }
}

/// Asks the CPU to start loading the cache lines of `[start, start + len)` into its
/// caches. Only a hint: a prefetch reads nothing into the program and never faults,
/// whatever the address (an unmapped or stale one is dropped by the CPU).
#[inline]
pub(crate) fn prefetch_lines(start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        const LINE: usize = 64;
        let end = start.saturating_add(len);
        let mut line = start & !(LINE - 1);
        while line < end {
            // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 target has. It is
            // only a hint: it never faults and reads nothing into the program, whatever
            // the address.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    line as *const i8,
                );
            }
            line += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

/// Most bytes of a record `Mapped::prefetch` asks for: a small record whole; a large
/// value is streamed by the hardware prefetcher as the CRC walks it.
const PREFETCH_BYTES_MAX: usize = 512;

/// Where each open segment is mapped, read without the segment map's lock: a get
/// that finds a key's record place in the index ([`crate::index::Index::get_prefetching`])
/// asks the CPU for the record's first lines before it has even read the key's slot,
/// so the slot's cache misses and the record's overlap. For that use only: an entry
/// may be outdated for a moment (a segment sealed, retired or mapped anew since), and
/// prefetching a wrong address costs a wasted load, nothing else.
#[derive(Debug)]
pub(crate) struct MapAddresses {
    /// By segment id modulo the length: (segment id, address of its byte 0; 0 when the
    /// segment has no mapping). Ids that share an entry: the highest wins.
    entries: [(AtomicU32, AtomicUsize); MAP_ADDRESSES],
}

/// Entries of [`MapAddresses`] (16 KiB): 256 GiB of segments at the default 256 MiB
/// before two segments share an entry (a get of the older one then goes without the
/// early prefetch, as before it existed). A get reads one entry.
const MAP_ADDRESSES: usize = 1024;

/// Bytes from a record's start [`MapAddresses::prefetch`] asks for: its header, key
/// and the start of its value; [`Mapped::prefetch`] asks for the rest once the
/// record's length is known.
const EARLY_PREFETCH_BYTES: usize = 128;

impl MapAddresses {
    pub fn new(segments: &BTreeMap<u32, Arc<Segment>>) -> MapAddresses {
        let addresses = MapAddresses {
            entries: std::array::from_fn(|_| (AtomicU32::new(u32::MAX), AtomicUsize::new(0))),
        };
        addresses.publish(segments);
        addresses
    }

    /// Sets every entry from the segment map; called with the map's write lock held
    /// after each change, so publishes never interleave.
    pub fn publish(&self, segments: &BTreeMap<u32, Arc<Segment>>) {
        let mut entries = [(u32::MAX, 0usize); MAP_ADDRESSES];
        for (&id, seg) in segments {
            entries[id as usize % MAP_ADDRESSES] = (id, seg.mapped_address().unwrap_or(0));
        }
        for ((id, address), (new_id, new_address)) in self.entries.iter().zip(entries) {
            id.store(new_id, Ordering::Relaxed);
            address.store(new_address, Ordering::Relaxed);
        }
    }

    /// Asks the CPU for the first lines of the record at `offset` of `segment`, if
    /// the segment is known to be mapped.
    #[inline]
    pub fn prefetch(&self, segment: u32, offset: u32) {
        let (id, address) = &self.entries[segment as usize % MAP_ADDRESSES];
        let address = address.load(Ordering::Relaxed);
        if address != 0 && id.load(Ordering::Relaxed) == segment {
            prefetch_lines(address.wrapping_add(offset as usize), EARLY_PREFETCH_BYTES);
        }
    }
}

#[cfg(test)]
impl MapAddresses {
    /// The address published for segment `id`, if its entry names it.
    pub fn address(&self, id: u32) -> Option<usize> {
        let (entry_id, address) = &self.entries[id as usize % MAP_ADDRESSES];
        (entry_id.load(Ordering::Relaxed) == id).then(|| address.load(Ordering::Relaxed))
    }
}

impl Segment {
    /// Address of the file's byte 0 in memory: the sealed file's map, or the active
    /// segment's window. `None` without a mapping.
    fn mapped_address(&self) -> Option<usize> {
        match (&self.map, &self.window) {
            (Some(map), _) => Some(map.as_ptr() as usize),
            (None, Some(window)) => Some(window.as_ptr() as usize),
            (None, None) => None,
        }
    }

    /// The `len` bytes at `offset` borrowed from the mapping, without I/O. `None` when
    /// only a positioned read can get them (the active segment beyond its window, or
    /// with no window); a range past the end of a sealed segment is an error.
    pub(crate) fn mapped_range(&self, offset: u64, len: usize) -> Option<Result<Mapped<'_>>> {
        if let Some(map) = &self.map {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            return Some(match start.checked_add(len) {
                Some(end) if end <= map.len() => Ok(Mapped::Sealed { map, start, len }),
                _ => Err(Error::Corrupt {
                    file: self.path.clone(),
                    offset,
                    reason: "record extends past the end of the file".into(),
                }),
            });
        }
        let window = self.window.as_ref()?;
        let end = offset.checked_add(len as u64)?;
        if end > self.len() || end > window.len() as u64 {
            return None;
        }
        Some(Ok(Mapped::Window {
            map: window,
            start: usize::try_from(offset).ok()?,
            len,
        }))
    }
}

/// Written, never-again-changing bytes of the active segment's window; keeps the
/// mapping alive for as long as a `Bytes` made from it lives.
struct WrittenRange {
    map: Arc<MmapRaw>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for WrittenRange {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `written_view` made this range only if it lies inside the mapping and
        // below the segment's written length; `Mapped::view` makes one only inside a
        // `Mapped::Window`, which `Segment::mapped_range` checked the same way. The writer only appends after that length
        // and never rewrites written bytes (a failed write is cut back only past the
        // last byte it had written before, and only unindexed bytes lie there), so the
        // bytes behind this slice are initialised and do not change while it exists;
        // `self.map` keeps the mapping alive.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.start), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_sort_like_ids() {
        assert_eq!(file_name(42), "0000000042.seg");
        assert_eq!(parse_file_name("0000000042.seg"), Some(42));
        assert_eq!(parse_file_name("42.seg"), None);
        assert_eq!(parse_file_name("0000000042.hint"), None);
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn a_header_checks_its_id_and_crc() {
        let header = SegmentHeader {
            base_seq: 99,
            kind: Kind::Compacted,
        };
        let h = encode_header(3, header);
        assert_eq!(decode_header(&h, 3), Ok(header));
        assert!(decode_header(&h, 4).is_err());
        let mut bad = h;
        bad[17] ^= 1;
        assert!(decode_header(&bad, 3).is_err());
    }

    /// A get prefetches through the published addresses without the segment map's
    /// lock: after rotations, a compaction and more rotations, each open segment's
    /// entry holds its mapping (the highest id of the ids that share an entry).
    #[test]
    fn published_addresses_follow_the_segment_map() {
        use crate::{Engine, Options, SyncPolicy, WriteOptions};
        let dir = tempfile::tempdir().expect("temp dir");
        let options = Options {
            segment_bytes: 4 * 1024,
            sync: SyncPolicy::Never,
            ..Options::default()
        };
        let engine = Engine::open(dir.path(), options).expect("open");
        let check = |engine: &Engine| {
            let shared = engine.shared_for_test();
            let segments = shared.segments();
            let mut newest = BTreeMap::new();
            for (&id, seg) in segments.iter() {
                newest.insert(id as usize % MAP_ADDRESSES, (id, seg.mapped_address()));
            }
            assert!(newest.len() > 1, "several segments");
            for (id, address) in newest.into_values() {
                assert!(address.is_some(), "segment {id} is mapped");
                assert_eq!(shared.map_addresses.address(id), address, "segment {id}");
            }
        };
        let put = |round: usize| {
            for k in 0..1_500 {
                let value = format!("value {k} of round {round}").repeat(4);
                engine
                    .put(format!("key/{k:05}"), value, WriteOptions::default())
                    .expect("put");
            }
        };
        put(0);
        check(&engine);
        engine.compact().expect("compact");
        check(&engine);
        put(1);
        put(2);
        check(&engine);
    }
}
