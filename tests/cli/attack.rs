//! Attacks on the regulation, against the real binary over TCP: a burst of wrong codes released at one
//! moment from hundreds of addresses gets no more codes checked than the limits allow, and a blocked or
//! cross-site client hammering `/verify` costs a line a minute in the audit log and in the server log.
//!
//! Every address in 127.0.0.0/8 is this machine, so binding the client's socket to 127.0.x.y before
//! connecting gives authrun as many clients as the test wants.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{
    DEPLOY_SCRIPT as SCRIPT, SECRET, Server, WAIT, Workspace, authrun, code_now, read_reply, run, wait_for,
    wrong_code,
};

/// `authrun serve` on a free port with 64 worker threads, as many as a big machine gives it.
pub(super) fn serve_with_64_threads(workspace: &Workspace) -> Server {
    Server::start(
        authrun(workspace.path())
            .env("TOKIO_WORKER_THREADS", "64")
            .args(["serve", "--bind", "127.0.0.1:0", "--config"])
            .arg(workspace.config()),
    )
}

/// A request to `POST /verify` with `code`, as curl sends it, with extra header lines.
pub(super) fn verify_request(server: &Server, code: &str, headers: &str) -> Vec<u8> {
    let body = format!("code={code}");
    format!(
        "POST /verify HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n{headers}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .into_bytes()
}

/// A connection to `server` from `source`.
pub fn connect_from(runtime: &tokio::runtime::Runtime, source: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .unwrap_or_else(|error| panic!("bind to {source}: {error}"));
        socket.connect(server).await.expect("connect to authrun")
    });
    let stream = stream.into_std().expect("a std stream");
    stream.set_nonblocking(false).expect("blocking mode");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a runtime")
}

/// The status and JSON body of the answer on `stream`, read to its end.
pub(super) fn read_answer(stream: &mut TcpStream) -> (u16, Value) {
    let reply = read_reply(stream);
    let body = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
    (reply.status, body)
}

/// One request from `source`, answered.
pub(super) fn post_from(server: &Server, source: Ipv4Addr, request: &[u8]) -> (u16, Value) {
    let mut stream = connect_from(&runtime(), source, server.addr);
    stream.write_all(request).expect("send the request");
    read_answer(&mut stream)
}

/// Opens one connection per source, sends every byte of `request` but the last on each, then the last
/// bytes one right after the other, so authrun gets them all at once. Returns the answers.
fn burst(server: &Server, sources: &[Ipv4Addr], request: &[u8]) -> Vec<(u16, Value)> {
    let runtime = runtime();
    let (head, last) = request.split_at(request.len() - 1);
    let mut streams: Vec<TcpStream> = sources
        .iter()
        .map(|source| {
            let mut stream = connect_from(&runtime, *source, server.addr);
            stream.write_all(head).expect("send all but the last byte");
            stream
        })
        .collect();
    for stream in &mut streams {
        stream.write_all(last).expect("send the last byte");
    }
    streams.iter_mut().map(read_answer).collect()
}

/// How many answers had `status` and `error`.
pub(super) fn count(answers: &[(u16, Value)], status: u16, error: &str) -> usize {
    answers
        .iter()
        .filter(|(got, body)| *got == status && body["error"] == error)
        .count()
}

/// Asserts that every answer is one of `allowed` (status, error).
pub(super) fn assert_only(answers: &[(u16, Value)], allowed: &[(u16, &str)]) {
    for (status, body) in answers {
        assert!(
            allowed
                .iter()
                .any(|(want, error)| status == want && body["error"] == *error),
            "unexpected answer {status} {body}"
        );
    }
}

pub(super) fn audit_lines(workspace: &Workspace) -> Vec<Value> {
    workspace
        .read(".authrun/audit.log")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}")))
        .collect()
}

/// The attempts the audit log counts with `outcome` (a coalesced line counts `count` attempts).
pub(super) fn audited(lines: &[Value], outcome: &str) -> u64 {
    lines
        .iter()
        .filter(|line| line["event"] == "attempt" && line["outcome"] == outcome)
        .map(|line| line["count"].as_u64().unwrap_or(1))
        .sum()
}

/// `n` addresses, 127.0.{first}.1 and on.
pub(super) fn addresses(first: u8, n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| {
            let third = first + u8::try_from(i / 250).expect("fewer than 250 * 255 addresses");
            let fourth = u8::try_from(i % 250 + 1).expect("at most 250");
            Ipv4Addr::new(127, 0, third, fourth)
        })
        .collect()
}

#[test]
fn a_burst_of_wrong_codes_gets_no_more_codes_checked_than_the_limits_allow() {
    let workspace = Workspace::configured(SCRIPT, "");
    let server = serve_with_64_threads(&workspace);
    let wrong = verify_request(&server, &wrong_code(), "");

    // 30 connections from one address (fewer than a per-address connection limit would refuse): the
    // client limit is 5.
    let one_client = vec![Ipv4Addr::new(127, 0, 0, 2); 30];
    let answers = burst(&server, &one_client, &wrong);
    assert_eq!(count(&answers, 401, "wrong_code"), 5, "{answers:?}");
    assert_only(&answers, &[(401, "wrong_code"), (429, "banned")]);

    // Then 500 addresses at once: 5 more reach the limit of 10 from anywhere within the hour.
    let answers = burst(&server, &addresses(1, 500), &wrong);
    assert_eq!(count(&answers, 401, "wrong_code"), 5, "{answers:?}");
    assert_only(&answers, &[(401, "wrong_code"), (429, "paused")]);
    assert_eq!(audited(&audit_lines(&workspace), "wrong"), 10);

    // Again, twice, each time after lifting the pause: never more than 10 checked in the window.
    for round in 0..2u8 {
        let unlocked = run(authrun(workspace.path())
            .args(["unlock", "--all", "--config"])
            .arg(workspace.config()));
        assert_eq!(unlocked.code(), 0, "{unlocked:#?}");
        let answers = burst(&server, &addresses(3 + round * 2, 500), &wrong);
        assert_eq!(
            count(&answers, 401, "wrong_code"),
            10,
            "round {round}: {answers:?}"
        );
        assert_only(&answers, &[(401, "wrong_code"), (429, "paused")]);
    }
    assert_eq!(audited(&audit_lines(&workspace), "wrong"), 30);
}

#[test]
fn a_blocked_or_cross_site_client_flooding_verify_costs_one_line_a_minute() {
    let workspace = Workspace::configured(SCRIPT, "");
    let server = serve_with_64_threads(&workspace);
    let banned = Ipv4Addr::new(127, 0, 0, 3);
    let wrong = verify_request(&server, &wrong_code(), "");
    for _ in 0..5 {
        assert_eq!(post_from(&server, banned, &wrong).0, 401);
    }
    let audit_before = audit_lines(&workspace).len();

    let valid = verify_request(&server, &code_now(SECRET), "");
    for _ in 0..1000 {
        let (status, body) = post_from(&server, banned, &valid);
        assert_eq!((status, &body["error"]), (429, &Value::from("banned")), "{body}");
    }
    let cross_site = Ipv4Addr::new(127, 0, 0, 4);
    let foreign = verify_request(&server, &code_now(SECRET), "Origin: https://evil.example\r\n");
    for _ in 0..1000 {
        let (status, body) = post_from(&server, cross_site, &foreign);
        assert_eq!(
            (status, &body["error"]),
            (403, &Value::from("forbidden")),
            "{body}"
        );
    }

    let lines = audit_lines(&workspace);
    let new_lines = &lines[audit_before..];
    // The ban began with the fifth wrong code; the flood adds one line per client, the minute has not
    // ended yet.
    assert_eq!(new_lines.len(), 2, "{new_lines:#?}");
    assert_eq!(new_lines[0]["client"], "127.0.0.3");
    assert_eq!(new_lines[0]["outcome"], "banned");
    assert_eq!(new_lines[1]["client"], "127.0.0.4");
    assert_eq!(new_lines[1]["outcome"], "forbidden");
    // The log is written by a thread of its own, so lines from before the flood may come late: only the
    // lines about the flood's answers count.
    let about_the_flood = |line: &&str| {
        [
            "status=429",
            "status=403",
            "outcome=\"banned\"",
            "outcome=\"forbidden\"",
        ]
        .iter()
        .any(|mark| line.contains(mark))
    };
    wait_for("a line about each flooding client", || {
        (server.stderr().lines().filter(about_the_flood).count() >= 2).then_some(())
    });
    let stderr = server.stderr();
    let logged: Vec<&str> = stderr.lines().filter(about_the_flood).collect();
    assert!(
        logged.len() <= 4,
        "2000 refusals logged {} lines:\n{}",
        logged.len(),
        logged.join("\n")
    );

    // A server that stops writes what it counted: every refusal is accounted for.
    let mut server = server;
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.stderr());
    let lines = audit_lines(&workspace);
    assert_eq!(audited(&lines, "banned"), 1000, "{lines:#?}");
    assert_eq!(audited(&lines, "forbidden"), 1000, "{lines:#?}");
}
