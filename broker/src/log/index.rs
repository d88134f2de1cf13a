//! The sparse per-segment index (`{base}.index`).
//!
//! Like Kafka's `.index`, it maps a batch's offset (relative to the segment
//! base, so it fits in 4 bytes) to the batch's byte position, one entry every
//! `index_interval_bytes` of log. Unlike Kafka it has no separate
//! `.timeindex`: each entry also carries the largest timestamp of every batch
//! *before* its position. That value never decreases along the index, so a
//! binary search finds the last entry before which no batch can hold a
//! timestamp >= the target, and a time lookup scans from there, as an offset
//! lookup does.
//!
//! Entries are 16 bytes, big endian: relative base offset u32, position u32,
//! max timestamp before i64. The whole index is kept in memory (a 1 GiB
//! segment at the default interval is 256 Ki entries, 4 MiB); the file only
//! saves rescanning closed segments on open. It is written with plain write(2)
//! and is checked on open and rebuilt from the log if it does not fit it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(crate) const ENTRY_LEN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub rel_offset: u32,
    pub position: u32,
    /// Largest batch max-timestamp of the segment before `position` (-1 if none).
    pub max_ts_before: i64,
}

pub(crate) struct OffsetIndex {
    path: PathBuf,
    file: File,
    entries: Vec<IndexEntry>,
}

impl OffsetIndex {
    /// Read an index file. `Ok(None)` when it is missing or malformed (length
    /// not a multiple of the entry size, entries not strictly increasing).
    pub fn read_entries(path: &Path) -> io::Result<Option<Vec<IndexEntry>>> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        if bytes.len() % ENTRY_LEN != 0 {
            return Ok(None);
        }
        let mut entries = Vec::with_capacity(bytes.len() / ENTRY_LEN);
        for chunk in bytes.chunks_exact(ENTRY_LEN) {
            let e = IndexEntry {
                rel_offset: u32::from_be_bytes(chunk[0..4].try_into().unwrap()),
                position: u32::from_be_bytes(chunk[4..8].try_into().unwrap()),
                max_ts_before: i64::from_be_bytes(chunk[8..16].try_into().unwrap()),
            };
            if let Some(prev) = entries.last() {
                let prev: &IndexEntry = prev;
                if e.rel_offset <= prev.rel_offset
                    || e.position <= prev.position
                    || e.max_ts_before < prev.max_ts_before
                {
                    return Ok(None);
                }
            }
            entries.push(e);
        }
        Ok(Some(entries))
    }

    /// Open `path` with the given entries, rewriting the file when `rewrite`.
    pub fn with_entries(path: &Path, entries: Vec<IndexEntry>, rewrite: bool) -> io::Result<OffsetIndex> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(rewrite)
            .open(path)?;
        if rewrite {
            let mut bytes = Vec::with_capacity(entries.len() * ENTRY_LEN);
            for e in &entries {
                bytes.extend_from_slice(&encode(e));
            }
            file.write_all_at(&bytes, 0)?;
        }
        Ok(OffsetIndex {
            path: path.to_path_buf(),
            file,
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, e: IndexEntry) -> io::Result<()> {
        let at = (self.entries.len() * ENTRY_LEN) as u64;
        self.file.write_all_at(&encode(&e), at)?;
        self.entries.push(e);
        Ok(())
    }

    /// Position of the last indexed batch whose base offset is <= `rel`
    /// (0 when none): scanning from there reaches the batch holding `rel`.
    pub fn position_for_offset(&self, rel: u32) -> u32 {
        let n = self.entries.partition_point(|e| e.rel_offset <= rel);
        if n == 0 {
            0
        } else {
            self.entries[n - 1].position
        }
    }

    /// Position of the last entry before which every batch's max timestamp is
    /// < `ts`: the first batch with max timestamp >= `ts` is at or after it.
    pub fn position_for_timestamp(&self, ts: i64) -> u32 {
        let n = self.entries.partition_point(|e| e.max_ts_before < ts);
        if n == 0 {
            0
        } else {
            self.entries[n - 1].position
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

fn encode(e: &IndexEntry) -> [u8; ENTRY_LEN] {
    let mut b = [0u8; ENTRY_LEN];
    b[0..4].copy_from_slice(&e.rel_offset.to_be_bytes());
    b[4..8].copy_from_slice(&e.position.to_be_bytes());
    b[8..16].copy_from_slice(&e.max_ts_before.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: u32, pos: u32, ts: i64) -> IndexEntry {
        IndexEntry {
            rel_offset: rel,
            position: pos,
            max_ts_before: ts,
        }
    }

    #[test]
    fn lookups_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::with_entries(&path, Vec::new(), true).unwrap();
        idx.append(entry(10, 1000, 50)).unwrap();
        idx.append(entry(20, 2000, 70)).unwrap();
        assert_eq!(idx.position_for_offset(5), 0);
        assert_eq!(idx.position_for_offset(10), 1000);
        assert_eq!(idx.position_for_offset(19), 1000);
        assert_eq!(idx.position_for_offset(25), 2000);
        assert_eq!(idx.position_for_timestamp(50), 0);
        assert_eq!(idx.position_for_timestamp(51), 1000);
        assert_eq!(idx.position_for_timestamp(71), 2000);
        let read = OffsetIndex::read_entries(&path).unwrap().unwrap();
        assert_eq!(read, vec![entry(10, 1000, 50), entry(20, 2000, 70)]);
    }

    #[test]
    fn malformed_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        assert!(OffsetIndex::read_entries(&path).unwrap().is_none());
        std::fs::write(&path, [0u8; 17]).unwrap();
        assert!(OffsetIndex::read_entries(&path).unwrap().is_none());
        let mut bytes = encode(&entry(5, 100, 0)).to_vec();
        bytes.extend_from_slice(&encode(&entry(4, 200, 0)));
        std::fs::write(&path, bytes).unwrap();
        assert!(OffsetIndex::read_entries(&path).unwrap().is_none());
    }
}
