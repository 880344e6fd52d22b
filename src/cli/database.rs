//! The commands that change shared state (`operator ...`, `unlock`) on the database, when `[store]
//! kind = "postgres"`: each change is one transaction on the document's row, and the running instances
//! hear of it (`NOTIFY`) and read it again.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;
use crate::store::postgres::{Database, Document, migrate};

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

/// Opens the document (migrating the database first, as a server starting would) and runs `work` on
/// it, on a thread and runtime of their own: the command line's own runtime may not be blocked.
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
                    migrate(&database).await?;
                    let document = Document::open(database, name, true).await?;
                    work(document).await
                })
            })
            .join()
            .unwrap_or_else(|_| Err(unreached("the database work stopped unexpectedly".into())))
    })
}
