//! The application: its shared state, the router and its middleware, and serving with graceful shutdown.
//!
//! [`build_router`] is pure, so tests drive it in-process; [`serve`] takes a bound listener and a shutdown
//! signal, so tests bind port 0 and stop the server without sleeping.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::audit::{AuditError, AuditLog};
use crate::clock::SharedClock;
use crate::config::{Config, SecretKey};
use crate::edge::Edge;
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

/// The routes and their middleware: a request passes the edge first (security headers, panic guard, log
/// line), then (by route) the session and the body limit, then the time limit.
pub fn build_router(state: AppState) -> Edge<Router> {
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
        // One `layer` call, so a request pays for one boxed service rather than one per layer. Only
        // these routes read a body.
        .layer(
            ServiceBuilder::new()
                .layer(sessions)
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        );
    let api = Router::new()
        .route("/get_deploy_status", get(routes::status::deploy_status))
        .route("/healthz", get(routes::status::health))
        .route("/static/{name}", get(routes::assets::asset));
    let router = pages
        .merge(api)
        .fallback(|| async { AppError::NotFound })
        .with_state(state);
    Edge::new(router)
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
