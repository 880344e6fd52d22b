//! The audit log of instances sharing a database: each instance writes its lines to its own file, as
//! one instance does (the file stays the record an attempt waits for), and copies them to the table
//! `audit` off the request path, so that the admin's statistics count every instance's attempts and
//! lockouts.
//!
//! The copy goes through a bounded queue to one writer task, which inserts lines in batches. The table
//! keeps about as many lines as the rotated files do ([`database_lines`](crate::model::audit::Rotation::database_lines)): the oldest go. A line is
//! stored once whatever copies it: the table keeps the SHA-256 of each line's bytes unique, so
//! `store migrate --from files` run after a database outage fills in the lines the copy missed and
//! adds nothing twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::{Database, failed};
use crate::model::audit::{AuditEntry, Tally};
use crate::store::file::audit::{AuditLog, encode};
use crate::store::{AuditError, AuditSink, StoreError};

/// Lines waiting for the writer (also while the database is away); past this many, new lines reach
/// only the file.
const QUEUE: usize = 4096;
/// Lines inserted in one statement.
const BATCH: usize = 256;
/// The longest wait between tries while the database cannot be reached.
const LONGEST_WAIT: Duration = Duration::from_secs(10);
/// How long the statistics wait for the lines queued before them to be stored.
const FLUSH_WAIT: Duration = Duration::from_secs(5);
/// How often lines the database did not get are told in the server log.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// What the writer is given.
enum Job {
    Line {
        time: SystemTime,
        line: Vec<u8>,
    },
    /// Answered once every line queued before it was stored (or given up on).
    Flush(oneshot::Sender<()>),
}

/// The file of this instance and the table of all.
pub struct PgAudit {
    file: AuditLog,
    database: Database,
    queue: mpsc::Sender<Job>,
    missed: Arc<Missed>,
}

impl std::fmt::Debug for PgAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAudit")
            .field("file", &self.file.path())
            .finish_non_exhaustive()
    }
}

impl PgAudit {
    /// Writes to `file` and copies to `database` (migrated), from a writer task started here.
    /// Keeps at most `keep` lines in the table (the oldest go).
    pub fn start(file: AuditLog, database: Database, keep: i64) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let missed = Arc::new(Missed::default());
        tokio::spawn(write(database.clone(), jobs, Arc::clone(&missed), keep));
        Self {
            file,
            database,
            queue,
            missed,
        }
    }
}

#[async_trait::async_trait]
impl AuditSink for PgAudit {
    async fn reserve(&self) -> Result<(), AuditError> {
        self.file.reserve().await
    }

    async fn record(&self, entry: &AuditEntry<'_>) -> Result<(), AuditError> {
        let line = encode(entry);
        self.file.append(line.clone()).await?;
        let job = Job::Line {
            time: entry.time.into(),
            line,
        };
        if self.queue.try_send(job).is_err() {
            self.missed.add(1);
        }
        Ok(())
    }

    async fn tally(&self, since: time::OffsetDateTime) -> Result<Tally, StoreError> {
        // The lines this instance queued before are counted too, if they are stored soon (the queue
        // may be full and the database away: the statistics wait a few seconds, not for ever).
        let (flushed, done) = oneshot::channel();
        let _ = tokio::time::timeout(FLUSH_WAIT, async {
            if self.queue.send(Job::Flush(flushed)).await.is_ok() {
                let _ = done.await;
            }
        })
        .await;
        tally(&self.database, since).await
    }
}

/// Counts the attempts by outcome and the operators' locks every instance stored since `since`.
async fn tally(database: &Database, since: time::OffsetDateTime) -> Result<Tally, StoreError> {
    let client = database.client().await?;
    let since: SystemTime = since.into();
    let reading = |error: tokio_postgres::Error| failed("read", &error);
    let mut tally = Tally::default();
    let attempts = client
        .query(
            "SELECT line->>'outcome', sum(COALESCE((line->>'count')::bigint, 1))::bigint FROM audit
             WHERE time >= $1 AND line->>'event' = 'attempt' AND line ? 'outcome'
             GROUP BY 1",
            &[&since],
        )
        .await
        .map_err(reading)?;
    for row in attempts {
        let count: i64 = row.get(1);
        tally
            .attempts
            .insert(row.get(0), u64::try_from(count).unwrap_or(0));
    }
    let locks: i64 = client
        .query_one(
            "SELECT count(*) FROM audit
             WHERE time >= $1 AND line->>'event' = 'operator' AND line->>'change' = 'locked'",
            &[&since],
        )
        .await
        .map_err(reading)?
        .get(0);
    tally.lockouts = u64::try_from(locks).unwrap_or(0);
    Ok(tally)
}

/// The writer: takes what is queued, up to [`BATCH`] lines at a time, and stores it; past a tenth of
/// `keep` lines since it last looked, it deletes the lines beyond the newest `keep`.
async fn write(database: Database, mut jobs: mpsc::Receiver<Job>, missed: Arc<Missed>, keep: i64) {
    let mut lines = Vec::new();
    let mut flushes = Vec::new();
    let mut since_trim: i64 = 0;
    while let Some(job) = jobs.recv().await {
        let mut next = Some(job);
        while let Some(job) = next.take() {
            match job {
                Job::Line { time, line } => lines.push((time, line)),
                Job::Flush(done) => flushes.push(done),
            }
            if lines.len() < BATCH {
                next = jobs.try_recv().ok();
            }
        }
        if !lines.is_empty() {
            store_batch(&database, &lines, &missed).await;
            since_trim += lines.len() as i64;
            lines.clear();
            if since_trim >= (keep / 10).max(1) {
                since_trim = 0;
                let trimmed = match database.client().await {
                    Ok(client) => trim(&client, keep).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = trimmed {
                    tracing::warn!(%error, "old audit lines could not be deleted from the database");
                }
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Stores one batch. While the database cannot be reached the batch is tried again (after 1 s, doubling
/// to [`LONGEST_WAIT`]) and new lines wait in the queue; a batch the database refuses is given up on.
async fn store_batch(database: &Database, lines: &[(SystemTime, Vec<u8>)], missed: &Missed) {
    let mut wait = Duration::from_secs(1);
    let mut away = false;
    loop {
        let stored = match database.client().await {
            Ok(client) => insert_rows(&client, lines).await.map_err(Some),
            Err(_) => Err(None),
        };
        match stored {
            Ok(_) => {
                if away {
                    tracing::info!("audit lines reach the database again");
                }
                return;
            }
            Err(Some(error)) if error.as_db_error().is_some() => {
                tracing::warn!(%error, "the database refused audit lines");
                missed.add(lines.len() as u64);
                return;
            }
            Err(_) => {
                if !away {
                    tracing::warn!(
                        "the database cannot be reached; audit lines wait for it (at most {QUEUE} in the queue)"
                    );
                    away = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LONGEST_WAIT);
            }
        }
    }
}

/// Inserts `lines` that the table does not hold yet; answers how many it added. Lines that are not
/// JSON are left out (the files hold them).
pub(super) async fn insert<C: deadpool_postgres::GenericClient>(
    client: &C,
    lines: &[(SystemTime, Vec<u8>)],
) -> Result<u64, StoreError> {
    insert_rows(client, lines)
        .await
        .map_err(|error| failed("written", &error))
}

async fn insert_rows<C: deadpool_postgres::GenericClient>(
    client: &C,
    lines: &[(SystemTime, Vec<u8>)],
) -> Result<u64, tokio_postgres::Error> {
    let mut times = Vec::with_capacity(lines.len());
    let mut digests = Vec::with_capacity(lines.len());
    let mut bodies = Vec::with_capacity(lines.len());
    for (time, line) in lines {
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        times.push(*time);
        digests.push(Sha256::digest(line).to_vec());
        bodies.push(body);
    }
    client
        .execute(
            "INSERT INTO audit (time, digest, line)
             SELECT * FROM UNNEST($1::timestamptz[], $2::bytea[], $3::jsonb[])
             ON CONFLICT (digest) DO NOTHING",
            &[&times, &digests, &bodies],
        )
        .await
}

/// Deletes the lines beyond the newest `keep`; answers how many.
pub(super) async fn trim<C: deadpool_postgres::GenericClient>(
    client: &C,
    keep: i64,
) -> Result<u64, StoreError> {
    client
        .execute(
            "DELETE FROM audit WHERE id <= (SELECT id FROM audit ORDER BY id DESC OFFSET $1 LIMIT 1)",
            &[&keep],
        )
        .await
        .map_err(|error| failed("written", &error))
}

/// Copies one line to the database (migrated): for the command line, which writes no queue.
pub async fn copy_audit_line(database: &Database, time: SystemTime, line: Vec<u8>) -> Result<(), StoreError> {
    let client = database.client().await?;
    insert(&client, &[(time, line)]).await.map(|_| ())
}

/// Lines the database did not get, told in the server log at most once a minute.
#[derive(Debug, Default)]
struct Missed {
    count: AtomicU64,
    reported: Mutex<Option<std::time::Instant>>,
}

impl Missed {
    fn add(&self, lines: u64) {
        let total = self.count.fetch_add(lines, Ordering::Relaxed) + lines;
        let mut reported = self.reported.lock();
        if reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            *reported = Some(std::time::Instant::now());
            tracing::warn!(
                lines = total,
                "audit lines reached this instance's file but not the database (the queue was full, or \
                 the database refused them); `authrun store migrate --from files` copies them in later"
            );
        }
    }
}
