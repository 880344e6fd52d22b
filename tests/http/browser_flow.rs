//! A person with JavaScript off: the page shows the form, the state and the recent runs; posting the form
//! redirects to the run it started (or back to the page), which shows the outcome once, and a reload
//! neither re-shows nor re-submits.

use axum::http::StatusCode;

use crate::helpers::{
    BLOCKING_SCRIPT, TestApp, assert_content_type, assert_redirect_to, let_script_finish, start_run,
    tcp_client, wrong_code,
};
use crate::html::{flash, table_body, text_of_class};

/// The rows of the recent-runs table, as text with the tags removed.
fn run_rows(page: &str) -> Vec<String> {
    table_body(page)
        .split("<tr")
        .skip(1)
        .map(|row| {
            let mut text = String::new();
            let mut in_tag = false;
            for c in row.chars() {
                match c {
                    '<' => {
                        in_tag = true;
                        text.push(' ');
                    }
                    '>' => in_tag = false,
                    _ if !in_tag => text.push(c),
                    _ => {}
                }
            }
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect()
}

/// The `<input>` tag of the code field.
fn code_input(page: &str) -> &str {
    let at = page
        .find("<input id=\"code\"")
        .expect("the page has the code input");
    let tag = &page[at..];
    &tag[..tag.find('>').expect("the input tag ends")]
}

async fn page(app: &TestApp, cookie: &str) -> String {
    page_at(app, "/", cookie).await
}

async fn page_at(app: &TestApp, path: &str, cookie: &str) -> String {
    let response = app.get_with(path, &[("cookie", cookie)]).await;
    assert_eq!(response.status, StatusCode::OK);
    response.text()
}

#[tokio::test]
async fn a_form_post_redirects_to_the_run_which_shows_the_outcome_once() {
    let app = TestApp::builder().build();
    let response = app.post_verify_html(&app.code_now(), None).await;
    assert_redirect_to(&response, "/runs/1");
    let cookie = response.session_cookie().expect("a session cookie");
    app.wait_for_run(1).await;

    let first = page_at(&app, "/runs/1", &cookie).await;
    assert_eq!(
        flash(&first),
        Some(("success".into(), "Deploy started (run #1).".into())),
        "{first}"
    );
    let reload = page_at(&app, "/runs/1", &cookie).await;
    assert_eq!(flash(&reload), None, "{reload}");
    assert!(!reload.contains("Deploy started"), "{reload}");
    // Reloading the page started nothing.
    assert_eq!(app.script_runs(), 1);
    assert_eq!(app.status().await["history"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_wrong_code_from_the_form_is_explained_with_the_tries_left() {
    let app = TestApp::builder().build();
    let wrong = wrong_code(&app);
    let response = app.post_verify_html(&wrong, None).await;
    assert_redirect_to(&response, "/");
    let cookie = response.session_cookie().expect("a session cookie");
    let shown = page(&app, &cookie).await;
    assert_eq!(
        flash(&shown),
        Some((
            "error".into(),
            "That code is wrong or was already used. Each code works once: enter the code your app \
             shows now, and check that your phone&#39;s clock is right. 4 more wrong codes block your \
             address for a while."
                .into()
        )),
        "{shown}"
    );
    assert_eq!(app.script_runs(), 0);
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_same_site_strict() {
    let app = TestApp::builder().build();
    let response = app.post_verify_html(&app.code_now(), None).await;
    assert_redirect_to(&response, "/runs/1");
    let cookie = response
        .set_cookie("authrun_session")
        .expect("the answer sets the session cookie");
    let attributes: Vec<String> = cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attributes.iter().any(|a| a == "httponly"), "{cookie}");
    assert!(attributes.iter().any(|a| a == "samesite=strict"), "{cookie}");
    app.wait_for_run(1).await;
}

#[tokio::test]
async fn the_page_has_a_one_time_code_input_with_focus() {
    let app = TestApp::builder().build();
    let response = app.get("/").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_content_type(&response, "text/html");
    let page = response.text();
    let input = code_input(&page);
    assert!(input.contains("name=\"code\""), "{input}");
    assert!(input.contains("inputmode=\"numeric\""), "{input}");
    assert!(input.contains("autocomplete=\"one-time-code\""), "{input}");
    assert!(
        input.split_whitespace().any(|word| word == "autofocus"),
        "{input}"
    );
    assert!(page.contains("action=\"/verify\""), "{page}");
    assert!(page.contains("method=\"post\""), "{page}");
}

#[tokio::test]
async fn the_page_shows_the_state_and_the_recent_runs() {
    let app = TestApp::builder().script(BLOCKING_SCRIPT).build();
    let ready = app.get("/").await.text();
    assert_eq!(text_of_class(&ready, "state-label"), Some("Ready"), "{ready}");
    assert!(run_rows(&ready).is_empty(), "{ready}");

    let id = start_run(&app, &app.code_now()).await;
    let running = app.get("/").await.text();
    assert_eq!(
        text_of_class(&running, "state-label"),
        Some("Running"),
        "{running}"
    );
    let rows = run_rows(&running);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].starts_with("#1 Deploying"), "{rows:?}");

    let_script_finish(&app);
    app.wait_for_run(id).await;
    let cooling = app.get("/").await.text();
    assert_eq!(
        text_of_class(&cooling, "state-label"),
        Some("Cooling down"),
        "{cooling}"
    );
    assert!(cooling.contains("12:03:10 UTC"), "{cooling}");
    let rows = run_rows(&cooling);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].starts_with("#1 Deploy succeeded"), "{rows:?}");
    assert!(rows[0].contains("2026-11-25 12:00:10 UTC"), "{rows:?}");

    app.advance(180);
    let ready_again = app.get("/").await.text();
    assert_eq!(
        text_of_class(&ready_again, "state-label"),
        Some("Ready"),
        "{ready_again}"
    );
}

#[tokio::test]
async fn over_tcp_a_browser_gets_the_redirect_and_the_flash_once() {
    let app = TestApp::builder().build();
    let server = app.serve_tcp().await;
    let browser = tcp_client();

    let posted = browser
        .post(server.url("/verify"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .form(&[("code", app.code_now())])
        .send()
        .await
        .expect("the server answers");
    assert_eq!(posted.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(
        posted.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/runs/1")
    );
    app.wait_for_run(1).await;

    let get_page = || async {
        let response = browser
            .get(server.url("/runs/1"))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        response.text().await.expect("the page")
    };
    let first = get_page().await;
    assert_eq!(
        flash(&first),
        Some(("success".into(), "Deploy started (run #1).".into())),
        "{first}"
    );
    let reload = get_page().await;
    assert_eq!(flash(&reload), None, "{reload}");
    assert_eq!(app.script_runs(), 1);
    server.shutdown().await;
}
