//! Run a whole topology in one thread with no broker: every sub-topology as
//! one task (partition 0), records written to repartition topics handed
//! straight to the task that reads them, in batches.
//!
//! This is the engine without Kafka: `weir bench engine` measures it, and a
//! program can use it to process records that come from somewhere else.
//! Outputs for topics the topology does not read go to a caller-supplied
//! sink.

use weir_state::StateDb;
use weir_topology::Topology;

use crate::task::{Task, TaskConfig, TaskId};
use crate::RuntimeError;

/// Receives the records the topology writes to its output topics:
/// (topic index, key, value, timestamp).
pub trait OutputSink {
    fn record(&mut self, topic: u32, key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64);
}

impl<F: FnMut(u32, Option<&[u8]>, Option<&[u8]>, i64)> OutputSink for F {
    #[inline]
    fn record(&mut self, topic: u32, key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) {
        self(topic, key, value, timestamp)
    }
}

/// Counters of a local run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LocalStats {
    pub dead_letters: u64,
    pub late_records_dropped: u64,
    pub changelog_records: u64,
    pub commits: u64,
}

pub struct LocalRunner {
    topology: Topology,
    tasks: Vec<Task>,
    /// For each topic index: the tasks that read it.
    readers: Vec<Vec<usize>>,
    /// Next offset per topic index.
    offsets: Vec<i64>,
    stats: LocalStats,
    wall_clock_ms: i64,
}

impl LocalRunner {
    pub fn new(
        topology: &Topology,
        application_id: &str,
        db: &StateDb,
        config: TaskConfig,
    ) -> Result<Self, RuntimeError> {
        let mut tasks = Vec::new();
        for sub in topology.subtopologies() {
            let id = TaskId {
                subtopology: sub.id,
                partition: 0,
            };
            tasks.push(Task::new(topology, application_id, id, db, config.clone())?);
        }
        if tasks.len() > 128 {
            return Err(RuntimeError::Io(format!(
                "a local run supports at most 128 sub-topologies, this topology has {}",
                tasks.len()
            )));
        }
        let n = topology.topics().len();
        let mut readers = vec![Vec::new(); n];
        for (i, t) in tasks.iter().enumerate() {
            for topic in &topology.subtopologies()[t.id().subtopology].source_topics {
                readers[*topic as usize].push(i);
            }
        }
        Ok(LocalRunner {
            topology: topology.clone(),
            tasks,
            readers,
            offsets: vec![0; n],
            stats: LocalStats::default(),
            wall_clock_ms: 0,
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn stats(&self) -> &LocalStats {
        &self.stats
    }

    /// Set the wall clock used for punctuation (epoch ms).
    pub fn set_wall_clock_ms(&mut self, now: i64) {
        self.wall_clock_ms = now;
    }

    /// Process one input record of topic index `topic` and everything it
    /// causes downstream. Call [`LocalRunner::commit`] regularly (the
    /// runtime's commit interval) to forward cached results and persist
    /// state.
    #[inline]
    pub fn process(
        &mut self,
        topic: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        sink: &mut dyn OutputSink,
    ) -> Result<(), RuntimeError> {
        let offset = self.offsets[topic as usize];
        self.offsets[topic as usize] += 1;
        for r in 0..self.readers[topic as usize].len() {
            let i = self.readers[topic as usize][r];
            self.tasks[i].process(topic, offset, timestamp, key, value);
            if !self.tasks[i].ctx.collector.is_empty() {
                self.route(i, sink)?;
            }
            if self.tasks[i].wants_flush() {
                self.commit(sink)?;
            }
        }
        Ok(())
    }

    /// Hand the records task `i` wrote to the tasks that read them (or to
    /// the sink), recursively.
    fn route(&mut self, i: usize, sink: &mut dyn OutputSink) -> Result<(), RuntimeError> {
        let mut collector = std::mem::take(&mut self.tasks[i].ctx.collector);
        // A bit per task (at most 128, checked in new()): no allocation per call.
        let mut touched: u128 = 0;
        for rec in collector.records() {
            let key = collector.slice(&rec.key);
            let value = collector.slice(&rec.value);
            // A topic chosen per record (KStream::to_dynamic) is no topic
            // of the topology: the engine alone has nowhere to send it.
            let Some(readers) = self.readers.get(rec.topic as usize) else {
                continue;
            };
            if readers.is_empty() {
                sink.record(rec.topic, key, value, rec.timestamp);
                continue;
            }
            let offset = self.offsets[rec.topic as usize];
            self.offsets[rec.topic as usize] += 1;
            for &j in readers {
                self.tasks[j].process(rec.topic, offset, rec.timestamp, key, value);
                touched |= 1 << j;
            }
        }
        collector.clear();
        self.tasks[i].ctx.collector = collector;
        for j in 0..self.tasks.len() {
            if touched & (1 << j) != 0 && j != i && !self.tasks[j].ctx.collector.is_empty() {
                self.route(j, sink)?;
            }
        }
        Ok(())
    }

    /// Punctuate every task (windows due by stream or wall-clock time).
    pub fn punctuate(&mut self, sink: &mut dyn OutputSink) -> Result<(), RuntimeError> {
        for i in 0..self.tasks.len() {
            self.tasks[i].punctuate(self.wall_clock_ms);
            self.route(i, sink)?;
        }
        Ok(())
    }

    /// Commit: every task forwards what it cached (in sub-topology order, so
    /// that upstream results reach downstream tasks before those flush),
    /// then every task writes its state and checkpoint atomically.
    pub fn commit(&mut self, sink: &mut dyn OutputSink) -> Result<(), RuntimeError> {
        for i in 0..self.tasks.len() {
            self.tasks[i].flush();
            self.route(i, sink)?;
            let t = &mut self.tasks[i];
            self.stats.changelog_records += t.ctx.changelog.len() as u64;
            t.ctx.changelog.clear();
            self.stats.dead_letters += t.ctx.dead_letters.len() as u64;
            t.ctx.dead_letters.clear();
            let c = std::mem::take(&mut t.ctx.counters);
            self.stats.late_records_dropped += c.late_records_dropped;
        }
        for t in &mut self.tasks {
            t.commit_state()?;
        }
        self.stats.commits += 1;
        Ok(())
    }

    /// The tasks, for reading their stores.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }
}
