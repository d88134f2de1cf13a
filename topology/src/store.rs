//! The store interface that processors are written against.
//!
//! It lives here, in the I/O-free DSL crate, because the processors that the
//! DSL instantiates (aggregations, joins, suppression, user processors) must
//! call stores without knowing how they are kept. `weir-state` implements
//! these traits with sled and a write cache and re-exports them.
//!
//! Stores speak bytes: the processor that owns a store serializes keys and
//! values with the serdes of its operator, so one store implementation
//! serves every key and value type.

use std::cell::RefCell;
use std::ops::Bound;
use std::rc::Rc;
use std::sync::Arc;

/// Typed stores for user processors (defined with the Processor API).
pub use crate::process::{KeyValueStoreView, StoreToken};

/// A failure of the storage layer (disk, corruption, encoding).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state store '{store}': {message}")]
pub struct StoreError {
    pub store: String,
    pub message: String,
}

impl StoreError {
    pub fn new(store: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError {
            store: store.into(),
            message: message.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One record of a store's changelog: the latest value of a key since the
/// previous flush, or a tombstone (`None`) for a delete.
///
/// For window stores `key` is the store key: the window start as 8
/// big-endian bytes (sign bit flipped so negative times sort first)
/// followed by the record key; see [`window_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogRecord {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// Operations common to every store kind: the commit-time half of the
/// store's life, driven by the processor that owns the store.
///
/// All stores of one task share one atomic write batch: `flush` only stages
/// a store's changes into it, and the task's state (in `weir-state`)
/// applies the staged batch together with the task's checkpoint in one
/// atomic write. That way a crash can never leave two stores of a task, or
/// a store and its checkpoint, out of step.
pub trait StateStore {
    /// The store's name as declared in the topology (e.g. "clicks-per-user").
    fn name(&self) -> &str;

    /// Stage every update since the previous flush into the task's pending
    /// batch and return the changelog records for those updates (latest
    /// value per dirty key, tombstones for deletes), in key order. After it,
    /// reads still see the flushed values (they stay cached as clean
    /// entries until the batch is written).
    fn flush(&mut self) -> StoreResult<Vec<ChangelogRecord>>;

    /// True when the write cache holds more dirty bytes than its limit; the
    /// runtime then commits early instead of letting the cache evict dirty
    /// entries on its own (an eviction outside a commit would put data ahead
    /// of its checkpoint).
    fn wants_flush(&self) -> bool;

    /// Number of live entries (committed data plus cached changes).
    fn approximate_len(&self) -> u64;

    /// Cache hits and misses of reads since the store was opened.
    fn cache_stats(&self) -> CacheStats;
}

/// Read counters of a store's write cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// The read-modify-write step of [`KeyValueStore::update`]: gets the current
/// value and writes the new one into the buffer, returning true to store it.
pub type UpdateFn<'a> = dyn FnMut(Option<&[u8]>, &mut Vec<u8>) -> bool + 'a;

/// A key-value store: the backing of KTables and non-windowed aggregates.
pub trait KeyValueStore: StateStore {
    /// Copy the value of `key` into `out` (cleared first); false if absent.
    /// The allocation-free read used on the hot path.
    fn get_into(&mut self, key: &[u8], out: &mut Vec<u8>) -> StoreResult<bool>;

    fn get(&mut self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let mut out = Vec::new();
        Ok(if self.get_into(key, &mut out)? { Some(out) } else { None })
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()>;

    /// Read-modify-write of one key, the hot path of aggregations: `f`
    /// gets the current value (`None` if absent) and writes the new value
    /// into its second argument (cleared first), returning true to store it.
    /// `old` and `new` are the caller's scratch buffers. The effect
    /// (statistics included) is that of [`get_into`](Self::get_into)
    /// followed, if `f` returns true, by [`put`](Self::put); a store may
    /// override it to look the key up once.
    fn update(&mut self, key: &[u8], old: &mut Vec<u8>, new: &mut Vec<u8>, f: &mut UpdateFn<'_>) -> StoreResult<()> {
        let found = self.get_into(key, old)?;
        new.clear();
        if f(found.then_some(&old[..]), new) {
            self.put(key, new)?;
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> StoreResult<()>;

    /// All live entries with `from <= key < to` (as bounds say), in key order,
    /// cached changes merged over durable data.
    fn range(&mut self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// What [`VersionedKeyValueStore::put_versioned`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionedPut {
    /// The record is the key's newest version (its timestamp is at least
    /// that of every version so far): the table changed, and the change is
    /// forwarded downstream.
    Latest,
    /// The record is older than the key's newest version but within the
    /// history retention: it was inserted into the history (as-of reads
    /// see it) but the table's current value is unchanged.
    OutOfOrder,
    /// The record is older than the store's observed stream time minus its
    /// history retention: nothing was stored (as Kafka Streams' versioned
    /// stores, which return `PUT_RETURN_CODE_NOT_PUT`).
    Expired,
}

/// A versioned key-value store (Kafka Streams' KIP-889): every key keeps
/// its versions, each a value (or a tombstone) with the timestamp from
/// which it is valid, for `history_retention_ms` behind the store's
/// observed stream time (the largest timestamp put so far). Reading "as of"
/// a time gives the version that was valid then, which is what a
/// stream–table join needs to join an out-of-order stream correctly.
///
/// As a [`KeyValueStore`] it is the table's current state: `get_into` and
/// `range` see each key's newest version (nothing for a tombstone), so
/// every reader of a table (table–table and foreign-key joins, queries,
/// re-grouping) works on it unchanged. Its plain `put`/`delete` write a
/// version at the observed stream time.
///
/// Rules (those of Kafka Streams' `RocksDBVersionedStore`):
/// * a put with the timestamp of an existing version replaces it;
/// * a put older than observed stream time minus the history retention is
///   [`VersionedPut::Expired`] and stores nothing;
/// * an as-of read older than observed stream time minus the history
///   retention finds nothing (the history that old is not kept);
/// * the newest version of a key is kept whatever its age (unless it is a
///   tombstone older than the retention, which is as good as absent);
/// * older versions are dropped once the version after them is itself
///   older than observed stream time minus the retention (nothing as-of
///   inside the retention can see them).
pub trait VersionedKeyValueStore: KeyValueStore {
    /// How far behind observed stream time history is kept.
    fn history_retention_ms(&self) -> i64;

    /// The largest timestamp put so far (`i64::MIN` if none); survives
    /// restarts and restores, since it decides what is expired.
    fn observed_stream_time(&mut self) -> StoreResult<i64>;

    /// Insert a version of `key`: `Some(value)` or a tombstone (`None`),
    /// valid from `timestamp` until the next version's timestamp.
    fn put_versioned(&mut self, key: &[u8], value: Option<&[u8]>, timestamp: i64) -> StoreResult<VersionedPut>;

    /// The version of `key` valid at `as_of` (the one with the largest
    /// timestamp `<= as_of`): its value is copied into `out` (cleared
    /// first) and its timestamp returned. `None` if there is no such
    /// version, if it is a tombstone, or if `as_of` is older than the
    /// history retention reaches.
    fn get_as_of(&mut self, key: &[u8], as_of: i64, out: &mut Vec<u8>) -> StoreResult<Option<i64>>;

    /// The newest version of `key` and its timestamp (as
    /// [`get_as_of`](Self::get_as_of) at the end of time).
    fn get_latest(&mut self, key: &[u8], out: &mut Vec<u8>) -> StoreResult<Option<i64>> {
        self.get_as_of(key, i64::MAX, out)
    }
}

/// (record key, window start, value) triples from a window store scan.
pub type WindowEntries = Vec<(Vec<u8>, i64, Vec<u8>)>;

/// A window store: values per (record key, window start). Keys are laid out
/// by window start first so that time-range scans are ordered by time.
pub trait WindowStore: StateStore {
    fn get_into(&mut self, key: &[u8], window_start: i64, out: &mut Vec<u8>) -> StoreResult<bool>;

    fn put(&mut self, key: &[u8], window_start: i64, value: &[u8]) -> StoreResult<()>;

    /// Read-modify-write of one window, as
    /// [`KeyValueStore::update`]: the effect of
    /// [`get_into`](Self::get_into) followed, if `f` returns true, by
    /// [`put`](Self::put); a store may override it to look the window up
    /// once (the hot path of windowed aggregations).
    fn update(
        &mut self,
        key: &[u8],
        window_start: i64,
        old: &mut Vec<u8>,
        new: &mut Vec<u8>,
        f: &mut UpdateFn<'_>,
    ) -> StoreResult<()> {
        let found = self.get_into(key, window_start, old)?;
        new.clear();
        if f(found.then_some(&old[..]), new) {
            self.put(key, window_start, new)?;
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8], window_start: i64) -> StoreResult<()>;

    /// The windows of one key with `from <= window_start <= to`, by start.
    fn fetch(&mut self, key: &[u8], from: i64, to: i64) -> StoreResult<Vec<(i64, Vec<u8>)>>;

    /// Every (key, window start, value) with `from <= window_start <= to`,
    /// ordered by window start then key.
    fn fetch_all(&mut self, from: i64, to: i64) -> StoreResult<WindowEntries>;

    /// Drop every window that starts before `before` (retention). Dropped
    /// windows produce tombstones in the next flush's changelog records.
    fn purge_before(&mut self, before: i64) -> StoreResult<u64>;
}

/// How processors hold stores: shared within one task (an aggregation and
/// the join that reads its table use the same instance), never across
/// threads.
pub type KvStoreRef = Rc<RefCell<dyn KeyValueStore>>;
pub type WindowStoreRef = Rc<RefCell<dyn WindowStore>>;
pub type VersionedStoreRef = Rc<RefCell<dyn VersionedKeyValueStore>>;

/// The kind of a declared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    KeyValue,
    /// Windows of the given size; `retention_ms` = size + grace by default.
    Window {
        retention_ms: i64,
    },
    /// A versioned key-value store ([`VersionedKeyValueStore`]) keeping
    /// history for `history_retention_ms` behind observed stream time.
    Versioned {
        history_retention_ms: i64,
    },
}

/// A store as declared by the topology: the runtime creates one instance
/// per task from this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    pub name: String,
    pub kind: StoreKind,
    /// Whether the store is backed by a changelog topic (always true for
    /// stores the DSL creates; user stores may opt out).
    pub logged: bool,
}

/// Creates the store instances of a task. Implemented by the runtime (sled
/// stores) and by the test driver (the same sled stores in a temp dir).
pub trait StoreSupplier {
    fn key_value(&mut self, spec: &StoreSpec) -> StoreResult<KvStoreRef>;
    fn window(&mut self, spec: &StoreSpec) -> StoreResult<WindowStoreRef>;
    fn versioned(&mut self, spec: &StoreSpec) -> StoreResult<VersionedStoreRef>;

    /// The instance's global store `name` (a [`crate::GlobalKTable`]'s),
    /// shared read-only by every task of the instance. A supplier without
    /// global stores refuses, naming the store, so a topology that needs
    /// one fails when its task is created rather than joining nothing.
    fn global(&mut self, name: &str) -> StoreResult<GlobalStoreRef> {
        Err(StoreError::new(name, "this store supplier has no global stores"))
    }
}

/// Read access to a global store (the whole of a global table's topic,
/// every partition, on every instance).
///
/// Unlike task stores it is `Send + Sync` and shared: one global updater
/// per instance writes it (the source topic is its changelog), and every
/// task of every stream thread reads it concurrently. Reads see what the
/// updater has applied, with no write cache in between: a global table has
/// no commit of its own that a cache would have to wait for.
pub trait GlobalStore: Send + Sync {
    /// The store's name as declared in the topology.
    fn name(&self) -> &str;

    /// Copy the value of `key` into `out` (cleared first); false if absent.
    fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> StoreResult<bool>;

    /// Every entry with a key within the bounds, in key order.
    fn range(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// How processors hold a global store: shared by every task of an instance.
pub type GlobalStoreRef = Arc<dyn GlobalStore>;

/// Encode a window start so that byte order equals numeric order
/// (big-endian with the sign bit flipped).
pub fn encode_window_start(start: i64) -> [u8; 8] {
    ((start as u64) ^ (1u64 << 63)).to_be_bytes()
}

/// Inverse of [`encode_window_start`].
pub fn decode_window_start(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1u64 << 63)) as i64
}

/// The store key of (window start, record key): start first, so that the
/// store is ordered by time.
pub fn window_key(window_start: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&encode_window_start(window_start));
    out.extend_from_slice(key);
    out
}

/// Split a window store key into (window start, record key); `None` if it
/// is shorter than the 8-byte prefix.
pub fn split_window_key(store_key: &[u8]) -> Option<(i64, &[u8])> {
    if store_key.len() < 8 {
        return None;
    }
    let (start, key) = store_key.split_at(8);
    Some((decode_window_start(start.try_into().ok()?), key))
}
