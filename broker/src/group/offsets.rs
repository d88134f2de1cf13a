//! The persistent committed-offset store.
//!
//! Committed offsets are the one part of a consumer group that must survive a
//! broker restart: losing them makes consumers re-read (or skip) data. Kafka
//! keeps them in the `__consumer_offsets` topic; this single-node broker keeps
//! them in one append-only file, `offsets.log`, under the coordinator's
//! directory.
//!
//! # File format
//!
//! ```text
//! file    := magic record*
//! magic   := "WEIROFS1"                       (8 bytes)
//! record  := len:u32 crc:u32 payload[len]      (big-endian; crc = CRC-32C of payload)
//! payload := 1 group:str topic:str partition:i32 offset:i64 leader_epoch:i32 metadata:nstr timestamp_ms:i64
//!          | 2 group:str                        (group deleted: drop all its offsets)
//!          | 3 topic:str                        (topic deleted: drop its offsets in every group)
//! str     := len:u32 utf8[len]
//! nstr    := len:i32 utf8[len]                  (len -1 = null)
//! ```
//!
//! The framing, replay and crash handling are [`RecordFile`]'s: every commit
//! is written with one `write` call before it is acknowledged, so a killed
//! process loses nothing the OS accepted (there is no fsync per commit: a dev
//! broker trades power-loss durability for speed). On open, the file is
//! replayed; the first record that is short, fails its CRC or does not parse
//! ends the replay, and the file is truncated there, since only the last write
//! can be torn. When the file holds several times more records than there are
//! live offsets it is rewritten (temporary file, fsync, rename), so a crash
//! mid-rewrite leaves either the old or the new file.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::record_file::RecordFile;

const MAGIC: &[u8; 8] = b"WEIROFS1";
const FILE_NAME: &str = "offsets.log";
/// Rewrite when the file holds more than this many records per live offset...
const COMPACT_RATIO: u64 = 4;
/// ...and at least this many records, so small files are never rewritten.
const COMPACT_MIN_RECORDS: u64 = 1024;

const KIND_COMMIT: u8 = 1;
const KIND_DELETE_GROUP: u8 = 2;
const KIND_DELETE_TOPIC: u8 = 3;

/// One committed offset, as OffsetFetch returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// Wall-clock milliseconds when the commit was accepted; kept for
    /// inspection and a future retention policy (offsets never expire today).
    pub commit_timestamp: i64,
}

/// (topic, partition).
pub(crate) type TopicPartition = (String, i32);

/// A group's committed offsets by partition.
pub(crate) type GroupOffsets = BTreeMap<TopicPartition, OffsetEntry>;

/// Committed offsets in memory, mirrored to `offsets.log`.
pub(crate) struct OffsetStore {
    file: RecordFile,
    committed: BTreeMap<String, GroupOffsets>,
}

enum Record {
    Commit {
        group: String,
        topic: String,
        partition: i32,
        entry: OffsetEntry,
    },
    DeleteGroup(String),
    DeleteTopic(String),
}

impl OffsetStore {
    /// Opens (creating if needed) the store in `dir` and replays its file.
    pub fn open(dir: &Path) -> io::Result<OffsetStore> {
        std::fs::create_dir_all(dir)?;
        let (file, records) = RecordFile::open(&dir.join(FILE_NAME), MAGIC, "offsets", decode_payload)?;
        let mut store = OffsetStore {
            file,
            committed: BTreeMap::new(),
        };
        for record in records {
            store.apply(record);
        }
        Ok(store)
    }

    pub fn group(&self, group: &str) -> Option<&GroupOffsets> {
        self.committed.get(group)
    }

    /// Groups with at least one committed offset.
    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.committed.keys()
    }

    /// Persists then applies a batch of commits for one group. On error
    /// nothing is applied and the file is left as it was.
    pub fn commit(&mut self, group: &str, entries: Vec<(TopicPartition, OffsetEntry)>) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let records: Vec<Record> = entries
            .into_iter()
            .map(|((topic, partition), entry)| Record::Commit {
                group: group.to_string(),
                topic,
                partition,
                entry,
            })
            .collect();
        self.append(records)
    }

    /// Drops every offset of `group`, durably.
    pub fn delete_group(&mut self, group: &str) -> io::Result<()> {
        if !self.committed.contains_key(group) {
            return Ok(());
        }
        self.append(vec![Record::DeleteGroup(group.to_string())])
    }

    /// Drops the offsets of `topic` in every group, durably.
    pub fn delete_topic(&mut self, topic: &str) -> io::Result<()> {
        let present = self.committed.values().any(|g| g.keys().any(|(t, _)| t == topic));
        if !present {
            return Ok(());
        }
        self.append(vec![Record::DeleteTopic(topic.to_string())])
    }

    fn live(&self) -> u64 {
        self.committed.values().map(|g| g.len() as u64).sum()
    }

    /// Persists `records` (all or none), then applies them.
    fn append(&mut self, records: Vec<Record>) -> io::Result<()> {
        self.file.append(records.iter().map(encode_payload))?;
        for record in records {
            self.apply(record);
        }
        let written = self.file.records();
        if written >= COMPACT_MIN_RECORDS && written > COMPACT_RATIO * self.live().max(1) {
            if let Err(e) = self.compact() {
                // The appended records are safe; compaction is retried on the next commit.
                tracing::warn!(error = %e, "could not compact the offsets file");
            }
        }
        Ok(())
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Commit {
                group,
                topic,
                partition,
                entry,
            } => {
                self.committed
                    .entry(group)
                    .or_default()
                    .insert((topic, partition), entry);
            }
            Record::DeleteGroup(group) => {
                self.committed.remove(&group);
            }
            Record::DeleteTopic(topic) => {
                for offsets in self.committed.values_mut() {
                    offsets.retain(|(t, _), _| *t != topic);
                }
                self.committed.retain(|_, offsets| !offsets.is_empty());
            }
        }
    }

    /// Rewrites the file with only the live offsets.
    fn compact(&mut self) -> io::Result<()> {
        let live = self.committed.iter().flat_map(|(group, offsets)| {
            offsets.iter().map(|((topic, partition), entry)| {
                encode_payload(&Record::Commit {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    entry: entry.clone(),
                })
            })
        });
        self.file.rewrite(live)
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// One record's payload (the framing is [`RecordFile`]'s).
fn encode_payload(record: &Record) -> Vec<u8> {
    let mut p = Vec::new();
    match record {
        Record::Commit {
            group,
            topic,
            partition,
            entry,
        } => {
            p.push(KIND_COMMIT);
            put_str(&mut p, group);
            put_str(&mut p, topic);
            p.extend_from_slice(&partition.to_be_bytes());
            p.extend_from_slice(&entry.offset.to_be_bytes());
            p.extend_from_slice(&entry.leader_epoch.to_be_bytes());
            match &entry.metadata {
                None => p.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(m) => {
                    p.extend_from_slice(&(m.len() as i32).to_be_bytes());
                    p.extend_from_slice(m.as_bytes());
                }
            }
            p.extend_from_slice(&entry.commit_timestamp.to_be_bytes());
        }
        Record::DeleteGroup(group) => {
            p.push(KIND_DELETE_GROUP);
            put_str(&mut p, group);
        }
        Record::DeleteTopic(topic) => {
            p.push(KIND_DELETE_TOPIC);
            put_str(&mut p, topic);
        }
    }
    p
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    fn nstr(&mut self) -> Option<Option<String>> {
        let len = self.i32()?;
        if len < 0 {
            return Some(None);
        }
        Some(Some(String::from_utf8(self.take(len as usize)?.to_vec()).ok()?))
    }
}

/// One record from its payload; `None` if it does not parse, which ends the
/// replay like a torn frame (a record is never half-applied).
fn decode_payload(payload: &[u8]) -> Option<Record> {
    let mut c = Cursor(payload);
    let record = match c.u8()? {
        KIND_COMMIT => Record::Commit {
            group: c.str()?,
            topic: c.str()?,
            partition: c.i32()?,
            entry: OffsetEntry {
                offset: c.i64()?,
                leader_epoch: c.i32()?,
                metadata: c.nstr()?,
                commit_timestamp: c.i64()?,
            },
        },
        KIND_DELETE_GROUP => Record::DeleteGroup(c.str()?),
        KIND_DELETE_TOPIC => Record::DeleteTopic(c.str()?),
        _ => return None,
    };
    c.0.is_empty().then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn entry(offset: i64) -> OffsetEntry {
        OffsetEntry {
            offset,
            leader_epoch: 3,
            metadata: Some(format!("m{offset}")),
            commit_timestamp: 1_700_000_000_000,
        }
    }

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    #[test]
    fn replays_commits_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = OffsetStore::open(dir.path()).unwrap();
            s.commit("g1", vec![(tp("a", 0), entry(5)), (tp("b", 1), entry(7))])
                .unwrap();
            s.commit("g1", vec![(tp("a", 0), entry(6))]).unwrap();
            s.commit("g2", vec![(tp("a", 0), entry(1))]).unwrap();
            s.commit(
                "g3",
                vec![(
                    tp("c", 0),
                    OffsetEntry {
                        metadata: None,
                        ..entry(9)
                    },
                )],
            )
            .unwrap();
            s.delete_group("g2").unwrap();
            s.delete_topic("b").unwrap();
        }
        let s = OffsetStore::open(dir.path()).unwrap();
        let g1 = s.group("g1").unwrap();
        assert_eq!(g1.len(), 1);
        assert_eq!(g1[&tp("a", 0)], entry(6));
        assert!(s.group("g2").is_none());
        assert_eq!(s.group("g3").unwrap()[&tp("c", 0)].metadata, None);
        assert_eq!(s.groups().cloned().collect::<Vec<_>>(), vec!["g1", "g3"]);
    }

    #[test]
    fn torn_tail_is_ignored_and_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let mut s = OffsetStore::open(dir.path()).unwrap();
            s.commit("g", vec![(tp("a", 0), entry(10))]).unwrap();
            s.commit("g", vec![(tp("a", 0), entry(11))]).unwrap();
        }
        let full = std::fs::metadata(&path).unwrap().len();
        // Tear the last record in half, as a crash mid-write would.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 10).unwrap();
        drop(f);
        {
            let mut s = OffsetStore::open(dir.path()).unwrap();
            assert_eq!(s.group("g").unwrap()[&tp("a", 0)].offset, 10);
            // Appends after the truncation replay cleanly.
            s.commit("g", vec![(tp("a", 1), entry(20))]).unwrap();
        }
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.group("g").unwrap()[&tp("a", 0)].offset, 10);
        assert_eq!(s.group("g").unwrap()[&tp("a", 1)].offset, 20);
    }

    #[test]
    fn corrupt_crc_ends_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let mut s = OffsetStore::open(dir.path()).unwrap();
            s.commit("g", vec![(tp("a", 0), entry(1))]).unwrap();
            s.commit("g", vec![(tp("a", 0), entry(2))]).unwrap();
        }
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.group("g").unwrap()[&tp("a", 0)].offset, 1);
    }

    /// A file built by hand from the documented format opens: the format is
    /// pinned, not just whatever the encoder currently writes.
    #[test]
    fn reads_the_documented_format() {
        fn frame(out: &mut Vec<u8>, payload: &[u8]) {
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
            out.extend_from_slice(payload);
        }
        let mut commit = vec![KIND_COMMIT];
        commit.extend_from_slice(b"\0\0\0\x01g\0\0\0\x01t");
        commit.extend_from_slice(&2i32.to_be_bytes());
        commit.extend_from_slice(&42i64.to_be_bytes());
        commit.extend_from_slice(&7i32.to_be_bytes());
        commit.extend_from_slice(&(-1i32).to_be_bytes());
        commit.extend_from_slice(&99i64.to_be_bytes());
        let mut file = b"WEIROFS1".to_vec();
        frame(&mut file, &commit);
        frame(&mut file, b"\x02\0\0\0\x01x");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("offsets.log"), &file).unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        let want = OffsetEntry {
            offset: 42,
            leader_epoch: 7,
            metadata: None,
            commit_timestamp: 99,
        };
        assert_eq!(s.group("g").unwrap()[&tp("t", 2)], want);
        assert_eq!(s.file.records(), 2);
        // And the store writes the same bytes for the same commit.
        s.commit("g", vec![(tp("t", 2), want)]).unwrap();
        frame(&mut file, &commit);
        assert_eq!(std::fs::read(dir.path().join("offsets.log")).unwrap(), file);
    }

    #[test]
    fn foreign_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"something else entirely").unwrap();
        assert!(OffsetStore::open(dir.path()).is_err());
    }

    #[test]
    fn compaction_keeps_live_offsets_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let mut s = OffsetStore::open(dir.path()).unwrap();
            for i in 0..3000 {
                s.commit("g", vec![(tp("a", (i % 2) as i32), entry(i))]).unwrap();
            }
            let records = s.file.records();
            assert!(records < COMPACT_MIN_RECORDS + 2, "records = {records}");
        }
        assert!(std::fs::metadata(&path).unwrap().len() < 200 * COMPACT_MIN_RECORDS);
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.group("g").unwrap()[&tp("a", 0)].offset, 2998);
        assert_eq!(s.group("g").unwrap()[&tp("a", 1)].offset, 2999);
    }

    proptest::proptest! {
        /// Any truncation of a valid file replays to a prefix of the commits.
        #[test]
        fn any_truncation_replays_a_prefix(cut in 0usize..400) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(FILE_NAME);
            {
                let mut s = OffsetStore::open(dir.path()).unwrap();
                for i in 0..8 {
                    s.commit("g", vec![(tp("t", 0), entry(i))]).unwrap();
                }
            }
            let data = std::fs::read(&path).unwrap();
            let cut = cut.min(data.len());
            std::fs::write(&path, &data[..cut]).unwrap();
            let s = OffsetStore::open(dir.path()).unwrap();
            let got = s.group("g").map(|g| g[&tp("t", 0)].offset);
            if let Some(o) = got {
                proptest::prop_assert!((0..8).contains(&o));
            }
            drop(s);
            let mut s = OffsetStore::open(dir.path()).unwrap();
            s.commit("g", vec![(tp("t", 0), entry(100))]).unwrap();
            drop(s);
            let s = OffsetStore::open(dir.path()).unwrap();
            proptest::prop_assert_eq!(s.group("g").unwrap()[&tp("t", 0)].offset, 100);
        }
    }
}
