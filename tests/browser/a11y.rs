//! Accessibility by test: axe-core checks every page there is, in light and dark mode, at desktop and
//! phone size (and the screenshots of each are saved for a reviewer); the keyboard alone goes through
//! the whole flow with a visible focus at every stop.
//!
//! A page that comes with a later change is one more `audit` line in [`walk`] (operators mode's pages:
//! [`walk_operators`]).

use fantoccini::key::Key;
use serde_json::{Value, json};

use crate::driver::{DESKTOP, Options, PHONE};
use crate::helpers::{TestApp, let_script_finish, wrong_code};
use crate::operators::{add_on_the_command_line, click, operators_app, scan_the_page, type_into};
use crate::{NEWEST_BADGE, Scene, assert_fits_width};

/// Prints coloured lines and a progress line, then waits for a file `go` (at most two minutes).
pub const COLOURFUL_SCRIPT: &str = "#!/bin/sh\n\
    echo \"run $AUTHRUN_RUN_ID\" >> runs.txt\n\
    echo 'Building the release'\n\
    printf '\\033[1;31merror:\\033[0m retrying, \\033[32mgreen\\033[0m now\\n'\n\
    printf 'Progress: 10%%\\rProgress: 50%%\\rProgress: 100%%\\n'\n\
    i=0\n\
    while [ ! -e go ]; do\n\
    i=$((i+1))\n\
    if [ \"$i\" -gt 2400 ]; then echo 'gave up waiting for go' >&2; exit 1; fi\n\
    sleep 0.05\n\
    done\n\
    echo 'Deployed to production'\n";

/// Opens every page a person can reach, in each state it has, and audits it.
async fn walk(scene: &Scene, viewport: (u32, u32)) {
    let browser = &scene.browser;
    scene.open("/").await;
    scene.wait_state("Ready").await;
    let size = browser.js("return [innerWidth, innerHeight];", vec![]).await;
    assert_eq!(size, json!([viewport.0, viewport.1]), "the viewport");
    browser.audit("main-idle").await;
    assert_the_audit_sees_problems(scene).await;

    scene.submit_code(&scene.app.code_now()).await;
    scene.wait_path("/runs/1").await;
    browser
        .wait_text("#output", "the progress line", |text| {
            text.contains("Progress: 100%")
        })
        .await;
    browser.audit("run-running").await;

    scene.open("/").await;
    scene.wait_state("Running").await;
    browser.audit("main-running").await;

    let_script_finish(&scene.app);
    scene.app.wait_for_run(1).await;
    scene.open("/runs/1").await;
    browser.audit("run-finished").await;

    scene.open("/").await;
    scene.wait_state("Cooling down").await;
    browser.audit("main-cooling").await;

    scene.open("/runs").await;
    browser
        .wait_text(NEWEST_BADGE, "the list", |text| text == "Deploy succeeded")
        .await;
    browser.audit("runs-list").await;

    browser.assert_clean_console().await;
    scene.open("/runs/99").await;
    browser
        .wait_text("h1", "the error page", |text| text == "Not Found")
        .await;
    browser.audit("error-not-found").await;

    // Another browser, which never entered a code, following the link to the log.
    browser
        .client
        .delete_all_cookies()
        .await
        .expect("forget the cookies");
    scene.open("/runs/1/log").await;
    browser
        .wait_text("h1", "the error page", |text| text == "Unauthorized")
        .await;
    browser.audit("error-unauthorized").await;
    // The browser notes the two refusals it was shown, and nothing else.
    let noted: Vec<String> = browser
        .console()
        .await
        .into_iter()
        .map(|entry| entry.message)
        .collect();
    assert_eq!(noted.len(), 2, "{noted:#?}");
    assert!(
        noted[0].contains("/runs/99") && noted[0].contains("404"),
        "{noted:#?}"
    );
    assert!(
        noted[1].contains("/runs/1/log") && noted[1].contains("401"),
        "{noted:#?}"
    );

    // The cooldown over, five wrong codes from it: its address is blocked.
    scene.app.advance(200);
    scene.open("/").await;
    for said in [
        "4 more wrong codes",
        "3 more wrong codes",
        "2 more wrong codes",
        "1 more wrong code",
        "That was the last try",
    ] {
        scene.submit_code(&wrong_code(&scene.app)).await;
        browser
            .wait_text("#flash", said, |text| text.contains(said))
            .await;
    }
    scene.wait_state("Blocked").await;
    browser.audit("main-blocked").await;
}

/// Operators mode's pages, from the link to the admin page: the page signed out (name and code), the
/// enrollment (and its wrong code), the backup codes, the page signed in, the account and the admin page
/// with a new link shown. Each also fits the viewport's width.
async fn walk_operators(scene: &Scene, viewport: (u32, u32)) {
    let browser = &scene.browser;
    let token = add_on_the_command_line(&scene.app, "alice", "admin");
    let audit = async |name: &str| {
        browser.audit(name).await;
        assert_fits_width(browser, viewport.0, name).await;
    };
    scene.open("/").await;
    scene.wait_state("Ready").await;
    audit("operators-signed-out").await;

    scene.open(&format!("/enroll/{token}")).await;
    let phone = scan_the_page(browser).await;
    audit("enroll").await;
    type_into(
        browser,
        "#code",
        &crate::common::code_not_in(&[phone.code(&scene.app)]),
    )
    .await;
    click(browser, "#enroll-button").await;
    browser
        .wait_text("#flash", "the wrong code", |text| text.contains("not right"))
        .await;
    // The browser notes the refusal it was shown (401), and nothing else.
    let noted: Vec<String> = browser
        .console()
        .await
        .into_iter()
        .map(|entry| entry.message)
        .collect();
    assert!(
        noted.len() == 1 && noted[0].contains("/enroll/") && noted[0].contains("401"),
        "{noted:#?}"
    );
    audit("enroll-wrong-code").await;
    type_into(browser, "#code", &phone.code(&scene.app)).await;
    click(browser, "#enroll-button").await;
    browser
        .wait_text("h1", "the backup codes", |text| text == "You are enrolled")
        .await;
    audit("backup-codes").await;

    scene.open("/").await;
    browser
        .wait_text("#signed-in-as", "signed in", |text| text == "alice")
        .await;
    audit("operators-signed-in").await;
    scene.open("/account").await;
    browser
        .wait_text("h1", "the account", |text| text == "alice")
        .await;
    audit("account").await;
    scene.open("/admin").await;
    type_into(browser, "#new-user", "bob").await;
    click(browser, ".run-form button[type=submit]").await;
    browser
        .wait_text("#enrollment-link", "bob's link", |text| text.contains("/enroll/"))
        .await;
    audit("admin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pages_pass_axe_in_light_and_dark_on_a_desktop() {
    let scene = Scene::start("axe_operators_desktop", operators_app(), Options::default()).await;
    walk_operators(&scene, DESKTOP).await;
    scene.browser.assert_clean_console().await;
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pages_pass_axe_in_light_and_dark_on_a_phone() {
    let options = Options {
        phone: true,
        ..Options::default()
    };
    let scene = Scene::start("axe_operators_phone", operators_app(), options).await;
    walk_operators(&scene, PHONE).await;
    scene.browser.assert_clean_console().await;
    scene.finish().await;
}

/// axe really looks: text of too little contrast and an image without a description are found.
async fn assert_the_audit_sees_problems(scene: &Scene) {
    let browser = &scene.browser;
    browser
        .js(
            "const p = document.createElement('p'); p.id = 'axe-probe'; p.textContent = 'faint text'; \
             p.style.color = '#999'; p.style.background = '#aaa'; \
             const img = document.createElement('img'); img.src = '/static/favicon.svg'; p.append(img); \
             document.querySelector('main').append(p);",
            vec![],
        )
        .await;
    let found = browser.axe().await;
    let ids: Vec<&str> = found
        .as_array()
        .map(|list| list.iter().filter_map(|v| v["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        ids.contains(&"color-contrast") && ids.contains(&"image-alt"),
        "axe did not see the planted problems: {found}"
    );
    browser
        .js("document.getElementById('axe-probe').remove();", vec![])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_passes_axe_in_light_and_dark_on_a_desktop() {
    let app = TestApp::builder().script(COLOURFUL_SCRIPT).build();
    let scene = Scene::start("axe_desktop", app, Options::default()).await;
    walk(&scene, DESKTOP).await;
    scene.browser.assert_clean_console().await;
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_passes_axe_in_light_and_dark_on_a_phone() {
    let app = TestApp::builder().script(COLOURFUL_SCRIPT).build();
    let options = Options {
        phone: true,
        ..Options::default()
    };
    let scene = Scene::start("axe_phone", app, options).await;
    walk(&scene, PHONE).await;
    scene.browser.assert_clean_console().await;
    scene.finish().await;
}

/// What has the focus, and whether a person can see it: an outline of at least 2 px, or a shadow.
async fn focus_stop(scene: &Scene) -> Value {
    scene
        .browser
        .js(
            "const e = document.activeElement; const s = getComputedStyle(e); \
             const ring = (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2) || s.boxShadow !== 'none'; \
             return { tag: e.tagName.toLowerCase(), id: e.id, text: (e.textContent || '').trim().slice(0, 40), \
                      body: e === document.body, ring: ring, outline: s.outlineStyle + ' ' + s.outlineWidth };",
            vec![],
        )
        .await
}

/// Presses Tab until the focus leaves the page (or `limit` stops), checking each stop shows its
/// focus; returns the stops.
async fn tab_through(scene: &Scene, limit: usize) -> Vec<Value> {
    let mut stops = Vec::new();
    for _ in 0..limit {
        scene.browser.press(&[Key::Tab.into()]).await;
        let stop = focus_stop(scene).await;
        if stop["body"] == json!(true) {
            break;
        }
        if stop["ring"] != json!(true) {
            scene
                .browser
                .fail(&format!("the focus is not visible at {stop}"))
                .await;
        }
        stops.push(stop);
    }
    stops
}

fn names(stops: &[Value]) -> Vec<String> {
    stops
        .iter()
        .map(|stop| {
            let id = stop["id"].as_str().unwrap_or_default();
            if id.is_empty() {
                format!(
                    "{}:{}",
                    stop["tag"].as_str().unwrap_or_default(),
                    stop["text"].as_str().unwrap_or_default()
                )
            } else {
                format!("#{id}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_keyboard_alone_the_whole_flow_works_with_a_visible_focus_at_every_stop() {
    let app = TestApp::builder().script(COLOURFUL_SCRIPT).build();
    let scene = Scene::start("keyboard", app, Options::default()).await;
    let browser = &scene.browser;
    // Opened at its state section, as a link to it would: no autofocus, so Tab has to find the field.
    scene.open("/#state").await;
    scene.wait_state("Ready").await;
    let stops = names(&tab_through(&scene, 12).await);
    assert_eq!(
        stops,
        ["#code", "#run-button", "a:All runs"],
        "the Tab stops of the page"
    );

    // Back to the field, a code, Enter.
    browser.press(&[Key::Shift.into(), Key::Tab.into()]).await;
    browser
        .js("document.getElementById('code').focus();", vec![])
        .await;
    browser
        .press(&scene.app.code_now().chars().collect::<Vec<_>>())
        .await;
    browser.save_screenshot("keyboard_focus").await;
    browser.press(&[Key::Enter.into()]).await;
    scene.wait_path("/runs/1").await;
    scene.wait_flash("success", "Deploy started (run #1).").await;
    browser
        .wait_text("#output", "the output", |text| text.contains("Building"))
        .await;

    // The run page: its links, the cancel, the log, each with a visible focus.
    let stops = names(&tab_through(&scene, 12).await);
    assert_eq!(
        stops,
        [
            "a:← Back to the button",
            "a:All runs",
            "summary:Cancel this run…",
            "a:The whole log as text"
        ],
        "the Tab stops of the run page"
    );
    // Cancel asks first: Enter opens the confirmation, Tab reaches its button, Enter confirms.
    browser
        .js(
            "document.querySelector('details.cancel summary').focus();",
            vec![],
        )
        .await;
    browser.press(&[Key::Enter.into()]).await;
    browser.press(&[Key::Tab.into()]).await;
    let confirm = focus_stop(&scene).await;
    assert_eq!(confirm["text"], json!("Yes, cancel run #1"), "{confirm}");
    assert_eq!(confirm["ring"], json!(true), "{confirm}");
    browser.save_screenshot("keyboard_cancel").await;
    browser.press(&[Key::Enter.into()]).await;
    let record = scene.app.wait_for_run(1).await;
    assert_eq!(record.status.as_str(), "Cancelled");
    browser
        .wait_text("#run-status", "the status Cancelled", |text| text == "Cancelled")
        .await;
    // Whether the page came back before or after the run ended, it ends up saying it has.
    scene.wait_flash("success", "Run #1 has ended: Cancelled.").await;
    browser
        .wait_text("#run-note", "who cancelled", |text| {
            text == "Cancelled by a verified session."
        })
        .await;
    browser.screenshot().await;
    browser.assert_clean_console().await;
    scene.finish().await;
}
