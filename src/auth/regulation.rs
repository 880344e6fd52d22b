//! Regulation of failed code attempts: the brute-force protection, as policy.
//!
//! authrun's only factor is the code, so limiting guesses is the security. Failures (wrong, replayed or
//! malformed codes) are counted per client and in total. Too many from one client within a window ban that
//! client; too many in total pause code checking for everyone, each pause lasting twice as long as the one
//! before, up to a maximum. The doubling steps back one for each maximum pause length that passes without
//! a pause, and only so: not when a code is accepted, or an attacker would wait for the team's daily
//! deploy to get short pauses again (README, security notes, has the arithmetic). While banned or paused a
//! request is refused before its code is looked at, so nothing can be learned from it. Clients in the
//! exempt networks (the team's own) are never paused and do not count towards the pause; their own limit
//! still holds.
//!
//! Attempts are judged one at a time ([`Guard::turn`]): the check that a client may try, the check of its
//! code and the counting of a failure happen under one lock, so however many attempts arrive at once, no
//! more codes are checked than the limits allow.
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
use crate::store::turn::TurnHold;
use crate::store::{RegulationStore, StoreError};

/// Why a request is refused before its code is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// This client failed too often.
    Banned { until: OffsetDateTime },
    /// Everyone failed too often: code checking is paused for all.
    Paused { until: OffsetDateTime },
}

/// The bans and the pause in force at a moment, as the metrics show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// Clients banned.
    pub banned: usize,
    /// Whether code checking is paused (for all but the exempt networks).
    pub paused: bool,
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
    /// Held by the attempt being judged, from its block check until its failure is counted.
    judging: tokio::sync::Mutex<()>,
}

/// One attempt's turn to be judged: while it is held no other attempt is, so a failure is counted before
/// the next attempt's block check. Dropping it ends the turn.
#[must_use = "the turn ends when it is dropped"]
#[derive(Debug)]
pub struct Turn<'a> {
    guard: &'a Guard,
    client: &'a ClientKey,
    now: OffsetDateTime,
    _judging: tokio::sync::MutexGuard<'a, ()>,
    /// The turn across instances sharing the state, if they do.
    _held: Option<TurnHold>,
}

/// What counting a failure started, and whether the store could keep it.
#[derive(Debug)]
pub struct Counted {
    /// Bans and pauses it started; they are in force whether or not they were saved.
    pub events: Vec<RegulationEvent>,
    pub saved: Result<(), StoreError>,
}

impl Guard {
    pub fn new(store: Arc<dyn RegulationStore>, settings: RegulationSettings) -> Self {
        Self {
            settings,
            store,
            client_failures: Mutex::new(HashMap::new()),
            judging: tokio::sync::Mutex::new(()),
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

    /// The block in force for `client` at `now`, if any. Exempt clients are never paused.
    pub fn blocked(&self, client: &ClientKey, now: OffsetDateTime) -> Option<Blocked> {
        let exempt = self.is_exempt(client);
        let mut blocked = None;
        self.store.read(&mut |state| {
            let paused = state.paused_until.filter(|until| now < *until && !exempt);
            blocked = if let Some(until) = paused {
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

    /// The bans and the pause in force at `now`. Only reads: a ban past its end counts no more, even
    /// before `refresh` removes it.
    pub fn standing(&self, now: OffsetDateTime) -> Standing {
        let mut standing = Standing::default();
        self.store.read(&mut |state| {
            standing = Standing {
                banned: state.bans.values().filter(|until| now < until.0).count(),
                paused: state.paused_until.is_some_and(|until| now < until),
            };
        });
        standing
    }

    /// Waits for `client`'s turn to be judged at `now`, then refuses it if it is blocked.
    pub async fn turn<'a>(&'a self, client: &'a ClientKey, now: OffsetDateTime) -> Result<Turn<'a>, Blocked> {
        let judging = self.judging.lock().await;
        let held = match self.store.hold_turn().await {
            Ok(held) => held,
            Err(error) => {
                // Nothing that needs the database (a run, a code's use) can happen meanwhile either.
                tracing::warn!(%error, "the turn is not held across instances; judged on this instance's state");
                None
            }
        };
        match self.blocked(client, now) {
            Some(blocked) => Err(blocked),
            None => Ok(Turn {
                guard: self,
                client,
                now,
                _judging: judging,
                _held: held,
            }),
        }
    }

    /// Whether `client` is in one of the exempt networks.
    pub fn is_exempt(&self, client: &ClientKey) -> bool {
        let exempt = &self.settings.exempt_networks;
        !exempt.is_empty()
            && client
                .network()
                .is_some_and(|network| exempt.iter().any(|net| net.contains(&network)))
    }

    /// How many more failures `client` may have within its window before it is banned, for the page to
    /// say after a wrong code. Only reads: nothing is counted.
    pub fn failures_left(&self, client: &ClientKey, now: OffsetDateTime) -> usize {
        let window = self.settings.client_window;
        let recent = if self.store.shared() {
            let mut recent = 0;
            self.store.read(&mut |state| {
                recent = state.client_failures.get(client).map_or(0, |failures| {
                    failures.iter().filter(|at| later(at.0, window) > now).count()
                });
            });
            recent
        } else {
            self.lock().get(client).map_or(0, |failures| {
                failures.iter().filter(|at| later(**at, window) > now).count()
            })
        };
        self.settings.client_max_failures.saturating_sub(recent)
    }

    /// Counts a failed attempt by `client`, starting a ban or a pause when a limit is reached. The count
    /// holds in memory even when the store cannot save it.
    async fn record_failure(&self, client: &ClientKey, now: OffsetDateTime) -> Counted {
        let shared = self.store.shared();
        let banned_here = !shared && self.count_client_failure(client, now);
        let counts_globally = !self.is_exempt(client);
        let mut events = Vec::new();
        let saved = self
            .store
            .transact(&mut |state| {
                events.clear();
                if banned_here || (shared && self.count_shared_client_failure(state, client, now)) {
                    let until = later(now, self.settings.client_ban);
                    state.bans.insert(client.clone(), Stamp(until));
                    events.push(RegulationEvent::BanStarted {
                        client: client.clone(),
                        until,
                    });
                }
                if counts_globally {
                    events.extend(self.count_global_failure(state, now));
                }
                true
            })
            .await;
        Counted { events, saved }
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

    /// [`Guard::count_client_failure`] in the shared state: clients with no failure left in their
    /// window are dropped from it, so it holds only the clients failing now.
    fn count_shared_client_failure(
        &self,
        state: &mut RegulationState,
        client: &ClientKey,
        now: OffsetDateTime,
    ) -> bool {
        let window = self.settings.client_window;
        let recent =
            |failures: &VecDeque<Stamp>| failures.back().is_some_and(|last| later(last.0, window) > now);
        state.client_failures.retain(|_, failures| recent(failures));
        if !state.client_failures.contains_key(client) && state.client_failures.len() >= MAX_TRACKED_CLIENTS {
            return false;
        }
        let failures = state.client_failures.entry(client.clone()).or_default();
        while failures
            .front()
            .is_some_and(|first| later(first.0, window) <= now)
        {
            failures.pop_front();
        }
        failures.push_back(Stamp(now));
        let ban = failures.len() >= self.settings.client_max_failures;
        if ban {
            state.client_failures.remove(client);
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
        let doublings = state.pauses.saturating_sub(self.quiet_periods(state, now));
        let length = self
            .settings
            .global_pause
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.settings.global_pause_max);
        let until = later(now, length);
        state.paused_until = Some(until);
        state.last_pause_end = Some(until);
        state.pauses = doublings.saturating_add(1);
        state.global_failures.clear();
        Some(RegulationEvent::PauseStarted {
            until,
            pause_number: state.pauses,
        })
    }

    /// How many times the longest pause fits between the end of the last pause and `now`: each takes
    /// one doubling back.
    fn quiet_periods(&self, state: &RegulationState, now: OffsetDateTime) -> u32 {
        let Some(end) = state.last_pause_end.filter(|end| *end < now) else {
            return 0;
        };
        let quiet = (now - end).unsigned_abs().as_secs();
        let period = self.settings.global_pause_max.as_secs().max(1);
        u32::try_from(quiet / period).unwrap_or(u32::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKey, VecDeque<OffsetDateTime>>> {
        self.client_failures.lock()
    }
}

impl Turn<'_> {
    /// Counts this attempt as a failure, before the turn passes to the next attempt.
    pub async fn fail(&self) -> Counted {
        self.guard.record_failure(self.client, self.now).await
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
        let turn = guard.turn(who, at).await.expect("not blocked");
        let counted = turn.fail().await;
        counted.saved.unwrap();
        counted.events
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

    /// Ten failures from new clients at `now`; returns the end of the pause they start.
    async fn pause_at(guard: &Guard, now: OffsetDateTime, first: u8) -> OffsetDateTime {
        let mut started = Vec::new();
        for n in first..first + 10 {
            started = fail(guard, &client(n), now).await;
        }
        let Some(RegulationEvent::PauseStarted { until, .. }) = started.last().cloned() else {
            panic!("no pause after 10 failures: {started:?}");
        };
        assert_eq!(guard.blocked(&client(99), now), Some(Blocked::Paused { until }));
        until
    }

    #[tokio::test]
    async fn ten_failures_from_anywhere_pause_everyone_and_pauses_double_up_to_two_days() {
        let dir = tempfile::tempdir().unwrap();
        let guard = open(dir.path());
        let mut now = T0;
        let mut lengths = Vec::new();
        for _ in 0..8 {
            let until = pause_at(&guard, now, 0).await;
            lengths.push((until - now).whole_hours());
            now = until;
            assert_eq!(guard.refresh(now).await.unwrap(), [RegulationEvent::PauseEnded]);
        }
        assert_eq!(lengths, [1, 2, 4, 8, 16, 32, 48, 48]);
    }

    #[tokio::test]
    async fn the_doubling_steps_back_once_for_every_two_quiet_days() {
        let dir = tempfile::tempdir().unwrap();
        let guard = open(dir.path());
        let mut now = T0;
        for _ in 0..4 {
            now = pause_at(&guard, now, 0).await;
        }
        // Four pauses: the next would last 16 hours. After two quiet days it lasts 8.
        let hours = |until: OffsetDateTime, from: OffsetDateTime| (until - from).whole_hours();
        now += time::Duration::hours(48);
        let until = pause_at(&guard, now, 20).await;
        assert_eq!(hours(until, now), 8);
        // Back at 16 for the next; five quiet days later (two doublings back) it is 4.
        now = until + time::Duration::days(5);
        let until = pause_at(&guard, now, 40).await;
        assert_eq!(hours(until, now), 4);
        // A month later it has started over.
        now = until + time::Duration::days(30);
        let until = pause_at(&guard, now, 60).await;
        assert_eq!(hours(until, now), 1);
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

    /// The n-th address of a network no test uses otherwise (198.18.0.0/15), one per wrong code.
    fn fresh_client(n: u32) -> ClientKey {
        ClientKey::of(IpAddr::from(std::net::Ipv4Addr::from(0xC612_0000 + n)))
    }

    /// A year of the strongest attack the limits leave open, against the real policy on a real store:
    /// wrong codes from new addresses (so bans never matter), `rest` after each pause ends, as many as
    /// are let through, while the team deploys every day at 10:00 from its exempt network. Returns the
    /// wrong codes checked.
    async fn attack_for_a_year(guard: &Guard, rest: time::Duration) -> u64 {
        let office = ClientKey::of(IpAddr::from([10, 8, 0, 5]));
        let year_end = T0 + time::Duration::days(365);
        let mut next_deploy = T0 + time::Duration::hours(22);
        let mut now = T0;
        let (mut guesses, mut addresses) = (0u64, 0u32);
        while now < year_end {
            guard.refresh(now).await.unwrap();
            let until = loop {
                addresses += 1;
                let attacker = fresh_client(addresses);
                match guard.turn(&attacker, now).await {
                    Err(Blocked::Paused { until }) => break until,
                    Err(Blocked::Banned { .. }) => panic!("a new address is banned"),
                    Ok(turn) => {
                        guesses += 1;
                        turn.fail().await.saved.unwrap();
                    }
                }
            };
            while next_deploy < until.min(year_end) {
                guard.refresh(next_deploy).await.unwrap();
                let deploy = guard.turn(&office, next_deploy).await;
                assert!(deploy.is_ok(), "the team cannot deploy at {next_deploy}");
                next_deploy += time::Duration::days(1);
            }
            now = until + rest;
        }
        guesses
    }

    #[tokio::test]
    async fn an_attacker_with_unlimited_addresses_has_at_most_one_percent_a_year_despite_daily_deploys() {
        let settings = RegulationSettings {
            exempt_networks: vec!["10.8.0.0/16".parse().unwrap()],
            ..RegulationSettings::default()
        };
        // With skew_steps = 1 a guess matches any of three codes: the current one and its neighbours.
        let codes_per_guess = 3.0;
        for rest_hours in [0, 47, 48, 96, 24 * 7] {
            // The store writes (and syncs) its file at every failure: in memory-backed /dev/shm a year
            // takes seconds, not minutes.
            let dir = tempfile::tempdir_in("/dev/shm")
                .or_else(|_| tempfile::tempdir())
                .unwrap();
            let guard = open_with(dir.path(), settings.clone());
            let guesses = attack_for_a_year(&guard, time::Duration::hours(rest_hours)).await;
            let chance = guesses as f64 * codes_per_guess / 1e6;
            println!(
                "resting {rest_hours} h after each pause: {guesses} wrong codes checked in a year, {:.2}%",
                chance * 100.0
            );
            assert!(
                chance <= 0.01,
                "resting {rest_hours} h: {guesses} wrong codes checked in a year: {:.2}% chance",
                chance * 100.0
            );
        }
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
