//! Reading forms from request bodies: the code form as a URL-encoded form (the original's), a multipart
//! form (`FormData`) or JSON, and the cancel form; at most [`BODY_LIMIT`] bytes of any.

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};
use axum::{Form, Json};
use serde::Deserialize;

use crate::error::AppError;
use crate::web::state::AppState;

/// The largest request body accepted; a code form needs a few dozen bytes.
pub const BODY_LIMIT: usize = 4 * 1024;

/// The `code` field (and the page's `csrf` token, and the `action` to start when it is not the first),
/// from a URL-encoded form (the original's), a multipart form (`FormData`), or JSON.
#[derive(Default, Deserialize)]
pub struct VerifyForm {
    pub code: Option<String>,
    pub csrf: Option<String>,
    pub action: Option<String>,
    /// Operators mode: who is proving themselves.
    pub user: Option<String>,
    /// Passwords on: the operator's password (or, on enrollment and `/account`, the new one).
    pub password: Option<String>,
    /// The new password typed again (enrollment).
    pub password_confirm: Option<String>,
    /// `/account`: the new password, and typed again.
    pub new_password: Option<String>,
    pub new_password_confirm: Option<String>,
    /// `/admin`: the operator's role and email.
    pub role: Option<String>,
    pub email: Option<String>,
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

fn body_error(status: StatusCode) -> AppError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
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
            Some("action") => &mut form.action,
            Some("user") => &mut form.user,
            Some("password") => &mut form.password,
            Some("password_confirm") => &mut form.password_confirm,
            Some("new_password") => &mut form.new_password,
            Some("new_password_confirm") => &mut form.new_password_confirm,
            Some("role") => &mut form.role,
            Some("email") => &mut form.email,
            _ => continue,
        };
        *slot = Some(field.text().await.map_err(|error| body_error(error.status()))?);
    }
    Ok(form)
}

/// The cancel form: only `csrf` matters, and a body without it is fine.
#[derive(Debug, Default)]
pub struct CancelForm {
    pub csrf: Option<String>,
}

impl FromRequest<AppState> for CancelForm {
    type Rejection = AppError;

    async fn from_request(request: Request, _: &AppState) -> Result<Self, Self::Rejection> {
        let body = axum::body::to_bytes(request.into_body(), BODY_LIMIT)
            .await
            .map_err(|_| AppError::PayloadTooLarge)?;
        let csrf = form_urlencoded_value(&body, "csrf");
        Ok(Self { csrf })
    }
}

/// The first value of `name` in a URL-encoded body, read leniently (anything unreadable is absent).
fn form_urlencoded_value(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}
