//! What a run's script gets and leaves behind: it inherits no file descriptor but its stdin, stdout and
//! stderr.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;

use serde_json::Value;

use crate::serve::{run_in, start_run};
use crate::support::{SECRET, Server, Workspace, authrun, wait_for};

/// Waits until run `id` has a final status in the status answer, and returns it.
fn wait_for_end(server: &Server, id: u64) -> Value {
    wait_for(&format!("run {id} to end"), || {
        let answer = server.get("/get_deploy_status").json();
        let history = answer["history"].as_array()?.clone();
        let entry = run_in(&history, id)?.clone();
        (entry["status"] != "Deploying").then_some(entry)
    })
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
