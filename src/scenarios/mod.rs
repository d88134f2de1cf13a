//! The five built-in scenarios (../shared/SCENARIOS.md), each a topology
//! written with the public DSL only, registered by name.

pub mod clickstream_parquet;
pub mod emoji_stream;
pub mod generators;
pub mod hashtag_trends;
pub mod sms_delivery;
pub mod user_clicks;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use weir::TopologyError;

use crate::Daemon;

/// Epoch ms as `2026-11-21T10:00:00.000Z` (the scenarios' time format);
/// `None` outside chrono's range (about ±262,000 years).
pub fn iso_millis(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
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
