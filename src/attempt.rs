//! One verification attempt, from regulation to the start of the run.
//!
//! The order matters: a banned client or a paused server is refused before anything else is looked at;
//! a cross-site post is refused before its code is read; the gate is checked before the code, so while a
//! run goes or cools down nothing is learned about a code. Every attempt leaves one audit line, written
//! before the answer, and a failure (malformed, wrong or replayed code) counts towards a ban.

use serde::Serialize;
use time::OffsetDateTime;

use crate::app::AppState;
use crate::audit::Outcome;
use crate::error::{AppError, seconds_until};
use crate::guard::{Blocked, ClientKey};
use crate::history::format_time;
use crate::runner::Refusal;
use crate::totp::TotpCode;

/// The success answer of `POST /verify`: the original's two fields and the run's id and start.
#[derive(Debug, Serialize)]
pub struct Started {
    pub message: String,
    pub success: bool,
    pub run_id: u64,
    pub started_at: String,
    /// The run's page; `Accept: application/json` gets its record, `?wait=SECONDS` waits for its end.
    pub run_url: String,
    /// Server-Sent Events of the output (verified session or API token).
    pub events_url: String,
    /// The whole output as text (verified session or API token).
    pub log_url: String,
}

/// What the request brought, already read.
pub struct Request {
    pub client: ClientKey,
    /// The `code` field, or why the body could not be read.
    pub code: Result<Option<String>, AppError>,
    /// The cross-site check's verdict, made on the headers and tokens.
    pub cross_site: bool,
}

/// Runs the whole attempt and returns what to answer.
pub async fn attempt(state: &AppState, request: Request) -> Result<Started, AppError> {
    let now = state.clock.now();
    let client = &request.client;
    let audit = |outcome: Outcome, run_id: Option<u64>| {
        state
            .audit
            .attempt(now, client, outcome, run_id)
            .map_err(|_| AppError::AuditUnavailable)
    };
    regulate(state, client, now).inspect_err(|error| {
        let outcome = if matches!(error, AppError::Paused { .. }) {
            Outcome::Paused
        } else {
            Outcome::Banned
        };
        let _ = audit(outcome, None);
    })?;
    if request.cross_site {
        audit(Outcome::Forbidden, None)?;
        return Err(AppError::Forbidden);
    }
    let code = match parse(state, request.code) {
        Ok(code) => code,
        Err(error) => return Err(fail(state, client, now, Outcome::Malformed, error)),
    };
    let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let admission = match state
        .runner
        .admit(now, |last| state.verifier.verify(&code, unix, last))
    {
        Ok(admission) => admission,
        Err(refusal) => return Err(refused(state, client, now, refusal)),
    };
    let (id, started_at) = (admission.id, admission.started);
    if let Err(error) = audit(Outcome::Started, Some(id)) {
        state.runner.abandon(admission);
        return Err(error);
    }
    if let Err(error) = state.guard.record_success() {
        tracing::error!(%error, "the end of regulation could not be recorded");
    }
    state.runner.launch(admission).await.map_err(|error| {
        tracing::error!(run = id, %error, "the run could not start");
        AppError::LaunchFailed
    })?;
    Ok(Started {
        message: format!("Deploy started (run #{id})."),
        success: true,
        run_id: id,
        started_at: format_time(started_at),
        run_url: format!("/runs/{id}"),
        events_url: format!("/runs/{id}/events"),
        log_url: format!("/runs/{id}/log"),
    })
}

/// Ends expired bans and pauses, then refuses a banned client or everyone during a pause.
fn regulate(state: &AppState, client: &ClientKey, now: OffsetDateTime) -> Result<(), AppError> {
    match state.guard.refresh(now) {
        Ok(events) => state
            .audit
            .guard_events(now, &events)
            .map_err(|_| AppError::AuditUnavailable)?,
        Err(error) => tracing::error!(%error, "the regulation state could not be refreshed"),
    }
    match state.guard.blocked(client, now) {
        None => Ok(()),
        Some(Blocked::Banned { until }) => Err(AppError::Banned {
            until,
            retry_after: seconds_until(until, now),
        }),
        Some(Blocked::Paused { until }) => Err(AppError::Paused {
            until,
            retry_after: seconds_until(until, now),
        }),
    }
}

fn parse(state: &AppState, code: Result<Option<String>, AppError>) -> Result<TotpCode, AppError> {
    let digits = state.config.totp.digits;
    let code = code?.ok_or(AppError::MissingCode)?;
    TotpCode::parse(&code, digits).map_err(|_| AppError::MalformedCode { digits })
}

/// Audits a refusal by the gate; a wrong or replayed code also counts as a failure.
fn refused(state: &AppState, client: &ClientKey, now: OffsetDateTime, refusal: Refusal) -> AppError {
    let (outcome, error) = match refusal {
        Refusal::Running { since } => (Outcome::Running, AppError::Running { since }),
        Refusal::CoolingDown { until } => (
            Outcome::CoolingDown,
            AppError::CoolingDown {
                until,
                retry_after: seconds_until(until, now),
            },
        ),
        Refusal::ShuttingDown => (Outcome::Unavailable, AppError::ShuttingDown),
        Refusal::WrongCode => return fail(state, client, now, Outcome::Wrong, AppError::WrongCode),
        Refusal::ReplayedCode => return fail(state, client, now, Outcome::Replayed, AppError::ReplayedCode),
    };
    match state.audit.attempt(now, client, outcome, None) {
        Ok(()) => error,
        Err(_) => AppError::AuditUnavailable,
    }
}

/// Audits a failed attempt and counts it; a ban or pause it starts is audited too.
fn fail(
    state: &AppState,
    client: &ClientKey,
    now: OffsetDateTime,
    outcome: Outcome,
    error: AppError,
) -> AppError {
    if state.audit.attempt(now, client, outcome, None).is_err() {
        return AppError::AuditUnavailable;
    }
    match state.guard.record_failure(client, now) {
        Ok(events) => {
            if state.audit.guard_events(now, &events).is_err() {
                return AppError::AuditUnavailable;
            }
        }
        // The failure is counted in memory; only its persistence failed.
        Err(persist) => tracing::error!(%persist, "the failure could not be persisted"),
    }
    error
}
