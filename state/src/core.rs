//! What key-value and window stores share: a cache over the store's part of
//! the task tree, the reads that fall through to sled, the staging of
//! flushed changes, ordered scans that merge the two, and the length
//! counter.

use std::ops::Bound;

use weir_topology::store::{CacheStats, ChangelogRecord, StoreError, StoreResult};

use crate::cache::{Cache, Guess};
use crate::layout::{range_is_empty, sled_bounds, store_prefix};
use crate::task::TaskState;

pub(crate) struct StoreCore {
    name: String,
    task: TaskState,
    prefix: Vec<u8>,
    /// Scratch buffer holding `prefix` followed by the key of the sled
    /// operation at hand, so that sled lookups allocate nothing.
    kbuf: Vec<u8>,
    cache: Cache,
    stats: CacheStats,
    /// Live entries in the store's view (sled overlaid by the cache),
    /// exact except for blind writes not yet flushed (see `Guess`).
    len: i64,
    /// The task's reset epoch this store's cache and counter belong to.
    epoch: u64,
}

impl StoreCore {
    pub fn open(task: TaskState, name: &str) -> StoreResult<StoreCore> {
        let prefix = store_prefix(name)?;
        let mut core = StoreCore {
            name: name.to_string(),
            kbuf: prefix.clone(),
            prefix,
            cache: Cache::new(task.cache_max_bytes()),
            stats: CacheStats::default(),
            len: 0,
            epoch: task.epoch(),
            task,
        };
        core.len = core.count_sled()? as i64;
        Ok(core)
    }

    /// Let flushes drop deletes of keys that sled (and so the changelog)
    /// never had, for stores whose flushed records are only logged, never
    /// forwarded as table changes (window stores): a window created and
    /// purged between two commits then leaves no tombstone.
    pub fn elide_unlogged_deletes(&mut self) {
        self.cache.elide_unlogged_deletes = true;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The task's reset epoch now (bumped by restores and wipes), for
    /// stores that mirror some of their data outside the cache and must
    /// reload it when the data is replaced underneath them.
    pub fn task_epoch(&self) -> u64 {
        self.task.epoch()
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::new(&self.name, format!("{what}: {e}"))
    }

    /// One scan of the store's keys: at open and after the task's data was
    /// replaced (restore, wipe), never on the per-record path.
    fn count_sled(&self) -> StoreResult<u64> {
        let mut n = 0;
        for key in self.task.tree().scan_prefix(&self.prefix).keys() {
            key.map_err(|e| self.err("counting entries", e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Drop the cache if the task's data was replaced underneath it since
    /// the store last looked (one integer comparison per operation).
    #[inline]
    fn sync(&mut self) -> StoreResult<()> {
        if self.epoch != self.task.epoch() {
            self.cache.clear();
            self.len = self.count_sled()? as i64;
            self.epoch = self.task.epoch();
        }
        Ok(())
    }

    pub fn get_into(&mut self, key: &[u8], out: &mut Vec<u8>) -> StoreResult<bool> {
        self.sync()?;
        out.clear();
        if let Some(e) = self.cache.get(key) {
            self.stats.hits += 1;
            return Ok(match &e.value {
                Some(v) => {
                    out.extend_from_slice(v);
                    true
                }
                None => false,
            });
        }
        self.stats.misses += 1;
        self.kbuf.truncate(self.prefix.len());
        self.kbuf.extend_from_slice(key);
        let got = self.task.tree().get(&self.kbuf).map_err(|e| self.err("read", e))?;
        let commits = self.task.commits();
        match got {
            Some(v) => {
                out.extend_from_slice(&v);
                self.cache.insert_clean(key, Some(&v), commits);
                Ok(true)
            }
            None => {
                self.cache.insert_clean(key, None, commits);
                Ok(false)
            }
        }
    }

    /// Put (`Some`) or delete (`None`). `prev_hint` is the caller's
    /// knowledge of whether the key is live, if it has any; otherwise a
    /// write to an uncached key guesses (put: absent, delete: present) and
    /// the next flush corrects the length counter, so that a blind write
    /// costs no sled read.
    pub fn write(&mut self, key: &[u8], value: Option<&[u8]>, prev_hint: Option<bool>) -> StoreResult<()> {
        self.sync()?;
        let commits = self.task.commits();
        let (guess, assumed_prev) = match prev_hint {
            Some(p) => (Guess::Known(p), p),
            None if value.is_some() => (Guess::Absent, false),
            None => (Guess::Present, true),
        };
        let prev = self.cache.write(key, value, commits, guess).unwrap_or(assumed_prev);
        self.len += i64::from(value.is_some()) - i64::from(prev);
        Ok(())
    }

    /// `KeyValueStore::update`: one cache probe for a cached key, else a
    /// read (from sled, caching the answer) and a write, as
    /// `get_into` + `write` would do.
    pub fn update(
        &mut self,
        key: &[u8],
        old: &mut Vec<u8>,
        new: &mut Vec<u8>,
        f: &mut weir_topology::store::UpdateFn<'_>,
    ) -> StoreResult<()> {
        self.sync()?;
        let commits = self.task.commits();
        if let Some(written) = self.cache.update_cached(key, new, commits, f) {
            self.stats.hits += 1;
            if let Some(prev) = written {
                self.len += 1 - i64::from(prev);
            }
            return Ok(());
        }
        let found = self.get_into(key, old)?;
        new.clear();
        if f(found.then_some(&old[..]), new) {
            // The read just said whether sled has the key.
            self.write(key, Some(new), Some(found))?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> StoreResult<Vec<ChangelogRecord>> {
        self.sync()?;
        // First the fallible part: settle the length guesses of blind
        // writes (sled still holds the pre-write state of those keys, since
        // they were not cached and hence neither staged nor pinned).
        let tree = self.task.tree();
        let p = self.prefix.len();
        for key in &self.cache.unsynced {
            let Some(e) = self.cache.map.get_mut(key.as_slice()) else {
                continue;
            };
            if !e.dirty || matches!(e.guess, Guess::Known(_)) {
                continue;
            }
            self.kbuf.truncate(p);
            self.kbuf.extend_from_slice(key);
            let actual = tree
                .contains_key(&self.kbuf)
                .map_err(|err| StoreError::new(&self.name, format!("read: {err}")))?;
            self.len += i64::from(e.guess == Guess::Present) - i64::from(actual);
            e.guess = Guess::Known(actual);
        }
        // Then the infallible part: stage into the task's batch.
        let commits = self.task.commits();
        let kbuf = &mut self.kbuf;
        let records = self.task.stage(|batch| {
            self.cache.flush(commits, |key, value| {
                kbuf.truncate(p);
                kbuf.extend_from_slice(key);
                match value {
                    Some(v) => batch.insert(&kbuf[..], v),
                    None => batch.remove(&kbuf[..]),
                }
            })
        });
        Ok(records)
    }

    /// Call `f` with every live entry with a key within the bounds, in key
    /// order: sled's entries with the cache's dirty and pinned entries
    /// merged over them (a cached delete hides sled's value).
    pub fn visit_range(
        &mut self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> StoreResult<()> {
        self.sync()?;
        if range_is_empty(lo, hi) {
            return Ok(());
        }
        let p = self.prefix.len();
        let mut sled_iter = self.task.tree().range(sled_bounds(&self.prefix, lo, hi));
        let mut next_sled = || {
            sled_iter
                .next()
                .transpose()
                .map_err(|e| StoreError::new(&self.name, format!("scan: {e}")))
        };
        let mut cached = self.cache.range(lo, hi).peekable();
        let mut s = next_sled()?;
        loop {
            match (&s, cached.peek()) {
                (None, None) => return Ok(()),
                (Some((sk, sv)), None) => {
                    f(&sk[p..], sv);
                    s = next_sled()?;
                }
                (None, Some(&(ck, cv))) => {
                    if let Some(v) = cv {
                        f(ck, v);
                    }
                    cached.next();
                }
                (Some((sk, sv)), Some(&(ck, cv))) => match sk[p..].cmp(ck) {
                    std::cmp::Ordering::Less => {
                        f(&sk[p..], sv);
                        s = next_sled()?;
                    }
                    ord => {
                        if let Some(v) = cv {
                            f(ck, v);
                        }
                        cached.next();
                        if ord == std::cmp::Ordering::Equal {
                            s = next_sled()?;
                        }
                    }
                },
            }
        }
    }

    pub fn wants_flush(&self) -> bool {
        // After a reset the dirty data is void; the next operation drops it.
        self.epoch == self.task.epoch() && self.cache.wants_flush()
    }

    pub fn approximate_len(&self) -> u64 {
        if self.epoch != self.task.epoch() {
            // Rare (right after a restore, before the store is used again);
            // the store cannot reset itself through `&self`.
            return self.count_sled().unwrap_or(0);
        }
        self.len.max(0) as u64
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.stats
    }

    /// Bytes the write cache holds now (dirty, pinned and clean entries,
    /// with [`ENTRY_OVERHEAD`](crate::cache::ENTRY_OVERHEAD) each).
    pub fn cache_bytes(&self) -> u64 {
        self.cache.bytes.total as u64
    }
}
