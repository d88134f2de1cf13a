//! Tests of the stores over a real sled database in a temp dir.

use std::ops::Bound::{self, Excluded, Included, Unbounded};

use tempfile::TempDir;

use crate::layout::CHECKPOINT_KEY;
use crate::*;

fn cp(offset: i64) -> Vec<u8> {
    offset.to_be_bytes().to_vec()
}

fn kv_spec(name: &str) -> StoreSpec {
    StoreSpec {
        name: name.to_string(),
        kind: StoreKind::KeyValue,
        logged: true,
    }
}

fn window_spec(name: &str) -> StoreSpec {
    StoreSpec {
        name: name.to_string(),
        kind: StoreKind::Window { retention_ms: 1000 },
        logged: true,
    }
}

fn rec(key: &[u8], value: Option<&[u8]>) -> ChangelogRecord {
    ChangelogRecord {
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
    }
}

#[test]
fn put_get_delete_and_cache_stats() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mut task = db.task("0_0", 1 << 20).unwrap();
    let store = task.key_value(&kv_spec("counts")).unwrap();
    let mut s = store.borrow_mut();
    assert_eq!(s.name(), "counts");

    assert_eq!(s.get(b"a").unwrap(), None);
    assert_eq!(s.get(b"a").unwrap(), None);
    assert_eq!(
        s.cache_stats(),
        CacheStats { hits: 1, misses: 1 },
        "an absent key is cached after the first miss"
    );
    s.put(b"a", b"1").unwrap();
    s.put(b"b", b"").unwrap();
    let mut out = vec![9, 9];
    assert!(s.get_into(b"b", &mut out).unwrap());
    assert!(out.is_empty(), "an empty value is present and clears out");
    assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
    s.delete(b"a").unwrap();
    assert!(!s.get_into(b"a", &mut out).unwrap());
    assert_eq!(s.approximate_len(), 1);
    assert_eq!(s.cache_stats().misses, 1);
}

#[test]
fn commit_writes_data_and_checkpoint_and_uncommitted_data_is_lost() {
    let dir = TempDir::new().unwrap();
    {
        let db = StateDb::open(dir.path()).unwrap();
        let task = db.task("1_3", 1 << 20).unwrap();
        assert_eq!(task.checkpoint().unwrap(), None);
        let store = task.open_key_value("t").unwrap();
        let mut s = store.borrow_mut();
        s.put(b"k1", b"v1").unwrap();
        s.put(b"k2", b"v2").unwrap();
        let records = s.flush().unwrap();
        assert_eq!(records, vec![rec(b"k1", Some(b"v1")), rec(b"k2", Some(b"v2"))]);
        assert_eq!(task.read_kv("t", b"k1").unwrap(), None, "flush only stages");
        assert_eq!(task.pending_len(), 2);
        task.commit(&cp(10)).unwrap();
        assert_eq!(task.pending_len(), 0);
        assert_eq!(task.read_kv("t", b"k1").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(task.checkpoint().unwrap(), Some(cp(10)));

        // Staged but never committed, and merely cached: both must vanish.
        s.put(b"k1", b"changed").unwrap();
        s.delete(b"k2").unwrap();
        s.flush().unwrap();
        s.put(b"k3", b"dirty").unwrap();
        assert_eq!(s.get(b"k1").unwrap(), Some(b"changed".to_vec()));
        db.flush_to_disk().unwrap();
    }
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("1_3", 1 << 20).unwrap();
    assert_eq!(task.checkpoint().unwrap(), Some(cp(10)));
    let store = task.open_key_value("t").unwrap();
    let mut s = store.borrow_mut();
    assert_eq!(s.get(b"k1").unwrap(), Some(b"v1".to_vec()));
    assert_eq!(s.get(b"k2").unwrap(), Some(b"v2".to_vec()));
    assert_eq!(s.get(b"k3").unwrap(), None);
    assert_eq!(s.approximate_len(), 2);
}

#[test]
fn two_stores_commit_atomically_and_stay_apart() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_1", 1 << 20).unwrap();
    // "a" + key "b.." and "ab" must not meet: prefixes carry the length.
    let a = task.open_key_value("a").unwrap();
    let ab = task.open_key_value("ab").unwrap();
    a.borrow_mut().put(b"bx", b"from a").unwrap();
    ab.borrow_mut().put(b"x", b"from ab").unwrap();
    a.borrow_mut().flush().unwrap();
    ab.borrow_mut().flush().unwrap();
    task.commit(&cp(1)).unwrap();
    let all_a = task.scan_kv("a", Unbounded, Unbounded).unwrap();
    assert_eq!(all_a, vec![(b"bx".to_vec(), b"from a".to_vec())]);
    let all_ab = ab.borrow_mut().range(Unbounded, Unbounded).unwrap();
    assert_eq!(all_ab, vec![(b"x".to_vec(), b"from ab".to_vec())]);
    assert_eq!(task.read_kv("ab", b"bx").unwrap(), None);
}

#[test]
fn reads_between_flush_and_commit_see_staged_data_even_without_cache() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 0).unwrap();
    let store = task.open_key_value("s").unwrap();
    let mut s = store.borrow_mut();
    s.put(b"old", b"1").unwrap();
    s.flush().unwrap();
    task.commit(&cp(1)).unwrap();

    s.put(b"k", b"v").unwrap();
    assert!(
        s.wants_flush(),
        "a zero budget wants a flush as soon as anything is dirty"
    );
    s.delete(b"old").unwrap();
    s.flush().unwrap();
    assert!(!s.wants_flush());
    assert_eq!(s.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.get(b"old").unwrap(), None);
    assert_eq!(
        s.range(Unbounded, Unbounded).unwrap(),
        vec![(b"k".to_vec(), b"v".to_vec())]
    );
    task.commit(&cp(2)).unwrap();
    assert_eq!(s.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(task.read_kv("s", b"old").unwrap(), None);
    // With a zero budget nothing clean stays cached: reads go to sled.
    let misses = s.cache_stats().misses;
    s.put(b"other", b"x").unwrap();
    assert_eq!(s.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.cache_stats().misses, misses + 2);
}

#[test]
fn range_merges_cache_over_sled() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let store = task.open_key_value("s").unwrap();
    let mut s = store.borrow_mut();
    for k in [b"a", b"b", b"c", b"d"] {
        s.put(k, b"sled").unwrap();
    }
    s.flush().unwrap();
    task.commit(&cp(1)).unwrap();
    s.put(b"b", b"cache").unwrap();
    s.delete(b"c").unwrap();
    s.put(b"bb", b"new").unwrap();
    let got = s.range(Included(&b"b"[..]), Excluded(&b"d"[..])).unwrap();
    assert_eq!(
        got,
        vec![(b"b".to_vec(), b"cache".to_vec()), (b"bb".to_vec(), b"new".to_vec())]
    );
    let all: Vec<Vec<u8>> = s
        .range(Unbounded, Unbounded)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(all, vec![b"a".to_vec(), b"b".to_vec(), b"bb".to_vec(), b"d".to_vec()]);
    assert!(s.range(Included(&b"d"[..]), Excluded(&b"a"[..])).unwrap().is_empty());
}

#[test]
fn approximate_len_corrects_blind_writes_at_flush() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    {
        let store = task.open_key_value("s").unwrap();
        let mut s = store.borrow_mut();
        s.put(b"a", b"1").unwrap();
        s.put(b"b", b"1").unwrap();
        s.flush().unwrap();
        task.commit(&cp(1)).unwrap();
    }
    // A new instance of the store: nothing cached, so these writes are blind.
    let store = task.open_key_value("s").unwrap();
    let mut s = store.borrow_mut();
    assert_eq!(s.approximate_len(), 2, "counted at open");
    s.put(b"a", b"2").unwrap(); // exists: the guess "absent" is wrong
    s.delete(b"zz").unwrap(); // absent: the guess "present" is wrong
    s.delete(b"b").unwrap(); // exists: right
    s.flush().unwrap();
    assert_eq!(s.approximate_len(), 1);
}

#[test]
fn corrupt_checkpoint_is_an_error() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    task.tree().insert(CHECKPOINT_KEY, &[9, 0, 0][..]).unwrap();
    let err = task.checkpoint().unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    task.tree().insert(CHECKPOINT_KEY, &[][..]).unwrap();
    assert!(task.checkpoint().is_err());
}

#[test]
fn bad_store_names_are_errors_naming_the_store() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mut task = db.task("0_0", 1 << 20).unwrap();
    let long = "n".repeat(300);
    let err = task.key_value(&kv_spec(&long)).err().unwrap();
    assert_eq!(err.store, long);
    assert!(task.window(&window_spec("")).is_err());
    assert!(task.read_kv(&long, b"k").is_err());
    assert!(task.restore(&long, &[], &cp(0)).is_err());
}

#[test]
fn supplier_shares_instances_and_checks_kinds() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mut task = db.task("0_0", 1 << 20).unwrap();
    let a = task.key_value(&kv_spec("t")).unwrap();
    let b = task.key_value(&kv_spec("t")).unwrap();
    a.borrow_mut().put(b"k", b"v").unwrap();
    assert_eq!(b.borrow_mut().get(b"k").unwrap(), Some(b"v".to_vec()), "same instance");
    assert!(task.window(&window_spec("t")).is_err(), "open as key-value");
    assert!(task.window(&kv_spec("w")).is_err(), "declared key-value");
    assert!(task.key_value(&window_spec("w")).is_err(), "declared window");
    let w = task.open_window("w", 5000).unwrap();
    assert_eq!(w.borrow().retention_ms(), 5000);
}

#[test]
fn window_keys_are_ordered_by_time_across_zero() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mut task = db.task("0_0", 1 << 20).unwrap();
    let store = task.window(&window_spec("w")).unwrap();
    let mut s = store.borrow_mut();
    let starts = [5, -1, i64::MIN, 0, -300, i64::MAX, 1];
    // Half before the commit (then in sled), half after (in the cache).
    for (i, &start) in starts.iter().enumerate() {
        s.put(b"k", start, &start.to_be_bytes()).unwrap();
        s.put(b"j", start, b"j").unwrap();
        if i == 3 {
            s.flush().unwrap();
            task.commit(&cp(1)).unwrap();
        }
    }
    let mut sorted = starts.to_vec();
    sorted.sort();
    let fetched = s.fetch(b"k", i64::MIN, i64::MAX).unwrap();
    assert_eq!(fetched.iter().map(|(t, _)| *t).collect::<Vec<_>>(), sorted);
    for (t, v) in &fetched {
        assert_eq!(v, &t.to_be_bytes());
    }
    let all = s.fetch_all(-300, 1).unwrap();
    let expect: Vec<(Vec<u8>, i64)> = [-300, -1, 0, 1]
        .iter()
        .flat_map(|&t| [(b"j".to_vec(), t), (b"k".to_vec(), t)])
        .collect();
    assert_eq!(all.iter().map(|(k, t, _)| (k.clone(), *t)).collect::<Vec<_>>(), expect);
    assert_eq!(s.fetch(b"k", -1, 0).unwrap().len(), 2);
    assert!(s.fetch(b"k", 1, 0).unwrap().is_empty());
    assert!(
        s.fetch(b"", i64::MIN, i64::MAX).unwrap().is_empty(),
        "key must match exactly"
    );

    // On disk, too, the raw store keys are ordered by time.
    s.flush().unwrap();
    task.commit(&cp(2)).unwrap();
    let raw = task.scan_kv("w", Unbounded, Unbounded).unwrap();
    let times: Vec<i64> = raw
        .iter()
        .filter(|(k, _)| split_window_key(k).unwrap().1 == b"k")
        .map(|(k, _)| split_window_key(k).unwrap().0)
        .collect();
    assert_eq!(times, sorted);
    assert_eq!(raw[0].0, window_key(i64::MIN, b"j"));
}

/// Purged windows reach sled and the changelog as deletes, except those
/// that never reached them: a window created and purged between two
/// flushes leaves no trace (no tombstone for a key nobody ever logged).
#[test]
fn purge_before_logs_tombstones_for_windows_sled_had() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let store = task.open_window("w", 100).unwrap();
    let mut s = store.borrow_mut();
    s.put(b"a", -20, b"committed").unwrap();
    s.put(b"a", 10, b"committed").unwrap();
    s.flush().unwrap();
    task.commit(&cp(1)).unwrap();
    s.put(b"b", -5, b"dirty").unwrap();
    s.put(b"b", 0, b"kept").unwrap();
    s.delete(b"a", 10).unwrap();
    s.put(b"c", -1, b"x").unwrap();
    s.delete(b"c", -1).unwrap(); // already gone: not counted

    assert_eq!(s.purge_before(0).unwrap(), 2);
    assert_eq!(s.approximate_len(), 1);
    assert!(s.fetch_all(i64::MIN, -1).unwrap().is_empty());
    let records = s.flush().unwrap();
    assert_eq!(
        records,
        vec![
            rec(&window_key(-20, b"a"), None),
            rec(&window_key(0, b"b"), Some(b"kept")),
            rec(&window_key(10, b"a"), None),
        ]
    );
    task.commit(&cp(2)).unwrap();
    let raw = task.scan_kv("w", Unbounded, Unbounded).unwrap();
    assert_eq!(raw, vec![(window_key(0, b"b"), b"kept".to_vec())]);
    assert_eq!(s.purge_before(0).unwrap(), 0);
    assert_eq!(s.purge_before(i64::MIN).unwrap(), 0);
}

/// In a window store, a key put and deleted between two flushes is logged
/// only if an earlier flush logged it: known from a read, from the hint of
/// a write, or from sled at flush time for a blind write. A key flushed but
/// not committed yet still gets its tombstone. (Key-value stores log every
/// delete: tables forward their flushed records, and a table's tombstone
/// for a key that never existed is still an output.)
#[test]
fn window_deletes_of_keys_never_flushed_are_not_logged() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let kv = task.open_key_value("kv").unwrap();
    kv.borrow_mut().put(b"k", b"v").unwrap();
    kv.borrow_mut().delete(b"k").unwrap();
    assert_eq!(kv.borrow_mut().flush().unwrap(), vec![rec(b"k", None)]);

    let store = task.open_window("w", 1_000).unwrap();
    let mut s = store.borrow_mut();
    let wk = |key: &[u8], start: i64| window_key(start, key);
    s.put(b"old", 0, b"1").unwrap();
    s.flush().unwrap();
    task.commit(&cp(1)).unwrap();

    // Blind writes (no read before) of a new and of a committed window.
    s.put(b"new", 0, b"2").unwrap();
    s.delete(b"new", 0).unwrap();
    s.delete(b"old", 0).unwrap();
    // Read, then write, a window sled does not have; then purge it.
    let mut out = Vec::new();
    assert!(!s.get_into(b"read", 5, &mut out).unwrap());
    s.put(b"read", 5, b"3").unwrap();
    assert_eq!(s.purge_before(10).unwrap(), 1);
    assert_eq!(s.flush().unwrap(), vec![rec(&wk(b"old", 0), None)]);
    assert_eq!(s.approximate_len(), 0);

    // Flushed (staged, not committed), then deleted: the put is in the
    // changelog, so the delete must be too; reads never see the staged put
    // come back.
    s.put(b"staged", 20, b"4").unwrap();
    assert_eq!(s.flush().unwrap(), vec![rec(&wk(b"staged", 20), Some(b"4"))]);
    s.delete(b"staged", 20).unwrap();
    assert_eq!(s.flush().unwrap(), vec![rec(&wk(b"staged", 20), None)]);
    assert!(!s.get_into(b"staged", 20, &mut out).unwrap());
    s.put(b"staged", 20, b"5").unwrap();
    s.delete(b"staged", 20).unwrap();
    assert_eq!(s.flush().unwrap(), vec![]);
    assert!(!s.get_into(b"staged", 20, &mut out).unwrap());
    task.commit(&cp(2)).unwrap();
    assert_eq!(task.scan_kv("w", Unbounded, Unbounded).unwrap(), vec![]);
    assert!(!s.get_into(b"staged", 20, &mut out).unwrap());
}

#[test]
fn restore_writes_records_and_checkpoint_and_resets_open_stores() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("2_0", 1 << 20).unwrap();
    let store = task.open_key_value("t").unwrap();
    assert_eq!(store.borrow_mut().get(b"a").unwrap(), None, "cached as absent");
    task.restore(
        "t",
        &[
            rec(b"a", Some(b"1")),
            rec(b"b", Some(b"1")),
            rec(b"a", Some(b"2")),
            rec(b"b", None),
        ],
        &cp(4),
    )
    .unwrap();
    assert_eq!(task.checkpoint().unwrap(), Some(cp(4)));
    assert_eq!(store.borrow().approximate_len(), 1);
    let mut s = store.borrow_mut();
    assert_eq!(s.get(b"a").unwrap(), Some(b"2".to_vec()), "later records win");
    assert_eq!(s.get(b"b").unwrap(), None);
    assert_eq!(s.approximate_len(), 1);

    s.put(b"c", b"3").unwrap();
    s.flush().unwrap();
    assert!(
        task.restore("t", &[], &cp(5)).is_err(),
        "refused while changes are staged"
    );
}

#[test]
fn wipe_deletes_everything_of_the_task_only() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let other = db.task("0_1", 1 << 20).unwrap();
    let store = task.open_key_value("t").unwrap();
    store.borrow_mut().put(b"a", b"1").unwrap();
    store.borrow_mut().flush().unwrap();
    task.commit(&cp(1)).unwrap();
    other.restore("t", &[rec(b"a", Some(b"other"))], &cp(7)).unwrap();
    store.borrow_mut().put(b"b", b"staged").unwrap();
    store.borrow_mut().flush().unwrap();

    task.wipe().unwrap();
    assert_eq!(task.checkpoint().unwrap(), None);
    assert_eq!(task.pending_len(), 0);
    let mut s = store.borrow_mut();
    assert_eq!(s.get(b"a").unwrap(), None);
    assert_eq!(s.get(b"b").unwrap(), None);
    assert_eq!(s.approximate_len(), 0);
    assert!(s.flush().unwrap().is_empty());
    task.commit(&cp(2)).unwrap();
    assert!(task.scan_kv("t", Unbounded, Unbounded).unwrap().is_empty());
    assert_eq!(other.read_kv("t", b"a").unwrap(), Some(b"other".to_vec()));
    assert_eq!(other.checkpoint().unwrap(), Some(cp(7)));
}

#[test]
fn reader_sees_committed_data_from_another_thread() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let task = db.task("0_0", 1 << 20).unwrap();
    let store = task.open_key_value("t").unwrap();
    store.borrow_mut().put(b"a", b"1").unwrap();
    store.borrow_mut().put(b"b", b"2").unwrap();
    store.borrow_mut().flush().unwrap();
    task.commit(&cp(1)).unwrap();
    store.borrow_mut().put(b"c", b"uncommitted").unwrap();
    let reader = task.reader();
    let (one, scan) = std::thread::spawn(move || {
        let bound: Bound<&[u8]> = Excluded(b"a");
        (
            reader.read_kv("t", b"a").unwrap(),
            reader.scan_kv("t", bound, Unbounded).unwrap(),
        )
    })
    .join()
    .unwrap();
    assert_eq!(one, Some(b"1".to_vec()));
    assert_eq!(scan, vec![(b"b".to_vec(), b"2".to_vec())]);
}

#[test]
fn open_twice_is_an_error_not_a_panic() {
    let dir = TempDir::new().unwrap();
    let _db = StateDb::open(dir.path()).unwrap();
    let err = StateDb::open_waiting(dir.path(), std::time::Duration::from_millis(20))
        .err()
        .expect("the directory is locked");
    assert!(err.message.contains("lock"), "{err}");
    assert_eq!(err.store, dir.path().display().to_string());
}

#[test]
fn thread_safety_of_the_public_types() {
    fn shareable<T: Send + Sync>() {}
    fn cloneable<T: Clone>() {}
    shareable::<StateDb>();
    shareable::<StoreReader>();
    cloneable::<StoreReader>();
    cloneable::<TaskState>();
}

#[test]
fn cache_bytes_are_reported_per_store() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mut task = db.task("0_0", 1 << 20).unwrap();
    let kv = task.key_value(&kv_spec("counts")).unwrap();
    let win = task.window(&window_spec("windows")).unwrap();
    assert_eq!(task.cache_bytes("counts"), 0);
    kv.borrow_mut().put(b"abc", b"12345").unwrap();
    assert_eq!(
        task.cache_bytes("counts"),
        (3 + 5 + crate::cache::ENTRY_OVERHEAD) as u64
    );
    win.borrow_mut().put(b"k", 0, b"v").unwrap();
    assert!(task.cache_bytes("windows") > 0);
    assert_eq!(task.cache_bytes("unknown"), 0);
    // Flushed and committed entries stay cached (clean) and still count.
    let _ = kv.borrow_mut().flush().unwrap();
    task.commit(&cp(1)).unwrap();
    assert_eq!(
        task.cache_bytes("counts"),
        (3 + 5 + crate::cache::ENTRY_OVERHEAD) as u64
    );
}

#[test]
fn update_is_get_then_put_with_one_probe() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mut task = db.task("0_0", 1 << 20).unwrap();
    let store = task.key_value(&kv_spec("counts")).unwrap();
    let mut s = store.borrow_mut();
    let (mut old, mut new) = (Vec::new(), Vec::new());
    let mut add_one = |cur: Option<&[u8]>, out: &mut Vec<u8>| {
        let n = cur.map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
        out.extend_from_slice(&(n + 1).to_be_bytes());
        true
    };
    // A miss (sled), then hits (the cache).
    for _ in 0..3 {
        s.update(b"k", &mut old, &mut new, &mut add_one).unwrap();
    }
    assert_eq!(s.get(b"k").unwrap(), Some(3u64.to_be_bytes().to_vec()));
    assert_eq!(s.cache_stats(), CacheStats { hits: 3, misses: 1 });
    assert_eq!(s.approximate_len(), 1);
    // Declining writes nothing.
    s.update(b"k", &mut old, &mut new, &mut |_, _| false).unwrap();
    s.update(b"absent", &mut old, &mut new, &mut |_, _| false).unwrap();
    assert_eq!(s.get(b"absent").unwrap(), None);
    assert_eq!(s.approximate_len(), 1);
    // Committed, the value is in sled; updating again dirties it.
    let records = s.flush().unwrap();
    assert_eq!(records, vec![rec(b"k", Some(&3u64.to_be_bytes()))]);
    task.commit(&cp(1)).unwrap();
    assert_eq!(task.read_kv("counts", b"k").unwrap(), Some(3u64.to_be_bytes().to_vec()));
    s.update(b"k", &mut old, &mut new, &mut add_one).unwrap();
    let records = s.flush().unwrap();
    assert_eq!(records, vec![rec(b"k", Some(&4u64.to_be_bytes()))]);
}

#[test]
fn a_window_update_is_get_then_put_with_one_probe() {
    let dir = TempDir::new().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mut task = db.task("0_0", 1 << 20).unwrap();
    let store = task.window(&window_spec("w")).unwrap();
    let mut s = store.borrow_mut();
    let (mut old, mut new, mut out) = (Vec::new(), Vec::new(), Vec::new());
    let mut add_one = |cur: Option<&[u8]>, out: &mut Vec<u8>| {
        let n = cur.map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
        out.extend_from_slice(&(n + 1).to_be_bytes());
        true
    };
    // A miss (sled), then hits (the cache); another window of the same key
    // is another entry.
    for _ in 0..3 {
        s.update(b"k", 1000, &mut old, &mut new, &mut add_one).unwrap();
    }
    s.update(b"k", 2000, &mut old, &mut new, &mut add_one).unwrap();
    assert!(s.get_into(b"k", 1000, &mut out).unwrap());
    assert_eq!(out, 3u64.to_be_bytes());
    assert!(s.get_into(b"k", 2000, &mut out).unwrap());
    assert_eq!(out, 1u64.to_be_bytes());
    assert_eq!(s.cache_stats(), CacheStats { hits: 4, misses: 2 });
    assert_eq!(s.approximate_len(), 2);
    // Declining writes nothing.
    s.update(b"k", 3000, &mut old, &mut new, &mut |_, _| false).unwrap();
    assert!(!s.get_into(b"k", 3000, &mut out).unwrap());
    assert_eq!(s.approximate_len(), 2);
    // Flushed, the windows are changelog records; updating again dirties
    // only the window updated.
    assert_eq!(s.flush().unwrap().len(), 2);
    task.commit(&cp(1)).unwrap();
    s.update(b"k", 1000, &mut old, &mut new, &mut add_one).unwrap();
    let records = s.flush().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value.as_deref(), Some(&4u64.to_be_bytes()[..]));
    assert_eq!(
        s.fetch(b"k", 0, 5000).unwrap(),
        vec![(1000, 4u64.to_be_bytes().to_vec()), (2000, 1u64.to_be_bytes().to_vec())]
    );
}

#[test]
fn a_corrupt_database_is_moved_aside_and_an_empty_one_opened() {
    let parent = TempDir::new().unwrap();
    let dir = parent.path().join("state");
    {
        let db = StateDb::open(&dir).unwrap();
        let task = db.task("0_0", 1 << 20).unwrap();
        task.commit(&cp(7)).unwrap();
        db.flush_to_disk().unwrap();
    }
    // What a kill while sled writes its files can leave: a snapshot file
    // cut short.
    std::fs::write(dir.join("snap.00000000000000CD"), [0u8, 0, 0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let err = StateDb::open(&dir).err().expect("a corrupt database does not open");
    assert!(err.message.starts_with("the state database is corrupt"), "{err}");
    let (db, aside) = StateDb::open_or_reset(&dir).unwrap();
    let aside = aside.expect("moved aside");
    assert!(
        aside
            .to_string_lossy()
            .starts_with(&format!("{}.corrupt-", dir.display())),
        "{}",
        aside.display()
    );
    assert!(aside.is_dir());
    assert_eq!(
        db.task("0_0", 1 << 20).unwrap().checkpoint().unwrap(),
        None,
        "an empty database"
    );
}
