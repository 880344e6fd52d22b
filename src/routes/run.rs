//! The deploy button: the page with the code form, and `POST /verify`, which starts the run.
//!
//! `POST /verify` answers API clients with the original's JSON (and real status codes), and browsers
//! (`Accept: text/html`) with a 303 redirect back to the page and a flash message, so a reload never posts
//! the code again.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::app::AppState;
use crate::error::AppError;
use crate::history::format_time;
use crate::routes::assets::asset_version;
use crate::runner::Refusal;
use crate::session::{BrowserSession, Flash, FlashKind};
use crate::totp::TotpCode;
use crate::view::{RunView, StateView};

/// How many runs the page lists.
const PAGE_RUNS: usize = 20;

#[derive(Template, WebTemplate)]
#[template(path = "index.html")]
pub struct IndexPage {
    action_name: String,
    description: String,
    digits: u8,
    flash: Option<Flash>,
    state: StateView,
    runs: Vec<RunView>,
    asset_version: &'static str,
}

/// `GET /`
pub async fn index(State(state): State<AppState>, session: Session) -> IndexPage {
    let flash = BrowserSession(session).take_flash().await;
    let history = state.runner.history().snapshot();
    let runs = history
        .iter()
        .rev()
        .take(PAGE_RUNS)
        .map(RunView::new)
        .collect();
    IndexPage {
        action_name: state.config.action_name.clone(),
        description: state.config.action_description.clone(),
        digits: state.config.totp.digits,
        flash,
        state: StateView::new(state.runner.state(state.clock.now())),
        runs,
        asset_version: asset_version(),
    }
}

/// The success answer of `POST /verify`: the original's two fields and the run's id and start.
#[derive(Debug, Serialize)]
pub struct Started {
    pub message: String,
    pub success: bool,
    pub run_id: u64,
    pub started_at: String,
}

/// `POST /verify`
pub async fn verify(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let html = wants_html(&headers);
    let outcome = match CodeField::from_request(request, &state).await {
        Ok(CodeField(code)) => start(&state, code).await,
        Err(error) => Err(error),
    };
    if let Err(error) = &outcome {
        tracing::info!(outcome = error.code(), "verification refused");
    }
    match (outcome, html) {
        (Ok(started), false) => Json(started).into_response(),
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
            BrowserSession(session).set_flash(flash).await;
            Redirect::to("/").into_response()
        }
    }
}

/// Checks the code and starts the run, as one atomic step.
async fn start(state: &AppState, code: Option<String>) -> Result<Started, AppError> {
    let digits = state.config.totp.digits;
    let code = code.ok_or(AppError::MissingCode)?;
    let code = TotpCode::parse(&code, digits).map_err(|_| AppError::MalformedCode { digits })?;
    let now = state.clock.now();
    let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let admission = state
        .runner
        .admit(now, |last| state.verifier.verify(&code, unix, last))
        .map_err(|refusal| refusal_error(refusal, now))?;
    let (id, started_at) = (admission.id, admission.started);
    state.runner.launch(admission).await.map_err(|error| {
        tracing::error!(run = id, %error, "the run could not start");
        AppError::LaunchFailed
    })?;
    Ok(Started {
        message: format!("Deploy started (run #{id})."),
        success: true,
        run_id: id,
        started_at: format_time(started_at),
    })
}

fn refusal_error(refusal: Refusal, now: time::OffsetDateTime) -> AppError {
    match refusal {
        Refusal::Running { since } => AppError::Running { since },
        Refusal::CoolingDown { until } => {
            let seconds = (until - now).as_seconds_f64().ceil().max(1.0);
            AppError::CoolingDown {
                until,
                // Whole seconds, rounded up so a client that waits this long is let through.
                retry_after: seconds as u64,
            }
        }
        Refusal::WrongCode => AppError::WrongCode,
        Refusal::ReplayedCode => AppError::ReplayedCode,
        Refusal::ShuttingDown => AppError::ShuttingDown,
    }
}

/// A browser's form post asks for HTML; `fetch`, curl and scripts do not.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// The `code` field, from a URL-encoded form (the original's), a multipart form (`FormData`), or JSON.
struct CodeField(Option<String>);

#[derive(Deserialize)]
struct CodeBody {
    code: Option<String>,
}

impl FromRequest<AppState> for CodeField {
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
            return multipart_code(multipart).await.map(Self);
        }
        let body = if content_type.starts_with("application/json") {
            Json::<CodeBody>::from_request(request, state)
                .await
                .map(|Json(body)| body)
                .map_err(|rejection| body_error(rejection.status()))?
        } else {
            Form::<CodeBody>::from_request(request, state)
                .await
                .map(|Form(body)| body)
                .map_err(|rejection| body_error(rejection.status()))?
        };
        Ok(Self(body.code))
    }
}

fn body_error(status: axum::http::StatusCode) -> AppError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::BadForm
    }
}

async fn multipart_code(mut multipart: Multipart) -> Result<Option<String>, AppError> {
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|error| body_error(error.status()))?
    {
        if field.name() == Some("code") {
            return field
                .text()
                .await
                .map(Some)
                .map_err(|error| body_error(error.status()));
        }
    }
    Ok(None)
}
