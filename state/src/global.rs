//! Global stores: the state of a global table (`GlobalKTable`), one per
//! instance, read by every task of every stream thread.
//!
//! A global store is a sled tree of its own, `{application}/global/{store}`,
//! written by the instance's one global updater and read concurrently by
//! tasks through [`GlobalStore`] (sled trees are `Send + Sync`; there is no
//! write cache, so a task sees an update as soon as the updater applied
//! it). Keys carry the same store prefix as task stores, so the store's
//! [`StoreReader`] answers interactive queries like any other.
//!
//! The source topic is the store's changelog. With the data the tree keeps
//! the *positions*: the next offset to read per partition of the topic,
//! written in the same atomic batch as the records they follow, so that a
//! restart goes on from where the store stands instead of reading the topic
//! again, and data and positions never disagree on disk.

use std::ops::Bound;
use std::sync::Arc;

use weir_topology::store::{GlobalStore, StoreError, StoreResult};

use crate::layout::{store_prefix, CHECKPOINT_KEY};
use crate::task::{scan_kv, KvEntries, StoreReader};

/// Leading bytes of the encoded positions (a format of its own: these are
/// not a task's checkpoint).
const POSITIONS_MAGIC: &[u8] = b"WGP";
const POSITIONS_VERSION: u8 = 1;

/// The tree of global store `store` of `application_id`.
pub(crate) fn global_tree_name(application_id: &str, store: &str) -> String {
    format!("{application_id}/global/{store}")
}

/// Where a global store stands in its source topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GlobalPositions {
    /// The source topic's name when they were written: positions of
    /// another topic (the table was pointed elsewhere) mean nothing.
    pub topic: String,
    /// (partition, next offset to read), sorted by partition.
    pub offsets: Vec<(i32, i64)>,
}

impl GlobalPositions {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.topic.len() + 12 * self.offsets.len());
        out.extend_from_slice(POSITIONS_MAGIC);
        out.push(POSITIONS_VERSION);
        out.extend_from_slice(&(self.topic.len() as u32).to_be_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        out.extend_from_slice(&(self.offsets.len() as u32).to_be_bytes());
        for (p, o) in &self.offsets {
            out.extend_from_slice(&p.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<GlobalPositions> {
        let rest = bytes.strip_prefix(POSITIONS_MAGIC)?;
        let (&version, rest) = rest.split_first()?;
        if version != POSITIONS_VERSION {
            return None;
        }
        let take = |rest: &mut &[u8], n: usize| -> Option<Vec<u8>> {
            if rest.len() < n {
                return None;
            }
            let (a, b) = rest.split_at(n);
            *rest = b;
            Some(a.to_vec())
        };
        let mut rest = rest;
        let len = u32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
        let topic = String::from_utf8(take(&mut rest, len)?).ok()?;
        let n = u32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
        let mut offsets = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let p = i32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?);
            let o = i64::from_be_bytes(take(&mut rest, 8)?.try_into().ok()?);
            offsets.push((p, o));
        }
        rest.is_empty().then_some(GlobalPositions { topic, offsets })
    }
}

/// One global store of an instance. Cheap to clone (clones share the
/// tree); `Send + Sync`.
#[derive(Clone)]
pub struct SledGlobalStore {
    tree: sled::Tree,
    name: Arc<str>,
    prefix: Vec<u8>,
}

impl SledGlobalStore {
    /// Open (creating if needed) global store `store` of `application_id`
    /// in `db`. Opening it again yields a store over the same tree.
    pub(crate) fn open(db: &sled::Db, application_id: &str, store: &str) -> StoreResult<SledGlobalStore> {
        let prefix = store_prefix(store)?;
        let tree = db
            .open_tree(global_tree_name(application_id, store))
            .map_err(|e| StoreError::new(store, format!("cannot open the global store's tree: {e}")))?;
        Ok(SledGlobalStore {
            tree,
            name: Arc::from(store),
            prefix,
        })
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::new(&*self.name, format!("{what}: {e}"))
    }

    /// Where the store stands in its topic (`None`: never written, or the
    /// positions are unreadable, which the caller treats as "read the topic
    /// from the start" after [`wipe`](Self::wipe)).
    pub fn positions(&self) -> StoreResult<Option<GlobalPositions>> {
        match self.tree.get(CHECKPOINT_KEY) {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => Ok(GlobalPositions::decode(&bytes)),
            Err(e) => Err(self.err("read positions", e)),
        }
    }

    /// Write `records` (key, value; `None` deletes) of the source topic and
    /// the positions they bring the store to, in one atomic batch.
    pub fn apply(&self, records: &[(&[u8], Option<&[u8]>)], positions: &GlobalPositions) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        let mut key = self.prefix.clone();
        for (k, v) in records {
            key.truncate(self.prefix.len());
            key.extend_from_slice(k);
            match v {
                Some(v) => batch.insert(&key[..], *v),
                None => batch.remove(&key[..]),
            }
        }
        batch.insert(CHECKPOINT_KEY, positions.encode());
        self.tree.apply_batch(batch).map_err(|e| self.err("apply", e))
    }

    /// Delete the data and the positions (the store is then read again from
    /// the start of its topic). Positions go first: a crash half-way leaves
    /// stray data with no positions vouching for it, which the next start
    /// wipes again.
    pub fn wipe(&self) -> StoreResult<()> {
        self.tree
            .remove(CHECKPOINT_KEY)
            .and_then(|_| self.tree.clear())
            .map_err(|e| self.err("wipe", e))
    }

    /// A reader of the store for interactive queries (task id `global`).
    pub fn reader(&self) -> StoreReader {
        StoreReader::new(self.tree.clone(), Arc::from("global"))
    }

    /// Number of entries (a scan: for tests and status, not the hot path).
    pub fn len(&self) -> StoreResult<usize> {
        Ok(self.range(Bound::Unbounded, Bound::Unbounded)?.len())
    }

    pub fn is_empty(&self) -> StoreResult<bool> {
        Ok(self.len()? == 0)
    }
}

impl GlobalStore for SledGlobalStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> StoreResult<bool> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        match self.tree.get(&k) {
            Ok(Some(v)) => {
                out.clear();
                out.extend_from_slice(&v);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(self.err("read", e)),
        }
    }

    fn range(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> StoreResult<KvEntries> {
        scan_kv(&self.tree, &self.name, from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_refuse_garbage() {
        let p = GlobalPositions {
            topic: "countries".into(),
            offsets: vec![(0, 5), (1, 0), (2, 17)],
        };
        assert_eq!(GlobalPositions::decode(&p.encode()), Some(p.clone()));
        let mut bytes = p.encode();
        bytes.push(0);
        assert_eq!(GlobalPositions::decode(&bytes), None);
        assert_eq!(GlobalPositions::decode(&p.encode()[..10]), None);
    }

    #[test]
    fn apply_writes_data_and_positions_together_and_wipe_clears_both() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::StateDb::open(dir.path()).unwrap();
        let store = db.global_store("app", "g").unwrap();
        assert_eq!(store.positions().unwrap(), None);
        let pos = GlobalPositions {
            topic: "t".into(),
            offsets: vec![(0, 2)],
        };
        store.apply(&[(b"a", Some(b"1")), (b"b", Some(b"2"))], &pos).unwrap();
        store.apply(&[(b"a", None)], &pos).unwrap();
        let mut out = Vec::new();
        assert!(!store.get_into(b"a", &mut out).unwrap());
        assert!(store.get_into(b"b", &mut out).unwrap());
        assert_eq!(out, b"2");
        assert_eq!(store.positions().unwrap(), Some(pos));
        // The same store through another handle (what tasks get).
        let again = db.global_store("app", "g").unwrap();
        assert_eq!(again.len().unwrap(), 1);
        assert_eq!(again.reader().read_kv("g", b"b").unwrap(), Some(b"2".to_vec()));
        store.wipe().unwrap();
        assert_eq!(again.len().unwrap(), 0);
        assert_eq!(again.positions().unwrap(), None);
    }
}
