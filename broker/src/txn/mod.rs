//! The transaction coordinator (KIP-98) for the one node this broker is:
//! InitProducerId with a `transactional.id`, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit's producer check, EndTxn, and the abort
//! of transactions that outlive their `transaction.timeout.ms`.
//!
//! * `state`: one transactional id's state machine (pure).
//! * `log`: the crash-safe file the states are persisted in,
//!   `{dir}/transactions/transactions.log`.
//!
//! Ending a transaction is two steps, as in Kafka: the state moves to
//! PrepareCommit/PrepareAbort and is persisted (the decision), then the
//! COMMIT/ABORT markers are written to every partition of the transaction
//! and its transactional offsets committed or dropped, then the state moves
//! to CompleteCommit/CompleteAbort. Requests for the id meanwhile get
//! CONCURRENT_TRANSACTIONS. After a crash, [`TxnCoordinator::prepared`]
//! lists the decided but unfinished transactions, which the broker completes
//! before it serves; an Ongoing one is left to time out.
//!
//! Markers are always written with coordinator epoch 0: there is only ever
//! one coordinator.

mod log;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest};
use kafka_protocol::protocol::StrBytes;

use crate::group::GroupCoordinator;
use crate::producers::ProducerIds;
use crate::topics::Topics;
use log::TxnLog;
use state::{validate_timeout, EndStep, PendingOffset, TxnError, TxnMeta, TxnState};

/// How long a PrepareCommit/PrepareAbort whose completion failed (a marker
/// could not be written) waits before the timeout task retries it.
const RETRY_COMPLETION_MS: i64 = 5_000;

/// A decided transaction to complete: markers to write, offsets to settle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
    pub groups: Vec<String>,
    /// The transaction's offsets; re-offered to the group coordinator only
    /// when completing after a restart (it lost its pending offsets).
    pub offsets: Vec<PendingOffset>,
}

impl Completion {
    fn of(meta: &TxnMeta) -> Completion {
        Completion {
            transactional_id: meta.transactional_id.clone(),
            producer_id: meta.producer_id,
            epoch: meta.epoch,
            commit: meta.state == TxnState::PrepareCommit,
            partitions: meta.partitions.iter().cloned().collect(),
            groups: meta.groups.iter().cloned().collect(),
            offsets: meta.offsets.clone(),
        }
    }
}

/// InitProducerId's outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// Answer with this producer id and epoch.
    Ready { producer_id: i64, epoch: i16 },
    /// An ongoing transaction of the previous epoch must be aborted first:
    /// complete it, then answer with its (bumped) producer id and epoch.
    AbortFirst(Completion),
}

pub struct TxnCoordinator {
    core: Mutex<Core>,
}

struct Core {
    txns: HashMap<String, TxnMeta>,
    log: TxnLog,
    /// Ids whose completion is being driven right now (not to be retried).
    completing: HashSet<String>,
}

impl Core {
    /// Persist `meta` then make it current; on error nothing changes.
    fn save(&mut self, meta: TxnMeta) -> Result<(), TxnError> {
        if let Err(e) = self.log.write(&meta, &self.txns) {
            tracing::error!(transactional_id = %meta.transactional_id, error = %e, "cannot persist transaction state");
            return Err(TxnError::Storage);
        }
        self.txns.insert(meta.transactional_id.clone(), meta);
        Ok(())
    }

    /// The state of `id` for a request from `producer_id`/`epoch`.
    fn current(&self, id: &str, producer_id: i64, epoch: i16) -> Result<TxnMeta, TxnError> {
        let meta = self.txns.get(id).ok_or(TxnError::UnknownProducerId)?;
        meta.check_producer(producer_id, epoch)?;
        Ok(meta.clone())
    }
}

impl TxnCoordinator {
    /// Open the coordinator, replaying the state persisted under `dir`.
    pub fn open(dir: &Path) -> std::io::Result<TxnCoordinator> {
        let (log, txns) = TxnLog::open(dir)?;
        Ok(TxnCoordinator {
            core: Mutex::new(Core {
                txns,
                log,
                completing: HashSet::new(),
            }),
        })
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// InitProducerId with a transactional id. `producer_id`/`epoch` are the
    /// request's (KIP-360, v3+; -1 when the producer starts afresh).
    pub fn init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        producer_id: i64,
        epoch: i16,
        producers: &ProducerIds,
        now: i64,
    ) -> Result<InitOutcome, TxnError> {
        validate_timeout(timeout_ms)?;
        let mut core = self.core();
        let Some(mut meta) = core.txns.get(id).cloned() else {
            let pid = producers.next().map_err(|e| {
                tracing::error!("allocating a producer id: {e}");
                TxnError::Storage
            })?;
            let meta = TxnMeta::new(id, pid, timeout_ms, now);
            core.save(meta)?;
            return Ok(InitOutcome::Ready {
                producer_id: pid,
                epoch: 0,
            });
        };
        if meta.state.is_prepare() {
            return Err(TxnError::Concurrent);
        }
        // KIP-360: a producer recovering its own id must still hold the current epoch.
        if producer_id >= 0 && (producer_id != meta.producer_id || epoch != meta.epoch) {
            return Err(TxnError::Fenced);
        }
        if meta.state == TxnState::Ongoing {
            meta.fence_and_prepare_abort(now);
            meta.timeout_ms = timeout_ms;
            let completion = Completion::of(&meta);
            core.save(meta)?;
            core.completing.insert(id.to_string());
            return Ok(InitOutcome::AbortFirst(completion));
        }
        meta.bump_epoch(timeout_ms, now, || producers.next())?;
        let (producer_id, epoch) = (meta.producer_id, meta.epoch);
        core.save(meta)?;
        Ok(InitOutcome::Ready { producer_id, epoch })
    }

    /// AddPartitionsToTxn (and, with `groups`, AddOffsetsToTxn).
    pub fn add(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        groups: &[String],
        now: i64,
    ) -> Result<(), TxnError> {
        let mut core = self.core();
        let mut meta = core.current(id, producer_id, epoch)?;
        if meta.add(partitions, groups, now)? {
            core.save(meta)?;
        }
        Ok(())
    }

    /// The producer check of a TxnOffsetCommit: the producer's transaction
    /// is ongoing and has the group (AddOffsetsToTxn).
    pub fn check_txn_offset_commit(&self, id: &str, producer_id: i64, epoch: i16, group: &str) -> Result<(), TxnError> {
        let core = self.core();
        let mut meta = core.current(id, producer_id, epoch)?;
        meta.add_offsets(group, Vec::new(), 0)
    }

    /// Keep the offsets the group coordinator accepted with the transaction
    /// (for completing it after a crash).
    pub fn txn_offset_commit(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<PendingOffset>,
        now: i64,
    ) -> Result<(), TxnError> {
        let mut core = self.core();
        let mut meta = core.current(id, producer_id, epoch)?;
        meta.add_offsets(group, offsets, now)?;
        core.save(meta)
    }

    /// Whether a transactional batch of `producer_id`/`epoch` may go to
    /// `topic`/`partition`: its transaction must be ongoing and hold it.
    pub fn check_produce(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), TxnError> {
        let core = self.core();
        let meta = core.txns.get(id).ok_or(TxnError::UnknownProducerId)?;
        meta.check_produce(producer_id, epoch, topic, partition)
    }

    /// EndTxn: decide the transaction. `Ok(None)`: it was already completed
    /// that way (a retry); `Ok(Some)`: complete it, then [`Self::finish`].
    pub fn end_txn(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now: i64,
    ) -> Result<Option<Completion>, TxnError> {
        let mut core = self.core();
        let mut meta = core.current(id, producer_id, epoch)?;
        match meta.prepare_end(commit, now)? {
            EndStep::AlreadyDone => Ok(None),
            EndStep::Prepared => {
                let completion = Completion::of(&meta);
                core.save(meta)?;
                core.completing.insert(id.to_string());
                Ok(Some(completion))
            }
        }
    }

    /// The markers of `c` are written (`ok`), or could not all be (then the
    /// transaction stays prepared and the timeout task retries it).
    pub fn finish(&self, c: &Completion, ok: bool, now: i64) {
        let mut core = self.core();
        core.completing.remove(&c.transactional_id);
        if !ok {
            return;
        }
        let Some(mut meta) = core.txns.get(&c.transactional_id).cloned() else {
            return;
        };
        if !meta.state.is_prepare() || meta.producer_id != c.producer_id || meta.epoch != c.epoch {
            return;
        }
        meta.complete(now);
        if core.save(meta).is_err() {
            // Stays prepared: completed again (harmlessly) after a restart.
            tracing::warn!(transactional_id = %c.transactional_id, "transaction completed but not recorded as such");
        }
    }

    /// Every decided but unfinished transaction (after a restart: all of them).
    pub fn prepared(&self) -> Vec<Completion> {
        let mut core = self.core();
        let v: Vec<Completion> = core
            .txns
            .values()
            .filter(|m| m.state.is_prepare())
            .map(Completion::of)
            .collect();
        core.completing.extend(v.iter().map(|c| c.transactional_id.clone()));
        v
    }

    /// The timeout task's sweep: ongoing transactions past their timeout are
    /// aborted with a bumped epoch (fencing their producer), and prepared
    /// ones whose completion failed are retried.
    pub fn expire(&self, now: i64) -> Vec<Completion> {
        let mut core = self.core();
        let mut out = Vec::new();
        let ids: Vec<String> = core
            .txns
            .values()
            .filter(|m| {
                m.expired(now)
                    || (m.state.is_prepare()
                        && now - m.last_update_ms > RETRY_COMPLETION_MS
                        && !core.completing.contains(&m.transactional_id))
            })
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in ids {
            let mut meta = core.txns[&id].clone();
            if meta.state == TxnState::Ongoing {
                tracing::info!(
                    transactional_id = %id,
                    producer_id = meta.producer_id,
                    epoch = meta.epoch,
                    timeout_ms = meta.timeout_ms,
                    "aborting a transaction that timed out"
                );
                meta.fence_and_prepare_abort(now);
                let c = Completion::of(&meta);
                if core.save(meta).is_err() {
                    continue;
                }
                out.push(c);
            } else {
                meta.last_update_ms = now;
                out.push(Completion::of(&meta));
                core.txns.insert(id.clone(), meta);
            }
            core.completing.insert(id);
        }
        out
    }

    /// Every transactional id's state, by id (DescribeTransactions, ListTransactions).
    pub fn snapshot(&self) -> Vec<TxnMeta> {
        let core = self.core();
        let mut v: Vec<TxnMeta> = core.txns.values().cloned().collect();
        v.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        v
    }
}

/// Write `c`'s markers to its partitions and settle its offsets. `recovered`:
/// completing after a restart, when the group coordinator no longer holds the
/// transaction's pending offsets, so they are handed to it again first.
/// Returns whether every marker was written. Wakes read_committed fetches.
pub async fn complete(c: &Completion, topics: &Topics, groups: &GroupCoordinator, recovered: bool, now: i64) -> bool {
    let mut ok = true;
    for (topic, index) in &c.partitions {
        let Some(t) = topics.get(topic) else {
            continue; // deleted meanwhile: nothing to mark
        };
        let Some(p) = usize::try_from(*index).ok().and_then(|i| t.partitions.get(i)) else {
            continue;
        };
        let result = p.log().append_marker(c.producer_id, c.epoch, c.commit, 0, now);
        if let Err(e) = result {
            tracing::error!(
                topic = %topic,
                partition = index,
                transactional_id = %c.transactional_id,
                "cannot write the transaction marker: {e}"
            );
            ok = false;
        }
    }
    if recovered && c.commit {
        for group in &c.groups {
            let request = reoffer(c, group);
            if !request.topics.is_empty() {
                groups.txn_offset_commit(request, 2).await;
            }
        }
    }
    groups.complete_txn(c.producer_id, &c.groups, c.commit).await;
    topics.notify_appended();
    ok
}

/// A TxnOffsetCommit (v2: no generation check) for `group`'s offsets of `c`.
fn reoffer(c: &Completion, group: &str) -> TxnOffsetCommitRequest {
    let mut topics: Vec<TxnOffsetCommitRequestTopic> = Vec::new();
    for o in c.offsets.iter().filter(|o| o.group == group) {
        let partition = TxnOffsetCommitRequestPartition::default()
            .with_partition_index(o.partition)
            .with_committed_offset(o.offset)
            .with_committed_leader_epoch(o.leader_epoch)
            .with_committed_metadata(o.metadata.clone().map(StrBytes::from_string));
        match topics.iter_mut().find(|t| t.name.0.as_str() == o.topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(
                TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(o.topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(c.transactional_id.clone())))
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_producer_id(ProducerId(c.producer_id))
        .with_producer_epoch(c.epoch)
        .with_generation_id(-1)
        .with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (TxnCoordinator, ProducerIds) {
        (
            TxnCoordinator::open(&dir.join("transactions")).unwrap(),
            ProducerIds::open(dir).unwrap(),
        )
    }

    fn ready(o: InitOutcome) -> (i64, i16) {
        match o {
            InitOutcome::Ready { producer_id, epoch } => (producer_id, epoch),
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    #[test]
    fn init_allocates_then_bumps_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ids) = open(dir.path());
        let (pid, e) = ready(c.init_producer_id("t", 60_000, -1, -1, &ids, 0).unwrap());
        assert_eq!(e, 0);
        assert_eq!(
            ready(c.init_producer_id("t", 60_000, -1, -1, &ids, 1).unwrap()),
            (pid, 1)
        );
        assert_eq!(
            c.init_producer_id("t", state::MAX_TIMEOUT_MS + 1, -1, -1, &ids, 2),
            Err(TxnError::InvalidTimeout)
        );
        assert_eq!(c.add("t", pid, 0, &[("a".into(), 0)], &[], 3), Err(TxnError::Fenced));
        assert_eq!(
            c.add("t", pid + 1, 1, &[("a".into(), 0)], &[], 3),
            Err(TxnError::UnknownProducerId)
        );
        assert_eq!(
            c.add("u", pid, 1, &[("a".into(), 0)], &[], 3),
            Err(TxnError::UnknownProducerId)
        );
        // KIP-360: the current producer may ask for the next epoch; a stale one may not.
        assert_eq!(c.init_producer_id("t", 60_000, pid, 0, &ids, 4), Err(TxnError::Fenced));
        assert_eq!(
            ready(c.init_producer_id("t", 60_000, pid, 1, &ids, 4).unwrap()),
            (pid, 2)
        );
    }

    #[test]
    fn end_txn_prepares_then_finishes_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ids) = open(dir.path());
        let (pid, e) = ready(c.init_producer_id("t", 60_000, -1, -1, &ids, 0).unwrap());
        c.add("t", pid, e, &[("a".into(), 0), ("a".into(), 1)], &[], 1).unwrap();
        c.add("t", pid, e, &[], &["g".into()], 2).unwrap();
        assert_eq!(c.check_produce("t", pid, e, "a", 1), Ok(()));
        assert_eq!(c.check_produce("t", pid, e, "b", 0), Err(TxnError::InvalidState));
        let done = c.end_txn("t", pid, e, true, 3).unwrap().expect("prepared");
        assert_eq!(done.partitions, vec![("a".to_string(), 0), ("a".to_string(), 1)]);
        assert_eq!(done.groups, vec!["g".to_string()]);
        assert!(done.commit);
        assert_eq!(c.end_txn("t", pid, e, true, 4), Err(TxnError::Concurrent));
        assert_eq!(
            c.init_producer_id("t", 60_000, -1, -1, &ids, 4),
            Err(TxnError::Concurrent)
        );
        // A crash here: the reopened coordinator completes the commit.
        drop(c);
        let (c, ids) = open(dir.path());
        let prepared = c.prepared();
        assert_eq!(prepared, vec![done.clone()]);
        c.finish(&prepared[0], true, 5);
        assert_eq!(c.end_txn("t", pid, e, true, 6), Ok(None), "a retried EndTxn succeeds");
        assert_eq!(c.end_txn("t", pid, e, false, 6), Err(TxnError::InvalidState));
        drop(c);
        let (c, _) = open(dir.path());
        assert!(c.prepared().is_empty());
        assert_eq!(c.snapshot()[0].state, TxnState::CompleteCommit);
        drop(ids);
    }

    /// One transactional record of `pid`/`epoch`, as a client encodes it.
    fn txn_batch(pid: i64, epoch: i16, value: &str) -> Vec<u8> {
        use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
        let record = Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: 0,
            timestamp: 1,
            key: None,
            value: Some(bytes::Bytes::copy_from_slice(value.as_bytes())),
            headers: Default::default(),
        };
        let mut buf = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &[record], &options).unwrap();
        buf.to_vec()
    }

    async fn committed_offset(groups: &GroupCoordinator, group: &str, topic: &str) -> i64 {
        use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.into())))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partition_indexes(vec![0])]));
        let response = groups.offset_fetch(request, 1).await;
        response.topics[0].partitions[0].committed_offset
    }

    #[tokio::test]
    async fn a_commit_decided_before_a_crash_is_completed_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let open_all = || {
            let topics = Topics::open(dir.path()).unwrap();
            let groups = GroupCoordinator::open(&dir.path().join("groups"), Default::default()).unwrap();
            let (txns, ids) = open(dir.path());
            (topics, groups, txns, ids)
        };
        let (topics, groups, c, ids) = open_all();
        topics.create("t", 1, Default::default(), false).unwrap();
        let (pid, e) = ready(c.init_producer_id("x", 60_000, -1, -1, &ids, 0).unwrap());
        c.add("x", pid, e, &[("t".into(), 0)], &["g".into()], 1).unwrap();
        let partition = topics.get("t").unwrap().partitions[0].clone();
        partition.log().append(&txn_batch(pid, e, "v"), 2).unwrap();
        let offset = PendingOffset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            offset: 1,
            leader_epoch: -1,
            metadata: None,
        };
        c.txn_offset_commit("x", pid, e, "g", vec![offset], 3).unwrap();
        let decided = c.end_txn("x", pid, e, true, 4).unwrap().unwrap();
        assert!(decided.commit);
        // Crash: nothing completed, nothing flushed.
        drop((topics, groups, c, ids, partition));

        let (topics, groups, c, _ids) = open_all();
        let topic = topics.get("t").unwrap();
        {
            let log = topic.partitions[0].log();
            assert_eq!((log.last_stable_offset(), log.end_offset()), (0, 1), "still open");
        }
        assert_eq!(committed_offset(&groups, "g", "t").await, -1);
        let prepared = c.prepared();
        assert_eq!(prepared.len(), 1);
        let ok = complete(&prepared[0], &topics, &groups, true, 5).await;
        assert!(ok);
        c.finish(&prepared[0], ok, 6);
        {
            let log = topic.partitions[0].log();
            assert_eq!(
                (log.last_stable_offset(), log.end_offset()),
                (2, 2),
                "committed: the marker at 1"
            );
            assert!(log.aborted_transactions(0, 2).is_empty());
        }
        assert_eq!(
            committed_offset(&groups, "g", "t").await,
            1,
            "the offsets were committed too"
        );
        assert_eq!(c.snapshot()[0].state, TxnState::CompleteCommit);
    }

    #[test]
    fn init_aborts_the_ongoing_transaction_of_the_old_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ids) = open(dir.path());
        let (pid, e) = ready(c.init_producer_id("t", 60_000, -1, -1, &ids, 0).unwrap());
        c.add("t", pid, e, &[("a".into(), 0)], &[], 1).unwrap();
        let InitOutcome::AbortFirst(abort) = c.init_producer_id("t", 30_000, -1, -1, &ids, 2).unwrap() else {
            panic!("expected an abort first");
        };
        assert_eq!((abort.producer_id, abort.epoch, abort.commit), (pid, 1, false));
        assert_eq!(abort.partitions, vec![("a".to_string(), 0)]);
        c.finish(&abort, true, 3);
        assert_eq!(
            c.end_txn("t", pid, 0, true, 4),
            Err(TxnError::Fenced),
            "the old producer is fenced"
        );
        let m = &c.snapshot()[0];
        assert_eq!((m.state, m.epoch, m.timeout_ms), (TxnState::CompleteAbort, 1, 30_000));
    }

    #[test]
    fn timeouts_abort_with_a_bumped_epoch_and_failed_completions_are_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ids) = open(dir.path());
        let (pid, e) = ready(c.init_producer_id("t", 1_000, -1, -1, &ids, 0).unwrap());
        c.add("t", pid, e, &[("a".into(), 0)], &[], 100).unwrap();
        assert!(c.expire(1_100).is_empty());
        let expired = c.expire(1_101);
        assert_eq!(expired.len(), 1);
        assert_eq!((expired[0].epoch, expired[0].commit), (1, false));
        assert!(c.expire(1_102).is_empty(), "being completed");
        c.finish(&expired[0], false, 1_103);
        assert!(c.expire(1_104).is_empty(), "retried only after a while");
        let retried = c.expire(1_101 + RETRY_COMPLETION_MS + 1);
        assert_eq!(retried, expired);
        c.finish(&retried[0], true, 7_000);
        assert_eq!(c.snapshot()[0].state, TxnState::CompleteAbort);
        assert_eq!(c.end_txn("t", pid, e, true, 7_001), Err(TxnError::Fenced));
        assert_eq!(c.check_produce("t", pid, e, "a", 0), Err(TxnError::Fenced));
    }
}
