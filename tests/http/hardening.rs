//! Hardening a user or an attacker would notice: cross-site posts are refused before their code is
//! read, the page's own form and plain API clients pass, every answer carries the security headers,
//! slow or excess connections are dropped, and oversized bodies get 413.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::StatusCode;
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    PEER, TcpServer, TestApp, assert_redirect_to, assert_refused, assert_security_headers, audit_lines,
    content_length, peer, post_code, urlencode, wrong_code,
};
use crate::html::{csrf_input, flash, unescape_html};

/// The longest a test waits for a real socket.
const SOCKET_WAIT: Duration = Duration::from_secs(5);

const HOST: (&str, &str) = ("host", "localhost:5000");

/// `GET /` as a browser: the CSRF cookie it sets and the form's hidden CSRF token.
async fn open_page(app: &TestApp) -> (String, String) {
    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.session_cookie(), None, "viewing the page creates no session");
    let cookie = page
        .cookie("authrun_csrf")
        .expect("the page sets the CSRF cookie");
    let token = csrf_input(&page.text()).expect("the form has a csrf input");
    assert_eq!(
        cookie,
        format!("authrun_csrf={token}"),
        "the form echoes the cookie"
    );
    (cookie, token)
}

/// The flash message the page `path` shows to a browser with `cookie` next, as the browser displays it.
async fn flash_shown(app: &TestApp, path: &str, cookie: &str) -> Option<(String, String)> {
    let page = app.get_with(path, &[("cookie", cookie)]).await;
    assert_eq!(page.status, StatusCode::OK);
    flash(&page.text()).map(|(kind, text)| (kind, unescape_html(&text)))
}

const REFUSED_CROSS_SITE: &str =
    "Refused: this request did not come from authrun's own page. Reload the page and try again.";

#[tokio::test]
async fn a_post_with_a_foreign_origin_is_refused_before_its_code_is_read() {
    let app = TestApp::builder().build();
    let code = app.code_now();
    let response = post_code(&app, &code, PEER, &[HOST, ("origin", "https://evil.example")]).await;
    assert_refused(&response, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(response.json()["message"], REFUSED_CROSS_SITE);
    assert_eq!(app.status().await["history"], serde_json::json!([]));
    let lines = audit_lines(&app);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "forbidden", "{lines:?}");

    // A plain API client (no cookie, no Origin) runs as with the original, with the same code: the refused
    // post did not use it up.
    let curl = app.post_verify(&code).await;
    assert_eq!(curl.status, StatusCode::OK, "{}", curl.text());
    app.wait_for_run(1).await;
    assert_eq!(app.script_runs(), 1);
}

#[tokio::test]
async fn foreign_origins_never_reach_the_code_check() {
    let app = TestApp::builder().build();
    // More refusals than a ban needs: they are not failures, so the client is never banned.
    let foreign = [
        vec![HOST, ("origin", "https://evil.example")],
        vec![HOST, ("origin", "http://localhost:5000.evil.example")],
        vec![HOST, ("origin", "null"), ("sec-fetch-site", "cross-site")],
        vec![
            HOST,
            ("origin", "null"),
            ("cookie", "authrun_csrf=00112233445566778899aabbccddeeff"),
        ],
        vec![HOST, ("referer", "https://evil.example/deploy")],
        vec![HOST, ("referer", "http://localhost:5000.evil.example/")],
        vec![HOST, ("sec-fetch-site", "cross-site")],
        vec![("origin", "http://localhost:5000")],
    ];
    for headers in &foreign {
        let response = post_code(&app, &wrong_code(&app), PEER, headers).await;
        assert_eq!(
            response.status,
            StatusCode::FORBIDDEN,
            "{headers:?}: {}",
            response.text()
        );
        assert_eq!(response.json()["error"], "forbidden", "{headers:?}");
    }
    let ours = post_code(&app, &app.code_now(), PEER, &[]).await;
    assert_eq!(ours.status, StatusCode::OK, "{}", ours.text());
    app.wait_for_run(1).await;
}

/// Under `Referrer-Policy: no-referrer` a browser posting the page's own form sends `Origin: null`; the
/// page's CSRF token (cookie and field) is what proves it came from the page.
#[tokio::test]
async fn a_form_post_with_a_null_origin_passes_with_the_pages_token() {
    let app = TestApp::builder().build();
    let (cookie, token) = open_page(&app).await;
    let form = format!("csrf={}&code={}", urlencode(&token), app.code_now());
    let headers = [
        ("accept", "text/html"),
        ("cookie", cookie.as_str()),
        ("origin", "null"),
        ("sec-fetch-site", "same-origin"),
    ];
    let posted = app.post_form("/verify", &form, &headers).await;
    assert_redirect_to(&posted, "/runs/1");
    let session = posted.session_cookie().expect("the flash is kept in a session");
    assert_eq!(
        flash_shown(&app, "/runs/1", &format!("{cookie}; {session}")).await,
        Some(("success".into(), "Deploy started (run #1).".into()))
    );
    app.wait_for_run(1).await;
}

#[tokio::test]
async fn our_own_origin_or_referer_reaches_the_code_check() {
    let app = TestApp::builder().cooldown(0).build();
    let own_origin = [HOST, ("origin", "http://localhost:5000")];
    let wrong = post_code(&app, &wrong_code(&app), PEER, &own_origin).await;
    assert_refused(&wrong, StatusCode::UNAUTHORIZED, "wrong_code");
    let ok = post_code(&app, &app.code_now(), PEER, &own_origin).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    app.wait_for_run(1).await;

    app.advance(30);
    let own_referer = [HOST, ("referer", "http://localhost:5000/?from=page")];
    let wrong = post_code(&app, &wrong_code(&app), PEER, &own_referer).await;
    assert_refused(&wrong, StatusCode::UNAUTHORIZED, "wrong_code");
    let ok = post_code(&app, &app.code_now(), PEER, &own_referer).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    app.wait_for_run(2).await;
    assert_eq!(app.script_runs(), 2);
}

#[tokio::test]
async fn the_pages_form_with_its_token_starts_a_run() {
    let app = TestApp::builder().build();
    let (cookie, token) = open_page(&app).await;
    let form = format!("csrf={}&code={}", urlencode(&token), app.code_now());
    let posted = app
        .post_form(
            "/verify",
            &form,
            &[("accept", "text/html,*/*;q=0.8"), ("cookie", &cookie)],
        )
        .await;
    assert_redirect_to(&posted, "/runs/1");
    app.wait_for_run(1).await;
    let session = posted.session_cookie().expect("the flash is kept in a session");
    assert_eq!(
        flash_shown(&app, "/runs/1", &format!("{cookie}; {session}")).await,
        Some(("success".into(), "Deploy started (run #1).".into()))
    );
    assert_eq!(app.script_runs(), 1);
}

#[tokio::test]
async fn a_browser_post_with_the_session_but_without_its_token_is_refused() {
    let app = TestApp::builder().build();
    let (cookie, token) = open_page(&app).await;
    let code = app.code_now();

    let api = app
        .post_form("/verify", &format!("code={code}"), &[("cookie", &cookie)])
        .await;
    assert_refused(&api, StatusCode::FORBIDDEN, "forbidden");
    let forged = app
        .post_form(
            "/verify",
            &format!("csrf=00112233445566778899aabbccddeeff&code={code}"),
            &[("cookie", &cookie)],
        )
        .await;
    assert_refused(&forged, StatusCode::FORBIDDEN, "forbidden");

    // A browser's form post is shown the refusal on the page, at once: a refused post gets no session.
    let html = app.post_verify_html(&code, Some(&cookie)).await;
    assert_eq!(html.status, StatusCode::FORBIDDEN, "{}", html.text());
    assert_eq!(html.session_cookie(), None, "a refused post created a session");
    let shown = flash(&html.text()).map(|(kind, text)| (kind, unescape_html(&text)));
    assert_eq!(shown, Some(("error".into(), REFUSED_CROSS_SITE.into())));
    assert_eq!(app.status().await["history"], serde_json::json!([]));

    // With the token, the same code still works: the refusals did not use it up.
    let form = format!("csrf={}&code={code}", urlencode(&token));
    let posted = app
        .post_form("/verify", &form, &[("accept", "text/html"), ("cookie", &cookie)])
        .await;
    assert_redirect_to(&posted, "/runs/1");
    app.wait_for_run(1).await;
    assert_eq!(app.script_runs(), 1);
}

/// The `Set-Cookie` values, lowercased, of the CSRF cookie (from the page) and the session cookie (from
/// a browser's post), in that order.
async fn cookies_set(app: &TestApp) -> [String; 2] {
    let page = app.get("/").await;
    let csrf = page
        .set_cookie("authrun_csrf")
        .expect("a CSRF cookie")
        .to_ascii_lowercase();
    let posted = app.post_verify_html(&wrong_code(app), None).await;
    let session = posted
        .set_cookie("authrun_session")
        .expect("a session cookie")
        .to_ascii_lowercase();
    [csrf, session]
}

fn is_secure(cookie: &str) -> bool {
    cookie.split(';').any(|a| a.trim() == "secure")
}

#[tokio::test]
async fn without_public_url_the_cookies_are_not_secure() {
    let app = TestApp::builder().build();
    for cookie in cookies_set(&app).await {
        assert!(
            !is_secure(&cookie),
            "a Secure cookie is lost over plain http: {cookie}"
        );
        assert!(
            cookie.contains("httponly") && cookie.contains("samesite=strict"),
            "{cookie}"
        );
    }
}

#[tokio::test]
async fn with_an_https_public_url_the_cookie_is_secure_and_its_origin_is_ours() {
    let app = TestApp::builder()
        .config("[server]\npublic_url = \"https://deploy.example.com\"")
        .build();
    for cookie in cookies_set(&app).await {
        assert!(is_secure(&cookie), "not Secure: {cookie}");
    }

    let behind_proxy = ("host", "127.0.0.1:5000");
    let code = app.code_now();
    let by_host = post_code(
        &app,
        &code,
        PEER,
        &[behind_proxy, ("origin", "http://127.0.0.1:5000")],
    )
    .await;
    assert_refused(&by_host, StatusCode::FORBIDDEN, "forbidden");
    let public = post_code(
        &app,
        &code,
        PEER,
        &[behind_proxy, ("origin", "https://deploy.example.com")],
    )
    .await;
    assert_eq!(public.status, StatusCode::OK, "{}", public.text());
    app.wait_for_run(1).await;
}

#[tokio::test]
async fn a_public_url_with_its_default_port_written_out_matches_the_browsers_origin() {
    // Browsers leave the default port out of `Origin`.
    let app = TestApp::builder()
        .config("[server]\npublic_url = \"https://deploy.example.com:443/\"")
        .build();
    let browser = [
        ("host", "127.0.0.1:5000"),
        ("origin", "https://deploy.example.com"),
    ];
    let response = post_code(&app, &app.code_now(), PEER, &browser).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    app.wait_for_run(1).await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_including_refusals() {
    let app = TestApp::builder().build();
    let big = format!("code=123456&pad={}", "a".repeat(64 * 1024));
    let mut answers = vec![
        ("GET /", app.get("/").await, StatusCode::OK, true),
        ("GET /healthz", app.get("/healthz").await, StatusCode::OK, true),
        (
            "GET /get_deploy_status",
            app.get("/get_deploy_status").await,
            StatusCode::OK,
            true,
        ),
        (
            "GET /static/app.css",
            app.get("/static/app.css").await,
            StatusCode::OK,
            false,
        ),
        ("404", app.get("/nowhere").await, StatusCode::NOT_FOUND, true),
        (
            "405",
            app.get("/verify").await,
            StatusCode::METHOD_NOT_ALLOWED,
            true,
        ),
        (
            "413",
            app.post_form("/verify", &big, &[]).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            true,
        ),
        (
            "400",
            post_code(&app, "12", peer("192.0.2.2"), &[]).await,
            StatusCode::BAD_REQUEST,
            true,
        ),
        (
            "401",
            post_code(&app, &wrong_code(&app), peer("192.0.2.2"), &[]).await,
            StatusCode::UNAUTHORIZED,
            true,
        ),
        (
            "403",
            post_code(&app, "123456", PEER, &[("origin", "https://evil.example")]).await,
            StatusCode::FORBIDDEN,
            true,
        ),
        (
            "303 to a browser",
            app.post_verify_html("000", None).await,
            StatusCode::SEE_OTHER,
            true,
        ),
        (
            "200 POST /verify",
            app.post_verify(&app.code_now()).await,
            StatusCode::OK,
            true,
        ),
    ];
    app.wait_for_run(1).await;
    answers.push((
        "429 cooling_down",
        app.post_verify(&app.code_now()).await,
        StatusCode::TOO_MANY_REQUESTS,
        true,
    ));
    let attacker = peer("192.0.2.3");
    for _ in 0..5 {
        post_code(&app, "12", attacker, &[]).await;
    }
    answers.push((
        "429 banned",
        post_code(&app, &app.code_now(), attacker, &[]).await,
        StatusCode::TOO_MANY_REQUESTS,
        true,
    ));

    let paused_app = TestApp::builder().build();
    for n in 1..=10 {
        post_code(&paused_app, "12", peer(&format!("192.0.2.{n}")), &[]).await;
    }
    answers.push((
        "429 paused",
        post_code(&paused_app, &paused_app.code_now(), peer("192.0.2.99"), &[]).await,
        StatusCode::TOO_MANY_REQUESTS,
        true,
    ));

    for (what, response, status, no_store) in &answers {
        assert_eq!(response.status, *status, "{what}: {}", response.text());
        assert_security_headers(what, response, *no_store);
    }
    let banned = &answers[answers.len() - 2].1;
    assert_eq!(banned.json()["error"], "banned");
    let paused = &answers[answers.len() - 1].1;
    assert_eq!(paused.json()["error"], "paused");
}

/// A body of unknown length, as a chunked upload is.
struct Chunked(Option<Bytes>);

impl HttpBody for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }
}

#[tokio::test]
async fn a_64_kib_body_is_refused_with_413_in_every_encoding() {
    let app = TestApp::builder()
        .config("[regulation]\nclient_max_failures = 100")
        .build();
    let pad = "a".repeat(64 * 1024);
    let code = app.code_now();
    let form = format!("code={code}&pad={pad}");
    let json = serde_json::json!({ "code": code, "pad": pad }).to_string();
    let boundary = "authrun-test-boundary";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"pad\"\r\n\r\n{pad}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"code\"\r\n\r\n{code}\r\n--{boundary}--\r\n"
    );
    let multipart_type = format!("multipart/form-data; boundary={boundary}");
    let bodies = [
        ("form", "application/x-www-form-urlencoded", form.clone(), false),
        ("chunked form", "application/x-www-form-urlencoded", form, true),
        ("json", "application/json", json, false),
        ("multipart", multipart_type.as_str(), multipart, false),
    ];
    for (what, content_type, body, chunked) in bodies {
        let body = if chunked {
            Body::new(Chunked(Some(Bytes::from(body))))
        } else {
            Body::from(body)
        };
        let response = app.post_raw(content_type, body).await;
        assert_eq!(
            response.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{what}: {}",
            response.text()
        );
        assert_eq!(response.json()["error"], "payload_too_large", "{what}");
    }
    assert_eq!(app.status().await["history"], serde_json::json!([]));
    assert_eq!(app.script_runs(), 0);
}

fn tcp_addr(server: &TcpServer) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Reads one answer on a keep-alive connection: the head, then `Content-Length` bytes of body.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = content_length(head);
                if body.len() >= length {
                    return text;
                }
            }
            let n = stream.read(&mut buffer).await.expect("read the answer");
            assert!(n > 0, "the connection closed mid-answer: {text:?}");
            bytes.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(SOCKET_WAIT, read)
        .await
        .expect("an answer within the wait")
}

/// Everything the server sends until it closes the connection (a reset after the answer counts as closed).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let outcome = tokio::time::timeout(SOCKET_WAIT, stream.read_to_end(&mut bytes)).await;
    assert!(
        outcome.is_ok(),
        "the server kept the connection open for {SOCKET_WAIT:?}; it sent {:?}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

const HEALTH_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let app = TestApp::builder()
        .config("[server]\nheader_read_timeout_seconds = 1")
        .build();
    let server = app.serve_tcp().await;
    let mut slow = TcpStream::connect(tcp_addr(&server)).await.expect("connect");
    slow.write_all(b"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: applic")
        .await
        .expect("send part of a head");
    let sent = read_until_closed(&mut slow).await;
    let text = String::from_utf8_lossy(&sent);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer: {text:?}"
    );

    // The server itself goes on serving.
    let mut next = TcpStream::connect(tcp_addr(&server)).await.expect("connect");
    next.write_all(HEALTH_REQUEST).await.expect("send");
    let answer = read_answer(&mut next).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_503() {
    let app = TestApp::builder().config("[server]\nmax_connections = 2").build();
    let server = app.serve_tcp().await;
    let addr = tcp_addr(&server);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        stream.write_all(HEALTH_REQUEST).await.expect("send");
        let answer = read_answer(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(stream);
    }

    let mut third = TcpStream::connect(&addr).await.expect("connect");
    // The server may answer and close before the request is written.
    let _ = third.write_all(HEALTH_REQUEST).await;
    let refused = read_until_closed(&mut third).await;
    let text = String::from_utf8_lossy(&refused);
    assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
    let body: serde_json::Value =
        serde_json::from_str(text.split_once("\r\n\r\n").map_or("", |(_, body)| body))
            .unwrap_or_else(|error| panic!("not JSON ({error}): {text:?}"));
    assert_eq!(body["error"], "busy", "{body}");
    assert_eq!(body["success"], false, "{body}");

    // A held connection is still served, and once one closes a new client gets in.
    held[0].write_all(HEALTH_REQUEST).await.expect("send");
    let answer = read_answer(&mut held[0]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held.remove(1));
    let deadline = Instant::now() + SOCKET_WAIT;
    loop {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await;
        let answer = read_until_closed(&mut stream).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after a slot was freed: {:?}",
            String::from_utf8_lossy(&answer)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}
