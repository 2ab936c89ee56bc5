//! Online backup: a consistent, restorable copy of the store in a new folder, taken
//! while reads and writes go on.
//!
//! Protocol:
//! 1. Create `<dest>.tmp-<pid>-<n>` beside `dest` (`dest` must not exist yet).
//! 2. Take [`Shared::retire`] shared, so compaction cannot delete a file of the
//!    snapshot until every one of them is linked or opened.
//! 3. Ask the writer for a snapshot: it commits what it holds, syncs the active
//!    segment (whatever the sync policy), and answers with the segment map and the
//!    active segment's length at that moment — a batch boundary, since the writer only
//!    ever writes whole groups of whole batches. Every write acknowledged before
//!    `backup` was called is below that length or in a sealed segment.
//! 4. Hard-link every sealed segment and its hint into the temporary folder (they never
//!    change again); where linking fails (another file system, no hard links), open the
//!    file to copy it. Open the active segment to copy it up to the snapshot length.
//!    Release the guard.
//! 5. Copy what must be copied, fsync every file and the folder.
//! 6. Rename the temporary folder to `dest` and fsync its parent. A crash before this
//!    leaves only a `*.tmp-*` folder, never one under the final name.
//!
//! The compaction manifest is never copied: a snapshot holds either a compaction's
//! inputs, its outputs, or both (duplicates apply by version at open and are
//! harmless), because the map gains the outputs before it loses the inputs and loses
//! all inputs at once.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::engine::Shared;
use crate::error::{Error, Result};
use crate::hint;
use crate::segment::{self, Segment, sync_dir};

/// What a backup wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    /// The backup folder (the `dest` given to [`crate::Engine::backup`]).
    pub path: PathBuf,
    /// Segment files in the backup.
    pub segments: u64,
    /// Hint files in the backup.
    pub hints: u64,
    /// Files hard-linked from the data folder (they take no extra disk space).
    pub files_linked: u64,
    /// Files copied (the active segment always; others when linking failed).
    pub files_copied: u64,
    /// Bytes of all files in the backup, linked ones included.
    pub bytes: u64,
    /// The highest version in the backup: every write with a version up to this one
    /// is in it.
    pub last_version: u64,
    /// How long it took.
    pub duration: Duration,
}

/// What the writer hands a backup: the files that make up the store at one instant.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    /// Every sealed segment in the map, the active one excluded.
    pub sealed: Vec<Arc<Segment>>,
    /// The active segment and its synced length, at a batch boundary.
    pub active: Arc<Segment>,
    pub active_len: u64,
    /// The highest version written when the snapshot was taken.
    pub last_version: u64,
}

/// Names of the steps where tests can inject a crash.
pub(crate) mod step {
    pub const SNAPSHOT_TAKEN: &str = "backup:snapshot-taken";
    pub const FILES_WRITTEN: &str = "backup:files-written";
}

fn fault(shared: &Shared, step: &'static str) -> Result<()> {
    if shared.options.fault.fires(step) {
        return Err(Error::Closed(format!("injected crash at {step}")));
    }
    Ok(())
}

/// A file to copy into the backup once the guard is released: an open handle, so a
/// later deletion of the original does not matter.
struct Copy {
    from: File,
    to: PathBuf,
    len: u64,
}

/// Tells temporary folders of backups in the same process apart.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Runs the whole protocol; `snapshot` asks the writer for step 3.
pub(crate) fn run(
    shared: &Shared,
    dest: &Path,
    snapshot: impl FnOnce() -> Result<Snapshot>,
) -> Result<BackupReport> {
    let started = Instant::now();
    let tmp = tmp_path(dest)?;
    if dest.exists() {
        return Err(exists(dest));
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io("creating the backup folder", e))?;
    let result = fill(shared, &tmp, snapshot).and_then(|report| {
        fault(shared, step::FILES_WRITTEN)?;
        publish(&tmp, dest)?;
        Ok(report)
    });
    match result {
        Ok(mut report) => {
            report.path = dest.to_path_buf();
            report.duration = started.elapsed();
            Ok(report)
        }
        Err(e) => {
            // An injected crash leaves the files as a crash would.
            if !matches!(&e, Error::Closed(r) if r.starts_with("injected crash")) {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Err(e)
        }
    }
}

/// `<dest>.tmp-<pid>-<n>`, beside `dest` so the final rename stays on one file system.
fn tmp_path(dest: &Path) -> Result<PathBuf> {
    let Some(name) = dest.file_name().and_then(|n| n.to_str()) else {
        return Err(Error::InvalidOptions(
            "the backup folder needs a UTF-8 name as its last path component".into(),
        ));
    };
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(dest.with_file_name(format!("{name}.tmp-{}-{n}", std::process::id())))
}

fn exists(dest: &Path) -> Error {
    Error::io(
        format!("the backup folder {} already exists", dest.display()),
        std::io::Error::from(std::io::ErrorKind::AlreadyExists),
    )
}

/// Steps 2 to 5: every file of the snapshot into `tmp`, durably.
fn fill(
    shared: &Shared,
    tmp: &Path,
    snapshot: impl FnOnce() -> Result<Snapshot>,
) -> Result<BackupReport> {
    let mut report = BackupReport {
        path: tmp.to_path_buf(),
        segments: 0,
        hints: 0,
        files_linked: 0,
        files_copied: 0,
        bytes: 0,
        last_version: 0,
        duration: Duration::ZERO,
    };
    let mut copies = Vec::new();
    {
        let _retire = shared.retire.read().unwrap_or_else(|p| p.into_inner());
        let snap = snapshot()?;
        fault(shared, step::SNAPSHOT_TAKEN)?;
        report.last_version = snap.last_version;
        for seg in &snap.sealed {
            let name = segment::file_name(seg.id);
            let linked = link_or_open(&seg.path, &tmp.join(&name), &mut copies)?;
            count(&mut report, linked, seg.len());
            report.segments += 1;
            let hint_name = hint::file_name(seg.id);
            let hint_from = shared.dir.join(&hint_name);
            // A hint is optional: open scans a segment without one.
            if let Some(len) = file_len(&hint_from)? {
                let linked = link_or_open(&hint_from, &tmp.join(&hint_name), &mut copies)?;
                count(&mut report, linked, len);
                report.hints += 1;
            }
        }
        let active = &snap.active;
        let from = File::open(&active.path).map_err(|e| {
            Error::io(
                format!(
                    "opening segment {} to back it up",
                    segment::file_name(active.id)
                ),
                e,
            )
        })?;
        copies.push(Copy {
            from,
            to: tmp.join(segment::file_name(active.id)),
            len: snap.active_len,
        });
        count(&mut report, false, snap.active_len);
        report.segments += 1;
    }
    for copy in copies {
        copy_file(copy)?;
    }
    sync_dir(tmp)?;
    Ok(report)
}

fn count(report: &mut BackupReport, linked: bool, len: u64) {
    report.bytes += len;
    if linked {
        report.files_linked += 1;
    } else {
        report.files_copied += 1;
    }
}

/// The length of the file at `path`; `None` if there is none.
fn file_len(path: &Path) -> Result<Option<u64>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading a hint file's size", e)),
    }
}

/// Hard-links `from` to `to`; returns true when linked. If linking fails (`to` on
/// another file system, a file system without hard links, a link limit), opens `from`
/// and queues a whole copy instead.
fn link_or_open(from: &Path, to: &Path, copies: &mut Vec<Copy>) -> Result<bool> {
    let link_error = match std::fs::hard_link(from, to) {
        Ok(()) => return Ok(true),
        Err(e) => e,
    };
    let from_file = File::open(from).map_err(|e| Error::io("opening a file to back it up", e))?;
    let len = from_file
        .metadata()
        .map_err(|e| Error::io("reading a file's size to back it up", e))?
        .len();
    tracing::debug!(
        file = %from.display(),
        error = %link_error,
        "cannot hard-link into the backup; copying"
    );
    copies.push(Copy {
        from: from_file,
        to: to.to_path_buf(),
        len,
    });
    Ok(false)
}

/// Copies the first `len` bytes of `copy.from` into a new file and syncs it.
fn copy_file(copy: Copy) -> Result<()> {
    let context = || format!("copying {} into the backup", name_of(&copy.to));
    let mut to = File::options()
        .write(true)
        .create_new(true)
        .open(&copy.to)
        .map_err(|e| Error::io(context(), e))?;
    // `io::copy` of a `Take<File>` into a `File` uses copy_file_range on Linux.
    let mut from = std::io::Read::take(&copy.from, copy.len);
    let copied = std::io::copy(&mut from, &mut to).map_err(|e| Error::io(context(), e))?;
    if copied != copy.len {
        return Err(Error::Closed(format!(
            "{}: the file ended after {copied} of {} bytes",
            context(),
            copy.len
        )));
    }
    to.flush()
        .and_then(|()| to.sync_all())
        .map_err(|e| Error::io(context(), e))
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// Step 6: the temporary folder becomes `dest`, durably.
fn publish(tmp: &Path, dest: &Path) -> Result<()> {
    // `rename` would replace an empty folder that appeared since the start.
    if dest.exists() {
        return Err(exists(dest));
    }
    std::fs::rename(tmp, dest).map_err(|e| Error::io("renaming the backup folder", e))?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| {
            // The name is not durable: take it back, so that a failed backup never
            // leaves a folder under its final name (the caller removes `tmp`).
            let _ = std::fs::rename(dest, tmp);
            Error::io("syncing the backup folder's parent", e)
        })
}
