//! The browser session, typed: handlers never touch raw session keys; and the store that keeps sessions
//! in memory, bounded.
//!
//! A session keeps the flash message a form post leaves for the page it redirects to, and until when it
//! is verified (a valid code was entered from it). A session is only created when there is one of these
//! to keep: viewing a page costs the server nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use tower_sessions::Session;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;

use crate::clock::SharedClock;
use crate::store::session_table::{SessionTable, TableSession};
use crate::store::{KeptSession, SessionKeeper};

const FLASH_KEY: &str = "authrun.flash";
const VERIFIED_KEY: &str = "authrun.verified_until";
const OPERATOR_KEY: &str = "authrun.operator";

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

    /// Marks the session as having entered a valid code, until `until`, under a new id: whoever knew the
    /// old one (a cookie planted in this browser by someone else) holds nothing once it gains rights.
    pub async fn set_verified(&self, until: OffsetDateTime) {
        if let Err(error) = self.0.cycle_id().await {
            tracing::warn!(%error, "the session could not be given a new id; it stays unverified");
            return;
        }
        if let Err(error) = self.0.insert(VERIFIED_KEY, until.unix_timestamp()).await {
            tracing::warn!(%error, "the session's verification could not be stored");
        }
    }

    /// Signs the session in as `operator` (operators mode) until `until`: verified, under a new id.
    pub async fn sign_in(&self, until: OffsetDateTime, operator: Option<&str>) {
        self.set_verified(until).await;
        let stored = match operator {
            Some(name) => self.0.insert(OPERATOR_KEY, name).await,
            None => self.0.remove::<String>(OPERATOR_KEY).await.map(|_| ()),
        };
        if let Err(error) = stored {
            tracing::warn!(%error, "the session's operator could not be stored");
        }
    }

    /// The operator the session is signed in as, while it is verified at `now`.
    pub async fn operator(&self, now: OffsetDateTime) -> Option<String> {
        self.verified_until().await.filter(|until| now < *until)?;
        self.0.get::<String>(OPERATOR_KEY).await.ok().flatten()
    }

    /// Signs out: the session forgets its verification and operator, under a new id.
    pub async fn sign_out(&self) {
        let _ = self.0.remove::<i64>(VERIFIED_KEY).await;
        let _ = self.0.remove::<String>(OPERATOR_KEY).await;
        if let Err(error) = self.0.cycle_id().await {
            tracing::warn!(%error, "the session could not be given a new id");
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

/// How many sessions of each kind the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Sessions that only carry a flash message: anyone can make one.
    pub anonymous: usize,
    /// Sessions that entered a valid code. Each one took a code that started a run, so there are few.
    pub verified: usize,
}

/// Sessions in memory, within their [`Budgets`]: anonymous and verified sessions are counted apart, so
/// a flood of anonymous ones (which anybody can make) pushes out only other anonymous ones, never the
/// operator's verified session. When a kind is over its budget, its session closest to expiring goes,
/// expired ones first.
///
/// A session expires `lifetime` after it was last saved, by the product's [`Clock`](crate::clock::Clock);
/// the record's own `expiry_date` (which tower-sessions sets from the wall clock) is not read. Each
/// operation costs O(log n): the sessions of each kind are indexed by expiry in a `BTreeSet`, whose first
/// entry is the one to evict.
///
/// With a [`SessionKeeper`] the verified sessions are also kept across a restart: written whenever one
/// is added, changed or removed (they are few: each took a valid code), read back when the store is made.
#[derive(Debug, Clone)]
pub struct BoundedStore {
    clock: SharedClock,
    lifetime: Duration,
    sessions: Arc<Mutex<Sessions>>,
    keeper: Option<Arc<dyn SessionKeeper>>,
}

impl BoundedStore {
    pub fn new(clock: SharedClock, lifetime: Duration, budgets: Budgets) -> Self {
        Self {
            clock,
            lifetime,
            sessions: Arc::new(Mutex::new(Sessions::new(budgets))),
            keeper: None,
        }
    }

    /// The same store, keeping its verified sessions in `keeper`, starting with those it kept before
    /// (but for the ones expired since).
    pub fn kept_in(mut self, keeper: Arc<dyn SessionKeeper>) -> Self {
        let now = self.clock.now();
        {
            let mut sessions = self.sessions.lock();
            for kept in keeper.kept().into_iter().filter(|kept| kept.expires > now) {
                sessions.put(kept.record, kept.expires, now);
            }
        }
        self.keeper = Some(keeper);
        self
    }

    /// Writes the verified sessions to the keeper, if there is one. A failure costs a restart's sign-ins,
    /// not this request: it is logged.
    async fn keep_verified(&self) {
        let Some(keeper) = &self.keeper else {
            return;
        };
        let verified = self.sessions.lock().verified();
        if let Err(error) = keeper.keep(verified).await {
            tracing::warn!(%error, "the verified sessions could not be kept for a restart");
        }
    }

    /// Whether `id` is kept as a verified session now.
    fn is_verified(&self, id: &Id) -> bool {
        self.sessions
            .lock()
            .by_id
            .get(id)
            .is_some_and(|kept| kept.kind == Kind::Verified)
    }

    /// How many sessions the store holds, of both kinds.
    pub fn len(&self) -> usize {
        self.sessions.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn put(&self, record: Record) {
        let now = self.clock.now();
        self.sessions.lock().put(record, now + self.lifetime, now);
    }
}

#[async_trait::async_trait]
impl session_store::SessionStore for BoundedStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let now = self.clock.now();
        {
            let mut sessions = self.sessions.lock();
            while sessions.by_id.contains_key(&record.id) {
                record.id = Id::default();
            }
            sessions.put(record.clone(), now + self.lifetime, now);
        }
        if Kind::of(record) == Kind::Verified {
            self.keep_verified().await;
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let was_verified = self.is_verified(&record.id);
        self.put(record.clone());
        if was_verified || Kind::of(record) == Kind::Verified {
            self.keep_verified().await;
        }
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        Ok(self.sessions.lock().get(id, self.clock.now()))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let removed = self.sessions.lock().remove(id);
        if removed.is_some_and(|kept| kept.kind == Kind::Verified) {
            self.keep_verified().await;
        }
        Ok(())
    }
}

/// The sessions of several instances, in a [`SessionTable`] they share, so a browser signed in through
/// one instance is signed in when another answers. The same bounds as [`BoundedStore`]: each kind
/// within its budget, expiry `lifetime` after the last save by the product's clock.
///
/// A table that cannot be reached costs the session, not the request (as a store failure costs a flash
/// message): the failure is logged, a load finds no session and a write keeps nothing, so a page never
/// answers 500 for it.
#[derive(Debug, Clone)]
pub struct SharedStore {
    clock: SharedClock,
    lifetime: Duration,
    budgets: Budgets,
    table: Arc<dyn SessionTable>,
}

/// How many fresh ids `create` tries when the one it was given is taken (one in 2^128: never twice).
const FRESH_IDS: usize = 4;

impl SharedStore {
    pub fn new(
        clock: SharedClock,
        lifetime: Duration,
        budgets: Budgets,
        table: Arc<dyn SessionTable>,
    ) -> Self {
        Self {
            clock,
            lifetime,
            budgets,
            table,
        }
    }

    /// `record` as the table keeps it, saved at `now`, and its kind's budget.
    fn row<'r>(&self, record: &'r Record, now: OffsetDateTime) -> (TableSession<'r>, usize) {
        let kind = Kind::of(record);
        let budget = match kind {
            Kind::Anonymous => self.budgets.anonymous,
            Kind::Verified => self.budgets.verified,
        };
        let session = TableSession {
            record,
            expires: now + self.lifetime,
            verified: kind == Kind::Verified,
        };
        (session, budget.max(1))
    }
}

#[async_trait::async_trait]
impl session_store::SessionStore for SharedStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let now = self.clock.now();
        for _ in 0..FRESH_IDS {
            let (session, budget) = self.row(record, now);
            match self.table.insert(session, budget, now).await {
                Ok(true) => return Ok(()),
                Ok(false) => record.id = Id::default(),
                Err(error) => {
                    tracing::warn!(%error, "a browser session could not be kept");
                    return Ok(());
                }
            }
        }
        tracing::warn!("no free session id was found; the session is not kept");
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let now = self.clock.now();
        let (session, budget) = self.row(record, now);
        if let Err(error) = self.table.upsert(session, budget, now).await {
            tracing::warn!(%error, "a browser session could not be kept");
        }
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self.table.load(id, self.clock.now()).await {
            Ok(record) => Ok(record),
            Err(error) => {
                tracing::warn!(%error, "a browser session could not be read; it counts as none");
                Ok(None)
            }
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        if let Err(error) = self.table.delete(id).await {
            tracing::warn!(%error, "a browser session could not be deleted");
        }
        Ok(())
    }
}

/// Where the browser sessions are: in this instance's memory (one instance, the files), or in a table
/// the instances share (`[store] kind = "postgres"`).
#[derive(Debug, Clone)]
pub enum SessionBackend {
    Memory(BoundedStore),
    Shared(SharedStore),
}

#[async_trait::async_trait]
impl session_store::SessionStore for SessionBackend {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            Self::Memory(store) => store.create(record).await,
            Self::Shared(store) => store.create(record).await,
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self {
            Self::Memory(store) => store.save(record).await,
            Self::Shared(store) => store.save(record).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            Self::Memory(store) => store.load(id).await,
            Self::Shared(store) => store.load(id).await,
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self {
            Self::Memory(store) => store.delete(id).await,
            Self::Shared(store) => store.delete(id).await,
        }
    }
}

/// Which budget a session counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Anonymous,
    Verified,
}

impl Kind {
    /// A session that was ever verified stays verified until it expires: it took a valid code.
    fn of(record: &Record) -> Self {
        if record.data.contains_key(VERIFIED_KEY) {
            Self::Verified
        } else {
            Self::Anonymous
        }
    }
}

/// A session as kept: the record and when it expires.
#[derive(Debug)]
struct Kept {
    record: Record,
    expires: OffsetDateTime,
    kind: Kind,
}

/// The sessions of one kind, in order of expiry (then id, to keep equal times apart).
#[derive(Debug)]
struct Queue {
    capacity: usize,
    by_expiry: BTreeSet<(OffsetDateTime, i128)>,
}

impl Queue {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            by_expiry: BTreeSet::new(),
        }
    }

    fn is_full(&self) -> bool {
        self.by_expiry.len() >= self.capacity
    }
}

/// Every session by id, and each kind's [`Queue`]: a session is in the map exactly when it is in the
/// queue of its kind, under the same expiry.
#[derive(Debug)]
struct Sessions {
    by_id: HashMap<Id, Kept>,
    anonymous: Queue,
    verified: Queue,
}

impl Sessions {
    fn new(budgets: Budgets) -> Self {
        Self {
            by_id: HashMap::new(),
            anonymous: Queue::new(budgets.anonymous),
            verified: Queue::new(budgets.verified),
        }
    }

    fn queue(&self, kind: Kind) -> &Queue {
        match kind {
            Kind::Anonymous => &self.anonymous,
            Kind::Verified => &self.verified,
        }
    }

    fn queue_mut(&mut self, kind: Kind) -> &mut Queue {
        match kind {
            Kind::Anonymous => &mut self.anonymous,
            Kind::Verified => &mut self.verified,
        }
    }

    fn get(&mut self, id: &Id, now: OffsetDateTime) -> Option<Record> {
        let expires = self.by_id.get(id)?.expires;
        if expires <= now {
            self.remove(id);
            return None;
        }
        self.by_id.get(id).map(|kept| kept.record.clone())
    }

    /// The verified sessions, as the keeper keeps them.
    fn verified(&self) -> Vec<KeptSession> {
        self.by_id
            .values()
            .filter(|kept| kept.kind == Kind::Verified)
            .map(|kept| KeptSession {
                record: kept.record.clone(),
                expires: kept.expires,
            })
            .collect()
    }

    fn remove(&mut self, id: &Id) -> Option<Kept> {
        let kept = self.by_id.remove(id)?;
        self.queue_mut(kept.kind).by_expiry.remove(&(kept.expires, id.0));
        Some(kept)
    }

    /// Keeps `record` until `expires`, making room in its kind's budget: expired sessions go first, then
    /// the ones closest to expiring.
    fn put(&mut self, record: Record, expires: OffsetDateTime, now: OffsetDateTime) {
        let id = record.id;
        let kind = Kind::of(&record);
        self.remove(&id);
        self.drop_expired(Kind::Anonymous, now);
        self.drop_expired(Kind::Verified, now);
        while self.queue(kind).is_full() {
            self.pop_first(kind);
        }
        self.queue_mut(kind).by_expiry.insert((expires, id.0));
        self.by_id.insert(
            id,
            Kept {
                record,
                expires,
                kind,
            },
        );
    }

    /// Each session is dropped once, so this costs O(log n) per session ever saved.
    fn drop_expired(&mut self, kind: Kind, now: OffsetDateTime) {
        while self
            .queue(kind)
            .by_expiry
            .first()
            .is_some_and(|(expires, _)| *expires <= now)
        {
            self.pop_first(kind);
        }
    }

    fn pop_first(&mut self, kind: Kind) {
        if let Some((_, id)) = self.queue_mut(kind).by_expiry.pop_first() {
            self.by_id.remove(&Id(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use time::macros::datetime;
    use tower_sessions::SessionStore;

    const START: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);
    const HOUR: Duration = Duration::hours(1);

    fn store(anonymous: usize, verified: usize) -> (BoundedStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(START));
        let budgets = Budgets { anonymous, verified };
        (BoundedStore::new(clock.clone(), HOUR, budgets), clock)
    }

    fn anonymous() -> Record {
        let mut data = HashMap::new();
        data.insert(
            FLASH_KEY.to_string(),
            serde_json::json!({"kind": "error", "message": "x"}),
        );
        Record {
            id: Id::default(),
            data,
            expiry_date: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn verified() -> Record {
        let mut record = anonymous();
        record.data.insert(
            VERIFIED_KEY.to_string(),
            serde_json::json!(START.unix_timestamp()),
        );
        record
    }

    async fn create(store: &BoundedStore, mut record: Record) -> Id {
        store.create(&mut record).await.unwrap();
        record.id
    }

    async fn kept(store: &BoundedStore, id: Id) -> bool {
        store.load(&id).await.unwrap().is_some()
    }

    #[tokio::test]
    async fn each_kind_is_kept_within_its_budget() {
        let (store, _) = store(3, 2);
        for _ in 0..10 {
            create(&store, anonymous()).await;
            create(&store, verified()).await;
        }
        let sessions = store.sessions.lock();
        assert_eq!(sessions.anonymous.by_expiry.len(), 3);
        assert_eq!(sessions.verified.by_expiry.len(), 2);
        assert_eq!(sessions.by_id.len(), 5);
    }

    #[tokio::test]
    async fn anonymous_sessions_never_push_out_a_verified_one() {
        let (store, clock) = store(100, 10);
        let operator = create(&store, verified()).await;
        // Every anonymous session is newer, so each would outlive the operator's.
        for _ in 0..1_000 {
            clock.advance(Duration::seconds(1));
            create(&store, anonymous()).await;
        }
        assert!(kept(&store, operator).await);
        assert_eq!(store.len(), 101);
    }

    #[tokio::test]
    async fn the_session_closest_to_expiring_goes_first_and_saving_renews_it() {
        let (store, clock) = store(3, 1);
        let first = create(&store, anonymous()).await;
        clock.advance(Duration::minutes(10));
        let second = create(&store, anonymous()).await;
        clock.advance(Duration::minutes(10));
        let third = create(&store, anonymous()).await;
        clock.advance(Duration::minutes(10));
        // Saved again (a new flash), the first now expires last.
        let mut renewed = store.load(&first).await.unwrap().unwrap();
        renewed.data.clear();
        renewed.data.insert(FLASH_KEY.into(), serde_json::json!(null));
        store.save(&renewed).await.unwrap();
        let fourth = create(&store, anonymous()).await;
        assert!(
            !kept(&store, second).await,
            "the session closest to expiring stayed"
        );
        for id in [first, third, fourth] {
            assert!(kept(&store, id).await);
        }
    }

    #[tokio::test]
    async fn a_session_expires_by_the_clock_and_expired_ones_make_room_first() {
        let (store, clock) = store(2, 1);
        let old = create(&store, anonymous()).await;
        clock.advance(Duration::minutes(30));
        let newer = create(&store, anonymous()).await;
        clock.advance(Duration::minutes(30));
        assert!(!kept(&store, old).await, "a session outlived its hour");
        assert!(kept(&store, newer).await);
        clock.advance(Duration::minutes(31));
        let fresh = create(&store, anonymous()).await;
        assert!(kept(&store, fresh).await);
        assert_eq!(store.len(), 1, "expired sessions are dropped when room is made");
    }

    #[tokio::test]
    async fn gaining_verification_moves_a_session_to_the_verified_budget() {
        let (store, _) = store(2, 2);
        let mut record = anonymous();
        store.create(&mut record).await.unwrap();
        record
            .data
            .insert(VERIFIED_KEY.into(), serde_json::json!(START.unix_timestamp()));
        store.save(&record).await.unwrap();
        for _ in 0..5 {
            create(&store, anonymous()).await;
        }
        assert!(kept(&store, record.id).await);
        let sessions = store.sessions.lock();
        assert_eq!(sessions.verified.by_expiry.len(), 1);
        assert_eq!(sessions.anonymous.by_expiry.len(), 2);
    }

    /// The index evicts exactly the session a full scan would have chosen, and stays in step with the
    /// map, over a long random mix of creates, saves, deletes and steps of the clock.
    #[tokio::test]
    async fn the_index_evicts_what_a_full_scan_would_choose() {
        let (store, clock) = store(8, 3);
        let mut ids: Vec<Id> = Vec::new();
        let mut evictions = 0;
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        for _ in 0..5_000 {
            let op = next(10);
            if op == 0 {
                clock.advance(Duration::minutes(next(20) as i64));
                continue;
            }
            let record = if next(4) == 0 { verified() } else { anonymous() };
            let kind = Kind::of(&record);
            let now = clock.now();
            // What a scan of every session would evict to make room for one more of `kind`.
            let scan_choice = {
                let sessions = store.sessions.lock();
                let live: Vec<(&Id, &Kept)> = sessions
                    .by_id
                    .iter()
                    .filter(|(_, kept)| kept.kind == kind && kept.expires > now)
                    .collect();
                let capacity = sessions.queue(kind).capacity;
                (live.len() >= capacity)
                    .then(|| {
                        live.iter()
                            .min_by_key(|(id, kept)| (kept.expires, id.0))
                            .map(|(id, _)| **id)
                    })
                    .flatten()
            };
            match op {
                1 if !ids.is_empty() => {
                    let id = ids[next(ids.len() as u64) as usize];
                    store.delete(&id).await.unwrap();
                    continue;
                }
                2 if !ids.is_empty() => {
                    // Saving a session the store still holds makes no room.
                    let id = ids[next(ids.len() as u64) as usize];
                    if let Some(mut record) = store.load(&id).await.unwrap() {
                        record.data.insert("n".into(), serde_json::json!(next(100)));
                        store.save(&record).await.unwrap();
                    }
                    continue;
                }
                _ => {}
            }
            let id = create(&store, record).await;
            ids.push(id);
            if let Some(evicted) = scan_choice {
                evictions += 1;
                assert!(
                    !kept(&store, evicted).await,
                    "the index kept what a scan would evict"
                );
            }
            let sessions = store.sessions.lock();
            for kind in [Kind::Anonymous, Kind::Verified] {
                let queue = sessions.queue(kind);
                assert!(queue.by_expiry.len() <= queue.capacity);
                let in_map = sessions.by_id.values().filter(|kept| kept.kind == kind).count();
                assert_eq!(queue.by_expiry.len(), in_map);
            }
            for (id, kept) in &sessions.by_id {
                assert!(
                    sessions
                        .queue(kept.kind)
                        .by_expiry
                        .contains(&(kept.expires, id.0))
                );
            }
        }
        assert!(evictions > 500, "only {evictions} evictions were checked");
    }
}
