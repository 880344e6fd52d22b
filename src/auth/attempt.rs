//! One verification attempt, from regulation to the start of the run.
//!
//! The order matters: a banned client or a paused server is refused before anything else is looked at;
//! a cross-site post is refused before its code is read. Then the attempt waits for its turn (one attempt
//! is judged at a time, see `auth::regulation`), room for its audit lines is reserved (a log that cannot
//! take them refuses the attempt unchecked), and the gate is checked before the code, so while a run goes
//! or cools down nothing is learned about a code. A failure (malformed, wrong or replayed code) is counted
//! before the turn passes on. Every attempt leaves an audit line, written before the answer; refusals
//! made before the code was looked at (blocked, cross-site, no room in the audit log) are counted instead,
//! a line a minute per client (`auth::refusals`), in the audit log and in the server log.
//!
//! In operators mode the attempt names its operator: a locked operator is refused before the code is
//! looked at; the code (TOTP or backup code, and the password when passwords are on) is the operator's;
//! a failure counts towards the operator's lock as well as the client's limits; the action's `allow` is
//! checked after the code, so a refusal tells nothing to someone without it; and what the code spent is
//! written before the run starts. A sign-in (`/login`) is the same attempt without a run. Every attempt
//! is counted by its outcome in the metrics (one atomic increment).

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use crate::auth::operators::{Credentials, Directory, Failure, Proof};
use crate::auth::refusals::{Refusals, Report};
use crate::auth::regulation::{Blocked, Guard, Turn};
use crate::auth::totp::{TotpCode, Verdict, Verifier};
use crate::clock::SharedClock;
use crate::config::Allowed;
use crate::error::{AppError, seconds_until};
use crate::metrics::Metrics;
use crate::model::audit::{AuditEntry, AuditEvent, Outcome};
use crate::model::client::ClientKey;
use crate::model::operator::{Method, OperatorName, Role};
use crate::model::regulation::RegulationEvent;
use crate::model::run::Who;
use crate::model::time::format_time;
use crate::runs::gate::{Admission, Refusal};
use crate::runs::runner::LaunchError;
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
    /// The operator who started it; `null` for the shared secret.
    pub by: Option<String>,
    /// Who the code proved, for the session.
    #[serde(skip)]
    pub proven: Proven,
}

/// Who an accepted code proved.
#[derive(Debug, Clone, Default)]
pub struct Proven {
    /// The operator; none for the shared secret.
    pub user: Option<OperatorName>,
    pub role: Option<Role>,
    pub method: Option<Method>,
    /// The operator's backup codes left (after a backup code was used).
    pub backup_codes_left: Option<usize>,
}

/// What an attempt is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Start the action at this place in the configuration.
    Run(usize),
    /// Sign in (`/login`), starting nothing.
    SignIn,
}

impl Purpose {
    fn action(self) -> Option<usize> {
        match self {
            Self::Run(action) => Some(action),
            Self::SignIn => None,
        }
    }
}

/// What an attempt let through.
enum Passed {
    Run(Admission, Proven),
    SignedIn(Proven),
}

/// What the request brought, already read.
pub struct Request {
    pub purpose: Purpose,
    pub client: ClientKey,
    /// The `code` field, or why the body could not be read.
    pub code: Result<Option<String>, AppError>,
    /// Operators mode: the `user` field, or the operator the session is signed in as.
    pub user: Option<String>,
    /// The `password` field (passwords on).
    pub password: Option<String>,
    /// `user` is the operator the session is signed in as: the sign-in took the password.
    pub signed_in: bool,
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
    /// Operators mode: the operators; none in shared mode.
    pub operators: Option<Arc<Directory>>,
    /// Operators mode: each action's `allow`, in the configuration's order.
    pub allow: Vec<Vec<Allowed>>,
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

    fn refused(outcome: Outcome, error: AppError) -> Self {
        Self {
            outcome,
            error,
            failure: false,
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
            Refusal::StoreUnavailable => (Outcome::Unavailable, AppError::StoreUnavailable),
        };
        Self {
            outcome,
            error,
            failure: false,
        }
    }
}

impl Gatekeeper {
    /// Runs the whole attempt to start a run and returns what to answer. It runs to its end even when
    /// the client goes away (the server then drops its request): a code that was checked is always
    /// counted and audited, and a run that was admitted always launched or given up.
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
        let Purpose::Run(action) = request.purpose else {
            return Err(AppError::NotFound);
        };
        let (admission, proven) = match self.pass(request).await? {
            Passed::Run(admission, proven) => (admission, proven),
            Passed::SignedIn(_) => return Err(AppError::Internal),
        };
        let id = admission.id;
        let started_at = admission.started;
        let by = match &proven.user {
            Some(name) => Who::Operator(name.to_string()),
            None => Who::SharedSecret,
        };
        let method = proven.method.unwrap_or(Method::Totp);
        self.runner.launch(admission, by, method).await.map_err(|error| {
            tracing::error!(run = id, %error, "the run could not start");
            match error {
                LaunchError::History(error) if error.is_database() => AppError::StoreUnavailable,
                _ => AppError::LaunchFailed,
            }
        })?;
        let owner = self.runner.action(action).owner();
        Ok(Started {
            message: format!("{} started (run #{id}).", owner.name),
            success: true,
            action: owner.id.to_string(),
            run_id: id,
            started_at: format_time(started_at),
            run_url: format!("/runs/{id}"),
            events_url: format!("/runs/{id}/events"),
            log_url: format!("/runs/{id}/log"),
            by: proven.user.as_ref().map(ToString::to_string),
            proven,
        })
    }

    /// Signs in: the attempt of [`Gatekeeper::attempt`] without a run. The code is spent as a run's
    /// would be. Runs to its end even when the client goes away.
    pub async fn sign_in(self: &Arc<Self>, mut request: Request) -> Result<Proven, AppError> {
        request.purpose = Purpose::SignIn;
        let gatekeeper = Arc::clone(self);
        let passed = tokio::spawn(async move { gatekeeper.pass(request).await })
            .await
            .unwrap_or_else(|panicked| {
                tracing::error!(%panicked, "a sign-in failed");
                Err(AppError::Internal)
            })?;
        match passed {
            Passed::SignedIn(proven) => Ok(proven),
            Passed::Run(admission, _) => {
                self.runner.abandon(admission);
                Err(AppError::Internal)
            }
        }
    }

    /// Regulation, the turn, the audit reservation, the judgement and its audit line: what every
    /// attempt passes. An admitted run is returned still to launch.
    async fn pass(&self, request: Request) -> Result<Passed, AppError> {
        let now = self.clock.now();
        let client = &request.client.clone();
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
        let purpose = request.purpose;
        let user = request.user.clone();
        let shown = user.as_deref().filter(|user| OperatorName::parse(user).is_some());
        let judged = match &self.operators {
            Some(operators) => {
                // Within the turn (held across instances sharing the store), as the others left them.
                operators.refresh().await;
                self.judge_operator(operators, request, now).await
            }
            None => self.judge_shared(request, now).await,
        };
        let passed = match judged {
            Ok(passed) => passed,
            Err(judged) => {
                let error = self
                    .refused(&turn, client, purpose.action(), user.as_deref(), now, judged)
                    .await;
                return Err(error);
            }
        };
        let (outcome, run_id) = match &passed {
            Passed::Run(admission, _) => (Outcome::Started, Some(admission.id)),
            Passed::SignedIn(_) => (Outcome::SignedIn, None),
        };
        let audited = self
            .audit_attempt(now, client, purpose.action(), shown, outcome, run_id)
            .await;
        if let Err(error) = audited {
            if let Passed::Run(admission, _) = passed {
                self.runner.abandon(admission);
            }
            self.metrics.attempt(Outcome::Unavailable);
            return Err(error);
        }
        self.metrics.attempt(outcome);
        drop(turn);
        Ok(passed)
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

    /// Shared mode: checks the code against the shared secret, and (for a run) the action's gate
    /// before it.
    async fn judge_shared(&self, request: Request, now: OffsetDateTime) -> Result<Passed, Judged> {
        let code = self
            .parse(request.code)
            .map_err(|error| Judged::failure(Outcome::Malformed, error))?;
        let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        let check = |last| match self.verifier.verify(&code, unix, last) {
            Verdict::Accepted { step } => Ok(step),
            Verdict::Wrong => Err(Refusal::WrongCode),
            Verdict::Replayed => Err(Refusal::ReplayedCode),
        };
        let proven = Proven {
            method: Some(Method::Totp),
            ..Proven::default()
        };
        match request.purpose {
            Purpose::Run(action) => self
                .runner
                .admit(action, now, check)
                .await
                .map(|admission| Passed::Run(admission, proven))
                .map_err(|refusal| Judged::refusal(refusal, now)),
            Purpose::SignIn => self
                .runner
                .spend(check)
                .await
                .map(|_| Passed::SignedIn(proven))
                .map_err(|refusal| Judged::refusal(refusal, now)),
        }
    }

    /// Operators mode: the operator's lock, the action's gate, the operator's code (and password), the
    /// action's `allow`; then what the code spent is written, before anyone hears of it.
    async fn judge_operator(
        &self,
        operators: &Directory,
        request: Request,
        now: OffsetDateTime,
    ) -> Result<Passed, Judged> {
        let user = request
            .user
            .filter(|user| !user.is_empty())
            .ok_or_else(|| Judged::failure(Outcome::Malformed, AppError::MissingUser))?;
        let code = request
            .code
            .and_then(|code| code.ok_or(AppError::MissingCode))
            .map_err(|error| Judged::failure(Outcome::Malformed, error))?;
        if operators.settings().passwords && request.password.is_none() && !request.signed_in {
            return Err(Judged::failure(Outcome::Malformed, AppError::MissingPassword));
        }
        if let Some(until) = operators.locked(&user, now) {
            let retry_after = seconds_until(until, now);
            return Err(Judged::refused(
                Outcome::Locked,
                AppError::Locked { until, retry_after },
            ));
        }
        if let Purpose::Run(action) = request.purpose {
            self.runner
                .room(action, now)
                .map_err(|refusal| Judged::refusal(refusal, now))?;
        }
        let credentials = Credentials {
            user,
            code,
            password: request.password,
            signed_in: request.signed_in,
        };
        let digits = self.verifier.settings().digits;
        let proof = operators
            .check(credentials, now)
            .await
            .map_err(|failure| match failure {
                Failure::Malformed => Judged::failure(Outcome::Malformed, AppError::MalformedCode { digits }),
                Failure::Wrong => Judged::failure(Outcome::Wrong, AppError::WrongCode),
                Failure::Replayed => Judged::failure(Outcome::Replayed, AppError::ReplayedCode),
            })?;
        let Purpose::Run(action) = request.purpose else {
            let left = self.spend(operators, &proof, now, false).await?;
            return Ok(Passed::SignedIn(proven(&proof, left)));
        };
        let allowed = self
            .allow
            .get(action)
            .is_none_or(|allow| crate::config::allows(allow, &proof.name, proof.role));
        if !allowed {
            // The code was good: it is spent all the same, so it cannot be tried elsewhere.
            self.spend(operators, &proof, now, false).await?;
            return Err(Judged::refused(Outcome::NotAllowed, AppError::NotAllowed));
        }
        let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        let step = proof
            .step()
            .unwrap_or(unix / self.verifier.settings().period.max(1));
        let admission = self
            .runner
            .admit(action, now, |_| Ok(step))
            .await
            .map_err(|refusal| Judged::refusal(refusal, now))?;
        match self.spend(operators, &proof, now, true).await {
            Ok(left) => Ok(Passed::Run(admission, proven(&proof, left))),
            Err(judged) => {
                self.runner.abandon(admission);
                Err(judged)
            }
        }
    }

    /// Writes what `proof` spent; a store that cannot keep it refuses the attempt.
    async fn spend(
        &self,
        operators: &Directory,
        proof: &Proof,
        now: OffsetDateTime,
        ran: bool,
    ) -> Result<usize, Judged> {
        operators.commit(proof, now, ran).await.map_err(|error| {
            tracing::error!(%error, "an operator's code could not be spent; nothing was let through");
            match error {
                crate::store::StoreError::Conflict => {
                    Judged::failure(Outcome::Replayed, AppError::ReplayedCode)
                }
                error if error.is_database() => {
                    Judged::refused(Outcome::Unavailable, AppError::StoreUnavailable)
                }
                _ => Judged::refused(Outcome::Unavailable, AppError::StateUnavailable),
            }
        })
    }

    /// Counts a failure within the turn, and audits the refusal and any ban or pause it started.
    async fn refused(
        &self,
        turn: &Turn<'_>,
        client: &ClientKey,
        action: Option<usize>,
        user: Option<&str>,
        now: OffsetDateTime,
        judged: Judged,
    ) -> AppError {
        self.metrics.attempt(judged.outcome);
        let shown = user.filter(|user| OperatorName::parse(user).is_some());
        let mut operator_audited = Ok(());
        if let (true, Some(operators), Some(user)) = (judged.failure, &self.operators, user) {
            match operators.fail(user, now).await {
                Ok(Some(until)) => {
                    tracing::warn!(user = shown.unwrap_or("(not a name)"), "an operator is locked");
                    let entry = AuditEntry {
                        time: now,
                        event: AuditEvent::Operator {
                            name: shown.unwrap_or("(not a name)"),
                            change: "locked",
                            by: None,
                            until: Some(until),
                        },
                    };
                    operator_audited = self
                        .audit
                        .record(&entry)
                        .await
                        .map_err(|_| AppError::AuditUnavailable);
                }
                Ok(None) => {}
                Err(error) => tracing::error!(%error, "an operator's failure could not be persisted"),
            }
        }
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
            .audit_attempt(now, client, action, shown, judged.outcome, None)
            .await;
        let regulation_audited = self.audit_regulation(now, &events).await;
        match audited.and(regulation_audited).and(operator_audited) {
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
        action: Option<usize>,
        user: Option<&str>,
        outcome: Outcome,
        run_id: Option<u64>,
    ) -> Result<(), AppError> {
        let event = AuditEvent::Attempt {
            client,
            action: action.map(|action| self.runner.action(action).owner().id.as_str()),
            user,
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

/// Who `proof` proved, with the backup codes left.
fn proven(proof: &Proof, backup_codes_left: usize) -> Proven {
    Proven {
        user: Some(proof.name.clone()),
        role: Some(proof.role),
        method: Some(proof.method),
        backup_codes_left: Some(backup_codes_left),
    }
}

/// The answer to a blocked client.
pub fn blocked_error(blocked: Blocked, now: OffsetDateTime) -> AppError {
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
