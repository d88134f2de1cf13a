//! Kafka Streams' join semantics, input by input.
//!
//! Sources, in order of preference where they disagree:
//!
//! 1. apache/kafka `streams/src/test/java/org/apache/kafka/streams/integration/`
//!    `AbstractJoinIntegrationTest.java` (the input sequences `input` and
//!    `inputWithoutOutOfOrderData`), `StreamStreamJoinIntegrationTest.java`
//!    (`testInner`, `testLeft`, `testOuter`: a 10 s window with 24 h grace)
//!    and `StreamTableJoinIntegrationTest.java` (`testInner`, `testLeft`).
//!    They hold the exact output records (key, value, timestamp) after each
//!    input; they are transcribed here one `step` per input.
//! 2. The Apache wiki page "Kafka Streams Join Semantics", section
//!    "Improved Left/Outer Stream-Stream Join (v3.1.x and newer)": the
//!    same sequence followed by 40:E, 60:F, 80:f, 100:G with a window of 10
//!    and a grace period of 5, which shows when unjoined (`X-null`) results
//!    leave. The integration tests never close a window, so this part comes
//!    from the wiki. Where the wiki disagrees with itself (it lists `A-d` at
//!    14 and `D-a` at 15, although 14 - 3 and 15 - 4 exceed its window of
//!    10: its other tables assume "all records belong to a single window"),
//!    the records a window of 10 actually holds are used, as the integration
//!    tests do with a window that holds them.
//!
//! Keys are `Option<u64>` (0 is the integration tests' `ANY_UNIQUE_KEY`;
//! `None` a Kafka null key), values `Option<String>` through
//! `Serdes::optional(Serdes::string())` so that a `null` input is a Kafka
//! null value; the joiner is the tests' `value1 + "-" + value2`, with
//! "null" for a missing side.

use std::time::Duration;

use weir_runtime::testing::{TestDriverConfig, TopologyTestDriver};
use weir_topology::prelude::*;

const LEFT: &str = "inputTopicLeft";
const RIGHT: &str = "inputTopicRight";
const OUT: &str = "outputTopic";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    L,
    R,
}
use Side::{L, R};

/// One input record: (topic, key, value, timestamp).
type Input = (Side, Option<u64>, Option<&'static str>, i64);
/// One output record: (key, value, timestamp).
type Out = (Option<u64>, &'static str, i64);

const K: Option<u64> = Some(0);

fn key_serde() -> Serde<Option<u64>> {
    Serdes::optional(Serdes::u64())
}
fn value_serde() -> Serde<Option<String>> {
    Serdes::optional(Serdes::string())
}

/// `value1 + "-" + value2` with Java's rendering of a missing side.
fn show(v: Option<&String>) -> &str {
    v.map_or("null", |s| s.as_str())
}

/// `AbstractJoinIntegrationTest.inputWithoutOutOfOrderData`.
const IN_ORDER: [Input; 17] = [
    (L, K, None, 1),
    (R, K, None, 2),
    (L, K, Some("A"), 3),
    (R, K, Some("a"), 4),
    (L, K, Some("B"), 5),
    (R, K, Some("b"), 6),
    (L, K, None, 7),
    (R, K, None, 8),
    (L, K, Some("C"), 9),
    (R, K, Some("c"), 10),
    (R, K, None, 11),
    (L, K, None, 12),
    (R, K, None, 13),
    (R, K, Some("d"), 14),
    (L, K, Some("D"), 15),
    (L, None, Some("E"), 16),
    (R, None, Some("e"), 17),
];

/// `AbstractJoinIntegrationTest.input` (with out-of-order records).
const WITH_OUT_OF_ORDER: [Input; 23] = [
    (L, K, None, 1),
    (R, K, None, 2),
    (L, K, Some("A"), 3),
    (R, K, Some("a"), 4),
    (L, K, Some("B"), 5),
    (R, K, Some("b"), 6),
    (L, K, None, 7),
    (R, K, None, 8),
    (L, K, Some("C"), 9),
    (R, K, Some("c"), 10),
    (R, K, None, 11),
    (L, K, None, 12),
    (R, K, None, 13),
    (R, K, Some("d"), 7),
    (L, K, Some("D"), 6),
    (L, K, None, 2),
    (R, K, None, 3),
    (R, K, Some("e"), 14),
    (L, K, Some("E"), 15),
    (L, K, None, 10),
    (R, K, None, 9),
    (L, K, Some("F"), 4),
    (R, K, Some("f"), 3),
];

/// The outputs after each input of [`IN_ORDER`] that every stream–stream
/// join kind shares (`StreamStreamJoinIntegrationTest`, inputs 1 to 15).
fn stream_stream_common() -> Vec<Vec<Out>> {
    vec![
        vec![],
        vec![],
        vec![],
        vec![(K, "A-a", 4)],
        vec![(K, "B-a", 5)],
        vec![(K, "A-b", 6), (K, "B-b", 6)],
        vec![],
        vec![],
        vec![(K, "C-a", 9), (K, "C-b", 9)],
        vec![(K, "A-c", 10), (K, "B-c", 10), (K, "C-c", 10)],
        vec![],
        vec![],
        vec![],
        vec![(K, "A-d", 14), (K, "B-d", 14), (K, "C-d", 14)],
        vec![(K, "D-a", 15), (K, "D-b", 15), (K, "D-c", 15), (K, "D-d", 15)],
    ]
}

/// Pipe `inputs` one at a time and compare the join's output after each
/// with `expected[i]`, record by record.
fn run(d: &TopologyTestDriver, inputs: &[Input], expected: &[Vec<Out>]) {
    assert_eq!(inputs.len(), expected.len(), "one expectation per input");
    let left = d.input_topic(LEFT, key_serde(), value_serde());
    let right = d.input_topic(RIGHT, key_serde(), value_serde());
    let out = d.output_topic(OUT, key_serde(), Serdes::string());
    for (i, ((side, k, v, ts), want)) in inputs.iter().zip(expected).enumerate() {
        let topic = if *side == L { &left } else { &right };
        topic.pipe_input(*k, v.map(str::to_string), *ts).unwrap();
        let got: Vec<(Option<u64>, String, i64)> = out
            .read_records()
            .into_iter()
            .map(|r| (r.key, r.value, r.timestamp))
            .collect();
        let want: Vec<(Option<u64>, String, i64)> = want.iter().map(|(k, v, t)| (*k, v.to_string(), *t)).collect();
        assert_eq!(got, want, "after input {} ({side:?} {k:?}:{v:?} at {ts})", i + 1);
    }
    assert!(d.dead_letters().is_empty(), "{:?}", d.dead_letters());
}

#[derive(Clone, Copy)]
enum Kind {
    Inner,
    Left,
    Outer,
}

fn stream_stream(kind: Kind, windows: JoinWindows) -> TopologyTestDriver {
    let mut b = StreamsBuilder::new();
    let left = b.stream::<Option<u64>, Option<String>>(LEFT, key_serde(), value_serde());
    let right = b.stream::<Option<u64>, Option<String>>(RIGHT, key_serde(), value_serde());
    let serdes = StreamJoined::with(key_serde(), value_serde(), value_serde());
    let joined = match kind {
        Kind::Inner => left.join_stream(
            right,
            |_, l, r| format!("{}-{}", show(l.as_ref()), show(r.as_ref())),
            windows,
            serdes,
        ),
        Kind::Left => left.left_join_stream(
            right,
            |_, l, r| format!("{}-{}", show(l.as_ref()), show(r.and_then(Option::as_ref))),
            windows,
            serdes,
        ),
        Kind::Outer => left.outer_join_stream(
            right,
            |_, l, r| {
                format!(
                    "{}-{}",
                    show(l.and_then(Option::as_ref)),
                    show(r.and_then(Option::as_ref))
                )
            },
            windows,
            serdes,
        ),
    };
    joined.to(OUT, key_serde(), Serdes::string());
    TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap()
}

/// The integration tests' windows: `ofTimeDifferenceAndGrace(10 s, 24 h)`.
fn integration_windows() -> JoinWindows {
    JoinWindows::of(Duration::from_secs(10))
        .unwrap()
        .grace(Duration::from_secs(24 * 3600))
        .unwrap()
}

/// The wiki's 3.1+ table: a window of 10 and a grace period of 5.
fn wiki_windows() -> JoinWindows {
    JoinWindows::of(Duration::from_millis(10))
        .unwrap()
        .grace(Duration::from_millis(5))
        .unwrap()
}

#[test]
fn stream_stream_inner_join_follows_the_integration_test() {
    // StreamStreamJoinIntegrationTest.testInner: 16 records; null values
    // and null keys join nothing. (weir used to decode a null value as ""
    // and emit 56 records here.)
    let d = stream_stream(Kind::Inner, integration_windows());
    let mut expected = stream_stream_common();
    expected.push(vec![]); // null key: skipped
    expected.push(vec![]);
    run(&d, &IN_ORDER, &expected);
    assert_eq!(expected.iter().map(Vec::len).sum::<usize>(), 16);
    // 7 null values and 2 null keys.
    assert_eq!(d.null_records_skipped(), 9);
}

#[test]
fn stream_stream_left_join_follows_the_integration_test() {
    // testLeft: no "A-null" while the window is open (3.1+: no spurious
    // results); the null-keyed left record leaves at once as "E-null"
    // (Kafka Streams 3.7+, KIP-962); the null-keyed right record is
    // skipped.
    let d = stream_stream(Kind::Left, integration_windows());
    let mut expected = stream_stream_common();
    expected.push(vec![(None, "E-null", 16)]);
    expected.push(vec![]);
    run(&d, &IN_ORDER, &expected);
    assert_eq!(d.null_records_skipped(), 8);
}

#[test]
fn stream_stream_outer_join_follows_the_integration_test() {
    // testOuter: as the left join, and the null-keyed right record leaves
    // at once as "null-e".
    let d = stream_stream(Kind::Outer, integration_windows());
    let mut expected = stream_stream_common();
    expected.push(vec![(None, "E-null", 16)]);
    expected.push(vec![(None, "null-e", 17)]);
    run(&d, &IN_ORDER, &expected);
    assert_eq!(d.null_records_skipped(), 7);
}

/// The wiki's 3.1+ input: [`IN_ORDER`]'s first 15 records, then records
/// far enough apart to close windows.
fn wiki_inputs() -> Vec<Input> {
    let mut inputs = IN_ORDER[..15].to_vec();
    inputs.extend([
        (L, K, Some("E"), 40),
        (L, K, Some("F"), 60),
        (R, K, Some("f"), 80),
        (L, K, Some("G"), 100),
    ]);
    inputs
}

/// The outputs of the wiki's first 15 rows with a window of 10: as the
/// integration tests, without A-d (14 - 3 > 10) and D-a (15 - 4 > 10).
fn wiki_common() -> Vec<Vec<Out>> {
    let mut e = stream_stream_common();
    e[13] = vec![(K, "B-d", 14), (K, "C-d", 14)];
    e[14] = vec![(K, "D-b", 15), (K, "D-c", 15), (K, "D-d", 15)];
    e
}

#[test]
fn stream_stream_inner_join_on_the_wiki_table_emits_nothing_unjoined() {
    let d = stream_stream(Kind::Inner, wiki_windows());
    let mut expected = wiki_common();
    expected.extend([vec![], vec![], vec![], vec![]]);
    run(&d, &wiki_inputs(), &expected);
}

#[test]
fn stream_stream_left_join_emits_unjoined_records_when_their_window_closes() {
    // Wiki, 3.1+ leftJoin column: E (40) leaves when stream time passes
    // 40 + 10 + 5, with F (60); F when f (80) passes 75. Right records
    // never leave unjoined. Every A..D record joined: none leaves as
    // "X-null", then or later.
    let d = stream_stream(Kind::Left, wiki_windows());
    let mut expected = wiki_common();
    expected.extend([vec![], vec![(K, "E-null", 40)], vec![(K, "F-null", 60)], vec![]]);
    run(&d, &wiki_inputs(), &expected);
}

#[test]
fn stream_stream_outer_join_emits_unjoined_records_of_both_sides_when_their_window_closes() {
    // Wiki, 3.1+ outerJoin column: as the left join, and f (80) leaves as
    // "null-f" when G (100) passes 80 + 10 + 5.
    let d = stream_stream(Kind::Outer, wiki_windows());
    let mut expected = wiki_common();
    expected.extend([
        vec![],
        vec![(K, "E-null", 40)],
        vec![(K, "F-null", 60)],
        vec![(K, "null-f", 80)],
    ]);
    run(&d, &wiki_inputs(), &expected);
}

#[test]
fn an_unjoined_record_survives_a_restart_and_leaves_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = || TestDriverConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..TestDriverConfig::with_application_id("outer-restart")
    };
    let topology = || {
        let mut b = StreamsBuilder::new();
        let left = b.stream::<Option<u64>, Option<String>>(LEFT, key_serde(), value_serde());
        let right = b.stream::<Option<u64>, Option<String>>(RIGHT, key_serde(), value_serde());
        left.left_join_stream(
            right,
            |_, l, r| format!("{}-{}", show(l.as_ref()), show(r.and_then(Option::as_ref))),
            wiki_windows(),
            StreamJoined::with(key_serde(), value_serde(), value_serde()).with_store_name("lr"),
        )
        .to(OUT, key_serde(), Serdes::string());
        b.build().unwrap()
    };
    {
        let d = TopologyTestDriver::new(topology(), config()).unwrap();
        let left = d.input_topic(LEFT, key_serde(), value_serde());
        left.pipe_input(K, Some("E".into()), 40).unwrap();
        assert!(d.topic_records(OUT).is_empty());
        // The waiting record is in the logged outer store.
        assert_eq!(d.changelog("lr-outer-join-store").len(), 1);
        d.flush_state_to_disk().unwrap();
    }
    let d = TopologyTestDriver::new(topology(), config()).unwrap();
    let left = d.input_topic(LEFT, key_serde(), value_serde());
    let out = d.output_topic(OUT, key_serde(), Serdes::string());
    left.pipe_input(K, Some("F".into()), 60).unwrap();
    let got: Vec<_> = out
        .read_records()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect();
    assert_eq!(got, vec![(K, "E-null".to_string(), 40)]);
    // Emitted, then deleted: it does not leave a second time.
    left.pipe_input(K, Some("G".into()), 200).unwrap();
    let got: Vec<_> = out
        .read_records()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect();
    assert_eq!(got, vec![(K, "F-null".to_string(), 60)]);
    let tombstones = d
        .changelog("lr-outer-join-store")
        .into_iter()
        .filter(|r| r.value.is_none())
        .count();
    assert_eq!(tombstones, 2);
}

fn stream_table(left_join: bool) -> TopologyTestDriver {
    let mut b = StreamsBuilder::new();
    let table =
        b.table::<Option<u64>, Option<String>>(RIGHT, key_serde(), value_serde(), Materialized::named("table-store"));
    let stream = b.stream::<Option<u64>, Option<String>>(LEFT, key_serde(), value_serde());
    let joined = if left_join {
        stream.left_join(&table, |_, l, r: Option<Option<String>>| {
            format!("{}-{}", show(l.as_ref()), show(r.as_ref().and_then(Option::as_ref)))
        })
    } else {
        stream.join(&table, |_, l, r| format!("{}-{}", show(l.as_ref()), show(r.as_ref())))
    };
    joined.to(OUT, key_serde(), Serdes::string());
    TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap()
}

/// Expectations indexed by input number (1-based), empty elsewhere.
fn sparse(n: usize, at: &[(usize, Out)]) -> Vec<Vec<Out>> {
    let mut e = vec![vec![]; n];
    for (i, o) in at {
        e[i - 1].push(*o);
    }
    e
}

#[test]
fn stream_table_inner_join_follows_the_integration_test() {
    // StreamTableJoinIntegrationTest.testInner: a table update alone emits
    // nothing, a null table value deletes, a null stream value is skipped,
    // and out-of-order records look up the table as it is.
    let d = stream_table(false);
    let expected = sparse(23, &[(5, (K, "B-a", 5)), (15, (K, "D-d", 6)), (19, (K, "E-e", 15))]);
    run(&d, &WITH_OUT_OF_ORDER, &expected);
    assert_eq!(d.null_records_skipped(), 5);
}

#[test]
fn stream_table_left_join_follows_the_integration_test() {
    // StreamTableJoinIntegrationTest.testLeft.
    let d = stream_table(true);
    let expected = sparse(
        23,
        &[
            (3, (K, "A-null", 3)),
            (5, (K, "B-a", 5)),
            (9, (K, "C-null", 9)),
            (15, (K, "D-d", 6)),
            (19, (K, "E-e", 15)),
            (22, (K, "F-null", 4)),
        ],
    );
    run(&d, &WITH_OUT_OF_ORDER, &expected);
    assert_eq!(d.null_records_skipped(), 5);
}

#[test]
fn a_null_value_read_by_a_non_optional_serde_is_dead_lettered() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .to("out", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    d.pipe_raw("in", Some(b"k"), None, 1).unwrap();
    d.pipe_raw("in", None, Some(b"v"), 2).unwrap();
    // The empty string is a value, not a null.
    d.pipe_raw("in", Some(b"k"), Some(b""), 3).unwrap();
    let dl = d.dead_letters();
    assert_eq!(
        dl.iter().map(|r| r.error.as_str()).collect::<Vec<_>>(),
        vec![
            "value deserialization failed (string): the record has no value, and the string serde cannot \
             represent null: use Serdes::optional(..) if values may be absent",
            "key deserialization failed (string): the record has no key, and the string serde cannot represent \
             null: use Serdes::optional(..) if keys may be absent",
        ]
    );
    assert_eq!((dl[0].offset, dl[0].value.clone()), (0, None));
    assert_eq!((dl[1].offset, dl[1].key.clone()), (1, None));
    // Processing went on.
    let out = d.output_topic("out", Serdes::string(), Serdes::string());
    assert_eq!(out.read_key_values(), vec![("k".to_string(), String::new())]);
}

#[test]
fn optional_none_is_written_as_a_kafka_null() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .map_values(|_, v| (v != "drop").then_some(v))
        .to("out", Serdes::string(), Serdes::optional(Serdes::string()));
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let input = d.input_topic("in", Serdes::string(), Serdes::string());
    input.pipe_input("a".into(), "drop".into(), 1).unwrap();
    input.pipe_input("b".into(), String::new(), 2).unwrap();
    let raw = d.topic_records("out");
    assert_eq!(
        raw.iter().map(|r| (r.key.clone(), r.value.clone())).collect::<Vec<_>>(),
        vec![(Some(b"a".to_vec()), None), (Some(b"b".to_vec()), Some(Vec::new()))]
    );
    let out = d.output_topic("out", Serdes::string(), Serdes::optional(Serdes::string()));
    assert_eq!(
        out.read_key_values(),
        vec![("a".to_string(), None), ("b".to_string(), Some(String::new()))]
    );
}
