//! Log compaction (cleanup.policy=compact), after Kafka's LogCleaner.
//!
//! Only closed segments wholly below the last stable offset are touched (the
//! "cleanable" range): the active segment and anything an open transaction
//! may still abort stay as written. Two passes over that range:
//!
//! 1. map every key to the offset of its latest record (records of aborted
//!    transactions do not count);
//! 2. rewrite each segment keeping only records that are their key's latest,
//!    records without a key, and tombstones younger than delete.retention.ms
//!    (judged by the record's timestamp; Kafka uses the cleaning time, see
//!    the report), dropping aborted transactions' records.
//!
//! Records keep their offsets (gaps are fine: a fetch of a missing offset gets
//! the next batch). Control batches are kept as they are, so transaction
//! markers and the `.txnindex` stay valid. A batch that loses no record is
//! copied byte for byte; one that loses some is re-encoded with the
//! `kafka-protocol` encoder, with the same codec, producer id, epoch,
//! timestamps and leader epoch, and its header patched so that it still ends
//! at the original last offset and keeps a base sequence of -1 when it had no
//! sequence. A batch that loses every record is dropped: the producer state
//! it carried lives on in the snapshots (written at every roll).
//!
//! Crash safety: the new contents go to `{base}.log.cleaned` (fsynced), the
//! index is removed, and the file is renamed over `{base}.log`. A crash before
//! the rename leaves the old segment (the `.cleaned` file is deleted on open);
//! after it, the new one; either way a missing index is rebuilt on open.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};

use super::batch::{self, BatchHeader};
use super::error::{io_err, LogError};
use super::segment::{segment_file, BatchScanner, Scanned, Segment};
use super::PartitionLog;

/// What one [`PartitionLog::compact`] run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Segments that were rewritten.
    pub segments_cleaned: usize,
    /// Data records examined in the cleanable range.
    pub records_read: u64,
    /// Records removed (superseded, expired tombstones, aborted).
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Aborted transaction ranges per producer: (first offset, marker offset).
type AbortedRanges = HashMap<i64, Vec<(i64, i64)>>;

fn is_aborted(aborted: &AbortedRanges, h: &BatchHeader) -> bool {
    h.is_transactional()
        && !h.is_control()
        && aborted.get(&h.producer_id).is_some_and(|rs| {
            rs.iter()
                .any(|&(first, last)| first <= h.base_offset && h.base_offset <= last)
        })
}

fn decode(log: &PartitionLog, body: &[u8], h: &BatchHeader) -> Result<Vec<kafka_protocol::records::Record>, LogError> {
    let mut buf = Bytes::copy_from_slice(body);
    RecordBatchDecoder::decode(&mut buf)
        .map(|s| s.records)
        .map_err(|e| LogError::CorruptBatch {
            dir: log.dir.clone(),
            reason: format!(
                "batch at offset {} cannot be decoded for compaction: {e}",
                h.base_offset
            ),
        })
}

pub(crate) fn compact(log: &mut PartitionLog, now_ms: i64) -> Result<CompactStats, LogError> {
    let mut stats = CompactStats::default();
    let uncleanable = log.last_stable_offset().min(log.active().base_offset);
    let closed = log.segments.len() - 1;
    let cleanable = (0..closed)
        .take_while(|&i| log.segments[i + 1].base_offset <= uncleanable)
        .count();
    if cleanable == 0 {
        return Ok(stats);
    }
    let mut aborted: AbortedRanges = HashMap::new();
    for e in &log.aborted {
        aborted
            .entry(e.producer_id)
            .or_default()
            .push((e.first_offset, e.last_offset));
    }
    let dir = log.dir.clone();

    // Pass 1: latest offset per key.
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    for seg in &log.segments[..cleanable] {
        let mut scanner = BatchScanner::new(seg.file(), 0, seg.size).map_err(io_err(&dir, "scan segment"))?;
        while let Scanned::Batch(_, h) = scanner.next_batch(true).map_err(io_err(&dir, "scan segment"))? {
            if h.is_control() || is_aborted(&aborted, &h) {
                continue;
            }
            for r in decode(log, scanner.body(), &h)? {
                stats.records_read += 1;
                if let Some(k) = r.key {
                    latest.insert(k, r.offset);
                }
            }
        }
    }

    // Pass 2: rewrite segments that lose records.
    let horizon = now_ms.saturating_sub(log.delete_retention_ms);
    for i in 0..cleanable {
        let seg = &log.segments[i];
        let base = seg.base_offset;
        let mut out: Vec<u8> = Vec::with_capacity(seg.size as usize);
        let mut changed = false;
        let mut removed = 0u64;
        {
            let mut scanner = BatchScanner::new(seg.file(), 0, seg.size).map_err(io_err(&dir, "scan segment"))?;
            while let Scanned::Batch(_, h) = scanner.next_batch(true).map_err(io_err(&dir, "scan segment"))? {
                let body = scanner.body();
                if h.is_control() {
                    out.extend_from_slice(body);
                    continue;
                }
                let records = decode(log, body, &h)?;
                let total = records.len();
                let kept: Vec<_> = if is_aborted(&aborted, &h) {
                    Vec::new()
                } else {
                    records
                        .into_iter()
                        .filter(|r| match &r.key {
                            None => true,
                            Some(k) => {
                                latest.get(k) == Some(&r.offset) && (r.value.is_some() || r.timestamp >= horizon)
                            }
                        })
                        .collect()
                };
                removed += (total - kept.len()) as u64;
                if kept.len() == total {
                    out.extend_from_slice(body);
                    continue;
                }
                changed = true;
                if kept.is_empty() {
                    continue;
                }
                let mut buf = BytesMut::new();
                RecordBatchEncoder::encode(
                    &mut buf,
                    &kept,
                    &RecordEncodeOptions {
                        version: 2,
                        compression: h.compression(),
                    },
                )
                .map_err(|e| LogError::CorruptBatch {
                    dir: dir.clone(),
                    reason: format!("re-encoding batch at offset {} for compaction: {e}", h.base_offset),
                })?;
                let mut bytes = buf.to_vec();
                patch_header(&mut bytes, &h);
                out.extend_from_slice(&bytes);
            }
        }
        stats.records_removed += removed;
        if !changed {
            continue;
        }
        stats.segments_cleaned += 1;
        stats.bytes_before += seg.size;
        stats.bytes_after += out.len() as u64;

        let log_path = segment_file(&dir, base, "log");
        let cleaned = dir.join(format!("{base:020}.log.cleaned"));
        {
            let mut f: File = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&cleaned)
                .map_err(io_err(&dir, "create cleaned segment"))?;
            f.write_all(&out).map_err(io_err(&dir, "write cleaned segment"))?;
            f.sync_all().map_err(io_err(&dir, "fsync cleaned segment"))?;
        }
        match fs::remove_file(segment_file(&dir, base, "index")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&dir, "remove old index")(e)),
        }
        fs::rename(&cleaned, &log_path).map_err(io_err(&dir, "swap in cleaned segment"))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir, "fsync partition directory"))?;
        let (new_seg, _) = Segment::open(&dir, base, log.config.index_interval_bytes, true)
            .map_err(io_err(&dir, format!("reopen cleaned segment {base}")))?;
        log.segments[i] = new_seg;
    }
    Ok(stats)
}

/// Make a re-encoded batch look like the original where the encoder cannot:
/// same last offset (so the batch still spans the offsets it did), the
/// timestamp-type attribute, and "no sequence" for non-idempotent batches.
fn patch_header(bytes: &mut [u8], original: &BatchHeader) {
    let new_base = i64::from_be_bytes(bytes[0..8].try_into().unwrap());
    let delta = (original.last_offset() - new_base) as i32;
    bytes[23..27].copy_from_slice(&delta.to_be_bytes());
    let mut attributes = i16::from_be_bytes([bytes[21], bytes[22]]);
    attributes = (attributes & !(1 << 3)) | (original.attributes & (1 << 3));
    bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
    if original.base_sequence < 0 {
        bytes[53..57].copy_from_slice(&original.base_sequence.to_be_bytes());
    }
    batch::fix_crc(bytes);
}
