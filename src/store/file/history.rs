//! The history of runs in `history.json`, kept in memory too, and its high-water mark beside it.
//!
//! One file holds the runs of every action; retention counts each action's runs apart, so a busy action
//! does not push a quiet one's runs out.
//!
//! An entry is written when a run starts ("Deploying"), before the script does, and rewritten when it
//! ends, so a crash never loses a run. The whole file is replaced atomically on every change, and a file
//! that cannot be parsed stops start-up instead of being overwritten. Readers are served from memory.
//!
//! Memory never shows a run the file cannot hold: a new run enters memory only once it is on disk. The
//! end of a run enters memory at once, written or not (the run did end; the next write that succeeds
//! takes it to the file, and a restart before that finds it "Interrupted").
//!
//! `history.json.mark` holds the highest run id given and the newest code step accepted. It is written
//! before anything else refers to a new run, so neither is ever given twice, even when the run's record
//! could not be written or retention dropped it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::model::action::DEFAULT_ID;
use crate::model::run::{RunRecord, RunStatus};
use crate::store::file::atomic;
use crate::store::{RunStore, StateFile, StoreError};

/// The history file, in error messages.
pub const HISTORY_FILE: StateFile = StateFile {
    what: "history file",
    repair: "repair the file or move it aside; authrun will not overwrite it",
};

/// The history's high-water mark, in error messages.
pub const HISTORY_MARK: StateFile = StateFile {
    what: "history mark",
    repair: "delete it; authrun then takes the last run id and used code from the history alone",
};

/// The highest run id given and the newest TOTP step accepted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Mark {
    last_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_totp_step: Option<u64>,
}

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
    mark_path: PathBuf,
    /// As last written to `mark_path`.
    mark: Mutex<Mark>,
}

impl FileHistory {
    /// Reads `path` (a missing file is an empty history) and marks runs left "Deploying" by a crash as
    /// "Interrupted", writing the file back only if that changed anything.
    pub fn open(path: &Path, retention: usize) -> Result<Self, StoreError> {
        let mut records = read_file(path)?;
        let mark_path = mark_path(path);
        let mark = read_mark(&mark_path)?;
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
            mark_path,
            mark: Mutex::new(mark),
        };
        if !history.interrupted.is_empty() {
            let bytes = serialize(&history.snapshot());
            atomic::write_atomic(path, &bytes).map_err(|source| history.io("written", source))?;
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

    /// Changes the history in memory, then writes it; the change stays in memory if the write fails.
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
        write(&self.path, bytes)
            .await
            .map_err(|source| self.io("written", source))
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
        let _writing = self.write_lock.lock().await;
        let mut list = Vec::clone(&self.snapshot());
        list.push(record);
        self.trim(&mut list);
        write(&self.path, serialize(&list))
            .await
            .map_err(|source| self.io("written", source))?;
        *self.lock() = Arc::new(list);
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    async fn reserve(&self, id: u64, totp_step: u64) -> Result<(), StoreError> {
        let _writing = self.write_lock.lock().await;
        let before = *self.mark.lock();
        let mark = Mark {
            last_id: before.last_id.max(id),
            last_totp_step: before.last_totp_step.max(Some(totp_step)),
        };
        let mut bytes = serde_json::to_vec(&mark).unwrap_or_default();
        bytes.push(b'\n');
        write(&self.mark_path, bytes)
            .await
            .map_err(|source| HISTORY_MARK.io(&self.mark_path, "written", source))?;
        *self.mark.lock() = mark;
        Ok(())
    }

    fn last_id(&self) -> u64 {
        let recorded = self.snapshot().iter().filter_map(|r| r.id).max();
        recorded.unwrap_or(0).max(self.mark.lock().last_id)
    }

    fn last_totp_step(&self) -> Option<u64> {
        let recorded = self.snapshot().iter().filter_map(|r| r.totp_step).max();
        recorded.max(self.mark.lock().last_totp_step)
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

/// Replaces `path` with `bytes`, on the blocking pool.
async fn write(path: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || atomic::write_atomic(&path, &bytes))
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join)))
}

/// A history file and its mark as they are on disk, read without changing either (runs left
/// "Deploying" stay so): for `authrun store migrate` and `authrun history export`.
#[derive(Debug, Default)]
pub struct HistoryFile {
    pub records: Vec<RunRecord>,
    /// The highest run id given, the mark's included.
    pub last_id: u64,
    /// The newest code step used, the mark's included.
    pub last_totp_step: Option<u64>,
}

impl HistoryFile {
    pub fn read(path: &Path) -> Result<Self, StoreError> {
        let records = read_file(path)?;
        let mark = read_mark(&mark_path(path))?;
        let last_id = records.iter().filter_map(|r| r.id).max().unwrap_or(0);
        let last_step = records.iter().filter_map(|r| r.totp_step).max();
        Ok(Self {
            last_id: last_id.max(mark.last_id),
            last_totp_step: last_step.max(mark.last_totp_step),
            records,
        })
    }
}

/// `records` as the history file holds them: a JSON array, oldest first, one field a line.
pub fn to_json(records: &[RunRecord]) -> Vec<u8> {
    serialize(records)
}

/// `history.json.mark` beside `history.json`.
fn mark_path(history: &Path) -> PathBuf {
    let mut name = history.file_name().unwrap_or_default().to_os_string();
    name.push(".mark");
    history.with_file_name(name)
}

fn read_mark(path: &Path) -> Result<Mark, StoreError> {
    match atomic::read_if_present(path).map_err(|error| error.about(HISTORY_MARK, path))? {
        None => Ok(Mark::default()),
        Some(text) => serde_json::from_str(&text).map_err(|error| HISTORY_MARK.corrupt(path, &error)),
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
    async fn a_reserved_id_and_step_outlive_a_restart_and_the_history_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        let history = FileHistory::open(&path, 3).unwrap();
        history.reserve(7, 59_000_000).await.unwrap();
        // An older reservation never lowers the mark.
        history.reserve(5, 58_000_000).await.unwrap();
        assert_eq!(history.snapshot().len(), 0);
        assert_eq!(history.last_id(), 7);
        let reopened = FileHistory::open(&path, 3).unwrap();
        assert_eq!(reopened.last_id(), 7);
        assert_eq!(reopened.last_totp_step(), Some(59_000_000));
        std::fs::write(mark_path(&path), "{oops").unwrap();
        let error = FileHistory::open(&path, 3).unwrap_err().to_string();
        assert!(error.contains("history.json.mark"), "{error}");
        assert_eq!(std::fs::read_to_string(mark_path(&path)).unwrap(), "{oops");
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
