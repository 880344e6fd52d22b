//! Browser sessions as an attacker meets them: a cookie planted in the operator's browser gains nothing
//! when the operator enters a code, a refused cross-site post leaves no session behind, a flood of
//! anonymous sessions cannot push out a verified one, API clients get no session at all, and sessions end
//! by the product's clock.

use axum::http::StatusCode;
use futures_util::StreamExt;

use crate::helpers::{TestApp, TestResponse, assert_redirect_to, urlencode, wrong_code};
use crate::html::flash;

/// What a browser sends as `Accept` when it posts a form or follows a link.
const HTML: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

/// `GET /` as a browser holding `cookies`: the `Cookie` header it holds afterwards (with the CSRF cookie
/// the page hands out) and the form's CSRF token.
async fn open_page(app: &TestApp, cookies: &str) -> (String, String) {
    let page = app.get_with("/", &[("cookie", cookies), ("accept", HTML)]).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page
        .cookie("authrun_csrf")
        .expect("the page sets the CSRF cookie");
    let token = csrf.trim_start_matches("authrun_csrf=").to_string();
    (format!("{cookies}; {csrf}"), token)
}

/// The page's form, posted with `code` by a browser holding `cookies` and the form's `token`.
async fn post_the_form(app: &TestApp, cookies: &str, token: &str, code: &str) -> TestResponse {
    let form = format!("csrf={}&code={}", urlencode(token), urlencode(code));
    app.post_form("/verify", &form, &[("accept", HTML), ("cookie", cookies)])
        .await
}

async fn read_log(app: &TestApp, cookie: &str, id: u64) -> TestResponse {
    app.get_with(&format!("/runs/{id}/log"), &[("cookie", cookie)])
        .await
}

/// Cookie tossing: an attacker who can set cookies for the operator's site (a sibling subdomain, a
/// plain-http page on the same host) gives the operator's browser a session of its own, and waits for
/// the operator to enter a code with it.
#[tokio::test]
async fn a_planted_session_gains_nothing_when_the_operator_enters_a_code() {
    let app = TestApp::builder().build();
    // Any browser post that leaves a flash gives its sender a session.
    let attacker = app.post_verify_html(&wrong_code(&app), None).await;
    assert_redirect_to(&attacker, "/");
    let planted = attacker.session_cookie().expect("the attacker's own session");

    let (cookies, token) = open_page(&app, &planted).await;
    let posted = post_the_form(&app, &cookies, &token, &app.code_now()).await;
    assert_redirect_to(&posted, "/runs/1");
    let operator = posted
        .session_cookie()
        .expect("entering a code gives the browser a new session");
    assert_ne!(operator, planted, "the session id changes when it gains rights");
    app.wait_for_run(1).await;

    let by_attacker = read_log(&app, &planted, 1).await;
    assert_eq!(
        by_attacker.status,
        StatusCode::UNAUTHORIZED,
        "the planted session reads the output: {}",
        by_attacker.text()
    );
    let by_operator = read_log(&app, &operator, 1).await;
    assert_eq!(by_operator.status, StatusCode::OK, "{}", by_operator.text());
    assert!(
        by_operator.text().contains("hello from the script"),
        "{}",
        by_operator.text()
    );
    // The operator's page still says what happened.
    let page = app.get_with("/", &[("cookie", &operator)]).await.text();
    assert_eq!(
        flash(&page),
        Some(("success".into(), "Deploy started (run #1).".into()))
    );
}

/// A cross-site post costs the attacker nothing (it is not a failure), so it must not hand out a
/// session either: it would be a free cookie to plant, and free memory to fill.
#[tokio::test]
async fn a_refused_cross_site_post_creates_no_session_and_shows_the_refusal() {
    let app = TestApp::builder().build();
    let form = format!("code={}", app.code_now());
    let refused = app
        .post_form(
            "/verify",
            &form,
            &[("accept", HTML), ("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert_eq!(refused.session_cookie(), None, "a refused post created a session");
    let page = refused.text();
    let (kind, message) = flash(&page).expect("the page says why");
    assert_eq!(kind, "error");
    assert!(
        message.starts_with("Refused: this request did not come from"),
        "{message}"
    );
    assert!(
        page.contains("action=\"/verify\""),
        "the page offers the form again: {page}"
    );
    assert_eq!(app.script_runs(), 0);
}

/// 21,700 anonymous sessions (browser posts while the run cools down: each is answered with a flash,
/// and none is a failure, so no ban stops them) are more than the store keeps; the operator who entered
/// the code keeps reading the output.
#[tokio::test]
async fn a_flood_of_anonymous_sessions_cannot_push_out_a_verified_one() {
    const FLOOD: usize = 21_700;
    let app = TestApp::builder().build();
    let posted = app.post_verify_html(&app.code_now(), None).await;
    assert_redirect_to(&posted, "/runs/1");
    let operator = posted.session_cookie().expect("a verified session");
    app.wait_for_run(1).await;
    assert_eq!(read_log(&app, &operator, 1).await.status, StatusCode::OK);

    let code = wrong_code(&app);
    let created = futures_util::stream::iter(0..FLOOD)
        .map(|_| app.post_verify_html(&code, None))
        .buffer_unordered(16)
        .filter(|flood| {
            assert_redirect_to(flood, "/");
            std::future::ready(flood.session_cookie().is_some())
        })
        .count()
        .await;
    assert_eq!(created, FLOOD, "every request of the flood created a session");

    let log = read_log(&app, &operator, 1).await;
    assert_eq!(
        log.status,
        StatusCode::OK,
        "the operator lost the session: {}",
        log.text()
    );
    assert_eq!(app.script_runs(), 1);
}

/// curl and scripts read output with the API token; a cookie they would not keep is only memory spent.
#[tokio::test]
async fn an_api_client_that_starts_a_run_gets_no_session() {
    let app = TestApp::builder().build();
    let started = app.post_verify(&app.code_now()).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text());
    assert_eq!(started.session_cookie(), None, "{:?}", started.headers);
    app.wait_for_run(1).await;
}

/// A session not touched for an hour is gone: the store reads the product's clock, so this takes no
/// waiting.
#[tokio::test]
async fn a_session_ends_after_an_hour_without_use_by_the_products_clock() {
    let app = TestApp::builder().build();
    let code = wrong_code(&app);
    let early = app.post_verify_html(&code, None).await.session_cookie();
    let late = app.post_verify_html(&code, None).await.session_cookie();
    let (early, late) = (early.expect("a session"), late.expect("a session"));

    app.advance(59 * 60);
    let page = app.get_with("/", &[("cookie", &early)]).await.text();
    let (kind, message) = flash(&page).expect("the session kept its message for 59 minutes");
    assert_eq!(kind, "error", "{page}");
    assert!(
        message.starts_with("That code is wrong or was already used."),
        "{message}"
    );

    app.advance(2 * 60);
    let page = app.get_with("/", &[("cookie", &late)]).await.text();
    assert_eq!(flash(&page), None, "a session outlived an hour without use");
}

/// A restart signs no operator out: the verified session is kept (owner-only, in the state directory) and
/// still reads the run's output afterwards; a session that was never verified is not kept.
#[tokio::test]
async fn a_verified_session_outlives_a_restart() {
    let app = TestApp::builder().build();
    let anonymous = app.post_verify_html(&wrong_code(&app), None).await;
    let anonymous = anonymous.session_cookie().expect("a flash gives a session");
    let (cookies, token) = open_page(&app, "theme=light").await;
    let posted = post_the_form(&app, &cookies, &token, &app.code_now()).await;
    let operator = posted.session_cookie().expect("a verified session");
    app.wait_for_run(1).await;
    assert_eq!(read_log(&app, &operator, 1).await.status, StatusCode::OK);

    let app = app.restart().expect("authrun starts again on its files");
    let after = read_log(&app, &operator, 1).await;
    assert_eq!(
        after.status,
        StatusCode::OK,
        "signed out by a restart: {}",
        after.text()
    );
    assert!(after.text().contains("hello from the script"), "{}", after.text());
    let kept = std::fs::read_to_string(app.path(".authrun/sessions.json")).expect("the kept sessions");
    let anonymous_id = anonymous.trim_start_matches("authrun_session=");
    assert!(
        !kept.contains(anonymous_id),
        "an anonymous session was kept: {kept}"
    );
    let page = app.get_with("/", &[("cookie", &anonymous)]).await.text();
    assert_eq!(
        flash(&page),
        None,
        "the anonymous session's flash outlived the restart"
    );
}
