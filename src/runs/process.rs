//! The script's processes: started in a process group of their own, stopped as a group (SIGTERM, a
//! grace, SIGKILL), and found again after a crash.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::config::ScriptConfig;
use crate::model::run::RunStatus;

/// The command that starts run `id` of `script`: no stdin, piped output, its own process group, none of
/// authrun's own `AUTHRUN_*` variables but `AUTHRUN_RUN_ID`, killed if authrun dies.
pub fn command(script: &ScriptConfig, id: u64) -> Command {
    let mut command = Command::new(&script.path);
    command
        .args(&script.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .env("AUTHRUN_RUN_ID", id.to_string());
    if !script.working_dir.as_os_str().is_empty() {
        command.current_dir(&script.working_dir);
    }
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AUTHRUN_") {
            command.env_remove(name);
        }
    }
    die_with_parent(&mut command);
    command
}

/// How the script's exit reads in the history.
pub fn status_of(exit: ExitStatus) -> RunStatus {
    if exit.success() {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    }
}

/// SIGTERM to the whole group, then SIGKILL to whatever is left when `grace` ends (a wait on the
/// [`Clock`](crate::clock::Clock)). Returns the script's exit.
pub async fn stop_group(pgid: Pid, child: &mut Child, grace: impl Future<Output = ()>) -> Option<ExitStatus> {
    signal_group(pgid, Signal::SIGTERM);
    let mut grace = std::pin::pin!(grace);
    let mut exit = None;
    loop {
        if exit.is_none() {
            exit = child.try_wait().ok().flatten();
        }
        if exit.is_some() && !group_alive(pgid) {
            break;
        }
        tokio::select! {
            () = &mut grace => {
                signal_group(pgid, Signal::SIGKILL);
                break;
            }
            // A look whether the group is gone, not a rule about time: real time.
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    match exit {
        Some(exit) => Some(exit),
        None => child.wait().await.ok(),
    }
}

/// The script's process group: it leads its own, so the group id is its pid.
pub fn process_group(child: &Child) -> Option<Pid> {
    child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw)
}

pub fn signal_group(pgid: Pid, signal: Signal) {
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
pub fn kill_leftovers(pgid: u32, run_id: u64) -> usize {
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

/// The signal that ended the script, as the run's error says it.
pub fn signal_note(exit: ExitStatus) -> Option<String> {
    exit.signal().map(|signal| format!("ended by signal {signal}"))
}
