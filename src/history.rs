//! The record of every run, kept in memory and in `history.json`.
//!
//! An entry is written when a run starts ("Deploying") and rewritten when it ends, so a crash never loses
//! a run. The whole file is replaced atomically on every change, and a file that cannot be parsed stops
//! start-up instead of being overwritten. Readers (the status endpoint, the page) are served from memory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::fsio::{self, StateFile, StateFileError};

/// How a run ended, or that it has not yet. The texts are those of the original history file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    #[serde(rename = "Deploying")]
    Deploying,
    #[serde(rename = "Deploy succeeded")]
    Succeeded,
    #[serde(rename = "Deploy failed")]
    Failed,
    #[serde(rename = "Timed out")]
    TimedOut,
    /// authrun stopped (crash or shutdown) while the run was going.
    #[serde(rename = "Interrupted")]
    Interrupted,
    /// Someone cancelled the run.
    #[serde(rename = "Cancelled")]
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploying => "Deploying",
            Self::Succeeded => "Deploy succeeded",
            Self::Failed => "Deploy failed",
            Self::TimedOut => "Timed out",
            Self::Interrupted => "Interrupted",
            Self::Cancelled => "Cancelled",
        }
    }

    /// A short word for styling and scripts: `running`, `succeeded`, `failed`, ...
    pub fn kind(self) -> &'static str {
        match self {
            Self::Deploying => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed-out",
            Self::Interrupted => "interrupted",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run. `time` and `status` are the original fields; the others were added by authrun and are absent
/// from entries written by the original.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// When the run started, ISO-8601 in UTC.
    #[serde(with = "iso_time")]
    pub time: OffsetDateTime,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "iso_time::option")]
    pub finished: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The TOTP time step of the code that started the run; it keeps a used code refused after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_step: Option<u64>,
    /// The script's log file, relative to the log directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The script's process id, which is also its process group's; used to find what a crash left running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Who cancelled the run ("session from 192.0.2.7", "API token").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "iso_time::option")]
    pub cancelled_at: Option<OffsetDateTime>,
    /// Why the run could not start or was stopped, for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunRecord {
    /// A run that starts now.
    pub fn started(id: u64, time: OffsetDateTime, totp_step: u64) -> Self {
        Self {
            time,
            status: RunStatus::Deploying,
            id: Some(id),
            finished: None,
            exit_code: None,
            duration_ms: None,
            totp_step: Some(totp_step),
            log: None,
            pid: None,
            cancelled_by: None,
            cancelled_at: None,
            error: None,
        }
    }

    /// Marks the run as ended at `at`.
    pub fn finish(&mut self, status: RunStatus, at: OffsetDateTime, exit_code: Option<i32>) {
        self.status = status;
        self.finished = Some(at);
        self.exit_code = exit_code;
        let millis = (at - self.time).whole_milliseconds().max(0);
        self.duration_ms = Some(u64::try_from(millis).unwrap_or(u64::MAX));
    }
}

/// The history file, in error messages.
pub const HISTORY_FILE: StateFile = StateFile {
    what: "history file",
    repair: "repair the file or move it aside; authrun will not overwrite it",
};

/// Why the history file cannot be used.
pub type HistoryError = StateFileError;

/// The status answer's shape, also accepted as a history file.
#[derive(Deserialize)]
struct Wrapped {
    history: Vec<RunRecord>,
}

/// All runs, oldest first, in memory and on disk.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    retention: usize,
    records: Mutex<Arc<Vec<RunRecord>>>,
    /// The runs found "Deploying" on open, as they were, before being marked "Interrupted".
    interrupted: Vec<RunRecord>,
    /// Orders file writes: each one is serialised and written while this is held.
    write_lock: tokio::sync::Mutex<()>,
    /// Counts changes; the status answer's cache is keyed on it.
    version: AtomicU64,
    /// The newest runs as JSON: (version, how many, the JSON).
    tail_cache: Mutex<Option<(u64, usize, Bytes)>>,
    /// What [`History::memo`] made, and for which version.
    memo: Mutex<Option<(u64, Arc<str>)>>,
}

impl History {
    /// Reads `path` (a missing file is an empty history) and marks runs left "Deploying" by a crash as
    /// "Interrupted", writing the file back only if that changed anything.
    pub fn open(path: &Path, retention: usize) -> Result<Self, HistoryError> {
        let mut records = read_file(path)?;
        let mut interrupted = Vec::new();
        for record in records.iter_mut().filter(|r| r.status == RunStatus::Deploying) {
            interrupted.push(record.clone());
            record.status = RunStatus::Interrupted;
            record.error = Some("authrun stopped while the run was going".into());
        }
        let recovered = !interrupted.is_empty();
        let history = Self {
            path: path.to_path_buf(),
            retention: retention.max(1),
            records: Mutex::new(Arc::new(records)),
            interrupted,
            write_lock: tokio::sync::Mutex::new(()),
            version: AtomicU64::new(0),
            tail_cache: Mutex::new(None),
            memo: Mutex::new(None),
        };
        if recovered {
            let bytes = serialize(&history.snapshot());
            fsio::write_atomic(path, &bytes, 0o644).map_err(|source| history.io("written", source))?;
        }
        Ok(history)
    }

    /// The runs a crash left "Deploying", as they were found.
    pub fn interrupted(&self) -> &[RunRecord] {
        &self.interrupted
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every run, oldest first. Cheap: the list is shared, not copied.
    pub fn snapshot(&self) -> Arc<Vec<RunRecord>> {
        Arc::clone(&self.lock())
    }

    /// Counts the changes of the history: equal versions, equal runs.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The newest `count` runs as a JSON array, oldest first. Serialised once per change of the history,
    /// so answering the status endpoint costs the same however long the history is.
    pub fn tail_json(&self, count: usize) -> Bytes {
        let (records, version) = {
            let records = self.lock();
            (Arc::clone(&records), self.version())
        };
        let mut cache = self
            .tail_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached_version, cached_count, json)) = cache.as_ref()
            && *cached_version == version
            && *cached_count == count
        {
            return json.clone();
        }
        let start = records.len().saturating_sub(count);
        let json = Bytes::from(serde_json::to_vec(&records[start..]).unwrap_or_else(|_| b"[]".to_vec()));
        *cache = Some((version, count, json.clone()));
        json
    }

    /// Text derived from the history (the page's table of recent runs), made by `make` once per change
    /// of the history and shared until the next.
    pub fn memo(&self, make: impl FnOnce(&[RunRecord]) -> String) -> Arc<str> {
        let (records, version) = {
            let records = self.lock();
            (Arc::clone(&records), self.version())
        };
        let mut memo = self.memo.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached_version, text)) = memo.as_ref()
            && *cached_version == version
        {
            return Arc::clone(text);
        }
        let text: Arc<str> = make(&records).into();
        *memo = Some((version, Arc::clone(&text)));
        text
    }

    /// Run `id`, if the history still holds it.
    pub fn record(&self, id: u64) -> Option<RunRecord> {
        self.lock()
            .iter()
            .rev()
            .find(|record| record.id == Some(id))
            .cloned()
    }

    /// The newest run, if any.
    pub fn last(&self) -> Option<RunRecord> {
        self.lock().last().cloned()
    }

    /// The highest id given so far.
    pub fn last_id(&self) -> u64 {
        self.lock().iter().filter_map(|r| r.id).max().unwrap_or(0)
    }

    /// The newest TOTP step that started a run.
    pub fn last_totp_step(&self) -> Option<u64> {
        self.lock().iter().filter_map(|r| r.totp_step).max()
    }

    /// Adds a run and writes the file.
    pub async fn append(&self, record: RunRecord) -> Result<(), HistoryError> {
        self.change(|records| records.push(record)).await
    }

    /// Replaces the run with `record`'s id and writes the file.
    pub async fn update(&self, record: RunRecord) -> Result<(), HistoryError> {
        self.change(|records| {
            if let Some(slot) = records.iter_mut().rev().find(|r| r.id == record.id) {
                *slot = record;
            } else {
                records.push(record);
            }
        })
        .await
    }

    async fn change(&self, edit: impl FnOnce(&mut Vec<RunRecord>)) -> Result<(), HistoryError> {
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
        let written = tokio::task::spawn_blocking(move || fsio::write_atomic(&path, &bytes, 0o644))
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
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> HistoryError {
        HISTORY_FILE.io(&self.path, action, source)
    }
}

fn read_file(path: &Path) -> Result<Vec<RunRecord>, HistoryError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(HISTORY_FILE.io(path, "read", source));
        }
    };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
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

/// ISO-8601 times: written as RFC 3339 in UTC; read also without an offset (as the original wrote them,
/// from Python's `utcnow().isoformat()`), taken as UTC.
mod iso_time {
    use super::*;

    pub fn serialize<S: Serializer>(time: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_lenient(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not an ISO-8601 time")))
    }

    pub fn format(time: OffsetDateTime) -> String {
        let utc = time.checked_to_offset(time::UtcOffset::UTC).unwrap_or(time);
        utc.format(&Rfc3339)
            .unwrap_or_else(|_| utc.unix_timestamp().to_string())
    }

    fn parse_lenient(text: &str) -> Option<OffsetDateTime> {
        if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
            // A time that is valid in its own offset but not in UTC (past year 9999) is not a time.
            return time.checked_to_offset(time::UtcOffset::UTC);
        }
        let naive = time::macros::format_description!(
            version = 2,
            "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        PrimitiveDateTime::parse(text, &naive)
            .ok()
            .map(PrimitiveDateTime::assume_utc)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            time: &Option<OffsetDateTime>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match time {
                Some(time) => super::serialize(time, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            let text: Option<String> = Option::deserialize(deserializer)?;
            text.map(|text| {
                parse_lenient(&text)
                    .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not an ISO-8601 time")))
            })
            .transpose()
        }
    }
}

pub use iso_time::format as format_time;

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
    fn writes_times_as_utc_iso_8601_and_omits_absent_fields() {
        let record = RunRecord::started(7, datetime!(2026-11-25 19:43:36 UTC), 42);
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"time":"2026-11-25T19:43:36Z","status":"Deploying","id":7,"totp_step":42}"#
        );
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
        let error = History::open(&path, 10).unwrap_err().to_string();
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
    }

    #[test]
    fn finishing_records_duration() {
        let mut record = RunRecord::started(1, datetime!(2026-11-25 19:00:00 UTC), 1);
        record.finish(
            RunStatus::Succeeded,
            datetime!(2026-11-25 19:01:12.5 UTC),
            Some(0),
        );
        assert_eq!(record.duration_ms, Some(72_500));
        assert_eq!(record.exit_code, Some(0));
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        let history = History::open(&path, 3).unwrap();
        for id in 1..=5 {
            history
                .append(RunRecord::started(id, datetime!(2026-11-25 19:00:00 UTC), id))
                .await
                .unwrap();
        }
        let ids: Vec<_> = history.snapshot().iter().filter_map(|r| r.id).collect();
        assert_eq!(ids, [3, 4, 5]);
        let reopened = History::open(&path, 3).unwrap();
        assert_eq!(reopened.snapshot().len(), 3);
    }
}
