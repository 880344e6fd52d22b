//! Refusals counted instead of written one by one.
//!
//! A banned client, or anyone during a pause, or a cross-site page can send refused requests as fast as
//! the network carries them; each one learns nothing, and a line for each would fill the disk (a client
//! flooding `/verify` wrote 14 GB of audit log an hour). So such refusals are reported per client and
//! outcome once a minute: the first at once, then one line with the count of the rest when the minute is
//! over (at the client's next refusal, or at the next sweep). Memory is bounded: past
//! [`MAX_WINDOWS`] clients the rest are counted together.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use time::OffsetDateTime;

use crate::model::audit::Outcome;
use crate::model::client::ClientKey;
use crate::model::time::later;

/// How long refusals of one client are counted before the next line.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The most clients counted one by one at once.
const MAX_WINDOWS: usize = 10_000;

/// A line to write: `count` refusals of `client` (`None`: the clients beyond those counted one by one)
/// with `outcome`, the first at `since`, the last at `time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub client: Option<ClientKey>,
    pub outcome: Outcome,
    pub count: u64,
    pub since: OffsetDateTime,
    pub time: OffsetDateTime,
}

/// The refusals counted per client and outcome.
#[derive(Debug, Default)]
pub struct Refusals {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    windows: HashMap<(Option<ClientKey>, Outcome), Window>,
    /// When windows are next looked through for counts to report.
    next_sweep: Option<OffsetDateTime>,
}

/// One client's minute.
#[derive(Debug)]
struct Window {
    opened: OffsetDateTime,
    /// Refusals since the last line, with the first and last of them.
    unreported: u64,
    first: OffsetDateTime,
    last: OffsetDateTime,
}

impl Window {
    fn open(now: OffsetDateTime) -> Self {
        Self {
            opened: now,
            unreported: 0,
            first: now,
            last: now,
        }
    }
}

impl Refusals {
    /// Counts a refusal of `client` with `outcome` at `now`; returns the line to write now, if any.
    pub fn note(&self, client: &ClientKey, outcome: Outcome, now: OffsetDateTime) -> Option<Report> {
        let mut state = self.state.lock();
        let mut key = (Some(client.clone()), outcome);
        if !state.windows.contains_key(&key) && state.windows.len() >= MAX_WINDOWS {
            key.0 = None;
        }
        let Some(window) = state.windows.get_mut(&key) else {
            state.windows.insert(key.clone(), Window::open(now));
            return Some(Report {
                client: key.0,
                outcome,
                count: 1,
                since: now,
                time: now,
            });
        };
        if now < later(window.opened, WINDOW) {
            if window.unreported == 0 {
                window.first = now;
            }
            window.unreported += 1;
            window.last = now;
            return None;
        }
        let report = Report {
            client: key.0,
            outcome,
            count: window.unreported + 1,
            since: if window.unreported == 0 { now } else { window.first },
            time: now,
        };
        *window = Window::open(now);
        Some(report)
    }

    /// The counts of the minutes over by `now` that no later refusal reported; those clients' next
    /// minute begins now, and the windows of clients who stopped are closed. Cheap when called often:
    /// the windows are looked through once a minute.
    pub fn due(&self, now: OffsetDateTime) -> Vec<Report> {
        let mut state = self.state.lock();
        if state.next_sweep.is_some_and(|next| now < next) {
            return Vec::new();
        }
        state.next_sweep = Some(later(now, WINDOW));
        let mut reports = Vec::new();
        state.windows.retain(|(client, outcome), window| {
            if now < later(window.opened, WINDOW) {
                return true;
            }
            if window.unreported == 0 {
                return false;
            }
            reports.push(report_rest(client, *outcome, window));
            *window = Window::open(now);
            true
        });
        reports
    }

    /// Every count not yet reported, for a server that stops.
    pub fn drain(&self) -> Vec<Report> {
        let mut state = self.state.lock();
        state
            .windows
            .drain()
            .filter(|(_, window)| window.unreported > 0)
            .map(|((client, outcome), window)| report_rest(&client, outcome, &window))
            .collect()
    }
}

fn report_rest(client: &Option<ClientKey>, outcome: Outcome, window: &Window) -> Report {
    Report {
        client: client.clone(),
        outcome,
        count: window.unreported,
        since: window.first,
        time: window.last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);

    fn seconds(n: i64) -> time::Duration {
        time::Duration::seconds(n)
    }

    fn client(n: u8) -> ClientKey {
        ClientKey::of([192, 0, 2, n].into())
    }

    #[test]
    fn a_client_gets_a_line_at_once_then_one_a_minute_with_the_count() {
        let refusals = Refusals::default();
        let first = refusals.note(&client(1), Outcome::Banned, T0).unwrap();
        assert_eq!((first.count, first.since, first.time), (1, T0, T0));
        for s in 1..60 {
            assert_eq!(refusals.note(&client(1), Outcome::Banned, T0 + seconds(s)), None);
        }
        // Another client, or another outcome, is counted apart.
        assert!(
            refusals
                .note(&client(2), Outcome::Banned, T0 + seconds(1))
                .is_some()
        );
        assert!(
            refusals
                .note(&client(1), Outcome::Forbidden, T0 + seconds(1))
                .is_some()
        );

        let next = refusals
            .note(&client(1), Outcome::Banned, T0 + seconds(61))
            .unwrap();
        assert_eq!(next.count, 60, "59 unreported and this one");
        assert_eq!(next.since, T0 + seconds(1));
        assert_eq!(next.time, T0 + seconds(61));
    }

    #[test]
    fn counts_no_later_refusal_reported_come_at_the_sweep_or_the_end() {
        let refusals = Refusals::default();
        refusals.note(&client(1), Outcome::Paused, T0);
        refusals.note(&client(1), Outcome::Paused, T0 + seconds(5));
        refusals.note(&client(1), Outcome::Paused, T0 + seconds(9));
        refusals.note(&client(2), Outcome::Paused, T0 + seconds(30));
        refusals.note(&client(2), Outcome::Paused, T0 + seconds(31));
        refusals.note(&client(3), Outcome::Paused, T0 + seconds(40));
        assert!(refusals.due(T0 + seconds(59)).is_empty(), "no minute is over");
        assert!(
            refusals.due(T0 + seconds(100)).is_empty(),
            "the sweep waits a minute"
        );
        let mut due = refusals.due(T0 + seconds(119));
        due.sort_by_key(|report| report.since);
        let seen: Vec<_> = due
            .iter()
            .map(|r| (r.client.clone(), r.count, r.since, r.time))
            .collect();
        // Client 3 was refused once and told at once: nothing is left to say.
        assert_eq!(
            seen,
            [
                (Some(client(1)), 2, T0 + seconds(5), T0 + seconds(9)),
                (Some(client(2)), 1, T0 + seconds(31), T0 + seconds(31)),
            ]
        );
        // Client 1's next minute began at the sweep: a refusal within it waits for the end.
        assert_eq!(
            refusals.note(&client(1), Outcome::Paused, T0 + seconds(130)),
            None
        );
        let rest = refusals.drain();
        assert_eq!(rest.len(), 1, "{rest:?}");
        assert_eq!((rest[0].client.clone(), rest[0].count), (Some(client(1)), 1));
        // After the end everything starts over, with a line at once.
        let again = refusals.note(&client(1), Outcome::Paused, T0 + seconds(200));
        assert_eq!(again.map(|r| r.count), Some(1));
    }

    #[test]
    fn past_the_limit_clients_are_counted_together() {
        let refusals = Refusals::default();
        for n in 0..MAX_WINDOWS {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + u32::try_from(n).unwrap());
            refusals.note(&ClientKey::of(ip.into()), Outcome::Paused, T0);
        }
        let first = refusals.note(&client(1), Outcome::Paused, T0).unwrap();
        assert_eq!(first.client, None);
        assert_eq!(refusals.note(&client(2), Outcome::Paused, T0), None);
        let rest = refusals.drain();
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].client.clone(), rest[0].count), (None, 1));
    }
}
