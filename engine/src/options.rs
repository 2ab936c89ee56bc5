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

/// When and how fast background compaction runs.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactionOptions {
    /// Run compaction in the background at all (manual `Engine::compact` always works).
    pub enabled: bool,
    /// Compact a sealed segment once this share of its bytes is dead (0.0–1.0).
    pub dead_ratio: f64,
    /// Compact every sealed segment with dead bytes once all of them together hold
    /// this many dead bytes.
    pub dead_bytes_trigger: u64,
    /// How often the background policy looks.
    pub interval: Duration,
    /// Most bytes per second compaction reads and copies; `None` = unlimited.
    pub bytes_per_sec: Option<u64>,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        CompactionOptions {
            enabled: true,
            dead_ratio: 0.5,
            dead_bytes_trigger: 1024 * 1024 * 1024,
            interval: Duration::from_secs(60),
            bytes_per_sec: Some(64 * 1024 * 1024),
        }
    }
}

/// A test hook: called with the name of each crash point of compaction; returning
/// true makes compaction stop right there, leaving files as a crash would. It is also
/// asked about the step's name followed by `:io-error`: returning true for that makes
/// compaction fail there as an I/O error would (it cleans up and the engine goes on).
#[derive(Clone, Default)]
pub struct FaultHook(Option<Arc<FaultFn>>);

/// The function behind a [`FaultHook`]: given a crash point's name, crash there?
type FaultFn = dyn Fn(&str) -> bool + Send + Sync;

impl FaultHook {
    /// A hook that fires when `f` says so.
    pub fn new(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> FaultHook {
        FaultHook(Some(Arc::new(f)))
    }

    pub(crate) fn fires(&self, step: &str) -> bool {
        self.0.as_ref().is_some_and(|f| f(step))
    }

    /// Whether the hook wants an I/O error at `step` (asked as `<step>:io-error`).
    pub(crate) fn fails(&self, step: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|f| f(&format!("{step}:io-error")))
    }
}

impl fmt::Debug for FaultHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "FaultHook(set)"
        } else {
            "FaultHook(none)"
        })
    }
}

/// Default time between TTL sweep ticks.
pub const SWEEP_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

/// Options for [`crate::Engine::open`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Seal the active segment once it reaches this many bytes.
    pub segment_bytes: u64,
    /// When writes reach the disk.
    pub sync: SyncPolicy,
    /// Source of time for expiry and write timestamps.
    pub clock: Arc<dyn Clock>,
    /// Background compaction.
    pub compaction: CompactionOptions,
    /// Time between TTL sweep ticks (each removes at most 10 000 expired keys).
    pub sweep_interval: Duration,
    /// Crash injection for tests; leave it at its default.
    pub fault: FaultHook,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            sync: SyncPolicy::Always,
            clock: Arc::new(SystemClock),
            compaction: CompactionOptions::default(),
            sweep_interval: SWEEP_INTERVAL_DEFAULT,
            fault: FaultHook::default(),
        }
    }
}
