//! The global thread of an application: Kafka Streams' `GlobalStreamThread`.
//!
//! One per application and instance, if the topology has global tables.
//! Its consumer has no group: it is *assigned* every partition of every
//! global topic, at the positions the global stores kept
//! (`weir_runtime::global::GlobalUpdater`), so every instance reads the
//! whole topic, and a restart reads on from where its store stands.
//!
//! [`bootstrap`] restores the stores up to the topics' end offsets (the
//! high watermarks, or the last stable offsets under `read_committed`, as
//! the consumer reaches them) *before* `run` starts any stream thread:
//! no task processes a record against a half-loaded table. [`GlobalThread::run`]
//! then keeps them up to date until the stop flag is set. Each poll's
//! records of a partition are written with the partition's new position
//! in one sled batch (data and position never disagree on disk).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use weir_runtime::global::{GlobalRecord, GlobalUpdater};
use weir_runtime::metrics::TopologyMetrics;
use weir_runtime::Plan;
use weir_state::StateDb;
use weir_topology::Topology;

use super::health::is_connectivity;
use super::RunStatus;
use crate::kafka::{assign_at, ClientSettings};
use crate::{Error, Result};

/// How long one poll waits for records (the stop flag is checked between
/// polls).
const POLL: Duration = Duration::from_millis(100);
/// Records taken per batch.
const BATCH: usize = 10_000;
/// How long the restore may see no progress at all before it fails.
const RESTORE_PATIENCE: Duration = Duration::from_secs(120);

/// A restored set of global stores and the consumer that keeps them up to
/// date.
pub struct GlobalThread {
    name: String,
    consumer: BaseConsumer,
    updater: GlobalUpdater,
    stop: Arc<AtomicBool>,
    db: Arc<StateDb>,
}

/// Open `topology`'s global stores in `db` and restore them up to their
/// topics' current end; `None` if the topology has none. The restore is
/// reported in `status` as thread `{application}-global` (not ready until
/// it ends), and the stores are registered there for interactive queries
/// (partition `-1`: a global store holds every partition). A stop during
/// the restore is `Error::Interrupted`.
pub fn bootstrap(
    topology: &Topology,
    plan: &Plan,
    settings: &ClientSettings,
    db: Arc<StateDb>,
    stop: Arc<AtomicBool>,
    status: &RunStatus,
    metrics: TopologyMetrics,
) -> Result<Option<GlobalThread>> {
    let app = &plan.application_id;
    let mut updater = GlobalUpdater::new(topology, app, &db)?;
    if updater.is_empty() {
        return Ok(None);
    }
    updater.set_metrics(metrics);
    let name = format!("{app}-global");
    status.register(&name);
    status.update(&name, |t| {
        t.ready = false;
        t.restoring = vec!["global".to_string()];
    });
    let mut config = settings.standalone_consumer_config();
    config.set("client.id", &name);
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| Error::kafka("creating the global consumer", e))?;
    let partitions = |topic: &str| plan.by_name.get(topic).map(|i| plan.topic_partitions[*i as usize]);
    updater.init(
        &partitions,
        &mut |topic: &str, partition: i32| -> std::result::Result<(i64, i64), weir_runtime::RuntimeError> {
            consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .map_err(|e| Error::kafka(format!("watermarks of {topic}/{partition}"), e).into())
        },
        true,
    )?;
    let mut targets = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, next) in updater.assignment() {
        let (_, high) = consumer
            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .map_err(|e| Error::kafka(format!("watermarks of {topic}/{partition}"), e))?;
        targets.insert((topic.clone(), partition), high);
        tpl.add_partition_offset(&topic, partition, Offset::Offset(next))
            .map_err(|e| Error::kafka(format!("global position of {topic}/{partition}"), e))?;
    }
    assign_at(&consumer, &tpl, Duration::from_secs(10))?;
    let mut g = GlobalThread {
        name,
        consumer,
        updater,
        stop,
        db,
    };
    let started = Instant::now();
    let restored = g.restore(&targets)?;
    tracing::info!(
        application = %app,
        records = restored,
        took_ms = started.elapsed().as_millis() as u64,
        "global stores restored"
    );
    for (store, reader) in g.updater.readers() {
        status.host(app, -1, &[store], &reader);
    }
    status.update(&g.name, |t| {
        t.ready = true;
        t.restoring.clear();
        t.tasks = vec!["global".to_string()];
        t.restored_records += restored;
    });
    Ok(Some(g))
}

impl GlobalThread {
    /// Read until every partition reaches its target.
    fn restore(&mut self, targets: &BTreeMap<(String, i32), i64>) -> Result<u64> {
        let before = self.updater.applied();
        let mut last_progress = Instant::now();
        loop {
            let pending: Vec<(&String, i32, i64)> = targets
                .iter()
                .filter(|((t, p), end)| self.updater.position(t, *p).is_some_and(|at| at < **end))
                .map(|((t, p), end)| (t, *p, *end))
                .collect();
            if pending.is_empty() {
                return Ok(self.updater.applied() - before);
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(Error::Interrupted("stopped while restoring the global stores".into()));
            }
            if self.poll_batch()? > 0 {
                last_progress = Instant::now();
                continue;
            }
            // Nothing came: a partition whose last offsets are no records
            // (transaction markers, compacted away) is at its end when the
            // consumer's position says so.
            if let Ok(positions) = self.consumer.position() {
                for (topic, partition, end) in pending {
                    if let Some(Offset::Offset(at)) = positions.find_partition(topic, partition).map(|e| e.offset()) {
                        let current = self.updater.position(topic, partition).unwrap_or(0);
                        if at > current {
                            self.updater.apply(topic, partition, &[], Some(at.min(end)))?;
                            last_progress = Instant::now();
                        }
                    }
                }
            }
            if last_progress.elapsed() > RESTORE_PATIENCE {
                return Err(Error::Timeout {
                    what: format!("the global topics to be readable up to {targets:?}"),
                    after: RESTORE_PATIENCE,
                });
            }
        }
    }

    /// One poll: up to [`BATCH`] records, applied per partition. Returns
    /// the records read.
    fn poll_batch(&mut self) -> Result<usize> {
        let mut messages: Vec<BorrowedMessage<'_>> = Vec::new();
        let mut timeout = POLL;
        while messages.len() < BATCH {
            match self.consumer.poll(timeout) {
                Some(Ok(m)) => messages.push(m),
                Some(Err(e)) if is_connectivity(&e) => {
                    // librdkafka reconnects by itself; read on later.
                    tracing::debug!(thread = %self.name, error = %e, "global consumer: the cluster was unreachable");
                    break;
                }
                Some(Err(e)) => return Err(Error::kafka("global consumer", e)),
                None => break,
            }
            timeout = Duration::ZERO;
        }
        let n = messages.len();
        let mut by_partition: BTreeMap<(&str, i32), Vec<GlobalRecord<'_>>> = BTreeMap::new();
        for m in &messages {
            by_partition
                .entry((m.topic(), m.partition()))
                .or_default()
                .push((m.offset(), m.key(), m.payload()));
        }
        for ((topic, partition), records) in by_partition {
            self.updater.apply(topic, partition, &records, None)?;
        }
        Ok(n)
    }

    /// Keep the global stores up to date until the stop flag is set.
    pub fn run(mut self) -> Result<()> {
        tracing::info!(thread = %self.name, topics = ?self.updater.topics(), "global thread started");
        while !self.stop.load(Ordering::Relaxed) {
            self.poll_batch()?;
        }
        self.db
            .flush_to_disk()
            .map_err(|e| Error::State(format!("writing state to disk: {e}")))
    }
}
