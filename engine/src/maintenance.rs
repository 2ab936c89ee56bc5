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

    /// Writes a hint beside every sealed segment that has none yet.
    fn write_missing_hints(&self) {
        for seg in self.sealed() {
            if seg.has_hint.load(Ordering::Relaxed) {
                continue;
            }
            let Some(bytes) = seg.mapped() else { continue };
            let written = hint::entries_of(&seg.path, bytes)
                .and_then(|entries| hint::write(&self.shared.dir, seg.id, seg.len(), &entries));
            match written {
                Ok(_) => seg.has_hint.store(true, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(segment = seg.id, error = %e, "could not write a hint file");
                    // Do not retry every tick: the next open scans this segment.
                    seg.has_hint.store(true, Ordering::Relaxed);
                }
            }
        }
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
