//! Opening a data folder: scan every segment in order, check every CRC, rebuild the
//! index, cut a torn tail off the newest segment.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::index::{Index, Location};
use crate::record::{self, DecodeError, HEADER_BYTES};
use crate::segment::{self, SEGMENT_HEADER_BYTES, Segment};

/// What recovery hands to the engine.
pub(crate) struct Recovered {
    pub index: Index,
    /// Sealed segments, mapped, by id.
    pub sealed: BTreeMap<u32, Arc<Segment>>,
    /// The active segment: id, write handle and length.
    pub active_id: u32,
    pub active_file: File,
    pub active_len: u64,
    /// The next version to hand out.
    pub next_seq: u64,
    /// Bytes cut off the newest segment's torn tail.
    pub truncated_bytes: u64,
}

/// Ids of the segment files in `dir`, ascending.
fn segment_ids(dir: &Path) -> Result<Vec<u32>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing the data folder", e))?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing the data folder", e))?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_file_name)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// One committed record, as the scan found it.
struct Found {
    offset: u64,
    header: record::Header,
    key: Vec<u8>,
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

/// Scans the records of one segment's bytes, calling `apply` for each record of each
/// committed transaction, in order. Records of a transaction without its commit
/// record are not applied.
fn scan(bytes: &[u8], mut apply: impl FnMut(Found)) -> ScanEnd {
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    let mut txn_start = pos;
    let mut pending: Vec<Found> = Vec::new();
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
        let key = bytes[pos + HEADER_BYTES..pos + HEADER_BYTES + header.key_len as usize].to_vec();
        pending.push(Found {
            offset: pos as u64,
            header,
            key,
        });
        pos += header.record_len();
        if header.is_commit() {
            pending.drain(..).for_each(&mut apply);
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
    let ids = segment_ids(dir)?;
    let index = Index::new();
    let mut max_seq = 0u64;
    let mut apply = |segment: u32, found: Found| {
        max_seq = max_seq.max(found.header.seq);
        let h = &found.header;
        let expired = h.expires_at().is_some_and(|t| t <= now_ms);
        if h.is_tombstone() || expired {
            index.remove(&found.key);
        } else {
            index.insert(
                &found.key,
                Location {
                    segment,
                    offset: found.offset as u32,
                    len: h.record_len() as u32,
                    expires_at_ms: h.expires_at_ms,
                    version: h.seq,
                },
            );
        }
    };

    let Some((&last_id, sealed_ids)) = ids.split_last() else {
        let file = segment::create(dir, 1, 1)?;
        return Ok(Recovered {
            index,
            sealed: BTreeMap::new(),
            active_id: 1,
            active_file: file,
            active_len: SEGMENT_HEADER_BYTES,
            next_seq: 1,
            truncated_bytes: 0,
        });
    };

    let mut sealed = BTreeMap::new();
    for &id in sealed_ids {
        let seg = Segment::sealed(dir.join(segment::file_name(id)), id)?;
        let bytes = seg.mapped().cloned().unwrap_or_default();
        let corrupt = |offset: u64, reason: String| Error::Corrupt {
            file: seg.path.clone(),
            offset,
            reason,
        };
        segment::decode_header(&bytes, id).map_err(|reason| corrupt(0, reason))?;
        if let ScanEnd::Damaged { at, reason, .. } = scan(&bytes, |f| apply(id, f)) {
            return Err(record::corrupt(seg.path.clone(), at, reason));
        }
        sealed.insert(id, Arc::new(seg));
    }

    let active = open_active(dir, last_id, |f| apply(last_id, f))?;
    let (active_file, active_len, base_seq, truncated_bytes) = match active {
        Active::Opened {
            file,
            len,
            base_seq,
            truncated_bytes,
        } => (file, len, base_seq, truncated_bytes),
        Active::TornHeader { removed_bytes } => {
            let base_seq = max_seq.saturating_add(1);
            let file = segment::create(dir, last_id, base_seq)?;
            (file, SEGMENT_HEADER_BYTES, base_seq, removed_bytes)
        }
    };
    let next_seq = max_seq.saturating_add(1).max(base_seq);
    Ok(Recovered {
        index,
        sealed,
        active_id: last_id,
        active_file,
        active_len,
        next_seq,
        truncated_bytes,
    })
}

/// The newest segment after its scan.
enum Active {
    /// Opened for appending, any torn tail cut.
    Opened {
        file: File,
        len: u64,
        base_seq: u64,
        truncated_bytes: u64,
    },
    /// The file was shorter than its header (a crash while it was created) and has
    /// been removed; the caller creates it anew.
    TornHeader { removed_bytes: u64 },
}

/// Scans the newest segment and cuts any torn tail.
fn open_active(dir: &Path, id: u32, apply: impl FnMut(Found)) -> Result<Active> {
    let path = dir.join(segment::file_name(id));
    let name = segment::file_name(id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening segment {name}"), e))?;
    let bytes =
        std::fs::read(&path).map_err(|e| Error::io(format!("reading segment {name}"), e))?;
    if bytes.len() < SEGMENT_HEADER_BYTES as usize {
        // A crash while the segment was being created: nothing can be in it yet.
        tracing::warn!(segment = %name, bytes = bytes.len(), "rewriting a torn segment header");
        drop(file);
        std::fs::remove_file(&path).map_err(|e| Error::io(format!("removing {name}"), e))?;
        return Ok(Active::TornHeader {
            removed_bytes: bytes.len() as u64,
        });
    }
    let base_seq = segment::decode_header(&bytes, id).map_err(|reason| Error::Corrupt {
        file: path.clone(),
        offset: 0,
        reason,
    })?;
    let (len, truncated) = match scan(&bytes, apply) {
        ScanEnd::Clean => (bytes.len() as u64, 0),
        ScanEnd::Damaged {
            valid_len,
            at,
            reason,
        } => {
            let dropped = bytes.len() as u64 - valid_len;
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
    Ok(Active::Opened {
        file,
        len,
        base_seq,
        truncated_bytes: truncated,
    })
}
