//! Model-based property tests: random operation sequences run against the
//! sled stores (key-value, window, versioned) and against a `BTreeMap` model that tracks three views:
//!
//! * `current`: what reads must see (cached writes included);
//! * `flushed`: the state as of the last flush (staged or committed);
//! * `committed`: the state as of the last commit, which is all that must
//!   survive dropping and reopening the database, and all that replaying
//!   the committed changelog records into an empty database must rebuild.
//!
//! Alphabets are tiny so that overwrites, deletes of live keys and
//! re-puts of deleted keys happen all the time, and cache budgets range
//! from zero (everything goes through sled) to large (nothing does).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tempfile::TempDir;
use weir_state::*;

const STORE: &str = "store";
const TASK: &str = "1_2";

/// A checkpoint's bytes (opaque to the state crate).
fn checkpoint(n: i64) -> Vec<u8> {
    [n.to_be_bytes(), (2 * n).to_be_bytes()].concat()
}

/// Cache budgets worth testing: none, a few entries (constant eviction),
/// plenty.
fn cache_budget() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(150), Just(400), Just(1 << 20)]
}

fn small_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 0..=max_len)
}

/// Checks the changelog records of one flush against the model and applies
/// them: keys strictly increasing, replaying them over the previous flushed
/// state gives the current state, and every changed key is among them.
fn check_flush_records<K: Ord + Clone + std::fmt::Debug>(
    records: &[ChangelogRecord],
    decode: impl Fn(&[u8]) -> K,
    flushed: &mut BTreeMap<K, Vec<u8>>,
    current: &BTreeMap<K, Vec<u8>>,
) -> Result<(), TestCaseError> {
    for pair in records.windows(2) {
        prop_assert!(pair[0].key < pair[1].key, "records not in key order: {:?}", records);
    }
    let touched: std::collections::BTreeSet<K> = records.iter().map(|r| decode(&r.key)).collect();
    for (k, v) in current {
        if flushed.get(k) != Some(v) {
            prop_assert!(touched.contains(k), "changed key {:?} has no record", k);
        }
    }
    for k in flushed.keys() {
        if !current.contains_key(k) {
            prop_assert!(touched.contains(k), "deleted key {:?} has no tombstone", k);
        }
    }
    for r in records {
        match &r.value {
            Some(v) => flushed.insert(decode(&r.key), v.clone()),
            None => flushed.remove(&decode(&r.key)),
        };
    }
    prop_assert_eq!(&*flushed, current);
    Ok(())
}

/// The parts of the harness shared by both store kinds: the database, the
/// task, the model's bookkeeping of commits and changelogs.
struct Base {
    dir: TempDir,
    budget: usize,
    db: Option<StateDb>,
    task: Option<TaskState>,
    commits: i64,
    last_checkpoint: Option<Vec<u8>>,
    /// Records of flushes since the last commit.
    pending_log: Vec<ChangelogRecord>,
    /// Records of committed flushes, in order.
    committed_log: Vec<ChangelogRecord>,
}

impl Base {
    fn new(budget: usize) -> Base {
        let dir = TempDir::new().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let task = db.task(TASK, budget).unwrap();
        Base {
            dir,
            budget,
            db: Some(db),
            task: Some(task),
            commits: 0,
            last_checkpoint: None,
            pending_log: Vec::new(),
            committed_log: Vec::new(),
        }
    }

    fn task(&self) -> &TaskState {
        self.task.as_ref().unwrap()
    }

    fn commit(&mut self) -> Result<(), TestCaseError> {
        self.commits += 1;
        let cp = checkpoint(self.commits);
        self.task().commit(&cp).unwrap();
        prop_assert_eq!(self.task().checkpoint().unwrap(), Some(cp.clone()));
        self.last_checkpoint = Some(cp);
        self.committed_log.append(&mut self.pending_log);
        Ok(())
    }

    /// Drop everything (the caller has dropped its stores) and reopen.
    fn reopen(&mut self) -> Result<(), TestCaseError> {
        self.task = None;
        self.db = None;
        let db = StateDb::open(self.dir.path()).unwrap();
        let task = db.task(TASK, self.budget).unwrap();
        prop_assert_eq!(task.checkpoint().unwrap(), self.last_checkpoint.clone());
        self.db = Some(db);
        self.task = Some(task);
        self.pending_log.clear();
        Ok(())
    }

    /// Replay the committed changelog into a fresh database, in a few
    /// restore batches, and hand back its task for comparison.
    fn restore_elsewhere(&self) -> (TempDir, StateDb, TaskState) {
        let dir = TempDir::new().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let task = db.task(TASK, self.budget).unwrap();
        let cp = self.last_checkpoint.clone().unwrap_or_default();
        for chunk in self.committed_log.chunks(7) {
            task.restore(STORE, chunk, &cp).unwrap();
        }
        if self.committed_log.is_empty() {
            task.restore(STORE, &[], &cp).unwrap();
        }
        (dir, db, task)
    }
}

// ---------------------------------------------------------------- key-value

#[derive(Debug, Clone)]
enum B {
    Unbounded,
    Included(Vec<u8>),
    Excluded(Vec<u8>),
}

impl B {
    fn get(&self) -> Bound<&[u8]> {
        match self {
            B::Unbounded => Bound::Unbounded,
            B::Included(k) => Bound::Included(k),
            B::Excluded(k) => Bound::Excluded(k),
        }
    }
}

fn bound() -> impl Strategy<Value = B> {
    prop_oneof![
        1 => Just(B::Unbounded),
        2 => small_bytes(2).prop_map(B::Included),
        2 => small_bytes(2).prop_map(B::Excluded),
    ]
}

#[derive(Debug, Clone)]
enum KvOp {
    Put(Vec<u8>, Vec<u8>),
    Get(Vec<u8>),
    Delete(Vec<u8>),
    Range(B, B),
    Flush,
    Commit,
    Reopen,
    RestoreCheck,
}

fn kv_op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        8 => (small_bytes(2), small_bytes(3)).prop_map(|(k, v)| KvOp::Put(k, v)),
        4 => small_bytes(2).prop_map(KvOp::Get),
        4 => small_bytes(2).prop_map(KvOp::Delete),
        2 => (bound(), bound()).prop_map(|(a, b)| KvOp::Range(a, b)),
        3 => Just(KvOp::Flush),
        2 => Just(KvOp::Commit),
        1 => Just(KvOp::Reopen),
        1 => Just(KvOp::RestoreCheck),
    ]
}

fn in_bounds(k: &[u8], lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    (match lo {
        Bound::Included(b) => k >= b,
        Bound::Excluded(b) => k > b,
        Bound::Unbounded => true,
    }) && (match hi {
        Bound::Included(b) => k <= b,
        Bound::Excluded(b) => k < b,
        Bound::Unbounded => true,
    })
}

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

fn kv_spec() -> StoreSpec {
    StoreSpec {
        name: STORE.to_string(),
        kind: StoreKind::KeyValue,
        logged: true,
    }
}

fn run_kv(budget: usize, ops: Vec<KvOp>) -> Result<(), TestCaseError> {
    let mut base = Base::new(budget);
    let mut store: Option<KvStoreRef> = Some(base.task.clone().unwrap().key_value(&kv_spec()).unwrap());
    let (mut current, mut flushed, mut committed) = (Map::new(), Map::new(), Map::new());

    for op in ops {
        let s = store.as_ref().unwrap();
        match op {
            KvOp::Put(k, v) => {
                s.borrow_mut().put(&k, &v).unwrap();
                current.insert(k, v);
                if budget == 0 {
                    prop_assert!(s.borrow().wants_flush());
                }
            }
            KvOp::Delete(k) => {
                s.borrow_mut().delete(&k).unwrap();
                current.remove(&k);
            }
            KvOp::Get(k) => {
                let mut out = vec![7; 3];
                let found = s.borrow_mut().get_into(&k, &mut out).unwrap();
                prop_assert_eq!(found.then_some(out), current.get(&k).cloned(), "get {:?}", k);
                prop_assert_eq!(s.borrow_mut().get(&k).unwrap(), current.get(&k).cloned());
            }
            KvOp::Range(lo, hi) => {
                let got = s.borrow_mut().range(lo.get(), hi.get()).unwrap();
                let want: Vec<_> = current
                    .iter()
                    .filter(|(k, _)| in_bounds(k, lo.get(), hi.get()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                prop_assert_eq!(got, want, "range {:?}..{:?}", lo, hi);
            }
            KvOp::Flush => {
                let records = s.borrow_mut().flush().unwrap();
                check_flush_records(&records, <[u8]>::to_vec, &mut flushed, &current)?;
                base.pending_log.extend(records);
                prop_assert!(!s.borrow().wants_flush());
                prop_assert_eq!(s.borrow().approximate_len(), current.len() as u64);
            }
            KvOp::Commit => {
                base.commit()?;
                committed = flushed.clone();
                let on_disk: Map = base
                    .task()
                    .scan_kv(STORE, Bound::Unbounded, Bound::Unbounded)
                    .unwrap()
                    .into_iter()
                    .collect();
                prop_assert_eq!(&on_disk, &committed);
            }
            KvOp::Reopen => {
                drop(store.take());
                base.reopen()?;
                store = Some(base.task.clone().unwrap().key_value(&kv_spec()).unwrap());
                current = committed.clone();
                flushed = committed.clone();
                prop_assert_eq!(
                    store.as_ref().unwrap().borrow().approximate_len(),
                    committed.len() as u64
                );
            }
            KvOp::RestoreCheck => {
                let (_dir, _db, mut task) = base.restore_elsewhere();
                prop_assert_eq!(
                    task.checkpoint().unwrap(),
                    Some(base.last_checkpoint.clone().unwrap_or_default())
                );
                let restored = task.key_value(&kv_spec()).unwrap();
                let all: Map = restored
                    .borrow_mut()
                    .range(Bound::Unbounded, Bound::Unbounded)
                    .unwrap()
                    .into_iter()
                    .collect();
                prop_assert_eq!(&all, &committed, "restored store differs from the committed model");
                prop_assert_eq!(restored.borrow().approximate_len(), committed.len() as u64);
            }
        }
    }

    // Finally every key of the alphabet, and the whole store in order.
    let s = store.unwrap();
    for k in (0..3u8).flat_map(|a| [vec![], vec![a], vec![a, 0], vec![a, 1], vec![a, 2]]) {
        prop_assert_eq!(s.borrow_mut().get(&k).unwrap(), current.get(&k).cloned());
    }
    let all: Map = s
        .borrow_mut()
        .range(Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .into_iter()
        .collect();
    prop_assert_eq!(all, current);
    Ok(())
}

// ------------------------------------------------------------------ windows

#[derive(Debug, Clone)]
enum WinOp {
    Put(Vec<u8>, i64, Vec<u8>),
    Get(Vec<u8>, i64),
    Delete(Vec<u8>, i64),
    Fetch(Vec<u8>, i64, i64),
    FetchAll(i64, i64),
    Purge(i64),
    Flush,
    Commit,
    Reopen,
    RestoreCheck,
}

/// Window starts around zero, plus the extremes.
fn start() -> impl Strategy<Value = i64> {
    prop_oneof![
        10 => -3i64..=3,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
    ]
}

fn wkey() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..2, 0..=2)
}

fn win_op() -> impl Strategy<Value = WinOp> {
    prop_oneof![
        8 => (wkey(), start(), small_bytes(3)).prop_map(|(k, t, v)| WinOp::Put(k, t, v)),
        4 => (wkey(), start()).prop_map(|(k, t)| WinOp::Get(k, t)),
        3 => (wkey(), start()).prop_map(|(k, t)| WinOp::Delete(k, t)),
        2 => (wkey(), start(), start()).prop_map(|(k, a, b)| WinOp::Fetch(k, a, b)),
        2 => (start(), start()).prop_map(|(a, b)| WinOp::FetchAll(a, b)),
        1 => start().prop_map(WinOp::Purge),
        3 => Just(WinOp::Flush),
        2 => Just(WinOp::Commit),
        1 => Just(WinOp::Reopen),
        1 => Just(WinOp::RestoreCheck),
    ]
}

type WinMap = BTreeMap<(i64, Vec<u8>), Vec<u8>>;

fn win_spec() -> StoreSpec {
    StoreSpec {
        name: STORE.to_string(),
        kind: StoreKind::Window { retention_ms: 10 },
        logged: true,
    }
}

fn decode_wk(store_key: &[u8]) -> (i64, Vec<u8>) {
    let (t, k) = split_window_key(store_key).expect("window store key");
    (t, k.to_vec())
}

fn fetch_all_map(s: &Rc<RefCell<dyn WindowStore>>) -> WinMap {
    s.borrow_mut()
        .fetch_all(i64::MIN, i64::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, t, v)| ((t, k), v))
        .collect()
}

fn run_window(budget: usize, ops: Vec<WinOp>) -> Result<(), TestCaseError> {
    let mut base = Base::new(budget);
    let mut store: Option<WindowStoreRef> = Some(base.task.clone().unwrap().window(&win_spec()).unwrap());
    let (mut current, mut flushed, mut committed) = (WinMap::new(), WinMap::new(), WinMap::new());

    for op in ops {
        let s = store.as_ref().unwrap();
        match op {
            WinOp::Put(k, t, v) => {
                s.borrow_mut().put(&k, t, &v).unwrap();
                current.insert((t, k), v);
            }
            WinOp::Delete(k, t) => {
                s.borrow_mut().delete(&k, t).unwrap();
                current.remove(&(t, k));
            }
            WinOp::Get(k, t) => {
                let mut out = Vec::new();
                let found = s.borrow_mut().get_into(&k, t, &mut out).unwrap();
                prop_assert_eq!(found.then_some(out), current.get(&(t, k.clone())).cloned());
            }
            WinOp::Fetch(k, from, to) => {
                let got = s.borrow_mut().fetch(&k, from, to).unwrap();
                let want: Vec<_> = current
                    .iter()
                    .filter(|((t, key), _)| *key == k && from <= *t && *t <= to)
                    .map(|((t, _), v)| (*t, v.clone()))
                    .collect();
                prop_assert_eq!(got, want, "fetch {:?} {}..={}", k, from, to);
            }
            WinOp::FetchAll(from, to) => {
                let got = s.borrow_mut().fetch_all(from, to).unwrap();
                let want: Vec<_> = current
                    .iter()
                    .filter(|((t, _), _)| from <= *t && *t <= to)
                    .map(|((t, k), v)| (k.clone(), *t, v.clone()))
                    .collect();
                prop_assert_eq!(got, want, "fetch_all {}..={}", from, to);
            }
            WinOp::Purge(before) => {
                let n = s.borrow_mut().purge_before(before).unwrap();
                let doomed: Vec<_> = current.keys().filter(|(t, _)| *t < before).cloned().collect();
                for k in &doomed {
                    current.remove(k);
                }
                prop_assert_eq!(n, doomed.len() as u64, "purge_before {}", before);
            }
            WinOp::Flush => {
                let records = s.borrow_mut().flush().unwrap();
                check_flush_records(&records, decode_wk, &mut flushed, &current)?;
                base.pending_log.extend(records);
                prop_assert_eq!(s.borrow().approximate_len(), current.len() as u64);
            }
            WinOp::Commit => {
                base.commit()?;
                committed = flushed.clone();
                let on_disk: WinMap = base
                    .task()
                    .scan_kv(STORE, Bound::Unbounded, Bound::Unbounded)
                    .unwrap()
                    .into_iter()
                    .map(|(k, v)| (decode_wk(&k), v))
                    .collect();
                prop_assert_eq!(&on_disk, &committed);
            }
            WinOp::Reopen => {
                drop(store.take());
                base.reopen()?;
                store = Some(base.task.clone().unwrap().window(&win_spec()).unwrap());
                current = committed.clone();
                flushed = committed.clone();
            }
            WinOp::RestoreCheck => {
                let (_dir, _db, mut task) = base.restore_elsewhere();
                let restored = task.window(&win_spec()).unwrap();
                prop_assert_eq!(&fetch_all_map(&restored), &committed);
                prop_assert_eq!(restored.borrow().approximate_len(), committed.len() as u64);
            }
        }
    }
    prop_assert_eq!(fetch_all_map(store.as_ref().unwrap()), current);
    Ok(())
}

// ---------------------------------------------------------------- versioned

#[derive(Debug, Clone)]
enum VerOp {
    Put(Vec<u8>, Option<Vec<u8>>, i64),
    KvPut(Vec<u8>, Vec<u8>),
    KvDelete(Vec<u8>),
    AsOf(Vec<u8>, i64),
    Get(Vec<u8>),
    Range(B, B),
    Flush,
    Commit,
    Reopen,
    RestoreCheck,
}

/// History retention of the versioned model: short against the timestamps
/// below, so that expiry and purges happen all the time.
const RETENTION: i64 = 4;

/// Timestamps: a dozen around zero, and now and then the extremes.
fn ver_ts() -> impl Strategy<Value = i64> {
    prop_oneof![
        20 => -1i64..=12,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
    ]
}

fn ver_op() -> impl Strategy<Value = VerOp> {
    prop_oneof![
        10 => (small_bytes(1), prop::option::weighted(0.8, small_bytes(2)), ver_ts())
            .prop_map(|(k, v, t)| VerOp::Put(k, v, t)),
        2 => (small_bytes(1), small_bytes(2)).prop_map(|(k, v)| VerOp::KvPut(k, v)),
        1 => small_bytes(1).prop_map(VerOp::KvDelete),
        6 => (small_bytes(1), ver_ts()).prop_map(|(k, t)| VerOp::AsOf(k, t)),
        2 => small_bytes(1).prop_map(VerOp::Get),
        2 => (bound(), bound()).prop_map(|(a, b)| VerOp::Range(a, b)),
        3 => Just(VerOp::Flush),
        2 => Just(VerOp::Commit),
        1 => Just(VerOp::Reopen),
        1 => Just(VerOp::RestoreCheck),
    ]
}

/// Every version ever stored (nothing is purged: purging must not change
/// any answer), and the observed stream time.
#[derive(Debug, Clone, Default, PartialEq)]
struct VerModel {
    versions: BTreeMap<Vec<u8>, BTreeMap<i64, Option<Vec<u8>>>>,
    observed: Option<i64>,
}

impl VerModel {
    fn put(&mut self, key: &[u8], value: Option<Vec<u8>>, ts: i64) -> VersionedPut {
        let observed = self.observed.map_or(ts, |o| o.max(ts));
        if ts < observed.saturating_sub(RETENTION) {
            return VersionedPut::Expired;
        }
        self.observed = Some(observed);
        let versions = self.versions.entry(key.to_vec()).or_default();
        let newest = versions.keys().next_back().copied();
        versions.insert(ts, value);
        if newest.is_none_or(|n| ts >= n) {
            VersionedPut::Latest
        } else {
            VersionedPut::OutOfOrder
        }
    }

    fn as_of(&self, key: &[u8], t: i64) -> Option<(i64, Vec<u8>)> {
        if t < self.observed.unwrap_or(i64::MIN).saturating_sub(RETENTION) {
            return None;
        }
        let (ts, v) = self.versions.get(key)?.range(..=t).next_back()?;
        v.clone().map(|v| (*ts, v))
    }

    fn current(&self) -> Map {
        self.versions
            .iter()
            .filter_map(|(k, vs)| Some((k.clone(), vs.values().next_back()?.clone()?)))
            .collect()
    }
}

fn ver_spec() -> StoreSpec {
    StoreSpec {
        name: STORE.to_string(),
        kind: StoreKind::Versioned {
            history_retention_ms: RETENTION,
        },
        logged: true,
    }
}

fn ver_keys() -> Vec<Vec<u8>> {
    std::iter::once(vec![]).chain((0..3u8).map(|a| vec![a])).collect()
}

fn ver_times() -> Vec<i64> {
    [i64::MIN, i64::MAX].into_iter().chain(-2..=13).collect()
}

/// Every (key, time) answer of the store equals the model's, and so do
/// its observed stream time and table view.
fn check_versioned(s: &VersionedStoreRef, model: &VerModel) -> Result<(), TestCaseError> {
    let mut out = Vec::new();
    for k in ver_keys() {
        for t in ver_times() {
            let got = s.borrow_mut().get_as_of(&k, t, &mut out).unwrap();
            prop_assert_eq!(
                got.map(|ts| (ts, out.clone())),
                model.as_of(&k, t),
                "as of {} {:?}",
                t,
                k
            );
        }
    }
    prop_assert_eq!(
        s.borrow_mut().observed_stream_time().unwrap(),
        model.observed.unwrap_or(i64::MIN)
    );
    let all: Map = s
        .borrow_mut()
        .range(Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .into_iter()
        .collect();
    prop_assert_eq!(all, model.current());
    Ok(())
}

fn run_versioned(budget: usize, ops: Vec<VerOp>) -> Result<(), TestCaseError> {
    let mut base = Base::new(budget);
    let mut store: Option<VersionedStoreRef> = Some(base.task.clone().unwrap().versioned(&ver_spec()).unwrap());
    let (mut current, mut flushed, mut committed) = (VerModel::default(), VerModel::default(), VerModel::default());

    for op in ops {
        let s = store.as_ref().unwrap();
        match op {
            VerOp::Put(k, v, t) => {
                let got = s.borrow_mut().put_versioned(&k, v.as_deref(), t).unwrap();
                prop_assert_eq!(got, current.put(&k, v, t), "put {:?} at {}", k, t);
                prop_assert_eq!(
                    s.borrow_mut().observed_stream_time().unwrap(),
                    current.observed.unwrap_or(i64::MIN)
                );
            }
            VerOp::KvPut(k, v) => {
                s.borrow_mut().put(&k, &v).unwrap();
                let at = current.observed.unwrap_or(0);
                prop_assert_eq!(current.put(&k, Some(v), at), VersionedPut::Latest);
            }
            VerOp::KvDelete(k) => {
                s.borrow_mut().delete(&k).unwrap();
                let at = current.observed.unwrap_or(0);
                prop_assert_eq!(current.put(&k, None, at), VersionedPut::Latest);
            }
            VerOp::AsOf(k, t) => {
                let mut out = vec![1];
                let got = s.borrow_mut().get_as_of(&k, t, &mut out).unwrap();
                prop_assert_eq!(got.map(|ts| (ts, out)), current.as_of(&k, t), "as of {} {:?}", t, k);
            }
            VerOp::Get(k) => {
                prop_assert_eq!(s.borrow_mut().get(&k).unwrap(), current.current().get(&k).cloned());
            }
            VerOp::Range(lo, hi) => {
                let got = s.borrow_mut().range(lo.get(), hi.get()).unwrap();
                let want: Vec<_> = current
                    .current()
                    .into_iter()
                    .filter(|(k, _)| in_bounds(k, lo.get(), hi.get()))
                    .collect();
                prop_assert_eq!(got, want, "range {:?}..{:?}", lo, hi);
            }
            VerOp::Flush => {
                let records = s.borrow_mut().flush().unwrap();
                for pair in records.windows(2) {
                    prop_assert!(pair[0].key < pair[1].key, "records not in key order: {:?}", records);
                }
                base.pending_log.extend(records);
                flushed = current.clone();
            }
            VerOp::Commit => {
                base.commit()?;
                committed = flushed.clone();
                // The committed-data readers answer as the model did then.
                let task = base.task();
                for k in ver_keys() {
                    prop_assert_eq!(
                        task.read_versioned(STORE, &k, None).unwrap(),
                        committed.as_of(&k, i64::MAX)
                    );
                    for t in ver_times() {
                        prop_assert_eq!(
                            task.read_versioned(STORE, &k, Some(t)).unwrap(),
                            committed.as_of(&k, t),
                            "committed as of {} {:?}",
                            t,
                            k
                        );
                    }
                }
                let scan: Map = task
                    .scan_versioned(STORE, Bound::Unbounded, Bound::Unbounded)
                    .unwrap()
                    .into_iter()
                    .collect();
                prop_assert_eq!(scan, committed.current());
            }
            VerOp::Reopen => {
                drop(store.take());
                base.reopen()?;
                store = Some(base.task.clone().unwrap().versioned(&ver_spec()).unwrap());
                current = committed.clone();
                flushed = committed.clone();
                check_versioned(store.as_ref().unwrap(), &current)?;
            }
            VerOp::RestoreCheck => {
                let (_dir, _db, mut task) = base.restore_elsewhere();
                let restored = task.versioned(&ver_spec()).unwrap();
                check_versioned(&restored, &committed)?;
            }
        }
    }
    check_versioned(store.as_ref().unwrap(), &current)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Beside this file (the default looks for a lib.rs above it).
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn kv_store_matches_model(budget in cache_budget(), ops in prop::collection::vec(kv_op(), 1..80)) {
        run_kv(budget, ops)?;
    }

    #[test]
    fn versioned_store_matches_model(budget in cache_budget(), ops in prop::collection::vec(ver_op(), 1..80)) {
        run_versioned(budget, ops)?;
    }

    #[test]
    fn window_store_matches_model(budget in cache_budget(), ops in prop::collection::vec(win_op(), 1..80)) {
        run_window(budget, ops)?;
    }
}
