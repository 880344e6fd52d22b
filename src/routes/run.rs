//! The deploy button: the page with the code form, and `POST /verify`, which starts the run.
//!
//! `POST /verify` answers API clients with the original's JSON (and real status codes), and browsers
//! (`Accept: text/html`) with a 303 redirect back to the page and a flash message, so a reload never posts
//! the code again.

use askama::Template;
use askama_web::WebTemplate;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;
use tower_sessions::Session;

use crate::app::AppState;
use crate::attempt::{self, Started};
use crate::client::client_ip;
use crate::csrf;
use crate::error::AppError;
use crate::guard::ClientKey;
use crate::history::RunStatus;
use crate::origin;
use crate::routes::assets::asset_version;
use crate::runner::later;
use crate::session::{BrowserSession, Flash, FlashKind};
use crate::view::{RunView, StateView};

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
    let session = BrowserSession(session);
    let flash = session.take_flash().await;
    let (csrf, csrf_cookie) = csrf::for_page(&headers, state.config.server.cookies_secure());
    let runs_table = state.runner.history().memo(|records| {
        let runs = records.iter().rev().take(PAGE_RUNS).map(RunView::new).collect();
        RunsTable { runs }.render().unwrap_or_default()
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

/// A page, with the `Set-Cookie` that hands out its CSRF token when the browser had none.
pub fn with_cookie(page: impl IntoResponse, cookie: Option<HeaderValue>) -> Response {
    let mut response = page.into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /verify`
pub async fn verify(
    State(state): State<AppState>,
    Query(query): Query<VerifyQuery>,
    session: Session,
    request: Request,
) -> Response {
    let html = wants_html(request.headers());
    let client = ClientKey::of(client_ip(&request, &state.config.server.trusted_proxies));
    let headers = request.headers().clone();
    let session = BrowserSession(session);
    let form = VerifyForm::from_request(request, &state).await;
    let cookie_token = csrf::from_cookie(&headers);
    let form_token = form.as_ref().ok().and_then(|form| form.csrf.as_deref());
    let proof = origin::Proof {
        cookie_token: cookie_token.as_deref(),
        form_token,
    };
    let public_url = state.config.server.public_url.as_ref();
    let cross_site = origin::check(&headers, public_url, &proof).is_err();
    let request = attempt::Request {
        client,
        code: form.map(|form| form.code),
        cross_site,
    };
    let outcome = attempt::attempt(&state, request).await;
    match &outcome {
        Ok(_) => {
            session
                .set_verified(later(state.clock.now(), state.config.access.verified_for))
                .await
        }
        Err(error) => tracing::info!(outcome = error.code(), "verification refused"),
    }
    match (outcome, html) {
        (Ok(started), false) => match query.wait() {
            Some(wait) => wait_for_end(&state, started, wait).await,
            None => Json(started).into_response(),
        },
        (Err(error), false) => error.into_response(),
        (outcome, true) => {
            let flash = match outcome {
                Ok(started) => Flash {
                    kind: FlashKind::Success,
                    message: started.message,
                },
                Err(error) => Flash {
                    kind: FlashKind::Error,
                    message: error.to_string(),
                },
            };
            session.set_flash(flash).await;
            Redirect::to("/").into_response()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct VerifyQuery {
    /// `true` waits until the run ends; a number waits at most that many seconds.
    wait: Option<String>,
}

impl VerifyQuery {
    fn wait(&self) -> Option<Option<Duration>> {
        match self.wait.as_deref()? {
            "true" | "yes" => Some(None),
            "false" | "0" | "no" | "" => None,
            seconds => seconds
                .parse()
                .ok()
                .map(|seconds| Some(Duration::from_secs(seconds))),
        }
    }
}

/// Holds the answer until the run ends (or `wait` elapses): 200 when it succeeded, 424 when it ended
/// otherwise, 202 while it is still going. `curl --fail` thus fails unless the deploy succeeded.
async fn wait_for_end(state: &AppState, started: Started, wait: Option<Duration>) -> Response {
    let limit = wait
        .unwrap_or(state.config.access.max_wait)
        .min(state.config.access.max_wait);
    let id = started.run_id;
    let ended = tokio::time::timeout(limit, state.runner.wait_finished(id))
        .await
        .is_ok();
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

/// A browser's form post asks for HTML; `fetch`, curl and scripts do not.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// The `code` field (and the page's `csrf` token), from a URL-encoded form (the original's), a multipart
/// form (`FormData`), or JSON.
#[derive(Default, Deserialize)]
struct VerifyForm {
    code: Option<String>,
    csrf: Option<String>,
}

impl FromRequest<AppState> for VerifyForm {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("multipart/form-data") {
            let multipart = Multipart::from_request(request, state)
                .await
                .map_err(|_| AppError::BadForm)?;
            return multipart_form(multipart).await;
        }
        let body = if content_type.starts_with("application/json") {
            Json::<VerifyForm>::from_request(request, state)
                .await
                .map(|Json(body)| body)
                .map_err(|rejection| body_error(rejection.status()))?
        } else {
            Form::<VerifyForm>::from_request(request, state)
                .await
                .map(|Form(body)| body)
                .map_err(|rejection| body_error(rejection.status()))?
        };
        Ok(body)
    }
}

fn body_error(status: axum::http::StatusCode) -> AppError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::BadForm
    }
}

async fn multipart_form(mut multipart: Multipart) -> Result<VerifyForm, AppError> {
    let mut form = VerifyForm::default();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|error| body_error(error.status()))?
    {
        let slot = match field.name() {
            Some("code") => &mut form.code,
            Some("csrf") => &mut form.csrf,
            _ => continue,
        };
        *slot = Some(field.text().await.map_err(|error| body_error(error.status()))?);
    }
    Ok(form)
}
