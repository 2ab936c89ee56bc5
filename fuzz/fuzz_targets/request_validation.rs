//! Arbitrary PUT, bulk, list and other requests (bodies, headers, paths, queries)
//! through the server's real request path (`App::handle`: auth, route table, router,
//! handlers) over a real engine: never a panic, never a 5xx, and every rejection is a
//! 4xx with API.md's JSON error envelope.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use caskade_engine::{Clock, Engine, Options, SyncPolicy};
use caskade_server::app::App;
use caskade_server::auth::Tokens;
use caskade_server::state::{AppState, Limits, Shared};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// 2026-11-26T09:14:43Z, in ms.
const START_MS: u64 = 1_795_684_483_000;
const TOKENS: &str = "r-tok read\nw-tok write\na-tok admin\n";

#[derive(Debug)]
struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct World {
    runtime: tokio::runtime::Runtime,
    clock: Arc<TestClock>,
    /// Without tokens (`/v1` open) and with read, write and admin tokens.
    open: Arc<App>,
    guarded: Arc<App>,
    _dirs: [tempfile::TempDir; 2],
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let clock = Arc::new(TestClock(AtomicU64::new(START_MS)));
        // Small limits, so 413s are reachable with small inputs.
        let limits = Limits {
            value_bytes_max: 512,
            metadata_bytes_max: 64,
        };
        let app = |tokens: Option<Tokens>| {
            let dir = tempfile::Builder::new()
                .prefix("request-validation-")
                .tempdir_in(scratch())
                .expect("temp dir");
            let options = Options {
                segment_bytes: 1024 * 1024,
                sync: SyncPolicy::Never,
                clock: clock.clone(),
                ..Options::default()
            };
            let engine = Engine::open(dir.path(), options).expect("open engine");
            let app = App::new(tokens, 64);
            app.set_ready(AppState {
                engine,
                limits,
                // No backup folder: each backup request would copy the store.
                shared: Arc::new(Shared::new(std::time::Instant::now(), None)),
            });
            (app, dir)
        };
        let (open, open_dir) = app(None);
        let (guarded, guarded_dir) = app(Some(Tokens::parse(TOKENS).expect("tokens")));
        World {
            runtime,
            clock,
            open,
            guarded,
            _dirs: [open_dir, guarded_dir],
        }
    })
}

#[derive(Arbitrary, Debug)]
struct Input {
    guarded: bool,
    method: MethodSel,
    path: PathSel,
    query: Option<Vec<(String, String)>>,
    headers: Vec<(HeaderSel, HeaderVal)>,
    body: BodySel,
    /// Seconds the clock moves before the request (expiry paths).
    advance_s: u8,
}

#[derive(Arbitrary, Debug)]
enum MethodSel {
    Get,
    Head,
    Put,
    Post,
    Delete,
    Patch,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum PathSel {
    Kv { entity: Ent, key: Key, value: bool },
    List(Ent),
    Bulk,
    Stats,
    Compact,
    Service(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Ent {
    User,
    Event,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Key {
    Small(u8),
    Plain(String),
    Encoded(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum HeaderSel {
    ContentType,
    IfMatch,
    IfNoneMatch,
    Metadata,
    Authorization,
    RequestId,
    Accept,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum HeaderVal {
    Json,
    Text,
    Binary,
    Form,
    Star,
    Etag(u16),
    Token(u8),
    Bytes(Vec<u8>),
    Str(String),
}

#[derive(Arbitrary, Debug)]
enum BodySel {
    Empty,
    Raw(Vec<u8>),
    Json(Json),
    Envelope(Envelope),
    Bulk(Vec<BulkOp>),
}

#[derive(Arbitrary, Debug)]
struct Envelope {
    value: Option<Json>,
    ttl: Option<Json>,
    metadata: Option<Json>,
    content_type: Option<Json>,
    extra: Option<(String, Json)>,
}

#[derive(Arbitrary, Debug)]
struct BulkOp {
    op: Option<Json>,
    entity: Option<Json>,
    key: Option<Json>,
    rest: Envelope,
}

#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Ttl(u32),
    Float(f64),
    Str(String),
    Word(Word),
    Number(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// Strings the validators look for, so the fuzzer reaches past "unknown value".
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Word {
    Put,
    Delete,
    User,
    Event,
    Key,
    Json,
    Text,
    Base64,
}

impl Word {
    fn as_str(self) -> &'static str {
        match self {
            Word::Put => "put",
            Word::Delete => "delete",
            Word::User => "user",
            Word::Event => "event",
            Word::Key => "k1",
            Word::Json => "application/json",
            Word::Text => "text/plain; charset=utf-8",
            Word::Base64 => "aGVsbG8=",
        }
    }
}

fn string(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).expect("a string serializes"));
}

fn emit(json: &Json, depth: usize, out: &mut String) {
    if depth > 16 {
        out.push_str("null");
        return;
    }
    match json {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Int(n) => out.push_str(&n.to_string()),
        Json::Ttl(n) => out.push_str(&(n % 40_000_000).to_string()),
        Json::Float(f) if f.is_finite() => out.push_str(&format!("{f:?}")),
        Json::Float(_) => out.push_str("1e999"),
        Json::Str(s) => string(s, out),
        Json::Word(w) => string(w.as_str(), out),
        // Anything at all where a number goes: malformed JSON is an input too.
        Json::Number(s) => out.push_str(s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                emit(item, depth + 1, out);
            }
            out.push(']');
        }
        Json::Object(members) => {
            out.push('{');
            for (i, (name, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(name, out);
                out.push(':');
                emit(value, depth + 1, out);
            }
            out.push('}');
        }
    }
}

fn envelope_members(env: &Envelope, out: &mut Vec<(String, String)>) {
    let fields = [
        ("value", &env.value),
        ("ttl", &env.ttl),
        ("metadata", &env.metadata),
        ("content_type", &env.content_type),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            let mut text = String::new();
            emit(value, 0, &mut text);
            out.push((name.to_owned(), text));
        }
    }
    if let Some((name, value)) = &env.extra {
        let mut text = String::new();
        emit(value, 0, &mut text);
        out.push((name.clone(), text));
    }
}

fn object(members: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(name, &mut out);
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out
}

fn body(sel: &BodySel) -> Vec<u8> {
    match sel {
        BodySel::Empty => Vec::new(),
        BodySel::Raw(bytes) => bytes.clone(),
        BodySel::Json(json) => {
            let mut out = String::new();
            emit(json, 0, &mut out);
            out.into_bytes()
        }
        BodySel::Envelope(env) => {
            let mut members = Vec::new();
            envelope_members(env, &mut members);
            object(&members).into_bytes()
        }
        BodySel::Bulk(ops) => {
            let ops: Vec<String> = ops
                .iter()
                .take(64)
                .map(|op| {
                    let mut members = Vec::new();
                    for (name, value) in [("op", &op.op), ("entity", &op.entity), ("key", &op.key)]
                    {
                        if let Some(value) = value {
                            let mut text = String::new();
                            emit(value, 0, &mut text);
                            members.push((name.to_owned(), text));
                        }
                    }
                    envelope_members(&op.rest, &mut members);
                    object(&members)
                })
                .collect();
            format!("{{\"operations\":[{}]}}", ops.join(",")).into_bytes()
        }
    }
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn entity(e: &Ent) -> String {
    match e {
        Ent::User => "user".to_owned(),
        Ent::Event => "event".to_owned(),
        Ent::Other(s) => percent_encode(s.as_bytes()),
    }
}

fn path(sel: &PathSel) -> String {
    match sel {
        PathSel::Kv {
            entity: e,
            key,
            value,
        } => {
            let key = match key {
                Key::Small(n) => format!("k{}", n % 8),
                Key::Plain(s) => s.clone(),
                Key::Encoded(bytes) => percent_encode(bytes),
            };
            let suffix = if *value { "/value" } else { "" };
            format!("/v1/kv/{}/{key}{suffix}", entity(e))
        }
        PathSel::List(e) => format!("/v1/kv/{}", entity(e)),
        PathSel::Bulk => "/v1/bulk".to_owned(),
        PathSel::Stats => "/v1/admin/stats".to_owned(),
        PathSel::Compact => "/v1/admin/compact".to_owned(),
        PathSel::Service(n) => [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/v1",
            "/",
        ][usize::from(*n) % 6]
            .to_owned(),
        PathSel::Raw(s) => s.clone(),
    }
}

fn header_value(v: &HeaderVal) -> Option<HeaderValue> {
    match v {
        HeaderVal::Json => Some(HeaderValue::from_static("application/json")),
        HeaderVal::Text => Some(HeaderValue::from_static("text/plain; charset=utf-8")),
        HeaderVal::Binary => Some(HeaderValue::from_static("application/octet-stream")),
        HeaderVal::Form => Some(HeaderValue::from_static(
            "application/x-www-form-urlencoded",
        )),
        HeaderVal::Star => Some(HeaderValue::from_static("*")),
        HeaderVal::Etag(n) => HeaderValue::from_str(&format!("\"{n}\"")).ok(),
        HeaderVal::Token(n) => {
            let token = ["r-tok", "w-tok", "a-tok", "nope"][usize::from(*n) % 4];
            HeaderValue::from_str(&format!("Bearer {token}")).ok()
        }
        HeaderVal::Bytes(b) => HeaderValue::from_bytes(b).ok(),
        HeaderVal::Str(s) => HeaderValue::from_str(s).ok(),
    }
}

fn request(input: &Input) -> Option<Request<Body>> {
    let method = match &input.method {
        MethodSel::Get => Method::GET,
        MethodSel::Head => Method::HEAD,
        MethodSel::Put => Method::PUT,
        MethodSel::Post => Method::POST,
        MethodSel::Delete => Method::DELETE,
        MethodSel::Patch => Method::PATCH,
        MethodSel::Other(m) => Method::from_bytes(m.as_bytes()).ok()?,
    };
    let mut uri = path(&input.path);
    if let Some(query) = &input.query {
        let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        uri.push('?');
        uri.push_str(&pairs.join("&"));
    }
    // Only what a client can put on the wire: hyper refuses the rest before us.
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in input.headers.iter().take(16) {
        let name = match name {
            HeaderSel::ContentType => header::CONTENT_TYPE,
            HeaderSel::IfMatch => header::IF_MATCH,
            HeaderSel::IfNoneMatch => header::IF_NONE_MATCH,
            HeaderSel::Metadata => HeaderName::from_static("x-kv-metadata"),
            HeaderSel::Authorization => header::AUTHORIZATION,
            HeaderSel::RequestId => HeaderName::from_static("x-request-id"),
            HeaderSel::Accept => header::ACCEPT,
            HeaderSel::Other(s) => HeaderName::from_bytes(s.as_bytes()).ok()?,
        };
        // hyper frames the body from these; a lying one never reaches a handler.
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        builder = builder.header(name, header_value(value)?);
    }
    builder.body(Body::from(body(&input.body))).ok()
}

/// API.md's error envelope: `{"ok": false, "errors": [...]}`, each error's status the
/// response's.
fn check_error_body(status: u16, content_type: Option<&str>, bytes: &[u8], what: &str) {
    assert!(
        content_type.is_some_and(|t| t.starts_with("application/json")),
        "{what}: error {status} with content type {content_type:?}"
    );
    let body: Value = serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{what}: error {status} body is not JSON ({e})"));
    assert_eq!(body["ok"], Value::Bool(false), "{what}: {body}");
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {body}"));
    assert!(!errors.is_empty(), "{what}: no errors in {body}");
    for e in errors {
        assert_eq!(
            e["status"].as_u64(),
            Some(u64::from(status)),
            "{what}: {body}"
        );
        assert!(e["error_code"].as_u64().is_some(), "{what}: {body}");
        let slug = e["type"].as_str().unwrap_or_default();
        assert!(slug.starts_with("/problems/"), "{what}: {body}");
        for field in ["title", "detail"] {
            let text = e[field].as_str().unwrap_or_default();
            assert!(text.chars().count() >= 5, "{what}: short {field} in {body}");
        }
        // The request path (empty for an authority-form target such as CONNECT's).
        assert!(e["instance"].is_string(), "{what}: {body}");
    }
}

fuzz_target!(|input: Input| {
    let Some(req) = request(&input) else {
        return;
    };
    let world = world();
    world
        .clock
        .0
        .fetch_add(u64::from(input.advance_s) * 1000, Ordering::SeqCst);
    let app = if input.guarded {
        &world.guarded
    } else {
        &world.open
    };
    let is_head = req.method() == Method::HEAD;
    let what = format!("{} {}", req.method(), req.uri());
    let backup = req.uri().path() == "/v1/admin/backup";
    let (status, content_type, bytes) = world.runtime.block_on(async {
        let response = app.clone().handle(req).await;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("the response body streams")
            .to_bytes();
        (status, content_type, bytes)
    });
    // These apps have no --backup-dir, so backup answers its documented 501
    // `backup-not-configured`; nothing else may be 5xx.
    if !(backup && status == 501) {
        assert!(
            status < 500,
            "{what}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    if (400..500).contains(&status) && !is_head {
        check_error_body(status, content_type.as_deref(), &bytes, &what);
    }
});

/// tmpfs when there is one.
fn scratch() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
