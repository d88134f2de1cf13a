//! The per-partition log: append-only segment files holding record batches
//! exactly as Kafka stores them, so Fetch can hand bytes straight back.
//!
//! # On-disk layout (one directory per partition)
//!
//! | file | contents |
//! | --- | --- |
//! | `{base:020}.log` | magic-2 record batches back to back, offsets assigned by the broker; `base` is the first offset the segment may hold |
//! | `{base:020}.index` | sparse index: 16-byte entries (relative offset u32, position u32, max timestamp of the batches before it i64), one per `index_interval_bytes` ([`index`]) |
//! | `{base:020}.txnindex` | aborted transactions whose ABORT marker is in this segment: 24-byte entries (producer id, first offset, marker offset) ([`txnindex`]) |
//! | `{offset:020}.snapshot` | producer state (sequences, epochs, open transactions) as of `offset`, JSON; the two newest are kept ([`producers`]) |
//! | `log-start-offset` | the log start offset in decimal, when DeleteRecords or retention moved it |
//! | `*.cleaned`, `*.tmp` | work in progress (compaction, atomic rewrites); deleted on open |
//!
//! The last segment is the active one and the only one appended to. Writes
//! are plain write(2) without fsync, like Kafka's default flush policy: what
//! reached the OS survives a SIGKILL, and [`PartitionLog::open`] cuts off a
//! torn tail ([`recover`]). [`PartitionLog::flush`] fsyncs, for a clean shutdown.
//!
//! # Modules
//!
//! * [`batch`]: the batch header read from bytes, CRC, marker encoding.
//! * [`segment`]: one segment's files, its scans, appends and reads.
//! * [`index`]: the sparse offset/time index.
//! * [`txnindex`]: the aborted-transaction index.
//! * [`producers`]: idempotence and transaction state, and its snapshots.
//! * [`recover`]: open and crash recovery.
//! * [`compact`]: log compaction.
//!
//! The caller (the broker) owns each `PartitionLog` behind a mutex; nothing
//! here locks.

mod batch;
mod compact;
mod error;
mod index;
mod producers;
mod recover;
mod segment;
mod txnindex;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

pub use compact::CompactStats;
pub use error::LogError;

use batch::BatchHeader;
use error::io_err;
use producers::{ProducerEntry, ProducerStates, Verdict};
use segment::{segment_file, Segment};
use txnindex::AbortedEntry;

pub(crate) const START_OFFSET_FILE: &str = "log-start-offset";
/// Kafka's delete.retention.ms default: tombstones stay at least one day.
pub const DEFAULT_DELETE_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// Per-partition log settings (the subset of Kafka's topic configs the log uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll a new segment when the active one would exceed this (segment.bytes).
    pub segment_bytes: u64,
    /// retention.ms; None keeps data forever (retention.ms = -1).
    pub retention_ms: Option<i64>,
    /// retention.bytes; None is unlimited.
    pub retention_bytes: Option<u64>,
    /// cleanup.policy=compact (then retention does not delete, as in Kafka).
    pub compact: bool,
    /// index.interval.bytes: one sparse index entry per this many log bytes.
    pub index_interval_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            retention_ms: Some(7 * 24 * 60 * 60 * 1000),
            retention_bytes: None,
            compact: false,
            index_interval_bytes: 4096,
        }
    }
}

/// Result of [`PartitionLog::append`]: what a ProduceResponse partition reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Largest batch max timestamp of the append (-1 if none).
    pub max_timestamp: i64,
    /// The batches were an idempotent retry of batches already in the log:
    /// nothing was written and the offsets are those of the originals.
    pub duplicate: bool,
    pub log_start_offset: i64,
}

/// An aborted transaction, as listed in a read_committed FetchResponse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// One partition's log. See the module documentation.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset; the last one is active.
    segments: Vec<Segment>,
    start_offset: i64,
    producers: ProducerStates,
    /// Sorted by marker offset.
    aborted: Vec<AbortedEntry>,
    leader_epoch: i32,
    delete_retention_ms: i64,
}

impl PartitionLog {
    /// Open or create the log in `dir`, recovering from a crash: see [`recover`].
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, LogError> {
        recover::open(dir, config)
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Partition leader epoch stamped into every appended batch (default 0:
    /// a single-node broker never changes leader). Outside the CRC.
    pub fn set_leader_epoch(&mut self, epoch: i32) {
        self.leader_epoch = epoch;
    }

    /// delete.retention.ms for compaction: how long a tombstone is kept.
    pub fn set_delete_retention_ms(&mut self, ms: i64) {
        self.delete_retention_ms = ms;
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has an active segment")
    }

    pub fn start_offset(&self) -> i64 {
        self.start_offset
    }

    /// The next offset to assign; on a single node also the high watermark.
    pub fn end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// First offset of the earliest open transaction, else the end offset.
    pub fn last_stable_offset(&self) -> i64 {
        match self.producers.first_unstable_offset() {
            Some(first) => first.max(self.start_offset).min(self.end_offset()),
            None => self.end_offset(),
        }
    }

    /// Total bytes of the segment files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Base offsets of the segments, oldest first (for tests and diagnostics).
    pub fn segment_bases(&self) -> Vec<i64> {
        self.segments.iter().map(|s| s.base_offset).collect()
    }

    /// Append the record batches of one Produce partition. See the crate brief:
    /// validates framing, CRC and Kafka's batch rules; checks idempotence and
    /// transactions; assigns offsets by rewriting each base offset; writes.
    pub fn append(&mut self, batches: &[u8], now_ms: i64) -> Result<Appended, LogError> {
        let _ = now_ms; // CreateTime only: the broker does not stamp LogAppendTime.
        let dir = self.dir.clone();
        let corrupt = |reason: String| LogError::CorruptBatch {
            dir: dir.clone(),
            reason,
        };
        let invalid = |reason: String| LogError::InvalidRecord {
            dir: dir.clone(),
            reason,
        };
        let parsed = batch::split_batches(batches).map_err(corrupt)?;
        for (pos, h) in &parsed {
            h.validate_for_append()
                .map_err(|e| invalid(format!("batch at byte {pos}: {e}")))?;
            if h.is_control() {
                return Err(invalid(format!(
                    "batch at byte {pos}: clients may not write control batches"
                )));
            }
            if h.is_transactional() && h.producer_id < 0 {
                return Err(invalid(format!(
                    "batch at byte {pos}: transactional batch without a producer id"
                )));
            }
            if self.config.compact {
                check_keys(&batches[*pos..*pos + h.size]).map_err(|e| invalid(format!("batch at byte {pos}: {e}")))?;
            }
        }

        // Assign offsets and check producer state on a staged copy, committed after the write.
        let mut next = self.end_offset();
        let mut staged: HashMap<i64, ProducerEntry> = HashMap::new();
        let mut fresh: Vec<(usize, BatchHeader)> = Vec::with_capacity(parsed.len());
        let mut duplicates = Vec::new();
        for (pos, mut h) in parsed {
            h.base_offset = next;
            if h.producer_id >= 0 {
                let current = staged
                    .get(&h.producer_id)
                    .or_else(|| self.producers.map.get(&h.producer_id));
                match producers::check_data(&self.dir, current, &h)? {
                    Verdict::Duplicate(meta) => {
                        duplicates.push(meta);
                        continue;
                    }
                    Verdict::Append => {
                        let mut e = current.cloned().unwrap_or_else(|| ProducerEntry::new(h.producer_id));
                        producers::apply_data(&mut e, &h);
                        staged.insert(h.producer_id, e);
                    }
                }
            }
            next = h.next_offset();
            fresh.push((pos, h));
        }
        if !duplicates.is_empty() {
            if !fresh.is_empty() {
                return Err(LogError::DuplicateSequence {
                    dir: self.dir.clone(),
                    producer_id: fresh[0].1.producer_id,
                    first_seq: duplicates[0].first_seq,
                });
            }
            return Ok(Appended {
                base_offset: duplicates[0].first_offset,
                last_offset: duplicates.last().expect("non-empty").last_offset,
                max_timestamp: duplicates.iter().map(|m| m.max_timestamp).max().unwrap_or(-1),
                duplicate: true,
                log_start_offset: self.start_offset,
            });
        }

        // Copy the accepted batches contiguously, with their offsets and leader epoch.
        let total: usize = fresh.iter().map(|(_, h)| h.size).sum();
        let mut out = Vec::with_capacity(total);
        let mut placed = Vec::with_capacity(fresh.len());
        for (pos, h) in &fresh {
            let at = out.len();
            out.extend_from_slice(&batches[*pos..*pos + h.size]);
            batch::set_base_offset(&mut out[at..], h.base_offset);
            batch::set_leader_epoch(&mut out[at..], self.leader_epoch);
            placed.push((at, *h));
        }
        let last_offset = next - 1;
        self.maybe_roll(total as u64, last_offset)?;
        let interval = self.config.index_interval_bytes;
        let active = self.segments.last_mut().expect("active segment");
        active
            .append(&out, &placed, interval)
            .map_err(io_err(&self.dir, "append to segment"))?;
        self.producers.map.extend(staged);
        Ok(Appended {
            base_offset: placed[0].1.base_offset,
            last_offset,
            max_timestamp: placed.iter().map(|(_, h)| h.max_timestamp).max().unwrap_or(-1),
            duplicate: false,
            log_start_offset: self.start_offset,
        })
    }

    /// Roll to a new segment if `bytes` more would overflow the active one, or
    /// `last_offset` would not fit its 32-bit relative offsets.
    fn maybe_roll(&mut self, bytes: u64, last_offset: i64) -> Result<(), LogError> {
        let active = self.active();
        let too_big = active.size > 0 && active.size + bytes > self.config.segment_bytes.min(i32::MAX as u64);
        let too_far = last_offset - active.base_offset > i32::MAX as i64;
        if (too_big || too_far) && active.size > 0 {
            self.roll()?;
        }
        Ok(())
    }

    /// Start a new active segment at the end offset. Snapshots producer state
    /// first, as Kafka does, so recovery only replays the new segment.
    fn roll(&mut self) -> Result<(), LogError> {
        let base = self.end_offset();
        producers::write_snapshot(&self.dir, base, &self.producers)
            .map_err(io_err(&self.dir, "write producer state snapshot"))?;
        let seg = Segment::create(&self.dir, base).map_err(io_err(&self.dir, format!("create segment {base}")))?;
        self.segments.push(seg);
        Ok(())
    }

    /// Write a COMMIT or ABORT marker for `producer_id`, ending its open
    /// transaction; an aborted one is recorded in the active segment's
    /// `.txnindex`. Returns the marker's offset.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<i64, LogError> {
        let current = self.producers.map.get(&producer_id);
        producers::check_marker(&self.dir, current, producer_id, producer_epoch, coordinator_epoch)?;
        let offset = self.end_offset();
        let bytes = batch::encode_marker(
            offset,
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            now_ms,
            self.leader_epoch,
        );
        let header = BatchHeader::parse(&bytes).expect("marker header");
        self.maybe_roll(bytes.len() as u64, offset)?;
        let interval = self.config.index_interval_bytes;
        let active = self.segments.last_mut().expect("active segment");
        active
            .append(&bytes, &[(0, header)], interval)
            .map_err(io_err(&self.dir, "append marker"))?;
        let active_base = active.base_offset;
        let entry = self
            .producers
            .map
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(producer_id));
        if let Some(first) = producers::apply_marker(entry, producer_epoch, coordinator_epoch, offset) {
            if !commit {
                let e = AbortedEntry {
                    producer_id,
                    first_offset: first,
                    last_offset: offset,
                };
                self.aborted.push(e);
                txnindex::append(&segment_file(&self.dir, active_base, "txnindex"), &e)
                    .map_err(io_err(&self.dir, "append aborted transaction index"))?;
            }
        }
        Ok(offset)
    }

    /// Whole batches from the one containing `offset`, at most `max_bytes`
    /// (but at least one batch), ending before `upper` (exclusive).
    pub fn read(&self, offset: i64, max_bytes: usize, upper: i64) -> Result<Bytes, LogError> {
        self.check_range(offset)?;
        let upper = upper.min(self.end_offset());
        if offset >= upper {
            return Ok(Bytes::new());
        }
        // One buffer per segment read, joined only when a read spans
        // segments: a fetch of a few MiB is then read once, not copied again
        // into a growing buffer.
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut taken = 0usize;
        let first_seg = self.segment_index_for(offset);
        for seg in &self.segments[first_seg..] {
            if seg.base_offset >= upper {
                break;
            }
            let Some((pos, _)) = seg.find_offset(offset).map_err(io_err(&self.dir, "read index"))? else {
                continue;
            };
            // Extend from `pos` over whole batches within the byte budget and below `upper`.
            let mut end = pos;
            let mut full = false;
            let mut scanner =
                segment::BatchScanner::new(seg.file(), pos, seg.size).map_err(io_err(&self.dir, "scan segment"))?;
            while let segment::Scanned::Batch(at, h) = scanner.next_batch(false).map_err(io_err(&self.dir, "scan"))? {
                if h.last_offset() >= upper {
                    full = true;
                    break;
                }
                let size = (at + h.size as u64 - pos) as usize;
                // The first batch goes out whatever its size; later ones must fit.
                let first_batch = taken == 0 && end == pos;
                if !first_batch && taken + size > max_bytes {
                    full = true;
                    break;
                }
                end = at + h.size as u64;
            }
            if end > pos {
                let bytes = seg
                    .read_at(pos, (end - pos) as usize)
                    .map_err(io_err(&self.dir, "read segment"))?;
                taken += bytes.len();
                chunks.push(bytes);
            }
            if full || taken >= max_bytes {
                break;
            }
        }
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => Bytes::from(chunks.pop().unwrap_or_default()),
            _ => Bytes::from(chunks.concat()),
        })
    }

    fn check_range(&self, offset: i64) -> Result<(), LogError> {
        if offset < self.start_offset || offset > self.end_offset() {
            return Err(LogError::OffsetOutOfRange {
                dir: self.dir.clone(),
                offset,
                start: self.start_offset,
                end: self.end_offset(),
            });
        }
        Ok(())
    }

    /// Index of the segment whose range holds `offset` (the last with base <= offset).
    fn segment_index_for(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
    }

    /// Aborted transactions overlapping [from, to): those whose marker is at or
    /// after `from` and whose first offset is before `to`, by first offset.
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let i = self.aborted.partition_point(|e| e.last_offset < from);
        let mut v: Vec<AbortedTxn> = self.aborted[i..]
            .iter()
            .filter(|e| e.first_offset < to)
            .map(|e| AbortedTxn {
                producer_id: e.producer_id,
                first_offset: e.first_offset,
            })
            .collect();
        v.sort_by_key(|t| (t.first_offset, t.producer_id));
        v
    }

    /// (producer id, first offset) of every open transaction, by first offset.
    pub fn open_transactions(&self) -> Vec<(i64, i64)> {
        self.producers.open_transactions()
    }

    /// ListOffsets by timestamp: the first offset (at or after the log start)
    /// whose record timestamp is >= `ts`, with that timestamp.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for seg in &self.segments {
            if seg.max_timestamp < ts || seg.next_offset <= self.start_offset {
                continue;
            }
            let mut from_pos = seg.index.position_for_timestamp(ts) as u64;
            loop {
                let found = seg
                    .scan_from(from_pos, |h| {
                        h.max_timestamp >= ts && h.last_offset() >= self.start_offset
                    })
                    .map_err(io_err(&self.dir, "scan segment"))?;
                let Some((pos, h)) = found else { break };
                if h.is_log_append_time() {
                    return Ok(Some((h.base_offset.max(self.start_offset), h.max_timestamp)));
                }
                let bytes = seg.read_at(pos, h.size).map_err(io_err(&self.dir, "read segment"))?;
                let mut buf = Bytes::from(bytes);
                let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| LogError::CorruptBatch {
                    dir: self.dir.clone(),
                    reason: format!("batch at offset {}: {e}", h.base_offset),
                })?;
                if let Some(r) = set
                    .records
                    .iter()
                    .find(|r| r.timestamp >= ts && r.offset >= self.start_offset)
                {
                    return Ok(Some((r.offset, r.timestamp)));
                }
                from_pos = pos + h.size as u64;
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (-3): the first record carrying the log's
    /// largest timestamp, with that timestamp (None for an empty log).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let max = self
            .segments
            .iter()
            .filter(|s| s.next_offset > self.start_offset)
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(-1);
        if max < 0 {
            return Ok(None);
        }
        self.offset_for_timestamp(max)
    }

    /// Delete whole closed segments past retention: by time (largest timestamp
    /// older than now - retention.ms) and by size (oldest first, while the log
    /// stays at least retention.bytes without them, as Kafka computes it).
    /// Compacted logs are not subject to retention (cleanup.policy=compact).
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<(), LogError> {
        if self.config.compact {
            return Ok(());
        }
        let closed = self.segments.len() - 1;
        let mut delete = 0;
        if let Some(ms) = self.config.retention_ms {
            while delete < closed {
                let seg = &self.segments[delete];
                let largest = if seg.max_timestamp >= 0 {
                    seg.max_timestamp
                } else {
                    seg.modified_ms()
                };
                if now_ms - largest > ms {
                    delete += 1;
                } else {
                    break;
                }
            }
        }
        if let Some(limit) = self.config.retention_bytes {
            let mut excess = self.size_bytes() as i128 - limit as i128;
            excess -= self.segments[..delete].iter().map(|s| s.size as i128).sum::<i128>();
            while delete < closed && excess - self.segments[delete].size as i128 >= 0 {
                excess -= self.segments[delete].size as i128;
                delete += 1;
            }
        }
        if delete > 0 {
            let new_start = self.segments[delete].base_offset.max(self.start_offset);
            self.delete_segments(delete, new_start)?;
        }
        Ok(())
    }

    /// DeleteRecords: move the log start offset to `offset` (at most the end
    /// offset) and delete the closed segments wholly below it. Returns the new
    /// log start offset (the low watermark).
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        if offset > self.end_offset() || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                dir: self.dir.clone(),
                offset,
                start: self.start_offset,
                end: self.end_offset(),
            });
        }
        if offset <= self.start_offset {
            return Ok(self.start_offset);
        }
        let closed = self.segments.len() - 1;
        let delete = (0..closed)
            .take_while(|&i| self.segments[i + 1].base_offset <= offset)
            .count();
        self.delete_segments(delete, offset)?;
        Ok(self.start_offset)
    }

    /// Checkpoint `new_start`, then delete the first `count` segments.
    fn delete_segments(&mut self, count: usize, new_start: i64) -> Result<(), LogError> {
        recover::write_start_offset(&self.dir, new_start).map_err(io_err(&self.dir, "write log start offset"))?;
        self.start_offset = new_start;
        for seg in self.segments.drain(..count) {
            Segment::delete_files(&self.dir, seg.base_offset)
                .map_err(io_err(&self.dir, format!("delete segment {}", seg.base_offset)))?;
        }
        let first_base = self.segments[0].base_offset;
        self.aborted.retain(|e| e.last_offset >= first_base);
        self.producers.evict_below(new_start);
        Ok(())
    }

    /// Compact closed segments (cleanup.policy=compact): see [`compact`].
    pub fn compact(&mut self, now_ms: i64) -> Result<CompactStats, LogError> {
        compact::compact(self, now_ms)
    }

    /// fsync every written segment, the aborted-transaction indexes and the
    /// directory, and snapshot producer state at the end offset (clean shutdown).
    pub fn flush(&mut self) -> Result<(), LogError> {
        for seg in &mut self.segments {
            let base = seg.base_offset;
            let was_dirty = seg.dirty;
            seg.sync().map_err(io_err(&self.dir, format!("fsync segment {base}")))?;
            if was_dirty {
                txnindex::sync(&segment_file(&self.dir, base, "txnindex"))
                    .map_err(io_err(&self.dir, "fsync aborted transaction index"))?;
            }
        }
        producers::write_snapshot(&self.dir, self.end_offset(), &self.producers)
            .map_err(io_err(&self.dir, "write producer state snapshot"))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir, "fsync partition directory"))?;
        Ok(())
    }
}

/// Compacted topics reject records without a key (Kafka: INVALID_RECORD).
fn check_keys(batch: &[u8]) -> Result<(), String> {
    let mut buf = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| format!("cannot decode records: {e}"))?;
    match set.records.iter().find(|r| r.key.is_none()) {
        Some(r) => Err(format!(
            "compacted topic cannot accept a record without a key (offset delta {})",
            r.offset
        )),
        None => Ok(()),
    }
}
