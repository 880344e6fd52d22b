//! Who hears of a run's start and end beside the history: the notifications and the metrics.
//!
//! Observers are called on the run's own path (the start right after the script started, the end right
//! after its final status was written), so each must return at once: count, or hand the record to a queue
//! of its own, never wait on the network or the disk.

use std::fmt;
use std::sync::Arc;

use crate::model::run::RunRecord;
use crate::runs::owner::Owner;

/// Hears of every run of every action. Both methods must return at once (see the module's notes).
pub trait RunObserver: Send + Sync + fmt::Debug {
    /// The run's script started; `record` is its history entry (status "Deploying").
    fn started(&self, _owner: &Owner, _record: &RunRecord) {}

    /// The run ended; `record` is its final history entry.
    fn finished(&self, _owner: &Owner, _record: &RunRecord) {}
}

/// The observers of a server, shared by every action's runner.
pub type Observers = Arc<[Arc<dyn RunObserver>]>;
