//! What a run leaves behind: the script's background processes end with the run (in its process group or
//! in a session of their own) unless `[script] leave_running` says otherwise, and the script inherits no
//! file descriptor but its stdin, stdout and stderr.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::common::process_ended;
use crate::serve::{KillOnDrop, run_in};
use crate::support::{
    SECRET, Server, Workspace, authrun, serve_configured, start_run, wait_for, wait_for_pid,
};

/// A script that starts one command in the background in its process group and one in a session of its
/// own, writes their pids, and succeeds at once.
const LEAVES_TWO_BEHIND: &str = "#!/bin/sh\n\
    sleep 301 &\n\
    echo $! > background.pid\n\
    setsid sleep 302 &\n\
    echo $! > setsid.pid\n";

/// Whether `pid` is gone from the process table (a zombie is still there: nobody collected its exit).
fn process_gone(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The parent of `pid`, from `/proc/PID/stat`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Waits until run `id` has a final status in the status answer, and returns it.
fn wait_for_end(server: &Server, id: u64) -> Value {
    wait_for(&format!("run {id} to end"), || {
        let answer = server.get("/get_deploy_status").json();
        let history = answer["history"].as_array()?.clone();
        let entry = run_in(&history, id)?.clone();
        (entry["status"] != "Deploying").then_some(entry)
    })
}

/// A run of [`LEAVES_TWO_BEHIND`] that ended "Deploy succeeded", and the pids it left, each killed when
/// the test ends should authrun have left it running.
/// Fields drop in order: the leftovers are killed first, then authrun, then its directory goes.
struct LeftBehind {
    _kill: [KillOnDrop; 2],
    server: Server,
    background: i32,
    setsid: i32,
    _workspace: Workspace,
}

/// Serves [`LEAVES_TWO_BEHIND`] with the `[script]` keys `extra`, runs it and waits for its end.
fn run_leaving_two_behind(extra: &str) -> LeftBehind {
    let workspace = Workspace::configured(LEAVES_TWO_BEHIND, &format!("cooldown_seconds = 0\n{extra}"));
    let server = serve_configured(&workspace, &[]);
    let id = start_run(&server, SECRET);
    let background = wait_for_pid(&workspace, "background.pid");
    let setsid = wait_for_pid(&workspace, "setsid.pid");
    let kill = [KillOnDrop(background), KillOnDrop(setsid)];
    let entry = wait_for_end(&server, id);
    assert_eq!(entry["status"], "Deploy succeeded", "{entry}");
    LeftBehind {
        _kill: kill,
        server,
        background,
        setsid,
        _workspace: workspace,
    }
}

#[test]
fn the_scripts_background_processes_end_with_its_run() {
    let left = run_leaving_two_behind("");
    let (server, background, setsid) = (&left.server, left.background, left.setsid);
    for (pid, what) in [(background, "sleep 301 &"), (setsid, "setsid sleep 302")] {
        assert!(
            process_gone(pid),
            "`{what}` (pid {pid}) is still there after the run ended (parent {:?})\n{}",
            parent_of(pid),
            server.stderr()
        );
    }
}

#[test]
fn leave_running_hands_the_background_processes_to_authrun_which_collects_them() {
    let left = run_leaving_two_behind("leave_running = true");
    let (server, background, setsid) = (&left.server, left.background, left.setsid);
    let authrun = server.pid().as_raw();
    for pid in [background, setsid] {
        assert!(
            !process_ended(pid),
            "pid {pid} ended although leave_running is set"
        );
        // Orphaned when the script exited, they were given to authrun (a child subreaper), not init.
        assert_eq!(parent_of(pid), Some(authrun), "the parent of pid {pid}");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).expect("kill it");
    }
    for pid in [background, setsid] {
        wait_for(&format!("authrun to collect the exit of pid {pid}"), || {
            process_gone(pid).then_some(())
        });
    }
}

#[test]
fn a_process_in_a_session_of_its_own_is_stopped_with_the_run_at_shutdown() {
    let script = "#!/bin/sh\nsetsid sleep 302 &\necho $! > setsid.pid\nexec sleep 300\n";
    let workspace = Workspace::configured(script, "cooldown_seconds = 0");
    let mut server = serve_configured(&workspace, &[]);
    let id = start_run(&server, SECRET);
    let setsid = wait_for_pid(&workspace, "setsid.pid");
    let _setsid = KillOnDrop(setsid);

    server.signal(Signal::SIGTERM);
    let exit = server.wait_exit();
    assert_eq!(exit.code(), Some(0), "{exit}\n{}", server.stderr());
    assert_eq!(
        run_in(&workspace.history(), id).expect("the run")["status"],
        "Interrupted"
    );
    assert!(
        process_ended(setsid),
        "`setsid sleep 302` (pid {setsid}) outlived the run and authrun"
    );
}

#[test]
#[allow(unsafe_code)]
fn the_script_inherits_no_descriptor_authrun_inherited() {
    let workspace = Workspace::configured("#!/bin/sh\nls -l /proc/self/fd > fds.txt\n", "");
    let inherited = std::fs::File::create(workspace.join("inherited.txt")).expect("create a file");
    let fd = inherited.as_raw_fd();
    let mut command = authrun(workspace.path());
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(workspace.config());
    // SAFETY: between fork and exec the closure only makes the dup2 or fcntl system call, both
    // async-signal-safe, on a descriptor the parent keeps open.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec; otherwise the copy at 7 is inherited across exec.
            let done = if fd == 7 {
                nix::libc::fcntl(7, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(fd, 7)
            };
            if done == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::start(&mut command);
    let authrun_fds = std::fs::read_link(format!("/proc/{}/fd/7", server.pid()))
        .expect("authrun has the inherited descriptor 7");
    assert!(authrun_fds.ends_with("inherited.txt"), "{authrun_fds:?}");

    let id = start_run(&server, SECRET);
    assert_eq!(wait_for_end(&server, id)["status"], "Deploy succeeded");
    // `ls -l` prints `... FD -> TARGET` per descriptor.
    let listed = workspace.read("fds.txt");
    let strangers: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.split_once(" -> "))
        .filter(|(head, target)| {
            let fd: u32 = head
                .rsplit(' ')
                .next()
                .and_then(|fd| fd.parse().ok())
                .expect("a descriptor number");
            // Beyond 0, 1 and 2 the script may hold only what it opened itself: the shell its script
            // file, `ls` the directory it lists.
            fd > 2 && !target.ends_with("deploy.sh") && !target.starts_with("/proc/")
        })
        .map(|(_, target)| target)
        .collect();
    assert!(
        strangers.is_empty(),
        "the script inherited descriptors: {strangers:?}\n{listed}"
    );
    assert!(listed.lines().count() >= 3, "{listed}");
    drop(inherited);
}
