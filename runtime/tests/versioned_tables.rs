//! Versioned tables (KIP-889/914) through the test driver.
//!
//! The join tables are Kafka Streams': the input is
//! `AbstractJoinIntegrationTest.input` (one key, 23 records, out-of-order
//! ones at steps 14–17 and 20–23), the expected outputs those of
//! `StreamTableJoinIntegrationTest.testInnerWithVersionedStore` /
//! `testLeftWithVersionedStore` and
//! `TableTableJoinIntegrationTest.testInner/Left/OuterWithVersionedStores`.
//! Every output is checked with its timestamp: versioned tables forward
//! each in-order update at once, with its own timestamp.

use weir_runtime::testing::{RawRecord, TestDriverConfig, TopologyTestDriver};
use weir_topology::prelude::*;
use weir_topology::TableJoined;

use std::time::Duration;

#[path = "common/join_input.rs"]
mod join_input;
use join_input::Side::{Left, Right};
use join_input::INPUT;

/// What one input produces: nothing, or one record (a value or a
/// tombstone) with its timestamp.
type Out = Option<(Option<&'static str>, i64)>;
const NOTHING: Out = None;
const fn v(s: &'static str, ts: i64) -> Out {
    Some((Some(s), ts))
}
const fn tombstone(ts: i64) -> Out {
    Some((None, ts))
}

/// `StreamTableJoinIntegrationTest.testInnerWithVersionedStore`: the
/// stream record at 6 joins "b" (valid 6..7), not the out-of-order "d"
/// at 7 nor the newest value; "F" at 4 joins "a" (valid 4..6).
const STREAM_INNER: [Out; 23] = [
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    v("B-a", 5),
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    v("D-b", 6),
    NOTHING,
    NOTHING,
    NOTHING,
    v("E-e", 15),
    NOTHING,
    NOTHING,
    v("F-a", 4),
    NOTHING,
];

/// `StreamTableJoinIntegrationTest.testLeftWithVersionedStore`.
const STREAM_LEFT: [Out; 23] = [
    NOTHING,
    NOTHING,
    v("A-null", 3),
    NOTHING,
    v("B-a", 5),
    NOTHING,
    NOTHING,
    NOTHING,
    v("C-null", 9),
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    v("D-b", 6),
    NOTHING,
    NOTHING,
    NOTHING,
    v("E-e", 15),
    NOTHING,
    NOTHING,
    v("F-a", 4),
    NOTHING,
];

/// `TableTableJoinIntegrationTest.testInnerWithVersionedStores`: the
/// out-of-order updates change neither table, so they join nothing.
const TABLE_INNER: [Out; 23] = [
    NOTHING,
    NOTHING,
    NOTHING,
    v("A-a", 4),
    v("B-a", 5),
    v("B-b", 6),
    tombstone(7),
    NOTHING,
    NOTHING,
    v("C-c", 10),
    tombstone(11),
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    v("E-e", 15),
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
];

/// `TableTableJoinIntegrationTest.testLeftWithVersionedStores`.
const TABLE_LEFT: [Out; 23] = [
    NOTHING,
    NOTHING,
    v("A-null", 3),
    v("A-a", 4),
    v("B-a", 5),
    v("B-b", 6),
    tombstone(7),
    NOTHING,
    v("C-null", 9),
    v("C-c", 10),
    v("C-null", 11),
    tombstone(12),
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    v("E-e", 15),
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
];

/// `TableTableJoinIntegrationTest.testOuterWithVersionedStores`.
const TABLE_OUTER: [Out; 23] = [
    NOTHING,
    NOTHING,
    v("A-null", 3),
    v("A-a", 4),
    v("B-a", 5),
    v("B-b", 6),
    v("null-b", 7),
    tombstone(8),
    v("C-null", 9),
    v("C-c", 10),
    v("C-null", 11),
    tombstone(12),
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
    v("null-e", 14),
    v("E-e", 15),
    NOTHING,
    NOTHING,
    NOTHING,
    NOTHING,
];

fn show(v: Option<&String>) -> &str {
    v.map_or("null", String::as_str)
}

fn versioned(name: &str) -> Materialized {
    Materialized::named(name).versioned(Duration::from_secs(300))
}

fn decode(r: &RawRecord) -> (u64, Option<String>, i64) {
    let key = u64::from_be_bytes(r.key.as_deref().unwrap().try_into().unwrap());
    let value = r.value.as_ref().map(|v| String::from_utf8(v.clone()).unwrap());
    (key, value, r.timestamp)
}

/// Pipe `INPUT` one record at a time and check the exact output of each.
fn run(topology: Topology, what: &str, expected: &[Out; 23]) -> TopologyTestDriver {
    let d = TopologyTestDriver::new(topology, TestDriverConfig::default()).unwrap();
    let key = 0u64.to_be_bytes();
    let mut read = 0;
    for (step, ((side, value, ts), want)) in INPUT.iter().zip(expected).enumerate() {
        let topic = match side {
            Left => "left",
            Right => "right",
        };
        d.pipe_raw(topic, Some(&key), value.map(str::as_bytes), *ts).unwrap();
        let out: Vec<_> = d.topic_records("out")[read..].iter().map(decode).collect();
        read += out.len();
        let want: Vec<_> = want.iter().map(|(v, ts)| (0u64, v.map(str::to_string), *ts)).collect();
        assert_eq!(out, want, "{what}, step {}", step + 1);
    }
    d
}

/// A stream of "left" joined to a versioned table of "right".
fn stream_table(left_join: bool) -> Topology {
    let mut b = StreamsBuilder::new();
    let table = b.table::<u64, String>("right", Serdes::u64(), Serdes::string(), versioned("table-store"));
    let stream = b.stream::<u64, Option<String>>("left", Serdes::u64(), Serdes::optional(Serdes::string()));
    let joined = if left_join {
        stream.left_join(&table, |_, l, r| {
            format!("{}-{}", l.unwrap_or_default(), show(r.as_ref()))
        })
    } else {
        stream.join(&table, |_, l, r| format!("{}-{r}", l.unwrap_or_default()))
    };
    joined.to("out", Serdes::u64(), Serdes::string());
    b.build().unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Inner,
    Left,
    Outer,
}

/// Two versioned tables of "left" and "right", joined as `kind`.
fn table_table(kind: Kind) -> Topology {
    let mut b = StreamsBuilder::new();
    let left = b.table::<u64, String>("left", Serdes::u64(), Serdes::string(), versioned("left"));
    let right = b.table::<u64, String>("right", Serdes::u64(), Serdes::string(), versioned("right"));
    let joined = TableJoined::unmaterialized();
    let result = match kind {
        Kind::Inner => left.join(&right, |l, r| format!("{l}-{r}"), joined),
        Kind::Left => left.left_join(&right, |l, r| format!("{l}-{}", show(r)), joined),
        Kind::Outer => left.outer_join(&right, |l, r| format!("{}-{}", show(l), show(r)), joined),
    };
    result.to("out", Serdes::u64(), Serdes::string());
    b.build().unwrap()
}

#[test]
fn stream_table_inner_join_reads_the_table_as_of_each_record() {
    let d = run(stream_table(false), "stream-table inner", &STREAM_INNER);
    // The null-valued stream records (steps 1, 7, 12, 16, 20) are skipped.
    assert_eq!(d.null_records_skipped(), 5);
}

#[test]
fn stream_table_left_join_reads_the_table_as_of_each_record() {
    run(stream_table(true), "stream-table left", &STREAM_LEFT);
}

#[test]
fn table_table_inner_join_ignores_out_of_order_updates() {
    run(table_table(Kind::Inner), "table-table inner", &TABLE_INNER);
}

#[test]
fn table_table_left_join_ignores_out_of_order_updates() {
    run(table_table(Kind::Left), "table-table left", &TABLE_LEFT);
}

#[test]
fn table_table_outer_join_ignores_out_of_order_updates() {
    run(table_table(Kind::Outer), "table-table outer", &TABLE_OUTER);
}

/// A stream of currency payments joined to a versioned table of rates,
/// and the table's own changes written out.
fn rates_topology(history: Duration) -> Topology {
    let mut b = StreamsBuilder::new();
    let rates = b.table::<String, u64>(
        "rates",
        Serdes::string(),
        Serdes::u64(),
        Materialized::named("rates").versioned(history),
    );
    rates
        .to_change_stream()
        .to("rate-changes", Serdes::string(), Serdes::optional(Serdes::u64()));
    b.stream::<String, u64>("payments", Serdes::string(), Serdes::u64())
        .left_join(&rates, |_, amount, rate| {
            rate.map_or_else(
                || format!("{amount} at no rate"),
                |r| format!("{amount}x{r}={}", amount * r),
            )
        })
        .to("priced", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

#[test]
fn out_of_order_payments_are_priced_at_the_rate_of_their_time() {
    let d = TopologyTestDriver::new(rates_topology(Duration::from_secs(60)), TestDriverConfig::default()).unwrap();
    let rates = d.input_topic("rates", Serdes::string(), Serdes::u64());
    let payments = d.input_topic("payments", Serdes::string(), Serdes::u64());
    let priced = d.output_topic("priced", Serdes::string(), Serdes::string());
    rates.pipe_input("EUR".into(), 2, 1_000).unwrap();
    rates.pipe_input("EUR".into(), 3, 5_000).unwrap();
    rates.pipe_input("EUR".into(), 4, 9_000).unwrap();
    // A late rate: valid from 3 s until the next version at 5 s.
    rates.pipe_input("EUR".into(), 7, 3_000).unwrap();
    for (amount, ts) in [
        (10, 500),
        (10, 1_000),
        (10, 2_999),
        (10, 3_000),
        (10, 6_000),
        (10, 20_000),
    ] {
        payments.pipe_input("EUR".into(), amount, ts).unwrap();
    }
    let got: Vec<_> = priced
        .read_records()
        .into_iter()
        .map(|r| (r.value, r.timestamp))
        .collect();
    let want = [
        ("10 at no rate", 500),
        ("10x2=20", 1_000),
        ("10x2=20", 2_999),
        ("10x7=70", 3_000),
        ("10x3=30", 6_000),
        ("10x4=40", 20_000),
    ];
    let want: Vec<_> = want.iter().map(|(v, t)| (v.to_string(), *t)).collect();
    assert_eq!(got, want);

    // The table's changes: in-order versions only, each at its own time.
    let changes = d.output_topic("rate-changes", Serdes::string(), Serdes::optional(Serdes::u64()));
    let changes: Vec<_> = changes
        .read_records()
        .into_iter()
        .map(|r| (r.value, r.timestamp))
        .collect();
    assert_eq!(changes, vec![(Some(2), 1_000), (Some(3), 5_000), (Some(4), 9_000)]);

    // The store answers as of any time within the history.
    let store = d.versioned_store("rates", Serdes::string(), Serdes::u64()).unwrap();
    let eur = "EUR".to_string();
    assert_eq!(store.get_as_of(&eur, 999), None);
    assert_eq!(store.get_as_of(&eur, 4_000), Some((7, 3_000)));
    assert_eq!(store.get_latest(&eur), Some((4, 9_000)));
    // As a key-value store (queries, other joins): the newest value.
    let kv = d.key_value_store("rates", Serdes::string(), Serdes::u64()).unwrap();
    assert_eq!(kv.all(), vec![(eur, 4)]);
}

#[test]
fn history_older_than_the_retention_is_gone() {
    let d = TopologyTestDriver::new(rates_topology(Duration::from_secs(10)), TestDriverConfig::default()).unwrap();
    let rates = d.input_topic("rates", Serdes::string(), Serdes::u64());
    let payments = d.input_topic("payments", Serdes::string(), Serdes::u64());
    let priced = d.output_topic("priced", Serdes::string(), Serdes::string());
    rates.pipe_input("EUR".into(), 2, 1_000).unwrap();
    rates.pipe_input("EUR".into(), 3, 30_000).unwrap();
    // 30 s - 10 s of history: a payment at 19.999 s is older than the
    // table remembers, one at 20 s finds the rate of 1 s (valid to 30 s).
    payments.pipe_input("EUR".into(), 10, 19_999).unwrap();
    payments.pipe_input("EUR".into(), 10, 20_000).unwrap();
    // A rate older than the history is dropped and counted as late.
    rates.pipe_input("EUR".into(), 9, 19_000).unwrap();
    assert_eq!(d.late_records_dropped(), 1);
    payments.pipe_input("EUR".into(), 10, 25_000).unwrap();
    let got: Vec<_> = priced.read_records().into_iter().map(|r| r.value).collect();
    assert_eq!(got, vec!["10 at no rate", "10x2=20", "10x2=20"]);
}

#[test]
fn a_deleted_rate_prices_nothing_from_its_delete_on() {
    let d = TopologyTestDriver::new(rates_topology(Duration::from_secs(60)), TestDriverConfig::default()).unwrap();
    let payments = d.input_topic("payments", Serdes::string(), Serdes::u64());
    let priced = d.output_topic("priced", Serdes::string(), Serdes::string());
    d.pipe_raw("rates", Some(b"EUR"), Some(&2u64.to_be_bytes()), 1_000)
        .unwrap();
    d.pipe_raw("rates", Some(b"EUR"), None, 5_000).unwrap();
    payments.pipe_input("EUR".into(), 10, 4_999).unwrap();
    payments.pipe_input("EUR".into(), 10, 5_000).unwrap();
    let got: Vec<_> = priced.read_records().into_iter().map(|r| r.value).collect();
    assert_eq!(got, vec!["10x2=20", "10 at no rate"]);
    // The delete is forwarded as a tombstone at its own time.
    let changes: Vec<_> = d
        .topic_records("rate-changes")
        .iter()
        .map(|r| (r.value.is_some(), r.timestamp))
        .collect();
    assert_eq!(changes, vec![(true, 1_000), (false, 5_000)]);
    // A delete older than the key's newest version changes nothing.
    d.pipe_raw("rates", Some(b"EUR"), Some(&3u64.to_be_bytes()), 6_000)
        .unwrap();
    d.pipe_raw("rates", Some(b"EUR"), None, 5_500).unwrap();
    payments.pipe_input("EUR".into(), 10, 7_000).unwrap();
    payments.pipe_input("EUR".into(), 10, 5_700).unwrap();
    let got: Vec<_> = priced.read_records().into_iter().map(|r| r.value).collect();
    assert_eq!(got, vec!["10x3=30", "10 at no rate"]);
    assert_eq!(d.topic_records("rate-changes").len(), 3);
}

#[test]
fn versioned_tables_are_logged_and_described() {
    let t = rates_topology(Duration::from_secs(60));
    let described = t.describe("app");
    assert!(
        described.contains("rates (versioned key-value, history 60000 ms; changelog app-rates-changelog)"),
        "{described}"
    );
    let d = TopologyTestDriver::new(t, TestDriverConfig::default()).unwrap();
    d.pipe_raw("rates", Some(b"EUR"), Some(&2u64.to_be_bytes()), 1_000)
        .unwrap();
    // Each version has its own changelog key, so compaction keeps the
    // history that a restore needs.
    assert!(!d.changelog("rates").is_empty());
}

#[test]
fn only_source_tables_can_be_versioned() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, u64>("in", Serdes::string(), Serdes::u64())
        .group_by_key(Serdes::string(), Serdes::u64())
        .count(Materialized::named("counts").versioned(Duration::from_secs(1)));
    let err = b.build().unwrap_err().to_string();
    assert!(err.contains("Materialized::versioned is for source tables"), "{err}");

    let mut b = StreamsBuilder::new();
    b.global_table::<String, u64>(
        "rates",
        Serdes::string(),
        Serdes::u64(),
        Materialized::named("rates").versioned(Duration::from_secs(1)),
    );
    let err = b.build().unwrap_err().to_string();
    assert!(err.contains("a global table cannot be versioned"), "{err}");
}
