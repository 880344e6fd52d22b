//! What a request asks for: HTML (a browser) or JSON (fetch, curl, scripts).

use axum::http::{HeaderMap, header};

fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .unwrap_or_default()
}

/// A browser's navigation or form post asks for HTML; `fetch`, curl and scripts do not.
pub fn wants_html(headers: &HeaderMap) -> bool {
    accept(headers).contains("text/html")
}

/// A client that asks for JSON and not for HTML.
pub fn wants_json(headers: &HeaderMap) -> bool {
    let accept = accept(headers);
    accept.contains("application/json") && !accept.contains("text/html")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn browsers_get_html_and_api_clients_json() {
        let browser = with_accept("text/html,application/xhtml+xml,*/*;q=0.8");
        assert!(wants_html(&browser) && !wants_json(&browser));
        let api = with_accept("application/json");
        assert!(!wants_html(&api) && wants_json(&api));
        assert!(!wants_html(&HeaderMap::new()) && !wants_json(&HeaderMap::new()));
    }
}
