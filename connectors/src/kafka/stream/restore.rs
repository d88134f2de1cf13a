//! Reading ranges of partitions back (changelogs for restores, checkpoint
//! records at assignment): one standalone consumer per stream thread,
//! assigned to the range being read and kept for the next call that goes
//! on where the last one stopped.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use weir_runtime::transport::{RangeReader, ReadProgress, ReadRecord};
use weir_runtime::{RuntimeError, Task, TaskCheckpoint};

use super::health::is_connectivity;
use crate::kafka::{assign_at, ClientSettings};
use crate::{Error, Result};

/// How long one poll of a read waits for records: a restore step returns
/// to the poll loop after this when nothing came, so the running tasks of
/// the thread go on.
const POLL: Duration = Duration::from_millis(100);

struct Open {
    consumer: BaseConsumer,
    topic: String,
    partition: i32,
    /// The next offset the consumer delivers.
    next: i64,
}

/// Reads ranges of partitions with a consumer of its own (no group).
pub struct ChangelogReader {
    settings: ClientSettings,
    open: Option<Open>,
}

impl ChangelogReader {
    pub fn new(settings: &ClientSettings) -> ChangelogReader {
        ChangelogReader {
            settings: settings.clone(),
            open: None,
        }
    }

    /// The consumer positioned at `from` of the partition: the open one if
    /// it stands there, else one (re)assigned.
    fn position(&mut self, topic: &str, partition: i32, from: i64) -> Result<&mut Open> {
        let reuse = self
            .open
            .as_ref()
            .is_some_and(|o| o.topic == topic && o.partition == partition && o.next == from);
        if !reuse {
            let consumer = match self.open.take() {
                Some(o) => o.consumer,
                None => self
                    .settings
                    .standalone_consumer_config()
                    .create()
                    .map_err(|e| Error::kafka("creating the restore consumer", e))?,
            };
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(from))
                .map_err(|e| Error::kafka(format!("restore position of {topic}/{partition}"), e))?;
            assign_at(&consumer, &tpl, Duration::from_secs(10))?;
            self.open = Some(Open {
                consumer,
                topic: topic.to_string(),
                partition,
                next: from,
            });
        }
        Ok(self.open.as_mut().expect("open reader"))
    }

    fn read_range(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        max: usize,
        f: &mut dyn FnMut(ReadRecord<'_>) -> std::result::Result<(), RuntimeError>,
    ) -> Result<ReadProgress> {
        if from >= to {
            return Ok(ReadProgress { next: from, done: true });
        }
        let open = self.position(topic, partition, from)?;
        let mut read = 0usize;
        while open.next < to && read < max {
            match open.consumer.poll(POLL) {
                Some(Ok(m)) => {
                    if m.offset() >= to {
                        open.next = to;
                        break;
                    }
                    open.next = m.offset() + 1;
                    read += 1;
                    f((m.offset(), m.key(), m.payload()))?;
                }
                Some(Err(e)) if is_connectivity(&e) => {
                    // Queued while the cluster was unreachable (the reader
                    // stays open between reads): librdkafka reconnects by
                    // itself. Start afresh at the next call, which the
                    // caller makes (a restore step) or retries with
                    // patience (reading checkpoints).
                    tracing::debug!(topic, partition, error = %e, "reading: the cluster was unreachable; reading again");
                    let next = open.next;
                    self.open = None;
                    return Ok(ReadProgress { next, done: false });
                }
                Some(Err(e)) => {
                    self.open = None;
                    return Err(Error::kafka(format!("reading {topic}/{partition}"), e));
                }
                None => {
                    // A compacted topic may have no record at `to - 1`: the
                    // high watermark says when there is nothing more.
                    let high = match open.consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
                        Ok((_, high)) => high,
                        // Not now (an outage): the caller reads again, and
                        // gives up only after a long stall.
                        Err(e) => {
                            tracing::debug!(topic, partition, error = %e, "reading: no watermarks now");
                            break;
                        }
                    };
                    let position = open
                        .consumer
                        .position()
                        .ok()
                        .and_then(|p| p.find_partition(topic, partition).map(|e| e.offset()));
                    let at_end = matches!(position, Some(Offset::Offset(o)) if o >= high.min(to));
                    if at_end || open.next >= high {
                        open.next = open.next.max(high.min(to));
                        return Ok(ReadProgress {
                            next: open.next,
                            done: true,
                        });
                    }
                    break;
                }
            }
        }
        Ok(ReadProgress {
            next: open.next,
            done: open.next >= to,
        })
    }
}

impl RangeReader for ChangelogReader {
    fn read(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        max: usize,
        f: &mut dyn FnMut(ReadRecord<'_>) -> std::result::Result<(), RuntimeError>,
    ) -> std::result::Result<ReadProgress, RuntimeError> {
        Ok(self.read_range(topic, partition, from, to, max, f)?)
    }
}

/// Bring `task` to `target` from the changelogs on the cluster behind
/// `settings`, in one go (the steps a restoring task takes in a stream
/// thread; `weir bench restore` measures it). Returns the task and the
/// records applied per store.
pub fn restore_task(
    settings: &ClientSettings,
    task: Task,
    changelogs: &[(String, String)],
    target: &TaskCheckpoint,
) -> Result<(Task, Vec<u64>)> {
    let mut reader = ChangelogReader::new(settings);
    Ok(weir_runtime::manager::restore_task(
        &mut reader,
        task,
        changelogs,
        target,
    )?)
}
