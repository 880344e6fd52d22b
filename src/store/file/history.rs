//! The history of runs in `history.json`, kept in memory too.
//!
//! An entry is written when a run starts ("Deploying") and rewritten when it ends, so a crash never loses
//! a run. The whole file is replaced atomically on every change, and a file that cannot be parsed stops
//! start-up instead of being overwritten. Readers are served from memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};

use serde::Deserialize;

use crate::model::run::{RunRecord, RunStatus};
use crate::store::file::atomic;
use crate::store::{RunStore, StateFile, StoreError};

/// The history file, in error messages.
pub const HISTORY_FILE: StateFile = StateFile {
    what: "history file",
    repair: "repair the file or move it aside; authrun will not overwrite it",
};

/// The status answer's shape, also accepted as a history file.
#[derive(Deserialize)]
struct Wrapped {
    history: Vec<RunRecord>,
}

/// All runs, oldest first, in memory and in one JSON file.
#[derive(Debug)]
pub struct FileHistory {
    path: PathBuf,
    retention: usize,
    records: Mutex<Arc<Vec<RunRecord>>>,
    /// The runs found "Deploying" on open, as they were, before being marked "Interrupted".
    interrupted: Vec<RunRecord>,
    /// Orders file writes: each one is serialised and written while this is held.
    write_lock: tokio::sync::Mutex<()>,
    version: AtomicU64,
}

impl FileHistory {
    /// Reads `path` (a missing file is an empty history) and marks runs left "Deploying" by a crash as
    /// "Interrupted", writing the file back only if that changed anything.
    pub fn open(path: &Path, retention: usize) -> Result<Self, StoreError> {
        let mut records = read_file(path)?;
        let mut interrupted = Vec::new();
        for record in records.iter_mut().filter(|r| r.status == RunStatus::Deploying) {
            interrupted.push(record.clone());
            record.status = RunStatus::Interrupted;
            record.error = Some("authrun stopped while the run was going".into());
        }
        let history = Self {
            path: path.to_path_buf(),
            retention: retention.max(1),
            records: Mutex::new(Arc::new(records)),
            interrupted,
            write_lock: tokio::sync::Mutex::new(()),
            version: AtomicU64::new(0),
        };
        if !history.interrupted.is_empty() {
            let bytes = serialize(&history.snapshot());
            atomic::write_atomic(path, &bytes).map_err(|source| history.io("written", source))?;
        }
        Ok(history)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn change(&self, edit: impl FnOnce(&mut Vec<RunRecord>)) -> Result<(), StoreError> {
        let _writing = self.write_lock.lock().await;
        let bytes = {
            let mut records = self.lock();
            let list = Arc::make_mut(&mut records);
            edit(list);
            self.trim(list);
            self.version.fetch_add(1, Ordering::Release);
            serialize(list)
        };
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || atomic::write_atomic(&path, &bytes))
            .await
            .unwrap_or_else(|join| Err(std::io::Error::other(join)));
        written.map_err(|source| self.io("written", source))
    }

    /// Keeps the newest `retention` runs, saying so when older ones go.
    fn trim(&self, list: &mut Vec<RunRecord>) {
        if list.len() > self.retention {
            let dropped = list.len() - self.retention;
            list.drain(..dropped);
            tracing::info!(
                dropped,
                retention = self.retention,
                "oldest history entries removed by retention setting"
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, Arc<Vec<RunRecord>>> {
        self.records.lock()
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> StoreError {
        HISTORY_FILE.io(&self.path, action, source)
    }
}

#[async_trait::async_trait]
impl RunStore for FileHistory {
    fn snapshot(&self) -> Arc<Vec<RunRecord>> {
        Arc::clone(&self.lock())
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn interrupted(&self) -> &[RunRecord] {
        &self.interrupted
    }

    async fn append(&self, record: RunRecord) -> Result<(), StoreError> {
        self.change(|records| records.push(record)).await
    }

    async fn update(&self, record: RunRecord) -> Result<(), StoreError> {
        self.change(|records| {
            if let Some(slot) = records.iter_mut().rev().find(|r| r.id == record.id) {
                *slot = record;
            } else {
                records.push(record);
            }
        })
        .await
    }
}

fn read_file(path: &Path) -> Result<Vec<RunRecord>, StoreError> {
    let Some(text) = atomic::read_if_present(path).map_err(|error| error.about(HISTORY_FILE, path))? else {
        return Ok(Vec::new());
    };
    parse(&text).map_err(|error| HISTORY_FILE.corrupt(path, &error))
}

/// The file holds a bare list (the original's format, and ours) or `{"history": [...]}`.
fn parse(text: &str) -> Result<Vec<RunRecord>, serde_json::Error> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str::<Wrapped>(text).map(|wrapped| wrapped.history)
    } else {
        serde_json::from_str(text)
    }
}

fn serialize(records: &[RunRecord]) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(records).unwrap_or_else(|_| b"[]".to_vec());
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn reads_the_original_history_file() {
        let text = r#"[{"time": "2024-05-01T12:00:00.123456", "status": "Deploy succeeded"},
                       {"time": "2024-05-01T12:10:00", "status": "Deploy failed"}]"#;
        let records = parse(text).unwrap();
        assert_eq!(records[0].time, datetime!(2024-05-01 12:00:00.123456 UTC));
        assert_eq!(records[1].status, RunStatus::Failed);
        assert_eq!(records[1].id, None);
    }

    #[test]
    fn reports_the_position_of_a_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        std::fs::write(
            &path,
            "[\n  {\"time\": \"2024-05-01T12:00:00\", \"status\": \"Deploy succeeded\"},\n  oops\n]",
        )
        .unwrap();
        let error = FileHistory::open(&path, 10).unwrap_err().to_string();
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        let history = FileHistory::open(&path, 3).unwrap();
        for id in 1..=5 {
            history
                .append(RunRecord::started(id, datetime!(2026-11-25 19:00:00 UTC), id))
                .await
                .unwrap();
        }
        let ids: Vec<_> = history.snapshot().iter().filter_map(|r| r.id).collect();
        assert_eq!(ids, [3, 4, 5]);
        let reopened = FileHistory::open(&path, 3).unwrap();
        assert_eq!(reopened.snapshot().len(), 3);
    }

    #[tokio::test]
    async fn the_history_file_is_owner_only_also_when_it_was_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        // As the original AuthRun left it.
        std::fs::write(&path, "[]").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let history = FileHistory::open(&path, 3).unwrap();
        history
            .append(RunRecord::started(1, datetime!(2026-11-25 19:00:00 UTC), 1))
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}
