//! The partition log's errors. Every message names the partition directory and
//! the offending value, because a broker hosts many partitions and a bare
//! "CRC mismatch" in a log is of no use to whoever reads it.

use std::io;
use std::path::PathBuf;

/// What can go wrong in a [`super::PartitionLog`] operation. The variants map
/// onto Kafka error codes: `CorruptBatch` → CORRUPT_MESSAGE, `InvalidRecord` →
/// INVALID_RECORD, `OffsetOutOfRange` → OFFSET_OUT_OF_RANGE,
/// `OutOfOrderSequence` → OUT_OF_ORDER_SEQUENCE_NUMBER, `InvalidProducerEpoch`
/// → INVALID_PRODUCER_EPOCH, `InvalidTxnState` → INVALID_TXN_STATE,
/// `CoordinatorFenced` → TRANSACTION_COORDINATOR_FENCED, `Io` → KAFKA_STORAGE_ERROR.
#[derive(thiserror::Error, Debug)]
pub enum LogError {
    #[error("partition log {dir}: {op}: {source}")]
    Io {
        dir: PathBuf,
        op: String,
        #[source]
        source: io::Error,
    },
    /// A batch failed framing or CRC validation (on append: the request is rejected).
    #[error("partition log {dir}: corrupt record batch: {reason}")]
    CorruptBatch { dir: PathBuf, reason: String },
    /// A well-formed batch that this log will not accept (a control batch from a
    /// client, a null key on a compacted topic, an inconsistent offset range).
    #[error("partition log {dir}: invalid record: {reason}")]
    InvalidRecord { dir: PathBuf, reason: String },
    #[error("partition log {dir}: offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        dir: PathBuf,
        offset: i64,
        start: i64,
        end: i64,
    },
    #[error(
        "partition log {dir}: out of order sequence for producer {producer_id} epoch {epoch}: \
         got first sequence {first_seq}, expected {expected}"
    )]
    OutOfOrderSequence {
        dir: PathBuf,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        expected: i32,
    },
    #[error("partition log {dir}: producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        dir: PathBuf,
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// Some, not all, batches of one append were duplicates: the append is
    /// refused as a whole (a real client sends one batch per partition).
    #[error(
        "partition log {dir}: producer {producer_id} sent a mix of duplicate and new batches (sequence {first_seq})"
    )]
    DuplicateSequence {
        dir: PathBuf,
        producer_id: i64,
        first_seq: i32,
    },
    #[error("partition log {dir}: producer {producer_id}: {reason}")]
    InvalidTxnState {
        dir: PathBuf,
        producer_id: i64,
        reason: String,
    },
    #[error(
        "partition log {dir}: marker for producer {producer_id} has coordinator epoch {coordinator_epoch}, \
         older than {current}"
    )]
    CoordinatorFenced {
        dir: PathBuf,
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },
}

/// Shorthand for building [`LogError::Io`] with the directory and operation.
pub(crate) fn io_err(dir: &std::path::Path, op: impl Into<String>) -> impl FnOnce(io::Error) -> LogError {
    let dir = dir.to_path_buf();
    let op = op.into();
    move |source| LogError::Io { dir, op, source }
}
