//! Hostile clients (issue 5, part 4): a huge body streamed without a length, a thousand
//! idle connections, the server at its own descriptor limit, and bytes that are not
//! UTF-8 or not valid percent-encoding in paths, queries and headers. The slowloris,
//! idle-timeout, in-flight-cap and `Content-Length: 1 GiB` cases are in `limits.rs`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, connect, read_until_closed};

/// Longest a test waits for one answer over a raw socket.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// Most the server's resident memory may grow while it refuses a 1 GiB body.
const RSS_GROWTH_MAX_BYTES: u64 = 64 << 20;
/// The idle connections a normal client must get past.
const IDLE_CONNECTIONS: usize = 1000;
/// Longest a normal client's request may take while the idle connections are open.
const NORMAL_ANSWER_MAX: Duration = Duration::from_secs(2);

/// Sends `request` as raw bytes on a new connection and reads the whole answer.
fn exchange(server: &Server, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(server);
    stream.write_all(request).expect("request sent");
    read_until_closed(&mut stream).unwrap_or_else(|| {
        panic!(
            "no answer, connection left open: {}",
            String::from_utf8_lossy(request)
        )
    })
}

/// The status code of a raw HTTP/1.1 answer.
fn status_of(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

/// The body of a raw HTTP/1.1 answer (after the blank line).
fn body_of(answer: &[u8]) -> &[u8] {
    answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&[][..], |at| &answer[at + 4..])
}

/// Raises this test process's soft limit on open files so it can hold `needed`
/// descriptors; servers started afterwards inherit it (and raise their own to the hard
/// limit anyway).
fn raise_own_fd_limit(needed: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("the open-files limit");
    assert!(
        hard >= needed,
        "this test needs {needed} open files; the hard limit is {hard}"
    );
    if soft < needed {
        setrlimit(Resource::RLIMIT_NOFILE, needed, hard).expect("the open-files limit raised");
    }
}

/// Polls `ready` until it holds; panics with `what` and the logs after `ANSWER_WITHIN`.
fn wait_for(server: &Server, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + ANSWER_WITHIN;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("never {what}; logs:\n{}", server.logs());
}

/// Streams up to 1 GiB as chunked transfer coding (no `Content-Length`, so the server
/// cannot refuse up front) and returns the answer and how many bytes went out.
fn stream_a_chunked_gib(server: &Server, head: &str) -> (Vec<u8>, u64) {
    const GIB: u64 = 1 << 30;
    let mut upload = connect(server);
    upload.write_all(head.as_bytes()).expect("head sent");
    let mut writer = upload.try_clone().expect("a second handle");
    let sender = std::thread::spawn(move || {
        let mut chunk = b"100000\r\n".to_vec();
        chunk.extend(std::iter::repeat_n(b'7', 1 << 20));
        chunk.extend_from_slice(b"\r\n");
        let mut sent = 0u64;
        while sent < GIB && writer.write_all(&chunk).is_ok() {
            sent += 1 << 20;
        }
        sent
    });
    let answer = read_until_closed(&mut upload).unwrap_or_default();
    (answer, sender.join().unwrap_or(GIB))
}

#[test]
fn a_chunked_gib_is_refused_with_413_and_never_buffered() {
    let server = Server::start(&[]);
    let before = server.rss_bytes();
    let heads = [
        "PUT /v1/kv/user/raw HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        "PUT /v1/kv/user/envelope HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    ];
    for head in heads {
        let ((answer, sent), peak) = server.peak_rss_during(|| stream_a_chunked_gib(&server, head));
        assert_eq!(
            status_of(&answer),
            Some(413),
            "{head}{}",
            String::from_utf8_lossy(&answer)
        );
        assert!(sent < 1 << 30, "the whole GiB was taken in: {head}");
        assert!(
            peak.saturating_sub(before) < RSS_GROWTH_MAX_BYTES,
            "memory grew from {before} to {peak} bytes for {head}"
        );
    }
    assert_eq!(server.get("/v1/kv/user/raw").status, 404, "nothing stored");
    assert_eq!(server.get("/v1/kv/user/envelope").status, 404);
}

#[test]
fn a_thousand_idle_connections_do_not_stop_a_normal_client() {
    raise_own_fd_limit(4 * IDLE_CONNECTIONS as u64);
    let server = Server::start(&[]);
    let fds_before = server.open_fds();
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    // Half never send a byte; half finish one keep-alive request and then go quiet.
    for i in 0..IDLE_CONNECTIONS {
        let mut stream = connect(&server);
        if i % 2 == 1 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("request sent");
            let mut answer = Vec::new();
            let mut buf = [0u8; 1024];
            while !answer.ends_with(b"}}") {
                let n = stream
                    .read(&mut buf)
                    .expect("an answer on a keep-alive connection");
                assert!(n > 0, "a keep-alive connection was closed");
                answer.extend_from_slice(&buf[..n]);
            }
        }
        idle.push(stream);
    }
    wait_for(&server, "holding every idle connection", || {
        server.open_fds() >= fds_before + IDLE_CONNECTIONS
    });
    let started = Instant::now();
    let put = server.put_json("/v1/kv/user/normal", &serde_json::json!({"value": 1}), &[]);
    let got = server.get("/v1/kv/user/normal");
    let listed = server.get("/v1/kv/user");
    let took = started.elapsed();
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(got.json()["data"]["value"], 1);
    assert_eq!(listed.status, 200);
    assert!(
        took < NORMAL_ANSWER_MAX,
        "three requests took {took:?} behind {IDLE_CONNECTIONS} idle connections"
    );
    let mut keep_alive = idle.pop().expect("an idle keep-alive connection");
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("a second request on an idle connection");
    let answer = read_until_closed(&mut keep_alive).unwrap_or_default();
    assert_eq!(
        status_of(&answer),
        Some(200),
        "an idle connection still works"
    );
}

#[test]
fn the_server_raises_its_soft_open_files_limit_to_the_hard_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::spawn_with_ulimit("-Sn 256", &dir.path().join("store"), &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid()))
        .expect("the server's /proc limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_eq!(numbers[0], numbers[1], "soft is not the hard limit: {line}");
    assert_ne!(numbers[0], "256", "{line}");
}

#[test]
fn at_its_descriptor_limit_the_server_keeps_running_and_serves_once_idle_connections_go() {
    const FDS: u64 = 64;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::spawn_with_ulimit(
        &format!("-n {FDS}"),
        &dir.path().join("store"),
        &[
            "--idle-timeout-ms",
            "1000",
            "--header-read-timeout-ms",
            "60000",
        ],
    );
    server.wait_ready();
    let silent: Vec<TcpStream> = (0..2 * FDS).map(|_| connect(&server)).collect();
    wait_for(&server, "out of descriptors", || {
        server.logs().contains("accept failed")
    });
    // The kernel has queued this connection; it is taken once the idle timeout has
    // closed the silent ones and freed their descriptors.
    let started = Instant::now();
    let health = server.get("/healthz");
    assert_eq!(health.status, 200);
    assert!(
        started.elapsed() < ANSWER_WITHIN,
        "served only after {:?}",
        started.elapsed()
    );
    let put = server.put_json("/v1/kv/user/after", &serde_json::json!({"value": "x"}), &[]);
    assert_eq!(put.status, 201, "{}", put.text());
    drop(silent);
}

/// A raw request for `target` with `headers`, closing the connection after the answer.
fn raw(method: &str, target: &[u8], headers: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} ").into_bytes();
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for header in headers {
        out.extend_from_slice(header);
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

#[test]
fn bad_utf8_and_bad_percent_encoding_get_a_json_4xx() {
    let server = Server::start(&[]);
    let text: &[u8] = b"Content-Type: text/plain";
    let json: &[u8] = b"Content-Type: application/json";
    let envelope: &[u8] = br#"{"value":1}"#;
    // (request, status, error_code): each answered by caskade with its JSON envelope.
    let cases: Vec<(Vec<u8>, u16, u64)> = vec![
        // Paths: percent-decoding to bytes that are not UTF-8, or broken escapes.
        (raw("GET", b"/v1/kv/user/%FF", &[], b""), 422, 1002),
        (raw("GET", b"/v1/kv/user/%E2%82", &[], b""), 422, 1002),
        (raw("GET", b"/v1/kv/user/%C3%A9", &[], b""), 422, 1002),
        (raw("GET", b"/v1/kv/user/%G1", &[], b""), 422, 1002),
        (raw("GET", b"/v1/kv/user/a%2", &[], b""), 422, 1002),
        (raw("GET", b"/v1/kv/user/%", &[], b""), 422, 1002),
        (raw("GET", b"/v1/kv/user/a%00", &[], b""), 422, 1002),
        (raw("GET", b"/v1/kv/user/%FF/value", &[], b""), 422, 1002),
        (raw("DELETE", b"/v1/kv/user/%FE", &[], b""), 422, 1002),
        (raw("PUT", b"/v1/kv/user/%FF", &[json], envelope), 422, 1002),
        (raw("GET", b"/v1/kv/%FF/a", &[], b""), 422, 1001),
        (raw("GET", b"/v1/kv/%ZZ", &[], b""), 422, 1001),
        (raw("GET", b"/healthz%FF", &[], b""), 404, 2002),
        // Queries.
        (raw("GET", b"/v1/kv/user?prefix=%FF", &[], b""), 422, 1008),
        (raw("GET", b"/v1/kv/user?prefix=%", &[], b""), 422, 1008),
        (raw("GET", b"/v1/kv/user?limit=%G0", &[], b""), 422, 1008),
        (
            raw("GET", b"/v1/kv/user?cursor=%FF%FE", &[], b""),
            422,
            1008,
        ),
        (raw("GET", b"/v1/kv/user?%FF=1", &[], b""), 422, 1008),
        (
            raw("PUT", b"/v1/kv/user/a?ttl=%FF", &[text], b"hi"),
            422,
            1008,
        ),
        // Headers whose values hold bytes that are not UTF-8 (RFC 9110 obs-text).
        (
            raw(
                "PUT",
                b"/v1/kv/user/a",
                &[b"Content-Type: text/plain; charset=\xff"],
                b"hi",
            ),
            422,
            1006,
        ),
        (
            raw(
                "PUT",
                b"/v1/kv/user/a",
                &[b"Content-Type: \xc3\xa9/x"],
                b"hi",
            ),
            422,
            1006,
        ),
        (
            raw(
                "PUT",
                b"/v1/kv/user/a",
                &[text, b"X-Kv-Metadata: {\"a\":\"\xff\"}"],
                b"hi",
            ),
            422,
            1005,
        ),
        (
            raw(
                "PUT",
                b"/v1/kv/user/a",
                &[text, b"X-Kv-Metadata: %7B%7D"],
                b"hi",
            ),
            422,
            1005,
        ),
        (
            raw(
                "PUT",
                b"/v1/kv/user/a",
                &[json, b"If-Match: \"\xff\""],
                envelope,
            ),
            422,
            1012,
        ),
        (
            raw("GET", b"/v1/kv/user/a", &[b"If-None-Match: \xff\xfe"], b""),
            422,
            1012,
        ),
        // A text body that is not UTF-8.
        (
            raw("PUT", b"/v1/kv/user/a", &[text], b"\xff\xfe"),
            422,
            1004,
        ),
    ];
    for (request, status, code) in &cases {
        let answer = exchange(&server, request);
        let shown = String::from_utf8_lossy(request).into_owned();
        assert_eq!(
            status_of(&answer),
            Some(*status),
            "{shown}\n=> {}",
            String::from_utf8_lossy(&answer)
        );
        let doc: serde_json::Value =
            serde_json::from_slice(body_of(&answer)).expect("a JSON error body");
        assert_eq!(doc["errors"][0]["error_code"], *code, "{shown}\n=> {doc}");
    }
    // Headers that do not matter to the route are ignored, bad bytes or not; a request
    // id that is not sane is replaced by a fresh one, never echoed.
    let answer = exchange(
        &server,
        &raw(
            "GET",
            b"/v1/kv/user/a",
            &[b"X-Request-Id: \xff\xfe", b"X-Other: \xff"],
            b"",
        ),
    );
    assert_eq!(status_of(&answer), Some(404));
    assert!(
        !answer.windows(2).any(|w| w == b"\xff\xfe"),
        "the bad id was echoed"
    );
    assert_eq!(server.get("/healthz").status, 200, "still serving");
}

#[test]
fn what_hyper_refuses_before_caskade_sees_it_is_a_bare_400_and_a_close() {
    let server = Server::start(&[]);
    // Bytes the HTTP/1.1 grammar does not allow in a request line or a header name:
    // hyper's parser refuses them, answers `400 Bad Request` with no body, and closes.
    let cases: [&[u8]; 6] = [
        b"GET /v1/kv/user/\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/kv/user?prefix=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET \xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G\xffT /v1/kv/user/a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/kv/user/a HTTP/1.1\r\nX-\xff: 1\r\nHost: x\r\n\r\n",
        b"GET /v1/kv/user/a HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x01b\r\n\r\n",
    ];
    for request in cases {
        let answer = exchange(&server, request);
        let shown = String::from_utf8_lossy(request).into_owned();
        assert_eq!(
            status_of(&answer),
            Some(400),
            "{shown}\n=> {}",
            String::from_utf8_lossy(&answer)
        );
        assert!(body_of(&answer).is_empty(), "{shown}");
    }
    assert_eq!(server.get("/healthz").status, 200, "still serving");
}
