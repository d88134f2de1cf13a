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
//! is replayed and the last record of each id wins. The framing, replay and
//! crash handling are [`RecordFile`]'s, shared with the offsets file: a
//! transition is written with one `write` call before the request that caused
//! it is answered (no fsync per write: what the OS accepted survives a killed
//! process). The first short, CRC-failing or unparsable record ends the replay
//! and the file is truncated there (only the last write can be torn). When
//! the file holds many more records than ids it is rewritten (temporary file,
//! fsync, rename).

use std::collections::HashMap;
use std::io;
use std::path::Path;

use super::state::TxnMeta;
use crate::record_file::RecordFile;

const MAGIC: &[u8; 8] = b"WEIRTXN1";
pub const FILE_NAME: &str = "transactions.log";
/// Rewrite when the file holds more than this many records per id...
const COMPACT_RATIO: u64 = 8;
/// ...and at least this many records.
const COMPACT_MIN_RECORDS: u64 = 1024;

pub(crate) struct TxnLog {
    file: RecordFile,
}

impl TxnLog {
    /// Open (creating) the file in `dir` and return it with the replayed states.
    pub fn open(dir: &Path) -> io::Result<(TxnLog, HashMap<String, TxnMeta>)> {
        std::fs::create_dir_all(dir)?;
        let (file, metas) = RecordFile::open(&dir.join(FILE_NAME), MAGIC, "transaction state", |p| {
            serde_json::from_slice::<TxnMeta>(p).ok()
        })?;
        let states = metas.into_iter().map(|m| (m.transactional_id.clone(), m)).collect();
        Ok((TxnLog { file }, states))
    }

    /// Persist one id's state. On error the file is left as it was.
    pub fn write(&mut self, meta: &TxnMeta, all: &HashMap<String, TxnMeta>) -> io::Result<()> {
        self.file.append([encode(meta)?])?;
        let written = self.file.records();
        if written >= COMPACT_MIN_RECORDS && written > COMPACT_RATIO * all.len().max(1) as u64 {
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
        let payloads = latest.values().map(|m| encode(m)).collect::<io::Result<Vec<_>>>()?;
        self.file.rewrite(payloads)
    }
}

/// One state's payload (the framing is [`RecordFile`]'s).
fn encode(meta: &TxnMeta) -> io::Result<Vec<u8>> {
    serde_json::to_vec(meta).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::state::TxnState;
    use std::fs::OpenOptions;
    use std::io::Write;

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

    /// A file framed by hand as documented (JSON payloads) opens, and a write
    /// appends exactly such a frame.
    #[test]
    fn reads_and_writes_the_documented_format() {
        let frame = |out: &mut Vec<u8>, meta: &TxnMeta| {
            let payload = serde_json::to_vec(meta).unwrap();
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
            out.extend_from_slice(&payload);
        };
        let a = TxnMeta::new("a", 1, 1000, 0);
        let mut file = b"WEIRTXN1".to_vec();
        frame(&mut file, &a);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transactions.log");
        std::fs::write(&path, &file).unwrap();
        let (mut log, states) = TxnLog::open(dir.path()).unwrap();
        assert_eq!(states["a"], a);
        let b = TxnMeta::new("b", 2, 1000, 0);
        log.write(&b, &states).unwrap();
        frame(&mut file, &b);
        assert_eq!(std::fs::read(&path).unwrap(), file);
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
        let records = log.file.records();
        assert!(records < COMPACT_MIN_RECORDS, "compacted ({records} records)");
        drop(log);
        let (_, states) = TxnLog::open(dir.path()).unwrap();
        assert_eq!(states, all);
    }
}
