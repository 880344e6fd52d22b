//! The history of runs in `history.json`, kept in memory too.
//!
//! One file holds the runs of every action; retention counts each action's runs apart, so a busy action
//! does not push a quiet one's runs out.
//!
//! An entry is written when a run starts ("Deploying") and rewritten when it ends, so a crash never loses
//! a run. The whole file is replaced atomically on every change, and a file that cannot be parsed stops
//! start-up instead of being overwritten. Readers are served from memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};

use serde::Deserialize;

use crate::model::action::DEFAULT_ID;
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
    /// How many runs of each action are kept.
    retention: usize,
    /// The first action's id: entries without an action are its runs.
    first_action: String,
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
            first_action: DEFAULT_ID.to_string(),
            records: Mutex::new(Arc::new(records)),
            interrupted,
            write_lock: tokio::sync::Mutex::new(()),
            version: AtomicU64::new(0),
        };
        if !history.interrupted.is_empty() {
            let bytes = serialize(&history.snapshot());
            atomic::write_atomic(path, &bytes, 0o644).map_err(|source| history.io("written", source))?;
        }
        Ok(history)
    }

    /// Names the first action (`deploy` unless told), whose runs the entries without an action are.
    pub fn with_first_action(mut self, id: &str) -> Self {
        self.first_action = id.to_string();
        self
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
        let written = tokio::task::spawn_blocking(move || atomic::write_atomic(&path, &bytes, 0o644))
            .await
            .unwrap_or_else(|join| Err(std::io::Error::other(join)));
        written.map_err(|source| self.io("written", source))
    }

    /// Keeps each action's newest `retention` runs, saying so when older ones go.
    fn trim(&self, list: &mut Vec<RunRecord>) {
        // No action can have more runs than the list: most changes stop here.
        if list.len() <= self.retention {
            return;
        }
        let action = |record: &RunRecord| -> String {
            record.action.clone().unwrap_or_else(|| self.first_action.clone())
        };
        let mut counts: HashMap<String, usize> = HashMap::new();
        for record in list.iter() {
            *counts.entry(action(record)).or_default() += 1;
        }
        let before = list.len();
        // Oldest first: each action drops its runs past `retention` from its oldest.
        list.retain(|record| match counts.get_mut(&action(record)) {
            Some(count) if *count > self.retention => {
                *count -= 1;
                false
            }
            _ => true,
        });
        let dropped = before - list.len();
        if dropped > 0 {
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
    let Some(text) = atomic::read_if_present(path).map_err(|source| HISTORY_FILE.io(path, "read", source))?
    else {
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
}
