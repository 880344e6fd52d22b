//! The regulation state in a JSON file, so a restart forgives nothing.
//!
//! `authrun unlock` edits the same file from another process and leaves a marker beside it, which tells
//! the running server to read the file again; both sides change the file only while holding a lock file,
//! so neither overwrites the other's change. The file work runs on the blocking pool, never on a request's
//! worker thread.

use std::path::Path;

use crate::model::client::ClientKey;
use crate::model::regulation::RegulationState;
use crate::store::file::shared::{self, SharedJson};
use crate::store::{RegulationStore, StateFile, StoreError};

/// The regulation state file, in error messages.
pub const REGULATION_STATE: StateFile = StateFile {
    what: "regulation state",
    repair: "repair the file, or delete it to forget every ban and pause",
};

/// The regulation state of a running server, mirrored in memory.
#[derive(Debug)]
pub struct FileRegulation(SharedJson<RegulationState>);

impl FileRegulation {
    /// Reads the state file (a missing one is a clean slate). One that cannot be parsed stops start-up.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        SharedJson::open(REGULATION_STATE, path).map(Self)
    }
}

#[async_trait::async_trait]
impl RegulationStore for FileRegulation {
    fn read(&self, look: &mut (dyn for<'s> FnMut(&'s RegulationState) + Send)) {
        look(&self.0.lock());
    }

    async fn transact(
        &self,
        change: &mut (dyn for<'s> FnMut(&'s mut RegulationState) -> bool + Send),
    ) -> Result<(), StoreError> {
        self.0.transact(change).await
    }
}

/// The state file as it is (a missing one: a clean slate).
pub fn read(path: &Path) -> Result<RegulationState, StoreError> {
    shared::read(REGULATION_STATE, path)
}

/// Clears bans from the state file, for `authrun unlock`: one client's, or (with `None`) every ban, the
/// pause and the failures counted towards the next (the doubling stays). Returns how many blocks were
/// lifted. A running server picks the change up at its next attempt.
pub fn unlock(path: &Path, client: Option<&ClientKey>) -> Result<usize, StoreError> {
    shared::edit(REGULATION_STATE, path, |state: &mut RegulationState| {
        Ok(lift(state, client))
    })
}

/// What [`unlock`] does to the state, wherever it is kept: lifts `client`'s ban (and forgets its
/// failures), or every ban and the pause. Returns how many blocks were lifted.
pub fn lift(state: &mut RegulationState, client: Option<&ClientKey>) -> usize {
    match client {
        Some(client) => {
            state.client_failures.remove(client);
            usize::from(state.bans.remove(client).is_some())
        }
        None => {
            let lifted = state.bans.len() + usize::from(state.paused_until.is_some());
            // The doubling stays: an unlock must not hand an attacker short pauses again.
            *state = RegulationState {
                pauses: state.pauses,
                last_pause_end: state.last_pause_end,
                ..RegulationState::default()
            };
            lifted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlocking_everything_lifts_bans_and_the_pause_but_keeps_the_doubling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("regulation.json");
        std::fs::write(
            &path,
            r#"{"bans": {"192.0.2.1": "2026-11-25T12:15:00Z"}, "paused_until": "2026-11-25T16:00:00Z",
                "pauses": 3, "last_pause_end": "2026-11-25T16:00:00Z",
                "global_failures": ["2026-11-25T12:00:00Z"]}"#,
        )
        .unwrap();
        assert_eq!(unlock(&path, None).unwrap(), 2);
        let state: RegulationState = shared::read(REGULATION_STATE, &path).unwrap();
        assert!(state.bans.is_empty());
        assert_eq!(state.paused_until, None);
        assert!(state.global_failures.is_empty());
        assert_eq!(state.pauses, 3);
        assert!(state.last_pause_end.is_some());
    }

    #[test]
    fn a_corrupt_state_file_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("regulation.json");
        std::fs::write(&path, "{\"bans\": [").unwrap();
        let error = FileRegulation::open(&path).unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"bans\": [");
    }
}
