//! The embedded broker: librdkafka's in-process Kafka-protocol broker.
//! See [`EmbeddedBroker`].

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaType};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::admin::validate_topic;
use super::clients::assign_at;
use super::config::ClientSettings;
use crate::{Error, Result};

/// The topic through which clients in other processes ask the embedded
/// broker to create topics. See [`EmbeddedBroker`].
pub const CONTROL_TOPIC: &str = "__weir_broker_admin";

/// The most partitions weir lets the embedded broker create for one topic.
/// The mock allocates every partition up front; this keeps a typo from
/// allocating gigabytes.
pub const MAX_PARTITIONS: i32 = 10_000;

/// How long the broker thread blocks in one poll of the control topic, and
/// so the longest a drop of [`EmbeddedBroker`] waits for the thread.
const CONTROL_POLL: Duration = Duration::from_millis(20);

enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        reply: mpsc::SyncSender<Result<()>>,
    },
}

/// A Kafka-protocol broker running inside this process, on its own thread.
///
/// librdkafka's mock cluster is not `Send`, so a dedicated thread owns it
/// and this handle talks to it through a channel; the handle itself can be
/// moved and shared freely. Dropping the handle stops the thread and the
/// broker (and loses its data: everything is in memory).
///
/// It wraps `rdkafka::mocking::MockCluster`, which is an
/// in-memory Kafka broker listening on `127.0.0.1` on a port chosen at run
/// time. Any Kafka client (weir in another process, kcat, the Java client)
/// can connect to it. It is meant for trying weir and for tests, not for
/// data you want to keep.
///
/// # What this broker does and does not do (measured with librdkafka 2.12.1)
///
/// - **Topic creation.** It does not implement the admin API: a
///   `CreateTopics` request from an `AdminClient` is never answered (the
///   call fails with `OperationTimedOut` after its request timeout) and
///   creates nothing. A Metadata request that allows auto-creation (what
///   a producer sends for an unknown topic by default) creates the topic with
///   **4 partitions**, a default the mock API cannot change; a Produce request
///   for an unknown topic fails; consumers never create topics. The mock
///   API's own call (`MockCluster::create_topic`) creates a topic with any
///   partition count — [`EmbeddedBroker::create_topic`] uses it.
/// - **Creating topics from another process.** Because a client of a
///   standalone broker (`weir dev-broker`, then `weir run --brokers ...`)
///   cannot reach the mock API, the broker thread also serves a tiny control
///   protocol over Kafka itself: it creates the one-partition topic
///   [`CONTROL_TOPIC`] at start and reads it; a record with the topic name as
///   key and `create <partitions>` (or `create default`) as value asks it to
///   create that topic. [`Admin::ensure_topics`](super::Admin::ensure_topics)
///   recognizes the broker by that topic and uses this path, then waits for
///   the topic to show in metadata; so the same call works against a real
///   cluster and against this broker. Existing topics are left alone.
/// - **No compaction, bounded retention.** Each partition keeps at most
///   5 MiB and 100,000 message sets; older data is dropped *silently*.
///   `cleanup.policy=compact` cannot be set and would not be honoured.
/// - **Transactions are accepted, not enforced.** The transactional protocol
///   (InitProducerId, AddPartitionsToTxn, EndTxn, ...) answers success, but
///   no commit/abort markers are written, `read_committed` consumers see
///   records of aborted transactions, and `TxnOffsetCommit` acknowledges
///   offsets without storing them. Exactly-once processing cannot be tested
///   against it.
/// - **Consumer groups** work (classic protocol, `range` and
///   `cooperative-sticky` assignors, offset commits), with two timing
///   quirks. The first join of a group is delayed by
///   `group.initial.rebalance.delay.ms` (3 s by default);
///   [`EmbeddedBroker::start`] sets it to 0 through the raw mock handle, so
///   a new group reads its first record within ~150 ms. And every later
///   rebalance (a member joins or leaves) lasts `session.timeout.ms - 1 s`
///   however fast the members rejoin, which is why
///   [`ClientSettings::for_embedded_broker`] shortens the session.
/// - **Static membership** (`group.instance.id`) is stored but not used to
///   recognise a restarted member (read from librdkafka's source): a restart
///   is a new member.
pub struct EmbeddedBroker {
    bootstrap: String,
    default_partitions: i32,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap", &self.bootstrap)
            .field("default_partitions", &self.default_partitions)
            .finish()
    }
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster on `127.0.0.1` with a port chosen by the
    /// OS. Topics created through weir without an explicit partition count
    /// get `default_partitions` partitions.
    pub fn start(default_partitions: i32) -> Result<EmbeddedBroker> {
        check_partitions(default_partitions)?;
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("weir-embedded-broker".into())
            .spawn(move || broker_thread(default_partitions, ready_tx, cmd_rx))
            .map_err(|e| Error::EmbeddedBroker(format!("cannot spawn its thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(bootstrap)) => Ok(EmbeddedBroker {
                bootstrap,
                default_partitions,
                commands: Some(cmd_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::EmbeddedBroker("its thread exited during start-up".into()))
            }
        }
    }

    /// The address to give Kafka clients, `127.0.0.1:PORT`.
    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap.clone()
    }

    /// The partition count of topics created without an explicit one.
    pub fn default_partitions(&self) -> i32 {
        self.default_partitions
    }

    /// Creates `name` with `partitions` partitions through the mock API.
    ///
    /// Fails with [`Error::TopicCreation`] if the topic already exists (use
    /// [`Admin::ensure_topics`](super::Admin::ensure_topics) for "create if
    /// missing"). The topic is visible to clients when this returns.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        validate_topic(name)?;
        check_partitions(partitions)?;
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let gone = || Error::EmbeddedBroker("its thread has stopped".into());
        self.commands
            .as_ref()
            .ok_or_else(gone)?
            .send(Command::CreateTopic {
                name: name.to_string(),
                partitions,
                reply: reply_tx,
            })
            .map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())?
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        // Closing the channel is the stop signal.
        drop(self.commands.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

fn broker_thread(default_partitions: i32, ready: mpsc::SyncSender<Result<String>>, commands: mpsc::Receiver<Command>) {
    // `test.mock.num.brokers` makes this client create (and, when dropped,
    // destroy) a mock cluster; `Client::mock_cluster` then gives both the
    // safe wrapper and, through the client's handle, the raw pointer that
    // the few mock calls rdkafka does not wrap need.
    let owner = match owner_client() {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let Some(cluster) = owner.mock_cluster() else {
        let _ = ready.send(Err(Error::EmbeddedBroker(
            "librdkafka did not create a mock cluster".into(),
        )));
        return;
    };
    // SAFETY: `owner` is a live client configured with
    // `test.mock.num.brokers`, so the handle it returns is its mock cluster,
    // which lives as long as `owner`, i.e. past every use below.
    unsafe {
        let raw = rdkafka::bindings::rd_kafka_handle_mock_cluster(owner.native_ptr());
        if !raw.is_null() {
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(raw, 0);
        }
    }
    let bootstrap = cluster.bootstrap_servers();

    let control = match start_control(&cluster, &bootstrap) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    tracing::info!(%bootstrap, default_partitions, "embedded Kafka broker started");
    if ready.send(Ok(bootstrap)).is_err() {
        return;
    }

    loop {
        match commands.try_recv() {
            Ok(Command::CreateTopic {
                name,
                partitions,
                reply,
            }) => {
                let _ = reply.send(create(&cluster, &name, partitions));
                continue;
            }
            Err(mpsc::TryRecvError::Empty) => {}
            Err(mpsc::TryRecvError::Disconnected) => break,
        }
        match control.poll(CONTROL_POLL) {
            Some(Ok(msg)) => {
                let key = msg.key().unwrap_or_default();
                let value = msg.payload().unwrap_or_default();
                match parse_request(key, value, default_partitions) {
                    Ok((name, partitions)) => match create(&cluster, &name, partitions) {
                        Ok(()) => {}
                        Err(Error::TopicCreation { reason, .. }) if reason == EXISTS => {}
                        Err(e) => tracing::warn!(topic = %name, "control request failed: {e}"),
                    },
                    Err(e) => tracing::warn!(offset = msg.offset(), "bad control request: {e}"),
                }
            }
            Some(Err(e)) => tracing::debug!("embedded broker control consumer: {e}"),
            None => {}
        }
    }
    // Clients first, then the cluster (in `owner`).
    drop(control);
    drop(cluster);
    drop(owner);
    tracing::info!("embedded Kafka broker stopped");
}

const EXISTS: &str = "topic already exists";

fn owner_client() -> Result<Client<DefaultClientContext>> {
    let mut config = ClientConfig::new();
    config
        .set("test.mock.num.brokers", "1")
        .set("client.id", "weir-embedded-broker");
    let native = config
        .create_native_config()
        .map_err(|e| Error::kafka("configuring the embedded broker", e))?;
    Client::new(&config, native, RDKafkaType::RD_KAFKA_PRODUCER, DefaultClientContext)
        .map_err(|e| Error::kafka("starting the embedded broker", e))
}

fn start_control(cluster: &MockCluster<'_, DefaultClientContext>, bootstrap: &str) -> Result<BaseConsumer> {
    create(cluster, CONTROL_TOPIC, 1)?;
    let consumer: BaseConsumer = ClientSettings::new(bootstrap)
        .with("client.id", "weir-embedded-broker-control")
        // The broker holds an empty fetch for this long (it does not answer
        // early when data arrives), so this bounds how long a topic request
        // waits; 25 ms costs 40 idle fetches a second, in-process.
        .with("fetch.wait.max.ms", "25")
        .standalone_consumer_config()
        .create()
        .map_err(|e| Error::kafka("creating the embedded broker's control consumer", e))?;
    // Knowing the partition leader before assigning saves librdkafka's
    // 500 ms offset-query backoff (see `assign_at`).
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(CONTROL_TOPIC, 0, Offset::Beginning)
        .map_err(|e| Error::kafka("assigning the control topic", e))?;
    assign_at(&consumer, &tpl, Duration::from_secs(10))?;
    Ok(consumer)
}

fn create(cluster: &MockCluster<'_, DefaultClientContext>, name: &str, partitions: i32) -> Result<()> {
    validate_topic(name)?;
    check_partitions(partitions)?;
    match cluster.create_topic(name, partitions, 1) {
        Ok(()) => {
            tracing::info!(topic = name, partitions, "embedded broker created topic");
            Ok(())
        }
        Err(rdkafka::error::KafkaError::MockCluster(RDKafkaErrorCode::TopicAlreadyExists)) => {
            Err(Error::TopicCreation {
                topic: name.to_string(),
                reason: EXISTS.to_string(),
            })
        }
        Err(e) => Err(Error::TopicCreation {
            topic: name.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Encodes a control request; see [`EmbeddedBroker`].
pub(crate) fn encode_request(partitions: Option<i32>) -> String {
    match partitions {
        Some(n) => format!("create {n}"),
        None => "create default".to_string(),
    }
}

fn parse_request(key: &[u8], value: &[u8], default_partitions: i32) -> Result<(String, i32)> {
    let name = std::str::from_utf8(key).map_err(|_| Error::InvalidArgument("topic name is not UTF-8".into()))?;
    let value = std::str::from_utf8(value).map_err(|_| Error::InvalidArgument("request is not UTF-8".into()))?;
    let arg = value
        .strip_prefix("create ")
        .ok_or_else(|| Error::InvalidArgument(format!("unknown request {value:?}")))?;
    let partitions = if arg == "default" {
        default_partitions
    } else {
        arg.parse()
            .map_err(|_| Error::InvalidArgument(format!("bad partition count {arg:?}")))?
    };
    Ok((name.to_string(), partitions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_requests_round_trip() {
        let v = encode_request(Some(7));
        assert_eq!(parse_request(b"t", v.as_bytes(), 3).unwrap(), ("t".into(), 7));
        let v = encode_request(None);
        assert_eq!(parse_request(b"t", v.as_bytes(), 3).unwrap(), ("t".into(), 3));
        assert!(parse_request(b"t", b"delete", 3).is_err());
        assert!(parse_request(b"t", b"create x", 3).is_err());
        assert!(parse_request(b"\xff", b"create 1", 3).is_err());
    }

    #[test]
    fn partition_counts_are_bounded() {
        assert!(check_partitions(0).is_err());
        assert!(check_partitions(MAX_PARTITIONS + 1).is_err());
        assert!(check_partitions(1).is_ok());
    }
}
