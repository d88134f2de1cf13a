//! Cogroup through the test driver: streams of different value types
//! aggregated into one store, plain and windowed, with exact outputs.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_runtime::testing::{TestDriverConfig, TopologyTestDriver};
use weir_topology::prelude::*;
use weir_topology::{EmitStrategy, SlidingWindows};

/// What one customer did: the aggregate both inputs fold into.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Activity {
    clicks: u32,
    purchases: Vec<String>,
}

fn activity(clicks: u32, purchases: &[&str]) -> Activity {
    Activity {
        clicks,
        purchases: purchases.iter().map(|s| s.to_string()).collect(),
    }
}

/// Clicks are keyed by customer; purchases by order id with the customer
/// in the value ("customer:item"), so they are re-keyed (and repartitioned)
/// before the cogroup.
fn inputs(b: &mut StreamsBuilder) -> (KGroupedStream<String, u32>, KGroupedStream<String, String>) {
    let clicks = b
        .stream::<String, u32>("clicks", Serdes::string(), Serdes::u32())
        .group_by_key(Serdes::string(), Serdes::u32());
    let purchases = b
        .stream::<String, String>("purchases", Serdes::string(), Serdes::string())
        .group_by(
            |_, v: &String| v.split(':').next().unwrap_or_default().to_string(),
            Serdes::string(),
            Serdes::string(),
        );
    (clicks, purchases)
}

fn add_click(_: &String, n: u32, mut a: Activity) -> Activity {
    a.clicks += n;
    a
}

fn add_purchase(_: &String, v: String, mut a: Activity) -> Activity {
    a.purchases.push(v.split(':').nth(1).unwrap_or_default().to_string());
    a
}

#[test]
fn clicks_and_purchases_fold_into_one_aggregate_per_customer() {
    let mut b = StreamsBuilder::new();
    let (clicks, purchases) = inputs(&mut b);
    clicks
        .cogroup(add_click)
        .cogroup(purchases, add_purchase)
        .aggregate(
            Activity::default,
            Serdes::json(),
            Materialized::named("customer-activity"),
        )
        .to_stream()
        .to("activity", Serdes::string(), Serdes::json());
    let topology = b.build().unwrap();
    // The purchases are repartitioned; the aggregation and both inputs'
    // nodes share one sub-topology and one store.
    assert_eq!(topology.subtopologies().len(), 2);
    let with_store: Vec<_> = topology
        .subtopologies()
        .iter()
        .filter(|s| s.stores.contains(&"customer-activity".to_string()))
        .collect();
    assert_eq!(with_store.len(), 1);
    assert_eq!(
        topology
            .nodes()
            .iter()
            .filter(|n| n.stores.contains(&"customer-activity".to_string()))
            .count(),
        2
    );

    let d = TopologyTestDriver::new(topology, TestDriverConfig::with_application_id("shop")).unwrap();
    let clicks_in = d.input_topic("clicks", Serdes::string(), Serdes::u32());
    let purchases_in = d.input_topic("purchases", Serdes::string(), Serdes::string());
    let out = d.output_topic("activity", Serdes::string(), Serdes::json::<Activity>());

    clicks_in.pipe_input("alice".into(), 2, 1).unwrap();
    purchases_in.pipe_input("o-1".into(), "alice:book".into(), 2).unwrap();
    clicks_in.pipe_input("bob".into(), 1, 3).unwrap();
    clicks_in.pipe_input("alice".into(), 1, 4).unwrap();
    purchases_in.pipe_input("o-2".into(), "bob:pen".into(), 5).unwrap();
    purchases_in.pipe_input("o-3".into(), "alice:lamp".into(), 6).unwrap();

    let records = out.read_records();
    assert_eq!(
        records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone(), r.timestamp))
            .collect::<Vec<_>>(),
        vec![
            ("alice".to_string(), activity(2, &[]), 1),
            ("alice".to_string(), activity(2, &["book"]), 2),
            ("bob".to_string(), activity(1, &[]), 3),
            ("alice".to_string(), activity(3, &["book"]), 4),
            ("bob".to_string(), activity(1, &["pen"]), 5),
            ("alice".to_string(), activity(3, &["book", "lamp"]), 6),
        ]
    );
    let store = d
        .key_value_store("customer-activity", Serdes::string(), Serdes::json::<Activity>())
        .unwrap();
    assert_eq!(
        store.all(),
        vec![
            ("alice".to_string(), activity(3, &["book", "lamp"])),
            ("bob".to_string(), activity(1, &["pen"])),
        ]
    );
    // The repartition topic of the second input (index 1) carried the
    // three purchases; clicks needed none.
    assert_eq!(d.topic_records("shop-customer-activity-cogroup-1-repartition").len(), 3);
    assert!(d
        .topic_records("shop-customer-activity-cogroup-0-repartition")
        .is_empty());
}

fn describe<V: std::fmt::Debug>(wk: Windowed<String>, v: V) -> (String, String) {
    (wk.key, format!("{}..{} {v:?}", wk.window.start, wk.window.end))
}

fn kv(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

fn windowed_topology(emit: EmitStrategy) -> Topology {
    let mut b = StreamsBuilder::new();
    let (clicks, purchases) = inputs(&mut b);
    clicks
        .cogroup(add_click)
        .cogroup(purchases, add_purchase)
        .windowed_by(
            TimeWindows::of(Duration::from_millis(10))
                .unwrap()
                .grace(Duration::from_millis(2))
                .unwrap(),
        )
        .emit_strategy(emit)
        .aggregate(Activity::default, Serdes::json(), Materialized::named("activity-10ms"))
        .to_stream()
        .map(describe)
        .to("activity", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

fn pipe_windowed(d: &TopologyTestDriver) -> Vec<Vec<(String, String)>> {
    let clicks = d.input_topic("clicks", Serdes::string(), Serdes::u32());
    let purchases = d.input_topic("purchases", Serdes::string(), Serdes::string());
    let out = d.output_topic("activity", Serdes::string(), Serdes::string());
    let mut seen = Vec::new();
    clicks.pipe_input("alice".into(), 2, 1).unwrap();
    seen.push(out.read_key_values());
    purchases.pipe_input("o-1".into(), "alice:book".into(), 9).unwrap();
    seen.push(out.read_key_values());
    clicks.pipe_input("alice".into(), 1, 11).unwrap();
    seen.push(out.read_key_values());
    // Out of order, within grace (stream time 11, window [0,10) closes at 12).
    purchases.pipe_input("o-2".into(), "alice:pen".into(), 8).unwrap();
    seen.push(out.read_key_values());
    clicks.pipe_input("bob".into(), 5, 12).unwrap();
    seen.push(out.read_key_values());
    // Late: [0,10) closed at stream time 12.
    purchases.pipe_input("o-3".into(), "alice:lamp".into(), 7).unwrap();
    seen.push(out.read_key_values());
    clicks.pipe_input("bob".into(), 1, 22).unwrap();
    seen.push(out.read_key_values());
    seen
}

#[test]
fn time_windowed_cogroup_emits_every_update() {
    let d = TopologyTestDriver::new(
        windowed_topology(EmitStrategy::on_window_update()),
        TestDriverConfig::default(),
    )
    .unwrap();
    let seen = pipe_windowed(&d);
    let a = |c, p: &[&str]| format!("{:?}", activity(c, p));
    assert_eq!(
        seen,
        vec![
            vec![kv("alice", &format!("0..10 {}", a(2, &[])))],
            vec![kv("alice", &format!("0..10 {}", a(2, &["book"])))],
            vec![kv("alice", &format!("10..20 {}", a(1, &[])))],
            vec![kv("alice", &format!("0..10 {}", a(2, &["book", "pen"])))],
            vec![kv("bob", &format!("10..20 {}", a(5, &[])))],
            vec![],
            vec![kv("bob", &format!("20..30 {}", a(1, &[])))],
        ]
    );
    assert_eq!(d.late_records_dropped(), 1);
}

#[test]
fn time_windowed_cogroup_emits_each_window_once_on_close() {
    let d = TopologyTestDriver::new(
        windowed_topology(EmitStrategy::on_window_close()),
        TestDriverConfig::default(),
    )
    .unwrap();
    let seen = pipe_windowed(&d);
    let a = |c, p: &[&str]| format!("{:?}", activity(c, p));
    assert_eq!(
        seen,
        vec![
            vec![],
            vec![],
            vec![],
            vec![],
            // Stream time 12 = end 10 + grace 2: [0,10) is final.
            vec![kv("alice", &format!("0..10 {}", a(2, &["book", "pen"])))],
            vec![],
            // Stream time 22: the [10,20) windows close, in key order.
            vec![
                kv("alice", &format!("10..20 {}", a(1, &[]))),
                kv("bob", &format!("10..20 {}", a(5, &[]))),
            ],
        ]
    );
    assert_eq!(d.late_records_dropped(), 1);
}

#[test]
fn session_windowed_cogroup_merges_sessions_across_inputs() {
    let mut b = StreamsBuilder::new();
    let (clicks, purchases) = inputs(&mut b);
    clicks
        .cogroup(|_, n, acc: String| format!("{acc}c{n}"))
        .cogroup(purchases, |_, v: String, acc| {
            format!("{acc}p{}", v.split(':').nth(1).unwrap_or_default())
        })
        .windowed_by(
            SessionWindows::with_inactivity_gap(Duration::from_millis(5))
                .unwrap()
                .grace(Duration::from_millis(10))
                .unwrap(),
        )
        .aggregate(
            || "<".to_string(),
            |_, a, b| format!("{a}|{b}"),
            Serdes::string(),
            Materialized::named("sessions"),
        )
        .to_stream()
        .map(describe)
        .to("activity", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let clicks_in = d.input_topic("clicks", Serdes::string(), Serdes::u32());
    let purchases_in = d.input_topic("purchases", Serdes::string(), Serdes::string());
    let out = d.output_topic("activity", Serdes::string(), Serdes::string());
    clicks_in.pipe_input("alice".into(), 1, 0).unwrap();
    purchases_in.pipe_input("o-1".into(), "alice:book".into(), 10).unwrap();
    // 5 is within the gap of both sessions: one session [0,10], the two
    // merged (init, then each oldest first) before the click is added.
    clicks_in.pipe_input("alice".into(), 3, 5).unwrap();
    assert_eq!(
        out.read_key_values(),
        vec![
            kv("alice", "0..0 \"<c1\""),
            kv("alice", "10..10 \"<pbook\""),
            kv("alice", "0..10 \"<|<c1|<pbookc3\""),
        ]
    );
}

#[test]
fn sliding_windowed_cogroup_aggregates_both_inputs() {
    let mut b = StreamsBuilder::new();
    let (clicks, purchases) = inputs(&mut b);
    clicks
        .cogroup(add_click)
        .cogroup(purchases, add_purchase)
        .windowed_by(
            SlidingWindows::of_time_difference_and_grace(Duration::from_millis(10), Duration::from_millis(0)).unwrap(),
        )
        .aggregate(Activity::default, Serdes::json(), Materialized::named("sliding"))
        .to_stream()
        .map(describe)
        .to("activity", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let clicks_in = d.input_topic("clicks", Serdes::string(), Serdes::u32());
    let purchases_in = d.input_topic("purchases", Serdes::string(), Serdes::string());
    let out = d.output_topic("activity", Serdes::string(), Serdes::string());
    let a = |c, p: &[&str]| format!("{:?}", activity(c, p));
    clicks_in.pipe_input("alice".into(), 2, 20).unwrap();
    assert_eq!(
        out.read_key_values(),
        vec![kv("alice", &format!("10..20 {}", a(2, &[])))]
    );
    purchases_in.pipe_input("o-1".into(), "alice:book".into(), 25).unwrap();
    // The purchase's left window holds the click; the click's right window
    // [21,31] holds the purchase only.
    assert_eq!(
        out.read_key_values(),
        vec![
            kv("alice", &format!("15..25 {}", a(2, &["book"]))),
            kv("alice", &format!("21..31 {}", a(0, &["book"]))),
        ]
    );
}
