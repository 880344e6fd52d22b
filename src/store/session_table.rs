//! Browser sessions kept in a store every instance shares, so a browser signed in through one instance
//! is signed in when another answers. The web layer decides what a session is (its kind, its expiry by
//! the product's clock); the store keeps each one and holds each kind within its budget.

use std::fmt;

use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};

use super::StoreError;

/// One session as the table keeps it.
#[derive(Debug, Clone, Copy)]
pub struct TableSession<'a> {
    pub record: &'a Record,
    /// When it expires, by the product's clock.
    pub expires: OffsetDateTime,
    /// Which budget it counts against: verified sessions (each took a valid code) or anonymous ones.
    pub verified: bool,
}

/// The shared sessions, each kind within a budget: over it, the sessions of that kind closest to
/// expiring go (expired ones always go).
#[async_trait::async_trait]
pub trait SessionTable: Send + Sync + fmt::Debug {
    /// Adds `session`, unless its id is taken: then nothing is done and the answer is false.
    async fn insert(
        &self,
        session: TableSession<'_>,
        budget: usize,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Adds `session` or replaces the one with its id.
    async fn upsert(
        &self,
        session: TableSession<'_>,
        budget: usize,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// The session `id`, unless it expired by `now` or was dropped.
    async fn load(&self, id: &Id, now: OffsetDateTime) -> Result<Option<Record>, StoreError>;

    async fn delete(&self, id: &Id) -> Result<(), StoreError>;
}
