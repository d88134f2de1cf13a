//! Rebalances: a revoke commits and suspends the running tasks; an
//! assignment resumes those it gives back, creates the new ones from the
//! newest of their local and remote checkpoints (restoring those whose
//! local state is behind), skips changelog records of commits that never
//! finished, closes the rest, and says at which input offsets each task
//! goes on.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::restore::Restoring;
use super::TaskManager;
use crate::metrics::TaskEvent;
use crate::task::{Task, TaskCheckpoint, TaskId};
use crate::transport::{read_all, Transport};
use crate::RuntimeError;

/// How long reading checkpoints may see no progress before it gives up.
const READ_PATIENCE: Duration = Duration::from_secs(30);

/// The prefix of the group-offset metadata that points at a task's latest
/// checkpoint record: `weir-checkpoint@{offset}` (offset in the
/// checkpoints topic). Each commit stores it with the task's input
/// offsets, so a new owner reads one record per task instead of the whole
/// topic.
const POINTER: &str = "weir-checkpoint@";

/// The offset-commit metadata pointing at the checkpoint record at `offset`.
pub fn checkpoint_pointer(offset: i64) -> String {
    format!("{POINTER}{offset}")
}

/// The checkpoint offset `metadata` points at, if it is such a pointer.
pub fn parse_checkpoint_pointer(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(POINTER)?.parse().ok().filter(|o: &i64| *o >= 0)
}

/// What an assignment decided: where each assigned partition's consumer
/// goes on, and which partitions wait (paused) for their task's restore.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// (topic index, partition, next offset) for partitions whose task's
    /// state names an offset; others start where the group's offsets (or
    /// the reset policy) say.
    pub positions: Vec<(u32, i32, i64)>,
    /// (topic index, partition) of restoring tasks: to pause until
    /// [`TaskManager::restore_step`] resumes them.
    pub paused: Vec<(u32, i32)>,
}

fn decode_checkpoint(topic: &str, offset: i64, value: &[u8]) -> Result<TaskCheckpoint, RuntimeError> {
    TaskCheckpoint::decode(value).map_err(|e| RuntimeError::Corrupt(format!("{topic} offset {offset}: {e}")))
}

impl TaskManager {
    /// The partitions were taken away: commit the running tasks and
    /// suspend them (kept as they are until the next assignment). After a
    /// failure nothing is committed: the tasks are closed as they are and
    /// their work is replayed by the next owner. Restoring tasks are
    /// closed (each restore step persisted its progress).
    pub fn revoke(&mut self, t: &mut dyn Transport) -> Result<(), RuntimeError> {
        let restoring: BTreeMap<TaskId, Task> = std::mem::take(&mut self.restoring)
            .into_iter()
            .map(|(id, r)| (id, r.into_task()))
            .collect();
        self.cfg.metrics.restoring_tasks.sub(restoring.len() as i64);
        self.close_tasks(restoring);
        let mut result = Ok(());
        if !self.running.is_empty() {
            result = if self.has_failed() {
                Ok(())
            } else {
                self.commit(t, true)
            };
            let n = self.running.len();
            self.cfg.metrics.active_tasks.sub(n as i64);
            self.rebalance_started.get_or_insert_with(Instant::now);
            if !self.has_failed() {
                self.suspended.append(&mut self.running);
                self.cfg.metrics.task_events(TaskEvent::Suspended, n as u64);
                tracing::info!(member = %self.cfg.name, tasks = n, "partitions revoked; tasks committed and suspended");
            } else {
                let tasks = std::mem::take(&mut self.running);
                self.close_tasks(tasks);
                tracing::info!(member = %self.cfg.name, tasks = n, "partitions revoked; tasks closed without a commit");
            }
        }
        if let Err(e) = &result {
            if self.can_recover() {
                // Exactly-once: the commit's transaction was aborted and
                // the tasks are closed; their next owner replays the work.
                // Nothing of it is left here to fail the member for.
                tracing::warn!(member = %self.cfg.name, error = %e, "the commit at the revoke was aborted; the next owner replays it");
                self.failed = None;
                result = Ok(());
            }
        }
        self.report_tasks();
        result
    }

    /// The latest checkpoint of each task in `ids` from the checkpoints
    /// topic: one record per task, found through the pointers committed
    /// with the group's offsets. A task whose partitions have no committed
    /// offset has never committed (a checkpoint is written before its
    /// offsets), so it has none; only offsets committed without pointers
    /// (by an older weir) make the whole topic be read.
    fn remote_checkpoints(
        &mut self,
        t: &mut dyn Transport,
        partitions: &[(u32, i32)],
        ids: &[TaskId],
    ) -> Result<HashMap<TaskId, TaskCheckpoint>, RuntimeError> {
        let plan = self.cfg.plan.clone();
        let named: Vec<(String, i32)> = partitions
            .iter()
            .map(|(topic, p)| (plan.topic_names[*topic as usize].clone(), *p))
            .collect();
        let committed = t.committed(&named)?;
        let mut pointers: BTreeMap<TaskId, i64> = BTreeMap::new();
        let mut unpointed = false;
        for e in &committed {
            let Some(id) = plan.by_name.get(&e.topic).and_then(|t| plan.task_of(*t, e.partition)) else {
                continue;
            };
            match parse_checkpoint_pointer(&e.metadata) {
                Some(p) => {
                    let slot = pointers.entry(id).or_insert(p);
                    *slot = (*slot).max(p);
                }
                None if e.offset.is_some() => unpointed = true,
                None => {}
            }
        }
        let topic = plan.checkpoints_topic.clone();
        let found = if unpointed {
            None
        } else {
            read_checkpoints_at(t, &topic, &pointers)?
        };
        // The pointers of this assignment's tasks, as the group has them.
        self.checkpoint_at = pointers;
        match found {
            Some(found) => {
                self.cfg.metrics.checkpoint_records_read.inc_by(found.len() as u64);
                Ok(found)
            }
            None => {
                tracing::info!(member = %self.cfg.name, "reading the whole checkpoints topic (offsets without checkpoint pointers)");
                let (low, high) = t.watermarks(&topic, 0)?;
                let mut latest: HashMap<TaskId, (i64, TaskCheckpoint)> = HashMap::new();
                let mut records = 0u64;
                read_all(t, &topic, 0, low, high, READ_PATIENCE, &mut |(offset, key, value)| {
                    records += 1;
                    let (Some(key), Some(value)) = (key, value) else {
                        return Ok(());
                    };
                    let Some(id) = ids.iter().find(|id| id.to_string().as_bytes() == key) else {
                        return Ok(());
                    };
                    latest.insert(*id, (offset, decode_checkpoint(&topic, offset, value)?));
                    Ok(())
                })?;
                self.cfg.metrics.checkpoint_records_read.inc_by(records);
                let mut out = HashMap::new();
                for (id, (offset, cp)) in latest {
                    self.checkpoint_at.insert(id, offset);
                    out.insert(id, cp);
                }
                Ok(out)
            }
        }
    }

    /// The high watermark of each changelog of task `id`.
    fn changelog_highs(&self, t: &mut dyn Transport, id: TaskId) -> Result<Vec<i64>, RuntimeError> {
        self.cfg.plan.changelogs[id.subtopology]
            .iter()
            .map(|(_, topic)| t.watermarks(topic, id.partition).map(|(_, high)| high))
            .collect()
    }

    fn new_task(&self, id: TaskId) -> Result<Task, RuntimeError> {
        Task::new(
            &self.cfg.topology,
            &self.cfg.plan.application_id,
            id,
            &self.cfg.db,
            self.cfg.task_config.clone(),
        )
        .map(|mut task| {
            // What a StreamPartitioner is told.
            task.ctx.set_partition_counts(&self.cfg.plan.topic_partitions);
            task
        })
        .map_err(|e| RuntimeError::task(id, format!("creating the task: {e}")))
    }

    /// This member now owns `partitions` ((topic index, partition) pairs):
    /// see the module docs. Returns where each partition goes on and which
    /// wait for a restore.
    pub fn assign(&mut self, t: &mut dyn Transport, partitions: &[(u32, i32)]) -> Result<Assignment, RuntimeError> {
        self.guarded(t, |m, t| m.assign_tasks(t, partitions))
    }

    fn assign_tasks(&mut self, t: &mut dyn Transport, partitions: &[(u32, i32)]) -> Result<Assignment, RuntimeError> {
        let plan = self.cfg.plan.clone();
        let mut ids: Vec<TaskId> = partitions.iter().filter_map(|(t, p)| plan.task_of(*t, *p)).collect();
        ids.sort();
        ids.dedup();
        self.cfg.metrics.rebalances.inc();
        // The offsets committed on the way out of the last assignment may
        // have failed (a member expired during an outage): the first commit
        // of this one sends every task's offsets again.
        self.offsets_outdated = true;
        let started = Instant::now();
        self.listener.tasks_changed(&[], &ids);
        let remote = self.remote_checkpoints(t, partitions, &ids)?;
        for &id in &ids {
            if self.running.contains_key(&id) || self.restoring.contains_key(&id) {
                continue;
            }
            if let Some(task) = self.suspended.remove(&id) {
                // Given back. Its state is what it committed at the revoke,
                // unless another owner worked on it since (this member was
                // out of the group meanwhile): a newer checkpoint, or
                // changelog records past its position. Then it starts over
                // like any new task.
                let highs = self.changelog_highs(t, id)?;
                let newer = remote.get(&id).is_some_and(|cp| cp.seq > task.seq())
                    || plan.changelogs[id.subtopology]
                        .iter()
                        .zip(&highs)
                        .any(|((store, _), high)| *high > task.changelog_position(store).unwrap_or(0));
                if !newer {
                    self.cfg.metrics.task_events(TaskEvent::Resumed, 1);
                    self.cfg.metrics.active_tasks.inc();
                    self.running.insert(id, task);
                    continue;
                }
                self.close_tasks(BTreeMap::from([(id, task)]));
            }
            self.create_task(t, id, remote.get(&id))?;
        }
        // Suspended tasks this assignment did not give back.
        let gone = std::mem::take(&mut self.suspended);
        self.close_tasks(gone);
        self.last_commit = Instant::now();
        if self.restoring.is_empty() {
            self.cfg
                .metrics
                .restore_duration
                .observe(started.elapsed().as_secs_f64());
        } else {
            self.restore_started = Some(started);
        }
        if let Some(began) = self.rebalance_started.take() {
            let pause = began.elapsed();
            self.cfg.metrics.rebalance_pause.observe(pause.as_secs_f64());
            tracing::info!(member = %self.cfg.name, pause_ms = pause.as_millis() as u64, restoring = self.restoring.len(), "rebalance done; processing resumes");
        }
        // Where each partition goes on.
        let mut out = Assignment::default();
        for &(topic, partition) in partitions {
            let Some(id) = plan.task_of(topic, partition) else {
                continue;
            };
            let consumed = match (self.running.get(&id), self.restoring.get(&id)) {
                (Some(task), _) => task.consumed().iter().find(|(t, _)| *t == topic).map(|(_, o)| *o),
                (None, Some(r)) => {
                    out.paused.push((topic, partition));
                    r.target_input(&plan.topic_names[topic as usize])
                }
                (None, None) => None,
            };
            if let Some(offset) = consumed {
                out.positions.push((topic, partition, offset));
            }
        }
        self.report_tasks();
        tracing::info!(member = %self.cfg.name, tasks = ?ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            restoring = self.restoring.len(), "partitions assigned");
        Ok(out)
    }

    /// Creates task `id` from its local state: running at once if that is
    /// as new as `remote`, else restoring towards it.
    fn create_task(
        &mut self,
        t: &mut dyn Transport,
        id: TaskId,
        remote: Option<&TaskCheckpoint>,
    ) -> Result<(), RuntimeError> {
        self.cfg.metrics.task_events(TaskEvent::Created, 1);
        let plan = self.cfg.plan.clone();
        let changelogs = &plan.changelogs[id.subtopology];
        let mut task = self.new_task(id)?;
        // Local state that is ahead of the changelog means the cluster
        // lost data (a fresh development broker): start over.
        let highs = self.changelog_highs(t, id)?;
        let stale = self.cfg.cluster_keeps_data
            && changelogs
                .iter()
                .zip(&highs)
                .any(|((store, _), high)| task.changelog_position(store).is_some_and(|p| p > *high));
        if stale {
            tracing::warn!(task = %id, "local state is ahead of its changelog; wiping it");
            task.state()
                .wipe()
                .map_err(|e| RuntimeError::task(id, format!("wiping stale local state: {e}")))?;
            drop(task);
            task = self.new_task(id)?;
        }
        if !self.cfg.cluster_keeps_data {
            // The input offsets and origins of the last run name records
            // of a cluster that is gone.
            task.forget_inputs();
        }
        let local_seq = task.seq();
        let target = match remote {
            Some(target) if target.seq > local_seq || stale => Some(target.clone()),
            _ => None,
        };
        // Records past the position the task will stand at were written by
        // a commit that never finished; this task's own records will follow
        // them, so restores must skip them from now on.
        let mut skips = Vec::new();
        let highs = if self.cfg.cluster_keeps_data { highs } else { Vec::new() };
        for ((store, _), high) in changelogs.iter().zip(&highs) {
            let at = match &target {
                Some(cp) => cp
                    .changelog
                    .iter()
                    .find(|(s, _)| s == store)
                    .map(|(_, p)| *p)
                    .or(task.changelog_position(store)),
                None => task.changelog_position(store),
            }
            .unwrap_or(0);
            if *high > at {
                tracing::info!(task = %id, store = %store, from = at, to = high,
                    "skipping changelog records of a commit that never finished");
                skips.push((store.clone(), at, *high));
            }
        }
        let meters = self.meters_for(&task);
        task.set_metrics(meters);
        match target {
            Some(target) => {
                tracing::info!(task = %id, from_seq = local_seq, to_seq = target.seq, "restoring state from changelog");
                let r = Restoring::new(task, target, skips, changelogs);
                for (store, remaining) in r.remaining() {
                    self.listener.restore_progress(id, &store, remaining);
                }
                self.restoring.insert(id, r);
                self.cfg.metrics.restoring_tasks.inc();
            }
            None => {
                for (store, from, to) in skips {
                    task.skip_changelog(&store, from, to);
                }
                self.start_running(task);
            }
        }
        Ok(())
    }

    /// Task `task` runs from now on: its stores are served.
    pub(super) fn start_running(&mut self, task: Task) {
        let id = task.id();
        let stores: Vec<String> = task.stores().iter().map(|(n, _)| n.clone()).collect();
        self.listener.hosted(id, &stores, &task.state().reader());
        self.cfg.metrics.active_tasks.inc();
        self.running.insert(id, task);
    }
}

/// The checkpoints at `pointers`, one record read each. `None` if a record
/// is not there or belongs to another task (a compacted topic may have
/// dropped it for a newer one): the caller then reads the whole topic.
fn read_checkpoints_at(
    t: &mut dyn Transport,
    topic: &str,
    pointers: &BTreeMap<TaskId, i64>,
) -> Result<Option<HashMap<TaskId, TaskCheckpoint>>, RuntimeError> {
    // Tasks commit at about the same time, so their pointers are usually
    // close: one read from the lowest to the highest beats one read per
    // task; far apart (a task idle for long), one each.
    const SPAN: i64 = 10_000;
    let (Some(low), Some(high)) = (pointers.values().min().copied(), pointers.values().max().copied()) else {
        return Ok(Some(HashMap::new()));
    };
    let ranges: Vec<(i64, i64)> = if high - low <= SPAN {
        vec![(low, high + 1)]
    } else {
        pointers.values().map(|o| (*o, o + 1)).collect()
    };
    let keys: Vec<(TaskId, String, i64)> = pointers.iter().map(|(id, o)| (*id, id.to_string(), *o)).collect();
    let mut out = HashMap::new();
    for (from, to) in ranges {
        read_all(t, topic, 0, from, to, READ_PATIENCE, &mut |(at, key, value)| {
            for (id, name, offset) in &keys {
                if at == *offset && key == Some(name.as_bytes()) {
                    if let Some(v) = value {
                        out.insert(*id, decode_checkpoint(topic, at, v)?);
                    }
                }
            }
            Ok(())
        })?;
    }
    Ok((out.len() == pointers.len()).then_some(out))
}
