//! What a run leaves behind: the processes its script started that outlive it, found through `/proc`,
//! stopped, and collected.
//!
//! A script may leave processes running: `cmd &` stays in its process group, `setsid cmd` or a daemon's
//! double fork leaves the group too. `serve` makes authrun a child subreaper ([`become_subreaper`]), so
//! every orphan of a script becomes authrun's child instead of init's. When a run ends, [`stop`] finds the
//! processes that carry the run's `AUTHRUN_RUN_ID` and are in its process group or descend from authrun,
//! and stops them: SIGTERM, then SIGKILL after the grace. An orphan that ends is authrun's zombie until
//! authrun collects it ([`reap_orphans`], on every SIGCHLD), and authrun collects exactly those: never
//! `waitpid(-1)`, and never a script, whose exit tokio collects ([`spawn`] registers them). After a
//! crash, [`kill_interrupted`] kills what an interrupted run left in its process group.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::process::{Child, Command};

/// Set once authrun is a child subreaper: only then do orphans of scripts become its children.
static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// The scripts started and not yet waited for: their exits are tokio's to collect, never [`reap`]'s.
static SCRIPTS: Mutex<Vec<Pid>> = Mutex::new(Vec::new());

/// How often [`stop`] looks whether the processes it signalled have ended.
const POLL: Duration = Duration::from_millis(50);

/// How long [`stop`] waits for processes it sent SIGKILL to be gone.
const AFTER_KILL: Duration = Duration::from_secs(2);

/// Makes authrun the parent of every orphan its scripts leave (`PR_SET_CHILD_SUBREAPER`), and collects
/// their exits from now on. It changes the whole process, so `serve` calls it, not the library's users;
/// it needs the tokio runtime.
pub fn become_subreaper() -> std::io::Result<()> {
    let mut children = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    nix::sys::prctl::set_child_subreaper(true)?;
    SUBREAPER.store(true, Ordering::Release);
    tokio::spawn(async move {
        while children.recv().await.is_some() {
            let _ = tokio::task::spawn_blocking(reap_orphans).await;
        }
    });
    Ok(())
}

/// Starts a script, registered so that [`reap`] leaves its exit to tokio; [`forget`] it once waited for.
pub fn spawn(command: &mut Command) -> std::io::Result<Child> {
    let mut scripts = SCRIPTS.lock();
    let child = command.spawn()?;
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        scripts.push(Pid::from_raw(pid));
    }
    Ok(child)
}

/// The script `pid` has been waited for: its pid is free to be reused by anything.
pub fn forget(pid: Pid) {
    SCRIPTS.lock().retain(|script| *script != pid);
}

/// Stops what run `run_id`, whose script led the process group `pgid`, left running: SIGTERM, then
/// SIGKILL to whatever is left after `grace` (processes started meanwhile included), and collects the
/// exits of those that were authrun's children. Returns how many processes it stopped.
pub async fn stop(run_id: u64, pgid: Pid, grace: impl Future<Output = ()>) -> usize {
    let mut stopped = HashSet::new();
    let mut grace = std::pin::pin!(grace);
    let mut signal = Signal::SIGTERM;
    let mut killed_at = None;
    loop {
        let left = find_blocking(run_id, pgid).await;
        if left.is_empty() {
            break;
        }
        for pid in left {
            // SIGTERM once each; SIGKILL until it is gone.
            if stopped.insert(pid) || signal == Signal::SIGKILL {
                let _ = kill(pid, signal);
            }
        }
        match killed_at {
            // How long SIGKILL takes is the kernel's business, not a rule: real time.
            Some(at) if tokio::time::Instant::now() >= at + AFTER_KILL => {
                tracing::error!(run = run_id, "processes the script left survive SIGKILL");
                break;
            }
            Some(_) => tokio::time::sleep(POLL).await,
            None => tokio::select! {
                () = &mut grace => {
                    signal = Signal::SIGKILL;
                    killed_at = Some(tokio::time::Instant::now());
                    continue;
                }
                // A look whether they are gone, not a rule about time: real time.
                () = tokio::time::sleep(POLL) => {}
            },
        }
        reap(stopped.iter().copied());
    }
    reap(stopped.iter().copied());
    stopped.len()
}

/// How many processes run `run_id` (process group `pgid`) left running.
pub async fn count(run_id: u64, pgid: Pid) -> usize {
    find_blocking(run_id, pgid).await.len()
}

/// Kills what a run left behind when authrun died: the processes of its process group that still carry
/// its `AUTHRUN_RUN_ID`, so an unrelated group that reused the id is never touched. Returns how many.
pub fn kill_interrupted(pgid: u32, run_id: u64) -> usize {
    let Ok(pgid) = i32::try_from(pgid) else {
        return 0;
    };
    let marker = marker(run_id);
    processes()
        .iter()
        .filter(|process| process.pgid == pgid && !process.zombie && carries(process.pid, &marker))
        .filter(|process| kill(Pid::from_raw(process.pid), Signal::SIGKILL).is_ok())
        .count()
}

/// Collects the exits of authrun's children that ended and are not scripts. Only zombies whose parent is
/// authrun are looked at, each by its pid.
fn reap_orphans() {
    let me = std::process::id();
    let zombies = processes()
        .into_iter()
        .filter(|process| process.zombie && u32::try_from(process.ppid).ok() == Some(me))
        .map(|process| Pid::from_raw(process.pid));
    reap(zombies);
}

/// Collects the exit of each of `pids` that is an ended child of authrun, skipping scripts (tokio waits
/// for those). For any other pid `waitpid` does nothing: it is running, or not authrun's child.
fn reap(pids: impl IntoIterator<Item = Pid>) {
    let scripts = SCRIPTS.lock();
    for pid in pids {
        if !scripts.contains(&pid) {
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        }
    }
}

async fn find_blocking(run_id: u64, pgid: Pid) -> Vec<Pid> {
    tokio::task::spawn_blocking(move || find(run_id, pgid))
        .await
        .unwrap_or_default()
}

/// The live processes of run `run_id`: they carry its `AUTHRUN_RUN_ID`, and are in its process group
/// `pgid` or (authrun being a subreaper) descend from authrun. Both, so that another authrun's run with
/// the same id, or in tests another runner's in the same process, is never taken for this one.
fn find(run_id: u64, pgid: Pid) -> Vec<Pid> {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let adopted = SUBREAPER.load(Ordering::Acquire);
    let all = processes();
    let parents: HashMap<i32, i32> = all.iter().map(|p| (p.pid, p.ppid)).collect();
    let marker = marker(run_id);
    all.iter()
        .filter(|p| !p.zombie && p.pid != me)
        .filter(|p| p.pgid == pgid.as_raw() || (adopted && descends(p.pid, me, &parents)))
        .filter(|p| carries(p.pid, &marker))
        .map(|p| Pid::from_raw(p.pid))
        .collect()
}

/// Whether `pid`'s chain of parents reaches `ancestor`.
fn descends(pid: i32, ancestor: i32, parents: &HashMap<i32, i32>) -> bool {
    let mut current = pid;
    // A chain longer than the process table is a cycle of reused pids between two reads.
    for _ in 0..parents.len() {
        match parents.get(&current) {
            Some(&parent) if parent == ancestor => return true,
            Some(&parent) if parent > 1 => current = parent,
            _ => return false,
        }
    }
    false
}

/// The environment entry every process of run `run_id` inherits.
fn marker(run_id: u64) -> String {
    format!("AUTHRUN_RUN_ID={run_id}")
}

/// Whether process `pid` started with `marker` in its environment.
fn carries(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|environ| environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
}

/// One line of `/proc/PID/stat`, the fields needed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: i32,
    ppid: i32,
    pgid: i32,
    zombie: bool,
}

/// Every process in `/proc` (those that end while it is read are left out).
fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            parse_stat(pid, &stat)
        })
        .collect()
}

/// After the command, which is in parentheses and may hold any character: the state, the parent, the
/// process group.
fn parse_stat(pid: i32, stat: &str) -> Option<Process> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some(Process {
        pid,
        ppid,
        pgid,
        zombie: matches!(state, "Z" | "X"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stat_line_whatever_the_command_is_called() {
        let stat = "4242 (a) b (c)) S 17 4240 4240 0 -1 4194304 120 0 0 0";
        assert_eq!(
            parse_stat(4242, stat),
            Some(Process {
                pid: 4242,
                ppid: 17,
                pgid: 4240,
                zombie: false
            })
        );
        assert!(parse_stat(1, "1 (init) Z 0 1 1").is_some_and(|p| p.zombie));
    }

    #[test]
    fn descent_follows_parents_and_stops_at_init_and_at_cycles() {
        let parents = HashMap::from([(10, 5), (5, 3), (3, 1), (20, 1), (30, 31), (31, 30)]);
        assert!(descends(10, 3, &parents));
        assert!(!descends(20, 3, &parents));
        assert!(!descends(30, 3, &parents));
    }
}
