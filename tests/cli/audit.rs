//! The audit log on a real filesystem, through the real binary: when its disk is full no code is checked
//! (so none is used up, and nothing passes unaudited), failures still count when the regulation state
//! cannot be saved, and the log rotates by size.
//!
//! The full disk is a small tmpfs mounted for the test (the tests run as root) and always unmounted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::wrong_code;
use crate::support::{SECRET, Server, Workspace, authrun, code_now, wait_for};

use crate::support::DEPLOY_SCRIPT as SCRIPT;

/// A tmpfs of `size` mounted on a directory, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount a tmpfs on {} (needs root)",
            dir.display()
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Writes a file until the filesystem has no room left; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let chunk = [0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.write_all(&[0]);
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.dir).status();
        if !unmounted.is_ok_and(|status| status.success()) {
            // Something still holds it (a process that outlived its test): detach it now.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn serve(workspace: &Workspace) -> Server {
    Server::start(
        authrun(workspace.path())
            .args(["serve", "--bind", "127.0.0.1:0", "--config"])
            .arg(workspace.config()),
    )
}

/// A workspace whose config puts the state dir in `state/` and `extra` after it.
fn workspace_with(extra: &str) -> Workspace {
    let workspace = Workspace::new();
    workspace.script("deploy.sh", SCRIPT);
    workspace.write(
        "authrun.toml",
        &format!(
            "state_dir = \"state\"\n\n[script]\npath = \"deploy.sh\"\nlog_dir = \"runs\"\n\n\
             [totp]\nsecret = \"{SECRET}\"\n\n{extra}\n"
        ),
    );
    workspace
}

fn lines_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}")))
        .collect()
}

fn post(server: &Server, code: &str) -> (u16, Value) {
    let reply = server.post_form("/verify", &format!("code={code}"));
    let status = reply.status;
    (status, reply.json())
}

#[test]
fn with_the_audit_log_on_a_full_disk_no_code_is_checked_and_none_is_used_up() {
    let workspace = workspace_with("");
    let disk = Tmpfs::mount(&workspace.join("state"), "1m");
    let server = serve(&workspace);
    let filler = disk.fill();

    let valid = code_now(SECRET);
    let (status, body) = post(&server, &valid);
    assert_eq!(
        (status, &body["error"]),
        (503, &Value::from("audit_unavailable")),
        "{body}"
    );
    for _ in 0..43 {
        let (status, body) = post(&server, &wrong_code());
        assert_eq!(status, 503, "{body}");
    }
    let stderr = server.stderr();
    let complaints = stderr
        .lines()
        .filter(|line| line.to_lowercase().contains("audit log"))
        .count();
    assert!(
        (1..=4).contains(&complaints),
        "{complaints} lines about the audit log for 44 refusals:\n{stderr}"
    );

    std::fs::remove_file(filler).expect("make room");
    // The valid code was not looked at behind the 503, so it still works, and the 43 wrong codes paused
    // nobody.
    let (status, body) = post(&server, &valid);
    assert_eq!(status, 200, "{body}\n{}", server.stderr());
    let history = wait_for("the run to end", || {
        let history = workspace.history();
        (history.len() == 1 && history[0]["status"] == "Deploy succeeded").then_some(history)
    });
    assert_eq!(history[0]["id"], 1);
    let lines = lines_of(&workspace.join("state/audit.log"));
    let outcomes: Vec<&Value> = lines.iter().map(|line| &line["outcome"]).collect();
    assert_eq!(outcomes, ["started"], "{lines:#?}");
    drop(server);
}

#[test]
fn with_the_regulation_state_on_a_full_disk_failures_still_count() {
    let workspace = workspace_with("[audit]\nfile = \"audit.log\"\n");
    let disk = Tmpfs::mount(&workspace.join("state"), "1m");
    let server = serve(&workspace);
    disk.fill();

    for attempt in 1..=5 {
        let (status, body) = post(&server, &wrong_code());
        assert_eq!(status, 401, "wrong code #{attempt}: {body}\n{}", server.stderr());
    }
    let (status, body) = post(&server, &code_now(SECRET));
    assert_eq!((status, &body["error"]), (429, &Value::from("banned")), "{body}");
    assert!(
        !std::fs::read_to_string(workspace.join("state/regulation.json"))
            .unwrap_or_default()
            .contains("127.0.0.1"),
        "the full disk took the ban"
    );
    let lines = lines_of(&workspace.join("audit.log"));
    assert_eq!(
        lines.iter().filter(|line| line["event"] == "ban_started").count(),
        1,
        "{lines:#?}"
    );
    drop(server);
}

#[test]
fn the_audit_log_rotates_by_size_and_keeps_the_newest_files() {
    let workspace = workspace_with("[audit]\nmax_bytes = 4096\nkeep_files = 2\n");
    let server = serve(&workspace);
    let (status, body) = post(&server, &code_now(SECRET));
    assert_eq!(status, 200, "{body}");
    // Every refusal during the cooldown is an audit line of about 100 bytes.
    for _ in 0..200 {
        let (status, body) = post(&server, &code_now(SECRET));
        assert!(status == 409 || status == 429, "{status} {body}");
    }
    let state = workspace.join("state");
    let size = |name: &str| std::fs::metadata(state.join(name)).map(|m| m.len());
    for name in ["audit.log", "audit.log.1", "audit.log.2"] {
        let bytes = size(name).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(bytes <= 4096, "{name} holds {bytes} bytes");
        assert!(bytes > 0, "{name} is empty");
    }
    assert!(size("audit.log.3").is_err(), "more than keep_files rotated files");
    let newest = lines_of(&state.join("audit.log"));
    assert!(
        newest.iter().all(|line| line["outcome"] != "started"),
        "{newest:#?}"
    );
    let mut all = lines_of(&state.join("audit.log.2"));
    all.extend(lines_of(&state.join("audit.log.1")));
    all.extend(newest);
    let times: Vec<&str> = all
        .iter()
        .map(|line| line["time"].as_str().unwrap_or(""))
        .collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    assert_eq!(
        times, sorted,
        "rotated files are in order, oldest in the highest number"
    );
}
