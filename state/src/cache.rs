//! The write cache of one store: an in-memory overlay over the store's sled
//! data, in the spirit of Kafka Streams' record cache.
//!
//! It exists for two reasons. First, a hot key updated by every record
//! (a count per user, say) should cost a hash lookup and a `memcpy` per
//! record, not a sled write; between commits only its latest value matters.
//! Second, all writes of a task must reach sled in one atomic batch with the
//! task's checkpoint, so they have to wait somewhere until the commit.
//!
//! This module knows nothing about sled: the store (`core.rs`) does the
//! reads on misses, the staging into the task's batch and the length
//! bookkeeping. Keeping the cache pure makes its accounting testable alone.
//!
//! # Entry states
//!
//! * **dirty**: changed since the last flush; only the cache has it.
//! * **pinned**: flushed (staged into the task's pending sled batch) but the
//!   batch is not committed yet. Sled does not have the value yet and the
//!   batch cannot be read, so the entry must stay until the commit: it is
//!   never evicted. An entry flushed at commit count `c` is pinned while the
//!   task's commit count is `<= c`, i.e. `pin = c + 1 > commits`.
//! * **clean**: equal to what sled holds (read from it, or committed since).
//!   Evicting it is always safe.
//!
//! Every dirty or pinned entry's key is also in `unsynced`, an ordered set:
//! range scans only need to merge the entries that differ from sled, and
//! `flush` must emit them in key order, so an ordered index of exactly
//! those keys makes both cheap without giving up hash lookups on the
//! per-record path. A hot key that stays dirty or pinned from one commit to
//! the next stays in the set, so steady-state updates allocate nothing.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use ahash::RandomState;
use weir_topology::store::ChangelogRecord;

/// Bytes charged per cached entry on top of its key and value: the hash
/// table slot, the two `Vec` headers and allocator overhead. It makes
/// `cache_max_bytes` track real memory for small keys and values, where the
/// bookkeeping outweighs the payload.
pub(crate) const ENTRY_OVERHEAD: usize = 64;

/// What the cache knows of a key's presence in sled as of the last flush
/// (which is also what its changelog says), or what a blind write (a put
/// or delete of a key that was not cached) assumed about it, so that the
/// store's length counter can be corrected at flush time instead of
/// reading sled on the per-record path.
///
/// Knowing that sled never had the key lets a flush drop a delete of it
/// outright: a key created and deleted between two flushes (a window that
/// closed and was purged, a pending join record that found its partner)
/// then costs neither a sled delete nor a changelog tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guess {
    /// Sled had the key (`true`) or not as of the last flush.
    Known(bool),
    /// A put of an uncached key assumed the key was absent.
    Absent,
    /// A delete of an uncached key assumed the key was present.
    Present,
}

#[derive(Debug)]
pub(crate) struct Entry {
    /// `None` = deleted (dirty/pinned) or known absent (clean).
    pub value: Option<Vec<u8>>,
    pub dirty: bool,
    /// Whether the key is in `Cache::unsynced` (kept in step with it).
    pub in_set: bool,
    pub guess: Guess,
    /// Commit count the task must reach for this entry's data to be in sled.
    pub pin: u64,
}

impl Entry {
    fn size(&self, key_len: usize) -> usize {
        key_len + self.value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
    }

    fn pinned(&self, commits: u64) -> bool {
        !self.dirty && self.pin > commits
    }

    fn evictable(&self, commits: u64) -> bool {
        !self.dirty && self.pin <= commits
    }
}

/// Byte counters, kept apart from the map so that they can be updated while
/// an entry of the map is borrowed.
#[derive(Debug, Default)]
pub(crate) struct Bytes {
    pub total: usize,
    pub dirty: usize,
    /// Bytes of pinned entries, valid while `last_pin > commits`: all pinned
    /// entries carry the pin of the latest flush, so once the task commits
    /// they all become clean at once and this counter is simply stale.
    pinned: usize,
    last_pin: u64,
}

impl Bytes {
    fn sub(&mut self, key_len: usize, e: &Entry, commits: u64) {
        let s = e.size(key_len);
        self.total -= s;
        if e.dirty {
            self.dirty -= s;
        } else if e.pinned(commits) {
            self.pinned -= s;
        }
    }

    fn add(&mut self, key_len: usize, e: &Entry, commits: u64) {
        let s = e.size(key_len);
        self.total += s;
        if e.dirty {
            self.dirty += s;
        } else if e.pinned(commits) {
            self.pinned += s;
        }
    }

    pub fn pinned(&self, commits: u64) -> usize {
        if self.last_pin > commits {
            self.pinned
        } else {
            0
        }
    }

    /// Bytes that may be dropped right now.
    pub fn evictable(&self, commits: u64) -> usize {
        self.total - self.dirty - self.pinned(commits)
    }
}

pub(crate) struct Cache {
    pub map: HashMap<Vec<u8>, Entry, RandomState>,
    /// Keys of dirty and pinned entries (plus, until the next flush or
    /// eviction tidies them, entries that became clean by a commit).
    pub unsynced: BTreeSet<Vec<u8>>,
    pub bytes: Bytes,
    pub max_bytes: usize,
    /// Whether a flush drops the deletes of keys that sled never had (see
    /// [`Guess`]) instead of staging and logging them. Only for stores
    /// whose flushed records are not forwarded downstream as table changes
    /// (window stores): a table's tombstone for a key that never existed is
    /// still an output record in Kafka Streams' semantics.
    pub elide_unlogged_deletes: bool,
}

impl Cache {
    pub fn new(max_bytes: usize) -> Cache {
        Cache {
            map: HashMap::with_hasher(RandomState::new()),
            unsynced: BTreeSet::new(),
            bytes: Bytes::default(),
            max_bytes,
            elide_unlogged_deletes: false,
        }
    }

    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }

    /// True once dirty data exceeds the limit: time to commit (dirty data
    /// is never evicted, see `StateStore::wants_flush`).
    pub fn wants_flush(&self) -> bool {
        self.bytes.dirty > self.max_bytes
    }

    /// Cache what sled said about `key` after a miss, if there is room.
    ///
    /// A clean entry is admitted only while dirty and pinned data use at
    /// most half the budget. Without that rule, a cache full of dirty data
    /// would admit one clean entry, be over budget, and sweep the whole map
    /// to evict it again, on every read. With a zero budget this never
    /// admits anything, as required.
    pub fn insert_clean(&mut self, key: &[u8], value: Option<&[u8]>, commits: u64) {
        let size = key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD;
        if self.bytes.dirty + self.bytes.pinned(commits) + size > self.max_bytes / 2 {
            return;
        }
        let e = Entry {
            value: value.map(<[u8]>::to_vec),
            dirty: false,
            in_set: false,
            guess: Guess::Known(value.is_some()),
            pin: 0,
        };
        self.bytes.add(key.len(), &e, commits);
        if let Some(old) = self.map.insert(key.to_vec(), e) {
            // Callers only insert after a miss; stay consistent regardless.
            self.bytes.sub(key.len(), &old, commits);
            if old.in_set {
                self.unsynced.remove(key);
            }
        }
        self.maybe_evict(commits);
    }

    /// Record a put (`Some`) or delete (`None`) as a dirty entry. Returns
    /// the previous presence if the key was cached, `None` if the entry is
    /// new (then `guess` records what the caller assumed).
    ///
    /// Overwriting a cached value reuses its buffer: the hot-key case
    /// allocates nothing.
    pub fn write(&mut self, key: &[u8], value: Option<&[u8]>, commits: u64, guess: Guess) -> Option<bool> {
        let prev = if let Some(e) = self.map.get_mut(key) {
            self.bytes.sub(key.len(), e, commits);
            let prev = e.value.is_some();
            match (value, &mut e.value) {
                (Some(v), Some(buf)) => {
                    buf.clear();
                    buf.extend_from_slice(v);
                }
                (Some(v), slot) => *slot = Some(v.to_vec()),
                (None, slot) => *slot = None,
            }
            e.dirty = true;
            self.bytes.add(key.len(), e, commits);
            if !e.in_set {
                e.in_set = true;
                self.unsynced.insert(key.to_vec());
            }
            Some(prev)
        } else {
            let e = Entry {
                value: value.map(<[u8]>::to_vec),
                dirty: true,
                in_set: true,
                guess,
                pin: 0,
            };
            self.bytes.add(key.len(), &e, commits);
            self.map.insert(key.to_vec(), e);
            self.unsynced.insert(key.to_vec());
            None
        };
        if self.bytes.total > self.max_bytes {
            self.maybe_evict(commits);
        }
        prev
    }

    /// Read-modify-write of a cached key: `f` sees the cached value and
    /// writes the new one into `new` (cleared first); if it returns true,
    /// the entry is overwritten exactly as [`write`](Self::write) would.
    /// The new value's buffer is swapped in (the old one is left in `new`
    /// for the next call), so a hot key costs one probe and no copy.
    /// Returns `None` if the key is not cached (nothing was called), else
    /// `Some(None)` if `f` declined and `Some(Some(prev))` with the
    /// previous presence after a write.
    #[inline]
    pub fn update_cached(
        &mut self,
        key: &[u8],
        new: &mut Vec<u8>,
        commits: u64,
        f: &mut weir_topology::store::UpdateFn<'_>,
    ) -> Option<Option<bool>> {
        let e = self.map.get_mut(key)?;
        new.clear();
        if !f(e.value.as_deref(), new) {
            return Some(None);
        }
        self.bytes.sub(key.len(), e, commits);
        let prev = e.value.is_some();
        match &mut e.value {
            Some(buf) => std::mem::swap(buf, new),
            slot => *slot = Some(std::mem::take(new)),
        }
        e.dirty = true;
        self.bytes.add(key.len(), e, commits);
        if !e.in_set {
            e.in_set = true;
            self.unsynced.insert(key.to_vec());
        }
        if self.bytes.total > self.max_bytes {
            self.maybe_evict(commits);
        }
        Some(Some(prev))
    }

    /// Turn every dirty entry into a pinned one, in key order, handing each
    /// to `stage` (which puts it into the task's pending batch), and return
    /// the changelog records. Entries that a commit has made clean leave the
    /// ordered set. Infallible on purpose: the store does the fallible work
    /// (reading sled) before, so a flush is never half done.
    pub fn flush(&mut self, commits: u64, mut stage: impl FnMut(&[u8], Option<&[u8]>)) -> Vec<ChangelogRecord> {
        if self.bytes.last_pin <= commits {
            // The previous flush's entries were committed: nothing is pinned.
            self.bytes.pinned = 0;
        }
        let pin = commits + 1;
        self.bytes.last_pin = pin;
        let mut records = Vec::new();
        let map = &mut self.map;
        let bytes = &mut self.bytes;
        let elide = self.elide_unlogged_deletes;
        self.unsynced.retain(|key| {
            let Some(e) = map.get_mut(key.as_slice()) else {
                return false;
            };
            if elide && e.dirty && e.value.is_none() && e.guess == Guess::Known(false) {
                // Deleted before sled or the changelog ever had it: nothing
                // to stage or log. The entry stays pinned if an earlier,
                // uncommitted flush staged something for the key.
                bytes.sub(key.len(), e, commits);
                e.dirty = false;
                bytes.add(key.len(), e, commits);
                e.in_set = e.pinned(commits);
                e.in_set
            } else if e.dirty {
                bytes.sub(key.len(), e, commits);
                e.dirty = false;
                e.pin = pin;
                e.guess = Guess::Known(e.value.is_some());
                bytes.add(key.len(), e, commits);
                stage(key, e.value.as_deref());
                records.push(ChangelogRecord {
                    key: key.clone(),
                    value: e.value.clone(),
                });
                true
            } else if e.pinned(commits) {
                true
            } else {
                e.in_set = false;
                false
            }
        });
        self.maybe_evict(commits);
        records
    }

    /// The dirty and pinned entries with keys within the bounds, in key
    /// order (`None` = deleted). Clean entries are left out: sled has the
    /// same data. The caller must have checked that the bounds are not
    /// inverted (`BTreeSet::range` panics on those).
    pub fn range<'a>(
        &'a self,
        lo: Bound<&'a [u8]>,
        hi: Bound<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        self.unsynced
            .range::<[u8], _>((lo, hi))
            .filter_map(|k| self.map.get(k.as_slice()).map(|e| (k.as_slice(), e.value.as_deref())))
    }

    /// Evict clean entries if the cache is over budget. A sweep goes down to
    /// half the budget so that its O(entries) cost is paid once per half a
    /// budget of new data rather than on every insert.
    pub fn maybe_evict(&mut self, commits: u64) {
        if self.bytes.total > self.max_bytes && self.bytes.evictable(commits) > 0 {
            self.evict(commits, self.max_bytes / 2);
        }
    }

    fn evict(&mut self, commits: u64, target: usize) {
        let bytes = &mut self.bytes;
        let set = &mut self.unsynced;
        self.map.retain(|k, e| {
            if bytes.total <= target || !e.evictable(commits) {
                return true;
            }
            bytes.sub(k.len(), e, commits);
            if e.in_set {
                set.remove(k.as_slice());
            }
            false
        });
    }

    /// Forget everything (the task's data was replaced underneath).
    pub fn clear(&mut self) {
        self.map.clear();
        self.unsynced.clear();
        self.bytes = Bytes::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_size(k: &[u8], v: &[u8]) -> usize {
        k.len() + v.len() + ENTRY_OVERHEAD
    }

    /// Check the byte counters against a recount from the entries.
    fn check_accounting(c: &Cache, commits: u64) {
        let (mut total, mut dirty, mut pinned) = (0, 0, 0);
        for (k, e) in &c.map {
            let s = e.size(k.len());
            total += s;
            if e.dirty {
                dirty += s;
                assert!(e.in_set, "dirty entry missing from the ordered set");
            } else if e.pinned(commits) {
                pinned += s;
                assert!(e.in_set, "pinned entry missing from the ordered set");
            }
            assert_eq!(e.in_set, c.unsynced.contains(k));
        }
        assert_eq!(c.unsynced.len(), c.map.values().filter(|e| e.in_set).count());
        assert_eq!(c.bytes.total, total);
        assert_eq!(c.bytes.dirty, dirty);
        assert_eq!(c.bytes.pinned(commits), pinned);
    }

    #[test]
    fn overwrite_reuses_the_value_buffer() {
        let mut c = Cache::new(1 << 20);
        c.write(b"k", Some(b"12345678"), 0, Guess::Absent);
        let ptr = c.get(b"k").unwrap().value.as_ref().unwrap().as_ptr();
        c.write(b"k", Some(b"abcdefgh"), 0, Guess::Absent);
        c.write(b"k", Some(b"xyz"), 0, Guess::Absent);
        let e = c.get(b"k").unwrap();
        assert_eq!(e.value.as_deref(), Some(&b"xyz"[..]));
        assert_eq!(e.value.as_ref().unwrap().as_ptr(), ptr, "value was reallocated");
        check_accounting(&c, 0);
    }

    #[test]
    fn write_reports_previous_presence() {
        let mut c = Cache::new(1 << 20);
        assert_eq!(c.write(b"a", Some(b"1"), 0, Guess::Absent), None);
        assert_eq!(c.write(b"a", None, 0, Guess::Present), Some(true));
        assert_eq!(c.write(b"a", Some(b"2"), 0, Guess::Absent), Some(false));
        // The guess of the first write is kept until a flush resolves it.
        assert_eq!(c.get(b"a").unwrap().guess, Guess::Absent);
    }

    #[test]
    fn dirty_then_pinned_then_clean() {
        let mut c = Cache::new(1 << 20);
        c.write(b"b", Some(b"2"), 0, Guess::Absent);
        c.write(b"a", None, 0, Guess::Present);
        assert_eq!(c.bytes.dirty, entry_size(b"b", b"2") + entry_size(b"a", b""));
        check_accounting(&c, 0);

        let mut staged = Vec::new();
        let records = c.flush(0, |k, v| staged.push((k.to_vec(), v.map(<[u8]>::to_vec))));
        assert_eq!(
            records,
            vec![
                ChangelogRecord {
                    key: b"a".to_vec(),
                    value: None
                },
                ChangelogRecord {
                    key: b"b".to_vec(),
                    value: Some(b"2".to_vec())
                },
            ]
        );
        assert_eq!(staged.len(), 2);
        assert_eq!(c.bytes.dirty, 0);
        assert_eq!(
            c.bytes.pinned(0),
            c.bytes.total,
            "flushed entries are pinned until commit"
        );
        assert_eq!(c.bytes.evictable(0), 0);
        assert!(!c.get(b"b").unwrap().dirty);
        check_accounting(&c, 0);

        // A second flush without changes emits nothing and keeps the pins.
        assert!(c.flush(0, |_, _| panic!("nothing to stage")).is_empty());
        check_accounting(&c, 0);

        // After the task commits (commit count 1) the entries are clean.
        assert_eq!(c.bytes.pinned(1), 0);
        assert_eq!(c.bytes.evictable(1), c.bytes.total);
        check_accounting(&c, 1);
        // The next flush tidies them out of the ordered set.
        assert!(c.flush(1, |_, _| panic!("nothing to stage")).is_empty());
        assert!(c.unsynced.is_empty());
        assert_eq!(c.map.len(), 2, "clean entries stay cached while there is room");
        check_accounting(&c, 1);
    }

    #[test]
    fn rewriting_a_pinned_entry_makes_it_dirty() {
        let mut c = Cache::new(1 << 20);
        c.write(b"k", Some(b"1"), 0, Guess::Absent);
        c.flush(0, |_, _| {});
        c.write(b"k", Some(b"22"), 0, Guess::Absent);
        assert_eq!(c.bytes.pinned(0), 0);
        assert_eq!(c.bytes.dirty, entry_size(b"k", b"22"));
        check_accounting(&c, 0);
        let records = c.flush(0, |_, _| {});
        assert_eq!(records.len(), 1);
        check_accounting(&c, 0);
    }

    #[test]
    fn wants_flush_when_dirty_bytes_exceed_the_limit() {
        let limit = 3 * entry_size(b"k0", b"vvvv");
        let mut c = Cache::new(limit);
        for i in 0..3u8 {
            c.write(&[b'k', b'0' + i], Some(b"vvvv"), 0, Guess::Absent);
            assert!(!c.wants_flush(), "at {} of {limit} bytes", c.bytes.dirty);
        }
        c.write(b"k3", Some(b"v"), 0, Guess::Absent);
        assert!(c.wants_flush());
        c.flush(0, |_, _| {});
        assert!(!c.wants_flush(), "flushed data is no longer dirty");
    }

    #[test]
    fn zero_budget_stages_writes_but_keeps_nothing_clean() {
        let mut c = Cache::new(0);
        assert!(!c.wants_flush());
        c.insert_clean(b"r", Some(b"v"), 0);
        assert!(c.get(b"r").is_none(), "no clean entries with a zero budget");
        c.write(b"w", Some(b"v"), 0, Guess::Absent);
        assert!(c.wants_flush());
        assert!(c.get(b"w").is_some(), "writes are cached until the flush");
        c.flush(0, |_, _| {});
        assert!(!c.wants_flush());
        assert!(c.get(b"w").is_some(), "pinned until the commit");
        // Commit count 1: the entry is clean and goes at the next sweep.
        c.write(b"x", Some(b"v"), 1, Guess::Absent);
        assert!(c.get(b"w").is_none());
        assert!(c.get(b"x").is_some());
        check_accounting(&c, 1);
    }

    #[test]
    fn clean_entries_are_evicted_dirty_ones_never() {
        let e = entry_size(b"k00", b"v");
        let mut c = Cache::new(10 * e);
        for i in 0..50u8 {
            c.insert_clean(&[b'k', b'0' + i / 10, b'0' + i % 10], Some(b"v"), 0);
            assert!(c.bytes.total <= 10 * e, "clean data over budget");
        }
        assert!(!c.map.is_empty());
        check_accounting(&c, 0);

        // Dirty data may exceed the budget: it is only ever flushed.
        for i in 0..30u8 {
            c.write(&[b'd', b'0' + i / 10, b'0' + i % 10], Some(b"v"), 0, Guess::Absent);
        }
        assert_eq!(c.bytes.dirty, 30 * e);
        assert_eq!(
            c.map.values().filter(|e| !e.dirty).count(),
            0,
            "clean entries evicted first"
        );
        assert!(c.wants_flush());
        // While dirty data uses over half the budget, reads are not cached.
        c.insert_clean(b"zzz", Some(b"v"), 0);
        assert!(c.get(b"zzz").is_none());
        check_accounting(&c, 0);

        // Flushed entries stay (pinned) until the commit, then may go.
        c.flush(0, |_, _| {});
        assert_eq!(c.map.len(), 30);
        c.write(b"new", Some(b"v"), 1, Guess::Absent);
        assert!(c.bytes.total <= 10 * e, "committed entries evicted once over budget");
        assert!(c.get(b"new").is_some());
        check_accounting(&c, 1);
    }

    #[test]
    fn range_yields_unsynced_entries_in_order() {
        let mut c = Cache::new(1 << 20);
        c.insert_clean(b"b", Some(b"clean"), 0);
        c.write(b"c", Some(b"3"), 0, Guess::Absent);
        c.write(b"a", None, 0, Guess::Present);
        c.write(b"d", Some(b"4"), 0, Guess::Absent);
        let all: Vec<_> = c.range(Bound::Unbounded, Bound::Unbounded).collect();
        assert_eq!(
            all,
            vec![
                (&b"a"[..], None),
                (&b"c"[..], Some(&b"3"[..])),
                (&b"d"[..], Some(&b"4"[..]))
            ]
        );
        let some: Vec<_> = c
            .range(Bound::Excluded(&b"a"[..]), Bound::Excluded(&b"d"[..]))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(some, vec![&b"c"[..]]);
    }
}
