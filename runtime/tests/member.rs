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

#[test]
fn a_restoring_task_does_not_hold_up_the_running_ones() {
    use weir_runtime::manager::Lifecycle;
    use weir_runtime::partitioner::default_partitioner;
    use weir_runtime::TaskId;

    let cluster = MemoryCluster::new();
    cluster.create_topic("words", 2);
    cluster.create_topic("counts", 2);
    // 3,000 distinct words: a changelog of some 1,500 records per partition
    // of the count.
    for i in 0..3000 {
        let w = format!("w{i}");
        cluster.produce("words", i % 2, Some(b"k"), Some(w.as_bytes()), 1000);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(StateDb::open(dir.path()).unwrap());
    let count_task = |partition| TaskId {
        subtopology: 1,
        partition,
    };
    {
        let mut m = Member::new(&cluster, &word_count(), "wc", db.clone(), TaskConfig::default(), None).unwrap();
        m.assign_all().unwrap();
        m.run_until_idle(500, 5000).unwrap();
        // Task 1_0 loses its local state (everything is committed): the next
        // member must restore it from the changelog, 1_1 runs at once.
        m.manager.running()[&count_task(0)].state().wipe().unwrap();
    }
    let mut m = Member::new(&cluster, &word_count(), "wc", db, TaskConfig::default(), None).unwrap();
    m.set_restore_budget(100);
    m.assign_all().unwrap();
    assert_eq!(m.manager.lifecycle(count_task(0)), Some(Lifecycle::Restoring));
    assert_eq!(m.manager.lifecycle(count_task(1)), Some(Lifecycle::Running));
    let restoring = || m.manager.config().metrics.restoring_tasks.get();
    assert_eq!(restoring(), 1, "weir_restoring_tasks");

    // A word counted by 1_1 is counted while 1_0 restores.
    let w1 = (0..)
        .map(|i| format!("new{i}"))
        .find(|w| default_partitioner(w.as_bytes(), 2) == 1)
        .unwrap();
    let w0 = (0..)
        .map(|i| format!("new{i}"))
        .find(|w| default_partitioner(w.as_bytes(), 2) == 0)
        .unwrap();
    cluster.produce("words", 0, Some(b"k"), Some(w1.as_bytes()), 2000);
    cluster.produce("words", 0, Some(b"k"), Some(w0.as_bytes()), 2000);
    for _ in 0..3 {
        m.poll(100, 5000, true).unwrap();
    }
    assert_eq!(m.manager.lifecycle(count_task(0)), Some(Lifecycle::Restoring));
    let counts = latest(&cluster, "counts");
    assert_eq!(
        counts.get(&w1).map(String::as_str),
        Some("1"),
        "counted while 1_0 restores"
    );
    assert_eq!(counts.get(&w0), None, "1_0 does not count before its restore is done");

    m.run_until_idle(500, 5000).unwrap();
    assert_eq!(m.manager.lifecycle(count_task(0)), Some(Lifecycle::Running));
    assert_eq!(
        m.manager.config().metrics.restoring_tasks.get(),
        0,
        "weir_restoring_tasks"
    );
    let counts = latest(&cluster, "counts");
    assert_eq!(counts.get(&w0).map(String::as_str), Some("1"));
    // The restored store holds every word it had.
    let task = &m.manager.running()[&count_task(0)];
    let restored = task
        .state()
        .scan_kv("word-counts", std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
        .unwrap();
    let expected = (0..3000)
        .map(|i| format!("w{i}"))
        .chain([w0.clone()])
        .filter(|w| default_partitioner(w.as_bytes(), 2) == 0)
        .count();
    assert_eq!(restored.len(), expected);
}

/// The poll loop's commit rule ([`TaskManager::commit_due`]): a backlog
/// of at least `CAUGHT_UP_AFTER_RECORDS` commits as soon as every source
/// partition (the repartition topic's included) is read to its end; before
/// that, and for fewer records, only the interval, a request or an empty
/// poll commit.
#[test]
fn a_backlog_commits_once_every_source_is_read_to_its_end() {
    use std::time::Duration;
    use weir_runtime::manager::{Batch, CommitReason, CAUGHT_UP_AFTER_RECORDS};

    let cluster = MemoryCluster::new();
    cluster.create_topic("words", 2);
    cluster.create_topic("counts", 2);
    let backlog = CAUGHT_UP_AFTER_RECORDS as usize;
    for i in 0..backlog {
        let word = format!("w{}", i % 100);
        cluster.produce(
            "words",
            (i % 2) as i32,
            Some(b"k"),
            Some(word.as_bytes()),
            1000 + i as i64,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(StateDb::open(dir.path()).unwrap());
    let mut m = Member::new(&cluster, &word_count(), "wc", db, TaskConfig::default(), None).unwrap();
    m.assign_all().unwrap();
    let hour = Duration::from_secs(3600);

    // The words are read, their repartition records not yet: not caught up.
    while m.manager.uncommitted() < backlog as u64 {
        assert!(m.poll(1000, 5000, false).unwrap() > 0);
        assert_eq!(m.manager.commit_due(&m.transport, hour, Batch::Drained), None);
    }
    assert!(!m.manager.caught_up(&m.transport));
    // Reading the repartition topic too: caught up, with 2 × the backlog
    // uncommitted; a full batch (more at hand) still does not commit.
    while m.poll(1000, 5000, false).unwrap() > 0 {}
    assert!(m.manager.caught_up(&m.transport));
    assert_eq!(m.manager.uncommitted(), 2 * backlog as u64);
    assert_eq!(m.manager.commit_due(&m.transport, hour, Batch::Full), None);
    assert_eq!(
        m.manager.commit_due(&m.transport, hour, Batch::Drained),
        Some(CommitReason::CaughtUp)
    );
    m.manager.commit(&mut m.transport, false).unwrap();
    assert_eq!(latest(&cluster, "counts").get("w7").map(String::as_str), Some("100"));

    // A trickle catches up after every record, and is not committed for it;
    // an empty poll commits it.
    cluster.produce("words", 0, Some(b"k"), Some(b"w7"), 90_000);
    while m.poll(1000, 5000, false).unwrap() > 0 {}
    assert!(m.manager.caught_up(&m.transport));
    assert_eq!(m.manager.commit_due(&m.transport, hour, Batch::Drained), None);
    assert_eq!(
        m.manager.commit_due(&m.transport, hour, Batch::Empty),
        Some(CommitReason::Idle)
    );
    assert_eq!(
        m.manager.commit_due(&m.transport, Duration::ZERO, Batch::Drained),
        Some(CommitReason::Interval)
    );
}

/// Records an older weir wrote to a repartition topic (its origin in a
/// `weir.origin` header, the value as it is) are still read, and a replayed
/// one is still applied once.
#[test]
fn an_older_weirs_repartition_records_are_read_and_deduplicated() {
    use weir_runtime::manager::{encode_origin, ORIGIN_HEADER};
    use weir_runtime::task::Origin;

    let cluster = MemoryCluster::new();
    cluster.create_topic("words", 2);
    cluster.create_topic("counts", 2);
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(StateDb::open(dir.path()).unwrap());
    let mut m = Member::new(&cluster, &word_count(), "wc", db, TaskConfig::default(), None).unwrap();
    let repartition = "wc-word-counts-repartition";
    assert_eq!(cluster.partitions(repartition), Some(2), "created by the member");
    let old = |offset: i64| {
        encode_origin(&Origin {
            upstream_partition: 0,
            offset,
            index: 0,
        })
    };
    // Input offsets 5 and 6 of upstream partition 0; 5 replayed after a crash.
    for offset in [5, 6, 5] {
        let origin = old(offset);
        cluster.produce_with_headers(
            repartition,
            1,
            Some(b"a"),
            Some(b"a"),
            10,
            &[(ORIGIN_HEADER, &origin[..])],
        );
    }
    // And one without an origin (an older weir's commit-time record).
    cluster.produce(repartition, 1, Some(b"a"), Some(b"a"), 11);
    m.assign_all().unwrap();
    m.run_until_idle(10, 5000).unwrap();
    assert_eq!(latest(&cluster, "counts").get("a").map(String::as_str), Some("3"));
}
