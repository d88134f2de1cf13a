//! A stream thread: one consumer in the application's group, a
//! [`TaskManager`] (weir-runtime) with the tasks of the partitions it was
//! assigned, and the rdkafka [`Transport`](weir_runtime::Transport) it runs
//! them over (`transport.rs`).
//!
//! Records are processed synchronously on this thread in batches (a
//! `BaseConsumer` poll loop; no async call per record). Rebalance
//! callbacks run inside `poll` on this same thread, so the thread's state
//! lives in a thread-local the callbacks can reach: a revoke commits and
//! suspends the tasks *before* the partitions are given up; an assignment
//! resumes or creates the tasks, hands the consumer the exact offsets
//! their state reflects, and pauses the partitions of restoring tasks,
//! which the loop then restores step by step between batches.
//!
//! What lives where: this file holds the poll loop and the rdkafka
//! adapters (the consumer's context, the thread-local); `transport.rs` the
//! producers and delivery reports; `restore.rs` reading ranges back;
//! `health.rs` the view of the cluster (`/readyz`, outages). Task
//! management, the record path, the commit protocol and restore are
//! weir-runtime's `manager`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use weir_runtime::manager::{
    decode_origin, now_ms, read_repartition_value, Assignment, Batch, Guarantee, Incoming, ManagerConfig, ORIGIN_HEADER,
};
use weir_runtime::metrics::TopologyMetrics;
use weir_runtime::{Plan, TaskConfig, TaskManager};
use weir_state::StateDb;
use weir_topology::Topology;

use super::health::{health_client_context, is_connectivity, Health, ReportsHealth};
use super::status::StatusListener;
use super::transport::{KafkaIo, KafkaTransport};
use crate::kafka::ClientSettings;
use crate::{Error, Result};

/// Records taken from the consumer per batch before outputs are sent.
const BATCH: usize = 10_000;
/// Changelog records a restore step reads before the loop polls again.
const RESTORE_STEP: usize = 10_000;
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
    pub plan: Arc<Plan>,
    pub settings: ClientSettings,
    pub db: Arc<StateDb>,
    pub task_config: TaskConfig,
    pub commit_interval: Duration,
    /// How long a commit waits for its records to be delivered (riding out
    /// a broker outage) before the thread gives up; also librdkafka's
    /// `message.timeout.ms`.
    pub delivery_timeout: Duration,
    /// Static membership: thread `i` joins as `{instance_id}-{i}`.
    pub instance_id: Option<String>,
    /// At-least-once or exactly-once (see `transport.rs`).
    pub guarantee: Guarantee,
    /// Exactly-once: thread `i`'s producer is `{transactional_prefix}-{i}`
    /// (`{application}-{instance}`, stable across restarts).
    pub transactional_prefix: String,
    pub stop: Arc<AtomicBool>,
    /// Where each thread stands (assignment, restore); for readiness.
    pub status: Arc<super::RunStatus>,
    /// This application's metric handles.
    pub metrics: TopologyMetrics,
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

struct ThreadState {
    app: Arc<AppShared>,
    manager: TaskManager,
    io: KafkaIo,
    fatal: Option<Error>,
    /// librdkafka's topic handle (as an address) of each source topic seen
    /// since the last rebalance, with its topology index: a record's topic
    /// is found by comparing one pointer, without reading (strlen, UTF-8
    /// check) and hashing its name. The cache is cleared at every
    /// rebalance.
    topic_handles: Vec<(usize, u32)>,
    /// Partitions paused while their task restores, with the first offset
    /// the consumer handed over for them anyway (fetched before the pause
    /// took effect; the task was not running, so it was not processed).
    paused: HashMap<(u32, i32), Option<i64>>,
    /// Exactly-once recoveries since the last successful commit (a failure
    /// that comes back every time is not recovered from for ever).
    recoveries: u32,
}

/// Recoveries in a row, without a commit between them, after which a
/// failure stops the thread.
const MAX_RECOVERIES: u32 = 5;

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
    let health = Health::new(&name, app.status.clone());
    let transactional_id = format!("{}-{index}", app.transactional_prefix);
    let io = KafkaIo::new(
        &app.settings,
        health.clone(),
        app.stop.clone(),
        app.delivery_timeout,
        (app.guarantee == Guarantee::ExactlyOnce).then_some(transactional_id.as_str()),
    )?;
    let mut config = app.settings.consumer_config(&app.plan.application_id);
    config.set("client.id", &name);
    if let Some(id) = &app.instance_id {
        config.set("group.instance.id", format!("{id}-{index}"));
    }
    let consumer: BaseConsumer<StreamContext> = config
        .create_with_context(StreamContext {
            health: health.clone(),
            offsets_outdated: AtomicBool::new(false),
        })
        .map_err(|e| Error::kafka("creating the consumer", e))?;
    let manager = TaskManager::new(
        ManagerConfig {
            topology: app.topology.clone(),
            plan: app.plan.clone(),
            db: app.db.clone(),
            task_config: app.task_config.clone(),
            metrics: app.metrics.clone(),
            max_record_bytes: app.settings.max_record_bytes(),
            name: name.clone(),
            cluster_keeps_data: true,
            guarantee: app.guarantee,
        },
        Box::new(StatusListener {
            status: app.status.clone(),
            thread: name.clone(),
            application: app.plan.application_id.clone(),
        }),
    );
    THREAD.with(|cell| {
        *cell.borrow_mut() = Some(ThreadState {
            app: app.clone(),
            manager,
            io,
            fatal: None,
            topic_handles: Vec::new(),
            paused: HashMap::new(),
            recoveries: 0,
        })
    });
    let topics = app.plan.source_topics();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&refs)
        .map_err(|e| Error::kafka(format!("subscribing to {topics:?}"), e))?;
    tracing::info!(thread = %name, topics = ?topics, "stream thread started");

    let result = poll_loop(&app, &consumer);
    if let Err(e) = &result {
        with_state(|s| s.manager.fail(e.to_string()));
    }

    // Leave the group: the revoke callback commits and suspends the tasks;
    // they are closed below.
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && with_state(|s| !s.manager.running().is_empty()) {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    let leftover = with_state(|s| {
        let r = if s.manager.running().is_empty() || s.has_failed() {
            Ok(())
        } else {
            let mut t = KafkaTransport {
                io: &mut s.io,
                consumer: &consumer,
            };
            s.manager.commit(&mut t, true).map_err(Error::from)
        };
        s.manager.close_all();
        r
    });
    drop(consumer);
    let state = THREAD.with(|cell| cell.borrow_mut().take());
    if let Some(mut s) = state {
        let failed = s.has_failed();
        s.io.finish(failed);
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
    /// Whether anything failed on this thread: then nothing may be
    /// committed any more.
    fn has_failed(&self) -> bool {
        self.manager.has_failed() || self.fatal.is_some()
    }

    fn on_revoke(&mut self, consumer: &BaseConsumer<StreamContext>) -> Result<()> {
        self.topic_handles.clear();
        self.paused.clear();
        let mut t = KafkaTransport {
            io: &mut self.io,
            consumer,
        };
        let r = if consumer.assignment_lost() {
            // The session expired: the partitions may be another member's
            // already, so nothing is committed for them.
            self.manager.revoke_lost(&mut t);
            Ok(())
        } else {
            self.manager.revoke(&mut t)
        };
        consumer
            .unassign()
            .map_err(|e| Error::kafka("unassigning partitions", e))?;
        Ok(r?)
    }

    fn on_assign(&mut self, consumer: &BaseConsumer<StreamContext>, tpl: &mut TopicPartitionList) -> Result<()> {
        self.topic_handles.clear();
        let plan = self.app.plan.clone();
        let partitions: Vec<(u32, i32)> = tpl
            .elements()
            .iter()
            .filter_map(|e| plan.by_name.get(e.topic()).map(|t| (*t, e.partition())))
            .collect();
        let mut t = KafkaTransport {
            io: &mut self.io,
            consumer,
        };
        let assignment = self.manager.assign(&mut t, &partitions)?;
        // Hand the consumer the offsets the tasks' state reflects.
        for (topic, partition, offset) in &assignment.positions {
            let name = &plan.topic_names[*topic as usize];
            tpl.set_partition_offset(name, *partition, Offset::Offset(*offset))
                .map_err(|e| Error::kafka(format!("positioning {name}/{partition}"), e))?;
        }
        consumer
            .assign(tpl)
            .map_err(|e| Error::kafka("assigning partitions", e))?;
        self.pause_restoring(consumer, &assignment.paused)
    }

    /// Pauses `partitions` ((topic index, partition) of restoring tasks)
    /// until their restore ends; they are the only paused ones.
    fn pause_restoring(&mut self, consumer: &BaseConsumer<StreamContext>, partitions: &[(u32, i32)]) -> Result<()> {
        self.paused = partitions.iter().map(|p| (*p, None)).collect();
        if partitions.is_empty() {
            return Ok(());
        }
        let mut paused = TopicPartitionList::new();
        for (topic, partition) in partitions {
            paused.add_partition(&self.app.plan.topic_names[*topic as usize], *partition);
        }
        consumer
            .pause(&paused)
            .map_err(|e| Error::kafka("pausing the partitions of restoring tasks", e))
    }

    /// After a failed call of the task manager: under exactly-once the
    /// tasks go back to their last committed transaction
    /// ([`TaskManager::recover`]), the consumer to the offsets they name,
    /// and the thread goes on; otherwise (or when stopping, fenced, or
    /// failing again and again) `e` stands.
    fn recover_or_fail(&mut self, consumer: &BaseConsumer<StreamContext>, e: Error) -> Result<()> {
        if let Some(why) = self.manager.fenced() {
            // Whatever failed after (records purged by the failed abort),
            // being fenced is why this thread stops.
            return Err(Error::Runtime(weir_runtime::RuntimeError::Fenced(why.to_string())));
        }
        if !self.manager.can_recover() || self.app.stop.load(Ordering::Relaxed) || self.recoveries >= MAX_RECOVERIES {
            return Err(e);
        }
        self.recoveries += 1;
        tracing::warn!(error = %e, "exactly-once: transaction aborted; the tasks go back to their last commit");
        let mut t = KafkaTransport {
            io: &mut self.io,
            consumer,
        };
        let assignment = self.manager.recover(&mut t)?;
        self.reposition(consumer, &assignment)
    }

    /// Moves the consumer's assigned partitions to where `a` says (or to
    /// the group's offsets, or the beginning), and pauses those of
    /// restoring tasks.
    fn reposition(&mut self, consumer: &BaseConsumer<StreamContext>, a: &Assignment) -> Result<()> {
        let plan = self.app.plan.clone();
        let assigned = consumer
            .assignment()
            .map_err(|e| Error::kafka("reading the assignment", e))?;
        consumer
            .resume(&assigned)
            .map_err(|e| Error::kafka("resuming partitions", e))?;
        let committed = consumer
            .committed_offsets(assigned.clone(), Duration::from_secs(10))
            .map_err(|e| Error::kafka("reading the group's committed offsets", e))?;
        for e in committed.elements() {
            let topic = plan.by_name.get(e.topic()).copied();
            let named = a
                .positions
                .iter()
                .find(|(t, p, _)| Some(*t) == topic && *p == e.partition())
                .map(|(_, _, o)| Offset::Offset(*o));
            let offset = match (named, e.offset()) {
                (Some(o), _) => o,
                (None, Offset::Offset(o)) => Offset::Offset(o),
                (None, _) => Offset::Beginning,
            };
            consumer
                .seek(e.topic(), e.partition(), offset, Duration::from_secs(10))
                .map_err(|err| Error::kafka(format!("positioning {}/{}", e.topic(), e.partition()), err))?;
        }
        self.pause_restoring(consumer, &a.paused)
    }

    /// One restore step; resumes the partitions of the tasks it finished.
    fn restore_step(&mut self, consumer: &BaseConsumer<StreamContext>) -> Result<()> {
        let mut t = KafkaTransport {
            io: &mut self.io,
            consumer,
        };
        let resumed = self.manager.restore_step(&mut t, RESTORE_STEP)?;
        if resumed.is_empty() {
            return Ok(());
        }
        let plan = &self.app.plan;
        let mut tpl = TopicPartitionList::new();
        for r in &resumed {
            let name = &plan.topic_names[r.topic as usize];
            // Records handed over while paused were not processed: the
            // partition goes on from the task's position, or from the
            // first of them.
            let dropped = self.paused.remove(&(r.topic, r.partition)).flatten();
            if let Some(offset) = r.offset.or(dropped) {
                consumer
                    .seek(name, r.partition, Offset::Offset(offset), Duration::from_secs(10))
                    .map_err(|e| Error::kafka(format!("positioning {name}/{}", r.partition), e))?;
            }
            tpl.add_partition(name, r.partition);
        }
        consumer
            .resume(&tpl)
            .map_err(|e| Error::kafka("resuming restored partitions", e))
    }

    /// A consumed record through its task.
    fn process(&mut self, consumer: &BaseConsumer<StreamContext>, msg: &BorrowedMessage<'_>) -> Result<()> {
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
        if !self.paused.is_empty() {
            if let Some(first) = self.paused.get_mut(&(topic, msg.partition())) {
                first.get_or_insert(msg.offset());
                return Ok(());
            }
        }
        // One pass over the headers: an older weir's origin header (read on
        // internal topics only) and the record's others (no allocation for a
        // record without any); a null header value reads as empty.
        let internal = plan.internal[topic as usize];
        let mut origin = None;
        let mut headers: Vec<(&str, &[u8])> = Vec::new();
        if let Some(hs) = msg.headers() {
            for h in hs.iter() {
                if h.key == ORIGIN_HEADER {
                    if internal {
                        origin = h.value.and_then(decode_origin);
                    }
                } else {
                    headers.push((h.key, h.value.unwrap_or_default()));
                }
            }
        }
        // A repartition record's origin and value are in its envelope.
        let (origin, value) = if internal {
            read_repartition_value(msg.payload(), origin)
        } else {
            (None, msg.payload())
        };
        let mut t = KafkaTransport {
            io: &mut self.io,
            consumer,
        };
        self.manager.process(
            &mut t,
            Incoming {
                topic,
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp: msg.timestamp().to_millis().unwrap_or_else(now_ms),
                key: msg.key(),
                value,
                origin,
                headers: &headers,
            },
        )?;
        Ok(())
    }
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
        // Restoring tasks advance a step between batches, outside any
        // rebalance callback; the running tasks go on meanwhile.
        let restoring = with_state(|s| -> Result<bool> {
            if !s.manager.is_restoring() {
                return Ok(false);
            }
            if let Err(e) = s.restore_step(consumer) {
                s.recover_or_fail(consumer, e)?;
            }
            Ok(true)
        })?;
        // Never hold the thread state across poll(): rebalance callbacks run
        // inside it and need the state.
        let timeout = if restoring {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        };
        let first = consumer.poll(timeout);
        let mut n = 0;
        let mut next = first;
        let mut full = false;
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
            let failed = with_state(|s| match s.process(consumer, &msg) {
                Ok(()) => Ok(false),
                // The rest of the batch is read again from where the
                // recovered tasks stand.
                Err(e) => s.recover_or_fail(consumer, e).map(|()| true),
            })?;
            if failed {
                break;
            }
            n += 1;
            if n >= BATCH {
                full = true;
                break;
            }
            next = consumer.poll(Duration::ZERO);
        }
        let batch = match n {
            // A poll of a restoring loop does not wait: finding nothing
            // there is not being idle.
            0 if !restoring => Batch::Empty,
            _ if full => Batch::Full,
            _ => Batch::Drained,
        };
        if n > 0 {
            // Once per batch: a clock read per record was a measurable
            // share of the stream thread's time.
            last_contact = Instant::now();
        }
        with_state(|s| -> Result<()> {
            if let Some(e) = s.fatal.take() {
                return Err(e);
            }
            match s.punctuate_and_commit(consumer, batch) {
                Ok(()) => Ok(()),
                Err(e) => s.recover_or_fail(consumer, e),
            }
        })?;
    }
    Ok(())
}

impl ThreadState {
    /// Punctuation, and a commit when one is due
    /// ([`TaskManager::commit_due`]).
    fn punctuate_and_commit(&mut self, consumer: &BaseConsumer<StreamContext>, batch: Batch) -> Result<()> {
        let mut t = KafkaTransport {
            io: &mut self.io,
            consumer,
        };
        self.manager.punctuate(&mut t, now_ms())?;
        if let Some(reason) = self.manager.commit_due(&t, self.app.commit_interval, batch) {
            tracing::trace!(reason = reason.as_str(), "commit due");
            // Offsets are committed asynchronously here: state never
            // depends on them, and a revoke or a shutdown commits
            // synchronously.
            self.manager.commit(&mut t, false)?;
            self.recoveries = 0;
        }
        Ok(())
    }
}

/// Asks the cluster for the metadata of one source topic: whether it
/// answered within `timeout`.
fn probe(app: &AppShared, consumer: &BaseConsumer<StreamContext>, timeout: Duration) -> bool {
    let topic = app.plan.source_topics().into_iter().next();
    consumer.fetch_metadata(topic.as_deref(), timeout).is_ok()
}
