//! The regulation state that survives a restart: bans, the pause, and the recent failures from anywhere.
//! The policy that changes it lives in `auth::regulation`; the stores keep it.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::client::ClientKey;

/// A time written as RFC 3339 in the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Stamp(#[serde(with = "time::serde::rfc3339")] pub OffsetDateTime);

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegulationState {
    /// Banned clients and the end of each ban.
    #[serde(default)]
    pub bans: BTreeMap<ClientKey, Stamp>,
    /// The end of the pause of code checking for everyone, if one is in force.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub paused_until: Option<OffsetDateTime>,
    /// The doubling: the next pause lasts `global_pause * 2^pauses`, less one doubling for each
    /// `global_pause_max` since `last_pause_end` (see `auth::regulation`).
    #[serde(default)]
    pub pauses: u32,
    /// The end of the latest pause, also after it is over.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_pause_end: Option<OffsetDateTime>,
    /// Failures from anywhere within the global window.
    #[serde(default)]
    pub global_failures: VecDeque<Stamp>,
    /// Each client's failures within its window, where instances share the state (a database); one
    /// instance counts them in memory, and the state file never holds them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub client_failures: BTreeMap<ClientKey, VecDeque<Stamp>>,
}

/// A change worth an audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegulationEvent {
    BanStarted {
        client: ClientKey,
        until: OffsetDateTime,
    },
    BanEnded {
        client: ClientKey,
    },
    PauseStarted {
        until: OffsetDateTime,
        pause_number: u32,
    },
    PauseEnded,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_state_file_keeps_its_shape() {
        let client = ClientKey::of([192, 0, 2, 1].into());
        let state = RegulationState {
            bans: BTreeMap::from([(client, Stamp(datetime!(2026-11-25 12:15:00 UTC)))]),
            paused_until: Some(datetime!(2026-11-25 13:00:00 UTC)),
            pauses: 1,
            last_pause_end: Some(datetime!(2026-11-25 13:00:00 UTC)),
            global_failures: VecDeque::from([Stamp(datetime!(2026-11-25 12:00:00 UTC))]),
            client_failures: BTreeMap::new(),
        };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(
            json,
            r#"{"bans":{"192.0.2.1":"2026-11-25T12:15:00Z"},"paused_until":"2026-11-25T13:00:00Z","pauses":1,"last_pause_end":"2026-11-25T13:00:00Z","global_failures":["2026-11-25T12:00:00Z"]}"#
        );
        assert_eq!(serde_json::from_str::<RegulationState>(&json).unwrap(), state);
    }
}
