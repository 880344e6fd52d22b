//! Several actions in one authrun: each runs its own script with its own gate and cooldown, runs of
//! different actions overlap up to `[runs] max_parallel`, a code starts one run of one action, run ids
//! are shared, and the history says which action each run was.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::Value;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::helpers::{
    BLOCKING_SCRIPT, COUNTING_SCRIPT, START, TestApp, action_runs, assert_content_type, assert_redirect_to,
    assert_refused, audit_lines, form_request, let_action_finish, post_run, start_action, urlencode,
};
use crate::html;

/// Two actions whose scripts wait for their `go` file: `deploy` (cooldown 300 s) and `restart-cache`
/// (cooldown 30 s).
fn two_blocking_actions() -> TestApp {
    TestApp::builder()
        .action(
            "deploy",
            BLOCKING_SCRIPT,
            "name = \"Deploy production\"\ncooldown_seconds = 300",
        )
        .action(
            "restart-cache",
            BLOCKING_SCRIPT,
            "name = \"Restart the cache\"\ncooldown_seconds = 30",
        )
        .build()
}

async fn status_of(app: &TestApp, id: &str) -> Value {
    let response = app.get(&format!("/actions/{id}/status")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    response.json()
}

#[tokio::test]
async fn two_actions_run_at_once_and_each_cooldown_blocks_only_itself() {
    let app = two_blocking_actions();
    let deploy = start_action(&app, "deploy", &app.code_now()).await;
    app.advance(30);
    let cache = start_action(&app, "restart-cache", &app.code_now()).await;
    assert_eq!(status_of(&app, "deploy").await["state"], "running");
    assert_eq!(status_of(&app, "restart-cache").await["state"], "running");

    // A second run of a running action is refused; the other action's run goes on.
    app.advance(30);
    let refused = post_run(&app, "deploy", &app.code_now()).await;
    assert_refused(&refused, StatusCode::CONFLICT, "running");

    let_action_finish(&app, "deploy");
    let_action_finish(&app, "restart-cache");
    app.wait_for_run(deploy).await;
    app.wait_for_run(cache).await;

    // 60 s after its start the cache's cooldown is over; the deploy's (300 s) still holds.
    app.advance(30);
    let again = start_action(&app, "restart-cache", &app.code_now()).await;
    app.wait_for_run(again).await;
    app.advance(30);
    let refused = post_run(&app, "deploy", &app.code_now()).await;
    assert_refused(&refused, StatusCode::TOO_MANY_REQUESTS, "cooling_down");
    assert_eq!(refused.header("retry-after"), Some("180"));
    assert_eq!(action_runs(&app, "deploy"), 1);
    assert_eq!(action_runs(&app, "restart-cache"), 2);
}

#[tokio::test]
async fn past_max_parallel_another_action_is_busy_and_its_code_stays_unused() {
    let app = TestApp::builder()
        .config("[runs]\nmax_parallel = 2")
        .action("a", BLOCKING_SCRIPT, "cooldown_seconds = 0")
        .action("b", BLOCKING_SCRIPT, "cooldown_seconds = 0")
        .action("c", BLOCKING_SCRIPT, "cooldown_seconds = 0")
        .build();
    let a = start_action(&app, "a", &app.code_now()).await;
    app.advance(30);
    start_action(&app, "b", &app.code_now()).await;
    app.advance(30);
    let code = app.code_now();
    let refused = post_run(&app, "c", &code).await;
    assert_refused(&refused, StatusCode::CONFLICT, "busy");
    assert!(refused.message().contains("(2)"), "{}", refused.message());
    let lines = audit_lines(&app);
    let last = lines.last().expect("an audit line");
    assert_eq!(
        (&last["outcome"], &last["action"]),
        (&Value::from("busy"), &Value::from("c")),
        "{last}"
    );
    let started: Vec<&Value> = lines
        .iter()
        .filter(|line| line["outcome"] == "started")
        .map(|line| &line["action"])
        .collect();
    assert_eq!(started, [&Value::from("a"), &Value::from("b")]);

    let_action_finish(&app, "a");
    app.wait_for_run(a).await;
    // The busy answer looked at no code: the same one starts c once there is room.
    start_action(&app, "c", &code).await;
    let_action_finish(&app, "b");
    let_action_finish(&app, "c");
}

#[tokio::test]
async fn a_restart_restores_each_actions_cooldown() {
    let app = two_blocking_actions();
    let deploy = start_action(&app, "deploy", &app.code_now()).await;
    app.advance(30);
    let cache = start_action(&app, "restart-cache", &app.code_now()).await;
    let_action_finish(&app, "deploy");
    let_action_finish(&app, "restart-cache");
    app.wait_for_run(deploy).await;
    app.wait_for_run(cache).await;
    let app = app.restart().expect("the app restarts");

    let deploy_until = START + time::Duration::seconds(300);
    let cache_until = START + time::Duration::seconds(60);
    let status = status_of(&app, "deploy").await;
    assert_eq!(status["state"], "cooling_down");
    assert_eq!(
        status["next_run_at"],
        authrun::model::time::format_time(deploy_until)
    );
    let status = status_of(&app, "restart-cache").await;
    assert_eq!(
        status["next_run_at"],
        authrun::model::time::format_time(cache_until)
    );

    app.advance(30);
    let next = start_action(&app, "restart-cache", &app.code_now()).await;
    assert_eq!(next, cache + 1, "run ids continue across actions and restarts");
    let refused = post_run(&app, "deploy", &app.code_now()).await;
    assert_refused(&refused, StatusCode::TOO_MANY_REQUESTS, "cooling_down");
    let_action_finish(&app, "restart-cache");
    app.wait_for_run(next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_posts_of_one_code_to_two_actions_start_exactly_one_run() {
    let app = TestApp::builder()
        .action("a", COUNTING_SCRIPT, "")
        .action("b", COUNTING_SCRIPT, "")
        .build();
    let code = app.code_now();
    let barrier = Arc::new(Barrier::new(100));
    let mut tasks = JoinSet::new();
    for i in 0..100 {
        let router = app.router.clone();
        let barrier = Arc::clone(&barrier);
        // Through each action's route, and through /verify naming it, alike.
        let (path, body) = match i % 4 {
            0 => ("/actions/a/run".to_string(), format!("code={}", urlencode(&code))),
            1 => ("/actions/b/run".to_string(), format!("code={}", urlencode(&code))),
            2 => ("/verify".to_string(), format!("code={}", urlencode(&code))),
            _ => (
                "/verify".to_string(),
                format!("code={}&action=b", urlencode(&code)),
            ),
        };
        tasks.spawn(async move {
            let request = form_request(&path, &body, &[]);
            barrier.wait().await;
            router
                .oneshot(request)
                .await
                .expect("the router answers")
                .status()
        });
    }
    let statuses: Vec<StatusCode> = tasks.join_all().await;
    let started = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(started, 1, "{statuses:?}");
    // The others: running, replayed, or (after five replays) banned.
    for status in &statuses {
        let expected = [
            StatusCode::OK,
            StatusCode::CONFLICT,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
        ];
        assert!(expected.contains(status), "{statuses:?}");
    }
    let run = app
        .state
        .runner
        .history()
        .last()
        .and_then(|r| r.id)
        .expect("a run");
    app.wait_for_run(run).await;
    assert_eq!(action_runs(&app, "a") + action_runs(&app, "b"), 1);
}

#[tokio::test]
async fn a_code_that_started_one_action_cannot_start_another() {
    let app = TestApp::builder()
        .action("a", COUNTING_SCRIPT, "")
        .action("b", COUNTING_SCRIPT, "")
        .build();
    let code = app.code_now();
    let run = start_action(&app, "a", &code).await;
    let refused = post_run(&app, "b", &code).await;
    assert_refused(&refused, StatusCode::UNAUTHORIZED, "replayed_code");
    app.wait_for_run(run).await;
    // The next code of a later step starts it.
    app.advance(30);
    let b = start_action(&app, "b", &app.code_now()).await;
    app.wait_for_run(b).await;
    assert_eq!((action_runs(&app, "a"), action_runs(&app, "b")), (1, 1));
}

#[tokio::test]
async fn run_ids_are_shared_and_each_entry_names_its_action() {
    let app = TestApp::builder()
        .action("a", COUNTING_SCRIPT, "")
        .action("b", COUNTING_SCRIPT, "")
        .build();
    let first = start_action(&app, "a", &app.code_now()).await;
    app.wait_for_run(first).await;
    app.advance(30);
    let second = start_action(&app, "b", &app.code_now()).await;
    app.wait_for_run(second).await;
    assert_eq!((first, second), (1, 2));

    let on_disk = app.history_on_disk();
    let actions: Vec<&Value> = on_disk
        .as_array()
        .expect("a list")
        .iter()
        .map(|entry| &entry["action"])
        .collect();
    assert_eq!(actions, [&Value::from("a"), &Value::from("b")]);
    let run = app
        .get_with("/runs/2", &[("accept", "application/json")])
        .await
        .json();
    assert_eq!(run["action"], "b", "{run}");

    // Each status answer holds its action's runs; /get_deploy_status is the first's, or action=<id>'s.
    let ids = |status: &Value| -> Vec<u64> {
        status["history"]
            .as_array()
            .expect("history")
            .iter()
            .filter_map(|entry| entry["id"].as_u64())
            .collect()
    };
    assert_eq!(ids(&status_of(&app, "a").await), [1]);
    assert_eq!(ids(&status_of(&app, "b").await), [2]);
    assert_eq!(ids(&app.status().await), [1]);
    assert_eq!(app.status().await["action"], "a");
    let by_query = app.get("/get_deploy_status?action=b").await;
    let by_path = app.get("/actions/b/status").await;
    assert_eq!(by_query.status, StatusCode::OK);
    assert_eq!(by_query.body, by_path.body, "the same answer by either route");
}

#[tokio::test]
async fn verify_starts_the_action_its_field_or_query_names() {
    let app = TestApp::builder()
        .action("a", COUNTING_SCRIPT, "cooldown_seconds = 0")
        .action("b", COUNTING_SCRIPT, "cooldown_seconds = 0")
        .build();
    let body = format!("code={}&action=b", urlencode(&app.code_now()));
    let response = app.post_form("/verify", &body, &[]).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.json()["action"], "b");
    app.wait_for_run(response.json()["run_id"].as_u64().expect("run_id"))
        .await;

    app.advance(30);
    let body = format!("code={}", urlencode(&app.code_now()));
    let response = app.post_form("/verify?action=b", &body, &[]).await;
    assert_eq!(response.json()["action"], "b", "{}", response.text());
    app.wait_for_run(response.json()["run_id"].as_u64().expect("run_id"))
        .await;

    app.advance(30);
    let response = app.post_verify(&app.code_now()).await;
    assert_eq!(response.json()["action"], "a", "without action=, the first");
    app.wait_for_run(response.json()["run_id"].as_u64().expect("run_id"))
        .await;
    assert_eq!((action_runs(&app, "a"), action_runs(&app, "b")), (1, 2));
}

#[tokio::test]
async fn an_action_that_does_not_exist_is_not_found() {
    let app = TestApp::builder()
        .action("a", COUNTING_SCRIPT, "")
        .action("b", COUNTING_SCRIPT, "")
        .build();
    let code = app.code_now();
    for path in [
        "/actions/nope",
        "/actions/nope/status",
        "/actions/NOPE/status",
        "/get_deploy_status?action=nope",
        "/runs?action=nope",
    ] {
        let response = app.get(path).await;
        assert_refused(&response, StatusCode::NOT_FOUND, "not_found");
    }
    let form = format!("code={}", urlencode(&code));
    for (path, body) in [
        ("/actions/nope/run", form.clone()),
        ("/verify", format!("{form}&action=nope")),
        ("/verify?action=nope", form.clone()),
    ] {
        let response = app.post_form(path, &body, &[]).await;
        assert_refused(&response, StatusCode::NOT_FOUND, "not_found");
    }
    // A browser gets the refusal as a page.
    for path in ["/actions/nope", "/runs?action=nope"] {
        let page = app.get_with(path, &[("accept", "text/html")]).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
        assert_content_type(&page, "text/html");
    }
    // Nothing was tried: the code still starts a run.
    start_action(&app, "b", &code).await;
}

#[tokio::test]
async fn the_list_of_actions_says_each_ones_state_and_last_run() {
    let app = TestApp::builder()
        .action(
            "deploy",
            COUNTING_SCRIPT,
            "name = \"Deploy production\"\ndescription = \"Builds the site.\"\nconfirm = \"This restarts production.\"",
        )
        .action("restart-cache", COUNTING_SCRIPT, "cooldown_seconds = 30")
        .build();
    let run = start_action(&app, "restart-cache", &app.code_now()).await;
    app.wait_for_run(run).await;

    let response = app.get("/actions").await;
    assert_eq!(response.status, StatusCode::OK);
    let list = response.json();
    let list = list.as_array().expect("a JSON list");
    assert_eq!(list.len(), 2);
    let (deploy, cache) = (&list[0], &list[1]);
    assert_eq!(deploy["id"], "deploy");
    assert_eq!(deploy["name"], "Deploy production");
    assert_eq!(deploy["description"], "Builds the site.");
    assert_eq!(deploy["confirm"], "This restarts production.");
    assert_eq!(deploy["state"], "idle");
    assert_eq!(deploy["last_run"], Value::Null);
    assert_eq!(deploy["start_url"], "/actions/deploy/run");
    assert_eq!(cache["name"], "restart-cache");
    assert_eq!(cache["state"], "cooling_down");
    assert_eq!(
        cache["next_run_at"],
        authrun::model::time::format_time(START + time::Duration::seconds(30))
    );
    assert_eq!(cache["last_run"]["id"], run);
    assert_eq!(cache["last_run"]["status"], "Deploy succeeded");
}

#[tokio::test]
async fn an_old_history_without_actions_belongs_to_the_first() {
    let history = r#"[
        {"time": "2024-05-01T12:00:00", "status": "Deploy succeeded"},
        {"time": "2026-11-25T11:59:00Z", "status": "Deploy failed", "id": 41, "totp_step": 59319359}
    ]"#;
    let app = TestApp::builder()
        .history(history)
        .action("deploy", COUNTING_SCRIPT, "")
        .action("other", COUNTING_SCRIPT, "")
        .build();
    let first = status_of(&app, "deploy").await;
    assert_eq!(first["history"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        first["state"], "cooling_down",
        "its cooldown counts from the old run"
    );
    let other = status_of(&app, "other").await;
    assert_eq!(other["history"].as_array().map(Vec::len), Some(0));
    assert_eq!(other["state"], "idle");
    let run = start_action(&app, "other", &app.code_now()).await;
    assert_eq!(run, 42);
    app.wait_for_run(run).await;
}

#[tokio::test]
async fn retention_and_kept_logs_count_each_action_apart() {
    let app = TestApp::builder()
        .config("[history]\nretention = 2")
        .action("a", COUNTING_SCRIPT, "cooldown_seconds = 0\nkeep_logs = 1")
        .action("b", COUNTING_SCRIPT, "cooldown_seconds = 0\nkeep_logs = 1")
        .build();
    let b = start_action(&app, "b", &app.code_now()).await;
    app.wait_for_run(b).await;
    let mut a_runs = Vec::new();
    for _ in 0..3 {
        app.advance(30);
        let run = start_action(&app, "a", &app.code_now()).await;
        app.wait_for_run(run).await;
        a_runs.push(run);
    }
    let ids: Vec<u64> = app
        .history_on_disk()
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|entry| entry["id"].as_u64())
        .collect();
    assert_eq!(
        ids,
        [b, a_runs[1], a_runs[2]],
        "b's one run stays beside a's newest two"
    );
    let log = |id: u64| app.path(&format!(".authrun/runs/{id}.log")).exists();
    assert!(log(b), "b keeps its newest log");
    assert!(log(a_runs[2]));
    assert!(!log(a_runs[1]) && !log(a_runs[0]), "a keeps only its newest log");
}

#[tokio::test]
async fn the_start_route_keeps_verifys_contract() {
    let app = TestApp::builder()
        .action("a", COUNTING_SCRIPT, "cooldown_seconds = 0")
        .action("b", BLOCKING_SCRIPT, "cooldown_seconds = 0")
        .build();
    assert_refused(
        &post_run(&app, "b", "12").await,
        StatusCode::BAD_REQUEST,
        "malformed_code",
    );
    let missing = app.post_form("/actions/b/run", "", &[]).await;
    assert_refused(&missing, StatusCode::BAD_REQUEST, "missing_code");

    // ?wait= holds the answer until the run ends.
    let body = format!("code={}", urlencode(&app.code_now()));
    let waited = app.post_form("/actions/a/run?wait=true", &body, &[]).await;
    assert_eq!(waited.status, StatusCode::OK, "{}", waited.text());
    assert_eq!(waited.json()["run"]["status"], "Deploy succeeded");

    // A browser follows the run it started; a refusal sends it back to the action's page, with the
    // answer as a flash.
    app.advance(30);
    let html = [("accept", "text/html")];
    let posted = app
        .post_form("/actions/b/run", &format!("code={}", app.code_now()), &html)
        .await;
    assert_redirect_to(&posted, "/runs/2");
    let cookie = posted.session_cookie().expect("a session for the flash");
    let page = app.get_with("/runs/2", &[("cookie", &cookie)]).await.text();
    let (kind, message) = html::flash(&page).expect("a flash");
    assert_eq!(
        (kind.as_str(), message.as_str()),
        ("success", "b started (run #2).")
    );
    app.advance(30);
    let refused = app
        .post_form("/actions/b/run", &format!("code={}", app.code_now()), &html)
        .await;
    assert_redirect_to(&refused, "/actions/b");
    let cookie = refused.session_cookie().unwrap_or(cookie);
    let page = app.get_with("/actions/b", &[("cookie", &cookie)]).await.text();
    assert_eq!(html::flash(&page).expect("a flash").0, "error", "{page}");
    let_action_finish(&app, "b");
    app.wait_for_run(2).await;
}

#[tokio::test]
async fn the_pages_say_which_action() {
    let app = TestApp::builder()
        .action(
            "deploy",
            COUNTING_SCRIPT,
            "name = \"Deploy production\"\ndescription = \"Builds the site.\"\nconfirm = \"This restarts production.\"",
        )
        .action("restart-cache", COUNTING_SCRIPT, "name = \"Restart the cache\"")
        .build();
    let home = app.get("/").await.text();
    let deploy_card = home.find("id=\"action-deploy\"").expect("the deploy card");
    let cache_card = home.find("id=\"action-restart-cache\"").expect("the cache card");
    assert!(deploy_card < cache_card, "cards in the configuration's order");
    assert!(home.contains("action=\"/actions/deploy/run\""), "{home}");
    assert!(home.contains("action=\"/actions/restart-cache/run\""), "{home}");
    assert!(home.contains("Builds the site."), "{home}");
    assert!(home.contains("This restarts production."), "{home}");
    assert_eq!(
        home.matches("name=\"confirm\"").count(),
        1,
        "only the deploy asks to confirm"
    );

    let page = app.get("/actions/restart-cache").await.text();
    assert!(html::text_of_id(&page, "state").is_some());
    assert!(page.contains("<h1>Restart the cache</h1>"), "{page}");
    assert!(page.contains("action=\"/actions/restart-cache/run\""), "{page}");
    assert!(
        page.contains("data-status-url=\"/actions/restart-cache/status\""),
        "{page}"
    );

    let run = start_action(&app, "restart-cache", &app.code_now()).await;
    app.wait_for_run(run).await;
    let run_page = app.get(&format!("/runs/{run}")).await.text();
    assert!(run_page.contains("Restart the cache"), "{run_page}");
    let list = app.get("/runs?action=restart-cache").await.text();
    assert!(list.contains("Runs of Restart the cache"), "{list}");
    assert!(
        html::table_body(&list).contains(&format!("/runs/{run}")),
        "{list}"
    );
    let other = app.get("/runs?action=deploy").await.text();
    assert!(
        !html::table_body(&other).contains(&format!("/runs/{run}")),
        "{other}"
    );
}

#[tokio::test]
async fn one_action_keeps_the_page_and_also_answers_at_its_own_routes() {
    let app = TestApp::builder().build();
    let home = app.get("/").await.text();
    assert!(home.contains("action=\"/verify\""), "{home}");
    assert!(!home.contains("id=\"action-deploy\""), "no cards for one action");
    let run = start_action(&app, "deploy", &app.code_now()).await;
    app.wait_for_run(run).await;
    assert_eq!(status_of(&app, "deploy").await, app.status().await);
    let list = app.get("/actions").await.json();
    assert_eq!(list[0]["id"], "deploy");
    assert_eq!(list[0]["name"], "Deploy");
    assert_eq!(app.get("/actions/deploy").await.status, StatusCode::OK);
}
