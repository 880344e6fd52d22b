//! State kept whole as one JSON document in the database (the regulation state, the operators, the kept
//! sessions): read from memory, changed in a transaction that locks the document's row, so changes from
//! several instances are applied one after the other, each to the state the one before left.

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CHANNEL, Database, failed};
use crate::model::operator::Operators;
use crate::model::regulation::RegulationState;
use crate::store::turn::TurnHold;
use crate::store::{KeptSession, OperatorStore, RegulationStore, SessionKeeper, StoreError};

/// Taken, for its transaction, by the instance judging an attempt (see [`RegulationStore::hold_turn`]).
const TURN_LOCK: i64 = 0x6175_7468_7275_6e02;

/// One document, mirrored in memory.
#[derive(Debug)]
pub struct Document<T> {
    database: Database,
    name: &'static str,
    /// On a failed write: true keeps memory as it was (nothing happened), false keeps the change in
    /// memory anyway (it did happen; the regulation state).
    durable: bool,
    state: Mutex<T>,
}

impl<T> Document<T>
where
    T: Serialize + DeserializeOwned + Default + Clone + Send + 'static,
{
    /// Reads the document (a missing one: the default). One that cannot be read stops start-up.
    pub async fn open(database: Database, name: &'static str, durable: bool) -> Result<Self, StoreError> {
        let state = read(&database, name).await?;
        Ok(Self {
            database,
            name,
            durable,
            state: Mutex::new(state),
        })
    }

    /// Reads the document again (another instance changed it).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let state = read(&self.database, self.name).await?;
        *self.state.lock() = state;
        Ok(())
    }

    /// Changes the document under its row lock, starting from what the database holds; saves it (and
    /// tells the other instances) only when `change` says it changed anything.
    async fn transact(&self, change: &mut (dyn FnMut(&mut T) -> bool + Send)) -> Result<(), StoreError> {
        let mut client = self.database.client().await?;
        let writing = |error: tokio_postgres::Error| failed("written", &error);
        let transaction = client.transaction().await.map_err(writing)?;
        let row = transaction
            .query_opt(
                "SELECT body FROM documents WHERE name = $1 FOR UPDATE",
                &[&self.name],
            )
            .await
            .map_err(writing)?;
        let mut state: T = match row {
            Some(row) => parse(self.name, row.get(0))?,
            None => T::default(),
        };
        if !change(&mut state) {
            *self.state.lock() = state;
            return Ok(());
        }
        let body = serde_json::to_value(&state).map_err(|error| failed("written", &error))?;
        let saved = async {
            transaction
                .execute(
                    "INSERT INTO documents (name, body) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body",
                    &[&self.name, &body],
                )
                .await?;
            transaction
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &self.name])
                .await?;
            transaction.commit().await
        }
        .await;
        match saved {
            Ok(()) => {
                *self.state.lock() = state;
                Ok(())
            }
            Err(error) => {
                if !self.durable {
                    *self.state.lock() = state;
                }
                Err(writing(error))
            }
        }
    }

    /// Changes the document as [`Document::transact`] does with `change`, which may refuse: then
    /// nothing is saved and its error is the answer.
    pub async fn edit<R: Send>(
        &self,
        mut change: impl FnMut(&mut T) -> Result<R, StoreError> + Send,
    ) -> Result<R, StoreError> {
        let mut outcome = None;
        self.transact(&mut |state: &mut T| {
            let mut changed = state.clone();
            let result = change(&mut changed);
            let keep = result.is_ok();
            if keep {
                *state = changed;
            }
            outcome = Some(result);
            keep
        })
        .await?;
        outcome.unwrap_or(Err(StoreError::Conflict))
    }

    /// The document as this instance last read it.
    pub fn current(&self) -> T {
        self.state.lock().clone()
    }

    fn look(&self, look: &mut (dyn FnMut(&T) + Send)) {
        look(&self.state.lock());
    }
}

async fn read<T: DeserializeOwned + Default>(
    database: &Database,
    name: &'static str,
) -> Result<T, StoreError> {
    let client = database.client().await?;
    let row = client
        .query_opt("SELECT body FROM documents WHERE name = $1", &[&name])
        .await
        .map_err(|error| failed("read", &error))?;
    match row {
        Some(row) => parse(name, row.get(0)),
        None => Ok(T::default()),
    }
}

/// A document that cannot be read is an error, never replaced by a default.
fn parse<T: DeserializeOwned>(name: &str, body: serde_json::Value) -> Result<T, StoreError> {
    serde_json::from_value(body).map_err(|error| StoreError::Database {
        action: "read",
        reason: format!("the document \"{name}\" cannot be parsed: {error}"),
    })
}

#[async_trait::async_trait]
impl RegulationStore for Document<RegulationState> {
    fn read(&self, look: &mut (dyn for<'s> FnMut(&'s RegulationState) + Send)) {
        self.look(look);
    }

    async fn transact(
        &self,
        change: &mut (dyn for<'s> FnMut(&'s mut RegulationState) -> bool + Send),
    ) -> Result<(), StoreError> {
        Document::transact(self, change).await
    }

    /// A transaction on a connection of its own, holding `pg_advisory_xact_lock` until the turn ends;
    /// the state is read in it, after the lock was granted, so it holds what the turn before counted.
    async fn hold_turn(&self) -> Result<Option<TurnHold>, StoreError> {
        let client = self.database.client().await?;
        let held = async {
            client.batch_execute("BEGIN").await?;
            client
                .execute("SELECT pg_advisory_xact_lock($1)", &[&TURN_LOCK])
                .await?;
            client
                .query_opt("SELECT body FROM documents WHERE name = $1", &[&self.name])
                .await
        }
        .await;
        let row = match held {
            Ok(row) => row,
            Err(error) => {
                // Closing the connection ends whatever it began.
                drop(deadpool_postgres::Object::take(client));
                return Err(failed("reached", &error));
            }
        };
        // From here the turn is held: dropping `turn` ends it, also on the error below.
        let turn = TurnHold::new(Turn(Some(client)));
        let state = match row {
            Some(row) => parse(self.name, row.get(0))?,
            None => RegulationState::default(),
        };
        *self.state.lock() = state;
        Ok(Some(turn))
    }

    fn shared(&self) -> bool {
        true
    }
}

/// The connection holding the turn's transaction: dropping it ends the transaction (and so the lock),
/// then gives the connection back to the pool; one that cannot end it is closed, which ends it too.
struct Turn(Option<deadpool_postgres::Client>);

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(deadpool_postgres::Object::take(client));
                    }
                });
            }
            Err(_) => drop(deadpool_postgres::Object::take(client)),
        }
    }
}

#[async_trait::async_trait]
impl OperatorStore for Document<Operators> {
    fn read(&self, look: &mut (dyn for<'s> FnMut(&'s Operators) + Send)) {
        self.look(look);
    }

    async fn transact(
        &self,
        change: &mut (dyn for<'s> FnMut(&'s mut Operators) -> bool + Send),
    ) -> Result<(), StoreError> {
        Document::transact(self, change).await
    }

    async fn refresh(&self) -> Result<(), StoreError> {
        Document::refresh(self).await
    }
}

#[async_trait::async_trait]
impl SessionKeeper for Document<Vec<KeptSession>> {
    fn kept(&self) -> Vec<KeptSession> {
        self.state.lock().clone()
    }

    async fn keep(&self, sessions: Vec<KeptSession>) -> Result<(), StoreError> {
        let mut sessions = Some(sessions);
        Document::transact(self, &mut |kept: &mut Vec<KeptSession>| match sessions.take() {
            Some(new) => {
                *kept = new;
                true
            }
            None => false,
        })
        .await
    }
}
