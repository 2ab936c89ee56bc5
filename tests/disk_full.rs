//! A full disk, against the real `caskade serve`: writes fail with 507 `storage-full`
//! (problem code 5001), reads keep working, nothing acknowledged is lost, no record is
//! half-written, and writes resume once space is back.
//!
//! Two ways to run out of space:
//! - a file-size limit (`RLIMIT_FSIZE`, SIGXFSZ ignored by the server): works anywhere
//!   without privileges; "space is back" is raising the running server's soft limit
//!   with `prlimit`, as an operator raises a quota;
//! - a real small filesystem: a 1 MiB tmpfs mounted for the test (needs root; the test
//!   says it skips when it cannot mount), where freeing space is deleting a file on it,
//!   and writes resume in the same server process.
//!
//! "No half-written record" is checked twice: while the server runs, the active
//! segment file is exactly as long after a refused write as before it (the engine cuts
//! back its own failed append), and after a restart recovery found no torn tail to cut
//! (`caskade_engine_recovered_truncated_bytes` is 0, no "cutting the unfinished tail"
//! warning).

mod common;

use std::path::{Path, PathBuf};

use common::{Resp, Server};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const OCTETS: (&str, &str) = ("content-type", "application/octet-stream");
/// The warning recovery logs when it cuts a torn tail off the newest segment.
const TAIL_CUT_WARNING: &str = "cutting the unfinished tail";

/// The `data` of a success envelope with this status.
fn data(resp: &Resp, status: u16) -> Value {
    assert_eq!(resp.status, status, "{}", resp.text());
    let doc = resp.json();
    assert_eq!(doc["ok"], json!(true), "{}", resp.text());
    doc["data"].clone()
}

/// Asserts `resp` is exactly one 507 `storage-full` problem about `instance`, with no
/// file path in it.
fn assert_storage_full(server: &Server, resp: &Resp, instance: &str) {
    assert_eq!(resp.status, 507, "{}", resp.text());
    assert_eq!(resp.error_codes(), vec![5001], "{}", resp.text());
    let error = &resp.json()["errors"][0];
    assert_eq!(error["type"], "/problems/storage-full", "{error}");
    assert_eq!(error["instance"], instance, "{error}");
    let text = resp.text();
    let data_dir = server.data_dir.to_string_lossy();
    for leak in [data_dir.as_ref(), ".seg", "/tmp/"] {
        assert!(!text.contains(leak), "{leak:?} in {text}");
    }
}

/// A gauge from `/metrics`.
fn metric(server: &Server, name: &str) -> Option<u64> {
    server
        .get("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Recovery found nothing torn: the gauge is 0 and no tail was cut.
fn assert_nothing_torn(server: &Server) {
    assert_eq!(
        metric(server, "caskade_engine_recovered_truncated_bytes"),
        Some(0),
        "recovery cut a torn record; logs:\n{}",
        server.logs()
    );
    assert!(
        !server.logs().contains(TAIL_CUT_WARNING),
        "{}",
        server.logs()
    );
}

/// The newest segment file of a data folder and its length.
fn newest_segment(dir: &Path) -> (PathBuf, u64) {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the data folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let newest = segments.pop().expect("a segment file");
    let len = std::fs::metadata(&newest).expect("segment metadata").len();
    (newest, len)
}

/// Files an operation left behind under a temporary name.
fn temporary_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("the data folder")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// Asserts every `(path, value, version)` reads back exactly.
fn assert_all_there(server: &Server, stored: &[(String, Vec<u8>, u64)]) {
    for (path, value, version) in stored {
        let got = server.get(&format!("{path}/value"));
        assert_eq!(got.status, 200, "{path}: {}", got.text());
        assert!(got.body == *value, "{path} holds other bytes");
        let etag = format!("\"{version}\"");
        assert_eq!(got.header("etag"), Some(etag.as_str()), "{path}");
    }
}

/// The version a PUT answered with `status`.
fn put_version(resp: &Resp, status: u16) -> u64 {
    data(resp, status)["version"]
        .as_u64()
        .expect("a numeric version")
}

#[test]
fn a_file_size_limit_is_507_and_loses_nothing_acknowledged() {
    /// Bytes of each value: a few fit under the limit below, not all.
    const VALUE_BYTES: usize = 8 * 1024;
    /// `ulimit -f` blocks (512 bytes with dash, 1 KiB with some shells): 32 or 64 KiB.
    const FILE_BLOCKS: u64 = 64;
    /// More writes than can fit under either unit.
    const WRITES_MAX: usize = 16;
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("store");
    let value =
        |i: usize| -> Vec<u8> { (0..VALUE_BYTES).map(|j| (i * 31 + j * 7) as u8).collect() };

    let mut s = Server::start_with_file_size_limit(&dir, FILE_BLOCKS, &[]);
    let mut stored = Vec::new();
    let mut full = None;
    let mut segment_len = 0;
    for i in 0..WRITES_MAX {
        let path = format!("/v1/kv/user/k{i}");
        let resp = s.request("PUT", &path, &[OCTETS], value(i));
        if resp.status == 507 {
            full = Some((i, resp));
            break;
        }
        stored.push((path, value(i), put_version(&resp, 201)));
        segment_len = newest_segment(&dir).1;
    }
    let (failed, resp) = full.expect("a write past the file-size limit answers 507");
    assert!(!stored.is_empty(), "the first write should fit");
    let failed_path = format!("/v1/kv/user/k{failed}");
    assert_storage_full(&s, &resp, &failed_path);
    // The refused append was cut back: not one byte of it stays in the file.
    assert_eq!(newest_segment(&dir).1, segment_len, "a half-written record");

    // Still serving: earlier keys read back, the failed key is absent, a retry still 507s.
    assert_eq!(s.get("/healthz").status, 200);
    assert_all_there(&s, &stored);
    assert_eq!(s.get(&failed_path).status, 404);
    let again = s.request("PUT", &failed_path, &[OCTETS], value(failed));
    assert_storage_full(&s, &again, &failed_path);
    assert_eq!(newest_segment(&dir).1, segment_len, "a half-written record");
    let listed = data(&s.get("/v1/kv/user"), 200);
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(stored.len()));
    // A bulk batch that does not fit is refused whole: not even its small first put.
    let big = "y".repeat(VALUE_BYTES);
    let bulk = json!({"operations": [
        {"op": "put", "entity": "user", "key": "bulk-small", "value": "x"},
        {"op": "put", "entity": "user", "key": "bulk-big", "value": big},
    ]});
    let resp = s.request(
        "POST",
        "/v1/bulk",
        &[("content-type", "application/json")],
        bulk.to_string().into_bytes(),
    );
    assert_storage_full(&s, &resp, "/v1/bulk");
    assert_eq!(s.get("/v1/kv/user/bulk-small").status, 404);
    assert_eq!(newest_segment(&dir).1, segment_len, "a half-written batch");

    // Space is back: the limit is raised on the running process, as an operator raises
    // a quota, and the same process takes the refused write and the refused batch.
    raise_file_size_limit(&s);
    let retry = s.request("PUT", &failed_path, &[OCTETS], value(failed));
    stored.push((failed_path.clone(), value(failed), put_version(&retry, 201)));
    let resp = s.request(
        "POST",
        "/v1/bulk",
        &[("content-type", "application/json")],
        bulk.to_string().into_bytes(),
    );
    let results = data(&resp, 200)["results"].clone();
    for (i, (key, bytes)) in [("bulk-small", b"x".to_vec()), ("bulk-big", big.into())]
        .into_iter()
        .enumerate()
    {
        let version = results[i]["version"].as_u64().expect("a bulk version");
        stored.push((format!("/v1/kv/user/{key}"), bytes, version));
    }
    assert_all_there(&s, &stored);
    s.signal_and_wait(Signal::SIGTERM);

    // A restart finds everything acknowledged and nothing torn.
    let s = Server::start_in(&dir, &[]);
    assert_nothing_torn(&s);
    assert_all_there(&s, &stored);
}

/// Raises the server's file-size soft limit to the hard one (`prlimit`, util-linux):
/// no privilege needed for the same user.
fn raise_file_size_limit(server: &Server) {
    use nix::sys::resource::{Resource, getrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_FSIZE).expect("this process's limits");
    let hard = if hard == nix::sys::resource::RLIM_INFINITY {
        "unlimited".to_owned()
    } else {
        hard.to_string()
    };
    let out = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(server.pid().to_string())
        .arg(format!("--fsize={hard}:"))
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(
        out.status.success(),
        "prlimit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped.
struct SmallFilesystem {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallFilesystem {
    /// `Err` with the reason when this process may not mount (not root, or no
    /// CAP_SYS_ADMIN in a container).
    fn mount(size: &str) -> Result<SmallFilesystem, String> {
        use nix::mount::{MsFlags, mount};
        let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = parent.path().join("fs");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let options = format!("size={size},mode=0700");
        mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|e| format!("mount -t tmpfs -o {options}: {e}"))?;
        Ok(SmallFilesystem {
            path,
            _parent: parent,
        })
    }

    /// Bytes still free for files.
    fn free_bytes(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(&self.path).expect("statvfs of the tmpfs");
        stat.blocks_available() * stat.fragment_size()
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        // Detached, so a server still holding files open cannot keep the mount busy.
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_filesystem_is_507_and_writes_resume_once_space_is_freed() {
    /// Bytes of each value.
    const VALUE_BYTES: usize = 8 * 1024;
    /// Keys written round-robin: overwrites leave dead bytes for compaction to reclaim.
    const KEYS: usize = 4;
    /// More writes than a 1 MiB filesystem holds.
    const WRITES_MAX: usize = 200;
    /// Space taken by another file on the filesystem; deleting it is "space is back".
    const BALLAST_BYTES: usize = 256 * 1024;
    /// A second, small file: deleting it gives room for a new segment file but not for
    /// a compaction's output (the live values, `KEYS * VALUE_BYTES`).
    const SMALL_BALLAST_BYTES: usize = 16 * 1024;
    let fs = match SmallFilesystem::mount("1m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a small tmpfs here ({why}); run as root");
            return;
        }
    };
    let ballast = fs.path.join("ballast");
    std::fs::write(&ballast, vec![0u8; BALLAST_BYTES]).expect("the ballast file");
    let small_ballast = fs.path.join("small-ballast");
    std::fs::write(&small_ballast, vec![0u8; SMALL_BALLAST_BYTES]).expect("a small file");
    let dir = fs.path.join("store");
    // Compaction only when asked, so the test decides when space is reclaimed.
    let flags = ["--segment-bytes", "65536", "--compaction", "off"];
    let mut s = Server::start_in(&dir, &flags);
    let value = |i: usize| -> Vec<u8> {
        let head = format!("write {i}|");
        head.bytes().cycle().take(VALUE_BYTES).collect()
    };
    let path = |i: usize| format!("/v1/kv/user/k{}", i % KEYS);
    // The newest acknowledged write of each key: (path, value, version).
    let mut latest: Vec<Option<(String, Vec<u8>, u64)>> = vec![None; KEYS];
    let mut segment_len = 0;
    let mut full = None;
    for i in 0..WRITES_MAX {
        let resp = s.request("PUT", &path(i), &[OCTETS], value(i));
        if resp.status == 507 {
            full = Some((i, resp));
            break;
        }
        let status = if i < KEYS { 201 } else { 200 };
        latest[i % KEYS] = Some((path(i), value(i), put_version(&resp, status)));
        segment_len = newest_segment(&dir).1;
    }
    let (failed, resp) = full.expect("a 1 MiB filesystem fills up");
    assert!(failed > KEYS, "only {failed} writes fit");
    assert_storage_full(&s, &resp, &path(failed));
    assert_eq!(newest_segment(&dir).1, segment_len, "a half-written record");
    let stored: Vec<_> = latest.iter().flatten().cloned().collect();

    // Reads keep working and see the newest acknowledged values; a retry is refused
    // again; so is a compaction, which first needs room for a new segment file.
    assert_all_there(&s, &stored);
    assert_eq!(
        data(&s.get("/v1/kv/user"), 200)["keys"]
            .as_array()
            .map(Vec::len),
        Some(KEYS)
    );
    let again = s.request("PUT", &path(failed), &[OCTETS], value(failed));
    assert_storage_full(&s, &again, &path(failed));
    let compact = s.request("POST", "/v1/admin/compact?wait=true", &[], Vec::new());
    assert_storage_full(&s, &compact, "/v1/admin/compact");
    assert_all_there(&s, &stored);

    // With a little room, compaction gets further and runs out while writing its
    // output: still 507, and it leaves no file behind (no temporary, no segment the
    // server does not count) to hold the space it could not use.
    std::fs::remove_file(&small_ballast).expect("deleting the small file");
    let compact = s.request("POST", "/v1/admin/compact?wait=true", &[], Vec::new());
    assert_storage_full(&s, &compact, "/v1/admin/compact");
    // The compaction failed on its output, not earlier.
    s.wait_for_log("writing a compacted segment");
    assert_eq!(temporary_files(&dir), Vec::<String>::new());
    let stats = data(&s.get("/v1/admin/stats"), 200);
    let on_disk = std::fs::read_dir(&dir)
        .expect("the data folder")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .count();
    assert_eq!(stats["segments"].as_u64(), Some(on_disk as u64), "{stats}");
    assert_all_there(&s, &stored);

    // Space is back (another file on the disk is deleted): the same server process
    // takes the refused write and more.
    std::fs::remove_file(&ballast).expect("deleting the ballast");
    for i in failed..failed + 2 * KEYS {
        let resp = s.request("PUT", &path(i), &[OCTETS], value(i));
        latest[i % KEYS] = Some((path(i), value(i), put_version(&resp, 200)));
    }
    let stored: Vec<_> = latest.iter().flatten().cloned().collect();
    assert_all_there(&s, &stored);

    // With room for its output, compaction gives the overwritten values' space back.
    let free_before = fs.free_bytes();
    let compact = s.request("POST", "/v1/admin/compact?wait=true", &[], Vec::new());
    let reclaimed = data(&compact, 200)["bytes_reclaimed"].as_u64();
    assert!(reclaimed.is_some_and(|b| b > 0), "{}", compact.text());
    assert!(
        fs.free_bytes() > free_before,
        "compaction freed nothing on the filesystem"
    );
    assert_all_there(&s, &stored);
    s.signal_and_wait(Signal::SIGTERM);

    // A restart finds everything acknowledged and nothing torn.
    let s = Server::start_in(&dir, &flags);
    assert_nothing_torn(&s);
    assert_all_there(&s, &stored);
}
