//! The benchmark's yardstick: the least an axum server can do to answer like authrun's status endpoint.
//!
//! `baseline PORT BYTES` serves `GET /get_deploy_status` with a fixed JSON body of BYTES bytes on
//! 127.0.0.1:PORT, and `GET /` with the same bytes as HTML. `scripts/bench.sh` runs it beside authrun and
//! reports authrun's figures as ratios to it.

use axum::Router;
use axum::http::header;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5900);
    let bytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let json = body(bytes);
    let html = json.clone();
    let app = Router::new()
        .route(
            "/get_deploy_status",
            get(move || {
                let json = json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], json) }
            }),
        )
        .route(
            "/",
            get(move || {
                let html = html.clone();
                async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("baseline is serving http://{}/", listener.local_addr()?);
    axum::serve(listener, app).await
}

/// A JSON object of exactly `bytes` bytes (at least 16).
fn body(bytes: usize) -> axum::body::Bytes {
    let prefix = "{\"history\":\"";
    let suffix = "\"}";
    let fill = bytes.saturating_sub(prefix.len() + suffix.len());
    axum::body::Bytes::from(format!("{prefix}{}{suffix}", "x".repeat(fill)))
}
