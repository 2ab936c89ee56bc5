//! `POST /v1/admin/backup` against the real binary: a backup taken while clients write
//! (and while compaction runs) restores with `caskade serve --data-dir <backup>` and
//! holds every write acknowledged before the backup request was sent.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Resp, Server};

const WRITERS: usize = 3;
/// Each writer stops after this many operations, so the test stays bounded.
const OPS_PER_WRITER_MAX: u64 = 600;
/// Where writers delete: iteration `i` puts key `i` and then deletes key `i - 5`.
const DELETE_LAG: u64 = 5;
const DEADLINE: Duration = Duration::from_secs(60);

fn key(writer: usize, i: u64) -> String {
    format!("w{writer}-{i:05}")
}

fn value(writer: usize, i: u64) -> String {
    format!("value {writer}/{i}")
}

/// Whether key `i` is live once the first `ops` operations of a writer are applied:
/// op `2i` puts key `i`, op `2i + 1` deletes key `i - lag` (nothing without a lag).
fn live_after(i: u64, ops: u64, lag: Option<u64>) -> bool {
    2 * i < ops && lag.is_none_or(|lag| 2 * (i + lag) + 1 >= ops)
}

/// Clients that write in order over HTTP and publish how many of their operations
/// were acknowledged.
struct Writers {
    acked: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(server: &Arc<Server>, delete_lag: Option<u64>) -> Writers {
        let acked: Arc<Vec<AtomicU64>> =
            Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..WRITERS)
            .map(|w| {
                let (server, acked, stop) = (server.clone(), acked.clone(), stop.clone());
                std::thread::spawn(move || write_in_order(&server, w, delete_lag, &acked[w], &stop))
            })
            .collect();
        Writers {
            acked,
            stop,
            threads,
        }
    }

    fn acked(&self) -> Vec<u64> {
        self.acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect()
    }

    /// Waits until every writer had at least `n` operations acknowledged.
    fn wait_for(&self, n: u64) {
        let deadline = Instant::now() + DEADLINE;
        while self.acked().iter().any(|&a| a < n) {
            assert!(Instant::now() < deadline, "the writers made no progress");
            std::thread::yield_now();
        }
    }

    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut self.threads) {
            t.join().expect("a writer thread panicked");
        }
        self.acked()
    }
}

fn write_in_order(
    server: &Server,
    w: usize,
    delete_lag: Option<u64>,
    acked: &AtomicU64,
    stop: &AtomicBool,
) {
    for op in 0..OPS_PER_WRITER_MAX {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let i = op / 2;
        if op % 2 == 0 {
            let resp = server.put_json(
                &format!("/v1/kv/user/{}", key(w, i)),
                &serde_json::json!({"value": value(w, i)}),
                &[],
            );
            assert_eq!(resp.status, 201, "{}", resp.text());
        } else if let Some(lag) = delete_lag.filter(|lag| i >= *lag) {
            let resp = server.request(
                "DELETE",
                &format!("/v1/kv/user/{}", key(w, i - lag)),
                &[],
                Vec::new(),
            );
            assert_eq!(resp.status, 200, "{}", resp.text());
        }
        acked.store(op + 1, Ordering::SeqCst);
    }
}

fn backup(server: &Server) -> Resp {
    server.request("POST", "/v1/admin/backup", &[], Vec::new())
}

/// The folder a successful backup response names, after checking the response.
fn backup_folder(resp: &Resp, backup_dir: &Path) -> PathBuf {
    assert_eq!(resp.status, 200, "{}", resp.text());
    let data = &resp.json()["data"];
    let name = data["name"].as_str().expect("a name").to_owned();
    assert!(
        name.len() == "20261126T091443Z-".len() + 8
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "name {name:?}"
    );
    let folder = backup_dir.join(&name);
    let on_disk: u64 = std::fs::read_dir(&folder)
        .expect("the backup folder exists")
        .map(|e| e.expect("entry").metadata().expect("stat").len())
        .sum();
    assert_eq!(data["size_bytes"].as_u64(), Some(on_disk), "{data}");
    assert!(data["last_version"].is_u64(), "{data}");
    folder
}

/// Reads every key a writer may have written from the restored server and checks
/// that they are exactly the writer's state after some prefix of its operations —
/// a prefix at least as long as what was acknowledged before the backup.
fn assert_restored(
    restored: &Server,
    delete_lag: Option<u64>,
    acked_before: &[u64],
    acked_at_end: &[u64],
) {
    for (w, (&before, &end)) in acked_before.iter().zip(acked_at_end).enumerate() {
        let live: Vec<bool> = (0..end.div_ceil(2) + 1)
            .map(|i| {
                let resp = restored.get(&format!("/v1/kv/user/{}", key(w, i)));
                match resp.status {
                    200 => {
                        assert_eq!(resp.json()["data"]["value"], value(w, i), "{}", key(w, i));
                        true
                    }
                    404 => false,
                    other => panic!("GET {}: {other} {}", key(w, i), resp.text()),
                }
            })
            .collect();
        let prefix = (before..=end).find(|&ops| {
            live.iter()
                .enumerate()
                .all(|(i, &l)| l == live_after(i as u64, ops, delete_lag))
        });
        assert!(
            prefix.is_some(),
            "writer {w}: the restored keys {:?} are not the state after {before}..={end} operations",
            live.iter()
                .enumerate()
                .filter(|(_, l)| **l)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        );
    }
}

/// Leftover temporary folders (`*.tmp-*`) of a backup.
fn temporary_folders(backup_dir: &Path) -> Vec<String> {
    std::fs::read_dir(backup_dir)
        .expect("list the backup folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[test]
fn backup_under_concurrent_writers_restores_every_acknowledged_write() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let backup_dir = temp.path().join("backups");
    std::fs::create_dir(&backup_dir).expect("make the backup folder");
    let dir_arg = backup_dir.to_str().expect("utf-8 path");
    let server = Arc::new(Server::start_in(
        &temp.path().join("store"),
        &["--backup-dir", dir_arg, "--segment-bytes", "4096"],
    ));
    let writers = Writers::start(&server, None);
    writers.wait_for(40);

    let acked_before = writers.acked();
    let resp = backup(&server);
    writers.wait_for(acked_before.iter().max().copied().unwrap_or(0) + 20);
    let acked_at_end = writers.finish();
    let folder = backup_folder(&resp, &backup_dir);
    assert_eq!(temporary_folders(&backup_dir), Vec::<String>::new());
    let data = &resp.json()["data"];
    assert!(
        data["files_linked"].as_u64().is_some_and(|n| n > 0),
        "{data}"
    );

    let restored = Server::start_in(&folder, &[]);
    let metrics = restored.get("/metrics").text();
    assert!(
        metrics.contains("caskade_engine_recovered_truncated_bytes 0\n"),
        "{metrics}"
    );
    assert_restored(&restored, None, &acked_before, &acked_at_end);
}

#[test]
fn backups_taken_during_compaction_restore_consistently() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let backup_dir = temp.path().join("backups");
    std::fs::create_dir(&backup_dir).expect("make the backup folder");
    let dir_arg = backup_dir.to_str().expect("utf-8 path");
    let server = Arc::new(Server::start_in(
        &temp.path().join("store"),
        &[
            "--backup-dir",
            dir_arg,
            "--segment-bytes",
            "4096",
            "--sync",
            "interval:1000",
            "--compaction-bytes-per-sec",
            "0",
        ],
    ));
    let writers = Writers::start(&server, Some(DELETE_LAG));
    let stop = Arc::new(AtomicBool::new(false));
    let compactor = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let resp = server.request("POST", "/v1/admin/compact?wait=true", &[], Vec::new());
                assert_eq!(resp.status, 200, "{}", resp.text());
                runs += 1;
            }
            runs
        })
    };
    let mut taken = Vec::new();
    for round in 1..=3 {
        writers.wait_for(60 * round);
        let acked_before = writers.acked();
        taken.push((acked_before, backup(&server)));
    }
    writers.wait_for(60 * 4);
    stop.store(true, Ordering::SeqCst);
    let compactions = compactor.join().expect("the compaction thread panicked");
    let acked_at_end = writers.finish();
    assert!(compactions > 0, "no compaction ran");
    assert_eq!(temporary_folders(&backup_dir), Vec::<String>::new());

    for (acked_before, resp) in taken {
        let folder = backup_folder(&resp, &backup_dir);
        let restored = Server::start_in(&folder, &[]);
        let metrics = restored.get("/metrics").text();
        assert!(
            metrics.contains("caskade_engine_recovered_truncated_bytes 0\n"),
            "{metrics}"
        );
        assert_restored(&restored, Some(DELETE_LAG), &acked_before, &acked_at_end);
    }
}

#[test]
fn without_a_backup_dir_backup_is_not_configured() {
    let server = Server::start(&[]);
    let resp = backup(&server);
    assert_eq!(resp.status, 501, "{}", resp.text());
    assert_eq!(resp.error_codes(), vec![5003]);
    assert_eq!(
        resp.json()["errors"][0]["type"],
        "/problems/backup-not-configured"
    );
}

#[test]
fn a_backup_dir_that_vanished_is_a_clear_error_and_leaves_nothing() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let backup_dir = temp.path().join("backups");
    std::fs::create_dir(&backup_dir).expect("make the backup folder");
    let dir_arg = backup_dir.to_str().expect("utf-8 path");
    let server = Server::start_in(&temp.path().join("store"), &["--backup-dir", dir_arg]);
    server.put_json("/v1/kv/user/a", &serde_json::json!({"value": 1}), &[]);
    std::fs::remove_dir(&backup_dir).expect("remove the backup folder");
    let resp = backup(&server);
    assert_eq!(resp.status, 500, "{}", resp.text());
    assert_eq!(resp.error_codes(), vec![5004]);
    assert!(
        !resp.text().contains(dir_arg),
        "the response names a server path: {}",
        resp.text()
    );
    assert!(!backup_dir.exists(), "the backup created the folder again");

    std::fs::create_dir(&backup_dir).expect("bring the folder back");
    let resp = backup(&server);
    backup_folder(&resp, &backup_dir);
    let resp = server.request("POST", "/v1/admin/backup?to=/etc", &[], Vec::new());
    assert_eq!(resp.error_codes(), vec![1008], "{}", resp.text());
}

#[test]
fn a_backup_dir_that_is_no_writable_folder_is_refused_at_startup() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let store = temp.path().join("store");
    let file = temp.path().join("a-file");
    std::fs::write(&file, b"x").expect("write a file");
    let inside = store.join("backups");
    std::fs::create_dir_all(&inside).expect("make a folder in the store");
    for dir in [temp.path().join("missing"), file, inside] {
        let out = std::process::Command::new(common::binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&store)
            .arg("--backup-dir")
            .arg(&dir)
            .output()
            .expect("caskade runs");
        assert_eq!(out.status.code(), Some(2), "{}", dir.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--backup-dir"), "{stderr}");
        assert!(out.stdout.is_empty(), "it listened: {:?}", out.stdout);
    }
}

#[test]
fn backup_needs_the_admin_scope() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let tokens = temp.path().join("tokens");
    std::fs::write(&tokens, "w-token write\na-token admin\n").expect("write tokens");
    let backup_dir = temp.path().join("backups");
    std::fs::create_dir(&backup_dir).expect("make the backup folder");
    let server = Server::start_in(
        &temp.path().join("store"),
        &[
            "--auth-tokens",
            tokens.to_str().expect("utf-8"),
            "--backup-dir",
            backup_dir.to_str().expect("utf-8"),
        ],
    );
    let post = |token: &str| {
        server.request(
            "POST",
            "/v1/admin/backup",
            &[("authorization", &format!("Bearer {token}"))],
            Vec::new(),
        )
    };
    assert_eq!(post("w-token").error_codes(), vec![3002]);
    assert_eq!(
        std::fs::read_dir(&backup_dir).expect("list").count(),
        0,
        "a refused backup wrote something"
    );
    backup_folder(&post("a-token"), &backup_dir);
}
