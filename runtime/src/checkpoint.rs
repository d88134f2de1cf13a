//! A task's checkpoint and its byte form, written to sled (in the same
//! atomic batch as the task's store data) and to the
//! `{application_id}-checkpoints` topic.
//!
//! The byte form is versioned: `WCP` then a version byte, then the fields
//! in a fixed order (integers big-endian, strings as a u32 length and
//! UTF-8). A checkpoint of a version this weir does not know, or one with
//! bytes left over, is an error, never half understood. Checkpoints of the
//! first weir (before the format had a version: a list of
//! `(name, partition, value)` entries whose names smuggled the fields in as
//! `#seq`, `#changelog/{store}`, `#origin/…` and `#skip/…`) still decode,
//! so existing state directories and checkpoint topics keep working; they
//! are written in the new form at the next commit.

use crate::task::Origin;

/// The first bytes of a checkpoint.
const MAGIC: &[u8; 3] = b"WCP";
/// The version this weir writes (and the newest it reads).
pub const CHECKPOINT_VERSION: u8 = 2;

/// Everything a task's state reflects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskCheckpoint {
    /// (source topic name, next offset) for the task's partition.
    pub inputs: Vec<(String, i64)>,
    /// The commit sequence number: a newer checkpoint has a larger one.
    pub seq: u64,
    /// (store name, changelog position): the offset after the last
    /// changelog record the state reflects.
    pub changelog: Vec<(String, i64)>,
    /// (repartition topic name, last applied origin) per upstream partition.
    pub origins: Vec<(String, Origin)>,
    /// (store name, from, to): changelog offsets `[from, to)` that restores
    /// skip. They were written by commits that never finished (their
    /// checkpoint was never written), found past the checkpoint's position
    /// when a new owner took the task over; the new owner's own records
    /// come after them, so without this a later restore would apply them.
    pub changelog_skips: Vec<(String, i64, i64)>,
}

/// Why checkpoint bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint format version {0} is newer than this weir reads (up to {CHECKPOINT_VERSION})")]
    NewerVersion(u8),
    #[error("not a weir checkpoint ({0})")]
    Malformed(String),
}

impl TaskCheckpoint {
    /// The byte form (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(64 + 24 * (self.inputs.len() + self.changelog.len() + self.origins.len()));
        w.extend_from_slice(MAGIC);
        w.push(CHECKPOINT_VERSION);
        w.extend_from_slice(&self.seq.to_be_bytes());
        put_len(&mut w, self.inputs.len());
        for (topic, next) in &self.inputs {
            put_str(&mut w, topic);
            w.extend_from_slice(&next.to_be_bytes());
        }
        put_len(&mut w, self.changelog.len());
        for (store, position) in &self.changelog {
            put_str(&mut w, store);
            w.extend_from_slice(&position.to_be_bytes());
        }
        put_len(&mut w, self.origins.len());
        for (topic, o) in &self.origins {
            put_str(&mut w, topic);
            w.extend_from_slice(&o.upstream_partition.to_be_bytes());
            w.extend_from_slice(&o.offset.to_be_bytes());
            w.extend_from_slice(&o.index.to_be_bytes());
        }
        put_len(&mut w, self.changelog_skips.len());
        for (store, from, to) in &self.changelog_skips {
            put_str(&mut w, store);
            w.extend_from_slice(&from.to_be_bytes());
            w.extend_from_slice(&to.to_be_bytes());
        }
        w
    }

    /// The checkpoint `bytes` encode (this version's form, or the first
    /// weir's).
    pub fn decode(bytes: &[u8]) -> Result<TaskCheckpoint, CheckpointError> {
        let Some(rest) = bytes.strip_prefix(&MAGIC[..]) else {
            return legacy::decode(bytes);
        };
        let mut r = Reader(rest);
        let version = r.u8()?;
        if version > CHECKPOINT_VERSION {
            return Err(CheckpointError::NewerVersion(version));
        }
        if version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Malformed(format!("unknown version {version}")));
        }
        let mut cp = TaskCheckpoint {
            seq: r.u64()?,
            ..TaskCheckpoint::default()
        };
        for _ in 0..r.len()? {
            cp.inputs.push((r.string()?, r.i64()?));
        }
        for _ in 0..r.len()? {
            cp.changelog.push((r.string()?, r.i64()?));
        }
        for _ in 0..r.len()? {
            let topic = r.string()?;
            let origin = Origin {
                upstream_partition: r.i32()?,
                offset: r.i64()?,
                index: r.u32()?,
            };
            cp.origins.push((topic, origin));
        }
        for _ in 0..r.len()? {
            cp.changelog_skips.push((r.string()?, r.i64()?, r.i64()?));
        }
        if !r.0.is_empty() {
            return Err(CheckpointError::Malformed(format!("{} bytes after the end", r.0.len())));
        }
        Ok(cp)
    }
}

fn put_len(w: &mut Vec<u8>, n: usize) {
    w.extend_from_slice(&(n as u32).to_be_bytes());
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_len(w, s.len());
    w.extend_from_slice(s.as_bytes());
}

/// Reads the byte form front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
        if self.0.len() < n {
            return Err(CheckpointError::Malformed("truncated".into()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CheckpointError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, CheckpointError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, CheckpointError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, CheckpointError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, CheckpointError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    /// A count of entries, each at least 4 bytes long: a count the rest
    /// cannot hold is malformed (and is not allocated for).
    fn len(&mut self) -> Result<usize, CheckpointError> {
        let n = self.u32()? as usize;
        if n > self.0.len() / 4 {
            return Err(CheckpointError::Malformed(format!(
                "{n} entries in {} bytes",
                self.0.len()
            )));
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, CheckpointError> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| CheckpointError::Malformed("a name is not UTF-8".into()))
    }
}

/// The first weir's form: `u32` entry count, then per entry a `u32`-length
/// name, an `i32` partition and an `i64` value. Plain names are input
/// offsets; the others carry the remaining fields.
mod legacy {
    use super::{CheckpointError, Reader, TaskCheckpoint};
    use crate::task::Origin;

    const SEQ: &str = "#seq";
    const CHANGELOG: &str = "#changelog/";
    const ORIGIN: &str = "#origin/";
    const SKIP: &str = "#skip/";

    pub(super) fn decode(bytes: &[u8]) -> Result<TaskCheckpoint, CheckpointError> {
        let bad = |name: &str| CheckpointError::Malformed(format!("malformed entry {name:?}"));
        let mut r = Reader(bytes);
        let n = r.u32()? as usize;
        if n > bytes.len() / 16 {
            return Err(CheckpointError::Malformed(format!(
                "{n} entries in {} bytes",
                bytes.len()
            )));
        }
        let mut out = TaskCheckpoint::default();
        for _ in 0..n {
            let name = r.string()?;
            let _partition = r.i32()?;
            let value = r.i64()?;
            if name == SEQ {
                out.seq = value as u64;
            } else if let Some(store) = name.strip_prefix(CHANGELOG) {
                out.changelog.push((store.to_string(), value));
            } else if let Some(rest) = name.strip_prefix(ORIGIN) {
                let mut parts = rest.splitn(3, '/');
                let (Some(up), Some(idx), Some(topic)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(bad(&name));
                };
                out.origins.push((
                    topic.to_string(),
                    Origin {
                        upstream_partition: up.parse().map_err(|_| bad(&name))?,
                        offset: value,
                        index: idx.parse().map_err(|_| bad(&name))?,
                    },
                ));
            } else if let Some(rest) = name.strip_prefix(SKIP) {
                let (from, store) = rest.split_once('/').ok_or_else(|| bad(&name))?;
                out.changelog_skips
                    .push((store.to_string(), from.parse().map_err(|_| bad(&name))?, value));
            } else if name.starts_with('#') {
                return Err(CheckpointError::Malformed(format!("unknown entry {name:?}")));
            } else {
                out.inputs.push((name, value));
            }
        }
        if !r.0.is_empty() {
            return Err(CheckpointError::Malformed(format!("{} bytes after the end", r.0.len())));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TaskCheckpoint {
        TaskCheckpoint {
            inputs: vec![("clicks".into(), 42), ("views".into(), 7)],
            seq: 9,
            changelog: vec![("counts".into(), 1234)],
            origins: vec![(
                "app-counts-repartition".into(),
                Origin {
                    upstream_partition: 2,
                    offset: 99,
                    index: 3,
                },
            )],
            changelog_skips: vec![("counts".into(), 1000, 1017), ("counts".into(), 1200, 1201)],
        }
    }

    #[test]
    fn a_checkpoint_round_trips() {
        let cp = sample();
        let bytes = cp.encode();
        assert_eq!(&bytes[..4], b"WCP\x02");
        assert_eq!(TaskCheckpoint::decode(&bytes), Ok(cp));
        assert_eq!(
            TaskCheckpoint::decode(&TaskCheckpoint::default().encode()),
            Ok(TaskCheckpoint::default())
        );
    }

    #[test]
    fn a_newer_version_or_a_damaged_checkpoint_is_an_error() {
        let mut bytes = sample().encode();
        bytes[3] = 3;
        assert_eq!(
            TaskCheckpoint::decode(&bytes).unwrap_err().to_string(),
            "checkpoint format version 3 is newer than this weir reads (up to 2)"
        );
        let bytes = sample().encode();
        for cut in [4, 10, bytes.len() - 1] {
            assert_eq!(
                TaskCheckpoint::decode(&bytes[..cut]),
                Err(CheckpointError::Malformed("truncated".into())),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            TaskCheckpoint::decode(&longer),
            Err(CheckpointError::Malformed("1 bytes after the end".into()))
        );
        // A huge count is refused before anything is allocated for it.
        let mut huge = b"WCP\x02".to_vec();
        huge.extend_from_slice(&0u64.to_be_bytes());
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            TaskCheckpoint::decode(&huge),
            Err(CheckpointError::Malformed(_))
        ));
    }

    /// The first weir's form, entry by entry as it wrote it.
    fn legacy_bytes(entries: &[(&str, i32, i64)]) -> Vec<u8> {
        let mut out = (entries.len() as u32).to_be_bytes().to_vec();
        for (name, partition, value) in entries {
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(&value.to_be_bytes());
        }
        out
    }

    #[test]
    fn checkpoints_of_the_first_weir_still_decode() {
        let bytes = legacy_bytes(&[
            ("#changelog/counts", 1, 1234),
            ("#origin/2/3/app-counts-repartition", 1, 99),
            ("#seq", 1, 9),
            ("#skip/1000/counts", 1, 1017),
            ("#skip/1200/counts", 1, 1201),
            ("clicks", 1, 42),
            ("views", 1, 7),
        ]);
        assert_eq!(TaskCheckpoint::decode(&bytes), Ok(sample()));
        assert_eq!(
            TaskCheckpoint::decode(&legacy_bytes(&[("#future", 0, 1)])),
            Err(CheckpointError::Malformed("unknown entry \"#future\"".into()))
        );
    }
}
