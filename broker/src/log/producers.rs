//! Idempotent-producer and transaction state (Kafka's ProducerStateManager).
//!
//! Per producer id the log remembers the epoch, the last five batches'
//! sequence and offset ranges (what a retrying producer can resend: it has at
//! most five requests in flight), the coordinator epoch of its last marker and
//! the first offset of its open transaction. The rules follow Kafka's
//! `ProducerAppendInfo`:
//!
//! * an older epoch is fenced (INVALID_PRODUCER_EPOCH);
//! * a newer epoch starts over and must begin at sequence 0;
//! * with the same epoch a batch must continue at last sequence + 1
//!   (wrapping after i32::MAX), unless it repeats one of the five cached
//!   batches exactly, which is a duplicate to acknowledge, not to store;
//! * a producer the log knows nothing about (first write, or all its batches
//!   deleted) may start at any sequence.
//!
//! The state is derived from batch headers alone, so it can always be rebuilt
//! by replaying the log. To make that replay short it is snapshotted to
//! `{offset:020}.snapshot` (JSON) when a segment rolls and on flush; opening
//! loads the newest snapshot not past the log end and replays from there.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::batch::BatchHeader;
use super::error::LogError;

/// Batches remembered per producer for duplicate detection (Kafka: 5).
pub(crate) const CACHED_BATCHES: usize = 5;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    pub coordinator_epoch: i32,
    pub txn_first_offset: Option<i64>,
    pub batches: VecDeque<BatchMeta>,
    /// Last offset this producer wrote (data or marker), for eviction.
    pub last_offset: i64,
}

impl ProducerEntry {
    pub fn new(producer_id: i64) -> ProducerEntry {
        ProducerEntry {
            producer_id,
            epoch: -1,
            coordinator_epoch: -1,
            txn_first_offset: None,
            batches: VecDeque::new(),
            last_offset: -1,
        }
    }

    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }
}

/// Outcome of checking a data batch against the producer's state.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Append,
    Duplicate(BatchMeta),
}

fn in_sequence(last: i32, next: i32) -> bool {
    next as i64 == last as i64 + 1 || (next == 0 && last == i32::MAX)
}

/// Validate a client data batch of an idempotent/transactional producer.
pub(crate) fn check_data(dir: &Path, entry: Option<&ProducerEntry>, h: &BatchHeader) -> Result<Verdict, LogError> {
    let pid = h.producer_id;
    let Some(e) = entry else {
        return Ok(Verdict::Append);
    };
    if h.producer_epoch < e.epoch {
        return Err(LogError::InvalidProducerEpoch {
            dir: dir.to_path_buf(),
            producer_id: pid,
            epoch: h.producer_epoch,
            current: e.epoch,
        });
    }
    if h.base_sequence >= 0 {
        if h.producer_epoch == e.epoch {
            if let Some(m) = e
                .batches
                .iter()
                .find(|m| m.first_seq == h.base_sequence && m.last_seq == h.last_sequence())
            {
                return Ok(Verdict::Duplicate(*m));
            }
        }
        let expected = if h.producer_epoch != e.epoch {
            // A new epoch (or the first write after an epoch-bumping marker) starts at 0,
            // except for a producer known only from markers (epoch -1).
            if e.epoch == -1 {
                h.base_sequence
            } else {
                0
            }
        } else {
            match e.batches.back() {
                Some(last) if in_sequence(last.last_seq, h.base_sequence) => h.base_sequence,
                Some(last) => last.last_seq.wrapping_add(1).max(0),
                None => 0,
            }
        };
        if h.base_sequence != expected {
            return Err(LogError::OutOfOrderSequence {
                dir: dir.to_path_buf(),
                producer_id: pid,
                epoch: h.producer_epoch,
                first_seq: h.base_sequence,
                expected,
            });
        }
    }
    if e.txn_first_offset.is_some() && !h.is_transactional() {
        return Err(LogError::InvalidTxnState {
            dir: dir.to_path_buf(),
            producer_id: pid,
            reason: format!(
                "non-transactional batch at sequence {} while a transaction is open",
                h.base_sequence
            ),
        });
    }
    Ok(Verdict::Append)
}

/// Record a data batch (with its assigned offsets) in the producer's entry.
pub(crate) fn apply_data(e: &mut ProducerEntry, h: &BatchHeader) {
    e.set_epoch(h.producer_epoch);
    if h.base_sequence >= 0 {
        e.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        });
        while e.batches.len() > CACHED_BATCHES {
            e.batches.pop_front();
        }
    }
    if h.is_transactional() && e.txn_first_offset.is_none() {
        e.txn_first_offset = Some(h.base_offset);
    }
    e.last_offset = e.last_offset.max(h.last_offset());
}

/// Validate a transaction marker against the producer's state.
pub(crate) fn check_marker(
    dir: &Path,
    entry: Option<&ProducerEntry>,
    producer_id: i64,
    epoch: i16,
    coordinator_epoch: i32,
) -> Result<(), LogError> {
    let Some(e) = entry else { return Ok(()) };
    if epoch < e.epoch {
        return Err(LogError::InvalidProducerEpoch {
            dir: dir.to_path_buf(),
            producer_id,
            epoch,
            current: e.epoch,
        });
    }
    if coordinator_epoch < e.coordinator_epoch {
        return Err(LogError::CoordinatorFenced {
            dir: dir.to_path_buf(),
            producer_id,
            coordinator_epoch,
            current: e.coordinator_epoch,
        });
    }
    Ok(())
}

/// Record a marker at `offset`; returns the first offset of the transaction it ended, if one was open.
pub(crate) fn apply_marker(e: &mut ProducerEntry, epoch: i16, coordinator_epoch: i32, offset: i64) -> Option<i64> {
    e.set_epoch(epoch.max(e.epoch));
    e.coordinator_epoch = coordinator_epoch;
    e.last_offset = e.last_offset.max(offset);
    e.txn_first_offset.take()
}

/// All producers' state.
#[derive(Default, Debug)]
pub(crate) struct ProducerStates {
    pub map: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    pub fn open_transactions(&self) -> Vec<(i64, i64)> {
        let mut v: Vec<(i64, i64)> = self
            .map
            .values()
            .filter_map(|e| e.txn_first_offset.map(|f| (e.producer_id, f)))
            .collect();
        v.sort_by_key(|&(pid, first)| (first, pid));
        v
    }

    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.map.values().filter_map(|e| e.txn_first_offset).min()
    }

    /// Forget producers none of whose writes remain (and with no open
    /// transaction), as Kafka does when the log start offset moves past them.
    pub fn evict_below(&mut self, start_offset: i64) {
        self.map
            .retain(|_, e| e.txn_first_offset.is_some() || e.last_offset >= start_offset);
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    offset: i64,
    producers: Vec<ProducerEntry>,
}

pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// Write the state as of `offset` (every batch below it applied), keeping
/// the two newest snapshots. Written to a temporary file and renamed, so a
/// snapshot on disk is always whole.
pub(crate) fn write_snapshot(dir: &Path, offset: i64, states: &ProducerStates) -> io::Result<()> {
    let mut producers: Vec<ProducerEntry> = states.map.values().cloned().collect();
    producers.sort_by_key(|e| e.producer_id);
    let json = serde_json::to_vec(&Snapshot { offset, producers }).map_err(io::Error::other)?;
    let tmp = dir.join(format!("{offset:020}.snapshot.tmp"));
    fs::write(&tmp, json)?;
    fs::rename(&tmp, snapshot_path(dir, offset))?;
    let mut offsets = list_snapshots(dir)?;
    offsets.sort_unstable();
    let n = offsets.len();
    for old in offsets.into_iter().take(n.saturating_sub(2)) {
        let _ = fs::remove_file(snapshot_path(dir, old));
    }
    Ok(())
}

pub(crate) fn list_snapshots(dir: &Path) -> io::Result<Vec<i64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if let Ok(off) = stem.parse::<i64>() {
                out.push(off);
            }
        }
    }
    Ok(out)
}

/// Newest readable snapshot at or below `max_offset`; snapshots past it (the
/// log was truncated below them) are deleted.
pub(crate) fn load_snapshot(dir: &Path, max_offset: i64) -> io::Result<Option<(i64, ProducerStates)>> {
    let mut offsets = list_snapshots(dir)?;
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    for off in offsets {
        let path = snapshot_path(dir, off);
        if off > max_offset {
            let _ = fs::remove_file(&path);
            continue;
        }
        let parsed = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Snapshot>(&b).ok());
        match parsed {
            Some(s) if s.offset == off => {
                let map = s.producers.into_iter().map(|e| (e.producer_id, e)).collect();
                return Ok(Some((off, ProducerStates { map })));
            }
            _ => {
                tracing::warn!(path = %path.display(), "ignoring unreadable producer state snapshot");
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{encode_marker, BatchHeader};

    fn header(pid: i64, epoch: i16, seq: i32, base: i64, n: i32, txn: bool) -> BatchHeader {
        let mut h = BatchHeader::parse(&encode_marker(0, pid, epoch, true, 0, 0, 0)).unwrap();
        h.attributes = if txn { 1 << 4 } else { 0 };
        h.base_sequence = seq;
        h.base_offset = base;
        h.last_offset_delta = n - 1;
        h.record_count = n;
        h
    }

    #[test]
    fn sequence_rules() {
        let dir = Path::new("/p");
        let mut e = ProducerEntry::new(1);
        assert_eq!(
            check_data(dir, None, &header(1, 0, 7, 0, 2, false)).unwrap(),
            Verdict::Append
        );
        apply_data(&mut e, &header(1, 0, 0, 0, 2, false));
        // continues
        assert_eq!(
            check_data(dir, Some(&e), &header(1, 0, 2, 2, 1, false)).unwrap(),
            Verdict::Append
        );
        // duplicate
        assert!(
            matches!(check_data(dir, Some(&e), &header(1, 0, 0, 9, 2, false)).unwrap(), Verdict::Duplicate(m) if m.first_offset == 0 && m.last_offset == 1)
        );
        // gap
        assert!(matches!(
            check_data(dir, Some(&e), &header(1, 0, 5, 2, 1, false)),
            Err(LogError::OutOfOrderSequence {
                first_seq: 5,
                expected: 2,
                ..
            })
        ));
        // new epoch must start at 0
        assert!(matches!(
            check_data(dir, Some(&e), &header(1, 1, 2, 2, 1, false)),
            Err(LogError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(
            check_data(dir, Some(&e), &header(1, 1, 0, 2, 1, false)).unwrap(),
            Verdict::Append
        );
        apply_data(&mut e, &header(1, 1, 0, 2, 1, false));
        assert_eq!(e.batches.len(), 1);
        // stale epoch
        assert!(matches!(
            check_data(dir, Some(&e), &header(1, 0, 3, 3, 1, false)),
            Err(LogError::InvalidProducerEpoch {
                epoch: 0,
                current: 1,
                ..
            })
        ));
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut e = ProducerEntry::new(1);
        for i in 0..7 {
            apply_data(&mut e, &header(1, 0, i, i as i64, 1, false));
        }
        assert_eq!(e.batches.len(), CACHED_BATCHES);
        assert_eq!(e.batches.front().unwrap().first_seq, 2);
    }

    #[test]
    fn snapshots_round_trip_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerStates::default();
        let mut e = ProducerEntry::new(3);
        apply_data(&mut e, &header(3, 2, 0, 10, 3, true));
        s.map.insert(3, e.clone());
        for off in [5, 13, 20] {
            write_snapshot(dir.path(), off, &s).unwrap();
        }
        let mut offs = list_snapshots(dir.path()).unwrap();
        offs.sort();
        assert_eq!(offs, vec![13, 20]);
        let (off, loaded) = load_snapshot(dir.path(), 19).unwrap().unwrap();
        assert_eq!(off, 13);
        assert_eq!(loaded.map.get(&3), Some(&e));
        assert_eq!(loaded.open_transactions(), vec![(3, 10)]);
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![13]);
    }
}
