"""Round trips through a Kafka-protocol broker with a stock Python client.

    python kafka_clients.py CLIENT BOOTSTRAP TOPIC GROUP COUNT

CLIENT is one of confluent-kafka, kafka-python, aiokafka. The script
produces COUNT keyed records to TOPIC (created by the producer's metadata
request, as a stock client does), consumes them in consumer group GROUP,
commits, and checks with a fresh consumer of the same group that the
committed offset is COUNT. It exits non-zero with a message naming what
differed; on success it prints one line:

    OK CLIENT VERSION produced COUNT consumed COUNT committed COUNT

`confluent-kafka-transactions` instead commits one transaction, aborts one,
commits another, and checks that a read_committed consumer sees exactly the
committed records (and a read_uncommitted one all of them).

The tests in tests/e2e/broker_clients.rs run it against weir's broker.
No optional codec is installed: records are produced uncompressed.
"""

import asyncio
import sys
import time

DEADLINE_S = 60


def expected(count):
    return [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(count)]


def fail(message):
    print(f"FAIL {message}", file=sys.stderr)
    sys.exit(1)


def check(client, version, got, want, committed):
    if got != want:
        first = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
        fail(f"{client}: consumed {len(got)} records, expected {len(want)}; first difference at {first}")
    if committed != len(want):
        fail(f"{client}: committed offset {committed}, expected {len(want)}")
    print(f"OK {client} {version} produced {len(want)} consumed {len(got)} committed {committed}")


def run_confluent(bootstrap, topic, group, count):
    import confluent_kafka
    from confluent_kafka import Consumer, Producer, TopicPartition

    want = expected(count)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in want:
        producer.produce(topic, key=key, value=value, partition=0)
        producer.poll(0)
    left = producer.flush(DEADLINE_S)
    if left:
        fail(f"confluent-kafka: {left} records not delivered")

    def consumer():
        return Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })

    c = consumer()
    c.subscribe([topic])
    got = []
    deadline = time.time() + DEADLINE_S
    while len(got) < count and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            fail(f"confluent-kafka: consumer error {m.error()}")
        got.append((m.key(), m.value()))
    c.commit(asynchronous=False)
    c.close()

    c = consumer()
    committed = c.committed([TopicPartition(topic, 0)], timeout=DEADLINE_S)[0].offset
    c.close()
    check("confluent-kafka", confluent_kafka.__version__, got, want, committed)


def run_confluent_transactions(bootstrap, topic, group, count):
    import confluent_kafka
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{group}-txn"})
    producer.init_transactions(DEADLINE_S)
    sent = {"committed": [], "aborted": []}
    for outcome, n in [("committed", count), ("aborted", count), ("committed", count // 2)]:
        producer.begin_transaction()
        for i in range(n):
            value = f"{outcome}-{len(sent[outcome])}".encode()
            sent[outcome].append(value)
            producer.produce(topic, value=value, partition=0)
        if outcome == "committed":
            producer.commit_transaction(DEADLINE_S)
        else:
            # abort_transaction() purges records not yet sent; flushing first
            # makes the broker store them, so that read_committed readers
            # have aborted records to skip.
            left = producer.flush(DEADLINE_S)
            if left:
                fail(f"confluent-kafka transactions: {left} records not sent before the abort")
            producer.abort_transaction(DEADLINE_S)

    def read(isolation):
        c = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"{group}-{isolation}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
        })
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.time() + DEADLINE_S
        while time.time() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    break
                fail(f"confluent-kafka transactions: consumer error {m.error()}")
            got.append(m.value())
        c.close()
        return got

    committed = read("read_committed")
    if committed != sent["committed"]:
        fail(f"read_committed saw {len(committed)} records, expected the {len(sent['committed'])} committed ones: "
             f"{committed[:5]}...")
    everything = read("read_uncommitted")
    if sorted(everything) != sorted(sent["committed"] + sent["aborted"]):
        fail(f"read_uncommitted saw {len(everything)} records, expected {len(sent['committed']) + len(sent['aborted'])}")
    print(f"OK confluent-kafka-transactions {confluent_kafka.__version__} committed {len(committed)} "
          f"aborted {len(sent['aborted'])} read_committed {len(committed)} read_uncommitted {len(everything)}")


def run_kafka_python(bootstrap, topic, group, count):
    import kafka
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    want = expected(count)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    futures = [producer.send(topic, key=k, value=v, partition=0) for k, v in want]
    producer.flush(DEADLINE_S)
    for f in futures:
        f.get(timeout=DEADLINE_S)
    producer.close()

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                      enable_auto_commit=False)
    got = []
    deadline = time.time() + DEADLINE_S
    while len(got) < count and time.time() < deadline:
        for records in c.poll(timeout_ms=1000).values():
            got.extend((r.key, r.value) for r in records)
    c.commit()
    c.close()

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    committed = c.committed(TopicPartition(topic, 0))
    c.close()
    check("kafka-python", kafka.__version__, got, want, committed)


def run_aiokafka(bootstrap, topic, group, count):
    import aiokafka
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    want = expected(count)

    async def go():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            batch = [await producer.send(topic, key=k, value=v, partition=0) for k, v in want]
            await asyncio.gather(*batch)
        finally:
            await producer.stop()

        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False)
        await c.start()
        got = []
        try:
            deadline = time.time() + DEADLINE_S
            while len(got) < count and time.time() < deadline:
                for records in (await c.getmany(timeout_ms=1000)).values():
                    got.extend((r.key, r.value) for r in records)
            await c.commit()
        finally:
            await c.stop()

        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await c.start()
        try:
            committed = await c.committed(TopicPartition(topic, 0))
        finally:
            await c.stop()
        return got, committed

    got, committed = asyncio.run(go())
    check("aiokafka", aiokafka.__version__, got, want, committed)


CLIENTS = {
    "confluent-kafka": run_confluent,
    "confluent-kafka-transactions": run_confluent_transactions,
    "kafka-python": run_kafka_python,
    "aiokafka": run_aiokafka,
}

if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] not in CLIENTS:
        fail(f"usage: {sys.argv[0]} {{{'|'.join(CLIENTS)}}} BOOTSTRAP TOPIC GROUP COUNT")
    client, bootstrap, topic, group, count = sys.argv[1:]
    CLIENTS[client](bootstrap, topic, group, int(count))
