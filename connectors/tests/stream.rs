//! `stream::run` in-process against the embedded broker: readiness, exact
//! counts, and a restart on an empty state directory restoring from the
//! changelog.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_connectors::kafka::stream::{run_with_status, AppSpec, RunConfig, RunStatus};
use weir_connectors::kafka::{produce_lines, tail_with, ClientSettings, EmbeddedBroker, TailLimit};
use weir_topology::prelude::*;

fn word_counts() -> Topology {
    let mut b = StreamsBuilder::new();
    // The words are produced without keys: the key is read as nothing.
    b.stream::<(), String>("words", Serdes::ignored(), Serdes::string())
        .select_key(|_, w| w.clone())
        .group_by_key(Serdes::string(), Serdes::string())
        .count(Materialized::named("counts"))
        .to_stream()
        .to("counts-out", Serdes::string(), Serdes::u64());
    b.build().unwrap()
}

/// A running `run` on a thread, stopped and joined on drop.
struct Running {
    stop: Arc<AtomicBool>,
    status: Arc<RunStatus>,
    handle: Option<JoinHandle<weir_connectors::Result<()>>>,
}

impl Running {
    fn start(brokers: &str, state_dir: &std::path::Path) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(RunStatus::default());
        let config = RunConfig {
            brokers: Some(brokers.to_string()),
            state_dir: state_dir.to_path_buf(),
            threads: 1,
            commit_interval: Duration::from_millis(200),
            cache_max_bytes: 1 << 20,
            idle_advance: weir_connectors::kafka::stream::default_idle_advance(Duration::from_millis(200)),
            delivery_timeout: weir_connectors::kafka::stream::DEFAULT_DELIVERY_TIMEOUT,
            instance_id: None,
            guarantee: weir_connectors::kafka::stream::Guarantee::AtLeastOnce,
            stop: stop.clone(),
            kafka_properties: Vec::new(),
            state_cache_bytes: weir_state::SLED_CACHE_BYTES,
        };
        let st = status.clone();
        let handle = std::thread::spawn(move || {
            run_with_status(
                vec![AppSpec {
                    application_id: "wc".into(),
                    topology: word_counts(),
                }],
                config,
                st,
            )
        });
        Running {
            stop,
            status,
            handle: Some(handle),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let r = self.handle.take().unwrap().join().expect("run thread");
        r.expect("run returns Ok after stop");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Latest value per key of `topic`, read to its end.
fn latest(brokers: &str, topic: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    tail_with(
        &ClientSettings::new(brokers),
        topic,
        true,
        Some(TailLimit {
            max_records: None,
            timeout: Some(Duration::from_millis(1500)),
            ..TailLimit::default()
        }),
        |r| {
            if let Some(r) = r {
                let k = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                let v = u64::from_be_bytes(r.value.unwrap().try_into().unwrap());
                out.insert(k, v);
            }
            true
        },
    )
    .unwrap();
    out
}

fn produce_words(brokers: &str, words: &[&str], times: usize) -> BTreeMap<String, u64> {
    let mut text = String::new();
    let mut expected = BTreeMap::new();
    for i in 0..times {
        let w = words[i % words.len()];
        text.push_str(w);
        text.push('\n');
        *expected.entry(w.to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        produce_lines(brokers, "words", text.as_bytes(), false).unwrap(),
        times as u64
    );
    expected
}

#[test]
fn run_counts_exactly_and_a_fresh_state_dir_restores_from_the_changelog() {
    let broker = EmbeddedBroker::start(3).unwrap();
    let brokers = broker.bootstrap_servers();
    let words = ["apple", "banana", "cherry", "damson", "elder"];
    let dir1 = tempfile::tempdir().unwrap();

    let run = Running::start(&brokers, dir1.path());
    wait_until("the first assignment", Duration::from_secs(20), || {
        run.status.is_ready()
    });
    let snapshot = run.status.snapshot();
    let tasks: Vec<String> = snapshot.values().flat_map(|t| t.tasks.clone()).collect();
    assert_eq!(tasks, ["0_0", "0_1", "0_2", "1_0", "1_1", "1_2"]);
    let mut expected = produce_words(&brokers, &words, 5_000);
    wait_until("exact counts", Duration::from_secs(30), || {
        latest(&brokers, "counts-out") == expected
    });
    run.stop();

    // A second instance with an empty state directory: its stores come back
    // from the changelog, and counting goes on from there.
    let dir2 = tempfile::tempdir().unwrap();
    let run = Running::start(&brokers, dir2.path());
    wait_until("the restored assignment", Duration::from_secs(20), || {
        run.status.is_ready()
    });
    let restored: u64 = run.status.snapshot().values().map(|t| t.restored_records).sum();
    assert!(
        restored >= words.len() as u64,
        "restored only {restored} changelog records"
    );
    for (w, n) in produce_words(&brokers, &words, 1_000) {
        *expected.get_mut(&w).unwrap() += n;
    }
    wait_until("exact counts after the restore", Duration::from_secs(30), || {
        latest(&brokers, "counts-out") == expected
    });
    run.stop();
}
