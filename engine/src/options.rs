//! How an engine is configured: segment size, sync policy, clock.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default size at which the active segment is sealed and a new one started: 256 MiB.
pub const SEGMENT_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// Smallest allowed `segment_bytes`: 4 KiB (tests use small segments to force rotation).
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
/// Largest allowed `segment_bytes`: 2 GiB, so record offsets fit the index's `u32`.
pub const SEGMENT_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;

/// When the writer calls `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every acknowledged write is on disk. Concurrent writers share one fsync
    /// (group commit). The default.
    Always,
    /// Writes are acknowledged once written to the OS; the writer syncs at most this
    /// long after the first unsynced write. A crash loses at most this window.
    Interval(Duration),
    /// Never sync except when a segment is sealed and on close; the OS decides.
    Never,
}

/// The engine's source of "now", in milliseconds since the Unix epoch. Injectable so
/// tests can move time forward to expire keys without sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    fn now_ms(&self) -> u64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Options for [`crate::Engine::open`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Seal the active segment once it reaches this many bytes.
    pub segment_bytes: u64,
    /// When writes reach the disk.
    pub sync: SyncPolicy,
    /// Source of time for expiry and write timestamps.
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            sync: SyncPolicy::Always,
            clock: Arc::new(SystemClock),
        }
    }
}
