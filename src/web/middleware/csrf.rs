//! The CSRF token of the page's forms, kept in a cookie rather than on the server.
//!
//! A page that holds a form sets `authrun_csrf` (128 random bits, `HttpOnly`, `SameSite=Strict`) if the
//! browser has none, and writes the same value into the form; a post must send both and they must match
//! ("double submit"). Another site can neither read the cookie nor make the browser send it, so it cannot
//! forge the pair. Keeping the token out of the session means a page view costs the server no memory.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::cookie::{Cookie, SameSite};

use crate::config::PublicUrl;
use crate::web::middleware::origin::{self, Proof};

const COOKIE: &str = "authrun_csrf";

/// The token the browser sent in its cookie, if it looks like one of ours.
pub fn from_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == COOKIE)
        .map(|cookie| cookie.value().to_string())
        .filter(|value| is_token(value))
}

/// The token for a page: the browser's own, or a new one with the `Set-Cookie` that gives it.
pub fn for_page(headers: &HeaderMap, secure: bool) -> (String, Option<HeaderValue>) {
    if let Some(token) = from_cookie(headers) {
        return (token, None);
    }
    let token = hex::encode(rand::random::<[u8; 16]>());
    let cookie = Cookie::build((COOKIE, token.clone()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .build();
    (token, HeaderValue::from_str(&cookie.to_string()).ok())
}

/// A page, with the `Set-Cookie` that hands out its CSRF token when the browser had none.
pub fn with_cookie(page: impl IntoResponse, cookie: Option<HeaderValue>) -> Response {
    let mut response = page.into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Whether a state-changing request must be refused as cross-site: its headers, its cookie's token and
/// the `csrf` field of its form are judged together (see `origin::check`).
pub fn is_cross_site(headers: &HeaderMap, public_url: Option<&PublicUrl>, form_token: Option<&str>) -> bool {
    let cookie_token = from_cookie(headers);
    let proof = Proof {
        cookie_token: cookie_token.as_deref(),
        form_token,
    };
    origin::check(headers, public_url, &proof).is_err()
}

fn is_token(value: &str) -> bool {
    value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_reuses_the_browsers_token_or_issues_one() {
        let (token, cookie) = for_page(&HeaderMap::new(), true);
        let cookie = cookie.unwrap();
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.starts_with(&format!("authrun_csrf={token};")), "{cookie}");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Secure")
        );

        let mut headers = HeaderMap::new();
        let sent = format!("other=1; authrun_csrf={token}");
        headers.insert(header::COOKIE, HeaderValue::from_str(&sent).unwrap());
        assert_eq!(for_page(&headers, false), (token.clone(), None));
        assert_eq!(from_cookie(&headers), Some(token));
    }

    #[test]
    fn values_that_are_not_tokens_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("authrun_csrf=<script>"));
        assert_eq!(from_cookie(&headers), None);
    }
}
