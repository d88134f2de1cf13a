//! Every metric weir exports, in one place: names, help texts, label sets
//! and histogram buckets. Names start with `weir_`, use base units (seconds,
//! bytes) and counters end in `_total`.
//!
//! [`Metrics`] owns its own [`Registry`] (not the process-global default),
//! so a test can create as many as it likes. Call sites never look a label
//! set up per record: they resolve typed handles once per stream thread
//! ([`TopologyMetrics`]) and per task ([`TaskMetrics`]) and increment those.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `weir_records_consumed_total` | counter | topology, topic, partition |
//! | `weir_records_produced_total` | counter | topology, topic |
//! | `weir_process_latency_seconds` | histogram | topology |
//! | `weir_end_to_end_latency_seconds` | histogram | topology |
//! | `weir_commit_duration_seconds` | histogram | topology |
//! | `weir_commits_total` | counter | topology |
//! | `weir_checkpoints_written_total` | counter | topology |
//! | `weir_checkpoint_records_read_total` | counter | topology |
//! | `weir_consumer_lag_records` | gauge | topology, topic, partition |
//! | `weir_store_entries` | gauge | topology, store, partition |
//! | `weir_store_cache_bytes` | gauge | topology, store, partition |
//! | `weir_store_cache_hits_total` | counter | topology, store |
//! | `weir_store_cache_misses_total` | counter | topology, store |
//! | `weir_restore_records_total` | counter | topology, store |
//! | `weir_restore_duration_seconds` | histogram | topology |
//! | `weir_restore_remaining_records` | gauge | topology, task, store |
//! | `weir_rebalance_pause_seconds` | histogram | topology |
//! | `weir_task_events_total` | counter | topology, event |
//! | `weir_late_records_dropped_total` | counter | topology |
//! | `weir_null_records_skipped_total` | counter | topology |
//! | `weir_dlq_records_total` | counter | topology |
//! | `weir_rebalances_total` | counter | topology |
//! | `weir_transactions_aborted_total` | counter | topology |
//! | `weir_active_tasks` | gauge | topology |
//! | `weir_restoring_tasks` | gauge | topology |
//! | `weir_build_info` | gauge (always 1) | version |
//! | `weir_global_records_total` | counter | topology, store |
//! | `weir_global_records_skipped_total` | counter | topology |

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Metric names, for tests and for whoever reads the exposition.
pub mod names {
    pub const RECORDS_CONSUMED: &str = "weir_records_consumed_total";
    pub const RECORDS_PRODUCED: &str = "weir_records_produced_total";
    pub const PROCESS_LATENCY: &str = "weir_process_latency_seconds";
    pub const END_TO_END_LATENCY: &str = "weir_end_to_end_latency_seconds";
    pub const COMMIT_DURATION: &str = "weir_commit_duration_seconds";
    pub const COMMITS: &str = "weir_commits_total";
    pub const CHECKPOINTS_WRITTEN: &str = "weir_checkpoints_written_total";
    pub const CHECKPOINT_RECORDS_READ: &str = "weir_checkpoint_records_read_total";
    pub const CONSUMER_LAG: &str = "weir_consumer_lag_records";
    pub const STORE_ENTRIES: &str = "weir_store_entries";
    pub const STORE_CACHE_BYTES: &str = "weir_store_cache_bytes";
    pub const STORE_CACHE_HITS: &str = "weir_store_cache_hits_total";
    pub const STORE_CACHE_MISSES: &str = "weir_store_cache_misses_total";
    pub const RESTORE_RECORDS: &str = "weir_restore_records_total";
    pub const RESTORE_DURATION: &str = "weir_restore_duration_seconds";
    pub const RESTORE_REMAINING: &str = "weir_restore_remaining_records";
    pub const REBALANCE_PAUSE: &str = "weir_rebalance_pause_seconds";
    pub const TASK_EVENTS: &str = "weir_task_events_total";
    pub const LATE_RECORDS_DROPPED: &str = "weir_late_records_dropped_total";
    pub const NULL_RECORDS_SKIPPED: &str = "weir_null_records_skipped_total";
    pub const DLQ_RECORDS: &str = "weir_dlq_records_total";
    pub const REBALANCES: &str = "weir_rebalances_total";
    pub const TRANSACTIONS_ABORTED: &str = "weir_transactions_aborted_total";
    pub const ACTIVE_TASKS: &str = "weir_active_tasks";
    pub const RESTORING_TASKS: &str = "weir_restoring_tasks";
    pub const BUILD_INFO: &str = "weir_build_info";
    pub const GLOBAL_RECORDS: &str = "weir_global_records_total";
    pub const GLOBAL_RECORDS_SKIPPED: &str = "weir_global_records_skipped_total";
    pub const GENERATED_RECORDS: &str = "weir_generated_records_total";
    pub const INGRESS_RECORDS: &str = "weir_http_ingress_records_total";
    pub const SINK_ROWS: &str = "weir_sink_rows_written_total";
    pub const SINK_FILES: &str = "weir_sink_files_written_total";
}

/// The content type of [`Metrics::encode`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Per-record processing time: a few microseconds to a second.
const PROCESS_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1, 1.0,
];
/// Record timestamp to output: a millisecond to minutes (commit intervals
/// and window grace periods dominate).
const END_TO_END_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// A commit: flush stores and producer, write sled, commit offsets.
const COMMIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Restoring one assignment's stores from their changelogs.
const RESTORE_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];

/// All of weir's metrics, registered in their own [`Registry`]. One per
/// daemon; share it behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    records_consumed: IntCounterVec,
    records_produced: IntCounterVec,
    process_latency: HistogramVec,
    end_to_end_latency: HistogramVec,
    commit_duration: HistogramVec,
    commits: IntCounterVec,
    checkpoints_written: IntCounterVec,
    checkpoint_records_read: IntCounterVec,
    consumer_lag: IntGaugeVec,
    store_entries: IntGaugeVec,
    cache_bytes: IntGaugeVec,
    cache_hits: IntCounterVec,
    cache_misses: IntCounterVec,
    restore_records: IntCounterVec,
    restore_duration: HistogramVec,
    restore_remaining: IntGaugeVec,
    rebalance_pause: HistogramVec,
    task_events: IntCounterVec,
    late_records: IntCounterVec,
    null_records: IntCounterVec,
    dlq_records: IntCounterVec,
    rebalances: IntCounterVec,
    transactions_aborted: IntCounterVec,
    active_tasks: IntGaugeVec,
    restoring_tasks: IntGaugeVec,
    global_records: IntCounterVec,
    global_skipped: IntCounterVec,
    /// Records written by the built-in data generators (`--generate`).
    pub generated_records: IntCounterVec,
    /// Records produced by HTTP ingress routes (`POST /emoji`, ...).
    pub ingress_records: IntCounterVec,
    /// Rows and files written by file sinks (the Parquet sink).
    pub sink_rows: IntCounterVec,
    pub sink_files: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry holding every metric, with `weir_build_info` set.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            registry.register(Box::new(c.clone())).expect("metric registered once");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            registry.register(Box::new(g.clone())).expect("metric registered once");
            g
        };
        let histogram = |name: &str, help: &str, buckets: &[f64], labels: &[&str]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
                .expect("valid metric definition");
            registry.register(Box::new(h.clone())).expect("metric registered once");
            h
        };
        use names::*;
        let m = Metrics {
            records_consumed: counter(
                RECORDS_CONSUMED,
                "Records consumed from a source topic partition.",
                &["topology", "topic", "partition"],
            ),
            records_produced: counter(
                RECORDS_PRODUCED,
                "Records produced to a sink or repartition topic (changelogs not included).",
                &["topology", "topic"],
            ),
            process_latency: histogram(
                PROCESS_LATENCY,
                "Time to process one input record through its task's processors, in seconds.",
                PROCESS_BUCKETS,
                &["topology"],
            ),
            end_to_end_latency: histogram(
                END_TO_END_LATENCY,
                "Time from an input record's timestamp to its output being produced, in seconds.",
                END_TO_END_BUCKETS,
                &["topology"],
            ),
            commit_duration: histogram(
                COMMIT_DURATION,
                "Time to commit a stream thread's tasks (stores, changelogs, producer, offsets), in seconds.",
                COMMIT_BUCKETS,
                &["topology"],
            ),
            commits: counter(
                COMMITS,
                "Commits of a stream thread's tasks, including those that found nothing new and wrote nothing.",
                &["topology"],
            ),
            checkpoints_written: counter(
                CHECKPOINTS_WRITTEN,
                "Task checkpoints written (one per task with new work per commit; an idle task writes none).",
                &["topology"],
            ),
            checkpoint_records_read: counter(
                CHECKPOINT_RECORDS_READ,
                "Checkpoint records read to find where assigned tasks stand (one per task, unless offsets \
                 carry no checkpoint pointers).",
                &["topology"],
            ),
            consumer_lag: gauge(
                CONSUMER_LAG,
                "Records in a source partition not yet consumed (high watermark minus position).",
                &["topology", "topic", "partition"],
            ),
            store_entries: gauge(
                STORE_ENTRIES,
                "Entries in a state store partition, as of the last commit.",
                &["topology", "store", "partition"],
            ),
            cache_bytes: gauge(
                STORE_CACHE_BYTES,
                "Bytes held by a store partition's write cache (keys, values and per-entry overhead), as of the \
                 last commit; bounded by --cache-max-bytes for dirty data.",
                &["topology", "store", "partition"],
            ),
            cache_hits: counter(
                STORE_CACHE_HITS,
                "Store reads answered by the write cache.",
                &["topology", "store"],
            ),
            cache_misses: counter(
                STORE_CACHE_MISSES,
                "Store reads that missed the write cache and went to sled.",
                &["topology", "store"],
            ),
            restore_records: counter(
                RESTORE_RECORDS,
                "Changelog records applied while restoring a store.",
                &["topology", "store"],
            ),
            restore_remaining: gauge(
                RESTORE_REMAINING,
                "Changelog records a restoring store still has to read (0 once restored).",
                &["topology", "task", "store"],
            ),
            rebalance_pause: histogram(
                REBALANCE_PAUSE,
                "Time a stream thread's processing stood still for a rebalance (from the revoke to the tasks of the \
                 new assignment being ready), in seconds.",
                RESTORE_BUCKETS,
                &["topology"],
            ),
            task_events: counter(
                TASK_EVENTS,
                "Task lifecycle events: created, restored (from the changelog), suspended (at a revoke), resumed \
                 (given back to the same thread: neither closed nor restored), closed.",
                &["topology", "event"],
            ),
            restore_duration: histogram(
                RESTORE_DURATION,
                "Time to restore the stores of a new assignment, in seconds.",
                RESTORE_BUCKETS,
                &["topology"],
            ),
            late_records: counter(
                LATE_RECORDS_DROPPED,
                "Records dropped because every window they belong to had closed.",
                &["topology"],
            ),
            null_records: counter(
                NULL_RECORDS_SKIPPED,
                "Records a join ignored because their key or value was null (as Kafka Streams' joins do).",
                &["topology"],
            ),
            dlq_records: counter(DLQ_RECORDS, "Records written to the dead-letter topic.", &["topology"]),
            rebalances: counter(
                REBALANCES,
                "Partition assignments and revocations seen by the stream threads.",
                &["topology"],
            ),
            transactions_aborted: counter(
                TRANSACTIONS_ABORTED,
                "Exactly-once transactions aborted (a send or commit failed; the tasks went back to their last committed state and went on).",
                &["topology"],
            ),
            active_tasks: gauge(ACTIVE_TASKS, "Tasks running in this process.", &["topology"]),
            restoring_tasks: gauge(
                RESTORING_TASKS,
                "Tasks restoring their state in this process (their input partitions paused).",
                &["topology"],
            ),
            global_records: counter(
                GLOBAL_RECORDS,
                "Records of global tables' topics written to this process's global stores (restore included).",
                &["topology", "store"],
            ),
            global_skipped: counter(
                GLOBAL_RECORDS_SKIPPED,
                "Records of global tables' topics not stored because their key or value did not decode.",
                &["topology"],
            ),
            generated_records: counter(
                GENERATED_RECORDS,
                "Records a built-in data generator produced to an input topic.",
                &["topology", "topic"],
            ),
            ingress_records: counter(
                INGRESS_RECORDS,
                "Records an HTTP ingress route produced to a topic.",
                &["topology", "topic"],
            ),
            sink_rows: counter(
                SINK_ROWS,
                "Rows a file sink wrote to completed (renamed) files.",
                &["topology", "topic"],
            ),
            sink_files: counter(SINK_FILES, "Files a file sink completed.", &["topology", "topic"]),
            registry: registry.clone(),
        };
        let build_info = gauge(
            BUILD_INFO,
            "Always 1; the labels say which weir build is running.",
            &["version"],
        );
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m
    }

    /// The registry, to register further collectors or gather by hand.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric
    /// (content type [`TEXT_CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec fails only on metric families the text format
        // cannot express, which this module never defines.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return format!("# error encoding metrics: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Handles for one topology (application id), resolved once per stream
    /// thread.
    pub fn topology(&self, topology: &str) -> TopologyMetrics {
        let l = &[topology];
        TopologyMetrics {
            topology: topology.to_string(),
            process_latency: self.process_latency.with_label_values(l),
            end_to_end_latency: self.end_to_end_latency.with_label_values(l),
            commit_duration: self.commit_duration.with_label_values(l),
            commits: self.commits.with_label_values(l),
            checkpoints_written: self.checkpoints_written.with_label_values(l),
            checkpoint_records_read: self.checkpoint_records_read.with_label_values(l),
            restore_duration: self.restore_duration.with_label_values(l),
            rebalance_pause: self.rebalance_pause.with_label_values(l),
            task_events: self.task_events.clone(),
            restore_remaining: self.restore_remaining.clone(),
            late_records_dropped: self.late_records.with_label_values(l),
            null_records_skipped: self.null_records.with_label_values(l),
            dlq_records: self.dlq_records.with_label_values(l),
            rebalances: self.rebalances.with_label_values(l),
            transactions_aborted: self.transactions_aborted.with_label_values(l),
            active_tasks: self.active_tasks.with_label_values(l),
            restoring_tasks: self.restoring_tasks.with_label_values(l),
            records_consumed: self.records_consumed.clone(),
            records_produced: self.records_produced.clone(),
            consumer_lag: self.consumer_lag.clone(),
            store_entries: self.store_entries.clone(),
            cache_bytes: self.cache_bytes.clone(),
            cache_hits: self.cache_hits.clone(),
            cache_misses: self.cache_misses.clone(),
            restore_records: self.restore_records.clone(),
            global_records: self.global_records.clone(),
            global_records_skipped: self.global_skipped.with_label_values(l),
        }
    }
}

/// A step in a task's life, counted in `weir_task_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    Created,
    Restored,
    Suspended,
    Resumed,
    Closed,
}

impl TaskEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskEvent::Created => "created",
            TaskEvent::Restored => "restored",
            TaskEvent::Suspended => "suspended",
            TaskEvent::Resumed => "resumed",
            TaskEvent::Closed => "closed",
        }
    }
}

/// One topology's handles, shared by its tasks on a stream thread.
#[derive(Clone)]
pub struct TopologyMetrics {
    topology: String,
    pub process_latency: Histogram,
    pub end_to_end_latency: Histogram,
    pub commit_duration: Histogram,
    pub commits: IntCounter,
    pub checkpoints_written: IntCounter,
    pub checkpoint_records_read: IntCounter,
    pub restore_duration: Histogram,
    pub rebalance_pause: Histogram,
    task_events: IntCounterVec,
    restore_remaining: IntGaugeVec,
    pub late_records_dropped: IntCounter,
    pub null_records_skipped: IntCounter,
    pub dlq_records: IntCounter,
    pub rebalances: IntCounter,
    pub transactions_aborted: IntCounter,
    pub active_tasks: IntGauge,
    pub restoring_tasks: IntGauge,
    records_consumed: IntCounterVec,
    records_produced: IntCounterVec,
    consumer_lag: IntGaugeVec,
    store_entries: IntGaugeVec,
    cache_bytes: IntGaugeVec,
    cache_hits: IntCounterVec,
    cache_misses: IntCounterVec,
    restore_records: IntCounterVec,
    global_records: IntCounterVec,
    pub global_records_skipped: IntCounter,
}

impl TopologyMetrics {
    /// Count `n` records written to global store `store` (once per batch).
    pub fn global_records(&self, store: &str, n: u64) {
        self.global_records
            .with_label_values(&[self.topology.as_str(), store])
            .inc_by(n);
    }

    /// The topology (application id) these handles are labelled with.
    pub fn name(&self) -> &str {
        &self.topology
    }

    /// Count `n` task lifecycle events (at rebalances: a label look-up is
    /// fine there).
    pub fn task_events(&self, event: TaskEvent, n: u64) {
        self.task_events
            .with_label_values(&[self.topology.as_str(), event.as_str()])
            .inc_by(n);
    }

    /// Handles for one task on `partition`: `sources` and `sinks` are the
    /// task's (topology topic index, topic name) pairs, `stores` its store
    /// names, in the order the caller will index them.
    /// Handles for task `task` ("{subtopology}_{partition}") of
    /// `partition`.
    pub fn task(
        &self,
        task: &str,
        partition: i32,
        sources: &[(u32, &str)],
        sinks: &[(u32, &str)],
        stores: &[&str],
    ) -> TaskMetrics {
        let t = self.topology.as_str();
        let p = partition.to_string();
        TaskMetrics {
            sources: sources
                .iter()
                .map(|&(index, topic)| SourceMetrics {
                    index,
                    consumed: self.records_consumed.with_label_values(&[t, topic, &p]),
                    lag: self.consumer_lag.with_label_values(&[t, topic, &p]),
                })
                .collect(),
            sinks: sinks
                .iter()
                .map(|&(index, topic)| (index, self.records_produced.with_label_values(&[t, topic])))
                .collect(),
            stores: stores
                .iter()
                .map(|&store| StoreMetrics {
                    entries: self.store_entries.with_label_values(&[t, store, &p]),
                    cache_bytes: self.cache_bytes.with_label_values(&[t, store, &p]),
                    cache_hits: self.cache_hits.with_label_values(&[t, store]),
                    cache_misses: self.cache_misses.with_label_values(&[t, store]),
                    restore_records: self.restore_records.with_label_values(&[t, store]),
                    restore_remaining: self.restore_remaining.with_label_values(&[t, task, store]),
                })
                .collect(),
        }
    }
}

/// A source partition's handles.
#[derive(Clone)]
pub struct SourceMetrics {
    /// The topology's index of the topic.
    pub index: u32,
    pub consumed: IntCounter,
    pub lag: IntGauge,
}

/// A store partition's handles.
#[derive(Clone)]
pub struct StoreMetrics {
    pub entries: IntGauge,
    pub cache_bytes: IntGauge,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub restore_records: IntCounter,
    /// Records still to restore (set while restoring).
    pub restore_remaining: IntGauge,
}

/// One task's handles, resolved when the task is created. Lookups by topic
/// index scan a vector of a handful of entries (no hashing, no labels).
#[derive(Clone)]
pub struct TaskMetrics {
    pub sources: Vec<SourceMetrics>,
    /// (topology topic index, produced counter) per sink topic.
    pub sinks: Vec<(u32, IntCounter)>,
    /// Per store, in the order given to [`TopologyMetrics::task`].
    pub stores: Vec<StoreMetrics>,
}

impl TaskMetrics {
    /// The handles of source topic `index`, if the task reads it.
    #[inline]
    pub fn source(&self, index: u32) -> Option<&SourceMetrics> {
        self.sources.iter().find(|s| s.index == index)
    }

    /// Count `n` records consumed from source topic `index`.
    #[inline]
    pub fn consumed(&self, index: u32, n: u64) {
        if let Some(s) = self.source(index) {
            s.consumed.inc_by(n);
        }
    }

    /// Count `n` records produced to sink topic `index`.
    #[inline]
    pub fn produced(&self, index: u32, n: u64) {
        if let Some((_, c)) = self.sinks.iter().find(|(i, _)| *i == index) {
            c.inc_by(n);
        }
    }

    /// Set the lag of source topic `index` (negative values clamp to 0).
    #[inline]
    pub fn set_lag(&self, index: u32, lag: i64) {
        if let Some(s) = self.source(index) {
            s.lag.set(lag.max(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_parse::{Scrape, Value};

    fn scrape(m: &Metrics) -> Scrape {
        let text = m.encode();
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("exposition parses")
    }

    /// The value of the sample `name` whose labels include all of `labels`.
    fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
        s.samples
            .iter()
            .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
            .map(|x| x.value.clone())
    }

    fn number(v: Option<Value>) -> f64 {
        match v {
            Some(Value::Counter(x)) | Some(Value::Gauge(x)) | Some(Value::Untyped(x)) => x,
            other => panic!("not a number: {other:?}"),
        }
    }

    #[test]
    fn handles_count_into_the_exposition() {
        let m = Metrics::new();
        let t = m.topology("user-clicks");
        let task0 = t.task("0_0", 0, &[(0, "clicks")], &[(2, "click-counts")], &["counts"]);
        let task1 = t.task("0_1", 1, &[(0, "clicks")], &[(2, "click-counts")], &["counts"]);
        for _ in 0..5 {
            task0.consumed(0, 1);
        }
        task1.consumed(0, 7);
        task1.consumed(9, 100); // not a source of the task: ignored
        task0.produced(2, 3);
        task1.produced(2, 4);
        task0.set_lag(0, 42);
        task1.set_lag(0, -5);
        task0.stores[0].entries.set(11);
        task1.stores[0].cache_bytes.set(4096);
        task0.stores[0].cache_hits.inc_by(8);
        task1.stores[0].cache_misses.inc();
        task1.stores[0].restore_records.inc_by(1000);
        t.late_records_dropped.inc_by(2);
        t.dlq_records.inc();
        t.rebalances.inc_by(3);
        t.active_tasks.set(2);
        t.commit_duration.observe(0.02);
        t.process_latency.observe(3e-6);
        t.process_latency.observe(0.5);
        t.end_to_end_latency.observe(1.5);
        t.restore_duration.observe(2.0);

        let s = scrape(&m);
        let ut = ("topology", "user-clicks");
        let n = |name, labels: &[(&str, &str)]| number(value(&s, name, labels));
        assert_eq!(
            n(names::RECORDS_CONSUMED, &[ut, ("topic", "clicks"), ("partition", "0")]),
            5.0
        );
        assert_eq!(
            n(names::RECORDS_CONSUMED, &[ut, ("topic", "clicks"), ("partition", "1")]),
            7.0
        );
        assert_eq!(n(names::RECORDS_PRODUCED, &[ut, ("topic", "click-counts")]), 7.0);
        assert_eq!(n(names::CONSUMER_LAG, &[ut, ("partition", "0")]), 42.0);
        assert_eq!(n(names::CONSUMER_LAG, &[ut, ("partition", "1")]), 0.0);
        assert_eq!(
            n(names::STORE_ENTRIES, &[ut, ("store", "counts"), ("partition", "0")]),
            11.0
        );
        assert_eq!(
            n(names::STORE_CACHE_BYTES, &[ut, ("store", "counts"), ("partition", "1")]),
            4096.0
        );
        assert_eq!(n(names::STORE_CACHE_HITS, &[ut, ("store", "counts")]), 8.0);
        assert_eq!(n(names::STORE_CACHE_MISSES, &[ut, ("store", "counts")]), 1.0);
        assert_eq!(n(names::RESTORE_RECORDS, &[ut, ("store", "counts")]), 1000.0);
        assert_eq!(n(names::LATE_RECORDS_DROPPED, &[ut]), 2.0);
        assert_eq!(n(names::DLQ_RECORDS, &[ut]), 1.0);
        assert_eq!(n(names::REBALANCES, &[ut]), 3.0);
        assert_eq!(n(names::ACTIVE_TASKS, &[ut]), 2.0);
        assert_eq!(n(names::BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
        // Only the partitions that were resolved exist.
        assert!(value(&s, names::RECORDS_CONSUMED, &[("partition", "2")]).is_none());

        let Some(Value::Histogram(h)) = value(&s, names::PROCESS_LATENCY, &[ut]) else {
            panic!("process latency is a histogram");
        };
        let le = |bound: f64| h.iter().find(|b| b.less_than == bound).map(|b| b.count);
        assert_eq!(le(2.5e-6), Some(0.0));
        assert_eq!(le(5e-6), Some(1.0));
        assert_eq!(le(1.0), Some(2.0));
        assert_eq!(le(f64::INFINITY), Some(2.0));
        let Some(Value::Histogram(c)) = value(&s, names::COMMIT_DURATION, &[ut]) else {
            panic!("commit duration is a histogram");
        };
        assert_eq!(c.iter().find(|b| b.less_than == 0.025).map(|b| b.count), Some(1.0));
        assert_eq!(c.iter().find(|b| b.less_than == 0.01).map(|b| b.count), Some(0.0));
        for name in [names::END_TO_END_LATENCY, names::RESTORE_DURATION] {
            let Some(Value::Histogram(h)) = value(&s, name, &[ut]) else {
                panic!("{name} is a histogram");
            };
            assert_eq!(h.last().map(|b| b.count), Some(1.0), "{name}");
        }
    }

    #[test]
    fn registries_are_independent_and_topologies_apart() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.topology("one").dlq_records.inc();
        a.topology("two").dlq_records.inc_by(5);
        // Handles resolved twice point at the same series.
        a.topology("one").dlq_records.inc();
        let sa = scrape(&a);
        let sb = scrape(&b);
        assert_eq!(number(value(&sa, names::DLQ_RECORDS, &[("topology", "one")])), 2.0);
        assert_eq!(number(value(&sa, names::DLQ_RECORDS, &[("topology", "two")])), 5.0);
        assert!(value(&sb, names::DLQ_RECORDS, &[]).is_none());
        assert_eq!(number(value(&sb, names::BUILD_INFO, &[])), 1.0);
    }

    #[test]
    fn names_follow_the_conventions() {
        let m = Metrics::new();
        let t = m.topology("x");
        let task = t.task("0_0", 0, &[(0, "in")], &[(1, "out")], &["s"]);
        task.stores[0].restore_remaining.set(0);
        task.consumed(0, 1);
        task.produced(1, 1);
        task.set_lag(0, 1);
        task.stores[0].cache_hits.inc();
        task.stores[0].cache_misses.inc();
        task.stores[0].restore_records.inc();
        task.stores[0].entries.set(1);
        task.stores[0].cache_bytes.set(1);
        t.late_records_dropped.inc();
        t.null_records_skipped.inc();
        t.dlq_records.inc();
        t.rebalances.inc();
        t.transactions_aborted.inc();
        t.active_tasks.set(1);
        t.restoring_tasks.set(0);
        t.process_latency.observe(0.0);
        t.end_to_end_latency.observe(0.0);
        t.commit_duration.observe(0.0);
        t.commits.inc();
        t.checkpoints_written.inc();
        t.checkpoint_records_read.inc();
        t.restore_duration.observe(0.0);
        t.rebalance_pause.observe(0.0);
        t.task_events(TaskEvent::Resumed, 1);
        t.global_records("s", 1);
        t.global_records_skipped.inc();
        let families = m.registry().gather();
        assert_eq!(families.len(), 28);
        for f in &families {
            let name = f.name();
            assert!(name.starts_with("weir_"), "{name}");
            assert!(!f.help().is_empty(), "{name}");
            match f.get_field_type() {
                prometheus::proto::MetricType::COUNTER => assert!(name.ends_with("_total"), "{name}"),
                prometheus::proto::MetricType::HISTOGRAM => assert!(name.ends_with("_seconds"), "{name}"),
                _ => assert!(!name.ends_with("_total"), "{name}"),
            }
        }
    }
}
