//! Produce, Fetch, ListOffsets and InitProducerId: the data path.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, ProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Shared;
use crate::log::LogError;
use crate::topics::{Partition, Topic};

/// The most record bytes one partition contributes to one Fetch answer
/// (less than a client's `max.partition.fetch.bytes` may allow; a batch
/// larger than this still goes out whole when it is the first).
///
/// Why: a consumer asking 8 partitions for 4 MiB each got one ~30 MB
/// answer, built whole before its first byte was sent, and waited ~300 ms
/// for it (`weir bench broker`); smaller answers arrive while the next
/// ones are read, and hold less memory.
const PARTITION_BYTES_PER_FETCH: usize = 1024 * 1024;

/// Fetch's isolation level for transactional data.
const READ_COMMITTED: i8 = 1;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The Kafka error a log error is answered with.
pub fn log_error_code(e: &LogError) -> ResponseError {
    match e {
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::CorruptBatch { .. } => ResponseError::CorruptMessage,
        LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        LogError::InvalidRecord { .. } => ResponseError::InvalidRecord,
        LogError::InvalidTxnState { .. } => ResponseError::InvalidTxnState,
        LogError::CoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced,
        LogError::DuplicateSequence { .. } => ResponseError::DuplicateSequenceNumber,
        _ => ResponseError::KafkaStorageError,
    }
}

/// Find a topic by name, or by id for the versions that send ids (Fetch
/// v13+, Produce v13+).
fn find_topic(shared: &Shared, name: &TopicName, id: uuid::Uuid) -> Option<Arc<Topic>> {
    if !id.is_nil() {
        shared.topics.by_id(id)
    } else {
        shared.topics.get(name.0.as_str())
    }
}

fn partition(topic: &Topic, index: i32) -> Option<&Arc<Partition>> {
    usize::try_from(index).ok().and_then(|i| topic.partitions.get(i))
}

pub fn produce(shared: &Shared, request: ProduceRequest, _version: i16) -> ProduceResponse {
    let now = now_ms();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut appended = false;
    for topic_data in request.topic_data {
        let topic = find_topic(shared, &topic_data.name, topic_data.topic_id);
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let mut response = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1);
            if !matches!(request.acks, -1..=1) {
                partitions.push(response.with_error_code(ResponseError::InvalidRequiredAcks.code()));
                continue;
            }
            let Some(p) = topic.as_ref().and_then(|t| partition(t, data.index)) else {
                partitions.push(response.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let records = data.records.unwrap_or_default();
            if let Some(e) =
                super::txn::check_produce(shared, request.transactional_id.as_ref(), &p.topic, p.index, &records)
            {
                partitions.push(response.with_error_code(e.code()));
                continue;
            }
            let mut log = p.log();
            match log.append(&records, now) {
                Ok(a) => {
                    appended |= !a.duplicate;
                    response = response
                        .with_base_offset(a.base_offset)
                        .with_log_start_offset(a.log_start_offset);
                }
                Err(e) => {
                    tracing::debug!(topic = %p.topic, partition = p.index, "produce refused: {e}");
                    response = response
                        .with_error_code(log_error_code(&e).code())
                        .with_error_message(Some(StrBytes::from_string(e.to_string())));
                }
            }
            partitions.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_topic_id(topic_data.topic_id)
                .with_partition_responses(partitions),
        );
    }
    if appended {
        shared.topics.notify_appended();
    }
    ProduceResponse::default().with_responses(responses)
}

/// Answer a Fetch: at once if `min_bytes` are there (or an error), else
/// as soon as an append brings them, else at `max_wait_ms` with what there is.
pub async fn fetch(shared: &Shared, request: FetchRequest, _version: i16) -> FetchResponse {
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let deadline = tokio::time::Instant::now() + wait;
    let mut appended = shared.topics.appended();
    loop {
        appended.borrow_and_update();
        let (response, bytes, errors) = read_fetch(shared, &request);
        if errors || bytes >= request.min_bytes.max(1) as usize {
            return response;
        }
        match tokio::time::timeout_at(deadline, appended.changed()).await {
            Ok(Ok(())) => continue,
            _ => return response,
        }
    }
}

/// One pass over the requested partitions: (response, record bytes, any error).
fn read_fetch(shared: &Shared, request: &FetchRequest) -> (FetchResponse, usize, bool) {
    let read_committed = request.isolation_level == READ_COMMITTED;
    let mut budget = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    };
    let mut total = 0usize;
    let mut errors = false;
    let mut responses = Vec::with_capacity(request.topics.len());
    for wanted in &request.topics {
        let topic = find_topic(shared, &wanted.topic, wanted.topic_id);
        let mut partitions = Vec::with_capacity(wanted.partitions.len());
        for fp in &wanted.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            let Some(p) = topic.as_ref().and_then(|t| partition(t, fp.partition)) else {
                errors = true;
                let code = if wanted.topic_id.is_nil() {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::UnknownTopicId
                };
                partitions.push(data.with_error_code(code.code()));
                continue;
            };
            let log = p.log();
            let (hw, lso, start) = (log.end_offset(), log.last_stable_offset(), log.start_offset());
            data = data
                .with_high_watermark(hw)
                .with_last_stable_offset(lso)
                .with_log_start_offset(start);
            let upper = if read_committed { lso } else { hw };
            // The first partition with data gets at least one whole batch
            // even past the budget, as Kafka does, so a large batch is
            // never stuck.
            let limit = (fp.partition_max_bytes.max(0) as usize)
                .min(budget)
                .min(PARTITION_BYTES_PER_FETCH);
            let limit = if total == 0 { limit.max(1) } else { limit };
            if limit == 0 || fp.fetch_offset == upper {
                partitions.push(data.with_records(Some(Bytes::new())));
                continue;
            }
            match log.read(fp.fetch_offset, limit, upper) {
                Ok(records) => {
                    if read_committed && !records.is_empty() {
                        let aborted = log
                            .aborted_transactions(fp.fetch_offset, upper)
                            .into_iter()
                            .map(|a| {
                                AbortedTransaction::default()
                                    .with_producer_id(ProducerId(a.producer_id))
                                    .with_first_offset(a.first_offset)
                            })
                            .collect();
                        data = data.with_aborted_transactions(Some(aborted));
                    }
                    total += records.len();
                    budget = budget.saturating_sub(records.len());
                    partitions.push(data.with_records(Some(records)));
                }
                Err(e) => {
                    errors = true;
                    partitions.push(data.with_error_code(log_error_code(&e).code()));
                }
            }
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(wanted.topic.clone())
                .with_topic_id(wanted.topic_id)
                .with_partitions(partitions),
        );
    }
    (FetchResponse::default().with_responses(responses), total, errors)
}

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub fn list_offsets(shared: &Shared, request: ListOffsetsRequest, _version: i16) -> ListOffsetsResponse {
    let read_committed = request.isolation_level == READ_COMMITTED;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = shared.topics.get(t.name.0.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|lp| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(lp.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    let Some(p) = topic.as_ref().and_then(|t| partition(t, lp.partition_index)) else {
                        return response.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let log = p.log();
                    let found = match lp.timestamp {
                        LATEST if read_committed => Ok(Some((log.last_stable_offset(), -1))),
                        LATEST => Ok(Some((log.end_offset(), -1))),
                        EARLIEST => Ok(Some((log.start_offset(), -1))),
                        MAX_TIMESTAMP => log.max_timestamp_offset(),
                        ts => log.offset_for_timestamp(ts),
                    };
                    match found {
                        Ok(Some((offset, ts))) => response.with_offset(offset).with_timestamp(ts),
                        Ok(None) => response,
                        Err(e) => response.with_error_code(log_error_code(&e).code()),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// Idempotent producers get a fresh id (epoch 0). Transactional ones are
/// answered by `txn::init_producer_id`.
pub fn init_producer_id(shared: &Shared, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    debug_assert!(request.transactional_id.is_none());
    match shared.producers.next() {
        Ok(id) => response.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::warn!("allocating a producer id: {e}");
            response.with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}
