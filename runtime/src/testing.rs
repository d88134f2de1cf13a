//! `TopologyTestDriver`: run a topology synchronously, in-process, with no
//! broker, a controllable wall clock, typed input and output topics, and
//! access to the state stores.
//!
//! It runs the same [`TaskManager`](crate::TaskManager) as the Kafka
//! stream threads (and so the same processor code, sled stores, commit
//! protocol and repartition de-duplication), on an in-memory cluster where
//! every topic has one partition. After each piped record the driver
//! commits, the way Kafka Streams' test driver does, so cached aggregates
//! are forwarded at once; records written to internal (repartition) topics
//! are fed to the sub-topology reading them before `pipe_input` returns.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Bound;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use weir_state::StateDb;
use weir_topology::store::ChangelogRecord;
use weir_topology::{Serde, StoreRef, Topology};

use crate::memory::{Member, MemoryCluster};
use crate::plan::Plan;
use crate::task::TaskConfig;
use crate::RuntimeError;

/// Settings of a test driver.
#[derive(Debug, Clone)]
pub struct TestDriverConfig {
    /// Prefix of internal topics, changelogs and the dead-letter topic.
    pub application_id: String,
    /// Per-store write cache limit (the driver commits after every record
    /// anyway, so this only matters for tests of the cache itself).
    pub cache_max_bytes: usize,
    /// The wall clock's start, epoch ms.
    pub initial_wall_clock_ms: i64,
    /// Advance stream time with the wall clock on idle tasks after this long
    /// (see [`TaskConfig::idle_advance_after_ms`]).
    pub idle_advance_after_ms: Option<i64>,
    /// Keep state here instead of a fresh temporary directory (to test
    /// reopening state).
    pub state_dir: Option<PathBuf>,
}

impl Default for TestDriverConfig {
    fn default() -> Self {
        TestDriverConfig {
            application_id: "test".to_string(),
            cache_max_bytes: 1024 * 1024,
            initial_wall_clock_ms: 0,
            idle_advance_after_ms: None,
            state_dir: None,
        }
    }
}

impl TestDriverConfig {
    pub fn with_application_id(application_id: &str) -> Self {
        TestDriverConfig {
            application_id: application_id.to_string(),
            ..Default::default()
        }
    }
}

/// A record as written to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
    pub offset: i64,
}

/// A record of the dead-letter topic `{application_id}-dlq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRecord {
    pub error: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// A typed record read from an output topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord<K, V> {
    pub key: K,
    pub value: V,
    pub timestamp: i64,
}

struct Inner {
    topology: Topology,
    config: TestDriverConfig,
    // Dropped after the member (field order): its tasks close first.
    member: Member,
    cluster: MemoryCluster,
    db: Arc<StateDb>,
    _tmp: Option<tempfile::TempDir>,
    /// Read position of each output topic handle, by topic name.
    read_positions: HashMap<String, usize>,
    wall_clock_ms: i64,
}

/// Runs a topology in-process; see the module docs.
pub struct TopologyTestDriver {
    inner: Rc<RefCell<Inner>>,
}

impl TopologyTestDriver {
    /// A driver for `topology` with state in a fresh temporary directory.
    pub fn new(topology: Topology, config: TestDriverConfig) -> Result<Self, RuntimeError> {
        let (tmp, dir) = match &config.state_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::tempdir().map_err(|e| RuntimeError::Io(format!("temporary state dir: {e}")))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let db = Arc::new(StateDb::open(&dir)?);
        let task_config = TaskConfig {
            cache_max_bytes: config.cache_max_bytes,
            idle_advance_after_ms: config.idle_advance_after_ms,
        };
        // Every topic has one partition.
        let cluster = MemoryCluster::new();
        for (i, t) in topology.topics().iter().enumerate() {
            if !t.internal {
                cluster.create_topic(&topology.topic_name(i as u32, &config.application_id), 1);
            }
        }
        // The cluster lives as long as the driver, the state directory may
        // be reused: local state is all there is.
        let mut member = Member::with_cluster_lifetime(
            &cluster,
            &topology,
            &config.application_id,
            db.clone(),
            task_config,
            None,
            false,
        )?;
        member.assign_all()?;
        let wall = config.initial_wall_clock_ms;
        member.manager.set_wall_clock(wall);
        Ok(TopologyTestDriver {
            inner: Rc::new(RefCell::new(Inner {
                topology,
                config,
                member,
                cluster,
                db,
                _tmp: tmp,
                read_positions: HashMap::new(),
                wall_clock_ms: wall,
            })),
        })
    }

    /// A typed handle for piping records into `topic`.
    pub fn input_topic<K: 'static, V: 'static>(
        &self,
        topic: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
    ) -> TestInputTopic<K, V> {
        TestInputTopic {
            inner: self.inner.clone(),
            topic: topic.to_string(),
            key_serde,
            value_serde,
        }
    }

    /// A typed handle for reading what the topology wrote to `topic`.
    pub fn output_topic<K: 'static, V: 'static>(
        &self,
        topic: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
    ) -> TestOutputTopic<K, V> {
        TestOutputTopic {
            inner: self.inner.clone(),
            topic: topic.to_string(),
            key_serde,
            value_serde,
        }
    }

    /// Pipe one raw record (bytes as a foreign producer would send them).
    pub fn pipe_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<(), RuntimeError> {
        self.inner.borrow_mut().pipe(topic, key, value, timestamp)
    }

    /// Move the wall clock forward and run wall-clock punctuation.
    pub fn advance_wall_clock(&self, by: Duration) -> Result<(), RuntimeError> {
        let mut inner = self.inner.borrow_mut();
        inner.wall_clock_ms += by.as_millis() as i64;
        inner.settle()
    }

    /// The task's instance of store `name` (all stores live in one task per
    /// sub-topology here, partition 0).
    pub fn store(&self, name: &str) -> Option<StoreRef> {
        let inner = self.inner.borrow();
        inner
            .member
            .manager
            .running()
            .values()
            .flat_map(|t| t.stores().iter())
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    }

    /// Typed reads of a key-value store: a task's, or a global store (a
    /// `GlobalKTable`'s).
    pub fn key_value_store<K: 'static, V: 'static>(
        &self,
        name: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
    ) -> Result<TestKeyValueStore<K, V>, RuntimeError> {
        let store = match self.store(name) {
            Some(StoreRef::KeyValue(store)) => KvSource::Task(store),
            Some(StoreRef::Versioned(store)) => KvSource::Task(store),
            Some(StoreRef::Window(_)) => return Err(RuntimeError::UnknownStore(name.to_string())),
            None => {
                let inner = self.inner.borrow();
                let global = inner.member.global().and_then(|g| g.store(name)).cloned();
                KvSource::Global(global.ok_or_else(|| RuntimeError::UnknownStore(name.to_string()))?)
            }
        };
        Ok(TestKeyValueStore {
            store,
            key_serde,
            value_serde,
        })
    }

    /// Typed reads of a versioned store, as of any time.
    pub fn versioned_store<K: 'static, V: 'static>(
        &self,
        name: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
    ) -> Result<TestVersionedStore<K, V>, RuntimeError> {
        match self.store(name) {
            Some(StoreRef::Versioned(store)) => Ok(TestVersionedStore {
                store,
                key_serde,
                value_serde,
            }),
            _ => Err(RuntimeError::UnknownStore(name.to_string())),
        }
    }

    /// Typed reads of a window store.
    pub fn window_store<K: 'static, V: 'static>(
        &self,
        name: &str,
        key_serde: Serde<K>,
        value_serde: Serde<V>,
    ) -> Result<TestWindowStore<K, V>, RuntimeError> {
        match self.store(name) {
            Some(StoreRef::Window(store)) => Ok(TestWindowStore {
                store,
                key_serde,
                value_serde,
                _marker: PhantomData,
            }),
            _ => Err(RuntimeError::UnknownStore(name.to_string())),
        }
    }

    /// Records sent to the dead-letter topic so far.
    pub fn dead_letters(&self) -> Vec<DeadLetterRecord> {
        let inner = self.inner.borrow();
        inner
            .cluster
            .all_records(&inner.member.manager.plan().dlq_topic)
            .into_iter()
            .map(|r| {
                let header = |name: &str| -> String {
                    r.headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                DeadLetterRecord {
                    error: header("error"),
                    topic: header("topic"),
                    partition: header("partition").parse().unwrap_or(-1),
                    offset: header("offset").parse().unwrap_or(-1),
                    key: r.key.clone(),
                    value: r.value.clone(),
                }
            })
            .collect()
    }

    /// The number of records dropped because their windows had closed.
    pub fn late_records_dropped(&self) -> u64 {
        self.inner
            .borrow()
            .member
            .manager
            .config()
            .metrics
            .late_records_dropped
            .get()
    }

    /// The number of records joins ignored because their key or value was
    /// null (`TaskCounters::null_records_skipped`).
    pub fn null_records_skipped(&self) -> u64 {
        self.inner
            .borrow()
            .member
            .manager
            .config()
            .metrics
            .null_records_skipped
            .get()
    }

    /// Everything written to a topic (input, output or internal), as the
    /// topology's serdes wrote it: a repartition record's value is shown
    /// without the envelope that carries weir's origin
    /// ([`crate::manager::wrap_repartition_value`]).
    pub fn topic_records(&self, topic: &str) -> Vec<RawRecord> {
        self.inner.borrow().raw_records(topic)
    }

    /// The changelog records written for a store so far.
    pub fn changelog(&self, store: &str) -> Vec<ChangelogRecord> {
        let inner = self.inner.borrow();
        let topic = Topology::changelog_topic(&inner.config.application_id, store);
        inner
            .cluster
            .all_records(&topic)
            .into_iter()
            .filter_map(|r| {
                Some(ChangelogRecord {
                    key: r.key?,
                    value: r.value,
                })
            })
            .collect()
    }

    /// The name of the dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        Plan::dlq_topic_of(&self.inner.borrow().config.application_id)
    }

    /// Write state to disk (for tests that reopen a state directory).
    pub fn flush_state_to_disk(&self) -> Result<(), RuntimeError> {
        Ok(self.inner.borrow().db.flush_to_disk()?)
    }
}

impl Drop for TopologyTestDriver {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            inner.member.manager.close_all();
        }
    }
}

impl Inner {
    /// Append a record to `topic` and run every task that reads it, then
    /// everything those tasks' outputs feed, until nothing is pending.
    fn pipe(&mut self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, ts: i64) -> Result<(), RuntimeError> {
        let app = self.config.application_id.clone();
        if self.topology.topic_index(topic, &app).is_none() {
            self.cluster.create_topic(topic, 1);
            self.cluster.produce(topic, 0, key, value, ts);
            return Err(RuntimeError::UnknownTopic(topic.to_string()));
        }
        self.cluster.produce(topic, 0, key, value, ts);
        self.settle()
    }

    /// Run the member a record at a time, committing after each (so cached
    /// results are forwarded at once, as in Kafka Streams' test driver),
    /// until nothing is left to read.
    fn settle(&mut self) -> Result<(), RuntimeError> {
        let now = self.wall_clock_ms;
        while self.member.poll(1, now, true)? > 0 {}
        Ok(())
    }

    fn raw_records(&self, topic: &str) -> Vec<RawRecord> {
        let plan = self.member.manager.plan();
        let repartition = plan.by_name.get(topic).is_some_and(|&t| plan.internal[t as usize]);
        self.cluster
            .all_records(topic)
            .into_iter()
            .enumerate()
            .map(|(i, r)| RawRecord {
                value: if repartition {
                    crate::manager::read_repartition_value(r.value.as_deref(), None)
                        .1
                        .map(<[u8]>::to_vec)
                } else {
                    r.value
                },
                key: r.key,
                timestamp: r.timestamp,
                offset: i as i64,
            })
            .collect()
    }
}

/// Pipes typed records into one topic of a driver.
pub struct TestInputTopic<K, V> {
    inner: Rc<RefCell<Inner>>,
    topic: String,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
}

impl<K: 'static, V: 'static> TestInputTopic<K, V> {
    /// Send one record with the given event timestamp (epoch ms). A key or
    /// value the serde calls null (`Serdes::optional`'s `None`) is sent as
    /// a Kafka null.
    pub fn pipe_input(&self, key: K, value: V, timestamp: i64) -> Result<(), RuntimeError> {
        let k = self
            .key_serde
            .to_bytes_opt(&key)
            .map_err(|e| RuntimeError::Io(format!("test input key: {e}")))?;
        let v = self
            .value_serde
            .to_bytes_opt(&value)
            .map_err(|e| RuntimeError::Io(format!("test input value: {e}")))?;
        self.inner
            .borrow_mut()
            .pipe(&self.topic, k.as_deref(), v.as_deref(), timestamp)
    }

    /// Send a record with no key.
    pub fn pipe_value(&self, value: V, timestamp: i64) -> Result<(), RuntimeError> {
        let v = self
            .value_serde
            .to_bytes_opt(&value)
            .map_err(|e| RuntimeError::Io(format!("test input value: {e}")))?;
        self.inner.borrow_mut().pipe(&self.topic, None, v.as_deref(), timestamp)
    }
}

/// Reads typed records from one topic of a driver. As in Kafka Streams'
/// test driver, reading consumes: the records of a topic are read once, in
/// order, whichever handle reads them (two handles on one topic share the
/// position).
pub struct TestOutputTopic<K, V> {
    inner: Rc<RefCell<Inner>>,
    topic: String,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
}

impl<K: 'static, V: 'static> TestOutputTopic<K, V> {
    /// Every record written since the last read. Panics (this is test code)
    /// if a record does not decode with the handle's serdes.
    pub fn read_records(&self) -> Vec<TestRecord<K, V>> {
        let mut inner = self.inner.borrow_mut();
        let pos = inner.read_positions.get(&self.topic).copied().unwrap_or(0);
        let all = inner.raw_records(&self.topic);
        let records: Vec<RawRecord> = all[pos.min(all.len())..].to_vec();
        inner.read_positions.insert(self.topic.clone(), pos + records.len());
        records
            .into_iter()
            .map(|r| TestRecord {
                key: self
                    .key_serde
                    .deserialize_opt(r.key.as_deref())
                    .unwrap_or_else(|e| panic!("{}: key at offset {} does not decode: {e}", self.topic, r.offset)),
                value: self
                    .value_serde
                    .deserialize_opt(r.value.as_deref())
                    .unwrap_or_else(|e| panic!("{}: value at offset {} does not decode: {e}", self.topic, r.offset)),
                timestamp: r.timestamp,
            })
            .collect()
    }

    /// Like [`read_records`](Self::read_records), as (key, value) pairs.
    pub fn read_key_values(&self) -> Vec<(K, V)> {
        self.read_records().into_iter().map(|r| (r.key, r.value)).collect()
    }

    /// Every value written since the last read.
    pub fn read_values(&self) -> Vec<V> {
        self.read_records().into_iter().map(|r| r.value).collect()
    }

    pub fn is_empty(&self) -> bool {
        let inner = self.inner.borrow();
        let pos = inner.read_positions.get(&self.topic).copied().unwrap_or(0);
        inner.cluster.end_offset(&self.topic, 0) as usize <= pos
    }
}

/// Where a [`TestKeyValueStore`] reads: a task's store or a global one.
enum KvSource {
    Task(weir_topology::store::KvStoreRef),
    Global(weir_state::SledGlobalStore),
}

/// Typed reads of a key-value store of a driver.
pub struct TestKeyValueStore<K, V> {
    store: KvSource,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
}

impl<K: 'static, V: 'static> TestKeyValueStore<K, V> {
    pub fn get(&self, key: &K) -> Option<V> {
        use weir_topology::store::GlobalStore as _;
        let k = self.key_serde.to_bytes(key).expect("key serializes");
        let found = match &self.store {
            KvSource::Task(s) => s.borrow_mut().get(&k).expect("store read"),
            KvSource::Global(s) => {
                let mut out = Vec::new();
                s.get_into(&k, &mut out).expect("store read").then_some(out)
            }
        };
        found.map(|v| self.value_serde.deserialize(&v).expect("stored value decodes"))
    }

    /// Every entry, in key byte order.
    pub fn all(&self) -> Vec<(K, V)> {
        use weir_topology::store::GlobalStore as _;
        let entries = match &self.store {
            KvSource::Task(s) => s.borrow_mut().range(Bound::Unbounded, Bound::Unbounded),
            KvSource::Global(s) => s.range(Bound::Unbounded, Bound::Unbounded),
        };
        entries
            .expect("store read")
            .into_iter()
            .map(|(k, v)| {
                (
                    self.key_serde.deserialize(&k).expect("stored key decodes"),
                    self.value_serde.deserialize(&v).expect("stored value decodes"),
                )
            })
            .collect()
    }
}

/// Typed reads of a versioned store of a driver (a table materialized with
/// `Materialized::versioned`).
pub struct TestVersionedStore<K, V> {
    store: weir_topology::store::VersionedStoreRef,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
}

impl<K: 'static, V: 'static> TestVersionedStore<K, V> {
    /// The version of `key` valid at `as_of`, with the timestamp it is
    /// valid from; `None` if there was none then (or it was deleted, or
    /// `as_of` is older than the history retention reaches).
    pub fn get_as_of(&self, key: &K, as_of: i64) -> Option<(V, i64)> {
        let k = self.key_serde.to_bytes(key).expect("key serializes");
        let mut out = Vec::new();
        let ts = self
            .store
            .borrow_mut()
            .get_as_of(&k, as_of, &mut out)
            .expect("store read")?;
        Some((self.value_serde.deserialize(&out).expect("stored value decodes"), ts))
    }

    /// The newest version of `key` and its timestamp.
    pub fn get_latest(&self, key: &K) -> Option<(V, i64)> {
        self.get_as_of(key, i64::MAX)
    }
}

/// Typed reads of a window store of a driver.
pub struct TestWindowStore<K, V> {
    store: weir_topology::store::WindowStoreRef,
    key_serde: Serde<K>,
    value_serde: Serde<V>,
    _marker: PhantomData<fn(K, V)>,
}

impl<K: 'static, V: 'static> TestWindowStore<K, V> {
    /// The value of `key` in the window starting at `window_start`.
    pub fn get(&self, key: &K, window_start: i64) -> Option<V> {
        let k = self.key_serde.to_bytes(key).expect("key serializes");
        let mut out = Vec::new();
        let found = self
            .store
            .borrow_mut()
            .get_into(&k, window_start, &mut out)
            .expect("store read");
        found.then(|| self.value_serde.deserialize(&out).expect("stored value decodes"))
    }

    /// (window start, value) of `key` for windows starting in `[from, to]`.
    pub fn fetch(&self, key: &K, from: i64, to: i64) -> Vec<(i64, V)> {
        let k = self.key_serde.to_bytes(key).expect("key serializes");
        self.store
            .borrow_mut()
            .fetch(&k, from, to)
            .expect("store read")
            .into_iter()
            .map(|(s, v)| (s, self.value_serde.deserialize(&v).expect("stored value decodes")))
            .collect()
    }
}
