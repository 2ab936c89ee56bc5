//! The record format: a fixed little-endian header, then key, meta and value.
//!
//! ```text
//! offset size field
//!  0     4    crc32 (crc32fast, IEEE) over bytes 4..end of the record
//!  4     1    format version (RECORD_FORMAT_VERSION)
//!  5     1    flags: bit 0 tombstone, bit 1 commit (last record of a transaction)
//!  6     2    reserved, zero
//!  8     8    seq: the record's version, store-wide, only grows
//! 16     8    written_at_ms
//! 24     8    expires_at_ms, 0 = never
//! 32     4    key_len
//! 36     4    meta_len
//! 40     4    value_len
//! 44     ..   key, meta, value
//! ```
//! The byte layout is documented in `docs/format.md`; a golden-file test pins it.

use crate::error::{Error, Result};
use crate::{KEY_BYTES_MAX, META_BYTES_MAX, VALUE_BYTES_MAX};

/// Bytes of the fixed record header.
pub(crate) const HEADER_BYTES: usize = 44;
/// The record format version written by this build.
pub(crate) const RECORD_FORMAT_VERSION: u8 = 1;
/// Flag: the record deletes its key.
pub(crate) const FLAG_TOMBSTONE: u8 = 1 << 0;
/// Flag: the record ends a transaction; records before it (back to the previous
/// commit) become visible only together with it.
pub(crate) const FLAG_COMMIT: u8 = 1 << 1;
const FLAGS_KNOWN: u8 = FLAG_TOMBSTONE | FLAG_COMMIT;
/// Versions are below 2^63: a store cannot write that many records, so a larger one
/// (in a record, a hint or a segment header) is damage, and the writer's `seq + 1`
/// can never overflow.
pub(crate) const SEQ_LIMIT: u64 = 1 << 63;

/// The decoded fixed header of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub flags: u8,
    pub seq: u64,
    pub written_at_ms: u64,
    pub expires_at_ms: u64,
    pub key_len: u32,
    pub meta_len: u32,
    pub value_len: u32,
}

impl Header {
    /// Total bytes of the record this header starts.
    pub fn record_len(&self) -> usize {
        HEADER_BYTES + self.key_len as usize + self.meta_len as usize + self.value_len as usize
    }

    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }

    pub fn is_commit(&self) -> bool {
        self.flags & FLAG_COMMIT != 0
    }

    /// `None` for "never expires".
    pub fn expires_at(&self) -> Option<u64> {
        (self.expires_at_ms != 0).then_some(self.expires_at_ms)
    }

    /// Range of the key inside the record.
    pub fn key_range(&self) -> std::ops::Range<usize> {
        HEADER_BYTES..HEADER_BYTES + self.key_len as usize
    }

    /// Range of the meta section inside the record.
    pub fn meta_range(&self) -> std::ops::Range<usize> {
        let start = HEADER_BYTES + self.key_len as usize;
        start..start + self.meta_len as usize
    }

    /// Range of the value inside the record.
    pub fn value_range(&self) -> std::ops::Range<usize> {
        let start = HEADER_BYTES + self.key_len as usize + self.meta_len as usize;
        start..start + self.value_len as usize
    }
}

/// What a record carries, borrowed, for encoding.
pub(crate) struct RecordRef<'a> {
    pub flags: u8,
    pub seq: u64,
    pub written_at_ms: u64,
    pub expires_at_ms: u64,
    pub key: &'a [u8],
    pub meta: &'a [u8],
    pub value: &'a [u8],
}

/// Bytes the record of these parts takes on disk.
pub(crate) fn encoded_len(key: usize, meta: usize, value: usize) -> usize {
    HEADER_BYTES + key + meta + value
}

/// Appends one record to `out`. Lengths must already be checked against the limits.
pub(crate) fn encode(rec: &RecordRef<'_>, out: &mut Vec<u8>) {
    assert!(rec.key.len() <= KEY_BYTES_MAX && !rec.key.is_empty());
    assert!(rec.meta.len() <= META_BYTES_MAX && rec.value.len() <= VALUE_BYTES_MAX);
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(RECORD_FORMAT_VERSION);
    out.push(rec.flags);
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&rec.seq.to_le_bytes());
    out.extend_from_slice(&rec.written_at_ms.to_le_bytes());
    out.extend_from_slice(&rec.expires_at_ms.to_le_bytes());
    for len in [rec.key.len(), rec.meta.len(), rec.value.len()] {
        out.extend_from_slice(&(len as u32).to_le_bytes());
    }
    out.extend_from_slice(rec.key);
    out.extend_from_slice(rec.meta);
    out.extend_from_slice(rec.value);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(
        out.len() - start,
        encoded_len(rec.key.len(), rec.meta.len(), rec.value.len())
    );
}

/// Why bytes failed to decode as a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Fewer bytes than the header or than the lengths announce: a torn write at the end.
    Truncated,
    /// The bytes are there but do not check: bad CRC, version, flags or lengths.
    Invalid(String),
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parses the fixed header at the start of `bytes` without checking the CRC.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header, DecodeError> {
    if bytes.len() < HEADER_BYTES {
        return Err(DecodeError::Truncated);
    }
    if bytes[4] != RECORD_FORMAT_VERSION {
        return Err(DecodeError::Invalid(format!(
            "unknown record format version {}",
            bytes[4]
        )));
    }
    let flags = bytes[5];
    if flags & !FLAGS_KNOWN != 0 || bytes[6] != 0 || bytes[7] != 0 {
        return Err(DecodeError::Invalid(format!("unknown flags {flags:#04x}")));
    }
    let header = Header {
        flags,
        seq: le_u64(bytes, 8),
        written_at_ms: le_u64(bytes, 16),
        expires_at_ms: le_u64(bytes, 24),
        key_len: le_u32(bytes, 32),
        meta_len: le_u32(bytes, 36),
        value_len: le_u32(bytes, 40),
    };
    if header.seq >= SEQ_LIMIT {
        return Err(DecodeError::Invalid(format!(
            "impossible version {}",
            header.seq
        )));
    }
    if header.key_len == 0
        || header.key_len as usize > KEY_BYTES_MAX
        || header.meta_len as usize > META_BYTES_MAX
        || header.value_len as usize > VALUE_BYTES_MAX
    {
        return Err(DecodeError::Invalid(format!(
            "impossible lengths key={} meta={} value={}",
            header.key_len, header.meta_len, header.value_len
        )));
    }
    Ok(header)
}

/// Decodes and CRC-checks the record at the start of `bytes`.
pub(crate) fn decode(bytes: &[u8]) -> Result<Header, DecodeError> {
    let header = decode_header(bytes)?;
    let len = header.record_len();
    if bytes.len() < len {
        return Err(DecodeError::Truncated);
    }
    let stored = le_u32(bytes, 0);
    let actual = crc32fast::hash(&bytes[4..len]);
    if stored != actual {
        return Err(DecodeError::Invalid(format!(
            "crc mismatch: stored {stored:#010x}, computed {actual:#010x}"
        )));
    }
    Ok(header)
}

/// Turns a decode failure of a record the index points at into a typed error.
pub(crate) fn corrupt(file: std::path::PathBuf, offset: u64, err: DecodeError) -> Error {
    let reason = match err {
        DecodeError::Truncated => "record extends past the end of the file".to_owned(),
        DecodeError::Invalid(reason) => reason,
    };
    Error::Corrupt {
        file,
        offset,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(out: &mut Vec<u8>) {
        encode(
            &RecordRef {
                flags: FLAG_COMMIT,
                seq: 7,
                written_at_ms: 1_000,
                expires_at_ms: 0,
                key: b"user/alice",
                meta: b"m",
                value: b"{\"a\":1}",
            },
            out,
        );
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded() {
        let mut buf = Vec::new();
        sample(&mut buf);
        let h = decode(&buf).expect("valid record");
        assert_eq!(h.seq, 7);
        assert!(h.is_commit() && !h.is_tombstone());
        assert_eq!(&buf[h.key_range()], b"user/alice");
        assert_eq!(&buf[h.meta_range()], b"m");
        assert_eq!(&buf[h.value_range()], b"{\"a\":1}");
        assert_eq!(h.record_len(), buf.len());
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let mut buf = Vec::new();
        sample(&mut buf);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn every_cut_is_truncated_not_invalid() {
        let mut buf = Vec::new();
        sample(&mut buf);
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut]),
                Err(DecodeError::Truncated),
                "cut {cut}"
            );
        }
    }
}
