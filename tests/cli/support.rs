//! Helpers: a temp dir to run authrun in, authrun commands with a hermetic environment and bounded waits,
//! a guard for a running `authrun serve`, a tiny HTTP client, the requests a user sends (a code, a run)
//! and TOTP codes for "now".

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use authrun::auth::totp::Verifier;
use authrun::config::TotpSettings;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use crate::common::{code_not_in, json_lines};

/// A 160-bit base32 secret for configs that name one.
pub const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
/// A script that succeeds at once.
pub const DEPLOY_SCRIPT: &str = "#!/bin/sh\necho deployed\n";
/// The longest any single command, start-up or exit may take before a test gives up.
pub const WAIT: Duration = Duration::from_secs(20);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(100);

/// A file of this repository.
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A temp dir for one test, used as authrun's working directory.
pub struct Workspace {
    dir: TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temp dir"),
        }
    }

    /// An empty dir holding only a copy of the repository's `scripts/example-deploy.sh`, executable.
    pub fn with_example_script() -> Self {
        let workspace = Self::new();
        let body = std::fs::read_to_string(repo_file("scripts/example-deploy.sh"))
            .expect("read scripts/example-deploy.sh");
        workspace.script("scripts/example-deploy.sh", &body);
        workspace
    }

    /// A dir with the script `deploy.sh` (`body`) and `authrun.toml` naming it and [`SECRET`];
    /// `script_keys` are extra lines of the `[script]` section.
    pub fn configured(body: &str, script_keys: &str) -> Self {
        let workspace = Self::new();
        workspace.script("deploy.sh", body);
        workspace.write(
            "authrun.toml",
            &format!("[script]\npath = \"deploy.sh\"\n{script_keys}\n\n[totp]\nsecret = \"{SECRET}\"\n"),
        );
        workspace
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// `authrun.toml` in this dir, as an absolute path.
    pub fn config(&self) -> PathBuf {
        self.join("authrun.toml")
    }

    pub fn write(&self, relative: &str, content: &str) -> PathBuf {
        let path = self.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the parent dir");
        }
        std::fs::write(&path, content).expect("write a file");
        // Owner-only, as a file that may hold the secret must be.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
        path
    }

    /// Writes an executable script.
    pub fn script(&self, relative: &str, body: &str) -> PathBuf {
        let path = self.write(relative, body);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("make the script executable");
        path
    }

    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.join(relative))
            .unwrap_or_else(|error| panic!("read {relative}: {error}"))
    }

    /// The audit log's lines, parsed.
    pub fn audit_lines(&self) -> Vec<Value> {
        json_lines(&self.join(".authrun/audit.log"))
    }

    /// `history.json`, parsed.
    pub fn history(&self) -> Vec<Value> {
        let text = self.read("history.json");
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("history.json is not JSON ({error}):\n{text}"));
        value
            .as_array()
            .unwrap_or_else(|| panic!("history.json is not a list:\n{text}"))
            .clone()
    }
}

/// `authrun` with `dir` as its working directory, no stdin, and none of the parent's `AUTHRUN_*` or
/// `RUST_LOG` variables.
pub fn authrun(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authrun"));
    command.current_dir(dir).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AUTHRUN_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

/// What a finished command printed and how it exited.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The exit code; panics (showing the output) if the process was killed by a signal.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("authrun was killed by a signal: {self:#?}"))
    }
}

/// `authrun serve --bind 127.0.0.1:0` with `extra` arguments and the workspace's `authrun.toml`, once
/// it says it is serving.
pub fn serve_configured(workspace: &Workspace, extra: &[&str]) -> Server {
    Server::start(
        authrun(workspace.path())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(extra)
            .arg("--config")
            .arg(workspace.config()),
    )
}

/// `authrun serve` with the workspace's `authrun.toml`, run to its end: it is expected to refuse to start.
pub fn serve_refused(workspace: &Workspace) -> Finished {
    run(authrun(workspace.path())
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(workspace.config()))
}

/// Runs `command` to its end, at most [`WAIT`]; a command still going by then is killed and the test fails.
pub fn run(command: &mut Command) -> Finished {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start authrun");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for authrun") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    match status {
        Some(status) => Finished {
            status,
            stdout,
            stderr,
        },
        None => {
            panic!("authrun did not exit within {WAIT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}")
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A running `authrun serve`, killed when dropped (so a failing test leaves no server behind).
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The stdout lines printed up to and including `authrun is serving ...`.
    pub startup: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `command` (an `authrun serve ...`) and waits, at most [`WAIT`], for the line
    /// `authrun is serving http://ADDR/` on its stdout.
    pub fn start(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start authrun serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut stderr_pipe = BufReader::new(child.stderr.take().expect("piped stderr"));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut line = String::new();
            while matches!(stderr_pipe.read_line(&mut line), Ok(n) if n > 0) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push_str(&line);
                line.clear();
            }
        });
        let mut server = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            startup: Vec::new(),
            stderr,
        };
        server.addr = server.read_url(&lines);
        server
    }

    fn read_url(&mut self, lines: &Receiver<String>) -> SocketAddr {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    self.startup.push(line.clone());
                    if let Some(url) = line.strip_prefix("authrun is serving ") {
                        let addr = url
                            .strip_prefix("http://")
                            .and_then(|rest| rest.strip_suffix('/'))
                            .and_then(|addr| addr.parse().ok())
                            .unwrap_or_else(|| panic!("not an http://IP:PORT/ URL: {line}"));
                        return addr;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "authrun did not say it is serving within {WAIT:?}\nstdout:\n{}\nstderr:\n{}",
                    self.startup.join("\n"),
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    // stdout closed: authrun has exited (or is about to).
                    let status = self.wait_exit();
                    panic!(
                        "authrun exited ({status}) before serving\nstdout:\n{}\nstderr:\n{}",
                        self.startup.join("\n"),
                        self.stderr()
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("a pid fits in i32"))
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|error| panic!("send {signal} to authrun: {error}"));
    }

    /// What authrun logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits, at most [`WAIT`], for authrun to exit; fails the test if it does not.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for authrun") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "authrun did not exit within {WAIT:?}\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        http(self.addr, "GET", path, &[], None)
    }

    /// A GET with `Authorization: Bearer TOKEN`, as an API client sends it.
    pub fn get_with_token(&self, path: &str, token: &str) -> Reply {
        let authorization = format!("Bearer {token}");
        http(self.addr, "GET", path, &[("Authorization", &authorization)], None)
    }

    /// Posts a URL-encoded form, as curl `-d` does.
    pub fn post_form(&self, path: &str, form: &str) -> Reply {
        http(
            self.addr,
            "POST",
            path,
            &[],
            Some(("application/x-www-form-urlencoded", form)),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("the answer is not JSON ({error}): {self:?}"))
    }
}

/// `POST /verify` with `code`, as curl sends it: the status and the JSON answer.
pub fn post_code(server: &Server, code: &str) -> (u16, Value) {
    let reply = server.post_form("/verify", &format!("code={code}"));
    (reply.status, reply.json())
}

/// Posts the code of `secret` for now and asserts that a run started; returns its id.
pub fn start_run(server: &Server, secret: &str) -> u64 {
    let (status, answer) = post_code(server, &code_now(secret));
    assert_eq!(status, 200, "{answer}\n{}", server.stderr());
    assert_eq!(answer["success"], Value::Bool(true), "{answer}");
    answer["run_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no run_id: {answer}"))
}

/// One HTTP/1.0 request (so the server closes the connection after answering and never chunks the body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Reply {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to authrun");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream.set_write_timeout(Some(WAIT)).expect("write timeout");
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let content = match body {
        Some((content_type, content)) => {
            request.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                content.len()
            ));
            content
        }
        None => "",
    };
    request.push_str("\r\n");
    request.push_str(content);
    stream.write_all(request.as_bytes()).expect("send the request");
    read_reply(&mut stream)
}

/// The answer on `stream`, read to its end (the server closes the connection after it).
pub fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the whole answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Reply {
        status,
        body: body.to_string(),
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// An authenticator app with the default settings for the base32 `secret`.
fn authenticator(secret: &str) -> Verifier {
    let bytes = authrun::model::secret::decode_secret(secret).expect("a base32 secret");
    Verifier::new(
        bytes,
        TotpSettings {
            digits: 6,
            period: 30,
            skew: 1,
            issuer: "authrun".into(),
            account: "deploy".into(),
        },
    )
}

/// The code an authenticator app with the default settings shows now for the base32 `secret`.
pub fn code_now(secret: &str) -> String {
    authenticator(secret).code_at(now_unix())
}

/// The code an authenticator app with the default settings shows at `unix` for the base32 `secret`.
pub fn code_at(secret: &str, unix: u64) -> String {
    authenticator(secret).code_at(unix)
}

/// A code that a server configured with [`SECRET`] accepts at none of the steps around now (two either
/// side, so a step boundary between computing and checking it changes nothing).
pub fn wrong_code() -> String {
    let authenticator = authenticator(SECRET);
    let now = now_unix();
    let near: Vec<String> = (0..5)
        .map(|step| authenticator.code_at(now + step * 30 - 60))
        .collect();
    code_not_in(&near)
}

/// Polls `probe` every 100 ms until it gives a value, at most [`WAIT`]; fails the test naming `what`.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}, in vain");
        std::thread::sleep(POLL);
    }
}

/// The pid a script wrote with `echo $$ > FILE`, once it has written it.
pub fn wait_for_pid(workspace: &Workspace, file: &str) -> i32 {
    wait_for(&format!("the script to write {file}"), || {
        std::fs::read_to_string(workspace.join(file))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    })
}

/// `authrun operator ARGS` on `workspace`'s configuration.
pub fn operator(workspace: &Workspace, args: &[&str]) -> Finished {
    run(authrun(workspace.path())
        .arg("operator")
        .args(args)
        .arg("--config")
        .arg(workspace.config()))
}

/// The path of the enrollment link a command printed.
pub fn link_path(stdout: &str) -> String {
    let link = stdout
        .lines()
        .find(|line| line.contains("/enroll/"))
        .unwrap_or_else(|| panic!("no link in {stdout}"));
    format!("/enroll/{}", link.rsplit('/').next().unwrap_or_default())
}
