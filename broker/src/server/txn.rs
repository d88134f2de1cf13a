//! The transaction APIs (KIP-98): InitProducerId with a transactional id,
//! AddPartitionsToTxn (v0-3 for one producer, v4+ batched), AddOffsetsToTxn,
//! TxnOffsetCommit, EndTxn, DescribeTransactions and ListTransactions; and the
//! Produce check of transactional batches. The state machine is in
//! [`crate::txn`]; this maps requests onto it and its errors onto codes.

use kafka_protocol::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use kafka_protocol::messages::add_offsets_to_txn_response::AddOffsetsToTxnResponse;
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnRequest, AddPartitionsToTxnTopic};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse, AddPartitionsToTxnResult,
    AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_request::DescribeTransactionsRequest;
use kafka_protocol::messages::describe_transactions_response::{
    DescribeTransactionsResponse, TopicData, TransactionState as DescribedState,
};
use kafka_protocol::messages::end_txn_request::EndTxnRequest;
use kafka_protocol::messages::end_txn_response::EndTxnResponse;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::list_transactions_request::ListTransactionsRequest;
use kafka_protocol::messages::list_transactions_response::{ListTransactionsResponse, TransactionState as ListedState};
use kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequest;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{now_ms, Shared};
use crate::txn::state::{PendingOffset, TxnError};
use crate::txn::{self, InitOutcome};

/// The code for `e`. `old`: the request's version predates PRODUCER_FENCED
/// (KIP-588), so a fenced producer gets INVALID_PRODUCER_EPOCH, as Kafka answers.
fn code(e: TxnError, old: bool) -> i16 {
    let e = match e {
        TxnError::InvalidTimeout => ResponseError::InvalidTransactionTimeout,
        TxnError::UnknownProducerId => ResponseError::InvalidProducerIdMapping,
        TxnError::Fenced if old => ResponseError::InvalidProducerEpoch,
        TxnError::Fenced => ResponseError::ProducerFenced,
        TxnError::InvalidState => ResponseError::InvalidTxnState,
        TxnError::Concurrent => ResponseError::ConcurrentTransactions,
        TxnError::Storage => ResponseError::CoordinatorNotAvailable,
    };
    e.code()
}

fn result_code(r: Result<(), TxnError>, old: bool) -> i16 {
    r.map_or_else(|e| code(e, old), |()| 0)
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// InitProducerId with a transactional id (the idempotent path is
/// `data::init_producer_id`). An ongoing transaction of the previous epoch is
/// aborted before the answer.
pub async fn init_producer_id(shared: &Shared, r: InitProducerIdRequest, version: i16) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let id = r.transactional_id.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    let (req_pid, req_epoch) = if version >= 3 {
        (r.producer_id.0, r.producer_epoch)
    } else {
        (-1, -1)
    };
    let now = now_ms();
    let outcome = shared.txns.init_producer_id(
        &id,
        r.transaction_timeout_ms,
        req_pid,
        req_epoch,
        &shared.producers,
        now,
    );
    match outcome {
        Ok(InitOutcome::Ready { producer_id, epoch }) => response
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Ok(InitOutcome::AbortFirst(c)) => {
            let ok = txn::complete(&c, &shared.topics, &shared.groups, false, now).await;
            shared.txns.finish(&c, ok, now_ms());
            if ok {
                response
                    .with_producer_id(ProducerId(c.producer_id))
                    .with_producer_epoch(c.epoch)
            } else {
                // Still PrepareAbort: the client retries and gets CONCURRENT_TRANSACTIONS
                // until the timeout task has completed the abort.
                response.with_error_code(ResponseError::ConcurrentTransactions.code())
            }
        }
        Err(e) => response.with_error_code(code(e, version < 4)),
    }
}

/// Per-partition results of adding `topics` for one producer: unknown
/// partitions get UNKNOWN_TOPIC_OR_PARTITION and the others
/// OPERATION_NOT_ATTEMPTED, as Kafka answers; otherwise all get the outcome.
fn add_partitions_one(
    shared: &Shared,
    id: &str,
    producer_id: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    old: bool,
    now: i64,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let known = |t: &str, p: i32| {
        shared
            .topics
            .get(t)
            .is_some_and(|topic| p >= 0 && (p as usize) < topic.partitions.len())
    };
    let all: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p)))
        .collect();
    let any_unknown = all.iter().any(|(t, p)| !known(t, *p));
    let outcome = if any_unknown {
        None
    } else {
        Some(result_code(
            shared.txns.add(id, producer_id, epoch, &all, &[], now),
            old,
        ))
    };
    topics
        .iter()
        .map(|t| {
            let results = t
                .partitions
                .iter()
                .map(|p| {
                    let error = match outcome {
                        Some(c) => c,
                        None if known(t.name.0.as_str(), *p) => ResponseError::OperationNotAttempted.code(),
                        None => ResponseError::UnknownTopicOrPartition.code(),
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(error)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(results)
        })
        .collect()
}

pub fn add_partitions_to_txn(
    shared: &Shared,
    r: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let now = now_ms();
    if version <= 3 {
        let results = add_partitions_one(
            shared,
            r.v3_and_below_transactional_id.0.as_str(),
            r.v3_and_below_producer_id.0,
            r.v3_and_below_producer_epoch,
            &r.v3_and_below_topics,
            version < 2,
            now,
        );
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    // v4+ (from brokers, KIP-890): `verify_only` asks whether the partitions
    // are already in the transaction, without adding them.
    let results = r
        .transactions
        .iter()
        .map(|t| {
            let id = t.transactional_id.0.as_str();
            let topic_results = if t.verify_only {
                t.topics
                    .iter()
                    .map(|topic| {
                        let results = topic
                            .partitions
                            .iter()
                            .map(|p| {
                                let check = shared.txns.check_produce(
                                    id,
                                    t.producer_id.0,
                                    t.producer_epoch,
                                    topic.name.0.as_str(),
                                    *p,
                                );
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(result_code(check, false))
                            })
                            .collect();
                        AddPartitionsToTxnTopicResult::default()
                            .with_name(topic.name.clone())
                            .with_results_by_partition(results)
                    })
                    .collect()
            } else {
                add_partitions_one(shared, id, t.producer_id.0, t.producer_epoch, &t.topics, false, now)
            };
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(topic_results)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

pub fn add_offsets_to_txn(shared: &Shared, r: AddOffsetsToTxnRequest, version: i16) -> AddOffsetsToTxnResponse {
    let group = r.group_id.0.to_string();
    let result = if group.is_empty() {
        Err(TxnError::InvalidState)
    } else {
        shared.txns.add(
            r.transactional_id.0.as_str(),
            r.producer_id.0,
            r.producer_epoch,
            &[],
            &[group],
            now_ms(),
        )
    };
    let error = match result {
        Ok(()) => 0,
        Err(TxnError::InvalidState) if r.group_id.0.is_empty() => ResponseError::InvalidGroupId.code(),
        Err(e) => code(e, version < 2),
    };
    AddOffsetsToTxnResponse::default().with_error_code(error)
}

/// Checks the producer against the transaction (its group must have been
/// added by AddOffsetsToTxn), hands the offsets to the group coordinator, and
/// keeps those it accepted with the transaction.
pub async fn txn_offset_commit(shared: &Shared, r: TxnOffsetCommitRequest, version: i16) -> TxnOffsetCommitResponse {
    let id = r.transactional_id.0.to_string();
    let group = r.group_id.0.to_string();
    let (producer_id, epoch) = (r.producer_id.0, r.producer_epoch);
    if let Err(e) = shared.txns.check_txn_offset_commit(&id, producer_id, epoch, &group) {
        // The group coordinator's fencing code: INVALID_PRODUCER_EPOCH at every version.
        let error = code(e, true);
        let topics = r
            .topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error)
                            })
                            .collect(),
                    )
            })
            .collect();
        return TxnOffsetCommitResponse::default().with_topics(topics);
    }
    let requested: Vec<PendingOffset> = r
        .topics
        .iter()
        .flat_map(|t| {
            let group = &group;
            t.partitions.iter().map(move |p| PendingOffset {
                group: group.clone(),
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 2 { p.committed_leader_epoch } else { -1 },
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let response = shared.groups.txn_offset_commit(r, version).await;
    let accepted: Vec<PendingOffset> = requested
        .into_iter()
        .filter(|o| {
            response.topics.iter().any(|t| {
                t.name.0.as_str() == o.topic
                    && t.partitions
                        .iter()
                        .any(|p| p.partition_index == o.partition && p.error_code == 0)
            })
        })
        .collect();
    if !accepted.is_empty() {
        // Fails only if the transaction ended meanwhile (or the write failed):
        // the offsets are then settled by the group coordinator already.
        if let Err(e) = shared
            .txns
            .txn_offset_commit(&id, producer_id, epoch, &group, accepted, now_ms())
        {
            tracing::debug!(transactional_id = %id, "transactional offsets not kept for recovery: {e:?}");
        }
    }
    response
}

/// EndTxn: decide, write the markers, settle the offsets, then answer.
pub async fn end_txn(shared: &Shared, r: EndTxnRequest, version: i16) -> EndTxnResponse {
    let now = now_ms();
    let response = EndTxnResponse::default()
        .with_producer_id(r.producer_id)
        .with_producer_epoch(r.producer_epoch);
    let decided = shared.txns.end_txn(
        r.transactional_id.0.as_str(),
        r.producer_id.0,
        r.producer_epoch,
        r.committed,
        now,
    );
    match decided {
        Ok(None) => response,
        Ok(Some(c)) => {
            let ok = txn::complete(&c, &shared.topics, &shared.groups, false, now).await;
            shared.txns.finish(&c, ok, now_ms());
            if ok {
                response
            } else {
                // The decision stands and will be completed; the client retries
                // and gets CONCURRENT_TRANSACTIONS until then, then success.
                response.with_error_code(ResponseError::ConcurrentTransactions.code())
            }
        }
        Err(e) => response.with_error_code(code(e, version < 2)),
    }
}

/// Complete every transaction decided before a restart (before serving).
pub async fn recover(shared: &Shared) {
    for c in shared.txns.prepared() {
        tracing::info!(
            transactional_id = %c.transactional_id,
            commit = c.commit,
            partitions = c.partitions.len(),
            "completing a transaction decided before the restart"
        );
        let ok = txn::complete(&c, &shared.topics, &shared.groups, true, now_ms()).await;
        shared.txns.finish(&c, ok, now_ms());
    }
}

/// One sweep of the timeout task: abort timed-out transactions, retry
/// failed completions.
pub async fn expire(shared: &Shared) {
    for c in shared.txns.expire(now_ms()) {
        let ok = txn::complete(&c, &shared.topics, &shared.groups, false, now_ms()).await;
        shared.txns.finish(&c, ok, now_ms());
    }
}

/// A transactional Produce: the batch's producer must own the transaction
/// and the partition must have been added to it (AddPartitionsToTxn), else
/// the partition is refused with this error (checked before the log's own
/// sequence and epoch checks).
pub fn check_produce(
    shared: &Shared,
    transactional_id: Option<&TransactionalId>,
    topic: &str,
    partition: i32,
    records: &[u8],
) -> Option<ResponseError> {
    let id = transactional_id?;
    // The first batch's producer id and epoch (magic 2 header): offsets 43 and 51.
    if records.len() < 61 || records[16] != 2 {
        return None; // the log refuses it with the precise reason
    }
    let producer_id = i64::from_be_bytes(records[43..51].try_into().ok()?);
    let epoch = i16::from_be_bytes(records[51..53].try_into().ok()?);
    match shared
        .txns
        .check_produce(id.0.as_str(), producer_id, epoch, topic, partition)
    {
        Ok(()) => None,
        Err(TxnError::Fenced) => Some(ResponseError::InvalidProducerEpoch),
        Err(TxnError::UnknownProducerId) => Some(ResponseError::InvalidProducerIdMapping),
        Err(_) => Some(ResponseError::InvalidTxnState),
    }
}

pub fn describe_transactions(shared: &Shared, r: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let all = shared.txns.snapshot();
    let states = r
        .transactional_ids
        .into_iter()
        .map(|id| {
            let Some(m) = all.iter().find(|m| m.transactional_id == id.0.as_str()) else {
                return DescribedState::default()
                    .with_transactional_id(id)
                    .with_error_code(ResponseError::TransactionalIdNotFound.code())
                    .with_transaction_state(s("Dead"))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1);
            };
            let mut topics: Vec<TopicData> = Vec::new();
            for (t, p) in &m.partitions {
                match topics.iter_mut().find(|d| d.topic.0.as_str() == t) {
                    Some(d) => d.partitions.push(*p),
                    None => topics.push(
                        TopicData::default()
                            .with_topic(TopicName(s(t)))
                            .with_partitions(vec![*p]),
                    ),
                }
            }
            DescribedState::default()
                .with_transactional_id(id)
                .with_transaction_state(s(m.state.name()))
                .with_transaction_timeout_ms(m.timeout_ms)
                .with_transaction_start_time_ms(m.txn_start_ms)
                .with_producer_id(ProducerId(m.producer_id))
                .with_producer_epoch(m.epoch)
                .with_topics(topics)
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

const STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

pub fn list_transactions(shared: &Shared, r: ListTransactionsRequest, version: i16) -> ListTransactionsResponse {
    let response = ListTransactionsResponse::default();
    // A v2 pattern is a regular expression; without a regex engine only
    // patterns that are plain names (an exact match) are understood.
    let pattern = r.transactional_id_pattern.as_ref().filter(|p| !p.is_empty());
    if let Some(p) = pattern {
        if p.chars()
            .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        {
            return response.with_error_code(ResponseError::InvalidRequest.code());
        }
    }
    let unknown: Vec<StrBytes> = r
        .state_filters
        .iter()
        .filter(|f| !STATES.contains(&f.as_str()))
        .cloned()
        .collect();
    let now = now_ms();
    let states = shared
        .txns
        .snapshot()
        .into_iter()
        .filter(|m| r.state_filters.is_empty() || r.state_filters.iter().any(|f| f.as_str() == m.state.name()))
        .filter(|m| r.producer_id_filters.is_empty() || r.producer_id_filters.contains(&ProducerId(m.producer_id)))
        .filter(|m| {
            version < 1 || r.duration_filter < 0 || (m.txn_start_ms >= 0 && now - m.txn_start_ms >= r.duration_filter)
        })
        .filter(|m| pattern.is_none_or(|p| p.as_str() == m.transactional_id))
        .map(|m| {
            ListedState::default()
                .with_transactional_id(TransactionalId(s(&m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(s(m.state.name()))
        })
        .collect();
    response
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
