//! The engine's typed errors: callers match on what went wrong.

use std::path::PathBuf;

/// Everything an engine call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error, with what the engine was doing.
    #[error("{context}: {source}")]
    Io {
        /// What the engine was doing, e.g. "writing segment 0000000003.seg".
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The disk (or a file-size limit) is full. Nothing was half-written; reads keep
    /// working and writes succeed again once space is back.
    #[error("storage is full: {context}")]
    StorageFull {
        /// What the engine was writing when space ran out.
        context: String,
    },
    /// A file holds bytes that fail their checks: a bad CRC, an impossible length, an
    /// unknown format version. Never silently skipped.
    #[error("corrupt data in {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record or header inside `file`.
        offset: u64,
        /// What failed to check.
        reason: String,
    },
    /// Another process, or another `Engine` in this process, has the folder open.
    #[error("the data folder {} is locked by another open engine", dir.display())]
    Locked {
        /// The data folder.
        dir: PathBuf,
    },
    /// A key, value, metadata section or batch is over its limit, or a key is empty.
    #[error("{what} is {len} bytes; the limit is {limit}")]
    TooLarge {
        /// Which part is too large ("key", "value", "meta", "batch").
        what: &'static str,
        /// Its size in bytes.
        len: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// Keys must hold at least one byte.
    #[error("keys must not be empty")]
    EmptyKey,
    /// A batch's condition did not hold; nothing of the batch was written.
    #[error("condition {index} of the batch failed")]
    ConditionFailed {
        /// Index of the first failing condition, in the order they were added.
        index: usize,
    },
    /// The options given to [`crate::Engine::open`] are out of range.
    #[error("invalid option: {0}")]
    InvalidOptions(String),
    /// `verify` or `repair` was pointed at a folder that holds no segment file.
    #[error("{} holds no caskade segment files", dir.display())]
    NotAStore {
        /// The folder.
        dir: PathBuf,
    },
    /// The engine was closed, or an earlier fsync failed and the engine refuses writes
    /// because it can no longer tell what is on disk (reopen to recover).
    #[error("the engine is closed or has failed: {0}")]
    Closed(String),
    /// A state the engine's own invariants rule out (a bug): the call failed and
    /// wrote nothing. Not a reason to retry, not a shutdown.
    #[error("internal engine error: {0}")]
    Internal(String),
}

/// Result alias for engine calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with context, telling a full disk apart from other failures.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        if is_storage_full(&source) {
            Error::StorageFull { context }
        } else {
            Error::Io { context, source }
        }
    }
}

/// ENOSPC, EDQUOT and EFBIG (a file-size limit) all mean "no room for these bytes".
fn is_storage_full(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    )
}
