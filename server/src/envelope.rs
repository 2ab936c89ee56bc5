//! The fields of a write: `value`, `ttl`, `metadata`, `content_type`, checked as API.md
//! says, for the PUT envelope and for bulk `put` operations alike.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use std::borrow::Cow;

use bytes::Bytes;

use crate::json::{self, Defect, DefectKind, Value};
use crate::media::{self, APPLICATION_JSON, Kind, TEXT_UTF8};
use crate::problem::{ErrorCode, Problem};
use crate::state::Limits;

/// Shortest ttl in seconds.
pub const TTL_SECONDS_MIN: u64 = 60;
/// Longest ttl in seconds: one year of 365 days.
pub const TTL_SECONDS_MAX: u64 = 31_536_000;

/// RFC 4648 standard alphabet, padding optional (API.md).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A checked write: the stored bytes and what goes into the meta section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutSpec {
    /// The bytes to store.
    pub value: Bytes,
    /// The value's kind, from its content type.
    pub kind: Kind,
    /// The content type, as given or inferred (the inferred ones are static: no
    /// allocation for the common case).
    pub content_type: Cow<'static, str>,
    /// The metadata object as compact JSON; `None` for absent or `null`.
    pub metadata: Option<Vec<u8>>,
    /// Seconds to live; `None` = never expires.
    pub ttl_seconds: Option<u64>,
}

/// The write fields of one JSON object (envelope or bulk operation).
#[derive(Clone, Copy, Debug, Default)]
pub struct PutFields<'a> {
    /// `value`.
    pub value: Option<&'a Value<'a>>,
    /// `ttl`.
    pub ttl: Option<&'a Value<'a>>,
    /// `metadata`.
    pub metadata: Option<&'a Value<'a>>,
    /// `content_type`.
    pub content_type: Option<&'a Value<'a>>,
}

impl<'a> PutFields<'a> {
    /// Takes the write fields out of `members`; every other name is pushed to `unknown`
    /// unless `extra` allows it.
    pub fn collect(
        members: &'a [(Cow<'a, str>, Value<'a>)],
        extra: &[&str],
        unknown: &mut Vec<&'a str>,
    ) -> PutFields<'a> {
        let mut fields = PutFields::default();
        for (name, value) in members {
            let slot = match name.as_ref() {
                "value" => &mut fields.value,
                "ttl" => &mut fields.ttl,
                "metadata" => &mut fields.metadata,
                "content_type" => &mut fields.content_type,
                other => {
                    if !extra.contains(&other) {
                        unknown.push(other);
                    }
                    continue;
                }
            };
            slot.get_or_insert(value);
        }
        fields
    }
}

/// Checks the fields of a write whose members sit under `base` (`""` for the envelope,
/// `/operations/3` in bulk); pushes every problem and returns the write when none.
/// `body` is the request body the fields were parsed from: a text value without
/// escapes is stored as a view of it, not a copy.
pub fn decode_put(
    fields: PutFields<'_>,
    base: &str,
    limits: &Limits,
    body: &Bytes,
    problems: &mut Vec<Problem>,
) -> Option<PutSpec> {
    let before = problems.len();
    let ttl_seconds = match fields.ttl {
        None | Some(Value::Null) => None,
        Some(v) => check_ttl_json(v, &format!("{base}/ttl"), problems),
    };
    let metadata = fields
        .metadata
        .and_then(|v| check_metadata(v, Some(format!("{base}/metadata")), limits, problems));
    let content_type = match check_content_type(fields.content_type, base, problems) {
        Ok(ct) => ct,
        Err(()) => {
            if matches!(fields.value, None | Some(Value::Null)) {
                problems.push(value_missing(&value_pointer(base)));
            }
            return None;
        }
    };
    let (value, kind, content_type) =
        check_value(fields.value, content_type, base, limits, body, problems)?;
    (problems.len() == before).then_some(PutSpec {
        value,
        kind,
        content_type,
        metadata,
        ttl_seconds,
    })
}

/// Checks `content_type`: absent or `null` is `Ok(None)` (inferred later); a malformed
/// one is a problem.
fn check_content_type(
    value: Option<&Value<'_>>,
    base: &str,
    problems: &mut Vec<Problem>,
) -> Result<Option<(String, Kind)>, ()> {
    let detail = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match media::parse(s) {
            Ok(mt) => {
                return Ok(Some((
                    s.trim_matches([' ', '\t']).to_owned(),
                    mt.value_kind(),
                )));
            }
            Err(e) => e.to_string(),
        },
        Some(other) => format!("content_type must be a string; got {}", other.type_name()),
    };
    problems.push(Problem::at(
        ErrorCode::InvalidContentType,
        format!("{base}/content_type"),
        detail,
    ));
    Err(())
}

/// The pointer of the value of a write at `base`; made only for a problem, so that a
/// valid bulk operation costs no allocation for it.
fn value_pointer(base: &str) -> String {
    format!("{base}/value")
}

fn value_missing(pointer: &str) -> Problem {
    Problem::at(
        ErrorCode::InvalidValue,
        pointer,
        "value is required and must not be null",
    )
}

/// Checks `value` against its kind and turns it into the stored bytes.
fn check_value(
    value: Option<&Value<'_>>,
    content_type: Option<(String, Kind)>,
    base: &str,
    limits: &Limits,
    body: &Bytes,
    problems: &mut Vec<Problem>,
) -> Option<(Bytes, Kind, Cow<'static, str>)> {
    let value = match value {
        None | Some(Value::Null) => {
            problems.push(value_missing(&value_pointer(base)));
            return None;
        }
        Some(v) => v,
    };
    let (content_type, kind) = match (content_type, value) {
        (Some((given, kind)), _) => (Cow::Owned(given), kind),
        (None, Value::String(_)) => (Cow::Borrowed(TEXT_UTF8), Kind::Text),
        (None, _) => (Cow::Borrowed(APPLICATION_JSON), Kind::Json),
    };
    let bytes = match stored_bytes(value, kind, &content_type, base, limits, body) {
        Ok(bytes) => bytes,
        Err(problem) => {
            problems.push(problem);
            return None;
        }
    };
    if bytes.len() as u64 > limits.value_bytes_max {
        problems.push(value_too_large(Some(&value_pointer(base)), limits));
        return None;
    }
    Some((bytes, kind, content_type))
}

/// `part` as a view of `body` when it lies inside it (a string the parser borrowed),
/// else a copy.
fn share_or_copy(body: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if !part.is_empty() && end <= body.len() => body.slice(start..end),
        _ => Bytes::copy_from_slice(part),
    }
}

/// The bytes a value of `kind` is stored as: compact JSON, UTF-8 text or decoded base64.
fn stored_bytes(
    value: &Value<'_>,
    kind: Kind,
    content_type: &str,
    base: &str,
    limits: &Limits,
    body: &Bytes,
) -> Result<Bytes, Problem> {
    let pointer = || value_pointer(base);
    let wrong = |wanted: &str| {
        Problem::at(
            ErrorCode::InvalidValue,
            pointer(),
            format!(
                "a value of content type `{content_type}` must be {wanted}; got {}",
                value.type_name()
            ),
        )
    };
    match (kind, value) {
        (Kind::Json, v) => Ok(Bytes::from(json::to_compact(v))),
        (Kind::Text, Value::String(s)) => Ok(share_or_copy(body, s.as_bytes())),
        (Kind::Text, _) => Err(wrong("a string")),
        (Kind::Binary, Value::String(s)) => {
            if estimated_base64_len(s) > limits.value_bytes_max {
                return Err(value_too_large(Some(&pointer()), limits));
            }
            BASE64.decode(s.as_bytes()).map(Bytes::from).map_err(|_| {
                Problem::at(
                    ErrorCode::InvalidValue,
                    pointer(),
                    format!(
                        "a value of content type `{content_type}` must be base64 (RFC 4648 standard alphabet, padding optional)"
                    ),
                )
            })
        }
        (Kind::Binary, _) => Err(wrong("a base64 string")),
    }
}

/// A lower bound of a base64 string's decoded length (padding may hide up to two
/// bytes): refuses a hopeless value before decoding it.
fn estimated_base64_len(s: &str) -> u64 {
    (s.len() as u64 * 3 / 4).saturating_sub(2)
}

/// The 413 of a stored value over the limit.
pub fn value_too_large(pointer: Option<&str>, limits: &Limits) -> Problem {
    let detail = format!(
        "the stored value may be at most {} bytes",
        limits.value_bytes_max
    );
    match pointer {
        Some(p) => Problem::at(ErrorCode::PayloadTooLarge, p, detail),
        None => Problem::new(ErrorCode::PayloadTooLarge, detail),
    }
}

fn ttl_problem(pointer: Option<&str>, got: &str) -> Problem {
    let detail = format!(
        "ttl must be an integer from {TTL_SECONDS_MIN} to {TTL_SECONDS_MAX} seconds; got {got}"
    );
    match pointer {
        Some(p) => Problem::at(ErrorCode::InvalidTtl, p, detail),
        None => Problem::new(ErrorCode::InvalidTtl, detail),
    }
}

/// Checks a ttl given in JSON: an integer number (not `60.0`, `"60"` or `6e1`) in range.
fn check_ttl_json(value: &Value<'_>, pointer: &str, problems: &mut Vec<Problem>) -> Option<u64> {
    match value {
        Value::Number(text) if is_integer_text(text) => {
            check_ttl_range(text, Some(pointer), problems)
        }
        Value::Number(text) => {
            problems.push(ttl_problem(Some(pointer), &shorten(text)));
            None
        }
        other => {
            problems.push(ttl_problem(Some(pointer), other.type_name()));
            None
        }
    }
}

/// Checks the raw PUT's `?ttl=` text: not `^-?[0-9]+$` is 1008, out of range is 1003.
pub fn check_ttl_query(text: &str, problems: &mut Vec<Problem>) -> Option<u64> {
    if !is_integer_text(text) {
        problems.push(Problem::new(
            ErrorCode::InvalidQuery,
            format!(
                "the ttl query parameter must be an integer number of seconds; got `{}`",
                shorten(text)
            ),
        ));
        return None;
    }
    check_ttl_range(text, None, problems)
}

fn check_ttl_range(text: &str, pointer: Option<&str>, problems: &mut Vec<Problem>) -> Option<u64> {
    match text.parse::<u64>() {
        Ok(n) if (TTL_SECONDS_MIN..=TTL_SECONDS_MAX).contains(&n) => Some(n),
        _ => {
            problems.push(ttl_problem(pointer, &shorten(text)));
            None
        }
    }
}

/// `^-?[0-9]+$`.
fn is_integer_text(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// At most 32 characters of user input in a detail.
fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(32).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Checks metadata: an object (returned as compact JSON) or `null` (`None`), at most
/// the limit in compact bytes.
pub fn check_metadata(
    value: &Value<'_>,
    pointer: Option<String>,
    limits: &Limits,
    problems: &mut Vec<Problem>,
) -> Option<Vec<u8>> {
    let problem = |detail: String| match &pointer {
        Some(p) => Problem::at(ErrorCode::InvalidMetadata, p.clone(), detail),
        None => Problem::new(ErrorCode::InvalidMetadata, detail),
    };
    match value {
        Value::Null => None,
        Value::Object(_) => {
            let compact = json::to_compact(value);
            if compact.len() > limits.metadata_bytes_max {
                problems.push(problem(format!(
                    "metadata may be at most {} bytes as compact JSON; got {}",
                    limits.metadata_bytes_max,
                    compact.len()
                )));
                return None;
            }
            Some(compact)
        }
        other => {
            problems.push(problem(format!(
                "metadata must be a JSON object or null; got {}",
                other.type_name()
            )));
            None
        }
    }
}

/// Turns parser defects into problems: inside a `value` member 1004, inside `metadata`
/// 1005, anywhere else 1007. `op_base` is the pointer of the object holding `value`
/// and `metadata` (`""` or `/operations/3`).
pub fn defect_problem(defect: &Defect, op_base: &str) -> Problem {
    // A duplicate is a defect of the object holding the member: a second `value`
    // member is the envelope's problem, a second `a` inside `value` the value's.
    let own_member = defect.kind == DefectKind::LoneSurrogate;
    let under = |field: &str| {
        let prefix = format!("{op_base}/{field}");
        (own_member && defect.pointer == prefix)
            || defect.pointer.starts_with(&format!("{prefix}/"))
    };
    let code = if under("value") {
        ErrorCode::InvalidValue
    } else if under("metadata") {
        ErrorCode::InvalidMetadata
    } else {
        ErrorCode::InvalidBody
    };
    Problem::at(code, defect.pointer.clone(), defect_detail(defect.kind))
}

/// A human sentence for a defect.
pub fn defect_detail(kind: DefectKind) -> &'static str {
    match kind {
        DefectKind::DuplicateMember => "an object has the same member name twice",
        DefectKind::LoneSurrogate => {
            "a string holds a lone surrogate escape (like \\ud800), which is not Unicode text"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> (Option<PutSpec>, Vec<(ErrorCode, Option<String>)>) {
        let parsed = json::parse(body.as_bytes()).expect("valid JSON");
        let Value::Object(members) = &parsed.value else {
            panic!("object expected")
        };
        let mut unknown = Vec::new();
        let fields = PutFields::collect(members, &[], &mut unknown);
        let mut problems = Vec::new();
        let body = Bytes::copy_from_slice(body.as_bytes());
        let spec = decode_put(fields, "", &Limits::default(), &body, &mut problems);
        (
            spec,
            problems.into_iter().map(|p| (p.code, p.pointer)).collect(),
        )
    }

    #[test]
    fn inferred_content_types_follow_the_value() {
        let (spec, _) = decode(r#"{"value": "hé"}"#);
        let spec = spec.expect("valid");
        assert_eq!(spec.content_type, TEXT_UTF8);
        assert_eq!(&spec.value[..], "hé".as_bytes());
        let (spec, _) = decode(r#"{"value": {"a": 1e+300}}"#);
        let spec = spec.expect("valid");
        assert_eq!(spec.content_type, APPLICATION_JSON);
        assert_eq!(&spec.value[..], br#"{"a":1e+300}"#);
    }

    #[test]
    fn a_text_value_without_escapes_is_a_view_of_the_body() {
        let body = Bytes::from_static(br#"{"value": "plain text", "x": "a\nb"}"#);
        let parsed = json::parse(&body).expect("valid JSON");
        let Value::Object(members) = &parsed.value else {
            panic!("object expected")
        };
        let mut unknown = Vec::new();
        let fields = PutFields::collect(members, &["x"], &mut unknown);
        let mut problems = Vec::new();
        let spec = decode_put(fields, "", &Limits::default(), &body, &mut problems).expect("valid");
        assert_eq!(&spec.value[..], b"plain text");
        let at = spec.value.as_ptr() as usize - body.as_ptr() as usize;
        assert_eq!(&body[at..at + spec.value.len()], b"plain text", "no copy");
        // An escaped string is decoded into its own bytes.
        let Some(Value::String(escaped)) = parsed.value.get("x") else {
            panic!("string expected")
        };
        assert_eq!(escaped, "a\nb");
        assert_eq!(&share_or_copy(&body, escaped.as_bytes())[..], b"a\nb");
    }

    #[test]
    fn json_kind_stores_a_string_as_json() {
        let (spec, _) = decode(r#"{"value": "x", "content_type": "application/json"}"#);
        assert_eq!(&spec.expect("valid").value[..], br#""x""#);
    }

    #[test]
    fn binary_values_are_base64_with_optional_padding() {
        let (spec, _) = decode(r#"{"value": "AAE", "content_type": "image/png"}"#);
        assert_eq!(&spec.expect("valid").value[..], &[0, 1]);
        let (spec, problems) = decode(r#"{"value": "A-_", "content_type": "image/png"}"#);
        assert!(spec.is_none());
        assert_eq!(
            problems,
            vec![(ErrorCode::InvalidValue, Some("/value".to_owned()))]
        );
    }

    #[test]
    fn every_problem_is_reported_together() {
        let (spec, problems) =
            decode(r#"{"value": null, "ttl": 60.0, "metadata": [1], "content_type": "nope"}"#);
        assert!(spec.is_none());
        let codes: Vec<ErrorCode> = problems.iter().map(|p| p.0).collect();
        assert_eq!(
            codes,
            vec![
                ErrorCode::InvalidTtl,
                ErrorCode::InvalidMetadata,
                ErrorCode::InvalidContentType,
                ErrorCode::InvalidValue
            ]
        );
    }

    #[test]
    fn ttl_must_be_an_integer_in_range() {
        for ttl in [
            "59",
            "0",
            "-1",
            "31536001",
            "\"60\"",
            "60.5",
            "true",
            "6e1",
            "99999999999999999999999",
        ] {
            let (spec, problems) = decode(&format!(r#"{{"value": 1, "ttl": {ttl}}}"#));
            assert!(spec.is_none(), "{ttl}");
            assert_eq!(problems[0].0, ErrorCode::InvalidTtl, "{ttl}");
        }
        for ttl in ["60", "31536000", "null"] {
            let (spec, _) = decode(&format!(r#"{{"value": 1, "ttl": {ttl}}}"#));
            assert!(spec.is_some(), "{ttl}");
        }
    }

    #[test]
    fn query_ttl_separates_syntax_from_range() {
        let mut problems = Vec::new();
        assert_eq!(check_ttl_query("120", &mut problems), Some(120));
        assert_eq!(check_ttl_query("1.5", &mut problems), None);
        assert_eq!(check_ttl_query("30", &mut problems), None);
        let codes: Vec<ErrorCode> = problems.iter().map(|p| p.code).collect();
        assert_eq!(codes, vec![ErrorCode::InvalidQuery, ErrorCode::InvalidTtl]);
    }

    #[test]
    fn oversized_values_are_413() {
        let limits = Limits {
            value_bytes_max: 4,
            ..Limits::default()
        };
        let parsed = json::parse(br#"{"value": "12345"}"#).expect("valid");
        let Value::Object(members) = &parsed.value else {
            panic!("object expected")
        };
        let mut unknown = Vec::new();
        let mut problems = Vec::new();
        let fields = PutFields::collect(members, &[], &mut unknown);
        assert!(decode_put(fields, "", &limits, &Bytes::new(), &mut problems).is_none());
        assert_eq!(problems[0].code, ErrorCode::PayloadTooLarge);
    }
}
