//! `GET /get_deploy_status` (the original's history answer, plus the current state), the same for any
//! action at `GET /actions/{id}/status`, and `GET /healthz`.
//!
//! All are served from memory: the answer's cost depends on `status_entries`, not on the size of the
//! history, and the disk is never read. The status answer is polled by every open page and by scripts,
//! so it is made once per change of what it says (the history, the run state, the millisecond) and the
//! same bytes are handed to every request that asks in between.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Serialize;

use time::OffsetDateTime;

use crate::error::AppError;
use crate::model::run::RunRecord;
use crate::model::time::format_time;
use crate::runs::gate::State as RunState;
use crate::web::action::{self, ActionPath};
use crate::web::cache::StatusKey;
use crate::web::state::AppState;

/// The status answer's fields besides `history` (the original's field, oldest first), which is spliced in
/// from the history's cached JSON.
#[derive(Serialize)]
struct StateFields<'a> {
    /// The action's id.
    action: &'a str,
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

/// `GET /get_deploy_status`: the first action's, or (`?action=<id>`) another's.
pub async fn deploy_status(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let action = action::selected(&state, action::in_query(query.as_deref()).as_deref())?;
    Ok(status(&state, action))
}

/// `GET /actions/{id}/status`
pub async fn action_status(State(state): State<AppState>, ActionPath(action): ActionPath) -> Response {
    status(&state, action)
}

/// The status answer of `action`, made once per change of what it says.
fn status(state: &AppState, action: usize) -> Response {
    let now = state.clock.now();
    let key = StatusKey {
        history_version: state.runner.history().version(),
        run_state: state.runner.state(action, now),
        now_millis: now.unix_timestamp_nanos() / 1_000_000,
    };
    let body = state
        .caches
        .action(action)
        .status
        .get_or_make(key, || status_body(state, action, key.run_state, now));
    json_response(body)
}

/// `body` as a JSON answer.
fn json_response(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    // Room for the edge's headers too, so the map is allocated once.
    headers.reserve(8);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The status answer: the history's cached JSON with the state fields spliced in after it.
fn status_body(state: &AppState, action: usize, run_state: RunState, now: OffsetDateTime) -> Bytes {
    let now = now.replace_millisecond(now.millisecond()).unwrap_or(now);
    let (run_id, running_since, next_run_at) = state_times(run_state);
    let fields = StateFields {
        action: state.runner.action(action).owner().id.as_str(),
        state: run_state.as_str(),
        run_id,
        running_since,
        next_run_at,
        cooldown_seconds: state.runner.cooldown(action).as_secs(),
        now: format_time(now),
    };
    let history = history_tail(state, action);
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

/// The action's newest `status_entries` runs as a JSON array, oldest first: serialised once per change
/// of the history, so the answer costs the same however long the history is.
fn history_tail(state: &AppState, action: usize) -> Bytes {
    let history = state.runner.history();
    // The version first: a change between the two reads then only costs a remake, never a stale answer.
    let version = history.version();
    let records = history.snapshot();
    state.caches.action(action).history_tail.get_or_make(version, || {
        let owner = state.runner.action(action).owner();
        // From the newest back: as many records as the answer holds, when the action has most runs.
        let mut tail: Vec<_> = records
            .iter()
            .rev()
            .filter(|record| owner.owns(record))
            .take(state.config.status_entries)
            .collect();
        tail.reverse();
        Bytes::from(serde_json::to_vec(&tail).unwrap_or_else(|_| b"[]".to_vec()))
    })
}

/// One action in `GET /actions`.
#[derive(Serialize)]
struct ActionSummary<'a> {
    id: &'a str,
    name: &'a str,
    description: &'a str,
    /// The warning its form asks to confirm, if any.
    confirm: Option<&'a str>,
    /// `idle`, `running` or `cooling_down`.
    state: &'static str,
    run_id: Option<u64>,
    running_since: Option<String>,
    next_run_at: Option<String>,
    cooldown_seconds: u64,
    /// Its newest run, as the history holds it.
    last_run: Option<&'a RunRecord>,
    /// Its page, where to post a code, and its status answer.
    page_url: String,
    start_url: String,
    status_url: String,
}

/// `GET /actions`: every action, in the configuration's order, with its state and newest run.
pub async fn actions(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    let last_runs = last_runs(&state);
    let summaries: Vec<ActionSummary<'_>> = state
        .config
        .actions
        .iter()
        .enumerate()
        .map(|(index, action)| {
            let run_state = state.runner.state(index, now);
            let (run_id, running_since, next_run_at) = state_times(run_state);
            let id = action.id.as_str();
            ActionSummary {
                id,
                name: &action.name,
                description: &action.description,
                confirm: action.confirm.as_deref(),
                state: run_state.as_str(),
                run_id,
                running_since,
                next_run_at,
                cooldown_seconds: action.script.cooldown.as_secs(),
                last_run: last_runs.get(index).and_then(Option::as_ref),
                page_url: format!("/actions/{id}"),
                start_url: format!("/actions/{id}/run"),
                status_url: format!("/actions/{id}/status"),
            }
        })
        .collect();
    json_response(Bytes::from(
        serde_json::to_vec(&summaries).unwrap_or_else(|_| b"[]".to_vec()),
    ))
}

/// Each action's newest run, found once per change of the history.
fn last_runs(state: &AppState) -> Arc<[Option<RunRecord>]> {
    let history = state.runner.history();
    let version = history.version();
    let records = history.snapshot();
    state.caches.last_runs.get_or_make(version, || {
        (0..state.config.actions.len())
            .map(|index| {
                let owner = state.runner.action(index).owner();
                records.iter().rev().find(|record| owner.owns(record)).cloned()
            })
            .collect()
    })
}

/// The state's run, its start, and the end of its cooldown, as the answers write them.
fn state_times(run_state: RunState) -> (Option<u64>, Option<String>, Option<String>) {
    match run_state {
        RunState::Idle => (None, None, None),
        RunState::Running { id, since } => (Some(id), Some(format_time(since)), None),
        RunState::CoolingDown { until } => (None, None, Some(format_time(until))),
    }
}

/// `GET /healthz`: the process answers.
pub async fn health() -> &'static str {
    "ok\n"
}
