//! Running the one script: the gate that lets exactly one run start, and the supervision of that run.
//!
//! [`Runner::admit`] is the single atomic step of the product: under one lock it checks that no run is
//! going and the cooldown is over, checks the code against the last accepted TOTP step, and marks the run
//! as started. [`Runner::launch`] then records the run, starts the script in its own process group with its
//! output going straight to a log file, and hands it to a supervisor task that enforces the timeout and
//! writes the final status.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use time::OffsetDateTime;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::config::ScriptConfig;
use crate::history::{History, HistoryError, RunRecord, RunStatus};
use crate::output::{self, LiveOutput};
use crate::totp::Verdict;

/// What the runner is doing at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Running { id: u64, since: OffsetDateTime },
    CoolingDown { until: OffsetDateTime },
}

impl State {
    /// The word used in the status answer: `idle`, `running` or `cooling_down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running { .. } => "running",
            Self::CoolingDown { .. } => "cooling_down",
        }
    }
}

/// Why a request may not start a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Running { since: OffsetDateTime },
    CoolingDown { until: OffsetDateTime },
    WrongCode,
    ReplayedCode,
    ShuttingDown,
}

/// A run let through the gate but not yet started.
#[derive(Debug)]
#[must_use = "an admitted run holds the gate until it is launched"]
pub struct Admission {
    pub id: u64,
    pub started: OffsetDateTime,
    totp_step: u64,
    /// The start of the run before, restored if this one is abandoned.
    previous_start: Option<OffsetDateTime>,
}

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
    History(#[from] HistoryError),
    #[error("the script {path} could not be started: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Gate {
    running: Option<(u64, OffsetDateTime)>,
    last_start: Option<OffsetDateTime>,
    last_step: Option<u64>,
    next_id: u64,
    shutting_down: bool,
}

/// Owns the gate and the running script.
#[derive(Debug)]
pub struct Runner {
    script: ScriptConfig,
    clock: SharedClock,
    history: Arc<History>,
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
    /// that was already used.
    pub fn new(script: ScriptConfig, clock: SharedClock, history: Arc<History>) -> Self {
        for record in history.interrupted() {
            if let (Some(pid), Some(id)) = (record.pid, record.id) {
                let killed = kill_leftovers(pid, id);
                if killed > 0 {
                    tracing::warn!(
                        run = id,
                        killed,
                        "killed processes an interrupted run left running"
                    );
                }
            }
        }
        let gate = Gate {
            running: None,
            last_start: history.last().map(|record| record.time),
            last_step: history.last_totp_step(),
            next_id: history.last_id().saturating_add(1),
            shutting_down: false,
        };
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

    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    pub fn cooldown(&self) -> Duration {
        self.script.cooldown
    }

    /// The state at `now`.
    pub fn state(&self, now: OffsetDateTime) -> State {
        let gate = self.lock();
        self.state_of(&gate, now)
    }

    fn state_of(&self, gate: &Gate, now: OffsetDateTime) -> State {
        if let Some((id, since)) = gate.running {
            return State::Running { id, since };
        }
        match gate.last_start.map(|start| later(start, self.script.cooldown)) {
            Some(until) if now < until => State::CoolingDown { until },
            _ => State::Idle,
        }
    }

    /// The atomic check-and-start. `check` sees the last accepted TOTP step and judges the code; it runs
    /// only when a run could start, so a refused request learns nothing about its code.
    pub fn admit(
        &self,
        now: OffsetDateTime,
        check: impl FnOnce(Option<u64>) -> Verdict,
    ) -> Result<Admission, Refusal> {
        let mut gate = self.lock();
        if gate.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        match self.state_of(&gate, now) {
            State::Running { since, .. } => return Err(Refusal::Running { since }),
            State::CoolingDown { until } => return Err(Refusal::CoolingDown { until }),
            State::Idle => {}
        }
        let totp_step = match check(gate.last_step) {
            Verdict::Accepted { step } => step,
            Verdict::Wrong => return Err(Refusal::WrongCode),
            Verdict::Replayed => return Err(Refusal::ReplayedCode),
        };
        let id = gate.next_id;
        gate.next_id = gate.next_id.saturating_add(1);
        gate.last_step = Some(totp_step);
        let previous_start = gate.last_start.replace(now);
        gate.running = Some((id, now));
        Ok(Admission {
            id,
            started: now,
            totp_step,
            previous_start,
        })
    }

    /// Gives up an admitted run before it is recorded: the gate is free and the cooldown is as it was. The
    /// code stays used.
    pub fn abandon(&self, admission: Admission) {
        self.restore(admission.id, admission.previous_start);
    }

    /// Frees the gate from run `id`, which never started, and puts the cooldown back as it was.
    fn restore(&self, id: u64, previous_start: Option<OffsetDateTime>) {
        let mut gate = self.lock();
        if gate.running.is_some_and(|(running, _)| running == id) {
            gate.running = None;
            gate.last_start = previous_start;
        }
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
            if let Some(pgid) = process_group(&child) {
                signal_group(pgid, Signal::SIGKILL);
            }
            let _ = child.wait().await;
            capture.abort();
            self.restore(id, previous_start);
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
        if self.lock().running.is_none_or(|(running, _)| running != id) {
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
        let running = {
            let mut gate = self.lock();
            gate.shutting_down = true;
            gate.running.map(|(id, _)| id)
        };
        self.stop.send_replace(true);
        if let Some(id) = running {
            tracing::info!(run = id, "stopping the running script for shutdown");
            self.wait_finished(id).await;
        }
    }

    fn spawn(&self, id: u64) -> std::io::Result<(Child, Arc<LiveOutput>, JoinHandle<()>)> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.script.log_dir)?;
        let path = self.log_path(id);
        // Output can hold secrets: the log is the owner's only.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let mut command = Command::new(&self.script.path);
        command
            .args(&self.script.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .env("AUTHRUN_RUN_ID", id.to_string());
        if !self.script.working_dir.as_os_str().is_empty() {
            command.current_dir(&self.script.working_dir);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AUTHRUN_") {
                command.env_remove(name);
            }
        }
        die_with_parent(&mut command);
        let mut child = command.spawn()?;
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
        let Some(pgid) = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw)
        else {
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
            Ok(Ok(exit)) => (status_of(exit), Some(exit)),
            Ok(Err(error)) => {
                tracing::error!(run = id, %error, "waiting for the script failed");
                (RunStatus::Failed, None)
            }
            Err(status) => {
                tracing::warn!(run = id, status = %status, "stopping the script's process group");
                let exit = stop_group(pgid, &mut child, self.script.kill_grace).await;
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
        if let Some(signal) = exit.and_then(|exit| exit.signal()) {
            record.error = Some(format!("ended by signal {signal}"));
        }
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
        self.release(id);
        self.finished.send_modify(|last| *last = (*last).max(id));
    }

    fn release(&self, id: u64) {
        let mut gate = self.lock();
        if gate.running.is_some_and(|(running, _)| running == id) {
            gate.running = None;
        }
    }

    fn lock_live(&self) -> MutexGuard<'_, Option<(u64, Arc<LiveOutput>)>> {
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `time + duration`, or the last representable time when that is past it (a history written by a
/// clock far in the future must not break every request).
pub fn later(time: OffsetDateTime, duration: Duration) -> OffsetDateTime {
    time::Duration::try_from(duration)
        .ok()
        .and_then(|duration| time.checked_add(duration))
        .unwrap_or_else(|| time::PrimitiveDateTime::MAX.assume_utc())
}

/// The log file of run `id`, inside the log directory.
pub fn log_name(id: u64) -> String {
    format!("{id}.log")
}

fn status_of(exit: ExitStatus) -> RunStatus {
    if exit.success() {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    }
}

/// SIGTERM to the whole group, then SIGKILL to whatever is left after `grace`. Returns the script's exit.
async fn stop_group(pgid: Pid, child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    signal_group(pgid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    let mut exit = None;
    loop {
        if exit.is_none() {
            exit = child.try_wait().ok().flatten();
        }
        if exit.is_some() && !group_alive(pgid) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            signal_group(pgid, Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match exit {
        Some(exit) => Some(exit),
        None => child.wait().await.ok(),
    }
}

/// The script's process group: it leads its own, so the group id is its pid.
fn process_group(child: &Child) -> Option<Pid> {
    child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw)
}

fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => {
            tracing::error!(%error, %signal, "signalling the script's process group failed")
        }
    }
}

/// Whether any process of the group is left (signal 0 checks without sending).
fn group_alive(pgid: Pid) -> bool {
    killpg(pgid, None).is_ok()
}

/// Kills what a run left behind when authrun died: the processes of its process group that still carry
/// its `AUTHRUN_RUN_ID`, so an unrelated group that reused the id is never touched. Returns how many.
fn kill_leftovers(pgid: u32, run_id: u64) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let marker = format!("AUTHRUN_RUN_ID={run_id}");
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let in_group = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| process_group_of(&stat))
            .is_some_and(|group| u32::try_from(group).ok() == Some(pgid));
        let ours = in_group
            && std::fs::read(entry.path().join("environ"))
                .is_ok_and(|environ| environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()));
        if ours && nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// The process group in a `/proc/PID/stat` line: the third field after the command's closing parenthesis.
fn process_group_of(stat: &str) -> Option<i32> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    after_command.split_whitespace().nth(2)?.parse().ok()
}

/// Asks the kernel to SIGKILL the script when authrun's thread that started it dies, so a crashed authrun
/// leaves no script running unseen. Tokio's worker threads live as long as the runtime.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec; it only makes the prctl system call,
    // which is async-signal-safe, and touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
}
