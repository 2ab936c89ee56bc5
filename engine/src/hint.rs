//! Hint files: the index entries of one sealed segment, so open can rebuild the index
//! without reading values.
//!
//! `NNNNNNNNNN.hint` sits beside `NNNNNNNNNN.seg`. Layout (little-endian):
//! ```text
//! header, 32 bytes:
//!  0  8  magic b"CASKHNT\0"
//!  8  4  hint format version (HINT_FORMAT_VERSION)
//! 12  4  segment id
//! 16  8  length of the segment file the hint describes
//! 24  4  number of entries
//! 28  4  crc32 of bytes 0..28
//! entry, 36 bytes + key:
//!  0  4  crc32 of bytes 4..end of the entry
//!  4  1  record flags (tombstone bit as in the record)
//!  5  3  reserved, zero
//!  8  8  seq
//! 16  8  expires_at_ms (0 = never)
//! 24  4  record offset in the segment
//! 28  4  record length
//! 32  4  key length
//! 36  .. key
//! ```
//! A hint is trusted only whole: a bad CRC anywhere, a wrong segment length or entry
//! count, or a missing file means the segment is scanned instead.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::record::{self, FLAG_TOMBSTONE, HEADER_BYTES};
use crate::segment::{SEGMENT_HEADER_BYTES, sync_dir};

const MAGIC: &[u8; 8] = b"CASKHNT\0";
/// The hint format version written by this build.
pub(crate) const HINT_FORMAT_VERSION: u32 = 1;
const HINT_HEADER_BYTES: usize = 32;
const ENTRY_HEADER_BYTES: usize = 36;

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

/// Encodes a hint for segment `id` of `segment_len` bytes.
pub(crate) fn encode<K: AsRef<[u8]>>(
    id: u32,
    segment_len: u64,
    entries: &[HintEntry<K>],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HINT_HEADER_BYTES + entries.len() * 56);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&HINT_FORMAT_VERSION.to_le_bytes());
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

/// Decodes a hint; `None` when it does not describe segment `id` of `segment_len`
/// bytes exactly and whole. Keys borrow from `bytes`.
pub(crate) fn decode(bytes: &[u8], id: u32, segment_len: u64) -> Option<Vec<HintEntry<&[u8]>>> {
    check(bytes, id, segment_len).ok()
}

/// Why a hint is not used: the byte offset in the hint file where it first fails, and
/// what failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HintFault {
    pub offset: u64,
    pub reason: String,
}

/// [`decode`], saying where and why a hint fails (for `verify`).
pub(crate) fn check(
    bytes: &[u8],
    id: u32,
    segment_len: u64,
) -> std::result::Result<Vec<HintEntry<&[u8]>>, HintFault> {
    let fault = |offset: usize, reason: String| HintFault {
        offset: offset as u64,
        reason,
    };
    if bytes.len() < HINT_HEADER_BYTES {
        return Err(fault(0, "file is shorter than a hint header".into()));
    }
    if &bytes[0..8] != MAGIC || u32_at(bytes, 28) != crc32fast::hash(&bytes[0..28]) {
        return Err(fault(0, "hint header fails its checksum".into()));
    }
    let version = u32_at(bytes, 8);
    if version != HINT_FORMAT_VERSION {
        return Err(fault(0, format!("unknown hint format version {version}")));
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
    let count = u32_at(bytes, 24) as usize;
    let mut entries = Vec::with_capacity(count.min(bytes.len() / ENTRY_HEADER_BYTES));
    let mut pos = HINT_HEADER_BYTES;
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
            || u64_at(rest, 8) >= record::SEQ_LIMIT
        {
            return Err(fault(
                pos,
                format!("impossible flags {flags:#04x}, reserved bytes, version or empty key"),
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
        if u64::from(entry.offset) < SEGMENT_HEADER_BYTES
            || record_end > segment_len
            || (entry.len as usize) < HEADER_BYTES + key_len
        {
            return Err(fault(
                pos,
                format!(
                    "entry points outside the segment (offset {}, length {})",
                    entry.offset, entry.len
                ),
            ));
        }
        entries.push(entry);
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

/// Byte offset of each entry of a hint that [`check`] accepted, in order.
pub(crate) fn entry_offsets<K: AsRef<[u8]>>(entries: &[HintEntry<K>]) -> Vec<u64> {
    let mut pos = HINT_HEADER_BYTES as u64;
    entries
        .iter()
        .map(|e| {
            let at = pos;
            pos += (ENTRY_HEADER_BYTES + e.key.as_ref().len()) as u64;
            at
        })
        .collect()
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
    let bytes = encode(id, segment_len, entries);
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

/// Reads the bytes of the hint of segment `id`, if there is one; decode them with
/// [`decode`].
pub(crate) fn read(dir: &Path, id: u32) -> Option<Vec<u8>> {
    std::fs::read(dir.join(file_name(id))).ok()
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

    #[test]
    fn a_hint_round_trips() {
        let bytes = encode(7, 142, &sample());
        let decoded = decode(&bytes, 7, 142).expect("whole hint");
        let owned: Vec<HintEntry> = decoded.into_iter().map(|e| e.to_owned_key()).collect();
        assert_eq!(owned, sample());
    }

    #[test]
    fn a_damaged_truncated_or_stale_hint_is_refused() {
        let bytes = encode(7, 142, &sample());
        assert_eq!(decode(&bytes, 8, 142), None, "other segment");
        assert_eq!(decode(&bytes, 7, 200), None, "segment grew or shrank");
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], 7, 142), None, "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert_eq!(decode(&bad, 7, 142), None, "flip at {i}");
        }
    }

    /// Found by the `record_decode` fuzz target: an entry whose reserved bytes are not
    /// zero (with a CRC that checks) was accepted, so the hint did not re-encode to its
    /// own bytes. It is refused like an unknown flag: the segment is scanned instead.
    #[test]
    fn an_entry_with_nonzero_reserved_bytes_is_refused() {
        let good = encode(7, 142, &sample());
        for at in 5..8 {
            let mut bytes = good.clone();
            let entry = HINT_HEADER_BYTES;
            bytes[entry + at] = 0x7e;
            let end = entry + ENTRY_HEADER_BYTES + 6;
            let crc = crc32fast::hash(&bytes[entry + 4..end]);
            bytes[entry..entry + 4].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(decode(&bytes, 7, 142), None, "reserved byte {at}");
        }
    }
}
