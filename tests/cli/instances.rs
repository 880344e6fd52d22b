//! Several instances on one PostgreSQL (`[store] kind = "postgres"`): real `authrun serve` processes,
//! each with its own working directory, on a real database started by the test (`common::postgres`).

use std::sync::Arc;

use serde_json::Value;

use crate::common::postgres::Postgres;
use crate::support::{SECRET, Server, Workspace, code_now, post_code, serve_configured, wait_for};

/// A script that runs long enough for every concurrent request to arrive while it goes.
const SLOW_SCRIPT: &str = "#!/bin/sh\nsleep 2\necho deployed\n";

/// A workspace whose authrun keeps its state in `postgres`, with `script_keys` in `[script]`.
pub(crate) fn instance(postgres: &Postgres, script: &str, script_keys: &str) -> Workspace {
    let workspace = Workspace::configured(script, script_keys);
    on_database(&workspace, postgres);
    workspace
}

/// Points `workspace`'s configuration at `postgres` (`[store] kind = "postgres"`).
pub(crate) fn on_database(workspace: &Workspace, postgres: &Postgres) {
    let config = workspace.read("authrun.toml");
    workspace.write(
        "authrun.toml",
        &format!(
            "{config}\n[store]\nkind = \"postgres\"\nurl = \"{}\"\n",
            postgres.url()
        ),
    );
}

/// The runs `server` shows in `/get_deploy_status`.
pub(crate) fn history(server: &Server) -> Vec<Value> {
    let reply = server.get("/get_deploy_status");
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["history"].as_array().cloned().unwrap_or_default()
}

#[test]
fn two_instances_starting_together_on_a_fresh_database_both_serve_and_migrate_once() {
    let postgres = Postgres::start();
    let (a, b) = (
        instance(&postgres, SLOW_SCRIPT, ""),
        instance(&postgres, SLOW_SCRIPT, ""),
    );
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| serve_configured(&a, &[]));
        let b = scope.spawn(|| serve_configured(&b, &[]));
        (a.join().expect("A starts"), b.join().expect("B starts"))
    });
    assert_eq!(a.get("/get_deploy_status").status, 200);
    assert_eq!(b.get("/get_deploy_status").status, 200);
    let applied = postgres.psql(
        "authrun",
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
    );
    assert_eq!(applied, "1,100,200,201,202", "each migration is applied once");
    let tables = postgres.psql(
        "authrun",
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('runs', 'used_steps', 'documents')",
    );
    assert_eq!(tables, "3");
}

#[test]
fn one_code_posted_100_times_across_two_instances_starts_exactly_one_run() {
    let postgres = Postgres::start();
    let (a, b) = (
        instance(&postgres, SLOW_SCRIPT, ""),
        instance(&postgres, SLOW_SCRIPT, ""),
    );
    let servers = Arc::new([serve_configured(&a, &[]), serve_configured(&b, &[])]);
    let code = code_now(SECRET);
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let posts: Vec<_> = (0..100)
            .map(|n| {
                let (servers, code) = (Arc::clone(&servers), code.clone());
                scope.spawn(move || post_code(&servers[n % 2], &code))
            })
            .collect();
        posts
            .into_iter()
            .map(|post| post.join().expect("a post"))
            .collect()
    });
    let started: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, answer)| answer)
        .collect();
    assert_eq!(started.len(), 1, "exactly one post starts a run: {answers:?}");
    let run_id = started[0]["run_id"].as_u64().expect("a run id");
    for (status, answer) in answers.iter().filter(|(status, _)| *status != 200) {
        assert!(matches!(status, 401 | 409 | 429 | 503), "{status} {answer}");
    }
    assert_eq!(postgres.psql("authrun", "SELECT count(*) FROM runs"), "1");
    // Both instances show the one run, from memory, refreshed on the other's notification.
    for server in servers.iter() {
        let shown = wait_for("both instances to show the run ended", || {
            let history = history(server);
            (history.len() == 1 && history[0]["status"] == "Deploy succeeded").then_some(history)
        });
        assert_eq!(shown[0]["id"].as_u64(), Some(run_id));
    }
}

#[test]
fn a_code_used_on_one_instance_is_refused_on_the_other_also_after_both_restart() {
    let postgres = Postgres::start();
    let (a, b) = (
        instance(&postgres, "#!/bin/sh\necho deployed\n", "cooldown_seconds = 0"),
        instance(&postgres, "#!/bin/sh\necho deployed\n", "cooldown_seconds = 0"),
    );
    let code = code_now(SECRET);
    {
        let (server_a, server_b) = (serve_configured(&a, &[]), serve_configured(&b, &[]));
        let (status, answer) = post_code(&server_a, &code);
        assert_eq!(status, 200, "{answer}");
        wait_for("the run to end", || {
            (history(&server_b).first()?["status"] == "Deploy succeeded").then_some(())
        });
        let (status, answer) = post_code(&server_b, &code);
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("replayed_code")),
            "{answer}"
        );
    }
    let (server_a, server_b) = (serve_configured(&a, &[]), serve_configured(&b, &[]));
    for server in [&server_b, &server_a] {
        let (status, answer) = post_code(server, &code);
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("replayed_code")),
            "{answer}"
        );
    }
    assert_eq!(history(&server_b).len(), 1);
}

#[test]
fn a_run_on_one_instance_shows_as_running_on_the_other_and_refuses_it_a_second_run() {
    let postgres = Postgres::start();
    let waiting = "#!/bin/sh\nwhile [ ! -f go ]; do sleep 0.1; done\necho deployed\n";
    let (a, b) = (
        instance(&postgres, waiting, "cooldown_seconds = 0"),
        instance(&postgres, waiting, "cooldown_seconds = 0"),
    );
    let (server_a, server_b) = (serve_configured(&a, &[]), serve_configured(&b, &[]));
    let (status, answer) = post_code(&server_a, &code_now(SECRET));
    assert_eq!(status, 200, "{answer}");
    let state = |server: &Server| server.get("/get_deploy_status").json()["state"].clone();
    wait_for("B to show A's run going", || {
        (state(&server_b) == "running").then_some(())
    });
    // A later code is refused by B: the action is running on A.
    let later = crate::support::code_at(SECRET, crate::support::now_unix() + 30);
    let (status, answer) = post_code(&server_b, &later);
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("running")),
        "{answer}"
    );
    a.write("go", "");
    wait_for("B to show the run ended", || {
        (state(&server_b) == "idle").then_some(())
    });
    assert_eq!(history(&server_b)[0]["status"], "Deploy succeeded");
}

#[test]
fn without_its_database_a_run_is_refused_503_and_authrun_recovers_when_it_is_back() {
    let postgres = Postgres::start();
    let a = instance(&postgres, "#!/bin/sh\necho deployed\n", "cooldown_seconds = 0");
    let server = serve_configured(&a, &[]);
    postgres.stop();
    let code = code_now(SECRET);
    let (status, answer) = post_code(&server, &code);
    assert_eq!(
        (status, answer["error"].as_str(), answer["message"].as_str()),
        (
            503,
            Some("store_unavailable"),
            Some("The database cannot be reached; nothing was started.")
        ),
        "{answer}"
    );
    // The history is still answered, from memory.
    let status = server.get("/get_deploy_status");
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["history"].as_array().map(Vec::len), Some(0));
    postgres.start_server();
    // Nothing was kept of the refused attempt: the same code starts the run once the database is back,
    // without restarting authrun (its pool connects again by itself).
    let (status, answer) = post_code(&server, &code);
    assert_eq!(status, 200, "{answer}\n{}", server.stderr());
    assert_eq!(postgres.psql("authrun", "SELECT count(*) FROM runs"), "1");
    wait_for("the run to end", || {
        (history(&server).first()?["status"] == "Deploy succeeded").then_some(())
    });
}
