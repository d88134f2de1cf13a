//! Session windows through the test driver: merging, late records,
//! suppression, and the store layout.

use std::time::Duration;

use weir_runtime::testing::{TestDriverConfig, TopologyTestDriver};
use weir_topology::prelude::*;
use weir_topology::store::{encode_window_start, window_key, ChangelogRecord};

fn sessions(gap_ms: u64, grace_ms: u64) -> SessionWindows {
    SessionWindows::with_inactivity_gap(Duration::from_millis(gap_ms))
        .unwrap()
        .grace(Duration::from_millis(grace_ms))
        .unwrap()
}

/// "start..end=value" per key: what the table forwarded (tombstones are not
/// part of a table's stream).
fn describe<V: std::fmt::Display>(wk: Windowed<String>, v: V) -> (String, String) {
    (wk.key, format!("{}..{}={v}", wk.window.start, wk.window.end))
}

fn count_topology(windows: SessionWindows) -> Topology {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(windows)
        .count(Materialized::named("sessions"))
        .to_stream()
        .map(describe)
        .to("session-counts", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

fn kv(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[test]
fn a_record_bridging_two_sessions_merges_them() {
    let d = TopologyTestDriver::new(count_topology(sessions(5000, 2000)), TestDriverConfig::default()).unwrap();
    let input = d.input_topic("clicks", Serdes::string(), Serdes::string());
    let out = d.output_topic("session-counts", Serdes::string(), Serdes::string());

    input.pipe_input("a".into(), "".into(), 0).unwrap();
    input.pipe_input("a".into(), "".into(), 3000).unwrap();
    input.pipe_input("b".into(), "".into(), 4000).unwrap();
    // 3000 + gap 5000 < 10000: a new session.
    input.pipe_input("a".into(), "".into(), 10000).unwrap();
    let records = out.read_records();
    assert_eq!(
        records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect::<Vec<_>>(),
        vec![
            kv("a", "0..0=1"),
            kv("a", "0..3000=2"),
            kv("b", "4000..4000=1"),
            kv("a", "10000..10000=1"),
        ]
    );
    // A session's record carries its end (its last record's timestamp).
    assert_eq!(
        records.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
        vec![0, 3000, 4000, 10000]
    );

    // 6000 is within the gap of both [0,3000] and [10000,10000]: one
    // session [0,10000] with all four records.
    input.pipe_input("a".into(), "".into(), 6000).unwrap();
    let records = out.read_records();
    assert_eq!(
        records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone(), r.timestamp))
            .collect::<Vec<_>>(),
        vec![("a".to_string(), "0..10000=4".to_string(), 10000)]
    );
    assert_eq!(d.late_records_dropped(), 0);

    // The store: one session of "a", keyed by its start, value = end + count.
    let store = d.window_store("sessions", Serdes::string(), Serdes::bytes()).unwrap();
    let mut expected = encode_window_start(10000).to_vec();
    expected.extend_from_slice(&4u64.to_be_bytes());
    assert_eq!(
        store.fetch(&"a".to_string(), i64::MIN, i64::MAX),
        vec![(0, expected.clone())]
    );
    // The merged-away session [10000,10000] is deleted (a changelog
    // tombstone), the merged one overwrites the session starting at 0.
    let changelog = d.changelog("sessions");
    let last_two = &changelog[changelog.len() - 2..];
    assert_eq!(
        last_two,
        &[
            ChangelogRecord {
                key: window_key(0, b"a"),
                value: Some(expected)
            },
            ChangelogRecord {
                key: window_key(10000, b"a"),
                value: None
            },
        ]
    );
}

#[test]
fn late_records_are_dropped_and_counted() {
    let d = TopologyTestDriver::new(count_topology(sessions(5000, 2000)), TestDriverConfig::default()).unwrap();
    let input = d.input_topic("clicks", Serdes::string(), Serdes::string());
    let out = d.output_topic("session-counts", Serdes::string(), Serdes::string());
    input.pipe_input("a".into(), "".into(), 10000).unwrap();
    input.pipe_input("a".into(), "".into(), 20000).unwrap();
    out.read_records();

    // Stream time 20000: a new session at 17000 ends 17000 + grace 2000 <
    // 20000, so it is late.
    input.pipe_input("c".into(), "".into(), 17000).unwrap();
    assert_eq!(d.late_records_dropped(), 1);
    // 13000 would extend [10000,10000] to end 13000: late too.
    input.pipe_input("a".into(), "".into(), 13000).unwrap();
    assert_eq!(d.late_records_dropped(), 2);
    assert!(out.read_records().is_empty());

    // Within grace: accepted.
    input.pipe_input("c".into(), "".into(), 18000).unwrap();
    assert_eq!(out.read_key_values(), vec![kv("c", "18000..18000=1")]);

    // d: [30000] is closed once stream time > 30000 + 5000 + 2000 and
    // [38000] is open. A record at 34000 is within the gap of both, but a
    // closed session is final (a suppression may have emitted it): the
    // record extends the open session only.
    input.pipe_input("d".into(), "".into(), 30000).unwrap();
    input.pipe_input("d".into(), "".into(), 38000).unwrap();
    out.read_records();
    input.pipe_input("d".into(), "".into(), 34000).unwrap();
    assert_eq!(d.late_records_dropped(), 2);
    assert_eq!(out.read_key_values(), vec![kv("d", "34000..38000=2")]);
    let store = d.window_store("sessions", Serdes::string(), Serdes::bytes()).unwrap();
    assert_eq!(
        store
            .fetch(&"d".to_string(), i64::MIN, i64::MAX)
            .into_iter()
            .map(|(s, _)| s)
            .collect::<Vec<_>>(),
        vec![34000]
    );
    // [30000] ended more than gap + grace (the retention) before stream
    // time: purged, which the changelog records; downstream saw only the
    // update above.
    assert!(d.changelog("sessions").contains(&ChangelogRecord {
        key: window_key(30000, b"d"),
        value: None
    }));
}

#[test]
fn suppressed_sessions_emit_once_when_no_record_can_extend_them() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("clicks", Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(sessions(5000, 1000))
        .count(Materialized::named("sessions"))
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .map(describe)
        .to("final", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let input = d.input_topic("clicks", Serdes::string(), Serdes::string());
    let out = d.output_topic("final", Serdes::string(), Serdes::string());

    input.pipe_input("a".into(), "".into(), 0).unwrap();
    // [0,0] is merged away: its tombstone removes it from the buffer, or it
    // would be emitted at stream time 6001.
    input.pipe_input("a".into(), "".into(), 3000).unwrap();
    input.pipe_input("b".into(), "".into(), 4000).unwrap();
    input.pipe_input("x".into(), "".into(), 9000).unwrap();
    assert!(out.read_records().is_empty());
    // At stream time 9000 a record at 8000 (= 3000 + gap) still extends
    // [0,3000]: 8000 + grace 1000 is not behind stream time. So [0,3000]
    // was not final yet.
    input.pipe_input("a".into(), "".into(), 8000).unwrap();
    input.pipe_input("x".into(), "".into(), 9001).unwrap();
    assert!(out.read_records().is_empty());
    // [4000,4000] is final once stream time > 4000 + 5000 + 1000.
    input.pipe_input("x".into(), "".into(), 10000).unwrap();
    assert!(out.read_records().is_empty());
    input.pipe_input("x".into(), "".into(), 10001).unwrap();
    assert_eq!(out.read_key_values(), vec![kv("b", "4000..4000=1")]);
    input.pipe_input("x".into(), "".into(), 14001).unwrap();
    let records = out.read_records();
    assert_eq!(
        records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone(), r.timestamp))
            .collect::<Vec<_>>(),
        vec![("a".to_string(), "0..8000=3".to_string(), 8000)]
    );
    // Too late to change the emitted session: dropped, nothing emitted.
    input.pipe_input("a".into(), "".into(), 2000).unwrap();
    assert_eq!(d.late_records_dropped(), 1);
    // x: 9000, 9001, 10000, 10001, 14001 form one session.
    input.pipe_input("y".into(), "".into(), 20001).unwrap();
    assert!(out.read_records().is_empty());
    input.pipe_input("y".into(), "".into(), 20002).unwrap();
    assert_eq!(out.read_key_values(), vec![kv("x", "9000..14001=5")]);
}

#[test]
fn reduce_and_aggregate_merge_sessions_oldest_first() {
    let mut b = StreamsBuilder::new();
    let words = b.stream::<String, String>("words", Serdes::string(), Serdes::string());
    words
        .clone()
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(sessions(5000, 10000))
        .reduce(|a, b| format!("{a}{b}"), Materialized::named("reduced"))
        .to_stream()
        .map(describe)
        .to("reduced-out", Serdes::string(), Serdes::string());
    words
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(sessions(5000, 10000))
        .aggregate(
            || "<".to_string(),
            |_, v, acc| format!("{acc}{v}"),
            |_, a, b| format!("{a}|{b}"),
            Serdes::string(),
            Materialized::named("aggregated"),
        )
        .to_stream()
        .map(describe)
        .to("aggregated-out", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let input = d.input_topic("words", Serdes::string(), Serdes::string());
    let reduced = d.output_topic("reduced-out", Serdes::string(), Serdes::string());
    let aggregated = d.output_topic("aggregated-out", Serdes::string(), Serdes::string());
    input.pipe_input("k".into(), "x".into(), 0).unwrap();
    input.pipe_input("k".into(), "z".into(), 10000).unwrap();
    input.pipe_input("k".into(), "y".into(), 5000).unwrap();
    assert_eq!(
        reduced.read_key_values(),
        vec![kv("k", "0..0=x"), kv("k", "10000..10000=z"), kv("k", "0..10000=xzy")]
    );
    // init, merged with each session oldest first, then the new value.
    assert_eq!(
        aggregated.read_key_values(),
        vec![
            kv("k", "0..0=<x"),
            kv("k", "10000..10000=<z"),
            kv("k", "0..10000=<|<x|<zy")
        ]
    );
}
