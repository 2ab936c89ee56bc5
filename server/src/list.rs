//! `GET /v1/kv/{entity}?prefix=&limit=&cursor=`: keys in ascending byte order, a page at
//! a time.
//!
//! The cursor is the last key of the page, base64url without padding: URL-safe as it
//! is, and stateless, so a key that stays live for the whole walk is returned exactly
//! once whatever else is written meanwhile (the engine lists strictly after it).

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::mutation::{decode_meta, engine_error};
use crate::names::{Entity, KEY_CHARS_MAX, entity_problem, is_key_text, is_valid_key, kv_segments};
use crate::problem::{ApiError, ErrorCode, Problem};
use crate::query::Query;
use crate::reply::{JsonWriter, json_response};
use crate::state::AppState;

/// Keys per page when `limit` is not given.
pub const LIST_LIMIT_DEFAULT: usize = 100;
/// Most keys per page.
pub const LIST_LIMIT_MAX: usize = 1000;

/// A checked list request.
struct ListRequest {
    entity: Entity,
    prefix: String,
    limit: usize,
    after: Option<String>,
}

fn parse_request(uri: &Uri) -> Result<ListRequest, ApiError> {
    let path = uri.path();
    let mut problems = Vec::new();
    let segments = kv_segments(path);
    let entity = segments
        .first()
        .and_then(|raw| crate::names::decode_segment(raw))
        .and_then(|e| Entity::parse(&e));
    if entity.is_none() {
        problems.push(entity_problem(None));
    }
    let query = Query::parse(uri.query(), &["prefix", "limit", "cursor"], &mut problems);
    let prefix = query.get("prefix").unwrap_or("");
    if prefix.len() > KEY_CHARS_MAX || !is_key_text(prefix) {
        problems.push(Problem::new(
            ErrorCode::InvalidQuery,
            format!(
                "prefix must be at most {KEY_CHARS_MAX} characters of A-Z, a-z, 0-9, '_' and '-'"
            ),
        ));
    }
    let limit = match query.get("limit") {
        None => Some(LIST_LIMIT_DEFAULT),
        Some(text) => parse_limit(text),
    };
    if limit.is_none() {
        problems.push(Problem::new(
            ErrorCode::InvalidQuery,
            format!("limit must be an integer from 1 to {LIST_LIMIT_MAX}"),
        ));
    }
    let after = query.get("cursor").map(decode_cursor);
    if let Some(None) = after {
        problems.push(Problem::new(
            ErrorCode::InvalidQuery,
            "cursor must be a value returned by an earlier page of this list",
        ));
    }
    match (entity, limit, after, problems.is_empty()) {
        (Some(entity), Some(limit), after, true) => Ok(ListRequest {
            entity,
            prefix: prefix.to_owned(),
            limit,
            after: after.flatten(),
        }),
        _ => Err(ApiError::new(path, problems)),
    }
}

fn parse_limit(text: &str) -> Option<usize> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=LIST_LIMIT_MAX).contains(n))
}

/// The key a cursor names, if it is one this server could have made.
fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    String::from_utf8(bytes).ok().filter(|k| is_valid_key(k))
}

/// `GET /v1/kv/{entity}`.
pub async fn list(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let path = uri.path();
    let request = parse_request(&uri)?;
    let entity = request.entity;
    let prefix = entity.engine_key(&request.prefix);
    let after = request.after.as_deref().map(|k| entity.engine_key(k));
    let mut items = state
        .engine
        .list(&prefix, after.as_deref(), request.limit + 1)
        .map_err(|e| engine_error(path, e))?;
    let complete = items.len() <= request.limit;
    items.truncate(request.limit);
    let strip = entity.as_str().len() + 1;
    let mut w = JsonWriter::ok_data(items.len() * 160);
    w.key("entity").str(entity.as_str());
    w.key("keys").begin_array();
    let mut last_key = "";
    for item in &items {
        let key = std::str::from_utf8(item.key.get(strip..).unwrap_or_default())
            .map_err(|e| crate::mutation::internal(path, &e))?;
        let meta = decode_meta(path, &item.meta)?;
        w.begin_object();
        w.key("key").str(key);
        w.key("content_type").str(meta.content_type);
        w.key("size_bytes").u64(item.value_len);
        w.key("expires_at").time(item.expires_at_ms);
        w.key("metadata");
        match meta.metadata {
            Some(bytes) => w.raw(bytes),
            None => w.null(),
        };
        w.key("version").u64(item.version);
        w.end_object();
        last_key = key;
    }
    w.end_array();
    w.key("cursor");
    if complete {
        w.null();
    } else {
        w.str(&URL_SAFE_NO_PAD.encode(last_key));
    }
    w.key("list_complete").bool(complete);
    Ok(json_response(StatusCode::OK, w.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = URL_SAFE_NO_PAD.encode("user-01_x");
        assert_eq!(decode_cursor(&cursor).as_deref(), Some("user-01_x"));
        assert_eq!(decode_cursor("!!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("a.b")), None);
    }

    #[test]
    fn limits_are_integers_in_range() {
        assert_eq!(parse_limit("1"), Some(1));
        assert_eq!(parse_limit("1000"), Some(1000));
        for bad in [
            "0",
            "1001",
            "-1",
            "+5",
            "1.0",
            "abc",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_limit(bad), None, "{bad}");
        }
    }
}
