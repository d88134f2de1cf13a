//! An in-memory cluster: topics of partitions of records, a group's
//! committed offsets, and a [`Transport`] over them that can be told to
//! crash. [`Member`] runs a [`TaskManager`] on it with a poll loop of its
//! own, so that the commit protocol, restore and repartition
//! de-duplication are tested without a broker, including crashes at
//! every step.
//!
//! A crash is what a `SIGKILL` leaves: the member's memory (tasks, write
//! caches, records sent but not delivered) is gone, the cluster keeps what
//! was delivered, and the state directory keeps what sled wrote.
//!
//! Transactions work as Kafka's: a transactional transport's records are
//! part of its open transaction until it commits (they become visible,
//! with the group offsets sent in it) or aborts (they never do). Readers
//! here are `read_committed`: they skip aborted records and stop at the
//! first record of a transaction still open. A new transport with the
//! same transactional id aborts the transaction its crashed predecessor
//! left open (Kafka's `InitProducerId` fencing).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use weir_state::StateDb;

use crate::global::GlobalUpdater;
use weir_topology::Topology;

use crate::manager::{
    decode_origin, read_repartition_value, Assignment, Guarantee, Incoming, ManagerConfig, NoListener, TaskListener,
    ORIGIN_HEADER,
};
use crate::metrics::Metrics;
use crate::partitioner::producer_partition;
use crate::plan::Plan;
use crate::transport::{Delivered, GroupOffset, Outgoing, RangeReader, ReadProgress, ReadRecord, Track, Transport};
use crate::{RuntimeError, TaskConfig, TaskManager};

/// A record stored in the in-memory cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The transaction the record was written in, if any.
    pub txn: Option<u64>,
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnState {
    Open,
    Committed,
    Aborted,
}

#[derive(Default)]
struct Data {
    topics: HashMap<String, Vec<Vec<StoredRecord>>>,
    /// The group's committed offsets: (topic, partition) → (offset, metadata).
    offsets: HashMap<(String, i32), (i64, String)>,
    /// Every transaction by number.
    txns: Vec<TxnState>,
    /// The open transaction of each transactional id.
    open_txn: HashMap<String, u64>,
    /// The epoch of each transactional id: a transport of an older one is
    /// fenced (its transaction calls fail with [`RuntimeError::Fenced`]).
    epochs: HashMap<String, u64>,
}

impl Data {
    /// Whether `r` is visible to a `read_committed` reader: `Some(true)`
    /// yes, `Some(false)` skipped (aborted), `None` not yet (its
    /// transaction is open: reading stops there).
    fn visibility(&self, r: &StoredRecord) -> Option<bool> {
        match r.txn.map(|t| self.txns[t as usize]) {
            None | Some(TxnState::Committed) => Some(true),
            Some(TxnState::Aborted) => Some(false),
            Some(TxnState::Open) => None,
        }
    }
}

/// Topics and a group's offsets, shared by the members and the test.
#[derive(Clone, Default)]
pub struct MemoryCluster {
    data: Arc<Mutex<Data>>,
}

impl MemoryCluster {
    pub fn new() -> MemoryCluster {
        MemoryCluster::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().expect("cluster lock")
    }

    /// Create `topic` with `partitions` partitions (no-op if it exists).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.lock()
            .topics
            .entry(topic.to_string())
            .or_insert_with(|| vec![Vec::new(); partitions.max(1) as usize]);
    }

    /// The partition count of `topic`, if it exists.
    pub fn partitions(&self, topic: &str) -> Option<i32> {
        self.lock().topics.get(topic).map(|p| p.len() as i32)
    }

    /// Append a record (as a foreign producer would); returns its offset.
    pub fn produce(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> i64 {
        let mut data = self.lock();
        let log = &mut data.topics.get_mut(topic).expect("topic exists")[partition as usize];
        log.push(StoredRecord {
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            timestamp,
            headers: Vec::new(),
            txn: None,
        });
        log.len() as i64 - 1
    }

    /// [`produce`](Self::produce) a record with headers.
    pub fn produce_with_headers(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[(&str, &[u8])],
    ) -> i64 {
        let offset = self.produce(topic, partition, key, value, timestamp);
        let mut data = self.lock();
        let log = &mut data.topics.get_mut(topic).expect("topic exists")[partition as usize];
        log[offset as usize].headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
        offset
    }

    /// Every record of a partition.
    pub fn records(&self, topic: &str, partition: i32) -> Vec<StoredRecord> {
        self.lock()
            .topics
            .get(topic)
            .and_then(|p| p.get(partition as usize))
            .cloned()
            .unwrap_or_default()
    }

    /// What a `read_committed` reader gets from offset `from` on, at most
    /// `max` records: (offset, record) pairs, and the position after them
    /// (past skipped aborted records; at the first record of an open
    /// transaction if it met one).
    pub fn committed_from(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        max: usize,
    ) -> (Vec<(i64, StoredRecord)>, i64) {
        let data = self.lock();
        let Some(log) = data.topics.get(topic).and_then(|p| p.get(partition as usize)) else {
            return (Vec::new(), from);
        };
        let mut out = Vec::new();
        let mut next = from.max(0);
        while (next as usize) < log.len() && out.len() < max {
            let r = &log[next as usize];
            match data.visibility(r) {
                Some(true) => out.push((next, r.clone())),
                Some(false) => {}
                None => break,
            }
            next += 1;
        }
        (out, next)
    }

    /// Every record of `topic` a `read_committed` reader sees, partition by
    /// partition.
    pub fn committed_records(&self, topic: &str) -> Vec<StoredRecord> {
        let n = self.partitions(topic).unwrap_or(0);
        (0..n)
            .flat_map(|p| {
                self.committed_from(topic, p, 0, usize::MAX)
                    .0
                    .into_iter()
                    .map(|(_, r)| r)
            })
            .collect()
    }

    /// The number of records in a partition (its high watermark).
    pub fn end_offset(&self, topic: &str, partition: i32) -> i64 {
        self.lock()
            .topics
            .get(topic)
            .and_then(|p| p.get(partition as usize))
            .map_or(0, |l| l.len() as i64)
    }

    /// Every record of every partition of `topic`, partition by partition.
    pub fn all_records(&self, topic: &str) -> Vec<StoredRecord> {
        self.lock().topics.get(topic).map(|p| p.concat()).unwrap_or_default()
    }

    /// Create every topic `plan` needs (its external topics must exist).
    pub fn create_internal_topics(&self, plan: &Plan) {
        for t in plan.internal_topics() {
            self.create_topic(&t.name, t.partitions);
        }
    }

    /// A transport of a new member process.
    pub fn transport(&self) -> MemoryTransport {
        MemoryTransport {
            cluster: self.clone(),
            pending: Vec::new(),
            operations: 0,
            crash_at: None,
            crashed: false,
            fail_at: None,
            transactional_id: None,
            epoch: 0,
            txn: None,
        }
    }

    /// A transactional transport of a new member process: the transaction
    /// a predecessor with the same `id` left open is aborted (fenced).
    pub fn transactional_transport(&self, id: &str) -> MemoryTransport {
        let epoch = {
            let mut data = self.lock();
            if let Some(t) = data.open_txn.remove(id) {
                data.txns[t as usize] = TxnState::Aborted;
            }
            let epoch = data.epochs.entry(id.to_string()).or_insert(0);
            *epoch += 1;
            *epoch
        };
        MemoryTransport {
            transactional_id: Some(id.to_string()),
            epoch,
            ..self.transport()
        }
    }
}

/// A [`Transport`] over a [`MemoryCluster`]. Sent records wait in the
/// transport until [`flush`](Transport::flush) delivers them.
pub struct MemoryTransport {
    cluster: MemoryCluster,
    pending: Vec<(String, i32, StoredRecord, Track)>,
    operations: u64,
    crash_at: Option<u64>,
    crashed: bool,
    fail_at: Option<u64>,
    transactional_id: Option<String>,
    /// The epoch of its transactional id it was created with.
    epoch: u64,
    /// The open transaction.
    txn: Option<u64>,
}

impl MemoryTransport {
    /// Crash at operation `n` (counting from 1: every send, flush, read,
    /// watermark question and offset call is one): it fails, the records
    /// still pending are lost (a crash inside a flush delivers the first
    /// half of them first, as a process killed mid-flush leaves some
    /// delivered), and every later operation fails too.
    pub fn crash_at(&mut self, n: u64) {
        self.crash_at = Some(n);
    }

    /// Fail operation `n` (counted as for [`crash_at`](Self::crash_at)),
    /// once, as a broker that refuses a request does: the records still
    /// pending are lost (a failed flush delivers the first half of them
    /// first), and the transport works on.
    pub fn fail_at(&mut self, n: u64) {
        self.fail_at = Some(n);
    }

    /// Operations so far (to enumerate crash points).
    pub fn operations(&self) -> u64 {
        self.operations
    }

    /// Whether the injected crash happened.
    pub fn crashed(&self) -> bool {
        self.crashed
    }

    /// Counts an operation; fails it if it is (or comes after) the crash.
    fn operation(&mut self, what: &str) -> Result<(), RuntimeError> {
        if self.crashed {
            return Err(RuntimeError::Transport(format!("{what}: the member has crashed")));
        }
        self.operations += 1;
        let crash = self.crash_at == Some(self.operations);
        if crash || self.fail_at == Some(self.operations) {
            self.crashed = crash;
            if what == "flush" {
                let half = self.pending.len() / 2;
                let delivered: Vec<_> = self.pending.drain(..half).collect();
                self.deliver(delivered);
            }
            self.pending.clear();
            let kind = if crash { "crash" } else { "failure" };
            return Err(RuntimeError::Transport(format!(
                "{what}: injected {kind} at operation {}",
                self.operations
            )));
        }
        Ok(())
    }

    /// Fails with [`RuntimeError::Fenced`] if a newer transport took this
    /// one's transactional id (a zombie).
    fn check_epoch(&self, what: &str) -> Result<(), RuntimeError> {
        let Some(id) = &self.transactional_id else {
            return Ok(());
        };
        if self.cluster.lock().epochs.get(id) == Some(&self.epoch) {
            Ok(())
        } else {
            Err(RuntimeError::Fenced(format!(
                "{what}: transactional id {id:?} belongs to a newer member"
            )))
        }
    }

    fn deliver(&mut self, records: Vec<(String, i32, StoredRecord, Track)>) -> Delivered {
        let mut out = Delivered::default();
        let mut data = self.cluster.lock();
        for (topic, partition, record, track) in records {
            let log = &mut data.topics.get_mut(&topic).expect("topic checked at send")[partition as usize];
            log.push(record);
            let offset = log.len() as i64 - 1;
            match track {
                Track::Quiet => {}
                Track::Changelog => {
                    let end = out.changelog_ends.entry((topic, partition)).or_insert(0);
                    *end = (*end).max(offset + 1);
                }
                Track::Checkpoint(id) => {
                    out.checkpoints.insert(id, offset);
                }
            }
        }
        out
    }
}

impl RangeReader for MemoryTransport {
    fn read(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        max: usize,
        f: &mut dyn FnMut(ReadRecord<'_>) -> Result<(), RuntimeError>,
    ) -> Result<ReadProgress, RuntimeError> {
        self.operation("read")?;
        let end = to.min(self.cluster.end_offset(topic, partition));
        let from = from.max(0);
        let wanted = ((end - from).max(0) as usize).min(max);
        let (records, mut next) = self.cluster.committed_from(topic, partition, from, wanted);
        for (offset, r) in &records {
            if *offset >= end {
                break;
            }
            f((*offset, r.key.as_deref(), r.value.as_deref()))?;
        }
        next = next.min(end);
        Ok(ReadProgress {
            next,
            done: next >= end,
        })
    }
}

impl Transport for MemoryTransport {
    fn send(&mut self, r: Outgoing<'_>) -> Result<(), RuntimeError> {
        self.operation("send")?;
        let partitions = self.cluster.partitions(r.topic);
        let r = Outgoing {
            partition: producer_partition(r.partition, r.key, partitions.unwrap_or(0)),
            ..r
        };
        if !partitions.is_some_and(|n| (0..n).contains(&r.partition)) {
            return Err(RuntimeError::Transport(format!(
                "producing to {}/{}: no such partition",
                r.topic, r.partition
            )));
        }
        let record = StoredRecord {
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            timestamp: r.timestamp,
            headers: r.headers.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect(),
            txn: self.txn,
        };
        self.pending.push((r.topic.to_string(), r.partition, record, r.track));
        Ok(())
    }

    fn flush(&mut self) -> Result<Delivered, RuntimeError> {
        self.operation("flush")?;
        let pending = std::mem::take(&mut self.pending);
        Ok(self.deliver(pending))
    }

    /// Delivers what is pending, as a Kafka producer does in the
    /// background (not an operation: a crash cannot be injected here, but
    /// records delivered this way are there after one).
    fn tick(&mut self) {
        if !self.crashed {
            let pending = std::mem::take(&mut self.pending);
            self.deliver(pending);
        }
    }

    fn watermarks(&mut self, topic: &str, partition: i32) -> Result<(i64, i64), RuntimeError> {
        self.operation("watermarks")?;
        Ok((0, self.cluster.end_offset(topic, partition)))
    }

    fn cached_high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        Some(self.cluster.end_offset(topic, partition))
    }

    fn committed(&mut self, partitions: &[(String, i32)]) -> Result<Vec<GroupOffset>, RuntimeError> {
        self.operation("committed")?;
        let data = self.cluster.lock();
        Ok(partitions
            .iter()
            .map(|(topic, partition)| {
                let found = data.offsets.get(&(topic.clone(), *partition));
                GroupOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: found.map(|(o, _)| *o),
                    metadata: found.map(|(_, m)| m.clone()).unwrap_or_default(),
                }
            })
            .collect())
    }

    fn begin_transaction(&mut self) -> Result<(), RuntimeError> {
        self.operation("begin transaction")?;
        self.check_epoch("begin transaction")?;
        let Some(id) = self.transactional_id.clone() else {
            return Err(RuntimeError::Transport(
                "begin transaction: not a transactional transport".into(),
            ));
        };
        let mut data = self.cluster.lock();
        let n = data.txns.len() as u64;
        data.txns.push(TxnState::Open);
        data.open_txn.insert(id, n);
        self.txn = Some(n);
        Ok(())
    }

    fn commit_transaction(&mut self, offsets: &[GroupOffset]) -> Result<(), RuntimeError> {
        self.operation("commit transaction")?;
        self.check_epoch("commit transaction")?;
        let Some(t) = self.txn.take() else {
            return Err(RuntimeError::Transport("commit transaction: none is open".into()));
        };
        let pending = std::mem::take(&mut self.pending);
        self.deliver(pending);
        let mut data = self.cluster.lock();
        for o in offsets {
            if let Some(offset) = o.offset {
                data.offsets
                    .insert((o.topic.clone(), o.partition), (offset, o.metadata.clone()));
            }
        }
        data.txns[t as usize] = TxnState::Committed;
        if let Some(id) = &self.transactional_id {
            data.open_txn.remove(id);
        }
        Ok(())
    }

    fn abort_transaction(&mut self) -> Result<(), RuntimeError> {
        self.operation("abort transaction")?;
        self.check_epoch("abort transaction")?;
        self.pending.clear();
        if let Some(t) = self.txn.take() {
            let mut data = self.cluster.lock();
            data.txns[t as usize] = TxnState::Aborted;
            if let Some(id) = &self.transactional_id {
                data.open_txn.remove(id);
            }
        }
        Ok(())
    }

    fn commit_offsets(&mut self, offsets: &[GroupOffset], _wait: bool) -> Result<(), RuntimeError> {
        self.operation("commit offsets")?;
        let mut data = self.cluster.lock();
        for o in offsets {
            if let Some(offset) = o.offset {
                data.offsets
                    .insert((o.topic.clone(), o.partition), (offset, o.metadata.clone()));
            }
        }
        Ok(())
    }
}

/// One member of an application on a [`MemoryCluster`] that owns every
/// task: a [`TaskManager`], its transport, and a poll loop reading the
/// assigned partitions in turn.
pub struct Member {
    pub manager: TaskManager,
    pub transport: MemoryTransport,
    cluster: MemoryCluster,
    /// Next offset to read per (topic index, partition).
    positions: BTreeMap<(u32, i32), i64>,
    paused: Vec<(u32, i32)>,
    /// Changelog records per restore step.
    restore_budget: usize,
    /// The member's global stores and the transport their updater reads
    /// with (its own: it is not part of the commit protocol), if the
    /// topology has any.
    global: Option<(GlobalUpdater, MemoryTransport)>,
}

impl Member {
    /// A member process of `application_id` with its state in `db`; the
    /// topology's external topics must exist in `cluster`, the internal
    /// ones are created.
    pub fn new(
        cluster: &MemoryCluster,
        topology: &Topology,
        application_id: &str,
        db: Arc<StateDb>,
        task_config: TaskConfig,
        listener: Option<Box<dyn TaskListener>>,
    ) -> Result<Member, RuntimeError> {
        Member::with_cluster_lifetime(cluster, topology, application_id, db, task_config, listener, true)
    }

    /// [`Member::new`] for a cluster that does not keep its data between
    /// runs when `cluster_keeps_data` is false (the test driver's): the
    /// local state is then trusted as it is (see
    /// [`ManagerConfig::cluster_keeps_data`]).
    pub fn with_cluster_lifetime(
        cluster: &MemoryCluster,
        topology: &Topology,
        application_id: &str,
        db: Arc<StateDb>,
        task_config: TaskConfig,
        listener: Option<Box<dyn TaskListener>>,
        cluster_keeps_data: bool,
    ) -> Result<Member, RuntimeError> {
        Member::build(
            cluster,
            topology,
            application_id,
            db,
            task_config,
            listener,
            cluster_keeps_data,
            Guarantee::AtLeastOnce,
        )
    }

    /// [`Member::new`] with exactly-once commits: its transport is
    /// transactional (id `{application_id}-member`, so a member started
    /// after a crash aborts the transaction its predecessor left open).
    pub fn exactly_once(
        cluster: &MemoryCluster,
        topology: &Topology,
        application_id: &str,
        db: Arc<StateDb>,
        task_config: TaskConfig,
    ) -> Result<Member, RuntimeError> {
        Member::build(
            cluster,
            topology,
            application_id,
            db,
            task_config,
            None,
            true,
            Guarantee::ExactlyOnce,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        cluster: &MemoryCluster,
        topology: &Topology,
        application_id: &str,
        db: Arc<StateDb>,
        task_config: TaskConfig,
        listener: Option<Box<dyn TaskListener>>,
        cluster_keeps_data: bool,
        guarantee: Guarantee,
    ) -> Result<Member, RuntimeError> {
        let plan = Plan::new(topology, application_id, &|name| cluster.partitions(name))?;
        cluster.create_internal_topics(&plan);
        let mut global = GlobalUpdater::new(topology, application_id, &db)?;
        let global = if global.is_empty() {
            None
        } else {
            let mut reader = cluster.transport();
            global.init(
                &|name| cluster.partitions(name),
                &mut |t, p| reader.watermarks(t, p),
                cluster_keeps_data,
            )?;
            Some((global, reader))
        };
        let metrics = Metrics::new().topology(application_id);
        let manager = TaskManager::new(
            ManagerConfig {
                topology: topology.clone(),
                plan: Arc::new(plan),
                db,
                task_config,
                metrics,
                max_record_bytes: 1024 * 1024,
                name: format!("{application_id}-member"),
                cluster_keeps_data,
                guarantee,
            },
            listener.unwrap_or_else(|| Box::new(NoListener)),
        );
        let transport = match guarantee {
            Guarantee::AtLeastOnce => cluster.transport(),
            Guarantee::ExactlyOnce => cluster.transactional_transport(&format!("{application_id}-member")),
        };
        Ok(Member {
            manager,
            transport,
            cluster: cluster.clone(),
            positions: BTreeMap::new(),
            paused: Vec::new(),
            restore_budget: 1000,
            global,
        })
    }

    /// Take every partition of every source topic.
    pub fn assign_all(&mut self) -> Result<(), RuntimeError> {
        let plan = self.manager.plan().clone();
        let mut partitions = Vec::new();
        for (topic, reader) in plan.reader.iter().enumerate() {
            if reader.is_some() {
                for p in 0..plan.topic_partitions[topic] {
                    partitions.push((topic as u32, p));
                }
            }
        }
        let a = self.manager.assign(&mut self.transport, &partitions)?;
        self.go_on_from(&partitions, a)
    }

    /// Exactly-once, after a failed operation: back to the last committed
    /// transaction ([`TaskManager::recover`]), reading on from there.
    pub fn recover(&mut self) -> Result<(), RuntimeError> {
        let partitions: Vec<(u32, i32)> = self.positions.keys().copied().collect();
        let a = self.manager.recover(&mut self.transport)?;
        self.go_on_from(&partitions, a)
    }

    /// Positions the member's reading of `partitions` as assignment `a`
    /// says, or at the group's offsets.
    fn go_on_from(&mut self, partitions: &[(u32, i32)], a: Assignment) -> Result<(), RuntimeError> {
        let plan = self.manager.plan().clone();
        let committed: Vec<(String, i32)> = partitions
            .iter()
            .map(|(t, p)| (plan.topic_names[*t as usize].clone(), *p))
            .collect();
        let group = self.transport.committed(&committed)?;
        self.positions.clear();
        for ((t, p), g) in partitions.iter().zip(group) {
            let named = a
                .positions
                .iter()
                .find(|(tt, pp, _)| tt == t && pp == p)
                .map(|(_, _, o)| *o);
            self.positions.insert((*t, *p), named.or(g.offset).unwrap_or(0));
        }
        self.paused = a.paused;
        Ok(())
    }

    /// Give every partition up (the revoke of a rebalance).
    pub fn revoke_all(&mut self) -> Result<(), RuntimeError> {
        self.positions.clear();
        self.paused.clear();
        self.manager.revoke(&mut self.transport)
    }

    /// One turn of the poll loop: a restore step if a task restores, up to
    /// `max` records from the unpaused partitions, punctuation at
    /// wall-clock `now`; then a commit if `commit` says so or a task asks
    /// for one. Returns the records processed.
    pub fn poll(&mut self, max: usize, now: i64, commit: bool) -> Result<usize, RuntimeError> {
        // Global stores first: restored before any task processes, and a
        // table update is visible to every stream record read after it.
        if let Some((global, reader)) = &mut self.global {
            global.catch_up(reader)?;
        }
        if self.manager.is_restoring() {
            for r in self.manager.restore_step(&mut self.transport, self.restore_budget)? {
                self.paused.retain(|p| *p != (r.topic, r.partition));
                if let Some(o) = r.offset {
                    self.positions.insert((r.topic, r.partition), o);
                }
            }
        }
        let plan = self.manager.plan().clone();
        self.manager.set_wall_clock(now);
        let mut n = 0;
        let keys: Vec<(u32, i32)> = self.positions.keys().copied().collect();
        for (topic, partition) in keys {
            if n >= max {
                break;
            }
            if self.paused.contains(&(topic, partition)) {
                continue;
            }
            let name = &plan.topic_names[topic as usize];
            let at = self.positions[&(topic, partition)];
            let (records, next) = self.cluster.committed_from(name, partition, at, max - n);
            self.positions.insert((topic, partition), next);
            for (offset, r) in &records {
                let offset = *offset as usize;
                let headers: Vec<(&str, &[u8])> = r.headers.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
                // A repartition record's origin and value are in its
                // envelope (an older weir's, in a header and the value).
                let (origin, value) = if plan.internal[topic as usize] {
                    let header = r.headers.iter().find(|(k, _)| k == ORIGIN_HEADER);
                    read_repartition_value(r.value.as_deref(), header.and_then(|(_, v)| decode_origin(v)))
                } else {
                    (None, r.value.as_deref())
                };
                self.manager.process(
                    &mut self.transport,
                    Incoming {
                        topic,
                        partition,
                        offset: offset as i64,
                        timestamp: r.timestamp,
                        key: r.key.as_deref(),
                        value,
                        origin,
                        headers: &headers,
                    },
                )?;
                n += 1;
            }
        }
        self.manager.punctuate(&mut self.transport, now)?;
        if commit || self.manager.wants_commit() {
            self.manager.commit(&mut self.transport, false)?;
        }
        Ok(n)
    }

    /// Poll (committing every `commit_every` records) until nothing is left
    /// to read or restore, then commit.
    pub fn run_until_idle(&mut self, commit_every: usize, now: i64) -> Result<(), RuntimeError> {
        loop {
            let n = self.poll(commit_every, now, true)?;
            if n == 0 && !self.manager.is_restoring() {
                return Ok(());
            }
        }
    }

    /// The member's global stores, if the topology has any.
    pub fn global(&self) -> Option<&GlobalUpdater> {
        self.global.as_ref().map(|(g, _)| g)
    }

    /// Changelog records each poll restores (1000 by default).
    pub fn set_restore_budget(&mut self, records: usize) {
        self.restore_budget = records.max(1);
    }
}
