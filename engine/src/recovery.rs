//! Opening a data folder: finish or undo what a crash interrupted, load every sealed
//! segment from its hint (or scan it, checking every CRC), scan the active segment and
//! cut its torn tail, and rebuild the index.
//!
//! Records are applied by version, not by file order: compaction copies old records
//! into new, higher-numbered files, so a key's newest record is the one with the
//! highest seq wherever it lives. Tombstones and expired records count as "newest" too,
//! so the value they hide never comes back.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use crate::compaction;
use crate::error::{Error, Result};
use crate::hint::{self, HintEntry};
use crate::index::{Index, Loader};
use crate::record::{self, DecodeError};
use crate::segment::{self, Kind, SEGMENT_HEADER_BYTES, Segment, SegmentHeader};

/// What recovery hands to the engine.
pub(crate) struct Recovered {
    pub index: Index,
    /// Sealed segments, mapped, by id.
    pub sealed: BTreeMap<u32, Arc<Segment>>,
    /// The active segment: id, header, write handle and length.
    pub active_id: u32,
    pub active_header: SegmentHeader,
    pub active_file: File,
    pub active_len: u64,
    /// The next version to hand out.
    pub next_seq: u64,
    /// The next segment id to hand out.
    pub next_segment_id: u32,
    /// Bytes cut off the newest segment's torn tail.
    pub truncated_bytes: u64,
    /// Sealed segments loaded from a hint file instead of a scan.
    pub hints_used: u64,
}

/// Ids of the segment files in `dir`, ascending; leftover temporary files of an
/// interrupted compaction or hint write are removed on the way.
fn segment_ids(dir: &Path) -> Result<Vec<u32>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing the data folder", e))?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing the data folder", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".seg.tmp") || name.ends_with(".hint.tmp") {
            tracing::info!(
                file = name,
                "removing a partial file of an interrupted compaction"
            );
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io(format!("removing {name}"), e))?;
        } else if let Some(id) = segment::parse_file_name(name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Where a scan of one segment stopped.
enum ScanEnd {
    /// Every byte belonged to a committed transaction.
    Clean,
    /// Bytes from `valid_len` on are torn or do not check (`reason`).
    Damaged {
        valid_len: u64,
        at: u64,
        reason: DecodeError,
    },
}

/// Scans the records of one segment's bytes, collecting every record of every
/// committed transaction into `found`, in order. Records of a transaction without its
/// commit record are not collected.
fn scan<'b>(bytes: &'b [u8], found: &mut Vec<HintEntry<&'b [u8]>>) -> ScanEnd {
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    let mut txn_start = pos;
    let mut pending: Vec<HintEntry<&[u8]>> = Vec::new();
    while pos < bytes.len() {
        let header = match record::decode(&bytes[pos..]) {
            Ok(h) => h,
            Err(reason) => {
                return ScanEnd::Damaged {
                    valid_len: txn_start as u64,
                    at: pos as u64,
                    reason,
                };
            }
        };
        pending.push(HintEntry::of_record(&header, &bytes[pos..], pos as u32));
        pos += header.record_len();
        if header.is_commit() {
            found.append(&mut pending);
            txn_start = pos;
        }
    }
    if pending.is_empty() {
        ScanEnd::Clean
    } else {
        ScanEnd::Damaged {
            valid_len: txn_start as u64,
            at: txn_start as u64,
            reason: DecodeError::Truncated,
        }
    }
}

/// Rebuilds the index from `dir`. `now_ms` decides which entries already expired.
pub(crate) fn recover(dir: &Path, now_ms: u64) -> Result<Recovered> {
    compaction::finish_interrupted(dir)?;
    let ids = segment_ids(dir)?;
    let index = Index::new();
    let mut loader = Loader::new(&index, now_ms);
    let next_segment_id = ids.last().map_or(1, |id| id.saturating_add(1));

    // Map every segment; the active one is the newest log segment.
    let mut sealed = BTreeMap::new();
    let mut active_id = None;
    let mut base_seq_max = 1;
    for &id in &ids {
        let path = dir.join(segment::file_name(id));
        let len = std::fs::metadata(&path)
            .map_err(|e| Error::io(format!("reading {}", segment::file_name(id)), e))?
            .len();
        if len < SEGMENT_HEADER_BYTES {
            // Only the newest file can be torn this way: a crash while an older build
            // created it in place (`segment::create` now renames it into place).
            if Some(&id) != ids.last() {
                return Err(Error::Corrupt {
                    file: path,
                    offset: 0,
                    reason: "file is shorter than a segment header".into(),
                });
            }
            tracing::warn!(
                segment = id,
                bytes = len,
                "removing a segment torn while it was created"
            );
            std::fs::remove_file(&path).map_err(|e| Error::io("removing a torn segment", e))?;
            continue;
        }
        let seg = Segment::sealed(path, id)?;
        base_seq_max = base_seq_max.max(seg.header.base_seq);
        if seg.header.kind == Kind::Log {
            active_id = Some(id);
        }
        sealed.insert(id, seg);
    }

    let mut hints_used = 0;
    for (&id, seg) in &sealed {
        if Some(id) == active_id {
            continue;
        }
        let hint_bytes = hint::read(dir, id);
        let entries = hint_bytes
            .as_deref()
            .and_then(|b| hint::decode(b, id, seg.len()));
        if hint_bytes.is_some() && entries.is_none() {
            tracing::warn!(
                segment = id,
                "ignoring a damaged or stale hint file; scanning its segment"
            );
        }
        if let Some(entries) = entries {
            loader.apply(id, &entries);
            seg.has_hint
                .store(true, std::sync::atomic::Ordering::Relaxed);
            hints_used += 1;
            continue;
        }
        let bytes = seg.mapped().cloned().unwrap_or_default();
        let mut entries = Vec::new();
        if let ScanEnd::Damaged { at, reason, .. } = scan(&bytes, &mut entries) {
            return Err(record::corrupt(seg.path.clone(), at, reason));
        }
        loader.apply(id, &entries);
    }

    let (active_id, active_header, active_file, active_len, truncated_bytes) = match active_id {
        Some(id) => {
            let Some(seg) = sealed.remove(&id) else {
                return Err(Error::Closed(
                    "the newest log segment vanished during open".into(),
                ));
            };
            let header = seg.header;
            let (file, len, cut) = open_active(seg, &mut loader)?;
            (id, header, file, len, cut)
        }
        None => {
            // No log segment (a fresh folder, or only compacted ones): start one.
            let id = next_segment_id;
            let base_seq = loader.max_seq.saturating_add(1).max(base_seq_max);
            let file = segment::create(dir, id, base_seq)?;
            let header = SegmentHeader {
                base_seq,
                kind: Kind::Log,
            };
            (id, header, file, SEGMENT_HEADER_BYTES, 0)
        }
    };
    let max_seq = loader.max_seq;
    loader.finish();
    let next_seq = max_seq
        .saturating_add(1)
        .max(base_seq_max)
        .max(active_header.base_seq);
    Ok(Recovered {
        index,
        sealed: sealed
            .into_iter()
            .map(|(id, s)| (id, Arc::new(s)))
            .collect(),
        active_id,
        active_header,
        active_file,
        active_len,
        next_seq,
        next_segment_id: next_segment_id.max(active_id.saturating_add(1)),
        truncated_bytes,
        hints_used,
    })
}

/// Scans the newest log segment through the mapping made while listing the segments
/// (its header already checked) and cuts any torn tail; returns a write handle, the
/// length and the bytes cut.
fn open_active(seg: Segment, loader: &mut Loader<'_>) -> Result<(File, u64, u64)> {
    let name = segment::file_name(seg.id);
    let bytes = seg.mapped().cloned().unwrap_or_default();
    let mut entries = Vec::new();
    let scanned = scan(&bytes, &mut entries);
    loader.apply(seg.id, &entries);
    drop(entries);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg.path)
        .map_err(|e| Error::io(format!("opening segment {name}"), e))?;
    let file_len = bytes.len() as u64;
    // Unmap before a possible truncation: no page past the new end may stay mapped.
    drop(bytes);
    drop(seg);
    let (len, truncated) = match scanned {
        ScanEnd::Clean => (file_len, 0),
        ScanEnd::Damaged {
            valid_len,
            at,
            reason,
        } => {
            let dropped = file_len - valid_len;
            let what = match reason {
                DecodeError::Truncated => "a torn write".to_owned(),
                DecodeError::Invalid(r) => r,
            };
            tracing::warn!(
                segment = %name,
                offset = at,
                dropped_bytes = dropped,
                reason = %what,
                "cutting the unfinished tail of the newest segment"
            );
            file.set_len(valid_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(format!("truncating segment {name}"), e))?;
            (valid_len, dropped)
        }
    };
    Ok((file, len, truncated))
}
