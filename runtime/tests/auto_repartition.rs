//! Joins of a re-keyed stream repartition it automatically (as Kafka
//! Streams does), through an internal topic named after the join: exact
//! outputs through the repartition topic for stream–table and
//! stream–stream (inner, left, outer) joins, `describe()`, and the
//! partition counts the plan gives the repartition topics on a cluster
//! with several partitions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weir_runtime::memory::{Member, MemoryCluster};
use weir_runtime::partitioner::default_partitioner;
use weir_runtime::testing::{TestDriverConfig, TopologyTestDriver};
use weir_runtime::{Plan, TaskConfig};
use weir_state::StateDb;
use weir_topology::prelude::*;

fn kvt(k: &str, v: &str, ts: i64) -> (String, String, i64) {
    (k.to_string(), v.to_string(), ts)
}

/// `clicks` (click id → user id) re-keyed by user and joined with the
/// `users` table (user id → name), inner into `enriched` and left into
/// `enriched-left`.
fn clicks_by_user(named: bool) -> Topology {
    let mut b = StreamsBuilder::new();
    let users = b.table::<String, String>(
        "users",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("users"),
    );
    let by_user = b
        .stream::<String, String>("clicks", Serdes::string(), Serdes::string())
        .select_key(|_, user| user.clone());
    let joined = |name: &str| {
        let j = Joined::with(Serdes::string(), Serdes::string(), Serdes::string());
        if named {
            j.with_name(name)
        } else {
            j
        }
    };
    by_user
        .clone()
        .join_with(
            &users,
            |_, user, name| format!("{user} is {name}"),
            joined("clicks-inner"),
        )
        .to("enriched", Serdes::string(), Serdes::string());
    by_user
        .left_join_with(
            &users,
            |_, user, name: Option<String>| format!("{user} is {}", name.as_deref().unwrap_or("unknown")),
            joined("clicks-left"),
        )
        .to("enriched-left", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

#[test]
fn a_rekeyed_stream_is_repartitioned_before_a_table_join() {
    let t = clicks_by_user(true);
    let described = t.describe("app");
    // Each join reads its own repartition topic, in the table's
    // sub-topology; the re-keying runs in a sub-topology of its own.
    for topic in ["app-clicks-inner-repartition", "app-clicks-left-repartition"] {
        assert!(described.contains(&format!("(topic: {topic})")), "{described}");
        assert!(described.contains(&format!("(topics: [{topic}])")), "{described}");
    }
    assert_eq!(t.subtopologies().len(), 2, "{described}");
    assert_eq!(
        t.internal_topics("app")[..2],
        [
            "app-clicks-inner-repartition".to_string(),
            "app-clicks-left-repartition".to_string()
        ]
    );

    let d = TopologyTestDriver::new(t, TestDriverConfig::with_application_id("app")).unwrap();
    let users = d.input_topic("users", Serdes::string(), Serdes::string());
    let clicks = d.input_topic("clicks", Serdes::string(), Serdes::string());
    let inner = d.output_topic("enriched", Serdes::string(), Serdes::string());
    let left = d.output_topic("enriched-left", Serdes::string(), Serdes::string());
    let read = |o: &weir_runtime::testing::TestOutputTopic<String, String>| {
        o.read_records()
            .into_iter()
            .map(|r| (r.key, r.value, r.timestamp))
            .collect::<Vec<_>>()
    };

    users.pipe_input("u1".into(), "Ann".into(), 1).unwrap();
    users.pipe_input("u2".into(), "Bob".into(), 2).unwrap();
    clicks.pipe_input("c1".into(), "u1".into(), 10).unwrap();
    clicks.pipe_input("c2".into(), "u2".into(), 11).unwrap();
    clicks.pipe_input("c3".into(), "u3".into(), 12).unwrap();
    users.pipe_input("u1".into(), "Anna".into(), 13).unwrap();
    clicks.pipe_input("c4".into(), "u1".into(), 14).unwrap();

    assert_eq!(
        read(&inner),
        vec![
            kvt("u1", "u1 is Ann", 10),
            kvt("u2", "u2 is Bob", 11),
            kvt("u1", "u1 is Anna", 14)
        ]
    );
    assert_eq!(
        read(&left),
        vec![
            kvt("u1", "u1 is Ann", 10),
            kvt("u2", "u2 is Bob", 11),
            kvt("u3", "u3 is unknown", 12),
            kvt("u1", "u1 is Anna", 14)
        ]
    );
    // The repartition topics carried every click, keyed by user, with its
    // timestamp.
    for topic in ["app-clicks-inner-repartition", "app-clicks-left-repartition"] {
        let records: Vec<(Vec<u8>, Vec<u8>, i64)> = d
            .topic_records(topic)
            .into_iter()
            .map(|r| (r.key.unwrap(), r.value.unwrap(), r.timestamp))
            .collect();
        assert_eq!(
            records,
            vec![
                (b"u1".to_vec(), b"u1".to_vec(), 10),
                (b"u2".to_vec(), b"u2".to_vec(), 11),
                (b"u3".to_vec(), b"u3".to_vec(), 12),
                (b"u1".to_vec(), b"u1".to_vec(), 14)
            ],
            "{topic}"
        );
    }
}

#[test]
fn an_unnamed_join_names_its_repartition_topic_after_its_position() {
    let t = clicks_by_user(false);
    let described = t.describe("app");
    // users: the table's source (0); clicks: source (1); select_key (2);
    // then the inner join at 3 and, after its repartition sink and source,
    // join node and sink (3..=6), the left join at 7.
    assert!(
        described.contains("(topic: app-KSTREAM-JOIN-0000000003-repartition)"),
        "{described}"
    );
    assert!(
        described.contains("(topic: app-KSTREAM-LEFTJOIN-0000000007-repartition)"),
        "{described}"
    );
    // The same program gives the same names.
    assert_eq!(clicks_by_user(false).describe("app"), described);
}

#[test]
fn a_join_without_serdes_on_a_rekeyed_stream_points_to_join_with() {
    let mut b = StreamsBuilder::new();
    let users = b.table::<String, String>(
        "users",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("users"),
    );
    b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
        .select_key(|_, v| v.clone())
        .left_join(&users, |_, c, u: Option<String>| format!("{c}/{u:?}"))
        .to("out", Serdes::string(), Serdes::string());
    let err = b.build().unwrap_err().to_string();
    assert!(
        err.contains("KSTREAM-LEFTJOIN-") && err.contains("join_with(..) / left_join_with(..)"),
        "{err}"
    );

    // join_with on a stream that was not re-keyed adds no repartition.
    let mut b = StreamsBuilder::new();
    let users = b.table::<String, String>(
        "users",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("users"),
    );
    b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
        .join_with(
            &users,
            |_, c, u| format!("{c}/{u}"),
            Joined::with(Serdes::string(), Serdes::string(), Serdes::string()),
        )
        .to("out", Serdes::string(), Serdes::string());
    let t = b.build().unwrap();
    assert_eq!(t.subtopologies().len(), 1);
    assert!(!t.describe("app").contains("repartition"));
}

/// orders (order id → "user:item") re-keyed by user, joined within 10 s with
/// payments keyed by user (not re-keyed), inner.
#[test]
fn a_rekeyed_side_of_a_stream_join_is_repartitioned() {
    let mut b = StreamsBuilder::new();
    let orders = b
        .stream::<String, String>("orders", Serdes::string(), Serdes::string())
        .map(|_, v| {
            let (user, item) = v.split_once(':').unwrap();
            (user.to_string(), item.to_string())
        });
    let payments = b.stream::<String, u64>("payments", Serdes::string(), Serdes::u64());
    orders
        .join_stream(
            payments,
            |_, item, amount| format!("{item} paid {amount}"),
            JoinWindows::of(Duration::from_secs(10)).unwrap(),
            StreamJoined::with(Serdes::string(), Serdes::string(), Serdes::u64()).with_store_name("op"),
        )
        .to("paid", Serdes::string(), Serdes::string());
    let t = b.build().unwrap();
    let described = t.describe("app");
    assert!(described.contains("(topic: app-op-left-repartition)"), "{described}");
    assert!(described.contains("(topics: [app-op-left-repartition])"), "{described}");
    // The side that kept its key is read directly.
    assert!(!described.contains("op-right-repartition"), "{described}");

    let d = TopologyTestDriver::new(t, TestDriverConfig::with_application_id("app")).unwrap();
    let orders = d.input_topic("orders", Serdes::string(), Serdes::string());
    let payments = d.input_topic("payments", Serdes::string(), Serdes::u64());
    let paid = d.output_topic("paid", Serdes::string(), Serdes::string());

    orders.pipe_input("o1".into(), "ann:book".into(), 1_000).unwrap();
    orders.pipe_input("o2".into(), "bob:pen".into(), 2_000).unwrap();
    payments.pipe_input("ann".into(), 12, 5_000).unwrap();
    // Too late for bob's order (more than 10 s after it).
    payments.pipe_input("bob".into(), 3, 12_001).unwrap();
    orders.pipe_input("o3".into(), "bob:ink".into(), 13_000).unwrap();
    let got: Vec<(String, String, i64)> = paid
        .read_records()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect();
    assert_eq!(
        got,
        vec![kvt("ann", "book paid 12", 5_000), kvt("bob", "ink paid 3", 13_000)]
    );
    assert_eq!(d.topic_records("app-op-left-repartition").len(), 3);
}

/// Both sides re-keyed, left and outer joins: the unjoined records leave
/// when their window closes, after going through the repartition topics.
#[test]
fn left_and_outer_stream_joins_of_rekeyed_sides_emit_exactly() {
    let mut b = StreamsBuilder::new();
    // Values "key:payload"; both sides re-keyed by the part before ':'.
    let rekey = |_: &String, v: &String| v.split_once(':').unwrap().0.to_string();
    let left = b
        .stream::<String, String>("left", Serdes::string(), Serdes::string())
        .select_key(rekey);
    let right = b
        .stream::<String, String>("right", Serdes::string(), Serdes::string())
        .select_key(rekey);
    let windows = JoinWindows::of(Duration::from_secs(5))
        .unwrap()
        .grace(Duration::from_secs(1))
        .unwrap();
    let show = |o: Option<&String>| o.map_or("none".to_string(), |s| s.clone());
    left.clone()
        .left_join_stream(
            right.clone(),
            move |_, l, r| format!("{l}+{}", show(r)),
            windows,
            StreamJoined::with(Serdes::string(), Serdes::string(), Serdes::string()).with_store_name("lj"),
        )
        .to("left-out", Serdes::string(), Serdes::string());
    left.outer_join_stream(
        right,
        move |_, l, r| format!("{}+{}", show(l), show(r)),
        windows,
        StreamJoined::with(Serdes::string(), Serdes::string(), Serdes::string()),
    )
    .to("outer-out", Serdes::string(), Serdes::string());
    let t = b.build().unwrap();
    let described = t.describe("app");
    for topic in [
        "app-lj-left-repartition",
        "app-lj-right-repartition",
        // Unnamed: after the left join's 4 repartition nodes and 3 join
        // nodes and its sink (sources 0, 1; select_key 2, 3; 4..=11), the
        // outer join starts at 12.
        "app-KSTREAM-JOIN-0000000012-left-repartition",
        "app-KSTREAM-JOIN-0000000012-right-repartition",
    ] {
        assert!(described.contains(&format!("(topic: {topic})")), "{topic}: {described}");
    }

    let d = TopologyTestDriver::new(t, TestDriverConfig::with_application_id("app")).unwrap();
    let l = d.input_topic("left", Serdes::string(), Serdes::string());
    let r = d.input_topic("right", Serdes::string(), Serdes::string());
    let left_out = d.output_topic("left-out", Serdes::string(), Serdes::string());
    let outer_out = d.output_topic("outer-out", Serdes::string(), Serdes::string());
    let read = |o: &weir_runtime::testing::TestOutputTopic<String, String>| {
        o.read_records()
            .into_iter()
            .map(|r| (r.key, r.value, r.timestamp))
            .collect::<Vec<_>>()
    };

    l.pipe_input("x1".into(), "a:a1".into(), 10_000).unwrap();
    r.pipe_input("y1".into(), "a:ra".into(), 12_000).unwrap();
    r.pipe_input("y2".into(), "b:rb".into(), 13_000).unwrap();
    l.pipe_input("x2".into(), "c:c1".into(), 14_000).unwrap();
    assert_eq!(read(&left_out), vec![kvt("a", "a:a1+a:ra", 12_000)]);
    assert_eq!(read(&outer_out), vec![kvt("a", "a:a1+a:ra", 12_000)]);
    // Stream time 20.001 s passes 14 + 5 + 1 s: c1 leaves unjoined, and rb
    // (13 + 5 + 1 s) before it on the outer join.
    l.pipe_input("x3".into(), "d:d1".into(), 20_001).unwrap();
    assert_eq!(read(&left_out), vec![kvt("c", "c:c1+none", 14_000)]);
    assert_eq!(
        read(&outer_out),
        vec![kvt("b", "none+b:rb", 13_000), kvt("c", "c:c1+none", 14_000)]
    );
    for topic in [
        "app-lj-left-repartition",
        "app-KSTREAM-JOIN-0000000012-left-repartition",
    ] {
        assert_eq!(d.topic_records(topic).len(), 3, "{topic}");
    }
    for topic in [
        "app-lj-right-repartition",
        "app-KSTREAM-JOIN-0000000012-right-repartition",
    ] {
        assert_eq!(d.topic_records(topic).len(), 2, "{topic}");
    }
}

/// The latest value per key of a topic, over its partitions.
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

/// On a cluster with several partitions: the stream's topic has 3, the
/// table's 2. The repartition topic takes the table's count (the external
/// topic its reader also reads), so every click meets its user's partition.
#[test]
fn the_repartition_topic_is_co_partitioned_with_the_table() {
    let cluster = MemoryCluster::new();
    cluster.create_topic("users", 2);
    cluster.create_topic("clicks", 3);
    cluster.create_topic("enriched", 2);
    cluster.create_topic("enriched-left", 2);
    let users: Vec<(String, String)> = (0..20).map(|i| (format!("u{i}"), format!("name{i}"))).collect();
    for (i, (u, n)) in users.iter().enumerate() {
        let p = default_partitioner(u.as_bytes(), 2);
        cluster.produce("users", p, Some(u.as_bytes()), Some(n.as_bytes()), i as i64);
    }
    for i in 0..40 {
        let user = format!("u{}", i % 20);
        cluster.produce(
            "clicks",
            i % 3,
            Some(format!("c{i}").as_bytes()),
            Some(user.as_bytes()),
            100 + i as i64,
        );
    }
    let topology = clicks_by_user(true);
    let plan = Plan::new(&topology, "app", &|t| cluster.partitions(t)).unwrap();
    let counts: BTreeMap<&str, i32> = plan
        .topic_names
        .iter()
        .map(String::as_str)
        .zip(plan.topic_partitions.iter().copied())
        .collect();
    assert_eq!(counts["app-clicks-inner-repartition"], 2);
    assert_eq!(counts["app-clicks-left-repartition"], 2);
    assert_eq!(plan.sub_partitions, vec![2, 3]);

    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(StateDb::open(dir.path()).unwrap());
    let mut m = Member::new(&cluster, &topology, "app", db, TaskConfig::default(), None).unwrap();
    m.assign_all().unwrap();
    // The member reads topics in index order, up to 10 records a poll:
    // every user is in the table before the first click is read.
    m.run_until_idle(10, 1_000).unwrap();
    let joined = cluster.all_records("enriched");
    let left = cluster.all_records("enriched-left");
    assert_eq!(left.len(), 40);
    // Every inner-join output names the right user, and it is in the
    // partition of its key.
    for p in 0..2 {
        for r in cluster.records("enriched", p) {
            let key = r.key.unwrap();
            assert_eq!(default_partitioner(&key, 2), p);
            let user = String::from_utf8(key).unwrap();
            let n = &user[1..];
            assert_eq!(
                String::from_utf8(r.value.unwrap()).unwrap(),
                format!("{user} is name{n}")
            );
        }
    }
    let want: BTreeMap<String, String> = users.iter().map(|(u, n)| (u.clone(), format!("{u} is {n}"))).collect();
    assert_eq!(latest(&cluster, "enriched-left"), want);
    assert_eq!(joined.len(), 40);
}

/// A table join of external topics with different partition counts cannot
/// be right: the plan refuses it.
#[test]
fn a_join_of_topics_that_are_not_co_partitioned_is_refused() {
    let mut b = StreamsBuilder::new();
    let users = b.table::<String, String>(
        "users",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("users"),
    );
    b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
        .join(&users, |_, c, u| format!("{c}/{u}"))
        .to("out", Serdes::string(), Serdes::string());
    let t = b.build().unwrap();
    let counts = |name: &str| match name {
        "clicks" => Some(3),
        _ => Some(2),
    };
    let err = Plan::new(&t, "app", &counts).unwrap_err().to_string();
    assert!(
        err.contains("not co-partitioned") && err.contains("users (2)") && err.contains("clicks (3)"),
        "{err}"
    );
    // A merge of such topics (stateless) is fine.
    let mut b = StreamsBuilder::new();
    let a = b.stream::<String, String>("clicks", Serdes::string(), Serdes::string());
    let c = b.stream::<String, String>("users", Serdes::string(), Serdes::string());
    a.merge(c).to("out", Serdes::string(), Serdes::string());
    let plan = Plan::new(&b.build().unwrap(), "app", &counts).unwrap();
    assert_eq!(plan.sub_partitions, vec![3]);
}

/// Both sides of a stream–stream join re-keyed, from topics of 4 and 2
/// partitions: both repartition topics get the larger count, so the join's
/// tasks read the same partition of each.
#[test]
fn the_repartition_topics_of_a_stream_join_get_one_count() {
    let mut b = StreamsBuilder::new();
    let left = b
        .stream::<String, String>("left", Serdes::string(), Serdes::string())
        .select_key(|_, v| v.clone());
    let right = b
        .stream::<String, String>("right", Serdes::string(), Serdes::string())
        .select_key(|_, v| v.clone());
    left.join_stream(
        right,
        |_, l, r| format!("{l}{r}"),
        JoinWindows::of(Duration::from_secs(1)).unwrap(),
        StreamJoined::with(Serdes::string(), Serdes::string(), Serdes::string()).with_store_name("j"),
    )
    .to("out", Serdes::string(), Serdes::string());
    let t = b.build().unwrap();
    let plan = Plan::new(&t, "app", &|name| match name {
        "left" => Some(4),
        "right" => Some(2),
        "out" => Some(3),
        _ => None,
    })
    .unwrap();
    let count = |name: &str| plan.topic_partitions[plan.by_name[name] as usize];
    assert_eq!(count("app-j-left-repartition"), 4);
    assert_eq!(count("app-j-right-repartition"), 4);
    // An existing repartition topic keeps its count.
    let plan = Plan::new(&t, "app", &|name| match name {
        "left" => Some(4),
        "right" => Some(2),
        "app-j-right-repartition" => Some(6),
        "out" => Some(3),
        _ => None,
    })
    .unwrap();
    let count = |name: &str| plan.topic_partitions[plan.by_name[name] as usize];
    assert_eq!(count("app-j-left-repartition"), 6);
    assert_eq!(count("app-j-right-repartition"), 6);
}

/// A repartition topic that exists with another count than the table it is
/// joined with (made by an older version of the program) is refused too:
/// it is not re-created behind the user's back.
#[test]
fn an_existing_repartition_topic_of_another_count_is_refused() {
    let t = clicks_by_user(true);
    let err = Plan::new(&t, "app", &|name| match name {
        "app-clicks-inner-repartition" => Some(3),
        n if n.starts_with("app-") => None,
        _ => Some(2),
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("not co-partitioned")
            && err.contains("app-clicks-inner-repartition (3)")
            && err.contains("users (2)"),
        "{err}"
    );
}
