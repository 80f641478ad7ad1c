//! Committed consumer-group offsets, kept durably in `{data_dir}/coordinator/offsets.log`.
//!
//! The file is a journal of entries, each `[length u32][CRC-32C u32][JSON]` (big-endian). An
//! OffsetCommit request becomes one entry holding all its offsets, written and fsynced before it is
//! acknowledged, so a commit survives a crash whole or not at all. Opening replays the journal,
//! stops at the first torn or corrupt entry, and rewrites the file compacted: one entry per group
//! with its latest offsets. The file is compacted again whenever it has grown past twice its
//! compacted size plus [`COMPACTION_SLACK`].
//!
//! A dedicated file rather than an internal topic (Kafka's `__consumer_offsets`): the log has no
//! key compaction and applies time and size retention to every topic, which would delete the
//! offsets of a group that has not committed for a week.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::durable_file;
use crate::error::LogError;

const FILE: &str = "offsets.log";
/// Bytes of an entry before its JSON: length and CRC-32C.
const ENTRY_HEADER: usize = 8;
/// How far the journal may grow past twice its compacted size before it is compacted again.
const COMPACTION_SLACK: u64 = 64 << 10;

/// One partition's committed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// A group's committed offsets by (topic, partition).
pub(crate) type GroupOffsets = BTreeMap<(String, i32), CommittedOffset>;

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Entry {
    Commit {
        group: String,
        offsets: Vec<StoredOffset>,
    },
    ForgetTopic {
        topic: String,
    },
}

#[derive(Serialize, Deserialize)]
struct StoredOffset {
    topic: String,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
}

/// Why offsets were not committed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OffsetsError {
    #[error(
        "group `{group}` would be group number {} with committed offsets; broker.max_groups allows {max}",
        max + 1
    )]
    TooManyGroups { group: String, max: usize },
    #[error(transparent)]
    Storage(#[from] LogError),
}

/// The durable committed offsets of every group.
pub(crate) struct OffsetStore {
    path: PathBuf,
    max_groups: usize,
    journal: Mutex<Journal>,
}

struct Journal {
    file: File,
    /// Where the next entry goes: the end of the last complete entry.
    size: u64,
    /// The size right after the last compaction.
    compacted: u64,
    groups: BTreeMap<String, GroupOffsets>,
}

impl OffsetStore {
    /// Opens (or creates) the journal in `dir`, keeping every complete entry and compacting it.
    pub fn open(dir: &Path, max_groups: usize) -> Result<OffsetStore, LogError> {
        fs::create_dir_all(dir).map_err(LogError::io(dir))?;
        let path = dir.join(FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(LogError::Io { path, source: e }),
        };
        let (groups, valid) = replay(&bytes);
        if valid < bytes.len() {
            tracing::warn!(path = %path.display(), kept = valid, dropped = bytes.len() - valid, "the offsets journal ends in a torn or corrupt entry; dropping it");
        }
        let (file, size) = write_compacted(&path, &groups)?;
        let journal = Journal {
            file,
            size,
            compacted: size,
            groups,
        };
        Ok(OffsetStore {
            path,
            max_groups,
            journal: Mutex::new(journal),
        })
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Durably records `offsets` (topic, partition, position) for `group`. Blocks on the fsync.
    pub fn commit(
        &self,
        group: &str,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<(), OffsetsError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut journal = self.journal();
        if !journal.groups.contains_key(group) && journal.groups.len() >= self.max_groups {
            return Err(OffsetsError::TooManyGroups {
                group: group.to_string(),
                max: self.max_groups,
            });
        }
        let offsets = offsets
            .into_iter()
            .map(|(topic, partition, c)| StoredOffset {
                topic,
                partition,
                offset: c.offset,
                leader_epoch: c.leader_epoch,
                metadata: c.metadata,
            })
            .collect();
        journal.append(
            &self.path,
            Entry::Commit {
                group: group.to_string(),
                offsets,
            },
        )?;
        Ok(())
    }

    /// Every committed offset of `group`.
    pub fn fetch(&self, group: &str) -> GroupOffsets {
        self.journal()
            .groups
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Every group with committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.journal().groups.keys().cloned().collect()
    }

    /// Durably drops every group's offsets for `topic` (it was deleted).
    pub fn forget_topic(&self, topic: &str) -> Result<(), LogError> {
        let mut journal = self.journal();
        if journal
            .groups
            .values()
            .any(|offsets| offsets.keys().any(|(t, _)| t == topic))
        {
            journal.append(
                &self.path,
                Entry::ForgetTopic {
                    topic: topic.to_string(),
                },
            )?;
        }
        Ok(())
    }
}

impl Journal {
    /// Writes and fsyncs `entry` at the end of the last complete entry (so a failed write is
    /// overwritten by the next one), applies it, and compacts when the file has grown enough.
    fn append(&mut self, path: &Path, entry: Entry) -> Result<(), LogError> {
        let bytes = encode(&entry);
        self.file
            .write_all_at(&bytes, self.size)
            .and_then(|_| self.file.sync_data())
            .map_err(LogError::io(path))?;
        self.size += bytes.len() as u64;
        apply(&mut self.groups, entry);
        if self.size > 2 * self.compacted + COMPACTION_SLACK {
            let (file, size) = write_compacted(path, &self.groups)?;
            (self.file, self.size, self.compacted) = (file, size, size);
        }
        Ok(())
    }
}

fn encode(entry: &Entry) -> Vec<u8> {
    let json = serde_json::to_vec(entry).expect("offset entries serialize");
    let mut bytes = Vec::with_capacity(ENTRY_HEADER + json.len());
    bytes.extend_from_slice(&(json.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
    bytes.extend_from_slice(&json);
    bytes
}

/// Applies every complete, intact entry of `bytes`; returns the offsets and the length of the
/// valid prefix.
fn replay(bytes: &[u8]) -> (BTreeMap<String, GroupOffsets>, usize) {
    let mut groups = BTreeMap::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + ENTRY_HEADER) {
        let length = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
        let Some(json) = bytes.get(at + ENTRY_HEADER..at + ENTRY_HEADER + length) else {
            break;
        };
        if crc32c::crc32c(json) != crc {
            break;
        }
        let Ok(entry) = serde_json::from_slice::<Entry>(json) else {
            break;
        };
        apply(&mut groups, entry);
        at += ENTRY_HEADER + length;
    }
    (groups, at)
}

fn apply(groups: &mut BTreeMap<String, GroupOffsets>, entry: Entry) {
    match entry {
        Entry::Commit { group, offsets } => {
            let committed = groups.entry(group).or_default();
            for o in offsets {
                let position = CommittedOffset {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata,
                };
                committed.insert((o.topic, o.partition), position);
            }
        }
        Entry::ForgetTopic { topic } => {
            for offsets in groups.values_mut() {
                offsets.retain(|(t, _), _| *t != topic);
            }
            groups.retain(|_, offsets| !offsets.is_empty());
        }
    }
}

/// Replaces the journal with one entry per group; returns it opened for appending, and its size.
fn write_compacted(
    path: &Path,
    groups: &BTreeMap<String, GroupOffsets>,
) -> Result<(File, u64), LogError> {
    let mut bytes = Vec::new();
    for (group, offsets) in groups {
        let offsets = offsets
            .iter()
            .map(|((topic, partition), c)| StoredOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: c.offset,
                leader_epoch: c.leader_epoch,
                metadata: c.metadata.clone(),
            })
            .collect();
        bytes.extend(encode(&Entry::Commit {
            group: group.clone(),
            offsets,
        }));
    }
    durable_file::replace(path, &bytes)?;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(LogError::io(path))?;
    Ok((file, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: format!("m{offset}"),
        }
    }

    fn commit(store: &OffsetStore, group: &str, topic: &str, partition: i32, offset: i64) {
        store
            .commit(group, vec![(topic.to_string(), partition, at(offset))])
            .unwrap();
    }

    #[test]
    fn commits_survive_reopening_and_the_latest_wins() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = OffsetStore::open(dir.path(), 10).unwrap();
            commit(&store, "g", "t", 0, 5);
            commit(&store, "g", "t", 0, 9);
            commit(&store, "g", "t", 1, 3);
            commit(&store, "h", "u", 0, 1);
        }
        let store = OffsetStore::open(dir.path(), 10).unwrap();
        let g = store.fetch("g");
        assert_eq!(g.get(&("t".into(), 0)), Some(&at(9)));
        assert_eq!(g.get(&("t".into(), 1)), Some(&at(3)));
        assert_eq!(store.groups(), vec!["g", "h"]);
        assert!(store.fetch("nobody").is_empty());
    }

    #[test]
    fn a_torn_last_entry_is_dropped_and_earlier_commits_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = OffsetStore::open(dir.path(), 10).unwrap();
            commit(&store, "g", "t", 0, 5);
            commit(&store, "g", "t", 0, 6);
        }
        let path = dir.path().join(FILE);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let store = OffsetStore::open(dir.path(), 10).unwrap();
        assert_eq!(store.fetch("g").get(&("t".into(), 0)), Some(&at(5)));
        commit(&store, "g", "t", 0, 7);
        drop(store);
        let store = OffsetStore::open(dir.path(), 10).unwrap();
        assert_eq!(
            store.fetch("g").get(&("t".into(), 0)),
            Some(&at(7)),
            "the journal stays appendable after recovery"
        );
    }

    #[test]
    fn a_corrupt_entry_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut bytes = encode(&Entry::Commit {
            group: "g".into(),
            offsets: vec![StoredOffset {
                topic: "t".into(),
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
            }],
        });
        let mut second = bytes.clone();
        let last = second.len() - 2;
        second[last] ^= 0xFF;
        bytes.extend(second);
        let (groups, valid) = replay(&bytes);
        assert_eq!(valid, bytes.len() / 2);
        assert_eq!(groups["g"][&("t".to_string(), 0)].offset, 1);
        fs::write(&path, &bytes).unwrap();
        let store = OffsetStore::open(dir.path(), 10).unwrap();
        assert_eq!(store.fetch("g").len(), 1);
    }

    #[test]
    fn the_journal_is_compacted_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path(), 10).unwrap();
        for offset in 0..2_000 {
            commit(&store, "g", "t", 0, offset);
        }
        let size = fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert!(
            size <= 2 * 200 + COMPACTION_SLACK,
            "compacted while growing: {size} bytes"
        );
        drop(store);
        let store = OffsetStore::open(dir.path(), 10).unwrap();
        assert_eq!(store.fetch("g")[&("t".to_string(), 0)].offset, 1_999);
        assert!(
            fs::metadata(dir.path().join(FILE)).unwrap().len() < 200,
            "opening compacts to one entry per group"
        );
    }

    #[test]
    fn groups_are_bounded_and_deleted_topics_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path(), 2).unwrap();
        commit(&store, "a", "t", 0, 1);
        commit(&store, "b", "u", 0, 1);
        let refused = store.commit("c", vec![("t".into(), 0, at(1))]).unwrap_err();
        assert!(
            matches!(refused, OffsetsError::TooManyGroups { max: 2, .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("broker.max_groups"));
        commit(&store, "a", "t", 1, 2);
        store.forget_topic("t").unwrap();
        assert_eq!(store.groups(), vec!["b"]);
        drop(store);
        let store = OffsetStore::open(dir.path(), 2).unwrap();
        assert_eq!(store.groups(), vec!["b"]);
        commit(&store, "c", "t", 0, 1);
    }
}
