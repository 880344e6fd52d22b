//! Several actions as a person uses them: the page of cards, starting one from its card and from its own
//! page, and the run page that says which action ran. The new pages pass axe as the others do.

use crate::Scene;
use crate::driver::Options;
use crate::helpers::{BLOCKING_SCRIPT, TestApp, let_action_finish};

/// `deploy` ("Deploy production", which asks to confirm) and `restart-cache` ("Restart the cache").
fn two_actions() -> TestApp {
    TestApp::builder()
        .action(
            "deploy",
            BLOCKING_SCRIPT,
            "name = \"Deploy production\"\ndescription = \"Builds and restarts the site.\"\n\
             confirm = \"This restarts production.\"",
        )
        .action(
            "restart-cache",
            BLOCKING_SCRIPT,
            "name = \"Restart the cache\"\ncooldown_seconds = 30",
        )
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_page_starts_an_action_from_its_card() {
    let scene = Scene::start("actions_cards", two_actions(), Options::default()).await;
    let browser = &scene.browser;
    scene.open("/").await;

    let mut names = Vec::new();
    for card in browser.find_all(".card h2").await {
        names.push(card.text().await.expect("the card's name"));
    }
    assert_eq!(names, ["Deploy production", "Restart the cache"]);
    assert_eq!(
        browser
            .visible_text("#action-deploy .description")
            .await
            .as_deref(),
        Some("Builds and restarts the site.")
    );
    assert_eq!(
        browser.visible_text("#action-deploy .confirm").await.as_deref(),
        Some("This restarts production.")
    );
    assert_eq!(
        browser
            .visible_text("#action-restart-cache .state-label")
            .await
            .as_deref(),
        Some("Ready")
    );
    assert_eq!(
        browser
            .visible_text("#action-restart-cache .last-run-text")
            .await
            .as_deref(),
        Some("No runs yet.")
    );
    browser.audit("actions-idle").await;

    let field = browser.find("#code-restart-cache").await;
    field
        .send_keys(&scene.app.code_now())
        .await
        .expect("type the code");
    browser
        .find("#action-restart-cache button[type=submit]")
        .await
        .click()
        .await
        .expect("press Run");
    // The browser follows the run it started, whose page names the action.
    scene.wait_path("/runs/1").await;
    scene
        .wait_flash("success", "Restart the cache started (run #1).")
        .await;
    assert_eq!(
        browser.visible_text("#run-action").await.as_deref(),
        Some("Restart the cache")
    );

    // Back on the cards, the started action's card shows its run, live; the other is still ready.
    scene.open("/").await;
    browser
        .wait_text(
            "#action-restart-cache .state-label",
            "the cache running",
            |text| text == "Running",
        )
        .await;
    browser.audit("actions-running").await;
    let_action_finish(&scene.app, "restart-cache");
    browser
        .wait_text(
            "#action-restart-cache .state-label",
            "the cache cooling down",
            |text| text == "Cooling down",
        )
        .await;
    browser
        .wait_text("#action-restart-cache .last-run-text", "its last run", |text| {
            text.starts_with("Last run: #1 Deploy succeeded")
        })
        .await;
    assert_eq!(
        browser
            .visible_text("#action-deploy .state-label")
            .await
            .as_deref(),
        Some("Ready")
    );
    browser.assert_clean_console().await;
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actions_page_asks_to_confirm_and_its_run_page_names_it() {
    let scene = Scene::start("actions_page", two_actions(), Options::default()).await;
    let browser = &scene.browser;
    scene.open("/actions/deploy").await;
    assert_eq!(
        browser.visible_text("h1").await.as_deref(),
        Some("Deploy production")
    );
    scene.wait_state("Ready").await;
    browser.audit("action-page").await;

    // Without the box ticked the browser does not send the form.
    scene.submit_code(&scene.app.code_now()).await;
    let unsent = browser
        .js(
            "return document.querySelector('#confirm').validity.valueMissing;",
            vec![],
        )
        .await;
    assert_eq!(unsent, serde_json::json!(true));
    assert_eq!(browser.visible_text("#flash").await, None);
    assert_eq!(scene.app.state.runner.history().snapshot().len(), 0);

    browser
        .find("#confirm")
        .await
        .click()
        .await
        .expect("tick the box");
    scene.submit_code(&scene.app.code_now()).await;
    scene.wait_path("/runs/1").await;
    scene
        .wait_flash("success", "Deploy production started (run #1).")
        .await;
    assert_eq!(
        browser.visible_text("#run-action").await.as_deref(),
        Some("Deploy production")
    );
    let link = browser.find("#run-action a").await;
    assert_eq!(
        link.attr("href").await.expect("href").as_deref(),
        Some("/actions/deploy")
    );

    // A refusal goes back to the action's page, which says why. (The page turns its button off while the
    // action runs; a page opened before still posts, as this one does with the button turned back on.)
    scene.open("/actions/deploy").await;
    scene.wait_state("Running").await;
    scene.app.advance(30);
    browser
        .js("document.querySelector('#run-button').disabled = false;", vec![])
        .await;
    browser
        .find("#confirm")
        .await
        .click()
        .await
        .expect("tick the box");
    scene.submit_code(&scene.app.code_now()).await;
    // The page posts from /actions/deploy and comes back to it: wait for the refusal, not the path.
    let flash = browser
        .wait_text("#flash", "the refusal", |text| !text.is_empty())
        .await;
    assert!(flash.contains("going"), "{flash}");
    scene.wait_path("/actions/deploy").await;

    scene.open("/runs?action=deploy").await;
    assert_eq!(
        browser.visible_text("h1").await.as_deref(),
        Some("Runs of Deploy production")
    );
    let_action_finish(&scene.app, "deploy");
    scene.app.wait_for_run(1).await;
    browser.assert_clean_console().await;
    scene.finish().await;
}
