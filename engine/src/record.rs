//! The record format: a header, then key, meta and value. Two versions are read;
//! version 2 is written.
//!
//! Every version starts with the same 5 bytes, so a reader dispatches per record and a
//! segment may hold both (a store written by an older build keeps its records until
//! compaction rewrites them):
//!
//! ```text
//! offset size field
//!  0     4    crc32 (crc32fast, IEEE) over bytes 4..end of the record
//!  4     1    record format version
//! ```
//!
//! Version 2 (written): the rest of the header is a flags byte and LEB128 varints, so a
//! small record pays for the bytes its numbers need, not for their widest value.
//!
//! ```text
//!  5     1    flags: bit 0 tombstone, bit 1 commit, bit 2 expires; others zero
//!  6     ..   seq            varint, < 2^63
//!        ..   written_at_ms  varint
//!        ..   expires_at_ms  varint, > 0, only when the expires flag is set
//!        ..   key_len        varint, 1 ..= KEY_BYTES_MAX
//!        ..   meta_len       varint, 0 ..= META_BYTES_MAX
//!        ..   value_len      varint, 0 ..= VALUE_BYTES_MAX
//!        ..   key, meta, value
//! ```
//!
//! A varint is minimal (its last byte is not zero unless it is the only byte) and no
//! longer than its field's maximum needs; anything else is damage, so every record has
//! exactly one encoding.
//!
//! Version 1 (read only): a fixed 44-byte header.
//!
//! ```text
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
//! The byte layout is documented in `docs/format.md`; golden-file tests pin both.

use crate::error::{Error, Result};
use crate::{KEY_BYTES_MAX, META_BYTES_MAX, VALUE_BYTES_MAX};

/// The record format version written by this build.
pub(crate) const RECORD_FORMAT_VERSION: u8 = 2;
/// The first record format: a fixed 44-byte header. Read, never written.
pub(crate) const RECORD_FORMAT_V1: u8 = 1;
/// Bytes of a version 1 header.
pub(crate) const V1_HEADER_BYTES: usize = 44;
/// The fewest bytes a header of any version takes: version 2 with one-byte varints.
pub(crate) const HEADER_BYTES_MIN: usize = V2_FIXED_BYTES + 5;
/// The most bytes a header of any version takes: version 2 with the widest varints
/// (seq 9, written_at 10, expires_at 10, key and meta lengths 3, value length 5).
pub(crate) const HEADER_BYTES_MAX: usize = V2_FIXED_BYTES + 9 + 10 + 10 + 3 + 3 + 5;
/// Bytes before the varints of a version 2 header: crc, version, flags.
const V2_FIXED_BYTES: usize = 6;
/// Flag: the record deletes its key.
pub(crate) const FLAG_TOMBSTONE: u8 = 1 << 0;
/// Flag: the record ends a transaction; records before it (back to the previous
/// commit) become visible only together with it.
pub(crate) const FLAG_COMMIT: u8 = 1 << 1;
/// Flag (version 2): the header carries `expires_at_ms`.
pub(crate) const FLAG_EXPIRES: u8 = 1 << 2;
const V1_FLAGS_KNOWN: u8 = FLAG_TOMBSTONE | FLAG_COMMIT;
const V2_FLAGS_KNOWN: u8 = FLAG_TOMBSTONE | FLAG_COMMIT | FLAG_EXPIRES;
/// Versions are below 2^63: a store cannot write that many records, so a larger one
/// (in a record, a hint or a segment header) is damage, and the writer's `seq + 1`
/// can never overflow.
pub(crate) const SEQ_LIMIT: u64 = 1 << 63;

/// The decoded header of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The record format version the record was written in.
    pub version: u8,
    /// Bytes of the header: where the key starts.
    pub header_len: u8,
    /// The stored flags byte (in version 2 it includes [`FLAG_EXPIRES`]).
    pub flags: u8,
    pub seq: u64,
    pub written_at_ms: u64,
    /// 0 = never.
    pub expires_at_ms: u64,
    pub key_len: u32,
    pub meta_len: u32,
    pub value_len: u32,
}

impl Header {
    /// Total bytes of the record this header starts.
    pub fn record_len(&self) -> usize {
        self.body_start() + self.key_len as usize + self.meta_len as usize + self.value_len as usize
    }

    fn body_start(&self) -> usize {
        usize::from(self.header_len)
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
        let start = self.body_start();
        start..start + self.key_len as usize
    }

    /// Range of the meta section inside the record.
    pub fn meta_range(&self) -> std::ops::Range<usize> {
        let start = self.key_range().end;
        start..start + self.meta_len as usize
    }

    /// Range of the value inside the record.
    pub fn value_range(&self) -> std::ops::Range<usize> {
        let start = self.meta_range().end;
        start..start + self.value_len as usize
    }
}

/// What a record carries, borrowed, for encoding.
pub(crate) struct RecordRef<'a> {
    /// Tombstone and commit bits; the expires bit follows `expires_at_ms`.
    pub flags: u8,
    pub seq: u64,
    pub written_at_ms: u64,
    /// 0 = never.
    pub expires_at_ms: u64,
    pub key: &'a [u8],
    pub meta: &'a [u8],
    pub value: &'a [u8],
}

/// Bytes of `v` as a LEB128 varint.
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The most bytes a record of these parts takes on disk, whatever its seq and times
/// (for sizing batches and segments before the seq is known).
pub(crate) fn encoded_len_max(key: usize, meta: usize, value: usize) -> usize {
    let lens = [key, meta, value].map(|n| varint_len(n as u64));
    V2_FIXED_BYTES + 9 + 10 + 10 + lens.iter().sum::<usize>() + key + meta + value
}

/// Appends one record in the current format to `out`. Lengths must already be checked
/// against the limits.
pub(crate) fn encode(rec: &RecordRef<'_>, out: &mut Vec<u8>) {
    assert!(rec.key.len() <= KEY_BYTES_MAX && !rec.key.is_empty());
    assert!(rec.meta.len() <= META_BYTES_MAX && rec.value.len() <= VALUE_BYTES_MAX);
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(RECORD_FORMAT_VERSION);
    let expires = rec.expires_at_ms != 0;
    let flags = (rec.flags & !FLAG_EXPIRES) | if expires { FLAG_EXPIRES } else { 0 };
    out.push(flags);
    put_varint(out, rec.seq);
    put_varint(out, rec.written_at_ms);
    if expires {
        put_varint(out, rec.expires_at_ms);
    }
    for len in [rec.key.len(), rec.meta.len(), rec.value.len()] {
        put_varint(out, len as u64);
    }
    out.extend_from_slice(rec.key);
    out.extend_from_slice(rec.meta);
    out.extend_from_slice(rec.value);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    debug_assert!(
        out.len() - start <= encoded_len_max(rec.key.len(), rec.meta.len(), rec.value.len())
    );
}

/// Appends one record in format version 1, as older builds wrote it: for tests and
/// the fuzz targets, which must show that such records are still read.
pub(crate) fn encode_v1(rec: &RecordRef<'_>, out: &mut Vec<u8>) {
    assert!(rec.key.len() <= KEY_BYTES_MAX && !rec.key.is_empty());
    assert!(rec.meta.len() <= META_BYTES_MAX && rec.value.len() <= VALUE_BYTES_MAX);
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(RECORD_FORMAT_V1);
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
}

/// Appends `record` (whose decoded header is `header`) to `out` as a committed
/// transaction of its own, in the current format: a current-format record is copied
/// with its `COMMIT` bit set, an older one is re-encoded with the same seq, times,
/// key, meta and value. Returns the copy's header.
pub(crate) fn append_committed(record: &[u8], header: &Header, out: &mut Vec<u8>) -> Header {
    let start = out.len();
    if header.version == RECORD_FORMAT_VERSION {
        out.extend_from_slice(&record[..header.record_len()]);
        out[start + 5] |= FLAG_COMMIT;
        let crc = crc32fast::hash(&out[start + 4..]);
        out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    } else {
        encode(
            &RecordRef {
                flags: header.flags | FLAG_COMMIT,
                seq: header.seq,
                written_at_ms: header.written_at_ms,
                expires_at_ms: header.expires_at_ms,
                key: &record[header.key_range()],
                meta: &record[header.meta_range()],
                value: &record[header.value_range()],
            },
            out,
        );
    }
    let body = header.record_len() - header.body_start();
    let copy = Header {
        version: RECORD_FORMAT_VERSION,
        // At most HEADER_BYTES_MAX: it is a version 2 header.
        header_len: (out.len() - start - body) as u8,
        flags: out[start + 5],
        ..*header
    };
    debug_assert_eq!(copy.record_len(), out.len() - start);
    copy
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

/// Parses the header at the start of `bytes` (any version) without checking the CRC.
/// Bytes that end before the header does are `Truncated`, never read past.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header, DecodeError> {
    let Some(&version) = bytes.get(4) else {
        return Err(DecodeError::Truncated);
    };
    let header = match version {
        RECORD_FORMAT_VERSION => decode_v2(bytes)?,
        RECORD_FORMAT_V1 => decode_v1(bytes)?,
        _ => {
            return Err(DecodeError::Invalid(format!(
                "unknown record format version {version}"
            )));
        }
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

fn decode_v1(bytes: &[u8]) -> Result<Header, DecodeError> {
    if bytes.len() < V1_HEADER_BYTES {
        return Err(DecodeError::Truncated);
    }
    let flags = bytes[5];
    if flags & !V1_FLAGS_KNOWN != 0 || bytes[6] != 0 || bytes[7] != 0 {
        return Err(DecodeError::Invalid(format!("unknown flags {flags:#04x}")));
    }
    Ok(Header {
        version: RECORD_FORMAT_V1,
        header_len: V1_HEADER_BYTES as u8,
        flags,
        seq: le_u64(bytes, 8),
        written_at_ms: le_u64(bytes, 16),
        expires_at_ms: le_u64(bytes, 24),
        key_len: le_u32(bytes, 32),
        meta_len: le_u32(bytes, 36),
        value_len: le_u32(bytes, 40),
    })
}

/// Reads the varints of a version 2 header.
struct Varints<'b> {
    bytes: &'b [u8],
    pos: usize,
}

impl Varints<'_> {
    /// One minimal LEB128 varint of at most `max`: `Truncated` when the bytes end
    /// inside it, `Invalid` as soon as its bytes rule out a minimal value ≤ `max`.
    #[inline]
    fn next(&mut self, what: &str, max: u64) -> Result<u64, DecodeError> {
        // A one-byte varint (the lengths of most records): the loop below would return
        // the same value after the same checks.
        if let Some(&b) = self.bytes.get(self.pos)
            && b < 0x80
            && u64::from(b) <= max
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        // Up to 8 bytes at once when 8 bytes are left (always inside a record: its key
        // follows). Inlined: a call with the loop's register saves cost as much.
        if let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let word = u64::from_le_bytes(w);
            // A byte without its top bit ends the varint.
            let ends = !word & 0x8080_8080_8080_8080;
            if ends != 0 {
                let n = ends.trailing_zeros() as usize / 8 + 1;
                let last = (word >> (8 * (n - 1))) as u8;
                let kept = if n == 8 {
                    word
                } else {
                    word & ((1u64 << (8 * n)) - 1)
                };
                let value = gather_7bit_groups(kept & 0x7f7f_7f7f_7f7f_7f7f);
                // What the loop accepts, it accepts exactly then: a minimal varint
                // (its last byte is not zero) of at most `max`. Being minimal, it is
                // at least 2^(7 (n - 1)), so no continuation was longer than `max`
                // needs; n ≤ 8 bytes never overflow. Anything else goes to the loop,
                // which says what is wrong.
                if (n == 1 || last != 0) && value <= max {
                    self.pos += n;
                    return Ok(value);
                }
            }
        }
        self.next_bytewise(what, max)
    }

    /// Any varint, byte by byte; the rules' reference.
    #[inline(never)]
    fn next_bytewise(&mut self, what: &str, max: u64) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(DecodeError::Truncated);
            };
            self.pos += 1;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::Invalid(format!("{what} overflows 64 bits")));
            }
            value |= bits << shift;
            if value > max {
                return Err(DecodeError::Invalid(format!(
                    "impossible {what} (above {max})"
                )));
            }
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err(DecodeError::Invalid(format!(
                        "{what} is not minimally encoded"
                    )));
                }
                return Ok(value);
            }
            // A minimal continuation has a nonzero byte after it, so the value would
            // reach 2^(shift + 7): past the maximum, or past 64 bits.
            if shift + 7 >= 64 || 1u64 << (shift + 7) > max {
                return Err(DecodeError::Invalid(format!(
                    "impossible {what} (varint longer than {max} needs)"
                )));
            }
        }
        Err(DecodeError::Invalid(format!("{what} overflows 64 bits")))
    }
}

/// The low 7 bits of each byte of `x` (whose top bits are zero), byte 0 lowest, packed
/// next to each other: the value of a little-endian LEB128 varint of up to 8 bytes.
fn gather_7bit_groups(x: u64) -> u64 {
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4)
}

fn decode_v2(bytes: &[u8]) -> Result<Header, DecodeError> {
    let Some(&flags) = bytes.get(5) else {
        return Err(DecodeError::Truncated);
    };
    if flags & !V2_FLAGS_KNOWN != 0 {
        return Err(DecodeError::Invalid(format!("unknown flags {flags:#04x}")));
    }
    let mut v = Varints {
        bytes,
        pos: V2_FIXED_BYTES,
    };
    let seq = v.next("version", SEQ_LIMIT - 1)?;
    let written_at_ms = v.next("written_at_ms", u64::MAX)?;
    let expires_at_ms = if flags & FLAG_EXPIRES != 0 {
        let t = v.next("expires_at_ms", u64::MAX)?;
        if t == 0 {
            return Err(DecodeError::Invalid(
                "expires flag set with expires_at_ms 0".into(),
            ));
        }
        t
    } else {
        0
    };
    let key_len = v.next("key length", KEY_BYTES_MAX as u64)?;
    let meta_len = v.next("meta length", META_BYTES_MAX as u64)?;
    let value_len = v.next("value length", VALUE_BYTES_MAX as u64)?;
    Ok(Header {
        version: RECORD_FORMAT_VERSION,
        // At most HEADER_BYTES_MAX (46): each varint stops at its field's width.
        header_len: v.pos as u8,
        flags,
        seq,
        written_at_ms,
        expires_at_ms,
        // Each at most its maximum, checked above, so they fit.
        key_len: key_len as u32,
        meta_len: meta_len as u32,
        value_len: value_len as u32,
    })
}

/// Decodes and CRC-checks the record at the start of `bytes`.
pub(crate) fn decode(bytes: &[u8]) -> Result<Header, DecodeError> {
    let header = decode_header(bytes)?;
    let len = header.record_len();
    if bytes.len() < len {
        return Err(DecodeError::Truncated);
    }
    let stored = le_u32(bytes, 0);
    let mut crc = CRC.clone();
    crc.update(&bytes[4..len]);
    let actual = crc.finalize();
    if stored != actual {
        return Err(DecodeError::Invalid(format!(
            "crc mismatch: stored {stored:#010x}, computed {actual:#010x}"
        )));
    }
    Ok(header)
}

/// A fresh CRC32 state with the CPU's fastest implementation already chosen:
/// `crc32fast::hash` detects the CPU's features on every call, a fifth of the CRC's
/// instructions for a record of 100-byte value (every get checks one).
static CRC: std::sync::LazyLock<crc32fast::Hasher> =
    std::sync::LazyLock::new(crc32fast::Hasher::new);

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

    fn sample_ref(expires_at_ms: u64) -> RecordRef<'static> {
        RecordRef {
            flags: FLAG_COMMIT,
            seq: 7,
            written_at_ms: 1_764_148_483_000,
            expires_at_ms,
            key: b"user/alice",
            meta: b"m",
            value: b"{\"a\":1}",
        }
    }

    /// The same record in both versions, with and without expiry.
    fn samples() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for expires in [0, 1_764_152_084_000] {
            let mut v2 = Vec::new();
            encode(&sample_ref(expires), &mut v2);
            let mut v1 = Vec::new();
            encode_v1(&sample_ref(expires), &mut v1);
            out.push(v2);
            out.push(v1);
        }
        out
    }

    /// A record with its varints replaced by `varints` (after crc, version, flags),
    /// key "k", and a CRC that checks.
    fn v2_raw(flags: u8, varints: &[u8], body: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 0, 0, RECORD_FORMAT_VERSION, flags];
        out.extend_from_slice(varints);
        out.extend_from_slice(body);
        let crc = crc32fast::hash(&out[4..]);
        out[..4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded_in_either_version() {
        for (buf, expires) in samples()
            .iter()
            .zip([0, 0, 1_764_152_084_000, 1_764_152_084_000])
        {
            let h = decode(buf).expect("valid record");
            assert_eq!(h.seq, 7);
            assert_eq!(h.written_at_ms, 1_764_148_483_000);
            assert_eq!(h.expires_at_ms, expires);
            assert!(h.is_commit() && !h.is_tombstone());
            assert_eq!(&buf[h.key_range()], b"user/alice");
            assert_eq!(&buf[h.meta_range()], b"m");
            assert_eq!(&buf[h.value_range()], b"{\"a\":1}");
            assert_eq!(h.record_len(), buf.len());
        }
    }

    #[test]
    fn a_version_2_header_of_the_benchmark_record_is_18_bytes() {
        // 16-byte key, 100-byte value, no meta, no expiry, a seq near a million and
        // today's clock: the record the disk target (issue 6) is measured on.
        let mut buf = Vec::new();
        encode(
            &RecordRef {
                flags: FLAG_COMMIT,
                seq: 999_999,
                written_at_ms: 1_764_148_483_000,
                expires_at_ms: 0,
                key: &[7; 16],
                meta: b"",
                value: &[9; 100],
            },
            &mut buf,
        );
        let h = decode(&buf).expect("valid record");
        assert_eq!(h.header_len, 18);
        assert_eq!(buf.len(), 18 + 16 + 100);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        for buf in samples() {
            for i in 0..buf.len() {
                let mut bad = buf.clone();
                bad[i] ^= 0x40;
                assert!(decode(&bad).is_err(), "flip at {i} went unnoticed");
            }
        }
    }

    #[test]
    fn every_cut_is_truncated_not_invalid() {
        for buf in samples() {
            for cut in 0..buf.len() {
                assert_eq!(
                    decode(&buf[..cut]),
                    Err(DecodeError::Truncated),
                    "cut {cut} of a version {} record",
                    buf[4]
                );
            }
        }
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            1 << 35,
            SEQ_LIMIT - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut r = Varints {
                bytes: &out,
                pos: 0,
            };
            assert_eq!(r.next("x", u64::MAX), Ok(v));
            assert_eq!(r.pos, out.len());
        }
    }

    /// The one-byte and word-at-a-time paths of `Varints::next` agree with the
    /// byte-by-byte loop on every input: the same value and length, or the same error
    /// (reason included). Byte strings mix ends, continuations, zero and non-zero
    /// groups, with and without 8 bytes left, against every field's maximum.
    #[test]
    fn fast_varint_paths_agree_with_the_bytewise_loop() {
        const BYTES: [u8; 8] = [0x00, 0x01, 0x05, 0x7f, 0x80, 0x81, 0xc3, 0xff];
        let maxes = [
            0,
            1,
            127,
            128,
            KEY_BYTES_MAX as u64,
            VALUE_BYTES_MAX as u64,
            SEQ_LIMIT - 1,
            u64::MAX,
        ];
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut fast_paths = 0;
        for _ in 0..200_000 {
            let r = next();
            let len = (r % 13) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| match (next() >> (i % 5)) % 4 {
                    0 => BYTES[(next() % 8) as usize],
                    1 => 0x80 | (next() as u8),
                    _ => next() as u8,
                })
                .collect();
            let max = maxes[((r >> 8) % maxes.len() as u64) as usize];
            let mut a = Varints {
                bytes: &bytes,
                pos: 0,
            };
            let mut b = Varints {
                bytes: &bytes,
                pos: 0,
            };
            let got = a.next("x", max);
            let want = b.next_bytewise("x", max);
            assert_eq!(got, want, "{bytes:02x?} max {max}");
            if got.is_ok() {
                assert_eq!(a.pos, b.pos, "{bytes:02x?} max {max}");
                fast_paths += usize::from(len >= 8 && a.pos > 1);
            }
        }
        assert!(fast_paths > 1000, "the word path ran {fast_paths} times");
    }

    #[test]
    fn widest_fields_fit_the_maximum_header() {
        let key = vec![1; KEY_BYTES_MAX];
        let meta = vec![2; META_BYTES_MAX];
        let mut buf = Vec::new();
        encode(
            &RecordRef {
                flags: 0,
                seq: SEQ_LIMIT - 1,
                written_at_ms: u64::MAX,
                expires_at_ms: u64::MAX,
                key: &key,
                meta: &meta,
                value: b"",
            },
            &mut buf,
        );
        let h = decode(&buf).expect("valid record");
        // The value length here takes one byte, not five.
        assert_eq!(usize::from(h.header_len), HEADER_BYTES_MAX - 4);
        assert_eq!(h.expires_at_ms, u64::MAX);
        assert_eq!(h.key_len as usize, KEY_BYTES_MAX);
    }

    #[test]
    fn non_minimal_overlong_and_out_of_range_varints_are_damage() {
        let invalid = |flags: u8, varints: &[u8], body: &[u8]| {
            let rec = v2_raw(flags, varints, body);
            assert!(
                matches!(decode(&rec), Err(DecodeError::Invalid(_))),
                "{varints:02x?} decoded as {:?}",
                decode(&rec)
            );
        };
        // seq written_at key meta value, body "k"
        let ok = v2_raw(0, &[5, 9, 1, 0, 0], b"k");
        assert_eq!(decode(&ok).map(|h| (h.seq, h.written_at_ms)), Ok((5, 9)));
        invalid(0, &[0x85, 0x00, 9, 1, 0, 0], b"k"); // seq 5 in two bytes
        invalid(0, &[5, 0x89, 0x80, 0x00, 1, 0, 0], b"k"); // written_at in three bytes
        invalid(0, &[5, 9, 0x81, 0x00, 0, 0], b"k"); // key length 1 in two bytes
        invalid(0, &[5, 9, 0, 0, 0], b""); // empty key
        invalid(0, &[5, 9, 0x81, 0x80, 0x04, 0, 0], b"k"); // key length 65537
        invalid(0, &[5, 9, 0x80, 0x80, 0x80, 0x01, 0, 0], b"k"); // key length in 4 bytes
        invalid(0, &[5, 9, 1, 0, 0x81, 0x80, 0x80, 0x80, 0x02], b"k"); // value 512 MiB + 1
        invalid(
            0,
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            b"",
        ); // seq 2^63
        invalid(
            0,
            &[
                5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ],
            b"",
        ); // 2^64+
        invalid(
            0,
            &[
                5, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
            ],
            b"",
        ); // 11 bytes
        invalid(FLAG_EXPIRES, &[5, 9, 0, 1, 0, 0], b"k"); // expires flag with 0
        invalid(1 << 3, &[5, 9, 1, 0, 0], b"k"); // unknown flag
        invalid(0x80, &[5, 9, 1, 0, 0], b"k"); // unknown flag
        let expiring = v2_raw(FLAG_EXPIRES, &[5, 9, 20, 1, 0, 0], b"k");
        assert_eq!(decode(&expiring).map(|h| h.expires_at()), Ok(Some(20)));
    }

    proptest::proptest! {
        /// A version 2 record built field by field (any flags byte, any numbers, near
        /// and past every limit; the body sized to the lengths, the CRC made to check)
        /// decodes exactly when its fields are within the format's rules, to those
        /// fields, and its bytes are the one encoding of what it holds: re-encoding
        /// gives them back. Any field written non-minimally (continuation bytes padded
        /// up to a final `0x00`) is damage, whatever the fields.
        #[test]
        fn a_version_2_header_decodes_iff_well_formed_and_has_exactly_one_encoding(
            flags in proptest::prop_oneof![3 => 0..8u8, 1 => proptest::prelude::any::<u8>()],
            seq in proptest::prop_oneof![
                3 => 0..1u64 << 21,
                1 => SEQ_LIMIT - 2..SEQ_LIMIT + 2,
                1 => proptest::prelude::any::<u64>(),
            ],
            written_at_ms in proptest::prop_oneof![
                1_764_000_000_000..1_800_000_000_000u64,
                proptest::prelude::any::<u64>(),
            ],
            expires_at_ms in proptest::prop_oneof![
                1 => 0..2u64,
                3 => proptest::prelude::any::<u64>(),
            ],
            key_len in proptest::prop_oneof![
                4 => 0..300u64,
                1 => KEY_BYTES_MAX as u64 - 1..KEY_BYTES_MAX as u64 + 2,
            ],
            meta_len in proptest::prop_oneof![
                4 => 0..300u64,
                1 => META_BYTES_MAX as u64 - 1..META_BYTES_MAX as u64 + 2,
            ],
            value_len in proptest::prop_oneof![
                4 => 0..3_000u64,
                1 => VALUE_BYTES_MAX as u64..VALUE_BYTES_MAX as u64 + 2,
            ],
            padding in 0usize..3,
        ) {
            let expires = flags & FLAG_EXPIRES != 0;
            let mut fields = vec![seq, written_at_ms];
            if expires {
                fields.push(expires_at_ms);
            }
            fields.extend([key_len, meta_len, value_len]);
            let body_len = key_len + meta_len + value_len;
            // A body of a length past the limits is never read: the header fails first.
            let body: Vec<u8> = (0..body_len.min(200_000)).map(|i| i as u8).collect();
            let build = |padded: Option<usize>| {
                let mut varints = Vec::new();
                for (i, &v) in fields.iter().enumerate() {
                    put_varint(&mut varints, v);
                    if padded == Some(i) {
                        let last = varints.len() - 1;
                        varints[last] |= 0x80;
                        varints.extend(std::iter::repeat_n(0x80, padding));
                        varints.push(0x00);
                    }
                }
                v2_raw(flags, &varints, &body)
            };
            let well_formed = flags & !V2_FLAGS_KNOWN == 0
                && seq < SEQ_LIMIT
                && (!expires || expires_at_ms != 0)
                && (1..=KEY_BYTES_MAX as u64).contains(&key_len)
                && meta_len <= META_BYTES_MAX as u64
                && value_len <= VALUE_BYTES_MAX as u64;
            let rec = build(None);
            match decode(&rec) {
                Ok(h) => {
                    proptest::prop_assert!(well_formed, "{fields:?} flags {flags:#x} decoded");
                    proptest::prop_assert_eq!(
                        (h.flags, h.seq, h.written_at_ms, h.expires_at_ms),
                        (flags, seq, written_at_ms, if expires { expires_at_ms } else { 0 })
                    );
                    proptest::prop_assert_eq!(
                        (u64::from(h.key_len), u64::from(h.meta_len), u64::from(h.value_len)),
                        (key_len, meta_len, value_len)
                    );
                    proptest::prop_assert_eq!(h.record_len(), rec.len());
                    proptest::prop_assert!(usize::from(h.header_len) <= HEADER_BYTES_MAX);
                    let mut again = Vec::new();
                    encode(
                        &RecordRef {
                            flags: h.flags,
                            seq: h.seq,
                            written_at_ms: h.written_at_ms,
                            expires_at_ms: h.expires_at_ms,
                            key: &rec[h.key_range()],
                            meta: &rec[h.meta_range()],
                            value: &rec[h.value_range()],
                        },
                        &mut again,
                    );
                    proptest::prop_assert_eq!(&again[..], &rec[..]);
                }
                // A body past 200 kB (a value at its limit) is left out: the header
                // decodes and the record is cut short.
                Err(DecodeError::Truncated) if well_formed && body.len() as u64 != body_len => {
                    let h = decode_header(&rec);
                    proptest::prop_assert_eq!(h.map(|h| h.value_len as usize), Ok(VALUE_BYTES_MAX));
                }
                Err(e) => {
                    proptest::prop_assert!(!well_formed, "{fields:?} flags {flags:#x}: {e:?}");
                    proptest::prop_assert!(matches!(e, DecodeError::Invalid(_)), "{e:?}");
                }
            }
            for field in 0..fields.len() {
                let padded = build(Some(field));
                let got = decode(&padded);
                proptest::prop_assert!(
                    matches!(got, Err(DecodeError::Invalid(_))),
                    "field {field} of {fields:?} padded by {padding}: {got:?}"
                );
            }
        }

        /// Any well-formed record decodes to what was encoded, and every cut of it is
        /// truncated, never read past.
        #[test]
        fn any_record_round_trips_and_every_cut_is_truncated(
            tombstone in proptest::prelude::any::<bool>(),
            seq in 0..SEQ_LIMIT,
            written_at_ms in proptest::prelude::any::<u64>(),
            expires_at_ms in proptest::prelude::any::<u64>(),
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300),
            value_len in 0usize..20_000,
        ) {
            let value = vec![7u8; value_len];
            let mut buf = Vec::new();
            encode(
                &RecordRef {
                    flags: if tombstone { FLAG_TOMBSTONE } else { 0 },
                    seq,
                    written_at_ms,
                    expires_at_ms,
                    key: &key,
                    meta: b"",
                    value: &value,
                },
                &mut buf,
            );
            let h = decode(&buf).expect("a well-formed record");
            proptest::prop_assert_eq!(
                (h.is_tombstone(), h.seq, h.written_at_ms, h.expires_at_ms),
                (tombstone, seq, written_at_ms, expires_at_ms)
            );
            proptest::prop_assert_eq!(&buf[h.key_range()], &key[..]);
            proptest::prop_assert_eq!(h.record_len(), buf.len());
            proptest::prop_assert!(usize::from(h.header_len) <= HEADER_BYTES_MAX);
            for cut in 0..buf.len().min(usize::from(h.header_len) + 2) {
                proptest::prop_assert_eq!(decode(&buf[..cut]), Err(DecodeError::Truncated));
            }
        }
    }

    #[test]
    fn a_version_1_record_is_copied_as_a_committed_version_2_record() {
        for (buf, want_version) in samples().into_iter().zip([2, 1, 2, 1]) {
            let h = decode(&buf).expect("valid record");
            assert_eq!(h.version, want_version);
            let mut plain = buf.clone();
            plain[5] &= !FLAG_COMMIT;
            let crc = crc32fast::hash(&plain[4..]);
            plain[..4].copy_from_slice(&crc.to_le_bytes());
            let h = decode(&plain).expect("valid record");
            let mut out = vec![0xaa; 3];
            let copy = append_committed(&plain, &h, &mut out);
            let again = decode(&out[3..]).expect("the copy checks");
            assert_eq!(again, copy);
            assert_eq!(copy.version, RECORD_FORMAT_VERSION);
            assert!(copy.is_commit());
            assert_eq!(
                (copy.seq, copy.written_at_ms, copy.expires_at_ms),
                (h.seq, h.written_at_ms, h.expires_at_ms)
            );
            assert_eq!(&out[3..][copy.key_range()], &plain[h.key_range()]);
            assert_eq!(&out[3..][copy.meta_range()], &plain[h.meta_range()]);
            assert_eq!(&out[3..][copy.value_range()], &plain[h.value_range()]);
            assert_eq!(copy.record_len(), out.len() - 3);
        }
    }
}
