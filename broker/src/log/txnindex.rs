//! Aborted transactions, persisted per segment in `{base:020}.txnindex`
//! (Kafka's `.txnindex`): one entry for each ABORT marker in that segment.
//!
//! A read_committed consumer needs, for the range it fetches, the aborted
//! transactions' producer ids and first offsets, so it can drop their
//! records. The marker alone does not tell where its transaction began, and
//! finding out would mean rescanning the log; the entry records it when the
//! marker is written. Entries are 24 bytes, big endian: producer id, first
//! offset, marker (last) offset. The file of the segment holding the marker
//! owns the entry, so deleting a segment deletes its entries too.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

const ENTRY_LEN: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AbortedEntry {
    pub producer_id: i64,
    pub first_offset: i64,
    /// Offset of the ABORT marker.
    pub last_offset: i64,
}

fn encode(e: &AbortedEntry) -> [u8; ENTRY_LEN] {
    let mut b = [0u8; ENTRY_LEN];
    b[0..8].copy_from_slice(&e.producer_id.to_be_bytes());
    b[8..16].copy_from_slice(&e.first_offset.to_be_bytes());
    b[16..24].copy_from_slice(&e.last_offset.to_be_bytes());
    b
}

/// Entries of a file; a missing file has none, and a torn trailing partial
/// entry is ignored (recovery re-derives it from the marker in the log).
pub(crate) fn read(path: &Path) -> io::Result<Vec<AbortedEntry>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    Ok(bytes
        .chunks_exact(ENTRY_LEN)
        .map(|c| AbortedEntry {
            producer_id: i64::from_be_bytes(c[0..8].try_into().unwrap()),
            first_offset: i64::from_be_bytes(c[8..16].try_into().unwrap()),
            last_offset: i64::from_be_bytes(c[16..24].try_into().unwrap()),
        })
        .collect())
}

pub(crate) fn append(path: &Path, e: &AbortedEntry) -> io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    // A previous torn write would misalign every later entry: drop it first.
    let len = f.metadata()?.len();
    if len % ENTRY_LEN as u64 != 0 {
        f.set_len(len - len % ENTRY_LEN as u64)?;
    }
    f.write_all(&encode(e))
}

/// Replace the file's contents (after a truncation dropped some markers).
pub(crate) fn rewrite(path: &Path, entries: &[AbortedEntry]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        bytes.extend_from_slice(&encode(e));
    }
    std::fs::write(path, bytes)
}

pub(crate) fn sync(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.txnindex");
        assert!(read(&p).unwrap().is_empty());
        let a = AbortedEntry {
            producer_id: 1,
            first_offset: 2,
            last_offset: 3,
        };
        let b = AbortedEntry {
            producer_id: 4,
            first_offset: 5,
            last_offset: 6,
        };
        append(&p, &a).unwrap();
        // torn write
        OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(&[1, 2, 3])
            .unwrap();
        assert_eq!(read(&p).unwrap(), vec![a]);
        append(&p, &b).unwrap();
        assert_eq!(read(&p).unwrap(), vec![a, b]);
        rewrite(&p, &[b]).unwrap();
        assert_eq!(read(&p).unwrap(), vec![b]);
    }
}
