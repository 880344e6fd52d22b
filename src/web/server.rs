//! The HTTP server loop, with the limits a server on the open internet needs.
//!
//! `axum::serve` has no header-read timeout and no connection cap, so authrun drives hyper itself: a
//! client gets `header_read_timeout` to send its request head (slowloris), at most `max_connections` are
//! served at once (one more is answered 503 and closed), and each connection's peer address reaches the
//! handlers as `ConnectInfo`. On shutdown the listener closes and open connections finish their request.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};

use crate::web::router::build_router;
use crate::web::state::AppState;

/// How much of the network one client may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves authrun on `listener` until `shutdown` resolves, then stops the running script (if any) and
/// records its status. The script is stopped while open connections drain, so live output streams end
/// with the run.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let runner = Arc::clone(&state.runner);
    let limits = Limits {
        max_connections: state.config.server.max_connections,
        header_read_timeout: state.config.server.header_read_timeout,
    };
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let stop_runner = tokio::spawn(async move {
        if stopped.await.is_ok() {
            runner.shutdown().await;
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
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
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
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let watcher = graceful.watcher();
        let app = app.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let service = app.map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            builder.http2().timer(TokioTimer::new());
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout were closed");
    }
    Ok(())
}

/// Answers a connection over the cap with 503 and closes it.
async fn refuse_busy(mut stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
        retry-after: 1\r\nconnection: close\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\n\
        content-length: 89\r\n\r\n\
        {\"message\":\"Too many connections; try again in a moment.\",\"success\":false,\"error\":\"busy\"}";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
    let _ = stream.shutdown().await;
}
