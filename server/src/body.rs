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
    // Collected by hand rather than by `BodyExt::collect`, whose list of chunks costs an
    // allocation per request: a body mostly comes in one chunk, which is then the
    // result itself (no copy). The chunks of a body in several stay as they came (views
    // of hyper's read buffers) until the last has arrived, and are then copied once into
    // a buffer of their total size: a body refused on the way (over the limit) is never
    // copied, and nothing is grown by doubling (which held up to twice the limit, and
    // copied a bulk body about twice).
    let mut body = std::pin::pin!(Limited::new(body, limit_bytes));
    let mut first = Bytes::new();
    let mut more: Vec<Bytes> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(err) if find_length_limit(err.as_ref()) => return Err(too_large(limit_bytes)),
            Err(_) => {
                return Err(Problem::new(
                    ErrorCode::MalformedRequest,
                    "the request body could not be read to its end",
                ));
            }
        };
        // Trailers carry no body bytes.
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if first.is_empty() {
            first = chunk;
        } else if !chunk.is_empty() {
            more.push(chunk);
        }
    }
    if more.is_empty() {
        return Ok(first);
    }
    let total = first.len() + more.iter().map(Bytes::len).sum::<usize>();
    let mut joined = Vec::with_capacity(total);
    joined.extend_from_slice(&first);
    for chunk in &more {
        joined.extend_from_slice(chunk);
    }
    Ok(Bytes::from(joined))
}

/// True when `err`, or an error in its source chain, is the length limit's.
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::http::HeaderMap;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    use super::*;

    /// A body of these frames, each a data chunk but `None`, which is a trailers frame.
    fn frames(
        chunks: &[Option<&'static [u8]>],
    ) -> impl HttpBody<Data = Bytes, Error = Infallible> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| {
                Ok(match c {
                    Some(bytes) => Frame::data(Bytes::from_static(bytes)),
                    None => Frame::trailers(HeaderMap::new()),
                })
            })
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn every_chunk_is_read_in_order_and_trailers_add_nothing() {
        let none = HeaderMap::new();
        for (chunks, want) in [
            (vec![], &b""[..]),
            (vec![Some(&b""[..])], b""),
            (vec![Some(&b"abc"[..])], b"abc"),
            (vec![Some(&b""[..]), Some(b"abc")], b"abc"),
            (
                vec![Some(&b"ab"[..]), Some(b""), Some(b"cde"), None, Some(b"f")],
                b"abcdef",
            ),
            (
                vec![Some(&b"a"[..]), Some(b"b"), Some(b"c"), Some(b"d")],
                b"abcd",
            ),
        ] {
            let got = read(frames(&chunks), &none, 6).await;
            assert_eq!(got.as_deref().ok(), Some(want), "{chunks:?}");
        }
    }

    #[tokio::test]
    async fn a_body_in_one_chunk_is_not_copied() {
        static CHUNK: &[u8] = b"hello";
        let got = read(frames(&[Some(CHUNK)]), &HeaderMap::new(), 64).await;
        assert_eq!(got.map(|b| b.as_ptr()).ok(), Some(CHUNK.as_ptr()));
    }

    #[tokio::test]
    async fn chunks_over_the_limit_together_are_refused() {
        let got = read(
            frames(&[Some(b"abc"), Some(b"def"), Some(b"g")]),
            &HeaderMap::new(),
            6,
        )
        .await;
        let code = got.err().map(|p| p.code);
        assert_eq!(code, Some(ErrorCode::PayloadTooLarge));
    }
}
