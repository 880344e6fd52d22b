//! Attacks measured on the real binary: an HTTP/2 stream flood must not grow authrun's memory without
//! bound, and the memory must come back once the attacker leaves.

use std::net::{Ipv4Addr, SocketAddr};

use axum::body::Bytes;
use axum::http::Request;
use tokio::net::TcpSocket;

use crate::support::{Server, Workspace, authrun};

/// The flood of the security review: 100 connections, each opening as many of 200 `POST /verify` streams
/// as the server allows at once, with an 8 KB header and a body that never finishes.
const CONNECTIONS: u8 = 100;
const STREAMS: usize = 200;
const PADDING: usize = 8 * 1024;

/// A process's memory figure (`VmRSS`, `VmHWM`) from /proc, in KiB.
fn memory_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// One attacking connection from `source`: the streams it opened and what keeps the connection open.
struct Flood {
    _client: h2::client::SendRequest<Bytes>,
    _streams: Vec<(h2::client::ResponseFuture, h2::SendStream<Bytes>)>,
    driver: tokio::task::JoinHandle<()>,
}

async fn flood(server: SocketAddr, source: Ipv4Addr) -> Flood {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .unwrap_or_else(|error| panic!("bind {source}: {error}"));
    let stream = socket.connect(server).await.expect("connect");
    let (client, mut connection) = h2::client::handshake(stream).await.expect("an HTTP/2 handshake");
    let mut ping = connection.ping_pong().expect("the connection's ping");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    // One answer first, so the server's SETTINGS (its stream limit) are known.
    let mut client = client.ready().await.expect("ready");
    let request = Request::get(format!("http://{server}/healthz"))
        .body(())
        .expect("a request");
    let (response, _) = client.send_request(request, true).expect("send");
    response.await.expect("the health answer");
    let mut streams = Vec::new();
    for _ in 0..STREAMS.min(client.current_max_send_streams()) {
        client = client.ready().await.expect("ready");
        let request = Request::post(format!("http://{server}/verify"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", "100")
            .header("x-padding", "p".repeat(PADDING))
            .body(())
            .expect("a request");
        let (response, mut body) = client.send_request(request, false).expect("open a stream");
        body.send_data(Bytes::from_static(b"code=12"), false)
            .expect("send part of the body");
        streams.push((response, body));
    }
    // The server answers a ping after reading everything sent before it.
    ping.ping(h2::Ping::opaque()).await.expect("a pong");
    Flood {
        _client: client,
        _streams: streams,
        driver,
    }
}

#[test]
fn an_http2_stream_flood_keeps_memory_bounded_and_gives_it_back() {
    let workspace = Workspace::configured("#!/bin/sh\necho deployed\n", "");
    let server = Server::start(
        authrun(workspace.path())
            .args(["serve", "--bind", "127.0.0.1:0", "--config"])
            .arg(workspace.config()),
    );
    let pid = server.pid().as_raw();
    // What authrun holds idle: its binary's pages grow with every crate it links.
    let idle = memory_kib(pid, "VmRSS");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        // One address per connection, as a botnet would: the per-client cap plays no part.
        let mut floods = Vec::new();
        for i in 1..=CONNECTIONS {
            floods.push(tokio::spawn(flood(server.addr, Ipv4Addr::new(127, 0, 2, i))));
        }
        let mut held = Vec::new();
        for flood in floods {
            held.push(flood.await.expect("an attacking connection"));
        }
        let peak = memory_kib(pid, "VmHWM");
        assert!(
            peak < 64 * 1024,
            "authrun grew to {peak} KiB under the flood\n{}",
            server.stderr()
        );
        for flood in held {
            flood.driver.abort();
        }
    });
    drop(runtime);
    // The flood adds about 30 MiB (debug build); what stays is what glibc cannot give back (pages
    // pinned by live allocations) and the structures that grew with it, about 6 MiB. Without giving
    // memory back, authrun would stay near its peak.
    let mut last = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        last = memory_kib(pid, "VmRSS");
        if last < idle + 8 * 1024 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        last < idle + 8 * 1024,
        "authrun's memory did not come back within 8 MiB of what it held idle: {last} KiB now, {idle} KiB \
         idle\n{}",
        server.stderr()
    );
    assert_eq!(server.get("/healthz").status, 200);
}
