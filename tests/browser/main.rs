//! authrun in a real browser: Debian's headless Chromium, driven through chromedriver (WebDriver), on an
//! authrun served over TCP on 127.0.0.1 with a real script and a manual clock. Each scenario checks what a
//! person would see and saves a screenshot of its end state under `<target>/screenshots/`.
//!
//! Chromium and chromedriver must be installed (`apt-get install chromium chromium-driver`; scripts/test.sh
//! does it): without them these tests fail, saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The scenarios use a subset of the HTTP tests' helpers, and so of the helpers all tests share.
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../http/helpers.rs"]
mod helpers;

mod a11y;
mod actions;
mod driver;
mod operators;
mod page;
mod run;

use driver::{Browser, Driver, Options};
use fantoccini::Locator;
use helpers::{TcpServer, TestApp};

/// The state's word ("Ready", "Running", "Cooling down").
pub const STATE_LABEL: &str = "#state .state-label";
/// The sentence after it.
pub const STATE_DETAIL: &str = "#state .state-detail";
/// The newest run's status badge in the recent runs.
pub const NEWEST_BADGE: &str = "#runs tbody tr:first-child .badge";

/// One scenario's world: an authrun on a real port, chromedriver, and a browser looking at the app.
/// Fields drop in order: the browser session, then chromedriver (and its browsers), the server, the app.
pub struct Scene {
    pub browser: Browser,
    pub driver: Driver,
    pub server: TcpServer,
    pub app: TestApp,
}

impl Scene {
    /// Serves `app`, starts chromedriver and a browser for `scenario`.
    pub async fn start(scenario: &str, app: TestApp, options: Options) -> Self {
        let server = app.serve_tcp().await;
        let driver = Driver::start();
        let browser = driver.browser(scenario, options).await;
        Self {
            browser,
            driver,
            server,
            app,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Opens `path` of the app.
    pub async fn open(&self, path: &str) {
        self.browser.goto(&self.url(path)).await;
    }

    /// Types `code` into the code field and presses the Run button.
    pub async fn submit_code(&self, code: &str) {
        let field = self.browser.find("#code").await;
        field.clear().await.expect("clear the code field");
        field.send_keys(code).await.expect("type the code");
        self.browser
            .find(".run-form button[type=submit]")
            .await
            .click()
            .await
            .expect("press Run");
    }

    /// Waits until the browser shows the app's `path`.
    pub async fn wait_path(&self, path: &str) {
        let expected = self.url(path);
        self.browser
            .wait_for(&format!("the page {path}"), async || {
                let url = self
                    .browser
                    .client
                    .current_url()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut shown = url.to_string();
                if let Some(at) = shown.find('#') {
                    shown.truncate(at);
                }
                if shown == expected { Ok(()) } else { Err(shown) }
            })
            .await;
    }

    /// Waits until the page shows the state `label` ("Ready", "Running", "Cooling down").
    pub async fn wait_state(&self, label: &str) {
        self.browser
            .wait_text(STATE_LABEL, &format!("the state {label}"), |text| text == label)
            .await;
    }

    /// Waits until the page shows the flash message `message`.
    pub async fn wait_flash(&self, kind: &str, message: &str) {
        let browser = &self.browser;
        let class = format!("flash-{kind}");
        browser
            .wait_for(&format!("the {kind} message {message:?}"), async || {
                let Some(text) = browser.visible_text("#flash").await else {
                    return Err("no message is shown".to_string());
                };
                let classes = match browser.client.find(Locator::Css("#flash")).await {
                    Ok(flash) => flash.attr("class").await.ok().flatten().unwrap_or_default(),
                    Err(_) => String::new(),
                };
                if text == message && classes.split_whitespace().any(|c| c == class) {
                    Ok(())
                } else {
                    Err(format!("the message {text:?} (class {classes:?})"))
                }
            })
            .await;
    }

    /// Ends the browser session and stops the server (and a script still running).
    pub async fn finish(self) {
        let Self {
            browser,
            driver,
            server,
            app,
        } = self;
        browser.close().await;
        drop(driver);
        server.shutdown().await;
        drop(app);
    }
}

/// Fails when the page in `browser` is wider than `width` CSS pixels (the device's width): the document
/// scrolls sideways, the viewport was widened to fit it, or an element sticks out (even where clipped).
pub async fn assert_fits_width(browser: &Browser, width: u32, page: &str) {
    let layout = browser
        .js(
            "const inner = window.innerWidth; \
             const out = []; \
             for (const e of document.body.querySelectorAll('*')) { \
               const r = e.getBoundingClientRect(); \
               if (r.width > 0 && (r.right > inner + 0.5 || r.left < -0.5)) { \
                 out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + \
                          (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '') + \
                          ' ' + Math.round(r.left) + '..' + Math.round(r.right)); \
               } \
             } \
             return { scroll: document.documentElement.scrollWidth, inner, sticking_out: out.slice(0, 8) };",
            vec![],
        )
        .await;
    let scroll = layout["scroll"].as_f64().unwrap_or(f64::MAX);
    let inner = layout["inner"].as_f64().unwrap_or(f64::MAX);
    if !(scroll <= inner && inner <= f64::from(width) && layout["sticking_out"] == serde_json::json!([])) {
        browser
            .fail(&format!("{page} does not fit {width} px: {layout}"))
            .await;
    }
}
