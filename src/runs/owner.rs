//! The action a runner runs for: its place, id and name, and which history entries are its runs. The
//! runners and everyone who hears of their runs (`runs::observer`) name an action by it.

use crate::model::action::ActionId;
use crate::model::run::RunRecord;

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
