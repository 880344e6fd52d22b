//! Property-based ("fuzz") tests of the product promise: no request makes authrun answer 5xx or panic,
//! and no file it reads (config, history, regulation state) makes it panic instead of giving a clear error.
//!
//! Each property draws random inputs with `proptest`: request bodies, code forms, header values and paths
//! sent through the in-process router, arbitrary and mutated config files, history and regulation files,
//! and strings given to the code parser. A failing input is shrunk to a minimal one, which the failure
//! message prints with the seed and the command that repeats the run.
//!
//! Each property tries `AUTHRUN_FUZZ_CASES` inputs (default 128: about a second per property in a debug
//! build), drawn from the seed `AUTHRUN_FUZZ_SEED`: by default a fixed one, so CI tries the same inputs
//! every time and a failure there repeats anywhere; `random` draws a fresh seed per run. To fuzz longer,
//! with new inputs:
//!
//! ```text
//! AUTHRUN_FUZZ_SEED=random AUTHRUN_FUZZ_CASES=100000 cargo test --release --test http fuzz::
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use authrun::auth::regulation::Guard;
use authrun::auth::totp::TotpCode;
use authrun::clock::ManualClock;
use authrun::config::Config;
use authrun::config::RegulationSettings;
use authrun::model::client::ClientKey;
use authrun::store::file::history::FileHistory;
use authrun::store::file::regulation::FileRegulation;
use authrun::web::form::BODY_LIMIT;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, RngSeed, TestCaseError, TestRunner};
use serde_json::Value;
use tempfile::TempDir;

use crate::common::write_script;
use crate::helpers::{PEER, SECRET, START, TestApp, TestResponse, peer, urlencode, wrong_code};

/// Cases per property when `AUTHRUN_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 128;

/// The seed of the inputs when `AUTHRUN_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 20_261_125;

/// Regulation limits no fuzz run reaches, so requests get past the ban check to the deepest checks.
const LIFTED: &str = "[regulation]\nclient_max_failures = 1000000\nglobal_max_failures = 1000000";

/// Every status `POST /verify` may answer an API client.
const VERIFY_STATUSES: [u16; 7] = [200, 400, 401, 403, 409, 413, 429];

/// A multipart boundary no generated value contains.
const BOUNDARY: &str = "authrunFuzzBoundary7MA4YWxkTrZu0gW";

// ---------------------------------------------------------------------------------------------------------
// Running properties

fn cases() -> u32 {
    match std::env::var("AUTHRUN_FUZZ_CASES") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("AUTHRUN_FUZZ_CASES=`{text}` is not a whole number")),
        Err(_) => DEFAULT_CASES,
    }
}

/// The seed this test binary draws every property's inputs from (see [`seed_from`]), read once.
fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| seed_from(std::env::var("AUTHRUN_FUZZ_SEED").ok().as_deref()))
}

/// The seed `AUTHRUN_FUZZ_SEED` asks for: a whole number, `random` for a fresh one, [`DEFAULT_SEED`] when
/// unset.
fn seed_from(setting: Option<&str>) -> u64 {
    match setting.map(str::trim) {
        None | Some("") => DEFAULT_SEED,
        Some("random") => rand::random(),
        Some(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("AUTHRUN_FUZZ_SEED=`{text}` is neither a whole number nor `random`")),
    }
}

/// A runner that draws `cases` inputs from `seed`: the same seed, the same inputs, in the same order.
fn runner(cases: u32, seed: u64) -> TestRunner {
    TestRunner::new(ProptestConfig {
        failure_persistence: None,
        max_shrink_iters: cases.saturating_mul(4).max(2048),
        max_shrink_time: 5_000,
        // Named, so that no `PROPTEST_*` variable changes which inputs a seed stands for.
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        ..ProptestConfig::with_cases(cases)
    })
}

/// Runs `test` on `cases` inputs drawn from `strategy`; panics with the minimal failing input and the
/// command that draws the same inputs again.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let seed = seed();
    if let Err(error) = runner(cases, seed).run(&strategy, test) {
        let test = std::thread::current()
            .name()
            .filter(|name| name.starts_with("fuzz::"))
            .unwrap_or("fuzz::")
            .to_string();
        panic!(
            "{error}\nrepeat with: AUTHRUN_FUZZ_SEED={seed} AUTHRUN_FUZZ_CASES={} cargo test --test http {test}",
            self::cases()
        );
    }
}

#[test]
fn the_seed_setting_is_a_number_random_or_the_default() {
    assert_eq!(seed_from(None), DEFAULT_SEED);
    assert_eq!(seed_from(Some("")), DEFAULT_SEED);
    assert_eq!(seed_from(Some(" 42 ")), 42);
    assert_ne!(seed_from(Some("random")), seed_from(Some("random")));
    let garbage = std::panic::catch_unwind(|| seed_from(Some("soon")));
    assert!(garbage.is_err(), "a seed that is no number was taken");
}

/// The inputs `strategy` draws from `seed`, as printed.
fn drawn<S: Strategy>(strategy: S, seed: u64) -> Vec<String> {
    let drawn = RefCell::new(Vec::new());
    runner(32, seed)
        .run(&strategy, |input| {
            drawn.borrow_mut().push(format!("{input:?}"));
            Ok(())
        })
        .expect("recording inputs never fails");
    drawn.into_inner()
}

/// A failure found with one seed (in CI, or printed by a failing property) repeats with that seed.
#[test]
fn the_same_seed_draws_the_same_inputs() {
    let every_strategy = |seed: u64| {
        [
            drawn((content_type(), body_bytes()), seed),
            drawn(code_form(), seed),
            drawn(header_value(), seed),
            drawn(request_path(), seed),
            drawn(vec(mutation(), 1..4), seed),
            drawn(history_file(), seed),
            drawn(regulation_file(), seed),
            drawn(extremes(), seed),
        ]
        .concat()
    };
    let first = every_strategy(DEFAULT_SEED);
    assert_eq!(first.len(), 8 * 32);
    assert_eq!(
        first,
        every_strategy(DEFAULT_SEED),
        "one seed drew two sets of inputs"
    );
    assert_ne!(
        first,
        every_strategy(DEFAULT_SEED + 1),
        "two seeds drew the same inputs"
    );
}

/// One current-thread runtime per property; its `block_on` drives the router.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

/// Bytes that print as a byte string, so minimised inputs stay readable.
#[derive(Clone, PartialEq, Eq)]
struct Bytes(Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

fn bytes(strategy: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Bytes> {
    strategy.prop_map(Bytes)
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The oracle for codes: whitespace removed, exactly `digits` ASCII digits.
fn is_code(text: &str, digits: u8) -> bool {
    let kept: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    kept.len() == usize::from(digits) && kept.iter().all(char::is_ascii_digit)
}

// ---------------------------------------------------------------------------------------------------------
// Checking answers

fn describe(response: &TestResponse) -> String {
    let text = response.text();
    let shown: String = text.chars().take(300).collect();
    format!("{} {shown}", response.status)
}

/// The JSON body of an API answer, whose `success` says whether the status is 2xx.
fn api_json(response: &TestResponse) -> Result<Value, TestCaseError> {
    let json: Value = serde_json::from_slice(&response.body).map_err(|error| {
        fail(format!(
            "the answer is not JSON ({error}): {}",
            describe(response)
        ))
    })?;
    prop_assert_eq!(
        &json["success"],
        &Value::Bool(response.status.is_success()),
        "`success` disagrees with the status: {}",
        describe(response)
    );
    Ok(json)
}

/// What every `POST /verify` answer to an API client must be: a documented status, never 5xx, and JSON
/// whose `success` matches the status.
fn check_verify_answer(response: &TestResponse) -> Result<Value, TestCaseError> {
    prop_assert!(
        !response.status.is_server_error(),
        "server error: {}",
        describe(response)
    );
    prop_assert!(
        VERIFY_STATUSES.contains(&response.status.as_u16()),
        "undocumented status: {}",
        describe(response)
    );
    api_json(response)
}

fn error_code(json: &Value) -> &str {
    json["error"].as_str().unwrap_or("(none)")
}

fn post_verify_request(content_type: Option<&[u8]>, body: Vec<u8>) -> Request<Body> {
    let mut request = Request::post("/verify");
    if let Some(value) = content_type {
        let value = HeaderValue::from_bytes(value).expect("generated header values are valid");
        request = request.header(header::CONTENT_TYPE, value);
    }
    request.body(Body::from(body)).expect("request")
}

// ---------------------------------------------------------------------------------------------------------
// 1. Arbitrary bodies on POST /verify

const BODY_PIECES: &[&[u8]] = &[
    b"code=",
    b"csrf=",
    b"&",
    b"=",
    b"%",
    b"%FF",
    b"%00",
    b"%2",
    b"+",
    b"123456",
    b"12 3456",
    b"{\"code\":",
    b"\"",
    b"}",
    b"[",
    b"null",
    b"\\u0000",
    b"--X\r\n",
    b"--X--\r\n",
    b"--X",
    b"\r\n",
    b"\r\n\r\n",
    b"Content-Disposition: form-data; name=\"code\"\r\n\r\n",
    b"Content-Disposition: form-data; name=\"code\"; filename=\"a\"\r\n",
    b"Content-Type: text/plain; charset=utf-16\r\n",
    b"\xff\xfe",
    b"\xe2\x82",
];

/// A content type for `POST /verify`: the four the handler knows, none, and multipart with an arbitrary
/// boundary.
fn content_type() -> impl Strategy<Value = Option<Bytes>> {
    let fixed = |value: &'static str| Just(Some(Bytes(value.as_bytes().to_vec())));
    prop_oneof![
        fixed("application/x-www-form-urlencoded"),
        fixed("multipart/form-data; boundary=X"),
        header_value().prop_map(|Bytes(boundary)| {
            let mut value = b"multipart/form-data; boundary=".to_vec();
            value.extend(boundary);
            Some(Bytes(value))
        }),
        fixed("application/json"),
        fixed("text/plain"),
        Just(None),
    ]
}

/// Arbitrary bytes up to 8 KiB (half the draws small), and bytes built from pieces of real bodies.
fn body_bytes() -> impl Strategy<Value = Bytes> {
    let piece = prop_oneof![
        3 => select(BODY_PIECES).prop_map(<[u8]>::to_vec),
        1 => vec(any::<u8>(), 0..16),
    ];
    bytes(prop_oneof![
        2 => vec(any::<u8>(), 0..512),
        1 => vec(any::<u8>(), 0..8192),
        2 => vec(piece, 0..40).prop_map(|pieces| pieces.concat()),
    ])
}

#[test]
fn arbitrary_bodies_on_verify_never_fail_the_server() {
    let app = TestApp::builder().config(LIFTED).build();
    let rt = runtime();
    check(cases(), (content_type(), body_bytes()), |(content_type, body)| {
        let request = post_verify_request(content_type.as_ref().map(|b| b.0.as_slice()), body.0);
        let response = rt.block_on(app.send(request));
        check_verify_answer(&response)?;
        Ok(())
    });
}

/// The default limits: 5 failures ban a client, 10 in all pause code checking for everyone.
#[derive(Debug, Default)]
struct RegulationModel {
    failures: HashMap<u8, usize>,
    global: usize,
    paused: bool,
    refused: usize,
}

#[test]
fn arbitrary_bodies_under_default_regulation_are_counted_then_refused_with_429() {
    let app = TestApp::builder().build();
    let rt = runtime();
    let model = RefCell::new(RegulationModel::default());
    let client_at = |n: u8| peer(&format!("127.0.0.{}", 1 + n));
    let total = cases();
    check(
        total,
        (0u8..4, content_type(), body_bytes()),
        |(client, content_type, body)| {
            let request = post_verify_request(content_type.as_ref().map(|b| b.0.as_slice()), body.0);
            let response = rt.block_on(app.send_from(request, client_at(client)));
            let json = check_verify_answer(&response)?;
            let mut model = model.borrow_mut();
            let failures = model.failures.get(&client).copied().unwrap_or(0);
            let expected = if model.paused {
                Some("paused")
            } else if failures >= 5 {
                Some("banned")
            } else {
                None
            };
            match expected {
                Some(error) => {
                    prop_assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", model);
                    prop_assert_eq!(error_code(&json), error, "{:?}", model);
                    let retry = response.header("retry-after").and_then(|s| s.parse::<u64>().ok());
                    prop_assert!(retry.is_some_and(|s| s >= 1), "Retry-After: {:?}", retry);
                    model.refused += 1;
                }
                None => {
                    prop_assert!(
                        [400, 401, 413].contains(&response.status.as_u16()),
                        "a failure was expected: {} ({:?})",
                        describe(&response),
                        model
                    );
                    model.failures.insert(client, failures + 1);
                    model.global += 1;
                    model.paused = model.global >= 10;
                }
            }
            Ok(())
        },
    );
    let model = model.into_inner();
    if total >= 20 {
        assert!(
            model.refused > 0,
            "no request was ever refused with 429: {model:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// 2. Near-valid code forms

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    /// URL-encoded, each value percent-encoded.
    Form,
    /// URL-encoded syntax with the values pasted in raw (`+`, `%`, `&`, `=` as they come).
    RawForm,
    Json,
    Multipart,
}

#[derive(Clone, Debug)]
struct CodeForm {
    encoding: Encoding,
    /// Every `code` field, in order (none, one, or repeated).
    codes: Vec<String>,
    csrf: Option<String>,
    csrf_first: bool,
}

impl CodeForm {
    fn fields(&self) -> Vec<(&'static str, &str)> {
        let mut fields: Vec<(&'static str, &str)> = self.codes.iter().map(|c| ("code", c.as_str())).collect();
        if let Some(csrf) = &self.csrf {
            let at = if self.csrf_first { 0 } else { fields.len() };
            fields.insert(at, ("csrf", csrf));
        }
        fields
    }

    fn request(&self) -> (String, String) {
        let fields = self.fields();
        match self.encoding {
            Encoding::Form | Encoding::RawForm => {
                let encode = |value: &str| match self.encoding {
                    Encoding::Form => urlencode(value),
                    _ => value.to_string(),
                };
                let pairs: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{name}={}", encode(value)))
                    .collect();
                ("application/x-www-form-urlencoded".into(), pairs.join("&"))
            }
            Encoding::Json => {
                let members: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| {
                        format!("\"{name}\": {}", serde_json::to_string(value).expect("JSON"))
                    })
                    .collect();
                ("application/json".into(), format!("{{{}}}", members.join(", ")))
            }
            Encoding::Multipart => {
                let mut body = String::new();
                for (name, value) in fields {
                    body.push_str(&format!(
                        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                    ));
                }
                body.push_str(&format!("--{BOUNDARY}--\r\n"));
                (format!("multipart/form-data; boundary={BOUNDARY}"), body)
            }
        }
    }
}

/// Codes a person or a script might send: digits with spaces, signs and escapes, digits of other scripts,
/// Unicode white space, arbitrary text, and very long strings.
fn code_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[0-9]{6}",
        2 => "[0-9]{0,9}",
        2 => "[0-9 \t\r\n\u{a0}\u{85}\u{2003}\u{3000}\u{200b}\u{feff}+%.,-]{0,12}",
        2 => "[0-9\u{660}-\u{669}\u{966}-\u{96f}\u{ff10}-\u{ff19}\u{1d7ce}-\u{1d7d7} ]{0,10}",
        2 => "(%[0-9A-Fa-f]{2}|%|[0-9+& =])*",
        2 => any::<String>(),
        1 => "\\PC{0,64}",
        1 => "[0-9 ]{1000,6000}",
    ]
}

fn code_form() -> impl Strategy<Value = CodeForm> {
    let encoding = prop_oneof![
        Just(Encoding::Form),
        Just(Encoding::RawForm),
        Just(Encoding::Json),
        Just(Encoding::Multipart),
    ];
    let codes = prop_oneof![
        4 => vec(code_text(), 1..=1),
        1 => vec(code_text(), 0..=3),
    ];
    let csrf = proptest::option::of(prop_oneof!["[A-Za-z0-9_-]{0,43}", any::<String>()]);
    (encoding, codes, csrf, any::<bool>()).prop_map(|(encoding, codes, csrf, csrf_first)| CodeForm {
        encoding,
        codes,
        csrf,
        csrf_first,
    })
}

#[test]
fn near_valid_code_forms_get_the_documented_answers() {
    let app = TestApp::builder().config(LIFTED).build();
    let rt = runtime();
    check(cases(), code_form(), |form| {
        let (content_type, body) = form.request();
        let length = body.len();
        let request = post_verify_request(Some(content_type.as_bytes()), body.into_bytes());
        let response = rt.block_on(app.send(request));
        let json = check_verify_answer(&response)?;
        if form.encoding == Encoding::RawForm {
            return Ok(());
        }
        // Without an Origin, Referer or cookie, nothing is cross-site: the form decides the answer.
        let effective = match form.encoding {
            Encoding::Multipart => form.codes.last(),
            _ => form.codes.first().filter(|_| form.codes.len() == 1),
        };
        let expected: Option<(u16, &str)> = if length > BODY_LIMIT {
            Some((413, "payload_too_large"))
        } else if form.codes.is_empty() {
            Some((400, "missing_code"))
        } else {
            match effective {
                None => Some((400, "bad_form")),
                Some(code) if !is_code(code, 6) => Some((400, "malformed_code")),
                Some(_) => None,
            }
        };
        let got = (response.status.as_u16(), error_code(&json));
        match expected {
            Some(expected) => prop_assert_eq!(got, expected, "{}", describe(&response)),
            // A well-formed code is checked: wrong (or, by a one-in-a-million chance, right, which then
            // leaves the gate running or cooling down).
            None => prop_assert!(
                matches!(
                    got,
                    (401, "wrong_code" | "replayed_code")
                        | (200, _)
                        | (409, "running")
                        | (429, "cooling_down")
                ),
                "a six-digit code was not checked: {}",
                describe(&response)
            ),
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------
// 3. Arbitrary header values

const FUZZED_HEADERS: [&str; 7] = [
    "origin",
    "referer",
    "cookie",
    "accept",
    "content-type",
    "x-forwarded-for",
    "host",
];

const HEADER_PIECES: &[&str] = &[
    "http://",
    "https://",
    "localhost",
    "127.0.0.1",
    ":5000",
    "[::1]",
    "/",
    "?",
    "#",
    "authrun_session=",
    "; ",
    "=",
    ",",
    " ",
    "text/html",
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=",
    "*/*;q=0.8",
    "null",
    "%",
    "\t",
    "::ffff:1.2.3.4",
    "2001:db8::1",
    "[2001:db8::5]:443",
    "10.0.0.1",
];

/// Bytes `HeaderValue::from_bytes` accepts: visible ASCII, space, tab and obs-text (0x80-0xFF), drawn at
/// random or built from pieces of real values.
fn header_value() -> impl Strategy<Value = Bytes> {
    let byte = prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')];
    let piece = prop_oneof![
        2 => select(HEADER_PIECES).prop_map(|piece| piece.as_bytes().to_vec()),
        1 => vec(byte.clone(), 1..8),
    ];
    bytes(prop_oneof![
        vec(byte, 0..256),
        vec(piece, 0..8).prop_map(|pieces| pieces.concat()),
    ])
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Verify,
    Index,
    Status,
}

#[test]
fn arbitrary_header_values_never_fail_the_server() {
    let app = TestApp::builder()
        .config(LIFTED)
        .config("[server]\ntrusted_proxies = [\"127.0.0.0/8\"]")
        .build();
    let rt = runtime();
    let target = prop_oneof![Just(Target::Verify), Just(Target::Index), Just(Target::Status)];
    let headers = vec((0..FUZZED_HEADERS.len(), header_value()), 0..8);
    let body = bytes(prop_oneof![
        Just(b"code=123456".to_vec()),
        "code=[0-9 ]{0,8}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..64),
    ]);
    check(cases(), (target, headers, body), |(target, headers, body)| {
        let (method, path) = match target {
            Target::Verify => (Method::POST, "/verify"),
            Target::Index => (Method::GET, "/"),
            Target::Status => (Method::GET, "/get_deploy_status"),
        };
        let body = match target {
            Target::Verify => Body::from(body.0),
            _ => Body::empty(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .body(body)
            .expect("request");
        for (name, Bytes(value)) in &headers {
            let value = HeaderValue::from_bytes(value).expect("generated header values are valid");
            request
                .headers_mut()
                .append(HeaderName::from_static(FUZZED_HEADERS[*name]), value);
        }
        let wants_html = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
        let names_a_host = request.headers().contains_key(header::HOST);
        let response = rt.block_on(app.send(request));
        prop_assert!(
            !response.status.is_server_error(),
            "server error: {}",
            describe(&response)
        );
        // A `Host` that is not an address, localhost or the public URL's is refused before any route.
        if response.status == StatusCode::MISDIRECTED_REQUEST {
            prop_assert!(names_a_host, "{}", describe(&response));
            let json = api_json(&response)?;
            prop_assert_eq!(error_code(&json), "unknown_host");
            return Ok(());
        }
        match target {
            // A cross-site post is shown the page with the refusal; any other gets a redirect to it.
            Target::Verify if wants_html && response.status == StatusCode::FORBIDDEN => {
                prop_assert!(
                    response.text().contains("id=\"flash\""),
                    "{}",
                    describe(&response)
                );
                prop_assert_eq!(response.session_cookie(), None, "{}", describe(&response));
            }
            Target::Verify if wants_html => {
                prop_assert_eq!(response.status, StatusCode::SEE_OTHER, "{}", describe(&response));
                let location = response.header("location").unwrap_or_default();
                prop_assert!(location == "/" || location.starts_with("/runs/"), "{}", location);
            }
            Target::Verify => {
                check_verify_answer(&response)?;
            }
            Target::Index => {
                prop_assert_eq!(response.status, StatusCode::OK, "{}", describe(&response));
            }
            Target::Status => {
                prop_assert_eq!(response.status, StatusCode::OK, "{}", describe(&response));
                let json: Value = serde_json::from_slice(&response.body)
                    .map_err(|error| fail(format!("status is not JSON: {error}")))?;
                prop_assert!(json["state"].is_string(), "{}", json);
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------
// 4. Arbitrary paths

const SEGMENTS: &[&str] = &[
    "",
    ".",
    "..",
    "static",
    "verify",
    "get_deploy_status",
    "healthz",
    "runs",
    "app.css",
    "app.js",
    "favicon.svg",
    "%2e%2e",
    "%2F",
    "%00",
    "%FF",
    "%",
    "~",
    "index.html",
    "..%2f..%2fCargo.toml",
];

/// The routes' own prefixes, so a segment lands where a route or its parameter reads it.
const ROUTE_PREFIXES: &[&str] = &[
    "/static/",
    "/static/",
    "/",
    "/verify/",
    "/get_deploy_status/",
    "/healthz",
];

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(SEGMENTS).prop_map(str::to_string),
        2 => vec(any::<u8>(), 0..24).prop_map(|b| percent_encode(&b)),
        1 => "[A-Za-z0-9._~!$&'()*+,;=:@-]{0,24}",
    ]
}

/// `/` and segments (or one segment after a route's prefix), sometimes tens of thousands of bytes long, with an optional arbitrary query.
fn request_path() -> impl Strategy<Value = String> {
    let plain = vec(segment(), 0..10).prop_map(|segments| format!("/{}", segments.join("/")));
    let long = (segment(), 100usize..5000).prop_map(|(segment, count)| {
        let segment = if segment.is_empty() {
            "a".to_string()
        } else {
            segment
        };
        let count = count.min(60_000 / (segment.len() + 1));
        format!("/{}", vec![segment; count].join("/"))
    });
    let query = proptest::option::of(vec(any::<u8>(), 0..64).prop_map(|b| percent_encode(&b)));
    let routed =
        (select(ROUTE_PREFIXES), segment()).prop_map(|(prefix, segment)| format!("{prefix}{segment}"));
    (prop_oneof![4 => plain, 3 => routed, 1 => long], query).prop_map(|(path, query)| match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    })
}

#[test]
fn arbitrary_paths_answer_200_404_or_405() {
    let app = TestApp::builder().config(LIFTED).build();
    let rt = runtime();
    let method = prop_oneof![Just(Method::GET), Just(Method::POST)];
    check(cases(), (method, request_path()), |(method, path)| {
        let uri = Uri::try_from(path.as_str())
            .map_err(|error| fail(format!("the generator made an invalid URI ({error})")))?;
        // The one real POST route answers its own statuses (properties 1 and 2).
        prop_assume!(!(method == Method::POST && uri.path() == "/verify"));
        let request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        let response = rt.block_on(app.send(request));
        match response.status.as_u16() {
            200 => prop_assert_eq!(method, Method::GET, "{}", describe(&response)),
            404 => {
                let json = api_json(&response)?;
                prop_assert_eq!(error_code(&json), "not_found");
            }
            // `/runs?page=` with what is not a number.
            400 => {
                let json = api_json(&response)?;
                prop_assert_eq!(error_code(&json), "bad_query");
            }
            405 => {}
            _ => prop_assert!(false, "{} {path} answered {}", method, describe(&response)),
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------
// 5. Config files

const CONFIG_KEYS: &[&str] = &[
    "bind",
    "state_dir",
    "public_url",
    "trusted_proxies",
    "max_connections",
    "max_connections_per_client",
    "header_read_timeout_seconds",
    "request_timeout_seconds",
    "client_max_failures",
    "client_window_seconds",
    "client_ban_seconds",
    "global_max_failures",
    "global_window_seconds",
    "global_pause_seconds",
    "global_pause_max_seconds",
    "exempt_networks",
    "file",
    "max_bytes",
    "keep_files",
    "name",
    "description",
    "path",
    "args",
    "working_dir",
    "log_dir",
    "cooldown_seconds",
    "timeout_seconds",
    "kill_grace_seconds",
    "retention",
    "status_entries",
    "secret",
    "secret_file",
    "digits",
    "period_seconds",
    "skew_steps",
    "issuer",
    "account",
    "totp.digits",
    "script.path",
    "unknown_key",
];

const CONFIG_SECTIONS: &[&str] = &[
    "server",
    "regulation",
    "audit",
    "action",
    "script",
    "history",
    "totp",
    "nope",
    "script.extra",
    "[totp]",
];

const TOML_VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "5",
    "6",
    "7",
    "8",
    "9",
    "255",
    "256",
    "300",
    "301",
    "65535",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "nan",
    "inf",
    "true",
    "\"\"",
    "\" \"",
    "\":\"",
    "\"127.0.0.1:5000\"",
    "\"0.0.0.0:0\"",
    "\"[::1]:80\"",
    "\"localhost:5000\"",
    "\"http://x\"",
    "\"https://deploy.example.com\"",
    "\"ftp://x\"",
    "\"https://a@b\"",
    "\"https://\"",
    "[\"127.0.0.1\"]",
    "[\"10.0.0.0/8\", \"::1\"]",
    "[\"10.0.0.0/33\"]",
    "[\"nope\"]",
    "[]",
    "[1, 2]",
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
    "\"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\"",
    "\"JBSWY3DPEHPK3PXP\"",
    "\"not base32!\"",
    "\"/dev/null\"",
    "\"/nonexistent/dir\"",
    "\"scripts\"",
    "\"scripts/example-deploy.sh\"",
    "\"deploy.sh\"",
];

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(TOML_VALUES).prop_map(str::to_string),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        1 => any::<String>().prop_map(|s| serde_json::to_string(&s).expect("JSON")),
        1 => "\"[a-z0-9./:@\\[\\] -]{0,30}\"",
    ]
}

fn toml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (select(CONFIG_KEYS), toml_value()).prop_map(|(key, value)| format!("{key} = {value}")),
        1 => select(CONFIG_SECTIONS).prop_map(|section| format!("[{section}]")),
        1 => "[a-z_.\\[\\]\"' =#]{0,24}",
        1 => any::<String>(),
    ]
}

/// A directory where the example config is valid: it holds the script the example names.
fn config_dir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("scripts")).expect("scripts dir");
    write_script(&dir.path().join("scripts/example-deploy.sh"), "#!/bin/sh\n");
    write_script(&dir.path().join("deploy.sh"), "#!/bin/sh\n");
    let path = dir.path().join("authrun.toml");
    (dir, path)
}

/// Loads `bytes` as the config file at `path`: Ok, or an error naming the file and the fix.
fn check_config(path: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    std::fs::write(path, bytes).expect("write config");
    if let Err(error) = Config::load(Some(path), &[]) {
        let text = error.to_string();
        prop_assert!(
            text.contains(&path.display().to_string()),
            "the error does not name the file: {}",
            text
        );
        prop_assert!(text.contains("fix:"), "the error has no fix: {}", text);
    }
    Ok(())
}

#[test]
fn arbitrary_config_text_loads_or_names_the_file_and_the_fix() {
    let (_dir, path) = config_dir();
    let text = prop_oneof![
        2 => any::<String>().prop_map(|s| Bytes(s.into_bytes())),
        3 => vec(toml_line(), 0..12).prop_map(|lines| Bytes(lines.join("\n").into_bytes())),
        1 => bytes(vec(any::<u8>(), 0..256)),
    ];
    check(cases(), text, |Bytes(text)| check_config(&path, &text));
}

/// One edit of `config.example.toml`.
#[derive(Clone, Debug)]
enum Mutation {
    /// Sets the value of an assignment (uncommenting it if it was commented out).
    Value(Index, String),
    Line(Index, String),
    Insert(Index, String),
    Delete(Index),
    Byte(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), toml_value()).prop_map(|(at, value)| Mutation::Value(at, value)),
        1 => (any::<Index>(), toml_line()).prop_map(|(at, line)| Mutation::Line(at, line)),
        1 => (any::<Index>(), toml_line()).prop_map(|(at, line)| Mutation::Insert(at, line)),
        1 => any::<Index>().prop_map(Mutation::Delete),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Byte(at, byte)),
    ]
}

fn mutate(text: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    for mutation in mutations {
        match mutation {
            Mutation::Value(at, value) => {
                let assignments: Vec<usize> = (0..lines.len())
                    .filter(|&i| lines[i].windows(3).any(|w| w == b" = "))
                    .collect();
                if assignments.is_empty() {
                    continue;
                }
                let line = &mut lines[assignments[at.index(assignments.len())]];
                let split = line.windows(3).position(|w| w == b" = ").unwrap_or(0);
                let key = line[..split]
                    .strip_prefix(b"# ")
                    .unwrap_or(&line[..split])
                    .to_vec();
                *line = [key, b" = ".to_vec(), value.clone().into_bytes()].concat();
            }
            Mutation::Line(at, text) => {
                let i = at.index(lines.len());
                lines[i] = text.clone().into_bytes();
            }
            Mutation::Insert(at, text) => {
                let i = at.index(lines.len() + 1);
                lines.insert(i, text.clone().into_bytes());
            }
            Mutation::Delete(at) => {
                if !lines.is_empty() {
                    let i = at.index(lines.len());
                    lines.remove(i);
                }
            }
            Mutation::Byte(at, byte) => {
                let mut all = lines.join(&b'\n');
                if !all.is_empty() {
                    let i = at.index(all.len());
                    all[i] = *byte;
                }
                lines = all.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            }
        }
    }
    lines.join(&b'\n')
}

#[test]
fn mutated_example_configs_load_or_name_the_file_and_the_fix() {
    let (_dir, path) = config_dir();
    let example = authrun::config::EXAMPLE.as_bytes();
    std::fs::write(&path, example).expect("write config");
    Config::load(Some(&path), &[]).expect("the example is valid here, so mutations reach validation");
    check(cases(), vec(mutation(), 1..4), |mutations| {
        check_config(&path, &mutate(example, &mutations))
    });
}

/// Timing settings from the ordinary to the absurd.
fn seconds() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(1u64),
        1u64..100_000,
        Just(1 << 32),
        Just(1 << 40),
        (1u64 << 33)..(i64::MAX as u64),
        Just(i64::MAX as u64),
    ]
}

#[derive(Clone, Debug)]
struct Extremes {
    cooldown: u64,
    timeout: u64,
    kill_grace: u64,
    request_timeout: u64,
    client_max_failures: u8,
    client_window: u64,
    client_ban: u64,
    global_max_failures: u8,
    global_window: u64,
    global_pause: u64,
    global_pause_max: u64,
}

impl Extremes {
    fn toml(&self) -> String {
        format!(
            "[script]\npath = \"deploy.sh\"\ncooldown_seconds = {}\ntimeout_seconds = {}\n\
             kill_grace_seconds = {}\n\n[totp]\nsecret = \"{SECRET}\"\n\n[server]\n\
             request_timeout_seconds = {}\n\n[regulation]\nclient_max_failures = {}\n\
             client_window_seconds = {}\nclient_ban_seconds = {}\nglobal_max_failures = {}\n\
             global_window_seconds = {}\nglobal_pause_seconds = {}\nglobal_pause_max_seconds = {}\n",
            self.cooldown,
            self.timeout,
            self.kill_grace,
            self.request_timeout,
            self.client_max_failures,
            self.client_window,
            self.client_ban,
            self.global_max_failures,
            self.global_window,
            self.global_pause,
            self.global_pause_max,
        )
    }
}

fn extremes() -> impl Strategy<Value = Extremes> {
    (
        (seconds(), seconds(), seconds(), seconds()),
        (1u8..=3, seconds(), seconds()),
        (1u8..=3, seconds(), seconds(), seconds()),
    )
        .prop_map(
            |((cooldown, timeout, kill_grace, request_timeout), (cmf, cw, cb), (gmf, gw, gp, gpm))| {
                Extremes {
                    cooldown,
                    timeout,
                    kill_grace,
                    request_timeout,
                    client_max_failures: cmf,
                    client_window: cw,
                    client_ban: cb,
                    global_max_failures: gmf,
                    global_window: gw,
                    global_pause: gp,
                    global_pause_max: gpm.max(gp),
                }
            },
        )
}

/// A config that validates must leave every request answerable: a run, the status, and enough wrong codes
/// to ban the client and pause code checking, whatever the durations.
#[test]
fn accepted_extreme_durations_never_break_a_request() {
    let rt = runtime();
    check(cases().div_ceil(2), extremes(), |extremes| {
        let dir = tempfile::tempdir().expect("temp dir");
        write_script(&dir.path().join("deploy.sh"), "#!/bin/sh\n");
        std::fs::write(dir.path().join("authrun.toml"), extremes.toml()).expect("write config");
        let app = match TestApp::open(dir, Arc::new(ManualClock::new(START))) {
            Ok(app) => app,
            Err(error) => {
                prop_assert!(error.contains("fix:"), "an unclear start-up error: {}", error);
                return Ok(());
            }
        };
        rt.block_on(async {
            let started = app.post_verify(&app.code_now()).await;
            let json = check_verify_answer(&started)?;
            if let Some(id) = json["run_id"].as_u64() {
                app.wait_for_run(id).await;
            }
            for _ in 0..=extremes.client_max_failures.max(extremes.global_max_failures) {
                check_verify_answer(&app.post_verify(&wrong_code(&app)).await)?;
                let status = app.get("/get_deploy_status").await;
                prop_assert_eq!(status.status, StatusCode::OK, "{}", describe(&status));
            }
            let page = app.get("/").await;
            prop_assert_eq!(page.status, StatusCode::OK, "{}", describe(&page));
            Ok(())
        })
    });
}

// ---------------------------------------------------------------------------------------------------------
// 6. History and regulation files

/// ISO-8601 times, biased towards the ends of the supported range and odd offsets.
fn iso_time() -> impl Strategy<Value = String> {
    let year = prop_oneof![Just(9999), Just(0), Just(2026), 0i32..=9999, Just(10000)];
    let month = prop_oneof![Just(12u8), Just(1), 0u8..=13];
    let day = prop_oneof![Just(31u8), Just(1), 0u8..=32];
    let hour = prop_oneof![Just(23u8), 0u8..=24];
    let minute = prop_oneof![Just(59u8), 0u8..=60];
    let fraction = prop_oneof![Just(""), Just(".5"), Just(".123456"), Just(".999999999")];
    let offset = prop_oneof![
        Just("Z"),
        Just(""),
        Just("+00:00"),
        Just("-01:00"),
        Just("+01:00"),
        Just("-23:59"),
        Just("+23:59"),
        Just("+24:00"),
    ];
    (year, month, day, hour, minute.clone(), minute, fraction, offset).prop_map(
        |(year, month, day, hour, minute, second, fraction, offset)| {
            format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}{offset}")
        },
    )
}

fn json_string(text: String) -> String {
    serde_json::to_string(&text).expect("JSON")
}

const JSON_NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "18446744073709551615",
    "18446744073709551614",
    "18446744073709551616",
    "4294967295",
    "4294967296",
    "2147483647",
    "-2147483648",
    "-2147483649",
    "1e3",
    "1.5",
    "null",
    "\"7\"",
];

fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u32>().prop_map(|n| n.to_string()),
        2 => select(JSON_NUMBERS).prop_map(str::to_string),
    ]
}

/// Valid RFC 3339 times in UTC, anywhere from year 0 to 9999.
fn valid_time() -> impl Strategy<Value = String> {
    (-62_167_219_200i64..=253_402_300_799).prop_map(|unix| {
        let time = time::OffsetDateTime::from_unix_timestamp(unix).expect("in range");
        time.format(&time::format_description::well_known::Rfc3339)
            .expect("formattable")
    })
}

/// Times at the edges of what the `time` crate represents (years 0 to 9999).
const EDGE_TIMES: &[&str] = &[
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999999Z",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T00:00:00",
    "0000-01-01T00:00:00Z",
    "0000-01-01T00:00:00+01:00",
    "2026-11-25T12:00:10Z",
    "1970-01-01T00:00:00",
];

fn json_time() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => iso_time().prop_map(json_string),
        2 => select(EDGE_TIMES).prop_map(|time| json_string(time.to_string())),
        2 => valid_time().prop_map(json_string),
        1 => ".{0,30}".prop_map(json_string),
        1 => json_number(),
    ]
}

const RUN_STATUSES: &[&str] = &[
    "\"Deploying\"",
    "\"Deploy succeeded\"",
    "\"Deploy failed\"",
    "\"Timed out\"",
    "\"Interrupted\"",
    "\"deploying\"",
    "null",
    "1",
];

/// One history entry as JSON: each field present or not, valid or not.
fn run_record() -> impl Strategy<Value = String> {
    use proptest::option::{of, weighted};
    let status = select(RUN_STATUSES);
    let text = prop_oneof![".{0,20}", any::<String>()].prop_map(json_string);
    (
        (
            weighted(0.95, json_time()),
            weighted(0.95, status),
            of(json_number()),
        ),
        (
            of(json_time()),
            of(json_number()),
            of(json_number()),
            of(json_number()),
        ),
        (
            of(text.clone()),
            of(json_number()),
            of(text),
            weighted(0.05, Just("1")),
        ),
    )
        .prop_map(
            |((time, status, id), (finished, exit, duration, step), (log, pid, error, extra))| {
                let fields = [
                    ("time", time),
                    ("status", status.map(str::to_string)),
                    ("id", id),
                    ("finished", finished),
                    ("exit_code", exit),
                    ("duration_ms", duration),
                    ("totp_step", step),
                    ("log", log),
                    ("pid", pid),
                    ("error", error),
                    ("unknown", extra.map(str::to_string)),
                ];
                json_object(fields)
            },
        )
}

/// A JSON object of the `fields` that are present (each value written as JSON already).
fn json_object<const N: usize>(fields: [(&str, Option<String>); N]) -> String {
    let members: Vec<String> = fields
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| format!("\"{name}\": {value}")))
        .collect();
    format!("{{{}}}", members.join(", "))
}

/// A file holding a `document` (most often), a document cut short, or anything at all.
fn file_of(document: BoxedStrategy<String>) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        6 => document.clone().prop_map(String::into_bytes),
        1 => (document, any::<Index>()).prop_map(|(text, at)| {
            let bytes = text.into_bytes();
            let end = at.index(bytes.len() + 1);
            bytes[..end].to_vec()
        }),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..128),
    ]
    .prop_map(Bytes)
}

/// History files: lists of entries (bare or wrapped as the status answer), cut short, or anything at all.
fn history_file() -> impl Strategy<Value = Bytes> {
    let list = vec(run_record(), 0..4)
        .prop_map(|records| format!("[{}]", records.join(",\n")))
        .boxed();
    let document = prop_oneof![
        3 => list.clone(),
        1 => list.prop_map(|list| format!("{{\"history\": {list}}}")),
    ]
    .boxed();
    file_of(document)
}

/// Regulation state files: bans, the pause, the pause count and recent failures, valid or not.
fn regulation_file() -> impl Strategy<Value = Bytes> {
    use proptest::option::{of, weighted};
    let client = prop_oneof![
        Just("127.0.0.1".to_string()),
        Just("2001:db8::/64".to_string()),
        ".{0,16}".prop_map(String::from),
    ];
    let bans = vec((client, json_time()), 0..3).prop_map(|bans| {
        let members: Vec<String> = bans
            .into_iter()
            .map(|(client, until)| format!("{}: {until}", json_string(client)))
            .collect();
        format!("{{{}}}", members.join(", "))
    });
    let failures = vec(json_time(), 0..4).prop_map(|times| format!("[{}]", times.join(", ")));
    let pauses = prop_oneof![2 => (0u32..40).prop_map(|n| n.to_string()), 1 => json_number()];
    let document = (
        of(bans),
        of(json_time()),
        of(pauses),
        of(json_time()),
        weighted(0.7, failures),
        proptest::bool::weighted(0.05),
    )
        .prop_map(|(bans, paused, pauses, last_end, failures, extra)| {
            let fields = [
                ("bans", bans),
                ("paused_until", paused),
                ("pauses", pauses),
                ("last_pause_end", last_end),
                ("global_failures", failures),
                ("unknown", extra.then(|| "1".to_string())),
            ];
            json_object(fields)
        })
        .boxed();
    file_of(document)
}

fn unchanged(path: &Path, before: &[u8], error: &dyn fmt::Display) -> Result<(), TestCaseError> {
    let after = std::fs::read(path).expect("the file is still there");
    prop_assert!(
        after == before,
        "the file was changed although it was refused: {}",
        error
    );
    Ok(())
}

#[test]
fn arbitrary_history_files_open_or_are_refused_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("history.json");
    check(cases(), history_file(), |Bytes(text)| {
        std::fs::write(&path, &text).expect("write history");
        match FileHistory::open(&path, 1000) {
            Ok(_) => Ok(()),
            Err(error) => unchanged(&path, &text, &error),
        }
    });
}

#[test]
fn arbitrary_regulation_files_open_or_are_refused_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("regulation.json");
    check(cases(), regulation_file(), |Bytes(text)| {
        std::fs::write(&path, &text).expect("write regulation state");
        match FileRegulation::open(&path) {
            Ok(_) => Ok(()),
            Err(error) => unchanged(&path, &text, &error),
        }
    });
}

/// A history file authrun opens must not break it later: it reads back what it wrote, starts on it, and
/// answers the page, the status and codes without a panic or a 5xx.
#[test]
fn accepted_history_files_never_break_the_app() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("history.json");
    check(cases(), history_file(), |Bytes(text)| {
        std::fs::write(&path, &text).expect("write history");
        if FileHistory::open(&path, 1000).is_err() {
            return Ok(());
        }
        if let Err(error) = FileHistory::open(&path, 1000) {
            return Err(fail(format!("authrun cannot read back what it wrote: {error}")));
        }
        let text = String::from_utf8(text).expect("an opened history is UTF-8");
        let app = TestApp::builder().history(&text).build();
        rt.block_on(async {
            for path in ["/get_deploy_status", "/"] {
                let response = app.get(path).await;
                prop_assert_eq!(response.status, StatusCode::OK, "{}", describe(&response));
            }
            check_verify_answer(&app.post_verify(&wrong_code(&app)).await)?;
            let json = check_verify_answer(&app.post_verify(&app.code_now()).await)?;
            if let Some(id) = json["run_id"].as_u64() {
                app.wait_for_run(id).await;
            }
            let status = app.get("/get_deploy_status").await;
            prop_assert_eq!(status.status, StatusCode::OK, "{}", describe(&status));
            Ok(())
        })
    });
}

/// A regulation state authrun opens must not break it later: each use of the guard works, without panic.
#[test]
fn accepted_regulation_files_never_break_the_guard() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("regulation.json");
    let client = ClientKey::of(PEER.ip());
    let rt = runtime();
    check(cases(), regulation_file(), |Bytes(text)| {
        std::fs::write(&path, &text).expect("write regulation state");
        let Ok(store) = FileRegulation::open(&path) else {
            return Ok(());
        };
        let guard = Guard::new(Arc::new(store), RegulationSettings::default());
        rt.block_on(async {
            guard
                .refresh(START)
                .await
                .map_err(|error| fail(format!("refresh: {error}")))?;
            let _ = guard.blocked(&client, START);
            for _ in 0..RegulationSettings::default().client_max_failures {
                let Ok(turn) = guard.turn(&client, START).await else {
                    break;
                };
                turn.fail()
                    .await
                    .saved
                    .map_err(|error| fail(format!("counting a failure: {error}")))?;
            }
            Ok::<(), TestCaseError>(())
        })?;
        if let Err(error) = FileRegulation::open(&path) {
            return Err(fail(format!("authrun cannot read back what it wrote: {error}")));
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------
// 7. The code parser

#[test]
fn totp_code_parse_accepts_exactly_n_ascii_digits() {
    check(cases() * 4, (code_text(), 6u8..=8), |(text, digits)| {
        let parsed = TotpCode::parse(&text, digits);
        prop_assert_eq!(
            parsed.is_ok(),
            is_code(&text, digits),
            "{:?} with {} digits",
            text,
            digits
        );
        Ok(())
    });
}
