//! The API token: random, shown once, and only its SHA-256 configured and compared (in constant time).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Compares the token's SHA-256 with the configured one (hex, any case), in constant time.
pub fn token_matches(expected_hex: Option<&str>, token: &str) -> bool {
    let Some(expected) = expected_hex else {
        return false;
    };
    let actual = sha256_hex(token);
    bool::from(actual.as_bytes().ct_eq(expected.to_ascii_lowercase().as_bytes()))
}

/// The lowercase hex SHA-256 of `text`: what `api_token_sha256` holds.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A new random API token (256 bits, hex).
pub fn generate_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_their_hash() {
        let token = generate_token();
        let hash = sha256_hex(&token);
        assert!(token_matches(Some(&hash), &token));
        assert!(token_matches(Some(&hash.to_uppercase()), &token));
        assert!(!token_matches(Some(&hash), "guess"));
        assert!(!token_matches(None, &token));
    }

    #[test]
    fn the_hash_is_the_well_known_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
