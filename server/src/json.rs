//! Strict JSON: a parser that keeps what API.md promises to keep, and a compact writer.
//!
//! Why not `serde_json` for request bodies: API.md wants duplicate member names and lone
//! surrogates (`"\ud800"`) refused as 422 problems that name *where* they are (1007 at the
//! envelope's top level, 1004 inside `value`, 1005 inside `metadata`, per bulk operation
//! with a JSON pointer). `serde_json` silently keeps one of two duplicate members and
//! rejects a lone surrogate as a syntax error (which would be a 400), with a line and
//! column instead of a pointer. This parser instead records such *defects* with their
//! JSON pointer and goes on, so every problem can be reported together. It keeps numbers
//! as the text they were written with and members in their order, so the compact writer
//! gives back exactly what API.md says is stored. The tree borrows from the input:
//! numbers, and strings and member names without escapes, are slices of it (a bulk
//! body of a thousand operations is then one allocation per object, not one per
//! string); only a string with escapes is decoded into its own buffer. On valid input without defects its
//! output equals `serde_json`'s (`preserve_order` + `arbitrary_precision`), which a
//! property test checks.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Deepest nesting of arrays and objects accepted. Deeper documents are refused (400)
/// rather than risking the stack of a runtime thread: the parser and the writer recurse
/// once per level.
pub const DEPTH_MAX: usize = 256;

/// Objects with more members than this are checked for duplicates by sorting instead of
/// by a pairwise scan.
const MEMBERS_SCAN_MAX: usize = 16;

/// A parsed JSON value, borrowing from the input where it can. Numbers keep their
/// spelling; objects keep member order (and, in a document with defects, duplicate
/// members).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, exactly as written (`1e+300`, `-0.0`, `123456789012345678901234567890`).
    Number(&'a str),
    /// A string, unescaped: a slice of the input when it holds no escape. A lone
    /// surrogate is replaced by U+FFFD and reported as a defect.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Value<'a>>),
    /// An object's members in document order.
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The member `name` of an object (the first one, if there are duplicates).
    pub fn get(&self, name: &str) -> Option<&Value<'a>> {
        match self {
            Value::Object(members) => members.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the value's JSON type, for problem details.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// What is wrong with a syntactically valid document that API.md refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefectKind {
    /// An object holds the same member name twice.
    DuplicateMember,
    /// A `\uXXXX` escape is a high surrogate without a low one after it, or a low one alone.
    LoneSurrogate,
}

/// A defect and where it is: a JSON pointer (RFC 6901) into the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defect {
    /// The pointer, e.g. `/value/a/0`; empty for the whole document.
    pub pointer: String,
    /// What is wrong.
    pub kind: DefectKind,
}

/// Why a document could not be parsed at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON: the byte offset and what was expected there.
    Syntax {
        /// Byte offset of the first offending byte.
        offset: usize,
        /// What the parser expected.
        reason: &'static str,
    },
    /// Nested deeper than [`DEPTH_MAX`].
    TooDeep,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Syntax { offset, reason } => {
                write!(f, "the body is not valid JSON: {reason} at byte {offset}")
            }
            ParseError::TooDeep => write!(
                f,
                "the JSON is nested deeper than {DEPTH_MAX} levels of arrays and objects"
            ),
        }
    }
}

/// A parsed document and its defects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The document.
    pub value: Value<'a>,
    /// Duplicate members and lone surrogates, in document order of detection.
    pub defects: Vec<Defect>,
}

/// Parses one JSON document (RFC 8259), allowing whitespace around it and nothing else.
/// A byte order mark is not JSON and is refused.
pub fn parse(input: &[u8]) -> Result<Parsed<'_>, ParseError> {
    let text = std::str::from_utf8(input).map_err(|e| ParseError::Syntax {
        offset: e.valid_up_to(),
        reason: "invalid UTF-8",
    })?;
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        path: Vec::new(),
        names: Vec::new(),
        defects: Vec::new(),
    };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("end of input after the document"));
    }
    Ok(Parsed {
        value,
        defects: parser.defects,
    })
}

/// One step of the path from the root to the value being parsed.
enum Step<'a> {
    /// An array element.
    Index(usize),
    /// An object member, by its name as written (still escaped).
    Member(&'a str),
}

/// Length of the run at the start of `bytes` that a string copies as it is: up to the
/// first `"`, `\` or control character (below 0x20), or all of `bytes`. Strings are
/// most of a bulk body, so this looks at eight bytes per step: in a word, a byte equal
/// to 0 gives `(b - 1) & !b` its high bit (and a byte below 0x20 gives `b - 0x20`),
/// and a borrow only starts at such a byte and only runs upwards, so the lowest flagged
/// byte is the first wanted one. `plain_run_matches_the_bytewise_scan` holds it to
/// the byte loop.
pub fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |w: u64| w.wrapping_sub(ONES) & !w;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let found = (zero_byte(w ^ (ONES * u64::from(b'"')))
            | zero_byte(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGH;
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + plain_run_bytewise(chunks.remainder())
}

/// [`plain_run`] a byte at a time.
fn plain_run_bytewise(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len())
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    path: Vec<Step<'a>>,
    /// Member names as written (still escaped) of the objects being parsed, innermost
    /// last: one buffer for the whole document instead of one per object.
    names: Vec<&'a str>,
    defects: Vec<Defect>,
}

impl<'a> Parser<'a> {
    fn error(&self, reason: &'static str) -> ParseError {
        ParseError::Syntax {
            offset: self.pos,
            reason,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, ParseError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string(None)?)),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("a JSON value")),
            None => Err(self.error("a JSON value before the end of input")),
        }
    }

    fn literal(&mut self, word: &'static str, value: Value<'a>) -> Result<Value<'a>, ParseError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("a JSON value"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value<'a>, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("a digit")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("a digit after the decimal point"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("a digit in the exponent"));
            }
        }
        Ok(Value::Number(&self.text[start..self.pos]))
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, ParseError> {
        if depth > DEPTH_MAX {
            return Err(ParseError::TooDeep);
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            self.path.push(Step::Index(items.len()));
            let item = self.value(depth);
            self.path.pop();
            items.push(item?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("',' or ']' in an array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value<'a>, ParseError> {
        if depth > DEPTH_MAX {
            return Err(ParseError::TooDeep);
        }
        self.pos += 1;
        let mut members: Vec<(Cow<'a, str>, Value<'a>)> = Vec::new();
        let names_from = self.names.len();
        let result = self.members(depth, &mut members);
        self.names.truncate(names_from);
        result.map(|()| Value::Object(members))
    }

    /// The members of an object after its `{`, up to and including its `}`; their
    /// raw names are pushed to `self.names` (the caller truncates them).
    fn members(
        &mut self,
        depth: usize,
        members: &mut Vec<(Cow<'a, str>, Value<'a>)>,
    ) -> Result<(), ParseError> {
        let names_from = self.names.len();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("a member name in double quotes"));
            }
            let raw_start = self.pos + 1;
            let name = self.string(Some(raw_start))?;
            let raw = &self.text[raw_start..self.pos - 1];
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error("':' after a member name"));
            }
            self.pos += 1;
            self.skip_ws();
            self.path.push(Step::Member(raw));
            let value = self.value(depth);
            self.path.pop();
            members.push((name, value?));
            self.names.push(raw);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.check_duplicates(members, names_from);
                    return Ok(());
                }
                _ => return Err(self.error("',' or '}' in an object")),
            }
        }
    }

    /// Records a defect for every member whose name an earlier member already has;
    /// `self.names[names_from..]` are the members' raw names.
    fn check_duplicates(&mut self, members: &[(Cow<'a, str>, Value<'a>)], names_from: usize) {
        let mut duplicates: Vec<usize> = Vec::new();
        if members.len() <= MEMBERS_SCAN_MAX {
            for i in 1..members.len() {
                if members[..i].iter().any(|(n, _)| *n == members[i].0) {
                    duplicates.push(i);
                }
            }
        } else {
            let mut order: Vec<usize> = (0..members.len()).collect();
            order.sort_by(|&a, &b| members[a].0.cmp(&members[b].0).then(a.cmp(&b)));
            for pair in order.windows(2) {
                if members[pair[0]].0 == members[pair[1]].0 {
                    duplicates.push(pair[1]);
                }
            }
            duplicates.sort_unstable();
        }
        for i in duplicates {
            self.path.push(Step::Member(self.names[names_from + i]));
            self.defect(DefectKind::DuplicateMember);
            self.path.pop();
        }
    }

    fn defect(&mut self, kind: DefectKind) {
        let pointer = pointer_of(&self.path);
        self.defects.push(Defect { pointer, kind });
    }

    /// Parses a string starting at the opening quote. `member_at` is set for a member
    /// name, so that a lone surrogate in it is reported at the member's own pointer.
    fn string(&mut self, member_at: Option<usize>) -> Result<Cow<'a, str>, ParseError> {
        self.pos += 1;
        // Most strings hold no escape: a slice of the input, no allocation.
        let start = self.pos;
        self.pos += plain_run(&self.bytes[start..]);
        if self.peek() == Some(b'"') {
            self.pos += 1;
            return Ok(Cow::Borrowed(&self.text[start..self.pos - 1]));
        }
        self.pos = start;
        let mut out = String::new();
        let mut lone_surrogate = false;
        loop {
            let start = self.pos;
            self.pos += plain_run(&self.bytes[start..]);
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    lone_surrogate |= self.escape(&mut out)?;
                }
                Some(_) => return Err(self.error("no raw control character in a string")),
                None => return Err(self.error("'\"' to end the string")),
            }
        }
        if lone_surrogate {
            match member_at {
                Some(raw_start) => {
                    let raw = &self.text[raw_start..self.pos - 1];
                    self.path.push(Step::Member(raw));
                    self.defect(DefectKind::LoneSurrogate);
                    self.path.pop();
                }
                None => self.defect(DefectKind::LoneSurrogate),
            }
        }
        Ok(Cow::Owned(out))
    }

    /// Decodes one escape after its backslash into `out`; true when it was a lone
    /// surrogate (replaced by U+FFFD).
    fn escape(&mut self, out: &mut String) -> Result<bool, ParseError> {
        let Some(b) = self.peek() else {
            return Err(self.error("an escape character"));
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(out),
            _ => {
                self.pos -= 1;
                return Err(self.error("a valid escape character"));
            }
        };
        out.push(c);
        Ok(false)
    }

    fn unicode_escape(&mut self, out: &mut String) -> Result<bool, ParseError> {
        let first = self.hex4()?;
        if (0xDC00..0xE000).contains(&first) {
            out.push('\u{FFFD}');
            return Ok(true);
        }
        if !(0xD800..0xDC00).contains(&first) {
            out.push(char::from_u32(first).unwrap_or('\u{FFFD}'));
            return Ok(false);
        }
        let rest = &self.bytes[self.pos..];
        if rest.starts_with(b"\\u") {
            let save = self.pos;
            self.pos += 2;
            let second = self.hex4()?;
            if (0xDC00..0xE000).contains(&second) {
                let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                return Ok(false);
            }
            self.pos = save;
        }
        out.push('\u{FFFD}');
        Ok(true)
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut code = 0u32;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|b| (b as char).to_digit(16))
                .ok_or_else(|| self.error("four hex digits after \\u"))?;
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }
}

/// Builds the JSON pointer of `path`, unescaping member names as they were written.
fn pointer_of(path: &[Step<'_>]) -> String {
    let mut pointer = String::new();
    for step in path {
        pointer.push('/');
        match step {
            Step::Index(i) => {
                let _ = write!(pointer, "{i}");
            }
            Step::Member(raw) => push_pointer_token(&mut pointer, &unescape_name(raw)),
        }
    }
    pointer
}

/// Appends one reference token of a JSON pointer, escaping `~` and `/` (RFC 6901).
pub fn push_pointer_token(pointer: &mut String, token: &str) {
    for c in token.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// Unescapes a member name already known to be well-formed (the parser read it).
fn unescape_name(raw: &str) -> String {
    let quoted = format!("\"{raw}\"");
    let mut parser = Parser {
        text: &quoted,
        bytes: quoted.as_bytes(),
        pos: 0,
        path: Vec::new(),
        names: Vec::new(),
        defects: Vec::new(),
    };
    parser
        .string(None)
        .map(Cow::into_owned)
        .unwrap_or_else(|_| raw.to_owned())
}

/// Writes `value` as compact JSON: no whitespace, numbers as written, members in order,
/// strings with only the escapes JSON requires.
pub fn write_compact(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(text) => out.extend_from_slice(text.as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_compact(item, out);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            out.push(b'{');
            for (i, (name, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(name, out);
                out.push(b':');
                write_compact(item, out);
            }
            out.push(b'}');
        }
    }
}

/// The compact serialization of `value` (see [`write_compact`]).
pub fn to_compact(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_compact(value, &mut out);
    out
}

/// Writes `s` as a JSON string: `\"`, `\\`, the short escapes `\b \f \n \r \t`, and
/// lowercase `\u00xx` for other control characters; everything else as UTF-8.
/// Member names, keys, content types and most stored text escape nothing: the runs
/// between escapes are found eight bytes at a time ([`plain_run`]) and copied whole.
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    write_utf8_string(s.as_bytes(), out);
}

/// [`write_string`] of bytes the caller has checked are UTF-8 (escaping works byte by
/// byte; bytes that are not UTF-8 would make the output invalid JSON, nothing worse).
pub(crate) fn write_utf8_string(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut at = 0;
    loop {
        let run = plain_run(&bytes[at..]);
        out.extend_from_slice(&bytes[at..at + run]);
        at += run;
        let Some(&b) = bytes.get(at) else {
            break;
        };
        at += 1;
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\x08' => b"\\b",
            b'\x0c' => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                continue;
            }
        };
        out.extend_from_slice(short);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(input: &str) -> String {
        let parsed = parse(input.as_bytes()).expect("valid JSON");
        assert!(parsed.defects.is_empty(), "{:?}", parsed.defects);
        String::from_utf8(to_compact(&parsed.value)).expect("UTF-8")
    }

    fn defects(input: &str) -> Vec<(String, DefectKind)> {
        parse(input.as_bytes())
            .expect("valid JSON")
            .defects
            .into_iter()
            .map(|d| (d.pointer, d.kind))
            .collect()
    }

    fn is_syntax_error(input: &[u8]) -> bool {
        matches!(parse(input), Err(ParseError::Syntax { .. }))
    }

    #[test]
    fn numbers_keep_their_spelling() {
        for n in [
            "1e+300",
            "-0.0",
            "-0",
            "0.1",
            "123456789012345678901234567890",
            "1E-7",
            "2.50",
        ] {
            assert_eq!(compact(n), n);
            assert_eq!(compact(&format!("[ {n} ]")), format!("[{n}]"));
        }
    }

    #[test]
    fn malformed_numbers_are_syntax_errors() {
        for n in [
            "01", "1.", ".5", "+1", "1e", "-", "1.e5", "0x10", "NaN", "Infinity",
        ] {
            assert!(is_syntax_error(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn members_keep_their_order_and_whitespace_goes() {
        assert_eq!(
            compact("{ \"b\" : 1 ,\n\t\"a\" : [ true , false , null ] }"),
            r#"{"b":1,"a":[true,false,null]}"#
        );
    }

    #[test]
    fn only_required_escapes_are_written() {
        assert_eq!(compact(r#""\/\u0041\u00e9""#), "\"/Aé\"");
        assert_eq!(
            compact(r#""\" \\ \b \f \n \r \t \u0001 \u001F \u007f""#),
            "\"\\\" \\\\ \\b \\f \\n \\r \\t \\u0001 \\u001f \u{7f}\""
        );
        assert_eq!(compact(r#""\ud83d\ude00""#), "\"😀\"");
    }

    #[test]
    fn raw_control_characters_in_strings_are_syntax_errors() {
        assert!(is_syntax_error(b"\"a\nb\""));
        assert!(is_syntax_error(b"\"a\x00b\""));
    }

    #[test]
    fn bad_escapes_are_syntax_errors() {
        assert!(is_syntax_error(br#""\x""#));
        assert!(is_syntax_error(br#""\u12""#));
        assert!(is_syntax_error(br#""\u12g4""#));
        assert!(is_syntax_error(br#""abc"#));
    }

    #[test]
    fn lone_surrogates_are_defects_at_their_pointer() {
        assert_eq!(
            defects(r#"{"value": {"a": ["x", "\ud800"]}}"#),
            vec![("/value/a/1".to_owned(), DefectKind::LoneSurrogate)]
        );
        assert_eq!(
            defects(r#"["\udc00", "\ud800\u0041"]"#),
            vec![
                ("/0".to_owned(), DefectKind::LoneSurrogate),
                ("/1".to_owned(), DefectKind::LoneSurrogate)
            ]
        );
        assert_eq!(
            defects(r#"{"k\ud800": 1}"#),
            vec![("/k\u{fffd}".to_owned(), DefectKind::LoneSurrogate)]
        );
    }

    #[test]
    fn duplicate_members_are_defects_at_the_later_member() {
        assert_eq!(
            defects(r#"{"a": 1, "b": {"c": 1, "c": 2}, "a": 3}"#),
            vec![
                ("/b/c".to_owned(), DefectKind::DuplicateMember),
                ("/a".to_owned(), DefectKind::DuplicateMember)
            ]
        );
        assert_eq!(
            defects(r#"{"a": 1, "\u0061": 2}"#),
            vec![("/a".to_owned(), DefectKind::DuplicateMember)]
        );
        assert_eq!(
            defects(r#"{"a/b~": 1, "a/b~": 2}"#),
            vec![("/a~1b~0".to_owned(), DefectKind::DuplicateMember)]
        );
    }

    #[test]
    fn duplicates_in_large_objects_are_found() {
        let mut text = String::from("{");
        for i in 0..40 {
            let _ = write!(text, "\"k{i}\":{i},");
        }
        text.push_str("\"k7\":0}");
        assert_eq!(
            defects(&text),
            vec![("/k7".to_owned(), DefectKind::DuplicateMember)]
        );
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let ok = format!("{}{}", "[".repeat(DEPTH_MAX), "]".repeat(DEPTH_MAX));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(DEPTH_MAX + 1), "]".repeat(DEPTH_MAX + 1));
        assert_eq!(parse(deep.as_bytes()), Err(ParseError::TooDeep));
        let very_deep = "[{\"a\":".repeat(100_000);
        assert_eq!(parse(very_deep.as_bytes()), Err(ParseError::TooDeep));
    }

    #[test]
    fn trailing_garbage_bom_and_empty_input_are_syntax_errors() {
        assert!(is_syntax_error(b"{} x"));
        assert!(is_syntax_error(b"1 2"));
        assert!(is_syntax_error(b"\xEF\xBB\xBF{}"));
        assert!(is_syntax_error(b""));
        assert!(is_syntax_error(b"   "));
        assert!(is_syntax_error(b"{\"value\": "));
        assert!(is_syntax_error(b"[1,]"));
        assert!(is_syntax_error(b"{\"a\":1,}"));
        assert!(is_syntax_error(b"\"\xff\""));
        assert!(is_syntax_error(b"tru"));
    }

    #[test]
    fn surrounding_whitespace_is_allowed() {
        assert_eq!(compact(" \r\n\t{} \n"), "{}");
    }

    mod equivalence {
        use super::super::*;
        use proptest::prelude::*;

        fn arb_number() -> impl Strategy<Value = String> {
            (
                any::<bool>(),
                "(0|[1-9][0-9]{0,30})",
                proptest::option::of("[0-9]{1,10}"),
                proptest::option::of(("[eE]", "[+-]?", "[0-9]{1,3}")),
            )
                .prop_map(|(neg, int, frac, exp)| {
                    let mut s = String::new();
                    if neg {
                        s.push('-');
                    }
                    s.push_str(&int);
                    if let Some(f) = frac {
                        s.push('.');
                        s.push_str(&f);
                    }
                    if let Some((e, sign, d)) = exp {
                        s.push_str(&e);
                        s.push_str(&sign);
                        s.push_str(&d);
                    }
                    s
                })
        }

        fn arb_json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::Bool),
                arb_number().prop_map(|n| serde_json::from_str(&n).expect("valid number")),
                any::<String>().prop_map(serde_json::Value::String),
            ];
            leaf.prop_recursive(6, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
                    prop::collection::vec((any::<String>(), inner), 0..8).prop_map(|members| {
                        serde_json::Value::Object(members.into_iter().collect())
                    }),
                ]
            })
        }

        proptest! {
            #[test]
            fn compact_output_equals_serde_json(value in arb_json()) {
                let pretty = serde_json::to_string_pretty(&value).expect("serialize");
                let parsed = parse(pretty.as_bytes()).expect("valid JSON");
                prop_assert!(parsed.defects.is_empty());
                let ours = to_compact(&parsed.value);
                let theirs = serde_json::to_vec(&value).expect("serialize");
                prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
            }

            #[test]
            fn strings_round_trip_through_our_writer(s in any::<String>()) {
                let mut out = Vec::new();
                write_string(&s, &mut out);
                let theirs = serde_json::to_vec(&s).expect("serialize");
                prop_assert_eq!(&out, &theirs);
                let parsed = parse(&out).expect("valid JSON");
                prop_assert_eq!(parsed.value, Value::String(Cow::Owned(s)));
            }

            #[test]
            fn plain_run_matches_the_bytewise_scan(
                bytes in prop::collection::vec(
                    prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xff, 0x7fu8..=0x81],
                    0..40,
                ),
                plain in 0usize..40,
            ) {
                // A plain prefix of every length before the mixed tail, so the first
                // stop byte lands in every lane of a word.
                let mut input = vec![b'a'; plain];
                input.extend_from_slice(&bytes);
                prop_assert_eq!(plain_run(&input), plain_run_bytewise(&input));
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                let _ = parse(&bytes);
            }
        }
    }
}
