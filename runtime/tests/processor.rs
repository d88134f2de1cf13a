//! `KStream::process` with user processors: stores, punctuation, dead
//! letters, and record metadata.

use std::ops::Bound;
use std::time::Duration;

use weir_runtime::testing::{TestDriverConfig, TopologyTestDriver};
use weir_topology::prelude::*;
use weir_topology::store::StoreToken;

/// Counts records per key in the declared store "counts" and forwards the
/// running count.
struct Counter {
    store: Option<KeyValueStoreHandle<String, u64>>,
}

impl Processor<String, String> for Counter {
    type KeyOut = String;
    type ValueOut = u64;

    fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), TopologyError> {
        self.store = Some(KeyValueStoreHandle::new(
            ctx,
            "counts",
            Serdes::string(),
            Serdes::u64(),
        )?);
        Ok(())
    }

    fn process(&mut self, ctx: &mut ProcessorApi<'_, String, u64>, key: String, _value: String) {
        let Some(store) = &self.store else { return };
        let updated = store.get(&key).and_then(|n| {
            let n = n.unwrap_or(0) + 1;
            store.put(&key, &n).map(|()| n)
        });
        match updated {
            Ok(n) => ctx.forward(key, n),
            Err(e) => ctx.fail(e),
        }
    }
}

#[test]
fn a_counting_processor_keeps_its_counts_in_a_declared_store() {
    let mut b = StreamsBuilder::new();
    b.add_key_value_store("counts");
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .process(|| Counter { store: None }, &["counts"])
        .to("out", Serdes::string(), Serdes::u64());
    let t = b.build().unwrap();
    assert!(
        t.describe("app")
            .contains("KSTREAM-PROCESSOR-0000000001 (stores: [counts])"),
        "{}",
        t.describe("app")
    );
    let d = TopologyTestDriver::new(t, TestDriverConfig::default()).unwrap();
    let input = d.input_topic("in", Serdes::string(), Serdes::string());
    let out = d.output_topic("out", Serdes::string(), Serdes::u64());
    for k in ["a", "b", "a"] {
        input.pipe_input(k.into(), "".into(), 1).unwrap();
    }
    assert_eq!(
        out.read_key_values(),
        vec![("a".to_string(), 1), ("b".to_string(), 1), ("a".to_string(), 2)]
    );
    let store = d.key_value_store("counts", Serdes::string(), Serdes::u64()).unwrap();
    assert_eq!(store.all(), vec![("a".to_string(), 2), ("b".to_string(), 1)]);
    // The store has no owning DSL node; the task flushes it into its
    // changelog all the same.
    assert_eq!(d.changelog("counts").len(), 3);
}

/// Re-keys each record to its value: the output may need repartitioning.
struct ByValue;

impl Processor<String, String> for ByValue {
    type KeyOut = String;
    type ValueOut = String;
    fn process(&mut self, ctx: &mut ProcessorApi<'_, String, String>, key: String, value: String) {
        ctx.forward(value, key)
    }
}

#[test]
fn grouping_after_process_repartitions() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .process(|| ByValue, &[])
        .group_by_key(Serdes::string(), Serdes::string())
        .count(Materialized::named("by-value"))
        .to_stream()
        .to("out", Serdes::string(), Serdes::u64());
    let t = b.build().unwrap();
    assert_eq!(t.subtopologies().len(), 2);
    let d = TopologyTestDriver::new(t, TestDriverConfig::with_application_id("app")).unwrap();
    let input = d.input_topic("in", Serdes::string(), Serdes::string());
    input.pipe_input("1".into(), "x".into(), 1).unwrap();
    input.pipe_input("2".into(), "x".into(), 2).unwrap();
    assert_eq!(
        d.output_topic("out", Serdes::string(), Serdes::u64()).read_key_values(),
        vec![("x".to_string(), 1), ("x".to_string(), 2)]
    );
    assert_eq!(d.topic_records("app-by-value-repartition").len(), 2);
}

/// Reports each punctuation as ("stream" | "wall", time).
struct Ticker;

impl Processor<String, String> for Ticker {
    type KeyOut = String;
    type ValueOut = i64;
    fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), TopologyError> {
        ctx.schedule(10_000, PunctuationType::StreamTime);
        ctx.schedule(60_000, PunctuationType::WallClockTime);
        Ok(())
    }
    fn process(&mut self, _ctx: &mut ProcessorApi<'_, String, i64>, _key: String, _value: String) {}
    fn punctuate(&mut self, ctx: &mut ProcessorApi<'_, String, i64>, kind: PunctuationType, time: i64) {
        let name = match kind {
            PunctuationType::StreamTime => "stream",
            PunctuationType::WallClockTime => "wall",
        };
        ctx.forward(name.to_string(), time)
    }
}

#[test]
fn stream_time_and_wall_clock_punctuation_fire_at_their_deadlines() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .process(|| Ticker, &[])
        .to("ticks", Serdes::string(), Serdes::i64());
    let config = TestDriverConfig {
        initial_wall_clock_ms: 1_000,
        ..Default::default()
    };
    let d = TopologyTestDriver::new(b.build().unwrap(), config).unwrap();
    let input = d.input_topic("in", Serdes::string(), Serdes::string());
    let out = d.output_topic("ticks", Serdes::string(), Serdes::i64());
    let read = || {
        out.read_records()
            .into_iter()
            .map(|r| (r.key, r.value, r.timestamp))
            .collect::<Vec<_>>()
    };
    let tick = |k: &str, t: i64| (k.to_string(), t, t);

    // Stream time first seen at 100: the first deadline is 10 100. The
    // wall clock first seen at 1 000: its first deadline is 61 000.
    input.pipe_input("x".into(), "".into(), 100).unwrap();
    input.pipe_input("x".into(), "".into(), 5_000).unwrap();
    input.pipe_input("x".into(), "".into(), 10_099).unwrap();
    assert!(read().is_empty());
    input.pipe_input("x".into(), "".into(), 10_100).unwrap();
    assert_eq!(read(), vec![tick("stream", 10_100)]);
    // An older record does not move stream time.
    input.pipe_input("x".into(), "".into(), 3_000).unwrap();
    input.pipe_input("x".into(), "".into(), 20_099).unwrap();
    assert!(read().is_empty());
    // A jump fires once, and the next deadline is 10 s after it.
    input.pipe_input("x".into(), "".into(), 45_000).unwrap();
    assert_eq!(read(), vec![tick("stream", 45_000)]);
    input.pipe_input("x".into(), "".into(), 54_999).unwrap();
    assert!(read().is_empty());

    // The wall clock, with no records at all.
    d.advance_wall_clock(Duration::from_millis(59_999)).unwrap();
    assert!(read().is_empty());
    d.advance_wall_clock(Duration::from_millis(1)).unwrap();
    assert_eq!(read(), vec![tick("wall", 61_000)]);
    d.advance_wall_clock(Duration::from_secs(30)).unwrap();
    assert!(read().is_empty());
    d.advance_wall_clock(Duration::from_secs(30)).unwrap();
    assert_eq!(read(), vec![tick("wall", 121_000)]);
    // Wall-clock time does not move stream time.
    input.pipe_input("x".into(), "".into(), 55_000).unwrap();
    assert_eq!(read(), vec![tick("stream", 55_000)]);
}

/// Forwards numbers, rejects the rest to the dead-letter topic, and stamps
/// its output with the record's metadata.
struct Parser;

impl Processor<String, String> for Parser {
    type KeyOut = String;
    type ValueOut = String;
    fn process(&mut self, ctx: &mut ProcessorApi<'_, String, String>, key: String, value: String) {
        match value.parse::<i64>() {
            Ok(n) => {
                let meta = format!(
                    "{n} app={} partition={} offset={} ts={} stream_time={}",
                    ctx.application_id(),
                    ctx.partition(),
                    ctx.offset(),
                    ctx.timestamp(),
                    ctx.stream_time()
                );
                // Output stamped with the number itself.
                ctx.set_timestamp(n);
                ctx.forward(key, meta)
            }
            Err(e) => ctx.dead_letter(format!("not a number: {value:?} ({e})")),
        }
    }
}

#[test]
fn a_processor_sends_bad_records_to_the_dead_letter_topic() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .process(|| Parser, &[])
        .to("out", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::with_application_id("p")).unwrap();
    let input = d.input_topic("in", Serdes::string(), Serdes::string());
    let out = d.output_topic("out", Serdes::string(), Serdes::string());
    input.pipe_input("k".into(), "42".into(), 500).unwrap();
    input.pipe_input("k".into(), "forty-two".into(), 600).unwrap();
    input.pipe_input("k".into(), "7".into(), 400).unwrap();
    let records = out.read_records();
    assert_eq!(
        records
            .iter()
            .map(|r| (r.value.as_str(), r.timestamp))
            .collect::<Vec<_>>(),
        vec![
            ("42 app=p partition=0 offset=0 ts=500 stream_time=500", 42),
            ("7 app=p partition=0 offset=2 ts=400 stream_time=600", 7)
        ]
    );
    let letters = d.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].error,
        "not a number: \"forty-two\" (invalid digit found in string)"
    );
    assert_eq!(letters[0].topic, "in");
    assert_eq!(letters[0].offset, 1);
    assert_eq!(letters[0].value.as_deref(), Some(&b"forty-two"[..]));
}

#[test]
fn an_unknown_store_fails_the_build() {
    let mut b = StreamsBuilder::new();
    b.add_key_value_store("counts");
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .process(|| Counter { store: None }, &["count"])
        .to("out", Serdes::string(), Serdes::u64());
    let err = b.build().unwrap_err().to_string();
    assert!(err.contains("unknown store \"count\""), "{err}");
}

/// Counts records per key through a typed store token: no store name or
/// serde in the processor, no `Option` to unwrap.
struct TypedCounter {
    counts: StoreToken<String, u64>,
}

impl Processor<String, String> for TypedCounter {
    type KeyOut = String;
    type ValueOut = u64;

    fn process(&mut self, ctx: &mut ProcessorApi<'_, String, u64>, key: String, _value: String) {
        let counts = ctx.store(&self.counts);
        let updated = counts.get(&key).and_then(|n| {
            let n = n.unwrap_or(0) + 1;
            counts.put(&key, &n).map(|()| n)
        });
        match updated {
            Ok(n) => ctx.forward(key, n),
            Err(e) => ctx.fail(e),
        }
    }
}

fn typed_counter_topology() -> Topology {
    let mut b = StreamsBuilder::new();
    let counts: StoreToken<String, u64> = b.add_key_value_store_typed("counts", Serdes::string(), Serdes::u64());
    let token = counts.clone();
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .process(move || TypedCounter { counts: token.clone() }, &[counts.name()])
        .to("out", Serdes::string(), Serdes::u64());
    b.build().unwrap()
}

#[test]
fn a_typed_store_token_counts_per_key() {
    let d = TopologyTestDriver::new(typed_counter_topology(), TestDriverConfig::default()).unwrap();
    let input = d.input_topic("in", Serdes::string(), Serdes::string());
    let out = d.output_topic("out", Serdes::string(), Serdes::u64());
    for (k, ts) in [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("a", 5), ("b", 6)] {
        input.pipe_input(k.into(), "".into(), ts).unwrap();
    }
    assert_eq!(
        out.read_records()
            .into_iter()
            .map(|r| (r.key, r.value, r.timestamp))
            .collect::<Vec<_>>(),
        vec![
            ("a".to_string(), 1, 1),
            ("b".to_string(), 1, 2),
            ("a".to_string(), 2, 3),
            ("c".to_string(), 1, 4),
            ("a".to_string(), 3, 5),
            ("b".to_string(), 2, 6),
        ]
    );
    let store = d.key_value_store("counts", Serdes::string(), Serdes::u64()).unwrap();
    assert_eq!(
        store.all(),
        vec![("a".to_string(), 3), ("b".to_string(), 2), ("c".to_string(), 1)]
    );
    assert_eq!(store.get(&"a".to_string()), Some(3));
    assert_eq!(store.get(&"z".to_string()), None);
}

#[test]
fn a_typed_store_is_connected_to_its_processor_and_queryable() {
    let t = typed_counter_topology();
    let described = t.describe("app");
    assert!(
        described.contains("Processor: KSTREAM-PROCESSOR-0000000001 (stores: [counts])"),
        "{described}"
    );
    assert_eq!(t.subtopologies().len(), 1);
    assert_eq!(t.subtopologies()[0].stores, vec!["counts".to_string()]);
    // The serdes given at registration are the store's query codec.
    assert_eq!(t.store_format("counts"), Some(("string", "u64")));
}

/// Opens its typed store once in `init`, and also reads a range of it.
struct InitOpened {
    counts: StoreToken<String, u64>,
    store: Option<KeyValueStoreHandle<String, u64>>,
}

impl Processor<String, String> for InitOpened {
    type KeyOut = String;
    type ValueOut = String;

    fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), TopologyError> {
        self.store = Some(ctx.store(&self.counts)?);
        Ok(())
    }

    fn process(&mut self, ctx: &mut ProcessorApi<'_, String, String>, key: String, value: String) {
        let Some(store) = &self.store else { return };
        let n = value.parse::<u64>().unwrap_or(0);
        if let Err(e) = store.put(&key, &n) {
            return ctx.fail(e);
        }
        // Keys from "b" up to (not including) "d", in key order.
        match store.range(Bound::Included(&"b".to_string()), Bound::Excluded(&"d".to_string())) {
            Ok(entries) => {
                let text = entries
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                ctx.forward(key, text)
            }
            Err(e) => ctx.fail(e),
        }
    }
}

#[test]
fn a_store_opened_in_init_and_range_queries_with_typed_bounds() {
    let mut b = StreamsBuilder::new();
    let counts = b.add_key_value_store_typed("counts", Serdes::string(), Serdes::u64());
    let token = counts.clone();
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .process(
            move || InitOpened {
                counts: token.clone(),
                store: None,
            },
            &[counts.name()],
        )
        .to("out", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let input = d.input_topic("in", Serdes::string(), Serdes::string());
    for (k, v) in [("c", "3"), ("a", "1"), ("d", "4"), ("b", "2")] {
        input.pipe_input(k.into(), v.into(), 1).unwrap();
    }
    assert_eq!(
        d.output_topic("out", Serdes::string(), Serdes::string()).read_values(),
        vec!["c=3", "c=3", "c=3", "b=2,c=3"]
    );
}

#[test]
fn a_typed_store_not_listed_in_process_fails_the_task() {
    let mut b = StreamsBuilder::new();
    let counts = b.add_key_value_store_typed("counts", Serdes::string(), Serdes::u64());
    b.stream::<String, String>("in", Serdes::string(), Serdes::string())
        .process(move || TypedCounter { counts: counts.clone() }, &[])
        .to("out", Serdes::string(), Serdes::u64());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let err = d
        .input_topic("in", Serdes::string(), Serdes::string())
        .pipe_input("a".into(), "".into(), 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("'counts': not connected to this processor"), "{err}");
}
