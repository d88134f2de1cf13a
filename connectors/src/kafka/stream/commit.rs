//! The commit protocol of a stream thread (exact state after a crash).
//!
//! Every commit interval, for every task with changes:
//! 1. flush the task: cached aggregates go downstream, stores stage their
//!    changes, and the changelog records are produced (tagged with nothing
//!    but their partition: the checkpoint says how far to read);
//! 2. wait until everything produced is delivered (outputs, repartition
//!    records, changelog records), riding out an outage up to the delivery
//!    timeout: a delivery error stops the thread before anything is
//!    committed;
//! 3. produce the task's checkpoint (commit sequence, next input offsets,
//!    each changelog's end offset, the origins of applied repartition
//!    records, changelog ranges to skip) to `{application_id}-checkpoints`
//!    and wait for it (its offset becomes the task's checkpoint pointer);
//! 4. write the staged store changes and the same checkpoint to sled in one
//!    atomic batch;
//! 5. commit the consumer offsets with the checkpoint pointers as their
//!    metadata (for lag, for stateless tasks and for finding checkpoints;
//!    state never depends on the offsets themselves).
//!
//! A thread that failed at any step never commits again (`failed`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use weir_runtime::{TaskCheckpoint, TaskId};
use weir_topology::StoreRef;

use super::records::{now_ms, send};
use super::restore;
use super::thread::*;
use crate::kafka::flush_producer;
use crate::{Error, Result};

/// A commit that has waited this long for delivery reports the wait as a
/// problem (`/readyz` 503) while it goes on waiting.
const SLOW_DELIVERY: Duration = Duration::from_secs(2);

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

impl ThreadState {
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
    pub(super) fn commit(&mut self, consumer: &BaseConsumer<StreamContext>, offsets_mode: CommitMode) -> Result<()> {
        if self.has_failed() {
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
            self.commit_offsets(consumer, Vec::new(), offsets_mode);
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
        self.commit_offsets(consumer, checkpoints, offsets_mode);
        self.report_state(consumer);
        self.app
            .metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(thread = %self.name, ms = started.elapsed().as_millis() as u64, "commit");
        Ok(())
    }

    /// Commits the consumer offsets (with checkpoint pointers) that the
    /// checkpoints just `written` name, or, when an earlier offset commit
    /// failed or a new assignment began (`offsets_outdated`), those of every
    /// task. They are informational for state (which never depends on
    /// them), so a failure is logged and the offsets sent again next time.
    fn commit_offsets(
        &self,
        consumer: &BaseConsumer<StreamContext>,
        written: Vec<(TaskId, TaskCheckpoint)>,
        mode: CommitMode,
    ) {
        let checkpoints = if consumer.context().offsets_outdated.swap(false, Ordering::Relaxed) {
            self.tasks.iter().map(|(id, t)| (*id, t.task_checkpoint())).collect()
        } else {
            written
        };
        let mut tpl = TopicPartitionList::new();
        for (id, cp) in &checkpoints {
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
}
