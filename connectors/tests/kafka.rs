//! weir's Kafka plumbing against a real broker: weir's own, through
//! [`EmbeddedBroker`].
//!
//! Every test starts its own [`EmbeddedBroker`] on a port the OS picks, with
//! its data in a temporary directory, and every client and broker is dropped
//! on every path (the broker's `Drop` stops it and deletes its data), so
//! tests can run in parallel and leave nothing behind.
//! Waits are on conditions with deadlines, never on fixed sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use weir_connectors::kafka::*;
use weir_connectors::Error;

/// Generous: these bound a hang, they do not measure speed.
const DEADLINE: Duration = Duration::from_secs(30);

fn broker(default_partitions: i32) -> EmbeddedBroker {
    EmbeddedBroker::start(default_partitions).expect("embedded broker starts")
}

fn consumer(config: ClientConfig) -> BaseConsumer {
    config.create().expect("consumer")
}

/// Polls `consumer` until a message arrives or `within` passes; returns the
/// time it took.
fn first_message_after(consumer: &BaseConsumer, started: Instant, within: Duration) -> Option<Duration> {
    while started.elapsed() < within {
        if let Some(m) = consumer.poll(Duration::from_millis(20)) {
            m.expect("no consumer error");
            return Some(started.elapsed());
        }
    }
    None
}

fn produce_one(bootstrap: &str, topic: &str) {
    let n = produce_lines(bootstrap, topic, &b"k\tv\n"[..], true).expect("produce");
    assert_eq!(n, 1);
}

#[test]
fn ten_thousand_keyed_records_round_trip_and_land_on_the_java_partition() {
    let b = broker(3);
    let bs = b.bootstrap_servers();
    b.create_topic("clicks", 3).unwrap();

    let n = 10_000;
    let input: String = (0..n).map(|i| format!("key-{i}\tvalue-{i}\n")).collect();
    let produced = produce_lines(&bs, "clicks", input.as_bytes(), true).unwrap();
    assert_eq!(produced, n);

    // The broker holds exactly n records, from offset 0 (the watermarks,
    // not just the reads).
    let admin_consumer = consumer(ClientSettings::new(&bs).standalone_consumer_config());
    let mut total = 0;
    for p in 0..3 {
        let (low, high) = admin_consumer
            .fetch_watermarks("clicks", p, Duration::from_secs(10))
            .unwrap();
        assert_eq!(low, 0);
        total += high;
    }
    assert_eq!(total, n as i64);

    // `tail` prints exactly the produced lines.
    let mut out = Vec::new();
    let printed = tail(
        &bs,
        "clicks",
        true,
        &mut out,
        Some(TailLimit::records_within(n, DEADLINE)),
    )
    .unwrap();
    assert_eq!(printed, n);
    let mut got: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
    let mut want: Vec<&str> = input.lines().collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);

    // Each key sits on Kafka's default partition for it, and within a
    // partition records keep the order they were produced in.
    let mut last_index: BTreeMap<i32, i64> = BTreeMap::new();
    let seen = tail_with(
        &ClientSettings::new(&bs),
        "clicks",
        true,
        Some(TailLimit::records_within(n, DEADLINE)),
        |record| {
            let Some(r) = record else { return true };
            let key = r.key.expect("keyed");
            assert_eq!(
                r.partition,
                default_partitioner(key, 3),
                "{}",
                String::from_utf8_lossy(key)
            );
            let i: i64 = std::str::from_utf8(&key[4..]).unwrap().parse().unwrap();
            let last = last_index.insert(r.partition, i);
            assert!(
                !matches!(last, Some(l) if l >= i),
                "partition {} out of order",
                r.partition
            );
            true
        },
    )
    .unwrap();
    assert_eq!(seen, n);
    assert_eq!(last_index.len(), 3, "all partitions used");
}

#[test]
fn produce_lines_splits_keys_and_skips_empty_lines() {
    let b = broker(1);
    let bs = b.bootstrap_servers();
    b.create_topic("lines", 1).unwrap();
    let input = b"a\tx\r\n\nb\ty\tz\nno-tab\n\tempty-key\n\xff\xfe\n";
    assert_eq!(produce_lines(&bs, "lines", &input[..], true).unwrap(), 5);

    let mut records = Vec::new();
    tail_with(
        &ClientSettings::new(&bs),
        "lines",
        true,
        Some(TailLimit::records_within(5, DEADLINE)),
        |r| {
            if let Some(r) = r {
                records.push((r.key.map(<[u8]>::to_vec), r.value.unwrap().to_vec()));
            }
            true
        },
    )
    .unwrap();
    let expect: Vec<(Option<Vec<u8>>, Vec<u8>)> = vec![
        (Some(b"a".to_vec()), b"x".to_vec()),
        (Some(b"b".to_vec()), b"y\tz".to_vec()),
        (None, b"no-tab".to_vec()),
        (Some(Vec::new()), b"empty-key".to_vec()),
        (None, b"\xff\xfe".to_vec()),
    ];
    assert_eq!(records, expect);

    // Without key_tab the whole line is the value.
    assert_eq!(produce_lines(&bs, "lines", &b"k\tv\n"[..], false).unwrap(), 1);
    let mut out = Vec::new();
    tail(
        &bs,
        "lines",
        true,
        &mut out,
        Some(TailLimit::records_within(6, DEADLINE)),
    )
    .unwrap();
    assert_eq!(
        out,
        b"a\tx\nb\ty\tz\nno-tab\n\tempty-key\n\xff\xfe\nk\tv\n".to_vec(),
        "null keys print the value alone"
    );
}

#[test]
fn produce_lines_creates_a_missing_topic_with_the_broker_default() {
    let b = broker(5);
    let bs = b.bootstrap_servers();
    produce_one(&bs, "fresh");
    assert_eq!(Admin::connect(&bs).unwrap().partition_count("fresh").unwrap(), Some(5));
}

#[test]
fn delivery_tracker_counts_and_tracks_partition_ends_and_offsets() {
    use weir_connectors::kafka::delivery::{TRACK_END, TRACK_OFFSET};

    let b = broker(2);
    let bs = b.bootstrap_servers();
    b.create_topic("log", 2).unwrap();
    let producer: BaseProducer<DeliveryTracker> = ClientSettings::new(&bs)
        .producer_config()
        .create_with_context(DeliveryTracker::new())
        .expect("producer");
    let send = |partition: i32, opaque: usize| {
        let record = BaseRecord::<str, str, usize>::with_opaque_to("log", opaque)
            .partition(partition)
            .payload("v");
        producer.send(record).map_err(|(e, _)| e).expect("send");
    };
    // Partition 0: changelog records at offsets 0..=9, then a checkpoint
    // record (offset 10, tracked under its own opaque).
    for _ in 0..10 {
        send(0, TRACK_END);
    }
    send(0, TRACK_OFFSET + 1);
    // Partition 1: changelog records at 0..=4, then untracked ones.
    for _ in 0..5 {
        send(1, TRACK_END);
    }
    for _ in 0..3 {
        send(1, UNTRACKED);
    }
    flush_producer(&producer, DEADLINE).unwrap();

    let tracker = producer.context();
    tracker.check("log").unwrap();
    assert_eq!(
        (tracker.delivered(), tracker.failed(), tracker.first_error()),
        (19, 0, None)
    );
    let tracked = tracker.take_tracked();
    assert_eq!(
        tracked.ends,
        [(("log".to_string(), 0), 10), (("log".to_string(), 1), 5)].into()
    );
    assert_eq!(tracked.offsets, [(TRACK_OFFSET + 1, 10)].into());
    assert_eq!(tracker.take_tracked(), Tracked::default(), "taking starts over");

    // After the take, only what was delivered since.
    send(1, TRACK_END);
    flush_producer(&producer, DEADLINE).unwrap();
    assert_eq!(tracker.take_tracked().ends, [(("log".to_string(), 1), 9)].into());
    assert_eq!(tracker.delivered(), 20);
}

#[test]
fn tail_waits_for_a_missing_topic_until_its_limit() {
    let b = broker(1);
    let bs = b.bootstrap_servers();
    let started = Instant::now();
    let limit = TailLimit {
        timeout: Some(Duration::from_millis(300)),
        ..TailLimit::default()
    };
    assert_eq!(tail(&bs, "nowhere", true, Vec::new(), Some(limit)).unwrap(), 0);
    assert!(started.elapsed() < DEADLINE);
    // Waiting did not create it.
    assert_eq!(Admin::connect(&bs).unwrap().partition_count("nowhere").unwrap(), None);

    // A tail started before the topic exists sees records produced later.
    std::thread::scope(|s| {
        let tailer = s.spawn(|| {
            let mut out = Vec::new();
            let n = tail(
                &bs,
                "later",
                true,
                &mut out,
                Some(TailLimit::records_within(1, DEADLINE)),
            );
            (n, out)
        });
        produce_one(&bs, "later");
        let (n, out) = tailer.join().unwrap();
        assert_eq!(n.unwrap(), 1);
        assert_eq!(out, b"k\tv\n");
    });
}

#[test]
fn tail_from_the_end_skips_old_records() {
    let b = broker(1);
    let bs = b.bootstrap_servers();
    produce_one(&bs, "old");
    let limit = TailLimit {
        timeout: Some(Duration::from_millis(500)),
        ..TailLimit::default()
    };
    assert_eq!(tail(&bs, "old", false, Vec::new(), Some(limit)).unwrap(), 0);
}

/// Runs a tail of `topic` from its end on another thread, calls `then`
/// once the tail says it is positioned, and returns what the tail printed
/// (it stops after `records` records).
fn tail_from_now(bootstrap: &str, topic: &str, records: u64, then: impl FnOnce()) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let positioned = Arc::new(AtomicBool::new(false));
    let limit = TailLimit {
        positioned: Some(positioned.clone()),
        ..TailLimit::records_within(records, DEADLINE)
    };
    std::thread::scope(|s| {
        let tailer = s.spawn(|| {
            let mut out = Vec::new();
            let n = tail(bootstrap, topic, false, &mut out, Some(limit));
            (n, out)
        });
        let started = Instant::now();
        while !positioned.load(Ordering::Acquire) {
            assert!(!tailer.is_finished(), "the tail ended before it was positioned");
            assert!(
                started.elapsed() < DEADLINE,
                "the tail was not positioned within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        then();
        let (n, out) = tailer.join().unwrap();
        assert_eq!(n.unwrap(), records);
        String::from_utf8(out).unwrap()
    })
}

/// A tail from the end fixes each partition's end (its high watermark)
/// before it says it is positioned: the records appended right after are
/// all shown, the older ones none.
#[test]
fn tail_from_the_end_shows_every_record_appended_once_it_is_positioned() {
    let b = broker(1);
    let bs = b.bootstrap_servers();
    produce_lines(&bs, "busy", &b"old\t1\nold\t2\n"[..], true).unwrap();
    // Connected before the tail starts, so that the new records follow its
    // start within a millisecond.
    let producer: BaseProducer = ClientSettings::new(&bs).producer_config().create().unwrap();
    producer.client().fetch_metadata(Some("busy"), DEADLINE).unwrap();
    let out = tail_from_now(&bs, "busy", 3, || {
        for v in ["1", "2", "3"] {
            producer.send(BaseRecord::to("busy").key("new").payload(v)).unwrap();
        }
        flush_producer(&producer, DEADLINE).unwrap();
    });
    assert_eq!(out, "new\t1\nnew\t2\nnew\t3\n");
}

/// All of a topic created after the tail started is new to it: it is shown
/// from its first record. (A tail that took the end it found when the
/// topic appeared skipped what was written before its next look: the live
/// feed behind `/emoji/live`, started with the daemon before its output
/// topic existed, missed a closed window that way.)
#[test]
fn tail_from_the_end_shows_a_topic_created_after_it_started_from_its_first_record() {
    let b = broker(1);
    let bs = b.bootstrap_servers();
    let producer: BaseProducer = ClientSettings::new(&bs).producer_config().create().unwrap();
    producer.client().fetch_metadata(None, DEADLINE).unwrap();
    let admin = Admin::connect(&bs).unwrap();
    admin.topics().unwrap();
    let out = tail_from_now(&bs, "created-later", 2, || {
        // Created and written at once, long before the tail's next look.
        admin.ensure_topics(&[TopicSpec::new("created-later", 1)]).unwrap();
        producer
            .client()
            .fetch_metadata(Some("created-later"), DEADLINE)
            .unwrap();
        for (k, v) in [("a", "1"), ("b", "2")] {
            producer
                .send(BaseRecord::to("created-later").key(k).payload(v))
                .unwrap();
        }
        flush_producer(&producer, DEADLINE).unwrap();
        // The tail looks for the topic every 100 ms: its next look comes
        // after the records are in (they take ~20 ms), and surely so after
        // this pause. The outcome does not depend on it; without it the
        // test would only less surely catch a tail that starts at the end
        // it finds.
        std::thread::sleep(Duration::from_millis(250));
    });
    assert_eq!(out, "a\t1\nb\t2\n");
}

/// weir's broker starts a new group's first generation at once (no
/// `group.initial.rebalance.delay.ms`, 3 s on Kafka), so a new consumer
/// group gets its first record quickly.
#[test]
fn consumer_group_join_is_fast() {
    let b = broker(1);
    let bs = b.bootstrap_servers();
    b.create_topic("in", 1).unwrap();
    produce_one(&bs, "in");

    let c = consumer(ClientSettings::new(&bs).consumer_config("fast-app"));
    let started = Instant::now();
    c.subscribe(&["in"]).unwrap();
    let took = first_message_after(&c, started, DEADLINE).expect("a message");
    assert!(took < Duration::from_secs(2), "first record after {took:?}");
}

/// `range` gives partition p of every subscribed topic with the same
/// partition count to the same member, which weir's tasks rely on.
#[test]
fn range_assignment_co_partitions_topics() {
    let b = broker(3);
    let bs = b.bootstrap_servers();
    b.create_topic("left", 3).unwrap();
    b.create_topic("right", 3).unwrap();
    let settings = ClientSettings::new(&bs);
    let members = [
        consumer(settings.consumer_config("joiners")),
        consumer(settings.consumer_config("joiners")),
    ];
    for m in &members {
        m.subscribe(&["left", "right"]).unwrap();
    }

    let started = Instant::now();
    let assignments = loop {
        assert!(started.elapsed() < DEADLINE, "group never settled");
        for m in &members {
            if let Some(r) = m.poll(Duration::from_millis(20)) {
                r.unwrap();
            }
        }
        let a: Vec<BTreeSet<(String, i32)>> = members
            .iter()
            .map(|m| {
                m.assignment()
                    .unwrap()
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect()
            })
            .collect();
        let total: usize = a.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<_> = a.iter().flatten().collect();
        if total == 6 && union.len() == 6 && a.iter().all(|s| !s.is_empty()) {
            break a;
        }
    };
    for a in &assignments {
        let of = |topic: &str| -> BTreeSet<i32> { a.iter().filter(|(t, _)| t == topic).map(|(_, p)| *p).collect() };
        assert_eq!(of("left"), of("right"), "member assignment {a:?}");
    }
}

#[test]
fn ensure_topics_creates_missing_topics_with_their_configs() {
    let b = broker(3);
    let admin = Admin::connect(&b.bootstrap_servers()).unwrap();
    assert!(admin.is_weir_broker());
    b.create_topic("source", 2).unwrap();

    let specs = [
        TopicSpec::new("app-agg-repartition", 6).config("retention.ms", "3600000"),
        TopicSpec::new("app-agg-changelog", 6).compacted(),
        TopicSpec::with_default_partitions("app-dlq"),
        TopicSpec::new("source", 4),
    ];
    let mut created = admin.ensure_topics(&specs).unwrap();
    created.sort();
    assert_eq!(created, ["app-agg-changelog", "app-agg-repartition", "app-dlq"]);
    let topics = admin.topics().unwrap();
    assert_eq!(topics["app-agg-repartition"], 6);
    assert_eq!(topics["app-agg-changelog"], 6);
    assert_eq!(topics["app-dlq"], 3, "the broker's default");
    assert_eq!(topics["source"], 2, "an existing topic is left alone");

    // The configs were set on the topics, as the broker describes them.
    assert_eq!(
        topic_config(&b, "app-agg-changelog", "cleanup.policy").as_deref(),
        Some("compact")
    );
    assert_eq!(
        topic_config(&b, "app-agg-repartition", "cleanup.policy").as_deref(),
        Some("delete")
    );
    assert_eq!(
        topic_config(&b, "app-agg-repartition", "retention.ms").as_deref(),
        Some("3600000")
    );

    // Idempotent.
    assert!(admin.ensure_topics(&specs).unwrap().is_empty());

    // Bad input fails before any round trip.
    assert!(matches!(
        admin.ensure_topics(&[TopicSpec::new("bad name", 1)]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        admin.ensure_topics(&[TopicSpec::new("zero", 0)]),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(admin.partition_count("zero").unwrap(), None);
}

/// The value of `key` in the configuration of `topic`, as DescribeConfigs
/// reports it.
fn topic_config(b: &EmbeddedBroker, topic: &str, key: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> = ClientSettings::new(b.bootstrap_servers())
        .admin_config()
        .create()
        .unwrap();
    let options = AdminOptions::new().request_timeout(Some(DEADLINE));
    let results =
        futures_executor::block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options)).unwrap();
    let resource = results.into_iter().next().unwrap().expect("described");
    resource.get(key).and_then(|e| e.value.clone())
}

#[test]
fn create_topic_validates_and_refuses_duplicates() {
    assert!(matches!(EmbeddedBroker::start(0), Err(Error::InvalidArgument(_))));
    let b = broker(1);
    b.create_topic("once", 2).unwrap();
    match b.create_topic("once", 3) {
        Err(Error::TopicCreation { topic, reason }) => {
            assert_eq!((topic.as_str(), reason.as_str()), ("once", "topic already exists"))
        }
        other => panic!("a second create_topic: {other:?}"),
    }
    assert!(matches!(b.create_topic("", 1), Err(Error::InvalidArgument(_))));
    assert!(matches!(b.create_topic("a/b", 1), Err(Error::InvalidArgument(_))));
    assert!(matches!(b.create_topic("neg", -1), Err(Error::InvalidArgument(_))));
    let admin = Admin::connect(&b.bootstrap_servers()).unwrap();
    assert_eq!(admin.partition_count("once").unwrap(), Some(2));
}

/// A producer's metadata request auto-creates an unknown topic with the
/// broker's `default_partitions` (`auto.create.topics.enable`); weir's
/// consumers and admin client never auto-create.
#[test]
fn only_producers_auto_create_topics_with_the_broker_default() {
    let b = broker(2);
    let bs = b.bootstrap_servers();
    let c = consumer(ClientSettings::new(&bs).consumer_config("g"));
    let md = c.fetch_metadata(Some("by-consumer"), DEADLINE).unwrap();
    assert!(md.topics()[0].error().is_some());
    let admin = Admin::connect(&bs).unwrap();
    assert_eq!(admin.partition_count("by-consumer").unwrap(), None);

    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", &bs).create().unwrap();
    let md = p.client().fetch_metadata(Some("by-producer"), DEADLINE).unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 2);
    assert_eq!(admin.partition_count("by-producer").unwrap(), Some(2));
}

/// Exactly-once rests on these: a `read_committed` reader (weir's default)
/// does not see the records of an aborted transaction, and offsets sent in
/// a committed transaction are the group's committed offsets.
#[test]
fn read_committed_skips_aborted_records_and_transactions_commit_offsets() {
    let b = broker(1);
    let bs = b.bootstrap_servers();
    b.create_topic("txn-in", 1).unwrap();
    b.create_topic("txn-out", 1).unwrap();
    produce_one(&bs, "txn-in");

    let settings = ClientSettings::new(&bs);
    let group = consumer(settings.consumer_config("txn-app"));
    group.subscribe(&["txn-in"]).unwrap();
    first_message_after(&group, Instant::now(), DEADLINE).expect("joined and read");

    let tp: BaseProducer = settings.transactional_producer_config("txn-1").create().unwrap();
    tp.init_transactions(DEADLINE).unwrap();
    tp.begin_transaction().unwrap();
    tp.send(BaseRecord::<str, str>::to("txn-out").payload("aborted"))
        .unwrap();
    tp.flush(DEADLINE).unwrap();
    tp.abort_transaction(DEADLINE).unwrap();
    tp.begin_transaction().unwrap();
    tp.send(BaseRecord::<str, str>::to("txn-out").payload("committed"))
        .unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset("txn-in", 0, Offset::Offset(1)).unwrap();
    tp.send_offsets_to_transaction(&offsets, &group.group_metadata().unwrap(), DEADLINE)
        .unwrap();
    tp.commit_transaction(DEADLINE).unwrap();

    // Read until the committed record: read_committed sees nothing before
    // it, read_uncommitted sees the aborted one too.
    let read = |read_committed: bool| {
        let mut settings = settings.clone();
        settings.read_committed = read_committed;
        let mut values = Vec::new();
        tail_with(
            &settings,
            "txn-out",
            true,
            Some(TailLimit::records_within(2, DEADLINE)),
            |r| {
                let Some(r) = r else { return true };
                let value = String::from_utf8_lossy(r.value.unwrap()).into_owned();
                let done = value == "committed";
                values.push((value, r.offset));
                !done
            },
        )
        .unwrap();
        values
    };
    assert!(settings.read_committed);
    // Offsets: 0 aborted, 1 its abort marker, 2 committed, 3 its marker.
    assert_eq!(read(true), [("committed".to_string(), 2)]);
    assert_eq!(read(false), [("aborted".to_string(), 0), ("committed".to_string(), 2)]);

    let mut query = TopicPartitionList::new();
    query.add_partition("txn-in", 0);
    let committed = group.committed_offsets(query, DEADLINE).unwrap();
    assert_eq!(committed.elements()[0].offset(), Offset::Offset(1));
}

#[test]
fn dropping_the_broker_closes_its_port_and_deletes_its_data() {
    let b = broker(1);
    let addr = b.bootstrap_servers();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    TcpStream::connect(&addr).expect("listening while alive");
    let dir = b.data_dir().to_path_buf();
    assert!(dir.is_dir(), "{}", dir.display());
    drop(b);
    assert!(TcpStream::connect(&addr).is_err(), "still listening after drop");
    assert!(!dir.exists(), "its data outlived it in {}", dir.display());
}

#[test]
fn embedded_broker_handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<EmbeddedBroker>();
}
