//! The application: its shared state, the router and its middleware, and serving with graceful shutdown.
//!
//! [`build_router`] is pure, so tests drive it in-process; [`serve`] takes a bound listener and a shutdown
//! signal, so tests bind port 0 and stop the server without sleeping.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::FutureExt;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::audit::{AuditError, AuditLog};
use crate::clock::SharedClock;
use crate::config::{Config, SecretKey};
use crate::error::AppError;
use crate::fsio::StateFileError;
use crate::guard::Guard;
use crate::history::History;
use crate::routes;
use crate::routes::status::StatusCache;
use crate::runner::Runner;
use crate::server;
use crate::session::BoundedStore;
use crate::totp::Verifier;

/// The most browser sessions kept at once (a few hundred bytes each).
const SESSION_CAPACITY: usize = 10_000;
/// The largest request body accepted; a code form needs a few dozen bytes.
pub const BODY_LIMIT: usize = 4 * 1024;

/// Headers every answer carries, whatever the handler set.
const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
];

/// Only same-origin scripts and styles, no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Everything a handler needs: one `Arc`, so handing it to a request costs one increment. Fields are
/// reached through `Deref` (`state.runner`).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

pub struct AppStateInner {
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub verifier: Arc<Verifier>,
    pub runner: Arc<Runner>,
    pub guard: Arc<Guard>,
    pub audit: Arc<AuditLog>,
    /// The last `/get_deploy_status` answer.
    pub status: StatusCache,
}

/// Why the application cannot start on its files.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The history or the regulation state.
    #[error(transparent)]
    State(#[from] StateFileError),
    #[error("{0}\n  fix: check that its directory exists and is writable by authrun")]
    Audit(#[from] AuditError),
    #[error("state directory {path}: cannot be created: {source}\n  fix: check the path of `state_dir`")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl AppState {
    /// Opens the state directory, the history (recovering runs a crash left "Deploying"), the regulation
    /// state and the audit log, and restores the gate from the history.
    pub fn new(config: Config, secret: &SecretKey, clock: SharedClock) -> Result<Self, StartError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.state_dir)
            .map_err(|source| StartError::StateDir {
                path: config.state_dir.clone(),
                source,
            })?;
        let history = Arc::new(History::open(&config.history_file, config.history_retention)?);
        let guard = Arc::new(Guard::open(&config.regulation_file, config.regulation.clone())?);
        let audit = Arc::new(AuditLog::open(&config.audit_file)?);
        let runner = Arc::new(Runner::new(config.script.clone(), Arc::clone(&clock), history));
        let verifier = Arc::new(Verifier::new(secret.bytes().to_vec(), config.totp.clone()));
        Ok(Self(Arc::new(AppStateInner {
            config: Arc::new(config),
            clock,
            verifier,
            runner,
            guard,
            audit,
            status: StatusCache::default(),
        })))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The routes and their middleware: a request passes the log line, security headers and panic guard
/// first (one middleware), then the body limit, then (by route) the time limit and the session.
pub fn build_router(state: AppState) -> Router {
    let request_timeout = state.config.server.request_timeout;
    let https = state
        .config
        .server
        .public_url
        .as_ref()
        .is_some_and(|url| url.https);
    let sessions = SessionManagerLayer::new(BoundedStore::new(SESSION_CAPACITY))
        .with_name("authrun_session")
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(https)
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)));
    let timeout = || TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout);
    // Pages and the flows that remember something about a browser have a session; the API answers and
    // assets do not need one. Pages get a time limit; waiting for a run to end (`?wait=`), the live output
    // stream and the whole log may rightly take long, and the status, health and assets are answered from
    // memory without waiting on anything, so a timer would only cost them.
    let pages = Router::new()
        .route("/", get(routes::run::index))
        .route("/runs", get(routes::runs::list))
        .route("/runs/{id}/cancel", post(routes::runs::cancel))
        .layer(timeout())
        .route("/verify", post(routes::run::verify))
        .route("/runs/{id}", get(routes::runs::show))
        .route("/runs/{id}/log", get(routes::runs::log))
        .route("/runs/{id}/events", get(routes::runs::events))
        .layer(sessions);
    let api = Router::new()
        .route("/get_deploy_status", get(routes::status::deploy_status))
        .route("/healthz", get(routes::status::health))
        .route("/static/{name}", get(routes::assets::asset));
    // One stack for every route, outermost first. Applied with a single `layer` call, so a request pays
    // for one boxed service rather than one per layer.
    let common = ServiceBuilder::new()
        .layer(axum::middleware::from_fn(log_and_secure))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    pages
        .merge(api)
        .fallback(|| async { AppError::NotFound })
        .with_state(state)
        .layer(common)
}

/// Routes polled by machines and by open pages (every 1 to 10 s): their successful answers are logged at
/// `debug`, so a tab left open does not write thousands of lines a day. Their failures are still `info`.
const QUIET_ROUTES: [&str; 3] = ["/get_deploy_status", "/healthz", "/static/{name}"];

/// Every answer leaves through here: it gets the security headers (`Cache-Control: no-store` unless the
/// handler chose otherwise, as assets do) and one log line with method, route, status and time taken.
/// The route is the matched pattern, never the raw URI, which could carry a code in its query; and a
/// plain event rather than a span per request, as spans cost more than the status endpoint itself.
/// A handler that panics (a bug the tests hunt for) still gets its client an answer: a 500.
async fn log_and_secure(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = std::time::Instant::now();
    let mut response = AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| AppError::Internal.into_response());
    let headers = response.headers_mut();
    headers.reserve(SECURITY_HEADERS.len() + 1);
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let route = route.as_ref().map_or("(unmatched)", MatchedPath::as_str);
    let status = response.status();
    macro_rules! request_line {
        ($level:expr) => {
            tracing::event!(
                $level,
                %method,
                route,
                status = status.as_u16(),
                micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "request"
            )
        };
    }
    if status.as_u16() < 400 && QUIET_ROUTES.contains(&route) {
        request_line!(tracing::Level::DEBUG);
    } else {
        request_line!(tracing::Level::INFO);
    }
    response
}

/// Serves until `shutdown` resolves, then stops the running script (if any) and records its status.
/// The script is stopped while open connections drain, so live output streams end with the run.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let runner = Arc::clone(&state.runner);
    let limits = server::Limits {
        max_connections: state.config.server.max_connections,
        header_read_timeout: state.config.server.header_read_timeout,
    };
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let stop_runner = tokio::spawn(async move {
        if stopped.await.is_ok() {
            runner.shutdown().await;
        }
    });
    let signal = async move {
        shutdown.await;
        let _ = stopping.send(());
    };
    let served = server::serve(listener, build_router(state), limits, signal).await;
    if let Err(error) = stop_runner.await {
        tracing::error!(%error, "stopping the running script failed");
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_handler_that_panics_still_answers_500_with_the_security_headers() {
        async fn buggy() -> StatusCode {
            panic!("a bug in a handler")
        }
        let router = Router::new()
            .route("/bug", get(buggy))
            .layer(axum::middleware::from_fn(log_and_secure));
        let request = Request::builder().uri("/bug").body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
