//! The TOTP secret: decoded from base32 as authenticator apps show it, never shown again.

use std::fmt;

use totp_rs::Secret;

/// The shortest secret accepted, in bytes (128 bits, RFC 4226 section 4).
pub const MIN_SECRET_BYTES: usize = 16;

/// The TOTP key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Decodes a base32 secret and refuses one shorter than 128 bits. The problem never quotes the secret.
pub fn parse_secret(text: &str) -> Result<SecretKey, String> {
    let bytes = decode_secret(text).ok_or("the secret is not base32 (letters A-Z and digits 2-7)")?;
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the secret is {} bits long; at least {} are required",
            bytes.len() * 8,
            MIN_SECRET_BYTES * 8
        ));
    }
    Ok(SecretKey(bytes))
}

/// Decodes a base32 secret as authenticator apps show it: case, spaces, dashes and padding are ignored.
pub fn decode_secret(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-' && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if cleaned.is_empty() {
        return None;
    }
    Secret::try_from_base32(&cleaned)
        .ok()
        .map(|secret| secret.as_bytes().to_vec())
}

/// A new random secret of 160 bits, base32-encoded.
pub fn generate_secret() -> String {
    Secret::generate().to_base32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_decode_as_apps_show_them() {
        let expected = b"12345678901234567890".to_vec();
        assert_eq!(
            decode_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            Some(expected.clone())
        );
        assert_eq!(
            decode_secret("gezd gnbv gy3t qojq gezd gnbv gy3t qojq"),
            Some(expected)
        );
        assert_eq!(decode_secret("not base32!"), None);
        assert_eq!(decode_secret(""), None);
        assert_eq!(decode_secret(&generate_secret()).map(|s| s.len()), Some(20));
    }

    #[test]
    fn short_secrets_are_refused_without_being_quoted() {
        let problem = parse_secret("JBSWY3DPEHPK3PXP").unwrap_err();
        assert!(problem.contains("80 bits"), "{problem}");
        assert!(!problem.contains("JBSWY3DPEHPK3PXP"));
    }
}
