//! A GlobalKTable on Kafka: two instances of one application (two `run`s
//! with their own state directories, one consumer group) against the
//! embedded broker. The global topic has 3 partitions, the stream 2: each
//! instance runs one stream task, and each must hold, and join against,
//! every partition of the global topic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir_connectors::kafka::stream::{run_with_status, AppSpec, Guarantee, RunConfig, RunStatus};
use weir_connectors::kafka::{tail_with, ClientSettings, EmbeddedBroker, TailLimit};
use weir_topology::prelude::*;

const APP: &str = "gt";
const STORE: &str = "customers-store";

/// Orders ("customer,item", keyed by order id) joined with the customers
/// (id → name) on the customer id in the order's value.
fn topology() -> Topology {
    let mut b = StreamsBuilder::new();
    let customers = b.global_table::<String, String>(
        "customers",
        Serdes::string(),
        Serdes::string(),
        Materialized::named(STORE),
    );
    b.stream::<String, String>("orders", Serdes::string(), Serdes::string())
        .join_global(
            &customers,
            |_, v| v.split(',').next().unwrap_or_default().to_string(),
            |_, v, name| format!("{v} for {name}"),
        )
        .to("enriched", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

/// One instance: `run` on a thread, stopped and joined on every path
/// (`stop`, or drop when a test fails).
struct Instance {
    stop: Arc<AtomicBool>,
    status: Arc<RunStatus>,
    handle: Option<JoinHandle<weir_connectors::Result<()>>>,
}

impl Instance {
    fn start(brokers: &str, state_dir: &std::path::Path) -> Instance {
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(RunStatus::default());
        let config = RunConfig {
            brokers: Some(brokers.to_string()),
            state_dir: state_dir.to_path_buf(),
            threads: 1,
            commit_interval: Duration::from_millis(200),
            cache_max_bytes: 1 << 20,
            idle_advance: None,
            delivery_timeout: weir_connectors::kafka::stream::DEFAULT_DELIVERY_TIMEOUT,
            instance_id: None,
            guarantee: Guarantee::AtLeastOnce,
            stop: stop.clone(),
            kafka_properties: Vec::new(),
            state_cache_bytes: weir_state::SLED_CACHE_BYTES,
        };
        let st = status.clone();
        let handle = std::thread::spawn(move || {
            run_with_status(
                vec![AppSpec {
                    application_id: APP.into(),
                    topology: topology(),
                }],
                config,
                st,
            )
        });
        Instance {
            stop,
            status,
            handle: Some(handle),
        }
    }

    /// The stream tasks this instance runs (the global thread's "global"
    /// left out).
    fn stream_tasks(&self) -> Vec<String> {
        self.status
            .snapshot()
            .into_iter()
            .filter(|(thread, _)| thread != &format!("{APP}-global"))
            .flat_map(|(_, t)| t.tasks)
            .collect()
    }

    /// The value of `key` in this instance's global store.
    fn global(&self, key: &str) -> Option<String> {
        let readers = self.status.store_readers(STORE);
        assert_eq!(readers.len(), 1, "one global store reader per instance");
        let (app, partition, reader) = &readers[0];
        assert_eq!((app.as_str(), *partition), (APP, -1));
        reader
            .read_kv(STORE, key.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let r = self.handle.take().unwrap().join().expect("run thread");
        r.expect("run returns Ok after stop");
    }
}

impl Drop for Instance {
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

/// Produce (partition, key, value) records and wait for their delivery.
fn produce(brokers: &str, topic: &str, records: &[(i32, &str, &str)]) {
    let producer: BaseProducer = ClientSettings::new(brokers).producer_config().create().unwrap();
    for (p, k, v) in records {
        producer
            .send(BaseRecord::to(topic).partition(*p).key(*k).payload(*v))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Every (key, value) of `topic`, read to its end, sorted.
fn all_records(brokers: &str, topic: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    tail_with(
        &ClientSettings::new(brokers),
        topic,
        true,
        Some(TailLimit {
            max_records: None,
            timeout: Some(Duration::from_millis(1000)),
            ..TailLimit::default()
        }),
        |r| {
            if let Some(r) = r {
                out.push((
                    String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
            true
        },
    )
    .unwrap();
    out.sort();
    out
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    out.sort();
    out
}

#[test]
fn two_instances_each_join_against_every_global_partition() {
    let broker = EmbeddedBroker::start(2).unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("customers", 3).unwrap();
    broker.create_topic("orders", 2).unwrap();
    broker.create_topic("enriched", 2).unwrap();
    // Before either instance starts: restored at start.
    produce(
        &brokers,
        "customers",
        &[
            (0, "c0", "Zoe"),
            (1, "c1", "Alice"),
            (2, "c2", "Bob"),
            (2, "c3", "Carl"),
        ],
    );

    // Orders waiting before the start too: the global stores are restored
    // before any task processes, so these join like the later ones.
    produce(&brokers, "orders", &[(0, "o0", "c2,pre"), (1, "o00", "c3,pre")]);

    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Instance::start(&brokers, dir_a.path());
    let b = Instance::start(&brokers, dir_b.path());
    wait_until("one stream task per instance", Duration::from_secs(60), || {
        a.status.is_ready() && b.status.is_ready() && a.stream_tasks().len() == 1 && b.stream_tasks().len() == 1
    });
    let (ta, tb) = (a.stream_tasks(), b.stream_tasks());
    assert_ne!(ta, tb, "the instances split the stream's two partitions");
    // Each instance holds every global partition.
    for i in [&a, &b] {
        assert_eq!(i.global("c0").as_deref(), Some("Zoe"));
        assert_eq!(i.global("c1").as_deref(), Some("Alice"));
        assert_eq!(i.global("c2").as_deref(), Some("Bob"));
        assert_eq!(i.global("c3").as_deref(), Some("Carl"));
    }

    // Each stream partition (so each instance) references customers of
    // all three global partitions, and one that does not exist.
    produce(
        &brokers,
        "orders",
        &[
            (0, "o1", "c0,book"),
            (0, "o2", "c1,pen"),
            (0, "o3", "c3,ink"),
            (0, "o4", "c9,cup"),
            (1, "o5", "c2,mug"),
            (1, "o6", "c0,pad"),
            (1, "o7", "c1,map"),
            (1, "o8", "c9,hat"),
        ],
    );
    let mut expected = pairs(&[
        ("o0", "c2,pre for Bob"),
        ("o00", "c3,pre for Carl"),
        ("o1", "c0,book for Zoe"),
        ("o2", "c1,pen for Alice"),
        ("o3", "c3,ink for Carl"),
        ("o5", "c2,mug for Bob"),
        ("o6", "c0,pad for Zoe"),
        ("o7", "c1,map for Alice"),
    ]);
    let mut seen = Vec::new();
    wait_until("the joined orders", Duration::from_secs(30), || {
        seen = all_records(&brokers, "enriched");
        seen.len() >= expected.len()
    });
    assert_eq!(seen, expected);

    // Updates while running reach both instances' stores, and the orders
    // after them: a new customer on partition 2, a renamed one on 1.
    produce(&brokers, "customers", &[(1, "c1", "Alicia"), (2, "c9", "Ivy")]);
    wait_until("both instances to see the updates", Duration::from_secs(30), || {
        [&a, &b]
            .iter()
            .all(|i| i.global("c1").as_deref() == Some("Alicia") && i.global("c9").as_deref() == Some("Ivy"))
    });
    produce(
        &brokers,
        "orders",
        &[(0, "o9", "c1,cap"), (1, "o10", "c9,bag"), (1, "o11", "c1,box")],
    );
    expected.extend(pairs(&[
        ("o9", "c1,cap for Alicia"),
        ("o10", "c9,bag for Ivy"),
        ("o11", "c1,box for Alicia"),
    ]));
    expected.sort();
    wait_until("the joined orders after the updates", Duration::from_secs(30), || {
        seen = all_records(&brokers, "enriched");
        seen.len() >= expected.len()
    });
    assert_eq!(seen, expected);

    // Still one stream task each: no rebalance moved the work meanwhile,
    // so each instance joined its own partition's orders.
    assert_eq!((a.stream_tasks(), b.stream_tasks()), (ta, tb));
    a.stop();
    b.stop();

    // A restart on the same state directory reads on from the stored
    // positions: nothing of the global topic is read again.
    let a = Instance::start(&brokers, dir_a.path());
    wait_until("the restarted instance", Duration::from_secs(60), || {
        a.status.is_ready()
    });
    let global = a.status.snapshot()[&format!("{APP}-global")].clone();
    assert_eq!(global.restored_records, 0, "{global:?}");
    assert_eq!(a.global("c1").as_deref(), Some("Alicia"));
    a.stop();
}
