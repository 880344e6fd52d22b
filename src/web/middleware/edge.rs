//! The edge every request and answer passes, around the whole router: a request for a name that is not
//! authrun's is refused (see `host`), each answer gets the security headers, a request that panics still
//! gets one, a browser asking for a page gets a refusal as a page (see `web::error_page`), and each request
//! leaves one log line.
//!
//! It wraps the router rather than each route (as `Router::layer` would), so a request pays for it once
//! and without a boxed future: the status endpoint is polled by every open page and by scripts.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::CatchUnwind;
use tower::Service;

use crate::error::AppError;
use crate::web::error_page;
use crate::web::middleware::host::AllowedHosts;
use crate::web::negotiate::wants_html;

/// Headers every answer carries, whatever the handler set.
const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
];

/// Only same-origin scripts and styles, no inline script, no framing. Images may also be `data:` URIs:
/// the enrollment page shows its QR code inline (an image cannot run script).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The longest path written to the log; longer ones (probes, attacks) are cut.
const LOGGED_PATH_BYTES: usize = 120;

/// Put in an answer's extensions by a handler that logged it itself (refusals the gatekeeper counts, a
/// line a minute per client): the edge logs its request line at `debug` only.
#[derive(Debug, Clone, Copy)]
pub struct LoggedByHandler;

/// Wraps a service (the router) with the edge.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    hosts: AllowedHosts,
}

impl<S> Edge<S> {
    /// The edge around `inner`, answering requests for `hosts`.
    pub fn new(inner: S, hosts: AllowedHosts) -> Self {
        Self { inner, hosts }
    }
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let seen = Seen {
            method: request.method().clone(),
            uri: request.uri().clone(),
            started: Instant::now(),
            html: wants_html(request.headers()),
        };
        let answer = if self.hosts.allow(request.headers(), request.uri()) {
            Answer::Routed {
                future: AssertUnwindSafe(self.inner.call(request)).catch_unwind(),
            }
        } else {
            Answer::Refused {
                response: Some(AppError::UnknownHost.into_response()),
            }
        };
        EdgeFuture {
            answer,
            seen: Some(seen),
        }
    }
}

/// What the log line needs from the request, taken before the router has it.
struct Seen {
    method: Method,
    /// Only its path is logged.
    uri: Uri,
    started: Instant,
    /// The request asked for HTML (a browser's navigation or form post).
    html: bool,
}

pin_project_lite::pin_project! {
    /// The router's answer, or the edge's refusal, finished by the edge.
    pub struct EdgeFuture<F> {
        #[pin]
        answer: Answer<F>,
        seen: Option<Seen>,
    }
}

pin_project_lite::pin_project! {
    #[project = AnswerProjection]
    enum Answer<F> {
        Routed { #[pin] future: CatchUnwind<AssertUnwindSafe<F>> },
        Refused { response: Option<Response> },
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.answer.project() {
            AnswerProjection::Routed { future } => {
                let mut response = match ready!(future.poll(cx)) {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    // A handler panicked: a bug the tests hunt for. The panic message is already on stderr.
                    Err(_) => AppError::Internal.into_response(),
                };
                if this.seen.as_ref().is_some_and(|seen| seen.html)
                    && let Some(error) = response.extensions_mut().remove::<AppError>()
                {
                    response = error_page::into_page(&error, response);
                }
                response
            }
            // A name that is not authrun's gets no page in authrun's layout (its styles and links would be
            // refused too): the JSON refusal, whoever asks.
            AnswerProjection::Refused { response } => response
                .take()
                .unwrap_or_else(|| AppError::Internal.into_response()),
        };
        secure(&mut response);
        if let Some(seen) = this.seen.take() {
            log(&seen, &response);
        }
        Poll::Ready(Ok(response))
    }
}

/// Adds the security headers, and `Cache-Control: no-store` unless the handler chose otherwise (as
/// assets do).
fn secure(response: &mut Response) {
    let headers = response.headers_mut();
    headers.reserve(SECURITY_HEADERS.len() + 1);
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// One line per request: method, path (never the query, which could carry a code), status and time
/// taken. A plain event rather than a span, as spans cost more than the status endpoint itself.
/// Successful answers of the routes that open pages and scripts poll (every 1 to 10 s) are logged at
/// `debug`, so a tab left open does not write thousands of lines a day; their failures stay at `info`.
/// So are answers marked [`LoggedByHandler`], so a client flooding refused requests is not a line each.
fn log(seen: &Seen, response: &Response) {
    let status = response.status().as_u16();
    let micros = u64::try_from(seen.started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let path = seen.uri.path();
    macro_rules! request_line {
        ($level:expr) => {
            tracing::event!(
                $level,
                method = %seen.method,
                path = %loggable_path(path),
                status,
                micros,
                "request"
            )
        };
    }
    let quiet = response.extensions().get::<LoggedByHandler>().is_some();
    if quiet || (status < 400 && is_polled(path)) {
        request_line!(tracing::Level::DEBUG);
    } else {
        request_line!(tracing::Level::INFO);
    }
}

/// The routes that open pages and scripts poll: the statuses, the list of actions, the health check and
/// the assets.
fn is_polled(path: &str) -> bool {
    path == "/get_deploy_status"
        || path == "/healthz"
        || path == "/actions"
        || path.starts_with("/static/")
        || (path.starts_with("/actions/") && path.ends_with("/status"))
}

/// `path` as logged: quoted, and cut to [`LOGGED_PATH_BYTES`] on a character boundary.
fn loggable_path(path: &str) -> impl std::fmt::Display + '_ {
    let mut end = path.len().min(LOGGED_PATH_BYTES);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < path.len() { "..." } else { "" };
    std::fmt::from_fn(move |f| write!(f, "{:?}{cut}", &path[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_handler_that_panics_still_answers_500_with_the_security_headers() {
        async fn buggy() -> StatusCode {
            panic!("a bug in a handler")
        }
        let edge = Edge::new(Router::new().route("/bug", get(buggy)), AllowedHosts::default());
        let request = Request::builder().uri("/bug").body(Body::empty()).unwrap();
        let response = edge.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let path = format!("/{}", "é".repeat(100));
        let logged = loggable_path(&path).to_string();
        assert!(logged.ends_with("\"..."), "{logged}");
        let kept = logged.trim_start_matches('"').trim_end_matches("\"...");
        assert!(kept.len() <= LOGGED_PATH_BYTES, "{logged}");
        assert!(path.starts_with(kept), "{logged}");
        assert_eq!(loggable_path("/runs/7").to_string(), "\"/runs/7\"");
    }
}
