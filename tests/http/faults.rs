//! A full disk under the history: a code starts at most one run, no run is left "Deploying" that is not
//! going, and no run id is given twice, also across a restart. The disk is a real tmpfs, filled.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse, Tmpfs};

/// `count` finished runs, ids 1 to `count`, a day before the test's clock, as authrun writes them.
fn old_runs(count: u64) -> String {
    let runs: Vec<Value> = (1..=count)
        .map(|id| {
            json!({
                "time": "2026-11-24T12:00:00Z",
                "status": "Deploy succeeded",
                "id": id,
                "finished": "2026-11-24T12:00:01Z",
                "exit_code": 0,
                "duration_ms": 1000,
                "totp_step": 59_000_000 + id,
                "log": format!("{id}.log"),
            })
        })
        .collect();
    serde_json::to_string_pretty(&runs).expect("JSON")
}

/// A test app whose history file is `history.json` on `disk`, with `cooldown` seconds of cooldown.
fn app_with_history_on(disk: &Tmpfs, cooldown: u64) -> TestApp {
    let history = disk.path().join("history.json");
    TestApp::builder()
        .cooldown(cooldown)
        .config(&format!("[history]\nfile = \"{}\"", history.display()))
        .build()
}

fn assert_refused(response: &TestResponse, status: StatusCode, error: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.json()["error"], error, "{}", response.text());
}

/// The statuses the status answer lists, oldest first.
async fn statuses(app: &TestApp) -> (Value, Vec<String>) {
    let status = app.status().await;
    let list = status["history"]
        .as_array()
        .expect("a history list")
        .iter()
        .map(|entry| entry["status"].as_str().unwrap_or_default().to_string())
        .collect();
    (status["state"].clone(), list)
}

#[tokio::test]
async fn a_run_that_cannot_be_recorded_never_starts_and_its_code_and_id_stay_used() {
    let disk = Tmpfs::mount("512k");
    std::fs::write(disk.path().join("history.json"), old_runs(100)).expect("write the history");
    let app = app_with_history_on(&disk, 180);
    // One page left: enough for a small file, not for the history (about 30 KiB) to be rewritten.
    disk.fill(4096);

    let code = app.code_now();
    let refused = app.post_verify(&code).await;
    assert_refused(&refused, StatusCode::SERVICE_UNAVAILABLE, "launch_failed");
    let (state, list) = statuses(&app).await;
    assert!(
        !list.iter().any(|status| status == "Deploying"),
        "a run that never started shows as going: {list:?}"
    );
    assert_eq!(list.len(), 100, "{list:?}");
    assert_eq!(state, "idle", "the failed start holds the gate or the cooldown");
    assert_eq!(
        app.script_runs(),
        0,
        "the script ran although its run was not recorded"
    );
    let on_disk = std::fs::read_to_string(disk.path().join("history.json")).expect("the history");
    assert_eq!(on_disk, old_runs(100), "the history file changed");

    disk.free();
    let again = app.post_verify(&code).await;
    assert_refused(&again, StatusCode::UNAUTHORIZED, "replayed_code");
    let app = app.restart().expect("restart");
    let after_restart = app.post_verify(&code).await;
    assert_refused(&after_restart, StatusCode::UNAUTHORIZED, "replayed_code");

    app.advance(30);
    let next = app.post_verify(&app.code_now()).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text());
    assert_eq!(
        next.json()["run_id"],
        102,
        "run 101 was given to the refused start; its id must not come back"
    );
    assert_eq!(app.wait_for_run(102).await.exit_code, Some(0));
    assert_eq!(app.script_runs(), 1);
}

#[tokio::test]
async fn a_disk_with_no_room_at_all_refuses_the_code_and_uses_up_nothing() {
    let disk = Tmpfs::mount("64k");
    let app = app_with_history_on(&disk, 0);
    disk.fill(0);

    let code = app.code_now();
    let refused = app.post_verify(&code).await;
    assert_refused(&refused, StatusCode::SERVICE_UNAVAILABLE, "launch_failed");
    let (state, list) = statuses(&app).await;
    assert_eq!(list, Vec::<String>::new(), "a run that never started is listed");
    assert_eq!(state, "idle");
    assert_eq!(
        app.script_runs(),
        0,
        "the script ran although its run was not recorded"
    );

    // Nothing was written anywhere, so nothing was used: the code starts run 1 once there is room.
    disk.free();
    let app = app.restart().expect("restart");
    let started = app.post_verify(&code).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text());
    assert_eq!(started.json()["run_id"], 1);
    app.wait_for_run(1).await;
    let replayed = app.post_verify(&code).await;
    assert_refused(&replayed, StatusCode::UNAUTHORIZED, "replayed_code");
}

#[tokio::test]
async fn a_run_whose_end_cannot_be_written_ends_in_memory_and_is_interrupted_after_a_restart() {
    let disk = Tmpfs::mount("64k");
    // The script fills the disk the history is on, then succeeds.
    let fill = disk.path().join("fill");
    let app = TestApp::builder()
        .script(&format!(
            "#!/bin/sh\ncat /dev/zero > '{}' 2>/dev/null\necho \"run $AUTHRUN_RUN_ID\" >> runs.txt\n",
            fill.display()
        ))
        .config(&format!(
            "[history]\nfile = \"{}\"",
            disk.path().join("history.json").display()
        ))
        .build();
    let code = app.code_now();
    let started = app.post_verify(&code).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text());

    let record = app.wait_for_run(1).await;
    assert_eq!(record.exit_code, Some(0), "{record:?}");
    let (state, list) = statuses(&app).await;
    assert_eq!(list, ["Deploy succeeded"], "the status shows the run as it ended");
    assert_eq!(state, "cooling_down");
    let on_disk = std::fs::read_to_string(disk.path().join("history.json")).expect("the history");
    assert!(on_disk.contains("\"Deploying\""), "{on_disk}");

    disk.free();
    let app = app.restart().expect("restart");
    assert_eq!(
        app.record(1).map(|record| record.status.as_str()),
        Some("Interrupted")
    );
    let replayed = app.post_verify(&code).await;
    assert_refused(&replayed, StatusCode::TOO_MANY_REQUESTS, "cooling_down");
}
