//! Compaction: rewrite sealed segments with only what is still needed, swap the new
//! files in, delete the old ones — while reads and writes go on.
//!
//! Protocol (each step is a crash point; `docs/architecture.md` says what a crash at
//! each one leaves and how open handles it):
//! 1. Pick inputs: sealed segments only, never the active one.
//! 2. Copy every still-needed record into new compacted segments under temporary
//!    names (`*.seg.tmp`), each with its hint (`*.hint.tmp`); fsync them.
//! 3. Rename them to their final names; fsync the folder. Inputs and outputs now both
//!    exist; open tolerates that (records apply by version, duplicates are equal).
//! 4. Map the outputs, then repoint the index from input to output locations — only
//!    where it still points at the copied record.
//! 5. Write the manifest `COMPACTION` naming the inputs, with a checksum (temp name,
//!    fsync, rename).
//!    From here the deletion of the inputs is as good as done: open finishes it.
//! 6. Drop the inputs from the segment map (readers that still hold one keep their
//!    mapping), delete their files and hints, fsync the folder, delete the manifest.
//!    The map change and the deletion wait for a running backup to link its files
//!    (`Shared::retire`), so a backup's snapshot never names a deleted file.
//!
//! What is "still needed": a record the index points at (a live value), and any
//! tombstone or expired record that could still hide an older value of its key — one
//! whose seq is not below every surviving segment's `base_seq`. Everything else (an
//! overwritten value, a tombstone or expired record older than all surviving data) is
//! dropped.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::engine::Shared;
use crate::error::{Error, Result};
use crate::hint::{self, HintEntry};
use crate::index::Location;
use crate::record;
use crate::segment::{self, Kind, SEGMENT_HEADER_BYTES, Segment, SegmentHeader, sync_dir};

/// Name of the manifest that makes deleting the inputs restartable.
pub(crate) const MANIFEST: &str = "COMPACTION";
/// The manifest's first line: format 2 ends with a checksum line.
const MANIFEST_FIRST_LINE: &str = "caskade compaction 2";
/// The first line of a manifest written before the checksum line existed (by an older
/// build that a crash interrupted): still finished at open, as it was then.
const MANIFEST_FIRST_LINE_V1: &str = "caskade compaction 1";
/// How the last line of a format 2 manifest starts: `crc32 ` and eight lower-case hex
/// digits, the CRC-32 of every byte before that line.
const MANIFEST_CRC_PREFIX: &str = "crc32 ";
/// Output records are written in chunks of this many bytes.
const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// What one compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments rewritten (and deleted).
    pub segments_in: u64,
    /// Compacted segments written.
    pub segments_out: u64,
    /// Bytes of the input files.
    pub bytes_in: u64,
    /// Bytes of the output files.
    pub bytes_out: u64,
    /// `bytes_in - bytes_out`: disk space given back.
    pub bytes_reclaimed: u64,
    /// Records copied.
    pub records_kept: u64,
    /// Records dropped (overwritten, deleted, expired, tombstones no longer needed).
    pub records_dropped: u64,
    /// How long it took.
    pub duration: Duration,
}

/// Names of the steps where tests can inject a crash.
pub(crate) mod step {
    pub const OUTPUTS_WRITTEN: &str = "compaction:outputs-written";
    pub const OUTPUTS_RENAMED: &str = "compaction:outputs-renamed";
    pub const INDEX_REPOINTED: &str = "compaction:index-repointed";
    pub const MANIFEST_WRITTEN: &str = "compaction:manifest-written";
    pub const INPUTS_DELETED: &str = "compaction:inputs-deleted";
}

/// Finishes a compaction that a crash interrupted after its manifest was written:
/// deletes the inputs it names, then the manifest. Called by open before any scan.
pub(crate) fn finish_interrupted(dir: &Path) -> Result<()> {
    let path = dir.join(MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading the compaction manifest", e)),
    };
    let corrupt = |reason: &str| Error::Corrupt {
        file: path.clone(),
        offset: 0,
        reason: reason.to_owned(),
    };
    // Damaged bytes are corruption like any other, not an I/O failure: nothing is
    // deleted on the word of a manifest that does not check.
    let ids = parse_manifest(&bytes).map_err(corrupt)?;
    tracing::info!(segments = ids.len(), "finishing an interrupted compaction");
    delete_segments(dir, &ids)?;
    std::fs::remove_file(&path).map_err(|e| Error::io("removing the compaction manifest", e))?;
    sync_dir(dir)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing a compacted segment", e)),
    }
}

fn delete_segments(dir: &Path, ids: &[u32]) -> Result<()> {
    for &id in ids {
        remove_if_present(&dir.join(segment::file_name(id)))?;
        remove_if_present(&dir.join(hint::file_name(id)))?;
    }
    sync_dir(dir)
}

/// The text of a manifest naming `ids`: format 2, its last line the checksum of the
/// lines before it.
fn encode_manifest(ids: &[u32]) -> String {
    let mut text = format!("{MANIFEST_FIRST_LINE}\n");
    for id in ids {
        text.push_str(&format!("{id}\n"));
    }
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("{MANIFEST_CRC_PREFIX}{crc:08x}\n"));
    text
}

/// The input segment ids a manifest names, or why it cannot be trusted. A format 2
/// manifest must end with its checksum line, and the checksum must match: a flipped
/// digit in an id would otherwise delete a live segment. Format 1 (no checksum) is
/// read as before.
pub(crate) fn parse_manifest(bytes: &[u8]) -> std::result::Result<Vec<u32>, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the manifest is not UTF-8 text")?;
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let ids = match first {
        MANIFEST_FIRST_LINE => {
            let lines = rest
                .strip_suffix('\n')
                .ok_or("the manifest does not end with its checksum line")?;
            let (ids, crc_line) = lines.rsplit_once('\n').unwrap_or(("", lines));
            // Every byte before the checksum line (which is followed by one newline).
            let covered_len = text.len().saturating_sub(crc_line.len() + 1);
            let covered = bytes.get(..covered_len).unwrap_or_default();
            let crc = crc_line
                .strip_prefix(MANIFEST_CRC_PREFIX)
                .filter(|hex| hex.len() == 8)
                .filter(|hex| hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .ok_or("the manifest does not end with its checksum line")?;
            if crc != crc32fast::hash(covered) {
                return Err("the manifest's checksum does not match its lines");
            }
            ids
        }
        MANIFEST_FIRST_LINE_V1 => rest,
        _ => return Err("unknown compaction manifest format"),
    };
    ids.lines()
        .map(|l| l.parse().map_err(|_| "a line is not a segment id"))
        .collect()
}

fn write_manifest(dir: &Path, ids: &[u32]) -> Result<()> {
    let text = encode_manifest(ids);
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, dir.join(MANIFEST)))
        .map_err(|e| Error::io("writing the compaction manifest", e))?;
    sync_dir(dir)
}

/// Paces copying to a byte rate, so compaction leaves the disk to foreground work.
struct Pacer {
    bytes_per_sec: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    fn consume(&mut self, bytes: u64) {
        self.bytes += bytes;
        let Some(rate) = self.bytes_per_sec.filter(|r| *r > 0) else {
            return;
        };
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed())
            && ahead > Duration::from_millis(5)
        {
            // Rate limiting, not synchronisation: there is no event to wait for.
            std::thread::sleep(ahead);
        }
    }
}

/// A compacted segment being written.
struct Output {
    id: u32,
    tmp: PathBuf,
    file: File,
    len: u64,
    buf: Vec<u8>,
    min_seq: u64,
    entries: Vec<HintEntry>,
}

impl Output {
    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let at = self.len - self.buf.len() as u64;
            self.file
                .write_all_at(&self.buf, at)
                .map_err(|e| Error::io("writing a compacted segment", e))?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// A live record moved by compaction, to repoint in the index.
struct Move {
    key: Bytes,
    from_segment: u32,
    from_offset: u32,
    to: Location,
}

/// One compaction run over `inputs` (sealed segments).
pub(crate) struct Run<'a> {
    shared: &'a Shared,
    inputs: Vec<Arc<Segment>>,
    outputs: Vec<Output>,
    finished: Vec<(u32, PathBuf)>,
    moves: Vec<Move>,
    report: CompactionReport,
    pacer: Pacer,
    /// The outputs are in the segment map: from here on they are kept on failure.
    swapped: bool,
}

impl<'a> Run<'a> {
    pub fn new(shared: &'a Shared, inputs: Vec<Arc<Segment>>) -> Run<'a> {
        Run {
            shared,
            inputs,
            outputs: Vec::new(),
            finished: Vec::new(),
            moves: Vec::new(),
            report: CompactionReport::default(),
            pacer: Pacer {
                bytes_per_sec: shared.options.compaction.bytes_per_sec,
                started: Instant::now(),
                bytes: 0,
            },
            swapped: false,
        }
    }

    fn fault(&self, step: &'static str) -> Result<()> {
        let fault = &self.shared.options.fault;
        if fault.fires(step) {
            return Err(Error::Closed(format!("injected crash at {step}")));
        }
        if fault.fails(step) {
            let injected = std::io::Error::other("injected I/O error");
            return Err(Error::io(format!("injected failure at {step}"), injected));
        }
        Ok(())
    }

    /// Runs the whole protocol. On error, temporary outputs are removed (unless the
    /// error is an injected crash, which leaves the files as a crash would).
    pub fn run(mut self) -> Result<CompactionReport> {
        let started = Instant::now();
        if self.inputs.is_empty() {
            return Ok(self.report);
        }
        let result = self.copy_and_swap();
        if let Err(e) = &result
            && !matches!(e, Error::Closed(r) if r.starts_with("injected crash"))
        {
            self.remove_unused_outputs();
        }
        result?;
        self.report.duration = started.elapsed();
        Ok(self.report)
    }

    /// After a failure: removes every output not yet in the segment map — temporary
    /// segments and hints, and those already renamed into place — so a failed
    /// compaction gives its space back (it matters most on a full disk). A renamed
    /// output left behind would also hold copies the running engine does not know
    /// of: a later compaction could drop the tombstone hiding one of them (no known
    /// segment holds an older record of its key), and the next open would bring the
    /// deleted value back. Once swapped in, outputs are known and stay.
    fn remove_unused_outputs(&self) {
        if self.swapped {
            return;
        }
        let dir = &self.shared.dir;
        for out in &self.outputs {
            let hint_tmp = dir.join(format!("{}.tmp", hint::file_name(out.id)));
            let renamed = [
                dir.join(segment::file_name(out.id)),
                dir.join(hint::file_name(out.id)),
            ];
            for path in [out.tmp.clone(), hint_tmp].iter().chain(&renamed) {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::error!(
                        file = %path.display(),
                        error = %e,
                        "could not remove an output of a failed compaction; \
                         reopen the store before compacting again"
                    ),
                }
            }
        }
        let _ = sync_dir(dir);
    }

    fn copy_and_swap(&mut self) -> Result<()> {
        let input_ids: BTreeSet<u32> = self.inputs.iter().map(|s| s.id).collect();
        let min_surviving = {
            self.shared
                .segments()
                .values()
                .filter(|s| !input_ids.contains(&s.id))
                .map(|s| s.header.base_seq)
                .min()
                .unwrap_or(u64::MAX)
        };
        let now_ms = self.shared.options.clock.now_ms();
        for input in self.inputs.clone() {
            self.copy_segment(&input, min_surviving, now_ms)?;
        }
        self.finish_outputs()?;
        self.fault(step::OUTPUTS_WRITTEN)?;
        self.rename_outputs()?;
        self.fault(step::OUTPUTS_RENAMED)?;
        self.swap_in()?;
        self.fault(step::INDEX_REPOINTED)?;
        let ids: Vec<u32> = input_ids.into_iter().collect();
        write_manifest(&self.shared.dir, &ids)?;
        self.fault(step::MANIFEST_WRITTEN)?;
        {
            // A running backup may still have to link an input: wait for it.
            let _retire = self
                .shared
                .retire
                .write()
                .unwrap_or_else(|p| p.into_inner());
            self.shared.change_segments(|segments| {
                for id in &ids {
                    segments.remove(id);
                }
            });
            delete_segments(&self.shared.dir, &ids)?;
        }
        self.fault(step::INPUTS_DELETED)?;
        std::fs::remove_file(self.shared.dir.join(MANIFEST))
            .map_err(|e| Error::io("removing the compaction manifest", e))?;
        sync_dir(&self.shared.dir)?;
        self.report.segments_in = ids.len() as u64;
        self.report.bytes_in = self.inputs.iter().map(|s| s.len()).sum();
        self.report.bytes_reclaimed = self.report.bytes_in.saturating_sub(self.report.bytes_out);
        Ok(())
    }

    fn copy_segment(&mut self, input: &Segment, min_surviving: u64, now_ms: u64) -> Result<()> {
        let Some(bytes) = input.mapped().cloned() else {
            return Err(Error::Closed(
                "compaction was handed an unmapped segment".into(),
            ));
        };
        let mut pos = SEGMENT_HEADER_BYTES as usize;
        while pos < bytes.len() {
            if self.shared.stopping.load(Ordering::Relaxed) {
                return Err(Error::Closed("the engine is closing".into()));
            }
            let header = record::decode(&bytes[pos..])
                .map_err(|e| record::corrupt(input.path.clone(), pos as u64, e))?;
            let len = header.record_len();
            let key_range = header.key_range();
            let key = bytes.slice(pos + key_range.start..pos + key_range.end);
            let indexed = self.shared.index.get(&key);
            let live = indexed.is_some_and(|l| l.segment == input.id && l.offset as usize == pos);
            let expired = header.expires_at().is_some_and(|t| t <= now_ms);
            let hides_older = header.is_tombstone() || expired;
            let keep = if hides_older {
                header.seq >= min_surviving
            } else {
                live
            };
            if keep {
                let to = self.append(&bytes[pos..pos + len], &header)?;
                if live {
                    self.moves.push(Move {
                        key,
                        from_segment: input.id,
                        from_offset: pos as u32,
                        to,
                    });
                }
                self.report.records_kept += 1;
            } else {
                if live {
                    // An expired entry not yet swept whose record goes away.
                    self.shared
                        .index
                        .remove_expired(&key, header.expires_at_ms, now_ms);
                }
                self.report.records_dropped += 1;
            }
            self.pacer.consume(len as u64);
            pos += len;
        }
        Ok(())
    }

    /// Appends a copy of `record` (marked as a whole transaction of its own, in the
    /// current record format) to the current output, starting a new one when it is
    /// full.
    fn append(&mut self, record: &[u8], header: &record::Header) -> Result<Location> {
        let segment_bytes = self.shared.options.segment_bytes;
        let full = self.outputs.last().is_none_or(|o| {
            o.len > SEGMENT_HEADER_BYTES && o.len + record.len() as u64 > segment_bytes
        });
        if full {
            self.start_output()?;
        }
        let Some(out) = self.outputs.last_mut() else {
            return Err(Error::Closed("no compaction output".into()));
        };
        let start = out.buf.len();
        // A copied record stands alone: its batch was committed long ago. A record of
        // an older format is rewritten in the current one (smaller header).
        let copy = record::append_committed(record, header, &mut out.buf);
        let offset = out.len;
        let len = copy.record_len();
        out.len += len as u64;
        out.min_seq = out.min_seq.min(copy.seq);
        out.entries
            .push(HintEntry::of_record(&copy, &out.buf[start..], offset as u32).to_owned_key());
        let loc = Location {
            segment: out.id,
            offset: offset as u32,
            len: len as u32,
            expires_at_ms: header.expires_at_ms,
            version: header.seq,
        };
        if out.buf.len() >= WRITE_CHUNK_BYTES {
            out.flush()?;
        }
        Ok(loc)
    }

    fn start_output(&mut self) -> Result<()> {
        if let Some(prev) = self.outputs.last_mut() {
            prev.flush()?;
        }
        let id = self.shared.next_segment_id.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .shared
            .dir
            .join(format!("{}.tmp", segment::file_name(id)));
        // The real base seq is known only at the end; the header is rewritten then.
        let header = SegmentHeader {
            base_seq: 0,
            kind: Kind::Compacted,
        };
        let file = segment::create_at(&tmp, id, header)?;
        self.outputs.push(Output {
            id,
            tmp,
            file,
            len: SEGMENT_HEADER_BYTES,
            buf: Vec::new(),
            min_seq: u64::MAX,
            entries: Vec::new(),
        });
        Ok(())
    }

    fn finish_outputs(&mut self) -> Result<()> {
        for out in &mut self.outputs {
            out.flush()?;
            let header = SegmentHeader {
                base_seq: out.min_seq,
                kind: Kind::Compacted,
            };
            out.file
                .write_all_at(&segment::encode_header(out.id, header), 0)
                .and_then(|()| out.file.sync_all())
                .map_err(|e| Error::io("syncing a compacted segment", e))?;
            let hint_tmp = self
                .shared
                .dir
                .join(format!("{}.tmp", hint::file_name(out.id)));
            let bytes = hint::encode(out.id, out.len, &out.entries)?;
            File::create(&hint_tmp)
                .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
                .map_err(|e| Error::io("writing a compacted segment's hint", e))?;
            self.report.bytes_out += out.len;
        }
        self.report.segments_out = self.outputs.len() as u64;
        Ok(())
    }

    fn rename_outputs(&mut self) -> Result<()> {
        let dir = &self.shared.dir;
        for out in &self.outputs {
            let seg = dir.join(segment::file_name(out.id));
            let hint_tmp = dir.join(format!("{}.tmp", hint::file_name(out.id)));
            // The segment first: a crash between the two leaves a segment without a
            // hint (scanned at open), never a hint without its segment.
            std::fs::rename(&out.tmp, &seg)
                .and_then(|()| std::fs::rename(&hint_tmp, dir.join(hint::file_name(out.id))))
                .map_err(|e| Error::io("renaming a compacted segment into place", e))?;
            self.finished.push((out.id, seg));
        }
        sync_dir(dir)
    }

    fn swap_in(&mut self) -> Result<()> {
        let mut mapped = HashMap::new();
        for (id, path) in &self.finished {
            let seg = Segment::sealed(path.clone(), *id)?;
            seg.has_hint.store(true, Ordering::Relaxed);
            mapped.insert(*id, Arc::new(seg));
        }
        self.shared
            .change_segments(|segments| segments.extend(mapped));
        self.swapped = true;
        for m in self.moves.drain(..) {
            self.shared
                .index
                .repoint(&m.key, m.from_segment, m.from_offset, m.to);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_the_ids_it_was_written_with() {
        for ids in [vec![], vec![7], vec![1, 2, 4_294_967_295]] {
            let text = encode_manifest(&ids);
            assert!(text.starts_with("caskade compaction 2\n"), "{text}");
            assert_eq!(parse_manifest(text.as_bytes()), Ok(ids));
        }
    }

    /// A manifest is acted on (its segments deleted) only when it checks: any one
    /// byte changed, or the file cut short, is refused.
    #[test]
    fn a_changed_or_cut_manifest_is_refused() {
        let text = encode_manifest(&[12, 13, 140]).into_bytes();
        for at in 0..text.len() {
            for by in [b'0', b'1', b'4', b'9', b'a', b'A', b'\n', b' '] {
                if text[at] == by {
                    continue;
                }
                let mut changed = text.clone();
                changed[at] = by;
                assert!(
                    parse_manifest(&changed).is_err(),
                    "byte {at} as {:?}: {:?}",
                    by as char,
                    String::from_utf8_lossy(&changed)
                );
            }
        }
        for len in 0..text.len() {
            assert!(parse_manifest(&text[..len]).is_err(), "cut to {len} bytes");
        }
    }

    /// A manifest left by a build before the checksum line is still finished.
    #[test]
    fn a_format_1_manifest_is_still_read() {
        assert_eq!(
            parse_manifest(b"caskade compaction 1\n3\n5\n"),
            Ok(vec![3, 5])
        );
        assert!(parse_manifest(b"caskade compaction 1\n3\nx\n").is_err());
        assert!(parse_manifest(b"caskade compaction 3\n3\n").is_err());
    }
}
