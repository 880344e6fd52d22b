//! Operators mode as people use it: the first admin is added on the command line (`authrun operator
//! add`), opens the link, scans the QR code the page shows inline (decoded here from the image the
//! browser has), proves it with a code and gets the backup codes; signs in on the page with name and
//! code, then runs with a code alone; and administers the others on `/admin`.
//!
//! Codes come from totp-rs, fed the `otpauth://` URI read out of the QR code, as a phone's app would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::json;

use crate::driver::{Browser, Options};
use crate::helpers::{TestApp, TestResponse};
use crate::{NEWEST_BADGE, Scene};

/// The config of every scenario here: operators mode, no cooldown (the next TOTP step starts the next
/// run), and a script that ends at once.
pub fn operators_app() -> TestApp {
    TestApp::builder()
        .config("[auth]\nmode = \"operators\"\n")
        .cooldown(0)
        .build()
}

/// `authrun operator add NAME --role ROLE` on the app's config, as an admin types it on the server;
/// returns the enrollment token from the link it prints.
pub fn add_on_the_command_line(app: &TestApp, name: &str, role: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_authrun"))
        .current_dir(app.dir.path())
        .args([
            "--config",
            "authrun.toml",
            "operator",
            "add",
            name,
            "--role",
            role,
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("authrun operator add runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "authrun operator add failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let link = stdout
        .lines()
        .find(|line| line.contains("/enroll/"))
        .unwrap_or_else(|| panic!("no enrollment link printed: {stdout}"));
    link.rsplit('/').next().expect("the token").trim().to_string()
}

/// An operator's authenticator app, set up from the `otpauth://` URI.
pub struct Phone(totp_rs::Totp);

impl Phone {
    pub fn from_uri(uri: &str) -> Self {
        Self(totp_rs::Totp::from_url_unchecked(uri).unwrap_or_else(|e| panic!("{uri}: {e:?}")))
    }

    /// The code the app shows at the app's clock's time.
    pub fn code(&self, app: &TestApp) -> String {
        self.0
            .generate(app.clock_now().unix_timestamp() as u64)
            .to_string()
    }
}

/// Decodes the QR code in a PNG to its text.
fn decode_qr(png: &[u8]) -> String {
    let image = image::load_from_memory(png)
        .expect("the QR code is a PNG")
        .to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(
        image.width() as usize,
        image.height() as usize,
        |x, y| image.get_pixel(x as u32, y as u32).0[0],
    );
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    let (_, text) = grids[0].decode().expect("the QR code decodes");
    text
}

/// The enrollment page as a person sees it: the QR code, shown (loaded, not blocked), decoded from the
/// image's own `src`; the secret printed beside it must be the one in the code. Returns the phone.
pub async fn scan_the_page(browser: &Browser) -> Phone {
    let loaded = browser
        .wait_js(
            "the QR code shown",
            "const i = document.getElementById('qr'); return i && i.complete ? i.naturalWidth : 0;",
            |width| width.as_u64().unwrap_or(0) > 0,
        )
        .await;
    assert!(
        loaded.as_u64().unwrap_or(0) >= 100,
        "the QR code is {loaded} px wide"
    );
    let src = browser
        .find("#qr")
        .await
        .attr("src")
        .await
        .expect("the image's src")
        .expect("an src");
    let base64 = src
        .strip_prefix("data:image/png;base64,")
        .unwrap_or_else(|| panic!("the QR code is not an inline PNG: {src:.60}"));
    let png = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .expect("the src is base64");
    let uri = decode_qr(&png);
    let secret = browser
        .visible_text("#secret")
        .await
        .expect("the secret is shown");
    let url = url::Url::parse(&uri).expect("the QR code holds a URI");
    assert_eq!(url.scheme(), "otpauth", "{uri}");
    let in_code = url
        .query_pairs()
        .find(|(key, _)| key == "secret")
        .map(|(_, value)| value.into_owned());
    assert_eq!(in_code.as_deref(), Some(secret.as_str()), "{uri}");
    Phone::from_uri(&uri)
}

/// Types `text` into the field `css`.
pub async fn type_into(browser: &Browser, css: &str, text: &str) {
    let field = browser.find(css).await;
    field.clear().await.expect("clear the field");
    field.send_keys(text).await.expect("type");
}

/// Clicks the element `css`.
pub async fn click(browser: &Browser, css: &str) {
    browser
        .find(css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Opens the link of `token`, scans, types the code; waits for the backup codes and returns them with
/// the phone. The browser is then signed in as the new operator.
pub async fn enroll_in_the_browser(scene: &Scene, token: &str) -> (Phone, Vec<String>) {
    let browser = &scene.browser;
    scene.open(&format!("/enroll/{token}")).await;
    let phone = scan_the_page(browser).await;
    type_into(browser, "#code", &phone.code(&scene.app)).await;
    click(browser, "#enroll-button").await;
    browser
        .wait_js(
            "ten backup codes",
            "return document.querySelectorAll('#backup-codes li').length;",
            |count| count == &json!(10),
        )
        .await;
    let mut codes = Vec::new();
    for item in browser.find_all("#backup-codes li").await {
        codes.push(item.text().await.expect("a backup code"));
    }
    // The code just used is spent: the next step's is the next to type.
    scene.app.advance(30);
    (phone, codes)
}

/// Enrolls `name` through the JSON API (a second person, in another browser); returns the phone.
async fn enroll_elsewhere(app: &TestApp, name: &str) -> Phone {
    let token = add_on_the_command_line(app, name, "operator");
    let page = app
        .get_with(&format!("/enroll/{token}"), &[("accept", "application/json")])
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let phone = Phone::from_uri(page.json()["otpauth_uri"].as_str().expect("the URI"));
    let done = post_json(
        app,
        &format!("/enroll/{token}"),
        json!({"code": phone.code(app)}),
        1,
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text());
    phone
}

async fn post_json(app: &TestApp, path: &str, body: serde_json::Value, peer: u8) -> TestResponse {
    let request = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("a request");
    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, peer)), 40000);
    app.send_from(request, peer).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_shows_the_qr_code_inline_and_after_a_code_the_ten_backup_codes() {
    let app = operators_app();
    let token = add_on_the_command_line(&app, "alice", "admin");
    let scene = Scene::start("operators_enroll", app, Options::default()).await;
    let browser = &scene.browser;
    scene.open(&format!("/enroll/{token}")).await;
    browser
        .wait_text("h1", "the enrollment page", |text| {
            text == "Set up your code, alice"
        })
        .await;
    let phone = scan_the_page(browser).await;
    browser.save_screenshot("operators_enroll_qr").await;

    // A wrong code first: the page says so and keeps the same QR code.
    let wrong = crate::common::code_not_in(&[phone.code(&scene.app)]);
    type_into(browser, "#code", &wrong).await;
    click(browser, "#enroll-button").await;
    scene
        .wait_flash(
            "error",
            "That code is not right: scan the QR code again and type the code your app shows now.",
        )
        .await;
    let again = scan_the_page(browser).await;
    assert_eq!(again.code(&scene.app), phone.code(&scene.app), "a new secret");

    type_into(browser, "#code", &phone.code(&scene.app)).await;
    click(browser, "#enroll-button").await;
    browser
        .wait_text("h1", "the backup codes", |text| text == "You are enrolled")
        .await;
    let mut codes = Vec::new();
    for item in browser.find_all("#backup-codes li").await {
        codes.push(item.text().await.expect("a backup code"));
    }
    assert_eq!(codes.len(), 10, "{codes:?}");
    for code in &codes {
        let groups: Vec<&str> = code.split('-').collect();
        assert!(
            groups.len() == 3
                && groups
                    .iter()
                    .all(|group| group.len() == 4 && group.chars().all(|c| c.is_ascii_alphanumeric())),
            "a backup code grouped for reading: {code}"
        );
    }
    // The download link holds the same codes, as a text file.
    let link = browser.find("#download-codes").await;
    assert_eq!(link.text().await.expect("its text"), "Download as text");
    assert_eq!(
        link.attr("download").await.expect("download").as_deref(),
        Some("authrun-backup-codes-alice.txt")
    );
    let href = link.attr("href").await.expect("href").expect("an href");
    let text = href
        .strip_prefix("data:text/plain;base64,")
        .map(|data| {
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .expect("base64")
        })
        .map(|bytes| String::from_utf8(bytes).expect("text"))
        .unwrap_or_else(|| panic!("not a text file: {href:.60}"));
    for code in &codes {
        assert!(text.contains(code), "{code} is not in the file:\n{text}");
    }
    browser.screenshot().await;

    // The link is spent.
    scene.open(&format!("/enroll/{token}")).await;
    browser
        .wait_text("h1", "the error page", |text| text == "Not Found")
        .await;
    let console = browser.console().await;
    assert!(
        console
            .iter()
            .all(|entry| !entry.message.contains("Content Security Policy")),
        "the page broke its own policy: {console:#?}"
    );
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_with_name_and_code_and_then_runs_with_a_code_alone() {
    let app = operators_app();
    let phone = enroll_elsewhere(&app, "alice").await;
    app.advance(30);
    let scene = Scene::start("operators_sign_in", app, Options::default()).await;
    let browser = &scene.browser;
    scene.open("/").await;
    scene.wait_state("Ready").await;
    assert_eq!(
        browser.visible_text(".signed-in").await.as_deref(),
        Some("Each person signs with their own code; a backup code works too.")
    );
    type_into(browser, "#user", "alice").await;
    scene.submit_code(&phone.code(&scene.app)).await;
    scene.wait_path("/runs/1").await;
    scene.wait_flash("success", "Deploy started (run #1).").await;
    scene.app.wait_for_run(1).await;

    // Back on the page: signed in, asked for a code only.
    scene.open("/").await;
    browser
        .wait_text("#signed-in-as", "who is signed in", |text| text == "alice")
        .await;
    let line = browser.visible_text(".signed-in").await.unwrap_or_default();
    assert!(line.starts_with("Signed in as alice"), "{line}");
    assert!(
        browser.find_all("#user").await.is_empty() && browser.find_all("#password").await.is_empty(),
        "the page still asks for a name"
    );
    scene.app.advance(30);
    scene.submit_code(&phone.code(&scene.app)).await;
    scene.wait_path("/runs/2").await;
    scene.wait_flash("success", "Deploy started (run #2).").await;
    let record = scene.app.wait_for_run(2).await;
    assert_eq!(record.by.name(), Some("alice"));

    // The runs say who started them.
    scene.open("/").await;
    browser
        .wait_text(NEWEST_BADGE, "run #2 succeeded", |text| {
            text == "Deploy succeeded"
        })
        .await;
    for row in 1..=2 {
        let by = browser
            .visible_text(&format!("#runs tbody tr:nth-child({row}) .by"))
            .await;
        assert_eq!(by.as_deref(), Some("by alice"), "row {row}");
    }
    assert_eq!(scene.app.script_runs(), 2);
    browser.screenshot().await;

    // Signed out, the page asks for the name again.
    click(browser, ".signed-in button[type=submit]").await;
    scene.wait_flash("success", "Signed out.").await;
    assert!(browser.visible_text("#user").await.is_some(), "no name field");
    browser.assert_clean_console().await;
    scene.finish().await;
}

/// The text of `column` (1-based) in the admin table's row of `name`.
async fn cell(browser: &Browser, name: &str, column: usize) -> Option<String> {
    browser
        .visible_text(&format!("#operator-{name} > :nth-child({column})"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_promotes_removes_and_unlocks_operators_on_the_admin_page() {
    let app = operators_app();
    let carol = enroll_elsewhere(&app, "carol").await;
    let token = add_on_the_command_line(&app, "alice", "admin");
    let scene = Scene::start("operators_admin", app, Options::default()).await;
    let browser = &scene.browser;
    enroll_in_the_browser(&scene, &token).await;
    click(browser, "a[href='/']").await;
    click(browser, ".signed-in a[href='/admin']").await;
    scene.wait_path("/admin").await;
    browser
        .wait_text("h1", "the admin page", |text| text == "Operators")
        .await;
    assert_eq!(cell(browser, "alice", 2).await.as_deref(), Some("admin"));
    assert_eq!(cell(browser, "carol", 3).await.as_deref(), Some("yes"));

    // Add bob: the link is shown, once.
    type_into(browser, "#new-user", "bob").await;
    click(browser, ".run-form button[type=submit]").await;
    scene.wait_flash("success", "bob: added.").await;
    let link = browser
        .wait_text("#enrollment-link", "bob's enrollment link", |text| {
            text.contains("/enroll/")
        })
        .await;
    let bob_token = link.rsplit('/').next().unwrap_or_default().to_string();
    assert_eq!(cell(browser, "bob", 3).await.as_deref(), Some("pending"));
    let bob_page = scene
        .app
        .get_with(&format!("/enroll/{bob_token}"), &[("accept", "application/json")])
        .await;
    assert_eq!(bob_page.status, 200, "the link shown does not work");
    assert_eq!(bob_page.json()["user"], "bob");
    browser.save_screenshot("operators_admin_link").await;

    // Make bob an admin, then remove him.
    click(browser, "#operator-bob button[aria-label='Make admin: bob']").await;
    scene.wait_flash("success", "bob: role admin.").await;
    assert_eq!(cell(browser, "bob", 2).await.as_deref(), Some("admin"));
    assert_eq!(
        browser.visible_text("#enrollment-link").await,
        None,
        "the link shown twice"
    );
    click(browser, "#operator-bob button[aria-label='Remove bob']").await;
    scene.wait_flash("success", "bob: removed.").await;
    assert!(
        browser.find_all("#operator-bob").await.is_empty(),
        "bob is still listed"
    );

    // Carol is locked by three wrong codes (the page counts them, then shows the lock); the button lets
    // her in again.
    for peer in 10..13 {
        if peer == 12 {
            scene.open("/admin").await;
            assert_eq!(cell(browser, "carol", 7).await.as_deref(), Some("2"));
            assert_eq!(cell(browser, "carol", 8).await.as_deref(), Some("-"));
        }
        let wrong = crate::common::code_not_in(&[carol.code(&scene.app)]);
        let refused = post_json(
            &scene.app,
            "/verify",
            json!({"user": "carol", "code": wrong}),
            peer,
        )
        .await;
        assert_eq!(refused.status, 401, "{}", refused.text());
    }
    let locked = post_json(
        &scene.app,
        "/verify",
        json!({"user": "carol", "code": carol.code(&scene.app)}),
        13,
    )
    .await;
    assert_eq!(locked.status, 429, "{}", locked.text());
    scene.open("/admin").await;
    // Carol's lock ends at a date and time in the browser's zone, the UTC time in its title.
    let lock = browser
        .js(
            "const t = document.querySelector('#operator-carol > :nth-child(8) time');\n\
             return t && [t.getAttribute('datetime'), t.title, t.textContent];",
            vec![],
        )
        .await;
    assert!(
        lock[0].as_str().is_some_and(|iso| iso.starts_with("2026-11-25T"))
            && lock[1].as_str().is_some_and(|utc| utc.ends_with("UTC"))
            && lock[2].as_str().is_some_and(|text| !text.contains('T')),
        "carol's lock: {lock}"
    );
    browser.save_screenshot("operators_admin_locked").await;
    click(browser, "#operator-carol button[aria-label='Unlock carol']").await;
    scene.wait_flash("success", "carol: unlocked.").await;
    assert_eq!(cell(browser, "carol", 8).await.as_deref(), Some("-"));
    assert_eq!(cell(browser, "carol", 7).await.as_deref(), Some("0"));
    assert!(
        browser
            .find_all("#operator-carol button[aria-label='Unlock carol']")
            .await
            .is_empty(),
        "the Unlock button stays"
    );
    let started = post_json(
        &scene.app,
        "/verify",
        json!({"user": "carol", "code": carol.code(&scene.app)}),
        14,
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.text());
    browser.screenshot().await;
    browser.assert_clean_console().await;
    scene.finish().await;
}
