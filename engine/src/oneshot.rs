//! A one-answer handoff from the writer thread to a blocked caller: the answer is put
//! in a slot and the caller's thread unparked.
//!
//! `Engine::apply` used a `crossbeam_channel::bounded(1)` for this. Its `recv` backs
//! off with up to four `sched_yield`s before it parks; with 64 callers on two cores
//! that was ~4 yields (context switches) per durable put, taken from the writer
//! thread while it answered the group. Here a caller that is told to spin polls one
//! flag for at most [`SPIN_BEFORE_SLEEP`](crate::writer::SPIN_BEFORE_SLEEP) and then
//! parks: no yields, one `futex` wait, and one `futex` wake (none when the caller has
//! not parked yet).
//!
//! A group's answers can be given together ([`answer_group`]): every slot is filled
//! first, then the wake-ups are shared out through a [`Relay`] — the answering thread
//! and every caller already woken each take the next caller not yet woken. Waking a
//! parked thread is the costly part (a futex wake, ~10 µs of the waker's time on a
//! small VM); shared, a group of 64 is woken by both cores at once instead of one
//! thread in turn.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

use crate::writer::spin_for;

struct Slot<T> {
    /// Set (release) once `value` holds the answer.
    ready: AtomicBool,
    value: Mutex<Option<Answered<T>>>,
    waiter: Thread,
}

struct Answered<T> {
    /// `None`: the sending side was dropped without an answer.
    value: Option<T>,
    /// When the answer came with its group's: the wake-ups this caller helps with.
    relay: Option<Arc<Relay>>,
}

/// The wake-ups of one group's callers, taken one at a time by whoever is free: the
/// answering thread and the callers it (or another caller) woke.
struct Relay {
    waiters: Vec<Thread>,
    /// The next waiter to wake; past the end once all are taken.
    next: AtomicUsize,
}

impl Relay {
    /// Wakes the next caller nobody has woken yet; `false` when none is left.
    fn wake_next(&self) -> bool {
        let next = self.next.fetch_add(1, Ordering::Relaxed);
        match self.waiters.get(next) {
            Some(waiter) => {
                waiter.unpark();
                true
            }
            None => false,
        }
    }
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

/// Answers many callers: fills every slot, then wakes their threads through one
/// [`Relay`] that the woken callers help along. Returns once every wake-up has been
/// taken (the last few may still be running on callers' threads).
pub(crate) fn answer_group<T>(answers: impl IntoIterator<Item = (Sender<T>, T)>) {
    let answers: Vec<(Arc<Slot<T>>, T)> = answers
        .into_iter()
        .filter_map(|(mut sender, value)| sender.0.take().map(|slot| (slot, value)))
        .collect();
    if answers.is_empty() {
        return;
    }
    let relay = Arc::new(Relay {
        waiters: answers
            .iter()
            .map(|(slot, _)| slot.waiter.clone())
            .collect(),
        next: AtomicUsize::new(0),
    });
    for (slot, value) in answers {
        slot.fill(Some(value), Some(Arc::clone(&relay)));
    }
    while relay.wake_next() {}
}

impl<T> Slot<T> {
    /// Puts the answer in and sets `ready`; waking the caller is left to the caller
    /// of this.
    fn fill(&self, value: Option<T>, relay: Option<Arc<Relay>>) {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(Answered { value, relay });
        self.ready.store(true, Ordering::Release);
    }
}

impl<T> Sender<T> {
    pub(crate) fn send(mut self, value: T) {
        self.fill_and_wake(Some(value));
    }

    fn fill_and_wake(&mut self, value: Option<T>) {
        if let Some(slot) = self.0.take() {
            slot.fill(value, None);
            // A park token if the caller is not parked yet: its next park returns at
            // once and it finds `ready` set.
            slot.waiter.unpark();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.fill_and_wake(None);
    }
}

impl<T> Receiver<T> {
    /// The answer; `None` when the sender was dropped without one. With `spin`, polls
    /// for a bounded time before parking. Must be called on the thread that made the
    /// pair. An answer given with its group's ([`answer_group`]) first wakes one more
    /// caller of the group, if any is left.
    pub(crate) fn wait(self, spin: bool) -> Option<T> {
        let slot = &self.0;
        let ready = || slot.ready.load(Ordering::Acquire).then_some(());
        if !(spin && spin_for(ready).is_some()) {
            // `park` may return spuriously or for an older token: check again.
            while ready().is_none() {
                std::thread::park();
            }
        }
        let Answered { value, relay } = slot
            .value
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        if let Some(relay) = relay {
            relay.wake_next();
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each of `callers` threads makes a pair, hands its sender over and waits; the
    /// senders are answered together. Returns what each caller received.
    fn answer_together(callers: u64, wait: impl Fn(u64) -> bool + Sync) -> Vec<Option<u64>> {
        let (senders_tx, senders_rx) = crossbeam_channel::unbounded();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..callers)
                .map(|i| {
                    let (senders_tx, wait) = (senders_tx.clone(), &wait);
                    scope.spawn(move || {
                        let (tx, rx) = pair::<u64>();
                        senders_tx
                            .send((i, tx))
                            .expect("the test holds the receiver");
                        // A caller that never waits leaves its wake-up to the others.
                        wait(i).then(|| rx.wait(false)).flatten()
                    })
                })
                .collect();
            let senders: Vec<_> = senders_rx.iter().take(callers as usize).collect();
            answer_group(senders.into_iter().map(|(i, tx)| (tx, i * 10)));
            handles
                .into_iter()
                .map(|h| h.join().expect("caller thread"))
                .collect()
        })
    }

    #[test]
    fn a_group_answer_reaches_every_caller_with_its_own_value() {
        let got = answer_together(64, |_| true);
        let want: Vec<_> = (0..64).map(|i| Some(i * 10)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn callers_that_do_not_wait_leave_no_one_asleep() {
        // Every third caller takes no part in the relay; the rest must still all be
        // woken (a missed wake-up hangs this test).
        let got = answer_together(48, |i| !i.is_multiple_of(3));
        for (i, got) in got.into_iter().enumerate() {
            let i = i as u64;
            assert_eq!(got, (!i.is_multiple_of(3)).then_some(i * 10), "caller {i}");
        }
    }

    #[test]
    fn a_dropped_sender_answers_nothing() {
        let (tx, rx) = pair::<u64>();
        drop(tx);
        assert_eq!(rx.wait(false), None);
    }
}
