//! The browser session, typed: handlers never touch raw session keys.
//!
//! It keeps the flash message a form post leaves for the page it redirects to, the CSRF token the page's
//! forms must send back, and until when the session is verified (a valid code was entered from it).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower_sessions::Session;

const FLASH_KEY: &str = "authrun.flash";
const CSRF_KEY: &str = "authrun.csrf";
const VERIFIED_KEY: &str = "authrun.verified_until";

/// A one-time message for the next page view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flash {
    pub kind: FlashKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashKind {
    Success,
    Error,
}

impl FlashKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
        }
    }
}

/// Typed access to one request's session.
pub struct BrowserSession(pub Session);

impl BrowserSession {
    /// Leaves `flash` for the next page view. A store failure only loses the message.
    pub async fn set_flash(&self, flash: Flash) {
        if let Err(error) = self.0.insert(FLASH_KEY, flash).await {
            tracing::warn!(%error, "the flash message could not be stored");
        }
    }

    /// The session's CSRF token, created on first use: 128 random bits, hex.
    pub async fn csrf_token(&self) -> Option<String> {
        if let Some(token) = self.existing_csrf_token().await {
            return Some(token);
        }
        let token: String = rand::random::<[u8; 16]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        match self.0.insert(CSRF_KEY, &token).await {
            Ok(()) => Some(token),
            Err(error) => {
                tracing::warn!(%error, "the CSRF token could not be stored");
                None
            }
        }
    }

    /// The token, if this session has one already.
    pub async fn existing_csrf_token(&self) -> Option<String> {
        self.0.get::<String>(CSRF_KEY).await.ok().flatten()
    }

    /// Marks the session as having entered a valid code, until `until`.
    pub async fn set_verified(&self, until: OffsetDateTime) {
        if let Err(error) = self.0.insert(VERIFIED_KEY, until.unix_timestamp()).await {
            tracing::warn!(%error, "the session's verification could not be stored");
        }
    }

    /// Until when the session is verified, if it ever was.
    pub async fn verified_until(&self) -> Option<OffsetDateTime> {
        let seconds = self.0.get::<i64>(VERIFIED_KEY).await.ok().flatten()?;
        OffsetDateTime::from_unix_timestamp(seconds).ok()
    }

    /// Takes the flash message, so a reload does not show it again.
    pub async fn take_flash(&self) -> Option<Flash> {
        self.0.remove::<Flash>(FLASH_KEY).await.ok().flatten()
    }
}
