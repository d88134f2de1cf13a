//! The global updater: fills and maintains an application's global stores
//! (`GlobalKTable`s) on one instance.
//!
//! Kafka Streams runs a `GlobalStreamThread` per instance: its consumer is
//! assigned every partition of every global topic (no consumer group, so
//! every instance reads everything), it restores the global stores up to
//! the topics' end offsets before any stream thread starts, then keeps
//! them up to date. [`GlobalUpdater`] is that logic without the consumer:
//! it decides where each partition is read from, applies what a reader
//! hands it, and can read ranges itself through a [`RangeReader`] (the
//! restore, and the in-memory cluster's catch-up). `weir-connectors` runs
//! it on a thread of its own with an rdkafka consumer; [`crate::memory::Member`]
//! (and so the test driver) catches up before every poll, so a record piped
//! to a global topic is in the store before the next stream record is
//! processed.
//!
//! Checkpoint: each global store keeps, in the same atomic sled batch as
//! the records, the next offset to read per partition of its topic
//! (`weir_state::GlobalPositions`). A restart reads on from there, not from
//! the start. Positions that do not fit the topic any more (below its log
//! start offset, past its end, or of another topic) make the store start
//! over: wiped, read from the beginning — except on a cluster that does
//! not keep its data between runs (the test driver's), where the local
//! store is all there is and only the positions start over.

use std::time::{Duration, Instant};

use weir_state::{GlobalPositions, SledGlobalStore, StateDb, StoreReader};
use weir_topology::{GlobalStoreDef, Topology};

use crate::metrics::TopologyMetrics;
use crate::transport::{RangeReader, Transport};
use crate::RuntimeError;

/// Records applied in one sled batch during a restore or catch-up.
const BATCH: usize = 10_000;

/// One global store, its source and where it stands.
struct Global {
    def: GlobalStoreDef,
    topic: String,
    store: SledGlobalStore,
    /// Next offset to read per partition (all partitions of the topic).
    positions: GlobalPositions,
}

/// The writer of an application's global stores on one instance; see the
/// module docs.
pub struct GlobalUpdater {
    application_id: String,
    globals: Vec<Global>,
    /// Records not stored because their key or value did not decode.
    skipped: u64,
    /// Records applied so far (restore included).
    applied: u64,
    /// Where to count them, when running in a daemon.
    metrics: Option<TopologyMetrics>,
}

/// A record handed to [`GlobalUpdater::apply`]: offset, key, value.
pub type GlobalRecord<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);

/// Asks the cluster for a partition's (low, high) watermarks.
pub type Watermarks<'a> = dyn FnMut(&str, i32) -> Result<(i64, i64), RuntimeError> + 'a;

/// A record read back and kept until it is applied.
type OwnedRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

impl GlobalUpdater {
    /// Open the global stores of `topology` in `db`. Call
    /// [`init`](Self::init) before reading.
    pub fn new(topology: &Topology, application_id: &str, db: &StateDb) -> Result<GlobalUpdater, RuntimeError> {
        let mut globals = Vec::new();
        for def in topology.global_stores() {
            let topic = topology.topic_name(def.topic, application_id);
            globals.push(Global {
                store: db.global_store(application_id, &def.store)?,
                positions: GlobalPositions {
                    topic: topic.clone(),
                    offsets: Vec::new(),
                },
                topic,
                def: def.clone(),
            });
        }
        Ok(GlobalUpdater {
            application_id: application_id.to_string(),
            globals,
            skipped: 0,
            applied: 0,
            metrics: None,
        })
    }

    /// Count applied and skipped records in `metrics` from now on
    /// (`weir_global_records_total`, `weir_global_records_skipped_total`).
    pub fn set_metrics(&mut self, metrics: TopologyMetrics) {
        self.metrics = Some(metrics);
    }

    /// Whether the topology has no global store (nothing to do).
    pub fn is_empty(&self) -> bool {
        self.globals.is_empty()
    }

    /// Decide where each partition is read from: the stored positions, or
    /// the log start (`watermarks(topic, partition)` gives low and high)
    /// for a store that has none or whose positions do not fit the topic
    /// (see the module docs; `cluster_keeps_data` false keeps the data).
    /// `partitions(topic)` is the topic's partition count.
    pub fn init(
        &mut self,
        partitions: &dyn Fn(&str) -> Option<i32>,
        watermarks: &mut Watermarks<'_>,
        cluster_keeps_data: bool,
    ) -> Result<(), RuntimeError> {
        for g in &mut self.globals {
            let n = partitions(&g.topic).ok_or_else(|| RuntimeError::UnknownTopic(g.topic.clone()))?;
            let saved = g.store.positions()?;
            let mut marks = Vec::with_capacity(n as usize);
            for p in 0..n {
                marks.push(watermarks(&g.topic, p)?);
            }
            let fits = saved.as_ref().is_some_and(|s| {
                s.topic == g.topic
                    && (0..n).all(|p| {
                        let at = s.offsets.iter().find(|(q, _)| *q == p).map(|(_, o)| *o);
                        let (low, high) = marks[p as usize];
                        at.is_none_or(|o| o >= low && o <= high)
                    })
            });
            let keep_data = !cluster_keeps_data && saved.is_some();
            if !fits && saved.is_some() && !keep_data {
                tracing::warn!(
                    application = %self.application_id,
                    store = %g.def.store,
                    topic = %g.topic,
                    "the global store's positions do not fit its topic any more; reading it again from the start"
                );
                g.store.wipe()?;
            } else if saved.is_none() && !g.store.is_empty()? {
                // Data without positions: a crash during a wipe.
                g.store.wipe()?;
            }
            g.positions.offsets = (0..n)
                .map(|p| {
                    let low = marks[p as usize].0;
                    let at = saved
                        .as_ref()
                        .filter(|_| fits)
                        .and_then(|s| s.offsets.iter().find(|(q, _)| *q == p).map(|(_, o)| *o));
                    (p, at.unwrap_or(low))
                })
                .collect();
        }
        Ok(())
    }

    /// Every (topic, partition, next offset) to read: what a consumer of
    /// the global topics is assigned at.
    pub fn assignment(&self) -> Vec<(String, i32, i64)> {
        self.globals
            .iter()
            .flat_map(|g| g.positions.offsets.iter().map(|(p, o)| (g.topic.clone(), *p, *o)))
            .collect()
    }

    /// The global topics (Kafka names).
    pub fn topics(&self) -> Vec<String> {
        let mut out: Vec<String> = self.globals.iter().map(|g| g.topic.clone()).collect();
        out.dedup();
        out
    }

    /// Apply records of `(topic, partition)` read in offset order, and move
    /// the partition's position to `next` (at least past the last record:
    /// a reader that skipped offsets, such as transaction markers or
    /// compacted records, passes where it stands). Records of other
    /// topics are ignored. One atomic batch per store.
    pub fn apply(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[GlobalRecord<'_>],
        next: Option<i64>,
    ) -> Result<(), RuntimeError> {
        for g in self.globals.iter_mut().filter(|g| g.topic == topic) {
            let Some(slot) = g.positions.offsets.iter().position(|(p, _)| *p == partition) else {
                continue;
            };
            let current = g.positions.offsets[slot].1;
            let mut batch: Vec<(&[u8], Option<&[u8]>)> = Vec::with_capacity(records.len());
            let mut to = current;
            for (offset, key, value) in records {
                if *offset < current {
                    continue; // read again after a reposition: applied already
                }
                to = offset + 1;
                match g.def.check_record(*key, *value) {
                    Ok(()) => batch.push((key.expect("checked: a key"), *value)),
                    Err(reason) => {
                        self.skipped += 1;
                        if let Some(m) = &self.metrics {
                            m.global_records_skipped.inc();
                        }
                        tracing::warn!(
                            store = %g.def.store, topic, partition, offset, %reason,
                            "global table record skipped"
                        );
                    }
                }
            }
            let to = next.map_or(to, |n| n.max(to));
            if to == current && batch.is_empty() {
                continue;
            }
            g.positions.offsets[slot].1 = to;
            g.store.apply(&batch, &g.positions)?;
            self.applied += batch.len() as u64;
            if let (Some(m), false) = (&self.metrics, batch.is_empty()) {
                m.global_records(&g.def.store, batch.len() as u64);
            }
        }
        Ok(())
    }

    /// Read every partition from its position up to `targets` ((topic,
    /// partition, end offset); partitions not named are left as they are),
    /// applying as it goes. `patience`: how long a partition may make no
    /// progress before this fails (`None`: do not wait, go on to the next
    /// partition at the first read that finds nothing, e.g. records of an
    /// open transaction); `stop` ends the read early (returns
    /// `Interrupted`). Returns the records applied.
    pub fn restore(
        &mut self,
        reader: &mut dyn RangeReader,
        targets: &[(String, i32, i64)],
        patience: Option<Duration>,
        stop: &dyn Fn() -> bool,
    ) -> Result<u64, RuntimeError> {
        let before = self.applied;
        for (topic, partition, end) in targets {
            let mut last_progress = Instant::now();
            while let Some(from) = self.position(topic, *partition).filter(|from| from < end) {
                if stop() {
                    return Err(RuntimeError::Interrupted(format!(
                        "stopped while restoring global topic {topic}/{partition}"
                    )));
                }
                let mut owned: Vec<OwnedRecord> = Vec::new();
                let progress = reader.read(topic, *partition, from, *end, BATCH, &mut |(o, k, v)| {
                    owned.push((o, k.map(<[u8]>::to_vec), v.map(<[u8]>::to_vec)));
                    Ok(())
                })?;
                let records: Vec<GlobalRecord<'_>> =
                    owned.iter().map(|(o, k, v)| (*o, k.as_deref(), v.as_deref())).collect();
                self.apply(topic, *partition, &records, Some(progress.next))?;
                if progress.next > from {
                    last_progress = Instant::now();
                }
                let Some(patience) = patience.filter(|_| !progress.done) else {
                    if progress.done || progress.next == from {
                        break;
                    }
                    continue;
                };
                if last_progress.elapsed() > patience {
                    return Err(RuntimeError::Timeout {
                        what: format!("global topic {topic}/{partition} to be readable up to offset {end} (at {from})"),
                        after: patience,
                    });
                }
            }
        }
        Ok(self.applied - before)
    }

    /// Bring every global store up to its topic's end as the transport
    /// sees it now (the in-memory cluster's catch-up, run before every
    /// poll of a [`crate::memory::Member`]), without waiting for what is
    /// not readable yet. Returns the records applied.
    pub fn catch_up(&mut self, transport: &mut dyn Transport) -> Result<u64, RuntimeError> {
        let mut targets = Vec::new();
        for (topic, partition, _) in self.assignment() {
            let (_, high) = transport.watermarks(&topic, partition)?;
            targets.push((topic, partition, high));
        }
        self.restore(transport, &targets, None, &|| false)
    }

    /// The next offset to read of `(topic, partition)`.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.globals
            .iter()
            .filter(|g| g.topic == topic)
            .flat_map(|g| g.positions.offsets.iter())
            .find(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
    }

    /// (store, reader) of every global store, for interactive queries.
    pub fn readers(&self) -> Vec<(String, StoreReader)> {
        self.globals
            .iter()
            .map(|g| (g.def.store.clone(), g.store.reader()))
            .collect()
    }

    /// Global store `name`.
    pub fn store(&self, name: &str) -> Option<&SledGlobalStore> {
        self.globals.iter().find(|g| g.def.store == name).map(|g| &g.store)
    }

    /// Records skipped because they did not decode.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Records applied so far.
    pub fn applied(&self) -> u64 {
        self.applied
    }
}
