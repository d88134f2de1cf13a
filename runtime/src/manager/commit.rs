//! The commit protocol (exact state after a crash).
//!
//! For every running task with changes:
//! 1. flush the task: cached aggregates go downstream, stores stage their
//!    changes, and the changelog records are sent (tagged with nothing but
//!    their partition: the checkpoint says how far to read);
//! 2. wait until everything sent is delivered (outputs, repartition
//!    records, changelog records): a delivery error fails the manager
//!    before anything is committed;
//! 3. send the task's checkpoint (commit sequence, next input offsets,
//!    each changelog's end offset, the origins of applied repartition
//!    records, changelog ranges to skip) to `{application_id}-checkpoints`
//!    and wait for it (its offset becomes the task's checkpoint pointer);
//! 4. write the staged store changes and the same checkpoint to sled in one
//!    atomic batch;
//! 5. commit the group offsets with the checkpoint pointers as their
//!    metadata (for lag, for stateless tasks and for finding checkpoints;
//!    state never depends on the offsets themselves).
//!
//! Exactly-once ([`Guarantee::ExactlyOnce`]): steps 1–3 write into one
//! transaction of the transport's, step 4 is committing it together with
//! the group offsets (with their checkpoint pointers), step 5 writes sled.
//! Local state is so never ahead of a committed transaction: a crash
//! before the transaction commits leaves nothing visible (the next owner's
//! transport aborts it) and the local state as it was; a crash after it
//! leaves local state one commit behind, and the newer checkpoint (in the
//! committed transaction) makes the next owner restore.
//!
//! A manager that failed at any step never commits again.

use std::time::{Duration, Instant};

use super::{checkpoint_pointer, now_ms, Guarantee, TaskManager};
use crate::task::{TaskCheckpoint, TaskId};
use crate::transport::{GroupOffset, Outgoing, Track, Transport};
use crate::RuntimeError;

/// Records processed since the last commit after which catching up with
/// the log commits at once ([`CommitReason::CaughtUp`]). It bounds those
/// extra commits to one per this many records, so a trickle of input (which
/// catches up after every record) still commits only at the interval or
/// when idle.
pub const CAUGHT_UP_AFTER_RECORDS: u64 = 10_000;

/// What the poll loop's last batch found, for [`TaskManager::commit_due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// A poll waited for records (a timeout above zero) and found none.
    Empty,
    /// Records, until the consumer had nothing more at hand.
    Drained,
    /// Records, and the batch stopped at its limit with more at hand.
    Full,
}

/// Why the poll loop commits now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitReason {
    /// The commit interval has passed since the last commit.
    Interval,
    /// A task asked (a store's cache is over its limit, or a processor).
    Requested,
    /// A poll found nothing for its whole timeout: the end of a burst is
    /// delivered without waiting for the interval.
    Idle,
    /// Every source partition is read up to its high watermark after at
    /// least [`CAUGHT_UP_AFTER_RECORDS`] records: a backlog is done, and
    /// its last outputs go out now rather than after an empty poll.
    CaughtUp,
}

impl CommitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CommitReason::Interval => "interval",
            CommitReason::Requested => "requested",
            CommitReason::Idle => "idle",
            CommitReason::CaughtUp => "caught-up",
        }
    }
}

impl TaskManager {
    /// Whether to commit after a batch, and why (`None`: not now). No
    /// commit while nothing was processed since the last one, except at
    /// the interval or on a task's request (they may have work of their
    /// own, like punctuation output).
    pub fn commit_due(&mut self, t: &dyn Transport, interval: Duration, batch: Batch) -> Option<CommitReason> {
        if self.last_commit.elapsed() >= interval {
            return Some(CommitReason::Interval);
        }
        if self.wants_commit() {
            return Some(CommitReason::Requested);
        }
        if self.uncommitted == 0 {
            return None;
        }
        match batch {
            Batch::Empty => Some(CommitReason::Idle),
            Batch::Drained if self.uncommitted >= CAUGHT_UP_AFTER_RECORDS && self.caught_up(t) => {
                Some(CommitReason::CaughtUp)
            }
            _ => None,
        }
    }

    /// Whether every running task has read each of its source partitions
    /// up to the partition's high watermark as the consumer last saw it (no
    /// request to the cluster). A watermark not known yet, or a partition
    /// the task has no position in (nothing read, no checkpoint), counts as
    /// not caught up unless the partition is empty.
    pub fn caught_up(&self, t: &dyn Transport) -> bool {
        let plan = &self.cfg.plan;
        self.running.iter().all(|(id, task)| {
            let sources = plan.reader.iter().enumerate();
            sources
                .filter(|(_, reader)| **reader == Some(id.subtopology))
                .all(|(topic, _)| {
                    let next = task
                        .consumed()
                        .iter()
                        .find(|(read, _)| *read as usize == topic)
                        .map_or(0, |(_, next)| *next);
                    t.cached_high_watermark(&plan.topic_names[topic], id.partition)
                        .is_some_and(|high| next >= high)
                })
        })
    }

    /// The commit protocol; see the module docs. `wait_offsets` makes the
    /// offset commit (step 5) synchronous (revoke, shutdown).
    pub fn commit(&mut self, t: &mut dyn Transport, wait_offsets: bool) -> Result<(), RuntimeError> {
        self.refuse_if_failed()?;
        self.last_commit = Instant::now();
        self.uncommitted = 0;
        if self.running.is_empty() {
            return Ok(());
        }
        self.guarded(t, |m, t| m.commit_steps(t, wait_offsets))
    }

    fn commit_steps(&mut self, t: &mut dyn Transport, wait_offsets: bool) -> Result<(), RuntimeError> {
        let started = Instant::now();
        // 1. Flush every task (upstream sub-topologies first) and send what
        // comes out, changelog records included.
        let all: Vec<TaskId> = self.running.keys().copied().collect();
        // The tasks with something to commit; an idle task writes nothing
        // (no checkpoint record, no sled batch, no offsets).
        let mut ids: Vec<TaskId> = Vec::with_capacity(all.len());
        for &id in &all {
            let task = self.running.get_mut(&id).expect("task");
            task.flush();
            if task.has_changes() {
                ids.push(id);
            }
            if let Some(e) = task.ctx.take_fatal() {
                return Err(RuntimeError::task(id, e));
            }
            self.drain(t, id)?;
            let task = self.running.get_mut(&id).expect("task");
            let changes = std::mem::take(&mut task.ctx.changelog);
            let counters = std::mem::take(&mut task.ctx.counters);
            if !changes.is_empty() {
                self.open_txn(t)?;
            }
            let changelogs = &self.cfg.plan.changelogs[id.subtopology];
            let now = now_ms();
            for (store, rec) in &changes {
                let Some((_, topic)) = changelogs.iter().find(|(s, _)| s.as_str() == &**store) else {
                    continue; // not logged
                };
                t.send(Outgoing {
                    topic,
                    partition: id.partition,
                    key: Some(&rec.key),
                    value: rec.value.as_deref(),
                    timestamp: now,
                    headers: &[],
                    track: Track::Changelog,
                })?;
            }
            self.cfg
                .metrics
                .late_records_dropped
                .inc_by(counters.late_records_dropped);
            self.cfg
                .metrics
                .null_records_skipped
                .inc_by(counters.null_records_skipped);
        }
        self.cfg.metrics.commits.inc();
        let exactly_once = self.cfg.guarantee == Guarantee::ExactlyOnce;
        if ids.is_empty() {
            if exactly_once {
                // Outputs of punctuations go out with their transaction.
                if self.in_txn {
                    let offsets = self.offsets_to_commit(t, Vec::new());
                    t.commit_transaction(&offsets)?;
                    self.in_txn = false;
                }
            } else {
                // Outputs of punctuations may still be on their way: they
                // are delivered (or fail) with the next commit that has
                // changes.
                self.commit_offsets(t, Vec::new(), wait_offsets);
            }
            self.report_state(t);
            return Ok(());
        }
        // 2. Everything delivered, or nothing is committed.
        let delivered = t.flush()?;
        // 3. The checkpoints.
        let mut checkpoints: Vec<(TaskId, TaskCheckpoint)> = Vec::new();
        let now = now_ms();
        for &id in &ids {
            let task = self.running.get_mut(&id).expect("task");
            for (store, topic) in &self.cfg.plan.changelogs[id.subtopology] {
                if let Some(p) = delivered.changelog_ends.get(&(topic.clone(), id.partition)) {
                    task.set_changelog_position(store, *p);
                }
            }
            task.next_seq();
            let cp = task.task_checkpoint();
            let bytes = cp.encode();
            let key = id.to_string();
            t.send(Outgoing {
                topic: &self.cfg.plan.checkpoints_topic,
                partition: 0,
                key: Some(key.as_bytes()),
                value: Some(&bytes),
                timestamp: now,
                headers: &[],
                track: Track::Checkpoint(id),
            })?;
            checkpoints.push((id, cp));
        }
        self.cfg.metrics.checkpoints_written.inc_by(checkpoints.len() as u64);
        let delivered = t.flush()?;
        for (id, _) in &checkpoints {
            if let Some(offset) = delivered.checkpoints.get(id) {
                self.checkpoint_at.insert(*id, *offset);
            }
        }
        // Exactly-once: the transaction, with the group offsets, before any
        // local state.
        let checkpoints = if exactly_once {
            let offsets = self.offsets_to_commit(t, checkpoints);
            t.commit_transaction(&offsets)?;
            self.in_txn = false;
            Vec::new()
        } else {
            checkpoints
        };
        // 4. Local state, atomically with the same checkpoint.
        for &id in &ids {
            self.running
                .get_mut(&id)
                .expect("task")
                .commit_state()
                .map_err(|e| RuntimeError::task(id, format!("committing local state: {e}")))?;
        }
        // 5. Group offsets (informational for stateful tasks; committed in
        // the transaction under exactly-once).
        if !exactly_once {
            self.commit_offsets(t, checkpoints, wait_offsets);
        }
        self.report_state(t);
        self.cfg
            .metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(member = %self.cfg.name, ms = started.elapsed().as_millis() as u64, "commit");
        Ok(())
    }

    /// Commits the group offsets (with checkpoint pointers) that the
    /// checkpoints just `written` name, or, when an earlier offset commit
    /// failed or a new assignment began, those of every running task. They
    /// are informational for state (which never depends on them), so a
    /// failure is logged and the offsets sent again next time.
    fn commit_offsets(&mut self, t: &mut dyn Transport, written: Vec<(TaskId, TaskCheckpoint)>, wait: bool) {
        let offsets = self.offsets_to_commit(t, written);
        if !offsets.is_empty() {
            if let Err(e) = t.commit_offsets(&offsets, wait) {
                self.offsets_outdated = true;
                tracing::warn!(member = %self.cfg.name, error = %e, "committing group offsets failed (state is safe); sending them again at the next commit");
            }
        }
    }

    /// The group offsets (with checkpoint pointers) that the checkpoints
    /// just `written` name, or, when an earlier offset commit failed or a
    /// new assignment began, those of every running task.
    fn offsets_to_commit(&mut self, t: &mut dyn Transport, written: Vec<(TaskId, TaskCheckpoint)>) -> Vec<GroupOffset> {
        let outdated = std::mem::take(&mut self.offsets_outdated) | t.take_offset_commit_failure();
        let checkpoints = if outdated {
            self.running.iter().map(|(id, t)| (*id, t.task_checkpoint())).collect()
        } else {
            written
        };
        let mut offsets = Vec::new();
        for (id, cp) in &checkpoints {
            let metadata = self
                .checkpoint_at
                .get(id)
                .map(|o| checkpoint_pointer(*o))
                .unwrap_or_default();
            for (topic, offset) in &cp.inputs {
                offsets.push(GroupOffset {
                    topic: topic.clone(),
                    partition: id.partition,
                    offset: Some(*offset),
                    metadata: metadata.clone(),
                });
            }
        }
        offsets
    }

    /// Gauges and counters read at commit time: store sizes and cache
    /// hits, consumer lag (from the partitions' high watermarks).
    fn report_state(&mut self, t: &mut dyn Transport) {
        for (id, task) in &self.running {
            let Some(m) = task.metrics() else { continue };
            let seen_all = self.cache_seen.entry(*id).or_default();
            seen_all.resize(task.stores().len(), (0, 0));
            for (i, (name, store)) in task.stores().iter().enumerate() {
                let (len, stats) = store.with_state(|s| (s.approximate_len(), s.cache_stats()));
                if let (Some(h), Some(seen)) = (m.stores.get(i), seen_all.get_mut(i)) {
                    h.entries.set(len as i64);
                    h.cache_bytes.set(task.state().cache_bytes(name) as i64);
                    h.cache_hits.inc_by(stats.hits.saturating_sub(seen.0));
                    h.cache_misses.inc_by(stats.misses.saturating_sub(seen.1));
                    *seen = (stats.hits, stats.misses);
                }
            }
            for (topic, next) in task.consumed() {
                let name = &self.cfg.plan.topic_names[*topic as usize];
                if let Some(high) = t.cached_high_watermark(name, id.partition) {
                    m.set_lag(*topic, high - next);
                }
            }
        }
    }
}
