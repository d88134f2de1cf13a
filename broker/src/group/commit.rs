//! Offset commits and fetches, plain and transactional (KIP-98).
//!
//! A plain commit is validated against the group's generation, persisted and
//! then acknowledged. A transactional commit is held per producer until the
//! transaction coordinator ends the transaction: committed into the store, or
//! dropped on abort. Pending transactional offsets are kept in memory only; a
//! broker restart drops them, as it drops the open transactions they belong to.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::offsets::{GroupOffsets, OffsetEntry, TopicPartition};
use super::state::{code, Group, NONE};
use super::{now_ms, Core};

/// Kafka's `offset.metadata.max.bytes` default.
const MAX_METADATA_BYTES: usize = 4096;

/// Transactional offsets awaiting their transaction's end:
/// producer id -> group -> partition -> offset.
#[derive(Default)]
pub(crate) struct PendingTxnOffsets {
    by_producer: HashMap<i64, HashMap<String, GroupOffsets>>,
}

impl PendingTxnOffsets {
    fn is_pending(&self, group: &str, tp: &TopicPartition) -> bool {
        self.by_producer
            .values()
            .any(|groups| groups.get(group).is_some_and(|o| o.contains_key(tp)))
    }

    pub(crate) fn drop_group(&mut self, group: &str) {
        for groups in self.by_producer.values_mut() {
            groups.remove(group);
        }
        self.by_producer.retain(|_, g| !g.is_empty());
    }

    fn drop_topic(&mut self, topic: &str) {
        for groups in self.by_producer.values_mut() {
            for offsets in groups.values_mut() {
                offsets.retain(|(t, _), _| t != topic);
            }
            groups.retain(|_, o| !o.is_empty());
        }
        self.by_producer.retain(|_, g| !g.is_empty());
    }
}

/// One partition of a commit request, whichever API it came from.
struct CommitPartition {
    topic: String,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<String>,
}

/// (topic, partition, error code) for one partition of a response.
type PartitionError = (String, i32, i16);

/// One topic of a fetch: (topic, [(partition, committed offset, error code)]).
type FetchedTopic = (String, Vec<(i32, Option<OffsetEntry>, i16)>);

/// Validates metadata sizes; returns the per-partition errors and the entries to store.
fn prepare(
    parts: Vec<CommitPartition>,
    group_error: Option<i16>,
) -> (Vec<PartitionError>, Vec<(TopicPartition, OffsetEntry)>) {
    let timestamp = now_ms();
    let mut errors = Vec::with_capacity(parts.len());
    let mut entries = Vec::new();
    for p in parts {
        let error = match group_error {
            Some(e) => e,
            None if p.metadata.as_ref().is_some_and(|m| m.len() > MAX_METADATA_BYTES) => {
                code(ResponseError::OffsetMetadataTooLarge)
            }
            None => {
                entries.push((
                    (p.topic.clone(), p.partition),
                    OffsetEntry {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        metadata: p.metadata,
                        commit_timestamp: timestamp,
                    },
                ));
                NONE
            }
        };
        errors.push((p.topic, p.partition, error));
    }
    (errors, entries)
}

/// A commit response's topics: the per-partition results grouped by topic,
/// in the request's order. OffsetCommit and TxnOffsetCommit answer with the
/// same shape under different generated types, so the caller supplies the
/// two constructors.
fn response_topics<T, P>(
    results: Vec<PartitionError>,
    topic: impl Fn(TopicName, Vec<P>) -> T,
    partition: impl Fn(i32, i16) -> P,
) -> Vec<T> {
    let mut grouped: Vec<(String, Vec<P>)> = Vec::new();
    for (name, index, error) in results {
        let part = partition(index, error);
        match grouped.last_mut() {
            Some((t, parts)) if *t == name => parts.push(part),
            _ => grouped.push((name, vec![part])),
        }
    }
    grouped
        .into_iter()
        .map(|(name, parts)| topic(TopicName(s(&name)), parts))
        .collect()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl Core {
    /// The group an offset commit applies to, created (Empty) for a
    /// standalone commit; the error code if the commit is refused.
    fn commit_target(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        transactional: bool,
    ) -> Result<(), i16> {
        if group_id.is_empty() {
            return Err(code(ResponseError::InvalidGroupId));
        }
        match self.groups.get(group_id) {
            Some(g) => g.validate_offset_commit(member_id, instance_id, generation, transactional),
            // A commit from an old generation of a group that no longer exists.
            None if generation >= 0 => Err(code(ResponseError::IllegalGeneration)),
            None => {
                // Not using group management (standalone consumer, admin tool).
                self.groups
                    .insert(group_id.to_string(), Group::new(group_id.to_string()));
                Ok(())
            }
        }
    }

    pub(crate) fn offset_commit(
        &mut self,
        req: &OffsetCommitRequest,
        version: i16,
        now: Instant,
    ) -> OffsetCommitResponse {
        let group_id = req.group_id.0.as_str();
        let member_id = req.member_id.as_str();
        let instance_id = if version >= 7 {
            req.group_instance_id.as_deref()
        } else {
            None
        };
        let generation = req.generation_id_or_member_epoch;
        let parts: Vec<CommitPartition> = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| CommitPartition {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 { p.committed_leader_epoch } else { -1 },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
            })
            .collect();
        let group_error = self
            .commit_target(group_id, member_id, instance_id, generation, false)
            .err();
        let (mut results, entries) = prepare(parts, group_error);
        if group_error.is_none() {
            if let Err(e) = self.store.commit(group_id, entries) {
                tracing::error!(group = group_id, error = %e, "cannot persist committed offsets");
                let storage = code(ResponseError::KafkaStorageError);
                for r in results.iter_mut().filter(|r| r.2 == NONE) {
                    r.2 = storage;
                }
            }
            // A commit is a sign of life from the member.
            if let Some(m) = self.groups.get_mut(group_id).and_then(|g| g.members.get_mut(member_id)) {
                m.heartbeat_deadline = m.heartbeat_deadline.max(now + m.session_timeout);
            }
        }
        let topics = response_topics(
            results,
            |name, parts| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(parts)
            },
            |p, e| {
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p)
                    .with_error_code(e)
            },
        );
        OffsetCommitResponse::default().with_topics(topics)
    }

    pub(crate) fn txn_offset_commit(&mut self, req: &TxnOffsetCommitRequest, version: i16) -> TxnOffsetCommitResponse {
        let group_id = req.group_id.0.as_str();
        let (member_id, instance_id, generation) = if version >= 3 {
            (
                req.member_id.as_str(),
                req.group_instance_id.as_deref(),
                req.generation_id,
            )
        } else {
            ("", None, -1)
        };
        let parts: Vec<CommitPartition> = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| CommitPartition {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 2 { p.committed_leader_epoch } else { -1 },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                })
            })
            .collect();
        let group_error = self
            .commit_target(group_id, member_id, instance_id, generation, true)
            .err();
        let (results, entries) = prepare(parts, group_error);
        if group_error.is_none() && !entries.is_empty() {
            let pending = self
                .txn
                .by_producer
                .entry(req.producer_id.0)
                .or_default()
                .entry(group_id.to_string())
                .or_default();
            pending.extend(entries);
        }
        let topics = response_topics(
            results,
            |name, parts| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(parts)
            },
            |p, e| {
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p)
                    .with_error_code(e)
            },
        );
        TxnOffsetCommitResponse::default().with_topics(topics)
    }

    pub(crate) fn complete_txn(&mut self, producer_id: i64, group_ids: &[String], commit: bool) {
        let Some(groups) = self.txn.by_producer.get_mut(&producer_id) else {
            return;
        };
        let ending: Vec<String> = if group_ids.is_empty() {
            groups.keys().cloned().collect()
        } else {
            group_ids.to_vec()
        };
        let mut to_commit = Vec::new();
        for group in ending {
            if let Some(offsets) = groups.remove(&group) {
                if commit {
                    to_commit.push((group, offsets));
                }
            }
        }
        if groups.is_empty() {
            self.txn.by_producer.remove(&producer_id);
        }
        for (group, offsets) in to_commit {
            if let Err(e) = self.store.commit(&group, offsets.into_iter().collect()) {
                // The transaction is already decided; all that can be done is to say so.
                tracing::error!(group = %group, producer_id, error = %e, "cannot persist transactional offsets");
            }
            self.groups.entry(group.clone()).or_insert_with(|| Group::new(group));
        }
    }

    pub(crate) fn remove_topic(&mut self, topic: &str) {
        if let Err(e) = self.store.delete_topic(topic) {
            tracing::error!(topic, error = %e, "cannot persist the removal of a deleted topic's offsets");
        }
        self.txn.drop_topic(topic);
    }

    /// One group's fetch: (topic, [(partition, offset entry, error)]).
    /// `topics: None` lists every committed partition.
    fn fetch_group(
        &self,
        group: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
        require_stable: bool,
    ) -> Vec<FetchedTopic> {
        let committed = self.store.group(group);
        let wanted: Vec<(String, Vec<i32>)> = match topics {
            Some(t) => t,
            None => {
                let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in committed.into_iter().flat_map(|c| c.keys()) {
                    all.entry(topic.clone()).or_default().push(*partition);
                }
                all.into_iter().collect()
            }
        };
        wanted
            .into_iter()
            .map(|(topic, partitions)| {
                let parts = partitions
                    .into_iter()
                    .map(|p| {
                        let tp = (topic.clone(), p);
                        if require_stable && self.txn.is_pending(group, &tp) {
                            return (p, None, code(ResponseError::UnstableOffsetCommit));
                        }
                        (p, committed.and_then(|c| c.get(&tp)).cloned(), NONE)
                    })
                    .collect();
                (topic, parts)
            })
            .collect()
    }

    pub(crate) fn offset_fetch(&self, req: &OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        let require_stable = version >= 7 && req.require_stable;
        if version >= 8 {
            let groups = req
                .groups
                .iter()
                .map(|g| {
                    let topics = g.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                            .collect()
                    });
                    let topics = self
                        .fetch_group(g.group_id.0.as_str(), topics, require_stable)
                        .into_iter()
                        .map(|(topic, parts)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(s(&topic)))
                                .with_partitions(
                                    parts
                                        .into_iter()
                                        .map(|(p, entry, error)| {
                                            let (offset, epoch, metadata) = unpack(entry);
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(offset)
                                                .with_committed_leader_epoch(epoch)
                                                .with_metadata(Some(s(&metadata)))
                                                .with_error_code(error)
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_topics(topics)
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let topics = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect()
        });
        let topics = self
            .fetch_group(req.group_id.0.as_str(), topics, require_stable)
            .into_iter()
            .map(|(topic, parts)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(s(&topic)))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, entry, error)| {
                                let (offset, epoch, metadata) = unpack(entry);
                                let mut part = OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_metadata(Some(s(&metadata)))
                                    .with_error_code(error);
                                if version >= 5 {
                                    part.committed_leader_epoch = epoch;
                                }
                                part
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }
}

/// (offset, leader epoch, metadata) for the response; -1 and "" when nothing is committed.
fn unpack(entry: Option<OffsetEntry>) -> (i64, i32, String) {
    match entry {
        Some(e) => (e.offset, e.leader_epoch, e.metadata.unwrap_or_default()),
        None => (-1, -1, String::new()),
    }
}
