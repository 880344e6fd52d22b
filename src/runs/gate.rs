//! The gate: exactly one run at a time, a cooldown after each start, and a code accepted once.
//!
//! [`Gate::admit`] is the single atomic step of the product: (under the caller's lock) it checks that no
//! run is going and the cooldown is over, lets `check` judge the code against the last accepted TOTP step,
//! and marks the run as started. Pure state, no I/O: time is passed in.

use std::time::Duration;

use time::OffsetDateTime;

use crate::model::time::later;

/// What the runner is doing at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Running { id: u64, since: OffsetDateTime },
    CoolingDown { until: OffsetDateTime },
}

impl State {
    /// The word used in the status answer: `idle`, `running` or `cooling_down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running { .. } => "running",
            Self::CoolingDown { .. } => "cooling_down",
        }
    }
}

/// Why a request may not start a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Running {
        since: OffsetDateTime,
    },
    CoolingDown {
        until: OffsetDateTime,
    },
    WrongCode,
    ReplayedCode,
    ShuttingDown,
    /// The run could not be recorded before it started (the store failed); nothing was used up.
    Unrecorded,
}

/// What a code check found: the step the code belongs to, or why it is refused.
pub type CodeCheck = Result<u64, Refusal>;

/// A run let through the gate but not yet started.
#[derive(Debug)]
#[must_use = "an admitted run holds the gate until it is launched"]
pub struct Admission {
    pub id: u64,
    pub started: OffsetDateTime,
    pub totp_step: u64,
    /// The start of the run before, restored if this one is abandoned.
    pub previous_start: Option<OffsetDateTime>,
    /// The last accepted step before this run's, restored if this one is taken back.
    pub previous_step: Option<u64>,
}

/// The gate's state.
#[derive(Debug)]
pub struct Gate {
    cooldown: Duration,
    running: Option<(u64, OffsetDateTime)>,
    last_start: Option<OffsetDateTime>,
    last_step: Option<u64>,
    next_id: u64,
    shutting_down: bool,
}

impl Gate {
    /// A gate restored from the history: the last start, the last accepted step and the last id given.
    pub fn restore(
        cooldown: Duration,
        last_start: Option<OffsetDateTime>,
        last_step: Option<u64>,
        last_id: u64,
    ) -> Self {
        Self {
            cooldown,
            running: None,
            last_start,
            last_step,
            next_id: last_id.saturating_add(1),
            shutting_down: false,
        }
    }

    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    /// The state at `now`.
    pub fn state(&self, now: OffsetDateTime) -> State {
        if let Some((id, since)) = self.running {
            return State::Running { id, since };
        }
        match self.last_start.map(|start| later(start, self.cooldown)) {
            Some(until) if now < until => State::CoolingDown { until },
            _ => State::Idle,
        }
    }

    /// The atomic check-and-start. `check` sees the last accepted TOTP step and judges the code; it runs
    /// only when a run could start, so a refused request learns nothing about its code.
    pub fn admit(
        &mut self,
        now: OffsetDateTime,
        check: impl FnOnce(Option<u64>) -> CodeCheck,
    ) -> Result<Admission, Refusal> {
        if self.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        match self.state(now) {
            State::Running { since, .. } => return Err(Refusal::Running { since }),
            State::CoolingDown { until } => return Err(Refusal::CoolingDown { until }),
            State::Idle => {}
        }
        let totp_step = check(self.last_step)?;
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        let previous_step = self.last_step.replace(totp_step);
        let previous_start = self.last_start.replace(now);
        self.running = Some((id, now));
        Ok(Admission {
            id,
            started: now,
            totp_step,
            previous_start,
            previous_step,
        })
    }

    /// Takes back `admission` entirely, when nothing of it could be recorded: its id and its code are
    /// unused again and the cooldown is as it was, exactly what a restart would find.
    pub fn take_back(&mut self, admission: &Admission) {
        if self.is_running(admission.id) {
            self.running = None;
            self.last_start = admission.previous_start;
            self.last_step = admission.previous_step;
            // Nothing was admitted since: the gate was held.
            self.next_id = admission.id;
        }
    }

    /// Frees the gate from run `id`, which never started, and puts the cooldown back as it was. The code
    /// stays used.
    pub fn abandon(&mut self, id: u64, previous_start: Option<OffsetDateTime>) {
        if self.is_running(id) {
            self.running = None;
            self.last_start = previous_start;
        }
    }

    /// Run `id` ended: the gate is free (the cooldown goes on).
    pub fn release(&mut self, id: u64) {
        if self.is_running(id) {
            self.running = None;
        }
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.running.is_some_and(|(running, _)| running == id)
    }

    /// Refuses every run from now on; returns the one going, if any.
    pub fn shut(&mut self) -> Option<u64> {
        self.shutting_down = true;
        self.running.map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);

    #[test]
    fn one_run_then_the_cooldown_then_the_next() {
        let mut gate = Gate::restore(Duration::from_secs(180), None, None, 0);
        let first = gate.admit(T0, |_| Ok(1)).unwrap();
        assert_eq!(first.id, 1);
        assert_eq!(
            gate.admit(T0, |_| Ok(2)).unwrap_err(),
            Refusal::Running { since: T0 }
        );
        gate.release(1);
        let until = T0 + time::Duration::seconds(180);
        assert_eq!(gate.state(T0), State::CoolingDown { until });
        assert_eq!(
            gate.admit(T0, |_| panic!("no code is checked while cooling down"))
                .unwrap_err(),
            Refusal::CoolingDown { until }
        );
        let second = gate.admit(until, |last| {
            assert_eq!(last, Some(1));
            Ok(2)
        });
        assert_eq!(second.unwrap().id, 2);
    }

    #[test]
    fn an_abandoned_run_gives_back_the_cooldown_but_not_the_code() {
        let mut gate = Gate::restore(Duration::from_secs(180), None, None, 6);
        let admitted = gate.admit(T0, |_| Ok(9)).unwrap();
        assert_eq!(admitted.id, 7);
        gate.abandon(admitted.id, admitted.previous_start);
        assert_eq!(gate.state(T0), State::Idle);
        let again = gate.admit(T0, |last| {
            if last == Some(9) {
                Err(Refusal::ReplayedCode)
            } else {
                Ok(9)
            }
        });
        assert_eq!(again.unwrap_err(), Refusal::ReplayedCode);
    }

    #[test]
    fn a_run_taken_back_gives_back_its_id_its_code_and_the_cooldown() {
        let mut gate = Gate::restore(Duration::from_secs(180), None, Some(8), 6);
        let admitted = gate.admit(T0, |_| Ok(9)).unwrap();
        gate.take_back(&admitted);
        assert_eq!(gate.state(T0), State::Idle);
        let again = gate.admit(T0, |last| {
            assert_eq!(last, Some(8));
            Ok(9)
        });
        assert_eq!(again.unwrap().id, 7);
    }
}
