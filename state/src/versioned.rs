//! The sled versioned key-value store (Kafka Streams' KIP-889), and the
//! layout of its keys, shared with the committed-data readers of `task.rs`.
//!
//! # Layout (within the store's key space)
//!
//! * `0x00 ++ key` → the key's newest version: the encoded timestamp
//!   ([`encode_window_start`]), a tag (1 = value, 0 = tombstone), the value.
//! * `0x01 ++ u32 BE key length ++ key ++ encoded timestamp` → an older
//!   version: tag, value. The length makes one key's history a contiguous
//!   range that no other key's entries fall into, ordered by time.
//! * `0x02` → the observed stream time (encoded timestamp), then the
//!   history retention (8 bytes BE) it is measured against: committed-data
//!   readers (interactive queries) apply the retention rule without the
//!   topology, so the retention must be in the data.
//!
//! These store keys are also the changelog record keys, so the generic
//! `TaskState::restore` rebuilds the store (history and stream time
//! included) without knowing it is versioned. The newest version has a key
//! of its own so that current-value reads, the hot path of joins and
//! tables, are one point lookup, and table scans walk only newest versions.

use std::ops::Bound;

use weir_topology::store::{
    decode_window_start, encode_window_start, CacheStats, ChangelogRecord, KeyValueStore, StateStore, StoreError,
    StoreResult, VersionedKeyValueStore, VersionedPut,
};

use crate::core::StoreCore;
use crate::task::TaskState;

/// First byte of a newest-version key.
pub(crate) const LATEST: u8 = 0;
/// First byte of an older-version (history) key.
pub(crate) const HISTORY: u8 = 1;
/// The key of the observed stream time.
pub(crate) const OBSERVED_KEY: &[u8] = &[2];

const TOMBSTONE: u8 = 0;
const VALUE: u8 = 1;

/// The error for an entry that does not decode.
pub(crate) fn corrupt(store: &str, what: &str) -> StoreError {
    StoreError::new(store, format!("corrupt versioned store entry ({what})"))
}

/// The oldest timestamp an as-of read may ask for and a put may carry:
/// observed stream time minus the retention, saturating (so that the
/// extremes of `i64` neither wrap nor expire everything).
pub(crate) fn cutoff(observed: i64, retention_ms: i64) -> i64 {
    observed.saturating_sub(retention_ms)
}

/// `buf` = the newest-version key of `key`.
pub(crate) fn latest_key(buf: &mut Vec<u8>, key: &[u8]) {
    buf.clear();
    buf.push(LATEST);
    buf.extend_from_slice(key);
}

/// `buf` = the prefix of `key`'s history entries (a timestamp follows).
pub(crate) fn history_prefix(buf: &mut Vec<u8>, store: &str, key: &[u8]) -> StoreResult<()> {
    let len = u32::try_from(key.len()).map_err(|_| StoreError::new(store, "versioned keys are limited to 4 GiB"))?;
    buf.clear();
    buf.push(HISTORY);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(key);
    Ok(())
}

/// The timestamp at the end of a history key.
pub(crate) fn history_ts(store_key: &[u8]) -> Option<i64> {
    let at = store_key.len().checked_sub(8)?;
    Some(decode_window_start(store_key[at..].try_into().ok()?))
}

/// `buf` = a newest-version value: timestamp, tag, value.
pub(crate) fn encode_latest(buf: &mut Vec<u8>, ts: i64, value: Option<&[u8]>) {
    buf.clear();
    buf.extend_from_slice(&encode_window_start(ts));
    encode_tagged(buf, value);
}

fn encode_tagged(buf: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            buf.push(VALUE);
            buf.extend_from_slice(v);
        }
        None => buf.push(TOMBSTONE),
    }
}

/// A history value (tag, value) → the value, `None` for a tombstone; the
/// outer `None` if it does not decode.
pub(crate) fn decode_version(bytes: &[u8]) -> Option<Option<&[u8]>> {
    match bytes.split_first()? {
        (&VALUE, v) => Some(Some(v)),
        (&TOMBSTONE, []) => Some(None),
        _ => None,
    }
}

/// A newest-version value → (timestamp, value or `None` for a tombstone).
pub(crate) fn decode_latest(bytes: &[u8]) -> Option<(i64, Option<&[u8]>)> {
    if bytes.len() < 9 {
        return None;
    }
    let (ts, rest) = bytes.split_at(8);
    Some((decode_window_start(ts.try_into().ok()?), decode_version(rest)?))
}

/// The `OBSERVED_KEY` value: observed stream time, history retention.
fn encode_observed(observed: i64, retention_ms: i64) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&encode_window_start(observed));
    out[8..].copy_from_slice(&retention_ms.to_be_bytes());
    out
}

/// The `OBSERVED_KEY` value → (observed stream time, history retention).
pub(crate) fn decode_observed(bytes: &[u8]) -> Option<(i64, i64)> {
    let bytes: &[u8; 16] = bytes.try_into().ok()?;
    let (t, r) = bytes.split_at(8);
    Some((
        decode_window_start(t.try_into().ok()?),
        i64::from_be_bytes(r.try_into().ok()?),
    ))
}

/// The store-key bounds of the newest versions of the user keys within
/// `(from, to)`: the `0x00` space, which ends where `0x01` begins.
pub(crate) fn latest_bounds(from: Bound<&[u8]>, to: Bound<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let key = |k: &[u8]| {
        let mut buf = Vec::with_capacity(1 + k.len());
        latest_key(&mut buf, k);
        buf
    };
    let lo = match from {
        Bound::Included(k) => Bound::Included(key(k)),
        Bound::Excluded(k) => Bound::Excluded(key(k)),
        Bound::Unbounded => Bound::Included(vec![LATEST]),
    };
    let hi = match to {
        Bound::Included(k) => Bound::Included(key(k)),
        Bound::Excluded(k) => Bound::Excluded(key(k)),
        Bound::Unbounded => Bound::Excluded(vec![HISTORY]),
    };
    (lo, hi)
}

pub(crate) fn bound_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A versioned key-value store of one task (see
/// [`VersionedKeyValueStore`] for the semantics): a write cache over the
/// store's keys in the task's sled tree, like the other stores, so that
/// versions reach sled and the changelog with the task's commit. Obtained
/// from [`TaskState::open_versioned`] or the task's
/// [`StoreSupplier`](weir_topology::store::StoreSupplier) impl.
///
/// A current-value read is one point lookup; a put is a point lookup of
/// the newest version plus a scan of the key's history (kept short by the
/// retention), which is where the purge below finds its victims.
///
/// History is purged per key, when the key is written: a key never written
/// again keeps its (unreadable) old versions, and a deleted key its
/// tombstone, until then. As-of reads apply the retention themselves, so
/// that is a matter of space only.
pub struct SledVersionedStore {
    core: StoreCore,
    retention_ms: i64,
    /// The `OBSERVED_KEY` entry, mirrored so that puts do not read it
    /// (`None`: nothing was ever put), valid for task epoch
    /// `observed_epoch` (`None`: not loaded yet).
    observed: Option<(i64, i64)>,
    observed_epoch: Option<u64>,
    /// Scratch buffers, so that reads and writes allocate nothing once
    /// warm: the newest-version key, a history key, the newest version's
    /// stored value, the value being written, and the timestamps of the
    /// history of the key at hand.
    lkey: Vec<u8>,
    hkey: Vec<u8>,
    cur: Vec<u8>,
    vbuf: Vec<u8>,
    hist: Vec<i64>,
}

impl SledVersionedStore {
    pub(crate) fn open(task: TaskState, name: &str, history_retention_ms: i64) -> StoreResult<SledVersionedStore> {
        if history_retention_ms < 0 {
            return Err(StoreError::new(
                name,
                format!("history retention must not be negative (got {history_retention_ms} ms)"),
            ));
        }
        Ok(SledVersionedStore {
            core: StoreCore::open(task, name)?,
            retention_ms: history_retention_ms,
            observed: None,
            observed_epoch: None,
            lkey: Vec::new(),
            hkey: Vec::new(),
            cur: Vec::new(),
            vbuf: Vec::new(),
            hist: Vec::new(),
        })
    }

    /// Bytes the store's write cache holds now.
    pub fn cache_bytes(&self) -> u64 {
        self.core.cache_bytes()
    }

    /// (Re)load the observed stream time if the task's data was replaced
    /// (restore, wipe) since it was read, or it never was.
    fn load_observed(&mut self) -> StoreResult<Option<i64>> {
        let epoch = self.core.task_epoch();
        if self.observed_epoch == Some(epoch) {
            return Ok(self.observed.map(|(t, _)| t));
        }
        self.observed = if self.core.get_into(OBSERVED_KEY, &mut self.cur)? {
            Some(decode_observed(&self.cur).ok_or_else(|| corrupt(self.core.name(), "observed stream time"))?)
        } else {
            None
        };
        self.observed_epoch = Some(epoch);
        Ok(self.observed.map(|(t, _)| t))
    }

    /// Read the newest version of the key in `lkey` into `cur`; its
    /// timestamp and whether it is a value.
    fn read_latest(&mut self) -> StoreResult<Option<(i64, bool)>> {
        if !self.core.get_into(&self.lkey, &mut self.cur)? {
            return Ok(None);
        }
        let (ts, v) = decode_latest(&self.cur).ok_or_else(|| corrupt(self.core.name(), "newest version"))?;
        Ok(Some((ts, v.is_some())))
    }

    /// `hist` = the timestamps of the history of the key whose history
    /// prefix is in `hkey`, ascending (the key order).
    fn read_history(&mut self) -> StoreResult<()> {
        let p = self.hkey.len();
        self.hkey.extend_from_slice(&encode_window_start(i64::MAX));
        self.hist.clear();
        let hist = &mut self.hist;
        let mut bad = false;
        self.core.visit_range(
            Bound::Included(&self.hkey[..p]),
            Bound::Included(&self.hkey[..]),
            |k, _| match history_ts(k) {
                Some(ts) if k.len() == p + 8 => hist.push(ts),
                _ => bad = true,
            },
        )?;
        self.hkey.truncate(p);
        if bad {
            return Err(corrupt(self.core.name(), "history key"));
        }
        Ok(())
    }

    /// Write (`Some`) or delete (`None`) the history entry at `ts` of the
    /// key whose history prefix is in `hkey`.
    fn write_history(&mut self, ts: i64, value: Option<&[u8]>, existed: bool) -> StoreResult<()> {
        let p = self.hkey.len();
        self.hkey.extend_from_slice(&encode_window_start(ts));
        let r = self.core.write(&self.hkey, value, Some(existed));
        self.hkey.truncate(p);
        r
    }
}

impl StateStore for SledVersionedStore {
    fn name(&self) -> &str {
        self.core.name()
    }

    fn flush(&mut self) -> StoreResult<Vec<ChangelogRecord>> {
        self.core.flush()
    }

    fn wants_flush(&self) -> bool {
        self.core.wants_flush()
    }

    /// Every entry of the store: newest versions (tombstones included),
    /// history entries and the observed stream time. Counting only live
    /// keys would cost a read per write.
    fn approximate_len(&self) -> u64 {
        self.core.approximate_len()
    }

    fn cache_stats(&self) -> CacheStats {
        self.core.cache_stats()
    }
}

impl KeyValueStore for SledVersionedStore {
    /// The newest version, if it is a value.
    fn get_into(&mut self, key: &[u8], out: &mut Vec<u8>) -> StoreResult<bool> {
        latest_key(&mut self.lkey, key);
        if !self.core.get_into(&self.lkey, out)? {
            return Ok(false);
        }
        match decode_latest(out) {
            Some((_, Some(_))) => {
                // Shift the value over the header in place: no allocation.
                out.drain(..9);
                Ok(true)
            }
            Some((_, None)) => {
                out.clear();
                Ok(false)
            }
            None => Err(corrupt(self.core.name(), "newest version")),
        }
    }

    /// A version at the observed stream time (0 before anything was put),
    /// so it is always the newest.
    fn put(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        let at = self.load_observed()?.unwrap_or(0);
        self.put_versioned(key, Some(value), at).map(drop)
    }

    /// A tombstone at the observed stream time (0 before anything was put).
    fn delete(&mut self, key: &[u8]) -> StoreResult<()> {
        let at = self.load_observed()?.unwrap_or(0);
        self.put_versioned(key, None, at).map(drop)
    }

    /// The newest versions that are values, of the user keys within the
    /// bounds, in key order.
    fn range(&mut self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let (lo, hi) = latest_bounds(from, to);
        let mut out = Vec::new();
        let mut bad = false;
        self.core
            .visit_range(bound_ref(&lo), bound_ref(&hi), |k, v| match decode_latest(v) {
                Some((_, Some(v))) => out.push((k[1..].to_vec(), v.to_vec())),
                Some((_, None)) => {}
                None => bad = true,
            })?;
        if bad {
            return Err(corrupt(self.core.name(), "newest version"));
        }
        Ok(out)
    }
}

impl VersionedKeyValueStore for SledVersionedStore {
    fn history_retention_ms(&self) -> i64 {
        self.retention_ms
    }

    fn observed_stream_time(&mut self) -> StoreResult<i64> {
        Ok(self.load_observed()?.unwrap_or(i64::MIN))
    }

    fn put_versioned(&mut self, key: &[u8], value: Option<&[u8]>, timestamp: i64) -> StoreResult<VersionedPut> {
        let observed = self.load_observed()?.map_or(timestamp, |o| o.max(timestamp));
        let cutoff = cutoff(observed, self.retention_ms);
        if timestamp < cutoff {
            return Ok(VersionedPut::Expired);
        }
        // Also rewritten when the stored retention is another (the store
        // was reopened with a new one), for the readers' sake.
        let entry = (observed, self.retention_ms);
        if self.observed != Some(entry) {
            let enc = encode_observed(observed, self.retention_ms);
            self.core
                .write(OBSERVED_KEY, Some(&enc), Some(self.observed.is_some()))?;
            self.observed = Some(entry);
        }
        latest_key(&mut self.lkey, key);
        history_prefix(&mut self.hkey, self.core.name(), key)?;
        let latest = self.read_latest()?;
        self.read_history()?;

        let (outcome, newest_ts) = match latest {
            Some((lt, _)) if timestamp < lt => {
                // Out of order: into the history, replacing a version with
                // the same timestamp.
                let at = self.hist.binary_search(&timestamp);
                self.vbuf.clear();
                encode_tagged(&mut self.vbuf, value);
                let vbuf = std::mem::take(&mut self.vbuf);
                let r = self.write_history(timestamp, Some(&vbuf), at.is_ok());
                self.vbuf = vbuf;
                r?;
                if let Err(i) = at {
                    self.hist.insert(i, timestamp);
                }
                (VersionedPut::OutOfOrder, lt)
            }
            _ => {
                if let Some((lt, _)) = latest.filter(|&(lt, _)| lt < timestamp) {
                    // The old newest version becomes history (every history
                    // entry is older than it, so none is at `lt`).
                    let cur = std::mem::take(&mut self.cur);
                    let r = self.write_history(lt, Some(&cur[8..]), false);
                    self.cur = cur;
                    r?;
                    self.hist.push(lt);
                }
                encode_latest(&mut self.vbuf, timestamp, value);
                self.core.write(&self.lkey, Some(&self.vbuf), Some(latest.is_some()))?;
                (VersionedPut::Latest, timestamp)
            }
        };

        // Drop the history no as-of read within the retention can reach:
        // entries whose successor is valid from `cutoff` or earlier. They
        // are a prefix, since the history is ascending.
        let mut purge = 0;
        while purge < self.hist.len() {
            let next = self.hist.get(purge + 1).copied().unwrap_or(newest_ts);
            if next > cutoff {
                break;
            }
            purge += 1;
        }
        for i in 0..purge {
            let ts = self.hist[i];
            self.write_history(ts, None, true)?;
        }
        // The newest version is never older than `cutoff` here (the put
        // was not expired, and the newest is at least as new as it), so a
        // tombstone is never old enough to drop on its own key's put.
        Ok(outcome)
    }

    fn get_as_of(&mut self, key: &[u8], as_of: i64, out: &mut Vec<u8>) -> StoreResult<Option<i64>> {
        let observed = self.load_observed()?;
        out.clear();
        if as_of < cutoff(observed.unwrap_or(i64::MIN), self.retention_ms) {
            return Ok(None);
        }
        latest_key(&mut self.lkey, key);
        let Some((lt, is_value)) = self.read_latest()? else {
            return Ok(None);
        };
        if lt <= as_of {
            if !is_value {
                return Ok(None);
            }
            out.extend_from_slice(&self.cur[9..]);
            return Ok(Some(lt));
        }
        // The last history entry at or before `as_of`.
        history_prefix(&mut self.hkey, self.core.name(), key)?;
        let p = self.hkey.len();
        self.hkey.extend_from_slice(&encode_window_start(as_of));
        let mut found: Option<(i64, bool)> = None;
        let mut bad = false;
        self.core.visit_range(
            Bound::Included(&self.hkey[..p]),
            Bound::Included(&self.hkey[..]),
            |k, v| match (history_ts(k), decode_version(v)) {
                (Some(ts), Some(v)) => {
                    out.clear();
                    if let Some(v) = v {
                        out.extend_from_slice(v);
                    }
                    found = Some((ts, v.is_some()));
                }
                _ => bad = true,
            },
        )?;
        if bad {
            return Err(corrupt(self.core.name(), "history entry"));
        }
        match found {
            Some((ts, true)) => Ok(Some(ts)),
            _ => {
                out.clear();
                Ok(None)
            }
        }
    }
}
