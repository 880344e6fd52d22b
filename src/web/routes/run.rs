//! The deploy button: the page with the code form, and `POST /verify`, which starts the run.
//!
//! `POST /verify` answers API clients with the original's JSON (and real status codes), and browsers
//! (`Accept: text/html`) with a 303 redirect back to the page and a flash message, so a reload never posts
//! the code again. Only a browser that enters a valid code gets a verified session, under a new id; a
//! cross-site post gets no session at all.
//! `POST /verify?wait=` holds the answer until the run ends, at most until the clock reaches the limit.
//! What it calls does its file work on the blocking pool (the stores, the run's log).

use askama::Template;
use askama_web::WebTemplate;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use tower_sessions::Session;

use crate::auth::attempt::{self, Started};
use crate::error::AppError;
use crate::model::client::ClientKey;
use crate::model::run::RunStatus;
use crate::model::time::later;
use crate::web::form::VerifyForm;
use crate::web::middleware::client_ip::client_ip;
use crate::web::middleware::csrf::{self, with_cookie};
use crate::web::middleware::edge::LoggedByHandler;
use crate::web::negotiate::wants_html;
use crate::web::query::Query;
use crate::web::routes::assets::asset_version;
use crate::web::session::{BrowserSession, Flash, FlashKind};
use crate::web::state::AppState;
use crate::web::views::{RunView, StateView};

/// How many runs the page lists.
const PAGE_RUNS: usize = 20;

/// The table of recent runs on the page.
#[derive(Template)]
#[template(path = "runs_table.html")]
pub struct RunsTable {
    pub runs: Vec<RunView>,
}

#[derive(Template, WebTemplate)]
#[template(path = "index.html")]
pub struct IndexPage {
    action_name: String,
    description: String,
    digits: u8,
    flash: Option<Flash>,
    csrf: String,
    state: StateView,
    /// The recent runs, rendered once per change of the history (see [`RunsTable`]).
    runs_table: Arc<str>,
    asset_version: &'static str,
}

/// `GET /`
pub async fn index(State(state): State<AppState>, session: Session, headers: HeaderMap) -> Response {
    let flash = BrowserSession(session).take_flash().await;
    page(&state, &headers, flash)
}

/// The page, showing `flash` if there is one.
fn page(state: &AppState, headers: &HeaderMap, flash: Option<Flash>) -> Response {
    let (csrf, csrf_cookie) = csrf::for_page(headers, state.config.server.cookies_secure());
    let history = state.runner.history();
    let version = history.version();
    let runs_table = state.caches.runs_table.get_or_make(version, || {
        let runs = history
            .snapshot()
            .iter()
            .rev()
            .take(PAGE_RUNS)
            .map(RunView::new)
            .collect();
        RunsTable { runs }.render().unwrap_or_default().into()
    });
    let page = IndexPage {
        action_name: state.config.action_name.clone(),
        description: state.config.action_description.clone(),
        digits: state.config.totp.digits,
        flash,
        csrf,
        state: StateView::new(state.runner.state(state.clock.now())),
        runs_table,
        asset_version: asset_version(),
    };
    with_cookie(page, csrf_cookie)
}

/// `POST /verify`
pub async fn verify(
    State(state): State<AppState>,
    Query(query): Query<VerifyQuery>,
    session: Session,
    request: Request,
) -> Response {
    // `?wait=` counts from here, before the run can start.
    let asked = state.clock.now();
    let html = wants_html(request.headers());
    let client = ClientKey::of(client_ip(&request, &state.config.server.trusted_proxies));
    let headers = request.headers().clone();
    let session = BrowserSession(session);
    let form = VerifyForm::from_request(request, &state).await;
    let form_token = form.as_ref().ok().and_then(|form| form.csrf.as_deref());
    let cross_site = csrf::is_cross_site(&headers, state.config.server.public_url.as_ref(), form_token);
    let request = attempt::Request {
        client,
        code: form.map(|form| form.code),
        cross_site,
    };
    let outcome = state.gatekeeper.attempt(request).await;
    // Refusals the gatekeeper counts it also logs, a line a minute per client.
    let counted = outcome.as_ref().is_err_and(attempt::is_counted_refusal);
    match &outcome {
        Err(_) if counted => {}
        Err(error) => tracing::info!(outcome = error.code(), "verification refused"),
        Ok(_) => {}
    }
    let mut response = respond(&state, &session, &headers, &query, asked, outcome, html).await;
    if counted {
        response.extensions_mut().insert(LoggedByHandler);
    }
    response
}

/// The answer to an attempt: JSON for API clients (which read output with the API token and get no
/// session), a redirect with a flash for browsers, whose session is verified under a new id by a valid
/// code. A cross-site post gets no session at all.
async fn respond(
    state: &AppState,
    session: &BrowserSession,
    headers: &HeaderMap,
    query: &VerifyQuery,
    asked: OffsetDateTime,
    outcome: Result<Started, AppError>,
    html: bool,
) -> Response {
    if !html {
        return match outcome {
            Ok(started) => match query.wait() {
                Some(wait) => wait_for_end(state, started, later(asked, wait_limit(state, wait))).await,
                None => Json(started).into_response(),
            },
            Err(error) => error.into_response(),
        };
    }
    let flash = match outcome {
        Ok(started) => {
            session
                .set_verified(later(state.clock.now(), state.config.access.verified_for))
                .await;
            Flash {
                kind: FlashKind::Success,
                message: started.message,
            }
        }
        // A cross-site post is free to send (not a failure), so it gets no session: that would be a
        // cookie to plant in another browser, and memory to fill. The page is shown with the refusal.
        Err(error @ AppError::Forbidden) => {
            let flash = Flash {
                kind: FlashKind::Error,
                message: error.to_string(),
            };
            return (error.status(), page(state, headers, Some(flash))).into_response();
        }
        Err(error) => Flash {
            kind: FlashKind::Error,
            message: error.to_string(),
        },
    };
    session.set_flash(flash).await;
    Redirect::to("/").into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct VerifyQuery {
    /// `true` waits until the run ends; a number waits at most that many seconds; anything else is a
    /// bad query rather than no wait, so a typo does not turn `curl --fail` into a false success.
    #[serde(default, deserialize_with = "wait")]
    wait: Option<Option<Duration>>,
}

impl VerifyQuery {
    fn wait(&self) -> Option<Option<Duration>> {
        self.wait
    }
}

/// `wait`: `Some(None)` until the end, `Some(Some(limit))`, or `None` for no wait.
fn wait<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<Duration>>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.as_str() {
        "true" | "yes" => Ok(Some(None)),
        "false" | "0" | "no" | "" => Ok(None),
        seconds => seconds
            .parse()
            .map(|seconds| Some(Some(Duration::from_secs(seconds))))
            .map_err(|_| serde::de::Error::custom("expected true, false or a number of seconds")),
    }
}

/// How long `?wait=` holds the answer: what the client asked, at most `max_wait`.
fn wait_limit(state: &AppState, wait: Option<Duration>) -> Duration {
    let max_wait = state.config.access.max_wait;
    wait.unwrap_or(max_wait).min(max_wait)
}

/// Holds the answer until the run ends (or the clock reaches `deadline`): 200 when it succeeded, 424
/// when it ended otherwise, 202 while it is still going. `curl --fail` thus fails unless the deploy
/// succeeded.
async fn wait_for_end(state: &AppState, started: Started, deadline: OffsetDateTime) -> Response {
    let id = started.run_id;
    let ended = tokio::select! {
        () = state.runner.wait_finished(id) => true,
        () = state.clock.sleep_until(deadline) => false,
    };
    let record = state.runner.history().record(id);
    let (status, success, message) = match &record {
        Some(record) if ended && record.status == RunStatus::Succeeded => {
            (StatusCode::OK, true, format!("Run #{id}: {}.", record.status))
        }
        Some(record) if ended => (
            StatusCode::FAILED_DEPENDENCY,
            false,
            format!("Run #{id}: {}.", record.status),
        ),
        _ => (
            StatusCode::ACCEPTED,
            false,
            format!("Run #{id} is still going; follow it at {}.", started.run_url),
        ),
    };
    let mut body = serde_json::to_value(&started).unwrap_or_default();
    body["message"] = message.into();
    body["success"] = success.into();
    body["run"] = serde_json::to_value(&record).unwrap_or_default();
    (status, Json(body)).into_response()
}
