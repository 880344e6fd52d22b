//! The gate: one run of each action at a time, a cooldown after each start, at most `max_parallel` runs
//! of different actions at once, and a code accepted once across all actions.
//!
//! [`Gate::admit`] is the single atomic step of the product: (under the caller's lock) it checks that no
//! run of the action is going, that its cooldown is over and that there is room for one more run, lets
//! `check` judge the code against the last accepted TOTP step, and marks the run as started. One gate
//! holds every action, the last step and the run id counter together, so however many requests arrive
//! for however many actions, a code starts at most one run and no id is given twice. Pure state, no I/O:
//! time is passed in.

use std::time::Duration;

use time::OffsetDateTime;

use crate::model::time::later;

/// What an action is doing at a moment.
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
    /// `limit` runs of other actions are going.
    Busy {
        limit: usize,
    },
    WrongCode,
    ReplayedCode,
    ShuttingDown,
    /// The run could not be recorded before it started (the store failed); nothing was used up.
    Unrecorded,
    /// As [`Refusal::Unrecorded`], because the database the state is kept in cannot be reached.
    StoreUnavailable,
}

/// What a code check found: the step the code belongs to, or why it is refused.
pub type CodeCheck = Result<u64, Refusal>;

/// A run let through the gate but not yet started.
#[derive(Debug)]
#[must_use = "an admitted run holds the gate until it is launched"]
pub struct Admission {
    /// The action's place in the configuration.
    pub action: usize,
    pub id: u64,
    pub started: OffsetDateTime,
    pub totp_step: u64,
    /// The start of the action's run before, restored if this one is abandoned.
    pub previous_start: Option<OffsetDateTime>,
    /// The last accepted step before this run's, restored if this one is taken back.
    pub previous_step: Option<u64>,
}

/// One action, as the gate restores it from the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub cooldown: Duration,
    /// When the action's newest run started.
    pub last_start: Option<OffsetDateTime>,
}

/// One action's part of the gate.
#[derive(Debug)]
struct Slot {
    cooldown: Duration,
    running: Option<(u64, OffsetDateTime)>,
    last_start: Option<OffsetDateTime>,
}

impl Slot {
    fn state(&self, now: OffsetDateTime) -> State {
        if let Some((id, since)) = self.running {
            return State::Running { id, since };
        }
        match self.last_start.map(|start| later(start, self.cooldown)) {
            Some(until) if now < until => State::CoolingDown { until },
            _ => State::Idle,
        }
    }
}

/// The gate's state: every action's, and what they share.
#[derive(Debug)]
pub struct Gate {
    slots: Vec<Slot>,
    /// The newest TOTP step that started a run of any action.
    last_step: Option<u64>,
    next_id: u64,
    max_parallel: usize,
    shutting_down: bool,
}

impl Gate {
    /// A gate restored from the history: each action's cooldown and last start (in the configuration's
    /// order), the last accepted step and the last id given, of all actions.
    pub fn restore(
        actions: impl IntoIterator<Item = Restored>,
        last_step: Option<u64>,
        last_id: u64,
        max_parallel: usize,
    ) -> Self {
        let slots = actions
            .into_iter()
            .map(|action| Slot {
                cooldown: action.cooldown,
                running: None,
                last_start: action.last_start,
            })
            .collect();
        Self {
            slots,
            last_step,
            next_id: last_id.saturating_add(1),
            max_parallel: max_parallel.max(1),
            shutting_down: false,
        }
    }

    /// The state of `action` at `now`; an action the gate does not know is idle.
    pub fn state(&self, action: usize, now: OffsetDateTime) -> State {
        self.slots.get(action).map_or(State::Idle, |slot| slot.state(now))
    }

    /// Whether a run of `action` could start at `now`, as far as the gate goes: not stopping, the action
    /// idle, room for one more run. [`Gate::admit`] checks the same before it looks at a code.
    pub fn room(&self, action: usize, now: OffsetDateTime) -> Result<(), Refusal> {
        if self.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        // Callers name configured actions only; one the gate does not know starts nothing.
        let Some(slot) = self.slots.get(action) else {
            return Err(Refusal::ShuttingDown);
        };
        match slot.state(now) {
            State::Running { since, .. } => return Err(Refusal::Running { since }),
            State::CoolingDown { until } => return Err(Refusal::CoolingDown { until }),
            State::Idle => {}
        }
        if self.running() >= self.max_parallel {
            return Err(Refusal::Busy {
                limit: self.max_parallel,
            });
        }
        Ok(())
    }

    /// Accepts a code that starts no run (a sign-in): `check` judges it against the last accepted step,
    /// which becomes its step. Returns the step and the one before, to take it back with.
    pub fn spend(
        &mut self,
        check: impl FnOnce(Option<u64>) -> CodeCheck,
    ) -> Result<(u64, Option<u64>), Refusal> {
        let step = check(self.last_step)?;
        Ok((step, self.last_step.replace(step)))
    }

    /// Takes back a spent step that could not be made durable.
    pub fn unspend(&mut self, step: u64, previous: Option<u64>) {
        if self.last_step == Some(step) {
            self.last_step = previous;
        }
    }

    /// The atomic check-and-start. `check` sees the last accepted TOTP step and judges the code; it runs
    /// only when a run could start, so a refused request learns nothing about its code.
    pub fn admit(
        &mut self,
        action: usize,
        now: OffsetDateTime,
        check: impl FnOnce(Option<u64>) -> CodeCheck,
    ) -> Result<Admission, Refusal> {
        self.room(action, now)?;
        // `room` found the slot.
        let Some(slot) = self.slots.get_mut(action) else {
            return Err(Refusal::ShuttingDown);
        };
        let totp_step = check(self.last_step)?;
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        let previous_step = self.last_step.replace(totp_step);
        let previous_start = slot.last_start.replace(now);
        slot.running = Some((id, now));
        Ok(Admission {
            action,
            id,
            started: now,
            totp_step,
            previous_start,
            previous_step,
        })
    }

    /// Takes back `admission` entirely, when nothing of it could be recorded: its code is unused again
    /// and its action's cooldown is as it was, exactly what a restart would find. Its id is given again
    /// unless another action's run was admitted since (which then holds a later id and a later step).
    pub fn take_back(&mut self, admission: &Admission) {
        let Some(slot) = self.running_slot(admission.action, admission.id) else {
            return;
        };
        slot.running = None;
        slot.last_start = admission.previous_start;
        if self.last_step == Some(admission.totp_step) {
            self.last_step = admission.previous_step;
        }
        if self.next_id == admission.id.saturating_add(1) {
            self.next_id = admission.id;
        }
    }

    /// Gives the admitted run the id the store chose (a store shared by several instances numbers
    /// runs itself); later ids follow it.
    pub fn renumber(&mut self, admission: &mut Admission, id: u64) {
        if let Some(slot) = self.running_slot(admission.action, admission.id) {
            slot.running = Some((id, admission.started));
            admission.id = id;
            self.next_id = self.next_id.max(id.saturating_add(1));
        }
    }

    /// Step `step` was used elsewhere (another instance): no code of it or before is accepted here.
    pub fn note_step(&mut self, step: u64) {
        self.last_step = self.last_step.max(Some(step));
    }

    /// Frees `action` from run `id`, which never started, and puts its cooldown back as it was. The code
    /// stays used.
    pub fn abandon(&mut self, action: usize, id: u64, previous_start: Option<OffsetDateTime>) {
        if let Some(slot) = self.running_slot(action, id) {
            slot.running = None;
            slot.last_start = previous_start;
        }
    }

    /// Run `id` of `action` ended: the action is free (its cooldown goes on).
    pub fn release(&mut self, action: usize, id: u64) {
        if let Some(slot) = self.running_slot(action, id) {
            slot.running = None;
        }
    }

    pub fn is_running(&self, action: usize, id: u64) -> bool {
        self.slots
            .get(action)
            .is_some_and(|slot| slot.running.is_some_and(|(running, _)| running == id))
    }

    /// The action whose run `id` is going, if it is.
    pub fn running_action(&self, id: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.running.is_some_and(|(running, _)| running == id))
    }

    /// Refuses every run from now on; returns `action`'s run going, if any.
    pub fn shut(&mut self, action: usize) -> Option<u64> {
        self.shutting_down = true;
        self.slots
            .get(action)
            .and_then(|slot| slot.running.map(|(id, _)| id))
    }

    /// How many runs are going.
    fn running(&self) -> usize {
        self.slots.iter().filter(|slot| slot.running.is_some()).count()
    }

    fn running_slot(&mut self, action: usize, id: u64) -> Option<&mut Slot> {
        self.slots
            .get_mut(action)
            .filter(|slot| slot.running.is_some_and(|(running, _)| running == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);

    fn actions(cooldowns: &[u64]) -> Vec<Restored> {
        cooldowns
            .iter()
            .map(|seconds| Restored {
                cooldown: Duration::from_secs(*seconds),
                last_start: None,
            })
            .collect()
    }

    #[test]
    fn one_run_then_the_cooldown_then_the_next() {
        let mut gate = Gate::restore(actions(&[180]), None, 0, 4);
        let first = gate.admit(0, T0, |_| Ok(1)).unwrap();
        assert_eq!(first.id, 1);
        assert_eq!(
            gate.admit(0, T0, |_| Ok(2)).unwrap_err(),
            Refusal::Running { since: T0 }
        );
        gate.release(0, 1);
        let until = T0 + time::Duration::seconds(180);
        assert_eq!(gate.state(0, T0), State::CoolingDown { until });
        assert_eq!(
            gate.admit(0, T0, |_| panic!("no code is checked while cooling down"))
                .unwrap_err(),
            Refusal::CoolingDown { until }
        );
        let second = gate.admit(0, until, |last| {
            assert_eq!(last, Some(1));
            Ok(2)
        });
        assert_eq!(second.unwrap().id, 2);
    }

    #[test]
    fn an_abandoned_run_gives_back_the_cooldown_but_not_the_code() {
        let mut gate = Gate::restore(actions(&[180]), None, 6, 4);
        let admitted = gate.admit(0, T0, |_| Ok(9)).unwrap();
        assert_eq!(admitted.id, 7);
        gate.abandon(0, admitted.id, admitted.previous_start);
        assert_eq!(gate.state(0, T0), State::Idle);
        let again = gate.admit(0, T0, |last| {
            if last == Some(9) {
                Err(Refusal::ReplayedCode)
            } else {
                Ok(9)
            }
        });
        assert_eq!(again.unwrap_err(), Refusal::ReplayedCode);
    }

    #[test]
    fn actions_run_side_by_side_sharing_ids_and_codes() {
        let mut gate = Gate::restore(actions(&[180, 30]), Some(3), 10, 4);
        let a = gate.admit(0, T0, |_| Ok(4)).unwrap();
        let b = gate.admit(1, T0, |last| {
            assert_eq!(last, Some(4), "the step A used is used for B too");
            Ok(5)
        });
        let b = b.unwrap();
        assert_eq!((a.id, b.id), (11, 12));
        gate.release(1, b.id);
        assert_eq!(gate.state(0, T0), State::Running { id: 11, since: T0 });
        let later = T0 + time::Duration::seconds(30);
        assert_eq!(gate.state(1, later), State::Idle, "B's cooldown is its own");
        assert_eq!(gate.running_action(11), Some(0));
        assert_eq!(gate.running_action(12), None);
    }

    #[test]
    fn past_max_parallel_a_run_is_busy_before_its_code_is_looked_at() {
        let mut gate = Gate::restore(actions(&[0, 0, 0]), None, 0, 2);
        let _a = gate.admit(0, T0, |_| Ok(1)).unwrap();
        let b = gate.admit(1, T0, |_| Ok(2)).unwrap();
        assert_eq!(
            gate.admit(2, T0, |_| panic!("no code is checked while busy"))
                .unwrap_err(),
            Refusal::Busy { limit: 2 }
        );
        gate.release(1, b.id);
        assert_eq!(gate.admit(2, T0, |_| Ok(3)).unwrap().id, 3);
    }

    #[test]
    fn a_run_taken_back_gives_back_its_id_its_code_and_the_cooldown() {
        let mut gate = Gate::restore(actions(&[180]), Some(8), 6, 4);
        let admitted = gate.admit(0, T0, |_| Ok(9)).unwrap();
        gate.take_back(&admitted);
        assert_eq!(gate.state(0, T0), State::Idle);
        let again = gate.admit(0, T0, |last| {
            assert_eq!(last, Some(8));
            Ok(9)
        });
        assert_eq!(again.unwrap().id, 7);
    }

    #[test]
    fn a_run_taken_back_after_another_actions_gives_back_neither_id_nor_step() {
        let mut gate = Gate::restore(actions(&[180, 180]), Some(8), 6, 4);
        let a = gate.admit(0, T0, |_| Ok(9)).unwrap();
        let b = gate.admit(1, T0, |_| Ok(10)).unwrap();
        gate.take_back(&a);
        assert_eq!(gate.state(0, T0), State::Idle);
        let again = gate.admit(0, T0, |last| {
            assert_eq!(last, Some(10), "b's step stays used");
            Ok(11)
        });
        assert_eq!(again.unwrap().id, b.id + 1, "no id is given twice");
    }
}
