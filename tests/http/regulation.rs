//! Brute-force regulation as a client meets it: five failures ban one client for 15 minutes, ten from
//! anywhere pause code checking for everyone (twice as long each time until a code is accepted), a
//! blocked request is refused before its code is looked at, bans survive a restart, forwarded addresses
//! are believed only from trusted proxies, and every attempt leaves an audit line without the code.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

use crate::helpers::{
    BLOCKING_SCRIPT, PEER, SECRET, TestApp, TestResponse, assert_refused, audit_lines, let_script_finish,
    peer, post_code, wrong_code,
};

/// Failures from one client that ban it, and the ban's length, by default.
const CLIENT_MAX_FAILURES: usize = 5;
const BAN_SECONDS: i64 = 15 * 60;
/// Failures from anywhere that pause everyone, and the first pause's length, by default.
const GLOBAL_MAX_FAILURES: u8 = 10;
const PAUSE_SECONDS: i64 = 60 * 60;

/// The n-th client of a documentation network (192.0.2.n).
fn client(n: u8) -> SocketAddr {
    peer(&format!("192.0.2.{n}"))
}

/// Asserts a 429 `banned` answer with `Retry-After: retry_after`.
fn assert_banned(response: &TestResponse, retry_after: u64) {
    assert_blocked(response, "banned", retry_after);
}

/// Asserts a 429 `paused` answer with `Retry-After: retry_after`.
fn assert_paused(response: &TestResponse, retry_after: u64) {
    assert_blocked(response, "paused", retry_after);
}

fn assert_blocked(response: &TestResponse, error: &str, retry_after: u64) {
    assert_refused(response, StatusCode::TOO_MANY_REQUESTS, error);
    assert_eq!(
        response.header("retry-after"),
        Some(retry_after.to_string().as_str()),
        "{}",
        response.text()
    );
}

/// Sends five wrong codes from `from` (with `headers`), each refused as wrong: the client is banned now.
async fn fail_five_times(app: &TestApp, from: SocketAddr, headers: &[(&str, &str)]) {
    for attempt in 1..=CLIENT_MAX_FAILURES {
        let response = post_code(app, &wrong_code(app), from, headers).await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "wrong code #{attempt}: {}",
            response.text()
        );
    }
}

/// One wrong code from each of ten new clients `192.0.2.{first}` and on: code checking pauses.
async fn pause_everyone(app: &TestApp, first: u8) {
    for n in first..first + GLOBAL_MAX_FAILURES {
        let response = post_code(app, &wrong_code(app), client(n), &[]).await;
        assert_refused(&response, StatusCode::UNAUTHORIZED, "wrong_code");
    }
}

/// The outcomes of the audited attempts of `client`, in order.
fn outcomes_of(lines: &[Value], client: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line["event"] == "attempt" && line["client"] == client)
        .map(|line| line["outcome"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn events(lines: &[Value], name: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|line| line["event"] == name)
        .cloned()
        .collect()
}

#[tokio::test]
async fn five_wrong_codes_ban_the_client_for_fifteen_minutes_but_not_others() {
    let app = TestApp::builder().build();
    let attacker = client(1);
    // Two minutes apart: the fifth failure is eight minutes after the first, within the window.
    for attempt in 1..=CLIENT_MAX_FAILURES {
        if attempt > 1 {
            app.advance(2 * 60);
        }
        let response = post_code(&app, &wrong_code(&app), attacker, &[]).await;
        assert_refused(&response, StatusCode::UNAUTHORIZED, "wrong_code");
    }

    let code = app.code_now();
    let banned = post_code(&app, &code, attacker, &[]).await;
    assert_banned(&banned, 900);
    let message = banned.message();
    assert!(message.contains("Try again in 15 minutes"), "{message}");
    assert_eq!(app.script_runs(), 0);
    assert_eq!(app.status().await["history"], serde_json::json!([]));

    // Another client runs with the very code the banned one sent: it was not used up.
    let other = post_code(&app, &code, client(2), &[]).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text());
    app.wait_for_run(1).await;
    assert_eq!(app.script_runs(), 1);
}

#[tokio::test]
async fn failures_spread_wider_than_the_window_never_ban() {
    let app = TestApp::builder().cooldown(0).build();
    let patient = client(1);
    for attempt in 1..=8 {
        let response = post_code(&app, &wrong_code(&app), patient, &[]).await;
        assert_refused(&response, StatusCode::UNAUTHORIZED, "wrong_code");
        assert!(response.header("retry-after").is_none(), "attempt {attempt}");
        app.advance(3 * 60);
    }
    let response = post_code(&app, &app.code_now(), patient, &[]).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    app.wait_for_run(1).await;
    assert!(events(&audit_lines(&app), "ban_started").is_empty());
}

#[tokio::test]
async fn the_ban_ends_after_fifteen_minutes() {
    let app = TestApp::builder().build();
    let attacker = client(1);
    fail_five_times(&app, attacker, &[]).await;

    app.advance(BAN_SECONDS - 1);
    let last_second = post_code(&app, &app.code_now(), attacker, &[]).await;
    assert_banned(&last_second, 1);
    let message = last_second.message();
    assert!(message.contains("Try again in 1 minute"), "{message}");

    app.advance(1);
    let after = post_code(&app, &app.code_now(), attacker, &[]).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text());
    app.wait_for_run(1).await;
    assert_eq!(app.script_runs(), 1);
    let ended = events(&audit_lines(&app), "ban_ended");
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["client"], "192.0.2.1", "{ended:?}");
}

#[tokio::test]
async fn malformed_codes_count_as_failures() {
    let app = TestApp::builder().build();
    let attacker = client(1);
    for code in ["12345", "1234567", "12a456", "", "abcdef"] {
        let response = post_code(&app, code, attacker, &[]).await;
        assert_refused(&response, StatusCode::BAD_REQUEST, "malformed_code");
    }
    let banned = post_code(&app, &app.code_now(), attacker, &[]).await;
    assert_banned(&banned, 900);
    assert_eq!(app.status().await["history"], serde_json::json!([]));
}

#[tokio::test]
async fn replayed_codes_count_as_failures() {
    let app = TestApp::builder().cooldown(0).build();
    let code = app.code_now();
    let first = post_code(&app, &code, client(1), &[]).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    app.wait_for_run(1).await;

    let replayer = client(2);
    for _ in 0..CLIENT_MAX_FAILURES {
        let response = post_code(&app, &code, replayer, &[]).await;
        assert_refused(&response, StatusCode::UNAUTHORIZED, "replayed_code");
    }
    app.advance(30);
    let banned = post_code(&app, &app.code_now(), replayer, &[]).await;
    assert_banned(&banned, 870);
    assert_eq!(app.script_runs(), 1);
}

#[tokio::test]
async fn ten_failures_from_anywhere_pause_everyone_for_an_hour() {
    let app = TestApp::builder().build();
    pause_everyone(&app, 1).await;

    let newcomer = client(100);
    let paused = post_code(&app, &app.code_now(), newcomer, &[]).await;
    assert_paused(&paused, 3600);
    let message = paused.message();
    assert!(message.contains("paused for everyone"), "{message}");
    assert!(message.contains("60 minutes"), "{message}");
    assert_eq!(app.status().await["history"], serde_json::json!([]));

    app.advance(PAUSE_SECONDS - 1);
    let still = post_code(&app, &app.code_now(), newcomer, &[]).await;
    assert_paused(&still, 1);

    app.advance(1);
    let after = post_code(&app, &app.code_now(), newcomer, &[]).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text());
    app.wait_for_run(1).await;
    assert_eq!(app.script_runs(), 1);
}

#[tokio::test]
async fn pauses_double_even_after_an_accepted_code_and_step_back_after_two_quiet_days() {
    let app = TestApp::builder()
        .cooldown(0)
        .config("[regulation]\nclient_max_failures = 100")
        .build();
    let newcomer = client(200);

    pause_everyone(&app, 1).await;
    assert_paused(&post_code(&app, &app.code_now(), newcomer, &[]).await, 3600);
    app.advance(PAUSE_SECONDS);

    // An accepted code changes nothing: an attacker waiting for the team's deploy must not get the
    // short pauses back.
    let accepted = post_code(&app, &app.code_now(), newcomer, &[]).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.text());
    app.wait_for_run(1).await;
    pause_everyone(&app, 1).await;
    let second = post_code(&app, &app.code_now(), newcomer, &[]).await;
    assert_paused(&second, 7200);
    let message = second.message();
    assert!(message.contains("2 h 0 min"), "{message}");
    app.advance(2 * PAUSE_SECONDS - 1);
    assert_paused(&post_code(&app, &app.code_now(), newcomer, &[]).await, 1);
    app.advance(1);

    // Two days without a pause take one doubling back: 2 hours again, not 4.
    app.advance(48 * 3600);
    pause_everyone(&app, 1).await;
    assert_paused(&post_code(&app, &app.code_now(), newcomer, &[]).await, 7200);

    let started: Vec<u64> = events(&audit_lines(&app), "pause_started")
        .iter()
        .map(|line| line["pause_number"].as_u64().unwrap_or_default())
        .collect();
    assert_eq!(started, [1, 2, 2]);
    assert_eq!(events(&audit_lines(&app), "pause_ended").len(), 2);
}

#[tokio::test]
async fn a_blocked_request_is_refused_before_its_code_is_checked() {
    let app = TestApp::builder().build();
    let attacker = client(1);
    fail_five_times(&app, attacker, &[]).await;

    // The valid and a wrong code get the same answer: nothing is learned about either.
    let valid = app.code_now();
    let wrong = wrong_code(&app);
    let with_valid = post_code(&app, &valid, attacker, &[]).await;
    let with_wrong = post_code(&app, &wrong, attacker, &[]).await;
    assert_banned(&with_valid, 900);
    assert_eq!(with_valid.status, with_wrong.status);
    assert_eq!(with_valid.body, with_wrong.body);
    assert_eq!(with_valid.header("retry-after"), with_wrong.header("retry-after"));

    let lines = audit_lines(&app);
    let outcomes = outcomes_of(&lines, "192.0.2.1");
    // Refusals within a minute are counted on one line, written when the minute is over.
    assert_eq!(
        outcomes,
        ["wrong", "wrong", "wrong", "wrong", "wrong", "banned"],
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|line| line["outcome"] == "started"),
        "{lines:?}"
    );
    assert_eq!(app.status().await["history"], serde_json::json!([]));
    assert_eq!(app.script_runs(), 0);
}

#[tokio::test]
async fn a_ban_survives_a_restart() {
    let app = TestApp::builder().build();
    let attacker = client(1);
    fail_five_times(&app, attacker, &[]).await;
    app.advance(60);

    let app = app.restart().expect("the app restarts");
    let banned = post_code(&app, &app.code_now(), attacker, &[]).await;
    assert_banned(&banned, 840);
    assert_eq!(app.status().await["history"], serde_json::json!([]));
    // Only the attacker: another client still runs.
    let other = post_code(&app, &app.code_now(), client(2), &[]).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text());
    app.wait_for_run(1).await;
}

#[tokio::test]
async fn a_pause_survives_a_restart() {
    let app = TestApp::builder().build();
    pause_everyone(&app, 1).await;
    let app = app.restart().expect("the app restarts");
    let paused = post_code(&app, &app.code_now(), client(100), &[]).await;
    assert_paused(&paused, 3600);
}

#[tokio::test]
async fn every_attempt_is_audited_without_the_code_or_the_secret() {
    let app = TestApp::builder().script(BLOCKING_SCRIPT).cooldown(30).build();
    let user = PEER;
    let mut sent = Vec::new();
    let mut post = async |code: String, from: SocketAddr| {
        let response = post_code(&app, &code, from, &[]).await;
        sent.push(code);
        response
    };

    let code = app.code_now();
    let started = post(code.clone(), user).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text());
    let running = post(code.clone(), user).await;
    assert_refused(&running, StatusCode::CONFLICT, "running");
    let_script_finish(&app);
    app.wait_for_run(1).await;
    let cooling = post(code.clone(), user).await;
    assert_refused(&cooling, StatusCode::TOO_MANY_REQUESTS, "cooling_down");
    app.advance(30);
    let replayed = post(code.clone(), user).await;
    assert_refused(&replayed, StatusCode::UNAUTHORIZED, "replayed_code");
    let wrong = post(wrong_code(&app), user).await;
    assert_refused(&wrong, StatusCode::UNAUTHORIZED, "wrong_code");
    let malformed = post("12a456".to_string(), user).await;
    assert_refused(&malformed, StatusCode::BAD_REQUEST, "malformed_code");
    for _ in 0..2 {
        let wrong = post(wrong_code(&app), user).await;
        assert_refused(&wrong, StatusCode::UNAUTHORIZED, "wrong_code");
    }
    let banned = post(app.code_now(), user).await;
    assert_refused(&banned, StatusCode::TOO_MANY_REQUESTS, "banned");
    // Five more failures from elsewhere make ten since the run: everyone is paused.
    for n in 1..=5 {
        let wrong = post(wrong_code(&app), client(n)).await;
        assert_refused(&wrong, StatusCode::UNAUTHORIZED, "wrong_code");
    }
    let paused = post(app.code_now(), client(50)).await;
    assert_refused(&paused, StatusCode::TOO_MANY_REQUESTS, "paused");
    app.advance(PAUSE_SECONDS);
    let second_run = post(app.code_now(), client(50)).await;
    assert_eq!(second_run.status, StatusCode::OK, "{}", second_run.text());
    app.wait_for_run(2).await;
    let requests = sent.len();

    let lines = audit_lines(&app);
    for line in &lines {
        assert!(line["time"].is_string(), "{line}");
        assert!(line["event"].is_string(), "{line}");
    }
    assert_eq!(
        outcomes_of(&lines, "127.0.0.1"),
        [
            "started",
            "running",
            "cooling_down",
            "replayed",
            "wrong",
            "malformed",
            "wrong",
            "wrong",
            "banned"
        ],
        "{lines:#?}"
    );
    assert_eq!(outcomes_of(&lines, "192.0.2.50"), ["paused", "started"]);
    let attempts = events(&lines, "attempt");
    assert_eq!(attempts.len(), requests, "one line per request: {lines:#?}");
    let run_ids: Vec<&Value> = attempts
        .iter()
        .filter(|line| line["outcome"] == "started")
        .map(|line| &line["run_id"])
        .collect();
    assert_eq!(run_ids, [1, 2], "{lines:#?}");
    assert!(
        attempts
            .iter()
            .filter(|line| line["outcome"] != "started")
            .all(|line| line.get("run_id").is_none()),
        "{lines:#?}"
    );

    let bans = events(&lines, "ban_started");
    assert_eq!(bans.len(), 1, "{lines:#?}");
    assert_eq!(bans[0]["client"], "127.0.0.1");
    assert_eq!(bans[0]["until"], "2026-11-25T12:15:40Z");
    let ban_ends = events(&lines, "ban_ended");
    assert_eq!(ban_ends.len(), 1, "{lines:#?}");
    assert_eq!(ban_ends[0]["client"], "127.0.0.1");
    let pauses = events(&lines, "pause_started");
    assert_eq!(pauses.len(), 1, "{lines:#?}");
    assert_eq!(pauses[0]["until"], "2026-11-25T13:00:40Z");
    assert_eq!(events(&lines, "pause_ended").len(), 1, "{lines:#?}");

    let text = std::fs::read_to_string(app.path(".authrun/audit.log")).expect("the audit log");
    for code in &sent {
        if !code.is_empty() {
            assert!(
                !text.contains(code.as_str()),
                "the code {code} is in the audit log:\n{text}"
            );
        }
    }
    assert!(!text.contains(SECRET), "the secret is in the audit log");
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_every_code() {
    // Opening /dev/full succeeds; every write to it fails (ENOSPC), also as root.
    let app = TestApp::builder().config("[audit]\nfile = \"/dev/full\"").build();
    let valid = post_code(&app, &app.code_now(), client(1), &[]).await;
    assert_refused(&valid, StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable");
    let status = app.status().await;
    assert_eq!(status["state"], "idle", "{status}");
    assert_eq!(status["history"], serde_json::json!([]), "{status}");
    assert!(app.record(1).is_none());

    let wrong = post_code(&app, &wrong_code(&app), client(1), &[]).await;
    assert_refused(&wrong, StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable");
    app.advance(30);
    let next = post_code(&app, &app.code_now(), client(1), &[]).await;
    assert_refused(&next, StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable");
    assert_eq!(app.status().await["state"], "idle");
    assert_eq!(app.script_runs(), 0);
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_it_forwards_for() {
    let app = TestApp::builder()
        .config("[server]\ntrusted_proxies = [\"127.0.0.1\"]")
        .build();
    let attacker = [("x-forwarded-for", "203.0.113.7")];
    fail_five_times(&app, PEER, &attacker).await;

    let code = app.code_now();
    assert_banned(&post_code(&app, &code, PEER, &attacker).await, 900);
    // Prepending addresses does not help: the proxy appended the real one last.
    let prepended = [("x-forwarded-for", "1.2.3.4, 203.0.113.7")];
    assert_banned(&post_code(&app, &code, PEER, &prepended).await, 900);

    let neighbour = [("x-forwarded-for", "203.0.113.8")];
    let response = post_code(&app, &code, PEER, &neighbour).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    app.wait_for_run(1).await;

    let lines = audit_lines(&app);
    assert_eq!(events(&lines, "ban_started")[0]["client"], "203.0.113.7");
    assert_eq!(outcomes_of(&lines, "203.0.113.8"), ["started"]);
    assert!(outcomes_of(&lines, "127.0.0.1").is_empty(), "{lines:#?}");
    assert!(outcomes_of(&lines, "1.2.3.4").is_empty(), "{lines:#?}");
}

#[tokio::test]
async fn forwarded_addresses_from_untrusted_peers_are_ignored() {
    let app = TestApp::builder().build();
    let attacker = peer("198.51.100.20");
    for n in 1..=CLIENT_MAX_FAILURES {
        let forged = format!("203.0.113.{n}");
        let response = post_code(&app, &wrong_code(&app), attacker, &[("x-forwarded-for", &forged)]).await;
        assert_refused(&response, StatusCode::UNAUTHORIZED, "wrong_code");
    }
    let forged = [("x-forwarded-for", "203.0.113.99")];
    assert_banned(&post_code(&app, &app.code_now(), attacker, &forged).await, 900);

    let lines = audit_lines(&app);
    assert_eq!(events(&lines, "ban_started")[0]["client"], "198.51.100.20");
    assert!(
        lines.iter().all(|line| !line.to_string().contains("203.0.113.")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn ipv6_clients_in_one_64_network_share_a_ban() {
    let app = TestApp::builder().build();
    for host in 1..=CLIENT_MAX_FAILURES {
        let from = peer(&format!("2001:db8:1:2::{host:x}"));
        let response = post_code(&app, &wrong_code(&app), from, &[]).await;
        assert_refused(&response, StatusCode::UNAUTHORIZED, "wrong_code");
    }
    let code = app.code_now();
    let neighbour = peer("2001:db8:1:2:ffff:ffff:ffff:9");
    assert_banned(&post_code(&app, &code, neighbour, &[]).await, 900);

    let next_network = peer("2001:db8:1:3::1");
    let response = post_code(&app, &code, next_network, &[]).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    app.wait_for_run(1).await;
    let lines = audit_lines(&app);
    assert_eq!(events(&lines, "ban_started")[0]["client"], "2001:db8:1:2::/64");
}

#[tokio::test]
async fn a_trusted_proxy_reaching_a_dual_stack_listener_over_ipv4_is_still_trusted() {
    // Bound to `[::]:5000`, authrun sees a proxy connecting from 127.0.0.1 as ::ffff:127.0.0.1.
    let app = TestApp::builder()
        .config("[server]\ntrusted_proxies = [\"127.0.0.1\"]")
        .build();
    let proxy = peer("::ffff:127.0.0.1");
    fail_five_times(&app, proxy, &[("x-forwarded-for", "203.0.113.7")]).await;
    let code = app.code_now();
    let attacker = [("x-forwarded-for", "203.0.113.7")];
    assert_banned(&post_code(&app, &code, proxy, &attacker).await, 900);

    // Everyone else behind the proxy is not banned with the attacker.
    let neighbour = [("x-forwarded-for", "203.0.113.8")];
    let response = post_code(&app, &code, proxy, &neighbour).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    app.wait_for_run(1).await;
    let lines = audit_lines(&app);
    assert_eq!(
        events(&lines, "ban_started")[0]["client"],
        "203.0.113.7",
        "{lines:#?}"
    );
}

#[tokio::test]
async fn a_blocked_clients_refusals_are_audited_once_a_minute_with_their_count() {
    let app = TestApp::builder().build();
    let attacker = client(1);
    fail_five_times(&app, attacker, &[]).await;
    for _ in 0..100 {
        assert_banned(&post_code(&app, &app.code_now(), attacker, &[]).await, 900);
    }
    app.advance(61);
    assert_banned(&post_code(&app, &app.code_now(), attacker, &[]).await, 839);

    let lines = audit_lines(&app);
    let refusals: Vec<&Value> = lines.iter().filter(|line| line["outcome"] == "banned").collect();
    assert_eq!(refusals.len(), 2, "{lines:#?}");
    // The first refusal at once, then one line for the rest of its minute and the one after it.
    assert_eq!(refusals[0]["time"], "2026-11-25T12:00:10Z");
    assert!(refusals[0].get("count").is_none(), "{lines:#?}");
    assert_eq!(refusals[1]["time"], "2026-11-25T12:01:11Z");
    assert_eq!(refusals[1]["count"], 100, "{lines:#?}");
    assert_eq!(refusals[1]["since"], "2026-11-25T12:00:10Z", "{lines:#?}");
}

#[tokio::test]
async fn exempt_networks_are_neither_paused_nor_counted_towards_the_pause() {
    let app = TestApp::builder()
        .config("[regulation]\nexempt_networks = [\"10.8.0.0/16\", \"2001:db8:8::/48\"]")
        .build();
    let office = |host: &str| peer(&format!("10.8.0.{host}"));
    // Ten wrong codes from the office: each address is banned on its own limit, nobody else is paused.
    fail_five_times(&app, office("1"), &[]).await;
    fail_five_times(&app, peer("2001:db8:8:1::5"), &[]).await;
    assert_banned(&post_code(&app, &app.code_now(), office("1"), &[]).await, 900);
    assert!(events(&audit_lines(&app), "pause_started").is_empty());

    // Ten from anywhere else pause everyone but the office.
    pause_everyone(&app, 1).await;
    assert_paused(&post_code(&app, &app.code_now(), client(100), &[]).await, 3600);
    let deploy = post_code(&app, &app.code_now(), office("2"), &[]).await;
    assert_eq!(deploy.status, StatusCode::OK, "{}", deploy.text());
    app.wait_for_run(1).await;
    assert_banned(&post_code(&app, &app.code_now(), office("1"), &[]).await, 900);
}

#[tokio::test]
async fn attempts_whose_clients_hang_up_are_still_judged_and_counted() {
    let app = TestApp::builder().build();
    for n in 1..=GLOBAL_MAX_FAILURES {
        let mut request = Request::post("/verify")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("code={}", wrong_code(&app))))
            .expect("request");
        request.extensions_mut().insert(ConnectInfo(client(n)));
        // The client goes away: the server drops its request after its first look at it.
        let answering = app.router.clone().oneshot(request);
        let _ = tokio::time::timeout(std::time::Duration::ZERO, answering).await;
    }
    let mut waited = 0;
    while audit_lines(&app)
        .iter()
        .filter(|line| line["outcome"] == "wrong")
        .count()
        < 10
    {
        waited += 1;
        assert!(
            waited < 2000,
            "the attempts were not all judged: {:#?}",
            audit_lines(&app)
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let paused = post_code(&app, &app.code_now(), client(100), &[]).await;
    assert_paused(&paused, 3600);
}
