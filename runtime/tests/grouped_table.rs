//! `KTable::group_by` and the aggregations of a grouped table (count,
//! reduce, aggregate) through the test driver: rows that move between
//! groups are subtracted from their old group and added to their new one,
//! deleted rows are subtracted (Kafka Streams' `KTableRepartitionMap`,
//! `KTableAggregate`, `KTableReduce`).

use weir_runtime::testing::{RawRecord, TestDriverConfig, TopologyTestDriver};
use weir_topology::prelude::*;

/// Decode the raw records of a topic with string keys.
fn records<V>(
    d: &TopologyTestDriver,
    topic: &str,
    from: usize,
    value: impl Fn(&[u8]) -> V,
) -> Vec<(String, Option<V>)> {
    d.topic_records(topic)[from..]
        .iter()
        .map(|r: &RawRecord| {
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                r.value.as_deref().map(&value),
            )
        })
        .collect()
}

fn u64_value(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap())
}

/// Users and their regions, counted per region: the classic Kafka
/// Streams example of a table re-grouped by a value.
fn region_counts() -> Topology {
    let mut b = StreamsBuilder::new();
    b.table::<String, String>(
        "user-regions",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("user-regions"),
    )
    .group_by(
        |user, region| (region.clone(), user.clone()),
        Serdes::string(),
        Serdes::string(),
    )
    .count(Materialized::named("region-counts"))
    .to("region-counts", Serdes::string(), Serdes::u64());
    b.build().unwrap()
}

#[test]
fn count_moves_rows_between_groups_and_keeps_zero_counts() {
    let t = region_counts();
    // The group-by repartitions: two sub-topologies.
    assert_eq!(t.subtopologies().len(), 2);
    let d = TopologyTestDriver::new(t, TestDriverConfig::with_application_id("app")).unwrap();
    let users = d.input_topic("user-regions", Serdes::string(), Serdes::string());
    let counts = d
        .key_value_store("region-counts", Serdes::string(), Serdes::u64())
        .unwrap();
    let mut read = 0;
    let mut step = |user: &str, region: Option<&str>, ts: i64, want: &[(&str, u64)], store: &[(&str, u64)]| {
        d.pipe_raw("user-regions", Some(user.as_bytes()), region.map(str::as_bytes), ts)
            .unwrap();
        let out = records(&d, "region-counts", read, u64_value);
        read += out.len();
        let want: Vec<_> = want.iter().map(|(r, n)| (r.to_string(), Some(*n))).collect();
        assert_eq!(out, want, "after {user} -> {region:?}");
        let store: Vec<_> = store.iter().map(|(r, n)| (r.to_string(), *n)).collect();
        assert_eq!(counts.all(), store, "after {user} -> {region:?}");
    };
    step("alice", Some("europe"), 1, &[("europe", 1)], &[("europe", 1)]);
    step("bob", Some("asia"), 2, &[("asia", 1)], &[("asia", 1), ("europe", 1)]);
    step(
        "carol",
        Some("europe"),
        3,
        &[("europe", 2)],
        &[("asia", 1), ("europe", 2)],
    );
    // alice moves: subtracted from europe first, then added to asia.
    step(
        "alice",
        Some("asia"),
        4,
        &[("europe", 1), ("asia", 2)],
        &[("asia", 2), ("europe", 1)],
    );
    // A deleted row leaves its group.
    step("bob", None, 5, &[("asia", 1)], &[("asia", 1), ("europe", 1)]);
    // An update within the same group: one subtract-and-add, one output.
    step(
        "carol",
        Some("europe"),
        6,
        &[("europe", 1)],
        &[("asia", 1), ("europe", 1)],
    );
    // The last row leaves europe: its count stays, as 0.
    step("carol", None, 7, &[("europe", 0)], &[("asia", 1), ("europe", 0)]);
    // Deleting a row that never existed changes nothing.
    step("dave", None, 8, &[], &[("asia", 1), ("europe", 0)]);
    // A re-added row counts again.
    step(
        "carol",
        Some("europe"),
        9,
        &[("europe", 1)],
        &[("asia", 1), ("europe", 1)],
    );
    users.pipe_input("erin".into(), "asia".into(), 10).unwrap();
    assert_eq!(counts.get(&"asia".to_string()), Some(2));

    // What crossed the repartition topic, keyed by region: a flags byte
    // (0x01 new value, 0x02 old value), then the value(s); with both, the
    // new value's length (4 bytes, big-endian) first.
    let wire: Vec<(String, Vec<u8>)> = d
        .topic_records("app-region-counts-repartition")
        .into_iter()
        .map(|r| (String::from_utf8(r.key.unwrap()).unwrap(), r.value.unwrap()))
        .collect();
    let w = |k: &str, v: &[u8]| (k.to_string(), v.to_vec());
    assert_eq!(
        wire,
        vec![
            w("europe", b"\x01alice"),
            w("asia", b"\x01bob"),
            w("europe", b"\x01carol"),
            w("europe", b"\x02alice"),
            w("asia", b"\x01alice"),
            w("asia", b"\x02bob"),
            w("europe", b"\x03\x00\x00\x00\x05carolcarol"),
            w("europe", b"\x02carol"),
            w("europe", b"\x01carol"),
            w("asia", b"\x01erin"),
        ]
    );
}

fn parse(v: &str) -> (String, i64) {
    let (region, balance) = v.split_once(':').unwrap();
    (region.to_string(), balance.parse().unwrap())
}

#[test]
fn reduce_sums_balances_per_region_with_adder_and_subtractor() {
    let mut b = StreamsBuilder::new();
    b.table::<String, String>("accounts", Serdes::string(), Serdes::string(), Materialized::unnamed())
        .group_by(|_, v| parse(v), Serdes::string(), Serdes::i64())
        .reduce(
            |sum, v| sum + v,
            |sum, v| Some(sum - v),
            Materialized::named("balances"),
        )
        .to("balances", Serdes::string(), Serdes::i64());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let accounts = d.input_topic("accounts", Serdes::string(), Serdes::string());
    let i64_value = |b: &[u8]| Serdes::i64().deserialize(b).unwrap();
    accounts.pipe_input("alice".into(), "europe:100".into(), 1).unwrap();
    accounts.pipe_input("bob".into(), "europe:50".into(), 2).unwrap();
    accounts.pipe_input("alice".into(), "asia:30".into(), 3).unwrap();
    accounts.pipe_input("bob".into(), "europe:70".into(), 4).unwrap();
    d.pipe_raw("accounts", Some(b"bob"), None, 5).unwrap();
    let s = |r: &str, n: i64| (r.to_string(), Some(n));
    assert_eq!(
        records(&d, "balances", 0, i64_value),
        vec![
            s("europe", 100),
            s("europe", 150),
            // alice moves 100 from europe to asia (as 30).
            s("europe", 50),
            s("asia", 30),
            // bob's balance changes within europe: 50 - 50 + 70.
            s("europe", 70),
            // bob is deleted: europe keeps its (now zero) sum.
            s("europe", 0),
        ]
    );
    let store = d.key_value_store("balances", Serdes::string(), Serdes::i64()).unwrap();
    assert_eq!(store.all(), vec![("asia".to_string(), 30), ("europe".to_string(), 0)]);
}

#[test]
fn aggregate_with_a_subtractor_that_deletes_empty_groups() {
    let mut b = StreamsBuilder::new();
    b.table::<String, String>(
        "user-regions",
        Serdes::string(),
        Serdes::string(),
        Materialized::unnamed(),
    )
    .group_by(
        |user, region| (region.clone(), user.clone()),
        Serdes::string(),
        Serdes::string(),
    )
    .aggregate(
        Vec::new,
        |_, user, mut users: Vec<String>| {
            users.push(user);
            users.sort();
            users
        },
        // An empty group is deleted: a tombstone, as a Kafka Streams
        // subtractor returning null.
        |_, user, mut users: Vec<String>| {
            users.retain(|u| *u != user);
            (!users.is_empty()).then_some(users)
        },
        Serdes::json::<Vec<String>>(),
        Materialized::named("users-per-region"),
    )
    .to("users-per-region", Serdes::string(), Serdes::json::<Vec<String>>());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let users = d.input_topic("user-regions", Serdes::string(), Serdes::string());
    users.pipe_input("alice".into(), "europe".into(), 1).unwrap();
    users.pipe_input("bob".into(), "europe".into(), 2).unwrap();
    users.pipe_input("alice".into(), "asia".into(), 3).unwrap();
    d.pipe_raw("user-regions", Some(b"bob"), None, 4).unwrap();
    users.pipe_input("bob".into(), "europe".into(), 5).unwrap();
    let list = |b: &[u8]| serde_json::from_slice::<Vec<String>>(b).unwrap();
    let l = |r: &str, us: &[&str]| {
        (
            r.to_string(),
            Some(us.iter().map(|u| u.to_string()).collect::<Vec<_>>()),
        )
    };
    assert_eq!(
        records(&d, "users-per-region", 0, list),
        vec![
            l("europe", &["alice"]),
            l("europe", &["alice", "bob"]),
            l("europe", &["bob"]),
            l("asia", &["alice"]),
            ("europe".to_string(), None),
            // A deleted group starts again from the initializer.
            l("europe", &["bob"]),
        ]
    );
    let store = d
        .key_value_store("users-per-region", Serdes::string(), Serdes::json::<Vec<String>>())
        .unwrap();
    assert_eq!(
        store.all(),
        vec![
            ("asia".to_string(), vec!["alice".to_string()]),
            ("europe".to_string(), vec!["bob".to_string()])
        ]
    );
}

#[test]
fn describe_shows_the_group_by_node_its_store_and_the_repartition_topic() {
    let text = region_counts().describe("app");
    for part in [
        "Processor: KTABLE-SELECT-0000000001 (stores: [region-counts-groupby-previous])",
        "Sink: KSTREAM-SINK-0000000002 (topic: app-region-counts-repartition)",
        "Source: KSTREAM-SOURCE-0000000003 (topics: [app-region-counts-repartition])",
        "Processor: KTABLE-AGGREGATE-0000000004 (stores: [region-counts])",
        "region-counts-groupby-previous (key-value; changelog app-region-counts-groupby-previous-changelog)",
    ] {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
}

#[test]
fn the_previous_group_of_a_row_survives_a_restart() {
    // The group-by node's store of what it last sent per row is state
    // like any other: after a restart, a row that moves is still
    // subtracted from the group it was in.
    let dir = tempfile::tempdir().unwrap();
    let config = || TestDriverConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..TestDriverConfig::with_application_id("app")
    };
    {
        let d = TopologyTestDriver::new(region_counts(), config()).unwrap();
        let users = d.input_topic("user-regions", Serdes::string(), Serdes::string());
        users.pipe_input("alice".into(), "europe".into(), 1).unwrap();
        users.pipe_input("bob".into(), "europe".into(), 2).unwrap();
        d.flush_state_to_disk().unwrap();
    }
    let d = TopologyTestDriver::new(region_counts(), config()).unwrap();
    d.input_topic("user-regions", Serdes::string(), Serdes::string())
        .pipe_input("alice".into(), "asia".into(), 3)
        .unwrap();
    d.pipe_raw("user-regions", Some(b"bob"), None, 4).unwrap();
    assert_eq!(
        records(&d, "region-counts", 0, u64_value),
        vec![
            ("europe".to_string(), Some(1)),
            ("asia".to_string(), Some(1)),
            ("europe".to_string(), Some(0))
        ]
    );
}
