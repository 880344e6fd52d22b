//! Regulation of failed code attempts: the brute-force protection.
//!
//! authrun's only factor is the code, so limiting guesses is the security. Failures (wrong, replayed or
//! malformed codes) are counted per client and in total. Too many from one client within a window ban that
//! client; too many in total pause code checking for everyone, each further pause before a successful run
//! lasting twice as long as the last, up to a maximum. While banned or paused a request is refused before
//! its code is looked at, so nothing can be learned from it.
//!
//! Bans, the pause and the recent global failures are kept in a JSON file written atomically, so a restart
//! forgives nothing. `authrun unlock` edits the same file and leaves a marker beside it, which tells a
//! running server to read the file again; both sides change the file only while holding a lock file, so
//! neither overwrites the other's change.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::fsio::{self, StateFile, StateFileError};
use crate::runner::later;

/// The limits, from the `[regulation]` config section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSettings {
    pub client_max_failures: usize,
    pub client_window: Duration,
    pub client_ban: Duration,
    pub global_max_failures: usize,
    pub global_window: Duration,
    pub global_pause: Duration,
    pub global_pause_max: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            client_max_failures: 5,
            client_window: Duration::from_secs(10 * 60),
            client_ban: Duration::from_secs(15 * 60),
            global_max_failures: 10,
            global_window: Duration::from_secs(60 * 60),
            global_pause: Duration::from_secs(60 * 60),
            global_pause_max: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Who is asking, as far as regulation is concerned: an IPv4 address, or the /64 network of an IPv6 one
/// (a single host usually holds a whole /64).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientKey(String);

impl ClientKey {
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Self(v4.to_string()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(v4.to_string()),
                None => {
                    let segments = v6.segments();
                    let network = std::net::Ipv6Addr::new(
                        segments[0],
                        segments[1],
                        segments[2],
                        segments[3],
                        0,
                        0,
                        0,
                        0,
                    );
                    Self(format!("{network}/64"))
                }
            },
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a request is refused before its code is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// This client failed too often.
    Banned { until: OffsetDateTime },
    /// Everyone failed too often: code checking is paused for all.
    Paused { until: OffsetDateTime },
}

/// A change worth an audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardEvent {
    BanStarted {
        client: ClientKey,
        until: OffsetDateTime,
    },
    BanEnded {
        client: ClientKey,
    },
    PauseStarted {
        until: OffsetDateTime,
        pause_number: u32,
    },
    PauseEnded,
}

/// The regulation state file, in error messages.
pub const REGULATION_STATE: StateFile = StateFile {
    what: "regulation state",
    repair: "repair the file, or delete it to forget every ban and pause",
};

/// Why the regulation state cannot be used.
pub type GuardError = StateFileError;

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    #[serde(default, with = "time_map")]
    bans: BTreeMap<ClientKey, OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    paused_until: Option<OffsetDateTime>,
    /// Pauses since the last successful run; the next one lasts `global_pause * 2^pauses`.
    #[serde(default)]
    pauses: u32,
    #[serde(default, with = "time_list")]
    global_failures: VecDeque<OffsetDateTime>,
}

#[derive(Debug, Default)]
struct Inner {
    saved: Persisted,
    /// Recent failures per client; kept in memory only (a restart loses at most one window of counting).
    client_failures: HashMap<ClientKey, VecDeque<OffsetDateTime>>,
}

/// The most clients whose failures are tracked at once; beyond it the global limit still holds.
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// The regulation state of a running server.
#[derive(Debug)]
pub struct Guard {
    path: PathBuf,
    settings: GuardSettings,
    inner: Mutex<Inner>,
}

impl Guard {
    /// Reads the state file (a missing one is a clean slate). One that cannot be parsed stops start-up.
    pub fn open(path: &Path, settings: GuardSettings) -> Result<Self, GuardError> {
        let saved = {
            let _lock = FileLock::take(path)?;
            let _ = std::fs::remove_file(reload_marker(path));
            read_state(path)?
        };
        Ok(Self {
            path: path.to_path_buf(),
            settings,
            inner: Mutex::new(Inner {
                saved,
                client_failures: HashMap::new(),
            }),
        })
    }

    pub fn settings(&self) -> &GuardSettings {
        &self.settings
    }

    /// Picks up `authrun unlock` and ends expired bans and pauses, returning those ends for the audit log.
    pub fn refresh(&self, now: OffsetDateTime) -> Result<Vec<GuardEvent>, GuardError> {
        self.transact(|inner| {
            let events = expire(&mut inner.saved, now);
            let changed = !events.is_empty();
            (events, changed)
        })
    }

    /// The block in force for `client` at `now`, if any.
    pub fn blocked(&self, client: &ClientKey, now: OffsetDateTime) -> Option<Blocked> {
        let inner = self.lock();
        if let Some(until) = inner.saved.paused_until.filter(|until| now < *until) {
            return Some(Blocked::Paused { until });
        }
        inner
            .saved
            .bans
            .get(client)
            .filter(|until| now < **until)
            .map(|until| Blocked::Banned { until: *until })
    }

    /// Counts a failed attempt by `client`, starting a ban or a pause when a limit is reached.
    pub fn record_failure(
        &self,
        client: &ClientKey,
        now: OffsetDateTime,
    ) -> Result<Vec<GuardEvent>, GuardError> {
        self.transact(|inner| {
            let mut events = Vec::new();
            if self.count_client_failure(inner, client, now) {
                let until = later(now, self.settings.client_ban);
                inner.saved.bans.insert(client.clone(), until);
                inner.client_failures.remove(client);
                events.push(GuardEvent::BanStarted {
                    client: client.clone(),
                    until,
                });
            }
            events.extend(self.count_global_failure(&mut inner.saved, now));
            (events, true)
        })
    }

    /// A successful run: the next pause starts again from the base length.
    pub fn record_success(&self) -> Result<(), GuardError> {
        self.transact(|inner| {
            // Failures already counted stay counted: only the doubling starts over.
            let changed = inner.saved.pauses != 0;
            inner.saved.pauses = 0;
            ((), changed)
        })
    }

    /// Runs `change` on the state while holding the file lock, after reading the file again if `authrun
    /// unlock` changed it, and writes the state when `change` says it changed. The change stays in memory
    /// even when writing fails.
    fn transact<T>(&self, change: impl FnOnce(&mut Inner) -> (T, bool)) -> Result<T, GuardError> {
        let mut inner = self.lock();
        let _file = FileLock::take(&self.path)?;
        let marker = reload_marker(&self.path);
        if marker.exists() {
            inner.saved = read_state(&self.path)?;
            let _ = std::fs::remove_file(&marker);
        }
        let (result, changed) = change(&mut inner);
        if changed {
            write_state(&self.path, &inner.saved)?;
        }
        Ok(result)
    }

    fn count_client_failure(&self, inner: &mut Inner, client: &ClientKey, now: OffsetDateTime) -> bool {
        if !inner.client_failures.contains_key(client) && inner.client_failures.len() >= MAX_TRACKED_CLIENTS {
            let window = self.settings.client_window;
            inner
                .client_failures
                .retain(|_, failures| failures.back().is_some_and(|last| later(*last, window) > now));
            if inner.client_failures.len() >= MAX_TRACKED_CLIENTS {
                return false;
            }
        }
        let failures = inner.client_failures.entry(client.clone()).or_default();
        push_in_window(failures, now, self.settings.client_window);
        failures.len() >= self.settings.client_max_failures
    }

    fn count_global_failure(&self, saved: &mut Persisted, now: OffsetDateTime) -> Option<GuardEvent> {
        push_in_window(&mut saved.global_failures, now, self.settings.global_window);
        if saved.global_failures.len() < self.settings.global_max_failures {
            return None;
        }
        let factor = 2u32.saturating_pow(saved.pauses);
        let length = self
            .settings
            .global_pause
            .saturating_mul(factor)
            .min(self.settings.global_pause_max);
        let until = later(now, length);
        saved.paused_until = Some(until);
        saved.pauses = saved.pauses.saturating_add(1);
        saved.global_failures.clear();
        Some(GuardEvent::PauseStarted {
            until,
            pause_number: saved.pauses,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Clears bans from the state file, for `authrun unlock`: one client's, or (with `None`) every ban and the
/// pause. Returns how many blocks were lifted.
pub fn unlock(path: &Path, client: Option<&ClientKey>) -> Result<usize, GuardError> {
    let _lock = FileLock::take(path)?;
    let mut saved = read_state(path)?;
    let lifted = match client {
        Some(client) => usize::from(saved.bans.remove(client).is_some()),
        None => {
            let lifted = saved.bans.len() + usize::from(saved.paused_until.is_some());
            saved = Persisted::default();
            lifted
        }
    };
    write_state(path, &saved)?;
    std::fs::write(reload_marker(path), b"")
        .map_err(|source| io_error(path, "marked for reloading", source))?;
    Ok(lifted)
}

/// The file whose presence tells a running server to read the state again.
fn reload_marker(path: &Path) -> PathBuf {
    sibling(path, "reload")
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}

fn io_error(path: &Path, action: &'static str, source: std::io::Error) -> GuardError {
    REGULATION_STATE.io(path, action, source)
}

/// An exclusive lock on `<state file>.lock`, held while the state file is read and rewritten.
struct FileLock(#[allow(dead_code)] Flock<File>);

impl FileLock {
    fn take(path: &Path) -> Result<Self, GuardError> {
        let lock_path = sibling(path, "lock");
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| io_error(path, "given a directory", source))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| io_error(&lock_path, "opened", source))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(Self)
            .map_err(|(_, errno)| io_error(&lock_path, "locked", errno.into()))
    }
}

fn push_in_window(failures: &mut VecDeque<OffsetDateTime>, now: OffsetDateTime, window: Duration) {
    while failures.front().is_some_and(|first| later(*first, window) <= now) {
        failures.pop_front();
    }
    failures.push_back(now);
}

fn expire(saved: &mut Persisted, now: OffsetDateTime) -> Vec<GuardEvent> {
    let mut events = Vec::new();
    if saved.paused_until.is_some_and(|until| until <= now) {
        saved.paused_until = None;
        events.push(GuardEvent::PauseEnded);
    }
    let ended: Vec<ClientKey> = saved
        .bans
        .iter()
        .filter(|(_, until)| **until <= now)
        .map(|(client, _)| client.clone())
        .collect();
    for client in ended {
        saved.bans.remove(&client);
        events.push(GuardEvent::BanEnded { client });
    }
    events
}

fn read_state(path: &Path) -> Result<Persisted, GuardError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Persisted::default()),
        Err(source) => return Err(io_error(path, "read", source)),
    };
    if text.trim().is_empty() {
        return Ok(Persisted::default());
    }
    serde_json::from_str(&text).map_err(|error| REGULATION_STATE.corrupt(path, &error))
}

fn write_state(path: &Path, saved: &Persisted) -> Result<(), GuardError> {
    let mut bytes = serde_json::to_vec_pretty(saved).unwrap_or_default();
    bytes.push(b'\n');
    fsio::write_atomic(path, &bytes, 0o600).map_err(|source| io_error(path, "written", source))
}

/// Times in the state file are RFC 3339.
mod time_map {
    use super::*;
    use serde::{Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<ClientKey, OffsetDateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let text: BTreeMap<&ClientKey, String> = map
            .iter()
            .map(|(k, v)| (k, v.format(&Rfc3339).unwrap_or_default()))
            .collect();
        text.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<ClientKey, OffsetDateTime>, D::Error> {
        let text = BTreeMap::<ClientKey, String>::deserialize(d)?;
        text.into_iter()
            .map(|(k, v)| {
                OffsetDateTime::parse(&v, &Rfc3339)
                    .map(|t| (k, t))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

mod time_list {
    use super::*;
    use serde::{Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(list: &VecDeque<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|t| t.format(&Rfc3339).unwrap_or_default()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<OffsetDateTime>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|v| OffsetDateTime::parse(v, &Rfc3339).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);

    fn minutes(n: i64) -> time::Duration {
        time::Duration::minutes(n)
    }

    fn client(n: u8) -> ClientKey {
        ClientKey::of(IpAddr::from([192, 0, 2, n]))
    }

    fn open(dir: &Path) -> Guard {
        Guard::open(&dir.join("regulation.json"), GuardSettings::default()).unwrap()
    }

    fn open_without_global_limit(dir: &Path) -> Guard {
        let settings = GuardSettings {
            global_max_failures: 1000,
            ..GuardSettings::default()
        };
        Guard::open(&dir.join("regulation.json"), settings).unwrap()
    }

    fn fail(guard: &Guard, who: &ClientKey, at: OffsetDateTime) -> Vec<GuardEvent> {
        guard.refresh(at).unwrap();
        guard.record_failure(who, at).unwrap()
    }

    #[test]
    fn five_failures_within_ten_minutes_ban_a_client_for_fifteen() {
        let dir = tempfile::tempdir().unwrap();
        let guard = open(dir.path());
        let attacker = client(1);
        for i in 0..4 {
            assert!(fail(&guard, &attacker, T0 + minutes(i * 2)).is_empty());
        }
        let ban_start = T0 + minutes(8);
        let events = fail(&guard, &attacker, ban_start);
        let until = ban_start + minutes(15);
        assert_eq!(
            events,
            [GuardEvent::BanStarted {
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
            guard.refresh(until).unwrap(),
            [GuardEvent::BanEnded {
                client: attacker.clone()
            }]
        );
        assert_eq!(guard.blocked(&attacker, until), None);
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_ban() {
        let dir = tempfile::tempdir().unwrap();
        let guard = open(dir.path());
        for i in 0..8 {
            assert!(fail(&guard, &client(1), T0 + minutes(i * 3)).is_empty());
        }
        assert_eq!(guard.blocked(&client(1), T0 + minutes(24)), None);
    }

    #[test]
    fn ten_failures_from_anywhere_pause_everyone_and_pauses_double_until_a_success() {
        let dir = tempfile::tempdir().unwrap();
        let guard = open(dir.path());
        let mut now = T0;
        let mut lengths = Vec::new();
        for _ in 0..7 {
            let mut started = Vec::new();
            for n in 0..10 {
                started = fail(&guard, &client(n), now);
            }
            let Some(GuardEvent::PauseStarted { until, .. }) = started.last().cloned() else {
                panic!("no pause after 10 failures: {started:?}");
            };
            assert_eq!(guard.blocked(&client(99), now), Some(Blocked::Paused { until }));
            lengths.push((until - now).whole_hours());
            now = until;
            assert_eq!(guard.refresh(now).unwrap(), [GuardEvent::PauseEnded]);
        }
        assert_eq!(lengths, [1, 2, 4, 8, 16, 24, 24]);
        guard.record_success().unwrap();
        for n in 0..10 {
            fail(&guard, &client(n + 20), now);
        }
        assert_eq!(
            guard.blocked(&client(99), now),
            Some(Blocked::Paused {
                until: now + minutes(60)
            })
        );
    }

    #[test]
    fn bans_and_pauses_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let guard = open(dir.path());
        for _ in 0..5 {
            fail(&guard, &client(1), T0);
        }
        for n in 10..14 {
            fail(&guard, &client(n), T0);
        }
        drop(guard);
        let guard = open(dir.path());
        assert!(matches!(
            guard.blocked(&client(1), T0),
            Some(Blocked::Banned { .. })
        ));
        // The global count survived too: one more failure anywhere pauses everyone.
        fail(&guard, &client(50), T0);
        assert!(matches!(
            guard.blocked(&client(51), T0),
            Some(Blocked::Paused { .. })
        ));
    }

    #[test]
    fn unlock_lifts_bans_in_a_running_guard() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("regulation.json");
        let guard = open_without_global_limit(dir.path());
        for who in [client(1), client(2)] {
            for _ in 0..5 {
                fail(&guard, &who, T0);
            }
        }
        assert_eq!(unlock(&path, Some(&client(1))).unwrap(), 1);
        guard.refresh(T0).unwrap();
        assert_eq!(guard.blocked(&client(1), T0), None);
        assert!(guard.blocked(&client(2), T0).is_some());
        assert_eq!(unlock(&path, None).unwrap(), 1);
        guard.refresh(T0).unwrap();
        assert_eq!(guard.blocked(&client(2), T0), None);
    }

    #[test]
    fn a_corrupt_state_file_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("regulation.json");
        std::fs::write(&path, "{\"bans\": [").unwrap();
        let error = Guard::open(&path, GuardSettings::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 1"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"bans\": [");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_network() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ClientKey::of(mapped).to_string(), "192.0.2.7");
    }
}
