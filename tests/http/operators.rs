//! Operators mode: enrollment from the link to the backup codes, each operator's code, backup codes,
//! lockout, permissions, who ran what, and the admin's routes (`auth::operators`, `web::routes::operators`,
//! `web::routes::admin`). Codes are computed by totp-rs from the `otpauth://` URI the enrollment gives, as
//! an authenticator app would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use authrun::auth::operators;
use authrun::model::operator::Role;
use authrun::store::file::operators as file;
use base64::Engine;

use crate::helpers::{PEER, TestApp, TestResponse, form_request, urlencode};

const OPERATORS: &str = "[auth]\nmode = \"operators\"\n";

fn app(extra: &str) -> TestApp {
    TestApp::builder()
        .config(OPERATORS)
        .config(extra)
        .cooldown(0)
        .build()
}

/// Adds `name` as the command line does; returns the enrollment token.
fn add(app: &TestApp, name: &str, role: Role) -> String {
    let now = app.clock_now();
    file::edit(&app.state.config.operators_file, |list| {
        operators::add(
            list,
            name,
            role,
            None,
            now,
            std::time::Duration::from_secs(86_400),
        )
        .map_err(|error| authrun::store::StoreError::Refused(error.to_string()))
    })
    .unwrap()
}

/// An operator's authenticator: the TOTP of the enrollment's URI.
struct Phone(totp_rs::Totp);

impl Phone {
    fn code(&self, app: &TestApp) -> String {
        self.0
            .generate(app.clock_now().unix_timestamp() as u64)
            .to_string()
    }
}

async fn json_post(app: &TestApp, path: &str, body: serde_json::Value, peer: SocketAddr) -> TestResponse {
    let request = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    app.send_from(request, peer).await
}

/// Enrolls `name` through the JSON API; returns the phone and the backup codes.
async fn enroll(app: &TestApp, name: &str, role: Role) -> (Phone, Vec<String>) {
    let token = add(app, name, role);
    let page = app
        .get_with(&format!("/enroll/{token}"), &[("accept", "application/json")])
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let page = page.json();
    assert_eq!(page["user"], name);
    let uri = page["otpauth_uri"].as_str().unwrap();
    let phone = Phone(totp_rs::Totp::from_url_unchecked(uri).unwrap());
    let done = json_post(
        app,
        &format!("/enroll/{token}"),
        serde_json::json!({"code": phone.code(app)}),
        PEER,
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text());
    let codes = done.json()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap().to_string())
        .collect();
    // The code just used is spent: the next step's starts runs.
    app.advance(30);
    (phone, codes)
}

fn peer(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)), 40000)
}

async fn run(app: &TestApp, user: &str, code: &str, peer: SocketAddr) -> TestResponse {
    json_post(
        app,
        "/verify",
        serde_json::json!({"user": user, "code": code}),
        peer,
    )
    .await
}

#[tokio::test]
async fn enrollment_shows_the_secret_as_an_inline_qr_code_and_gives_ten_backup_codes_once() {
    let app = app("");
    let token = add(&app, "alice", Role::Admin);
    assert!(token.len() >= 32, "at least 128 bits");
    let json = app
        .get_with(&format!("/enroll/{token}"), &[("accept", "application/json")])
        .await
        .json();
    let secret = json["secret"].as_str().unwrap().to_string();
    let uri = json["otpauth_uri"].as_str().unwrap().to_string();
    assert!(uri.contains(&secret), "{uri}");
    // The PNG decodes to the URI.
    let png = base64::engine::general_purpose::STANDARD
        .decode(json["qr_png_base64"].as_str().unwrap())
        .unwrap();
    let image = image::load_from_memory(&png).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(
        image.width() as usize,
        image.height() as usize,
        |x, y| image.get_pixel(x as u32, y as u32).0[0],
    );
    let grids = prepared.detect_grids();
    let (_, decoded) = grids[0].decode().unwrap();
    assert_eq!(decoded, uri);
    // The page shows the same QR code inline, and the same secret on a reload.
    let html = app
        .get_with(&format!("/enroll/{token}"), &[("accept", "text/html")])
        .await;
    assert_eq!(html.status, 200);
    let html = html.text();
    assert!(html.contains("src=\"data:image/png;base64,"), "{html}");
    assert!(html.contains(&secret));
    // Only the token's hash is on disk.
    let stored = std::fs::read_to_string(&app.state.config.operators_file).unwrap();
    assert!(!stored.contains(&token));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&app.state.config.operators_file)
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // A wrong code: 401, the link still works.
    let phone = Phone(totp_rs::Totp::from_url_unchecked(&uri).unwrap());
    let wrong = crate::common::code_not_in(&[phone.code(&app)]);
    let refused = json_post(
        &app,
        &format!("/enroll/{token}"),
        serde_json::json!({"code": wrong}),
        PEER,
    )
    .await;
    assert_eq!(refused.status, 401);
    let done = json_post(
        &app,
        &format!("/enroll/{token}"),
        serde_json::json!({"code": phone.code(&app)}),
        PEER,
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text());
    let codes = done.json()["backup_codes"].as_array().unwrap().clone();
    assert_eq!(codes.len(), 10);
    for code in &codes {
        let code = code.as_str().unwrap();
        assert!(!stored.contains(code));
        assert_eq!(code.len(), 14, "{code}");
    }
    // Used: the link is gone.
    let again = app
        .get_with(&format!("/enroll/{token}"), &[("accept", "application/json")])
        .await;
    assert_eq!(again.status, 404);
    assert_eq!(app.get("/enroll/not-a-token").await.status, 404);
}

#[tokio::test]
async fn five_wrong_codes_revoke_an_enrollment_link_and_an_expired_one_is_not_found() {
    let app = app("");
    let token = add(&app, "alice", Role::Admin);
    for _ in 0..5 {
        let refused = json_post(
            &app,
            &format!("/enroll/{token}"),
            serde_json::json!({"code": "000000"}),
            PEER,
        )
        .await;
        assert!(
            refused.status == 401 || refused.status == 404,
            "{}",
            refused.status
        );
    }
    assert_eq!(
        app.get_with(&format!("/enroll/{token}"), &[("accept", "application/json")])
            .await
            .status,
        404
    );
    let token = add(&app, "bob", Role::Operator);
    app.advance(24 * 3600 + 1);
    assert_eq!(
        app.get_with(&format!("/enroll/{token}"), &[("accept", "application/json")])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn an_operator_runs_with_their_own_code_and_the_history_says_who() {
    let app = app("");
    let (phone, _) = enroll(&app, "alice", Role::Admin).await;
    let code = phone.code(&app);
    let started = run(&app, "alice", &code, PEER).await;
    assert_eq!(started.status, 200, "{}", started.text());
    assert_eq!(started.json()["by"], "alice");
    let id = started.json()["run_id"].as_u64().unwrap();
    let record = app.wait_for_run(id).await;
    assert_eq!(record.by.name(), Some("alice"));
    let history = app.history_on_disk();
    let entry = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(entry["by"], "alice");
    assert_eq!(entry["method"], "totp");
    // The same code again: replayed.
    let again = run(&app, "alice", &code, PEER).await;
    assert_eq!(again.status, 401);
    assert_eq!(again.json()["error"], "replayed_code");
    // Without a name: 400.
    let nameless = json_post(
        &app,
        "/verify",
        serde_json::json!({"code": phone.code(&app)}),
        PEER,
    )
    .await;
    assert_eq!(nameless.status, 400);
    assert_eq!(nameless.json()["error"], "missing_user");
    // The shared secret opens nothing in operators mode.
    app.advance(30);
    let shared = run(&app, "alice", &app.code_now(), PEER).await;
    assert_eq!(shared.status, 401);
}

#[tokio::test]
async fn a_backup_code_works_once() {
    let app = app("");
    let (_, codes) = enroll(&app, "alice", Role::Admin).await;
    let first = run(&app, "alice", &codes[3].to_uppercase(), PEER).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let id = first.json()["run_id"].as_u64().unwrap();
    app.wait_for_run(id).await;
    let entry = app.history_on_disk().as_array().unwrap().last().unwrap().clone();
    assert_eq!(entry["method"], "backup_code");
    let again = run(&app, "alice", &codes[3], PEER).await;
    assert_eq!(again.status, 401);
    let operator = app
        .state
        .gatekeeper
        .operators
        .as_ref()
        .unwrap()
        .get("alice")
        .unwrap();
    assert_eq!(operator.backup_codes.hashes.len(), 9);
}

#[tokio::test]
async fn an_unknown_name_is_answered_exactly_like_a_wrong_code() {
    let app = app("");
    let (phone, _) = enroll(&app, "alice", Role::Admin).await;
    let wrong = crate::common::code_not_in(&[phone.code(&app)]);
    let known = run(&app, "alice", &wrong, peer(2)).await;
    let unknown = run(&app, "mallory", &wrong, peer(3)).await;
    assert_eq!(known.status, 401);
    assert_eq!(unknown.status, known.status);
    assert_eq!(unknown.body, known.body);
    let backup_known = run(&app, "alice", "aaaa-bbbb-cccc", peer(4)).await;
    let backup_unknown = run(&app, "mallory", "aaaa-bbbb-cccc", peer(5)).await;
    assert_eq!(backup_known.body, backup_unknown.body);
}

#[tokio::test]
async fn a_locked_operator_is_refused_while_others_work_and_unknown_names_lock_too() {
    let app = app("");
    let (alice, _) = enroll(&app, "alice", Role::Admin).await;
    let (bob, _) = enroll(&app, "bob", Role::Operator).await;
    for n in 0..3 {
        let wrong = crate::common::code_not_in(&[alice.code(&app)]);
        assert_eq!(run(&app, "alice", &wrong, peer(10 + n)).await.status, 401);
    }
    let locked = run(&app, "alice", &alice.code(&app), peer(20)).await;
    assert_eq!(locked.status, 429, "{}", locked.text());
    assert_eq!(locked.json()["error"], "locked");
    assert!(locked.header("retry-after").is_some());
    let started = run(&app, "bob", &bob.code(&app), peer(21)).await;
    assert_eq!(started.status, 200, "{}", started.text());
    let id = started.json()["run_id"].as_u64().unwrap();
    app.wait_for_run(id).await;
    for n in 0..3 {
        run(&app, "nobody", "123456", peer(30 + n)).await;
    }
    let unknown = run(&app, "nobody", "123456", peer(40)).await;
    assert_eq!(unknown.status, 429);
    // Fifteen minutes later alice is back.
    app.advance(15 * 60);
    let back = run(&app, "alice", &alice.code(&app), peer(22)).await;
    assert_eq!(back.status, 200, "{}", back.text());
}

#[tokio::test]
async fn an_action_allows_whom_it_names_and_says_so_only_after_the_code() {
    let app = app("[action]\nallow = [\"role:admin\"]\n");
    let (alice, _) = enroll(&app, "alice", Role::Admin).await;
    let (bob, _) = enroll(&app, "bob", Role::Operator).await;
    let wrong = run(
        &app,
        "bob",
        &crate::common::code_not_in(&[bob.code(&app)]),
        peer(2),
    )
    .await;
    assert_eq!(wrong.status, 401, "a wrong code learns nothing of the permission");
    let refused = run(&app, "bob", &bob.code(&app), peer(3)).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "not_allowed");
    assert_eq!(app.script_runs(), 0);
    let started = run(&app, "alice", &alice.code(&app), peer(4)).await;
    assert_eq!(started.status, 200);
}

/// Signs in through `/login` as an API client; the session cookie.
async fn login(app: &TestApp, user: &str, code: &str) -> String {
    let request = form_request(
        "/login",
        &format!("user={user}&code={}", urlencode(code)),
        &[("accept", "application/json")],
    );
    let answer = app.send(request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["user"], user);
    answer.session_cookie().expect("a session")
}

#[tokio::test]
async fn admin_routes_need_an_admin_session_or_the_token() {
    let token = "t0ken-for-the-admin-api";
    let app = app(&format!(
        "[access]\napi_token_sha256 = \"{}\"\n",
        authrun::auth::token::sha256_hex(token)
    ));
    let (alice, _) = enroll(&app, "alice", Role::Admin).await;
    let (bob, _) = enroll(&app, "bob", Role::Operator).await;
    assert_eq!(app.get("/api/admin/operators").await.status, 401);
    let bob_session = login(&app, "bob", &bob.code(&app)).await;
    let as_bob = app
        .get_with("/api/admin/operators", &[("cookie", &bob_session)])
        .await;
    assert_eq!(as_bob.status, 403);
    assert_eq!(
        app.get_with("/admin", &[("cookie", &bob_session)]).await.status,
        403
    );
    let alice_session = login(&app, "alice", &alice.code(&app)).await;
    let list = app
        .get_with("/api/admin/operators", &[("cookie", &alice_session)])
        .await;
    assert_eq!(list.status, 200);
    let rows = list.json();
    let keys: Vec<String> = rows[0].as_object().unwrap().keys().cloned().collect();
    for key in [
        "name",
        "role",
        "email",
        "enrolled",
        "backup_codes_left",
        "last_sign_in",
        "last_run",
        "failures",
        "locked_until",
    ] {
        assert!(keys.contains(&key.to_string()), "{key} in {keys:?}");
    }
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let bearer = format!("Bearer {token}");
    let stats = app
        .get_with("/api/admin/stats", &[("authorization", &bearer)])
        .await;
    assert_eq!(stats.status, 200, "{}", stats.text());
    let stats = stats.json();
    assert_eq!(stats["operators"]["total"], 2);
    assert_eq!(stats["operators"]["enrolled"], 2);
    assert_eq!(stats["attempts_24h"]["signed_in"], 2);
    assert!(stats["runs_24h"].is_object());
    assert_eq!(stats["lockouts_24h"], 0);
    let page = app
        .get_with("/admin", &[("cookie", &alice_session), ("accept", "text/html")])
        .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("operator-bob"));
}

#[tokio::test]
async fn no_secret_code_or_token_reaches_any_file_but_the_operators_hashes() {
    let app = app("");
    let token = add(&app, "alice", Role::Admin);
    let json = app
        .get_with(&format!("/enroll/{token}"), &[("accept", "application/json")])
        .await
        .json();
    let secret = json["secret"].as_str().unwrap().to_string();
    let phone = Phone(totp_rs::Totp::from_url_unchecked(json["otpauth_uri"].as_str().unwrap()).unwrap());
    let code = phone.code(&app);
    let done = json_post(
        &app,
        &format!("/enroll/{token}"),
        serde_json::json!({"code": code}),
        PEER,
    )
    .await;
    let codes: Vec<String> = done.json()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    app.advance(30);
    let code = phone.code(&app);
    let started = run(&app, "alice", &code, PEER).await;
    app.wait_for_run(started.json()["run_id"].as_u64().unwrap()).await;
    run(&app, "alice", &codes[0], PEER).await;
    for entry in walk(app.dir.path()) {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        for secretish in [&token, &code] {
            assert!(!text.contains(secretish.as_str()), "{name} holds a code or token");
        }
        for backup in &codes {
            assert!(!text.contains(backup.as_str()), "{name} holds a backup code");
        }
        if name != "operators.json" {
            assert!(!text.contains(&secret), "{name} holds the secret");
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// An app in operators mode with codes by mail through `smtp`.
fn app_with_mail(smtp: &crate::common::SmtpServer) -> TestApp {
    TestApp::builder()
        .config(&format!(
            "[auth]\nmode = \"operators\"\nemail_codes = true\n\
             [mail]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"authrun <authrun@example.com>\"\n",
            smtp.port
        ))
        .cooldown(0)
        .build()
}

/// Gives `name` an address, as `authrun operator add --email` does.
fn give_email(app: &TestApp, name: &str, email: &str) {
    file::edit(&app.state.config.operators_file, |list| {
        let key = authrun::model::operator::OperatorName::parse(name).unwrap();
        list.operators.get_mut(&key).unwrap().email = Some(email.to_string());
        Ok(())
    })
    .unwrap();
}

/// The codes in the mails to `to` ("Your authrun code: 123456"), in no particular order (a maildir's).
fn mailed_codes(messages: &[String], to: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|message| message.contains(to) && message.contains("Your authrun code: "))
        .filter_map(|message| message.split("Your authrun code: ").nth(1))
        .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>())
        .collect()
}

async fn ask_for_code(app: &TestApp, user: &str) -> TestResponse {
    json_post(app, "/email-code", serde_json::json!({"user": user}), PEER).await
}

fn operator_lines(app: &TestApp, change: &str) -> usize {
    crate::helpers::audit_lines(app)
        .iter()
        .filter(|line| line["event"] == "operator" && line["change"] == change)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_by_mail_arrives_works_once_expires_and_is_limited() {
    let smtp = crate::common::SmtpServer::start();
    let app = app_with_mail(&smtp);
    enroll(&app, "alice", Role::Admin).await;
    enroll(&app, "bob", Role::Operator).await;
    give_email(&app, "alice", "alice@example.com");

    // The same answer for an operator with an address, one without, and a name that does not exist.
    let asked = ask_for_code(&app, "alice").await;
    assert_eq!(asked.status, 202);
    for other in ["bob", "nobody"] {
        let answer = ask_for_code(&app, other).await;
        assert_eq!((answer.status, &answer.body), (asked.status, &asked.body));
    }
    let messages = smtp.wait_for_messages(1);
    let code = mailed_codes(&messages, "alice@example.com")
        .pop()
        .expect("a code in the mail");
    crate::helpers::eventually("the other requests are audited", || {
        operator_lines(&app, "email_code_no_address") == 2
    })
    .await;
    assert_eq!(smtp.messages().len(), 1, "bob and nobody get nothing");

    let started = run(&app, "alice", &code, PEER).await;
    assert_eq!(started.status, 200, "{}", started.text());
    app.wait_for_run(started.json()["run_id"].as_u64().unwrap()).await;
    let entry = app.history_on_disk().as_array().unwrap().last().unwrap().clone();
    assert_eq!(entry["method"], "email_code");
    assert_eq!(entry["by"], "alice");
    assert_eq!(
        run(&app, "alice", &code, PEER).await.status,
        401,
        "a mailed code works once"
    );

    // A second code expires after email_code_seconds.
    assert_eq!(ask_for_code(&app, "alice").await.status, 202);
    let second = mailed_codes(&smtp.wait_for_messages(2), "alice@example.com")
        .into_iter()
        .find(|other| *other != code)
        .expect("a second code");
    app.advance(301);
    assert_eq!(run(&app, "alice", &second, peer(2)).await.status, 401, "expired");

    // Three mails within 15 minutes; the fourth request sends nothing.
    assert_eq!(ask_for_code(&app, "alice").await.status, 202);
    smtp.wait_for_messages(3);
    assert_eq!(ask_for_code(&app, "alice").await.status, 202);
    crate::helpers::eventually("the fourth request is limited", || {
        operator_lines(&app, "email_code_limited") == 1
    })
    .await;
    assert_eq!(smtp.messages().len(), 3);
    // No code reaches the audit log or the operators file.
    let audit = std::fs::read_to_string(app.path(".authrun/audit.log")).unwrap();
    let stored = std::fs::read_to_string(&app.state.config.operators_file).unwrap();
    for code in [&code, &second] {
        assert!(!audit.contains(code.as_str()) && !stored.contains(code.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_are_mailed_when_backup_codes_run_low_and_when_locked() {
    let smtp = crate::common::SmtpServer::start();
    let app = app_with_mail(&smtp);
    let (phone, codes) = enroll(&app, "alice", Role::Admin).await;
    give_email(&app, "alice", "alice@example.com");
    for (n, code) in codes.iter().take(8).enumerate() {
        let request = form_request(
            "/login",
            &format!("user=alice&code={}", urlencode(code)),
            &[("accept", "application/json")],
        );
        let answer = app.send_from(request, peer(10 + n as u8)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let messages = smtp.wait_for_messages(1);
    assert!(messages[0].contains("2 are left"), "{}", messages[0]);
    for n in 0..3 {
        let wrong = crate::common::code_not_in(&[phone.code(&app)]);
        assert_eq!(run(&app, "alice", &wrong, peer(30 + n)).await.status, 401);
    }
    let messages = smtp.wait_for_messages(2);
    assert!(
        messages.iter().any(|message| message.contains("is locked until")),
        "{messages:?}"
    );
}

#[tokio::test]
async fn a_reset_ends_the_sessions_signed_in_before_it_at_once() {
    let app = app("");
    let (alice, _) = enroll(&app, "alice", Role::Admin).await;
    enroll(&app, "bob", Role::Admin).await;
    let session = login(&app, "alice", &alice.code(&app)).await;
    let as_alice = |path: &'static str| {
        let session = session.clone();
        let app = &app;
        async move {
            app.get_with(path, &[("cookie", &session), ("accept", "application/json")])
                .await
        }
    };
    assert_eq!(as_alice("/api/admin/operators").await.status, 200);
    app.advance(30);
    let started = run(&app, "alice", &alice.code(&app), PEER).await;
    let id = started.json()["run_id"].as_u64().unwrap();
    app.wait_for_run(id).await;
    let log = format!("/runs/{id}/log");
    let cookie = [("cookie", session.as_str())];
    assert_eq!(
        app.get_with(&log, &cookie).await.status,
        200,
        "a signed-in operator reads output"
    );
    // Alice's phone is lost: an admin resets her, as `authrun operator reset alice` does.
    let now = app.clock_now();
    let token = file::edit(&app.state.config.operators_file, |list| {
        operators::reset(list, "alice", now, std::time::Duration::from_secs(86_400))
            .map_err(|error| authrun::store::StoreError::Refused(error.to_string()))
    })
    .unwrap();
    // Whoever holds the phone and the session administers nothing any more, nor reads output.
    assert_eq!(as_alice("/api/admin/operators").await.status, 401);
    assert_eq!(app.get_with(&log, &cookie).await.status, 401);
    assert_eq!(as_alice("/account").await.status, 401);
    let csrf_free = form_request(
        "/admin/operators",
        "user=mallory&role=admin",
        &[("cookie", &session), ("accept", "application/json")],
    );
    assert_eq!(app.send(csrf_free).await.status, 401);
    assert!(
        app.state
            .gatekeeper
            .operators
            .as_ref()
            .unwrap()
            .get("mallory")
            .is_none()
    );
    // Nor once alice has enrolled again, with her new phone; her new sign-in works.
    app.advance(30);
    let page = app
        .get_with(&format!("/enroll/{token}"), &[("accept", "application/json")])
        .await
        .json();
    let phone = Phone(totp_rs::Totp::from_url_unchecked(page["otpauth_uri"].as_str().unwrap()).unwrap());
    let done = json_post(
        &app,
        &format!("/enroll/{token}"),
        serde_json::json!({"code": phone.code(&app)}),
        PEER,
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(as_alice("/api/admin/operators").await.status, 401);
    app.advance(30);
    let fresh = login(&app, "alice", &phone.code(&app)).await;
    let list = app.get_with("/api/admin/operators", &[("cookie", &fresh)]).await;
    assert_eq!(list.status, 200);
}

#[tokio::test]
async fn account_makes_new_backup_codes_for_a_code_from_the_app_only() {
    let app = app("");
    let (phone, old) = enroll(&app, "alice", Role::Admin).await;
    let session = login(&app, "alice", &phone.code(&app)).await;
    let account = app
        .get_with("/account", &[("cookie", &session), ("accept", "text/html")])
        .await;
    assert_eq!(account.status, 200);
    assert!(account.text().contains(">10<"), "ten backup codes left");
    // As the page's form posts it: the session, and the page's CSRF token in the cookie and the form.
    let csrf = crate::html::csrf_input(&account.text()).expect("a CSRF field");
    let cookies = format!(
        "{session}; {}",
        account.cookie("authrun_csrf").expect("a CSRF cookie")
    );
    let post = |code: String| {
        let request = form_request(
            "/account/backup-codes",
            &format!("csrf={csrf}&code={}", urlencode(&code)),
            &[("cookie", &cookies), ("accept", "application/json")],
        );
        app.send(request)
    };
    // A backup code does not make new ones.
    assert_eq!(post(old[0].clone()).await.status, 400);
    app.advance(30);
    let made = post(phone.code(&app)).await;
    assert_eq!(made.status, 200, "{}", made.text());
    assert_eq!(made.header("cache-control"), Some("no-store"));
    let new: Vec<String> = made.json()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap().to_string())
        .collect();
    assert_eq!(new.len(), 10);
    // The old ones stopped working, the new ones work.
    app.advance(30);
    assert_eq!(run(&app, "alice", &old[1], peer(2)).await.status, 401);
    assert_eq!(run(&app, "alice", &new[0], peer(3)).await.status, 200);
    // Without a session: 401.
    assert_eq!(app.get("/account").await.status, 401);
}

#[tokio::test]
async fn in_shared_mode_login_takes_a_code_alone_and_opens_old_output_without_a_run() {
    let app = TestApp::builder().cooldown(0).build();
    let started = crate::helpers::start_run(&app, &app.code_now()).await;
    app.wait_for_run(started).await;
    let log = format!("/runs/{started}/log");
    assert_eq!(app.get(&log).await.status, 401);
    app.advance(30);
    let request = form_request(
        "/login",
        &format!("code={}", app.code_now()),
        &[("accept", "application/json")],
    );
    let signed_in = app.send(request).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text());
    assert_eq!(signed_in.json()["user"], serde_json::Value::Null);
    let cookie = signed_in.session_cookie().expect("a session");
    assert_eq!(app.get_with(&log, &[("cookie", &cookie)]).await.status, 200);
    assert_eq!(app.script_runs(), 1, "signing in started nothing");
    // The code is spent: it starts no run afterwards.
    let again = app.post_verify(&app.code_now()).await;
    assert_eq!(again.status, 401);
    assert_eq!(again.json()["error"], "replayed_code");
}
