//! The shortest story: a valid code starts the script once and the history says it succeeded.

use axum::http::StatusCode;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_valid_code_runs_the_script_and_records_success() {
    let app = TestApp::builder().build();
    let response = app.post_verify(&app.code_now()).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let body = response.json();
    assert_eq!(body["success"], true);
    let id = body["run_id"].as_u64().expect("run_id");
    let record = app.wait_for_run(id).await;
    assert_eq!(record.status.as_str(), "Deploy succeeded");
    assert_eq!(app.script_runs(), 1);
    let status = app.status().await;
    assert_eq!(status["history"][0]["status"], "Deploy succeeded");
    assert_eq!(status["history"][0]["time"], "2026-11-25T12:00:10Z");
}

#[tokio::test]
async fn the_status_at_one_instant_follows_the_history() {
    // The clock stands still and, with no cooldown, the state is "idle" before and after the run: the
    // answer must still change with the history.
    let app = TestApp::builder().cooldown(0).build();
    let before = app.status().await;
    assert_eq!(before["state"], "idle", "{before}");
    assert_eq!(before["history"], serde_json::json!([]), "{before}");

    let body = app.post_verify(&app.code_now()).await.json();
    let id = body["run_id"].as_u64().expect("run_id");
    app.wait_for_run(id).await;
    let after = app.status().await;
    assert_eq!(after["state"], "idle", "{after}");
    assert_eq!(after["history"][0]["id"], id, "{after}");
    assert_eq!(after["history"][0]["status"], "Deploy succeeded", "{after}");
    assert_eq!(after["now"], before["now"], "the clock was not moved");
}
