//! `GET /metrics`: the Prometheus metrics (`crate::metrics`), for the monitoring that watches authrun.
//!
//! The counts say what the team and attackers do, so they are shown only to the addresses of `[metrics]
//! allow` (by default this machine) and, from anywhere, to the API token. Anyone else gets the 404 of a
//! route that does not exist: the answer does not even reveal that authrun has metrics. A request that
//! sends a token is judged by the token alone, so a scraper with a wrong token fails where it is first
//! set up (on the allowed machine) rather than after it moves. Answered from memory: no session, no timer.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;

use crate::auth::token::token_matches;
use crate::error::AppError;
use crate::metrics::{CONTENT_TYPE, Live};
use crate::runs::gate::State as RunState;
use crate::web::access::bearer;
use crate::web::middleware::client_ip::client_ip;
use crate::web::state::AppState;

/// `GET /metrics`
pub async fn metrics(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    if !may_scrape(&state, &request) {
        return Err(AppError::NotFound);
    }
    let now = state.clock.now();
    let standing = state.gatekeeper.guard.standing(now);
    let live = Live {
        running: (state.config.actions.iter().enumerate())
            .map(|(index, action)| {
                let running = matches!(state.runner.state(index, now), RunState::Running { .. });
                (action.id.as_str(), running)
            })
            .collect(),
        banned: standing.banned,
        paused: standing.paused,
    };
    let text = state.metrics.render(&live).map_err(|error| {
        tracing::error!(%error, "the metrics could not be written");
        AppError::Internal
    })?;
    let mut response = Response::new(Body::from(text));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

/// The API token, if the request sends one; otherwise an address in `[metrics] allow`.
fn may_scrape(state: &AppState, request: &Request) -> bool {
    let config = &state.config.metrics;
    if !config.enabled {
        return false;
    }
    if let Some(token) = bearer(request.headers()) {
        return token_matches(state.config.access.api_token_sha256.as_deref(), token);
    }
    let client = client_ip(request, &state.config.server.trusted_proxies);
    config.allow.iter().any(|net| net.contains(&client))
}
