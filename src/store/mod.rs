//! Where authrun keeps what must survive a restart: the history of runs, the regulation state and the
//! audit log, each behind a small trait so that another store (a database) can stand in for the files.
//!
//! The traits speak the model's language only; `file` holds the embedded default, JSON and JSON-lines
//! files written atomically; `postgres` a database several instances share.

pub mod file;
pub mod postgres;
pub mod run_output;
pub mod session_table;
pub mod turn;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::audit::{AuditEntry, Tally};
use crate::model::operator::Operators;
use crate::model::regulation::RegulationState;
use crate::model::run::RunRecord;

/// Which state file an error is about, and how to repair it when it cannot be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateFile {
    /// "history file", "regulation state".
    pub what: &'static str,
    /// The fix for a file that cannot be parsed.
    pub repair: &'static str,
}

/// Why a state file (the history, the regulation state) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{} {path}: cannot be parsed at line {line}, column {column}: {reason}\n  fix: {}", kind.what, kind.repair)]
    Corrupt {
        kind: StateFile,
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error(
        "{} {path}: is {found}, not a regular file\n  fix: move it aside; authrun keeps this state in a regular file",
        kind.what
    )]
    NotAFile {
        kind: StateFile,
        path: PathBuf,
        found: &'static str,
    },
    /// The change was refused by the rules (the command line's `operator` commands): why.
    #[error("{0}")]
    Refused(String),
    /// What a change needed was changed by another request meanwhile (a code spent, an operator removed).
    #[error("the state changed meanwhile; nothing was done")]
    Conflict,
    /// The database could not be reached or refused the work. The reason is the server's message,
    /// which never holds the connection URL.
    #[error(
        "the database could not be {action}: {reason}\n  fix: check that PostgreSQL is running and that [store] url names it"
    )]
    Database { action: &'static str, reason: String },
    #[error(
        "{} {path}: cannot be {action}: {source}\n  fix: check that the path and its directory are writable",
        kind.what
    )]
    Io {
        kind: StateFile,
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// Whether the database could not be reached or refused the work (as opposed to a refusal by the
    /// rules, or a file's fault): what a client is told as `store_unavailable`.
    pub fn is_database(&self) -> bool {
        matches!(self, Self::Database { .. })
    }
}

impl StateFile {
    /// `path` holds JSON that `error` could not read; the error names the position.
    pub fn corrupt(self, path: &Path, error: &serde_json::Error) -> StoreError {
        StoreError::Corrupt {
            kind: self,
            path: path.to_path_buf(),
            line: error.line(),
            column: error.column(),
            reason: error.to_string(),
        }
    }

    /// `path` could not be read, written, ... (`action`).
    pub fn io(self, path: &Path, action: &'static str, source: io::Error) -> StoreError {
        StoreError::Io {
            kind: self,
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}

/// What [`RunStore::claim`] is asked to make used: a code's step and, for a run, the run.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The id this instance would give the run (0: a sign-in, no run).
    pub id: u64,
    pub totp_step: u64,
    pub run: Option<RunClaim<'a>>,
}

/// The run a [`Claim`] starts.
#[derive(Debug, Clone, Copy)]
pub struct RunClaim<'a> {
    /// The action's id.
    pub action: &'a str,
    pub started: time::OffsetDateTime,
    pub cooldown: std::time::Duration,
}

/// Why a claim was not granted.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another instance got there first: the step, or the action, is taken.
    #[error("taken by another instance")]
    Taken(Taken),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What another instance took first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The code's step (or a later one) was used.
    Code,
    /// A run of the action is going, since then.
    Running { since: time::OffsetDateTime },
    /// The action started a run too recently.
    CoolingDown { until: time::OffsetDateTime },
}

/// The history of runs, oldest first.
#[async_trait::async_trait]
pub trait RunStore: Send + Sync + fmt::Debug {
    /// Every run, oldest first. Cheap: the list is shared, not copied.
    fn snapshot(&self) -> Arc<Vec<RunRecord>>;

    /// Counts the changes of the history: equal versions, equal runs. Caches of views are keyed on it.
    fn version(&self) -> u64;

    /// The runs found going when the store was opened (authrun had stopped during them), as they were
    /// found; the store has since marked them "Interrupted".
    fn interrupted(&self) -> &[RunRecord];

    /// Adds a run, durably: on error the history is as it was, in memory too.
    async fn append(&self, record: RunRecord) -> Result<(), StoreError>;

    /// Replaces the run with `record`'s id (or adds it, if retention already dropped it). The change is
    /// kept even when it cannot be written (the run did change); a later write takes it to the store.
    async fn update(&self, record: RunRecord) -> Result<(), StoreError>;

    /// Makes run `id` and the code step `totp_step` used, durably, before anything else refers to them,
    /// so neither is given again, also after a restart and whether or not the run is ever recorded. On
    /// error nothing was kept.
    async fn reserve(&self, id: u64, totp_step: u64) -> Result<(), StoreError>;

    /// [`RunStore::reserve`] where several instances share the store: the store itself decides, in one
    /// atomic step, whether the code's step is still unused and (for a run) whether the action is free
    /// and out of its cooldown, and gives the run its id, which may differ from `claim.id`. A store of
    /// one instance reserves what the gate decided.
    async fn claim(&self, claim: Claim<'_>) -> Result<u64, ClaimError> {
        self.reserve(claim.id, claim.totp_step).await?;
        Ok(claim.id)
    }

    /// Whether other instances share this store: their runs then show in the history without this
    /// instance's gate knowing of them.
    fn shared(&self) -> bool {
        false
    }

    /// Forgets run `id`, claimed but given up before it was recorded, so its action is free again. The
    /// code stays used.
    async fn withdraw(&self, _id: u64) {}

    /// Run `id`, if the history still holds it.
    fn record(&self, id: u64) -> Option<RunRecord> {
        self.snapshot()
            .iter()
            .rev()
            .find(|record| record.id == Some(id))
            .cloned()
    }

    /// The newest run, if any.
    fn last(&self) -> Option<RunRecord> {
        self.snapshot().last().cloned()
    }

    /// The highest id given (or reserved) so far.
    fn last_id(&self) -> u64 {
        self.snapshot().iter().filter_map(|r| r.id).max().unwrap_or(0)
    }

    /// The newest TOTP step that started (or reserved) a run.
    fn last_totp_step(&self) -> Option<u64> {
        self.snapshot().iter().filter_map(|r| r.totp_step).max()
    }
}

/// The regulation state (bans, the pause, recent failures from anywhere).
#[async_trait::async_trait]
pub trait RegulationStore: Send + Sync + fmt::Debug {
    /// Looks at the state as this instance last saw it.
    fn read(&self, look: &mut (dyn for<'s> FnMut(&'s RegulationState) + Send));

    /// Changes the state under the store's lock, after picking up changes made elsewhere (`authrun
    /// unlock`). `change` returns whether it changed anything; only then is the state saved. The change
    /// stays in memory even when the file cannot be read or saved.
    async fn transact(
        &self,
        change: &mut (dyn for<'s> FnMut(&'s mut RegulationState) -> bool + Send),
    ) -> Result<(), StoreError>;

    /// Holds the turn of judging attempts for every instance sharing the state, until the answer is
    /// dropped, and picks up the state as the store holds it now, so the attempt is judged on what the
    /// others counted. A store of one instance holds nothing: the guard's own lock is the turn.
    async fn hold_turn(&self) -> Result<Option<turn::TurnHold>, StoreError> {
        Ok(None)
    }

    /// Whether several instances share the state: each client's failures are then counted in it.
    fn shared(&self) -> bool {
        false
    }
}

/// A browser session worth keeping across a restart: a verified one (it took a valid code). It holds the
/// session's id, which is as good as its cookie: the store keeps it owner-only.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeptSession {
    pub record: tower_sessions::session::Record,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: time::OffsetDateTime,
}

/// The verified browser sessions, so that a restart signs no operator out.
#[async_trait::async_trait]
pub trait SessionKeeper: Send + Sync + fmt::Debug {
    /// The sessions kept when the store was opened.
    fn kept(&self) -> Vec<KeptSession>;

    /// Replaces what is kept with `sessions`.
    async fn keep(&self, sessions: Vec<KeptSession>) -> Result<(), StoreError>;
}

/// The audit log cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: cannot be written: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Where audit lines go. A line that cannot be written is an error the caller must act on: authrun lets
/// no attempt pass unaudited.
#[async_trait::async_trait]
pub trait AuditSink: Send + Sync + fmt::Debug {
    /// Makes sure the lines of one attempt can be written. Called before its code is checked, so that a
    /// log that cannot take them (a full disk) refuses the attempt unchecked.
    async fn reserve(&self) -> Result<(), AuditError>;

    async fn record(&self, entry: &AuditEntry<'_>) -> Result<(), AuditError>;

    /// Counts the attempts by outcome and the operators' locks written since `since`.
    async fn tally(&self, since: time::OffsetDateTime) -> Result<Tally, StoreError>;
}

/// The operators (`[auth] mode = "operators"`): who they are, their factors' secrets and hashes, their
/// failures and locks.
#[async_trait::async_trait]
pub trait OperatorStore: Send + Sync + fmt::Debug {
    /// Looks at the operators as this instance last saw them.
    fn read(&self, look: &mut (dyn for<'s> FnMut(&'s Operators) + Send));

    /// Changes the operators under the store's lock, after picking up changes made elsewhere (the command
    /// line). `change` returns whether it changed anything; only then is the change saved. Durable: on
    /// error nothing changed, in memory either, so a code is never accepted whose use was not kept.
    async fn transact(
        &self,
        change: &mut (dyn for<'s> FnMut(&'s mut Operators) -> bool + Send),
    ) -> Result<(), StoreError>;

    /// Reads the operators again where other instances change them, so an attempt judged in its turn
    /// sees a lock another instance just set. A store of one instance has nothing to read.
    async fn refresh(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
