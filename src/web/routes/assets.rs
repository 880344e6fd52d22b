//! The page's CSS, script and icon, built into the binary so authrun runs from any directory.
//!
//! Links carry `?v=ASSET_VERSION`, a hash of the files' contents, so browsers may cache them for long and
//! still see a new release at once.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::AppError;

const CSS: &str = include_str!("../../../static/app.css");
const JS: &str = include_str!("../../../static/app.js");
const FAVICON: &str = include_str!("../../../static/favicon.svg");

/// A short hash of every asset; changes whenever one does.
pub fn asset_version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| format!("{:016x}", fnv1a(&[CSS, JS, FAVICON])));
    &VERSION
}

/// `GET /static/{name}`
pub async fn asset(name: Result<Path<String>, PathRejection>) -> Result<Response, AppError> {
    let Ok(Path(name)) = name else {
        return Err(AppError::NotFound);
    };
    let (body, content_type) = match name.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        "favicon.svg" => (FAVICON, "image/svg+xml"),
        _ => return Err(AppError::NotFound),
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ),
    ];
    Ok((headers, body).into_response())
}

/// FNV-1a over all parts: stable across builds.
fn fnv1a(parts: &[&str]) -> u64 {
    parts
        .iter()
        .flat_map(|part| part.bytes())
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}
