//! Arbitrary segment, hint and manifest files in a data folder: `Engine::open` never
//! panics, it returns a store or a typed error; a store it opens answers gets, lists,
//! a write and a reopen without a panic.
//!
//! Files are built from the input as well-formed records, hints and headers (so the
//! fuzzer gets past the CRCs) and then damaged on purpose: cut, flipped, extended or
//! replaced by raw bytes; hints may describe records that are not there. Segment headers
//! may say segment format 1 (an older build's), so the seal-at-open path of an upgraded
//! store is fuzzed too.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Arbitrary;
use caskade_engine::fuzzing::{
    HintEntry, encode_hint, encode_hint_v2, encode_record, encode_record_v1, encode_segment_header, file_names,
};
use caskade_engine::{Clock, CompactionOptions, Engine, Error, Options, SyncPolicy, WriteOptions};
use libfuzzer_sys::fuzz_target;

const NOW_MS: u64 = 1_000_000;

#[derive(Debug)]
struct FixedClock(AtomicU64);

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    files: Vec<File>,
    /// Keys to read once open (indexes into [`key`]).
    probes: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum File {
    Segment {
        id: u8,
        /// Near 0, or near `u64::MAX` to reach the ends of the version range.
        base_seq: Seq,
        compacted: bool,
        /// Segment format 1 in the header (an older build's): the newest such log
        /// segment is recovered, synced and sealed at open.
        format1: bool,
        records: Vec<Rec>,
        damage: Damage,
        hint: Option<Hint>,
    },
    /// Raw bytes under a name the engine looks at.
    Raw { name: Name, bytes: Vec<u8> },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Seq {
    Low(u16),
    High(u16),
}

impl Seq {
    fn get(self) -> u64 {
        match self {
            Seq::Low(n) => u64::from(n),
            Seq::High(n) => u64::MAX - u64::from(n),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Rec {
    flags: u8,
    seq: Seq,
    expires: Option<u16>,
    key: u8,
    meta: Vec<u8>,
    value: Vec<u8>,
    /// Written in record format version 1 (an older build's), so segments mix both.
    v1: bool,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    None,
    Cut(u16),
    Flip(u16, u8),
    Append(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Hint {
    /// The true hint of the segment as written (before damage).
    Exact,
    /// The true hint with one byte flipped.
    Flipped(u16, u8),
    /// Well-formed (right CRCs and segment length) but with made-up entries.
    Lying(Vec<(bool, Seq, Option<u16>, u16, u16, u8)>),
    /// The true hint in format version 2 (as an older build wrote it).
    ExactV2,
    /// Made-up entries in format version 2, which can also express duplicates and
    /// overlapping records (version 3 cannot).
    LyingV2(Vec<(bool, Seq, Option<u16>, u16, u16, u8)>),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Segment(u8),
    Hint(u8),
    SegmentTmp(u8),
    Manifest,
}

fn key(k: u8) -> Vec<u8> {
    format!("k/{:02}", k % 16).into_bytes()
}

fn damage(bytes: &mut Vec<u8>, damage: &Damage) {
    match damage {
        Damage::None => {}
        Damage::Cut(n) => bytes.truncate(bytes.len().saturating_sub(usize::from(*n))),
        Damage::Flip(at, mask) => {
            if !bytes.is_empty() {
                let at = usize::from(*at) % bytes.len();
                bytes[at] ^= mask | 1;
            }
        }
        Damage::Append(extra) => bytes.extend_from_slice(extra),
    }
}

fn write(dir: &std::path::Path, file: &File) {
    match file {
        File::Segment {
            id,
            base_seq,
            compacted,
            format1,
            records,
            damage: how,
            hint,
        } => {
            let id = u32::from(*id);
            let (seg_name, hint_name) = file_names(id);
            let mut bytes = encode_segment_header(id, base_seq.get(), *compacted).to_vec();
            if *format1 {
                // The layout is the same; only the version (and so the CRC) differs.
                bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
                let crc = crc32fast::hash(&bytes[..28]);
                bytes[28..32].copy_from_slice(&crc.to_le_bytes());
            }
            let mut entries = Vec::new();
            for r in records {
                let offset = bytes.len() as u32;
                let k = key(r.key);
                let expires = r.expires.map_or(0, |t| NOW_MS - 500 + u64::from(t));
                let encode = if r.v1 {
                    encode_record_v1
                } else {
                    encode_record
                };
                encode(
                    r.flags,
                    r.seq.get(),
                    NOW_MS,
                    expires,
                    &k,
                    &r.meta,
                    &r.value,
                    &mut bytes,
                );
                entries.push(HintEntry {
                    tombstone: r.flags & 1 != 0,
                    seq: r.seq.get(),
                    expires_at_ms: expires,
                    offset,
                    len: bytes.len() as u32 - offset,
                    key: k,
                });
            }
            let written_len = bytes.len() as u64;
            damage(&mut bytes, how);
            std::fs::write(dir.join(seg_name), &bytes).expect("write segment");
            let hint_bytes = match hint {
                None => return,
                // Entries the format cannot express (a seq past the limit): an empty hint,
                // refused at open like any damaged one.
                Some(Hint::Exact) => encode_hint(id, written_len, &entries).unwrap_or_default(),
                Some(Hint::Flipped(at, mask)) => {
                    let mut h = encode_hint(id, written_len, &entries).unwrap_or_default();
                    if !h.is_empty() {
                        let at = usize::from(*at) % h.len();
                        h[at] ^= mask | 1;
                    }
                    h
                }
                Some(Hint::ExactV2) => encode_hint_v2(id, written_len, &entries),
                Some(Hint::Lying(lies) | Hint::LyingV2(lies)) => {
                    let lies: Vec<HintEntry> = lies
                        .iter()
                        .map(|&(tombstone, seq, expires, offset, len, k)| HintEntry {
                            tombstone,
                            seq: seq.get(),
                            expires_at_ms: expires.map_or(0, |t| NOW_MS - 500 + u64::from(t)),
                            offset: u32::from(offset),
                            len: u32::from(len),
                            key: key(k),
                        })
                        .collect();
                    if matches!(hint, Some(Hint::LyingV2(_))) {
                        encode_hint_v2(id, bytes.len() as u64, &lies)
                    } else {
                        // Lies the format cannot express: an empty (refused) hint.
                        encode_hint(id, bytes.len() as u64, &lies).unwrap_or_default()
                    }
                }
            };
            std::fs::write(dir.join(hint_name), hint_bytes).expect("write hint");
        }
        File::Raw { name, bytes } => {
            let name = match name {
                Name::Segment(id) => file_names(u32::from(*id)).0,
                Name::Hint(id) => file_names(u32::from(*id)).1,
                Name::SegmentTmp(id) => format!("{}.tmp", file_names(u32::from(*id)).0),
                Name::Manifest => "COMPACTION".to_owned(),
            };
            std::fs::write(dir.join(name), bytes).expect("write raw file");
        }
    }
}

fn options() -> Options {
    Options {
        segment_bytes: 4096,
        sync: SyncPolicy::Never,
        clock: Arc::new(FixedClock(AtomicU64::new(NOW_MS))),
        compaction: CompactionOptions {
            enabled: false,
            ..CompactionOptions::default()
        },
        ..Options::default()
    }
}

/// A typed error is a fine answer to a damaged folder; anything that says the engine
/// itself failed is not.
fn acceptable(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. })
}

fuzz_target!(|input: Input| {
    if input.files.len() > 8 {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("recover-dir-")
        .tempdir_in(scratch())
        .expect("temp dir");
    for file in &input.files {
        write(dir.path(), file);
    }
    let engine = match Engine::open(dir.path(), options()) {
        Ok(engine) => engine,
        Err(e) => {
            assert!(acceptable(&e), "open failed with an untyped error: {e}");
            return;
        }
    };
    for &k in input.probes.iter().take(16) {
        if let Err(e) = engine.get(&key(k)) {
            assert!(acceptable(&e), "get failed: {e}");
        }
    }
    if let Err(e) = engine.list(b"", None, 100) {
        assert!(acceptable(&e), "list failed: {e}");
    }
    let _ = engine.stats();
    // A store that opened takes a write and opens again.
    let written = engine.put(&b"k/written"[..], &b"v"[..], WriteOptions::default());
    engine.close().expect("close");
    let again = Engine::open(dir.path(), options()).expect("a store that opened reopens");
    if written.is_ok() {
        let got = again.get(b"k/written").expect("get the written key");
        assert_eq!(
            got.map(|e| e.value.to_vec()),
            Some(b"v".to_vec()),
            "the write survives"
        );
    }
    again.close().expect("close");
});

/// tmpfs when there is one: the target makes a folder per input.
fn scratch() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
