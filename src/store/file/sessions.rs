//! The verified browser sessions in `<state_dir>/sessions.json` (owner-only, replaced atomically), so a
//! restart signs no operator out. Anonymous sessions (a flash message) are not kept: anybody can make
//! them, and losing one loses a message at most.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::file::atomic;
use crate::store::{KeptSession, SessionKeeper, StateFile, StoreError};

/// The sessions file, in error messages.
pub const SESSIONS_FILE: StateFile = StateFile {
    what: "sessions file",
    repair: "delete it: verified browsers then enter a code again",
};

/// The sessions file and what it held at start.
#[derive(Debug)]
pub struct FileSessions {
    path: Arc<PathBuf>,
    kept: Vec<KeptSession>,
    /// Orders the writes, so the newest list is the one that stays.
    writing: tokio::sync::Mutex<()>,
}

impl FileSessions {
    /// Reads the file (a missing one keeps nothing); one that cannot be parsed stops start-up.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let text = atomic::read_if_present(path).map_err(|error| error.about(SESSIONS_FILE, path))?;
        let kept = match text {
            None => Vec::new(),
            Some(text) => serde_json::from_str(&text).map_err(|error| SESSIONS_FILE.corrupt(path, &error))?,
        };
        Ok(Self {
            path: Arc::new(path.to_path_buf()),
            kept,
            writing: tokio::sync::Mutex::new(()),
        })
    }
}

#[async_trait::async_trait]
impl SessionKeeper for FileSessions {
    fn kept(&self) -> Vec<KeptSession> {
        self.kept.clone()
    }

    async fn keep(&self, sessions: Vec<KeptSession>) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || {
            let mut bytes = serde_json::to_vec(&sessions).unwrap_or_else(|_| b"[]".to_vec());
            bytes.push(b'\n');
            atomic::write_atomic(&path, &bytes).map_err(|source| SESSIONS_FILE.io(&path, "written", source))
        })
        .await
        .unwrap_or_else(|join| Err(SESSIONS_FILE.io(&self.path, "written", std::io::Error::other(join))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use tower_sessions::session::{Id, Record};

    #[tokio::test]
    async fn kept_sessions_survive_a_reopen_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let store = FileSessions::open(&path).unwrap();
        assert!(store.kept().is_empty());
        let session = KeptSession {
            record: Record {
                id: Id::default(),
                data: Default::default(),
                expiry_date: datetime!(2026-11-25 13:00 UTC),
            },
            expires: datetime!(2026-11-25 13:00 UTC),
        };
        store.keep(vec![session.clone()]).await.unwrap();
        assert_eq!(FileSessions::open(&path).unwrap().kept(), [session]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_sessions_file_that_cannot_be_parsed_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        std::fs::write(&path, "[{").unwrap();
        assert!(FileSessions::open(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[{");
    }
}
