//! The key-value routes of API.md: PUT, GET, HEAD and DELETE of one key, its raw value,
//! listing and bulk writes. Handlers read the request by hand (path segments, query,
//! headers, body) so that every bad input becomes the problem API.md names, checked in
//! API.md's stage order, and never a framework's plain-text rejection.

use std::borrow::Cow;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use bytes::Bytes;
use caskade_engine::Entry;

use crate::body;
use crate::conditional::Preconditions;
use crate::envelope::{self, PutFields, PutSpec, check_metadata, check_ttl_query, defect_problem};
use crate::json::{self, ParseError, Value};
use crate::media::{self, Kind};
use crate::meta::RecordMeta;
use crate::mutation::{self, Live, Outcome, PutOutcome, WriteOp, decode_meta, engine_error};
use crate::names::{Entity, KeyPath};
use crate::plain;
use crate::problem::{ApiError, ErrorCode, Problem};
use crate::query::Query;
use crate::reply::{JsonWriter, etag, json_response};
use crate::state::{AppState, Limits};
use crate::{bulk, list};

/// Extra room an envelope body gets over the value limit for JSON around the value.
pub const ENVELOPE_OVERHEAD_BYTES: u64 = 64 * 1024;

/// The header that carries a raw PUT's metadata object.
pub const METADATA_HEADER: &str = "x-kv-metadata";

/// The routes of this module, with absolute paths: merge them, do not nest them (the
/// handlers read `Uri::path` as the request path of API.md's `instance`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/kv/{entity}/{key}",
            get(get_envelope).head(get_value).put(put).delete(delete),
        )
        .route("/v1/kv/{entity}/{key}/value", get(get_value))
        .route("/v1/kv/{entity}", get(list::list))
        .route("/v1/bulk", post(bulk::bulk))
}

/// Largest envelope PUT body: 4/3 × the value limit (base64) + 64 KiB.
pub fn envelope_body_limit(limits: &Limits) -> usize {
    let bytes = limits
        .value_bytes_max
        .div_ceil(3)
        .saturating_mul(4)
        .saturating_add(ENVELOPE_OVERHEAD_BYTES);
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// How a PUT body is to be read, from its `Content-Type`.
enum PutMode {
    /// `application/json` or no Content-Type: the envelope.
    Envelope,
    /// Any other valid media type: the body is the value.
    Raw { content_type: String, kind: Kind },
    /// A Content-Type that is not a media type: the body is read, the write refused.
    RawInvalid,
}

/// Decides the PUT mode; `Err` for the 415 of forms and multipart.
fn put_mode(headers: &HeaderMap, problems: &mut Vec<Problem>) -> Result<PutMode, Problem> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(PutMode::Envelope);
    };
    // Two Content-Types leave the value's type (and whether this is an envelope) open.
    if headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .nth(1)
        .is_some()
    {
        problems.push(Problem::new(
            ErrorCode::InvalidContentType,
            "the Content-Type header may appear only once",
        ));
        return Ok(PutMode::RawInvalid);
    }
    let parsed = value.to_str().ok().map(|text| (text, media::parse(text)));
    match parsed {
        Some((_, Ok(mt))) if mt.is_form_or_multipart() => Err(Problem::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "form and multipart bodies ({}/{}) are not accepted; send `Content-Type: application/json` with a body like {{\"value\": …}}, or the raw value with its own content type",
                mt.kind, mt.subtype
            ),
        )),
        Some((_, Ok(mt))) if mt.is("application", "json") => Ok(PutMode::Envelope),
        Some((text, Ok(mt))) => Ok(PutMode::Raw {
            content_type: text.trim_matches([' ', '\t']).to_owned(),
            kind: mt.value_kind(),
        }),
        Some((_, Err(e))) => {
            problems.push(Problem::new(
                ErrorCode::InvalidContentType,
                format!("the Content-Type header is invalid: {e}"),
            ));
            Ok(PutMode::RawInvalid)
        }
        None => {
            problems.push(Problem::new(
                ErrorCode::InvalidContentType,
                "the Content-Type header must be printable ASCII",
            ));
            Ok(PutMode::RawInvalid)
        }
    }
}

/// `PUT /v1/kv/{entity}/{key}` through the router (see [`put_now`]).
async fn put(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    put_now(&state, &uri, &headers, body).await
}

/// `PUT /v1/kv/{entity}/{key}`. The dispatcher calls this directly, with hyper's own
/// body, for every PUT of a key path (`App::put_key`); the router's `put` is what a
/// test of the router alone reaches. The body is read (under the limit of its mode)
/// unless the Content-Type is refused outright (415, forms and multipart): that
/// leaves it unread, and the connection is then closed.
pub async fn put_now<B>(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: B,
) -> Result<Response, ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = uri.path();
    let mut problems = Vec::new();
    let mode = put_mode(headers, &mut problems).map_err(|p| ApiError::new(path, vec![p]))?;
    let target = KeyPath::from_path(path, &mut problems);
    let pre = Preconditions::parse(headers, &mut problems);
    let query = Query::parse(uri.query(), &["ttl"], &mut problems);
    let limit = match mode {
        PutMode::Envelope => envelope_body_limit(&state.limits),
        _ => usize::try_from(state.limits.value_bytes_max).unwrap_or(usize::MAX),
    };
    let bytes = match body::read(body, headers, limit).await {
        Ok(bytes) => bytes,
        Err(problem) => {
            problems.push(problem);
            return Err(ApiError::new(path, problems));
        }
    };
    let spec = decode_put_body(mode, bytes, &query, headers, &state.limits, &mut problems);
    let (Some((entity, key)), Some(spec), true) = (target.valid(), spec, problems.is_empty())
    else {
        return Err(ApiError::new(path, problems));
    };
    let ops = [WriteOp::Put { entity, key, spec }];
    // Without If-Match / If-None-Match nothing needs deciding before the write: the
    // put goes the way of bulk (no read, no key lock, the writer decides `created`
    // and carries `created_at`), so it never loses a race and never retries.
    let outcomes = if pre.is_empty() {
        mutation::apply_unconditional(state, path, &ops).await?
    } else {
        mutation::apply(state, path, &ops, |lives| {
            precondition(path, &pre, lives.first().copied().flatten())
        })
        .await?
    };
    match (&ops[0], outcomes.first()) {
        (WriteOp::Put { key, spec, .. }, Some(Outcome::Put(done))) => {
            Ok(put_response(entity, key, spec, *done))
        }
        _ => Err(mutation::internal(path, &"a put without a put outcome")),
    }
}

/// Checks the body of a PUT (read already) in its mode, with the query and headers
/// that belong to that mode.
fn decode_put_body(
    mode: PutMode,
    bytes: Bytes,
    query: &Query,
    headers: &HeaderMap,
    limits: &Limits,
    problems: &mut Vec<Problem>,
) -> Option<PutSpec> {
    match mode {
        PutMode::Envelope => {
            if query.given("ttl") {
                problems.push(Problem::new(
                    ErrorCode::InvalidQuery,
                    "the ttl query parameter is only for raw bodies; an envelope PUT gives \"ttl\" in the JSON body",
                ));
            }
            if headers.contains_key(METADATA_HEADER) {
                problems.push(Problem::new(
                    ErrorCode::InvalidMetadata,
                    "the X-Kv-Metadata header is only for raw bodies; an envelope PUT gives \"metadata\" in the JSON body",
                ));
            }
            decode_envelope(&bytes, limits, problems)
        }
        PutMode::Raw { content_type, kind } => {
            let ttl = query.get("ttl").and_then(|t| check_ttl_query(t, problems));
            let metadata = raw_metadata(headers, limits, problems);
            decode_raw(bytes, content_type, kind, ttl, metadata, problems)
        }
        PutMode::RawInvalid => None,
    }
}

/// 412 unless the live entry satisfies the request's preconditions.
fn precondition(path: &str, pre: &Preconditions, live: Option<Live>) -> Result<(), ApiError> {
    if pre.allow_write(live.map(|l| l.version)) {
        Ok(())
    } else {
        Err(precondition_failed(path, live.is_some()))
    }
}

fn precondition_failed(path: &str, live: bool) -> ApiError {
    let detail = if live {
        "the key's current version does not satisfy If-Match / If-None-Match"
    } else {
        "If-Match needs a live value, and the key is absent or expired"
    };
    ApiError::one(path, ErrorCode::PreconditionFailed, detail)
}

fn put_response(entity: Entity, key: &str, spec: &PutSpec, done: PutOutcome) -> Response {
    let mut w = JsonWriter::ok_data(128 + key.len() + spec.content_type.len());
    write_put_result(&mut w, entity, key, spec, done);
    let status = if done.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = json_response(status, w.finish());
    response
        .headers_mut()
        .insert(header::ETAG, etag(done.version));
    if done.created {
        let location = format!("/v1/kv/{}/{key}", entity.as_str());
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
    }
    response
}

/// The members of a put's result (PUT response and bulk result), after `entity`.
pub fn write_put_result(
    w: &mut JsonWriter,
    entity: Entity,
    key: &str,
    spec: &PutSpec,
    done: PutOutcome,
) {
    w.key("entity").str(entity.as_str());
    w.key("key").str(key);
    w.key("created").bool(done.created);
    w.key("expires_at").time(done.expires_at_ms);
    w.key("content_type").str(&spec.content_type);
    w.key("size_bytes").u64(spec.value.len() as u64);
    w.key("version").u64(done.version);
}

/// Checks the envelope body: JSON (400), an object of the known fields (1007), and
/// each field.
fn decode_envelope(bytes: &Bytes, limits: &Limits, problems: &mut Vec<Problem>) -> Option<PutSpec> {
    // The common shape in one pass; anything else (and every invalid body) through the
    // general decoder, which names every problem.
    plain::envelope(bytes, limits).or_else(|| decode_envelope_tree(bytes, limits, problems))
}

/// The general decoder of an envelope: parses the body into a JSON tree, checks it and
/// names every problem.
pub(crate) fn decode_envelope_tree(
    bytes: &Bytes,
    limits: &Limits,
    problems: &mut Vec<Problem>,
) -> Option<PutSpec> {
    let parsed = match json::parse(bytes) {
        Ok(parsed) => parsed,
        Err(err) => {
            problems.push(syntax_problem(&err));
            return None;
        }
    };
    problems.extend(parsed.defects.iter().map(|d| defect_problem(d, "")));
    let Value::Object(members) = &parsed.value else {
        problems.push(Problem::new(
            ErrorCode::InvalidBody,
            format!(
                "the body must be a JSON object like {{\"value\": …}}; got {}",
                parsed.value.type_name()
            ),
        ));
        return None;
    };
    let mut unknown = Vec::new();
    let fields = PutFields::collect(members, &[], &mut unknown);
    problems.extend(unknown.iter().map(|name| unknown_field(name, "")));
    envelope::decode_put(fields, "", limits, bytes, problems)
}

/// The 400 of a body that is not JSON.
pub fn syntax_problem(err: &ParseError) -> Problem {
    Problem::new(ErrorCode::MalformedRequest, err.to_string())
}

/// The 1007 of a member the object does not have.
pub fn unknown_field(name: &str, base: &str) -> Problem {
    let mut pointer = format!("{base}/");
    json::push_pointer_token(&mut pointer, name);
    let shown: String = name.chars().take(64).collect();
    Problem::at(
        ErrorCode::InvalidBody,
        pointer,
        format!("unknown field `{shown}`; the fields are value, ttl, metadata and content_type"),
    )
}

/// Reads `X-Kv-Metadata`: one header holding a JSON object (or `null`).
fn raw_metadata(
    headers: &HeaderMap,
    limits: &Limits,
    problems: &mut Vec<Problem>,
) -> Option<Vec<u8>> {
    let mut values = headers.get_all(METADATA_HEADER).iter();
    let value = values.next()?;
    let bad = |detail: &str| Problem::new(ErrorCode::InvalidMetadata, detail.to_owned());
    if values.next().is_some() {
        problems.push(bad("X-Kv-Metadata may be given only once"));
        return None;
    }
    let parsed = match json::parse(value.as_bytes()) {
        Ok(parsed) => parsed,
        Err(err) => {
            problems.push(bad(&format!(
                "X-Kv-Metadata must hold a JSON object: {err}"
            )));
            return None;
        }
    };
    if let Some(defect) = parsed.defects.first() {
        problems.push(bad(&format!(
            "X-Kv-Metadata: {} (at {})",
            envelope::defect_detail(defect.kind),
            defect.pointer
        )));
        return None;
    }
    check_metadata(&parsed.value, None, limits, problems)
}

/// Checks a raw body against its kind: JSON must parse (400), text must be UTF-8 (422).
fn decode_raw(
    bytes: Bytes,
    content_type: String,
    kind: Kind,
    ttl_seconds: Option<u64>,
    metadata: Option<Vec<u8>>,
    problems: &mut Vec<Problem>,
) -> Option<PutSpec> {
    match kind {
        Kind::Json => match json::parse(&bytes) {
            Err(err) => {
                problems.push(syntax_problem(&err));
                return None;
            }
            Ok(parsed) => {
                for defect in &parsed.defects {
                    problems.push(Problem::new(
                        ErrorCode::InvalidValue,
                        format!(
                            "the JSON value: {} (at {})",
                            envelope::defect_detail(defect.kind),
                            if defect.pointer.is_empty() {
                                "/"
                            } else {
                                &defect.pointer
                            }
                        ),
                    ));
                }
            }
        },
        Kind::Text if std::str::from_utf8(&bytes).is_err() => {
            problems.push(Problem::new(
                ErrorCode::InvalidValue,
                format!("a body of content type `{content_type}` must be UTF-8 text"),
            ));
        }
        Kind::Text | Kind::Binary => {}
    }
    Some(PutSpec {
        value: bytes,
        kind,
        content_type: content_type.into(),
        metadata,
        ttl_seconds,
    })
}

/// What a read route found, after checking the request and the key's preconditions.
enum Read {
    /// The live entry.
    Found(Entry),
    /// `If-None-Match` matched: 304 with this ETag.
    NotModified(u64),
}

/// The common part of GET and HEAD of one key: path, query and headers checked (422),
/// then the entry read: 412 for a failed `If-Match`, 404 when absent, 304 on a match.
fn read_key<'u>(
    state: &AppState,
    uri: &'u Uri,
    headers: &HeaderMap,
) -> Result<(Entity, Cow<'u, str>, Read), ApiError> {
    let path = uri.path();
    let mut problems = Vec::new();
    let target = KeyPath::from_path(path, &mut problems);
    let pre = Preconditions::parse(headers, &mut problems);
    Query::parse(uri.query(), &[], &mut problems);
    let (Some((entity, key)), true) = (target.valid(), problems.is_empty()) else {
        return Err(ApiError::new(path, problems));
    };
    let entry = entity
        .with_engine_key(&key, |k| state.engine.get(k))
        .map_err(|e| engine_error(path, e))?;
    let live = entry.as_ref().map(|e| e.version);
    if pre.if_match.as_ref().is_some_and(|c| !c.matches(live)) {
        return Err(precondition_failed(path, live.is_some()));
    }
    let Some(entry) = entry else {
        return Err(ApiError::one(
            path,
            ErrorCode::NotFound,
            format!("no live value under {}/{key}", entity.as_str()),
        ));
    };
    if pre.if_none_match.as_ref().is_some_and(|c| c.matches(live)) {
        return Ok((entity, key, Read::NotModified(entry.version)));
    }
    Ok((entity, key, Read::Found(entry)))
}

fn not_modified(version: u64) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    response.headers_mut().insert(header::ETAG, etag(version));
    response
}

/// `GET /v1/kv/{entity}/{key}` through the router (a GET with a body; see
/// [`get_envelope_now`]).
async fn get_envelope(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    get_envelope_now(&state, &uri, &headers)
}

/// `GET /v1/kv/{entity}/{key}`: the value in its envelope. The dispatcher calls this
/// directly for the common GET (no body), without the router and without a span
/// (`App::get_key`).
pub fn get_envelope_now(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (entity, key, read) = read_key(state, uri, headers)?;
    let entry = match read {
        Read::NotModified(version) => return Ok(not_modified(version)),
        Read::Found(entry) => entry,
    };
    let path = uri.path();
    let meta = RecordMeta::decode(&entry.meta).map_err(|e| mutation::internal(path, &e))?;
    let body = match envelope_body(entity, &key, &entry, &meta) {
        Ok(body) => body,
        Err(e) => return Err(mutation::internal(path, &e)),
    };
    let mut response = json_response(StatusCode::OK, body);
    response
        .headers_mut()
        .insert(header::ETAG, etag(entry.version));
    Ok(response)
}

/// Writes GET's envelope, splicing stored JSON and metadata in as they are.
fn envelope_body(
    entity: Entity,
    key: &str,
    entry: &Entry,
    meta: &RecordMeta<'_>,
) -> Result<Vec<u8>, std::str::Utf8Error> {
    let mut w = JsonWriter::ok_data(entry.value.len() * 4 / 3 + 256);
    write_entry_head(&mut w, entity, key, entry, meta)?;
    w.key("updated_at").time(Some(entry.written_at_ms));
    w.key("expires_at").time(entry.expires_at_ms);
    w.key("size_bytes").u64(entry.value.len() as u64);
    w.key("version").u64(entry.version);
    Ok(w.finish())
}

/// Writes the members GET's envelope and a `caskade export` line share, in GET's
/// order: `entity`, `key`, `value`, `encoding`, `content_type`, `metadata` and
/// `created_at`. Fails only when a text-kind value is not UTF-8 (damage or a bug:
/// writes check it).
pub fn write_entry_head(
    w: &mut JsonWriter,
    entity: Entity,
    key: &str,
    entry: &Entry,
    meta: &RecordMeta<'_>,
) -> Result<(), std::str::Utf8Error> {
    w.key("entity").str(entity.as_str());
    w.key("key").str(key);
    w.key("value");
    match meta.kind {
        Kind::Json => {
            w.raw(&entry.value);
        }
        Kind::Text => {
            w.text(&entry.value)?;
        }
        Kind::Binary => {
            let out = w.value_buffer();
            out.push(b'"');
            append_base64(&entry.value, out);
            out.push(b'"');
        }
    }
    w.key("encoding").str(meta.kind.encoding());
    w.key("content_type").str(meta.content_type);
    w.key("metadata");
    match meta.metadata {
        Some(bytes) => w.raw(bytes),
        None => w.null(),
    };
    w.key("created_at")
        .time(Some(meta.created_at(entry.written_at_ms)));
    Ok(())
}

/// Appends the standard, padded base64 of `bytes` to `out` without an extra copy.
fn append_base64(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
}

/// `GET /v1/kv/{entity}/{key}/value` and `HEAD /v1/kv/{entity}/{key}` through the
/// router (a request with a body; see [`get_value_now`]).
async fn get_value(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    get_value_now(&state, &uri, &headers)
}

/// `GET /v1/kv/{entity}/{key}/value` and `HEAD /v1/kv/{entity}/{key}`: the stored bytes
/// with their content type, the value's mapped bytes as the body without a copy (the
/// caller of a HEAD drops the body, keeping `Content-Length`). The dispatcher calls
/// this directly for a request without a body (`App::get_key`).
pub fn get_value_now(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (_, _, read) = read_key(state, uri, headers)?;
    let entry = match read {
        Read::NotModified(version) => return Ok(not_modified(version)),
        Read::Found(entry) => entry,
    };
    let meta = decode_meta(uri.path(), &entry.meta)?;
    let content_type =
        HeaderValue::from_str(meta.content_type).map_err(|e| mutation::internal(uri.path(), &e))?;
    let mut response = Response::new(Body::from(entry.value));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::ETAG, etag(entry.version));
    if let Some(value) = entry
        .expires_at_ms
        .and_then(|ms| HeaderValue::from_str(&crate::timefmt::rfc3339_seconds(ms)).ok())
    {
        h.insert("x-kv-expires-at", value);
    }
    Ok(response)
}

/// `DELETE /v1/kv/{entity}/{key}`.
async fn delete(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = uri.path();
    let mut problems = Vec::new();
    let target = KeyPath::from_path(path, &mut problems);
    let pre = Preconditions::parse(&headers, &mut problems);
    Query::parse(uri.query(), &[], &mut problems);
    let (Some((entity, key)), true) = (target.valid(), problems.is_empty()) else {
        return Err(ApiError::new(path, problems));
    };
    let not_found = || {
        ApiError::one(
            path,
            ErrorCode::NotFound,
            format!("no live value under {}/{key}", entity.as_str()),
        )
    };
    // Without a condition the engine decides alone whether a live value is there to
    // delete (`Expect::Present`): no read, no retry, a 404 when it is not.
    if pre.is_empty() {
        if !mutation::delete_if_live(&state, path, entity, &key).await? {
            return Err(not_found());
        }
        return Ok(delete_response(entity, &key));
    }
    let ops = [WriteOp::Delete {
        entity,
        key: Cow::Borrowed(&key),
    }];
    mutation::apply(&state, path, &ops, |lives| {
        let live = lives.first().copied().flatten();
        precondition(path, &pre, live)?;
        match live {
            Some(_) => Ok(()),
            None => Err(not_found()),
        }
    })
    .await?;
    Ok(delete_response(entity, &key))
}

fn delete_response(entity: Entity, key: &str) -> Response {
    let mut w = JsonWriter::ok_data(64 + key.len());
    w.key("entity").str(entity.as_str());
    w.key("key").str(key);
    w.key("deleted").bool(true);
    json_response(StatusCode::OK, w.finish())
}
