//! The refusals as a page, for a browser: the same status and message as the JSON answer API clients
//! get, in the site's layout, so following a link to a run that does not exist or to output without
//! access shows a page rather than raw JSON.

use askama::Template;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;

use crate::error::AppError;
use crate::web::routes::assets::asset_version;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    title: &'static str,
    message: String,
    asset_version: &'static str,
}

/// `response` (the JSON answer of `error`) with the error page as its body; status and other headers
/// (`Retry-After`, the security headers to come) stay as they are.
pub fn into_page(error: &AppError, mut response: Response) -> Response {
    let status = response.status();
    let page = ErrorPage {
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error"),
        message: error.to_string(),
        asset_version: asset_version(),
    };
    let Ok(html) = page.render() else {
        return response;
    };
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    *response.body_mut() = Body::from(html);
    response
}
