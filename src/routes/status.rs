//! `GET /get_deploy_status` (the original's history answer, plus the current state) and `GET /healthz`.
//!
//! Both are served from memory: the answer's cost depends on `status_entries`, not on the size of the
//! history, and the disk is never read.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Serialize, Serializer};

use crate::app::AppState;
use crate::history::{RunRecord, format_time};
use crate::runner::State as RunState;

/// The status answer. `history` is the original's field, oldest first; the others were added.
#[derive(Serialize)]
pub struct Status {
    #[serde(serialize_with = "newest")]
    history: (Arc<Vec<RunRecord>>, usize),
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

/// Serialises the newest `count` records, oldest first, without copying them.
fn newest<S: Serializer>(value: &(Arc<Vec<RunRecord>>, usize), serializer: S) -> Result<S::Ok, S::Error> {
    let (records, count) = value;
    let start = records.len().saturating_sub(*count);
    serializer.collect_seq(&records[start..])
}

/// `GET /get_deploy_status`
pub async fn deploy_status(State(state): State<AppState>) -> Json<Status> {
    let now = state.clock.now();
    let run_state = state.runner.state(now);
    let (run_id, running_since, next_run_at) = match run_state {
        RunState::Idle => (None, None, None),
        RunState::Running { id, since } => (Some(id), Some(format_time(since)), None),
        RunState::CoolingDown { until } => (None, None, Some(format_time(until))),
    };
    Json(Status {
        history: (state.runner.history().snapshot(), state.config.status_entries),
        state: run_state.as_str(),
        run_id,
        running_since,
        next_run_at,
        cooldown_seconds: state.runner.cooldown().as_secs(),
        now: format_time(now),
    })
}

/// `GET /healthz`: the process answers.
pub async fn health() -> &'static str {
    "ok\n"
}
