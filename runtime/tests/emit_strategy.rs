//! `EmitStrategy::on_window_close()`: a windowed aggregation that forwards
//! each window once, when it closes, without a suppression buffer. The
//! reference is `suppress(Suppressed::until_window_closes())` on the same
//! aggregation with the default strategy: after every input record both
//! must have produced exactly the same records (key, value, timestamp), so
//! nothing is emitted before the window closes and nothing twice. Then
//! restarts and crashes: what was emitted is decided by committed state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weir_runtime::memory::{Member, MemoryCluster};
use weir_runtime::testing::{TestDriverConfig, TopologyTestDriver};
use weir_runtime::TaskConfig;
use weir_state::StateDb;
use weir_topology::prelude::*;
use weir_topology::store::ChangelogRecord;
use weir_topology::{EmitStrategy, SlidingWindows};

fn describe<V: std::fmt::Display>(wk: Windowed<String>, v: V) -> (String, String) {
    (wk.key, format!("{}..{}={v}", wk.window.start, wk.window.end))
}

/// (key, "start..end=value", timestamp) of every record read from `topic`.
fn read(d: &TopologyTestDriver, topic: &str) -> Vec<(String, String, i64)> {
    d.output_topic(topic, Serdes::string(), Serdes::string())
        .read_records()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect()
}

fn rec(k: &str, v: &str, ts: i64) -> (String, String, i64) {
    (k.to_string(), v.to_string(), ts)
}

/// Pipe `input` one record at a time; after each, the emit-on-close topic
/// ("final") must hold exactly what the suppressed topic ("suppressed")
/// holds. Returns the records per input record.
fn pipe_and_compare(d: &TopologyTestDriver, input: &[(&str, i64)]) -> Vec<Vec<(String, String, i64)>> {
    let with_values: Vec<(&str, &str, i64)> = input.iter().map(|(k, ts)| (*k, "", *ts)).collect();
    pipe_values_and_compare(d, &with_values)
}

fn pipe_values_and_compare(d: &TopologyTestDriver, input: &[(&str, &str, i64)]) -> Vec<Vec<(String, String, i64)>> {
    let topic = d.input_topic("events", Serdes::string(), Serdes::string());
    let mut steps = Vec::new();
    for (i, (k, v, ts)) in input.iter().enumerate() {
        topic.pipe_input(k.to_string(), v.to_string(), *ts).unwrap();
        let emitted = read(d, "final");
        let suppressed = read(d, "suppressed");
        assert_eq!(emitted, suppressed, "after record {i} ({k}={v}@{ts})");
        steps.push(emitted);
    }
    steps
}

fn time_windows() -> TimeWindows {
    TimeWindows::of(Duration::from_millis(10))
        .unwrap()
        .advance_by(Duration::from_millis(5))
        .unwrap()
        .grace(Duration::from_millis(3))
        .unwrap()
}

#[test]
fn time_windows_emit_on_close_what_suppress_emits() {
    let mut b = StreamsBuilder::new();
    let events = b.stream::<String, String>("events", Serdes::string(), Serdes::string());
    events
        .clone()
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(time_windows())
        .count(Materialized::named("counts-updating"))
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .map(describe)
        .to("suppressed", Serdes::string(), Serdes::string());
    events
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(time_windows())
        .emit_strategy(EmitStrategy::on_window_close())
        .count(Materialized::named("counts-final"))
        .to_stream()
        .map(describe)
        .to("final", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::with_application_id("emit")).unwrap();
    // Hopping windows of 10 every 5, grace 3: [0,10) closes at stream time
    // 13, [5,15) at 18, [10,20) at 23, ... "a" and "ab" (one a prefix of
    // the other) check the order within a window end.
    let steps = pipe_and_compare(
        &d,
        &[
            ("a", 1),
            ("ab", 4),
            ("b", 7),
            ("a", 12),
            // Out of order, in grace for [0,10) (stream time 12 < 13).
            ("a", 9),
            ("b", 13),
            // Late for [0,10) (closed at 13), in time for [5,15).
            ("ab", 6),
            ("b", 17),
            ("a", 18),
            // Late for every window it belongs to ([-5,5) and [0,10)).
            ("a", 2),
            ("b", 40),
        ],
    );
    assert_eq!(
        steps,
        vec![
            vec![],
            vec![],
            vec![],
            // Stream time 12: [-5,5) closed (at 8). Both order by the
            // serialized windowed key, where the negative start's 0xFF..
            // bytes sort "a" after "ab".
            vec![rec("ab", "-5..5=1", 5), rec("a", "-5..5=1", 5)],
            vec![],
            // Stream time 13: [0,10) closes, with a@9 that came in grace.
            vec![
                rec("a", "0..10=2", 10),
                rec("ab", "0..10=1", 10),
                rec("b", "0..10=1", 10)
            ],
            vec![],
            vec![],
            // Stream time 18: [5,15) closes (with ab@6, late only for [0,10)).
            vec![
                rec("a", "5..15=2", 15),
                rec("ab", "5..15=1", 15),
                rec("b", "5..15=2", 15)
            ],
            // a@2 is late for both of its windows.
            vec![],
            // Stream time 40: every window ending by 37 closes.
            vec![
                rec("a", "10..20=2", 20),
                rec("b", "10..20=2", 20),
                rec("a", "15..25=1", 25),
                rec("b", "15..25=1", 25),
            ],
        ]
    );
    // a@2, counted by each of the two aggregations.
    assert_eq!(d.late_records_dropped(), 2);
}

/// Kafka's testAggregateSmallInput with ON_WINDOW_CLOSE (sliding windows,
/// difference 10, grace 5): the same six final windows and aggregates.
/// Timestamps differ from Kafka by design: weir's final results carry the
/// window end, as weir's `suppress` does (Kafka keeps the largest record
/// timestamp, which is 20 rather than 21 for [11,21]).
#[test]
fn sliding_windows_emit_on_close_what_suppress_emits_and_kafka_expects() {
    let windows =
        SlidingWindows::of_time_difference_and_grace(Duration::from_millis(10), Duration::from_millis(5)).unwrap();
    let mut b = StreamsBuilder::new();
    let events = b.stream::<String, String>("events", Serdes::string(), Serdes::string());
    let aggregate = |stream: KStream<String, String>, emit: EmitStrategy, store: &str| {
        stream
            .group_by_key(Serdes::string(), Serdes::string())
            .windowed_by(windows)
            .emit_strategy(emit)
            .aggregate(
                || "0".to_string(),
                |_, v, agg| format!("{agg}+{v}"),
                Serdes::string(),
                Materialized::named(store),
            )
    };
    aggregate(events.clone(), EmitStrategy::on_window_update(), "updating")
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .map(describe)
        .to("suppressed", Serdes::string(), Serdes::string());
    aggregate(events, EmitStrategy::on_window_close(), "final")
        .to_stream()
        .map(describe)
        .to("final", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let steps = pipe_values_and_compare(
        &d,
        &[
            ("A", "1", 10),
            ("A", "2", 10),
            ("A", "3", 14),
            ("A", "4", 15),
            ("A", "5", 20),
            ("A", "6", 22),
            ("A", "7", 30),
        ],
    );
    assert_eq!(
        steps,
        vec![
            vec![],
            vec![],
            vec![],
            vec![],
            // Stream time 20: windows ending before 15 are closed.
            vec![rec("A", "0..10=0+1+2", 10), rec("A", "4..14=0+1+2+3", 14)],
            // Stream time 22: before 17.
            vec![rec("A", "5..15=0+1+2+3+4", 15)],
            // Stream time 30: before 25.
            vec![
                rec("A", "10..20=0+1+2+3+4+5", 20),
                rec("A", "11..21=0+3+4+5", 21),
                rec("A", "12..22=0+3+4+5+6", 22),
            ],
        ]
    );
}

/// Sessions (the input of the suppressed-sessions test in sessions.rs):
/// merged-away sessions are never emitted, a session is emitted when no
/// record can extend it any more (end + gap + grace < stream time).
#[test]
fn sessions_emit_on_close_what_suppress_emits() {
    let sessions = SessionWindows::with_inactivity_gap(Duration::from_millis(5000))
        .unwrap()
        .grace(Duration::from_millis(1000))
        .unwrap();
    let mut b = StreamsBuilder::new();
    let events = b.stream::<String, String>("events", Serdes::string(), Serdes::string());
    events
        .clone()
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(sessions)
        .count(Materialized::named("sessions-updating"))
        .suppress(Suppressed::until_window_closes())
        .to_stream()
        .map(describe)
        .to("suppressed", Serdes::string(), Serdes::string());
    events
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(sessions)
        .emit_strategy(EmitStrategy::on_window_close())
        .count(Materialized::named("sessions-final"))
        .to_stream()
        .map(describe)
        .to("final", Serdes::string(), Serdes::string());
    let d = TopologyTestDriver::new(b.build().unwrap(), TestDriverConfig::default()).unwrap();
    let steps = pipe_and_compare(
        &d,
        &[
            ("a", 0),
            ("a", 3000),
            ("b", 4000),
            ("x", 9000),
            ("a", 8000),
            ("x", 9001),
            ("x", 10000),
            ("x", 10001),
            ("x", 14001),
            ("a", 2000),
            ("y", 20001),
            ("y", 20002),
        ],
    );
    let mut expected: Vec<Vec<(String, String, i64)>> = vec![vec![]; 12];
    expected[7] = vec![rec("b", "4000..4000=1", 4000)];
    expected[8] = vec![rec("a", "0..8000=3", 8000)];
    expected[11] = vec![rec("x", "9000..14001=5", 14001)];
    assert_eq!(steps, expected);
    // a@2000 came after [0,8000] was emitted: late for both.
    assert_eq!(d.late_records_dropped(), 2);
}

/// Tumbling 10 ms windows emitted on close; the windows are kept for an
/// hour (queryable), so a restarted task that forgot what it emitted would
/// find them all again.
fn tumbling_final(app_store: &str) -> Topology {
    let mut b = StreamsBuilder::new();
    b.stream::<String, String>("events", Serdes::string(), Serdes::string())
        .group_by_key(Serdes::string(), Serdes::string())
        .windowed_by(TimeWindows::of(Duration::from_millis(10)).unwrap())
        .emit_strategy(EmitStrategy::on_window_close())
        .count(Materialized::named(app_store).with_retention(Duration::from_secs(3600)))
        .to_stream()
        .map(describe)
        .to("final", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

/// What was emitted is part of the committed state: a driver reopening the
/// state directory does not emit a window again, and goes on emitting the
/// next ones. The emit progress is the close time (stream time - grace) in
/// the `{store}-last-emitted` store, logged like the window store.
#[test]
fn a_restarted_task_does_not_emit_a_window_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = || TestDriverConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..TestDriverConfig::with_application_id("restart")
    };
    {
        let d = TopologyTestDriver::new(tumbling_final("counts"), config()).unwrap();
        let input = d.input_topic("events", Serdes::string(), Serdes::string());
        input.pipe_input("a".into(), "".into(), 1).unwrap();
        input.pipe_input("a".into(), "".into(), 5).unwrap();
        assert!(read(&d, "final").is_empty());
        input.pipe_input("b".into(), "".into(), 12).unwrap();
        assert_eq!(read(&d, "final"), vec![rec("a", "0..10=2", 10)]);
        // One progress record per commit that moved stream time.
        let progress: Vec<i64> = d
            .changelog("counts-last-emitted")
            .into_iter()
            .map(|r: ChangelogRecord| i64::from_be_bytes(r.value.unwrap().try_into().unwrap()))
            .collect();
        assert_eq!(progress, vec![1, 5, 12]);
        d.flush_state_to_disk().unwrap();
    }
    let d = TopologyTestDriver::new(tumbling_final("counts"), config()).unwrap();
    let input = d.input_topic("events", Serdes::string(), Serdes::string());
    input.pipe_input("b".into(), "".into(), 15).unwrap();
    assert!(read(&d, "final").is_empty());
    input.pipe_input("c".into(), "".into(), 25).unwrap();
    assert_eq!(read(&d, "final"), vec![rec("b", "10..20=2", 20)]);
}

const APP: &str = "emit-crash";

/// 90 in-order records over three keys in 10 ms tumbling windows; returns
/// the final count of every window that closes (end <= last timestamp).
fn crash_input(cluster: &MemoryCluster) -> Truth {
    cluster.create_topic("events", 1);
    cluster.create_topic("final", 1);
    let mut counts: BTreeMap<(String, i64), u64> = BTreeMap::new();
    let mut last = 0;
    for i in 0..90i64 {
        let key = ["a", "b", "c"][((i * 7 + i / 3) % 3) as usize];
        let ts = 1000 + i * 3;
        cluster.produce("events", 0, Some(key.as_bytes()), Some(b""), ts);
        *counts.entry((key.to_string(), ts - ts % 10)).or_default() += 1;
        last = ts;
    }
    counts
        .into_iter()
        .filter(|((_, start), _)| start + 10 <= last)
        .map(|((k, start), n)| ((k, format!("{start}..{}", start + 10)), n))
        .collect()
}

/// Per window ((key, "start..end")): the counts read, or the true count.
type Seen = BTreeMap<(String, String), Vec<u64>>;
type Truth = BTreeMap<(String, String), u64>;

/// Every count a `read_committed` reader of `final` saw, per window.
fn committed_finals(cluster: &MemoryCluster) -> Seen {
    let mut out = Seen::new();
    for r in cluster.committed_records("final") {
        let key = String::from_utf8(r.key.unwrap()).unwrap();
        let value = String::from_utf8(r.value.unwrap()).unwrap();
        let (window, n) = value.split_once('=').unwrap();
        out.entry((key, window.to_string()))
            .or_default()
            .push(n.parse().unwrap());
    }
    out
}

/// Runs the input with a crash at operation `n` (none if 0), then a new
/// member on the same state (or a fresh directory: restore from the
/// changelogs) to the end. Returns what the reader saw, the truth and the
/// operations of the run.
fn crash_run(n: u64, exactly_once: bool, keep_state: bool) -> (Seen, Truth, u64) {
    let cluster = MemoryCluster::new();
    let truth = crash_input(&cluster);
    let member = |db: &Arc<StateDb>| {
        if exactly_once {
            Member::exactly_once(
                &cluster,
                &tumbling_final("counts"),
                APP,
                db.clone(),
                TaskConfig::default(),
            )
        } else {
            Member::new(
                &cluster,
                &tumbling_final("counts"),
                APP,
                db.clone(),
                TaskConfig::default(),
                None,
            )
        }
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(StateDb::open(dir.path()).unwrap());
    let mut m = member(&db);
    if n > 0 {
        m.transport.crash_at(n);
    }
    let _ = m.assign_all().and_then(|()| m.run_until_idle(10, 5000));
    let operations = m.transport.operations();
    drop(m); // a SIGKILL: no revoke, no close
    let fresh = tempfile::tempdir().unwrap();
    let db = if keep_state {
        db
    } else {
        Arc::new(StateDb::open(fresh.path()).unwrap())
    };
    let mut m = member(&db);
    m.assign_all().unwrap();
    m.run_until_idle(10, 5000).unwrap();
    (committed_finals(&cluster), truth, operations)
}

/// Why `seen` is not one final count per closed window, or a wrong count
/// (with `allow_repeats`, repeats of the right count pass).
fn check(seen: &Seen, truth: &Truth, allow_repeats: bool) -> Option<String> {
    if seen.keys().ne(truth.keys()) {
        return Some(format!("windows {:?}, want {:?}", seen.keys(), truth.keys()));
    }
    for (w, want) in truth {
        let got = &seen[w];
        let ok = if allow_repeats {
            !got.is_empty() && got.iter().all(|n| n == want)
        } else {
            got == &vec![*want]
        };
        if !ok {
            return Some(format!("{w:?}: {got:?}, want {want}"));
        }
    }
    None
}

fn crash_everywhere(exactly_once: bool, keep_state: bool) -> usize {
    let (seen, truth, total) = crash_run(0, exactly_once, keep_state);
    assert_eq!(check(&seen, &truth, false), None, "without a crash");
    assert!(
        truth.len() > 20 && total > 30,
        "{} windows, {total} operations",
        truth.len()
    );
    let mut failures = Vec::new();
    let mut repeats = 0;
    for n in 1..=total {
        let (seen, truth, _) = crash_run(n, exactly_once, keep_state);
        if let Some(why) = check(&seen, &truth, !exactly_once) {
            failures.push(format!("crash at operation {n} of {total}: {why}"));
        }
        repeats += usize::from(check(&seen, &truth, false).is_some());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    repeats
}

/// Exactly-once: a crash at any operation (with the local state, or
/// restoring from the changelogs) leaves every closed window emitted once,
/// with its final count.
#[test]
fn exactly_once_emits_each_window_once_whatever_the_crash() {
    assert_eq!(crash_everywhere(true, true), 0);
    assert_eq!(crash_everywhere(true, false), 0);
}

/// At-least-once: never a missing window or a wrong count, but a crash
/// after a commit's outputs went out and before its state was written
/// emits those windows again (the documented repeat).
#[test]
fn at_least_once_may_repeat_a_window_but_never_loses_or_changes_one() {
    let repeats = crash_everywhere(false, true);
    assert!(repeats > 0, "no crash point repeated a window under at-least-once");
}
