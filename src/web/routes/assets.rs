//! The page's CSS, script and icons, built into the binary so authrun runs from any directory.
//!
//! Links carry `?v=ASSET_VERSION`, a hash of the files' contents, so browsers may cache them for long and
//! still see a new release at once. Browsers also ask for `/favicon.ico` and `/apple-touch-icon.png` on
//! their own, without a link; those are answered too.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::AppError;

const CSS: &str = include_str!("../../../static/app.css");
const JS: &str = include_str!("../../../static/app.js");
const FAVICON: &str = include_str!("../../../static/favicon.svg");
/// The icon as a 32 x 32 PNG inside an ICO, for browsers that ask for `/favicon.ico`.
const FAVICON_ICO: &[u8] = include_bytes!("../../../static/favicon.ico");
/// The 180 x 180 icon phones put on the home screen (square: the phone rounds its corners).
const TOUCH_ICON: &[u8] = include_bytes!("../../../static/apple-touch-icon.png");

/// A short hash of every asset; changes whenever one does.
pub fn asset_version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        let parts = [
            CSS.as_bytes(),
            JS.as_bytes(),
            FAVICON.as_bytes(),
            FAVICON_ICO,
            TOUCH_ICON,
        ];
        format!("{:016x}", fnv1a(&parts))
    });
    &VERSION
}

/// `GET /static/{name}`
pub async fn asset(name: Result<Path<String>, PathRejection>) -> Result<Response, AppError> {
    let Ok(Path(name)) = name else {
        return Err(AppError::NotFound);
    };
    serve(&name)
}

/// `GET /favicon.ico`
pub async fn favicon() -> Result<Response, AppError> {
    serve("favicon.ico")
}

/// `GET /apple-touch-icon.png` (and `-precomposed`, which older phones ask for).
pub async fn touch_icon() -> Result<Response, AppError> {
    serve("apple-touch-icon.png")
}

fn serve(name: &str) -> Result<Response, AppError> {
    let (body, content_type): (&'static [u8], _) = match name {
        "app.css" => (CSS.as_bytes(), "text/css; charset=utf-8"),
        "app.js" => (JS.as_bytes(), "text/javascript; charset=utf-8"),
        "favicon.svg" => (FAVICON.as_bytes(), "image/svg+xml"),
        "favicon.ico" => (FAVICON_ICO, "image/x-icon"),
        "apple-touch-icon.png" => (TOUCH_ICON, "image/png"),
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
fn fnv1a(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .flat_map(|part| part.iter().copied())
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}
