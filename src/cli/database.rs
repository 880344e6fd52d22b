//! The commands that change shared state (`operator ...`, `unlock`) on the database, when `[store]
//! kind = "postgres"`: each change is one transaction on the document's row, and the running instances
//! hear of it (`NOTIFY`) and read it again; their audit lines go to the database's audit table as well
//! as to the file.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{Config, StoreSettings};
use crate::model::audit::AuditEntry;
use crate::store::file::audit::{AuditLog, encode};
use crate::store::postgres::{self, Database, Document, migrate};
use crate::store::{AuditError, StoreError};

/// Changes the document `name` in the database `url` with `change` (nothing is saved when it refuses).
pub fn edit<T, R>(
    url: &str,
    name: &'static str,
    change: impl FnMut(&mut T) -> Result<R, StoreError> + Send,
) -> Result<R, StoreError>
where
    T: Serialize + DeserializeOwned + Default + Clone + Send + 'static,
    R: Send,
{
    on_database(url, name, |document: Document<T>| async move {
        document.edit(change).await
    })
}

/// The document `name` as the database `url` holds it.
pub fn read<T>(url: &str, name: &'static str) -> Result<T, StoreError>
where
    T: Serialize + DeserializeOwned + Default + Clone + Send + 'static,
{
    on_database(url, name, |document: Document<T>| async move {
        Ok(document.current())
    })
}

/// Writes `entry` to the audit log file and, with `[store] kind = "postgres"`, copies it to the
/// database. The file is the record: a line the database does not take is a warning on stderr (the
/// change is made), and `store migrate --from files` copies it later.
pub fn audit(config: &Config, entry: &AuditEntry<'_>) -> Result<(), AuditError> {
    AuditLog::open(&config.audit_file, None).and_then(|log| log.record_now(entry))?;
    if let StoreSettings::Postgres { url, .. } = &config.store {
        let line = encode(entry);
        let time = entry.time.into();
        let copied = on_thread(url, |database| async move {
            postgres::copy_audit_line(&database, time, line).await
        });
        if let Err(error) = copied {
            eprintln!(
                "warning: the audit line is in {} but not in the database ({error}); `authrun store \
                 migrate --from files` copies it later",
                config.audit_file.display()
            );
        }
    }
    Ok(())
}

/// Opens the document (migrating the database first, as a server starting would) and runs `work` on
/// it, on a thread and runtime of their own (see [`on_thread`]).
fn on_database<T, R, F>(
    url: &str,
    name: &'static str,
    work: impl FnOnce(Document<T>) -> F + Send,
) -> Result<R, StoreError>
where
    T: Serialize + DeserializeOwned + Default + Clone + Send + 'static,
    R: Send,
    F: Future<Output = Result<R, StoreError>>,
{
    on_thread(url, |database| async move {
        migrate(&database).await?;
        let document = Document::open(database, name, true).await?;
        work(document).await
    })
}

/// Runs `work` on the database `url`, on a thread and runtime of their own: the command line's own
/// runtime may not be blocked.
fn on_thread<R, F>(url: &str, work: impl FnOnce(Database) -> F + Send) -> Result<R, StoreError>
where
    R: Send,
    F: Future<Output = Result<R, StoreError>>,
{
    let unreached = |reason: String| StoreError::Database {
        action: "reached",
        reason,
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|error| unreached(error.to_string()))?;
                runtime.block_on(async {
                    let database = Database::new(url, 1)?;
                    work(database).await
                })
            })
            .join()
            .unwrap_or_else(|_| Err(unreached("the database work stopped unexpectedly".into())))
    })
}
