//! One verification attempt, from regulation to the start of the run.
//!
//! The order matters: a banned client or a paused server is refused before anything else is looked at;
//! a cross-site post is refused before its code is read. Then the attempt waits for its turn (one attempt
//! is judged at a time, see `auth::regulation`), room for its audit lines is reserved (a log that cannot
//! take them refuses the attempt unchecked), and the gate is checked before the code, so while a run goes
//! or cools down nothing is learned about a code. A failure (malformed, wrong or replayed code) is counted
//! before the turn passes on. Every attempt leaves an audit line, written before the answer; refusals
//! made before the code was looked at (blocked, cross-site, no room in the audit log) are counted instead,
//! a line a minute per client (`auth::refusals`), in the audit log and in the server log. Every attempt
//! is counted by its outcome in the metrics (one atomic increment).

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use crate::auth::refusals::{Refusals, Report};
use crate::auth::regulation::{Blocked, Guard, Turn};
use crate::auth::totp::{TotpCode, Verdict, Verifier};
use crate::clock::SharedClock;
use crate::error::{AppError, seconds_until};
use crate::metrics::Metrics;
use crate::model::audit::{AuditEntry, AuditEvent, Outcome};
use crate::model::client::ClientKey;
use crate::model::regulation::RegulationEvent;
use crate::model::time::format_time;
use crate::runs::gate::{Admission, Refusal};
use crate::runs::runners::Runners;
use crate::store::AuditSink;

/// The success answer of `POST /verify`: the original's two fields and the run's id and start.
#[derive(Debug, Serialize)]
pub struct Started {
    pub message: String,
    pub success: bool,
    /// The id of the action that started.
    pub action: String,
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
    /// The action to run: its place in the configuration.
    pub action: usize,
    pub client: ClientKey,
    /// The `code` field, or why the body could not be read.
    pub code: Result<Option<String>, AppError>,
    /// The cross-site check's verdict, made on the headers and tokens.
    pub cross_site: bool,
}

/// Everything an attempt passes: the clock, the regulation, the code check, the audit log and the gate.
#[derive(Debug)]
pub struct Gatekeeper {
    pub clock: SharedClock,
    pub verifier: Verifier,
    pub guard: Guard,
    pub audit: Arc<dyn AuditSink>,
    pub runner: Arc<Runners>,
    pub refusals: Refusals,
    /// Counts every attempt by outcome.
    pub metrics: Arc<Metrics>,
}

/// Whether `error` is a refusal the gatekeeper counted and logged itself (a line a minute per client), so
/// the web layer logs its request at `debug` only.
pub fn is_counted_refusal(error: &AppError) -> bool {
    matches!(
        error,
        AppError::Banned { .. } | AppError::Paused { .. } | AppError::Forbidden | AppError::AuditUnavailable
    )
}

/// An attempt judged and refused.
struct Judged {
    outcome: Outcome,
    error: AppError,
    /// A malformed, wrong or replayed code: it counts towards the limits.
    failure: bool,
}

impl Judged {
    fn failure(outcome: Outcome, error: AppError) -> Self {
        Self {
            outcome,
            error,
            failure: true,
        }
    }

    fn refusal(refusal: Refusal, now: OffsetDateTime) -> Self {
        let (outcome, error) = match refusal {
            Refusal::WrongCode => return Self::failure(Outcome::Wrong, AppError::WrongCode),
            Refusal::ReplayedCode => return Self::failure(Outcome::Replayed, AppError::ReplayedCode),
            Refusal::Running { since } => (Outcome::Running, AppError::Running { since }),
            Refusal::CoolingDown { until } => (
                Outcome::CoolingDown,
                AppError::CoolingDown {
                    until,
                    retry_after: seconds_until(until, now),
                },
            ),
            Refusal::Busy { limit } => (Outcome::Busy, AppError::Busy { limit }),
            Refusal::ShuttingDown => (Outcome::Unavailable, AppError::ShuttingDown),
            Refusal::Unrecorded => (Outcome::Unavailable, AppError::LaunchFailed),
        };
        Self {
            outcome,
            error,
            failure: false,
        }
    }
}

impl Gatekeeper {
    /// Runs the whole attempt and returns what to answer. It runs to its end even when the client goes
    /// away (the server then drops its request): a code that was checked is always counted and audited,
    /// and a run that was admitted always launched or given up.
    pub async fn attempt(self: &Arc<Self>, request: Request) -> Result<Started, AppError> {
        let gatekeeper = Arc::clone(self);
        tokio::spawn(async move { gatekeeper.attempt_to_the_end(request).await })
            .await
            .unwrap_or_else(|panicked| {
                tracing::error!(%panicked, "an attempt failed");
                Err(AppError::Internal)
            })
    }

    async fn attempt_to_the_end(&self, request: Request) -> Result<Started, AppError> {
        let now = self.clock.now();
        let client = &request.client;
        // Blocked clients are refused here at once, without queueing for a turn.
        if let Err(error) = self.regulate(client, now).await {
            self.refused_unchecked(now, client, &error).await;
            return Err(error);
        }
        if request.cross_site {
            self.refused_unchecked(now, client, &AppError::Forbidden).await;
            return Err(AppError::Forbidden);
        }
        self.report_due(now).await;
        let turn = match self.guard.turn(client, now).await {
            Ok(turn) => turn,
            Err(blocked) => {
                let error = blocked_error(blocked, now);
                self.refused_unchecked(now, client, &error).await;
                return Err(error);
            }
        };
        if self.audit.reserve().await.is_err() {
            drop(turn);
            self.refused_unchecked(now, client, &AppError::AuditUnavailable)
                .await;
            return Err(AppError::AuditUnavailable);
        }
        let admission = match self.judge(request.action, request.code, now).await {
            Ok(admission) => admission,
            Err(judged) => return Err(self.refused(&turn, client, request.action, now, judged).await),
        };
        let (id, started_at) = (admission.id, admission.started);
        let started = self.audit_attempt(now, client, request.action, Outcome::Started, Some(id));
        if let Err(error) = started.await {
            self.runner.abandon(admission);
            self.metrics.attempt(Outcome::Unavailable);
            return Err(error);
        }
        self.metrics.attempt(Outcome::Started);
        drop(turn);
        self.runner.launch(admission).await.map_err(|error| {
            tracing::error!(run = id, %error, "the run could not start");
            AppError::LaunchFailed
        })?;
        let owner = self.runner.action(request.action).owner();
        Ok(Started {
            message: format!("{} started (run #{id}).", owner.name),
            success: true,
            action: owner.id.to_string(),
            run_id: id,
            started_at: format_time(started_at),
            run_url: format!("/runs/{id}"),
            events_url: format!("/runs/{id}/events"),
            log_url: format!("/runs/{id}/log"),
        })
    }

    /// Ends expired bans and pauses, then refuses a banned client or everyone during a pause.
    async fn regulate(&self, client: &ClientKey, now: OffsetDateTime) -> Result<(), AppError> {
        match self.guard.refresh(now).await {
            Ok(events) => self.audit_regulation(now, &events).await?,
            Err(error) => tracing::error!(%error, "the regulation state could not be refreshed"),
        }
        match self.guard.blocked(client, now) {
            None => Ok(()),
            Some(blocked) => Err(blocked_error(blocked, now)),
        }
    }

    /// Checks the code, and `action`'s gate before it: the admitted run, or why not.
    async fn judge(
        &self,
        action: usize,
        code: Result<Option<String>, AppError>,
        now: OffsetDateTime,
    ) -> Result<Admission, Judged> {
        let code = self
            .parse(code)
            .map_err(|error| Judged::failure(Outcome::Malformed, error))?;
        let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        self.runner
            .admit(action, now, |last| {
                match self.verifier.verify(&code, unix, last) {
                    Verdict::Accepted { step } => Ok(step),
                    Verdict::Wrong => Err(Refusal::WrongCode),
                    Verdict::Replayed => Err(Refusal::ReplayedCode),
                }
            })
            .await
            .map_err(|refusal| Judged::refusal(refusal, now))
    }

    /// Counts a failure within the turn, and audits the refusal and any ban or pause it started.
    async fn refused(
        &self,
        turn: &Turn<'_>,
        client: &ClientKey,
        action: usize,
        now: OffsetDateTime,
        judged: Judged,
    ) -> AppError {
        self.metrics.attempt(judged.outcome);
        let events = if judged.failure {
            let counted = turn.fail().await;
            if let Err(error) = counted.saved {
                // The failure is counted in memory; only its persistence failed.
                tracing::error!(%error, "the failure could not be persisted");
            }
            counted.events
        } else {
            Vec::new()
        };
        let audited = self
            .audit_attempt(now, client, action, judged.outcome, None)
            .await;
        let regulation_audited = self.audit_regulation(now, &events).await;
        match audited.and(regulation_audited) {
            Ok(()) => judged.error,
            Err(unavailable) => unavailable,
        }
    }

    fn parse(&self, code: Result<Option<String>, AppError>) -> Result<TotpCode, AppError> {
        let digits = self.verifier.settings().digits;
        let code = code?.ok_or(AppError::MissingCode)?;
        TotpCode::parse(&code, digits).map_err(|_| AppError::MalformedCode { digits })
    }

    /// Counts an attempt refused before its code was looked at, writing a line when one is due. The
    /// refusal stands even when the line cannot be written.
    async fn refused_unchecked(&self, now: OffsetDateTime, client: &ClientKey, error: &AppError) {
        let outcome = match error {
            AppError::Paused { .. } => Outcome::Paused,
            AppError::Banned { .. } => Outcome::Banned,
            AppError::Forbidden => Outcome::Forbidden,
            _ => Outcome::Unavailable,
        };
        self.metrics.attempt(outcome);
        if let Some(report) = self.refusals.note(client, outcome, now) {
            self.report(report).await;
        }
        self.report_due(now).await;
    }

    /// Writes the counts of other clients' minutes that are over.
    async fn report_due(&self, now: OffsetDateTime) {
        for report in self.refusals.due(now) {
            self.report(report).await;
        }
    }

    /// Writes counted refusals to the audit log and the server log.
    async fn report(&self, report: Report) {
        let client = report.client.as_ref();
        let shown = client.map_or_else(|| "others".to_string(), ToString::to_string);
        tracing::info!(
            client = %shown,
            outcome = report.outcome.as_str(),
            count = report.count,
            "verification refused"
        );
        let entry = AuditEntry {
            time: report.time,
            event: AuditEvent::Refusals {
                client,
                outcome: report.outcome,
                count: report.count,
                since: report.since,
            },
        };
        // Best effort: the log's trouble is reported by the log itself.
        let _ = self.audit.record(&entry).await;
    }

    /// Writes the refusals counted and not yet written; for a server that stops.
    pub async fn flush(&self) {
        for report in self.refusals.drain() {
            self.report(report).await;
        }
    }

    async fn audit_attempt(
        &self,
        time: OffsetDateTime,
        client: &ClientKey,
        action: usize,
        outcome: Outcome,
        run_id: Option<u64>,
    ) -> Result<(), AppError> {
        let event = AuditEvent::Attempt {
            client,
            action: self.runner.action(action).owner().id.as_str(),
            outcome,
            run_id,
        };
        self.audit
            .record(&AuditEntry { time, event })
            .await
            .map_err(|_| AppError::AuditUnavailable)
    }

    /// Audits each event; all are tried, and an error is returned if any could not be written.
    async fn audit_regulation(
        &self,
        time: OffsetDateTime,
        events: &[RegulationEvent],
    ) -> Result<(), AppError> {
        let mut result = Ok(());
        for event in events {
            let entry = AuditEntry {
                time,
                event: AuditEvent::Regulation(event),
            };
            if self.audit.record(&entry).await.is_err() {
                result = Err(AppError::AuditUnavailable);
            }
        }
        result
    }
}

/// The answer to a blocked client.
fn blocked_error(blocked: Blocked, now: OffsetDateTime) -> AppError {
    match blocked {
        Blocked::Banned { until } => AppError::Banned {
            until,
            retry_after: seconds_until(until, now),
        },
        Blocked::Paused { until } => AppError::Paused {
            until,
            retry_after: seconds_until(until, now),
        },
    }
}
