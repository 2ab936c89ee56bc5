//! The maintenance thread: TTL sweeps, hint files for sealed segments, and
//! compaction, in the background, so neither readers nor the writer wait for them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, select};

use crate::compaction::{CompactionReport, Run};
use crate::engine::Shared;
use crate::error::{Error, Result};
use crate::expiry::SWEEP_KEYS_MAX;
use crate::hint;
use crate::segment::{SEGMENT_HEADER_BYTES, Segment};
use crate::writer::Msg;

/// Hints a maintenance tick writes at most (each two fsyncs).
const HINTS_PER_TICK: usize = 16;
/// Bytes of old hints or segments a maintenance tick reads at most to write hints
/// (it goes over by at most one segment).
const HINT_READ_BYTES_PER_TICK: u64 = 64 << 20;

/// Requests to the maintenance thread.
pub(crate) enum Control {
    /// Seal the active segment and compact every sealed segment now.
    Compact(Sender<Result<CompactionReport>>),
    /// Run the background policy once now.
    CompactByPolicy(Sender<Result<CompactionReport>>),
    /// Run one sweep tick now; answers with the number of keys swept.
    Sweep(Sender<u64>),
    /// Stop.
    Stop,
}

pub(crate) struct Maintenance {
    shared: Arc<Shared>,
    writer: Sender<Msg>,
    next_compaction_check: Instant,
}

impl Maintenance {
    pub fn new(shared: Arc<Shared>, writer: Sender<Msg>) -> Maintenance {
        let next_compaction_check = Instant::now() + shared.options.compaction.interval;
        Maintenance {
            shared,
            writer,
            next_compaction_check,
        }
    }

    pub fn run(mut self, rx: Receiver<Control>) {
        let tick = self.shared.options.sweep_interval;
        loop {
            select! {
                recv(rx) -> msg => match msg {
                    Ok(Control::Compact(reply)) => {
                        let _ = reply.send(self.compact_all());
                    }
                    Ok(Control::CompactByPolicy(reply)) => {
                        let inputs = self.pick();
                        let _ = reply.send(self.run_compaction(inputs));
                    }
                    Ok(Control::Sweep(reply)) => {
                        let _ = reply.send(self.sweep());
                    }
                    Ok(Control::Stop) | Err(_) => return,
                },
                default(tick) => self.tick(),
            }
        }
    }

    fn tick(&mut self) {
        self.sweep();
        self.write_missing_hints();
        let compaction = &self.shared.options.compaction;
        if compaction.enabled && Instant::now() >= self.next_compaction_check {
            self.next_compaction_check = Instant::now() + compaction.interval;
            let inputs = self.pick();
            if !inputs.is_empty()
                && let Err(e) = self.run_compaction(inputs)
            {
                tracing::error!(error = %e, "background compaction failed");
            }
        }
    }

    /// Removes up to `SWEEP_KEYS_MAX` expired keys from the index; their bytes become
    /// dead for compaction.
    fn sweep(&self) -> u64 {
        let index = &self.shared.index;
        let now_ms = self.shared.options.clock.now_ms();
        let mut swept = 0;
        for (expires_at_ms, key) in index.expiries.take_due(now_ms, SWEEP_KEYS_MAX) {
            if index.remove_expired(&key, expires_at_ms, now_ms).is_some() {
                swept += 1;
            }
        }
        self.shared
            .counters
            .expired_swept
            .fetch_add(swept, Ordering::Relaxed);
        swept
    }

    fn sealed(&self) -> Vec<Arc<Segment>> {
        let active = self.shared.active_id.load(Ordering::Acquire);
        self.shared
            .segments()
            .values()
            .filter(|s| s.id != active && s.mapped().is_some())
            .cloned()
            .collect()
    }

    /// Writes hints beside sealed segments that have none yet, or whose hint is of an
    /// older format version (after an upgrade, every one). A bounded amount per tick
    /// ([`HINTS_PER_TICK`], [`HINT_READ_BYTES_PER_TICK`]) so sweeps and compaction are
    /// not held up, and none once the engine is stopping, so close does not wait for
    /// a whole store's hints. Returns how many were written.
    pub(crate) fn write_missing_hints(&self) -> usize {
        let (mut written, mut read) = (0, 0u64);
        for seg in self.sealed() {
            if seg.has_hint.load(Ordering::Relaxed) {
                continue;
            }
            if written >= HINTS_PER_TICK
                || read >= HINT_READ_BYTES_PER_TICK
                || self.shared.stopping.load(Ordering::Acquire)
            {
                break;
            }
            let (result, bytes_read) = self.write_hint(&seg);
            read += bytes_read;
            written += 1;
            if let Err(e) = result {
                tracing::warn!(segment = seg.id, error = %e, "could not write a hint file");
            }
            // Also after a failure: not retried every tick; the next open scans it.
            seg.has_hint.store(true, Ordering::Relaxed);
        }
        written
    }

    /// Writes the hint of `seg` in the current format; returns the result and the bytes
    /// read for it. An older hint that checks whole (as open trusted it) is converted
    /// from its own entries, ~48 bytes a key, instead of reading the whole segment.
    fn write_hint(&self, seg: &Segment) -> (Result<std::path::PathBuf>, u64) {
        let dir = &self.shared.dir;
        if let Some(old) = hint::read(dir, seg.id)
            && let Ok(checked) = hint::check(&old, seg.id, seg.len())
        {
            let entries: Vec<_> = checked.into_iter().map(|(_, e)| e).collect();
            return (
                hint::write(dir, seg.id, seg.len(), &entries),
                old.len() as u64,
            );
        }
        let Some(bytes) = seg.mapped() else {
            return (
                Err(Error::Closed(format!("segment {} is not mapped", seg.id))),
                0,
            );
        };
        let written = hint::entries_of(&seg.path, bytes)
            .and_then(|entries| hint::write(dir, seg.id, seg.len(), &entries));
        (written, bytes.len() as u64)
    }

    /// Live bytes per segment, from one walk of the index.
    fn live_by_segment(&self) -> HashMap<u32, u64> {
        let mut live = HashMap::new();
        self.shared.index.for_each(|_, loc| {
            *live.entry(loc.segment).or_insert(0) += u64::from(loc.len);
        });
        live
    }

    /// The background policy: segments whose dead share reached the ratio; all
    /// segments with dead bytes once the total dead reaches the trigger; and small
    /// segments, merged together.
    fn pick(&self) -> Vec<Arc<Segment>> {
        let options = &self.shared.options;
        let live = self.live_by_segment();
        let sealed = self.sealed();
        let dead = |s: &Segment| {
            let data = s.len().saturating_sub(SEGMENT_HEADER_BYTES);
            (
                data,
                data.saturating_sub(live.get(&s.id).copied().unwrap_or(0)),
            )
        };
        let total_dead: u64 = sealed.iter().map(|s| dead(s).1).sum();
        let small = |s: &Segment| s.len() < options.segment_bytes / 4;
        let smalls = sealed.iter().filter(|s| small(s)).count();
        sealed
            .into_iter()
            .filter(|s| {
                let (data, dead) = dead(s);
                (data > 0 && dead as f64 >= data as f64 * options.compaction.dead_ratio)
                    || (total_dead >= options.compaction.dead_bytes_trigger && dead > 0)
                    || (smalls >= 2 && small(s))
            })
            .collect()
    }

    /// Manual compaction: seal the active segment (so its dead bytes count too), then
    /// rewrite every sealed segment.
    fn compact_all(&mut self) -> Result<CompactionReport> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.writer
            .send(Msg::Rotate(reply))
            .map_err(|_| Error::Closed("the writer stopped".into()))?;
        answer
            .recv()
            .unwrap_or_else(|_| Err(Error::Closed("the writer stopped".into())))?;
        let inputs = self.sealed();
        self.run_compaction(inputs)
    }

    fn run_compaction(&self, inputs: Vec<Arc<Segment>>) -> Result<CompactionReport> {
        let report = Run::new(&self.shared, inputs).run()?;
        let counters = &self.shared.counters;
        if report.segments_in > 0 {
            counters.compactions.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes_reclaimed
                .fetch_add(report.bytes_reclaimed, Ordering::Relaxed);
            tracing::info!(
                segments_in = report.segments_in,
                segments_out = report.segments_out,
                bytes_reclaimed = report.bytes_reclaimed,
                ms = report.duration.as_millis() as u64,
                "compaction finished"
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::hint::HintEntry;
    use crate::{Engine, Options, SyncPolicy, WriteOptions, segment};

    fn options() -> Options {
        Options {
            segment_bytes: 4 * 1024,
            sync: SyncPolicy::Never,
            // The maintenance thread stays idle: the test drives the work.
            sweep_interval: Duration::from_secs(3600),
            ..Options::default()
        }
    }

    /// (segment id, hint format version, entries sorted by offset) of every hint.
    fn hints(dir: &Path) -> Vec<(u32, u32, Vec<HintEntry>)> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).expect("list") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "hint") {
                continue;
            }
            let id: u32 = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .expect("a hint's id");
            let bytes = std::fs::read(&path).expect("read hint");
            let seg_len = std::fs::metadata(dir.join(segment::file_name(id)))
                .expect("its segment")
                .len();
            let mut entries: Vec<HintEntry> = hint::check(&bytes, id, seg_len)
                .expect("the hint checks")
                .into_iter()
                .map(|(_, e)| e.to_owned_key())
                .collect();
            entries.sort_by_key(|e| e.offset);
            let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
            all.push((id, version, entries));
        }
        all.sort_by_key(|h| h.0);
        all
    }

    /// After an upgrade every hint is of an older version and awaits rewriting. A tick
    /// rewrites a bounded number, none once the engine is stopping, and converts each
    /// from the old hint itself: a segment with a damaged value (which a scan refuses)
    /// still gets its hint, with the same entries.
    #[test]
    fn old_hints_are_rewritten_from_themselves_a_bounded_number_per_tick() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(dir.path(), options()).expect("open");
        for k in 0..2_000 {
            engine
                .put(
                    format!("key/{k:05}"),
                    format!("value {k}").repeat(8),
                    WriteOptions::default(),
                )
                .expect("put");
        }
        engine.compact().expect("compact");
        engine.close().expect("close");
        let v3 = hints(dir.path());
        assert!(v3.len() > 2 * HINTS_PER_TICK, "{} hints", v3.len());
        for (id, _, entries) in &v3 {
            let seg_len = std::fs::metadata(dir.path().join(segment::file_name(*id)))
                .expect("segment")
                .len();
            std::fs::write(
                dir.path().join(hint::file_name(*id)),
                hint::encode_v2(*id, seg_len, entries),
            )
            .expect("write a version 2 hint");
        }
        // A flipped value byte in the first segment: its hint is still right.
        let (damaged, _, entries) = &v3[0];
        let seg_path = dir.path().join(segment::file_name(*damaged));
        let mut seg = std::fs::read(&seg_path).expect("read segment");
        let last = entries.iter().find(|e| !e.tombstone).expect("a value");
        seg[(last.offset + last.len) as usize - 1] ^= 0x20;
        std::fs::write(&seg_path, &seg).expect("damage segment");
        assert!(
            hint::entries_of(&seg_path, &seg).is_err(),
            "a scan of the segment refuses it"
        );

        let engine = Engine::open(dir.path(), options()).expect("open with old hints");
        assert_eq!(engine.stats().hints_loaded as usize, v3.len());
        let (maintenance, shared) = engine.maintenance_for_test();
        shared.stopping.store(true, Ordering::Release);
        assert_eq!(maintenance.write_missing_hints(), 0, "stopping: none");
        assert!(hints(dir.path()).iter().all(|h| h.1 == 2));
        shared.stopping.store(false, Ordering::Release);
        assert_eq!(maintenance.write_missing_hints(), HINTS_PER_TICK);
        let rewritten = hints(dir.path()).iter().filter(|h| h.1 == 3).count();
        assert_eq!(rewritten, HINTS_PER_TICK, "one tick's worth");
        let mut ticks = 1;
        while maintenance.write_missing_hints() > 0 {
            ticks += 1;
            assert!(ticks <= v3.len(), "the work ends");
        }
        assert_eq!(hints(dir.path()), v3, "every hint version 3, same entries");
        // The shared state holds the folder's lock.
        drop((maintenance, shared));
        engine.close().expect("close");
        let engine = Engine::open(dir.path(), options()).expect("reopen");
        assert_eq!(engine.stats().hints_loaded as usize, v3.len());
        assert!(engine.get(b"key/00001").expect("get").is_some());
    }
}
