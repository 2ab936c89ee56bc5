//! The key-value routes over real HTTP: a real engine on a temp dir, `axum::serve` on a
//! loopback port, requests sent with hyper's client. Time is an injected clock, so
//! expiry is tested without sleeping.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use caskade_engine::{Clock, Engine, Options};
use caskade_server::state::{AppState, Limits, Shared};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::HeaderMap;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// 2026-11-26T09:14:43Z, in ms.
const START_MS: u64 = 1_795_684_483_000;

#[derive(Debug)]
struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Server {
    addr: SocketAddr,
    clock: Arc<TestClock>,
    /// A handle on the served engine, to close it under the server.
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        Server::with_limits(Limits::default()).await
    }

    async fn with_limits(limits: Limits) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(TestClock(AtomicU64::new(START_MS)));
        let options = Options {
            clock: clock.clone(),
            ..Options::default()
        };
        let engine = Engine::open(dir.path(), options).expect("open engine");
        let state = AppState {
            engine: engine.clone(),
            limits,
            shared: Arc::new(Shared::new(std::time::Instant::now(), None)),
        };
        let app = caskade_server::kv::routes().with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server {
            addr,
            clock,
            engine,
            _dir: dir,
        }
    }

    fn advance_s(&self, seconds: u64) {
        self.clock.0.fetch_add(seconds * 1000, Ordering::SeqCst);
    }

    async fn send_body<B>(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: B,
    ) -> Resp
    where
        B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
    {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(body).expect("request"))
            .await
            .expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let body = Full::new(Bytes::copy_from_slice(body));
        self.send_body(method, path, headers, body).await
    }

    async fn put(&self, path: &str, body: Value) -> Resp {
        self.put_with(path, &[], body).await
    }

    async fn put_with(&self, path: &str, headers: &[(&str, &str)], body: Value) -> Resp {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send("PUT", path, &all, body.to_string().as_bytes())
            .await
    }

    async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, &[], b"").await
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `data` of a success envelope with this status.
    fn data(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let doc = self.json();
        assert_eq!(doc["ok"], json!(true));
        doc["data"].clone()
    }

    /// `(error_code, instance)` of an error envelope with this status.
    fn errors(&self, status: u16) -> Vec<(u64, String)> {
        assert_eq!(
            self.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let doc = self.json();
        assert_eq!(doc["ok"], json!(false));
        doc["errors"]
            .as_array()
            .expect("errors list")
            .iter()
            .map(|e| {
                assert_eq!(e["status"].as_u64(), Some(u64::from(status)));
                assert!(e["detail"].as_str().is_some_and(|d| d.len() >= 5));
                (
                    e["error_code"].as_u64().expect("code"),
                    e["instance"].as_str().expect("instance").to_owned(),
                )
            })
            .collect()
    }

    fn codes(&self, status: u16) -> Vec<u64> {
        self.errors(status).into_iter().map(|(c, _)| c).collect()
    }
}

/// A body sent in chunks with no length given (chunked transfer encoding).
struct Chunked {
    left: usize,
    chunk: Bytes,
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[tokio::test]
async fn put_creates_then_updates_keeping_created_at() {
    let s = Server::start().await;
    let first = s.put("/v1/kv/user/alice", json!({"value": {"a": 1}})).await;
    let data = first.data(201);
    assert_eq!(data["created"], json!(true));
    assert_eq!(data["entity"], json!("user"));
    assert_eq!(data["key"], json!("alice"));
    assert_eq!(data["content_type"], json!("application/json"));
    assert_eq!(data["size_bytes"], json!(7));
    assert_eq!(data["expires_at"], Value::Null);
    let v1 = data["version"].as_u64().expect("version");
    assert_eq!(first.header("etag"), Some(format!("\"{v1}\"").as_str()));
    assert_eq!(first.header("location"), Some("/v1/kv/user/alice"));

    let fresh = s.get("/v1/kv/user/alice").await.data(200);
    assert_eq!(fresh["created_at"], fresh["updated_at"]);
    s.advance_s(5);
    let second = s.put("/v1/kv/user/alice", json!({"value": [1, 2]})).await;
    let data = second.data(200);
    assert_eq!(data["created"], json!(false));
    assert!(data["version"].as_u64().expect("version") > v1);
    assert_eq!(second.header("location"), None);

    let got = s.get("/v1/kv/user/alice").await.data(200);
    assert_eq!(got["value"], json!([1, 2]));
    assert_eq!(got["encoding"], json!("json"));
    assert_eq!(got["metadata"], Value::Null);
    assert_eq!(got["created_at"], json!("2026-11-26T09:14:43Z"));
    assert_eq!(got["updated_at"], json!("2026-11-26T09:14:48Z"));
    assert_eq!(got["expires_at"], Value::Null);
    assert_eq!(got["size_bytes"], json!(5));
}

#[tokio::test]
async fn json_values_round_trip_exactly() {
    let s = Server::start().await;
    let body = br#"{ "value" : {"z": 123456789012345678901234567890, "a": [-0.0, 1e+300, 0.1],
        "s": "\u00e9\u0001\/\"\t"}, "metadata": {"b": 1.50, "a": null} }"#;
    let resp = s
        .send(
            "PUT",
            "/v1/kv/event/e1",
            &[("content-type", "application/json")],
            body,
        )
        .await;
    let stored = r#"{"z":123456789012345678901234567890,"a":[-0.0,1e+300,0.1],"s":"é\u0001/\"\t"}"#;
    assert_eq!(resp.data(201)["size_bytes"], json!(stored.len()));
    let got = s.get("/v1/kv/event/e1").await;
    let text = String::from_utf8(got.body.to_vec()).expect("UTF-8");
    assert!(text.contains(&format!("\"value\":{stored},")), "{text}");
    assert!(text.contains(r#""metadata":{"b":1.50,"a":null}"#), "{text}");
    let raw = s.get("/v1/kv/event/e1/value").await;
    assert_eq!(&raw.body[..], stored.as_bytes());
    assert_eq!(raw.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn text_and_binary_values_have_their_own_encodings() {
    let s = Server::start().await;
    let data = s
        .put("/v1/kv/user/t", json!({"value": "héllo\n"}))
        .await
        .data(201);
    assert_eq!(data["content_type"], json!("text/plain; charset=utf-8"));
    assert_eq!(data["size_bytes"], json!(7));
    let got = s.get("/v1/kv/user/t").await.data(200);
    assert_eq!(
        (got["value"].clone(), got["encoding"].clone()),
        (json!("héllo\n"), json!("text"))
    );

    let data = s
        .put(
            "/v1/kv/user/b",
            json!({"value": "AAH/", "content_type": "image/png"}),
        )
        .await
        .data(201);
    assert_eq!(data["size_bytes"], json!(3));
    let got = s.get("/v1/kv/user/b").await.data(200);
    assert_eq!(
        (got["value"].clone(), got["encoding"].clone()),
        (json!("AAH/"), json!("base64"))
    );
    let raw = s.get("/v1/kv/user/b/value").await;
    assert_eq!(&raw.body[..], &[0, 1, 255]);
    assert_eq!(raw.header("content-type"), Some("image/png"));

    let json_string = s
        .put(
            "/v1/kv/user/j",
            json!({"value": "x", "content_type": "application/ld+json"}),
        )
        .await
        .data(201);
    assert_eq!(json_string["size_bytes"], json!(3));
    assert_eq!(
        s.get("/v1/kv/user/j").await.data(200)["encoding"],
        json!("json")
    );
}

#[tokio::test]
async fn head_answers_the_value_headers_without_a_body() {
    let s = Server::start().await;
    let version = s
        .put(
            "/v1/kv/user/h",
            json!({"value": "AAEC", "content_type": "application/octet-stream", "ttl": 120}),
        )
        .await
        .data(201)["version"]
        .as_u64()
        .expect("version");
    for path in ["/v1/kv/user/h", "/v1/kv/user/h/value"] {
        let head = s.send("HEAD", path, &[], b"").await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        assert_eq!(
            head.header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(head.header("content-length"), Some("3"));
        assert_eq!(head.header("etag"), Some(format!("\"{version}\"").as_str()));
        assert_eq!(head.header("x-kv-expires-at"), Some("2026-11-26T09:16:43Z"));
    }
    let missing = s.send("HEAD", "/v1/kv/user/nope", &[], b"").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.is_empty());
}

#[tokio::test]
async fn expired_keys_vanish_at_once_and_writing_over_them_creates() {
    let s = Server::start().await;
    let data = s
        .put("/v1/kv/event/x", json!({"value": 1, "ttl": 60}))
        .await
        .data(201);
    assert_eq!(data["expires_at"], json!("2026-11-26T09:15:43Z"));
    s.advance_s(59);
    s.get("/v1/kv/event/x").await.data(200);
    s.advance_s(1);
    assert_eq!(s.get("/v1/kv/event/x").await.codes(404), vec![2001]);
    assert_eq!(s.get("/v1/kv/event/x/value").await.codes(404), vec![2001]);
    let list = s.get("/v1/kv/event").await.data(200);
    assert_eq!(list["keys"], json!([]));
    assert_eq!(
        s.send("DELETE", "/v1/kv/event/x", &[], b"")
            .await
            .codes(404),
        vec![2001]
    );
    let again = s.put("/v1/kv/event/x", json!({"value": 2})).await.data(201);
    assert_eq!(again["created"], json!(true));
}

#[tokio::test]
async fn an_update_without_ttl_removes_the_expiry() {
    let s = Server::start().await;
    s.put("/v1/kv/user/u", json!({"value": 1, "ttl": 60}))
        .await
        .data(201);
    let data = s
        .put("/v1/kv/user/u", json!({"value": 2, "ttl": null}))
        .await
        .data(200);
    assert_eq!(data["expires_at"], Value::Null);
    s.advance_s(3600);
    assert_eq!(s.get("/v1/kv/user/u").await.data(200)["value"], json!(2));
}

#[tokio::test]
async fn validation_problems_are_reported_together() {
    let s = Server::start().await;
    let resp = s
        .put(
            "/v1/kv/users/a",
            json!({"value": 1, "ttl": 30, "metadata": "x", "tll": 1}),
        )
        .await;
    let errors = resp.errors(422);
    let expected: Vec<(u64, String)> = vec![
        (1001, "/v1/kv/users/a".into()),
        (1007, "/v1/kv/users/a#/tll".into()),
        (1003, "/v1/kv/users/a#/ttl".into()),
        (1005, "/v1/kv/users/a#/metadata".into()),
    ];
    assert_eq!(errors, expected);
}

/// A body, the status it gets, and the expected `(error_code, #pointer)` list.
type BodyCase = (&'static [u8], u16, Vec<(u64, &'static str)>);

#[tokio::test]
async fn envelope_bodies_are_checked_field_by_field() {
    let s = Server::start().await;
    let p = "/v1/kv/user/k";
    let ct = [("content-type", "application/json")];
    let cases: Vec<BodyCase> = vec![
        (b"{\"value\": ", 400, vec![(1000, "")]),
        (b"{\"value\": 1} x", 400, vec![(1000, "")]),
        (b"[1]", 422, vec![(1007, "")]),
        (
            b"{\"value\": 1, \"value\": 2}",
            422,
            vec![(1007, "#/value")],
        ),
        (
            b"{\"value\": {\"a\": 1, \"a\": 2}}",
            422,
            vec![(1004, "#/value/a")],
        ),
        (
            b"{\"value\": [\"\\ud800\"]}",
            422,
            vec![(1004, "#/value/0")],
        ),
        (
            b"{\"value\": 1, \"metadata\": {\"m\": 1, \"m\": 1}}",
            422,
            vec![(1005, "#/metadata/m")],
        ),
        (b"{\"ttl\": 60}", 422, vec![(1004, "#/value")]),
        (b"{\"value\": null}", 422, vec![(1004, "#/value")]),
        (
            b"{\"value\": 1, \"content_type\": \"text\"}",
            422,
            vec![(1006, "#/content_type")],
        ),
        (
            b"{\"value\": 1, \"content_type\": \"text/plain\"}",
            422,
            vec![(1004, "#/value")],
        ),
        (
            b"{\"value\": \"**\", \"content_type\": \"image/png\"}",
            422,
            vec![(1004, "#/value")],
        ),
        (
            b"{\"value\": 1, \"ttl\": \"60\"}",
            422,
            vec![(1003, "#/ttl")],
        ),
        (b"{\"value\": 1, \"ttl\": 6e1}", 422, vec![(1003, "#/ttl")]),
    ];
    for (body, status, expected) in cases {
        let resp = s.send("PUT", p, &ct, body).await;
        let got = resp.errors(status);
        let want: Vec<(u64, String)> = expected
            .iter()
            .map(|(c, ptr)| (*c, format!("{p}{ptr}")))
            .collect();
        assert_eq!(got, want, "{}", String::from_utf8_lossy(body));
    }
    let deep = format!("{{\"value\": {}{}}}", "[".repeat(300), "]".repeat(300));
    assert_eq!(
        s.send("PUT", p, &ct, deep.as_bytes()).await.codes(400),
        vec![1000]
    );
    let bom = b"\xEF\xBB\xBF{\"value\": 1}";
    assert_eq!(s.send("PUT", p, &ct, bom).await.codes(400), vec![1000]);
    let big_meta = json!({"value": 1, "metadata": {"m": "x".repeat(1020)}});
    assert_eq!(s.put(p, big_meta).await.codes(422), vec![1005]);
    let header_meta = [
        ("content-type", "application/json"),
        ("x-kv-metadata", "{}"),
    ];
    let resp = s.send("PUT", p, &header_meta, b"{\"value\": 1}").await;
    assert_eq!(resp.codes(422), vec![1005]);
    let query_ttl = s
        .send("PUT", "/v1/kv/user/k?ttl=60", &ct, b"{\"value\": 1}")
        .await;
    assert_eq!(query_ttl.codes(422), vec![1008]);
    assert_eq!(s.get(p).await.codes(404), vec![2001], "nothing was written");
}

#[tokio::test]
async fn stages_decide_which_problems_answer() {
    let s = Server::with_limits(Limits {
        value_bytes_max: 16,
        ..Limits::default()
    })
    .await;
    let form = s
        .send(
            "PUT",
            "/v1/kv/nope/a.b",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"value=1",
        )
        .await;
    assert_eq!(form.codes(415), vec![1010]);
    let too_large = s
        .put("/v1/kv/nope/k", json!({"value": "x".repeat(17), "ttl": 1}))
        .await;
    assert_eq!(
        too_large.errors(413),
        vec![(1009, "/v1/kv/nope/k#/value".to_owned())]
    );
    let malformed = s
        .send(
            "PUT",
            "/v1/kv/nope/k",
            &[("content-type", "application/json")],
            b"{",
        )
        .await;
    assert_eq!(malformed.codes(400), vec![1000]);
    let fits = s
        .put("/v1/kv/user/k", json!({"value": "x".repeat(16)}))
        .await;
    fits.data(201);
    let padded = json!({"value": "A".repeat(22) + "==", "content_type": "image/png"});
    assert_eq!(
        s.put("/v1/kv/user/b", padded).await.data(201)["size_bytes"],
        json!(16)
    );
    let over = json!({"value": "A".repeat(24), "content_type": "image/png"});
    assert_eq!(s.put("/v1/kv/user/b", over).await.codes(413), vec![1009]);
}

#[tokio::test]
async fn oversized_bodies_are_refused_while_streaming() {
    let s = Server::with_limits(Limits {
        value_bytes_max: 1024,
        ..Limits::default()
    })
    .await;
    let chunked = Chunked {
        left: 256,
        chunk: Bytes::from(vec![b'x'; 1024]),
    };
    let resp = s
        .send_body(
            "PUT",
            "/v1/kv/user/big",
            &[("content-type", "application/octet-stream")],
            chunked,
        )
        .await;
    assert_eq!(resp.codes(413), vec![1009]);
    let declared = s
        .send(
            "PUT",
            "/v1/kv/user/big",
            &[("content-type", "application/octet-stream")],
            &[0; 1025],
        )
        .await;
    assert_eq!(declared.codes(413), vec![1009]);
    let envelope = s
        .send(
            "PUT",
            "/v1/kv/user/big",
            &[("content-type", "application/json")],
            &vec![b' '; 1368 + 65536 + 1],
        )
        .await;
    assert_eq!(envelope.codes(413), vec![1009]);
    let fits = s
        .send(
            "PUT",
            "/v1/kv/user/big",
            &[("content-type", "application/octet-stream")],
            &[0; 1024],
        )
        .await;
    fits.data(201);
}

#[tokio::test]
async fn raw_puts_take_ttl_from_the_query_and_metadata_from_a_header() {
    let s = Server::start().await;
    let text = [("content-type", "text/plain")];
    let data = s
        .send("PUT", "/v1/kv/user/r?ttl=120", &text, b"hello raw")
        .await
        .data(201);
    assert_eq!(data["content_type"], json!("text/plain"));
    assert_eq!(data["size_bytes"], json!(9));
    assert_eq!(data["expires_at"], json!("2026-11-26T09:16:43Z"));
    assert_eq!(
        s.get("/v1/kv/user/r").await.data(200)["encoding"],
        json!("text")
    );

    for (query, code) in [
        ("ttl=abc", 1008),
        ("ttl=1.5", 1008),
        ("ttl=30", 1003),
        ("ttl=-5", 1003),
        ("ttl=1&ttl=2", 1008),
        ("x=1", 1008),
    ] {
        let resp = s
            .send("PUT", &format!("/v1/kv/user/r2?{query}"), &text, b"x")
            .await;
        assert_eq!(resp.codes(422), vec![code], "{query}");
    }

    let meta = [
        ("content-type", "image/png"),
        ("x-kv-metadata", "{\"w\": 1, \"h\": [2]}"),
    ];
    s.send("PUT", "/v1/kv/event/img", &meta, b"\x89PNG")
        .await
        .data(201);
    let got = s.get("/v1/kv/event/img").await.data(200);
    assert_eq!(got["metadata"], json!({"w": 1, "h": [2]}));
    assert_eq!(got["value"], json!("iVBORw=="));
    for bad in ["[1]", "{", "{\"a\":1,\"a\":2}", "\"x\""] {
        let headers = [("content-type", "image/png"), ("x-kv-metadata", bad)];
        let resp = s.send("PUT", "/v1/kv/event/img2", &headers, b"x").await;
        assert_eq!(resp.codes(422), vec![1005], "{bad}");
    }

    let json_raw = [("content-type", "application/vnd.x+json")];
    s.send("PUT", "/v1/kv/user/jr", &json_raw, b" {\"a\" : 1} ")
        .await
        .data(201);
    assert_eq!(
        &s.get("/v1/kv/user/jr/value").await.body[..],
        b" {\"a\" : 1} "
    );
    assert_eq!(
        s.send("PUT", "/v1/kv/user/jr", &json_raw, b"{")
            .await
            .codes(400),
        vec![1000]
    );
    assert_eq!(
        s.send("PUT", "/v1/kv/user/jr", &json_raw, b"{\"a\":1,\"a\":1}")
            .await
            .codes(422),
        vec![1004]
    );
    assert_eq!(
        s.send("PUT", "/v1/kv/user/t2", &text, b"\xff")
            .await
            .codes(422),
        vec![1004]
    );
    let latin1 = [("content-type", "text/plain; charset=latin1")];
    s.send("PUT", "/v1/kv/user/t3", &latin1, b"\xff")
        .await
        .data(201);
    assert_eq!(
        s.get("/v1/kv/user/t3").await.data(200)["encoding"],
        json!("base64")
    );
    let bad_ct = [("content-type", "not a media type")];
    assert_eq!(
        s.send("PUT", "/v1/kv/user/t4", &bad_ct, b"x")
            .await
            .codes(422),
        vec![1006]
    );
}

#[tokio::test]
async fn forms_and_multipart_are_415_pointing_to_json() {
    let s = Server::start().await;
    for ct in [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let resp = s
            .send("PUT", "/v1/kv/user/f", &[("content-type", ct)], b"value=1")
            .await;
        assert_eq!(resp.codes(415), vec![1010]);
        assert!(
            resp.json()["errors"][0]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("Content-Type: application/json"))
        );
    }
}

#[tokio::test]
async fn conditional_writes_follow_if_match_and_if_none_match() {
    let s = Server::start().await;
    let p = "/v1/kv/user/c";
    let missing = s
        .put_with(p, &[("if-match", "*")], json!({"value": 0}))
        .await;
    assert_eq!(missing.codes(412), vec![2004]);
    let v1 = s
        .put_with(p, &[("if-none-match", "*")], json!({"value": 1}))
        .await
        .data(201)["version"]
        .as_u64()
        .expect("version");
    assert_eq!(
        s.put_with(p, &[("if-none-match", "*")], json!({"value": 2}))
            .await
            .codes(412),
        vec![2004]
    );
    assert_eq!(
        s.put_with(p, &[("if-match", "\"abc\"")], json!({"value": 2}))
            .await
            .codes(412),
        vec![2004]
    );
    let list = format!("\"1\", W/\"{v1}\"");
    let v2 = s
        .put_with(p, &[("if-match", &list)], json!({"value": 3}))
        .await
        .data(200)["version"]
        .as_u64()
        .expect("version");
    for bad in ["42", "\"1\" x", "*, \"1\"", "W/1"] {
        let resp = s
            .put_with(p, &[("if-match", bad)], json!({"value": 4}))
            .await;
        assert_eq!(resp.codes(422), vec![1012], "{bad}");
    }
    let old = format!("\"{v1}\"");
    assert_eq!(
        s.send("DELETE", p, &[("if-match", &old)], b"")
            .await
            .codes(412),
        vec![2004]
    );
    assert_eq!(
        s.send("DELETE", "/v1/kv/user/none", &[("if-match", "*")], b"")
            .await
            .codes(412),
        vec![2004]
    );

    let current = format!("W/\"{v2}\"");
    for path in [p.to_owned(), format!("{p}/value")] {
        let resp = s
            .send("GET", &path, &[("if-none-match", &current)], b"")
            .await;
        assert_eq!(resp.status, 304);
        assert!(resp.body.is_empty());
        assert_eq!(resp.header("etag"), Some(format!("\"{v2}\"").as_str()));
        let stale = s.send("GET", &path, &[("if-none-match", &old)], b"").await;
        assert_eq!(stale.status, 200);
    }
    let bad = s.send("GET", p, &[("if-none-match", "nope")], b"").await;
    assert_eq!(bad.codes(422), vec![1012]);
    let deleted = s
        .send("DELETE", p, &[("if-match", &current)], b"")
        .await
        .data(200);
    assert_eq!(
        deleted,
        json!({"entity": "user", "key": "c", "deleted": true})
    );
}

#[tokio::test]
async fn only_one_of_many_racing_creates_wins() {
    let s = Arc::new(Server::start().await);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put_with(
                "/v1/kv/user/race",
                &[("if-none-match", "*")],
                json!({"value": i}),
            )
            .await
            .status
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|&&st| st == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&st| st == 201 || st == 412),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn delete_removes_and_then_404s() {
    let s = Server::start().await;
    s.put("/v1/kv/event/d", json!({"value": [1]}))
        .await
        .data(201);
    let data = s.send("DELETE", "/v1/kv/event/d", &[], b"").await.data(200);
    assert_eq!(data["deleted"], json!(true));
    assert_eq!(
        s.get("/v1/kv/event/d").await.errors(404),
        vec![(2001, "/v1/kv/event/d".to_owned())]
    );
    assert_eq!(
        s.send("DELETE", "/v1/kv/event/d", &[], b"")
            .await
            .codes(404),
        vec![2001]
    );
}

#[tokio::test]
async fn path_segments_are_percent_decoded_then_checked() {
    let s = Server::start().await;
    s.put("/v1/kv/user/a%2Db", json!({"value": 1}))
        .await
        .data(201);
    assert_eq!(
        s.get("/v1/kv/user/a-b").await.data(200)["key"],
        json!("a-b")
    );
    let long = "k".repeat(257);
    for key in [
        "a.b",
        "a%20b",
        "caf%C3%A9",
        "a%2Fb",
        "%ff",
        "%zz",
        long.as_str(),
    ] {
        let resp = s
            .put(&format!("/v1/kv/user/{key}"), json!({"value": 1}))
            .await;
        assert_eq!(resp.codes(422), vec![1002], "{key}");
    }
    assert_eq!(s.get("/v1/kv/User/a").await.codes(422), vec![1001]);
    assert_eq!(s.get("/v1/kv/%ff/%ff").await.codes(422), vec![1001, 1002]);
    let longest = "k".repeat(256);
    s.put(&format!("/v1/kv/user/{longest}"), json!({"value": 1}))
        .await
        .data(201);
}

#[tokio::test]
async fn list_checks_its_query() {
    let s = Server::start().await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=1&limit=2",
        "prefix=a.b",
        "cursor=%21%21",
        "cursor=YS5i",
        "other=1",
    ] {
        let resp = s.get(&format!("/v1/kv/user?{query}")).await;
        assert_eq!(
            resp.errors(422),
            vec![(1008, "/v1/kv/user".to_owned())],
            "{query}"
        );
    }
    assert_eq!(s.get("/v1/kv/users").await.codes(422), vec![1001]);
    s.put(
        "/v1/kv/user/m1",
        json!({"value": "t", "metadata": {"z": 1, "a": [true]}, "ttl": 60}),
    )
    .await
    .data(201);
    let one = s.get("/v1/kv/user?prefix=m").await.data(200);
    assert_eq!(
        one["keys"],
        json!([{"key": "m1", "content_type": "text/plain; charset=utf-8", "size_bytes": 1,
            "expires_at": "2026-11-26T09:15:43Z", "metadata": {"z": 1, "a": [true]},
            "version": one["keys"][0]["version"]}])
    );
    let empty = s.get("/v1/kv/user?limit=&prefix=n").await.data(200);
    assert_eq!(
        empty,
        json!({"entity": "user", "keys": [], "cursor": null, "list_complete": true})
    );
}

#[tokio::test]
async fn list_pages_return_each_steady_key_exactly_once_while_others_change() {
    let s = Server::start().await;
    for i in 0..20 {
        s.put(&format!("/v1/kv/user/k{i:02}"), json!({"value": i}))
            .await
            .data(201);
    }
    s.put("/v1/kv/event/k99", json!({"value": 0}))
        .await
        .data(201);
    s.put(
        "/v1/kv/user/other",
        json!({"value": 0, "metadata": {"m": 1}}),
    )
    .await
    .data(201);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut round = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/kv/user?prefix=k&limit=3&cursor={c}"),
            None => "/v1/kv/user?prefix=k&limit=3".to_owned(),
        };
        let page = s.get(&path).await.data(200);
        for item in page["keys"].as_array().expect("keys") {
            seen.push(item["key"].as_str().expect("key").to_owned());
            assert_eq!(item["content_type"], json!("application/json"));
            assert_eq!(item["metadata"], Value::Null);
        }
        // Churn between pages: new keys before and after the cursor, deletes of odd keys.
        s.put(&format!("/v1/kv/user/k{round:02}x"), json!({"value": 0}))
            .await
            .data(201);
        s.send(
            "DELETE",
            &format!("/v1/kv/user/k{:02}", 19 - 2 * round),
            &[],
            b"",
        )
        .await;
        round += 1;
        if page["list_complete"] == json!(true) {
            assert_eq!(page["cursor"], Value::Null);
            break;
        }
        let next = page["cursor"].as_str().expect("cursor").to_owned();
        assert!(
            next.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        cursor = Some(next);
        assert!(round < 50, "the walk does not end");
    }
    let steady: Vec<String> = (0..20)
        .filter(|i| i % 2 == 0)
        .map(|i| format!("k{i:02}"))
        .collect();
    for key in &steady {
        assert_eq!(
            seen.iter().filter(|k| *k == key).count(),
            1,
            "{key} in {seen:?}"
        );
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "keys come in ascending order");
    assert!(!seen.contains(&"other".to_owned()));
}

#[tokio::test]
async fn bulk_applies_in_order_with_a_version_each() {
    let s = Server::start().await;
    s.put("/v1/kv/user/old", json!({"value": "old"}))
        .await
        .data(201);
    let body = json!({"operations": [
        {"op": "put", "entity": "user", "key": "a", "value": {"x": 1}, "ttl": 120},
        {"op": "delete", "entity": "user", "key": "old"},
        {"op": "put", "entity": "user", "key": "a", "value": "again", "metadata": {"m": true}},
        {"op": "delete", "entity": "event", "key": "never"},
        {"op": "put", "entity": "event", "key": "b", "value": "AA==", "content_type": "application/octet-stream"}
    ]});
    let resp = s
        .send(
            "POST",
            "/v1/bulk",
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await;
    let results = resp.data(200)["results"]
        .as_array()
        .expect("results")
        .clone();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0]["created"], json!(true));
    assert_eq!(results[0]["expires_at"], json!("2026-11-26T09:16:43Z"));
    assert_eq!(
        results[1],
        json!({"op": "delete", "entity": "user", "key": "old", "deleted": true, "version": results[1]["version"]})
    );
    assert_eq!(
        results[2]["created"],
        json!(false),
        "a later op sees the earlier one"
    );
    assert_eq!(
        results[2]["content_type"],
        json!("text/plain; charset=utf-8")
    );
    assert_eq!(results[3]["deleted"], json!(false));
    assert_eq!(results[4]["size_bytes"], json!(1));
    let versions: Vec<u64> = results
        .iter()
        .map(|r| r["version"].as_u64().expect("version"))
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    let got = s.get("/v1/kv/user/a").await.data(200);
    assert_eq!(
        (got["value"].clone(), got["metadata"].clone()),
        (json!("again"), json!({"m": true}))
    );
    assert_eq!(got["version"].as_u64(), Some(versions[2]));
    assert_eq!(s.get("/v1/kv/user/old").await.status, 404);
}

#[tokio::test]
async fn an_invalid_bulk_writes_nothing_and_names_every_bad_operation() {
    let s = Server::start().await;
    let body = json!({"operations": [
        {"op": "put", "entity": "user", "key": "fresh", "value": 1},
        {"op": "put", "entity": "user", "key": "bad.key", "value": 1, "ttl": 5},
        {"op": "upsert", "entity": "user", "key": "k"},
        {"op": "delete", "entity": "user", "key": "k", "ttl": 60}
    ]});
    let resp = s
        .send("POST", "/v1/bulk", &[], body.to_string().as_bytes())
        .await;
    let errors = resp.errors(422);
    let expected: Vec<(u64, String)> = vec![
        (1002, "/v1/bulk#/operations/1/key".into()),
        (1003, "/v1/bulk#/operations/1/ttl".into()),
        (1011, "/v1/bulk#/operations/2/op".into()),
        (1007, "/v1/bulk#/operations/3/ttl".into()),
    ];
    assert_eq!(errors, expected);
    assert_eq!(s.get("/v1/kv/user/fresh").await.status, 404);
    let empty = s
        .send("POST", "/v1/bulk", &[], b"{\"operations\": []}")
        .await;
    assert_eq!(empty.codes(422), vec![1011]);
    let malformed = s.send("POST", "/v1/bulk", &[], b"{\"operations\": [").await;
    assert_eq!(malformed.codes(400), vec![1000]);
    let form = s
        .send(
            "POST",
            "/v1/bulk",
            &[("content-type", "multipart/form-data")],
            b"x",
        )
        .await;
    assert_eq!(form.codes(415), vec![1010]);
}

#[tokio::test]
async fn racing_updates_all_succeed_and_keep_created_at() {
    let s = Arc::new(Server::start().await);
    s.put("/v1/kv/user/hot", json!({"value": 0}))
        .await
        .data(201);
    let created_at = s.get("/v1/kv/user/hot").await.data(200)["created_at"].clone();
    s.advance_s(10);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put("/v1/kv/user/hot", json!({"value": i})).await
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        let data = task.await.expect("task").data(200);
        assert_eq!(data["created"], json!(false));
        versions.push(data["version"].as_u64().expect("version"));
    }
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 16, "every write got its own version");
    let got = s.get("/v1/kv/user/hot").await.data(200);
    assert_eq!(got["created_at"], created_at);
    assert_eq!(got["version"].as_u64(), versions.last().copied());
}

#[tokio::test]
async fn engine_refusals_map_to_their_problems() {
    let s = Server::with_limits(Limits {
        metadata_bytes_max: 128 * 1024,
        ..Limits::default()
    })
    .await;
    let meta = json!({"value": 1, "metadata": {"m": "x".repeat(70 * 1024)}});
    assert_eq!(s.put("/v1/kv/user/m", meta).await.codes(413), vec![1009]);
    s.put("/v1/kv/user/m", json!({"value": 1})).await.data(201);
    s.engine.clone().close().expect("close");
    let closed = s.put("/v1/kv/user/m", json!({"value": 2})).await;
    assert_eq!(closed.codes(503), vec![5002]);
    let bulk = br#"{"operations": [{"op": "delete", "entity": "user", "key": "m"}]}"#;
    assert_eq!(
        s.send("POST", "/v1/bulk", &[], bulk).await.codes(503),
        vec![5002]
    );
}

#[tokio::test]
async fn an_oversized_bulk_body_is_413_while_streaming() {
    let s = Server::start().await;
    let chunked = Chunked {
        left: 101,
        chunk: Bytes::from(vec![b' '; 1024 * 1024]),
    };
    let resp = s
        .send_body(
            "POST",
            "/v1/bulk",
            &[("content-type", "application/json")],
            chunked,
        )
        .await;
    assert_eq!(resp.codes(413), vec![1009]);
}
