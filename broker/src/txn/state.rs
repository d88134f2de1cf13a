//! One transactional id's state and its transitions, as Kafka's transaction
//! coordinator (KIP-98) moves them. Pure: no I/O, no clock; the coordinator
//! persists a transition before answering the request that caused it.
//!
//! ```text
//!            AddPartitions/AddOffsets          EndTxn(commit)
//!  Empty ───────────────────────────▶ Ongoing ───────────────▶ PrepareCommit ──▶ CompleteCommit
//!  Complete* ───────────────────────▶    │    ───────────────▶ PrepareAbort  ──▶ CompleteAbort
//!                                        │     EndTxn(abort), InitProducerId,
//!                                        └──── transaction timeout (epoch bumped first)
//! ```
//!
//! Kafka's `PrepareEpochFence` (an InitProducerId or a timeout aborting an
//! ongoing transaction) is `PrepareAbort` here with the epoch already bumped:
//! the ABORT markers carry the new epoch, which fences the old producer.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Kafka's `transaction.max.timeout.ms` default: 15 minutes.
pub const MAX_TIMEOUT_MS: i32 = 15 * 60 * 1000;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name for the state (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// A TxnOffsetCommit offset, kept with the transaction so that a commit
/// prepared before a crash can still commit it after the restart (the group
/// coordinator holds pending offsets in memory only).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PendingOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// Why a transactional request is refused; the server maps each to the
/// Kafka error code of the request's API and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnError {
    /// INVALID_TRANSACTION_TIMEOUT.
    InvalidTimeout,
    /// INVALID_PRODUCER_ID_MAPPING: no such transactional id, or another producer id.
    UnknownProducerId,
    /// PRODUCER_FENCED (INVALID_PRODUCER_EPOCH for old versions): another epoch.
    Fenced,
    /// INVALID_TXN_STATE.
    InvalidState,
    /// CONCURRENT_TRANSACTIONS: the previous transaction is still completing.
    Concurrent,
    /// KAFKA_STORAGE_ERROR (or COORDINATOR_NOT_AVAILABLE): the state could not be written.
    Storage,
}

/// What the coordinator knows about one transactional id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TxnMeta {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions of the current (or completing) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups added by AddOffsetsToTxn.
    pub groups: BTreeSet<String>,
    pub offsets: Vec<PendingOffset>,
    /// When the current transaction began (its first AddPartitions/AddOffsets), wall-clock ms.
    pub txn_start_ms: i64,
    pub last_update_ms: i64,
}

/// The outcome of [`TxnMeta::prepare_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndStep {
    /// Now in PrepareCommit/PrepareAbort: write the markers, then complete.
    Prepared,
    /// The same EndTxn was already completed (a retry): answer success.
    AlreadyDone,
}

impl TxnMeta {
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now: i64) -> TxnMeta {
        TxnMeta {
            transactional_id: transactional_id.to_string(),
            producer_id,
            epoch: 0,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            offsets: Vec::new(),
            txn_start_ms: -1,
            last_update_ms: now,
        }
    }

    /// The request's producer id and epoch must be the current ones.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::UnknownProducerId);
        }
        if epoch != self.epoch {
            return Err(TxnError::Fenced);
        }
        Ok(())
    }

    /// Add partitions and groups to the transaction, starting one if none is
    /// ongoing. Returns whether anything changed (and must be persisted).
    pub fn add(&mut self, partitions: &[(String, i32)], groups: &[String], now: i64) -> Result<bool, TxnError> {
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => return Err(TxnError::Concurrent),
            TxnState::Ongoing => {
                let new = partitions.iter().any(|p| !self.partitions.contains(p))
                    || groups.iter().any(|g| !self.groups.contains(g));
                if !new {
                    return Ok(false);
                }
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                self.clear();
                self.state = TxnState::Ongoing;
                self.txn_start_ms = now;
            }
        }
        self.partitions.extend(partitions.iter().cloned());
        self.groups.extend(groups.iter().cloned());
        self.last_update_ms = now;
        Ok(true)
    }

    /// TxnOffsetCommit: the group must have been added (AddOffsetsToTxn) to
    /// the ongoing transaction.
    pub fn add_offsets(&mut self, group: &str, offsets: Vec<PendingOffset>, now: i64) -> Result<(), TxnError> {
        if self.state != TxnState::Ongoing || !self.groups.contains(group) {
            return Err(TxnError::InvalidState);
        }
        for o in offsets {
            self.offsets
                .retain(|p| !(p.group == o.group && p.topic == o.topic && p.partition == o.partition));
            self.offsets.push(o);
        }
        self.last_update_ms = now;
        Ok(())
    }

    /// Whether a transactional batch may be written to `topic`/`partition`.
    pub fn check_produce(&self, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> Result<(), TxnError> {
        self.check_producer(producer_id, epoch)?;
        let added = self.partitions.iter().any(|(t, p)| t == topic && *p == partition);
        if self.state != TxnState::Ongoing || !added {
            return Err(TxnError::InvalidState);
        }
        Ok(())
    }

    /// EndTxn: move an ongoing transaction to PrepareCommit/PrepareAbort.
    pub fn prepare_end(&mut self, commit: bool, now: i64) -> Result<EndStep, TxnError> {
        use TxnState::*;
        match (self.state, commit) {
            (Ongoing, _) => {
                self.state = if commit { PrepareCommit } else { PrepareAbort };
                self.last_update_ms = now;
                Ok(EndStep::Prepared)
            }
            (PrepareCommit, true) | (PrepareAbort, false) => Err(TxnError::Concurrent),
            (CompleteCommit, true) | (CompleteAbort, false) => Ok(EndStep::AlreadyDone),
            _ => Err(TxnError::InvalidState),
        }
    }

    /// Abort an ongoing transaction from the coordinator's side (timeout,
    /// InitProducerId of a new instance): bump the epoch so the producer of
    /// the old one is fenced, then PrepareAbort.
    pub fn fence_and_prepare_abort(&mut self, now: i64) {
        debug_assert_eq!(self.state, TxnState::Ongoing);
        self.epoch = self.epoch.saturating_add(1);
        self.state = TxnState::PrepareAbort;
        self.last_update_ms = now;
    }

    /// The markers are written: PrepareX -> CompleteX.
    pub fn complete(&mut self, now: i64) {
        self.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            other => other,
        };
        self.clear();
        self.last_update_ms = now;
    }

    /// InitProducerId for an existing id with no transaction in progress:
    /// the next epoch, or a new producer id (from `allocate`) once the epoch
    /// is exhausted, as Kafka does.
    pub fn bump_epoch(
        &mut self,
        timeout_ms: i32,
        now: i64,
        allocate: impl FnOnce() -> std::io::Result<i64>,
    ) -> Result<(), TxnError> {
        debug_assert!(!matches!(self.state, TxnState::Ongoing) && !self.state.is_prepare());
        if self.epoch >= i16::MAX - 1 {
            self.producer_id = allocate().map_err(|_| TxnError::Storage)?;
            self.epoch = 0;
        } else {
            self.epoch += 1;
        }
        self.timeout_ms = timeout_ms;
        self.state = TxnState::Empty;
        self.clear();
        self.last_update_ms = now;
        Ok(())
    }

    /// An ongoing transaction older than its timeout.
    pub fn expired(&self, now: i64) -> bool {
        self.state == TxnState::Ongoing && now - self.txn_start_ms > self.timeout_ms as i64
    }

    fn clear(&mut self) {
        self.partitions.clear();
        self.groups.clear();
        self.offsets.clear();
        self.txn_start_ms = -1;
    }
}

/// InitProducerId's transaction timeout: 1 ms to 15 minutes.
pub fn validate_timeout(timeout_ms: i32) -> Result<(), TxnError> {
    if timeout_ms <= 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(TxnError::InvalidTimeout);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    fn ongoing() -> TxnMeta {
        let mut m = TxnMeta::new("t", 7, 60_000, 0);
        assert_eq!(m.add(&[tp("a", 0)], &[], 10), Ok(true));
        m
    }

    #[test]
    fn add_starts_a_transaction_and_is_idempotent() {
        let mut m = ongoing();
        assert_eq!(m.state, TxnState::Ongoing);
        assert_eq!(m.txn_start_ms, 10);
        assert_eq!(m.add(&[tp("a", 0)], &[], 20), Ok(false), "nothing new");
        assert_eq!(m.add(&[tp("a", 1)], &["g".into()], 30), Ok(true));
        assert_eq!(m.txn_start_ms, 10, "the transaction started at the first add");
        assert_eq!(m.partitions.len(), 2);
        assert_eq!(m.groups.len(), 1);
    }

    #[test]
    fn commit_then_retry_then_wrong_outcome() {
        let mut m = ongoing();
        assert_eq!(m.prepare_end(true, 50), Ok(EndStep::Prepared));
        assert_eq!(m.state, TxnState::PrepareCommit);
        assert_eq!(m.prepare_end(true, 51), Err(TxnError::Concurrent), "still completing");
        assert_eq!(m.prepare_end(false, 51), Err(TxnError::InvalidState));
        assert_eq!(m.add(&[tp("a", 0)], &[], 52), Err(TxnError::Concurrent));
        m.complete(60);
        assert_eq!(m.state, TxnState::CompleteCommit);
        assert!(m.partitions.is_empty());
        assert_eq!(m.prepare_end(true, 61), Ok(EndStep::AlreadyDone), "a retried EndTxn");
        assert_eq!(m.prepare_end(false, 61), Err(TxnError::InvalidState));
        // The next transaction starts afresh.
        assert_eq!(m.add(&[tp("b", 0)], &[], 70), Ok(true));
        assert_eq!(m.state, TxnState::Ongoing);
        assert_eq!(m.partitions.iter().cloned().collect::<Vec<_>>(), vec![tp("b", 0)]);
    }

    #[test]
    fn end_without_a_transaction_is_invalid() {
        let mut m = TxnMeta::new("t", 7, 60_000, 0);
        assert_eq!(m.prepare_end(true, 1), Err(TxnError::InvalidState));
        assert_eq!(m.prepare_end(false, 1), Err(TxnError::InvalidState));
    }

    #[test]
    fn producer_checks() {
        let m = ongoing();
        assert_eq!(m.check_producer(7, 0), Ok(()));
        assert_eq!(m.check_producer(8, 0), Err(TxnError::UnknownProducerId));
        assert_eq!(m.check_producer(7, 1), Err(TxnError::Fenced));
        assert_eq!(m.check_produce(7, 0, "a", 0), Ok(()));
        assert_eq!(m.check_produce(7, 0, "a", 1), Err(TxnError::InvalidState), "not added");
        assert_eq!(m.check_produce(7, -1, "a", 0), Err(TxnError::Fenced));
    }

    #[test]
    fn fencing_abort_bumps_the_epoch() {
        let mut m = ongoing();
        m.fence_and_prepare_abort(100);
        assert_eq!((m.epoch, m.state), (1, TxnState::PrepareAbort));
        assert_eq!(m.prepare_end(true, 101), Err(TxnError::InvalidState));
        assert_eq!(
            m.check_producer(7, 0),
            Err(TxnError::Fenced),
            "the old producer is fenced"
        );
        m.complete(102);
        assert_eq!(m.state, TxnState::CompleteAbort);
    }

    #[test]
    fn epoch_bump_and_exhaustion() {
        let mut m = TxnMeta::new("t", 7, 60_000, 0);
        m.bump_epoch(1000, 1, || panic!("no new id needed")).unwrap();
        assert_eq!((m.producer_id, m.epoch, m.timeout_ms), (7, 1, 1000));
        m.epoch = i16::MAX - 1;
        m.bump_epoch(1000, 2, || Ok(99)).unwrap();
        assert_eq!(
            (m.producer_id, m.epoch),
            (99, 0),
            "an exhausted epoch gets a new producer id"
        );
    }

    #[test]
    fn timeouts() {
        let m = ongoing();
        assert!(!m.expired(10 + 60_000));
        assert!(m.expired(10 + 60_001));
        let mut done = m.clone();
        done.prepare_end(true, 20).unwrap();
        assert!(!done.expired(1_000_000), "only ongoing transactions time out");
        assert_eq!(validate_timeout(0), Err(TxnError::InvalidTimeout));
        assert_eq!(validate_timeout(MAX_TIMEOUT_MS), Ok(()));
        assert_eq!(validate_timeout(MAX_TIMEOUT_MS + 1), Err(TxnError::InvalidTimeout));
    }

    #[test]
    fn txn_offsets_need_the_group_added() {
        let mut m = ongoing();
        let o = PendingOffset {
            group: "g".into(),
            topic: "a".into(),
            partition: 0,
            offset: 5,
            leader_epoch: -1,
            metadata: None,
        };
        assert_eq!(m.add_offsets("g", vec![o.clone()], 20), Err(TxnError::InvalidState));
        m.add(&[], &["g".into()], 21).unwrap();
        m.add_offsets("g", vec![o.clone()], 22).unwrap();
        m.add_offsets("g", vec![PendingOffset { offset: 9, ..o }], 23).unwrap();
        assert_eq!(
            m.offsets.len(),
            1,
            "a later offset for the same partition replaces the earlier"
        );
        assert_eq!(m.offsets[0].offset, 9);
    }
}
