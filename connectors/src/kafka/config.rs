//! Client configurations, tuned once, in one place.
//!
//! librdkafka's defaults are made for a different workload than a stream
//! processor's (a consumer that drains its queue as fast as it can, and a
//! producer that writes many small records). Every value set here is set on
//! purpose; the doc comment of each field says why.

use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

/// librdkafka's first reconnect backoff, ms (its default: 100; Kafka's Java
/// client: 50). Since librdkafka 2.10 a client drops its bootstrap
/// connection once the first metadata names the brokers and connects again
/// to the broker it learned, and that connection waits out the
/// sparse-connection interval, half of this backoff: every new client's
/// first real request took ~50 ms instead of a round trip (librdkafka's C
/// API alone against a one-node cluster: 52.5 ms at 100, 13.7 ms at 20),
/// and a topology start creates several clients. The backoff still doubles
/// on every failed attempt up to `reconnect.backoff.max.ms` (10 s), so an
/// outage is not hammered. `--kafka reconnect.backoff.ms=N` overrides it.
pub const RECONNECT_BACKOFF_MS: u32 = 20;

/// Properties weir sets itself, with the weir option to use instead. Each
/// librdkafka alias of one is listed too.
const WEIR_OWNED: &[(&str, &str)] = &[
    (
        "bootstrap.servers",
        "weir sets it from --brokers (`brokers` in the config file)",
    ),
    (
        "metadata.broker.list",
        "weir sets it from --brokers (`brokers` in the config file)",
    ),
    (
        "group.id",
        "weir sets it: each topology's consumer group is its application id (the topology's name)",
    ),
    (
        "group.instance.id",
        "weir sets it from --instance-id (`instance_id` in the config file), one per stream thread",
    ),
    (
        "transactional.id",
        "weir sets it from --guarantee (`guarantee` in the config file)",
    ),
    (
        "enable.idempotence",
        "weir sets it from --guarantee (`guarantee` in the config file)",
    ),
    (
        "isolation.level",
        "weir sets it from --guarantee (`guarantee` in the config file)",
    ),
    (
        "enable.auto.commit",
        "weir commits offsets itself, at each commit (--commit-interval-ms)",
    ),
    (
        "enable.auto.offset.store",
        "weir commits offsets itself, at each commit (--commit-interval-ms)",
    ),
    (
        "message.timeout.ms",
        "weir sets it from --delivery-timeout-ms (`delivery_timeout_ms` in the config file)",
    ),
    (
        "delivery.timeout.ms",
        "weir sets it from --delivery-timeout-ms (`delivery_timeout_ms` in the config file)",
    ),
];

/// Which partition assignor the consumer group uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignmentStrategy {
    /// Eager `range`: per topic, consecutive partition ranges to the members
    /// sorted by id. Topics with the same partition count are therefore
    /// *co-partitioned*: partition `p` of every subscribed topic goes to the
    /// same member. A weir task is (sub-topology, partition) and reads every
    /// source topic of its sub-topology at that partition (joins, merges), so
    /// this is the property weir needs; a rebalance revokes everything, which
    /// the runtime handles by committing and closing all tasks.
    Range,
    /// `cooperative-sticky`: fewer partitions move on a rebalance and
    /// consumption continues during it, but partition `p` of two topics may
    /// land on different members, so it is only correct for sub-topologies
    /// with a single source topic. Needs incremental assign/unassign in the
    /// rebalance handler (rdkafka's default handler does that).
    CooperativeSticky,
}

impl AssignmentStrategy {
    fn as_str(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
        }
    }
}

/// Broker address plus the knobs weir tunes; produces the
/// [`ClientConfig`]s of every Kafka client weir creates.
///
/// Start from [`ClientSettings::new`], which holds weir's tuned defaults,
/// and change fields or add raw librdkafka properties with
/// [`ClientSettings::with`] (applied last, so they win).
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// `client.id`, shown in broker logs and metrics.
    pub client_id: String,

    // ---- consumer ----
    /// `fetch.queue.backoff.ms` (librdkafka default 1000). When a
    /// partition's pre-fetch queue is over its threshold librdkafka waits
    /// this long before fetching that partition again; with the default a
    /// consumer that drains its queue quickly stalls for a second at a time
    /// (measured on this machine: 1M records in 6.0 s with 1000 ms, 1.1 s
    /// with 10 ms).
    pub fetch_queue_backoff_ms: u32,
    /// `fetch.wait.max.ms` (default 500): how long the broker may hold a
    /// fetch that found no data. Brokers (Kafka and weir's own) answer as
    /// soon as data arrives, so this only paces an idle consumer's fetches.
    pub fetch_wait_max_ms: u32,
    /// `max.partition.fetch.bytes` (default 1 MiB): bytes per partition per
    /// fetch. 4 MiB lets one fetch carry a large compressed batch of small
    /// records.
    pub max_partition_fetch_bytes: u32,
    /// `fetch.max.bytes` (default 50 MiB): bytes per fetch response.
    pub fetch_max_bytes: u32,
    /// `queued.max.messages.kbytes` (default 64 MiB): the pre-fetch buffer.
    /// Documented per partition, but a group consumer forwards its
    /// partitions' queues into one, whose size librdkafka compares, so it
    /// bounds the consumer's queue over all its partitions. 16 MiB keeps
    /// memory bounded when a thread owns many partitions, and is still far
    /// more than one poll batch. The daemon's `--kafka` changes it
    /// (ARCHITECTURE.md, "Where the memory goes").
    pub queued_max_messages_kbytes: u32,
    /// `queued.min.messages` (default 100,000): how many records librdkafka
    /// pre-fetches (per partition as documented; for a group consumer, over
    /// the forwarded queue of all its partitions). The kbytes limit above
    /// counts payload only, while each pre-fetched record also costs a few
    /// hundred bytes of librdkafka bookkeeping: with small records the
    /// default let the queue, not the data, dominate the process's memory
    /// (windowed-count's peak RSS: 95–106 MiB with 100,000, 75–82 MiB with
    /// 20,000, same throughput; 5,000 starved the stream thread). Two poll
    /// batches per partition.
    pub queued_min_messages: u32,
    /// `session.timeout.ms` (librdkafka default 45 s): how long a consumer
    /// that died without leaving (SIGKILL) keeps its partitions; a restarted
    /// instance gets them only after that. 6 s is the smallest value a real
    /// broker accepts by default (`group.min.session.timeout.ms`).
    pub session_timeout_ms: u32,
    /// `heartbeat.interval.ms` (default 3 s): a third of the session timeout
    /// or less, as Kafka recommends.
    pub heartbeat_interval_ms: u32,
    /// `partition.assignment.strategy`.
    pub assignment_strategy: AssignmentStrategy,
    /// `isolation.level`: `read_committed` (true) hides records of open and
    /// aborted transactions, which exactly-once processing requires; it costs
    /// nothing when no producer uses transactions.
    pub read_committed: bool,

    // ---- producer ----
    /// `linger.ms`: how long the producer waits to fill a batch. A few
    /// milliseconds turn thousands of per-record requests into a few large
    /// batches.
    pub linger_ms: u32,
    /// `batch.size` in bytes (default 1,000,000, also the cap set by
    /// `message.max.bytes`).
    pub batch_size: u32,
    /// `batch.num.messages` (default 10,000): with ~50-byte records a
    /// 1 MB batch holds ~20,000, so the count, not the size, would cut
    /// batches short.
    pub batch_num_messages: u32,
    /// `compression.type` (default `none`): uncompressed records can be
    /// read by every Kafka client, including those installed without the
    /// optional codecs (kafka-python, aiokafka). `zstd` compresses small
    /// JSON records to ~8 bytes each (measured) where network or disk bytes
    /// matter more.
    pub compression: String,
    /// `queue.buffering.max.messages` (default 100,000): the producer's
    /// local queue. A stream thread produces in bursts between commits; a
    /// full queue means a retry loop on the hot path, so allow 1M.
    pub queue_buffering_max_messages: u32,
    /// `message.timeout.ms` (default 300 s): how long a record may wait for
    /// delivery before it fails. A failed delivery stops the commit, so 120 s
    /// (the Java client's `delivery.timeout.ms`) bounds how long a commit can
    /// hang on an unreachable cluster.
    pub message_timeout_ms: u32,
    /// `transaction.timeout.ms` for exactly-once producers (Kafka Streams
    /// uses 10 s): on a real cluster a crashed producer's open transaction
    /// holds back `read_committed` consumers until it times out, so keep it
    /// short. librdkafka requires `message.timeout.ms` to be no longer, so
    /// transactional producers use this value for both.
    pub transaction_timeout_ms: u32,

    /// Raw librdkafka properties applied after everything above.
    pub overrides: Vec<(String, String)>,
}

impl ClientSettings {
    /// weir's tuned defaults for the cluster at `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        ClientSettings {
            brokers: brokers.into(),
            client_id: "weir".to_string(),
            fetch_queue_backoff_ms: 10,
            fetch_wait_max_ms: 100,
            max_partition_fetch_bytes: 4 * 1024 * 1024,
            fetch_max_bytes: 50 * 1024 * 1024,
            queued_max_messages_kbytes: 16 * 1024,
            queued_min_messages: 20_000,
            session_timeout_ms: 6_000,
            heartbeat_interval_ms: 1_000,
            assignment_strategy: AssignmentStrategy::Range,
            read_committed: true,
            linger_ms: 5,
            batch_size: 1_000_000,
            batch_num_messages: 100_000,
            compression: "none".to_string(),
            queue_buffering_max_messages: 1_000_000,
            message_timeout_ms: 120_000,
            transaction_timeout_ms: 10_000,
            overrides: Vec::new(),
        }
    }

    /// Whether a user may set librdkafka property `key` to `value`, as the
    /// daemon's `--kafka` and `[kafka]` do: `Err` says why not, in one line.
    ///
    /// Refused: properties weir sets itself (the reason names the weir
    /// option to use instead), and any name or value librdkafka does not
    /// accept (checked on a librdkafka configuration object, without
    /// creating a client or connecting anywhere). Properties of the wrong
    /// client kind (a producer property reaches consumers too) are
    /// accepted: librdkafka ignores them there.
    pub fn check_property(key: &str, value: &str) -> Result<(), String> {
        if let Some((_, why)) = WEIR_OWNED.iter().find(|(k, _)| *k == key) {
            return Err(why.to_string());
        }
        let mut c = ClientConfig::new();
        c.set(key, value);
        match c.create_native_config() {
            Ok(_) => Ok(()),
            Err(KafkaError::ClientConfig(_, desc, _, _)) => Err(desc),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Adds a raw librdkafka property, applied after weir's own settings.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.push((key.into(), value.into()));
        self
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set("reconnect.backoff.ms", RECONNECT_BACKOFF_MS.to_string());
        c
    }

    fn finish(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.overrides {
            c.set(k, v);
        }
        c
    }

    /// A consumer in group `group_id`, as a stream thread uses it.
    ///
    /// Offsets are committed explicitly by weir's commit protocol, never in
    /// the background (`enable.auto.commit=false`), and a group with no
    /// committed offset starts at the beginning of its topics
    /// (`auto.offset.reset=earliest`) so no input is skipped.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false")
            // weir commits explicit offsets; storing them implicitly on
            // every poll would only be extra work.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "isolation.level",
                if self.read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            )
            .set("partition.assignment.strategy", self.assignment_strategy.as_str())
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", self.heartbeat_interval_ms.to_string())
            .set("fetch.queue.backoff.ms", self.fetch_queue_backoff_ms.to_string())
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            .set("max.partition.fetch.bytes", self.max_partition_fetch_bytes.to_string())
            .set("fetch.max.bytes", self.fetch_max_bytes.to_string())
            .set(
                "queued.max.messages.kbytes",
                self.queued_max_messages_kbytes.to_string(),
            )
            .set("queued.min.messages", self.queued_min_messages.to_string())
            // Internal topics are created by weir through the admin API with
            // the right partition count and cleanup policy; a consumer must
            // never create one implicitly with the broker's defaults.
            .set("allow.auto.create.topics", "false");
        self.finish(c)
    }

    /// A consumer that is assigned partitions by hand (`weir tail`,
    /// restoring a store from its changelog) and never joins a group.
    ///
    /// librdkafka still wants a `group.id`; nothing is committed under it.
    pub fn standalone_consumer_config(&self) -> ClientConfig {
        let mut c = self.consumer_config("weir-standalone");
        c.set("enable.partition.eof", "false");
        c
    }

    /// An idempotent producer: retries never duplicate or reorder records
    /// within a partition, keyed records land where Kafka's Java client would
    /// put them, and batches are lingered (and compressed as `compression` says).
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.idempotence", "true")
            // Java-compatible placement of keyed records (see
            // `default_partitioner`); librdkafka's default, consistent_random,
            // hashes with CRC32 instead.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.size", self.batch_size.to_string())
            .set("batch.num.messages", self.batch_num_messages.to_string())
            .set("compression.type", &self.compression)
            .set(
                "queue.buffering.max.messages",
                self.queue_buffering_max_messages.to_string(),
            )
            .set("message.timeout.ms", self.message_timeout_ms.to_string());
        // `allow.auto.create.topics` keeps librdkafka's producer default
        // (true): whether writing to a missing output topic creates it is the
        // cluster's policy (`auto.create.topics.enable`). Internal topics
        // never rely on it: weir creates them before producing.
        self.finish(c)
    }

    /// A transactional producer for exactly-once processing: the
    /// [`producer_config`](Self::producer_config) plus `transactional.id`.
    /// The id must be stable across restarts of the same stream thread so a
    /// restarted thread fences its predecessor.
    pub fn transactional_producer_config(&self, transactional_id: &str) -> ClientConfig {
        let mut c = self.producer_config();
        c.set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", self.transaction_timeout_ms.to_string())
            .set("message.timeout.ms", self.transaction_timeout_ms.to_string());
        // Overrides must still win over the line above.
        self.finish(c)
    }

    /// The largest record the producers accept (`message.max.bytes`:
    /// librdkafka's 1,000,000 unless overridden). Dead letters are cut to
    /// fit it, so that a bad record of any size can be dead-lettered.
    pub fn max_record_bytes(&self) -> usize {
        self.overrides
            .iter()
            .rev()
            .find(|(k, _)| k == "message.max.bytes")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1_000_000)
    }

    /// An admin / metadata client. It never auto-creates topics: asking for
    /// the metadata of a missing topic must not create it with the broker's
    /// default partition count behind weir's back (a broker with
    /// `auto.create.topics.enable`, weir's own included, does exactly that
    /// when asked to).
    pub fn admin_config(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("allow.auto.create.topics", "false");
        self.finish(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win() {
        let s = ClientSettings::new("b:1").with("linger.ms", "50");
        assert_eq!(s.producer_config().get("linger.ms"), Some("50"));
        let s = ClientSettings::new("b:1").with("transaction.timeout.ms", "1000");
        assert_eq!(
            s.transactional_producer_config("t").get("transaction.timeout.ms"),
            Some("1000")
        );
    }

    #[test]
    fn properties_are_checked_by_librdkafka() {
        assert_eq!(ClientSettings::check_property("queued.min.messages", "5000"), Ok(()));
        assert_eq!(ClientSettings::check_property("linger.ms", "20"), Ok(()));
        assert_eq!(
            ClientSettings::check_property("queued.min.mesages", "5000"),
            Err("No such configuration property: \"queued.min.mesages\"".to_string())
        );
        let e = ClientSettings::check_property("queued.min.messages", "lots").unwrap_err();
        assert!(e.contains("queued.min.messages"), "{e}");
        let e = ClientSettings::check_property("group.id", "mine").unwrap_err();
        assert!(e.contains("application id"), "{e}");
        let e = ClientSettings::check_property("enable.idempotence", "false").unwrap_err();
        assert!(e.contains("--guarantee"), "{e}");
    }

    #[test]
    fn the_record_limit_follows_message_max_bytes() {
        assert_eq!(ClientSettings::new("b:1").max_record_bytes(), 1_000_000);
        let s = ClientSettings::new("b:1").with("message.max.bytes", "2000000");
        assert_eq!(s.max_record_bytes(), 2_000_000);
    }

    #[test]
    fn consumer_is_tuned() {
        let c = ClientSettings::new("b:1").consumer_config("app");
        assert_eq!(c.get("group.id"), Some("app"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(c.get("isolation.level"), Some("read_committed"));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(c.get("queued.min.messages"), Some("20000"));
        assert_eq!(c.get("partition.assignment.strategy"), Some("range"));
    }

    #[test]
    fn producer_is_tuned() {
        let c = ClientSettings::new("b:1").producer_config();
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));
        assert_eq!(
            c.get("compression.type"),
            Some("none"),
            "every client can read what weir writes"
        );
        assert_eq!(c.get("linger.ms"), Some("5"));
    }
}
