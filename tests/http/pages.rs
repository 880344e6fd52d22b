//! What a browser is shown besides the flow itself: refusals as pages in the site's layout, the icons
//! browsers ask for on their own, a block shown before any code is posted, and times a person reads.

use axum::http::StatusCode;

use crate::helpers::{
    BLOCKING_SCRIPT, TestApp, assert_redirect_to, let_script_finish, start_run, wrong_code,
};
use crate::html::flash;

/// What a browser sends as `Accept` when it follows a link.
const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

#[tokio::test]
async fn a_browser_gets_refusals_as_pages_and_api_clients_keep_their_json() {
    let app = TestApp::builder().build();
    let id = start_run(&app, &app.code_now()).await;
    app.wait_for_run(id).await;
    for (path, status, says) in [
        ("/runs/99", StatusCode::NOT_FOUND, "Not found."),
        ("/no/such/page", StatusCode::NOT_FOUND, "Not found."),
        (
            "/runs/1/log",
            StatusCode::UNAUTHORIZED,
            "Enter a valid code on the page to see this run",
        ),
    ] {
        let page = app.get_with(path, &[("accept", HTML)]).await;
        assert_eq!(page.status, status, "{path}: {}", page.text());
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
        let text = page.text();
        assert!(text.starts_with("<!doctype html>"), "{path}: {text}");
        assert!(text.contains(says), "{path}: {text}");
        assert!(
            text.contains("/static/app.css"),
            "{path}: not in the site's layout: {text}"
        );
        assert!(text.contains("Back to the button"), "{path}: {text}");
        assert!(page.header("content-security-policy").is_some(), "{path}");

        let api = app.get_with(path, &[("accept", "application/json")]).await;
        assert_eq!(api.status, status, "{path}");
        let body = api.json();
        assert_eq!(body["success"], false, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap_or_default().contains(says),
            "{body}"
        );
        let curl = app.get(path).await;
        assert_eq!(curl.header("content-type"), Some("application/json"), "{path}");
    }
}

#[tokio::test]
async fn the_icons_browsers_ask_for_are_there() {
    let app = TestApp::builder().build();
    let ico = app.get("/favicon.ico").await;
    assert_eq!(ico.status, StatusCode::OK);
    assert_eq!(ico.header("content-type"), Some("image/x-icon"));
    assert!(ico.body.starts_with(&[0, 0, 1, 0]), "not an ICO file");
    for path in ["/apple-touch-icon.png", "/apple-touch-icon-precomposed.png"] {
        let png = app.get(path).await;
        assert_eq!(png.status, StatusCode::OK, "{path}");
        assert_eq!(png.header("content-type"), Some("image/png"), "{path}");
        let image = image::load_from_memory(&png.body).expect("the icon decodes");
        assert_eq!((image.width(), image.height()), (180, 180), "{path}");
    }
    let page = app.get("/").await.text();
    assert!(page.contains("rel=\"apple-touch-icon\""), "{page}");
    assert!(
        page.contains(&format!("<footer>authrun {}</footer>", env!("CARGO_PKG_VERSION"))),
        "the footer shows the version: {page}"
    );
}

#[tokio::test]
async fn the_code_field_asks_for_exactly_the_configured_digits() {
    for digits in [6, 8] {
        // The builder's config ends with its [totp] section, so the key lands there.
        let app = TestApp::builder().config(&format!("digits = {digits}")).build();
        let page = app.get("/").await.text();
        let input = &page[page.find("<input id=\"code\"").expect("the field")..];
        let input = &input[..input.find('>').expect("the tag ends")];
        assert!(
            input.contains(&format!("pattern=\" *([0-9] *){{{digits}}}\"")),
            "{input}"
        );
        assert!(input.contains(&format!("minlength=\"{digits}\"")), "{input}");
    }
}

#[tokio::test]
async fn a_banned_browser_sees_its_block_before_posting_and_tries_are_counted_down() {
    let app = TestApp::builder().build();
    let mut cookie = String::new();
    for left in (1..=4).rev() {
        let posted = app.post_verify_html(&wrong_code(&app), None).await;
        assert_redirect_to(&posted, "/");
        cookie = posted.session_cookie().expect("a session");
        let page = app.get_with("/", &[("cookie", &cookie)]).await.text();
        let (_, message) = flash(&page).expect("the refusal is shown");
        let tries = if left == 1 {
            "1 more wrong code blocks".to_string()
        } else {
            format!("{left} more wrong codes block")
        };
        assert!(message.contains(&tries), "{message}");
        assert!(
            page.contains("<strong class=\"state-label\">Ready</strong>"),
            "{page}"
        );
    }
    let last = app.post_verify_html(&wrong_code(&app), None).await;
    let page = app
        .get_with("/", &[("cookie", &last.session_cookie().unwrap_or(cookie))])
        .await
        .text();
    assert!(
        flash(&page).is_some_and(|(_, message)| message.contains("That was the last try")),
        "{page}"
    );
    // A fresh page view, with no code posted, shows the block and its end instead of "Ready".
    let fresh = app.get("/").await.text();
    assert!(
        fresh.contains("<strong class=\"state-label\">Blocked</strong>"),
        "{fresh}"
    );
    assert!(
        fresh.contains("you can try again at <time datetime=\"2026-11-25T12:15:10Z\""),
        "{fresh}"
    );
    assert!(fresh.contains("(in 15 min)"), "{fresh}");
    assert!(
        fresh.contains("id=\"run-wait\" class=\"wait\">Blocked:"),
        "{fresh}"
    );
}

#[tokio::test]
async fn a_refused_code_during_the_cooldown_says_so_in_words_without_nanoseconds() {
    let app = TestApp::builder().build();
    // A clock with nanoseconds, as a real one has.
    app.clock.advance(time::Duration::nanoseconds(462_067_285));
    let id = start_run(&app, &app.code_now()).await;
    app.wait_for_run(id).await;
    app.advance(6);
    let posted = app.post_verify_html(&app.code_now(), None).await;
    assert_redirect_to(&posted, "/");
    let cookie = posted.session_cookie().expect("a session");
    let page = app.get_with("/", &[("cookie", &cookie)]).await.text();
    let (_, message) = flash(&page).expect("the refusal is shown");
    assert!(
        message.starts_with(
            "Cooling down: the next run is allowed at <time datetime=\"2026-11-25T12:03:10Z\" \
             data-format=\"time\" title=\"12:03:10 UTC\">12:03:10 UTC</time> (in 3 min)."
        ),
        "{message}"
    );
    assert!(!page.contains(".462"), "nanoseconds on the page: {page}");
    // API clients keep the original words, to the second.
    let api = app.post_verify(&app.code_now()).await;
    assert_eq!(api.status, StatusCode::TOO_MANY_REQUESTS);
    let text = api.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        text.starts_with("Backend is deploying or cooling down, please wait. The next run is allowed at 2026-11-25T12:03:10Z"),
        "{text}"
    );
}

#[tokio::test]
async fn without_javascript_a_running_run_reloads_at_the_end_of_its_output() {
    let app = TestApp::builder().script(BLOCKING_SCRIPT).build();
    let posted = app.post_verify_html(&app.code_now(), None).await;
    assert_redirect_to(&posted, "/runs/1");
    let cookie = posted.session_cookie().expect("a session");
    let page = app.get_with("/runs/1", &[("cookie", &cookie)]).await.text();
    assert!(
        page.contains("<noscript><meta http-equiv=\"refresh\" content=\"5;url=/runs/1#end\"></noscript>"),
        "{page}"
    );
    assert!(page.contains("<span id=\"end\"></span>"), "{page}");
    // While it runs: how long so far, and no empty rows for what is not known yet.
    assert!(
        page.contains("<dt>Running for</dt><dd id=\"run-elapsed\""),
        "{page}"
    );
    assert!(page.contains("<div id=\"row-exit\" hidden>"), "{page}");
    let_script_finish(&app);
    app.wait_for_run(1).await;
    let done = app.get_with("/runs/1", &[("cookie", &cookie)]).await.text();
    assert!(!done.contains("http-equiv=\"refresh\""), "{done}");
}
