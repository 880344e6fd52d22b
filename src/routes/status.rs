//! `GET /get_deploy_status` (the original's history answer, plus the current state) and `GET /healthz`.
//!
//! Both are served from memory: the answer's cost depends on `status_entries`, not on the size of the
//! history, and the disk is never read. The status answer is polled by every open page and by scripts,
//! so it is made once per change of what it says (the history, the run state, the millisecond) and the
//! same bytes are handed to every request that asks in between.

use std::sync::Mutex;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Serialize;

use crate::app::AppState;
use crate::history::format_time;
use crate::runner::State as RunState;
use time::OffsetDateTime;

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

/// The last status answer and what it was made from.
#[derive(Default)]
pub struct StatusCache(Mutex<Option<(CacheKey, Bytes)>>);

/// Everything the status answer depends on that can change while authrun runs.
#[derive(Clone, Copy, PartialEq, Eq)]
struct CacheKey {
    history_version: u64,
    run_state: RunState,
    /// `now`, to the millisecond: the answer's clock is no finer.
    now_millis: i128,
}

/// `GET /get_deploy_status`
pub async fn deploy_status(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    let key = CacheKey {
        history_version: state.runner.history().version(),
        run_state: state.runner.state(now),
        now_millis: now.unix_timestamp_nanos() / 1_000_000,
    };
    let mut cache = state
        .status
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let body = match cache.as_ref() {
        Some((cached_key, body)) if *cached_key == key => body.clone(),
        _ => {
            let body = status_body(&state, key.run_state, now);
            *cache = Some((key, body.clone()));
            body
        }
    };
    drop(cache);
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
    let history = state.runner.history().tail_json(state.config.status_entries);
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

/// `GET /healthz`: the process answers.
pub async fn health() -> &'static str {
    "ok\n"
}
