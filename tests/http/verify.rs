//! What `POST /verify` (and the status endpoint) answers an API client: a run for a valid code in any
//! usual encoding, a clear JSON refusal for anything else, and safe headers on every answer.

use authrun::error::AUTH_FAILED;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{
    BLOCKING_SCRIPT, SECRET, TcpServer, TestApp, assert_content_type, assert_refused,
    assert_security_headers, let_script_finish, run_one_after_another, start_run, tcp_client, wrong_code,
};

/// `POST /verify` over TCP with a multipart form, as a browser's `FormData` sends it: the status and the
/// JSON answer.
async fn post_multipart(server: &TcpServer, form: reqwest::multipart::Form) -> (reqwest::StatusCode, Value) {
    let response = tcp_client()
        .post(server.url("/verify"))
        .multipart(form)
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    (status, response.json().await.expect("JSON"))
}

/// The code an independent TOTP implementation (Python's standard library, as in RFC 6238) computes for
/// `secret` at `unix` seconds.
fn python_totp(secret: &str, unix: i64) -> String {
    const PROGRAM: &str = r#"
import base64, hashlib, hmac, struct, sys
secret, now = sys.argv[1], int(sys.argv[2])
key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
digest = hmac.new(key, struct.pack(">Q", now // 30), hashlib.sha1).digest()
offset = digest[-1] & 0x0F
number = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
print("%06d" % (number % 1000000))
"#;
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(PROGRAM)
        .arg(secret)
        .arg(unix.to_string())
        .output()
        .expect("python3 runs (scripts/test.sh installs it)");
    assert!(
        output.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let code = String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    assert_eq!(code.len(), 6, "python printed {code:?}");
    code
}

#[tokio::test]
async fn a_valid_code_answers_200_with_the_run_and_runs_the_script_once() {
    let app = TestApp::builder().build();
    let response = app.post_verify(&app.code_now()).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_content_type(&response, "application/json");
    let body = response.json();
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["message"], "Deploy started (run #1).", "{body}");
    assert_eq!(body["run_id"], 1, "{body}");
    assert_eq!(body["started_at"], "2026-11-25T12:00:10Z", "{body}");
    app.wait_for_run(1).await;
    assert_eq!(app.script_runs(), 1);
}

#[tokio::test]
async fn a_wrong_code_is_refused_as_auth_failed_and_runs_nothing() {
    let app = TestApp::builder().build();
    let response = app.post_verify(&wrong_code(&app)).await;
    assert_refused(&response, StatusCode::UNAUTHORIZED, "wrong_code");
    assert_eq!(response.json()["message"], AUTH_FAILED);
    assert_eq!(response.json()["message"], "Auth failed.");
    assert_eq!(app.script_runs(), 0);
    assert_eq!(app.status().await["history"], json!([]));
    // A wrong code leaves no cooldown behind: the right one works at once.
    let id = start_run(&app, &app.code_now()).await;
    app.wait_for_run(id).await;
    assert_eq!(app.script_runs(), 1);
}

#[tokio::test]
async fn malformed_missing_and_unreadable_codes_are_400() {
    // More bad requests than a client may make before it is banned: lift the limits for this test.
    let app = TestApp::builder()
        .config("[regulation]\nclient_max_failures = 100\nglobal_max_failures = 100")
        .build();
    for code in ["12345", "1234567", "12a456", ""] {
        let response = app.post_verify(code).await;
        assert_refused(&response, StatusCode::BAD_REQUEST, "malformed_code");
    }
    let missing = app.post_form("/verify", "foo=1", &[]).await;
    assert_refused(&missing, StatusCode::BAD_REQUEST, "missing_code");
    let not_a_form = app.post_raw("text/plain", "\u{1}garbage\u{0}%%%").await;
    assert_eq!(
        not_a_form.status,
        StatusCode::BAD_REQUEST,
        "{}",
        not_a_form.text()
    );
    assert_eq!(not_a_form.json()["success"], false);
    let bad_json = app.post_raw("application/json", "{\"code\": ").await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST, "{}", bad_json.text());
    assert_eq!(bad_json.json()["success"], false);
    assert_eq!(app.script_runs(), 0);
    assert_eq!(app.status().await["history"], json!([]));
}

#[tokio::test]
async fn spaces_in_the_code_are_ignored() {
    let app = TestApp::builder().build();
    let code = app.code_now();
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let response = app.post_verify(&spaced).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    app.wait_for_run(response.json()["run_id"].as_u64().expect("run_id"))
        .await;
    assert_eq!(app.script_runs(), 1);
}

#[tokio::test]
async fn a_code_in_a_json_body_is_accepted() {
    let app = TestApp::builder().build();
    let body = json!({ "code": app.code_now() }).to_string();
    let response = app.post_raw("application/json", body).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.json()["success"], true);
    app.wait_for_run(1).await;
    assert_eq!(app.script_runs(), 1);
}

#[tokio::test]
async fn a_code_in_a_multipart_form_is_accepted_over_tcp() {
    let app = TestApp::builder().build();
    let server = app.serve_tcp().await;
    let form = reqwest::multipart::Form::new()
        .text("note", "sent by FormData")
        .text("code", app.code_now());
    let (status, body) = post_multipart(&server, form).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["success"], true, "{body}");
    app.wait_for_run(1).await;
    assert_eq!(app.script_runs(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_code_from_an_independent_totp_implementation_is_accepted() {
    let app = TestApp::builder().build();
    let code = python_totp(SECRET, app.clock_now().unix_timestamp());
    let response = app.post_verify(&code).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    app.wait_for_run(1).await;
    assert_eq!(app.script_runs(), 1);
}

#[tokio::test]
async fn a_body_over_4_kib_is_refused_with_413() {
    let app = TestApp::builder().build();
    let padding = "a".repeat(5000);
    let form = format!("code={}&pad={padding}", app.code_now());
    let response = app.post_form("/verify", &form, &[]).await;
    assert_refused(&response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let body = json!({ "code": app.code_now(), "pad": padding }).to_string();
    let response = app.post_raw("application/json", body).await;
    assert_refused(&response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(app.script_runs(), 0);
}

#[tokio::test]
async fn a_multipart_body_over_4_kib_is_refused_with_413_over_tcp() {
    let app = TestApp::builder().build();
    let server = app.serve_tcp().await;
    let form = reqwest::multipart::Form::new()
        .text("pad", "a".repeat(5000))
        .text("code", app.code_now());
    let (status, body) = post_multipart(&server, form).await;
    assert_eq!(status, reqwest::StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"], "payload_too_large", "{body}");
    assert_eq!(app.script_runs(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_get_verify_is_405() {
    let app = TestApp::builder().build();
    let missing = app.get("/no/such/page").await;
    assert_refused(&missing, StatusCode::NOT_FOUND, "not_found");
    let missing_asset = app.get("/static/secret.txt").await;
    assert_eq!(missing_asset.status, StatusCode::NOT_FOUND);
    let get_verify = app.get("/verify").await;
    assert_eq!(get_verify.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(app.script_runs(), 0);
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = TestApp::builder().build();
    let answers = [
        ("GET /", app.get("/").await, true),
        ("POST /verify", app.post_verify("000").await, true),
        (
            "GET /get_deploy_status",
            app.get("/get_deploy_status").await,
            true,
        ),
        ("GET /static/app.css", app.get("/static/app.css").await, false),
        ("GET /nowhere", app.get("/nowhere").await, true),
        ("GET /verify", app.get("/verify").await, true),
        (
            "POST /verify from a browser",
            app.post_verify_html("000", None).await,
            true,
        ),
    ];
    for (what, response, no_store) in &answers {
        assert_security_headers(what, response, *no_store);
    }
    let (_, css, _) = &answers[3];
    assert_eq!(css.status, StatusCode::OK);
    assert_content_type(css, "text/css");
}

#[tokio::test]
async fn the_status_says_idle_then_running_then_cooling_down() {
    let app = TestApp::builder().script(BLOCKING_SCRIPT).build();
    let idle = app.status().await;
    assert_eq!(idle["state"], "idle", "{idle}");
    assert_eq!(idle["history"], json!([]), "{idle}");

    let id = start_run(&app, &app.code_now()).await;
    let running = app.status().await;
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(running["run_id"], id, "{running}");
    assert_eq!(running["running_since"], "2026-11-25T12:00:10Z", "{running}");
    assert_eq!(running["history"][0]["status"], "Deploying", "{running}");

    let_script_finish(&app);
    app.wait_for_run(id).await;
    let cooling = app.status().await;
    assert_eq!(cooling["state"], "cooling_down", "{cooling}");
    assert_eq!(cooling["next_run_at"], "2026-11-25T12:03:10Z", "{cooling}");
    assert_eq!(cooling["cooldown_seconds"], 180, "{cooling}");
    assert_eq!(cooling["history"][0]["status"], "Deploy succeeded", "{cooling}");

    app.advance(180);
    let ready = app.status().await;
    assert_eq!(ready["state"], "idle", "{ready}");
    assert_eq!(ready["next_run_at"], json!(null), "{ready}");
}

#[tokio::test]
async fn the_status_history_is_oldest_first_and_limited_by_status_entries() {
    let app = TestApp::builder()
        .cooldown(0)
        .config("[history]\nstatus_entries = 2")
        .build();
    assert_eq!(run_one_after_another(&app, 3).await, [1, 2, 3]);
    let status = app.status().await;
    let history = status["history"].as_array().expect("history is a list");
    let ids: Vec<_> = history.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!(2), json!(3)], "{status}");
    assert_eq!(history[0]["time"], "2026-11-25T12:00:40Z", "{status}");
    assert_eq!(history[1]["time"], "2026-11-25T12:01:10Z", "{status}");
    assert_eq!(app.script_runs(), 3);
}

#[tokio::test]
async fn verify_only_accepts_post() {
    let app = TestApp::builder().build();
    for method in [Method::PUT, Method::DELETE] {
        let request = Request::builder()
            .method(method.clone())
            .uri("/verify")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("code={}", app.code_now())))
            .expect("request");
        let response = app.send(request).await;
        assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    assert_eq!(app.script_runs(), 0);
}
