//! The transaction coordinator's crash-safe state file (what Kafka keeps in
//! the `__transaction_state` topic).
//!
//! # File format: `{dir}/transactions/transactions.log`
//!
//! ```text
//! file    := magic record*
//! magic   := "WEIRTXN1"                        (8 bytes)
//! record  := len:u32 crc:u32 payload[len]      (big-endian; crc = CRC-32C of payload)
//! payload := JSON of one transactional id's whole state (`TxnMeta`)
//! ```
//!
//! Every record is a full snapshot of one transactional id; on open the file
//! is replayed and the last record of each id wins. A transition is written
//! with one `write` call before the request that caused it is answered (no
//! fsync per write: like the offsets file, what the OS accepted survives a
//! killed process). The first short or CRC-failing record ends the replay
//! and the file is truncated there (only the last write can be torn). When
//! the file holds many more records than ids it is rewritten to a temporary
//! file, fsynced and renamed over the old one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::state::TxnMeta;

const MAGIC: &[u8; 8] = b"WEIRTXN1";
pub const FILE_NAME: &str = "transactions.log";
const TMP_NAME: &str = "transactions.log.tmp";
/// Rewrite when the file holds more than this many records per id...
const COMPACT_RATIO: u64 = 8;
/// ...and at least this many records.
const COMPACT_MIN_RECORDS: u64 = 1024;

pub(crate) struct TxnLog {
    dir: PathBuf,
    file: File,
    len: u64,
    records: u64,
}

impl TxnLog {
    /// Open (creating) the file in `dir` and return it with the replayed states.
    pub fn open(dir: &Path) -> io::Result<(TxnLog, HashMap<String, TxnMeta>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let mut log = TxnLog {
            dir: dir.to_path_buf(),
            file,
            len: 0,
            records: 0,
        };
        let mut states = HashMap::new();
        if !data.starts_with(MAGIC) {
            if !MAGIC.starts_with(&data) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a weir transaction state file", path.display()),
                ));
            }
            log.file.set_len(0)?;
            log.file.write_all(MAGIC)?;
            log.len = MAGIC.len() as u64;
            return Ok((log, states));
        }
        let mut pos = MAGIC.len();
        while let Some((meta, next)) = decode(&data, pos) {
            states.insert(meta.transactional_id.clone(), meta);
            log.records += 1;
            pos = next;
        }
        if pos < data.len() {
            tracing::warn!(
                file = %path.display(),
                valid_bytes = pos,
                dropped_bytes = data.len() - pos,
                "transaction state file has a torn or corrupt tail; truncating it"
            );
            log.file.set_len(pos as u64)?;
        }
        log.len = pos as u64;
        Ok((log, states))
    }

    /// Persist one id's state. On error the file is left as it was.
    pub fn write(&mut self, meta: &TxnMeta, all: &HashMap<String, TxnMeta>) -> io::Result<()> {
        let mut buf = Vec::new();
        encode(meta, &mut buf)?;
        if let Err(e) = self.file.write_all(&buf) {
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        self.records += 1;
        if self.records >= COMPACT_MIN_RECORDS && self.records > COMPACT_RATIO * all.len().max(1) as u64 {
            if let Err(e) = self.compact(all.values().chain(std::iter::once(meta))) {
                tracing::warn!(error = %e, "could not compact the transaction state file");
            }
        }
        Ok(())
    }

    /// Rewrite the file with one record per id (later duplicates win).
    fn compact<'a>(&mut self, states: impl Iterator<Item = &'a TxnMeta>) -> io::Result<()> {
        let mut latest: HashMap<&str, &TxnMeta> = HashMap::new();
        for m in states {
            latest.insert(&m.transactional_id, m);
        }
        let mut buf = MAGIC.to_vec();
        for m in latest.values() {
            encode(m, &mut buf)?;
        }
        let tmp = self.dir.join(TMP_NAME);
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        let path = self.dir.join(FILE_NAME);
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.file = OpenOptions::new().read(true).append(true).open(&path)?;
        self.len = buf.len() as u64;
        self.records = latest.len() as u64;
        Ok(())
    }
}

fn encode(meta: &TxnMeta, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = serde_json::to_vec(meta).map_err(io::Error::other)?;
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// The record at `pos` and where the next one starts; None if short or corrupt.
fn decode(data: &[u8], pos: usize) -> Option<(TxnMeta, usize)> {
    let header = data.get(pos..pos + 8)?;
    let len = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(header[4..].try_into().ok()?);
    let payload = data.get(pos + 8..(pos + 8).checked_add(len)?)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let meta = serde_json::from_slice(payload).ok()?;
    Some((meta, pos + 8 + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::state::TxnState;

    #[test]
    fn replay_keeps_the_last_state_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = HashMap::new();
        {
            let (mut log, states) = TxnLog::open(dir.path()).unwrap();
            assert!(states.is_empty());
            let mut a = TxnMeta::new("a", 1, 1000, 0);
            log.write(&a, &all).unwrap();
            all.insert("a".to_string(), a.clone());
            a.add(&[("t".into(), 0)], &[], 5).unwrap();
            log.write(&a, &all).unwrap();
            all.insert("a".to_string(), a.clone());
            let b = TxnMeta::new("b", 2, 1000, 0);
            log.write(&b, &all).unwrap();
        }
        // A torn write at the end.
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2]).unwrap();
        drop(f);
        let before = std::fs::metadata(&path).unwrap().len();
        let (_log, states) = TxnLog::open(dir.path()).unwrap();
        assert_eq!(states.len(), 2);
        assert_eq!(states["a"].state, TxnState::Ongoing);
        assert_eq!(states["a"].partitions.len(), 1);
        assert_eq!(states["b"].producer_id, 2);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            before - 6,
            "the torn tail is cut"
        );
    }

    #[test]
    fn compaction_keeps_every_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = HashMap::new();
        let (mut log, _) = TxnLog::open(dir.path()).unwrap();
        for i in 0..(COMPACT_MIN_RECORDS as i64 * 2) {
            let id = format!("id-{}", i % 3);
            let mut m = TxnMeta::new(&id, i % 3, 1000, i);
            m.epoch = (i / 3) as i16;
            log.write(&m, &all).unwrap();
            all.insert(id, m);
        }
        assert!(log.records < COMPACT_MIN_RECORDS, "compacted ({} records)", log.records);
        drop(log);
        let (_, states) = TxnLog::open(dir.path()).unwrap();
        assert_eq!(states, all);
    }
}
