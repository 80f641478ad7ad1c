//! Producer ids that are never handed out twice, even across restarts.
//!
//! Ids are reserved in blocks: `{dir}/producer-ids.json` holds the end of the last reserved block
//! and is rewritten (atomically, fsynced) before the first id of a new block is handed out. After a
//! restart allocation continues at that end, skipping whatever of the last block was unused.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::durable_file;
use crate::error::LogError;

const FILE: &str = "producer-ids.json";
/// Ids reserved per write of the file.
const BLOCK: i64 = 1000;

#[derive(Serialize, Deserialize)]
struct Reserved {
    /// Every id below this may have been handed out.
    end: i64,
}

pub(crate) struct ProducerIds {
    path: PathBuf,
    /// The next id to hand out and the end of the reserved block.
    next: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn open(dir: &Path) -> Result<ProducerIds, LogError> {
        std::fs::create_dir_all(dir).map_err(LogError::io(dir))?;
        let path = dir.join(FILE);
        let end = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<Reserved>(&bytes)
                    .map_err(|source| LogError::Metadata {
                        path: path.clone(),
                        source,
                    })?
                    .end
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(LogError::Io { path, source: e }),
        };
        Ok(ProducerIds {
            path,
            next: Mutex::new((end, end)),
        })
    }

    /// A producer id never handed out before. Blocks on disk I/O once per [`BLOCK`] ids.
    pub fn allocate(&self) -> Result<i64, LogError> {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (id, end) = *next;
        if id == end {
            let bytes =
                serde_json::to_vec(&Reserved { end: end + BLOCK }).expect("a number serializes");
            durable_file::replace(&self.path, &bytes)?;
            next.1 = end + BLOCK;
        }
        next.0 = id + 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_not_reused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| ids.allocate().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(ids);
        let ids = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(
            ids.allocate().unwrap(),
            BLOCK,
            "the rest of the reserved block is skipped"
        );
        let many: Vec<i64> = (0..BLOCK + 1).map(|_| ids.allocate().unwrap()).collect();
        assert_eq!(many.last(), Some(&(2 * BLOCK + 1)));
        drop(ids);
        assert_eq!(
            ProducerIds::open(dir.path()).unwrap().allocate().unwrap(),
            3 * BLOCK
        );
    }
}
