//! A stream thread: one consumer in the application's group, the tasks of
//! the partitions it was assigned, two producers (records; changelog records), and the commit protocol.
//!
//! Records are processed synchronously on this thread in batches (a
//! `BaseConsumer` poll loop; no async call per record). Rebalance callbacks
//! run inside `poll` on this same thread, so the thread's tasks live in a
//! thread-local the callbacks can reach: a revoke commits and suspends the
//! tasks *before* the partitions are given up, and an assignment resumes or
//! restores the tasks and hands the consumer the exact offsets their state
//! reflects.
//!
//! What lives where: this file holds the poll loop and the rdkafka
//! adapters (client contexts, the thread state); `records.rs` the record
//! path (a record through its task, dead letters, outputs with origins);
//! `commit.rs` the commit protocol; `assign.rs` revokes and assignments
//! (suspend/resume, checkpoints, restore); `health.rs` the view of the
//! cluster (`/readyz`, outages); `restore.rs` reading checkpoints and
//! changelogs back.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext, PurgeConfig};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::TopicPartitionList;
use weir_runtime::metrics::TopologyMetrics;
use weir_runtime::{Task, TaskConfig, TaskId};
use weir_state::StateDb;
use weir_topology::Topology;

use super::health::{health_client_context, is_connectivity, Health, ReportsHealth};
use super::plan::Plan;
use crate::kafka::{flush_producer, ClientSettings};
use crate::{Error, Result};

/// Records taken from the consumer per batch before outputs are sent.
const BATCH: usize = 10_000;
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
    pub(super) first_error: Mutex<Option<String>>,
    pub(super) positions: Mutex<HashMap<(String, i32), i64>>,
    /// Offsets of delivered checkpoint records, by their opaque
    /// ([`CHECKPOINT_TRACK`] + the task's index in the commit).
    pub(super) checkpoints: Mutex<HashMap<usize, i64>>,
}

/// Delivery opaques: 0 records (reported only on error), 1 changelog
/// records (their end offsets make the changelog positions), and from
/// `CHECKPOINT_TRACK` on, checkpoint records (their offsets become the
/// pointers stored with the consumer offsets).
pub(super) const CHECKPOINT_TRACK: usize = 2;

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
    pub(super) health: Arc<Health>,
    /// Set when an offset commit failed (a rebalance or an outage got in
    /// its way): the next commit sends every task's offsets again, even if
    /// no task has changed since.
    pub(super) offsets_outdated: AtomicBool,
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

pub(super) struct ThreadState {
    pub(super) app: Arc<AppShared>,
    pub(super) name: String,
    pub(super) tasks: BTreeMap<TaskId, Task>,
    pub(super) producer: BaseProducer<DeliveryContext>,
    pub(super) changelog_producer: BaseProducer<DeliveryContext>,
    pub(super) delivery: Arc<DeliveryState>,
    pub(super) health: Arc<Health>,
    pub(super) last_commit: Instant,
    pub(super) fatal: Option<Error>,
    /// Set once anything failed on the way to a commit (a send, a delivery,
    /// a commit step): from then on nothing is committed, not even by the
    /// revoke on the way out, since a commit could move the checkpoint past
    /// records whose outputs were never delivered. The thread stops; the
    /// uncommitted work is replayed by whoever owns the tasks next.
    pub(super) failed: bool,
    /// Numbering of the outputs of the current origin, per topic. A
    /// record's outputs are contiguous in the collector (processing is
    /// depth-first), so only the current origin's counters are needed.
    pub(super) origin_counters: Vec<(u32, u32)>,
    pub(super) current_origin: Option<(u32, i64)>,
    /// librdkafka's topic handle (as an address) of each source topic seen
    /// since the last rebalance, with its topology index: a record's topic
    /// is found by comparing one pointer, without reading (strlen, UTF-8
    /// check) and hashing its name. The subscription of a thread never
    /// changes, so a handle stays the same topic's while it is assigned;
    /// the cache is cleared at every rebalance regardless.
    pub(super) topic_handles: Vec<(usize, u32)>,
    /// Per task, the (hits, misses) of each store's cache as last reported.
    pub(super) cache_seen: BTreeMap<TaskId, Vec<(u64, u64)>>,
    /// Records since start, for sampling latencies (one clock read per
    /// `SAMPLE` records keeps timing off the hot path).
    pub(super) seen: u64,
    /// Records processed since the last commit.
    pub(super) uncommitted: u64,
    /// Per task, the offset of its latest checkpoint record in the
    /// checkpoints topic (written or read at assignment): committed as the
    /// offsets' metadata so that a new owner reads just that record.
    pub(super) checkpoint_at: BTreeMap<TaskId, i64>,
    /// Tasks committed at a revoke, waiting for the next assignment: it
    /// resumes those it gives back and closes the others.
    pub(super) suspended: BTreeMap<TaskId, Task>,
    /// When the current rebalance took this thread's tasks away.
    pub(super) rebalance_started: Option<Instant>,
}

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

    // Leave the group: the revoke callback commits and suspends the tasks;
    // they are closed below.
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && with_state(|s| !s.tasks.is_empty()) {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    let leftover = with_state(|s| {
        let r = if s.tasks.is_empty() || s.has_failed() {
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
        if s.has_failed() {
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

impl ThreadState {
    /// Whether anything failed on this thread (see `failed`, `fatal`):
    /// then nothing may be committed any more.
    pub(super) fn has_failed(&self) -> bool {
        self.failed || self.fatal.is_some()
    }
}

pub(super) fn with_state<R>(f: impl FnOnce(&mut ThreadState) -> R) -> R {
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
