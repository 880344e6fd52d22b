//! Refusing cross-site form posts (CSRF).
//!
//! A browser's post to `/verify` passes when it carries the page's CSRF token, or comes with an `Origin`
//! (or, without one, a `Referer`) of authrun's own origin. A foreign `Origin` is refused
//! whatever else the request carries. Requests with no `Origin`, no `Referer` and no session cookie are
//! plain API clients (curl, scripts) and pass, as they did with the original.

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

use crate::config::PublicUrl;

/// Why a post was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossSite {
    ForeignOrigin,
    MissingToken,
}

/// What the request carried, besides its headers.
pub struct Proof<'a> {
    /// The token of the `authrun_csrf` cookie, if the browser sent one.
    pub cookie_token: Option<&'a str>,
    /// The `csrf` form field.
    pub form_token: Option<&'a str>,
}

/// Decides whether a state-changing request may proceed.
pub fn check(
    headers: &HeaderMap,
    public_url: Option<&PublicUrl>,
    proof: &Proof<'_>,
) -> Result<(), CrossSite> {
    let own = |origin: &str| is_own_origin(origin, headers, public_url);
    // `Origin: null` says nothing: browsers send it for the page's own posts under
    // `Referrer-Policy: no-referrer`, as for sandboxed documents. The checks below decide.
    if let Some(origin) = header_text(headers, header::ORIGIN).filter(|origin| *origin != "null") {
        return if own(origin) {
            Ok(())
        } else {
            Err(CrossSite::ForeignOrigin)
        };
    }
    if header_text(headers, "sec-fetch-site") == Some("cross-site") {
        return Err(CrossSite::ForeignOrigin);
    }
    if let Some(referer) = header_text(headers, header::REFERER) {
        return if own(origin_of(referer)) {
            Ok(())
        } else {
            Err(CrossSite::ForeignOrigin)
        };
    }
    if tokens_match(proof) {
        return Ok(());
    }
    if headers.contains_key(header::COOKIE) {
        // A browser with a session but no proof of coming from our page.
        return Err(CrossSite::MissingToken);
    }
    Ok(())
}

fn tokens_match(proof: &Proof<'_>) -> bool {
    match (proof.cookie_token, proof.form_token) {
        (Some(expected), Some(given)) => bool::from(expected.as_bytes().ct_eq(given.as_bytes())),
        _ => false,
    }
}

fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// `https://host:port/path?q` -> `https://host:port`
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

/// Our origin is the configured public URL's; without one, any scheme with the request's own `Host`.
fn is_own_origin(origin: &str, headers: &HeaderMap, public_url: Option<&PublicUrl>) -> bool {
    let origin = origin.to_ascii_lowercase();
    match public_url {
        Some(url) => origin == url.origin,
        None => {
            let host = header_text(headers, header::HOST).map(str::to_ascii_lowercase);
            let authority = origin.split_once("://").map(|(_, rest)| rest);
            host.is_some() && authority == host.as_deref()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    const NO_PROOF: Proof<'static> = Proof {
        cookie_token: None,
        form_token: None,
    };

    #[test]
    fn api_clients_without_origin_or_cookie_pass() {
        assert_eq!(
            check(&headers(&[("host", "deploy.local")]), None, &NO_PROOF),
            Ok(())
        );
    }

    #[test]
    fn a_foreign_origin_is_refused_even_with_a_token() {
        let h = headers(&[("host", "deploy.local"), ("origin", "https://evil.example")]);
        let proof = Proof {
            cookie_token: Some("t"),
            form_token: Some("t"),
        };
        assert_eq!(check(&h, None, &proof), Err(CrossSite::ForeignOrigin));
    }

    #[test]
    fn our_own_origin_passes_by_host_or_public_url() {
        let h = headers(&[
            ("host", "deploy.local:5000"),
            ("origin", "http://deploy.local:5000"),
        ]);
        assert_eq!(check(&h, None, &NO_PROOF), Ok(()));
        let public = PublicUrl {
            origin: "https://deploy.example.com".into(),
            https: true,
        };
        let behind_proxy = headers(&[
            ("host", "127.0.0.1:5000"),
            ("origin", "https://deploy.example.com"),
        ]);
        assert_eq!(check(&behind_proxy, Some(&public), &NO_PROOF), Ok(()));
        assert_eq!(check(&h, Some(&public), &NO_PROOF), Err(CrossSite::ForeignOrigin));
    }

    #[test]
    fn a_null_origin_is_decided_by_the_token() {
        let cookie = headers(&[
            ("host", "deploy.local"),
            ("origin", "null"),
            ("cookie", "authrun_csrf=t"),
        ]);
        assert_eq!(check(&cookie, None, &NO_PROOF), Err(CrossSite::MissingToken));
        let proof = Proof {
            cookie_token: Some("t"),
            form_token: Some("t"),
        };
        assert_eq!(check(&cookie, None, &proof), Ok(()));
        let cross = headers(&[("origin", "null"), ("sec-fetch-site", "cross-site")]);
        assert_eq!(check(&cross, None, &proof), Err(CrossSite::ForeignOrigin));
    }

    #[test]
    fn a_referer_is_judged_by_its_origin() {
        let ours = headers(&[("host", "deploy.local"), ("referer", "http://deploy.local/?x=1")]);
        assert_eq!(check(&ours, None, &NO_PROOF), Ok(()));
        let theirs = headers(&[
            ("host", "deploy.local"),
            ("referer", "http://deploy.local.evil.example/"),
        ]);
        assert_eq!(check(&theirs, None, &NO_PROOF), Err(CrossSite::ForeignOrigin));
    }

    #[test]
    fn a_browser_session_needs_the_token() {
        let h = headers(&[("host", "deploy.local"), ("cookie", "authrun_session=abc")]);
        assert_eq!(check(&h, None, &NO_PROOF), Err(CrossSite::MissingToken));
        let wrong = Proof {
            cookie_token: Some("right"),
            form_token: Some("wrong"),
        };
        assert_eq!(check(&h, None, &wrong), Err(CrossSite::MissingToken));
        let right = Proof {
            cookie_token: Some("right"),
            form_token: Some("right"),
        };
        assert_eq!(check(&h, None, &right), Ok(()));
    }
}
