//! The store API of `API.md`, proven over HTTP against the real `caskade` binary:
//! every client-provokable row of the error table, every key-value route, exact JSON
//! round-trips and persistence across a restart. A full disk (507) is in `disk_full.rs`.
//!
//! 401/403 (3001, 3002) are in `auth.rs`; 503 `unavailable` (5002) is in `limits.rs`;
//! 5000 is a bug and cannot be provoked.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{Resp, Server};
use serde_json::{Value, json};

/// API.md's error table: `(error_code, status, type slug)`.
const ERROR_TABLE: &[(u64, u16, &str)] = &[
    (1000, 400, "malformed-request"),
    (1001, 422, "invalid-entity"),
    (1002, 422, "invalid-key"),
    (1003, 422, "invalid-ttl"),
    (1004, 422, "invalid-value"),
    (1005, 422, "invalid-metadata"),
    (1006, 422, "invalid-content-type"),
    (1007, 422, "invalid-body"),
    (1008, 422, "invalid-query"),
    (1009, 413, "payload-too-large"),
    (1010, 415, "unsupported-media-type"),
    (1011, 422, "invalid-bulk"),
    (1012, 422, "invalid-header"),
    (2001, 404, "not-found"),
    (2002, 404, "route-not-found"),
    (2003, 405, "method-not-allowed"),
    (2004, 412, "precondition-failed"),
    (5000, 500, "internal"),
    (5001, 507, "storage-full"),
    (5002, 503, "unavailable"),
];

const JSON: (&str, &str) = ("content-type", "application/json");

/// Checks every rule API.md sets for an error response and returns its
/// `(error_code, instance)` pairs in order.
fn problems(server: &Server, resp: &Resp, status: u16) -> Vec<(u64, String)> {
    assert_eq!(resp.status, status, "{}", resp.text());
    let codes = resp.error_codes();
    let text = resp.text();
    let data_dir = server.data_dir.to_string_lossy();
    for leak in [data_dir.as_ref(), "/tmp/", ".rs:", "/home/", "panicked"] {
        assert!(!text.contains(leak), "{leak:?} in {text}");
    }
    let doc = resp.json();
    let errors = doc["errors"].as_array().cloned().unwrap_or_default();
    errors
        .iter()
        .zip(codes)
        .map(|(e, code)| {
            let row = ERROR_TABLE.iter().find(|(c, _, _)| *c == code);
            let (_, row_status, slug) = row.unwrap_or_else(|| panic!("unknown code in {e}"));
            assert_eq!(*row_status, status, "{e}");
            assert_eq!(e["type"], json!(format!("/problems/{slug}")), "{e}");
            for field in ["title", "detail"] {
                let n = e[field].as_str().map_or(0, |s| s.chars().count());
                assert!(n >= 5, "{field} too short in {e}");
            }
            let instance = e["instance"].as_str().unwrap_or_default().to_owned();
            (code, instance)
        })
        .collect()
}

/// Sends a request and asserts it answers `status` with exactly the problems `want`,
/// each `(error_code, pointer)`: the pointer is appended to the path without its query.
fn expect(
    server: &Server,
    (method, path, headers, body): (&str, &str, &[(&str, &str)], &[u8]),
    status: u16,
    want: &[(u64, &str)],
) -> Resp {
    let resp = server.request(method, path, headers, body.to_vec());
    let bare = path.split('?').next().unwrap_or(path);
    let want: Vec<(u64, String)> = want
        .iter()
        .map(|(code, pointer)| (*code, format!("{bare}{pointer}")))
        .collect();
    let got = problems(server, &resp, status);
    assert_eq!(
        got,
        want,
        "{method} {path} {}",
        String::from_utf8_lossy(body)
    );
    resp
}

/// The `data` of a success envelope with this status.
fn data(resp: &Resp, status: u16) -> Value {
    assert_eq!(resp.status, status, "{}", resp.text());
    let doc = resp.json();
    assert_eq!(doc["ok"], json!(true), "{}", resp.text());
    doc["data"].clone()
}

fn version(data: &Value) -> u64 {
    data["version"].as_u64().expect("a numeric version")
}

fn etag(v: u64) -> String {
    format!("\"{v}\"")
}

fn put_raw(server: &Server, path: &str, content_type: &str, body: &[u8]) -> Resp {
    server.request(
        "PUT",
        path,
        &[("content-type", content_type)],
        body.to_vec(),
    )
}

/// An RFC 3339 UTC timestamp with whole seconds: `2026-11-26T09:14:43Z`.
fn assert_timestamp(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    let b = s.as_bytes();
    let shape_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(shape_ok, "not RFC 3339 UTC whole seconds: {s}");
    unix_seconds(s)
}

/// Seconds since the epoch of a timestamp already checked by `assert_timestamp`.
fn unix_seconds(s: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| s[r].parse::<u64>().expect("digits");
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (Howard Hinnant's algorithm), valid for years ≥ 1970.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
}

/// Sends `request` on a fresh connection and returns everything the server wrote
/// until it closed: the way to see that a HEAD response really has no body.
fn raw_exchange(server: &Server, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut all = Vec::new();
    stream.read_to_end(&mut all).expect("read until close");
    all
}

// ---------------------------------------------------------------- the error table

#[test]
fn malformed_bodies_are_400_malformed_request() {
    let s = Server::start(&[]);
    let p = "/v1/kv/user/k";
    for body in [
        &b"{\"value\": "[..],
        b"{\"value\": 1} x",
        b"\xEF\xBB\xBF{\"value\": 1}",
    ] {
        expect(&s, ("PUT", p, &[JSON], body), 400, &[(1000, "")]);
    }
    expect(&s, ("PUT", p, &[], b"nope"), 400, &[(1000, "")]);
    let deep = format!("{{\"value\": {}{}}}", "[".repeat(300), "]".repeat(300));
    expect(&s, ("PUT", p, &[JSON], deep.as_bytes()), 400, &[(1000, "")]);
    let raw_json = [("content-type", "application/problem+json")];
    expect(&s, ("PUT", p, &raw_json, b"{x"), 400, &[(1000, "")]);
    let bulk = b"{\"operations\": [";
    expect(&s, ("POST", "/v1/bulk", &[JSON], bulk), 400, &[(1000, "")]);
    assert_eq!(s.get(p).status, 404, "nothing was written");
}

#[test]
fn names_are_checked_after_percent_decoding() {
    let s = Server::start(&[]);
    let body = br#"{"value": 1}"#;
    for entity in ["users", "User", "%75sers", "nope"] {
        let p = format!("/v1/kv/{entity}/k");
        expect(&s, ("PUT", &p, &[JSON], body), 422, &[(1001, "")]);
        expect(&s, ("GET", &p, &[], b""), 422, &[(1001, "")]);
    }
    let long = "k".repeat(257);
    for key in ["a.b", "a%20b", "%C3%A9", "%FF", long.as_str()] {
        let p = format!("/v1/kv/user/{key}");
        expect(&s, ("PUT", &p, &[JSON], body), 422, &[(1002, "")]);
        expect(&s, ("DELETE", &p, &[], b""), 422, &[(1002, "")]);
    }
    let longest = "k".repeat(256);
    let created = s.request(
        "PUT",
        &format!("/v1/kv/%75ser/{longest}"),
        &[JSON],
        body.to_vec(),
    );
    assert_eq!(data(&created, 201)["entity"], json!("user"));
    assert_eq!(s.get(&format!("/v1/kv/user/{longest}")).status, 200);
}

#[test]
fn envelope_fields_each_have_their_own_problem() {
    let s = Server::start(&["--max-metadata-bytes", "64"]);
    let p = "/v1/kv/user/k";
    let long_ct = format!("text/{}", "x".repeat(251));
    let long_ct_body = json!({"value": "v", "content_type": long_ct}).to_string();
    let cases: &[(&[u8], u64, &str)] = &[
        (br#"{"value": 1, "ttl": 59}"#, 1003, "#/ttl"),
        (br#"{"value": 1, "ttl": 31536001}"#, 1003, "#/ttl"),
        (br#"{"value": 1, "ttl": "60"}"#, 1003, "#/ttl"),
        (br#"{"value": 1, "ttl": 60.0}"#, 1003, "#/ttl"),
        (br#"{"ttl": 60}"#, 1004, "#/value"),
        (br#"{"value": null}"#, 1004, "#/value"),
        (
            br#"{"value": 1, "content_type": "text/plain"}"#,
            1004,
            "#/value",
        ),
        (
            br#"{"value": "**", "content_type": "image/png"}"#,
            1004,
            "#/value",
        ),
        (
            br#"{"value": "AAF", "content_type": "image/png"}"#,
            1004,
            "#/value",
        ),
        (br#"{"value": 1, "metadata": "x"}"#, 1005, "#/metadata"),
        (br#"{"value": 1, "metadata": [1]}"#, 1005, "#/metadata"),
        (
            br#"{"value": 1, "content_type": "text"}"#,
            1006,
            "#/content_type",
        ),
        (long_ct_body.as_bytes(), 1006, "#/content_type"),
        (b"[1]", 1007, ""),
        (b"\"value\"", 1007, ""),
        (br#"{"value": 1, "tll": 60}"#, 1007, "#/tll"),
    ];
    for (body, code, pointer) in cases {
        expect(&s, ("PUT", p, &[JSON], body), 422, &[(*code, pointer)]);
    }
    let big_meta = json!({"value": 1, "metadata": {"m": "x".repeat(60)}}).to_string();
    let fits = json!({"value": 1, "metadata": {"m": "x".repeat(56)}}).to_string();
    expect(
        &s,
        ("PUT", p, &[JSON], big_meta.as_bytes()),
        422,
        &[(1005, "#/metadata")],
    );
    let header_meta = [JSON, ("x-kv-metadata", "{}")];
    let resp = s.request("PUT", p, &header_meta, br#"{"value": 1}"#.to_vec());
    assert_eq!(
        problems(&s, &resp, 422)[0].0,
        1005,
        "metadata belongs in the body"
    );
    // A pointer is written as a URI fragment (RFC 6901 §6): `instance` stays a URI.
    let odd = br#"{"value": 1, "a b/\u00e9~%": 1}"#;
    let want = [(1007, "#/a%20b~1%C3%A9~0%25")];
    expect(&s, ("PUT", p, &[JSON], odd), 422, &want);
    assert_eq!(s.get(p).status, 404, "nothing was written");
    // {"m":"xx…"} of exactly 64 bytes fits: the limit counts the compact serialization,
    // not the spelling sent (spaces, `\u0078` escapes), in the body and in the header.
    data(&s.request("PUT", p, &[JSON], fits.into_bytes()), 201);
    let spelled = format!(
        "{{\"value\": 1, \"metadata\": {{ \"m\" : \"{}\" }} }}",
        "\\u0078".repeat(56)
    );
    let resp = s.request("PUT", p, &[JSON], spelled.into_bytes());
    assert_eq!(data(&resp, 200)["created"], json!(false));
    let header = format!("{{ \"m\" : \"{}\" }}", "\\u0078".repeat(56));
    let raw = [
        ("content-type", "image/png"),
        ("x-kv-metadata", header.as_str()),
    ];
    data(&s.request("PUT", p, &raw, b"x".to_vec()), 200);
    let metadata = data(&s.get(p), 200)["metadata"].clone();
    assert_eq!(metadata, json!({"m": "x".repeat(56)}));
}

#[test]
fn raw_puts_check_ttl_query_metadata_header_and_content() {
    let s = Server::start(&[]);
    let text = [("content-type", "text/plain")];
    for (query, code) in [
        ("ttl=abc", 1008),
        ("ttl=1.5", 1008),
        ("ttl=1&ttl=2", 1008),
        ("tll=60", 1008),
        ("ttl=30", 1003),
        ("ttl=-5", 1003),
        ("ttl=31536001", 1003),
    ] {
        let p = format!("/v1/kv/user/r?{query}");
        let resp = s.request("PUT", &p, &text, b"x".to_vec());
        assert_eq!(
            problems(&s, &resp, 422)[0],
            (code, "/v1/kv/user/r".into()),
            "{query}"
        );
    }
    for bad in ["[1]", "{", "{\"a\":1,\"a\":2}", "\"x\""] {
        let headers = [("content-type", "image/png"), ("x-kv-metadata", bad)];
        let resp = s.request("PUT", "/v1/kv/user/r", &headers, b"x".to_vec());
        assert_eq!(problems(&s, &resp, 422)[0].0, 1005, "{bad}");
    }
    let not_utf8 = s.request("PUT", "/v1/kv/user/r", &text, b"\xff\xfe".to_vec());
    assert_eq!(problems(&s, &not_utf8, 422)[0].0, 1004);
    let dup = [("content-type", "application/vnd.a+json")];
    let resp = s.request("PUT", "/v1/kv/user/r", &dup, br#"{"a":1,"a":2}"#.to_vec());
    assert_eq!(problems(&s, &resp, 422)[0].0, 1004);
    let bad_ct = [("content-type", "not a media type")];
    let resp = s.request("PUT", "/v1/kv/user/r", &bad_ct, b"x".to_vec());
    assert_eq!(problems(&s, &resp, 422)[0].0, 1006);
    let envelope_ttl = s.request(
        "PUT",
        "/v1/kv/user/r?ttl=60",
        &[JSON],
        br#"{"value":1}"#.to_vec(),
    );
    assert_eq!(
        problems(&s, &envelope_ttl, 422),
        vec![(1008, "/v1/kv/user/r".into())]
    );
    assert_eq!(s.get("/v1/kv/user/r").status, 404, "nothing was written");
}

#[test]
fn list_queries_are_checked() {
    let s = Server::start(&[]);
    for query in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=1&limit=2",
        "prefix=a.b",
        "cursor=%21%21",
        "limt=5",
    ] {
        let p = format!("/v1/kv/user?{query}");
        expect(&s, ("GET", &p, &[], b""), 422, &[(1008, "")]);
    }
    expect(&s, ("GET", "/v1/kv/users", &[], b""), 422, &[(1001, "")]);
}

#[test]
fn oversized_bodies_and_values_are_413() {
    let s = Server::start(&["--max-value-bytes", "16"]);
    let raw = put_raw(&s, "/v1/kv/user/k", "application/octet-stream", &[7; 17]);
    assert_eq!(
        problems(&s, &raw, 413),
        vec![(1009, "/v1/kv/user/k".into())]
    );
    let text = json!({"value": "x".repeat(17)}).to_string();
    expect(
        &s,
        ("PUT", "/v1/kv/user/k", &[JSON], text.as_bytes()),
        413,
        &[(1009, "#/value")],
    );
    // 24 base64 characters decode to 18 bytes: the body is small, the value is not.
    let b64 = json!({"value": "A".repeat(24), "content_type": "image/png"}).to_string();
    expect(
        &s,
        ("PUT", "/v1/kv/user/k", &[JSON], b64.as_bytes()),
        413,
        &[(1009, "#/value")],
    );
    // ceil(16 / 3) × 4 + 64 KiB is the envelope's body limit.
    let huge = format!("{{\"value\": \"{}\"}}", "x".repeat(70 * 1024));
    let resp = s.request("PUT", "/v1/kv/user/k", &[JSON], huge.into_bytes());
    assert_eq!(
        problems(&s, &resp, 413),
        vec![(1009, "/v1/kv/user/k".into())]
    );
    assert_eq!(s.get("/v1/kv/user/k").status, 404);
    // A chunked upload has no length to check up front; it is cut off as it streams.
    let chunked = raw_exchange(
        &s,
        "PUT /v1/kv/user/k HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n11\r\n0123456789abcdefg\r\n0\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&chunked);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"error_code\":1009"), "{text}");
    assert_eq!(s.get("/v1/kv/user/k").status, 404);
    let fits = put_raw(&s, "/v1/kv/user/k", "application/octet-stream", &[7; 16]);
    assert_eq!(data(&fits, 201)["size_bytes"], json!(16));
}

#[test]
fn forms_and_multipart_are_415_pointing_to_json() {
    let s = Server::start(&[]);
    for ct in [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        for (method, path) in [("PUT", "/v1/kv/user/f"), ("POST", "/v1/bulk")] {
            let resp = expect(
                &s,
                (method, path, &[("content-type", ct)], b"value=1"),
                415,
                &[(1010, "")],
            );
            let detail = resp.json()["errors"][0]["detail"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(detail.contains("application/json"), "{detail}");
        }
    }
}

/// Reads one response (head and a `Content-Length` body) from a keep-alive connection;
/// returns the head, lowercased, and the body.
fn read_one_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read the head");
        assert_eq!(n, 1, "the connection closed mid-head: {bytes:?}");
        bytes.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().expect("a length"));
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).expect("read the body");
    (head, body)
}

/// A PUT whose body was read to its end (chunked here) leaves the connection open for
/// the next request; one refused before its body was read (415) is answered with
/// `Connection: close` and the connection is closed, since the unread body is still
/// on the wire.
#[test]
fn a_put_keeps_its_connection_once_its_body_is_read_and_closes_it_otherwise() {
    let s = Server::start(&[]);
    let mut stream = TcpStream::connect(s.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
        .write_all(
            b"PUT /v1/kv/user/kept HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .expect("send");
    let (head, _) = read_one_response(&mut stream);
    assert!(head.starts_with("http/1.1 201"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");

    stream
        .write_all(
            b"PUT /v1/kv/user/form HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\nvalue=1",
        )
        .expect("send on the same connection");
    let (head, body) = read_one_response(&mut stream);
    assert!(head.starts_with("http/1.1 415"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("1010"));
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("read until close");
    assert!(rest.is_empty(), "{rest:?}");

    let kept = s.get("/v1/kv/user/kept/value");
    assert_eq!((kept.status, kept.text()), (200, "hello".to_owned()));
    assert_eq!(s.get("/v1/kv/user/form").status, 404);
}

#[test]
fn bulk_problems_point_into_the_operation_list() {
    let s = Server::start(&["--max-value-bytes", "100"]);
    let body = json!({"operations": [
        {"op": "put", "entity": "user", "key": "fresh", "value": 1},
        {"op": "put", "entity": "user", "key": "bad.key", "value": 1, "ttl": 5},
        {"op": "upsert", "entity": "user", "key": "k"},
        {"op": "delete", "entity": "user", "key": "k", "ttl": 60},
        {"op": "put", "entity": "users", "key": "k", "value": null},
        7
    ]})
    .to_string();
    let want = [
        (1002, "#/operations/1/key"),
        (1003, "#/operations/1/ttl"),
        (1011, "#/operations/2/op"),
        (1007, "#/operations/3/ttl"),
        (1001, "#/operations/4/entity"),
        (1004, "#/operations/4/value"),
        (1011, "#/operations/5"),
    ];
    expect(
        &s,
        ("POST", "/v1/bulk", &[JSON], body.as_bytes()),
        422,
        &want,
    );
    assert_eq!(
        s.get("/v1/kv/user/fresh").status,
        404,
        "nothing was written"
    );
    let empty = br#"{"operations": []}"#;
    expect(
        &s,
        ("POST", "/v1/bulk", &[JSON], empty),
        422,
        &[(1011, "#/operations")],
    );
    let op = json!({"op": "delete", "entity": "user", "key": "k"});
    let too_many = json!({"operations": vec![op; 10_001]}).to_string();
    expect(
        &s,
        ("POST", "/v1/bulk", &[JSON], too_many.as_bytes()),
        422,
        &[(1011, "#/operations")],
    );
    let extra = br#"{"operations": [], "atomic": true}"#;
    let resp = s.request("POST", "/v1/bulk", &[JSON], extra.to_vec());
    assert!(problems(&s, &resp, 422).contains(&(1007, "/v1/bulk#/atomic".into())));
    // A value over the limit in any operation outranks the 422s of the others.
    let big = json!({"operations": [
        {"op": "put", "entity": "users", "key": "a", "value": 1},
        {"op": "put", "entity": "user", "key": "b", "value": "x".repeat(101)}
    ]})
    .to_string();
    let resp = s.request("POST", "/v1/bulk", &[JSON], big.into_bytes());
    assert_eq!(
        problems(&s, &resp, 413),
        vec![(1009, "/v1/bulk#/operations/1/value".into())]
    );
    // A body of the common shape (the one-pass decoder takes it) with an unknown
    // query parameter: the query's problem alone, and nothing written.
    let plain = br#"{"operations": [{"op": "put", "entity": "user", "key": "q", "value": "v"}]}"#;
    expect(
        &s,
        ("POST", "/v1/bulk?x=1", &[JSON], plain),
        422,
        &[(1008, "")],
    );
    assert_eq!(s.get("/v1/kv/user/q").status, 404, "nothing was written");
    // Exactly 10000 operations is allowed.
    let op = json!({"op": "delete", "entity": "user", "key": "k"});
    let most = json!({"operations": vec![op; 10_000]}).to_string();
    let resp = s.request("POST", "/v1/bulk", &[JSON], most.into_bytes());
    assert_eq!(
        data(&resp, 200)["results"].as_array().map(Vec::len),
        Some(10_000)
    );
}

#[test]
fn keys_state_routes_and_methods_have_their_problems() {
    let s = Server::start(&[]);
    expect(
        &s,
        ("GET", "/v1/kv/user/absent", &[], b""),
        404,
        &[(2001, "")],
    );
    expect(
        &s,
        ("GET", "/v1/kv/user/absent/value", &[], b""),
        404,
        &[(2001, "")],
    );
    expect(
        &s,
        ("DELETE", "/v1/kv/user/absent", &[], b""),
        404,
        &[(2001, "")],
    );
    expect(&s, ("GET", "/v1/nope?x=1", &[], b""), 404, &[(2002, "")]);
    expect(
        &s,
        ("GET", "/v1/kv/user/a/b/c", &[], b""),
        404,
        &[(2002, "")],
    );
    let post = expect(
        &s,
        ("POST", "/v1/kv/user/a", &[JSON], b"{}"),
        405,
        &[(2003, "")],
    );
    let allow = post.header("allow").unwrap_or_default().to_owned();
    for method in ["GET", "HEAD", "PUT", "DELETE"] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
    let get_bulk = expect(&s, ("GET", "/v1/bulk", &[], b""), 405, &[(2003, "")]);
    assert_eq!(get_bulk.header("allow"), Some("POST"));
    let v = version(&data(
        &s.put_json("/v1/kv/user/a", &json!({"value": 1}), &[]),
        201,
    ));
    let body = br#"{"value": 2}"#;
    expect(
        &s,
        (
            "PUT",
            "/v1/kv/user/a",
            &[JSON, ("if-none-match", "*")],
            body,
        ),
        412,
        &[(2004, "")],
    );
    let stale = etag(v + 1000);
    expect(
        &s,
        ("PUT", "/v1/kv/user/a", &[JSON, ("if-match", &stale)], body),
        412,
        &[(2004, "")],
    );
    for bad in ["42", "\"unterminated", "W/42", "*, \"1\"", "\"a\" \"b\""] {
        let headers = [JSON, ("if-match", bad)];
        expect(
            &s,
            ("PUT", "/v1/kv/user/a", &headers, body),
            422,
            &[(1012, "")],
        );
        expect(
            &s,
            ("GET", "/v1/kv/user/a", &[("if-none-match", bad)], b""),
            422,
            &[(1012, "")],
        );
    }
}

#[test]
fn stages_decide_which_problem_answers() {
    let s = Server::start(&["--max-value-bytes", "16"]);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    // Route and method before media type.
    expect(
        &s,
        ("POST", "/v1/kv/nope/a.b", &form, b"v=1"),
        405,
        &[(2003, "")],
    );
    // Media type before size and validation.
    expect(
        &s,
        ("PUT", "/v1/kv/nope/a.b", &form, &[b'x'; 100]),
        415,
        &[(1010, "")],
    );
    // Size before syntax.
    let raw_too_big = [("content-type", "application/json; x=1")];
    let big_raw = [b'{'; 70 * 1024];
    expect(
        &s,
        ("PUT", "/v1/kv/nope/k", &raw_too_big, &big_raw),
        413,
        &[(1009, "")],
    );
    // Syntax before validation: a bad entity in the path does not matter yet.
    expect(
        &s,
        ("PUT", "/v1/kv/nope/a.b", &[JSON], b"{\"ttl\": 1,"),
        400,
        &[(1000, "")],
    );
    // A decoded value over the limit outranks every 422.
    let over = json!({"value": "x".repeat(17), "ttl": 1, "tll": 1, "metadata": 3}).to_string();
    expect(
        &s,
        ("PUT", "/v1/kv/nope/a.b", &[JSON], over.as_bytes()),
        413,
        &[(1009, "#/value")],
    );
    // Every validation problem at once.
    let many = json!({"value": 1, "ttl": 30, "metadata": "x", "tll": 1}).to_string();
    let resp = s.request("PUT", "/v1/kv/users/a.b", &[JSON], many.into_bytes());
    let mut got = problems(&s, &resp, 422);
    got.sort();
    let mut want: Vec<(u64, String)> = [
        (1001, ""),
        (1002, ""),
        (1003, "#/ttl"),
        (1005, "#/metadata"),
        (1007, "#/tll"),
    ]
    .iter()
    .map(|(c, p)| (*c, format!("/v1/kv/users/a.b{p}")))
    .collect();
    want.sort();
    assert_eq!(got, want);
    // Validation before the key's state: no 404 or 412 for a request that is invalid.
    expect(&s, ("GET", "/v1/kv/user/a.b", &[], b""), 422, &[(1002, "")]);
    let cond = [JSON, ("if-match", "\"1\"")];
    expect(
        &s,
        ("PUT", "/v1/kv/user/k", &cond, br#"{"value": null}"#),
        422,
        &[(1004, "#/value")],
    );
}

// ---------------------------------------------------------------- the kv routes

#[test]
fn envelope_put_creates_then_updates_and_get_reports_every_field() {
    let s = Server::start(&[]);
    let p = "/v1/kv/user/alice";
    let before = now_s();
    let body = json!({"value": {"a": 1}, "ttl": 3600, "metadata": {"schema": 2}});
    let created = s.put_json(p, &body, &[]);
    let d = data(&created, 201);
    let v1 = version(&d);
    assert_eq!(created.header("etag"), Some(etag(v1).as_str()));
    assert_eq!(created.header("location"), Some(p));
    assert_eq!(
        d,
        json!({"entity": "user", "key": "alice", "created": true, "expires_at": d["expires_at"],
            "content_type": "application/json", "size_bytes": 7, "version": v1})
    );
    let expires = assert_timestamp(&d["expires_at"]);
    assert!((before + 3600..=now_s() + 3600).contains(&expires), "{d}");

    let got = s.get(p);
    let g = data(&got, 200);
    assert_eq!(got.header("etag"), Some(etag(v1).as_str()));
    assert_eq!(
        g,
        json!({"entity": "user", "key": "alice", "value": {"a": 1}, "encoding": "json",
            "content_type": "application/json", "metadata": {"schema": 2},
            "created_at": g["created_at"], "updated_at": g["created_at"],
            "expires_at": d["expires_at"], "size_bytes": 7, "version": v1})
    );
    let created_at = assert_timestamp(&g["created_at"]);
    assert!((before..=now_s()).contains(&created_at));

    // No Content-Type at all is an envelope too; an update replaces everything.
    let update = s.request("PUT", p, &[], br#"{"value": [1, 2]}"#.to_vec());
    let u = data(&update, 200);
    assert_eq!(u["created"], json!(false));
    assert_eq!(
        u["expires_at"],
        Value::Null,
        "an update without ttl removes the expiry"
    );
    assert!(version(&u) > v1);
    assert_eq!(update.header("location"), None);
    assert_eq!(update.header("etag"), Some(etag(version(&u)).as_str()));
    let g2 = data(&s.get(p), 200);
    assert_eq!(g2["value"], json!([1, 2]));
    assert_eq!(g2["metadata"], Value::Null);
    assert_eq!(
        g2["created_at"], g["created_at"],
        "an update keeps created_at"
    );
    assert_eq!(g2["size_bytes"], json!(5));
    assert_eq!(g2["version"], u["version"]);
}

#[test]
fn text_binary_and_raw_values_come_back_byte_for_byte() {
    let s = Server::start(&[]);
    let t = data(
        &s.put_json("/v1/kv/user/t", &json!({"value": "héllo\n"}), &[]),
        201,
    );
    assert_eq!(t["content_type"], json!("text/plain; charset=utf-8"));
    assert_eq!(t["size_bytes"], json!(7));
    let g = data(&s.get("/v1/kv/user/t"), 200);
    assert_eq!(
        (&g["value"], &g["encoding"]),
        (&json!("héllo\n"), &json!("text"))
    );
    let raw = s.get("/v1/kv/user/t/value");
    assert_eq!(raw.body, "héllo\n".as_bytes());
    assert_eq!(
        raw.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    let bytes: Vec<u8> = (0..=255).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let envelope = json!({"value": b64, "content_type": "application/octet-stream"});
    let b = data(&s.put_json("/v1/kv/event/bin", &envelope, &[]), 201);
    assert_eq!(b["size_bytes"], json!(256));
    let g = data(&s.get("/v1/kv/event/bin"), 200);
    assert_eq!(
        (&g["value"], &g["encoding"]),
        (&json!(b64), &json!("base64"))
    );
    assert_eq!(s.get("/v1/kv/event/bin/value").body, bytes);

    let headers = [
        ("content-type", "image/png; q=1"),
        ("x-kv-metadata", r#"{"w": 64, "h": [1]}"#),
    ];
    let raw_put = s.request("PUT", "/v1/kv/event/logo?ttl=600", &headers, bytes.clone());
    let r = data(&raw_put, 201);
    assert_eq!(raw_put.header("location"), Some("/v1/kv/event/logo"));
    assert_eq!(raw_put.header("etag"), Some(etag(version(&r)).as_str()));
    assert_eq!(r["content_type"], json!("image/png; q=1"));
    assert_eq!(r["size_bytes"], json!(256));
    let value = s.get("/v1/kv/event/logo/value");
    assert_eq!(value.status, 200);
    assert_eq!(value.body, bytes);
    assert_eq!(value.header("content-type"), Some("image/png; q=1"));
    assert_eq!(value.header("etag"), Some(etag(version(&r)).as_str()));
    assert_eq!(value.header("x-kv-expires-at"), r["expires_at"].as_str());
    assert_timestamp(&r["expires_at"]);
    let g = data(&s.get("/v1/kv/event/logo"), 200);
    assert_eq!(g["metadata"], json!({"w": 64, "h": [1]}));
    assert_eq!(g["encoding"], json!("base64"));
    assert_eq!(s.get("/v1/kv/user/t/value").header("x-kv-expires-at"), None);

    let raw_json = [("content-type", "application/vnd.x+json")];
    let sent = b" {\"a\" : 1} ";
    data(
        &s.request("PUT", "/v1/kv/user/j", &raw_json, sent.to_vec()),
        201,
    );
    assert_eq!(
        s.get("/v1/kv/user/j/value").body,
        sent,
        "raw JSON is stored as sent"
    );
    assert_eq!(
        data(&s.get("/v1/kv/user/j"), 200)["encoding"],
        json!("json")
    );
    let update = s.request("PUT", "/v1/kv/user/j", &raw_json, b"2".to_vec());
    assert_eq!(data(&update, 200)["created"], json!(false));
}

#[test]
fn head_answers_get_headers_without_a_body() {
    let s = Server::start(&[]);
    let envelope = json!({"value": "AAEC", "content_type": "application/octet-stream", "ttl": 120});
    let d = data(&s.put_json("/v1/kv/user/h", &envelope, &[]), 201);
    let value = s.get("/v1/kv/user/h/value");
    for path in ["/v1/kv/user/h", "/v1/kv/user/h/value"] {
        let head = s.request("HEAD", path, &[], Vec::new());
        assert_eq!(head.status, 200);
        for name in ["content-type", "content-length", "etag", "x-kv-expires-at"] {
            assert_eq!(head.header(name), value.header(name), "{path} {name}");
        }
        assert_eq!(head.header("content-length"), Some("3"));
        assert_eq!(head.header("x-kv-expires-at"), d["expires_at"].as_str());
        let wire = raw_exchange(
            &s,
            &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        let text = String::from_utf8_lossy(&wire);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "HEAD sent a body: {text:?}");
    }
    let get_404 = s.get("/v1/kv/user/none");
    let head_404 = s.request("HEAD", "/v1/kv/user/none", &[], Vec::new());
    assert_eq!(head_404.status, 404);
    assert_eq!(
        head_404.header("content-type"),
        get_404.header("content-type")
    );
    let wire = raw_exchange(
        &s,
        "HEAD /v1/kv/user/none/value HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&wire);
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "HEAD sent a body: {text:?}");
    let list = s.request("HEAD", "/v1/kv/user", &[], Vec::new());
    assert_eq!(list.status, 200);
}

#[test]
fn head_of_a_304_has_the_get_headers_and_no_content_length() {
    let s = Server::start(&[]);
    let d = data(
        &s.put_json("/v1/kv/user/n", &json!({"value": {"a": 1}}), &[]),
        201,
    );
    let tag = etag(version(&d));
    for path in ["/v1/kv/user/n", "/v1/kv/user/n/value"] {
        for method in ["GET", "HEAD"] {
            let wire = raw_exchange(
                &s,
                &format!(
                    "{method} {path} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {tag}\r\nConnection: close\r\n\r\n"
                ),
            );
            let text = String::from_utf8_lossy(&wire).to_ascii_lowercase();
            assert!(text.starts_with("http/1.1 304"), "{method} {path}: {text}");
            assert!(
                text.contains(&format!("etag: {tag}\r\n")),
                "{method} {path}: {text}"
            );
            assert!(
                !text.contains("content-length:"),
                "{method} {path}: a 304 claims a length: {text}"
            );
            assert!(
                text.ends_with("\r\n\r\n"),
                "{method} {path}: a body: {text:?}"
            );
        }
    }
}

#[test]
fn head_works_on_every_get_route() {
    let s = Server::start(&[]);
    for path in [
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/v1/admin/stats",
        "/v1/kv/user",
    ] {
        let get = s.get(path);
        let head = s.request("HEAD", path, &[], Vec::new());
        assert_eq!(head.status, get.status, "{path}");
        assert!(head.body.is_empty(), "{path}");
        for name in ["content-type", "content-length", "etag"] {
            assert_eq!(head.header(name), get.header(name), "{path} {name}");
        }
    }
    let head = s.request("HEAD", "/metrics", &[], Vec::new());
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-type"),
        s.get("/metrics").header("content-type")
    );
}

#[test]
fn a_second_content_type_header_is_refused() {
    let s = Server::start(&[]);
    let put = raw_exchange(
        &s,
        "PUT /v1/kv/user/two HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
         Content-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"value\":1}",
    );
    let text = String::from_utf8_lossy(&put);
    assert!(text.starts_with("HTTP/1.1 422"), "{text}");
    assert!(text.contains("\"error_code\":1006"), "{text}");
    assert_eq!(s.get("/v1/kv/user/two").status, 404);
    let bulk = raw_exchange(
        &s,
        "POST /v1/bulk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    let text = String::from_utf8_lossy(&bulk);
    assert!(text.starts_with("HTTP/1.1 415"), "{text}");
    assert!(text.contains("\"error_code\":1010"), "{text}");
}

#[test]
fn delete_removes_a_key_once() {
    let s = Server::start(&[]);
    data(&s.put_json("/v1/kv/user/d", &json!({"value": 1}), &[]), 201);
    let del = s.request("DELETE", "/v1/kv/user/d", &[], Vec::new());
    assert_eq!(
        data(&del, 200),
        json!({"entity": "user", "key": "d", "deleted": true})
    );
    expect(&s, ("GET", "/v1/kv/user/d", &[], b""), 404, &[(2001, "")]);
    expect(
        &s,
        ("DELETE", "/v1/kv/user/d", &[], b""),
        404,
        &[(2001, "")],
    );
    let again = s.put_json("/v1/kv/user/d", &json!({"value": 2}), &[]);
    assert_eq!(data(&again, 201)["created"], json!(true));
}

#[test]
fn list_pages_through_keys_in_byte_order() {
    let s = Server::start(&[]);
    for key in ["b", "a", "ab", "aa", "B", "a-", "a_", "c"] {
        data(
            &s.put_json(&format!("/v1/kv/user/{key}"), &json!({"value": key}), &[]),
            201,
        );
    }
    data(
        &s.put_json("/v1/kv/event/a0", &json!({"value": 1}), &[]),
        201,
    );
    let meta = json!({"value": {"x": 1}, "metadata": {"m": true}, "ttl": 600});
    let m = data(&s.put_json("/v1/kv/user/am", &meta, &[]), 201);

    let all = data(&s.get("/v1/kv/user"), 200);
    let keys: Vec<&str> = all["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["key"].as_str())
        .collect();
    assert_eq!(keys, ["B", "a", "a-", "a_", "aa", "ab", "am", "b", "c"]);
    assert_eq!(
        (&all["cursor"], &all["list_complete"]),
        (&Value::Null, &json!(true))
    );
    assert_eq!(all["entity"], json!("user"));
    let am = all["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|i| i["key"] == "am"))
        .cloned();
    assert_eq!(
        am,
        Some(
            json!({"key": "am", "content_type": "application/json", "size_bytes": 7,
            "expires_at": m["expires_at"], "metadata": {"m": true}, "version": m["version"]})
        )
    );

    let mut seen = Vec::new();
    let mut query = "/v1/kv/user?prefix=a&limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = data(&s.get(&query), 200);
        pages += 1;
        let items = page["keys"].as_array().expect("keys");
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .filter_map(|k| k["key"].as_str().map(str::to_owned)),
        );
        if page["list_complete"] == json!(true) {
            assert_eq!(page["cursor"], Value::Null);
            break;
        }
        let cursor = page["cursor"]
            .as_str()
            .expect("a cursor while not complete")
            .to_owned();
        assert!(
            cursor
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.~".contains(&c)),
            "{cursor}"
        );
        assert!(pages < 10, "paging never ends");
        query = format!("/v1/kv/user?prefix=a&limit=2&cursor={cursor}");
    }
    assert_eq!(seen, ["a", "a-", "a_", "aa", "ab", "am"]);
    let limited = data(&s.get("/v1/kv/user?limit=1&prefix="), 200);
    assert_eq!(limited["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(limited["list_complete"], json!(false));
    let none = data(&s.get("/v1/kv/event?prefix=zz"), 200);
    assert_eq!(
        none,
        json!({"entity": "event", "keys": [], "cursor": null, "list_complete": true})
    );
}

#[test]
fn paging_returns_each_steady_key_once_while_others_come_and_go() {
    /// Keys live for the whole walk.
    const STEADY_KEYS: usize = 40;
    let s = Server::start(&[]);
    let steady: Vec<String> = (0..STEADY_KEYS).map(|i| format!("k{i:03}")).collect();
    for key in &steady {
        data(
            &s.put_json(&format!("/v1/kv/user/{key}"), &json!({"value": 1}), &[]),
            201,
        );
    }
    let stop = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    let seen = std::thread::scope(|scope| {
        // Churn between and around the steady keys on another connection.
        let churn = scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let round = rounds.load(Ordering::Relaxed);
                let key = format!("/v1/kv/user/k{:03}x", round % (STEADY_KEYS + 1));
                data(&s.put_json(&key, &json!({"value": round}), &[]), 201);
                data(&s.request("DELETE", &key, &[], Vec::new()), 200);
                rounds.store(round + 1, Ordering::Relaxed);
            }
        });
        // The walk starts once the churn has.
        let deadline = Instant::now() + common::STARTUP_TIMEOUT;
        while rounds.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the churn never started");
            std::thread::yield_now();
        }
        let mut seen = Vec::new();
        let mut cursor = String::new();
        for _ in 0..4 * STEADY_KEYS {
            let page = data(&s.get(&format!("/v1/kv/user?limit=3&cursor={cursor}")), 200);
            let keys = page["keys"].as_array().cloned().unwrap_or_default();
            seen.extend(
                keys.iter()
                    .filter_map(|k| k["key"].as_str().map(str::to_owned)),
            );
            match page["cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => break,
            }
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().expect("the churn thread");
        seen
    });
    let got: Vec<&String> = seen.iter().filter(|k| !k.ends_with('x')).collect();
    assert_eq!(got, steady.iter().collect::<Vec<_>>());
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

/// Bulk writes neither read nor lock their keys: the engine's writer reports what each
/// operation replaced and carries `created_at` over. An update in bulk keeps the
/// creation time of a record written long ago, whether that record kept an older
/// creation time itself or created the key.
#[test]
fn bulk_updates_keep_created_at_and_report_what_they_replaced() {
    use caskade_engine::{Clock, Engine, Options, WriteOptions};
    use caskade_server::media::Kind;
    use caskade_server::meta::RecordMeta;

    #[derive(Debug)]
    struct Fixed(u64);
    impl Clock for Fixed {
        fn now_ms(&self) -> u64 {
            self.0
        }
    }
    const JAN_2026_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    const JUN_2025_MS: u64 = 1_748_736_000_000; // 2025-06-01T00:00:00Z
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("s");
    let options = Options {
        clock: std::sync::Arc::new(Fixed(JAN_2026_MS)),
        ..Options::default()
    };
    let engine = Engine::open(&store, options).expect("engine opens");
    for (key, created_at_ms) in [("user/old", JUN_2025_MS), ("user/new", 0)] {
        let meta = RecordMeta {
            kind: Kind::Json,
            content_type: "application/json",
            metadata: None,
            created_at_ms,
        }
        .encode()
        .expect("meta encodes");
        engine
            .put(
                key.to_owned().into_bytes(),
                b"1".to_vec(),
                WriteOptions {
                    expires_at_ms: None,
                    meta: meta.into(),
                },
            )
            .expect("written");
    }
    engine.close().expect("closed");

    let s = Server::start_in(&store, &[]);
    let body = json!({"operations": [
        {"op": "put", "entity": "user", "key": "old", "value": 2},
        {"op": "put", "entity": "user", "key": "new", "value": 2},
        {"op": "put", "entity": "user", "key": "fresh", "value": 1},
        {"op": "put", "entity": "user", "key": "fresh", "value": 2},
        {"op": "delete", "entity": "user", "key": "fresh"},
        {"op": "delete", "entity": "user", "key": "fresh"},
        {"op": "put", "entity": "user", "key": "fresh", "value": 3}
    ]});
    for round in 0..2 {
        let resp = s.request("POST", "/v1/bulk", &[JSON], body.to_string().into_bytes());
        let results = data(&resp, 200)["results"]
            .as_array()
            .cloned()
            .expect("results");
        let flags: Vec<&Value> = results
            .iter()
            .map(|r| r.get("created").unwrap_or(&r["deleted"]))
            .collect();
        let fresh_created = json!(round == 0);
        assert_eq!(
            flags,
            [
                &json!(false),
                &json!(false),
                &fresh_created,
                &json!(false),
                &json!(true),
                &json!(false),
                &json!(true)
            ],
            "round {round}"
        );
        let old = data(&s.get("/v1/kv/user/old"), 200);
        assert_eq!(old["created_at"], "2025-06-01T00:00:00Z", "round {round}");
        assert_eq!(old["value"], 2);
        assert_ne!(old["updated_at"], old["created_at"]);
        let new = data(&s.get("/v1/kv/user/new"), 200);
        assert_eq!(new["created_at"], "2026-01-01T00:00:00Z", "round {round}");
        let fresh = data(&s.get("/v1/kv/user/fresh"), 200);
        assert_eq!(fresh["value"], 3);
        assert_eq!(fresh["created_at"], fresh["updated_at"]);
    }
}

#[test]
fn bulk_applies_every_operation_with_increasing_versions() {
    let s = Server::start(&[]);
    let old = version(&data(
        &s.put_json("/v1/kv/event/b", &json!({"value": 0}), &[]),
        201,
    ));
    let body = json!({"operations": [
        {"op": "put", "entity": "user", "key": "a", "value": {"x": 1}, "ttl": 120},
        {"op": "delete", "entity": "event", "key": "b"},
        {"op": "put", "entity": "user", "key": "t", "value": "hi", "metadata": {"k": 1}},
        {"op": "delete", "entity": "user", "key": "never"},
        {"op": "put", "entity": "event", "key": "bin", "value": "AAEC", "content_type": "image/png"},
        {"op": "put", "entity": "user", "key": "a", "value": 2}
    ]});
    let resp = s.request("POST", "/v1/bulk", &[JSON], body.to_string().into_bytes());
    let results = data(&resp, 200)["results"]
        .as_array()
        .cloned()
        .expect("results");
    assert_eq!(results.len(), 6);
    let versions: Vec<u64> = results.iter().map(version).collect();
    assert!(versions[0] > old);
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert_eq!(
        results[0],
        json!({"op": "put", "entity": "user", "key": "a", "created": true,
            "expires_at": results[0]["expires_at"], "content_type": "application/json",
            "size_bytes": 7, "version": versions[0]})
    );
    assert_timestamp(&results[0]["expires_at"]);
    assert_eq!(
        results[1],
        json!({"op": "delete", "entity": "event", "key": "b", "deleted": true, "version": versions[1]})
    );
    assert_eq!(
        results[2]["content_type"],
        json!("text/plain; charset=utf-8")
    );
    assert_eq!(results[3]["deleted"], json!(false));
    assert_eq!(results[4]["size_bytes"], json!(3));
    assert_eq!(results[5]["created"], json!(false));

    let a = data(&s.get("/v1/kv/user/a"), 200);
    assert_eq!((&a["value"], &a["expires_at"]), (&json!(2), &Value::Null));
    assert_eq!(a["version"], json!(versions[5]));
    assert_eq!(s.get("/v1/kv/event/b").status, 404);
    assert_eq!(
        data(&s.get("/v1/kv/user/t"), 200)["metadata"],
        json!({"k": 1})
    );
    assert_eq!(s.get("/v1/kv/event/bin/value").body, [0, 1, 2]);

    // One bad operation: nothing of the batch is written.
    let bad = json!({"operations": [
        {"op": "put", "entity": "user", "key": "fresh", "value": 1},
        {"op": "delete", "entity": "user", "key": "a"},
        {"op": "put", "entity": "user", "key": "x", "value": 1, "ttl": 1}
    ]});
    let resp = s.request("POST", "/v1/bulk", &[JSON], bad.to_string().into_bytes());
    assert_eq!(
        problems(&s, &resp, 422),
        vec![(1003, "/v1/bulk#/operations/2/ttl".into())]
    );
    assert_eq!(s.get("/v1/kv/user/fresh").status, 404);
    assert_eq!(
        data(&s.get("/v1/kv/user/a"), 200)["version"],
        json!(versions[5])
    );
}

#[test]
fn conditional_requests_follow_if_match_and_if_none_match() {
    let s = Server::start(&[]);
    let p = "/v1/kv/user/c";
    let body = |n: u64| json!({ "value": n });
    expect(
        &s,
        ("PUT", p, &[JSON, ("if-match", "*")], br#"{"value":0}"#),
        412,
        &[(2004, "")],
    );
    let create = s.put_json(p, &body(1), &[("if-none-match", "*")]);
    let v1 = version(&data(&create, 201));
    expect(
        &s,
        ("PUT", p, &[JSON, ("if-none-match", "*")], br#"{"value":0}"#),
        412,
        &[(2004, "")],
    );

    let list = format!("\"999999\", \"abc\", {}", etag(v1));
    let v2 = version(&data(&s.put_json(p, &body(2), &[("if-match", &list)]), 200));
    let weak = format!("W/{}", etag(v2));
    let v3 = version(&data(&s.put_json(p, &body(3), &[("if-match", &weak)]), 200));
    expect(
        &s,
        (
            "PUT",
            p,
            &[JSON, ("if-match", &etag(v1))],
            br#"{"value":0}"#,
        ),
        412,
        &[(2004, "")],
    );
    expect(
        &s,
        (
            "PUT",
            p,
            &[JSON, ("if-match", "\"abc\"")],
            br#"{"value":0}"#,
        ),
        412,
        &[(2004, "")],
    );
    let star = s.put_json(p, &body(4), &[("if-match", "*")]);
    let v4 = version(&data(&star, 200));
    assert!(v1 < v2 && v2 < v3 && v3 < v4);

    for path in [p.to_owned(), format!("{p}/value")] {
        for tag in [
            etag(v4),
            format!("W/{}", etag(v4)),
            format!("\"1\", {}", etag(v4)),
            "*".into(),
        ] {
            let not_modified = s.request("GET", &path, &[("if-none-match", &tag)], Vec::new());
            assert_eq!(not_modified.status, 304, "{path} {tag}");
            assert_eq!(not_modified.header("etag"), Some(etag(v4).as_str()));
            assert!(not_modified.body.is_empty());
        }
        let stale = s.request("GET", &path, &[("if-none-match", &etag(v3))], Vec::new());
        assert_eq!(stale.status, 200, "{path}");
        let head = s.request("HEAD", &path, &[("if-none-match", &etag(v4))], Vec::new());
        assert_eq!(head.status, 304, "{path}");
    }

    let stale = [("if-match", etag(v3))];
    let stale: Vec<(&str, &str)> = stale.iter().map(|(n, v)| (*n, v.as_str())).collect();
    expect(&s, ("DELETE", p, &stale, b""), 412, &[(2004, "")]);
    assert_eq!(
        data(&s.get(p), 200)["version"],
        json!(v4),
        "a failed delete deletes nothing"
    );
    let del = s.request(
        "DELETE",
        p,
        &[("if-match", &format!("W/{}", etag(v4)))],
        Vec::new(),
    );
    assert_eq!(data(&del, 200)["deleted"], json!(true));
    expect(
        &s,
        ("DELETE", p, &[("if-match", "*")], b""),
        412,
        &[(2004, "")],
    );
    // Reads honour If-Match too, and If-None-Match: * on a DELETE of a live key fails.
    expect(
        &s,
        ("GET", p, &[("if-match", "*")], b""),
        412,
        &[(2004, "")],
    );
    let recreate = s.put_json(p, &body(5), &[("if-none-match", "*")]);
    let v5 = version(&data(&recreate, 201));
    let stale = etag(v4);
    expect(
        &s,
        ("GET", p, &[("if-match", &stale)], b""),
        412,
        &[(2004, "")],
    );
    let value = format!("{p}/value");
    expect(
        &s,
        ("GET", &value, &[("if-match", &stale)], b""),
        412,
        &[(2004, "")],
    );
    assert_eq!(
        s.request("GET", &value, &[("if-match", &etag(v5))], Vec::new())
            .status,
        200
    );
    expect(
        &s,
        ("DELETE", p, &[("if-none-match", "*")], b""),
        412,
        &[(2004, "")],
    );
    let recreate = s.put_json(p, &body(5), &[("if-none-match", "*")]);
    assert_eq!(recreate.status, 412, "{}", recreate.text());
    let update = s.put_json(p, &body(6), &[("if-match", &etag(v5))]);
    assert_eq!(data(&update, 200)["created"], json!(false));
}

// ---------------------------------------------------------------- JSON round-trip

#[test]
fn json_is_stored_exactly_as_written() {
    let s = Server::start(&[]);
    let sent = concat!(
        r#"{ "value" : {"z": 123456789012345678901234567890, "f": 0.1, "nz": -0.0,"#,
        r#" "e": 1e+300, "a": [1E-7, -0, 0e0], "u": "h\u00e9llo \ud83d\ude00 ✓","#,
        r#" "esc": "q\"b\\s\/ \b\f\n\r\t", "ctl": "\u0001\u001F\u0000\u007f"},"#,
        r#" "metadata": {"b": 1.50, "a": null, "c": "\u001b"} }"#
    );
    let stored = concat!(
        r#"{"z":123456789012345678901234567890,"f":0.1,"nz":-0.0,"#,
        r#""e":1e+300,"a":[1E-7,-0,0e0],"u":"héllo 😀 ✓","#,
        r#""esc":"q\"b\\s/ \b\f\n\r\t","ctl":"\u0001\u001f\u0000"#,
        "\u{7f}\"}"
    );
    let resp = s.request("PUT", "/v1/kv/event/j", &[JSON], sent.as_bytes().to_vec());
    assert_eq!(data(&resp, 201)["size_bytes"], json!(stored.len()));
    let value = s.get("/v1/kv/event/j/value");
    assert_eq!(value.text(), stored);
    assert_eq!(value.header("content-type"), Some("application/json"));
    let envelope = s.get("/v1/kv/event/j").text();
    assert!(
        envelope.contains(&format!("\"value\":{stored},")),
        "{envelope}"
    );
    assert!(
        envelope.contains(r#""metadata":{"b":1.50,"a":null,"c":"\u001b"}"#),
        "{envelope}"
    );
    let listed = s.get("/v1/kv/event").text();
    assert!(
        listed.contains(r#""metadata":{"b":1.50,"a":null,"c":"\u001b"}"#),
        "{listed}"
    );

    // A JSON string under a JSON content type is stored as JSON, quotes included.
    let string = json!({"value": "x\u{1}", "content_type": "application/ld+json"});
    data(&s.put_json("/v1/kv/event/s", &string, &[]), 201);
    assert_eq!(s.get("/v1/kv/event/s/value").text(), "\"x\\u0001\"");
}

#[test]
fn duplicate_members_and_lone_surrogates_are_refused_where_they_are() {
    let s = Server::start(&[]);
    let p = "/v1/kv/user/d";
    let cases: &[(&[u8], u64, &str)] = &[
        (br#"{"value": 1, "value": 2}"#, 1007, "#/value"),
        (br#"{"value": 1, "\ud800": 2}"#, 1007, ""),
        (br#"{"value": {"a": 1, "a": 2}}"#, 1004, "#/value/a"),
        (br#"{"value": ["\ud800"]}"#, 1004, "#/value/0"),
        (br#"{"value": {"\udc00x": 1}}"#, 1004, "#/value"),
        (br#"{"value": "\ud800"}"#, 1004, "#/value"),
        (
            br#"{"value": 1, "metadata": {"m": 1, "m": 2}}"#,
            1005,
            "#/metadata/m",
        ),
        (
            br#"{"value": 1, "metadata": {"m": "\udfff"}}"#,
            1005,
            "#/metadata/m",
        ),
    ];
    for (body, code, pointer) in cases {
        let resp = s.request("PUT", p, &[JSON], body.to_vec());
        // A lone surrogate in a top-level name also makes that name an unknown field:
        // both are 1007 at the member, so every problem must match, not just one.
        let got = problems(&s, &resp, 422);
        for (got_code, instance) in &got {
            assert_eq!(got_code, code, "{}", String::from_utf8_lossy(body));
            assert!(instance.starts_with(&format!("{p}{pointer}")), "{got:?}");
        }
    }
    let raw = [("content-type", "application/vnd.a+json")];
    for body in [&br#"{"a": 1, "a": 2}"#[..], br#"["\ud800"]"#] {
        expect(&s, ("PUT", p, &raw, body), 422, &[(1004, "")]);
    }
    let headers = [
        ("content-type", "image/png"),
        ("x-kv-metadata", r#"{"a": "\ud800"}"#),
    ];
    let resp = s.request("PUT", p, &headers, b"x".to_vec());
    assert_eq!(problems(&s, &resp, 422)[0].0, 1005);
    let bulk = br#"{"operations": [{"op": "put", "entity": "user", "key": "k", "value": {"a": 1, "a": 1}}]}"#;
    expect(
        &s,
        ("POST", "/v1/bulk", &[JSON], bulk),
        422,
        &[(1004, "#/operations/0/value/a")],
    );
    assert_eq!(s.get(p).status, 404);
}

// ---------------------------------------------------------------- persistence

#[test]
fn values_metadata_and_versions_survive_a_restart() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("store");
    let paths = [
        "/v1/kv/user/j",
        "/v1/kv/user/t",
        "/v1/kv/event/img",
        "/v1/kv/event/ttl",
    ];
    let (envelopes, values, last) = {
        let mut s = Server::start_in(&dir, &[]);
        let body = br#"{"value": {"n": 1e+300, "a": [0.1]}, "metadata": {"z": 1, "a": 2}}"#;
        data(&s.request("PUT", paths[0], &[JSON], body.to_vec()), 201);
        data(&s.put_json(paths[1], &json!({"value": "héllo"}), &[]), 201);
        let headers = [
            ("content-type", "image/png; Q=\"1\""),
            ("x-kv-metadata", r#"{"w":64}"#),
        ];
        data(
            &s.request("PUT", paths[2], &headers, vec![0, 1, 2, 255]),
            201,
        );
        data(
            &s.put_json(paths[3], &json!({"value": 1, "ttl": 3600}), &[]),
            201,
        );
        data(
            &s.put_json(paths[1], &json!({"value": "updated"}), &[]),
            200,
        );
        data(
            &s.put_json("/v1/kv/user/gone", &json!({"value": 1}), &[]),
            201,
        );
        data(
            &s.request("DELETE", "/v1/kv/user/gone", &[], Vec::new()),
            200,
        );
        let ops =
            json!({"operations": [{"op": "put", "entity": "event", "key": "bulk", "value": 7}]});
        let bulk = data(
            &s.request("POST", "/v1/bulk", &[JSON], ops.to_string().into_bytes()),
            200,
        );
        let envelopes: Vec<String> = paths.iter().map(|p| s.get(p).text()).collect();
        let values: Vec<Resp> = paths.iter().map(|p| s.get(&format!("{p}/value"))).collect();
        let last = version(&bulk["results"][0]);
        let status = s.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
        assert!(status.success(), "{status}");
        (envelopes, values, last)
    };
    let s = Server::start_in(&dir, &[]);
    for ((path, envelope), value) in paths.iter().zip(&envelopes).zip(&values) {
        assert_eq!(&s.get(path).text(), envelope, "{path}");
        let again = s.get(&format!("{path}/value"));
        assert_eq!(again.body, value.body, "{path}");
        for name in ["content-type", "etag", "x-kv-expires-at"] {
            assert_eq!(again.header(name), value.header(name), "{path} {name}");
        }
    }
    let t = data(&s.get(paths[1]), 200);
    assert_eq!(t["value"], json!("updated"));
    assert_ne!(t["created_at"], Value::Null);
    assert_eq!(
        s.get("/v1/kv/user/gone").status,
        404,
        "a delete survives too"
    );
    assert_eq!(data(&s.get("/v1/kv/event/bulk"), 200)["value"], json!(7));
    let next = data(
        &s.put_json("/v1/kv/user/new", &json!({"value": 1}), &[]),
        201,
    );
    assert!(
        version(&next) > last,
        "versions keep growing after a restart"
    );
}

#[test]
fn acknowledged_writes_survive_a_kill_9() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("store");
    let mut s = Server::start_in(&dir, &[]);
    let mut acked = Vec::new();
    for i in 0..20 {
        let path = format!("/v1/kv/event/e{i}");
        let d = data(&s.put_json(&path, &json!({"value": {"i": i}}), &[]), 201);
        acked.push((path, version(&d)));
    }
    let ops: Vec<Value> = (0..50)
        .map(|i| json!({"op": "put", "entity": "user", "key": format!("b{i}"), "value": i}))
        .collect();
    let body = json!({ "operations": ops }).to_string();
    data(
        &s.request("POST", "/v1/bulk", &[JSON], body.into_bytes()),
        200,
    );
    s.signal_and_wait(nix::sys::signal::Signal::SIGKILL);

    let s = Server::start_in(&dir, &[]);
    for (i, (path, v)) in acked.iter().enumerate() {
        let d = data(&s.get(path), 200);
        assert_eq!((&d["value"], version(&d)), (&json!({"i": i}), *v), "{path}");
    }
    let listed = data(&s.get("/v1/kv/user?prefix=b&limit=1000"), 200);
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(50));
}

#[test]
fn racing_creates_with_if_none_match_star_have_one_winner() {
    /// Clients racing to create the same key.
    const RACERS: usize = 8;
    let s = Server::start(&[]);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let body = json!({ "value": i });
                    s.put_json("/v1/kv/user/race", &body, &[("if-none-match", "*")])
                        .status
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|r| r.join().expect("a racer"))
            .collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&c| c == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&c| c == 412).count(),
        RACERS - 1,
        "{statuses:?}"
    );
}

/// Single PUTs and DELETEs racing bulk requests on one hot key: a plain PUT or DELETE
/// is decided by the engine's writer as it writes (as bulk is), so it never loses a
/// race, never answers 503, and every answer is true: counted over everyone, each
/// create (201, `created: true`) is matched by a delete that removed a live value
/// (DELETE 200, `deleted: true`), give or take the key's final state.
#[test]
fn single_writes_racing_bulk_on_one_key_never_give_up() {
    /// Threads sending bulk requests that write the hot key.
    const BULKERS: usize = 6;
    /// Threads sending single PUTs, and as many sending single DELETEs.
    const SINGLES: usize = 2;
    /// Requests per thread.
    const ROUNDS: usize = 40;
    const HOT: &str = "/v1/kv/user/hot";
    let s = Server::start(&[]);
    // Per thread: (creates, deletes that removed a live value).
    let counts: Vec<(usize, usize)> = std::thread::scope(|scope| {
        let s = &s;
        let mut threads = Vec::new();
        for b in 0..BULKERS {
            threads.push(scope.spawn(move || {
                let (mut created, mut deleted) = (0, 0);
                for r in 0..ROUNDS {
                    let body = json!({"operations": [
                        {"op": "put", "entity": "user", "key": "hot", "value": {"b": b, "r": r}},
                        {"op": "put", "entity": "user", "key": "hot", "value": "text",
                         "metadata": {"m": r}},
                        {"op": "delete", "entity": "user", "key": "hot"},
                        {"op": "put", "entity": "user", "key": "hot", "value": [b, r]},
                    ]});
                    let resp = s.request("POST", "/v1/bulk", &[JSON], body.to_string().into());
                    let d = data(&resp, 200);
                    let results = d["results"].as_array().expect("results");
                    let versions: Vec<u64> = results.iter().map(version).collect();
                    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
                    // Inside one atomic batch: the second put and the delete always
                    // find the value the op before wrote, the last put never does.
                    assert_eq!(results[1]["created"], json!(false), "{d}");
                    assert_eq!(results[2]["deleted"], json!(true), "{d}");
                    assert_eq!(results[3]["created"], json!(true), "{d}");
                    created += 1 + usize::from(results[0]["created"] == json!(true));
                    deleted += 1;
                }
                (created, deleted)
            }));
        }
        for p in 0..SINGLES {
            threads.push(scope.spawn(move || {
                let mut created = 0;
                for r in 0..ROUNDS {
                    let body = json!({"value": {"p": p, "r": r}, "ttl": 3600});
                    let resp = s.put_json(HOT, &body, &[]);
                    assert!(matches!(resp.status, 200 | 201), "{}", resp.text());
                    let d = data(&resp, resp.status);
                    assert_eq!(d["created"], json!(resp.status == 201), "{d}");
                    assert_eq!(resp.header("etag"), Some(etag(version(&d)).as_str()));
                    assert_eq!(
                        resp.header("location").is_some(),
                        resp.status == 201,
                        "Location only on 201"
                    );
                    assert_eq!(d["content_type"], json!("application/json"));
                    assert_eq!(d["size_bytes"], json!(body["value"].to_string().len()));
                    assert!(d["expires_at"].is_string(), "{d}");
                    created += usize::from(resp.status == 201);
                }
                (created, 0)
            }));
            threads.push(scope.spawn(move || {
                let mut deleted = 0;
                for _ in 0..ROUNDS {
                    let resp = s.request("DELETE", HOT, &[], Vec::new());
                    match resp.status {
                        200 => {
                            assert_eq!(data(&resp, 200)["deleted"], json!(true));
                            deleted += 1;
                        }
                        404 => assert_eq!(resp.json()["errors"][0]["error_code"], json!(2001)),
                        other => panic!("DELETE answered {other}: {}", resp.text()),
                    }
                }
                (0, deleted)
            }));
        }
        threads
            .into_iter()
            .map(|t| t.join().expect("a writer thread"))
            .collect()
    });
    let created: usize = counts.iter().map(|c| c.0).sum();
    let deleted: usize = counts.iter().map(|c| c.1).sum();
    let live = s.get(HOT);
    assert!(matches!(live.status, 200 | 404), "{}", live.text());
    assert_eq!(
        created,
        deleted + usize::from(live.status == 200),
        "every create but a live one was deleted once"
    );
    if live.status == 200 {
        let d = data(&live, 200);
        assert!(d["created_at"].as_str() <= d["updated_at"].as_str(), "{d}");
    }
    assert!(!s.logs().contains("ERROR"), "{}", s.logs());
}
