//! Who may see a run's output and cancel it.
//!
//! Output can hold secrets, so it is not public: a browser session that entered a valid code is
//! *verified* for a while (`[access] verified_minutes`), and an API client may send the token whose
//! SHA-256 is configured (`[access] api_token_sha256`) as `Authorization: Bearer`. `public_output` opens
//! reading (not cancelling) to everyone.

use axum::http::{HeaderMap, header};
use time::OffsetDateTime;

use crate::auth::token::token_matches;
use crate::error::AppError;
use crate::model::operator::{OperatorName, Role};
use crate::web::session::BrowserSession;
use crate::web::state::AppState;

/// How a request proved it may see output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// `public_output` is on; no proof was needed.
    Public,
    /// A browser session verified by a code until the given time.
    Session { until: OffsetDateTime },
    /// The API token.
    Token,
}

/// Lets the request see output, or says why not (401).
pub async fn may_read(
    state: &AppState,
    session: &BrowserSession,
    headers: &HeaderMap,
) -> Result<Grant, AppError> {
    match proven(state, session, headers).await? {
        Some(grant) => Ok(grant),
        None if state.config.access.public_output => Ok(Grant::Public),
        None => Err(AppError::Unauthorized),
    }
}

/// Lets the request cancel a run (a verified session or the token; `public_output` does not count).
pub async fn may_cancel(
    state: &AppState,
    session: &BrowserSession,
    headers: &HeaderMap,
) -> Result<Grant, AppError> {
    proven(state, session, headers)
        .await?
        .ok_or(AppError::Unauthorized)
}

/// The session's verification or the token, if the request carries either. A wrong token is refused
/// rather than ignored, so a misconfigured client notices.
async fn proven(
    state: &AppState,
    session: &BrowserSession,
    headers: &HeaderMap,
) -> Result<Option<Grant>, AppError> {
    if let Some(token) = bearer(headers) {
        return if token_matches(state.config.access.api_token_sha256.as_deref(), token) {
            Ok(Some(Grant::Token))
        } else {
            Err(AppError::Unauthorized)
        };
    }
    let now = state.clock.now();
    let verified = session.verified_until().await.filter(|until| *until > now);
    // In operators mode a session is only as good as its operator: removed, reset or re-enrolled since
    // the sign-in, it grants nothing.
    if verified.is_some()
        && state.gatekeeper.operators.is_some()
        && operator_of(state, session).await.is_err()
    {
        return Ok(None);
    }
    Ok(verified.map(|until| Grant::Session { until }))
}

/// The operator a session is signed in as, with their role as it is now: 401 `not_signed_in` when it is
/// not signed in, or its operator was removed, reset (a lost phone) or enrolled again after the sign-in
/// (whoever holds the session may have the old phone).
pub async fn operator_of(
    state: &AppState,
    session: &BrowserSession,
) -> Result<(OperatorName, Role), AppError> {
    let directory = state
        .gatekeeper
        .operators
        .as_deref()
        .ok_or(AppError::NotSignedIn)?;
    let name = session
        .operator(state.clock.now())
        .await
        .and_then(|name| OperatorName::parse(&name))
        .ok_or(AppError::NotSignedIn)?;
    let operator = directory.get(name.as_str()).ok_or(AppError::NotSignedIn)?;
    let signed_in_at = session
        .verified_until()
        .await
        .map(|until| until - state.config.access.verified_for);
    let current = operator
        .enrolled
        .zip(signed_in_at)
        .is_some_and(|(enrolled, at)| operator.is_enrolled() && enrolled <= at);
    if !current {
        return Err(AppError::NotSignedIn);
    }
    Ok((name, operator.role))
}

/// The token of `Authorization: Bearer TOKEN`, if the request sends one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
    }
}
