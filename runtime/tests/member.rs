//! The task manager on the in-memory cluster: a repartitioning count
//! through a member's poll loop, commits, and a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_runtime::memory::{Member, MemoryCluster};
use weir_runtime::TaskConfig;
use weir_state::StateDb;
use weir_topology::prelude::*;

/// words (key: anything, value: a word) → count per word, re-keyed through a
/// repartition topic → `counts` (word → count as text).
fn word_count() -> Topology {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("words", Serdes::string(), Serdes::string())
        .group_by(|_, w| w.clone(), Serdes::string(), Serdes::string())
        .count(Materialized::named("word-counts"))
        .to_stream()
        .map_values(|_, n| n.to_string())
        .to("counts", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

/// The last value per key of a topic.
fn latest(cluster: &MemoryCluster, topic: &str) -> BTreeMap<String, String> {
    cluster
        .all_records(topic)
        .into_iter()
        .map(|r| {
            (
                String::from_utf8(r.key.unwrap()).unwrap(),
                String::from_utf8(r.value.unwrap()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_member_counts_through_a_repartition_topic_and_resumes_after_a_restart() {
    let cluster = MemoryCluster::new();
    cluster.create_topic("words", 2);
    cluster.create_topic("counts", 2);
    for (i, w) in ["a", "b", "a", "c", "a", "b"].iter().enumerate() {
        cluster.produce("words", (i % 2) as i32, Some(b"k"), Some(w.as_bytes()), 1000 + i as i64);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(StateDb::open(dir.path()).unwrap());
    let mut m = Member::new(&cluster, &word_count(), "wc", db.clone(), TaskConfig::default(), None).unwrap();
    m.assign_all().unwrap();
    m.run_until_idle(2, 5000).unwrap();
    let want: BTreeMap<String, String> = [("a", "3"), ("b", "2"), ("c", "1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(latest(&cluster, "counts"), want);
    m.revoke_all().unwrap();
    m.manager.close_all();
    drop(m);

    cluster.produce("words", 0, Some(b"k"), Some(b"c"), 2000);
    let mut m = Member::new(&cluster, &word_count(), "wc", db, TaskConfig::default(), None).unwrap();
    m.assign_all().unwrap();
    m.run_until_idle(2, 5000).unwrap();
    assert_eq!(latest(&cluster, "counts").get("c").map(String::as_str), Some("2"));
    assert_eq!(latest(&cluster, "counts").get("a").map(String::as_str), Some("3"));
}
