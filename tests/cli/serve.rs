//! `authrun serve`: the first start, a deploy over HTTP, shutdown, a crash, and start-up failures.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::common::process_ended;
use crate::support::{
    DEPLOY_SCRIPT, SECRET, Server, Workspace, authrun, run, serve_configured, serve_refused, start_run,
    wait_for, wait_for_pid,
};

/// A script that records its pid, then runs for longer than any test waits (`exec`, so its pid stays the
/// script's and nothing outlives it when it is killed).
const LONG_SCRIPT: &str = "#!/bin/sh\necho $$ > script.pid\nexec sleep 30\n";

/// `authrun serve` with no config, as on the first start in a directory.
fn serve(workspace: &Workspace) -> Server {
    Server::start(authrun(workspace.path()).args(["serve", "--bind", "127.0.0.1:0"]))
}

/// Kills a process the test started indirectly, should the product leave it running.
pub(crate) struct KillOnDrop(pub(crate) i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !process_ended(self.0) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

pub(crate) fn run_in(history: &[Value], id: u64) -> Option<&Value> {
    history.iter().find(|entry| entry["id"].as_u64() == Some(id))
}

#[test]
fn first_start_generates_a_secret_whose_codes_run_the_deploy() {
    let workspace = Workspace::with_example_script();
    let mut server = serve(&workspace);
    let startup = server.startup.join("\n");
    assert!(
        startup.contains("generated"),
        "stdout did not say a secret was generated:\n{startup}"
    );

    let state_dir = std::fs::metadata(workspace.join(".authrun"))
        .expect(".authrun exists")
        .permissions()
        .mode();
    assert_eq!(state_dir & 0o777, 0o700, "mode of .authrun: {state_dir:o}");
    let secret_file = workspace.join(".authrun/secret");
    let mode = std::fs::metadata(&secret_file)
        .expect(".authrun/secret exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode of .authrun/secret: {mode:o}");
    let secret = workspace.read(".authrun/secret");
    let bytes = authrun::model::secret::decode_secret(&secret).expect("the stored secret is base32");
    assert_eq!(bytes.len() * 8, 160);
    assert!(
        !startup.contains(secret.trim()),
        "the secret was printed to stdout, which is not a terminal:\n{startup}"
    );

    let health = server.get("/healthz");
    assert_eq!(health.status, 200, "{health:?}");

    let id = start_run(&server, &secret);
    wait_for("the deploy to succeed", || {
        let answer = server.get("/get_deploy_status").json();
        let history = answer["history"].as_array()?.clone();
        let entry = run_in(&history, id)?;
        (entry["status"] == "Deploy succeeded").then_some(())
    });
    let history = workspace.history();
    let entry = run_in(&history, id).unwrap_or_else(|| panic!("run {id} not in history.json"));
    assert_eq!(entry["status"], "Deploy succeeded", "{entry}");

    server.signal(Signal::SIGTERM);
    let exit = server.wait_exit();
    assert!(exit.success(), "{exit}\n{}", server.stderr());

    let second = serve(&workspace);
    let startup = second.startup.join("\n");
    assert!(
        !startup.contains("generated"),
        "the second start generated a new secret:\n{startup}"
    );
    assert_eq!(workspace.read(".authrun/secret"), secret, "the secret changed");
}

#[test]
fn a_new_secret_without_a_terminal_names_the_qr_command_with_its_config() {
    let workspace = Workspace::new();
    workspace.script("deploy.sh", DEPLOY_SCRIPT);
    let config = workspace.write("my config.toml", "[script]\npath = \"deploy.sh\"\n");
    let mut server = Server::start(
        authrun(workspace.path())
            .args(["serve", "--bind", "127.0.0.1:0", "--config"])
            .arg(&config),
    );
    let hint = format!(
        "Run `authrun qr --config '{}'` in a terminal to show its QR code.",
        config.display()
    );
    assert!(
        server.startup.contains(&hint),
        "no line {hint:?} in:\n{}",
        server.startup.join("\n")
    );
    // The command as shown finds the same secret: its URI carries the generated one.
    let shown = run(authrun(workspace.path()).args(["qr", "--config"]).arg(&config));
    let secret = workspace.read(".authrun/secret");
    assert!(
        shown.stdout.contains(&format!("secret={}", secret.trim())),
        "{shown:#?}"
    );
    server.signal(Signal::SIGTERM);
    server.wait_exit();
}

#[test]
fn sigterm_stops_the_running_script_and_records_it_as_interrupted() {
    let workspace = Workspace::configured(LONG_SCRIPT, "cooldown_seconds = 0");
    let mut server = serve_configured(&workspace, &[]);
    let id = start_run(&server, SECRET);
    let script = wait_for_pid(&workspace, "script.pid");

    server.signal(Signal::SIGTERM);
    let exit = server.wait_exit();
    assert_eq!(exit.code(), Some(0), "{exit}\n{}", server.stderr());

    let history = workspace.history();
    let entry = run_in(&history, id).unwrap_or_else(|| panic!("run {id} not in history.json"));
    assert_eq!(entry["status"], "Interrupted", "{entry}");
    assert!(entry["finished"].is_string(), "no finished time: {entry}");
    assert!(
        process_ended(script),
        "the script (pid {script}) is still running after authrun exited"
    );
}

#[test]
fn the_script_dies_when_authrun_is_killed() {
    let workspace = Workspace::configured(LONG_SCRIPT, "cooldown_seconds = 0");
    let mut server = serve_configured(&workspace, &[]);
    start_run(&server, SECRET);
    let script = wait_for_pid(&workspace, "script.pid");

    server.signal(Signal::SIGKILL);
    let exit = server.wait_exit();
    assert!(!exit.success(), "{exit}");
    wait_for(&format!("the script (pid {script}) to end"), || {
        process_ended(script).then_some(())
    });
}

#[test]
fn what_a_killed_authrun_left_running_is_killed_on_the_next_start() {
    // The script starts a command in the background and waits for it, as a deploy running a build would.
    // The kernel kills the script with authrun, but not the command, which the next start must find.
    let script = "#!/bin/sh\nsleep 30 &\necho $! > child.pid\nwait\n";
    let workspace = Workspace::configured(script, "cooldown_seconds = 0");
    let mut server = serve_configured(&workspace, &[]);
    let id = start_run(&server, SECRET);
    let child = wait_for_pid(&workspace, "child.pid");
    let _leftover = KillOnDrop(child);
    wait_for("the script's pid in the history", || {
        run_in(&workspace.history(), id)?
            .get("pid")
            .and_then(Value::as_u64)
    });

    server.signal(Signal::SIGKILL);
    server.wait_exit();
    assert!(
        !process_ended(child),
        "the background command outlives authrun until the next start"
    );
    let _restarted = serve_configured(&workspace, &[]);
    wait_for(&format!("the script's command (pid {child}) to end"), || {
        process_ended(child).then_some(())
    });
    let history = workspace.history();
    assert_eq!(run_in(&history, id).expect("the run")["status"], "Interrupted");
}

#[test]
fn sigterm_as_soon_as_serving_is_announced_exits_0() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let mut server = serve_configured(&workspace, &[]);
    server.signal(Signal::SIGTERM);
    let exit = server.wait_exit();
    assert_eq!(exit.code(), Some(0), "{exit}\n{}", server.stderr());
}

#[test]
fn serve_with_the_config_named_as_users_type_it_runs_the_script() {
    // `--config authrun.toml`, relative to the working directory, naming `path = "deploy.sh"`.
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let server = Server::start(authrun(workspace.path()).args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--config",
        "authrun.toml",
    ]));
    let id = start_run(&server, SECRET);
    wait_for("the deploy to succeed", || {
        let history = workspace.history();
        let entry = run_in(&history, id)?;
        (entry["status"] == "Deploy succeeded").then_some(())
    });
}

#[test]
fn a_corrupt_history_stops_start_up_and_is_left_as_it_was() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let corrupt = "[\n  {\"time\": oops}\n]\n";
    let history = workspace.write("history.json", corrupt);
    let out = serve_refused(&workspace);
    assert_eq!(out.code(), 2, "{out:#?}");
    let shown = history.display().to_string();
    assert!(out.stderr.contains(&shown), "no `{shown}`: {out:#?}");
    assert!(out.stderr.contains("line 2"), "no line: {out:#?}");
    assert_eq!(
        std::fs::read(&history).expect("history.json is still there"),
        corrupt.as_bytes(),
        "history.json was changed"
    );
}

#[test]
fn serve_on_an_address_in_use_says_which() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let out = run(authrun(workspace.path())
        .args(["serve", "--bind", &addr, "--config"])
        .arg(workspace.config()));
    assert_ne!(out.code(), 0, "{out:#?}");
    assert!(out.stderr.contains(&addr), "no `{addr}`: {out:#?}");
    drop(taken);
}

#[test]
fn the_log_has_a_line_per_request_except_for_successful_status_polls() {
    let workspace = Workspace::with_example_script();
    let mut server = serve(&workspace);
    for _ in 0..3 {
        assert_eq!(server.get("/get_deploy_status").status, 200);
    }
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.get("/no/such/page?code=123456").status, 404);
    // Log lines are written by a thread of their own; they are all out once authrun has exited.
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
    let log = server.stderr();
    let requests: Vec<&str> = log.lines().filter(|line| line.contains(" request ")).collect();
    assert!(
        requests
            .iter()
            .any(|line| line.contains(r#"method=GET path="/" status=200"#)),
        "no line for the page:\n{log}"
    );
    assert!(
        requests
            .iter()
            .any(|line| line.contains(r#"path="/no/such/page" status=404"#)),
        "no line for the unknown page:\n{log}"
    );
    assert!(
        !log.contains("get_deploy_status"),
        "status polls were logged:\n{log}"
    );
    assert!(!log.contains("123456"), "a query string was logged:\n{log}");
}

/// Puts what `kind` names at `path`: a named pipe, a directory, or a symlink to a device.
fn plant(kind: &str, path: &std::path::Path) {
    match kind {
        "named pipe" => {
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo")
        }
        "directory" => std::fs::create_dir(path).expect("mkdir"),
        _ => std::os::unix::fs::symlink("/dev/null", path).expect("symlink to /dev/null"),
    }
}

#[test]
fn a_state_path_that_is_not_a_regular_file_stops_start_up_at_once_naming_it() {
    // A named pipe would block the read (or the open) forever; a directory or a device cannot hold state.
    let cases = [
        ("history.json", "named pipe"),
        (".authrun/regulation.json", "named pipe"),
        (".authrun/audit.log", "named pipe"),
        ("history.json", "directory"),
        ("history.json", "device"),
    ];
    for (relative, kind) in cases {
        let workspace = Workspace::configured("#!/bin/sh\necho deployed\n", "");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(workspace.join(".authrun"))
            .expect("create the state dir");
        let path = workspace.join(relative);
        plant(kind, &path);
        let out = run(authrun(workspace.path())
            .args(["serve", "--bind", "127.0.0.1:0", "--config"])
            .arg(workspace.config()));
        assert_eq!(out.code(), 2, "{relative} ({kind}): {out:#?}");
        let shown = path.display().to_string();
        assert!(out.stderr.contains(&shown), "no `{shown}`: {out:#?}");
        assert!(out.stderr.contains(kind), "no `{kind}`: {out:#?}");
    }
}
