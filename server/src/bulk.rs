//! `POST /v1/bulk`: many writes, validated together, applied as one atomic batch.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;

use crate::body;
use crate::envelope::{self, PutFields, defect_problem};
use crate::json::{self, Value};
use crate::kv::{syntax_problem, unknown_field};
use crate::media;
use crate::mutation::{self, Outcome, WriteOp};
use crate::names::{Entity, entity_problem, is_valid_key, key_problem};
use crate::plain;
use crate::problem::{ApiError, ErrorCode, Problem};
use crate::query::Query;
use crate::reply::{JsonWriter, json_response};
use crate::state::{AppState, BULK_BODY_BYTES_MAX, BULK_OPS_MAX, Limits};
use crate::timefmt::rfc3339_seconds;

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
    // The common shape in one pass; anything else (and every invalid body) through the
    // general decoder, which names every problem. A body the one-pass decoder takes has
    // none, so a query problem alone is still reported in full.
    let ops = plain::bulk(&bytes, &state.limits)
        .or_else(|| decode_bulk(&bytes, &state.limits, &mut problems));
    let (Some(ops), true) = (ops, problems.is_empty()) else {
        return Err(ApiError::new(path, problems));
    };
    let outcomes = mutation::apply_unconditional(&state, path, &ops).await?;
    let mut w = JsonWriter::ok_data(ops.len() * 160);
    w.key("results");
    write_results(w.value_buffer(), &ops, &outcomes).map_err(|e| mutation::internal(path, &e))?;
    Ok(json_response(StatusCode::OK, w.finish()))
}

/// Writes the `results` array: the members of each result as
/// [`crate::kv::write_put_result`] writes them for a single PUT (a test holds the two to the
/// same bytes), with the literal parts written as literals and a run of equal
/// content types escaped once, since a response holds thousands of results.
fn write_results(
    out: &mut Vec<u8>,
    ops: &[WriteOp],
    outcomes: &[Outcome],
) -> Result<(), &'static str> {
    let mut content_type: (&str, Vec<u8>) = ("", b"\"\"".to_vec());
    let mut digits = itoa::Buffer::new();
    out.push(b'[');
    for (i, (op, outcome)) in ops.iter().zip(outcomes).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match (op, outcome) {
            (WriteOp::Put { entity, key, spec }, Outcome::Put(done)) => {
                out.extend_from_slice(b"{\"op\":\"put\",\"entity\":");
                json::write_string(entity.as_str(), out);
                out.extend_from_slice(b",\"key\":");
                json::write_string(key, out);
                out.extend_from_slice(if done.created {
                    b",\"created\":true,\"expires_at\":"
                } else {
                    b",\"created\":false,\"expires_at\":"
                });
                match done.expires_at_ms {
                    Some(ms) => json::write_string(&rfc3339_seconds(ms), out),
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b",\"content_type\":");
                if content_type.0 != spec.content_type {
                    content_type.0 = &spec.content_type;
                    content_type.1.clear();
                    json::write_string(&spec.content_type, &mut content_type.1);
                }
                out.extend_from_slice(&content_type.1);
                out.extend_from_slice(b",\"size_bytes\":");
                out.extend_from_slice(digits.format(spec.value.len()).as_bytes());
                out.extend_from_slice(b",\"version\":");
                out.extend_from_slice(digits.format(done.version).as_bytes());
                out.push(b'}');
            }
            (WriteOp::Delete { entity, key }, Outcome::Delete { deleted, version }) => {
                out.extend_from_slice(b"{\"op\":\"delete\",\"entity\":");
                json::write_string(entity.as_str(), out);
                out.extend_from_slice(b",\"key\":");
                json::write_string(key, out);
                out.extend_from_slice(if *deleted {
                    b",\"deleted\":true,\"version\":"
                } else {
                    b",\"deleted\":false,\"version\":"
                });
                out.extend_from_slice(digits.format(*version).as_bytes());
                out.push(b'}');
            }
            _ => return Err("bulk outcome out of order"),
        }
    }
    out.push(b']');
    Ok(())
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
fn decode_bulk<'a>(
    bytes: &'a Bytes,
    limits: &Limits,
    problems: &mut Vec<Problem>,
) -> Option<Vec<WriteOp<'a>>> {
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
    const BASE: &str = "/operations/";
    let mut base = String::with_capacity(24);
    base.push_str(BASE);
    let mut digits = itoa::Buffer::new();
    let mut ops = Vec::with_capacity(list.len());
    let mut valid = true;
    for (i, op) in list.iter().enumerate() {
        base.truncate(BASE.len());
        base.push_str(digits.format(i));
        match decode_op(op, &base, limits, bytes, problems) {
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
fn decode_op<'a>(
    op: &Value<'a>,
    base: &str,
    limits: &Limits,
    body: &Bytes,
    problems: &mut Vec<Problem>,
) -> Option<WriteOp<'a>> {
    let Value::Object(members) = op else {
        problems.push(Problem::at(
            ErrorCode::InvalidBulk,
            base,
            format!("an operation must be an object; got {}", op.type_name()),
        ));
        return None;
    };
    let kind = match op.get("op") {
        Some(Value::String(s)) if s == "put" || s == "delete" => s.as_ref(),
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
                .map(|(n, _)| n.as_ref())
                .filter(|n| !["op", "entity", "key"].contains(n)),
        );
        (None, "op, entity and key")
    };
    for name in unknown {
        let mut problem = unknown_field(name, base);
        problem.detail = format!("unknown field in a {kind} operation; its fields are {allowed}");
        problems.push(problem);
    }
    let spec = put.map(|fields| envelope::decode_put(fields, base, limits, body, problems));
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
fn op_target<'a>(
    op: &Value<'a>,
    base: &str,
    problems: &mut Vec<Problem>,
) -> Option<(Entity, Cow<'a, str>)> {
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
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn problems_of(body: &str) -> Vec<(u16, Option<String>)> {
        let mut problems = Vec::new();
        let body = Bytes::copy_from_slice(body.as_bytes());
        let _ = decode_bulk(&body, &Limits::default(), &mut problems);
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

    /// The literal-writing result writer gives the bytes of the generic one (the
    /// single PUT's `write_put_result`), for every kind of result.
    #[test]
    fn bulk_results_are_written_as_a_single_put_writes_them() {
        use crate::kv::write_put_result;
        use crate::mutation::PutOutcome;
        let body = Bytes::from_static(
            br#"{"operations": [
            {"op": "put", "entity": "user", "key": "a", "value": {"x": 1}, "ttl": 120},
            {"op": "put", "entity": "event", "key": "b", "value": "t"},
            {"op": "put", "entity": "user", "key": "c", "value": "AAE", "content_type": "image/png; x=\"q\\\"\""},
            {"op": "put", "entity": "user", "key": "d", "value": "AAE", "content_type": "image/png; x=\"q\\\"\""},
            {"op": "delete", "entity": "event", "key": "e"}
        ]}"#,
        );
        let mut problems = Vec::new();
        let ops = decode_bulk(&body, &Limits::default(), &mut problems).expect("valid");
        assert!(problems.is_empty(), "{problems:?}");
        let outcomes: Vec<Outcome> = (0..ops.len() as u64)
            .map(|i| match &ops[i as usize] {
                WriteOp::Put { spec, .. } => Outcome::Put(PutOutcome {
                    created: i % 2 == 0,
                    version: 1_000_000_000_000 + i,
                    expires_at_ms: spec.ttl_seconds.map(|t| 1_795_684_483_999 + t * 1000),
                }),
                WriteOp::Delete { .. } => Outcome::Delete {
                    deleted: true,
                    version: 7,
                },
            })
            .collect();
        let mut fast = Vec::new();
        write_results(&mut fast, &ops, &outcomes).expect("in order");

        let mut w = JsonWriter::object(0);
        w.key("results").begin_array();
        for (op, outcome) in ops.iter().zip(&outcomes) {
            w.begin_object();
            match (op, *outcome) {
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
                _ => panic!("out of order"),
            }
            w.end_object();
        }
        w.end_array();
        let generic = w.finish();
        let expected = &generic[b"{\"results\":".len()..generic.len() - 1];
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(expected)
        );
        let parsed: serde_json::Value = serde_json::from_slice(&fast).expect("JSON");
        assert_eq!(parsed[2]["content_type"], "image/png; x=\"q\\\"\"");
    }

    /// JSON whitespace, sometimes none.
    pub(crate) fn ws() -> impl Strategy<Value = &'static str> {
        prop_oneof![4 => Just(""), 1 => Just(" "), 1 => Just("\n  "), 1 => Just("\t\r\n")]
    }

    /// A valid member of a put or delete, as (name, JSON text).
    pub(crate) fn valid_member(name: &'static str) -> BoxedStrategy<(String, String)> {
        let text: BoxedStrategy<String> = match name {
            // Every entity there is: one the one-pass decoder does not know fails
            // `common_bodies_take_the_one_pass_decoder`.
            "entity" => prop::sample::select(Entity::ALL.to_vec())
                .prop_map(|e| format!("\"{}\"", e.as_str()))
                .boxed(),
            "key" => "[A-Za-z0-9_-]{1,12}"
                .prop_map(|k| format!("\"{k}\""))
                .boxed(),
            "value" => prop_oneof!["[ -!#-\\[\\]-~]{0,40}", "[a-zé€😀 ]{0,8}"]
                .prop_map(|v| format!("\"{v}\""))
                .boxed(),
            _ => prop_oneof![Just(60u64), Just(TTL_MAX), 61u64..100_000]
                .prop_map(|t| t.to_string())
                .boxed(),
        };
        text.prop_map(move |t| (name.to_owned(), t)).boxed()
    }

    const TTL_MAX: u64 = crate::envelope::TTL_SECONDS_MAX;

    /// A valid operation of the common shape, its members in any order.
    fn common_op() -> impl Strategy<Value = Vec<(String, String)>> {
        prop_oneof![
            (
                valid_member("entity"),
                valid_member("key"),
                valid_member("value"),
                proptest::option::of(valid_member("ttl"))
            )
                .prop_map(|(e, k, v, t)| {
                    let mut members = vec![("op".to_owned(), "\"put\"".to_owned()), e, k, v];
                    members.extend(t);
                    members
                }),
            (valid_member("entity"), valid_member("key")).prop_map(|(e, k)| vec![
                ("op".to_owned(), "\"delete\"".to_owned()),
                e,
                k
            ]),
        ]
        .prop_shuffle()
    }

    /// Names and values just off the common shape or invalid: escapes, other types,
    /// other members, out-of-range numbers, bad keys and entities.
    pub(crate) fn odd_member() -> impl Strategy<Value = (String, String)> {
        let name = prop_oneof![
            Just("op"),
            Just("entity"),
            Just("key"),
            Just("value"),
            Just("ttl"),
            Just("content_type"),
            Just("metadata"),
            Just("x"),
            Just("v\\u0061lue"),
            Just("k\\u0065y"),
        ];
        let text = prop_oneof![
            Just("\"put\""),
            Just("\"delete\""),
            Just("\"merge\""),
            Just("\"pu\\u0074\""),
            Just("\"users\""),
            Just("\"a.b\""),
            Just("\"\""),
            Just("\"k\\\"y\""),
            Just("\"\\ud800\""),
            Just("\"text/plain\""),
            Just("\"application/octet-stream\""),
            Just("\"AAE\""),
            Just("59"),
            Just("0"),
            Just("060"),
            Just("60.0"),
            Just("6e1"),
            Just("-60"),
            Just("31536001"),
            Just("123456789012345678901"),
            Just("null"),
            Just("true"),
            Just("[1]"),
            Just("{\"a\": 1}"),
            Just("{\"a\": 1, \"a\": 2}"),
            Just("\"x\ty\""),
        ];
        (name, text).prop_map(|(n, t)| (n.to_owned(), t.to_owned()))
    }

    /// What may follow a body: nothing mostly, or a stray byte.
    pub(crate) fn tail() -> impl Strategy<Value = &'static str> {
        prop_oneof![4 => Just(""), 1 => Just(","), 1 => Just("x"), 1 => Just("}")]
    }

    /// The default limits, or with values of at most 8 bytes.
    pub(crate) fn value_limit(tiny_values: bool) -> Limits {
        Limits {
            value_bytes_max: if tiny_values {
                8
            } else {
                Limits::default().value_bytes_max
            },
            ..Limits::default()
        }
    }

    /// An operation of the common shape, sometimes changed (see [`near`]).
    fn near_common_op() -> impl Strategy<Value = Vec<(String, String)>> {
        near(common_op())
    }

    /// The members of `common` objects, sometimes changed: a member replaced, added,
    /// dropped or given twice, or its value swapped for an odd one.
    pub(crate) fn near(
        common: impl Strategy<Value = Vec<(String, String)>>,
    ) -> impl Strategy<Value = Vec<(String, String)>> {
        (
            common,
            0usize..6,
            any::<prop::sample::Index>(),
            odd_member(),
        )
            .prop_map(|(mut members, change, at, odd)| {
                let i = at.index(members.len());
                match change {
                    0 => members[i] = odd,
                    1 => members.insert(i, odd),
                    2 => {
                        members.remove(i);
                    }
                    3 => {
                        let again = members[i].clone();
                        members.push(again);
                    }
                    4 => members[i].1 = odd.1,
                    _ => {}
                }
                members
            })
    }

    /// A bulk body of `ops`, with whitespace from `gaps` between its tokens.
    fn body_of(ops: &[Vec<(String, String)>], gaps: &[&str]) -> String {
        let mut gap = gaps.iter().cycle();
        let mut g = || *gap.next().unwrap_or(&"");
        let mut out = format!("{}{{{}\"operations\"{}:{}[", g(), g(), g(), g());
        for (i, op) in ops.iter().enumerate() {
            if i > 0 {
                out.push_str(&format!("{},{}", g(), g()));
            }
            push_object(&mut out, op, &mut g);
        }
        out.push_str(&format!("{}]{}}}{}", g(), g(), g()));
        out
    }

    /// Appends an object of `members` (names and their JSON texts), with whitespace
    /// from `g` before and between its tokens.
    pub(crate) fn push_object<'g>(
        out: &mut String,
        members: &[(String, String)],
        g: &mut impl FnMut() -> &'g str,
    ) {
        out.push_str(&format!("{}{{", g()));
        for (j, (name, text)) in members.iter().enumerate() {
            let comma = if j > 0 { "," } else { "" };
            out.push_str(&format!(
                "{comma}{}\"{name}\"{}:{}{text}{}",
                g(),
                g(),
                g(),
                g()
            ));
        }
        out.push('}');
    }

    fn general<'a>(body: &'a Bytes, limits: &Limits) -> Option<Vec<WriteOp<'a>>> {
        let mut problems = Vec::new();
        let ops = decode_bulk(body, limits, &mut problems);
        ops.filter(|_| problems.is_empty())
    }

    proptest! {
        /// The one-pass decoder takes every valid body of the common shape, and gives
        /// the general decoder's operations.
        #[test]
        fn common_bodies_take_the_one_pass_decoder(
            ops in prop::collection::vec(common_op(), 1..12),
            gaps in prop::collection::vec(ws(), 1..16),
        ) {
            let body = Bytes::from(body_of(&ops, &gaps));
            let limits = Limits::default();
            let fast = plain::bulk(&body, &limits);
            prop_assert!(fast.is_some(), "declined {:?}", body);
            prop_assert_eq!(fast, general(&body, &limits));
        }

        /// Whatever the one-pass decoder accepts, the general decoder accepts without a
        /// problem and decodes to the same operations; it declines the rest.
        #[test]
        fn the_one_pass_decoder_accepts_only_what_the_general_one_does(
            ops in prop::collection::vec(near_common_op(), 1..6),
            gaps in prop::collection::vec(ws(), 1..16),
            tiny_values in any::<bool>(),
            tail in tail(),
        ) {
            let mut body = body_of(&ops, &gaps);
            body.push_str(tail);
            let body = Bytes::from(body);
            let limits = value_limit(tiny_values);
            if let Some(fast) = plain::bulk(&body, &limits) {
                prop_assert_eq!(Some(fast), general(&body, &limits), "{:?}", body);
            }
        }
    }

    #[test]
    fn the_one_pass_decoder_declines_bodies_off_its_shape() {
        let op = r#"{"op":"delete","entity":"user","key":"k"}"#;
        let limits = Limits::default();
        for body in [
            format!(r#"{{"operations":[{op}]}}"#),
            format!(" {{ \"operations\" : [ {op} ] }} \n"),
        ] {
            assert!(plain::bulk(&Bytes::from(body), &limits).is_some());
        }
        let most = format!(r#"{{"operations":[{}]}}"#, vec![op; BULK_OPS_MAX].join(","));
        assert!(plain::bulk(&Bytes::from(most), &limits).is_some());
        for body in [
            r#"{"operations":[]}"#.to_owned(),
            format!(r#"{{"operations":[{}]}}"#, vec![op; BULK_OPS_MAX + 1].join(",")),
            format!(r#"{{"operations":[{op}],"x":1}}"#),
            format!(r#"{{"x":1,"operations":[{op}]}}"#),
            format!(r#"{{"operations":[{op}]}}{{}}"#),
            format!(r#"{{"operations":[{op},]}}"#),
            format!(r#"{{"operations":[{op}]"#),
            format!(r#"{{"operation\u0073":[{op}]}}"#),
            format!("{{\"operations\":[{op}]}}\u{feff}"),
            r#"{"operations":[{"op":"put","entity":"user","key":"k"}]}"#.to_owned(),
            r#"{"operations":[{"op":"put","entity":"user","key":"k","value":"\u00e9"}]}"#.to_owned(),
            r#"{"operations":[{"entity":"user","key":"k","value":"v"}]}"#.to_owned(),
            // 2^64 + 60: must not wrap around to 60.
            r#"{"operations":[{"op":"put","entity":"user","key":"k","value":"v","ttl":18446744073709551676}]}"#.to_owned(),
        ] {
            let bytes = Bytes::from(body.clone());
            assert_eq!(plain::bulk(&bytes, &limits), None, "{body}");
        }
        let mut invalid_utf8 = format!(r#"{{"operations":[{op}]}}"#).into_bytes();
        invalid_utf8.push(0xff);
        assert_eq!(plain::bulk(&Bytes::from(invalid_utf8), &limits), None);
    }

    /// The key and value are views of the body, not copies.
    #[test]
    fn the_one_pass_decoder_shares_the_body() {
        let body = Bytes::from_static(
            br#"{"operations":[{"op":"put","entity":"event","key":"k","value":"hello","ttl":60}]}"#,
        );
        let ops = plain::bulk(&body, &Limits::default()).expect("common shape");
        let [WriteOp::Put { entity, key, spec }] = ops.as_slice() else {
            panic!("{ops:?}");
        };
        assert_eq!((*entity, key.as_ref()), (Entity::Event, "k"));
        assert!(matches!(key, Cow::Borrowed(_)), "the key is copied");
        assert_eq!(
            (&spec.value[..], spec.ttl_seconds),
            (&b"hello"[..], Some(60))
        );
        assert!(body.as_ptr_range().contains(&spec.value.as_ptr()));
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
