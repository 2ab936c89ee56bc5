//! Startup, readiness and shutdown of the real binary: the announced port, the data
//! folder's lock, and SIGTERM/SIGINT exiting 0 with every acknowledged write kept.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::Server;
use nix::sys::signal::Signal;
use serde_json::json;

#[test]
fn sigterm_exits_0_and_data_survives_a_restart() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("store");
    let mut server = Server::start_in(&dir, &[]);
    let put = server.put_json("/v1/kv/user/x", &json!({"value": 1}), &[]);
    assert_eq!(put.status, 201, "{}", put.text());
    let status = server.signal_and_wait(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "logs:\n{}", server.logs());
    assert!(server.logs().contains("store closed"), "{}", server.logs());

    let again = Server::start_in(&dir, &[]);
    let got = again.get("/v1/kv/user/x");
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["data"]["value"], 1);
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_before_exiting() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("store");
    let mut server = Server::start_in(&dir, &["--max-inflight-requests", "1"]);
    let mut held = TcpStream::connect(server.addr()).expect("connects");
    let head = "PUT /v1/kv/user/late HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"val";
    held.write_all(head.as_bytes()).expect("sent");
    // The PUT holds the only permit once it is inside its handler.
    server.wait_in_flight(1);
    let busy = server.get("/v1/kv/user/other");
    assert_eq!(
        busy.status,
        503,
        "{}\nlogs:\n{}",
        busy.text(),
        server.logs()
    );
    server.signal(Signal::SIGTERM);
    held.write_all(b"ue\":1}")
        .expect("the rest of the body is still accepted");
    let mut answer = String::new();
    let _ = held.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(server.wait().code(), Some(0), "{}", server.logs());
    let again = Server::start_in(&dir, &[]);
    assert_eq!(again.get("/v1/kv/user/late").json()["data"]["value"], 1);
}

#[test]
fn sigint_exits_0_and_releases_the_lock() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("store");
    let mut server = Server::start_in(&dir, &[]);
    assert_eq!(server.signal_and_wait(Signal::SIGINT).code(), Some(0));
    let again = Server::start_in(&dir, &[]);
    assert_eq!(again.get("/readyz").status, 200);
}

#[test]
fn a_second_server_on_the_same_data_dir_fails_with_the_lock_error() {
    let first = Server::start(&[]);
    let mut second = Server::spawn(&first.data_dir, &[]).unwrap_or_else(|e| panic!("{e}"));
    let status = second.wait();
    assert!(
        !status.success(),
        "the second server must exit with an error"
    );
    let logs = second.logs();
    assert!(
        logs.contains("locked"),
        "the error must say the folder is locked:\n{logs}"
    );
    assert_eq!(
        first.get("/readyz").status,
        200,
        "the first server keeps serving"
    );
}

#[test]
fn an_unusable_data_dir_is_a_clear_startup_error() {
    let temp = tempfile::tempdir().expect("temp dir");
    let file = temp.path().join("not-a-folder");
    std::fs::write(&file, b"x").expect("written");
    let mut server = Server::spawn(&file, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(!server.wait().success());
    assert!(
        server.logs().contains("cannot open the store"),
        "{}",
        server.logs()
    );
}

#[test]
fn the_port_in_the_announcement_is_the_real_one() {
    let server = Server::start(&[]);
    let port: u16 = server
        .addr()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert_ne!(port, 0, "{}", server.base);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
}
