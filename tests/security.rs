//! Security as tests (issue 5, part 7), beyond the scope checks of `auth.rs`: no error
//! body ever holds a file path of the server, a backtrace or a token, over every error
//! path a client can reach (a full disk and a store that cannot be opened included);
//! no log line holds a token, even at `RUST_LOG=trace`; and no address other than
//! loopback is served without tokens, however it is given.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Resp, Server, binary};
use nix::sys::signal::Signal;
use serde_json::json;

const READ: &str = "sec-read-5e1a9b77c3";
const WRITE: &str = "sec-write-0f4d2c88a1";
const ADMIN: &str = "sec-admin-9b3e7f1102";
const WRONG: &str = "sec-wrong-6d6d6d6d6d";
const TOKENS: [&str; 4] = [READ, WRITE, ADMIN, WRONG];

/// Words that betray a panic or a backtrace in a body.
const CRASH_WORDS: [&str; 6] = [
    "panicked",
    "backtrace",
    "rust_backtrace",
    "thread '",
    ".rs:",
    "src/",
];

/// Where a `/` may appear in a `detail` or `title`: request paths the API names, media
/// types (`application/json`) and weak entity tags; never a file path.
const API_PATH_PREFIXES: [&str; 7] = [
    "/v1",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/problems/",
    "/operations/",
];

fn write_token_file(dir: &Path) -> String {
    let file = dir.join("tokens");
    let text = format!("{READ} read\n{WRITE} write\n{ADMIN} admin\n");
    std::fs::write(&file, text).expect("token file written");
    file.to_string_lossy().into_owned()
}

/// The server-side strings no body may contain: tokens, the data folder, the folders
/// around it, the source tree.
fn secrets(data_dir: &Path) -> Vec<String> {
    let mut all: Vec<String> = TOKENS.iter().map(|t| (*t).to_owned()).collect();
    all.push(data_dir.to_string_lossy().into_owned());
    if let Some(parent) = data_dir.parent() {
        all.push(parent.to_string_lossy().into_owned());
    }
    all.push(env!("CARGO_MANIFEST_DIR").to_owned());
    all.push(std::env::temp_dir().to_string_lossy().into_owned());
    all
}

/// True for a word of a message that may hold a `/`: an API path or a media type.
fn allowed_slash_word(word: &str) -> bool {
    let word = word.trim_matches(|c: char| "`'\"(),.;:[]{}<>".contains(c));
    // A bare `/`, or a weak entity tag `W/"42"` in a header's explanation.
    if !word.contains('/') || word == "/" || word.starts_with("W/\"") {
        return true;
    }
    if API_PATH_PREFIXES.iter().any(|p| word.starts_with(p)) {
        return true;
    }
    // A media type: `type/subtype`, both parts of token characters, no leading `/`.
    let mut parts = word.splitn(2, '/');
    let (kind, subtype) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    !kind.is_empty()
        && !subtype.contains('/')
        && kind
            .chars()
            .chain(subtype.chars())
            .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-*=".contains(c))
}

/// Checks one error response: the API's envelope, and nothing of the server's inside
/// the body or the headers.
fn assert_clean(resp: &Resp, path: &str, secrets: &[String], what: &str) {
    assert!(resp.status >= 400, "{what}: not an error: {}", resp.status);
    let mut seen = resp.text();
    for (name, value) in &resp.headers {
        seen.push_str(&format!("\n{name}: {value}"));
    }
    for secret in secrets {
        assert!(
            !seen.contains(secret.as_str()),
            "{what}: holds {secret:?}:\n{seen}"
        );
    }
    let lower = seen.to_lowercase();
    for word in CRASH_WORDS {
        assert!(!lower.contains(word), "{what}: holds {word:?}:\n{seen}");
    }
    if resp.body.is_empty() {
        return; // HEAD
    }
    resp.error_codes();
    let doc = resp.json();
    for error in doc["errors"].as_array().into_iter().flatten() {
        let kind = error["type"].as_str().unwrap_or_default();
        assert!(kind.starts_with("/problems/"), "{what}: type {kind:?}");
        let instance = error["instance"].as_str().unwrap_or_default();
        assert!(
            instance == path || instance.starts_with(&format!("{path}#")),
            "{what}: instance {instance:?} is not the request path {path:?}"
        );
        for field in ["title", "detail"] {
            let text = error[field].as_str().unwrap_or_default();
            for word in text.split_whitespace() {
                assert!(
                    allowed_slash_word(word),
                    "{what}: {field} holds what looks like a file path ({word:?}): {text}"
                );
            }
        }
    }
}

/// One request of the error tour: method, path, headers, body, the status it must get.
type Case = (
    &'static str,
    String,
    Vec<(&'static str, String)>,
    Vec<u8>,
    u16,
);

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// Every error path a client can reach on a running server with tokens.
fn error_tour() -> Vec<Case> {
    let admin = || bearer(ADMIN);
    let json_type = || ("content-type", "application/json".to_owned());
    let put = |path: &str, body: &str, status: u16| -> Case {
        (
            "PUT",
            path.to_owned(),
            vec![admin(), json_type()],
            body.as_bytes().to_vec(),
            status,
        )
    };
    let get = |path: &str, status: u16| -> Case {
        ("GET", path.to_owned(), vec![admin()], Vec::new(), status)
    };
    vec![
        // Access.
        ("GET", "/v1/kv/user/a".into(), vec![], vec![], 401),
        (
            "GET",
            "/v1/kv/user/a".into(),
            vec![bearer(WRONG)],
            vec![],
            401,
        ),
        (
            "GET",
            "/v1/kv/user/a".into(),
            vec![("authorization", format!("Basic {ADMIN}"))],
            vec![],
            401,
        ),
        (
            "GET",
            "/v1/kv/user/a".into(),
            vec![("authorization", ADMIN.to_owned())],
            vec![],
            401,
        ),
        (
            "GET",
            "/v1/kv/user/a".into(),
            vec![("authorization", format!("Bearer {ADMIN}x"))],
            vec![],
            401,
        ),
        (
            "GET",
            "/v1/nothing".into(),
            vec![bearer(WRONG)],
            vec![],
            401,
        ),
        (
            "PUT",
            "/v1/kv/user/a".into(),
            vec![bearer(READ), json_type()],
            br#"{"value":1}"#.to_vec(),
            403,
        ),
        (
            "POST",
            "/v1/bulk".into(),
            vec![bearer(READ), json_type()],
            br#"{"operations":[]}"#.to_vec(),
            403,
        ),
        (
            "GET",
            "/v1/admin/stats".into(),
            vec![bearer(WRITE)],
            vec![],
            403,
        ),
        (
            "POST",
            "/v1/admin/compact".into(),
            vec![bearer(WRITE)],
            vec![],
            403,
        ),
        (
            "POST",
            "/v1/admin/backup".into(),
            vec![bearer(READ)],
            vec![],
            403,
        ),
        // Routing.
        get("/v1/nothing-here", 404),
        get("/nothing-here", 404),
        get("/v1/kv/user/a/value/more", 404),
        (
            "PATCH",
            "/v1/kv/user/a".into(),
            vec![admin()],
            b"{}".to_vec(),
            405,
        ),
        ("DELETE", "/healthz".into(), vec![], vec![], 405),
        ("POST", "/v1/kv/user".into(), vec![admin()], vec![], 405),
        // Media type, size, syntax.
        (
            "PUT",
            "/v1/kv/user/a".into(),
            vec![
                admin(),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ],
            b"value=1".to_vec(),
            415,
        ),
        (
            "PUT",
            "/v1/kv/user/a".into(),
            vec![admin(), ("content-type", "application/octet-stream".into())],
            vec![7u8; 4096],
            413,
        ),
        put(
            "/v1/kv/user/a",
            &format!(r#"{{"value":"{}"}}"#, "x".repeat(70 * 1024)),
            413,
        ),
        put("/v1/kv/user/a", "{", 400),
        put("/v1/kv/user/a", r#"{"value": 1,}"#, 400),
        put("/v1/kv/user/a", "\u{0}\u{1}", 400),
        (
            "POST",
            "/v1/bulk".into(),
            vec![admin(), json_type()],
            b"[".to_vec(),
            400,
        ),
        (
            "PUT",
            "/v1/kv/user/j".into(),
            vec![admin(), ("content-type", "application/vnd.x+json".into())],
            b"{nope".to_vec(),
            400,
        ),
        // Validation.
        put("/v1/kv/people/a", r#"{"value":1}"#, 422),
        put("/v1/kv/user/bad.key", r#"{"value":1}"#, 422),
        put("/v1/kv/user/a", r#"{"value":1,"ttl":5}"#, 422),
        put("/v1/kv/user/a", r#"{"value":1,"ttl":"60"}"#, 422),
        put("/v1/kv/user/a", r#"{"value":null}"#, 422),
        put("/v1/kv/user/a", r#"{"value":1,"metadata":[1]}"#, 422),
        put("/v1/kv/user/a", r#"{"value":1,"tll":60}"#, 422),
        put(
            "/v1/kv/user/a",
            r#"{"value":1,"content_type":"not a type"}"#,
            422,
        ),
        put(
            "/v1/kv/user/a",
            r#"{"value":"***","content_type":"application/octet-stream"}"#,
            422,
        ),
        put("/v1/kv/user/a", r#"[1,2]"#, 422),
        put("/v1/kv/user/a", r#"{"value":1,"value":2}"#, 422),
        put("/v1/kv/user/a?ttl=60", r#"{"value":1}"#, 422),
        (
            "PUT",
            "/v1/kv/user/a?ttl=abc".into(),
            vec![admin(), ("content-type", "text/plain".into())],
            b"hi".to_vec(),
            422,
        ),
        (
            "PUT",
            "/v1/kv/user/a".into(),
            vec![
                admin(),
                ("content-type", "text/plain".into()),
                ("x-kv-metadata", "nope".into()),
            ],
            b"hi".to_vec(),
            422,
        ),
        (
            "PUT",
            "/v1/kv/user/a".into(),
            vec![admin(), json_type(), ("if-match", "nope".into())],
            br#"{"value":1}"#.to_vec(),
            422,
        ),
        get("/v1/kv/user?limit=0", 422),
        get("/v1/kv/user?cursor=!!!", 422),
        get("/v1/kv/user?prefix=a.b", 422),
        get("/v1/kv/user?unknown=1", 422),
        (
            "POST",
            "/v1/bulk".into(),
            vec![admin(), json_type()],
            br#"{"operations":[]}"#.to_vec(),
            422,
        ),
        (
            "POST",
            "/v1/bulk".into(),
            vec![admin(), json_type()],
            br#"{"operations":[{"op":"rm","entity":"user","key":"a"}]}"#.to_vec(),
            422,
        ),
        (
            "POST",
            "/v1/admin/compact?wait=maybe".into(),
            vec![admin()],
            vec![],
            422,
        ),
        // The key's state.
        get("/v1/kv/user/absent", 404),
        get("/v1/kv/user/absent/value", 404),
        (
            "DELETE",
            "/v1/kv/user/absent".into(),
            vec![admin()],
            vec![],
            404,
        ),
        (
            "HEAD",
            "/v1/kv/user/absent".into(),
            vec![admin()],
            vec![],
            404,
        ),
        (
            "PUT",
            "/v1/kv/user/absent".into(),
            vec![admin(), json_type(), ("if-match", "\"1\"".into())],
            br#"{"value":1}"#.to_vec(),
            412,
        ),
    ]
}

fn run_tour(server: &Server, secrets: &[String]) {
    for (method, path, headers, body, status) in error_tour() {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let resp = server.request(method, &path, &headers, body);
        let what = format!("{method} {path}");
        assert_eq!(resp.status, status, "{what}: {}", resp.text());
        let bare = path.split('?').next().unwrap_or_default();
        assert_clean(&resp, bare, secrets, &what);
    }
}

#[test]
fn no_error_body_holds_a_path_a_backtrace_or_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = write_token_file(dir.path());
    let data_dir = dir.path().join("store");
    let mut server = Server::start_with_env(
        &data_dir,
        &[("RUST_BACKTRACE", "full"), ("RUST_LOG", "trace")],
        &["--auth-tokens", &tokens, "--max-value-bytes", "1024"],
    );
    let secrets = secrets(&data_dir);
    run_tour(&server, &secrets);
    // A request hyper cannot parse, with a token in it, is logged at debug level.
    let mut raw = std::net::TcpStream::connect(server.addr()).expect("connects");
    let garbage = format!("G\u{1}T / HTTP/1.1\r\nAuthorization: Bearer {ADMIN}\r\n\r\n");
    raw.write_all(garbage.as_bytes()).expect("sent");
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).ok();
    assert!(server.signal_and_wait(Signal::SIGTERM).success());
    let logs = server.logs();
    assert!(logs.contains("DEBUG"), "not at trace level:\n{logs}");
    for token in TOKENS {
        let leaked = logs.lines().find(|l| l.contains(token));
        assert!(
            leaked.is_none(),
            "a log line holds the token {token}: {leaked:?}"
        );
    }
}

#[test]
fn a_full_disk_answers_507_without_a_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = write_token_file(dir.path());
    let data_dir = dir.path().join("store");
    let server = Server::start_with_file_size_limit(&data_dir, 64, &["--auth-tokens", &tokens]);
    let secrets = secrets(&data_dir);
    let auth = bearer(WRITE);
    let headers = [
        (auth.0, auth.1.as_str()),
        ("content-type", "application/octet-stream"),
    ];
    let full = (0..64)
        .map(|i| {
            let path = format!("/v1/kv/user/k{i}");
            (
                server.request("PUT", &path, &headers, vec![9u8; 8 * 1024]),
                path,
            )
        })
        .find(|(resp, _)| resp.status != 201)
        .expect("a write past the file-size limit fails");
    assert_eq!(full.0.status, 507, "{}", full.0.text());
    assert_clean(&full.0, &full.1, &secrets, "PUT on a full disk");
    let bulk = server.request(
        "POST",
        "/v1/bulk",
        &[(auth.0, auth.1.as_str()), ("content-type", "application/json")],
        json!({"operations": [{"op": "put", "entity": "user", "key": "b", "value": "x".repeat(8192)}]})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(bulk.status, 507, "{}", bulk.text());
    assert_clean(&bulk, "/v1/bulk", &secrets, "bulk on a full disk");
    let logs = server.logs();
    for token in TOKENS {
        assert!(!logs.contains(token), "a log line holds a token:\n{logs}");
    }
}

/// Starts a server on a data folder that cannot be opened, gathers every answer it
/// gives before it exits, and returns them with its exit code and stderr.
fn serve_unopenable(data_dir: &Path, tokens: &str) -> (Vec<(String, Resp)>, Option<i32>, String) {
    let mut server = match Server::spawn(data_dir, &["--auth-tokens", tokens]) {
        Ok(server) => server,
        Err(refused) => return (Vec::new(), None, refused),
    };
    let auth = bearer(ADMIN);
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let path = "/v1/kv/user/a";
        match server.try_request("GET", path, &[(auth.0, auth.1.as_str())], Vec::new()) {
            Ok(resp) => answers.push((path.to_owned(), resp)),
            Err(_) => break,
        }
    }
    let status = server.wait();
    (answers, status.code(), server.logs())
}

#[test]
fn a_store_that_cannot_be_opened_stops_the_server_with_a_reason_and_no_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = write_token_file(dir.path());
    let a_file = dir.path().join("not-a-folder");
    std::fs::write(&a_file, "just a file").expect("written");
    let held = dir.path().join("held");
    let holder = Server::start_in(&held, &[]);
    for data_dir in [a_file.as_path(), held.as_path()] {
        let (answers, code, logs) = serve_unopenable(data_dir, &tokens);
        assert_ne!(
            code,
            Some(0),
            "{}: it served anyway:\n{logs}",
            data_dir.display()
        );
        assert!(
            logs.contains("cannot open the store") || logs.contains("error"),
            "no reason given:\n{logs}"
        );
        for token in TOKENS {
            assert!(!logs.contains(token), "a log line holds a token:\n{logs}");
        }
        let secrets = secrets(data_dir);
        for (path, resp) in &answers {
            assert_eq!(resp.status, 503, "{}", resp.text());
            assert_clean(
                resp,
                path,
                &secrets,
                "a request while the store fails to open",
            );
        }
    }
    assert_eq!(
        holder.get("/healthz").status,
        200,
        "the holder kept its store"
    );
}

fn refused_to_listen(listen: Option<&str>, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(binary());
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("store"));
    if let Some(listen) = listen {
        command.args(["--listen", listen]);
    }
    let out = command.envs(env.iter().copied()).output().expect("runs");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{listen:?} {env:?} was not refused"
    );
    assert!(out.stdout.is_empty(), "it must not listen at all");
    assert!(
        !dir.path().join("store").exists(),
        "it must refuse before touching the data folder"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn no_non_loopback_address_is_served_without_tokens_however_it_is_given() {
    for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.1:0", "[2001:db8::1]:0"] {
        let stderr = refused_to_listen(Some(listen), &[]);
        assert!(stderr.contains("--auth-tokens"), "{listen}: {stderr}");
    }
    refused_to_listen(None, &[("CASKADE_LISTEN", "0.0.0.0:0")]);
    refused_to_listen(
        Some("0.0.0.0:0"),
        &[("CASKADE_ALLOW_UNAUTHENTICATED", "false")],
    );
}

#[test]
fn with_tokens_or_on_loopback_the_server_listens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = write_token_file(dir.path());
    let open = Server::start_in(
        &dir.path().join("store"),
        &["--listen", "0.0.0.0:0", "--auth-tokens", &tokens],
    );
    assert!(open.base.starts_with("http://0.0.0.0:"), "{}", open.base);
    assert_eq!(open.get("/v1/kv/user/a").status, 401, "tokens are enforced");
    let local = Server::start(&["--listen", "localhost:0"]);
    assert!(
        local.base.starts_with("http://127.0.0.1:"),
        "{}",
        local.base
    );
    assert_eq!(local.get("/v1/kv/user/a").status, 404);
}
