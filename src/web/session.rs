//! The browser session, typed: handlers never touch raw session keys.
//!
//! It keeps the flash message a form post leaves for the page it redirects to, and until when the session
//! is verified (a valid code was entered from it). A session is only created when there is one of these
//! to keep: viewing a page costs the server nothing.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower_sessions::Session;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;

const FLASH_KEY: &str = "authrun.flash";
const VERIFIED_KEY: &str = "authrun.verified_until";

/// A one-time message for the next page view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flash {
    pub kind: FlashKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashKind {
    Success,
    Error,
}

impl FlashKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
        }
    }
}

/// Typed access to one request's session.
pub struct BrowserSession(pub Session);

impl BrowserSession {
    /// Leaves `flash` for the next page view. A store failure only loses the message.
    pub async fn set_flash(&self, flash: Flash) {
        if let Err(error) = self.0.insert(FLASH_KEY, flash).await {
            tracing::warn!(%error, "the flash message could not be stored");
        }
    }

    /// Marks the session as having entered a valid code, until `until`.
    pub async fn set_verified(&self, until: OffsetDateTime) {
        if let Err(error) = self.0.insert(VERIFIED_KEY, until.unix_timestamp()).await {
            tracing::warn!(%error, "the session's verification could not be stored");
        }
    }

    /// Until when the session is verified, if it ever was.
    pub async fn verified_until(&self) -> Option<OffsetDateTime> {
        let seconds = self.0.get::<i64>(VERIFIED_KEY).await.ok().flatten()?;
        OffsetDateTime::from_unix_timestamp(seconds).ok()
    }

    /// Takes the flash message, so a reload does not show it again.
    pub async fn take_flash(&self) -> Option<Flash> {
        self.0.remove::<Flash>(FLASH_KEY).await.ok().flatten()
    }
}

/// Sessions in memory, at most [`BoundedStore::new`]'s capacity of them: when full, expired sessions go
/// first, then the ones closest to expiring. A flood of new sessions can thus cost legitimate users their
/// flash message or verification, but never the server its memory.
#[derive(Debug, Clone)]
pub struct BoundedStore {
    capacity: usize,
    records: std::sync::Arc<parking_lot::Mutex<std::collections::HashMap<Id, Record>>>,
}

impl BoundedStore {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            records: Default::default(),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, std::collections::HashMap<Id, Record>> {
        self.records.lock()
    }

    /// Makes room for one more record.
    fn evict(&self, records: &mut std::collections::HashMap<Id, Record>) {
        if records.len() < self.capacity {
            return;
        }
        let now = OffsetDateTime::now_utc();
        records.retain(|_, record| record.expiry_date > now);
        while records.len() >= self.capacity {
            let Some(oldest) = records
                .iter()
                .min_by_key(|(_, record)| record.expiry_date)
                .map(|(id, _)| *id)
            else {
                return;
            };
            records.remove(&oldest);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl session_store::SessionStore for BoundedStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let mut records = self.lock();
        while records.contains_key(&record.id) {
            record.id = Id::default();
        }
        self.evict(&mut records);
        records.insert(record.id, record.clone());
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let mut records = self.lock();
        if !records.contains_key(&record.id) {
            self.evict(&mut records);
        }
        records.insert(record.id, record.clone());
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .lock()
            .get(id)
            .filter(|record| record.expiry_date > now)
            .cloned())
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.lock().remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_sessions::SessionStore;

    fn record(minutes: i64) -> Record {
        Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: OffsetDateTime::now_utc() + time::Duration::minutes(minutes),
        }
    }

    #[tokio::test]
    async fn the_store_never_holds_more_than_its_capacity() {
        let store = BoundedStore::new(3);
        let mut keep = record(60);
        store.create(&mut keep).await.unwrap();
        for _ in 0..10 {
            store.create(&mut record(5)).await.unwrap();
        }
        assert_eq!(store.len(), 3);
        assert!(
            store.load(&keep.id).await.unwrap().is_some(),
            "the longest-lived session stays"
        );
    }
}
