//! The routes and their middleware. [`build_router`] is pure, so tests drive it in-process.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::error::AppError;
use crate::web::form::BODY_LIMIT;
use crate::web::middleware::body_deadline::body_deadline;
use crate::web::middleware::edge::Edge;
use crate::web::middleware::host::AllowedHosts;
use crate::web::routes;
use crate::web::session::{BoundedStore, Budgets, SessionBackend, SharedStore};
use crate::web::state::AppState;

/// The most browser sessions kept at once (a few hundred bytes each). Verified sessions each took a
/// code that started a run, so far fewer than their budget can exist at once; anonymous ones (a flash
/// message) anyone can make, and they can only push out each other.
const SESSION_BUDGETS: Budgets = Budgets {
    anonymous: 10_000,
    verified: 1_000,
};
/// A session not saved for this long is gone (longer when `verified_minutes` is longer).
const SESSION_IDLE: time::Duration = time::Duration::hours(1);

/// The routes and their middleware: a request passes the edge first (the names answered, security
/// headers, panic guard, log line), then (by route) the session and the body limit, then the time limit.
pub fn build_router(state: AppState) -> Edge<Router> {
    let request_timeout = state.config.server.request_timeout;
    let hosts = AllowedHosts::new(state.config.server.public_url.as_ref());
    let verified_for = time::Duration::try_from(state.config.access.verified_for).unwrap_or(SESSION_IDLE);
    let lifetime = SESSION_IDLE.max(verified_for);
    let store = match &state.session_table {
        Some(table) => SessionBackend::Shared(SharedStore::new(
            state.clock.clone(),
            lifetime,
            SESSION_BUDGETS,
            table.clone(),
        )),
        None => SessionBackend::Memory(
            BoundedStore::new(state.clock.clone(), lifetime, SESSION_BUDGETS).kept_in(state.sessions.clone()),
        ),
    };
    let sessions = SessionManagerLayer::new(store)
        .with_name("authrun_session")
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(state.config.server.cookies_secure())
        .with_expiry(Expiry::OnInactivity(lifetime));
    // Protects the server from slow requests, as the socket limits do: real time, not the `Clock`.
    let timeout = || TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout);
    // Pages and the flows that remember something about a browser have a session; the API answers and
    // assets do not need one. Pages get a time limit; waiting for a run to end (`?wait=`), the live output
    // stream and the whole log may rightly take long, and the status, health and assets are answered from
    // memory without waiting on anything, so a timer would only cost them (so are the metrics). `/verify` and
    // `/actions/{id}/run` get the time limit for their body only.
    let pages = Router::new()
        .route("/", get(routes::run::index))
        .route("/actions/{id}", get(routes::run::show_action))
        .route("/runs", get(routes::runs::list))
        .route("/runs/{id}/cancel", post(routes::runs::cancel))
        .route("/login", post(routes::operators::login))
        .route("/logout", post(routes::operators::logout))
        .route("/email-code", post(routes::operators::email_code))
        .route(
            "/enroll/{token}",
            get(routes::operators::show_enrollment).post(routes::operators::complete_enrollment),
        )
        .route("/account", get(routes::operators::account))
        .route("/account/backup-codes", post(routes::operators::regenerate_codes))
        .route("/account/password", post(routes::operators::change_password))
        .route("/admin", get(routes::admin::page))
        .route("/admin/operators", post(routes::admin::change))
        .route("/admin/operators/{name}/{change}", post(routes::admin::change))
        .route("/api/admin/operators", get(routes::admin::operators_json))
        .route("/api/admin/stats", get(routes::admin::stats))
        .layer(timeout())
        .route(
            "/verify",
            post(routes::run::verify).layer(from_fn_with_state(request_timeout, body_deadline)),
        )
        .route(
            "/actions/{id}/run",
            post(routes::run::run_action).layer(from_fn_with_state(request_timeout, body_deadline)),
        )
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
        .route("/actions/{id}/status", get(routes::status::action_status))
        .route("/actions", get(routes::status::actions))
        .route("/healthz", get(routes::status::health))
        .route("/metrics", get(routes::metrics::metrics))
        .route("/static/{name}", get(routes::assets::asset))
        .route("/favicon.ico", get(routes::assets::favicon))
        .route("/apple-touch-icon.png", get(routes::assets::touch_icon))
        .route(
            "/apple-touch-icon-precomposed.png",
            get(routes::assets::touch_icon),
        );
    let router = pages
        .merge(api)
        .fallback(|| async { AppError::NotFound })
        .with_state(state);
    Edge::new(router, hosts)
}
