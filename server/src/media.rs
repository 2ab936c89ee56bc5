//! Media types (RFC 9110 §8.3.1) and the value kind API.md derives from them.
//!
//! A value's content type decides how it is checked, stored and shown (JSON, text or
//! binary), so it is parsed strictly here rather than matched as a string.

/// Longest media type accepted, in characters (API.md "Names and limits").
pub const MEDIA_TYPE_CHARS_MAX: usize = 255;

/// The content type given to a JSON string value sent without `content_type`.
pub const TEXT_UTF8: &str = "text/plain; charset=utf-8";
/// The content type given to any other JSON value sent without `content_type`.
pub const APPLICATION_JSON: &str = "application/json";

/// How a value is checked, stored and shown, by its content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `application/json` or any `+json` subtype: stored bytes are valid JSON.
    Json,
    /// `text/*` without a charset or with UTF-8 / US-ASCII: stored bytes are UTF-8.
    Text,
    /// Everything else: any bytes, shown as base64 in envelopes.
    Binary,
}

impl Kind {
    /// The `encoding` a GET envelope (and an export line) names for a value of this
    /// kind: `json`, `text` or `base64`.
    pub fn encoding(self) -> &'static str {
        match self {
            Kind::Json => "json",
            Kind::Text => "text",
            Kind::Binary => "base64",
        }
    }
}

/// A parsed media type, borrowing from its text. Parameter values are unquoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaType<'a> {
    /// The type, as written (compare case-insensitively).
    pub kind: &'a str,
    /// The subtype, as written (compare case-insensitively).
    pub subtype: &'a str,
    /// Parameters in order: name as written, value unquoted.
    pub params: Vec<(&'a str, String)>,
}

/// Why a media type is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaTypeError {
    /// Longer than [`MEDIA_TYPE_CHARS_MAX`].
    TooLong,
    /// Not `type/subtype[; name=value]*` in RFC 9110 syntax.
    Malformed(&'static str),
}

impl std::fmt::Display for MediaTypeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaTypeError::TooLong => write!(
                f,
                "a content type may be at most {MEDIA_TYPE_CHARS_MAX} characters"
            ),
            MediaTypeError::Malformed(why) => write!(
                f,
                "the content type must be a media type like `type/subtype; name=value`: {why}"
            ),
        }
    }
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses `text` (surrounding spaces and tabs ignored). Only ASCII is accepted, because
/// the content type is sent back as a response header.
pub fn parse(text: &str) -> Result<MediaType<'_>, MediaTypeError> {
    if text.chars().count() > MEDIA_TYPE_CHARS_MAX {
        return Err(MediaTypeError::TooLong);
    }
    let text = text.trim_matches([' ', '\t']);
    let mut scan = Scanner { text, pos: 0 };
    let kind = scan
        .token()
        .ok_or(MediaTypeError::Malformed("missing type"))?;
    if !scan.eat(b'/') {
        return Err(MediaTypeError::Malformed("missing '/' after the type"));
    }
    let subtype = scan
        .token()
        .ok_or(MediaTypeError::Malformed("missing subtype"))?;
    let mut params = Vec::new();
    loop {
        scan.skip_ows();
        if scan.at_end() {
            break;
        }
        if !scan.eat(b';') {
            return Err(MediaTypeError::Malformed("expected ';' before a parameter"));
        }
        scan.skip_ows();
        if scan.at_end() || scan.peek() == Some(b';') {
            continue;
        }
        let name = scan.token().ok_or(MediaTypeError::Malformed(
            "a parameter name must be a token",
        ))?;
        if !scan.eat(b'=') {
            return Err(MediaTypeError::Malformed(
                "a parameter needs '=' and a value",
            ));
        }
        let value = if scan.peek() == Some(b'"') {
            scan.quoted()?
        } else {
            scan.token()
                .ok_or(MediaTypeError::Malformed(
                    "a parameter value must be a token or a quoted string",
                ))?
                .to_owned()
        };
        params.push((name, value));
    }
    Ok(MediaType {
        kind,
        subtype,
        params,
    })
}

struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_ows(&mut self) {
        while let Some(b' ' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.text[start..self.pos])
    }

    fn quoted(&mut self) -> Result<String, MediaTypeError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) if b == b'\t' || (0x20..0x7f).contains(&b) => {
                            out.push(char::from(b));
                            self.pos += 1;
                        }
                        _ => return Err(MediaTypeError::Malformed("bad quoted pair")),
                    }
                }
                Some(b) if b == b'\t' || (0x20..0x7f).contains(&b) => {
                    out.push(char::from(b));
                    self.pos += 1;
                }
                Some(_) => {
                    return Err(MediaTypeError::Malformed(
                        "only printable ASCII is allowed in a quoted string",
                    ));
                }
                None => return Err(MediaTypeError::Malformed("unterminated quoted string")),
            }
        }
    }
}

impl MediaType<'_> {
    /// True for `type/subtype`, compared case-insensitively.
    pub fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// The value kind of API.md: the first rule that fits wins.
    pub fn value_kind(&self) -> Kind {
        if self.is("application", "json") || ends_with_ignore_case(self.subtype, "+json") {
            return Kind::Json;
        }
        if self.kind.eq_ignore_ascii_case("text") {
            let charsets_ok = self
                .params
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("charset"))
                .all(|(_, v)| {
                    v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("us-ascii")
                });
            if charsets_ok {
                return Kind::Text;
            }
        }
        Kind::Binary
    }

    /// True for bodies `curl -d` and HTML forms send, which API.md refuses with 415.
    pub fn is_form_or_multipart(&self) -> bool {
        self.is("application", "x-www-form-urlencoded")
            || self.kind.eq_ignore_ascii_case("multipart")
    }
}

fn ends_with_ignore_case(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len()
        && text.as_bytes()[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Kind {
        parse(text).expect("valid media type").value_kind()
    }

    #[test]
    fn json_kind_is_application_json_or_a_json_suffix() {
        assert_eq!(kind("application/json"), Kind::Json);
        assert_eq!(kind("Application/JSON; charset=utf-8"), Kind::Json);
        assert_eq!(kind("application/problem+json"), Kind::Json);
        assert_eq!(kind("text/x+JSON"), Kind::Json);
        assert_eq!(kind("application/jsonx"), Kind::Binary);
    }

    #[test]
    fn text_kind_needs_no_charset_or_utf8_or_ascii() {
        assert_eq!(kind("text/plain"), Kind::Text);
        assert_eq!(kind("TEXT/html; charset=UTF-8"), Kind::Text);
        assert_eq!(kind("text/plain; CHARSET=\"us-ascii\""), Kind::Text);
        assert_eq!(kind("text/csv; header=present"), Kind::Text);
        assert_eq!(kind("text/plain; charset=latin1"), Kind::Binary);
        assert_eq!(kind("text/plain; charset=\"utf-16\""), Kind::Binary);
    }

    #[test]
    fn everything_else_is_binary() {
        assert_eq!(kind("application/octet-stream"), Kind::Binary);
        assert_eq!(kind("image/png"), Kind::Binary);
    }

    #[test]
    fn parameters_parse_with_tokens_and_quoted_strings() {
        let mt = parse("text/plain ;a=b;  c=\"d \\\"e\\\" f\" ;").expect("valid");
        assert_eq!(mt.kind, "text");
        assert_eq!(mt.subtype, "plain");
        assert_eq!(
            mt.params,
            vec![("a", "b".to_owned()), ("c", "d \"e\" f".to_owned())]
        );
    }

    #[test]
    fn malformed_media_types_are_refused() {
        for bad in [
            "",
            "text",
            "text/",
            "/plain",
            "text/plain charset=utf-8",
            "text/plain; charset",
            "text/plain; charset=",
            "text/plain; charset = utf-8",
            "text/plain; charset=\"utf-8",
            "te xt/plain",
            "text/pl@in",
            "text/plain; a=é",
            "text/plain/x",
        ] {
            assert!(
                matches!(parse(bad), Err(MediaTypeError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn length_limit_is_255_characters() {
        let ok = format!("application/{}", "x".repeat(MEDIA_TYPE_CHARS_MAX - 12));
        assert_eq!(ok.len(), MEDIA_TYPE_CHARS_MAX);
        assert!(parse(&ok).is_ok());
        let long = format!("{ok}x");
        assert_eq!(parse(&long), Err(MediaTypeError::TooLong));
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in ".{0,300}") {
            if let Ok(mt) = parse(&text) {
                let _ = mt.value_kind();
            }
        }
    }

    #[test]
    fn form_and_multipart_are_recognised() {
        assert!(
            parse("application/x-www-form-urlencoded")
                .expect("valid")
                .is_form_or_multipart()
        );
        assert!(
            parse("Multipart/form-data; boundary=x")
                .expect("valid")
                .is_form_or_multipart()
        );
        assert!(
            !parse("application/json")
                .expect("valid")
                .is_form_or_multipart()
        );
    }
}
