//! Tests of the versioned store over a real sled database in a temp dir.

use std::cell::RefCell;
use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::rc::Rc;

use tempfile::TempDir;

use crate::versioned::{decode_latest, decode_observed, history_ts, HISTORY, LATEST, OBSERVED_KEY};
use crate::*;

const S: &str = "vs";

fn cp(offset: i64) -> Vec<u8> {
    offset.to_be_bytes().to_vec()
}

fn spec(kind: StoreKind) -> StoreSpec {
    StoreSpec {
        name: S.to_string(),
        kind,
        logged: true,
    }
}

fn vspec(history_retention_ms: i64) -> StoreSpec {
    spec(StoreKind::Versioned { history_retention_ms })
}

type Store = Rc<RefCell<SledVersionedStore>>;

fn open(task: &TaskState, retention: i64) -> Store {
    task.open_versioned(S, retention).unwrap()
}

fn put(s: &Store, key: &[u8], value: Option<&[u8]>, ts: i64) -> VersionedPut {
    s.borrow_mut().put_versioned(key, value, ts).unwrap()
}

/// `get_as_of` as (timestamp, value).
fn as_of(s: &Store, key: &[u8], t: i64) -> Option<(i64, Vec<u8>)> {
    let mut out = vec![9; 4];
    let got = s.borrow_mut().get_as_of(key, t, &mut out).unwrap();
    if got.is_none() {
        assert!(out.is_empty(), "out is cleared when nothing is found");
    }
    got.map(|ts| (ts, out))
}

fn v(ts: i64, value: &[u8]) -> Option<(i64, Vec<u8>)> {
    Some((ts, value.to_vec()))
}

fn commit(task: &TaskState, s: &Store, n: i64) -> Vec<ChangelogRecord> {
    let records = s.borrow_mut().flush().unwrap();
    task.commit(&cp(n)).unwrap();
    records
}

/// The committed raw entries of the store, decoded: newest versions as
/// (key, ts, value), history as (key, ts, value), and the observed time.
#[allow(clippy::type_complexity)]
fn raw(
    task: &TaskState,
) -> (
    Vec<(Vec<u8>, i64, Option<Vec<u8>>)>,
    Vec<(Vec<u8>, i64)>,
    Option<(i64, i64)>,
) {
    let (mut latest, mut history, mut observed) = (Vec::new(), Vec::new(), None);
    for (k, val) in task.scan_kv(S, Unbounded, Unbounded).unwrap() {
        match k[0] {
            LATEST => {
                let (ts, value) = decode_latest(&val).unwrap();
                latest.push((k[1..].to_vec(), ts, value.map(<[u8]>::to_vec)));
            }
            HISTORY => {
                let len = u32::from_be_bytes(k[1..5].try_into().unwrap()) as usize;
                assert_eq!(k.len(), 5 + len + 8);
                history.push((k[5..5 + len].to_vec(), history_ts(&k).unwrap()));
            }
            _ => {
                assert_eq!(k, OBSERVED_KEY);
                observed = Some(decode_observed(&val).unwrap());
            }
        }
    }
    (latest, history, observed)
}

#[test]
fn in_order_puts_and_as_of_reads() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let s = open(&task, 100);
    assert_eq!(s.borrow_mut().observed_stream_time().unwrap(), i64::MIN);
    assert_eq!(s.borrow().history_retention_ms(), 100);
    assert_eq!(put(&s, b"a", Some(b"v1"), 10), VersionedPut::Latest);
    assert_eq!(put(&s, b"a", Some(b"v2"), 20), VersionedPut::Latest);
    assert_eq!(put(&s, b"a", Some(b"v3"), 30), VersionedPut::Latest);
    assert_eq!(s.borrow_mut().observed_stream_time().unwrap(), 30);
    assert_eq!(as_of(&s, b"a", 9), None);
    assert_eq!(as_of(&s, b"a", 10), v(10, b"v1"));
    assert_eq!(as_of(&s, b"a", 19), v(10, b"v1"));
    assert_eq!(as_of(&s, b"a", 20), v(20, b"v2"));
    assert_eq!(as_of(&s, b"a", 29), v(20, b"v2"));
    assert_eq!(as_of(&s, b"a", 30), v(30, b"v3"));
    assert_eq!(as_of(&s, b"a", i64::MAX), v(30, b"v3"));
    assert_eq!(as_of(&s, b"b", 30), None);
    let mut out = Vec::new();
    assert_eq!(s.borrow_mut().get_latest(b"a", &mut out).unwrap(), Some(30));
    assert_eq!(out, b"v3");
    assert_eq!(s.borrow_mut().get(b"a").unwrap(), Some(b"v3".to_vec()));
}

#[test]
fn out_of_order_puts_go_into_history() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 0).unwrap();
    let s = open(&task, 100);
    assert_eq!(put(&s, b"a", Some(b"v3"), 30), VersionedPut::Latest);
    assert_eq!(put(&s, b"a", Some(b"v1"), 10), VersionedPut::OutOfOrder);
    // Half of it from sled, half from the cache (a zero budget caches
    // nothing clean).
    commit(&task, &s, 1);
    assert_eq!(put(&s, b"a", Some(b"v2"), 20), VersionedPut::OutOfOrder);
    assert_eq!(s.borrow_mut().observed_stream_time().unwrap(), 30);
    assert_eq!(
        s.borrow_mut().get(b"a").unwrap(),
        Some(b"v3".to_vec()),
        "current unchanged"
    );
    let expect = [
        (5, None),
        (10, v(10, b"v1")),
        (15, v(10, b"v1")),
        (20, v(20, b"v2")),
        (25, v(20, b"v2")),
        (30, v(30, b"v3")),
        (99, v(30, b"v3")),
    ];
    for (t, want) in &expect {
        assert_eq!(&as_of(&s, b"a", *t), want, "as of {t}");
    }
    // Same timestamp in the history: replaced.
    assert_eq!(put(&s, b"a", Some(b"v2'"), 20), VersionedPut::OutOfOrder);
    assert_eq!(as_of(&s, b"a", 25), v(20, b"v2'"));
    commit(&task, &s, 2);
    assert_eq!(as_of(&s, b"a", 25), v(20, b"v2'"));
    let (latest, history, observed) = raw(&task);
    assert_eq!(latest, vec![(b"a".to_vec(), 30, Some(b"v3".to_vec()))]);
    assert_eq!(history, vec![(b"a".to_vec(), 10), (b"a".to_vec(), 20)]);
    assert_eq!(observed, Some((30, 100)));
}

#[test]
fn same_timestamp_replaces_the_newest_without_history() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let s = open(&task, 100);
    assert_eq!(put(&s, b"a", Some(b"x"), 10), VersionedPut::Latest);
    assert_eq!(put(&s, b"a", Some(b"y"), 10), VersionedPut::Latest);
    assert_eq!(as_of(&s, b"a", 10), v(10, b"y"));
    assert_eq!(put(&s, b"a", None, 10), VersionedPut::Latest);
    assert_eq!(as_of(&s, b"a", 10), None);
    assert_eq!(put(&s, b"a", Some(b"z"), 10), VersionedPut::Latest);
    commit(&task, &s, 1);
    let (latest, history, _) = raw(&task);
    assert_eq!(latest, vec![(b"a".to_vec(), 10, Some(b"z".to_vec()))]);
    assert!(history.is_empty());
    assert_eq!(s.borrow().approximate_len(), 2, "newest + observed stream time");
}

#[test]
fn tombstones_end_a_value_and_hide_the_key() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let s = open(&task, 100);
    put(&s, b"a", Some(b"v1"), 10);
    put(&s, b"b", Some(b"b"), 10);
    assert_eq!(put(&s, b"a", None, 20), VersionedPut::Latest);
    assert_eq!(as_of(&s, b"a", 15), v(10, b"v1"), "before the tombstone");
    assert_eq!(as_of(&s, b"a", 20), None);
    assert_eq!(as_of(&s, b"a", 25), None);
    let mut out = vec![1];
    assert_eq!(s.borrow_mut().get_latest(b"a", &mut out).unwrap(), None);
    assert!(!s.borrow_mut().get_into(b"a", &mut out).unwrap());
    assert!(out.is_empty());
    let all = s.borrow_mut().range(Unbounded, Unbounded).unwrap();
    assert_eq!(all, vec![(b"b".to_vec(), b"b".to_vec())]);
    // An out-of-order tombstone inside the history.
    assert_eq!(put(&s, b"b", Some(b"b2"), 30), VersionedPut::Latest);
    assert_eq!(put(&s, b"b", None, 20), VersionedPut::OutOfOrder);
    assert_eq!(as_of(&s, b"b", 19), v(10, b"b"));
    assert_eq!(as_of(&s, b"b", 25), None);
    assert_eq!(as_of(&s, b"b", 30), v(30, b"b2"));
    // A value after the tombstone.
    assert_eq!(put(&s, b"a", Some(b"v3"), 30), VersionedPut::Latest);
    assert_eq!(s.borrow_mut().get(b"a").unwrap(), Some(b"v3".to_vec()));
    assert_eq!(as_of(&s, b"a", 25), None);
    assert_eq!(as_of(&s, b"a", 12), v(10, b"v1"));
    // A tombstone for a key that never existed is a version too.
    assert_eq!(put(&s, b"c", None, 30), VersionedPut::Latest);
    assert_eq!(s.borrow_mut().get(b"c").unwrap(), None);
}

#[test]
fn expired_puts_store_nothing() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let s = open(&task, 10);
    put(&s, b"a", Some(b"new"), 100);
    commit(&task, &s, 1);
    let before = raw(&task);
    assert_eq!(put(&s, b"b", Some(b"x"), 89), VersionedPut::Expired);
    assert_eq!(put(&s, b"a", Some(b"x"), 89), VersionedPut::Expired);
    assert_eq!(put(&s, b"a", None, i64::MIN), VersionedPut::Expired);
    assert_eq!(s.borrow_mut().get(b"b").unwrap(), None);
    assert_eq!(as_of(&s, b"b", 95), None);
    assert_eq!(as_of(&s, b"a", 100), v(100, b"new"));
    assert_eq!(as_of(&s, b"a", 95), None);
    assert_eq!(s.borrow_mut().observed_stream_time().unwrap(), 100);
    assert!(s.borrow_mut().flush().unwrap().is_empty(), "nothing changed");
    task.commit(&cp(2)).unwrap();
    assert_eq!(raw(&task), before);
    // Observed stream time minus the retention itself is still in.
    assert_eq!(put(&s, b"a", Some(b"old"), 90), VersionedPut::OutOfOrder);
    assert_eq!(as_of(&s, b"a", 90), v(90, b"old"));
}

#[test]
fn as_of_older_than_the_retention_finds_nothing() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let s = open(&task, 10);
    put(&s, b"a", Some(b"v1"), 50);
    put(&s, b"a", Some(b"v2"), 100);
    assert_eq!(as_of(&s, b"a", 95), v(50, b"v1"), "still valid inside the retention");
    assert_eq!(as_of(&s, b"a", 90), v(50, b"v1"));
    assert_eq!(as_of(&s, b"a", 89), None);
    assert_eq!(as_of(&s, b"a", 50), None);
    // The extremes saturate instead of wrapping.
    let s2 = task.open_versioned("max", i64::MAX).unwrap();
    s2.borrow_mut().put_versioned(b"k", Some(b"x"), i64::MIN).unwrap();
    assert_eq!(
        s2.borrow_mut().put_versioned(b"k", Some(b"y"), i64::MAX).unwrap(),
        VersionedPut::Latest
    );
    let mut out = Vec::new();
    assert_eq!(s2.borrow_mut().get_as_of(b"k", 0, &mut out).unwrap(), Some(i64::MIN));
    assert_eq!(out, b"x");
    assert_eq!(s2.borrow_mut().get_as_of(b"k", -1, &mut out).unwrap(), None, "cutoff 0");
    let put = s2.borrow_mut().put_versioned(b"k", None, -1).unwrap();
    assert_eq!(put, VersionedPut::Expired);
}

#[test]
fn history_is_purged_on_write() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let s = open(&task, 10);
    put(&s, b"a", Some(b"v0"), 0);
    put(&s, b"a", Some(b"v5"), 5);
    put(&s, b"b", Some(b"b"), 3);
    commit(&task, &s, 1);
    assert_eq!(raw(&task).1, vec![(b"a".to_vec(), 0)]);
    // Cutoff 10: v0 (followed by v5) goes, v5 (followed by v20) stays.
    put(&s, b"a", Some(b"v20"), 20);
    assert_eq!(as_of(&s, b"a", 10), v(5, b"v5"));
    let records = commit(&task, &s, 2);
    assert!(
        records
            .iter()
            .any(|r| r.value.is_none() && history_ts(&r.key) == Some(0)),
        "the purge reaches the changelog as a tombstone: {records:?}"
    );
    assert_eq!(raw(&task).1, vec![(b"a".to_vec(), 5)]);
    // Cutoff 20: v5 goes (v20 is valid from the cutoff on).
    put(&s, b"a", Some(b"v30"), 30);
    commit(&task, &s, 3);
    let (latest, history, observed) = raw(&task);
    assert_eq!(history, vec![(b"a".to_vec(), 20)]);
    assert_eq!(observed, Some((30, 10)));
    assert_eq!(latest.len(), 2, "b's newest version stays whatever its age");
    assert_eq!(as_of(&s, b"a", 20), v(20, b"v20"));
    assert_eq!(as_of(&s, b"a", 19), None);
    // a newest + a@20 + b newest + observed time.
    assert_eq!(s.borrow().approximate_len(), 4);
    // A version moved to history and purged before any flush never
    // reaches sled.
    put(&s, b"c", Some(b"c1"), 30);
    put(&s, b"c", Some(b"c2"), 31);
    put(&s, b"c", Some(b"c3"), 45);
    commit(&task, &s, 4);
    assert_eq!(
        raw(&task).1,
        vec![(b"a".to_vec(), 20), (b"c".to_vec(), 31)],
        "a is purged only when written"
    );
    assert_eq!(s.borrow().approximate_len(), 6);
}

#[test]
fn the_newest_version_is_kept_whatever_its_age() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let s = open(&task, 10);
    put(&s, b"a", Some(b"old"), 0);
    put(&s, b"b", Some(b"x"), 1000);
    put(&s, b"a", Some(b"older"), -5); // expired
    assert_eq!(s.borrow_mut().get(b"a").unwrap(), Some(b"old".to_vec()));
    assert_eq!(as_of(&s, b"a", 995), v(0, b"old"));
    assert_eq!(as_of(&s, b"a", 989), None, "as of before the retention");
    let mut out = Vec::new();
    assert_eq!(s.borrow_mut().get_latest(b"a", &mut out).unwrap(), Some(0));
    // Rewriting the key at the cutoff moves the old version into history,
    // where it is purged at once: from the cutoff on its successor is valid.
    assert_eq!(put(&s, b"a", Some(b"new"), 990), VersionedPut::Latest);
    assert_eq!(as_of(&s, b"a", 990), v(990, b"new"));
    commit(&task, &s, 1);
    assert!(
        raw(&task).1.is_empty(),
        "a@0 is unreachable: its successor is at the cutoff"
    );
}

#[test]
fn key_value_view_sees_newest_values_only() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mut task = db.task("0_0", 1 << 20).unwrap();
    let kv = task.key_value(&vspec(100)).unwrap();
    let vs = task.versioned(&vspec(100)).unwrap();
    // Nothing observed yet: plain writes are at 0.
    kv.borrow_mut().put(b"a", b"1").unwrap();
    assert_eq!(vs.borrow_mut().observed_stream_time().unwrap(), 0);
    vs.borrow_mut().put_versioned(b"b", Some(b"b1"), 50).unwrap();
    // Now at the observed stream time (50): a@0 becomes history.
    kv.borrow_mut().put(b"a", b"2").unwrap();
    let mut out = Vec::new();
    assert_eq!(vs.borrow_mut().get_as_of(b"a", 10, &mut out).unwrap(), Some(0));
    assert_eq!(out, b"1");
    assert_eq!(vs.borrow_mut().get_latest(b"a", &mut out).unwrap(), Some(50));
    kv.borrow_mut().delete(b"b").unwrap();
    vs.borrow_mut().put_versioned(b"c", Some(b"c"), 40).unwrap();
    vs.borrow_mut().put_versioned(b"c", Some(b"c-old"), 30).unwrap();
    // Keys that look like the layout's own bytes.
    kv.borrow_mut().put(&[HISTORY], b"h").unwrap();
    kv.borrow_mut().put(OBSERVED_KEY, b"o").unwrap();
    kv.borrow_mut().put(b"", b"empty").unwrap();

    let mut k = kv.borrow_mut();
    assert_eq!(k.get(b"a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(k.get(b"b").unwrap(), None);
    assert_eq!(k.get(b"c").unwrap(), Some(b"c".to_vec()));
    let all = k.range(Unbounded, Unbounded).unwrap();
    let want: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"".to_vec(), b"empty".to_vec()),
        (vec![HISTORY], b"h".to_vec()),
        (OBSERVED_KEY.to_vec(), b"o".to_vec()),
        (b"a".to_vec(), b"2".to_vec()),
        (b"c".to_vec(), b"c".to_vec()),
    ];
    assert_eq!(all, want);
    let some = k.range(Excluded(&b""[..]), Included(&b"b"[..])).unwrap();
    assert_eq!(some, want[1..4].to_vec());
    assert_eq!(k.range(Included(&b"b"[..]), Excluded(&b"c"[..])).unwrap(), vec![]);
    assert_eq!(k.range(Included(&b"z"[..]), Excluded(&b"a"[..])).unwrap(), vec![]);
    // update (get, then put at the observed time).
    let (mut old, mut new) = (Vec::new(), Vec::new());
    k.update(b"a", &mut old, &mut new, &mut |cur, out| {
        assert_eq!(cur, Some(&b"2"[..]));
        out.extend_from_slice(b"3");
        true
    })
    .unwrap();
    assert_eq!(k.get(b"a").unwrap(), Some(b"3".to_vec()));
}

#[test]
fn supplier_shares_the_versioned_instance_and_checks_kinds() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mut task = db.task("0_0", 1 << 20).unwrap();
    let vs = task.versioned(&vspec(100)).unwrap();
    let kv = task.key_value(&vspec(100)).unwrap();
    let concrete = task.open_versioned(S, 5).unwrap();
    vs.borrow_mut().put_versioned(b"k", Some(b"v"), 7).unwrap();
    assert_eq!(kv.borrow_mut().get(b"k").unwrap(), Some(b"v".to_vec()), "same instance");
    assert_eq!(concrete.borrow().history_retention_ms(), 100, "first open wins");
    assert!(task.cache_bytes(S) > 0);

    let err = task.window(&vspec(100)).err().unwrap();
    assert!(err.message.contains("versioned"), "{err}");
    assert!(task.versioned(&spec(StoreKind::KeyValue)).is_err());
    assert!(task.versioned(&spec(StoreKind::Window { retention_ms: 1 })).is_err());
    let err = task.open_key_value(S).err().unwrap();
    assert!(err.message.contains("already open as a versioned"), "{err}");
    assert!(task.open_window(S, 1).is_err());
    let _kv = task.open_key_value("plain").unwrap();
    let err = task.open_versioned("plain", 1).err().unwrap();
    assert!(err.message.contains("already open as a key-value store"), "{err}");
    let err = task.open_versioned("neg", -1).err().unwrap();
    assert!(err.message.contains("negative"), "{err}");
    // Dropped, the name may be reopened as another kind.
    drop((vs, kv, concrete));
    assert!(task.open_key_value(S).is_ok());
}

/// What the store answers for `key` at a set of times, for comparing
/// stores and readers.
fn answers(s: &Store, key: &[u8]) -> Vec<Option<(i64, Vec<u8>)>> {
    [i64::MIN, 0, 5, 9, 10, 15, 20, 25, 30, 35, i64::MAX]
        .iter()
        .map(|&t| as_of(s, key, t))
        .collect()
}

fn reader_answers(r: &StoreReader, key: &[u8]) -> Vec<Option<(i64, Vec<u8>)>> {
    [i64::MIN, 0, 5, 9, 10, 15, 20, 25, 30, 35, i64::MAX]
        .iter()
        .map(|&t| r.read_versioned(S, key, Some(t)).unwrap())
        .collect()
}

/// A store with history, tombstones and a purged version.
fn fill(s: &Store) {
    put(s, b"a", Some(b"a0"), 0);
    put(s, b"a", Some(b"a10"), 10);
    put(s, b"a", Some(b"a20"), 20);
    put(s, b"b", Some(b"b5"), 5);
    put(s, b"b", None, 15);
    put(s, b"c", Some(b"c30"), 30);
    put(s, b"c", Some(b"c12"), 12);
    put(s, b"a", Some(b"a25"), 25);
    put(s, b"d", None, 30);
}

#[test]
fn versions_and_stream_time_survive_reopen_and_restore() {
    let dir = TempDir::new().unwrap();
    let keys: [&[u8]; 5] = [b"a", b"b", b"c", b"d", b"e"];
    let (expect, log) = {
        let db = StateDb::open(dir.path()).unwrap();
        let task = db.task("0_0", 1 << 20).unwrap();
        let s = open(&task, 20);
        fill(&s);
        let mut log = commit(&task, &s, 1);
        put(&s, b"e", Some(b"e"), 31);
        log.extend(commit(&task, &s, 2));
        let expect: Vec<_> = keys.iter().map(|k| answers(&s, k)).collect();
        assert_eq!(expect[0][1], None, "as of 0 is before the retention (31 - 20)");
        assert_eq!(expect[0][5], v(10, b"a10"));
        // Not committed: gone after the reopen.
        put(&s, b"a", Some(b"lost"), 40);
        s.borrow_mut().flush().unwrap();
        db.flush_to_disk().unwrap();
        (expect, log)
    };
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let s = open(&task, 20);
    assert_eq!(s.borrow_mut().observed_stream_time().unwrap(), 31);
    let got: Vec<_> = keys.iter().map(|k| answers(&s, k)).collect();
    assert_eq!(got, expect);
    assert_eq!(
        put(&s, b"a", Some(b"x"), 10),
        VersionedPut::Expired,
        "expiry by the reloaded time"
    );

    // The changelog rebuilds the same store elsewhere.
    let dir2 = TempDir::new().unwrap();
    let db2 = StateDb::open(dir2.path()).unwrap();
    let task2 = db2.task("0_0", 0).unwrap();
    let s2 = open(&task2, 20);
    assert_eq!(s2.borrow_mut().observed_stream_time().unwrap(), i64::MIN);
    for chunk in log.chunks(3) {
        task2.restore(S, chunk, &cp(2)).unwrap();
    }
    assert_eq!(
        s2.borrow_mut().observed_stream_time().unwrap(),
        31,
        "an open store reloads the time after a restore"
    );
    let got: Vec<_> = keys.iter().map(|k| answers(&s2, k)).collect();
    assert_eq!(got, expect);
    assert_eq!(raw(&task2), raw(&task));
    assert_eq!(s2.borrow().approximate_len(), s.borrow().approximate_len());

    // A wipe forgets the time, too.
    task2.wipe().unwrap();
    assert_eq!(s2.borrow_mut().observed_stream_time().unwrap(), i64::MIN);
    assert_eq!(put(&s2, b"a", Some(b"x"), 0), VersionedPut::Latest);
}

#[test]
fn readers_return_what_the_store_does_after_commit() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let s = open(&task, 20);
    fill(&s);
    assert_eq!(task.read_versioned(S, b"a", None).unwrap(), None, "not committed yet");
    commit(&task, &s, 1);
    put(&s, b"a", Some(b"uncommitted"), 30);
    put(&s, b"f", Some(b"uncommitted"), 30);
    let reader = task.reader();
    let keys: [&[u8]; 6] = [b"a", b"b", b"c", b"d", b"e", b"f"];
    let (latest, all, scan) = std::thread::spawn(move || {
        let latest: Vec<_> = keys
            .iter()
            .map(|k| reader.read_versioned(S, k, None).unwrap())
            .collect();
        let all: Vec<_> = keys.iter().map(|k| reader_answers(&reader, k)).collect();
        let from: Bound<&[u8]> = Excluded(b"a");
        (latest, all, reader.scan_versioned(S, from, Unbounded).unwrap())
    })
    .join()
    .unwrap();
    assert_eq!(
        latest,
        vec![v(25, b"a25"), None, v(30, b"c30"), None, None, None],
        "newest committed versions, tombstones hidden"
    );
    assert_eq!(scan, vec![(b"c".to_vec(), b"c30".to_vec())]);
    assert_eq!(task.scan_versioned(S, Unbounded, Excluded(&b"b"[..])).unwrap().len(), 1);
    assert!(task
        .scan_versioned(S, Included(&b"c"[..]), Excluded(&b"a"[..]))
        .unwrap()
        .is_empty());
    // Equal to the store once everything is committed.
    let s_after_commit: Vec<_> = {
        // Drop the uncommitted writes: reopen the store on the committed data.
        drop(s);
        let s = open(&task, 20);
        keys.iter().map(|k| answers(&s, k)).collect()
    };
    assert_eq!(all, s_after_commit);
    assert_eq!(task.read_versioned(S, b"a", Some(12)).unwrap(), v(10, b"a10"));
    assert_eq!(
        task.read_versioned(S, b"a", Some(9)).unwrap(),
        None,
        "older than the retention"
    );
    assert_eq!(task.read_versioned(S, b"c", Some(12)).unwrap(), v(12, b"c12"));
    assert_eq!(task.read_versioned(S, b"b", Some(14)).unwrap(), v(5, b"b5"));
    assert_eq!(task.read_versioned(S, b"b", Some(15)).unwrap(), None);
    assert_eq!(task.read_versioned("other", b"a", None).unwrap(), None);
}
