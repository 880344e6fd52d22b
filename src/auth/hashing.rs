//! Slow hashes (argon2id) for what a person keeps: passwords and backup codes.
//!
//! Each hash costs OWASP's minimum (19 MiB of memory, 2 passes, 1 lane), on the blocking pool, and at most
//! [`CONCURRENT`] are computed at once: a flood of sign-ins waits for a permit (an async wait, no thread,
//! no memory beyond the request) instead of taking every core and hundreds of megabytes.
//!
//! An operator's backup codes share one salt, so checking a code costs one hash whatever the number of
//! codes: the candidate is hashed once with that salt and compared, in constant time, with every stored
//! hash.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// Hashes computed at once, at most.
pub const CONCURRENT: usize = 2;

/// OWASP's minimum for argon2id: 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// The longest secret hashed: longer input is refused before any work.
pub const MAX_INPUT: usize = 1024;

/// A hash could not be made (a broken parameter, a task that panicked).
#[derive(Debug, thiserror::Error)]
#[error("a hash could not be computed: {0}")]
pub struct HashError(String);

/// Computes argon2id hashes, a bounded number at once.
#[derive(Debug)]
pub struct Hasher {
    permits: Semaphore,
    /// A hash of nothing anyone knows: checked against when a name is unknown, so that the answer takes
    /// the same work.
    decoy: tokio::sync::OnceCell<String>,
}

impl Default for Hasher {
    fn default() -> Self {
        Self {
            permits: Semaphore::new(CONCURRENT),
            decoy: tokio::sync::OnceCell::new(),
        }
    }
}

fn argon2() -> Argon2<'static> {
    // The constants are valid parameters; `default` would be a weaker, different cost.
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn new_salt() -> Result<SaltString, HashError> {
    SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|error| HashError(error.to_string()))
}

impl Hasher {
    /// Runs `work` on the blocking pool once a permit is free.
    async fn bounded<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|error| HashError(error.to_string()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|error| HashError(error.to_string()))?
    }

    /// A new salted hash of `secret`, as a PHC string.
    pub async fn hash(&self, secret: String) -> Result<String, HashError> {
        self.bounded(move || {
            let salt = new_salt()?;
            argon2()
                .hash_password(secret.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|error| HashError(error.to_string()))
        })
        .await
    }

    /// Hashes of every secret, all with one new salt (an operator's backup codes).
    pub async fn hash_all(&self, secrets: Vec<String>) -> Result<Vec<String>, HashError> {
        self.bounded(move || {
            let salt = new_salt()?;
            let argon2 = argon2();
            secrets
                .iter()
                .map(|secret| {
                    argon2
                        .hash_password(secret.as_bytes(), &salt)
                        .map(|hash| hash.to_string())
                        .map_err(|error| HashError(error.to_string()))
                })
                .collect()
        })
        .await
    }

    /// Whether `secret` matches the PHC string `stored`; with `None` (an unknown name, no password set)
    /// the same work is done against a decoy and the answer is no.
    pub async fn verify(&self, secret: String, stored: Option<String>) -> bool {
        let (stored, real) = match stored {
            Some(stored) => (stored, true),
            None => match self.decoy().await {
                Some(decoy) => (decoy, false),
                None => return false,
            },
        };
        let matched = self
            .bounded(move || {
                let hash = PasswordHash::new(&stored).map_err(|error| HashError(error.to_string()))?;
                Ok(argon2().verify_password(secret.as_bytes(), &hash).is_ok())
            })
            .await;
        real && matched.unwrap_or(false)
    }

    /// Which of `stored` (hashes sharing one salt) `secret` matches, hashing it once. With no stored
    /// hashes the same work is done against the decoy and none matches.
    pub async fn find(&self, secret: String, stored: Vec<String>) -> Option<usize> {
        let (stored, real) = if stored.is_empty() {
            (vec![self.decoy().await?], false)
        } else {
            (stored, true)
        };
        let found = self
            .bounded(move || {
                let first = PasswordHash::new(&stored[0]).map_err(|error| HashError(error.to_string()))?;
                let salt = first
                    .salt
                    .ok_or_else(|| HashError("a stored hash has no salt".into()))?;
                let candidate = argon2()
                    .hash_password(secret.as_bytes(), salt)
                    .map_err(|error| HashError(error.to_string()))?;
                let candidate = candidate
                    .hash
                    .map(|output| output.as_bytes().to_vec())
                    .unwrap_or_default();
                let mut found = None;
                for (index, phc) in stored.iter().enumerate() {
                    let Ok(hash) = PasswordHash::new(phc) else {
                        continue;
                    };
                    let expected = hash
                        .hash
                        .map(|output| output.as_bytes().to_vec())
                        .unwrap_or_default();
                    if bool::from(expected.ct_eq(&candidate)) && !expected.is_empty() {
                        found = Some(index);
                    }
                }
                Ok(found)
            })
            .await;
        found.ok().flatten().filter(|_| real)
    }

    async fn decoy(&self) -> Option<String> {
        self.decoy
            .get_or_try_init(|| self.hash(crate::auth::token::generate_token()))
            .await
            .ok()
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_matches_its_hash_only() {
        let hasher = Hasher::default();
        let stored = hasher.hash("correct horse battery".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(!stored.contains("correct"));
        assert!(
            hasher
                .verify("correct horse battery".into(), Some(stored.clone()))
                .await
        );
        assert!(!hasher.verify("correct horse batterz".into(), Some(stored)).await);
        assert!(!hasher.verify("correct horse battery".into(), None).await);
    }

    #[tokio::test]
    async fn a_code_is_found_among_hashes_with_one_salt() {
        let hasher = Hasher::default();
        let codes: Vec<String> = ["aaaa", "bbbb", "cccc"].map(String::from).to_vec();
        let stored = hasher.hash_all(codes).await.unwrap();
        assert_eq!(hasher.find("bbbb".into(), stored.clone()).await, Some(1));
        assert_eq!(hasher.find("dddd".into(), stored).await, None);
        assert_eq!(hasher.find("aaaa".into(), Vec::new()).await, None);
    }
}
