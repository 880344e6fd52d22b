//! The page itself: it loads cleanly, a short code is stopped and a wrong one explained, and it works
//! on a phone. (The keyboard alone: `a11y`.)

use serde_json::{Value, json};

use crate::driver::{Options, PHONE};
use crate::helpers::{TestApp, wrong_code};
use crate::{NEWEST_BADGE, STATE_DETAIL, Scene, assert_fits_width};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_without_console_errors_or_requests_elsewhere() {
    let scene = Scene::start("page_loads", TestApp::builder().build(), Options::default()).await;
    scene.open("/").await;
    let browser = &scene.browser;

    scene.wait_state("Ready").await;
    assert_eq!(browser.visible_text("h1").await.as_deref(), Some("Deploy"));
    assert_eq!(
        browser.visible_text("footer").await,
        Some(format!("authrun {}", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(
        browser.visible_text(STATE_DETAIL).await.as_deref(),
        Some("Enter a code to start a run.")
    );
    assert_eq!(
        browser.visible_text("#no-runs").await.as_deref(),
        Some("No runs yet.")
    );
    // The stylesheet applied: the page is a centred column, the button is coloured.
    let style = browser
        .js(
            "return [getComputedStyle(document.querySelector('main')).maxWidth, \
                     getComputedStyle(document.querySelector('.run-form button')).backgroundColor];",
            vec![],
        )
        .await;
    assert_eq!(style[0], json!("640px"), "app.css did not apply: {style}");
    assert_ne!(
        style[1],
        json!("rgb(239, 239, 239)"),
        "the button has the browser's default look: {style}"
    );

    // Everything the page loaded came from the page's own origin.
    let loaded = browser
        .js(
            "return { origin: location.origin, \
                      resources: performance.getEntriesByType('resource').map(e => e.name) };",
            vec![],
        )
        .await;
    let origin = loaded["origin"].as_str().expect("the page's origin");
    assert_eq!(origin, scene.server.base);
    let resources: Vec<&str> = loaded["resources"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for asset in ["/static/app.css", "/static/app.js"] {
        assert!(
            resources
                .iter()
                .any(|url| url.starts_with(&format!("{origin}{asset}"))),
            "{asset} was not loaded: {resources:?}"
        );
    }
    let elsewhere: Vec<&&str> = resources
        .iter()
        .filter(|url| !url.starts_with(&format!("{origin}/")))
        .collect();
    assert!(elsewhere.is_empty(), "requests to other origins: {elsewhere:?}");

    browser.assert_clean_console().await;

    // The console is really read: an error the page would log shows up.
    browser
        .js("console.error('authrun console probe');", vec![])
        .await;
    let probe = browser.console().await;
    assert!(
        probe
            .iter()
            .any(|entry| entry.level == "SEVERE" && entry.message.contains("authrun console probe")),
        "the console log does not show errors: {probe:#?}"
    );

    browser.screenshot().await;
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_code_is_stopped_by_the_browser_and_a_wrong_one_explained_next_to_the_field() {
    let scene = Scene::start("wrong_code", TestApp::builder().build(), Options::default()).await;
    scene.open("/").await;
    let browser = &scene.browser;

    // Five digits where six are needed: the browser's own check stops the form, nothing is sent.
    browser
        .js(
            "document.querySelector('.run-form').addEventListener('submit', function () { window.__submitted = true; });",
            vec![],
        )
        .await;
    scene.submit_code("12345").await;
    let check = browser
        .js(
            "const c = document.getElementById('code'); \
             return { valid: c.validity.valid, short: c.validity.tooShort || c.validity.patternMismatch, \
                      submitted: window.__submitted === true };",
            vec![],
        )
        .await;
    assert_eq!(
        check,
        json!({ "valid": false, "short": true, "submitted": false }),
        "a 5-digit code passed the browser's check"
    );
    assert!(
        !std::fs::read_to_string(scene.app.path(".authrun/audit.log"))
            .unwrap_or_default()
            .contains("attempt"),
        "the short code reached the server"
    );

    scene.submit_code(&wrong_code(&scene.app)).await;
    scene
        .wait_flash(
            "error",
            "That code is wrong or was already used. Each code works once: enter the code your app \
             shows now, and check that your phone's clock is right. 4 more wrong codes block your \
             address for a while.",
        )
        .await;
    assert_eq!(scene.app.script_runs(), 0, "a wrong code ran the script");

    // The message sits right above the field, and the field refers to it for screen readers.
    let places = browser
        .js(
            "const f = document.getElementById('flash').getBoundingClientRect(); \
             const c = document.getElementById('code').getBoundingClientRect(); \
             return [f.bottom, c.top];",
            vec![],
        )
        .await;
    let (flash_bottom, field_top) = (
        places[0].as_f64().unwrap_or_default(),
        places[1].as_f64().unwrap_or_default(),
    );
    assert!(
        flash_bottom <= field_top && field_top - flash_bottom < 150.0,
        "the error is not next to the field: it ends at {flash_bottom} px, the field starts at {field_top} px"
    );
    let field = browser.find("#code").await;
    assert_eq!(
        field
            .attr("aria-describedby")
            .await
            .expect("attribute")
            .as_deref(),
        Some("code-hint flash")
    );

    // Ready for the next try: empty, focused, so typing goes straight in.
    assert_eq!(field.prop("value").await.expect("value").as_deref(), Some(""));
    browser.wait_focus("code").await;
    browser.press(&['1', '2', '3']).await;
    assert_eq!(field.prop("value").await.expect("value").as_deref(), Some("123"));

    browser.assert_clean_console().await;
    browser.screenshot().await;
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_nothing_overflows_and_the_button_can_be_tapped() {
    // A long unbroken line of output, as build tools print, must not widen the run page.
    let script = "#!/bin/sh\necho \"run $AUTHRUN_RUN_ID\" >> runs.txt\n\
                  echo building\n\
                  echo /srv/releases/2026-11-25T12-00-10Z/node_modules/.cache/some-very-long-package-name/dist/esm/index.min.js.map\n";
    // Earlier runs with long ids, statuses and durations, as a busy deploy has.
    let history = r#"[
        {"time": "2026-11-22T09:14:03Z", "status": "Timed out", "id": 1125, "finished": "2026-11-22T09:44:03Z", "duration_ms": 1800000},
        {"time": "2026-11-24T17:02:41Z", "status": "Deploy failed", "id": 1126, "finished": "2026-11-24T17:15:16Z", "exit_code": 1, "duration_ms": 755000},
        {"time": "2026-11-24T18:02:41Z", "status": "Interrupted", "id": 1127, "finished": "2026-11-24T18:15:16Z", "duration_ms": 755000},
        {"time": "2026-11-24T19:02:41Z", "status": "Cancelled", "id": 1128, "finished": "2026-11-24T19:15:16Z", "duration_ms": 755000, "cancelled_by": "API token", "signal": 15},
        {"time": "2026-11-25T11:46:20Z", "status": "Deploy succeeded", "id": 1129, "finished": "2026-11-25T11:58:55Z", "exit_code": 0, "duration_ms": 755000}
    ]"#;
    let app = TestApp::builder().script(script).history(history).build();
    let options = Options {
        phone: true,
        ..Options::default()
    };
    let scene = Scene::start("phone", app, options).await;
    let browser = &scene.browser;
    scene.open("/").await;
    scene.wait_state("Ready").await;
    assert_eq!(browser.find_all("#runs tbody tr").await.len(), 5);

    let screen = browser.js("return [screen.width, screen.height];", vec![]).await;
    assert_eq!(
        screen,
        json!([PHONE.0, PHONE.1]),
        "the phone's screen is not in effect"
    );
    assert_fits_width(browser, PHONE.0, "the page").await;

    // The button is on the first screen, nothing covers it, and a tap on it submits the code.
    let button = browser.find(".run-form button[type=submit]").await;
    assert!(
        button.is_displayed().await.expect("displayed"),
        "the button is hidden"
    );
    let reach = browser
        .js(
            "const b = document.querySelector('.run-form button'); const r = b.getBoundingClientRect(); \
             const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2); \
             return { inside: r.left >= 0 && r.right <= innerWidth && r.top >= 0 && r.bottom <= innerHeight, \
                      top: hit === b || b.contains(hit), width: r.width, height: r.height };",
            vec![],
        )
        .await;
    assert_eq!(
        reach["inside"],
        json!(true),
        "the button is off the first screen: {reach}"
    );
    assert_eq!(reach["top"], json!(true), "something covers the button: {reach}");
    assert!(
        reach["height"].as_f64().unwrap_or_default() >= 40.0,
        "the button is too small to tap: {reach}"
    );
    scene.submit_code(&scene.app.code_now()).await;
    scene.wait_path("/runs/1130").await;
    scene.wait_flash("success", "Deploy started (run #1130).").await;
    scene.app.wait_for_run(1130).await;
    scene.open("/").await;
    browser
        .wait_text(NEWEST_BADGE, "run #1130 succeeded", |text| {
            text == "Deploy succeeded"
        })
        .await;
    // The page's script has caught up with the server (its clock too).
    browser
        .wait_text(".state-countdown", "the cooldown counting down", |text| {
            text.contains("in ")
        })
        .await;
    assert_fits_width(browser, PHONE.0, "the page with runs").await;
    browser.screenshot().await;

    scene.open("/runs/1130").await;
    browser
        .wait_text("#output", "the output", |text| text.contains("index.min.js.map"))
        .await;
    assert_fits_width(browser, PHONE.0, "the run page").await;
    browser.save_screenshot("phone_run").await;

    scene.open("/runs").await;
    browser
        .wait_text(NEWEST_BADGE, "the list of runs", |text| {
            text == "Deploy succeeded"
        })
        .await;
    assert_fits_width(browser, PHONE.0, "the list of runs").await;
    // Badges and dates each stay on one line, and every ending has its own colours.
    let cells = browser
        .js(
            "const out = {}; \
             for (const e of document.querySelectorAll('#runs .badge, #runs time')) { \
               if (e.getClientRects().length !== 1) out.wrapped = (out.wrapped || []).concat(e.textContent); } \
             out.colours = {}; \
             for (const b of document.querySelectorAll('#runs .badge')) { \
               const s = getComputedStyle(b); out.colours[b.textContent] = s.backgroundColor + ' ' + s.color; } \
             return out;",
            vec![],
        )
        .await;
    assert_eq!(cells.get("wrapped"), None, "a badge or a date wraps: {cells}");
    let colours = cells["colours"].as_object().expect("the badges' colours");
    assert_eq!(colours.len(), 5, "{cells}");
    let distinct: std::collections::HashSet<&Value> = colours.values().collect();
    assert_eq!(distinct.len(), 5, "endings share colours: {cells}");
    browser.save_screenshot("phone_runs").await;

    browser.assert_clean_console().await;
    scene.finish().await;
}
