//! `POST /v1/bulk`: many writes, validated together, applied as one atomic batch.

use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;

use crate::body;
use crate::envelope::{self, PutFields, defect_problem};
use crate::json::{self, Value};
use crate::kv::{syntax_problem, unknown_field, write_put_result};
use crate::media;
use crate::mutation::{self, Outcome, WriteOp};
use crate::names::{Entity, entity_problem, is_valid_key, key_problem};
use crate::problem::{ApiError, ErrorCode, Problem};
use crate::query::Query;
use crate::reply::{JsonWriter, json_response};
use crate::state::{AppState, BULK_BODY_BYTES_MAX, BULK_OPS_MAX, Limits};

/// `POST /v1/bulk`.
pub async fn bulk(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let path = uri.path();
    let mut problems = Vec::new();
    if let Some(problem) = media_problem(&headers) {
        return Err(ApiError::new(path, vec![problem]));
    }
    Query::parse(uri.query(), &[], &mut problems);
    let bytes = match body::read(body, &headers, BULK_BODY_BYTES_MAX).await {
        Ok(bytes) => bytes,
        Err(problem) => return Err(ApiError::new(path, vec![problem])),
    };
    let ops = decode_bulk(&bytes, &state.limits, &mut problems);
    let (Some(ops), true) = (ops, problems.is_empty()) else {
        return Err(ApiError::new(path, problems));
    };
    let outcomes = mutation::apply_unconditional(&state, path, &ops).await?;
    let mut w = JsonWriter::ok_data(ops.len() * 160);
    w.key("results").begin_array();
    for (op, outcome) in ops.iter().zip(outcomes) {
        w.begin_object();
        match (op, outcome) {
            (WriteOp::Put { entity, key, spec }, Outcome::Put(done)) => {
                w.key("op").str("put");
                write_put_result(&mut w, *entity, key, spec, done);
            }
            (WriteOp::Delete { entity, key }, Outcome::Delete { deleted, version }) => {
                w.key("op").str("delete");
                w.key("entity").str(entity.as_str());
                w.key("key").str(key);
                w.key("deleted").bool(deleted);
                w.key("version").u64(version);
            }
            _ => return Err(mutation::internal(path, &"bulk outcome out of order")),
        }
        w.end_object();
    }
    w.end_array();
    Ok(json_response(StatusCode::OK, w.finish()))
}

/// Bulk bodies are JSON only: `application/json` (any params) or no Content-Type.
fn media_problem(headers: &HeaderMap) -> Option<Problem> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let single = headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .nth(1)
        .is_none();
    let is_json = single
        && value
            .to_str()
            .ok()
            .and_then(|text| media::parse(text).ok())
            .is_some_and(|mt| mt.is("application", "json"));
    (!is_json).then(|| {
        Problem::new(
            ErrorCode::UnsupportedMediaType,
            "a bulk request is JSON: send `Content-Type: application/json` with a body like {\"operations\": […]}",
        )
    })
}

/// Checks the whole body; every problem of every operation is pushed.
fn decode_bulk(bytes: &[u8], limits: &Limits, problems: &mut Vec<Problem>) -> Option<Vec<WriteOp>> {
    let parsed = match json::parse(bytes) {
        Ok(parsed) => parsed,
        Err(err) => {
            problems.push(syntax_problem(&err));
            return None;
        }
    };
    for defect in &parsed.defects {
        problems.push(defect_problem(defect, &operation_base(&defect.pointer)));
    }
    let Value::Object(members) = &parsed.value else {
        problems.push(Problem::new(
            ErrorCode::InvalidBody,
            "the body must be a JSON object like {\"operations\": […]}",
        ));
        return None;
    };
    for (name, _) in members.iter().filter(|(n, _)| n != "operations") {
        let mut pointer = String::from("/");
        json::push_pointer_token(&mut pointer, name);
        problems.push(Problem::at(
            ErrorCode::InvalidBody,
            pointer,
            "unknown field; a bulk body has only `operations`",
        ));
    }
    let list = match parsed.value.get("operations") {
        Some(Value::Array(list)) if (1..=BULK_OPS_MAX).contains(&list.len()) => list,
        _ => {
            problems.push(Problem::at(
                ErrorCode::InvalidBulk,
                "/operations",
                format!("operations must be a list of 1 to {BULK_OPS_MAX} operations"),
            ));
            return None;
        }
    };
    // One buffer for every operation's pointer: a valid operation allocates none.
    let mut base = String::with_capacity(24);
    let mut ops = Vec::with_capacity(list.len());
    let mut valid = true;
    for (i, op) in list.iter().enumerate() {
        base.clear();
        let _ = write!(base, "/operations/{i}");
        match decode_op(op, &base, limits, problems) {
            Some(op) => ops.push(op),
            None => valid = false,
        }
    }
    valid.then_some(ops)
}

/// The pointer of the operation a defect is in (`/operations/3`), or `""` outside them.
fn operation_base(pointer: &str) -> String {
    let Some(rest) = pointer.strip_prefix("/operations/") else {
        return String::new();
    };
    let index = rest.split('/').next().unwrap_or_default();
    format!("/operations/{index}")
}

/// Checks one operation at `base`.
fn decode_op(
    op: &Value,
    base: &str,
    limits: &Limits,
    problems: &mut Vec<Problem>,
) -> Option<WriteOp> {
    let Value::Object(members) = op else {
        problems.push(Problem::at(
            ErrorCode::InvalidBulk,
            base,
            format!("an operation must be an object; got {}", op.type_name()),
        ));
        return None;
    };
    let kind = match op.get("op") {
        Some(Value::String(s)) if s == "put" || s == "delete" => s.as_str(),
        _ => {
            problems.push(Problem::at(
                ErrorCode::InvalidBulk,
                format!("{base}/op"),
                "op must be \"put\" or \"delete\"",
            ));
            return None;
        }
    };
    let target = op_target(op, base, problems);
    let mut unknown = Vec::new();
    let (put, allowed) = if kind == "put" {
        let fields = PutFields::collect(members, &["op", "entity", "key"], &mut unknown);
        (
            Some(fields),
            "op, entity, key, value, ttl, metadata and content_type",
        )
    } else {
        unknown.extend(
            members
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| !["op", "entity", "key"].contains(n)),
        );
        (None, "op, entity and key")
    };
    for name in unknown {
        let mut problem = unknown_field(name, base);
        problem.detail = format!("unknown field in a {kind} operation; its fields are {allowed}");
        problems.push(problem);
    }
    let spec = put.map(|fields| envelope::decode_put(fields, base, limits, problems));
    let (entity, key) = target?;
    match spec {
        None => Some(WriteOp::Delete { entity, key }),
        Some(spec) => Some(WriteOp::Put {
            entity,
            key,
            spec: spec?,
        }),
    }
}

/// The entity and key of an operation, each checked against its rule.
fn op_target(op: &Value, base: &str, problems: &mut Vec<Problem>) -> Option<(Entity, String)> {
    let entity = match op.get("entity") {
        Some(Value::String(s)) => Entity::parse(s),
        _ => None,
    };
    if entity.is_none() {
        problems.push(entity_problem(Some(format!("{base}/entity"))));
    }
    let key = match op.get("key") {
        Some(Value::String(s)) if is_valid_key(s) => Some(s.clone()),
        _ => None,
    };
    if key.is_none() {
        problems.push(key_problem(Some(format!("{base}/key"))));
    }
    Some((entity?, key?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(body: &str) -> Vec<(u16, Option<String>)> {
        let mut problems = Vec::new();
        let _ = decode_bulk(body.as_bytes(), &Limits::default(), &mut problems);
        problems
            .into_iter()
            .map(|p| (p.code.code(), p.pointer))
            .collect()
    }

    #[test]
    fn every_bad_operation_is_named_by_its_pointer() {
        let body = r#"{"operations": [
            {"op": "put", "entity": "user", "key": "ok", "value": 1},
            {"op": "put", "entity": "users", "key": "a.b", "value": 1, "ttl": 5},
            {"op": "delete", "entity": "user", "key": "k", "value": 1},
            {"op": "merge", "entity": "user", "key": "k"},
            {"op": "put", "entity": "user", "key": "k", "value": {"a": 1, "a": 2}}
        ]}"#;
        assert_eq!(
            problems_of(body),
            vec![
                (1004, Some("/operations/4/value/a".to_owned())),
                (1001, Some("/operations/1/entity".to_owned())),
                (1002, Some("/operations/1/key".to_owned())),
                (1003, Some("/operations/1/ttl".to_owned())),
                (1007, Some("/operations/2/value".to_owned())),
                (1011, Some("/operations/3/op".to_owned())),
            ]
        );
    }

    #[test]
    fn the_operation_list_must_hold_1_to_10000() {
        assert_eq!(problems_of(r#"{"operations": []}"#)[0].0, 1011);
        assert_eq!(problems_of(r#"{"operations": {}}"#)[0].0, 1011);
        assert_eq!(problems_of(r#"{}"#)[0].0, 1011);
        let many = format!(
            "{{\"operations\": [{}]}}",
            vec![r#"{"op":"delete","entity":"user","key":"k"}"#; BULK_OPS_MAX + 1].join(",")
        );
        assert_eq!(problems_of(&many)[0].0, 1011);
        assert_eq!(problems_of(r#"[1]"#)[0].0, 1007);
        assert_eq!(
            problems_of(r#"{"operations": [{"op":"delete","entity":"user","key":"k"}], "x": 1}"#)
                [0]
            .0,
            1007
        );
    }
}
