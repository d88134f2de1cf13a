//! A task: one (sub-topology, partition) with its processors, its stores
//! and its processor context. The Kafka stream threads and the test driver
//! both run topologies through this type, so tests exercise the same code
//! that production runs.

use weir_state::{StateDb, TaskState};
use weir_topology::store::Checkpoint;
use weir_topology::{ProcessorContext, TaskNodes, Topology};

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
        };
        if let Some(cp) = task.state.checkpoint()? {
            for (topic, partition, offset) in cp.offsets {
                if partition != id.partition {
                    continue;
                }
                if let Some(t) = topology.topic_index(&topic, application_id) {
                    task.set_consumed(t, offset);
                }
            }
        }
        Ok(task)
    }

    pub fn id(&self) -> TaskId {
        self.id
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
    }

    /// Process one record of source topic `topic`.
    #[inline]
    pub fn process(&mut self, topic: u32, offset: i64, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.ctx.set_record(topic, offset, timestamp);
        self.stream_time_at_last_record = self.ctx.stream_time();
        self.last_record_wall_ms = self.ctx.wall_clock_ms();
        self.nodes.process(&mut self.ctx, topic, key, value);
        self.set_consumed(topic, offset + 1);
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

    /// The checkpoint of what has been processed: next offset per source
    /// topic partition.
    pub fn checkpoint(&self) -> Checkpoint {
        let mut offsets: Vec<(String, i32, i64)> = self
            .consumed
            .iter()
            .map(|(t, o)| {
                (
                    self.topology.topic_name(*t, &self.application_id),
                    self.id.partition,
                    *o,
                )
            })
            .collect();
        offsets.sort();
        Checkpoint { offsets }
    }

    /// Second half of a commit: write the staged store changes together with
    /// the checkpoint in one atomic batch.
    pub fn commit_state(&mut self) -> Result<(), RuntimeError> {
        if let Some(e) = self.ctx.take_fatal() {
            return Err(e.into());
        }
        self.state.commit(&self.checkpoint())?;
        Ok(())
    }

    /// Close the processors (the caller commits first if it wants to keep
    /// the work).
    pub fn close(&mut self) {
        self.nodes.close(&mut self.ctx);
    }
}
