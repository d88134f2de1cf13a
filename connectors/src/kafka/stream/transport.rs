//! The rdkafka implementation of weir-runtime's [`Transport`]: two
//! producers, the stream thread's consumer (watermarks, group offsets) and
//! a [`ChangelogReader`].
//!
//! Records that need no delivery report (outputs, repartition records,
//! dead letters) go through a producer with `delivery.report.only.error`:
//! successful ones are freed on librdkafka's broker thread instead of
//! being handed back one by one to the stream thread (serving those
//! reports was the stream thread's largest single cost in `weir bench
//! e2e`). Changelog and checkpoint records go through a second producer
//! that reports every delivery, since the commit needs their offsets: each
//! producer's [`DeliveryTracker`] keeps them, by the record's delivery
//! opaque ([`TRACK_END`] for changelog records, [`TRACK_OFFSET`] plus the
//! index of its task in `KafkaIo::checkpoint_tasks` for a checkpoint
//! record, [`UNTRACKED`] for the rest).

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

/// A stream thread's producers and reader.
pub struct KafkaIo {
    producer: BaseProducer<DeliveryTracker>,
    changelog_producer: BaseProducer<DeliveryTracker>,
    health: Arc<Health>,
    reader: ChangelogReader,
    /// The tasks of the checkpoint records sent since the last flush.
    checkpoint_tasks: Vec<TaskId>,
    stop: Arc<AtomicBool>,
    delivery_timeout: Duration,
}

impl KafkaIo {
    pub fn new(
        settings: &ClientSettings,
        health: Arc<Health>,
        stop: Arc<AtomicBool>,
        delivery_timeout: Duration,
    ) -> Result<KafkaIo> {
        let context = || DeliveryTracker::new().with_health(health.clone());
        let producer: BaseProducer<DeliveryTracker> = settings
            .producer_config()
            .set("delivery.report.only.error", "true")
            .create_with_context(context())
            .map_err(|e| Error::kafka("creating the producer", e))?;
        let changelog_producer: BaseProducer<DeliveryTracker> = settings
            .producer_config()
            .create_with_context(context())
            .map_err(|e| Error::kafka("creating the changelog producer", e))?;
        Ok(KafkaIo {
            producer,
            changelog_producer,
            health,
            reader: ChangelogReader::new(settings),
            checkpoint_tasks: Vec::new(),
            stop,
            delivery_timeout,
        })
    }

    /// On the way out: deliver what is queued, or, after a failure (nothing
    /// was committed past those records, they are replayed), drop it at
    /// once rather than wait for a cluster that may not answer.
    pub fn finish(&self, failed: bool) {
        if failed {
            let purge = PurgeConfig::default().queue().inflight();
            self.producer.purge(purge);
            self.changelog_producer.purge(purge);
        } else {
            let _ = flush_producer(&self.producer, Duration::from_secs(10));
            let _ = flush_producer(&self.changelog_producer, Duration::from_secs(10));
        }
    }

    fn in_flight(&self) -> i32 {
        self.producer.in_flight_count() + self.changelog_producer.in_flight_count()
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
            let done =
                flush_producer(&self.producer, STEP).is_ok() && flush_producer(&self.changelog_producer, STEP).is_ok();
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
            Track::Quiet => (&self.io.producer, UNTRACKED),
            Track::Changelog => (&self.io.changelog_producer, TRACK_END),
            Track::Checkpoint(id) => {
                self.io.checkpoint_tasks.push(id);
                (
                    &self.io.changelog_producer,
                    TRACK_OFFSET + self.io.checkpoint_tasks.len() - 1,
                )
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
                    producer.poll(Duration::from_millis(5));
                    record = back;
                }
                Err((e, _)) => return Err(Error::kafka(format!("producing to {}", r.topic), e).into()),
            }
        }
    }

    fn flush(&mut self) -> std::result::Result<Delivered, RuntimeError> {
        self.io.await_delivery()?;
        // Either producer's first failure fails the commit (and every later
        // one: a tracker stays failed).
        self.io.producer.context().check("(several)")?;
        let changelog = self.io.changelog_producer.context();
        changelog.check("(several)")?;
        let tracked = changelog.take_tracked();
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
        self.io.producer.poll(Duration::ZERO);
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
        if tpl.count() == 0 {
            return Ok(());
        }
        let mode = if wait { CommitMode::Sync } else { CommitMode::Async };
        Ok(self
            .consumer
            .commit(&tpl, mode)
            .map_err(|e| Error::kafka("committing consumer offsets", e))?)
    }

    fn take_offset_commit_failure(&mut self) -> bool {
        self.consumer.context().offsets_outdated.swap(false, Ordering::Relaxed)
    }
}
