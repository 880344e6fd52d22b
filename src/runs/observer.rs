//! Who hears of a run's start and end beside the history: the notifications and the metrics.
//!
//! Observers are called on the run's own path (the start right after the script started, the end right
//! after its final status was written), so each must return at once: count, or hand the record to a queue
//! of its own, never wait on the network or the disk.

use std::fmt;
use std::sync::Arc;

use crate::model::action::ActionId;
use crate::model::run::RunRecord;

/// Hears of every run of every action. Both methods must return at once (see the module's notes).
pub trait RunObserver: Send + Sync + fmt::Debug {
    /// The run's script started; `record` is its history entry (status "Deploying").
    fn started(&self, _owner: &Owner, _record: &RunRecord) {}

    /// The run ended; `record` is its final history entry.
    fn finished(&self, _owner: &Owner, _record: &RunRecord) {}
}

/// The observers of a server, shared by every action's runner.
pub type Observers = Arc<[Arc<dyn RunObserver>]>;

/// The action a runner runs, and how its runs are told apart in the history.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The action's place in the configuration, and in the gate.
    pub index: usize,
    pub id: ActionId,
    /// What the page calls the action.
    pub name: String,
    /// The first action's id: history entries without an action are its runs.
    pub first: ActionId,
}

impl Owner {
    /// Whether the history's `record` is a run of this action.
    pub fn owns(&self, record: &RunRecord) -> bool {
        record.belongs_to(self.id.as_str(), self.first.as_str())
    }
}
