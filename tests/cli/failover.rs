//! When an instance of several dies: a run whose instance was killed mid-run is marked "Interrupted" by
//! another once its lease has run out, its cooldown still holds, and its action is free again. Real
//! `authrun serve` processes on a real PostgreSQL (`common::postgres`).

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::common::postgres::{Postgres, Relay};
use crate::common::process_ended;
use crate::instances::{history, instance};
use crate::support::{
    SECRET, Server, Workspace, code_at, code_now, now_unix, post_code, serve_configured, wait_for,
    wait_for_pid,
};

/// A script that writes its pid and waits for a file that never comes.
const BLOCKING_SCRIPT: &str = "#!/bin/sh\necho $$ > script.pid\nwhile [ ! -f go ]; do sleep 0.1; done\n";

/// A short lease, so that the test waits seconds, not the default 30; a cooldown long enough that it
/// cannot pass while the test runs.
const KEYS: &str = "cooldown_seconds = 3600";

fn with_lease(workspace: &Workspace) {
    let config = workspace.read("authrun.toml");
    workspace.write("authrun.toml", &format!("{config}lease_seconds = 2\n"));
}

fn state(server: &Server) -> Value {
    server.get("/get_deploy_status").json()["state"].clone()
}

/// Serves `a` and `b` with short leases and starts a run on A that B sees going: the servers, the run's
/// id and its script's pid.
fn run_on_a_seen_by_b(a: &Workspace, b: &Workspace) -> (Server, Server, u64, i32) {
    with_lease(a);
    with_lease(b);
    let server_a = serve_configured(a, &[]);
    let server_b = serve_configured(b, &[]);
    let (status, answer) = post_code(&server_a, &code_now(SECRET));
    assert_eq!(status, 200, "{answer}");
    let run_id = answer["run_id"].as_u64().expect("a run id");
    let script = wait_for_pid(a, "script.pid");
    wait_for("B to show A's run going", || {
        (state(&server_b) == "running").then_some(())
    });
    (server_a, server_b, run_id, script)
}

#[test]
fn a_run_whose_instance_is_killed_is_interrupted_by_the_other_which_keeps_its_cooldown_and_runs_after_it() {
    let postgres = Postgres::start();
    let (a, b) = (
        instance(&postgres, BLOCKING_SCRIPT, KEYS),
        instance(&postgres, BLOCKING_SCRIPT, KEYS),
    );
    let (mut server_a, server_b, run_id, script) = run_on_a_seen_by_b(&a, &b);

    server_a.signal(Signal::SIGKILL);
    assert!(!server_a.wait_exit().success());
    // The script dies with its instance, as with the files.
    wait_for(&format!("A's script (pid {script}) to end"), || {
        process_ended(script).then_some(())
    });

    let run = wait_for("B to mark A's run interrupted", || {
        let history = history(&server_b);
        let run = history.iter().find(|run| run["id"].as_u64() == Some(run_id))?;
        (run["status"] == "Interrupted").then(|| run.clone())
    });
    assert!(run["finished"].is_string(), "{run}");
    assert!(
        run["error"].as_str().is_some_and(|error| error.contains("lease")),
        "{run}"
    );
    assert_eq!(
        postgres.psql("authrun", "SELECT count(*) FROM runs WHERE running"),
        "0"
    );

    // The cooldown counts from the run's start: B refuses a new run.
    let later = code_at(SECRET, now_unix() + 30);
    let (status, answer) = post_code(&server_b, &later);
    assert_eq!(
        (status, answer["error"].as_str()),
        (429, Some("cooling_down")),
        "{answer}"
    );
    assert_eq!(state(&server_b), "cooling_down");

    // Once the cooldown has passed (the run is moved two hours back), B starts a run of the action.
    postgres.psql(
        "authrun",
        "UPDATE runs SET started = started - interval '2 hours', \
         record = jsonb_set(record, '{time}', to_jsonb(to_char((started - interval '2 hours') \
         AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))); NOTIFY authrun, 'runs'",
    );
    wait_for("B to show the action idle", || {
        (state(&server_b) == "idle").then_some(())
    });
    let (status, answer) = post_code(&server_b, &later);
    assert_eq!(status, 200, "{answer}\n{}", server_b.stderr());
    let second = answer["run_id"].as_u64().expect("a run id");
    assert_ne!(second, run_id);
    b.write("go", "");
    wait_for("B's run to end", || {
        let history = history(&server_b);
        let run = history.iter().find(|run| run["id"].as_u64() == Some(second))?;
        (run["status"] == "Deploy succeeded").then_some(())
    });
}

#[test]
fn an_instance_cut_off_from_the_database_stops_its_run_before_the_other_takes_the_action_over() {
    let postgres = Postgres::start();
    let relay = Relay::to(&postgres);
    let (a, b) = (
        instance(&postgres, BLOCKING_SCRIPT, KEYS),
        instance(&postgres, BLOCKING_SCRIPT, KEYS),
    );
    // A reaches the database through the relay, B directly.
    let config = a.read("authrun.toml");
    a.write(
        "authrun.toml",
        &config.replace(&postgres.url(), &relay.url(&postgres)),
    );
    let (server_a, server_b, run_id, script) = run_on_a_seen_by_b(&a, &b);

    relay.cut();
    let run = wait_for("B to mark A's run interrupted", || {
        let history = history(&server_b);
        let run = history.iter().find(|run| run["id"].as_u64() == Some(run_id))?;
        (run["status"] == "Interrupted").then(|| run.clone())
    });
    // By then A has stopped its script: the action never runs on two instances at once.
    assert!(
        process_ended(script),
        "A's script (pid {script}) still runs while B freed the action: {run}\n{}",
        server_a.stderr()
    );
    assert!(
        server_a.stderr().contains("lease cannot be renewed"),
        "{}",
        server_a.stderr()
    );

    // A reaches the database again: it shows the run ended as B marked it (the first end written wins),
    // and the action cooling down, not running.
    relay.restore();
    wait_for("A to show the run interrupted", || {
        let history = history(&server_a);
        let run = history.iter().find(|run| run["id"].as_u64() == Some(run_id))?;
        (run["status"] == "Interrupted" && state(&server_a) == "cooling_down").then_some(())
    });
}
