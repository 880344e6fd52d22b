//! The state in a PostgreSQL database, so that several instances behind a load balancer share one
//! history, one record of used codes and one regulation state (`[store] kind = "postgres"`).
//!
//! Reads stay in memory, as with the files: each instance keeps a copy of the history and of the
//! documents, and refreshes it when another instance tells of a change (`NOTIFY authrun`, heard by
//! [`listen`] on a connection of its own). Every change is made in the database first, in one
//! transaction: the decisions that must hold across instances (a code once, one run per action, the
//! cooldown) are taken there, not in memory.
//!
//! The schema is created and changed by the migrations embedded in the binary ([`migrate`]), at start-up.

mod audit;
mod documents;
mod lease;
mod output;
mod runs;
mod sessions;
pub mod transfer;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

pub use audit::{PgAudit, copy_audit_line};
pub use documents::Document;
pub use lease::{FENCED, Fence, keep_leases};
pub use output::PgOutput;
pub use runs::PgRuns;
pub use sessions::PgSessions;

use crate::model::operator::Operators;
use crate::model::regulation::RegulationState;
use crate::store::StoreError;

/// The channel changes are told on; the payload names what changed ("runs", or a document's name).
const CHANNEL: &str = "authrun";

/// One migration: its number (applied in order, once) and its SQL.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first. A released migration is never edited: a change is a new one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "runs, used steps, documents",
        sql: include_str!("migrations/0001_init.sql"),
    },
    Migration {
        version: 100,
        name: "a lease on running runs",
        sql: include_str!("migrations/0100_lease.sql"),
    },
    Migration {
        version: 200,
        name: "browser sessions",
        sql: include_str!("migrations/0200_sessions.sql"),
    },
    Migration {
        version: 201,
        name: "runs' output",
        sql: include_str!("migrations/0201_run_output.sql"),
    },
    Migration {
        version: 202,
        name: "the audit log",
        sql: include_str!("migrations/0202_audit.sql"),
    },
];

/// Taken by [`migrate`] for its transaction, so that instances starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 0x6175_7468_7275_6e01;

/// A pool of connections to the database.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    /// The parsed connection settings (they may hold a password; never printed).
    config: tokio_postgres::Config,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

impl Database {
    /// A pool of at most `pool_size` connections to `url` (checked by the configuration). Connects
    /// lazily; [`migrate`] is the first to use it.
    pub fn new(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|error| failed("reached", &error))?;
        let mut config = config;
        config.connect_timeout(Duration::from_secs(5));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|error| failed("reached", &error))?;
        Ok(Self { pool, config })
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|error| failed("reached", &error))
    }
}

/// The error of a database operation, as a [`StoreError`]. The driver's messages never hold the URL.
fn failed(action: &'static str, error: &dyn std::fmt::Display) -> StoreError {
    StoreError::Database {
        action,
        reason: error.to_string(),
    }
}

/// Applies the migrations this database lacks, each once, in one transaction under an advisory lock:
/// two instances starting together on a fresh database both come up, and the second finds the work
/// done. Returns the versions applied now.
pub async fn migrate(database: &Database) -> Result<Vec<i32>, StoreError> {
    let mut client = database.client().await?;
    let migrating = |error: tokio_postgres::Error| failed("migrated", &error);
    let transaction = client.transaction().await.map_err(migrating)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(migrating)?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(migrating)?;
    let applied: Vec<i32> = transaction
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(migrating)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut now = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        transaction
            .batch_execute(migration.sql)
            .await
            .map_err(migrating)?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await
            .map_err(migrating)?;
        now.push(migration.version);
    }
    transaction.commit().await.map_err(migrating)?;
    if !now.is_empty() {
        tracing::info!(versions = ?now, "database migrated");
    }
    Ok(now)
}

/// What an instance keeps in the database, opened and kept fresh.
#[derive(Debug, Clone)]
pub struct Stores {
    pub runs: Arc<PgRuns>,
    pub regulation: Arc<Document<RegulationState>>,
    pub operators: Arc<Document<Operators>>,
    pub sessions: Arc<Document<Vec<crate::store::KeptSession>>>,
    /// The browser sessions, shared live.
    pub session_table: Arc<PgSessions>,
    /// The runs' output, in batches.
    pub output: Arc<PgOutput>,
}

impl Stores {
    /// Migrates the database and reads what it holds; the runs this instance starts hold a `lease`.
    /// `shared_codes`: the shared secret's codes are
    /// claimed in the database (shared mode); operators' codes are spent in their document instead.
    pub async fn open(
        database: &Database,
        retention: usize,
        first_action: &str,
        shared_codes: bool,
        lease: Duration,
    ) -> Result<Self, StoreError> {
        migrate(database).await?;
        let runs = PgRuns::open(database.clone(), retention, first_action, shared_codes)
            .await?
            .with_lease(lease);
        Ok(Self {
            runs: Arc::new(runs),
            regulation: Arc::new(Document::open(database.clone(), "regulation", false).await?),
            operators: Arc::new(Document::open(database.clone(), "operators", true).await?),
            sessions: Arc::new(Document::open(database.clone(), "sessions", true).await?),
            session_table: Arc::new(PgSessions::new(database.clone())),
            output: Arc::new(PgOutput::new(database.clone())),
        })
    }

    /// Re-reads what `what` names ("runs", a document's name, or everything).
    async fn refresh(&self, what: Option<&str>) {
        let result = match what {
            Some("runs") => self.runs.refresh().await,
            Some("regulation") => self.regulation.refresh().await,
            Some("operators") => self.operators.refresh().await,
            Some(_) => Ok(()),
            None => {
                let runs = self.runs.refresh().await;
                let regulation = self.regulation.refresh().await;
                runs.and(regulation).and(self.operators.refresh().await)
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, "the state could not be refreshed from the database");
        }
    }
}

/// Listens for the changes other instances make and refreshes `stores`, for as long as the process
/// runs. A lost connection is made again (after 1 s, doubling to 30 s), and everything is re-read then,
/// since changes made meanwhile were not heard.
pub fn listen(database: &Database, stores: Stores) {
    let config = database.config.clone();
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(1);
        loop {
            match listen_once(&config, &stores).await {
                Ok(()) => wait = Duration::from_secs(1),
                Err(error) => {
                    tracing::warn!(%error, "not hearing changes from other instances; trying again")
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    });
}

/// One connection's worth of listening: returns when it is lost.
async fn listen_once(config: &tokio_postgres::Config, stores: &Stores) -> Result<(), tokio_postgres::Error> {
    let mut config = config.clone();
    // Marks a living instance: see `runs::interrupt_orphans`.
    config.application_name("authrun-listener");
    let (client, mut connection) = config.connect(NoTls).await?;
    let (told, mut heard) = tokio::sync::mpsc::channel::<String>(64);
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => {
                    // A full queue already holds a refresh to come; this one may go.
                    let _ = told.try_send(note.payload().to_string());
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "the connection listening for changes was lost");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // Changes made before the LISTEN took effect were not heard.
    stores.refresh(None).await;
    while let Some(what) = heard.recv().await {
        stores.refresh(Some(&what)).await;
    }
    driver.abort();
    Ok(())
}
