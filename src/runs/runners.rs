//! The runners of all actions, and the one gate they share.
//!
//! Starting a run names its action ([`Runners::admit`]); everything after names only the run, whose id
//! is unique across actions: [`Runners`] finds the run's action (the gate knows the running ones, the
//! history the others) and hands the request to its runner.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use time::OffsetDateTime;

use crate::clock::SharedClock;
use crate::config::ActionConfig;
use crate::model::action::ActionId;
use crate::model::operator::Method;
use crate::model::run::{RunStatus, Who};
use crate::model::time::later;
use crate::runs::gate::{Admission, CodeCheck, Gate, Refusal, Restored, State};
use crate::runs::leftovers;
use crate::runs::observer::Observers;
use crate::runs::output::LiveOutput;
use crate::runs::runner::{LaunchError, NotRunning, Owner, Runner};
use crate::store::{Claim, ClaimError, RunStore};

/// Every action's runner, in the configuration's order, and their gate.
#[derive(Debug)]
pub struct Runners {
    runners: Vec<Arc<Runner>>,
    gate: Arc<Mutex<Gate>>,
    history: Arc<dyn RunStore>,
}

impl Runners {
    /// Restores the gate from the history, so a restart never lets a run of any action through early nor
    /// accepts a code that was already used, and kills what runs interrupted by a crash left running.
    /// `actions` is never empty (the configuration has at least one). `observers` hear of every run's
    /// start and end.
    pub fn new(
        actions: &[ActionConfig],
        max_parallel: usize,
        clock: SharedClock,
        history: Arc<dyn RunStore>,
        observers: Observers,
    ) -> Self {
        for record in history.interrupted() {
            if let (Some(pid), Some(id)) = (record.pid, record.id) {
                let killed = leftovers::kill_interrupted(pid, id);
                if killed > 0 {
                    tracing::warn!(
                        run = id,
                        killed,
                        "killed processes an interrupted run left running"
                    );
                }
            }
        }
        let first = actions
            .first()
            .map_or_else(ActionId::default_id, |action| action.id.clone());
        let owners: Vec<Owner> = actions
            .iter()
            .enumerate()
            .map(|(index, action)| Owner {
                index,
                id: action.id.clone(),
                name: action.name.clone(),
                first: first.clone(),
            })
            .collect();
        let records = history.snapshot();
        let restored = actions.iter().zip(&owners).map(|(action, owner)| Restored {
            cooldown: action.script.cooldown,
            last_start: records
                .iter()
                .rev()
                .find(|record| owner.owns(record))
                .map(|record| record.time),
        });
        let gate = Gate::restore(
            restored,
            history.last_totp_step(),
            history.last_id(),
            max_parallel,
        );
        let gate = Arc::new(Mutex::new(gate));
        let runners = actions
            .iter()
            .zip(owners)
            .map(|(action, owner)| {
                Arc::new(Runner::new(
                    owner,
                    action.script.clone(),
                    Arc::clone(&clock),
                    Arc::clone(&history),
                    Arc::clone(&gate),
                    Arc::clone(&observers),
                ))
            })
            .collect();
        Self {
            runners,
            gate,
            history,
        }
    }

    /// The history of every action's runs.
    pub fn history(&self) -> &Arc<dyn RunStore> {
        &self.history
    }

    /// The runner of the action at `action` in the configuration (the first if there is no such).
    pub fn action(&self, action: usize) -> &Arc<Runner> {
        self.runners
            .get(action)
            .or_else(|| self.runners.first())
            .unwrap_or_else(|| unreachable!("the configuration has at least one action"))
    }

    /// The state of `action` at `now`. With a store other instances share, a run of theirs (or its
    /// cooldown) shows too, as the history has it.
    pub fn state(&self, action: usize, now: OffsetDateTime) -> State {
        let state = self.gate.lock().state(action, now);
        if state != State::Idle || !self.history.shared() {
            return state;
        }
        let owner = self.action(action).owner();
        let records = self.history.snapshot();
        let Some(newest) = records.iter().rev().find(|record| owner.owns(record)) else {
            return state;
        };
        if newest.status == RunStatus::Deploying {
            return State::Running {
                id: newest.id.unwrap_or_default(),
                since: newest.time,
            };
        }
        let until = later(newest.time, self.cooldown(action));
        if now < until {
            return State::CoolingDown { until };
        }
        state
    }

    pub fn cooldown(&self, action: usize) -> Duration {
        self.action(action).cooldown()
    }

    /// The atomic check-and-start of a run of `action`, made durable (see [`Runner::admit`]).
    pub async fn admit(
        &self,
        action: usize,
        now: OffsetDateTime,
        check: impl FnOnce(Option<u64>) -> CodeCheck,
    ) -> Result<Admission, Refusal> {
        self.action(action).admit(now, check).await
    }

    /// Whether a run of `action` could start now (see [`Gate::room`]): checked before an operator's code.
    pub fn room(&self, action: usize, now: OffsetDateTime) -> Result<(), Refusal> {
        self.gate.lock().room(action, now)
    }

    /// Accepts a shared-secret code that starts no run (a sign-in): judged by `check` against the last
    /// accepted step, which it then becomes, durably (as a run's would), so it is never accepted again.
    pub async fn spend(&self, check: impl FnOnce(Option<u64>) -> CodeCheck) -> Result<u64, Refusal> {
        let (step, previous) = self.gate.lock().spend(check)?;
        let claim = Claim {
            id: 0,
            totp_step: step,
            run: None,
        };
        match self.history.claim(claim).await {
            Ok(_) => Ok(step),
            Err(ClaimError::Store(error)) => {
                tracing::error!(%error, "a code's use could not be recorded; it was not accepted");
                self.gate.lock().unspend(step, previous);
                Err(if error.is_database() {
                    Refusal::StoreUnavailable
                } else {
                    Refusal::Unrecorded
                })
            }
            Err(ClaimError::Taken(_)) => {
                let mut gate = self.gate.lock();
                gate.unspend(step, previous);
                gate.note_step(step);
                Err(Refusal::ReplayedCode)
            }
        }
    }

    /// Gives up an admitted run before it is recorded (see [`Runner::abandon`]).
    pub fn abandon(&self, admission: Admission) {
        self.action(admission.action).abandon(admission);
    }

    /// Records the admitted run and starts its action's script (see [`Runner::launch`]).
    pub async fn launch(&self, admission: Admission, by: Who, method: Method) -> Result<(), LaunchError> {
        self.action(admission.action).launch(admission, by, method).await
    }

    /// The runner of run `id`'s action: the gate knows a running run's, the history any other's; a run
    /// recorded without an action (or of an action no longer configured) goes to the first.
    pub fn owner_of(&self, id: u64) -> &Arc<Runner> {
        if let Some(action) = self.gate.lock().running_action(id) {
            return self.action(action);
        }
        let action = self
            .history
            .record(id)
            .and_then(|record| record.action)
            .and_then(|action| {
                self.runners
                    .iter()
                    .position(|runner| runner.owner().id.as_str() == action)
            });
        self.action(action.unwrap_or(0))
    }

    /// The live output of run `id`, while it is the newest run of its action.
    pub fn live_output(&self, id: u64) -> Option<Arc<LiveOutput>> {
        self.runners.iter().find_map(|runner| runner.live_output(id))
    }

    /// The log file of run `id`.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.owner_of(id).log_path(id)
    }

    /// Stops run `id` (see [`Runner::cancel`]).
    pub fn cancel(&self, id: u64, by: String) -> Result<(), NotRunning> {
        let action = self.gate.lock().running_action(id).ok_or(NotRunning)?;
        self.action(action).cancel(id, by)
    }

    /// Stops run `id`, which ends "Interrupted" (see [`Runner::interrupt`]).
    pub fn interrupt(&self, id: u64, why: &'static str) -> Result<(), NotRunning> {
        let action = self.gate.lock().running_action(id).ok_or(NotRunning)?;
        self.action(action).interrupt(id, why)
    }

    /// Resolves when run `id` has ended and its final status is recorded (at once if it is not going).
    pub async fn wait_finished(&self, id: u64) {
        let running = self.gate.lock().running_action(id);
        if let Some(action) = running {
            self.action(action).wait_finished(id).await;
        }
    }

    /// Refuses new runs and stops the running ones, returning once their final status is written.
    pub async fn shutdown(&self) {
        futures_util::future::join_all(self.runners.iter().map(|runner| runner.shutdown())).await;
    }
}
