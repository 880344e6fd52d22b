//! Runs as a person follows them: the page and the run page keep up by themselves, the form works without
//! JavaScript, and the cooldown counts down.

use std::time::Duration;

use crate::driver::{Browser, Options};
use crate::helpers::{TestApp, let_script_finish};
use crate::{NEWEST_BADGE, STATE_DETAIL, STATE_LABEL, Scene};

/// Prints a line, waits for a file `go` in its working directory, prints another. It gives up (and
/// fails) only after two minutes, so a test that never creates `go` still ends.
const STEPPED_SCRIPT: &str = "#!/bin/sh\n\
    echo \"run $AUTHRUN_RUN_ID\" >> runs.txt\n\
    echo 'Building the release'\n\
    i=0\n\
    while [ ! -e go ]; do\n\
    i=$((i+1))\n\
    if [ \"$i\" -gt 2400 ]; then echo 'gave up waiting for go' >&2; exit 1; fi\n\
    sleep 0.05\n\
    done\n\
    echo 'Deployed to production'\n";

/// How long the countdown may take to move after the clock did: the page polls every second.
const COUNTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Marks the document, so [`assert_not_reloaded`] can tell it is still the same one.
async fn mark_page(browser: &Browser) {
    browser.js("window.__authrunSamePage = true;", vec![]).await;
}

async fn assert_not_reloaded(browser: &Browser, page: &str) {
    let same = browser
        .js("return window.__authrunSamePage === true;", vec![])
        .await;
    assert_eq!(same, serde_json::json!(true), "{page} was reloaded");
}

/// The seconds until the next run from "The next run is allowed in 3 min." (the page's script's text).
fn seconds_left(detail: &str) -> Option<u64> {
    let rest = detail.split(" in ").nth(1)?;
    let mut words = rest.trim_end_matches('.').split_whitespace();
    let number: u64 = words.next()?.parse().ok()?;
    match words.next()? {
        "s" => Some(number),
        "min" => Some(number * 60),
        "h" => Some(number * 3600),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_code_starts_a_run_that_the_page_and_the_run_page_follow_live() {
    let app = TestApp::builder().script(STEPPED_SCRIPT).build();
    let scene = Scene::start("live_run", app, Options::default()).await;
    let browser = &scene.browser;
    scene.open("/").await;
    scene.submit_code(&scene.app.code_now()).await;
    scene.wait_flash("success", "Deploy started (run #1).").await;
    scene.wait_state("Running").await;
    browser
        .wait_text(NEWEST_BADGE, "run #1 Deploying", |text| text == "Deploying")
        .await;
    let link = browser.find("#state .state-link").await;
    assert_eq!(link.text().await.expect("text"), "Watch the output");
    assert_eq!(link.attr("href").await.expect("href").as_deref(), Some("/runs/1"));
    mark_page(browser).await;

    // The run page, in a second tab, shows the first line while the script waits.
    let home = browser.client.window().await.expect("the window");
    let tab = browser.client.new_window(true).await.expect("a new tab");
    browser
        .client
        .switch_to_window(tab.handle)
        .await
        .expect("switch to the tab");
    scene.open("/runs/1").await;
    browser
        .wait_text("#output", "the first line", |text| {
            text.contains("Building the release")
        })
        .await;
    let output = browser.visible_text("#output").await.unwrap_or_default();
    assert!(
        !output.contains("Deployed to production"),
        "the second line came before `go`: {output}"
    );
    assert_eq!(
        browser.visible_text("#run-status").await.as_deref(),
        Some("Deploying")
    );
    assert!(
        browser.visible_text(".cancel-form button").await.is_some(),
        "a running run offers no Cancel"
    );
    mark_page(browser).await;

    // The second line and the outcome arrive by themselves.
    let_script_finish(&scene.app);
    browser
        .wait_text("#output", "the second line", |text| {
            text.contains("Deployed to production")
        })
        .await;
    browser
        .wait_text("#run-status", "the status Deploy succeeded", |text| {
            text == "Deploy succeeded"
        })
        .await;
    assert_eq!(browser.visible_text("#run-exit").await.as_deref(), Some("0"));
    // The end time reads like the start time above it (the manual clock did not move).
    assert_eq!(
        browser.visible_text("#run-finished").await.as_deref(),
        Some("2026-11-25 12:00:10 UTC")
    );
    assert_eq!(
        browser.visible_text(".cancel-form button").await,
        None,
        "a finished run still offers Cancel"
    );
    assert_not_reloaded(browser, "the run page").await;
    browser.assert_clean_console().await;
    browser.screenshot().await;

    // The first tab moved on too: succeeded, cooling down.
    browser.client.switch_to_window(home).await.expect("switch back");
    browser
        .wait_text(NEWEST_BADGE, "run #1 succeeded on the page", |text| {
            text == "Deploy succeeded"
        })
        .await;
    scene.wait_state("Cooling down").await;
    assert_eq!(browser.visible_text("#state .state-link").await, None);
    assert_not_reloaded(browser, "the page").await;
    assert_eq!(scene.app.script_runs(), 1);
    browser.assert_clean_console().await;
    browser.save_screenshot("live_run_home").await;
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_the_form_redirects_and_a_reload_posts_nothing() {
    let options = Options {
        no_javascript: true,
        ..Options::default()
    };
    let scene = Scene::start("no_javascript", TestApp::builder().build(), options).await;
    let browser = &scene.browser;
    scene.open("/").await;
    scene.wait_state("Ready").await;
    scene.submit_code(&scene.app.code_now()).await;
    scene.wait_flash("success", "Deploy started (run #1).").await;
    let url = browser.client.current_url().await.expect("the URL");
    assert_eq!(
        url.as_str(),
        scene.url("/"),
        "the post did not redirect to the page"
    );
    scene.app.wait_for_run(1).await;

    browser.client.refresh().await.expect("reload");
    scene.wait_state("Cooling down").await;
    assert_eq!(
        browser.visible_text("#flash").await,
        None,
        "the message shows again"
    );
    assert_eq!(
        browser.visible_text(STATE_DETAIL).await.as_deref(),
        Some("The next run is allowed at 12:03:10 UTC.")
    );
    assert_eq!(
        browser.visible_text(NEWEST_BADGE).await.as_deref(),
        Some("Deploy succeeded")
    );
    // The page's script did not run: the start time is the server's exact text, not "x ago".
    assert_eq!(
        browser
            .visible_text("#runs tbody tr:first-child time")
            .await
            .as_deref(),
        Some("2026-11-25 12:00:10 UTC"),
        "JavaScript was not off"
    );
    assert_eq!(scene.app.script_runs(), 1, "the reload ran the script again");
    assert_eq!(
        scene.app.status().await["history"].as_array().map(Vec::len),
        Some(1)
    );
    browser.assert_clean_console().await;
    browser.screenshot().await;
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_cooldown_the_page_counts_down_to_the_next_run() {
    let scene = Scene::start("cooldown", TestApp::builder().build(), Options::default()).await;
    let browser = &scene.browser;
    scene.open("/").await;
    scene.submit_code(&scene.app.code_now()).await;
    scene.wait_flash("success", "Deploy started (run #1).").await;
    scene.app.wait_for_run(1).await;
    scene.wait_state("Cooling down").await;
    let first = browser
        .wait_text(STATE_DETAIL, "when the next run is allowed", |text| {
            seconds_left(text).is_some()
        })
        .await;
    assert_eq!(first, "The next run is allowed in 3 min.");
    mark_page(browser).await;

    let mut left = vec![180];
    for (advance, expected) in [
        (150, "The next run is allowed in 30 s."),
        (10, "The next run is allowed in 20 s."),
    ] {
        scene.app.advance(advance);
        let before = *left.last().unwrap_or(&u64::MAX);
        let text = browser
            .wait_text_within(STATE_DETAIL, "the countdown to go down", COUNTDOWN_WAIT, |text| {
                seconds_left(text).is_some_and(|seconds| seconds < before)
            })
            .await;
        assert_eq!(text, expected);
        left.extend(seconds_left(&text));
    }
    assert_eq!(left, [180, 30, 20]);
    assert_eq!(
        browser.visible_text(STATE_LABEL).await.as_deref(),
        Some("Cooling down")
    );
    browser.screenshot().await;

    // When it ends, the page says so.
    scene.app.advance(20);
    browser
        .wait_text_within(STATE_LABEL, "the state Ready", COUNTDOWN_WAIT, |text| {
            text == "Ready"
        })
        .await;
    assert_eq!(
        browser.visible_text(STATE_DETAIL).await.as_deref(),
        Some("Enter a code to start a run.")
    );
    assert_not_reloaded(browser, "the page").await;
    browser.assert_clean_console().await;
    browser.save_screenshot("cooldown_over").await;
    scene.finish().await;
}
