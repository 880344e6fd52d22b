//! The regulation state in a JSON file, so a restart forgives nothing.
//!
//! `authrun unlock` edits the same file from another process and leaves a marker beside it, which tells
//! the running server to read the file again; both sides change the file only while holding a lock file,
//! so neither overwrites the other's change. The file work runs on the blocking pool, never on a request's
//! worker thread.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use nix::fcntl::{Flock, FlockArg};
use std::os::unix::fs::OpenOptionsExt;

use crate::model::client::ClientKey;
use crate::model::regulation::RegulationState;
use crate::store::file::atomic;
use crate::store::{RegulationStore, StateFile, StoreError};

/// The regulation state file, in error messages.
pub const REGULATION_STATE: StateFile = StateFile {
    what: "regulation state",
    repair: "repair the file, or delete it to forget every ban and pause",
};

/// The regulation state of a running server, mirrored in memory.
#[derive(Debug)]
pub struct FileRegulation {
    path: Arc<PathBuf>,
    state: Mutex<RegulationState>,
    /// Orders transactions: each holds it from reading the marker to writing the file.
    writing: tokio::sync::Mutex<()>,
}

impl FileRegulation {
    /// Reads the state file (a missing one is a clean slate). One that cannot be parsed stops start-up.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let state = {
            let _lock = FileLock::take(path)?;
            let _ = std::fs::remove_file(reload_marker(path));
            read_state(path)?
        };
        Ok(Self {
            path: Arc::new(path.to_path_buf()),
            state: Mutex::new(state),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, RegulationState> {
        self.state.lock()
    }
}

#[async_trait::async_trait]
impl RegulationStore for FileRegulation {
    fn read(&self, look: &mut (dyn for<'s> FnMut(&'s RegulationState) + Send)) {
        look(&self.lock());
    }

    async fn transact(
        &self,
        change: &mut (dyn for<'s> FnMut(&'s mut RegulationState) -> bool + Send),
    ) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        let path = Arc::clone(&self.path);
        let prepared = blocking(move || {
            let lock = FileLock::take(&path)?;
            let marker = reload_marker(&path);
            if !marker.exists() {
                return Ok((lock, None));
            }
            let state = read_state(&path)?;
            let _ = std::fs::remove_file(&marker);
            Ok((lock, Some(state)))
        })
        .await;
        let (lock, reloaded) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                // The file cannot be used now (a full disk, say); the change holds in memory all the same.
                change(&mut self.lock());
                return Err(error);
            }
        };
        let bytes = {
            let mut state = self.lock();
            if let Some(reloaded) = reloaded {
                *state = reloaded;
            }
            if !change(&mut state) {
                return Ok(());
            }
            serialize(&state)
        };
        let path = Arc::clone(&self.path);
        blocking(move || {
            let written = write_bytes(&path, &bytes);
            drop(lock);
            written
        })
        .await
    }
}

/// Runs file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|join| {
        Err(REGULATION_STATE.io(
            Path::new("(regulation state)"),
            "written",
            std::io::Error::other(join),
        ))
    })
}

/// Clears bans from the state file, for `authrun unlock`: one client's, or (with `None`) every ban, the
/// pause and the failures counted towards the next (the doubling stays). Returns how many blocks were lifted. A running server picks the change up at its next attempt.
pub fn unlock(path: &Path, client: Option<&ClientKey>) -> Result<usize, StoreError> {
    let _lock = FileLock::take(path)?;
    let mut state = read_state(path)?;
    let lifted = match client {
        Some(client) => usize::from(state.bans.remove(client).is_some()),
        None => {
            let lifted = state.bans.len() + usize::from(state.paused_until.is_some());
            // The doubling stays: an unlock must not hand an attacker short pauses again.
            state = RegulationState {
                pauses: state.pauses,
                last_pause_end: state.last_pause_end,
                ..RegulationState::default()
            };
            lifted
        }
    };
    write_bytes(path, &serialize(&state))?;
    std::fs::write(reload_marker(path), b"")
        .map_err(|source| REGULATION_STATE.io(path, "marked for reloading", source))?;
    Ok(lifted)
}

/// The file whose presence tells a running server to read the state again.
fn reload_marker(path: &Path) -> PathBuf {
    sibling(path, "reload")
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}

/// An exclusive lock on `<state file>.lock`, held while the state file is read and rewritten.
struct FileLock(#[allow(dead_code)] Flock<File>);

impl FileLock {
    fn take(path: &Path) -> Result<Self, StoreError> {
        let lock_path = sibling(path, "lock");
        atomic::create_parent_dir(path)
            .map_err(|source| REGULATION_STATE.io(path, "given a directory", source))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| REGULATION_STATE.io(&lock_path, "opened", source))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(Self)
            .map_err(|(_, errno)| REGULATION_STATE.io(&lock_path, "locked", errno.into()))
    }
}

fn read_state(path: &Path) -> Result<RegulationState, StoreError> {
    match atomic::read_if_present(path).map_err(|error| error.about(REGULATION_STATE, path))? {
        None => Ok(RegulationState::default()),
        Some(text) => serde_json::from_str(&text).map_err(|error| REGULATION_STATE.corrupt(path, &error)),
    }
}

fn serialize(state: &RegulationState) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    atomic::write_atomic(path, bytes).map_err(|source| REGULATION_STATE.io(path, "written", source))
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
        let state = read_state(&path).unwrap();
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
