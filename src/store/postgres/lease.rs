//! Leases on running runs, so that a run whose instance died does not keep its action busy for ever.
//!
//! A run claimed by an instance holds a lease (`runs.lease_until`, `[store] lease_seconds`, 30 s by
//! default), which that instance moves forward every third of the lease while the run goes. Every
//! instance also looks, as often, for running rows whose lease has passed and marks them "Interrupted"
//! (ended now; the cooldown still counts from the run's start), which frees the action.
//!
//! An instance that cannot renew a lease in time (it lost the database) stops that run's script itself
//! before the lease ends (SIGTERM, then SIGKILL after the kill grace), and the run ends "Interrupted":
//! so when another instance marks the run and frees the action, the script is no longer going.
//!
//! Times are read from the [`Clock`](crate::clock::Clock) of each instance, so their hosts' clocks must
//! agree to well within the lease. An instance that could not reach the database marks nothing until
//! it has reached it again for a whole lease: the others, cut off as long, have had that time to renew
//! theirs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::{CHANNEL, PgRuns, failed};
use crate::clock::SharedClock;
use crate::model::run::{RunRecord, RunStatus};
use crate::model::time::later;
use crate::store::{RunStore, StoreError};

/// What an interrupted run's record says.
const LOST: &str = "the instance running it stopped renewing its lease (it crashed, or lost the database)";

/// What the lease keeper calls to stop a run of this instance whose lease it can no longer hold.
pub type Fence = Arc<dyn Fn(u64) + Send + Sync>;

/// What a run stopped by [`Fence`] says.
pub const FENCED: &str = "this instance could not renew the run's lease (it lost the database), so it stopped the \
                          script before another instance could take the action over";

/// Longer than a renewal may take when the database does not answer (the pool's connect timeout).
const RENEWAL_TIME: Duration = Duration::from_secs(5);

/// Renews the leases of the runs this instance holds and interrupts the runs whose lease has run out,
/// every third of the lease, for as long as the process runs. A run of this instance whose lease would
/// run out before the next renewal could be made (the database cannot be reached), or that another
/// instance already marked, is stopped through `fence`: so two instances never run one action at once.
pub fn keep_leases(runs: Arc<PgRuns>, clock: SharedClock, fence: Fence) {
    let every = (runs.lease() / 3).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut reachable_since: Option<OffsetDateTime> = None;
        let mut leases = Leases::default();
        loop {
            clock.sleep(every).await;
            let now = clock.now();
            runs.write_ended().await;
            let held = runs.held();
            leases.follow(&runs, &held, now);
            let renewed = renew(&runs, &held, now).await;
            if let Ok(renewal) = &renewed {
                leases.renewed(renewal, later(now, runs.lease()));
            }
            let lost = match &renewed {
                Ok(renewal) => renewal.taken.clone(),
                Err(_) => leases.ending_before(later(clock.now(), every + RENEWAL_TIME)),
            };
            for id in lost {
                if leases.fenced.insert(id) {
                    tracing::error!(
                        run = id,
                        "this run's lease cannot be renewed; stopping its script so that no other instance \
                         runs the action alongside it"
                    );
                    fence(u64::try_from(id).unwrap_or_default());
                }
            }
            if let Err(error) = &renewed {
                tracing::warn!(%error, "the leases of this instance's runs could not be renewed");
                reachable_since = None;
                continue;
            }
            let since = *reachable_since.get_or_insert(now);
            if now < later(since, runs.lease()) {
                continue;
            }
            match interrupt_expired(&runs, now).await {
                Ok(ids) if ids.is_empty() => {}
                Ok(ids) => {
                    tracing::warn!(runs = ?ids, "runs whose lease ran out were marked interrupted");
                    if let Err(error) = runs.refresh().await {
                        tracing::warn!(%error, "the history could not be read again");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "runs whose lease ran out could not be looked for");
                    reachable_since = None;
                }
            }
        }
    });
}

/// The leases of the runs this instance holds, as far as it knows they reach.
#[derive(Default)]
struct Leases {
    /// Each held run's lease end, as last written (or, before the first renewal, as claimed).
    until: HashMap<i64, OffsetDateTime>,
    /// The runs already stopped because their lease was lost.
    fenced: HashSet<i64>,
}

impl Leases {
    /// Follows the runs held now: a new one's lease ends a lease after its start.
    fn follow(&mut self, runs: &PgRuns, held: &[i64], now: OffsetDateTime) {
        self.until.retain(|id, _| held.contains(id));
        self.fenced.retain(|id| held.contains(id));
        for &id in held {
            self.until.entry(id).or_insert_with(|| {
                runs.record(u64::try_from(id).unwrap_or_default())
                    .map_or(later(now, runs.lease()), |record| {
                        later(record.time, runs.lease())
                    })
            });
        }
    }

    fn renewed(&mut self, renewal: &Renewal, until: OffsetDateTime) {
        for id in &renewal.renewed {
            self.until.insert(*id, until);
        }
    }

    /// The runs whose lease ends before `moment`.
    fn ending_before(&self, moment: OffsetDateTime) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .until
            .iter()
            .filter(|(_, until)| **until <= moment)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// What a renewal did.
#[derive(Debug, Default)]
struct Renewal {
    /// The held runs whose lease was moved on.
    renewed: Vec<i64>,
    /// The held runs another instance marked meanwhile, still going here.
    taken: Vec<i64>,
}

/// Moves the leases of the runs this instance holds to `now` + the lease. A held run no longer running
/// in the database was marked by another instance (this one could not renew in time).
async fn renew(runs: &PgRuns, held: &[i64], now: OffsetDateTime) -> Result<Renewal, StoreError> {
    let client = runs.database().client().await?;
    if held.is_empty() {
        // Still a round trip: it tells whether the database can be reached.
        client
            .execute("SELECT 1", &[])
            .await
            .map_err(|error| failed("reached", &error))?;
        return Ok(Renewal::default());
    }
    let until: std::time::SystemTime = later(now, runs.lease()).into();
    let renewed: Vec<i64> = client
        .query(
            "UPDATE runs SET lease_until = $2 WHERE id = ANY($1) AND running RETURNING id",
            &[&held, &until],
        )
        .await
        .map_err(|error| failed("written", &error))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let taken = held
        .iter()
        .filter(|id| !renewed.contains(id))
        .filter(|id| {
            runs.record(u64::try_from(**id).unwrap_or_default())
                .is_none_or(|record| record.status == RunStatus::Deploying)
        })
        .copied()
        .collect();
    Ok(Renewal { renewed, taken })
}

/// Marks "Interrupted" the running runs of other instances whose lease ended before `now`, in one
/// transaction (rows another instance is marking meanwhile are skipped). Returns their ids.
async fn interrupt_expired(runs: &PgRuns, now: OffsetDateTime) -> Result<Vec<i64>, StoreError> {
    let held = runs.held();
    let now_db: std::time::SystemTime = now.into();
    let mut client = runs.database().client().await?;
    let writing = |error: tokio_postgres::Error| failed("written", &error);
    let transaction = client.transaction().await.map_err(writing)?;
    let rows = transaction
        .query(
            "SELECT id, record FROM runs
             WHERE running AND lease_until < $1 AND NOT (id = ANY($2))
             ORDER BY id FOR UPDATE SKIP LOCKED",
            &[&now_db, &held],
        )
        .await
        .map_err(writing)?;
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.get(0);
        let Ok(mut record) = serde_json::from_value::<RunRecord>(row.get(1)) else {
            tracing::error!(
                run = id,
                "a run whose lease ran out cannot be parsed; it is left as it is"
            );
            continue;
        };
        record.finish(RunStatus::Interrupted, now, None);
        record.error = Some(LOST.into());
        let body = serde_json::to_value(&record).map_err(|error| failed("written", &error))?;
        transaction
            .execute(
                "UPDATE runs SET running = false, record = $2 WHERE id = $1",
                &[&id, &body],
            )
            .await
            .map_err(writing)?;
        ids.push(id);
    }
    if !ids.is_empty() {
        transaction
            .execute("SELECT pg_notify($1, 'runs')", &[&CHANNEL])
            .await
            .map_err(writing)?;
    }
    transaction.commit().await.map_err(writing)?;
    Ok(ids)
}
