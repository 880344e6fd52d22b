//! Answers and page fragments made once per change of what they say, and shared until the next.
//!
//! The status endpoint is polled by every open page and by scripts, and the page lists the recent runs:
//! both are derived from the history, so each is made once per history version (and, for the status,
//! per run state and millisecond) and the same bytes are handed to every request in between. Each action
//! has its own, so polling one action's status costs what polling the only one did.

use std::sync::Arc;

use parking_lot::Mutex;

use axum::body::Bytes;

use crate::model::run::RunRecord;
use crate::runs::gate::State as RunState;

/// One value and the key it was made for.
#[derive(Debug)]
pub struct Memo<K, T>(Mutex<Option<(K, T)>>);

impl<K, T> Default for Memo<K, T> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<K: PartialEq, T: Clone> Memo<K, T> {
    /// The value for `key`: the kept one when the key is the same, else `make`'s (kept for next time).
    pub fn get_or_make(&self, key: K, make: impl FnOnce() -> T) -> T {
        let mut slot = self.0.lock();
        if let Some((kept, value)) = slot.as_ref()
            && *kept == key
        {
            return value.clone();
        }
        let value = make();
        *slot = Some((key, value.clone()));
        value
    }
}

/// What the status answer says, besides the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusKey {
    pub history_version: u64,
    pub run_state: RunState,
    /// `now`, to the millisecond: the answer's clock is no finer.
    pub now_millis: i128,
}

/// The caches of one action.
#[derive(Debug, Default)]
pub struct ActionCaches {
    /// The whole status answer (`/get_deploy_status`, `/actions/{id}/status`).
    pub status: Memo<StatusKey, Bytes>,
    /// The action's newest runs as a JSON array, per history version.
    pub history_tail: Memo<u64, Bytes>,
    /// The page's table of the action's recent runs, per history version.
    pub runs_table: Memo<u64, Arc<str>>,
}

/// The caches of one authrun: each action's.
#[derive(Debug)]
pub struct Caches {
    actions: Vec<ActionCaches>,
    /// Each action's newest run, in the configuration's order, per history version.
    pub last_runs: Memo<u64, Arc<[Option<RunRecord>]>>,
    /// For a place that names no action; never used by a valid request.
    none: ActionCaches,
}

impl Caches {
    /// Caches for `actions` actions.
    pub fn new(actions: usize) -> Self {
        Self {
            actions: (0..actions).map(|_| ActionCaches::default()).collect(),
            last_runs: Memo::default(),
            none: ActionCaches::default(),
        }
    }

    /// The caches of the action at `action` in the configuration.
    pub fn action(&self, action: usize) -> &ActionCaches {
        self.actions.get(action).unwrap_or(&self.none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_made_once_per_key() {
        let memo = Memo::<u64, String>::default();
        let mut made = 0;
        for key in [1, 1, 2, 2, 1] {
            memo.get_or_make(key, || {
                made += 1;
                format!("v{key}")
            });
        }
        assert_eq!(made, 3);
        assert_eq!(memo.get_or_make(1, || unreachable!()), "v1");
    }
}
