//! Sink routing: a `StreamPartitioner` chooses each output record's
//! partition (sinks and repartition topics), a `TopicNameExtractor` its
//! topic. Run by a member on an in-memory cluster whose topics have
//! several partitions, where every partition can be read back.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_runtime::memory::{Member, MemoryCluster};
use weir_runtime::partitioner::default_partitioner;
use weir_runtime::TaskConfig;
use weir_state::StateDb;
use weir_topology::prelude::*;

/// Run `topology` as application `app` on `cluster` until idle.
fn run(cluster: &MemoryCluster, topology: &Topology) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(StateDb::open(dir.path()).unwrap());
    let mut m = Member::new(cluster, topology, "app", db, TaskConfig::default(), None).unwrap();
    m.assign_all().unwrap();
    m.run_until_idle(100, 1_000).unwrap();
    m.manager.close_all();
}

/// (key, value) of each record of a partition, as text.
fn partition(cluster: &MemoryCluster, topic: &str, p: i32) -> Vec<(String, String)> {
    cluster
        .records(topic, p)
        .into_iter()
        .map(|r| {
            (
                String::from_utf8(r.key.unwrap_or_default()).unwrap(),
                String::from_utf8(r.value.unwrap_or_default()).unwrap(),
            )
        })
        .collect()
}

fn kv(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[test]
fn a_partitioner_sends_each_record_to_the_partition_it_chooses() {
    let cluster = MemoryCluster::new();
    cluster.create_topic("in", 1);
    cluster.create_topic("out", 4);
    let mut b = StreamsBuilder::new();
    // Keys "n<number>": partition number % count, except "n99", left to
    // the default partitioning.
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .to_with_partitioner("out", Serdes::string(), Serdes::string(), |k, v, n| {
            assert_eq!(n, 4, "the partitioner is told the topic's count");
            assert!(v.starts_with('v'));
            let number: u32 = k[1..].parse().unwrap();
            (number != 99).then_some(number % n)
        });
    let topology = b.build().unwrap();
    for k in ["n0", "n1", "n2", "n3", "n4", "n5", "n7", "n99"] {
        cluster.produce("in", 0, Some(k.as_bytes()), Some(format!("v{k}").as_bytes()), 1);
    }
    run(&cluster, &topology);
    let default = default_partitioner(b"n99", 4);
    let mut want: BTreeMap<i32, Vec<(String, String)>> = BTreeMap::new();
    for (k, p) in [
        ("n0", 0),
        ("n1", 1),
        ("n2", 2),
        ("n3", 3),
        ("n4", 0),
        ("n5", 1),
        ("n7", 3),
        ("n99", default),
    ] {
        want.entry(p).or_default().push(kv(k, &format!("v{k}")));
    }
    for p in 0..4 {
        assert_eq!(
            partition(&cluster, "out", p),
            want.remove(&p).unwrap_or_default(),
            "partition {p}"
        );
    }
    assert!(cluster.all_records("app-dlq").is_empty());
}

#[test]
fn a_partition_out_of_range_is_a_dead_letter() {
    let cluster = MemoryCluster::new();
    cluster.create_topic("in", 1);
    cluster.create_topic("out", 2);
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .to_with_partitioner("out", Serdes::string(), Serdes::string(), |k, _, _| {
            Some(if k == "bad" { 7 } else { 1 })
        });
    let topology = b.build().unwrap();
    cluster.produce("in", 0, Some(b"good"), Some(b"1"), 1);
    cluster.produce("in", 0, Some(b"bad"), Some(b"2"), 2);
    run(&cluster, &topology);
    assert_eq!(partition(&cluster, "out", 0), vec![]);
    assert_eq!(partition(&cluster, "out", 1), vec![kv("good", "1")]);
    let dlq = cluster.all_records("app-dlq");
    assert_eq!(dlq.len(), 1);
    let error = dlq[0].headers.iter().find(|(k, _)| k == "error").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&error.1),
        "the partitioner chose partition 7 of a topic with 2 partitions"
    );
    assert_eq!(dlq[0].key.as_deref(), Some(&b"bad"[..]));
}

#[test]
fn a_repartition_uses_its_partitioner() {
    let cluster = MemoryCluster::new();
    cluster.create_topic("words", 3);
    cluster.create_topic("counts", 3);
    let mut b = StreamsBuilder::new();
    // Every word to partition 0 of the repartition topic (a hot key
    // funnel): one task counts them all, and still counts right.
    b.stream::<String, String>("words", Serdes::string(), Serdes::string())
        .select_key(|_, w| w.clone())
        .repartition_with_partitioner("by-word", Serdes::string(), Serdes::string(), |_, _, n| {
            assert_eq!(n, 3);
            Some(0)
        })
        .group_by_key(Serdes::string(), Serdes::string())
        .count(Materialized::named("word-counts"))
        .to_stream()
        .map_values(|_, n| n.to_string())
        .to("counts", Serdes::string(), Serdes::string());
    let topology = b.build().unwrap();
    let words = ["ant", "bee", "ant", "cat", "dog", "ant", "bee"];
    for (i, w) in words.iter().enumerate() {
        cluster.produce("words", (i % 3) as i32, Some(b"k"), Some(w.as_bytes()), i as i64);
    }
    run(&cluster, &topology);
    assert_eq!(cluster.records("app-by-word-repartition", 0).len(), words.len());
    assert!(cluster.records("app-by-word-repartition", 1).is_empty());
    assert!(cluster.records("app-by-word-repartition", 2).is_empty());
    // The counts (task 0 wrote them all) go by key to their partitions.
    let mut latest = BTreeMap::new();
    for p in 0..3 {
        for (k, v) in partition(&cluster, "counts", p) {
            assert_eq!(default_partitioner(k.as_bytes(), 3), p, "{k}");
            latest.insert(k, v);
        }
    }
    let want: BTreeMap<String, String> = [("ant", "3"), ("bee", "2"), ("cat", "1"), ("dog", "1")]
        .iter()
        .map(|(k, v)| kv(k, v))
        .collect();
    assert_eq!(latest, want);
}

#[test]
fn a_topic_name_extractor_chooses_each_records_topic() {
    let cluster = MemoryCluster::new();
    cluster.create_topic("events", 1);
    // The output topics exist beforehand, with their own partition counts
    // (the topology does not know them).
    cluster.create_topic("events-click", 2);
    cluster.create_topic("events-view", 3);
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("events", Serdes::string(), Serdes::string())
        .map_values(|_, v| v.to_uppercase())
        .to_dynamic(
            |_, v| format!("events-{}", v.split(':').next().unwrap().to_lowercase()),
            Serdes::string(),
            Serdes::string(),
        );
    let topology = b.build().unwrap();
    // The dynamic sink shows as a sink-named node; no topic of the
    // topology stands for it.
    let described = topology.describe("app");
    assert!(described.contains("KSTREAM-SINK-0000000002"), "{described}");
    assert_eq!(topology.topics().len(), 1);

    let events = [
        ("u1", "click:a"),
        ("u2", "view:b"),
        ("u3", "click:c"),
        ("u1", "view:d"),
        ("u4", "bad name!:e"),
        ("u5", "view:f"),
    ];
    for (i, (k, v)) in events.iter().enumerate() {
        cluster.produce("events", 0, Some(k.as_bytes()), Some(v.as_bytes()), i as i64);
    }
    run(&cluster, &topology);
    // Each topic got exactly its records, in the partitions of their keys.
    let mut clicks = Vec::new();
    for p in 0..2 {
        for (k, v) in partition(&cluster, "events-click", p) {
            assert_eq!(default_partitioner(k.as_bytes(), 2), p, "{k}");
            clicks.push((k, v));
        }
    }
    clicks.sort();
    assert_eq!(clicks, vec![kv("u1", "CLICK:A"), kv("u3", "CLICK:C")]);
    let mut views = Vec::new();
    for p in 0..3 {
        for (k, v) in partition(&cluster, "events-view", p) {
            assert_eq!(default_partitioner(k.as_bytes(), 3), p, "{k}");
            views.push((k, v));
        }
    }
    views.sort();
    assert_eq!(views, vec![kv("u1", "VIEW:D"), kv("u2", "VIEW:B"), kv("u5", "VIEW:F")]);
    // A name Kafka would not take is a dead letter.
    let dlq = cluster.all_records("app-dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].key.as_deref(), Some(&b"u4"[..]));
    let error = dlq[0].headers.iter().find(|(k, _)| k == "error").unwrap();
    assert!(
        String::from_utf8_lossy(&error.1).starts_with("the topic name extractor chose no valid topic"),
        "{:?}",
        String::from_utf8_lossy(&error.1)
    );
}
