//! Attacks on connections, over real TCP: sockets that send nothing, stalled heads and bodies in HTTP/1
//! and HTTP/2, one address taking every slot, and HTTP/2 streams piling up on one connection. Each attack
//! comes from 127.0.0.2 and the client that must still be served from 127.0.0.3 (Linux routes all of
//! 127.0.0.0/8 to the loopback), so the per-client cap tells them apart. Network timeouts are real time
//! and set to 1 s here; the tests assert what happens (served, closed, 408), never how fast.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::audit_lines;
use crate::helpers::{TcpServer, TestApp};

/// The longest a test waits for a real socket.
const SOCKET_WAIT: Duration = Duration::from_secs(5);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const VICTIM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Network timeouts small enough for tests: a request head and a body each get 1 s.
const SHORT_TIMEOUTS: &str = "header_read_timeout_seconds = 1\nrequest_timeout_seconds = 1";

const HEALTH_CLOSE: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
/// What every HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const H2_EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn server_addr(server: &TcpServer) -> SocketAddr {
    server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address")
}

/// A connection to `server` from the local address `source`.
async fn connect_from(source: Ipv4Addr, server: &TcpServer) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .unwrap_or_else(|error| panic!("bind {source}: {error}"));
    socket
        .connect(server_addr(server))
        .await
        .expect("connect to the server")
}

/// Everything the server sends until it closes the connection (a reset counts as closed), or `Err` with
/// what it sent when it still holds the connection open after [`SOCKET_WAIT`].
async fn until_closed(stream: &mut TcpStream) -> Result<Vec<u8>, Vec<u8>> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + SOCKET_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return Err(bytes),
            Ok(Ok(0) | Err(_)) => return Ok(bytes),
            Ok(Ok(n)) => bytes.extend_from_slice(&buffer[..n]),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON body of a whole HTTP/1.1 answer.
fn json_body(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or_else(|error| panic!("not JSON ({error}): {answer:?}"))
}

/// `GET /healthz` from `source` on a new connection: the whole answer.
async fn health_from(source: Ipv4Addr, server: &TcpServer) -> String {
    let mut stream = connect_from(source, server).await;
    // A refused connection may be answered and closed before the request is written.
    let _ = stream.write_all(HEALTH_CLOSE).await;
    let answer = until_closed(&mut stream)
        .await
        .unwrap_or_else(|sent| panic!("no answer to GET /healthz, only {:?}", text(&sent)));
    text(&answer)
}

/// Asks from [`VICTIM`] until served (bounded): a slot held by an attack must come free.
async fn assert_victim_served_eventually(server: &TcpServer) {
    let deadline = Instant::now() + SOCKET_WAIT;
    loop {
        let answer = health_from(VICTIM, server).await;
        if answer.starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(Instant::now() < deadline, "the slot never came free: {answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_address_holding_many_silent_sockets_does_not_lock_out_another() {
    // Timeouts far longer than the test: only the per-client cap can let the victim in.
    let app = TestApp::builder()
        .config("[server]\nmax_connections = 64\nheader_read_timeout_seconds = 600")
        .build();
    let server = app.serve_tcp().await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(connect_from(ATTACKER, &server).await);
    }

    let answer = health_from(VICTIM, &server).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    // The attacker got 32 connections (the default cap); the last of its 100 was refused.
    let mut last = silent.pop().expect("a socket");
    let refused = text(&until_closed(&mut last).await.expect("the surplus is closed"));
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused:?}");
    assert_eq!(json_body(&refused)["error"], "too_many_connections");
    server.shutdown().await;
}

#[tokio::test]
async fn the_per_client_cap_spares_trusted_proxies() {
    let app = TestApp::builder()
        .config("[server]\nmax_connections_per_client = 2\ntrusted_proxies = [\"127.0.0.2\"]")
        .build();
    let server = app.serve_tcp().await;
    // A proxy carries many clients: five connections at once are served.
    let mut proxy = Vec::new();
    for _ in 0..5 {
        let mut stream = connect_from(ATTACKER, &server).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("send");
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.expect("an answer");
        assert_eq!(&head, b"HTTP/1.1 200", "{}", text(&head));
        proxy.push(stream);
    }
    // Another address gets two.
    let _held = [
        connect_from(VICTIM, &server).await,
        connect_from(VICTIM, &server).await,
    ];
    let third = health_from(VICTIM, &server).await;
    assert!(third.starts_with("HTTP/1.1 429"), "{third:?}");
    server.shutdown().await;
}

/// `attack` is sent on one connection from [`ATTACKER`], which the server (one slot) must close by itself,
/// answering `answer` (the start of its status line, with the `request_timeout` error) or serving nothing;
/// then [`VICTIM`] gets the slot.
async fn assert_cut_off(attack: &[u8], answer: Option<&str>) {
    let app = TestApp::builder()
        .config(&format!("[server]\nmax_connections = 1\n{SHORT_TIMEOUTS}"))
        .build();
    let server = app.serve_tcp().await;
    let mut stream = connect_from(ATTACKER, &server).await;
    stream.write_all(attack).await.expect("send the attack");
    let sent = until_closed(&mut stream).await.unwrap_or_else(|sent| {
        panic!(
            "the server still holds the connection after {SOCKET_WAIT:?}; it sent {:?}",
            text(&sent)
        )
    });
    let sent = text(&sent);
    match answer {
        Some(status) => {
            assert!(sent.starts_with(status), "{sent:?}");
            assert_eq!(json_body(&sent)["error"], "request_timeout", "{sent:?}");
            // A late body is no attempt: nothing audited, no failure counted.
            assert_eq!(audit_lines(&app), Vec::<serde_json::Value>::new());
        }
        // Nothing, a 408, or (HTTP/2) the server's SETTINGS: never an answer to a request.
        None => assert!(!sent.contains("HTTP/1.1 2"), "{sent:?}"),
    }
    assert_victim_served_eventually(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_socket_that_sends_nothing_is_closed() {
    assert_cut_off(b"", None).await;
}

#[tokio::test]
async fn a_partial_http2_preface_is_closed() {
    assert_cut_off(&H2_PREFACE[..16], None).await;
}

#[tokio::test]
async fn an_http2_preface_and_settings_without_a_request_are_closed() {
    assert_cut_off(&[H2_PREFACE, H2_EMPTY_SETTINGS].concat(), None).await;
}

#[tokio::test]
async fn a_verify_body_that_stalls_is_answered_408() {
    let head = "POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ncode=12";
    assert_cut_off(head.as_bytes(), Some("HTTP/1.1 408")).await;
}

#[tokio::test]
async fn a_chunked_verify_body_that_stalls_is_answered_408() {
    let head = "POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n\
                5\r\ncode=\r\n";
    assert_cut_off(head.as_bytes(), Some("HTTP/1.1 408")).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = TestApp::builder()
        .config(&format!("[server]\n{SHORT_TIMEOUTS}"))
        .build();
    let server = app.serve_tcp().await;
    let mut stream = connect_from(ATTACKER, &server).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send");
    let sent = text(&until_closed(&mut stream).await.unwrap_or_else(|sent| {
        panic!(
            "an idle keep-alive connection stayed open; it sent {:?}",
            text(&sent)
        )
    }));
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent:?}");
    server.shutdown().await;
}

/// An HTTP/2 connection from `source` (prior knowledge, as `curl --http2-prior-knowledge`); the task
/// driving it ends when the server closes the connection.
async fn h2_connect(
    source: Ipv4Addr,
    server: &TcpServer,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let stream = connect_from(source, server).await;
    let (client, connection) = h2::client::handshake(stream).await.expect("an HTTP/2 handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, driver)
}

async fn h2_get(client: &mut h2::client::SendRequest<Bytes>, server: &TcpServer, path: &str) -> StatusCode {
    let request = Request::get(server.url(path)).body(()).expect("a request");
    let ready = client.clone().ready().await.expect("a stream");
    *client = ready;
    let (response, _) = client.send_request(request, true).expect("send");
    tokio::time::timeout(SOCKET_WAIT, response)
        .await
        .expect("an answer")
        .expect("a response")
        .status()
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let app = TestApp::builder()
        .config(&format!("[server]\n{SHORT_TIMEOUTS}"))
        .build();
    let server = app.serve_tcp().await;
    let (mut client, driver) = h2_connect(ATTACKER, &server).await;
    assert_eq!(h2_get(&mut client, &server, "/healthz").await, StatusCode::OK);
    tokio::time::timeout(SOCKET_WAIT, driver)
        .await
        .expect("the server closes an idle HTTP/2 connection")
        .expect("the connection task");
    server.shutdown().await;
}

/// A `POST /verify` stream with an 8 KB header whose body stops after a few bytes.
fn stalled_verify(
    client: &mut h2::client::SendRequest<Bytes>,
    server: &TcpServer,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = Request::post(server.url("/verify"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", "100")
        .header("x-padding", "p".repeat(8 * 1024))
        .body(())
        .expect("a request");
    let (response, mut body) = client.send_request(request, false).expect("open a stream");
    body.send_data(Bytes::from_static(b"code=12"), false)
        .expect("send part of the body");
    (response, body)
}

#[tokio::test]
async fn http2_allows_few_streams_per_connection_and_times_out_stalled_ones() {
    let app = TestApp::builder()
        .config(&format!("[server]\n{SHORT_TIMEOUTS}"))
        .build();
    let server = app.serve_tcp().await;
    let (mut client, _driver) = h2_connect(ATTACKER, &server).await;
    // After one answer the server's SETTINGS have surely arrived.
    assert_eq!(h2_get(&mut client, &server, "/healthz").await, StatusCode::OK);
    let allowed = client.current_max_send_streams();
    assert!(allowed <= 16, "the server allows {allowed} streams at once");

    let mut stalled = Vec::new();
    for _ in 0..allowed {
        client = client.ready().await.expect("a stream");
        stalled.push(stalled_verify(&mut client, &server));
    }
    for (response, _body) in stalled {
        let response = tokio::time::timeout(SOCKET_WAIT, response)
            .await
            .expect("a stalled stream is answered")
            .expect("a response");
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    }
    // The connection goes on serving.
    assert_eq!(h2_get(&mut client, &server, "/healthz").await, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn http2_streams_beyond_the_first_take_slots_like_connections() {
    // Two slots: the connection's, and one for a second request going at once.
    let app = TestApp::builder().config("[server]\nmax_connections = 2").build();
    let server = app.serve_tcp().await;
    let (mut client, _driver) = h2_connect(ATTACKER, &server).await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        client = client.ready().await.expect("a stream");
        stalled.push(stalled_verify(&mut client, &server));
    }
    client = client.ready().await.expect("a stream");
    let (third, _body) = stalled_verify(&mut client, &server);
    let third = tokio::time::timeout(SOCKET_WAIT, third)
        .await
        .expect("the third stream is answered at once")
        .expect("a response");
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    // A new connection finds no slot either.
    let refused = health_from(VICTIM, &server).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused:?}");
    drop(stalled);
    server.shutdown().await;
}
