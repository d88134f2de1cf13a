//! Transactions end to end: the broker in-process, driven by librdkafka
//! (rdkafka) as a stock transactional producer and read_committed consumer.

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Polls for delivery reports on a thread of its own, as abort and commit need.
type TxnProducer = ThreadedProducer<DefaultProducerContext>;
use rdkafka::{Message, Offset, TopicPartitionList};
use weir_broker::{Broker, BrokerConfig, BrokerSettings};

const T: Duration = Duration::from_secs(30);

fn start(dir: &Path) -> Broker {
    Broker::start(BrokerConfig {
        dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        settings: BrokerSettings::default(),
    })
    .expect("broker starts")
}

fn producer(broker: &Broker, transactional_id: &str, timeout_ms: u32) -> TxnProducer {
    let p: TxnProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr().to_string())
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .create()
        .expect("producer");
    p.init_transactions(T).expect("init_transactions");
    p
}

fn send(p: &TxnProducer, topic: &str, values: &[String]) {
    for v in values {
        loop {
            match p.send(BaseRecord::<(), _>::to(topic).payload(v.as_bytes()).partition(0)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("send: {e}"),
            }
        }
    }
}

fn values(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

fn consumer(broker: &Broker, group: &str, isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.addr().to_string())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer")
}

/// Every value of partition 0 from the beginning until the consumer reaches
/// the end (the high watermark, or the LSO for read_committed).
fn read_all(broker: &Broker, topic: &str, isolation: &str) -> Vec<String> {
    let c = consumer(broker, &format!("reader-{isolation}"), isolation);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + T;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => return got,
            Some(Err(e)) => panic!("consumer error: {e}"),
            Some(Ok(m)) => got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap()),
        }
    }
    panic!(
        "no end of partition within {T:?} ({isolation}, {} values read)",
        got.len()
    );
}

/// (log start, end): the high watermark for read_uncommitted, the last
/// stable offset for read_committed (librdkafka's ListOffsets uses the
/// consumer's isolation level).
fn watermarks(broker: &Broker, topic: &str, isolation: &str) -> (i64, i64) {
    consumer(broker, &format!("watermarks-{isolation}"), isolation)
        .fetch_watermarks(topic, 0, T)
        .expect("watermarks")
}

fn committed(broker: &Broker, group: &str, topic: &str) -> Offset {
    let c = consumer(broker, group, "read_committed");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c.committed_offsets(tpl, T).expect("committed offsets");
    got.find_partition(topic, 0).unwrap().offset()
}

fn offsets(topic: &str, offset: i64) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset)).unwrap();
    tpl
}

#[test]
fn commit_abort_commit_offsets_restart_and_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "txn-data";
    let group = "txn-group";
    let broker = start(dir.path());

    let p = producer(&broker, "txn-a", 60_000);
    let group_meta = consumer(&broker, group, "read_committed").group_metadata().unwrap();
    let committed_values = [values("c", 0..10), values("c", 10..15)];
    let aborted_values = values("a", 0..10);

    p.begin_transaction().unwrap();
    send(&p, topic, &committed_values[0]);
    p.commit_transaction(T).expect("first commit");

    p.begin_transaction().unwrap();
    send(&p, topic, &aborted_values);
    p.send_offsets_to_transaction(&offsets(topic, 7), &group_meta, T)
        .unwrap();
    // abort_transaction purges what was not sent yet: flush so the aborted
    // records are in the log (read_uncommitted must see them).
    p.flush(T).unwrap();
    p.abort_transaction(T).expect("abort");
    assert_eq!(
        committed(&broker, group, topic),
        Offset::Invalid,
        "an aborted transaction commits no offsets"
    );

    p.begin_transaction().unwrap();
    send(&p, topic, &committed_values[1]);
    p.send_offsets_to_transaction(&offsets(topic, 9), &group_meta, T)
        .unwrap();
    p.commit_transaction(T).expect("second commit");
    assert_eq!(committed(&broker, group, topic), Offset::Offset(9));

    let want: Vec<String> = committed_values.concat();
    let everything: Vec<String> = [
        committed_values[0].clone(),
        aborted_values.clone(),
        committed_values[1].clone(),
    ]
    .concat();
    assert_eq!(read_all(&broker, topic, "read_committed"), want);
    assert_eq!(read_all(&broker, topic, "read_uncommitted"), everything);
    // 25 records and 3 markers; nothing open.
    assert_eq!(watermarks(&broker, topic, "read_uncommitted").1, 28);
    assert_eq!(watermarks(&broker, topic, "read_committed").1, 28);
    drop(p);

    // A producer that dies inside a transaction, with a short timeout.
    let timeout = Duration::from_millis(3000);
    let zombie = producer(&broker, "txn-zombie", timeout.as_millis() as u32);
    zombie.begin_transaction().unwrap();
    let began = Instant::now();
    send(&zombie, topic, &values("z", 0..2));
    zombie.flush(T).expect("zombie records reach the broker");
    drop(zombie); // librdkafka does not end the transaction on destroy

    drop(broker);
    let broker = start(dir.path());

    // Committed data and offsets survive the restart.
    assert_eq!(read_all(&broker, topic, "read_committed"), want);
    assert_eq!(committed(&broker, group, topic), Offset::Offset(9));

    // The zombie's transaction is open (LSO at its first record) until it times out.
    let (_, hw) = watermarks(&broker, topic, "read_uncommitted");
    assert_eq!(hw, 30);
    let (_, lso) = watermarks(&broker, topic, "read_committed");
    if began.elapsed() < timeout {
        assert_eq!(lso, 28, "the open transaction holds the LSO");
    }
    let deadline = Instant::now() + timeout + T;
    loop {
        let (_, lso) = watermarks(&broker, topic, "read_committed");
        if lso == 31 {
            break; // aborted: the ABORT marker at 30, nothing open
        }
        assert!(
            Instant::now() < deadline,
            "the timed-out transaction was not aborted (LSO {lso})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(began.elapsed() >= timeout, "aborted before its timeout");
    assert_eq!(
        read_all(&broker, topic, "read_committed"),
        want,
        "the zombie's records are aborted"
    );

    // The id is usable again (the epoch was bumped by the abort).
    let p = producer(&broker, "txn-zombie", 60_000);
    p.begin_transaction().unwrap();
    send(&p, topic, &values("after", 0..1));
    p.commit_transaction(T).expect("commit after the timeout");
    let mut all = want.clone();
    all.push("after-0".into());
    assert_eq!(read_all(&broker, topic, "read_committed"), all);
}

#[test]
fn a_new_producer_instance_fences_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "txn-fence";
    let broker = start(dir.path());

    let old = producer(&broker, "txn-f", 60_000);
    old.begin_transaction().unwrap();
    send(&old, topic, &values("old", 0..3));
    old.flush(T).unwrap();

    // The new instance aborts the old one's transaction and bumps the epoch.
    let new = producer(&broker, "txn-f", 60_000);
    let err = old
        .commit_transaction(T)
        .expect_err("the fenced producer cannot commit");
    match &err {
        KafkaError::Transaction(e) => assert!(e.is_fatal(), "fencing is fatal: {e}"),
        other => panic!("unexpected error {other}"),
    }

    new.begin_transaction().unwrap();
    send(&new, topic, &values("new", 0..2));
    new.commit_transaction(T).expect("the new instance commits");
    assert_eq!(read_all(&broker, topic, "read_committed"), values("new", 0..2));
    assert_eq!(
        read_all(&broker, topic, "read_uncommitted"),
        [values("old", 0..3), values("new", 0..2)].concat()
    );
}
