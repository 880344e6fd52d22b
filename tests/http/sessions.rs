//! Browser sessions as an attacker meets them: a flood of anonymous sessions cannot push out a verified
//! one, and sessions end by the product's clock.

use axum::http::StatusCode;
use futures_util::StreamExt;

use crate::browser_flow::flash;
use crate::helpers::{TestApp, TestResponse, assert_redirect_to, wrong_code};

async fn read_log(app: &TestApp, cookie: &str, id: u64) -> TestResponse {
    app.get_with(&format!("/runs/{id}/log"), &[("cookie", cookie)])
        .await
}

/// 21,700 anonymous sessions (browser posts while the run cools down: each is answered with a flash,
/// and none is a failure, so no ban stops them) are more than the store keeps; the operator who entered
/// the code keeps reading the output.
#[tokio::test]
async fn a_flood_of_anonymous_sessions_cannot_push_out_a_verified_one() {
    const FLOOD: usize = 21_700;
    let app = TestApp::builder().build();
    let posted = app.post_verify_html(&app.code_now(), None).await;
    assert_redirect_to(&posted, "/");
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
    assert_eq!(flash(&page), Some(("error".into(), "Auth failed.".into())));

    app.advance(2 * 60);
    let page = app.get_with("/", &[("cookie", &late)]).await.text();
    assert_eq!(flash(&page), None, "a session outlived an hour without use");
}
