//! Time as a parameter.
//!
//! TOTP steps, cooldowns and history timestamps all read the time from a [`Clock`], so tests step a
//! [`ManualClock`] instead of sleeping, and production uses [`SystemClock`].

use std::sync::Arc;

use parking_lot::Mutex;

use time::{Duration, OffsetDateTime};

/// Where the application reads "now" from.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

/// A clock shared by every part of the application.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock, in UTC.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to; for tests and benchmarks.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
}

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    pub fn set(&self, to: OffsetDateTime) {
        *self.lock() = to;
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        *now += by;
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, OffsetDateTime> {
        self.now.lock()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.lock()
    }
}
