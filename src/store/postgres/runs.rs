//! The history of runs in the `runs` table, and the used code steps in `used_steps`.
//!
//! A run is claimed in one transaction ([`PgRuns::claim`]): the code's step is stored if it is later
//! than the stored one (one atomic `INSERT ... ON CONFLICT DO UPDATE ... WHERE`), then, under a
//! transaction-scoped advisory lock on the action, its cooldown is checked and its row inserted with an
//! id from the `run_ids` sequence. The unique partial index on running rows per action refuses a second
//! running run whatever the lock, so one run per action holds in the database itself.
//!
//! Reads are served from memory, refreshed when any instance tells of a change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use time::OffsetDateTime;

use super::{CHANNEL, Database, failed};
use crate::model::run::{RunRecord, RunStatus};
use crate::model::time::later;
use crate::store::{Claim, ClaimError, RunStore, StoreError, Taken};

/// The secret of the shared mode, in `used_steps`.
const SHARED: &str = "shared";

/// All runs, oldest first, in memory and in the database.
#[derive(Debug)]
pub struct PgRuns {
    database: Database,
    /// How many runs of each action are kept.
    retention: i64,
    /// The first action's id: runs recorded without an action are its runs.
    first_action: String,
    /// Whether the shared secret's steps are claimed here (shared mode).
    shared_codes: bool,
    records: Mutex<Arc<Vec<RunRecord>>>,
    interrupted: Vec<RunRecord>,
    version: AtomicU64,
    /// The newest shared step this instance knows to be used.
    last_step: Mutex<Option<u64>>,
    /// How long the lease of a run this instance starts lasts (see `lease`).
    lease: Duration,
    /// The runs this instance claimed whose end is not yet in the database: it renews their leases.
    held: Mutex<HashSet<i64>>,
}

impl PgRuns {
    /// Reads the history. Runs left running when every instance had stopped are marked "Interrupted".
    pub async fn open(
        database: Database,
        retention: usize,
        first_action: &str,
        shared_codes: bool,
    ) -> Result<Self, StoreError> {
        let interrupted = interrupt_orphans(&database).await?;
        let runs = Self {
            database,
            retention: i64::try_from(retention.max(1)).unwrap_or(i64::MAX),
            first_action: first_action.to_string(),
            shared_codes,
            records: Mutex::new(Arc::new(Vec::new())),
            interrupted,
            version: AtomicU64::new(0),
            last_step: Mutex::new(None),
            lease: Duration::from_secs(30),
            held: Mutex::new(HashSet::new()),
        };
        runs.refresh().await?;
        Ok(runs)
    }

    /// The runs this instance starts hold a lease of `lease` (30 s unless told).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub(super) fn database(&self) -> &Database {
        &self.database
    }

    pub(super) fn lease(&self) -> Duration {
        self.lease
    }

    /// The runs whose leases this instance renews.
    pub(super) fn held(&self) -> Vec<i64> {
        self.held.lock().iter().copied().collect()
    }

    /// Writes again the runs this instance holds whose end is known here but was not written (the
    /// database was away when they ended): until it is, they stay held and their leases renewed, so no
    /// instance marks a run "Interrupted" that ended.
    pub(super) async fn write_ended(&self) {
        let ended: Vec<RunRecord> = {
            let held = self.held.lock();
            self.snapshot()
                .iter()
                .filter(|record| record.status != RunStatus::Deploying)
                .filter(|record| {
                    record
                        .id
                        .and_then(|id| i64::try_from(id).ok())
                        .is_some_and(|id| held.contains(&id))
                })
                .cloned()
                .collect()
        };
        for record in ended {
            if let Err(error) = self.save(&record).await {
                tracing::warn!(run = record.id, %error, "the end of a run is still not written");
            }
        }
    }

    /// Reads the history and the used step again.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let client = self.database.client().await?;
        let reading = |error: tokio_postgres::Error| failed("read", &error);
        let rows = client
            .query("SELECT record FROM runs ORDER BY id", &[])
            .await
            .map_err(reading)?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let record = serde_json::from_value(row.get(0)).map_err(|error| StoreError::Database {
                action: "read",
                reason: format!("a run cannot be parsed: {error}"),
            })?;
            records.push(record);
        }
        let step: Option<i64> = client
            .query_opt("SELECT step FROM used_steps WHERE secret = $1", &[&SHARED])
            .await
            .map_err(reading)?
            .map(|row| row.get(0));
        *self.records.lock() = Arc::new(records);
        *self.last_step.lock() = step.and_then(|step| u64::try_from(step).ok());
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn action_of(&self, record: &RunRecord) -> String {
        record.action.clone().unwrap_or_else(|| self.first_action.clone())
    }

    /// Writes `record` (replacing the row of its id), drops what retention no longer keeps, and tells
    /// the other instances.
    async fn save(&self, record: &RunRecord) -> Result<(), StoreError> {
        let id = record.id.and_then(|id| i64::try_from(id).ok()).unwrap_or(0);
        let action = self.action_of(record);
        let running = record.status == RunStatus::Deploying;
        let body = serde_json::to_value(record).map_err(|error| failed("written", &error))?;
        let mut client = self.database.client().await?;
        let writing = |error: tokio_postgres::Error| failed("written", &error);
        let transaction = client.transaction().await.map_err(writing)?;
        transaction
            .execute(
                "INSERT INTO runs (id, action, started, running, record) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET running = EXCLUDED.running, record = EXCLUDED.record",
                &[&id, &action, &timestamp(record.time), &running, &body],
            )
            .await
            .map_err(writing)?;
        transaction
            .execute(
                "DELETE FROM runs WHERE action = $1 AND NOT running AND id NOT IN
                 (SELECT id FROM runs WHERE action = $1 ORDER BY id DESC LIMIT $2)",
                &[&action, &self.retention],
            )
            .await
            .map_err(writing)?;
        transaction
            .execute("SELECT pg_notify($1, 'runs')", &[&CHANNEL])
            .await
            .map_err(writing)?;
        transaction.commit().await.map_err(writing)?;
        if !running {
            self.held.lock().remove(&id);
        }
        Ok(())
    }

    /// Puts `record` in memory, in place of the run of its id, keeping each action's newest runs.
    fn remember(&self, record: RunRecord) {
        let mut records = self.records.lock();
        let list = Arc::make_mut(&mut records);
        match list.iter_mut().rev().find(|r| r.id == record.id) {
            Some(slot) => *slot = record,
            None => list.push(record),
        }
        let retention = usize::try_from(self.retention).unwrap_or(usize::MAX);
        if list.len() > retention {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for record in list.iter() {
                *counts.entry(self.action_of(record)).or_default() += 1;
            }
            list.retain(|record| match counts.get_mut(&self.action_of(record)) {
                Some(count) if *count > retention => {
                    *count -= 1;
                    false
                }
                _ => true,
            });
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The claim's transaction; `Ok(Err(taken))` when another instance got there first.
    async fn try_claim(&self, claim: Claim<'_>) -> Result<Result<u64, Taken>, StoreError> {
        let mut client = self.database.client().await?;
        let transaction = client.transaction().await.map_err(claiming)?;
        if self.shared_codes {
            let step = i64::try_from(claim.totp_step).unwrap_or(i64::MAX);
            let stored = transaction
                .query_opt(
                    "INSERT INTO used_steps (secret, step) VALUES ($1, $2)
                     ON CONFLICT (secret) DO UPDATE SET step = EXCLUDED.step
                     WHERE used_steps.step < EXCLUDED.step
                     RETURNING step",
                    &[&SHARED, &step],
                )
                .await
                .map_err(claiming)?;
            if stored.is_none() {
                return Ok(Err(Taken::Code));
            }
        }
        let Some(run) = claim.run else {
            transaction.commit().await.map_err(claiming)?;
            return Ok(Ok(claim.id));
        };
        transaction
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext('authrun.action.' || $1))",
                &[&run.action],
            )
            .await
            .map_err(claiming)?;
        let last = transaction
            .query_opt(
                "SELECT started, running FROM runs WHERE action = $1 ORDER BY id DESC LIMIT 1",
                &[&run.action],
            )
            .await
            .map_err(claiming)?;
        if let Some(row) = last {
            let started: std::time::SystemTime = row.get(0);
            let started = OffsetDateTime::from(started);
            if row.get::<_, bool>(1) {
                return Ok(Err(Taken::Running { since: started }));
            }
            let until = later(started, run.cooldown);
            if run.started < until {
                return Ok(Err(Taken::CoolingDown { until }));
            }
        }
        let id: i64 = transaction
            .query_one("SELECT nextval('run_ids')", &[])
            .await
            .map_err(claiming)?
            .get(0);
        let id_u64 = u64::try_from(id).unwrap_or_default();
        let mut record = RunRecord::started(id_u64, run.started, claim.totp_step);
        record.action = Some(run.action.to_string());
        let body = serde_json::to_value(&record).unwrap_or_default();
        let lease_until = timestamp(later(run.started, self.lease));
        let inserted = transaction
            .execute(
                "INSERT INTO runs (id, action, started, running, record, lease_until)
                 VALUES ($1, $2, $3, true, $4, $5)
                 ON CONFLICT (action) WHERE running DO NOTHING",
                &[&id, &run.action, &timestamp(run.started), &body, &lease_until],
            )
            .await
            .map_err(claiming)?;
        if inserted == 0 {
            return Ok(Err(Taken::Running { since: run.started }));
        }
        transaction.commit().await.map_err(claiming)?;
        self.held.lock().insert(id);
        Ok(Ok(id_u64))
    }
}

/// Marks the runs left running as "Interrupted", when no instance holds any: at the start of the first
/// instance after all had stopped. Returns them as they were.
///
/// An instance that starts while another runs a script leaves that run alone: a run whose instance died
/// while others went on is marked when its lease runs out (see `lease`).
async fn interrupt_orphans(database: &Database) -> Result<Vec<RunRecord>, StoreError> {
    let client = database.client().await?;
    let writing = |error: tokio_postgres::Error| failed("written", &error);
    // Every instance holds this shared lock while it lives (on its listening connection, see `listen`);
    // only the first to start finds no other holder.
    let alone: bool = client
        .query_one(
            "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'authrun-listener'",
            &[],
        )
        .await
        .map_err(writing)?
        .get(0);
    if !alone {
        return Ok(Vec::new());
    }
    let rows = client
        .query("SELECT record FROM runs WHERE running ORDER BY id", &[])
        .await
        .map_err(writing)?;
    let mut interrupted = Vec::new();
    for row in rows {
        let Ok(mut record) = serde_json::from_value::<RunRecord>(row.get(0)) else {
            continue;
        };
        interrupted.push(record.clone());
        record.status = RunStatus::Interrupted;
        record.error = Some("authrun stopped while the run was going".into());
        let id = record.id.and_then(|id| i64::try_from(id).ok()).unwrap_or(0);
        let body = serde_json::to_value(&record).unwrap_or_default();
        client
            .execute(
                "UPDATE runs SET running = false, record = $2 WHERE id = $1",
                &[&id, &body],
            )
            .await
            .map_err(writing)?;
    }
    Ok(interrupted)
}

fn claiming(error: tokio_postgres::Error) -> StoreError {
    failed("written", &error)
}

fn timestamp(time: OffsetDateTime) -> std::time::SystemTime {
    time.into()
}

#[async_trait::async_trait]
impl RunStore for PgRuns {
    fn snapshot(&self) -> Arc<Vec<RunRecord>> {
        Arc::clone(&self.records.lock())
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn interrupted(&self) -> &[RunRecord] {
        &self.interrupted
    }

    async fn append(&self, record: RunRecord) -> Result<(), StoreError> {
        self.save(&record).await?;
        self.remember(record);
        Ok(())
    }

    async fn update(&self, record: RunRecord) -> Result<(), StoreError> {
        self.remember(record.clone());
        self.save(&record).await
    }

    async fn reserve(&self, id: u64, totp_step: u64) -> Result<(), StoreError> {
        let claim = Claim {
            id,
            totp_step,
            run: None,
        };
        match self.claim(claim).await {
            Ok(_) => Ok(()),
            Err(ClaimError::Store(error)) => Err(error),
            Err(ClaimError::Taken(_)) => Err(StoreError::Conflict),
        }
    }

    async fn claim(&self, claim: Claim<'_>) -> Result<u64, ClaimError> {
        match self.try_claim(claim).await {
            Ok(Ok(id)) => {
                if self.shared_codes {
                    let mut last = self.last_step.lock();
                    *last = (*last).max(Some(claim.totp_step));
                }
                Ok(id)
            }
            Ok(Err(taken)) => Err(ClaimError::Taken(taken)),
            Err(error) => Err(ClaimError::Store(error)),
        }
    }

    fn shared(&self) -> bool {
        true
    }

    async fn withdraw(&self, id: u64) {
        let Ok(id) = i64::try_from(id) else { return };
        self.held.lock().remove(&id);
        let result = async {
            let client = self.database.client().await?;
            client
                .execute("DELETE FROM runs WHERE id = $1 AND running", &[&id])
                .await
                .map_err(|error| failed("written", &error))
        }
        .await;
        if let Err(error) = result {
            tracing::error!(run = id, %error, "a run given up could not be removed; its action stays busy");
        }
    }

    fn last_id(&self) -> u64 {
        self.snapshot().iter().filter_map(|r| r.id).max().unwrap_or(0)
    }

    fn last_totp_step(&self) -> Option<u64> {
        let recorded = self.snapshot().iter().filter_map(|r| r.totp_step).max();
        recorded.max(*self.last_step.lock())
    }
}
