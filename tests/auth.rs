//! Access (API.md "Access"): bearer tokens with scopes, tokens never logged, and the
//! refusal to serve a reachable address without tokens.

mod common;

use std::process::Command;

use common::{Server, binary};
use nix::sys::signal::Signal;

const READ: &str = "read-token-1f2e3d";
const WRITE: &str = "write-token-4c5b6a";
const ADMIN: &str = "admin-token-7a8b9c";
const WRONG: &str = "wrong-token-0d0e0f";

fn with_tokens(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens");
    let text = format!("# test tokens\n{READ} read\n{WRITE} write\n{ADMIN} admin\n");
    std::fs::write(&file, text).expect("token file written");
    let file = file.to_string_lossy().into_owned();
    let mut args = vec!["--auth-tokens", file.as_str()];
    args.extend_from_slice(extra);
    (Server::start_in(&dir.path().join("store"), &args), dir)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn v1_needs_a_token_and_service_routes_do_not() {
    let (server, _dir) = with_tokens(&[]);
    let anonymous = server.get("/v1/kv/user/alice");
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.error_codes(), vec![3001]);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    let auth = bearer(WRONG);
    let wrong = server.request(
        "GET",
        "/v1/kv/user/alice",
        &[("authorization", &auth)],
        Vec::new(),
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get("/metrics").status, 200);
}

#[test]
fn auth_is_checked_before_the_route() {
    let (server, _dir) = with_tokens(&[]);
    assert_eq!(server.get("/v1/nothing-here").status, 401);
    let patch = server.request("PATCH", "/v1/kv/user/a", &[], b"{}".to_vec());
    assert_eq!(patch.status, 401);
    let auth = bearer(ADMIN);
    let known = server.request(
        "GET",
        "/v1/nothing-here",
        &[("authorization", &auth)],
        Vec::new(),
    );
    assert_eq!(known.error_codes(), vec![2002]);
}

#[test]
fn scopes_nest_read_in_write_in_admin() {
    let (server, _dir) = with_tokens(&[]);
    let call = |method: &str, path: &str, token: &str| {
        let auth = bearer(token);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        let body = if method == "GET" {
            Vec::new()
        } else {
            br#"{"value":1}"#.to_vec()
        };
        server.request(method, path, &headers, body).status
    };
    assert_eq!(call("PUT", "/v1/kv/user/a", READ), 403);
    assert_eq!(call("DELETE", "/v1/kv/user/a", READ), 403);
    assert_eq!(call("POST", "/v1/bulk", READ), 403);
    assert_eq!(call("GET", "/v1/admin/stats", READ), 403);
    assert_eq!(call("GET", "/v1/admin/stats", WRITE), 403);
    assert_eq!(call("POST", "/v1/admin/compact", WRITE), 403);
    assert_eq!(call("GET", "/v1/admin/stats", ADMIN), 200);
    for token in [READ, WRITE, ADMIN] {
        assert!(
            ![401, 403].contains(&call("GET", "/v1/kv/user/a", token)),
            "{token}"
        );
    }
    for token in [WRITE, ADMIN] {
        assert!(
            ![401, 403].contains(&call("PUT", "/v1/kv/user/a", token)),
            "{token}"
        );
    }
    let auth = bearer(READ);
    let forbidden = server.request(
        "PUT",
        "/v1/kv/user/a",
        &[("authorization", &auth)],
        b"{}".to_vec(),
    );
    assert_eq!(forbidden.error_codes(), vec![3002]);
}

#[test]
fn tokens_never_reach_the_logs_or_the_responses() {
    let (mut server, _dir) = with_tokens(&["--log-format", "json"]);
    for token in [READ, WRITE, ADMIN, WRONG] {
        let auth = bearer(token);
        let resp = server.request(
            "GET",
            "/v1/admin/stats",
            &[("authorization", &auth)],
            Vec::new(),
        );
        assert!(!resp.text().contains(token), "a response echoed a token");
    }
    let status = server.signal_and_wait(Signal::SIGTERM);
    assert!(status.success());
    let logs = server.logs();
    assert!(
        logs.contains("/v1/admin/stats"),
        "requests are logged:\n{logs}"
    );
    for token in [READ, WRITE, ADMIN, WRONG] {
        assert!(!logs.contains(token), "a token was logged:\n{logs}");
    }
    for line in logs.lines() {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(
            parsed.is_ok(),
            "--log-format json wrote a non-JSON line: {line}"
        );
    }
}

#[test]
fn a_bad_token_file_is_refused_at_startup_without_echoing_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens");
    std::fs::write(&file, "s3cret-value superuser\n").expect("written");
    let out = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--auth-tokens"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("store"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 1"), "{stderr}");
    assert!(!stderr.contains("s3cret-value"), "{stderr}");
}

#[test]
fn without_tokens_a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(binary())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("store"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "it must not listen at all");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-unauthenticated"), "{stderr}");
}

#[test]
fn allow_unauthenticated_serves_a_non_loopback_address() {
    let server = Server::start(&["--listen", "0.0.0.0:0", "--allow-unauthenticated"]);
    assert!(
        server.base.starts_with("http://0.0.0.0:"),
        "{}",
        server.base
    );
    assert_eq!(server.get("/readyz").status, 200);
}
