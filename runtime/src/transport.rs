//! What the task manager needs from a cluster, and nothing more: send
//! records, wait until they are delivered (learning the offsets the commit
//! protocol needs), read a range of a partition, ask a partition's
//! watermarks, and commit and read consumer offsets with their metadata.
//!
//! weir-connectors implements it over rdkafka (`kafka::stream`);
//! [`crate::memory`] implements it in memory, with fault injection, for
//! tests of the commit protocol, restore and de-duplication without a
//! broker. Consuming input is not part of it: the poll loop that owns the
//! consumer hands records to the manager.

use std::collections::HashMap;

use crate::{RuntimeError, TaskId};

/// Which delivery of a record the commit protocol needs to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Outputs, repartition records, dead letters: only whether they were
    /// delivered.
    Quiet,
    /// A changelog record: its offset (the changelog's end becomes the
    /// store's position in the checkpoint).
    Changelog,
    /// A task's checkpoint record: its offset (the pointer committed with
    /// the task's input offsets).
    Checkpoint(TaskId),
}

/// A record to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: i64,
    pub headers: &'a [(&'a str, &'a [u8])],
    pub track: Track,
}

/// What a [`Transport::flush`] learnt about the tracked records delivered
/// since the previous one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Per changelog partition: the offset after the last record delivered.
    pub changelog_ends: HashMap<(String, i32), i64>,
    /// Per task: the offset of its checkpoint record.
    pub checkpoints: HashMap<TaskId, i64>,
}

/// A consumer offset of the application's group, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    pub topic: String,
    pub partition: i32,
    /// `None`: the group has no offset for the partition.
    pub offset: Option<i64>,
    pub metadata: String,
}

/// How far a [`RangeReader::read`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadProgress {
    /// The next offset to read.
    pub next: i64,
    /// The range is read: `next` reached its end, or the partition ends
    /// before it (a compacted topic may have no record at `to - 1`).
    pub done: bool,
}

/// A record read back (restore, checkpoints): offset, key, value.
pub type ReadRecord<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);

/// Reads ranges of partitions (restore, checkpoints). A part of
/// [`Transport`] of its own so that a restore can run with nothing else
/// (`weir bench restore`).
pub trait RangeReader {
    /// Read records of `[from, to)` of a partition, at most `max`, handing
    /// each to `f`; may return having read fewer (nothing available yet).
    /// Repeated calls that continue where the last one stopped are cheap.
    fn read(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        max: usize,
        f: &mut dyn FnMut(ReadRecord<'_>) -> Result<(), RuntimeError>,
    ) -> Result<ReadProgress, RuntimeError>;
}

/// The cluster as the task manager sees it. See the module docs.
pub trait Transport: RangeReader {
    /// Send a record (asynchronously: [`flush`](Self::flush) says whether
    /// it was delivered). An error means the record was not accepted.
    fn send(&mut self, record: Outgoing<'_>) -> Result<(), RuntimeError>;

    /// Wait until everything sent is delivered. An error means some record
    /// may not have been: the caller must not commit past it.
    fn flush(&mut self) -> Result<Delivered, RuntimeError>;

    /// Serve delivery reports and other callbacks without waiting (the
    /// poll loop calls it after each batch).
    fn tick(&mut self) {}

    /// The low and high watermarks of a partition, asked of the cluster.
    fn watermarks(&mut self, topic: &str, partition: i32) -> Result<(i64, i64), RuntimeError>;

    /// The high watermark of a partition as last seen, without asking the
    /// cluster (for lag); `None` if not known.
    fn cached_high_watermark(&self, _topic: &str, _partition: i32) -> Option<i64> {
        None
    }

    /// The group's committed offsets (with metadata) of `partitions`.
    fn committed(&mut self, partitions: &[(String, i32)]) -> Result<Vec<GroupOffset>, RuntimeError>;

    /// Commit group offsets; `wait` makes it synchronous. A failure of an
    /// asynchronous commit shows later in
    /// [`take_offset_commit_failure`](Self::take_offset_commit_failure).
    fn commit_offsets(&mut self, offsets: &[GroupOffset], wait: bool) -> Result<(), RuntimeError>;

    /// Begin a transaction: what is sent until it commits or aborts is
    /// visible to `read_committed` readers only once it commits. Only
    /// transactional transports support it.
    fn begin_transaction(&mut self) -> Result<(), RuntimeError> {
        Err(RuntimeError::Transport("this transport has no transactions".into()))
    }

    /// Deliver what the open transaction holds, add `offsets` (the group's,
    /// with their metadata) to it and commit it: all of it becomes visible
    /// at once, or none of it.
    fn commit_transaction(&mut self, _offsets: &[GroupOffset]) -> Result<(), RuntimeError> {
        Err(RuntimeError::Transport("this transport has no transactions".into()))
    }

    /// Abort the open transaction: nothing it holds ever becomes visible.
    fn abort_transaction(&mut self) -> Result<(), RuntimeError> {
        Err(RuntimeError::Transport("this transport has no transactions".into()))
    }

    /// Whether an offset commit failed since the last call (the offsets
    /// are then sent again).
    fn take_offset_commit_failure(&mut self) -> bool {
        false
    }
}

/// Read `[from, to)` whole, waiting for records as long as `patience`
/// allows without progress.
pub fn read_all(
    transport: &mut dyn RangeReader,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    patience: std::time::Duration,
    f: &mut dyn FnMut(ReadRecord<'_>) -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    let mut next = from;
    let mut last_progress = std::time::Instant::now();
    while next < to {
        let p = transport.read(topic, partition, next, to, 10_000, f)?;
        if p.next > next {
            last_progress = std::time::Instant::now();
        }
        next = p.next;
        if p.done {
            break;
        }
        if last_progress.elapsed() > patience {
            return Err(RuntimeError::Timeout {
                what: format!("{topic}/{partition} to be readable up to offset {to} (at {next})"),
                after: patience,
            });
        }
    }
    Ok(())
}
