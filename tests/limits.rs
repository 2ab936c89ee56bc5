//! Limits that keep a slow or hostile client from taking the server down: header read
//! timeout, idle timeout, the in-flight cap, and a huge body refused while it streams.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::{Server, connect, read_until_closed};

/// Most the server's resident memory may grow while it refuses a 1 GiB body: far
/// below the body, so the body was not buffered.
const RSS_GROWTH_MAX_BYTES: u64 = 64 << 20;

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let server = Server::start(&["--header-read-timeout-ms", "300"]);
    let mut slow = connect(&server);
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .expect("sent");
    let answer = read_until_closed(&mut slow);
    assert!(
        answer.is_some(),
        "the server kept a slowloris connection open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "cut too early"
    );
    let text = String::from_utf8_lossy(answer.as_deref().unwrap_or_default()).into_owned();
    assert!(!text.contains("200 OK"), "{text}");
    assert_eq!(
        server.get("/healthz").status,
        200,
        "others are still served"
    );
}

/// A header read timeout short enough to test, and an idle timeout that cannot cut first.
const SHORT_HEADER_WAIT: [&str; 4] = [
    "--header-read-timeout-ms",
    "300",
    "--idle-timeout-ms",
    "60000",
];

/// Reads one response with a `Content-Length` body off a keep-alive connection.
fn read_one_response(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse().ok())
                .expect("a Content-Length");
            if all.len() >= end + 4 + length {
                return all;
            }
        }
        let n = stream.read(&mut buf).expect("the response arrives");
        assert!(n > 0, "closed mid-response after {} bytes", all.len());
        all.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn the_header_read_timeout_also_bounds_the_wait_between_keep_alive_requests() {
    let server = Server::start(&SHORT_HEADER_WAIT);
    let mut conn = connect(&server);
    for _ in 0..2 {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("sent");
        let answer = read_one_response(&mut conn);
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    }
    let answered = Instant::now();
    let rest = read_until_closed(&mut conn);
    assert_eq!(
        rest.as_deref(),
        Some(&b""[..]),
        "a keep-alive connection waiting for headers stayed open"
    );
    assert!(
        answered.elapsed() >= Duration::from_millis(250),
        "cut too early"
    );
}

/// A client slower than the header read timeout, once its headers are in (a body sent
/// in pieces, a large answer read late), is not cut by it: the idle timeout is what
/// bounds those, and bytes keep moving or hyper is still writing.
#[test]
fn requests_and_answers_slower_than_the_header_read_timeout_complete() {
    let server = Server::start(&SHORT_HEADER_WAIT);
    let mut slow_body = connect(&server);
    let body = br#"{"value": "sent in pieces, slower than the header read timeout"}"#;
    slow_body
        .write_all(
            format!(
                "PUT /v1/kv/user/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .expect("head sent");
    for piece in body.chunks(body.len() / 6 + 1) {
        // The pause is the behaviour under test (a slow sender), not a wait for the server.
        std::thread::sleep(Duration::from_millis(120));
        slow_body.write_all(piece).expect("piece sent");
    }
    let answer = read_one_response(&mut slow_body);
    assert!(
        answer.starts_with(b"HTTP/1.1 201"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // More than the socket buffers hold, so hyper still has bytes to write while the
    // client reads nothing.
    let big = vec![b'x'; 16 << 20];
    let put = server.request(
        "PUT",
        "/v1/kv/user/big",
        &[("Content-Type", "application/octet-stream")],
        big.clone(),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let mut late_reader = connect(&server);
    late_reader
        .write_all(b"GET /v1/kv/user/big/value HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("sent");
    // The pause is the behaviour under test (a client that reads its answer late).
    std::thread::sleep(Duration::from_millis(700));
    let answer = read_one_response(&mut late_reader);
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{:?}", &answer[..64]);
    assert!(answer.ends_with(&big[..1024]), "the value arrived whole");
    assert!(answer.len() > big.len(), "the value arrived whole");
}

#[test]
fn a_connection_that_moves_no_byte_is_closed_after_the_idle_timeout() {
    let server = Server::start(&[
        "--idle-timeout-ms",
        "300",
        "--header-read-timeout-ms",
        "60000",
    ]);
    let mut silent = connect(&server);
    let started = Instant::now();
    assert!(
        read_until_closed(&mut silent).is_some(),
        "a silent connection stayed open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "cut too early"
    );
    let mut stalled = connect(&server);
    let head = "PUT /v1/kv/user/stalled HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    stalled.write_all(head.as_bytes()).expect("sent");
    assert!(
        read_until_closed(&mut stalled).is_some(),
        "a stalled body kept its connection"
    );
}

#[test]
fn requests_beyond_the_inflight_cap_get_503_unavailable() {
    let server = Server::start(&["--max-inflight-requests", "1"]);
    // A PUT whose body never completes holds the only permit inside its handler.
    let mut holder = connect(&server);
    let head = "PUT /v1/kv/user/held HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"val";
    holder.write_all(head.as_bytes()).expect("sent");
    server.wait_in_flight(1);
    let refused = server.get("/v1/kv/user/other");
    assert_eq!(
        refused.status,
        503,
        "{}\nlogs:\n{}",
        refused.text(),
        server.logs()
    );
    assert_eq!(refused.error_codes(), vec![5002]);
    assert_eq!(
        server.get("/healthz").status,
        200,
        "service routes are not capped"
    );
    holder.write_all(b"ue\":1}").expect("rest of the body sent");
    holder.shutdown(Shutdown::Write).ok();
    let answer =
        String::from_utf8_lossy(&read_until_closed(&mut holder).unwrap_or_default()).into_owned();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(
        server.get("/v1/kv/user/held").status,
        200,
        "the permit came back"
    );
}

#[test]
fn a_one_gib_body_is_refused_while_it_streams() {
    const GIB: u64 = 1 << 30;
    let server = Server::start(&[]);
    let mut upload = connect(&server);
    let head = format!(
        "PUT /v1/kv/user/huge HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {GIB}\r\n\r\n"
    );
    upload.write_all(head.as_bytes()).expect("head sent");
    let mut writer = upload.try_clone().expect("a second handle");
    let sender = std::thread::spawn(move || {
        let chunk = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        while sent < GIB && writer.write_all(&chunk).is_ok() {
            sent += chunk.len() as u64;
        }
        sent
    });
    let before = server.rss_bytes();
    let ((answer, sent), peak) = server.peak_rss_during(|| {
        let answer = read_until_closed(&mut upload).unwrap_or_default();
        (answer, sender.join().unwrap_or(GIB))
    });
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(sent < GIB, "the whole GiB was accepted before the refusal");
    assert!(
        peak.saturating_sub(before) < RSS_GROWTH_MAX_BYTES,
        "the server's memory grew from {before} to {peak} bytes for a refused body"
    );
}
