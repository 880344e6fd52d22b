//! Running the one script: admitting a run through the [`Gate`], starting it, and supervising it to its
//! end.
//!
//! [`Runner::admit`] takes the gate's lock for the one atomic check-and-start. [`Runner::launch`] then
//! records the run, starts the script in its own process group with its output going straight to a log
//! file, and hands it to a supervisor task that enforces the timeout and writes the final status.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::Signal;
use time::OffsetDateTime;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::config::ScriptConfig;
use crate::model::run::{RunRecord, RunStatus};
use crate::runs::gate::{Admission, CodeCheck, Gate, Refusal, State};
use crate::runs::output::{self, LiveOutput};
use crate::runs::process;
use crate::store::file::atomic;
use crate::store::{RunStore, StoreError};

/// The run to cancel is not going (it ended, or never was).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("that run is not going")]
pub struct NotRunning;

/// How long the output may keep flowing after the script ended before the run is declared over.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

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

/// Owns the gate and the running script.
#[derive(Debug)]
pub struct Runner {
    script: ScriptConfig,
    clock: SharedClock,
    history: Arc<dyn RunStore>,
    gate: Mutex<Gate>,
    /// Tells the supervisor to stop the script (shutdown).
    stop: watch::Sender<bool>,
    /// Tells the supervisor of a run to cancel it, and who asked.
    cancel: watch::Sender<Option<(u64, String)>>,
    /// The newest run's live output.
    live: Mutex<Option<(u64, Arc<LiveOutput>)>>,
    /// The id of the last run that ended; waiters watch it.
    finished: watch::Sender<u64>,
}

impl Runner {
    /// Restores the gate from the history, so a restart never lets a run through early nor accepts a code
    /// that was already used, and kills what runs interrupted by a crash left running.
    pub fn new(script: ScriptConfig, clock: SharedClock, history: Arc<dyn RunStore>) -> Self {
        for record in history.interrupted() {
            if let (Some(pid), Some(id)) = (record.pid, record.id) {
                let killed = process::kill_leftovers(pid, id);
                if killed > 0 {
                    tracing::warn!(
                        run = id,
                        killed,
                        "killed processes an interrupted run left running"
                    );
                }
            }
        }
        let gate = Gate::restore(
            script.cooldown,
            history.last().map(|record| record.time),
            history.last_totp_step(),
            history.last_id(),
        );
        Self {
            script,
            clock,
            history,
            gate: Mutex::new(gate),
            stop: watch::Sender::new(false),
            cancel: watch::Sender::new(None),
            live: Mutex::new(None),
            finished: watch::Sender::new(0),
        }
    }

    pub fn history(&self) -> &Arc<dyn RunStore> {
        &self.history
    }

    pub fn cooldown(&self) -> Duration {
        self.script.cooldown
    }

    /// The state at `now`.
    pub fn state(&self, now: OffsetDateTime) -> State {
        self.lock().state(now)
    }

    /// The atomic check-and-start (see [`Gate::admit`]).
    pub fn admit(
        &self,
        now: OffsetDateTime,
        check: impl FnOnce(Option<u64>) -> CodeCheck,
    ) -> Result<Admission, Refusal> {
        self.lock().admit(now, check)
    }

    /// Gives up an admitted run before it is recorded: the gate is free and the cooldown is as it was. The
    /// code stays used.
    pub fn abandon(&self, admission: Admission) {
        self.lock().abandon(admission.id, admission.previous_start);
    }

    /// Records the admitted run and starts the script. On error the run is recorded as failed where
    /// possible, and the gate is released.
    pub async fn launch(self: &Arc<Self>, admission: Admission) -> Result<(), LaunchError> {
        let (id, previous_start) = (admission.id, admission.previous_start);
        let mut record = RunRecord::started(id, admission.started, admission.totp_step);
        record.log = Some(log_name(id));
        let (mut child, live, capture) = match self.spawn(id) {
            Ok(spawned) => spawned,
            Err(source) => {
                let error = LaunchError::Spawn {
                    path: self.script.path.clone(),
                    source,
                };
                record.error = Some(error.to_string());
                self.finish(record, RunStatus::Failed, None).await;
                return Err(error);
            }
        };
        // The script starts first and the run is recorded right after (one atomic write, with the pid):
        // nobody is told the run started before it is on disk, and a run that cannot be recorded is
        // stopped at once.
        record.pid = child.id();
        if let Err(error) = self.history.append(record.clone()).await {
            if let Some(pgid) = process::process_group(&child) {
                process::signal_group(pgid, Signal::SIGKILL);
            }
            let _ = child.wait().await;
            capture.abort();
            self.lock().abandon(id, previous_start);
            return Err(error.into());
        }
        tracing::info!(run = id, script = %self.script.path.display(), "run started");
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
        if !self.lock().is_running(id) {
            return Err(NotRunning);
        }
        self.cancel.send_replace(Some((id, by)));
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
        let running = self.lock().shut();
        self.stop.send_replace(true);
        if let Some(id) = running {
            tracing::info!(run = id, "stopping the running script for shutdown");
            self.wait_finished(id).await;
        }
    }

    fn spawn(&self, id: u64) -> std::io::Result<(Child, Arc<LiveOutput>, JoinHandle<()>)> {
        atomic::create_private_dir(&self.script.log_dir)?;
        let path = self.log_path(id);
        // Output can hold secrets: the log is the owner's only.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let mut child = process::command(&self.script, id).spawn()?;
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
        let ended = tokio::select! {
            status = child.wait() => Ok(status),
            () = tokio::time::sleep(self.script.timeout) => Err(RunStatus::TimedOut),
            _ = stop.wait_for(|stop| *stop) => Err(RunStatus::Interrupted),
            by = cancel.wait_for(|cancel| cancel.as_ref().is_some_and(|(run, _)| *run == id)) => {
                record.cancelled_by = by.ok().and_then(|by| by.as_ref().map(|(_, by)| by.clone()));
                record.cancelled_at = Some(self.clock.now());
                Err(RunStatus::Cancelled)
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
                let exit = process::stop_group(pgid, &mut child, self.script.kill_grace).await;
                (status, exit)
            }
        };
        if tokio::time::timeout(OUTPUT_DRAIN, capture).await.is_err() {
            // A background process of the script still holds its output: it goes on to the log.
            tracing::info!(
                run = id,
                "the script left a process writing output; the run is over"
            );
        }
        if let Some(note) = exit.and_then(process::signal_note) {
            record.error = Some(note);
        }
        record.signal = exit.and_then(|exit| std::os::unix::process::ExitStatusExt::signal(&exit));
        self.finish(record, status, exit.and_then(|exit| exit.code()))
            .await;
        live.end();
        self.prune_logs(id);
    }

    /// Keeps the logs of the newest `keep_logs` runs.
    fn prune_logs(&self, newest: u64) {
        let keep = self.script.keep_logs as u64;
        let Ok(entries) = std::fs::read_dir(&self.script.log_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok());
            if id.is_some_and(|id| id + keep <= newest) {
                let _ = std::fs::remove_file(entry.path());
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
        if let Err(error) = self.history.update(record).await {
            tracing::error!(run = id, %error, "the final status of the run could not be written");
        }
        self.lock().release(id);
        self.finished.send_modify(|last| *last = (*last).max(id));
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
