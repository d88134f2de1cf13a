//! Opening a partition directory, and getting back to a consistent state
//! after a crash.
//!
//! Appends use write(2) without fsync (Kafka's default flush policy), so after
//! a SIGKILL everything that reached the OS is there, but the last batch may be
//! torn and the index or aborted-transaction files may lag the log, or be
//! ahead of it after a power loss. Recovery therefore:
//!
//! 1. deletes leftovers of interrupted work (`*.cleaned`, `*.tmp`) and index
//!    files without a log;
//! 2. opens every segment, fully re-checking the last one (CRC of every batch,
//!    truncating at the first bad one, rebuilding its index) and checking the
//!    others' indexes fit (rebuilding them if not);
//! 3. loads the log start offset checkpoint;
//! 4. loads the aborted-transaction entries, dropping any past the log end;
//! 5. rebuilds producer and transaction state from the newest snapshot at or
//!    below the log end plus a header scan of everything after it, re-adding
//!    any aborted-transaction entry the scan finds missing.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

use super::batch::control_type;
use super::error::{io_err, LogError};
use super::producers::{self, apply_data, apply_marker, ProducerEntry, ProducerStates};
use super::segment::{segment_file, BatchScanner, Scanned, Segment};
use super::txnindex::{self, AbortedEntry};
use super::{LogConfig, PartitionLog, START_OFFSET_FILE};

pub(crate) fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, LogError> {
    fs::create_dir_all(dir).map_err(io_err(dir, "create partition directory"))?;
    let bases = clean_and_list(dir).map_err(io_err(dir, "list partition directory"))?;
    let start_checkpoint = read_start_offset(dir).map_err(io_err(dir, "read log start offset"))?;

    let mut segments = Vec::with_capacity(bases.len().max(1));
    let last = bases.len().saturating_sub(1);
    for (i, &base) in bases.iter().enumerate() {
        let (seg, rec) = Segment::open(dir, base, config.index_interval_bytes, i == last)
            .map_err(io_err(dir, format!("open segment {base}")))?;
        if let Some((pos, why)) = &rec.truncated {
            tracing::warn!(dir = %dir.display(), segment = base, position = pos, reason = %why,
                "truncated a torn or corrupt segment tail");
        } else if rec.index_rebuilt && i != last {
            tracing::info!(dir = %dir.display(), segment = base, "rebuilt segment index");
        }
        segments.push(seg);
    }
    if segments.is_empty() {
        let base = start_checkpoint.unwrap_or(0).max(0);
        segments.push(Segment::create(dir, base).map_err(io_err(dir, "create first segment"))?);
    }
    let end = segments.last().expect("at least one segment").next_offset;
    let first_base = segments[0].base_offset;
    let start_offset = start_checkpoint.unwrap_or(first_base).max(first_base).min(end);

    // Aborted transactions: per-segment files, nothing past the (possibly truncated) end.
    let mut aborted = Vec::new();
    for seg in &segments {
        let path = segment_file(dir, seg.base_offset, "txnindex");
        let entries = txnindex::read(&path).map_err(io_err(dir, "read aborted transaction index"))?;
        let kept: Vec<AbortedEntry> = entries.iter().copied().filter(|e| e.last_offset < end).collect();
        if kept.len() != entries.len() {
            txnindex::rewrite(&path, &kept).map_err(io_err(dir, "rewrite aborted transaction index"))?;
        }
        aborted.extend(kept);
    }

    let (snap_offset, mut states) =
        match producers::load_snapshot(dir, end).map_err(io_err(dir, "load producer state snapshot"))? {
            Some((off, s)) if off >= first_base => (off, s),
            _ => (first_base, ProducerStates::default()),
        };
    replay(dir, &segments, snap_offset, &mut states, &mut aborted)?;
    aborted.sort_by_key(|e| e.last_offset);
    aborted.dedup();
    states.evict_below(start_offset);

    Ok(PartitionLog {
        dir: dir.to_path_buf(),
        config,
        segments,
        start_offset,
        producers: states,
        aborted,
        leader_epoch: 0,
        delete_retention_ms: super::DEFAULT_DELETE_RETENTION_MS,
    })
}

/// Apply every batch at or after `from` to the producer state, adding any
/// aborted-transaction entry the files lack (the crash came between the
/// marker and its entry).
fn replay(
    dir: &Path,
    segments: &[Segment],
    from: i64,
    states: &mut ProducerStates,
    aborted: &mut Vec<AbortedEntry>,
) -> Result<(), LogError> {
    let known: HashSet<i64> = aborted.iter().map(|e| e.last_offset).collect();
    for seg in segments.iter().filter(|s| s.next_offset > from) {
        let pos = if from > seg.base_offset {
            seg.index
                .position_for_offset((from - seg.base_offset).min(u32::MAX as i64) as u32) as u64
        } else {
            0
        };
        let mut scanner = BatchScanner::new(seg.file(), pos, seg.size).map_err(io_err(dir, "scan segment"))?;
        while let Scanned::Batch(at, h) = scanner.next_batch(false).map_err(io_err(dir, "scan segment"))? {
            if h.base_offset < from || h.producer_id < 0 {
                continue;
            }
            let entry = states
                .map
                .entry(h.producer_id)
                .or_insert_with(|| ProducerEntry::new(h.producer_id));
            if h.is_control() {
                let body = seg.read_at(at, h.size).map_err(io_err(dir, "read control batch"))?;
                let Some(commit) = control_type(&body) else { continue };
                let coordinator_epoch = coordinator_epoch_of(&body).unwrap_or(entry.coordinator_epoch);
                if let Some(first) = apply_marker(entry, h.producer_epoch, coordinator_epoch, h.base_offset) {
                    if !commit && !known.contains(&h.base_offset) {
                        let e = AbortedEntry {
                            producer_id: h.producer_id,
                            first_offset: first,
                            last_offset: h.base_offset,
                        };
                        txnindex::append(&segment_file(dir, seg.base_offset, "txnindex"), &e)
                            .map_err(io_err(dir, "append aborted transaction index"))?;
                        aborted.push(e);
                    }
                }
            } else {
                apply_data(entry, &h);
            }
        }
    }
    Ok(())
}

/// Coordinator epoch from a marker's value (version i16, epoch i32).
fn coordinator_epoch_of(batch: &[u8]) -> Option<i32> {
    let mut buf = bytes::Bytes::copy_from_slice(batch);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).ok()?;
    let v = set.records.first()?.value.clone()?;
    (v.len() >= 6).then(|| i32::from_be_bytes(v[2..6].try_into().unwrap()))
}

/// Delete leftovers and return the base offsets of the segments, sorted.
fn clean_and_list(dir: &Path) -> io::Result<Vec<i64>> {
    let mut logs = Vec::new();
    let mut others = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".cleaned") || name.ends_with(".tmp") {
            fs::remove_file(entry.path())?;
            continue;
        }
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let Ok(base) = stem.parse::<i64>() else { continue };
        match ext {
            "log" => logs.push(base),
            "index" | "txnindex" => others.push((base, entry.path())),
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in others {
        if logs.binary_search(&base).is_err() {
            fs::remove_file(path)?;
        }
    }
    Ok(logs)
}

fn read_start_offset(dir: &Path) -> io::Result<Option<i64>> {
    match fs::read_to_string(dir.join(START_OFFSET_FILE)) {
        Ok(s) => Ok(s.trim().parse::<i64>().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Persist the log start offset (temporary file + rename, so it is never torn).
pub(crate) fn write_start_offset(dir: &Path, offset: i64) -> io::Result<()> {
    let tmp = dir.join(format!("{START_OFFSET_FILE}.tmp"));
    fs::write(&tmp, format!("{offset}\n"))?;
    fs::rename(&tmp, dir.join(START_OFFSET_FILE))
}
