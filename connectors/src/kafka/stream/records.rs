//! The record path of a stream thread: a consumed record through its task,
//! dead letters, and the task's outputs to the producer (repartition
//! records numbered by origin, so a replay upstream is not applied twice
//! downstream).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord};
use weir_runtime::dead_letter::DeadLetterOut;
use weir_runtime::{Origin, Task, TaskId};

use super::thread::*;
use crate::kafka::default_partitioner;
use crate::{Error, Result};

/// Header carrying a repartition record's origin (16 bytes: upstream
/// partition key i32, input offset i64, index u32, big-endian).
pub const ORIGIN_HEADER: &str = "weir.origin";

/// Latencies are measured on one record in this many.
const SAMPLE: u64 = 64;

fn origin_bytes(o: &Origin) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&o.upstream_partition.to_be_bytes());
    b[4..12].copy_from_slice(&o.offset.to_be_bytes());
    b[12..].copy_from_slice(&o.index.to_be_bytes());
    b
}

fn parse_origin(msg: &BorrowedMessage<'_>) -> Option<Origin> {
    let headers = msg.headers()?;
    for h in headers.iter() {
        if h.key == ORIGIN_HEADER {
            let v = h.value?;
            if v.len() != 16 {
                return None;
            }
            return Some(Origin {
                upstream_partition: i32::from_be_bytes(v[..4].try_into().ok()?),
                offset: i64::from_be_bytes(v[4..12].try_into().ok()?),
                index: u32::from_be_bytes(v[12..].try_into().ok()?),
            });
        }
    }
    None
}

/// Send one record, waiting while librdkafka's local queue is full.
#[allow(clippy::too_many_arguments)]
pub(super) fn send(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    partition: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    timestamp: i64,
    headers: Option<OwnedHeaders>,
    track: usize,
    stop: &AtomicBool,
) -> Result<()> {
    let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, track)
        .partition(partition)
        .timestamp(timestamp);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    if let Some(h) = headers {
        record = record.headers(h);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                // The cluster does not take records as fast as they come
                // (or not at all, in an outage): wait, unless told to stop.
                if stop.load(Ordering::Relaxed) {
                    return Err(Error::Interrupted(format!(
                        "stopping while producing to {topic}: the producer's queue is full"
                    )));
                }
                producer.poll(Duration::from_millis(5));
                record = r;
            }
            Err((e, _)) => return Err(Error::kafka(format!("producing to {topic}"), e)),
        }
    }
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl ThreadState {
    pub(super) fn process(&mut self, msg: &BorrowedMessage<'_>) -> Result<()> {
        let plan = &self.app.plan;
        let handle = msg.topic_ptr() as usize;
        let topic = match self.topic_handles.iter().find(|(h, _)| *h == handle) {
            Some(&(_, t)) => t,
            None => {
                let Some(&t) = plan.by_name.get(msg.topic()) else {
                    return Ok(());
                };
                self.topic_handles.push((handle, t));
                t
            }
        };
        let Some(id) = plan.task_of(topic, msg.partition()) else {
            return Ok(());
        };
        let Some(task) = self.tasks.get_mut(&id) else {
            // Not (or no longer) ours: the consumer will drop it at the
            // next rebalance.
            return Ok(());
        };
        let ts = msg.timestamp().to_millis().unwrap_or_else(now_ms);
        let origin = if plan.internal[topic as usize] {
            parse_origin(msg)
        } else {
            None
        };
        self.seen += 1;
        self.uncommitted += 1;
        let timed = self.seen.is_multiple_of(SAMPLE).then(Instant::now);
        match origin {
            Some(o) => {
                task.process_from(topic, msg.offset(), ts, msg.key(), msg.payload(), o);
            }
            None => task.process(topic, msg.offset(), ts, msg.key(), msg.payload()),
        }
        if let Some(t) = timed {
            self.app.metrics.process_latency.observe(t.elapsed().as_secs_f64());
        }
        if !task.ctx.dead_letters.is_empty() {
            let letters = std::mem::take(&mut task.ctx.dead_letters);
            self.app.metrics.dlq_records.inc_by(letters.len() as u64);
            let max = self.app.settings.max_record_bytes();
            for d in letters {
                let letter = DeadLetterOut::new(
                    &d.error,
                    msg.topic(),
                    d.partition,
                    d.offset,
                    msg.key(),
                    msg.payload(),
                    max,
                );
                if letter.truncated() {
                    tracing::warn!(
                        topic = msg.topic(),
                        partition = d.partition,
                        offset = d.offset,
                        "dead letter cut to fit message.max.bytes ({max}); original sizes in its headers"
                    );
                }
                let mut headers = OwnedHeaders::new_with_capacity(letter.headers.len());
                for (key, value) in &letter.headers {
                    headers = headers.insert(Header {
                        key,
                        value: Some(value.as_slice()),
                    });
                }
                // The dead-letter topic has one partition (see Plan).
                send(
                    &self.producer,
                    &self.app.plan.dlq_topic,
                    0,
                    letter.key,
                    letter.value,
                    ts,
                    Some(headers),
                    0,
                    &self.app.stop,
                )?;
            }
        }
        Ok(())
    }

    /// Send every task's pending outputs and punctuate.
    pub(super) fn after_batch(&mut self) -> Result<()> {
        let now = now_ms();
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let task = self.tasks.get_mut(&id).expect("task");
            task.punctuate(now);
            self.drain(id)?;
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Produce the records task `id` collected.
    pub(super) fn drain(&mut self, id: TaskId) -> Result<()> {
        let task = self.tasks.get_mut(&id).expect("task");
        if task.ctx.collector.is_empty() {
            return Ok(());
        }
        let mut collector = std::mem::take(&mut task.ctx.collector);
        let plan = &self.app.plan;
        self.origin_counters.clear();
        self.current_origin = None;
        let meters = self.tasks.get(&id).and_then(Task::metrics);
        let now = now_ms();
        for (i, rec) in collector.records().iter().enumerate() {
            let t = rec.topic as usize;
            if let Some(m) = meters {
                m.produced(rec.topic, 1);
            }
            if !plan.internal[t] && (i as u64).is_multiple_of(SAMPLE) {
                self.app
                    .metrics
                    .end_to_end_latency
                    .observe((now - rec.timestamp).max(0) as f64 / 1000.0);
            }
            let key = collector.slice(&rec.key);
            let value = collector.slice(&rec.value);
            let partitions = plan.topic_partitions[t].max(1);
            let partition = match key {
                Some(k) => default_partitioner(k, partitions),
                None => id.partition % partitions,
            };
            let headers = match (plan.internal[t], rec.origin) {
                (true, Some((src_topic, offset))) => {
                    if self.current_origin != Some((src_topic, offset)) {
                        self.current_origin = Some((src_topic, offset));
                        self.origin_counters.clear();
                    }
                    let index = match self.origin_counters.iter_mut().find(|(tt, _)| *tt == rec.topic) {
                        Some((_, n)) => {
                            *n += 1;
                            *n
                        }
                        None => {
                            self.origin_counters.push((rec.topic, 0));
                            0
                        }
                    };
                    // The upstream key folds the source topic into the
                    // partition number: offsets are ordered per topic.
                    let o = Origin {
                        upstream_partition: ((src_topic as i32) << 20) | id.partition,
                        offset,
                        index,
                    };
                    Some(OwnedHeaders::new_with_capacity(1).insert(Header {
                        key: ORIGIN_HEADER,
                        value: Some(&origin_bytes(&o)[..]),
                    }))
                }
                _ => None,
            };
            send(
                &self.producer,
                &plan.topic_names[t],
                partition,
                key,
                value,
                rec.timestamp,
                headers,
                0,
                &self.app.stop,
            )?;
        }
        collector.clear();
        self.tasks.get_mut(&id).expect("task").ctx.collector = collector;
        Ok(())
    }
}
