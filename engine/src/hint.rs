//! Hint files: the index entries of one sealed segment, so open can rebuild the index
//! without reading values.
//!
//! `NNNNNNNNNN.hint` sits beside `NNNNNNNNNN.seg`. Layout of format version 3, the one
//! this build writes (little-endian; "varint" is LEB128: 7 bits a byte, low bits first,
//! at most 10 bytes, no superfluous trailing zero byte):
//! ```text
//! header, 32 bytes:
//!  0  8  magic b"CASKHNT\0"
//!  8  4  hint format version (3)
//! 12  4  segment id
//! 16  8  length of the segment file the hint describes
//! 24  4  number of entries
//! 28  4  crc32 of bytes 0..28
//! run table, SHARDS (16) × 12 bytes, then 4:
//!  0  4  entries in this index shard's run
//!  4  4  bytes of the run
//!  8  4  crc32 of the run
//!  then crc32 of the 192 bytes of the table
//! runs, one per index shard (shard 0 first), each a sequence of entries of the keys
//! that shard holds (`index::shard_of`), in record-offset order:
//!  varint  key length × 2, + 1 if the record is a tombstone
//!  varint  seq − the previous entry's seq in the run (0 before the first), zigzag
//!  varint  expires_at_ms (0 = never)
//!  varint  record offset − where the previous entry's record ends (the segment
//!          header's end, 32, before the first)
//!  varint  record length
//!  ..      key
//! ```
//! Grouping entries by shard lets open fill every shard from its runs in parallel,
//! reading each hint sequentially, with one CRC per run instead of one per entry. A
//! 16-byte key of a 1 KiB value takes about 24 bytes instead of version 2's 48.
//!
//! Format version 2 (still read): the same header and run table; each entry is
//! `flags (1: tombstone bit as in the record) | reserved, zero (3) | key length (4) |
//! seq (8) | expires_at_ms (8) | record offset (4) | record length (4) | key`.
//!
//! Format version 1 (still read): the same header, then the entries in record order,
//! each `crc32 (4) | flags (1) | reserved (3) | seq (8) | expires_at_ms (8) | offset (4)
//! | length (4) | key length (4) | key`, the CRC covering the entry after it.
//!
//! Hints of versions 1 and 2 are used at open but written again in version 3 by the
//! maintenance thread.
//!
//! A hint is trusted only whole: a bad CRC anywhere, a wrong segment length or entry
//! count, an entry in the wrong shard's run, an unknown version or a missing file means
//! the segment is scanned instead (hints are a cache; the segment is the truth).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::KEY_BYTES_MAX;
use crate::error::{Error, Result};
use crate::index::{SHARDS, shard_of};
use crate::record::{self, FLAG_TOMBSTONE, HEADER_BYTES_MIN};
use crate::segment::{SEGMENT_HEADER_BYTES, sync_dir};

const MAGIC: &[u8; 8] = b"CASKHNT\0";
/// The hint format version written by this build: runs of varint entries.
pub(crate) const HINT_FORMAT_VERSION: u32 = 3;
/// Runs of fixed-size entries. Still read.
const HINT_FORMAT_V2: u32 = 2;
/// The first format: entries in record order, a CRC per entry. Still read.
const HINT_FORMAT_V1: u32 = 1;
const HINT_HEADER_BYTES: usize = 32;
/// Entry header of format version 1.
const ENTRY_HEADER_BYTES: usize = 36;
/// Run table of format versions 2 and 3: entries, bytes and CRC per shard, then its
/// own CRC.
const RUN_TABLE_BYTES: usize = SHARDS * 12 + 4;
/// Entry header of format version 2.
const RUN_ENTRY_HEADER_BYTES: usize = 32;

/// The file name of the hint of segment `id`.
pub(crate) fn file_name(id: u32) -> String {
    format!("{id:010}.hint")
}

/// One index entry of a segment. `K` is `Vec<u8>` when building a hint and a
/// borrowed slice of the hint or segment bytes when loading one (no allocation per
/// key at open).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintEntry<K = Vec<u8>> {
    pub tombstone: bool,
    pub seq: u64,
    pub expires_at_ms: u64,
    pub offset: u32,
    pub len: u32,
    pub key: K,
}

impl<'a> HintEntry<&'a [u8]> {
    /// The entry of the record that starts `record` (its header already decoded) at
    /// `offset` in its segment.
    pub(crate) fn of_record(header: &record::Header, record: &'a [u8], offset: u32) -> Self {
        HintEntry {
            tombstone: header.is_tombstone(),
            seq: header.seq,
            expires_at_ms: header.expires_at_ms,
            offset,
            len: header.record_len() as u32,
            key: &record[header.key_range()],
        }
    }

    /// The same entry owning its key.
    pub(crate) fn to_owned_key(&self) -> HintEntry {
        HintEntry {
            tombstone: self.tombstone,
            seq: self.seq,
            expires_at_ms: self.expires_at_ms,
            offset: self.offset,
            len: self.len,
            key: self.key.to_vec(),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The 32-byte header of a hint.
fn encode_header(out: &mut Vec<u8>, version: u32, id: u32, segment_len: u64, entries: usize) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&segment_len.to_le_bytes());
    out.extend_from_slice(&(entries as u32).to_le_bytes());
    let crc = crc32fast::hash(&out[0..28]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Appends `value` as a varint (LEB128).
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The varint at `*pos` of `bytes`, moving `*pos` past it; `None` when it runs past the
/// end, is longer than 10 bytes, overflows 64 bits or is not in its shortest form
/// (so every value has exactly one encoding).
#[inline(always)]
fn varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *bytes.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(u64::from(first));
    }
    let mut value = u64::from(first & 0x7f);
    for i in 1..10 {
        let byte = *bytes.get(*pos + i)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            if byte == 0 || (i == 9 && byte > 1) {
                return None;
            }
            *pos += i + 1;
            return Some(value);
        }
    }
    None
}

/// A signed difference as an unsigned varint value: small magnitudes stay small.
fn zigzag(delta: u64) -> u64 {
    let d = delta as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(value: u64) -> u64 {
    ((value >> 1) as i64 ^ -((value & 1) as i64)) as u64
}

/// Encodes a hint (format version 3) for segment `id` of `segment_len` bytes. Each
/// run lists its entries by record offset. Entries this format cannot express, or that
/// open would refuse, are an error rather than quietly written as other entries: two
/// entries of one shard whose records overlap (a duplicate included), a record before
/// the segment header's end or past the segment's end, one too short for its key, an
/// empty key or one over [`KEY_BYTES_MAX`], a seq at or over the limit.
pub(crate) fn encode<K: AsRef<[u8]>>(
    id: u32,
    segment_len: u64,
    entries: &[HintEntry<K>],
) -> Result<Vec<u8>> {
    let mut by_shard: Vec<Vec<&HintEntry<K>>> = (0..SHARDS).map(|_| Vec::new()).collect();
    for e in entries {
        by_shard[shard_of(e.key.as_ref())].push(e);
    }
    let body: usize = entries
        .iter()
        .map(|e| 5 + 3 + 3 + 3 + e.key.as_ref().len())
        .sum();
    let mut out = Vec::with_capacity(HINT_HEADER_BYTES + RUN_TABLE_BYTES + body);
    encode_header(
        &mut out,
        HINT_FORMAT_VERSION,
        id,
        segment_len,
        entries.len(),
    );
    // The run table is filled in once the runs are written.
    out.resize(HINT_HEADER_BYTES + RUN_TABLE_BYTES, 0);
    for (shard, run) in by_shard.iter_mut().enumerate() {
        // Already in offset order when `entries` are in record order.
        run.sort_by_key(|e| e.offset);
        let start = out.len();
        let (mut prev_seq, mut next_offset) = (0u64, SEGMENT_HEADER_BYTES);
        for e in run.iter() {
            let key = e.key.as_ref();
            let record_end = u64::from(e.offset) + u64::from(e.len);
            let why = if u64::from(e.offset) < next_offset {
                Some("its record overlaps another entry's or the segment header")
            } else if record_end > segment_len {
                Some("its record ends past the end of the segment")
            } else if key.is_empty() || key.len() > KEY_BYTES_MAX {
                Some("its key is empty or longer than the limit")
            } else if (e.len as usize) < HEADER_BYTES_MIN + key.len() {
                Some("its record is too short for its key")
            } else if e.seq >= record::SEQ_LIMIT {
                Some("its seq is out of range")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(Error::Corrupt {
                    file: PathBuf::from(file_name(id)),
                    offset: u64::from(e.offset),
                    reason: format!(
                        "cannot write a hint entry (length {}, seq {}): {why}",
                        e.len, e.seq
                    ),
                });
            }
            put_varint(&mut out, (key.len() as u64) << 1 | u64::from(e.tombstone));
            put_varint(&mut out, zigzag(e.seq.wrapping_sub(prev_seq)));
            put_varint(&mut out, e.expires_at_ms);
            put_varint(&mut out, u64::from(e.offset) - next_offset);
            put_varint(&mut out, u64::from(e.len));
            out.extend_from_slice(key);
            prev_seq = e.seq;
            next_offset = record_end;
        }
        let crc = crc32fast::hash(&out[start..]);
        let run_bytes = (out.len() - start) as u32;
        let row = HINT_HEADER_BYTES + shard * 12;
        out[row..row + 4].copy_from_slice(&(run.len() as u32).to_le_bytes());
        out[row + 4..row + 8].copy_from_slice(&run_bytes.to_le_bytes());
        out[row + 8..row + 12].copy_from_slice(&crc.to_le_bytes());
    }
    let table_end = HINT_HEADER_BYTES + RUN_TABLE_BYTES - 4;
    let crc = crc32fast::hash(&out[HINT_HEADER_BYTES..table_end]);
    out[table_end..table_end + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Encodes a hint in format version 2 (tests and fuzzing of the reader of old hints).
pub(crate) fn encode_v2<K: AsRef<[u8]>>(
    id: u32,
    segment_len: u64,
    entries: &[HintEntry<K>],
) -> Vec<u8> {
    let shards: Vec<usize> = entries.iter().map(|e| shard_of(e.key.as_ref())).collect();
    let mut run_bytes = [0usize; SHARDS];
    let mut run_entries = [0u32; SHARDS];
    for (e, &shard) in entries.iter().zip(&shards) {
        run_bytes[shard] += RUN_ENTRY_HEADER_BYTES + e.key.as_ref().len();
        run_entries[shard] += 1;
    }
    let body: usize = run_bytes.iter().sum();
    let mut out = Vec::with_capacity(HINT_HEADER_BYTES + RUN_TABLE_BYTES + body);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&HINT_FORMAT_V2.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&segment_len.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let crc = crc32fast::hash(&out[0..28]);
    out.extend_from_slice(&crc.to_le_bytes());
    // The run table is filled in once the runs are written.
    out.resize(HINT_HEADER_BYTES + RUN_TABLE_BYTES, 0);
    let mut starts = [0usize; SHARDS];
    let mut at = out.len();
    for (shard, start) in starts.iter_mut().enumerate() {
        *start = at;
        at += run_bytes[shard];
    }
    out.resize(at, 0);
    let mut cursor = starts;
    for (e, &shard) in entries.iter().zip(&shards) {
        let key = e.key.as_ref();
        let pos = cursor[shard];
        let entry = &mut out[pos..pos + RUN_ENTRY_HEADER_BYTES + key.len()];
        entry[0] = if e.tombstone { FLAG_TOMBSTONE } else { 0 };
        entry[4..8].copy_from_slice(&(key.len() as u32).to_le_bytes());
        entry[8..16].copy_from_slice(&e.seq.to_le_bytes());
        entry[16..24].copy_from_slice(&e.expires_at_ms.to_le_bytes());
        entry[24..28].copy_from_slice(&e.offset.to_le_bytes());
        entry[28..32].copy_from_slice(&e.len.to_le_bytes());
        entry[RUN_ENTRY_HEADER_BYTES..].copy_from_slice(key);
        cursor[shard] = pos + entry.len();
    }
    for shard in 0..SHARDS {
        let run = &out[starts[shard]..starts[shard] + run_bytes[shard]];
        let crc = crc32fast::hash(run);
        let row = HINT_HEADER_BYTES + shard * 12;
        out[row..row + 4].copy_from_slice(&run_entries[shard].to_le_bytes());
        out[row + 4..row + 8].copy_from_slice(&(run_bytes[shard] as u32).to_le_bytes());
        out[row + 8..row + 12].copy_from_slice(&crc.to_le_bytes());
    }
    let table_end = HINT_HEADER_BYTES + RUN_TABLE_BYTES - 4;
    let crc = crc32fast::hash(&out[HINT_HEADER_BYTES..table_end]);
    out[table_end..table_end + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Encodes a hint in format version 1 (tests of the reader of old hints).
#[cfg(test)]
pub(crate) fn encode_v1<K: AsRef<[u8]>>(
    id: u32,
    segment_len: u64,
    entries: &[HintEntry<K>],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HINT_HEADER_BYTES + entries.len() * 56);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&HINT_FORMAT_V1.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&segment_len.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let crc = crc32fast::hash(&out[0..28]);
    out.extend_from_slice(&crc.to_le_bytes());
    for e in entries {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.push(if e.tombstone { FLAG_TOMBSTONE } else { 0 });
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&e.seq.to_le_bytes());
        out.extend_from_slice(&e.expires_at_ms.to_le_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        let key = e.key.as_ref();
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        let crc = crc32fast::hash(&out[start + 4..]);
        out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    }
    out
}

/// What the header of a hint says about the segment it describes.
fn header_matches(bytes: &[u8], id: u32, segment_len: u64) -> Option<u32> {
    if bytes.len() < HINT_HEADER_BYTES
        || &bytes[0..8] != MAGIC
        || u32_at(bytes, 28) != crc32fast::hash(&bytes[0..28])
        || u32_at(bytes, 12) != id
        || u64_at(bytes, 16) != segment_len
    {
        return None;
    }
    Some(u32_at(bytes, 8))
}

/// A decoded hint file.
pub(crate) enum Decoded<'a> {
    /// Format version 1: every entry checked and decoded.
    Entries(Vec<HintEntry<&'a [u8]>>),
    /// Format version 2 or 3: header and run table checked; each run must still pass
    /// [`Runs::check`] before its entries are used.
    Runs(Box<Runs<'a>>),
}

/// Decodes a hint; `None` when it is not a hint of a known version describing
/// segment `id` of `segment_len` bytes. Keys borrow from `bytes`.
pub(crate) fn decode_any(bytes: &[u8], id: u32, segment_len: u64) -> Option<Decoded<'_>> {
    match header_matches(bytes, id, segment_len)? {
        HINT_FORMAT_V1 => decode(bytes, id, segment_len).map(Decoded::Entries),
        version @ (HINT_FORMAT_V2 | HINT_FORMAT_VERSION) => {
            Runs::decode(bytes, version, segment_len).map(|r| Decoded::Runs(Box::new(r)))
        }
        _ => None,
    }
}

/// The per-shard runs of a version 2 or 3 hint.
pub(crate) struct Runs<'a> {
    /// The hint format version (2 or 3).
    pub version: u32,
    runs: [&'a [u8]; SHARDS],
    /// Byte offset of each run in the hint file.
    starts: [usize; SHARDS],
    counts: [u32; SHARDS],
    crcs: [u32; SHARDS],
    segment_len: u64,
}

impl<'a> Runs<'a> {
    /// Checks the run table (its CRC, and that the runs fill the rest of the file and
    /// add up to the header's entry count); the header was checked by the caller.
    fn decode(bytes: &'a [u8], version: u32, segment_len: u64) -> Option<Runs<'a>> {
        let table_end = HINT_HEADER_BYTES + RUN_TABLE_BYTES;
        if bytes.len() < table_end
            || u32_at(bytes, table_end - 4)
                != crc32fast::hash(&bytes[HINT_HEADER_BYTES..table_end - 4])
        {
            return None;
        }
        let mut runs = [&bytes[0..0]; SHARDS];
        let mut starts = [0usize; SHARDS];
        let mut counts = [0u32; SHARDS];
        let mut crcs = [0u32; SHARDS];
        let mut at = table_end;
        let mut total = 0u64;
        for shard in 0..SHARDS {
            let row = HINT_HEADER_BYTES + shard * 12;
            counts[shard] = u32_at(bytes, row);
            let len = u32_at(bytes, row + 4) as usize;
            crcs[shard] = u32_at(bytes, row + 8);
            let end = at.checked_add(len)?;
            runs[shard] = bytes.get(at..end)?;
            starts[shard] = at;
            at = end;
            total += u64::from(counts[shard]);
        }
        (at == bytes.len() && total == u64::from(u32_at(bytes, 24))).then_some(Runs {
            version,
            runs,
            starts,
            counts,
            crcs,
            segment_len,
        })
    }

    /// Entries in the run of `shard`.
    pub fn count(&self, shard: usize) -> usize {
        self.counts[shard] as usize
    }

    /// Checks the run of `shard` whole (its CRC, every entry's framing and bounds, the
    /// entry count, and that every key belongs to `shard`), handing each entry to
    /// `visit` as soon as it has checked, in one pass over the run (open fills the
    /// index this way, decoding every entry once). Returns the highest seq in the run
    /// (0 when empty), or `None` when the run must not be trusted — `visit` may then
    /// already have seen the entries before the fault (none when the CRC fails: it is
    /// checked first).
    pub fn visit(&self, shard: usize, visit: impl FnMut(&HintEntry<&'a [u8]>)) -> Option<u64> {
        self.walk(shard, visit).ok()
    }

    /// [`Runs::visit`] with no visitor, or the byte offset in the run where it fails
    /// (the run's start when its CRC fails).
    fn check_run(&self, shard: usize) -> std::result::Result<u64, usize> {
        self.walk(shard, |_| {})
    }

    /// [`Runs::visit`], or the byte offset in the run where it fails.
    #[inline]
    fn walk(
        &self,
        shard: usize,
        mut visit: impl FnMut(&HintEntry<&'a [u8]>),
    ) -> std::result::Result<u64, usize> {
        let run = self.runs[shard];
        if crc32fast::hash(run) != self.crcs[shard] {
            return Err(0);
        }
        let mut max_seq = 0;
        let mut n = 0u32;
        let mut reader = RunReader::new(run, self.version);
        let mut next_offset = SEGMENT_HEADER_BYTES;
        while !reader.done() {
            let at = reader.pos;
            let entry = reader.next_entry().ok_or(at)?;
            let record_end = u64::from(entry.offset) + u64::from(entry.len);
            if u64::from(entry.offset) < next_offset
                || record_end > self.segment_len
                || (entry.len as usize) < HEADER_BYTES_MIN + entry.key.len()
                || entry.key.len() > KEY_BYTES_MAX
                || shard_of(entry.key) != shard
                || n == self.counts[shard]
            {
                return Err(at);
            }
            visit(&entry);
            next_offset = record_end;
            max_seq = max_seq.max(entry.seq);
            n += 1;
        }
        if n == self.counts[shard] {
            Ok(max_seq)
        } else {
            Err(run.len())
        }
    }
}

/// Reads the entries of one run in order.
struct RunReader<'a> {
    run: &'a [u8],
    /// Where the next entry starts in the run.
    pos: usize,
    version: u32,
    /// Version 3: the previous entry's seq and where its record ends (the next
    /// entry's seq and offset are stored relative to them).
    prev_seq: u64,
    next_offset: u64,
}

impl<'a> RunReader<'a> {
    fn new(run: &'a [u8], version: u32) -> RunReader<'a> {
        RunReader {
            run,
            pos: 0,
            version,
            prev_seq: 0,
            next_offset: SEGMENT_HEADER_BYTES,
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.run.len()
    }

    /// The next entry; `None` at the end of the run or at a malformed entry.
    #[inline(always)]
    fn next_entry(&mut self) -> Option<HintEntry<&'a [u8]>> {
        if self.version == HINT_FORMAT_V2 {
            let (entry, end) = run_entry_v2(self.run, self.pos)?;
            self.pos = end;
            return Some(entry);
        }
        let run = self.run;
        let mut pos = self.pos;
        let meta = varint(run, &mut pos)?;
        let seq = self.prev_seq.wrapping_add(unzigzag(varint(run, &mut pos)?));
        let expires_at_ms = varint(run, &mut pos)?;
        let offset = self.next_offset.checked_add(varint(run, &mut pos)?)?;
        let len = u32::try_from(varint(run, &mut pos)?).ok()?;
        let key_len = usize::try_from(meta >> 1).ok()?;
        let end = pos.checked_add(key_len).filter(|&end| end <= run.len())?;
        if key_len == 0 || seq >= record::SEQ_LIMIT {
            return None;
        }
        let entry = HintEntry {
            tombstone: meta & 1 != 0,
            seq,
            expires_at_ms,
            offset: u32::try_from(offset).ok()?,
            len,
            key: &run[pos..end],
        };
        self.prev_seq = seq;
        self.next_offset = offset + u64::from(len);
        self.pos = end;
        Some(entry)
    }
}

/// The version 2 entry at `pos` of `run` and where the next one starts; `None` at the
/// end of the run or when the entry is malformed.
fn run_entry_v2(run: &[u8], pos: usize) -> Option<(HintEntry<&[u8]>, usize)> {
    let rest = run.get(pos..)?;
    if rest.len() < RUN_ENTRY_HEADER_BYTES {
        return None;
    }
    let flags = rest[0];
    let key_len = u32_at(rest, 4) as usize;
    let end = RUN_ENTRY_HEADER_BYTES.checked_add(key_len)?;
    if flags & !FLAG_TOMBSTONE != 0
        || rest[1..4] != [0; 3]
        || key_len == 0
        || rest.len() < end
        || u64_at(rest, 8) >= record::SEQ_LIMIT
    {
        return None;
    }
    let entry = HintEntry {
        tombstone: flags & FLAG_TOMBSTONE != 0,
        seq: u64_at(rest, 8),
        expires_at_ms: u64_at(rest, 16),
        offset: u32_at(rest, 24),
        len: u32_at(rest, 28),
        key: &rest[RUN_ENTRY_HEADER_BYTES..end],
    };
    Some((entry, pos + end))
}

/// Decodes a version 1 hint; `None` when it does not describe segment `id` of
/// `segment_len` bytes exactly and whole. Keys borrow from `bytes`.
fn decode(bytes: &[u8], id: u32, segment_len: u64) -> Option<Vec<HintEntry<&[u8]>>> {
    if header_matches(bytes, id, segment_len)? != HINT_FORMAT_V1 {
        return None;
    }
    let entries = check_v1(bytes, segment_len).ok()?;
    Some(entries.into_iter().map(|(_, entry)| entry).collect())
}

/// Why a hint is not used: the byte offset in the hint file where it first fails, and
/// what failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HintFault {
    pub offset: u64,
    pub reason: String,
}

/// Every entry of a hint with its byte offset in the hint file, or why it fails.
pub(crate) type Checked<'a> = std::result::Result<Vec<(u64, HintEntry<&'a [u8]>)>, HintFault>;

fn fault(offset: usize, reason: String) -> HintFault {
    HintFault {
        offset: offset as u64,
        reason,
    }
}

/// Checks a hint of either version whole, as open does, but says where and why it
/// fails (for `verify`). On success, every entry with its byte offset in the hint file.
pub(crate) fn check(bytes: &[u8], id: u32, segment_len: u64) -> Checked<'_> {
    if bytes.len() < HINT_HEADER_BYTES {
        return Err(fault(0, "file is shorter than a hint header".into()));
    }
    if &bytes[0..8] != MAGIC || u32_at(bytes, 28) != crc32fast::hash(&bytes[0..28]) {
        return Err(fault(0, "hint header fails its checksum".into()));
    }
    let stored_id = u32_at(bytes, 12);
    if stored_id != id {
        return Err(fault(
            0,
            format!("header names segment {stored_id}, file name says {id}"),
        ));
    }
    let described = u64_at(bytes, 16);
    if described != segment_len {
        return Err(fault(
            0,
            format!("describes a segment of {described} bytes; the segment has {segment_len}"),
        ));
    }
    match u32_at(bytes, 8) {
        HINT_FORMAT_V1 => check_v1(bytes, segment_len),
        version @ (HINT_FORMAT_V2 | HINT_FORMAT_VERSION) => check_runs(bytes, version, segment_len),
        version => Err(fault(0, format!("unknown hint format version {version}"))),
    }
}

/// The entries of a version 2 or 3 hint whose header was checked, each run checked
/// whole.
fn check_runs(bytes: &[u8], version: u32, segment_len: u64) -> Checked<'_> {
    let runs = Runs::decode(bytes, version, segment_len).ok_or_else(|| {
        fault(
            HINT_HEADER_BYTES,
            "run table fails its checksum or does not add up to the file".into(),
        )
    })?;
    let mut entries = Vec::new();
    for shard in 0..SHARDS {
        let start = runs.starts[shard];
        if let Err(at) = runs.check_run(shard) {
            let why = if crc32fast::hash(runs.runs[shard]) != runs.crcs[shard] {
                "fails its checksum"
            } else {
                "holds a malformed entry, one outside the segment, or a key of another shard"
            };
            return Err(fault(
                start + at,
                format!("the run of index shard {shard} {why}"),
            ));
        }
        let mut reader = RunReader::new(runs.runs[shard], version);
        loop {
            let at = reader.pos;
            let Some(entry) = reader.next_entry() else {
                break;
            };
            entries.push(((start + at) as u64, entry));
        }
    }
    Ok(entries)
}

/// The entries of a version 1 hint whose header was checked.
fn check_v1(bytes: &[u8], segment_len: u64) -> Checked<'_> {
    let count = u32_at(bytes, 24) as usize;
    let mut entries = Vec::with_capacity(count.min(bytes.len() / ENTRY_HEADER_BYTES));
    let mut pos = HINT_HEADER_BYTES;
    // Entries are in record order and records do not overlap: one record listed twice
    // (and so another left out) is caught here.
    let mut next_offset = 0u64;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < ENTRY_HEADER_BYTES {
            return Err(fault(pos, "entry extends past the end of the file".into()));
        }
        let key_len = u32_at(rest, 32) as usize;
        let Some(end) = ENTRY_HEADER_BYTES
            .checked_add(key_len)
            .filter(|&end| end <= rest.len())
        else {
            return Err(fault(pos, "entry extends past the end of the file".into()));
        };
        if u32_at(rest, 0) != crc32fast::hash(&rest[4..end]) {
            return Err(fault(pos, "entry fails its checksum".into()));
        }
        let flags = rest[4];
        // Reserved bytes are zero in this format: anything else is a newer writer's.
        if flags & !FLAG_TOMBSTONE != 0
            || rest[5..8] != [0; 3]
            || key_len == 0
            || key_len > KEY_BYTES_MAX
            || u64_at(rest, 8) >= record::SEQ_LIMIT
        {
            return Err(fault(
                pos,
                format!(
                    "impossible flags {flags:#04x}, reserved bytes, version, or an empty or \
                     too long key"
                ),
            ));
        }
        let entry = HintEntry {
            tombstone: flags & FLAG_TOMBSTONE != 0,
            seq: u64_at(rest, 8),
            expires_at_ms: u64_at(rest, 16),
            offset: u32_at(rest, 24),
            len: u32_at(rest, 28),
            key: &rest[ENTRY_HEADER_BYTES..end],
        };
        // Every entry must point inside the segment it describes.
        let record_end = u64::from(entry.offset) + u64::from(entry.len);
        if u64::from(entry.offset) < SEGMENT_HEADER_BYTES.max(next_offset)
            || record_end > segment_len
            || (entry.len as usize) < HEADER_BYTES_MIN + key_len
        {
            return Err(fault(
                pos,
                format!(
                    "entry points outside the segment (offset {}, length {})",
                    entry.offset, entry.len
                ),
            ));
        }
        next_offset = record_end;
        entries.push((pos as u64, entry));
        pos += end;
    }
    if entries.len() != count {
        return Err(fault(
            0,
            format!(
                "header announces {count} entries, the file holds {}",
                entries.len()
            ),
        ));
    }
    Ok(entries)
}

/// The hint entries of a segment's bytes: one per record. The segment must check
/// (it is sealed or freshly written); a record that does not is an error.
pub(crate) fn entries_of<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<HintEntry<&'a [u8]>>> {
    let mut entries = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    while pos < bytes.len() {
        let header = record::decode(&bytes[pos..])
            .map_err(|e| record::corrupt(path.to_path_buf(), pos as u64, e))?;
        entries.push(HintEntry::of_record(&header, &bytes[pos..], pos as u32));
        pos += header.record_len();
    }
    Ok(entries)
}

/// Writes the hint of segment `id` durably: to a temporary name, fsync, rename, fsync
/// of the folder. Returns its path.
pub(crate) fn write<K: AsRef<[u8]>>(
    dir: &Path,
    id: u32,
    segment_len: u64,
    entries: &[HintEntry<K>],
) -> Result<PathBuf> {
    let path = dir.join(file_name(id));
    let tmp = dir.join(format!("{}.tmp", file_name(id)));
    let bytes = encode(id, segment_len, entries)?;
    let context = || format!("writing hint {}", file_name(id));
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(context(), e));
    }
    sync_dir(dir)?;
    Ok(path)
}

/// The bytes of a hint file: mapped, or read when mapping fails (an empty file).
pub(crate) enum HintBytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for HintBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            HintBytes::Mapped(map) => map,
            HintBytes::Read(bytes) => bytes,
        }
    }
}

/// The bytes of the hint of segment `id`, if there is one; decode them with
/// [`decode_any`]. The file is mapped, not copied into a fresh buffer, and the kernel
/// is asked to read it all ahead at once: open maps every hint before it touches any,
/// so on a cold page cache all of them are read concurrently in large requests.
pub(crate) fn read(dir: &Path, id: u32) -> Option<HintBytes> {
    let file = File::open(dir.join(file_name(id))).ok()?;
    // SAFETY: hint files are never written in place: they are written whole under a
    // temporary name and renamed (`write`, compaction), and later only deleted,
    // which keeps a mapping valid on Unix. The data folder is flock-ed, so no other
    // caskade process writes here; the mapping lives only while open loads it.
    match unsafe { memmap2::Mmap::map(&file) } {
        Ok(map) => {
            // Only a hint for the kernel; reading works without it.
            let _ = map.advise(memmap2::Advice::WillNeed);
            Some(HintBytes::Mapped(map))
        }
        Err(_) => std::fs::read(dir.join(file_name(id)))
            .ok()
            .map(HintBytes::Read),
    }
}

/// Test help: rewrites the CRCs of every run and of the run table (a version 2 or 3
/// hint that was edited on purpose).
#[cfg(test)]
pub(crate) fn fix_run_crcs(bytes: &mut [u8]) {
    let mut at = HINT_HEADER_BYTES + RUN_TABLE_BYTES;
    for shard in 0..SHARDS {
        let row = HINT_HEADER_BYTES + shard * 12;
        let len = u32_at(bytes, row + 4) as usize;
        let crc = crc32fast::hash(&bytes[at..at + len]);
        bytes[row + 8..row + 12].copy_from_slice(&crc.to_le_bytes());
        at += len;
    }
    let end = HINT_HEADER_BYTES + RUN_TABLE_BYTES - 4;
    let crc = crc32fast::hash(&bytes[HINT_HEADER_BYTES..end]);
    bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Test help: makes a version 2 or 3 hint lie in a way only its entries show. The
/// first key of its first non-empty run is changed into another key of the same shard
/// (a key the segment does not hold, in an entry that checks), and the first key of
/// its last non-empty run into a key of another shard (an entry that does not check);
/// then every CRC is fixed. What a writer bug could leave.
#[cfg(test)]
pub(crate) fn make_a_hint_lie(bytes: &mut [u8]) {
    let version = u32_at(bytes, 8);
    let mut at = HINT_HEADER_BYTES + RUN_TABLE_BYTES;
    let mut runs = Vec::new();
    for shard in 0..SHARDS {
        let len = u32_at(bytes, HINT_HEADER_BYTES + shard * 12 + 4) as usize;
        if len > 0 {
            runs.push((shard, at, len));
        }
        at += len;
    }
    assert!(runs.len() >= 2, "two non-empty runs");
    let first_key = |bytes: &[u8], (_, start, len): (usize, usize, usize)| {
        let run = &bytes[start..start + len];
        let key = RunReader::new(run, version)
            .next_entry()
            .expect("a first entry")
            .key;
        let key_at = start + (key.as_ptr() as usize - run.as_ptr() as usize);
        key_at..key_at + key.len()
    };
    let (invented, misplaced) = (runs[0], runs[runs.len() - 1]);
    let key = first_key(bytes, invented);
    loop {
        bytes[key.end - 1] = bytes[key.end - 1].wrapping_add(1);
        if shard_of(&bytes[key.clone()]) == invented.0 {
            break;
        }
    }
    let key = first_key(bytes, misplaced);
    while shard_of(&bytes[key.clone()]) == misplaced.0 {
        bytes[key.end - 1] = bytes[key.end - 1].wrapping_add(1);
    }
    fix_run_crcs(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<HintEntry> {
        vec![
            HintEntry {
                tombstone: false,
                seq: 5,
                expires_at_ms: 0,
                offset: 32,
                len: 60,
                key: b"user/a".to_vec(),
            },
            HintEntry {
                tombstone: true,
                seq: 6,
                expires_at_ms: 0,
                offset: 92,
                len: 50,
                key: b"user/b".to_vec(),
            },
        ]
    }

    /// Every entry of a hint of either version, checked whole, in seq order.
    fn decode_all(bytes: &[u8], id: u32, segment_len: u64) -> Option<Vec<HintEntry>> {
        let mut entries: Vec<HintEntry> = match decode_any(bytes, id, segment_len)? {
            Decoded::Entries(entries) => entries.iter().map(|e| e.to_owned_key()).collect(),
            Decoded::Runs(runs) => {
                let mut all = Vec::new();
                for shard in 0..SHARDS {
                    let mut run = Vec::new();
                    runs.visit(shard, |e| run.push(e.to_owned_key()))?;
                    assert!(runs.check_run(shard).is_ok(), "check agrees with visit");
                    all.extend(run);
                }
                all
            }
        };
        entries.sort_by_key(|e| e.seq);
        Some(entries)
    }

    /// Enough keys that several shards get a run.
    fn many() -> Vec<HintEntry> {
        (0..40u32)
            .map(|i| HintEntry {
                tombstone: i % 7 == 3,
                seq: u64::from(i) + 1,
                expires_at_ms: if i % 5 == 0 { 1_000 + u64::from(i) } else { 0 },
                offset: 32 + i * 60,
                len: 60,
                key: format!("key/{i}").into_bytes(),
            })
            .collect()
    }

    /// The hint of `entries` in each format version this build reads, newest first.
    fn every_version(len: u64, entries: &[HintEntry]) -> [Vec<u8>; 3] {
        [
            encode(7, len, entries).expect("encodes"),
            encode_v2(7, len, entries),
            encode_v1(7, len, entries),
        ]
    }

    /// Entries with fields that take several varint bytes: seqs far apart and going
    /// down within a run, real expiry times, large gaps between records, long keys.
    fn wide() -> (u64, Vec<HintEntry>) {
        let mut offset = 32u32;
        let entries = (0..200u32)
            .map(|i| {
                let len = 60 + (i * 7919) % 70_000;
                let e = HintEntry {
                    tombstone: i % 11 == 0,
                    seq: if i % 2 == 0 {
                        (1 << 59) + u64::from(i)
                    } else {
                        u64::from(200 - i)
                    },
                    expires_at_ms: if i % 3 == 0 {
                        1_764_000_000_000 + u64::from(i)
                    } else {
                        0
                    },
                    offset,
                    len,
                    key: format!("wide/{i}/{}", "k".repeat((i % 300) as usize)).into_bytes(),
                };
                offset += len + (i % 5) * 1000;
                e
            })
            .collect();
        (u64::from(offset), entries)
    }

    #[test]
    fn a_hint_round_trips_in_every_version() {
        let (wide_len, wide) = wide();
        for (len, entries) in [(142, sample()), (2432, many()), (wide_len, wide)] {
            let mut by_seq = entries.clone();
            by_seq.sort_by_key(|e| e.seq);
            for bytes in every_version(len, &entries) {
                assert!(
                    decode_all(&bytes, 7, len) == Some(by_seq.clone()),
                    "version {} of {} entries",
                    u32_at(&bytes, 8),
                    entries.len()
                );
                assert_eq!(
                    check(&bytes, 7, len).map(|c| c.len()),
                    Ok(entries.len()),
                    "version {}",
                    u32_at(&bytes, 8)
                );
            }
        }
        let bytes = encode(7, 2432, &many()).expect("encodes");
        let Some(Decoded::Runs(runs)) = decode_any(&bytes, 7, 2432) else {
            panic!("a version 3 hint");
        };
        assert_eq!(runs.version, HINT_FORMAT_VERSION);
        assert!((0..SHARDS).filter(|&s| runs.count(s) > 0).count() > 4);
    }

    /// Format version 3 byte for byte, so a change of the layout is a decision: the
    /// 32-byte header, the run table (two runs of one entry each), then the entries.
    #[test]
    fn a_version_3_hint_is_byte_for_byte_as_documented() {
        let bytes = encode(7, 142, &sample()).expect("encodes");
        let mut want = Vec::new();
        want.extend_from_slice(b"CASKHNT\0");
        want.extend_from_slice(&3u32.to_le_bytes());
        want.extend_from_slice(&7u32.to_le_bytes());
        want.extend_from_slice(&142u64.to_le_bytes());
        want.extend_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&want);
        want.extend_from_slice(&crc.to_le_bytes());
        // user/a: key length 6 × 2 (a value), seq 5 (zigzag 10), no expiry, offset
        // 32 (0 after the segment header), length 60, the key.
        let a: &[u8] = &[12, 10, 0, 0, 60, b'u', b's', b'e', b'r', b'/', b'a'];
        // user/b: 6 × 2 + 1 (a tombstone), seq 6 (zigzag 12), no expiry, offset 92
        // (60 after the segment header), length 50.
        let b: &[u8] = &[13, 12, 0, 60, 50, b'u', b's', b'e', b'r', b'/', b'b'];
        let (sa, sb) = (shard_of(b"user/a"), shard_of(b"user/b"));
        assert_ne!(sa, sb, "the example needs its keys in two runs");
        let mut table = Vec::new();
        for shard in 0..SHARDS {
            let run: &[u8] = [(sa, a), (sb, b)]
                .iter()
                .find(|(s, _)| *s == shard)
                .map_or(&[], |(_, r)| r);
            table.extend_from_slice(&u32::from(!run.is_empty()).to_le_bytes());
            table.extend_from_slice(&(run.len() as u32).to_le_bytes());
            table.extend_from_slice(&crc32fast::hash(run).to_le_bytes());
        }
        let crc = crc32fast::hash(&table);
        want.extend_from_slice(&table);
        want.extend_from_slice(&crc.to_le_bytes());
        let (first, second) = if sa < sb { (a, b) } else { (b, a) };
        want.extend_from_slice(first);
        want.extend_from_slice(second);
        assert_eq!(bytes, want);
    }

    #[test]
    fn varints_round_trip_and_only_their_shortest_form_is_read() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut pos = 0;
            assert_eq!(varint(&out, &mut pos), Some(v));
            assert_eq!(pos, out.len());
            for cut in 0..out.len() {
                assert_eq!(varint(&out[..cut], &mut 0), None, "{v} cut at {cut}");
            }
        }
        for d in [0u64, 1, 2, u64::MAX, 1 << 63, 12_345] {
            assert_eq!(unzigzag(zigzag(d)), d);
        }
        assert_eq!(zigzag(u64::MAX), 1, "-1 is one byte");
        // Padded forms of 0 and 1, an 11th byte, a 10th byte above 1.
        for bad in [
            &[0x80, 0x00][..],
            &[0x81, 0x80, 0x00],
            &[0xff; 11],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
        ] {
            assert_eq!(varint(bad, &mut 0), None, "{bad:?}");
        }
    }

    /// Entries whose CRCs check but whose varints are padded, whose records overlap or
    /// lie outside the segment, or whose count disagrees are refused, so a version 3
    /// hint re-encodes to its own bytes and never points outside its segment.
    #[test]
    fn a_version_3_run_that_checks_but_is_malformed_is_refused() {
        let good = encode(7, 142, &sample()).expect("encodes");
        let table_end = HINT_HEADER_BYTES + RUN_TABLE_BYTES;
        let first_run = (0..SHARDS)
            .find(|&s| u32_at(&good, HINT_HEADER_BYTES + s * 12) > 0)
            .expect("a run");
        let row = HINT_HEADER_BYTES + first_run * 12;
        let edit = |change: &dyn Fn(&mut Vec<u8>)| {
            let mut entry = good[table_end..table_end + 11].to_vec();
            change(&mut entry);
            let mut bytes = good[..table_end].to_vec();
            bytes[row + 4..row + 8].copy_from_slice(&(entry.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&entry);
            bytes.extend_from_slice(&good[table_end + 11..]);
            fix_run_crcs(&mut bytes);
            bytes
        };
        // The unchanged entry, re-framed the same way, is accepted.
        assert!(decode_all(&edit(&|_| {}), 7, 142).is_some());
        type Change = dyn Fn(&mut Vec<u8>);
        let cases: [(&str, &Change); 5] = [
            ("padded expiry", &|e| {
                e.splice(2..3, [0x80, 0x00]).for_each(drop)
            }),
            ("record past the segment's end", &|e| {
                // Offset 32 + 100: its record (50 or 60 bytes) ends past byte 142.
                e[3] = 100;
            }),
            // Shorter than the smallest record header plus a 1-byte key.
            ("record too short for its key", &|e| e[4] = 5),
            ("empty key", &|e| {
                e[0] = 0;
                e.truncate(5);
            }),
            ("seq at the limit", &|e| {
                let mut v = Vec::new();
                put_varint(&mut v, zigzag(record::SEQ_LIMIT));
                e.splice(1..2, v).for_each(drop);
            }),
        ];
        for (what, change) in cases {
            let bytes = edit(change);
            assert_eq!(decode_all(&bytes, 7, 142), None, "{what}");
            let fault = check(&bytes, 7, 142).expect_err(what);
            assert_eq!(fault.offset, table_end as u64, "{what}: {fault:?}");
        }
        // A run holding one entry more than the run table counts.
        let mut bytes = good.clone();
        bytes[row..row + 4].copy_from_slice(&0u32.to_le_bytes());
        fix_run_crcs(&mut bytes);
        assert_eq!(decode_all(&bytes, 7, 142), None, "counts disagree");
        bytes[24..28].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32fast::hash(&bytes[0..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(
            matches!(decode_any(&bytes, 7, 142), Some(Decoded::Runs(_))),
            "the run table adds up to the header"
        );
        assert_eq!(decode_all(&bytes, 7, 142), None, "but the run holds more");
    }

    #[test]
    fn a_damaged_truncated_or_stale_hint_is_refused() {
        for bytes in every_version(142, &sample()) {
            assert_eq!(decode_all(&bytes, 8, 142), None, "other segment");
            assert_eq!(decode_all(&bytes, 7, 200), None, "segment grew or shrank");
            for cut in 0..bytes.len() {
                assert_eq!(decode_all(&bytes[..cut], 7, 142), None, "cut at {cut}");
            }
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x10;
                assert_eq!(decode_all(&bad, 7, 142), None, "flip at {i}");
            }
        }
    }

    #[test]
    fn an_entry_in_the_wrong_shards_run_or_an_unknown_version_is_refused() {
        let (entries, len) = (sample(), 142);
        let mut bytes = encode(7, len, &entries).expect("encodes");
        // A non-empty run followed by an empty one: swapping their rows of the run
        // table keeps every byte of the body in place and every CRC right, but puts
        // the entries in the run of a shard their keys do not belong to.
        let row = |s: usize| HINT_HEADER_BYTES + s * 12;
        let s = (0..SHARDS - 1)
            .find(|&s| u32_at(&bytes, row(s)) > 0 && u32_at(&bytes, row(s + 1)) == 0)
            .expect("a run followed by an empty one");
        let (a, b) = (row(s), row(s + 1));
        let (first, second) = (bytes[a..a + 12].to_vec(), bytes[b..b + 12].to_vec());
        bytes[a..a + 12].copy_from_slice(&second);
        bytes[b..b + 12].copy_from_slice(&first);
        let end = HINT_HEADER_BYTES + RUN_TABLE_BYTES - 4;
        let crc = crc32fast::hash(&bytes[HINT_HEADER_BYTES..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode_any(&bytes, 7, len), Some(Decoded::Runs(_))));
        assert_eq!(decode_all(&bytes, 7, len), None, "entries in the wrong run");

        let mut future = encode(7, len, &entries).expect("encodes");
        future[8..12].copy_from_slice(&4u32.to_le_bytes());
        let crc = crc32fast::hash(&future[0..28]);
        future[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_any(&future, 7, len).is_none(), "unknown version");
    }

    /// Found by the `record_decode` fuzz target: an entry whose reserved bytes are not
    /// zero (with a CRC that checks) was accepted, so the hint did not re-encode to its
    /// own bytes. It is refused like an unknown flag: the segment is scanned instead.
    #[test]
    fn an_entry_with_nonzero_reserved_bytes_is_refused() {
        let good = encode_v1(7, 142, &sample());
        for at in 5..8 {
            let mut bytes = good.clone();
            let entry = HINT_HEADER_BYTES;
            bytes[entry + at] = 0x7e;
            let end = entry + ENTRY_HEADER_BYTES + 6;
            let crc = crc32fast::hash(&bytes[entry + 4..end]);
            bytes[entry..entry + 4].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(decode_all(&bytes, 7, 142), None, "v1 reserved byte {at}");
        }
        let good = encode_v2(7, 142, &sample());
        let run = (0..SHARDS)
            .find(|&s| u32_at(&good, HINT_HEADER_BYTES + s * 12) > 0)
            .expect("a non-empty run");
        let run_start = HINT_HEADER_BYTES
            + RUN_TABLE_BYTES
            + (0..run)
                .map(|s| u32_at(&good, HINT_HEADER_BYTES + s * 12 + 4) as usize)
                .sum::<usize>();
        let run_len = u32_at(&good, HINT_HEADER_BYTES + run * 12 + 4) as usize;
        for at in 1..4 {
            let mut bytes = good.clone();
            bytes[run_start + at] = 0x7e;
            let crc = crc32fast::hash(&bytes[run_start..run_start + run_len]);
            let row = HINT_HEADER_BYTES + run * 12;
            bytes[row + 8..row + 12].copy_from_slice(&crc.to_le_bytes());
            let table_end = HINT_HEADER_BYTES + RUN_TABLE_BYTES - 4;
            let crc = crc32fast::hash(&bytes[HINT_HEADER_BYTES..table_end]);
            bytes[table_end..table_end + 4].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(decode_all(&bytes, 7, 142), None, "v2 reserved byte {at}");
            let fault = check(&bytes, 7, 142).expect_err("check refuses it too");
            assert_eq!(fault.offset, run_start as u64, "{fault:?}");
        }
    }

    /// The version 3 encoder refuses entries it cannot express (it used to write a
    /// duplicate or an overlap as a different, well-formed entry pointing at another
    /// record) and entries open would refuse; `write` passes the error on and leaves
    /// no file behind.
    #[test]
    fn entries_the_format_cannot_express_are_refused_by_the_encoder() {
        let good = sample();
        assert!(encode(7, 142, &good).is_ok());
        type Change = dyn Fn(&mut Vec<HintEntry>);
        let cases: [(&str, &Change); 9] = [
            ("a duplicate entry", &|v| v[1] = v[0].clone()),
            ("overlapping records of one key", &|v| {
                v[1].key = v[0].key.clone();
                v[1].offset = 60;
            }),
            ("a record inside the segment header", &|v| v[0].offset = 8),
            ("a record past the segment's end", &|v| v[1].len = 51),
            ("a record too short for its key", &|v| {
                v[0].len = (HEADER_BYTES_MIN + 5) as u32
            }),
            ("an empty key", &|v| v[0].key.clear()),
            ("a key over the limit", &|v| {
                v[0].key = vec![b'k'; KEY_BYTES_MAX + 1];
                v[0].len = 50;
            }),
            ("a seq at the limit", &|v| v[0].seq = record::SEQ_LIMIT),
            ("a record of the same key starting inside another's", &|v| {
                v[1].key = v[0].key.clone();
                v[1].offset = 40;
                v[1].len = 20;
            }),
        ];
        let dir = tempfile::tempdir().expect("temp dir");
        for (what, change) in cases {
            let mut entries = good.clone();
            change(&mut entries);
            let err = encode(7, 142, &entries).expect_err(what);
            assert!(matches!(err, Error::Corrupt { .. }), "{what}: {err}");
            assert!(write(dir.path(), 7, 142, &entries).is_err(), "{what}");
            let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
            assert!(left.is_empty(), "{what}: {left:?}");
        }
    }

    /// Versions 1 and 2 can express a duplicate or an overlap; their readers refuse
    /// it (a record listed twice leaves another out), and a key over the limit, in
    /// every version.
    #[test]
    fn an_old_hint_listing_overlapping_records_or_a_too_long_key_is_refused() {
        let mut dup = sample();
        dup[1] = dup[0].clone();
        let mut overlap = sample();
        overlap[1].key = overlap[0].key.clone();
        overlap[1].offset = 60;
        for (what, entries) in [("duplicate", &dup), ("overlap", &overlap)] {
            for bytes in [encode_v2(7, 142, entries), encode_v1(7, 142, entries)] {
                let version = u32_at(&bytes, 8);
                assert_eq!(
                    decode_all(&bytes, 7, 142),
                    None,
                    "{what}, version {version}"
                );
                let fault = check(&bytes, 7, 142).expect_err(what);
                assert!(fault.offset > HINT_HEADER_BYTES as u64, "{what}: {fault:?}");
            }
        }
        let len = 32 + (HEADER_BYTES_MIN + KEY_BYTES_MAX + 1) as u64;
        let long = vec![HintEntry {
            tombstone: false,
            seq: 1,
            expires_at_ms: 0,
            offset: 32,
            len: (len - 32) as u32,
            key: vec![b'k'; KEY_BYTES_MAX + 1],
        }];
        for bytes in [encode_v2(7, len, &long), encode_v1(7, len, &long)] {
            let version = u32_at(&bytes, 8);
            assert_eq!(decode_all(&bytes, 7, len), None, "version {version}");
            assert!(check(&bytes, 7, len).is_err(), "version {version}");
        }
        let mut at_limit = long.clone();
        at_limit[0].key.pop();
        assert!(decode_all(&encode(7, len, &at_limit).expect("encodes"), 7, len).is_some());
    }

    #[test]
    fn check_gives_every_entry_with_its_offset_in_every_version() {
        for bytes in every_version(142, &sample()) {
            let checked = check(&bytes, 7, 142).expect("a good hint checks");
            assert_eq!(checked.len(), 2);
            for (at, entry) in &checked {
                let at = *at as usize;
                let key_at = match u32_at(&bytes, 8) {
                    HINT_FORMAT_V1 => at + ENTRY_HEADER_BYTES,
                    HINT_FORMAT_V2 => at + RUN_ENTRY_HEADER_BYTES,
                    // Five one-byte varints before the key.
                    _ => at + 5,
                };
                assert_eq!(&bytes[key_at..key_at + entry.key.len()], entry.key);
            }
            let mut stale = bytes.clone();
            stale[12] ^= 1;
            assert!(check(&stale, 7, 142).is_err());
        }
    }
}
