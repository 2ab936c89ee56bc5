//! Conditional requests: `If-Match` and `If-None-Match` (RFC 9110 §13.1) over versions.

use axum::http::{HeaderMap, HeaderName, header};

use crate::problem::{ErrorCode, Problem};

/// A parsed precondition header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `*`: any live value.
    Any,
    /// A list of entity tags; only tags that are versions (`"42"`, `W/"42"`) can match,
    /// so they are kept as numbers. A well-formed tag that is not a version never matches.
    Versions(Vec<u64>),
}

impl Condition {
    /// True when the live entry (its version, or `None` when absent) matches. Weak and
    /// strong tags compare alike, as API.md says.
    pub fn matches(&self, live: Option<u64>) -> bool {
        match (self, live) {
            (_, None) => false,
            (Condition::Any, Some(_)) => true,
            (Condition::Versions(tags), Some(v)) => tags.contains(&v),
        }
    }
}

/// Both precondition headers of a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`.
    pub if_match: Option<Condition>,
    /// `If-None-Match`.
    pub if_none_match: Option<Condition>,
}

impl Preconditions {
    /// Reads both headers; a malformed one is a 422 `invalid-header` problem.
    pub fn parse(headers: &HeaderMap, problems: &mut Vec<Problem>) -> Preconditions {
        Preconditions {
            if_match: read(headers, header::IF_MATCH, problems),
            if_none_match: read(headers, header::IF_NONE_MATCH, problems),
        }
    }

    /// True when the request has neither header: nothing to check before a write.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// True when a write (or delete) may go ahead given the live version.
    pub fn allow_write(&self, live: Option<u64>) -> bool {
        self.if_match.as_ref().is_none_or(|c| c.matches(live))
            && self.if_none_match.as_ref().is_none_or(|c| !c.matches(live))
    }
}

fn read(headers: &HeaderMap, name: HeaderName, problems: &mut Vec<Problem>) -> Option<Condition> {
    let mut values = headers.get_all(&name).iter().peekable();
    values.peek()?;
    let mut joined = String::new();
    for value in values {
        let Ok(text) = value.to_str() else {
            problems.push(malformed(&name));
            return None;
        };
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(text);
    }
    match parse(&joined) {
        Some(condition) => Some(condition),
        None => {
            problems.push(malformed(&name));
            None
        }
    }
}

fn malformed(name: &HeaderName) -> Problem {
    Problem::new(
        ErrorCode::InvalidHeader,
        format!(
            "{name} must be `*` or a comma-separated list of entity tags like `\"42\"` or `W/\"42\"`"
        ),
    )
}

/// Parses `*` or `#entity-tag` (empty list elements allowed, at least one tag).
pub fn parse(text: &str) -> Option<Condition> {
    let trimmed = text.trim_matches([' ', '\t']);
    if trimmed == "*" {
        return Some(Condition::Any);
    }
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut versions = Vec::new();
    let mut tags = 0usize;
    loop {
        while let Some(b' ' | b'\t' | b',') = bytes.get(pos) {
            pos += 1;
        }
        if pos >= bytes.len() {
            break;
        }
        if bytes[pos..].starts_with(b"W/") {
            pos += 2;
        }
        if bytes.get(pos) != Some(&b'"') {
            return None;
        }
        pos += 1;
        let start = pos;
        while let Some(&b) = bytes.get(pos) {
            if b == b'"' {
                break;
            }
            if !(b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80) {
                return None;
            }
            pos += 1;
        }
        if bytes.get(pos) != Some(&b'"') {
            return None;
        }
        let tag = &text[start..pos];
        pos += 1;
        tags += 1;
        if let Some(v) = tag.parse::<u64>().ok().filter(|v| v.to_string() == tag) {
            versions.push(v);
        }
        while let Some(b' ' | b'\t') = bytes.get(pos) {
            pos += 1;
        }
        match bytes.get(pos) {
            None | Some(b',') => {}
            Some(_) => return None,
        }
    }
    (tags > 0).then_some(Condition::Versions(versions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_lists_and_weak_tags_parse() {
        assert_eq!(parse("*"), Some(Condition::Any));
        assert_eq!(parse(" \"42\" "), Some(Condition::Versions(vec![42])));
        assert_eq!(
            parse("\"1\", W/\"2\",,\"abc\""),
            Some(Condition::Versions(vec![1, 2]))
        );
        assert_eq!(parse("\"0042\""), Some(Condition::Versions(vec![])));
        assert_eq!(parse("\"a,b\", \"7\""), Some(Condition::Versions(vec![7])));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "42",
            "\"42",
            "W/42",
            "*, \"1\"",
            "\"1\" \"2\"",
            "w/\"1\"",
            "\"a b\"",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "[ -~\t]{0,80}") {
            let _ = parse(&text);
        }
    }

    #[test]
    fn matching_follows_api_md() {
        let any = Condition::Any;
        assert!(any.matches(Some(1)));
        assert!(!any.matches(None));
        let tags = Condition::Versions(vec![3]);
        assert!(tags.matches(Some(3)));
        assert!(!tags.matches(Some(4)));
        let pre = Preconditions {
            if_match: None,
            if_none_match: Some(Condition::Any),
        };
        assert!(pre.allow_write(None));
        assert!(!pre.allow_write(Some(1)));
    }
}
