//! Arbitrary bytes through the engine's record, hint and segment-header decoders:
//! never a panic, and whatever decodes re-encodes to the same bytes.
//!
//! The first byte picks a mode. Random bytes almost never carry a right CRC, so in
//! "fix" mode the target writes the CRCs the bytes would need before decoding: the
//! checks behind the CRC (lengths, flags, offsets) then get fuzzed too.
#![no_main]

use caskade_engine::fuzzing::{
    HintEntry, decode_hint, decode_record, decode_record_header, decode_segment_header,
    encode_hint, encode_record, encode_record_v1, encode_segment_header,
};
use libfuzzer_sys::fuzz_target;

/// The smallest record header (format version 2, every varint one byte).
const RECORD_HEADER_MIN: usize = 11;
const HINT_HEADER: usize = 32;
/// Entry header of hint format version 1.
const HINT_ENTRY_HEADER: usize = 36;
/// Index shards, and so runs, of hint format versions 2 and 3.
const HINT_RUNS: usize = 16;
/// Run table of hint format versions 2 and 3: entries, bytes and CRC per run, then its
/// CRC.
const HINT_RUN_TABLE: usize = HINT_RUNS * 12 + 4;

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Writes the record CRC the header's lengths call for, if the header decodes (either
/// format version) and the bytes are long enough.
fn fix_record_crc(bytes: &mut [u8]) {
    if let Ok(len) = decode_record_header(bytes)
        && len <= bytes.len()
    {
        let crc = crc32fast::hash(&bytes[4..len]);
        bytes[0..4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Writes the hint header CRC and every other CRC that the bytes leave room for: each
/// entry's in format version 1; each run's and the run table's in versions 2 and 3.
fn fix_hint_crcs(bytes: &mut [u8]) {
    if bytes.len() < HINT_HEADER {
        return;
    }
    let crc = crc32fast::hash(&bytes[0..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    if matches!(le_u32(bytes, 8), 2 | 3) {
        fix_run_crcs(bytes);
        return;
    }
    let mut pos = HINT_HEADER;
    while bytes.len() - pos >= HINT_ENTRY_HEADER {
        let key_len = le_u32(bytes, pos + 32) as usize;
        let Some(end) = (pos + HINT_ENTRY_HEADER).checked_add(key_len) else {
            return;
        };
        if end > bytes.len() {
            return;
        }
        let crc = crc32fast::hash(&bytes[pos + 4..end]);
        bytes[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

/// Format versions 2 and 3: the CRC of every run the table's lengths place inside the bytes,
/// then the table's own CRC.
fn fix_run_crcs(bytes: &mut [u8]) {
    let table_end = HINT_HEADER + HINT_RUN_TABLE;
    if bytes.len() < table_end {
        return;
    }
    let mut at = table_end;
    for run in 0..HINT_RUNS {
        let row = HINT_HEADER + run * 12;
        let len = le_u32(bytes, row + 4) as usize;
        let Some(end) = at.checked_add(len).filter(|&end| end <= bytes.len()) else {
            break;
        };
        let crc = crc32fast::hash(&bytes[at..end]);
        bytes[row + 8..row + 12].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
    let crc = crc32fast::hash(&bytes[HINT_HEADER..table_end - 4]);
    bytes[table_end - 4..table_end].copy_from_slice(&crc.to_le_bytes());
}

fn check_record(bytes: &[u8]) {
    let header = decode_record_header(bytes);
    match decode_record(bytes) {
        Ok(rec) => {
            assert_eq!(header, Ok(rec.len), "a whole record has a good header");
            assert!(rec.len <= bytes.len());
            assert!(!rec.key.is_empty());
            let mut again = Vec::new();
            let encode = if rec.version == 1 {
                encode_record_v1
            } else {
                encode_record
            };
            encode(
                rec.flags,
                rec.seq,
                rec.written_at_ms,
                rec.expires_at_ms,
                rec.key,
                rec.meta,
                rec.value,
                &mut again,
            );
            assert_eq!(
                &again[..],
                &bytes[..rec.len],
                "a record re-encodes to its bytes"
            );
        }
        Err(_) => {
            if let Ok(len) = header {
                assert!(len > RECORD_HEADER_MIN);
            }
        }
    }
}

fn check_hint(bytes: &[u8]) {
    if bytes.len() < HINT_HEADER {
        assert!(decode_hint(bytes, 0, 0).is_none());
        return;
    }
    // Ask about the segment the hint names, so the header check can pass.
    let id = le_u32(bytes, 12);
    let segment_len = le_u64(bytes, 16);
    let Some(entries) = decode_hint(bytes, id, segment_len) else {
        return;
    };
    for e in &entries {
        assert!(!e.key.is_empty());
        assert!(u64::from(e.offset) + u64::from(e.len) <= segment_len);
    }
    let owned: Vec<HintEntry> = entries
        .iter()
        .map(|e| HintEntry {
            tombstone: e.tombstone,
            seq: e.seq,
            expires_at_ms: e.expires_at_ms,
            offset: e.offset,
            len: e.len,
            key: e.key.to_vec(),
        })
        .collect();
    let encoded = encode_hint(id, segment_len, &owned).expect("what decodes encodes");
    if le_u32(bytes, 8) == 3 {
        // The format this build writes: the same bytes again.
        assert_eq!(encoded, bytes, "a hint re-encodes to its bytes");
    } else {
        // An older format is rewritten in the current one with the same entries
        // (grouped by shard there, so compare them in one order).
        let again = decode_hint(&encoded, id, segment_len).expect("a fresh hint decodes");
        let order = |e: &HintEntry<&[u8]>| (e.offset, e.seq);
        let (mut a, mut b) = (entries.clone(), again);
        a.sort_by_key(order);
        b.sort_by_key(order);
        assert_eq!(
            a, b,
            "a version 1 or 2 hint rewritten in version 3 keeps its entries"
        );
    }
}

fn check_segment_header(bytes: &[u8]) {
    if bytes.len() < 16 {
        return;
    }
    let id = le_u32(bytes, 12);
    if let Ok((base_seq, compacted)) = decode_segment_header(bytes, id)
        // Format 1 (older builds) is read; only the format this build writes
        // re-encodes to the same bytes.
        && le_u32(bytes, 8) == 2
    {
        assert_eq!(
            encode_segment_header(id, base_seq, compacted)[..],
            bytes[..32],
            "a segment header re-encodes to its bytes"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    match mode % 4 {
        0 => {
            check_record(&bytes);
            check_hint(&bytes);
            check_segment_header(&bytes);
        }
        1 => {
            fix_record_crc(&mut bytes);
            check_record(&bytes);
        }
        2 => {
            fix_hint_crcs(&mut bytes);
            check_hint(&bytes);
        }
        _ => {
            if bytes.len() >= 32 {
                let crc = crc32fast::hash(&bytes[0..28]);
                bytes[28..32].copy_from_slice(&crc.to_le_bytes());
            }
            check_segment_header(&bytes);
        }
    }
});
