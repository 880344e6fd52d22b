//! Live output: a run's lines reach a viewer while it goes (Server-Sent Events), a late viewer reads them
//! from the log once each, only a verified session or the API token may see them, a run can be cancelled
//! (its whole process group), `?wait` holds an answer until the run ends, and the run pages show it all
//! safely.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use authrun::auth::token::sha256_hex;
use authrun::runs::output::{BUFFER_CAP, MAX_LINE_BYTES};
use axum::http::StatusCode;
use serde_json::Value;

use crate::common::process_ended;
use crate::helpers::{
    TestApp, TestAppBuilder, TestResponse, assert_content_type, assert_gone, assert_redirect_to,
    assert_refused, eventually, last_run_id, let_script_finish, pid_written, run_one_after_another,
    start_run, tcp_client, wrong_code,
};
use crate::html::{csrf_input, table_body, text_of_id, unescape_html};

/// The API token of the apps built by [`with_token`].
const TOKEN: &str = "3b1f0c55e2a04d5e9c6a7f18b2d4e6f0-live-output-tests";
/// The `Authorization` header that carries [`TOKEN`].
const BEARER: &str = "Bearer 3b1f0c55e2a04d5e9c6a7f18b2d4e6f0-live-output-tests";
/// What a browser sends as `Accept` when it posts a form or follows a link.
const HTML: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

/// Shell functions every test script gets:
/// - `wait_for FILE` waits until the test creates FILE in the working directory (giving up after about
///   30 s, so a failed test never leaves a script behind for long);
/// - `logged N` waits until the run's log (`.authrun/runs/$AUTHRUN_RUN_ID.log`) holds N lines, so that
///   lines printed on stdout and stderr are numbered in the order the script printed them.
const SCRIPT_PRELUDE: &str = "#!/bin/sh\n\
    wait_for() { i=0; while [ ! -f \"$1\" ] && [ \"$i\" -lt 600 ]; do sleep 0.05; i=$((i+1)); done; }\n\
    logged() { i=0; while [ \"$(wc -l < \".authrun/runs/$AUTHRUN_RUN_ID.log\")\" -lt \"$1\" ] \
    && [ \"$i\" -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; }\n";

/// A script: [`SCRIPT_PRELUDE`] then `body`.
fn script(body: &str) -> String {
    format!("{SCRIPT_PRELUDE}{body}")
}

/// An app that accepts [`TOKEN`] as `Authorization: Bearer`, with more `[access]` keys if given.
fn with_token(builder: TestAppBuilder, access: &str) -> TestAppBuilder {
    builder.config(&format!(
        "[access]\napi_token_sha256 = \"{}\"\n{access}",
        sha256_hex(TOKEN)
    ))
}

/// Asserts the refusal of `what` (events, log, cancel) to someone who may not see or stop the run.
fn assert_unauthorized(response: &TestResponse, what: &str) {
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        response.text()
    );
    assert_refused(response, StatusCode::UNAUTHORIZED, "unauthorized");
}

/// A `GET` whose answer (a stream, possibly) must be complete within 20 s.
async fn get_bounded(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> TestResponse {
    tokio::time::timeout(Duration::from_secs(20), app.get_with(path, headers))
        .await
        .unwrap_or_else(|_| panic!("GET {path} did not finish within 20 s"))
}

/// `GET /runs/{id}` as JSON.
async fn run_json(app: &TestApp, id: u64) -> Value {
    let response = app
        .get_with(&format!("/runs/{id}"), &[("accept", "application/json")])
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    response.json()
}

/// A browser's cookies: whatever the answers set, sent back as one `Cookie` header.
#[derive(Debug, Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    /// Keeps the cookies `response` sets (a newer value replaces an older one).
    fn keep(&mut self, response: &TestResponse) -> &mut Self {
        for set in response
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let pair = set.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            self.0.retain(|(kept, _)| kept != name.trim());
            self.0.push((name.trim().to_string(), value.trim().to_string()));
        }
        self
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(kept, _)| kept == name)
    }

    /// The `Cookie` header (empty when the browser holds none).
    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The `Cookie` header of a browser that opened the page but entered no code.
async fn visitor_cookies(app: &TestApp) -> String {
    let mut visitor = Jar::default();
    visitor.keep(&app.get("/").await);
    visitor.header()
}

/// A browser that entered a valid code in the page's form: its cookies, and the run that started.
async fn verified_browser(app: &TestApp) -> (Jar, u64) {
    let mut jar = Jar::default();
    let posted = app.post_verify_html(&app.code_now(), None).await;
    let id = last_run_id(app);
    assert_redirect_to(&posted, &format!("/runs/{id}"));
    jar.keep(&posted);
    assert!(
        jar.has("authrun_session"),
        "a browser's valid code starts a session"
    );
    (jar, id)
}

// ---------------------------------------------------------------------------------------------------
// Server-Sent Events

/// One event of an SSE stream.
#[derive(Debug, Clone)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

/// A `line` event as (line number, stream, text).
type ShownLine = (u64, String, String);

fn line(number: u64, stream: &str, text: &str) -> ShownLine {
    (number, stream.to_string(), text.to_string())
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("the data of {self:?} is not JSON: {e}"))
    }

    fn line(&self) -> ShownLine {
        assert_eq!(self.event, "line", "{self:?}");
        let number = self
            .id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("a line event without a numeric id: {self:?}"));
        let data = self.json();
        let text = |key: &str| {
            data[key]
                .as_str()
                .unwrap_or_else(|| panic!("no `{key}` in {self:?}"))
                .to_string()
        };
        (number, text("stream"), text("text"))
    }
}

/// Takes the complete events off the front of `buffer` (an SSE body so far); comments (keep-alives)
/// are skipped.
fn take_events(buffer: &mut Vec<u8>) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
        let block: Vec<u8> = buffer.drain(..end + 2).collect();
        let block = String::from_utf8(block).expect("an SSE stream is UTF-8");
        let mut event = SseEvent {
            event: "message".into(),
            id: None,
            data: String::new(),
        };
        let mut data = Vec::new();
        let mut fields = 0;
        for field in block.lines() {
            if field.is_empty() || field.starts_with(':') {
                continue;
            }
            let (name, value) = field.split_once(':').unwrap_or((field, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match name {
                "event" => event.event = value.to_string(),
                "id" => event.id = Some(value.to_string()),
                "data" => data.push(value),
                _ => {}
            }
            fields += 1;
        }
        if fields > 0 {
            event.data = data.join("\n");
            events.push(event);
        }
    }
    events
}

/// Reads a whole (ended) event stream in-process.
async fn read_events(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Vec<SseEvent> {
    let response = get_bounded(app, path, headers).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_content_type(&response, "text/event-stream");
    let mut body = response.body.clone();
    let events = take_events(&mut body);
    assert!(
        body.is_empty(),
        "the stream ended inside an event: {:?}",
        String::from_utf8_lossy(&body)
    );
    events
}

/// The `line` events of a stream and the record of its final `end` event (which must be last, and
/// the only one).
fn lines_and_end(events: &[SseEvent]) -> (Vec<ShownLine>, Value) {
    let (end, lines) = events.split_last().expect("at least the end event");
    assert_eq!(end.event, "end", "the stream must finish with `end`: {events:#?}");
    (lines.iter().map(SseEvent::line).collect(), end.json())
}

/// An event stream read incrementally over TCP.
struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    ready: VecDeque<SseEvent>,
}

impl EventStream {
    fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// The next event, or `None` once the server closed the stream. Panics after 15 s of silence.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(15), self.response.chunk())
                .await
                .expect("an event or the end of the stream within 15 s")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => {
                    self.buffer.extend_from_slice(&bytes);
                    self.ready.extend(take_events(&mut self.buffer));
                }
                None => {
                    assert!(
                        self.buffer.is_empty(),
                        "the stream closed inside an event: {:?}",
                        String::from_utf8_lossy(&self.buffer)
                    );
                    return None;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Pages

/// The output a run page shows, as (class, text) per line, text unescaped; `None` when the page shows
/// no output.
fn shown_output(page: &str) -> Option<Vec<(String, String)>> {
    shown_lines(page).map(|lines| {
        lines
            .into_iter()
            .map(|(stream, segments)| (stream, segments.into_iter().map(|(_, text)| text).collect()))
            .collect()
    })
}

/// A line of output as the run page shows it: its stream, and its pieces of text with their classes.
type ShownStyledLine = (String, Vec<(String, String)>);

/// The output lines a run page shows: each line's stream (its class) and its styled segments (the
/// classes of each piece of text, empty for plain text).
fn shown_lines(page: &str) -> Option<Vec<ShownStyledLine>> {
    let start = page.find("<pre id=\"output\"")?;
    let pre = &page[start..];
    let pre = &pre[pre.find('>')? + 1..pre.find("</pre>")?];
    let lines = pre
        .split("<span class=\"line ")
        .skip(1)
        .map(|piece| {
            let (stream, rest) = piece.split_once("\">").expect("a line's class");
            let rest = rest
                .strip_suffix("\n</span>")
                .expect("a line ends with its newline");
            let mut segments = Vec::new();
            let mut text = rest;
            while !text.is_empty() {
                if let Some(styled) = text.strip_prefix("<span class=\"") {
                    let (class, after) = styled.split_once("\">").expect("a segment's class");
                    let (inner, after) = after.split_once("</span>").expect("a segment's end");
                    segments.push((class.to_string(), unescape_html(inner)));
                    text = after;
                } else {
                    let end = text.find("<span").unwrap_or(text.len());
                    segments.push((String::new(), unescape_html(&text[..end])));
                    text = &text[end..];
                }
            }
            if segments.is_empty() {
                segments.push((String::new(), String::new()));
            }
            (stream.to_string(), segments)
        })
        .collect();
    Some(lines)
}

/// The texts of the output a run page shows.
fn shown_texts(page: &str) -> Option<Vec<String>> {
    shown_output(page).map(|lines| lines.into_iter().map(|(_, text)| text).collect())
}

/// The run ids the list of runs links to, in page order.
fn listed_runs(page: &str) -> Vec<u64> {
    table_body(page)
        .split("<a href=\"/runs/")
        .skip(1)
        .map(|link| {
            let (id, rest) = link.split_once("\">").expect("a link");
            let id: u64 = id.parse().unwrap_or_else(|_| panic!("a run link: {link}"));
            assert!(rest.starts_with(&format!("#{id}</a>")), "{link}");
            id
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// 1. Live

#[tokio::test]
async fn a_verified_browser_watches_the_output_live_over_tcp() {
    let app = TestApp::builder()
        .script(&script(
            "echo one\nwait_for go\necho two >&2\nlogged 2\necho three\n",
        ))
        .build();
    let server = app.serve_tcp().await;
    let browser = tcp_client();
    let posted = browser
        .post(server.url("/verify"))
        .header("accept", HTML)
        .form(&[("code", app.code_now())])
        .send()
        .await
        .expect("the server answers");
    assert_eq!(posted.status(), reqwest::StatusCode::SEE_OTHER);
    let id = last_run_id(&app);

    let response = browser
        .get(server.url(&format!("/runs/{id}/events")))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        response.headers()
    );
    let mut stream = EventStream::new(response);

    let first = stream.next().await.expect("the first line");
    assert_eq!(first.line(), line(1, "stdout", "one"));
    // It came while the run is still going: the script waits for `go`.
    let status = app.status().await;
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["history"][0]["status"], "Deploying", "{status}");

    let_script_finish(&app);
    let second = stream.next().await.expect("the second line");
    assert_eq!(second.line(), line(2, "stderr", "two"));
    let third = stream.next().await.expect("the third line");
    assert_eq!(third.line(), line(3, "stdout", "three"));
    let end = stream.next().await.expect("the end event");
    assert_eq!(end.event, "end", "{end:?}");
    let record = end.json();
    assert_eq!(record["id"], id, "{record}");
    assert_eq!(record["status"], "Deploy succeeded", "{record}");
    assert!(
        stream.next().await.is_none(),
        "the stream goes on after the end event"
    );
    server.shutdown().await;
}

// 2. Late viewers and resuming

/// Reads run `id`'s events three ways (from the start, after `Last-Event-ID: 1`, after `?after=2`)
/// and checks each gets exactly the lines it lacks, in order, then the end.
async fn assert_replays(app: &TestApp, id: u64, expected: &[ShownLine], situation: &str) {
    let path = format!("/runs/{id}/events");
    let (lines, end) = lines_and_end(&read_events(app, &path, &[("authorization", BEARER)]).await);
    assert_eq!(lines, expected, "from the start, {situation}");
    assert_eq!(end["status"], "Deploy succeeded", "{situation}: {end}");

    let (lines, end) =
        lines_and_end(&read_events(app, &path, &[("authorization", BEARER), ("last-event-id", "1")]).await);
    assert_eq!(lines, expected[1..], "after Last-Event-ID: 1, {situation}");
    assert_eq!(end["id"], id, "{situation}: {end}");

    let (lines, end) =
        lines_and_end(&read_events(app, &format!("{path}?after=2"), &[("authorization", BEARER)]).await);
    assert_eq!(lines, expected[2..], "after ?after=2, {situation}");
    assert_eq!(end["id"], id, "{situation}: {end}");
}

#[tokio::test]
async fn a_late_viewer_gets_every_line_once_and_can_resume() {
    let app = with_token(TestApp::builder().cooldown(0), "")
        .script(&script(
            "echo 'line 1'\necho 'line 2'\nlogged 2\necho 'line 3' >&2\nlogged 3\n\
             echo 'line 4'\necho 'line 5'\n",
        ))
        .build();
    let id = start_run(&app, &app.code_now()).await;
    assert_eq!(app.wait_for_run(id).await.status.as_str(), "Deploy succeeded");
    let expected = [
        line(1, "stdout", "line 1"),
        line(2, "stdout", "line 2"),
        line(3, "stderr", "line 3"),
        line(4, "stdout", "line 4"),
        line(5, "stdout", "line 5"),
    ];
    assert_replays(&app, id, &expected, "just after the run").await;

    // Once a newer run has started, the older run is still replayed whole from its log.
    app.advance(30);
    let newer = start_run(&app, &app.code_now()).await;
    app.wait_for_run(newer).await;
    assert_replays(&app, id, &expected, "after a newer run").await;
}

// 3. Access

#[tokio::test]
async fn output_needs_a_verified_session_or_the_token() {
    let app = with_token(TestApp::builder(), "")
        .script(&script("echo secret-output\nwait_for go\n"))
        .build();
    let id = start_run(&app, &app.code_now()).await;
    let (events, log, cancel, page) = (
        format!("/runs/{id}/events"),
        format!("/runs/{id}/log"),
        format!("/runs/{id}/cancel"),
        format!("/runs/{id}"),
    );

    // Nothing at all, then a browser that opened the page (and keeps what it set) but entered no code.
    let visitor = visitor_cookies(&app).await;
    for headers in [vec![], vec![("cookie", visitor.as_str())]] {
        assert_unauthorized(&app.get_with(&events, &headers).await, "events");
        assert_unauthorized(&app.get_with(&log, &headers).await, "log");
        let refused = app.post_form(&cancel, "", &headers).await;
        assert_unauthorized(&refused, "cancel");
    }
    assert_eq!(
        app.status().await["state"],
        "running",
        "a refused cancel stopped the run"
    );

    let shown = app.get_with(&page, &[("accept", HTML)]).await;
    assert_eq!(shown.status, StatusCode::OK);
    let shown = shown.text();
    assert_eq!(text_of_id(&shown, "run-status"), Some("Deploying"), "{shown}");
    assert_eq!(shown_output(&shown), None, "{shown}");
    assert!(!shown.contains("secret-output"), "{shown}");
    assert!(shown.contains("enter a valid code"), "{shown}");

    let_script_finish(&app);
    app.wait_for_run(id).await;
    let shown = app.get(&page).await.text();
    assert_eq!(
        text_of_id(&shown, "run-status"),
        Some("Deploy succeeded"),
        "{shown}"
    );
    assert!(!shown.contains("secret-output"), "{shown}");
    assert_unauthorized(&app.get(&events).await, "events after the run");
    assert_unauthorized(&app.get(&log).await, "log after the run");
}

#[tokio::test]
async fn a_code_entered_in_the_browser_shows_output_for_fifteen_minutes() {
    let app = TestApp::builder()
        .cooldown(0)
        .script(&script("echo visible-line\nlogged 1\necho second-line >&2\n"))
        .build();
    let (jar, id) = verified_browser(&app).await;
    app.wait_for_run(id).await;
    let cookie = jar.header();
    let with_cookie = [("cookie", cookie.as_str())];

    // A wrong code, from another browser, verifies nothing (the gate is idle: no cooldown).
    let refused = app.post_verify_html(&wrong_code(&app), None).await;
    assert_redirect_to(&refused, "/");
    let mut unverified = Jar::default();
    unverified.keep(&refused);
    assert_unauthorized(
        &app.get_with(&format!("/runs/{id}/log"), &[("cookie", &unverified.header())])
            .await,
        "log after a wrong code",
    );

    let page = app.get_with(&format!("/runs/{id}"), &with_cookie).await.text();
    assert_eq!(
        shown_output(&page),
        Some(vec![
            ("stdout".to_string(), "visible-line".to_string()),
            ("stderr".to_string(), "second-line".to_string()),
        ]),
        "{page}"
    );
    // Verified at 12:00:10 for 15 minutes.
    assert!(page.contains("12:15:10 UTC"), "{page}");
    let log = app.get_with(&format!("/runs/{id}/log"), &with_cookie).await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text());
    assert_eq!(log.text(), "visible-line\nsecond-line\n");
    let (lines, _) = lines_and_end(&read_events(&app, &format!("/runs/{id}/events"), &with_cookie).await);
    assert_eq!(lines.len(), 2, "{lines:?}");

    app.advance(14 * 60);
    let still = app.get_with(&format!("/runs/{id}/log"), &with_cookie).await;
    assert_eq!(still.status, StatusCode::OK, "after 14 minutes: {}", still.text());

    app.advance(2 * 60);
    assert_unauthorized(
        &app.get_with(&format!("/runs/{id}/log"), &with_cookie).await,
        "log after 16 minutes",
    );
    assert_unauthorized(
        &app.get_with(&format!("/runs/{id}/events"), &with_cookie).await,
        "events after 16 minutes",
    );
    let page = app.get_with(&format!("/runs/{id}"), &with_cookie).await.text();
    assert_eq!(shown_output(&page), None, "{page}");
    assert!(!page.contains("visible-line"), "{page}");
    assert!(page.contains("enter a valid code"), "{page}");
}

#[tokio::test]
async fn the_api_token_reads_output_and_a_wrong_one_is_refused() {
    let app = with_token(TestApp::builder(), "")
        .script("#!/bin/sh\necho for-the-token\n")
        .build();
    let id = start_run(&app, &app.code_now()).await;
    app.wait_for_run(id).await;
    let (events, log) = (format!("/runs/{id}/events"), format!("/runs/{id}/log"));

    for wrong in [
        "Bearer not-the-token",
        "Bearer ",
        "bearer 3b1f0c55e2a04d5e9c6a7f18b2d4e6f0",
    ] {
        let headers = [("authorization", wrong)];
        assert_unauthorized(&app.get_with(&events, &headers).await, wrong);
        assert_unauthorized(&app.get_with(&log, &headers).await, wrong);
    }

    let headers = [("authorization", BEARER)];
    let text = app.get_with(&log, &headers).await;
    assert_eq!(text.status, StatusCode::OK, "{}", text.text());
    assert_eq!(text.text(), "for-the-token\n");
    let (lines, end) = lines_and_end(&read_events(&app, &events, &headers).await);
    assert_eq!(lines, [line(1, "stdout", "for-the-token")]);
    assert_eq!(end["status"], "Deploy succeeded", "{end}");
}

#[tokio::test]
async fn public_output_lets_anyone_read_but_not_cancel() {
    let app = with_token(TestApp::builder(), "public_output = true")
        .script(&script("echo public-line\nwait_for go\n"))
        .build();
    let id = start_run(&app, &app.code_now()).await;
    let visitor = visitor_cookies(&app).await;
    let cancel = format!("/runs/{id}/cancel");
    assert_unauthorized(&app.post_form(&cancel, "", &[]).await, "cancel by anyone");
    let refused = app
        .post_form(&cancel, "", &[("cookie", &visitor), ("accept", HTML)])
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text());
    assert!(
        refused.text().contains("Enter a valid code on the page"),
        "a browser is shown the refusal as a page: {}",
        refused.text()
    );
    assert_eq!(
        app.status().await["state"],
        "running",
        "a refused cancel stopped the run"
    );

    let_script_finish(&app);
    app.wait_for_run(id).await;
    let log = app.get(&format!("/runs/{id}/log")).await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text());
    assert_eq!(log.text(), "public-line\n");
    let (lines, end) = lines_and_end(&read_events(&app, &format!("/runs/{id}/events"), &[]).await);
    assert_eq!(lines, [line(1, "stdout", "public-line")]);
    assert_eq!(end["status"], "Deploy succeeded", "{end}");
    let page = app.get(&format!("/runs/{id}")).await.text();
    assert_eq!(
        shown_texts(&page),
        Some(vec!["public-line".to_string()]),
        "{page}"
    );
}

// 4. The log

#[tokio::test]
async fn the_log_is_the_plain_text_of_every_line_in_order() {
    let app = with_token(TestApp::builder(), "")
        .script(&script(
            "echo first\nlogged 1\necho 'second, on stderr' >&2\nlogged 2\n\
             echo 'o looks like a tag'\necho 'e so does this'\necho\necho last\n",
        ))
        .build();
    let id = start_run(&app, &app.code_now()).await;
    app.wait_for_run(id).await;

    let log = app
        .get_with(&format!("/runs/{id}/log"), &[("authorization", BEARER)])
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text());
    assert_content_type(&log, "text/plain");
    assert_eq!(
        log.text(),
        "first\nsecond, on stderr\no looks like a tag\ne so does this\n\nlast\n"
    );
}

// 5. Cancel

#[tokio::test]
async fn cancelling_with_the_token_stops_the_whole_process_group() {
    let app = with_token(TestApp::builder(), "")
        .script(
            "#!/bin/sh\n\
             sh -c 'trap \"\" TERM; echo $$ > child.pid; exec sleep 60' &\n\
             echo $$ > script.pid\n\
             sleep 60\n",
        )
        .script_key("kill_grace_seconds = 60")
        .build();
    let id = start_run(&app, &app.code_now()).await;
    let child = pid_written(&app, "child.pid").await;
    let script_pid = pid_written(&app, "script.pid").await;
    assert!(!process_ended(child), "the child is running before the cancel");

    let cancel = format!("/runs/{id}/cancel");
    let response = app.post_form(&cancel, "", &[("authorization", BEARER)]).await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    let body = response.json();
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["run_id"], id, "{body}");

    // SIGTERM ends the script; the child ignores it until the grace period is over.
    assert_gone(script_pid, "the script").await;
    assert!(
        !process_ended(child),
        "the child was killed before the grace period was over"
    );
    app.advance(60);
    let record = app.wait_for_run(id).await;
    assert_eq!(record.status.as_str(), "Cancelled");
    let shown = run_json(&app, id).await;
    assert_eq!(shown["status"], "Cancelled", "{shown}");
    assert_eq!(shown["cancelled_by"], "API token", "{shown}");
    assert!(shown["cancelled_at"].is_string(), "{shown}");
    assert!(shown["finished"].is_string(), "{shown}");
    assert_gone(child, "the child that ignores SIGTERM").await;

    let again = app.post_form(&cancel, "", &[("authorization", BEARER)]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    assert_eq!(again.json()["error"], "not_running");
}

#[tokio::test]
async fn a_browser_cancels_with_the_token_of_the_run_page() {
    let app = TestApp::builder()
        .script(&script("echo waiting\nwait_for go\n"))
        .build();
    let (mut jar, id) = verified_browser(&app).await;
    let run_page = format!("/runs/{id}");
    let cancel = format!("/runs/{id}/cancel");

    let page = app
        .get_with(&run_page, &[("cookie", &jar.header()), ("accept", HTML)])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    jar.keep(&page);
    let cookie = jar.header();
    let page = page.text();
    assert!(page.contains(&format!("action=\"{cancel}\"")), "{page}");
    let csrf = csrf_input(&page).expect("the cancel form carries the page's token");

    // The same browser, posting without the page's token (as a forged form would), is refused.
    let forged = app
        .post_form(&cancel, "", &[("cookie", &cookie), ("accept", HTML)])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.text());
    assert_eq!(
        app.status().await["state"],
        "running",
        "a forged cancel stopped the run"
    );

    let cancelled = app
        .post_form(
            &cancel,
            &format!("csrf={csrf}"),
            &[("cookie", &cookie), ("accept", HTML)],
        )
        .await;
    assert_redirect_to(&cancelled, &run_page);
    let record = app.wait_for_run(id).await;
    assert_eq!(record.status.as_str(), "Cancelled");
    let by = record.cancelled_by.clone().unwrap_or_default();
    assert_eq!(by, "a verified session", "{record:?}");
    assert!(record.cancelled_at.is_some(), "{record:?}");

    let after = app.get_with(&run_page, &[("cookie", &cookie)]).await.text();
    assert_eq!(text_of_id(&after, "run-status"), Some("Cancelled"), "{after}");
    // The run ended before the page came back: the page says so rather than "Cancelling".
    assert!(
        after.contains(&format!("Run #{id} has ended: Cancelled.")),
        "{after}"
    );
    assert!(!after.contains("Cancelling"), "{after}");
    // No exit code, but the signal that ended it.
    assert_eq!(
        text_of_id(&after, "run-exit"),
        Some("none (ended by signal 15, SIGTERM)"),
        "{after}"
    );
    assert!(after.contains(&format!("Cancelled by {by}.")), "{after}");
}

// 6. Bounded memory

#[tokio::test]
async fn a_flood_of_output_is_logged_whole_with_bounded_memory() {
    const LINE: &str = "a line of output that is about fifty bytes long......";
    const LINES: usize = 600_000;
    const LONG: usize = 10_000;
    let app = TestApp::builder()
        .script(&format!(
            "#!/bin/sh\nyes '{LINE}' | head -n {LINES}\nhead -c {LONG} /dev/zero | tr '\\0' x\necho\n"
        ))
        .build();
    let id = start_run(&app, &app.code_now()).await;
    assert_eq!(app.wait_for_run(id).await.status.as_str(), "Deploy succeeded");

    let path = app.path(".authrun").join("runs").join(format!("{id}.log"));
    let log = std::fs::read_to_string(&path).expect("the log is there");
    let lines: Vec<&str> = log.lines().collect();
    let pieces = LONG.div_ceil(MAX_LINE_BYTES);
    assert_eq!(pieces, 3);
    assert_eq!(lines.len(), LINES + pieces);
    let expected = format!("o {LINE}");
    if let Some(bad) = lines[..LINES].iter().position(|l| *l != expected) {
        panic!("line {} is {:?}", bad + 1, lines[bad]);
    }
    let long: Vec<usize> = lines[LINES..]
        .iter()
        .map(|l| {
            let text = l.strip_prefix("o ").expect("stdout");
            assert!(text.bytes().all(|b| b == b'x'), "{text}");
            text.len()
        })
        .collect();
    assert_eq!(long, [MAX_LINE_BYTES, MAX_LINE_BYTES, LONG - 2 * MAX_LINE_BYTES]);

    let live = app.state.runner.live_output(id).expect("the newest run's output");
    assert!(live.peak_buffered() > 0);
    assert!(
        live.peak_buffered() <= BUFFER_CAP,
        "{} bytes held at once, more than {BUFFER_CAP}",
        live.peak_buffered()
    );
}

#[tokio::test]
async fn viewers_that_stop_reading_never_hold_the_run_back() {
    const LINES: usize = 300_000;
    let app = with_token(
        TestApp::builder().script(&script(&format!(
            "wait_for go\nyes 'a line for viewers who never read it' | head -n {LINES}\n"
        ))),
        "",
    )
    .build();
    let server = app.serve_tcp().await;
    let id = start_run(&app, &app.code_now()).await;
    // Twenty viewers ask for the stream and then never read a byte of it.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
            .await
            .expect("connect");
        let request =
            format!("GET /runs/{id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {BEARER}\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .expect("send");
        stalled.push(stream);
    }
    let_script_finish(&app);
    let record = tokio::time::timeout(Duration::from_secs(30), app.wait_for_run(id))
        .await
        .expect("the run ends although nobody reads its output");
    assert_eq!(record.status.as_str(), "Deploy succeeded");
    let log =
        std::fs::read_to_string(app.path(".authrun").join("runs").join(format!("{id}.log"))).expect("log");
    assert_eq!(log.lines().count(), LINES, "every line is in the log");
    drop(stalled);
}

// 7. Waiting

/// `POST /verify?wait=...` with the current code, bounded.
async fn post_verify_waiting(app: &TestApp, wait: &str) -> Option<TestResponse> {
    let path = format!("/verify?wait={wait}");
    let body = format!("code={}", app.code_now());
    tokio::time::timeout(Duration::from_secs(10), app.post_form(&path, &body, &[]))
        .await
        .ok()
}

/// The body of the answer to a wait for a run that failed: 424, `success: false`.
fn failed_run_answer(response: &TestResponse) -> Value {
    assert_eq!(
        response.status,
        StatusCode::FAILED_DEPENDENCY,
        "{}",
        response.text()
    );
    let body = response.json();
    assert_eq!(body["success"], false, "{body}");
    body
}

/// The answer to `GET /runs/ID?wait=WAIT` when a script waiting for `go` is let go while the request
/// waits.
async fn get_run_released(app: &TestApp, id: u64, wait: &str) -> TestResponse {
    let path = format!("/runs/{id}?wait={wait}");
    let waiting = app.get_with(&path, &[("accept", "application/json")]);
    // The test's runtime has one thread: this runs once the request above is waiting.
    let go = app.path("go");
    let release = tokio::spawn(async move { std::fs::write(go, "").expect("create go") });
    let response = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the answer within 10 s");
    release.await.expect("the release task");
    response
}

#[tokio::test]
async fn waiting_for_a_run_that_succeeds_answers_200() {
    let app = TestApp::builder().script("#!/bin/sh\necho done\n").build();
    let response = post_verify_waiting(&app, "true")
        .await
        .expect("the answer comes when the run ends");
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let body = response.json();
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["run"]["status"], "Deploy succeeded", "{body}");
    assert_eq!(body["run"]["exit_code"], 0, "{body}");
    assert_eq!(body["run_url"], "/runs/1", "{body}");
    assert_ne!(app.status().await["state"], "running");
}

#[tokio::test]
async fn waiting_for_a_run_that_fails_answers_424() {
    let app = TestApp::builder()
        .script("#!/bin/sh\necho broken >&2\nexit 2\n")
        .build();
    let response = post_verify_waiting(&app, "true")
        .await
        .expect("the answer comes when the run ends");
    let body = failed_run_answer(&response);
    assert_eq!(body["run"]["status"], "Deploy failed", "{body}");
    assert_eq!(body["run"]["exit_code"], 2, "{body}");
}

#[tokio::test]
async fn a_wait_of_a_minute_answers_202_while_the_run_goes_on() {
    let app = TestApp::builder().script(&script("wait_for go\n")).build();
    let (response, ()) = tokio::join!(post_verify_waiting(&app, "60"), async {
        // The wait counts from the request, which came before the run started.
        eventually("the run starts", || app.record(1).is_some()).await;
        app.advance(60);
    });
    let_script_finish(&app);
    app.wait_for_run(1).await;
    let response = response.expect(
        "POST /verify?wait=60 should answer once the clock passed 60 s while the run goes on, \
         but it did not answer within 10 s",
    );
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    let body = response.json();
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["run_id"], 1, "{body}");
    assert_eq!(body["run"]["status"], "Deploying", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("still going"), "{body}");
}

#[tokio::test]
async fn get_run_with_wait_answers_when_the_run_ends() {
    let app = TestApp::builder()
        .script(&script("wait_for go\necho released\n"))
        .build();
    let id = start_run(&app, &app.code_now()).await;
    let before = run_json(&app, id).await;
    assert_eq!(before["status"], "Deploying", "{before}");

    let response = get_run_released(&app, id, "5").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let record = response.json();
    assert_eq!(record["id"], id, "{record}");
    assert_eq!(record["status"], "Deploy succeeded", "{record}");
    assert!(record["finished"].is_string(), "{record}");
    app.wait_for_run(id).await;
}

#[tokio::test]
async fn get_run_with_wait_true_answers_424_for_a_failed_run_as_verify_does() {
    let app = TestApp::builder()
        .script(&script("wait_for go\necho broken >&2\nexit 3\n"))
        .build();
    let id = start_run(&app, &app.code_now()).await;
    let response = get_run_released(&app, id, "true").await;
    let body = failed_run_answer(&response);
    assert_eq!(body["status"], "Deploy failed", "{body}");
    assert_eq!(body["exit_code"], 3, "{body}");
    assert_eq!(body["message"], format!("Run #{id}: Deploy failed."), "{body}");
}

#[tokio::test]
async fn get_run_with_wait_answers_the_running_record_once_the_wait_is_over() {
    let app = TestApp::builder().script(&script("wait_for go\n")).build();
    let id = start_run(&app, &app.code_now()).await;

    let path = format!("/runs/{id}?wait=600");
    let mut waiting = std::pin::pin!(app.get_with(&path, &[("accept", "application/json")]));
    // In-process, nothing before the wait waits on anything: after one look the request is waiting.
    assert!(!has_answered(&mut waiting).await, "GET {path} answered at once");
    app.advance(599);
    assert!(
        !has_answered(&mut waiting).await,
        "GET {path} answered after 599 s"
    );
    app.advance(1);
    let response = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the answer once the clock passed 600 s");
    // The record's fields, with the status, `success` and message `/verify?wait=` gives a run still going.
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    let record = response.json();
    assert_eq!(record["id"], id, "{record}");
    assert_eq!(record["status"], "Deploying", "{record}");
    assert_eq!(record["success"], false, "{record}");
    assert!(
        record["message"]
            .as_str()
            .unwrap_or_default()
            .contains("still going"),
        "{record}"
    );
    let_script_finish(&app);
    app.wait_for_run(id).await;
}

/// Looks at a request once, without waiting for it: whether it has answered (the answer is dropped).
async fn has_answered<F: Future + Unpin>(request: &mut F) -> bool {
    std::future::poll_fn(|context| std::task::Poll::Ready(Pin::new(&mut *request).poll(context).is_ready()))
        .await
}

// 8. Pages

#[tokio::test]
async fn the_list_of_runs_is_paged_newest_first() {
    let app = TestApp::builder().cooldown(0).build();
    run_one_after_another(&app, 60).await;

    let first = app.get("/runs").await;
    assert_eq!(first.status, StatusCode::OK);
    let first = first.text();
    assert_eq!(listed_runs(&first), (11..=60).rev().collect::<Vec<u64>>());
    assert!(first.contains("href=\"/runs?page=2\""), "{first}");
    assert!(!first.contains("Newer"), "{first}");

    let second = app.get("/runs?page=2").await.text();
    assert_eq!(listed_runs(&second), (1..=10).rev().collect::<Vec<u64>>());
    let newer = second
        .find("href=\"/runs?page=1\"")
        .expect("page 2 links to page 1");
    assert!(second[newer..].contains("Newer"), "{second}");
    assert!(!second.contains("page=3"), "{second}");
}

#[tokio::test]
async fn unknown_runs_are_404() {
    let app = TestApp::builder().build();
    let id = start_run(&app, &app.code_now()).await;
    app.wait_for_run(id).await;
    for path in ["/runs/9999", "/runs/abc", "/runs/9999/events", "/runs/abc/log"] {
        let response = app.get(path).await;
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            response.text()
        );
    }
}

#[tokio::test]
async fn output_is_shown_escaped_with_colours_as_classes_and_progress_lines_rewritten() {
    let app = TestApp::builder()
        .script(
            "#!/bin/sh\necho '<script>alert(1)</script>'\nprintf '\\033[31mred\\033[0m\\n'\n\
             printf 'Progress: 10%%\\rProgress: 50%%\\rProgress: 100%%\\n'\n\
             printf '\\033[1;32mok\\033[0m done\\n'\n",
        )
        .build();
    let (jar, id) = verified_browser(&app).await;
    app.wait_for_run(id).await;
    let cookie = jar.header();
    let with_cookie = [("cookie", cookie.as_str())];

    let page = app.get_with(&format!("/runs/{id}"), &with_cookie).await.text();
    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(!page.contains('\u{1b}'), "{page}");
    let plain = |text: &str| (String::new(), text.to_string());
    let styled = |class: &str, text: &str| (class.to_string(), text.to_string());
    assert_eq!(
        shown_lines(&page),
        Some(vec![
            ("stdout".to_string(), vec![plain("<script>alert(1)</script>")]),
            ("stdout".to_string(), vec![styled("fg-1", "red")]),
            ("stdout".to_string(), vec![plain("Progress: 100%")]),
            ("stdout".to_string(), vec![styled("fg-2 b", "ok"), plain(" done")]),
        ]),
        "{page}"
    );

    let events = read_events(&app, &format!("/runs/{id}/events"), &with_cookie).await;
    let (lines, _) = lines_and_end(&events);
    assert_eq!(
        lines,
        [
            line(1, "stdout", "<script>alert(1)</script>"),
            line(2, "stdout", "red"),
            line(3, "stdout", "Progress: 100%"),
            line(4, "stdout", "ok done"),
        ]
    );
    assert_eq!(
        events[1].json()["segments"],
        serde_json::json!([{ "class": "fg-1", "text": "red" }]),
        "the live line carries its colour"
    );

    // The text log strips the escapes and applies the carriage returns by default; `?ansi=keep` keeps
    // what the script wrote.
    let log = app
        .get_with(&format!("/runs/{id}/log"), &with_cookie)
        .await
        .text();
    assert_eq!(log, "<script>alert(1)</script>\nred\nProgress: 100%\nok done\n");
    assert_eq!(
        app.get_with(&format!("/runs/{id}/log?ansi=strip"), &with_cookie)
            .await
            .text(),
        log
    );
    let kept = app
        .get_with(&format!("/runs/{id}/log?ansi=keep"), &with_cookie)
        .await
        .text();
    assert_eq!(
        kept,
        "<script>alert(1)</script>\n\u{1b}[31mred\u{1b}[0m\nProgress: 10%\rProgress: 50%\rProgress: 100%\n\
         \u{1b}[1;32mok\u{1b}[0m done\n"
    );
}

// 9. Log retention

#[tokio::test]
async fn only_the_newest_logs_are_kept() {
    let app = TestApp::builder().cooldown(0).script_key("keep_logs = 2").build();
    run_one_after_another(&app, 3).await;
    let mut logs: Vec<String> = std::fs::read_dir(app.path(".authrun").join("runs"))
        .expect("the log directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    logs.sort();
    assert_eq!(logs, ["2.log", "3.log"]);
}

// 10. Links in the answer

#[tokio::test]
async fn verify_answers_link_to_the_run_its_events_and_its_log() {
    let app = with_token(TestApp::builder(), "").build();
    let response = app.post_verify(&app.code_now()).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let body = response.json();
    let id = body["run_id"].as_u64().expect("run_id");
    assert_eq!(body["run_url"], format!("/runs/{id}"), "{body}");
    assert_eq!(body["events_url"], format!("/runs/{id}/events"), "{body}");
    assert_eq!(body["log_url"], format!("/runs/{id}/log"), "{body}");
    app.wait_for_run(id).await;

    // Each link leads where it says.
    let url = |key: &str| body[key].as_str().expect("a URL").to_string();
    let record = get_bounded(&app, &url("run_url"), &[("accept", "application/json")]).await;
    assert_eq!(record.json()["id"], id);
    let (lines, _) =
        lines_and_end(&read_events(&app, &url("events_url"), &[("authorization", BEARER)]).await);
    assert_eq!(lines, [line(1, "stdout", "hello from the script")]);
    let log = get_bounded(&app, &url("log_url"), &[("authorization", BEARER)]).await;
    assert_eq!(log.text(), "hello from the script\n");
}
