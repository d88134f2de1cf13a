//! `weir.toml`: the same settings as `weir run`'s flags, plus per-topology
//! parameters under `[topologies.NAME]`.
//!
//! A flag (or its environment variable) wins over the file, the file over
//! the built-in default. Every key is checked: a typo stops the daemon with
//! one line naming the key and its line in the file, rather than being
//! silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use serde::Deserialize;
use weir_connectors::kafka::stream::Guarantee;
use weir_connectors::kafka::ClientSettings;

/// The file's top level.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub brokers: Option<String>,
    pub broker_listen: Option<std::net::SocketAddr>,
    pub broker_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub threads: Option<u32>,
    pub commit_interval_ms: Option<u64>,
    pub idle_advance_ms: Option<u64>,
    pub delivery_timeout_ms: Option<u64>,
    pub instance_id: Option<String>,
    pub guarantee: Option<String>,
    pub cache_max_bytes: Option<usize>,
    pub state_cache_bytes: Option<u64>,
    pub http: Option<String>,
    pub generate: Option<bool>,
    pub rate: Option<f64>,
    /// Parameters per topology, checked by the topology's own parameter
    /// type (plus `rate` and `generate`, which the daemon takes).
    #[serde(default)]
    pub topologies: BTreeMap<String, toml::Table>,
    /// Raw librdkafka properties for every Kafka client (`[kafka]`), as
    /// TOML strings, integers or booleans; see
    /// [`FileConfig::kafka_properties`].
    #[serde(default)]
    pub kafka: toml::Table,
}

/// What the daemon itself reads from a `[topologies.NAME]` table; the rest
/// goes to the topology.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TopologyRunConfig {
    pub rate: Option<f64>,
    pub generate: Option<bool>,
    pub params: toml::Table,
}

impl FileConfig {
    /// Read and check `path`.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        FileConfig::parse(&text).map_err(|e| anyhow!("config {}: {e}", path.display()))
    }

    /// Parse the text of a config file; errors are one line.
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        let config: FileConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| {
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1
            });
            let message = e.message().replace('\n', " ");
            match line {
                Some(l) => anyhow!("line {l}: {message}"),
                None => anyhow!("{message}"),
            }
        })?;
        if let Some(r) = config.rate {
            check_rate(r, "rate")?;
        }
        if config.threads == Some(0) {
            anyhow::bail!("threads must be at least 1");
        }
        if config.commit_interval_ms == Some(0) {
            anyhow::bail!("commit_interval_ms must be at least 1");
        }
        if let Some(ms) = config.delivery_timeout_ms {
            if !(1000..=2_147_483_647).contains(&ms) {
                anyhow::bail!("delivery_timeout_ms must be from 1000 to 2147483647, got {ms}");
            }
        }
        if let Some(why) = config
            .instance_id
            .as_deref()
            .and_then(weir_connectors::kafka::stream::check_instance_id)
        {
            anyhow::bail!("instance_id {why}");
        }
        if let Some(g) = &config.guarantee {
            parse_guarantee(g).map_err(|e| anyhow!("guarantee: {e}"))?;
        }
        if let Some(b) = config.state_cache_bytes {
            check_state_cache_bytes(b).map_err(|e| anyhow!("state_cache_bytes {e}"))?;
        }
        config.kafka_properties()?;
        Ok(config)
    }

    /// The `[kafka]` table as librdkafka properties, each value as text
    /// (`true`/`false` for booleans), each checked with
    /// [`ClientSettings::check_property`]; errors name the property.
    ///
    /// Keys are best quoted (`"queued.min.messages" = 20000`): TOML reads an
    /// unquoted `queued.min.messages` as nested tables, which are joined
    /// back with dots here, but then `queued.min.messages` and
    /// `queued.min.messages.kbytes` cannot both be given.
    pub fn kafka_properties(&self) -> anyhow::Result<Vec<(String, String)>> {
        fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) -> anyhow::Result<()> {
            for (name, value) in table {
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                let text = match value {
                    toml::Value::Table(t) => {
                        flatten(&key, t, out)?;
                        continue;
                    }
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => anyhow::bail!(
                        "[kafka] {key}: expected a string, integer or boolean, got {} {other}",
                        other.type_str()
                    ),
                };
                ClientSettings::check_property(&key, &text).map_err(|why| anyhow!("[kafka] {key}: {why}"))?;
                out.push((key, text));
            }
            Ok(())
        }
        let mut properties = Vec::with_capacity(self.kafka.len());
        flatten("", &self.kafka, &mut properties)?;
        properties.sort();
        Ok(properties)
    }

    /// The `[topologies.NAME]` table of `name`, split into the daemon's
    /// keys and the topology's parameters.
    pub fn topology(&self, name: &str) -> anyhow::Result<TopologyRunConfig> {
        let Some(table) = self.topologies.get(name) else {
            return Ok(TopologyRunConfig::default());
        };
        let mut params = table.clone();
        let rate = match params.remove("rate") {
            None => None,
            Some(v) => {
                let r = v
                    .as_float()
                    .or_else(|| v.as_integer().map(|i| i as f64))
                    .ok_or_else(|| anyhow!("[topologies.{name}] rate: expected a number, got {v}"))?;
                check_rate(r, &format!("[topologies.{name}] rate"))?;
                Some(r)
            }
        };
        let generate = match params.remove("generate") {
            None => None,
            Some(v) => Some(
                v.as_bool()
                    .ok_or_else(|| anyhow!("[topologies.{name}] generate: expected true or false, got {v}"))?,
            ),
        };
        Ok(TopologyRunConfig { rate, generate, params })
    }

    /// A `[topologies.NAME]` whose NAME is not registered.
    pub fn unknown_topology<'a>(&'a self, known: &[&str]) -> Option<&'a str> {
        self.topologies.keys().map(String::as_str).find(|n| !known.contains(n))
    }
}

/// A generator rate: events per second, positive and finite.
pub fn check_rate(r: f64, what: &str) -> anyhow::Result<f64> {
    if r.is_finite() && r > 0.0 && r <= 10_000_000.0 {
        Ok(r)
    } else {
        Err(anyhow!(
            "{what} must be a number of events per second in (0, 10000000], got {r}"
        ))
    }
}

/// The smallest sled page cache `--state-cache-bytes` and
/// `state_cache_bytes` take: 1 MiB.
pub const MIN_STATE_CACHE_BYTES: u64 = 1024 * 1024;

/// `--state-cache-bytes` and `state_cache_bytes`: at least
/// [`MIN_STATE_CACHE_BYTES`]; the error completes "NAME ...".
pub fn check_state_cache_bytes(bytes: u64) -> Result<u64, String> {
    if bytes >= MIN_STATE_CACHE_BYTES {
        Ok(bytes)
    } else {
        Err(format!("must be at least {MIN_STATE_CACHE_BYTES} (1 MiB), got {bytes}"))
    }
}

/// One `--kafka KEY=VALUE`: split at the first `=`, and checked with
/// [`ClientSettings::check_property`]; errors are one line naming the flag.
pub fn parse_kafka_flag(arg: &str) -> anyhow::Result<(String, String)> {
    let Some((key, value)) = arg
        .split_once('=')
        .map(|(key, value)| (key.trim(), value))
        .filter(|(key, _)| !key.is_empty())
    else {
        anyhow::bail!("--kafka {arg}: expected KEY=VALUE, a librdkafka property and its value");
    };
    ClientSettings::check_property(key, value).map_err(|why| anyhow!("--kafka {arg}: {why}"))?;
    Ok((key.to_string(), value.to_string()))
}

/// The librdkafka properties of a run: the file's `[kafka]`, then the
/// `--kafka` flags, a flag replacing the file's value of the same key (and
/// a later flag an earlier one). Each key once, in that order.
pub fn merge_kafka(file: Vec<(String, String)>, flags: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut merged: Vec<(String, String)> = file;
    for (key, value) in flags {
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some(existing) => existing.1 = value,
            None => merged.push((key, value)),
        }
    }
    merged
}

/// `--guarantee` and the file's `guarantee`: `at-least-once` or
/// `exactly-once`.
pub fn parse_guarantee(s: &str) -> Result<Guarantee, String> {
    match s {
        "at-least-once" => Ok(Guarantee::AtLeastOnce),
        "exactly-once" => Ok(Guarantee::ExactlyOnce),
        other => Err(format!("{other:?} is not a guarantee (at-least-once or exactly-once)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", FileConfig::parse(text).unwrap_err())
    }

    #[test]
    fn a_full_file_parses() {
        let c = FileConfig::parse(
            r#"
brokers = "127.0.0.1:9092"
state_dir = "/var/lib/weir"
threads = 2
commit_interval_ms = 100
guarantee = "exactly-once"
http = "127.0.0.1:0"
generate = false
rate = 50

[topologies.emoji-stream]
scale = 10
rate = 2000.5
generate = true
"#,
        )
        .unwrap();
        assert_eq!(c.brokers.as_deref(), Some("127.0.0.1:9092"));
        assert_eq!(c.threads, Some(2));
        assert_eq!(
            c.guarantee.as_deref().map(parse_guarantee),
            Some(Ok(Guarantee::ExactlyOnce))
        );
        assert_eq!(c.rate, Some(50.0));
        let t = c.topology("emoji-stream").unwrap();
        assert_eq!(t.rate, Some(2000.5));
        assert_eq!(t.generate, Some(true));
        assert_eq!(t.params.len(), 1);
        assert_eq!(t.params["scale"].as_integer(), Some(10));
        assert_eq!(c.topology("user-clicks").unwrap(), TopologyRunConfig::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = err("brokers = \"x\"\nthreds = 2\n");
        assert!(e.starts_with("line 2: unknown field `threds`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = err("threads = \"two\"\n");
        assert!(
            e.starts_with("line 1: invalid type: string \"two\", expected u32"),
            "{e}"
        );
        assert_eq!(err("threads = 0\n"), "threads must be at least 1");
        assert_eq!(
            err("guarantee = \"twice\"\n"),
            "guarantee: \"twice\" is not a guarantee (at-least-once or exactly-once)"
        );
        assert_eq!(
            err("rate = -1\n"),
            "rate must be a number of events per second in (0, 10000000], got -1"
        );
        let c = FileConfig::parse("[topologies.a]\nrate = \"fast\"\n").unwrap();
        assert_eq!(
            format!("{:#}", c.topology("a").unwrap_err()),
            "[topologies.a] rate: expected a number, got \"fast\""
        );
        let c = FileConfig::parse("[topologies.a]\n[topologies.b]\n").unwrap();
        assert_eq!(c.unknown_topology(&["a"]), Some("b"));
        assert_eq!(c.unknown_topology(&["a", "b"]), None);
    }

    #[test]
    fn kafka_properties_are_stringified_and_checked() {
        let c = FileConfig::parse(
            "state_cache_bytes = 16777216\n\n[kafka]\nqueued.min.messages = 5000\n\
             compression.type = \"zstd\"\nenable.partition.eof = false\n",
        )
        .unwrap();
        assert_eq!(c.state_cache_bytes, Some(16 * 1024 * 1024));
        assert_eq!(
            c.kafka_properties().unwrap(),
            [
                ("compression.type".to_string(), "zstd".to_string()),
                ("enable.partition.eof".to_string(), "false".to_string()),
                ("queued.min.messages".to_string(), "5000".to_string()),
            ]
        );
        assert!(FileConfig::parse("").unwrap().kafka_properties().unwrap().is_empty());
    }

    #[test]
    fn bad_kafka_properties_are_named() {
        assert_eq!(
            err("[kafka]\nqueued.min.mesages = 5000\n"),
            "[kafka] queued.min.mesages: No such configuration property: \"queued.min.mesages\""
        );
        let e = err("[kafka]\nqueued.min.messages = \"lots\"\n");
        assert!(e.starts_with("[kafka] queued.min.messages: Invalid value"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert_eq!(
            err("[kafka]\n\"bootstrap.servers\" = \"kafka:9092\"\n"),
            "[kafka] bootstrap.servers: weir sets it from --brokers (`brokers` in the config file)"
        );
        assert_eq!(
            err("[kafka]\ngroup.id = \"mine\"\n"),
            "[kafka] group.id: weir sets it: each topology's consumer group is its application id \
             (the topology's name)"
        );
        assert_eq!(
            err("[kafka]\nenable.auto.commit = true\n"),
            "[kafka] enable.auto.commit: weir commits offsets itself, at each commit (--commit-interval-ms)"
        );
        assert_eq!(
            err("[kafka]\nisolation.level = \"read_uncommitted\"\n"),
            "[kafka] isolation.level: weir sets it from --guarantee (`guarantee` in the config file)"
        );
        assert_eq!(
            err("[kafka]\nlinger.ms = 2.5\n"),
            "[kafka] linger.ms: expected a string, integer or boolean, got float 2.5"
        );
    }

    #[test]
    fn state_cache_bytes_is_checked() {
        let e = err("state_cache_bytes = \"64MiB\"\n");
        assert!(
            e.starts_with("line 1: invalid type: string \"64MiB\", expected u64"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        assert_eq!(
            err("state_cache_bytes = 1000\n"),
            "state_cache_bytes must be at least 1048576 (1 MiB), got 1000"
        );
        let e = err("state_cache_bytes = -1\n");
        assert!(
            e.starts_with("line 1: invalid value: integer `-1`, expected u64"),
            "{e}"
        );
    }

    #[test]
    fn kafka_flags_are_parsed_and_win_over_the_file() {
        assert_eq!(
            parse_kafka_flag("queued.min.messages=5000").unwrap(),
            ("queued.min.messages".to_string(), "5000".to_string())
        );
        assert_eq!(
            parse_kafka_flag("client.rack=eu=1").unwrap(),
            ("client.rack".to_string(), "eu=1".to_string()),
            "split at the first ="
        );
        let e = |a: &str| format!("{:#}", parse_kafka_flag(a).unwrap_err());
        assert_eq!(
            e("queued.min.messages"),
            "--kafka queued.min.messages: expected KEY=VALUE, a librdkafka property and its value"
        );
        assert_eq!(
            e("=5"),
            "--kafka =5: expected KEY=VALUE, a librdkafka property and its value"
        );
        assert_eq!(
            e("queued.min.mesages=5000"),
            "--kafka queued.min.mesages=5000: No such configuration property: \"queued.min.mesages\""
        );
        assert_eq!(
            e("transactional.id=t"),
            "--kafka transactional.id=t: weir sets it from --guarantee (`guarantee` in the config file)"
        );
        let file = vec![
            ("linger.ms".to_string(), "20".to_string()),
            ("queued.min.messages".to_string(), "5000".to_string()),
        ];
        let flags = vec![
            ("queued.min.messages".to_string(), "1000".to_string()),
            ("client.rack".to_string(), "a".to_string()),
            ("client.rack".to_string(), "b".to_string()),
        ];
        assert_eq!(
            merge_kafka(file, flags),
            [
                ("linger.ms".to_string(), "20".to_string()),
                ("queued.min.messages".to_string(), "1000".to_string()),
                ("client.rack".to_string(), "b".to_string()),
            ]
        );
    }
}
