//! The script's processes: started in a process group of their own and stopped as a group (SIGTERM, a
//! grace, SIGKILL). What they leave behind is `leftovers`' business.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::config::ScriptConfig;
use crate::model::run::RunStatus;

/// The command that starts run `id` of `script`: no stdin, piped output, no other descriptor, its own
/// process group, none of authrun's own `AUTHRUN_*` variables but `AUTHRUN_RUN_ID`, killed if authrun
/// dies.
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
    prepare_child(&mut command);
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

/// Between fork and exec: asks the kernel to SIGKILL the script when authrun's thread that started it
/// dies, so a crashed authrun leaves no script running unseen (tokio's worker threads live as long as the
/// runtime), and closes every descriptor above stderr on exec, so the script inherits none that authrun
/// itself inherited or opened.
#[allow(unsafe_code)]
fn prepare_child(command: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec; it only makes system calls, which are
    // async-signal-safe, and touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            close_on_exec_above_stderr();
            Ok(())
        });
    }
}

/// Marks descriptors 3 and up close-on-exec (rather than closing them: the standard library reports a
/// failed exec through one of them). One `close_range` call since Linux 5.11; before, one `fcntl` per
/// possible descriptor up to the soft limit, at most the kernel's default `nr_open`.
#[allow(unsafe_code)]
fn close_on_exec_above_stderr() {
    use nix::libc;
    // SAFETY: plain system calls on descriptor numbers; no memory is passed but the rlimit struct, which
    // lives on this stack frame.
    unsafe {
        let flags = libc::CLOSE_RANGE_CLOEXEC;
        if libc::syscall(libc::SYS_close_range, 3, libc::c_uint::MAX, flags) == 0 {
            return;
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let highest = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20)
        } else {
            1 << 20
        };
        let highest = libc::c_int::try_from(highest).unwrap_or(libc::c_int::MAX);
        for fd in 3..highest {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// The signal that ended the script, as the run's error says it.
pub fn signal_note(exit: ExitStatus) -> Option<String> {
    exit.signal().map(|signal| format!("ended by signal {signal}"))
}
