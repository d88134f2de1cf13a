//! Small helpers around rdkafka clients that avoid fixed delays.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::TopicPartitionList;

use crate::{Error, Result};

/// Serve the delivery reports `producer` has queued after waiting `wait`,
/// without rdkafka's blocking `poll`.
///
/// Why: rdkafka 0.39's `BaseProducer::poll(timeout)` runs to its deadline,
/// re-polling librdkafka with the time left truncated to whole
/// milliseconds; once less than a millisecond is left it polls with a zero
/// timeout in a loop, a busy wait. A `poll(1 ms)` after each delivery
/// report, or a `poll(10 ms)` tick, burnt up to a millisecond each time
/// (measured: a one-record-a-second generator took 9 % of a core). A sleep
/// and a zero-timeout poll cost a wakeup each.
pub fn serve_deliveries_after<C: ProducerContext>(producer: &BaseProducer<C>, wait: Duration) {
    if !wait.is_zero() {
        std::thread::sleep(wait);
    }
    producer.poll(Duration::ZERO);
}

/// Waits until every record sent through `producer` has been delivered (or
/// has failed, which the producer's context hears about), serving delivery
/// reports as they arrive.
///
/// Why not `Producer::flush`: rdkafka 0.39 implements it as "ask librdkafka,
/// then `poll(100 ms)`", and its `poll` always runs to its deadline, so a
/// flush with anything in flight takes at least 100 ms (measured: 100 ms for
/// one record on a local broker, whose round trip is well under 1 ms).
/// weir flushes at every commit, so this loop serves delivery reports every
/// 200 µs (see [`serve_deliveries_after`]) and returns as soon as
/// librdkafka's in-flight count reaches zero.
pub fn flush_producer<C: ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) -> Result<()> {
    const STEP: Duration = Duration::from_micros(200);
    let deadline = Instant::now() + timeout;
    producer.poll(Duration::ZERO);
    loop {
        // `in_flight_count` covers queued and in-flight records *and*
        // delivery reports not yet served, so zero means "all reported".
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                what: format!("{} record(s) to be delivered", producer.in_flight_count()),
                after: timeout,
            });
        }
        serve_deliveries_after(producer, STEP.min(deadline - now));
    }
}

/// Assigns `partitions` to `consumer` after making sure the consumer knows
/// their leaders.
///
/// Why: when a partition is assigned at a logical offset (beginning, end)
/// before the client has metadata for it, librdkafka backs off 500 ms
/// before it asks for the offset (measured on a local broker: first
/// record 501 ms after `assign`, against 2 ms with metadata fetched first).
/// A restore from a changelog or a `weir tail` would pay that on every
/// start.
pub fn assign_at<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: &TopicPartitionList,
    timeout: Duration,
) -> Result<()> {
    let topics: BTreeSet<String> = partitions.elements().iter().map(|e| e.topic().to_string()).collect();
    for topic in &topics {
        consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| Error::kafka(format!("fetching metadata for {topic:?}"), e))?;
    }
    consumer
        .assign(partitions)
        .map_err(|e| Error::kafka(format!("assigning partitions of {topics:?}"), e))
}
