//! The Prometheus metrics of `GET /metrics`: what authrun counts as it works, and what it reads of its
//! state when scraped.
//!
//! One explicit registry per server, no global state, so every app (and every test's) counts for itself.
//! Counting costs an attempt one atomic increment: the counter of each outcome is made at start. Runs
//! find their series by label as they end (a run is rare; a lookup is nothing beside a process). Bans,
//! the pause and the running runs are not counted at all: the scrape reads them from the regulation
//! state and the gate ([`Live`]), so they can never drift from what authrun enforces.
//!
//! The answer is OpenMetrics text, which Prometheus asks for by default.

use std::fmt;

use parking_lot::Mutex;
use prometheus_client::encoding::{EncodeLabelSet, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::model::audit::Outcome;
use crate::model::run::RunRecord;
use crate::runs::observer::RunObserver;
use crate::runs::owner::Owner;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The upper bounds (seconds) of the run duration histogram's buckets: a quick restart to a long build.
const DURATION_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    action: String,
    /// `RunStatus::kind`: `succeeded`, `failed`, `timed-out`, `interrupted`, `cancelled`.
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    kind: String,
    result: String,
}

type DurationFamily = Family<ActionLabel, Histogram, fn() -> Histogram>;

/// What a scrape reads of authrun's state, as it is at the scrape.
#[derive(Debug, Clone, Default)]
pub struct Live<'a> {
    /// Each action's id, and whether a run of it is going.
    pub running: Vec<(&'a str, bool)>,
    /// Clients banned now.
    pub banned: usize,
    /// Whether code checking is paused for everyone now.
    pub paused: bool,
}

/// The registry and its metrics; one per server, shared by the gatekeeper, the runners and the route.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `authrun_attempts_total`, one counter per outcome, at `Outcome as usize`.
    attempts: [Counter; Outcome::ALL.len()],
    runs: Family<RunLabels, Counter>,
    durations: DurationFamily,
    running: Family<ActionLabel, Gauge>,
    banned: Gauge,
    paused: Gauge,
    notifications: Family<NotificationLabels, Counter>,
    /// Held while a scrape sets the live values and writes them, so two scrapes never mix theirs.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("authrun");
        let by_outcome = Family::<OutcomeLabel, Counter>::default();
        let attempts = Outcome::ALL.map(|outcome| {
            by_outcome
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.as_str(),
                })
                .clone()
        });
        registry.register(
            "attempts",
            "Code attempts by outcome (the audit log's words), refusals before the code was read included",
            by_outcome,
        );
        let runs = Family::default();
        registry.register("runs", "Runs ended, by action and final status", runs.clone());
        let durations: DurationFamily = Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register_with_unit(
            "run_duration",
            "How long ended runs took, by action",
            Unit::Seconds,
            durations.clone(),
        );
        let running = Family::default();
        registry.register(
            "runs_running",
            "Runs going now, by action (0 or 1: an action runs once at a time)",
            running.clone(),
        );
        let banned = Gauge::default();
        registry.register("clients_banned", "Clients banned now", banned.clone());
        let paused = Gauge::default();
        registry.register(
            "paused",
            "1 while code checking is paused for everyone, else 0",
            paused.clone(),
        );
        let notifications = Family::default();
        registry.register(
            "notifications",
            "Notifications sent or given up, by kind and result",
            notifications.clone(),
        );
        registry.register(
            "build",
            "The running authrun's version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            attempts,
            runs,
            durations,
            running,
            banned,
            paused,
            notifications,
            scrape: Mutex::new(()),
        }
    }

    /// Counts an attempt and what became of it.
    pub fn attempt(&self, outcome: Outcome) {
        if let Some(counter) = self.attempts.get(outcome as usize) {
            counter.inc();
        }
    }

    /// Counts a notification of `kind` (e.g. `mail`, `webhook`) and its `result` (e.g. `sent`, `failed`).
    pub fn notification(&self, kind: &str, result: &str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                kind: kind.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// The metrics as OpenMetrics text, with `live` as the state read at this scrape.
    pub fn render(&self, live: &Live<'_>) -> Result<String, fmt::Error> {
        let _scrape = self.scrape.lock();
        for (action, running) in &live.running {
            let label = ActionLabel {
                action: (*action).to_string(),
            };
            self.running.get_or_create(&label).set(i64::from(*running));
        }
        self.banned.set(i64::try_from(live.banned).unwrap_or(i64::MAX));
        self.paused.set(i64::from(live.paused));
        let mut out = String::with_capacity(4096);
        text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl RunObserver for Metrics {
    fn finished(&self, owner: &Owner, record: &RunRecord) {
        let action = owner.id.to_string();
        let labels = RunLabels {
            action: action.clone(),
            status: record.status.kind(),
        };
        self.runs.get_or_create(&labels).inc();
        // Milliseconds to seconds: exact enough for any run (2^53 ms is 285,000 years).
        #[allow(clippy::cast_precision_loss)]
        let seconds = record.duration_ms.unwrap_or(0) as f64 / 1000.0;
        self.durations
            .get_or_create(&ActionLabel { action })
            .observe(seconds);
    }
}
