//! Running one action's script: admitting a run through the [`Gate`], starting it, and supervising it to
//! its end. Each action has its runner; they share the gate (see `runs::runners`).
//!
//! [`Runner::admit`] takes the gate's lock for the one atomic check-and-start, and makes the new run's id
//! and code durable before anyone hears of them. [`Runner::launch`] then records the run, starts the
//! script in its own process group with its output going straight to a log file, and hands it to a
//! supervisor task that enforces the timeout and writes the final status.
//!
//! Under a disk fault: an admission whose id and code cannot be written is taken back whole (nothing was
//! used); a run whose record cannot be written is refused before its script starts (its id and code stay
//! used, as the mark on disk says); the end of a run that cannot be written is kept in memory.
//!
//! Every rule about time here (the timeout, the kill grace, the output drain) waits on the
//! [`Clock`](crate::clock::Clock), so a test moves a manual clock past them. File work (the log
//! directory, opening the log, pruning old logs) runs on the blocking pool, never on the worker thread of
//! the request that started the run; starting the process itself is quick and stays there.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use nix::unistd::Pid;
use time::OffsetDateTime;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::config::ScriptConfig;
use crate::model::operator::Method;
use crate::model::run::{RunRecord, RunStatus, Who};
use crate::model::time::later;
use crate::runs::gate::{Admission, CodeCheck, Gate, Refusal, State};
use crate::runs::leftovers;
use crate::runs::observer::Observers;
use crate::runs::output::{self, LiveOutput};
pub use crate::runs::owner::Owner;
use crate::runs::process;
use crate::store::file::atomic;
use crate::store::{Claim, ClaimError, RunClaim, RunStore, StoreError, Taken};

/// Why a run is stopped before its script ends.
#[derive(Debug, Clone)]
enum StopRequest {
    /// Someone cancelled it: it ends "Cancelled", recording who.
    Cancelled(String),
    /// authrun may not let it go on: it ends "Interrupted", its error saying why.
    Interrupted(&'static str),
}

/// The run to cancel is not going (it ended, or never was).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("that run is not going")]
pub struct NotRunning;

/// How long the output may keep flowing after the script ended before the run is declared over (on the
/// [`Clock`](crate::clock::Clock)).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// What a run's public record says when its script could not be started.
const SPAWN_FAILED: &str = "the script could not be started";

/// Why an admitted run could not start. The gate is released (the cooldown still applies).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    History(#[from] StoreError),
    #[error("the script {path} could not be started: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs one action's script: its running run, its live output, its logs.
#[derive(Debug)]
pub struct Runner {
    owner: Owner,
    script: ScriptConfig,
    clock: SharedClock,
    history: Arc<dyn RunStore>,
    /// Every action's gate, shared by all runners.
    gate: Arc<Mutex<Gate>>,
    /// Tells the supervisor to stop the script (shutdown).
    stop: watch::Sender<bool>,
    /// Tells the supervisor of a run to stop it, and why.
    cancel: watch::Sender<Option<(u64, StopRequest)>>,
    /// The newest run's live output.
    live: Mutex<Option<(u64, Arc<LiveOutput>)>>,
    /// The id of the last run that ended; waiters watch it.
    finished: watch::Sender<u64>,
    /// Told of each start and end (notifications, metrics).
    observers: Observers,
}

impl Runner {
    /// The runner of `owner`'s action, admitting its runs through the shared `gate`.
    pub fn new(
        owner: Owner,
        script: ScriptConfig,
        clock: SharedClock,
        history: Arc<dyn RunStore>,
        gate: Arc<Mutex<Gate>>,
        observers: Observers,
    ) -> Self {
        Self {
            owner,
            script,
            clock,
            history,
            gate,
            observers,
            stop: watch::Sender::new(false),
            cancel: watch::Sender::new(None),
            live: Mutex::new(None),
            finished: watch::Sender::new(0),
        }
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    pub fn history(&self) -> &Arc<dyn RunStore> {
        &self.history
    }

    pub fn cooldown(&self) -> Duration {
        self.script.cooldown
    }

    /// The state at `now`.
    pub fn state(&self, now: OffsetDateTime) -> State {
        self.lock().state(self.owner.index, now)
    }

    /// The atomic check-and-start (see [`Gate::admit`]), then the run's id and code step made durable
    /// ([`RunStore::reserve`]), so that neither is ever given twice. When that write fails the admission
    /// is taken back whole, as a restart would find it, and refused as [`Refusal::Unrecorded`].
    pub async fn admit(
        &self,
        now: OffsetDateTime,
        check: impl FnOnce(Option<u64>) -> CodeCheck,
    ) -> Result<Admission, Refusal> {
        let mut admission = self.lock().admit(self.owner.index, now, check)?;
        let claim = Claim {
            id: admission.id,
            totp_step: admission.totp_step,
            run: Some(RunClaim {
                action: self.owner.id.as_str(),
                started: admission.started,
                cooldown: self.script.cooldown,
            }),
        };
        match self.history.claim(claim).await {
            Ok(id) => {
                if id != admission.id {
                    self.lock().renumber(&mut admission, id);
                }
                Ok(admission)
            }
            Err(ClaimError::Store(error)) => {
                // No run id in this line: the id is given back, to the next run.
                tracing::error!(%error, "a run could not be reserved; nothing started, nothing was used");
                self.lock().take_back(&admission);
                self.gate_freed();
                Err(if error.is_database() {
                    Refusal::StoreUnavailable
                } else {
                    Refusal::Unrecorded
                })
            }
            Err(ClaimError::Taken(taken)) => {
                let mut gate = self.lock();
                gate.take_back(&admission);
                Err(match taken {
                    Taken::Code => {
                        gate.note_step(admission.totp_step);
                        Refusal::ReplayedCode
                    }
                    Taken::Running { since } => Refusal::Running { since },
                    Taken::CoolingDown { until } => Refusal::CoolingDown { until },
                })
            }
        }
    }

    /// Gives up an admitted run before it is recorded: the gate is free and the cooldown is as it was. The
    /// code stays used.
    pub fn abandon(&self, admission: Admission) {
        self.lock()
            .abandon(self.owner.index, admission.id, admission.previous_start);
        self.gate_freed();
        // A shared store frees the action for every instance; the file store has nothing to do.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let history = Arc::clone(&self.history);
            runtime.spawn(async move { history.withdraw(admission.id).await });
        }
    }

    /// Wakes a shutdown that found an admitted run holding the gate, now given up before its script
    /// started (its id is not "finished": a run taken back gives its id to the next one).
    fn gate_freed(&self) {
        self.finished.send_modify(|_| {});
    }

    /// Records the admitted run and starts the script. A run that cannot be recorded is not started and
    /// the gate is released (the cooldown is as it was); a script that cannot be started ends the run as
    /// failed.
    pub async fn launch(
        self: &Arc<Self>,
        admission: Admission,
        by: Who,
        method: Method,
    ) -> Result<(), LaunchError> {
        let id = admission.id;
        let mut record = RunRecord::started(id, admission.started, admission.totp_step);
        record.action = Some(self.owner.id.to_string());
        record.by = by;
        record.method = Some(method);
        record.log = Some(log_name(id));
        // On disk before the script starts: nobody is told of a run that is not recorded, and no script
        // runs that the history does not know.
        if let Err(error) = self.history.append(record.clone()).await {
            self.abandon(admission);
            return Err(error.into());
        }
        let (child, live, capture) = match self.spawn(id).await {
            Ok(spawned) => spawned,
            Err(source) => {
                let error = LaunchError::Spawn {
                    path: self.script.path.clone(),
                    source,
                };
                // The record is public: the path and the cause go to the log with the returned error.
                record.error = Some(SPAWN_FAILED.into());
                self.finish(record, RunStatus::Failed, None).await;
                return Err(error);
            }
        };
        // The pid lets the next start find what the run left behind should authrun crash; the run goes
        // on without it.
        record.pid = child.id();
        if let Err(error) = self.history.update(record.clone()).await {
            tracing::warn!(run = id, %error, "the script's pid could not be written");
        }
        tracing::info!(
            run = id,
            action = %self.owner.id,
            script = %self.script.path.display(),
            "run started"
        );
        for observer in self.observers.iter() {
            observer.started(&self.owner, &record);
        }
        *self.lock_live() = Some((id, Arc::clone(&live)));
        let runner = Arc::clone(self);
        tokio::spawn(async move { runner.supervise(child, record, live, capture).await });
        Ok(())
    }

    /// The live output of run `id`, while it is the newest run.
    pub fn live_output(&self, id: u64) -> Option<Arc<LiveOutput>> {
        self.lock_live()
            .as_ref()
            .filter(|(live_id, _)| *live_id == id)
            .map(|(_, live)| Arc::clone(live))
    }

    /// The log file of run `id`.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.script.log_dir.join(log_name(id))
    }

    /// Stops run `id` (SIGTERM to its process group, SIGKILL after the grace period); it ends as
    /// "Cancelled", recording `by`.
    pub fn cancel(&self, id: u64, by: String) -> Result<(), NotRunning> {
        if !self.lock().is_running(self.owner.index, id) {
            return Err(NotRunning);
        }
        self.cancel.send_replace(Some((id, StopRequest::Cancelled(by))));
        Ok(())
    }

    /// Stops run `id` as [`cancel`](Self::cancel) does, but it ends "Interrupted", its error saying
    /// `why`: authrun itself may not let it go on.
    pub fn interrupt(&self, id: u64, why: &'static str) -> Result<(), NotRunning> {
        if !self.lock().is_running(self.owner.index, id) {
            return Err(NotRunning);
        }
        self.cancel
            .send_replace(Some((id, StopRequest::Interrupted(why))));
        Ok(())
    }

    /// Resolves when run `id` has ended and its final status is recorded.
    pub async fn wait_finished(&self, id: u64) {
        let mut finished = self.finished.subscribe();
        // The sender lives as long as `self`, so this only ends when the run does.
        let _ = finished.wait_for(|last| *last >= id).await;
    }

    /// Refuses new runs and stops the running one (SIGTERM, then SIGKILL after the grace period),
    /// returning once its final status is written.
    pub async fn shutdown(&self) {
        let running = self.lock().shut(self.owner.index);
        self.stop.send_replace(true);
        if let Some(id) = running {
            tracing::info!(run = id, "stopping the running script for shutdown");
            let mut finished = self.finished.subscribe();
            // The run ends, or (admitted but given up before its script started) frees the gate.
            let _ = finished
                .wait_for(|last| *last >= id || !self.lock().is_running(self.owner.index, id))
                .await;
        }
    }

    async fn spawn(&self, id: u64) -> std::io::Result<(Child, Arc<LiveOutput>, JoinHandle<()>)> {
        let (dir, path) = (self.script.log_dir.clone(), self.log_path(id));
        let log = blocking(move || {
            atomic::create_private_dir(&dir)?;
            // Output can hold secrets: the log is the owner's only.
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?;
            Ok((log, path))
        })
        .await;
        let (log, path) = log?;
        let mut child = leftovers::spawn(&mut process::command(&self.script, id))?;
        let (live, capture) = output::capture(child.stdout.take(), child.stderr.take(), log, path);
        Ok((child, live, capture))
    }

    async fn supervise(
        &self,
        mut child: Child,
        record: RunRecord,
        live: Arc<LiveOutput>,
        capture: JoinHandle<()>,
    ) {
        let id = record.id.unwrap_or_default();
        let Some(pgid) = process::process_group(&child) else {
            // The child was already reaped: nothing to supervise.
            self.finish(record, RunStatus::Failed, None).await;
            live.end();
            return;
        };
        let mut stop = self.stop.subscribe();
        let mut cancel = self.cancel.subscribe();
        let mut record = record;
        let mut interrupted_because = None;
        let timeout = self.clock.sleep_until(later(record.time, self.script.timeout));
        let ended = tokio::select! {
            status = child.wait() => Ok(status),
            () = timeout => Err(RunStatus::TimedOut),
            _ = stop.wait_for(|stop| *stop) => Err(RunStatus::Interrupted),
            request = cancel.wait_for(|cancel| cancel.as_ref().is_some_and(|(run, _)| *run == id)) => {
                match request.ok().and_then(|request| request.as_ref().map(|(_, why)| why.clone())) {
                    Some(StopRequest::Interrupted(why)) => {
                        interrupted_because = Some(why);
                        Err(RunStatus::Interrupted)
                    }
                    request => {
                        record.cancelled_by = match request {
                            Some(StopRequest::Cancelled(by)) => Some(by),
                            _ => None,
                        };
                        record.cancelled_at = Some(self.clock.now());
                        Err(RunStatus::Cancelled)
                    }
                }
            }
        };
        let (status, exit) = match ended {
            Ok(Ok(exit)) => (process::status_of(exit), Some(exit)),
            Ok(Err(error)) => {
                tracing::error!(run = id, %error, "waiting for the script failed");
                (RunStatus::Failed, None)
            }
            Err(status) => {
                tracing::warn!(run = id, status = %status, "stopping the script's process group");
                let grace = self.clock.sleep(self.script.kill_grace);
                let exit = process::stop_group(pgid, &mut child, grace).await;
                (status, exit)
            }
        };
        self.clean_up(id, pgid).await;
        let drained = tokio::select! {
            _ = capture => true,
            () = self.clock.sleep(OUTPUT_DRAIN) => false,
        };
        if !drained {
            // A background process of the script still holds its output: it goes on to the log.
            tracing::info!(
                run = id,
                "the script left a process writing output; the run is over"
            );
        }
        if let Some(note) = exit.and_then(process::signal_note) {
            record.error = Some(note);
        }
        if let Some(why) = interrupted_because {
            record.error = Some(why.into());
        }
        record.signal = exit.and_then(|exit| std::os::unix::process::ExitStatusExt::signal(&exit));
        // Before the end is told, so whoever waits for it finds only the logs that are kept.
        let (dir, pruned) = (self.script.log_dir.clone(), self.logs_to_prune());
        let _ = blocking(move || {
            prune_logs(&dir, &pruned);
            Ok(())
        })
        .await;
        self.finish(record, status, exit.and_then(|exit| exit.code()))
            .await;
        live.end();
    }

    /// After the script of run `id` (process group `pgid`) ended: stops what it left running, in its
    /// group or not, unless `leave_running` says to leave it (which the log then says).
    async fn clean_up(&self, id: u64, pgid: Pid) {
        leftovers::forget(pgid);
        if self.script.leave_running {
            let left = leftovers::count(id, pgid).await;
            if left > 0 {
                tracing::info!(
                    run = id,
                    left,
                    "the script left processes running (leave_running)"
                );
            }
        } else {
            let stopped = leftovers::stop(id, pgid, self.clock.sleep(self.script.kill_grace)).await;
            if stopped > 0 {
                tracing::info!(run = id, stopped, "stopped the processes the script left running");
            }
        }
    }

    async fn finish(&self, mut record: RunRecord, status: RunStatus, exit_code: Option<i32>) {
        record.finish(status, self.clock.now(), exit_code);
        let id = record.id.unwrap_or_default();
        tracing::info!(
            run = id,
            status = %status,
            exit_code = ?exit_code,
            duration_ms = record.duration_ms,
            "run ended"
        );
        if let Err(error) = self.history.update(record.clone()).await {
            tracing::error!(run = id, %error, "the final status of the run could not be written");
        }
        for observer in self.observers.iter() {
            observer.finished(&self.owner, &record);
        }
        self.lock().release(self.owner.index, id);
        self.finished.send_modify(|last| *last = (*last).max(id));
    }

    /// Which logs to delete: those of this action's runs but its newest `keep_logs`, and those whose run
    /// the history no longer holds (older than its oldest run). Actions may share a log directory: the
    /// logs of other actions' runs are theirs to prune.
    fn logs_to_prune(&self) -> Pruned {
        let history = self.history.snapshot();
        let mut runs = HashSet::new();
        let mut kept = 0;
        for record in history.iter().rev().filter(|record| self.owner.owns(record)) {
            let Some(id) = record.id else { continue };
            if kept < self.script.keep_logs {
                kept += 1;
            } else {
                runs.insert(id);
            }
        }
        let before = history.iter().filter_map(|record| record.id).min().unwrap_or(0);
        Pruned { runs, before }
    }

    fn lock_live(&self) -> MutexGuard<'_, Option<(u64, Arc<LiveOutput>)>> {
        self.live.lock()
    }

    fn lock(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock()
    }
}

/// The log file of run `id`, inside the log directory.
pub fn log_name(id: u64) -> String {
    format!("{id}.log")
}

/// The logs to delete: of these runs, and of every run before this id.
struct Pruned {
    runs: HashSet<u64>,
    before: u64,
}

/// Deletes the logs in `dir` that `pruned` names.
fn prune_logs(dir: &std::path::Path, pruned: &Pruned) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if id.is_some_and(|id| id < pruned.before || pruned.runs.contains(&id)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Runs file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join)))
}
