//! Runs' output in the table `run_output` (migration 201), one row per batch.

use super::{Database, failed};
use crate::store::StoreError;
use crate::store::run_output::{OutputBatch, RunOutputStore};

#[derive(Debug, Clone)]
pub struct PgOutput {
    database: Database,
}

impl PgOutput {
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

/// A line number or run id as the database's bigint.
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl RunOutputStore for PgOutput {
    async fn append(&self, run: u64, batch: &OutputBatch) -> Result<(), StoreError> {
        let lines = memchr::memchr_iter(b'\n', &batch.raw).count() as u64;
        let last_line = (batch.first_line + lines).saturating_sub(1);
        let client = self.database.client().await?;
        client
            .execute(
                "INSERT INTO run_output (run_id, first_line, last_line, body, final)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (run_id, first_line) DO UPDATE
                 SET last_line = EXCLUDED.last_line, body = EXCLUDED.body, final = EXCLUDED.final",
                &[
                    &big(run),
                    &big(batch.first_line),
                    &big(last_line),
                    &batch.raw,
                    &batch.last,
                ],
            )
            .await
            .map_err(|error| failed("written", &error))?;
        Ok(())
    }

    async fn prune(&self, run: u64) -> Result<(), StoreError> {
        let client = self.database.client().await?;
        client
            .execute("DELETE FROM run_output WHERE run_id < $1", &[&big(run)])
            .await
            .map_err(|error| failed("written", &error))?;
        Ok(())
    }

    async fn read(&self, run: u64, after: u64, limit: u32) -> Result<Vec<OutputBatch>, StoreError> {
        let client = self.database.client().await?;
        let rows = client
            .query(
                "SELECT first_line, body, final FROM run_output
                 WHERE run_id = $1 AND (last_line > $2 OR final)
                 ORDER BY first_line LIMIT $3",
                &[&big(run), &big(after), &i64::from(limit)],
            )
            .await
            .map_err(|error| failed("read", &error))?;
        Ok(rows
            .iter()
            .map(|row| OutputBatch {
                first_line: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                raw: row.get(1),
                last: row.get(2),
            })
            .collect())
    }
}
