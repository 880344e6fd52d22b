//! A run: its record in the history and how it ended.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::operator::Method;

/// How a run ended, or that it has not yet. The texts are those of the original history file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    #[serde(rename = "Deploying")]
    Deploying,
    #[serde(rename = "Deploy succeeded")]
    Succeeded,
    #[serde(rename = "Deploy failed")]
    Failed,
    #[serde(rename = "Timed out")]
    TimedOut,
    /// authrun stopped (crash or shutdown) while the run was going.
    #[serde(rename = "Interrupted")]
    Interrupted,
    /// Someone cancelled the run.
    #[serde(rename = "Cancelled")]
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploying => "Deploying",
            Self::Succeeded => "Deploy succeeded",
            Self::Failed => "Deploy failed",
            Self::TimedOut => "Timed out",
            Self::Interrupted => "Interrupted",
            Self::Cancelled => "Cancelled",
        }
    }

    /// A short word for styling and scripts: `running`, `succeeded`, `failed`, ...
    pub fn kind(self) -> &'static str {
        match self {
            Self::Deploying => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed-out",
            Self::Interrupted => "interrupted",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who started a run, as the history says: written as the operator's name, or `null` for the shared
/// secret; left out for runs recorded before authrun knew operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Who {
    #[default]
    Unknown,
    SharedSecret,
    Operator(String),
}

impl Who {
    fn is_unknown(&self) -> bool {
        *self == Self::Unknown
    }

    /// The operator's name, if an operator started the run.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Operator(name) => Some(name),
            _ => None,
        }
    }
}

impl Serialize for Who {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Operator(name) => serializer.serialize_some(name),
            _ => serializer.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for Who {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Present: a name or null. Absent fields never get here (`default`).
        Ok(Option::<String>::deserialize(deserializer)?.map_or(Self::SharedSecret, Self::Operator))
    }
}

/// One run. `time` and `status` are the original fields; the others were added by authrun and are absent
/// from entries written by the original.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// When the run started, ISO-8601 in UTC.
    #[serde(with = "crate::model::time::iso")]
    pub time: OffsetDateTime,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The id of the action the run belongs to; absent from entries written before authrun had several
    /// actions, which belong to the first action (see [`RunRecord::belongs_to`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Who started the run: an operator's name, or `null` when the shared secret did (nobody in
    /// particular). Absent from entries written before authrun knew operators.
    #[serde(default, skip_serializing_if = "Who::is_unknown")]
    pub by: Who,
    /// Which factor proved them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::model::time::iso::option"
    )]
    pub finished: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The TOTP time step of the code that started the run; it keeps a used code refused after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_step: Option<u64>,
    /// The script's log file, relative to the log directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The script's process id, which is also its process group's; used to find what a crash left running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How the canceller proved itself ("a verified session", "API token"); public, so never an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::model::time::iso::option"
    )]
    pub cancelled_at: Option<OffsetDateTime>,
    /// The signal that ended the script, when no exit code did (a cancel, a timeout, a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why the run could not start or was stopped, for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunRecord {
    /// A run that starts now.
    pub fn started(id: u64, time: OffsetDateTime, totp_step: u64) -> Self {
        Self {
            time,
            status: RunStatus::Deploying,
            id: Some(id),
            action: None,
            by: Who::Unknown,
            method: None,
            finished: None,
            exit_code: None,
            duration_ms: None,
            totp_step: Some(totp_step),
            log: None,
            pid: None,
            cancelled_by: None,
            cancelled_at: None,
            signal: None,
            error: None,
        }
    }

    /// Whether the run belongs to the action `id`; `first` is the id of the first configured action, which
    /// entries without an action belong to.
    pub fn belongs_to(&self, id: &str, first: &str) -> bool {
        self.action.as_deref().unwrap_or(first) == id
    }

    /// Marks the run as ended at `at`.
    pub fn finish(&mut self, status: RunStatus, at: OffsetDateTime, exit_code: Option<i32>) {
        self.status = status;
        self.finished = Some(at);
        self.exit_code = exit_code;
        let millis = (at - self.time).whole_milliseconds().max(0);
        self.duration_ms = Some(u64::try_from(millis).unwrap_or(u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn writes_times_as_utc_iso_8601_and_omits_absent_fields() {
        let record = RunRecord::started(7, datetime!(2026-11-25 19:43:36 UTC), 42);
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"time":"2026-11-25T19:43:36Z","status":"Deploying","id":7,"totp_step":42}"#
        );
    }

    #[test]
    fn finishing_records_duration() {
        let mut record = RunRecord::started(1, datetime!(2026-11-25 19:00:00 UTC), 1);
        record.finish(
            RunStatus::Succeeded,
            datetime!(2026-11-25 19:01:12.5 UTC),
            Some(0),
        );
        assert_eq!(record.duration_ms, Some(72_500));
        assert_eq!(record.exit_code, Some(0));
    }
}
