//! How times are written and added: RFC 3339 in UTC everywhere a time leaves authrun.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime};

/// `time + duration`, or the last representable time when that is past it (a history written by a
/// clock far in the future must not break every request).
pub fn later(time: OffsetDateTime, duration: Duration) -> OffsetDateTime {
    time::Duration::try_from(duration)
        .ok()
        .and_then(|duration| time.checked_add(duration))
        .unwrap_or_else(|| PrimitiveDateTime::MAX.assume_utc())
}

/// RFC 3339 in UTC, as every answer and file writes times.
pub fn format_time(time: OffsetDateTime) -> String {
    let utc = time.checked_to_offset(time::UtcOffset::UTC).unwrap_or(time);
    utc.format(&Rfc3339)
        .unwrap_or_else(|_| utc.unix_timestamp().to_string())
}

/// Reads RFC 3339, and also ISO-8601 without an offset (as the original wrote its history, from Python's
/// `utcnow().isoformat()`), taken as UTC.
pub fn parse_lenient(text: &str) -> Option<OffsetDateTime> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        // A time that is valid in its own offset but not in UTC (past year 9999) is not a time.
        return time.checked_to_offset(time::UtcOffset::UTC);
    }
    let naive = time::macros::format_description!(
        version = 2,
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(text, &naive)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// serde for history times: written with [`format_time`], read with [`parse_lenient`].
pub mod iso {
    use super::*;

    pub fn serialize<S: Serializer>(time: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_time(*time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_lenient(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not an ISO-8601 time")))
    }

    /// The same for optional times.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            time: &Option<OffsetDateTime>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match time {
                Some(time) => super::serialize(time, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            let text: Option<String> = Option::deserialize(deserializer)?;
            text.map(|text| {
                parse_lenient(&text)
                    .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not an ISO-8601 time")))
            })
            .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn reads_times_without_an_offset_as_utc() {
        assert_eq!(
            parse_lenient("2024-05-01T12:00:00.123456"),
            Some(datetime!(2024-05-01 12:00:00.123456 UTC))
        );
        assert_eq!(
            format_time(datetime!(2026-11-25 19:43:36 UTC)),
            "2026-11-25T19:43:36Z"
        );
    }

    #[test]
    fn adding_past_the_end_of_time_saturates() {
        let end = later(datetime!(9999-12-31 23:00:00 UTC), Duration::from_secs(7200));
        assert_eq!(end, PrimitiveDateTime::MAX.assume_utc());
    }
}
