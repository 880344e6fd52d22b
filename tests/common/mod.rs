//! Helpers every test binary needs: tests/http, tests/cli and tests/browser each include this file by
//! path (`#[path = "../common/mod.rs"] mod common;`), so each helper is written once. What is here knows
//! nothing of how a binary drives authrun: scripts on disk, the audit log's lines, processes, codes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

pub mod postgres;

/// Writes an executable script at `path`.
pub fn write_script(path: &Path, body: &str) {
    std::fs::write(path, body).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The lines of a JSON-lines file (the audit log), each parsed; a line that is not JSON fails the test.
pub fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{} cannot be read: {error}", path.display()));
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"))
        })
        .collect()
}

/// The scheduling state letter of a process (`R`, `S`, `Z`, ...), or `None` when it no longer exists.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the command may contain spaces and parentheses, so start after the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether process `pid` has ended: it is gone, or only its zombie is left for its parent to reap.
pub fn process_ended(pid: i32) -> bool {
    matches!(process_state(pid), None | Some('Z' | 'X'))
}

/// A six-digit code that is none of `accepted` (the codes the server takes around now), counting up from
/// `accepted[0]`.
pub fn code_not_in(accepted: &[String]) -> String {
    let first: u32 = accepted
        .first()
        .and_then(|code| code.parse().ok())
        .expect("a numeric code to start from");
    (1..)
        .map(|delta| format!("{:06}", (first + delta) % 1_000_000))
        .find(|candidate| !accepted.contains(candidate))
        .expect("a code outside the window")
}

/// The Python Debian ships `python3-aiosmtpd` for (a pyenv `python3` earlier in PATH would not have it).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
/// The longest a helper below waits for a server to start or a message to arrive.
const HELPER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A real SMTP server on 127.0.0.1 (aiosmtpd, Debian's `python3-aiosmtpd`) that writes every message it
/// takes into a maildir; stopped when dropped. A test that needs it fails when it is missing.
pub struct SmtpServer {
    child: std::process::Child,
    pub port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start() -> Self {
        let present = std::process::Command::new(SYSTEM_PYTHON)
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            present,
            "the SMTP server for this test is missing: run scripts/test.sh, or `apt-get install python3-aiosmtpd`"
        );
        let port = free_port();
        let maildir = tempfile::tempdir().expect("a maildir");
        let child = std::process::Command::new(SYSTEM_PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            // A maildir the handler creates: one that exists already is taken as complete.
            .arg(maildir.path().join("mail"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let server = Self { child, port, maildir };
        let deadline = std::time::Instant::now() + HELPER_WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "aiosmtpd did not listen on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        server
    }

    /// The messages taken so far, each as its raw text (headers and body).
    pub fn messages(&self) -> Vec<String> {
        let mut messages = Vec::new();
        for folder in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.path().join("mail").join(folder)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(entry.path()) {
                    messages.push(decoded(&text));
                }
            }
        }
        messages
    }

    /// Waits (at most 30 s) until `count` messages arrived, and returns them.
    pub fn wait_for_messages(&self, count: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + HELPER_WAIT;
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{count} mail(s) expected, {} arrived",
                messages.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A message with a quoted-printable body decoded, so tests read its text as a mail reader shows it.
fn decoded(message: &str) -> String {
    let Some((head, body)) = message.split_once("\n\n") else {
        return message.to_string();
    };
    if !head.contains("Content-Transfer-Encoding: quoted-printable") {
        return message.to_string();
    }
    let joined = body.replace("=\r\n", "").replace("=\n", "");
    let mut bytes = Vec::with_capacity(joined.len());
    let mut rest = joined.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let hex = tail.get(..2).and_then(|h| std::str::from_utf8(h).ok());
        match (byte, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(value)) => {
                bytes.push(value);
                rest = &tail[2..];
            }
            _ => {
                bytes.push(byte);
                rest = tail;
            }
        }
    }
    format!("{head}\n\n{}", String::from_utf8_lossy(&bytes))
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on at the moment.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// One request a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the webhook's body is JSON")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// What a [`WebhookReceiver`] answers once its list of statuses is used up.
#[derive(Debug, Clone, Copy)]
pub enum Then {
    Answer(u16),
    /// Reads the request, then never answers (the connection stays open until the client gives up).
    Hang,
}

#[derive(Default)]
struct Inbox {
    received: Vec<Received>,
    /// Requests read and not answered whose connection is still open.
    pending: usize,
}

/// A real HTTP server on 127.0.0.1 that records every request and answers the statuses it was given,
/// one per request, then `then`; runs on a thread of its own and stops when dropped.
pub struct WebhookReceiver {
    pub url: String,
    inbox: std::sync::Arc<std::sync::Mutex<Inbox>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Counts a request as pending while its handler (and so its connection) lives.
struct PendingGuard(std::sync::Arc<std::sync::Mutex<Inbox>>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.lock().expect("inbox").pending -= 1;
    }
}

impl WebhookReceiver {
    pub fn start(statuses: &[u16], then: Then) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!(
            "http://{}/hook?token=t0ps3cret",
            listener.local_addr().expect("addr")
        );
        let inbox = std::sync::Arc::new(std::sync::Mutex::new(Inbox::default()));
        let answers = std::sync::Arc::new(std::sync::Mutex::new(
            statuses
                .iter()
                .copied()
                .collect::<std::collections::VecDeque<u16>>(),
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = std::sync::Arc::clone(&inbox);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
                    let inbox = std::sync::Arc::clone(&shared);
                    let answers = std::sync::Arc::clone(&answers);
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
                        {
                            let mut inbox = inbox.lock().expect("inbox");
                            inbox.received.push(Received {
                                method: parts.method.to_string(),
                                path: parts.uri.to_string(),
                                headers: parts.headers,
                                body: body.to_vec(),
                            });
                            inbox.pending += 1;
                        }
                        let _guard = PendingGuard(inbox);
                        let next = answers.lock().expect("answers").pop_front();
                        let status = match (next, then) {
                            (Some(status), _) | (None, Then::Answer(status)) => status,
                            (None, Then::Hang) => std::future::pending().await,
                        };
                        axum::http::StatusCode::from_u16(status).expect("a status")
                    }
                });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self {
            url,
            inbox,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The requests so far.
    pub fn received(&self) -> Vec<Received> {
        self.inbox.lock().expect("inbox").received.clone()
    }

    /// Requests read and not answered whose connection is still open.
    pub fn pending(&self) -> usize {
        self.inbox.lock().expect("inbox").pending
    }

    /// Waits (at most 30 s) until `count` requests arrived, and returns them.
    pub fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = std::time::Instant::now() + HELPER_WAIT;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{count} webhook request(s) expected, {} arrived",
                received.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // A hanging handler keeps graceful shutdown waiting: the thread is left to end with the process.
        drop(self.thread.take());
    }
}

/// The `X-Authrun-Signature` a receiver expects for `body` under `key`: `sha256=<hex HMAC-SHA256>`,
/// computed here with the RustCrypto crates as a receiver would.
pub fn expected_signature(key: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
