//! The browser session, typed: handlers never touch raw session keys.
//!
//! The only thing kept for now is the flash message a form post leaves for the page it redirects to.

use serde::{Deserialize, Serialize};
use tower_sessions::Session;

const FLASH_KEY: &str = "authrun.flash";

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

    /// Takes the flash message, so a reload does not show it again.
    pub async fn take_flash(&self) -> Option<Flash> {
        self.0.remove::<Flash>(FLASH_KEY).await.ok().flatten()
    }
}
