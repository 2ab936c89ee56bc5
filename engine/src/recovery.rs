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
use std::sync::atomic::Ordering;

use crate::append;
use crate::compaction;
use crate::error::{Error, Result};
use crate::hint::{self, Decoded, HintEntry};
use crate::index::{Index, Loader};
use crate::record::{self, DecodeError};
use crate::segment::{
    self, Kind, SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES, Segment, SegmentHeader,
};

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
    /// Bytes cut off the newest segment's torn tail (a preallocated zero tail, cut
    /// too, is not counted: it never held a record).
    pub truncated_bytes: u64,
    /// Sealed segments loaded from a hint file instead of a scan.
    pub hints_used: u64,
}

/// Ids of the segment files in `dir`, ascending; leftover temporary files (of an
/// interrupted compaction, manifest, hint write or segment creation) are removed on
/// the way.
fn segment_ids(dir: &Path) -> Result<Vec<u32>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing the data folder", e))?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing the data folder", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let manifest_tmp = name.strip_suffix(".tmp") == Some(crate::compaction::MANIFEST);
        if name.ends_with(".seg.tmp") || name.ends_with(".hint.tmp") || manifest_tmp {
            tracing::info!(
                file = name,
                "removing a partial file of an interrupted write"
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

    // Every sealed segment's hint is mapped first (read ahead whole); version 2 and 3
    // hints are then applied together, every shard filled from its runs in parallel.
    // Version 1 hints are applied as they are decoded; segments without a usable hint
    // are scanned, every CRC checked.
    let mut hints_used = 0;
    let mut hint_bytes: Vec<(u32, hint::HintBytes)> = Vec::new();
    let mut to_scan = Vec::new();
    for &id in sealed.keys() {
        if Some(id) == active_id {
            continue;
        }
        match hint::read(dir, id) {
            Some(bytes) => hint_bytes.push((id, bytes)),
            None => to_scan.push(id),
        }
    }
    let mut runs = Vec::new();
    let mut v1_hints = Vec::new();
    for (id, bytes) in &hint_bytes {
        let seg = &sealed[id];
        match hint::decode_any(bytes, *id, seg.len()) {
            Some(Decoded::Runs(r)) => runs.push((*id, *r)),
            // A version 1 hint: used, but `has_hint` stays false so the maintenance
            // thread writes it again in the current version. Applied after the runs,
            // which must be loaded first (`Loader::apply_runs`); the order of
            // segments does not matter, the highest seq of a key wins.
            Some(Decoded::Entries(entries)) => v1_hints.push((*id, entries)),
            None => {
                tracing::warn!(
                    segment = id,
                    "ignoring a damaged or stale hint file; scanning its segment"
                );
                to_scan.push(*id);
            }
        }
    }
    for ((id, r), applied) in runs.iter().zip(loader.apply_runs(&runs)) {
        if applied {
            // A version 2 hint is used, but left for the maintenance thread to write
            // again in the current version, as version 1 hints are.
            let current = r.version == hint::HINT_FORMAT_VERSION;
            sealed[id].has_hint.store(current, Ordering::Relaxed);
            hints_used += 1;
        } else {
            tracing::warn!(
                segment = id,
                "ignoring a damaged hint file; scanning its segment"
            );
            to_scan.push(*id);
        }
    }
    drop(runs);
    for (id, entries) in v1_hints {
        loader.apply(id, &entries);
        hints_used += 1;
    }
    drop(hint_bytes);
    for id in to_scan {
        let seg = &sealed[&id];
        let bytes = seg.mapped().cloned().unwrap_or_default();
        let mut entries = Vec::new();
        if let ScanEnd::Damaged { at, reason, .. } = scan(&bytes, &mut entries) {
            return Err(record::corrupt(seg.path.clone(), at, reason));
        }
        loader.apply(id, &entries);
    }

    // The newest log segment of an older build (segment format 1) takes no records of
    // today's format: an older build would read them as a torn tail and cut them. It
    // is recovered as usual (a torn tail cut), synced, and stays as a sealed segment;
    // a new log segment becomes the active one.
    let mut truncated_before = 0;
    if let Some(id) = active_id
        && sealed[&id]
            .mapped()
            .is_some_and(|b| segment::format_version(b) < SEGMENT_FORMAT_VERSION)
        && let Some(seg) = sealed.remove(&id)
    {
        let path = seg.path.clone();
        let (file, _, cut) = open_active(seg, &mut loader)?;
        file.sync_all()
            .map_err(|e| Error::io(format!("syncing segment {}", segment::file_name(id)), e))?;
        drop(file);
        sealed.insert(id, Segment::sealed(path, id)?);
        truncated_before = cut;
        active_id = None;
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
            (id, header, file, SEGMENT_HEADER_BYTES, truncated_before)
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
/// (its header already checked) and cuts any torn tail or preallocated zero tail;
/// returns a write handle, the length and the bytes of torn tail cut.
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
    // Zeros from the last whole transaction to an aligned end of the file are space the
    // writer reserved ahead of its appends (`crate::append`), not a torn write: a kill
    // or crash before the segment was sealed leaves them.
    let preallocated = match &scanned {
        ScanEnd::Damaged { valid_len, .. } => append::is_preallocated_tail(&bytes, *valid_len),
        ScanEnd::Clean => false,
    };
    // Unmap before a possible truncation: no page past the new end may stay mapped.
    drop(bytes);
    drop(seg);
    let (len, truncated) = match scanned {
        ScanEnd::Clean => (file_len, 0),
        ScanEnd::Damaged { valid_len, .. } if preallocated => {
            tracing::debug!(
                segment = %name,
                offset = valid_len,
                zero_bytes = file_len - valid_len,
                "cutting the preallocated zero tail of the newest segment"
            );
            file.set_len(valid_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(format!("truncating segment {name}"), e))?;
            (valid_len, 0)
        }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::hint::HintEntry;
    use crate::{Engine, Options, SyncPolicy, WriteOptions};

    /// The whole index as a sorted map: key → (segment, offset, version).
    fn contents(index: &Index) -> BTreeMap<Vec<u8>, (u32, u32, u64)> {
        let mut all = BTreeMap::new();
        index.for_each(|key, loc| {
            all.insert(key.to_vec(), (loc.segment, loc.offset, loc.version));
        });
        all
    }

    /// Rewrites every hint in `hints` with `encode`, entries in record order.
    fn rewrite_hints(
        dir: &Path,
        hints: &[std::path::PathBuf],
        encode: fn(u32, u64, &[HintEntry]) -> Vec<u8>,
    ) {
        for path in hints {
            let bytes = std::fs::read(path).expect("read hint");
            let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
            let id: u32 = name.parse().expect("id");
            let seg_len = std::fs::metadata(dir.join(segment::file_name(id)))
                .expect("segment")
                .len();
            let mut entries: Vec<HintEntry> = hint::check(&bytes, id, seg_len)
                .expect("hint checks")
                .into_iter()
                .map(|(_, e)| e.to_owned_key())
                .collect();
            entries.sort_by_key(|e| e.offset);
            std::fs::write(path, encode(id, seg_len, &entries)).expect("write");
        }
    }

    fn hint_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut hints: Vec<_> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "hint"))
            .collect();
        hints.sort();
        hints
    }

    #[test]
    fn hints_of_every_version_and_a_full_scan_rebuild_the_same_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = Options {
            segment_bytes: 8 * 1024,
            sync: SyncPolicy::Never,
            ..Options::default()
        };
        let engine = Engine::open(dir.path(), options).expect("open");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64;
        let ttl = WriteOptions {
            expires_at_ms: Some(now_ms + 3_600_000),
            ..WriteOptions::default()
        };
        for round in 0..3 {
            for k in 0..400 {
                let key = format!(
                    "key/{k:04}{}",
                    if k % 9 == 0 {
                        "-long-enough-to-spill"
                    } else {
                        ""
                    }
                );
                let wo = if k % 4 == 0 {
                    ttl.clone()
                } else {
                    WriteOptions::default()
                };
                engine
                    .put(key, format!("v{round}-{k}").repeat(10), wo)
                    .expect("put");
            }
            for k in (round..400).step_by(7) {
                engine.delete(format!("key/{k:04}")).expect("delete");
            }
        }
        engine.compact().expect("compact");
        engine.close().expect("close");
        let hints = hint_files(dir.path());
        assert!(hints.len() >= 3, "{hints:?}");

        let v3 = recover(dir.path(), 0).expect("recover from version 3 hints");
        assert_eq!(v3.hints_used as usize, hints.len());
        assert!(
            v3.sealed
                .values()
                .all(|s| s.has_hint.load(Ordering::Relaxed)),
            "hints of the current version are kept"
        );
        let want = contents(&v3.index);
        assert_eq!(v3.index.keys() as usize, want.len());
        let (want_live, want_seq) = (v3.index.live_bytes(), v3.next_seq);
        drop(v3);

        // A damaged version 3 hint: its segment is scanned instead, to the same index.
        let good = std::fs::read(&hints[0]).expect("read hint");
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        std::fs::write(&hints[0], &bad).expect("damage hint");
        let partly = recover(dir.path(), 0).expect("recover with a damaged hint");
        assert_eq!(partly.hints_used as usize, hints.len() - 1);
        assert_eq!(contents(&partly.index), want);
        assert_eq!(partly.index.live_bytes(), want_live);
        drop(partly);

        // A hint whose CRCs check but whose entries lie (a key the segment does not
        // hold, loaded before a key in another shard's run refuses the hint: a writer
        // bug), beside a version 1 hint (applied after the runs): the shards are
        // filled again without it and its segment is scanned, to the same index.
        let mut misplaced = good.clone();
        hint::make_a_hint_lie(&mut misplaced);
        std::fs::write(&hints[0], &misplaced).expect("write a misplaced key");
        let second = std::fs::read(&hints[1]).expect("read hint");
        rewrite_hints(dir.path(), &hints[1..2], hint::encode_v1::<Vec<u8>>);
        let mixed = recover(dir.path(), 0).expect("recover with a lying hint");
        assert_eq!(mixed.hints_used as usize, hints.len() - 1);
        assert_eq!(contents(&mixed.index), want);
        assert_eq!(
            (mixed.index.live_bytes(), mixed.next_seq),
            (want_live, want_seq)
        );
        drop(mixed);
        std::fs::write(&hints[1], &second).expect("restore hint");
        std::fs::write(&hints[0], &good).expect("restore hint");

        // The same hints rewritten in format version 2, then in version 1 (entries
        // in record order).
        for (encode, version) in [
            (
                hint::encode_v2::<Vec<u8>> as fn(u32, u64, &[HintEntry]) -> Vec<u8>,
                2,
            ),
            (hint::encode_v1::<Vec<u8>>, 1),
        ] {
            rewrite_hints(dir.path(), &hints, encode);
            let old = recover(dir.path(), 0).expect("recover from older hints");
            assert_eq!(old.hints_used as usize, hints.len(), "version {version}");
            assert!(
                old.sealed
                    .values()
                    .all(|s| !s.has_hint.load(Ordering::Relaxed)),
                "version {version} hints are left for the maintenance thread to rewrite"
            );
            assert_eq!(contents(&old.index), want, "version {version}");
            assert_eq!(
                (old.index.live_bytes(), old.next_seq),
                (want_live, want_seq),
                "version {version}"
            );
        }

        for path in &hints {
            std::fs::remove_file(path).expect("remove hint");
        }
        let scanned = recover(dir.path(), 0).expect("recover by scanning");
        assert_eq!(scanned.hints_used, 0);
        assert_eq!(contents(&scanned.index), want);
        assert_eq!(scanned.index.live_bytes(), want_live);
        let mut expiring = 0;
        scanned
            .index
            .for_each(|_, loc| expiring += usize::from(loc.expires_at_ms != 0));
        assert!(expiring > 0);
        let due = scanned.index.expiries.take_due(u64::MAX, usize::MAX);
        assert_eq!(
            due.len(),
            expiring,
            "every expiring key is in the expiry order"
        );
    }
}
