//! `caskade export`, `caskade import` and `caskade stats` on real data folders, with
//! the real binary: a store filled through the server survives export → import →
//! export byte for byte and answers GETs the same, filters select what they say,
//! import through a running server's bulk route works in chunks, bad lines stop the
//! import without half-writing a batch, and a served store is refused with exit 2.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use caskade_engine::{Engine, Options, WriteOptions};
use caskade_server::media::Kind;
use caskade_server::meta::RecordMeta;
use common::{Server, binary};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const WRITE_TOKEN: &str = "write-token-5e6f7a";
const ADMIN_TOKEN: &str = "admin-token-8b9c0d";

/// Runs `caskade <args>` with `stdin`, without the caller's CASKADE_* settings.
fn caskade(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("CASKADE_DATA_DIR")
        .env_remove("CASKADE_TOKEN")
        .env_remove("CASKADE_MAX_VALUE_BYTES")
        .env_remove("CASKADE_MAX_METADATA_BYTES")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    // A run that refuses to start (exit 2) may exit before it reads its input: a
    // broken pipe here is that, and the exit status tells the test what happened.
    match input.write_all(stdin) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        written => written.expect("stdin written"),
    }
    drop(input);
    child.wait_with_output().expect("the binary finishes")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = caskade(args, stdin);
    assert!(
        out.status.success(),
        "caskade {args:?} failed: {}",
        stderr(&out)
    );
    out.stdout
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// The keys [`fill`] leaves live, as GET paths.
const LIVE_PATHS: [&str; 7] = [
    "/v1/kv/event/alpha",
    "/v1/kv/event/e_2",
    "/v1/kv/event/img-1",
    "/v1/kv/user/alice",
    "/v1/kv/user/anna",
    "/v1/kv/user/bob",
    "/v1/kv/user/carol",
];

/// Fills a store through the server with every kind of value, metadata, ttls, an
/// update and a delete.
fn fill(server: &Server) {
    let put = |path: &str, body: Value| {
        let resp = server.put_json(path, &body, &[]);
        assert!(
            resp.status == 201 || resp.status == 200,
            "{path}: {}",
            resp.text()
        );
    };
    put(
        "/v1/kv/user/alice",
        json!({"value": {"n": 1, "s": "é\u{1}"}, "metadata": {"team": "a", "tags": [1, 2]}}),
    );
    // Numbers keep their spelling: send the body as text.
    let exact =
        br#"{"value": {"big": 123456789012345678901234567890, "f": 0.1, "z": -0.0, "e": 1e+300}}"#;
    let resp = server.request(
        "PUT",
        "/v1/kv/user/anna",
        &[("content-type", "application/json")],
        exact.to_vec(),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    put(
        "/v1/kv/user/bob",
        json!({"value": "héllo\nworld", "ttl": 3600}),
    );
    put(
        "/v1/kv/user/carol",
        json!({"value": "# draft", "content_type": "text/markdown"}),
    );
    put(
        "/v1/kv/user/carol",
        json!({"value": "# final", "content_type": "text/markdown; charset=utf-8", "metadata": {"v": 2}}),
    );
    put("/v1/kv/user/dave", json!({"value": 1}));
    assert_eq!(
        server
            .request("DELETE", "/v1/kv/user/dave", &[], Vec::new())
            .status,
        200
    );
    let png: Vec<u8> = (0..=255u8).collect();
    let resp = server.request(
        "PUT",
        "/v1/kv/event/img-1",
        &[
            ("content-type", "image/png"),
            ("x-kv-metadata", r#"{"w":16}"#),
        ],
        png,
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    put(
        "/v1/kv/event/e_2",
        json!({"value": "AAE", "content_type": "application/octet-stream", "ttl": 120, "metadata": {"k": null}}),
    );
    put("/v1/kv/event/alpha", json!({"value": 42}));
}

/// GET's `data` of every live path, without what a write decides anew (`updated_at`,
/// `version`); plus the raw value and its content type.
fn snapshot(server: &Server, auth: &[(&str, &str)]) -> BTreeMap<String, (Value, Vec<u8>, String)> {
    LIVE_PATHS
        .iter()
        .map(|path| {
            let resp = server.request("GET", path, auth, Vec::new());
            assert_eq!(resp.status, 200, "{path}: {}", resp.text());
            let mut data = resp.json()["data"].clone();
            let object = data.as_object_mut().expect("data object");
            object.remove("updated_at");
            object.remove("version");
            let raw = server.request("GET", &format!("{path}/value"), auth, Vec::new());
            assert_eq!(raw.status, 200);
            let ctype = raw.header("content-type").unwrap_or_default().to_owned();
            (path.to_string(), (data, raw.body, ctype))
        })
        .collect()
}

#[test]
fn export_then_import_reproduces_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut server = Server::start_in(&a, &[]);
    fill(&server);
    let before = snapshot(&server, &[]);
    assert!(server.signal_and_wait(Signal::SIGTERM).success());

    let first = dir.path().join("first.jsonl");
    let out = caskade(
        &[
            "export",
            "--data-dir",
            path_str(&a),
            "--output",
            path_str(&first),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stdout.is_empty(),
        "with --output nothing goes to stdout"
    );
    assert!(
        stderr(&out).contains("exported 7 keys (event 3, user 4)"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&first).expect("export file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let order: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "/v1/kv/{}/{}",
                l["entity"].as_str().unwrap_or(""),
                l["key"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(order, LIVE_PATHS, "live keys only, by entity then key");
    assert!(
        text.contains(
            r#""value":{"big":123456789012345678901234567890,"f":0.1,"z":-0.0,"e":1e+300}"#
        )
    );
    let img = &lines[2];
    assert_eq!(img["encoding"], "base64");
    assert_eq!(img["content_type"], "image/png");
    assert_eq!(img["metadata"], json!({"w": 16}));
    assert_eq!(
        lines[5],
        json!({"entity": "user", "key": "bob", "value": "héllo\nworld", "encoding": "text",
               "content_type": "text/plain; charset=utf-8", "metadata": null,
               "created_at": before["/v1/kv/user/bob"].0["created_at"],
               "expires_at": before["/v1/kv/user/bob"].0["expires_at"]})
    );

    let out = caskade(
        &[
            "import",
            "--data-dir",
            path_str(&b),
            "--input",
            path_str(&first),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("imported 7 keys"), "{}", stderr(&out));
    let second = ok(&["export", "--data-dir", path_str(&b)], b"");
    assert_eq!(
        String::from_utf8_lossy(&second),
        text,
        "the export of the imported store is byte-identical"
    );

    let server = Server::start_in(&b, &[]);
    assert_eq!(snapshot(&server, &[]), before);
    assert_eq!(server.get("/v1/kv/user/dave").status, 404);
}

#[test]
fn import_reads_stdin_and_export_to_a_file_never_leaves_it_half_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("s");
    let lines = concat!(
        r#"{"entity":"user","key":"k1","value":{"a":1}}"#,
        "\n\n",
        r#"{"entity":"event","key":"k2","value":"t","created_at":"2026-01-02T03:04:05Z","expires_at":null}"#,
        "\r\n"
    );
    ok(
        &["import", "--data-dir", path_str(&store)],
        lines.as_bytes(),
    );
    let exported =
        String::from_utf8(ok(&["export", "--data-dir", path_str(&store)], b"")).expect("UTF-8");
    let got: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["key"], "k2");
    assert_eq!(got[0]["created_at"], "2026-01-02T03:04:05Z");
    assert_eq!(got[0]["content_type"], "text/plain; charset=utf-8");
    assert_eq!(got[1]["value"], json!({"a": 1}));
    assert_eq!(got[1]["encoding"], "json");

    // A failed export (no store) leaves no file behind, not even a temporary one.
    let target = dir.path().join("out").join("x.jsonl");
    std::fs::create_dir(dir.path().join("out")).expect("out dir");
    let out = caskade(
        &[
            "export",
            "--data-dir",
            path_str(&dir.path().join("missing")),
            "-o",
            path_str(&target),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no store"), "{}", stderr(&out));
    let left: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .expect("out dir")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // A folder that holds other files is never made a store.
    let out = caskade(
        &[
            "import",
            "--data-dir",
            path_str(&dir.path().join("out")),
            "-i",
            path_str(&target),
        ],
        b"",
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing input: {}",
        stderr(&out)
    );
    std::fs::write(&target, lines).expect("input file");
    let out = caskade(
        &[
            "import",
            "--data-dir",
            path_str(&dir.path().join("out")),
            "-i",
            path_str(&target),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds no caskade store"),
        "{}",
        stderr(&out)
    );
    let names: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .expect("out dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["x.jsonl"]);
}

#[test]
fn entity_and_prefix_filters_select_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("s");
    let mut server = Server::start_in(&store, &[]);
    fill(&server);
    assert!(server.signal_and_wait(Signal::SIGTERM).success());
    let keys = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["export", "--data-dir", path_str(&store)];
        all.extend_from_slice(args);
        String::from_utf8(ok(&all, b""))
            .expect("UTF-8")
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("JSON line");
                format!(
                    "{}/{}",
                    v["entity"].as_str().unwrap_or(""),
                    v["key"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    assert_eq!(
        keys(&["--entity", "user"]),
        ["user/alice", "user/anna", "user/bob", "user/carol"]
    );
    assert_eq!(
        keys(&["--prefix", "a"]),
        ["event/alpha", "user/alice", "user/anna"]
    );
    assert_eq!(
        keys(&["--entity", "user", "--prefix", "al"]),
        ["user/alice"]
    );
    assert!(keys(&["--prefix", "zz"]).is_empty());
    for bad in [
        &["--entity", "users"][..],
        &["--prefix", "a.b"],
        &["--prefix", ""],
    ] {
        let mut all = vec!["export", "--data-dir", path_str(&store)];
        all.extend_from_slice(bad);
        assert_eq!(caskade(&all, b"").status.code(), Some(2), "{bad:?}");
    }
}

/// `n` text lines `k0000`… in entity `user`, each expiring `expires_at` (or never).
fn numbered_lines(n: usize, expires_at: Option<&str>) -> String {
    (0..n)
        .map(|i| {
            json!({"entity": "user", "key": format!("k{i:04}"), "value": format!("v{i}"),
                   "encoding": "text", "content_type": "text/plain; charset=utf-8",
                   "metadata": {"i": i}, "created_at": "2026-01-01T00:00:00Z",
                   "expires_at": expires_at})
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn import_through_a_running_server_uses_the_bulk_route_in_chunks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("{WRITE_TOKEN} write\n{ADMIN_TOKEN} admin\n"),
    )
    .expect("token file");
    let server = Server::start_in(&dir.path().join("s"), &["--auth-tokens", path_str(&tokens)]);
    // An hour from now, in whole seconds as an export writes it.
    let in_an_hour = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    )
    .to_string();
    let input = numbered_lines(2500, Some(&in_an_hour));
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, &input).expect("input");

    let out = caskade(
        &["import", "--url", &server.base, "--input", path_str(&file)],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "no token: refused");
    assert!(stderr(&out).contains("HTTP 401"), "{}", stderr(&out));

    let out = caskade(
        &[
            "import",
            "--url",
            &server.base,
            "--token",
            WRITE_TOKEN,
            "--input",
            path_str(&file),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("imported 2500 keys"),
        "{}",
        stderr(&out)
    );
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let auth = [("authorization", admin.as_str())];
    let stats = server
        .request("GET", "/v1/admin/stats", &auth, Vec::new())
        .json();
    assert_eq!(stats["data"]["keys"]["user"], 2500);
    let got = server
        .request("GET", "/v1/kv/user/k2499", &auth, Vec::new())
        .json();
    assert_eq!(got["data"]["value"], "v2499");
    assert_eq!(got["data"]["metadata"], json!({"i": 2499}));
    // The expiry becomes a ttl rounded up: the same second or one later.
    let expires = got["data"]["expires_at"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let parse = |t: &str| humantime::parse_rfc3339(t).expect("RFC 3339");
    let late = parse(&expires)
        .duration_since(parse(&in_an_hour))
        .expect("never earlier than exported");
    assert!(
        late.as_secs() <= 2,
        "expires {expires}, exported {in_an_hour}"
    );

    // A line the server's rules refuse stops the import before its chunk is sent.
    let bad = format!(
        "{}{}\n",
        numbered_lines(1, None),
        r#"{"entity":"user","key":"z","value":"x","content_type":"image/png"}"#
    );
    let out = caskade(
        &["import", "--url", &server.base, "--token", WRITE_TOKEN],
        bad.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("line 2: /value"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was written"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_line_stops_the_import_and_nothing_of_its_batch_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("s");
    let count = |store: &Path| {
        String::from_utf8(ok(&["export", "--data-dir", path_str(store)], b""))
            .expect("UTF-8")
            .lines()
            .count()
    };
    let mut input = numbered_lines(2, None);
    input.push_str("{\"entity\":\"user\",\"key\":\"a.b\",\"value\":1,\"metadata\":[]}\n");
    input.push_str(&numbered_lines(1, None));
    let out = caskade(
        &["import", "--data-dir", path_str(&store)],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.contains("line 3: /key:"), "{message}");
    assert!(
        message.contains("/metadata: metadata must be a JSON object"),
        "{message}"
    );
    assert!(message.contains("nothing was written"), "{message}");
    assert_eq!(count(&store), 0);

    // A bad line after a full batch: the batch before it stays, nothing after.
    let mut input = numbered_lines(1500, None);
    let lines: Vec<&str> = input.lines().collect();
    let broken = lines[1200].replace("\"text\"", "\"base64\"");
    input = input.replacen(lines[1200], &broken, 1);
    let out = caskade(
        &["import", "--data-dir", path_str(&store)],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.contains("line 1201: /encoding"), "{message}");
    assert!(
        message.contains("the 1000 keys of the lines before line 1001 were imported"),
        "{message}"
    );
    assert_eq!(count(&store), 1000);

    // --dry-run checks everything and writes nothing.
    let out = caskade(&["import", "--dry-run"], numbered_lines(3, None).as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("checked 3 records"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn expired_keys_are_neither_exported_nor_imported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("s");
    // A store written by the engine itself, holding a key that expired an hour ago.
    let engine = Engine::open(&store, Options::default()).expect("engine opens");
    let now_ms = engine.clock().now_ms();
    let meta = RecordMeta {
        kind: Kind::Text,
        content_type: "text/plain",
        metadata: None,
        created_at_ms: 0,
    }
    .encode()
    .expect("meta encodes");
    for (key, expires_at_ms) in [("user/gone", Some(now_ms - 3_600_000)), ("user/kept", None)] {
        engine
            .put(
                key.to_owned().into_bytes(),
                b"v".to_vec(),
                WriteOptions {
                    expires_at_ms,
                    meta: meta.clone().into(),
                },
            )
            .expect("written");
    }
    engine.close().expect("closed");

    let exported =
        String::from_utf8(ok(&["export", "--data-dir", path_str(&store)], b"")).expect("UTF-8");
    assert_eq!(exported.lines().count(), 1, "{exported}");
    assert!(exported.contains("\"key\":\"kept\""));
    let stats: Value = serde_json::from_slice(&ok(
        &["stats", "--data-dir", path_str(&store), "--json"],
        b"",
    ))
    .expect("stats JSON");
    assert_eq!(stats["keys"], json!({"user": 1, "event": 0}));

    let line = r#"{"entity":"user","key":"old","value":"v","expires_at":"2020-01-01T00:00:00Z"}"#;
    let out = caskade(&["import", "--data-dir", path_str(&store)], line.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("imported 0 keys; 1 expired keys left out"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn stats_reports_keys_segments_and_bytes_as_a_table_and_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("s");
    let mut server = Server::start_in(&store, &["--segment-bytes", "4096"]);
    fill(&server);
    for i in 0..40 {
        let body = json!({"value": "x".repeat(200)});
        assert_eq!(
            server
                .put_json(&format!("/v1/kv/event/n{i}"), &body, &[])
                .status,
            201
        );
    }
    assert!(server.signal_and_wait(Signal::SIGTERM).success());

    let stats: Value = serde_json::from_slice(&ok(
        &["stats", "--data-dir", path_str(&store), "--json"],
        b"",
    ))
    .expect("stats JSON");
    assert_eq!(stats["keys"], json!({"user": 4, "event": 43}));
    assert_eq!(stats["keys_total"], 47);
    let n = |name: &str| {
        stats[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {stats}"))
    };
    assert!(n("segments") > 1, "{stats}");
    assert_eq!(n("disk_bytes"), n("live_bytes") + n("dead_bytes"));
    assert!(n("live_bytes") > 40 * 200);
    assert!(n("index_bytes") > 0);
    let oldest = stats["oldest_segment"]["file"].as_str().unwrap_or_default();
    let newest = stats["newest_segment"]["file"].as_str().unwrap_or_default();
    assert_eq!(oldest, "0000000001.seg");
    assert!(newest > oldest, "{newest} after {oldest}");
    assert!(store.join(newest).exists());
    assert!(
        stats["newest_segment"]["modified_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let table =
        String::from_utf8(ok(&["stats", "--data-dir", path_str(&store)], b"")).expect("UTF-8");
    let row = |name: &str, value: &str| format!("{name:<20} {value}");
    for row in [
        row("keys", "47"),
        row("  event", "43"),
        row("  user", "4"),
        row("segments", &n("segments").to_string()),
        format!("({} bytes)", n("disk_bytes")),
        row("oldest segment", &format!("{oldest}  ")),
        row("newest segment", &format!("{newest}  ")),
    ] {
        assert!(table.contains(&row), "{row:?} missing from:\n{table}");
    }
}

#[test]
fn a_served_store_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("s");
    let server = Server::start_in(&store, &[]);
    fill(&server);
    let s = path_str(&store);
    let line = numbered_lines(1, None);
    for args in [
        &["export", "--data-dir", s][..],
        &["import", "--data-dir", s],
        &["stats", "--data-dir", s],
    ] {
        let out = caskade(args, line.as_bytes());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("in use by another process"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        server.get("/v1/kv/user/k0000").status,
        404,
        "nothing imported"
    );
    assert_eq!(
        server.get("/v1/kv/user/alice").status,
        200,
        "the server goes on"
    );
}
