//! The task manager: the tasks of one member of an application's group
//! (a Kafka stream thread, or a member of the in-memory cluster), their
//! lifecycle, the record path, the commit protocol and restore, over any
//! [`Transport`](crate::Transport).
//!
//! A task's life, as Kafka Streams' `Task.State`:
//!
//! ```text
//!   created ──▶ restoring ──▶ running ──▶ suspended ──▶ closed
//!      │                        ▲            │
//!      └────────────────────────┘            └──▶ running (resumed)
//! ```
//!
//! * **created** in [`assign`](TaskManager::assign) from its local state;
//!   if the newest checkpoint (local, or remote through the group's
//!   checkpoint pointers) is ahead of the local state, it is **restoring**:
//!   its input partitions are paused and [`restore_step`](TaskManager::restore_step),
//!   called by the poll loop between batches, applies its changelogs a
//!   bounded number of records at a time while the other tasks run;
//! * **running** tasks process records, punctuate and commit;
//! * a revoke commits the running tasks and **suspends** them (kept with
//!   their stores); the next assignment **resumes** those it gives back
//!   unless another owner worked on them meanwhile, and **closes** the rest.
//!   Restoring tasks are closed at a revoke: each restore step persisted
//!   its progress, so a later restore goes on from there.
//!
//! Files: `records.rs` (a record through its task, dead letters, outputs
//! numbered by origin), `commit.rs` (the commit protocol), `assign.rs`
//! (assign, revoke, resume, checkpoints), `restore.rs` (restoring tasks).
//! Anything that fails on the way to a commit marks the manager *failed*:
//! it never commits again (see [`TaskManager::has_failed`]).

mod assign;
mod commit;
mod records;
mod recover;
mod restore;

pub use assign::{checkpoint_pointer, parse_checkpoint_pointer, Assignment};
pub use commit::{Batch, CommitReason, CAUGHT_UP_AFTER_RECORDS};
pub use records::{
    decode_origin, encode_origin, read_repartition_value, unwrap_repartition_value, wrap_repartition_value, Incoming,
    RepartitionValue, ENVELOPE_MAGIC, ORIGIN_HEADER,
};
pub use restore::{restore_task, Resumed};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use weir_state::{StateDb, StoreReader};
use weir_topology::Topology;

use crate::metrics::{TaskEvent, TaskMetrics, TopologyMetrics};
use crate::plan::Plan;
use crate::task::{Task, TaskConfig, TaskId};
use crate::transport::Transport;
use crate::RuntimeError;

/// What a task manager runs, and where.
#[derive(Clone)]
pub struct ManagerConfig {
    pub topology: Topology,
    pub plan: Arc<Plan>,
    pub db: Arc<StateDb>,
    pub task_config: TaskConfig,
    pub metrics: TopologyMetrics,
    /// The largest record the transport takes: dead letters are cut to it.
    pub max_record_bytes: usize,
    /// The member's name, for logs (`{application}-thread-{i}`).
    pub name: String,
    /// At-least-once (outputs may repeat after a crash) or exactly-once
    /// (every commit one transaction of the transport's).
    pub guarantee: Guarantee,
    /// Whether the cluster keeps what was written to it between runs (a
    /// Kafka cluster does). The test driver's in-memory cluster starts
    /// empty every time while its state directory may be reused: then the
    /// local state is all there is, and it is not compared with the
    /// (empty) changelogs, which would wipe it as stale.
    pub cluster_keeps_data: bool,
}

/// What a commit promises about outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// State is exact after a crash; outputs written since the last commit
    /// are written again.
    #[default]
    AtLeastOnce,
    /// Everything a commit writes (outputs, repartition, changelog and
    /// checkpoint records) and its group offsets are one transaction: a
    /// `read_committed` reader sees each output once. Local state is
    /// written after the transaction commits, so it is never ahead of it.
    ExactlyOnce,
}

/// Hears about the tasks of a manager (the Kafka stream thread reports
/// them on `/readyz` and serves their stores to queries). Every method
/// does nothing by default.
pub trait TaskListener {
    /// The running and restoring tasks changed.
    fn tasks_changed(&mut self, _running: &[TaskId], _restoring: &[TaskId]) {}
    /// Task `id` runs here now: its stores' committed data can be served.
    fn hosted(&mut self, _id: TaskId, _stores: &[String], _reader: &StoreReader) {}
    /// Task `id` was closed here.
    fn unhosted(&mut self, _id: TaskId, _stores: &[String]) {}
    /// `store` of restoring task `id` has `remaining` changelog records to
    /// read.
    fn restore_progress(&mut self, _id: TaskId, _store: &str, _remaining: i64) {}
    /// Task `id` finished restoring after applying `records` records.
    fn restore_done(&mut self, _id: TaskId, _records: u64) {}
}

/// A listener that ignores everything.
pub struct NoListener;
impl TaskListener for NoListener {}

/// Where a task stands in its life (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Restoring,
    Running,
    Suspended,
}

/// The tasks of one group member; see the module docs.
pub struct TaskManager {
    cfg: ManagerConfig,
    listener: Box<dyn TaskListener>,
    running: BTreeMap<TaskId, Task>,
    restoring: BTreeMap<TaskId, restore::Restoring>,
    suspended: BTreeMap<TaskId, Task>,
    /// Per task, the offset of its latest checkpoint record in the
    /// checkpoints topic (written, or read at assignment): committed as its
    /// offsets' metadata so that a new owner reads just that record.
    checkpoint_at: BTreeMap<TaskId, i64>,
    /// Why the manager failed, once anything failed on the way to a
    /// commit: from then on nothing is committed, not even by a revoke,
    /// since a commit could move a checkpoint past records whose outputs
    /// were never delivered. Whoever owns the tasks next replays the
    /// uncommitted work.
    failed: Option<String>,
    /// Set at assignment and when an offset commit failed: the next commit
    /// sends every task's offsets, not only those of tasks with changes.
    offsets_outdated: bool,
    /// Numbering of the outputs of the current origin, per topic (a
    /// record's outputs are contiguous in the collector).
    origin_counters: Vec<(u32, u32)>,
    current_origin: Option<(u32, i64)>,
    /// The value envelope of the repartition record being sent (reused).
    envelope: Vec<u8>,
    /// Per task, the (hits, misses) of each store's cache as last reported.
    cache_seen: BTreeMap<TaskId, Vec<(u64, u64)>>,
    /// Records since start (latencies are sampled on one in 64).
    seen: u64,
    /// Records processed since the last commit.
    uncommitted: u64,
    last_commit: Instant,
    /// When the current rebalance took this member's tasks away.
    rebalance_started: Option<Instant>,
    /// When the current restores began (for `weir_restore_duration_seconds`).
    restore_started: Option<Instant>,
    /// Exactly-once: whether a transaction is open (begun by the first
    /// send after a commit).
    in_txn: bool,
    /// The failure cannot be undone by [`recover`](Self::recover): the
    /// member was fenced, or the abort of its transaction failed too.
    unrecoverable: bool,
    /// Why the member was fenced, once it was (see [`fenced`](Self::fenced)).
    fenced: Option<String>,
}

impl TaskManager {
    pub fn new(cfg: ManagerConfig, listener: Box<dyn TaskListener>) -> TaskManager {
        TaskManager {
            cfg,
            listener,
            running: BTreeMap::new(),
            restoring: BTreeMap::new(),
            suspended: BTreeMap::new(),
            checkpoint_at: BTreeMap::new(),
            failed: None,
            offsets_outdated: false,
            origin_counters: Vec::new(),
            current_origin: None,
            envelope: Vec::new(),
            cache_seen: BTreeMap::new(),
            seen: 0,
            uncommitted: 0,
            last_commit: Instant::now(),
            rebalance_started: None,
            restore_started: None,
            in_txn: false,
            unrecoverable: false,
            fenced: None,
        }
    }

    /// Exactly-once: begin a transaction unless one is open (before any
    /// send).
    #[inline]
    pub(super) fn open_txn(&mut self, t: &mut dyn Transport) -> Result<(), RuntimeError> {
        if self.cfg.guarantee == Guarantee::ExactlyOnce && !self.in_txn {
            t.begin_transaction()?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// After a failure: abort the open transaction, so that nothing it
    /// holds becomes visible (best effort: a transport that is gone aborts
    /// it when its successor starts).
    pub(super) fn abort_txn(&mut self, t: &mut dyn Transport) {
        if self.in_txn {
            self.in_txn = false;
            match t.abort_transaction() {
                Ok(()) => self.cfg.metrics.transactions_aborted.inc(),
                Err(e) => {
                    self.unrecoverable = true;
                    if let RuntimeError::Fenced(why) = &e {
                        self.fenced.get_or_insert_with(|| why.clone());
                    }
                    tracing::warn!(member = %self.cfg.name, error = %e, "aborting the transaction failed");
                }
            }
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.cfg.plan
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.cfg
    }

    /// Whether anything failed on the way to a commit: then nothing is
    /// committed any more, and the owner should stop.
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Why this member was fenced (exactly-once), if it was: then that is
    /// the reason it stops, whatever failed after (records purged by the
    /// failed abort, a lost assignment).
    pub fn fenced(&self) -> Option<&str> {
        self.fenced.as_deref()
    }

    /// Mark the manager failed (its owner's poll or send failed).
    pub fn fail(&mut self, why: impl Into<String>) {
        self.failed.get_or_insert_with(|| why.into());
    }

    /// The running tasks.
    pub fn running(&self) -> &BTreeMap<TaskId, Task> {
        &self.running
    }

    /// Where task `id` stands, if this member has it.
    pub fn lifecycle(&self, id: TaskId) -> Option<Lifecycle> {
        if self.running.contains_key(&id) {
            Some(Lifecycle::Running)
        } else if self.restoring.contains_key(&id) {
            Some(Lifecycle::Restoring)
        } else if self.suspended.contains_key(&id) {
            Some(Lifecycle::Suspended)
        } else {
            None
        }
    }

    /// Whether any task is restoring (the poll loop then calls
    /// [`restore_step`](Self::restore_step)).
    pub fn is_restoring(&self) -> bool {
        !self.restoring.is_empty()
    }

    /// Whether a commit is due for a reason of the tasks' own (a store's
    /// cache is over its limit, or a processor asked for one).
    pub fn wants_commit(&mut self) -> bool {
        self.running.values_mut().any(|t| t.wants_flush())
    }

    /// Set every running task's wall clock (epoch ms) before processing.
    pub fn set_wall_clock(&mut self, now: i64) {
        for t in self.running.values_mut() {
            t.ctx.set_wall_clock_ms(now);
        }
    }

    /// Records processed since the last commit.
    pub fn uncommitted(&self) -> u64 {
        self.uncommitted
    }

    /// When the last commit (or assignment) was.
    pub fn last_commit(&self) -> Instant {
        self.last_commit
    }

    /// Close every task as it is (their committed state stays): on the way
    /// out, after the last commit.
    pub fn close_all(&mut self) {
        let mut tasks = std::mem::take(&mut self.running);
        tasks.append(&mut self.suspended);
        for (id, r) in std::mem::take(&mut self.restoring) {
            self.cfg.metrics.restoring_tasks.dec();
            tasks.insert(id, r.into_task());
        }
        self.close_tasks(tasks);
        self.report_tasks();
    }

    /// Closes `tasks` (their work is committed, or is to be replayed).
    fn close_tasks(&mut self, tasks: BTreeMap<TaskId, Task>) {
        let n = tasks.len();
        for (id, mut t) in tasks {
            t.close();
            let stores: Vec<String> = t.stores().iter().map(|(n, _)| n.clone()).collect();
            self.listener.unhosted(id, &stores);
            self.cache_seen.remove(&id);
        }
        if n > 0 {
            self.cfg.metrics.task_events(TaskEvent::Closed, n as u64);
        }
    }

    /// Tell the listener which tasks run and restore.
    fn report_tasks(&mut self) {
        let running: Vec<TaskId> = self.running.keys().copied().collect();
        let restoring: Vec<TaskId> = self.restoring.keys().copied().collect();
        self.listener.tasks_changed(&running, &restoring);
    }

    /// Metric handles for a new task.
    fn meters_for(&self, task: &Task) -> TaskMetrics {
        let plan = &self.cfg.plan;
        let sub = &self.cfg.topology.subtopologies()[task.id().subtopology];
        let names = |topics: &[u32]| -> Vec<(u32, &str)> {
            topics
                .iter()
                .map(|t| (*t, plan.topic_names[*t as usize].as_str()))
                .collect()
        };
        let (sources, sinks) = (names(&sub.source_topics), names(&sub.sink_topics));
        let stores: Vec<&str> = task.stores().iter().map(|(n, _)| n.as_str()).collect();
        self.cfg
            .metrics
            .task(&task.id().to_string(), task.id().partition, &sources, &sinks, &stores)
    }

    /// Runs `f`; if it fails, the manager is failed and the open
    /// transaction (exactly-once) aborted.
    fn guarded<R>(
        &mut self,
        t: &mut dyn Transport,
        f: impl FnOnce(&mut Self, &mut dyn Transport) -> Result<R, RuntimeError>,
    ) -> Result<R, RuntimeError> {
        let r = f(self, t);
        if let Err(e) = &r {
            self.fail(e.to_string());
            if let RuntimeError::Fenced(why) = e {
                self.unrecoverable = true;
                self.fenced.get_or_insert_with(|| why.clone());
            }
            self.abort_txn(t);
        }
        r
    }

    /// The transport-facing half of a commit's precondition.
    fn refuse_if_failed(&self) -> Result<(), RuntimeError> {
        match &self.failed {
            Some(why) => Err(RuntimeError::CommitRefused(format!(
                "an earlier step failed ({why}); the uncommitted work is replayed by the next owner"
            ))),
            None => Ok(()),
        }
    }
}

/// Wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
