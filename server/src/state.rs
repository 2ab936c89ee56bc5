//! What every handler shares: the engine and the request limits.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use caskade_engine::Engine;

/// Default largest stored value: 25 MiB.
pub const VALUE_BYTES_MAX_DEFAULT: u64 = 25 * 1024 * 1024;
/// Default largest metadata object, as compact JSON: 1024 bytes.
pub const METADATA_BYTES_MAX_DEFAULT: usize = 1024;
/// Largest bulk request body: 100 MiB.
pub const BULK_BODY_BYTES_MAX: usize = 100 * 1024 * 1024;
/// Most operations in one bulk request.
pub const BULK_OPS_MAX: usize = 10_000;

/// Request limits, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest stored value in bytes (`--max-value-bytes`).
    pub value_bytes_max: u64,
    /// Largest metadata object, as compact JSON, in bytes (`--max-metadata-bytes`).
    pub metadata_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            metadata_bytes_max: METADATA_BYTES_MAX_DEFAULT,
        }
    }
}

/// The state handed to every route handler. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The store. Its clock is the server's clock too, so tests can move time.
    pub engine: Engine,
    /// Request limits.
    pub limits: Limits,
    /// Shared parts that are not `Copy`.
    pub shared: Arc<Shared>,
}

/// Per-server state that handlers read but rarely change.
#[derive(Debug)]
pub struct Shared {
    /// When the server started, for `uptime_s`.
    pub started_at: std::time::Instant,
    /// `--backup-dir`: where `POST /v1/admin/backup` makes its folders; `None` answers
    /// 501 `backup-not-configured`.
    pub backup_dir: Option<PathBuf>,
    /// Set while a backup runs, so a second one is refused (409) instead of doubling
    /// the disk traffic; cleared when the backup's blocking task ends, even if its
    /// client went away.
    pub backup_running: AtomicBool,
}

impl Shared {
    /// The state of a server started at `started_at`, making backups under
    /// `backup_dir` if it has one.
    pub fn new(started_at: std::time::Instant, backup_dir: Option<PathBuf>) -> Shared {
        Shared {
            started_at,
            backup_dir,
            backup_running: AtomicBool::new(false),
        }
    }
}
