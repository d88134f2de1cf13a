//! One segment: `{base:020}.log` (batches back to back, exactly as produced
//! but with broker-assigned offsets) and its sparse `{base:020}.index`.
//!
//! The segment keeps in memory what reads and retention need without touching
//! the disk: size, next offset, largest timestamp and the index entries. Reads
//! go through `pread` (FileExt), appends through `pwrite` at the known end,
//! so no seek state is shared between them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::batch::{crc_ok, BatchHeader, HEADER_LEN};
use super::index::{IndexEntry, OffsetIndex};

/// `{dir}/{base:020}.{ext}`: zero-padded so names sort like offsets, as Kafka's do.
pub(crate) fn segment_file(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// One step of a sequential scan over a segment file.
pub(crate) enum Scanned {
    Batch(u64, BatchHeader),
    End,
    /// A batch that cannot be read whole (torn write) or fails its CRC, at this position.
    Bad(u64, String),
}

/// Sequential batch reader with a buffer, for scans (recovery, producer-state
/// replay, time lookups) that would otherwise issue one pread per header.
pub(crate) struct BatchScanner<'a> {
    reader: BufReader<&'a File>,
    pos: u64,
    end: u64,
    body: Vec<u8>,
}

impl<'a> BatchScanner<'a> {
    pub fn new(file: &'a File, pos: u64, end: u64) -> io::Result<BatchScanner<'a>> {
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        reader.seek(SeekFrom::Start(pos))?;
        Ok(BatchScanner {
            reader,
            pos,
            end,
            body: Vec::new(),
        })
    }

    /// Next batch. With `full`, the whole batch is read into [`Self::body`] and its CRC checked.
    pub fn next_batch(&mut self, full: bool) -> io::Result<Scanned> {
        let at = self.pos;
        if at >= self.end {
            return Ok(Scanned::End);
        }
        if self.end - at < HEADER_LEN as u64 {
            return Ok(Scanned::Bad(
                at,
                format!("{} trailing bytes, shorter than a batch header", self.end - at),
            ));
        }
        let mut head = [0u8; HEADER_LEN];
        self.reader.read_exact(&mut head)?;
        let header = match BatchHeader::parse(&head) {
            Ok(h) => h,
            Err(e) => return Ok(Scanned::Bad(at, e)),
        };
        if header.size as u64 > self.end - at {
            return Ok(Scanned::Bad(
                at,
                format!(
                    "batch of {} bytes but only {} bytes remain in the file",
                    header.size,
                    self.end - at
                ),
            ));
        }
        let rest = header.size - HEADER_LEN;
        if full {
            self.body.clear();
            self.body.extend_from_slice(&head);
            self.body.resize(header.size, 0);
            self.reader.read_exact(&mut self.body[HEADER_LEN..])?;
            if !crc_ok(&self.body) {
                return Ok(Scanned::Bad(
                    at,
                    format!("CRC mismatch in batch at base offset {}", header.base_offset),
                ));
            }
        } else {
            self.reader.seek_relative(rest as i64)?;
        }
        self.pos += header.size as u64;
        Ok(Scanned::Batch(at, header))
    }

    /// The last batch read with `full = true`.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

pub(crate) struct Segment {
    pub base_offset: i64,
    file: File,
    /// Bytes of valid batches in the file.
    pub size: u64,
    /// Last offset + 1 of the last batch; the base offset while empty.
    pub next_offset: i64,
    /// Largest batch max-timestamp (-1 when none).
    pub max_timestamp: i64,
    pub index: OffsetIndex,
    bytes_since_index: u64,
    /// Written since the last fsync.
    pub dirty: bool,
}

/// What `Segment::open` had to repair.
pub(crate) struct Recovery {
    pub truncated: Option<(u64, String)>,
    pub index_rebuilt: bool,
}

impl Segment {
    /// Create a new empty segment (truncating leftovers of the same name).
    pub fn create(dir: &Path, base: i64) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(segment_file(dir, base, "log"))?;
        let index = OffsetIndex::with_entries(&segment_file(dir, base, "index"), Vec::new(), true)?;
        Ok(Segment {
            base_offset: base,
            file,
            size: 0,
            next_offset: base,
            max_timestamp: -1,
            index,
            bytes_since_index: 0,
            dirty: true,
        })
    }

    /// Open an existing segment. `full_check` (the last, active, segment, which
    /// is the one a crash can leave torn) rescans and CRC-checks every batch and
    /// rebuilds the index. Otherwise the index is trusted if it fits the file,
    /// and only the bytes after its last entry are scanned, to learn the next
    /// offset and largest timestamp. Either scan truncates the file at the first
    /// batch that is torn, fails its CRC, or goes backwards in offsets.
    pub fn open(dir: &Path, base: i64, index_interval: u32, full_check: bool) -> io::Result<(Segment, Recovery)> {
        let log_path = segment_file(dir, base, "log");
        let index_path = segment_file(dir, base, "index");
        let file = OpenOptions::new().read(true).write(true).open(&log_path)?;
        let file_len = file.metadata()?.len();
        let mut entries = if full_check {
            None
        } else {
            OffsetIndex::read_entries(&index_path)?
        };
        if let Some(es) = &entries {
            if !index_fits(&file, base, file_len, es)? {
                entries = None;
            }
        }
        let index_rebuilt = entries.is_none();
        let mut entries = entries.unwrap_or_default();
        let (start_pos, mut max_ts, mut next_offset) = match entries.last() {
            Some(e) => (e.position as u64, e.max_ts_before, base + e.rel_offset as i64),
            None => (0, -1, base),
        };
        let mut bytes_since_index = 0u64;
        let mut truncated = None;
        let mut end = start_pos;
        {
            let mut scanner = BatchScanner::new(&file, start_pos, file_len)?;
            let mut first = true;
            loop {
                match scanner.next_batch(true)? {
                    Scanned::End => break,
                    Scanned::Bad(at, why) => {
                        truncated = Some((at, why));
                        break;
                    }
                    Scanned::Batch(at, h) => {
                        let rel = h.last_offset() - base;
                        if h.base_offset < next_offset || h.last_offset_delta < 0 || rel > u32::MAX as i64 {
                            let why = format!(
                                "batch at position {at} has offsets {}..={}, expected at least {next_offset}",
                                h.base_offset,
                                h.last_offset()
                            );
                            truncated = Some((at, why));
                            break;
                        }
                        // When resuming from an index entry, that entry already covers this batch.
                        if !(first && start_pos > 0) && bytes_since_index >= index_interval as u64 {
                            entries.push(IndexEntry {
                                rel_offset: (h.base_offset - base) as u32,
                                position: at as u32,
                                max_ts_before: max_ts,
                            });
                            bytes_since_index = 0;
                        }
                        first = false;
                        bytes_since_index += h.size as u64;
                        max_ts = max_ts.max(h.max_timestamp);
                        next_offset = h.next_offset();
                        end = at + h.size as u64;
                    }
                }
            }
        }
        if truncated.is_some() || end != file_len {
            file.set_len(end)?;
        }
        let index = OffsetIndex::with_entries(&index_path, entries, index_rebuilt || truncated.is_some())?;
        let seg = Segment {
            base_offset: base,
            file,
            size: end,
            next_offset,
            max_timestamp: max_ts,
            index,
            bytes_since_index,
            dirty: truncated.is_some(),
        };
        Ok((
            seg,
            Recovery {
                truncated,
                index_rebuilt,
            },
        ))
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Append batches (`bytes`, already carrying their final offsets) whose
    /// headers and positions within `bytes` are `batches`.
    pub fn append(&mut self, bytes: &[u8], batches: &[(usize, BatchHeader)], index_interval: u32) -> io::Result<()> {
        let start = self.size;
        if let Err(e) = self.file.write_all_at(bytes, start) {
            // Leave no partial batch behind for later appends to follow.
            let _ = self.file.set_len(start);
            return Err(e);
        }
        self.size += bytes.len() as u64;
        self.dirty = true;
        let mut index_error = None;
        for (pos, h) in batches {
            if self.bytes_since_index >= index_interval as u64 && index_error.is_none() {
                let e = IndexEntry {
                    rel_offset: (h.base_offset - self.base_offset) as u32,
                    position: (start + *pos as u64) as u32,
                    max_ts_before: self.max_timestamp,
                };
                match self.index.append(e) {
                    Ok(()) => self.bytes_since_index = 0,
                    Err(e) => index_error = Some(e),
                }
            }
            self.bytes_since_index += h.size as u64;
            self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
            self.next_offset = h.next_offset();
        }
        // The log holds the data; a missing index entry only costs a longer scan.
        if let Some(e) = index_error {
            tracing::warn!(index = %self.index.path().display(), error = %e, "could not append index entry");
        }
        Ok(())
    }

    /// First batch whose last offset is >= `offset`, from the index's hint.
    pub fn find_offset(&self, offset: i64) -> io::Result<Option<(u64, BatchHeader)>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let pos = self.index.position_for_offset(rel) as u64;
        self.scan_from(pos, |h| h.last_offset() >= offset)
    }

    /// Scan headers from `pos` and return the first batch matching `pred`.
    pub fn scan_from(&self, pos: u64, pred: impl Fn(&BatchHeader) -> bool) -> io::Result<Option<(u64, BatchHeader)>> {
        let mut scanner = BatchScanner::new(&self.file, pos, self.size)?;
        loop {
            match scanner.next_batch(false)? {
                Scanned::Batch(at, h) if pred(&h) => return Ok(Some((at, h))),
                Scanned::Batch(..) => {}
                Scanned::End | Scanned::Bad(..) => return Ok(None),
            }
        }
    }

    pub fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.index.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Last-modified time of the log file in ms, for retention of segments
    /// whose batches carry no timestamps (Kafka does the same).
    pub fn modified_ms(&self) -> i64 {
        self.file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    /// Remove the segment's files (log, index, aborted-transaction index).
    pub fn delete_files(dir: &Path, base: i64) -> io::Result<()> {
        for ext in ["log", "index", "txnindex"] {
            match fs::remove_file(segment_file(dir, base, ext)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Does an index plausibly describe this log file? Its last entry must point
/// inside the file at a batch with exactly the offset it records.
fn index_fits(file: &File, base: i64, file_len: u64, entries: &[IndexEntry]) -> io::Result<bool> {
    let Some(last) = entries.last() else { return Ok(true) };
    if last.position as u64 + HEADER_LEN as u64 > file_len {
        return Ok(false);
    }
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, last.position as u64)?;
    Ok(matches!(BatchHeader::parse(&head), Ok(h) if h.base_offset == base + last.rel_offset as i64))
}
