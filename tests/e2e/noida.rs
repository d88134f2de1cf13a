//! weir on a real Kafka-protocol broker (`noida-db`, [`NoidaBroker`]) where
//! the dev broker cannot show the behaviour: static group membership
//! through a broker nobody here wrote, and a missing source topic (the dev
//! broker creates it).
//!
//! The user-clicks and HTTP tests that end in `_on_noida` run the dev
//! broker's test bodies on noida.

use std::collections::BTreeMap;

use crate::harness::*;
use crate::user_clicks::{
    input_committed_summary, instance_view, wait_for_exact_answer, wait_for_split, Clicks, InstanceView, APP, INPUT,
};

/// Every `weir_task_events_total` sample of the topology, by event: what a
/// rebalance would move.
fn task_events(http: &str) -> BTreeMap<String, f64> {
    let (code, body) = http_call(http, "GET", "/metrics", None);
    assert_eq!(code, 200, "{body}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("/metrics parses");
    let mut events = BTreeMap::new();
    for s in scrape
        .samples
        .iter()
        .filter(|s| s.metric == "weir_task_events_total" && s.labels.get("topology") == Some(APP))
    {
        let v = match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        };
        *events
            .entry(s.labels.get("event").unwrap_or_default().to_string())
            .or_default() += v;
    }
    events
}

fn rebalances(http: &str) -> f64 {
    metric_sum(http, "weir_rebalances_total", &[("topology", APP)]).expect("metrics")
}

/// What instance A shows of its group membership: its tasks, its task
/// events and its rebalance count.
#[derive(Debug, PartialEq)]
struct Membership {
    tasks: Vec<String>,
    events: BTreeMap<String, f64>,
    rebalances: f64,
}

fn membership(http: &str) -> Membership {
    let view: InstanceView = instance_view(http).expect("/readyz");
    Membership {
        tasks: view.tasks.into_iter().collect(),
        events: task_events(http),
        rebalances: rebalances(http),
    }
}

/// Two instances with their own `--instance-id` split the 8 tasks of 4
/// partitions; one is SIGKILLed and restarted with its id: it gets its own
/// tasks back and the other one sees no rebalance at all (same tasks, no
/// task event, the same `weir_rebalances_total`); the counts are exact.
///
/// A starts (and holds every task) before B joins, so that A leads the
/// group and B, the one killed, is a follower: a returning static follower
/// takes its old assignment from the coordinator as it is.
#[test]
fn a_restarted_static_member_gets_its_tasks_back_without_a_rebalance() {
    let _heavy = heavy_test_lock();
    let broker = TestBroker::start(BrokerKind::Noida, 4);
    let addr = broker.addr();
    broker.create_topic(INPUT, 4);
    let mut clicks = Clicks::new(21);
    produce(addr, INPUT, &clicks.lines(20_000));

    let mut a = Daemon::new("static-a", addr, &[APP], &["--instance-id", "static-a"]);
    let mut b = Daemon::new("static-b", addr, &[APP], &["--instance-id", "static-b"]);
    a.start();
    let ha = daemon_http_addr(a.proc());
    wait_ready(&ha, a.proc());
    b.start();
    let hb = daemon_http_addr(b.proc());
    wait_for_split(&[&ha, &hb], 8, &mut [&mut a, &mut b]);
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut a, &mut b]);
    let split = wait_for_split(&[&ha, &hb], 8, &mut [&mut a, &mut b]);
    let b_tasks = split[1].tasks.clone();
    let a_before = membership(&ha);
    eprintln!("before the kill: a {a_before:?}, b {b_tasks:?}");
    assert_eq!(a_before.tasks, split[0].tasks.iter().cloned().collect::<Vec<_>>());

    // B dies with work in flight and comes back with its id.
    produce(addr, INPUT, &clicks.lines(5_000));
    b.kill9();
    eprintln!("instance B killed; {}", input_committed_summary(addr));
    b.start();
    let hb = daemon_http_addr(b.proc());
    let after = wait_for_split(&[&ha, &hb], 8, &mut [&mut a, &mut b]);
    assert_eq!(after[1].tasks, b_tasks, "B's tasks after its restart");
    assert_eq!(membership(&ha), a_before, "A across B's restart");

    // And B works on them: exact counts, still without a rebalance on A.
    produce(addr, INPUT, &clicks.lines(5_000));
    wait_for_exact_answer(addr, &clicks.answer(), &mut [&mut a, &mut b]);
    let a_after = membership(&ha);
    assert_eq!(
        (&a_after.tasks, &a_after.events, a_after.rebalances),
        (&a_before.tasks, &a_before.events, a_before.rebalances),
        "A after B's restart and more input"
    );
    let b_events = task_events(&hb);
    eprintln!("B after its restart: {b_events:?}, {} rebalances", rebalances(&hb));
    a.stop();
    b.stop();
}

/// On a real cluster weir creates only its internal topics: a source topic
/// that does not exist stops `weir run` at once, with status 1 and one line
/// naming it, and weir does not create it.
#[test]
fn a_missing_source_topic_stops_the_daemon_with_one_line() {
    let mut broker = NoidaBroker::start();
    let mut daemon = Daemon::new("missing-source", broker.addr(), &[APP], &[]);
    daemon.start();
    let status = daemon.proc().wait(STARTUP);
    let stderr = daemon.proc().stderr();
    assert_eq!(status.code(), Some(1), "{}", daemon.proc().logs());
    let want = format!("weir: source topic \"{INPUT}\" of {APP} does not exist; create it first");
    // The daemon's own lines before it (`HTTP on ...`, `weir: dashboard
    // at ...`) are not about the error; the error is one line, its last,
    // with no chain of causes or tracing error after it.
    let about: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(INPUT) || l.contains("does not exist") || l.to_lowercase().contains("error"))
        .collect();
    assert_eq!(about, [want.as_str()], "{stderr}");
    assert_eq!(stderr.lines().last(), Some(want.as_str()), "{stderr}");
    let topics = weir_connectors::kafka::Admin::connect(broker.addr())
        .and_then(|admin| admin.topics())
        .expect("topics");
    assert!(!topics.contains_key(INPUT), "weir created {INPUT}: {topics:?}");
    broker.stop();
}
