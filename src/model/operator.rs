//! Operators: the people who may press the buttons, each with their own second factor, as
//! `operators.json` keeps them (`[auth] mode = "operators"`).
//!
//! Only what a file may hold is here: the TOTP secret (it must be read to check a code), hashes of the
//! backup codes and the password, the hash of an enrollment token. Never a code, a token or a password.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::regulation::Stamp;

/// The longest operator name.
pub const MAX_NAME_LEN: usize = 32;

/// A valid operator name: 1 to 32 of `a-z`, `0-9`, `.`, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OperatorName(String);

impl OperatorName {
    /// `text` if it is a valid name.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = (1..=MAX_NAME_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        valid.then(|| Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OperatorName {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text).ok_or_else(|| format!("{text:?} is not an operator name ([a-z0-9._-]{{1,32}})"))
    }
}

impl From<OperatorName> for String {
    fn from(name: OperatorName) -> String {
        name.0
    }
}

impl fmt::Display for OperatorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an operator may do beyond running actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs actions; manages operators on `/admin`.
    Admin,
    /// Runs actions.
    #[default]
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Self::Admin),
            "operator" => Some(Self::Operator),
            _ => None,
        }
    }
}

/// Which factor proved a person: written in the history as `"method"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Totp,
    BackupCode,
    EmailCode,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::BackupCode => "backup_code",
            Self::EmailCode => "email_code",
        }
    }
}

/// A pending enrollment: the link's token (its SHA-256 only) and the secret the person will scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// SHA-256 of the token in the link, hex.
    pub token_sha256: String,
    /// The secret the enrollment page shows, fixed for the token (base32).
    pub secret: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// Wrong codes entered on the enrollment page; at the limit the token is revoked.
    #[serde(default)]
    pub wrong: u32,
}

/// The backup codes of an operator: argon2id hashes (PHC strings), all with one salt so that a code is
/// hashed once and compared with each. A used code's hash is removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCodes {
    #[serde(default)]
    pub hashes: Vec<String>,
}

/// A code sent by email: its hash, its expiry; it is removed once used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailCode {
    /// SHA-256 of the operator's name and the code, hex. A short code's hash is no secret from whoever
    /// reads the file, but that reader holds every TOTP secret already; the code lives minutes and
    /// works once.
    pub hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

/// One operator, as `operators.json` keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The enrolled TOTP secret (160 bits, base32); none until enrollment is completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The newest TOTP step accepted from this operator: a code is accepted once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<u64>,
    #[serde(default)]
    pub backup_codes: BackupCodes,
    /// The password's argon2id hash (PHC string), when passwords are on and one was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<Enrollment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_code: Option<EmailCode>,
    /// When codes were mailed lately (the limit counts them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email_sends: Vec<Stamp>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub enrolled: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_sign_in: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_run: Option<OffsetDateTime>,
    /// Failed attempts since the last success or lock.
    #[serde(default)]
    pub failures: u32,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub locked_until: Option<OffsetDateTime>,
}

impl Operator {
    /// A new operator, not yet enrolled.
    pub fn new(role: Role, email: Option<String>, created: OffsetDateTime) -> Self {
        Self {
            role,
            email,
            secret: None,
            last_step: None,
            backup_codes: BackupCodes::default(),
            password: None,
            enrollment: None,
            email_code: None,
            email_sends: Vec::new(),
            created,
            enrolled: None,
            last_sign_in: None,
            last_run: None,
            failures: 0,
            locked_until: None,
        }
    }

    /// Whether the operator completed an enrollment (has a secret).
    pub fn is_enrolled(&self) -> bool {
        self.secret.is_some()
    }

    /// The end of the lock in force at `now`, if any.
    pub fn locked_at(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.locked_until.filter(|until| now < *until)
    }
}

/// Everything `operators.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operators {
    #[serde(default)]
    pub operators: BTreeMap<OperatorName, Operator>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lowercase_words() {
        for good in ["alice", "a", "bob.smith", "ops_1", "x-y", &"a".repeat(32)] {
            assert!(OperatorName::parse(good).is_some(), "{good}");
        }
        for bad in ["", "Alice", "a b", "a/b", "é", &"a".repeat(33), "a@b"] {
            assert!(OperatorName::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_file_with_a_bad_name_is_refused() {
        let error = serde_json::from_str::<Operators>(r#"{"operators": {"Bad Name": {}}}"#).unwrap_err();
        assert!(error.to_string().contains("not an operator name"), "{error}");
    }
}
