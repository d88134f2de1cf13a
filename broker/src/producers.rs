//! Producer ids: unique for the life of the broker's directory, so that a
//! producer id handed out before a restart is never handed out again (the
//! logs de-duplicate by producer id).
//!
//! Ids are reserved in blocks: `{dir}/producer-ids` holds the first id not
//! yet reserved, written (temp file, fsync, rename) before any id of a new
//! block is used, so a crash at worst skips the rest of a block.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

const BLOCK: i64 = 1000;

pub struct ProducerIds {
    file: PathBuf,
    /// (next id to hand out, first id not reserved)
    state: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn open(dir: &Path) -> std::io::Result<ProducerIds> {
        let file = dir.join("producer-ids");
        let reserved = match std::fs::read_to_string(&file) {
            Ok(text) => text.trim().parse::<i64>().map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: `{}` is not a producer id: {e}", file.display(), text.trim()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(ProducerIds {
            file,
            state: Mutex::new((reserved, reserved)),
        })
    }

    /// A producer id never handed out before.
    pub fn next(&self) -> std::io::Result<i64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 == state.1 {
            let reserved = state.1 + BLOCK;
            let tmp = self.file.with_extension("tmp");
            std::fs::write(&tmp, reserved.to_string())?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &self.file)?;
            state.1 = reserved;
        }
        let id = state.0;
        state.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        assert_eq!((ids.next().unwrap(), ids.next().unwrap()), (0, 1));
        drop(ids);
        let ids = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(ids.next().unwrap(), BLOCK, "the rest of the reserved block is skipped");
    }
}
