//! The sled key-value store.

use std::ops::Bound;

use weir_topology::store::{CacheStats, ChangelogRecord, KeyValueStore, StateStore, StoreResult};

use crate::core::StoreCore;
use crate::task::TaskState;

/// A key-value store of one task: a write cache over the store's keys in
/// the task's sled tree. Obtained from [`TaskState::open_key_value`] or the
/// task's [`StoreSupplier`](weir_topology::store::StoreSupplier) impl.
pub struct SledKeyValueStore {
    core: StoreCore,
}

impl SledKeyValueStore {
    pub(crate) fn open(task: TaskState, name: &str) -> StoreResult<SledKeyValueStore> {
        Ok(SledKeyValueStore {
            core: StoreCore::open(task, name)?,
        })
    }

    /// Bytes the store's write cache holds now.
    pub fn cache_bytes(&self) -> u64 {
        self.core.cache_bytes()
    }
}

impl StateStore for SledKeyValueStore {
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

impl KeyValueStore for SledKeyValueStore {
    fn get_into(&mut self, key: &[u8], out: &mut Vec<u8>) -> StoreResult<bool> {
        self.core.get_into(key, out)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.core.write(key, Some(value), None)
    }

    fn update(
        &mut self,
        key: &[u8],
        old: &mut Vec<u8>,
        new: &mut Vec<u8>,
        f: &mut weir_topology::store::UpdateFn<'_>,
    ) -> StoreResult<()> {
        self.core.update(key, old, new, f)
    }

    fn delete(&mut self, key: &[u8]) -> StoreResult<()> {
        self.core.write(key, None, None)
    }

    fn range(&mut self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.core
            .visit_range(from, to, |k, v| out.push((k.to_vec(), v.to_vec())))?;
        Ok(out)
    }
}
