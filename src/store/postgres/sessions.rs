//! The browser sessions in the table `sessions`, shared by every instance (tower-sessions' own sqlx
//! store lags its 0.15). Each write is one statement, then the writer's kind is brought within its
//! budget by a second: instances writing at once may hold a few sessions over it for that moment.

use std::time::SystemTime;

use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};

use super::{Database, failed};
use crate::store::StoreError;
use crate::store::session_table::{SessionTable, TableSession};

/// The `sessions` table.
#[derive(Debug, Clone)]
pub struct PgSessions {
    database: Database,
}

impl PgSessions {
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    /// Writes `session` (replacing one with its id when `replace`), then drops what its kind holds
    /// beyond `budget`: every expired session, then the ones closest to expiring. False: the id was
    /// taken and `replace` was not asked.
    async fn write(
        &self,
        session: TableSession<'_>,
        budget: usize,
        now: OffsetDateTime,
        replace: bool,
    ) -> Result<bool, StoreError> {
        let writing = |error: tokio_postgres::Error| failed("written", &error);
        let body = serde_json::to_string(session.record).map_err(|error| failed("written", &error))?;
        let id = session.record.id.to_string();
        let statement = if replace {
            "INSERT INTO sessions (id, verified, expires, record) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE
             SET verified = EXCLUDED.verified, expires = EXCLUDED.expires, record = EXCLUDED.record"
        } else {
            "INSERT INTO sessions (id, verified, expires, record) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING"
        };
        let client = self.database.client().await?;
        let written = client
            .execute(statement, &[&id, &session.verified, &at(session.expires), &body])
            .await
            .map_err(writing)?;
        if written == 0 {
            return Ok(false);
        }
        let budget = i64::try_from(budget).unwrap_or(i64::MAX);
        client
            .execute(
                "DELETE FROM sessions WHERE verified = $1 AND (expires <= $2 OR id IN (
                     SELECT id FROM sessions WHERE verified = $1
                     ORDER BY expires DESC, id DESC OFFSET $3))",
                &[&session.verified, &at(now), &budget],
            )
            .await
            .map_err(writing)?;
        Ok(true)
    }
}

fn at(time: OffsetDateTime) -> SystemTime {
    SystemTime::from(time)
}

#[async_trait::async_trait]
impl SessionTable for PgSessions {
    async fn insert(
        &self,
        session: TableSession<'_>,
        budget: usize,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.write(session, budget, now, false).await
    }

    async fn upsert(
        &self,
        session: TableSession<'_>,
        budget: usize,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.write(session, budget, now, true).await.map(|_| ())
    }

    async fn load(&self, id: &Id, now: OffsetDateTime) -> Result<Option<Record>, StoreError> {
        let client = self.database.client().await?;
        let row = client
            .query_opt(
                "SELECT record FROM sessions WHERE id = $1 AND expires > $2",
                &[&id.to_string(), &at(now)],
            )
            .await
            .map_err(|error| failed("read", &error))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let body: &str = row.get(0);
        serde_json::from_str(body)
            .map(Some)
            .map_err(|error| failed("read", &error))
    }

    async fn delete(&self, id: &Id) -> Result<(), StoreError> {
        let client = self.database.client().await?;
        client
            .execute("DELETE FROM sessions WHERE id = $1", &[&id.to_string()])
            .await
            .map_err(|error| failed("written", &error))?;
        Ok(())
    }
}
