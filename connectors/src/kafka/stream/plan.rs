//! Which topics an application needs, with how many partitions, and which
//! sub-topology reads each: worked out once at start-up from the topology
//! and the cluster's metadata, then shared read-only by the stream threads.

use std::collections::HashMap;

use weir_runtime::TaskId;
use weir_topology::Topology;

use crate::kafka::{Admin, TopicSpec};
use crate::{Error, Result};

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

impl Plan {
    /// Resolve the topics of `topology` on the cluster behind `admin`,
    /// creating what is missing: internal topics always; source and sink
    /// topics only on the embedded/dev broker (on a real cluster a missing
    /// source topic is an error naming it, as in Kafka Streams).
    pub fn prepare(topology: &Topology, application_id: &str, admin: &Admin) -> Result<Plan> {
        let embedded = admin.is_embedded_broker()?;
        let n = topology.topics().len();
        let topic_names: Vec<String> = (0..n as u32).map(|i| topology.topic_name(i, application_id)).collect();
        let internal: Vec<bool> = topology.topics().iter().map(|t| t.internal).collect();
        let mut reader = vec![None; n];
        for sub in topology.subtopologies() {
            for t in &sub.source_topics {
                reader[*t as usize] = Some(sub.id);
            }
        }

        // External topics: read their partition counts, creating the missing
        // ones on a development broker.
        let existing = admin.topics()?;
        let mut topic_partitions = vec![0i32; n];
        let mut to_create = Vec::new();
        for i in 0..n {
            if internal[i] {
                continue;
            }
            match existing.get(&topic_names[i]) {
                Some(p) => topic_partitions[i] = *p,
                None if embedded || reader[i].is_none() => {
                    to_create.push(TopicSpec::with_default_partitions(&topic_names[i]))
                }
                None => {
                    return Err(Error::UnknownTopic(format!(
                        "{} (a source topic of {application_id}; create it first)",
                        topic_names[i]
                    )))
                }
            }
        }
        if !to_create.is_empty() {
            admin.ensure_topics(&to_create)?;
            let now = admin.topics()?;
            for i in 0..n {
                if !internal[i] && topic_partitions[i] == 0 {
                    topic_partitions[i] = *now
                        .get(&topic_names[i])
                        .ok_or_else(|| Error::UnknownTopic(topic_names[i].clone()))?;
                }
            }
        }

        // Sub-topologies take the largest partition count of their external
        // sources; a repartition topic takes the count of the sub-topology
        // writing it (Kafka Streams' rule), and its reader follows.
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
                if sub_partitions[sub.id] > 0 {
                    for t in &sub.sink_topics {
                        if internal[*t as usize] && topic_partitions[*t as usize] == 0 {
                            topic_partitions[*t as usize] = sub_partitions[sub.id];
                        }
                    }
                }
            }
        }
        if let Some(sub) = subs.iter().find(|s| sub_partitions[s.id] == 0) {
            return Err(Error::InvalidArgument(format!(
                "cannot work out the partition count of sub-topology {} of {application_id}",
                sub.id
            )));
        }

        let mut specs = Vec::new();
        for i in 0..n {
            if internal[i] {
                // An existing repartition topic keeps its count.
                if let Some(p) = existing.get(&topic_names[i]) {
                    topic_partitions[i] = *p;
                }
                specs.push(TopicSpec::new(&topic_names[i], topic_partitions[i]));
            }
        }
        let mut changelogs = vec![Vec::new(); subs.len()];
        for sub in subs {
            for store in &sub.stores {
                let Some(spec) = topology.stores().iter().find(|s| &s.name == store) else {
                    continue;
                };
                if !spec.logged {
                    continue;
                }
                let topic = Topology::changelog_topic(application_id, store);
                // Compacted: the latest value per key is all a restore needs
                // (expired windows leave as tombstones).
                specs.push(TopicSpec::new(&topic, sub_partitions[sub.id]).compacted());
                changelogs[sub.id].push((store.clone(), topic));
            }
        }
        let dlq_topic = format!("{application_id}-dlq");
        let checkpoints_topic = format!("{application_id}-checkpoints");
        // One partition: dead letters stay in the order they happened.
        specs.push(TopicSpec::new(&dlq_topic, 1));
        specs.push(TopicSpec::new(&checkpoints_topic, 1).compacted());
        admin.ensure_topics(&specs)?;

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
            dlq_topic,
            checkpoints_topic,
        })
    }

    /// The Kafka topics the application's consumer subscribes to.
    pub fn source_topics(&self) -> Vec<String> {
        (0..self.topic_names.len())
            .filter(|i| self.reader[*i].is_some())
            .map(|i| self.topic_names[i].clone())
            .collect()
    }

    /// The task that reads `(topic, partition)`.
    pub fn task_of(&self, topic: u32, partition: i32) -> Option<TaskId> {
        self.reader[topic as usize].map(|subtopology| TaskId { subtopology, partition })
    }
}
