//! The application: its shared state, the router and its middleware, and serving with graceful shutdown.
//!
//! [`build_router`] is pure, so tests drive it in-process; [`serve`] takes a bound listener and a shutdown
//! signal, so tests bind port 0 and stop the server without sleeping.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};
use tracing::Level;

use crate::audit::{AuditError, AuditLog};
use crate::clock::SharedClock;
use crate::config::{Config, SecretKey};
use crate::error::AppError;
use crate::guard::{Guard, GuardError};
use crate::history::{History, HistoryError};
use crate::routes;
use crate::runner::Runner;
use crate::server;
use crate::session::BoundedStore;
use crate::totp::Verifier;

/// The most browser sessions kept at once (a few hundred bytes each).
const SESSION_CAPACITY: usize = 10_000;
/// The largest request body accepted; a code form needs a few dozen bytes.
pub const BODY_LIMIT: usize = 4 * 1024;

/// Only same-origin scripts and styles, no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub verifier: Arc<Verifier>,
    pub runner: Arc<Runner>,
    pub guard: Arc<Guard>,
    pub audit: Arc<AuditLog>,
}

/// Why the application cannot start on its files.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Guard(#[from] GuardError),
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
        Ok(Self {
            config: Arc::new(config),
            clock,
            verifier,
            runner,
            guard,
            audit,
        })
    }
}

/// The routes and their middleware. Layers listed later wrap those listed earlier, so a request passes
/// tracing first, then the security headers, the timeout and the session, and reaches the body limit last.
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
    // Quick answers get a time limit; these may rightly take long: waiting for a run to end
    // (`?wait=`), the live output stream and the whole log.
    let timed = Router::new()
        .route("/", get(routes::run::index))
        .route("/get_deploy_status", get(routes::status::deploy_status))
        .route("/healthz", get(routes::status::health))
        .route("/static/{name}", get(routes::assets::asset))
        .route("/runs", get(routes::runs::list))
        .route("/runs/{id}/cancel", post(routes::runs::cancel))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ));
    let untimed = Router::new()
        .route("/verify", post(routes::run::verify))
        .route("/runs/{id}", get(routes::runs::show))
        .route("/runs/{id}/log", get(routes::runs::log))
        .route("/runs/{id}/events", get(routes::runs::events));
    let router = timed
        .merge(untimed)
        .fallback(|| async { AppError::NotFound })
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(sessions);
    // A panic is a bug the tests hunt for; should one slip through, the client still gets an answer.
    let router = router.layer(CatchPanicLayer::custom(|_| AppError::Internal.into_response()));
    with_security_headers(router).layer(
        TraceLayer::new_for_http()
            .make_span_with(request_span)
            .on_response(DefaultOnResponse::new().level(Level::INFO)),
    )
}

/// The span of a request names the route, never the raw URI (which could carry a code in its query).
fn request_span(request: &Request) -> tracing::Span {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", MatchedPath::as_str);
    tracing::info_span!("request", method = %request.method(), path)
}

/// Headers every answer carries; assets set their own `Cache-Control`, everything else is `no-store`.
fn with_security_headers(router: Router) -> Router {
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    router
        .layer(set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::REFERRER_POLICY, "no-referrer"))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
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
