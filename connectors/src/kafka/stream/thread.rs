//! A stream thread: one consumer in the application's group, the tasks of
//! the partitions it was assigned, two producers (records; changelog records), and the commit protocol.
//!
//! Records are processed synchronously on this thread in batches (a
//! `BaseConsumer` poll loop; no async call per record). Rebalance callbacks
//! run inside `poll` on this same thread, so the thread's tasks live in a
//! thread-local the callbacks can reach: a revoke commits and closes the
//! tasks *before* the partitions are given up, and an assignment restores
//! the new tasks and hands the consumer the exact offsets their state
//! reflects.
//!
//! ## The commit protocol (exact state after a crash)
//! Every commit interval, for every task:
//! 1. flush the task: cached aggregates go downstream, stores stage their
//!    changes, and the changelog records are produced (tagged with nothing
//!    but their partition: the checkpoint says how far to read);
//! 2. wait until everything produced is delivered (outputs, repartition
//!    records, changelog records): a delivery error stops the thread before
//!    anything is committed;
//! 3. produce the task's checkpoint (commit sequence, next input offsets,
//!    each changelog's end offset, the origins of applied repartition
//!    records) to `{application_id}-checkpoints` and wait for it;
//! 4. write the staged store changes and the same checkpoint to sled in one
//!    atomic batch;
//! 5. commit the consumer offsets (for lag and for stateless tasks; state
//!    never depends on them).
//!
//! A restart (or another instance taking the task over) starts from the
//! newest of the local sled checkpoint and the checkpoints topic, restoring
//! the changelog up to exactly the offsets that checkpoint names, and
//! consumes from exactly the input offsets it names. Records produced after
//! the last checkpoint are ignored by restores. Repartition records carry
//! their origin (upstream partition, input offset, index) in a header, and a
//! downstream task skips origins it has applied already, so a replay
//! upstream never counts twice. Outputs to sink topics are at-least-once:
//! records produced between the last commit and a crash are produced again.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use weir_runtime::dead_letter::DeadLetterOut;
use weir_runtime::metrics::{TaskEvent, TaskMetrics, TopologyMetrics};
use weir_runtime::{Origin, Task, TaskCheckpoint, TaskConfig, TaskId};
use weir_state::StateDb;
use weir_topology::StoreRef;
use weir_topology::Topology;

use super::health::{health_client_context, is_connectivity, Health, ReportsHealth};
use super::plan::Plan;
use super::restore;
use crate::kafka::{default_partitioner, flush_producer, ClientSettings};
use crate::{Error, Result};

/// Header carrying a repartition record's origin (16 bytes: upstream
/// partition key i32, input offset i64, index u32, big-endian).
pub const ORIGIN_HEADER: &str = "weir.origin";
/// Records taken from the consumer per batch before outputs are sent.
const BATCH: usize = 10_000;
/// A commit that has waited this long for delivery reports the wait as a
/// problem (`/readyz` 503) while it goes on waiting.
const SLOW_DELIVERY: Duration = Duration::from_secs(2);
/// While the thread has a problem, how often it asks the cluster for
/// metadata to learn that it answers again (an idle thread has no other
/// way to notice).
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A thread that has heard nothing from the cluster for this long (no
/// record, no delivery) asks it for metadata, so that an outage shows on
/// `/readyz` even when there is no work in flight to wait for.
const QUIET_PROBE_AFTER: Duration = Duration::from_secs(5);
/// How long that question may take before the cluster counts as
/// unreachable.
const QUIET_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What every thread of an application shares (read-only).
pub struct AppShared {
    pub topology: Topology,
    pub plan: Plan,
    pub settings: ClientSettings,
    pub db: Arc<StateDb>,
    pub task_config: TaskConfig,
    pub commit_interval: Duration,
    /// How long a commit waits for its records to be delivered (riding out
    /// a broker outage) before the thread gives up; also librdkafka's
    /// `message.timeout.ms`.
    pub delivery_timeout: Duration,
    pub stop: Arc<AtomicBool>,
    /// Where each thread stands (assignment, restore); for readiness.
    pub status: Arc<super::RunStatus>,
    /// This application's metric handles.
    pub metrics: TopologyMetrics,
}

/// Delivery reports: the first error, and how far each changelog partition
/// got (the producer's opaque is 1 for changelog records).
#[derive(Default)]
pub struct DeliveryState {
    first_error: Mutex<Option<String>>,
    positions: Mutex<HashMap<(String, i32), i64>>,
    /// Offsets of delivered checkpoint records, by their opaque
    /// ([`CHECKPOINT_TRACK`] + the task's index in the commit).
    checkpoints: Mutex<HashMap<usize, i64>>,
}

/// Delivery opaques: 0 records (reported only on error), 1 changelog
/// records (their end offsets make the changelog positions), and from
/// `CHECKPOINT_TRACK` on, checkpoint records (their offsets become the
/// pointers stored with the consumer offsets).
const CHECKPOINT_TRACK: usize = 2;

pub struct DeliveryContext {
    state: Arc<DeliveryState>,
    health: Arc<Health>,
}

impl ReportsHealth for DeliveryContext {
    fn health(&self) -> &Health {
        &self.health
    }
}
health_client_context!(DeliveryContext);

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, track: usize) {
        match result {
            Ok(m) => {
                if track >= CHECKPOINT_TRACK {
                    let mut c = self.state.checkpoints.lock().expect("delivery lock");
                    c.insert(track, m.offset());
                } else if track == 1 {
                    let mut p = self.state.positions.lock().expect("delivery lock");
                    let e = p.entry((m.topic().to_string(), m.partition())).or_insert(0);
                    *e = (*e).max(m.offset() + 1);
                }
            }
            Err((e, m)) => {
                let mut first = self.state.first_error.lock().expect("delivery lock");
                if first.is_none() {
                    *first = Some(format!("{} (topic {})", e, m.topic()));
                }
            }
        }
    }
}

/// The consumer's context: forwards rebalances to the thread's state.
pub struct StreamContext {
    health: Arc<Health>,
    /// Set when an offset commit failed (a rebalance or an outage got in
    /// its way): the next commit sends every task's offsets again, even if
    /// no task has changed since.
    offsets_outdated: AtomicBool,
}

impl ReportsHealth for StreamContext {
    fn health(&self) -> &Health {
        &self.health
    }
}
health_client_context!(StreamContext);

impl ConsumerContext for StreamContext {
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        // A commit can fail per partition while the request as a whole
        // succeeds (a member the coordinator no longer knows).
        let result = result.and_then(|()| match offsets.elements().iter().find_map(|e| e.error().err()) {
            Some(e) => Err(e),
            None => Ok(()),
        });
        if let Err(e) = result {
            if !self.offsets_outdated.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "committing consumer offsets failed (state is safe); sending them again at the next commit");
            }
        }
    }

    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        THREAD.with(|cell| {
            let mut guard = cell.borrow_mut();
            let Some(state) = guard.as_mut() else { return };
            let result = match err {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => state.on_assign(consumer, tpl),
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => state.on_revoke(consumer),
                other => {
                    tracing::warn!(error = ?other, "rebalance error; dropping the assignment");
                    state.on_revoke(consumer)
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "rebalance handling failed");
                state.fatal.get_or_insert(e);
                let _ = consumer.unassign();
            }
        });
    }
}

thread_local! {
    static THREAD: RefCell<Option<ThreadState>> = const { RefCell::new(None) };
}

struct ThreadState {
    app: Arc<AppShared>,
    name: String,
    tasks: BTreeMap<TaskId, Task>,
    producer: BaseProducer<DeliveryContext>,
    changelog_producer: BaseProducer<DeliveryContext>,
    delivery: Arc<DeliveryState>,
    health: Arc<Health>,
    last_commit: Instant,
    fatal: Option<Error>,
    /// Set once anything failed on the way to a commit (a send, a delivery,
    /// a commit step): from then on nothing is committed, not even by the
    /// revoke on the way out, since a commit could move the checkpoint past
    /// records whose outputs were never delivered. The thread stops; the
    /// uncommitted work is replayed by whoever owns the tasks next.
    failed: bool,
    /// Numbering of the outputs of the current origin, per topic. A
    /// record's outputs are contiguous in the collector (processing is
    /// depth-first), so only the current origin's counters are needed.
    origin_counters: Vec<(u32, u32)>,
    current_origin: Option<(u32, i64)>,
    /// librdkafka's topic handle (as an address) of each source topic seen
    /// since the last rebalance, with its topology index: a record's topic
    /// is found by comparing one pointer, without reading (strlen, UTF-8
    /// check) and hashing its name. The subscription of a thread never
    /// changes, so a handle stays the same topic's while it is assigned;
    /// the cache is cleared at every rebalance regardless.
    topic_handles: Vec<(usize, u32)>,
    /// Per task, the (hits, misses) of each store's cache as last reported.
    cache_seen: BTreeMap<TaskId, Vec<(u64, u64)>>,
    /// Records since start, for sampling latencies (one clock read per
    /// `SAMPLE` records keeps timing off the hot path).
    seen: u64,
    /// Records processed since the last commit.
    uncommitted: u64,
    /// Per task, the offset of its latest checkpoint record in the
    /// checkpoints topic (written or read at assignment): committed as the
    /// offsets' metadata so that a new owner reads just that record.
    checkpoint_at: BTreeMap<TaskId, i64>,
    /// Tasks committed at a revoke, waiting for the next assignment: it
    /// resumes those it gives back and closes the others.
    suspended: BTreeMap<TaskId, Task>,
    /// When the current rebalance took this thread's tasks away.
    rebalance_started: Option<Instant>,
}

/// Latencies are measured on one record in this many.
const SAMPLE: u64 = 64;

/// Run one stream thread until `stop` is set or a fatal error occurs.
///
/// A stop that cuts a commit short (the cluster did not take its records)
/// is a clean stop: nothing was committed past the undelivered records, so
/// the next start processes their input again.
pub fn run_thread(app: Arc<AppShared>, index: usize) -> Result<()> {
    let stop = app.stop.clone();
    match run_stream_thread(app, index) {
        Err(Error::Interrupted(why)) if stop.load(Ordering::Relaxed) => {
            tracing::warn!(
                "stopped without a last commit ({why}); the uncommitted input is processed again at the next start"
            );
            Ok(())
        }
        r => r,
    }
}

fn run_stream_thread(app: Arc<AppShared>, index: usize) -> Result<()> {
    let name = format!("{}-thread-{index}", app.plan.application_id);
    let delivery = Arc::new(DeliveryState::default());
    let health = Health::new(&name, app.status.clone());
    // Records (repartition, sinks, dead letters, checkpoints) need a
    // delivery report only when they fail: successful ones are then freed
    // on librdkafka's broker thread instead of being handed back one by
    // one to this thread (serving those reports was the stream thread's
    // largest single cost in `weir bench e2e`). Changelog records go
    // through a second producer that reports every delivery, since the
    // commit needs their offsets (the changelog positions).
    let producer: BaseProducer<DeliveryContext> = app
        .settings
        .producer_config()
        .set("delivery.report.only.error", "true")
        .create_with_context(DeliveryContext {
            state: delivery.clone(),
            health: health.clone(),
        })
        .map_err(|e| Error::kafka("creating the producer", e))?;
    let changelog_producer: BaseProducer<DeliveryContext> = app
        .settings
        .producer_config()
        .create_with_context(DeliveryContext {
            state: delivery.clone(),
            health: health.clone(),
        })
        .map_err(|e| Error::kafka("creating the changelog producer", e))?;
    let consumer: BaseConsumer<StreamContext> = app
        .settings
        .consumer_config(&app.plan.application_id)
        .set("client.id", &name)
        .create_with_context(StreamContext {
            health: health.clone(),
            offsets_outdated: AtomicBool::new(false),
        })
        .map_err(|e| Error::kafka("creating the consumer", e))?;
    THREAD.with(|cell| {
        *cell.borrow_mut() = Some(ThreadState {
            app: app.clone(),
            name: name.clone(),
            tasks: BTreeMap::new(),
            producer,
            changelog_producer,
            delivery,
            health,
            last_commit: Instant::now(),
            fatal: None,
            failed: false,
            origin_counters: Vec::new(),
            current_origin: None,
            topic_handles: Vec::new(),
            cache_seen: BTreeMap::new(),
            seen: 0,
            uncommitted: 0,
            checkpoint_at: BTreeMap::new(),
            suspended: BTreeMap::new(),
            rebalance_started: None,
        })
    });
    let topics = app.plan.source_topics();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&refs)
        .map_err(|e| Error::kafka(format!("subscribing to {topics:?}"), e))?;
    tracing::info!(thread = %name, topics = ?topics, "stream thread started");

    let result = poll_loop(&app, &consumer);
    if result.is_err() {
        with_state(|s| s.failed = true);
    }

    // Leave the group: the revoke callback commits and closes the tasks.
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && with_state(|s| !s.tasks.is_empty()) {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    let leftover = with_state(|s| {
        let r = if s.tasks.is_empty() || s.fatal.is_some() || s.failed {
            Ok(())
        } else {
            s.commit(&consumer, CommitMode::Sync)
        };
        let mut tasks = std::mem::take(&mut s.tasks);
        tasks.append(&mut s.suspended);
        s.close_tasks(tasks);
        r
    });
    drop(consumer);
    let state = THREAD.with(|cell| cell.borrow_mut().take());
    if let Some(mut s) = state {
        if s.failed {
            // Nothing was committed past these records: they are replayed,
            // so a stop need not wait for a cluster that may not answer.
            let purge = PurgeConfig::default().queue().inflight();
            s.producer.purge(purge);
            s.changelog_producer.purge(purge);
        } else {
            let _ = flush_producer(&s.producer, Duration::from_secs(10));
            let _ = flush_producer(&s.changelog_producer, Duration::from_secs(10));
        }
        if let Some(e) = s.fatal.take() {
            return Err(e);
        }
    }
    app.db
        .flush_to_disk()
        .map_err(|e| Error::State(format!("writing state to disk: {e}")))?;
    result.and(leftover)
}

fn with_state<R>(f: impl FnOnce(&mut ThreadState) -> R) -> R {
    THREAD.with(|cell| f(cell.borrow_mut().as_mut().expect("thread state")))
}

fn poll_loop(app: &AppShared, consumer: &BaseConsumer<StreamContext>) -> Result<()> {
    let health = consumer.context().health.clone();
    let mut last_probe = Instant::now();
    // The last time the cluster gave this thread a record or a probe answer.
    let mut last_contact = Instant::now();
    while !app.stop.load(Ordering::Relaxed) {
        if health.has_problem() {
            if last_probe.elapsed() >= PROBE_EVERY {
                last_probe = Instant::now();
                if probe(app, consumer, Duration::from_millis(500)) {
                    health.ok();
                    last_contact = Instant::now();
                }
            }
        } else if last_contact.elapsed() >= QUIET_PROBE_AFTER && last_probe.elapsed() >= QUIET_PROBE_AFTER {
            last_probe = Instant::now();
            if probe(app, consumer, QUIET_PROBE_TIMEOUT) {
                last_contact = Instant::now();
            } else {
                health.problem(format!(
                    "cluster unreachable: no answer to a metadata request in {} s",
                    QUIET_PROBE_TIMEOUT.as_secs()
                ));
            }
        }
        // Never hold the thread state across poll(): rebalance callbacks run
        // inside it and need the state.
        let first = consumer.poll(Duration::from_millis(50));
        let mut n = 0;
        let mut next = first;
        while let Some(item) = next {
            let msg = match item {
                Ok(msg) => msg,
                // librdkafka retries these by itself: report, go on.
                Err(e) if is_connectivity(&e) => {
                    health.problem(format!("consuming: {e}"));
                    break;
                }
                Err(e) => return Err(Error::kafka("consuming", e)),
            };
            last_contact = Instant::now();
            with_state(|s| s.process(&msg))?;
            n += 1;
            if n >= BATCH {
                break;
            }
            next = consumer.poll(Duration::ZERO);
        }
        with_state(|s| -> Result<()> {
            if let Some(e) = s.fatal.take() {
                return Err(e);
            }
            s.after_batch()?;
            let due = s.last_commit.elapsed() >= s.app.commit_interval;
            let wants = s.tasks.values_mut().any(|t| t.wants_flush());
            // A thread that found nothing to consume for a whole poll
            // timeout commits what it processed at once instead of holding
            // it until the interval: the end of a burst is delivered
            // without waiting up to a commit interval for the next tick.
            let idle = n == 0 && s.uncommitted > 0;
            if due || wants || idle {
                // Offsets are committed asynchronously here: state never
                // depends on them (see the module docs), and a revoke or a
                // shutdown commits synchronously.
                s.commit(consumer, CommitMode::Async)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Asks the cluster for the metadata of one source topic: whether it
/// answered within `timeout`.
fn probe(app: &AppShared, consumer: &BaseConsumer<StreamContext>, timeout: Duration) -> bool {
    let topic = app.plan.source_topics().into_iter().next();
    consumer.fetch_metadata(topic.as_deref(), timeout).is_ok()
}

fn origin_bytes(o: &Origin) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&o.upstream_partition.to_be_bytes());
    b[4..12].copy_from_slice(&o.offset.to_be_bytes());
    b[12..].copy_from_slice(&o.index.to_be_bytes());
    b
}

fn parse_origin(msg: &BorrowedMessage<'_>) -> Option<Origin> {
    let headers = msg.headers()?;
    for h in headers.iter() {
        if h.key == ORIGIN_HEADER {
            let v = h.value?;
            if v.len() != 16 {
                return None;
            }
            return Some(Origin {
                upstream_partition: i32::from_be_bytes(v[..4].try_into().ok()?),
                offset: i64::from_be_bytes(v[4..12].try_into().ok()?),
                index: u32::from_be_bytes(v[12..].try_into().ok()?),
            });
        }
    }
    None
}

/// Send one record, waiting while librdkafka's local queue is full.
#[allow(clippy::too_many_arguments)]
fn send(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    partition: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    timestamp: i64,
    headers: Option<OwnedHeaders>,
    track: usize,
    stop: &AtomicBool,
) -> Result<()> {
    let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, track)
        .partition(partition)
        .timestamp(timestamp);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    if let Some(h) = headers {
        record = record.headers(h);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                // The cluster does not take records as fast as they come
                // (or not at all, in an outage): wait, unless told to stop.
                if stop.load(Ordering::Relaxed) {
                    return Err(Error::Interrupted(format!(
                        "stopping while producing to {topic}: the producer's queue is full"
                    )));
                }
                producer.poll(Duration::from_millis(5));
                record = r;
            }
            Err((e, _)) => return Err(Error::kafka(format!("producing to {topic}"), e)),
        }
    }
}

impl ThreadState {
    fn process(&mut self, msg: &BorrowedMessage<'_>) -> Result<()> {
        let plan = &self.app.plan;
        let handle = msg.topic_ptr() as usize;
        let topic = match self.topic_handles.iter().find(|(h, _)| *h == handle) {
            Some(&(_, t)) => t,
            None => {
                let Some(&t) = plan.by_name.get(msg.topic()) else {
                    return Ok(());
                };
                self.topic_handles.push((handle, t));
                t
            }
        };
        let Some(id) = plan.task_of(topic, msg.partition()) else {
            return Ok(());
        };
        let Some(task) = self.tasks.get_mut(&id) else {
            // Not (or no longer) ours: the consumer will drop it at the
            // next rebalance.
            return Ok(());
        };
        let ts = msg.timestamp().to_millis().unwrap_or_else(now_ms);
        let origin = if plan.internal[topic as usize] {
            parse_origin(msg)
        } else {
            None
        };
        self.seen += 1;
        self.uncommitted += 1;
        let timed = self.seen.is_multiple_of(SAMPLE).then(Instant::now);
        match origin {
            Some(o) => {
                task.process_from(topic, msg.offset(), ts, msg.key(), msg.payload(), o);
            }
            None => task.process(topic, msg.offset(), ts, msg.key(), msg.payload()),
        }
        if let Some(t) = timed {
            self.app.metrics.process_latency.observe(t.elapsed().as_secs_f64());
        }
        if !task.ctx.dead_letters.is_empty() {
            let letters = std::mem::take(&mut task.ctx.dead_letters);
            self.app.metrics.dlq_records.inc_by(letters.len() as u64);
            let max = self.app.settings.max_record_bytes();
            for d in letters {
                let letter = DeadLetterOut::new(
                    &d.error,
                    msg.topic(),
                    d.partition,
                    d.offset,
                    msg.key(),
                    msg.payload(),
                    max,
                );
                if letter.truncated() {
                    tracing::warn!(
                        topic = msg.topic(),
                        partition = d.partition,
                        offset = d.offset,
                        "dead letter cut to fit message.max.bytes ({max}); original sizes in its headers"
                    );
                }
                let mut headers = OwnedHeaders::new_with_capacity(letter.headers.len());
                for (key, value) in &letter.headers {
                    headers = headers.insert(Header {
                        key,
                        value: Some(value.as_slice()),
                    });
                }
                // The dead-letter topic has one partition (see Plan).
                send(
                    &self.producer,
                    &self.app.plan.dlq_topic,
                    0,
                    letter.key,
                    letter.value,
                    ts,
                    Some(headers),
                    0,
                    &self.app.stop,
                )?;
            }
        }
        Ok(())
    }

    /// Send every task's pending outputs and punctuate.
    fn after_batch(&mut self) -> Result<()> {
        let now = now_ms();
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let task = self.tasks.get_mut(&id).expect("task");
            task.punctuate(now);
            self.drain(id)?;
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Produce the records task `id` collected.
    fn drain(&mut self, id: TaskId) -> Result<()> {
        let task = self.tasks.get_mut(&id).expect("task");
        if task.ctx.collector.is_empty() {
            return Ok(());
        }
        let mut collector = std::mem::take(&mut task.ctx.collector);
        let plan = &self.app.plan;
        self.origin_counters.clear();
        self.current_origin = None;
        let meters = self.tasks.get(&id).and_then(Task::metrics);
        let now = now_ms();
        for (i, rec) in collector.records().iter().enumerate() {
            let t = rec.topic as usize;
            if let Some(m) = meters {
                m.produced(rec.topic, 1);
            }
            if !plan.internal[t] && (i as u64).is_multiple_of(SAMPLE) {
                self.app
                    .metrics
                    .end_to_end_latency
                    .observe((now - rec.timestamp).max(0) as f64 / 1000.0);
            }
            let key = collector.slice(&rec.key);
            let value = collector.slice(&rec.value);
            let partitions = plan.topic_partitions[t].max(1);
            let partition = match key {
                Some(k) => default_partitioner(k, partitions),
                None => id.partition % partitions,
            };
            let headers = match (plan.internal[t], rec.origin) {
                (true, Some((src_topic, offset))) => {
                    if self.current_origin != Some((src_topic, offset)) {
                        self.current_origin = Some((src_topic, offset));
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
                    let o = Origin {
                        upstream_partition: ((src_topic as i32) << 20) | id.partition,
                        offset,
                        index,
                    };
                    Some(OwnedHeaders::new_with_capacity(1).insert(Header {
                        key: ORIGIN_HEADER,
                        value: Some(&origin_bytes(&o)[..]),
                    }))
                }
                _ => None,
            };
            send(
                &self.producer,
                &plan.topic_names[t],
                partition,
                key,
                value,
                rec.timestamp,
                headers,
                0,
                &self.app.stop,
            )?;
        }
        collector.clear();
        self.tasks.get_mut(&id).expect("task").ctx.collector = collector;
        Ok(())
    }

    /// Waits until everything sent through both producers is delivered, riding
    /// out an outage up to the delivery timeout: after [`SLOW_DELIVERY`]
    /// the wait is a problem (`/readyz` 503, one log line); a stop request
    /// ends the wait (nothing is committed then, the work is replayed).
    fn await_delivery(&self) -> Result<()> {
        const STEP: Duration = Duration::from_millis(200);
        let started = Instant::now();
        let in_flight = |s: &Self| s.producer.in_flight_count() + s.changelog_producer.in_flight_count();
        loop {
            let done =
                flush_producer(&self.producer, STEP).is_ok() && flush_producer(&self.changelog_producer, STEP).is_ok();
            let waited = started.elapsed();
            if done {
                if waited >= SLOW_DELIVERY {
                    self.health.ok();
                }
                return Ok(());
            }
            if self.app.stop.load(Ordering::Relaxed) {
                return Err(Error::Interrupted(format!(
                    "stopping while {} record(s) wait for delivery",
                    in_flight(self)
                )));
            }
            if waited >= self.app.delivery_timeout {
                return Err(Error::Timeout {
                    what: format!(
                        "{} record(s) to be delivered (the delivery timeout; see --delivery-timeout-ms)",
                        in_flight(self)
                    ),
                    after: waited,
                });
            }
            if waited >= SLOW_DELIVERY {
                self.health.problem(format!(
                    "a commit has waited {} s for {} record(s) to be delivered",
                    waited.as_secs(),
                    in_flight(self)
                ));
            }
        }
    }

    fn check_delivery(&self) -> Result<()> {
        if let Some(e) = self.delivery.first_error.lock().expect("delivery lock").clone() {
            return Err(Error::Delivery {
                topic: "(several)".into(),
                failed: 1,
                first_error: e,
            });
        }
        Ok(())
    }

    /// The commit protocol; see the module docs.
    fn commit(&mut self, consumer: &BaseConsumer<StreamContext>, offsets_mode: CommitMode) -> Result<()> {
        if self.failed || self.fatal.is_some() {
            return Err(Error::CommitRefused(
                "an earlier send, delivery or commit step of this thread failed".into(),
            ));
        }
        self.last_commit = Instant::now();
        self.uncommitted = 0;
        if self.tasks.is_empty() {
            return Ok(());
        }
        let result = self.commit_steps(consumer, offsets_mode);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// The five steps of [`commit`](Self::commit).
    fn commit_steps(&mut self, consumer: &BaseConsumer<StreamContext>, offsets_mode: CommitMode) -> Result<()> {
        let started = Instant::now();
        // 1. Flush every task (upstream sub-topologies first) and send what
        // comes out, changelog records included.
        let all: Vec<TaskId> = self.tasks.keys().copied().collect();
        // The tasks with something to commit; an idle task writes nothing
        // (no checkpoint record, no sled batch, no offsets).
        let mut ids: Vec<TaskId> = Vec::with_capacity(all.len());
        for &id in &all {
            let task = self.tasks.get_mut(&id).expect("task");
            task.flush();
            if task.has_changes() {
                ids.push(id);
            }
            if let Some(e) = task.ctx.take_fatal() {
                return Err(Error::Task {
                    task: id.to_string(),
                    reason: e.to_string(),
                });
            }
            self.drain(id)?;
            let task = self.tasks.get_mut(&id).expect("task");
            let changes = std::mem::take(&mut task.ctx.changelog);
            let changelogs = &self.app.plan.changelogs[id.subtopology];
            for (store, rec) in &changes {
                let Some((_, topic)) = changelogs.iter().find(|(s, _)| s.as_str() == &**store) else {
                    continue; // not logged
                };
                send(
                    &self.changelog_producer,
                    topic,
                    id.partition,
                    Some(&rec.key),
                    rec.value.as_deref(),
                    now_ms(),
                    None,
                    1,
                    &self.app.stop,
                )?;
            }
            let counters = std::mem::take(&mut task.ctx.counters);
            self.app
                .metrics
                .late_records_dropped
                .inc_by(counters.late_records_dropped);
        }
        self.app.metrics.commits.inc();
        if ids.is_empty() {
            // Outputs of punctuations may still be on their way: they are
            // delivered (or fail) with the next commit that has changes.
            if consumer.context().offsets_outdated.swap(false, Ordering::Relaxed) {
                let all: Vec<(TaskId, TaskCheckpoint)> =
                    self.tasks.iter().map(|(id, t)| (*id, t.task_checkpoint())).collect();
                self.commit_offsets(consumer, &all, offsets_mode);
            }
            self.report_state(consumer);
            return Ok(());
        }
        // 2. Everything delivered, or nothing is committed.
        self.await_delivery()?;
        self.check_delivery()?;
        // 3. The checkpoints.
        let positions = std::mem::take(&mut *self.delivery.positions.lock().expect("delivery lock"));
        let mut checkpoints: Vec<(TaskId, TaskCheckpoint)> = Vec::new();
        for &id in &ids {
            let task = self.tasks.get_mut(&id).expect("task");
            for (store, topic) in &self.app.plan.changelogs[id.subtopology] {
                if let Some(p) = positions.get(&(topic.clone(), id.partition)) {
                    task.set_changelog_position(store, *p);
                }
            }
            task.next_seq();
            let cp = task.task_checkpoint();
            let bytes = cp.to_checkpoint(id.partition).encode();
            // Through the producer that reports every delivery: the
            // record's offset is the pointer committed with the offsets.
            send(
                &self.changelog_producer,
                &self.app.plan.checkpoints_topic,
                0,
                Some(id.to_string().as_bytes()),
                Some(&bytes),
                now_ms(),
                None,
                CHECKPOINT_TRACK + checkpoints.len(),
                &self.app.stop,
            )?;
            checkpoints.push((id, cp));
        }
        self.app.metrics.checkpoints_written.inc_by(checkpoints.len() as u64);
        self.await_delivery()?;
        self.check_delivery()?;
        let delivered = std::mem::take(&mut *self.delivery.checkpoints.lock().expect("delivery lock"));
        for (i, (id, _)) in checkpoints.iter().enumerate() {
            if let Some(offset) = delivered.get(&(CHECKPOINT_TRACK + i)) {
                self.checkpoint_at.insert(*id, *offset);
            }
        }
        // 4. Local state, atomically with the same checkpoint.
        for &id in &ids {
            self.tasks
                .get_mut(&id)
                .expect("task")
                .commit_state()
                .map_err(|e| Error::Task {
                    task: id.to_string(),
                    reason: format!("committing local state: {e}"),
                })?;
        }
        // 5. Consumer offsets (informational for stateful tasks).
        self.commit_offsets(consumer, &checkpoints, offsets_mode);
        self.report_state(consumer);
        self.app
            .metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(thread = %self.name, ms = started.elapsed().as_millis() as u64, "commit");
        Ok(())
    }

    /// Commits the consumer offsets that `checkpoints` name. They are
    /// informational (lag, stateless tasks): state never depends on them,
    /// so a failure is logged and the offsets sent again next time.
    fn commit_offsets(
        &self,
        consumer: &BaseConsumer<StreamContext>,
        checkpoints: &[(TaskId, TaskCheckpoint)],
        mode: CommitMode,
    ) {
        let mut tpl = TopicPartitionList::new();
        for (id, cp) in checkpoints {
            let pointer = self.checkpoint_at.get(id).map(|o| restore::checkpoint_pointer(*o));
            for (topic, offset) in &cp.inputs {
                let mut e = tpl.add_partition(topic, id.partition);
                if e.set_offset(Offset::Offset(*offset)).is_err() {
                    continue;
                }
                if let Some(p) = &pointer {
                    e.set_metadata(p);
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.commit(&tpl, mode) {
                consumer.context().offsets_outdated.store(true, Ordering::Relaxed);
                tracing::warn!(thread = %self.name, error = %e, "committing consumer offsets failed (state is safe)");
            }
        }
    }

    /// Gauges and counters read at commit time: store sizes and cache
    /// hits, consumer lag (from the partitions' high watermarks).
    fn report_state(&mut self, consumer: &BaseConsumer<StreamContext>) {
        for (id, task) in &self.tasks {
            let Some(m) = task.metrics() else { continue };
            let seen_all = self.cache_seen.entry(*id).or_default();
            seen_all.resize(task.stores().len(), (0, 0));
            for (i, (_, store)) in task.stores().iter().enumerate() {
                let (len, stats) = match store {
                    StoreRef::KeyValue(s) => {
                        let s = s.borrow();
                        (s.approximate_len(), s.cache_stats())
                    }
                    StoreRef::Window(s) => {
                        let s = s.borrow();
                        (s.approximate_len(), s.cache_stats())
                    }
                };
                if let (Some(h), Some(seen)) = (m.stores.get(i), seen_all.get_mut(i)) {
                    h.entries.set(len as i64);
                    h.cache_bytes.set(task.state().cache_bytes(&task.stores()[i].0) as i64);
                    h.cache_hits.inc_by(stats.hits.saturating_sub(seen.0));
                    h.cache_misses.inc_by(stats.misses.saturating_sub(seen.1));
                    *seen = (stats.hits, stats.misses);
                }
            }
            for (topic, next) in task.consumed() {
                let name = &self.app.plan.topic_names[*topic as usize];
                if let Some(high) = cached_high_watermark(consumer, name, id.partition) {
                    m.set_lag(*topic, high - next);
                }
            }
        }
    }

    /// Metric handles for a new task.
    fn meters_for(&self, task: &Task) -> TaskMetrics {
        let plan = &self.app.plan;
        let sub = &self.app.topology.subtopologies()[task.id().subtopology];
        let sources: Vec<(u32, &str)> = sub
            .source_topics
            .iter()
            .map(|t| (*t, plan.topic_names[*t as usize].as_str()))
            .collect();
        let sinks: Vec<(u32, &str)> = sub
            .sink_topics
            .iter()
            .map(|t| (*t, plan.topic_names[*t as usize].as_str()))
            .collect();
        let stores: Vec<&str> = task.stores().iter().map(|(n, _)| n.as_str()).collect();
        self.app
            .metrics
            .task(&task.id().to_string(), task.id().partition, &sources, &sinks, &stores)
    }

    fn on_revoke(&mut self, consumer: &BaseConsumer<StreamContext>) -> Result<()> {
        self.topic_handles.clear();
        if !self.tasks.is_empty() {
            // After a failure nothing may be committed (see `failed`): the
            // tasks are closed as they are and their work is replayed.
            let r = if self.failed || self.fatal.is_some() {
                Ok(())
            } else {
                self.commit(consumer, CommitMode::Sync)
            };
            let n = self.tasks.len();
            self.app.metrics.active_tasks.sub(n as i64);
            self.app.status.update(&self.name, |t| t.tasks.clear());
            self.rebalance_started.get_or_insert_with(Instant::now);
            if r.is_ok() && !self.failed && self.fatal.is_none() {
                // Committed: kept as they are until the next assignment,
                // which resumes those it gives back to this thread (no
                // close, no restore) and closes the rest.
                self.suspended.append(&mut self.tasks);
                self.app.metrics.task_events(TaskEvent::Suspended, n as u64);
                tracing::info!(thread = %self.name, tasks = n, "partitions revoked; tasks committed and suspended");
            } else {
                let tasks = std::mem::take(&mut self.tasks);
                self.close_tasks(tasks);
                tracing::info!(thread = %self.name, tasks = n, "partitions revoked; tasks closed without a commit");
            }
            r?;
        }
        consumer
            .unassign()
            .map_err(|e| Error::kafka("unassigning partitions", e))
    }

    /// Closes `tasks` (their work is committed, or is to be replayed): the
    /// processors close and the stores are no longer served here.
    fn close_tasks(&mut self, tasks: BTreeMap<TaskId, Task>) {
        let n = tasks.len();
        for (id, mut t) in tasks {
            t.close();
            let stores: Vec<String> = t.stores().iter().map(|(n, _)| n.clone()).collect();
            self.app
                .status
                .unhost(&self.app.plan.application_id, id.partition, &stores);
            self.cache_seen.remove(&id);
            self.checkpoint_at.remove(&id);
        }
        if n > 0 {
            self.app.metrics.task_events(TaskEvent::Closed, n as u64);
        }
    }

    /// The latest checkpoint of each task in `ids` from the checkpoints
    /// topic: one record per task, found through the pointers committed
    /// with the group's offsets. A task whose partitions have no committed
    /// offset has never committed (a checkpoint is written before its
    /// offsets), so it has none; only offsets committed without pointers (by
    /// an older weir) make the whole topic be read.
    fn remote_checkpoints(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
        tpl: &TopicPartitionList,
        ids: &[TaskId],
    ) -> Result<HashMap<String, TaskCheckpoint>> {
        let plan = &self.app.plan;
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
            .map_err(|e| Error::kafka("reading the group's committed offsets", e))?;
        let mut pointers: BTreeMap<TaskId, i64> = BTreeMap::new();
        let mut unpointed = false;
        for e in committed.elements() {
            let Some(&t) = plan.by_name.get(e.topic()) else {
                continue;
            };
            let Some(id) = plan.task_of(t, e.partition()) else {
                continue;
            };
            match restore::parse_checkpoint_pointer(e.metadata()) {
                Some(p) => {
                    let slot = pointers.entry(id).or_insert(p);
                    *slot = (*slot).max(p);
                }
                None if matches!(e.offset(), Offset::Offset(_)) => unpointed = true,
                None => {}
            }
        }
        let read = |pointers: &BTreeMap<TaskId, i64>| -> Result<Option<HashMap<String, TaskCheckpoint>>> {
            let list: Vec<(String, i64)> = pointers
                .iter()
                .filter(|(id, _)| ids.contains(id))
                .map(|(id, o)| (id.to_string(), *o))
                .collect();
            restore::read_checkpoints_at(&self.app.settings, &plan.checkpoints_topic, &list)
        };
        let found = if unpointed { None } else { read(&pointers)? };
        self.checkpoint_at.extend(pointers);
        let remote = match found {
            Some(found) => {
                self.app.metrics.checkpoint_records_read.inc_by(found.len() as u64);
                found
            }
            None => {
                tracing::info!(thread = %self.name, "reading the whole checkpoints topic (offsets without checkpoint pointers)");
                let (all, records) = restore::read_checkpoints(&self.app.settings, &plan.checkpoints_topic)?;
                self.app.metrics.checkpoint_records_read.inc_by(records);
                let mut remote = HashMap::new();
                for (task, (offset, cp)) in all {
                    if let Some(id) = ids.iter().find(|id| id.to_string() == task) {
                        self.checkpoint_at.insert(*id, offset);
                    }
                    remote.insert(task, cp);
                }
                remote
            }
        };
        Ok(remote)
    }

    fn on_assign(&mut self, consumer: &BaseConsumer<StreamContext>, tpl: &mut TopicPartitionList) -> Result<()> {
        self.topic_handles.clear();
        let plan = self.app.plan.clone();
        let mut ids: Vec<TaskId> = Vec::new();
        for e in tpl.elements() {
            if let Some(&t) = plan.by_name.get(e.topic()) {
                if let Some(id) = plan.task_of(t, e.partition()) {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
        }
        ids.sort();
        self.app.metrics.rebalances.inc();
        // The offsets committed on the way out of the last assignment may
        // have failed (a member expired during an outage): the first commit
        // of this one sends every task's offsets again.
        consumer.context().offsets_outdated.store(true, Ordering::Relaxed);
        let restore_started = Instant::now();
        self.app.status.update(&self.name, |t| {
            t.ready = false;
            t.restoring = ids.iter().map(|i| i.to_string()).collect();
        });
        let remote = self.remote_checkpoints(consumer, tpl, &ids)?;
        for id in &ids {
            if self.tasks.contains_key(id) {
                continue;
            }
            if let Some(task) = self.suspended.remove(id) {
                // Given back to this thread. Its state is what it committed
                // at the revoke, unless another owner worked on it since
                // (this member was out of the group meanwhile): a newer
                // checkpoint, or changelog records past its position. Then
                // it starts over like any new task.
                let mut newer = remote.get(&id.to_string()).is_some_and(|cp| cp.seq > task.seq());
                for (store, topic) in &plan.changelogs[id.subtopology] {
                    let high = watermark_high(consumer, topic, id.partition)?;
                    newer |= high > task.changelog_position(store).unwrap_or(0);
                }
                if !newer {
                    self.app.metrics.task_events(TaskEvent::Resumed, 1);
                    self.tasks.insert(*id, task);
                    self.app.metrics.active_tasks.inc();
                    continue;
                }
                self.close_tasks(BTreeMap::from([(*id, task)]));
            }
            self.app.metrics.task_events(TaskEvent::Created, 1);
            let mut task = Task::new(
                &self.app.topology,
                &plan.application_id,
                *id,
                &self.app.db,
                self.app.task_config.clone(),
            )
            .map_err(|e| Error::Task {
                task: id.to_string(),
                reason: format!("creating the task: {e}"),
            })?;
            let local = task.task_checkpoint();
            let changelogs = &plan.changelogs[id.subtopology];
            // Local state that is ahead of the changelog means the cluster
            // lost data (a fresh development broker): start over.
            let mut stale = false;
            let mut highs: Vec<i64> = Vec::with_capacity(changelogs.len());
            for (store, topic) in changelogs {
                let high = watermark_high(consumer, topic, id.partition)?;
                highs.push(high);
                if task.changelog_position(store).is_some_and(|p| p > high) {
                    stale = true;
                }
            }
            if stale {
                tracing::warn!(task = %id, "local state is ahead of its changelog; wiping it");
                task.state().wipe().map_err(|e| Error::Task {
                    task: id.to_string(),
                    reason: format!("wiping stale local state: {e}"),
                })?;
                drop(task);
                task = Task::new(
                    &self.app.topology,
                    &plan.application_id,
                    *id,
                    &self.app.db,
                    self.app.task_config.clone(),
                )
                .map_err(|e| Error::Task {
                    task: id.to_string(),
                    reason: format!("creating the task: {e}"),
                })?;
            }
            let meters = self.meters_for(&task);
            let task_stores: Vec<String> = task.stores().iter().map(|(n, _)| n.clone()).collect();
            match remote.get(&id.to_string()) {
                Some(target) if target.seq > local.seq || stale => {
                    tracing::info!(task = %id, from_seq = local.seq, to_seq = target.seq, "restoring state from changelog");
                    let (status, thread, task_name) = (self.app.status.clone(), self.name.clone(), id.to_string());
                    let mut progress = |store: &str, remaining: i64| {
                        if let Some(i) = task_stores.iter().position(|s| s == store) {
                            meters.stores[i].restore_remaining.set(remaining);
                        }
                        status.update(&thread, |t| {
                            let stores = t.restore_remaining.entry(task_name.clone()).or_default();
                            stores.insert(store.to_string(), remaining);
                        });
                    };
                    let per_store =
                        restore::restore_task(&self.app.settings, &mut task, changelogs, target, &mut progress)?;
                    self.app.status.update(&self.name, |t| {
                        t.restore_remaining.remove(&id.to_string());
                    });
                    for ((store, _), n) in changelogs.iter().zip(&per_store) {
                        if let Some(i) = task.stores().iter().position(|(s, _)| s == store) {
                            meters.stores[i].restore_records.inc_by(*n);
                        }
                    }
                    let n: u64 = per_store.iter().sum();
                    self.app.status.update(&self.name, |t| t.restored_records += n);
                    self.app.metrics.task_events(TaskEvent::Restored, 1);
                }
                _ => {}
            }
            // Records past the position the task now stands at were written
            // by a commit that never finished; this task's own records will
            // follow them, so restores must skip them from now on.
            for ((store, _), high) in changelogs.iter().zip(&highs) {
                let at = task.changelog_position(store).unwrap_or(0);
                if *high > at {
                    tracing::info!(task = %id, store = %store, from = at, to = high,
                        "skipping changelog records of a commit that never finished");
                    task.skip_changelog(store, at, *high);
                }
            }
            task.set_metrics(meters);
            let stores: Vec<String> = task.stores().iter().map(|(n, _)| n.clone()).collect();
            self.app
                .status
                .host(&plan.application_id, id.partition, &stores, &task.state().reader());
            self.tasks.insert(*id, task);
            self.app.metrics.active_tasks.inc();
        }
        // Suspended tasks this assignment did not give back.
        let gone = std::mem::take(&mut self.suspended);
        self.close_tasks(gone);
        self.app
            .metrics
            .restore_duration
            .observe(restore_started.elapsed().as_secs_f64());
        // Hand the consumer the offsets the tasks' state reflects.
        let mut offsets: Vec<(String, i32, i64)> = Vec::new();
        for e in tpl.elements() {
            let Some(&t) = plan.by_name.get(e.topic()) else {
                continue;
            };
            let Some(id) = plan.task_of(t, e.partition()) else {
                continue;
            };
            if let Some(task) = self.tasks.get(&id) {
                if let Some((_, o)) = task.consumed().iter().find(|(tt, _)| *tt == t) {
                    offsets.push((e.topic().to_string(), e.partition(), *o));
                }
            }
        }
        for (topic, partition, offset) in offsets {
            tpl.set_partition_offset(&topic, partition, Offset::Offset(offset))
                .map_err(|e| Error::kafka(format!("positioning {topic}/{partition}"), e))?;
        }
        consumer
            .assign(tpl)
            .map_err(|e| Error::kafka("assigning partitions", e))?;
        self.last_commit = Instant::now();
        if let Some(started) = self.rebalance_started.take() {
            let pause = started.elapsed();
            self.app.metrics.rebalance_pause.observe(pause.as_secs_f64());
            tracing::info!(thread = %self.name, pause_ms = pause.as_millis() as u64, "rebalance done; processing resumes");
        }
        let tasks: Vec<String> = self.tasks.keys().map(|i| i.to_string()).collect();
        self.app.status.update(&self.name, |t| {
            t.ready = true;
            t.restoring.clear();
            t.tasks = tasks;
        });
        tracing::info!(thread = %self.name, tasks = ?ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(), "partitions assigned; tasks ready");
        Ok(())
    }
}

/// The high watermark of a partition, asked of the broker through the
/// stream thread's own consumer (no new connection, unlike a consumer of
/// its own per question).
fn watermark_high(consumer: &BaseConsumer<StreamContext>, topic: &str, partition: i32) -> Result<i64> {
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map(|(_, high)| high)
        .map_err(|e| Error::kafka(format!("watermarks of {topic}/{partition}"), e))
}

/// The high watermark of a partition as of the consumer's last fetch
/// response for it (librdkafka's cache: no request to the broker, unlike
/// `fetch_watermarks`, which cost one round trip per partition per commit
/// on the stream thread). `None` until a fetch has reported one.
fn cached_high_watermark(consumer: &BaseConsumer<StreamContext>, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the topic
    // is a NUL-terminated string that outlives the call; `low` and `high`
    // are valid for writes. The function only reads librdkafka's cache.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
