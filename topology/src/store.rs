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

/// (record key, window start, value) triples from a window store scan.
pub type WindowEntries = Vec<(Vec<u8>, i64, Vec<u8>)>;

/// A window store: values per (record key, window start). Keys are laid out
/// by window start first so that time-range scans are ordered by time.
pub trait WindowStore: StateStore {
    fn get_into(&mut self, key: &[u8], window_start: i64, out: &mut Vec<u8>) -> StoreResult<bool>;

    fn put(&mut self, key: &[u8], window_start: i64, value: &[u8]) -> StoreResult<()>;

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

/// The kind of a declared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    KeyValue,
    /// Windows of the given size; `retention_ms` = size + grace by default.
    Window {
        retention_ms: i64,
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
