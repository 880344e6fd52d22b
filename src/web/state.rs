//! What every handler can reach: one cloneable `Arc` of the application's parts.

use std::sync::Arc;

use crate::auth::attempt::Gatekeeper;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::runs::runners::Runners;
use crate::store::SessionKeeper;
use crate::store::run_output::RunOutputStore;
use crate::store::session_table::SessionTable;
use crate::web::cache::Caches;

/// Everything a handler needs: one `Arc`, so handing it to a request costs one increment. Fields are
/// reached through `Deref` (`state.runner`).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

pub struct AppStateInner {
    pub config: Arc<Config>,
    pub clock: SharedClock,
    /// The runners of all actions. Starting a run names its action; the rest names the run (its id is
    /// unique across actions), and the run's action is found from it.
    pub runner: Arc<Runners>,
    /// The attempt of `POST /verify`: regulation, the code check, the audit, the gate.
    pub gatekeeper: Arc<Gatekeeper>,
    /// Answers and fragments made once per change of the history.
    pub caches: Caches,
    /// Where verified browser sessions are kept across a restart.
    pub sessions: Arc<dyn SessionKeeper>,
    /// The browser sessions several instances share (`[store] kind = "postgres"`); none: they are kept
    /// in memory.
    pub session_table: Option<Arc<dyn SessionTable>>,
    /// Runs' output shared by instances (`[store] kind = "postgres"`): how a run another instance runs
    /// is shown here. None: each run's output is in its log file only.
    pub run_output: Option<Arc<dyn RunOutputStore>>,
    /// The Prometheus registry; `GET /metrics` renders it.
    pub metrics: Arc<Metrics>,
    /// Mail and webhooks about runs, and the operators' messages.
    pub notifier: Arc<Notifier>,
}

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}
