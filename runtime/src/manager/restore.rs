//! Restoring tasks: a task whose local state is behind its newest
//! checkpoint reads its changelogs up to exactly the positions that
//! checkpoint names, a bounded number of records per
//! [`TaskManager::restore_step`], between the poll loop's batches, so the
//! member's running tasks go on meanwhile and a rebalance callback never
//! waits for a restore.
//!
//! Each step writes its records with single-key sled inserts together
//! with a checkpoint that moves only that store's changelog position (no
//! atomic batch: sled keeps a batch's copied nodes until it ends, which
//! peaked at 3.3 GiB RSS for a 1M-key restore in 20,000-record batches).
//! sled persists operations in order, so a crash leaves at worst records
//! beyond the checkpoint, never a checkpoint ahead of its records; the
//! next restore starts at the checkpoint's position and rewrites those
//! records in changelog order.

use std::time::{Duration, Instant};

use weir_topology::store::ChangelogRecord;

use super::TaskManager;
use crate::metrics::TaskEvent;
use crate::task::{Task, TaskCheckpoint, TaskId};
use crate::transport::{RangeReader, Transport};
use crate::RuntimeError;

/// How long a restore may see no progress before it gives up.
const STALL: Duration = Duration::from_secs(30);
/// How often a long restore logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A partition whose task finished restoring: the poll loop resumes it at
/// `offset` (where the task's state says; `None`: where the group's
/// offsets or the reset policy say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    pub topic: u32,
    pub partition: i32,
    pub offset: Option<i64>,
}

/// A task on its way to `target`.
pub(super) struct Restoring {
    task: Task,
    target: TaskCheckpoint,
    /// Changelog ranges found at assignment past the target's positions
    /// (commits that never finished): recorded in the task's checkpoint
    /// once restored.
    skips_after: Vec<(String, i64, i64)>,
    /// (store, changelog topic, target position), in restore order.
    stores: Vec<(String, String, i64)>,
    /// The store being restored (an index into `stores`).
    current: usize,
    /// Records applied per store.
    applied: Vec<u64>,
    started: Instant,
    last_progress: Instant,
    last_log: Instant,
}

impl Restoring {
    pub(super) fn new(
        task: Task,
        target: TaskCheckpoint,
        skips_after: Vec<(String, i64, i64)>,
        changelogs: &[(String, String)],
    ) -> Restoring {
        let stores: Vec<(String, String, i64)> = changelogs
            .iter()
            .map(|(store, topic)| {
                let from = task.changelog_position(store).unwrap_or(0);
                let to = target
                    .changelog
                    .iter()
                    .find(|(s, _)| s == store)
                    .map(|(_, p)| *p)
                    .unwrap_or(from);
                (store.clone(), topic.clone(), to)
            })
            .collect();
        let now = Instant::now();
        Restoring {
            applied: vec![0; stores.len()],
            task,
            target,
            skips_after,
            stores,
            current: 0,
            started: now,
            last_progress: now,
            last_log: now,
        }
    }

    pub(super) fn into_task(self) -> Task {
        self.task
    }

    /// The next offset of input `topic` in the target checkpoint.
    pub(super) fn target_input(&self, topic: &str) -> Option<i64> {
        self.target.inputs.iter().find(|(t, _)| t == topic).map(|(_, o)| *o)
    }

    /// Per store: changelog records still to read.
    pub(super) fn remaining(&self) -> Vec<(String, i64)> {
        self.stores
            .iter()
            .map(|(store, _, to)| {
                let at = self.task.changelog_position(store).unwrap_or(0);
                (store.clone(), (to - at).max(0))
            })
            .collect()
    }
}

/// What one [`Restoring::step`] did.
struct Step {
    /// The store it read and the records it still has to read.
    store: Option<(String, i64)>,
    /// Every store reached its target.
    finished: bool,
}

impl Restoring {
    /// Read up to `budget` records of the store being restored and apply
    /// them.
    fn step(&mut self, reader: &mut dyn RangeReader, budget: usize) -> Result<Step, RuntimeError> {
        let id = self.task.id();
        let Some((store, topic, to)) = self.stores.get(self.current).cloned() else {
            return Ok(Step {
                store: None,
                finished: true,
            });
        };
        let from = self.task.changelog_position(&store).unwrap_or(0);
        let mut done = from >= to;
        let mut remaining = 0;
        if !done {
            let skips: Vec<(i64, i64)> = self
                .target
                .changelog_skips
                .iter()
                .filter(|(s, _, _)| *s == store)
                .map(|(_, a, b)| (*a, *b))
                .collect();
            let mut batch: Vec<ChangelogRecord> = Vec::new();
            let progress = reader.read(&topic, id.partition, from, to, budget, &mut |(offset, key, value)| {
                // Ranges written by commits that never finished: not state.
                if let Some(key) = key {
                    if !skips.iter().any(|&(a, b)| (a..b).contains(&offset)) {
                        batch.push(ChangelogRecord {
                            key: key.to_vec(),
                            value: value.map(<[u8]>::to_vec),
                        });
                    }
                }
                Ok(())
            })?;
            done = progress.done || progress.next >= to;
            let position = if done { to } else { progress.next };
            if position > from {
                self.last_progress = Instant::now();
            } else if self.last_progress.elapsed() > STALL {
                return Err(RuntimeError::Timeout {
                    what: format!("{topic}/{} to be readable up to offset {to} (at {from})", id.partition),
                    after: STALL,
                });
            }
            // Each step lands with a checkpoint that moves only this
            // store's position: a crash mid-restore resumes from there.
            self.task.set_changelog_position(&store, position);
            let cp = self.task.encoded_checkpoint();
            self.task
                .state()
                .restore(&store, &batch, &cp)
                .map_err(|e| RuntimeError::task(id, format!("restoring {store}: {e}")))?;
            self.applied[self.current] += batch.len() as u64;
            remaining = (to - position).max(0);
            if let Some(m) = self.task.metrics() {
                if let Some(i) = self.task.stores().iter().position(|(s, _)| *s == store) {
                    m.stores[i].restore_records.inc_by(batch.len() as u64);
                    m.stores[i].restore_remaining.set(remaining);
                }
            }
            if self.last_log.elapsed() >= PROGRESS_EVERY {
                self.last_log = Instant::now();
                let secs = self.started.elapsed().as_secs_f64();
                let total: u64 = self.applied.iter().sum();
                tracing::info!(task = %id, store = %store, at = position, of = to,
                    records_per_s = format!("{:.0}", total as f64 / secs.max(1e-9)), "restoring");
            }
        }
        if done {
            self.current += 1;
        }
        Ok(Step {
            store: Some((store, remaining)),
            finished: self.current >= self.stores.len(),
        })
    }

    /// Every store reached its target: adopt the target checkpoint (and the
    /// skip ranges found at assignment) and commit it. Returns the task
    /// and the records applied per store.
    fn complete(self) -> Result<(Task, Vec<u64>), RuntimeError> {
        let Restoring {
            mut task,
            target,
            skips_after,
            applied,
            started,
            ..
        } = self;
        let id = task.id();
        task.adopt(&target);
        for (store, from, to) in skips_after {
            task.skip_changelog(&store, from, to);
        }
        task.commit_state()
            .map_err(|e| RuntimeError::task(id, format!("committing the restored state: {e}")))?;
        let total: u64 = applied.iter().sum();
        let secs = started.elapsed().as_secs_f64();
        if total > 0 {
            tracing::info!(task = %id, records = total, seconds = format!("{secs:.2}"),
                records_per_s = format!("{:.0}", total as f64 / secs.max(1e-9)), "restore done");
        }
        Ok((task, applied))
    }
}

/// Bring `task` to the state `target` describes, in one go: apply each
/// logged store's changelog (`changelogs`: (store, topic) pairs) from the
/// task's own position up to the target's, then adopt the target
/// checkpoint. The same steps a restoring task takes in a
/// [`TaskManager`]. Returns the task and the records applied per store,
/// in the order of `changelogs`.
pub fn restore_task(
    reader: &mut dyn RangeReader,
    task: Task,
    changelogs: &[(String, String)],
    target: &TaskCheckpoint,
) -> Result<(Task, Vec<u64>), RuntimeError> {
    let mut r = Restoring::new(task, target.clone(), Vec::new(), changelogs);
    while !r.step(reader, 10_000)?.finished {}
    r.complete()
}

impl TaskManager {
    /// One step of restoring: read up to `budget` changelog records of the
    /// first restoring task and apply them. Returns the partitions of the
    /// tasks that finished (now running), to resume.
    pub fn restore_step(&mut self, t: &mut dyn Transport, budget: usize) -> Result<Vec<Resumed>, RuntimeError> {
        let Some(&id) = self.restoring.keys().next() else {
            return Ok(Vec::new());
        };
        self.guarded(t, |m, t| {
            let r = m.restoring.get_mut(&id).expect("restoring task");
            let step = r.step(t, budget.max(1))?;
            if let Some((store, remaining)) = &step.store {
                m.listener.restore_progress(id, store, *remaining);
            }
            if !step.finished {
                return Ok(Vec::new());
            }
            m.finish_restore(id)
        })
    }

    /// Task `id` has read every changelog up to its target: it runs now.
    fn finish_restore(&mut self, id: TaskId) -> Result<Vec<Resumed>, RuntimeError> {
        let restoring = self.restoring.remove(&id).expect("restoring task");
        self.cfg.metrics.restoring_tasks.dec();
        let (task, applied) = restoring.complete()?;
        self.cfg.metrics.task_events(TaskEvent::Restored, 1);
        self.listener.restore_done(id, applied.iter().sum());
        let resumed: Vec<Resumed> = self
            .cfg
            .plan
            .partitions_of(id)
            .into_iter()
            .map(|(topic, partition)| Resumed {
                topic,
                partition,
                offset: task.consumed().iter().find(|(t, _)| *t == topic).map(|(_, o)| *o),
            })
            .collect();
        self.start_running(task);
        if self.restoring.is_empty() {
            if let Some(began) = self.restore_started.take() {
                self.cfg.metrics.restore_duration.observe(began.elapsed().as_secs_f64());
            }
        }
        self.report_tasks();
        Ok(resumed)
    }
}
