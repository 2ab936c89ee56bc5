//! The error envelope of API.md: every failure is `{"ok": false, "errors": [...]}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Serialize;

/// What a URI fragment may not hold as it is (RFC 3986 `fragment`): a pointer to a
/// member named `a b` or `é` is written `#/a%20b`, `#/%C3%A9` (RFC 6901 §6), so that
/// `instance` stays a URI reference whatever names a client sends.
const FRAGMENT_ENCODED: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Every error code of API.md's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1000: body is not JSON.
    MalformedRequest,
    /// 1001: entity not `user`/`event`.
    InvalidEntity,
    /// 1002: key fails the key rule.
    InvalidKey,
    /// 1003: ttl not an integer in range.
    InvalidTtl,
    /// 1004: value missing, null, wrong type for its kind, bad base64, text not UTF-8.
    InvalidValue,
    /// 1005: metadata not an object, over the limit, bad `X-Kv-Metadata`.
    InvalidMetadata,
    /// 1006: malformed or too long media type.
    InvalidContentType,
    /// 1007: body not an object, unknown field.
    InvalidBody,
    /// 1008: bad limit, prefix, cursor or raw `ttl` parameter.
    InvalidQuery,
    /// 1009: body or stored value over its limit.
    PayloadTooLarge,
    /// 1010: form or multipart body.
    UnsupportedMediaType,
    /// 1011: empty or oversized operation list, unknown `op`.
    InvalidBulk,
    /// 1012: malformed `If-Match` / `If-None-Match`.
    InvalidHeader,
    /// 2001: key absent or expired.
    NotFound,
    /// 2002: no such route.
    RouteNotFound,
    /// 2003: route exists, method does not.
    MethodNotAllowed,
    /// 2004: a precondition failed.
    PreconditionFailed,
    /// 2005: a backup is already running (409). Not in API.md's table; see docs/api.md.
    BackupInProgress,
    /// 3001: token missing or wrong.
    Unauthorized,
    /// 3002: token lacks the scope.
    Forbidden,
    /// 5000: a bug.
    Internal,
    /// 5001: the disk is full.
    StorageFull,
    /// 5002: not ready, shutting down, overloaded.
    Unavailable,
    /// 5003: a backup was asked for, but the server runs without `--backup-dir` (501).
    /// Not in API.md's table; see docs/api.md.
    BackupNotConfigured,
    /// 5004: the backup could not be written for a reason other than a full disk, e.g.
    /// the backup folder became unwritable (500). Not in API.md's table; see docs/api.md.
    BackupFailed,
}

impl ErrorCode {
    /// The numeric `error_code`.
    pub fn code(self) -> u16 {
        self.row().0
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.row().1).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The slug of the problem type URI (`/problems/<slug>`).
    pub fn slug(self) -> &'static str {
        self.row().2
    }

    /// A short human-readable title.
    pub fn title(self) -> &'static str {
        self.row().3
    }

    /// (error_code, status, slug, title) — API.md's error table, one row per code.
    fn row(self) -> (u16, u16, &'static str, &'static str) {
        use ErrorCode::*;
        match self {
            MalformedRequest => (1000, 400, "malformed-request", "Malformed request"),
            InvalidEntity => (1001, 422, "invalid-entity", "Invalid entity"),
            InvalidKey => (1002, 422, "invalid-key", "Invalid key"),
            InvalidTtl => (1003, 422, "invalid-ttl", "Invalid TTL"),
            InvalidValue => (1004, 422, "invalid-value", "Invalid value"),
            InvalidMetadata => (1005, 422, "invalid-metadata", "Invalid metadata"),
            InvalidContentType => (1006, 422, "invalid-content-type", "Invalid content type"),
            InvalidBody => (1007, 422, "invalid-body", "Invalid body"),
            InvalidQuery => (1008, 422, "invalid-query", "Invalid query parameter"),
            PayloadTooLarge => (1009, 413, "payload-too-large", "Payload too large"),
            UnsupportedMediaType => (
                1010,
                415,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            InvalidBulk => (1011, 422, "invalid-bulk", "Invalid bulk request"),
            InvalidHeader => (1012, 422, "invalid-header", "Invalid header"),
            NotFound => (2001, 404, "not-found", "Key not found"),
            RouteNotFound => (2002, 404, "route-not-found", "Route not found"),
            MethodNotAllowed => (2003, 405, "method-not-allowed", "Method not allowed"),
            PreconditionFailed => (2004, 412, "precondition-failed", "Precondition failed"),
            BackupInProgress => (2005, 409, "backup-in-progress", "Backup in progress"),
            Unauthorized => (3001, 401, "unauthorized", "Unauthorized"),
            Forbidden => (3002, 403, "forbidden", "Forbidden"),
            Internal => (5000, 500, "internal", "Internal server error"),
            StorageFull => (5001, 507, "storage-full", "Storage full"),
            Unavailable => (5002, 503, "unavailable", "Service unavailable"),
            BackupNotConfigured => (5003, 501, "backup-not-configured", "Backup not configured"),
            BackupFailed => (5004, 500, "backup-failed", "Backup failed"),
        }
    }

    /// Order of the request-checking stages of API.md: when problems of several stages
    /// are found, only the earliest stage answers. A stored value over its limit (413,
    /// known only after decoding) outranks the validation stage's 422s.
    fn stage(self) -> u8 {
        match self.status().as_u16() {
            401 | 403 => 0,
            404 if self == ErrorCode::RouteNotFound => 1,
            405 => 1,
            415 => 2,
            413 => 3,
            400 => 4,
            422 => 5,
            _ => 6,
        }
    }
}

/// One problem: a code, a specific detail, and where in the request it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem.
    pub code: ErrorCode,
    /// What exactly is wrong, for a human (never a secret, path or backtrace).
    pub detail: String,
    /// A JSON pointer into the body (`/ttl`, `/operations/3/key`), appended to the
    /// instance as `#<pointer>`; `None` for the request as a whole.
    pub pointer: Option<String>,
}

impl Problem {
    /// A problem about the request as a whole.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Problem {
            code,
            detail: detail.into(),
            pointer: None,
        }
    }

    /// A problem about one part of the body, named by a JSON pointer like `/ttl`.
    pub fn at(code: ErrorCode, pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem {
            code,
            detail: detail.into(),
            pointer: Some(pointer.into()),
        }
    }
}

/// A failed request: the problems found and the request path they belong to.
/// Renders as API.md's error envelope with the status of its stage.
#[derive(Debug)]
pub struct ApiError {
    instance: String,
    problems: Vec<Problem>,
    allow: Option<HeaderValue>,
}

impl ApiError {
    /// An error for the request at `path` (without the query) with these problems.
    /// Only the problems of the earliest failing stage are kept.
    pub fn new(path: &str, mut problems: Vec<Problem>) -> Self {
        if problems.is_empty() {
            problems.push(Problem::new(
                ErrorCode::Internal,
                "the request failed without a recorded reason",
            ));
        }
        let first_stage = problems.iter().map(|p| p.code.stage()).min().unwrap_or(0);
        let status = problems
            .iter()
            .find(|p| p.code.stage() == first_stage)
            .map(|p| p.code.status());
        problems.retain(|p| p.code.stage() == first_stage && Some(p.code.status()) == status);
        ApiError {
            instance: path.to_owned(),
            problems,
            allow: None,
        }
    }

    /// An error with one problem.
    pub fn one(path: &str, code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(path, vec![Problem::new(code, detail)])
    }

    /// Adds the `Allow` header a 405 must carry.
    pub fn with_allow(mut self, allow: HeaderValue) -> Self {
        self.allow = Some(allow);
        self
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.problems
            .first()
            .map_or(StatusCode::INTERNAL_SERVER_ERROR, |p| p.code.status())
    }

    /// The problems, in the order they were found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    ok: bool,
    errors: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(rename = "type")]
    kind: String,
    status: u16,
    title: &'static str,
    detail: &'a str,
    instance: String,
    error_code: u16,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let errors = self
            .problems
            .iter()
            .map(|p| Entry {
                kind: format!("/problems/{}", p.code.slug()),
                status: p.code.status().as_u16(),
                title: p.code.title(),
                detail: &p.detail,
                instance: match &p.pointer {
                    Some(pointer) => format!(
                        "{}#{}",
                        self.instance,
                        utf8_percent_encode(pointer, FRAGMENT_ENCODED)
                    ),
                    None => self.instance.clone(),
                },
                error_code: p.code.code(),
            })
            .collect();
        let body = serde_json::to_vec(&Envelope { ok: false, errors })
            .unwrap_or_else(|_| br#"{"ok":false,"errors":[]}"#.to_vec());
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(allow) = self.allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_status_matching_api_md() {
        assert_eq!(ErrorCode::InvalidTtl.code(), 1003);
        assert_eq!(
            ErrorCode::InvalidTtl.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(ErrorCode::StorageFull.status().as_u16(), 507);
        assert_eq!(ErrorCode::Unauthorized.slug(), "unauthorized");
    }

    #[test]
    fn a_too_large_value_outranks_validation_problems() {
        let err = ApiError::new(
            "/v1/kv/user/a",
            vec![
                Problem::at(ErrorCode::InvalidTtl, "/ttl", "ttl must be an integer"),
                Problem::at(ErrorCode::PayloadTooLarge, "/value", "value too large"),
            ],
        );
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.problems().len(), 1);
    }

    #[test]
    fn validation_problems_are_reported_together() {
        let err = ApiError::new(
            "/v1/kv/user/a",
            vec![
                Problem::at(ErrorCode::InvalidTtl, "/ttl", "ttl must be an integer"),
                Problem::at(ErrorCode::InvalidMetadata, "/metadata", "must be an object"),
            ],
        );
        assert_eq!(err.problems().len(), 2);
    }
}
