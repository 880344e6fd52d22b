//! Debian's Chromium, headless, under its chromedriver, started by the test on a free port and stopped
//! when the [`Driver`] drops; a [`Browser`] is one WebDriver session with its own fresh profile.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};

use crate::helpers::content_length;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The flags Chromium runs with (plus a fresh `--user-data-dir`): headless, and nothing that would reach
/// the network on its own.
pub const CHROMIUM_ARGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
];

/// How long a wait for something the page should show lasts before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// The desktop window, in CSS pixels.
pub const DESKTOP: (u32, u32) = (1280, 900);
/// The phone: an iPhone 12-sized viewport, in CSS pixels.
pub const PHONE: (u32, u32) = (390, 844);
/// The browser's time zone: not UTC, so the tests see that times are shown in local time (UTC+1 in
/// November).
pub const TIME_ZONE: &str = "Europe/Berlin";
/// Where `scripts/test.sh` installs axe-core (or `AUTHRUN_AXE`, a path to `axe.min.js`).
const AXE: &str = "target/axe/node_modules/axe-core/axe.min.js";

/// A running chromedriver; dropping it ends its sessions, it and the browsers it started.
pub struct Driver {
    child: Child,
    port: u16,
    dir: TempDir,
}

/// What kind of browser a scenario needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// JavaScript switched off in the browser's settings.
    pub no_javascript: bool,
    /// A phone: 375 x 667 CSS pixels, touch, the mobile viewport rules.
    pub phone: bool,
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it is ready. Fails, saying what to install,
    /// when Chromium or chromedriver is missing.
    pub fn start() -> Self {
        for (path, what) in [(CHROMIUM, "Chromium"), (CHROMEDRIVER, "chromedriver")] {
            assert!(
                Path::new(path).is_file(),
                "{what} is missing ({path}): the browser tests need it. Install the packages \
                 `chromium chromium-driver` (apt-get install chromium chromium-driver), as \
                 scripts/test.sh does."
            );
        }
        let dir = tempfile::tempdir().expect("temp dir for chromedriver");
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so the browsers it starts can be stopped with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start: {e}"));
        let mut driver = Self { child, port, dir };
        driver.wait_ready();
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The end of chromedriver's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if http_get(self.port, "/status").is_some_and(|answer| answer.contains("\"ready\":true")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver was not ready within 20 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(POLL);
        }
    }

    /// A new browser session with a fresh profile.
    pub async fn browser(&self, scenario: &str, options: Options) -> Browser {
        let profile = tempfile::tempdir().expect("temp dir for the browser profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|arg| arg.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        if options.no_javascript {
            args.push("--blink-settings=scriptEnabled=false".into());
        }
        let mut chrome = json!({ "binary": CHROMIUM, "args": args });
        if options.phone {
            chrome["mobileEmulation"] = json!({
                "deviceMetrics": { "width": PHONE.0, "height": PHONE.1, "pixelRatio": 2.0, "mobile": true, "touch": true }
            });
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": chrome,
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let capabilities: Capabilities = capabilities;
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Chromium does not start under chromedriver: {e}\n{}",
                    self.log_tail()
                )
            });
        if !options.phone {
            client
                .set_window_size(DESKTOP.0, DESKTOP.1)
                .await
                .expect("set the window size");
        }
        let browser = Browser {
            client,
            scenario: scenario.to_string(),
            phone: options.phone,
            _profile: profile,
        };
        browser
            .cdp(
                "Emulation.setTimezoneOverride",
                json!({ "timezoneId": TIME_ZONE }),
            )
            .await;
        if !options.phone {
            // The viewport itself, not the window around it, is the desktop size.
            browser
                .cdp(
                    "Emulation.setDeviceMetricsOverride",
                    json!({ "width": DESKTOP.0, "height": DESKTOP.1, "deviceScaleFactor": 1, "mobile": false }),
                )
                .await;
        }
        browser
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver's own shutdown ends its sessions and quits the browsers it started.
        let _ = http_get(self.port, "/shutdown");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(POLL);
        }
        // Whatever is left in its process group (it, or a browser it left behind) is killed.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// A plain GET to chromedriver; `None` when it does not answer (yet). chromedriver keeps the
/// connection open, so the answer is read as far as its `Content-Length`.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).ok()?;
        answer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = content_length(&text[..head_end]);
            if answer.len() >= head_end + 4 + length {
                return Some(text.into_owned());
            }
        }
        if read == 0 {
            return Some(String::from_utf8_lossy(&answer).into_owned());
        }
    }
}

/// One entry of the browser's console log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub level: String,
    pub message: String,
}

/// `POST /session/{id}/se/log`: the browser's log entries since the last read (chromedriver's
/// extension; it needs `goog:loggingPrefs`).
#[derive(Debug)]
struct ReadBrowserLog;

impl WebDriverCompatibleCommand for ReadBrowserLog {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

/// `POST /session/{id}/goog/cdp/execute`: a Chrome DevTools Protocol command (chromedriver's
/// extension), for what WebDriver cannot set: the time zone, the colour scheme, the viewport.
#[derive(Debug)]
struct Cdp {
    command: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = json!({ "cmd": self.command, "params": self.params });
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

/// A light or a dark colour scheme, as the operating system would ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Light,
    Dark,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Self::Light => "light",
            Self::Dark => "dark",
        }
    }
}

/// One browser session, named after the scenario it serves (its screenshots are).
pub struct Browser {
    pub client: Client,
    scenario: String,
    phone: bool,
    _profile: TempDir,
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body; `arguments[0..]` are `args`) in the page and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The element `css`, which must be on the page now.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element `{css}` on the page: {e}"))
    }

    /// The elements `css` on the page now.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("looking for `{css}`: {e}"))
    }

    /// The text a person sees in the first element `css`, or `None` when there is none or it is
    /// hidden. Uses WebDriver only, so it works with JavaScript off.
    pub async fn visible_text(&self, css: &str) -> Option<String> {
        let element = match self.client.find(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) if e.is_no_such_element() => return None,
            Err(e) => panic!("looking for `{css}`: {e}"),
        };
        // The element may be replaced between the two calls (the page's script re-renders it).
        match element.is_displayed().await {
            Ok(true) => element.text().await.ok(),
            _ => None,
        }
    }

    /// Waits (at most [`WAIT`]) until `check` returns `Ok`, and returns its value; on time-out saves a
    /// screenshot `<scenario>-failed.png` and fails with `what` and the last thing seen (`Err`).
    pub async fn wait_for<T>(&self, what: &str, check: impl AsyncFnMut() -> Result<T, String>) -> T {
        self.wait_for_within(what, WAIT, check).await
    }

    /// [`Browser::wait_for`], at most `limit`.
    pub async fn wait_for_within<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl AsyncFnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            let last = match check().await {
                Ok(value) => return value,
                Err(last) => last,
            };
            if Instant::now() >= deadline {
                self.fail(&format!("waited {limit:?} for {what}; last seen: {last}"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails the scenario with `message`, saving what the browser shows as `<scenario>-failed.png`.
    pub async fn fail(&self, message: &str) -> ! {
        let shot = self.save_screenshot(&format!("{}-failed", self.scenario)).await;
        panic!("{message}\n(screenshot: {})", shot.display());
    }

    /// Waits until the first element `css` is shown with a text that `expected` accepts; returns it.
    pub async fn wait_text(&self, css: &str, what: &str, expected: impl Fn(&str) -> bool) -> String {
        self.wait_text_within(css, what, WAIT, expected).await
    }

    /// [`Browser::wait_text`], at most `limit`.
    pub async fn wait_text_within(
        &self,
        css: &str,
        what: &str,
        limit: Duration,
        expected: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_for_within(what, limit, async || match self.visible_text(css).await {
            Some(text) if expected(&text) => Ok(text),
            Some(text) => Err(format!("`{css}` shows {text:?}")),
            None => Err(format!("`{css}` is not shown")),
        })
        .await
    }

    /// Waits until `script`'s value is accepted by `expected`; returns it.
    pub async fn wait_js(&self, what: &str, script: &str, expected: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(what, async || {
            let value = self.js(script, vec![]).await;
            if expected(&value) {
                Ok(value)
            } else {
                Err(value.to_string())
            }
        })
        .await
    }

    /// Types `text` (characters or [`fantoccini::key::Key`]s) with the keyboard, into whatever has the
    /// focus, as a person would.
    pub async fn press(&self, keys: &[char]) {
        let mut actions = KeyActions::new("keyboard".into());
        for &key in keys {
            actions = actions
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key });
        }
        self.client
            .perform_actions(actions)
            .await
            .expect("the keys are pressed");
    }

    /// The `id` (or, without one, the tag name) of the focused element.
    pub async fn focused(&self) -> String {
        let value = self
            .js(
                "const e = document.activeElement; return e ? (e.id || e.tagName.toLowerCase()) : null;",
                vec![],
            )
            .await;
        value.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the element with id `id` has the focus.
    pub async fn wait_focus(&self, id: &str) {
        self.wait_for(&format!("the focus on #{id}"), async || {
            let focused = self.focused().await;
            if focused == id {
                Ok(())
            } else {
                Err(format!("the focus is on {focused:?}"))
            }
        })
        .await;
    }

    /// The browser's console log since the last read.
    pub async fn console(&self) -> Vec<LogEntry> {
        let value = self
            .client
            .issue_cmd(ReadBrowserLog)
            .await
            .unwrap_or_else(|e| panic!("the browser log cannot be read: {e}"));
        value
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| LogEntry {
                        level: entry["level"].as_str().unwrap_or_default().to_string(),
                        message: entry["message"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fails if the console has errors or warnings since the last read (CSP violations, failed loads
    /// and uncaught exceptions are errors there).
    pub async fn assert_clean_console(&self) {
        let problems: Vec<LogEntry> = self
            .console()
            .await
            .into_iter()
            .filter(|entry| entry.level == "SEVERE" || entry.level == "WARNING")
            .collect();
        assert!(
            problems.is_empty(),
            "the browser console has problems: {problems:#?}"
        );
    }

    /// Saves what the browser shows as `<screenshots>/<name>.png` and returns the path.
    pub async fn save_screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Saves the scenario's end state as `<screenshots>/<scenario>.png`.
    pub async fn screenshot(&self) -> PathBuf {
        self.save_screenshot(&self.scenario.clone()).await
    }

    /// Runs a Chrome DevTools Protocol command in the page's tab.
    pub async fn cdp(&self, command: &'static str, params: Value) -> Value {
        self.client
            .issue_cmd(Cdp { command, params })
            .await
            .unwrap_or_else(|e| panic!("the DevTools command {command} failed: {e}"))
    }

    /// Makes the page see `prefers-color-scheme: light` or `dark`.
    pub async fn color_scheme(&self, scheme: Scheme) {
        let features = json!([{ "name": "prefers-color-scheme", "value": scheme.name() }]);
        self.cdp("Emulation.setEmulatedMedia", json!({ "features": features }))
            .await;
        let dark = self
            .js(
                "return matchMedia('(prefers-color-scheme: dark)').matches;",
                vec![],
            )
            .await;
        assert_eq!(
            dark,
            json!(scheme == Scheme::Dark),
            "the colour scheme did not change"
        );
    }

    /// Checks the page as it is now with axe-core, in the light and the dark colour scheme, and saves a
    /// screenshot of each (`<name>-<desktop|phone>-<light|dark>.png`). Fails listing every violation
    /// of impact "serious" or "critical". The page is left in the light scheme.
    pub async fn audit(&self, name: &str) {
        let mut problems = Vec::new();
        for scheme in [Scheme::Light, Scheme::Dark] {
            self.color_scheme(scheme).await;
            let size = if self.phone { "phone" } else { "desktop" };
            self.save_screenshot(&format!("{name}-{size}-{}", scheme.name()))
                .await;
            let violations = self.axe().await;
            if let Some(list) = violations.as_array().filter(|list| !list.is_empty()) {
                problems.push(format!(
                    "{name} ({}): {}",
                    scheme.name(),
                    serde_json::to_string_pretty(list).unwrap_or_default()
                ));
            }
        }
        self.color_scheme(Scheme::Light).await;
        if !problems.is_empty() {
            self.fail(&format!(
                "accessibility violations (serious or critical):\n{}",
                problems.join("\n")
            ))
            .await;
        }
    }

    /// The serious and critical violations axe-core finds on the page now.
    pub async fn axe(&self) -> Value {
        let loaded = self.js("return typeof window.axe;", vec![]).await;
        if loaded != json!("object") {
            let source = axe_source();
            self.js(&format!("{source}\nreturn typeof window.axe;"), vec![])
                .await;
        }
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, { resultTypes: ['violations'] }).then(function (r) {\
                   done(r.violations.filter(function (v) { return v.impact === 'serious' || v.impact === 'critical'; })\
                     .map(function (v) { return { id: v.id, impact: v.impact, help: v.help,\
                       nodes: v.nodes.slice(0, 8).map(function (n) { return n.target.join(' ') + ': ' + n.failureSummary; }) }; }));\
                 }).catch(function (e) { done({ error: String(e) }); });",
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("axe-core did not run: {e}"));
        assert!(result.is_array(), "axe-core failed: {result}");
        result
    }

    /// Ends the session (its browser quits).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// axe-core's source, read once. Fails, saying how to install it, when it is missing: the accessibility
/// tests never pass by being skipped.
fn axe_source() -> &'static str {
    static SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| {
        let path = std::env::var_os("AUTHRUN_AXE")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(AXE));
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "axe-core is missing ({}: {e}): the accessibility checks need it. scripts/test.sh \
                 installs it (npm install --prefix target/axe axe-core@VERSION).",
                path.display()
            )
        })
    })
}

/// `$CARGO_TARGET_DIR/screenshots`, or `target/screenshots` in the package.
pub fn screenshot_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| manifest.join("target"), |dir| manifest.join(dir));
    target.join("screenshots")
}
