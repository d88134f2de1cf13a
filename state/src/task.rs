//! The database of an instance and the state of each of its tasks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_topology::store::{
    encode_window_start, ChangelogRecord, GlobalStoreRef, KvStoreRef, StoreError, StoreKind, StoreResult, StoreSpec,
    StoreSupplier, VersionedStoreRef, WindowStoreRef,
};

use crate::global::SledGlobalStore;

use crate::kv::SledKeyValueStore;
use crate::layout::{decode_checkpoint, encode_checkpoint, range_is_empty, sled_bounds, store_prefix, CHECKPOINT_KEY};
use crate::versioned::{self as vlayout, SledVersionedStore};
use crate::window::SledWindowStore;

/// Key-value pairs in key order, as scans return them.
pub type KvEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// The local state of one instance: one sled database under a directory,
/// holding one tree per task.
///
/// One database rather than one per task because sled runs a flusher thread
/// and keeps a page cache per database; a tree is cheap.
///
/// `SLED_CACHE_BYTES` is the default size of that page cache, one per
/// instance (the daemon's `--state-cache-bytes`). sled's own default is
/// 1 GiB, which a large store would fill; weir's write cache keeps the hot
/// keys, so sled's cache only needs to hold recently read pages.
pub const SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// How [`StateDb::open`] says sled found its files corrupt.
const CORRUPT: &str = "the state database is corrupt";

/// `Send + Sync`, so stream threads can share it and open their tasks.
pub struct StateDb {
    db: sled::Db,
    dir: PathBuf,
}

impl StateDb {
    /// Open (creating if needed) the database in `dir`. Fails if another
    /// process, or another live `StateDb` of this one, has it open.
    ///
    /// Waits up to a second for the directory's lock: sled releases it
    /// when its last file handle is freed, which can come a few
    /// milliseconds after a `StateDb` of this process is dropped (sled
    /// defers some frees while other threads use it). Without the wait,
    /// reopening in-process (tests, restarts of an embedded runtime) fails
    /// now and then.
    ///
    /// sled's page cache gets [`SLED_CACHE_BYTES`]; see
    /// [`StateDb::open_with_cache`].
    pub fn open(dir: &Path) -> Result<StateDb, StoreError> {
        Self::open_with_cache(dir, SLED_CACHE_BYTES)
    }

    /// [`StateDb::open`] with a page cache of `cache_bytes` (sled's
    /// `cache_capacity`: pages read or written recently, shared by all
    /// tasks of the instance).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<StateDb, StoreError> {
        Self::open_waiting_with_cache(dir, Duration::from_secs(1), cache_bytes)
    }

    /// [`StateDb::open`], but a database sled finds corrupt (a process
    /// killed while sled was creating or recovering its files can leave
    /// one) is moved aside to `{dir}.corrupt-{unix seconds}` and an empty
    /// one opened in its place: local state is a cache of the changelogs,
    /// so every task restores from them. Returns where the corrupt one
    /// went, if it was moved.
    pub fn open_or_reset(dir: &Path) -> Result<(StateDb, Option<PathBuf>), StoreError> {
        Self::open_or_reset_with_cache(dir, SLED_CACHE_BYTES)
    }

    /// [`StateDb::open_or_reset`] with a page cache of `cache_bytes` (see
    /// [`StateDb::open_with_cache`]).
    pub fn open_or_reset_with_cache(dir: &Path, cache_bytes: u64) -> Result<(StateDb, Option<PathBuf>), StoreError> {
        match Self::open_with_cache(dir, cache_bytes) {
            Ok(db) => Ok((db, None)),
            Err(e) if e.message.contains(CORRUPT) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut aside = dir.as_os_str().to_owned();
                aside.push(format!(".corrupt-{secs}"));
                let aside = PathBuf::from(aside);
                std::fs::rename(dir, &aside).map_err(|r| {
                    StoreError::new(
                        dir.display().to_string(),
                        format!("{}; moving it aside to {} failed: {r}", e.message, aside.display()),
                    )
                })?;
                Ok((Self::open_with_cache(dir, cache_bytes)?, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    #[cfg(test)]
    pub(crate) fn open_waiting(dir: &Path, lock_wait: Duration) -> Result<StateDb, StoreError> {
        Self::open_waiting_with_cache(dir, lock_wait, SLED_CACHE_BYTES)
    }

    fn open_waiting_with_cache(dir: &Path, lock_wait: Duration, cache_bytes: u64) -> Result<StateDb, StoreError> {
        let err =
            |what: &str, e: &dyn std::fmt::Display| StoreError::new(dir.display().to_string(), format!("{what}: {e}"));
        std::fs::create_dir_all(dir).map_err(|e| err("cannot create the state directory", &e))?;
        let deadline = Instant::now() + lock_wait;
        let db = loop {
            match sled::Config::new().path(dir).cache_capacity(cache_bytes).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if is_lock_conflict(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e @ sled::Error::Corruption { .. }) => return Err(err(CORRUPT, &e)),
                Err(e) => return Err(err("cannot open the state database", &e)),
            }
        };
        Ok(StateDb {
            db,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state of task `task_id` (its tree is created on first use).
    /// `cache_max_bytes` is the write-cache budget of each of its stores.
    ///
    /// Call it once per task assignment and share the `TaskState` (it is
    /// cheap to clone): two `TaskState`s of one task would have separate
    /// pending batches, and their stores would not notice each other's
    /// restores and wipes.
    pub fn task(&self, task_id: &str, cache_max_bytes: usize) -> Result<TaskState, StoreError> {
        let task_err = |m: String| StoreError::new(format!("task {task_id}"), m);
        if task_id.is_empty() || task_id.starts_with("__sled__") {
            return Err(task_err(format!("invalid task id {task_id:?}")));
        }
        let tree = self
            .db
            .open_tree(task_id)
            .map_err(|e| task_err(format!("cannot open the task's tree: {e}")))?;
        Ok(TaskState {
            inner: Rc::new(TaskInner {
                db: self.db.clone(),
                task_id: task_id.to_string(),
                tree,
                cache_max_bytes,
                pending: RefCell::new(sled::Batch::default()),
                pending_ops: Cell::new(0),
                commits: Cell::new(0),
                epoch: Cell::new(0),
                poisoned: Cell::new(false),
                stores: RefCell::new(HashMap::new()),
            }),
        })
    }

    /// Global store `store` of `application_id` (a global table's), created
    /// on first use. Every call returns a handle on the same tree.
    pub fn global_store(&self, application_id: &str, store: &str) -> Result<SledGlobalStore, StoreError> {
        SledGlobalStore::open(&self.db, application_id, store)
    }

    /// Write everything sled holds in memory to disk and fsync it. Commits
    /// are atomic without it (sled recovers a consistent prefix of its log);
    /// this is for a graceful shutdown, so that nothing committed is lost.
    pub fn flush_to_disk(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| StoreError::new(self.dir.display().to_string(), format!("flush to disk: {e}")))
    }
}

/// Whether sled failed to open because the directory is locked. Sled wraps
/// the lock's `WouldBlock` in an `Other` error, so only its text tells.
fn is_lock_conflict(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

enum Slot {
    Kv(Weak<RefCell<SledKeyValueStore>>),
    Window(Weak<RefCell<SledWindowStore>>),
    Versioned(Weak<RefCell<SledVersionedStore>>),
}

impl Slot {
    /// Refuse to open `name` as another kind while it is open as this one
    /// (a dropped store's name may be reopened as any kind).
    fn refuse(&self, name: &str) -> StoreResult<()> {
        let (live, kind) = match self {
            Slot::Kv(w) => (w.strong_count() > 0, "a key-value store"),
            Slot::Window(w) => (w.strong_count() > 0, "a window store"),
            Slot::Versioned(w) => (w.strong_count() > 0, "a versioned key-value store"),
        };
        if live {
            return Err(StoreError::new(name, format!("already open as {kind}")));
        }
        Ok(())
    }
}

pub(crate) struct TaskInner {
    /// The instance's database, for the global stores its processors read.
    db: sled::Db,
    task_id: String,
    tree: sled::Tree,
    cache_max_bytes: usize,
    /// What the task's stores flushed since the last commit.
    pending: RefCell<sled::Batch>,
    pending_ops: Cell<usize>,
    /// Successful commits so far: a cached entry flushed before commit `n`
    /// is in sled once this reaches `n` (see `cache.rs`).
    commits: Cell<u64>,
    /// Bumped when the tree's data is replaced behind the stores' backs
    /// (restore, wipe); stores then drop their caches.
    epoch: Cell<u64>,
    /// Set when a commit failed: the staged batch is gone while the stores'
    /// caches still present it as on its way to sled, so committing again
    /// would checkpoint data that is not there.
    poisoned: Cell<bool>,
    /// The task's open stores, so that asking twice for a store yields the
    /// same instance (two caches over one store would disagree).
    stores: RefCell<HashMap<String, Slot>>,
}

/// The state of one task (sub-topology + partition): one sled tree holding
/// all of the task's stores and its checkpoint, plus the batch of changes
/// its stores have flushed and not yet committed.
///
/// Cheap to clone: clones share everything. Bound to the thread that runs
/// the task (stores are `Rc<RefCell<..>>`); use [`TaskState::reader`] to
/// read committed data from other threads.
#[derive(Clone)]
pub struct TaskState {
    inner: Rc<TaskInner>,
}

impl TaskState {
    pub fn task_id(&self) -> &str {
        &self.inner.task_id
    }

    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.inner.tree
    }

    pub(crate) fn cache_max_bytes(&self) -> usize {
        self.inner.cache_max_bytes
    }

    pub(crate) fn commits(&self) -> u64 {
        self.inner.commits.get()
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.inner.epoch.get()
    }

    /// Let a store add its flushed changes to the pending batch.
    pub(crate) fn stage<R>(&self, f: impl FnOnce(&mut sled::Batch) -> Vec<R>) -> Vec<R> {
        let staged = f(&mut self.inner.pending.borrow_mut());
        self.inner.pending_ops.set(self.inner.pending_ops.get() + staged.len());
        staged
    }

    fn err(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError::new(format!("task {}", self.inner.task_id), message.to_string())
    }

    /// Number of changes staged by flushes and not yet committed.
    pub fn pending_len(&self) -> usize {
        self.inner.pending_ops.get()
    }

    /// Apply everything the task's stores staged (by `StateStore::flush`)
    /// plus `checkpoint` in one atomic sled batch.
    ///
    /// If it fails, the staged changes are lost and the task's state is no
    /// longer trustworthy: every later commit fails too, and the runtime
    /// must close the task and rebuild it ([`TaskState::wipe`], restore).
    pub fn commit(&self, checkpoint: &[u8]) -> Result<(), StoreError> {
        if self.inner.poisoned.get() {
            return Err(self.err("an earlier commit failed; the task must be closed and its state rebuilt"));
        }
        let mut batch = std::mem::take(&mut *self.inner.pending.borrow_mut());
        self.inner.pending_ops.set(0);
        batch.insert(CHECKPOINT_KEY, encode_checkpoint(checkpoint));
        match self.inner.tree.apply_batch(batch) {
            Ok(()) => {
                self.inner.commits.set(self.inner.commits.get() + 1);
                Ok(())
            }
            Err(e) => {
                self.inner.poisoned.set(true);
                Err(self.err(format!("commit: {e}")))
            }
        }
    }

    /// The checkpoint written by the last commit or restore, if any. A
    /// checkpoint that cannot be decoded is an error: the caller should
    /// treat the local state as inconsistent (wipe and restore).
    pub fn checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match self.inner.tree.get(CHECKPOINT_KEY) {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => decode_checkpoint(&bytes)
                .map(Some)
                .ok_or_else(|| self.err("the checkpoint is corrupt")),
            Err(e) => Err(self.err(format!("read checkpoint: {e}"))),
        }
    }

    /// Write changelog records of store `store`, then `checkpoint`,
    /// bypassing the caches (later records of a key win).
    ///
    /// Meant for rebuilding state before the task processes records: it
    /// refuses to run while flushed changes await a commit, and the task's
    /// open stores drop their caches (dirty entries included) on their next
    /// use, since their view of the tree is stale.
    ///
    /// The records are written in key order (the last record of each key
    /// only) by single-key inserts, and the checkpoint after them, not in
    /// one atomic batch: sled copies a leaf per key either way, but a batch
    /// holds every copy until it ends and costs about a third more per key
    /// (BENCHMARKS.md, `bench restore`). Sled persists operations in order,
    /// so a crash can leave records beyond the checkpoint's changelog
    /// position but never a checkpoint ahead of its records; the resumed
    /// restore starts at that position and writes the same records again,
    /// in changelog order, up to a target at least as far.
    pub fn restore(&self, store: &str, records: &[ChangelogRecord], checkpoint: &[u8]) -> Result<(), StoreError> {
        let prefix = store_prefix(store)?;
        if self.inner.pending_ops.get() > 0 {
            return Err(StoreError::new(store, "restore while flushed changes await a commit"));
        }
        // The stores' caches are stale from the first write on.
        self.inner.epoch.set(self.inner.epoch.get() + 1);
        let fail = |e: sled::Error| StoreError::new(store, format!("restore: {e}"));
        // Key order (neighbouring keys share leaves and a descent), stable
        // so that the last record of a key is the last of its run.
        let mut order: Vec<&ChangelogRecord> = records.iter().collect();
        order.sort_by(|a, b| a.key.cmp(&b.key));
        let tree = &self.inner.tree;
        let mut key = prefix.clone();
        for (i, r) in order.iter().enumerate() {
            if order.get(i + 1).is_some_and(|next| next.key == r.key) {
                continue;
            }
            key.truncate(prefix.len());
            key.extend_from_slice(&r.key);
            match &r.value {
                Some(v) => tree.insert(&key[..], &v[..]).map(drop).map_err(fail)?,
                None => tree.remove(&key[..]).map(drop).map_err(fail)?,
            }
        }
        tree.insert(CHECKPOINT_KEY, encode_checkpoint(checkpoint))
            .map(drop)
            .map_err(fail)?;
        Ok(())
    }

    /// Delete all data and the checkpoint of this task, and whatever its
    /// stores have staged or cached, so that it can be rebuilt from its
    /// changelogs.
    pub fn wipe(&self) -> Result<(), StoreError> {
        // The checkpoint goes first: sled persists operations in order, so
        // a crash during the clear can leave stray data but never a
        // checkpoint that vouches for half-deleted data.
        self.inner
            .tree
            .remove(CHECKPOINT_KEY)
            .and_then(|_| self.inner.tree.clear())
            .map_err(|e| self.err(format!("wipe: {e}")))?;
        *self.inner.pending.borrow_mut() = sled::Batch::default();
        self.inner.pending_ops.set(0);
        self.inner.poisoned.set(false);
        self.inner.epoch.set(self.inner.epoch.get() + 1);
        Ok(())
    }

    /// A handle for reading this task's committed data from other threads.
    pub fn reader(&self) -> StoreReader {
        StoreReader {
            tree: self.inner.tree.clone(),
            task_id: Arc::from(self.inner.task_id.as_str()),
        }
    }

    /// Committed value of `key` in store `store` (sled only: changes still
    /// cached or staged are not visible).
    pub fn read_kv(&self, store: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        read_kv(&self.inner.tree, store, key)
    }

    /// Committed entries of store `store` within the bounds, in key order.
    pub fn scan_kv(&self, store: &str, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<KvEntries, StoreError> {
        scan_kv(&self.inner.tree, store, from, to)
    }

    /// Committed version of `key` in versioned store `store` valid as of
    /// `as_of` (the newest with `None`), with its timestamp: what
    /// [`get_as_of`](weir_topology::store::VersionedKeyValueStore::get_as_of)
    /// would return if the store had nothing cached. The retention rule
    /// uses the committed observed stream time and the retention stored
    /// with it, since a reader has no topology to ask.
    pub fn read_versioned(&self, store: &str, key: &[u8], as_of: Option<i64>) -> StoreResult<Option<(i64, Vec<u8>)>> {
        read_versioned(&self.inner.tree, store, key, as_of)
    }

    /// Committed newest values (tombstones and history left out) of the
    /// user keys of versioned store `store` within the bounds, in key order.
    pub fn scan_versioned(&self, store: &str, from: Bound<&[u8]>, to: Bound<&[u8]>) -> StoreResult<KvEntries> {
        scan_versioned(&self.inner.tree, store, from, to)
    }

    /// Bytes held by the write cache of the open store `name` (0 if it is
    /// not open, or is in use right now). Read at commit time for the
    /// `weir_store_cache_bytes` gauge; never on the per-record path.
    pub fn cache_bytes(&self, name: &str) -> u64 {
        match self.inner.stores.borrow().get(name) {
            Some(Slot::Kv(w)) => w
                .upgrade()
                .and_then(|s| s.try_borrow().ok().map(|s| s.cache_bytes()))
                .unwrap_or(0),
            Some(Slot::Window(w)) => w
                .upgrade()
                .and_then(|s| s.try_borrow().ok().map(|s| s.cache_bytes()))
                .unwrap_or(0),
            Some(Slot::Versioned(w)) => w
                .upgrade()
                .and_then(|s| s.try_borrow().ok().map(|s| s.cache_bytes()))
                .unwrap_or(0),
            None => 0,
        }
    }

    /// The key-value store `name` of this task, opened on first use and
    /// shared afterwards.
    pub fn open_key_value(&self, name: &str) -> StoreResult<Rc<RefCell<SledKeyValueStore>>> {
        if let Some(slot) = self.inner.stores.borrow().get(name) {
            match slot {
                Slot::Kv(w) => {
                    if let Some(store) = w.upgrade() {
                        return Ok(store);
                    }
                }
                other => other.refuse(name)?,
            }
        }
        let store = Rc::new(RefCell::new(SledKeyValueStore::open(self.clone(), name)?));
        self.inner
            .stores
            .borrow_mut()
            .insert(name.to_string(), Slot::Kv(Rc::downgrade(&store)));
        Ok(store)
    }

    /// The window store `name` of this task, opened on first use and shared
    /// afterwards (a second call's `retention_ms` is ignored).
    pub fn open_window(&self, name: &str, retention_ms: i64) -> StoreResult<Rc<RefCell<SledWindowStore>>> {
        if let Some(slot) = self.inner.stores.borrow().get(name) {
            match slot {
                Slot::Window(w) => {
                    if let Some(store) = w.upgrade() {
                        return Ok(store);
                    }
                }
                other => other.refuse(name)?,
            }
        }
        let store = Rc::new(RefCell::new(SledWindowStore::open(self.clone(), name, retention_ms)?));
        self.inner
            .stores
            .borrow_mut()
            .insert(name.to_string(), Slot::Window(Rc::downgrade(&store)));
        Ok(store)
    }

    /// The versioned key-value store `name` of this task, opened on first
    /// use and shared afterwards (a second call's `history_retention_ms` is
    /// ignored). A negative retention is an error.
    pub fn open_versioned(
        &self,
        name: &str,
        history_retention_ms: i64,
    ) -> StoreResult<Rc<RefCell<SledVersionedStore>>> {
        if let Some(slot) = self.inner.stores.borrow().get(name) {
            match slot {
                Slot::Versioned(w) => {
                    if let Some(store) = w.upgrade() {
                        return Ok(store);
                    }
                }
                other => other.refuse(name)?,
            }
        }
        let store = Rc::new(RefCell::new(SledVersionedStore::open(
            self.clone(),
            name,
            history_retention_ms,
        )?));
        self.inner
            .stores
            .borrow_mut()
            .insert(name.to_string(), Slot::Versioned(Rc::downgrade(&store)));
        Ok(store)
    }
}

impl StoreSupplier for TaskState {
    /// A versioned spec gets the task's shared versioned store, seen as
    /// its current state (the same instance [`StoreSupplier::versioned`]
    /// returns), so that every reader of a table works on it unchanged.
    fn key_value(&mut self, spec: &StoreSpec) -> StoreResult<KvStoreRef> {
        match spec.kind {
            StoreKind::KeyValue => Ok(self.open_key_value(&spec.name)?),
            StoreKind::Versioned { history_retention_ms } => Ok(self.open_versioned(&spec.name, history_retention_ms)?),
            StoreKind::Window { .. } => Err(StoreError::new(
                &spec.name,
                "declared as a window store, requested as a key-value store",
            )),
        }
    }

    fn window(&mut self, spec: &StoreSpec) -> StoreResult<WindowStoreRef> {
        match spec.kind {
            StoreKind::Window { retention_ms } => Ok(self.open_window(&spec.name, retention_ms)?),
            StoreKind::KeyValue => Err(StoreError::new(
                &spec.name,
                "declared as a key-value store, requested as a window store",
            )),
            StoreKind::Versioned { .. } => Err(StoreError::new(
                &spec.name,
                "declared as a versioned key-value store, requested as a window store",
            )),
        }
    }

    fn versioned(&mut self, spec: &StoreSpec) -> StoreResult<VersionedStoreRef> {
        match spec.kind {
            StoreKind::Versioned { history_retention_ms } => Ok(self.open_versioned(&spec.name, history_retention_ms)?),
            StoreKind::KeyValue => Err(StoreError::new(
                &spec.name,
                "declared as a key-value store, requested as a versioned key-value store",
            )),
            StoreKind::Window { .. } => Err(StoreError::new(
                &spec.name,
                "declared as a window store, requested as a versioned key-value store",
            )),
        }
    }

    /// The instance's global store `name`: the application is the task id's
    /// part before its last `/` (task ids are `{application}/{task}`), so
    /// that two applications of one instance never share a global store.
    fn global(&mut self, name: &str) -> StoreResult<GlobalStoreRef> {
        let application = self.inner.task_id.rsplit_once('/').map_or("", |(a, _)| a);
        Ok(Arc::new(SledGlobalStore::open(&self.inner.db, application, name)?))
    }
}

/// Read-only access to one task's committed data from any thread (for
/// interactive queries): sled trees are `Send + Sync`.
#[derive(Clone)]
pub struct StoreReader {
    tree: sled::Tree,
    task_id: Arc<str>,
}

impl StoreReader {
    pub(crate) fn new(tree: sled::Tree, task_id: Arc<str>) -> StoreReader {
        StoreReader { tree, task_id }
    }

    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// See [`TaskState::read_kv`].
    pub fn read_kv(&self, store: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        read_kv(&self.tree, store, key)
    }

    /// See [`TaskState::scan_kv`].
    pub fn scan_kv(&self, store: &str, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<KvEntries, StoreError> {
        scan_kv(&self.tree, store, from, to)
    }

    /// See [`TaskState::read_versioned`].
    pub fn read_versioned(&self, store: &str, key: &[u8], as_of: Option<i64>) -> StoreResult<Option<(i64, Vec<u8>)>> {
        read_versioned(&self.tree, store, key, as_of)
    }

    /// See [`TaskState::scan_versioned`].
    pub fn scan_versioned(&self, store: &str, from: Bound<&[u8]>, to: Bound<&[u8]>) -> StoreResult<KvEntries> {
        scan_versioned(&self.tree, store, from, to)
    }
}

fn read_kv(tree: &sled::Tree, store: &str, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
    let mut k = store_prefix(store)?;
    k.extend_from_slice(key);
    tree.get(&k)
        .map(|v| v.map(|v| v.to_vec()))
        .map_err(|e| StoreError::new(store, format!("read: {e}")))
}

pub(crate) fn scan_kv(tree: &sled::Tree, store: &str, from: Bound<&[u8]>, to: Bound<&[u8]>) -> StoreResult<KvEntries> {
    let prefix = store_prefix(store)?;
    if range_is_empty(from, to) {
        return Ok(Vec::new());
    }
    tree.range(sled_bounds(&prefix, from, to))
        .map(|kv| {
            kv.map(|(k, v)| (k[prefix.len()..].to_vec(), v.to_vec()))
                .map_err(|e| StoreError::new(store, format!("scan: {e}")))
        })
        .collect()
}

/// [`TaskState::read_versioned`] on a tree: the decisions of
/// `SledVersionedStore::get_as_of`, on sled alone.
fn read_versioned(
    tree: &sled::Tree,
    store: &str,
    key: &[u8],
    as_of: Option<i64>,
) -> StoreResult<Option<(i64, Vec<u8>)>> {
    let prefix = store_prefix(store)?;
    let p = prefix.len();
    let fail = |e: sled::Error| StoreError::new(store, format!("read: {e}"));
    let mut k = prefix;
    if let Some(t) = as_of {
        k.extend_from_slice(vlayout::OBSERVED_KEY);
        if let Some(b) = tree.get(&k).map_err(fail)? {
            let (observed, retention) =
                vlayout::decode_observed(&b).ok_or_else(|| vlayout::corrupt(store, "observed stream time"))?;
            if t < vlayout::cutoff(observed, retention) {
                return Ok(None);
            }
        }
        k.truncate(p);
    }
    let mut scratch = Vec::with_capacity(1 + key.len());
    vlayout::latest_key(&mut scratch, key);
    k.extend_from_slice(&scratch);
    let Some(latest) = tree.get(&k).map_err(fail)? else {
        return Ok(None);
    };
    let (lt, value) = vlayout::decode_latest(&latest).ok_or_else(|| vlayout::corrupt(store, "newest version"))?;
    let t = as_of.unwrap_or(i64::MAX);
    if lt <= t {
        return Ok(value.map(|v| (lt, v.to_vec())));
    }
    // The last history entry at or before `t`.
    k.truncate(p);
    vlayout::history_prefix(&mut scratch, store, key)?;
    k.extend_from_slice(&scratch);
    let lo = k.clone();
    k.extend_from_slice(&encode_window_start(t));
    let Some((hk, hv)) = tree.range(lo..=k).next_back().transpose().map_err(fail)? else {
        return Ok(None);
    };
    let ts = vlayout::history_ts(&hk).ok_or_else(|| vlayout::corrupt(store, "history key"))?;
    let value = vlayout::decode_version(&hv).ok_or_else(|| vlayout::corrupt(store, "history entry"))?;
    Ok(value.map(|v| (ts, v.to_vec())))
}

/// [`TaskState::scan_versioned`] on a tree.
fn scan_versioned(tree: &sled::Tree, store: &str, from: Bound<&[u8]>, to: Bound<&[u8]>) -> StoreResult<KvEntries> {
    let prefix = store_prefix(store)?;
    if range_is_empty(from, to) {
        return Ok(Vec::new());
    }
    let (lo, hi) = vlayout::latest_bounds(from, to);
    let mut out = Vec::new();
    // Store-relative keys: skip the store prefix and the `LATEST` byte.
    let skip = prefix.len() + 1;
    for kv in tree.range(sled_bounds(&prefix, vlayout::bound_ref(&lo), vlayout::bound_ref(&hi))) {
        let (k, v) = kv.map_err(|e| StoreError::new(store, format!("scan: {e}")))?;
        match vlayout::decode_latest(&v) {
            Some((_, Some(v))) => out.push((k[skip..].to_vec(), v.to_vec())),
            Some((_, None)) => {}
            None => return Err(vlayout::corrupt(store, "newest version")),
        }
    }
    Ok(out)
}
