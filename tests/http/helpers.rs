//! `TestApp`: an authrun built in-process on a temp dir, with a real script, a manual clock and one helper
//! per route, so tests read like what a user does; the scripts tests run, and the assertions on authrun's
//! answers that several test files make. The browser tests include this file too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use authrun::auth::totp::Verifier;
use authrun::bootstrap;
use authrun::clock::ManualClock;
use authrun::config::{Config, SecretSource};
use authrun::model::run::RunRecord;
use authrun::web::middleware::edge::Edge;
use authrun::web::router::build_router;
use authrun::web::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tempfile::TempDir;
use time::OffsetDateTime;
use time::macros::datetime;
use tower::ServiceExt;

use crate::common::{code_not_in, json_lines, process_ended, process_state, write_script};

/// The secret every test app uses (160 bits, base32).
pub const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
/// The peer address of in-process requests, unless a test names another.
pub const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 40000);
/// Where every manual clock starts.
pub const START: OffsetDateTime = datetime!(2026-11-25 12:00:10 UTC);
/// A script that succeeds and counts its runs in `runs.txt` in its working directory.
pub const COUNTING_SCRIPT: &str =
    "#!/bin/sh\necho \"run $AUTHRUN_RUN_ID\" >> runs.txt\necho hello from the script\n";
/// A script that waits until the test creates `go` in its working directory ([`let_script_finish`]),
/// then counts its run in `runs.txt`. The loop gives up after about 30 s so a failed test never leaves it
/// behind for long.
pub const BLOCKING_SCRIPT: &str = "#!/bin/sh\n\
    i=0\n\
    while [ ! -f go ] && [ \"$i\" -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n\
    echo \"run $AUTHRUN_RUN_ID\" >> runs.txt\n";

/// Builds a [`TestApp`].
pub struct TestAppBuilder {
    script: String,
    config: String,
    history: Option<String>,
}

impl TestAppBuilder {
    /// The script's body, `#!` line included.
    pub fn script(mut self, body: &str) -> Self {
        self.script = body.to_string();
        self
    }

    /// Extra TOML, appended to the config file (sections `[script]` etc. are written by the builder;
    /// keys here go to the top level unless they open their own section).
    pub fn config(mut self, toml: &str) -> Self {
        self.config.push_str(toml);
        self.config.push('\n');
        self
    }

    /// Seconds of cooldown (default 180).
    pub fn cooldown(self, seconds: u64) -> Self {
        self.script_key(&format!("cooldown_seconds = {seconds}"))
    }

    /// A line added to the `[script]` section.
    pub fn script_key(mut self, line: &str) -> Self {
        self.config = self
            .config
            .replacen("[script]\n", &format!("[script]\n{line}\n"), 1);
        self
    }

    /// The history file's content before start.
    pub fn history(mut self, json: &str) -> Self {
        self.history = Some(json.to_string());
        self
    }

    pub fn build(self) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        write_script(&dir.path().join("deploy.sh"), &self.script);
        let config = dir.path().join("authrun.toml");
        std::fs::write(&config, &self.config).expect("write config");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod config");
        if let Some(history) = &self.history {
            std::fs::write(dir.path().join("history.json"), history).expect("write history");
        }
        let clock = Arc::new(ManualClock::new(START));
        TestApp::open(dir, clock).expect("the test app starts")
    }
}

/// One authrun, in-process, on its own temp dir.
pub struct TestApp {
    pub dir: TempDir,
    pub clock: Arc<ManualClock>,
    pub state: AppState,
    pub router: Edge<Router>,
    pub verifier: Verifier,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            script: COUNTING_SCRIPT.to_string(),
            config: format!("[script]\npath = \"deploy.sh\"\n\n[totp]\nsecret = \"{SECRET}\"\n"),
            history: None,
        }
    }

    /// Opens the app on `dir` (config `authrun.toml`), as a start of authrun would.
    pub fn open(dir: TempDir, clock: Arc<ManualClock>) -> Result<Self, String> {
        let config = Config::load(Some(&dir.path().join("authrun.toml")), &[]).map_err(|e| e.to_string())?;
        let SecretSource::Configured { key: secret, .. } = config.secret.clone() else {
            return Err("the test config names no secret".into());
        };
        let verifier = Verifier::new(secret.bytes().to_vec(), config.totp.clone());
        let state = bootstrap::open(config, &secret, clock.clone()).map_err(|e| e.to_string())?;
        let router = build_router(state.clone());
        Ok(Self {
            dir,
            clock,
            state,
            router,
            verifier,
        })
    }

    /// Stops this app (as a crash would: nothing is shut down) and starts a new one on the same files.
    pub fn restart(self) -> Result<Self, String> {
        let Self { dir, clock, .. } = self;
        Self::open(dir, clock)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The code an authenticator app shows now.
    pub fn code_now(&self) -> String {
        self.code_at(self.clock_now())
    }

    pub fn code_at(&self, time: OffsetDateTime) -> String {
        self.verifier.code_at(time.unix_timestamp() as u64)
    }

    pub fn clock_now(&self) -> OffsetDateTime {
        use authrun::clock::Clock;
        self.clock.now()
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.advance(time::Duration::seconds(seconds));
    }

    /// `POST /verify` as curl sends it (`code=...`, no Accept header).
    pub async fn post_verify(&self, code: &str) -> TestResponse {
        post_code(self, code, PEER, &[]).await
    }

    /// A URL-encoded POST with extra headers.
    pub async fn post_form(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> TestResponse {
        self.send(form_request(path, body, headers)).await
    }

    /// `POST /verify` with `body` as `content_type`, as an API client sends it (no Accept header).
    pub async fn post_raw(&self, content_type: &str, body: impl Into<Body>) -> TestResponse {
        let request = Request::post("/verify")
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .expect("request");
        self.send(request).await
    }

    /// `POST /verify` as a browser's form post: Accept text/html, with the session cookie if given.
    pub async fn post_verify_html(&self, code: &str, cookie: Option<&str>) -> TestResponse {
        let mut headers = vec![("accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
        if let Some(cookie) = cookie {
            headers.push(("cookie", cookie));
        }
        self.post_form("/verify", &format!("code={}", urlencode(code)), &headers)
            .await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.get_with(path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Body::empty()).expect("request")).await
    }

    /// Sends `request` as if from [`PEER`].
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        self.send_from(request, PEER).await
    }

    /// Sends `request` as if from `peer`, the address of the TCP connection.
    pub async fn send_from(&self, mut request: Request<Body>, peer: SocketAddr) -> TestResponse {
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    /// `GET /get_deploy_status` as JSON.
    pub async fn status(&self) -> Value {
        let response = self.get("/get_deploy_status").await;
        assert_eq!(response.status, StatusCode::OK);
        response.json()
    }

    /// Waits (bounded) until run `id` has ended and its final status is recorded.
    pub async fn wait_for_run(&self, id: u64) -> RunRecord {
        tokio::time::timeout(Duration::from_secs(20), self.state.runner.wait_finished(id))
            .await
            .unwrap_or_else(|_| panic!("run {id} did not end within 20 s"));
        self.record(id)
            .unwrap_or_else(|| panic!("run {id} is not in the history"))
    }

    /// The history's record of run `id`.
    pub fn record(&self, id: u64) -> Option<RunRecord> {
        self.state.runner.history().record(id)
    }

    /// How many times the counting script ran.
    pub fn script_runs(&self) -> usize {
        std::fs::read_to_string(self.path("runs.txt")).map_or(0, |text| text.lines().count())
    }

    /// The history file as written on disk.
    pub fn history_on_disk(&self) -> Value {
        let text = std::fs::read_to_string(self.path("history.json")).expect("history.json exists");
        serde_json::from_str(&text).expect("history.json is JSON")
    }

    /// Serves the app on a real TCP port on 127.0.0.1; the server stops when the guard drops.
    pub async fn serve_tcp(&self) -> TcpServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            authrun::web::server::serve(listener, state, shutdown).await
        });
        TcpServer {
            base: format!("http://{addr}"),
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// A server on a real port; `shutdown` stops it gracefully, dropping it stops it too.
pub struct TcpServer {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TcpServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops accepting, stops a running script, and waits until the final status is written.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the server stops within 30 s")
                .expect("the server task")
                .expect("serve returns Ok");
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An answer, read whole.
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The JSON answer's `message`, what a user reads (empty without one).
    pub fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or_default().to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `name=value` part of the cookie `name` this answer sets.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookie(name)
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
    }

    /// The whole `Set-Cookie` value (with its attributes) for the cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}=");
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&prefix))
    }

    /// The `name=value` part of the session cookie this answer sets.
    pub fn session_cookie(&self) -> Option<String> {
        self.cookie("authrun_session")
    }
}

/// Asserts a 303 redirect to `location`.
pub fn assert_redirect_to(response: &TestResponse, location: &str) {
    assert_eq!(response.status, StatusCode::SEE_OTHER, "{}", response.text());
    assert_eq!(response.header("location"), Some(location));
}

/// Asserts a refusal as an API client reads it: `status`, and JSON with `success: false`, the `error`
/// code and a message for people.
pub fn assert_refused(response: &TestResponse, status: StatusCode, error: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let body = response.json();
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// Asserts that the answer's `Content-Type` starts with `expected` (`text/html`, `application/json`, ...).
pub fn assert_content_type(response: &TestResponse, expected: &str) {
    let content_type = response.header("content-type");
    assert!(
        content_type.is_some_and(|t| t.starts_with(expected)),
        "Content-Type {content_type:?}, not {expected}"
    );
}

/// Asserts the headers every answer carries (`what` names the answer in a failure); `no_store` for the
/// answers that must never be cached (all but the static assets).
pub fn assert_security_headers(what: &str, response: &TestResponse, no_store: bool) {
    let csp = response
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no content-security-policy"));
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-eval"), "{what}: {csp}");
    assert_eq!(
        response.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(response.header("referrer-policy"), Some("no-referrer"), "{what}");
    if no_store {
        assert_eq!(response.header("cache-control"), Some("no-store"), "{what}");
    }
}

/// A client at `address`, as the TCP peer of its requests.
pub fn peer(address: &str) -> SocketAddr {
    let ip: IpAddr = address.parse().expect("an IP address");
    SocketAddr::new(ip, 40000)
}

/// A URL-encoded POST of `body` to `path`, with extra headers.
pub fn form_request(path: &str, body: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body.to_string())).expect("request")
}

/// `POST /verify` with `code`, as curl sends it, from `from`, with extra headers.
pub async fn post_code(
    app: &TestApp,
    code: &str,
    from: SocketAddr,
    headers: &[(&str, &str)],
) -> TestResponse {
    let body = format!("code={}", urlencode(code));
    app.send_from(form_request("/verify", &body, headers), from).await
}

/// Posts `code` and asserts that a run started; returns its id.
pub async fn start_run(app: &TestApp, code: &str) -> u64 {
    let response = app.post_verify(code).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let body = response.json();
    assert_eq!(body["success"], true, "{body}");
    body["run_id"].as_u64().expect("run_id")
}

/// The id of the newest run in the history.
pub fn last_run_id(app: &TestApp) -> u64 {
    app.state
        .runner
        .history()
        .last()
        .and_then(|record| record.id)
        .expect("a run was recorded")
}

/// The audit log's lines, parsed.
pub fn audit_lines(app: &TestApp) -> Vec<Value> {
    json_lines(&app.path(".authrun/audit.log"))
}

/// Runs the script `count` times, one run after another: each started with the code of its moment and
/// waited for, the clock moved on by one code step (30 s) after each. The app must have no cooldown.
/// Returns the runs' ids, in order.
pub async fn run_one_after_another(app: &TestApp, count: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id = start_run(app, &app.code_now()).await;
        app.wait_for_run(id).await;
        ids.push(id);
        app.advance(30);
    }
    ids
}

/// Lets a [`BLOCKING_SCRIPT`] (or any script waiting for `go`) finish.
pub fn let_script_finish(app: &TestApp) {
    std::fs::write(app.path("go"), "").expect("create the go file");
}

/// A client for a [`TcpServer`], as a browser is: it keeps cookies and follows no redirect by itself;
/// it ignores any proxy settings, as 127.0.0.1 is reached directly.
pub fn tcp_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// Percent-encodes a form value.
pub fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Waits (at most 10 s) until the script wrote a pid to `name` in its working directory.
pub async fn pid_written(app: &TestApp, name: &str) -> i32 {
    let path = app.path(name);
    let mut text = String::new();
    eventually(&format!("the script writes {name}"), || {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        text.ends_with('\n')
    })
    .await;
    text.trim().parse().expect("a pid")
}

/// Waits (at most 10 s) until `done` holds, looking every 10 ms: for what the script or a request does
/// on its own, never for time to pass (the test moves the clock for that).
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most 5 s) for `pid` to be gone; a stopped run's group is killed as the run ends.
pub async fn assert_gone(pid: i32, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !process_ended(pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        process_ended(pid),
        "the run is over but {what} (pid {pid}) is still there (state {:?})",
        process_state(pid)
    );
}

/// A six-digit code that matches none of the steps the server accepts now (the current one and one
/// either side).
pub fn wrong_code(app: &TestApp) -> String {
    let now = app.clock_now();
    let window: Vec<String> = [-30, 0, 30]
        .iter()
        .map(|offset| app.code_at(now + time::Duration::seconds(*offset)))
        .collect();
    code_not_in(&window)
}

/// The `Content-Length` of a raw HTTP/1.1 answer's head (0 when it has none).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0)
}

/// A small tmpfs mounted on a temp dir of its own, so a test can fill a real filesystem. It is unmounted
/// when dropped, also when the test fails. Mounting needs root, as the test machines and CI run.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `64k`).
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the tmpfs");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed ({status}): this test fills a real filesystem and needs root"
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem with the file `fill`, leaving `spare` bytes (a multiple of the 4 KiB page).
    pub fn fill(&self, spare: u64) {
        let stat = nix::sys::statvfs::statvfs(self.path()).expect("statvfs of the tmpfs");
        let free = stat.blocks_available() * stat.fragment_size();
        assert!(free > spare, "the tmpfs has only {free} bytes free");
        let fill = std::fs::File::create(self.path().join("fill")).expect("create the fill file");
        std::io::Write::write_all(&mut &fill, &vec![0u8; (free - spare) as usize]).expect("fill the tmpfs");
        fill.sync_all().expect("sync the fill file");
    }

    /// Gives the space taken by [`fill`](Self::fill) back.
    pub fn free(&self) {
        std::fs::remove_file(self.path().join("fill")).expect("remove the fill file");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a file still open on it cannot keep it mounted.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
