//! Request ids: every request gets one, taken from `x-request-id` when the client sent
//! a sane one (so ids can follow a request across services) or generated here.

use axum::http::{HeaderMap, HeaderName};

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
    let sane = headers
        .get(HEADER)
        .map(|v| v.as_bytes())
        .filter(|v| is_sane(v))
        .and_then(|v| std::str::from_utf8(v).ok());
    match sane {
        Some(id) => RequestId(id.to_owned()),
        None => RequestId(fresh()),
    }
}

/// A new id: a random (v4) UUID as 32 lowercase hex digits. Its 122 random bits come
/// from a thread-local ChaCha generator seeded once from the OS (uuid's `fast-rng`), so
/// ids stay unguessable without a `getrandom` syscall per request.
fn fresh() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .simple()
        .encode_lower(&mut buf)
        .to_owned()
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
    use axum::http::HeaderValue;

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
    fn missing_or_odd_ids_are_replaced() {
        assert_eq!(take_or_make(&HeaderMap::new()).0.len(), 32);
        assert_ne!(take_or_make(&with("a b")).0, "a b");
        assert_ne!(take_or_make(&with("\"}")).0, "\"}");
    }
}
