//! `authrun store migrate --from files` and `authrun history export`, the real binary against real files
//! and a real PostgreSQL (`common::postgres`).

use serde_json::{Value, json};

use crate::attack::{addresses, post_from, verify_request};
use crate::common::postgres::Postgres;
use crate::instances::on_database;
use crate::support::{
    Finished, SECRET, Workspace, authrun, now_unix, post_code, run, serve_configured, wait_for, wrong_code,
};

/// `authrun ARGS` in `workspace`, with `[store]` naming `postgres` when given (through the environment,
/// as an operator moving to the database would before changing the file).
fn command(workspace: &Workspace, postgres: Option<&Postgres>, args: &[&str]) -> Finished {
    let mut command = authrun(workspace.path());
    command.args(args).arg("--config").arg(workspace.config());
    if let Some(postgres) = postgres {
        command
            .env("AUTHRUN_STORE_KIND", "postgres")
            .env("AUTHRUN_STORE_URL", postgres.url());
    }
    run(&mut command)
}

/// A history as one instance left it: an entry of the original program (no id), two of authrun's (the
/// newest used the code step `step`), and a pause of code checking in force in the regulation state.
fn files_of_one_instance(step: u64) -> Workspace {
    let workspace = Workspace::configured("#!/bin/sh\necho deployed\n", "cooldown_seconds = 0");
    let history = json!([
        {"time": "2026-01-05T10:00:00Z", "status": "Deploy succeeded"},
        {"time": "2026-02-01T09:30:00Z", "status": "Deploy failed", "id": 7, "action": "deploy",
         "totp_step": step - 100, "exit_code": 1},
        {"time": "2026-02-02T09:30:00Z", "status": "Deploy succeeded", "id": 8, "action": "deploy",
         "totp_step": step, "exit_code": 0},
    ]);
    workspace.write("history.json", &serde_json::to_string_pretty(&history).unwrap());
    workspace.write(
        ".authrun/regulation.json",
        r#"{"paused_until": "2099-01-01T00:00:00Z", "pauses": 1}"#,
    );
    // The audit log, rotated once, with a line cut short by a crash of an old version.
    workspace.write(
        ".authrun/audit.log.1",
        "{\"time\":\"2026-02-01T09:29:00Z\",\"event\":\"attempt\",\"client\":\"192.0.2.7\",\"outcome\":\"wrong\"}\n\
         {\"time\":\"2026-02-01T09:30:00Z\",\"event\":\"attempt\",\"client\":\"192.0.2.7\",\"outcome\":\"accepted\",\"run_id\":7}\n",
    );
    workspace.write(
        ".authrun/audit.log",
        "{\"time\":\"2026-02-02T09:30:00Z\",\"event\":\"attempt\",\"client\":\"192.0.2.8\",\"outcome\":\"accepted\",\"run_id\":8}\n\
         {\"time\":\"2026-02-02T09:31:00Z\",\"event\":\"att\n",
    );
    workspace
}

fn exported(finished: &Finished) -> Vec<Value> {
    assert_eq!(finished.code(), 0, "{finished:#?}");
    serde_json::from_str::<Value>(&finished.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", finished.stdout))
        .as_array()
        .cloned()
        .expect("a list")
}

#[test]
fn store_migrate_imports_the_files_once_and_history_export_prints_the_same_history_from_either_store() {
    let postgres = Postgres::start();
    let step = now_unix() / 30;
    let workspace = files_of_one_instance(step);
    let from_files = exported(&command(&workspace, None, &["history", "export"]));
    assert_eq!(from_files, workspace.history(), "the file's history, as it is");

    let first = command(
        &workspace,
        Some(&postgres),
        &["store", "migrate", "--from", "files"],
    );
    assert_eq!(first.code(), 0, "{first:#?}");
    assert!(
        first.stdout.contains(
            "Imported 3 runs, the regulation state, 3 audit lines; 1 line of the audit log not JSON \
             with a time, left out."
        ),
        "{}",
        first.stdout
    );
    let second = command(
        &workspace,
        Some(&postgres),
        &["store", "migrate", "--from", "files"],
    );
    assert_eq!(second.code(), 0, "{second:#?}");
    assert!(
        second
            .stdout
            .contains("Imported 0 runs (3 were already in the database)")
            && second.stdout.contains("not the regulation state")
            && second
                .stdout
                .contains("0 audit lines (3 were already in the database)"),
        "{}",
        second.stdout
    );
    assert_eq!(postgres.psql("authrun", "SELECT count(*) FROM runs"), "3");
    assert_eq!(
        postgres.psql(
            "authrun",
            "SELECT string_agg(line->>'outcome', ',' ORDER BY time) FROM audit"
        ),
        "wrong,accepted,accepted"
    );
    assert_eq!(
        postgres.psql("authrun", "SELECT step FROM used_steps WHERE secret = 'shared'"),
        step.to_string()
    );

    // The same runs, oldest first, from the database: the entry without an id was given the next one.
    let from_database = exported(&command(&workspace, Some(&postgres), &["history", "export"]));
    let fields = |runs: &[Value]| -> Vec<(Value, Value)> {
        runs.iter()
            .map(|run| (run["time"].clone(), run["status"].clone()))
            .collect()
    };
    let mut expected = fields(&from_files);
    expected.rotate_left(1);
    assert_eq!(fields(&from_database), expected);
    assert_eq!(from_database[2]["id"], 9);
    assert_eq!(from_database[1]["exit_code"], 0);

    // An instance on the database serves that history and holds the imported pause.
    on_database(&workspace, &postgres);
    let server = serve_configured(&workspace, &[]);
    let status = server.get("/get_deploy_status").json();
    assert_eq!(status["history"].as_array().map(Vec::len), Some(3), "{status}");
    let (status, answer) = post_code(&server, &crate::support::code_now(SECRET));
    assert_eq!(
        (status, answer["error"].as_str()),
        (429, Some("paused")),
        "{answer}"
    );

    // The instance's audit lines reach its file and the database; copying the file again (as after an
    // outage of the database) adds each line once.
    let readable = |name: &str| {
        let text = workspace.read(name);
        text.lines()
            .filter(|line| serde_json::from_str::<Value>(line).is_ok())
            .count()
    };
    // audit.log.1's two lines, the imported line of audit.log, the refusal.
    let written = readable(".authrun/audit.log.1") + readable(".authrun/audit.log");
    assert!(written >= 4, "the refusal is not in the file");
    wait_for("the refusal to reach the database", || {
        (postgres.psql("authrun", "SELECT count(*) FROM audit") == written.to_string()).then_some(())
    });
    let again = command(
        &workspace,
        Some(&postgres),
        &["store", "migrate", "--from", "files"],
    );
    assert!(
        again.stdout.contains(&format!("0 audit lines ({written} were")),
        "{again:#?}"
    );
    assert_eq!(
        postgres.psql("authrun", "SELECT count(*) FROM audit"),
        written.to_string()
    );
}

#[test]
fn store_migrate_refuses_a_database_whose_runs_are_others_and_imports_nothing() {
    let postgres = Postgres::start();
    let workspace = files_of_one_instance(now_unix() / 30);
    let other = files_of_one_instance(now_unix() / 30);
    other.write(
        "history.json",
        r#"[{"time": "2026-03-01T00:00:00Z", "status": "Deploy succeeded", "id": 8}]"#,
    );
    let first = command(&other, Some(&postgres), &["store", "migrate", "--from", "files"]);
    assert_eq!(first.code(), 0, "{first:#?}");
    let refused = command(
        &workspace,
        Some(&postgres),
        &["store", "migrate", "--from", "files"],
    );
    assert_eq!(refused.code(), 1, "{refused:#?}");
    assert!(refused.stderr.contains("run 8"), "{}", refused.stderr);
    assert_eq!(postgres.psql("authrun", "SELECT count(*) FROM runs"), "1");
}

#[test]
fn store_migrate_needs_a_database_configured() {
    let workspace = files_of_one_instance(now_unix() / 30);
    let refused = command(&workspace, None, &["store", "migrate", "--from", "files"]);
    assert_eq!(refused.code(), 2, "{refused:#?}");
    assert!(
        refused.stderr.contains("kind = \"postgres\""),
        "{}",
        refused.stderr
    );
}

#[test]
fn the_database_keeps_about_as_many_audit_lines_as_the_rotated_files_hold() {
    let postgres = Postgres::start();
    let workspace = Workspace::configured("#!/bin/sh\necho deployed\n", "cooldown_seconds = 0");
    // (1 + 1) files of 4,096 bytes: the database keeps 81 lines. Every address of this machine is exempt
    // from the global pause, so wrong codes from several of them each write a line.
    let config = workspace.read("authrun.toml");
    workspace.write(
        "authrun.toml",
        &format!(
            "{config}\n[audit]\nmax_bytes = 4096\nkeep_files = 1\n\n\
             [regulation]\nexempt_networks = [\"127.0.0.0/8\"]\n"
        ),
    );
    let lines: String = (0..200)
        .map(|n| {
            format!(
                "{{\"time\":\"2026-02-01T{:02}:{:02}:00Z\",\"event\":\"attempt\",\"client\":\"192.0.2.{}\",\
                 \"outcome\":\"wrong\"}}\n",
                n / 60,
                n % 60,
                n % 250
            )
        })
        .collect();
    workspace.write(".authrun/audit.log", &lines);
    let imported = command(
        &workspace,
        Some(&postgres),
        &["store", "migrate", "--from", "files"],
    );
    assert_eq!(imported.code(), 0, "{imported:#?}");
    let kept = || postgres.psql("authrun", "SELECT count(*) FROM audit");
    assert_eq!(kept(), "81");
    assert_eq!(
        postgres.psql(
            "authrun",
            "SELECT to_char(min(time) AT TIME ZONE 'UTC', 'HH24:MI') FROM audit"
        ),
        "01:59",
        "the newest lines are kept"
    );

    // A running instance trims too, once a tenth of that many lines came since it last did.
    on_database(&workspace, &postgres);
    let server = serve_configured(&workspace, &[]);
    let request = verify_request(&server, &wrong_code(), "");
    for source in addresses(3, 10) {
        let (status, answer) = post_from(&server, source, &request);
        assert_eq!(status, 401, "{answer}");
    }
    wait_for("the oldest lines to go", || {
        (postgres.psql(
            "authrun",
            "SELECT count(*) FROM audit WHERE time < '2026-02-01T02:07:00Z'",
        ) == "0")
            .then_some(())
    });
    let count: u64 = kept().parse().expect("a count");
    assert!((81..=88).contains(&count), "{count} lines kept");
}
