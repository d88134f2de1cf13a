//! The rdkafka implementation of weir-runtime's [`Transport`]: the
//! producers, the stream thread's consumer (watermarks, group offsets) and
//! a [`ChangelogReader`].
//!
//! At-least-once, records that need no delivery report (outputs,
//! repartition records, dead letters) go through a producer with
//! `delivery.report.only.error`: successful ones are freed on librdkafka's
//! broker thread instead of being handed back one by one to the stream
//! thread (serving those reports was the stream thread's largest single
//! cost in `weir bench e2e`). Changelog and checkpoint records go through
//! a second producer that reports every delivery, since the commit needs
//! their offsets: each producer's [`DeliveryTracker`] keeps them, by the
//! record's delivery opaque ([`TRACK_END`] for changelog records,
//! [`TRACK_OFFSET`] plus the index of its task in
//! `KafkaIo::checkpoint_tasks` for a checkpoint record, [`UNTRACKED`] for
//! the rest).
//!
//! Exactly-once, one transactional producer carries everything, since a
//! transaction belongs to one producer: the commit's outputs, repartition,
//! changelog and checkpoint records and, through
//! `send_offsets_to_transaction` with the consumer's group metadata, its
//! input offsets (KIP-447: a member whose generation is over cannot
//! commit them). Its `transactional.id` is stable across restarts of the
//! same thread, so a restarted thread's `init_transactions` aborts what
//! its predecessor left open at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};
use rdkafka::{Offset, TopicPartitionList};
use weir_runtime::transport::{
    Delivered, GroupOffset, Outgoing, RangeReader, ReadProgress, ReadRecord, Track, Transport,
};
use weir_runtime::{RuntimeError, TaskId};

use super::health::Health;
use super::restore::ChangelogReader;
use super::thread::StreamContext;
use crate::kafka::delivery::{DeliveryTracker, TRACK_END, TRACK_OFFSET, UNTRACKED};
use crate::kafka::{flush_producer, ClientSettings};
use crate::{Error, Result};

/// A commit that has waited this long for delivery reports the wait as a
/// problem (`/readyz` 503) while it goes on waiting.
const SLOW_DELIVERY: Duration = Duration::from_secs(2);

/// How long a transaction call (init, offsets, commit, abort) may take.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A stream thread's producers and reader.
pub struct KafkaIo {
    /// Records that need no delivery report; `None` under exactly-once,
    /// where everything goes through `tracked` (one transaction).
    quiet: Option<BaseProducer<DeliveryTracker>>,
    /// Changelog and checkpoint records (every delivery reported); under
    /// exactly-once every record: the transactional producer.
    tracked: BaseProducer<DeliveryTracker>,
    health: Arc<Health>,
    reader: ChangelogReader,
    /// The tasks of the checkpoint records sent since the last flush.
    checkpoint_tasks: Vec<TaskId>,
    stop: Arc<AtomicBool>,
    delivery_timeout: Duration,
}

impl KafkaIo {
    /// `transactional_id`: exactly-once, with that stable id (see the
    /// module docs); `None`: at-least-once.
    pub fn new(
        settings: &ClientSettings,
        health: Arc<Health>,
        stop: Arc<AtomicBool>,
        delivery_timeout: Duration,
        transactional_id: Option<&str>,
    ) -> Result<KafkaIo> {
        let context = || DeliveryTracker::new().with_health(health.clone());
        let (quiet, tracked) = match transactional_id {
            None => {
                let quiet: BaseProducer<DeliveryTracker> = settings
                    .producer_config()
                    .set("delivery.report.only.error", "true")
                    .create_with_context(context())
                    .map_err(|e| Error::kafka("creating the producer", e))?;
                let tracked: BaseProducer<DeliveryTracker> = settings
                    .producer_config()
                    .create_with_context(context())
                    .map_err(|e| Error::kafka("creating the changelog producer", e))?;
                (Some(quiet), tracked)
            }
            Some(id) => {
                let tracked: BaseProducer<DeliveryTracker> = settings
                    .transactional_producer_config(id)
                    .create_with_context(context())
                    .map_err(|e| Error::kafka("creating the transactional producer", e))?;
                // Fences an earlier producer with this id and aborts the
                // transaction it left open.
                tracked
                    .init_transactions(TXN_CALL_TIMEOUT)
                    .map_err(|e| Error::from(txn_error(&format!("initializing transactions as {id:?}"), e)))?;
                tracing::info!(transactional_id = id, "transactional producer ready");
                (None, tracked)
            }
        };
        Ok(KafkaIo {
            quiet,
            tracked,
            health,
            reader: ChangelogReader::new(settings),
            checkpoint_tasks: Vec::new(),
            stop,
            delivery_timeout,
        })
    }

    /// The producers in use.
    fn producers(&self) -> impl Iterator<Item = &BaseProducer<DeliveryTracker>> {
        self.quiet.iter().chain(std::iter::once(&self.tracked))
    }

    /// On the way out: deliver what is queued, or, after a failure (nothing
    /// was committed past those records, they are replayed), drop it at
    /// once rather than wait for a cluster that may not answer.
    pub fn finish(&self, failed: bool) {
        for p in self.producers() {
            if failed {
                p.purge(PurgeConfig::default().queue().inflight());
            } else {
                let _ = flush_producer(p, Duration::from_secs(10));
            }
        }
    }

    fn in_flight(&self) -> i32 {
        self.producers().map(|p| p.in_flight_count()).sum()
    }

    /// Waits until everything sent through both producers is delivered,
    /// riding out an outage up to the delivery timeout: after
    /// [`SLOW_DELIVERY`] the wait is a problem (`/readyz` 503, one log
    /// line); a stop request ends the wait (nothing is committed then, the
    /// work is replayed).
    fn await_delivery(&self) -> Result<()> {
        const STEP: Duration = Duration::from_millis(200);
        let started = Instant::now();
        loop {
            let done = self.producers().all(|p| flush_producer(p, STEP).is_ok());
            let waited = started.elapsed();
            if done {
                if waited >= SLOW_DELIVERY {
                    self.health.ok();
                }
                return Ok(());
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(Error::Interrupted(format!(
                    "stopping while {} record(s) wait for delivery",
                    self.in_flight()
                )));
            }
            if waited >= self.delivery_timeout {
                return Err(Error::Timeout {
                    what: format!(
                        "{} record(s) to be delivered (the delivery timeout; see --delivery-timeout-ms)",
                        self.in_flight()
                    ),
                    after: waited,
                });
            }
            if waited >= SLOW_DELIVERY {
                self.health.problem(format!(
                    "a commit has waited {} s for {} record(s) to be delivered",
                    waited.as_secs(),
                    self.in_flight()
                ));
            }
        }
    }
}

/// [`Transport`] for one call of the task manager: the thread's
/// [`KafkaIo`] and its consumer (which the rebalance callback lends).
pub struct KafkaTransport<'a> {
    pub io: &'a mut KafkaIo,
    pub consumer: &'a BaseConsumer<StreamContext>,
}

/// The high watermark of a partition as of the consumer's last fetch
/// response for it (librdkafka's cache: no request to the broker, unlike
/// `fetch_watermarks`, which cost one round trip per partition per commit
/// on the stream thread). `None` until a fetch has reported one.
fn cached_high_watermark(consumer: &BaseConsumer<StreamContext>, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the topic
    // is a NUL-terminated string that outlives the call; `low` and `high`
    // are valid for writes. The function only reads librdkafka's cache.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

impl RangeReader for KafkaTransport<'_> {
    fn read(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        max: usize,
        f: &mut dyn FnMut(ReadRecord<'_>) -> std::result::Result<(), RuntimeError>,
    ) -> std::result::Result<ReadProgress, RuntimeError> {
        self.io.reader.read(topic, partition, from, to, max, f)
    }
}

impl Transport for KafkaTransport<'_> {
    fn send(&mut self, r: Outgoing<'_>) -> std::result::Result<(), RuntimeError> {
        let (producer, opaque) = match r.track {
            Track::Quiet => (self.io.quiet.as_ref().unwrap_or(&self.io.tracked), UNTRACKED),
            Track::Changelog => (&self.io.tracked, TRACK_END),
            Track::Checkpoint(id) => {
                self.io.checkpoint_tasks.push(id);
                (&self.io.tracked, TRACK_OFFSET + self.io.checkpoint_tasks.len() - 1)
            }
        };
        let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(r.topic, opaque)
            .partition(r.partition)
            .timestamp(r.timestamp);
        if let Some(k) = r.key {
            record = record.key(k);
        }
        if let Some(v) = r.value {
            record = record.payload(v);
        }
        if !r.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (key, value) in r.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(*value),
                });
            }
            record = record.headers(headers);
        }
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The cluster does not take records as fast as they
                    // come (or not at all, in an outage): wait, unless told
                    // to stop.
                    if self.io.stop.load(Ordering::Relaxed) {
                        return Err(RuntimeError::Interrupted(format!(
                            "stopping while producing to {}: the producer's queue is full",
                            r.topic
                        )));
                    }
                    crate::kafka::serve_deliveries_after(producer, Duration::from_millis(5));
                    record = back;
                }
                Err((e, _)) => return Err(Error::kafka(format!("producing to {}", r.topic), e).into()),
            }
        }
    }

    fn flush(&mut self) -> std::result::Result<Delivered, RuntimeError> {
        self.io.await_delivery()?;
        // Any producer's first failure fails the commit (and every later
        // one: a tracker stays failed, until a transaction abort drops what
        // failed with it).
        for p in self.io.producers() {
            p.context().check("(several)")?;
        }
        let tracked = self.io.tracked.context().take_tracked();
        let tasks = std::mem::take(&mut self.io.checkpoint_tasks);
        let checkpoints = tracked
            .offsets
            .into_iter()
            .filter_map(|(opaque, offset)| tasks.get(opaque - TRACK_OFFSET).map(|id| (*id, offset)))
            .collect();
        Ok(Delivered {
            changelog_ends: tracked.ends,
            checkpoints,
        })
    }

    fn tick(&mut self) {
        self.io.quiet.as_ref().unwrap_or(&self.io.tracked).poll(Duration::ZERO);
    }

    fn watermarks(&mut self, topic: &str, partition: i32) -> std::result::Result<(i64, i64), RuntimeError> {
        // Through the stream thread's own consumer: no new connection.
        Ok(self
            .consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(|e| Error::kafka(format!("watermarks of {topic}/{partition}"), e))?)
    }

    fn cached_high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        cached_high_watermark(self.consumer, topic, partition)
    }

    fn committed(&mut self, partitions: &[(String, i32)]) -> std::result::Result<Vec<GroupOffset>, RuntimeError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            tpl.add_partition(topic, *partition);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| Error::kafka("reading the group's committed offsets", e))?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| GroupOffset {
                topic: e.topic().to_string(),
                partition: e.partition(),
                offset: match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                },
                metadata: e.metadata().to_string(),
            })
            .collect())
    }

    fn commit_offsets(&mut self, offsets: &[GroupOffset], wait: bool) -> std::result::Result<(), RuntimeError> {
        let tpl = offsets_list(offsets);
        if tpl.count() == 0 {
            return Ok(());
        }
        let mode = if wait { CommitMode::Sync } else { CommitMode::Async };
        Ok(self
            .consumer
            .commit(&tpl, mode)
            .map_err(|e| Error::kafka("committing consumer offsets", e))?)
    }

    fn begin_transaction(&mut self) -> std::result::Result<(), RuntimeError> {
        self.io
            .tracked
            .begin_transaction()
            .map_err(|e| txn_error("beginning a transaction", e))
    }

    fn commit_transaction(&mut self, offsets: &[GroupOffset]) -> std::result::Result<(), RuntimeError> {
        let tpl = offsets_list(offsets);
        if tpl.count() > 0 {
            let group = self.consumer.group_metadata().ok_or_else(|| {
                RuntimeError::Transport("committing a transaction: the consumer has no group metadata".into())
            })?;
            self.io
                .tracked
                .send_offsets_to_transaction(&tpl, &group, TXN_CALL_TIMEOUT)
                .map_err(|e| txn_error("adding the consumed offsets to the transaction", e))?;
        }
        self.io
            .tracked
            .commit_transaction(TXN_CALL_TIMEOUT)
            .map_err(|e| txn_error("committing the transaction", e))
    }

    fn abort_transaction(&mut self) -> std::result::Result<(), RuntimeError> {
        let r = self
            .io
            .tracked
            .abort_transaction(TXN_CALL_TIMEOUT)
            .map_err(|e| txn_error("aborting the transaction", e));
        // The records of the aborted transaction report their purge: serve
        // those reports, then forget them (they were dropped by design).
        let _ = flush_producer(&self.io.tracked, Duration::from_secs(10));
        self.io.tracked.context().start_over();
        self.io.checkpoint_tasks.clear();
        r
    }

    fn take_offset_commit_failure(&mut self) -> bool {
        self.consumer.context().offsets_outdated.swap(false, Ordering::Relaxed)
    }
}

/// `offsets` (those that name one) as rdkafka's list, with their metadata.
fn offsets_list(offsets: &[GroupOffset]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for o in offsets {
        let Some(offset) = o.offset else { continue };
        let mut e = tpl.add_partition(&o.topic, o.partition);
        if e.set_offset(Offset::Offset(offset)).is_err() {
            continue;
        }
        if !o.metadata.is_empty() {
            e.set_metadata(&o.metadata);
        }
    }
    tpl
}

/// A transaction call's error for the task manager: fatal ones (the
/// producer was fenced by a newer one with its id, or the transaction
/// coordinator gave up on it) and a group generation that is over mean
/// another member owns the tasks now ([`RuntimeError::Fenced`]); the rest
/// leave the transaction to abort, after which the member goes on.
fn txn_error(what: &str, e: KafkaError) -> RuntimeError {
    let fenced = match &e {
        KafkaError::Transaction(t) => {
            t.is_fatal()
                || matches!(
                    t.code(),
                    RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                        | RDKafkaErrorCode::FencedInstanceId
                )
        }
        _ => false,
    };
    if fenced {
        RuntimeError::Fenced(format!("{what}: {e}"))
    } else {
        RuntimeError::Transport(format!("{what}: {e}"))
    }
}
