//! The LocalRunner commits rarely (like the Kafka runtime), so aggregates
//! forward many updates at once: results must equal the per-record driver's.

use std::time::Duration;

use weir_runtime::local::LocalRunner;
use weir_runtime::TaskConfig;
use weir_state::StateDb;
use weir_topology::prelude::*;

fn windowed_counts(session: bool) -> Topology {
    let mut b = StreamsBuilder::new();
    let grouped = b
        // The records have no key (null): the key is ignored, not decoded.
        .stream::<(), String>("in", Serdes::ignored(), Serdes::string())
        .map(|_, v| (v, String::new()))
        .group_by_key(Serdes::string(), Serdes::string());
    let table = if session {
        grouped
            .windowed_by(SessionWindows::with_inactivity_gap(Duration::from_millis(100)).unwrap())
            .count(Materialized::named("counts"))
    } else {
        grouped
            .windowed_by(TimeWindows::of(Duration::from_millis(1000)).unwrap())
            .count(Materialized::named("counts"))
    };
    table
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .map(|wk, n| (wk.key.clone(), format!("{}..{}={n}", wk.window.start, wk.window.end)))
        .to("out", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

fn run(topology: &Topology, inputs: &[(&str, i64)], commit_every: usize) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mut runner = LocalRunner::new(topology, "app", &db, TaskConfig::default()).unwrap();
    let topic = topology.topic_index("in", "app").unwrap();
    let mut out = Vec::new();
    let mut sink = |_: u32, k: Option<&[u8]>, v: Option<&[u8]>, _: i64| {
        out.push((
            String::from_utf8(k.unwrap().to_vec()).unwrap(),
            String::from_utf8(v.unwrap().to_vec()).unwrap(),
        ))
    };
    for (i, (v, ts)) in inputs.iter().enumerate() {
        runner.process(topic, None, Some(v.as_bytes()), *ts, &mut sink).unwrap();
        if (i + 1) % commit_every == 0 {
            runner.commit(&mut sink).unwrap();
        }
    }
    runner.commit(&mut sink).unwrap();
    out
}

#[test]
fn windows_closed_between_commits_are_still_emitted_once() {
    let t = windowed_counts(false);
    // Ten windows of 1 s, three records each; stream time runs far past
    // the early windows before the only commit.
    let inputs: Vec<(&str, i64)> = (0..30).map(|i| ("k", (i / 3) * 1000 + i % 3)).collect();
    let expected: Vec<(String, String)> = (0..9)
        .map(|w| ("k".to_string(), format!("{}..{}=3", w * 1000, w * 1000 + 1000)))
        .collect();
    assert_eq!(run(&t, &inputs, 1000), expected);
    // Committing after every record gives the same result.
    assert_eq!(run(&t, &inputs, 1), expected);
}

#[test]
fn sessions_closed_between_commits_are_still_emitted_once() {
    let t = windowed_counts(true);
    let inputs: Vec<(&str, i64)> = vec![("k", 0), ("k", 50), ("k", 1000), ("k", 1020), ("k", 1040), ("k", 5000)];
    let expected = vec![
        ("k".to_string(), "0..50=2".to_string()),
        ("k".to_string(), "1000..1040=3".to_string()),
    ];
    assert_eq!(run(&t, &inputs, 1000), expected);
    assert_eq!(run(&t, &inputs, 1), expected);
}

/// A window's update still in the count's write cache when stream time has
/// already closed it: suppression must wait for it, not emit the buffered
/// older count as final and then the rest as a second result. Here `b`'s
/// first count is buffered by the suppression at the first commit; `b@3`
/// and `a@4` are cached upstream when `c@2500` closes window 0; at the next
/// commit the cache forwards window 0's `a` before `b` (key order).
#[test]
fn a_window_closed_before_its_cached_updates_are_forwarded_is_emitted_once_with_its_final_count() {
    let t = windowed_counts(false);
    let inputs: Vec<(&str, i64)> = vec![("b", 2), ("b", 3), ("a", 4), ("c", 2500)];
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mut runner = LocalRunner::new(&t, "app", &db, TaskConfig::default()).unwrap();
    let topic = t.topic_index("in", "app").unwrap();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut sink = |_: u32, k: Option<&[u8]>, v: Option<&[u8]>, _: i64| {
        out.push((
            String::from_utf8(k.unwrap().to_vec()).unwrap(),
            String::from_utf8(v.unwrap().to_vec()).unwrap(),
        ))
    };
    for (i, (v, ts)) in inputs.iter().enumerate() {
        runner.process(topic, None, Some(v.as_bytes()), *ts, &mut sink).unwrap();
        if i == 0 {
            runner.commit(&mut sink).unwrap();
        }
    }
    runner.commit(&mut sink).unwrap();
    out.sort();
    assert_eq!(
        out,
        vec![
            ("a".to_string(), "0..1000=1".to_string()),
            ("b".to_string(), "0..1000=2".to_string()),
        ]
    );
}

/// Emit-on-close (KIP-825) with rare commits: windows that open, close and
/// expire between two commits are emitted once and never reach the
/// changelog, neither as values nor as tombstones. Only what is still
/// needed after the commit is logged: the open window and the emit
/// progress. (Before, the flush logged every window and the purge after it
/// a tombstone for each, at the next commit.)
#[test]
fn windows_that_expire_between_commits_are_emitted_and_never_logged() {
    let mut b = StreamsBuilder::new();
    b.stream::<(), String>("in", Serdes::ignored(), Serdes::string())
        .map(|_, v| (v, String::new()))
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(TimeWindows::of(Duration::from_millis(1000)).unwrap())
        .emit_strategy(EmitStrategy::on_window_close())
        .count(Materialized::named("counts"))
        .to_stream()
        .map(|wk, n| (wk.key.clone(), format!("{}..{}={n}", wk.window.start, wk.window.end)))
        .to("out", Serdes::string(), Serdes::string());
    let t = b.build().unwrap();
    // Ten 1 s windows of key "a", three records each (window w at
    // w s + 0, 10, 20 ms), all between two commits.
    let inputs: Vec<(&str, i64)> = (0..10)
        .flat_map(|w| (0..3).map(move |i| ("a", w * 1000 + i * 10)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mut runner = LocalRunner::new(&t, "app", &db, TaskConfig::default()).unwrap();
    let topic = t.topic_index("in", "app").unwrap();
    let out = std::cell::RefCell::new(Vec::<(String, String)>::new());
    let mut sink = |_: u32, k: Option<&[u8]>, v: Option<&[u8]>, _: i64| {
        out.borrow_mut().push((
            String::from_utf8(k.unwrap().to_vec()).unwrap(),
            String::from_utf8(v.unwrap().to_vec()).unwrap(),
        ))
    };
    for (i, (v, ts)) in inputs.iter().enumerate() {
        runner.process(topic, None, Some(v.as_bytes()), *ts, &mut sink).unwrap();
        if i == 3 {
            // Stream time reached 1 s: window 0 s closed, and went out at
            // once, without waiting for a commit (Kafka Streams emits while
            // processing too).
            assert_eq!(*out.borrow(), vec![("a".to_string(), "0..1000=3".to_string())]);
            assert_eq!(runner.stats().commits, 0);
        }
    }
    runner.commit(&mut sink).unwrap();
    let logged = runner.stats().changelog_records;
    runner.commit(&mut sink).unwrap();
    let want: Vec<(String, String)> = (0..9)
        .map(|w| ("a".to_string(), format!("{}..{}=3", w * 1000, w * 1000 + 1000)))
        .collect();
    assert_eq!(*out.borrow(), want);
    // Stream time 9,020 ms: windows 0..8 s closed, were emitted and are
    // past the 1 s retention; window 9 s is open. Logged: window 9 s and
    // the emit progress.
    assert_eq!(logged, 2);
    // The next commit logs nothing for the purged windows either.
    assert_eq!(runner.stats().changelog_records, 2);
}
