//! A request body must arrive within the request timeout. Without a deadline a client could send a head
//! and then a body that never ends, holding a connection (or an HTTP/2 stream) as long as it likes.
//!
//! Routes under a time limit for the whole request need nothing more; this is for `POST /verify`, whose
//! answer may rightly take long once the body is in (`?wait=`). The body is read here, at most one chunk
//! past the form limit, before the code check sees anything: a late body is answered 408 and a broken
//! one (the client went away mid-body, or garbled its framing) 400, and neither is an attempt, audited or
//! counted as a failure. Otherwise an attacker holding stalled bodies open could turn each into an
//! attempt at once by leaving. What was read is handed on unchanged, so a body over the limit meets the
//! usual 413.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::error::AppError;
use crate::web::form::BODY_LIMIT;

/// Reads the body within `timeout`, then runs the route with it; 408 when it is late, 400 when broken.
pub async fn body_deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, read_up_to(body, BODY_LIMIT + 1)).await {
        Ok(Ok(body)) => next.run(Request::from_parts(parts, Body::from(body))).await,
        Ok(Err(error)) => {
            tracing::debug!(%error, "the request body broke off");
            AppError::BadForm.into_response()
        }
        Err(_) => AppError::RequestTimeout.into_response(),
    }
}

/// Reads `body` to its end, or until more than `limit` bytes came.
async fn read_up_to(body: Body, limit: usize) -> Result<Vec<u8>, axum::Error> {
    let mut stream = body.into_data_stream();
    let mut read = Vec::new();
    while read.len() < limit {
        match stream.next().await {
            Some(chunk) => read.extend_from_slice(&chunk?),
            None => break,
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    #[tokio::test]
    async fn a_body_over_the_limit_is_cut_one_chunk_past_it() {
        let chunks = (0..100).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1000])));
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        assert_eq!(read_up_to(body, 4097).await.unwrap().len(), 5000);
    }

    #[tokio::test]
    async fn a_broken_body_is_an_error() {
        let chunks = [
            Ok(Bytes::from_static(b"code=1")),
            Err(std::io::Error::other("reset")),
        ];
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        assert!(read_up_to(body, 4097).await.is_err());
    }
}
