//! `weir produce` and `weir tail`: lines in, lines out.

use std::io::{BufRead, BufWriter, ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use weir_runtime::manager::unwrap_repartition_value;

use super::admin::{Admin, TopicSpec};
use super::clients::{assign_at, flush_producer};
use super::config::ClientSettings;
use super::delivery::{DeliveryTracker, UNTRACKED};
use crate::{Error, Result};

/// Produces each line of `reader` as one record to `topic` on `brokers`
/// (what `weir produce` does) and returns how many were delivered.
///
/// With `key_tab`, a line `key<TAB>value` becomes a record with that key
/// (split at the first tab); a line without a tab gets a null key. Lines
/// may hold any bytes; the trailing `\n` (and a `\r` before it) is removed
/// and empty lines are skipped. A missing topic is created first with the
/// cluster's default partition count (through the admin API), so that it
/// gets the partition count the cluster was configured with rather than
/// whatever auto-creation does.
///
/// Returns only after every record was delivered (acknowledged by the
/// broker), or with [`Error::Delivery`] if any was not.
pub fn produce_lines(brokers: &str, topic: &str, reader: impl BufRead, key_tab: bool) -> Result<u64> {
    produce_lines_with(&ClientSettings::new(brokers), topic, reader, key_tab)
}

/// [`produce_lines`] with explicit client settings.
pub fn produce_lines_with(
    settings: &ClientSettings,
    topic: &str,
    mut reader: impl BufRead,
    key_tab: bool,
) -> Result<u64> {
    Admin::new(settings)?.ensure_topics(&[TopicSpec::with_default_partitions(topic)])?;
    let producer: BaseProducer<DeliveryTracker> = settings
        .producer_config()
        .create_with_context(DeliveryTracker::new())
        .map_err(|e| Error::kafka("creating the producer", e))?;

    let mut line = Vec::with_capacity(256);
    let mut sent: u64 = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let record = trim_line_end(&line);
        if record.is_empty() {
            continue;
        }
        let (key, value) = match (key_tab, record.iter().position(|&b| b == b'\t')) {
            (true, Some(tab)) => (Some(&record[..tab]), &record[tab + 1..]),
            _ => (None, record),
        };
        send_with_backpressure(&producer, topic, key, value)?;
        sent += 1;
        if sent & 1023 == 0 {
            // Serve delivery reports so they do not pile up.
            producer.poll(Duration::ZERO);
        }
    }
    // Records time out after `message.timeout.ms`, so this cannot hang
    // forever; the margin covers the last batch's round trip.
    let flush_timeout = Duration::from_millis(u64::from(settings.message_timeout_ms)) + Duration::from_secs(10);
    flush_producer(&producer, flush_timeout)?;
    producer.context().check(topic)?;
    Ok(producer.context().delivered())
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Sends one record, waiting for room while the local queue is full rather
/// than failing: the queue drains as batches are acknowledged.
fn send_with_backpressure(
    producer: &BaseProducer<DeliveryTracker>,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
) -> Result<()> {
    loop {
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, UNTRACKED).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                crate::kafka::serve_deliveries_after(producer, Duration::from_millis(10));
            }
            Err((e, _)) => return Err(Error::kafka(format!("producing to {topic:?}"), e)),
        }
    }
}

/// When [`tail`] stops. With no limit at all it runs until the output is
/// closed.
#[derive(Clone, Debug, Default)]
pub struct TailLimit {
    /// Stop after this many records.
    pub max_records: Option<u64>,
    /// Stop this long after the start (including the wait for the topic to
    /// exist).
    pub timeout: Option<Duration>,
    /// Stop when this becomes true (a signal handler sets it).
    pub stop: Option<Arc<AtomicBool>>,
    /// Set to true once the tail knows where it starts: from then on, no
    /// record appended to the topic is missed (see [`tail_with`]).
    pub positioned: Option<Arc<AtomicBool>>,
}

impl TailLimit {
    /// Stop after `n` records or after `timeout`, whichever comes first.
    pub fn records_within(n: u64, timeout: Duration) -> Self {
        TailLimit {
            max_records: Some(n),
            timeout: Some(timeout),
            stop: None,
            positioned: None,
        }
    }
}

/// One record seen by [`tail_with`].
#[derive(Clone, Copy, Debug)]
pub struct TailRecord<'a> {
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its timestamp (ms since the epoch), if it has one.
    pub timestamp: Option<i64>,
    /// Its key, `None` when null.
    pub key: Option<&'a [u8]>,
    /// Its value, `None` when null (a tombstone).
    pub value: Option<&'a [u8]>,
}

/// Prints the records of `topic` to `out`, one per line: `key<TAB>value`,
/// or just the value when the key is null (what `weir tail` does). Returns
/// how many records were printed.
///
/// Reads every partition, from the beginning or only the records appended
/// after the tail started (see [`tail_with`]), without joining a consumer
/// group (nothing is committed). Waits for the topic if it does not exist
/// yet, and then shows it from its beginning. Output is flushed whenever
/// the topic goes quiet, so a live tail shows records promptly; a closed
/// output (`weir tail | head`) ends the tail normally.
pub fn tail(brokers: &str, topic: &str, from_beginning: bool, out: impl Write, stop: Option<TailLimit>) -> Result<u64> {
    let mut out = BufWriter::new(out);
    let mut write_error = None;
    let result = tail_with(&ClientSettings::new(brokers), topic, from_beginning, stop, |record| {
        let written = match record {
            Some(r) => write_record(&mut out, &r),
            None => out.flush(),
        };
        match written {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    });
    let flushed = out.flush();
    match (write_error, flushed) {
        // The reader went away (`weir tail | head`): a normal end.
        (Some(e), _) | (None, Err(e)) if e.kind() == ErrorKind::BrokenPipe => result,
        (Some(e), _) | (None, Err(e)) => Err(e.into()),
        (None, Ok(())) => result,
    }
}

/// Tell whoever waits on `limit.positioned` that the start is fixed.
fn mark_positioned(limit: &TailLimit) {
    if let Some(flag) = &limit.positioned {
        flag.store(true, Ordering::Release);
    }
}

/// `key<TAB>value` (the value alone for a null key). A repartition
/// record's value prints without weir's envelope (the origin it carries is
/// binary, and of no use on a terminal).
fn write_record(out: &mut impl Write, r: &TailRecord<'_>) -> std::io::Result<()> {
    if let Some(k) = r.key {
        out.write_all(k)?;
        out.write_all(b"\t")?;
    }
    let value = unwrap_repartition_value(r.value).map_or(r.value, |(_, v)| v);
    out.write_all(value.unwrap_or_default())?;
    out.write_all(b"\n")
}

/// The loop behind [`tail`], handing each record to `on_record` instead of
/// printing it. `on_record` also gets `None` whenever no record arrived for
/// a poll interval (a good moment to flush); returning `false` stops the
/// tail. Returns how many records were handed over.
///
/// Without `from_beginning` the tail shows every record appended after it
/// started, and nothing older: it reads each partition's end (high
/// watermark) when it starts, rather than letting the client resolve "the
/// end" at its first fetch, which comes later and would skip what was
/// appended in between. A topic that does not exist yet when the tail
/// starts is read from its beginning once it appears, since all of it is
/// new. `limit.positioned` says when that start is fixed.
pub fn tail_with(
    settings: &ClientSettings,
    topic: &str,
    from_beginning: bool,
    stop: Option<TailLimit>,
    mut on_record: impl FnMut(Option<TailRecord<'_>>) -> bool,
) -> Result<u64> {
    const POLL: Duration = Duration::from_millis(100);
    let limit = stop.unwrap_or_default();
    let started = Instant::now();
    let should_stop = |seen: u64| {
        limit.max_records.is_some_and(|max| seen >= max)
            || limit.timeout.is_some_and(|t| started.elapsed() >= t)
            || limit.stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire))
    };
    if should_stop(0) {
        return Ok(0);
    }

    let consumer: BaseConsumer = settings
        .standalone_consumer_config()
        .create()
        .map_err(|e| Error::kafka("creating the consumer", e))?;

    // Wait for the topic, then take every partition it has, at the
    // position decided by the first look (see above).
    let mut existed = true;
    let partitions = loop {
        let md = consumer
            .fetch_metadata(Some(topic), POLL * 10)
            .map_err(|e| Error::kafka(format!("fetching metadata for {topic:?}"), e))?;
        let count = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if count > 0 {
            break count as i32;
        }
        if existed {
            existed = false;
            mark_positioned(&limit);
        }
        if should_stop(0) {
            return Ok(0);
        }
        std::thread::sleep(POLL);
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let start = if from_beginning || !existed {
            Offset::Beginning
        } else {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, POLL * 100)
                .map_err(|e| Error::kafka(format!("reading the end of {topic:?} partition {p}"), e))?;
            Offset::Offset(high)
        };
        tpl.add_partition_offset(topic, p, start)
            .map_err(|e| Error::kafka("building the assignment", e))?;
    }
    assign_at(&consumer, &tpl, POLL * 100)?;
    mark_positioned(&limit);

    let mut seen: u64 = 0;
    while !should_stop(seen) {
        match consumer.poll(POLL) {
            Some(Ok(msg)) => {
                seen += 1;
                let record = TailRecord {
                    partition: msg.partition(),
                    offset: msg.offset(),
                    timestamp: match msg.timestamp() {
                        Timestamp::NotAvailable => None,
                        Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
                    },
                    key: msg.key(),
                    value: msg.payload(),
                };
                if !on_record(Some(record)) {
                    break;
                }
            }
            // librdkafka reports transient trouble (a broker restarting,
            // a connection reset) here and recovers by itself; a tail keeps
            // going, like kcat does, until one of its limits stops it.
            Some(Err(e)) => tracing::warn!(topic, "while tailing: {e}"),
            None => {
                if !on_record(None) {
                    break;
                }
            }
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use weir_runtime::manager::wrap_repartition_value;
    use weir_runtime::task::Origin;

    use super::*;

    fn line(key: Option<&[u8]>, value: Option<&[u8]>) -> String {
        let mut out = Vec::new();
        let r = TailRecord {
            partition: 0,
            offset: 0,
            timestamp: None,
            key,
            value,
        };
        write_record(&mut out, &r).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_repartition_record_prints_its_value_without_the_envelope() {
        let origin = Origin {
            upstream_partition: 1,
            offset: 10,
            index: 0,
        };
        let mut envelope = Vec::new();
        wrap_repartition_value(Some(&origin), Some(b"{\"n\":1}"), &mut envelope);
        assert_eq!(line(Some(b"k"), Some(&envelope)), "k\t{\"n\":1}\n");
        wrap_repartition_value(None, None, &mut envelope);
        assert_eq!(line(Some(b"k"), Some(&envelope)), "k\t\n");
        // Other values print as they are.
        assert_eq!(line(None, Some(b"plain")), "plain\n");
        assert_eq!(line(Some(b"k"), None), "k\t\n");
    }
}
