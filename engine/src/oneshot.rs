//! A one-answer handoff from the writer thread to a blocked caller: the answer is put
//! in a slot and the caller's thread unparked.
//!
//! `Engine::apply` used a `crossbeam_channel::bounded(1)` for this. Its `recv` backs
//! off with up to four `sched_yield`s before it parks; with 64 callers on two cores
//! that was ~4 yields (context switches) per durable put, taken from the writer
//! thread while it answered the group. Here a caller that is told to spin polls one
//! flag for at most [`SPIN_BEFORE_SLEEP`](crate::writer::SPIN_BEFORE_SLEEP) and then
//! parks: no yields, one `futex` wait, and one `futex` wake by the writer (none when
//! the caller has not parked yet).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

use crate::writer::spin_for;

struct Slot<T> {
    /// Set (release) once `value` holds the answer.
    ready: AtomicBool,
    /// `Some(None)`: the sending side was dropped without an answer.
    value: Mutex<Option<Option<T>>>,
    waiter: Thread,
}

/// The writer's side: answers once; dropped unanswered, it wakes the caller with
/// nothing (the writer stopped).
pub(crate) struct Sender<T>(Option<Arc<Slot<T>>>);

/// The caller's side.
pub(crate) struct Receiver<T>(Arc<Slot<T>>);

/// A pair whose receiver must be waited on by the calling thread (the one unparked).
pub(crate) fn pair<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot {
        ready: AtomicBool::new(false),
        value: Mutex::new(None),
        waiter: std::thread::current(),
    });
    (Sender(Some(Arc::clone(&slot))), Receiver(slot))
}

impl<T> Sender<T> {
    pub(crate) fn send(mut self, value: T) {
        self.fill(Some(value));
    }

    fn fill(&mut self, value: Option<T>) {
        if let Some(slot) = self.0.take() {
            *slot.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
            slot.ready.store(true, Ordering::Release);
            // A park token if the caller is not parked yet: its next park returns at
            // once and it finds `ready` set.
            slot.waiter.unpark();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.fill(None);
    }
}

impl<T> Receiver<T> {
    /// The answer; `None` when the sender was dropped without one. With `spin`, polls
    /// for a bounded time before parking. Must be called on the thread that made the
    /// pair.
    pub(crate) fn wait(self, spin: bool) -> Option<T> {
        let slot = &self.0;
        let ready = || slot.ready.load(Ordering::Acquire).then_some(());
        if !(spin && spin_for(ready).is_some()) {
            // `park` may return spuriously or for an older token: check again.
            while ready().is_none() {
                std::thread::park();
            }
        }
        slot.value
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .flatten()
    }
}
