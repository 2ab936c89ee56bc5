//! Request ids: every request gets one, taken from `x-request-id` when the client sent
//! a sane one (so ids can follow a request across services) or generated here.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The header that carries the id, in and out.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept; longer ones are replaced, so logs stay bounded.
pub const REQUEST_ID_BYTES_MAX: usize = 128;

/// The id of the request being served; handlers find it in the request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The client's id if it is 1..=128 characters of `[A-Za-z0-9._:/+=@-]`, else a new
/// random one. Anything else could smuggle control characters or JSON into log lines.
pub fn take_or_make(headers: &HeaderMap) -> RequestId {
    RequestId(
        header_or_fresh(headers)
            .to_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// [`take_or_make`] as the header value it goes out in: the client's value itself
/// (no copy) when it is sane, else a new one. Either way it is printable ASCII, so
/// `to_str` on it succeeds.
pub fn header_or_fresh(headers: &HeaderMap) -> HeaderValue {
    match headers.get(HEADER).filter(|v| is_sane(v.as_bytes())) {
        Some(sane) => sane.clone(),
        None => fresh(),
    }
}

/// A new id: a random (v4) UUID as 32 lowercase hex digits. Its 122 random bits come
/// from a thread-local ChaCha generator seeded once from the OS (uuid's `fast-rng`), so
/// ids stay unguessable without a `getrandom` syscall per request. The value is carved
/// from a per-thread chunk ([`crate::reply::header_value`]), not allocated.
fn fresh() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let hex = uuid::Uuid::new_v4().simple().encode_lower(&mut buf);
    // Hex digits are always a valid header value.
    crate::reply::header_value(hex.as_bytes()).unwrap_or(HeaderValue::from_static("0"))
}

fn is_sane(id: &[u8]) -> bool {
    (1..=REQUEST_ID_BYTES_MAX).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/+=@-".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn a_sane_client_id_is_kept() {
        assert_eq!(take_or_make(&with("abc-123")).0, "abc-123");
    }

    #[test]
    fn fresh_ids_differ_and_are_hex() {
        let a = header_or_fresh(&HeaderMap::new());
        let b = header_or_fresh(&HeaderMap::new());
        assert_ne!(a, b);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit), "{a:?}");
        assert_eq!(header_or_fresh(&with("trace-9")), "trace-9");
    }

    #[test]
    fn missing_or_odd_ids_are_replaced() {
        assert_eq!(take_or_make(&HeaderMap::new()).0.len(), 32);
        assert_ne!(take_or_make(&with("a b")).0, "a b");
        assert_ne!(take_or_make(&with("\"}")).0, "\"}");
    }
}
