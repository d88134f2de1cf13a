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
    pub http: Option<String>,
    pub generate: Option<bool>,
    pub rate: Option<f64>,
    /// Parameters per topology, checked by the topology's own parameter
    /// type (plus `rate` and `generate`, which the daemon takes).
    #[serde(default)]
    pub topologies: BTreeMap<String, toml::Table>,
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
        Ok(config)
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
}
