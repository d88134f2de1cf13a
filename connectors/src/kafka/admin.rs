//! Topic administration through the Kafka admin API, on a Kafka cluster
//! and on weir's own broker alike.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::broker::check_partitions;
use super::config::ClientSettings;
use crate::{Error, Result};

/// A topic weir needs, as [`Admin::ensure_topics`] should create it if it
/// is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic name.
    pub name: String,
    /// The partition count; `None` means the cluster's default
    /// (`num.partitions` on Kafka, `default_partitions` on weir's broker).
    pub partitions: Option<i32>,
    /// Changelog topics are compacted (`cleanup.policy=compact`) so that
    /// they keep the latest value per key forever and restore stays bounded.
    pub compacted: bool,
    /// Further topic configs (`retention.ms`, `retention.bytes`,
    /// `segment.bytes`, ...), set when the topic is created. weir's broker
    /// applies those four and `cleanup.policy`, and refuses keys it does not
    /// know.
    pub config: Vec<(String, String)>,
}

impl TopicSpec {
    /// A topic with `partitions` partitions and the cluster's default
    /// cleanup policy (delete).
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions: Some(partitions),
            compacted: false,
            config: Vec::new(),
        }
    }

    /// A topic with the cluster's default partition count.
    pub fn with_default_partitions(name: impl Into<String>) -> Self {
        TopicSpec {
            name: name.into(),
            partitions: None,
            compacted: false,
            config: Vec::new(),
        }
    }

    /// Marks the topic compacted (for changelogs).
    pub fn compacted(mut self) -> Self {
        self.compacted = true;
        self
    }

    /// Adds a topic config.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    fn validate(&self) -> Result<()> {
        validate_topic(&self.name)?;
        if let Some(n) = self.partitions {
            check_partitions(n)?;
        }
        Ok(())
    }
}

/// Checks a topic name the way Kafka does (1 to 249 characters of
/// `[a-zA-Z0-9._-]`, not `.` or `..`), so that a bad name fails here with a
/// clear message instead of in a broker round trip.
pub fn validate_topic(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 249 || !ok_chars || name == "." || name == ".." {
        return Err(Error::InvalidArgument(format!(
            "{name:?} is not a valid topic name (1-249 characters of a-z, A-Z, 0-9, '.', '_', '-')"
        )));
    }
    Ok(())
}

/// Creates and inspects topics, through the admin API (`CreateTopics`)
/// and metadata requests.
pub struct Admin {
    settings: ClientSettings,
    client: AdminClient<DefaultClientContext>,
    timeout: Duration,
    replication_factor: i32,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("brokers", &self.settings.brokers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Admin {
    /// An admin client for the cluster of `settings`. Connecting is lazy:
    /// this fails only on a bad configuration.
    pub fn new(settings: &ClientSettings) -> Result<Admin> {
        let client = settings
            .admin_config()
            .create()
            .map_err(|e| Error::kafka("creating the admin client", e))?;
        Ok(Admin {
            settings: settings.clone(),
            client,
            timeout: Duration::from_secs(30),
            replication_factor: -1,
        })
    }

    /// An admin client for `brokers` with weir's default settings.
    pub fn connect(brokers: &str) -> Result<Admin> {
        Admin::new(&ClientSettings::new(brokers))
    }

    /// How long one call may wait for the cluster (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The replication factor of created topics; -1 (the default) means the
    /// broker's `default.replication.factor`, which is right for a
    /// one-broker development cluster and for production alike.
    pub fn with_replication_factor(mut self, replication_factor: i32) -> Self {
        self.replication_factor = replication_factor;
        self
    }

    /// Every topic in the cluster with its partition count.
    pub fn topics(&self) -> Result<BTreeMap<String, i32>> {
        let md = self
            .client
            .inner()
            .fetch_metadata(None, self.timeout)
            .map_err(|e| Error::kafka(format!("fetching metadata from {}", self.settings.brokers), e))?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect())
    }

    /// The partition count of `topic`, or `None` if it does not exist.
    pub fn partition_count(&self, topic: &str) -> Result<Option<i32>> {
        Ok(self.topics()?.get(topic).copied())
    }

    /// Whether the cluster is weir's own broker (`weir_broker`, a
    /// development broker), known by the cluster id it reports. On it weir
    /// creates missing source topics instead of refusing to start.
    pub fn is_weir_broker(&self) -> bool {
        self.client.inner().fetch_cluster_id(Duration::from_secs(10)).as_deref() == Some(weir_broker::CLUSTER_ID)
    }

    /// Creates the topics in `specs` that do not exist yet, and waits until
    /// every one of them shows in the cluster's metadata.
    ///
    /// An existing topic is left as it is, even if its partition count or
    /// configs differ from the spec (a warning is logged; use
    /// [`partition_count`](Self::partition_count) where the count matters).
    /// Returns the names of the topics this call created.
    pub fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<Vec<String>> {
        for s in specs {
            s.validate()?;
        }
        let existing = self.topics()?;
        let mut missing: Vec<&TopicSpec> = Vec::new();
        for s in specs {
            match existing.get(&s.name) {
                Some(&n) => {
                    if s.partitions.is_some_and(|want| want != n) {
                        tracing::warn!(
                            topic = %s.name,
                            existing = n,
                            wanted = s.partitions,
                            "topic exists with a different partition count; leaving it"
                        );
                    }
                }
                None if missing.iter().any(|m| m.name == s.name) => {}
                None => missing.push(s),
            }
        }
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        self.create_with_admin_api(&missing)?;
        let names: Vec<String> = missing.iter().map(|s| s.name.clone()).collect();
        self.wait_for_topics(&names, self.timeout)?;
        Ok(names)
    }

    /// Waits until every topic in `names` shows in the metadata with at
    /// least one partition. The first checks come quickly (a single broker
    /// usually has them at once; every start of a topology waits here),
    /// later ones every 50 ms (a cluster propagating them).
    pub fn wait_for_topics(&self, names: &[String], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            let topics = self.topics()?;
            let absent: Vec<&String> = names.iter().filter(|n| !topics.contains_key(*n)).collect();
            if absent.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("topics {absent:?} to appear in the metadata"),
                    after: timeout,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    fn create_with_admin_api(&self, missing: &[&TopicSpec]) -> Result<()> {
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|s| {
                let mut t = NewTopic::new(
                    &s.name,
                    s.partitions.unwrap_or(-1),
                    TopicReplication::Fixed(self.replication_factor),
                );
                if s.compacted {
                    t = t.set("cleanup.policy", "compact");
                }
                for (k, v) in &s.config {
                    t = t.set(k, v);
                }
                t
            })
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout));
        let results = futures_executor::block_on(self.client.create_topics(&new_topics, &options))
            .map_err(|e| Error::kafka(format!("creating topics on {}", self.settings.brokers), e))?;
        for r in results {
            match r {
                Ok(name) => tracing::info!(topic = %name, "created topic"),
                // Another instance created it first: fine.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
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
