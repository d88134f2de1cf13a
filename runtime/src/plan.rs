//! Which topics an application uses, with how many partitions, and which
//! task reads each: worked out once from the topology and the partition
//! counts the cluster reports, then shared read-only by everything that
//! runs the application (the Kafka stream threads, the in-memory cluster).
//!
//! Internal topic names come from [`weir_topology::names`], the one
//! place that builds them.

use std::collections::HashMap;

use weir_topology::Topology;

use crate::{RuntimeError, TaskId};

/// The partition count of a repartition topic `t` that does not exist yet
/// (see [`Plan::new`]), if it can be worked out from what is known.
fn repartition_count(topology: &Topology, t: u32, topic_partitions: &[i32], sub_partitions: &[i32]) -> Option<i32> {
    let internal = |t: u32| topology.topics()[t as usize].internal;
    let subs = topology.subtopologies();
    // The largest count of the sub-topologies writing `t`, once all known.
    let writers = |t: u32| -> Option<i32> {
        let counts: Vec<i32> = subs
            .iter()
            .filter(|s| s.sink_topics.contains(&t))
            .map(|s| sub_partitions[s.id])
            .collect();
        (!counts.is_empty() && counts.iter().all(|c| *c > 0)).then(|| counts.into_iter().max().unwrap_or(1))
    };
    let Some(reader) = subs.iter().find(|s| s.source_topics.contains(&t)) else {
        return writers(t);
    };
    let external: Vec<i32> = reader
        .source_topics
        .iter()
        .filter(|s| !internal(**s))
        .map(|s| topic_partitions[*s as usize])
        .collect();
    if !external.is_empty() {
        return external.into_iter().max();
    }
    let mut count = 0;
    for s in &reader.source_topics {
        let c = match topic_partitions[*s as usize] {
            0 => writers(*s)?,
            c => c,
        };
        count = count.max(c);
    }
    Some(count)
}

/// The resolved topics of one application.
#[derive(Debug, Clone)]
pub struct Plan {
    pub application_id: String,
    /// Kafka name of each topology topic index.
    pub topic_names: Vec<String>,
    /// Partition count of each topology topic index.
    pub topic_partitions: Vec<i32>,
    /// The sub-topology reading each topic index, if any.
    pub reader: Vec<Option<usize>>,
    /// Whether each topic index is an internal (repartition) topic.
    pub internal: Vec<bool>,
    /// Partition count of each sub-topology (= number of its tasks).
    pub sub_partitions: Vec<i32>,
    /// Topic index by Kafka name.
    pub by_name: HashMap<String, u32>,
    /// Logged stores per sub-topology: (store name, changelog topic).
    pub changelogs: Vec<Vec<(String, String)>>,
    pub dlq_topic: String,
    pub checkpoints_topic: String,
}

/// A topic the application creates for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalTopic {
    pub name: String,
    pub partitions: i32,
    /// Compacted (changelogs, checkpoints) rather than deleted by age.
    pub compacted: bool,
    /// Never deleted by age (`retention.ms=-1`, as Kafka Streams makes its
    /// repartition topics): repartition records keep their input's
    /// timestamps, which may be older than the cluster's retention when
    /// old data is (re)processed, and would be deleted before they are
    /// read.
    pub keep_forever: bool,
}

impl Plan {
    /// The dead-letter topic of `application_id`.
    pub fn dlq_topic_of(application_id: &str) -> String {
        weir_topology::names::dlq_topic(application_id)
    }

    /// The checkpoints topic of `application_id`.
    pub fn checkpoints_topic_of(application_id: &str) -> String {
        weir_topology::names::checkpoints_topic(application_id)
    }

    /// Resolve `topology`'s topics. `existing(name)` is the partition count
    /// of a topic that exists: every external topic must (the caller
    /// creates or refuses missing ones first); an existing repartition
    /// topic keeps its count, a new one takes the count of the
    /// sub-topology that writes it (Kafka Streams' rule).
    pub fn new(
        topology: &Topology,
        application_id: &str,
        existing: &dyn Fn(&str) -> Option<i32>,
    ) -> Result<Plan, RuntimeError> {
        let n = topology.topics().len();
        let topic_names: Vec<String> = (0..n as u32).map(|i| topology.topic_name(i, application_id)).collect();
        let internal: Vec<bool> = topology.topics().iter().map(|t| t.internal).collect();
        let mut reader = vec![None; n];
        for sub in topology.subtopologies() {
            for t in &sub.source_topics {
                reader[*t as usize] = Some(sub.id);
            }
        }
        let mut topic_partitions = vec![0i32; n];
        for i in 0..n {
            if !internal[i] {
                topic_partitions[i] =
                    existing(&topic_names[i]).ok_or_else(|| RuntimeError::UnknownTopic(topic_names[i].clone()))?;
            }
        }
        // Sub-topologies take the largest partition count of their sources.
        // A new repartition topic takes (Kafka Streams' rule for
        // co-partitioned topics) the count of the external topics its
        // reader also reads, so that a join or aggregation of both finds
        // a key in the same partition of each; a reader of repartition
        // topics only gives each new one the largest count of the
        // sub-topologies writing them (and of those that exist).
        for i in 0..n {
            if internal[i] {
                topic_partitions[i] = existing(&topic_names[i]).unwrap_or(0);
            }
        }
        let subs = topology.subtopologies();
        let mut sub_partitions = vec![0i32; subs.len()];
        for _ in 0..=subs.len() {
            for sub in subs {
                if sub_partitions[sub.id] == 0 {
                    let counts: Vec<i32> = sub
                        .source_topics
                        .iter()
                        .map(|t| topic_partitions[*t as usize])
                        .collect();
                    if counts.iter().all(|c| *c > 0) {
                        sub_partitions[sub.id] = counts.into_iter().max().unwrap_or(1).max(1);
                    }
                }
            }
            for t in 0..n {
                if internal[t] && topic_partitions[t] == 0 {
                    topic_partitions[t] =
                        repartition_count(topology, t as u32, &topic_partitions, &sub_partitions).unwrap_or(0);
                }
            }
        }
        // Co-partitioning: the topics a stateful sub-topology reads (the
        // two sides of a join, the inputs of an aggregation of merged
        // streams) must have as many partitions each, or a key's records
        // would meet in different tasks (Kafka Streams refuses to start
        // too). New repartition topics agree by construction; external
        // topics, and repartition topics that already exist, may not. A
        // stateless sub-topology (a merge) may mix counts.
        for sub in subs.iter().filter(|s| !s.stores.is_empty()) {
            let sources: Vec<(&str, i32)> = sub
                .source_topics
                .iter()
                .map(|t| (topic_names[*t as usize].as_str(), topic_partitions[*t as usize]))
                .collect();
            if sources.windows(2).any(|w| w[0].1 != w[1].1) {
                let counts: Vec<String> = sources.iter().map(|(t, n)| format!("{t} ({n})")).collect();
                return Err(RuntimeError::Io(format!(
                    "sub-topology {} of {application_id} reads topics that are not co-partitioned: {} must have \
                     the same number of partitions (their records are joined or aggregated by key)",
                    sub.id,
                    counts.join(", ")
                )));
            }
        }
        if let Some(sub) = subs.iter().find(|s| sub_partitions[s.id] == 0) {
            return Err(RuntimeError::Io(format!(
                "cannot work out the partition count of sub-topology {} of {application_id}",
                sub.id
            )));
        }
        let mut changelogs = vec![Vec::new(); subs.len()];
        for sub in subs {
            for store in &sub.stores {
                let logged = topology.stores().iter().any(|s| &s.name == store && s.logged);
                if logged {
                    changelogs[sub.id].push((store.clone(), Topology::changelog_topic(application_id, store)));
                }
            }
        }
        let by_name = topic_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        Ok(Plan {
            application_id: application_id.to_string(),
            topic_names,
            topic_partitions,
            reader,
            internal,
            sub_partitions,
            by_name,
            changelogs,
            dlq_topic: Plan::dlq_topic_of(application_id),
            checkpoints_topic: Plan::checkpoints_topic_of(application_id),
        })
    }

    /// The topics the application creates for itself: repartition topics,
    /// compacted changelogs (the latest value per key is all a restore
    /// needs), the dead-letter topic (one partition: dead letters stay in
    /// the order they happened) and the compacted checkpoints topic (one
    /// partition).
    pub fn internal_topics(&self) -> Vec<InternalTopic> {
        let mut out = Vec::new();
        for (i, name) in self.topic_names.iter().enumerate() {
            if self.internal[i] {
                out.push(InternalTopic {
                    name: name.clone(),
                    partitions: self.topic_partitions[i],
                    compacted: false,
                    keep_forever: true,
                });
            }
        }
        for (sub, logs) in self.changelogs.iter().enumerate() {
            for (_, topic) in logs {
                out.push(InternalTopic {
                    name: topic.clone(),
                    partitions: self.sub_partitions[sub],
                    compacted: true,
                    keep_forever: false,
                });
            }
        }
        out.push(InternalTopic {
            name: self.dlq_topic.clone(),
            partitions: 1,
            compacted: false,
            keep_forever: false,
        });
        out.push(InternalTopic {
            name: self.checkpoints_topic.clone(),
            partitions: 1,
            compacted: true,
            keep_forever: false,
        });
        out
    }

    /// The topics the application's consumers subscribe to.
    pub fn source_topics(&self) -> Vec<String> {
        (0..self.topic_names.len())
            .filter(|i| self.reader[*i].is_some())
            .map(|i| self.topic_names[i].clone())
            .collect()
    }

    /// The task that reads `(topic, partition)`.
    pub fn task_of(&self, topic: u32, partition: i32) -> Option<TaskId> {
        self.reader
            .get(topic as usize)
            .copied()
            .flatten()
            .map(|subtopology| TaskId { subtopology, partition })
    }

    /// The (topic index, partition) pairs task `id` reads.
    pub fn partitions_of(&self, id: TaskId) -> Vec<(u32, i32)> {
        (0..self.reader.len())
            .filter(|t| self.reader[*t] == Some(id.subtopology))
            .map(|t| (t as u32, id.partition))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use weir_topology::prelude::*;

    use super::*;

    /// Repartition topics are kept whatever their records' age; the
    /// changelog, checkpoints and dead-letter topics keep the cluster's
    /// policy (compaction, or deletion by age).
    #[test]
    fn only_repartition_topics_are_kept_forever() {
        let mut b = StreamsBuilder::new();
        b.stream::<String, String>("words", Serdes::string(), Serdes::string())
            .group_by(|_, w| w.clone(), Serdes::string(), Serdes::string())
            .count(Materialized::named("counts"))
            .to_stream()
            .to("out", Serdes::string(), Serdes::u64());
        let topology = b.build().unwrap();
        let plan = Plan::new(&topology, "app", &|_| Some(2)).unwrap();
        let kept: Vec<(String, bool, bool)> = plan
            .internal_topics()
            .into_iter()
            .map(|t| (t.name, t.compacted, t.keep_forever))
            .collect();
        assert_eq!(
            kept,
            [
                ("app-counts-repartition".to_string(), false, true),
                ("app-counts-changelog".to_string(), true, false),
                ("app-dlq".to_string(), false, false),
                ("app-checkpoints".to_string(), true, false),
            ]
        );
    }
}
