//! How a stateful operator keeps its state.

use std::time::Duration;

/// The store behind an aggregation or table: its name (which also names the
/// changelog topic `{application_id}-{name}-changelog` and, after a re-key,
/// the repartition topic `{application_id}-{name}-repartition`), retention
/// for window stores, and whether it is logged.
///
/// Names are checked when the topology is built: a bad name makes
/// [`crate::StreamsBuilder::build`] fail with an error naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Materialized {
    pub(crate) name: Option<String>,
    pub(crate) retention_ms: Option<i64>,
    pub(crate) logged: bool,
    /// `Some(history retention)` for a versioned store.
    pub(crate) history_retention_ms: Option<i64>,
}

impl Default for Materialized {
    fn default() -> Self {
        Materialized {
            name: None,
            retention_ms: None,
            logged: true,
            history_retention_ms: None,
        }
    }
}

impl Materialized {
    /// A store named `name` (queryable under that name).
    pub fn named(name: &str) -> Self {
        Materialized {
            name: Some(name.to_string()),
            ..Default::default()
        }
    }

    /// A store whose name is derived from the operator's position in the
    /// topology (stable as long as the program does not change).
    pub fn unnamed() -> Self {
        Materialized::default()
    }

    /// How long a window store keeps windows (time windows: after their
    /// start; sessions: after their end); at least window size + grace (the
    /// default) is used whatever is given here.
    pub fn with_retention(self, retention: Duration) -> Self {
        Materialized {
            retention_ms: Some(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX)),
            ..self
        }
    }

    /// A versioned store (Kafka Streams' KIP-889/914) keeping each key's
    /// history for `history_retention` behind the table's stream time, for
    /// source tables ([`StreamsBuilder::table`](crate::StreamsBuilder::table)
    /// and its short forms; any other operator refuses it at `build()`).
    ///
    /// A stream–table join then looks each stream record up in the table
    /// as it was at the record's timestamp, so an out-of-order stream joins
    /// the value that was valid when its records happened, not whatever
    /// came last. Table updates older than the key's newest version go into
    /// the history without changing the table (they are not forwarded
    /// downstream), and updates older than the retention are dropped and
    /// counted as late (`weir_late_records_dropped_total`). The store is not
    /// cached: every in-order update is forwarded as it arrives.
    pub fn versioned(self, history_retention: Duration) -> Self {
        Materialized {
            history_retention_ms: Some(i64::try_from(history_retention.as_millis()).unwrap_or(i64::MAX)),
            ..self
        }
    }

    /// Keep the store local only, with no changelog topic: it will not be
    /// restored on another instance.
    pub fn without_logging(self) -> Self {
        Materialized { logged: false, ..self }
    }
}

/// When a suppressed windowed table emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    _private: (),
}

impl Suppressed {
    /// Emit each window's final result once, when stream time passes the
    /// window's end plus its grace period.
    pub fn until_window_closes() -> Self {
        Suppressed { _private: () }
    }
}
