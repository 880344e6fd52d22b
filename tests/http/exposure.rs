//! What the public answers must not give away: the public record of a cancelled run does not name the
//! operator's address, a script that cannot start does not reveal its path, a bad query string is
//! refused in the JSON format of every other refusal, and only authrun's own names are answered (DNS
//! rebinding).

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;

use crate::helpers::BLOCKING_SCRIPT;
use crate::helpers::peer;
use crate::helpers::{TestApp, TestResponse, assert_redirect_to};

/// What a browser sends as `Accept` when it posts a form or follows a link.
const HTML: &str = "text/html,application/xhtml+xml,*/*;q=0.8";
/// The operator's address, which must not appear in a public answer.
const OPERATOR: &str = "192.0.2.7";

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    from: SocketAddr,
) -> TestResponse {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Body::from(body.to_string())).expect("request");
    app.send_from(request, from).await
}

/// The value of the form's hidden `csrf` input.
fn csrf_input(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\"")?;
    let tag = &page[page[..at].rfind('<')?..];
    let value = &tag[tag.find("value=\"")? + "value=\"".len()..];
    Some(value[..value.find('"')?].to_string())
}

#[tokio::test]
async fn a_run_cancelled_from_the_page_does_not_name_the_operators_address() {
    let app = TestApp::builder().script(BLOCKING_SCRIPT).build();
    let operator = peer(OPERATOR);
    let form = format!("code={}", app.code_now());
    let form_headers = [
        ("accept", HTML),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let posted = send(&app, Method::POST, "/verify", &form_headers, &form, operator).await;
    assert_redirect_to(&posted, "/runs/1");
    let session = posted.session_cookie().expect("a verified session");
    let page = send(
        &app,
        Method::GET,
        "/runs/1",
        &[("accept", HTML), ("cookie", &session)],
        "",
        operator,
    )
    .await;
    let csrf_cookie = page
        .cookie("authrun_csrf")
        .expect("the page sets the CSRF cookie");
    let token = csrf_input(&page.text()).expect("the cancel form carries the page's token");
    let cookies = format!("{session}; {csrf_cookie}");
    let cancel_headers = [
        ("accept", HTML),
        ("content-type", "application/x-www-form-urlencoded"),
        ("cookie", &cookies),
    ];
    let cancelled = send(
        &app,
        Method::POST,
        "/runs/1/cancel",
        &cancel_headers,
        &format!("csrf={token}"),
        operator,
    )
    .await;
    assert_redirect_to(&cancelled, "/runs/1");
    let record = app.wait_for_run(1).await;
    assert_eq!(record.status.as_str(), "Cancelled");

    let status = app.get("/get_deploy_status").await.text();
    let run = app
        .get_with("/runs/1", &[("accept", "application/json")])
        .await
        .text();
    let page = app.get_with("/runs/1", &[("accept", HTML)]).await.text();
    for (what, answer) in [("status", &status), ("run", &run), ("run page", &page)] {
        assert!(
            !answer.contains(OPERATOR),
            "the {what} names the operator's address: {answer}"
        );
    }
    let run: Value = serde_json::from_str(&run).expect("JSON");
    assert_eq!(run["cancelled_by"], "a verified session", "{run}");
}

fn assert_refusal(response: &TestResponse, status: StatusCode, error: &str, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{what}: {:?}",
        response.header("content-type")
    );
    let body = response.json();
    assert_eq!(body["success"], false, "{what}: {body}");
    assert_eq!(body["error"], error, "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn a_script_that_cannot_start_does_not_reveal_its_path() {
    let app = TestApp::builder()
        .script("#!/nonexistent/interp\necho never\n")
        .build();
    let response = app.post_verify(&app.code_now()).await;
    assert_refusal(
        &response,
        StatusCode::SERVICE_UNAVAILABLE,
        "launch_failed",
        "launch",
    );

    let dir = app.dir.path().to_string_lossy().into_owned();
    let status = app.status().await;
    assert_eq!(
        status["history"][0]["error"], "the script could not be started",
        "{status}"
    );
    let run = app
        .get_with("/runs/1", &[("accept", "application/json")])
        .await
        .text();
    let page = app.get_with("/runs/1", &[("accept", HTML)]).await.text();
    for (what, answer) in [("status", status.to_string()), ("run", run), ("run page", page)] {
        assert!(
            !answer.contains(&dir),
            "the {what} shows the script's path: {answer}"
        );
        assert!(
            !answer.contains("deploy.sh"),
            "the {what} names the script: {answer}"
        );
    }
}

#[tokio::test]
async fn a_bad_query_string_is_refused_as_json() {
    let app = TestApp::builder().build();
    let requests = [
        (Method::GET, "/runs?page=abc"),
        (Method::GET, "/runs?page=-1"),
        (Method::GET, "/runs/1?wait=x"),
        (Method::GET, "/runs/1/events?after=x"),
        (Method::POST, "/verify?wait=%ff"),
        (Method::POST, "/verify?wait=soon"),
    ];
    for (method, path) in requests {
        let what = format!("{method} {path}");
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        let response = send(&app, method, path, &headers, "code=123456", crate::helpers::PEER).await;
        assert_refusal(&response, StatusCode::BAD_REQUEST, "bad_query", &what);
    }
    assert_eq!(app.script_runs(), 0);
    let message = app.get("/runs?page=abc").await.json()["message"].to_string();
    assert!(
        message.contains("page"),
        "the refusal names the parameter: {message}"
    );
}

/// A name that is neither ours nor loopback: what a DNS-rebinding page makes the browser send.
const REBOUND: &str = "rebind.attacker.example:5000";

async fn with_host(app: &TestApp, method: Method, path: &str, host: &str) -> TestResponse {
    let headers = [
        (header::HOST.as_str(), host),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let body = format!("code={}", app.code_now());
    send(app, method, path, &headers, &body, crate::helpers::PEER).await
}

#[tokio::test]
async fn without_a_public_url_only_addresses_and_localhost_are_answered() {
    let app = TestApp::builder().build();
    for host in [
        "127.0.0.1:5000",
        "127.0.0.1",
        "localhost:5000",
        "LocalHost",
        "localhost.:5000",
        "[::1]:5000",
        "192.0.2.7:8080",
        "[2001:db8::1]",
    ] {
        let page = with_host(&app, Method::GET, "/", host).await;
        assert_eq!(page.status, StatusCode::OK, "Host: {host}: {}", page.text());
    }
    for host in [
        REBOUND,
        "rebind.attacker.example",
        "localhost.attacker.example",
        "127.0.0.1.attacker.example:5000",
        "[::1",
        "127.0.0.1:http",
    ] {
        for (method, path) in [
            (Method::GET, "/"),
            (Method::GET, "/get_deploy_status"),
            (Method::GET, "/healthz"),
            (Method::GET, "/runs"),
            (Method::POST, "/verify"),
        ] {
            let what = format!("{method} {path} with Host: {host}");
            let response = with_host(&app, method, path, host).await;
            assert_refusal(&response, StatusCode::MISDIRECTED_REQUEST, "unknown_host", &what);
            assert_eq!(
                response.header("x-content-type-options"),
                Some("nosniff"),
                "{what}"
            );
        }
    }
    // The refused post with a valid code started nothing; the same code works at the right address.
    assert_eq!(app.script_runs(), 0);
    let ok = with_host(&app, Method::POST, "/verify", "127.0.0.1:5000").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    app.wait_for_run(1).await;
}

#[tokio::test]
async fn with_a_public_url_its_host_and_addresses_are_answered() {
    let app = TestApp::builder()
        .config("[server]\npublic_url = \"https://deploy.example.com\"")
        .build();
    for host in [
        "deploy.example.com",
        "Deploy.Example.COM:443",
        "127.0.0.1:5000",
        "localhost:5000",
    ] {
        let response = with_host(&app, Method::GET, "/get_deploy_status", host).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "Host: {host}: {}",
            response.text()
        );
    }
    for host in [REBOUND, "example.com", "deploy.example.com.attacker.example"] {
        let response = with_host(&app, Method::GET, "/", host).await;
        assert_refusal(&response, StatusCode::MISDIRECTED_REQUEST, "unknown_host", host);
    }
}

/// Over a real connection too, where the client (not the test) writes the `Host` line.
#[tokio::test]
async fn a_rebound_name_is_refused_over_tcp() {
    let app = TestApp::builder().build();
    let server = app.serve_tcp().await;
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let ok = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    let refused = client
        .get(server.url("/healthz"))
        .header(header::HOST, REBOUND)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(refused.status(), reqwest::StatusCode::MISDIRECTED_REQUEST);
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"], "unknown_host", "{body}");
    server.shutdown().await;
}
