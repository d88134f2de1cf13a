//! File names, the start-up scan and [`list_files`](super::list_files).
//!
//! A final file is `{root}/{topic}/p{partition}-{first:020}-{last:020}.parquet`
//! where `first..=last` is the inclusive range of *consumed* offsets it
//! covers (written rows and dead letters alike). A file being written is
//! `{root}/{topic}/.p{partition}-{first:020}.parquet.tmp`: hidden from
//! `*.parquet` globs (DuckDB, pyarrow datasets) and deleted at start.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use ::parquet::file::reader::{FileReader, SerializedFileReader};

/// The final name of the file of `partition` covering `first..=last`.
pub(crate) fn final_name(partition: i32, first: i64, last: i64) -> String {
    format!("p{partition}-{first:020}-{last:020}.parquet")
}

/// The temporary name of the file of `partition` starting at `first`.
pub(crate) fn tmp_name(partition: i32, first: i64) -> String {
    format!(".p{partition}-{first:020}.parquet.tmp")
}

/// `(partition, first, last)` of a final file name, `None` for anything
/// else.
pub(crate) fn parse_name(name: &str) -> Option<(i32, i64, i64)> {
    let rest = name.strip_prefix('p')?.strip_suffix(".parquet")?;
    let mut parts = rest.split('-');
    let partition = parts.next()?.parse::<i32>().ok()?;
    let first = parts.next()?.parse::<i64>().ok()?;
    let last = parts.next()?.parse::<i64>().ok()?;
    if parts.next().is_some() || partition < 0 || first < 0 || last < first {
        return None;
    }
    Some((partition, first, last))
}

fn is_tmp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".parquet.tmp")
}

/// Makes the directory entry changes in `dir` (a rename, a delete) durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What the start-up scan of one topic directory found.
#[derive(Debug, Default)]
pub(crate) struct DirScan {
    /// Per partition, the offset after the largest `last` of its files.
    pub next: BTreeMap<i32, i64>,
    /// Temporary files that were deleted.
    pub removed_tmp: usize,
    /// Final files found.
    pub files: usize,
}

/// Creates `dir` if needed, deletes the temporary files a crash left
/// behind, and computes the next offset per partition from the final file
/// names. Overlapping ranges (which this sink never writes) are logged.
pub(crate) fn scan_dir(dir: &Path) -> io::Result<DirScan> {
    fs::create_dir_all(dir)?;
    let mut scan = DirScan::default();
    let mut ranges: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_tmp(name) {
            fs::remove_file(entry.path())?;
            tracing::info!(file = %entry.path().display(), "removed a temporary file left by a crash");
            scan.removed_tmp += 1;
        } else if let Some((p, first, last)) = parse_name(name) {
            ranges.entry(p).or_default().push((first, last));
            scan.files += 1;
        }
    }
    if scan.removed_tmp > 0 {
        fsync_dir(dir)?;
    }
    for (p, mut rs) in ranges {
        rs.sort_unstable();
        for w in rs.windows(2) {
            if w[1].0 <= w[0].1 {
                tracing::warn!(dir = %dir.display(), partition = p, a = ?w[0], b = ?w[1], "overlapping offset ranges");
            }
        }
        let next = rs.iter().map(|r| r.1).max().expect("non-empty") + 1;
        scan.next.insert(p, next);
    }
    Ok(scan)
}

/// One final Parquet file, as [`list_files`](super::list_files) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// The topic (the directory name).
    pub topic: String,
    /// The file name (`p0-…-….parquet`).
    pub name: String,
    /// The full path.
    pub path: PathBuf,
    /// The source partition.
    pub partition: i32,
    /// First consumed offset the file covers.
    pub first_offset: i64,
    /// Last consumed offset the file covers (inclusive).
    pub last_offset: i64,
    /// Rows in the file (from its footer). Smaller than the offset range
    /// when records of the range went to the dead-letter topic.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
}

pub(crate) fn list_files(root: &Path) -> io::Result<Vec<FileInfo>> {
    let mut out = Vec::new();
    let topics = match fs::read_dir(root) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for topic_dir in topics {
        let topic_dir = topic_dir?;
        if !topic_dir.file_type()?.is_dir() {
            continue;
        }
        let Some(topic) = topic_dir.file_name().to_str().map(str::to_string) else {
            continue;
        };
        for entry in fs::read_dir(topic_dir.path())? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some((partition, first_offset, last_offset)) = parse_name(&name) else {
                continue;
            };
            let path = entry.path();
            let file = File::open(&path)?;
            let bytes = file.metadata()?.len();
            let rows = SerializedFileReader::new(file)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?
                .metadata()
                .file_metadata()
                .num_rows() as u64;
            out.push(FileInfo {
                topic: topic.clone(),
                name,
                path,
                partition,
                first_offset,
                last_offset,
                rows,
                bytes,
            });
        }
    }
    out.sort_by(|a, b| (&a.topic, a.partition, a.first_offset).cmp(&(&b.topic, b.partition, b.first_offset)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = final_name(3, 0, 999);
        assert_eq!(n, "p3-00000000000000000000-00000000000000000999.parquet");
        assert_eq!(parse_name(&n), Some((3, 0, 999)));
        assert_eq!(parse_name(&tmp_name(3, 0)), None);
        assert!(is_tmp(&tmp_name(3, 0)));
        assert_eq!(parse_name("p1-5-4.parquet"), None);
        assert_eq!(parse_name("p1-5-6.parquet.tmp"), None);
        assert_eq!(parse_name("x1-5-6.parquet"), None);
    }
}
