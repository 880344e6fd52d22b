//! `GET /get_deploy_status` (the original's history answer, plus the current state) and `GET /healthz`.
//!
//! Both are served from memory: the answer's cost depends on `status_entries`, not on the size of the
//! history, and the disk is never read. The status answer is polled by every open page and by scripts,
//! so it is made once per change of what it says (the history, the run state, the millisecond) and the
//! same bytes are handed to every request that asks in between.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Serialize;

use time::OffsetDateTime;

use crate::model::time::format_time;
use crate::runs::gate::State as RunState;
use crate::web::cache::StatusKey;
use crate::web::state::AppState;

/// The status answer's fields besides `history` (the original's field, oldest first), which is spliced in
/// from the history's cached JSON.
#[derive(Serialize)]
struct StateFields {
    /// `idle`, `running` or `cooling_down`.
    state: &'static str,
    /// The running run's id, if one is going.
    run_id: Option<u64>,
    /// When the running run started.
    running_since: Option<String>,
    /// When the next run is allowed, while cooling down.
    next_run_at: Option<String>,
    cooldown_seconds: u64,
    /// The server's time, so clients can count down without trusting their own clock.
    now: String,
}

/// `GET /get_deploy_status`
pub async fn deploy_status(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    let key = StatusKey {
        history_version: state.runner.history().version(),
        run_state: state.runner.state(now),
        now_millis: now.unix_timestamp_nanos() / 1_000_000,
    };
    let body = state
        .caches
        .status
        .get_or_make(key, || status_body(&state, key.run_state, now));
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    // Room for the edge's headers too, so the map is allocated once.
    headers.reserve(8);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The status answer: the history's cached JSON with the state fields spliced in after it.
fn status_body(state: &AppState, run_state: RunState, now: OffsetDateTime) -> Bytes {
    let now = now.replace_millisecond(now.millisecond()).unwrap_or(now);
    let (run_id, running_since, next_run_at) = match run_state {
        RunState::Idle => (None, None, None),
        RunState::Running { id, since } => (Some(id), Some(format_time(since)), None),
        RunState::CoolingDown { until } => (None, None, Some(format_time(until))),
    };
    let fields = StateFields {
        state: run_state.as_str(),
        run_id,
        running_since,
        next_run_at,
        cooldown_seconds: state.runner.cooldown().as_secs(),
        now: format_time(now),
    };
    let history = history_tail(state);
    let fields = serde_json::to_vec(&fields).unwrap_or_else(|_| b"{}".to_vec());
    let mut body = Vec::with_capacity(history.len() + fields.len() + 16);
    body.extend_from_slice(b"{\"history\":");
    body.extend_from_slice(&history);
    if fields.len() > 2 {
        body.push(b',');
        body.extend_from_slice(&fields[1..]);
    } else {
        body.push(b'}');
    }
    Bytes::from(body)
}

/// The newest `status_entries` runs as a JSON array, oldest first: serialised once per change of the
/// history, so the answer costs the same however long the history is.
fn history_tail(state: &AppState) -> Bytes {
    let history = state.runner.history();
    // The version first: a change between the two reads then only costs a remake, never a stale answer.
    let version = history.version();
    let records = history.snapshot();
    state.caches.history_tail.get_or_make(version, || {
        let start = records.len().saturating_sub(state.config.status_entries);
        Bytes::from(serde_json::to_vec(&records[start..]).unwrap_or_else(|_| b"[]".to_vec()))
    })
}

/// `GET /healthz`: the process answers.
pub async fn health() -> &'static str {
    "ok\n"
}
