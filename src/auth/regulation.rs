//! Regulation of failed code attempts: the brute-force protection, as policy.
//!
//! authrun's only factor is the code, so limiting guesses is the security. Failures (wrong, replayed or
//! malformed codes) are counted per client and in total. Too many from one client within a window ban that
//! client; too many in total pause code checking for everyone, each further pause before a successful run
//! lasting twice as long as the last, up to a maximum. While banned or paused a request is refused before
//! its code is looked at, so nothing can be learned from it.
//!
//! Bans, the pause and the recent global failures live in a [`RegulationStore`], so a restart forgives
//! nothing; failures per client are counted in memory only (a restart loses at most one window of them).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::RegulationSettings;
use crate::model::client::ClientKey;
use crate::model::regulation::{RegulationEvent, RegulationState, Stamp};
use crate::model::time::later;
use crate::store::{RegulationStore, StoreError};

/// Why a request is refused before its code is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// This client failed too often.
    Banned { until: OffsetDateTime },
    /// Everyone failed too often: code checking is paused for all.
    Paused { until: OffsetDateTime },
}

/// The most clients whose failures are tracked at once; beyond it the global limit still holds.
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// The regulation of a running server.
#[derive(Debug)]
pub struct Guard {
    settings: RegulationSettings,
    store: Arc<dyn RegulationStore>,
    /// Recent failures per client.
    client_failures: Mutex<HashMap<ClientKey, VecDeque<OffsetDateTime>>>,
}

impl Guard {
    pub fn new(store: Arc<dyn RegulationStore>, settings: RegulationSettings) -> Self {
        Self {
            settings,
            store,
            client_failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &RegulationSettings {
        &self.settings
    }

    /// Picks up `authrun unlock` and ends expired bans and pauses, returning those ends for the audit log.
    pub async fn refresh(&self, now: OffsetDateTime) -> Result<Vec<RegulationEvent>, StoreError> {
        let mut events = Vec::new();
        self.store
            .transact(&mut |state| {
                events = expire(state, now);
                !events.is_empty()
            })
            .await?;
        Ok(events)
    }

    /// The block in force for `client` at `now`, if any.
    pub fn blocked(&self, client: &ClientKey, now: OffsetDateTime) -> Option<Blocked> {
        let mut blocked = None;
        self.store.read(&mut |state| {
            blocked = if let Some(until) = state.paused_until.filter(|until| now < *until) {
                Some(Blocked::Paused { until })
            } else {
                state
                    .bans
                    .get(client)
                    .filter(|until| now < until.0)
                    .map(|until| Blocked::Banned { until: until.0 })
            };
        });
        blocked
    }

    /// How many more failures `client` may have within its window before it is banned, for the page to
    /// say after a wrong code. Only reads: nothing is counted.
    pub fn failures_left(&self, client: &ClientKey, now: OffsetDateTime) -> usize {
        let window = self.settings.client_window;
        let recent = self.lock().get(client).map_or(0, |failures| {
            failures.iter().filter(|at| later(**at, window) > now).count()
        });
        self.settings.client_max_failures.saturating_sub(recent)
    }

    /// Counts a failed attempt by `client`, starting a ban or a pause when a limit is reached. The count
    /// holds in memory even when the store cannot save it.
    pub async fn record_failure(
        &self,
        client: &ClientKey,
        now: OffsetDateTime,
    ) -> Result<Vec<RegulationEvent>, StoreError> {
        let ban = self.count_client_failure(client, now);
        let mut events = Vec::new();
        self.store
            .transact(&mut |state| {
                events.clear();
                if ban {
                    let until = later(now, self.settings.client_ban);
                    state.bans.insert(client.clone(), Stamp(until));
                    events.push(RegulationEvent::BanStarted {
                        client: client.clone(),
                        until,
                    });
                }
                events.extend(self.count_global_failure(state, now));
                true
            })
            .await?;
        Ok(events)
    }

    /// A successful run: the next pause starts again from the base length.
    pub async fn record_success(&self) -> Result<(), StoreError> {
        self.store
            .transact(&mut |state| {
                // Failures already counted stay counted: only the doubling starts over.
                let changed = state.pauses != 0;
                state.pauses = 0;
                changed
            })
            .await
    }

    /// Counts the failure in the client's window; true when it reaches the ban (the count starts over).
    fn count_client_failure(&self, client: &ClientKey, now: OffsetDateTime) -> bool {
        let mut failures_by_client = self.lock();
        let window = self.settings.client_window;
        if !failures_by_client.contains_key(client) && failures_by_client.len() >= MAX_TRACKED_CLIENTS {
            failures_by_client
                .retain(|_, failures| failures.back().is_some_and(|last| later(*last, window) > now));
            if failures_by_client.len() >= MAX_TRACKED_CLIENTS {
                return false;
            }
        }
        let failures = failures_by_client.entry(client.clone()).or_default();
        push_in_window(failures, now, window);
        let ban = failures.len() >= self.settings.client_max_failures;
        if ban {
            failures_by_client.remove(client);
        }
        ban
    }

    fn count_global_failure(
        &self,
        state: &mut RegulationState,
        now: OffsetDateTime,
    ) -> Option<RegulationEvent> {
        let window = self.settings.global_window;
        while state
            .global_failures
            .front()
            .is_some_and(|first| later(first.0, window) <= now)
        {
            state.global_failures.pop_front();
        }
        state.global_failures.push_back(Stamp(now));
        if state.global_failures.len() < self.settings.global_max_failures {
            return None;
        }
        let factor = 2u32.saturating_pow(state.pauses);
        let length = self
            .settings
            .global_pause
            .saturating_mul(factor)
            .min(self.settings.global_pause_max);
        let until = later(now, length);
        state.paused_until = Some(until);
        state.pauses = state.pauses.saturating_add(1);
        state.global_failures.clear();
        Some(RegulationEvent::PauseStarted {
            until,
            pause_number: state.pauses,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKey, VecDeque<OffsetDateTime>>> {
        self.client_failures.lock()
    }
}

fn push_in_window(failures: &mut VecDeque<OffsetDateTime>, now: OffsetDateTime, window: Duration) {
    while failures.front().is_some_and(|first| later(*first, window) <= now) {
        failures.pop_front();
    }
    failures.push_back(now);
}

fn expire(state: &mut RegulationState, now: OffsetDateTime) -> Vec<RegulationEvent> {
    let mut events = Vec::new();
    if state.paused_until.is_some_and(|until| until <= now) {
        state.paused_until = None;
        events.push(RegulationEvent::PauseEnded);
    }
    let ended: Vec<ClientKey> = state
        .bans
        .iter()
        .filter(|(_, until)| until.0 <= now)
        .map(|(client, _)| client.clone())
        .collect();
    for client in ended {
        state.bans.remove(&client);
        events.push(RegulationEvent::BanEnded { client });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::file::regulation::{FileRegulation, unlock};
    use std::net::IpAddr;
    use std::path::Path;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);

    fn minutes(n: i64) -> time::Duration {
        time::Duration::minutes(n)
    }

    fn client(n: u8) -> ClientKey {
        ClientKey::of(IpAddr::from([192, 0, 2, n]))
    }

    fn open_with(dir: &Path, settings: RegulationSettings) -> Guard {
        let store = FileRegulation::open(&dir.join("regulation.json")).unwrap();
        Guard::new(Arc::new(store), settings)
    }

    fn open(dir: &Path) -> Guard {
        open_with(dir, RegulationSettings::default())
    }

    fn open_without_global_limit(dir: &Path) -> Guard {
        let settings = RegulationSettings {
            global_max_failures: 1000,
            ..RegulationSettings::default()
        };
        open_with(dir, settings)
    }

    async fn fail(guard: &Guard, who: &ClientKey, at: OffsetDateTime) -> Vec<RegulationEvent> {
        guard.refresh(at).await.unwrap();
        guard.record_failure(who, at).await.unwrap()
    }

    #[tokio::test]
    async fn five_failures_within_ten_minutes_ban_a_client_for_fifteen() {
        let dir = tempfile::tempdir().unwrap();
        let guard = open(dir.path());
        let attacker = client(1);
        assert_eq!(guard.failures_left(&attacker, T0), 5);
        for i in 0..4 {
            assert!(fail(&guard, &attacker, T0 + minutes(i * 2)).await.is_empty());
        }
        assert_eq!(guard.failures_left(&attacker, T0 + minutes(6)), 1);
        assert_eq!(
            guard.failures_left(&attacker, T0 + minutes(11)),
            2,
            "the first failure left the window"
        );
        let ban_start = T0 + minutes(8);
        let events = fail(&guard, &attacker, ban_start).await;
        let until = ban_start + minutes(15);
        assert_eq!(
            events,
            [RegulationEvent::BanStarted {
                client: attacker.clone(),
                until
            }]
        );
        assert_eq!(
            guard.blocked(&attacker, ban_start),
            Some(Blocked::Banned { until })
        );
        assert_eq!(
            guard.blocked(&client(2), ban_start),
            None,
            "others are not banned"
        );
        assert_eq!(
            guard.refresh(until).await.unwrap(),
            [RegulationEvent::BanEnded {
                client: attacker.clone()
            }]
        );
        assert_eq!(guard.blocked(&attacker, until), None);
    }

    #[tokio::test]
    async fn failures_spread_wider_than_the_window_do_not_ban() {
        let dir = tempfile::tempdir().unwrap();
        let guard = open(dir.path());
        for i in 0..8 {
            assert!(fail(&guard, &client(1), T0 + minutes(i * 3)).await.is_empty());
        }
        assert_eq!(guard.blocked(&client(1), T0 + minutes(24)), None);
    }

    #[tokio::test]
    async fn ten_failures_from_anywhere_pause_everyone_and_pauses_double_until_a_success() {
        let dir = tempfile::tempdir().unwrap();
        let guard = open(dir.path());
        let mut now = T0;
        let mut lengths = Vec::new();
        for _ in 0..7 {
            let mut started = Vec::new();
            for n in 0..10 {
                started = fail(&guard, &client(n), now).await;
            }
            let Some(RegulationEvent::PauseStarted { until, .. }) = started.last().cloned() else {
                panic!("no pause after 10 failures: {started:?}");
            };
            assert_eq!(guard.blocked(&client(99), now), Some(Blocked::Paused { until }));
            lengths.push((until - now).whole_hours());
            now = until;
            assert_eq!(guard.refresh(now).await.unwrap(), [RegulationEvent::PauseEnded]);
        }
        assert_eq!(lengths, [1, 2, 4, 8, 16, 24, 24]);
        guard.record_success().await.unwrap();
        for n in 0..10 {
            fail(&guard, &client(n + 20), now).await;
        }
        assert_eq!(
            guard.blocked(&client(99), now),
            Some(Blocked::Paused {
                until: now + minutes(60)
            })
        );
    }

    #[tokio::test]
    async fn bans_and_pauses_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let guard = open(dir.path());
        for _ in 0..5 {
            fail(&guard, &client(1), T0).await;
        }
        for n in 10..14 {
            fail(&guard, &client(n), T0).await;
        }
        drop(guard);
        let guard = open(dir.path());
        assert!(matches!(
            guard.blocked(&client(1), T0),
            Some(Blocked::Banned { .. })
        ));
        // The global count survived too: one more failure anywhere pauses everyone.
        fail(&guard, &client(50), T0).await;
        assert!(matches!(
            guard.blocked(&client(51), T0),
            Some(Blocked::Paused { .. })
        ));
    }

    #[tokio::test]
    async fn unlock_lifts_bans_in_a_running_guard() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("regulation.json");
        let guard = open_without_global_limit(dir.path());
        for who in [client(1), client(2)] {
            for _ in 0..5 {
                fail(&guard, &who, T0).await;
            }
        }
        assert_eq!(unlock(&path, Some(&client(1))).unwrap(), 1);
        guard.refresh(T0).await.unwrap();
        assert_eq!(guard.blocked(&client(1), T0), None);
        assert!(guard.blocked(&client(2), T0).is_some());
        assert_eq!(unlock(&path, None).unwrap(), 1);
        guard.refresh(T0).await.unwrap();
        assert_eq!(guard.blocked(&client(2), T0), None);
    }
}
