//! The record path: a consumed record through its task, dead letters, and
//! the task's outputs to the transport (repartition records numbered by
//! origin, so that a replay upstream is not applied twice downstream).

use std::time::Instant;

use super::{now_ms, TaskManager};
use crate::dead_letter::DeadLetterOut;
use crate::partitioner::{destination, with_headers};
use crate::task::{Origin, Task, TaskId};
use crate::transport::{Outgoing, Track, Transport};
use crate::RuntimeError;

/// Header that carried a repartition record's origin before the value
/// envelope ([`wrap_repartition_value`]); still read, so that records
/// written by an older weir are deduplicated as before. Never written.
pub const ORIGIN_HEADER: &str = "weir.origin";

/// The first bytes of every repartition record's value: it is an
/// envelope ([`wrap_repartition_value`]). The first byte, 0xFF, never
/// starts UTF-8 text (JSON, strings), and an older weir's plain value
/// would have to start with all eight to be mistaken for one.
pub const ENVELOPE_MAGIC: [u8; 8] = [0xFF, b'w', b'e', b'i', b'r', 0x00, b'r', 0x01];

/// Envelope flag: an origin (16 bytes) follows the flags.
const HAS_ORIGIN: u8 = 1;
/// Envelope flag: the record has a value (possibly empty); without it the
/// value is null.
const HAS_VALUE: u8 = 2;

/// A repartition record's value as written: [`ENVELOPE_MAGIC`], one flags
/// byte, the origin's 16 bytes ([`encode_origin`]) if it has one, then the
/// value's bytes. The origin rides in the value rather than a header
/// because librdkafka builds, sends, parses and frees a header list per
/// record: the `weir.origin` header was ~15 % of a repartitioning stream
/// thread's CPU (BENCHMARKS.md). Replaces `out`'s contents.
pub fn wrap_repartition_value(origin: Option<&Origin>, value: Option<&[u8]>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&ENVELOPE_MAGIC);
    let flags = if origin.is_some() { HAS_ORIGIN } else { 0 } | if value.is_some() { HAS_VALUE } else { 0 };
    out.push(flags);
    if let Some(o) = origin {
        out.extend_from_slice(&encode_origin(o));
    }
    out.extend_from_slice(value.unwrap_or_default());
}

/// A consumed repartition record's origin (if it has one) and value
/// (`None`: null).
pub type RepartitionValue<'a> = (Option<Origin>, Option<&'a [u8]>);

/// The origin and value in a repartition record's value written by
/// [`wrap_repartition_value`]; `None` if it is not such an envelope (an
/// older weir's record: its origin, if any, is in an [`ORIGIN_HEADER`]
/// header, and the value is the record's own; a corrupt one then fails to
/// deserialize and is dead-lettered).
pub fn unwrap_repartition_value(value: Option<&[u8]>) -> Option<RepartitionValue<'_>> {
    let rest = value?.strip_prefix(&ENVELOPE_MAGIC[..])?;
    let (&flags, rest) = rest.split_first()?;
    if flags & !(HAS_ORIGIN | HAS_VALUE) != 0 {
        return None;
    }
    let (origin, rest) = if flags & HAS_ORIGIN != 0 {
        let (o, rest) = rest.split_at_checked(16)?;
        (Some(decode_origin(o)?), rest)
    } else {
        (None, rest)
    };
    if flags & HAS_VALUE == 0 {
        return rest.is_empty().then_some((origin, None));
    }
    Some((origin, Some(rest)))
}

/// Latencies are measured on one record in this many.
const SAMPLE: u64 = 64;

/// The wire form of an origin (the value of [`ORIGIN_HEADER`]).
pub fn encode_origin(o: &Origin) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&o.upstream_partition.to_be_bytes());
    b[4..12].copy_from_slice(&o.offset.to_be_bytes());
    b[12..].copy_from_slice(&o.index.to_be_bytes());
    b
}

/// The origin in a [`ORIGIN_HEADER`] value; `None` if it is not one.
pub fn decode_origin(v: &[u8]) -> Option<Origin> {
    if v.len() != 16 {
        return None;
    }
    Some(Origin {
        upstream_partition: i32::from_be_bytes(v[..4].try_into().ok()?),
        offset: i64::from_be_bytes(v[4..12].try_into().ok()?),
        index: u32::from_be_bytes(v[12..].try_into().ok()?),
    })
}

/// A consumed repartition record's origin and value: from its envelope,
/// or, for an older weir's record (no envelope), the origin its
/// [`ORIGIN_HEADER`] header gave (`header_origin`) and the value as it is.
pub fn read_repartition_value(value: Option<&[u8]>, header_origin: Option<Origin>) -> RepartitionValue<'_> {
    unwrap_repartition_value(value).unwrap_or((header_origin, value))
}

/// A consumed record, as the poll loop hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The topology's index of the record's topic.
    pub topic: u32,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The origin header of a repartition record (see [`decode_origin`]).
    pub origin: Option<Origin>,
    /// The record's headers (weir's own, `weir.*`, may be among them or
    /// not: processors never see them).
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl TaskManager {
    /// Process one consumed record through the task that owns its
    /// partition (a record of a partition no running task owns is
    /// ignored: it is not, or no longer, this member's). Dead letters are
    /// sent at once; other outputs at [`punctuate`](Self::punctuate) or
    /// commit.
    #[inline]
    pub fn process(&mut self, t: &mut dyn Transport, rec: Incoming<'_>) -> Result<(), RuntimeError> {
        let Some(id) = self.cfg.plan.task_of(rec.topic, rec.partition) else {
            return Ok(());
        };
        let Some(task) = self.running.get_mut(&id) else {
            return Ok(());
        };
        self.seen += 1;
        self.uncommitted += 1;
        let timed = self.seen.is_multiple_of(SAMPLE).then(Instant::now);
        task.ctx.set_headers(rec.headers);
        match rec.origin {
            Some(o) => {
                task.process_from(rec.topic, rec.offset, rec.timestamp, rec.key, rec.value, o);
            }
            None => task.process(rec.topic, rec.offset, rec.timestamp, rec.key, rec.value),
        }
        if let Some(started) = timed {
            self.cfg
                .metrics
                .process_latency
                .observe(started.elapsed().as_secs_f64());
        }
        if task.ctx.dead_letters.is_empty() {
            return Ok(());
        }
        let letters = std::mem::take(&mut task.ctx.dead_letters);
        self.guarded(t, |m, t| m.send_dead_letters(t, &rec, letters))
    }

    fn send_dead_letters(
        &mut self,
        t: &mut dyn Transport,
        rec: &Incoming<'_>,
        letters: Vec<weir_topology::DeadLetter>,
    ) -> Result<(), RuntimeError> {
        self.open_txn(t)?;
        self.cfg.metrics.dlq_records.inc_by(letters.len() as u64);
        let max = self.cfg.max_record_bytes;
        let topic = &self.cfg.plan.topic_names[rec.topic as usize];
        for d in letters {
            let letter = DeadLetterOut::new(&d.error, topic, d.partition, d.offset, rec.key, rec.value, max);
            if letter.truncated() {
                tracing::warn!(
                    topic = %topic,
                    partition = d.partition,
                    offset = d.offset,
                    "dead letter cut to fit the largest record the cluster takes ({max} bytes); original sizes in its headers"
                );
            }
            let headers: Vec<(&str, &[u8])> = letter.headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            // The dead-letter topic has one partition (see Plan).
            t.send(Outgoing {
                topic: &self.cfg.plan.dlq_topic,
                partition: 0,
                key: letter.key,
                value: letter.value,
                timestamp: rec.timestamp,
                headers: &headers,
                track: Track::Quiet,
            })?;
        }
        Ok(())
    }

    /// After a batch: let every running task emit what is due at wall-clock
    /// time `now` and send every task's outputs.
    pub fn punctuate(&mut self, t: &mut dyn Transport, now: i64) -> Result<(), RuntimeError> {
        self.guarded(t, |m, t| {
            let ids: Vec<TaskId> = m.running.keys().copied().collect();
            for id in ids {
                m.running.get_mut(&id).expect("task").punctuate(now);
                m.drain(t, id)?;
            }
            t.tick();
            Ok(())
        })
    }

    /// Send the records task `id` collected, and the dead letters it
    /// raised outside processing (at punctuation or flush: no input record
    /// to attach).
    pub(super) fn drain(&mut self, t: &mut dyn Transport, id: TaskId) -> Result<(), RuntimeError> {
        let task = self.running.get_mut(&id).expect("task");
        if !task.ctx.dead_letters.is_empty() {
            let letters = std::mem::take(&mut task.ctx.dead_letters);
            for d in letters {
                let rec = Incoming {
                    topic: d.topic,
                    partition: d.partition,
                    offset: d.offset,
                    timestamp: now_ms(),
                    key: None,
                    value: None,
                    origin: None,
                    headers: &[],
                };
                self.send_dead_letters(t, &rec, vec![d])?;
            }
        }
        let task = self.running.get_mut(&id).expect("task");
        if task.ctx.collector.is_empty() {
            return Ok(());
        }
        self.open_txn(t)?;
        let task = self.running.get_mut(&id).expect("task");
        let mut collector = std::mem::take(&mut task.ctx.collector);
        let plan = &self.cfg.plan;
        self.origin_counters.clear();
        self.current_origin = None;
        let meters = self.running.get(&id).and_then(Task::metrics);
        let now = now_ms();
        let mut result = Ok(());
        let mut envelope = std::mem::take(&mut self.envelope);
        for (i, rec) in collector.records().iter().enumerate() {
            let topic = rec.topic as usize;
            // A topic chosen per record (DYNAMIC_TOPIC) is no internal one.
            let internal = plan.internal.get(topic).copied().unwrap_or(false);
            if let Some(m) = meters {
                m.produced(rec.topic, 1);
            }
            if !internal && (i as u64).is_multiple_of(SAMPLE) {
                self.cfg
                    .metrics
                    .end_to_end_latency
                    .observe((now - rec.timestamp).max(0) as f64 / 1000.0);
            }
            let key = collector.slice(&rec.key);
            let value = collector.slice(&rec.value);
            let (topic_name, partition) = destination(plan, &collector, rec, id.partition);
            let origin = match (internal, rec.origin) {
                (true, Some((source, offset))) => {
                    if self.current_origin != Some((source, offset)) {
                        self.current_origin = Some((source, offset));
                        self.origin_counters.clear();
                    }
                    let index = match self.origin_counters.iter_mut().find(|(tt, _)| *tt == rec.topic) {
                        Some((_, n)) => {
                            *n += 1;
                            *n
                        }
                        None => {
                            self.origin_counters.push((rec.topic, 0));
                            0
                        }
                    };
                    // The upstream key folds the source topic into the
                    // partition number: offsets are ordered per topic.
                    Some(Origin {
                        upstream_partition: ((source as i32) << 20) | id.partition,
                        offset,
                        index,
                    })
                }
                _ => None,
            };
            let value = if internal {
                wrap_repartition_value(origin.as_ref(), value, &mut envelope);
                Some(&envelope[..])
            } else {
                value
            };
            result = with_headers(&collector, rec, |headers| {
                t.send(Outgoing {
                    topic: topic_name,
                    partition,
                    key,
                    value,
                    timestamp: rec.timestamp,
                    headers,
                    track: Track::Quiet,
                })
            });
            if result.is_err() {
                break;
            }
        }
        collector.clear();
        self.envelope = envelope;
        self.running.get_mut(&id).expect("task").ctx.collector = collector;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: Origin = Origin {
        upstream_partition: (3 << 20) | 7,
        offset: 1_234_567_890_123,
        index: 42,
    };

    #[test]
    fn an_envelope_gives_back_its_origin_and_value() {
        let mut buf = Vec::new();
        for origin in [Some(O), None] {
            for value in [Some(&b"{\"a\":1}"[..]), Some(&b""[..]), None] {
                wrap_repartition_value(origin.as_ref(), value, &mut buf);
                assert!(buf.starts_with(&ENVELOPE_MAGIC));
                assert_eq!(
                    unwrap_repartition_value(Some(&buf)),
                    Some((origin, value)),
                    "{origin:?} {value:?}"
                );
                assert_eq!(read_repartition_value(Some(&buf), None), (origin, value));
            }
        }
        // The null and the empty value are told apart, with or without an
        // origin: 9 bytes and 25, then the value.
        wrap_repartition_value(None, None, &mut buf);
        assert_eq!(buf.len(), 9);
        wrap_repartition_value(Some(&O), Some(b"xy"), &mut buf);
        assert_eq!(buf.len(), 9 + 16 + 2);
    }

    #[test]
    fn an_older_weirs_record_keeps_its_value_and_header_origin() {
        // No envelope: the value as it is, the origin from the header.
        for value in [Some(&b"plain"[..]), Some(&b""[..]), None, Some(&ENVELOPE_MAGIC[..7])] {
            assert_eq!(unwrap_repartition_value(value), None, "{value:?}");
            assert_eq!(read_repartition_value(value, Some(O)), (Some(O), value));
            assert_eq!(read_repartition_value(value, None), (None, value));
        }
        // A cut or unknown envelope is not read as one either: its bytes
        // go on as the value (and fail to deserialize: a dead letter).
        let mut buf = Vec::new();
        wrap_repartition_value(Some(&O), Some(b"v"), &mut buf);
        for bad in [&buf[..9], &buf[..20]] {
            assert_eq!(unwrap_repartition_value(Some(bad)), None);
        }
        let mut unknown = buf.clone();
        unknown[8] |= 0x80;
        assert_eq!(unwrap_repartition_value(Some(&unknown)), None);
        wrap_repartition_value(None, None, &mut buf);
        buf.push(b'!');
        assert_eq!(
            unwrap_repartition_value(Some(&buf)),
            None,
            "a null value with bytes after it"
        );
    }
}
