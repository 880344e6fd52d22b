//! The gate: however many valid codes arrive at once, exactly one run starts; then the cooldown (counted
//! from the run's start) and replay protection hold, also across a restart.

use std::sync::Arc;

use authrun::error::BUSY_MESSAGE;
use axum::http::StatusCode;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::helpers::{
    BLOCKING_SCRIPT, TestApp, assert_refused, form_request, last_run_id, let_script_finish, start_run,
    tcp_client, urlencode,
};

/// Counts the answers by status; panics on any status other than 200, 409 and 429.
fn tally(statuses: &[StatusCode]) -> (usize, usize, usize) {
    let count = |wanted: StatusCode| statuses.iter().filter(|s| **s == wanted).count();
    let (ok, running, cooling) = (
        count(StatusCode::OK),
        count(StatusCode::CONFLICT),
        count(StatusCode::TOO_MANY_REQUESTS),
    );
    assert_eq!(
        ok + running + cooling,
        statuses.len(),
        "unexpected statuses: {statuses:?}"
    );
    (ok, running, cooling)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_simultaneous_posts_of_one_code_start_exactly_one_run() {
    let app = TestApp::builder().build();
    let code = app.code_now();
    let barrier = Arc::new(Barrier::new(100));
    let mut tasks = JoinSet::new();
    for _ in 0..100 {
        let router = app.router.clone();
        let barrier = Arc::clone(&barrier);
        let body = format!("code={}", urlencode(&code));
        tasks.spawn(async move {
            let request = form_request("/verify", &body, &[]);
            barrier.wait().await;
            let response = router.oneshot(request).await.expect("the router answers");
            response.status()
        });
    }
    let statuses: Vec<StatusCode> = tasks.join_all().await;
    let (ok, _, _) = tally(&statuses);
    assert_eq!(ok, 1, "{statuses:?}");

    let id = last_run_id(&app);
    app.wait_for_run(id).await;
    assert_eq!(app.script_runs(), 1);
    assert_eq!(app.status().await["history"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_simultaneous_posts_over_tcp_start_exactly_one_run() {
    // Sixty connections from one address: more than the per-client cap lets one client hold.
    let app = TestApp::builder()
        .config("[server]\nmax_connections_per_client = 64")
        .build();
    let server = app.serve_tcp().await;
    let client = tcp_client();
    let code = app.code_now();
    let barrier = Arc::new(Barrier::new(60));
    let mut tasks = JoinSet::new();
    for _ in 0..60 {
        let request = client
            .post(server.url("/verify"))
            .form(&[("code", code.as_str())]);
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            barrier.wait().await;
            let response = request.send().await.expect("the server answers");
            response.status().as_u16()
        });
    }
    let statuses: Vec<StatusCode> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|s| StatusCode::from_u16(s).expect("status"))
        .collect();
    let (ok, _, _) = tally(&statuses);
    assert_eq!(ok, 1, "{statuses:?}");

    let id = last_run_id(&app);
    app.wait_for_run(id).await;
    assert_eq!(app.script_runs(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn the_cooldown_counts_from_the_start_of_the_run() {
    let app = TestApp::builder().script(BLOCKING_SCRIPT).build();
    let id = start_run(&app, &app.code_now()).await;
    // The run takes 100 s of clock time; the cooldown still ends 180 s after it started.
    app.advance(100);
    let_script_finish(&app);
    app.wait_for_run(id).await;

    app.advance(79);
    let refused = app.post_verify(&app.code_now()).await;
    assert_refused(&refused, StatusCode::TOO_MANY_REQUESTS, "cooling_down");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let message = refused.message();
    assert!(message.starts_with(BUSY_MESSAGE), "{message}");

    app.advance(1);
    let second = start_run(&app, &app.code_now()).await;
    assert_eq!(second, id + 1);
    let_script_finish(&app);
    app.wait_for_run(second).await;
    assert_eq!(app.script_runs(), 2);
}

#[tokio::test]
async fn a_code_sent_while_a_run_is_going_is_refused_as_running() {
    let app = TestApp::builder().script(BLOCKING_SCRIPT).cooldown(0).build();
    let id = start_run(&app, &app.code_now()).await;

    app.advance(30);
    let second_code = app.code_now();
    let refused = app.post_verify(&second_code).await;
    assert_refused(&refused, StatusCode::CONFLICT, "running");
    let message = refused.message();
    assert!(message.starts_with(BUSY_MESSAGE), "{message}");

    let_script_finish(&app);
    app.wait_for_run(id).await;
    assert_eq!(app.script_runs(), 1);
    // The refused code was not used up: once the run is over it starts the next one.
    let next = start_run(&app, &second_code).await;
    app.wait_for_run(next).await;
    assert_eq!(app.script_runs(), 2);
}

#[tokio::test]
async fn a_used_code_and_older_ones_are_refused_as_replayed() {
    let app = TestApp::builder().cooldown(0).build();
    let code = app.code_now();
    let id = start_run(&app, &code).await;
    app.wait_for_run(id).await;

    let again = app.post_verify(&code).await;
    assert_refused(&again, StatusCode::UNAUTHORIZED, "replayed_code");
    let previous_step = app.code_at(app.clock_now() - time::Duration::seconds(30));
    let older = app.post_verify(&previous_step).await;
    assert_refused(&older, StatusCode::UNAUTHORIZED, "replayed_code");
    assert_eq!(app.script_runs(), 1);

    app.advance(30);
    let next = start_run(&app, &app.code_now()).await;
    app.wait_for_run(next).await;
    assert_eq!(app.script_runs(), 2);
}

#[tokio::test]
async fn a_restart_keeps_the_cooldown() {
    let app = TestApp::builder().build();
    let id = start_run(&app, &app.code_now()).await;
    app.wait_for_run(id).await;
    let app = app.restart().expect("the app restarts");

    app.advance(30);
    let refused = app.post_verify(&app.code_now()).await;
    assert_refused(&refused, StatusCode::TOO_MANY_REQUESTS, "cooling_down");
    assert_eq!(refused.header("retry-after"), Some("150"));

    app.advance(151);
    let next = start_run(&app, &app.code_now()).await;
    assert_eq!(next, id + 1, "run ids continue after a restart");
    app.wait_for_run(next).await;
    assert_eq!(app.script_runs(), 2);
}

#[tokio::test]
async fn a_restart_keeps_replay_protection() {
    let app = TestApp::builder().cooldown(0).build();
    let code = app.code_now();
    let id = start_run(&app, &code).await;
    app.wait_for_run(id).await;
    let app = app.restart().expect("the app restarts");

    let again = app.post_verify(&code).await;
    assert_refused(&again, StatusCode::UNAUTHORIZED, "replayed_code");
    assert_eq!(app.script_runs(), 1);
}
