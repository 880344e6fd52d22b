//! An action's id: the name of one configured script in URLs (`/actions/{id}`) and in the history
//! (`"action": "<id>"`).
//!
//! Parsed once, so every id authrun holds is valid: 1 to 32 of `a-z`, `0-9` and `-`, which needs no
//! escaping in a URL, a file name or a log line.

use std::fmt;

/// The id of the action that `[action]` + `[script]` (one action) configure; history entries written
/// before actions had ids belong to the first action.
pub const DEFAULT_ID: &str = "deploy";

/// The longest id.
pub const MAX_LEN: usize = 32;

/// A valid action id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionId(String);

impl ActionId {
    /// `text` if it is 1 to 32 of `a-z`, `0-9` and `-`.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = (1..=MAX_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        valid.then(|| Self(text.to_string()))
    }

    /// The id of the single action of `[action]` + `[script]`.
    pub fn default_id() -> Self {
        Self(DEFAULT_ID.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_lowercase_words() {
        for good in ["deploy", "restart-cache", "a", "x1", &"a".repeat(32)] {
            assert!(ActionId::parse(good).is_some(), "{good}");
        }
        for bad in ["", "Deploy", "a b", "a_b", "a/b", "é", &"a".repeat(33), "../x"] {
            assert!(ActionId::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(ActionId::default_id().as_str(), DEFAULT_ID);
    }
}
