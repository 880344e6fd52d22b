//! A JSON state file that a running server and the command line both change: the regulation state
//! (`authrun unlock`) and the operators (`authrun operator ...`).
//!
//! Both sides change the file only while holding `<file>.lock`, so neither overwrites the other's change;
//! the command line leaves `<file>.reload` beside it, which tells the server to read the file again before
//! its next change. The server keeps the state in memory, so reading it costs no file work; its file work
//! runs on the blocking pool, never on a request's worker thread. A file that cannot be parsed is refused
//! and never overwritten.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::file::atomic;
use crate::store::{StateFile, StoreError};

/// A state of type `T` kept in a JSON file, mirrored in memory.
#[derive(Debug)]
pub struct SharedJson<T> {
    kind: StateFile,
    path: Arc<PathBuf>,
    state: Mutex<T>,
    /// Orders transactions: each holds it from reading the marker to writing the file.
    writing: tokio::sync::Mutex<()>,
}

impl<T> SharedJson<T>
where
    T: Serialize + DeserializeOwned + Default + Send + 'static,
{
    /// Reads the file (a missing one is the default state). One that cannot be parsed stops start-up.
    pub fn open(kind: StateFile, path: &Path) -> Result<Self, StoreError> {
        let state = {
            let _lock = FileLock::take(kind, path)?;
            let _ = std::fs::remove_file(reload_marker(path));
            read_state(kind, path)?
        };
        Ok(Self {
            kind,
            path: Arc::new(path.to_path_buf()),
            state: Mutex::new(state),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Reads the file again when the command line changed it (a marker is beside it). One `stat` when
    /// nothing changed; for stores read on rare paths (the operators), where a reader must see the
    /// command line's change at once. A file that cannot be read keeps the state as it was.
    pub fn reload_if_marked(&self) {
        let marker = reload_marker(&self.path);
        if !marker.exists() {
            return;
        }
        let Ok(_lock) = FileLock::take(self.kind, &self.path) else {
            return;
        };
        match read_state::<T>(self.kind, &self.path) {
            Ok(state) => {
                *self.lock() = state;
                let _ = std::fs::remove_file(&marker);
            }
            Err(error) => tracing::error!(%error, "the state file could not be read again"),
        }
    }

    /// The state as this server last saw it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.state.lock()
    }

    /// Changes the state under the file's lock, after picking up changes made by the command line.
    /// `change` returns whether it changed anything; only then is the file written. When the file cannot
    /// be read the change holds in memory and the error is returned; when it cannot be written, likewise.
    pub async fn transact(&self, change: &mut (dyn FnMut(&mut T) -> bool + Send)) -> Result<(), StoreError> {
        self.transact_with(false, change).await
    }

    /// [`SharedJson::transact`], but a change that cannot be written is taken back (in memory too): for
    /// changes that must be durable before anyone is told of them (a code used, a token spent).
    pub async fn transact_durably(
        &self,
        change: &mut (dyn FnMut(&mut T) -> bool + Send),
    ) -> Result<(), StoreError> {
        self.transact_with(true, change).await
    }

    async fn transact_with(
        &self,
        durable: bool,
        change: &mut (dyn FnMut(&mut T) -> bool + Send),
    ) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        let (kind, path) = (self.kind, Arc::clone(&self.path));
        let prepared = blocking(kind, move || {
            let lock = FileLock::take(kind, &path)?;
            let marker = reload_marker(&path);
            if !marker.exists() {
                return Ok((lock, None));
            }
            let state = read_state::<T>(kind, &path)?;
            let _ = std::fs::remove_file(&marker);
            Ok((lock, Some(state)))
        })
        .await;
        let (lock, reloaded) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                if !durable {
                    change(&mut self.lock());
                }
                return Err(error);
            }
        };
        let (bytes, before) = {
            let mut state = self.lock();
            if let Some(reloaded) = reloaded {
                *state = reloaded;
            }
            let before = if durable { serialize(&*state) } else { Vec::new() };
            if !change(&mut state) {
                return Ok(());
            }
            (serialize(&*state), before)
        };
        let path = Arc::clone(&self.path);
        let written = blocking(kind, move || {
            let written = write_bytes(kind, &path, &bytes);
            drop(lock);
            written
        })
        .await;
        if written.is_err()
            && durable
            && let Ok(state) = serde_json::from_slice(&before)
        {
            *self.lock() = state;
        }
        written
    }
}

/// Changes the file from another process (the command line), under its lock, and tells a running server
/// to read it again. `change` sees the state as the file holds it and returns what to report.
pub fn edit<T, R>(
    kind: StateFile,
    path: &Path,
    change: impl FnOnce(&mut T) -> Result<R, StoreError>,
) -> Result<R, StoreError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let _lock = FileLock::take(kind, path)?;
    let mut state = read_state(kind, path)?;
    let report = change(&mut state)?;
    write_bytes(kind, path, &serialize(&state))?;
    std::fs::write(reload_marker(path), b"")
        .map_err(|source| kind.io(path, "marked for reloading", source))?;
    Ok(report)
}

/// Reads the file as it is now, under its lock (for the command line's listings).
pub fn read<T: DeserializeOwned + Default>(kind: StateFile, path: &Path) -> Result<T, StoreError> {
    let _lock = FileLock::take(kind, path)?;
    read_state(kind, path)
}

/// Runs file work on the blocking pool.
async fn blocking<R: Send + 'static>(
    kind: StateFile,
    work: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(kind.io(Path::new(kind.what), "written", std::io::Error::other(join))))
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
    fn take(kind: StateFile, path: &Path) -> Result<Self, StoreError> {
        let lock_path = sibling(path, "lock");
        atomic::create_parent_dir(path).map_err(|source| kind.io(path, "given a directory", source))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| kind.io(&lock_path, "opened", source))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(Self)
            .map_err(|(_, errno)| kind.io(&lock_path, "locked", errno.into()))
    }
}

fn read_state<T: DeserializeOwned + Default>(kind: StateFile, path: &Path) -> Result<T, StoreError> {
    match atomic::read_if_present(path).map_err(|error| error.about(kind, path))? {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(&text).map_err(|error| kind.corrupt(path, &error)),
    }
}

fn serialize<T: Serialize>(state: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn write_bytes(kind: StateFile, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    atomic::write_atomic(path, bytes).map_err(|source| kind.io(path, "written", source))
}
