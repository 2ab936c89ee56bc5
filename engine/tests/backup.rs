//! Online backup: a copy taken while writers and compaction run holds every write
//! acknowledged before the backup was asked for, whole batches only, and opens cleanly.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use caskade_engine::{Batch, Engine, Error, FaultHook, Options, SyncPolicy, WriteOptions};
use common::{options, segment_files};

const WRITERS: usize = 4;
/// Each writer stops after this many batches, so the test stays bounded.
const BATCHES_PER_WRITER_MAX: u64 = 600;
/// How many batches each writer must have had acknowledged before the backup.
const BATCHES_BEFORE_BACKUP: u64 = 60;
/// Batch `i` deletes the `c` record of batch `i - DELETE_LAG`.
const DELETE_LAG: u64 = 10;
const DEADLINE: Duration = Duration::from_secs(60);

fn key(writer: usize, i: u64, part: &str) -> String {
    format!("w{writer}/{i:06}/{part}")
}

fn value(writer: usize, i: u64, part: &str) -> Vec<u8> {
    format!("value of {} ", key(writer, i, part))
        .repeat(4)
        .into_bytes()
}

/// Batch `i` of writer `w`: puts `a`, `b`, `c` of `i`, sets `w/last` to `i` and
/// deletes `c` of `i - DELETE_LAG` — all or nothing.
fn batch(writer: usize, i: u64) -> Batch {
    let mut batch = Batch::new();
    for part in ["a", "b", "c"] {
        batch.put(
            key(writer, i, part),
            value(writer, i, part),
            WriteOptions::default(),
        );
    }
    batch.put(
        format!("w{writer}/last"),
        i.to_string(),
        WriteOptions::default(),
    );
    if i >= DELETE_LAG {
        batch.delete(key(writer, i - DELETE_LAG, "c"));
    }
    batch
}

/// Writers that write batches in order and publish the last acknowledged one.
struct Load {
    acked: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(engine: &Engine) -> Load {
        let acked: Arc<Vec<AtomicU64>> =
            Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for w in 0..WRITERS {
            let (engine, acked, stop) = (engine.clone(), acked.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                for i in 1..=BATCHES_PER_WRITER_MAX {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    engine
                        .apply(batch(w, i))
                        .expect("a write during the backup");
                    acked[w].store(i, Ordering::SeqCst);
                }
            }));
        }
        Load {
            acked,
            stop,
            threads,
        }
    }

    /// Waits until every writer had at least `n` batches acknowledged.
    fn wait_for(&self, n: u64) {
        let deadline = Instant::now() + DEADLINE;
        while self.acked.iter().any(|a| a.load(Ordering::SeqCst) < n) {
            assert!(Instant::now() < deadline, "the writers made no progress");
            std::thread::yield_now();
        }
    }

    fn acked(&self) -> Vec<u64> {
        self.acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect()
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a writer thread panicked");
        }
    }
}

/// Runs manual compactions back to back until stopped.
fn compact_in_a_loop(engine: &Engine, stop: &Arc<AtomicBool>) -> JoinHandle<u64> {
    let (engine, stop) = (engine.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut runs = 0;
        while !stop.load(Ordering::Relaxed) {
            engine.compact().expect("a compaction during the backup");
            runs += 1;
        }
        runs
    })
}

fn get(engine: &Engine, key: &str) -> Option<Vec<u8>> {
    engine
        .get(key.as_bytes())
        .expect("a read of the copy")
        .map(|e| e.value.to_vec())
}

/// The copy is one instant of the store: per writer, batches `1..=last` are all in
/// it (with the deletes they made), later ones not at all, and `last` is at least the
/// last batch acknowledged before the backup was asked for.
fn assert_consistent_copy(copy: &Engine, acked_before: &[u64]) {
    for (w, &before) in acked_before.iter().enumerate() {
        let last: u64 = get(copy, &format!("w{w}/last"))
            .map(|v| {
                String::from_utf8(v)
                    .expect("utf-8")
                    .parse()
                    .expect("a number")
            })
            .unwrap_or(0);
        assert!(
            last >= before,
            "writer {w}: batch {before} was acknowledged before the backup, the copy ends at {last}"
        );
        for i in 1..=last + 5 {
            for part in ["a", "b", "c"] {
                let deleted = part == "c" && i + DELETE_LAG <= last;
                let want = (i <= last && !deleted).then(|| value(w, i, part));
                assert_eq!(
                    get(copy, &key(w, i, part)),
                    want,
                    "{} in a copy ending at batch {last}",
                    key(w, i, part)
                );
            }
        }
    }
}

fn take_backup_under_load(sync: SyncPolicy) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let engine = Engine::open(dir.path().join("store"), options(8 * 1024, sync)).expect("open");
    let load = Load::start(&engine);
    let stop_compacting = Arc::new(AtomicBool::new(false));
    let compactor = compact_in_a_loop(&engine, &stop_compacting);
    load.wait_for(BATCHES_BEFORE_BACKUP);

    let acked_before = load.acked();
    let report = engine
        .backup(dir.path().join("backup"))
        .expect("the backup");

    load.wait_for(BATCHES_BEFORE_BACKUP * 2);
    stop_compacting.store(true, Ordering::Relaxed);
    let compactions = compactor.join().expect("the compaction thread panicked");
    load.finish();
    // Compaction deletes every segment the backup linked; the copy keeps its own links.
    engine.compact().expect("a last compaction");
    assert!(compactions > 0, "no compaction ran during the test");
    assert!(report.segments > 1 && report.files_linked > 0, "{report:?}");
    assert_eq!(report.path, dir.path().join("backup"));

    let copy = Engine::open(&report.path, Options::default()).expect("the copy opens");
    let stats = copy.stats();
    assert_eq!(
        stats.recovered_truncated_bytes, 0,
        "a torn tail in the copy"
    );
    assert_eq!(stats.last_version, report.last_version);
    assert_consistent_copy(&copy, &acked_before);
    engine.close().expect("close the store");
}

#[test]
fn backup_under_writers_and_compaction_holds_every_acknowledged_write_sync_always() {
    take_backup_under_load(SyncPolicy::Always);
}

#[test]
fn backup_under_writers_and_compaction_holds_every_acknowledged_write_sync_never() {
    take_backup_under_load(SyncPolicy::Never);
}

#[test]
fn backup_under_writers_and_compaction_holds_every_acknowledged_write_sync_interval() {
    take_backup_under_load(SyncPolicy::Interval(Duration::from_secs(10)));
}

#[test]
fn the_copy_is_a_store_of_its_own() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let engine = Engine::open(
        dir.path().join("store"),
        options(4 * 1024, SyncPolicy::Always),
    )
    .expect("open");
    for i in 0..200 {
        engine
            .put(format!("k/{i}"), format!("v{i}"), WriteOptions::default())
            .expect("put");
    }
    let report = engine.backup(dir.path().join("b")).expect("the backup");
    engine.delete("k/0").expect("delete after the backup");
    engine.compact().expect("compact");

    let copy = Engine::open(&report.path, Options::default()).expect("the copy opens");
    assert_eq!(get(&copy, "k/0"), Some(b"v0".to_vec()));
    copy.put("k/new", "only in the copy", WriteOptions::default())
        .expect("the copy takes writes");
    copy.compact().expect("the copy compacts");
    copy.close().expect("close the copy");
    assert_eq!(get(&engine, "k/new"), None);
    assert_eq!(get(&engine, "k/0"), None);
    assert_eq!(get(&engine, "k/199"), Some(b"v199".to_vec()));
    engine.close().expect("close the store");
    let copy = Engine::open(&report.path, Options::default()).expect("the copy reopens");
    assert_eq!(get(&copy, "k/new"), Some(b"only in the copy".to_vec()));
    assert_eq!(get(&copy, "k/199"), Some(b"v199".to_vec()));
}

#[test]
fn backup_into_an_existing_folder_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let engine = Engine::open(dir.path().join("store"), Options::default()).expect("open");
    engine.put("k", "v", WriteOptions::default()).expect("put");
    let dest = dir.path().join("taken");
    std::fs::create_dir(&dest).expect("make the folder");
    let err = engine.backup(&dest).expect_err("an existing folder");
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read_dir(&dest).expect("list").count(),
        0,
        "the folder was written into"
    );
    assert_eq!(folders(dir.path()), vec!["store", "taken"]);
}

#[test]
fn a_crash_midway_leaves_no_folder_under_the_final_name() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let crash = Arc::new(AtomicBool::new(true));
    let fires = crash.clone();
    let options = Options {
        fault: FaultHook::new(move |step| {
            step == "backup:files-written" && fires.load(Ordering::SeqCst)
        }),
        ..options(4 * 1024, SyncPolicy::Always)
    };
    let engine = Engine::open(dir.path().join("store"), options).expect("open");
    // Enough records (about 25 bytes each) to fill more than one 4 KiB segment.
    for i in 0..300 {
        engine
            .put(format!("k/{i}"), "v", WriteOptions::default())
            .expect("put");
    }
    let dest = dir.path().join("b1");
    assert!(engine.backup(&dest).is_err(), "the injected crash");
    assert!(!dest.exists());
    let names = folders(dir.path());
    assert!(
        names.iter().any(|n| n.starts_with("b1.tmp-")),
        "the partial copy keeps a temporary name: {names:?}"
    );

    crash.store(false, Ordering::SeqCst);
    let report = engine.backup(&dest).expect("a backup after the crash");
    assert!(segment_files(&report.path).len() > 1);
    let copy = Engine::open(&report.path, Options::default()).expect("the copy opens");
    assert_eq!(copy.count_prefix(b"k/"), 300);
}

fn folders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Compaction that reaches its deletion step while a backup holds its snapshot waits
/// until the backup has linked its files: the backup never finds a file gone.
#[test]
fn compaction_does_not_delete_a_segment_of_a_running_backup() {
    /// How long the backup, holding its snapshot, watches for a deletion that must
    /// not happen. Waiting for an event that must not come can only end by time.
    const WATCH: Duration = Duration::from_millis(300);
    let dir = tempfile::tempdir().expect("a temp dir");
    let engine_cell: Arc<Mutex<Option<Engine>>> = Arc::default();
    let (steps_tx, steps_rx) = mpsc::channel::<String>();
    let steps_rx = Mutex::new(steps_rx);
    let compactor: Arc<Mutex<Option<JoinHandle<()>>>> = Arc::default();
    let deleted_during_backup = Arc::new(AtomicBool::new(false));
    let hook = {
        let (cell, compactor, deleted) = (
            engine_cell.clone(),
            compactor.clone(),
            deleted_during_backup.clone(),
        );
        FaultHook::new(move |step| {
            if step.starts_with("compaction:") {
                let _ = steps_tx.send(step.to_owned());
            } else if step == "backup:snapshot-taken" {
                let engine = cell
                    .lock()
                    .expect("lock")
                    .clone()
                    .expect("the engine is open");
                let handle = std::thread::spawn(move || {
                    engine.compact().expect("the compaction");
                });
                *compactor.lock().expect("lock") = Some(handle);
                let steps = steps_rx.lock().expect("lock");
                let deadline = Instant::now() + DEADLINE;
                loop {
                    let step = steps
                        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                        .expect("the compaction reaches its manifest");
                    if step == "compaction:manifest-written" {
                        break;
                    }
                }
                if let Ok(step) = steps.recv_timeout(WATCH) {
                    deleted.store(step == "compaction:inputs-deleted", Ordering::SeqCst);
                }
            }
            false
        })
    };
    let options = Options {
        fault: hook,
        ..options(4 * 1024, SyncPolicy::Always)
    };
    let engine = Engine::open(dir.path().join("store"), options).expect("open");
    *engine_cell.lock().expect("lock") = Some(engine.clone());
    for round in 0..3 {
        for i in 0..100 {
            engine
                .put(
                    format!("k/{i}"),
                    format!("v{round}-{i}"),
                    WriteOptions::default(),
                )
                .expect("put");
        }
    }
    let report = engine.backup(dir.path().join("b")).expect("the backup");
    let handle = compactor.lock().expect("lock").take();
    handle
        .expect("a compaction ran")
        .join()
        .expect("the compaction thread");
    assert!(
        !deleted_during_backup.load(Ordering::SeqCst),
        "compaction deleted its inputs while the backup held its snapshot"
    );
    assert_eq!(engine.stats().compactions, 1);
    // The hook holds a handle: let it go, so the store closes.
    engine_cell.lock().expect("lock").take();
    engine.close().expect("close the store");
    let copy = Engine::open(&report.path, Options::default()).expect("the copy opens");
    for i in 0..100 {
        assert_eq!(
            get(&copy, &format!("k/{i}")),
            Some(format!("v2-{i}").into_bytes())
        );
    }
}

/// Where hard links cannot reach (another file system), every file is copied.
/// Runs where `/dev/shm` is a file system of its own, as on Linux.
#[test]
fn backup_to_another_file_system_copies_every_file() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("a temp dir");
    let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    let device = |p: &Path| std::fs::metadata(p).expect("stat").dev();
    if device(dir.path()) == device(other.path()) {
        eprintln!("skipped: /dev/shm is on the same file system as the temp dir");
        return;
    }
    let engine = Engine::open(
        dir.path().join("store"),
        options(4 * 1024, SyncPolicy::Always),
    )
    .expect("open");
    for i in 0..300 {
        engine
            .put(format!("k/{i}"), format!("v{i}"), WriteOptions::default())
            .expect("put");
    }
    engine.compact().expect("compact, so hints exist");
    let report = engine.backup(other.path().join("b")).expect("the backup");
    assert_eq!(report.files_linked, 0, "{report:?}");
    assert_eq!(report.files_copied, report.segments + report.hints);
    assert!(report.hints > 0, "{report:?}");
    let copy = Engine::open(&report.path, Options::default()).expect("the copy opens");
    assert_eq!(copy.count_prefix(b"k/"), 300);
    assert_eq!(
        copy.stats().hints_loaded,
        report.hints,
        "the copied hints load"
    );
    assert_eq!(get(&copy, "k/299"), Some(b"v299".to_vec()));
}
