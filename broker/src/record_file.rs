//! An append-only file of checksummed records, replayed on open: the storage
//! under the committed-offset store (`group/offsets.rs`) and the transaction
//! state file (`txn/log.rs`).
//!
//! Both keep their state the same way, and getting the crash handling right
//! once is the point of sharing it: what is framed, how a torn tail is
//! recognized and cut, how a failed append is undone and how a rewrite
//! replaces the file atomically. The callers only encode and decode payloads.
//!
//! # File format
//!
//! ```text
//! file   := magic frame*
//! frame  := len:u32 crc:u32 payload[len]      (big-endian; crc = CRC-32C of payload)
//! ```
//!
//! The magic tells the file's kind and version; a file that starts with
//! anything else is refused rather than overwritten, and a file that is only
//! a prefix of the magic (a crash while it was being created) is reset.
//!
//! # Crash safety
//!
//! An append is one `write` call, without fsync: a killed process loses
//! nothing the OS accepted, a power loss may lose the last appends (a dev
//! broker trades that durability for speed). Since only the last write can
//! be torn, the first frame that is short, fails its CRC or that the caller
//! cannot decode ends the replay, and the file is truncated there so later
//! appends do not follow garbage. A rewrite goes to a temporary file that is
//! fsynced and renamed over the old one, so a crash mid-rewrite leaves
//! either the old or the new file.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Bytes before each payload: its length and its CRC.
const FRAME_HEADER: usize = 8;

/// An open record file, positioned for appends.
///
/// Obtained only from [`RecordFile::open`], which replays the file first: a
/// file cannot be appended to before its tail has been checked.
pub(crate) struct RecordFile {
    path: PathBuf,
    magic: &'static [u8],
    /// Opened in append mode, so writes after a rollback or a truncation
    /// land at the end of the file and never leave a hole.
    file: File,
    /// Bytes of valid frames (magic included): where a failed append is cut back to.
    len: u64,
    /// Frames in the file, for the callers' compaction decisions.
    records: u64,
}

impl RecordFile {
    /// Opens (creating) the file at `path` and decodes its records in order.
    ///
    /// `decode` parses one payload; `None` means it does not parse, which
    /// ends the replay exactly like a bad CRC (the file is cut before that
    /// frame), so a record the caller cannot understand is never half-applied.
    /// `what` names the kind of file in errors and warnings ("offsets").
    /// The parent directory must exist.
    pub fn open<T>(
        path: &Path,
        magic: &'static [u8],
        what: &str,
        mut decode: impl FnMut(&[u8]) -> Option<T>,
    ) -> io::Result<(RecordFile, Vec<T>)> {
        debug_assert!(!magic.is_empty(), "a record file needs a magic");
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let mut rf = RecordFile {
            path: path.to_path_buf(),
            magic,
            file,
            len: 0,
            records: 0,
        };
        let mut decoded = Vec::new();
        if !data.starts_with(magic) {
            if !magic.starts_with(&data) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a weir {what} file", path.display()),
                ));
            }
            // New file, or a crash while writing the magic itself.
            rf.file.set_len(0)?;
            rf.file.write_all(magic)?;
            rf.len = magic.len() as u64;
            return Ok((rf, decoded));
        }

        let mut pos = magic.len();
        while let Some((payload, next)) = frame_at(&data, pos) {
            let Some(record) = decode(payload) else {
                break;
            };
            decoded.push(record);
            rf.records += 1;
            pos = next;
        }
        if pos < data.len() {
            tracing::warn!(
                file = %path.display(),
                valid_bytes = pos,
                dropped_bytes = data.len() - pos,
                "{what} file has a torn or corrupt tail; truncating it"
            );
            rf.file.set_len(pos as u64)?;
        }
        rf.len = pos as u64;
        Ok((rf, decoded))
    }

    /// Frames in the file (those replayed, appended or rewritten since).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Appends `payloads` with one `write` call, so they reach the file
    /// together or (short of a power loss) not at all. On error the file is
    /// cut back to where it was, and nothing is counted.
    pub fn append<P: AsRef<[u8]>>(&mut self, payloads: impl IntoIterator<Item = P>) -> io::Result<()> {
        let mut buf = Vec::new();
        let added = frame_all(payloads, &mut buf)?;
        if added == 0 {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(&buf) {
            // Undo a partial write so later appends do not follow garbage.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        self.records += added;
        Ok(())
    }

    /// Replaces the whole file with `payloads` (compaction): written to
    /// `{path}.tmp`, fsynced, renamed over the file, directory fsynced. On
    /// error the old file stays in place and in use.
    pub fn rewrite<P: AsRef<[u8]>>(&mut self, payloads: impl IntoIterator<Item = P>) -> io::Result<()> {
        let mut buf = self.magic.to_vec();
        let records = frame_all(payloads, &mut buf)?;
        let mut tmp = OsString::from(self.path.as_os_str());
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = match write_synced(&tmp, &buf) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, &self.path)?;
        // Make the rename itself durable; failing that only risks the old file
        // coming back after a power loss, which is still a consistent file.
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        // The handle opened before the rename is the new file: nothing can
        // fail between the rename and switching to it.
        self.file = file;
        self.len = buf.len() as u64;
        self.records = records;
        Ok(())
    }
}

/// Creates (or empties) `path`, writes `data` and fsyncs it; returns the file
/// open for appends.
fn write_synced(path: &Path, data: &[u8]) -> io::Result<File> {
    let mut f = OpenOptions::new().read(true).append(true).create(true).open(path)?;
    f.set_len(0)?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(f)
}

/// Appends one frame per payload to `buf`; the number of frames. A payload
/// too long for its `u32` length is refused before anything is written.
fn frame_all<P: AsRef<[u8]>>(payloads: impl IntoIterator<Item = P>, buf: &mut Vec<u8>) -> io::Result<u64> {
    let mut n = 0;
    for p in payloads {
        let p = p.as_ref();
        let len = u32::try_from(p.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a record of {} bytes is too long", p.len()),
            )
        })?;
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&crc32c::crc32c(p).to_be_bytes());
        buf.extend_from_slice(p);
        n += 1;
    }
    Ok(n)
}

/// The payload of the frame at `pos` and where the next frame starts; `None`
/// if the frame is short or fails its CRC.
fn frame_at(data: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let start = pos.checked_add(FRAME_HEADER)?;
    let header = data.get(pos..start)?;
    let len = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(header[4..].try_into().ok()?);
    let end = start.checked_add(len)?;
    let payload = data.get(start..end)?;
    (crc32c::crc32c(payload) == crc).then_some((payload, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8] = b"TESTMAG1";

    /// Payloads as UTF-8 strings; anything else does not decode.
    fn open(path: &Path) -> io::Result<(RecordFile, Vec<String>)> {
        RecordFile::open(path, MAGIC, "test", |p| String::from_utf8(p.to_vec()).ok())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn replays_appends_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        {
            let (mut f, got) = open(&path).unwrap();
            assert!(got.is_empty());
            assert_eq!(std::fs::read(&path).unwrap(), MAGIC);
            f.append(["a", "bb"]).unwrap();
            f.append(Vec::<&[u8]>::new()).unwrap();
            f.append([""]).unwrap();
            assert_eq!(f.records(), 3);
            assert_eq!(f.len, std::fs::metadata(&path).unwrap().len());
        }
        let (f, got) = open(&path).unwrap();
        assert_eq!(got, strings(&["a", "bb", ""]));
        assert_eq!(f.records(), 3);
    }

    #[test]
    fn frames_are_length_crc_payload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        let (mut f, _) = open(&path).unwrap();
        f.append(["xyz"]).unwrap();
        let mut want = MAGIC.to_vec();
        want.extend_from_slice(&3u32.to_be_bytes());
        want.extend_from_slice(&crc32c::crc32c(b"xyz").to_be_bytes());
        want.extend_from_slice(b"xyz");
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn torn_tail_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        {
            let (mut f, _) = open(&path).unwrap();
            f.append(["one", "two"]).unwrap();
        }
        let full = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - 2)
            .unwrap();
        {
            let (mut f, got) = open(&path).unwrap();
            assert_eq!(got, strings(&["one"]));
            assert_eq!(f.records(), 1);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                full - 11,
                "the torn frame is cut"
            );
            f.append(["three"]).unwrap();
        }
        let (_, got) = open(&path).unwrap();
        assert_eq!(got, strings(&["one", "three"]));
    }

    #[test]
    fn bad_crc_ends_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        {
            let (mut f, _) = open(&path).unwrap();
            f.append(["one", "two", "three"]).unwrap();
        }
        let mut data = std::fs::read(&path).unwrap();
        // The last byte of "two": the frames after it are dropped too.
        let at = MAGIC.len() + 8 + 3 + 8 + 2;
        data[at] ^= 0x01;
        std::fs::write(&path, &data).unwrap();
        let (_, got) = open(&path).unwrap();
        assert_eq!(got, strings(&["one"]));
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, MAGIC.len() + 8 + 3);
    }

    #[test]
    fn undecodable_payload_ends_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        {
            let (mut f, _) = open(&path).unwrap();
            f.append([&b"ok"[..], &[0xff, 0xfe], b"later"]).unwrap();
        }
        let (_, got) = open(&path).unwrap();
        assert_eq!(got, strings(&["ok"]));
    }

    #[test]
    fn foreign_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        std::fs::write(&path, b"something else entirely").unwrap();
        let err = open(&path).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("not a weir test file"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"something else entirely");
    }

    #[test]
    fn magic_prefix_is_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        std::fs::write(&path, &MAGIC[..3]).unwrap();
        {
            let (mut f, got) = open(&path).unwrap();
            assert!(got.is_empty());
            assert_eq!(std::fs::read(&path).unwrap(), MAGIC);
            f.append(["a"]).unwrap();
        }
        let (_, got) = open(&path).unwrap();
        assert_eq!(got, strings(&["a"]));
    }

    #[test]
    fn rewrite_replaces_the_file_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        {
            let (mut f, _) = open(&path).unwrap();
            f.append(["a", "b", "c", "d"]).unwrap();
            f.rewrite(["d", "c"]).unwrap();
            assert_eq!(f.records(), 2);
            assert!(!dir.path().join("f.log.tmp").exists());
            // Appends go to the new file, after the rewritten records.
            f.append(["e"]).unwrap();
            assert_eq!(f.records(), 3);
            assert_eq!(f.len, std::fs::metadata(&path).unwrap().len());
        }
        let (f, got) = open(&path).unwrap();
        assert_eq!(got, strings(&["d", "c", "e"]));
        assert_eq!(f.records(), 3);
    }

    #[test]
    fn failed_rewrite_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        let (mut f, _) = open(&path).unwrap();
        f.append(["a"]).unwrap();
        // The temporary file cannot be created where a directory is.
        std::fs::create_dir(dir.path().join("f.log.tmp")).unwrap();
        assert!(f.rewrite(["b"]).is_err());
        f.append(["c"]).unwrap();
        drop(f);
        let (_, got) = open(&path).unwrap();
        assert_eq!(got, strings(&["a", "c"]));
    }
}
