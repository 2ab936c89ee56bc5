//! `caskade verify` and `caskade repair` on real data folders written by the real
//! server: exit codes, damage reported with file and offset, a store `serve` refuses
//! made openable again, nothing deleted, a running server's lock respected; and a
//! record damaged under a running server fails only what reads it, with a logged 500.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Server, binary};
use nix::sys::signal::Signal;
use serde_json::json;

/// Small segments, hints written quickly, no compaction moving records around.
const SERVE_ARGS: &[&str] = &[
    "--segment-bytes",
    "4096",
    "--sweep-interval",
    "50ms",
    "--compaction",
    "off",
];
/// The same without hints: the maintenance tick never comes during the test.
const NO_HINT_ARGS: &[&str] = &[
    "--segment-bytes",
    "4096",
    "--sweep-interval",
    "1h",
    "--compaction",
    "off",
];
const KEYS: usize = 60;

fn key(i: usize) -> String {
    format!("user/k{i:03}")
}

fn value(i: usize) -> serde_json::Value {
    json!({ "n": i, "pad": "x".repeat(120) })
}

/// A store of `KEYS` keys over several segments, the server stopped; waits until the
/// first sealed segment has its hint.
fn store(dir: &Path) {
    store_with(dir, SERVE_ARGS);
    assert!(dir.join("0000000001.hint").exists());
}

/// The same store, written with `args`; with hints, waits for the second sealed
/// segment's.
fn store_with(dir: &Path, args: &[&str]) {
    let mut server = Server::start_in(dir, args);
    for i in 0..KEYS {
        let put = server.put_json(
            &format!("/v1/kv/{}", key(i)),
            &json!({ "value": value(i) }),
            &[],
        );
        assert_eq!(put.status, 201, "{}", put.text());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while args == SERVE_ARGS && !dir.join("0000000002.hint").exists() {
        assert!(
            Instant::now() < deadline,
            "no hint written; logs:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = server.signal_and_wait(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "{}", server.logs());
}

/// Runs `caskade serve` on `dir`, expecting it to exit with a failure on its own
/// (killed after a deadline otherwise); returns its stderr.
fn serve_refuses(dir: &Path) -> String {
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the server") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut logs = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut logs);
    }
    let status = status.unwrap_or_else(|| panic!("serve opened the damaged store:\n{logs}"));
    assert_ne!(status.code(), Some(0), "{logs}");
    logs
}

fn run(tool: &str, dir: &Path, extra: &[&str]) -> Output {
    Command::new(binary())
        .arg(tool)
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .env_remove("CASKADE_DATA_DIR")
        .output()
        .expect("the binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// Offsets of the records of a segment file, their lengths and the key each holds, as
/// the engine's own decoder reads them (either record format version, docs/format.md).
fn records(path: &Path) -> Vec<(usize, usize, String)> {
    let bytes = std::fs::read(path).expect("read segment");
    let mut pos = 32;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let rec = caskade_engine::fuzzing::decode_record(&bytes[pos..]).expect("intact record");
        let key = String::from_utf8_lossy(rec.key).into_owned();
        out.push((pos, rec.len, key));
        pos += rec.len;
    }
    out
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).expect("write");
}

/// A [`store`] in a temp folder whose fourth record of the first sealed segment has a
/// byte flipped near its end (in the CRC-covered bytes): the folder, the folder of the
/// store, the record's offset and the key it holds.
fn store_with_a_flipped_record() -> (tempfile::TempDir, PathBuf, usize, String) {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("store");
    store(&dir);
    let seg = dir.join("0000000001.seg");
    let (offset, len, key) = records(&seg)[3].clone();
    flip(&seg, offset + len - 2);
    (temp, dir, offset, key)
}

/// Every regular file under `dir` (recursively, except the lock), by path relative
/// to `dir`, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.file_name().is_some_and(|n| n != "LOCK") {
                let rel = path.strip_prefix(dir).expect("inside").to_path_buf();
                out.insert(rel, std::fs::read(&path).expect("read file"));
            }
        }
    }
    out
}

#[test]
fn a_clean_store_verifies_with_exit_0() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("store");
    store(&dir);
    let out = run("verify", &dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("result: clean"),
        "{}",
        text(&out)
    );
    assert!(
        out.stderr.is_empty(),
        "no progress bar off a terminal: {}",
        text(&out)
    );

    let doc = json_of(&run("verify", &dir, &["--json"]));
    assert_eq!(doc["clean"], true, "{doc}");
    let files = doc["files"].as_array().expect("files");
    assert!(
        files.iter().any(|f| f["role"] == "hint"),
        "hints are checked: {doc}"
    );
    assert!(
        files.iter().filter(|f| f["role"] == "sealed log").count() >= 2,
        "{doc}"
    );
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_reported_with_file_and_offset() {
    let (_temp, dir, offset, _) = store_with_a_flipped_record();

    let out = run("verify", &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains(&format!("0000000001.seg at offset {offset}:")))
        .unwrap_or_else(|| panic!("no damage line: {}", text(&out)));
    assert!(line.contains("crc mismatch"), "{line}");
    assert!(stdout.contains("result: DAMAGED"), "{}", text(&out));

    let doc = json_of(&run("verify", &dir, &["--json"]));
    assert_eq!(doc["clean"], false);
    assert_eq!(doc["damage"][0]["file"], "0000000001.seg", "{doc}");
    assert_eq!(doc["damage"][0]["offset"], offset, "{doc}");
}

#[test]
fn a_damaged_hint_is_reported_and_repair_moves_it_aside() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("store");
    store(&dir);
    let hint = dir.join("0000000002.hint");
    let len = std::fs::metadata(&hint).expect("hint").len() as usize;
    flip(&hint, len - 1);

    let out = run("verify", &dir, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = json_of(&out);
    let damage = doc["damage"].as_array().expect("damage");
    assert_eq!(damage.len(), 1, "{doc}");
    assert_eq!(damage[0]["file"], "0000000002.hint", "{doc}");
    assert!(
        damage[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("checksum")),
        "{doc}"
    );

    let out = run("repair", &dir, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc = json_of(&out);
    assert_eq!(doc["moved"], json!(["0000000002.hint"]), "{doc}");
    assert_eq!(doc["after"]["clean"], true, "{doc}");
    let aside = PathBuf::from(doc["damaged_dir"].as_str().expect("damaged dir"));
    assert!(aside.join("0000000002.hint").exists());
    assert!(
        dir.join("0000000002.seg").exists(),
        "the segment is the truth and stays"
    );
}

#[test]
fn repair_makes_a_store_serve_refuses_openable_and_deletes_nothing() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("store");
    // No hint yet (open would trust a whole hint and not read the records; verify
    // reads them): open scans the segment and finds the damage.
    store_with(&dir, NO_HINT_ARGS);
    assert!(!dir.join("0000000001.hint").exists());
    let seg = dir.join("0000000001.seg");
    let recs = records(&seg);
    let (offset, len, damaged_key) = recs[2].clone();
    flip(&seg, offset + len - 2);
    let before = files(&dir);

    // serve refuses the folder and says where the damage is.
    let logs = serve_refuses(&dir);
    assert!(logs.contains("cannot open the store"), "{logs}");
    assert!(
        logs.contains(&format!("0000000001.seg at offset {offset}")),
        "{logs}"
    );

    let out = run("repair", &dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("result: clean"), "{}", text(&out));

    // The damaged file and its hint sit byte for byte in damaged-*/; every other file
    // is where it was; nothing is gone.
    let after = files(&dir);
    let aside: Vec<&PathBuf> = after
        .keys()
        .filter(|p| p.components().count() == 2)
        .collect();
    assert_eq!(aside.len(), 1, "the segment moved aside: {aside:?}");
    for (path, bytes) in &before {
        let name = path.file_name().expect("name");
        let kept = after.get(path).or_else(|| {
            aside
                .iter()
                .find(|p| p.file_name() == Some(name))
                .and_then(|p| after.get(*p))
        });
        assert_eq!(kept, Some(bytes), "{} was lost or changed", path.display());
    }
    assert!(
        aside
            .iter()
            .any(|p| p.ends_with("0000000001.seg") && p.to_string_lossy().starts_with("damaged-")),
        "{aside:?}"
    );
    assert_eq!(run("verify", &dir, &[]).status.code(), Some(0));

    // Every record before and after the damage is readable through the server.
    let server = Server::start_in(&dir, SERVE_ARGS);
    for i in 0..KEYS {
        let got = server.get(&format!("/v1/kv/{}", key(i)));
        if key(i) == damaged_key {
            assert_eq!(
                got.status,
                404,
                "the damaged record is gone: {}",
                got.text()
            );
        } else {
            assert_eq!(got.status, 200, "{}: {}", key(i), got.text());
            assert_eq!(got.json()["data"]["value"], value(i), "{}", key(i));
        }
    }
    let put = server.put_json("/v1/kv/user/after", &json!({"value": 1}), &[]);
    assert_eq!(put.status, 201, "writes work after repair: {}", put.text());
}

#[test]
fn verify_and_repair_refuse_a_store_a_server_has_open() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("store");
    let server = Server::start_in(&dir, SERVE_ARGS);
    for tool in ["verify", "repair"] {
        let out = run(tool, &dir, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("is locked") && stderr.contains("stop it first"),
            "{}",
            text(&out)
        );
    }
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("damaged-"))
        .collect();
    assert!(entries.is_empty(), "repair touched nothing");
    drop(server);
}

#[test]
fn a_missing_folder_cannot_be_verified() {
    let temp = tempfile::tempdir().expect("temp dir");
    let out = run("verify", &temp.path().join("nope"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot run"),
        "{}",
        text(&out)
    );
    let out = run("repair", temp.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no caskade segment files"),
        "{}",
        text(&out)
    );
}

/// A record damaged after open (open trusts a sealed segment's hint and reads no
/// record) fails what reads it with a logged 500 and nothing else: the GET of its key,
/// and a PUT of its key (which reads the record it replaces for its creation time).
/// Both requests are served without the router and without a `tracing` span; each
/// error line still names its request, as a routed request's would.
#[test]
fn a_record_damaged_while_served_fails_its_get_and_put_with_logged_500s() {
    let (_temp, dir, _, damaged_key) = store_with_a_flipped_record();
    let args = [SERVE_ARGS, &["--log-format", "json"]].concat();
    let mut server = Server::start_in(&dir, &args);
    let path = format!("/v1/kv/{damaged_key}");

    let get = server.request("GET", &path, &[("x-request-id", "damaged-get")], Vec::new());
    assert_eq!(get.status, 500, "{}", get.text());
    let put = server.put_json(
        &path,
        &json!({ "value": 1 }),
        &[("x-request-id", "damaged-put")],
    );
    assert_eq!(put.status, 500, "{}", put.text());
    let other = server.get(&format!("/v1/kv/{}", key(4)));
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(other.json()["data"]["value"], value(4));

    assert!(server.signal_and_wait(Signal::SIGTERM).success());
    let logs = server.logs();
    for id in ["damaged-get", "damaged-put"] {
        let failed = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == "store request failed" && l["span"]["request_id"] == id);
        let failed = failed.unwrap_or_else(|| panic!("no error line of {id}:\n{logs}"));
        assert_eq!(failed["level"], "ERROR", "{failed}");
        assert!(
            failed["error"].as_str().is_some_and(|e| e.contains("crc")),
            "{failed}"
        );
    }
}
