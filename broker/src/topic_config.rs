//! Topic configurations: which keys a topic accepts, their defaults, and how
//! they become a partition log's [`LogConfig`].
//!
//! Clients (Kafka Streams, weir, admin tools) set standard Kafka topic keys
//! when they create topics, so every key Kafka itself accepts is accepted
//! and kept (and shown by DescribeConfigs); the ones that change how this
//! single-node broker stores data are applied. A key Kafka does not know is
//! refused with INVALID_CONFIG naming it, as Kafka refuses it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::log::LogConfig;

/// Kafka's default `retention.ms`: 7 days.
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's default `segment.bytes`: 1 GiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1 << 30;

/// Keys this broker applies, with Kafka's defaults as DescribeConfigs shows them.
const APPLIED: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("retention.ms", "604800000"),
    ("retention.bytes", "-1"),
    ("segment.bytes", "1073741824"),
    ("delete.retention.ms", "86400000"),
];

/// Topic-level keys Kafka accepts that this broker keeps but does not act
/// on (replication, flushing, tiering and message-format settings of a
/// cluster).
const KEPT: &[&str] = &[
    "compression.type",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.downconversion.enable",
    "message.format.version",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "remote.storage.enable",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// A topic's configuration overrides (keys set at creation or altered).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub overrides: BTreeMap<String, String>,
}

/// Why a configuration was refused; the message names the key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl TopicConfig {
    /// Validate `entries` (key, value) and build a configuration from them.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Self, ConfigError> {
        let mut config = TopicConfig::default();
        for (key, value) in entries {
            config.set(key, value)?;
        }
        Ok(config)
    }

    /// Set (or with `None`, remove) one key, validating it.
    pub fn set(&mut self, key: &str, value: Option<&str>) -> Result<(), ConfigError> {
        if !is_known(key) {
            return Err(ConfigError(format!("unknown topic configuration key `{key}`")));
        }
        let Some(value) = value else {
            self.overrides.remove(key);
            return Ok(());
        };
        validate(key, value)?;
        self.overrides.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Every applied key with its value (override or default), then the
    /// kept overrides: what DescribeConfigs lists. The flag says whether the
    /// value is the default.
    pub fn describe(&self) -> Vec<(String, String, bool)> {
        let mut out: Vec<(String, String, bool)> = APPLIED
            .iter()
            .map(|(k, default)| match self.overrides.get(*k) {
                Some(v) => (k.to_string(), v.clone(), false),
                None => (k.to_string(), default.to_string(), true),
            })
            .collect();
        for (k, v) in &self.overrides {
            if !APPLIED.iter().any(|(a, _)| a == k) {
                out.push((k.clone(), v.clone(), false));
            }
        }
        out
    }

    /// The partition log settings these keys ask for.
    pub fn log_config(&self) -> LogConfig {
        let get = |k: &str| self.overrides.get(k).map(String::as_str);
        let policy = get("cleanup.policy").unwrap_or("delete");
        let compact = policy.split(',').any(|p| p.trim() == "compact");
        let deletes = policy.split(',').any(|p| p.trim() == "delete");
        let retention_ms = match get("retention.ms").map(|v| v.parse::<i64>().unwrap_or(DEFAULT_RETENTION_MS)) {
            _ if !deletes => None,
            Some(ms) if ms < 0 => None,
            Some(ms) => Some(ms),
            None => Some(DEFAULT_RETENTION_MS),
        };
        let retention_bytes = match get("retention.bytes").and_then(|v| v.parse::<i64>().ok()) {
            Some(b) if deletes && b >= 0 => Some(b as u64),
            _ => None,
        };
        let segment_bytes = get("segment.bytes")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_SEGMENT_BYTES);
        LogConfig {
            segment_bytes,
            retention_ms,
            retention_bytes,
            compact,
            ..LogConfig::default()
        }
    }
}

fn is_known(key: &str) -> bool {
    APPLIED.iter().any(|(k, _)| *k == key) || KEPT.contains(&key)
}

fn validate(key: &str, value: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| Err(ConfigError(format!("invalid value `{value}` for `{key}`: {why}")));
    match key {
        "cleanup.policy" if value.is_empty() || value.split(',').any(|p| !matches!(p.trim(), "delete" | "compact")) => {
            return bad("expected delete, compact or compact,delete");
        }
        "retention.ms" | "retention.bytes" => match value.parse::<i64>() {
            Ok(v) if v >= -1 => {}
            _ => return bad("expected an integer, -1 for unlimited"),
        },
        "segment.bytes" => match value.parse::<u64>() {
            Ok(v) if v >= 14 => {}
            _ => return bad("expected a number of bytes of at least 14"),
        },
        "delete.retention.ms" => match value.parse::<i64>() {
            Ok(v) if v >= 0 => {}
            _ => return bad("expected a non-negative number of milliseconds"),
        },
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_keys_become_log_settings() {
        let c = TopicConfig::from_entries([
            ("cleanup.policy", Some("compact")),
            ("segment.bytes", Some("1048576")),
            ("min.insync.replicas", Some("2")),
        ])
        .unwrap();
        let log = c.log_config();
        assert!(log.compact);
        assert_eq!(log.retention_ms, None, "a compact-only topic is not deleted by time");
        assert_eq!(log.segment_bytes, 1_048_576);
        let described = c.describe();
        assert!(described.contains(&("cleanup.policy".into(), "compact".into(), false)));
        assert!(described.contains(&("retention.bytes".into(), "-1".into(), true)));
        assert!(described.contains(&("min.insync.replicas".into(), "2".into(), false)));
    }

    #[test]
    fn retention_minus_one_keeps_forever_and_default_is_seven_days() {
        let forever = TopicConfig::from_entries([("retention.ms", Some("-1"))]).unwrap();
        assert_eq!(forever.log_config().retention_ms, None);
        assert_eq!(
            TopicConfig::default().log_config().retention_ms,
            Some(DEFAULT_RETENTION_MS)
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        assert_eq!(
            TopicConfig::from_entries([("retention.mss", Some("1"))]),
            Err(ConfigError("unknown topic configuration key `retention.mss`".into()))
        );
        assert_eq!(
            TopicConfig::from_entries([("cleanup.policy", Some("forever"))]),
            Err(ConfigError(
                "invalid value `forever` for `cleanup.policy`: expected delete, compact or compact,delete".into()
            ))
        );
        assert_eq!(
            TopicConfig::from_entries([("retention.ms", Some("soon"))]),
            Err(ConfigError(
                "invalid value `soon` for `retention.ms`: expected an integer, -1 for unlimited".into()
            ))
        );
    }
}
