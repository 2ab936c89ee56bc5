//! One line of an export, read back and checked with the rules a write through the
//! server follows (`envelope::decode_put`, the entity and key rules, the limits), plus
//! the members only an export line has: `encoding`, `created_at` and `expires_at`.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use crate::envelope::{self, PutFields, PutSpec, TTL_SECONDS_MAX, defect_problem};
use crate::json::{self, ParseError, Value};
use crate::names::{Entity, entity_problem, is_valid_key, key_problem};
use crate::problem::{ErrorCode, Problem};
use crate::state::Limits;

/// Members of a line besides the write fields `value`, `metadata` and `content_type`.
const LINE_ONLY_MEMBERS: [&str; 5] = ["entity", "key", "encoding", "created_at", "expires_at"];

/// A checked line.
#[derive(Clone, Debug)]
pub struct Record {
    /// Namespace.
    pub entity: Entity,
    /// Key inside it.
    pub key: String,
    /// The value to store, its kind, content type and metadata (`ttl_seconds` unused:
    /// a line carries `expires_at` instead).
    pub spec: PutSpec,
    /// The `value` member as compact JSON, for a bulk operation.
    pub value_json: Vec<u8>,
    /// `created_at`, ms since the Unix epoch; `None` = the time of the import.
    pub created_at_ms: Option<u64>,
    /// `expires_at`, ms since the Unix epoch; `None` = never.
    pub expires_at_ms: Option<u64>,
}

impl Record {
    /// True when the record's key has expired by `now_ms` (it is then not imported,
    /// as an export leaves out expired keys).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// Checks one line; every problem found is returned, as the server reports every
/// problem of a request together.
pub fn decode_line(bytes: &[u8], limits: &Limits, now_ms: u64) -> Result<Record, Vec<Problem>> {
    let parsed = json::parse(bytes).map_err(|e| vec![syntax_problem(&e)])?;
    let mut problems: Vec<Problem> = parsed
        .defects
        .iter()
        .map(|d| defect_problem(d, ""))
        .collect();
    let Value::Object(members) = &parsed.value else {
        return Err(vec![Problem::new(
            ErrorCode::InvalidBody,
            format!(
                "a line must be a JSON object like an export writes; got {}",
                parsed.value.type_name()
            ),
        )]);
    };
    let mut unknown = Vec::new();
    let mut fields = PutFields::collect(members, &LINE_ONLY_MEMBERS, &mut unknown);
    // A line gives `expires_at`; a `ttl` is refused as unknown, not also checked.
    if fields.ttl.take().is_some() {
        unknown.push("ttl");
    }
    for name in unknown {
        problems.push(unknown_member(name));
    }
    let entity = text_member(&parsed.value, "entity").and_then(Entity::parse);
    if entity.is_none() {
        problems.push(entity_problem(Some("/entity".to_owned())));
    }
    let key = text_member(&parsed.value, "key").filter(|k| is_valid_key(k));
    if key.is_none() {
        problems.push(key_problem(Some("/key".to_owned())));
    }
    // Lines are read into a reused buffer: values are copied out of it.
    let spec = envelope::decode_put(fields, "", limits, &Bytes::new(), &mut problems);
    if let Some(spec) = &spec {
        check_encoding(parsed.value.get("encoding"), spec, &mut problems);
    }
    let created_at_ms = time_member(&parsed.value, "created_at", &mut problems);
    let expires_at_ms = time_member(&parsed.value, "expires_at", &mut problems);
    check_expiry(expires_at_ms, now_ms, &mut problems);
    match (entity, key, spec, problems.is_empty()) {
        (Some(entity), Some(key), Some(spec), true) => Ok(Record {
            entity,
            key: key.to_owned(),
            spec,
            value_json: fields.value.map(json::to_compact).unwrap_or_default(),
            created_at_ms,
            expires_at_ms,
        }),
        _ => Err(problems),
    }
}

/// A human sentence for a line's problems: `/pointer: detail`, joined.
pub fn describe(problems: &[Problem]) -> String {
    let parts: Vec<String> = problems
        .iter()
        .map(|p| match &p.pointer {
            Some(pointer) if !pointer.is_empty() => format!("{pointer}: {}", p.detail),
            _ => p.detail.clone(),
        })
        .collect();
    parts.join("; ")
}

fn syntax_problem(err: &ParseError) -> Problem {
    let detail = match err {
        ParseError::Syntax { offset, reason } => {
            format!("the line is not valid JSON: {reason} at byte {offset}")
        }
        ParseError::TooDeep => err.to_string(),
    };
    Problem::new(ErrorCode::MalformedRequest, detail)
}

fn unknown_member(name: &str) -> Problem {
    let mut pointer = String::from("/");
    json::push_pointer_token(&mut pointer, name);
    let shown: String = name.chars().take(64).collect();
    Problem::at(
        ErrorCode::InvalidBody,
        pointer,
        format!(
            "unknown field `{shown}`; a line has entity, key, value, encoding, content_type, \
             metadata, created_at and expires_at"
        ),
    )
}

fn text_member<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    match object.get(name) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// `encoding` is optional; when given it must be the one GET shows for the content
/// type, so a line edited into inconsistency is refused rather than guessed at.
fn check_encoding(value: Option<&Value>, spec: &PutSpec, problems: &mut Vec<Problem>) {
    let expected = spec.kind.encoding();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == expected => {}
        Some(other) => {
            let got = match other {
                Value::String(s) => format!("`{}`", s.chars().take(32).collect::<String>()),
                _ => other.type_name().to_owned(),
            };
            problems.push(Problem::at(
                ErrorCode::InvalidValue,
                "/encoding",
                format!(
                    "a value of content type `{}` has encoding `{expected}`; got {got}",
                    spec.content_type
                ),
            ));
        }
    }
}

/// A timestamp member: RFC 3339 UTC (`2026-11-26T09:14:43Z`) or `null`/absent.
fn time_member(object: &Value, name: &str, problems: &mut Vec<Problem>) -> Option<u64> {
    let value = object.get(name)?;
    let parsed = match value {
        Value::Null => return None,
        Value::String(s) => humantime::parse_rfc3339(s)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .filter(|d| *d >= Duration::from_secs(1))
            .and_then(|d| u64::try_from(d.as_millis()).ok()),
        _ => None,
    };
    if parsed.is_none() {
        problems.push(Problem::at(
            ErrorCode::InvalidBody,
            format!("/{name}"),
            format!("{name} must be an RFC 3339 UTC time like 2026-11-26T09:14:43Z, or null"),
        ));
    }
    parsed
}

/// An expiry may be at most the longest ttl away, as a write through the server.
fn check_expiry(expires_at_ms: Option<u64>, now_ms: u64, problems: &mut Vec<Problem>) {
    let latest_ms = now_ms.saturating_add(TTL_SECONDS_MAX * 1000);
    if expires_at_ms.is_some_and(|at| at > latest_ms) {
        problems.push(Problem::at(
            ErrorCode::InvalidTtl,
            "/expires_at",
            format!(
                "expires_at may be at most {TTL_SECONDS_MAX} seconds (the longest ttl) from now"
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_795_684_483_000; // 2026-11-26T09:14:43Z

    fn decode(line: &str) -> Result<Record, Vec<(ErrorCode, Option<String>)>> {
        decode_line(line.as_bytes(), &Limits::default(), NOW_MS)
            .map_err(|ps| ps.into_iter().map(|p| (p.code, p.pointer)).collect())
    }

    #[test]
    fn an_export_line_reads_back() {
        let record = decode(
            r#"{"entity":"user","key":"a","value":"AAE=","encoding":"base64","content_type":"image/png","metadata":{"m":1},"created_at":"2026-11-26T09:00:00Z","expires_at":"2026-11-26T10:00:00Z"}"#,
        )
        .expect("valid line");
        assert_eq!(record.entity, Entity::User);
        assert_eq!(&record.spec.value[..], &[0, 1]);
        assert_eq!(record.spec.metadata.as_deref(), Some(&br#"{"m":1}"#[..]));
        assert_eq!(record.created_at_ms, Some(NOW_MS - 883_000));
        assert_eq!(record.expires_at_ms, Some(NOW_MS + 2_717_000));
        assert!(!record.is_expired(NOW_MS));
    }

    #[test]
    fn every_problem_of_a_line_is_named() {
        let problems = decode(
            r#"{"entity":"users","key":"a.b","value":1,"encoding":"text","ttl":60,"created_at":"yesterday","expires_at":"2036-01-01T00:00:00Z"}"#,
        )
        .expect_err("invalid line");
        let pointers: Vec<&str> = problems.iter().filter_map(|p| p.1.as_deref()).collect();
        assert_eq!(
            pointers,
            vec![
                "/ttl",
                "/entity",
                "/key",
                "/encoding",
                "/created_at",
                "/expires_at"
            ]
        );
    }

    #[test]
    fn syntax_and_shape_errors_are_reported() {
        assert_eq!(
            decode("{\"entity\":").err().map(|p| p[0].0),
            Some(ErrorCode::MalformedRequest)
        );
        assert_eq!(
            decode("[1]").err().map(|p| p[0].0),
            Some(ErrorCode::InvalidBody)
        );
        let dup = decode(r#"{"entity":"user","key":"a","value":{"x":1,"x":2}}"#);
        assert_eq!(dup.err().map(|p| p[0].0), Some(ErrorCode::InvalidValue));
    }
}
