//! Operators mode's administration: `/admin` (the operators, their state, and buttons for a new
//! enrollment link, reset, unlock, remove and role), and its JSON: `/api/admin/operators` and
//! `/api/admin/stats`.
//!
//! The pages need a signed-in admin (401 without a session, 403 for an operator who is not an admin);
//! the JSON routes also take the API token. Every change is written to the audit log with the admin's
//! name.

use std::collections::BTreeMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use tower_sessions::Session;

use crate::auth::operators::{self, AdminError, OperatorRow, enrollment_link};
use crate::auth::token::token_matches;
use crate::error::AppError;
use crate::model::operator::{OperatorName, Role};
use crate::web::form::VerifyForm;
use crate::web::middleware::csrf::{self, with_cookie};
use crate::web::negotiate::wants_html;
use crate::web::routes::assets::asset_version;
use crate::web::routes::operators::{audit_operator, directory, signed_in};
use crate::web::session::{BrowserSession, Flash, FlashKind};
use crate::web::state::AppState;
use crate::web::views::{FlashView, TimeView};

/// Who may administer: a signed-in admin (named), or the API token (`None`) where `token` allows it.
async fn admin(
    state: &AppState,
    session: &BrowserSession,
    headers: &HeaderMap,
    token: bool,
) -> Result<Option<OperatorName>, AppError> {
    directory(state)?;
    if token {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if let Some(bearer) = bearer {
            return if token_matches(state.config.access.api_token_sha256.as_deref(), bearer) {
                Ok(None)
            } else {
                Err(AppError::Unauthorized)
            };
        }
    }
    let (name, role) = signed_in(state, session).await?;
    if role == Role::Admin {
        Ok(Some(name))
    } else {
        Err(AppError::NotAdmin)
    }
}

fn rows(state: &AppState) -> Result<Vec<OperatorRow>, AppError> {
    let now = state.clock.now();
    Ok(directory(state)?
        .list()
        .iter()
        .map(|(name, operator)| OperatorRow::new(name, operator, now))
        .collect())
}

/// `GET /api/admin/operators`: every operator, as the admin page shows them.
pub async fn operators_json(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    admin(&state, &BrowserSession(session), &headers, true).await?;
    Ok(Json(rows(&state)?).into_response())
}

#[derive(Debug, Serialize)]
struct Stats {
    operators: OperatorCounts,
    attempts_24h: BTreeMap<String, u64>,
    runs_24h: BTreeMap<&'static str, u64>,
    lockouts_24h: u64,
}

#[derive(Debug, Serialize)]
struct OperatorCounts {
    total: usize,
    enrolled: usize,
    pending: usize,
    locked: usize,
}

/// `GET /api/admin/stats`: operators by state, and the last 24 hours' attempts by outcome, runs by
/// status and operators locked (from the audit log and the history).
pub async fn stats(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    admin(&state, &BrowserSession(session), &headers, true).await?;
    let now = state.clock.now();
    let since = now - time::Duration::hours(24);
    let list = directory(&state)?.list();
    let enrolled = list.iter().filter(|(_, operator)| operator.is_enrolled()).count();
    let operators = OperatorCounts {
        total: list.len(),
        enrolled,
        pending: list.len() - enrolled,
        locked: list
            .iter()
            .filter(|(_, operator)| operator.locked_at(now).is_some())
            .count(),
    };
    let tally = state.gatekeeper.audit.tally(since).await.map_err(|error| {
        tracing::error!(%error, "the audit log could not be read for the statistics");
        if error.is_database() {
            AppError::StoreUnavailable
        } else {
            AppError::AuditUnavailable
        }
    })?;
    let mut runs_24h = BTreeMap::new();
    for record in state
        .runner
        .history()
        .snapshot()
        .iter()
        .filter(|record| record.time >= since)
    {
        *runs_24h.entry(record.status.kind()).or_default() += 1;
    }
    Ok(Json(Stats {
        operators,
        attempts_24h: tally.attempts,
        runs_24h,
        lockouts_24h: tally.lockouts,
    })
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "admin.html")]
struct AdminPage {
    admin: String,
    operators: Vec<OperatorView>,
    /// A new enrollment link, shown once after add or reset.
    link: Option<(String, String)>,
    csrf: String,
    flash: Option<FlashView>,
    asset_version: &'static str,
}

/// One operator's row as the page shows it: times as dates the script turns into local time.
struct OperatorView {
    name: String,
    role: &'static str,
    email: Option<String>,
    enrolled: bool,
    backup_codes_left: usize,
    last_sign_in: Option<TimeView>,
    last_run: Option<TimeView>,
    failures: u32,
    locked_until: Option<TimeView>,
}

impl From<OperatorRow> for OperatorView {
    fn from(row: OperatorRow) -> Self {
        let shown = |text: Option<String>| {
            text.as_deref()
                .and_then(crate::model::time::parse_lenient)
                .map(TimeView::date)
        };
        Self {
            name: row.name,
            role: row.role,
            email: row.email,
            enrolled: row.enrolled,
            backup_codes_left: row.backup_codes_left,
            last_sign_in: shown(row.last_sign_in),
            last_run: shown(row.last_run),
            failures: row.failures,
            locked_until: shown(row.locked_until),
        }
    }
}

fn admin_page(
    state: &AppState,
    headers: &HeaderMap,
    admin: &OperatorName,
    link: Option<(String, String)>,
    flash: Option<Flash>,
) -> Result<Response, AppError> {
    let (csrf, cookie) = csrf::for_page(headers, state.config.server.cookies_secure());
    let page = AdminPage {
        admin: admin.to_string(),
        operators: rows(state)?.into_iter().map(OperatorView::from).collect(),
        link,
        csrf,
        flash: flash.as_ref().map(FlashView::new),
        asset_version: asset_version(),
    };
    let mut response = with_cookie(page, cookie);
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// `GET /admin`: the operators and the buttons.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let session = BrowserSession(session);
    let admin = admin(&state, &session, &headers, false)
        .await?
        .ok_or(AppError::NotAdmin)?;
    let flash = session.take_flash().await;
    admin_page(&state, &headers, &admin, None, flash)
}

/// The base of enrollment links: `public_url`, or the address authrun listens on.
pub fn link_base(state: &AppState) -> String {
    match &state.config.server.public_url {
        Some(url) => url.origin.clone(),
        None => format!("http://{}", state.config.bind),
    }
}

fn admin_error(error: AdminError) -> AppError {
    match error {
        AdminError::Unknown(_) => AppError::NotFound,
        AdminError::Exists(_) => AppError::OperatorExists,
        AdminError::BadName(_) => AppError::BadName,
        AdminError::LastAdmin(_) => AppError::LastAdmin,
        AdminError::Store(error) => {
            tracing::error!(%error, "an operator could not be changed");
            AppError::unwritten(&error)
        }
    }
}

/// `POST /admin/operators` (`name`, `role`, `email`) adds an operator, and `POST
/// /admin/operators/{name}/{change}` (`reset`, `unlock`, `remove`, `role` with `role`) changes one.
/// Add and reset show the new enrollment link once.
pub async fn change(
    State(state): State<AppState>,
    path: Option<Path<(String, String)>>,
    session: Session,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let html = wants_html(&headers);
    let session = BrowserSession(session);
    let result = administer(&state, path.map(|Path(path)| path), &session, request).await;
    match result {
        Ok((admin, name, change, token)) => {
            let link = token.map(|token| enrollment_link(&link_base(&state), &token));
            let message = format!("{name}: {}.", change.replace('_', " "));
            if !html {
                return Json(serde_json::json!({
                    "success": true,
                    "message": message,
                    "enrollment_link": link,
                }))
                .into_response();
            }
            let flash = Flash {
                kind: FlashKind::Success,
                message,
            };
            if let Some(link) = link {
                return admin_page(&state, &headers, &admin, Some((name, link)), Some(flash))
                    .unwrap_or_else(IntoResponse::into_response);
            }
            session.set_flash(flash).await;
            Redirect::to("/admin").into_response()
        }
        Err(error)
            if html
                && !matches!(
                    error,
                    AppError::NotSignedIn | AppError::NotAdmin | AppError::Forbidden
                ) =>
        {
            session
                .set_flash(crate::web::views::refusal_flash(&error, None))
                .await;
            Redirect::to("/admin").into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// Applies one admin change: who did it, to whom, what, and the enrollment token it made.
async fn administer(
    state: &AppState,
    path: Option<(String, String)>,
    session: &BrowserSession,
    request: Request,
) -> Result<(OperatorName, String, &'static str, Option<String>), AppError> {
    let headers = request.headers().clone();
    let admin = admin(state, session, &headers, false)
        .await?
        .ok_or(AppError::NotAdmin)?;
    let form = <VerifyForm as FromRequest<AppState>>::from_request(request, state).await?;
    if csrf::is_cross_site(
        &headers,
        state.config.server.public_url.as_ref(),
        form.csrf.as_deref(),
    ) {
        return Err(AppError::Forbidden);
    }
    let directory = directory(state)?;
    let (now, valid_for) = (state.clock.now(), directory.enrollment_validity());
    let role = || {
        form.role
            .as_deref()
            .map_or(Some(Role::Operator), Role::parse)
            .ok_or(AppError::BadQuery {
                detail: "role is admin or operator".into(),
            })
    };
    let (name, change, token) = match path {
        None => {
            let name = form.user.clone().unwrap_or_default();
            let role = role()?;
            let email = form.email.clone().filter(|email| !email.trim().is_empty());
            let token = directory
                .administer(|list| operators::add(list, &name, role, email.clone(), now, valid_for))
                .await
                .map_err(admin_error)?;
            (name, "added", Some(token))
        }
        Some((name, change)) => match change.as_str() {
            "reset" => {
                let token = directory
                    .administer(|list| operators::reset(list, &name, now, valid_for))
                    .await
                    .map_err(admin_error)?;
                (name, "reset", Some(token))
            }
            "unlock" => {
                directory
                    .administer(|list| operators::unlock(list, &name))
                    .await
                    .map_err(admin_error)?;
                (name, "unlocked", None)
            }
            "remove" => {
                directory
                    .administer(|list| operators::remove(list, &name))
                    .await
                    .map_err(admin_error)?;
                (name, "removed", None)
            }
            "role" => {
                let role = role()?;
                directory
                    .administer(|list| operators::set_role(list, &name, role))
                    .await
                    .map_err(admin_error)?;
                let change = match role {
                    Role::Admin => "role_admin",
                    Role::Operator => "role_operator",
                };
                (name, change, None)
            }
            _ => return Err(AppError::NotFound),
        },
    };
    audit_operator(state, &name, change, Some(admin.as_str())).await;
    Ok((admin, name, change, token))
}
