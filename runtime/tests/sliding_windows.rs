//! Sliding windows through the test driver. The inputs and expected
//! outputs of the first tests are transcribed from Apache Kafka's
//! `KStreamSlidingWindowAggregateTest` (emit-on-update variants): weir's
//! sliding aggregation must produce the same windows, aggregates and
//! timestamps. Kafka compares those tests as a map from window start to the
//! set of (value, timestamp) forwarded for it; each test here asserts that
//! map (Kafka's expectation as written there) and, in addition, the exact
//! sequence of records weir produces.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use weir_runtime::testing::{TestDriverConfig, TestRecord, TopologyTestDriver};
use weir_topology::prelude::*;
use weir_topology::SlidingWindows;

fn sliding(diff_ms: u64, grace_ms: u64) -> SlidingWindows {
    SlidingWindows::of_time_difference_and_grace(Duration::from_millis(diff_ms), Duration::from_millis(grace_ms))
        .unwrap()
}

/// `key [start,end] value`: a windowed record as one comparable string.
fn describe<V: std::fmt::Display>(wk: Windowed<String>, v: V) -> (String, String) {
    let text = format!("{} [{},{}] {v}", wk.key, wk.window.start, wk.window.end);
    (wk.key, text)
}

/// Kafka's `MockInitializer.STRING_INIT` and `MockAggregator.TOSTRING_ADDER`:
/// "0", then "agg+value".
fn string_aggregate(windows: SlidingWindows) -> Topology {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("topic", Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(windows)
        .aggregate(
            || "0".to_string(),
            |_, v, agg| format!("{agg}+{v}"),
            Serdes::string(),
            Materialized::named("store-name"),
        )
        .to_stream()
        .map(describe)
        .to("out", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

fn driver(t: Topology) -> TopologyTestDriver {
    TopologyTestDriver::new(t, TestDriverConfig::default()).unwrap()
}

/// (description, timestamp) of every record read.
fn read(d: &TopologyTestDriver) -> Vec<(String, i64)> {
    d.output_topic("out", Serdes::string(), Serdes::string())
        .read_records()
        .into_iter()
        .map(|r: TestRecord<String, String>| (r.value, r.timestamp))
        .collect()
}

/// Kafka's `gatherOutput`: window start -> {(value, timestamp)}.
fn gather(records: &[(String, i64)]) -> BTreeMap<i64, BTreeSet<(String, i64)>> {
    let mut m: BTreeMap<i64, BTreeSet<(String, i64)>> = BTreeMap::new();
    for (text, ts) in records {
        let mut parts = text.split(' ');
        let _key = parts.next().unwrap();
        let window = parts.next().unwrap();
        let value = parts.next().unwrap().to_string();
        let start: i64 = window
            .trim_start_matches('[')
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        m.entry(start).or_default().insert((value, *ts));
    }
    m
}

fn expected_map(entries: &[(i64, &[(&str, i64)])]) -> BTreeMap<i64, BTreeSet<(String, i64)>> {
    entries
        .iter()
        .map(|(start, set)| (*start, set.iter().map(|(v, t)| (v.to_string(), *t)).collect()))
        .collect()
}

fn owned(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(s, t)| (s.to_string(), *t)).collect()
}

#[test]
fn kafka_aggregate_small_input() {
    let d = driver(string_aggregate(sliding(10, 5)));
    let input = d.input_topic("topic", Serdes::string(), Serdes::string());
    let mut all = Vec::new();
    let mut per_record = Vec::new();
    for (v, ts) in [
        ("1", 10),
        ("2", 10),
        ("3", 14),
        ("4", 15),
        ("5", 20),
        ("6", 22),
        ("7", 30),
    ] {
        input.pipe_input("A".into(), v.into(), ts).unwrap();
        let out = read(&d);
        all.extend(out.clone());
        per_record.push(out);
    }
    // Kafka's expectation (testAggregateSmallInput, ON_WINDOW_UPDATE).
    assert_eq!(
        gather(&all),
        expected_map(&[
            (0, &[("0+1", 10), ("0+1+2", 10)]),
            (4, &[("0+1+2+3", 14)]),
            (5, &[("0+1+2+3+4", 15)]),
            (10, &[("0+1+2+3+4+5", 20)]),
            (11, &[("0+3", 14), ("0+3+4", 15), ("0+3+4+5", 20)]),
            (12, &[("0+3+4+5+6", 22)]),
            (15, &[("0+4", 15), ("0+4+5", 20), ("0+4+5+6", 22)]),
            (16, &[("0+5", 20), ("0+5+6", 22)]),
            (20, &[("0+5+6+7", 30)]),
            (21, &[("0+6", 22), ("0+6+7", 30)]),
            (23, &[("0+7", 30)]),
        ])
    );
    // The exact records per input record (a commit after each, windows in
    // store order: by start).
    assert_eq!(
        per_record,
        vec![
            owned(&[("A [0,10] 0+1", 10)]),
            owned(&[("A [0,10] 0+1+2", 10)]),
            owned(&[("A [4,14] 0+1+2+3", 14), ("A [11,21] 0+3", 14)]),
            owned(&[
                ("A [5,15] 0+1+2+3+4", 15),
                ("A [11,21] 0+3+4", 15),
                ("A [15,25] 0+4", 15)
            ]),
            owned(&[
                ("A [10,20] 0+1+2+3+4+5", 20),
                ("A [11,21] 0+3+4+5", 20),
                ("A [15,25] 0+4+5", 20),
                ("A [16,26] 0+5", 20),
            ]),
            owned(&[
                ("A [12,22] 0+3+4+5+6", 22),
                ("A [15,25] 0+4+5+6", 22),
                ("A [16,26] 0+5+6", 22),
                ("A [21,31] 0+6", 22),
            ]),
            owned(&[
                ("A [20,30] 0+5+6+7", 30),
                ("A [21,31] 0+6+7", 30),
                ("A [23,33] 0+7", 30)
            ]),
        ]
    );
    assert_eq!(d.late_records_dropped(), 0);
}

#[test]
fn kafka_reduce_small_input() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("topic", Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(sliding(10, 5))
        .reduce(|a, b| format!("{a}+{b}"), Materialized::named("store-name"))
        .to_stream()
        .map(describe)
        .to("out", Serdes::string(), Serdes::string());
    let d = driver(b.build().unwrap());
    let input = d.input_topic("topic", Serdes::string(), Serdes::string());
    for (v, ts) in [("1", 10), ("2", 14), ("3", 15), ("4", 22), ("5", 26), ("6", 30)] {
        input.pipe_input("A".into(), v.into(), ts).unwrap();
    }
    let all = read(&d);
    // Kafka's expectation (testReduceSmallInput, ON_WINDOW_UPDATE).
    assert_eq!(
        gather(&all),
        expected_map(&[
            (0, &[("1", 10)]),
            (4, &[("1+2", 14)]),
            (5, &[("1+2+3", 15)]),
            (11, &[("2", 14), ("2+3", 15)]),
            (12, &[("2+3+4", 22)]),
            (15, &[("3", 15), ("3+4", 22)]),
            (16, &[("4", 22), ("4+5", 26)]),
            (20, &[("4+5+6", 30)]),
            (23, &[("5", 26), ("5+6", 30)]),
            (27, &[("6", 30)]),
        ])
    );
    assert_eq!(
        all,
        owned(&[
            ("A [0,10] 1", 10),
            ("A [4,14] 1+2", 14),
            ("A [11,21] 2", 14),
            ("A [5,15] 1+2+3", 15),
            ("A [11,21] 2+3", 15),
            ("A [15,25] 3", 15),
            ("A [12,22] 2+3+4", 22),
            ("A [15,25] 3+4", 22),
            ("A [16,26] 4", 22),
            ("A [16,26] 4+5", 26),
            ("A [23,33] 5", 26),
            ("A [20,30] 4+5+6", 30),
            ("A [23,33] 5+6", 30),
            ("A [27,37] 6", 30),
        ])
    );
}

/// Records before the time difference (0 <= t < 50) share the window
/// [0, 50], as in Kafka (testEarlyRecordsSmallInput, ON_WINDOW_UPDATE);
/// out of order too.
#[test]
fn kafka_early_records_small_input() {
    let d = driver(string_aggregate(sliding(50, 0)));
    let input = d.input_topic("topic", Serdes::string(), Serdes::string());
    for (v, ts) in [("1", 0), ("2", 5), ("3", 6), ("4", 3), ("5", 13), ("6", 10), ("7", 70)] {
        input.pipe_input("A".into(), v.into(), ts).unwrap();
    }
    let all = read(&d);
    assert_eq!(
        gather(&all),
        expected_map(&[
            (
                0,
                &[
                    ("0+1", 0),
                    ("0+1+2", 5),
                    ("0+1+2+3", 6),
                    ("0+1+2+3+4", 6),
                    ("0+1+2+3+4+5", 13),
                    ("0+1+2+3+4+5+6", 13),
                ],
            ),
            (
                1,
                &[
                    ("0+2", 5),
                    ("0+2+3", 6),
                    ("0+2+3+4", 6),
                    ("0+2+3+4+5", 13),
                    ("0+2+3+4+5+6", 13),
                ],
            ),
            (4, &[("0+2+3", 6), ("0+2+3+5", 13), ("0+2+3+5+6", 13)]),
            (6, &[("0+3", 6), ("0+3+5", 13), ("0+3+5+6", 13)]),
            (7, &[("0+5", 13), ("0+5+6", 13)]),
            (11, &[("0+5", 13)]),
            (20, &[("0+7", 70)]),
        ])
    );
    assert_eq!(
        all,
        owned(&[
            ("A [0,50] 0+1", 0),
            ("A [0,50] 0+1+2", 5),
            ("A [1,51] 0+2", 5),
            ("A [0,50] 0+1+2+3", 6),
            ("A [1,51] 0+2+3", 6),
            ("A [6,56] 0+3", 6),
            ("A [0,50] 0+1+2+3+4", 6),
            ("A [1,51] 0+2+3+4", 6),
            ("A [4,54] 0+2+3", 6),
            ("A [0,50] 0+1+2+3+4+5", 13),
            ("A [1,51] 0+2+3+4+5", 13),
            ("A [4,54] 0+2+3+5", 13),
            ("A [6,56] 0+3+5", 13),
            ("A [7,57] 0+5", 13),
            ("A [0,50] 0+1+2+3+4+5+6", 13),
            ("A [1,51] 0+2+3+4+5+6", 13),
            ("A [4,54] 0+2+3+5+6", 13),
            ("A [6,56] 0+3+5+6", 13),
            ("A [7,57] 0+5+6", 13),
            ("A [11,61] 0+5", 13),
            ("A [20,70] 0+7", 70),
        ])
    );
    assert_eq!(d.late_records_dropped(), 0);
}

/// Kafka's testAggregateLargeInput (ON_WINDOW_UPDATE, grace 50): four keys
/// with out-of-order records; Kafka sorts the output by key, then window
/// start (a stable sort: updates of one window stay in order).
#[test]
fn kafka_aggregate_large_input_with_out_of_order_records() {
    let d = driver(string_aggregate(sliding(10, 50)));
    let input = d.input_topic("topic", Serdes::string(), Serdes::string());
    let records: &[(&str, &str, i64)] = &[
        ("A", "1", 10),
        ("A", "2", 20),
        ("A", "3", 22),
        ("A", "4", 15),
        ("B", "1", 12),
        ("B", "2", 13),
        ("B", "3", 18),
        ("B", "4", 19),
        ("B", "5", 25),
        ("B", "6", 14),
        ("C", "1", 11),
        ("C", "2", 15),
        ("C", "3", 16),
        ("C", "4", 21),
        ("C", "5", 23),
        ("D", "4", 11),
        ("D", "2", 12),
        ("D", "3", 29),
        ("D", "5", 16),
    ];
    for (k, v, ts) in records {
        input.pipe_input(k.to_string(), v.to_string(), *ts).unwrap();
    }
    let mut all = read(&d);
    let start_of = |s: &str| -> (String, i64) {
        let mut p = s.split(' ');
        let k = p.next().unwrap().to_string();
        let start = p
            .next()
            .unwrap()
            .trim_start_matches('[')
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        (k, start)
    };
    all.sort_by_key(|(s, _)| start_of(s));
    let expected = "\
A [0,10] 0+1 10
A [5,15] 0+1+4 15
A [10,20] 0+1+2 20
A [10,20] 0+1+2+4 20
A [11,21] 0+2 20
A [11,21] 0+2+4 20
A [12,22] 0+2+3 22
A [12,22] 0+2+3+4 22
A [16,26] 0+2+3 22
A [21,31] 0+3 22
B [2,12] 0+1 12
B [3,13] 0+1+2 13
B [4,14] 0+1+2+6 14
B [8,18] 0+1+2+3 18
B [8,18] 0+1+2+3+6 18
B [9,19] 0+1+2+3+4 19
B [9,19] 0+1+2+3+4+6 19
B [13,23] 0+2 13
B [13,23] 0+2+3 18
B [13,23] 0+2+3+4 19
B [13,23] 0+2+3+4+6 19
B [14,24] 0+3 18
B [14,24] 0+3+4 19
B [14,24] 0+3+4+6 19
B [15,25] 0+3+4+5 25
B [19,29] 0+4 19
B [19,29] 0+4+5 25
B [20,30] 0+5 25
C [1,11] 0+1 11
C [5,15] 0+1+2 15
C [6,16] 0+1+2+3 16
C [11,21] 0+1+2+3+4 21
C [12,22] 0+2 15
C [12,22] 0+2+3 16
C [12,22] 0+2+3+4 21
C [13,23] 0+2+3+4+5 23
C [16,26] 0+3 16
C [16,26] 0+3+4 21
C [16,26] 0+3+4+5 23
C [17,27] 0+4 21
C [17,27] 0+4+5 23
C [22,32] 0+5 23
D [1,11] 0+4 11
D [2,12] 0+4+2 12
D [6,16] 0+4+2+5 16
D [12,22] 0+2 12
D [12,22] 0+2+5 16
D [13,23] 0+5 16
D [19,29] 0+3 29";
    let expected: Vec<(String, i64)> = expected
        .lines()
        .map(|l| {
            let (text, ts) = l.rsplit_once(' ').unwrap();
            (text.to_string(), ts.parse().unwrap())
        })
        .collect();
    assert_eq!(all, expected);
    assert_eq!(d.late_records_dropped(), 0);
}

/// Late records (Kafka's shouldLogAndMeterWhenSkippingExpiredWindowByGrace,
/// ON_WINDOW_UPDATE): with a difference of 10 and grace 90, at stream time
/// 200 windows ending before 110 are closed. The records at 100..105 would
/// only create their own left windows, which are closed; the one at 15 is
/// behind everything. All seven are dropped and counted; the output topic
/// gets only the three in-time windows.
#[test]
fn kafka_late_records_are_dropped_and_counted() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("topic", Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(sliding(10, 90))
        .aggregate(
            || "0".to_string(),
            |_, v, agg| format!("{agg}+{v}"),
            Serdes::string(),
            Materialized::named("store-name"),
        )
        .to_stream()
        .to("output", Serdes::windowed(Serdes::string()), Serdes::string());
    let d = driver(b.build().unwrap());
    let input = d.input_topic("topic", Serdes::string(), Serdes::string());
    for (v, ts) in [
        ("100", 200),
        ("0", 100),
        ("1", 101),
        ("2", 102),
        ("3", 103),
        ("4", 104),
        ("5", 105),
        ("6", 15),
        ("101", 300),
        ("102", 400),
    ] {
        input.pipe_input("k".into(), v.into(), ts).unwrap();
    }
    assert_eq!(d.late_records_dropped(), 7);
    let out = d.output_topic("output", Serdes::windowed(Serdes::string()), Serdes::string());
    let w = |start, end| Windowed {
        key: "k".to_string(),
        window: Window { start, end },
    };
    assert_eq!(
        out.read_records()
            .into_iter()
            .map(|r| (r.key, r.value, r.timestamp))
            .collect::<Vec<_>>(),
        vec![
            (w(190, 200), "0+100".to_string(), 200),
            (w(290, 300), "0+101".to_string(), 300),
            (w(390, 400), "0+102".to_string(), 400),
        ]
    );
}

/// Out of order within grace, then beyond it: a record that only some of
/// its windows accept is not late (its closed left window is skipped); one
/// that no open window takes is.
#[test]
fn out_of_order_and_late_records_with_count() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("topic", Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(sliding(10, 5))
        .count(Materialized::named("counts"))
        .to_stream()
        .map(describe)
        .to("out", Serdes::string(), Serdes::string());
    let d = driver(b.build().unwrap());
    let input = d.input_topic("topic", Serdes::string(), Serdes::string());
    input.pipe_input("x".into(), "".into(), 100).unwrap();
    assert_eq!(read(&d), owned(&[("x [90,100] 1", 100)]));
    // 12 ms later: more than the difference, so x@100 gets no right window
    // and x@112's left window holds only itself.
    input.pipe_input("x".into(), "".into(), 112).unwrap();
    assert_eq!(read(&d), owned(&[("x [102,112] 1", 112)]));
    // Stream time 112, grace 5: windows ending before 107 are closed. A
    // record at 105 (out of order, in grace) joins [102,112]; it creates
    // x@100's right window [101,111] (the previous record's right window,
    // which now holds a record) and its own right window [106,116] (a copy
    // of [102,112] before the update: x@112 only). Its own left window
    // [95,105] ends before 107: closed, not created.
    input.pipe_input("x".into(), "".into(), 105).unwrap();
    assert_eq!(
        read(&d),
        owned(&[("x [101,111] 1", 105), ("x [102,112] 2", 112), ("x [106,116] 1", 112)])
    );
    assert_eq!(d.late_records_dropped(), 0);
    // A record at 96: every window it could touch ends by 106 < 107: late.
    input.pipe_input("x".into(), "".into(), 96).unwrap();
    assert!(read(&d).is_empty());
    assert_eq!(d.late_records_dropped(), 1);
    // Far behind: dropped without looking at the store.
    input.pipe_input("x".into(), "".into(), 3).unwrap();
    assert_eq!(d.late_records_dropped(), 2);
    assert!(read(&d).is_empty());
    // Another key in grace is fine.
    input.pipe_input("y".into(), "".into(), 107).unwrap();
    assert_eq!(read(&d), owned(&[("y [97,107] 1", 107)]));
}

#[test]
fn a_negative_timestamp_is_dead_lettered() {
    let d = driver(string_aggregate(sliding(10, 5)));
    let input = d.input_topic("topic", Serdes::string(), Serdes::string());
    input.pipe_input("A".into(), "1".into(), -5).unwrap();
    assert!(read(&d).is_empty());
    let dead = d.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].error, "sliding windows need a timestamp >= 0, got -5");
}
