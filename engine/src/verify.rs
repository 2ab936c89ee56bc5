//! Offline checking and repair of a data folder (`caskade verify`, `caskade repair`).
//!
//! Both take the folder's lock, so they never run beside an open engine, and read every
//! file themselves instead of going through recovery: recovery stops at the first
//! damage, these go on and report every damaged stretch with its file and offset.
//!
//! **Verify** checks every segment (header, every record's framing and CRC, that a
//! sealed segment ends on a committed transaction) and every hint (its own CRCs, and
//! that it lists exactly the records of its segment, with matching key, seq, flags,
//! expiry and length). A torn tail of the newest log segment is what a crash leaves and
//! what open cuts: it is a warning, not damage — unless intact records follow the bad
//! spot, because open would cut those too. Zeros the writer reserved past its last
//! append (see `crate::append`) at the end of the newest log segment are no finding at
//! all (open cuts them quietly); at the end of any other segment they are damage.
//!
//! **Repair** rewrites each damaged segment's intact, whole transactions into a new
//! compacted segment (a `*.tmp` file, fsync-ed, renamed), then moves the damaged
//! segment, its hint, damaged hints and a damaged compaction manifest into
//! `damaged-<UTC time>/` inside the folder. Nothing is deleted. Salvaged records keep
//! their bytes, seq (version), timestamps and expiry; only the `COMMIT` flag is set on
//! each, as compaction does, because each one is copied as a committed transaction of
//! its own. Recovery applies records by seq, so a salvaged record takes exactly the
//! place in each key's history it had before.
//!
//! Transactions cut by damage are never half-applied. The records of a transaction
//! whose commit record is damaged or missing are set aside. After a damaged stretch,
//! the records up to the next commit record are set aside too — they may be the rest
//! of a transaction whose start was lost — unless the transaction boundary is known:
//! the segment is a compacted one (every record there is its own transaction), or the
//! damaged record is known to end exactly where the next intact record starts (a
//! rewritten length field or one flipped header bit makes its CRC check, or its header
//! still decodes and says so) and its `COMMIT` bit says it ended its transaction. The
//! scan always resumes at the first intact record after the damage: a decoded length
//! reaching past one is not trusted. Set-aside records are listed in the report and stay
//! in the moved-aside original file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::append;
use crate::compaction::{MANIFEST, parse_manifest};
use crate::engine::lock_dir;
use crate::error::{Error, Result};
use crate::hint;
use crate::record::{self, DecodeError, FLAG_COMMIT};
use crate::segment::{self, Kind, SEGMENT_HEADER_BYTES, SegmentHeader, sync_dir};

/// Most findings reported for one file; more are summed up in one last finding.
const FINDINGS_PER_FILE_MAX: usize = 20;
/// How often a scan reports progress.
const PROGRESS_STEP_BYTES: u64 = 4 * 1024 * 1024;

/// One problem found, located in a file of the data folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The file's name inside the data folder, e.g. `0000000003.seg`.
    pub file: String,
    /// Byte offset of the problem inside the file.
    pub offset: u64,
    /// What is wrong, and what open or repair does about it.
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at offset {}: {}",
            self.file, self.offset, self.reason
        )
    }
}

/// What one file of the folder is and holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSummary {
    /// The file's name inside the data folder.
    pub file: String,
    /// `"active log"`, `"sealed log"`, `"compacted"`, `"unreadable header"`, `"hint"`.
    pub role: &'static str,
    /// Bytes in the file.
    pub bytes: u64,
    /// Intact records (segments) or entries (hints) found.
    pub records: u64,
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The data folder.
    pub dir: PathBuf,
    /// Every segment and hint checked.
    pub files: Vec<FileSummary>,
    /// Bytes read.
    pub bytes_scanned: u64,
    /// Problems that make open refuse the folder, lose records, or show a file does
    /// not hold what it was written with. Non-empty means "run repair".
    pub damage: Vec<Finding>,
    /// Things open handles by itself (a torn tail, leftovers of an interrupted
    /// compaction); no data is at risk.
    pub warnings: Vec<Finding>,
}

impl VerifyReport {
    /// No damage (warnings allowed).
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }
}

/// An intact record repair did not carry over, because its transaction was cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAside {
    /// Offset of the record in the damaged (now moved-aside) segment.
    pub offset: u64,
    /// The record's version.
    pub seq: u64,
    /// The record's key.
    pub key: Vec<u8>,
    /// Why it was not carried over.
    pub reason: &'static str,
}

/// What repair did with one damaged segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Salvage {
    /// The damaged segment's name (now inside the damaged folder).
    pub file: String,
    /// The new segment holding its salvaged records; `None` when none were intact.
    pub output: Option<String>,
    /// Records carried over.
    pub records_salvaged: u64,
    /// Intact records not carried over.
    pub set_aside: Vec<SetAside>,
}

/// The outcome of [`repair`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// The check made before repairing.
    pub before: VerifyReport,
    /// Where damaged files were moved; `None` when nothing needed repair.
    pub damaged_dir: Option<PathBuf>,
    /// One entry per damaged segment.
    pub salvaged: Vec<Salvage>,
    /// Files moved into `damaged_dir`, by name.
    pub moved: Vec<String>,
    /// Files created in the data folder, by name.
    pub created: Vec<String>,
    /// The check made after repairing.
    pub after: VerifyReport,
}

/// Checks every file of the data folder `dir` without changing anything (the lock
/// file is created if missing). `progress(done, total)` is called with bytes read.
///
/// Fails with [`Error::Locked`] while an engine has the folder open, with
/// [`Error::NotAStore`] when it holds no segment, and with [`Error::Io`] when it cannot
/// be read.
pub fn verify(dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
    let _lock = lock(dir)?;
    Ok(survey(dir, progress)?.report)
}

/// Repairs the data folder `dir` so that open accepts it, salvaging every intact
/// record of whole transactions from damaged segments; never deletes a file (damaged
/// ones are moved into `dir/damaged-<UTC time>/`). `progress` sees the first check.
pub fn repair(dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<RepairReport> {
    let _lock = lock(dir)?;
    let survey = survey(dir, progress)?;
    let mut out = RepairReport::default();
    let plan = Plan::of(&survey);
    if plan.is_empty() {
        out.after = survey.report.clone();
        out.before = survey.report;
        return Ok(out);
    }
    let damaged_dir = make_damaged_dir(dir)?;
    let mut next_id = survey.max_id_seen.saturating_add(1);
    for scan in survey
        .scans
        .iter()
        .filter(|s| plan.segments.contains(&s.id))
    {
        let output = salvage(dir, scan, next_id)?;
        let salvaged = scan.records.iter().filter(|r| r.fate == Fate::Intact);
        let mut entry = Salvage {
            file: scan.name.clone(),
            output: None,
            records_salvaged: salvaged.count() as u64,
            set_aside: scan.set_aside(),
        };
        if let Some(name) = output {
            next_id = next_id.saturating_add(1);
            out.created.push(name.clone());
            entry.output = Some(name);
        }
        move_aside(dir, &damaged_dir, &scan.name)?;
        out.moved.push(scan.name.clone());
        out.salvaged.push(entry);
    }
    for name in &plan.other_files {
        move_aside(dir, &damaged_dir, name)?;
        out.moved.push(name.clone());
    }
    if plan.needs_new_log {
        // The newest log segment went aside: start a fresh one whose base seq is above
        // every version seen, so versions keep growing.
        segment::create(dir, next_id, survey.seq_max.saturating_add(1))?;
        out.created.push(segment::file_name(next_id));
    }
    sync_dir(dir)?;
    out.damaged_dir = Some(damaged_dir);
    out.before = survey.report;
    out.after = self::survey(dir, &mut |_, _| {})?.report;
    Ok(out)
}

fn lock(dir: &Path) -> Result<File> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| Error::io(format!("reading the data folder {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::NotAStore {
            dir: dir.to_path_buf(),
        });
    }
    let has_segment = std::fs::read_dir(dir)
        .map_err(|e| Error::io("listing the data folder", e))?
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_str()
                .and_then(segment::parse_file_name)
                .is_some()
        });
    if !has_segment {
        return Err(Error::NotAStore {
            dir: dir.to_path_buf(),
        });
    }
    lock_dir(dir)
}

/// What happened to an intact record in a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Part of a whole, committed transaction.
    Intact,
    /// Part of a transaction whose commit record is damaged or missing.
    Cut,
    /// After a damaged stretch, before the next commit: maybe the rest of a
    /// transaction whose start was lost.
    Unsure,
}

#[derive(Clone, Debug)]
struct Rec {
    offset: u64,
    len: u64,
    header: record::Header,
    key: Vec<u8>,
    fate: Fate,
}

/// Bytes that are no record: from `start` to `end` (the next intact record or the
/// end of the file).
#[derive(Clone, Debug)]
struct Stretch {
    start: u64,
    end: u64,
    reason: String,
}

/// Everything a scan of one segment found.
#[derive(Debug)]
struct SegScan {
    id: u32,
    name: String,
    len: u64,
    header: std::result::Result<SegmentHeader, String>,
    records: Vec<Rec>,
    stretches: Vec<Stretch>,
    /// Offset of a transaction still open at the end of the file.
    open_tail: Option<u64>,
    /// Where zeros the writer reserved ahead of its appends start (the scan stops
    /// there; see [`append::is_preallocated_tail`]). Normal at the end of the active
    /// segment after a crash; damage at the end of any other.
    zero_tail: Option<u64>,
}

impl SegScan {
    fn set_aside(&self) -> Vec<SetAside> {
        self.records
            .iter()
            .filter(|r| r.fate != Fate::Intact)
            .map(|r| SetAside {
                offset: r.offset,
                seq: r.header.seq,
                key: r.key.clone(),
                reason: match r.fate {
                    Fate::Cut => "its transaction's commit record is damaged or missing",
                    _ => "it may be the rest of a transaction whose start is damaged",
                },
            })
            .collect()
    }

    fn seq_max(&self) -> u64 {
        let base = self.header.as_ref().map_or(0, |h| h.base_seq);
        self.records
            .iter()
            .map(|r| r.header.seq)
            .fold(base, u64::max)
    }

    fn is_log_or_unknown(&self) -> bool {
        !matches!(&self.header, Ok(h) if h.kind == Kind::Compacted)
    }
}

/// Scans one segment's bytes, resynchronising after every damaged stretch.
fn scan_segment(
    id: u32,
    bytes: &[u8],
    base_done: u64,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> SegScan {
    let header = segment::decode_header(bytes, id);
    // Every record of a compacted segment is a transaction of its own.
    let compacted = matches!(&header, Ok(h) if h.kind == Kind::Compacted);
    let mut scan = SegScan {
        id,
        name: segment::file_name(id),
        len: bytes.len() as u64,
        header,
        records: Vec::new(),
        stretches: Vec::new(),
        open_tail: None,
        zero_tail: None,
    };
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    // Index of the first record of the transaction being read.
    let mut txn_from = 0;
    // Whether that transaction's start is known (after a commit or a known boundary).
    let mut start_known = true;
    let mut reported = 0u64;
    while pos < bytes.len() {
        if pos as u64 - reported >= PROGRESS_STEP_BYTES {
            reported = pos as u64;
            progress(base_done + reported, total);
        }
        match record::decode(&bytes[pos..]) {
            Ok(h) => {
                let len = h.record_len();
                scan.records.push(Rec {
                    offset: pos as u64,
                    len: len as u64,
                    header: h,
                    key: bytes[pos..][h.key_range()].to_vec(),
                    fate: Fate::Intact,
                });
                pos += len;
                if h.is_commit() || compacted {
                    if !start_known {
                        mark(&mut scan.records[txn_from..], Fate::Unsure);
                    }
                    txn_from = scan.records.len();
                    start_known = true;
                }
            }
            Err(_) if append::is_preallocated_tail(bytes, pos as u64) => {
                scan.zero_tail = Some(pos as u64);
                break;
            }
            Err(err) => {
                mark(&mut scan.records[txn_from..], Fate::Cut);
                let (next, ends_txn) = resync(bytes, pos, compacted);
                let reason = match err {
                    DecodeError::Truncated => "a record extends past the end of the file".into(),
                    DecodeError::Invalid(reason) => reason,
                };
                scan.stretches.push(Stretch {
                    start: pos as u64,
                    end: next as u64,
                    reason,
                });
                txn_from = scan.records.len();
                start_known = ends_txn;
                pos = next;
            }
        }
    }
    if txn_from < scan.records.len() {
        scan.open_tail = Some(scan.records[txn_from].offset);
        mark(&mut scan.records[txn_from..], Fate::Cut);
    }
    progress(base_done + bytes.len() as u64, total);
    scan
}

fn mark(records: &mut [Rec], fate: Fate) {
    for r in records {
        r.fate = fate;
    }
}

/// Where the next intact record starts after damage at `pos`, and whether the damaged
/// stretch is known to end a transaction.
///
/// The scan resumes at the first offset after `pos` where an intact record (header
/// and CRC) decodes: nothing before it is readable, and no intact record is ever
/// skipped. The damaged record's extent is known (and its `COMMIT` bit says whether
/// the stretch ends a transaction) when it ends exactly there: a rewritten length field
/// or a single flipped header bit makes its CRC check over those bytes, or its header
/// still decodes and says so. A decoded length that reaches past that record is not
/// trusted: damage before the length fields (the `EXPIRES` bit, a continuation bit of
/// `seq` or a time) shifts where they are read, and the wrong extent can end on an
/// intact record further on.
fn resync(bytes: &[u8], pos: usize, compacted: bool) -> (usize, bool) {
    let next = (pos + 1..bytes.len())
        .find(|&q| record::decode(&bytes[q..]).is_ok())
        .unwrap_or(bytes.len());
    // Tried first, also when the header does not decode: in version 2 a hit length
    // varint often stops decoding (a set continuation bit runs into the next field).
    if next < bytes.len()
        && let Some(commit) = fix_header(&bytes[pos..next])
    {
        return (next, compacted || commit);
    }
    if let Ok(h) = record::decode_header(&bytes[pos..])
        && pos.saturating_add(h.record_len()) == next
    {
        return (
            next,
            compacted || commit_bit(&bytes[pos..next], h.is_commit()),
        );
    }
    (next, compacted)
}

/// Whether the damaged bytes `rec` (up to the next intact record) are one record with
/// a damaged header: rewriting one of its three length fields so that it spans `rec`,
/// or flipping one bit of its header, makes its CRC check. Its `COMMIT` bit if so.
/// Trusting the damaged length instead could jump over intact records (a flipped
/// length bit adds a power of two, often a whole number of records).
fn fix_header(rec: &[u8]) -> Option<bool> {
    let version = *rec.get(4)?;
    let min = match version {
        record::RECORD_FORMAT_V1 => record::V1_HEADER_BYTES,
        record::RECORD_FORMAT_VERSION => record::HEADER_BYTES_MIN,
        _ => return flipped_header_bit(rec),
    };
    if rec.len() <= min {
        return flipped_header_bit(rec);
    }
    let crc = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
    let mut checks = |patched: &[u8]| crc32fast::hash(&patched[4..]) == crc;
    let fixed = if version == record::RECORD_FORMAT_V1 {
        v1_length_patches(rec, &mut checks)
    } else {
        v2_length_patches(rec, &mut checks)
    };
    if fixed {
        return Some(rec[5] & FLAG_COMMIT != 0);
    }
    flipped_header_bit(rec)
}

/// A single flipped bit after the CRC field of the header — in the version, the flags
/// or a varint — such that the corrected bytes are exactly one whole record whose CRC
/// checks; its `COMMIT` bit if so. The body's CRC is computed once and combined with
/// each corrected header's, so this costs one pass over `rec`.
fn flipped_header_bit(rec: &[u8]) -> Option<bool> {
    if rec.len() < record::HEADER_BYTES_MIN {
        return None;
    }
    let stored = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
    let head_end = rec.len().min(record::HEADER_BYTES_MAX);
    let mut body = crc32fast::Hasher::new();
    body.update(&rec[head_end..]);
    let mut head = rec[..head_end].to_vec();
    for at in 4..head_end {
        for bit in 0..8 {
            head[at] ^= 1 << bit;
            let whole = record::decode_header(&head).is_ok_and(|h| h.record_len() == rec.len())
                && {
                    let mut crc = crc32fast::Hasher::new();
                    crc.update(&head[4..]);
                    crc.combine(&body);
                    crc.finalize() == stored
                };
            if whole {
                return Some(head[5] & FLAG_COMMIT != 0);
            }
            head[at] ^= 1 << bit;
        }
    }
    None
}

/// Version 1: the fixed-width length fields, each rewritten so the record spans `rec`;
/// whether one such patch `checks`.
fn v1_length_patches(rec: &[u8], checks: &mut dyn FnMut(&[u8]) -> bool) -> bool {
    const LENGTH_FIELDS: [usize; 3] = [32, 36, 40];
    let header = record::V1_HEADER_BYTES;
    let u32_at = |at: usize| u32::from_le_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]]);
    let lens = LENGTH_FIELDS.map(|at| u64::from(u32_at(at)));
    let total = (rec.len() - header) as u64;
    for (i, at) in LENGTH_FIELDS.into_iter().enumerate() {
        let others: u64 = (0..3).filter(|&j| j != i).map(|j| lens[j]).sum();
        let Some(want) = total
            .checked_sub(others)
            .and_then(|w| u32::try_from(w).ok())
        else {
            continue;
        };
        let mut patched = rec.to_vec();
        patched[at..at + 4].copy_from_slice(&want.to_le_bytes());
        if checks(&patched) {
            return true;
        }
    }
    false
}

/// Version 2: the length varints follow seq, written_at and (if flagged) expires_at.
/// Damage keeps a field's byte count but may change where its varint seems to end, so
/// for each length field and each byte count it may have had, the other two are read
/// around it and the field is rewritten (minimally, in that many bytes) so the record
/// spans `rec`; whether one such patch `checks`.
fn v2_length_patches(rec: &[u8], checks: &mut dyn FnMut(&[u8]) -> bool) -> bool {
    let Some(lens_at) = v2_lengths_start(rec) else {
        return false;
    };
    for hit in 0..3 {
        for width in 1..=5 {
            let mut at = lens_at;
            let mut others = 0u64;
            let mut hit_at = 0;
            let mut readable = true;
            for field in 0..3 {
                if field == hit {
                    hit_at = at;
                    at += width;
                } else if let Some((v, n)) = read_varint(rec.get(at..).unwrap_or_default())
                    && let Some(sum) = others.checked_add(v)
                {
                    // Hostile bytes can read as two near-2^64 lengths: unreadable.
                    others = sum;
                    at += n;
                } else {
                    readable = false;
                    break;
                }
            }
            let Some(want) = (rec.len() as u64)
                .checked_sub(at as u64)
                .and_then(|body| body.checked_sub(others))
            else {
                continue;
            };
            if !readable || record::varint_len(want) != width {
                continue;
            }
            let mut patched = rec[..hit_at].to_vec();
            record::put_varint(&mut patched, want);
            patched.extend_from_slice(&rec[hit_at + width..]);
            if checks(&patched) {
                return true;
            }
        }
    }
    false
}

/// Offset of a version 2 record's key length varint, if the fields before it read.
fn v2_lengths_start(rec: &[u8]) -> Option<usize> {
    let flags = *rec.get(5)?;
    let mut at = 6;
    let fields = if flags & record::FLAG_EXPIRES != 0 {
        3
    } else {
        2
    };
    for _ in 0..fields {
        at += read_varint(rec.get(at..)?)?.1;
    }
    Some(at)
}

/// A LEB128 varint at the start of `b`: its value and byte count (at most 10 bytes);
/// `None` when it does not end within them or holds bits beyond 64.
fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in b.iter().take(10).enumerate() {
        let bits = u64::from(byte & 0x7f);
        // The tenth byte holds bit 63 only; more would be lost by the shift.
        if i == 9 && bits > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The COMMIT bit of a damaged record of confirmed length: as stored, unless the CRC
/// shows that exactly this bit was flipped.
fn commit_bit(record: &[u8], stored: bool) -> bool {
    let mut fixed = record.to_vec();
    fixed[5] ^= FLAG_COMMIT;
    let crc = u32::from_le_bytes([record[0], record[1], record[2], record[3]]);
    if crc32fast::hash(&fixed[4..]) == crc {
        !stored
    } else {
        stored
    }
}

/// Everything found in a folder: the report and what repair needs.
struct Survey {
    report: VerifyReport,
    scans: Vec<SegScan>,
    /// Segments that are damage (open refuses them or would lose records).
    damaged_segments: BTreeSet<u32>,
    /// Hints that are damaged, stale or lie about their segment.
    damaged_hints: BTreeSet<u32>,
    /// Segment files too short for a header that are not the newest file.
    stubs: Vec<String>,
    newest_stub: Option<String>,
    manifest_damaged: bool,
    /// Highest id in any file name of the folder.
    max_id_seen: u32,
    /// Highest seq or base seq seen.
    seq_max: u64,
}

fn survey(dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Survey> {
    let mut report = VerifyReport {
        dir: dir.to_path_buf(),
        ..VerifyReport::default()
    };
    let mut segs: BTreeMap<u32, u64> = BTreeMap::new();
    let mut hints: BTreeMap<u32, u64> = BTreeMap::new();
    let mut max_id_seen = 0u32;
    let mut manifest_text = None;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("listing the data folder", e))? {
        let entry = entry.map_err(|e| Error::io("listing the data folder", e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(id) = name.get(..10).and_then(|s| s.parse::<u32>().ok()) {
            max_id_seen = max_id_seen.max(id);
        }
        let len = || {
            entry
                .metadata()
                .map(|m| m.len())
                .map_err(|e| Error::io(format!("reading {name}"), e))
        };
        if name.ends_with(".tmp") {
            report.warnings.push(Finding {
                file: name.clone(),
                offset: 0,
                reason: "leftover temporary file of an interrupted write; open removes it".into(),
            });
        } else if let Some(id) = segment::parse_file_name(&name) {
            segs.insert(id, len()?);
        } else if let Some(id) = parse_hint_name(&name) {
            hints.insert(id, len()?);
        } else if name == MANIFEST {
            manifest_text = Some(
                std::fs::read(entry.path())
                    .map_err(|e| Error::io("reading the compaction manifest", e))?,
            );
        }
    }

    // An interrupted compaction: open deletes its inputs first, so they are not checked.
    let mut doomed = BTreeSet::new();
    let mut manifest_damaged = false;
    if let Some(text) = manifest_text {
        match parse_manifest(&text) {
            Ok(ids) => {
                report.warnings.push(Finding {
                    file: MANIFEST.into(),
                    offset: 0,
                    reason: format!(
                        "an interrupted compaction; open finishes it by deleting its {} input \
                         segments (not checked)",
                        ids.len()
                    ),
                });
                doomed.extend(ids);
            }
            Err(why) => {
                manifest_damaged = true;
                report.damage.push(Finding {
                    file: MANIFEST.into(),
                    offset: 0,
                    reason: format!(
                        "the compaction manifest does not check ({why}); open refuses the folder"
                    ),
                });
            }
        }
    }

    let total: u64 = segs
        .iter()
        .chain(hints.iter())
        .filter(|(id, _)| !doomed.contains(*id))
        .map(|(_, len)| len)
        .sum();
    let mut done = 0u64;
    progress(0, total);

    let newest_file = segs.keys().next_back().copied();
    // The active segment is the newest log segment; only headers are needed to know it.
    let mut active = None;
    for (&id, &len) in &segs {
        if !doomed.contains(&id)
            && len >= SEGMENT_HEADER_BYTES
            && read_kind(&dir.join(segment::file_name(id)), id)? == Some(Kind::Log)
        {
            active = Some(id);
        }
    }
    let mut scans = Vec::new();
    let mut stubs = Vec::new();
    let mut newest_stub = None;
    let mut damaged_segments = BTreeSet::new();
    let mut damaged_hints = BTreeSet::new();
    let mut hints_checked = BTreeSet::new();
    let mut seq_max = 0;
    for (&id, &len) in &segs {
        if doomed.contains(&id) {
            continue;
        }
        let name = segment::file_name(id);
        if len < SEGMENT_HEADER_BYTES {
            let finding = Finding {
                file: name.clone(),
                offset: 0,
                reason: format!("the file is shorter ({len} bytes) than a segment header"),
            };
            if Some(id) == newest_file {
                newest_stub = Some(name.clone());
                report.warnings.push(Finding {
                    reason: format!(
                        "{}; torn while it was created, open removes it",
                        finding.reason
                    ),
                    ..finding
                });
            } else {
                report.damage.push(finding);
                stubs.push(name);
            }
            done += len;
            continue;
        }
        let map = map_file(&dir.join(&name))?;
        let mut scan = scan_segment(id, &map, done, total, progress);
        drop(map);
        done += len;
        seq_max = seq_max.max(scan.seq_max());

        let mut damage = Vec::new();
        let mut warnings = Vec::new();
        judge_segment(&scan, Some(id) == active, &mut damage, &mut warnings);
        let damaged = !damage.is_empty();
        if damaged {
            damaged_segments.insert(id);
        }
        push_capped(&mut report.damage, damage);
        report.warnings.extend(warnings);
        report.files.push(FileSummary {
            file: scan.name.clone(),
            role: match &scan.header {
                Err(_) => "unreadable header",
                Ok(_) if Some(id) == active => "active log",
                Ok(h) if h.kind == Kind::Compacted => "compacted",
                Ok(_) => "sealed log",
            },
            bytes: scan.len,
            records: scan.records.len() as u64,
        });

        if let Some(&hint_len) = hints.get(&id)
            && Some(id) != active
        {
            hints_checked.insert(id);
            let hint_name = hint::file_name(id);
            let bytes = std::fs::read(dir.join(&hint_name))
                .map_err(|e| Error::io(format!("reading {hint_name}"), e))?;
            done += hint_len;
            progress(done, total);
            let mut damage = Vec::new();
            let entries = check_hint(&hint_name, &bytes, &scan, damaged, &mut damage);
            if !damage.is_empty() {
                damaged_hints.insert(id);
            }
            push_capped(&mut report.damage, damage);
            report.files.push(FileSummary {
                file: hint_name,
                role: "hint",
                bytes: hint_len,
                records: entries,
            });
        }
        // Only a damaged segment's records are needed again (by repair): memory stays
        // at one segment's records however large the store.
        if !damaged {
            scan.records = Vec::new();
        }
        scans.push(scan);
    }

    for &id in hints.keys() {
        if doomed.contains(&id) || hints_checked.contains(&id) {
            continue;
        }
        let reason = if scans.iter().any(|s| s.id == id) {
            "a hint beside the active segment; open ignores it"
        } else {
            "a hint without its segment; open ignores it"
        };
        report.warnings.push(Finding {
            file: hint::file_name(id),
            offset: 0,
            reason: reason.into(),
        });
    }
    report.bytes_scanned = done;
    Ok(Survey {
        report,
        scans,
        damaged_segments,
        damaged_hints,
        stubs,
        newest_stub,
        manifest_damaged,
        max_id_seen,
        seq_max,
    })
}

/// The kind a segment's header names; `None` when the header does not check.
fn read_kind(path: &Path, id: u32) -> Result<Option<Kind>> {
    let mut head = [0u8; SEGMENT_HEADER_BYTES as usize];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut head, 0))
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(segment::decode_header(&head, id).ok().map(|h| h.kind))
}

/// Sorts what a segment scan found into damage and warnings.
fn judge_segment(
    scan: &SegScan,
    is_active: bool,
    damage: &mut Vec<Finding>,
    warnings: &mut Vec<Finding>,
) {
    let finding = |offset: u64, reason: String| Finding {
        file: scan.name.clone(),
        offset,
        reason,
    };
    if let Err(reason) = &scan.header {
        damage.push(finding(0, format!("{reason}; open refuses the folder")));
    }
    if let Ok(h) = &scan.header
        && let Some(r) = scan.records.iter().find(|r| r.header.seq < h.base_seq)
    {
        warnings.push(finding(
            r.offset,
            format!(
                "record seq {} is below the segment's base seq {}",
                r.header.seq, h.base_seq
            ),
        ));
    }
    let first_bad = scan
        .stretches
        .first()
        .map(|s| s.start)
        .into_iter()
        .chain(scan.open_tail)
        .min();
    if let Some(at) = scan.zero_tail
        && !is_active
    {
        damage.push(finding(
            at,
            format!(
                "the segment ends in {} zero bytes (space reserved for appends, never cut \
                 back) but is not the newest log segment; open refuses the folder",
                scan.len - at
            ),
        ));
    }
    if is_active {
        // A zero tail alone is what a crash before sealing leaves; open cuts it quietly.
        let Some(first_bad) = first_bad else { return };
        let intact_after = scan
            .records
            .iter()
            .filter(|r| r.offset > first_bad && r.fate == Fate::Intact)
            .count();
        if intact_after == 0 {
            // What a crash leaves: open cuts it back to the last whole transaction.
            let cut = scan
                .records
                .iter()
                .find(|r| r.fate != Fate::Intact)
                .map_or(first_bad, |r| r.offset.min(first_bad));
            warnings.push(finding(
                cut,
                format!(
                    "torn tail of the newest segment ({} bytes); open cuts it back to the last \
                     whole transaction",
                    scan.len - cut
                ),
            ));
            return;
        }
        for s in &scan.stretches {
            damage.push(finding(
                s.start,
                format!(
                    "{} unreadable bytes ({}) in the newest segment with {intact_after} intact \
                     records after them; open would cut them all",
                    s.end - s.start,
                    s.reason
                ),
            ));
        }
        return;
    }
    for s in &scan.stretches {
        damage.push(finding(
            s.start,
            format!(
                "{} unreadable bytes ({}); open refuses the folder",
                s.end - s.start,
                s.reason
            ),
        ));
    }
    if let Some(at) = scan.open_tail {
        damage.push(finding(
            at,
            "the sealed segment ends inside a transaction that has no commit record; open \
             refuses the folder"
                .into(),
        ));
    }
}

/// Checks one hint against its segment; returns how many entries it holds.
fn check_hint(
    name: &str,
    bytes: &[u8],
    scan: &SegScan,
    segment_damaged: bool,
    damage: &mut Vec<Finding>,
) -> u64 {
    let finding = |offset: u64, reason: String| Finding {
        file: name.to_owned(),
        offset,
        reason,
    };
    let entries = match hint::check(bytes, scan.id, scan.len) {
        Ok(entries) => entries,
        Err(fault) => {
            damage.push(finding(
                fault.offset,
                format!(
                    "{}; open ignores this hint and scans the segment",
                    fault.reason
                ),
            ));
            return 0;
        }
    };
    if segment_damaged {
        // The segment itself is damaged; repair moves its hint aside anyway.
        return entries.len() as u64;
    }
    let by_offset: BTreeMap<u64, &Rec> = scan.records.iter().map(|r| (r.offset, r)).collect();
    let mut seen = BTreeSet::new();
    for &(at, ref entry) in &entries {
        let problem = match by_offset.get(&u64::from(entry.offset)) {
            Some(_) if !seen.insert(entry.offset) => {
                Some(format!("lists the record at offset {} twice", entry.offset))
            }
            None => Some(format!(
                "points at offset {} where no record starts",
                entry.offset
            )),
            Some(r) if r.key.as_slice() != entry.key => Some(format!(
                "key differs from the record at offset {}",
                r.offset
            )),
            Some(r) if r.header.seq != entry.seq => Some(format!(
                "seq {} differs from the record's {} at offset {}",
                entry.seq, r.header.seq, r.offset
            )),
            Some(r) if r.len != u64::from(entry.len) => Some(format!(
                "length {} differs from the record's {} at offset {}",
                entry.len, r.len, r.offset
            )),
            Some(r)
                if r.header.is_tombstone() != entry.tombstone
                    || r.header.expires_at_ms != entry.expires_at_ms =>
            {
                Some(format!(
                    "flags or expiry differ from the record at offset {}",
                    r.offset
                ))
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            damage.push(finding(
                at,
                format!("the entry {problem}; open would trust it: move it aside"),
            ));
        }
    }
    if entries.len() != scan.records.len() {
        damage.push(finding(
            0,
            format!(
                "lists {} records, the segment holds {}; open would trust it and miss records",
                entries.len(),
                scan.records.len()
            ),
        ));
    }
    entries.len() as u64
}

fn push_capped(into: &mut Vec<Finding>, mut found: Vec<Finding>) {
    if found.len() > FINDINGS_PER_FILE_MAX {
        let more = found.len() - FINDINGS_PER_FILE_MAX;
        found.truncate(FINDINGS_PER_FILE_MAX);
        if let Some(last) = found.last().cloned() {
            found.push(Finding {
                reason: format!("and {more} more problems in this file"),
                ..last
            });
        }
    }
    into.extend(found);
}

fn parse_hint_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".hint")?;
    if stem.len() != 10 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn map_file(path: &Path) -> Result<Mmap> {
    let context = || format!("reading {}", path.display());
    let file = File::open(path).map_err(|e| Error::io(context(), e))?;
    // SAFETY: the folder's lock is held for the whole verify or repair, so no caskade
    // process writes or truncates this file while it is mapped; segments are only
    // appended to by an open engine, which the lock excludes.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(context(), e))
}

/// What repair will do.
struct Plan {
    segments: BTreeSet<u32>,
    /// Hints, stubs and a damaged manifest to move aside as they are.
    other_files: Vec<String>,
    needs_new_log: bool,
}

impl Plan {
    fn of(survey: &Survey) -> Plan {
        let segments = survey.damaged_segments.clone();
        let mut other_files: Vec<String> = segments
            .iter()
            .chain(survey.damaged_hints.iter())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|&id| hint::file_name(id))
            .filter(|name| survey.report.dir.join(name).exists())
            .collect();
        other_files.extend(survey.stubs.iter().cloned());
        other_files.extend(survey.newest_stub.iter().cloned());
        if survey.manifest_damaged {
            other_files.push(MANIFEST.to_owned());
        }
        // The log segment open would append to goes aside when it is damaged, or when a
        // damaged segment that may be a newer log (unreadable header) does.
        let kept_log = survey
            .scans
            .iter()
            .filter(|s| !segments.contains(&s.id))
            .filter(|s| matches!(&s.header, Ok(h) if h.kind == Kind::Log))
            .max_by_key(|s| s.id);
        let moved_newer_log = survey
            .scans
            .iter()
            .filter(|s| segments.contains(&s.id) && s.is_log_or_unknown())
            .any(|s| kept_log.is_none_or(|k| s.id > k.id));
        // A new log segment would seal the kept one; a torn tail there is cut only while
        // it is the newest, so then the kept one stays the active segment.
        let kept_log_torn = kept_log.is_some_and(|k| {
            !k.stretches.is_empty() || k.open_tail.is_some() || k.zero_tail.is_some()
        });
        let needs_new_log = moved_newer_log && !kept_log_torn;
        Plan {
            segments,
            other_files,
            needs_new_log,
        }
    }

    fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.other_files.is_empty()
    }
}

/// Writes the intact records of `scan` into a new compacted segment `id`, durably;
/// returns its name, or `None` when there is nothing to carry over.
fn salvage(dir: &Path, scan: &SegScan, id: u32) -> Result<Option<String>> {
    let intact: Vec<&Rec> = scan
        .records
        .iter()
        .filter(|r| r.fate == Fate::Intact)
        .collect();
    let Some(base_seq) = intact.iter().map(|r| r.header.seq).min() else {
        return Ok(None);
    };
    let src = map_file(&dir.join(&scan.name))?;
    let mut buf = Vec::new();
    for r in &intact {
        let start = buf.len();
        let (from, to) = (r.offset as usize, (r.offset + r.len) as usize);
        buf.extend_from_slice(&src[from..to]);
        // Each salvaged record is a committed transaction of its own, as in compaction.
        buf[start + 5] |= FLAG_COMMIT;
        let crc = crc32fast::hash(&buf[start + 4..]);
        buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let name = segment::file_name(id);
    let tmp = dir.join(format!("{name}.tmp"));
    let header = SegmentHeader {
        base_seq,
        kind: Kind::Compacted,
    };
    let file = segment::create_at(&tmp, id, header)?;
    let written = file
        .write_all_at(&buf, SEGMENT_HEADER_BYTES)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, dir.join(&name)));
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("writing the salvaged segment {name}"), e));
    }
    sync_dir(dir)?;
    Ok(Some(name))
}

/// Creates `dir/damaged-<UTC time>/` (with a suffix if that exists already).
fn make_damaged_dir(dir: &Path) -> Result<PathBuf> {
    let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    for n in 0..100u32 {
        let name = if n == 0 {
            format!("damaged-{stamp}")
        } else {
            format!("damaged-{stamp}-{n}")
        };
        let path = dir.join(name);
        match std::fs::create_dir(&path) {
            Ok(()) => {
                sync_dir(dir)?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("creating the folder for damaged files", e)),
        }
    }
    Err(Error::io(
        "creating the folder for damaged files",
        std::io::Error::other("too many damaged-* folders with the same time"),
    ))
}

/// Moves `name` from `dir` into `to` durably (both folders synced).
fn move_aside(dir: &Path, to: &Path, name: &str) -> Result<()> {
    std::fs::rename(dir.join(name), to.join(name))
        .map_err(|e| Error::io(format!("moving {name} aside"), e))?;
    File::open(to)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing the folder for damaged files", e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordRef;
    use crate::{Engine, Options, WriteOptions};

    fn header(id: u32, kind: Kind, base_seq: u64) -> Vec<u8> {
        segment::encode_header(id, SegmentHeader { base_seq, kind }).to_vec()
    }

    /// Appends one record in the current format; returns its offset.
    fn rec(out: &mut Vec<u8>, seq: u64, key: &str, commit: bool) -> usize {
        rec_in(out, seq, key, commit, false)
    }

    /// Appends one record, in format version 1 if `v1`; returns its offset.
    fn rec_in(out: &mut Vec<u8>, seq: u64, key: &str, commit: bool, v1: bool) -> usize {
        let at = out.len();
        let value = format!("value of {key}");
        let r = RecordRef {
            flags: if commit { FLAG_COMMIT } else { 0 },
            seq,
            written_at_ms: 1_000,
            expires_at_ms: 0,
            key: key.as_bytes(),
            meta: b"",
            value: value.as_bytes(),
        };
        if v1 {
            record::encode_v1(&r, out);
        } else {
            record::encode(&r, out);
        }
        at
    }

    /// Offset of the low byte of length field `field` (0 key, 1 meta, 2 value) of the
    /// intact record at `at` (in version 2, lengths below 128 take one byte).
    pub(super) fn len_byte(seg: &[u8], at: usize, field: usize) -> usize {
        let h = record::decode(&seg[at..]).expect("an intact record");
        if h.version == record::RECORD_FORMAT_V1 {
            at + 32 + 4 * field
        } else {
            assert!(h.key_len < 128 && h.meta_len < 128 && h.value_len < 128);
            at + usize::from(h.header_len) - 3 + field
        }
    }

    /// Offset of the second value byte of the intact record at `at`.
    pub(super) fn value_byte(seg: &[u8], at: usize) -> usize {
        let h = record::decode(&seg[at..]).expect("an intact record");
        at + h.value_range().start + 1
    }

    fn scan(id: u32, bytes: &[u8]) -> SegScan {
        scan_segment(id, bytes, 0, 0, &mut |_, _| {})
    }

    fn fates(scan: &SegScan) -> Vec<(String, Fate)> {
        scan.records
            .iter()
            .map(|r| (String::from_utf8_lossy(&r.key).into_owned(), r.fate))
            .collect()
    }

    fn keys_with(scan: &SegScan, fate: Fate) -> Vec<String> {
        fates(scan)
            .into_iter()
            .filter(|(_, f)| *f == fate)
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn a_flipped_header_byte_at_offset_0_keeps_every_record() {
        let mut seg = header(1, Kind::Log, 1);
        rec(&mut seg, 1, "a", true);
        rec(&mut seg, 2, "b", true);
        seg[0] ^= 0xff;
        let s = scan(1, &seg);
        assert!(s.header.is_err());
        assert!(s.stretches.is_empty(), "records are framed from offset 32");
        assert_eq!(keys_with(&s, Fate::Intact), ["a", "b"]);
    }

    #[test]
    fn damage_in_the_first_record_loses_only_that_record() {
        let mut seg = header(1, Kind::Log, 1);
        let a = rec(&mut seg, 1, "a", true);
        rec(&mut seg, 2, "b", true);
        rec(&mut seg, 3, "c", true);
        assert_eq!(a, 32);
        let at = value_byte(&seg, a);
        seg[at] ^= 0x01;
        let s = scan(1, &seg);
        assert_eq!(s.stretches.len(), 1);
        assert_eq!(s.stretches[0].start, 32);
        assert_eq!(keys_with(&s, Fate::Intact), ["b", "c"]);
        assert!(s.open_tail.is_none());
    }

    #[test]
    fn a_batch_cut_in_half_is_not_applied_at_all() {
        let mut seg = header(1, Kind::Log, 1);
        rec(&mut seg, 1, "x", true);
        rec(&mut seg, 2, "p", false);
        let hit = rec(&mut seg, 3, "q", false);
        rec(&mut seg, 4, "r", true);
        rec(&mut seg, 5, "y", true);
        let at = value_byte(&seg, hit);
        seg[at] ^= 0x01;
        let s = scan(1, &seg);
        assert_eq!(keys_with(&s, Fate::Intact), ["x", "y"]);
        assert_eq!(keys_with(&s, Fate::Cut), ["p"]);
        assert_eq!(keys_with(&s, Fate::Unsure), ["r"]);
    }

    #[test]
    fn a_damaged_length_field_is_recognised_by_the_crc_and_loses_only_its_record() {
        // Each length field, in both record formats; in version 2 also with the
        // varint's continuation bit set, which stops the header from decoding at all.
        for v1 in [false, true] {
            for field in 0..3 {
                for bit in [0x10, 0x80] {
                    let mut seg = header(1, Kind::Log, 1);
                    let hit = rec_in(&mut seg, 1, "a", true, v1);
                    rec_in(&mut seg, 2, "b", true, v1);
                    rec_in(&mut seg, 3, "c", true, v1);
                    // Rewriting the hit length so "a" ends where "b" starts makes its
                    // CRC check, so "a"'s extent and COMMIT bit are known and "b" is
                    // whole.
                    let at = len_byte(&seg, hit, field);
                    seg[at] ^= bit;
                    let s = scan(1, &seg);
                    let case = format!("v1 {v1}, field {field}, bit {bit:#x}");
                    assert_eq!(s.stretches.len(), 1, "{case}");
                    assert!(keys_with(&s, Fate::Unsure).is_empty(), "{case}");
                    assert_eq!(keys_with(&s, Fate::Intact), ["b", "c"], "{case}");
                }
            }
        }
    }

    /// Scans a segment of `kind` holding committed records "a", "b", "c" whose first
    /// has its key length and a value byte hit: no length rewrite makes its CRC check,
    /// so its extent is unknown.
    fn scan_after_damage_of_unknown_length(kind: Kind, v1: bool) -> SegScan {
        let mut seg = header(1, kind, 1);
        let hit = rec_in(&mut seg, 1, "a", true, v1);
        rec_in(&mut seg, 2, "b", true, v1);
        rec_in(&mut seg, 3, "c", true, v1);
        let (key_len, value) = (len_byte(&seg, hit, 0), value_byte(&seg, hit));
        seg[key_len] ^= 0x10;
        seg[value] ^= 0x01;
        scan(1, &seg)
    }

    #[test]
    fn records_after_damage_of_unknown_length_wait_for_a_known_boundary() {
        for v1 in [false, true] {
            // "b" may be the rest of a batch that "a" started.
            let s = scan_after_damage_of_unknown_length(Kind::Log, v1);
            assert_eq!(s.stretches.len(), 1, "v1 {v1}");
            assert_eq!(keys_with(&s, Fate::Unsure), ["b"], "v1 {v1}");
            assert_eq!(keys_with(&s, Fate::Intact), ["c"], "v1 {v1}");
        }
    }

    #[test]
    fn in_a_compacted_segment_every_intact_record_is_kept() {
        for v1 in [false, true] {
            // As in a log segment, the damaged record's extent is unknown; but every
            // record of a compacted segment is a transaction of its own, so "b" is not
            // the rest of anything.
            let s = scan_after_damage_of_unknown_length(Kind::Compacted, v1);
            assert_eq!(s.stretches.len(), 1, "v1 {v1}");
            assert_eq!(keys_with(&s, Fate::Intact), ["b", "c"], "v1 {v1}");
        }
    }

    #[test]
    fn a_flipped_commit_bit_is_recognised_by_the_crc() {
        let mut seg = header(1, Kind::Log, 1);
        let hit = rec(&mut seg, 1, "p", false);
        rec(&mut seg, 2, "q", true);
        rec(&mut seg, 3, "y", true);
        // "p" claims to end its transaction, but its CRC says that bit was flipped:
        // "q" is the rest of its batch.
        seg[hit + 5] ^= FLAG_COMMIT;
        let s = scan(1, &seg);
        assert_eq!(keys_with(&s, Fate::Unsure), ["q"]);
        assert_eq!(keys_with(&s, Fate::Intact), ["y"]);
    }

    #[test]
    fn a_sealed_segment_ending_inside_a_transaction_is_damage() {
        let mut seg = header(1, Kind::Log, 1);
        rec(&mut seg, 1, "a", true);
        let open = rec(&mut seg, 2, "b", false);
        let s = scan(1, &seg);
        assert_eq!(s.open_tail, Some(open as u64));
        let (mut damage, mut warnings) = (Vec::new(), Vec::new());
        judge_segment(&s, false, &mut damage, &mut warnings);
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert_eq!(damage[0].offset, open as u64);
        let (mut damage, mut warnings) = (Vec::new(), Vec::new());
        judge_segment(&s, true, &mut damage, &mut warnings);
        assert!(
            damage.is_empty(),
            "a torn tail of the newest segment: {damage:?}"
        );
        assert_eq!(warnings.len(), 1);
    }

    /// A folder with sealed log segment 1 (five one-record transactions) and an empty
    /// active segment 2; returns the offset of each record of segment 1.
    fn folder(dir: &Path) -> Vec<usize> {
        let mut seg = header(1, Kind::Log, 1);
        let offsets = (1..=5)
            .map(|i| rec(&mut seg, i, &format!("k{i}"), true))
            .collect();
        std::fs::write(dir.join(segment::file_name(1)), &seg).expect("write segment 1");
        std::fs::write(dir.join(segment::file_name(2)), header(2, Kind::Log, 6))
            .expect("write segment 2");
        offsets
    }

    fn flip(path: &Path, at: usize) {
        let mut bytes = std::fs::read(path).expect("read");
        bytes[at] ^= 0x01;
        std::fs::write(path, bytes).expect("write");
    }

    #[test]
    fn repair_salvages_around_damage_and_the_folder_opens_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let offsets = folder(dir.path());
        // The value of k3 (keys are two bytes here).
        let seg = std::fs::read(dir.path().join("0000000001.seg")).expect("read");
        flip(
            &dir.path().join("0000000001.seg"),
            value_byte(&seg, offsets[2]) + 1,
        );
        let err = Engine::open(dir.path(), Options::default()).expect_err("open refuses");
        assert!(matches!(err, Error::Corrupt { offset, .. } if offset == offsets[2] as u64));

        let report = verify(dir.path(), &mut |_, _| {}).expect("verify runs");
        assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
        assert_eq!(report.damage[0].file, "0000000001.seg");
        assert_eq!(report.damage[0].offset, offsets[2] as u64);

        let repaired = repair(dir.path(), &mut |_, _| {}).expect("repair runs");
        assert!(repaired.after.is_clean(), "{:?}", repaired.after.damage);
        assert_eq!(repaired.salvaged.len(), 1);
        assert_eq!(repaired.salvaged[0].records_salvaged, 4);
        let aside = repaired.damaged_dir.expect("a damaged folder");
        assert!(aside.join("0000000001.seg").exists());
        assert!(!dir.path().join("0000000001.seg").exists());

        let engine = Engine::open(dir.path(), Options::default()).expect("open after repair");
        for (i, key) in ["k1", "k2", "k3", "k4", "k5"].iter().enumerate() {
            let got = engine.get(key.as_bytes()).expect("get");
            if i == 2 {
                assert!(got.is_none(), "the damaged record is gone");
            } else {
                let got = got.unwrap_or_else(|| panic!("{key} was salvaged"));
                assert_eq!(got.version, i as u64 + 1, "versions are kept");
            }
        }
        let v = engine
            .put("k6", "new", WriteOptions::default())
            .expect("writes work after repair");
        assert!(v > 5, "versions keep growing: {v}");
        engine.close().expect("close");
    }

    #[test]
    fn damage_in_the_newest_segment_moves_the_active_segment_and_versions_keep_growing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut seg = header(1, Kind::Log, 1);
        let offsets: Vec<usize> = (1..=4)
            .map(|i| rec(&mut seg, i, &format!("k{i}"), true))
            .collect();
        let at = value_byte(&seg, offsets[1]) + 1;
        seg[at] ^= 0x01;
        std::fs::write(dir.path().join(segment::file_name(1)), &seg).expect("write");
        let report = verify(dir.path(), &mut |_, _| {}).expect("verify");
        assert_eq!(report.damage.len(), 1, "intact records follow: {report:?}");

        let repaired = repair(dir.path(), &mut |_, _| {}).expect("repair");
        assert!(repaired.after.is_clean(), "{:?}", repaired.after);
        assert_eq!(
            repaired.created.len(),
            2,
            "salvage and a fresh log: {repaired:?}"
        );
        let engine = Engine::open(dir.path(), Options::default()).expect("open");
        assert!(engine.get(b"k2").expect("get").is_none());
        for key in ["k1", "k3", "k4"] {
            assert!(engine.get(key.as_bytes()).expect("get").is_some(), "{key}");
        }
        let v = engine.put("k5", "v", WriteOptions::default()).expect("put");
        assert!(v > 4, "version {v} must be above every version seen");
        engine.close().expect("close");
    }

    #[test]
    fn a_torn_tail_of_the_newest_segment_is_a_warning() {
        let dir = tempfile::tempdir().expect("temp dir");
        folder(dir.path());
        let path = dir.path().join(segment::file_name(2));
        let mut seg = std::fs::read(&path).expect("read");
        rec(&mut seg, 6, "t", true);
        seg.truncate(seg.len() - 3);
        std::fs::write(&path, seg).expect("write");
        let report = verify(dir.path(), &mut |_, _| {}).expect("verify");
        assert!(report.is_clean(), "{:?}", report.damage);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert_eq!(report.warnings[0].file, "0000000002.seg");
        assert_eq!(report.warnings[0].offset, SEGMENT_HEADER_BYTES);
        let repaired = repair(dir.path(), &mut |_, _| {}).expect("repair");
        assert!(repaired.damaged_dir.is_none(), "nothing to repair");
    }

    #[test]
    fn a_torn_active_segment_stays_active_when_a_newer_unreadable_one_goes_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        folder(dir.path());
        // Segment 2 (the active log) ends torn; segment 3's header is unreadable.
        let path = dir.path().join(segment::file_name(2));
        let mut seg = std::fs::read(&path).expect("read");
        rec(&mut seg, 6, "t", true);
        seg.truncate(seg.len() - 3);
        std::fs::write(&path, seg).expect("write");
        let mut seg = header(3, Kind::Compacted, 1);
        rec(&mut seg, 2, "k2", true);
        seg[0] ^= 0xff;
        std::fs::write(dir.path().join(segment::file_name(3)), seg).expect("write");

        let repaired = repair(dir.path(), &mut |_, _| {}).expect("repair");
        assert_eq!(
            repaired.created,
            ["0000000004.seg"],
            "no new log: {repaired:?}"
        );
        assert!(repaired.after.is_clean(), "{:?}", repaired.after);
        let engine = Engine::open(dir.path(), Options::default()).expect("open");
        assert!(engine.get(b"k2").expect("get").is_some());
        assert!(
            engine.get(b"t").expect("get").is_none(),
            "the torn record was cut"
        );
        engine.close().expect("close");
    }

    #[test]
    fn a_hint_that_lies_about_its_segment_is_damage_and_goes_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        folder(dir.path());
        let seg = std::fs::read(dir.path().join(segment::file_name(1))).expect("read");
        let mut entries = hint::entries_of(Path::new("x"), &seg).expect("entries");
        entries[1].tombstone = true;
        hint::write(dir.path(), 1, seg.len() as u64, &entries).expect("hint");
        let report = verify(dir.path(), &mut |_, _| {}).expect("verify");
        assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
        assert_eq!(report.damage[0].file, "0000000001.hint");
        let hint_bytes = std::fs::read(dir.path().join("0000000001.hint")).expect("hint");
        let lying_at = hint::check(&hint_bytes, 1, seg.len() as u64)
            .expect("the hint checks by itself")
            .into_iter()
            .find(|(_, e)| e.offset == entries[1].offset)
            .map(|(at, _)| at);
        assert_eq!(
            Some(report.damage[0].offset),
            lying_at,
            "the lying entry's offset"
        );
        let repaired = repair(dir.path(), &mut |_, _| {}).expect("repair");
        assert_eq!(repaired.moved, ["0000000001.hint"]);
        assert!(repaired.after.is_clean());
        assert!(
            dir.path().join("0000000001.seg").exists(),
            "the segment stays"
        );
    }

    #[test]
    fn verify_and_repair_refuse_a_folder_an_engine_has_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(dir.path(), Options::default()).expect("open");
        let err = verify(dir.path(), &mut |_, _| {}).expect_err("locked");
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        let err = repair(dir.path(), &mut |_, _| {}).expect_err("locked");
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        engine.close().expect("close");
        assert!(
            verify(dir.path(), &mut |_, _| {})
                .expect("unlocked")
                .is_clean()
        );
    }

    #[test]
    fn a_folder_without_segments_is_not_a_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = verify(dir.path(), &mut |_, _| {}).expect_err("empty");
        assert!(matches!(err, Error::NotAStore { .. }), "{err}");
        assert!(!dir.path().join("LOCK").exists(), "verify created nothing");
        let err = verify(&dir.path().join("missing"), &mut |_, _| {}).expect_err("missing");
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}

#[cfg(test)]
/// Damage cases found in review: each failed before its fix.
mod review_findings {
    use super::*;
    use crate::hint::HintEntry;
    use crate::record::{FLAG_TOMBSTONE, RecordRef};
    use crate::{Engine, Options};
    use tests::{len_byte, value_byte};

    fn header(id: u32, kind: Kind, base_seq: u64) -> Vec<u8> {
        segment::encode_header(id, SegmentHeader { base_seq, kind }).to_vec()
    }

    fn put(out: &mut Vec<u8>, flags: u8, seq: u64, key: &[u8], value: &[u8]) -> usize {
        put_in(out, flags, seq, key, value, false)
    }

    /// Appends a record, in format version 1 if `v1`; returns its offset.
    fn put_in(out: &mut Vec<u8>, flags: u8, seq: u64, key: &[u8], value: &[u8], v1: bool) -> usize {
        let at = out.len();
        let r = RecordRef {
            flags,
            seq,
            written_at_ms: 1_000,
            expires_at_ms: 0,
            key,
            meta: b"",
            value,
        };
        if v1 {
            record::encode_v1(&r, out);
        } else {
            record::encode(&r, out);
        }
        at
    }

    // Version 1: 44 + 20 = 64-byte tombstone, 44 + 1 + 19 = 64-byte record.
    // Version 2 (12-byte headers here): 32 bytes each.
    const K20: &[u8] = b"kkkkkkkkkkkkkkkkkkkk";
    const V19: &[u8] = b"nineteen-byte-value";

    /// A one-bit flip in the value-length field of a record makes its length cover the
    /// next (equal-sized) record too. Trusting that length skipped the intact record in
    /// between — here a tombstone, so the deleted key came back after repair; the CRC
    /// now pins the true length.
    #[test]
    fn a_flipped_length_bit_does_not_skip_an_intact_tombstone() {
        for v1 in [false, true] {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut s1 = header(1, Kind::Log, 1);
            put_in(&mut s1, FLAG_COMMIT, 1, K20, b"old value", v1);
            let mut s2 = header(2, Kind::Log, 2);
            let x = put_in(&mut s2, FLAG_COMMIT, 2, b"x", V19, v1);
            let t = put_in(&mut s2, FLAG_COMMIT | FLAG_TOMBSTONE, 3, K20, b"", v1);
            put_in(&mut s2, FLAG_COMMIT, 4, b"y", V19, v1);
            assert_eq!(t - x, if v1 { 64 } else { 32 });
            // value_len 19 -> 19 + (t - x): the record now "ends" where y starts.
            let at = len_byte(&s2, x, 2);
            s2[at] ^= (t - x) as u8;
            std::fs::write(dir.path().join(segment::file_name(1)), &s1).expect("test file I/O");
            std::fs::write(dir.path().join(segment::file_name(2)), &s2).expect("test file I/O");
            std::fs::write(
                dir.path().join(segment::file_name(3)),
                header(3, Kind::Log, 5),
            )
            .expect("test file I/O");

            let repaired = repair(dir.path(), &mut |_, _| {}).expect("repair");
            assert!(repaired.after.is_clean());
            let engine = Engine::open(dir.path(), Options::default()).expect("open");
            let got = engine.get(K20).expect("get");
            assert!(
                got.is_none(),
                "v1 {v1}: the key was deleted (intact tombstone seq 3) but repair brought back {:?}",
                got.map(|e| (e.version, e.value))
            );
            engine.close().expect("close");
        }
    }

    /// The same flip inside a batch: [p COMMIT (damaged length covers q)] [q] [r COMMIT].
    /// Skipping q salvaged r alone, half a batch; now q and r are both kept.
    #[test]
    fn a_flipped_length_bit_does_not_make_half_a_batch_visible() {
        for v1 in [false, true] {
            let mut seg = header(1, Kind::Log, 1);
            let p = put_in(&mut seg, FLAG_COMMIT, 1, b"p", V19, v1);
            let q = put_in(&mut seg, 0, 2, b"q", V19, v1);
            put_in(&mut seg, FLAG_COMMIT, 3, b"r", V19, v1);
            let at = len_byte(&seg, p, 2);
            seg[at] ^= (q - p) as u8;
            let s = scan_segment(1, &seg, 0, 0, &mut |_, _| {});
            let fates: Vec<(Vec<u8>, Fate)> =
                s.records.iter().map(|r| (r.key.clone(), r.fate)).collect();
            let intact = |key: &[u8]| fates.iter().any(|(k, f)| k == key && *f == Fate::Intact);
            assert!(
                !intact(b"r") || intact(b"q"),
                "v1 {v1}: r is salvaged without q, the rest of its batch: {fates:?}"
            );
            assert!(
                intact(b"q") && intact(b"r"),
                "v1 {v1}: the length is known from the CRC"
            );
        }
    }

    /// A hint listing one record twice and another not at all passed verify's count
    /// and per-entry checks, and open trusted it (the omitted tombstone was lost).
    #[test]
    fn a_hint_with_a_duplicate_entry_is_damage() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s1 = header(1, Kind::Log, 1);
        put(&mut s1, FLAG_COMMIT, 1, b"k", b"old value");
        let mut s2 = header(2, Kind::Log, 2);
        let t = put(&mut s2, FLAG_COMMIT | FLAG_TOMBSTONE, 2, b"k", b"");
        let z = put(&mut s2, FLAG_COMMIT, 3, b"z", b"zz");
        std::fs::write(dir.path().join(segment::file_name(1)), &s1).expect("test file I/O");
        std::fs::write(dir.path().join(segment::file_name(2)), &s2).expect("test file I/O");
        std::fs::write(
            dir.path().join(segment::file_name(3)),
            header(3, Kind::Log, 4),
        )
        .expect("test file I/O");
        let _ = t;
        let ze = HintEntry {
            tombstone: false,
            seq: 3,
            expires_at_ms: 0,
            offset: z as u32,
            len: (s2.len() - z) as u32,
            key: b"z".to_vec(),
        };
        // Only formats 1 and 2 can list a record twice (format 3's encoder refuses).
        assert!(hint::encode(2, s2.len() as u64, &[ze.clone(), ze.clone()]).is_err());
        let dup = [ze.clone(), ze];
        for (version, encode) in [
            (
                2,
                hint::encode_v2::<Vec<u8>> as fn(u32, u64, &[HintEntry]) -> Vec<u8>,
            ),
            (1, hint::encode_v1::<Vec<u8>>),
        ] {
            let bytes = encode(2, s2.len() as u64, &dup);
            std::fs::write(dir.path().join(hint::file_name(2)), bytes).expect("test file I/O");
            let report = verify(dir.path(), &mut |_, _| {}).expect("verify");
            assert!(
                !report.is_clean(),
                "verify calls a version {version} hint that omits the tombstone clean: \
                 {report:?}"
            );
        }
    }

    #[test]
    fn a_hint_with_a_duplicate_entry_is_not_trusted_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s1 = header(1, Kind::Log, 1);
        put(&mut s1, FLAG_COMMIT, 1, b"k", b"old value");
        let mut s2 = header(2, Kind::Log, 2);
        put(&mut s2, FLAG_COMMIT | FLAG_TOMBSTONE, 2, b"k", b"");
        let z = put(&mut s2, FLAG_COMMIT, 3, b"z", b"zz");
        std::fs::write(dir.path().join(segment::file_name(1)), &s1).expect("test file I/O");
        std::fs::write(dir.path().join(segment::file_name(2)), &s2).expect("test file I/O");
        std::fs::write(
            dir.path().join(segment::file_name(3)),
            header(3, Kind::Log, 4),
        )
        .expect("test file I/O");
        let ze = HintEntry {
            tombstone: false,
            seq: 3,
            expires_at_ms: 0,
            offset: z as u32,
            len: (s2.len() - z) as u32,
            key: b"z".to_vec(),
        };
        let dup = [ze.clone(), ze];
        for (version, encode) in [
            (
                2,
                hint::encode_v2::<Vec<u8>> as fn(u32, u64, &[HintEntry]) -> Vec<u8>,
            ),
            (1, hint::encode_v1::<Vec<u8>>),
        ] {
            let bytes = encode(2, s2.len() as u64, &dup);
            std::fs::write(dir.path().join(hint::file_name(2)), bytes).expect("test file I/O");
            let engine = Engine::open(dir.path(), Options::default()).expect("open");
            assert!(
                engine.get(b"k").expect("get").is_none(),
                "deleted key is back with a version {version} hint"
            );
            assert_eq!(engine.stats().hints_loaded, 0, "version {version}");
            engine.close().expect("close");
        }
    }

    /// A crash (no fsync) can persist a later page of a batch but not an earlier one:
    /// [a COMMIT][zeros where p was][q COMMIT]. Open cuts p..q (the batch was never
    /// acknowledged), exactly what repair would keep, so it is a torn tail, not damage
    /// (an unsure record after the bad spot does not count as intact).
    #[test]
    fn a_crash_tail_with_an_unsure_record_after_zeros_is_only_a_warning() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s1 = header(1, Kind::Log, 1);
        put(&mut s1, FLAG_COMMIT, 1, b"a", b"va");
        let p = put(&mut s1, 0, 2, b"p", b"vp");
        let q = put(&mut s1, FLAG_COMMIT, 3, b"q", b"vq");
        for b in &mut s1[p..q] {
            *b = 0;
        }
        std::fs::write(dir.path().join(segment::file_name(1)), &s1).expect("test file I/O");
        let report = verify(dir.path(), &mut |_, _| {}).expect("verify");
        assert!(report.is_clean(), "{:?}", report.damage);
    }

    /// Zeros the writer reserved past its last append end the newest log segment after
    /// a crash: no finding, open cuts them quietly. The same zeros at the end of a
    /// sealed log segment are damage (open refuses it), and an unaligned zero tail of
    /// the newest one stays a torn tail.
    #[test]
    fn a_preallocated_zero_tail_is_no_finding_only_in_the_newest_log_segment() {
        use crate::append::PREALLOC_ALIGN;
        let with_zeros = |id: u32, len: usize| {
            let mut s = header(id, Kind::Log, u64::from(id) * 10);
            put(&mut s, FLAG_COMMIT, u64::from(id) * 10, b"a", b"va");
            let written = s.len();
            s.resize(len, 0);
            (s, written)
        };
        let aligned = 2 * PREALLOC_ALIGN as usize;

        let dir = tempfile::tempdir().expect("temp dir");
        let (s1, _) = with_zeros(1, aligned);
        std::fs::write(dir.path().join(segment::file_name(1)), &s1).expect("test file I/O");
        let report = verify(dir.path(), &mut |_, _| {}).expect("verify");
        assert!(report.is_clean(), "{:?}", report.damage);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);

        // The same tail one byte short of the alignment: a torn write, warned.
        let (s1, written) = with_zeros(1, aligned - 1);
        std::fs::write(dir.path().join(segment::file_name(1)), &s1).expect("test file I/O");
        let report = verify(dir.path(), &mut |_, _| {}).expect("verify");
        assert!(report.is_clean(), "{:?}", report.damage);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert_eq!(report.warnings[0].offset, written as u64);

        // Segment 1 with its zero tail, sealed by a newer log segment 2: damage.
        let (s1, written) = with_zeros(1, aligned);
        std::fs::write(dir.path().join(segment::file_name(1)), &s1).expect("test file I/O");
        let (s2, _) = with_zeros(2, aligned);
        std::fs::write(dir.path().join(segment::file_name(2)), &s2).expect("test file I/O");
        let report = verify(dir.path(), &mut |_, _| {}).expect("verify");
        assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
        assert_eq!(report.damage[0].file, segment::file_name(1));
        assert_eq!(report.damage[0].offset, written as u64);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert!(
            matches!(
                crate::Engine::open(dir.path(), crate::Options::default()),
                Err(Error::Corrupt { .. })
            ),
            "open refuses a sealed segment with a zero tail, as verify says"
        );
    }

    /// A newest segment shorter than a header is a warning; but once repair creates a
    /// salvaged segment with a higher id, the stub is no longer the newest file and open
    /// would refuse the folder, so repair moves the stub aside too.
    #[test]
    fn repair_moves_a_newest_stub_aside_with_the_damage() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s1 = header(1, Kind::Log, 1);
        let a = put(&mut s1, FLAG_COMMIT, 1, b"a", b"va");
        put(&mut s1, FLAG_COMMIT, 2, b"b", b"vb");
        let at = value_byte(&s1, a);
        s1[at] ^= 1;
        std::fs::write(dir.path().join(segment::file_name(1)), &s1).expect("test file I/O");
        std::fs::write(
            dir.path().join(segment::file_name(2)),
            header(2, Kind::Log, 3),
        )
        .expect("test file I/O");
        std::fs::write(dir.path().join(segment::file_name(3)), [0u8; 5]).expect("test file I/O");
        let before = verify(dir.path(), &mut |_, _| {}).expect("verify");
        assert_eq!(before.damage.len(), 1, "{before:?}");
        let repaired = repair(dir.path(), &mut |_, _| {}).expect("repair");
        assert!(
            repaired.after.is_clean(),
            "after repair: {:?}",
            repaired.after.damage
        );
        Engine::open(dir.path(), Options::default()).expect("open after repair");
    }

    /// A crash mid-batch leaves whole records of an uncommitted batch at the end of
    /// the active segment: open cuts them, and verify says so with the torn-tail
    /// warning.
    #[test]
    fn an_uncommitted_tail_of_whole_records_gets_the_torn_tail_warning() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s1 = header(1, Kind::Log, 1);
        put(&mut s1, FLAG_COMMIT, 1, b"a", b"va");
        put(&mut s1, 0, 2, b"b", b"vb");
        put(&mut s1, 0, 3, b"c", b"vc");
        std::fs::write(dir.path().join(segment::file_name(1)), &s1).expect("test file I/O");
        let report = verify(dir.path(), &mut |_, _| {}).expect("verify");
        assert!(report.is_clean());
        assert_eq!(report.warnings.len(), 1, "{report:?}");
    }
}

#[cfg(test)]
/// Damage before a version 2 record's length fields moves where they are read; the
/// header may still decode, to an extent that ends on an intact record further on.
mod shifted_lengths {
    use super::*;
    use crate::record::{FLAG_EXPIRES, FLAG_TOMBSTONE, RecordRef};
    use crate::{Engine, Options};

    fn header(id: u32, kind: Kind, base_seq: u64) -> Vec<u8> {
        segment::encode_header(id, SegmentHeader { base_seq, kind }).to_vec()
    }

    /// Appends a record; returns its offset.
    fn put(out: &mut Vec<u8>, flags: u8, seq: u64, key: &[u8], meta: &[u8], value: &[u8]) -> usize {
        let at = out.len();
        record::encode(
            &RecordRef {
                flags,
                seq,
                written_at_ms: 1_000,
                expires_at_ms: 0,
                key,
                meta,
                value,
            },
            out,
        );
        at
    }

    /// An 85-byte key: its tombstone is 97 bytes, so with `x`'s `EXPIRES` bit flipped,
    /// `x`'s lengths are read one field later and its extent ends right after it.
    const K85: [u8; 85] = [b'k'; 85];

    /// Segment 2 of a folder: `x` (meta "m"), the tombstone of `K85` (seq 3), `y`;
    /// returns the segment and the offset of `x` and of the tombstone.
    fn x_tombstone_y() -> (Vec<u8>, usize, usize) {
        let mut s2 = header(2, Kind::Log, 2);
        let x = put(&mut s2, FLAG_COMMIT, 2, b"a", b"m", b"x");
        let t = put(&mut s2, FLAG_COMMIT | FLAG_TOMBSTONE, 3, &K85, b"", b"");
        let y = put(&mut s2, FLAG_COMMIT, 4, b"y", b"", b"vy");
        assert_eq!(y - t, 97, "the tombstone is 97 bytes");
        let mut flipped = s2.clone();
        flipped[x + 5] ^= FLAG_EXPIRES;
        let h = record::decode_header(&flipped[x..]).expect("the flipped header decodes");
        assert_eq!(x + h.record_len(), y, "its extent ends where y starts");
        (s2, x, t)
    }

    /// Segment 1 holds `K85` = "old value"; segment 2 `s2`; segment 3 is an empty log.
    fn folder(dir: &Path, s2: &[u8]) {
        let mut s1 = header(1, Kind::Log, 1);
        put(&mut s1, FLAG_COMMIT, 1, &K85, b"", b"old value");
        std::fs::write(dir.join(segment::file_name(1)), &s1).expect("test file I/O");
        std::fs::write(dir.join(segment::file_name(2)), s2).expect("test file I/O");
        std::fs::write(dir.join(segment::file_name(3)), header(3, Kind::Log, 5))
            .expect("test file I/O");
    }

    #[test]
    fn a_flipped_expires_bit_does_not_make_repair_drop_an_intact_tombstone() {
        let (mut s2, x, _) = x_tombstone_y();
        s2[x + 5] ^= FLAG_EXPIRES;
        let dir = tempfile::tempdir().expect("temp dir");
        folder(dir.path(), &s2);
        let repaired = repair(dir.path(), &mut |_, _| {}).expect("repair");
        assert!(repaired.after.is_clean(), "{:?}", repaired.after);
        assert_eq!(repaired.salvaged[0].records_salvaged, 2, "{repaired:?}");
        let engine = Engine::open(dir.path(), Options::default()).expect("open");
        let got = engine.get(&K85).expect("get");
        assert!(
            got.is_none(),
            "the key was deleted (intact tombstone seq 3), repair brought back {:?}",
            got.map(|e| (e.version, e.value))
        );
        engine.close().expect("close");
    }

    /// The continuation bit of the last byte of `seq` or of `written_at_ms` also moves
    /// the lengths; a single flipped bit is found by the CRC and only `x` is lost.
    #[test]
    fn a_single_flipped_bit_before_the_lengths_loses_only_its_record() {
        let (s2, x, _) = x_tombstone_y();
        let h = record::decode(&s2[x..]).expect("x is intact");
        // flags, last byte of seq (one byte), last byte of written_at (two bytes).
        for (at, bit) in [(x + 5, FLAG_EXPIRES), (x + 6, 0x80), (x + 8, 0x80)] {
            assert!(at < x + usize::from(h.header_len) - 3);
            let mut seg = s2.clone();
            seg[at] ^= bit;
            let s = scan_segment(2, &seg, 0, 0, &mut |_, _| {});
            let keys: Vec<(Vec<u8>, Fate)> =
                s.records.iter().map(|r| (r.key.clone(), r.fate)).collect();
            assert_eq!(
                keys,
                [(K85.to_vec(), Fate::Intact), (b"y".to_vec(), Fate::Intact)],
                "flip {bit:#x} at {}",
                at - x
            );
            assert_eq!(s.stretches.len(), 1);
            assert_eq!(
                s.stretches[0].end - s.stretches[0].start,
                h.record_len() as u64
            );
        }
    }

    /// Damage the CRC cannot pin down (the flag bit and a value byte): the extent the
    /// header claims is not trusted past an intact record; that record is read, and set
    /// aside as the possible rest of a batch (listed in the report), never skipped.
    #[test]
    fn a_decoded_extent_is_not_trusted_past_an_intact_record() {
        let (mut s2, x, t) = x_tombstone_y();
        s2[x + 5] ^= FLAG_EXPIRES;
        let value_at = x + record::decode(&x_tombstone_y().0[x..])
            .expect("x")
            .record_len()
            - 1;
        s2[value_at] ^= 0x01;
        let s = scan_segment(2, &s2, 0, 0, &mut |_, _| {});
        assert_eq!(s.stretches.len(), 1);
        assert_eq!(
            s.stretches[0].end, t as u64,
            "resynchronised on the tombstone"
        );
        let set_aside = s.set_aside();
        assert_eq!(set_aside.len(), 1, "{set_aside:?}");
        assert_eq!((set_aside[0].offset, set_aside[0].seq), (t as u64, 3));
        assert!(
            s.records
                .iter()
                .any(|r| r.key == b"y" && r.fate == Fate::Intact)
        );
    }

    /// The newest segment: the bogus extent ends at the end of the file. Open stops at
    /// `x` and cuts the intact, committed tombstone after it: that is damage (repair
    /// first), not a torn tail.
    #[test]
    fn an_intact_record_after_a_shifted_header_in_the_newest_segment_is_not_a_torn_tail() {
        let mut s1 = header(1, Kind::Log, 1);
        let x = put(&mut s1, FLAG_COMMIT, 2, b"a", b"m", b"x");
        let t = put(&mut s1, FLAG_COMMIT | FLAG_TOMBSTONE, 3, &K85, b"", b"");
        assert_eq!(s1.len() - t, 97);
        s1[x + 5] ^= FLAG_EXPIRES;
        let h = record::decode_header(&s1[x..]).expect("the flipped header decodes");
        assert_eq!(
            x + h.record_len(),
            s1.len(),
            "its extent ends at the end of the file"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(segment::file_name(1)), &s1).expect("test file I/O");
        let report = verify(dir.path(), &mut |_, _| {}).expect("verify");
        assert!(!report.is_clean(), "{report:?}");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.damage[0].offset, x as u64);
    }

    /// A damaged record whose value holds bytes that read as two near-2^64 varints:
    /// trying length rewrites must not overflow (a panic in debug builds).
    #[test]
    fn length_rewrites_of_hostile_bytes_do_not_overflow() {
        let mut seg = header(1, Kind::Log, 1);
        let mut value = vec![0u8];
        for _ in 0..2 {
            value.extend_from_slice(&[0xff; 9]);
            value.push(0x01);
        }
        value.extend_from_slice(&[0x11; 20]);
        let a = put(&mut seg, FLAG_COMMIT, 1, b"k", b"", &value);
        let b = put(&mut seg, FLAG_COMMIT, 2, b"b", b"", b"vb");
        seg[b - 1] ^= 1;
        let s = scan_segment(1, &seg, 0, 0, &mut |_, _| {});
        assert_eq!(s.stretches.len(), 1);
        assert_eq!(
            (s.stretches[0].start, s.stretches[0].end),
            (a as u64, b as u64)
        );
        let keys: Vec<(Vec<u8>, Fate)> =
            s.records.iter().map(|r| (r.key.clone(), r.fate)).collect();
        assert_eq!(keys, [(b"b".to_vec(), Fate::Intact)]);
    }

    #[test]
    fn a_varint_with_bits_beyond_64_is_unreadable() {
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(read_varint(&max), Some((u64::MAX, 10)));
        for last in [0x02, 0x03, 0x7f] {
            max[9] = last;
            assert_eq!(read_varint(&max), None, "tenth byte {last:#x}");
        }
        assert_eq!(read_varint(&[0x80; 10]), None, "no end within 10 bytes");
    }
}
