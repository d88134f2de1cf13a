//! An application's topics on a Kafka cluster: the partition counts of its
//! external topics (created on a development broker when missing, an error
//! naming the topic otherwise), then [`Plan`] (weir-runtime, the one
//! authority on names and partition counts) and the internal topics it
//! asks for.

use weir_runtime::Plan;
use weir_topology::Topology;

use crate::kafka::{Admin, TopicSpec};
use crate::{Error, Result};

/// Resolve the topics of `topology` on the cluster behind `admin`,
/// creating what is missing: internal topics always; source and sink
/// topics only on weir's own (development) broker (on a Kafka cluster a
/// missing source topic is an error naming it, as in Kafka Streams).
pub fn prepare(topology: &Topology, application_id: &str, admin: &Admin) -> Result<Plan> {
    let development = admin.is_weir_broker();
    let mut existing = admin.topics()?;
    let mut to_create = Vec::new();
    for (i, t) in topology.topics().iter().enumerate() {
        if t.internal {
            continue;
        }
        let name = topology.topic_name(i as u32, application_id);
        // A global table's topic is read too (by every instance).
        let read = topology
            .subtopologies()
            .iter()
            .any(|s| s.source_topics.contains(&(i as u32)))
            || topology.global_stores().iter().any(|g| g.topic == i as u32);
        if !existing.contains_key(&name) {
            if development || !read {
                to_create.push(TopicSpec::with_default_partitions(&name));
            } else {
                return Err(Error::MissingSourceTopic {
                    topic: name,
                    application: application_id.to_string(),
                });
            }
        }
    }
    if !to_create.is_empty() {
        admin.ensure_topics(&to_create)?;
        existing = admin.topics()?;
    }
    let plan = Plan::new(topology, application_id, &|name| existing.get(name).copied())?;
    let specs: Vec<TopicSpec> = plan
        .internal_topics()
        .into_iter()
        .map(|t| {
            let mut spec = TopicSpec::new(&t.name, t.partitions);
            if t.keep_forever {
                spec.config.push(("retention.ms".into(), "-1".into()));
            }
            if t.compacted {
                spec.compacted()
            } else {
                spec
            }
        })
        .collect();
    admin.ensure_topics(&specs)?;
    Ok(plan)
}
