//! Request bodies, read under a limit while they stream in, so an oversized body is
//! refused (413) without ever being buffered whole.

use axum::body::HttpBody;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::problem::{ErrorCode, Problem};

/// Reads `body`, at most `limit_bytes` of it. A `Content-Length` over the limit is
/// refused before reading a byte. Any body type: the router's boxed one, or hyper's
/// own for the requests the dispatcher serves without the router.
pub async fn read<B>(body: B, headers: &HeaderMap, limit_bytes: usize) -> Result<Bytes, Problem>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit_bytes as u64) {
        return Err(too_large(limit_bytes));
    }
    match Limited::new(body, limit_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit_bytes)),
        Err(err) if find_length_limit(err.as_ref()) => Err(too_large(limit_bytes)),
        Err(_) => Err(Problem::new(
            ErrorCode::MalformedRequest,
            "the request body could not be read to its end",
        )),
    }
}

/// True when a length-limit error hides somewhere in the error's source chain.
fn find_length_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

fn too_large(limit_bytes: usize) -> Problem {
    Problem::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than this route's limit of {limit_bytes} bytes"),
    )
}
