//! What the audit log records: attempts and their outcomes, bans and pauses, unlocks, notifications.

use serde::Serialize;
use time::OffsetDateTime;

use crate::model::client::ClientKey;
use crate::model::regulation::RegulationEvent;

/// What became of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Started,
    Wrong,
    Malformed,
    Replayed,
    Running,
    CoolingDown,
    /// `max_parallel` runs of other actions were going.
    Busy,
    Banned,
    Paused,
    Forbidden,
    Unavailable,
    /// The operator is locked after too many failures.
    Locked,
    /// The operator proved themselves but may not run the action.
    NotAllowed,
    /// A sign-in (`/login`) that starts no run.
    SignedIn,
}

impl Outcome {
    /// Every outcome, in the order declared, so `ALL[outcome as usize]` is `outcome`.
    pub const ALL: [Self; 14] = [
        Self::Started,
        Self::Wrong,
        Self::Malformed,
        Self::Replayed,
        Self::Running,
        Self::CoolingDown,
        Self::Busy,
        Self::Banned,
        Self::Paused,
        Self::Forbidden,
        Self::Unavailable,
        Self::Locked,
        Self::NotAllowed,
        Self::SignedIn,
    ];

    /// The word the audit log writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Wrong => "wrong",
            Self::Malformed => "malformed",
            Self::Replayed => "replayed",
            Self::Running => "running",
            Self::CoolingDown => "cooling_down",
            Self::Busy => "busy",
            Self::Banned => "banned",
            Self::Paused => "paused",
            Self::Forbidden => "forbidden",
            Self::Unavailable => "unavailable",
            Self::Locked => "locked",
            Self::NotAllowed => "not_allowed",
            Self::SignedIn => "signed_in",
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent<'a> {
    /// A verification attempt (never its code).
    Attempt {
        client: &'a ClientKey,
        /// The id of the action it tried to start; none for a sign-in.
        action: Option<&'a str>,
        /// Operators mode: the name it gave (a valid name only; others are written as such).
        user: Option<&'a str>,
        outcome: Outcome,
        run_id: Option<u64>,
    },
    /// Something happened to an operator: `change` is "added", "enrolled", "locked", "unlocked",
    /// "reset", "removed", "role_admin", "role_operator", "backup_codes_regenerated",
    /// "password_changed"; `by` names the admin who did it (none: the command line or authrun itself).
    Operator {
        name: &'a str,
        change: &'a str,
        by: Option<&'a str>,
        until: Option<OffsetDateTime>,
    },
    /// Refusals of a blocked or cross-site client, counted rather than written one by one: `count`
    /// of them since `since`. `None` stands for the clients beyond those counted one by one.
    Refusals {
        client: Option<&'a ClientKey>,
        outcome: Outcome,
        count: u64,
        since: OffsetDateTime,
    },
    /// A ban or pause began or ended.
    Regulation(&'a RegulationEvent),
    /// An operator's `authrun unlock`: one client's ban, or (`None`) everything.
    Unlocked { client: Option<&'a ClientKey> },
    /// What became of one notification: a mail or a webhook POST about a run (`action`, `run_id`), or
    /// a message to an operator (neither).
    Notification {
        /// `email` or `webhook`.
        channel: &'a str,
        /// The address mailed, or the webhook's host (never its path or query).
        to: &'a str,
        action: Option<&'a str>,
        run_id: Option<u64>,
        result: Delivery,
        /// Tries made (0 when it was dropped).
        tries: u32,
        /// Why the last try failed.
        error: Option<&'a str>,
    },
}

/// What became of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Delivered,
    /// Every try failed.
    Failed,
    /// The queue was full (or closed at shutdown): never tried.
    Dropped,
}

impl Delivery {
    /// The word the logs write.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }
}

/// What the audit log counts since a moment, for the admin's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Attempts by outcome word (counted refusals by their count).
    pub attempts: std::collections::BTreeMap<String, u64>,
    /// Operators locked.
    pub lockouts: u64,
}

/// An event and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry<'a> {
    pub time: OffsetDateTime,
    pub event: AuditEvent<'a>,
}

/// When the audit log is rotated, and how many rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The size past which the log is renamed `<file>.1` (the older ones move up a number) and a new
    /// one begins.
    pub max_bytes: u64,
    /// Rotated files kept; the oldest beyond them is deleted.
    pub keep_files: usize,
}

impl Rotation {
    /// The most lines a database keeps of the audit log: about what the files hold, the current one
    /// and the rotated ones (a line is at least about 100 bytes).
    pub fn database_lines(&self) -> i64 {
        let bytes = self.max_bytes.saturating_mul(self.keep_files as u64 + 1);
        i64::try_from(bytes / 100).unwrap_or(i64::MAX).max(1)
    }
}

impl Default for Rotation {
    /// 10 MiB times 5: at about 120 bytes a line, the last 500,000 attempts.
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            keep_files: 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_keeps_about_what_the_rotated_files_hold() {
        // Six files of 10 MiB, lines of 100 bytes at least.
        assert_eq!(Rotation::default().database_lines(), 629_145);
        let tiny = Rotation {
            max_bytes: 50,
            keep_files: 1,
        };
        assert_eq!(tiny.database_lines(), 1);
    }

    #[test]
    fn all_lists_every_outcome_at_its_own_place() {
        assert_eq!(Outcome::ALL.len(), Outcome::SignedIn as usize + 1);
        for (index, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, index, "{}", outcome.as_str());
        }
    }
}
