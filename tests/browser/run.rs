//! Runs as a person follows them: a valid code opens the run, the page and the run page keep up by
//! themselves (colours, the end, a cancel from elsewhere), the form works without JavaScript, and the
//! cooldown counts down without chatter.

use std::time::Duration;

use serde_json::json;

use crate::a11y::COLOURFUL_SCRIPT;
use crate::driver::{Browser, Options};
use crate::helpers::{TestApp, let_script_finish};
use crate::{NEWEST_BADGE, STATE_DETAIL, STATE_LABEL, Scene};

/// The countdown beside the state: "(in 3 min)".
const COUNTDOWN: &str = "#state .state-countdown";

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

/// Whether the page's Run button is off.
async fn run_button_disabled(browser: &Browser) -> bool {
    let disabled = browser
        .find("#run-button")
        .await
        .prop("disabled")
        .await
        .expect("the button's disabled property");
    disabled.as_deref() == Some("true")
}

/// The seconds until the next run from the countdown "(in 3 min)" beside the state.
fn seconds_left(countdown: &str) -> Option<u64> {
    let rest = countdown.split("in ").nth(1)?;
    let mut words = rest.trim_end_matches(')').split_whitespace();
    let number: u64 = words.next()?.parse().ok()?;
    match words.next()? {
        "s" => Some(number),
        "min" => Some(number * 60),
        "h" => Some(number * 3600),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_code_opens_the_run_which_follows_live_and_the_page_too() {
    let app = TestApp::builder().script(COLOURFUL_SCRIPT).build();
    let scene = Scene::start("live_run", app, Options::default()).await;
    let browser = &scene.browser;
    scene.open("/").await;
    scene.submit_code(&scene.app.code_now()).await;
    // The browser goes to the run it started.
    scene.wait_path("/runs/1").await;
    scene.wait_flash("success", "Deploy started (run #1).").await;
    browser
        .wait_text("#output", "the first lines", |text| {
            text.contains("Progress: 100%")
        })
        .await;
    let output = browser.visible_text("#output").await.unwrap_or_default();
    assert!(
        !output.contains("Deployed to production"),
        "the last line came before `go`: {output}"
    );
    assert!(
        !output.contains("Progress: 10%"),
        "the progress line was not rewritten: {output}"
    );
    // Colours and bold show, as classes.
    let red = browser
        .js(
            "const e = document.querySelector('#output .fg-1'); const s = getComputedStyle(e); \
             return [e.textContent, s.color, s.fontWeight];",
            vec![],
        )
        .await;
    assert_eq!(red, json!(["error:", "rgb(255, 123, 114)", "700"]), "{red}");
    assert_eq!(
        browser.visible_text("#run-status").await.as_deref(),
        Some("Deploying")
    );
    // While it goes: how long, ticking; no empty Finished, Duration or Exit code rows.
    for hidden in ["#run-finished", "#run-duration", "#run-exit"] {
        assert_eq!(
            browser.visible_text(hidden).await,
            None,
            "{hidden} is shown while running"
        );
    }
    browser
        .wait_text("#run-elapsed", "the elapsed time ticking", |text| {
            text.ends_with(" s")
        })
        .await;
    // One scrollbar: the output grows with the page.
    let scroller = browser
        .js(
            "const s = getComputedStyle(document.getElementById('output')); return [s.overflowY, s.maxHeight];",
            vec![],
        )
        .await;
    assert_eq!(
        scroller,
        json!(["visible", "none"]),
        "the output is a scroller of its own"
    );
    assert!(
        browser.visible_text("details.cancel summary").await.is_some(),
        "a running run offers no Cancel"
    );
    // Times are local (the browser is in Europe/Berlin), with UTC in the title.
    let started = browser.find("#run time").await;
    assert_eq!(started.text().await.expect("text"), "2026-11-25 13:00");
    assert_eq!(
        started.attr("title").await.expect("title").as_deref(),
        Some("2026-11-25 12:00:10 UTC")
    );
    mark_page(browser).await;

    // The page, in a second tab, shows the run going with a link to it.
    let run_tab = browser.client.window().await.expect("the window");
    let tab = browser.client.new_window(true).await.expect("a new tab");
    browser
        .client
        .switch_to_window(tab.handle.clone())
        .await
        .expect("switch to the tab");
    scene.open("/").await;
    scene.wait_state("Running").await;
    browser
        .wait_text(NEWEST_BADGE, "run #1 Deploying", |text| text == "Deploying")
        .await;
    let link = browser.find("#state .state-link").await;
    assert_eq!(link.text().await.expect("text"), "Watch the output");
    assert_eq!(link.attr("href").await.expect("href").as_deref(), Some("/runs/1"));
    assert!(
        run_button_disabled(browser).await,
        "the button works while a run goes"
    );
    mark_page(browser).await;

    // The last line and the outcome arrive by themselves on the run page.
    browser
        .client
        .switch_to_window(run_tab)
        .await
        .expect("switch back");
    let_script_finish(&scene.app);
    browser
        .wait_text("#output", "the last line", |text| {
            text.contains("Deployed to production")
        })
        .await;
    browser
        .wait_text("#run-status", "the status Deploy succeeded", |text| {
            text == "Deploy succeeded"
        })
        .await;
    assert_eq!(browser.visible_text("#run-exit").await.as_deref(), Some("0"));
    assert_eq!(browser.visible_text("#run-elapsed").await, None);
    let finished = browser.find("#run-finished time").await;
    assert_eq!(finished.text().await.expect("text"), "2026-11-25 13:00");
    assert_eq!(
        finished.attr("title").await.expect("title").as_deref(),
        Some("2026-11-25 12:00:10 UTC")
    );
    assert_eq!(
        browser.visible_text("details.cancel summary").await,
        None,
        "a finished run still offers Cancel"
    );
    assert_not_reloaded(browser, "the run page").await;
    browser.assert_clean_console().await;
    browser.screenshot().await;

    // The page moved on too: succeeded, cooling down.
    browser
        .client
        .switch_to_window(tab.handle)
        .await
        .expect("switch to the page");
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
async fn a_run_cancelled_elsewhere_shows_who_and_the_signal_without_a_reload() {
    const TOKEN: &str = "browser-test-token-0123456789abcdef";
    let app = TestApp::builder()
        .script(COLOURFUL_SCRIPT)
        .config(&format!(
            "[access]\napi_token_sha256 = \"{}\"",
            authrun::auth::token::sha256_hex(TOKEN)
        ))
        .build();
    let scene = Scene::start("cancelled_elsewhere", app, Options::default()).await;
    let browser = &scene.browser;
    scene.open("/").await;
    scene.submit_code(&scene.app.code_now()).await;
    scene.wait_path("/runs/1").await;
    browser
        .wait_text("#output", "the output", |text| text.contains("Building"))
        .await;
    mark_page(browser).await;

    let cancelled = reqwest::Client::new()
        .post(scene.url("/runs/1/cancel"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(cancelled.status(), reqwest::StatusCode::ACCEPTED);
    browser
        .wait_text("#run-status", "the status Cancelled", |text| text == "Cancelled")
        .await;
    browser
        .wait_text("#run-note", "who cancelled", |text| {
            text == "Cancelled by API token."
        })
        .await;
    assert_eq!(
        browser.visible_text("#run-exit").await.as_deref(),
        Some("none (ended by signal 15, SIGTERM)")
    );
    assert_not_reloaded(browser, "the run page").await;
    browser.assert_clean_console().await;
    browser.screenshot().await;
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_the_form_goes_to_the_run_and_a_reload_posts_nothing() {
    let options = Options {
        no_javascript: true,
        ..Options::default()
    };
    let scene = Scene::start("no_javascript", TestApp::builder().build(), options).await;
    let browser = &scene.browser;
    scene.open("/").await;
    scene.wait_state("Ready").await;
    scene.submit_code(&scene.app.code_now()).await;
    scene.wait_path("/runs/1").await;
    scene.wait_flash("success", "Deploy started (run #1).").await;
    scene.app.wait_for_run(1).await;

    browser.client.refresh().await.expect("reload");
    browser
        .wait_text("#run-status", "the run's outcome", |text| {
            text == "Deploy succeeded"
        })
        .await;
    assert_eq!(
        browser.visible_text("#flash").await,
        None,
        "the message shows again"
    );

    scene.open("/").await;
    scene.wait_state("Cooling down").await;
    assert_eq!(
        browser.visible_text(STATE_DETAIL).await.as_deref(),
        Some("The next run is allowed at 12:03:10 UTC")
    );
    assert_eq!(
        browser.visible_text(COUNTDOWN).await.as_deref(),
        Some("(in 3 min)")
    );
    assert_eq!(
        browser.visible_text(NEWEST_BADGE).await.as_deref(),
        Some("Deploy succeeded")
    );
    // The page's script did not run: times are the server's UTC text, the button still works (the
    // server refuses, and says why).
    assert_eq!(
        browser
            .visible_text("#runs tbody tr:first-child time")
            .await
            .as_deref(),
        Some("2026-11-25 12:00:10 UTC"),
        "JavaScript was not off"
    );
    assert!(
        !run_button_disabled(browser).await,
        "without JavaScript the button is off"
    );
    assert_eq!(
        browser.visible_text("#run-wait").await.as_deref(),
        Some("Cooling down: the server refuses codes until this state ends.")
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
async fn during_the_cooldown_the_page_counts_down_quietly_and_keeps_the_focus() {
    let scene = Scene::start("cooldown", TestApp::builder().build(), Options::default()).await;
    let browser = &scene.browser;
    // A clock with a fraction of a second, as a real one has: the page's times are to the second, the
    // status answer's are not, and the state box must not take that for a change.
    scene.app.clock.advance(time::Duration::nanoseconds(462_067_285));
    scene.open("/").await;
    scene.submit_code(&scene.app.code_now()).await;
    scene.wait_path("/runs/1").await;
    scene.app.wait_for_run(1).await;
    scene.open("/").await;
    // A watch on what a screen reader would hear, set before the page's first poll (a second after load).
    browser
        .js(
            "window.__spoken = 0; new MutationObserver(function (m) { window.__spoken += m.length; }) \
               .observe(document.getElementById('state-text'), { subtree: true, childList: true, characterData: true });",
            vec![],
        )
        .await;
    scene.wait_state("Cooling down").await;
    assert_eq!(
        browser.visible_text(STATE_DETAIL).await.as_deref(),
        Some("The next run is allowed at 2026-11-25 13:03")
    );
    let first = browser
        .wait_text(COUNTDOWN, "when the next run is allowed", |text| {
            seconds_left(text).is_some()
        })
        .await;
    assert_eq!(first, "(in 3 min)");
    // The button is off, saying why and for how long.
    assert!(
        run_button_disabled(browser).await,
        "the button works during the cooldown"
    );
    browser
        .wait_text("#run-wait", "the reason beside the button", |text| {
            text == "Cooling down: wait 3 min."
        })
        .await;
    mark_page(browser).await;
    // The focus on the run's link in the table.
    browser
        .js(
            "const a = document.querySelector('#runs tbody a'); a.focus(); window.__row = a.closest('tr');",
            vec![],
        )
        .await;

    let mut left = vec![180];
    for (advance, expected) in [(150, "(in 30 s)"), (10, "(in 20 s)"), (18, "(in 2 s)")] {
        scene.app.advance(advance);
        // The page's clock runs on between its polls of the server's (which the test holds still), so
        // the text right after a poll is the one to wait for.
        let text = browser
            .wait_text_within(COUNTDOWN, expected, COUNTDOWN_WAIT, |text| text == expected)
            .await;
        left.extend(seconds_left(&text));
    }
    assert_eq!(left, [180, 30, 20, 2], "never 'just now' before the time");
    browser
        .wait_text("#run-wait", "the reason beside the button", |text| {
            text == "Cooling down: wait 2 s."
        })
        .await;
    let kept = browser
        .js(
            "return { focus: document.activeElement.textContent, same_row: document.querySelector('#runs tbody tr') === window.__row, \
                      spoken: window.__spoken, time: document.getElementById('state').dataset.time };",
            vec![],
        )
        .await;
    // `time` is still the server's: the box was never rewritten for the same state.
    assert_eq!(
        kept,
        json!({ "focus": "#1", "same_row": true, "spoken": 0, "time": "2026-11-25T12:03:10Z" }),
        "the table was rebuilt, the focus lost or the ticking announced"
    );
    browser.screenshot().await;

    // When it ends, the page says so, once.
    scene.app.advance(2);
    browser
        .wait_text_within(STATE_LABEL, "the state Ready", COUNTDOWN_WAIT, |text| {
            text == "Ready"
        })
        .await;
    assert_eq!(
        browser.visible_text(STATE_DETAIL).await.as_deref(),
        Some("Enter a code to start a run.")
    );
    assert!(
        !run_button_disabled(browser).await,
        "the button is still off after the cooldown"
    );
    let spoken = browser.js("return window.__spoken;", vec![]).await;
    assert!(
        spoken.as_u64().is_some_and(|n| n > 0),
        "the change of state was not announced"
    );
    assert_not_reloaded(browser, "the page").await;
    browser.assert_clean_console().await;
    browser.save_screenshot("cooldown_over").await;
    scene.finish().await;
}
