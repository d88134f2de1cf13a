//! The core operators through the test driver: exact outputs.

use std::time::Duration;

use weir_runtime::testing::{TestDriverConfig, TopologyTestDriver};
use weir_topology::prelude::*;

fn word_count() -> Topology {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("lines", Serdes::string(), Serdes::string())
        .flat_map_values(|_, line: String| line.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>())
        .select_key(|_, w| w.clone())
        .group_by_key(Serdes::string(), Serdes::string())
        .count(Materialized::named("word-counts"))
        .to_stream()
        .to("counts", Serdes::string(), Serdes::u64());
    b.build().unwrap()
}

#[test]
fn word_count_repartitions_and_counts_exactly() {
    let t = word_count();
    assert_eq!(t.subtopologies().len(), 2);
    let d = TopologyTestDriver::new(t, TestDriverConfig::with_application_id("wc")).unwrap();
    let input = d.input_topic("lines", Serdes::string(), Serdes::string());
    let out = d.output_topic("counts", Serdes::string(), Serdes::u64());
    input.pipe_input("a".into(), "Hello world".into(), 1).unwrap();
    input.pipe_input("b".into(), "hello".into(), 2).unwrap();
    assert_eq!(
        out.read_key_values(),
        vec![
            ("hello".to_string(), 1),
            ("world".to_string(), 1),
            ("hello".to_string(), 2)
        ]
    );
    let store = d
        .key_value_store("word-counts", Serdes::string(), Serdes::u64())
        .unwrap();
    assert_eq!(store.get(&"hello".to_string()), Some(2));
    assert_eq!(store.all(), vec![("hello".to_string(), 2), ("world".to_string(), 1)]);
    assert_eq!(d.topic_records("wc-word-counts-repartition").len(), 3);
    assert_eq!(d.changelog("word-counts").len(), 3);
}

#[test]
fn tumbling_window_with_suppress_emits_once_per_closed_window_and_drops_late() {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("events", Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(
            TimeWindows::of(Duration::from_secs(2))
                .unwrap()
                .grace(Duration::from_secs(1))
                .unwrap(),
        )
        .count(Materialized::named("counts"))
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .map(|wk, n| (wk.key.clone(), format!("{}..{}={n}", wk.window.start, wk.window.end)))
        .to("final", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let input = d.input_topic("events", Serdes::string(), Serdes::string());
    let out = d.output_topic("final", Serdes::string(), Serdes::string());
    input.pipe_input("x".into(), "".into(), 0).unwrap();
    input.pipe_input("x".into(), "".into(), 1500).unwrap();
    input.pipe_input("y".into(), "".into(), 1999).unwrap();
    // Stream time 2999 < end 2000 + grace 1000: window [0,2000) still open.
    input.pipe_input("x".into(), "".into(), 2999).unwrap();
    assert!(out.read_records().is_empty());
    // In grace: still counted.
    input.pipe_input("x".into(), "".into(), 1000).unwrap();
    input.pipe_input("x".into(), "".into(), 3000).unwrap();
    assert_eq!(
        out.read_key_values(),
        vec![
            ("x".to_string(), "0..2000=3".to_string()),
            ("y".to_string(), "0..2000=1".to_string())
        ]
    );
    // Late: window [0,2000) closed at stream time 3000.
    input.pipe_input("x".into(), "".into(), 500).unwrap();
    assert_eq!(d.late_records_dropped(), 1);
    input.pipe_input("z".into(), "".into(), 5000).unwrap();
    assert_eq!(
        out.read_key_values(),
        vec![("x".to_string(), "2000..4000=2".to_string())]
    );
}

#[test]
fn reading_an_output_topic_consumes_it_whichever_handle_reads() {
    let d = TopologyTestDriver::new(word_count(), TestDriverConfig::default()).unwrap();
    let input = d.input_topic("lines", Serdes::string(), Serdes::string());
    let a = d.output_topic("counts", Serdes::string(), Serdes::u64());
    let b = d.output_topic("counts", Serdes::string(), Serdes::u64());
    input.pipe_input("k".into(), "x".into(), 1).unwrap();
    assert!(!b.is_empty());
    assert_eq!(a.read_key_values(), vec![("x".to_string(), 1)]);
    assert!(a.is_empty());
    assert!(b.is_empty());
    input.pipe_input("k".into(), "x".into(), 2).unwrap();
    assert_eq!(b.read_key_values(), vec![("x".to_string(), 2)]);
    assert!(a.read_key_values().is_empty());
}

#[test]
fn a_driver_on_a_reused_state_directory_goes_on_from_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let topology = || {
        let mut b = StreamsBuilder::new();
        b.stream::<String, String>("words", Serdes::string(), Serdes::string())
            .group_by(|_, w| w.clone(), Serdes::string(), Serdes::string())
            .count(Materialized::named("word-counts"))
            .to_stream()
            .to("counts", Serdes::string(), Serdes::u64());
        b.build().unwrap()
    };
    let config = || TestDriverConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..TestDriverConfig::with_application_id("wc")
    };
    {
        let d = TopologyTestDriver::new(topology(), config()).unwrap();
        let input = d.input_topic("words", Serdes::string(), Serdes::string());
        for _ in 0..3 {
            input.pipe_input("k".into(), "a".into(), 0).unwrap();
        }
        d.flush_state_to_disk().unwrap();
    }
    let d = TopologyTestDriver::new(topology(), config()).unwrap();
    let input = d.input_topic("words", Serdes::string(), Serdes::string());
    for _ in 0..2 {
        input.pipe_input("k".into(), "a".into(), 0).unwrap();
    }
    let out = d.output_topic("counts", Serdes::string(), Serdes::u64());
    assert_eq!(out.read_key_values(), vec![("a".to_string(), 4), ("a".to_string(), 5)]);
    let store = d
        .key_value_store("word-counts", Serdes::string(), Serdes::u64())
        .unwrap();
    assert_eq!(store.get(&"a".to_string()), Some(5));
}
