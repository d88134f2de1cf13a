//! Rebalances of a stream thread: a revoke commits and suspends the tasks;
//! an assignment resumes those it gives back, creates (and restores) the
//! new ones from the newest of their local and remote checkpoints, skips
//! changelog records of commits that never finished, closes the rest, and
//! hands the consumer the exact input offsets the tasks' state reflects.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use weir_runtime::metrics::{TaskEvent, TaskMetrics};
use weir_runtime::{Task, TaskCheckpoint, TaskId};

use super::restore;
use super::thread::*;
use crate::{Error, Result};

/// The high watermark of a partition, asked of the broker through the
/// stream thread's own consumer (no new connection, unlike a consumer of
/// its own per question).
fn watermark_high(consumer: &BaseConsumer<StreamContext>, topic: &str, partition: i32) -> Result<i64> {
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map(|(_, high)| high)
        .map_err(|e| Error::kafka(format!("watermarks of {topic}/{partition}"), e))
}

/// The high watermark of each changelog (`(store, topic)` pairs) of a
/// task's partition.
fn changelog_highs(
    consumer: &BaseConsumer<StreamContext>,
    changelogs: &[(String, String)],
    partition: i32,
) -> Result<Vec<i64>> {
    changelogs
        .iter()
        .map(|(_, topic)| watermark_high(consumer, topic, partition))
        .collect()
}

impl ThreadState {
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

    pub(super) fn on_revoke(&mut self, consumer: &BaseConsumer<StreamContext>) -> Result<()> {
        self.topic_handles.clear();
        if !self.tasks.is_empty() {
            // After a failure nothing may be committed (see `failed`): the
            // tasks are closed as they are and their work is replayed.
            let r = if self.has_failed() {
                Ok(())
            } else {
                self.commit(consumer, CommitMode::Sync)
            };
            let n = self.tasks.len();
            self.app.metrics.active_tasks.sub(n as i64);
            self.app.status.update(&self.name, |t| t.tasks.clear());
            self.rebalance_started.get_or_insert_with(Instant::now);
            // A failed commit marks the thread failed.
            if !self.has_failed() {
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
    pub(super) fn close_tasks(&mut self, tasks: BTreeMap<TaskId, Task>) {
        let n = tasks.len();
        for (id, mut t) in tasks {
            t.close();
            let stores: Vec<String> = t.stores().iter().map(|(n, _)| n.clone()).collect();
            self.app
                .status
                .unhost(&self.app.plan.application_id, id.partition, &stores);
            self.cache_seen.remove(&id);
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
        let found = if unpointed {
            None
        } else {
            let list: Vec<(String, i64)> = pointers.iter().map(|(id, o)| (id.to_string(), *o)).collect();
            restore::read_checkpoints_at(&self.app.settings, &plan.checkpoints_topic, &list)?
        };
        // The pointers of this assignment's tasks, as the group has them.
        self.checkpoint_at = pointers;
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

    pub(super) fn on_assign(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
        tpl: &mut TopicPartitionList,
    ) -> Result<()> {
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
                let changelogs = &plan.changelogs[id.subtopology];
                let highs = changelog_highs(consumer, changelogs, id.partition)?;
                let newer = remote.get(&id.to_string()).is_some_and(|cp| cp.seq > task.seq())
                    || changelogs
                        .iter()
                        .zip(&highs)
                        .any(|((store, _), high)| *high > task.changelog_position(store).unwrap_or(0));
                if !newer {
                    self.app.metrics.task_events(TaskEvent::Resumed, 1);
                    self.tasks.insert(*id, task);
                    self.app.metrics.active_tasks.inc();
                    continue;
                }
                self.close_tasks(BTreeMap::from([(*id, task)]));
            }
            self.app.metrics.task_events(TaskEvent::Created, 1);
            let new_task = || {
                Task::new(
                    &self.app.topology,
                    &plan.application_id,
                    *id,
                    &self.app.db,
                    self.app.task_config.clone(),
                )
                .map_err(|e| Error::Task {
                    task: id.to_string(),
                    reason: format!("creating the task: {e}"),
                })
            };
            let mut task = new_task()?;
            let local = task.task_checkpoint();
            let changelogs = &plan.changelogs[id.subtopology];
            // Local state that is ahead of the changelog means the cluster
            // lost data (a fresh development broker): start over.
            let highs = changelog_highs(consumer, changelogs, id.partition)?;
            let stale = changelogs
                .iter()
                .zip(&highs)
                .any(|((store, _), high)| task.changelog_position(store).is_some_and(|p| p > *high));
            if stale {
                tracing::warn!(task = %id, "local state is ahead of its changelog; wiping it");
                task.state().wipe().map_err(|e| Error::Task {
                    task: id.to_string(),
                    reason: format!("wiping stale local state: {e}"),
                })?;
                drop(task);
                task = new_task()?;
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
            self.app
                .status
                .host(&plan.application_id, id.partition, &task_stores, &task.state().reader());
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
