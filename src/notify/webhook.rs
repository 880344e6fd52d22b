//! Webhooks: a JSON POST of the payload, signed with HMAC-SHA256 when the entry has a key.
//!
//! Redirects are not followed (the body and its signature go only where configured), the answer's
//! body is never read, and only the host is ever logged: a webhook's path or query often holds its token.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use sha2::Sha256;

use crate::config::WebhookTarget;

/// The header carrying the signature: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Authrun-Signature";

/// Posts payloads to webhooks.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    client: reqwest::Client,
}

/// Why a POST did not count as delivered.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("answered {0}")]
    Status(u16),
    /// The request failed (connection, TLS, timeout); the URL is left out of the text.
    #[error("{0}")]
    Request(String),
}

impl WebhookClient {
    /// A client whose every request gives up after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("authrun/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// POSTs `body` (JSON) to `target`; a 2xx answer is success.
    pub async fn post(&self, target: &WebhookTarget, body: &[u8]) -> Result<u16, WebhookError> {
        let mut request = self
            .client
            .post(target.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body.to_vec());
        if let Some(key) = &target.secret {
            request = request.header(SIGNATURE_HEADER, signature(key, body));
        }
        let response = request
            .send()
            .await
            .map_err(|error| WebhookError::Request(error.without_url().to_string()))?;
        let status = response.status();
        // The body is dropped unread.
        drop(response);
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(WebhookError::Status(status.as_u16()))
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body under key>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The webhook's host (and port when not the scheme's), as logs and the audit log name it.
pub fn host_of(target: &WebhookTarget) -> String {
    let host = target.url.host_str().unwrap_or_default();
    match target.url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_rfc_4231_hmac() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
