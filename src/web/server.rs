//! The HTTP server loop, with the limits a server on the open internet needs.
//!
//! `axum::serve` has neither timeouts nor caps, so authrun drives hyper itself:
//! - at most `max_connections` connections are served at once, and at most `max_connections_per_client`
//!   from one client (an IPv4 address or an IPv6 /64; `trusted_proxies` are exempt, since a proxy carries
//!   many clients), so one address cannot take every slot. One more is answered 503 `busy` or 429
//!   `too_many_connections` and closed;
//! - a connection must send a complete request head within `header_read_timeout` of being accepted, and
//!   again of each answer's end, whatever the protocol: silent sockets, a partial HTTP/2 preface, idle
//!   keep-alive and idle HTTP/2 connections hold a slot no longer than that. A request that has arrived
//!   is left alone (its body has its own deadline, `middleware::body_deadline`);
//! - an HTTP/2 connection carries at most [`H2_MAX_STREAMS`] requests at once, with small windows and
//!   buffers, and each stream beyond the first going at once takes a slot as a connection does (or is
//!   answered 503/429 at once): the caps bound the requests in flight, whatever the protocol, and so
//!   the memory they hold.
//!
//! Each connection's peer address reaches the handlers as `ConnectInfo`. On shutdown the listener closes
//! and open connections finish their requests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use futures_util::future::Either;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::Service;

use crate::model::client::ClientKey;
use crate::web::middleware::client_ip::unmapped;
use crate::web::router::build_router;
use crate::web::state::AppState;

/// How much of the network one client may hold.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// How long a connection may go without a complete request head while none is being answered.
    pub header_read_timeout: Duration,
    /// Peers exempt from the per-client cap.
    pub trusted_proxies: Vec<IpNet>,
}

/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one HTTP/2 connection may have going at once; a browser needs a handful.
pub const H2_MAX_STREAMS: u32 = 16;
/// The largest HTTP/2 request head (hyper's default, said here; a browser's head with its cookies is a
/// few KiB). An HTTP/1 head must fit the connection's buffer.
const MAX_HEAD_BYTES: u32 = 16 * 1024;
/// What an HTTP/1 connection buffers at most, and an HTTP/2 stream and connection may receive unread:
/// request bodies are at most 4 KiB, so more only serves an attacker.
const H1_BUFFER_BYTES: usize = 64 * 1024;
const H2_STREAM_WINDOW: u32 = 16 * 1024;
const H2_CONNECTION_WINDOW: u32 = 64 * 1024;
/// What an HTTP/2 stream queues of its answer before waiting for the client to read it.
const H2_SEND_BUFFER: usize = 64 * 1024;
/// How often the server looks whether a burst of connections has ended, to give its memory back.
const MEMORY_CHECK: Duration = Duration::from_secs(2);
/// Slots freed since the busiest moment that make a burst.
const BURST_SLOTS: usize = 16;
/// Checks after a burst at which memory is given back again, while nothing new comes.
const SETTLE_CHECKS: usize = 3;

/// Serves authrun on `listener` until `shutdown` resolves, then stops the running script (if any),
/// records its status and gives the notifications still queued a short grace. The script is stopped
/// while open connections drain, so live output streams end with the run.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let runner = Arc::clone(&state.runner);
    let notifier = Arc::clone(&state.notifier);
    let server = &state.config.server;
    let limits = Limits {
        max_connections: server.max_connections,
        max_connections_per_client: server.max_connections_per_client,
        header_read_timeout: server.header_read_timeout,
        trusted_proxies: server.trusted_proxies.clone(),
    };
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let stop_runner = tokio::spawn(async move {
        if stopped.await.is_ok() {
            runner.shutdown().await;
            // The runs' last notifications are queued by now; they get a short grace to go.
            notifier.shutdown().await;
        }
    });
    let signal = async move {
        shutdown.await;
        let _ = stopping.send(());
    };
    let served = serve_app(listener, build_router(state), limits, signal).await;
    if let Err(error) = stop_runner.await {
        tracing::error!(%error, "stopping the running script failed");
    }
    served
}

/// Serves `app` (the router and its edge) on `listener` until `shutdown` resolves.
pub async fn serve_app<A>(
    listener: TcpListener,
    app: A,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    A: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    A::Future: Send + 'static,
{
    let slots = Slots::new(&limits);
    let trimmer = tokio::spawn(give_back_memory_after_bursts(slots.clone()));
    let builder = builder(&limits);
    // Every connection holds a receiver: the stop is sent to all, and the drain ends when all are gone.
    let (stop, stop_seen) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                tokio::spawn(refuse(stream, refusal));
                continue;
            }
        };
        let connection = Connection {
            peer,
            app: app.clone(),
            slots: slots.clone(),
            builder: builder.clone(),
            idle_timeout: limits.header_read_timeout,
            stop: stop_seen.clone(),
        };
        tokio::spawn(async move {
            connection.serve(stream).await;
            drop(slot);
        });
    }
    drop(listener);
    trimmer.abort();
    drop(stop_seen);
    let _ = stop.send(());
    if tokio::time::timeout(DRAIN_TIMEOUT, stop.closed()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout were closed");
    }
    Ok(())
}

/// Gives the memory of a burst of connections back to the system once it has ended (see [`trim_heap`]).
async fn give_back_memory_after_bursts(slots: Slots) {
    let mut ticks = tokio::time::interval(MEMORY_CHECK);
    loop {
        ticks.tick().await;
        if slots.burst_ended() {
            let _ = tokio::task::spawn_blocking(trim_heap).await;
        }
    }
}

/// Asks glibc to return the memory it holds free. It keeps what each thread freed in that thread's
/// arena, so after a flood of connections ends authrun would otherwise stay at the flood's size.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: malloc_trim takes no pointers; glibc locks each arena while it trims it.
    let released = unsafe { libc::malloc_trim(0) } == 1;
    tracing::debug!(released, "gave memory freed by a burst of connections back");
}

/// Other allocators give freed memory back by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// hyper's connection settings, the same for every connection.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(H1_BUFFER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(MAX_HEAD_BYTES)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buf_size(H2_SEND_BUFFER)
        // A peer that stops answering pings (gone without closing) loses its streams, live output too.
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    builder
}

/// One accepted connection and what serving it needs.
struct Connection<A> {
    peer: SocketAddr,
    app: A,
    slots: Slots,
    builder: auto::Builder<TokioExecutor>,
    idle_timeout: Duration,
    stop: watch::Receiver<()>,
}

impl<A> Connection<A>
where
    A: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    A::Future: Send + 'static,
{
    /// Serves the connection until the client closes it, it stays idle too long, or the server stops.
    async fn serve(mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = Tracked {
            inner: self.app,
            peer: self.peer,
            activity: Arc::clone(&activity),
            slots: self.slots,
        };
        let connection = self
            .builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        tokio::pin!(connection);
        let wind_down = tokio::select! {
            result = connection.as_mut() => return log_end(result, self.peer),
            _ = self.stop.changed() => DRAIN_TIMEOUT,
            () = activity.idle_for(self.idle_timeout) => {
                if !activity.has_had_requests() {
                    // Not one request head in all that time: nothing to finish, so close at once.
                    tracing::debug!(peer = %self.peer, "closed a connection that sent no request");
                    return;
                }
                self.idle_timeout
            }
        };
        // HTTP/2 gets a GOAWAY, HTTP/1 closes after the answer under way; a client that lets even that
        // stall is cut off.
        connection.as_mut().graceful_shutdown();
        match tokio::time::timeout(wind_down, connection).await {
            Ok(result) => log_end(result, self.peer),
            Err(_) => tracing::debug!(peer = %self.peer, "cut off a connection that did not close"),
        }
    }
}

fn log_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>, peer: SocketAddr) {
    if let Err(error) = result {
        tracing::debug!(%error, %peer, "connection ended with an error");
    }
}

/// The server's slots and each client's share of them. A connection takes one, and so does each request
/// beyond the first going at once on an HTTP/2 connection: streams count like connections.
#[derive(Clone)]
struct Slots {
    max: usize,
    server: Arc<Semaphore>,
    /// The most slots in use at once since the memory was last given back.
    busiest: Arc<AtomicUsize>,
    /// Checks left, after a burst ended, at which memory is given back again while nothing new comes:
    /// connections and their streams' tasks still closing free memory after the first trim (see
    /// [`Slots::burst_ended`]).
    settling: Arc<AtomicUsize>,
    /// Slots in use at the previous check.
    previous: Arc<AtomicUsize>,
    clients: Arc<ClientSlots>,
}

impl Slots {
    fn new(limits: &Limits) -> Self {
        Self {
            max: limits.max_connections,
            server: Arc::new(Semaphore::new(limits.max_connections)),
            busiest: Arc::new(AtomicUsize::new(0)),
            settling: Arc::new(AtomicUsize::new(0)),
            previous: Arc::new(AtomicUsize::new(0)),
            clients: Arc::new(ClientSlots {
                cap: limits.max_connections_per_client,
                trusted_proxies: limits.trusted_proxies.clone(),
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A slot for `peer`, or the refusal to answer when its client or the server has none left.
    fn take(&self, peer: IpAddr) -> Result<Slot, &'static Refusal> {
        let client = self.clients.take(peer).ok_or(&TOO_MANY_FROM_CLIENT)?;
        let server = Arc::clone(&self.server).try_acquire_owned().map_err(|_| &BUSY)?;
        self.busiest.fetch_max(self.in_use(), Ordering::Relaxed);
        Ok(Slot {
            _server: server,
            _client: client,
        })
    }
}

impl Slots {
    fn in_use(&self) -> usize {
        self.max.saturating_sub(self.server.available_permits())
    }

    /// Whether memory should be given back now: a burst has ended since the last call (far fewer slots
    /// are in use than at its height), or it ended at one of the last [`SETTLE_CHECKS`] calls and no
    /// more slots are in use than at the previous call, so what its stragglers freed since (connections
    /// still closing, their streams' tasks) goes back too. Called by one task only, every
    /// [`MEMORY_CHECK`].
    fn burst_ended(&self) -> bool {
        let now = self.in_use();
        let previous = self.previous.swap(now, Ordering::Relaxed);
        if self.busiest.load(Ordering::Relaxed) >= now + BURST_SLOTS {
            self.busiest.store(now, Ordering::Relaxed);
            self.settling.store(SETTLE_CHECKS, Ordering::Relaxed);
            return true;
        }
        let settling = self.settling.load(Ordering::Relaxed);
        if settling == 0 {
            return false;
        }
        if now > previous {
            // Something new is coming: no longer the burst's aftermath.
            self.settling.store(0, Ordering::Relaxed);
            return false;
        }
        self.settling.store(settling - 1, Ordering::Relaxed);
        self.busiest.store(now, Ordering::Relaxed);
        true
    }
}

/// A slot held; given back when dropped.
struct Slot {
    _server: OwnedSemaphorePermit,
    _client: ClientSlot,
}

/// How many slots each client holds, against the per-client cap.
struct ClientSlots {
    cap: usize,
    trusted_proxies: Vec<IpNet>,
    held: Mutex<HashMap<ClientKey, usize>>,
}

impl ClientSlots {
    /// A slot for `peer`, or `None` when its client already holds the cap.
    fn take(self: &Arc<Self>, peer: IpAddr) -> Option<ClientSlot> {
        let peer = unmapped(peer);
        if self.trusted_proxies.iter().any(|net| net.contains(&peer)) {
            return Some(ClientSlot {
                key: None,
                slots: Arc::clone(self),
            });
        }
        let key = ClientKey::of(peer);
        let mut held = self.held.lock();
        let count = held.entry(key.clone()).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            key: Some(key),
            slots: Arc::clone(self),
        })
    }
}

/// One slot in its client's count.
struct ClientSlot {
    /// `None` for a trusted proxy, which is not counted.
    key: Option<ClientKey>,
    slots: Arc<ClientSlots>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut held = self.slots.held.lock();
        if let Some(count) = held.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&key);
            }
        }
    }
}

/// Whether a connection is answering requests, and since when it has not been.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last answer ended; 0 until then.
    idle_since_ms: AtomicU64,
    requests: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// Marks a request as arrived; it counts until the returned guard (kept with its answer) drops, and
    /// so does `extra`, the slot it holds when it is not the connection's only request going.
    fn begin(self: &Arc<Self>, extra: Option<Slot>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            activity: Arc::clone(self),
            _extra: extra,
        }
    }

    fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    fn has_had_requests(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    /// Resolves once no request has been going for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let now = Instant::now();
            let deadline = if self.is_busy() {
                // Look again later; a long answer (live output) may go on for hours.
                now + timeout
            } else {
                let since = self.idle_since_ms.load(Ordering::SeqCst);
                self.opened + Duration::from_millis(since) + timeout
            };
            if deadline <= now {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A request going on a connection: from its head until its answer has been sent (or dropped).
struct InFlight {
    activity: Arc<Activity>,
    _extra: Option<Slot>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        // Written before the count falls, so an idle connection never shows an older time.
        let since = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.idle_since_ms.store(since, Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The app as hyper calls it: each request gets the peer address and counts in the connection's activity
/// until its answer is sent; a request beyond the first going at once needs a slot of its own.
#[derive(Clone)]
struct Tracked<A> {
    inner: A,
    peer: SocketAddr,
    activity: Arc<Activity>,
    slots: Slots,
}

impl<A> Service<Request<Incoming>> for Tracked<A>
where
    A: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, TrackedFuture<A::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        let extra = if self.activity.is_busy() {
            match self.slots.take(self.peer.ip()) {
                Ok(slot) => Some(slot),
                Err(refusal) => return Either::Left(ready(Ok(refusal.response()))),
            }
        } else {
            None
        };
        let in_flight = self.activity.begin(extra);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        Either::Right(TrackedFuture {
            inner: self.inner.call(request.map(Body::new)),
            in_flight: Some(in_flight),
        })
    }
}

pin_project! {
    /// The app's answer, with the request's [`InFlight`] handed to its body.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| {
            Body::new(TrackedBody {
                inner: body,
                _in_flight: in_flight,
            })
        })))
    }
}

pin_project! {
    /// An answer's body; the request stops counting when hyper has sent it, or drops it.
    struct TrackedBody {
        #[pin]
        inner: Body,
        _in_flight: Option<InFlight>,
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a connection or an HTTP/2 stream over a cap, in the API's JSON shape.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    message: &'static str,
}

const BUSY: Refusal = Refusal {
    status: StatusCode::SERVICE_UNAVAILABLE,
    error: "busy",
    message: "Too many connections; try again in a moment.",
};

const TOO_MANY_FROM_CLIENT: Refusal = Refusal {
    status: StatusCode::TOO_MANY_REQUESTS,
    error: "too_many_connections",
    message: "Too many connections from your address; close some and try again.",
};

impl Refusal {
    fn body(&self) -> String {
        format!(
            "{{\"message\":\"{}\",\"success\":false,\"error\":\"{}\"}}",
            self.message, self.error
        )
    }

    /// The headers every refusal carries, besides its length.
    const HEADERS: [(HeaderName, &'static str); 4] = [
        (header::CONTENT_TYPE, "application/json"),
        (header::RETRY_AFTER, "1"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];

    /// As the answer to a request (an HTTP/2 stream), which passes no handler.
    fn response(&self) -> Response {
        let mut response = Response::new(Body::from(self.body()));
        *response.status_mut() = self.status;
        for (name, value) in Self::HEADERS {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

/// Answers a connection over a cap, before reading anything from it, and closes it.
async fn refuse(mut stream: TcpStream, refusal: &'static Refusal) {
    let body = refusal.body();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\nconnection: close\r\ncontent-length: {}\r\n",
        refusal.status.as_str(),
        refusal.status.canonical_reason().unwrap_or_default(),
        body.len()
    );
    for (name, value) in Refusal::HEADERS {
        answer.push_str(&format!("{name}: {value}\r\n"));
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_given_back_when_a_burst_ends_and_again_while_its_stragglers_close() {
        let slots = Slots::new(&Limits {
            max_connections: 512,
            max_connections_per_client: 512,
            header_read_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
        });
        let peer = IpAddr::from([192, 0, 2, 1]);
        let mut held: Vec<Slot> = (0..100).map(|_| slots.take(peer).ok().expect("a slot")).collect();
        assert!(!slots.burst_ended(), "a burst going on");
        // 90 close before the check, 10 are still closing: given back now, and at the next checks.
        held.truncate(10);
        assert!(slots.burst_ended());
        held.clear();
        for check in 1..=SETTLE_CHECKS {
            assert!(slots.burst_ended(), "the stragglers' memory, check {check}");
        }
        assert!(!slots.burst_ended(), "nothing new since");
        // A few connections come and go: no burst.
        let few: Vec<Slot> = (0..5).map(|_| slots.take(peer).ok().expect("a slot")).collect();
        assert!(!slots.burst_ended());
        drop(few);
        assert!(!slots.burst_ended());
        // Another burst, then new connections while it settles: those end the aftermath.
        let mut held: Vec<Slot> = (0..100).map(|_| slots.take(peer).ok().expect("a slot")).collect();
        assert!(!slots.burst_ended());
        held.truncate(10);
        assert!(slots.burst_ended());
        let again: Vec<Slot> = (0..5).map(|_| slots.take(peer).ok().expect("a slot")).collect();
        assert!(
            !slots.burst_ended(),
            "new connections are not the burst's stragglers"
        );
        assert!(!slots.burst_ended());
        drop(again);
        drop(held);
    }
}
