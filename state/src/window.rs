//! The sled window store.

use std::ops::Bound;

use weir_topology::store::{
    encode_window_start, split_window_key, CacheStats, ChangelogRecord, StateStore, StoreResult, WindowEntries,
    WindowStore,
};

use crate::core::StoreCore;
use crate::task::TaskState;

/// A window store of one task. Store keys are
/// [`window_key`](weir_topology::store::window_key)`(start, key)`: the
/// window start comes first so that time-range scans and retention purges
/// are ordered, contiguous scans of sled.
///
/// The price of that layout: [`WindowStore::fetch`] for one key scans every
/// key's windows within the time range and filters. Window joins fetch
/// narrow time ranges, so that is a small scan.
pub struct SledWindowStore {
    core: StoreCore,
    retention_ms: i64,
    /// Scratch buffer for the store key of the operation at hand, so that
    /// point reads and writes allocate nothing.
    kbuf: Vec<u8>,
}

impl SledWindowStore {
    pub(crate) fn open(task: TaskState, name: &str, retention_ms: i64) -> StoreResult<SledWindowStore> {
        let mut core = StoreCore::open(task, name)?;
        // Expired windows are never forwarded, only purged: one that never
        // reached the changelog needs no tombstone there.
        core.elide_unlogged_deletes();
        Ok(SledWindowStore {
            core,
            retention_ms,
            kbuf: Vec::new(),
        })
    }

    /// How long windows are to be kept, as declared by the topology. The
    /// store does not act on it: the processor that owns the store knows
    /// stream time and calls [`WindowStore::purge_before`].
    pub fn retention_ms(&self) -> i64 {
        self.retention_ms
    }

    /// Bytes the store's write cache holds now.
    pub fn cache_bytes(&self) -> u64 {
        self.core.cache_bytes()
    }

    fn store_key(&mut self, window_start: i64, key: &[u8]) {
        self.kbuf.clear();
        self.kbuf.extend_from_slice(&encode_window_start(window_start));
        self.kbuf.extend_from_slice(key);
    }
}

/// Store-key bounds of the windows with `from <= start <= to`.
fn start_bounds(from: i64, to: i64) -> ([u8; 8], Option<[u8; 8]>) {
    let hi = to.checked_add(1).map(encode_window_start);
    (encode_window_start(from), hi)
}

impl StateStore for SledWindowStore {
    fn name(&self) -> &str {
        self.core.name()
    }

    fn flush(&mut self) -> StoreResult<Vec<ChangelogRecord>> {
        self.core.flush()
    }

    fn wants_flush(&self) -> bool {
        self.core.wants_flush()
    }

    fn approximate_len(&self) -> u64 {
        self.core.approximate_len()
    }

    fn cache_stats(&self) -> CacheStats {
        self.core.cache_stats()
    }
}

impl WindowStore for SledWindowStore {
    fn get_into(&mut self, key: &[u8], window_start: i64, out: &mut Vec<u8>) -> StoreResult<bool> {
        self.store_key(window_start, key);
        self.core.get_into(&self.kbuf, out)
    }

    fn put(&mut self, key: &[u8], window_start: i64, value: &[u8]) -> StoreResult<()> {
        self.store_key(window_start, key);
        self.core.write(&self.kbuf, Some(value), None)
    }

    fn update(
        &mut self,
        key: &[u8],
        window_start: i64,
        old: &mut Vec<u8>,
        new: &mut Vec<u8>,
        f: &mut weir_topology::store::UpdateFn<'_>,
    ) -> StoreResult<()> {
        self.store_key(window_start, key);
        self.core.update(&self.kbuf, old, new, f)
    }

    fn delete(&mut self, key: &[u8], window_start: i64) -> StoreResult<()> {
        self.store_key(window_start, key);
        self.core.write(&self.kbuf, None, None)
    }

    fn fetch(&mut self, key: &[u8], from: i64, to: i64) -> StoreResult<Vec<(i64, Vec<u8>)>> {
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        let (lo, hi) = start_bounds(from, to);
        let hi = hi.as_ref().map_or(Bound::Unbounded, |h| Bound::Excluded(&h[..]));
        self.core.visit_range(Bound::Included(&lo[..]), hi, |k, v| {
            // Keys too short to be window keys (corrupt data) are skipped.
            if let Some((start, _)) = split_window_key(k).filter(|(_, k)| *k == key) {
                out.push((start, v.to_vec()));
            }
        })?;
        Ok(out)
    }

    fn fetch_all(&mut self, from: i64, to: i64) -> StoreResult<WindowEntries> {
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        let (lo, hi) = start_bounds(from, to);
        let hi = hi.as_ref().map_or(Bound::Unbounded, |h| Bound::Excluded(&h[..]));
        self.core.visit_range(Bound::Included(&lo[..]), hi, |k, v| {
            if let Some((start, key)) = split_window_key(k) {
                out.push((key.to_vec(), start, v.to_vec()));
            }
        })?;
        Ok(out)
    }

    /// Deletes every live window starting before `before` and returns how
    /// many. The deletes are ordinary cached deletes: they reach sled and
    /// the changelog (as tombstones) with the next flush and commit, so a
    /// purge is atomic with the rest of the task's state.
    fn purge_before(&mut self, before: i64) -> StoreResult<u64> {
        let hi = encode_window_start(before);
        let mut doomed = Vec::new();
        self.core
            .visit_range(Bound::Unbounded, Bound::Excluded(&hi[..]), |k, _| {
                doomed.push(k.to_vec())
            })?;
        for k in &doomed {
            // The scan just saw the key live: no guess needed.
            self.core.write(k, None, Some(true))?;
        }
        Ok(doomed.len() as u64)
    }
}
