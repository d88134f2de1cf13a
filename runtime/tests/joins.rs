//! Stream–table and stream–stream joins through the test driver.

use std::time::Duration;

use weir_runtime::testing::{TestDriverConfig, TopologyTestDriver};
use weir_topology::prelude::*;

fn kv(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

fn stream_table_topology() -> Topology {
    let mut b = StreamsBuilder::new();
    let users = b.table::<String, String>(
        "users",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("users"),
    );
    let clicks = b.stream::<String, String>("clicks", Serdes::string(), Serdes::string());
    clicks
        .clone()
        .join(&users, |_, click, name| format!("{click} by {name}"))
        .to("enriched", Serdes::string(), Serdes::string());
    clicks
        .left_join(&users, |_, click, name: Option<String>| {
            format!("{click} by {}", name.as_deref().unwrap_or("nobody"))
        })
        .to("enriched-left", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

#[test]
fn stream_table_inner_and_left_join_look_up_the_latest_value() {
    let t = stream_table_topology();
    // The joins read the table's store: one sub-topology, one task per
    // partition, so a key's click and user meet in the same task.
    assert_eq!(t.subtopologies().len(), 1);
    let d = TopologyTestDriver::new(t, TestDriverConfig::default()).unwrap();
    let users = d.input_topic("users", Serdes::string(), Serdes::string());
    let clicks = d.input_topic("clicks", Serdes::string(), Serdes::string());
    let inner = d.output_topic("enriched", Serdes::string(), Serdes::string());
    let left = d.output_topic("enriched-left", Serdes::string(), Serdes::string());

    clicks.pipe_input("a".into(), "c1".into(), 1).unwrap();
    assert!(inner.read_records().is_empty());
    assert_eq!(left.read_key_values(), vec![kv("a", "c1 by nobody")]);

    users.pipe_input("a".into(), "Alice".into(), 2).unwrap();
    // A table update alone produces no join output.
    assert!(inner.read_records().is_empty() && left.read_records().is_empty());
    clicks.pipe_input("a".into(), "c2".into(), 3).unwrap();
    users.pipe_input("a".into(), "Alicia".into(), 4).unwrap();
    clicks.pipe_input("a".into(), "c3".into(), 5).unwrap();
    clicks.pipe_input("b".into(), "c4".into(), 6).unwrap();
    let records = inner.read_records();
    assert_eq!(
        records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone(), r.timestamp))
            .collect::<Vec<_>>(),
        vec![
            ("a".to_string(), "c2 by Alice".to_string(), 3),
            ("a".to_string(), "c3 by Alicia".to_string(), 5)
        ]
    );
    assert_eq!(
        left.read_key_values(),
        vec![kv("a", "c2 by Alice"), kv("a", "c3 by Alicia"), kv("b", "c4 by nobody")]
    );

    // A record with no value deletes the user.
    d.pipe_raw("users", Some(b"a"), None, 7).unwrap();
    clicks.pipe_input("a".into(), "c5".into(), 8).unwrap();
    assert!(inner.read_records().is_empty());
    assert_eq!(left.read_key_values(), vec![kv("a", "c5 by nobody")]);
}

#[test]
fn a_rekeyed_stream_must_be_repartitioned_before_a_table_join() {
    let mut b = StreamsBuilder::new();
    let users = b.table::<String, String>(
        "users",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("users"),
    );
    b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
        .select_key(|_, v| v.clone())
        .join(&users, |_, c, u| format!("{c}/{u}"))
        .to("out", Serdes::string(), Serdes::string());
    let err = b.build().unwrap_err().to_string();
    assert!(
        err.contains("KSTREAM-JOIN-") && err.contains("join_with(..)") && err.contains("call repartition(..)"),
        "{err}"
    );

    // With the repartition, the join reads the internal topic, in the
    // table's sub-topology.
    let mut b = StreamsBuilder::new();
    let users = b.table::<String, String>(
        "users",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("users"),
    );
    b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
        .select_key(|_, v| v.clone())
        .repartition("clicks-by-user", Serdes::string(), Serdes::string())
        .join(&users, |_, c, u| format!("{c}/{u}"))
        .to("out", Serdes::string(), Serdes::string());
    let t = b.build().unwrap();
    assert_eq!(t.subtopologies().len(), 2);
    let d = TopologyTestDriver::new(t, TestDriverConfig::default()).unwrap();
    d.input_topic("users", Serdes::string(), Serdes::string())
        .pipe_input("u1".into(), "Ann".into(), 1)
        .unwrap();
    d.input_topic("clicks", Serdes::string(), Serdes::string())
        .pipe_input("x".into(), "u1".into(), 2)
        .unwrap();
    assert_eq!(
        d.output_topic("out", Serdes::string(), Serdes::string())
            .read_key_values(),
        vec![kv("u1", "u1/Ann")]
    );
}

// Joining a table without a key-value store (a `filter`ed or `map_values`
// table, or a windowed aggregation's window store) does not compile: see
// topology/tests/ui/stream_join_filtered_table.rs and
// stream_join_windowed_table.rs.

fn stream_stream_topology() -> Topology {
    let mut b = StreamsBuilder::new();
    let orders = b.stream::<String, String>("orders", Serdes::string(), Serdes::string());
    let payments = b.stream::<String, String>("payments", Serdes::string(), Serdes::string());
    // An order at t matches payments in [t - 2 s, t + 5 s]; records are kept
    // for 2 + 5 + 1 s (grace) behind stream time.
    let windows = JoinWindows::before_after(Duration::from_secs(2), Duration::from_secs(5))
        .unwrap()
        .grace(Duration::from_secs(1))
        .unwrap();
    orders
        .join_stream(
            payments,
            |_, o, p| format!("{o}+{p}"),
            windows,
            StreamJoined::with(Serdes::string(), Serdes::string(), Serdes::string()),
        )
        .to("matched", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

#[test]
fn stream_stream_join_matches_within_the_window_on_both_sides() {
    let t = stream_stream_topology();
    assert_eq!(t.subtopologies().len(), 1);
    assert!(
        t.describe("app").contains("KSTREAM-JOINTHIS-STORE-0000000002"),
        "{}",
        t.describe("app")
    );
    let d = TopologyTestDriver::new(t, TestDriverConfig::default()).unwrap();
    let orders = d.input_topic("orders", Serdes::string(), Serdes::string());
    let payments = d.input_topic("payments", Serdes::string(), Serdes::string());
    let out = d.output_topic("matched", Serdes::string(), Serdes::string());
    let read = || {
        out.read_records()
            .into_iter()
            .map(|r| (r.key, r.value, r.timestamp))
            .collect::<Vec<_>>()
    };
    let rec = |k: &str, v: &str, ts: i64| (k.to_string(), v.to_string(), ts);

    orders.pipe_input("k".into(), "o1".into(), 10_000).unwrap();
    assert!(read().is_empty());
    // Payment in [o1 - 2 s, o1 + 5 s]: joins, stamped with the later time.
    payments.pipe_input("k".into(), "p1".into(), 12_000).unwrap();
    assert_eq!(read(), vec![rec("k", "o1+p1", 12_000)]);
    // 16 s is past o1 + 5 s: no match.
    payments.pipe_input("k".into(), "p2".into(), 16_000).unwrap();
    assert!(read().is_empty());
    // An order at 14.5 s matches payments in [12.5 s, 19.5 s]: p2 only.
    orders.pipe_input("k".into(), "o2".into(), 14_500).unwrap();
    assert_eq!(read(), vec![rec("k", "o2+p2", 16_000)]);
    // Out of order but within retention (9 + 8 >= 16 s): joins p1.
    orders.pipe_input("k".into(), "o3".into(), 9_000).unwrap();
    assert_eq!(read(), vec![rec("k", "o3+p1", 12_000)]);
    // A payment at 8 s matches orders in [3 s, 10 s], oldest first.
    payments.pipe_input("k".into(), "p3".into(), 8_000).unwrap();
    assert_eq!(read(), vec![rec("k", "o3+p3", 9_000), rec("k", "o1+p3", 10_000)]);
    // Other keys never match.
    orders.pipe_input("other".into(), "o4".into(), 16_000).unwrap();
    assert!(read().is_empty());
    // Two orders of one key at one timestamp are both kept.
    orders.pipe_input("k".into(), "o5".into(), 16_000).unwrap();
    orders.pipe_input("k".into(), "o6".into(), 16_000).unwrap();
    assert_eq!(read(), vec![rec("k", "o5+p2", 16_000), rec("k", "o6+p2", 16_000)]);
    payments.pipe_input("k".into(), "p4".into(), 16_500).unwrap();
    assert_eq!(
        read(),
        vec![
            rec("k", "o2+p4", 16_500),
            rec("k", "o5+p4", 16_500),
            rec("k", "o6+p4", 16_500)
        ]
    );
    // A payment at 18 s matches orders in [13 s, 20 s] (the order's window
    // mirrored): o2 at 14.5 s is 3.5 s before it.
    payments.pipe_input("k".into(), "p5".into(), 18_000).unwrap();
    assert_eq!(
        read(),
        vec![
            rec("k", "o2+p5", 18_000),
            rec("k", "o5+p5", 18_000),
            rec("k", "o6+p5", 18_000)
        ]
    );
    assert_eq!(d.late_records_dropped(), 0);

    // 7 s + 8 s retention < stream time 18 s: late, dropped and counted,
    // although o3 (9 s) is within its window.
    payments.pipe_input("k".into(), "p6".into(), 7_000).unwrap();
    assert!(read().is_empty());
    assert_eq!(d.late_records_dropped(), 1);
    orders.pipe_input("k".into(), "o7".into(), 8_000).unwrap();
    assert!(read().is_empty());
    assert_eq!(d.late_records_dropped(), 2);
}

#[test]
fn a_record_just_in_time_still_finds_its_oldest_partners() {
    let d = TopologyTestDriver::new(stream_stream_topology(), TestDriverConfig::default()).unwrap();
    let orders = d.input_topic("orders", Serdes::string(), Serdes::string());
    let payments = d.input_topic("payments", Serdes::string(), Serdes::string());
    let out = d.output_topic("matched", Serdes::string(), Serdes::string());
    payments.pipe_input("k".into(), "p1".into(), 10_000).unwrap();
    // Stream time 20 s (and a purge of the stores).
    orders.pipe_input("z".into(), "o0".into(), 20_000).unwrap();
    // 12 s + 8 s is not behind 20 s: in time. Its window [10 s, 17 s] holds
    // p1, which is 10 s behind stream time but must not have been purged.
    orders.pipe_input("k".into(), "o1".into(), 12_000).unwrap();
    let records = out.read_records();
    assert_eq!(
        records
            .iter()
            .map(|r| (r.value.as_str(), r.timestamp))
            .collect::<Vec<_>>(),
        vec![("o1+p1", 12_000)]
    );
    assert_eq!(d.late_records_dropped(), 0);
    // The stores keep records 8 s + max(2 s, 5 s) = 13 s: p1 goes in the
    // first purge after stream time passes 23 s.
    orders.pipe_input("z".into(), "o2".into(), 30_000).unwrap();
    let purged = d
        .changelog("KSTREAM-JOINOTHER-STORE-0000000002")
        .into_iter()
        .filter(|r| r.value.is_none())
        .count();
    assert_eq!(purged, 1);
}

#[test]
fn stream_stream_join_repartitions_a_rekeyed_side_and_names_stores() {
    let mut b = StreamsBuilder::new();
    let orders = b.stream::<String, String>("orders", Serdes::string(), Serdes::string());
    let payments = b
        .stream::<String, String>("payments", Serdes::string(), Serdes::string())
        .map(|k, v| (v, k));
    orders
        .join_stream(
            payments,
            |_, o, p| format!("{o}{p}"),
            JoinWindows::of(Duration::from_secs(1)).unwrap(),
            StreamJoined::with(Serdes::string(), Serdes::string(), Serdes::string()),
        )
        .to("out", Serdes::string(), Serdes::string());
    // The re-keyed side is repartitioned automatically (the join has its
    // serdes) before the join: runtime/tests/auto_repartition.rs.
    let t = b.build().unwrap();
    assert!(
        t.describe("app")
            .contains("(topic: app-KSTREAM-JOIN-0000000003-right-repartition)"),
        "{}",
        t.describe("app")
    );

    let mut b = StreamsBuilder::new();
    let orders = b.stream::<String, String>("orders", Serdes::string(), Serdes::string());
    let payments = b.stream::<String, u64>("payments", Serdes::string(), Serdes::u64());
    orders
        .join_stream(
            payments,
            |_, o, p| format!("{o}{p}"),
            JoinWindows::of(Duration::from_secs(1)).unwrap(),
            StreamJoined::with(Serdes::string(), Serdes::string(), Serdes::u64()).with_store_name("op"),
        )
        .to("out", Serdes::string(), Serdes::string());
    let t = b.build().unwrap();
    let names: Vec<&str> = t.stores().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["op-this-join-store", "op-other-join-store"]);
    let d = TopologyTestDriver::new(t, TestDriverConfig::default()).unwrap();
    d.input_topic("payments", Serdes::string(), Serdes::u64())
        .pipe_input("k".into(), 7, 5)
        .unwrap();
    d.input_topic("orders", Serdes::string(), Serdes::string())
        .pipe_input("k".into(), "o".into(), 6)
        .unwrap();
    assert_eq!(
        d.output_topic("out", Serdes::string(), Serdes::string())
            .read_key_values(),
        vec![kv("k", "o7")]
    );
    // Both sides' records were written to their stores' changelogs.
    assert_eq!(d.changelog("op-this-join-store").len(), 1);
    assert_eq!(d.changelog("op-other-join-store").len(), 1);
}

#[test]
fn outer_join_closes_each_sides_window_by_its_own_reach() {
    // A left record at t matches right records up to t + after; a right
    // record at t left records up to t + before. Each leaves unjoined only
    // when stream time passes that + grace.
    let mut b = StreamsBuilder::new();
    let orders = b.stream::<String, String>("orders", Serdes::string(), Serdes::string());
    let payments = b.stream::<String, String>("payments", Serdes::string(), Serdes::string());
    let windows = JoinWindows::before_after(Duration::from_secs(2), Duration::from_secs(5))
        .unwrap()
        .grace(Duration::from_secs(1))
        .unwrap();
    orders
        .outer_join_stream(
            payments,
            |_, o, p| {
                format!(
                    "{}+{}",
                    o.map_or("none", |s| s.as_str()),
                    p.map_or("none", |s| s.as_str())
                )
            },
            windows,
            StreamJoined::with(Serdes::string(), Serdes::string(), Serdes::string()),
        )
        .to("out", Serdes::string(), Serdes::string());
    let t = b.build().unwrap();
    let described = t.describe("app");
    assert!(
        described.contains("KSTREAM-OUTERTHIS-") && described.contains("KSTREAM-OUTERSHARED-STORE-"),
        "{described}"
    );
    let d = TopologyTestDriver::new(t, TestDriverConfig::default()).unwrap();
    let orders = d.input_topic("orders", Serdes::string(), Serdes::string());
    let payments = d.input_topic("payments", Serdes::string(), Serdes::string());
    let out = d.output_topic("out", Serdes::string(), Serdes::string());
    let read = || {
        out.read_records()
            .into_iter()
            .map(|r| (r.value, r.timestamp))
            .collect::<Vec<_>>()
    };
    let rec = |v: &str, ts: i64| (v.to_string(), ts);

    orders.pipe_input("k".into(), "o1".into(), 10_000).unwrap();
    assert!(read().is_empty());
    // o1's window closed at 10 + 5 + 1 s: it leaves (first) with its own
    // timestamp. p1 matches orders in [15 s, 22 s]: none.
    payments.pipe_input("k".into(), "p1".into(), 20_000).unwrap();
    assert_eq!(read(), vec![rec("o1+none", 10_000)]);
    // p1's window closes at 20 + 2 + 1 s: still open at 23 s.
    orders.pipe_input("k".into(), "o2".into(), 23_000).unwrap();
    assert!(read().is_empty());
    orders.pipe_input("k".into(), "o3".into(), 23_001).unwrap();
    assert_eq!(read(), vec![rec("none+p1", 20_000)]);
    // Out of order: p2 joins o2 and o3, which then never leave unjoined.
    payments.pipe_input("k".into(), "p2".into(), 24_000).unwrap();
    assert_eq!(read(), vec![rec("o2+p2", 24_000), rec("o3+p2", 24_000)]);
    orders.pipe_input("k".into(), "o4".into(), 40_000).unwrap();
    assert!(read().is_empty());
    // A partnerless record whose window has already closed (33 + 2 + 1 <
    // 40 s) but that is not late (33 + 8 >= 40 s) leaves at once.
    payments.pipe_input("k".into(), "p3".into(), 33_000).unwrap();
    assert_eq!(read(), vec![rec("none+p3", 33_000)]);
    assert_eq!(d.late_records_dropped(), 0);
    assert_eq!(d.null_records_skipped(), 0);
}

#[test]
fn a_stream_table_join_skips_the_null_values_its_source_let_through() {
    // Null values pass filter, peek, select_key, merge, branches and
    // repartition unchanged, so the join still knows them for nulls.
    let mut b = StreamsBuilder::new();
    let users = b.table::<String, String>(
        "users",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("users"),
    );
    let clicks = b.stream::<String, Option<String>>("clicks", Serdes::string(), Serdes::optional(Serdes::string()));
    let more = b.stream::<String, Option<String>>("more-clicks", Serdes::string(), Serdes::optional(Serdes::string()));
    let branches = clicks
        .merge(more)
        .filter(|_, _| true)
        .peek(|_, _| {})
        .select_key(|k, _| k.clone())
        .repartition("by-user", Serdes::string(), Serdes::optional(Serdes::string()))
        .split()
        .default_branch("all");
    branches["all"]
        .clone()
        .left_join(&users, |_, c: Option<String>, u: Option<String>| {
            format!("{}/{}", c.unwrap_or_else(|| "NULL".into()), u.unwrap_or_default())
        })
        .to("out", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    d.input_topic("users", Serdes::string(), Serdes::string())
        .pipe_input("u".into(), "Ann".into(), 1)
        .unwrap();
    let clicks = d.input_topic("clicks", Serdes::string(), Serdes::optional(Serdes::string()));
    let more = d.input_topic("more-clicks", Serdes::string(), Serdes::optional(Serdes::string()));
    clicks.pipe_input("u".into(), None, 2).unwrap();
    more.pipe_input("u".into(), None, 3).unwrap();
    clicks.pipe_input("u".into(), Some("c1".into()), 4).unwrap();
    // The null went through the repartition topic as a Kafka null.
    let internal = d
        .topic_records("test-by-user-repartition")
        .into_iter()
        .map(|r| r.value)
        .collect::<Vec<_>>();
    assert_eq!(internal, vec![None, None, Some(b"c1".to_vec())]);
    assert_eq!(
        d.output_topic("out", Serdes::string(), Serdes::string())
            .read_key_values(),
        vec![kv("u", "c1/Ann")]
    );
    assert_eq!(d.null_records_skipped(), 2);
    assert!(d.dead_letters().is_empty());
}
