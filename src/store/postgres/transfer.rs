//! Moving the state between the files and the database: `authrun store migrate --from files` imports
//! the history, the used code step, the regulation state, the operators and the audit log of one
//! instance's files into the database, and `authrun history export` reads the history back in the history file's shape.
//!
//! The import is one transaction under an advisory lock, and idempotent: a run already in the database
//! (the same id and start, or for runs recorded without an id, the same action and start) is not
//! imported again, a document the database already holds is kept as it is, and an audit line is
//! stored once (by its digest). A run whose id the
//! database gives to another run stops the import: nothing is imported then.

use serde::Serialize;

use std::time::SystemTime;

use super::{CHANNEL, Database, audit, failed, migrate};
use crate::model::operator::Operators;
use crate::model::regulation::RegulationState;
use crate::model::run::{RunRecord, RunStatus};
use crate::model::time::parse_lenient;
use crate::store::StoreError;
use crate::store::file::history::HistoryFile;

/// Taken by [`import`] for its transaction: two imports at once apply one after the other.
const IMPORT_LOCK: i64 = 0x6175_7468_7275_6e02;

/// Audit lines inserted in one statement.
const AUDIT_CHUNK: usize = 1000;

/// What one instance's files hold.
#[derive(Debug)]
pub struct FromFiles {
    /// The most audit lines the database keeps (the oldest beyond them are deleted after the import).
    pub audit_keep: i64,
    pub history: HistoryFile,
    pub regulation: RegulationState,
    /// The operators file, when there is one.
    pub operators: Option<Operators>,
    /// The audit log's lines, rotated files first, oldest first.
    pub audit: Vec<Vec<u8>>,
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Runs added to the database.
    pub runs: usize,
    /// Runs it already held.
    pub present: usize,
    /// Whether the regulation state was imported (false: the database had one).
    pub regulation: bool,
    /// Whether the operators were imported; `None`: there were none to import.
    pub operators: Option<bool>,
    /// Audit lines added to the database.
    pub audit: u64,
    /// Audit lines it already held.
    pub audit_present: u64,
    /// Audit lines left out: not JSON with a time.
    pub audit_unreadable: u64,
}

/// Imports `files` into `database` (migrated first); `first_action` is the action the runs recorded
/// without one belong to.
pub async fn import(
    database: &Database,
    first_action: &str,
    files: FromFiles,
) -> Result<Imported, StoreError> {
    migrate(database).await?;
    let mut client = database.client().await?;
    let writing = |error: tokio_postgres::Error| failed("written", &error);
    let transaction = client.transaction().await.map_err(writing)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&IMPORT_LOCK])
        .await
        .map_err(writing)?;
    let mut imported = Imported::default();
    let (numbered, unnumbered): (Vec<RunRecord>, Vec<RunRecord>) = files
        .history
        .records
        .into_iter()
        .partition(|record| record.id.is_some());
    for mut record in numbered {
        let id = record.id.and_then(|id| i64::try_from(id).ok()).unwrap_or(0);
        let time = serde_json::to_value(&record).map_err(|error| failed("written", &error))?["time"].clone();
        let found = transaction
            .query_opt("SELECT record->'time' FROM runs WHERE id = $1", &[&id])
            .await
            .map_err(writing)?;
        match found {
            Some(row) if row.get::<_, serde_json::Value>(0) == time => imported.present += 1,
            Some(_) => {
                return Err(StoreError::Refused(format!(
                    "run {id} of the history file is not the database's run {id}: the database already \
                     holds other runs, nothing was imported\n  fix: import into a database no instance has \
                     used yet"
                )));
            }
            None => {
                insert(&transaction, id, first_action, &mut record).await?;
                imported.runs += 1;
            }
        }
    }
    // The sequence goes on after every id the files gave (or reserved), so no id is given twice.
    let last_id = i64::try_from(files.history.last_id).unwrap_or(i64::MAX);
    transaction
        .execute(
            "SELECT setval('run_ids', m) FROM
                 (SELECT GREATEST($1, COALESCE((SELECT max(id) FROM runs), 0)) AS m) AS wanted
             WHERE m > 0 AND m > (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM run_ids)",
            &[&last_id],
        )
        .await
        .map_err(writing)?;
    for mut record in unnumbered {
        let action = record.action.clone().unwrap_or_else(|| first_action.to_string());
        let time = serde_json::to_value(&record).map_err(|error| failed("written", &error))?["time"].clone();
        let found = transaction
            .query_opt(
                "SELECT 1 FROM runs WHERE action = $1 AND record->'time' = $2",
                &[&action, &time],
            )
            .await
            .map_err(writing)?;
        if found.is_some() {
            imported.present += 1;
            continue;
        }
        let id: i64 = transaction
            .query_one("SELECT nextval('run_ids')", &[])
            .await
            .map_err(writing)?
            .get(0);
        record.id = u64::try_from(id).ok();
        insert(&transaction, id, first_action, &mut record).await?;
        imported.runs += 1;
    }
    if let Some(step) = files
        .history
        .last_totp_step
        .and_then(|step| i64::try_from(step).ok())
    {
        transaction
            .execute(
                "INSERT INTO used_steps (secret, step) VALUES ('shared', $1)
                 ON CONFLICT (secret) DO UPDATE SET step = GREATEST(used_steps.step, EXCLUDED.step)",
                &[&step],
            )
            .await
            .map_err(writing)?;
    }
    imported.regulation = document(&transaction, "regulation", &files.regulation).await?;
    if let Some(operators) = &files.operators {
        imported.operators = Some(document(&transaction, "operators", operators).await?);
    }
    let mut readable = Vec::with_capacity(files.audit.len());
    for line in files.audit {
        let time = serde_json::from_slice::<serde_json::Value>(&line)
            .ok()
            .and_then(|value| value["time"].as_str().and_then(parse_lenient));
        match time {
            Some(time) => readable.push((SystemTime::from(time), line)),
            None => imported.audit_unreadable += 1,
        }
    }
    for chunk in readable.chunks(AUDIT_CHUNK) {
        let added = audit::insert(&transaction, chunk).await?;
        imported.audit += added;
        imported.audit_present += chunk.len() as u64 - added;
    }
    audit::trim(&transaction, files.audit_keep).await?;
    // Running instances read everything again.
    for what in ["runs", "regulation", "operators"] {
        transaction
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &what])
            .await
            .map_err(writing)?;
    }
    transaction.commit().await.map_err(writing)?;
    Ok(imported)
}

/// Adds `record` as run `id`, ended: a run the file left "Deploying" is "Interrupted", as a start of
/// authrun on the file would have marked it.
async fn insert(
    transaction: &tokio_postgres::Transaction<'_>,
    id: i64,
    first_action: &str,
    record: &mut RunRecord,
) -> Result<(), StoreError> {
    if record.status == RunStatus::Deploying {
        record.status = RunStatus::Interrupted;
        record.error = Some("authrun stopped while the run was going".into());
    }
    let action = record.action.clone().unwrap_or_else(|| first_action.to_string());
    let started: std::time::SystemTime = record.time.into();
    let body = serde_json::to_value(&*record).map_err(|error| failed("written", &error))?;
    transaction
        .execute(
            "INSERT INTO runs (id, action, started, running, record) VALUES ($1, $2, $3, false, $4)",
            &[&id, &action, &started, &body],
        )
        .await
        .map_err(|error| failed("written", &error))?;
    Ok(())
}

/// Stores `body` as the document `name` unless the database holds one; whether it did.
async fn document(
    transaction: &tokio_postgres::Transaction<'_>,
    name: &str,
    body: &impl Serialize,
) -> Result<bool, StoreError> {
    let body = serde_json::to_value(body).map_err(|error| failed("written", &error))?;
    let inserted = transaction
        .execute(
            "INSERT INTO documents (name, body) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &body],
        )
        .await
        .map_err(|error| failed("written", &error))?;
    Ok(inserted == 1)
}

/// Every run the database holds, oldest first, read without changing anything.
pub async fn history(database: &Database) -> Result<Vec<RunRecord>, StoreError> {
    let client = database.client().await?;
    let rows = client
        .query("SELECT record FROM runs ORDER BY id", &[])
        .await
        .map_err(|error| failed("read", &error))?;
    rows.iter()
        .map(|row| {
            serde_json::from_value(row.get(0)).map_err(|error| StoreError::Database {
                action: "read",
                reason: format!("a run cannot be parsed: {error}"),
            })
        })
        .collect()
}
