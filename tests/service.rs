//! The service routes, the JSON 404/405, request ids, and the OpenAPI document
//! against the route table, over HTTP to the real binary.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use caskade_server::routes::ROUTES;
use common::{Server, binary};

#[test]
fn help_describes_the_serve_command() {
    let top = Command::new(binary())
        .arg("--help")
        .output()
        .expect("caskade --help runs");
    assert!(top.status.success());
    assert!(String::from_utf8_lossy(&top.stdout).contains("serve"));
    let serve = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&serve.stdout);
    for flag in [
        "--data-dir",
        "--listen",
        "--sync",
        "--auth-tokens",
        "--max-inflight-requests",
        "CASKADE_LISTEN",
    ] {
        assert!(text.contains(flag), "serve --help lacks {flag}");
    }
}

#[test]
fn bad_flags_exit_with_code_2_and_say_why() {
    let out = Command::new(binary())
        .args(["serve", "--sync", "sometimes"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sync"));
}

#[test]
fn environment_variables_configure_like_flags() {
    let out = Command::new(binary())
        .arg("serve")
        .env("CASKADE_SYNC", "sometimes")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sometimes"));
}

#[test]
fn each_request_logs_one_line_with_method_route_status_latency_and_id() {
    let mut server = Server::start(&["--log-format", "json"]);
    let ids = [("x-request-id", "log-line-check-1")];
    assert_eq!(
        server
            .request("GET", "/v1/admin/stats", &ids, Vec::new())
            .status,
        200
    );
    assert!(
        server
            .signal_and_wait(nix::sys::signal::Signal::SIGTERM)
            .success()
    );
    let logs = server.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| l.contains("log-line-check-1"))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    let line = &lines[0];
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["route"], "/v1/admin/stats", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert!(line["latency_ms"].is_number(), "{line}");
    assert_eq!(line["span"]["request_id"], "log-line-check-1", "{line}");
}

/// The reads of one key served without the router (GET and HEAD of the envelope's
/// route and of `…/value`) log and count under their own method and route template, as
/// the router's requests do; a GET with a body, which the router serves, too.
#[test]
fn reads_of_one_key_log_and_count_under_their_method_and_route() {
    const KEY: &str = "/v1/kv/{entity}/{key}";
    const VALUE: &str = "/v1/kv/{entity}/{key}/value";
    let mut server = Server::start(&["--log-format", "json"]);
    let put = server.put_json("/v1/kv/user/r", &serde_json::json!({"value": "v"}), &[]);
    assert_eq!(put.status, 201);
    let reads: [(&str, &str, &[u8], &str, u16); 6] = [
        ("GET", "/v1/kv/user/r", b"", KEY, 200),
        ("HEAD", "/v1/kv/user/r", b"", KEY, 200),
        ("GET", "/v1/kv/user/r/value", b"", VALUE, 200),
        ("HEAD", "/v1/kv/user/r/value", b"", VALUE, 200),
        ("GET", "/v1/kv/user/absent/value", b"", VALUE, 404),
        ("GET", "/v1/kv/user/r/value", b"ignored", VALUE, 200),
    ];
    for (i, (method, path, body, _, status)) in reads.iter().enumerate() {
        let id = format!("read-route-{i}");
        let got = server.request(method, path, &[("x-request-id", &id)], body.to_vec());
        assert_eq!(got.status, *status, "{method} {path}");
        assert_eq!(got.header("x-request-id"), Some(id.as_str()));
        // Only the router's path leaves a body unread, which closes the connection:
        // the GET with a body really was sent with it and served by the router.
        let closes = got.header("connection") == Some("close");
        assert_eq!(closes, !body.is_empty(), "{method} {path}");
    }
    let metrics = server.get("/metrics").text();
    for (method, route, status, count) in [
        ("GET", KEY, 200, 1),
        ("HEAD", KEY, 200, 1),
        ("GET", VALUE, 200, 2),
        ("HEAD", VALUE, 200, 1),
        ("GET", VALUE, 404, 1),
    ] {
        let series = format!(
            r#"caskade_http_requests_total{{method="{method}",route="{route}",status="{status}"}} {count}"#
        );
        assert!(
            metrics.lines().any(|l| l == series),
            "no {series} in\n{metrics}"
        );
    }
    assert!(
        server
            .signal_and_wait(nix::sys::signal::Signal::SIGTERM)
            .success()
    );
    let logs = server.logs();
    for (i, (method, path, _, route, status)) in reads.iter().enumerate() {
        let id = format!("read-route-{i}");
        let lines: Vec<serde_json::Value> = logs
            .lines()
            .filter(|l| l.contains(&format!("\"{id}\"")))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(lines.len(), 1, "{id}: {logs}");
        let line = &lines[0];
        assert_eq!(line["method"], *method, "{line}");
        assert_eq!(line["route"], *route, "{line}");
        assert_eq!(line["path"], *path, "{line}");
        assert_eq!(line["status"], *status, "{line}");
    }
}

/// With stderr on a regular file the logger thread also starts the writeback of what it
/// wrote every mebibyte (so that a busy log does not reach the disk in one burst that
/// stalls the data's fsync): every request's line still lands in the file, whole and in
/// order, well past that mark.
#[test]
fn a_log_redirected_to_a_file_keeps_every_line_past_the_writeback_mark() {
    const REQUESTS: usize = 8_000;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("caskade.log");
    let mut server =
        Server::start_logging_to_file(&dir.path().join("data"), &log, &["--log-format", "json"]);
    for i in 0..REQUESTS {
        let id = format!("file-log-{i}");
        let status = server
            .request("GET", "/healthz", &[("x-request-id", &id)], Vec::new())
            .status;
        assert_eq!(status, 200, "request {i}");
    }
    assert!(
        server
            .signal_and_wait(nix::sys::signal::Signal::SIGTERM)
            .success()
    );
    let text = std::fs::read_to_string(&log).expect("the log file");
    assert!(text.len() > 1 << 20, "{} bytes of log", text.len());
    let ids: Vec<usize> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a whole JSON line"))
        .filter_map(|line| {
            line["span"]["request_id"]
                .as_str()?
                .strip_prefix("file-log-")?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(ids, (0..REQUESTS).collect::<Vec<_>>());
}

#[test]
fn health_ready_metrics_and_openapi_answer() {
    let server = Server::start(&[]);
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get("/readyz").status, 200);
    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for name in [
        "# TYPE caskade_http_requests_total counter",
        "caskade_engine_disk_bytes",
        "caskade_entity_keys{entity=\"user\"}",
        "caskade_log_lines_dropped_total 0",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    assert!(text.contains(r#"route="/readyz",status="200""#), "{text}");
    let doc = server.get("/openapi.json").json();
    assert_eq!(doc["openapi"], "3.1.0");
}

#[test]
fn unknown_routes_are_json_404_and_wrong_methods_json_405_with_allow() {
    let server = Server::start(&[]);
    let missing = server.get("/v1/nothing-here");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_codes(), vec![2002]);
    assert_eq!(missing.json()["errors"][0]["instance"], "/v1/nothing-here");
    let elsewhere = server.get("/nope");
    assert_eq!(elsewhere.error_codes(), vec![2002]);
    let wrong = server.request("PATCH", "/v1/kv/user/alice", &[], b"{}".to_vec());
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.error_codes(), vec![2003]);
    assert_eq!(wrong.header("allow"), Some("PUT, GET, HEAD, DELETE"));
    let bulk = server.get("/v1/bulk");
    assert_eq!(bulk.status, 405);
    assert_eq!(bulk.header("allow"), Some("POST"));
}

#[test]
fn request_ids_are_echoed_or_generated() {
    let server = Server::start(&[]);
    let echoed = server.request(
        "GET",
        "/healthz",
        &[("x-request-id", "trace-7")],
        Vec::new(),
    );
    assert_eq!(echoed.header("x-request-id"), Some("trace-7"));
    let replaced = server.request(
        "GET",
        "/healthz",
        &[("x-request-id", "bad id {}")],
        Vec::new(),
    );
    let id = replaced.header("x-request-id").unwrap_or_default();
    assert!(!id.is_empty() && id != "bad id {}", "{id:?}");
}

#[test]
fn admin_stats_reports_the_store() {
    let server = Server::start(&[]);
    let stats = server.get("/v1/admin/stats");
    assert_eq!(stats.status, 200, "{}", stats.text());
    let data = &stats.json()["data"];
    for field in [
        "disk_bytes",
        "live_bytes",
        "dead_bytes",
        "segments",
        "index_bytes",
        "compactions",
        "expired_swept",
        "uptime_s",
    ] {
        assert!(data[field].is_u64(), "{field} missing in {data}");
    }
    assert!(
        data["keys"]["user"].is_u64() && data["keys"]["event"].is_u64(),
        "{data}"
    );
    assert_eq!(data["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn compact_starts_in_the_background_or_waits_and_reports() {
    let server = Server::start(&["--segment-bytes", "4096"]);
    let started = server.request("POST", "/v1/admin/compact", &[], Vec::new());
    assert_eq!(started.status, 202, "{}", started.text());
    assert_eq!(started.json()["data"]["started"], true);
    let done = server.request("POST", "/v1/admin/compact?wait=true", &[], Vec::new());
    assert_eq!(done.status, 200, "{}", done.text());
    let data = &done.json()["data"];
    assert_eq!(data["finished"], true);
    assert!(data["bytes_reclaimed"].is_u64(), "{data}");
    let bad = server.request("POST", "/v1/admin/compact?wait=soon", &[], Vec::new());
    assert_eq!(bad.error_codes(), vec![1008]);
}

#[test]
fn openapi_documents_exactly_the_served_routes() {
    let server = Server::start(&[]);
    let doc = server.get("/openapi.json").json();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in ["get", "head", "put", "post", "delete", "patch", "options"] {
            if item.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.template.to_owned()))
        .collect();
    assert_eq!(documented, served);
}

/// Needs the kv routes of branch `api` to write the garbage.
#[test]
fn compaction_gives_back_overwritten_space() {
    let server = Server::start(&["--segment-bytes", "4096"]);
    let value = serde_json::json!({"value": "x".repeat(200)});
    for _ in 0..100 {
        let put = server.put_json("/v1/kv/user/churn", &value, &[]);
        assert!(put.status == 200 || put.status == 201, "{}", put.text());
    }
    let before = server.get("/v1/admin/stats").json()["data"]["disk_bytes"].as_u64();
    let done = server.request("POST", "/v1/admin/compact?wait=true", &[], Vec::new());
    assert!(
        done.json()["data"]["bytes_reclaimed"].as_u64() > Some(0),
        "{}",
        done.text()
    );
    let stats = server.get("/v1/admin/stats").json();
    assert!(stats["data"]["disk_bytes"].as_u64() < before, "{stats}");
    assert!(stats["data"]["compactions"].as_u64() >= Some(1), "{stats}");
    assert_eq!(server.get("/v1/kv/user/churn").status, 200);
}

/// Issue 4's acceptance: 1 MiB segments, heavy overwrites, `compact?wait=true` brings
/// disk use near the live bytes, and a restart loads the index from hint files.
#[test]
fn compaction_after_heavy_overwrites_brings_disk_near_live_and_a_restart_loads_hints() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--segment-bytes", "1048576"];
    let mut server = Server::start_in(dir.path(), &args);
    let bulk = |round: usize| {
        let operations: Vec<_> = (0..500)
            .map(|k| {
                serde_json::json!({"op": "put", "entity": "user", "key": format!("k{k}"),
                    "value": format!("{round}-{}", "v".repeat(1000))})
            })
            .collect();
        serde_json::json!({ "operations": operations })
    };
    for round in 0..10 {
        let body = serde_json::to_vec(&bulk(round)).expect("json");
        let resp = server.request(
            "POST",
            "/v1/bulk",
            &[("content-type", "application/json")],
            body,
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let before = server.get("/v1/admin/stats").json()["data"].clone();
    assert!(before["segments"].as_u64() > Some(3), "{before}");
    let done = server.request("POST", "/v1/admin/compact?wait=true", &[], Vec::new());
    assert_eq!(done.status, 200, "{}", done.text());
    let after = server.get("/v1/admin/stats").json()["data"].clone();
    let (disk, live) = (after["disk_bytes"].as_u64(), after["live_bytes"].as_u64());
    let (Some(disk), Some(live)) = (disk, live) else {
        panic!("stats without sizes: {after}");
    };
    assert!(
        disk * 10 <= live * 12,
        "disk {disk} is not near live {live}: {after}"
    );
    assert_eq!(
        server
            .signal_and_wait(nix::sys::signal::Signal::SIGTERM)
            .code(),
        Some(0)
    );
    drop(server);
    let server = Server::start_in(dir.path(), &args);
    let metrics = server.get("/metrics").text();
    let hints = metrics
        .lines()
        .find(|l| l.starts_with("caskade_engine_hints_loaded"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<f64>().ok());
    assert!(hints > Some(0.0), "no hints loaded:\n{metrics}");
    let got = server.get("/v1/kv/user/k7").json();
    assert_eq!(
        got["data"]["value"].as_str().map(|v| &v[..2]),
        Some("9-"),
        "{got}"
    );
}

/// Walks the route table against the running server: every listed (method, path)
/// reaches a handler (no 404 route-not-found, no 405; HEAD answers GET's status), and
/// every other common method on the same path is a 405. Needs the kv routes of `api`.
#[test]
fn every_route_in_the_table_is_served_and_other_methods_are_405() {
    let server = Server::start(&[]);
    let json = [("content-type", "application/json")];
    for route in ROUTES {
        let path = route
            .template
            .replace("{entity}", "user")
            .replace("{key}", "walk");
        let resp = server.request(route.method, &path, &json, b"{}".to_vec());
        if route.method == "HEAD" {
            let get = server.get(&path);
            assert_eq!(
                resp.status, get.status,
                "HEAD {path} must answer GET's status"
            );
        } else if resp.status >= 400 {
            let codes = resp.error_codes();
            assert!(
                !codes.contains(&2002) && !codes.contains(&2003),
                "{} {path} is in the route table but not served: {}",
                route.method,
                resp.text()
            );
        }
        for other in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            if ROUTES
                .iter()
                .any(|r| r.template == route.template && r.method == other)
            {
                continue;
            }
            let resp = server.request(other, &path, &[], b"{}".to_vec());
            assert_eq!(resp.status, 405, "{other} {path}: {}", resp.text());
        }
    }
}
