//! Operators mode's pages: enrollment (`/enroll/{token}`: the QR code inline, then a code to prove it
//! and the backup codes once), signing in and out (`/login`, `/logout`), and `/account` (backup codes
//! left and new ones, the password), each asking for a fresh code where it spends or changes something.
//!
//! In shared mode `/login` takes just a code, so that old output can be read without starting a run;
//! the other pages are not found.

use askama::Template;
use askama_web::WebTemplate;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use serde::Serialize;
use tower_sessions::Session;

use crate::auth::attempt::{self, Proven, is_counted_refusal};
use crate::auth::operators::{Directory, EnrollError, MIN_PASSWORD, Pending};
use crate::auth::qr;
use crate::error::AppError;
use crate::model::client::ClientKey;
use crate::model::operator::{OperatorName, Role};
use crate::model::time::{format_time, later};
use crate::web::form::VerifyForm;
use crate::web::middleware::client_ip::client_ip;
use crate::web::middleware::csrf::{self, with_cookie};
use crate::web::middleware::edge::LoggedByHandler;
use crate::web::negotiate::wants_html;
use crate::web::routes::assets::asset_version;
use crate::web::routes::run::credentials;
use crate::web::session::{BrowserSession, Flash, FlashKind};
use crate::web::state::AppState;
use crate::web::views::{FlashView, TimeView};

/// The operators, or 404 in shared mode.
pub fn directory(state: &AppState) -> Result<&Directory, AppError> {
    state.gatekeeper.operators.as_deref().ok_or(AppError::NotFound)
}

/// A form post read with its cross-site verdict.
struct Posted {
    form: Result<VerifyForm, AppError>,
    headers: HeaderMap,
    client: ClientKey,
    cross_site: bool,
    html: bool,
}

async fn read_post(state: &AppState, request: Request) -> Posted {
    let client = ClientKey::of(client_ip(&request, &state.config.server.trusted_proxies));
    let headers = request.headers().clone();
    let html = wants_html(&headers);
    let form = VerifyForm::from_request(request, state).await;
    let token = form.as_ref().ok().and_then(|form| form.csrf.as_deref());
    let cross_site = csrf::is_cross_site(&headers, state.config.server.public_url.as_ref(), token);
    Posted {
        form,
        headers,
        client,
        cross_site,
        html,
    }
}

#[derive(Serialize)]
struct SignedIn {
    success: bool,
    message: String,
    /// The operator; `null` in shared mode.
    user: Option<String>,
    role: Option<&'static str>,
    /// Until when the session is signed in.
    until: String,
}

/// `POST /login`: signs the session in (operators mode: `user`, `code`, and `password` when passwords
/// are on; shared mode: `code`) without starting anything. The session gets a new id.
pub async fn login(State(state): State<AppState>, session: Session, request: Request) -> Response {
    let posted = read_post(&state, request).await;
    let session = BrowserSession(session);
    let form = posted.form.as_ref().ok();
    let user = form
        .and_then(|form| form.user.clone())
        .filter(|user| !user.is_empty());
    let password = form.and_then(|form| form.password.clone());
    let attempt = attempt::Request {
        purpose: attempt::Purpose::SignIn,
        client: posted.client.clone(),
        code: posted.form.map(|form| form.code),
        user,
        password,
        signed_in: false,
        cross_site: posted.cross_site,
    };
    let outcome = state.gatekeeper.sign_in(attempt).await;
    let counted = outcome.as_ref().is_err_and(is_counted_refusal);
    let mut response = match outcome {
        Ok(proven) => {
            let until = later(state.clock.now(), state.config.access.verified_for);
            let name = proven.user.as_ref().map(OperatorName::as_str);
            session.sign_in(until, name).await;
            let message = match name {
                Some(name) => format!("Signed in as {name}."),
                None => "Signed in.".to_string(),
            };
            if posted.html {
                session.set_flash(success(message)).await;
                Redirect::to("/").into_response()
            } else {
                Json(SignedIn {
                    success: true,
                    message,
                    user: name.map(str::to_string),
                    role: proven.role.map(Role::as_str),
                    until: format_time(until),
                })
                .into_response()
            }
        }
        Err(error) if posted.html && error != AppError::Forbidden => {
            session
                .set_flash(crate::web::views::refusal_flash(&error, None))
                .await;
            Redirect::to("/").into_response()
        }
        Err(error) => error.into_response(),
    };
    if counted {
        response.extensions_mut().insert(LoggedByHandler);
    }
    response
}

/// The one answer to `POST /email-code`, whatever became of the request.
const EMAIL_CODE_SENT: &str = "If that operator has an email address, a code is on its way. It works once.";

/// `POST /email-code` (`user`, or the signed-in operator): mails a one-time code, off the request's
/// path. The answer is 202 with the same body whether or not the name exists or has an address; a banned
/// client or a paused server is refused as at `/verify`, a cross-site post with 403.
pub async fn email_code(State(state): State<AppState>, session: Session, request: Request) -> Response {
    let posted = read_post(&state, request).await;
    let session = BrowserSession(session);
    let result = async {
        let directory = state
            .gatekeeper
            .operators
            .clone()
            .filter(|_| state.config.auth.email_codes)
            .ok_or(AppError::NotFound)?;
        if posted.cross_site {
            return Err(AppError::Forbidden);
        }
        let now = state.clock.now();
        if let Some(blocked) = state.gatekeeper.guard.blocked(&posted.client, now) {
            return Err(attempt::blocked_error(blocked, now));
        }
        let (user, _, _) = credentials(&state, &session, posted.form.as_ref().ok()).await;
        let user = user.ok_or(AppError::MissingUser)?;
        // Bounded: past a few at once, a request is answered the same and dropped.
        if let Ok(permit) = Arc::clone(&directory.email_requests).try_acquire_owned() {
            let state = state.clone();
            tokio::spawn(async move {
                let outcome = directory.email_code(&user, now).await;
                let shown =
                    OperatorName::parse(&user).map_or("(not a name)".to_string(), |name| name.to_string());
                tracing::info!(user = %shown, outcome = outcome.as_str(), "code by mail requested");
                audit_operator(&state, &shown, outcome.as_str(), None).await;
                drop(permit);
            });
        } else {
            tracing::warn!("too many requests for codes by mail at once; one was dropped");
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) if posted.html => {
            session.set_flash(success(EMAIL_CODE_SENT.into())).await;
            Redirect::to("/").into_response()
        }
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"success": true, "message": EMAIL_CODE_SENT})),
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

/// `POST /logout`: the session forgets who it was.
pub async fn logout(State(state): State<AppState>, session: Session, request: Request) -> Response {
    let posted = read_post(&state, request).await;
    if posted.cross_site {
        return AppError::Forbidden.into_response();
    }
    let session = BrowserSession(session);
    session.sign_out().await;
    if posted.html {
        session.set_flash(success("Signed out.".into())).await;
        Redirect::to("/").into_response()
    } else {
        Json(serde_json::json!({"success": true, "message": "Signed out."})).into_response()
    }
}

fn success(message: String) -> Flash {
    Flash {
        kind: FlashKind::Success,
        message,
    }
}

fn error_flash(message: String) -> Flash {
    Flash {
        kind: FlashKind::Error,
        message,
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "enroll.html")]
struct EnrollPage {
    user: String,
    secret: String,
    /// The QR code as a `data:image/png;base64,...` URI.
    qr: String,
    /// Until when the link works.
    expires: TimeView,
    passwords: bool,
    min_password: usize,
    digits: u8,
    csrf: String,
    flash: Option<FlashView>,
    asset_version: &'static str,
}

#[derive(Serialize)]
struct EnrollJson {
    user: String,
    otpauth_uri: String,
    secret: String,
    qr_png_base64: String,
}

/// The pending enrollment of `token`, or 404.
fn pending(state: &AppState, token: &str) -> Result<(Pending, String, String), AppError> {
    let directory = directory(state)?;
    let pending = directory
        .pending(token, state.clock.now())
        .ok_or(AppError::NotFound)?;
    let uri = directory.provisioning_uri(&pending).ok_or(AppError::Internal)?;
    let png = qr::png(&uri).map_err(|error| {
        tracing::error!(%error, "the enrollment QR code could not be drawn");
        AppError::Internal
    })?;
    let png = base64::engine::general_purpose::STANDARD.encode(png);
    Ok((pending, uri, png))
}

fn enroll_page(
    state: &AppState,
    headers: &HeaderMap,
    token: &str,
    flash: Option<Flash>,
) -> Result<Response, AppError> {
    let (pending, _, png) = pending(state, token)?;
    let (csrf, cookie) = csrf::for_page(headers, state.config.server.cookies_secure());
    let page = EnrollPage {
        user: pending.name.to_string(),
        secret: pending.secret.clone(),
        qr: format!("data:image/png;base64,{png}"),
        expires: TimeView::date(pending.expires),
        passwords: state.config.auth.passwords,
        min_password: MIN_PASSWORD,
        digits: state.config.totp.digits,
        csrf,
        flash: flash.as_ref().map(FlashView::new),
        asset_version: asset_version(),
    };
    Ok(with_cookie(page, cookie))
}

/// `GET /enroll/{token}`: the QR code and the secret to scan, and the form that proves it. The secret
/// is fixed for the token: a reload shows the same. JSON: `{"user", "otpauth_uri", "secret",
/// "qr_png_base64"}`.
pub async fn show_enrollment(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    if wants_html(&headers) {
        return enroll_page(&state, &headers, &token, None);
    }
    let (pending, uri, png) = pending(&state, &token)?;
    Ok(Json(EnrollJson {
        user: pending.name.to_string(),
        otpauth_uri: uri,
        secret: pending.secret,
        qr_png_base64: png,
    })
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "backup_codes.html")]
struct BackupCodesPage {
    user: String,
    heading: String,
    codes: Vec<String>,
    /// The codes as a text file, `data:text/plain;base64,...`.
    download: String,
    asset_version: &'static str,
}

/// The page that shows backup codes, once.
fn codes_page(user: &str, heading: &str, codes: Vec<String>) -> Response {
    let text = format!(
        "authrun backup codes for {user}\nEach works once, in place of a code from your app.\n\n{}\n",
        codes.join("\n")
    );
    let download = format!(
        "data:text/plain;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(text)
    );
    let mut response = BackupCodesPage {
        user: user.to_string(),
        heading: heading.to_string(),
        codes,
        download,
        asset_version: asset_version(),
    }
    .into_response();
    // Shown once: no cache keeps them.
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

fn codes_json(codes: Vec<String>) -> Response {
    let mut response = Json(serde_json::json!({
        "success": true,
        "message": "Enrolled. Keep the backup codes somewhere safe: they are shown once.",
        "backup_codes": codes,
    }))
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// `POST /enroll/{token}`: a valid code of the pending secret (and the password, when passwords are on)
/// completes the enrollment and shows the backup codes once; the session is signed in. A wrong code
/// answers 401 and keeps the link (the fifth revokes it); unknown, used or expired links: 404.
pub async fn complete_enrollment(
    State(state): State<AppState>,
    Path(token): Path<String>,
    session: Session,
    request: Request,
) -> Response {
    let posted = read_post(&state, request).await;
    let result = enroll(&state, &token, &posted).await;
    match result {
        Ok((name, codes)) => {
            let until = later(state.clock.now(), state.config.access.verified_for);
            BrowserSession(session).sign_in(until, Some(name.as_str())).await;
            audit_operator(&state, name.as_str(), "enrolled", None).await;
            if posted.html {
                codes_page(name.as_str(), "You are enrolled", codes)
            } else {
                codes_json(codes)
            }
        }
        Err(error)
            if posted.html
                && matches!(error.status(), StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST) =>
        {
            let status = error.status();
            let message = match &error {
                AppError::WrongCode => {
                    "That code is not right: scan the QR code again and type the code your app shows now."
                        .to_string()
                }
                other => other.to_string(),
            };
            match enroll_page(&state, &posted.headers, &token, Some(error_flash(message))) {
                Ok(page) => (status, page).into_response(),
                Err(error) => error.into_response(),
            }
        }
        Err(error) => error.into_response(),
    }
}

async fn enroll(
    state: &AppState,
    token: &str,
    posted: &Posted,
) -> Result<(OperatorName, Vec<String>), AppError> {
    let directory = directory(state)?;
    if posted.cross_site {
        return Err(AppError::Forbidden);
    }
    let form = posted.form.as_ref().map_err(Clone::clone)?;
    let code = form.code.as_deref().ok_or(AppError::MissingCode)?;
    let password = if state.config.auth.passwords {
        let password = form.password.clone().ok_or(AppError::MissingPassword)?;
        // A browser's form asks twice; an API client sends it once.
        if posted.html && form.password_confirm.as_deref() != Some(password.as_str()) {
            return Err(AppError::WeakPassword { min: MIN_PASSWORD });
        }
        Some(password)
    } else {
        None
    };
    let pending = directory
        .pending(token, state.clock.now())
        .ok_or(AppError::NotFound)?;
    let codes = directory
        .enroll(token, code, password, state.clock.now())
        .await
        .map_err(|error| match error {
            EnrollError::NotFound => AppError::NotFound,
            EnrollError::WrongCode { .. } => AppError::WrongCode,
            EnrollError::WeakPassword => AppError::WeakPassword { min: MIN_PASSWORD },
            EnrollError::MissingPassword => AppError::MissingPassword,
            EnrollError::Hash(error) => {
                tracing::error!(%error, "an enrollment could not be completed");
                AppError::StateUnavailable
            }
            EnrollError::Store(error) => {
                tracing::error!(%error, "an enrollment could not be completed");
                AppError::unwritten(&error)
            }
        })?;
    Ok((pending.name, codes))
}

/// Writes an operator's change to the audit log (best effort: the log reports its own trouble).
pub async fn audit_operator(state: &AppState, name: &str, change: &str, by: Option<&str>) {
    let entry = crate::model::audit::AuditEntry {
        time: state.clock.now(),
        event: crate::model::audit::AuditEvent::Operator {
            name,
            change,
            by,
            until: None,
        },
    };
    if state.gatekeeper.audit.record(&entry).await.is_err() {
        tracing::error!(user = name, change, "an operator's change could not be audited");
    }
}

/// The operator a request's session is signed in as, with their current role: 401 without one.
pub async fn signed_in(state: &AppState, session: &BrowserSession) -> Result<(OperatorName, Role), AppError> {
    directory(state)?;
    crate::web::access::operator_of(state, session).await
}

#[derive(Template, WebTemplate)]
#[template(path = "account.html")]
struct AccountPage {
    user: String,
    role: &'static str,
    backup_codes_left: usize,
    has_password: bool,
    passwords: bool,
    min_password: usize,
    digits: u8,
    csrf: String,
    flash: Option<FlashView>,
    asset_version: &'static str,
}

/// `GET /account`: the signed-in operator's backup codes left, and forms for new ones and the password.
pub async fn account(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let session = BrowserSession(session);
    let (name, role) = signed_in(&state, &session).await?;
    let operator = directory(&state)?
        .get(name.as_str())
        .ok_or(AppError::NotSignedIn)?;
    let flash = session.take_flash().await;
    let (csrf, cookie) = csrf::for_page(&headers, state.config.server.cookies_secure());
    let page = AccountPage {
        user: name.to_string(),
        role: role.as_str(),
        backup_codes_left: operator.backup_codes.hashes.len(),
        has_password: operator.password.is_some(),
        passwords: state.config.auth.passwords,
        min_password: MIN_PASSWORD,
        digits: state.config.totp.digits,
        csrf,
        flash: flash.as_ref().map(FlashView::new),
        asset_version: asset_version(),
    };
    Ok(with_cookie(page, cookie))
}

/// Checks a fresh code of the signed-in operator (regulated and audited as any attempt).
async fn fresh_code(state: &AppState, session: &BrowserSession, posted: Posted) -> Result<Proven, AppError> {
    let (name, _) = signed_in(state, session).await?;
    let (_, password, _) = credentials(state, session, posted.form.as_ref().ok()).await;
    let attempt = attempt::Request {
        purpose: attempt::Purpose::SignIn,
        client: posted.client,
        code: posted.form.map(|form| form.code),
        user: Some(name.to_string()),
        password,
        signed_in: true,
        cross_site: posted.cross_site,
    };
    state.gatekeeper.sign_in(attempt).await
}

/// `POST /account/backup-codes`: new backup codes (the old ones stop working), for a fresh code.
pub async fn regenerate_codes(State(state): State<AppState>, session: Session, request: Request) -> Response {
    let posted = read_post(&state, request).await;
    let html = posted.html;
    let session = BrowserSession(session);
    let result = async {
        // New backup codes take a code from the app: a backup code (or a mailed one) proves less.
        let digits = state.config.totp.digits;
        let typed = posted
            .form
            .as_ref()
            .ok()
            .and_then(|form| form.code.clone())
            .unwrap_or_default();
        crate::auth::totp::TotpCode::parse(&typed, digits).map_err(|_| AppError::MalformedCode { digits })?;
        let proven = fresh_code(&state, &session, posted).await?;
        if proven.method != Some(crate::model::operator::Method::Totp) {
            return Err(AppError::WrongCode);
        }
        let name = proven.user.ok_or(AppError::NotSignedIn)?;
        let codes = directory(&state)?
            .regenerate_backup_codes(&name)
            .await
            .map_err(|error| {
                tracing::error!(%error, "backup codes could not be made");
                AppError::StateUnavailable
            })?;
        audit_operator(&state, name.as_str(), "backup_codes_regenerated", None).await;
        Ok::<_, AppError>((name, codes))
    }
    .await;
    match result {
        Ok((name, codes)) if html => codes_page(name.as_str(), "New backup codes", codes),
        Ok((_, codes)) => codes_json(codes),
        Err(error) => account_refusal(&session, html, error).await,
    }
}

/// `POST /account/password`: a new password (typed twice), for a fresh code.
pub async fn change_password(State(state): State<AppState>, session: Session, request: Request) -> Response {
    let posted = read_post(&state, request).await;
    let html = posted.html;
    let session = BrowserSession(session);
    let new = posted.form.as_ref().ok().and_then(|form| {
        let new = form.new_password.clone()?;
        // A browser's form asks twice; an API client sends it once.
        let confirmed = !html || form.new_password_confirm.as_deref() == Some(new.as_str());
        confirmed.then_some(new)
    });
    let result = async {
        if !state.config.auth.passwords {
            return Err(AppError::NotFound);
        }
        let new = new.filter(|new| new.chars().count() >= MIN_PASSWORD);
        let new = new.ok_or(AppError::WeakPassword { min: MIN_PASSWORD })?;
        let proven = fresh_code(&state, &session, posted).await?;
        let name = proven.user.ok_or(AppError::NotSignedIn)?;
        directory(&state)?
            .set_password(&name, new)
            .await
            .map_err(|error| match error {
                EnrollError::WeakPassword => AppError::WeakPassword { min: MIN_PASSWORD },
                error => {
                    tracing::error!(%error, "a password could not be set");
                    AppError::StateUnavailable
                }
            })?;
        audit_operator(&state, name.as_str(), "password_changed", None).await;
        Ok::<_, AppError>(())
    }
    .await;
    match result {
        Ok(()) if html => {
            session.set_flash(success("Password changed.".into())).await;
            Redirect::to("/account").into_response()
        }
        Ok(()) => Json(serde_json::json!({"success": true, "message": "Password changed."})).into_response(),
        Err(error) => account_refusal(&session, html, error).await,
    }
}

/// A refusal on `/account`: back to the page with the message, or the JSON error.
async fn account_refusal(session: &BrowserSession, html: bool, error: AppError) -> Response {
    if html
        && !matches!(
            error,
            AppError::NotSignedIn | AppError::NotFound | AppError::Forbidden
        )
    {
        session
            .set_flash(crate::web::views::refusal_flash(&error, None))
            .await;
        return Redirect::to("/account").into_response();
    }
    error.into_response()
}
