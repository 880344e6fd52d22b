//! `GET /metrics` over real TCP: what a Prometheus scrape reads after the test's attempts, runs, bans and
//! pauses, and who may scrape.
//!
//! Every answer is read by the reference parser, Python's `prometheus_client` (its OpenMetrics parser,
//! which refuses what Prometheus would refuse: a missing `# EOF`, a sample outside its family, a bad
//! label). It is Debian's `python3-prometheus-client`, run by Debian's `/usr/bin/python3` (scripts/test.sh
//! installs it): an independent reader, not the crate that wrote the text.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use authrun::auth::token::sha256_hex;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::helpers::{TcpServer, TestApp, tcp_client, wrong_code};

/// Waits for `go` in its working directory (removing it, so each run waits for its own), then fails
/// when `fail` is there.
const SCRIPT: &str = "#!/bin/sh\n\
    i=0\n\
    while [ ! -f go ] && [ \"$i\" -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n\
    rm -f go\n\
    if [ -f fail ]; then exit 3; fi\n";

const TOKEN: &str = "metrics-scraper-token";

/// The words of `authrun_attempts_total{outcome}`: the audit log's.
const OUTCOMES: [&str; 11] = [
    "started",
    "wrong",
    "malformed",
    "replayed",
    "running",
    "cooling_down",
    "busy",
    "banned",
    "paused",
    "forbidden",
    "unavailable",
];

/// Reads OpenMetrics text into samples with the reference parser; text it refuses fails the test.
const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"family": family.name, "type": family.type, "name": s.name,
                        "labels": s.labels, "value": s.value})
print(json.dumps(samples))
"#;

#[derive(Debug, Deserialize)]
struct Sample {
    family: String,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, as the parser read it.
#[derive(Debug)]
struct Scrape(Vec<Sample>);

impl Scrape {
    fn parse(text: &str) -> Self {
        let python = "/usr/bin/python3";
        let mut child = Command::new(python)
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("{python} cannot be started ({error}): run scripts/test.sh"));
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("No module named 'prometheus_client'"),
            "the parser is missing: apt-get install python3-prometheus-client (scripts/test.sh does)"
        );
        assert!(
            output.status.success(),
            "the metrics are not valid OpenMetrics text: {stderr}\n{text}"
        );
        Self(serde_json::from_slice(&output.stdout).unwrap())
    }

    /// The value of the sample `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        self.0
            .iter()
            .find(|sample| sample.name == name && sample.labels == wanted)
            .unwrap_or_else(|| panic!("no sample {name} {wanted:?} in {:#?}", self.0))
            .value
    }

    /// The type of the family `family`.
    fn kind(&self, family: &str) -> &str {
        self.0
            .iter()
            .find(|sample| sample.family == family)
            .unwrap_or_else(|| panic!("no family {family} in {:#?}", self.0))
            .kind
            .as_str()
    }

    fn attempts(&self, outcome: &str) -> f64 {
        self.value("authrun_attempts_total", &[("outcome", outcome)])
    }

    fn runs(&self, status: &str) -> f64 {
        self.value("authrun_runs_total", &[("action", "deploy"), ("status", status)])
    }

    fn running(&self) -> f64 {
        self.value("authrun_runs_running", &[("action", "deploy")])
    }

    fn durations(&self, part: &str) -> f64 {
        self.value(
            &format!("authrun_run_duration_seconds_{part}"),
            &[("action", "deploy")],
        )
    }

    fn bucket(&self, le: &str) -> f64 {
        self.value(
            "authrun_run_duration_seconds_bucket",
            &[("action", "deploy"), ("le", le)],
        )
    }
}

/// A client whose connections come from `address` (any of 127/8 reaches the server on 127.0.0.1).
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(address))
        .no_proxy()
        .build()
        .unwrap()
}

async fn get_metrics(client: &reqwest::Client, server: &TcpServer, token: Option<&str>) -> reqwest::Response {
    let mut request = client.get(server.url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// Scrapes from 127.0.0.1 and parses the answer.
async fn scrape(server: &TcpServer) -> Scrape {
    let response = get_metrics(&tcp_client(), server, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    Scrape::parse(&response.text().await.unwrap())
}

/// Posts `code` to `/verify` from `client`; returns the answer's status.
async fn post_code(client: &reqwest::Client, server: &TcpServer, code: &str) -> StatusCode {
    client
        .post(server.url("/verify"))
        .form(&[("code", code)])
        .send()
        .await
        .unwrap()
        .status()
}

/// Starts a run with the code of the moment; returns its id.
async fn start_run(app: &TestApp, server: &TcpServer) -> u64 {
    let response = tcp_client()
        .post(server.url("/verify"))
        .form(&[("code", app.code_now())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    body["run_id"].as_u64().unwrap()
}

/// Lets the running script end, after `seconds` on the app's clock.
async fn finish_run(app: &TestApp, id: u64, seconds: i64) {
    app.advance(seconds);
    std::fs::write(app.path("go"), "").unwrap();
    app.wait_for_run(id).await;
}

#[tokio::test]
async fn a_scrape_counts_what_happened() {
    let app = TestApp::builder().script(SCRIPT).cooldown(0).build();
    let server = app.serve_tcp().await;

    let before = scrape(&server).await;
    assert_eq!(
        before.value("authrun_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert_eq!(before.kind("authrun_attempts"), "counter");
    assert_eq!(before.kind("authrun_runs_running"), "gauge");
    for outcome in OUTCOMES {
        assert_eq!(before.attempts(outcome), 0.0, "{outcome}");
    }
    assert_eq!(before.running(), 0.0);
    assert_eq!(before.value("authrun_clients_banned", &[]), 0.0);
    assert_eq!(before.value("authrun_paused", &[]), 0.0);

    let us = tcp_client();
    for _ in 0..3 {
        assert_eq!(
            post_code(&us, &server, &wrong_code(&app)).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(scrape(&server).await.attempts("wrong"), 3.0);

    // A run that succeeds after 7 seconds, watched while it goes.
    let first = start_run(&app, &server).await;
    let during = scrape(&server).await;
    assert_eq!(during.attempts("started"), 1.0);
    assert_eq!(during.running(), 1.0);
    finish_run(&app, first, 7).await;
    let after = scrape(&server).await;
    assert_eq!(after.running(), 0.0);
    assert_eq!(after.runs("succeeded"), 1.0);
    assert_eq!(after.kind("authrun_run_duration_seconds"), "histogram");
    assert_eq!(after.durations("count"), 1.0);
    assert_eq!(after.durations("sum"), 7.0);
    assert_eq!(after.bucket("5.0"), 0.0);
    assert_eq!(after.bucket("10.0"), 1.0);

    // A run that fails after 2 seconds, with the code of the next step.
    app.advance(30);
    std::fs::write(app.path("fail"), "").unwrap();
    let second = start_run(&app, &server).await;
    finish_run(&app, second, 2).await;
    let after = scrape(&server).await;
    assert_eq!(after.attempts("started"), 2.0);
    assert_eq!(after.runs("succeeded"), 1.0);
    assert_eq!(after.runs("failed"), 1.0);
    assert_eq!(after.durations("count"), 2.0);
    assert_eq!(after.durations("sum"), 9.0);
    assert_eq!(after.bucket("2.5"), 1.0);
    assert_eq!(after.bucket("+Inf"), 2.0);

    // Another client guesses five times (the ban), then tries once more.
    let guesser = client_from([127, 0, 0, 3]);
    for _ in 0..5 {
        assert_eq!(
            post_code(&guesser, &server, &wrong_code(&app)).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        post_code(&guesser, &server, &wrong_code(&app)).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let banned = scrape(&server).await;
    assert_eq!(banned.attempts("wrong"), 8.0);
    assert_eq!(banned.attempts("banned"), 1.0);
    assert_eq!(banned.value("authrun_clients_banned", &[]), 1.0);
    assert_eq!(banned.value("authrun_paused", &[]), 0.0);

    // The ban's 15 minutes pass: it is read as over at the next scrape.
    app.advance(15 * 60);
    let later = scrape(&server).await;
    assert_eq!(later.value("authrun_clients_banned", &[]), 0.0);
    assert_eq!(later.attempts("wrong"), 8.0, "counters never go down");
    server.shutdown().await;
}

#[tokio::test]
async fn a_pause_is_shown_while_it_lasts_and_refusals_are_counted() {
    let app = TestApp::builder()
        .config("[regulation]\nglobal_max_failures = 2\nglobal_pause_seconds = 600")
        .build();
    let server = app.serve_tcp().await;
    for last in [4, 5] {
        let status = post_code(&client_from([127, 0, 0, last]), &server, &wrong_code(&app)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let status = post_code(&client_from([127, 0, 0, 6]), &server, &app.code_now()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let paused = scrape(&server).await;
    assert_eq!(paused.value("authrun_paused", &[]), 1.0);
    assert_eq!(paused.attempts("wrong"), 2.0);
    assert_eq!(paused.attempts("paused"), 1.0);
    assert_eq!(paused.attempts("started"), 0.0);
    assert_eq!(app.script_runs(), 0);

    app.advance(600);
    assert_eq!(scrape(&server).await.value("authrun_paused", &[]), 0.0);
    server.shutdown().await;
}

#[tokio::test]
async fn only_allowed_addresses_and_the_token_may_scrape() {
    let app = TestApp::builder()
        .config(&format!(
            "[metrics]\nallow = [\"127.0.0.1/32\"]\n[access]\napi_token_sha256 = \"{}\"\n\
             [server]\ntrusted_proxies = [\"127.0.0.1\"]",
            sha256_hex(TOKEN)
        ))
        .build();
    let server = app.serve_tcp().await;
    let outsider = client_from([127, 0, 0, 2]);

    // Refused as a page that does not exist is: nothing tells the two apart.
    let refused = get_metrics(&outsider, &server, None).await;
    let unknown = outsider.get(server.url("/no-such-page")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        refused.headers().get("content-type"),
        unknown.headers().get("content-type")
    );
    assert_eq!(refused.text().await.unwrap(), unknown.text().await.unwrap());

    // The token opens it from anywhere; a wrong one from nowhere, not even from an allowed address.
    let with_token = get_metrics(&outsider, &server, Some(TOKEN)).await;
    assert_eq!(with_token.status(), StatusCode::OK);
    let scraped = Scrape::parse(&with_token.text().await.unwrap());
    assert_eq!(scraped.attempts("wrong"), 0.0);
    let wrong = get_metrics(&outsider, &server, Some("guess")).await;
    assert_eq!(wrong.status(), StatusCode::NOT_FOUND);
    let wrong = get_metrics(&tcp_client(), &server, Some("guess")).await;
    assert_eq!(wrong.status(), StatusCode::NOT_FOUND);

    let local = get_metrics(&tcp_client(), &server, None).await;
    assert_eq!(local.status(), StatusCode::OK);
    // A visitor through the reverse proxy on this machine is not this machine.
    let proxied = tcp_client()
        .get(server.url("/metrics"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test]
async fn disabled_metrics_are_not_found_by_anyone() {
    let app = TestApp::builder()
        .config(&format!(
            "[metrics]\nenabled = false\n[access]\napi_token_sha256 = \"{}\"",
            sha256_hex(TOKEN)
        ))
        .build();
    let server = app.serve_tcp().await;
    for token in [None, Some(TOKEN)] {
        let response = get_metrics(&tcp_client(), &server, token).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "token {token:?}");
    }
    server.shutdown().await;
}
