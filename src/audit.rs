//! The audit log: one JSON line per verification attempt, and per ban or pause as it begins and ends.
//!
//! Lines are appended and flushed before the answer goes out. A line that cannot be written makes the
//! request fail (503) instead of passing unaudited, and is reported loudly. The code is never written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;

use crate::guard::{ClientKey, GuardEvent};
use crate::history::format_time;

/// What became of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Started,
    Wrong,
    Malformed,
    Replayed,
    Running,
    CoolingDown,
    Banned,
    Paused,
    Forbidden,
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: cannot be written: {source}")]
pub struct AuditError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pause_number: Option<u32>,
}

/// An append-only JSON-lines file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating, owner-only) the log for appending.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let fail = |source| AuditError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(fail)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(fail)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one verification attempt.
    pub fn attempt(
        &self,
        now: OffsetDateTime,
        client: &ClientKey,
        outcome: Outcome,
        run_id: Option<u64>,
    ) -> Result<(), AuditError> {
        let client = client.to_string();
        self.write(&Line {
            time: format_time(now),
            event: "attempt",
            client: Some(&client),
            outcome: Some(outcome),
            run_id,
            until: None,
            pause_number: None,
        })
    }

    /// Records bans and pauses beginning and ending.
    pub fn guard_events(&self, now: OffsetDateTime, events: &[GuardEvent]) -> Result<(), AuditError> {
        for event in events {
            let (name, client, until, pause_number) = match event {
                GuardEvent::BanStarted { client, until } => {
                    ("ban_started", Some(client.to_string()), Some(*until), None)
                }
                GuardEvent::BanEnded { client } => ("ban_ended", Some(client.to_string()), None, None),
                GuardEvent::PauseStarted { until, pause_number } => {
                    ("pause_started", None, Some(*until), Some(*pause_number))
                }
                GuardEvent::PauseEnded => ("pause_ended", None, None, None),
            };
            tracing::warn!(event = name, client = client.as_deref(), "regulation");
            self.write(&Line {
                time: format_time(now),
                event: name,
                client: client.as_deref(),
                outcome: None,
                run_id: None,
                until: until.map(format_time),
                pause_number,
            })?;
        }
        Ok(())
    }

    /// Records an operator's `authrun unlock`.
    pub fn unlocked(&self, now: OffsetDateTime, client: Option<&ClientKey>) -> Result<(), AuditError> {
        let client = client.map(ToString::to_string);
        self.write(&Line {
            time: format_time(now),
            event: "unlocked",
            client: Some(client.as_deref().unwrap_or("all")),
            outcome: None,
            run_id: None,
            until: None,
            pause_number: None,
        })
    }

    fn write(&self, line: &Line<'_>) -> Result<(), AuditError> {
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
        bytes.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(&bytes).and_then(|()| file.flush()).map_err(|source| {
            tracing::error!(path = %self.path.display(), %source, "AUDIT LOG WRITE FAILED: refusing requests until it works");
            AuditError {
                path: self.path.clone(),
                source,
            }
        })
    }
}
