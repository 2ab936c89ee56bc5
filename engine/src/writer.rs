//! The single writer thread and its group commit.
//!
//! Callers send batches over a `crossbeam-channel`. The writer takes one message,
//! then everything already queued behind it (up to [`GROUP_REQUESTS_MAX`] requests or
//! [`GROUP_BYTES_MAX`] bytes), checks each batch's conditions, encodes all of them into
//! one buffer, appends it with one copy into the active segment's writable mapping (or
//! one positioned write; see [`crate::append`]) and — under `SyncPolicy::Always` —
//! one `fdatasync`, then updates the index and answers every caller. So N concurrent
//! writers cost one write and one fsync, not N.
//!
//! The index is updated only after the bytes are durable (per the policy), so a reader
//! never sees a write that a crash could take back.

use std::fs::File;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use hashbrown::HashMap;

use crate::append::{AppendError, AppendMode, Appender};
use crate::backup::Snapshot;
use crate::batch::{MetaCarry, Previous};
use crate::engine::{Shared, mismatch};
use crate::error::{Error, Result};
use crate::index::{Located, Location, NO_CARRY};
use crate::oneshot;
use crate::record::{self, FLAG_COMMIT, FLAG_TOMBSTONE, RecordRef, SEQ_LIMIT};
use crate::segment::{self, Kind, SEGMENT_HEADER_BYTES, Segment, SegmentHeader};
use crate::{Applied, Batch, Expect, Op, SyncPolicy};

/// Most requests the writer takes into one group.
pub(crate) const GROUP_REQUESTS_MAX: usize = 4096;
/// A group stops taking requests once its buffer holds this many bytes: 4 MiB, about
/// 28 bulk requests of 1000 100-byte puts.
///
/// At 16 MiB a group took every request of 64 bulk connections at once: the writer
/// staged all of them, then sat through one long fsync, then answered all, and the
/// clients' next requests came back together, so the writer, the request threads and
/// the fsync took turns instead of overlapping. Split in two or three, a group's
/// callers prepare their next requests while the writer stages the next group, and
/// the index lines a group's lookups touched are still cached at its commit: bulk
/// keys/s +6–10 % (docs/benchmarks.md). Small writes never reach it.
pub(crate) const GROUP_BYTES_MAX: usize = 4 * 1024 * 1024;

/// How long the writer, after a group, polls its channel before it sleeps on it. A
/// caller that puts back to back sends its next batch within a few microseconds;
/// catching it while still awake spares both threads a futex sleep and wake-up per
/// put. Bounded, so an idle engine's writer is asleep (no CPU) 50 µs after its last
/// write.
pub(crate) const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(50);

/// Polls `poll` until it yields something or `SPIN_BEFORE_SLEEP` has passed; `None`
/// then (the caller goes on to block). The clock is read every 64 polls only.
pub(crate) fn spin_for<T>(mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        for _ in 0..64 {
            if let Some(found) = poll() {
                return Some(found);
            }
            std::hint::spin_loop();
        }
        if started.elapsed() >= SPIN_BEFORE_SLEEP {
            return None;
        }
    }
}

/// The longest the writer, under `SyncPolicy::Always`, holds a group open for callers
/// of the last group to come back (see [`wait_for_callers`]).
pub(crate) const GATHER_WAIT_MAX: Duration = Duration::from_millis(1);

/// Up to this many callers the writer waits for all of them, beyond it for half (at
/// least this many); see [`wait_for_callers`].
const GATHER_ALL_UP_TO: usize = 8;

/// Batches of at least this many operations that read the entries they replace read
/// them together first ([`Writer::look_up_batch`]).
const LOOK_UP_TOGETHER_MIN: usize = 16;

/// Under `SyncPolicy::Always`, before a group is written: waits (yielding the CPU)
/// until enough of the last group's `callers` are back or `budget` has passed: all of
/// them up to [`GATHER_ALL_UP_TO`], half of them (at least that many) beyond.
///
/// `callers` is how many callers the last group had (its writes and those queued
/// behind it). They were answered just now and most will submit again within
/// microseconds; a group started at once would fsync those queued behind the last
/// group and leave the returning ones to the fsync after it. A few callers come back
/// in a fraction of an fsync, and one group of all of them per round is best. Many
/// take longer to wake and stage than the fsync itself: waiting for all of them made
/// the round serial (the cores idle while the disk syncs, the disk idle while the
/// cores wake and stage 64 callers), and waiting for half settles into two groups in
/// flight, one syncing while the other's callers come back and are staged — W3 64
/// writers +22 % in the median of 12 alternated runs, HTTP PUT unchanged. With 2–8
/// writers half was worse (W3 2 writers −35 %, 4 writers −20 %), hence the floor
/// (docs/benchmarks.md, "W3: two groups in flight"). A single writer never waits, and
/// when callers go away the wait is bounded by `budget` (half the last fsync, at most
/// [`GATHER_WAIT_MAX`]) once, after which `callers` follows the smaller group.
fn wait_for_callers(rx: &Receiver<Msg>, callers: usize, budget: Duration) {
    let started = Instant::now();
    let target = gather_target(callers);
    // `+ 1`: the first message is already taken.
    while rx.len() + 1 < target && started.elapsed() < budget {
        std::thread::yield_now();
    }
}

/// How many of the last group's `callers` [`wait_for_callers`] waits for.
fn gather_target(callers: usize) -> usize {
    callers.min((callers / 2).max(GATHER_ALL_UP_TO))
}

/// How the writer appends under `sync`: with an fsync after every group, by `pwrite`
/// (the mapped pages would be write-protected and faulted in again at each one, see
/// `append.rs`); otherwise through the mapping.
fn append_mode(sync: SyncPolicy) -> AppendMode {
    match sync {
        SyncPolicy::Always => AppendMode::Written,
        SyncPolicy::Interval(_) | SyncPolicy::Never => AppendMode::Mapped,
    }
}

/// Called on the writer thread with a batch's result or its error.
pub(crate) enum Done {
    /// A caller blocked in [`crate::Engine::apply`]: the answer wakes its thread.
    /// Its versions are consecutive, so a range answers it: no `Vec` is allocated on
    /// the writer and freed on the caller's thread per put.
    Wake(oneshot::Sender<Result<Range<u64>>>),
    /// An [`crate::Engine::apply_then`] callback: the versions, one per operation.
    Versions(Box<dyn FnOnce(Result<Vec<u64>>) + Send>),
    /// An [`crate::Engine::apply_detailed_then`] callback: version and whether a live
    /// entry was replaced, one per operation.
    Detailed(Box<dyn FnOnce(Result<Vec<Applied>>) + Send>),
}

impl Done {
    pub(crate) fn fail(self, e: Error) {
        guarded(|| match self {
            Done::Wake(tx) => tx.send(Err(e)),
            Done::Versions(f) => f(Err(e)),
            Done::Detailed(f) => f(Err(e)),
        });
    }

    fn succeed(self, versions: Range<u64>, replaced: Vec<bool>) {
        guarded(|| match self {
            Done::Wake(tx) => tx.send(Ok(versions)),
            Done::Versions(f) => f(Ok(versions.collect())),
            Done::Detailed(f) => f(Ok(versions
                .zip(replaced)
                .map(|(version, replaced)| Applied { version, replaced })
                .collect())),
        });
    }

    /// Whether answering wakes a parked thread (a futex wake, ~10 µs of the waker's
    /// time on a small VM), rather than running a quick callback.
    fn wakes_a_thread(&self) -> bool {
        matches!(self, Done::Wake(_))
    }
}

/// Runs a caller's answer. A callback that panics is logged and does not unwind into
/// the thread that answers (the writer, or the answer thread): the other callers of
/// its group are still answered, and the engine goes on.
fn guarded(answer: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(answer)).is_err() {
        tracing::error!("a write's answer callback panicked; the write itself stands");
    }
}

/// A committed (or failed) batch's answer, run on the writer or the answer thread.
enum Answer {
    /// The versions, whether each replaced a live entry, and the batch's operations
    /// (freed wherever the answer runs).
    Succeed(Done, Range<u64>, Vec<bool>, Vec<Op>),
    Fail(Done, Error),
    /// Sent back once every answer before it has run.
    Flushed(Sender<()>),
}

impl Answer {
    fn wakes_a_thread(&self) -> bool {
        match self {
            Answer::Succeed(done, ..) | Answer::Fail(done, _) => done.wakes_a_thread(),
            Answer::Flushed(_) => false,
        }
    }

    fn run(self) {
        match self {
            Answer::Succeed(done, versions, replaced, _) => done.succeed(versions, replaced),
            Answer::Fail(done, e) => done.fail(e),
            Answer::Flushed(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// Runs a group's answers in order; consecutive wake-ups of blocked callers go out
/// together through a relay that the woken callers help along
/// ([`oneshot::answer_group`]). The batches' operations are freed after the wake-ups.
fn wake_group(group: Vec<Answer>) {
    let mut wakes = Vec::with_capacity(group.len());
    let mut spent = Vec::with_capacity(group.len());
    for answer in group {
        match answer {
            Answer::Succeed(Done::Wake(tx), versions, _, ops) => {
                wakes.push((tx, Ok(versions)));
                spent.push(ops);
            }
            Answer::Fail(Done::Wake(tx), e) => wakes.push((tx, Err(e))),
            other => {
                oneshot::answer_group(wakes.drain(..));
                other.run();
            }
        }
    }
    oneshot::answer_group(wakes);
    drop(spent);
}

/// How long the answer thread, after a group, keeps polling for the next one (yielding
/// its core to any other thread that wants it) before it sleeps. The next group comes
/// when the writer's fsync returns, ~0.1–0.2 ms later; asleep, the thread is woken by
/// an interrupt to its idle core, which on the two-core VM of docs/benchmarks.md costs
/// ~20 µs (`perf bench sched pipe -T`: 44 µs a round trip across the two cores, 5 µs
/// on one) — on the path of every group. W3 with 8 writers +20–25 %, 64 writers
/// within the noise; 1 ms cost 64 writers ~20 % (docs/benchmarks.md, "W3: what bounds
/// the round").
const ANSWER_SPIN: Duration = Duration::from_micros(200);

/// The answer thread polls only when groups come at least this often: under a light
/// load it sleeps at once and burns nothing.
const ANSWER_SPIN_WITHIN: Duration = Duration::from_micros(400);

/// The answer thread's next group: polled for [`ANSWER_SPIN`] when the last two came
/// within [`ANSWER_SPIN_WITHIN`] of each other, then waited for. `last` is when the
/// previous group came, and becomes when this one did. `None` once the writer is gone.
fn next_group(rx: &Receiver<Vec<Answer>>, last: &mut Option<Instant>) -> Option<Vec<Answer>> {
    let started = Instant::now();
    let busy = last.is_some_and(|at| started.duration_since(at) < ANSWER_SPIN_WITHIN);
    let mut polled = None;
    while busy && polled.is_none() && started.elapsed() < ANSWER_SPIN {
        match rx.try_recv() {
            Ok(group) => polled = Some(group),
            Err(TryRecvError::Empty) => std::thread::yield_now(),
            Err(TryRecvError::Disconnected) => return None,
        }
    }
    let group = match polled {
        Some(group) => group,
        None => rx.recv().ok()?,
    };
    *last = Some(Instant::now());
    Some(group)
}

/// The answer thread (under `SyncPolicy::Always`): wakes the blocked callers
/// (`Engine::apply`) of committed groups, in commit order, while the writer goes on to
/// the next group. (Callbacks of `apply_then` run on the writer: [`Writer::answer`].)
///
/// Answering a group is one futex wake per blocked caller; with 64 callers on two
/// cores that took the writer longer than the fsync itself, and no fsync ran
/// meanwhile. Handed over, the wakes of group k overlap the gather, write and fsync
/// of group k+1. The index is updated on the writer before the handover, so a caller
/// is answered only after its bytes are durable and visible, and the next group's
/// conditions see the last one without any overlay. The thread fills every answer of
/// a group first and then shares its wake-ups with the callers it has woken
/// ([`wake_group`]), so both cores wake the group instead of this one thread in turn.
struct Answerer {
    tx: Sender<Vec<Answer>>,
    /// Groups handed over and not yet fully answered.
    outstanding: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Answerer {
    /// `None` when the thread cannot be started (the writer then answers itself).
    fn spawn() -> Option<Answerer> {
        let (tx, rx) = crossbeam_channel::unbounded::<Vec<Answer>>();
        let outstanding = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&outstanding);
        let thread = std::thread::Builder::new()
            .name("caskade-answer".into())
            .spawn(move || {
                let mut last = None;
                while let Some(group) = next_group(&rx, &mut last) {
                    wake_group(group);
                    counted.fetch_sub(1, Ordering::AcqRel);
                }
            });
        match thread {
            Ok(thread) => Some(Answerer {
                tx,
                outstanding,
                thread,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "no answer thread; the writer answers its callers");
                None
            }
        }
    }

    /// Stops the thread once it has run every answer handed over.
    fn stop(self) {
        drop(self.tx);
        if self.thread.join().is_err() {
            tracing::error!("the answer thread panicked");
        }
    }
}

/// What callers send to the writer.
pub(crate) enum Msg {
    /// Write a batch.
    Write { batch: Batch, done: Done },
    /// Make everything written so far durable, then answer.
    Sync(Sender<Result<()>>),
    /// Sync, answer and stop.
    Close(Sender<Result<()>>),
    /// Seal the active segment (if it holds any record) and start a new one.
    Rotate(Sender<Result<()>>),
    /// Sync, then answer with the store's files and the active segment's length.
    Snapshot(Sender<Result<Snapshot>>),
}

/// A batch encoded into the group buffer, waiting for the group's write.
struct Pending {
    done: Done,
    /// The batch's operations, whole: their keys go into the index at commit, and
    /// they are freed where the answer runs (the answer thread, for blocked callers),
    /// not on the writer, whose every microsecond per group is on the path of W3.
    ops: Vec<Op>,
    /// The batch's versions, one per operation, consecutive.
    versions: Range<u64>,
    /// Per operation, whether it replaced a live entry (only for `Done::Detailed`).
    replaced: Vec<bool>,
    /// Where the batch's updates sit in [`Writer::updates`], one per operation.
    updates: Range<usize>,
}

/// A write's index entry once committed (`None`: removed), where its record starts in
/// the group buffer, and where its key sat in the index when the batch looked it up
/// (so the update need neither hash it again nor, while its slot still holds it, walk
/// the table). Its key is the operation's, in [`Pending::ops`].
struct Update {
    loc: Option<Location>,
    /// The word the put's record passes on ([`NO_CARRY`]: not remembered).
    carry: u64,
    at: usize,
    located: Option<Located>,
}

/// A write of the group not yet in the index, as later batches of the group see it.
#[derive(Clone, Copy, Debug)]
struct Staged {
    version: u64,
    /// Where its record starts in the group buffer.
    at: usize,
}

/// The writer's state behind a lock, shared by the writer thread and the callers.
///
/// Under `SyncPolicy::Never`, a blocking caller (`Engine::apply`) that finds no write
/// queued writes its batch itself ([`WriterCell::try_write_now`]): one thread putting
/// back to back then pays no handoff to the writer thread at all, and callers on
/// several threads take turns at the lock ([`WriterCell::lock_for_direct_write`]).
/// Such a write may fill the active segment and seal it (an fsync) on that caller's
/// thread, which waits for its write either way. Everything else (async callers,
/// other policies, sync, snapshots) goes through the channel and the writer thread,
/// which takes the lock for each group.
pub(crate) struct WriterCell {
    state: Mutex<Writer>,
    /// Write messages sent and not yet committed. A caller writes directly only when
    /// this is 0, so it never overtakes a batch submitted before it.
    queued: AtomicUsize,
    /// The sync policy is `Never` (fixed at open): callers may write directly.
    direct: bool,
    /// The writer thread is waiting for the lock (a group, a sync, a rotation, ...).
    writer_waits: AtomicBool,
}

impl WriterCell {
    pub fn new(writer: Writer) -> WriterCell {
        let direct = writer.shared.options.sync == SyncPolicy::Never;
        WriterCell {
            state: Mutex::new(writer),
            queued: AtomicUsize::new(0),
            direct,
            writer_waits: AtomicBool::new(false),
        }
    }

    /// The writer's lock for a write on the calling thread: only under `Never` and only
    /// while no write is queued for the writer thread. A lock held by another caller's
    /// direct write (a microsecond or two) is waited for by polling it, for at most
    /// [`SPIN_BEFORE_SLEEP`] and not while the writer thread waits for it: handing the
    /// write to the writer thread instead cost a wake-up of that thread and of this
    /// one, ten times as long, and with two threads of 90 % gets and 10 % puts that
    /// handoff was most of the time (the engine benchmark's `w4_mixed`,
    /// docs/benchmarks.md). `None`: use the channel.
    fn lock_for_direct_write(&self) -> Option<MutexGuard<'_, Writer>> {
        if !self.direct {
            return None;
        }
        let writer = spin_for(|| {
            if self.queued.load(Ordering::Acquire) != 0 || self.writer_waits.load(Ordering::Acquire)
            {
                return Some(None);
            }
            // A poisoned lock is left to the writer thread, which takes it over.
            self.state.try_lock().ok().map(Some)
        })
        .flatten()?;
        // Checked again under the lock: the writer thread uncounts a group only once
        // it is committed, under this lock.
        (self.queued.load(Ordering::Acquire) == 0).then_some(writer)
    }

    /// The writer thread's way to the lock. It says so first, so callers polling for
    /// a direct write step aside ([`WriterCell::lock_for_direct_write`]) instead of
    /// taking the lock from under it again and again (the mutex is not fair).
    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer_waits.store(true, Ordering::Release);
        let writer = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.writer_waits.store(false, Ordering::Release);
        writer
    }

    /// Counts a write message about to be sent.
    pub fn queue(&self) {
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    /// Uncounts a write message that could not be sent.
    pub fn unqueue(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Writes `batch` on the calling thread when the policy is `Never` and nothing is
    /// queued ([`WriterCell::lock_for_direct_write`]); hands `batch` and `done` back
    /// otherwise.
    pub fn try_write_now(&self, batch: Batch, done: Done) -> Option<(Batch, Done)> {
        let Some(mut writer) = self.lock_for_direct_write() else {
            return Some((batch, done));
        };
        writer.stage(batch, done);
        // A failed write has already answered its caller with the error.
        let _ = writer.commit(false);
        None
    }

    /// As [`WriterCell::try_write_now`] for one checked operation without conditions
    /// (`Engine::put`, `Engine::delete`): written on the calling thread, with its
    /// version or error returned (`Ok`), or handed back (`Err`) for the batch path.
    /// Builds no batch, no answer callback and no group bookkeeping, so a single
    /// writer's put allocates nothing of its own.
    pub fn try_write_one_now(&self, op: Op) -> std::result::Result<Result<u64>, Op> {
        match self.lock_for_direct_write() {
            Some(mut writer) => Ok(writer.write_one(op)),
            None => Err(op),
        }
    }
}

/// The writer's state. Only the holder of its [`WriterCell`] lock writes to segment
/// files.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    /// Write handle of the active segment.
    file: File,
    /// Appends to `file`: through a writable mapping (no system call) or `pwrite`.
    appender: Appender,
    /// The active segment as readers see it (its length is published after writes).
    active: Arc<Segment>,
    /// Bytes in the active segment that are written (the buffer goes after them).
    len: u64,
    next_seq: u64,
    buf: Vec<u8>,
    pending: Vec<Pending>,
    /// The group's index updates, in order (each batch's range is in its `Pending`).
    updates: Vec<Update>,
    /// State of keys written by this group but not yet in the index: conditions of
    /// later batches in the group must see earlier ones. `None` = deleted (or
    /// already expired). Filled only when a batch reads it ([`Writer::fold_overlay`]):
    /// a group of plain writes (W3's puts; not the server's, whose PUTs read the
    /// entry they replace) never hashes or clones a key here.
    overlay: HashMap<Bytes, Option<Staged>>,
    /// How many of `pending`'s batches the overlay holds (the first ones).
    folded: usize,
    /// A put's meta section while a [`crate::Batch::carry_meta`] carry writes into it.
    scratch: Vec<u8>,
    /// The meta section of the stored entry a put replaces, read for its carried word.
    prior_meta: Vec<u8>,
    /// The carry whose words the index remembers: the first one a batch used since
    /// the store opened ([`crate::Batch::carry_meta`]).
    carry: Option<MetaCarry>,
    /// Since when written bytes wait for an fsync (interval policy).
    dirty_since: Option<Instant>,
    /// How long the last `fdatasync` took.
    last_fsync: Duration,
    /// Set when the engine can no longer trust its files (an fsync failed, or a
    /// failed write could not be cut back); every later write fails with it.
    failed: Option<String>,
    /// Where committed groups are answered (see [`Answerer`]); `None`: right here.
    answerer: Option<Answerer>,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        file: File,
        active: Arc<Segment>,
        len: u64,
        next_seq: u64,
    ) -> Writer {
        let appender = Appender::new(
            &file,
            len,
            shared.options.segment_bytes,
            append_mode(shared.options.sync),
        );
        Writer {
            shared,
            file,
            appender,
            active,
            len,
            next_seq,
            buf: Vec::new(),
            pending: Vec::new(),
            updates: Vec::new(),
            overlay: HashMap::new(),
            folded: 0,
            scratch: Vec::new(),
            prior_meta: Vec::new(),
            carry: None,
            // The records recovery found in the active segment may never have been
            // synced (the last process was killed under `never` or `interval`): count
            // them as unsynced, so the next sync, seal or backup covers them.
            dirty_since: (len > SEGMENT_HEADER_BYTES).then(Instant::now),
            last_fsync: Duration::ZERO,
            failed: None,
            answerer: None,
        }
    }

    /// The writer loop: runs until `Close` or until every sender is gone.
    pub fn run(cell: Arc<WriterCell>, rx: Receiver<Msg>) {
        let mut replies: Vec<Sender<Result<()>>> = Vec::new();
        let mut rotations: Vec<Sender<Result<()>>> = Vec::new();
        let mut snapshots: Vec<Sender<Result<Snapshot>>> = Vec::new();
        // Under `always`: how many callers the last group saw (its writes plus those
        // queued behind it when it was answered), and how long its fsync took.
        let mut callers = 0;
        let mut last_fsync = Duration::ZERO;
        {
            let mut this = cell.lock();
            if this.shared.options.sync == SyncPolicy::Always {
                this.answerer = Answerer::spawn();
            }
        }
        loop {
            let Some(first) = Writer::next_msg(&cell, &rx) else {
                break;
            };
            if callers > 1 {
                wait_for_callers(&rx, callers, (last_fsync / 2).min(GATHER_WAIT_MAX));
            }
            let mut this = cell.lock();
            let mut closing = false;
            let mut writes = 0;
            let mut taken = 0;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                taken += 1;
                match msg {
                    Msg::Write { batch, done } => {
                        writes += 1;
                        this.stage(batch, done);
                    }
                    Msg::Sync(reply) => replies.push(reply),
                    Msg::Close(reply) => {
                        replies.push(reply);
                        closing = true;
                    }
                    Msg::Rotate(reply) => rotations.push(reply),
                    Msg::Snapshot(reply) => snapshots.push(reply),
                }
                if closing || taken >= GROUP_REQUESTS_MAX || this.buf.len() >= GROUP_BYTES_MAX {
                    break;
                }
                next = rx.try_recv().ok();
            }
            // Counted before the group is answered: once answered, its callers come
            // back within microseconds, and counting those twice made a single
            // writer wait half an fsync for a second caller that does not exist.
            let behind = rx.len();
            // A failed group has already answered each of its callers with the error.
            let _ = this.commit(false);
            cell.queued.fetch_sub(writes, Ordering::AcqRel);
            if this.shared.options.sync == SyncPolicy::Always {
                callers = writes + behind;
                last_fsync = this.last_fsync;
            }
            if !(rotations.is_empty() && snapshots.is_empty() && replies.is_empty()) {
                // Writes queued before these messages are answered before them.
                this.flush_answers();
            }
            if !rotations.is_empty() {
                let result = this.rotate_if_used();
                for reply in rotations.drain(..) {
                    let _ = reply.send(result.as_ref().map(|_| ()).map_err(replicate));
                }
            }
            if !snapshots.is_empty() {
                let result = this.sync_now().map(|()| this.snapshot());
                for reply in snapshots.drain(..) {
                    let _ = reply.send(result.as_ref().map(Snapshot::clone).map_err(replicate));
                }
            }
            if !replies.is_empty() {
                let result = if closing {
                    this.close_now()
                } else {
                    this.sync_now()
                };
                for reply in replies.drain(..) {
                    let _ = reply.send(result.as_ref().map(|_| ()).map_err(replicate));
                }
            }
            if closing {
                // A caller writing directly after close must not write anymore.
                this.failed
                    .get_or_insert_with(|| "the engine was closed".into());
                if let Some(answerer) = this.answerer.take() {
                    answerer.stop();
                }
                return;
            }
            this.sync_if_due();
        }
        let mut this = cell.lock();
        let _ = this.close_now();
        if let Some(answerer) = this.answerer.take() {
            answerer.stop();
        }
    }

    /// Waits for the next message; under the interval policy, wakes up to sync when
    /// the interval since the first unsynced write has passed. `None` when every
    /// sender is gone.
    fn next_msg(cell: &WriterCell, rx: &Receiver<Msg>) -> Option<Msg> {
        // `Some(None)`: every sender is gone.
        if let Some(polled) = spin_for(|| match rx.try_recv() {
            Ok(msg) => Some(Some(msg)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(None),
        }) {
            return polled;
        }
        loop {
            let deadline = {
                let this = cell.lock();
                (this.shared.options.sync, this.dirty_since)
            };
            let deadline = match deadline {
                (SyncPolicy::Interval(every), Some(since)) => since + every,
                _ => return rx.recv().ok(),
            };
            match rx.recv_deadline(deadline) {
                Ok(msg) => return Some(msg),
                Err(RecvTimeoutError::Timeout) => {
                    let _ = cell.lock().sync_now();
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn sync_if_due(&mut self) {
        if let (SyncPolicy::Interval(every), Some(since)) =
            (self.shared.options.sync, self.dirty_since)
            && since.elapsed() >= every
        {
            let _ = self.sync_now();
        }
    }

    /// The live version of `key` as the group sees it.
    fn current_version(&self, key: &[u8], now_ms: u64) -> Option<u64> {
        if let Some(state) = self.overlay.get(key) {
            return state.map(|s| s.version);
        }
        self.shared
            .index
            .get(key)
            .filter(|loc| !loc.is_expired(now_ms))
            .map(|loc| loc.version)
    }

    /// Checks a batch's conditions and encodes it into the group buffer.
    fn stage(&mut self, batch: Batch, done: Done) {
        if let Some(reason) = &self.failed {
            return done.fail(Error::Closed(reason.clone()));
        }
        if batch.is_empty() {
            return done.succeed(0..0, Vec::new());
        }
        let now_ms = self.shared.options.clock.now_ms();
        if !batch.conditions.is_empty() {
            self.fold_overlay(now_ms);
        }
        for (index, (key, expect)) in batch.conditions.iter().enumerate() {
            let current = self.current_version(key, now_ms);
            let holds = match expect {
                Expect::Absent => current.is_none(),
                Expect::Version(v) => current == Some(*v),
                Expect::Present => current.is_some(),
            };
            if !holds {
                return done.fail(Error::ConditionFailed { index });
            }
        }
        if let Err(e) = self.versions_left(batch.ops.len() as u64) {
            return done.fail(e);
        }
        let size: usize = batch.ops.iter().map(op_len).sum();
        if let Err(e) = self.make_room(size) {
            return done.fail(e);
        }
        self.encode(batch, done, now_ms);
    }

    /// Fails when `n` more versions would pass [`SEQ_LIMIT`] (only reachable from a
    /// store whose files claim versions near the limit).
    fn versions_left(&self, n: u64) -> Result<()> {
        if self.next_seq.saturating_add(n) > SEQ_LIMIT {
            return Err(Error::Closed(
                "the store has used up its versions (2^63) and takes no more writes".into(),
            ));
        }
        Ok(())
    }

    /// When `size` more bytes would not fit in the active segment (and it holds a
    /// record), commits the group so far, sealed, and starts the next segment.
    fn make_room(&mut self, size: usize) -> Result<()> {
        let used = self.len + self.buf.len() as u64;
        if used > SEGMENT_HEADER_BYTES && used + size as u64 > self.shared.options.segment_bytes {
            self.commit(true)?;
            self.rotate()?;
        }
        Ok(())
    }

    /// Writes one checked operation without conditions as a group of its own, as
    /// `stage` and `commit` would for a batch of one with a versions answer, and
    /// returns its version. Called with no group open (the lock was free and nothing
    /// queued).
    fn write_one(&mut self, op: Op) -> Result<u64> {
        debug_assert!(self.buf.is_empty() && self.pending.is_empty());
        if let Some(reason) = &self.failed {
            return Err(Error::Closed(reason.clone()));
        }
        let now_ms = self.shared.options.clock.now_ms();
        self.versions_left(1)?;
        self.make_room(op_len(&op))?;
        let seq = self.next_seq;
        let meta = match &op {
            Op::Put { options, .. } => &options.meta[..],
            Op::Delete { .. } => &[],
        };
        let update = encode_op(
            &mut self.buf,
            (self.active.id, self.len),
            &op,
            meta,
            (seq, FLAG_COMMIT, now_ms),
        );
        self.next_seq += 1;
        self.write_buffer(false, 1)?;
        let index = &self.shared.index;
        match update {
            Some(loc) => index.insert(op.key(), loc, NO_CARRY),
            None => index.remove(op.key()),
        };
        self.shared
            .counters
            .last_version
            .fetch_max(seq, Ordering::Relaxed);
        Ok(seq)
    }

    /// The live entry `key` has before the next operation is staged: from the group
    /// buffer if this group wrote it, else from the index and, only when `with_meta`,
    /// its segment: the record is read whole and CRC-checked, its meta copied into
    /// `self.prior_meta` — unless `remembered` (the batch's carry is the one the index
    /// remembers words for) and the index knows the entry's word.
    ///
    /// `looked_up` is the key's index entry when the caller already read it (see
    /// [`Writer::look_up_batch`]); it is used for the first attempt only.
    fn previous(
        &mut self,
        key: &[u8],
        now_ms: u64,
        (with_meta, remembered): (bool, bool),
        mut looked_up: Option<Option<Location>>,
    ) -> Result<Option<Prior>> {
        if let Some(state) = self.overlay.get(key) {
            return Ok(state.map(|s| Prior::Staged(s.at)));
        }
        const ATTEMPTS_MAX: usize = 8;
        for _ in 0..ATTEMPTS_MAX {
            let (found, word) = if remembered {
                match self.shared.index.get_carried(key) {
                    Some((loc, word)) => (Some(loc), word),
                    None => (None, NO_CARRY),
                }
            } else {
                let found = looked_up
                    .take()
                    .unwrap_or_else(|| self.shared.index.get(key));
                (found, NO_CARRY)
            };
            let Some(loc) = found else {
                return Ok(None);
            };
            if loc.is_expired(now_ms) {
                return Ok(None);
            }
            if word != NO_CARRY {
                return Ok(Some(Prior::Remembered { word }));
            }
            let stored = Prior::Stored {
                version: loc.version,
                written_at_ms: 0,
                record: None,
            };
            if !with_meta {
                return Ok(Some(stored));
            }
            // Compaction may retire the segment between the two lookups; the index
            // then already points at the new copy.
            let retired;
            let seg: &Segment = if loc.segment == self.active.id {
                &self.active
            } else {
                match self.shared.try_segment(loc.segment) {
                    Some(seg) => {
                        retired = seg;
                        &retired
                    }
                    None => continue,
                }
            };
            let offset = u64::from(loc.offset);
            // The whole record is read and its CRC checked before its meta is trusted,
            // as a read of the key would: a damaged record fails this batch (500 at the
            // server) instead of lending a made-up creation time to a valid new record.
            // Sealed segments are mapped, so this copies only the meta section.
            let prior_meta = &mut self.prior_meta;
            let checked = seg.read_with(offset, loc.len as usize, |bytes| {
                let header = record::decode(bytes)?;
                prior_meta.clear();
                prior_meta.extend_from_slice(&bytes[header.meta_range()]);
                Ok((header, bytes[header.key_range()] == *key))
            })?;
            let (header, matches) =
                checked.map_err(|e| record::corrupt(seg.path.clone(), offset, e))?;
            if header.seq != loc.version || !matches {
                return Err(mismatch(seg, loc));
            }
            return Ok(Some(Prior::Stored {
                version: header.seq,
                written_at_ms: header.written_at_ms,
                record: Some((seg.id, offset)),
            }));
        }
        Err(Error::Internal(
            "the key's segment kept being retired while its entry was read".into(),
        ))
    }

    /// The index entries of a large batch's keys, read together ([`Index::get_many`]),
    /// each with where its key sits (the batch's index update reuses it), and with
    /// `records`, the replaced records' lines prefetched: a bulk write reads
    /// every key's entry (and, for a meta carry without remembered words, its record)
    /// before it encodes, and one at a time those reads are a few cache misses each,
    /// in a row, on the writer thread. Empty for a small batch (the loop reads each entry as it goes).
    ///
    /// [`Index::get_many`]: crate::index::Index::get_many
    fn look_up_batch(&self, ops: &[Op], records: bool) -> Vec<(Located, Option<Location>)> {
        if ops.len() < LOOK_UP_TOGETHER_MIN {
            return Vec::new();
        }
        let keys: Vec<&[u8]> = ops.iter().map(Op::key).collect();
        let found = self.shared.index.get_many(&keys);
        if records {
            let segments = self.shared.segments();
            for (_, loc) in &found {
                let Some(loc) = loc else {
                    continue;
                };
                if let Some(Some(Ok(mapped))) = segments
                    .get(&loc.segment)
                    .map(|seg| seg.mapped_range(u64::from(loc.offset), loc.len as usize))
                {
                    mapped.prefetch();
                }
            }
        }
        found
    }

    /// Writes into a copy of `meta` (in `self.scratch`) the word `carry` takes from
    /// `prior`.
    fn carry_over(&mut self, carry: MetaCarry, meta: &[u8], prior: &Prior) -> Result<()> {
        let damaged = |(segment, offset): (u32, u64), reason: &str| Error::Corrupt {
            file: self.shared.dir.join(segment::file_name(segment)),
            offset,
            reason: format!("the meta section of the entry a put replaces: {reason}"),
        };
        let word = match prior {
            Prior::Remembered { word } => Ok(*word),
            Prior::Staged(at) => {
                let bytes = &self.buf[*at..];
                // Encoded by this writer moments ago: failing to decode it is a bug.
                let header = record::decode_header(bytes).map_err(|e| {
                    Error::Internal(format!("the group buffer does not decode: {e:?}"))
                })?;
                let previous = Previous {
                    meta: &bytes[header.meta_range()],
                    version: header.seq,
                    written_at_ms: header.written_at_ms,
                };
                (carry.word)(&previous)
                    .map_err(|reason| damaged((self.active.id, self.len + *at as u64), reason))
            }
            Prior::Stored {
                version,
                written_at_ms,
                record,
            } => {
                let previous = Previous {
                    meta: &self.prior_meta,
                    version: *version,
                    written_at_ms: *written_at_ms,
                };
                // Read with its meta whenever a carry runs.
                (carry.word)(&previous)
                    .map_err(|reason| damaged(record.unwrap_or_default(), reason))
            }
        }?;
        self.scratch.clear();
        self.scratch.extend_from_slice(meta);
        (carry.write)(word, &mut self.scratch).map_err(|reason| {
            Error::Internal(format!(
                "a put's meta section does not take its carried word: {reason}"
            ))
        })
    }

    /// Encodes a checked batch into the group buffer. When the batch wants the entries
    /// its operations replace (a detailed answer, a meta carry) and reading one fails,
    /// the batch is taken back out of the buffer and fails alone.
    fn encode(&mut self, batch: Batch, done: Done, now_ms: u64) {
        let detailed = matches!(done, Done::Detailed(_));
        let carry = batch.meta_carry;
        // The index remembers the words of the first carry a batch used.
        let remembered = carry.is_some_and(|c| self.carry.get_or_insert(c).same_as(&c));
        // Only a batch that reads the group's state keeps the overlay up to date, for
        // its own later operations too.
        let reads_group = carry.is_some() || detailed;
        if reads_group {
            self.fold_overlay(now_ms);
        }
        let undo_from = (self.buf.len(), self.next_seq, self.updates.len());
        // The overlay's state of each operation's key before it, in step with the
        // operations: only kept when the batch can fail part-way.
        let mut undo: Vec<Option<Option<Staged>>> =
            Vec::with_capacity(if reads_group { batch.ops.len() } else { 0 });
        let last = batch.ops.len() - 1;
        let mut replaced = Vec::with_capacity(if detailed { batch.ops.len() } else { 0 });
        let mut looked_up = if reads_group {
            self.look_up_batch(&batch.ops, carry.is_some() && !remembered)
        } else {
            Vec::new()
        }
        .into_iter();
        for (i, op) in batch.ops.iter().enumerate() {
            let seq = self.next_seq;
            let at = self.buf.len();
            let commit = if i == last { FLAG_COMMIT } else { 0 };
            let is_put = matches!(op, Op::Put { .. });
            // One per op (when there are any), used or not, to stay in step.
            let (located, found) = match looked_up.next() {
                Some((located, found)) => (Some(located), Some(found)),
                None => (None, None),
            };
            let prior = if detailed || (carry.is_some() && is_put) {
                let with_meta = carry.is_some() && is_put;
                match self.previous(op.key(), now_ms, (with_meta, remembered), found) {
                    Ok(prior) => prior,
                    Err(e) => return self.take_back(undo_from, undo, &batch.ops, done, e),
                }
            } else {
                None
            };
            if detailed {
                replaced.push(prior.is_some());
            }
            let meta: &[u8] = match (op, carry, &prior) {
                (Op::Put { options, .. }, Some(carry), Some(prior)) => {
                    if let Err(e) = self.carry_over(carry, &options.meta, prior) {
                        return self.take_back(undo_from, undo, &batch.ops, done, e);
                    }
                    &self.scratch
                }
                (Op::Put { options, .. }, _, _) => &options.meta,
                (Op::Delete { .. }, _, _) => &[],
            };
            // The word this put passes on, remembered for the next put of its key. A
            // section the carry cannot read is not remembered: that next put reads
            // the record and fails there.
            let word = match carry {
                Some(carry) if remembered && is_put => (carry.word)(&Previous {
                    meta,
                    version: seq,
                    written_at_ms: now_ms,
                })
                .ok()
                .filter(|&w| w != NO_CARRY)
                .unwrap_or(NO_CARRY),
                _ => NO_CARRY,
            };
            let update = encode_op(
                &mut self.buf,
                (self.active.id, self.len),
                op,
                meta,
                (seq, commit, now_ms),
            );
            self.next_seq += 1;
            if reads_group {
                let before = self
                    .overlay
                    .insert(key_of(op).clone(), staged(update, at, now_ms));
                undo.push(before);
            }
            self.updates.push(Update {
                loc: update,
                carry: word,
                at,
                located,
            });
        }
        self.pending.push(Pending {
            done,
            ops: batch.ops,
            versions: undo_from.1..self.next_seq,
            replaced,
            updates: undo_from.2..self.updates.len(),
        });
        if reads_group {
            self.folded = self.pending.len();
        }
    }

    /// Brings the overlay up to date with every batch staged so far, for a batch that
    /// reads the group's state (its conditions, a detailed answer, a meta carry). An
    /// entry that has expired by `now_ms` counts as absent.
    fn fold_overlay(&mut self, now_ms: u64) {
        for p in &self.pending[self.folded..] {
            for (op, update) in p.ops.iter().zip(&self.updates[p.updates.clone()]) {
                self.overlay
                    .insert(key_of(op).clone(), staged(update.loc, update.at, now_ms));
            }
        }
        self.folded = self.pending.len();
    }

    /// Takes a half-encoded batch back out of the group buffer and fails it. The
    /// batch read the group's state, so the overlay held every batch before it.
    fn take_back(
        &mut self,
        (buf_len, next_seq, updates_len): (usize, u64, usize),
        undo: Vec<Option<Option<Staged>>>,
        ops: &[Op],
        done: Done,
        e: Error,
    ) {
        self.buf.truncate(buf_len);
        self.next_seq = next_seq;
        debug_assert_eq!(undo.len(), self.updates.len() - updates_len);
        self.updates.truncate(updates_len);
        for (before, op) in undo.into_iter().zip(ops).rev() {
            match before {
                Some(state) => self.overlay.insert(key_of(op).clone(), state),
                None => self.overlay.remove(op.key()),
            };
        }
        done.fail(e);
    }

    /// Writes the group buffer, syncs per policy (always when `seal` is set), then
    /// publishes the group to the index and answers its callers.
    fn commit(&mut self, seal: bool) -> Result<()> {
        let records = self.updates.len();
        let outcome = self.write_buffer(seal, records);
        let pending = std::mem::take(&mut self.pending);
        self.overlay.clear();
        self.folded = 0;
        let mut answers = Vec::with_capacity(pending.len());
        let result = match outcome {
            Ok(()) => {
                let index = &self.shared.index;
                // Each update's lines are asked for this many updates ahead.
                const AHEAD: usize = 8;
                let mut ahead = self.updates.iter().skip(AHEAD);
                for p in &pending {
                    for (op, update) in p.ops.iter().zip(&self.updates[p.updates.clone()]) {
                        if let Some(at) = ahead.next().and_then(|u| u.located) {
                            at.prefetch();
                        }
                        let key = op.key();
                        match (update.loc, update.located) {
                            (Some(loc), Some(at)) => {
                                index.insert_located(key, at, loc, update.carry)
                            }
                            (Some(loc), None) => index.insert(key, loc, update.carry),
                            (None, _) => index.remove(key),
                        };
                    }
                }
                for p in pending {
                    if !p.versions.is_empty() {
                        self.shared
                            .counters
                            .last_version
                            .fetch_max(p.versions.end - 1, Ordering::Relaxed);
                    }
                    answers.push(Answer::Succeed(p.done, p.versions, p.replaced, p.ops));
                }
                Ok(())
            }
            Err(e) => {
                for p in pending {
                    answers.push(Answer::Fail(p.done, replicate(&e)));
                }
                Err(e)
            }
        };
        self.updates.clear();
        self.answer(answers);
        result
    }

    /// Answers a committed group. Callbacks (`apply_then`) run here, in commit order:
    /// they are quick by contract, and handing them over cost a wake-up of the answer
    /// thread per group, which the server's durable PUTs paid in throughput. Wake-ups
    /// of blocked callers go to the answer thread when there is one, except a lone
    /// one with nothing ahead of it there (one writer saves the extra wake).
    fn answer(&mut self, answers: Vec<Answer>) {
        let mut wakes = Vec::new();
        let mut answers = answers.into_iter();
        while let Some(answer) = answers.next() {
            if answer.wakes_a_thread() {
                if wakes.capacity() == 0 {
                    // One allocation for a group of blocked callers (W3's 64).
                    wakes.reserve_exact(answers.len() + 1);
                }
                wakes.push(answer);
            } else {
                answer.run();
            }
        }
        if wakes.is_empty() {
            return;
        }
        let wakes = match &self.answerer {
            Some(answerer)
                if wakes.len() > 1 || answerer.outstanding.load(Ordering::Acquire) != 0 =>
            {
                answerer.outstanding.fetch_add(1, Ordering::AcqRel);
                match answerer.tx.send(wakes) {
                    Ok(()) => return,
                    // The answer thread is gone: answer here.
                    Err(crossbeam_channel::SendError(wakes)) => {
                        answerer.outstanding.fetch_sub(1, Ordering::AcqRel);
                        self.answerer = None;
                        wakes
                    }
                }
            }
            _ => wakes,
        };
        wakes.into_iter().for_each(Answer::run);
    }

    /// Returns once every answer handed to the answer thread has run.
    fn flush_answers(&mut self) {
        let Some(answerer) = &self.answerer else {
            return;
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        answerer.outstanding.fetch_add(1, Ordering::AcqRel);
        if answerer.tx.send(vec![Answer::Flushed(tx)]).is_err() || rx.recv().is_err() {
            // The thread is gone; nothing it held can still run.
            self.answerer = None;
        }
    }

    /// Appends the group buffer, which holds `records` records, and syncs per policy
    /// (always when `seal` is set).
    fn write_buffer(&mut self, seal: bool, records: usize) -> Result<()> {
        if self.buf.is_empty() {
            return if seal { self.sync_now() } else { Ok(()) };
        }
        // A copy into the mapping, or one `pwrite` (see `crate::append`). A failed
        // append leaves nothing of the buffer in the file, or sets `failed`.
        if let Err(e) = self.appender.append(&self.file, self.len, &self.buf) {
            self.buf.clear();
            let name = segment::file_name(self.active.id);
            let e = match e {
                AppendError::Clean(e) => e,
                AppendError::Uncut { write, cut } => {
                    self.failed = Some(format!("could not cut back a failed write: {cut}"));
                    write
                }
            };
            return Err(Error::io(format!("appending to segment {name}"), e));
        }
        self.len += self.buf.len() as u64;
        self.buf.clear();
        // Release: the bytes just copied into the mapping (or written) happen-before
        // this length, which readers load with Acquire before reading below it.
        self.active.set_len(self.len);
        let counters = &self.shared.counters;
        counters.write_batches.fetch_add(1, Ordering::Relaxed);
        counters
            .records_written
            .fetch_add(records as u64, Ordering::Relaxed);
        self.dirty_since.get_or_insert_with(Instant::now);
        if seal || self.shared.options.sync == SyncPolicy::Always {
            self.sync_now()?;
        }
        Ok(())
    }

    /// `fdatasync` of the active segment if anything is unsynced. A failed fsync
    /// leaves the page cache in an unknown state, so the writer stops taking writes.
    fn sync_now(&mut self) -> Result<()> {
        if let Some(reason) = &self.failed {
            return Err(Error::Closed(reason.clone()));
        }
        if self.dirty_since.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let synced = if self.shared.options.fault.fails("writer:fsync") {
            Err(std::io::Error::other("injected fsync failure"))
        } else {
            self.file.sync_data()
        };
        if let Err(e) = synced {
            self.failed = Some(format!("fsync failed: {e}"));
            return Err(Error::io("syncing the active segment", e));
        }
        self.last_fsync = started.elapsed();
        self.dirty_since = None;
        self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Syncs, then cuts the active segment back to its written length (see
    /// [`Appender::seal`]): a closed store leaves no preallocated zeros behind.
    fn close_now(&mut self) -> Result<()> {
        self.sync_now()?;
        self.seal_file()
    }

    /// Cuts the active segment file back to its written length, durably, and stops
    /// appending to it through the mapping.
    fn seal_file(&mut self) -> Result<()> {
        self.appender.seal(&self.file, self.len).map_err(|e| {
            Error::io(
                format!(
                    "cutting segment {} back to its written length",
                    segment::file_name(self.active.id)
                ),
                e,
            )
        })
    }

    /// The store's files now: every segment in the map and the active segment's
    /// written length. Called right after a sync with the group committed, so that
    /// length is durable and ends at a batch boundary.
    fn snapshot(&self) -> Snapshot {
        debug_assert!(self.buf.is_empty() && self.dirty_since.is_none());
        let sealed = self
            .shared
            .segments()
            .values()
            .filter(|s| s.id != self.active.id)
            .cloned()
            .collect();
        Snapshot {
            sealed,
            active: Arc::clone(&self.active),
            active_len: self.len,
            last_version: self.shared.counters.last_version.load(Ordering::Relaxed),
        }
    }

    /// Seals the active segment if it holds any record (for manual compaction).
    fn rotate_if_used(&mut self) -> Result<()> {
        if self.len <= SEGMENT_HEADER_BYTES {
            return Ok(());
        }
        self.sync_now()?;
        self.rotate()
    }

    /// Seals the active segment and starts the next one. Called with the buffer empty
    /// and the active segment synced.
    fn rotate(&mut self) -> Result<()> {
        debug_assert!(self.buf.is_empty() && self.pending.is_empty());
        // The old segment ends exactly at its written length, durably, before the next
        // segment exists: only the newest log segment may end in preallocated zeros
        // (recovery cuts them), a sealed one never does. If this fails, writing goes
        // on in the old segment (with `pwrite`) and the next seal tries again.
        self.seal_file()?;
        let dir = &self.shared.dir;
        let old_id = self.active.id;
        let new_id = self.shared.next_segment_id.fetch_add(1, Ordering::Relaxed);
        if new_id == u32::MAX {
            return Err(Error::Closed("segment ids are exhausted".into()));
        }
        let file = segment::create(dir, new_id, self.next_seq)?;
        let path = dir.join(segment::file_name(new_id));
        let reader = match file.try_clone() {
            Ok(reader) => reader,
            Err(e) => {
                // Writing goes on in the old segment; the new one must not stay on disk.
                drop(file);
                segment::remove_segment_file(dir, &path);
                return Err(Error::io("opening a read handle of the new segment", e));
            }
        };
        let header = SegmentHeader {
            base_seq: self.next_seq,
            kind: Kind::Log,
        };
        let active = Arc::new(Segment::active(
            path,
            new_id,
            header,
            reader,
            SEGMENT_HEADER_BYTES,
            self.shared.options.segment_bytes,
        ));
        self.shared.change_segments(|segments| {
            match Segment::sealed(self.active.path.clone(), old_id) {
                Ok(sealed) => {
                    segments.insert(old_id, Arc::new(sealed));
                }
                // Still readable through positioned reads; only the zero-copy path is
                // lost.
                Err(e) => {
                    tracing::warn!(segment = old_id, error = %e, "could not map a sealed segment")
                }
            }
            segments.insert(new_id, Arc::clone(&active));
            self.shared.active_id.store(new_id, Ordering::Release);
        });
        self.appender = Appender::new(
            &file,
            SEGMENT_HEADER_BYTES,
            self.shared.options.segment_bytes,
            append_mode(self.shared.options.sync),
        );
        self.file = file;
        self.active = active;
        self.len = SEGMENT_HEADER_BYTES;
        Ok(())
    }
}

/// The live entry an operation replaces: staged in this group (its record's start in
/// the group buffer), stored with its carried word remembered by the index, or stored
/// (its meta read into `Writer::prior_meta` only when a carry needs it).
enum Prior {
    Staged(usize),
    Remembered {
        word: u64,
    },
    /// `record`: the segment id and offset of its record, when it was read
    /// (`with_meta`).
    Stored {
        version: u64,
        written_at_ms: u64,
        record: Option<(u32, u64)>,
    },
}

/// Encodes `op` as the record `seq` (with `commit` among its flags, written at
/// `now_ms`; a put with `meta` as its meta section) at the end of `buf`, the group
/// buffer of segment `at.0` whose bytes go after its `at.1` written bytes. Returns the
/// put's index entry, `None` for a delete.
fn encode_op(
    buf: &mut Vec<u8>,
    (segment, written): (u32, u64),
    op: &Op,
    meta: &[u8],
    (seq, commit, now_ms): (u64, u8, u64),
) -> Option<Location> {
    let offset = written + buf.len() as u64;
    match op {
        Op::Put {
            key,
            value,
            options,
        } => {
            let expires_at_ms = options.expires_at_ms.map_or(0, |t| t.max(1));
            record::encode(
                &RecordRef {
                    flags: commit,
                    seq,
                    written_at_ms: now_ms,
                    expires_at_ms,
                    key,
                    meta,
                    value,
                },
                buf,
            );
            Some(Location {
                segment,
                offset: offset as u32,
                len: (written + buf.len() as u64 - offset) as u32,
                expires_at_ms,
                version: seq,
            })
        }
        Op::Delete { key } => {
            record::encode(
                &RecordRef {
                    flags: FLAG_TOMBSTONE | commit,
                    seq,
                    written_at_ms: now_ms,
                    expires_at_ms: 0,
                    key,
                    meta: &[],
                    value: &[],
                },
                buf,
            );
            None
        }
    }
}

/// The operation's key, shared.
fn key_of(op: &Op) -> &Bytes {
    match op {
        Op::Put { key, .. } | Op::Delete { key } => key,
    }
}

/// How later batches of the group see a staged write whose record starts at `at` in
/// the group buffer: `None` for a delete or an entry expired by `now_ms`.
fn staged(update: Option<Location>, at: usize, now_ms: u64) -> Option<Staged> {
    update.filter(|l| !l.is_expired(now_ms)).map(|l| Staged {
        version: l.version,
        at,
    })
}

fn op_len(op: &Op) -> usize {
    match op {
        Op::Put {
            key,
            value,
            options,
        } => record::encoded_len_max(key.len(), options.meta.len(), value.len()),
        Op::Delete { key } => record::encoded_len_max(key.len(), 0, 0),
    }
}

/// One error for each of several callers (I/O errors are not `Clone`).
pub(crate) fn replicate(e: &Error) -> Error {
    match e {
        Error::StorageFull { context } => Error::StorageFull {
            context: context.clone(),
        },
        Error::Io { context, source } => Error::Io {
            context: context.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Internal(reason) => Error::Internal(reason.clone()),
        other => Error::Closed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gather_waits_for_every_caller_of_a_few_and_for_half_of_many() {
        // A few writers: one group of all of them per fsync.
        for callers in 0..=GATHER_ALL_UP_TO {
            assert_eq!(gather_target(callers), callers);
        }
        // Many: half, so two groups are in flight, but never fewer than the few.
        assert_eq!(gather_target(12), GATHER_ALL_UP_TO);
        assert_eq!(gather_target(16), 8);
        assert_eq!(gather_target(64), 32);
    }
}
