//! What a processor sees of the task it runs in: the current record's
//! metadata, stream time, and the buffers its outputs go to.
//!
//! One `ProcessorContext` exists per task and is passed down the processor
//! tree by `&mut`, so processors never allocate or lock to emit output: sink
//! records are appended to one reusable byte arena ([`RecordCollector`]) that
//! the runtime drains into the Kafka producer after each batch.

use std::any::Any;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use crate::error::TopologyError;
use crate::store::{
    ChangelogRecord, KvStoreRef, StoreError, StoreKind, StoreSupplier, VersionedStoreRef, WindowStoreRef,
};
use crate::topology::TopologyInner;

/// The `topic` of an [`OutRecord`] whose topic was chosen per record (a
/// `TopicNameExtractor`, [`crate::KStream::to_dynamic`]): its name is in
/// the collector ([`RecordCollector::topic_name`]), not among the
/// topology's topics.
pub const DYNAMIC_TOPIC: u32 = u32::MAX;

/// A record written by a sink node, in the collector's byte arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Index into [`crate::Topology::topics`], or [`DYNAMIC_TOPIC`] (then
    /// `topic_name` holds the name).
    pub topic: u32,
    pub key: Option<Range<u32>>,
    pub value: Option<Range<u32>>,
    pub timestamp: i64,
    /// The input record this output was computed from: (source topic index,
    /// offset), or `None` for records emitted at commit or punctuation time
    /// (cached aggregates, closed windows). The runtime uses it to make
    /// repartition records identifiable, so that a replay after a crash does
    /// not count them twice downstream.
    pub origin: Option<(u32, i64)>,
    /// The partition a `StreamPartitioner` chose (already checked against
    /// the topic's partition count); `None`: the default partitioning
    /// (Kafka's, by key).
    pub partition: Option<u32>,
    /// The topic's name in the arena, for a record whose topic was chosen
    /// per record ([`DYNAMIC_TOPIC`]).
    pub topic_name: Option<Range<u32>>,
    /// The record's headers: a range of the collector's header list (see
    /// [`RecordCollector::headers`]).
    pub headers: Range<u32>,
}

/// Where a sink sends a record, beyond its topic index: see
/// [`RecordCollector::push_to`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Destination<'a> {
    /// Index into [`crate::Topology::topics`] ([`DYNAMIC_TOPIC`] with
    /// `topic_name`).
    pub topic: u32,
    /// A topic chosen per record, by name.
    pub topic_name: Option<&'a str>,
    /// A partition chosen by a partitioner.
    pub partition: Option<u32>,
    /// Headers to write with the record.
    pub headers: Option<&'a Headers>,
}

impl Destination<'_> {
    /// Topic `topic` of the topology, default partitioning, no headers.
    pub fn topic(topic: u32) -> Self {
        Destination {
            topic,
            ..Default::default()
        }
    }
}

/// The headers of a record: `(name, value)` pairs in order, a name possibly
/// repeated (Kafka's model). Stored in one reusable byte buffer, so that
/// carrying a record's headers through a task does not allocate per record.
///
/// A record's headers follow it as in Kafka Streams: a source copies the
/// consumed record's headers into the [`ProcessorContext`]
/// ([`ProcessorContext::headers`]), operators pass them on unchanged
/// (`filter`, `map`, `select_key`, joins, ...), a processor may change them
/// ([`crate::ProcessorApi::headers_mut`]) and sinks (repartition topics
/// included) write them. As in Kafka Streams' processor context, the
/// headers belong to the record being processed, not to each copy of it:
/// a change made on one branch of a fan-out is seen by the branches that
/// run after it. What is emitted with no record being processed (cached
/// aggregates and table changes forwarded at a commit, closed windows,
/// suppression) carries no headers, except what a user processor's
/// punctuation sets. Headers named `weir.*` are weir's own (a repartition
/// record's origin): never shown to processors, never written by sinks
/// (the runtime adds them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Headers {
    bytes: Vec<u8>,
    /// (name, value) ranges of `bytes`.
    entries: Vec<(Range<u32>, Range<u32>)>,
}

/// The prefix of the header names weir reserves for itself.
pub const WEIR_HEADER_PREFIX: &str = "weir.";

impl Headers {
    pub const fn new() -> Self {
        Headers {
            bytes: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Headers from `(name, value)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut h = Headers::new();
        for (k, v) in pairs {
            h.add(k, v);
        }
        h
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn str_at(&self, r: &Range<u32>) -> &str {
        // Only ever written from `&str`.
        std::str::from_utf8(&self.bytes[r.start as usize..r.end as usize]).unwrap_or_default()
    }
    fn bytes_at(&self, r: &Range<u32>) -> &[u8] {
        &self.bytes[r.start as usize..r.end as usize]
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.entries.iter().map(|(k, v)| (self.str_at(k), self.bytes_at(v)))
    }

    /// The value of the last header named `name` (Kafka's `lastHeader`).
    pub fn last(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| self.str_at(k) == name)
            .map(|(_, v)| self.bytes_at(v))
    }

    /// The values of every header named `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| self.str_at(k) == name)
            .map(|(_, v)| self.bytes_at(v))
    }

    /// Append a header (a name may repeat).
    pub fn add(&mut self, name: &str, value: &[u8]) {
        let k0 = self.bytes.len() as u32;
        self.bytes.extend_from_slice(name.as_bytes());
        let k1 = self.bytes.len() as u32;
        self.bytes.extend_from_slice(value);
        let v1 = self.bytes.len() as u32;
        self.entries.push((k0..k1, k1..v1));
    }

    /// Remove every header named `name`.
    pub fn remove(&mut self, name: &str) {
        let bytes = &self.bytes;
        self.entries
            .retain(|(k, _)| &bytes[k.start as usize..k.end as usize] != name.as_bytes());
    }

    /// Replace every header named `name` by one with `value`.
    pub fn set(&mut self, name: &str, value: &[u8]) {
        self.remove(name);
        self.add(name, value);
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    /// Replace the headers by `pairs`, leaving out weir's own
    /// ([`WEIR_HEADER_PREFIX`]).
    pub fn set_from(&mut self, pairs: &[(&str, &[u8])]) {
        self.clear();
        for (k, v) in pairs {
            if !k.starts_with(WEIR_HEADER_PREFIX) {
                self.add(k, v);
            }
        }
    }
}

/// Output records of a task since it was last drained.
#[derive(Debug, Default)]
pub struct RecordCollector {
    arena: Vec<u8>,
    records: Vec<OutRecord>,
    /// Headers of the records: (name, value) ranges of the arena.
    headers: Vec<(Range<u32>, Range<u32>)>,
}

impl RecordCollector {
    /// Append a record whose key and value are written by `write_key` /
    /// `write_value` directly into the arena.
    #[inline]
    pub fn push_with<E>(
        &mut self,
        topic: u32,
        timestamp: i64,
        origin: Option<(u32, i64)>,
        write_key: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
        write_value: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.push_to(
            Destination::topic(topic),
            timestamp,
            origin,
            Some(write_key),
            Some(write_value),
        )
    }

    /// As [`push_with`](Self::push_with), but a `None` writer writes a
    /// Kafka null key or value (no bytes at all, not an empty byte string):
    /// how a sink writes a value its serde calls null
    /// (`Serdes::optional(..)`'s `None`) with the record's origin.
    pub fn push_opt_with<E>(
        &mut self,
        topic: u32,
        timestamp: i64,
        origin: Option<(u32, i64)>,
        write_key: Option<impl FnOnce(&mut Vec<u8>) -> Result<(), E>>,
        write_value: Option<impl FnOnce(&mut Vec<u8>) -> Result<(), E>>,
    ) -> Result<(), E> {
        self.push_to(Destination::topic(topic), timestamp, origin, write_key, write_value)
    }

    /// As [`push_opt_with`](Self::push_opt_with), to a [`Destination`]: a
    /// topic chosen by name, a partition chosen by a partitioner, headers.
    pub fn push_to<E>(
        &mut self,
        to: Destination<'_>,
        timestamp: i64,
        origin: Option<(u32, i64)>,
        write_key: Option<impl FnOnce(&mut Vec<u8>) -> Result<(), E>>,
        write_value: Option<impl FnOnce(&mut Vec<u8>) -> Result<(), E>>,
    ) -> Result<(), E> {
        let mark = self.arena.len();
        let mut key = None;
        if let Some(w) = write_key {
            let k0 = self.arena.len() as u32;
            if let Err(e) = w(&mut self.arena) {
                self.arena.truncate(mark);
                return Err(e);
            }
            key = Some(k0..self.arena.len() as u32);
        }
        let mut value = None;
        if let Some(w) = write_value {
            let v0 = self.arena.len() as u32;
            if let Err(e) = w(&mut self.arena) {
                self.arena.truncate(mark);
                return Err(e);
            }
            value = Some(v0..self.arena.len() as u32);
        }
        let topic_name = to.topic_name.map(|name| self.append(name.as_bytes()));
        let h0 = self.headers.len() as u32;
        if let Some(headers) = to.headers {
            // weir's own headers are the runtime's to write (a processor's
            // `weir.origin` would confuse de-duplication downstream).
            for (k, v) in headers.iter().filter(|(k, _)| !k.starts_with(WEIR_HEADER_PREFIX)) {
                let k = self.append(k.as_bytes());
                let v = self.append(v);
                self.headers.push((k, v));
            }
        }
        let h1 = self.headers.len() as u32;
        self.records.push(OutRecord {
            topic: to.topic,
            key,
            value,
            timestamp,
            origin,
            partition: to.partition,
            topic_name,
            headers: h0..h1,
        });
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Range<u32> {
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(bytes);
        start..self.arena.len() as u32
    }

    /// Append a record with a key and no value (a tombstone).
    pub fn push_tombstone(&mut self, topic: u32, timestamp: i64, key: &[u8]) {
        let k0 = self.arena.len() as u32;
        self.arena.extend_from_slice(key);
        let k1 = self.arena.len() as u32;
        self.records.push(OutRecord {
            topic,
            key: Some(k0..k1),
            value: None,
            timestamp,
            origin: None,
            partition: None,
            topic_name: None,
            headers: 0..0,
        });
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
    pub fn records(&self) -> &[OutRecord] {
        &self.records
    }
    /// The bytes of a range from an [`OutRecord`].
    #[inline]
    pub fn slice(&self, range: &Option<Range<u32>>) -> Option<&[u8]> {
        range.as_ref().map(|r| &self.arena[r.start as usize..r.end as usize])
    }
    /// The topic name of a record whose topic was chosen per record
    /// ([`DYNAMIC_TOPIC`]).
    pub fn topic_name(&self, rec: &OutRecord) -> Option<&str> {
        let name = self.slice(&rec.topic_name)?;
        // Only ever written from `&str`.
        std::str::from_utf8(name).ok()
    }
    /// The headers of a record, in order.
    pub fn headers<'a>(&'a self, rec: &OutRecord) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let at = |r: &Range<u32>| &self.arena[r.start as usize..r.end as usize];
        self.headers[rec.headers.start as usize..rec.headers.end as usize]
            .iter()
            .map(move |(k, v)| (std::str::from_utf8(at(k)).unwrap_or_default(), at(v)))
    }
    /// Forget every record, keeping the allocations for reuse.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.records.clear();
        self.headers.clear();
    }
}

/// A record that failed and goes to the dead-letter topic. The runtime adds
/// the raw key and value bytes, which it still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Why: the deserialization or processing error, for the `error` header.
    pub error: String,
    /// The source topic index (into [`crate::Topology::topics`]).
    pub topic: u32,
    pub partition: i32,
    pub offset: i64,
}

/// Per-task counters that processors bump; the runtime turns them into
/// metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TaskCounters {
    /// Records dropped because every window they belong to had closed.
    pub late_records_dropped: u64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Records a join ignored because their key or value was a Kafka null
    /// (a null value is "no record" in Kafka's key-value model, not a value
    /// to join), as Kafka Streams' joins do.
    pub null_records_skipped: u64,
}

/// The task-wide context passed to every processor call.
pub struct ProcessorContext {
    pub(crate) timestamp: i64,
    pub(crate) stream_time: i64,
    pub(crate) wall_clock_ms: i64,
    pub(crate) topic: u32,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) application_id: Arc<str>,
    /// Records for sink and repartition topics.
    pub collector: RecordCollector,
    /// Records to dead-letter, in order.
    pub dead_letters: Vec<DeadLetter>,
    /// Changelog records staged by store flushes: (store name, record).
    pub changelog: Vec<(Arc<str>, ChangelogRecord)>,
    pub counters: TaskCounters,
    pub(crate) fatal: Option<StoreError>,
    pub(crate) commit_requested: bool,
    /// True while the task flushes or punctuates: outputs then are not tied
    /// to the current input record.
    pub(crate) emitting_on_time: bool,
    /// The headers of the record being processed (empty between records,
    /// at flush and at punctuation).
    pub(crate) headers: Headers,
    /// The headers of the record about to enter the task
    /// ([`ProcessorContext::set_headers`]); they become `headers` at
    /// [`ProcessorContext::set_record`].
    pub(crate) incoming_headers: Headers,
    /// True while a user processor punctuates: sinks then write the
    /// headers it set (other outputs at punctuation time have none).
    pub(crate) punctuation_headers: bool,
    /// Partition count of each topology topic (by index), as the runtime
    /// knows them; empty if it did not say.
    pub(crate) partition_counts: Arc<[i32]>,
}

impl ProcessorContext {
    /// A fresh context for one task of `application_id` on `partition`.
    pub fn new(application_id: &str, partition: i32) -> Self {
        ProcessorContext {
            timestamp: 0,
            stream_time: i64::MIN,
            wall_clock_ms: 0,
            topic: 0,
            partition,
            offset: -1,
            application_id: Arc::from(application_id),
            collector: RecordCollector::default(),
            dead_letters: Vec::new(),
            changelog: Vec::new(),
            counters: TaskCounters::default(),
            fatal: None,
            commit_requested: false,
            emitting_on_time: false,
            headers: Headers::new(),
            incoming_headers: Headers::new(),
            punctuation_headers: false,
            partition_counts: Arc::from(Vec::new()),
        }
    }

    /// Set by the runtime before a record enters the task (before
    /// [`set_record`](Self::set_record)): the consumed record's headers.
    /// weir's own headers (`weir.*`, such as a repartition record's origin)
    /// are left out.
    #[inline]
    pub fn set_headers(&mut self, headers: &[(&str, &[u8])]) {
        if headers.is_empty() && self.incoming_headers.is_empty() {
            return;
        }
        self.incoming_headers.set_from(headers);
    }

    /// The headers of the record being processed. A processor may change
    /// them ([`headers_mut`](Self::headers_mut)): the records forwarded
    /// from then on, while this record is processed, carry the change.
    pub fn headers(&self) -> &Headers {
        // At flush or punctuation time there is no current record (a user
        // processor's punctuation sees the headers it set).
        static NONE: Headers = Headers::new();
        if self.emitting_on_time && !self.punctuation_headers {
            return &NONE;
        }
        &self.headers
    }
    /// The headers of the record being processed, to change.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The record has been processed: its headers are forgotten, so that
    /// what is emitted at flush or punctuation time carries none.
    #[inline]
    pub(crate) fn end_record(&mut self) {
        if !self.headers.is_empty() {
            self.headers.clear();
        }
    }

    /// Set by the runtime when it creates the task: the partition count of
    /// each topic of the topology, by topic index (what a
    /// `StreamPartitioner` is told).
    pub fn set_partition_counts(&mut self, counts: &[i32]) {
        self.partition_counts = Arc::from(counts);
    }

    /// The partition count of topology topic `topic`, if the runtime said.
    pub fn partition_count(&self, topic: u32) -> Option<u32> {
        self.partition_counts
            .get(topic as usize)
            .and_then(|n| u32::try_from(*n).ok())
            .filter(|n| *n > 0)
    }

    /// Set by the runtime before a record enters the task: its source topic
    /// index, offset and (Kafka record) timestamp. The source node then
    /// decides the event time (a timestamp extractor may replace it) and
    /// calls [`ProcessorContext::observe_event_time`].
    #[inline]
    pub fn set_record(&mut self, topic: u32, offset: i64, timestamp: i64) {
        self.topic = topic;
        self.offset = offset;
        self.timestamp = timestamp;
        if !self.incoming_headers.is_empty() || !self.headers.is_empty() {
            std::mem::swap(&mut self.headers, &mut self.incoming_headers);
            self.incoming_headers.clear();
        }
    }

    /// The event time of the record entering the task: it becomes the
    /// current timestamp, and stream time advances to it if it is newer.
    #[inline]
    pub fn observe_event_time(&mut self, timestamp: i64) {
        self.timestamp = timestamp;
        if timestamp > self.stream_time {
            self.stream_time = timestamp;
        }
    }

    /// The timestamp of the record being processed (epoch ms).
    #[inline]
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
    /// Override the timestamp of records forwarded from here on.
    #[inline]
    pub fn set_timestamp(&mut self, ts: i64) {
        self.timestamp = ts;
    }
    /// The largest record timestamp this task has seen (`i64::MIN` before
    /// the first record).
    #[inline]
    pub fn stream_time(&self) -> i64 {
        self.stream_time
    }
    /// Advance stream time without a record (the idle-partition punctuator).
    pub fn advance_stream_time(&mut self, to: i64) {
        if to > self.stream_time {
            self.stream_time = to;
        }
    }
    /// Wall-clock time as the runtime (or the test driver's clock) sees it.
    pub fn wall_clock_ms(&self) -> i64 {
        self.wall_clock_ms
    }
    pub fn set_wall_clock_ms(&mut self, now: i64) {
        self.wall_clock_ms = now;
    }
    pub fn partition(&self) -> i32 {
        self.partition
    }
    pub fn offset(&self) -> i64 {
        self.offset
    }
    /// Index of the current record's source topic.
    pub fn topic_index(&self) -> u32 {
        self.topic
    }
    pub fn application_id(&self) -> &str {
        &self.application_id
    }

    /// The input record that outputs written now derive from, if any (see
    /// [`OutRecord::origin`]).
    #[inline]
    pub fn origin(&self) -> Option<(u32, i64)> {
        if self.emitting_on_time || self.offset < 0 {
            None
        } else {
            Some((self.topic, self.offset))
        }
    }

    /// Send the current record to the dead-letter topic with `error`.
    pub fn dead_letter(&mut self, error: impl Into<String>) {
        self.counters.dead_letters += 1;
        self.dead_letters.push(DeadLetter {
            error: error.into(),
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
        });
    }

    /// A store failed: the task cannot go on. The runtime checks this after
    /// every batch and stops the task without committing.
    pub fn fail(&mut self, err: StoreError) {
        if self.fatal.is_none() {
            self.fatal = Some(err);
        }
    }
    pub fn take_fatal(&mut self) -> Option<StoreError> {
        self.fatal.take()
    }

    /// Stages what store `store`'s flush returned: its changelog records,
    /// or, if the flush failed, the task's failure.
    pub(crate) fn log_flushed(&mut self, store: &Arc<str>, flushed: Result<Vec<ChangelogRecord>, StoreError>) {
        match flushed {
            Ok(records) => self.changelog.extend(records.into_iter().map(|r| (store.clone(), r))),
            Err(e) => self.fail(e),
        }
    }

    /// Ask the runtime to flush caches soon (a cache is over its limit).
    pub fn request_commit(&mut self) {
        self.commit_requested = true;
    }
    pub fn take_commit_request(&mut self) -> bool {
        std::mem::take(&mut self.commit_requested)
    }
}

/// When a user processor's punctuation fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PunctuationType {
    /// When the task's stream time passes the next deadline.
    StreamTime,
    /// When the wall clock passes the next deadline.
    WallClockTime,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) interval_ms: i64,
    pub(crate) kind: PunctuationType,
}

/// A store created for a task, as the task keeps it.
#[derive(Clone)]
pub enum StoreRef {
    KeyValue(KvStoreRef),
    Window(WindowStoreRef),
    /// A versioned store; [`InitContext::key_value_store`] hands out the
    /// same instance as a plain key-value store (its newest versions).
    Versioned(VersionedStoreRef),
}

impl StoreRef {
    /// The store's commit-time half (flush, size, cache statistics).
    pub fn with_state<R>(&self, f: impl FnOnce(&dyn crate::store::StateStore) -> R) -> R {
        match self {
            StoreRef::KeyValue(s) => f(&*s.borrow()),
            StoreRef::Window(s) => f(&*s.borrow()),
            StoreRef::Versioned(s) => f(&*s.borrow()),
        }
    }

    /// [`StateStore::flush`](crate::store::StateStore::flush) of the store.
    pub fn flush(&self) -> crate::store::StoreResult<Vec<ChangelogRecord>> {
        match self {
            StoreRef::KeyValue(s) => s.borrow_mut().flush(),
            StoreRef::Window(s) => s.borrow_mut().flush(),
            StoreRef::Versioned(s) => s.borrow_mut().flush(),
        }
    }
}

/// Handed to processor factories while a task is being created: stores
/// and shared nodes are created once per task here.
pub struct InitContext<'a> {
    pub(crate) supplier: &'a mut dyn StoreSupplier,
    pub(crate) topology: &'a TopologyInner,
    pub(crate) stores: Vec<(String, StoreRef)>,
    pub(crate) shared: HashMap<usize, Box<dyn Any>>,
    pub(crate) schedules: Vec<Schedule>,
    pub(crate) partition: i32,
}

impl<'a> InitContext<'a> {
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The task's instance of the key-value store `name`, created on first
    /// use.
    /// A versioned store comes as the plain key-value view of its newest
    /// versions (the same instance as [`versioned_store`](Self::versioned_store)).
    pub fn key_value_store(&mut self, name: &str) -> Result<KvStoreRef, TopologyError> {
        match self.stores.iter().find(|(n, _)| n == name) {
            Some((_, StoreRef::KeyValue(s))) => return Ok(s.clone()),
            Some((_, StoreRef::Versioned(s))) => return Ok(s.clone() as KvStoreRef),
            _ => {}
        }
        let spec = self
            .topology
            .store(name)
            .ok_or_else(|| TopologyError::UnknownStore(name.to_string()))?;
        match spec.kind {
            StoreKind::KeyValue => {}
            StoreKind::Versioned { .. } => return Ok(self.versioned_store(name)? as KvStoreRef),
            StoreKind::Window { .. } => {
                return Err(TopologyError::UnknownStore(format!("{name} (it is a window store)")));
            }
        }
        let store = self.supplier.key_value(spec)?;
        self.stores.push((name.to_string(), StoreRef::KeyValue(store.clone())));
        Ok(store)
    }

    /// The task's instance of the versioned store `name`, created on first
    /// use.
    pub fn versioned_store(&mut self, name: &str) -> Result<VersionedStoreRef, TopologyError> {
        if let Some((_, StoreRef::Versioned(s))) = self.stores.iter().find(|(n, _)| n == name) {
            return Ok(s.clone());
        }
        let spec = self
            .topology
            .store(name)
            .ok_or_else(|| TopologyError::UnknownStore(name.to_string()))?;
        if !matches!(spec.kind, StoreKind::Versioned { .. }) {
            return Err(TopologyError::UnknownStore(format!(
                "{name} (it is not a versioned store)"
            )));
        }
        let store = self.supplier.versioned(spec)?;
        self.stores.push((name.to_string(), StoreRef::Versioned(store.clone())));
        Ok(store)
    }

    /// The task's instance of the window store `name`, created on first use.
    pub fn window_store(&mut self, name: &str) -> Result<WindowStoreRef, TopologyError> {
        if let Some((_, StoreRef::Window(s))) = self.stores.iter().find(|(n, _)| n == name) {
            return Ok(s.clone());
        }
        let spec = self
            .topology
            .store(name)
            .ok_or_else(|| TopologyError::UnknownStore(name.to_string()))?;
        if !matches!(spec.kind, StoreKind::Window { .. }) {
            return Err(TopologyError::UnknownStore(format!(
                "{name} (it is not a window store)"
            )));
        }
        let store = self.supplier.window(spec)?;
        self.stores.push((name.to_string(), StoreRef::Window(store.clone())));
        Ok(store)
    }

    /// Ask for `punctuate` calls every `interval_ms` of the given time kind.
    pub fn schedule(&mut self, interval_ms: i64, kind: PunctuationType) {
        self.schedules.push(Schedule {
            interval_ms: interval_ms.max(1),
            kind,
        });
    }

    /// Get or create a per-task shared value for graph node `id` (fan-in
    /// nodes such as merges and joins are instantiated once per task).
    pub(crate) fn shared<T: Clone + 'static>(
        &mut self,
        id: usize,
        make: impl FnOnce(&mut Self) -> Result<T, TopologyError>,
    ) -> Result<T, TopologyError> {
        if let Some(v) = self.shared.get(&id).and_then(|b| b.downcast_ref::<T>()) {
            return Ok(v.clone());
        }
        let v = make(self)?;
        self.shared.insert(id, Box::new(v.clone()));
        Ok(v)
    }
}
