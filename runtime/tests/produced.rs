//! The short forms of the DSL (default serdes, `Consumed`, `Produced`,
//! `Grouped`) through the test driver: they write exactly what the
//! explicit forms write.

use weir_runtime::testing::{RawRecord, TestDriverConfig, TopologyTestDriver};
use weir_topology::*;

/// Feed the same input to a topology and collect every record it wrote
/// to `outputs` (raw bytes, with timestamps), plus the repartition topic.
fn run(t: Topology, outputs: &[&str]) -> Vec<(String, Vec<RawRecord>)> {
    let d = TopologyTestDriver::new(t, TestDriverConfig::with_application_id("app")).unwrap();
    let lines = [
        (Some("a"), Some("Hello world"), 1),
        (Some("b"), Some("hello"), 2),
        (None, Some("world again"), 3),
        (Some("c"), None, 4),
        (Some("d"), Some("bye"), 5),
    ];
    for (k, v, ts) in lines {
        d.pipe_raw("lines", k.map(str::as_bytes), v.map(str::as_bytes), ts)
            .unwrap();
    }
    outputs.iter().map(|o| (o.to_string(), d.topic_records(o))).collect()
}

const OUTPUTS: &[&str] = &["counts", "lengths", "upper", "app-per-word-repartition"];

#[test]
fn short_forms_write_the_same_records_as_explicit_serdes() {
    let short = {
        let mut b = StreamsBuilder::new();
        let lines = b.stream_with(
            "lines",
            Consumed::<Option<String>, Option<String>>::new().with_timestamp_extractor(|_, _, ts| ts * 10),
        );
        lines
            .clone()
            .flat_map_values(|_, l: Option<String>| {
                l.unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_lowercase)
                    .collect::<Vec<_>>()
            })
            .group_by_with(|_, w| w.clone(), Grouped::new().with_name("per-word"))
            .count(Materialized::named("word-counts"))
            .to_stream()
            .to_topic("counts");
        lines
            .clone()
            .map_values(|_, l| l.map(|l| l.len() as u64))
            .to_topic("lengths");
        lines
            .map(|k, v| (k.unwrap_or_default(), v.map(|v| v.to_uppercase())))
            .to_with("upper", Produced::new().with_name("upper-sink"));
        b.build().unwrap()
    };
    let explicit = {
        let mut b = StreamsBuilder::new();
        let opt = || Serdes::optional(Serdes::string());
        let lines = b.stream_with_timestamps("lines", opt(), opt(), |_, _, ts| ts * 10);
        lines
            .clone()
            .flat_map_values(|_, l: Option<String>| {
                l.unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_lowercase)
                    .collect::<Vec<_>>()
            })
            .select_key(|_, w| w.clone())
            .repartition("per-word", Serdes::string(), Serdes::string())
            .group_by_key(Serdes::string(), Serdes::string())
            .count(Materialized::named("word-counts"))
            .to_stream()
            .to("counts", Serdes::string(), Serdes::u64());
        lines.clone().map_values(|_, l| l.map(|l| l.len() as u64)).to(
            "lengths",
            opt(),
            Serdes::optional(Serdes::u64()),
        );
        lines
            .map(|k, v| (k.unwrap_or_default(), v.map(|v| v.to_uppercase())))
            .to("upper", Serdes::string(), opt());
        b.build().unwrap()
    };
    let (a, b) = (run(short, OUTPUTS), run(explicit, OUTPUTS));
    for ((name, got), (_, want)) in a.iter().zip(&b) {
        assert!(!want.is_empty(), "{name}: the explicit topology wrote nothing");
        assert_eq!(got, want, "{name}");
    }
    // The extractor's time reached the outputs: 10 × the Kafka timestamp.
    let counts = &a[0].1;
    assert_eq!(counts.first().map(|r| r.timestamp), Some(10));
}

#[test]
fn an_optional_value_default_writes_none_as_a_kafka_null() {
    let mut b = StreamsBuilder::new();
    b.stream_of::<String, String>("in")
        .map_values(|_, v| (v != "delete").then_some(v))
        .to_topic("out");
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let input = d.input_topic("in", Serdes::string(), Serdes::string());
    input.pipe_input("k".into(), "keep".into(), 1).unwrap();
    input.pipe_input("k".into(), "delete".into(), 2).unwrap();
    input.pipe_input("k".into(), String::new(), 3).unwrap();
    let values: Vec<Option<Vec<u8>>> = d.topic_records("out").into_iter().map(|r| r.value).collect();
    // None: no value at all (a tombstone). Some(""): an empty value.
    assert_eq!(values, vec![Some(b"keep".to_vec()), None, Some(Vec::new())]);
    let typed = d.output_topic("out", Serdes::string(), <Option<String>>::default_serde());
    assert_eq!(
        typed.read_values(),
        vec![Some("keep".to_string()), None, Some(String::new())]
    );
}

#[test]
fn tables_and_stream_joins_have_default_forms() {
    use std::time::Duration;
    let mut b = StreamsBuilder::new();
    let prices = b.table_of::<String, u64>("prices", Materialized::named("prices"));
    prices.to_topic("prices-copy");
    let orders = b.stream_of::<String, u64>("orders");
    let payments = b.stream_of::<String, u64>("payments");
    orders
        .join_stream(
            payments,
            |_, o, p| o + p,
            JoinWindows::of(Duration::from_secs(5)).unwrap(),
            StreamJoined::new(),
        )
        .to_topic("paid");
    let users = b.table_of::<String, String>("users", Materialized::named("users"));
    b.stream_of::<String, String>("clicks")
        .select_key(|_, user| user.clone())
        .join_with(
            &users,
            |_, click, name| format!("{click} by {name}"),
            Joined::new().with_name("clicks-users"),
        )
        .to_topic("enriched");
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let u = |n: u64| n.to_be_bytes().to_vec();
    d.pipe_raw("prices", Some(b"apple"), Some(&u(3)), 1).unwrap();
    d.pipe_raw("prices", Some(b"apple"), None, 2).unwrap();
    d.pipe_raw("orders", Some(b"o1"), Some(&u(10)), 1).unwrap();
    d.pipe_raw("payments", Some(b"o1"), Some(&u(5)), 2).unwrap();
    let copy: Vec<Option<Vec<u8>>> = d.topic_records("prices-copy").into_iter().map(|r| r.value).collect();
    assert_eq!(copy, vec![Some(u(3)), None]);
    let paid = d.output_topic("paid", Serdes::string(), Serdes::u64());
    assert_eq!(paid.read_key_values(), vec![("o1".to_string(), 15)]);
    d.pipe_raw("users", Some(b"u1"), Some(b"Ann"), 1).unwrap();
    d.pipe_raw("clicks", Some(b"c1"), Some(b"u1"), 2).unwrap();
    let enriched = d.output_topic("enriched", Serdes::string(), Serdes::string());
    assert_eq!(
        enriched.read_key_values(),
        vec![("u1".to_string(), "u1 by Ann".to_string())]
    );
    assert_eq!(d.topic_records("test-clicks-users-repartition").len(), 1);
}

/// `Produced::with_partitioner` is `to_with_partitioner`: run on an
/// in-memory cluster whose output topic has 4 partitions.
#[test]
fn a_produced_partitioner_chooses_the_partition() {
    use std::sync::Arc;
    use weir_runtime::memory::{Member, MemoryCluster};
    use weir_runtime::TaskConfig;

    let cluster = MemoryCluster::new();
    cluster.create_topic("in", 1);
    cluster.create_topic("out", 4);
    let mut b = StreamsBuilder::new();
    b.stream_of::<u32, String>("in")
        .to_with("out", Produced::new().with_partitioner(|k, _, n| Some(k % n)));
    let topology = b.build().unwrap();
    for k in 0u32..8 {
        cluster.produce("in", 0, Some(&k.to_be_bytes()), Some(b"v"), 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(weir_state::StateDb::open(dir.path()).unwrap());
    let mut m = Member::new(&cluster, &topology, "app", db, TaskConfig::default(), None).unwrap();
    m.assign_all().unwrap();
    m.run_until_idle(100, 1_000).unwrap();
    m.manager.close_all();
    for p in 0..4 {
        let keys: Vec<u32> = cluster
            .records("out", p)
            .into_iter()
            .map(|r| u32::from_be_bytes(r.key.unwrap().try_into().unwrap()))
            .collect();
        assert_eq!(keys, vec![p as u32, p as u32 + 4], "partition {p}");
    }

    // A table sink has no partitioner: a build error, not ignored.
    let mut b = StreamsBuilder::new();
    b.table_of::<u32, String>("t", Materialized::named("t"))
        .to_with("out", Produced::new().with_partitioner(|_, _, _| Some(0)));
    assert!(b
        .build()
        .unwrap_err()
        .to_string()
        .contains("a table sink takes no partitioner"));
}
