//! First start: the secret authrun generates when none is configured.
//!
//! The secret is created once, with owner-only permissions, in the state directory; later starts read it.
//! An existing file is never overwritten, and one that does not hold a usable secret stops start-up.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::config::{SecretKey, SecretSource, parse_secret};
use crate::fsio;
use crate::totp::generate_secret;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{path}: {problem}\n  fix: {fix}")]
    Secret {
        path: PathBuf,
        problem: String,
        fix: String,
    },
}

/// The secret to use, and whether it was generated just now (so the QR code should be shown).
pub fn resolve_secret(source: &SecretSource) -> Result<(SecretKey, bool), SetupError> {
    match source {
        SecretSource::Configured { key, .. } => Ok((key.clone(), false)),
        SecretSource::Generated(path) => load_or_create(path),
    }
}

fn load_or_create(path: &Path) -> Result<(SecretKey, bool), SetupError> {
    let fail = |problem: String| SetupError::Secret {
        path: path.to_path_buf(),
        problem,
        fix: "restore the file, or delete it to generate a new secret (then scan the new QR code)"
            .into(),
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return parse_secret(&text).map(|key| (key, false)).map_err(fail),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(fail(format!("cannot be read: {error}"))),
    }
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|error| fail(format!("its directory cannot be created: {error}")))?;
    }
    let secret = generate_secret();
    fsio::create_private(path, format!("{secret}\n").as_bytes())
        .map_err(|error| fail(format!("cannot be created: {error}")))?;
    let key = parse_secret(&secret).map_err(fail)?;
    Ok((key, true))
}
