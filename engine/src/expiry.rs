//! Keys with an expiry, ordered by it, so a sweep visits only what is due.

use std::collections::BTreeSet;
use std::sync::Mutex;

use bytes::Bytes;

/// Most keys one sweep tick removes, so a sweep never holds the index for long.
pub(crate) const SWEEP_KEYS_MAX: usize = 10_000;

/// `(expires_at_ms, key)` for every indexed entry that expires. A `std` mutex: it is
/// held only for a set insert/remove or to pop a bounded run of due entries.
#[derive(Debug, Default)]
pub(crate) struct Expiries {
    due: Mutex<BTreeSet<(u64, Bytes)>>,
}

impl Expiries {
    pub fn add(&self, expires_at_ms: u64, key: Bytes) {
        self.lock().insert((expires_at_ms, key));
    }

    pub fn remove(&self, expires_at_ms: u64, key: &Bytes) {
        // The tuple must be owned to look up; cloning `Bytes` is a refcount bump.
        self.lock().remove(&(expires_at_ms, key.clone()));
    }

    /// Takes up to `max` entries due at `now_ms` (expiry ≤ now), earliest first.
    pub fn take_due(&self, now_ms: u64, max: usize) -> Vec<(u64, Bytes)> {
        let mut due = self.lock();
        let mut taken = Vec::new();
        while taken.len() < max {
            match due.first() {
                Some((t, _)) if *t <= now_ms => {}
                _ => break,
            }
            if let Some(entry) = due.pop_first() {
                taken.push(entry);
            }
        }
        taken
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, Bytes)>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_due_entries_are_taken_earliest_first_and_bounded() {
        let e = Expiries::default();
        e.add(30, Bytes::from_static(b"c"));
        e.add(10, Bytes::from_static(b"a"));
        e.add(20, Bytes::from_static(b"b"));
        e.remove(20, &Bytes::from_static(b"b"));
        assert_eq!(e.take_due(5, 10), vec![]);
        assert_eq!(e.take_due(30, 1), vec![(10, Bytes::from_static(b"a"))]);
        assert_eq!(e.take_due(30, 10), vec![(30, Bytes::from_static(b"c"))]);
        assert_eq!(e.take_due(u64::MAX, 10), vec![]);
    }
}
