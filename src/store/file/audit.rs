//! The audit log as a JSON-lines file: one line per verification attempt (refusals of a blocked or
//! cross-site client come counted, a line a minute), per ban or pause as it begins and ends, per
//! unlock, and per notification sent, given up on or dropped. The code is never written.
//!
//! Lines are appended before the answer goes out, on the blocking pool. Before a code is checked the
//! gatekeeper reserves room for its lines: the log keeps space allocated past its end (`fallocate`), so
//! a full disk refuses an attempt before its code is looked at, never after, and no line is ever cut
//! short. Past `max_bytes` the file is renamed `<file>.1` (older ones move up a number) and a new one
//! begins. A line that cannot be written is an error the caller acts on; the server log hears of the
//! trouble once a minute, not once a line.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};
use parking_lot::Mutex;

use serde::Serialize;

use crate::model::audit::{AuditEntry, AuditEvent, Delivery, Outcome, Rotation, Tally};
use crate::model::regulation::RegulationEvent;
use crate::model::time::format_time;
use crate::store::file::atomic;
use crate::store::{AuditError, AuditSink, StateFile, StoreError};

/// The audit log, as errors name it.
pub const AUDIT_LOG: StateFile = StateFile {
    what: "audit log",
    repair: "authrun only appends to it; move it aside to start a new one",
};

/// Space kept allocated past the end of the log: the lines of hundreds of attempts.
const ROOM: u64 = 64 * 1024;
/// More than the lines one attempt writes (its own, a ban's and a pause's).
const ATTEMPT_BYTES: u64 = 1024;
/// How often continuing trouble is repeated in the server log.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// Without preallocation only a failed write shows a full disk; an attempt is let through to try again
/// this long after one.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    change: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<u64>,
    /// Refusals this line stands for, when more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    /// The first of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pause_number: Option<u32>,
    /// A notification's `email` or `webhook`, its recipient, what became of it, its tries and error.
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Delivery>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl<'a> Line<'a> {
    fn of(entry: &'a AuditEntry<'a>) -> Self {
        let mut line = Line {
            time: format_time(entry.time),
            event: "attempt",
            client: None,
            action: None,
            user: None,
            change: None,
            by: None,
            outcome: None,
            run_id: None,
            count: None,
            since: None,
            until: None,
            pause_number: None,
            channel: None,
            to: None,
            result: None,
            tries: None,
            error: None,
        };
        match &entry.event {
            AuditEvent::Attempt {
                client,
                action,
                user,
                outcome,
                run_id,
            } => {
                line.client = Some(client.to_string());
                line.action = *action;
                line.user = *user;
                line.outcome = Some(*outcome);
                line.run_id = *run_id;
            }
            AuditEvent::Operator {
                name,
                change,
                by,
                until,
            } => {
                line.event = "operator";
                line.user = Some(name);
                line.change = Some(change);
                line.by = *by;
                line.until = until.map(format_time);
            }
            AuditEvent::Refusals {
                client,
                outcome,
                count,
                since,
            } => {
                line.client = Some(client.map_or_else(|| "others".to_string(), ToString::to_string));
                line.outcome = Some(*outcome);
                if *count > 1 {
                    line.count = Some(*count);
                    line.since = Some(format_time(*since));
                }
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
            AuditEvent::Notification {
                channel,
                to,
                action,
                run_id,
                result,
                tries,
                error,
            } => {
                line.event = "notification";
                line.channel = Some(channel);
                line.to = Some(to);
                line.action = *action;
                line.run_id = *run_id;
                line.result = Some(*result);
                line.tries = Some(*tries);
                line.error = *error;
            }
        }
        line
    }
}

/// One line as the tally reads it.
#[derive(serde::Deserialize)]
struct Counted {
    time: String,
    event: String,
    outcome: Option<String>,
    count: Option<u64>,
    change: Option<String>,
}

/// Counts the lines of the log at `path` written since `since`: the current file, then the rotated
/// ones (`.1`, `.2`, ...) while each still begins within the window, so a rotation during the day
/// does not hide the morning's attempts.
fn tally_files(path: &Path, since: time::OffsetDateTime) -> io::Result<Tally> {
    let mut tally = Tally::default();
    let mut reaches_back = tally_file(path, since, &mut tally)?;
    let mut number = 1;
    while reaches_back && number <= MAX_ROTATED_FILES {
        match tally_file(&numbered(path, number), since, &mut tally) {
            Ok(begins_in_window) => reaches_back = begins_in_window,
            Err(error) if error.kind() == io::ErrorKind::NotFound => break,
            Err(error) => return Err(error),
        }
        number += 1;
    }
    Ok(tally)
}

/// The most rotated files a log keeps (the limit `[audit] keep_files` is checked against).
const MAX_ROTATED_FILES: usize = 1000;

/// Adds the lines of one file written since `since` to `tally`; answers whether the file's first
/// line is within the window too (so an older file may still hold some), or the file is empty.
fn tally_file(path: &Path, since: time::OffsetDateTime, tally: &mut Tally) -> io::Result<bool> {
    use std::io::BufRead;
    let file = File::open(path)?;
    let mut first = None;
    for line in io::BufReader::new(file).lines() {
        let Ok(line) = serde_json::from_str::<Counted>(&line?) else {
            continue;
        };
        let recent = crate::model::time::parse_lenient(&line.time).is_some_and(|time| time >= since);
        first.get_or_insert(recent);
        if !recent {
            continue;
        }
        match (line.event.as_str(), line.outcome, line.change.as_deref()) {
            ("attempt", Some(outcome), _) => {
                *tally.attempts.entry(outcome).or_default() += line.count.unwrap_or(1);
            }
            ("operator", _, Some("locked")) => tally.lockouts += 1,
            _ => {}
        }
    }
    Ok(first.unwrap_or(true))
}

/// An append-only JSON-lines file, rotated by size.
#[derive(Debug)]
pub struct AuditLog {
    path: Arc<PathBuf>,
    appender: Arc<Mutex<Appender>>,
}

impl AuditLog {
    /// Opens (creating, owner-only) the log for appending. With `rotation` it is rotated by size; the
    /// command line passes `None` and leaves rotating to the server.
    pub fn open(path: &Path, rotation: Option<Rotation>) -> Result<Self, AuditError> {
        let file = open_append(path).map_err(|source| AuditError {
            path: path.to_path_buf(),
            source,
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let appender = Appender {
            path: path.to_path_buf(),
            file,
            len,
            allocated: len,
            preallocates: true,
            rotation,
            trouble: Trouble::default(),
        };
        Ok(Self {
            path: Arc::new(path.to_path_buf()),
            appender: Arc::new(Mutex::new(appender)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line now, on this thread: for the command line, which has no request to keep waiting.
    pub fn record_now(&self, entry: &AuditEntry<'_>) -> Result<(), AuditError> {
        let bytes = encode(entry);
        self.appender
            .lock()
            .append(&bytes)
            .map_err(|source| self.error(source))
    }

    fn error(&self, source: io::Error) -> AuditError {
        AuditError {
            path: self.path.to_path_buf(),
            source,
        }
    }

    /// Runs `work` on the appender on the blocking pool.
    async fn with_appender(
        &self,
        work: impl FnOnce(&mut Appender) -> io::Result<()> + Send + 'static,
    ) -> Result<(), AuditError> {
        let appender = Arc::clone(&self.appender);
        tokio::task::spawn_blocking(move || work(&mut appender.lock()))
            .await
            .unwrap_or_else(|join| Err(io::Error::other(join)))
            .map_err(|source| self.error(source))
    }
}

#[async_trait::async_trait]
impl AuditSink for AuditLog {
    async fn reserve(&self) -> Result<(), AuditError> {
        self.with_appender(Appender::reserve).await
    }

    async fn tally(&self, since: time::OffsetDateTime) -> Result<Tally, StoreError> {
        let path = Arc::clone(&self.path);
        let tallied = tokio::task::spawn_blocking(move || tally_files(&path, since)).await;
        tallied
            .unwrap_or_else(|join| Err(io::Error::other(join)))
            .map_err(|source| AUDIT_LOG.io(&self.path, "read", source))
    }

    async fn record(&self, entry: &AuditEntry<'_>) -> Result<(), AuditError> {
        self.append(encode(entry)).await
    }
}

impl AuditLog {
    /// Appends a line [`encode`] made, on the blocking pool.
    pub async fn append(&self, line: Vec<u8>) -> Result<(), AuditError> {
        self.with_appender(move |appender| appender.append(&line)).await
    }
}

/// Every line of the log at `path` and of its rotated files, oldest first, without their newlines:
/// what `store migrate` copies into the database.
pub fn read_all(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    // Rotation numbers the files without gaps: `.1` is the newest, the first missing one ends them.
    let mut files: Vec<PathBuf> = (1..=MAX_ROTATED_FILES)
        .map(|number| numbered(path, number))
        .take_while(|rotated| rotated.exists())
        .collect();
    files.reverse();
    files.push(path.to_path_buf());
    let mut lines = Vec::new();
    for file in files {
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        lines.extend(
            bytes
                .split(|byte| *byte == b'\n')
                .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
                .map(<[u8]>::to_vec),
        );
    }
    Ok(lines)
}

/// The line `entry` is written as, newline included. Regulation events also go to the server log.
pub fn encode(entry: &AuditEntry<'_>) -> Vec<u8> {
    if let AuditEvent::Regulation(event) = &entry.event {
        tracing::warn!(?event, "regulation");
    }
    let mut bytes = serde_json::to_vec(&Line::of(entry)).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Opens the log for appending, owner-only: a regular file, or a device such as `/dev/null`; never a
/// named pipe or a directory (see `atomic::open_append`).
fn open_append(path: &Path) -> io::Result<File> {
    atomic::create_parent_dir(path)?;
    atomic::open_append(path)
}

/// The open log file and what is known about it.
#[derive(Debug)]
struct Appender {
    path: PathBuf,
    file: File,
    /// Its length.
    len: u64,
    /// Space is allocated up to this offset.
    allocated: u64,
    /// Whether the filesystem allocates ahead; without it a full disk shows only when a write fails.
    preallocates: bool,
    rotation: Option<Rotation>,
    trouble: Trouble,
}

impl Appender {
    /// Makes sure an attempt's lines will fit: rotates first when they would not fit under the size
    /// limit, then keeps [`ROOM`] allocated past the end.
    fn reserve(&mut self) -> io::Result<()> {
        // Another process (`authrun unlock`) may have appended since.
        self.len = self.file.metadata()?.len();
        if let Some(rotation) = self.rotation
            && self.len > 0
            && self.len + ATTEMPT_BYTES > rotation.max_bytes
        {
            self.rotate(rotation);
        }
        let outcome = self.make_room(ROOM);
        match &outcome {
            Ok(()) => self.trouble.over(&self.path),
            Err(error) => self
                .trouble
                .report(&self.path, "has no room for the next attempt", error),
        }
        outcome
    }

    /// Appends `bytes` whole, or nothing: a line that does not fit in the space allocated is not begun.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = bytes.len() as u64;
        if let Some(rotation) = self.rotation
            && self.len > 0
            && self.len + len > rotation.max_bytes
        {
            self.rotate(rotation);
        }
        let written = self.make_room(len).and_then(|()| self.file.write_all(bytes));
        match written {
            Ok(()) => {
                self.len += len;
                self.trouble.over(&self.path);
                Ok(())
            }
            Err(error) => {
                self.trouble.lost += 1;
                self.trouble.failed_at = Some(Instant::now());
                self.trouble.report(&self.path, "cannot be written", &error);
                Err(error)
            }
        }
    }

    /// Makes sure `bytes` past the end are allocated, allocating [`ROOM`] when they are not.
    fn make_room(&mut self, bytes: u64) -> io::Result<()> {
        if self.preallocates {
            if self.len + bytes <= self.allocated {
                return Ok(());
            }
            let offset = nix::libc::off_t::try_from(self.len).map_err(io::Error::other)?;
            let room = nix::libc::off_t::try_from(ROOM.max(bytes)).map_err(io::Error::other)?;
            match fallocate(&self.file, FallocateFlags::FALLOC_FL_KEEP_SIZE, offset, room) {
                Ok(()) => {
                    self.allocated = self.len + ROOM.max(bytes);
                    return Ok(());
                }
                Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => self.preallocates = false,
                Err(errno) => return Err(errno.into()),
            }
        }
        match self.trouble.failed_at {
            Some(at) if at.elapsed() < RETRY_AFTER_FAILURE => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the last line could not be written",
            )),
            _ => Ok(()),
        }
    }

    /// Renames the log `<file>.1` (and each older one a number up, deleting the oldest beyond
    /// `keep_files`) and begins a new one. On failure the current file is kept and written on.
    fn rotate(&mut self, rotation: Rotation) {
        match self.try_rotate(rotation) {
            Ok(()) => tracing::info!(path = %self.path.display(), "audit log rotated"),
            Err(error) => self.trouble.report(&self.path, "cannot be rotated", &error),
        }
    }

    fn try_rotate(&mut self, rotation: Rotation) -> io::Result<()> {
        for number in (1..rotation.keep_files).rev() {
            match std::fs::rename(numbered(&self.path, number), numbered(&self.path, number + 1)) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        let file = open_append(&self.path)?;
        if self.preallocates && self.allocated > self.len {
            // Give back the room allocated past the end of the file that is done.
            let _ = nix::libc::off_t::try_from(self.len)
                .ok()
                .zip(nix::libc::off_t::try_from(self.allocated - self.len).ok())
                .map(|(offset, room)| {
                    let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
                    fallocate(&self.file, punch, offset, room)
                });
        }
        self.file = file;
        self.len = 0;
        self.allocated = 0;
        Ok(())
    }
}

/// `<file>.<number>`.
fn numbered(path: &Path, number: usize) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{number}"));
    path.with_file_name(name)
}

/// Trouble with the log, told to the server log when it begins, once a minute while it lasts, and when
/// it is over.
#[derive(Debug, Default)]
struct Trouble {
    since: Option<Instant>,
    reported: Option<Instant>,
    /// Lines that could not be written since the trouble began.
    lost: u64,
    failed_at: Option<Instant>,
}

impl Trouble {
    fn report(&mut self, path: &Path, what: &str, error: &io::Error) {
        let now = Instant::now();
        let path = path.display();
        match self.since {
            None => {
                self.since = Some(now);
                self.reported = Some(now);
                tracing::error!(
                    "audit log {path} {what}: {error}; attempts are refused before their code is \
                     checked until it can take them"
                );
            }
            Some(since) if self.reported.is_none_or(|at| now - at >= REPORT_EVERY) => {
                self.reported = Some(now);
                let minutes = (now - since).as_secs() / 60;
                let lost = self.lost;
                tracing::error!("audit log {path} {what}: {error}; for {minutes} min, {lost} lines lost");
            }
            Some(_) => {}
        }
    }

    fn over(&mut self, path: &Path) {
        if self.since.take().is_some() {
            let lost = std::mem::take(&mut self.lost);
            tracing::warn!(
                "audit log {} takes lines again; {lost} could not be written",
                path.display()
            );
        }
        self.failed_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::client::ClientKey;
    use time::macros::datetime;

    fn attempt_line(log: &AuditLog, n: u8) {
        attempt_line_at(log, n, datetime!(2026-11-25 12:00:00 UTC));
    }

    fn attempt_line_at(log: &AuditLog, n: u8, time: time::OffsetDateTime) {
        let client = ClientKey::of([192, 0, 2, n].into());
        let entry = AuditEntry {
            time,
            event: AuditEvent::Attempt {
                client: &client,
                action: Some("deploy"),
                user: None,
                outcome: Outcome::Wrong,
                run_id: None,
            },
        };
        log.record_now(&entry).unwrap();
    }

    fn clients_in(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                value["client"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn the_log_rotates_past_its_size_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotation = Rotation {
            max_bytes: 360,
            keep_files: 2,
        };
        let log = AuditLog::open(&path, Some(rotation)).unwrap();
        // Each line is about 110 bytes: three fit in 360.
        for n in 1..=10 {
            attempt_line(&log, n);
        }
        let clients = |suffix: &str| clients_in(&dir.path().join(format!("audit.log{suffix}")));
        assert_eq!(clients(""), ["192.0.2.10"]);
        assert_eq!(clients(".1"), ["192.0.2.7", "192.0.2.8", "192.0.2.9"]);
        assert_eq!(clients(".2"), ["192.0.2.4", "192.0.2.5", "192.0.2.6"]);
        assert!(!dir.path().join("audit.log.3").exists());
        for suffix in ["", ".1", ".2"] {
            let len = std::fs::metadata(dir.path().join(format!("audit.log{suffix}")))
                .unwrap()
                .len();
            assert!(len <= 360, "audit.log{suffix}: {len} bytes");
        }
    }

    #[tokio::test]
    async fn the_tally_reads_rotated_files_that_reach_into_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotation = Rotation {
            max_bytes: 360,
            keep_files: 5,
        };
        let log = AuditLog::open(&path, Some(rotation)).unwrap();
        // Three lines a file: audit.log.3 = 1-3, .2 = 4-6, .1 = 7-9, audit.log = 10.
        for n in 1..=10 {
            let time = if n <= 4 {
                datetime!(2026-11-24 10:00:00 UTC)
            } else {
                datetime!(2026-11-25 12:00:00 UTC)
            };
            attempt_line_at(&log, n, time);
        }
        let tally = log.tally(datetime!(2026-11-24 12:00:00 UTC)).await.unwrap();
        assert_eq!(tally.attempts.values().sum::<u64>(), 6, "{tally:?}");
        let tally = log.tally(datetime!(2026-11-24 00:00:00 UTC)).await.unwrap();
        assert_eq!(tally.attempts.values().sum::<u64>(), 10, "{tally:?}");
    }

    #[test]
    fn without_rotation_the_log_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, None).unwrap();
        for n in 1..=10 {
            attempt_line(&log, n);
        }
        assert_eq!(clients_in(&path).len(), 10);
        assert!(!dir.path().join("audit.log.1").exists());
    }
}
