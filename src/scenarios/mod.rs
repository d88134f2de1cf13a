//! The five built-in scenarios (../shared/SCENARIOS.md), each a topology
//! written with the public DSL only, registered by name.

pub mod clickstream_parquet;
pub mod emoji_stream;
pub mod generators;
pub mod hashtag_trends;
pub mod sms_delivery;
pub mod user_clicks;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use weir::TopologyError;

use crate::Daemon;

/// Epoch ms as `2026-11-21T10:00:00.000Z` (the scenarios' time format);
/// `None` outside chrono's range (about ±262,000 years).
pub fn iso_millis(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// An RFC 3339 time, exactly as chrono's `DateTime::parse_from_rfc3339`
/// reads it (the same values accepted, the same instants, chrono's error
/// otherwise). The scenarios' own form, `2026-11-21T10:00:00.123Z` (what
/// the generators and the ingress write), takes a fast path: chrono's
/// general RFC 3339 scanner was ~6 % of emoji-stream's stream thread
/// (BENCHMARKS.md); this form needs only fixed-position digits and chrono's
/// calendar check.
pub fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match canonical_millis(s.as_bytes()) {
        Some(t) => Ok(t),
        None => DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, or `None` for anything else (another form,
/// a date that does not exist, a leap second): chrono decides those.
fn canonical_millis(b: &[u8]) -> Option<DateTime<Utc>> {
    let b: &[u8; 24] = b.try_into().ok()?;
    if [b[4], b[7], b[10], b[13], b[16], b[19], b[23]] != *b"--T::.Z" {
        return None;
    }
    let num = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let year = i32::try_from(num(0, 4)?).ok()?;
    NaiveDate::from_ymd_opt(year, num(5, 7)?, num(8, 10)?)?
        .and_hms_milli_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?)
        .map(|t| t.and_utc())
}

/// A window parameter in ms as a `Duration`; negative is an error naming it.
pub(crate) fn window_millis(what: &str, ms: i64) -> Result<Duration, TopologyError> {
    u64::try_from(ms)
        .map(Duration::from_millis)
        .map_err(|_| TopologyError::InvalidWindow(format!("{what} must not be negative, got {ms} ms")))
}

/// `daemon` with every built-in scenario registered, in the order of
/// SCENARIOS.md.
pub fn register_all(daemon: Daemon) -> Daemon {
    daemon
        .app(emoji_stream::app())
        .app(hashtag_trends::app())
        .app(clickstream_parquet::app())
        .app(sms_delivery::app())
        .app(user_clicks::app())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// chrono's reading of `s`, the reference the fast path must equal.
    fn chrono(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
        DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
    }

    #[test]
    fn the_fast_path_reads_every_canonical_time_as_chrono_does() {
        // Every millisecond class, every month end, leap and common years,
        // the epoch and times before it, spread over years 0000..9999.
        let mut ms = -62_167_219_200_000_i64; // 0000-01-01T00:00:00.000Z
        let end = 253_402_300_799_999_i64; // 9999-12-31T23:59:59.999Z
        let mut checked = 0;
        while ms <= end {
            let s = iso_millis(ms).expect("in range");
            assert!(canonical_millis(s.as_bytes()).is_some(), "{s} takes the fast path");
            assert_eq!(parse_rfc3339(&s), chrono(&s), "{s}");
            assert_eq!(parse_rfc3339(&s).map(|t| t.timestamp_millis()), Ok(ms), "{s}");
            ms += 86_399_999 * 7 + 13; // ~a week, drifting through the day and the ms
            checked += 1;
        }
        assert!(checked > 500_000, "{checked} times checked");
    }

    #[test]
    fn other_forms_and_impossible_dates_are_chronos_to_judge() {
        for s in [
            "2026-11-21T10:00:00.123Z",
            "2024-02-29T23:59:59.999Z",
            "2023-02-29T10:00:00.000Z", // no such day
            "2026-13-01T10:00:00.000Z", // no such month
            "2026-11-31T10:00:00.000Z",
            "2026-11-21T24:00:00.000Z",
            "2026-11-21T10:60:00.000Z",
            "2016-12-31T23:59:60.500Z", // a leap second: chrono's own reading
            "2026-11-21t10:00:00.123z", // lower case, RFC 3339 allows it
            "2026-11-21 10:00:00.123Z",
            "2026-11-21T10:00:00Z",
            "2026-11-21T10:00:00.123456Z",
            "2026-11-21T10:00:00.123+01:00",
            "2026-11-21T10:00:00.12Z",
            "2026-11-21T10:00:00.1234Z",
            "2026-11-21T10:00:00.123",
            "+2026-11-21T10:00:00.12Z",
            "2026-11-2xT10:00:00.123Z",
            "2026-11-21T10:00:00,123Z",
            "2026-1-21T10:00:00.1234Z",
            "٢٠٢٦-11-21T10:00:00.12Z",
            "",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(s), chrono(s), "{s:?}");
        }
        assert!(parse_rfc3339("2023-02-29T10:00:00.000Z").is_err());
        assert_eq!(
            parse_rfc3339("2026-11-21T10:00:00.123+01:00").map(|t| t.timestamp_millis()),
            Ok(1_795_255_200_123 - 3_600_000)
        );
    }
}
