//! The errors a request can meet, each with one HTTP status.
//!
//! API clients get the original's JSON shape, `{"message", "success": false}`, plus a stable `error` code;
//! browsers posting the form get the message as a flash, in words for a person (see `web::views`), and
//! browsers opening a page get it as an error page (see `web::middleware::edge`). Internal details are
//! logged where they happen and never shown.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;

use crate::model::time::format_time;

/// The original's answer to a busy backend; kept word for word for old clients.
pub const BUSY_MESSAGE: &str = "Backend is deploying or cooling down, please wait.";
/// The original's answer to a wrong code.
pub const AUTH_FAILED: &str = "Auth failed.";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// 400: the form has no `code` field.
    #[error("Auth failed: no code was sent.")]
    MissingCode,
    /// 400: the body is not a form.
    #[error("Auth failed: the request body is not a form with a `code` field.")]
    BadForm,
    /// 400: the query string does not fit the route's parameters (`?page=abc`, bytes that are not UTF-8).
    #[error("The query string is not valid: {detail}.")]
    BadQuery { detail: String },
    /// 400: operators mode, and the form names no `user` (and the session is not signed in).
    #[error("Auth failed: no user was sent.")]
    MissingUser,
    /// 400: passwords are on, and the form has no `password`.
    #[error("Auth failed: no password was sent.")]
    MissingPassword,
    /// 400: a new password shorter than the minimum, or its confirmation differs.
    #[error("The password must be at least {min} characters, typed the same twice.")]
    WeakPassword { min: usize },
    /// 400: an operator name that cannot be one.
    #[error("That is not an operator name: use 1 to 32 of a-z, 0-9, '.', '_' and '-'.")]
    BadName,
    /// 409: the operator exists already.
    #[error("An operator of that name exists already.")]
    OperatorExists,
    /// 409: the change would leave no admin.
    #[error("That is the last admin: make another operator admin first.")]
    LastAdmin,
    /// 400: the code is not `digits` digits.
    #[error("Auth failed: the code must be {digits} digits.")]
    MalformedCode { digits: u8 },
    /// 401: the code matches no current step.
    #[error("Auth failed.")]
    WrongCode,
    /// 401: the code was accepted before, or an older one was.
    #[error("Auth failed: that code was already used. Wait for the next one.")]
    ReplayedCode,
    /// 409: a run is going.
    #[error("Backend is deploying or cooling down, please wait. A run has been going since {}.", to_second(*since))]
    Running { since: OffsetDateTime },
    /// 409: `limit` runs of other actions are going, the most `[runs] max_parallel` allows.
    #[error("As many runs as may go at once ({limit}) are going; try again when one has ended.")]
    Busy { limit: usize },
    /// 429 with `Retry-After`: the last run started less than the cooldown ago.
    #[error("Backend is deploying or cooling down, please wait. The next run is allowed at {} (in {retry_after} s).", to_second(*until))]
    CoolingDown { until: OffsetDateTime, retry_after: u64 },
    /// 429 with `Retry-After`: this client failed too often and is banned for a while.
    #[error("Too many wrong codes from your address. Try again in {}.", minutes(*retry_after))]
    Banned { until: OffsetDateTime, retry_after: u64 },
    /// 429 with `Retry-After`: too many failures overall; code checking is paused for everyone.
    #[error("Too many wrong codes. Code checking is paused for everyone until {} (in {}).", to_second(*until), minutes(*retry_after))]
    Paused { until: OffsetDateTime, retry_after: u64 },
    /// 429 with `Retry-After`: this operator failed too often and is locked for a while.
    #[error("Too many failed attempts for this operator. Try again in {}, or ask an admin to unlock it.", minutes(*retry_after))]
    Locked { until: OffsetDateTime, retry_after: u64 },
    /// 403: the operator proved themselves but may not run this action.
    #[error("You may not run this action; an admin can allow it.")]
    NotAllowed,
    /// 403: the page or API is for admins.
    #[error("This is for admins only.")]
    NotAdmin,
    /// 401: the page needs a signed-in operator.
    #[error("Sign in first.")]
    NotSignedIn,
    /// 503: the operators file cannot be written, so nothing is spent or changed.
    #[error("The operators' state cannot be written; nothing was done. The server log says why.")]
    StateUnavailable,
    /// 401: output and cancelling need a verified session or the API token.
    #[error("Enter a valid code on the page to see this run's output, or send the API token.")]
    Unauthorized,
    /// 409: the run to cancel is not going.
    #[error("That run is not going.")]
    NotRunning,
    /// 403: a cross-site form post, or a browser post without the page's token.
    #[error("Refused: this request did not come from authrun's own page. Reload the page and try again.")]
    Forbidden,
    /// 421: the `Host` names neither authrun's address, `localhost`, nor its `public_url` (DNS rebinding).
    #[error(
        "authrun does not answer to this host name. Open it by its address or localhost, or set [server] public_url to the URL you open."
    )]
    UnknownHost,
    /// 408: the request's body did not arrive within the request timeout.
    #[error("The request did not arrive in time; send it again.")]
    RequestTimeout,
    /// 413: the body is larger than a form needs.
    #[error("The request body is too large.")]
    PayloadTooLarge,
    /// 404
    #[error("Not found.")]
    NotFound,
    /// 503: authrun is stopping and starts no new run.
    #[error("authrun is shutting down; no new run can start.")]
    ShuttingDown,
    /// 503: the audit log cannot be written, so no attempt is let through.
    #[error("The audit log cannot be written; no code is checked until it can. The server log says why.")]
    AuditUnavailable,
    /// 500: a bug (a handler panicked); the panic is in the server log.
    #[error("Something went wrong inside authrun; the server log says what.")]
    Internal,
    /// 503: the run was admitted but could not be recorded or started; the cause is in the server log.
    #[error("The run could not be started; the server log says why.")]
    LaunchFailed,
    /// 503: the database the state is kept in (`[store] kind = "postgres"`) cannot be reached, so no
    /// code is spent and no run starts without its record.
    #[error("The database cannot be reached; nothing was started.")]
    StoreUnavailable,
}

impl AppError {
    /// The refusal of a change to the state that `error` kept from being written: the database's own
    /// when it is the database that failed.
    pub fn unwritten(error: &crate::store::StoreError) -> Self {
        if error.is_database() {
            Self::StoreUnavailable
        } else {
            Self::StateUnavailable
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingCode
            | Self::BadForm
            | Self::BadQuery { .. }
            | Self::MalformedCode { .. }
            | Self::MissingUser
            | Self::MissingPassword
            | Self::WeakPassword { .. }
            | Self::BadName => StatusCode::BAD_REQUEST,
            Self::WrongCode | Self::ReplayedCode | Self::Unauthorized | Self::NotSignedIn => {
                StatusCode::UNAUTHORIZED
            }
            Self::Running { .. }
            | Self::Busy { .. }
            | Self::NotRunning
            | Self::OperatorExists
            | Self::LastAdmin => StatusCode::CONFLICT,
            Self::CoolingDown { .. } | Self::Banned { .. } | Self::Paused { .. } | Self::Locked { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Forbidden | Self::NotAllowed | Self::NotAdmin => StatusCode::FORBIDDEN,
            Self::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::ShuttingDown
            | Self::LaunchFailed
            | Self::AuditUnavailable
            | Self::StateUnavailable
            | Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable name, the `error` field of the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingCode => "missing_code",
            Self::BadForm => "bad_form",
            Self::BadQuery { .. } => "bad_query",
            Self::MalformedCode { .. } => "malformed_code",
            Self::WrongCode => "wrong_code",
            Self::ReplayedCode => "replayed_code",
            Self::Running { .. } => "running",
            Self::Busy { .. } => "busy",
            Self::CoolingDown { .. } => "cooling_down",
            Self::Banned { .. } => "banned",
            Self::Paused { .. } => "paused",
            Self::Forbidden => "forbidden",
            Self::UnknownHost => "unknown_host",
            Self::Unauthorized => "unauthorized",
            Self::NotRunning => "not_running",
            Self::AuditUnavailable => "audit_unavailable",
            Self::Internal => "internal",
            Self::RequestTimeout => "request_timeout",
            Self::PayloadTooLarge => "payload_too_large",
            Self::NotFound => "not_found",
            Self::ShuttingDown => "shutting_down",
            Self::LaunchFailed => "launch_failed",
            Self::MissingUser => "missing_user",
            Self::MissingPassword => "missing_password",
            Self::WeakPassword { .. } => "weak_password",
            Self::BadName => "bad_name",
            Self::OperatorExists => "operator_exists",
            Self::LastAdmin => "last_admin",
            Self::Locked { .. } => "locked",
            Self::NotAllowed => "not_allowed",
            Self::NotAdmin => "not_admin",
            Self::NotSignedIn => "not_signed_in",
            Self::StateUnavailable => "state_unavailable",
            Self::StoreUnavailable => "store_unavailable",
        }
    }

    /// Seconds to put in `Retry-After`, when the answer has one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::CoolingDown { retry_after, .. }
            | Self::Banned { retry_after, .. }
            | Self::Paused { retry_after, .. }
            | Self::Locked { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// When the refusal ends (or, for a run going, when it began): the time its message names.
    pub fn time(&self) -> Option<OffsetDateTime> {
        match self {
            Self::Running { since } => Some(*since),
            Self::CoolingDown { until, .. }
            | Self::Banned { until, .. }
            | Self::Paused { until, .. }
            | Self::Locked { until, .. } => Some(*until),
            _ => None,
        }
    }
}

/// RFC 3339 to the second: the clock's nanoseconds mean nothing to a person reading the message.
fn to_second(time: OffsetDateTime) -> String {
    format_time(time.replace_nanosecond(0).unwrap_or(time))
}

/// "1 minute", "14 minutes", "2 h 5 min": how long a person waits.
pub fn minutes(seconds: u64) -> String {
    let minutes = seconds.div_ceil(60);
    match minutes {
        1 => "1 minute".into(),
        2..=119 => format!("{minutes} minutes"),
        _ => format!("{} h {} min", minutes / 60, minutes % 60),
    }
}

/// Whole seconds from `now` until `until`, rounded up and at least 1, for `Retry-After`.
pub fn seconds_until(until: OffsetDateTime, now: OffsetDateTime) -> u64 {
    let seconds = (until - now).as_seconds_f64().ceil().max(1.0);
    seconds as u64
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: String,
    success: bool,
    error: &'a str,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: self.to_string(),
            success: false,
            error: self.code(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // The edge turns the answer into a page for a browser that asked for one.
        response.extensions_mut().insert(self);
        response
    }
}
