//! Time as a parameter.
//!
//! Every product rule about time reads the time from a [`Clock`] and waits on it, so tests step a
//! [`ManualClock`] instead of sleeping, and production uses [`SystemClock`]. See [`Clock`] for which rules
//! those are, and which waits stay on real time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use tokio::sync::watch;

use crate::model::time::later;

/// A wait on a [`Clock`]: resolves once the clock reads its deadline. Dropping it stops waiting.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where the application reads "now" from, and waits until a later time.
///
/// The rules that read it: TOTP time steps, the cooldown and the gate, bans and pauses, the times in the
/// history (start, end, cancel) and the audit log, how long a verified browser session lasts, and the
/// status answer's `now`.
///
/// The rules that wait on it: the script's timeout (counted from the run's start), the kill grace
/// between SIGTERM and SIGKILL, the drain of output after the script ended, and the `?wait=` limits of
/// `POST /verify` and `GET /runs/{id}`.
///
/// Not on it, on purpose: the limits that protect the server from slow or idle connections (the header
/// read timeout, the request timeout, the drain of connections at shutdown, the keep-alive of event
/// streams), the short polls that look whether a process group is gone, and the durations measured for
/// log lines. They are about sockets and processes, not about what an operator configured as a rule,
/// and stay on real time.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;

    /// Resolves once [`now`](Clock::now) reads `deadline` or later (at once when it already does).
    fn sleep_until(&self, deadline: OffsetDateTime) -> Sleep;

    /// Resolves `duration` from now.
    fn sleep(&self, duration: std::time::Duration) -> Sleep {
        self.sleep_until(later(self.now(), duration))
    }
}

/// A clock shared by every part of the application.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock, in UTC. Its waits run on the monotonic clock: a wait that has begun is neither
/// shortened nor lengthened when the wall clock is set.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn sleep_until(&self, deadline: OffsetDateTime) -> Sleep {
        // A deadline already past is a negative duration, which does not convert: no wait.
        let wait = std::time::Duration::try_from(deadline - self.now()).unwrap_or_default();
        self.sleep(wait)
    }

    fn sleep(&self, duration: std::time::Duration) -> Sleep {
        Box::pin(async move { tokio::time::sleep(duration).await })
    }
}

/// A clock that only moves when told to; for tests and benchmarks. Moving it wakes the waits whose
/// deadline it reaches.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<OffsetDateTime>,
}

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            now: watch::Sender::new(start),
        }
    }

    pub fn set(&self, to: OffsetDateTime) {
        self.now.send_replace(to);
    }

    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now = now.saturating_add(by));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: OffsetDateTime) -> Sleep {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            let reached = now.wait_for(|now| *now >= deadline).await.is_ok();
            if !reached {
                // The clock is gone, so it never moves again.
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Waker};
    use time::macros::datetime;

    fn is_ready(sleep: &mut Sleep) -> bool {
        let mut context = Context::from_waker(Waker::noop());
        matches!(sleep.as_mut().poll(&mut context), Poll::Ready(()))
    }

    #[test]
    fn a_manual_sleep_ends_when_the_clock_reaches_its_deadline() {
        let clock = ManualClock::new(datetime!(2026-11-25 12:00:00 UTC));
        let mut sleep = clock.sleep(std::time::Duration::from_secs(10));
        assert!(!is_ready(&mut sleep));
        clock.advance(Duration::seconds(9));
        assert!(!is_ready(&mut sleep));
        clock.advance(Duration::seconds(1));
        assert!(is_ready(&mut sleep));
    }

    #[test]
    fn a_deadline_already_passed_ends_at_once_and_setting_the_clock_wakes_too() {
        let clock = ManualClock::new(datetime!(2026-11-25 12:00:00 UTC));
        assert!(is_ready(
            &mut clock.sleep_until(datetime!(2026-11-25 11:00:00 UTC))
        ));
        let mut sleep = clock.sleep_until(datetime!(2026-11-25 13:00:00 UTC));
        assert!(!is_ready(&mut sleep));
        clock.set(datetime!(2026-11-26 00:00:00 UTC));
        assert!(is_ready(&mut sleep));
    }

    #[test]
    fn a_sleep_past_the_last_representable_time_waits_without_overflow() {
        let clock = ManualClock::new(datetime!(9999-12-31 23:00:00 UTC));
        let mut sleep = clock.sleep(std::time::Duration::from_secs(u64::MAX));
        clock.advance(Duration::minutes(30));
        assert!(!is_ready(&mut sleep));
    }
}
