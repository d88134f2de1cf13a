//! Table–table joins (inner, left, outer) through the test driver.
//!
//! The input sequence and the expected outputs are Kafka Streams':
//! apache/kafka `AbstractJoinIntegrationTest.input` and the expected
//! results of `TableTableJoinIntegrationTest.testInner/testLeft/testOuter`
//! with caching disabled (the test driver commits after every record, as
//! Kafka Streams does with caching disabled), unversioned stores. Every
//! record has the same key; a `None` value is a tombstone (a record with
//! no value) and so is a `TOMBSTONE` output.
//!
//! Timestamps: Kafka Streams stamps a joined row with the larger of the
//! two rows' timestamps; weir's tables forward their changes at commit
//! stamped with the task's stream time (its stores keep no per-row
//! timestamp). The two agree while inputs arrive in timestamp order; this
//! sequence has out-of-order records (steps 14–17 and 20–23), where weir's
//! outputs carry the stream time, checked below.

use weir_runtime::testing::{RawRecord, TestDriverConfig, TopologyTestDriver};
use weir_topology::prelude::*;
use weir_topology::TableJoined;

#[path = "common/join_input.rs"]
mod join_input;
use join_input::Side::{Left, Right};
use join_input::INPUT;

/// What one input produces: nothing, a joined value, or a tombstone.
type Out = Option<Option<&'static str>>;
const NOTHING: Out = None;
const TOMBSTONE: Out = Some(None);
const fn v(s: &'static str) -> Out {
    Some(Some(s))
}

/// `TableTableJoinIntegrationTest.testInner`, caching disabled.
const INNER: [Out; 23] = [
    NOTHING,
    NOTHING,
    NOTHING,
    v("A-a"),
    v("B-a"),
    v("B-b"),
    TOMBSTONE,
    NOTHING,
    NOTHING,
    v("C-c"),
    TOMBSTONE,
    NOTHING,
    NOTHING,
    NOTHING,
    v("D-d"),
    TOMBSTONE,
    NOTHING,
    NOTHING,
    v("E-e"),
    TOMBSTONE,
    NOTHING,
    NOTHING,
    v("F-f"),
];

/// `TableTableJoinIntegrationTest.testLeft`, caching disabled.
const LEFT: [Out; 23] = [
    NOTHING,
    NOTHING,
    v("A-null"),
    v("A-a"),
    v("B-a"),
    v("B-b"),
    TOMBSTONE,
    NOTHING,
    v("C-null"),
    v("C-c"),
    v("C-null"),
    TOMBSTONE,
    NOTHING,
    NOTHING,
    v("D-d"),
    TOMBSTONE,
    NOTHING,
    NOTHING,
    v("E-e"),
    TOMBSTONE,
    NOTHING,
    v("F-null"),
    v("F-f"),
];

/// `TableTableJoinIntegrationTest.testOuter`, caching disabled.
const OUTER: [Out; 23] = [
    NOTHING,
    NOTHING,
    v("A-null"),
    v("A-a"),
    v("B-a"),
    v("B-b"),
    v("null-b"),
    TOMBSTONE,
    v("C-null"),
    v("C-c"),
    v("C-null"),
    TOMBSTONE,
    NOTHING,
    v("null-d"),
    v("D-d"),
    v("null-d"),
    TOMBSTONE,
    v("null-e"),
    v("E-e"),
    v("null-e"),
    TOMBSTONE,
    v("F-null"),
    v("F-f"),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Inner,
    Left,
    Outer,
}

fn show(v: Option<&String>) -> &str {
    v.map_or("null", String::as_str)
}

/// Two tables of topics "left" and "right" (stores "left" and "right"),
/// joined as `kind`, written to "out" with deletions as tombstones; the
/// result materialized in "joined" if asked.
fn join_topology(kind: Kind, materialized: bool) -> Topology {
    let mut b = StreamsBuilder::new();
    let left = b.table::<u64, String>("left", Serdes::u64(), Serdes::string(), Materialized::named("left"));
    let right = b.table::<u64, String>("right", Serdes::u64(), Serdes::string(), Materialized::named("right"));
    let joined = if materialized {
        TableJoined::materialized(Materialized::named("joined"), Serdes::string()).into_derived()
    } else {
        TableJoined::unmaterialized()
    };
    let result = match kind {
        Kind::Inner => left.join(&right, |l, r| format!("{l}-{r}"), joined),
        Kind::Left => left.left_join(&right, |l, r| format!("{l}-{}", show(r)), joined),
        Kind::Outer => left.outer_join(&right, |l, r| format!("{}-{}", show(l), show(r)), joined),
    };
    assert_eq!(result.store_name(), materialized.then_some("joined"));
    result.to("out", Serdes::u64(), Serdes::string());
    b.build().unwrap()
}

fn decode(r: &RawRecord) -> (u64, Option<String>, i64) {
    let key = u64::from_be_bytes(r.key.as_deref().unwrap().try_into().unwrap());
    let value = r.value.as_ref().map(|v| String::from_utf8(v.clone()).unwrap());
    (key, value, r.timestamp)
}

/// Pipe `INPUT` one record at a time and check the exact output of each,
/// value or tombstone, stamped with the stream time.
fn run(kind: Kind, materialized: bool, expected: &[Out; 23]) -> TopologyTestDriver {
    let t = join_topology(kind, materialized);
    // Both tables and the join in one sub-topology (co-partitioned).
    assert_eq!(t.subtopologies().len(), 1);
    let d = TopologyTestDriver::new(t, TestDriverConfig::default()).unwrap();
    let key = 0u64.to_be_bytes();
    let (mut read, mut stream_time) = (0, i64::MIN);
    for (step, ((side, value, ts), want)) in INPUT.iter().zip(expected).enumerate() {
        let topic = match side {
            Left => "left",
            Right => "right",
        };
        d.pipe_raw(topic, Some(&key), value.map(str::as_bytes), *ts).unwrap();
        stream_time = stream_time.max(*ts);
        let out: Vec<_> = d.topic_records("out")[read..].iter().map(decode).collect();
        read += out.len();
        let want: Vec<_> = want
            .iter()
            .map(|v| (0u64, v.map(str::to_string), stream_time))
            .collect();
        assert_eq!(
            out,
            want,
            "{kind:?} join (materialized: {materialized}), step {}",
            step + 1
        );
    }
    d
}

#[test]
fn inner_join_matches_kafka_streams() {
    run(Kind::Inner, false, &INNER);
    let d = run(Kind::Inner, true, &INNER);
    let store = d.key_value_store("joined", Serdes::u64(), Serdes::string()).unwrap();
    assert_eq!(store.all(), vec![(0, "F-f".to_string())]);
}

#[test]
fn left_join_matches_kafka_streams() {
    run(Kind::Left, false, &LEFT);
    let d = run(Kind::Left, true, &LEFT);
    let store = d.key_value_store("joined", Serdes::u64(), Serdes::string()).unwrap();
    assert_eq!(store.all(), vec![(0, "F-f".to_string())]);
}

#[test]
fn outer_join_matches_kafka_streams() {
    run(Kind::Outer, false, &OUTER);
    let d = run(Kind::Outer, true, &OUTER);
    let store = d.key_value_store("joined", Serdes::u64(), Serdes::string()).unwrap();
    assert_eq!(store.all(), vec![(0, "F-f".to_string())]);
}

#[test]
fn deleting_a_key_that_never_had_a_value() {
    // Kafka Streams checks the old value only when the other side is
    // absent; with the other side present, a delete of this side emits the
    // row of (nothing, other): a tombstone for inner and left joins even if
    // no row existed (`KTableKTableInnerJoin`/`KTableKTableLeftJoin` forward
    // `Change(null, ..)` whenever the other side has a value).
    for (kind, want_left_delete) in [(Kind::Inner, None), (Kind::Left, None), (Kind::Outer, Some("null-a"))] {
        for materialized in [false, true] {
            let d = TopologyTestDriver::new(join_topology(kind, materialized), TestDriverConfig::default()).unwrap();
            let (k1, k2) = (1u64.to_be_bytes(), 2u64.to_be_bytes());
            d.pipe_raw("right", Some(&k1), Some(b"a"), 1).unwrap();
            let before = d.topic_records("out").len();
            d.pipe_raw("left", Some(&k1), None, 2).unwrap();
            // Both sides absent: nothing, whatever the join.
            d.pipe_raw("right", Some(&k2), None, 3).unwrap();
            d.pipe_raw("left", Some(&k2), None, 4).unwrap();
            let out: Vec<_> = d.topic_records("out")[before..].iter().map(decode).collect();
            assert_eq!(
                out,
                vec![(1, want_left_delete.map(str::to_string), 2)],
                "{kind:?}, materialized: {materialized}"
            );
        }
    }
}

#[test]
fn a_materialized_join_is_queryable_and_logged_per_key() {
    let d = TopologyTestDriver::new(join_topology(Kind::Left, true), TestDriverConfig::default()).unwrap();
    let left = d.input_topic("left", Serdes::u64(), Serdes::string());
    let right = d.input_topic("right", Serdes::u64(), Serdes::string());
    left.pipe_input(1, "x".into(), 1).unwrap();
    left.pipe_input(2, "y".into(), 2).unwrap();
    right.pipe_input(2, "Y".into(), 3).unwrap();
    right.pipe_input(3, "Z".into(), 4).unwrap();
    let store = d.key_value_store("joined", Serdes::u64(), Serdes::string()).unwrap();
    assert_eq!(store.get(&1), Some("x-null".to_string()));
    assert_eq!(store.get(&2), Some("y-Y".to_string()));
    // A right row without a left row has no left-join row.
    assert_eq!(store.get(&3), None);
    d.pipe_raw("left", Some(&1u64.to_be_bytes()), None, 5).unwrap();
    assert_eq!(store.all(), vec![(2, "y-Y".to_string())]);
    // The result store has a changelog: each change once, deletions as
    // tombstones.
    let changelog: Vec<_> = d
        .changelog("joined")
        .into_iter()
        .map(|r| (r.key, r.value.map(|v| String::from_utf8(v).unwrap())))
        .collect();
    let k = |n: u64| n.to_be_bytes().to_vec();
    assert_eq!(
        changelog,
        vec![
            (k(1), Some("x-null".to_string())),
            (k(2), Some("y-null".to_string())),
            (k(2), Some("y-Y".to_string())),
            (k(1), None),
        ]
    );
}

#[test]
fn joins_chain_on_a_materialized_result() {
    // (left ⋈ right) ⋈ third: a materialized join result is a table like
    // any other, so it can be joined again (Kafka Streams' multi-join).
    let mut b = StreamsBuilder::new();
    let left = b.table::<u64, String>("left", Serdes::u64(), Serdes::string(), Materialized::named("left"));
    let right = b.table::<u64, String>("right", Serdes::u64(), Serdes::string(), Materialized::named("right"));
    let third = b.table::<u64, String>("third", Serdes::u64(), Serdes::string(), Materialized::named("third"));
    left.join(
        &right,
        |l, r| format!("{l}-{r}"),
        TableJoined::materialized(Materialized::named("lr"), Serdes::string()),
    )
    .join(&third, |lr, t| format!("{lr}-{t}"), TableJoined::unmaterialized())
    .to("out", Serdes::u64(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    for (topic, value, ts) in [
        ("left", "A", 1),
        ("third", "t", 2),
        ("right", "a", 3),
        ("third", "u", 4),
    ] {
        d.input_topic(topic, Serdes::u64(), Serdes::string())
            .pipe_input(7, value.to_string(), ts)
            .unwrap();
    }
    d.pipe_raw("left", Some(&7u64.to_be_bytes()), None, 5).unwrap();
    let out: Vec<_> = d.topic_records("out").iter().map(decode).collect();
    assert_eq!(
        out,
        vec![
            (7, Some("A-a-t".to_string()), 3),
            (7, Some("A-a-u".to_string()), 4),
            (7, None, 5)
        ]
    );
}

// Joining a table without a store (`filter`, `map_values`) does not
// compile: see topology/tests/ui/table_join_mapped_table.rs.

#[test]
fn describe_shows_the_join_nodes_and_stores() {
    let text = join_topology(Kind::Inner, true).describe("app");
    for part in [
        "Processor: KTABLE-JOINTHIS-0000000002 (stores: [left, right, joined])",
        "Processor: KTABLE-JOINOTHER-0000000003 (stores: [left, right, joined])",
        "Processor: KTABLE-MERGE-0000000004 (stores: [])",
        "      <-- KTABLE-JOINTHIS-0000000002, KTABLE-JOINOTHER-0000000003",
        "Sink: KTABLE-SINK-0000000005 (topic: out)",
        "joined (key-value; changelog app-joined-changelog)",
    ] {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
    // A non-materialized left join keeps only which keys have a row.
    let text = join_topology(Kind::Left, false).describe("app");
    assert!(
        text.contains("KTABLE-LEFTJOIN-ROWS-STORE-0000000004 (key-value; changelog app-KTABLE-LEFTJOIN-ROWS-STORE-0000000004-changelog)"),
        "{text}"
    );
}
