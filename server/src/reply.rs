//! Success responses: `{"ok": true, "data": …}` written straight into a byte buffer.
//!
//! Responses are built by hand rather than through `serde` structs so that stored JSON
//! values and metadata are spliced in as they are (no re-parse, no re-serialization) and
//! a GET costs one allocation for its body.

use std::cell::RefCell;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::BytesMut;

use crate::json;
use crate::timefmt::write_rfc3339_seconds;

/// A JSON document being written; tracks where commas go.
pub struct JsonWriter {
    out: Vec<u8>,
    comma: bool,
    /// What [`JsonWriter::finish`] appends to close what the constructor opened.
    close: &'static [u8],
}

impl JsonWriter {
    /// Starts `{"ok":true,"data":{` with room for `capacity` more bytes.
    pub fn ok_data(capacity: usize) -> JsonWriter {
        let mut out = Vec::with_capacity(capacity + 32);
        out.extend_from_slice(b"{\"ok\":true,\"data\":{");
        JsonWriter {
            out,
            comma: false,
            close: b"}}",
        }
    }

    /// Starts a bare `{` with room for `capacity` more bytes (a line of `caskade
    /// export`, an operation of a bulk body).
    pub fn object(capacity: usize) -> JsonWriter {
        let mut out = Vec::with_capacity(capacity + 2);
        out.push(b'{');
        JsonWriter {
            out,
            comma: false,
            close: b"}",
        }
    }

    fn sep(&mut self) {
        if self.comma {
            self.out.push(b',');
        }
        self.comma = true;
    }

    /// Writes a member name and its colon. Names are the API's own, written as
    /// literals, and none needs escaping: they are copied as they are (checked in
    /// debug builds), since a GET's envelope has eleven of them.
    pub fn key(&mut self, name: &'static str) -> &mut Self {
        debug_assert!(
            json::plain_run(name.as_bytes()) == name.len(),
            "member name {name:?} needs escaping"
        );
        self.out.reserve(name.len() + 4);
        if self.comma {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.comma = false;
        self
    }

    /// A string value.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.sep();
        json::write_string(s, &mut self.out);
        self
    }

    /// A string value given as bytes that should be UTF-8 (a stored text value): fails
    /// without writing anything when they are not. ASCII, the common case, is
    /// recognised a word at a time instead of through the full UTF-8 check.
    pub fn text(&mut self, bytes: &[u8]) -> Result<&mut Self, std::str::Utf8Error> {
        if !bytes.is_ascii() {
            std::str::from_utf8(bytes)?;
        }
        self.sep();
        json::write_utf8_string(bytes, &mut self.out);
        Ok(self)
    }

    /// A number value.
    pub fn u64(&mut self, n: u64) -> &mut Self {
        self.sep();
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self
    }

    /// A boolean value.
    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.sep();
        self.out
            .extend_from_slice(if b { b"true" as &[u8] } else { b"false" });
        self
    }

    /// `null`.
    pub fn null(&mut self) -> &mut Self {
        self.sep();
        self.out.extend_from_slice(b"null");
        self
    }

    /// Bytes that are already one JSON value (stored JSON, metadata).
    pub fn raw(&mut self, json_bytes: &[u8]) -> &mut Self {
        self.sep();
        self.out.extend_from_slice(json_bytes);
        self
    }

    /// A timestamp, or `null` for none.
    pub fn time(&mut self, ms: Option<u64>) -> &mut Self {
        match ms {
            Some(ms) => {
                // The timestamp is digits, `-`, `:`, `T` and `Z`: nothing to escape.
                self.sep();
                self.out.push(b'"');
                write_rfc3339_seconds(ms, &mut self.out);
                self.out.push(b'"');
                self
            }
            None => self.null(),
        }
    }

    /// Opens an object value.
    pub fn begin_object(&mut self) -> &mut Self {
        self.sep();
        self.out.push(b'{');
        self.comma = false;
        self
    }

    /// Closes an object.
    pub fn end_object(&mut self) -> &mut Self {
        self.out.push(b'}');
        self.comma = true;
        self
    }

    /// Opens an array value.
    pub fn begin_array(&mut self) -> &mut Self {
        self.sep();
        self.out.push(b'[');
        self.comma = false;
        self
    }

    /// Closes an array.
    pub fn end_array(&mut self) -> &mut Self {
        self.out.push(b']');
        self.comma = true;
        self
    }

    /// Mutable access for writers that append a value themselves (base64).
    pub fn value_buffer(&mut self) -> &mut Vec<u8> {
        self.sep();
        &mut self.out
    }

    /// Closes what the constructor opened: `data` and the envelope, or the object.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(self.close);
        self.out
    }
}

/// A JSON response with `Content-Type: application/json`.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The `ETag` of a version: `"<version>"`.
pub fn etag(version: u64) -> HeaderValue {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(version).as_bytes();
    let mut quoted = [b'"'; 22];
    quoted[1..=digits.len()].copy_from_slice(digits);
    header_value(&quoted[..digits.len() + 2]).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// Bytes of the per-thread chunk that [`header_value`] carves values out of.
const HEADER_CHUNK_BYTES: usize = 4096;

/// `bytes` as a header value (`None` when they are not a valid one), copied into a
/// chunk of this thread's rather than an allocation of its own: a GET's ETag and
/// request id took two of its eight allocations. Each value holds a share of its
/// chunk, which is freed with the last value carved out of it.
pub fn header_value(bytes: &[u8]) -> Option<HeaderValue> {
    thread_local! {
        static CHUNK: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }
    CHUNK
        .try_with(|chunk| {
            let mut chunk = chunk.borrow_mut();
            if chunk.capacity() < bytes.len() {
                *chunk = BytesMut::with_capacity(HEADER_CHUNK_BYTES.max(bytes.len()));
            }
            chunk.extend_from_slice(bytes);
            HeaderValue::from_maybe_shared(chunk.split().freeze()).ok()
        })
        // A thread that is exiting: a value of its own.
        .unwrap_or_else(|_| HeaderValue::from_bytes(bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_places_commas() {
        let mut w = JsonWriter::ok_data(0);
        w.key("a").u64(1).key("b").begin_array();
        w.begin_object().key("x").null().end_object();
        w.begin_object().key("y").bool(true).end_object();
        w.end_array()
            .key("c")
            .raw(b"{\"z\":1}")
            .key("t")
            .time(Some(0));
        let body = w.finish();
        assert_eq!(
            String::from_utf8(body).expect("UTF-8"),
            r#"{"ok":true,"data":{"a":1,"b":[{"x":null},{"y":true}],"c":{"z":1},"t":"1970-01-01T00:00:00Z"}}"#
        );
    }

    /// Stored text goes out as a JSON string whatever it holds, and bytes that are not
    /// UTF-8 are refused with nothing written (GET then answers 500, not broken JSON).
    #[test]
    fn text_values_are_escaped_and_checked_for_utf8() {
        for text in ["plain", "a \"quote\" \\ and\nlines\u{1}", "näive ☃ 😀", ""] {
            let mut w = JsonWriter::object(0);
            w.key("v").text(text.as_bytes()).expect("UTF-8");
            let expected = serde_json::json!({ "v": text }).to_string();
            assert_eq!(String::from_utf8(w.finish()).expect("UTF-8"), expected);
        }
        for bad in [&b"\xff"[..], b"ascii then \xc3", b"\xed\xa0\x80 surrogate"] {
            let mut w = JsonWriter::object(0);
            w.key("v");
            assert!(w.text(bad).is_err(), "{bad:?}");
            assert_eq!(w.finish(), b"{\"v\":}");
        }
    }

    #[test]
    fn header_values_are_carved_from_one_chunk_and_outlive_it() {
        let values: Vec<(String, HeaderValue)> = (0..2_000)
            .map(|i| {
                let text = format!("\"{i}\"-{}", "x".repeat(i % 40));
                let value = header_value(text.as_bytes()).expect("valid");
                (text, value)
            })
            .collect();
        // Consecutive values mostly sit side by side in one chunk.
        let adjacent = values
            .windows(2)
            .filter(|w| {
                let end = w[0].1.as_bytes().as_ptr_range().end;
                std::ptr::eq(end, w[1].1.as_bytes().as_ptr())
            })
            .count();
        assert!(adjacent > values.len() * 9 / 10, "{adjacent}");
        for (text, value) in &values {
            assert_eq!(value.as_bytes(), text.as_bytes());
        }
        assert_eq!(header_value(b"a\nb"), None);
        let long = vec![b'a'; HEADER_CHUNK_BYTES * 2];
        assert_eq!(header_value(&long).map(|v| v.len()), Some(long.len()));
    }

    #[test]
    fn etags_quote_the_version() {
        assert_eq!(etag(0), "\"0\"");
        assert_eq!(etag(42), "\"42\"");
        assert_eq!(etag(u64::MAX), "\"18446744073709551615\"");
    }

    #[test]
    fn bare_objects_close_once() {
        let mut w = JsonWriter::object(0);
        w.key("a").u64(1).key("b").null();
        assert_eq!(w.finish(), br#"{"a":1,"b":null}"#.to_vec());
    }
}
