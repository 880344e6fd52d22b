//! One verification attempt, from regulation to the start of the run.
//!
//! The order matters: a banned client or a paused server is refused before anything else is looked at;
//! a cross-site post is refused before its code is read; the gate is checked before the code, so while a
//! run goes or cools down nothing is learned about a code. Every attempt leaves one audit line, written
//! before the answer, and a failure (malformed, wrong or replayed code) counts towards a ban.

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use crate::auth::regulation::{Blocked, Guard};
use crate::auth::totp::{TotpCode, Verdict, Verifier};
use crate::clock::SharedClock;
use crate::error::{AppError, seconds_until};
use crate::model::audit::{AuditEntry, AuditEvent, Outcome};
use crate::model::client::ClientKey;
use crate::model::regulation::RegulationEvent;
use crate::model::time::format_time;
use crate::runs::gate::Refusal;
use crate::runs::runner::Runner;
use crate::store::AuditSink;

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

/// Everything an attempt passes: the clock, the regulation, the code check, the audit log and the gate.
#[derive(Debug)]
pub struct Gatekeeper {
    pub clock: SharedClock,
    pub verifier: Verifier,
    pub guard: Guard,
    pub audit: Arc<dyn AuditSink>,
    pub runner: Arc<Runner>,
}

impl Gatekeeper {
    /// Runs the whole attempt and returns what to answer.
    pub async fn attempt(&self, request: Request) -> Result<Started, AppError> {
        let now = self.clock.now();
        let client = &request.client;
        if let Err(error) = self.regulate(client, now).await {
            let outcome = if matches!(error, AppError::Paused { .. }) {
                Outcome::Paused
            } else {
                Outcome::Banned
            };
            let _ = self.audit_attempt(now, client, outcome, None).await;
            return Err(error);
        }
        if request.cross_site {
            self.audit_attempt(now, client, Outcome::Forbidden, None).await?;
            return Err(AppError::Forbidden);
        }
        let code = match self.parse(request.code) {
            Ok(code) => code,
            Err(error) => return Err(self.fail(client, now, Outcome::Malformed, error).await),
        };
        let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        let admission = self
            .runner
            .admit(now, |last| match self.verifier.verify(&code, unix, last) {
                Verdict::Accepted { step } => Ok(step),
                Verdict::Wrong => Err(Refusal::WrongCode),
                Verdict::Replayed => Err(Refusal::ReplayedCode),
            })
            .await;
        let admission = match admission {
            Ok(admission) => admission,
            Err(refusal) => return Err(self.refused(client, now, refusal).await),
        };
        let (id, started_at) = (admission.id, admission.started);
        if let Err(error) = self.audit_attempt(now, client, Outcome::Started, Some(id)).await {
            self.runner.abandon(admission);
            return Err(error);
        }
        if let Err(error) = self.guard.record_success().await {
            tracing::error!(%error, "the end of regulation could not be recorded");
        }
        self.runner.launch(admission).await.map_err(|error| {
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
    async fn regulate(&self, client: &ClientKey, now: OffsetDateTime) -> Result<(), AppError> {
        match self.guard.refresh(now).await {
            Ok(events) => self.audit_regulation(now, &events).await?,
            Err(error) => tracing::error!(%error, "the regulation state could not be refreshed"),
        }
        match self.guard.blocked(client, now) {
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

    fn parse(&self, code: Result<Option<String>, AppError>) -> Result<TotpCode, AppError> {
        let digits = self.verifier.settings().digits;
        let code = code?.ok_or(AppError::MissingCode)?;
        TotpCode::parse(&code, digits).map_err(|_| AppError::MalformedCode { digits })
    }

    /// Audits a refusal by the gate; a wrong or replayed code also counts as a failure.
    async fn refused(&self, client: &ClientKey, now: OffsetDateTime, refusal: Refusal) -> AppError {
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
            Refusal::Unrecorded => (Outcome::Unavailable, AppError::LaunchFailed),
            Refusal::WrongCode => return self.fail(client, now, Outcome::Wrong, AppError::WrongCode).await,
            Refusal::ReplayedCode => {
                return self
                    .fail(client, now, Outcome::Replayed, AppError::ReplayedCode)
                    .await;
            }
        };
        match self.audit_attempt(now, client, outcome, None).await {
            Ok(()) => error,
            Err(unavailable) => unavailable,
        }
    }

    /// Audits a failed attempt and counts it; a ban or pause it starts is audited too.
    async fn fail(
        &self,
        client: &ClientKey,
        now: OffsetDateTime,
        outcome: Outcome,
        error: AppError,
    ) -> AppError {
        if let Err(unavailable) = self.audit_attempt(now, client, outcome, None).await {
            return unavailable;
        }
        match self.guard.record_failure(client, now).await {
            Ok(events) => {
                if let Err(unavailable) = self.audit_regulation(now, &events).await {
                    return unavailable;
                }
            }
            // The failure is counted in memory; only its persistence failed.
            Err(persist) => tracing::error!(%persist, "the failure could not be persisted"),
        }
        error
    }

    async fn audit_attempt(
        &self,
        time: OffsetDateTime,
        client: &ClientKey,
        outcome: Outcome,
        run_id: Option<u64>,
    ) -> Result<(), AppError> {
        let event = AuditEvent::Attempt {
            client,
            outcome,
            run_id,
        };
        self.audit
            .record(&AuditEntry { time, event })
            .await
            .map_err(|_| AppError::AuditUnavailable)
    }

    async fn audit_regulation(
        &self,
        time: OffsetDateTime,
        events: &[RegulationEvent],
    ) -> Result<(), AppError> {
        for event in events {
            let entry = AuditEntry {
                time,
                event: AuditEvent::Regulation(event),
            };
            self.audit
                .record(&entry)
                .await
                .map_err(|_| AppError::AuditUnavailable)?;
        }
        Ok(())
    }
}
