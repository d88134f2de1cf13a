//! Minimal reproduction of a broker defect seen on noida-db 0.2.3: a
//! `read_committed` fetch that starts *after* the abort marker of an
//! aborted transaction still lists that transaction in the response's
//! `AbortedTransactions`, so a client skips every later batch of the same
//! producer id (a later, committed transaction) as if it were aborted.
//! Kafka lists only the aborted transactions that overlap the fetched
//! range (`lastOffset >= fetchOffset`).
//!
//! `cargo run --release -p weir-connectors --example aborted_fetch_repro -- [HOST:PORT]`
//! against an empty broker (without an address, against weir's own broker,
//! started in-process with throw-away data): prints what a `read_committed`
//! reader sees from each start offset (Kafka: c1-c3 and d1-d3 from offset
//! 0, d1-d3 from offsets 4 and 8).

use std::time::Duration;

use weir_connectors::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use weir_connectors::kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir_connectors::kafka::rdkafka::{Message, Offset, TopicPartitionList};
use weir_connectors::kafka::{Admin, ClientSettings, EmbeddedBroker, TopicSpec};

const TOPIC: &str = "aborted-fetch-repro";

fn main() {
    let (brokers, _embedded) = match std::env::args().nth(1) {
        Some(addr) => (addr, None),
        None => {
            let broker = EmbeddedBroker::start(1).expect("starting the embedded broker");
            (broker.bootstrap_servers(), Some(broker))
        }
    };
    println!("broker: {brokers}");
    let settings = ClientSettings::new(brokers.as_str());
    Admin::new(&settings)
        .and_then(|a| a.ensure_topics(&[TopicSpec::new(TOPIC, 1)]))
        .expect("topic");
    let producer: BaseProducer = settings
        .transactional_producer_config("repro")
        .create()
        .expect("producer");
    producer.init_transactions(Duration::from_secs(30)).expect("init");
    let txn = |values: &[&str], commit: bool| {
        producer.begin_transaction().expect("begin");
        for v in values {
            producer
                .send(BaseRecord::<(), str>::to(TOPIC).payload(*v).partition(0))
                .expect("send");
        }
        producer.flush(Duration::from_secs(10)).expect("flush");
        if commit {
            producer.commit_transaction(Duration::from_secs(10)).expect("commit");
        } else {
            producer.abort_transaction(Duration::from_secs(10)).expect("abort");
        }
    };
    txn(&["c1", "c2", "c3"], true); // offsets 0-2, commit marker 3
    txn(&["a1", "a2", "a3"], false); // offsets 4-6, abort marker 7
    txn(&["d1", "d2", "d3"], true); // offsets 8-10, commit marker 11
    for from in [0, 4, 8] {
        let c: BaseConsumer = settings
            .clone()
            .with("isolation.level", "read_committed")
            .standalone_consumer_config()
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, 0, Offset::Offset(from)).expect("tpl");
        c.assign(&tpl).expect("assign");
        let mut seen = Vec::new();
        for _ in 0..40 {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                seen.push(format!(
                    "{}@{}",
                    String::from_utf8_lossy(m.payload().unwrap_or_default()),
                    m.offset()
                ));
            }
        }
        println!("read_committed from offset {from}: {seen:?}");
    }
}
