//! A task: one (sub-topology, partition) with its processors, its stores
//! and its processor context. The Kafka stream threads and the test driver
//! both run topologies through this type, so tests exercise the same code
//! that production runs.

use weir_state::{StateDb, TaskState};
use weir_topology::{ProcessorContext, TaskNodes, Topology};

pub use crate::checkpoint::TaskCheckpoint;
use crate::RuntimeError;

/// Identifies a task: `{subtopology}_{partition}`, as in Kafka Streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId {
    pub subtopology: usize,
    pub partition: i32,
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}

/// Per-task settings.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// Byte limit of each store's write cache; over it, the task asks for an
    /// early commit.
    pub cache_max_bytes: usize,
    /// If set, a task that received no record for this long (wall clock)
    /// advances its stream time with the wall clock, so that windows of a
    /// quiet partition still close and emit.
    pub idle_advance_after_ms: Option<i64>,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            cache_max_bytes: 10 * 1024 * 1024,
            idle_advance_after_ms: None,
        }
    }
}

pub struct Task {
    id: TaskId,
    application_id: String,
    topology: Topology,
    nodes: TaskNodes,
    state: TaskState,
    /// The context passed through the processors; its collector, dead
    /// letters and changelog buffers are drained by the caller.
    pub ctx: ProcessorContext,
    /// Next offset to consume per source topic index (a task reads a
    /// handful of topics: a small vector beats a map on the hot path).
    consumed: Vec<(u32, i64)>,
    config: TaskConfig,
    /// Wall clock and stream time when the last record arrived (for the
    /// idle-partition punctuator).
    last_record_wall_ms: i64,
    stream_time_at_last_record: i64,
    /// The commit sequence number the task's state reflects.
    seq: u64,
    /// Per store of the task: the changelog offset its data reflects (the
    /// next offset after the last changelog record applied or written).
    changelog_positions: Vec<(String, i64)>,
    /// Per (repartition topic, upstream partition): the origin of the last
    /// record applied, to skip replayed duplicates.
    origins: Vec<(u32, Origin)>,
    /// Changelog ranges restores skip: see [`TaskCheckpoint::changelog_skips`].
    changelog_skips: Vec<(String, i64, i64)>,
    /// Metric handles, when the task runs in a daemon that exports them.
    metrics: Option<crate::metrics::TaskMetrics>,
    /// Whether a record was consumed (or a replay skipped) since the last
    /// commit or adoption: a task with none, whose stores staged nothing,
    /// has nothing to commit.
    consumed_since_commit: bool,
}

/// Where a repartition record came from: the upstream input record's offset
/// and the record's index among that input's outputs to the topic. Ordered,
/// so "not after the last applied one" means "already applied".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    /// The upstream task's partition (records of different upstream
    /// partitions interleave; each is ordered on its own).
    pub upstream_partition: i32,
    pub offset: i64,
    pub index: u32,
}

impl Task {
    /// Create the task's processors and open its stores in `db`.
    pub fn new(
        topology: &Topology,
        application_id: &str,
        id: TaskId,
        db: &StateDb,
        config: TaskConfig,
    ) -> Result<Task, RuntimeError> {
        let mut state = db.task(&format!("{application_id}/{id}"), config.cache_max_bytes)?;
        let nodes = topology.instantiate(id.subtopology, id.partition, &mut state)?;
        let mut task = Task {
            id,
            application_id: application_id.to_string(),
            topology: topology.clone(),
            nodes,
            state,
            ctx: ProcessorContext::new(application_id, id.partition),
            consumed: Vec::new(),
            config,
            last_record_wall_ms: 0,
            stream_time_at_last_record: i64::MIN,
            seq: 0,
            changelog_positions: Vec::new(),
            origins: Vec::new(),
            changelog_skips: Vec::new(),
            metrics: None,
            consumed_since_commit: false,
        };
        if let Some(bytes) = task.state.checkpoint()? {
            let cp = TaskCheckpoint::decode(&bytes)
                .map_err(|e| RuntimeError::Corrupt(format!("task {id}: local checkpoint: {e}")))?;
            task.adopt(&cp);
        }
        Ok(task)
    }

    /// Take `cp` as what the task's state reflects (after a restore).
    pub fn adopt(&mut self, cp: &TaskCheckpoint) {
        self.consumed.clear();
        for (topic, offset) in &cp.inputs {
            if let Some(t) = self.topology.topic_index(topic, &self.application_id) {
                self.set_consumed(t, *offset);
            }
        }
        self.seq = cp.seq;
        self.changelog_positions = cp.changelog.clone();
        self.changelog_skips = cp.changelog_skips.clone();
        self.origins = cp
            .origins
            .iter()
            .filter_map(|(topic, o)| self.topology.topic_index(topic, &self.application_id).map(|t| (t, *o)))
            .collect();
        self.consumed_since_commit = false;
    }

    /// Forget the input positions and applied origins (keeping the state):
    /// for a cluster that starts empty on every run (the test driver's),
    /// where the offsets of the previous run mean nothing.
    pub fn forget_inputs(&mut self) {
        self.consumed.clear();
        self.origins.clear();
    }

    /// Whether a commit now would write anything: records were consumed (or
    /// replays skipped) since the last commit, or the stores staged changes
    /// (call after [`flush`](Self::flush)). An idle task's commit writes no
    /// checkpoint and touches no store.
    pub fn has_changes(&self) -> bool {
        self.consumed_since_commit || self.state.pending_len() > 0
    }

    /// What the task's state reflects now (processing included).
    pub fn task_checkpoint(&self) -> TaskCheckpoint {
        let mut inputs: Vec<(String, i64)> = self
            .consumed
            .iter()
            .map(|(t, o)| (self.topology.topic_name(*t, &self.application_id), *o))
            .collect();
        inputs.sort();
        TaskCheckpoint {
            inputs,
            seq: self.seq,
            changelog: self.changelog_positions.clone(),
            origins: self
                .origins
                .iter()
                .map(|(t, o)| (self.topology.topic_name(*t, &self.application_id), *o))
                .collect(),
            changelog_skips: self.changelog_skips.clone(),
        }
    }

    /// Records of `store`'s changelog in `[from, to)` are not part of this
    /// task's state (they lie past its checkpoint: a commit that never
    /// finished wrote them), and the changelog now ends at `to`: restores
    /// skip the range from now on (persisted with the next commit that has
    /// changes; until then no restore reads past `from`).
    pub fn skip_changelog(&mut self, store: &str, from: i64, to: i64) {
        if from < to {
            self.changelog_skips.push((store.to_string(), from, to));
            self.set_changelog_position(store, to);
        }
    }

    /// The commit sequence number of the task's state.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Start the next commit: bump the sequence number.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Record that the changelog of `store` now ends at `position` (the
    /// offset after the last record this task wrote or restored).
    pub fn set_changelog_position(&mut self, store: &str, position: i64) {
        match self.changelog_positions.iter_mut().find(|(s, _)| s == store) {
            Some(e) => e.1 = position,
            None => self.changelog_positions.push((store.to_string(), position)),
        }
    }

    /// The changelog position of `store`, if the task has one.
    pub fn changelog_position(&self, store: &str) -> Option<i64> {
        self.changelog_positions
            .iter()
            .find(|(s, _)| s == store)
            .map(|(_, p)| *p)
    }

    /// Process a repartition record that carries its origin: skipped (and
    /// false returned) if a record with the same or a later origin from the
    /// same upstream partition was applied already — a replay after a crash
    /// upstream.
    #[inline]
    pub fn process_from(
        &mut self,
        topic: u32,
        offset: i64,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        origin: Origin,
    ) -> bool {
        let slot = self
            .origins
            .iter_mut()
            .find(|(t, o)| *t == topic && o.upstream_partition == origin.upstream_partition);
        match slot {
            Some((_, last)) if origin <= *last => {
                // Already applied: only move the input position on.
                self.set_consumed(topic, offset + 1);
                if let Some(m) = &self.metrics {
                    m.consumed(topic, 1);
                }
                return false;
            }
            Some((_, last)) => *last = origin,
            None => self.origins.push((topic, origin)),
        }
        self.process(topic, offset, timestamp, key, value);
        true
    }

    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Count this task's work in `metrics` from now on.
    pub fn set_metrics(&mut self, metrics: crate::metrics::TaskMetrics) {
        self.metrics = Some(metrics);
    }

    /// The task's metric handles, if it has any.
    pub fn metrics(&self) -> Option<&crate::metrics::TaskMetrics> {
        self.metrics.as_ref()
    }

    /// The state of this task (stores, checkpoint, restore).
    pub fn state(&self) -> &TaskState {
        &self.state
    }

    pub fn stores(&self) -> &[(String, weir_topology::StoreRef)] {
        self.nodes.stores()
    }

    /// The next offset to consume per source topic, as far as processing
    /// (not necessarily committed state) has got.
    pub fn consumed(&self) -> &[(u32, i64)] {
        &self.consumed
    }

    #[inline]
    fn set_consumed(&mut self, topic: u32, next: i64) {
        match self.consumed.iter_mut().find(|(t, _)| *t == topic) {
            Some(entry) => entry.1 = next,
            None => self.consumed.push((topic, next)),
        }
        self.consumed_since_commit = true;
    }

    /// Process one record of source topic `topic`.
    #[inline]
    pub fn process(&mut self, topic: u32, offset: i64, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.ctx.set_record(topic, offset, timestamp);
        self.stream_time_at_last_record = self.ctx.stream_time();
        self.last_record_wall_ms = self.ctx.wall_clock_ms();
        self.nodes.process(&mut self.ctx, topic, key, value);
        self.set_consumed(topic, offset + 1);
        if let Some(m) = &self.metrics {
            m.consumed(topic, 1);
        }
    }

    /// Let time-driven nodes emit what is due, at wall-clock time `now_ms`.
    pub fn punctuate(&mut self, now_ms: i64) {
        self.ctx.set_wall_clock_ms(now_ms);
        if let Some(idle) = self.config.idle_advance_after_ms {
            let quiet = now_ms - self.last_record_wall_ms;
            if quiet >= idle && self.stream_time_at_last_record != i64::MIN {
                self.ctx
                    .advance_stream_time(self.stream_time_at_last_record.saturating_add(quiet));
            }
        }
        self.nodes.punctuate(&mut self.ctx);
    }

    /// First half of a commit: forward cached results downstream (into the
    /// collector) and stage every store's changes; changelog records land
    /// in `ctx.changelog`.
    pub fn flush(&mut self) {
        self.nodes.flush(&mut self.ctx);
    }

    /// True if a store's cache is over its limit (commit early).
    pub fn wants_flush(&mut self) -> bool {
        self.ctx.take_commit_request() || self.nodes.wants_flush()
    }

    /// The checkpoint of what has been processed, encoded (as written to
    /// sled and to the checkpoints topic).
    pub fn encoded_checkpoint(&self) -> Vec<u8> {
        self.task_checkpoint().encode()
    }

    /// Second half of a commit: write the staged store changes together with
    /// the checkpoint in one atomic batch.
    pub fn commit_state(&mut self) -> Result<(), RuntimeError> {
        if let Some(e) = self.ctx.take_fatal() {
            return Err(e.into());
        }
        self.state.commit(&self.encoded_checkpoint())?;
        self.consumed_since_commit = false;
        Ok(())
    }

    /// Close the processors (the caller commits first if it wants to keep
    /// the work).
    pub fn close(&mut self) {
        self.nodes.close(&mut self.ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_order_by_offset_then_index() {
        let o = |offset, index| Origin {
            upstream_partition: 0,
            offset,
            index,
        };
        assert!(o(5, 0) < o(5, 1));
        assert!(o(5, 9) < o(6, 0));
    }
}
