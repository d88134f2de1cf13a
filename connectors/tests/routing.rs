//! Sink routing and record headers through Kafka (the embedded broker and
//! rdkafka, the stream threads' real record path): headers consumed with a
//! record reach the processors and the sinks (through a repartition topic
//! too, without weir's origin header), a `StreamPartitioner` picks the
//! partition, and a `TopicNameExtractor`'s topics are produced with the
//! producer's partitioner (`murmur2_random`, i.e. Kafka's default by key).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_runtime::manager::unwrap_repartition_value;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, TopicPartitionList};
use weir_connectors::kafka::stream::{run_with_status, AppSpec, RunConfig, RunStatus};
use weir_connectors::kafka::{Admin, ClientSettings, EmbeddedBroker, TopicSpec};
use weir_runtime::partitioner::default_partitioner;
use weir_topology::prelude::*;

/// Adds `stage: tagged` to every record's headers.
struct Tagger;

impl Processor<String, String> for Tagger {
    type KeyOut = String;
    type ValueOut = String;
    fn process(&mut self, ctx: &mut ProcessorApi<'_, String, String>, key: String, value: String) {
        ctx.headers_mut().add("stage", b"tagged");
        ctx.forward(key, value);
    }
}

/// `in` (key, "kind:payload") → tagged → `out-{kind}` (per record), and
/// → `by-length` (partition: key length modulo the count), and → re-keyed
/// by payload through a repartition topic → `after-repartition`.
fn topology() -> Topology {
    let mut b = StreamsBuilder::new();
    let tagged = b
        .stream::<String, String>("in", Serdes::string(), Serdes::string())
        .process(|| Tagger, &[]);
    tagged.clone().to_dynamic(
        |_, v| format!("out-{}", v.split(':').next().unwrap_or("none")),
        Serdes::string(),
        Serdes::string(),
    );
    tagged
        .clone()
        .to_with_partitioner("by-length", Serdes::string(), Serdes::string(), |k, _, n| {
            Some(k.len() as u32 % n)
        });
    tagged
        .select_key(|_, v| v.split(':').nth(1).unwrap_or("").to_string())
        .repartition("by-payload", Serdes::string(), Serdes::string())
        .to("after-repartition", Serdes::string(), Serdes::string());
    b.build().unwrap()
}

/// A record read back: partition, key, value, headers.
type Read = (i32, String, String, Vec<(String, Vec<u8>)>);
/// [`Read`] with the value as bytes.
type RawRead = (i32, String, Vec<u8>, Vec<(String, Vec<u8>)>);

/// Every record of `topic` (all partitions) once `n` are there.
fn read(brokers: &str, topic: &str, partitions: i32, n: usize) -> Vec<Read> {
    read_raw(brokers, topic, partitions, n)
        .into_iter()
        .map(|(p, k, v, hs)| (p, k, String::from_utf8(v).unwrap(), hs))
        .collect()
}

/// [`read`], the values as bytes.
fn read_raw(brokers: &str, topic: &str, partitions: i32, n: usize) -> Vec<RawRead> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "routing-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "{topic}: only {} of {n} records: {out:?}",
            out.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                m.partition(),
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                m.payload().unwrap().to_vec(),
                headers,
            ));
        }
    }
    out.sort();
    out
}

fn h(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
}

#[test]
fn headers_partitions_and_topics_through_kafka() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let brokers = broker.bootstrap_servers();
    let admin = Admin::connect(&brokers).unwrap();
    admin
        .ensure_topics(&[
            TopicSpec::new("in", 2),
            TopicSpec::new("out-click", 3),
            TopicSpec::new("out-view", 2),
            TopicSpec::new("by-length", 4),
            TopicSpec::new("after-repartition", 2),
        ])
        .unwrap();

    let producer: BaseProducer = ClientSettings::new(&brokers).producer_config().create().unwrap();
    let input = [
        ("a", "click:x", Some(("trace", &b"t1"[..]))),
        ("bb", "view:y", None),
        ("ccc", "click:z", Some(("trace", &b"t3"[..]))),
    ];
    for (k, v, header) in input {
        let mut record = BaseRecord::<[u8], [u8]>::to("in")
            .key(k.as_bytes())
            .payload(v.as_bytes());
        if let Some((name, value)) = header {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: name,
                value: Some(value),
            }));
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let dir = tempfile::tempdir().unwrap();
    let config = RunConfig {
        brokers: Some(brokers.clone()),
        state_dir: dir.path().to_path_buf(),
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
    let status = Arc::new(RunStatus::default());
    let handle = std::thread::spawn(move || {
        run_with_status(
            vec![AppSpec {
                application_id: "routing".into(),
                topology: topology(),
            }],
            config,
            status,
        )
    });

    let tagged = |trace: Option<&[u8]>| match trace {
        Some(t) => h(&[("trace", t), ("stage", b"tagged")]),
        None => h(&[("stage", b"tagged")]),
    };
    let by_key = |k: &str, n: i32| default_partitioner(k.as_bytes(), n);
    let mut want = vec![
        (
            by_key("a", 3),
            "a".to_string(),
            "click:x".to_string(),
            tagged(Some(b"t1")),
        ),
        (
            by_key("ccc", 3),
            "ccc".to_string(),
            "click:z".to_string(),
            tagged(Some(b"t3")),
        ),
    ];
    want.sort();
    assert_eq!(read(&brokers, "out-click", 3, 2), want);
    assert_eq!(
        read(&brokers, "out-view", 2, 1),
        vec![(by_key("bb", 2), "bb".to_string(), "view:y".to_string(), tagged(None))]
    );
    let mut want = vec![
        (1, "a".to_string(), "click:x".to_string(), tagged(Some(b"t1"))),
        (2, "bb".to_string(), "view:y".to_string(), tagged(None)),
        (3, "ccc".to_string(), "click:z".to_string(), tagged(Some(b"t3"))),
    ];
    want.sort();
    assert_eq!(read(&brokers, "by-length", 4, 3), want);
    // Through the repartition topic: the user's headers, not weir's origin.
    let mut want: Vec<Read> = [
        ("x", "click:x", Some(&b"t1"[..])),
        ("y", "view:y", None),
        ("z", "click:z", Some(b"t3")),
    ]
    .into_iter()
    .map(|(k, v, t)| (by_key(k, 2), k.to_string(), v.to_string(), tagged(t)))
    .collect();
    want.sort();
    assert_eq!(read(&brokers, "after-repartition", 2, 3), want);
    // Repartition records carry their origin in the value's envelope, and
    // no header of weir's.
    let repartitioned = read_raw(&brokers, "routing-by-payload-repartition", 2, 3);
    assert!(
        repartitioned.iter().all(|(_, _, v, hs)| {
            matches!(unwrap_repartition_value(Some(v)), Some((Some(_), Some(_))))
                && hs.iter().all(|(k, _)| !k.starts_with("weir."))
        }),
        "{repartitioned:?}"
    );

    stop.store(true, Ordering::Relaxed);
    handle.join().expect("run thread").expect("run returns Ok after stop");
}
