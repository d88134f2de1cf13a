//! A handle on weir's own broker (`weir_broker`) with throw-away data, for
//! tests and library use. See [`EmbeddedBroker`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use weir_broker::{Broker, BrokerConfig, BrokerSettings};

use super::admin::validate_topic;
use super::config::ClientSettings;
use crate::{Error, Result};

/// The most partitions one topic may have: what `weir_broker` accepts, so
/// that a bad count fails in weir with a clear message instead of in a
/// broker round trip (and a typo cannot ask for millions of partitions).
pub const MAX_PARTITIONS: i32 = 10_000;

/// How long [`EmbeddedBroker::create_topic`] waits for the broker.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The reason of [`Error::TopicCreation`] when the topic exists already.
const EXISTS: &str = "topic already exists";

/// weir's broker (`weir_broker::Broker`) running in this process on
/// `127.0.0.1`, on a port the OS picks, with its data in a temporary
/// directory that this handle owns.
///
/// It is for tests and for library users who want a broker for as long as
/// a handle lives: dropping the handle stops the broker and **deletes its
/// data**. (`weir run` without `--brokers` and `weir dev-broker` run the
/// same broker on a directory that is kept; see `weir_broker`.) Any Kafka
/// client can connect to [`bootstrap_servers`](Self::bootstrap_servers).
///
/// It is a real single-node broker: topics are created through the admin
/// API (or, with `default_partitions` partitions, by a producer's first
/// metadata request), topic configs such as `cleanup.policy`, `retention.ms`
/// and `segment.bytes` are applied, consumer groups rebalance as soon as
/// their members have rejoined, and transactions are enforced.
pub struct EmbeddedBroker {
    // Declared before `dir`: the broker stops (and flushes) before its
    // directory is deleted.
    broker: Broker,
    dir: tempfile::TempDir,
    default_partitions: i32,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("addr", &self.broker.addr())
            .field("default_partitions", &self.default_partitions)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl EmbeddedBroker {
    /// Starts the broker on `127.0.0.1` with a port chosen by the OS and
    /// its data in a new temporary directory. Topics created without an
    /// explicit partition count get `default_partitions` partitions.
    pub fn start(default_partitions: i32) -> Result<EmbeddedBroker> {
        check_partitions(default_partitions)?;
        let dir = tempfile::Builder::new()
            .prefix("weir-embedded-broker-")
            .tempdir()
            .map_err(|e| Error::EmbeddedBroker(format!("cannot create its data directory: {e}")))?;
        let broker = Broker::start(BrokerConfig {
            dir: dir.path().to_path_buf(),
            listen: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
            settings: BrokerSettings {
                default_partitions,
                ..Default::default()
            },
        })
        .map_err(|e| Error::EmbeddedBroker(e.to_string()))?;
        tracing::info!(addr = %broker.addr(), default_partitions, dir = %dir.path().display(), "embedded broker started");
        Ok(EmbeddedBroker {
            broker,
            dir,
            default_partitions,
        })
    }

    /// The address to give Kafka clients, `127.0.0.1:PORT`.
    pub fn bootstrap_servers(&self) -> String {
        self.broker.addr().to_string()
    }

    /// The partition count of topics created without an explicit one.
    pub fn default_partitions(&self) -> i32 {
        self.default_partitions
    }

    /// The directory of the broker's data, deleted when the handle drops.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates `name` with `partitions` partitions through the Kafka admin
    /// API (`CreateTopics`).
    ///
    /// Fails with [`Error::TopicCreation`] (reason `topic already exists`)
    /// if the topic exists (use
    /// [`Admin::ensure_topics`](super::Admin::ensure_topics) for "create if
    /// missing"). The topic is visible to clients when this returns.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        validate_topic(name)?;
        check_partitions(partitions)?;
        let admin: AdminClient<DefaultClientContext> = ClientSettings::new(self.bootstrap_servers())
            .admin_config()
            .create()
            .map_err(|e| Error::kafka("creating the admin client", e))?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new()
            .request_timeout(Some(CREATE_TIMEOUT))
            .operation_timeout(Some(CREATE_TIMEOUT));
        let results = futures_executor::block_on(admin.create_topics([&topic], &options))
            .map_err(|e| Error::kafka(format!("creating topic {name}"), e))?;
        for r in results {
            match r {
                Ok(_) => tracing::info!(topic = name, partitions, "embedded broker created topic"),
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    return Err(Error::TopicCreation {
                        topic,
                        reason: EXISTS.to_string(),
                    })
                }
                Err((topic, code)) => {
                    return Err(Error::TopicCreation {
                        topic,
                        reason: code.to_string(),
                    })
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn check_partitions(partitions: i32) -> Result<()> {
    if (1..=MAX_PARTITIONS).contains(&partitions) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "partition count must be between 1 and {MAX_PARTITIONS}, got {partitions}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_counts_are_bounded() {
        assert!(check_partitions(0).is_err());
        assert!(check_partitions(MAX_PARTITIONS + 1).is_err());
        assert!(check_partitions(1).is_ok());
        assert!(check_partitions(MAX_PARTITIONS).is_ok());
    }
}
