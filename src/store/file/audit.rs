//! The audit log as a JSON-lines file: one line per verification attempt, per ban or pause as it begins
//! and ends, and per unlock.
//!
//! Lines are appended and flushed before the answer goes out, on the blocking pool. A line that cannot be
//! written is reported loudly and returned as an error, so the caller refuses the request. The code is
//! never written.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use serde::Serialize;

use crate::model::audit::{AuditEntry, AuditEvent, Outcome};
use crate::model::regulation::RegulationEvent;
use crate::model::time::format_time;
use crate::store::file::atomic;
use crate::store::{AuditError, AuditSink};

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pause_number: Option<u32>,
}

impl<'a> Line<'a> {
    fn of(entry: &'a AuditEntry<'a>) -> Self {
        let mut line = Line {
            time: format_time(entry.time),
            event: "attempt",
            client: None,
            outcome: None,
            run_id: None,
            until: None,
            pause_number: None,
        };
        match &entry.event {
            AuditEvent::Attempt {
                client,
                outcome,
                run_id,
            } => {
                line.client = Some(client.to_string());
                line.outcome = Some(*outcome);
                line.run_id = *run_id;
            }
            AuditEvent::Regulation(event) => match event {
                RegulationEvent::BanStarted { client, until } => {
                    line.event = "ban_started";
                    line.client = Some(client.to_string());
                    line.until = Some(format_time(*until));
                }
                RegulationEvent::BanEnded { client } => {
                    line.event = "ban_ended";
                    line.client = Some(client.to_string());
                }
                RegulationEvent::PauseStarted { until, pause_number } => {
                    line.event = "pause_started";
                    line.until = Some(format_time(*until));
                    line.pause_number = Some(*pause_number);
                }
                RegulationEvent::PauseEnded => line.event = "pause_ended",
            },
            AuditEvent::Unlocked { client } => {
                line.event = "unlocked";
                line.client = Some(client.map_or_else(|| "all".to_string(), ToString::to_string));
            }
        }
        line
    }
}

/// An append-only JSON-lines file.
#[derive(Debug)]
pub struct AuditLog {
    path: Arc<PathBuf>,
    file: Arc<Mutex<File>>,
}

impl AuditLog {
    /// Opens (creating, owner-only) the log for appending: a regular file, or a device such as `/dev/null`.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let fail = |source| AuditError {
            path: path.to_path_buf(),
            source,
        };
        atomic::create_parent_dir(path).map_err(fail)?;
        let file = atomic::open_append(path).map_err(fail)?;
        Ok(Self {
            path: Arc::new(path.to_path_buf()),
            file: Arc::new(Mutex::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line now, on this thread: for the command line, which has no request to keep waiting.
    pub fn record_now(&self, entry: &AuditEntry<'_>) -> Result<(), AuditError> {
        append(&self.path, &self.file, &encode(entry))
    }
}

#[async_trait::async_trait]
impl AuditSink for AuditLog {
    async fn record(&self, entry: &AuditEntry<'_>) -> Result<(), AuditError> {
        let bytes = encode(entry);
        let (path, file) = (Arc::clone(&self.path), Arc::clone(&self.file));
        tokio::task::spawn_blocking(move || append(&path, &file, &bytes))
            .await
            .unwrap_or_else(|join| {
                Err(AuditError {
                    path: self.path.to_path_buf(),
                    source: std::io::Error::other(join),
                })
            })
    }
}

fn encode(entry: &AuditEntry<'_>) -> Vec<u8> {
    if let AuditEvent::Regulation(event) = &entry.event {
        tracing::warn!(?event, "regulation");
    }
    let mut bytes = serde_json::to_vec(&Line::of(entry)).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn append(path: &Path, file: &Mutex<File>, bytes: &[u8]) -> Result<(), AuditError> {
    let mut file = file.lock();
    file.write_all(bytes).and_then(|()| file.flush()).map_err(|source| {
        tracing::error!(path = %path.display(), %source, "AUDIT LOG WRITE FAILED: refusing requests until it works");
        AuditError {
            path: path.to_path_buf(),
            source,
        }
    })
}
